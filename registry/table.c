/* SPDX-License-Identifier: MIT */
/* table.c -- the name -> device table: RCU reads, one writer */
#include "registry/registry_int.h"

/* The inline fast paths of liburcu (LGPL-2.1) are fine in MIT code. */
#define _LGPL_SOURCE
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* liburcu's QSBR flavour: a read costs nothing; readers announce
 * quiescent points (between loop iterations) and go offline while they
 * block. The table is an index of its own that lookups go through (below)
 * over entries carved from one arena per table.
 *
 * One writer, the control loop, changes entries in place (O(1) each) or
 * builds a whole new table and swaps the one pointer readers follow. What
 * it takes out is freed by call_rcu once every registered thread has
 * passed a quiescent point, so a reader's pointer stays valid until its
 * own next one. */

/* An entry is the device readers get a pointer to and the name, in that
 * order: a lookup touches the device's flags and the name only, which lie
 * a few bytes apart. Ports, addresses and strings of its own follow the
 * name. */
typedef struct entry {
  reg_device_t device;
  uint8_t name_len; /* names are at most CORE_NAME_MAX bytes */
  bool heap;        /* an allocation of its own, else in its table's arena */
  char name[];
} entry_t;

_Static_assert(CORE_NAME_MAX <= UINT8_MAX, "name_len holds a name's length");

/* ---- memory: one arena per table, names shared between entries ----------- */

/* A table built from a configuration holds millions of entries that live
 * and die together, so they are carved from its arena (core_arena_t): no
 * per-entry allocation, no allocator overhead, and a replaced table's
 * memory goes back to the system at once. */

/* Strings many entries share (listener and owner names), kept once per
 * table in its arena. Written by the writer only; readers only follow
 * the pointers entries hold. */
typedef struct pool {
  const char **slots;
  size_t mask, count;
} pool_t;

static const char **pool_slot(const pool_t *p, const char *s, size_t len) {
  size_t i = (size_t)reg_name_hash(s, len) & p->mask;
  for (;; i = (i + 1) & p->mask) {
    const char *got = p->slots[i];
    if (got == NULL || (strncmp(got, s, len) == 0 && got[len] == '\0'))
      return &p->slots[i];
  }
}

static const char *pool_find(const pool_t *p, const char *s) {
  if (p->slots == NULL)
    return NULL;
  return *pool_slot(p, s, strlen(s));
}

static void pool_grow(pool_t *p) {
  pool_t bigger = {.mask = p->slots ? 2 * p->mask + 1 : 15};
  bigger.slots = xcalloc(bigger.mask + 1, sizeof *bigger.slots);
  for (size_t i = 0; p->slots != NULL && i <= p->mask; i++)
    if (p->slots[i] != NULL)
      *pool_slot(&bigger, p->slots[i], strlen(p->slots[i])) = p->slots[i];
  bigger.count = p->count;
  free(p->slots);
  *p = bigger;
}

/* s, kept once in the pool. */
static const char *pool_intern(pool_t *p, core_arena_t *a, const char *s) {
  if (p->slots == NULL || (p->count + 1) * 2 > p->mask + 1)
    pool_grow(p);
  size_t len = strlen(s);
  const char **slot = pool_slot(p, s, len);
  if (*slot == NULL) {
    char *copy = core_arena_alloc(a, len + 1);
    memcpy(copy, s, len + 1);
    *slot = copy;
    p->count++;
  }
  return *slot;
}

/* Which wildcard names a table may hold: one bit per hash, set when a
 * "*." name goes in and never cleared (a removed wildcard only costs a
 * probe that finds nothing until the next reload builds a new table). A
 * name that is not in the table tries the wildcards above it only where
 * their bit is set, so a miss costs one probe, not one per label. */
#define WILD_BITS 4096

typedef struct table_index table_index_t;

typedef struct table {
  table_index_t *index; /* REG_RCU_DEREF / REG_RCU_PUBLISH */
  atomic_uint_least64_t wild[WILD_BITS / 64];
  atomic_size_t count;
  struct rcu_head rcu;
  core_arena_t arena; /* the entries a reload built; writer only */
  pool_t shared;      /* listener and owner names; writer only */
} table_t;

struct reg {
  table_t *table; /* REG_RCU_DEREF / REG_RCU_PUBLISH */
  atomic_uint_fast64_t version;
  hist_t *hist;               /* the published state */
  uint64_t published_version; /* writer: version at the last publish */
};

typedef struct name_key {
  const char *name;
  size_t len;
} name_key_t;

/* ---- threads ------------------------------------------------------------- */

static __thread bool registered;

void reg_thread_register(void) {
  if (!registered) {
    rcu_register_thread();
    registered = true;
  } else if (!rcu_read_ongoing()) {
    rcu_thread_online();
  }
}

char reg_rcu_grace;

void reg_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *head)) {
  REG_TSAN_RELEASE(&reg_rcu_grace);
  call_rcu(head, fn);
}

void reg_thread_unregister(void) {
  if (registered) {
    REG_TSAN_RELEASE(&reg_rcu_grace);
    rcu_unregister_thread();
    registered = false;
  }
}

void reg_quiescent(void) {
  REG_TSAN_RELEASE(&reg_rcu_grace);
  rcu_quiescent_state();
}

void reg_thread_offline(void) {
  REG_TSAN_RELEASE(&reg_rcu_grace);
  rcu_thread_offline();
}

void reg_thread_online(void) {
  rcu_thread_online();
}

/* The writer's calls work from any thread. One not yet registered (a
 * test's main, a command) becomes a reader and stays online, so its own
 * lookups stay safe while liburcu's resize and call_rcu threads work; an
 * offline one is brought online for the call only. Returns whether to go
 * offline again. */
