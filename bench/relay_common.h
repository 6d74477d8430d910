/* SPDX-License-Identifier: MIT */
/* relay_common.h -- what bench's reference relays (splice_relay.c,
 * sockmap_relay.c) share: their command line, their listening socket and
 * accepting a visitor together with a connection to the origin. The file
 * that includes it first includes <netinet/tcp.h> or <linux/tcp.h>,
 * whichever it needs (they clash), for TCP_NODELAY. */
#ifndef DDPORT_BENCH_RELAY_COMMON_H
#define DDPORT_BENCH_RELAY_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int relay_port_of(const char *text) {
  char *end;
  long v = strtol(text, &end, 10);
  return *end == '\0' && v > 0 && v < 65536 ? (int)v : -1;
}

/* Reads "LISTEN_PORT ORIGIN_PORT" (both on 127.0.0.1), ignores SIGPIPE (a
 * visitor that closes first makes a write fail with EPIPE; the signal
 * would end the process), fills origin and returns the listening socket.
 * Exits with a message on bad arguments (2) or a socket error (1). */
static int relay_listen(int argc, char **argv, const char *prog,
                        struct sockaddr_in *origin) {
  int listen_port = argc == 3 ? relay_port_of(argv[1]) : -1;
  int origin_port = argc == 3 ? relay_port_of(argv[2]) : -1;
  if (listen_port < 0 || origin_port < 0) {
    fprintf(stderr, "usage: %s LISTEN_PORT ORIGIN_PORT (both on 127.0.0.1)\n",
            prog);
    exit(2);
  }
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  *origin = addr;
  addr.sin_port = htons((uint16_t)listen_port);
  origin->sin_port = htons((uint16_t)origin_port);
  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
    fprintf(stderr, "%s: 127.0.0.1:%d: %s\n", prog, listen_port,
            strerror(errno));
    exit(1);
  }
  return lfd;
}

/* Accepts a visitor on lfd and connects to origin, both with TCP_NODELAY.
 * Returns false (nothing left open) when either fails; at the descriptor
 * limit it first sleeps 10 ms rather than spin. */
static bool relay_accept_pair(int lfd, const struct sockaddr_in *origin,
                              int *visitor, int *device) {
  int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (cfd < 0) {
    if (errno == EMFILE || errno == ENFILE)
      usleep(10000);
    return false;
  }
  int ofd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ofd < 0 ||
      connect(ofd, (const struct sockaddr *)origin, sizeof *origin)) {
    close(cfd);
    if (ofd >= 0)
      close(ofd);
    return false;
  }
  int one = 1;
  setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(ofd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *visitor = cfd;
  *device = ofd;
  return true;
}

#endif
