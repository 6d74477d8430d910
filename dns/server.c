/* SPDX-License-Identifier: MIT */
/* server.c -- UDP listeners that feed queries to dns_answer_query */
#include "dns/dns.h"
#include "dns/dns_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Each socket is read with our own recvmmsg rather than libuv's, which
 * takes at most 20 datagrams a call: up to BATCH datagrams per call into
 * 64 KiB chunks of the buffer (each big enough for any datagram, so none
 * arrives cut short), answered, and the answers sent in one sendmmsg; then
 * the next batch, until a call finds the socket empty. The chunks cost
 * address space, not memory: the kernel writes only the bytes a datagram
 * has. */
#define RECV_CHUNK 65536
#define BATCH 64
#define RECV_BUF_SIZE (BATCH * RECV_CHUNK)
/* Batches per readable event: a flood on one socket must not starve the
 * loop's other handles (TCP, the proxy). */
#define BATCHES_PER_EVENT 4
/* Room for bursts while the loop is busy; the kernel may grant less. */
#define SOCKET_RCVBUF (4 * 1024 * 1024)

/* Response rate limiting counts per source prefix across every worker, so
 * one table serves the process (created once, lives until exit). */
#define RRL_SLOTS 65536
static dns_rrl_t *shared_rrl;
static uv_once_t shared_rrl_once = UV_ONCE_INIT;

static void shared_rrl_create(void) {
  uint64_t seed = 0;
  if (uv_random(NULL, NULL, &seed, sizeof seed, 0, NULL) != 0)
    seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
  shared_rrl = dns_rrl_new(RRL_SLOTS, seed);
}

/* An answer waiting for the end of its batch. */
typedef struct pending {
  struct sockaddr_storage addr;
  size_t len;
  uint8_t msg[DNS_EDNS_SIZE];
} pending_t;

typedef struct dns_udp {
  uv_poll_t handle; /* handle.data: the server */
  int fd;           /* ours: closed when the handle is */
  struct sockaddr_storage addr;
} dns_udp_t;

struct dns_server {
  const reg_config_t *config;
  const reg_t *reg;
  size_t n_open; /* handles initialised and not yet closed */
  dns_tcp_t *tcp;
  bool stopping;
  uint64_t n_queries, n_answers, n_dropped, n_limited, n_slipped;
  /* One loop, one thread: a packet is answered before the next is read, so
   * the buffers are shared by all the server's sockets. */
  uint8_t recv_buf[RECV_BUF_SIZE];
  struct sockaddr_storage peers[BATCH];
  struct iovec recv_iov[BATCH];
  struct mmsghdr recv_msgs[BATCH];
  dns_rrl_t *rrl; /* NULL: rate_limit off */
  /* The batch's questions, decoded once and their names looked up
   * together before the answers. */
  char qname[BATCH][CORE_NAME_MAX + 1];
  dns_question_ahead_t ahead[BATCH];
  bool has_ahead[BATCH];
  dns_lookup_hint_t hints[BATCH];
  size_t n_pending;
  pending_t pending[BATCH];
  size_t n_udp;
  dns_udp_t udp[];
};

/* Sends the batch's answers in one system call. No send queue: a full
 * socket buffer means the host is overloaded, and a resolver retries
 * sooner than a queued answer would arrive. */
static void flush(dns_server_t *server, int fd) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  size_t n = server->n_pending;

  server->n_pending = 0;
  if (n == 0)
    return;
  memset(msgs, 0, n * sizeof msgs[0]);
  for (size_t i = 0; i < n; i++) {
    pending_t *p = &server->pending[i];
    iov[i].iov_base = p->msg;
    iov[i].iov_len = p->len;
    msgs[i].msg_hdr.msg_name = &p->addr;
    msgs[i].msg_hdr.msg_namelen = p->addr.ss_family == AF_INET6
                                      ? sizeof(struct sockaddr_in6)
                                      : sizeof(struct sockaddr_in);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  size_t sent = 0;
  /* A datagram the kernel refuses (EAGAIN, or an address it will not
   * send to) is dropped; the rest still go. */
  for (unsigned tries = 0; sent < n && tries < BATCH; tries++) {
    int rc = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (rc <= 0) {
      server->n_dropped++;
      sent++;
      continue;
    }
    server->n_answers += (size_t)rc;
    sent += (size_t)rc;
  }
  server->n_dropped += n - sent;
}

/* Decodes the questions of the batch's n datagrams, for their answers to
 * start after, and looks their names up at once, so the lookups' waits
 * for memory overlap (reg_lookup_many); at millions of devices a lookup
 * is mostly that wait. A datagram whose name cannot be a device's gets no
 * hint and its answer looks up whatever it needs itself. */
