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

/* A pipe with nothing in it, from the worker's spares or a new one. */
static int take_pipe(px_server_t *server, px_pipe_t *pipe) {
  if (server->n_spare_pipes > 0) {
    *pipe = server->spare_pipes[--server->n_spare_pipes];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
    return -errno;
  pipe->rd = fds[0];
  pipe->wr = fds[1];
  pipe->len = 0;
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
    close(pipe->rd);
    close(pipe->wr);
  }
  pipe->rd = pipe->wr = -1;
  pipe->len = 0;
}

void px_pipes_free(px_server_t *server) {
  for (size_t i = 0; i < server->n_spare_pipes; i++) {
    close(server->spare_pipes[i].rd);
    close(server->spare_pipes[i].wr);
  }
  server->n_spare_pipes = 0;
}

ssize_t px_splice_in(px_server_t *server, px_pipe_t *pipe, int fd) {
  if (pipe->rd < 0) {
    int rc = take_pipe(server, pipe);
    if (rc != 0)
      return rc;
  }
  ssize_t n = splice(fd, NULL, pipe->wr, NULL, PX_SPLICE_CHUNK,
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

ssize_t px_splice_in(px_server_t *server, px_pipe_t *pipe, int fd) {
  (void)server;
  (void)pipe;
  (void)fd;
  return -ENOSYS;
}

ssize_t px_splice_out(px_server_t *server, px_pipe_t *pipe, int fd) {
  (void)server;
  (void)pipe;
  (void)fd;
  return -ENOSYS;
}

#endif
