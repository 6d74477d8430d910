/* SPDX-License-Identifier: MIT */
/* fixed_rate.c -- an open-loop load client: requests leave on a fixed
 * schedule whatever the server does, and each latency counts from the time
 * its request was due, so a server that stalls cannot hide its stalls by
 * slowing the client down (no coordinated omission, as in wrk2) */
#include "core/core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Usage: see usage() below. Prints one JSON object on stdout; exits 0 when
 * the run took place (whatever the server answered), 2 on bad arguments,
 * 1 when it could not run at all. */

/* A request that never completed (error, timeout, never sent) sorts above
 * every real latency: percentiles that reach it print as null. */
#define LAT_FAILED UINT64_MAX

typedef enum conn_state {
  CONN_CLOSED,     /* no socket: the next request connects first */
  CONN_IDLE,       /* keep-alive socket waiting for the next request */
  CONN_CONNECTING, /* request assigned, connect(2) in progress */
  CONN_SENDING,
  CONN_READING,
  CONN_DRAINING, /* answer complete; waiting for the server to close */
} conn_state_t;

typedef struct conn {
  int fd;
  conn_state_t state;
  uint64_t req;         /* index in the schedule of the request in flight */
  uint64_t deadline_ns; /* absolute: the request (or the drain) gives up */
  size_t sent;
  char head[4096]; /* the answer's head, or its first bytes in raw mode */
  size_t head_len; /* bytes in head so far */
  bool head_done;
  size_t body_left; /* SIZE_MAX: the body runs until the server closes */
} conn_t;

typedef struct load_opts {
  struct sockaddr_in addr;
  double rate;     /* requests per second */
  double duration; /* seconds of schedule, warm-up included */
  double warmup;   /* seconds at the start whose latencies are not kept */
  double timeout;  /* seconds a request may take */
  unsigned conns;  /* keep-alive connections; 0: one per request */
  unsigned max_open;
  const char *request; /* the bytes each request sends */
  size_t request_len;
  const char *expect; /* raw mode: the answer must start with this */
  size_t expect_len;
} load_opts_t;

typedef struct load {
  const load_opts_t *o;
  int ep;
  int timer;
  conn_t *conns;
  size_t n_conns;
  size_t *ready; /* stack of connections free to take a request */
  size_t n_ready;
  size_t busy; /* connections with a request in flight */
  uint64_t t0;
  uint64_t total; /* requests in the schedule */
  uint64_t warm;  /* the first warm requests are not kept */
  uint64_t due;   /* requests whose time has come */
  uint64_t started;
  uint64_t *lat; /* ns per kept request, indexed by request - warm */
  uint64_t completed, errors, timeouts, bad_answers, reconnects;
  uint64_t late_max_ns, late_over_1ms;
} load_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t sched_ns(const load_t *l, uint64_t req) {
  return l->t0 + (uint64_t)((double)req * 1e9 / l->o->rate);
}

static void conn_watch(load_t *l, conn_t *c, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(l->ep, op, c->fd, &ev) != 0) {
    perror("fixed_rate: epoll_ctl");
    exit(1);
  }
}

static void conn_close(load_t *l, conn_t *c) {
  if (c->fd >= 0)
    close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->state = CONN_CLOSED;
}

static void conn_release(load_t *l, conn_t *c) {
  l->ready[l->n_ready++] = (size_t)(c - l->conns);
}

static void request_record(load_t *l, uint64_t req, uint64_t lat) {
  if (req >= l->warm)
    l->lat[req - l->warm] = lat;
}

/* The request in flight on c failed: it counts as never answered. */
static void request_fail(load_t *l, conn_t *c, uint64_t *counter) {
  (*counter)++;
  request_record(l, c->req, LAT_FAILED);
  l->busy--;
  conn_close(l, c);
  conn_release(l, c);
}

