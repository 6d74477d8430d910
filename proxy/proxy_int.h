/* SPDX-License-Identifier: MIT */
/* proxy_int.h -- internals shared by the proxy's files */
#ifndef DDPORT_PROXY_INT_H
#define DDPORT_PROXY_INT_H

#include "core/core.h"
#include "proxy/proxy.h"

#include <stddef.h>
#include <sys/types.h>

typedef enum px_peek_result {
  PX_PEEK_COMPLETE,
  PX_PEEK_NEED_MORE,
  PX_PEEK_INVALID,
} px_peek_result_t;

/* What the Host peek found in one HTTP request head. */
typedef struct px_http_host {
  core_str_t raw; /* the host as sent (view into the caller's buffer) */
  char name[CORE_NAME_MAX + 1]; /* normalised: no port, no trailing dot */
  size_t name_len;
  size_t head_len; /* bytes of the request line and headers, with CRLFCRLF */
  const char *why; /* on PX_PEEK_INVALID: a short static reason */
} px_http_host_t;

/* Parses the request head at the start of buf (len bytes) and extracts the
 * host to route by: the absolute-form target's host if present, else the
 * one Host header. Only a complete head counts. Returns PX_PEEK_NEED_MORE
 * until the head is complete and nothing seen so far is invalid,
 * PX_PEEK_INVALID for a malformed request, a missing or duplicate Host or a
 * host that is not a valid name, and PX_PEEK_COMPLETE with *out filled
 * (name_len 0 for an HTTP/1.0 request without Host: it names no device).
 * Pure: no allocation, no state kept between calls. */
px_peek_result_t px_http_host_parse(const char *buf, size_t len,
                                    px_http_host_t *out);

/* Strips a ":port" and a trailing dot, lowercases and validates a Host
 * value into out (CORE_NAME_MAX + 1 bytes). Returns the length or -EINVAL. */
int px_http_host_normalise(const char *host, size_t len, char *out);

/* What the SNI peek found in a TLS ClientHello. */
typedef struct px_sni {
  char name[CORE_NAME_MAX + 1]; /* normalised server_name host_name */
  size_t name_len;              /* 0: the ClientHello names no server */
  size_t hello_len;             /* bytes of the ClientHello handshake message */
  const char *why;              /* on PX_PEEK_INVALID: a short static reason */
} px_sni_t;

/* Parses the TLS records at the start of buf (len bytes), reassembling the
 * ClientHello across TCP segments and across TLS records, and extracts the
 * server_name. Returns PX_PEEK_NEED_MORE until the whole ClientHello is
 * there, PX_PEEK_INVALID for anything that is not a well-formed ClientHello
 * (or names an invalid host), PX_PEEK_COMPLETE with *out filled (name_len 0
 * when there is no server_name). Pure: no allocation, no state kept. */
px_peek_result_t px_sni_parse(const uint8_t *buf, size_t len, px_sni_t *out);

/* Longest PROXY protocol header we build (a v1 line is at most 107 bytes;
 * v2 for TCP over IPv6 is 52). */
#define PX_PROXY_HEADER_MAX 108

/* Builds the PROXY protocol header that tells a device who the visitor
 * (src) is and which listener address (dst) it reached. Returns its length
 * (0 for REG_PROXY_PROTOCOL_OFF), -EAFNOSUPPORT unless both addresses are
 * IPv4 or both IPv6, or -ENOSPC when cap is too small. Pure. */
int px_proxy_header(reg_proxy_protocol_t version, const struct sockaddr *src,
                    const struct sockaddr *dst, uint8_t *out, size_t cap);

/* Limits on connections, shared by every worker (limits.c). */
typedef enum px_limit {
  PX_LIMIT_NONE,
  PX_LIMIT_CONNECTIONS, /* proxy.limits.connections open in all */
  PX_LIMIT_PEEKING,     /* proxy.limits.peeking still sending their head */
  PX_LIMIT_PER_SOURCE,  /* proxy.limits.per_source from one address or /64 */
} px_limit_t;

#define PX_SKETCH_ROWS 4

/* Addresses of one device tried per connection. */
#define PX_MAX_TARGETS REG_MAX_ADDRESSES

/* What one admitted connection holds, to give back. */
typedef struct px_admission {
  uint32_t slots[PX_SKETCH_ROWS];
  bool peeking;
} px_admission_t;

/* Admits a new connection from source, counting it as open and peeking;
 * returns PX_LIMIT_NONE, or the limit it would exceed (nothing is then
 * held). Lock-free; per-source counts may over-count (never under-count)
 * when sources collide in the sketch. */
px_limit_t px_limits_admit(px_limits_t *limits, const core_ip_t *source,
                           px_admission_t *out);

/* The connection has finished peeking (routed or refused). Idempotent. */
void px_limits_peek_done(px_limits_t *limits, px_admission_t *admission);

/* The connection is closed: gives back everything it held. */
void px_limits_release(px_limits_t *limits, px_admission_t *admission);