static bool writer_enter(void) {
  if (!registered) {
    rcu_register_thread();
    registered = true;
    return false;
  }
  if (!rcu_read_ongoing()) {
    rcu_thread_online();
    return true;
  }
  return false;
}

static void writer_leave(bool went_online) {
  if (went_online)
    reg_thread_offline();
}

/* Before a read whose result outlives the call: a registered thread that
 * is offline comes back online, and stays so until its next quiescent
 * point, so that the pointer it gets is safe. (An event loop goes offline
 * right before it polls, and the I/O callbacks it runs next read the
 * registry.) A thread that never registered reads unprotected, as it
 * always has. */
static inline void reader_enter(void) {
  if (registered && !rcu_read_ongoing())
    rcu_thread_online();
}

/* ---- entries ------------------------------------------------------------- */

/* The 64 bits at p, any alignment. */
static inline uint64_t load64(const char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* The two halves of a 128-bit product folded together: every input bit
 * reaches every output bit in one multiplication. */
__extension__ typedef unsigned __int128 u128_t;

static inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  u128_t m = (u128_t)a * b;
  return (uint64_t)m ^ (uint64_t)(m >> 64);
}

/* Eight bytes at a time, the last (partial) word read from the name's end
 * so no byte past it is touched. The index probes from the low bits and
 * tags words with the high ones (rculfhash, which keeps the history's
 * marks, orders by the reversed bits), so the result is mixed once more. */
uint64_t reg_name_hash(const char *name, size_t len) {
  const uint64_t k0 = 0x9e3779b97f4a7c15ull, k1 = 0xbf58476d1ce4e5b9ull;
  uint64_t h = k0 ^ len;
  size_t i = 0;
  for (; i + 8 < len; i += 8)
    h = fold_mul(h ^ load64(name + i), k1);
  uint64_t last = 0;
  if (len >= 8) {
    last = load64(name + len - 8);
  } else {
    for (size_t j = 0; j < len; j++)
      last |= (uint64_t)(unsigned char)name[j] << (8 * j);
  }
  h = fold_mul(h ^ last, k1);
  return fold_mul(h ^ (h >> 32), k0);
}

/* s as the entry keeps it: a shared copy, or one written at *inline_at. */
static const char *entry_string(table_t *t, bool shared_only, const char *s,
                                char **inline_at) {
  const char *got = shared_only ? pool_find(&t->shared, s)
                                : pool_intern(&t->shared, &t->arena, s);
  if (got != NULL)
    return got;
  size_t n = strlen(s) + 1;
  memcpy(*inline_at, s, n);
  got = *inline_at;
  *inline_at += n;
  return got;
}

/* Bytes the strings of d take in an entry of t besides its name. */
static size_t entry_strings_size(const table_t *t, bool shared_only,
                                 const reg_device_t *d) {
  size_t size = 0;
  if (d->target_host != NULL)
    size += strlen(d->target_host) + 1;
  if (!shared_only)
    return size;
  if (d->owner != NULL && pool_find(&t->shared, d->owner) == NULL)
    size += strlen(d->owner) + 1;
  for (size_t i = 0; i < d->n_ports; i++)
    if (pool_find(&t->shared, d->ports[i].listener) == NULL)
      size += strlen(d->ports[i].listener) + 1;
  return size;
}

/* A copy of d for table t: in t's arena (a reload's entries, with owner
 * and listener names shared through t's pool), or with heap set in an
 * allocation of its own (an update, freed alone when replaced; names t
 * shares are pointed to, the table outliving its entries). */
static entry_t *entry_new(table_t *t, const reg_device_t *d, bool heap) {
  size_t name_len = strlen(d->name);
  size_t size = offsetof(entry_t, name) + name_len + 1;
  size_t ports_at = size = core_align_up(size, alignof(reg_port_t));
  size += d->n_ports * sizeof(reg_port_t);
  size_t addrs_at = size = core_align_up(size, alignof(core_ip_t));
  size += d->n_addrs * sizeof(core_ip_t);
  size_t strings_at = size;
  size += entry_strings_size(t, heap, d);

  /* A lookup reads the flags, name_len and name: one cache line. */
  size_t hot_at = offsetof(entry_t, device.enabled);
  char *base =
      heap ? xmalloc(size)
           : core_arena_alloc_fit(&t->arena, size, hot_at,
                                  offsetof(entry_t, name) - hot_at + name_len);
  entry_t *e = (entry_t *)base;
  memset(e, 0, sizeof *e);
  e->device = *d;
  e->name_len = (uint8_t)name_len;
  e->heap = heap;
  memcpy(e->name, d->name, name_len + 1);
  e->device.name = e->name;
  char *s = base + strings_at;
  if (d->owner != NULL)
    e->device.owner = (char *)entry_string(t, heap, d->owner, &s);
  if (d->target_host != NULL) {
    size_t n = strlen(d->target_host) + 1;
    memcpy(s, d->target_host, n);
    e->device.target_host = s;
    s += n;
  }
  e->device.ports = d->n_ports ? (reg_port_t *)(base + ports_at) : NULL;
  for (size_t i = 0; i < d->n_ports; i++) {
    e->device.ports[i].port = d->ports[i].port;
    e->device.ports[i].listener =
        (char *)entry_string(t, heap, d->ports[i].listener, &s);
  }
  e->device.addrs = d->n_addrs ? (core_ip_t *)(base + addrs_at) : NULL;
  if (d->n_addrs)
    memcpy(e->device.addrs, d->addrs, d->n_addrs * sizeof(core_ip_t));
  return e;
}

