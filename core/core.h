/* SPDX-License-Identifier: MIT */
/* core.h -- what every part needs: allocation, logging, addresses, names, units
 */
#ifndef DDPORT_CORE_H
#define DDPORT_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define DDPORT_VERSION "0.1.0"

/* A view into someone else's bytes; never owns them. */
typedef struct core_str {
  const char *ptr;
  size_t len;
} core_str_t;

/* Allocation that aborts on out-of-memory (NSD's xalloc). Only per-connection
 * buffers may fail softly; they use plain malloc. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);
/* n rounded up to a multiple of to. */
static inline size_t core_align_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

/* A zeroed block for a big table (megabytes), on huge pages where the
 * kernel gives them; freed with its size. Small sizes fall back to calloc. */
void *xbig_alloc(size_t size);
void xbig_free(void *p, size_t size);

/* Memory for many small objects freed together (a table's entries, a
 * configuration's devices). Zero-initialise; blocks are 8-byte aligned,
 * zeroed, and live until core_arena_free. */
typedef struct core_arena_chunk core_arena_chunk_t;
typedef struct core_arena {
  core_arena_chunk_t *chunks;
  size_t next_size;
} core_arena_t;

void *core_arena_alloc(core_arena_t *a, size_t size);
/* A block of a whose bytes [at, at + len) lie in one 64-byte cache line
 * (when len fits one), so that reading them waits for memory once; the
 * skipped bytes stay unused. */
void *core_arena_alloc_fit(core_arena_t *a, size_t size, size_t at, size_t len);
char *core_arena_strndup(core_arena_t *a, const char *s, size_t len);
void core_arena_free(core_arena_t *a);
/* The start of each of a's chunks, newest first, into out (at most max);
 * returns how many there are. */
size_t core_arena_chunks(const core_arena_t *a, void **out, size_t max);

typedef enum core_log_level {
  CORE_LOG_ERROR,
  CORE_LOG_WARN,
  CORE_LOG_INFO,
  CORE_LOG_DEBUG,
} core_log_level_t;

/* Writes one line "TIME LEVEL message" to stderr. Thread-safe: one write(2)
 * per line. Lines above the configured level are dropped. */