/* Takes pages of pipe capacity beyond the default from the budget that
 * every worker's grown pipes share; false (nothing taken) when that would
 * exceed it. The kernel counts pipe pages per user and, past
 * /proc/sys/fs/pipe-user-pages-soft, gives every new pipe of that user
 * (ours and other processes') a single page: px_limits_new sets the
 * budget to a quarter of that limit, so grown pipes never bring the user
 * near it. */
bool px_limits_take_pipe_pages(px_limits_t *limits, size_t pages);

/* Gives back pages taken with px_limits_take_pipe_pages. */
void px_limits_give_pipe_pages(px_limits_t *limits, size_t pages);

/* Sets the budget of grown pipe pages (tests set a small one). */
void px_limits_set_pipe_budget(px_limits_t *limits, size_t pages);

/* Device hostnames, resolved with c-ares in a worker's loop (resolve.c). */
typedef struct px_resolver px_resolver_t;
typedef struct px_lookup px_lookup_t;
typedef void (*px_resolve_cb)(void *arg, int status, const char *host,
                              const core_ip_t *addrs, size_t n_addrs);
#define PX_RESOLVE_PENDING 1

/* A resolver on loop, using config's proxy.resolvers or the system's. */
int px_resolver_new(uv_loop_t *loop, const reg_config_t *config,
                    px_resolver_t **out);

/* Cancels pending lookups (without calling back) and closes the handles;
 * the resolver frees itself once libuv has closed them. */
void px_resolver_free(px_resolver_t *resolver);

/* Resolves host to at most PX_MAX_TARGETS addresses. From the cache (or
 * when c-ares answers at once) it fills addrs and *n_addrs and returns 0
 * or a negative UV_E* status; otherwise it returns PX_RESOLVE_PENDING with
 * *pending set, and calls cb once later unless px_resolve_cancel(*pending)
 * came first. Answers and failures are cached by TTL. */
int px_resolve(px_resolver_t *resolver, const char *host, core_ip_t *addrs,
               size_t *n_addrs, px_resolve_cb cb, void *arg,
               px_lookup_t **pending);

/* The callback of a pending lookup will not be called; the lookup frees
 * itself when c-ares is done with it. */
void px_resolve_cancel(px_lookup_t *lookup);

typedef enum px_page {
  PX_PAGE_BAD_REQUEST, /* 400 */
  PX_PAGE_NOT_FOUND,   /* 404: no such device */
  PX_PAGE_TIMEOUT,     /* 408: the request head did not arrive in time */
  PX_PAGE_TOO_LARGE,   /* 431: request head larger than max_hello */
  PX_PAGE_OFFLINE,     /* 502: the device does not answer */
  PX_PAGE_BUSY,        /* 503: a connection limit was reached */
} px_page_t;

/* What to send a visitor the proxy cannot relay: for HTTP listeners the
 * complete response for page, with Connection: close; for TLS listeners
 * the matching fatal alert record (unrecognized_name for an unknown name,
 * decode_error for a malformed hello, internal_error for an offline
 * device), or nothing for a timeout. Static storage; never freed. */
core_str_t px_refusal(reg_protocol_t protocol, px_page_t page);

typedef struct px_conn px_conn_t;

/* One listening socket of one worker. A reload that removes or changes the
 * listener retires it: it stops accepting, but stays (with its own copy of
 * the listener's settings) until the last connection accepted on it is
 * gone, since a connection reads its name, protocol and fallback. */
typedef struct px_listener {
  uv_poll_t poll;   /* watches fd; poll.data points back here */
  int fd;           /* the listening socket while tcp_open */
  uv_timer_t retry; /* reopens it after running out of descriptors */
  px_server_t *server;
  const reg_listener_t *config; /* &spec */
  reg_listener_t spec;          /* a copy: name and fallback are owned */
  unsigned holds; /* open handles (tcp, retry) plus one per connection */
  uint64_t backoff_ms;
  bool tcp_open; /* fd listening, poll watching it, neither closing */
  bool retired;  /* no longer in the server's set: never reopened */
} px_listener_t;

/* Bytes of one direction of a spliced relay, waiting between reading one
 * socket and writing the other. */
typedef struct px_pipe {
  int rd, wr; /* -1: no pipe held */
  size_t len; /* bytes in the pipe */
  size_t cap; /* its capacity: PX_PIPE_SIZE, or PX_PIPE_BULK_SIZE if grown */
  bool fixed; /* the kernel refused to grow it: not asked again */
} px_pipe_t;

#define PX_RELAY_BUF_SIZE (16 * 1024)
#define PX_PIPE_SIZE (64 * 1024) /* a new pipe's capacity (Linux default) */
/* A bulk direction's pipe grows to this, once it has relayed
 * PX_PIPE_GROW_AFTER bytes and while the pipe page budget lasts. */
#define PX_PIPE_BULK_SIZE (1024 * 1024) /* Linux's default pipe-max-size */
#define PX_PIPE_GROW_AFTER (1024 * 1024)
#define PX_SPARE_PIPES 64 /* per worker: 128 descriptors at most */
#define PX_SPARE_BUFS 256 /* per worker: 4 MiB at most kept for reuse */
#define PX_PEEK_FIRST_SIZE 4096
#define PX_SPARE_PEEKS 1024 /* per worker: 4 MiB at most */

