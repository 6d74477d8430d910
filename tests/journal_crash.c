/* SPDX-License-Identifier: MIT */
/* journal_crash.c -- appends journal records and says which are durable,
 * so a test can kill it mid-stream and check what replay finds */
#include "registry/update_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every record's content follows from its sequence number, so a replay can
 * check each record it gets without knowing what was written. */
#define N_NAMES 7

static reg_journal_record_t record_for(uint64_t seq) {
  reg_journal_record_t r;
  memset(&r, 0, sizeof r);
  r.seq = seq;
  r.time_ms = seq * 1000;
  r.admin_tag = seq * 0x9E3779B97F4A7C15ull;
  snprintf(r.name, sizeof r.name, "dev%u.crash.test",
           (unsigned)(seq % N_NAMES));
  core_ip_t *v4 = &r.addrs[r.n_addrs++];
  v4->family = AF_INET;
  v4->bytes[0] = 10;
  v4->bytes[1] = (uint8_t)(seq >> 16);
  v4->bytes[2] = (uint8_t)(seq >> 8);
  v4->bytes[3] = (uint8_t)seq;
  if (seq % 2) {
    core_ip_t *v6 = &r.addrs[r.n_addrs++];
    v6->family = AF_INET6;
    v6->bytes[0] = 0x20;
    v6->bytes[1] = 0x01;
    v6->bytes[2] = 0x0d;
    v6->bytes[3] = 0xb8;
    for (int i = 0; i < 8; i++)
      v6->bytes[8 + i] = (uint8_t)(seq >> (8 * (7 - i)));
  }
  snprintf(r.ports[0].listener, sizeof r.ports[0].listener, "http");
  r.ports[0].port = (uint16_t)(1 + seq % 65535);
  r.n_ports = 1;
  if (seq % 3 == 0) {
    snprintf(r.ports[1].listener, sizeof r.ports[1].listener, "https");
    r.ports[1].port = (uint16_t)(1 + (seq * 7) % 65535);
    r.n_ports = 2;
  }
  r.offline = seq % 11 == 0;
  return r;
}

static bool record_matches(const reg_journal_record_t *got) {
  reg_journal_record_t want = record_for(got->seq);
  uint8_t a[REG_JOURNAL_RECORD_MAX], b[REG_JOURNAL_RECORD_MAX];
  int na = reg_journal_encode(&want, a, sizeof a);
  int nb = reg_journal_encode(got, b, sizeof b);
  return na > 0 && na == nb && memcmp(a, b, (size_t)na) == 0;
}

/* The last record of each name: the state a compaction writes. */
typedef struct model {
  reg_journal_record_t recs[N_NAMES];
  bool has[N_NAMES];
  int next;
} model_t;

static void model_apply(model_t *m, uint64_t seq) {
  m->recs[seq % N_NAMES] = record_for(seq);
  m->has[seq % N_NAMES] = true;
}

static int model_next(void *arg, reg_journal_record_t *rec) {
  model_t *m = arg;
  while (m->next < N_NAMES && !m->has[m->next])
    m->next++;
  if (m->next == N_NAMES)
    return 0;
  *rec = m->recs[m->next++];
  return 1;
}

static void on_replay_model(const reg_journal_record_t *rec, void *arg) {
  model_apply(arg, rec->seq);
}

static void committed(uint64_t seq) {
  printf("committed %llu\n", (unsigned long long)seq);
}

/* ---- blocking API: BATCH appends, one commit, then the prints ---------- */

static int run_append(const char *dir, long count, long batch, long every) {
  static model_t model;
  reg_journal_t *j;
  int rc = reg_journal_open(dir, on_replay_model, &model, &j);
  if (rc != 0) {
    fprintf(stderr, "open: %s\n", strerror(-rc));
    return 1;
  }
  long commits = 0;
  for (long done = 0; done < count;) {
    uint64_t first = reg_journal_last_seq(j) + 1;
    long n = batch < count - done ? batch : count - done;
    for (long i = 0; i < n; i++) {
      reg_journal_record_t r = record_for(first + (uint64_t)i);
      if ((rc = reg_journal_append(j, &r)) != 0 ||
          r.seq != first + (uint64_t)i) {
        fprintf(stderr, "append: %s\n", strerror(-rc));
        return 1;
      }
    }
    if ((rc = reg_journal_commit(j)) != 0) {
      fprintf(stderr, "commit: %s\n", strerror(-rc));
      return 1;
    }
    for (long i = 0; i < n; i++) {
      committed(first + (uint64_t)i);
      model_apply(&model, first + (uint64_t)i);
    }
    fflush(stdout);
    done += n;
    if (every > 0 && ++commits % every == 0) {
      model.next = 0;
      rc = reg_journal_compact(j, reg_journal_last_seq(j), model_next, &model);
      if (rc != 0) {
        fprintf(stderr, "compact: %s\n", strerror(-rc));
        return 1;
      }
    }
  }
  reg_journal_close(j);
  return 0;
}