void core_log(core_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void core_log_set_level(core_log_level_t level);

/* The access log: where core_access_log lines go. target is "stderr" (the
 * main log, as info lines), "off", or a file path opened for appending.
 * Returns 0 or a negative errno (the file cannot be opened). Call before
 * threads start. */
int core_access_log_open(const char *target);

/* Reopens the access log file in place (after rotation, on SIGUSR1):
 * writers in other threads keep their descriptor number and never see it
 * closed. Returns 0, or a negative errno (the old file stays in use). */
int core_access_log_reopen(void);

/* False when access_log is off: callers skip formatting a line. */
bool core_access_log_enabled(void);

/* Writes one access line "TIME access MESSAGE" with one write(2). */
void core_access_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

void core_access_log_close(void);

/* An IPv4 or IPv6 address without a port. family is AF_INET or AF_INET6;
 * IPv4 uses bytes[0..3]. */
typedef struct core_ip {
  int family;
  uint8_t bytes[16];
} core_ip_t;

/* An address prefix such as 192.0.2.0/24 or ::1/128. */
typedef struct core_prefix {
  core_ip_t ip;
  unsigned bits;
} core_prefix_t;

/* Parses a literal IPv4 or IPv6 address (no brackets, no port).
 * Returns 0, or -EINVAL. */
int core_ip_parse(const char *text, core_ip_t *out);

/* Formats ip into buf (at least INET6_ADDRSTRLEN bytes); returns buf. */
const char *core_ip_format(const core_ip_t *ip, char *buf, size_t size);

/* Parses "127.0.0.1:8080", "[::1]:8080" or "[::]:443" into a sockaddr with
 * the port set. Returns 0, or -EINVAL with *why set to a static phrase. */
int core_hostport_parse(const char *text, struct sockaddr_storage *out,
                        const char **why);

/* Parses "192.0.2.0/24", "::1/128" or a bare address (a host prefix).
 * Host bits beyond the prefix length must be zero. Returns 0 or -EINVAL
 * with *why set. */
int core_prefix_parse(const char *text, core_prefix_t *out, const char **why);

/* True when ip lies inside prefix (same family; IPv4-mapped IPv6 addresses
 * are compared as IPv4). */
bool core_prefix_contains(const core_prefix_t *prefix, const core_ip_t *ip);

/* Extracts the address of a sockaddr (AF_INET or AF_INET6); returns 0 or
 * -EAFNOSUPPORT. */
int core_ip_from_sockaddr(const struct sockaddr *sa, core_ip_t *out);

/* Builds a sockaddr for ip:port; returns its length. */
socklen_t core_ip_to_sockaddr(const core_ip_t *ip, uint16_t port,
                              struct sockaddr_storage *out);

/* Formats a sockaddr as "1.2.3.4:80" or "[::1]:80" into buf; returns buf. */
const char *core_sockaddr_format(const struct sockaddr *sa, char *buf,
                                 size_t size);

/* Whether some socket, of this process or another, holds addr for type
 * (SOCK_STREAM or SOCK_DGRAM): 0 when it is free, -EADDRINUSE when held,
 * another negative errno when it cannot be bound at all. Our own sockets
 * share an address through SO_REUSEPORT, which would let a second ddport
 * (or any server of the same user that sets it) take a silent share of its
 * queries and connections: ask this before the first of ours binds. */
int core_addr_in_use(const struct sockaddr_storage *addr, int type);

/* ---- CPU affinity (affinity.c) ------------------------------------------ */

/* cpu_affinity: on. Worker i runs on the i-th CPU this process may use,
 * and each SO_REUSEPORT group hands a packet to the socket of the worker
 * on the CPU that received it: the answer is made where the query landed,
 * with no wakeup across CPUs. */
#define CORE_AFFINITY_MAX_WORKERS 1024

/* Plans n_workers workers on the CPUs of this process's affinity mask;
 * n_cpus gets their count. Returns 0, -ERANGE when there are more workers
 * than CPUs (one would share a CPU, and the CPU's packets could go to one
 * of them only), or another negative errno. Call before workers start. */
int core_affinity_plan(unsigned n_workers, unsigned *n_cpus);
/* The CPU worker runs on, or -1 without a plan. */
int core_affinity_cpu(unsigned worker);
/* Pins the calling thread to worker's CPU; 0 or a negative errno. Without
 * a plan, does nothing. */
int core_affinity_pin(unsigned worker);
/* Steers fd's SO_REUSEPORT group by CPU (after bind for UDP, after listen
 * for TCP). Without a plan, does nothing. 0, or a negative errno after
 * logging the first refusal once. */
int core_affinity_steer(int fd);

/* cpu_scheduling: batch. Puts the calling thread under SCHED_BATCH: when
 * its socket wakes it, it waits for the task running on its CPU to use up
 * its time slice or sleep instead of taking the CPU at once, and finds a
 * batch of events rather than one. 0 or a negative errno. */
int core_sched_batch(void);

/* ---- HTTP request heads (http_head.c) ------------------------------------ */

#define CORE_HTTP_HEAD_WANTED_MAX 4

typedef enum core_http_head_status {
  CORE_HTTP_HEAD_COMPLETE,
  CORE_HTTP_HEAD_NEED_MORE,
  CORE_HTTP_HEAD_INVALID,
} core_http_head_status_t;

/* A request head; the views point into the caller's buffer. */
typedef struct core_http_head {
  size_t head_len;   /* through the blank line */
  core_str_t target; /* the request target as sent */
  /* Per wanted header: how often it came, and its last value (blanks
   * around it trimmed). */
  core_str_t values[CORE_HTTP_HEAD_WANTED_MAX];
  unsigned counts[CORE_HTTP_HEAD_WANTED_MAX];
  unsigned http_major, http_minor;
  const char *method; /* "GET", "POST", ... */
  bool keep_alive;
  bool chunked;
  uint64_t content_length; /* 0 when none was sent */
  const char *why;         /* static, for INVALID */
} core_http_head_t;

/* Parses the request head at the start of buf with llhttp: only complete
 * header lines count, and a head whose end llhttp and a plain CRLF CRLF
 * (or LF LF) scan disagree on is INVALID. Collects the headers named in
 * wanted (case-insensitive, at most CORE_HTTP_HEAD_WANTED_MAX). Returns
 * NEED_MORE until the head is complete and nothing so far is invalid.
 * Pure: no allocation. */
/* Strips blanks (spaces and tabs) from both ends of s. */
void core_str_trim(core_str_t *s);

core_http_head_status_t core_http_head_parse(const char *buf, size_t len,
                                             const char *const *wanted,
                                             size_t n_wanted,
                                             core_http_head_t *out);

#define CORE_NAME_MAX 253 /* presentation form without trailing dot */

/* Normalises a host name from the wire or a file: strips one trailing dot,
 * lowercases, and checks that it is 1..253 bytes of letters, digits, hyphens
 * and dots with labels of 1..63 bytes. With allow_wildcard, a leading "*."
 * label is accepted. Writes the result (NUL-terminated) to out, which must
 * hold CORE_NAME_MAX + 1 bytes. Returns its length, or -EINVAL. */
int core_name_normalise(const char *name, size_t len, char *out,
                        bool allow_wildcard);

/* True when name equals zone or lies below it (both normalised). */
bool core_name_in_zone(const char *name, size_t name_len, const char *zone,
                       size_t zone_len);

/* "500ms", "5s", "10m", "1h", "7d" -> milliseconds. Returns 0 or -EINVAL. */
int core_duration_parse(const char *text, uint64_t *ms);

/* "512", "16KiB", "1MiB", "1GiB" -> bytes. Returns 0 or -EINVAL. */
int core_size_parse(const char *text, uint64_t *bytes);

/* Milliseconds on a monotonic clock. */
uint64_t core_now_ms(void);

#endif