/* ---- the index: where lookups go ---------------------------------------- */

/* Lookups find entries through an index: an array of words probed
 * linearly from the name's hash. A word holds an entry's address and, in
 * the 16 bits above it, the top 16 bits of its name's hash (Linux hands
 * user space addresses below 2^47 unless asked for more), so a probe
 * follows no pointer to a name that cannot match. A hit waits for memory
 * twice, for the word and the entry; the array lies on huge pages. (A
 * linked hash table, rculfhash, waited three times a hit, and took 24-32
 * bytes an entry more, seconds to fill and seconds to empty at 10M.)
 *
 * Only the writer changes words, each with one atomic store: an entry in
 * place of the one it replaces, a new entry into a free word, a removed
 * one's word turned into a tombstone that probes pass over. A reader sees
 * each word before or after the store. At most 3/4 of the words are ever
 * in use (live or tombstone), so every probe ends at an empty word; before
 * that the writer builds a new index from the live words, swaps it in and
 * frees the old after a grace period. The index is also what makes a name
 * unique, and what walks of the whole table go through. */
#define INDEX_TAG_SHIFT 48
#define INDEX_ADDR_MASK ((UINT64_C(1) << INDEX_TAG_SHIFT) - 1)
#define INDEX_TOMBSTONE UINT64_C(1) /* no entry lives at address 1 */
/* An entry with an allocation of its own (entries are 8-byte aligned):
 * emptying a table frees these without reading the arena's entries. */
#define INDEX_HEAP UINT64_C(2)
#define INDEX_LOW_BITS UINT64_C(7)
#define INDEX_MIN_WORDS 16

struct table_index {
  struct rcu_head rcu;
  size_t mask; /* words - 1 */
  size_t used; /* live and tombstone words; writer only */
  size_t live; /* writer only */
  _Atomic uint64_t word[];
};

static size_t index_bytes(size_t words) {
  return offsetof(table_index_t, word) + words * sizeof(uint64_t);
}

/* An empty index with room for n entries before it must be rebuilt. */
static table_index_t *index_new(size_t n) {
  size_t words = INDEX_MIN_WORDS;
  while (words / 4 * 3 < n + 1)
    words *= 2;
  table_index_t *ix = xbig_alloc(index_bytes(words));
  ix->mask = words - 1;
  return ix;
}

static void index_free(table_index_t *ix) {
  xbig_free(ix, index_bytes(ix->mask + 1));
}

static void index_free_rcu(struct rcu_head *head) {
  REG_TSAN_ACQUIRE(&reg_rcu_grace);
  index_free(caa_container_of(head, table_index_t, rcu));
  REG_TSAN_RELEASE(&reg_rcu_grace);
}

static uint64_t index_word(const entry_t *e, uint64_t hash) {
  uintptr_t at = (uintptr_t)e;
  if ((uint64_t)at & ~INDEX_ADDR_MASK) {
    /* Not on Linux unless mmap is asked for such addresses, or pointers
     * carry tags of their own (arm64 top-byte tags, HWASan): loudly. */
    core_log(CORE_LOG_ERROR, "registry: entry at %p beyond 2^48", (void *)e);
    abort();
  }
  return (hash >> INDEX_TAG_SHIFT) << INDEX_TAG_SHIFT | (uint64_t)at |
         (e->heap ? INDEX_HEAP : 0);
}

static const entry_t *word_entry(uint64_t w) {
  return (const entry_t *)(uintptr_t)(w & INDEX_ADDR_MASK & ~INDEX_LOW_BITS);
}

static bool word_live(uint64_t w) {
  return w != 0 && w != INDEX_TOMBSTONE;
}

/* Whether word w may hold name (hash): live, with the same tag. */
static bool word_may_be(uint64_t w, uint64_t hash) {
  return ((w ^ hash) >> INDEX_TAG_SHIFT) == 0 && w != INDEX_TOMBSTONE;
}

/* The word of ix that holds name, or with *found false the first free
 * word (a tombstone or the empty one ending the probe) where it goes.
 * Writer only. */
static size_t index_slot(const table_index_t *ix, const char *name, size_t len,
                         uint64_t hash, bool *found) {
  size_t free_at = SIZE_MAX;
  for (size_t i = hash & ix->mask;; i = (i + 1) & ix->mask) {
    uint64_t w = atomic_load_explicit(&ix->word[i], memory_order_relaxed);
    if (w == 0) {
      *found = false;
      return free_at != SIZE_MAX ? free_at : i;
    }
    if (w == INDEX_TOMBSTONE) {
      if (free_at == SIZE_MAX)
        free_at = i;
    } else if (word_may_be(w, hash) && word_entry(w)->name_len == len &&
               memcmp(word_entry(w)->name, name, len) == 0) {
      *found = true;
      return i;
    }
  }
}

#define WALK_PREFETCH_AHEAD 16

/* A walk of a whole index: every live word once, starting at an empty
 * one. No probe runs through an empty word, so a name the writer moves
 * during the walk (removed, then put into a tombstone nearer its hash)
 * only moves back towards where the walk has been: it is met once or not
 * at all, never twice, unless the writer also fills the empty word the
 * walk started from. Readers walk too (an AXFR), with acquire loads. */
typedef struct index_walk {
  const table_index_t *ix;
  size_t at, left;
} index_walk_t;

static void walk_start(index_walk_t *walk, const table_index_t *ix) {
  size_t at = 0;
  /* There is one: at most 3/4 of the words are in use. */
  while (at < ix->mask &&
         atomic_load_explicit(&ix->word[at], memory_order_acquire) != 0)
    at++;
  *walk = (index_walk_t){ix, at, ix->mask + 1};
}

