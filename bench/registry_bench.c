/* SPDX-License-Identifier: MIT */
/* registry_bench.c -- the RCU table at scale: build time, memory per
 * device, lookups per second per core, and the longest lookup seen while
 * a whole table of the same size is swapped in */
#include "registry/registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Usage: registry_bench [DEVICES [READERS [LOOKUPS]]]; prints one table row per
 * measure. A benchmark, not a test: nothing is asserted. */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, resident = 0;
  if (f != NULL) {
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
      resident = 0;
    fclose(f);
  }
  return resident * (size_t)sysconf(_SC_PAGESIZE);
}

typedef struct devices {
  reg_config_t config;
  char **names;
  core_ip_t addr;
  reg_port_t ports[2];
} devices_t;

static void devices_make(devices_t *d, size_t n, unsigned gen) {
  memset(d, 0, sizeof *d);
  core_ip_parse("192.0.2.7", &d->addr);
  d->ports[0] = (reg_port_t){"http", (uint16_t)(10080 + gen)};
  d->ports[1] = (reg_port_t){"https", 10443};
  d->names = xcalloc(n, sizeof *d->names);
  d->config.devices = xcalloc(n, sizeof *d->config.devices);
  d->config.n_devices = n;
  for (size_t i = 0; i < n; i++) {
    char name[64];
    snprintf(name, sizeof name, "dev%zu.customers.example.net", i);
    d->names[i] = xstrdup(name);
    reg_device_t *dev = &d->config.devices[i];
    dev->name = d->names[i];
    dev->addrs = &d->addr;
    dev->n_addrs = 1;
    dev->ports = d->ports;
    dev->n_ports = 2;
    dev->enabled = true;
  }
}

static void devices_free(devices_t *d) {
  for (size_t i = 0; i < d->config.n_devices; i++)
    free(d->names[i]);
  free(d->names);
  free(d->config.devices);
}

/* count names drawn at random from names[n], one after another in one
 * buffer, each ending in a NUL. */
static char *stream_make(char *const *names, size_t n, size_t count,
                         unsigned seed) {
  size_t size = 1, used = 0;
  for (size_t i = 0; i < n && i < 1000; i++)
    size += strlen(names[i]) + 1;
  size = size / (n < 1000 ? n : 1000) * count * 2 + 256;
  char *buf = xmalloc(size);
  for (size_t i = 0; i < count; i++) {
    const char *name = names[(size_t)rand_r(&seed) % n];
    size_t len = strlen(name) + 1;
    if (used + len > size) {
      size *= 2;
      buf = xrealloc(buf, size);
    }
    memcpy(buf + used, name, len);
    used += len;
  }
  return buf;
}

/* Measures of the lookup rate taken this many times each. */
#define REPEATS 5
/* Names a reg_lookup_many call takes, as a DNS worker's batch. */
#define BATCH 64

/* Seconds to walk lookups names of stream without looking them up: the
 * strlen a lookup's time includes, to subtract. */
static double time_walk(const char *stream, size_t lookups) {
  size_t sink = 0;
  double t0 = now_s();
  const char *p = stream;
  for (size_t i = 0; i < lookups; i++) {
    size_t len = strlen(p);
    sink += len;
    p += len + 1;
  }
  double s = now_s() - t0;
  __asm__ volatile("" : : "r"(sink));
  return s;
}

/* Aborts: a lookup rate of names not all found would be no rate. */
static void all_found(size_t found, size_t want) {
  if (found != want) {
    fprintf(stderr, "registry_bench: %zu of %zu names found\n", found, want);
    exit(1);
  }
}

/* Seconds for lookups names of stream looked up one at a time. */
static double time_single(reg_t *reg, const char *stream, size_t lookups) {
  size_t found = 0;
  double t0 = now_s();
  const char *p = stream;
  for (size_t i = 0; i < lookups; i++) {
    size_t len = strlen(p);
    found += reg_lookup(reg, p, len) != NULL;
    p += len + 1;
    if ((i & 1023) == 0)
      reg_quiescent();
  }
  double s = now_s() - t0;
  all_found(found, lookups);
  return s;
}

/* Seconds for the same names in batches, as reg_lookup_many takes them
 * (the last lookups % BATCH are left out). */
