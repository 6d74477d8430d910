/* SPDX-License-Identifier: MIT */
/* conn.c -- one visitor connection: peek, route, connect, relay, close */
#include "proxy/proxy_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* After an error page, how long to swallow the rest of the request so the
 * visitor reads the page instead of a reset. */
#define LINGER_MS 2000

typedef enum px_state {
  PX_STATE_PEEKING,
  PX_STATE_CONNECTING,
  PX_STATE_RELAYING,
  PX_STATE_ANSWERING, /* writing an error page, then lingering */
  PX_STATE_CLOSING,
} px_state_t;

/* One direction's worth of relay state, named after the side it reads. */
typedef struct px_side {
  uv_tcp_t tcp; /* tcp.data points to the px_side */
  px_conn_t *conn;
  char *buf; /* read buffer for bytes travelling to the peer side */
  /* No two of these are ever in use at once, and a spliced side never
   * writes through libuv again: they share memory so idle connections stay
   * small, copied or spliced. */
  union {
    uv_write_t write_req;       /* writes of this side's bytes to the peer */
    uv_shutdown_t shutdown_req; /* the client's, after an error page */
    struct {
      uv_poll_t poll; /* watches the socket taken over from tcp */
      px_pipe_t pipe; /* this side's bytes waiting for the peer */
      int events;     /* what poll watches */
    };
  };
  uint64_t bytes; /* read from this side */
  bool open;      /* tcp (or, spliced, poll and its socket) not yet closed */
  bool spliced;   /* the socket belongs to poll; tcp is closed */
  bool eof;       /* this side sent FIN */
  bool writing;   /* our bytes are queued on the peer: reading paused */
  bool shut;      /* FIN passed on to the peer (or to be, at the check) */
  bool fin_due;   /* shut, but shutdown(2) of the peer waits for the check */
} px_side_t;

/* What a connection needs only until its relay has started, held apart
 * so an idle relay does not carry it. The route is copied out of the
 * registry when the name is looked up: registry entries may be retired
 * (reload, update) while we connect. */
typedef struct px_route {
  core_ip_t addrs[PX_MAX_TARGETS];
  size_t n_addrs;
  size_t next_addr;    /* next of addrs to try */
  px_lookup_t *lookup; /* resolving the device's hostname */
  reg_proxy_protocol_t proxy_protocol;
  uint8_t proxy_header[PX_PROXY_HEADER_MAX]; /* lives until it is written */
  unsigned proxy_header_len;
} px_route_t;

struct px_conn {
  px_state_t state;
  px_listener_t *listener;
  px_conn_t *next, *prev;
  px_conn_t *fin_next; /* in the server's fin_queue while fin_queued */
  bool fin_queued;
  px_side_t client, device;
  uv_timer_t timer;
  char *peek; /* request head bytes read so far */
  size_t peek_len, peek_cap;
  px_route_t *route;         /* from routing until the head is written */
  char *name;                /* the name routed by, for the logs; NULL before */
  core_ip_t visitor, target; /* target.family 0: none tried yet */
  uint16_t visitor_port, port;
  bool routed;
  bool splice; /* relaying: may still move to splice(2) */
  bool bulk;   /* a read filled a relay buffer */
  bool admitted;
  int open_handles;
  uint64_t started_ms, active_ms;
  const char *result;       /* for the access log */
  px_admission_t admission; /* what the limits counted for us */
};

static const reg_config_t *conn_config(const px_conn_t *conn) {
  return conn->listener->server->config;
}

static px_side_t *peer_of(px_side_t *side) {
  px_conn_t *conn = side->conn;
  return side == &conn->client ? &conn->device : &conn->client;
}

#define PX_ADDRSTRLEN (INET6_ADDRSTRLEN + 8)

/* ip:port as text, or "-" for no address. */
static const char *format_address(const core_ip_t *ip, uint16_t port,
                                  char buf[PX_ADDRSTRLEN]) {
  if (ip->family == 0)
    return strcpy(buf, "-");
  struct sockaddr_storage sa;
  core_ip_to_sockaddr(ip, port, &sa);
  return core_sockaddr_format((const struct sockaddr *)&sa, buf, PX_ADDRSTRLEN);
}

static const char *format_visitor(const px_conn_t *conn,
                                  char buf[PX_ADDRSTRLEN]) {
  return format_address(&conn->visitor, conn->visitor_port, buf);
}

static const char *conn_name(const px_conn_t *conn) {
  return conn->name && conn->name[0] ? conn->name : "-";
}

static void log_access(px_conn_t *conn) {
  if (!core_access_log_enabled())
    return;
  char visitor[PX_ADDRSTRLEN], target[PX_ADDRSTRLEN];
  core_access_log("visitor=%s listener=%s name=%s target=%s result=%s "
                  "bytes_in=%llu bytes_out=%llu ms=%llu",
                  format_visitor(conn, visitor), conn->listener->config->name,
                  conn_name(conn),
                  format_address(&conn->target, conn->port, target),
                  conn->result ? conn->result : "closed",
                  (unsigned long long)conn->client.bytes,
                  (unsigned long long)conn->device.bytes,
                  (unsigned long long)(core_now_ms() - conn->started_ms));
}

/* A relay buffer from the worker's spares, or a new one (NULL when memory
 * is short: that closes only this connection). */
static char *take_buf(px_server_t *server) {
  if (server->n_spare_bufs > 0)
    return server->spare_bufs[--server->n_spare_bufs];
  return malloc(PX_RELAY_BUF_SIZE);
}