static void request_done(load_t *l, conn_t *c, bool good) {
  uint64_t t = now_ns();
  if (good) {
    l->completed++;
    request_record(l, c->req, t - sched_ns(l, c->req));
  } else {
    l->bad_answers++;
    request_record(l, c->req, LAT_FAILED);
  }
  l->busy--;
  if (l->o->conns > 0 && good) {
    c->state = CONN_IDLE;
    conn_release(l, c);
    return;
  }
  if (l->o->conns > 0) {
    conn_close(l, c);
    conn_release(l, c);
    return;
  }
  /* One connection per request: the server closes first (as in the
   * new-connection throughput test), so TIME_WAIT stays on its side. */
  c->state = CONN_DRAINING;
  c->deadline_ns = t + (uint64_t)(l->o->timeout * 1e9);
}

static void conn_send(load_t *l, conn_t *c) {
  const load_opts_t *o = l->o;
  while (c->sent < o->request_len) {
    ssize_t n = send(c->fd, o->request + c->sent, o->request_len - c->sent,
                     MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN)
      return;
    if (n <= 0) {
      request_fail(l, c, &l->errors);
      return;
    }
    c->sent += (size_t)n;
  }
  c->state = CONN_READING;
  conn_watch(l, c, EPOLLIN, EPOLL_CTL_MOD);
}

static int conn_connect(load_t *l, conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    return -errno;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (const struct sockaddr *)&l->o->addr, sizeof l->o->addr) !=
          0 &&
      errno != EINPROGRESS) {
    int err = -errno;
    close(c->fd);
    c->fd = -1;
    return err;
  }
  c->state = CONN_CONNECTING;
  conn_watch(l, c, EPOLLOUT, EPOLL_CTL_ADD);
  return 0;
}

static void request_start(load_t *l, conn_t *c, uint64_t req, uint64_t now) {
  uint64_t late = now - sched_ns(l, req);
  if (late > l->late_max_ns)
    l->late_max_ns = late;
  if (late > 1000000)
    l->late_over_1ms++;
  c->req = req;
  c->sent = 0;
  c->head_len = 0;
  c->head_done = false;
  c->deadline_ns = now + (uint64_t)(l->o->timeout * 1e9);
  l->busy++;
  if (c->state == CONN_IDLE) {
    c->state = CONN_SENDING;
    conn_watch(l, c, EPOLLOUT, EPOLL_CTL_MOD);
    conn_send(l, c);
    return;
  }
  if (l->o->conns > 0)
    l->reconnects++; /* the server closed it, or an earlier request failed */
  if (conn_connect(l, c) != 0) {
    c->fd = -1;
    request_fail(l, c, &l->errors);
  }
}

/* HTTP: the head, then Content-Length bytes (or bytes until the close).
 * Returns the bytes of data that belong to the body. */
static size_t http_take_head(load_t *l, conn_t *c, const char *data, size_t n,
                             bool *bad) {
  size_t room = sizeof c->head - 1 - c->head_len;
  size_t take = n < room ? n : room;
  memcpy(c->head + c->head_len, data, take);
  size_t before = c->head_len;
  c->head_len += take;
  c->head[c->head_len] = '\0';
  char *end = strstr(c->head, "\r\n\r\n");
  if (end == NULL) {
    *bad = c->head_len == sizeof c->head - 1;
    return 0;
  }
  size_t head_size = (size_t)(end + 4 - c->head);
  c->head_done = true;
  *bad = strncmp(c->head, "HTTP/1.", 7) != 0 || c->head_len < 12 ||
         c->head[9] != '2';
  c->body_left = SIZE_MAX;
  for (char *p = c->head; (p = strchr(p, '\n')) != NULL && p < end;) {
    p++;
    if (strncasecmp(p, "content-length:", 15) == 0)
      c->body_left = strtoull(p + 15, NULL, 10);
  }
  return n - (head_size - before);
}

