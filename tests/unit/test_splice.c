/* SPDX-License-Identifier: MIT */
/* test_splice.c -- spliced relays' pipes: growth within the page budget */
#include "proxy/proxy_int.h"
#include "tests/test.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 4096

/* A socket pair with CHUNK bytes waiting to be read from fds[0]. */
static void socket_with_bytes(int fds[2]) {
  static char bytes[CHUNK];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_EQ(write(fds[1], bytes, sizeof bytes), (ssize_t)sizeof bytes);
}

static px_server_t *server_with_budget(size_t pages) {
  reg_config_t config = {0};
  px_server_t *server = xcalloc(1, sizeof *server);
  server->limits = px_limits_new(&config);
  px_limits_set_pipe_budget(server->limits, pages);
  return server;
}

static void server_free(px_server_t *server) {
  px_pipes_free(server);
  px_limits_free(server->limits);
  free(server);
}

/* Splices CHUNK bytes into pipe; returns the pipe's size in the kernel. */
static int splice_chunk(px_server_t *server, px_pipe_t *pipe, bool bulk) {
  int fds[2];
  socket_with_bytes(fds);
  ASSERT_EQ(px_splice_in(server, pipe, fds[0], bulk), (ssize_t)CHUNK);
  close(fds[0]);
  close(fds[1]);
  return fcntl(pipe->rd, F_GETPIPE_SZ);
}

static size_t pages_per_grown_pipe(void) {
  return (PX_PIPE_BULK_SIZE - PX_PIPE_SIZE) / (size_t)sysconf(_SC_PAGESIZE);
}

/* Grown pipes take pages from the shared budget; once it is spent, bulk
 * relays splice through pipes of the default size, and pages come back
 * when a grown pipe is closed. */
static void test_budget_bounds_growth(void) {
  px_server_t *server = server_with_budget(2 * pages_per_grown_pipe());
  px_pipe_t pipes[3];
  for (int i = 0; i < 3; i++)
    pipes[i] = (px_pipe_t){.rd = -1, .wr = -1};
  /* Not bulk yet: no growth. */
  ASSERT_EQ(splice_chunk(server, &pipes[0], false), PX_PIPE_SIZE);
  ASSERT_EQ(splice_chunk(server, &pipes[0], true), PX_PIPE_BULK_SIZE);
  ASSERT_EQ(splice_chunk(server, &pipes[1], true), PX_PIPE_BULK_SIZE);
  /* The budget is spent. */
  ASSERT_EQ(splice_chunk(server, &pipes[2], true), PX_PIPE_SIZE);
  ASSERT_EQ(pipes[2].cap, (size_t)PX_PIPE_SIZE);
  /* Closing a grown pipe that still holds bytes gives its pages back. */
  px_pipe_release(server, &pipes[0]);
  ASSERT_EQ(server->n_spare_pipes, (size_t)0);
  ASSERT_EQ(splice_chunk(server, &pipes[2], true), PX_PIPE_BULK_SIZE);
  px_pipe_release(server, &pipes[1]);
  px_pipe_release(server, &pipes[2]);
  /* Nothing left taken: the whole budget is there again. */
  ASSERT(px_limits_take_pipe_pages(server->limits, 2 * pages_per_grown_pipe()));
  ASSERT(!px_limits_take_pipe_pages(server->limits, 1));
  px_limits_give_pipe_pages(server->limits, 2 * pages_per_grown_pipe());
  server_free(server);
}

/* An emptied grown pipe goes back to the spares as it is, its pages still
 * taken, and serves the next bulk read without growing again; closing the
 * spares gives the pages back. */
static void test_spares_keep_grown_pipes(void) {
  px_server_t *server = server_with_budget(pages_per_grown_pipe());
  px_pipe_t pipe = {.rd = -1, .wr = -1};
  ASSERT_EQ(splice_chunk(server, &pipe, true), PX_PIPE_BULK_SIZE);
  int out[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
  ASSERT_EQ(px_splice_out(server, &pipe, out[0]), (ssize_t)CHUNK);
  ASSERT_EQ(pipe.rd, -1);
  ASSERT_EQ(server->n_spare_pipes, (size_t)1);
  ASSERT(!px_limits_take_pipe_pages(server->limits, 1));
  ASSERT_EQ(splice_chunk(server, &pipe, false), PX_PIPE_BULK_SIZE);
  px_pipe_release(server, &pipe); /* still holds bytes: closed */
  ASSERT(px_limits_take_pipe_pages(server->limits, pages_per_grown_pipe()));
  px_limits_give_pipe_pages(server->limits, pages_per_grown_pipe());
  ASSERT_EQ(splice_chunk(server, &pipe, true), PX_PIPE_BULK_SIZE);
  ASSERT_EQ(px_splice_out(server, &pipe, out[0]), (ssize_t)CHUNK);
  px_pipes_free(server);
  ASSERT(px_limits_take_pipe_pages(server->limits, pages_per_grown_pipe()));
  close(out[0]);
  close(out[1]);
  server_free(server);
}

/* Without a budget set, a quarter of the user's soft pipe page limit. */
static void test_default_budget(void) {
  reg_config_t config = {0};
  px_limits_t *l = px_limits_new(&config);
  unsigned long soft = 0;
  FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "r");
  ASSERT(f != NULL);
  ASSERT_EQ(fscanf(f, "%lu", &soft), 1);
  fclose(f);
  size_t budget = (soft != 0 ? soft : 16384) / 4;
  ASSERT(px_limits_take_pipe_pages(l, budget));
  ASSERT(!px_limits_take_pipe_pages(l, 1));
  px_limits_give_pipe_pages(l, budget);
  px_limits_free(l);
}

int main(void) {
  RUN_TEST(test_budget_bounds_growth);
  RUN_TEST(test_spares_keep_grown_pipes);
  RUN_TEST(test_default_budget);
  return 0;
}
