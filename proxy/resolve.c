/* SPDX-License-Identifier: MIT */
/* resolve.c -- device hostnames resolved with c-ares inside a worker's loop */
#include "proxy/proxy_int.h"

#include <ares.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Wired to libuv the way node.js does it: c-ares tells us which sockets it
 * wants watched (socket-state callback), a uv_poll_t watches each, and a
 * timer drives c-ares's own timeouts. Answers are cached per worker by
 * their TTL, so a busy device costs one query per TTL per worker. */

#define CACHE_SIZE 1024 /* per worker; a power of two */
#define CACHE_PROBE 8   /* slots looked at before evicting */
#define TTL_MIN_MS 1000
#define TTL_MAX_MS 3600000
#define NEGATIVE_TTL_MS 5000 /* a failed name is asked again after this */

typedef struct cache_entry {
  char host[CORE_NAME_MAX + 1];
  core_ip_t addrs[PX_MAX_TARGETS];
  size_t n_addrs;
  int status; /* 0, or the failure to report again */
  uint64_t expires_ms;
} cache_entry_t;

typedef struct sock_watch {
  uv_poll_t poll; /* poll.data points here */
  px_resolver_t *resolver;
  ares_socket_t fd;
  struct sock_watch *next;
} sock_watch_t;

struct px_lookup {
  px_resolver_t *resolver;
  px_resolve_cb cb; /* NULL once cancelled */
  void *arg;
  bool starting; /* inside ares_getaddrinfo: an answer now is synchronous */
  bool done;
  int err;
  size_t n_addrs;
  core_ip_t addrs[PX_MAX_TARGETS];
  char host[CORE_NAME_MAX + 1];
};

struct px_resolver {
  uv_loop_t *loop;
  ares_channel channel;
  uv_timer_t timer;
  sock_watch_t *watches;
  size_t open_handles; /* the timer and every poll not yet closed */
  bool closing;
  cache_entry_t cache[CACHE_SIZE];
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;

static void init_library(void) {
  ares_library_init(ARES_LIB_INIT_ALL);
}

static uint64_t hash_host(const char *host) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *host; host++) {
    h ^= (unsigned char)*host;
    h *= 0x100000001b3ull;
  }
  return h;
}

static cache_entry_t *cache_find(px_resolver_t *r, const char *host) {
  size_t at = hash_host(host) & (CACHE_SIZE - 1);
  for (size_t i = 0; i < CACHE_PROBE; i++) {
    cache_entry_t *e = &r->cache[(at + i) & (CACHE_SIZE - 1)];
    if (strcmp(e->host, host) == 0)
      return e;
  }
  return NULL;
}

/* The slot for host: its own, an empty one, or the one expiring first. */
static cache_entry_t *cache_slot(px_resolver_t *r, const char *host) {
  size_t at = hash_host(host) & (CACHE_SIZE - 1);
  cache_entry_t *victim = NULL;
  for (size_t i = 0; i < CACHE_PROBE; i++) {
    cache_entry_t *e = &r->cache[(at + i) & (CACHE_SIZE - 1)];
    if (e->host[0] == '\0' || strcmp(e->host, host) == 0)
      return e;
    if (victim == NULL || e->expires_ms < victim->expires_ms)
      victim = e;
  }
  return victim;
}

static void on_handle_closed(uv_handle_t *handle) {
  px_resolver_t *r = handle->data;
  if (handle->type == UV_POLL) {
    sock_watch_t *w = handle->data;
    r = w->resolver;
    free(w);
  }
  if (--r->open_handles == 0 && r->closing)
    free(r);
}

static void arm_timer(px_resolver_t *r);

static void on_poll(uv_poll_t *poll, int status, int events) {
  sock_watch_t *w = poll->data;
  px_resolver_t *r = w->resolver;
  ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
  /* An error on the socket: let c-ares read it and notice. */
  if (status < 0 || (events & UV_READABLE))
    rfd = w->fd;
  if (status < 0 || (events & UV_WRITABLE))
    wfd = w->fd;
  ares_process_fd(r->channel, rfd, wfd);
  arm_timer(r);
}

static void on_timer(uv_timer_t *timer) {
  px_resolver_t *r = timer->data;
  ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  arm_timer(r);
}

