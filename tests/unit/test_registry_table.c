/* SPDX-License-Identifier: MIT */
/* test_registry_table.c -- lookups, wildcards, published batches and the
 * target policy */
#include "registry/registry.h"
#include "registry/registry_int.h"
#include "tests/test.h"
#include "tests/unit/clashing_names.h"

#include <errno.h>

static reg_device_t device(const char *name, bool enabled) {
  reg_device_t d = {0};
  d.name = (char *)name;
  d.enabled = enabled;
  d.wildcard = name[0] == '*';
  return d;
}

static const reg_device_t *lookup(const reg_t *reg, const char *name) {
  return reg_lookup(reg, name, strlen(name));
}

/* The name of what name finds, or NULL. */
static const char *found(const reg_t *reg, const char *name) {
  const reg_device_t *d = lookup(reg, name);
  return d ? d->name : NULL;
}

#define ASSERT_FINDS(reg, name, expected)                                      \
  do {                                                                         \
    const char *e_ = (expected), *g_ = found((reg), (name));                   \
    if ((e_ == NULL) != (g_ == NULL) || (e_ && strcmp(e_, g_) != 0))           \
      TEST_FAIL_("lookup %s: expected %s, found %s", (name),                   \
                 e_ ? e_ : "nothing", g_ ? g_ : "nothing");                    \
  } while (0)

static void test_exact_and_wildcard(void) {
  reg_device_t devices[] = {
      device("cam.example.net", true),
      device("*.cam.example.net", true),
      device("exact.cam.example.net", true),
      device("*.example.net", true),
      device("off.example.net", false),
      device("*.off2.example.net", false),
  };
  reg_config_t config = {.devices = devices,
                         .n_devices = sizeof devices / sizeof devices[0]};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), 6);
  ASSERT_FINDS(reg, "cam.example.net", "cam.example.net");
  /* Exact beats wildcard; the nearest wildcard wins. */
  ASSERT_FINDS(reg, "exact.cam.example.net", "exact.cam.example.net");
  ASSERT_FINDS(reg, "a.cam.example.net", "*.cam.example.net");
  ASSERT_FINDS(reg, "a.b.cam.example.net", "*.cam.example.net");
  ASSERT_FINDS(reg, "other.example.net", "*.example.net");
  /* A wildcard covers names below it, not its own base name. */
  ASSERT_FINDS(reg, "example.net", NULL);
  /* Disabled devices are not found, and do not fall through. */
  ASSERT_FINDS(reg, "off.example.net", NULL);
  ASSERT_FINDS(reg, "x.off2.example.net", NULL);
  ASSERT_FINDS(reg, "nothing.test", NULL);
  ASSERT_FINDS(reg, "", NULL);
  /* Lookups take a length: the rest of the buffer is not part of it. */
  ASSERT_STR_EQ(reg_lookup(reg, "cam.example.netXYZ", 15)->name,
                "cam.example.net");
  ASSERT(reg_lookup(reg, "cam.example.ne", 14) == NULL);
  reg_free(reg);
}

static void test_many_devices(void) {
  enum { N = 5000 };
  static char names[N][32];
  static reg_device_t devices[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "dev%d.example.net", i);
    devices[i] = device(names[i], true);
  }
  reg_config_t config = {.devices = devices, .n_devices = N};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), N);
  for (int i = 0; i < N; i++)
    ASSERT_FINDS(reg, names[i], names[i]);
  ASSERT_FINDS(reg, "dev5000.example.net", NULL);
  reg_free(reg);
}

static void test_empty_registry(void) {
  reg_config_t config = {0};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), 0);
  ASSERT_FINDS(reg, "a.test", NULL);
  reg_free(reg);
}

