/* SPDX-License-Identifier: MIT */
/* test_registry_stress.c -- readers look up while the writer updates and
 * swaps whole tables; every entry read must be whole and stay whole until
 * the reader's quiescent point; a walk of the published state sees
 * exactly that state whatever the writer does meanwhile; a lookup made
 * offline holds its table until the reader's next quiescent point */
#include "registry/registry.h"
#include "registry/registry_int.h"
#include "tests/test.h"
#include "tests/unit/clashing_names.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

enum {
  N_READERS = 4,
  N_DEVICES = 512,
  N_WRITES = 60000,             /* single-entry updates and removals */
  SWAP_EVERY = 1000,            /* a full table swap every this many writes */
  MAX_READS = 50 * 1000 * 1000, /* per reader, a bound if the writer hangs */
  TIME_LIMIT_S = 90,
};

static char names[N_DEVICES][32];
static atomic_bool writer_done;
static atomic_uint_fast64_t checked;

/* Everything in an entry derives from its name and a generation, so a
 * reader can tell a whole entry from a torn, mixed or freed one. */
static uint32_t mix(const char *name, uint32_t gen) {
  uint32_t h = 2166136261u ^ gen;
  for (const char *p = name; *p; p++)
    h = (h ^ (unsigned char)*p) * 16777619u;
  return h;
}

typedef struct built {
  reg_device_t device;
  core_ip_t addr;
  reg_port_t ports[2];
  char owner[24];
  char name[40];
} built_t;

static void build(built_t *b, const char *name, uint32_t gen) {
  memset(b, 0, sizeof *b);
  snprintf(b->name, sizeof b->name, "%s", name);
  snprintf(b->owner, sizeof b->owner, "gen%u", gen);
  uint32_t h = mix(name, gen);
  b->addr.family = AF_INET6;
  for (int i = 0; i < 16; i++)
    b->addr.bytes[i] = (uint8_t)(h >> (8 * (i % 4)));
  b->ports[0].listener = "http";
  b->ports[0].port = (uint16_t)(gen % 60000 + 1);
  b->ports[1].listener = "https";
  b->ports[1].port = (uint16_t)(h % 60000 + 1);
  b->device.name = b->name;
  b->device.owner = b->owner;
  b->device.addrs = &b->addr;
  b->device.n_addrs = 1;
  b->device.ports = b->ports;
  b->device.n_ports = 2;
  b->device.enabled = true;
  b->device.wildcard = name[0] == '*';
}

/* Aborts unless d is a whole entry built for expected_name. */
static void verify(const reg_device_t *d, const char *expected_name) {
  if (strcmp(d->name, expected_name) != 0)
    TEST_FAIL_("looked up %s, got %s", expected_name, d->name);
  unsigned gen;
  if (sscanf(d->owner, "gen%u", &gen) != 1)
    TEST_FAIL_("%s: owner %s", d->name, d->owner);
  uint32_t h = mix(d->name, gen);
  if (d->n_addrs != 1 || d->n_ports != 2 || !d->enabled)
    TEST_FAIL_("%s gen %u: torn counts", d->name, gen);
  for (int i = 0; i < 16; i++)
    if (d->addrs[0].bytes[i] != (uint8_t)(h >> (8 * (i % 4))))
      TEST_FAIL_("%s gen %u: address from another generation", d->name, gen);
  if (reg_device_port(d, "http") != gen % 60000 + 1 ||
      reg_device_port(d, "https") != h % 60000 + 1)
    TEST_FAIL_("%s gen %u: ports from another generation", d->name, gen);
}

typedef struct reader {
  pthread_t thread;
  const reg_t *reg;
  unsigned seed;
} reader_t;

