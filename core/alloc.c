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
  size = core_align_up(size, HUGE_PAGE);
  /* One huge page more, to start on a huge-page boundary; what lies
   * before and after the aligned block is unmapped again. */
  uint8_t *map = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED)
    out_of_memory(size);
  uint8_t *p = (uint8_t *)core_align_up((uintptr_t)map, HUGE_PAGE);
  size_t head = (size_t)(p - map);
  if (head > 0)
    munmap(map, head);
  munmap(p + size, HUGE_PAGE - head);
#ifdef MADV_HUGEPAGE
  /* Tables and arenas of hundreds of megabytes, touched once each: with
   * 4 KiB pages every first touch is a fault, costly in a guest. Advice
   * only; without huge pages it works the same. */
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
  munmap(p, core_align_up(size, HUGE_PAGE));
}