/* The next live word of the walk, or 0 after the last. The entry
 * WALK_PREFETCH_AHEAD words on, at a random place in memory, is fetched
 * meanwhile. */
static uint64_t walk_next_word(index_walk_t *walk) {
  const table_index_t *ix = walk->ix;
  while (walk->left > 0) {
    uint64_t ahead = atomic_load_explicit(
        &ix->word[(walk->at + WALK_PREFETCH_AHEAD) & ix->mask],
        memory_order_relaxed);
    if (word_live(ahead)) {
      __builtin_prefetch(word_entry(ahead));
      __builtin_prefetch(word_entry(ahead)->name);
    }
    uint64_t w =
        atomic_load_explicit(&ix->word[walk->at], memory_order_acquire);
    walk->at = (walk->at + 1) & ix->mask;
    walk->left--;
    if (word_live(w))
      return w;
  }
  return 0;
}

/* The next live entry of the walk, or NULL after the last. */
static const entry_t *walk_next(index_walk_t *walk) {
  uint64_t w = walk_next_word(walk);
  return w ? word_entry(w) : NULL;
}

/* A new index for t's live entries with room for as many again, in place
 * of the one readers follow now. */
static void index_rebuild(table_t *t) {
  table_index_t *old = t->index;
  table_index_t *ix = index_new(2 * old->live + INDEX_MIN_WORDS);
  index_walk_t walk;
  walk_start(&walk, old);
  for (const entry_t *e; (e = walk_next(&walk)) != NULL;) {
    uint64_t hash = reg_name_hash(e->name, e->name_len);
    size_t j = hash & ix->mask;
    while (atomic_load_explicit(&ix->word[j], memory_order_relaxed) != 0)
      j = (j + 1) & ix->mask;
    atomic_store_explicit(&ix->word[j], index_word(e, hash),
                          memory_order_relaxed);
  }
  ix->used = ix->live = old->live;
  REG_RCU_PUBLISH(t->index, ix);
  reg_call_rcu(&old->rcu, index_free_rcu);
}

/* Writer: t's index, rebuilt first if n more words in use would take it
 * past 3/4. */
static table_index_t *index_room(table_t *t, size_t n) {
  if ((t->index->used + n) * 4 > (t->index->mask + 1) * 3)
    index_rebuild(t);
  return t->index;
}

/* Writer: e goes into word i of ix, which index_slot gave for its name
 * (found: in place of the entry there). */
static void index_set(table_index_t *ix, size_t i, bool found, const entry_t *e,
                      uint64_t hash) {
  if (!found) {
    ix->used += atomic_load_explicit(&ix->word[i], memory_order_relaxed) == 0;
    ix->live++;
  }
  atomic_store_explicit(&ix->word[i], index_word(e, hash),
                        memory_order_release);
}

/* Writer: e is found by its name from now on, in place of the entry that
 * had it. */
static void index_put(table_t *t, const entry_t *e, uint64_t hash) {
  table_index_t *ix = index_room(t, 1);
  bool found;
  size_t i = index_slot(ix, e->name, e->name_len, hash, &found);
  index_set(ix, i, found, e, hash);
}

/* Writer: the entry named name is found no more. */
static void index_remove(table_t *t, const char *name, size_t len,
                         uint64_t hash) {
  table_index_t *ix = t->index;
  bool found;
  size_t i = index_slot(ix, name, len, hash, &found);
  if (found) {
    atomic_store_explicit(&ix->word[i], INDEX_TOMBSTONE, memory_order_relaxed);
    ix->live--;
  }
}

static const entry_t *find_hashed(const table_t *t, const char *name,
                                  size_t len, uint64_t hash) {
  const table_index_t *ix = REG_RCU_DEREF(((table_t *)t)->index);
  /* Bounded although a probe always ends at an empty word: a reader
   * walking while the writer fills words never loops for long. */
  for (size_t i = hash & ix->mask, n = 0; n <= ix->mask;
       i = (i + 1) & ix->mask, n++) {
    uint64_t w = atomic_load_explicit(&ix->word[i], memory_order_acquire);
    if (w == 0)
      break;
    if (word_may_be(w, hash)) {
      const entry_t *e = word_entry(w);
      if (e->name_len == len && memcmp(e->name, name, len) == 0)
        return e;
    }
  }
  return NULL;
}

static const entry_t *find_exact(const table_t *t, const char *name,
                                 size_t len) {
  return find_hashed(t, name, len, reg_name_hash(name, len));
}

static size_t wild_bit(uint64_t hash) {
  return (size_t)(hash >> 52); /* the top 12 bits: WILD_BITS */
}

/* Writer: e's name may be a wildcard from now on. */
static void wild_note(table_t *t, const entry_t *e, uint64_t hash) {
  if (e->name_len >= 2 && e->name[0] == '*' && e->name[1] == '.')
    atomic_fetch_or_explicit(&t->wild[wild_bit(hash) / 64],
                             (uint64_t)1 << (wild_bit(hash) % 64),
                             memory_order_relaxed);
}

/* Whether the wildcard with this hash may be in t. A bit set at the same
 * time as a lookup may be missed, like the entry it announces. */
static bool wild_maybe(const table_t *t, uint64_t hash) {
  return atomic_load_explicit(&t->wild[wild_bit(hash) / 64],
                              memory_order_relaxed) &
         ((uint64_t)1 << (wild_bit(hash) % 64));
}

/* A replaced or removed entry waits here for its grace period: entries
 * carry no rcu_head of their own, since millions are never retired alone. */