static void conn_read(load_t *l, conn_t *c) {
  const load_opts_t *o = l->o;
  char buf[65536];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN)
      return;
    if (c->state == CONN_DRAINING || c->state == CONN_IDLE) {
      if (n > 0)
        continue; /* not ours to judge: the answer was complete */
      /* An idle keep-alive connection is on the ready stack already. */
      bool draining = c->state == CONN_DRAINING;
      conn_close(l, c);
      if (draining)
        conn_release(l, c);
      return;
    }
    if (n <= 0) {
      /* A close ends a body without Content-Length. */
      if (n == 0 && c->head_done && c->body_left == SIZE_MAX) {
        request_done(l, c, true);
        conn_close(l, c);
        if (o->conns == 0)
          conn_release(l, c);
        return;
      }
      request_fail(l, c, &l->errors);
      return;
    }
    if (o->expect != NULL) {
      size_t take = o->expect_len - c->head_len;
      take = (size_t)n < take ? (size_t)n : take;
      memcpy(c->head + c->head_len, buf, take);
      c->head_len += take;
      if (c->head_len == o->expect_len) {
        request_done(l, c, memcmp(c->head, o->expect, o->expect_len) == 0);
        if (c->state == CONN_DRAINING)
          continue;
        return;
      }
      continue;
    }
    size_t body = (size_t)n;
    bool bad = false;
    if (!c->head_done)
      body = http_take_head(l, c, buf, (size_t)n, &bad);
    if (bad) {
      request_done(l, c, false);
      return;
    }
    if (!c->head_done || c->body_left == SIZE_MAX)
      continue;
    if (body > c->body_left) {
      request_done(l, c, false); /* more than one answer: not HTTP/1.1 */
      return;
    }
    c->body_left -= body;
    if (c->body_left == 0) {
      request_done(l, c, true);
      if (c->state != CONN_DRAINING)
        return;
    }
  }
}

static void conn_event(load_t *l, conn_t *c) {
  if (c->state == CONN_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      request_fail(l, c, &l->errors);
      return;
    }
    c->state = CONN_SENDING;
  }
  if (c->state == CONN_SENDING)
    conn_send(l, c);
  else
    conn_read(l, c);
}

/* Requests whose connection took too long are failed; so are drains. */
static void conns_expire(load_t *l, uint64_t now) {
  for (size_t i = 0; i < l->n_conns; i++) {
    conn_t *c = &l->conns[i];
    if (c->state < CONN_CONNECTING || now < c->deadline_ns)
      continue;
    if (c->state == CONN_DRAINING) {
      conn_close(l, c);
      conn_release(l, c);
    } else {
      request_fail(l, c, &l->timeouts);
    }
  }
}

static void timer_arm(load_t *l, uint64_t at) {
  struct itimerspec its = {0};
  its.it_value.tv_sec = (time_t)(at / 1000000000u);
  its.it_value.tv_nsec = (long)(at % 1000000000u);
  timerfd_settime(l->timer, TFD_TIMER_ABSTIME, &its, NULL);
}

