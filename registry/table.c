/* SPDX-License-Identifier: MIT */
/* table.c -- the name -> device table that workers read without locks */
#include "registry/registry.h"

#include <stdlib.h>
#include <string.h>

/* Open addressing with linear probing over borrowed device pointers. The
 * table is built once and never written afterwards, so readers need no
 * lock; the registry issue swaps whole tables (or an RCU hash) behind the
 * same reg_lookup. */
struct reg {
  const reg_device_t **slots;
  size_t mask;
  size_t count;
};

static uint64_t hash_name(const char *name, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)name[i];
    h *= 0x100000001b3ull;
  }
  return h ^ (h >> 29);
}

reg_t *reg_new(const reg_config_t *config) {
  reg_t *reg = xcalloc(1, sizeof *reg);
  size_t size = 16;
  while (size < config->n_devices * 2)
    size *= 2;
  reg->slots = xcalloc(size, sizeof *reg->slots);
  reg->mask = size - 1;
  for (size_t i = 0; i < config->n_devices; i++) {
    const reg_device_t *d = &config->devices[i];
    size_t len = strlen(d->name);
    size_t at = hash_name(d->name, len) & reg->mask;
    while (reg->slots[at] != NULL && strcmp(reg->slots[at]->name, d->name))
      at = (at + 1) & reg->mask;
    /* The loader rejects duplicates; should one slip through, first wins. */
    if (reg->slots[at] == NULL) {
      reg->slots[at] = d;
      reg->count++;
    }
  }
  return reg;
}

void reg_free(reg_t *reg) {
  if (reg == NULL)
    return;
  free(reg->slots);
  free(reg);
}

size_t reg_count(const reg_t *reg) {
  return reg->count;
}

static const reg_device_t *find_exact(const reg_t *reg, const char *name,
                                      size_t len) {
  size_t at = hash_name(name, len) & reg->mask;
  for (;;) {
    const reg_device_t *d = reg->slots[at];
    if (d == NULL)
      return NULL;
    if (strncmp(d->name, name, len) == 0 && d->name[len] == '\0')
      return d;
    at = (at + 1) & reg->mask;
  }
}

const reg_device_t *reg_lookup(const reg_t *reg, const char *name, size_t len) {
  if (len == 0 || len > CORE_NAME_MAX)
    return NULL;
  const reg_device_t *d = find_exact(reg, name, len);
  if (d != NULL)
    return d->enabled ? d : NULL;

  /* Nearest wildcard: for a.b.c try *.b.c, then *.c. */
  char key[CORE_NAME_MAX + 3];
  const char *rest = memchr(name, '.', len);
  while (rest != NULL) {
    size_t rest_len = len - (size_t)(rest - name);
    key[0] = '*';
    memcpy(key + 1, rest, rest_len);
    d = find_exact(reg, key, rest_len + 1);
    if (d != NULL)
      return d->enabled ? d : NULL;
    rest = memchr(rest + 1, '.', rest_len - 1);
  }
  return NULL;
}
