/* SPDX-License-Identifier: MIT */
/* registry_int.h -- inside registry/: what table.c and history.c share */
#ifndef DDPORT_REGISTRY_INT_H
#define DDPORT_REGISTRY_INT_H

#include "registry/registry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cds_lfht;
struct cds_lfht_node;

/* ---- what ThreadSanitizer cannot see ------------------------------------ */

/* Debian's liburcu (0.13) orders its grace periods and its hash table
 * with barriers and atomics in code built without ThreadSanitizer, so a
 * -fsanitize=thread build sees none of that order and reports every
 * reader and reclaimer as racing. Under ThreadSanitizer these macros say
 * what liburcu orders, so that the races it still reports are ours; in
 * every other build they are liburcu's own macros or nothing.
 *
 * - Publishing: the writer releases an object (an entry, a mark) just
 *   before it links it into a hash table, and a reader acquires it
 *   before it reads it through the table.
 * - Grace periods: a reader releases reg_rcu_grace at each quiescent
 *   point and when it goes offline; the writer releases it when it hands
 *   memory to call_rcu; a call_rcu callback acquires it before it frees
 *   anything and releases it when done (for rcu_barrier's caller, which
 *   acquires it). A free before a reader's grace period ends is still
 *   reported: the reader's reads come after its last release.
 * - Pointers readers follow (the live table, the published state) are
 *   C11 release/acquire atomics, which ThreadSanitizer understands. */
#ifdef __SANITIZE_THREAD__
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define REG_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define REG_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define REG_RCU_PUBLISH(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#define REG_RCU_DEREF(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#else
#define REG_TSAN_ACQUIRE(p) ((void)0)
#define REG_TSAN_RELEASE(p) ((void)0)
#define REG_RCU_PUBLISH(p, v) rcu_assign_pointer((p), (v))
#define REG_RCU_DEREF(p) rcu_dereference(p)
#endif

/* The one object every grace period releases and acquires. */
extern char reg_rcu_grace;

/* call_rcu, after releasing reg_rcu_grace for ThreadSanitizer. */
struct rcu_head;
void reg_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *head));

/* The hash of a normalised name, for the table's index and the history's
 * rculfhash (every bit mixed). */
uint64_t reg_name_hash(const char *name, size_t len);

/* Empties and destroys ht, which no reader can reach any more, then calls
 * free_node on each node it held for which needs_free (NULL: every node)
 * says so. Caller: registered, online. */
void reg_lfht_destroy(struct cds_lfht *ht,
                      bool (*needs_free)(const struct cds_lfht_node *node),
                      void (*free_node)(struct cds_lfht_node *node));

/* The registry's changes reach readers that want a stable view (zone
 * transfers) in numbered batches. A hist_t holds one published state: its
 * number, the names changed since it (each with its visibility in that
 * state) and the batches before it, kept for IXFR. The control loop writes;
 * workers read a state under RCU. */
typedef struct hist hist_t;
typedef struct hist_state hist_state_t;

/* Whether name is visible (present and enabled) in the live table. */
typedef bool hist_visible_fn(const char *name, size_t len, void *arg);

hist_t *hist_new(void);

/* Frees h once no reader can hold its state. Caller: registered, online. */
void hist_free(hist_t *h);

/* Before the writer changes name in the table: remembers that name was
 * visible or not in the published state, unless an earlier change since
 * the last publish already did. */
void hist_mark(hist_t *h, const char *name, size_t len, bool visible);

/* Closes the changes marked since the last publish into a batch (the names
 * whose visibility differs now, asked of visible) and publishes the state
 * after it. */
void hist_publish(hist_t *h, hist_visible_fn *visible, void *arg);

/* The number of the published state; any thread. */
uint64_t hist_number(const hist_t *h);

/* The published state, for a registered reader: valid until its next
 * quiescent point. */
const hist_state_t *hist_state(const hist_t *h);

uint64_t hist_state_number(const hist_state_t *s);

/* The marks made in s so far. A mark with a sequence number below this
 * count is complete and visible to lookups and walks. */
uint64_t hist_state_marks(const hist_state_t *s);

/* The mark of name in s with a sequence number below before: true and
 * *visible (the name's visibility in s), or false. */
bool hist_state_marked(const hist_state_t *s, const char *name, size_t len,
                       uint64_t before, bool *visible);

/* Calls visit with every name marked in s with a sequence number below
 * before that was visible in s, until visit returns non-zero. */
int hist_state_foreach_visible(const hist_state_t *s, uint64_t before,
                               reg_name_visit_fn *visit, void *arg);

/* Calls visit for each batch after state from up to s, oldest first.
 * -ENOENT when s keeps no batches reaching back to from. */
int hist_state_batches(const hist_state_t *s, uint64_t from,
                       reg_batch_visit_fn *visit, void *arg);

#endif