/* The registry keeps its own copies: the config may go away. */
static void test_copies(void) {
  char name[] = "cam.example.net", owner[] = "alice", listener[] = "http";
  core_ip_t addrs[2];
  ASSERT_EQ(core_ip_parse("192.0.2.7", &addrs[0]), 0);
  ASSERT_EQ(core_ip_parse("2001:db8::7", &addrs[1]), 0);
  reg_port_t ports[] = {{listener, 10080}};
  reg_device_t d = device(name, true);
  d.owner = owner;
  d.addrs = addrs;
  d.n_addrs = 2;
  d.ports = ports;
  d.n_ports = 1;
  d.proxy_protocol = REG_PROXY_PROTOCOL_V2;
  reg_config_t config = {.devices = &d, .n_devices = 1};
  reg_t *reg = reg_new(&config);
  memset(name, 'x', sizeof name - 1);
  memset(owner, 'x', sizeof owner - 1);
  memset(listener, 'x', sizeof listener - 1);
  memset(addrs, 0, sizeof addrs);
  ports[0].port = 1;

  const reg_device_t *got = lookup(reg, "cam.example.net");
  ASSERT(got != NULL);
  ASSERT_STR_EQ(got->owner, "alice");
  ASSERT_EQ(got->n_addrs, 2);
  char buf[64];
  ASSERT_STR_EQ(core_ip_format(&got->addrs[1], buf, sizeof buf), "2001:db8::7");
  ASSERT_EQ(reg_device_port(got, "http"), 10080);
  ASSERT_EQ(got->proxy_protocol, REG_PROXY_PROTOCOL_V2);
  ASSERT(got->target_host == NULL);
  reg_free(reg);
}

static int count_visit(const reg_device_t *d, void *arg) {
  size_t *n = arg;
  ASSERT(d->name != NULL);
  (*n)++;
  return 0;
}

static int stop_at_b(const reg_device_t *d, void *arg) {
  (void)arg;
  return strcmp(d->name, "b.test") == 0 ? 42 : 0;
}

static void test_updates(void) {
  reg_device_t devices[] = {device("a.test", true), device("b.test", true),
                            device("*.w.test", true)};
  reg_config_t config = {.devices = devices, .n_devices = 3};
  reg_t *reg = reg_new(&config);
  uint64_t v0 = reg_version(reg);

  /* Replace one entry, add one, remove one: O(1) each, seen at once. */
  core_ip_t ip;
  ASSERT_EQ(core_ip_parse("198.51.100.1", &ip), 0);
  reg_device_t a2 = device("a.test", true);
  a2.addrs = &ip;
  a2.n_addrs = 1;
  ASSERT_EQ(reg_update_device(reg, &a2), 0);
  ASSERT_EQ(lookup(reg, "a.test")->n_addrs, 1);
  ASSERT_EQ(reg_count(reg), 3);
  reg_device_t exact = device("x.w.test", true);
  ASSERT_EQ(reg_update_device(reg, &exact), 0);
  ASSERT_EQ(reg_count(reg), 4);
  ASSERT_FINDS(reg, "x.w.test", "x.w.test");
  ASSERT_FINDS(reg, "y.w.test", "*.w.test");
  ASSERT_EQ(reg_remove_device(reg, "x.w.test"), 0);
  ASSERT_FINDS(reg, "x.w.test", "*.w.test");
  ASSERT_EQ(reg_remove_device(reg, "x.w.test"), -ENOENT);
  ASSERT_EQ(reg_count(reg), 3);
  /* Disabling hides the name. */
  reg_device_t b_off = device("b.test", false);
  ASSERT_EQ(reg_update_device(reg, &b_off), 0);
  ASSERT_FINDS(reg, "b.test", NULL);
  reg_device_t bad = device("", true);
  ASSERT_EQ(reg_update_device(reg, &bad), -EINVAL);
  ASSERT(reg_version(reg) > v0);

  size_t n = 0;
  ASSERT_EQ(reg_foreach(reg, count_visit, &n), 0);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(reg_foreach(reg, stop_at_b, NULL), 42);

  /* A full reload swaps everything at once. */
  reg_device_t next[] = {device("c.test", true), device("*.test", true)};
  reg_config_t config2 = {.devices = next, .n_devices = 2};
  uint64_t v1 = reg_version(reg);
  ASSERT_EQ(reg_replace_all(reg, &config2), 0);
  ASSERT(reg_version(reg) > v1);
  ASSERT_EQ(reg_count(reg), 2);
  ASSERT_FINDS(reg, "c.test", "c.test");
  ASSERT_FINDS(reg, "a.test", "*.test");
  ASSERT_FINDS(reg, "b.test", "*.test");
  /* Updates after the swap change the new table. */
  ASSERT_EQ(reg_update_device(reg, &b_off), 0);
  ASSERT_FINDS(reg, "b.test", NULL);
  ASSERT_EQ(reg_count(reg), 3);
  /* A wildcard an update adds below one the reload gave is found at once
   * (misses try only the wildcards the table may hold), and once it is
   * removed the one above it answers again. */
  reg_device_t wild = device("*.new.test", true);
  ASSERT_FINDS(reg, "a.new.test", "*.test");
  ASSERT_EQ(reg_update_device(reg, &wild), 0);
  ASSERT_FINDS(reg, "a.new.test", "*.new.test");
  ASSERT_FINDS(reg, "a.b.new.test", "*.new.test");
  ASSERT_EQ(reg_remove_device(reg, "*.new.test"), 0);
  ASSERT_FINDS(reg, "a.new.test", "*.test");
  reg_free(reg);

  /* In a table with no wildcard at all, a miss finds nothing. */
  reg_device_t one[] = {device("only.test", true)};
  reg_config_t config3 = {.devices = one, .n_devices = 1};
  reg = reg_new(&config3);
  ASSERT_FINDS(reg, "x.only.test", NULL);
  ASSERT_FINDS(reg, "only.test", "only.test");
  reg_device_t deep = device("*.only.test", true);
  ASSERT_EQ(reg_update_device(reg, &deep), 0);
  ASSERT_FINDS(reg, "x.only.test", "*.only.test");
  reg_free(reg);
}

