/* SPDX-License-Identifier: MIT */
/* listener.c -- a worker's listening sockets: opened, changed, drained */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

/* libuv 1.44 cannot set SO_REUSEPORT itself, and its accept loop cannot
 * tell the visitor's address: the socket is opened and accepted on here,
 * watched by a uv_poll_t. Every worker binds its own socket to the same
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

/* why: what err means here, appended to the message ("" for nothing). */
static void log_cannot_listen(const reg_listener_t *lc, int err,
                              const char *why) {
  char where[INET6_ADDRSTRLEN + 8];
  core_sockaddr_format((const struct sockaddr *)&lc->addr, where, sizeof where);
  core_log(CORE_LOG_ERROR, "listener %s: cannot listen on %s: %s%s", lc->name,
           where, uv_strerror(err), why);
}

static bool same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* core_hostport_parse zeroes the whole storage before filling it, and
 * copies keep it whole. */
static bool same_address(const reg_listener_t *a, const reg_listener_t *b) {
  return memcmp(&a->addr, &b->addr, sizeof a->addr) == 0;
}

static bool same_listener(const reg_listener_t *a, const reg_listener_t *b) {
  return same_address(a, b) && a->protocol == b->protocol &&
         strcmp(a->name, b->name) == 0 && same_str(a->fallback, b->fallback);
}

static void copy_listener(reg_listener_t *to, const reg_listener_t *from) {
  *to = *from;
  to->name = xstrdup(from->name);
  to->fallback = from->fallback ? xstrdup(from->fallback) : NULL;
}

/* ---- one listener -------------------------------------------------------- */

static void pause_listener(px_listener_t *listener);

/* Connections accepted per wakeup before other work gets its turn: the
 * listening socket is watched level-triggered, so the rest wait for the
 * next iteration of the loop. */
#define ACCEPT_BATCH 16

/* accept4(2) with the visitor's address, so no getpeername(2) follows,
 * and the socket non-blocking from the start. */
static void on_acceptable(uv_poll_t *poll, int status, int events) {
  px_listener_t *listener = poll->data;
  (void)events;
  if (status < 0) {
    core_log(CORE_LOG_WARN, "listener %s: accept: %s", listener->config->name,
             uv_strerror(status));
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH && listener->tcp_open; i++) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int fd = accept4(listener->fd, (struct sockaddr *)&peer, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN)
        return;
      if (errno == EMFILE || errno == ENFILE) {
        pause_listener(listener);
        return;
      }
      /* The visitor gave up while queued, or a signal came: next one. */
      if (errno == ECONNABORTED || errno == EINTR)
        continue;
      core_log(CORE_LOG_WARN, "listener %s: accept: %s", listener->config->name,
               strerror(errno));
      return;
    }
    int rc = px_conn_accept(listener, fd, (struct sockaddr *)&peer);
    if (rc != 0)
      core_log(CORE_LOG_WARN, "listener %s: accept: %s", listener->config->name,
               uv_strerror(rc));
  }
}

/* Starts accepting on fd, a listening socket at the listener's address,
 * or with fd -1 on a SO_REUSEPORT socket of its own. The socket is the
 * listener's from then on. Returns 0 or a negative errno / UV_E*; with
 * tcp_open set, the caller closes it. */