static void look_up_batch(dns_server_t *server, size_t n) {
  const char *names[BATCH];
  size_t lens[BATCH], at[BATCH], k = 0;
  const reg_device_t *devices[BATCH];
  for (size_t i = 0; i < n; i++) {
    dns_question_ahead_t *ahead = &server->ahead[i];
    server->hints[i].name = NULL;
    /* A name whose text does not fit a device's length has no text. */
    server->has_ahead[i] =
        !(server->recv_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) &&
        dns_question_read_ahead(server->recv_iov[i].iov_base,
                                server->recv_msgs[i].msg_len, server->qname[i],
                                sizeof server->qname[i], ahead);
    if (!server->has_ahead[i] || ahead->text == NULL)
      continue;
    names[k] = ahead->text;
    lens[k] = ahead->text_len;
    at[k++] = i;
  }
  reg_lookup_many(server->reg, k, names, lens, devices);
  for (size_t j = 0; j < k; j++)
    server->hints[at[j]] = (dns_lookup_hint_t){names[j], lens[j], devices[j]};
}

/* Answers one datagram of a batch into the next pending slot. */
static void answer_datagram(dns_server_t *server, const uint8_t *msg,
                            size_t len, const struct sockaddr *addr,
                            const dns_question_ahead_t *ahead,
                            const dns_lookup_hint_t *hint) {
  pending_t *p = &server->pending[server->n_pending];
  bool cookie_ok = false;
  const dns_request_t req = {.config = server->config,
                             .reg = server->reg,
                             .peer = addr,
                             .tcp = false,
                             .now = (uint64_t)time(NULL),
                             .cookie_secret = dns_cookie_secret(),
                             .cookie_ok = &cookie_ok,
                             .msg = msg,
                             .len = len,
                             .hint = hint->name != NULL ? hint : NULL,
                             .ahead = ahead};
  dns_xfr_t *xfr;
  size_t n = dns_respond(&req, p->msg, sizeof p->msg, &xfr);
  if (n == 0)
    return;
  /* A client returning our server cookie is who it says it is: rate
   * limiting is for spoofed sources. */
  if (server->rrl && !cookie_ok) {
    const reg_config_t *c = server->config;
    switch (dns_rrl_account(server->rrl, addr, (uint32_t)req.now,
                            c->dns.rrl_responses_per_second, c->dns.rrl_slip)) {
    case DNS_RRL_SEND:
      break;
    case DNS_RRL_SLIP:
      server->n_slipped++;
      n = dns_rrl_slip(p->msg, n);
      break;
    case DNS_RRL_DROP:
      server->n_limited++;
      return;
    }
  }
  p->len = n;
  memcpy(&p->addr, addr,
         addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
  server->n_pending++;
}

/* Reads one batch from fd and answers it. Returns the datagrams read, or
 * 0 once the socket is empty. Read errors on UDP concern one datagram and
 * never the socket, so they end the event like an empty socket does. */
static size_t answer_batch(dns_server_t *server, int fd) {
  struct mmsghdr *msgs = server->recv_msgs;
  for (size_t i = 0; i < BATCH; i++) {
    msgs[i].msg_hdr.msg_name = &server->peers[i];
    msgs[i].msg_hdr.msg_namelen = sizeof server->peers[i];
    msgs[i].msg_hdr.msg_flags = 0;
  }
  int rc;
  do
    rc = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
  while (rc < 0 && errno == EINTR);
  if (rc <= 0)
    return 0;
  look_up_batch(server, (size_t)rc);
  for (size_t i = 0; i < (size_t)rc; i++) {
    server->n_queries++;
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      server->n_dropped++;
      continue;
    }
    answer_datagram(server, server->recv_iov[i].iov_base, msgs[i].msg_len,
                    (const struct sockaddr *)&server->peers[i],
                    server->has_ahead[i] ? &server->ahead[i] : NULL,
                    &server->hints[i]);
  }
  flush(server, fd);
  return (size_t)rc;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  dns_server_t *server = handle->data;
  dns_udp_t *udp = (dns_udp_t *)handle;
  (void)events;
  if (status < 0 || server->stopping)
    return;
  /* A short batch most likely emptied the socket: asking again would
   * mostly cost a recvmmsg that says EAGAIN. Whatever came meanwhile is
   * still readable, and the poll (level-triggered) reports it next. */
  for (unsigned i = 0; i < BATCHES_PER_EVENT; i++)
    if (answer_batch(server, udp->fd) < BATCH)
      return;
}

