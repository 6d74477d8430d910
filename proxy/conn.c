/* SPDX-License-Identifier: MIT */
/* conn.c -- one visitor connection: peek, route, connect, relay, close */
#include "proxy/proxy_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* After an error page, how long to swallow the rest of the request so the
 * visitor reads the page instead of a reset. */
#define LINGER_MS 2000

/* Reads (or splices) of one side per wakeup before other connections get
 * their turn (libuv reads a stream up to 32 times), relaying or lingering
 * alike: a visitor sending without pause must not hold the worker. */
#define READS_PER_TURN 16

/* Events taken from the worker's epoll instance per wakeup of its loop. */
#define EPOLL_BATCH 256

typedef enum px_state {
  PX_STATE_PEEKING,
  PX_STATE_CONNECTING,
  PX_STATE_RELAYING,
  PX_STATE_ANSWERING, /* writing an error page, then lingering */
  PX_STATE_CLOSING,
} px_state_t;

/* One side's socket and the bytes read from it, named after the side it
 * reads. The socket is watched edge-triggered, so what epoll said is kept
 * here until a system call says otherwise: readable until a read comes
 * back short, writable until a write does. */
typedef struct px_side {
  px_conn_t *conn;
  int fd; /* -1: closed, or (device) none opened yet */
  /* Bytes read from this side and not yet written to the peer: buf[off,
   * len) when copying, pipe when spliced. */
  char *buf;
  size_t off, len;
  px_pipe_t pipe;
  uint64_t bytes; /* read from this side */
  bool readable;
  bool writable;
  bool rdhup; /* epoll saw the FIN: a short read has taken the last byte */
  /* epoll saw an error, such as a reset: the bytes still unread end in
   * it, not in a FIN, and it is told only by a read after them. */
  bool error;
  bool eof;     /* this side sent FIN */
  bool shut;    /* FIN passed on to the peer (or to be, at the check) */
  bool fin_due; /* shut, but shutdown(2) of the peer waits for the check */
  /* The last bytes from this side went to the peer with MSG_MORE: the
   * peer's socket holds them back until the FIN can go with them. */
  bool corked;
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
  /* In the server's fin_queue or fin_ripe while fin_link is set: the link
   * pointing at this connection. */
  px_conn_t *fin_next, **fin_link;
  px_side_t client, device;
  /* The connection's only libuv handle: its close callback frees the
   * connection, so a connection closed while the worker works through a
   * batch of epoll events stays valid for the rest of that batch. */
  uv_timer_t timer;
  char *peek; /* request head bytes read so far */
  size_t peek_len, peek_cap;
  size_t head_off;   /* bytes of the head (PROXY header, peek) written */
  px_route_t *route; /* from routing until the head is written */
  core_str_t page;   /* answering: the refusal, page_off bytes written */
  size_t page_off;
  char *name;                /* the name routed by, for the logs; NULL before */
  core_ip_t visitor, target; /* target.family 0: none tried yet */
  uint16_t visitor_port, port;
  bool routed;
  bool splice;  /* relaying: may still move to splice(2) */
  bool spliced; /* relaying through pipes */
  bool bulk;    /* a read filled a relay buffer */
  bool admitted;
  bool lingering; /* answering: the page is out, the rest is read and dropped */
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
  side->off = side->len = 0;
  if (side->buf == NULL)
    return;
  if (server->n_spare_bufs < PX_SPARE_BUFS)
    server->spare_bufs[server->n_spare_bufs++] = side->buf;
  else
    free(side->buf);
  side->buf = NULL;
}

/* The timer, the connection's last handle, is closed: conn goes. */
static void on_timer_closed(uv_handle_t *handle) {
  px_conn_t *conn = handle->data;
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
  px_pipe_release(server, &conn->client.pipe);
  px_pipe_release(server, &conn->device.pipe);
  release_head(conn);
  free(conn->name);
  px_listener_t *listener = conn->listener;
  free(conn);
  px_server_conn_gone(server, listener);
}

/* Watches side's socket for everything at once, edge-triggered (op
 * EPOLL_CTL_ADD): no socket of a connection has its watch changed, and
 * closing it removes the watch. EPOLL_CTL_MOD re-arms it: a side that
 * stopped reading with bytes left, to let others have their turn, is
 * reported again. */