static void *reader_main(void *arg) {
  reader_t *r = arg;
  reg_thread_register();
  uint64_t n = 0;
  /* Pointers held since the last quiescent point: they must not change. */
  const reg_device_t *held[8];
  char held_owner[8][24];
  size_t n_held = 0;
  while (!atomic_load(&writer_done) && n < MAX_READS) {
    unsigned i = (unsigned)rand_r(&r->seed) % N_DEVICES;
    char name[48];
    const char *expect = names[i];
    /* Some names only resolve through the wildcard. */
    if (i % 16 == 0) {
      snprintf(name, sizeof name, "x.%s", names[i] + 2);
      expect = names[i];
    } else {
      snprintf(name, sizeof name, "%s", names[i]);
    }
    const reg_device_t *d;
    if (n % 2) {
      d = reg_lookup(r->reg, name, strlen(name));
    } else {
      /* The batched path, which reads the index ahead of the lookup. */
      const char *batch[2] = {name, name};
      size_t lens[2] = {strlen(name), strlen(name)};
      const reg_device_t *got[2];
      reg_lookup_many(r->reg, 2, batch, lens, got);
      if (got[0] != got[1] && got[0] != NULL && got[1] != NULL)
        verify(got[1], expect);
      d = got[0];
    }
    if (d != NULL) {
      verify(d, expect);
      if (n_held < 8) {
        held[n_held] = d;
        snprintf(held_owner[n_held], sizeof held_owner[n_held], "%s", d->owner);
        n_held++;
      }
    }
    n++;
    if (n % 64 == 0) {
      /* Whatever was swapped or replaced meanwhile, what we hold is
       * still the entry we read. */
      for (size_t k = 0; k < n_held; k++)
        if (strcmp(held[k]->owner, held_owner[k]) != 0)
          TEST_FAIL_("%s changed under a reader: %s -> %s", held[k]->name,
                     held_owner[k], held[k]->owner);
      n_held = 0;
      reg_quiescent();
    }
    if (n % 4096 == 0) {
      reg_thread_offline();
      sched_yield();
      reg_thread_online();
    }
  }
  atomic_fetch_add(&checked, n);
  reg_thread_unregister();
  return NULL;
}

static void full_config(reg_config_t *config, built_t *b, uint32_t gen) {
  for (int i = 0; i < N_DEVICES; i++)
    build(&b[i], names[i], gen);
  config->devices = xcalloc(N_DEVICES, sizeof *config->devices);
  for (int i = 0; i < N_DEVICES; i++)
    config->devices[i] = b[i].device;
  config->n_devices = N_DEVICES;
}

static void test_readers_during_updates_and_swaps(void) {
  /* Every 16th device is a wildcard "*.nameI..." looked up as "x.nameI". */
  for (int i = 0; i < N_DEVICES; i++)
    snprintf(names[i], sizeof names[i],
             i % 16 == 0 ? "*.d%d.stress.test" : "d%d.stress.test", i);
  static built_t b[N_DEVICES];
  reg_config_t config = {0};
  full_config(&config, b, 1);
  reg_thread_register();
  reg_t *reg = reg_new(&config);
  free(config.devices);

  reader_t readers[N_READERS];
  for (int i = 0; i < N_READERS; i++) {
    readers[i].reg = reg;
    readers[i].seed = 7919u * (unsigned)(i + 1);
    ASSERT_EQ(
        pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]), 0);
  }

  unsigned seed = 12345;
  uint32_t gen = 2;
  time_t start = time(NULL);
  int swaps = 0;
  for (int w = 0; w < N_WRITES && time(NULL) - start < TIME_LIMIT_S; w++) {
    if (w % SWAP_EVERY == SWAP_EVERY - 1) {
      full_config(&config, b, gen++);
      ASSERT_EQ(reg_replace_all(reg, &config), 0);
      free(config.devices);
      swaps++;
    } else {
      int i = rand_r(&seed) % N_DEVICES;
      if (rand_r(&seed) % 8 == 0) {
        int rc = reg_remove_device(reg, names[i]);
        ASSERT(rc == 0 || rc == -ENOENT);
      } else {
        built_t one;
        build(&one, names[i], gen++);
        ASSERT_EQ(reg_update_device(reg, &one.device), 0);
      }
    }
    /* The writer is a control loop: it passes quiescent points too. */
    reg_quiescent();
  }
  atomic_store(&writer_done, true);
  for (int i = 0; i < N_READERS; i++)
    ASSERT_EQ(pthread_join(readers[i].thread, NULL), 0);
  ASSERT(swaps > 0);
  ASSERT(atomic_load(&checked) > 0);
  printf("# %d swaps, %ju lookups checked\n", swaps,
         (uintmax_t)atomic_load(&checked));

  /* The last full table plus whatever single updates followed. */
  size_t present = 0;
  for (int i = 0; i < N_DEVICES; i++) {
    const reg_device_t *d = reg_lookup(reg, names[i], strlen(names[i]));
    if (d != NULL) {
      verify(d, names[i]);
      present++;
    }
  }
  ASSERT_EQ(reg_count(reg), present);
  reg_free(reg);
  reg_thread_unregister();
}

