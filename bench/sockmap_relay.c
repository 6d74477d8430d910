/* SPDX-License-Identifier: MIT */
/* sockmap_relay.c -- a TCP relay whose bytes stay in the kernel while the
 * receiver keeps up: both sockets of a pair go into a BPF sockhash, and a
 * BPF_PROG_TYPE_SK_SKB verdict program sends each segment one socket
 * receives straight out of the other (bpf_sk_redirect_hash, egress).
 *
 * Linux queues such redirects without limit (bench/README.md shows a
 * stalled reader letting an unbounded relay take a whole 300 MB body), so
 * the program keeps a byte budget per direction: it redirects while what
 * it has sent on, less what the far end has acknowledged, stays under
 * BUDGET_BYTES. Past it, it passes segments to the socket itself, where
 * they wait for this process like any received bytes (the socket's
 * receive buffer fills and TCP's window closes), and it goes on passing
 * until the process has read and written on everything passed; only then
 * does it redirect again, so bytes never overtake each other. Every
 * TICK_MS the process raises each direction's budget by what the far end
 * has acknowledged since.
 *
 * No routing, limits or timeouts: the bench runs it beside ddport in the
 * transfer scenario to show what forwarding in the kernel reaches on this
 * machine; it is a measuring instrument, not a proxy anybody should
 * deploy. Linux lets only established sockets into a sockhash, so a
 * visitor whose FIN came before the pair was set up is reset rather than
 * relayed. Needs CAP_BPF and CAP_NET_ADMIN and Linux 5.13 or later
 * (BPF_SK_SKB_VERDICT). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "relay_common.h"

#define MAX_FDS 65536 /* sockets this relay holds at once (a slot each) */
/* What one direction may have sent on in the kernel and not yet had
 * acknowledged by the far end. */
#define BUDGET_BYTES (4u << 20)
#define TICK_MS 1
#define CHUNK 65536 /* bytes a side reads at a time once it passes */

/* One direction, shared with the BPF program through a mapped array
 * (indexed by the source socket's descriptor). The program adds to
 * redirected and passed; this process sets the rest. */
typedef struct budget {
  uint64_t peer_cookie; /* the socket its bytes go to (the sockhash key) */
  uint64_t redirected;  /* bytes the program has sent on in the kernel */
  uint64_t allowed;     /* redirected may not pass this */
  uint64_t passed;      /* bytes the program left to this process */
  uint64_t consumed;    /* of those, bytes read and written on */
} budget_t;

/* Where the program finds a field. */
#define B_REDIRECTED offsetof(budget_t, redirected)
#define B_ALLOWED offsetof(budget_t, allowed)
#define B_PASSED offsetof(budget_t, passed)
#define B_CONSUMED offsetof(budget_t, consumed)

/* One socket of a pair, indexed by its descriptor: the direction it is
 * the source of. */
typedef struct side {
  int peer;      /* the pair's other socket; -1: this slot is free */
  bool eof;      /* its FIN has been read */
  bool fin_sent; /* and passed on to peer */
  char *buf;     /* passed bytes read but not yet written on, or NULL */
  size_t off, len;
} side_t;

typedef struct relay {
  int socks;   /* sockhash: a socket's cookie -> the socket */
  int slots;   /* hash: a socket's cookie -> its descriptor */
  int budgets; /* array of budget_t by descriptor, mapped at budget */
  volatile budget_t *budget;
  int epfd;
  int max_fd; /* highest descriptor in use, for the ticks */
} relay_t;

static side_t sides[MAX_FDS];