typedef struct retired {
  struct rcu_head rcu;
  entry_t *e;
} retired_t;

static void entry_free_rcu(struct rcu_head *head) {
  REG_TSAN_ACQUIRE(&reg_rcu_grace);
  retired_t *r = caa_container_of(head, retired_t, rcu);
  if (r->e->heap)
    free(r->e);
  free(r);
  REG_TSAN_RELEASE(&reg_rcu_grace);
}

/* An arena entry stays in the arena until its table goes. */
static void entry_retire(const entry_t *e) {
  retired_t *r = xmalloc(sizeof *r);
  r->e = (entry_t *)e;
  reg_call_rcu(&r->rcu, entry_free_rcu);
}

/* ---- tables -------------------------------------------------------------- */

static table_t *table_new(size_t expected) {
  table_t *t = xcalloc(1, sizeof *t);
  t->index = index_new(expected);
  return t;
}

/* Names are added in groups this big: the words their probes start at,
 * at random places in a big index, are fetched for the whole group first,
 * so those waits for memory overlap. */
#define FILL_GROUP 16

/* Adds the config's devices in file order; a name given twice (the
 * loader refuses that) keeps the first, and the second stays in the
 * arena, unused. Writer only. */
static void table_fill(table_t *t, const reg_config_t *config) {
  uint64_t hash[FILL_GROUP];
  size_t len[FILL_GROUP];
  for (size_t at = 0; at < config->n_devices; at += FILL_GROUP) {
    size_t m = config->n_devices - at < FILL_GROUP ? config->n_devices - at
                                                   : FILL_GROUP;
    const reg_device_t *d = &config->devices[at];
    /* Room first: a rebuild in between would move the words fetched. */
    table_index_t *ix = index_room(t, m);
    for (size_t i = 0; i < m; i++) {
      len[i] = strlen(d[i].name);
      hash[i] = reg_name_hash(d[i].name, len[i]);
      __builtin_prefetch(&ix->word[hash[i] & ix->mask], 1);
    }
    for (size_t i = 0; i < m; i++) {
      bool found;
      size_t slot = index_slot(ix, d[i].name, len[i], hash[i], &found);
      if (found)
        continue;
      entry_t *e = entry_new(t, &d[i], false);
      wild_note(t, e, hash[i]);
      index_set(ix, slot, false, e, hash[i]);
      atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
    }
  }
}

/* Destroys ht, which holds no node. Returns cds_lfht_destroy's result:
 * nonzero, and ht untouched, if it was not empty after all. */
static int lfht_destroy_empty(struct cds_lfht *ht) {
  /* Destroying waits for a resize in progress, and a resize waits for a
   * grace period: offline, or this thread would wait for itself. */
  reg_thread_offline();
  int rc = cds_lfht_destroy(ht, NULL);
  rcu_thread_online();
  return rc;
}

void reg_lfht_destroy(struct cds_lfht *ht,
                      bool (*needs_free)(const struct cds_lfht_node *node),
                      void (*free_node)(struct cds_lfht_node *node)) {
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node, **unlinked = NULL;
  size_t n = 0, cap = 0;
  cds_lfht_for_each(ht, &iter, node) {
    cds_lfht_del(ht, node);
    if (needs_free != NULL && !needs_free(node))
      continue;
    /* Freed after the walk: the iterator may still look at this node. */
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      unlinked = xrealloc(unlinked, cap * sizeof *unlinked);
    }
    unlinked[n++] = node;
  }
  lfht_destroy_empty(ht);
  for (size_t i = 0; i < n; i++)
    free_node(unlinked[i]);
  free(unlinked);
}

/* The entry with an allocation of its own at word *at of ix or after it,
 * known by its word alone, with *at moved past it; NULL after the last.
 * The index is read front to back; no other entry is read. */
static entry_t *heap_next(const table_index_t *ix, size_t *at) {
  for (; *at <= ix->mask; (*at)++) {
    uint64_t w = atomic_load_explicit(&ix->word[*at], memory_order_relaxed);
    if (word_live(w) && (w & INDEX_HEAP)) {
      (*at)++;
      return (entry_t *)word_entry(w);
    }
  }
  return NULL;
}

/* Frees the entries of t with an allocation of their own, known by their
 * words alone: the arena's millions are not read, only the index, from
 * start to end. */
static void table_empty(table_t *t) {
  size_t at = 0;
  for (entry_t *e; (e = heap_next(t->index, &at)) != NULL;)
    free(e);
}

/* Empties and destroys a table no reader can reach any more. Caller is a
 * registered, online thread. */
static void table_destroy(table_t *t) {
  table_empty(t);
  index_free(t->index);
  core_arena_free(&t->arena);
  free(t->shared.slots);
  free(t);
}

/* Runs in liburcu's call_rcu thread (registered, online) once no reader
 * can still hold the table. */
static void table_destroy_rcu(struct rcu_head *head) {
  REG_TSAN_ACQUIRE(&reg_rcu_grace);
  table_t *t = caa_container_of(head, table_t, rcu);
  size_t n = atomic_load_explicit(&t->count, memory_order_relaxed);
  table_destroy(t);
  REG_TSAN_RELEASE(&reg_rcu_grace);
  core_log(CORE_LOG_DEBUG,
           "registry: the table replaced by a reload is freed (%zu devices)",
           n);
}

/* ---- the registry -------------------------------------------------------- */

reg_t *reg_new(const reg_config_t *config) {
  reg_t *reg = xcalloc(1, sizeof *reg);
  bool went_online = writer_enter();
  table_t *t = table_new(config->n_devices);
  table_fill(t, config);
  REG_RCU_PUBLISH(reg->table, t);
  reg->hist = hist_new();
  writer_leave(went_online);
  return reg;
}

