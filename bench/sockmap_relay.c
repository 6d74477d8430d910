/* SPDX-License-Identifier: MIT */
/* sockmap_relay.c -- a TCP relay whose bytes never leave the kernel: both
 * sockets of a pair go into a BPF sockhash, and a BPF_PROG_TYPE_SK_SKB
 * verdict program sends every segment one socket receives straight out of
 * the other (bpf_sk_redirect_hash, egress). No routing, no limits, no
 * timeouts, and no backpressure: the kernel queues what the slower side
 * cannot take yet without bound (bench/README.md shows a stalled reader
 * holding a whole body in the relay). The bench runs it beside ddport in
 * the transfer scenario to show what forwarding in the kernel would reach
 * on this machine; it is a measuring instrument, not a proxy anybody
 * should deploy: beyond the unbounded queue, Linux lets only established
 * sockets into a sockhash, so a visitor whose FIN came before the pair
 * was set up is reset rather than relayed. Needs CAP_BPF and CAP_NET_ADMIN and
 * Linux 5.13 or later (BPF_SK_SKB_VERDICT). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "relay_common.h"

#define MAX_FDS 65536
#define MAP_ENTRIES 65536
/* How long a side's EOF waits for the bytes before it to leave through
 * the other socket before the FIN is passed on regardless. */
#define DRAIN_WAIT_MS 5000

/* One socket of a pair, indexed by its descriptor. */
typedef struct side {
  int peer; /* the pair's other socket; -1: this slot is free */
  bool eof; /* its FIN has been passed on to peer */
} side_t;

static side_t sides[MAX_FDS];

static int bpf_call(int cmd, union bpf_attr *attr) {
  return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off,
                            int32_t imm) {
  return (struct bpf_insn){
      .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

/* Creates the sockhash (key: a socket's cookie, value: the socket its
 * bytes go to) and attaches the verdict program to it. Returns the map's
 * descriptor or -1 with errno set. */
static int load_redirect(void) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = BPF_MAP_TYPE_SOCKHASH;
  attr.key_size = sizeof(uint64_t);
  attr.value_size = sizeof(uint32_t);
  attr.max_entries = MAP_ENTRIES;
  int map = bpf_call(BPF_MAP_CREATE, &attr);
  if (map < 0)
    return -1;
  /* r6 = skb; key = bpf_get_socket_cookie(skb) at r10-8;
   * return bpf_sk_redirect_hash(skb, map, &key, 0). A socket with no
   * entry gets SK_DROP, which only happens once its peer is closed. */
  struct bpf_insn prog[] = {
      insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),
      insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie),
      insn(BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0),
      insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
      insn(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map),
      insn(0, 0, 0, 0, 0),
      insn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),
      insn(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),
      insn(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),
      insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static char verifier_log[8192];
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SK_SKB;
  attr.insns = (uintptr_t)prog;
  attr.insn_cnt = sizeof prog / sizeof prog[0];
  attr.license = (uintptr_t) "GPL";
  attr.log_buf = (uintptr_t)verifier_log;
  attr.log_size = sizeof verifier_log;
  attr.log_level = 1;
  int fd = bpf_call(BPF_PROG_LOAD, &attr);
  if (fd < 0) {
    int err = errno;
    if (verifier_log[0])
      fprintf(stderr, "sockmap_relay: verifier: %s\n", verifier_log);
    close(map);
    errno = err;
    return -1;
  }
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t)map;
  attr.attach_bpf_fd = (uint32_t)fd;
  attr.attach_type = BPF_SK_SKB_VERDICT;
  int rc = bpf_call(BPF_PROG_ATTACH, &attr);
  int err = errno;
  close(fd); /* the map holds the program now */
  if (rc < 0) {
    close(map);
    errno = err;
    return -1;
  }
  return map;
}

static uint64_t cookie_of(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  (void)getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len);
  return cookie;
}

/* Makes the bytes fd receives leave through to, or with to < 0 forgets
 * fd's entry. */