/* One worker's proxy: its listeners and its open connections. */
struct px_server {
  uv_loop_t *loop;
  const reg_config_t *config; /* &in_force */
  /* The configuration the server started with, its listeners replaced by
   * those of the last plan applied (the target policy refuses the proxy's
   * own addresses, so it must know the new ones); the rest is borrowed. */
  reg_config_t in_force;
  px_listen_plan_t *plan; /* whose listeners are in force, or NULL */
  const reg_t *reg;
  px_limits_t *limits;
  px_resolver_t *resolver;
  px_listener_t **listeners; /* the set in force; retired ones not here */
  size_t n_listeners;
  size_t open_handles; /* listeners' handles, drain timer, fin check, epoll */
  px_conn_t *conns;    /* doubly linked through px_conn's next/prev */
  size_t n_conns;
  uv_timer_t drain_timer;
  /* Connections with a FIN to pass on, linked through px_conn's fin_next:
   * fin_queue those queued in this loop iteration, fin_ripe those queued
   * in the last one, whose FINs the check handle passes on at the end of
   * this one (conn.c: px_conn_pass_fins); fin_idle keeps the loop from
   * blocking while some are ripe. */
  px_conn_t *fin_queue, *fin_ripe;
  uv_check_t fin_check;
  uv_idle_t fin_idle;
  /* The sockets of every connection are watched by this edge-triggered
   * epoll instance, itself watched by the loop through epoll_poll (conn.c:
   * px_conn_on_epoll): each socket is registered once, for everything, and
   * leaves it when it is closed, where a libuv stream would change its
   * registration as reading stops and starts and remove it before close. */
  int epoll_fd;
  uv_poll_t epoll_poll;
  bool stopping;
  /* Relay buffers not in use: a connection holds one only while bytes
   * wait in it, so idle connections cost no buffer memory. */
  char *spare_bufs[PX_SPARE_BUFS];
  size_t n_spare_bufs;
  char *spare_peeks[PX_SPARE_PEEKS];
  size_t n_spare_peeks;
  bool splice; /* relays splice(2) through pipes rather than copy */
  /* Empty pipes for spliced relays, held like the buffers above: only while
   * bytes wait in them. */
  px_pipe_t spare_pipes[PX_SPARE_PIPES];
  size_t n_spare_pipes;
};

/* Whether relays on this system should splice(2) under config's
 * proxy.splice ("auto" resolved; always false where splice(2) is missing). */
bool px_splice_enabled(const reg_config_t *config);

/* Moves up to a pipe's capacity from socket fd into pipe, taking a pipe
 * from server's spares (or a new one) when pipe holds none. With bulk
 * set, a pipe of the default size is first grown to PX_PIPE_BULK_SIZE if
 * server's limits have the pages for it (else it silently stays as it
 * is); grown pipes keep their size, and their pages, in the spares until
 * they are closed. Returns the
 * bytes moved, 0 at the end of the stream, or a negative errno: -EAGAIN
 * when nothing can be read now, the socket's error (such as -ECONNRESET),
 * or -EMFILE / -ENFILE when no pipe could be made. An empty pipe is given
 * back before it returns. */
ssize_t px_splice_in(px_server_t *server, px_pipe_t *pipe, int fd, bool bulk);

/* Writes what pipe holds to socket fd. Returns the bytes written or a
 * negative errno (-EAGAIN: fd takes nothing now); pipe goes back to the
 * spares once it is empty. */
ssize_t px_splice_out(px_server_t *server, px_pipe_t *pipe, int fd);

/* Gives pipe back to server's spares if it is empty, else closes it (its
 * bytes are dropped, the pages of a grown pipe go back to the budget).
 * No-op when pipe holds no pipe. */
void px_pipe_release(px_server_t *server, px_pipe_t *pipe);

/* Closes server's spare pipes, giving back the pages of grown ones. */
void px_pipes_free(px_server_t *server);

/* Takes over fd, a connection accepted on listener from peer: peeks,
 * routes, connects, relays, logs one access line and frees itself when
 * both sides are closed. Returns 0 or a negative errno / UV_E* code
 * (nothing is left open then, fd closed). */
int px_conn_accept(px_listener_t *listener, int fd,
                   const struct sockaddr *peer);

/* The callback of server's epoll_poll: acts on what the epoll instance of
 * the connections' sockets reports. */
void px_conn_on_epoll(uv_poll_t *poll, int status, int events);

/* Passes on the FINs that connections of server deferred to the end of
 * the next loop iteration (fin_check's callback). */
void px_conn_pass_fins(uv_check_t *check);

/* Closes every connection of server at once (the drain deadline passed).
 * They are freed, and unlinked, in their close callbacks. */
void px_conn_abort_all(px_server_t *server);

/* A connection accepted on listener keeps it (name, protocol, fallback)
 * until it is gone, even when a reload retires the listener meanwhile. */
void px_listener_hold(px_listener_t *listener);

/* Called by a connection when it is gone, with the listener it held, so a
 * retired listener and a stopping server can finish. */
void px_server_conn_gone(px_server_t *server, px_listener_t *listener);

#endif