static void load_run(load_t *l) {
  const load_opts_t *o = l->o;
  uint64_t end = 0;
  l->t0 = now_ns() + 1000000;
  uint64_t last_expire = l->t0;
  for (;;) {
    uint64_t now = now_ns();
    while (l->due < l->total && sched_ns(l, l->due) <= now)
      l->due++;
    while (l->started < l->due && l->n_ready > 0) {
      conn_t *c = &l->conns[l->ready[--l->n_ready]];
      request_start(l, c, l->started++, now);
    }
    if (l->due == l->total && end == 0)
      end = now + (uint64_t)(o->timeout * 1e9);
    if (end != 0 && (now >= end || (l->started == l->total && l->busy == 0)))
      break;
    if (l->due < l->total)
      timer_arm(l, sched_ns(l, l->due));
    struct epoll_event ev[256];
    int n = epoll_wait(l->ep, ev, 256, 10);
    for (int i = 0; i < n; i++) {
      if (ev[i].data.ptr == NULL) {
        uint64_t ticks;
        if (read(l->timer, &ticks, sizeof ticks) < 0)
          ticks = 0;
        continue;
      }
      conn_event(l, ev[i].data.ptr);
    }
    now = now_ns();
    if (now - last_expire > 10000000) {
      conns_expire(l, now);
      last_expire = now;
    }
  }
  /* Whatever is still in flight or was never sent counts as timed out. */
  for (size_t i = 0; i < l->n_conns; i++) {
    conn_t *c = &l->conns[i];
    if (c->state >= CONN_CONNECTING && c->state != CONN_DRAINING) {
      l->timeouts++;
      request_record(l, c->req, LAT_FAILED);
    }
    conn_close(l, c);
  }
  for (uint64_t r = l->started; r < l->total; r++) {
    l->timeouts++;
    request_record(l, r, LAT_FAILED);
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static void print_us(const char *key, uint64_t ns) {
  if (ns == LAT_FAILED)
    printf("\"%s\": null", key);
  else
    printf("\"%s\": %.1f", key, (double)ns / 1e3);
}

static void load_report(load_t *l) {
  const load_opts_t *o = l->o;
  size_t n = (size_t)(l->total - l->warm);
  qsort(l->lat, n, sizeof *l->lat, cmp_u64);
  printf("{\"mode\": \"%s\", \"rate\": %.1f, \"duration_s\": %.3f, "
         "\"warmup_s\": %.3f, \"scheduled\": %llu, \"kept\": %zu, "
         "\"completed\": %llu, \"errors\": %llu, \"timeouts\": %llu, "
         "\"bad_answers\": %llu, \"reconnects\": %llu, ",
         o->conns > 0 ? "keepalive" : "newconn", o->rate, o->duration,
         o->warmup, (unsigned long long)l->total, n,
         (unsigned long long)l->completed, (unsigned long long)l->errors,
         (unsigned long long)l->timeouts, (unsigned long long)l->bad_answers,
         (unsigned long long)l->reconnects);
  static const struct {
    const char *key;
    double q;
  } pct[] = {{"p50_us", 0.50},
             {"p90_us", 0.90},
             {"p99_us", 0.99},
             {"p999_us", 0.999},
             {"max_us", 1.0}};
  for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++) {
    /* nearest rank */
    size_t rank = (size_t)ceil(pct[i].q * (double)n);
    print_us(pct[i].key, n > 0 ? l->lat[rank > 0 ? rank - 1 : 0] : LAT_FAILED);
    printf(", ");
  }
  printf("\"late_max_us\": %.1f, \"late_over_1ms\": %llu}\n",
         (double)l->late_max_ns / 1e3, (unsigned long long)l->late_over_1ms);
}

static char *file_read(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  char *data = xmalloc((size_t)st.st_size);
  ssize_t n = read(fd, data, (size_t)st.st_size);
  close(fd);
  if (n != st.st_size) {
    free(data);
    return NULL;
  }
  *len = (size_t)n;
  return data;
}

static void usage(void) {
  fprintf(stderr,
          "usage: fixed_rate -p PORT -r RATE -d SECONDS [-w SECONDS]\n"
          "                  [-a ADDR] [-c CONNS] [-m MAX_OPEN] [-t SECONDS]\n"
          "                  (-H HOST [-u PATH] | -f FILE -e PREFIX)\n"
          "  -r  requests per second, on a fixed schedule\n"
          "  -d  seconds of schedule; -w: the first seconds are not kept\n"
          "  -c  keep-alive connections (default 0: a new connection per\n"
          "      request, closed by the server)\n"
          "  -m  connections open at once at most, new-connection mode\n"
          "  -t  seconds a request may take before it counts as timed out\n"
          "  -H  GET PATH from HOST; done when the whole answer is in,\n"
          "      good when its status is 2xx\n"
          "  -f  send the bytes of FILE; done when the answer's first\n"
          "      bytes are in, good when they are PREFIX\n");
  exit(2);
}

static bool parse_double(const char *s, double *out) {
  char *end;
  *out = strtod(s, &end);
  return *s != '\0' && *end == '\0' && *out >= 0;
}

static void opts_parse(load_opts_t *o, int argc, char **argv) {
  const char *host = NULL, *path = "/", *file = NULL;
  long port = 0;
  o->addr.sin_family = AF_INET;
  o->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  o->timeout = 5;
  o->max_open = 1000;
  int opt;
  bool ok = true;
  while ((opt = getopt(argc, argv, "a:p:r:d:w:c:m:t:H:u:f:e:")) != -1) {
    switch (opt) {
    case 'a':
      ok = ok && inet_pton(AF_INET, optarg, &o->addr.sin_addr) == 1;
      break;
    case 'p':
      port = strtol(optarg, NULL, 10);
      break;
    case 'r':
      ok = ok && parse_double(optarg, &o->rate);
      break;
    case 'd':
      ok = ok && parse_double(optarg, &o->duration);
      break;
    case 'w':
      ok = ok && parse_double(optarg, &o->warmup);
      break;
    case 't':
      ok = ok && parse_double(optarg, &o->timeout);
      break;
    case 'c':
      o->conns = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'm':
      o->max_open = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'H':
      host = optarg;
      break;
    case 'u':
      path = optarg;
      break;
    case 'f':
      file = optarg;
      break;
    case 'e':
      o->expect = optarg;
      o->expect_len = strlen(optarg);
      break;
    default:
      usage();
    }
  }
  if (!ok || port <= 0 || port > 65535 || o->rate <= 0 || o->duration <= 0 ||
      o->warmup >= o->duration || (host == NULL) == (file == NULL) ||
      (file != NULL && (o->expect_len == 0 || o->conns > 0)) ||
      o->expect_len >= sizeof((conn_t *)0)->head || o->max_open == 0)
    usage();
  o->addr.sin_port = htons((uint16_t)port);
  if (file != NULL) {
    o->request = file_read(file, &o->request_len);
    if (o->request == NULL) {
      fprintf(stderr, "fixed_rate: cannot read %s\n", file);
      exit(2);
    }
    return;
  }
  char *req = xmalloc(strlen(host) + strlen(path) + 128);
  o->request_len = (size_t)sprintf(
      req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fixed_rate\r\n%s\r\n",
      path, host, o->conns > 0 ? "" : "Connection: close\r\n");
  o->request = req;
}

/* Keep-alive connections are opened before the schedule starts: their
 * handshakes are not part of any request's latency. */
static int load_open_conns(load_t *l) {
  for (size_t i = 0; i < l->n_conns; i++) {
    conn_t *c = &l->conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&l->o->addr,
                          sizeof l->o->addr) != 0) {
      int err = -errno;
      if (fd >= 0)
        close(fd);
      return err;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->state = CONN_IDLE;
    conn_watch(l, c, EPOLLIN, EPOLL_CTL_ADD);
  }
  return 0;
}