static int redirect(int map, int fd, int to) {
  uint64_t key = cookie_of(fd);
  uint32_t value = (uint32_t)to;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (uint32_t)map;
  attr.key = (uintptr_t)&key;
  if (to < 0)
    return bpf_call(BPF_MAP_DELETE_ELEM, &attr);
  attr.value = (uintptr_t)&value;
  attr.flags = BPF_ANY;
  return bpf_call(BPF_MAP_UPDATE_ELEM, &attr);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Whether every byte from received has been queued on to (acknowledged
 * or in its send queue): the kernel forwards asynchronously, so a FIN
 * passed on before that would cut off the tail. */
static bool forwarded(int from, int to) {
  struct tcp_info in, out;
  socklen_t len_in = sizeof in, len_out = sizeof out;
  int queued = 0;
  if (getsockopt(from, IPPROTO_TCP, TCP_INFO, &in, &len_in) ||
      getsockopt(to, IPPROTO_TCP, TCP_INFO, &out, &len_out) ||
      ioctl(to, SIOCOUTQ, &queued))
    return true; /* nothing to wait for on a socket that failed */
  return out.tcpi_bytes_acked + (uint64_t)queued >= in.tcpi_bytes_received;
}

static void close_pair(int map, int fd, bool reset) {
  int peer = sides[fd].peer;
  (void)redirect(map, fd, -1);
  (void)redirect(map, peer, -1);
  if (reset) {
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  }
  sides[fd].peer = sides[peer].peer = -1;
  close(fd);
  close(peer);
}

/* fd reported an event: its FIN (pass it on once its bytes are out) or an
 * error (reset the peer). Reads nothing else: its bytes never reach
 * user space. */
static void on_side(int map, int epfd, int fd) {
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
  if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
    return;
  if (n < 0) {
    close_pair(map, fd, true);
    return;
  }
  int peer = sides[fd].peer;
  if (sides[fd].eof)
    return;
  uint64_t until = now_ms() + DRAIN_WAIT_MS;
  while (!forwarded(fd, peer) && now_ms() < until)
    usleep(1000);
  shutdown(peer, SHUT_WR);
  sides[fd].eof = true;
  epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); /* its EOF stays readable */
  if (sides[peer].eof)
    close_pair(map, fd, false);
}

static void on_accept(int map, int epfd, int lfd,
                      const struct sockaddr_in *origin) {
  int cfd, ofd;
  if (!relay_accept_pair(lfd, origin, &cfd, &ofd))
    return;
  if (cfd >= MAX_FDS || ofd >= MAX_FDS) {
    close(cfd);
    close(ofd);
    return;
  }
  sides[cfd] = (side_t){.peer = ofd};
  sides[ofd] = (side_t){.peer = cfd};
  /* The visitor's request may already wait in cfd: the kernel runs the
   * verdict over what a socket holds when it joins the map. */
  if (redirect(map, cfd, ofd) || redirect(map, ofd, cfd)) {
    fprintf(stderr, "sockmap_relay: map: %s\n", strerror(errno));
    close_pair(map, cfd, true);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
  ev.data.fd = cfd;
  epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ev);
  ev.data.fd = ofd;
  epoll_ctl(epfd, EPOLL_CTL_ADD, ofd, &ev);
}

int main(int argc, char **argv) {
  struct sockaddr_in origin;
  int lfd = relay_listen(argc, argv, "sockmap_relay", &origin);
  int map = load_redirect();
  if (map < 0) {
    fprintf(stderr,
            "sockmap_relay: BPF: %s (needs CAP_BPF and CAP_NET_ADMIN, "
            "Linux 5.13 or later)\n",
            strerror(errno));
    return 1;
  }
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev)) {
    fprintf(stderr, "sockmap_relay: epoll: %s\n", strerror(errno));
    return 1;
  }
  for (int i = 0; i < MAX_FDS; i++)
    sides[i].peer = -1;
  for (;;) {
    struct epoll_event events[64];
    int n = epoll_wait(epfd, events, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd)
        on_accept(map, epfd, lfd, &origin);
      else if (sides[fd].peer >= 0)
        on_side(map, epfd, fd);
    }
  }
}