static int bpf_call(int cmd, union bpf_attr *attr) {
  return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off,
                            int32_t imm) {
  return (struct bpf_insn){
      .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

static int map_create(uint32_t type, uint32_t key, uint32_t value,
                      uint32_t flags) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = type;
  attr.key_size = key;
  attr.value_size = value;
  attr.max_entries = MAX_FDS;
  attr.map_flags = flags;
  return bpf_call(BPF_MAP_CREATE, &attr);
}

/* The verdict program, run on every segment a socket in socks receives:
 *
 *   key = cookie(skb); slot = slots[key]; b = budgets[slot]
 *   (no entry: SK_PASS)
 *   if b.passed == b.consumed && b.redirected + len <= b.allowed:
 *     b.redirected += len; return redirect_hash(skb, socks, &b.peer_cookie)
 *   b.passed += len; return SK_PASS
 */
static int load_program(const relay_t *r) {
  enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP };
#define MOV_X(d, s) insn(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define ADD_K(d, k) insn(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, k)
#define ADD_X(d, s) insn(BPF_ALU64 | BPF_ADD | BPF_X, d, s, 0, 0)
#define LOAD(sz, d, s, o) insn(BPF_LDX | BPF_MEM | (sz), d, s, o, 0)
#define STORE(sz, d, s, o) insn(BPF_STX | BPF_MEM | (sz), d, s, o, 0)
#define CALL(f) insn(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define MAP(d, fd)                                                             \
  insn(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd),                \
      insn(0, 0, 0, 0, 0)
  struct bpf_insn prog[] = {
      /* 0 */ MOV_X(R6, R1),
      /* 1 */ CALL(BPF_FUNC_get_socket_cookie),
      /* 2 */ STORE(BPF_DW, FP, R0, -8),
      /* 3 */ MAP(R1, r->slots),
      /* 5 */ MOV_X(R2, FP),
      /* 6 */ ADD_K(R2, -8),
      /* 7 */ CALL(BPF_FUNC_map_lookup_elem),
      /* 8 */ insn(BPF_JMP | BPF_JEQ | BPF_K, R0, 0, 37 - 9, 0),
      /* 9 */ LOAD(BPF_W, R1, R0, 0),
      /* 10 */ STORE(BPF_W, FP, R1, -12),
      /* 11 */ MAP(R1, r->budgets),
      /* 13 */ MOV_X(R2, FP),
      /* 14 */ ADD_K(R2, -12),
      /* 15 */ CALL(BPF_FUNC_map_lookup_elem),
      /* 16 */ insn(BPF_JMP | BPF_JEQ | BPF_K, R0, 0, 37 - 17, 0),
      /* 17 */ MOV_X(R7, R0),
      /* 18 */ LOAD(BPF_W, R2, R6, offsetof(struct __sk_buff, len)),
      /* 19 */ LOAD(BPF_DW, R1, R7, B_PASSED),
      /* 20 */ LOAD(BPF_DW, R3, R7, B_CONSUMED),
      /* 21 */ insn(BPF_JMP | BPF_JNE | BPF_X, R1, R3, 34 - 22, 0),
      /* 22 */ LOAD(BPF_DW, R1, R7, B_REDIRECTED),
      /* 23 */ ADD_X(R1, R2),
      /* 24 */ LOAD(BPF_DW, R3, R7, B_ALLOWED),
      /* 25 */ insn(BPF_JMP | BPF_JGT | BPF_X, R1, R3, 34 - 26, 0),
      /* 26 */ STORE(BPF_DW, R7, R1, B_REDIRECTED),
      /* 27 */ MOV_X(R1, R6),
      /* 28 */ MAP(R2, r->socks),
      /* 30 */ MOV_X(R3, R7),
      /* 31 */ insn(BPF_ALU64 | BPF_MOV | BPF_K, R4, 0, 0, 0),
      /* 32 */ CALL(BPF_FUNC_sk_redirect_hash),
      /* 33 */ insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
      /* 34 */ LOAD(BPF_DW, R1, R7, B_PASSED),
      /* 35 */ ADD_X(R1, R2),
      /* 36 */ STORE(BPF_DW, R7, R1, B_PASSED),
      /* 37 */ insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, SK_PASS),
      /* 38 */ insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
#undef MOV_X
#undef ADD_K
#undef ADD_X
#undef LOAD
#undef STORE
#undef CALL
#undef MAP
  static char verifier_log[16384];
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SK_SKB;
  attr.insns = (uintptr_t)prog;
  attr.insn_cnt = sizeof prog / sizeof prog[0];
  attr.license = (uintptr_t) "GPL";
  attr.log_buf = (uintptr_t)verifier_log;
  attr.log_size = sizeof verifier_log;
  attr.log_level = 1;
  int fd = bpf_call(BPF_PROG_LOAD, &attr);
  if (fd < 0 && verifier_log[0])
    fprintf(stderr, "sockmap_relay: verifier: %s\n", verifier_log);
  return fd;
}