/* reg_lookup_many answers each name as reg_lookup does, whatever the
 * batch's size against its groups: hits, disabled devices, misses,
 * wildcards and lengths no name has. */
static void test_lookup_many(void) {
  enum { DEVICES = 3000, QUERIES = 1000 };
  static char dnames[DEVICES][32], qnames[QUERIES][CORE_NAME_MAX + 8];
  static reg_device_t devices[DEVICES];
  static const char *batch[QUERIES];
  static size_t lens[QUERIES];
  static const reg_device_t *got[QUERIES];
  for (int i = 0; i < DEVICES; i++) {
    snprintf(dnames[i], sizeof dnames[i], i % 10 ? "m%d.test" : "*.w%d.test",
             i);
    devices[i] = device(dnames[i], i % 7 != 0);
  }
  reg_config_t config = {.devices = devices, .n_devices = DEVICES};
  reg_t *reg = reg_new(&config);
  unsigned seed = 99;
  for (int i = 0; i < QUERIES; i++) {
    int k = rand_r(&seed) % (DEVICES + 500);
    switch (rand_r(&seed) % 4) {
    case 0:
      snprintf(qnames[i], sizeof qnames[i], "m%d.test", k);
      break;
    case 1:
      snprintf(qnames[i], sizeof qnames[i], "x.y.w%d.test", k);
      break;
    case 2:
      snprintf(qnames[i], sizeof qnames[i], "w%d.test", k);
      break;
    default:
      memset(qnames[i], 'a', sizeof qnames[i] - 1);
      break;
    }
    batch[i] = qnames[i];
    lens[i] = strlen(qnames[i]);
  }
  lens[3] = 0;
  size_t sizes[] = {1, 15, 16, 17, 33, QUERIES};
  size_t hits = 0, misses = 0;
  static const reg_device_t poison = {.name = "(not written)"};
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    for (size_t i = 0; i < QUERIES; i++)
      got[i] = &poison;
    for (size_t at = 0; at < QUERIES; at += sizes[s]) {
      size_t m = QUERIES - at < sizes[s] ? QUERIES - at : sizes[s];
      reg_lookup_many(reg, m, batch + at, lens + at, got + at);
    }
    for (size_t i = 0; i < QUERIES; i++) {
      const reg_device_t *want = reg_lookup(reg, batch[i], lens[i]);
      if (got[i] != want)
        TEST_FAIL_("batch of %zu: %.*s: got %s, want %s", sizes[s],
                   (int)lens[i], batch[i], got[i] ? got[i]->name : "nothing",
                   want ? want->name : "nothing");
      hits += want != NULL;
      misses += want == NULL;
    }
  }
  /* Every kind of answer was asked for. */
  ASSERT(hits > QUERIES);
  ASSERT(misses > QUERIES);
  reg_free(reg);
}

/* Growing from empty to many, one update at a time (the table and its
 * index resize themselves), then shrinking back, again and again. */
