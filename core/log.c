/* SPDX-License-Identifier: MIT */
/* log.c -- one line per event on stderr */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
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

typedef enum access_mode {
  ACCESS_STDERR,
  ACCESS_OFF,
  ACCESS_FILE,
} access_mode_t;

static access_mode_t access_mode = ACCESS_STDERR;
static int access_fd = -1;
static char *access_path;

static int open_append(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  return fd < 0 ? -errno : fd;
}

int core_access_log_open(const char *target) {
  core_access_log_close();
  if (target == NULL || strcmp(target, "stderr") == 0) {
    access_mode = ACCESS_STDERR;
    return 0;
  }
  if (strcmp(target, "off") == 0) {
    access_mode = ACCESS_OFF;
    return 0;
  }
  int fd = open_append(target);
  if (fd < 0)
    return fd;
  access_fd = fd;
  access_path = xstrdup(target);
  access_mode = ACCESS_FILE;
  return 0;
}

int core_access_log_reopen(void) {
  if (access_mode != ACCESS_FILE)
    return 0;
  int fd = open_append(access_path);
  if (fd < 0)
    return fd;
  /* dup2 swaps the file behind the same descriptor number atomically, so
   * a worker writing a line now writes it to the old file or the new. */
  int rc = dup2(fd, access_fd) < 0 ? -errno : 0;
  close(fd);
  return rc;
}

void core_access_log_close(void) {
  if (access_fd >= 0)
    close(access_fd);
  access_fd = -1;
  free(access_path);
  access_path = NULL;
  access_mode = ACCESS_STDERR;
}

bool core_access_log_enabled(void) {
  return access_mode != ACCESS_OFF;
}

void core_access_log(const char *fmt, ...) {
  if (access_mode == ACCESS_OFF)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (access_mode == ACCESS_STDERR) {
    core_log(CORE_LOG_INFO, "access %s", msg);
    return;
  }
  char line[1200];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  int m = snprintf(line + n, sizeof line - n, ".%03ldZ access %s\n",
                   ts.tv_nsec / 1000000, msg);
  n += (m < 0 || (size_t)m >= sizeof line - n) ? 0 : (size_t)m;
  ssize_t w = write(access_fd, line, n);
  (void)w;
}
