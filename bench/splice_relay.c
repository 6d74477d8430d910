/* SPDX-License-Identifier: MIT */
/* splice_relay.c -- the least a user-space TCP relay can do: no routing,
 * no limits, no timeouts; one blocking thread per direction moving bytes
 * socket to pipe to socket with splice(2) through a 1 MiB pipe. The bench
 * runs it beside ddport in the transfer scenario as a floor: what a second
 * loopback TCP hop costs on this machine whatever the proxy's design. It
 * is a measuring instrument, not a proxy anybody should deploy. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_common.h"

#define PIPE_BYTES (1024 * 1024)

typedef struct pair pair_t;

typedef struct direction {
  int from, to;
  pair_t *pair;
  pthread_t thread;
} direction_t;

struct pair {
  direction_t up, down; /* visitor to origin, origin to visitor */
  int done;             /* directions finished, under pair_lock */
};

static pthread_mutex_t pair_lock = PTHREAD_MUTEX_INITIALIZER;

/* Moves n bytes from the pipe to fd. Returns false if fd failed. */
static bool drain(int pipe_rd, int fd, ssize_t n) {
  while (n > 0) {
    ssize_t w = splice(pipe_rd, NULL, fd, NULL, (size_t)n, SPLICE_F_MOVE);
    if (w <= 0)
      return false;
    n -= w;
  }
  return true;
}

/* The last of a pair's two directions closes both sockets and frees it. */
static void finish(pair_t *pair) {
  pthread_mutex_lock(&pair_lock);
  int last = ++pair->done == 2;
  pthread_mutex_unlock(&pair_lock);
  if (!last)
    return;
  close(pair->up.from);
  close(pair->up.to);
  free(pair);
}

static void *relay(void *arg) {
  direction_t *d = arg;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) == 0) {
    (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
    for (;;) {
      ssize_t n =
          splice(d->from, NULL, fds[1], NULL, PIPE_BYTES, SPLICE_F_MOVE);
      if (n <= 0 || !drain(fds[0], d->to, n))
        break;
    }
    close(fds[0]);
    close(fds[1]);
  }
  shutdown(d->to, SHUT_WR);
  finish(d->pair);
  return NULL;
}

static int start(direction_t *d) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  int rc = pthread_create(&d->thread, &attr, relay, d);
  pthread_attr_destroy(&attr);
  return rc;
}

int main(int argc, char **argv) {
  struct sockaddr_in origin;
  int lfd = relay_listen(argc, argv, "splice_relay", &origin);
  for (;;) {
    int cfd, ofd;
    if (!relay_accept_pair(lfd, &origin, &cfd, &ofd))
      continue;
    pair_t *pair = calloc(1, sizeof *pair);
    if (!pair) {
      close(cfd);
      close(ofd);
      continue;
    }
    pair->up = (direction_t){.from = cfd, .to = ofd, .pair = pair};
    pair->down = (direction_t){.from = ofd, .to = cfd, .pair = pair};
    if (start(&pair->up) != 0) {
      close(cfd);
      close(ofd);
      free(pair);
      continue;
    }
    if (start(&pair->down) != 0) {
      /* Counted as finished; the up direction, cut short, frees the
       * pair when it ends. */
      shutdown(cfd, SHUT_RDWR);
      shutdown(ofd, SHUT_RDWR);
      finish(pair);
    }
  }
}
