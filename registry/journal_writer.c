/* SPDX-License-Identifier: MIT */
/* journal_writer.c -- group commit off the event loop: a thread writes and
 * syncs batches of queued records, a uv_async_t reports back */
#include "registry/update_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct completion {
  reg_journal_done_cb cb;
  void *arg;
  uint64_t seq;
  int status;
} completion_t;

typedef struct completions {
  completion_t *items;
  size_t n, cap;
} completions_t;

typedef struct compaction {
  uint64_t covered_seq;
  reg_journal_next_fn next;
  void *next_arg;
  completion_t done;
} compaction_t;

typedef struct compactions {
  compaction_t *items;
  size_t n, cap;
} compactions_t;

typedef struct batch {
  uint8_t *bytes;
  size_t len, cap;
  uint64_t last_seq;
  completions_t waiting; /* one per record in bytes */
  compactions_t compactions;
} batch_t;

struct reg_journal_writer {
  uv_async_t async; /* data points back here */
  reg_journal_t *j;
  pthread_t thread;
  bool started;

  pthread_mutex_t mu;
  pthread_cond_t wake;
  /* Guarded by mu: */
  batch_t queue; /* what the loop thread queued since the last take */
  reg_journal_sync_stats_t stats; /* of the writes so far */
  uint64_t next_seq;              /* numbers records as they are queued */
  completions_t done;             /* finished, waiting for the loop thread */
  bool stopping;
};

static void completions_push(completions_t *c, completion_t item) {
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    c->items = xrealloc(c->items, c->cap * sizeof *c->items);
  }
  c->items[c->n++] = item;
}

static void batch_free(batch_t *b) {
  free(b->bytes);
  free(b->waiting.items);
  free(b->compactions.items);
}

/* Runs the callbacks of everything finished, on the loop's thread. */
static void deliver(reg_journal_writer_t *w) {
  pthread_mutex_lock(&w->mu);
  completions_t done = w->done;
  w->done = (completions_t){0};
  pthread_mutex_unlock(&w->mu);
  for (size_t i = 0; i < done.n; i++)
    done.items[i].cb(done.items[i].status, done.items[i].seq,
                     done.items[i].arg);
  free(done.items);
}

static void on_async(uv_async_t *async) {
  deliver(async->data);
}

/* Writes one batch and runs its compactions; called on the writer thread
 * (or, for a writer never started, in reg_journal_writer_stop). */
static void write_batch(reg_journal_writer_t *w, batch_t *b) {
  uint64_t t0 = uv_hrtime();
  int status = 0;
  if (b->waiting.n > 0)
    status = reg_journal_write_durable(w->j, b->bytes, b->len, b->last_seq);
  uint64_t us = (uv_hrtime() - t0) / 1000;
  unsigned bucket = 0;
  while (bucket + 1 < REG_JOURNAL_SYNC_BUCKETS && (1ULL << bucket) <= us)
    bucket++;
  for (size_t i = 0; i < b->waiting.n; i++)
    b->waiting.items[i].status = status;
  for (size_t i = 0; i < b->compactions.n; i++) {
    compaction_t *c = &b->compactions.items[i];
    c->done.status =
        reg_journal_compact(w->j, c->covered_seq, c->next, c->next_arg);
  }
  pthread_mutex_lock(&w->mu);
  if (b->waiting.n > 0) {
    w->stats.syncs++;
    w->stats.records += b->waiting.n;
    w->stats.buckets[bucket]++;
  }
  for (size_t i = 0; i < b->waiting.n; i++)
    completions_push(&w->done, b->waiting.items[i]);
  for (size_t i = 0; i < b->compactions.n; i++)
    completions_push(&w->done, b->compactions.items[i].done);
  pthread_mutex_unlock(&w->mu);
  b->len = 0;
  b->waiting.n = 0;
  b->compactions.n = 0;
}

/* Swaps the queue with the (empty) batch b, keeping both buffers. Call
 * with mu held. */
static void take_queue(reg_journal_writer_t *w, batch_t *b) {
  batch_t tmp = *b;
  *b = w->queue;
  w->queue = tmp;
  /* Compaction checks covered_seq against the journal's counter. */
  reg_journal_set_next_seq(w->j, w->next_seq);
}

static bool queue_empty(const reg_journal_writer_t *w) {
  return w->queue.len == 0 && w->queue.compactions.n == 0;
}