/* Lets what waits in call_rcu (replaced entries, tables, indexes) go,
 * offline, since rcu_barrier must not wait on its caller. */
static void pending_frees_done(void) {
  bool was_online = registered && rcu_read_ongoing();
  if (was_online)
    reg_thread_offline();
  rcu_barrier();
  REG_TSAN_ACQUIRE(&reg_rcu_grace);
  if (was_online)
    rcu_thread_online();
}

/* What reg_leave leaves: still pointed to, so leak checkers see it kept
 * (volatile: a pointer never read would be optimised away). */
static reg_t *volatile left;
/* The blocks of the table left that only mappings point to (a big index,
 * an arena's big chunks), which leak checkers do not scan: the arena's
 * chunks (each links the one before it) and the entries with an
 * allocation of their own. */
static void **volatile left_blocks;

/* The entries of ix with an allocation of their own, into out unless it
 * is NULL; returns how many. */
static size_t heap_entries(const table_index_t *ix, void **out) {
  size_t n = 0, at = 0;
  for (entry_t *e; (e = heap_next(ix, &at)) != NULL; n++)
    if (out != NULL)
      out[n] = e;
  return n;
}

void reg_leave(reg_t *reg) {
  pending_frees_done();
  left = reg;
  const table_t *t = reg->table;
  size_t n_chunks = core_arena_chunks(&t->arena, NULL, 0);
  size_t n = n_chunks + heap_entries(t->index, NULL);
  void **blocks = xcalloc(n ? n : 1, sizeof *blocks);
  core_arena_chunks(&t->arena, blocks, n_chunks);
  heap_entries(t->index, blocks + n_chunks);
  left_blocks = blocks;
}

void reg_free(reg_t *reg) {
  if (reg == NULL)
    return;
  pending_frees_done();
  bool went_online = writer_enter();
  table_destroy(reg->table);
  hist_free(reg->hist);
  writer_leave(went_online);
  free(reg);
}

static bool entry_visible(const entry_t *e) {
  return e != NULL && e->device.enabled;
}

/* What a compare does with an entry of one table and the entry of the
 * other holding the same name (NULL: none). */
typedef void pair_fn(hist_t *hist, const entry_t *in_a, const entry_t *in_b);

/* Names are compared in groups this big: each step is taken for the whole
 * group before the next, so the waits for memory of its lookups overlap. */
#define PAIR_GROUP 16

/* Calls fn for the m entries es of one table with their matches in b;
 * returns how many have one. Writer only. */
static size_t pair_group(hist_t *hist, const table_t *b, size_t m,
                         const entry_t *const es[], pair_fn *fn) {
  const table_index_t *bx = b->index;
  uint64_t hash[PAIR_GROUP];
  for (size_t i = 0; i < m; i++) {
    hash[i] = reg_name_hash(es[i]->name, es[i]->name_len);
    __builtin_prefetch(&bx->word[hash[i] & bx->mask]);
  }
  for (size_t i = 0; i < m; i++) {
    uint64_t w = atomic_load_explicit(&bx->word[hash[i] & bx->mask],
                                      memory_order_relaxed);
    if (w != 0 && word_may_be(w, hash[i]))
      __builtin_prefetch(word_entry(w)->name);
  }
  size_t found = 0;
  for (size_t i = 0; i < m; i++) {
    const entry_t *in_b = find_hashed(b, es[i]->name, es[i]->name_len, hash[i]);
    found += in_b != NULL;
    fn(hist, es[i], in_b);
  }
  return found;
}

/* Calls fn for every entry of a with its match in b; returns how many
 * have one. a's entries are taken in the order of its index, which is
 * read once from start to end; every entry and every lookup in b is a
 * wait for memory at a random place, overlapped in groups. (rculfhash's
 * list order, walked side by side in both tables, waited for each node in
 * turn: 12-14 s of a 10M reload.) Writer only. */
static size_t pair_entries(hist_t *hist, const table_t *a, const table_t *b,
                           pair_fn *fn) {
  const entry_t *group[PAIR_GROUP];
  size_t m = 0, found = 0;
  index_walk_t walk;
  walk_start(&walk, a->index);
  for (const entry_t *e; (e = walk_next(&walk)) != NULL;) {
    group[m++] = e;
    if (m == PAIR_GROUP) {
      found += pair_group(hist, b, m, group, fn);
      m = 0;
    }
  }
  return found + pair_group(hist, b, m, group, fn);
}

/* y is in the new table, x the old one's entry for its name, if any. */
static void flip_if_changed(hist_t *hist, const entry_t *y, const entry_t *x) {
  if (x == NULL ? y->device.enabled : x->device.enabled != y->device.enabled)
    hist_mark(hist, y->name, y->name_len, x != NULL && x->device.enabled);
}

/* x is in the old table, and the new one has no y for its name. */
static void flip_if_gone(hist_t *hist, const entry_t *x, const entry_t *y) {
  if (y == NULL && x->device.enabled)
    hist_mark(hist, x->name, x->name_len, true);
}

/* Marks the names whose visibility differs between the table in force and
 * next, before next replaces it, with the visibility in force. (A reader
 * walks one table or the other, so other differences need no mark.)
 * Every name of next is looked up in the old table; names are unique in
 * a table, so only when fewer than all the old names were met is the old
 * table walked for the names next lacks. */