/* ---- walks of the published state ---------------------------------------- */

enum {
  PUBLISH_EVERY = 16, /* writes per published state */
  MAX_STATES = 4000,
  BITMAP_BYTES = N_DEVICES / 8,
};

/* expected[n]: the names visible in published state n, set before it is
 * published. */
static uint8_t expected[MAX_STATES][BITMAP_BYTES];
static atomic_uint_fast64_t walks;

typedef struct walk {
  uint8_t seen[BITMAP_BYTES];
} walk_t;

static int walk_name(const char *name, void *arg) {
  walk_t *w = arg;
  int i;
  if (strncmp(name, "*.", 2) == 0)
    name += 2;
  if (sscanf(name, "d%d.stress.test", &i) != 1 || i < 0 || i >= N_DEVICES)
    TEST_FAIL_("walk: a name never written: %s", name);
  if (w->seen[i / 8] & (1u << (i % 8)))
    TEST_FAIL_("walk: %s twice", name);
  w->seen[i / 8] |= (uint8_t)(1u << (i % 8));
  return 0;
}

static void *walker_main(void *arg) {
  const reg_t *reg = arg;
  reg_thread_register();
  uint64_t n = 0;
  while (!atomic_load(&writer_done) && n < MAX_READS) {
    walk_t w = {{0}};
    uint64_t number = 0;
    int rc = reg_foreach_published(reg, &number, walk_name, &w);
    if (rc == 0) {
      ASSERT(number < MAX_STATES);
      if (memcmp(w.seen, expected[number], BITMAP_BYTES) != 0)
        TEST_FAIL_("walk of state %ju differs from it", (uintmax_t)number);
      n++;
    } else {
      ASSERT_EQ(rc, -EAGAIN);
    }
    reg_quiescent();
  }
  atomic_fetch_add(&walks, n);
  reg_thread_unregister();
  return NULL;
}

static void test_published_walks_during_updates(void) {
  for (int i = 0; i < N_DEVICES; i++)
    snprintf(names[i], sizeof names[i],
             i % 16 == 0 ? "*.d%d.stress.test" : "d%d.stress.test", i);
  static built_t b[N_DEVICES];
  bool live[N_DEVICES];
  reg_config_t config = {0};
  full_config(&config, b, 1);
  reg_thread_register();
  reg_t *reg = reg_new(&config);
  free(config.devices);
  for (int i = 0; i < N_DEVICES; i++) {
    live[i] = true;
    expected[0][i / 8] |= (uint8_t)(1u << (i % 8));
  }
  atomic_store(&writer_done, false);

  pthread_t walkers[N_READERS];
  for (int i = 0; i < N_READERS; i++)
    ASSERT_EQ(pthread_create(&walkers[i], NULL, walker_main, reg), 0);

  unsigned seed = 4242;
  uint32_t gen = 2;
  time_t start = time(NULL);
  uint64_t number = 0;
  for (int w = 0; number + 1 < MAX_STATES && time(NULL) - start < TIME_LIMIT_S;
       w++) {
    if (w % SWAP_EVERY == SWAP_EVERY - 1) {
      full_config(&config, b, gen++);
      ASSERT_EQ(reg_replace_all(reg, &config), 0);
      free(config.devices);
      for (int i = 0; i < N_DEVICES; i++)
        live[i] = true;
    } else {
      int i = rand_r(&seed) % N_DEVICES;
      if (rand_r(&seed) % 8 == 0) {
        reg_remove_device(reg, names[i]);
        live[i] = false;
      } else {
        built_t one;
        build(&one, names[i], gen++);
        one.device.enabled = rand_r(&seed) % 4 != 0;
        ASSERT_EQ(reg_update_device(reg, &one.device), 0);
        live[i] = one.device.enabled;
      }
    }
    if (w % PUBLISH_EVERY == PUBLISH_EVERY - 1) {
      for (int i = 0; i < N_DEVICES; i++)
        if (live[i])
          expected[number + 1][i / 8] |= (uint8_t)(1u << (i % 8));
      ASSERT(reg_publish(reg));
      ASSERT_EQ(reg_published(reg), ++number);
    }
    reg_quiescent();
  }
  atomic_store(&writer_done, true);
  for (int i = 0; i < N_READERS; i++)
    ASSERT_EQ(pthread_join(walkers[i], NULL), 0);
  ASSERT(atomic_load(&walks) > 0);
  printf("# %ju states published, %ju walks checked\n", (uintmax_t)number,
         (uintmax_t)atomic_load(&walks));
  reg_free(reg);
  reg_thread_unregister();
}

