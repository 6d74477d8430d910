/* SPDX-License-Identifier: MIT */
/* log.c -- one line per event on stderr */
#include "core/core.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = CORE_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void core_log_set_level(core_log_level_t level) {
  atomic_store(&log_level, (int)level);
}

void core_log(core_log_level_t level, const char *fmt, ...) {
  if ((int)level > atomic_load(&log_level))
    return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %s ",
                        ts.tv_nsec / 1000000, level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  n = (m < 0) ? n
              : (n + (size_t)m >= sizeof line - 1 ? sizeof line - 2
                                                  : n + (size_t)m);
  line[n++] = '\n';
  /* One write(2) per line so lines from worker threads never interleave. */
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
}