static int watch_side(px_side_t *side, int op) {
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.ptr = side,
  };
  int epoll_fd = side->conn->listener->server->epoll_fd;
  return epoll_ctl(epoll_fd, op, side->fd, &ev) == 0 ? 0 : -errno;
}

/* Whether side has had its READS_PER_TURN reads for this wakeup. It then
 * stops with bytes left, re-armed so that epoll reports it again once the
 * others that are ready have had their turn. */
static bool turn_over(px_side_t *side, int reads) {
  if (reads < READS_PER_TURN)
    return false;
  watch_side(side, EPOLL_CTL_MOD);
  return true;
}

/* Closing the socket also drops it from the epoll instance. */
static void close_side(px_side_t *side) {
  if (side->fd < 0)
    return;
  close(side->fd);
  side->fd = -1;
  side->readable = side->writable = side->rdhup = side->error = false;
}

/* Closes side with a reset rather than a FIN: the visitor or device must
 * not take a broken relay for a clean end of data. */
static void reset_side(px_side_t *side) {
  if (side->fd < 0)
    return;
  struct linger linger = {.l_onoff = 1, .l_linger = 0};
  setsockopt(side->fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
  close_side(side);
}

static void unqueue_fins(px_conn_t *conn) {
  if (conn->fin_link == NULL)
    return;
  *conn->fin_link = conn->fin_next;
  if (conn->fin_next)
    conn->fin_next->fin_link = conn->fin_link;
  conn->fin_link = NULL;
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
  uv_close((uv_handle_t *)&conn->timer, on_timer_closed);
}

void px_conn_abort_all(px_server_t *server) {
  /* conn_close only starts closing; nothing is unlinked until the loop
   * runs the close callbacks, so walking the list here is safe. */
  for (px_conn_t *conn = server->conns; conn != NULL; conn = conn->next)
    conn_close(conn, "drain timeout");
}

/* read(2) as this file wants it: the bytes read, 0 at the end of the
 * stream, or a negative errno. A short read leaves nothing to read until
 * epoll reports more, and after a FIN it was the last one: the end of the
 * stream is then known without another read. After an error it is not:
 * epoll will not report it again, so the side stays readable until a read
 * returns it (taking it for a FIN would pass a reset stream off as
 * complete). */
static ssize_t read_side(px_side_t *side, char *buf, size_t len) {
  ssize_t n = read(side->fd, buf, len);
  if (n < 0) {
    if (errno == EAGAIN)
      side->readable = false;
    return -errno;
  }
  if ((size_t)n < len && !side->error) {
    side->readable = false;
    if (side->rdhup && n > 0)
      side->eof = true;
  }
  return n;
}

/* ---- error pages -------------------------------------------------------- */

static void on_linger_timeout(uv_timer_t *timer) {
  conn_close(timer->data, NULL);
}

/* Reads and drops what the visitor still sends until it closes, so its
 * kernel does not answer our page with a reset before it is read. A turn
 * at a time, like the relay: a visitor that never stops sending must
 * hold off neither other connections nor the linger's timeout. */
static void linger_read(px_conn_t *conn) {
  static _Thread_local char sink[4096];
  px_side_t *client = &conn->client;
  for (int reads = 0; client->readable && !client->eof; reads++) {
    if (turn_over(client, reads))
      return;
    ssize_t n = read_side(client, sink, sizeof sink);
    if (n == -EAGAIN)
      return;
    if (n <= 0) {
      conn_close(conn, NULL);
      return;
    }
  }
  if (client->eof)
    conn_close(conn, NULL);
}

/* Writes what is left of the page; once it is out, our side ends and the
 * lingering starts. */
static void answer_progress(px_conn_t *conn) {
  assert(conn->state == PX_STATE_ANSWERING);
  if (conn->lingering) {
    linger_read(conn);
    return;
  }
  px_side_t *client = &conn->client;
  while (conn->page_off < conn->page.len) {
    ssize_t n = write(client->fd, conn->page.ptr + conn->page_off,
                      conn->page.len - conn->page_off);
    if (n < 0 && errno == EAGAIN) {
      client->writable = false;
      return;
    }
    if (n < 0) {
      conn_close(conn, NULL);
      return;
    }
    conn->page_off += (size_t)n;
  }
  if (shutdown(client->fd, SHUT_WR) != 0) {
    conn_close(conn, NULL);
    return;
  }
  conn->lingering = true;
  uv_timer_start(&conn->timer, on_linger_timeout, LINGER_MS, 0);
  linger_read(conn);
}

static void answer_page(px_conn_t *conn, px_page_t page, const char *result) {
  assert(conn->state == PX_STATE_PEEKING || conn->state == PX_STATE_CONNECTING);
  conn->state = PX_STATE_ANSWERING;
  conn->result = result;
  if (conn->admitted)
    px_limits_peek_done(conn->listener->server->limits, &conn->admission);
  uv_timer_stop(&conn->timer);
  close_side(&conn->device);
  conn->page = px_refusal(conn->listener->config->protocol, page);
  if (conn->page.len == 0) {
    conn_close(conn, NULL);
    return;
  }
  answer_progress(conn);
}

/* ---- relaying ----------------------------------------------------------- */

/* Both directions finished cleanly: nothing left to carry. */
static void maybe_finish(px_conn_t *conn) {
  if (conn->client.shut && conn->device.shut)
    conn_close(conn, "routed");
}

/* Passes this side's FIN on once its bytes are all written to the peer.
 * It waits for the end of the next loop iteration though: a visitor
 * closes as soon as it has the answer, and its FIN usually arrives by
 * then; when both sides have ended, closing both sockets sends both FINs
 * and no shutdown(2) is needed at all. (epoll tells a device's FIN with
 * the last bytes of its answer, so waiting only for the end of this
 * iteration would shut the visitor's side down almost every time.) */
static void pass_eof(px_side_t *side) {
  px_conn_t *conn = side->conn;
  side->shut = true;
  /* The last bytes wait in the peer's socket for this FIN: it goes now,
   * in their segment (closing the peer below sends it too). */
  if (side->corked && !peer_of(side)->shut) {
    shutdown(peer_of(side)->fd, SHUT_WR);
    return;
  }
  if (!peer_of(side)->shut) {
    side->fin_due = true;
    if (conn->fin_link == NULL) {
      px_server_t *server = conn->listener->server;
      uv_check_start(&server->fin_check, px_conn_pass_fins);
      conn->fin_next = server->fin_queue;
      if (conn->fin_next)
        conn->fin_next->fin_link = &conn->fin_next;
      server->fin_queue = conn;
      conn->fin_link = &server->fin_queue;
    }
    return;
  }
  /* The peer has ended and been passed on already (or is due to be):
   * closing both sends the FINs. Both streams ended, so nothing unread in
   * a socket turns the close into a reset. */
  maybe_finish(conn);
}

/* Errors are ignored: a peer that reset says so when it is read. */
static void shut_peer_now(px_side_t *side) {
  side->fin_due = false;
  shutdown(peer_of(side)->fd, SHUT_WR);
}

static void on_fin_idle(uv_idle_t *idle) {
  (void)idle;
}

void px_conn_pass_fins(uv_check_t *check) {
  px_server_t *server = check->data;
  px_conn_t *conn = server->fin_ripe;
  server->fin_ripe = server->fin_queue;
  if (server->fin_ripe)
    server->fin_ripe->fin_link = &server->fin_ripe;
  server->fin_queue = NULL;
  for (px_conn_t *next; conn != NULL; conn = next) {
    next = conn->fin_next;
    conn->fin_link = NULL;
    if (conn->client.fin_due)
      shut_peer_now(&conn->client);
    if (conn->device.fin_due)
      shut_peer_now(&conn->device);
  }
  if (server->fin_ripe != NULL) {
    uv_idle_start(&server->fin_idle, on_fin_idle);
    return;
  }
  uv_idle_stop(&server->fin_idle);
  uv_check_stop(check);
}

/* Bytes read from side that the peer has not taken yet. */
static size_t waiting(const px_side_t *side) {
  const px_conn_t *conn = side->conn;
  if (side == &conn->client && conn->route != NULL)
    return conn->route->proxy_header_len + conn->peek_len - conn->head_off;
  if (conn->spliced)
    return side->pipe.len;
  return side->len - side->off;
}

/* The rest of the head (PROXY header, then the peeked bytes) to the
 * device. Returns the bytes written or a negative errno. */
static ssize_t write_head(px_conn_t *conn) {
  px_route_t *route = conn->route;
  struct iovec iov[2];
  int n = 0;
  size_t off = conn->head_off;
  if (off < route->proxy_header_len) {
    iov[n++] = (struct iovec){route->proxy_header + off,
                              route->proxy_header_len - off};
    off = 0;
  } else {
    off -= route->proxy_header_len;
  }
  if (conn->peek_len > off)
    iov[n++] = (struct iovec){conn->peek + off, conn->peek_len - off};
  ssize_t w = writev(conn->device.fd, iov, n);
  if (w < 0)
    return -errno;
  conn->head_off += (size_t)w;
  return w;
}

/* Writes want bytes of side's buffer to its peer. The last bytes of a
 * side that has ended go with MSG_MORE: the peer's socket keeps a short
 * tail until the FIN, passed on at once (pass_eof), can share its
 * segment, and the visitor then acknowledges both with one. Returns the
 * bytes written or a negative errno. */
static ssize_t write_last(px_side_t *side, size_t want) {
  int flags = 0;
  if (side->eof) {
    flags = MSG_MORE;
    side->corked = true;
  }
  ssize_t n = send(peer_of(side)->fd, side->buf + side->off, want, flags);
  return n < 0 ? -errno : n;
}

/* Writes what side has waiting to its peer, as far as the peer takes it.
 * Returns 0 or a negative errno other than -EAGAIN. */
static int flush_side(px_side_t *side) {
  px_conn_t *conn = side->conn;
  px_side_t *peer = peer_of(side);
  while (waiting(side) > 0 && peer->writable) {
    size_t want = waiting(side);
    ssize_t n;
    if (side == &conn->client && conn->route != NULL)
      n = write_head(conn);
    else if (conn->spliced)
      n = px_splice_out(conn->listener->server, &side->pipe, peer->fd);
    else if ((n = write_last(side, want)) >= 0)
      side->off += (size_t)n;
    if (n == -EAGAIN) {
      peer->writable = false;
      break;
    }
    if (n < 0)
      return (int)n;
    /* A short write means a full socket buffer; splice(2) may stop short
     * at a pipe buffer's end instead, so it is asked again. */
    if ((size_t)n < want && !conn->spliced)
      peer->writable = false;
  }
  if (waiting(side) > 0)
    return 0;
  if (side == &conn->client && conn->route != NULL)
    release_head(conn);
  else if (!conn->spliced)
    release_buf(side);
  return 0;
}

/* Reads from side what the buffer (or pipe) takes. Returns the bytes
 * read, 0 at the end of the stream, or a negative errno. */
static ssize_t read_relay(px_side_t *side) {
  px_conn_t *conn = side->conn;
  px_server_t *server = conn->listener->server;
  if (conn->spliced) {
    /* Not read_side: a short splice may only mean a full pipe. */
    ssize_t n = px_splice_in(server, &side->pipe, side->fd,
                             side->bytes >= PX_PIPE_GROW_AFTER);
    if (n == -EAGAIN)
      side->readable = false;
    return n;
  }
  if (side->buf == NULL && (side->buf = take_buf(server)) == NULL)
    return -ENOMEM;
  ssize_t n = read_side(side, side->buf, PX_RELAY_BUF_SIZE);
  if (n > 0) {
    side->off = 0;
    side->len = (size_t)n;
    /* A read that fills the buffer is a bulk transfer: from here on
     * splice(2) is worth it. */
    if (n == PX_RELAY_BUF_SIZE)
      conn->bulk = true;
  } else {
    release_buf(side);
  }
  return n;
}

/* Moves the relay to splice(2) once it carries a bulk transfer and no
 * bytes wait in a buffer; short exchanges keep copying, which costs them
 * no pipe. */
static void maybe_splice(px_conn_t *conn) {
  if (conn->splice && conn->bulk && conn->route == NULL &&
      waiting(&conn->client) == 0 && waiting(&conn->device) == 0) {
    conn->splice = false;
    conn->spliced = true;
  }
}

/* How side's stream ended, once a read has returned its end or epoll has
 * reported an error after it: 0 for a FIN, else the negative errno of the
 * reset (or other error) that came with it or after it. Linux returns the
 * FIN first when a reset follows it, and epoll may not have reported the
 * reset yet, so the socket is asked when this end finishes the
 * connection. While the other direction is still open it need not be: a
 * later reset is still told, by epoll (then relay_from) or by a write to
 * this socket that fails. */
static int stream_end(px_side_t *side) {
  int err = 0;
  socklen_t len = sizeof err;
  if (peer_of(side)->eof)
    if (getsockopt(side->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
  /* epoll saw an error that something has taken from the socket since. */
  if (err == 0 && side->error)
    err = ECONNRESET;
  return -err;
}

/* A read from or a write to failed's socket returned err: conn closes.
 * Our own shortage of memory or descriptors leaves both streams intact.
 * Any other error broke failed's stream: a reset (-EPIPE: one that a
 * write has already been told of), retransmissions that timed out, an
 * unreachable host. It is passed on as a reset, so that the other side
 * cannot take the broken stream for a complete one. */
static void stream_failed(px_side_t *failed, int err) {
  px_conn_t *conn = failed->conn;
  if (err == -EMFILE || err == -ENFILE || err == -ENOMEM) {
    conn_close(conn, "out of memory");
    return;
  }
  char visitor[PX_ADDRSTRLEN];
  core_log(CORE_LOG_DEBUG, "%s for %s: the %s's stream broke: %s",
           conn_name(conn), format_visitor(conn, visitor),
           failed == &conn->client ? "visitor" : "device", uv_strerror(err));
  reset_side(peer_of(failed));
  conn_close(conn, "reset");
}

/* Carries side's bytes to its peer: the one backpressure rule is that a
 * side is read only while none of its bytes wait for the peer. Returns
 * false when conn closed. */
static bool relay_from(px_side_t *side) {
  px_conn_t *conn = side->conn;
  px_side_t *peer = peer_of(side);
  for (int round = 0;; round++) {
    int rc = flush_side(side);
    if (rc != 0) {
      stream_failed(peer, rc);
      return false;
    }
    if (waiting(side) > 0)
      return true;
    if (side->eof) {
      /* A reset after the FIN: what the other side still sends here is
       * lost, and it must be told. */
      if (side->error) {
        stream_failed(side, stream_end(side));
        return false;
      }
      if (!side->shut)
        pass_eof(side);
      return conn->state != PX_STATE_CLOSING;
    }
    if (!side->readable)
      return true;
    if (turn_over(side, round))
      return true;
    maybe_splice(conn);
    ssize_t n = read_relay(side);
    if (n == -EAGAIN)
      return true;
    if (n == 0 && (n = stream_end(side)) == 0) {
      side->eof = true;
      continue;
    }
    if (n < 0) {
      stream_failed(side, (int)n);
      return false;
    }
    side->bytes += (uint64_t)n;
    conn->active_ms = core_now_ms();
    /* A grown pipe's read counts once per default pipe it filled: a turn
     * moves no more bytes than it did through default pipes. */
    round += (int)(((size_t)n - 1) / PX_PIPE_SIZE);
  }
}

static void relay(px_conn_t *conn) {
  assert(conn->state == PX_STATE_RELAYING);
  if (relay_from(&conn->client))
    relay_from(&conn->device);
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
  socklen_t dst_len = sizeof dst;
  core_ip_to_sockaddr(&conn->visitor, conn->visitor_port, &src);
  if (getsockname(conn->client.fd, (struct sockaddr *)&dst, &dst_len) != 0)
    return -errno;
  return px_proxy_header(conn->route->proxy_protocol, (struct sockaddr *)&src,
                         (struct sockaddr *)&dst, conn->route->proxy_header,
                         sizeof conn->route->proxy_header);
}

/* The device has taken the first bytes of the head, so the connection is
 * up: relaying starts, the rest of the head waiting like any client bytes
 * the device has not taken. */
static void start_relay(px_conn_t *conn) {
  assert(conn->state == PX_STATE_CONNECTING);
  conn->state = PX_STATE_RELAYING;
  conn->splice = conn->listener->server->splice;
  conn->active_ms = core_now_ms();
  conn->client.bytes = conn->peek_len;
  uv_timer_start(&conn->timer, on_idle_timer,
                 conn_config(conn)->proxy.idle_timeout_ms, 0);
  relay(conn);
}

/* ---- connecting --------------------------------------------------------- */

static void try_next_address(px_conn_t *conn);

/* Gives up on the device address in hand. Its socket is reset, not
 * closed: a handshake that completed unseen as the connect timer fired
 * may have taken part of the head, which a FIN would hand the device as
 * a whole (if short) request. */
static void abandon_attempt(px_conn_t *conn) {
  uv_timer_stop(&conn->timer);
  reset_side(&conn->device);
  conn->head_off = 0;
  try_next_address(conn);
}

static void on_connect_timeout(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  char visitor[PX_ADDRSTRLEN];
  core_log(CORE_LOG_DEBUG, "connect to %s for %s timed out", conn_name(conn),
           format_visitor(conn, visitor));
  abandon_attempt(conn);
}

/* Writes the head as soon as the device's socket takes it, without first
 * learning that the connection is up: to a nearby device (loopback, a
 * LAN) the handshake is usually done by the time connect(2) returns, and
 * no getsockopt(2) is needed for its result. A refused connection fails
 * this write, at once or when epoll reports the socket; either tries the
 * next address. */
static void send_head(px_conn_t *conn) {
  assert(conn->state == PX_STATE_CONNECTING);
  if (!conn->device.writable)
    return;
  ssize_t n = write_head(conn);
  if (n == -EAGAIN) {
    conn->device.writable = false;
    return;
  }
  if (n < 0) {
    abandon_attempt(conn);
    return;
  }
  start_relay(conn);
}

/* A non-blocking socket connecting to target, watched for the device's
 * side. Returns 0 or a negative errno with nothing left open. */
static int open_device(px_conn_t *conn, const struct sockaddr_storage *target) {
  px_side_t *device = &conn->device;
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
  device->fd = fd;
  int rc = watch_side(device, EPOLL_CTL_ADD);
  if (rc != 0) {
    close_side(device);
    return rc;
  }
  /* Writable until a write says otherwise: see send_head. */
  device->writable = true;
  return 0;
}

static void try_next_address(px_conn_t *conn) {
  assert(conn->state == PX_STATE_CONNECTING && conn->device.fd < 0);
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

/* Room for the next read of the head: the buffer grows by doubling up to
 * max_hello, so an idle visitor costs a small buffer only. Returns the
 * bytes free (0: the head is as large as it may be, or memory is short). */
static size_t peek_room(px_conn_t *conn) {
  uint32_t max = conn_config(conn)->proxy.max_hello;
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
  return conn->peek_cap - conn->peek_len;
}

/* Reads what the visitor has sent into the head buffer. Returns the bytes
 * read, 0 at the end of the stream, -ENOBUFS when the buffer is full, or
 * a negative errno. */
static ssize_t read_head(px_conn_t *conn) {
  size_t room = peek_room(conn);
  if (room == 0)
    return conn->peek_cap >= conn_config(conn)->proxy.max_hello ? -ENOBUFS
                                                                : -ENOMEM;
  ssize_t n = read_side(&conn->client, conn->peek + conn->peek_len, room);
  if (n > 0)
    conn->peek_len += (size_t)n;
  return n;
}

/* While the device is being reached, what the visitor sends next joins
 * the head, up to max_hello; then the visitor waits. */
static void early_read(px_conn_t *conn) {
  px_side_t *client = &conn->client;
  while (client->readable && !client->eof) {
    ssize_t n = read_head(conn);
    if (n == -EAGAIN || n == -ENOBUFS)
      return;
    if (n == 0) {
      /* Passed on once the head is written. */
      client->eof = true;
      return;
    }
    if (n < 0) {
      /* The device may have connected, unknown to us yet: it is reset
       * (or its connect aborted) like a relay's peer. */
      stream_failed(client, (int)n);
      return;
    }
  }
}

static void peek_read(px_conn_t *conn) {
  assert(conn->state == PX_STATE_PEEKING);
  px_side_t *client = &conn->client;
  if (!client->readable)
    return;
  ssize_t n = read_head(conn);
  if (n == -EAGAIN)
    return;
  if (n == -ENOMEM) {
    conn_close(conn, "out of memory");
    return;
  }
  if (n <= 0) {
    conn_close(conn, "client closed");
    return;
  }

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
     * or is refused there. The visitor stays read: see early_read. */
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
    else if (client->eof)
      conn_close(conn, "client closed");
    else if (client->readable)
      peek_read(conn);
    return;
  }
}

static void on_peek_deadline(uv_timer_t *timer) {
  px_conn_t *conn = timer->data;
  if (conn->peek_len == 0)
    conn_close(conn, "timeout");
  else
    answer_page(conn, PX_PAGE_TIMEOUT, "timeout");
}

/* What epoll reported for side's socket, remembered until a system call
 * says otherwise (edge-triggered), then acted on as the state says. */
static void on_side_events(px_side_t *side, uint32_t events) {
  px_conn_t *conn = side->conn;
  /* A socket closed earlier in this batch of events. */
  if (side->fd < 0 || conn->state == PX_STATE_CLOSING)
    return;
  /* Errors and hang-ups are found out by the next read or write. */
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    side->readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP))
    side->rdhup = true;
  if (events & EPOLLERR)
    side->error = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
    side->writable = true;
  switch (conn->state) {
  case PX_STATE_PEEKING:
    peek_read(conn);
    return;
  case PX_STATE_CONNECTING:
    if (side == &conn->client)
      early_read(conn);
    else
      send_head(conn);
    return;
  case PX_STATE_RELAYING:
    relay(conn);
    return;
  case PX_STATE_ANSWERING:
    answer_progress(conn);
    return;
  case PX_STATE_CLOSING:
    return;
  }
}

void px_conn_on_epoll(uv_poll_t *poll, int status, int events) {
  px_server_t *server = poll->data;
  struct epoll_event ready[EPOLL_BATCH];
  (void)status;
  (void)events;
  /* More ready than fit here: the loop's poll reports the epoll instance
   * again in its next iteration. */
  int n = epoll_wait(server->epoll_fd, ready, EPOLL_BATCH, 0);
  for (int i = 0; i < n; i++)
    on_side_events(ready[i].data.ptr, ready[i].events);
}

int px_conn_accept(px_listener_t *listener, int fd,
                   const struct sockaddr *peer) {
  px_server_t *server = listener->server;
  core_ip_t visitor;
  int rc = core_ip_from_sockaddr(peer, &visitor);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  px_conn_t *conn = xcalloc(1, sizeof *conn);
  conn->listener = listener;
  conn->state = PX_STATE_PEEKING;
  conn->started_ms = core_now_ms();
  conn->visitor = visitor;
  conn->visitor_port =
      ntohs(peer->sa_family == AF_INET
                ? ((const struct sockaddr_in *)peer)->sin_port
                : ((const struct sockaddr_in6 *)peer)->sin6_port);
  conn->client = (px_side_t){.conn = conn, .fd = fd, .writable = true};
  conn->device = (px_side_t){.conn = conn, .fd = -1};
  conn->client.pipe = conn->device.pipe = (px_pipe_t){.rd = -1, .wr = -1};
  px_listener_hold(listener);
  uv_timer_init(server->loop, &conn->timer);
  conn->timer.data = conn;

  conn->next = server->conns;
  if (server->conns)
    server->conns->prev = conn;
  server->conns = conn;
  server->n_conns++;

  rc = watch_side(&conn->client, EPOLL_CTL_ADD);
  if (rc != 0) {
    conn_close(conn, "accept failed");
    return rc;
  }
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
  return 0;
}