/* Creates the maps, maps the budgets and attaches the program to socks.
 * Returns 0 or -1 with errno set. */
static int relay_load(relay_t *r) {
  r->socks = map_create(BPF_MAP_TYPE_SOCKHASH, 8, 4, 0);
  r->slots = map_create(BPF_MAP_TYPE_HASH, 8, 4, 0);
  r->budgets =
      map_create(BPF_MAP_TYPE_ARRAY, 4, sizeof(budget_t), BPF_F_MMAPABLE);
  if (r->socks < 0 || r->slots < 0 || r->budgets < 0)
    return -1;
  void *mem = mmap(NULL, (size_t)MAX_FDS * sizeof(budget_t),
                   PROT_READ | PROT_WRITE, MAP_SHARED, r->budgets, 0);
  if (mem == MAP_FAILED)
    return -1;
  r->budget = mem;
  int prog = load_program(r);
  if (prog < 0)
    return -1;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t)r->socks;
  attr.attach_bpf_fd = (uint32_t)prog;
  attr.attach_type = BPF_SK_SKB_VERDICT;
  int rc = bpf_call(BPF_PROG_ATTACH, &attr);
  int err = errno;
  close(prog); /* the map holds the program now */
  errno = err;
  return rc;
}

static uint64_t cookie_of(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  (void)getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len);
  return cookie;
}

/* Puts value (NULL: deletes the entry) under key in map. */
static int map_set(int map, const void *key, const void *value) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (uint32_t)map;
  attr.key = (uintptr_t)key;
  if (!value)
    return bpf_call(BPF_MAP_DELETE_ELEM, &attr);
  attr.value = (uintptr_t)value;
  attr.flags = BPF_ANY;
  return bpf_call(BPF_MAP_UPDATE_ELEM, &attr);
}

/* Bytes fd's far end has acknowledged, and (in *queued, if not NULL)
 * those plus what waits in its send queue: all fd was ever given. */
static uint64_t acked(int fd, uint64_t *queued) {
  struct tcp_info info;
  socklen_t len = sizeof info;
  int outq = 0;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len))
    info.tcpi_bytes_acked = 0;
  if (queued) {
    (void)ioctl(fd, SIOCOUTQ, &outq);
    *queued = info.tcpi_bytes_acked + (uint64_t)(outq > 0 ? outq : 0);
  }
  return info.tcpi_bytes_acked;
}

static void close_pair(relay_t *r, int fd, bool reset) {
  int peer = sides[fd].peer;
  int both[2] = {fd, peer};
  for (int i = 0; i < 2; i++) {
    uint64_t key = cookie_of(both[i]);
    (void)map_set(r->socks, &key, NULL);
    (void)map_set(r->slots, &key, NULL);
    free(sides[both[i]].buf);
    sides[both[i]] = (side_t){.peer = -1};
  }
  if (reset) {
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  }
  close(fd);
  close(peer);
}

/* Moves what the program passed to fd on to its peer, in order: only
 * once all it redirected is in the peer's send queue, and only as fast as
 * the peer takes it (what stays unread keeps fd's window closed). Passes
 * fd's FIN on the same way. Returns false if it closed the pair. */