/* ---- the writer thread: INFLIGHT records queued at any time ------------- */

typedef struct run {
  reg_journal_writer_t *w;
  long count, submitted, completed, every;
  uint64_t next_seq;
  model_t model;
  int failed;
} run_t;

static void on_done(int status, uint64_t seq, void *arg);

static void submit_one(run_t *r) {
  reg_journal_record_t rec = record_for(r->next_seq);
  uint64_t seq;
  int rc = reg_journal_writer_submit(r->w, &rec, on_done, r, &seq);
  if (rc != 0 || seq != r->next_seq) {
    fprintf(stderr, "submit: %s\n", strerror(-rc));
    exit(1);
  }
  r->next_seq++;
  r->submitted++;
}

static void on_compacted(int status, uint64_t seq, void *arg) {
  free(arg);
  if (status != 0) {
    fprintf(stderr, "compact: %s\n", strerror(-status));
    exit(1);
  }
}

static void on_done(int status, uint64_t seq, void *arg) {
  run_t *r = arg;
  if (status != 0) {
    fprintf(stderr, "write: %s\n", strerror(-status));
    exit(1);
  }
  committed(seq);
  fflush(stdout);
  model_apply(&r->model, seq);
  r->completed++;
  if (r->every > 0 && r->completed % r->every == 0) {
    model_t *copy = xmalloc(sizeof *copy);
    *copy = r->model;
    copy->next = 0;
    if (reg_journal_writer_compact(r->w, seq, model_next, copy, on_compacted,
                                   copy) != 0)
      exit(1);
  }
  if (r->submitted < r->count)
    submit_one(r);
  else if (r->completed == r->count)
    reg_journal_writer_stop(r->w);
}

static int run_writer(const char *dir, long count, long inflight, long every) {
  static run_t r;
  reg_journal_t *j;
  int rc = reg_journal_open(dir, on_replay_model, &r.model, &j);
  if (rc != 0) {
    fprintf(stderr, "open: %s\n", strerror(-rc));
    return 1;
  }
  uv_loop_t *loop = uv_default_loop();
  r.count = count;
  r.every = every;
  r.next_seq = reg_journal_last_seq(j) + 1;
  if ((rc = reg_journal_writer_new(loop, j, &r.w)) != 0 ||
      (rc = reg_journal_writer_start(r.w)) != 0) {
    fprintf(stderr, "writer: %s\n", strerror(-rc));
    return 1;
  }
  for (long i = 0; i < inflight && r.submitted < count; i++)
    submit_one(&r);
  if (count == 0)
    reg_journal_writer_stop(r.w);
  uv_run(loop, UV_RUN_DEFAULT);
  reg_journal_close(j);
  return 0;
}

/* ---- dump: replay and check --------------------------------------------- */

static void on_dump(const reg_journal_record_t *rec, void *arg) {
  if (!record_matches(rec)) {
    printf("mismatch %llu\n", (unsigned long long)rec->seq);
    (*(int *)arg)++;
  }
  printf("record %llu %s\n", (unsigned long long)rec->seq, rec->name);
}

static int run_dump(const char *dir) {
  int mismatches = 0;
  reg_journal_t *j;
  int rc = reg_journal_open(dir, on_dump, &mismatches, &j);
  if (rc != 0) {
    fprintf(stderr, "open: %s\n", strerror(-rc));
    return 1;
  }
  const reg_journal_stats_t *st = reg_journal_stats(j);
  printf("end last=%llu snapshot=%zu log=%zu skipped=%zu dropped=%zu\n",
         (unsigned long long)reg_journal_last_seq(j), st->snapshot_records,
         st->log_records, st->skipped_records, st->dropped_bytes);
  reg_journal_close(j);
  return mismatches ? 3 : 0;
}

static long number(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 0) {
    fprintf(stderr, "not a count: %s\n", s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "dump") == 0)
    return run_dump(argv[2]);
  long group = argc > 4 ? number(argv[4]) : 1;
  long every = argc > 5 ? number(argv[5]) : 0;
  if (group < 1)
    group = 1;
  if (argc >= 4 && argc <= 6 && strcmp(argv[1], "append") == 0)
    return run_append(argv[2], number(argv[3]), group, every);
  if (argc >= 4 && argc <= 6 && strcmp(argv[1], "writer") == 0)
    return run_writer(argv[2], number(argv[3]), argc > 4 ? group : 32, every);
  fprintf(stderr,
          "usage: %s append DIR COUNT [BATCH [COMPACT_EVERY]]\n"
          "       %s writer DIR COUNT [IN_FLIGHT [COMPACT_EVERY]]\n"
          "       %s dump DIR\n",
          argv[0], argv[0], argv[0]);
  return 2;
}
