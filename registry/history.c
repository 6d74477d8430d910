/* SPDX-License-Identifier: MIT */
/* history.c -- the registry's changes, published in numbered batches */
#include "registry/registry_int.h"

/* The inline fast paths of liburcu (LGPL-2.1) are fine in MIT code. */
#define _LGPL_SOURCE
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A published state is immutable but for its marks: the writer adds one
 * for each name it changes before changing the table, so a reader that
 * walks the live table can tell which names it must take from the marks
 * instead to see the state as published. A new state starts with no
 * marks; the old one goes to call_rcu, with the batches the new one no
 * longer keeps. Batches are shared by the states that keep them. */

typedef struct mark {
  struct cds_lfht_node node;
  uint64_t seq; /* order of marking within its state */
  bool visible; /* in the state it belongs to */
  size_t len;
  char name[];
} mark_t;

typedef struct batch {
  uint64_t number; /* the state it leads to */
  size_t n;
  reg_change_t changes[]; /* sorted by name; the names follow */
} batch_t;

struct hist_state {
  uint64_t number;
  struct cds_lfht *marks;
  atomic_uint_fast64_t n_marks;
  struct rcu_head rcu;
  size_t n_retire;  /* writer: batches[0..n_retire) go with this state */
  size_t n_changes; /* in all batches */
  size_t n_batches; /* they lead from state number - n_batches here */
  batch_t *batches[];
};

struct hist {
  hist_state_t *state; /* REG_RCU_DEREF / REG_RCU_PUBLISH */
  atomic_uint_fast64_t number;
};

typedef struct name_key {
  const char *name;
  size_t len;
} name_key_t;

static int match_mark(struct cds_lfht_node *node, const void *arg) {
  const mark_t *m = caa_container_of(node, mark_t, node);
  REG_TSAN_ACQUIRE(m);
  const name_key_t *key = arg;
  return m->len == key->len && memcmp(m->name, key->name, key->len) == 0;
}

static struct cds_lfht *marks_new(void) {
  struct cds_lfht *ht =
      cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
  if (ht == NULL) {
    core_log(CORE_LOG_ERROR, "out of memory for the registry's changes");
    abort();
  }
  return ht;
}

/* The mark at iter, NULL past the last. A walk goes through this and not
 * cds_lfht_for_each_entry, which also takes the entry of the NULL node
 * that ends the walk: NULL minus an offset, undefined behaviour that
 * clang's sanitizer stops on. */
static mark_t *mark_at(struct cds_lfht_iter *iter) {
  struct cds_lfht_node *node = cds_lfht_iter_get_node(iter);
  return node ? caa_container_of(node, mark_t, node) : NULL;
}

#define for_each_mark(ht, iter, m)                                             \
  for (cds_lfht_first(ht, iter); ((m) = mark_at(iter)) != NULL;                \
       cds_lfht_next(ht, iter))

static void mark_free(struct cds_lfht_node *node) {
  free(caa_container_of(node, mark_t, node));
}

static hist_state_t *state_new(uint64_t number, size_t n_batches) {
  hist_state_t *s = xcalloc(1, sizeof *s + n_batches * sizeof(batch_t *));
  s->number = number;
  s->marks = marks_new();
  s->n_batches = n_batches;
  return s;
}

/* Caller: registered, online. */
static void state_free(hist_state_t *s, size_t n_batches) {
  reg_lfht_destroy(s->marks, NULL, mark_free);
  for (size_t i = 0; i < n_batches; i++)
    free(s->batches[i]);
  free(s);
}

/* In liburcu's call_rcu thread, once no reader can hold the state. */
static void state_free_rcu(struct rcu_head *head) {
  REG_TSAN_ACQUIRE(&reg_rcu_grace);
  hist_state_t *s = caa_container_of(head, hist_state_t, rcu);
  state_free(s, s->n_retire);
  REG_TSAN_RELEASE(&reg_rcu_grace);
}

hist_t *hist_new(void) {
  hist_t *h = xcalloc(1, sizeof *h);
  h->state = state_new(0, 0);
  return h;
}

void hist_free(hist_t *h) {
  if (h == NULL)
    return;
  state_free(h->state, h->state->n_batches);
  free(h);
}

void hist_mark(hist_t *h, const char *name, size_t len, bool visible) {
  hist_state_t *s = h->state;
  name_key_t key = {name, len};
  unsigned long hash = (unsigned long)reg_name_hash(name, len);
  struct cds_lfht_iter iter;
  cds_lfht_lookup(s->marks, hash, match_mark, &key, &iter);
  if (cds_lfht_iter_get_node(&iter) != NULL)
    return; /* the first change since the publish knows the published value */
  mark_t *m = xmalloc(sizeof *m + len + 1);
  cds_lfht_node_init(&m->node);
  m->seq = atomic_load_explicit(&s->n_marks, memory_order_relaxed);
  m->visible = visible;
  m->len = len;
  memcpy(m->name, name, len);
  m->name[len] = '\0';
  REG_TSAN_RELEASE(m);
  cds_lfht_add(s->marks, hash, &m->node);
  /* Counted once added: a reader that sees the count finds the mark. */
  atomic_store_explicit(&s->n_marks, m->seq + 1, memory_order_release);
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const reg_change_t *)a)->name,
                ((const reg_change_t *)b)->name);
}