static void test_grow_and_shrink(void) {
  enum { N = 20000 };
  static char names[N][32];
  reg_config_t empty = {0};
  reg_t *reg = reg_new(&empty);
  for (int i = 0; i < N; i++)
    snprintf(names[i], sizeof names[i], "d%d.grow.test", i);
  /* Round 0 adds every name, later rounds the removed half again: removed
   * names leave tombstones in the lookup index, which adding them back
   * reuses (no name twice), and the churn rebuilds the index without
   * losing a name. */
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < N; i += round ? 2 : 1) {
      reg_device_t d = device(names[i], true);
      ASSERT_EQ(reg_update_device(reg, &d), 0);
    }
    ASSERT_EQ(reg_count(reg), N);
    for (int i = 0; i < N; i++)
      ASSERT_FINDS(reg, names[i], names[i]);
    for (int i = 0; i < N; i += 2)
      ASSERT_EQ(reg_remove_device(reg, names[i]), 0);
    ASSERT_EQ(reg_count(reg), N / 2);
    for (int i = 0; i < N; i++)
      ASSERT_FINDS(reg, names[i], i % 2 ? names[i] : NULL);
  }
  for (int i = 1; i < N; i += 2)
    ASSERT_EQ(reg_remove_device(reg, names[i]), 0);
  ASSERT_EQ(reg_count(reg), 0);
  for (int i = 0; i < N; i++) {
    ASSERT_FINDS(reg, names[i], NULL);
    ASSERT_EQ(reg_remove_device(reg, names[i]), -ENOENT);
  }
  reg_free(reg);
}

/* Every name of the pool is found exactly when the model says so, by each
 * kind of lookup. */
static void check_clash_pool(const reg_t *reg, char (*pool)[32],
                             const bool *present, size_t n) {
  static const char *batch[512];
  static size_t lens[512];
  static const reg_device_t *got[512];
  for (size_t i = 0; i < n; i++) {
    batch[i] = pool[i];
    lens[i] = strlen(pool[i]);
  }
  reg_lookup_many(reg, n, batch, lens, got);
  size_t live = 0;
  for (size_t i = 0; i < n; i++) {
    ASSERT_FINDS(reg, pool[i], present[i] ? pool[i] : NULL);
    const reg_device_t *d = reg_find(reg, pool[i], lens[i]);
    if ((d != NULL) != present[i] || got[i] != d)
      TEST_FAIL_("%s: present %d, reg_find %s, reg_lookup_many %s", pool[i],
                 present[i], d ? d->name : "nothing",
                 got[i] ? got[i]->name : "nothing");
    live += present[i];
  }
  ASSERT_EQ(reg_count(reg), live);
}

/* Updates, removals, re-adds and reloads of names that all probe the
 * index from the same word, against a model of which are present:
 * tombstone reuse, rebuilds and wrap-around never lose a name or keep one
 * twice (a removed name found again would be the second copy). */
static void test_index_collisions(void) {
  enum { POOL = 300, OPS = 6000 };
  static char pool[POOL][32];
  static bool present[POOL];
  static reg_device_t devices[POOL + 1];
  int k = 0;
  for (int i = 0; i < POOL; i++)
    clashing_name("n", "clash.test", &k, pool[i], sizeof pool[i]);
  reg_config_t empty = {0};
  reg_t *reg = reg_new(&empty);
  unsigned seed = 2026;
  for (int op = 0; op < OPS; op++) {
    int i = rand_r(&seed) % POOL;
    int what = rand_r(&seed) % 16;
    if (what < 8) {
      reg_device_t d = device(pool[i], true);
      ASSERT_EQ(reg_update_device(reg, &d), 0);
      present[i] = true;
    } else if (what < 15) {
      ASSERT_EQ(reg_remove_device(reg, pool[i]), present[i] ? 0 : -ENOENT);
      present[i] = false;
    } else if (op % 7 == 0) {
      /* A reload with the present names, one of them given twice: the
       * first wins, in the index as in the table. */
      size_t n = 0;
      for (int j = 0; j < POOL; j++)
        if (present[j])
          devices[n++] = device(pool[j], true);
      if (n > 0)
        devices[n++] = device(devices[0].name, false);
      reg_config_t config = {.devices = devices, .n_devices = n};
      ASSERT_EQ(reg_replace_all(reg, &config), 0);
      if (n > 0)
        ASSERT_FINDS(reg, devices[0].name, devices[0].name);
    }
    ASSERT_FINDS(reg, pool[i], present[i] ? pool[i] : NULL);
    if (op % 50 == 0)
      check_clash_pool(reg, pool, present, POOL);
  }
  check_clash_pool(reg, pool, present, POOL);
  reg_free(reg);
}

