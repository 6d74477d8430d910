/* SPDX-License-Identifier: MIT */
/* alloc.c -- allocation that aborts on out-of-memory */
#include "core/core.h"

#include <stdlib.h>
#include <string.h>
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