/* A reader that went offline (as a worker does right before its loop
 * polls) and then looks up, from an I/O callback, must be online again:
 * the table it read from is not freed before its next quiescent point. */
static struct {
  const reg_t *reg;
  bool batched; /* through reg_lookup_many */
  atomic_bool looked_up, may_check, checked, barrier_done;
} held;

static void *offline_reader_main(void *arg) {
  (void)arg;
  reg_thread_register();
  reg_thread_offline();
  const char *name = "offline.stress.test";
  const reg_device_t *d;
  if (held.batched) {
    size_t len = strlen(name);
    reg_lookup_many(held.reg, 1, &name, &len, &d);
  } else {
    d = reg_lookup(held.reg, name, strlen(name));
  }
  ASSERT(d != NULL);
  atomic_store(&held.looked_up, true);
  while (!atomic_load(&held.may_check))
    sched_yield();
  /* The table was replaced meanwhile; what we hold is still gen 1. */
  verify(d, name);
  ASSERT_STR_EQ(d->owner, "gen1");
  atomic_store(&held.checked, true);
  reg_quiescent();
  reg_thread_unregister();
  return NULL;
}

/* Waits, by rcu_barrier, for every grace period started so far. */
static void *barrier_main(void *arg) {
  reg_thread_register();
  reg_free(arg);
  atomic_store(&held.barrier_done, true);
  reg_thread_unregister();
  return NULL;
}

static void lookup_while_offline_holds_the_table(bool batched) {
  static built_t b;
  memset(&held, 0, sizeof held);
  held.batched = batched;
  reg_config_t config = {.devices = &b.device, .n_devices = 1};
  reg_thread_register();
  build(&b, "offline.stress.test", 1);
  reg_t *reg = reg_new(&config);
  reg_config_t empty = {0};
  reg_t *other = reg_new(&empty);
  held.reg = reg;

  pthread_t reader, barrier;
  ASSERT_EQ(pthread_create(&reader, NULL, offline_reader_main, NULL), 0);
  while (!atomic_load(&held.looked_up))
    sched_yield();
  build(&b, "offline.stress.test", 2);
  ASSERT_EQ(reg_replace_all(reg, &config), 0);
  /* Nothing but the reader holds the old table up now. */
  reg_thread_offline();
  ASSERT_EQ(pthread_create(&barrier, NULL, barrier_main, other), 0);
  /* Time for a grace period to end, were the reader offline. */
  struct timespec pause = {.tv_nsec = 200 * 1000 * 1000};
  nanosleep(&pause, NULL);
  ASSERT(!atomic_load(&held.barrier_done));
  atomic_store(&held.may_check, true);
  ASSERT_EQ(pthread_join(reader, NULL), 0);
  ASSERT(atomic_load(&held.checked));
  ASSERT_EQ(pthread_join(barrier, NULL), 0);
  ASSERT(atomic_load(&held.barrier_done));
  reg_thread_online();
  reg_free(reg);
  reg_thread_unregister();
}

static void test_lookup_while_offline_holds_the_table(void) {
  lookup_while_offline_holds_the_table(false);
}

static void test_batch_while_offline_holds_the_table(void) {
  lookup_while_offline_holds_the_table(true);
}

/* ---- lookups while the lookup index is rebuilt ----------------------------
 */

/* The writer churns names in and out, which fills the lookup index with
 * tombstones and rebuilds it again and again, while readers look up
 * pinned names: names the writer replaces but never removes, so every
 * lookup of one must find it. Pinned names and half the churn share the
 * low 9 bits of their hash: they probe from the same word, across each
 * other's tombstones and around the end of the index. */
enum {
  PINNED = 32,
  CLASH_POOL = 200, /* churned names that clash with the pinned ones */
  CLASH_LIVE = 100,
  FRESH_LIVE = 60, /* churned names of their own, never used again */
  CHURN_STEPS = 40000,
};

static char pinned[PINNED][40], clash[CLASH_POOL][40];