static bool allowed(const reg_config_t *config, const char *ip_text,
                    uint16_t port) {
  core_ip_t ip;
  const char *why = NULL;
  ASSERT_EQ(core_ip_parse(ip_text, &ip), 0);
  bool ok = reg_target_allowed(config, &ip, port, &why);
  ASSERT(ok || why != NULL);
  return ok;
}

/* ---- published batches ----------------------------------------------------
 */

typedef struct text {
  char buf[512];
} text_t;

static int append_name(const char *name, void *arg) {
  text_t *t = arg;
  size_t len = strlen(t->buf);
  snprintf(t->buf + len, sizeof t->buf - len, "%s%s", len ? " " : "", name);
  return 0;
}

static int by_text(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names visible in reg's published state, sorted, space-separated. */
static const char *published_names(const reg_t *reg, uint64_t *number) {
  static text_t t;
  text_t raw = {""};
  char *words[32];
  size_t n = 0;
  ASSERT_EQ(reg_foreach_published(reg, number, append_name, &raw), 0);
  for (char *w = strtok(raw.buf, " "); w && n < 32; w = strtok(NULL, " "))
    words[n++] = w;
  qsort(words, n, sizeof *words, by_text);
  t.buf[0] = '\0';
  for (size_t i = 0; i < n; i++)
    append_name(words[i], &t);
  return t.buf;
}

/* Each batch as "N: +name -name ..." lines. */
static int append_batch(uint64_t number, const reg_change_t *changes, size_t n,
                        void *arg) {
  text_t *t = arg;
  size_t len = strlen(t->buf);
  len += (size_t)snprintf(t->buf + len, sizeof t->buf - len,
                          "%ju:", (uintmax_t)number);
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(t->buf + len, sizeof t->buf - len, " %c%s",
                            changes[i].visible ? '+' : '-', changes[i].name);
  snprintf(t->buf + len, sizeof t->buf - len, "\n");
  return 0;
}

static int count_batch(uint64_t number, const reg_change_t *changes, size_t n,
                       void *arg) {
  (void)number;
  (void)changes;
  (void)n;
  (*(size_t *)arg)++;
  return 0;
}

static const char *batches(const reg_t *reg, uint64_t from, int *rc) {
  static text_t t;
  uint64_t to = 0;
  t.buf[0] = '\0';
  *rc = reg_batches_since(reg, from, &to, append_batch, &t);
  ASSERT_EQ(to, reg_published(reg));
  return t.buf;
}

static void test_published_batches(void) {
  reg_device_t devices[] = {device("a.test", true), device("b.test", false)};
  reg_config_t config = {.devices = devices, .n_devices = 2};
  reg_t *reg = reg_new(&config);
  uint64_t number = 99;
  int rc;
  ASSERT_EQ(reg_published(reg), 0);
  ASSERT_STR_EQ(published_names(reg, &number), "a.test");
  ASSERT_EQ(number, 0);
  ASSERT(!reg_publish(reg)); /* nothing changed */

  /* Lookups see changes at once; the published state does not. */
  reg_device_t c = device("c.test", true), a_off = device("a.test", false);
  ASSERT_EQ(reg_update_device(reg, &c), 0);
  ASSERT_EQ(reg_update_device(reg, &a_off), 0);
  ASSERT_FINDS(reg, "c.test", "c.test");
  ASSERT_STR_EQ(published_names(reg, &number), "a.test");
  ASSERT(reg_publish(reg));
  ASSERT_STR_EQ(published_names(reg, &number), "c.test");
  ASSERT_EQ(number, 1);
  ASSERT_STR_EQ(batches(reg, 0, &rc), "1: -a.test +c.test\n");
  ASSERT_EQ(rc, 0);

  /* A change that leaves every name's visibility alone is still a batch,
   * an empty one; so is a name hidden and shown again. */
  c.n_ports = 0;
  ASSERT_EQ(reg_update_device(reg, &c), 0);
  ASSERT(reg_publish(reg));
  ASSERT_EQ(reg_remove_device(reg, "c.test"), 0);
  ASSERT_EQ(reg_update_device(reg, &c), 0);
  ASSERT(reg_publish(reg));
  ASSERT_STR_EQ(batches(reg, 1, &rc), "2:\n3:\n");
  ASSERT_STR_EQ(batches(reg, 3, &rc), "");
  ASSERT_EQ(rc, 0);
  batches(reg, 4, &rc);
  ASSERT_EQ(rc, -ENOENT);

  /* A reload: names compared between the tables. */
  reg_device_t next[] = {device("a.test", true), device("d.test", true),
                         device("b.test", false)};
  reg_config_t config2 = {.devices = next, .n_devices = 3};
  ASSERT_EQ(reg_replace_all(reg, &config2), 0);
  ASSERT_STR_EQ(published_names(reg, &number), "c.test");
  ASSERT(reg_publish(reg));
  ASSERT_STR_EQ(published_names(reg, &number), "a.test d.test");
  ASSERT_STR_EQ(batches(reg, 3, &rc), "4: +a.test -c.test +d.test\n");
  ASSERT_STR_EQ(batches(reg, 0, &rc),
                "1: -a.test +c.test\n2:\n3:\n4: +a.test -c.test +d.test\n");

  /* The history keeps the last REG_HISTORY_BATCHES batches. */
  for (int i = 0; i < REG_HISTORY_BATCHES; i++) {
    reg_device_t e = device("e.test", i % 2 == 0);
    ASSERT_EQ(reg_update_device(reg, &e), 0);
    ASSERT(reg_publish(reg));
  }
  uint64_t last = reg_published(reg), to = 0;
  size_t n = 0;
  ASSERT_EQ(reg_batches_since(reg, last - REG_HISTORY_BATCHES - 1, &to,
                              count_batch, &n),
            -ENOENT);
  ASSERT_EQ(
      reg_batches_since(reg, last - REG_HISTORY_BATCHES, &to, count_batch, &n),
      0);
  ASSERT_EQ(n, REG_HISTORY_BATCHES);
  reg_free(reg);
}

/* A batch changing more names than the history may hold is not kept. */
static void test_published_too_big(void) {
  reg_config_t empty = {0};
  reg_t *reg = reg_new(&empty);
  size_t n = REG_HISTORY_CHANGES + 1;
  reg_config_t big = {.devices = xcalloc(n, sizeof(reg_device_t)),
                      .n_devices = n};
  char(*names)[24] = xcalloc(n, sizeof *names);
  for (size_t i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "n%zu.test", i);
    big.devices[i] = device(names[i], true);
  }
  reg_device_t one = device("one.test", true);
  ASSERT_EQ(reg_update_device(reg, &one), 0);
  ASSERT(reg_publish(reg));
  ASSERT_EQ(reg_replace_all(reg, &big), 0);
  ASSERT(reg_publish(reg));
  int rc;
  batches(reg, 1, &rc);
  ASSERT_EQ(rc, -ENOENT);
  ASSERT_STR_EQ(batches(reg, 2, &rc), "");
  ASSERT_EQ(rc, 0);
  free(names);
  free(big.devices);
  reg_free(reg);
}