static void mark_flips(reg_t *reg, const table_t *next) {
  const table_t *old = reg->table;
  size_t kept = pair_entries(reg->hist, next, old, flip_if_changed);
  if (kept < old->index->live)
    pair_entries(reg->hist, old, next, flip_if_gone);
}

int reg_replace_all(reg_t *reg, const reg_config_t *config) {
  bool went_online = writer_enter();
  table_t *t = table_new(config->n_devices);
  table_fill(t, config);
  table_t *old = reg->table;
  mark_flips(reg, t);
  REG_RCU_PUBLISH(reg->table, t);
  atomic_fetch_add_explicit(&reg->version, 1, memory_order_release);
  reg_call_rcu(&old->rcu, table_destroy_rcu);
  writer_leave(went_online);
  return 0;
}

/* Whether a name this long can be in the table at all. */
static bool lookup_len_ok(size_t len) {
  return len > 0 && len <= CORE_NAME_MAX;
}

static bool valid_name(const char *name, size_t len) {
  return lookup_len_ok(len) && memchr(name, '\0', len) == NULL;
}

int reg_update_device(reg_t *reg, const reg_device_t *device) {
  size_t len = strlen(device->name);
  if (!valid_name(device->name, len))
    return -EINVAL;
  bool went_online = writer_enter();
  table_t *t = reg->table;
  entry_t *e = entry_new(t, device, true);
  uint64_t hash = reg_name_hash(e->name, e->name_len);
  const entry_t *old = find_hashed(t, e->name, e->name_len, hash);
  hist_mark(reg->hist, e->name, e->name_len, entry_visible(old));
  wild_note(t, e, hash); /* before the entry can be found */
  index_put(t, e, hash);
  if (old != NULL)
    entry_retire(old);
  else
    atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&reg->version, 1, memory_order_release);
  writer_leave(went_online);
  return 0;
}

int reg_remove_device(reg_t *reg, const char *name) {
  name_key_t key = {name, strlen(name)};
  if (!valid_name(key.name, key.len))
    return -EINVAL;
  bool went_online = writer_enter();
  table_t *t = reg->table;
  int rc = -ENOENT;
  uint64_t hash = reg_name_hash(key.name, key.len);
  const entry_t *old = find_hashed(t, key.name, key.len, hash);
  if (old != NULL) {
    hist_mark(reg->hist, key.name, key.len, entry_visible(old));
    index_remove(t, key.name, key.len, hash);
    entry_retire(old);
    atomic_fetch_sub_explicit(&t->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&reg->version, 1, memory_order_release);
    rc = 0;
  }
  writer_leave(went_online);
  return rc;
}

int reg_foreach(const reg_t *reg, reg_visit_fn *visit, void *arg) {
  bool went_online = writer_enter();
  table_t *t = REG_RCU_DEREF(((reg_t *)reg)->table);
  index_walk_t walk;
  walk_start(&walk, REG_RCU_DEREF(t->index));
  int rc = 0;
  for (const entry_t *e; rc == 0 && (e = walk_next(&walk)) != NULL;)
    rc = visit(&e->device, arg);
  writer_leave(went_online);
  return rc;
}

size_t reg_count(const reg_t *reg) {
  reader_enter();
  table_t *t = REG_RCU_DEREF(((reg_t *)reg)->table);
  return atomic_load_explicit(&t->count, memory_order_relaxed);
}

uint64_t reg_version(const reg_t *reg) {
  return atomic_load_explicit(&((reg_t *)reg)->version, memory_order_acquire);
}

/* ---- the published state ------------------------------------------------- */

static bool visible_now(const char *name, size_t len, void *arg) {
  const reg_t *reg = arg;
  return entry_visible(find_exact(reg->table, name, len));
}

bool reg_publish(reg_t *reg) {
  uint64_t version = atomic_load_explicit(&reg->version, memory_order_relaxed);
  if (version == reg->published_version)
    return false;
  bool went_online = writer_enter();
  hist_publish(reg->hist, visible_now, reg);
  writer_leave(went_online);
  reg->published_version = version;
  return true;
}

uint64_t reg_published(const reg_t *reg) {
  return hist_number(reg->hist);
}

/* Most walks of the table one reg_foreach_published tries: each is
 * undone by a publish during it, and publishes are paced (DNS: at most
 * one a second), so a second walk almost always succeeds. */
#define PUBLISHED_WALKS 4

typedef struct name_list {
  const entry_t **entries;
  size_t n, cap;
} name_list_t;

/* The names visible in the published state s, given the live table t: the
 * names it holds, except those changed since s (they are marked, with
 * their visibility in s, before the writer changes them), plus the marked
 * names visible in s. Marks made after the walk of t cover names whose
 * entries changed after the walk: what it saw of them was still s. */
static int visit_published(const hist_state_t *s, const name_list_t *live,
                           reg_name_visit_fn *visit, void *arg) {
  uint64_t before = hist_state_marks(s);
  int rc = hist_state_foreach_visible(s, before, visit, arg);
  for (size_t i = 0; rc == 0 && i < live->n; i++) {
    const entry_t *e = live->entries[i];
    bool visible;
    if (!hist_state_marked(s, e->name, e->name_len, before, &visible))
      rc = visit(e->device.name, arg);
  }
  return rc;
}

