/* SPDX-License-Identifier: MIT */
/* alloc.c -- allocation that aborts on out-of-memory */
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void out_of_memory(size_t size) {
  /* No stdio here: it may allocate. */
  static const char msg[] = "ddport: out of memory\n";
  (void)size;
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
  abort();
}

void *xmalloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p == NULL)
    out_of_memory(size);
  return p;
}

void *xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (p == NULL)
    out_of_memory(size);
  return p;
}

void *xrealloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (p == NULL)
    out_of_memory(size);
  return p;
}

char *xstrdup(const char *s) {
  return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t len) {
  char *p = xmalloc(len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

/* Below this a big block is an ordinary calloc: mapping it costs more than
 * it saves. */
#define BIG_MIN ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

void *xbig_alloc(size_t size) {
  if (size < BIG_MIN)
    return xcalloc(1, size);
  size = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  /* One huge page more, to start on a huge-page boundary. */
  uint8_t *map = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED)
    out_of_memory(size);
  uint8_t *p = (uint8_t *)(((uintptr_t)map + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
  if (p > map)
    munmap(map, (size_t)(p - map));
  if (p + size < map + size + HUGE_PAGE)
    munmap(p + size, (size_t)(map + size + HUGE_PAGE - (p + size)));
#ifdef MADV_HUGEPAGE
  /* Randomly probed tables of hundreds of megabytes: with 4 KiB pages
   * nearly every probe also misses the TLB, and every first touch is a
   * page fault. Advice only; without huge pages it works the same. */
  (void)madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

void xbig_free(void *p, size_t size) {
  if (p == NULL)
    return;
  if (size < BIG_MIN) {
    free(p);
    return;
  }
  size = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  munmap(p, size);
}
