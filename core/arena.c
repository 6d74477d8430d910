/* SPDX-License-Identifier: MIT */
/* arena.c -- memory for millions of small objects that live and die
 * together: no per-object allocation or header, freed in one go. */
#include "core/core.h"

#include <stdint.h>
#include <string.h>

#define CHUNK_MIN ((size_t)64 * 1024)
#define CHUNK_MAX ((size_t)32 * 1024 * 1024)

struct core_arena_chunk {
  struct core_arena_chunk *next;
  size_t size, used;
};

#define LINE 64

/* Bytes to skip from used (a multiple of 8, under a line) so that a block
 * placed there has [at, at + len) in one cache line; none when no 8-byte
 * aligned place does. */
static size_t fit_pad(const core_arena_chunk_t *c, size_t at, size_t len) {
  for (size_t pad = 0; len > 0 && pad < LINE; pad += 8)
    if (((uintptr_t)c + c->used + pad + at) % LINE + len <= LINE)
      return pad;
  return 0;
}

void *core_arena_alloc(core_arena_t *a, size_t size) {
  return core_arena_alloc_fit(a, size, 0, 0);
}

void *core_arena_alloc_fit(core_arena_t *a, size_t size, size_t at,
                           size_t len) {
  core_arena_chunk_t *c = a->chunks;
  size = core_align_up(size, 8);
  size_t pad = c != NULL ? fit_pad(c, at, len) : 0;
  if (c == NULL || c->size - c->used < size + pad) {
    /* Chunks double up to CHUNK_MAX: a small table stays small, and a big
     * one is carved from few mappings, on huge pages (xbig_alloc). */
    size_t want = a->next_size ? a->next_size : CHUNK_MIN;
    if (want < CHUNK_MAX)
      a->next_size = want * 2;
    size_t need = core_align_up(sizeof *c, 8) + size + LINE;
    want = core_align_up(want > need ? want : need, CHUNK_MIN);
    c = xbig_alloc(want);
    c->size = want;
    c->used = core_align_up(sizeof *c, 8);
    c->next = a->chunks;
    a->chunks = c;
    pad = fit_pad(c, at, len);
  }
  c->used += pad;
  void *p = (char *)c + c->used;
  c->used += size;
  return p;
}

char *core_arena_strndup(core_arena_t *a, const char *s, size_t len) {
  char *p = core_arena_alloc(a, len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

size_t core_arena_chunks(const core_arena_t *a, void **out, size_t max) {
  size_t n = 0;
  for (core_arena_chunk_t *c = a->chunks; c != NULL; c = c->next, n++)
    if (n < max)
      out[n] = c;
  return n;
}

void core_arena_free(core_arena_t *a) {
  for (core_arena_chunk_t *c = a->chunks, *next; c != NULL; c = next) {
    next = c->next;
    xbig_free(c, c->size);
  }
  a->chunks = NULL;
  a->next_size = 0;
}