/* The first peek buffer comes from the worker's spares too: most heads
 * fit in PX_PEEK_FIRST_SIZE, and reusing them keeps a burst of short-lived
 * connections from fragmenting the heap. */
static char *take_peek(px_server_t *server) {
  if (server->n_spare_peeks > 0)
    return server->spare_peeks[--server->n_spare_peeks];
  return malloc(PX_PEEK_FIRST_SIZE);
}

static void release_peek(px_conn_t *conn) {
  px_server_t *server = conn->listener->server;
  if (conn->peek == NULL)
    return;
  if (conn->peek_cap == PX_PEEK_FIRST_SIZE &&
      server->n_spare_peeks < PX_SPARE_PEEKS)
    server->spare_peeks[server->n_spare_peeks++] = conn->peek;
  else
    free(conn->peek);
  conn->peek = NULL;
  conn->peek_cap = 0;
}

/* The head is written: what only getting there needed goes. */
static void release_head(px_conn_t *conn) {
  release_peek(conn);
  free(conn->route);
  conn->route = NULL;
}

/* Gives side's buffer back once no bytes wait in it. */
static void release_buf(px_side_t *side) {
  px_server_t *server = side->conn->listener->server;
  if (side->buf == NULL)
    return;
  if (server->n_spare_bufs < PX_SPARE_BUFS)
    server->spare_bufs[server->n_spare_bufs++] = side->buf;
  else
    free(side->buf);
  side->buf = NULL;
}

/* Drops one handle's hold on conn; frees conn with its last handle.
 * Returns true when conn is gone. */
static bool release_handle(px_conn_t *conn) {
  if (--conn->open_handles > 0)
    return false;
  px_server_t *server = conn->listener->server;
  log_access(conn);
  if (conn->prev)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next)
    conn->next->prev = conn->prev;
  server->n_conns--;
  if (conn->admitted)
    px_limits_release(server->limits, &conn->admission);
  release_buf(&conn->client);
  release_buf(&conn->device);
  if (conn->client.spliced)
    px_pipe_release(server, &conn->client.pipe);
  if (conn->device.spliced)
    px_pipe_release(server, &conn->device.pipe);
  release_head(conn);
  free(conn->name);
  px_listener_t *listener = conn->listener;
  free(conn);
  px_server_conn_gone(server, listener);
  return true;
}

static px_conn_t *conn_of_handle(uv_handle_t *handle) {
  if (handle->type == UV_TIMER)
    return handle->data;
  return ((px_side_t *)handle->data)->conn;
}

static void on_handle_closed(uv_handle_t *handle) {
  release_handle(conn_of_handle(handle));
}

static int side_fd(px_side_t *side) {
  uv_os_fd_t fd = -1;
  uv_fileno(side->spliced ? (uv_handle_t *)&side->poll
                          : (uv_handle_t *)&side->tcp,
            &fd);
  return fd;
}

static void close_side(px_side_t *side) {
  if (!side->open)
    return;
  side->open = false;
  if (!side->spliced) {
    uv_close((uv_handle_t *)&side->tcp, on_handle_closed);
    return;
  }
  /* The poll handle stops watching at once, so its socket may go now. */
  int fd = side_fd(side);
  uv_close((uv_handle_t *)&side->poll, on_handle_closed);
  close(fd);
}

/* Closes side with a reset rather than a FIN: the visitor or device must
 * not take a broken relay for a clean end of data. */