static bool pump(relay_t *r, int fd) {
  side_t *s = &sides[fd];
  volatile budget_t *b = &r->budget[fd];
  for (int round = 0; round < 64 && !s->fin_sent; round++) {
    if (s->len > 0) {
      ssize_t w =
          send(s->peer, s->buf + s->off, s->len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
      if (w < 0) {
        close_pair(r, fd, true);
        return false;
      }
      s->off += (size_t)w;
      s->len -= (size_t)w;
      b->consumed += (uint64_t)w; /* the program may redirect again */
      continue;
    }
    uint64_t queued;
    (void)acked(s->peer, &queued);
    if (queued < b->redirected + b->consumed)
      return true; /* the kernel is still sending on; the tick retries */
    if (s->eof) {
      shutdown(s->peer, SHUT_WR);
      s->fin_sent = true;
      break;
    }
    if (!s->buf && !(s->buf = malloc(CHUNK)))
      return true;
    ssize_t n = recv(fd, s->buf, CHUNK, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return true;
    if (n < 0) {
      close_pair(r, fd, true);
      return false;
    }
    s->eof = n == 0;
    s->off = 0;
    s->len = (size_t)n;
  }
  if (s->fin_sent && sides[s->peer].fin_sent) {
    close_pair(r, fd, false);
    return false;
  }
  return true;
}

/* Every TICK_MS: each direction may have BUDGET_BYTES on their way and
 * not acknowledged, counting what this process wrote on too. */
static void tick(relay_t *r) {
  for (int fd = 0; fd <= r->max_fd; fd++) {
    if (sides[fd].peer < 0 || sides[fd].fin_sent)
      continue;
    volatile budget_t *b = &r->budget[fd];
    uint64_t ack = acked(sides[fd].peer, NULL);
    uint64_t consumed = b->consumed;
    b->allowed =
        ack + BUDGET_BYTES > consumed ? ack + BUDGET_BYTES - consumed : 0;
    (void)pump(r, fd);
  }
}

static void on_accept(relay_t *r, int lfd, const struct sockaddr_in *origin) {
  int cfd, ofd;
  if (!relay_accept_pair(lfd, origin, &cfd, &ofd))
    return;
  if (cfd >= MAX_FDS || ofd >= MAX_FDS) {
    close(cfd);
    close(ofd);
    return;
  }
  int both[2] = {cfd, ofd};
  sides[cfd] = (side_t){.peer = ofd};
  sides[ofd] = (side_t){.peer = cfd};
  for (int i = 0; i < 2; i++) {
    int fd = both[i];
    r->budget[fd] = (budget_t){.peer_cookie = cookie_of(sides[fd].peer),
                               .allowed = BUDGET_BYTES};
    uint64_t key = cookie_of(fd);
    uint32_t slot = (uint32_t)fd;
    if (map_set(r->slots, &key, &slot)) {
      fprintf(stderr, "sockmap_relay: map: %s\n", strerror(errno));
      close_pair(r, cfd, true);
      return;
    }
    if (fd > r->max_fd)
      r->max_fd = fd;
  }
  /* The visitor's request may already wait in cfd: the kernel runs the
   * verdict over what a socket holds when it joins the map. */
  for (int i = 0; i < 2; i++) {
    uint64_t key = cookie_of(both[i]);
    uint32_t value = (uint32_t)both[i];
    if (map_set(r->socks, &key, &value)) {
      fprintf(stderr, "sockmap_relay: map: %s\n", strerror(errno));
      close_pair(r, cfd, true);
      return;
    }
  }
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev = {.events =
                                 EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.fd = both[i]};
    epoll_ctl(r->epfd, EPOLL_CTL_ADD, both[i], &ev);
  }
}

int main(int argc, char **argv) {
  struct sockaddr_in origin;
  int lfd = relay_listen(argc, argv, "sockmap_relay", &origin);
  relay_t r = {.max_fd = -1};
  if (relay_load(&r)) {
    fprintf(stderr,
            "sockmap_relay: BPF: %s (needs CAP_BPF and CAP_NET_ADMIN, "
            "Linux 5.13 or later)\n",
            strerror(errno));
    return 1;
  }
  r.epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  if (r.epfd < 0 || epoll_ctl(r.epfd, EPOLL_CTL_ADD, lfd, &ev)) {
    fprintf(stderr, "sockmap_relay: epoll: %s\n", strerror(errno));
    return 1;
  }
  for (int i = 0; i < MAX_FDS; i++)
    sides[i].peer = -1;
  for (;;) {
    struct epoll_event events[64];
    int n = epoll_wait(r.epfd, events, 64, TICK_MS);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        on_accept(&r, lfd, &origin);
        continue;
      }
      /* Readable: fd's own passed bytes or FIN; writable: room for the
       * peer's. */
      int peer = sides[fd].peer;
      if (peer >= 0 && pump(&r, fd) && sides[peer].peer == fd)
        (void)pump(&r, peer);
    }
    tick(&r);
  }
}