/* A reload's batch is exactly the names whose visibility differs, over
 * thousands of names: every name of the new table is looked up in the old
 * one, in groups, and the old one is walked only when names are gone;
 * this checks both against the sets they should find. */
#define FLIP_NAMES 3000

typedef struct flips {
  signed char want[FLIP_NAMES]; /* +1 shown, -1 hidden, 0 no change */
  size_t seen, wrong;
} flips_t;

static int check_flips(uint64_t number, const reg_change_t *changes, size_t n,
                       void *arg) {
  (void)number;
  flips_t *f = arg;
  for (size_t i = 0; i < n; i++) {
    unsigned k = 0;
    if (sscanf(changes[i].name, "f%u.test", &k) != 1 || k >= FLIP_NAMES ||
        f->want[k] != (changes[i].visible ? 1 : -1))
      f->wrong++;
    else
      f->want[k] = 0;
    f->seen++;
  }
  return 0;
}

/* One draw of before and after over FLIP_NAMES names. With keep_all, every
 * name before is still there after (enabled or not), so the compare never
 * walks the old table for names gone. The first tenth of the names are
 * put in force by updates first (entries of their own, not the arena's). */
static void flips_case(unsigned seed, bool keep_all) {
  static char names[FLIP_NAMES][24];
  static reg_device_t before[FLIP_NAMES], after[FLIP_NAMES];
  static flips_t f;
  memset(&f, 0, sizeof f);
  size_t n_before = 0, n_after = 0, n_want = 0;
  int state[FLIP_NAMES];
  for (int i = 0; i < FLIP_NAMES; i++) {
    snprintf(names[i], sizeof names[i], "f%d.test", i);
    /* Each name: absent, disabled or enabled, before and after. */
    int b = rand_r(&seed) % 3, a = rand_r(&seed) % 3;
    if (b)
      before[n_before++] = device(names[i], b == 2);
    if (keep_all && b && !a)
      a = 1 + rand_r(&seed) % 2;
    if (a)
      after[n_after++] = device(names[i], a == 2);
    state[i] = a;
  }
  reg_config_t c1 = {.devices = before, .n_devices = n_before};
  reg_config_t c2 = {.devices = after, .n_devices = n_after};
  reg_t *reg = reg_new(&c1);
  for (int i = 0; i < FLIP_NAMES / 10; i++) {
    reg_device_t d = device(names[i], true);
    ASSERT_EQ(reg_update_device(reg, &d), 0);
    if (keep_all && state[i] == 0) {
      d.enabled = false; /* the update's name stays too */
      after[n_after++] = d;
      state[i] = 1;
    }
  }
  c2.n_devices = n_after;
  ASSERT(reg_publish(reg));
  for (int i = 0; i < FLIP_NAMES; i++) {
    bool was = reg_find(reg, names[i], strlen(names[i])) != NULL &&
               reg_find(reg, names[i], strlen(names[i]))->enabled;
    f.want[i] = (signed char)((state[i] == 2) - was);
    n_want += f.want[i] != 0;
  }
  ASSERT_EQ(reg_replace_all(reg, &c2), 0);
  ASSERT(reg_publish(reg));
  uint64_t to = 0;
  ASSERT_EQ(reg_batches_since(reg, 1, &to, check_flips, &f), 0);
  ASSERT_EQ(to, 2);
  ASSERT_EQ(f.wrong, 0);
  ASSERT_EQ(f.seen, n_want);
  ASSERT(n_want > FLIP_NAMES / 4); /* the draw did flip many */
  reg_free(reg);
}

