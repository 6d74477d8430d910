/* SPDX-License-Identifier: MIT */
/* limits.c -- connection limits shared by all workers, without locks */
#include "proxy/proxy_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Per-source counts live in a count-min sketch: SKETCH_ROWS rows of
 * counters, each indexed by a different keyed hash of the source. A
 * source's count is the smallest of its counters, so it is never
 * under-counted, and over-counted only when every one of its counters is
 * shared with other busy sources. Fixed memory (2 MiB) whatever the number
 * of visitors, and only atomics. */
#define SKETCH_ROWS PX_SKETCH_ROWS
#define SKETCH_BITS 17
#define SKETCH_SIZE (1u << SKETCH_BITS)

struct px_limits {
  uint32_t max_total, max_per_source, max_peeking;
  uint64_t seed[SKETCH_ROWS];
  atomic_uint total, peeking;
  atomic_uint sketch[SKETCH_ROWS][SKETCH_SIZE];
  size_t max_pipe_pages;
  atomic_size_t pipe_pages;
};

/* Linux's default for /proc/sys/fs/pipe-user-pages-soft. */
#define PIPE_USER_PAGES_SOFT 16384

/* A quarter of the pages the kernel lets this user's pipes have before it
 * shrinks new ones (its default too where the limit is off, 0, or cannot
 * be read): the rest stays for default pipes, ours and other processes'. */
static size_t pipe_budget(void) {
  unsigned long soft = 0;
  FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "re");
  if (f != NULL) {
    if (fscanf(f, "%lu", &soft) != 1)
      soft = 0;
    fclose(f);
  }
  return (soft != 0 ? soft : PIPE_USER_PAGES_SOFT) / 4;
}

px_limits_t *px_limits_new(const reg_config_t *config) {
  px_limits_t *l = xcalloc(1, sizeof *l);
  l->max_total = config->proxy.max_connections;
  l->max_per_source = config->proxy.max_per_source;
  l->max_peeking = config->proxy.max_peeking;
  l->max_pipe_pages = pipe_budget();
  /* Secret seeds so a visitor cannot pick addresses that collide with a
   * victim's on purpose. */
  if (getrandom(l->seed, sizeof l->seed, 0) != sizeof l->seed)
    for (int row = 0; row < SKETCH_ROWS; row++)
      l->seed[row] = ((uint64_t)(uintptr_t)l ^ core_now_ms()) *
                     (0x9e3779b97f4a7c15ull + 2 * (uint64_t)row);
  return l;
}

void px_limits_free(px_limits_t *limits) {
  free(limits);
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* IPv4 sources count per address, IPv6 per /64: one subscriber usually
 * holds a whole /64. */
static void source_slots(const px_limits_t *l, const core_ip_t *ip,
                         uint32_t slots[SKETCH_ROWS]) {
  uint64_t key = 0;
  if (ip->family == AF_INET6)
    memcpy(&key, ip->bytes, 8);
  else
    memcpy(&key, ip->bytes, 4);
  key ^= (uint64_t)ip->family << 56;
  for (int row = 0; row < SKETCH_ROWS; row++)
    slots[row] = (uint32_t)(mix(key ^ l->seed[row]) >> (64 - SKETCH_BITS));
}

/* Takes one unit of counter unless that reaches max; true when taken. */
static bool take(atomic_uint *counter, uint32_t max) {
  return atomic_fetch_add_explicit(counter, 1, memory_order_relaxed) < max;
}

static void give(atomic_uint *counter) {
  atomic_fetch_sub_explicit(counter, 1, memory_order_relaxed);
}

px_limit_t px_limits_admit(px_limits_t *l, const core_ip_t *source,
                           px_admission_t *out) {
  source_slots(l, source, out->slots);
  if (!take(&l->total, l->max_total)) {
    give(&l->total);
    return PX_LIMIT_CONNECTIONS;
  }
  if (!take(&l->peeking, l->max_peeking)) {
    give(&l->peeking);
    give(&l->total);
    return PX_LIMIT_PEEKING;
  }
  bool under = false;
  for (int row = 0; row < SKETCH_ROWS; row++)
    under |= take(&l->sketch[row][out->slots[row]], l->max_per_source);
  if (!under) {
    for (int row = 0; row < SKETCH_ROWS; row++)
      give(&l->sketch[row][out->slots[row]]);
    give(&l->peeking);
    give(&l->total);
    return PX_LIMIT_PER_SOURCE;
  }
  out->peeking = true;
  return PX_LIMIT_NONE;
}

void px_limits_peek_done(px_limits_t *l, px_admission_t *admission) {
  if (admission->peeking) {
    admission->peeking = false;
    give(&l->peeking);
  }
}

void px_limits_release(px_limits_t *l, px_admission_t *admission) {
  px_limits_peek_done(l, admission);
  for (int row = 0; row < SKETCH_ROWS; row++)
    give(&l->sketch[row][admission->slots[row]]);
  give(&l->total);
}

bool px_limits_take_pipe_pages(px_limits_t *l, size_t pages) {
  size_t had =
      atomic_fetch_add_explicit(&l->pipe_pages, pages, memory_order_relaxed);
  if (had + pages <= l->max_pipe_pages)
    return true;
  px_limits_give_pipe_pages(l, pages);
  return false;
}

void px_limits_give_pipe_pages(px_limits_t *l, size_t pages) {
  atomic_fetch_sub_explicit(&l->pipe_pages, pages, memory_order_relaxed);
}

void px_limits_set_pipe_budget(px_limits_t *l, size_t pages) {
  l->max_pipe_pages = pages;
}