int reg_foreach_published(const reg_t *reg, uint64_t *number,
                          reg_name_visit_fn *visit, void *arg) {
  name_list_t live = {0};
  int rc = -EAGAIN;
  bool went_online = writer_enter();
  for (int tries = 0; tries < PUBLISHED_WALKS && rc == -EAGAIN; tries++) {
    const hist_state_t *s = hist_state(reg->hist);
    const table_t *t = REG_RCU_DEREF(((reg_t *)reg)->table);
    index_walk_t walk;
    walk_start(&walk, REG_RCU_DEREF(((table_t *)t)->index));
    live.n = 0;
    for (const entry_t *e; (e = walk_next(&walk)) != NULL;) {
      if (!e->device.enabled)
        continue;
      if (live.n == live.cap) {
        live.cap = live.cap ? live.cap * 2 : 256;
        live.entries = xrealloc(live.entries, live.cap * sizeof *live.entries);
      }
      live.entries[live.n++] = e;
    }
    /* Whatever of t the walk saw, the marks made before it are seen
     * next; a publish since means changes after it are not marked in s. */
    cmm_smp_rmb();
    if (hist_state(reg->hist) != s)
      continue;
    *number = hist_state_number(s);
    rc = visit_published(s, &live, visit, arg);
  }
  free(live.entries);
  writer_leave(went_online);
  return rc;
}

int reg_batches_since(const reg_t *reg, uint64_t from, uint64_t *to,
                      reg_batch_visit_fn *visit, void *arg) {
  bool went_online = writer_enter();
  const hist_state_t *s = hist_state(reg->hist);
  *to = hist_state_number(s);
  int rc = hist_state_batches(s, from, visit, arg);
  writer_leave(went_online);
  return rc;
}

/* ---- lookups ------------------------------------------------------------- */

/* reg_lookup in table t, the name's hash known. */
static const reg_device_t *lookup_hashed(const table_t *t, const char *name,
                                         size_t len, uint64_t hash) {
  const entry_t *e = find_hashed(t, name, len, hash);
  if (e != NULL)
    return e->device.enabled ? &e->device : NULL;

  /* Nearest wildcard: for a.b.c try *.b.c, then *.c. */
  char key[CORE_NAME_MAX + 3];
  const char *rest = memchr(name, '.', len);
  while (rest != NULL) {
    size_t rest_len = len - (size_t)(rest - name);
    key[0] = '*';
    memcpy(key + 1, rest, rest_len);
    hash = reg_name_hash(key, rest_len + 1);
    e = wild_maybe(t, hash) ? find_hashed(t, key, rest_len + 1, hash) : NULL;
    if (e != NULL)
      return e->device.enabled ? &e->device : NULL;
    rest = memchr(rest + 1, '.', rest_len - 1);
  }
  return NULL;
}

const reg_device_t *reg_lookup(const reg_t *reg, const char *name, size_t len) {
  if (!lookup_len_ok(len))
    return NULL;
  reader_enter();
  /* One table for the whole lookup: a swap in between cannot mix the
   * exact answer of one registry with the wildcards of another. */
  const table_t *t = REG_RCU_DEREF(((reg_t *)reg)->table);
  return lookup_hashed(t, name, len, reg_name_hash(name, len));
}

/* Prefetches the entry that a lookup of a name len bytes long (hash)
 * will compare first: the first word of its probe with its tag, which is
 * not always the first word (linear probing; at 10M names about a third
 * of the hits are further on), and the entry's name to its last byte (an
 * arena entry has it in one line with the flags, see entry_new; an
 * update's entry or a long name may not). At most 8 words of the probe
 * are looked at, mostly in the line the first one fetched. */
static void prefetch_candidate(const table_index_t *ix, uint64_t hash,
                               size_t len) {
  for (size_t i = hash & ix->mask, n = 0; n < 8; i = (i + 1) & ix->mask, n++) {
    uint64_t w = atomic_load_explicit(&ix->word[i], memory_order_relaxed);
    if (w == 0)
      return;
    if (word_may_be(w, hash)) {
      const entry_t *e = word_entry(w);
      __builtin_prefetch(&e->device.enabled);
      __builtin_prefetch(e->name);
      __builtin_prefetch(e->name + len - 1);
      return;
    }
  }
}

/* Lookups of a batch go in groups this big: each step of a lookup is
 * taken for the whole group before the next, so its waits for memory
 * overlap (a core has about ten misses in flight). */
#define LOOKUP_GROUP 16

void reg_lookup_many(const reg_t *reg, size_t n, const char *const names[],
                     const size_t lens[], const reg_device_t *out[]) {
  reader_enter();
  const table_t *t = REG_RCU_DEREF(((reg_t *)reg)->table);
  const table_index_t *ix = REG_RCU_DEREF(((table_t *)t)->index);
  uint64_t hash[LOOKUP_GROUP];
  for (size_t at = 0; at < n; at += LOOKUP_GROUP) {
    size_t m = n - at < LOOKUP_GROUP ? n - at : LOOKUP_GROUP;
    /* The first word each name probes, */
    for (size_t i = 0; i < m; i++) {
      hash[i] = lookup_len_ok(lens[at + i])
                    ? reg_name_hash(names[at + i], lens[at + i])
                    : 0;
      __builtin_prefetch(&ix->word[hash[i] & ix->mask]);
    }
    /* the entry it names when it may be the one, */
    for (size_t i = 0; i < m; i++)
      prefetch_candidate(ix, hash[i], lens[at + i]);
    /* then each lookup in full, from the cache. */
    for (size_t i = 0; i < m; i++)
      out[at + i] = lookup_len_ok(lens[at + i])
                        ? lookup_hashed(t, names[at + i], lens[at + i], hash[i])
                        : NULL;
  }
}

const reg_device_t *reg_find(const reg_t *reg, const char *name, size_t len) {
  if (!lookup_len_ok(len))
    return NULL;
  reader_enter();
  const entry_t *e =
      find_exact(REG_RCU_DEREF(((reg_t *)reg)->table), name, len);
  return e ? &e->device : NULL;
}
