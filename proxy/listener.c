/* SPDX-License-Identifier: MIT */
/* listener.c -- a worker's listening sockets and its drain on shutdown */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
      /* Accepted sockets inherit it: one system call less for each. */
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      (addr->sa_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      bind(fd, addr, len) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

static void pause_listener(px_listener_t *listener);

static void on_connection(uv_stream_t *stream, int status) {
  px_listener_t *listener = stream->data;
  if (status == UV_EMFILE || status == UV_ENFILE) {
    pause_listener(listener);
    return;
  }
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

/* Opens the listener's own SO_REUSEPORT socket and starts accepting.
 * Returns 0 or a negative errno / UV_E*. */
static int listen_on(px_listener_t *l) {
  const reg_listener_t *lc = l->config;
  int fd =
      open_reuseport_socket((const struct sockaddr *)&lc->addr, SOCK_STREAM);
  if (fd < 0)
    return fd;
  uv_tcp_init(l->server->loop, &l->tcp);
  l->tcp.data = l;
  l->tcp_open = true;
  l->server->open_handles++;
  int rc = uv_tcp_open(&l->tcp, fd);
  if (rc != 0)
    close(fd);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
  return rc;
}

static void maybe_free(px_server_t *server) {
  if (server->stopping && server->open_handles == 0 && server->n_conns == 0) {
    px_resolver_free(server->resolver);
    for (size_t i = 0; i < server->n_spare_bufs; i++)
      free(server->spare_bufs[i]);
    for (size_t i = 0; i < server->n_spare_peeks; i++)
      free(server->spare_peeks[i]);
    px_pipes_free(server);
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

/* Out of descriptors: libuv's accept loop would retry at once, forever
 * (its reserve descriptor can be taken by another worker thread), so this
 * worker closes its own listening socket and reopens it after a backoff;
 * the other workers' sockets in the SO_REUSEPORT group keep accepting, and
 * established connections are untouched. */
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 1000

static void on_retry(uv_timer_t *timer);

static void on_paused_closed(uv_handle_t *handle) {
  px_listener_t *l = handle->data;
  px_server_t *server = l->server;
  server->open_handles--;
  if (server->stopping) {
    maybe_free(server);
    return;
  }
  uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
}

static void pause_listener(px_listener_t *l) {
  if (!l->tcp_open)
    return;
  l->tcp_open = false;
  if (l->backoff_ms == 0)
    l->backoff_ms = BACKOFF_FIRST_MS;
  core_log(CORE_LOG_WARN,
           "listener %s: out of file descriptors; not accepting for %llu ms",
           l->config->name, (unsigned long long)l->backoff_ms);
  uv_close((uv_handle_t *)&l->tcp, on_paused_closed);
}

static void on_retry(uv_timer_t *timer) {
  px_listener_t *l = timer->data;
  if (l->server->stopping)
    return;
  int rc = listen_on(l);
  if (rc == 0) {
    core_log(CORE_LOG_INFO, "listener %s: accepting again", l->config->name);
    l->backoff_ms = 0;
    return;
  }
  l->backoff_ms =
      l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
  if (l->tcp_open) {
    /* Opened but could not listen: close it and try again later. */
    pause_listener(l);
    return;
  }
  uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
}

static void on_retry_closed(uv_handle_t *handle) {
  px_listener_t *l = handle->data;
  l->server->open_handles--;
  maybe_free(l->server);
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
  server->splice = px_splice_enabled(config);
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
    l->server = server;
    l->config = lc;
    uv_timer_init(loop, &l->retry);
    l->retry.data = l;
    server->n_listeners++;
    server->open_handles++;
    rc = listen_on(l);
    if (rc != 0) {
      char where[INET6_ADDRSTRLEN + 8];
      core_sockaddr_format((const struct sockaddr *)&lc->addr, where,
                           sizeof where);
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
  for (size_t i = 0; i < server->n_listeners; i++) {
    px_listener_t *l = &server->listeners[i];
    if (l->tcp_open) {
      l->tcp_open = false;
      uv_close((uv_handle_t *)&l->tcp, on_server_handle_closed);
    }
    uv_close((uv_handle_t *)&l->retry, on_retry_closed);
  }
  if (server->n_conns == 0) {
    uv_close((uv_handle_t *)&server->drain_timer, on_server_handle_closed);
    return;
  }
  /* Open connections may finish on their own until the drain deadline. */
  uv_timer_start(&server->drain_timer, on_drain_deadline,
                 server->config->proxy.drain_timeout_ms, 0);
}