static int listen_on(px_listener_t *l, int fd) {
  if (fd < 0)
    fd = open_reuseport_socket((const struct sockaddr *)&l->config->addr,
                               SOCK_STREAM);
  if (fd < 0)
    return fd;
  /* A socket taken over is listening already; this only sets the backlog
   * again. */
  if (listen(fd, LISTEN_BACKLOG) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  /* A TCP socket joins its SO_REUSEPORT group at listen(2). Best effort:
   * without it the kernel spreads connections by hash. */
  (void)core_affinity_steer(fd);
  int rc = uv_poll_init(l->server->loop, &l->poll, fd);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  l->poll.data = l;
  l->fd = fd;
  l->tcp_open = true;
  l->holds++;
  l->server->open_handles++;
  return uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
}

/* Stops watching the listening socket and closes it; cb runs once the
 * poll handle is closed. The handle stops watching at once, so the socket
 * may go now. */
static void close_socket(px_listener_t *l, uv_close_cb cb) {
  l->tcp_open = false;
  uv_close((uv_handle_t *)&l->poll, cb);
  close(l->fd);
  l->fd = -1;
}

/* A listener in server's set, not accepting yet. */
static px_listener_t *listener_new(px_server_t *server,
                                   const reg_listener_t *spec) {
  px_listener_t *l = xcalloc(1, sizeof *l);
  l->server = server;
  l->fd = -1;
  copy_listener(&l->spec, spec);
  l->config = &l->spec;
  uv_timer_init(server->loop, &l->retry);
  l->retry.data = l;
  l->holds = 1;
  server->open_handles++;
  return l;
}

static void listener_release(px_listener_t *l) {
  if (--l->holds > 0)
    return;
  free(l->spec.name);
  free(l->spec.fallback);
  free(l);
}

void px_listener_hold(px_listener_t *listener) {
  listener->holds++;
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
    px_listen_plan_release(server->plan);
    free(server);
  }
}

static void on_listener_handle_closed(uv_handle_t *handle) {
  px_listener_t *l = handle->data;
  px_server_t *server = l->server;
  listener_release(l);
  server->open_handles--;
  maybe_free(server);
}

/* Stops accepting for good: a stopping server's or a retired listener. */
static void listener_close(px_listener_t *l) {
  if (l->tcp_open)
    close_socket(l, on_listener_handle_closed);
  uv_close((uv_handle_t *)&l->retry, on_listener_handle_closed);
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
  if (!l->server->stopping && !l->retired)
    uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
  on_listener_handle_closed(handle);
}

/* Closes the socket; the retry timer opens a new one after backoff_ms. */
static void close_for_retry(px_listener_t *l) {
  close_socket(l, on_paused_closed);
}

static void pause_listener(px_listener_t *l) {
  if (!l->tcp_open)
    return;
  if (l->backoff_ms == 0)
    l->backoff_ms = BACKOFF_FIRST_MS;
  core_log(CORE_LOG_WARN,
           "listener %s: out of file descriptors; not accepting for %llu ms",
           l->config->name, (unsigned long long)l->backoff_ms);
  close_for_retry(l);
}