static void on_close(uv_handle_t *handle) {
  dns_server_t *server = handle->data;
  close(((dns_udp_t *)handle)->fd);
  if (--server->n_open == 0)
    free(server);
}

int dns_udp_socket_open(const struct sockaddr_storage *addr) {
  int one = 1;
  int rcvbuf = SOCKET_RCVBUF;
  int err;
  socklen_t addr_len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                   : sizeof(struct sockaddr_in);

  int fd =
      socket(addr->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* Every worker binds the same address; the kernel spreads queries over
   * their sockets. Not SO_REUSEADDR: on UDP it would let a socket of any
   * user that sets it share the address. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
    goto fail;
  /* [::] must not also take IPv4, which may be listed on its own. */
  if (addr->ss_family == AF_INET6 &&
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
    goto fail;
  /* Best effort: SO_RCVBUF is capped at net.core.rmem_max; the FORCE
   * variant passes the cap when we hold CAP_NET_ADMIN. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  if (bind(fd, (const struct sockaddr *)addr, addr_len) != 0)
    goto fail;
  /* Best effort: without it the kernel spreads queries by hash. */
  (void)core_affinity_steer(fd);
  return fd;

fail:
  err = -errno;
  close(fd);
  return err;
}

static int udp_start(uv_loop_t *loop, dns_server_t *server, dns_udp_t *udp) {
  char text[64];
  const char *what = "bind";

  int fd = dns_udp_socket_open(&udp->addr);
  if (fd < 0) {
    core_log(CORE_LOG_ERROR, "dns: cannot %s udp %s: %s", what,
             core_sockaddr_format((const struct sockaddr *)&udp->addr, text,
                                  sizeof(text)),
             uv_strerror(fd));
    return fd;
  }
  udp->fd = fd;
  int err = uv_poll_init(loop, &udp->handle, fd);
  if (err != 0) {
    close(fd);
    what = "set up";
    goto fail;
  }
  udp->handle.data = server;
  server->n_open++;
  err = uv_poll_start(&udp->handle, UV_READABLE, on_readable);
  if (err != 0) {
    what = "read from";
    goto fail;
  }
  core_log(CORE_LOG_DEBUG, "dns: answering on udp %s",
           core_sockaddr_format((const struct sockaddr *)&udp->addr, text,
                                sizeof(text)));
  return 0;

fail:
  core_log(CORE_LOG_ERROR, "dns: cannot %s udp %s: %s", what,
           core_sockaddr_format((const struct sockaddr *)&udp->addr, text,
                                sizeof(text)),
           uv_strerror(err));
  return err;
}

int dns_server_start(uv_loop_t *loop, const reg_config_t *config,
                     const reg_t *reg, dns_server_t **out) {
  size_t n = config->dns.n_listen;
  dns_server_t *server = xcalloc(1, sizeof(*server) + n * sizeof(dns_udp_t));

  server->config = config;
  server->reg = reg;
  server->n_udp = n;
  for (size_t i = 0; i < BATCH; i++) {
    server->recv_iov[i].iov_base = server->recv_buf + i * RECV_CHUNK;
    server->recv_iov[i].iov_len = RECV_CHUNK;
    server->recv_msgs[i].msg_hdr.msg_iov = &server->recv_iov[i];
    server->recv_msgs[i].msg_hdr.msg_iovlen = 1;
  }
  if (config->dns.rrl_responses_per_second > 0) {
    uv_once(&shared_rrl_once, shared_rrl_create);
    server->rrl = shared_rrl;
  }
  for (size_t i = 0; i < n; i++) {
    server->udp[i].addr = config->dns.listen[i];
    int err = udp_start(loop, server, &server->udp[i]);
    if (err != 0) {
      dns_server_stop(server);
      return err;
    }
  }
  int err = dns_tcp_start(loop, config, reg, &server->tcp);
  if (err != 0) {
    dns_server_stop(server);
    return err;
  }
  *out = server;
  return 0;
}

void dns_server_stop(dns_server_t *server) {
  if (!server || server->stopping)
    return;
  server->stopping = true;
  dns_tcp_stop(server->tcp);
  server->tcp = NULL;
  if (server->n_open == 0) {
    free(server);
    return;
  }
  /* The last close callback frees the server. */
  for (size_t i = 0; i < server->n_udp; i++) {
    uv_handle_t *h = (uv_handle_t *)&server->udp[i].handle;
    /* A handle that never got through uv_poll_init has no data. */
    if (h->data == server)
      uv_close(h, on_close);
  }
}
