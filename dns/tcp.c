/* SPDX-License-Identifier: MIT */
/* tcp.c -- DNS over TCP: length-prefixed messages, pipelined, in order */
#include "dns/dns_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define READ_BUF_MIN 1024
#define FRAME_MAX (2 + 65535)
/* A connection is not read (and a transfer not continued) while this many
 * bytes of its answers wait to be written: one rule for backpressure. */
#define WRITE_HIGH_WATER (256 * 1024)

/* Open connections of every worker, against dns.tcp_connections. One
 * counter per process: the limit protects the process's descriptors. */
static atomic_size_t open_connections;

typedef struct tcp_listener {
  uv_tcp_t handle; /* handle.data: the listener */
  dns_tcp_t *tcp;
  struct sockaddr_storage addr;
} tcp_listener_t;

typedef struct conn conn_t;

struct dns_tcp {
  uv_loop_t *loop;
  const reg_config_t *config;
  const reg_t *reg;
  size_t n_handles; /* listener handles not yet closed */
  size_t n_conns;
  bool stopping;
  conn_t *conns; /* every open connection, for stop */
  /* One loop, one thread: each answer is built here, then copied into its
   * write request. */
  uint8_t answer[65535];
  size_t n_listeners;
  tcp_listener_t listeners[];
};

struct conn {
  uv_tcp_t handle; /* handle.data and timer.data: the connection */
  uv_timer_t timer;
  dns_tcp_t *tcp;
  conn_t *prev, *next;
  struct sockaddr_storage peer;
  uint8_t *buf; /* received bytes not yet answered */
  size_t len, cap;
  size_t queued; /* bytes handed to uv_write and not yet written */
  dns_xfr_t *xfr;
  unsigned n_handles;
  bool counted; /* holds a place in open_connections */
  bool reading, eof, closing;
};

typedef struct write_req {
  uv_write_t req;
  conn_t *conn;
  size_t len;
  uint8_t data[];
} write_req_t;

static void process(conn_t *conn);

static void tcp_maybe_free(dns_tcp_t *tcp) {
  if (tcp->stopping && tcp->n_handles == 0 && tcp->n_conns == 0)
    free(tcp);
}

/* ---- a connection ------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *handle) {
  conn_t *conn = handle->data;
  if (--conn->n_handles > 0)
    return;
  dns_tcp_t *tcp = conn->tcp;
  if (conn->prev)
    conn->prev->next = conn->next;
  else
    tcp->conns = conn->next;
  if (conn->next)
    conn->next->prev = conn->prev;
  if (conn->counted)
    atomic_fetch_sub(&open_connections, 1);
  dns_xfr_free(conn->xfr);
  free(conn->buf);
  free(conn);
  tcp->n_conns--;
  tcp_maybe_free(tcp);
}

static void conn_close(conn_t *conn) {
  if (conn->closing)
    return;
  conn->closing = true;
  uv_close((uv_handle_t *)&conn->timer, on_conn_closed);
  uv_close((uv_handle_t *)&conn->handle, on_conn_closed);
}

static void on_idle(uv_timer_t *timer) {
  conn_close(timer->data);
}

/* Only a whole query (or a written answer) restarts the clock: a client
 * dripping bytes of one message cannot hold the connection open. */
static void idle_restart(conn_t *conn) {
  if (!conn->closing)
    uv_timer_start(&conn->timer, on_idle, conn->tcp->config->dns.tcp_idle_ms,
                   0);
}

static void on_write(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  conn_t *conn = w->conn;
  conn->queued -= w->len;
  free(w);
  if (conn->closing)
    return;
  if (status < 0) {
    conn_close(conn);
    return;
  }
  /* A slow reader of a long transfer is making progress, not idling. */
  idle_restart(conn);
  process(conn);
}

/* Queues one message with its length prefix. */
static int send_message(conn_t *conn, const uint8_t *msg, size_t len) {
  write_req_t *w = malloc(sizeof *w + 2 + len);
  if (!w) {
    conn_close(conn);
    return -ENOMEM;
  }
  w->conn = conn;
  w->len = 2 + len;
  w->data[0] = (uint8_t)(len >> 8);
  w->data[1] = (uint8_t)len;
  memcpy(w->data + 2, msg, len);
  uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
  int err = uv_write(&w->req, (uv_stream_t *)&conn->handle, &buf, 1, on_write);
  if (err != 0) {
    free(w);
    conn_close(conn);
    return err;
  }
  conn->queued += w->len;
  return 0;
}