static void reset_side(px_side_t *side) {
  if (!side->open)
    return;
  if (!side->spliced) {
    if (uv_tcp_close_reset(&side->tcp, on_handle_closed) == 0)
      side->open = false;
    return;
  }
  struct linger linger = {.l_onoff = 1, .l_linger = 0};
  setsockopt(side_fd(side), SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
  close_side(side);
}

static void unqueue_fins(px_conn_t *conn) {
  if (!conn->fin_queued)
    return;
  px_server_t *server = conn->listener->server;
  px_conn_t **link = &server->fin_queue;
  while (*link != conn)
    link = &(*link)->fin_next;
  *link = conn->fin_next;
  conn->fin_queued = false;
  conn->client.fin_due = conn->device.fin_due = false;
}

static void conn_close(px_conn_t *conn, const char *result) {
  if (conn->state == PX_STATE_CLOSING)
    return;
  /* Closing sends whatever FIN was still due. */
  unqueue_fins(conn);
  if (conn->result == NULL)
    conn->result = result;
  conn->state = PX_STATE_CLOSING;
  if (conn->route != NULL) {
    px_resolve_cancel(conn->route->lookup);
    conn->route->lookup = NULL;
  }
  close_side(&conn->client);
  close_side(&conn->device);
  uv_close((uv_handle_t *)&conn->timer, on_handle_closed);
}

void px_conn_abort_all(px_server_t *server) {
  /* conn_close only starts closing; nothing is unlinked until the loop
   * runs the close callbacks, so walking the list here is safe. */
  for (px_conn_t *conn = server->conns; conn != NULL; conn = conn->next)
    conn_close(conn, "drain timeout");
}

/* ---- error pages -------------------------------------------------------- */

static void on_linger_read(uv_stream_t *stream, ssize_t nread,
                           const uv_buf_t *buf) {
  px_side_t *side = stream->data;
  (void)buf;
  if (nread < 0)
    conn_close(side->conn, NULL);
}

static void alloc_discard(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  static _Thread_local char sink[4096];
  (void)handle;
  (void)size;
  *buf = uv_buf_init(sink, sizeof sink);
}

static void on_linger_timeout(uv_timer_t *timer) {
  conn_close(timer->data, NULL);
}

static void on_page_shutdown(uv_shutdown_t *req, int status) {
  px_side_t *side = req->data;
  px_conn_t *conn = side->conn;
  if (status < 0 || conn->state == PX_STATE_CLOSING) {
    conn_close(conn, NULL);
    return;
  }
  /* Read and drop what the visitor still sends until it closes, so its
   * kernel does not answer our page with a reset before it is read. */
  uv_timer_start(&conn->timer, on_linger_timeout, LINGER_MS, 0);
  if (uv_read_start((uv_stream_t *)&side->tcp, alloc_discard, on_linger_read) !=
      0)
    conn_close(conn, NULL);
}

static void on_page_written(uv_write_t *req, int status) {
  px_side_t *side = req->data;
  px_conn_t *conn = side->conn;
  if (status < 0 || conn->state == PX_STATE_CLOSING) {
    conn_close(conn, NULL);
    return;
  }
  side->shutdown_req.data = side;
  if (uv_shutdown(&side->shutdown_req, (uv_stream_t *)&side->tcp,
                  on_page_shutdown) != 0)
    conn_close(conn, NULL);
}

static void answer_page(px_conn_t *conn, px_page_t page, const char *result) {
  assert(conn->state == PX_STATE_PEEKING || conn->state == PX_STATE_CONNECTING);
  conn->state = PX_STATE_ANSWERING;
  conn->result = result;
  if (conn->admitted)
    px_limits_peek_done(conn->listener->server->limits, &conn->admission);
  uv_timer_stop(&conn->timer);
  uv_read_stop((uv_stream_t *)&conn->client.tcp);
  close_side(&conn->device);
  core_str_t text = px_refusal(conn->listener->config->protocol, page);
  if (text.len == 0) {
    conn_close(conn, NULL);
    return;
  }
  uv_buf_t buf = uv_buf_init((char *)text.ptr, (unsigned)text.len);
  conn->client.write_req.data = &conn->client;
  if (uv_write(&conn->client.write_req, (uv_stream_t *)&conn->client.tcp, &buf,
               1, on_page_written) != 0)
    conn_close(conn, NULL);
}

/* ---- relaying ----------------------------------------------------------- */

static void start_reading(px_side_t *side);
static bool maybe_splice(px_conn_t *conn);

/* Both directions finished cleanly: nothing left to carry. */
static void maybe_finish(px_conn_t *conn) {
  if (conn->client.shut && conn->device.shut && !conn->client.writing &&
      !conn->device.writing)
    conn_close(conn, "routed");
}

/* Passes this side's FIN on to the peer once its bytes are all written.
 * Only this side writes to the peer and it reads again only once its write
 * is done, so nothing waits in the peer's write queue and shutdown(2) can
 * go without uv_shutdown, which would wait a loop pass and re-arm the
 * peer's epoll watch for it. It waits for the end of this loop iteration
 * though: the other side's FIN has often arrived in the same batch of
 * events (a visitor closes as soon as it has the answer), and when both
 * have ended, closing both sockets sends both FINs and no shutdown(2) is
 * needed at all. */
static void pass_eof(px_side_t *side) {
  px_conn_t *conn = side->conn;
  side->shut = true;
  if (!peer_of(side)->shut) {
    side->fin_due = true;
    if (!conn->fin_queued) {
      px_server_t *server = conn->listener->server;
      if (server->fin_queue == NULL)
        uv_check_start(&server->fin_check, px_conn_pass_fins);
      conn->fin_next = server->fin_queue;
      server->fin_queue = conn;
      conn->fin_queued = true;
    }
    return;
  }
  /* The peer has ended and been passed on already (or is due to be):
   * maybe_finish closes both at once, and the close sends the FINs. Both
   * streams ended, so nothing unread in a socket turns a close into a
   * reset. */
  maybe_finish(conn);
}

/* Errors are ignored as uv_shutdown's would be: a peer that reset says so
 * when it is read. */
static void shut_peer_now(px_side_t *side) {
  px_side_t *peer = peer_of(side);
  assert(peer->tcp.write_queue_size == 0);
  side->fin_due = false;
  shutdown(side_fd(peer), SHUT_WR);
}

void px_conn_pass_fins(uv_check_t *check) {
  px_server_t *server = check->data;
  px_conn_t *conn = server->fin_queue;
  server->fin_queue = NULL;
  uv_check_stop(check);
  for (px_conn_t *next; conn != NULL; conn = next) {
    next = conn->fin_next;
    conn->fin_queued = false;
    if (conn->client.fin_due)
      shut_peer_now(&conn->client);
    if (conn->device.fin_due)
      shut_peer_now(&conn->device);
  }
}

static void on_relay_written(uv_write_t *req, int status) {
  px_side_t *side = req->data;
  px_conn_t *conn = side->conn;
  side->writing = false;
  release_buf(side);
  if (conn->state == PX_STATE_CLOSING)
    return;
  if (status < 0) {
    conn_close(conn, "routed");
    return;
  }
  /* The peeked bytes went out in the client's first write: only that
   * write's completion may give their buffer back. */
  if (side == &conn->client)
    release_head(conn);
  if (maybe_splice(conn))
    return;
  /* The peer drained our bytes: the one backpressure rule lifts. */
  if (side->eof)
    pass_eof(side);
  else
    start_reading(side);
}

static void alloc_relay(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  px_side_t *side = handle->data;
  (void)size;
  if (side->buf == NULL)
    side->buf = take_buf(side->conn->listener->server);
  *buf = uv_buf_init(side->buf, side->buf ? PX_RELAY_BUF_SIZE : 0);
}

static void on_relay_read(uv_stream_t *stream, ssize_t nread,
                          const uv_buf_t *buf) {
  px_side_t *side = stream->data;
  px_conn_t *conn = side->conn;
  px_side_t *peer = peer_of(side);
  if (nread == UV_ENOBUFS) {
    conn_close(conn, "out of memory");
    return;
  }
  /* Unless a write below keeps them, the bytes are gone from the buffer
   * once this returns. */
  if (nread <= 0)
    release_buf(side);
  if (nread == 0)
    return;
  if (nread == UV_EOF) {
    side->eof = true;
    uv_read_stop(stream);
    pass_eof(side);
    return;
  }
  if (nread == UV_ECONNRESET) {
    reset_side(peer);
    conn_close(conn, "reset");
    return;
  }
  if (nread < 0) {
    conn_close(conn, "routed");
    return;
  }
  side->bytes += (uint64_t)nread;
  conn->active_ms = core_now_ms();

  uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
  int n = uv_try_write((uv_stream_t *)&peer->tcp, &out, 1);
  /* A read that fills the buffer is a bulk transfer: from here on it is
   * worth the cost of moving the connection to splice(2). */
  if (nread == PX_RELAY_BUF_SIZE)
    conn->bulk = true;
  if (n == nread) {
    release_buf(side);
    maybe_splice(conn);
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    conn_close(conn, "routed");
    return;
  }
  if (n > 0)
    out = uv_buf_init(buf->base + n, (unsigned)(nread - n));
  /* Backpressure: stop reading this side until the peer takes the rest. */
  uv_read_stop(stream);
  side->writing = true;
  side->write_req.data = side;
  if (uv_write(&side->write_req, (uv_stream_t *)&peer->tcp, &out, 1,
               on_relay_written) != 0) {
    side->writing = false;
    conn_close(conn, "routed");
  }
}

static void alloc_client(uv_handle_t *handle, size_t size, uv_buf_t *buf);
static void on_client_read(uv_stream_t *stream, ssize_t nread,
                           const uv_buf_t *buf);

/* Reading again after backpressure; a side still being read is left so
 * (UV_EALREADY). */
static void start_reading(px_side_t *side) {
  bool client = side == &side->conn->client;
  int rc = uv_read_start((uv_stream_t *)&side->tcp,
                         client ? alloc_client : alloc_relay,
                         client ? on_client_read : on_relay_read);
  if (rc != 0 && rc != UV_EALREADY)
    conn_close(side->conn, "routed");
}

/* ---- splicing ----------------------------------------------------------- */

/* Reads per wakeup before other connections get their turn (libuv reads a
 * stream up to 32 times). */
#define SPLICE_ROUNDS 16

/* Passes side's FIN on once its bytes have all reached the peer. Returns
 * false when that closed conn. */
static bool splice_pass_eof(px_side_t *side) {
  if (!side->eof || side->shut || side->pipe.len > 0)
    return true;
  side->shut = true;
  if (shutdown(side_fd(peer_of(side)), SHUT_WR) != 0) {
    conn_close(side->conn, "routed");
    return false;
  }
  maybe_finish(side->conn);
  return side->conn->state != PX_STATE_CLOSING;
}

/* Writes side's waiting bytes to its peer, as far as the peer takes them.
 * Returns false when conn closed. */
static bool splice_flush(px_side_t *side) {
  px_conn_t *conn = side->conn;
  if (side->pipe.len > 0) {
    ssize_t n = px_splice_out(conn->listener->server, &side->pipe,
                              side_fd(peer_of(side)));
    if (n < 0 && n != -EAGAIN) {
      conn_close(conn, "routed");
      return false;
    }
  }
  return splice_pass_eof(side);
}

/* Moves what side has to say to its peer until it has no more for now or
 * the peer is full. Returns false when conn closed. */
static bool splice_from(px_side_t *side) {
  px_conn_t *conn = side->conn;
  for (int round = 0; round < SPLICE_ROUNDS; round++) {
    ssize_t n =
        px_splice_in(conn->listener->server, &side->pipe, side_fd(side));
    if (n == -EAGAIN)
      break;
    if (n == 0) {
      side->eof = true;
      break;
    }
    if (n == -ECONNRESET) {
      reset_side(peer_of(side));
      conn_close(conn, "reset");
      return false;
    }
    if (n < 0) {
      conn_close(conn, n == -EMFILE || n == -ENFILE || n == -ENOMEM
                           ? "out of memory"
                           : "routed");
      return false;
    }
    side->bytes += (uint64_t)n;
    conn->active_ms = core_now_ms();
    if (!splice_flush(side))
      return false;
    /* Backpressure: bytes still in the pipe wait for the peer; a short
     * read means the socket is drained. */
    if (side->pipe.len > 0 || n < PX_SPLICE_CHUNK)
      break;
  }
  return splice_pass_eof(side);
}

static void on_splice_event(uv_poll_t *poll, int status, int events);

/* The one backpressure rule, for pipes: read a side only while its pipe is
 * empty; watch a side for room while the peer's pipe holds bytes for it. */
static void splice_watch(px_side_t *side) {
  int events = 0;
  if (!side->eof && side->pipe.len == 0)
    events |= UV_READABLE;
  if (peer_of(side)->pipe.len > 0)
    events |= UV_WRITABLE;
  if (events == side->events)
    return;
  side->events = events;
  uv_poll_start(&side->poll, events, on_splice_event);
}

static void on_splice_event(uv_poll_t *poll, int status, int events) {
  px_side_t *side = poll->data;
  px_conn_t *conn = side->conn;
  if (status < 0) {
    /* libuv stopped the handle on a socket error: find out which. */
    side->events = 0;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(side_fd(side), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == ECONNRESET) {
      reset_side(peer_of(side));
      conn_close(conn, "reset");
      return;
    }
    if (err != 0) {
      conn_close(conn, "routed");
      return;
    }
    events = UV_READABLE | UV_WRITABLE;
  }
  if ((events & UV_WRITABLE) && !splice_flush(peer_of(side)))
    return;
  if ((events & UV_READABLE) && side->pipe.len == 0 && !side->eof &&
      !splice_from(side))
    return;
  splice_watch(&conn->client);
  splice_watch(&conn->device);
}

/* Takes side's socket over from libuv's stream into a poll handle of its
 * own, on a duplicate descriptor: libuv must not watch one socket through
 * both. Returns 0 or a negative errno (side untouched). */
static int take_over(px_side_t *side) {
  int fd = fcntl(side_fd(side), F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rc = uv_poll_init(side->conn->listener->server->loop, &side->poll, fd);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  side->poll.data = side;
  side->pipe = (px_pipe_t){.rd = -1, .wr = -1};
  side->events = 0;
  side->conn->open_handles++;
  uv_close((uv_handle_t *)&side->tcp, on_handle_closed);
  side->spliced = true;
  return 0;
}

/* Moves the rest of the relay to splice(2) once the connection carries a
 * bulk transfer and no bytes wait in libuv's write queues, while neither
 * side has ended (their shutdown requests share memory with the poll
 * handles). Short exchanges keep copying: taking two sockets over costs
 * about a dozen system calls. Returns true when conn spliced (or closed
 * trying); false leaves it copying, for good if the takeover failed. */
static bool maybe_splice(px_conn_t *conn) {
  if (!conn->splice || !conn->bulk || conn->state != PX_STATE_RELAYING ||
      conn->client.writing || conn->device.writing || conn->client.eof ||
      conn->device.eof)
    return false;
  conn->splice = false;
  int rc = take_over(&conn->client);
  if (rc == 0) {
    rc = take_over(&conn->device);
    if (rc != 0) {
      /* The client is spliced already; there is no going back. */
      conn_close(conn, "out of memory");
      return true;
    }
  }
  if (rc != 0) {
    char visitor[PX_ADDRSTRLEN];
    core_log(CORE_LOG_DEBUG, "cannot splice for %s, copying: %s",
             format_visitor(conn, visitor), uv_strerror(rc));
    return false;
  }
  splice_watch(&conn->client);
  splice_watch(&conn->device);
  return true;
}

static void on_idle_timer(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  uint64_t idle = conn_config(conn)->proxy.idle_timeout_ms;
  uint64_t quiet = core_now_ms() - conn->active_ms;
  if (quiet >= idle) {
    conn_close(conn, "idle timeout");
    return;
  }
  uv_timer_start(timer, on_idle_timer, idle - quiet, 0);
}

/* The visitor's address and the listener address it reached. */
static int build_proxy_header(px_conn_t *conn) {
  struct sockaddr_storage src, dst;
  int dst_len = sizeof dst;
  core_ip_to_sockaddr(&conn->visitor, conn->visitor_port, &src);
  int rc =
      uv_tcp_getsockname(&conn->client.tcp, (struct sockaddr *)&dst, &dst_len);
  if (rc != 0)
    return rc;
  return px_proxy_header(conn->route->proxy_protocol, (struct sockaddr *)&src,
                         (struct sockaddr *)&dst, conn->route->proxy_header,
                         sizeof conn->route->proxy_header);
}

/* The PROXY header and the peeked bytes: what the device gets first. */
static unsigned head_bufs(px_conn_t *conn, uv_buf_t bufs[2]) {
  unsigned n = 0;
  if (conn->route->proxy_header_len > 0)
    bufs[n++] = uv_buf_init((char *)conn->route->proxy_header,
                            conn->route->proxy_header_len);
  bufs[n++] = uv_buf_init(conn->peek, (unsigned)conn->peek_len);
  return n;
}

/* The device has taken the first `written` bytes of the head (SIZE_MAX:
 * all of it), so the connection is up: relaying starts, the rest of the
 * head waiting like any client bytes the device has not taken. */
static void start_relay(px_conn_t *conn, size_t written) {
  assert(conn->state == PX_STATE_CONNECTING);
  conn->state = PX_STATE_RELAYING;
  conn->splice = conn->listener->server->splice;
  conn->active_ms = core_now_ms();
  uv_timer_start(&conn->timer, on_idle_timer,
                 conn_config(conn)->proxy.idle_timeout_ms, 0);
  px_side_t *client = &conn->client;
  if (uv_read_start((uv_stream_t *)&conn->device.tcp, alloc_relay,
                    on_relay_read) != 0) {
    conn_close(conn, "routed");
    return;
  }
  uv_buf_t bufs[2];
  unsigned nbufs = head_bufs(conn, bufs);
  unsigned first = 0;
  for (; first < nbufs && written >= bufs[first].len; first++)
    written -= bufs[first].len;
  if (first == nbufs) {
    release_head(conn);
    if (client->eof)
      pass_eof(client);
    else
      start_reading(client);
    return;
  }
  bufs[first] = uv_buf_init(bufs[first].base + written,
                            bufs[first].len - (unsigned)written);
  /* Backpressure, as for any client bytes the device has not taken. */
  uv_read_stop((uv_stream_t *)&client->tcp);
  client->writing = true;
  client->write_req.data = client;
  if (uv_write(&client->write_req, (uv_stream_t *)&conn->device.tcp,
               bufs + first, nbufs - first, on_relay_written) != 0) {
    client->writing = false;
    conn_close(conn, "routed");
  }
}

/* ---- connecting --------------------------------------------------------- */

static void try_next_address(px_conn_t *conn);

/* A failed attempt's handle is gone; its memory may now serve the next. */
static void on_attempt_closed(uv_handle_t *handle) {
  px_conn_t *conn = conn_of_handle(handle);
  if (!release_handle(conn) && conn->state == PX_STATE_CONNECTING)
    try_next_address(conn);
}

static void abandon_attempt(px_conn_t *conn) {
  if (!conn->device.open)
    return;
  conn->device.open = false;
  uv_timer_stop(&conn->timer);
  uv_close((uv_handle_t *)&conn->device.tcp, on_attempt_closed);
}

static void on_connect_timeout(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  char visitor[PX_ADDRSTRLEN];
  core_log(CORE_LOG_DEBUG, "connect to %s for %s timed out", conn_name(conn),
           format_visitor(conn, visitor));
  abandon_attempt(conn);
}

/* The head went out once the socket became writable: connected. */
static void on_head_written(uv_write_t *req, int status) {
  px_side_t *client = req->data;
  px_conn_t *conn = client->conn;
  client->writing = false;
  /* ECANCELED: the attempt is already closing (timeout or shutdown). */
  if (status == UV_ECANCELED || conn->state != PX_STATE_CONNECTING)
    return;
  if (status < 0) {
    abandon_attempt(conn);
    return;
  }
  start_relay(conn, SIZE_MAX);
}

/* Writes the head at once, without waiting to learn that the connection
 * is up: to a nearby device (loopback, a LAN) the handshake is usually
 * done by the time connect(2) returns, and then the device's socket gets
 * one epoll registration, for reading, instead of a registration for the
 * connect, a getsockopt(2) for its result and a change back to reading.
 * A refused connection fails this write or, still connecting, the write
 * libuv makes once the socket is writable; either tries the next address.
 * The visitor is not read meanwhile: its bytes would join the head. */
static void send_head(px_conn_t *conn) {
  px_side_t *client = &conn->client;
  uv_buf_t bufs[2];
  unsigned nbufs = head_bufs(conn, bufs);
  client->bytes = conn->peek_len;
  int n = uv_try_write((uv_stream_t *)&conn->device.tcp, bufs, nbufs);
  if (n >= 0) {
    start_relay(conn, (size_t)n);
    return;
  }
  if (n != UV_EAGAIN) {
    abandon_attempt(conn);
    return;
  }
  uv_read_stop((uv_stream_t *)&client->tcp);
  client->writing = true;
  client->write_req.data = client;
  if (uv_write(&client->write_req, (uv_stream_t *)&conn->device.tcp, bufs,
               nbufs, on_head_written) != 0) {
    client->writing = false;
    abandon_attempt(conn);
  }
}

/* A non-blocking socket connecting to target, in the device's handle.
 * Returns 0; a negative errno with nothing left open; or 1 when the
 * handle is closing (its close callback tries the next address). */
static int open_device(px_conn_t *conn, const struct sockaddr_storage *target) {
  int fd =
      socket(target->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  socklen_t len = target->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
  if (connect(fd, (const struct sockaddr *)target, len) != 0 &&
      errno != EINPROGRESS) {
    int err = -errno;
    close(fd);
    return err;
  }
  px_server_t *server = conn->listener->server;
  int rc = uv_tcp_init(server->loop, &conn->device.tcp);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  conn->device.tcp.data = &conn->device;
  conn->device.open = true;
  conn->open_handles++;
  if (uv_tcp_open(&conn->device.tcp, fd) != 0) {
    close(fd);
    abandon_attempt(conn);
    return 1;
  }
  return 0;
}

static void try_next_address(px_conn_t *conn) {
  assert(conn->state == PX_STATE_CONNECTING && !conn->device.open);
  const reg_config_t *config = conn_config(conn);
  px_route_t *route = conn->route;
  while (route->next_addr < route->n_addrs) {
    const core_ip_t *ip = &route->addrs[route->next_addr++];
    const char *why;
    char text[INET6_ADDRSTRLEN];
    if (!reg_target_allowed(config, ip, conn->port, &why)) {
      core_log(CORE_LOG_WARN, "device %s: target %s refused: %s",
               conn_name(conn), core_ip_format(ip, text, sizeof text), why);
      continue;
    }
    conn->target = *ip;
    struct sockaddr_storage target;
    core_ip_to_sockaddr(ip, conn->port, &target);
    int rc = open_device(conn, &target);
    if (rc > 0)
      return;
    if (rc < 0) {
      char where[PX_ADDRSTRLEN];
      core_log(CORE_LOG_DEBUG, "device %s: cannot connect to %s: %s",
               conn_name(conn), format_address(ip, conn->port, where),
               uv_strerror(rc));
      continue;
    }
    uv_timer_start(&conn->timer, on_connect_timeout,
                   config->proxy.connect_timeout_ms, 0);
    send_head(conn);
    return;
  }
  answer_page(conn, PX_PAGE_OFFLINE, "offline");
}

static void resolved(px_conn_t *conn, int status, const char *host) {
  uv_timer_stop(&conn->timer);
  if (status < 0) {
    core_log(CORE_LOG_WARN, "device %s: cannot resolve %s: %s", conn_name(conn),
             host, uv_strerror(status));
    answer_page(conn, PX_PAGE_OFFLINE, "offline");
    return;
  }
  try_next_address(conn);
}

static void on_resolved(void *arg, int status, const char *host,
                        const core_ip_t *addrs, size_t n_addrs) {
  px_conn_t *conn = arg;
  px_route_t *route = conn->route;
  route->lookup = NULL;
  memcpy(route->addrs, addrs, n_addrs * sizeof *addrs);
  route->n_addrs = n_addrs;
  resolved(conn, status, host);
}

static void on_resolve_timeout(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  px_resolve_cancel(conn->route->lookup);
  conn->route->lookup = NULL;
  resolved(conn, UV_ETIMEDOUT, "its hostname");
}

static void route_request(px_conn_t *conn, const char *name, size_t len) {
  px_server_t *server = conn->listener->server;
  if (len > 0) {
    conn->name = malloc(len + 1);
    if (conn->name == NULL) {
      conn_close(conn, "out of memory");
      return;
    }
    memcpy(conn->name, name, len + 1);
  }
  px_limits_peek_done(server->limits, &conn->admission);
  const reg_listener_t *listener = conn->listener->config;
  const reg_device_t *device = len ? reg_lookup(server->reg, name, len) : NULL;
  uint16_t port = device ? reg_device_port(device, listener->name) : 0;
  if (port == 0 && listener->fallback != NULL) {
    /* Visitors naming no device here go to the listener's fallback. */
    device =
        reg_lookup(server->reg, listener->fallback, strlen(listener->fallback));
    port = device ? reg_device_port(device, listener->name) : 0;
  }
  if (port == 0) {
    if (len == 0 && listener->protocol == REG_PROTOCOL_HTTP)
      answer_page(conn, PX_PAGE_BAD_REQUEST, "bad request");
    else
      answer_page(conn, PX_PAGE_NOT_FOUND, "unknown");
    return;
  }
  px_route_t *route = malloc(sizeof *route);
  if (route == NULL) {
    conn_close(conn, "out of memory");
    return;
  }
  *route = (px_route_t){.proxy_protocol = device->proxy_protocol};
  conn->route = route;
  conn->routed = true;
  conn->port = port;
  conn->state = PX_STATE_CONNECTING;
  if (route->proxy_protocol != REG_PROXY_PROTOCOL_OFF) {
    int n = build_proxy_header(conn);
    if (n < 0) {
      core_log(CORE_LOG_WARN, "device %s: cannot build PROXY header: %s",
               conn_name(conn), uv_strerror(n));
      conn_close(conn, "routed");
      return;
    }
    route->proxy_header_len = (unsigned)n;
  }
  if (device->target_host == NULL) {
    route->n_addrs =
        device->n_addrs < PX_MAX_TARGETS ? device->n_addrs : PX_MAX_TARGETS;
    memcpy(route->addrs, device->addrs, route->n_addrs * sizeof *route->addrs);
    try_next_address(conn);
    return;
  }
  /* Resolution and connecting share the connect timeout. */
  uv_timer_start(&conn->timer, on_resolve_timeout,
                 server->config->proxy.connect_timeout_ms, 0);
  int rc = px_resolve(server->resolver, device->target_host, route->addrs,
                      &route->n_addrs, on_resolved, conn, &route->lookup);
  if (rc != PX_RESOLVE_PENDING)
    resolved(conn, rc, device->target_host);
}

/* ---- peeking ------------------------------------------------------------ */

static void alloc_peek(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  px_side_t *side = handle->data;
  px_conn_t *conn = side->conn;
  uint32_t max = conn_config(conn)->proxy.max_hello;
  (void)size;
  /* Grow by doubling so an idle visitor costs a small buffer only. */
  if (conn->peek == NULL) {
    conn->peek = take_peek(conn->listener->server);
    conn->peek_cap = conn->peek ? PX_PEEK_FIRST_SIZE : 0;
    if (conn->peek_cap > max)
      conn->peek_cap = max;
  } else if (conn->peek_len == conn->peek_cap && conn->peek_cap < max) {
    size_t cap = conn->peek_cap * 2;
    if (cap > max)
      cap = max;
    char *grown = realloc(conn->peek, cap);
    if (grown != NULL) {
      conn->peek = grown;
      conn->peek_cap = cap;
    }
  }
  *buf = uv_buf_init(conn->peek + conn->peek_len,
                     (unsigned)(conn->peek_cap - conn->peek_len));
}

/* While the device is being reached, what the visitor sends next joins
 * the head, up to max_hello; then the visitor waits. */
static void on_early_read(px_conn_t *conn, ssize_t nread) {
  uv_stream_t *stream = (uv_stream_t *)&conn->client.tcp;
  if (nread == UV_ENOBUFS &&
      conn->peek_cap >= conn_config(conn)->proxy.max_hello) {
    uv_read_stop(stream);
    return;
  }
  if (nread == UV_EOF) {
    /* Passed on once the head is written. */
    conn->client.eof = true;
    uv_read_stop(stream);
    return;
  }
  if (nread < 0) {
    conn_close(conn, nread == UV_ENOBUFS ? "out of memory" : "client closed");
    return;
  }
  conn->peek_len += (size_t)nread;
}

static void on_peek_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf) {
  px_side_t *side = stream->data;
  px_conn_t *conn = side->conn;
  (void)buf;
  if (nread == 0)
    return;
  if (conn->state == PX_STATE_CONNECTING) {
    on_early_read(conn, nread);
    return;
  }
  assert(conn->state == PX_STATE_PEEKING);
  if (nread == UV_ENOBUFS) {
    conn_close(conn, "out of memory");
    return;
  }
  if (nread < 0) {
    conn_close(conn, "client closed");
    return;
  }
  conn->peek_len += (size_t)nread;

  px_peek_result_t r;
  const char *name, *why;
  size_t name_len;
  px_http_host_t host;
  px_sni_t sni;
  if (conn->listener->config->protocol == REG_PROTOCOL_TLS) {
    r = px_sni_parse((const uint8_t *)conn->peek, conn->peek_len, &sni);
    name = sni.name;
    name_len = sni.name_len;
    why = sni.why;
  } else {
    r = px_http_host_parse(conn->peek, conn->peek_len, &host);
    name = host.name;
    name_len = host.name_len;
    why = host.why;
  }
  switch (r) {
  case PX_PEEK_COMPLETE:
    /* name_len 0 (no SNI, HTTP/1.0 without Host) routes to the fallback
     * or is refused there. The visitor stays read: see on_early_read. */
    route_request(conn, name, name_len);
    return;
  case PX_PEEK_INVALID: {
    char visitor[PX_ADDRSTRLEN];
    core_log(CORE_LOG_DEBUG, "bad request from %s: %s",
             format_visitor(conn, visitor), why);
    answer_page(conn, PX_PAGE_BAD_REQUEST, "bad request");
    return;
  }
  case PX_PEEK_NEED_MORE:
    if (conn->peek_len >= conn_config(conn)->proxy.max_hello)
      answer_page(conn, PX_PAGE_TOO_LARGE, "bad request");
    return;
  }
}

/* The client is read through these from accept to close, so its epoll
 * watch is never dropped and re-added between peeking and relaying (each
 * such toggle costs two epoll_ctl calls). */
static void alloc_client(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  px_side_t *side = handle->data;
  if (side->conn->state == PX_STATE_RELAYING)
    alloc_relay(handle, size, buf);
  else
    alloc_peek(handle, size, buf);
}

static void on_client_read(uv_stream_t *stream, ssize_t nread,
                           const uv_buf_t *buf) {
  px_side_t *side = stream->data;
  if (side->conn->state == PX_STATE_RELAYING)
    on_relay_read(stream, nread, buf);
  else
    on_peek_read(stream, nread, buf);
}

static void on_peek_deadline(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  if (conn->peek_len == 0)
    conn_close(conn, "timeout");
  else
    answer_page(conn, PX_PAGE_TIMEOUT, "timeout");
}

int px_conn_accept(px_listener_t *listener) {
  px_server_t *server = listener->server;
  px_conn_t *conn = xcalloc(1, sizeof *conn);
  conn->listener = listener;
  conn->state = PX_STATE_PEEKING;
  conn->started_ms = core_now_ms();
  conn->client.conn = conn;
  conn->device.conn = conn;
  conn->client.tcp.data = &conn->client;
  conn->device.tcp.data = &conn->device;

  int rc = uv_tcp_init(server->loop, &conn->client.tcp);
  if (rc != 0) {
    free(conn);
    return rc;
  }
  conn->client.tcp.data = &conn->client;
  conn->client.open = true;
  conn->open_handles = 2;
  px_listener_hold(listener);
  uv_timer_init(server->loop, &conn->timer);
  conn->timer.data = conn;

  conn->next = server->conns;
  if (server->conns)
    server->conns->prev = conn;
  server->conns = conn;
  server->n_conns++;

  rc = uv_accept((uv_stream_t *)&listener->tcp,
                 (uv_stream_t *)&conn->client.tcp);
  if (rc != 0) {
    conn_close(conn, "accept failed");
    return rc;
  }
  struct sockaddr_storage peer;
  int len = sizeof peer;
  rc = uv_tcp_getpeername(&conn->client.tcp, (struct sockaddr *)&peer, &len);
  if (rc == 0)
    rc = core_ip_from_sockaddr((struct sockaddr *)&peer, &conn->visitor);
  if (rc != 0) {
    conn_close(conn, "client closed");
    return 0;
  }
  conn->visitor_port = ntohs(peer.ss_family == AF_INET
                                 ? ((struct sockaddr_in *)&peer)->sin_port
                                 : ((struct sockaddr_in6 *)&peer)->sin6_port);
  px_limit_t limit =
      px_limits_admit(server->limits, &conn->visitor, &conn->admission);
  if (limit != PX_LIMIT_NONE) {
    static const char *const reasons[] = {
        [PX_LIMIT_CONNECTIONS] = "limit connections",
        [PX_LIMIT_PEEKING] = "limit peeking",
        [PX_LIMIT_PER_SOURCE] = "limit per_source",
    };
    answer_page(conn, PX_PAGE_BUSY, reasons[limit]);
    return 0;
  }
  /* TCP_NODELAY comes with the socket: the listening socket has it. */
  conn->admitted = true;
  /* An absolute deadline: a visitor dripping bytes cannot extend it. */
  uv_timer_start(&conn->timer, on_peek_deadline,
                 server->config->proxy.peek_timeout_ms, 0);
  rc = uv_read_start((uv_stream_t *)&conn->client.tcp, alloc_client,
                     on_client_read);
  if (rc != 0)
    conn_close(conn, "read failed");
  return 0;
}
