/* SPDX-License-Identifier: MIT */
/* dns_floor.c -- the least a UDP DNS server can do: no zone, no lookup,
 * no answer. Each of THREADS threads has its own SO_REUSEPORT socket on
 * 127.0.0.1:PORT, takes up to 64 datagrams with one recvmmsg(2), turns
 * every query into its own reply (QR and AA set, RCODE NOERROR, the
 * message otherwise as it came, question and OPT record included) and
 * sends the batch back with one sendmmsg(2). The bench runs it in the DNS
 * scenario beside ddport, NSD and Knot as a floor: what the client and
 * the kernel's UDP path alone leave on this machine for a server's own
 * work. Its answers are not the zone's (every name gets NOERROR and no
 * records), so it is a measuring instrument, not a DNS server.
 *
 * It gets ddport's own UDP socket and the scheduling the bench gives
 * ddport (cpu_affinity: on and cpu_scheduling: batch), through ddport's
 * own functions: thread i runs
 * on the i-th CPU of the process, its socket takes the packets that CPU
 * handles, and the threads run under SCHED_BATCH. Without that a floor
 * would measure the scheduler rather than the work it leaves out. */
#include "core/core.h"
#include "dns/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define MAX_MESSAGE 1232 /* a query larger than this is dropped */
#define MAX_THREADS 64

/* ddport's own worker socket (dns_udp_socket_open: SO_REUSEPORT, the
 * receive buffer, steered by CPU once core_affinity_plan has run), made
 * blocking: a thread here waits in recvmmsg rather than in a loop. */
static int open_socket(int port) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in *addr = (struct sockaddr_in *)&ss;
  *addr = (struct sockaddr_in){.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = dns_udp_socket_open(&ss);
  int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
  if (fd < 0 || flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fprintf(stderr, "dns_floor: 127.0.0.1:%d: %s\n", port,
            strerror(fd < 0 ? -fd : errno));
    exit(1);
  }
  return fd;
}

struct worker {
  unsigned id;
  int fd;
};

/* Pinned and batched as a ddport worker is; a failure is said once per
 * thread and the thread serves anyway, as ddport's workers do. */
static void schedule_like_ddport(unsigned id) {
  int rc = core_affinity_pin(id);
  if (rc != 0)
    fprintf(stderr, "dns_floor: thread %u: cannot pin to CPU %d: %s\n", id,
            core_affinity_cpu(id), strerror(-rc));
  rc = core_sched_batch();
  if (rc != 0)
    fprintf(stderr, "dns_floor: thread %u: no SCHED_BATCH: %s\n", id,
            strerror(-rc));
}

/* Replies to every query its socket receives, a batch at a time, forever. */
static void *serve(void *arg) {
  const struct worker *w = arg;
  int fd = w->fd;
  schedule_like_ddport(w->id);
  static __thread uint8_t bufs[BATCH][MAX_MESSAGE];
  static __thread struct sockaddr_in peers[BATCH];
  struct iovec iov[BATCH];
  struct mmsghdr in[BATCH], out[BATCH];
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i] = (struct iovec){bufs[i], MAX_MESSAGE};
      in[i].msg_hdr = (struct msghdr){.msg_name = &peers[i],
                                      .msg_namelen = sizeof peers[i],
                                      .msg_iov = &iov[i],
                                      .msg_iovlen = 1};
    }
    int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
    if (n < 0) {
      if (errno != EINTR)
        usleep(1000);
      continue;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
      uint8_t *msg = bufs[i];
      if (in[i].msg_len < 12 || (in[i].msg_hdr.msg_flags & MSG_TRUNC) ||
          (msg[2] & 0x80)) /* too short, too long, or not a query */
        continue;
      msg[2] = (uint8_t)(msg[2] | 0x84); /* QR, AA; opcode and RD kept */
      msg[3] = 0;                        /* RA clear, RCODE NOERROR */
      iov[i].iov_len = in[i].msg_len;
      out[m].msg_hdr = in[i].msg_hdr;
      out[m].msg_hdr.msg_iov = &iov[i];
      m++;
    }
    for (int sent = 0; sent < m;) {
      int k = sendmmsg(fd, out + sent, (unsigned)(m - sent), 0);
      if (k <= 0)
        break; /* a full send buffer drops the rest, like any UDP server */
      sent += k;
    }
  }
  return NULL;
}

static long number_of(const char *text, long max) {
  char *end;
  long v = strtol(text, &end, 10);
  return *end == '\0' && v > 0 && v <= max ? v : -1;
}

int main(int argc, char **argv) {
  long port = argc == 3 ? number_of(argv[1], 65535) : -1;
  long threads = argc == 3 ? number_of(argv[2], MAX_THREADS) : -1;
  if (port < 0 || threads < 0) {
    fprintf(stderr,
            "usage: dns_floor PORT THREADS (on 127.0.0.1; at most "
            "%d threads)\n",
            MAX_THREADS);
    return 2;
  }
  unsigned n_cpus;
  int rc = core_affinity_plan((unsigned)threads, &n_cpus);
  if (rc != 0) {
    fprintf(stderr, "dns_floor: %ld threads on %u CPUs: %s\n", threads, n_cpus,
            strerror(-rc));
    return 1;
  }
  static pthread_t tid[MAX_THREADS];
  static struct worker workers[MAX_THREADS];
  /* Socket i is the group's index i, which the steering maps to CPU i. */
  for (long i = 0; i < threads; i++)
    workers[i] = (struct worker){(unsigned)i, open_socket((int)port)};
  for (long i = 0; i < threads; i++) {
    if (pthread_create(&tid[i], NULL, serve, &workers[i]) != 0) {
      fprintf(stderr, "dns_floor: cannot start a thread\n");
      return 1;
    }
  }
  for (long i = 0; i < threads; i++)
    pthread_join(tid[i], NULL);
  return 0;
}