int main(int argc, char **argv) {
  load_opts_t o = {0};
  opts_parse(&o, argc, argv);
  /* Wake-ups as close to the schedule as the kernel allows. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  load_t l = {.o = &o};
  l.total = (uint64_t)llround(o.rate * o.duration);
  l.warm = (uint64_t)llround(o.rate * o.warmup);
  if (l.total <= l.warm)
    usage();
  l.lat = xcalloc((size_t)(l.total - l.warm), sizeof *l.lat);
  l.n_conns = o.conns > 0 ? o.conns : o.max_open;
  l.conns = xcalloc(l.n_conns, sizeof *l.conns);
  l.ready = xcalloc(l.n_conns, sizeof *l.ready);
  l.ep = epoll_create1(EPOLL_CLOEXEC);
  l.timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (l.ep < 0 || l.timer < 0) {
    perror("fixed_rate: epoll/timerfd");
    return 1;
  }
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(l.ep, EPOLL_CTL_ADD, l.timer, &tev);
  for (size_t i = 0; i < l.n_conns; i++) {
    l.conns[i].fd = -1;
    l.ready[l.n_conns - 1 - i] = i;
  }
  l.n_ready = l.n_conns;
  int err = o.conns > 0 ? load_open_conns(&l) : 0;
  if (err != 0)
    fprintf(stderr, "fixed_rate: connect: %s\n", strerror(-err));
  else {
    load_run(&l);
    load_report(&l);
  }
  /* The sanitizer build (the suite's smoke run) checks for leaks. */
  free(l.lat);
  free(l.conns);
  free(l.ready);
  free((char *)o.request);
  return err != 0;
}
