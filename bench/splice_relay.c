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

static int port_of(const char *text) {
  char *end;
  long v = strtol(text, &end, 10);
  return *end == '\0' && v > 0 && v < 65536 ? (int)v : -1;
}

int main(int argc, char **argv) {
  int listen_port = argc == 3 ? port_of(argv[1]) : -1;
  int origin_port = argc == 3 ? port_of(argv[2]) : -1;
  if (listen_port < 0 || origin_port < 0) {
    fprintf(stderr, "usage: splice_relay LISTEN_PORT ORIGIN_PORT "
                    "(both on 127.0.0.1)\n");
    return 2;
  }
  /* A visitor that closes first makes a write fail with EPIPE, which ends
   * that direction; the signal would end the process. */
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_in origin = addr;
  addr.sin_port = htons((uint16_t)listen_port);
  origin.sin_port = htons((uint16_t)origin_port);
  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
    fprintf(stderr, "splice_relay: 127.0.0.1:%d: %s\n", listen_port,
            strerror(errno));
    return 1;
  }
  for (;;) {
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EMFILE || errno == ENFILE)
        usleep(10000);
      continue;
    }
    int ofd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pair_t *pair = ofd >= 0 ? calloc(1, sizeof *pair) : NULL;
    if (!pair || connect(ofd, (struct sockaddr *)&origin, sizeof origin)) {
      free(pair);
      close(cfd);
      if (ofd >= 0)
        close(ofd);
      continue;
    }
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ofd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