static void test_reload_flips_many(void) {
  flips_case(4242, false);
}

static void test_reload_flips_all_kept(void) {
  flips_case(777, true);
}

/* A walk meets every name in the table exactly once after churn that
 * leaves tombstones, reuses them and rebuilds the index: names loaded,
 * half removed, a third of those added again, the rest updated in place,
 * then enough new names that the index grows. */
#define WALK_NAMES 2000

typedef struct walk_seen {
  unsigned char times[2 * WALK_NAMES];
  size_t odd;
} walk_seen_t;

static int note_walked(const reg_device_t *d, void *arg) {
  walk_seen_t *w = arg;
  unsigned k = 0;
  if (sscanf(d->name, "w%u.test", &k) != 1 || k >= 2 * WALK_NAMES)
    w->odd++;
  else
    w->times[k]++;
  return 0;
}

static void test_walk_after_churn(void) {
  static char names[2 * WALK_NAMES][24];
  static reg_device_t devs[WALK_NAMES];
  static walk_seen_t seen;
  bool in[2 * WALK_NAMES] = {0};
  for (int i = 0; i < 2 * WALK_NAMES; i++)
    snprintf(names[i], sizeof names[i], "w%d.test", i);
  for (int i = 0; i < WALK_NAMES; i++) {
    devs[i] = device(names[i], i % 5 != 0);
    in[i] = true;
  }
  reg_config_t c = {.devices = devs, .n_devices = WALK_NAMES};
  reg_t *reg = reg_new(&c);
  for (int i = 0; i < WALK_NAMES; i += 2) {
    ASSERT_EQ(reg_remove_device(reg, names[i]), 0);
    in[i] = false;
  }
  for (int i = 0; i < WALK_NAMES; i += 6) {
    reg_device_t d = device(names[i], true);
    ASSERT_EQ(reg_update_device(reg, &d), 0);
    in[i] = true;
  }
  for (int i = 1; i < WALK_NAMES; i += 2) {
    reg_device_t d = device(names[i], false);
    ASSERT_EQ(reg_update_device(reg, &d), 0);
  }
  for (int i = WALK_NAMES; i < 2 * WALK_NAMES; i++) {
    reg_device_t d = device(names[i], true);
    ASSERT_EQ(reg_update_device(reg, &d), 0);
    in[i] = true;
  }
  size_t want = 0;
  for (int i = 0; i < 2 * WALK_NAMES; i++)
    want += in[i];
  memset(&seen, 0, sizeof seen);
  ASSERT_EQ(reg_foreach(reg, note_walked, &seen), 0);
  ASSERT_EQ(seen.odd, 0);
  for (int i = 0; i < 2 * WALK_NAMES; i++)
    if (seen.times[i] != (in[i] ? 1 : 0))
      TEST_FAIL_("%s walked %u times", names[i], seen.times[i]);
  ASSERT_EQ(reg_count(reg), want);
  reg_free(reg);
}