static void *writer_main(void *arg) {
  reg_journal_writer_t *w = arg;
  batch_t b = {0};
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (queue_empty(w) && !w->stopping)
      pthread_cond_wait(&w->wake, &w->mu);
    if (queue_empty(w))
      break; /* stopping, and everything is written */
    take_queue(w, &b);
    pthread_mutex_unlock(&w->mu);
    write_batch(w, &b);
    uv_async_send(&w->async);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  batch_free(&b);
  return NULL;
}

int reg_journal_writer_new(uv_loop_t *loop, reg_journal_t *j,
                           reg_journal_writer_t **out) {
  reg_journal_writer_t *w = xcalloc(1, sizeof *w);
  int rc = uv_async_init(loop, &w->async, on_async);
  if (rc != 0) {
    free(w);
    return rc;
  }
  w->async.data = w;
  w->j = j;
  w->next_seq = reg_journal_next_seq(j);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->wake, NULL);
  *out = w;
  return 0;
}

int reg_journal_writer_start(reg_journal_writer_t *w) {
  if (w->started)
    return -EALREADY;
  int rc = pthread_create(&w->thread, NULL, writer_main, w);
  if (rc != 0)
    return -rc;
  w->started = true;
  return 0;
}

int reg_journal_writer_submit(reg_journal_writer_t *w,
                              const reg_journal_record_t *rec,
                              reg_journal_done_cb cb, void *arg,
                              uint64_t *seq) {
  reg_journal_record_t copy = *rec;
  uint8_t buf[REG_JOURNAL_RECORD_MAX];
  pthread_mutex_lock(&w->mu);
  int rc = -ECANCELED;
  if (w->stopping)
    goto done;
  copy.seq = w->next_seq;
  rc = reg_journal_encode(&copy, buf, sizeof buf);
  if (rc < 0)
    goto done;
  batch_t *q = &w->queue;
  if (q->cap - q->len < (size_t)rc) {
    q->cap = q->cap ? q->cap * 2 : 64 * 1024;
    q->bytes = xrealloc(q->bytes, q->cap);
  }
  memcpy(q->bytes + q->len, buf, (size_t)rc);
  q->len += (size_t)rc;
  q->last_seq = copy.seq;
  completions_push(&q->waiting, (completion_t){cb, arg, copy.seq, 0});
  w->next_seq++;
  *seq = copy.seq;
  rc = 0;
  pthread_cond_signal(&w->wake);
done:
  pthread_mutex_unlock(&w->mu);
  return rc;
}

int reg_journal_writer_compact(reg_journal_writer_t *w, uint64_t covered_seq,
                               reg_journal_next_fn next, void *next_arg,
                               reg_journal_done_cb cb, void *arg) {
  pthread_mutex_lock(&w->mu);
  int rc = -ECANCELED;
  if (!w->stopping) {
    compactions_t *c = &w->queue.compactions;
    if (c->n == c->cap) {
      c->cap = c->cap ? c->cap * 2 : 4;
      c->items = xrealloc(c->items, c->cap * sizeof *c->items);
    }
    c->items[c->n++] =
        (compaction_t){covered_seq, next, next_arg, {cb, arg, 0, 0}};
    rc = 0;
    pthread_cond_signal(&w->wake);
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void reg_journal_writer_stats(reg_journal_writer_t *w,
                              reg_journal_sync_stats_t *out) {
  pthread_mutex_lock(&w->mu);
  *out = w->stats;
  pthread_mutex_unlock(&w->mu);
}

double reg_journal_sync_percentile(const reg_journal_sync_stats_t *st,
                                   double p) {
  uint64_t rank = (uint64_t)(p * (double)st->syncs + 0.5), seen = 0;
  if (rank == 0)
    rank = 1;
  for (unsigned i = 0; i < REG_JOURNAL_SYNC_BUCKETS; i++) {
    seen += st->buckets[i];
    if (seen >= rank)
      return (double)(1ULL << i) / 1000.0;
  }
  return 0;
}

static void on_close(uv_handle_t *handle) {
  reg_journal_writer_t *w = handle->data;
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

void reg_journal_writer_stop(reg_journal_writer_t *w) {
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->mu);
  if (w->started) {
    pthread_join(w->thread, NULL);
  } else if (!queue_empty(w)) {
    batch_t b = {0};
    take_queue(w, &b);
    write_batch(w, &b);
    batch_free(&b);
  }
  reg_journal_set_next_seq(w->j, w->next_seq);
  deliver(w);
  batch_free(&w->queue);
  w->queue = (batch_t){0};
  uv_close((uv_handle_t *)&w->async, on_close);
}