/* The names marked in s whose visibility differs now. */
static batch_t *batch_from_marks(const hist_state_t *s,
                                 hist_visible_fn *visible, void *arg) {
  const mark_t **flipped = NULL;
  size_t n = 0, cap = 0, bytes = 0;
  struct cds_lfht_iter iter;
  mark_t *m;
  for_each_mark(s->marks, &iter, m) {
    if (visible(m->name, m->len, arg) == m->visible)
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      flipped = xrealloc(flipped, cap * sizeof *flipped);
    }
    flipped[n++] = m;
    bytes += m->len + 1;
  }
  batch_t *b = xmalloc(sizeof *b + n * sizeof(reg_change_t) + bytes);
  b->number = s->number + 1;
  b->n = n;
  char *names = (char *)&b->changes[n];
  for (size_t i = 0; i < n; i++) {
    memcpy(names, flipped[i]->name, flipped[i]->len + 1);
    b->changes[i].name = names;
    b->changes[i].visible = !flipped[i]->visible;
    names += flipped[i]->len + 1;
  }
  free(flipped);
  qsort(b->changes, n, sizeof *b->changes, by_name);
  return b;
}

void hist_publish(hist_t *h, hist_visible_fn *visible, void *arg) {
  hist_state_t *old = h->state;
  batch_t *b = batch_from_marks(old, visible, arg);
  /* Keep the newest batches within the limits; a batch over them alone
   * is not kept, and the history starts after it. */
  size_t drop = 0, n_changes = old->n_changes + b->n;
  bool keep = b->n <= REG_HISTORY_CHANGES;
  if (!keep) {
    drop = old->n_batches;
    n_changes = 0;
  }
  while (keep && (old->n_batches - drop + 1 > REG_HISTORY_BATCHES ||
                  n_changes > REG_HISTORY_CHANGES))
    n_changes -= old->batches[drop++]->n;

  hist_state_t *s = state_new(old->number + 1, old->n_batches - drop + keep);
  memcpy(s->batches, old->batches + drop,
         (old->n_batches - drop) * sizeof(batch_t *));
  if (keep)
    s->batches[s->n_batches - 1] = b;
  else
    free(b);
  s->n_changes = n_changes;
  old->n_retire = drop;
  REG_RCU_PUBLISH(h->state, s);
  atomic_store_explicit(&h->number, s->number, memory_order_release);
  reg_call_rcu(&old->rcu, state_free_rcu);
}

uint64_t hist_number(const hist_t *h) {
  return atomic_load_explicit(&((hist_t *)h)->number, memory_order_acquire);
}

const hist_state_t *hist_state(const hist_t *h) {
  return REG_RCU_DEREF(((hist_t *)h)->state);
}

uint64_t hist_state_number(const hist_state_t *s) {
  return s->number;
}

uint64_t hist_state_marks(const hist_state_t *s) {
  return atomic_load_explicit(&((hist_state_t *)s)->n_marks,
                              memory_order_acquire);
}

bool hist_state_marked(const hist_state_t *s, const char *name, size_t len,
                       uint64_t before, bool *visible) {
  name_key_t key = {name, len};
  struct cds_lfht_iter iter;
  if (before == 0)
    return false;
  cds_lfht_lookup(s->marks, (unsigned long)reg_name_hash(name, len), match_mark,
                  &key, &iter);
  struct cds_lfht_node *node = cds_lfht_iter_get_node(&iter);
  if (node == NULL)
    return false;
  const mark_t *m = caa_container_of(node, mark_t, node);
  if (m->seq >= before)
    return false;
  *visible = m->visible;
  return true;
}

int hist_state_foreach_visible(const hist_state_t *s, uint64_t before,
                               reg_name_visit_fn *visit, void *arg) {
  struct cds_lfht_iter iter;
  mark_t *m;
  int rc = 0;
  if (before == 0)
    return 0;
  for_each_mark(s->marks, &iter, m) {
    REG_TSAN_ACQUIRE(m);
    if (m->seq < before && m->visible && (rc = visit(m->name, arg)) != 0)
      break;
  }
  return rc;
}

int hist_state_batches(const hist_state_t *s, uint64_t from,
                       reg_batch_visit_fn *visit, void *arg) {
  if (from > s->number || from < s->number - s->n_batches)
    return -ENOENT;
  for (size_t i = s->n_batches - (size_t)(s->number - from); i < s->n_batches;
       i++) {
    const batch_t *b = s->batches[i];
    int rc = visit(b->number, b->changes, b->n, arg);
    if (rc != 0)
      return rc;
  }
  return 0;
}