static void test_policy_defaults(void) {
  reg_config_t config = {0};
  ASSERT(allowed(&config, "203.0.113.7", 80));
  ASSERT(allowed(&config, "2001:db8::7", 80));
  const char *refused[] = {
      "127.0.0.1",   "127.1.2.3",       "0.0.0.0",  "169.254.1.1",
      "224.0.0.1",   "255.255.255.255", "10.1.2.3", "172.16.0.1",
      "192.168.1.1", "100.64.0.1",      "::1",      "::",
      "fe80::1",     "ff02::1",         "fd00::1",  "::ffff:127.0.0.1"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    if (allowed(&config, refused[i], 80))
      TEST_FAIL_("%s allowed by default", refused[i]);
}

static void test_policy_allow_list(void) {
  core_prefix_t allow[3];
  const char *why;
  ASSERT_EQ(core_prefix_parse("127.0.0.0/8", &allow[0], &why), 0);
  ASSERT_EQ(core_prefix_parse("198.51.100.0/24", &allow[1], &why), 0);
  ASSERT_EQ(core_prefix_parse("0.0.0.0/0", &allow[2], &why), 0);
  reg_config_t config = {0};
  config.proxy.allow_targets = allow;
  config.proxy.n_allow_targets = 2;
  ASSERT(allowed(&config, "127.0.0.1", 10080));
  ASSERT(allowed(&config, "198.51.100.9", 80));
  ASSERT(!allowed(&config, "203.0.113.7", 80));
  ASSERT(!allowed(&config, "::1", 80));
  /* 0.0.0.0/0 lets public addresses through but names no special range. */
  config.proxy.allow_targets = &allow[2];
  config.proxy.n_allow_targets = 1;
  ASSERT(allowed(&config, "203.0.113.7", 80));
  ASSERT(!allowed(&config, "127.0.0.1", 80));
  ASSERT(!allowed(&config, "10.0.0.1", 80));
}

static void test_policy_own_listener(void) {
  core_prefix_t allow;
  const char *why;
  ASSERT_EQ(core_prefix_parse("127.0.0.0/8", &allow, &why), 0);
  reg_listener_t listeners[2] = {{.name = "http"}, {.name = "any"}};
  ASSERT_EQ(core_hostport_parse("127.0.0.1:8080", &listeners[0].addr, &why), 0);
  ASSERT_EQ(core_hostport_parse("0.0.0.0:9090", &listeners[1].addr, &why), 0);
  reg_config_t config = {0};
  config.proxy.allow_targets = &allow;
  config.proxy.n_allow_targets = 1;
  config.listeners = listeners;
  config.n_listeners = 2;
  ASSERT(!allowed(&config, "127.0.0.1", 8080));
  ASSERT(allowed(&config, "127.0.0.1", 8081));
  ASSERT(allowed(&config, "127.0.0.2", 8080));
  ASSERT(!allowed(&config, "127.0.0.5", 9090));
}

int main(void) {
  RUN_TEST(test_exact_and_wildcard);
  RUN_TEST(test_many_devices);
  RUN_TEST(test_empty_registry);
  RUN_TEST(test_copies);
  RUN_TEST(test_updates);
  RUN_TEST(test_lookup_many);
  RUN_TEST(test_grow_and_shrink);
  RUN_TEST(test_index_collisions);
  RUN_TEST(test_published_batches);
  RUN_TEST(test_published_too_big);
  RUN_TEST(test_reload_flips_many);
  RUN_TEST(test_reload_flips_all_kept);
  RUN_TEST(test_walk_after_churn);
  RUN_TEST(test_policy_defaults);
  RUN_TEST(test_policy_allow_list);
  RUN_TEST(test_policy_own_listener);
  return 0;
}