/* Sends what a running transfer has next, up to the high-water mark. */
static void pump_xfr(conn_t *conn) {
  while (conn->xfr && !conn->closing && conn->queued < WRITE_HIGH_WATER) {
    size_t n =
        dns_xfr_next(conn->xfr, conn->tcp->answer, sizeof conn->tcp->answer);
    if (n == 0) {
      dns_xfr_free(conn->xfr);
      conn->xfr = NULL;
      break;
    }
    send_message(conn, conn->tcp->answer, n);
  }
}

/* Answers one query; false when the connection must close. */
static bool answer_one(conn_t *conn, const uint8_t *msg, size_t len) {
  dns_tcp_t *tcp = conn->tcp;
  const dns_request_t req = {.config = tcp->config,
                             .reg = tcp->reg,
                             .peer = (const struct sockaddr *)&conn->peer,
                             .tcp = true,
                             .now = (uint64_t)time(NULL),
                             .cookie_secret = dns_cookie_secret(),
                             .msg = msg,
                             .len = len};
  size_t n = dns_respond(&req, tcp->answer, sizeof tcp->answer, &conn->xfr);
  /* Not a query (a response, say): nothing a client would wait for; the
   * stream cannot be trusted either. */
  if (n == 0)
    return false;
  return send_message(conn, tcp->answer, n) == 0;
}

