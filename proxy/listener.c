/* SPDX-License-Identifier: MIT */
/* listener.c -- a worker's listening sockets and its drain on shutdown */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

/* libuv 1.44 cannot set SO_REUSEPORT itself: open the socket here, then
 * hand it to uv_tcp_open. Every worker binds its own socket to the same
 * address and the kernel spreads new connections across them. */
static int open_reuseport_socket(const struct sockaddr *addr, int type) {
  int fd = socket(addr->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      (addr->sa_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      bind(fd, addr, len) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

static void on_connection(uv_stream_t *stream, int status) {
  px_listener_t *listener = stream->data;
  if (status < 0) {
    core_log(CORE_LOG_WARN, "listener %s: accept: %s", listener->config->name,
             uv_strerror(status));
    return;
  }
  int rc = px_conn_accept(listener);
  if (rc != 0)
    core_log(CORE_LOG_WARN, "listener %s: accept: %s", listener->config->name,
             uv_strerror(rc));
}

static void maybe_free(px_server_t *server) {
  if (server->stopping && server->open_handles == 0 && server->n_conns == 0) {
    px_resolver_free(server->resolver);
    for (size_t i = 0; i < server->n_spare_bufs; i++)
      free(server->spare_bufs[i]);
    for (size_t i = 0; i < server->n_spare_peeks; i++)
      free(server->spare_peeks[i]);
    free(server->listeners);
    free(server);
  }
}

static void on_server_handle_closed(uv_handle_t *handle) {
  px_server_t *server = handle->data;
  if (handle->type == UV_TCP)
    server = ((px_listener_t *)handle->data)->server;
  server->open_handles--;
  maybe_free(server);
}

static void on_drain_deadline(uv_timer_t *timer) {
  px_server_t *server = timer->data;
  if (server->n_conns > 0)
    core_log(CORE_LOG_WARN, "drain timeout: closing %zu open connections",
             server->n_conns);
  px_conn_abort_all(server);
  uv_close((uv_handle_t *)timer, on_server_handle_closed);
}

void px_server_conn_gone(px_server_t *server) {
  if (server->stopping && server->n_conns == 0 &&
      !uv_is_closing((uv_handle_t *)&server->drain_timer)) {
    uv_timer_stop(&server->drain_timer);
    uv_close((uv_handle_t *)&server->drain_timer, on_server_handle_closed);
  }
  maybe_free(server);
}

int px_server_start(uv_loop_t *loop, const reg_config_t *config,
                    const reg_t *reg, px_limits_t *limits, px_server_t **out) {
  px_server_t *server = xcalloc(1, sizeof *server);
  server->loop = loop;
  server->config = config;
  server->reg = reg;
  server->limits = limits;
  int rc = px_resolver_new(loop, config, &server->resolver);
  if (rc != 0) {
    free(server);
    return rc;
  }
  server->listeners = xcalloc(config->n_listeners, sizeof *server->listeners);
  uv_timer_init(loop, &server->drain_timer);
  server->drain_timer.data = server;
  server->open_handles = 1;
  for (size_t i = 0; i < config->n_listeners; i++) {
    const reg_listener_t *lc = &config->listeners[i];
    px_listener_t *l = &server->listeners[i];
    char where[INET6_ADDRSTRLEN + 8];
    core_sockaddr_format((const struct sockaddr *)&lc->addr, where,
                         sizeof where);
    l->server = server;
    l->config = lc;
    int fd =
        open_reuseport_socket((const struct sockaddr *)&lc->addr, SOCK_STREAM);
    if (fd < 0) {
      rc = fd;
      core_log(CORE_LOG_ERROR, "listener %s: cannot listen on %s: %s", lc->name,
               where, strerror(-fd));
      break;
    }
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    server->n_listeners++;
    server->open_handles++;
    rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
      core_log(CORE_LOG_ERROR, "listener %s: cannot listen on %s: %s", lc->name,
               where, uv_strerror(rc));
      break;
    }
  }
  if (rc != 0) {
    px_server_stop(server);
    return rc;
  }
  *out = server;
  return 0;
}

void px_server_stop(px_server_t *server) {
  if (server->stopping)
    return;
  server->stopping = true;
  for (size_t i = 0; i < server->n_listeners; i++)
    uv_close((uv_handle_t *)&server->listeners[i].tcp, on_server_handle_closed);
  if (server->n_conns == 0) {
    uv_close((uv_handle_t *)&server->drain_timer, on_server_handle_closed);
    return;
  }
  /* Open connections may finish on their own until the drain deadline. */
  uv_timer_start(&server->drain_timer, on_drain_deadline,
                 server->config->proxy.drain_timeout_ms, 0);
}
