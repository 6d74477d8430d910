/* SPDX-License-Identifier: MIT */
/* units.c -- durations, sizes and the monotonic clock */
#include "core/core.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Reads a decimal number at the start of text; returns the suffix. */
static const char *parse_number(const char *text, uint64_t *value) {
  uint64_t v = 0;
  const char *p = text;
  if (*p < '0' || *p > '9')
    return NULL;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (UINT64_MAX - 9) / 10)
      return NULL;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  *value = v;
  return p;
}

static int scale(uint64_t value, uint64_t unit, uint64_t *out) {
  if (unit != 0 && value > UINT64_MAX / unit)
    return -EINVAL;
  *out = value * unit;
  return 0;
}

int core_duration_parse(const char *text, uint64_t *ms) {
  static const struct {
    const char *suffix;
    uint64_t ms;
  } units[] = {{"ms", 1},      {"s", 1000},     {"m", 60000},
               {"h", 3600000}, {"d", 86400000}, {"w", 604800000}};
  uint64_t v;
  const char *suffix = parse_number(text, &v);
  if (suffix == NULL)
    return -EINVAL;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(suffix, units[i].suffix) == 0)
      return scale(v, units[i].ms, ms);
  return -EINVAL;
}

int core_size_parse(const char *text, uint64_t *bytes) {
  static const struct {
    const char *suffix;
    uint64_t bytes;
  } units[] = {{"", 1},
               {"B", 1},
               {"KiB", 1024},
               {"MiB", 1024 * 1024},
               {"GiB", 1024ull * 1024 * 1024}};
  uint64_t v;
  const char *suffix = parse_number(text, &v);
  if (suffix == NULL)
    return -EINVAL;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(suffix, units[i].suffix) == 0)
      return scale(v, units[i].bytes, bytes);
  return -EINVAL;
}

uint64_t core_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
