/* SPDX-License-Identifier: MIT */
/* clashing_names.h -- device names that collide in the registry's lookup
 * index, for the unit tests that probe it */
#ifndef DDPORT_TESTS_CLASHING_NAMES_H
#define DDPORT_TESTS_CLASHING_NAMES_H

#include "registry/registry_int.h"

#include <stdio.h>
#include <string.h>

/* Writes into out the next name "<prefix><k>.<zone>", from *k on, whose
 * hash has the low 9 bits 509: all such names start probing the lookup
 * index at one word near its end (for any index up to 512 words), so
 * their probes are long, wrap around the end and cross each other's
 * tombstones. *k is left past the name found. */
static inline void clashing_name(const char *prefix, const char *zone, int *k,
                                 char *out, size_t size) {
  for (;; (*k)++) {
    snprintf(out, size, "%s%d.%s", prefix, *k, zone);
    if ((reg_name_hash(out, strlen(out)) & 511) == 509) {
      (*k)++;
      return;
    }
  }
}

#endif