static double time_batched(reg_t *reg, const char *stream, size_t lookups) {
  const char *batch[BATCH];
  size_t lens[BATCH], found = 0;
  const reg_device_t *got[BATCH];
  double t0 = now_s();
  const char *p = stream;
  for (size_t i = 0; i + BATCH <= lookups; i += BATCH) {
    for (size_t j = 0; j < BATCH; j++) {
      batch[j] = p;
      lens[j] = strlen(p);
      p += lens[j] + 1;
    }
    reg_lookup_many(reg, BATCH, batch, lens, got);
    for (size_t j = 0; j < BATCH; j++)
      found += got[j] != NULL;
    reg_quiescent();
  }
  double s = now_s() - t0;
  all_found(found, lookups / BATCH * BATCH);
  return s;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One row: the median of REPEATS rates per second, in millions, and their
 * range. */
static void print_rate(const char *label, double rate[REPEATS]) {
  qsort(rate, REPEATS, sizeof *rate, cmp_double);
  printf("| %s | %.2f M (%.2f-%.2f, median of %d) |\n", label,
         rate[REPEATS / 2] / 1e6, rate[0] / 1e6, rate[REPEATS - 1] / 1e6,
         REPEATS);
}

/* What readers saw in one phase of the swap measure. */
typedef struct seen {
  uint64_t lookups, max_ns, slow;
  uint64_t max_calm_ns; /* in batches the thread ran through undisturbed */
  uint64_t calm_slow;   /* lookups over 1 ms in those batches */
} seen_t;

/* The phases: while a table is swapped in and the old one freed, then as
 * long again with no swap, so that what the machine does to readers on
 * its own (interrupts, a busy neighbour, the hypervisor) shows apart. */
enum { PHASE_SWAP, PHASE_CALM, PHASES };

typedef struct reader {
  pthread_t thread;
  const reg_t *reg;
  char **names;
  size_t n;
  unsigned seed;
  atomic_bool *stop;
  atomic_int *phase;
  uint64_t found;
  seen_t seen[PHASES];
} reader_t;

/* Context switches of the calling thread so far. */
static long switches(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_nvcsw + ru.ru_nivcsw;
}

static void *reader_main(void *arg) {
  reader_t *r = arg;
  reg_thread_register();
  while (!atomic_load_explicit(r->stop, memory_order_relaxed)) {
    int phase = atomic_load(r->phase);
    long before = switches();
    uint64_t batch_max = 0, slow = 0;
    for (int i = 0; i < 1024; i++) {
      const char *name = r->names[(size_t)rand_r(&r->seed) % r->n];
      uint64_t t0 = now_ns();
      const reg_device_t *d = reg_lookup(r->reg, name, strlen(name));
      uint64_t dt = now_ns() - t0;
      r->found += d != NULL;
      slow += dt > 1000000;
      if (dt > batch_max)
        batch_max = dt;
    }
    reg_quiescent();
    /* A batch across two phases belongs to neither. */
    if (atomic_load(r->phase) != phase)
      continue;
    seen_t *s = &r->seen[phase];
    s->lookups += 1024;
    s->slow += slow;
    if (batch_max > s->max_ns)
      s->max_ns = batch_max;
    /* A lookup that took long because the scheduler ran something else
     * says nothing about the table: those batches count apart. */
    if (switches() == before) {
      s->calm_slow += slow;
      if (batch_max > s->max_calm_ns)
        s->max_calm_ns = batch_max;
    }
  }
  reg_thread_unregister();
  return NULL;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
  int n_readers = argc > 2 ? atoi(argv[2]) : 2;
  size_t lookups = argc > 3 ? strtoul(argv[3], NULL, 10) : 5000000;
  if (n == 0 || n_readers < 1 || n_readers > 64 || lookups < 1000) {
    fprintf(stderr, "usage: registry_bench [DEVICES [READERS [LOOKUPS]]] "
                    "(LOOKUPS at least 1000)\n");
    return 2;
  }
  reg_thread_register();

  devices_t a;
  devices_make(&a, n, 0);
  size_t rss0 = rss_bytes();
  double t0 = now_s();
  reg_t *reg = reg_new(&a.config);
  double build_s = now_s() - t0;
  size_t rss1 = rss_bytes();

  /* One core, random names, all present. The names are drawn first and
   * read in order, as a server reads them from packets: what is timed is
   * the table's memory, not the bench's own name list. The machine's
   * memory speed drifts from second to second (a guest shares it), so
   * each measure runs REPEATS times, interleaved, and the median is
   * reported with the range. */
  char *stream = stream_make(a.names, n, lookups, 1);
  double one[REPEATS], many[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    double base_s = time_walk(stream, lookups);
    one[r] = (double)lookups / (time_single(reg, stream, lookups) - base_s);
    size_t batched = lookups / BATCH * BATCH;
    many[r] = (double)batched / (time_batched(reg, stream, lookups) -
                                 base_s * (double)batched / (double)lookups);
  }
  free(stream);

  /* Absent names: the exact miss and every wildcard above it. */
  char **absent = xcalloc(n, sizeof *absent);
  for (size_t i = 0; i < n; i++) {
    char name[64];
    snprintf(name, sizeof name, "absent%zu.customers.example.net", i);
    absent[i] = xstrdup(name);
  }
  unsigned seed = 1;
  size_t misses = lookups / 5 * 2, found = 0, sink = 0;
  t0 = now_s();
  for (size_t i = 0; i < misses; i++) {
    const char *name = absent[(size_t)rand_r(&seed) % n];
    found += reg_lookup(reg, name, strlen(name)) != NULL;
    if ((i & 1023) == 0)
      reg_quiescent();
  }
  double miss_s = now_s() - t0;
  seed = 1;
  t0 = now_s();
  for (size_t i = 0; i < misses; i++)
    sink += strlen(absent[(size_t)rand_r(&seed) % n]);
  double miss_base_s = now_s() - t0;
  for (size_t i = 0; i < n; i++)
    free(absent[i]);
  free(absent);

  /* Readers look up while a whole new table of n devices is swapped in. */
  devices_t b;
  devices_make(&b, n, 1);
  atomic_bool stop = false;
  atomic_int phase = PHASE_SWAP;
  reader_t *readers = xcalloc((size_t)n_readers, sizeof *readers);
  for (int i = 0; i < n_readers; i++) {
    readers[i] = (reader_t){.reg = reg,
                            .names = a.names,
                            .n = n,
                            .seed = (unsigned)i + 7,
                            .stop = &stop,
                            .phase = &phase};
    pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]);
  }
  usleep(200000);
  t0 = now_s();
  reg_replace_all(reg, &b.config);
  double swap_s = now_s() - t0;
  reg_quiescent();
  usleep(500000); /* the old table is freed meanwhile, by call_rcu */
  atomic_store(&phase, PHASE_CALM);
  reg_thread_offline();
  usleep((useconds_t)((swap_s + 0.5) * 1e6));
  atomic_store(&stop, true);
  seen_t seen[PHASES] = {0};
  for (int i = 0; i < n_readers; i++) {
    pthread_join(readers[i].thread, NULL);
    for (int ph = 0; ph < PHASES; ph++) {
      const seen_t *s = &readers[i].seen[ph];
      seen[ph].lookups += s->lookups;
      seen[ph].slow += s->slow;
      seen[ph].calm_slow += s->calm_slow;
      if (s->max_ns > seen[ph].max_ns)
        seen[ph].max_ns = s->max_ns;
      if (s->max_calm_ns > seen[ph].max_calm_ns)
        seen[ph].max_calm_ns = s->max_calm_ns;
    }
  }
  reg_thread_online();

  printf("| measure | value |\n|---|---|\n");
  printf("| devices | %zu |\n", n);
  printf("| table build (reg_new, in memory) | %.2f s |\n", build_s);
  printf("| table memory per device (RSS growth) | %.0f bytes |\n",
         (double)(rss1 - rss0) / (double)n);
  print_rate("lookups per second, one core (hits)", one);
  char label[80];
  snprintf(label, sizeof label,
           "lookups per second, one core (hits, batches of %d)", BATCH);
  print_rate(label, many);
  printf("| lookups per second, one core (absent: 3 wildcards tried) | "
         "%.2f M |\n",
         (double)misses / (miss_s - miss_base_s) / 1e6);
  /* Labels name no size, so a report can line sizes up by label. */
  printf("| full swap of the table for one as big (build + publish) | "
         "%.2f s |\n",
         swap_s);
  printf("| longest single lookup during the swap | %.1f us (%d readers, "
         "%ju lookups) |\n",
         (double)seen[PHASE_SWAP].max_ns / 1e3, n_readers,
         (uintmax_t)seen[PHASE_SWAP].lookups);
  printf("| longest lookup in batches not descheduled | %.1f us |\n",
         (double)seen[PHASE_SWAP].max_calm_ns / 1e3);
  printf("| longest lookup in batches not descheduled, no swap | %.1f us |\n",
         (double)seen[PHASE_CALM].max_calm_ns / 1e3);
  printf("| lookups over 1 ms during the swap (not descheduled) | %ju (%ju) "
         "|\n",
         (uintmax_t)seen[PHASE_SWAP].slow,
         (uintmax_t)seen[PHASE_SWAP].calm_slow);
  printf("| lookups over 1 ms, no swap (not descheduled) | %ju (%ju) |\n",
         (uintmax_t)seen[PHASE_CALM].slow,
         (uintmax_t)seen[PHASE_CALM].calm_slow);
  fprintf(stderr, "(%zu found, %zu)\n", found, sink);

  free(readers);
  reg_free(reg);
  devices_free(&a);
  devices_free(&b);
  reg_thread_unregister();
  return 0;
}