static void *pinned_reader_main(void *arg) {
  reader_t *r = arg;
  reg_thread_register();
  uint64_t n = 0;
  while (!atomic_load(&writer_done) && n < MAX_READS) {
    unsigned i = (unsigned)rand_r(&r->seed) % PINNED;
    unsigned c = (unsigned)rand_r(&r->seed) % CLASH_POOL;
    const reg_device_t *d, *other = NULL;
    if (n % 2) {
      d = reg_lookup(r->reg, pinned[i], strlen(pinned[i]));
    } else {
      const char *batch[2] = {clash[c], pinned[i]};
      size_t lens[2] = {strlen(clash[c]), strlen(pinned[i])};
      const reg_device_t *got[2];
      reg_lookup_many(r->reg, 2, batch, lens, got);
      other = got[0];
      d = got[1];
    }
    if (d == NULL)
      TEST_FAIL_("pinned %s not found", pinned[i]);
    verify(d, pinned[i]);
    if (other != NULL)
      verify(other, clash[c]);
    if (++n % 64 == 0)
      reg_quiescent();
  }
  atomic_fetch_add(&checked, n);
  reg_thread_unregister();
  return NULL;
}

static void test_pinned_names_during_index_rebuilds(void) {
  int k = 0;
  for (int i = 0; i < PINNED; i++)
    clashing_name("p", "rebuild.test", &k, pinned[i], sizeof pinned[i]);
  for (int i = 0; i < CLASH_POOL; i++)
    clashing_name("c", "rebuild.test", &k, clash[i], sizeof clash[i]);
  static built_t b[PINNED];
  reg_config_t config = {.devices = xcalloc(PINNED, sizeof(reg_device_t)),
                         .n_devices = PINNED};
  for (int i = 0; i < PINNED; i++) {
    build(&b[i], pinned[i], 1);
    config.devices[i] = b[i].device;
  }
  reg_thread_register();
  reg_t *reg = reg_new(&config);
  free(config.devices);
  atomic_store(&writer_done, false);
  atomic_store(&checked, 0);

  enum { READERS = 2 };
  reader_t readers[READERS];
  for (int i = 0; i < READERS; i++) {
    readers[i].reg = reg;
    readers[i].seed = 104729u * (unsigned)(i + 1);
    ASSERT_EQ(pthread_create(&readers[i].thread, NULL, pinned_reader_main,
                             &readers[i]),
              0);
  }
  uint32_t gen = 2;
  time_t start = time(NULL);
  for (int w = 0; w < CHURN_STEPS && time(NULL) - start < TIME_LIMIT_S; w++) {
    built_t one;
    char fresh[40];
    build(&one, clash[w % CLASH_POOL], gen++);
    ASSERT_EQ(reg_update_device(reg, &one.device), 0);
    int rc = reg_remove_device(reg, clash[(w + CLASH_LIVE) % CLASH_POOL]);
    ASSERT(rc == 0 || rc == -ENOENT);
    snprintf(fresh, sizeof fresh, "f%d.rebuild.test", w);
    build(&one, fresh, gen++);
    ASSERT_EQ(reg_update_device(reg, &one.device), 0);
    if (w >= FRESH_LIVE) {
      snprintf(fresh, sizeof fresh, "f%d.rebuild.test", w - FRESH_LIVE);
      ASSERT_EQ(reg_remove_device(reg, fresh), 0);
    }
    if (w % 8 == 0) {
      build(&one, pinned[w / 8 % PINNED], gen++);
      ASSERT_EQ(reg_update_device(reg, &one.device), 0);
    }
    reg_quiescent();
  }
  atomic_store(&writer_done, true);
  for (int i = 0; i < READERS; i++)
    ASSERT_EQ(pthread_join(readers[i].thread, NULL), 0);
  ASSERT(atomic_load(&checked) > 0);
  printf("# %ju lookups of pinned names checked\n",
         (uintmax_t)atomic_load(&checked));
  ASSERT_EQ(reg_count(reg), PINNED + CLASH_LIVE + FRESH_LIVE);
  reg_free(reg);
  reg_thread_unregister();
}

int main(void) {
  RUN_TEST(test_readers_during_updates_and_swaps);
  RUN_TEST(test_published_walks_during_updates);
  RUN_TEST(test_pinned_names_during_index_rebuilds);
  RUN_TEST(test_lookup_while_offline_holds_the_table);
  RUN_TEST(test_batch_while_offline_holds_the_table);
  return 0;
}