static bool buf_reserve(conn_t *conn, size_t need) {
  if (conn->cap >= need)
    return true;
  size_t cap = conn->cap ? conn->cap : READ_BUF_MIN;
  while (cap < need)
    cap *= 2;
  if (cap > FRAME_MAX)
    cap = FRAME_MAX;
  if (cap < need)
    return false;
  uint8_t *buf = realloc(conn->buf, cap);
  if (!buf)
    return false;
  conn->buf = buf;
  conn->cap = cap;
  return true;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
  conn_t *conn = handle->data;
  (void)suggested;
  /* No room leaves the buffer empty, which libuv reports as UV_ENOBUFS. */
  *out = uv_buf_init(NULL, 0);
  if (!buf_reserve(conn, conn->len + 1))
    return;
  *out = uv_buf_init((char *)conn->buf + conn->len,
                     (unsigned)(conn->cap - conn->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *conn = stream->data;
  (void)buf;
  if (nread == 0 || conn->closing)
    return;
  if (nread == UV_EOF) {
    conn->eof = true;
  } else if (nread < 0) {
    conn_close(conn);
    return;
  } else {
    conn->len += (size_t)nread;
  }
  process(conn);
}

static void set_reading(conn_t *conn, bool on) {
  if (on == conn->reading)
    return;
  conn->reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&conn->handle, on_alloc, on_read);
  else
    uv_read_stop((uv_stream_t *)&conn->handle);
}

/* Answers every complete message in the buffer, in order, unless a
 * transfer or a full write queue makes the rest wait; then decides
 * whether to read on. */
static void process(conn_t *conn) {
  size_t off = 0;

  pump_xfr(conn);
  while (!conn->closing && !conn->xfr && conn->queued < WRITE_HIGH_WATER) {
    const uint8_t *msg;
    size_t msg_len, consumed;
    dns_frame_t f = dns_tcp_frame(conn->buf + off, conn->len - off, &msg,
                                  &msg_len, &consumed);
    if (f == DNS_FRAME_INVALID) {
      conn_close(conn);
      return;
    }
    if (f == DNS_FRAME_NEED_MORE) {
      if (!buf_reserve(conn, consumed)) {
        conn_close(conn);
        return;
      }
      break;
    }
    off += consumed;
    idle_restart(conn);
    if (!answer_one(conn, msg, msg_len)) {
      conn_close(conn);
      return;
    }
    pump_xfr(conn);
  }
  if (conn->closing)
    return;
  if (off > 0) {
    memmove(conn->buf, conn->buf + off, conn->len - off);
    conn->len -= off;
  }
  bool waiting = conn->xfr || conn->queued >= WRITE_HIGH_WATER;
  set_reading(conn, !conn->eof && !waiting);
  /* The client has said all it will: close once every answer is out. A
   * partial message after EOF will never complete. */
  if (conn->eof && !waiting && conn->queued == 0) {
    const uint8_t *msg;
    size_t msg_len, consumed;
    if (dns_tcp_frame(conn->buf, conn->len, &msg, &msg_len, &consumed) !=
        DNS_FRAME_COMPLETE)
      conn_close(conn);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  tcp_listener_t *l = server->data;
  dns_tcp_t *tcp = l->tcp;
  if (status < 0) {
    core_log(CORE_LOG_WARN, "dns: tcp accept: %s", uv_strerror(status));
    return;
  }
  conn_t *conn = xcalloc(1, sizeof *conn);
  conn->tcp = tcp;
  uv_tcp_init(tcp->loop, &conn->handle);
  uv_timer_init(tcp->loop, &conn->timer);
  conn->handle.data = conn;
  conn->timer.data = conn;
  conn->n_handles = 2;
  conn->next = tcp->conns;
  if (tcp->conns)
    tcp->conns->prev = conn;
  tcp->conns = conn;
  tcp->n_conns++;
  if (uv_accept(server, (uv_stream_t *)&conn->handle) != 0) {
    conn_close(conn);
    return;
  }
  conn->counted = true;
  if (atomic_fetch_add(&open_connections, 1) >=
      tcp->config->dns.tcp_connections) {
    core_log(CORE_LOG_DEBUG, "dns: tcp connection limit (%u) reached",
             tcp->config->dns.tcp_connections);
    conn_close(conn);
    return;
  }
  int len = sizeof conn->peer;
  uv_tcp_getpeername(&conn->handle, (struct sockaddr *)&conn->peer, &len);
  uv_tcp_nodelay(&conn->handle, 1);
  idle_restart(conn);
  set_reading(conn, true);
}

/* ---- listeners ---------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *handle) {
  tcp_listener_t *l = handle->data;
  dns_tcp_t *tcp = l->tcp;
  tcp->n_handles--;
  tcp_maybe_free(tcp);
}

/* libuv 1.44 cannot set SO_REUSEPORT: open the socket here and hand it to
 * uv_tcp_open. Each worker binds the same address; the kernel spreads new
 * connections across them. */
static int tcp_socket_open(const struct sockaddr_storage *addr) {
  int one = 1;
  socklen_t addr_len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                   : sizeof(struct sockaddr_in);
  int fd =
      socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      (addr->ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      bind(fd, (const struct sockaddr *)addr, addr_len) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

static int listener_start(dns_tcp_t *tcp, tcp_listener_t *l) {
  char text[64];
  core_sockaddr_format((const struct sockaddr *)&l->addr, text, sizeof text);
  int fd = tcp_socket_open(&l->addr);
  if (fd < 0) {
    core_log(CORE_LOG_ERROR, "dns: cannot bind tcp %s: %s", text,
             uv_strerror(fd));
    return fd;
  }
  uv_tcp_init(tcp->loop, &l->handle);
  l->handle.data = l;
  tcp->n_handles++;
  int err = uv_tcp_open(&l->handle, fd);
  if (err != 0)
    close(fd);
  else
    err = uv_listen((uv_stream_t *)&l->handle, LISTEN_BACKLOG, on_connection);
  if (err != 0) {
    core_log(CORE_LOG_ERROR, "dns: cannot listen on tcp %s: %s", text,
             uv_strerror(err));
    return err;
  }
  /* Best effort: without it the kernel spreads connections by hash. */
  (void)core_affinity_steer(fd);
  core_log(CORE_LOG_DEBUG, "dns: answering on tcp %s", text);
  return 0;
}

int dns_tcp_start(uv_loop_t *loop, const reg_config_t *config, const reg_t *reg,
                  dns_tcp_t **out) {
  size_t n = config->dns.n_listen;
  dns_tcp_t *tcp = xcalloc(1, sizeof *tcp + n * sizeof(tcp_listener_t));
  tcp->loop = loop;
  tcp->config = config;
  tcp->reg = reg;
  tcp->n_listeners = n;
  for (size_t i = 0; i < n; i++) {
    tcp->listeners[i].tcp = tcp;
    tcp->listeners[i].addr = config->dns.listen[i];
    int err = listener_start(tcp, &tcp->listeners[i]);
    if (err != 0) {
      dns_tcp_stop(tcp);
      return err;
    }
  }
  *out = tcp;
  return 0;
}

void dns_tcp_stop(dns_tcp_t *tcp) {
  if (!tcp || tcp->stopping)
    return;
  tcp->stopping = true;
  for (size_t i = 0; i < tcp->n_listeners; i++) {
    uv_handle_t *h = (uv_handle_t *)&tcp->listeners[i].handle;
    if (h->data == &tcp->listeners[i])
      uv_close(h, on_listener_closed);
  }
  /* DNS clients retry elsewhere: open connections are not drained. */
  for (conn_t *conn = tcp->conns; conn; conn = conn->next)
    conn_close(conn);
  tcp_maybe_free(tcp);
}