static void on_retry(uv_timer_t *timer) {
  px_listener_t *l = timer->data;
  if (l->server->stopping || l->retired)
    return;
  int rc = listen_on(l, -1);
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

/* ---- the server ---------------------------------------------------------- */

static void on_server_handle_closed(uv_handle_t *handle) {
  px_server_t *server = handle->data;
  server->open_handles--;
  maybe_free(server);
}

/* The drain timer closes once, when no connection will queue a FIN any
 * more (those left are closing, their sockets closed): the FIN handles
 * and the connections' epoll instance go with it. */
static void on_drain_closed(uv_handle_t *handle) {
  px_server_t *server = handle->data;
  uv_close((uv_handle_t *)&server->fin_check, on_server_handle_closed);
  uv_close((uv_handle_t *)&server->fin_idle, on_server_handle_closed);
  uv_close((uv_handle_t *)&server->epoll_poll, on_server_handle_closed);
  close(server->epoll_fd);
  on_server_handle_closed(handle);
}

static void on_drain_deadline(uv_timer_t *timer) {
  px_server_t *server = timer->data;
  if (server->n_conns > 0)
    core_log(CORE_LOG_WARN, "drain timeout: closing %zu open connections",
             server->n_conns);
  px_conn_abort_all(server);
  uv_close((uv_handle_t *)timer, on_drain_closed);
}

void px_server_conn_gone(px_server_t *server, px_listener_t *listener) {
  listener_release(listener);
  if (server->stopping && server->n_conns == 0 &&
      !uv_is_closing((uv_handle_t *)&server->drain_timer)) {
    uv_timer_stop(&server->drain_timer);
    uv_close((uv_handle_t *)&server->drain_timer, on_drain_closed);
  }
  maybe_free(server);
}

int px_server_start(uv_loop_t *loop, const reg_config_t *config,
                    const reg_t *reg, px_limits_t *limits, px_server_t **out) {
  px_server_t *server = xcalloc(1, sizeof *server);
  server->loop = loop;
  server->in_force = *config;
  server->config = &server->in_force;
  server->reg = reg;
  server->limits = limits;
  server->splice = px_splice_enabled(config);
  int rc = px_resolver_new(loop, config, &server->resolver);
  if (rc != 0) {
    free(server);
    return rc;
  }
  server->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  rc = server->epoll_fd < 0
           ? -errno
           : uv_poll_init(loop, &server->epoll_poll, server->epoll_fd);
  if (rc != 0) {
    if (server->epoll_fd >= 0)
      close(server->epoll_fd);
    px_resolver_free(server->resolver);
    free(server);
    return rc;
  }
  server->epoll_poll.data = server;
  uv_poll_start(&server->epoll_poll, UV_READABLE, px_conn_on_epoll);
  size_t n = config->n_listeners;
  server->listeners = xcalloc(n ? n : 1, sizeof *server->listeners);
  uv_timer_init(loop, &server->drain_timer);
  server->drain_timer.data = server;
  uv_check_init(loop, &server->fin_check);
  server->fin_check.data = server;
  uv_idle_init(loop, &server->fin_idle);
  server->fin_idle.data = server;
  server->open_handles = 4;
  for (size_t i = 0; i < n; i++) {
    px_listener_t *l = listener_new(server, &config->listeners[i]);
    server->listeners[server->n_listeners++] = l;
    rc = listen_on(l, -1);
    if (rc != 0) {
      log_cannot_listen(l->config, rc, "");
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
    listener_close(server->listeners[i]);
  if (server->n_conns == 0) {
    uv_close((uv_handle_t *)&server->drain_timer, on_drain_closed);
    return;
  }
  /* Open connections may finish on their own until the drain deadline. */
  uv_timer_start(&server->drain_timer, on_drain_deadline,
                 server->config->proxy.drain_timeout_ms, 0);
}

/* ---- changing the listeners ---------------------------------------------- */

#define NOT_IN_FORCE SIZE_MAX

struct px_listen_plan {
  atomic_uint refs;
  reg_listener_t *listeners; /* the new set, owned */
  size_t n_listeners;
  size_t n_from; /* listeners in the set it replaces */
  /* Per listener: its index in the set replaced at the same address, or
   * NOT_IN_FORCE when the address is new. Workers keep their listeners in
   * the order of the set in force, so the index is theirs too. */
  size_t *from;
  /* A new address's sockets: fds[i * n_workers + w] for worker w; -1 when
   * the address stays or the worker has taken it. */
  int *fds;
  unsigned n_workers;
  size_t added, removed, changed;
};

static bool same_set(const reg_listener_t *a, size_t na,
                     const reg_listener_t *b, size_t nb) {
  if (na != nb)
    return false;
  for (size_t i = 0; i < na; i++)
    if (!same_listener(&a[i], &b[i]))
      return false;
  return true;
}

static void log_listener(const char *what, const reg_listener_t *lc) {
  char where[INET6_ADDRSTRLEN + 8];
  core_sockaddr_format((const struct sockaddr *)&lc->addr, where, sizeof where);
  core_log(CORE_LOG_INFO, "listener %s on %s: %s", lc->name, where, what);
}

/* Pairs every listener of plan with the first unpaired one of from at the
 * same address, and counts what is added, removed and changed. */
static void pair_listeners(px_listen_plan_t *plan, const reg_listener_t *from,
                           size_t n_from) {
  bool *paired = xcalloc(n_from ? n_from : 1, sizeof *paired);
  for (size_t i = 0; i < plan->n_listeners; i++) {
    const reg_listener_t *l = &plan->listeners[i];
    plan->from[i] = NOT_IN_FORCE;
    for (size_t j = 0; j < n_from && plan->from[i] == NOT_IN_FORCE; j++)
      if (!paired[j] && same_address(&from[j], l)) {
        paired[j] = true;
        plan->from[i] = j;
      }
    if (plan->from[i] == NOT_IN_FORCE)
      plan->added++;
    else if (!same_listener(&from[plan->from[i]], l))
      plan->changed++;
  }
  for (size_t j = 0; j < n_from; j++)
    plan->removed += !paired[j];
  free(paired);
}

/* Opens every worker's socket for each new address; all or none. An
 * address another process holds is refused before ours share it through
 * SO_REUSEPORT. */
static int open_new_addresses(px_listen_plan_t *plan) {
  for (size_t i = 0; i < plan->n_listeners; i++) {
    if (plan->from[i] != NOT_IN_FORCE)
      continue;
    const reg_listener_t *l = &plan->listeners[i];
    int rc = core_addr_in_use(&l->addr, SOCK_STREAM);
    if (rc != 0) {
      log_cannot_listen(l, rc,
                        rc == -EADDRINUSE ? " (by another process)" : "");
      return rc;
    }
    /* In worker order: the group's index w is then worker w's, as the
     * CPU steering listen_on attaches expects (core_affinity_steer). */
    for (unsigned w = 0; w < plan->n_workers; w++) {
      int fd =
          open_reuseport_socket((const struct sockaddr *)&l->addr, SOCK_STREAM);
      if (fd >= 0 && listen(fd, LISTEN_BACKLOG) != 0) {
        int err = -errno;
        close(fd);
        fd = err;
      }
      if (fd < 0) {
        log_cannot_listen(l, fd, "");
        return fd;
      }
      plan->fds[i * plan->n_workers + w] = fd;
    }
  }
  return 0;
}

int px_listen_plan_new(const reg_listener_t *from, size_t n_from,
                       const reg_config_t *next, unsigned n_workers,
                       px_listen_plan_t **out) {
  *out = NULL;
  size_t n = next->n_listeners;
  if (same_set(from, n_from, next->listeners, n))
    return 0;
  px_listen_plan_t *plan = xcalloc(1, sizeof *plan);
  atomic_init(&plan->refs, 1);
  plan->n_listeners = n;
  plan->n_from = n_from;
  plan->n_workers = n_workers;
  plan->listeners = xcalloc(n ? n : 1, sizeof *plan->listeners);
  plan->from = xcalloc(n ? n : 1, sizeof *plan->from);
  size_t n_fds = n * n_workers;
  plan->fds = xcalloc(n_fds ? n_fds : 1, sizeof *plan->fds);
  for (size_t i = 0; i < n_fds; i++)
    plan->fds[i] = -1;
  for (size_t i = 0; i < n; i++)
    copy_listener(&plan->listeners[i], &next->listeners[i]);
  pair_listeners(plan, from, n_from);
  int rc = open_new_addresses(plan);
  if (rc != 0) {
    px_listen_plan_release(plan);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    size_t j = plan->from[i];
    if (j == NOT_IN_FORCE)
      log_listener("added", &plan->listeners[i]);
    else if (!same_listener(&from[j], &plan->listeners[i]))
      log_listener("changed (name, protocol or fallback)", &plan->listeners[i]);
  }
  for (size_t j = 0; j < n_from; j++) {
    bool kept = false;
    for (size_t i = 0; i < n && !kept; i++)
      kept = plan->from[i] == j;
    if (!kept)
      log_listener("removed; its connections finish", &from[j]);
  }
  *out = plan;
  return 0;
}

const reg_listener_t *px_listen_plan_listeners(const px_listen_plan_t *plan,
                                               size_t *n, size_t *added,
                                               size_t *removed,
                                               size_t *changed) {
  if (added)
    *added = plan->added;
  if (removed)
    *removed = plan->removed;
  if (changed)
    *changed = plan->changed;
  *n = plan->n_listeners;
  return plan->listeners;
}

void px_listen_plan_hold(px_listen_plan_t *plan) {
  atomic_fetch_add_explicit(&plan->refs, 1, memory_order_relaxed);
}

void px_listen_plan_release(px_listen_plan_t *plan) {
  if (plan == NULL ||
      atomic_fetch_sub_explicit(&plan->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < plan->n_listeners * plan->n_workers; i++)
    if (plan->fds[i] >= 0)
      close(plan->fds[i]);
  for (size_t i = 0; i < plan->n_listeners; i++) {
    free(plan->listeners[i].name);
    free(plan->listeners[i].fallback);
  }
  free(plan->listeners);
  free(plan->from);
  free(plan->fds);
  free(plan);
}

/* The socket l takes over from old: a duplicate of old's descriptor, so
 * the socket, and the connections queued on it, outlive old's handle.
 * Returns it, or -1 when old holds none (paused) or it cannot be made. */
static int take_over_socket(const px_listener_t *old) {
  if (!old->tcp_open)
    return -1;
  int dup_fd = fcntl(old->fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0)
    core_log(CORE_LOG_WARN, "listener %s: cannot take over its socket: %s",
             old->config->name, strerror(errno));
  return dup_fd;
}

/* l could not start on the socket meant for it: it opens its own after a
 * backoff, as after running out of descriptors. */
static void listen_later(px_listener_t *l, uint64_t backoff_ms) {
  l->backoff_ms = backoff_ms ? backoff_ms : BACKOFF_FIRST_MS;
  if (l->tcp_open)
    close_for_retry(l);
  else
    uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
}

void px_server_apply(px_server_t *server, px_listen_plan_t *plan,
                     unsigned worker) {
  if (server->stopping) {
    px_listen_plan_release(plan);
    return;
  }
  /* A plan is made against the set in force, and every worker applies
   * every plan in order, so this cannot differ; refuse rather than guess. */
  if (plan->n_from != server->n_listeners || worker >= plan->n_workers) {
    core_log(CORE_LOG_ERROR,
             "worker %u: listener change skipped: made for %zu listeners, "
             "this worker has %zu",
             worker, plan->n_from, server->n_listeners);
    px_listen_plan_release(plan);
    return;
  }
  px_listener_t **old = server->listeners;
  size_t n = plan->n_listeners;
  px_listener_t **set = xcalloc(n ? n : 1, sizeof *set);
  for (size_t i = 0; i < n; i++) {
    const reg_listener_t *spec = &plan->listeners[i];
    size_t j = plan->from[i];
    if (j != NOT_IN_FORCE && same_listener(old[j]->config, spec)) {
      set[i] = old[j];
      old[j] = NULL;
      continue;
    }
    px_listener_t *l = listener_new(server, spec);
    set[i] = l;
    int fd;
    uint64_t backoff_ms = 0;
    if (j == NOT_IN_FORCE) {
      fd = plan->fds[i * plan->n_workers + worker];
      plan->fds[i * plan->n_workers + worker] = -1;
    } else {
      fd = take_over_socket(old[j]);
      backoff_ms = old[j]->backoff_ms;
    }
    int rc = fd >= 0 ? listen_on(l, fd) : UV_EBADF;
    if (rc != 0) {
      if (fd >= 0)
        log_cannot_listen(l->config, rc, "");
      listen_later(l, backoff_ms);
    }
  }
  /* The replaced and removed listeners stop accepting only now, after
   * their successors took the sockets over. */
  for (size_t j = 0; j < server->n_listeners; j++)
    if (old[j] != NULL) {
      old[j]->retired = true;
      listener_close(old[j]);
    }
  free(old);
  server->listeners = set;
  server->n_listeners = n;
  server->in_force.listeners = plan->listeners;
  server->in_force.n_listeners = n;
  px_listen_plan_release(server->plan);
  server->plan = plan;
}
