/* SPDX-License-Identifier: MIT */
/* splice.c -- moving relayed bytes socket to pipe to socket with splice(2) */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

bool px_splice_enabled(const reg_config_t *config) {
#ifdef __linux__
  /* auto: bench/ measured half the CPU per GiB of copying; connections
   * move to splice only once a bulk transfer shows (conn.c), so short
   * exchanges cost what copying costs. */
  return config->proxy.splice != REG_SPLICE_OFF;
#else
  (void)config;
  return false;
#endif
}

#ifdef __linux__

/* Pages a pipe of cap bytes holds beyond a default one. */
static size_t pages_over_default(size_t cap) {
  return (cap - PX_PIPE_SIZE) / (size_t)sysconf(_SC_PAGESIZE);
}

static void close_pipe(px_server_t *server, px_pipe_t *pipe) {
  close(pipe->rd);
  close(pipe->wr);
  if (pipe->cap > PX_PIPE_SIZE)
    px_limits_give_pipe_pages(server->limits, pages_over_default(pipe->cap));
}

/* Sixteen times a default pipe: a bulk transfer moves its bytes in a
 * fraction of the splice(2) calls. Only while the budget lasts, which keeps
 * this user's pipes clear of the kernel's soft limit (see
 * px_limits_take_pipe_pages); where the kernel refuses all the same, the
 * pipe stays as it is. */
static void grow_pipe(px_server_t *server, px_pipe_t *pipe) {
  size_t pages = pages_over_default(PX_PIPE_BULK_SIZE);
  if (!px_limits_take_pipe_pages(server->limits, pages))
    return;
  if (fcntl(pipe->wr, F_SETPIPE_SZ, PX_PIPE_BULK_SIZE) != PX_PIPE_BULK_SIZE) {
    px_limits_give_pipe_pages(server->limits, pages);
    pipe->fixed = true;
    return;
  }
  pipe->cap = PX_PIPE_BULK_SIZE;
}

/* A pipe with nothing in it, from the worker's spares or a new one. */
static int take_pipe(px_server_t *server, px_pipe_t *pipe) {
  if (server->n_spare_pipes > 0) {
    *pipe = server->spare_pipes[--server->n_spare_pipes];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
    return -errno;
  *pipe = (px_pipe_t){.rd = fds[0], .wr = fds[1], .cap = PX_PIPE_SIZE};
  return 0;
}

void px_pipe_release(px_server_t *server, px_pipe_t *pipe) {
  if (pipe->rd < 0)
    return;
  /* Bytes left in a pipe belong to a closed connection: only an empty
   * pipe may serve another. */
  if (pipe->len == 0 && server->n_spare_pipes < PX_SPARE_PIPES) {
    server->spare_pipes[server->n_spare_pipes++] = *pipe;
  } else {
    close_pipe(server, pipe);
  }
  pipe->rd = pipe->wr = -1;
  pipe->len = 0;
}

void px_pipes_free(px_server_t *server) {
  for (size_t i = 0; i < server->n_spare_pipes; i++)
    close_pipe(server, &server->spare_pipes[i]);
  server->n_spare_pipes = 0;
}

ssize_t px_splice_in(px_server_t *server, px_pipe_t *pipe, int fd, bool bulk) {
  if (pipe->rd < 0) {
    int rc = take_pipe(server, pipe);
    if (rc != 0)
      return rc;
  }
  if (bulk && pipe->cap < PX_PIPE_BULK_SIZE && !pipe->fixed)
    grow_pipe(server, pipe);
  ssize_t n = splice(fd, NULL, pipe->wr, NULL, pipe->cap,
                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n < 0)
    n = -errno;
  if (n > 0)
    pipe->len += (size_t)n;
  /* A connection holds a pipe only while bytes wait in it. */
  if (pipe->len == 0)
    px_pipe_release(server, pipe);
  return n;
}

ssize_t px_splice_out(px_server_t *server, px_pipe_t *pipe, int fd) {
  ssize_t n = splice(pipe->rd, NULL, fd, NULL, pipe->len,
                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n < 0)
    return -errno;
  pipe->len -= (size_t)n;
  if (pipe->len == 0)
    px_pipe_release(server, pipe);
  return n;
}

#else

void px_pipe_release(px_server_t *server, px_pipe_t *pipe) {
  (void)server;
  (void)pipe;
}

void px_pipes_free(px_server_t *server) {
  (void)server;
}

ssize_t px_splice_in(px_server_t *server, px_pipe_t *pipe, int fd, bool bulk) {
  (void)server;
  (void)pipe;
  (void)fd;
  (void)bulk;
  return -ENOSYS;
}

ssize_t px_splice_out(px_server_t *server, px_pipe_t *pipe, int fd) {
  (void)server;
  (void)pipe;
  (void)fd;
  return -ENOSYS;
}

#endif