static void arm_timer(px_resolver_t *r) {
  if (r->closing)
    return;
  struct timeval max = {1, 0}, tv;
  struct timeval *next = ares_timeout(r->channel, &max, &tv);
  uint64_t ms = (uint64_t)next->tv_sec * 1000 + (uint64_t)next->tv_usec / 1000;
  uv_timer_start(&r->timer, on_timer, ms ? ms : 1, 0);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable,
                          int writable) {
  px_resolver_t *r = data;
  sock_watch_t **link = &r->watches;
  while (*link != NULL && (*link)->fd != fd)
    link = &(*link)->next;
  sock_watch_t *w = *link;
  if (!readable && !writable) {
    if (w != NULL) {
      *link = w->next;
      uv_close((uv_handle_t *)&w->poll, on_handle_closed);
    }
    return;
  }
  if (w == NULL) {
    w = xcalloc(1, sizeof *w);
    w->resolver = r;
    w->fd = fd;
    if (uv_poll_init_socket(r->loop, &w->poll, fd) != 0) {
      free(w);
      return;
    }
    w->poll.data = w;
    w->next = r->watches;
    r->watches = w;
    r->open_handles++;
  }
  uv_poll_start(&w->poll,
                (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                on_poll);
}

int px_resolver_new(uv_loop_t *loop, const reg_config_t *config,
                    px_resolver_t **out) {
  pthread_once(&library_once, init_library);
  px_resolver_t *r = xcalloc(1, sizeof *r);
  r->loop = loop;
  struct ares_options opts = {0};
  opts.sock_state_cb = on_sock_state;
  opts.sock_state_cb_data = r;
  /* Resolution shares the visitor's connect budget. */
  uint64_t half = config->proxy.connect_timeout_ms / 2;
  opts.timeout = half > 0 ? (int)half : 1;
  opts.tries = 2;
  int rc = ares_init_options(&r->channel, &opts,
                             ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                                 ARES_OPT_TRIES);
  if (rc != ARES_SUCCESS) {
    core_log(CORE_LOG_ERROR, "resolver: %s", ares_strerror(rc));
    free(r);
    return UV_EINVAL;
  }
  if (config->proxy.resolvers != NULL) {
    rc = ares_set_servers_ports_csv(r->channel, config->proxy.resolvers);
    if (rc != ARES_SUCCESS) {
      core_log(CORE_LOG_ERROR, "resolver: servers %s: %s",
               config->proxy.resolvers, ares_strerror(rc));
      ares_destroy(r->channel);
      free(r);
      return UV_EINVAL;
    }
  }
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->open_handles = 1;
  *out = r;
  return 0;
}

void px_resolver_free(px_resolver_t *r) {
  if (r == NULL)
    return;
  /* Pending lookups get ARES_EDESTRUCTION; their callbacks free them. */
  ares_destroy(r->channel);
  r->closing = true;
  while (r->watches != NULL) {
    sock_watch_t *w = r->watches;
    r->watches = w->next;
    uv_close((uv_handle_t *)&w->poll, on_handle_closed);
  }
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

static int ares_to_uv(int status) {
  switch (status) {
  case ARES_ENOTFOUND:
  case ARES_ENODATA:
  case ARES_ENONAME:
    return UV_EAI_NONAME;
  case ARES_ETIMEOUT:
    return UV_ETIMEDOUT;
  case ARES_ECANCELLED:
  case ARES_EDESTRUCTION:
    return UV_ECANCELED;
  default:
    return UV_EAI_FAIL;
  }
}

static void on_addrinfo(void *arg, int status, int timeouts,
                        struct ares_addrinfo *result) {
  px_lookup_t *lookup = arg;
  px_resolver_t *r = lookup->resolver;
  (void)timeouts;
  core_ip_t addrs[PX_MAX_TARGETS];
  size_t n = 0;
  int ttl_s = TTL_MAX_MS / 1000;
  if (status == ARES_SUCCESS) {
    for (struct ares_addrinfo_node *node = result->nodes;
         node != NULL && n < PX_MAX_TARGETS; node = node->ai_next) {
      if (core_ip_from_sockaddr(node->ai_addr, &addrs[n]) != 0)
        continue;
      if (node->ai_ttl < ttl_s)
        ttl_s = node->ai_ttl;
      n++;
    }
  }
  if (result != NULL)
    ares_freeaddrinfo(result);
  int err =
      status == ARES_SUCCESS ? (n ? 0 : UV_EAI_NONAME) : ares_to_uv(status);

  if (err != UV_ECANCELED) {
    cache_entry_t *e = cache_slot(r, lookup->host);
    uint64_t ttl_ms = err ? NEGATIVE_TTL_MS : (uint64_t)ttl_s * 1000;
    if (ttl_ms < TTL_MIN_MS)
      ttl_ms = TTL_MIN_MS;
    memcpy(e->host, lookup->host, sizeof e->host);
    memcpy(e->addrs, addrs, n * sizeof *addrs);
    e->n_addrs = n;
    e->status = err;
    e->expires_ms = core_now_ms() + ttl_ms;
  }
  if (lookup->starting) {
    /* px_resolve returns this answer itself. */
    lookup->done = true;
    lookup->err = err;
    lookup->n_addrs = n;
    memcpy(lookup->addrs, addrs, n * sizeof *addrs);
    return;
  }
  if (lookup->cb != NULL)
    lookup->cb(lookup->arg, err, lookup->host, addrs, n);
  free(lookup);
}

int px_resolve(px_resolver_t *r, const char *host, core_ip_t *addrs,
               size_t *n_addrs, px_resolve_cb cb, void *arg,
               px_lookup_t **pending) {
  *pending = NULL;
  cache_entry_t *e = cache_find(r, host);
  if (e != NULL && e->expires_ms > core_now_ms()) {
    memcpy(addrs, e->addrs, e->n_addrs * sizeof *addrs);
    *n_addrs = e->n_addrs;
    return e->status;
  }
  px_lookup_t *lookup = xcalloc(1, sizeof *lookup);
  lookup->resolver = r;
  lookup->cb = cb;
  lookup->arg = arg;
  snprintf(lookup->host, sizeof lookup->host, "%s", host);
  struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC,
                                      .ai_socktype = SOCK_STREAM};
  lookup->starting = true;
  ares_getaddrinfo(r->channel, host, NULL, &hints, on_addrinfo, lookup);
  lookup->starting = false;
  if (lookup->done) {
    int err = lookup->err;
    memcpy(addrs, lookup->addrs, lookup->n_addrs * sizeof *addrs);
    *n_addrs = lookup->n_addrs;
    free(lookup);
    return err;
  }
  *pending = lookup;
  arm_timer(r);
  return PX_RESOLVE_PENDING;
}

void px_resolve_cancel(px_lookup_t *lookup) {
  if (lookup != NULL)
    lookup->cb = NULL;
}
