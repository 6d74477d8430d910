/* SPDX-License-Identifier: MIT */
/* updates.c -- the dynamic state of updated devices: replayed from the
 * journal, laid over the YAML definitions, journaled and applied */
#include "registry/registry_int.h"
#include "registry/update_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Compact the journal after this many records: replay stays short. */
#define COMPACT_AFTER 10000

/* What ddport knows about one device that devices have updated. Records
 * are kept encoded (about 60 bytes for a typical device) rather than as
 * reg_journal_record_t (2.5 KiB), since a carrier has millions. */
typedef struct dev_state {
  struct dev_state *next; /* hash chain */
  char *name;
  uint8_t *applied; /* the durable record in force, or NULL */
  uint16_t applied_len;
  uint8_t *latest; /* the newest record submitted, or NULL: applied */
  uint16_t latest_len;
  unsigned in_flight;   /* submitted, not yet durable */
  uint64_t yaml_tag;    /* fingerprint of the YAML definition in force */
  bool yaml_enabled;    /* the YAML's enabled: an update cannot override */
  uint64_t rate_window; /* minute (monotonic) of rate_count */
  uint32_t rate_count;
  uint32_t generation; /* of the last merge that saw the device */
} dev_state_t;

struct reg_updates {
  reg_journal_t *journal;
  reg_journal_writer_t *writer; /* while started */
  dev_state_t **buckets;
  size_t n_buckets, n_states;
  uint32_t generation;
  size_t since_compaction; /* records submitted */
  bool compact_wanted;
  bool compacting;
  uint64_t last_seq; /* newest submitted */
  reg_t *reg;
  reg_update_applied_fn *applied;
  void *applied_arg;
  unsigned pending; /* submissions and a compaction not yet called back */
  bool stopping;
};

/* ---- the state table ----------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL

static uint64_t fnv1a_str(uint64_t h, const char *s) {
  /* The NUL keeps "ab"+"c" apart from "a"+"bc". */
  return s ? fnv1a(h, s, strlen(s) + 1) : fnv1a(h, "", 1);
}

uint64_t reg_device_fingerprint(const reg_device_t *d) {
  uint64_t h = fnv1a_str(FNV_OFFSET, d->name);
  h = fnv1a_str(h, d->owner);
  for (size_t i = 0; i < d->n_addrs; i++) {
    h = fnv1a(h, &d->addrs[i].family, sizeof d->addrs[i].family);
    h = fnv1a(h, d->addrs[i].bytes, sizeof d->addrs[i].bytes);
  }
  h = fnv1a_str(h, d->target_host);
  for (size_t i = 0; i < d->n_ports; i++) {
    h = fnv1a_str(h, d->ports[i].listener);
    h = fnv1a(h, &d->ports[i].port, sizeof d->ports[i].port);
  }
  uint8_t flags[3] = {(uint8_t)d->proxy_protocol, d->enabled, d->wildcard};
  return fnv1a(h, flags, sizeof flags);
}

static size_t bucket_of(const reg_updates_t *u, const char *name) {
  return reg_name_hash(name, strlen(name)) & (u->n_buckets - 1);
}

static dev_state_t *state_find(const reg_updates_t *u, const char *name) {
  for (dev_state_t *s = u->buckets[bucket_of(u, name)]; s; s = s->next)
    if (strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

static void state_grow(reg_updates_t *u) {
  size_t old_n = u->n_buckets;
  dev_state_t **old = u->buckets;
  u->n_buckets = old_n * 2;
  u->buckets = xcalloc(u->n_buckets, sizeof *u->buckets);
  for (size_t i = 0; i < old_n; i++)
    for (dev_state_t *s = old[i], *next; s; s = next) {
      next = s->next;
      size_t b = bucket_of(u, s->name);
      s->next = u->buckets[b];
      u->buckets[b] = s;
    }
  free(old);
}

static dev_state_t *state_get(reg_updates_t *u, const char *name) {
  dev_state_t *s = state_find(u, name);
  if (s)
    return s;
  if (u->n_states >= u->n_buckets)
    state_grow(u);
  s = xcalloc(1, sizeof *s);
  s->name = xstrdup(name);
  s->generation = u->generation;
  size_t b = bucket_of(u, name);
  s->next = u->buckets[b];
  u->buckets[b] = s;
  u->n_states++;
  return s;
}

static void state_remove(reg_updates_t *u, dev_state_t *s) {
  dev_state_t **p = &u->buckets[bucket_of(u, s->name)];
  while (*p != s)
    p = &(*p)->next;
  *p = s->next;
  free(s->name);
  free(s->applied);
  free(s->latest);
  free(s);
  u->n_states--;
}

static int encode(const reg_journal_record_t *rec, uint8_t **out,
                  uint16_t *len) {
  uint8_t buf[REG_JOURNAL_RECORD_MAX];
  int n = reg_journal_encode(rec, buf, sizeof buf);
  if (n < 0)
    return n;
  *out = xmalloc((size_t)n);
  memcpy(*out, buf, (size_t)n);
  *len = (uint16_t)n;
  return 0;
}

static void copy_record(const reg_journal_record_t *rec, void *arg) {
  *(reg_journal_record_t *)arg = *rec;
}

/* Decodes one record kept by encode(); it was good when encoded. */
static void decode(const uint8_t *data, uint16_t len,
                   reg_journal_record_t *out) {
  reg_journal_scan_t scan;
  memset(out, 0, sizeof *out);
  reg_journal_scan_records(data, len, false, copy_record, out, &scan);
}

static void set_applied(dev_state_t *s, uint8_t *data, uint16_t len) {
  free(s->applied);
  s->applied = data;
  s->applied_len = len;
}

/* ---- opening and replay -------------------------------------------------- */

static void on_replay(const reg_journal_record_t *rec, void *arg) {
  reg_updates_t *u = arg;
  dev_state_t *s = state_get(u, rec->name);
  uint8_t *data;
  uint16_t len;
  if (encode(rec, &data, &len) == 0)
    set_applied(s, data, len);
  s->yaml_tag = rec->admin_tag;
  u->since_compaction++;
}

static bool file_exists(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *path = xmalloc(n);
  snprintf(path, n, "%s/%s", dir, name);
  struct stat st;
  bool exists = stat(path, &st) == 0;
  free(path);
  return exists;
}

int reg_updates_open(const reg_config_t *config, reg_updates_t **out) {
  *out = NULL;
  bool configured = config->update.n_listen + config->update.n_tls_listen > 0;
  /* A journal left by an earlier run is still replayed when the endpoint
   * is switched off: the devices keep the addresses they reported. */
  if (!configured && !file_exists(config->state_dir, "journal") &&
      !file_exists(config->state_dir, "snapshot"))
    return 0;
  reg_updates_t *u = xcalloc(1, sizeof *u);
  u->n_buckets = 64;
  u->buckets = xcalloc(u->n_buckets, sizeof *u->buckets);
  int rc = reg_journal_open(config->state_dir, on_replay, u, &u->journal);
  if (rc != 0) {
    reg_updates_free(u);
    return rc;
  }
  const reg_journal_stats_t *st = reg_journal_stats(u->journal);
  u->last_seq = reg_journal_last_seq(u->journal);
  core_log(CORE_LOG_INFO,
           "updates: journal in %s: %zu devices from %zu snapshot and %zu log "
           "records",
           config->state_dir, u->n_states, st->snapshot_records,
           st->log_records);
  *out = u;
  return 0;
}

void reg_updates_free(reg_updates_t *u) {
  if (u == NULL)
    return;
  for (size_t i = 0; i < u->n_buckets; i++)
    for (dev_state_t *s = u->buckets[i], *next; s; s = next) {
      next = s->next;
      free(s->name);
      free(s->applied);
      free(s->latest);
      free(s);
    }
  free(u->buckets);
  if (u->journal)
    reg_journal_close(u->journal);
  free(u);
}

static void maybe_compact(reg_updates_t *u);

/* ---- laying updates over YAML definitions -------------------------------- */

/* Replaces d's addresses, ports and online state with rec's, in memory
 * from mem: a configuration's devices arena, or the heap for NULL (the
 * caller frees addrs, ports and their listeners). What d pointed to is not
 * freed: it belongs to a configuration or a table. */
static void overlay(reg_device_t *d, const reg_journal_record_t *rec,
                    bool yaml_enabled, core_arena_t *mem) {
  size_t addrs_size = (rec->n_addrs ? rec->n_addrs : 1) * sizeof *d->addrs;
  size_t ports_size = (rec->n_ports ? rec->n_ports : 1) * sizeof *d->ports;
  d->addrs = mem ? core_arena_alloc(mem, addrs_size) : xmalloc(addrs_size);
  memcpy(d->addrs, rec->addrs, rec->n_addrs * sizeof *d->addrs);
  d->n_addrs = rec->n_addrs;
  d->target_host = NULL;
  d->ports = mem ? core_arena_alloc(mem, ports_size) : xmalloc(ports_size);
  for (size_t i = 0; i < rec->n_ports; i++) {
    const char *l = rec->ports[i].listener;
    d->ports[i].listener =
        mem ? core_arena_strndup(mem, l, strlen(l)) : xstrdup(l);
    d->ports[i].port = rec->ports[i].port;
  }
  d->n_ports = rec->n_ports;
  d->enabled = yaml_enabled && !rec->offline;
}

size_t reg_updates_merge(reg_updates_t *u, reg_config_t *config) {
  if (u == NULL || u->n_states == 0)
    return 0;
  u->generation++;
  size_t applied = 0, dropped = 0;
  for (size_t i = 0; i < config->n_devices; i++) {
    reg_device_t *d = &config->devices[i];
    dev_state_t *s = state_find(u, d->name);
    if (s == NULL)
      continue;
    s->generation = u->generation;
    uint64_t tag = reg_device_fingerprint(d);
    s->yaml_enabled = d->enabled;
    if (s->applied != NULL) {
      reg_journal_record_t rec;
      decode(s->applied, s->applied_len, &rec);
      if (rec.admin_tag == tag) {
        overlay(d, &rec, d->enabled, &config->device_mem);
        applied++;
      } else {
        /* The admin changed the device since it was updated: the YAML
         * wins until the device updates again. */
        core_log(CORE_LOG_INFO,
                 "updates: %s was changed in YAML since its last update; "
                 "the YAML definition is in force",
                 d->name);
        set_applied(s, NULL, 0);
        dropped++;
      }
    }
    s->yaml_tag = tag;
  }
  /* States of devices no longer in YAML, or dropped above. */
  for (size_t b = 0; b < u->n_buckets; b++)
    for (dev_state_t *s = u->buckets[b], *next; s; s = next) {
      next = s->next;
      if (s->in_flight > 0)
        continue;
      if (s->generation != u->generation && s->applied != NULL) {
        core_log(CORE_LOG_INFO,
                 "updates: %s is no longer in the registry; its update is "
                 "dropped",
                 s->name);
        dropped++;
        set_applied(s, NULL, 0);
      }
      if (s->applied == NULL && s->latest == NULL &&
          (s->generation != u->generation || s->rate_count == 0))
        state_remove(u, s);
    }
  if (dropped > 0)
    u->compact_wanted = true; /* so a revert cannot revive them */
  if (applied + dropped > 0)
    core_log(CORE_LOG_INFO, "updates: %zu device updates in force, %zu dropped",
             applied, dropped);
  maybe_compact(u);
  return dropped;
}

/* ---- compaction ---------------------------------------------------------- */

typedef struct snapshot {
  uint8_t **records;
  uint16_t *lens;
  size_t n, next;
} snapshot_t;

static int snapshot_next(void *arg, reg_journal_record_t *rec) {
  snapshot_t *snap = arg;
  if (snap->next == snap->n)
    return 0;
  decode(snap->records[snap->next], snap->lens[snap->next], rec);
  snap->next++;
  return 1;
}

static void snapshot_free(snapshot_t *snap) {
  for (size_t i = 0; i < snap->n; i++)
    free(snap->records[i]);
  free(snap->records);
  free(snap->lens);
  free(snap);
}

static void log_compaction(int status, const snapshot_t *snap) {
  if (status != 0)
    core_log(CORE_LOG_ERROR, "updates: journal compaction failed: %s",
             strerror(-status));
  else
    core_log(CORE_LOG_INFO, "updates: journal compacted: %zu devices", snap->n);
}

typedef struct compaction_done {
  reg_updates_t *u;
  snapshot_t *snap;
} compaction_done_t;

static void on_compaction_done(int status, uint64_t seq, void *arg) {
  compaction_done_t *cd = arg;
  reg_updates_t *u = cd->u;
  (void)seq;
  log_compaction(status, cd->snap);
  snapshot_free(cd->snap);
  free(cd);
  u->compacting = false;
  u->pending--;
}

/* Queues a compaction of what the state holds after every record
 * submitted so far: the newest record of each device, durable or not yet
 * (those are ahead of the compaction in the writer's queue). */
static void maybe_compact(reg_updates_t *u) {
  if (u->writer == NULL || u->compacting || u->stopping ||
      (!u->compact_wanted && u->since_compaction < COMPACT_AFTER))
    return;
  snapshot_t *snap = xcalloc(1, sizeof *snap);
  snap->records = xcalloc(u->n_states + 1, sizeof *snap->records);
  snap->lens = xcalloc(u->n_states + 1, sizeof *snap->lens);
  for (size_t b = 0; b < u->n_buckets; b++)
    for (dev_state_t *s = u->buckets[b]; s; s = s->next) {
      const uint8_t *data = s->latest ? s->latest : s->applied;
      uint16_t len = s->latest ? s->latest_len : s->applied_len;
      if (data == NULL)
        continue;
      snap->records[snap->n] = xmalloc(len);
      memcpy(snap->records[snap->n], data, len);
      snap->lens[snap->n++] = len;
    }
  compaction_done_t *cd = xmalloc(sizeof *cd);
  *cd = (compaction_done_t){u, snap};
  if (reg_journal_writer_compact(u->writer, u->last_seq, snapshot_next, snap,
                                 on_compaction_done, cd) != 0) {
    snapshot_free(snap);
    free(cd);
    return;
  }
  u->compacting = true;
  u->pending++;
  u->compact_wanted = false;
  u->since_compaction = 0;
}

/* ---- running ------------------------------------------------------------- */

int reg_updates_start(reg_updates_t *u, uv_loop_t *loop, reg_t *reg,
                      reg_update_applied_fn *applied, void *arg) {
  u->reg = reg;
  u->applied = applied;
  u->applied_arg = arg;
  int rc = reg_journal_writer_new(loop, u->journal, &u->writer);
  if (rc == 0)
    rc = reg_journal_writer_start(u->writer);
  if (rc != 0) {
    core_log(CORE_LOG_ERROR, "updates: cannot start the journal writer: %s",
             strerror(-rc));
    if (u->writer)
      reg_journal_writer_stop(u->writer);
    u->writer = NULL;
    return rc;
  }
  maybe_compact(u);
  return 0;
}

void reg_updates_stop(reg_updates_t *u) {
  if (u == NULL || u->writer == NULL)
    return;
  u->stopping = true;
  /* Writes what is queued and runs every callback: nothing acknowledged
   * is lost, nothing queued is left unanswered. */
  reg_journal_writer_stop(u->writer);
  /* The writer is freed when the loop next runs: its figures are still
   * there. */
  reg_journal_sync_stats_t st;
  reg_journal_writer_stats(u->writer, &st);
  if (st.syncs > 0)
    core_log(CORE_LOG_INFO,
             "updates: %llu records in %llu syncs (%.1f per sync); sync "
             "time p50 < %.3f ms, p90 < %.3f ms, p99 < %.3f ms",
             (unsigned long long)st.records, (unsigned long long)st.syncs,
             (double)st.records / (double)st.syncs,
             reg_journal_sync_percentile(&st, 0.50),
             reg_journal_sync_percentile(&st, 0.90),
             reg_journal_sync_percentile(&st, 0.99));
  u->writer = NULL;
}

bool reg_updates_running(const reg_updates_t *u) {
  return u != NULL && u->writer != NULL && !u->stopping;
}

/* The device state a new update starts from: the newest submitted record,
 * or the registry's entry (its YAML definition, or an applied update). */
int reg_updates_base(reg_updates_t *u, const reg_device_t *device,
                     reg_journal_record_t *out) {
  dev_state_t *s = state_find(u, device->name);
  if (s == NULL || (!s->latest && !s->applied)) {
    /* No update in force: device is its YAML definition. */
    s = state_get(u, device->name);
    s->yaml_tag = reg_device_fingerprint(device);
    s->yaml_enabled = device->enabled;
  }
  if (s->latest || s->applied) {
    decode(s->latest ? s->latest : s->applied,
           s->latest ? s->latest_len : s->applied_len, out);
    return 0;
  }
  memset(out, 0, sizeof *out);
  size_t len = strlen(device->name);
  memcpy(out->name, device->name, len + 1);
  out->admin_tag = s->yaml_tag;
  out->n_addrs =
      device->n_addrs < REG_MAX_ADDRESSES ? device->n_addrs : REG_MAX_ADDRESSES;
  memcpy(out->addrs, device->addrs, out->n_addrs * sizeof *out->addrs);
  for (size_t i = 0; i < device->n_ports && i < REG_UPDATE_MAX_PORTS; i++) {
    snprintf(out->ports[i].listener, sizeof out->ports[i].listener, "%s",
             device->ports[i].listener);
    out->ports[i].port = device->ports[i].port;
    out->n_ports++;
  }
  out->offline = false;
  return 0;
}

bool reg_updates_rate_ok(reg_updates_t *u, const char *name,
                         uint32_t per_minute) {
  if (per_minute == 0)
    return true;
  dev_state_t *s = state_get(u, name);
  uint64_t minute = core_now_ms() / 60000;
  if (s->rate_window != minute) {
    s->rate_window = minute;
    s->rate_count = 0;
  }
  return ++s->rate_count <= per_minute;
}

typedef struct submission {
  reg_updates_t *u;
  char name[CORE_NAME_MAX + 1];
  uint8_t *data; /* the record, encoded */
  uint16_t len;
  reg_update_done_fn *done;
  void *arg;
} submission_t;

/* Applies a durable record to the live registry. */
static void apply(reg_updates_t *u, dev_state_t *s,
                  const reg_journal_record_t *rec) {
  /* reg_find, not reg_lookup: a device an update took offline is still
   * there to bring back. */
  const reg_device_t *cur = reg_find(u->reg, rec->name, strlen(rec->name));
  if (cur == NULL || rec->admin_tag != s->yaml_tag) {
    core_log(CORE_LOG_INFO,
             "updates: %s changed in YAML while its update was written; the "
             "YAML definition stays in force",
             rec->name);
    return;
  }
  reg_device_t d = *cur;
  overlay(&d, rec, s->yaml_enabled, NULL); /* the table copies it */
  reg_update_device(u->reg, &d);
  free(d.addrs);
  for (size_t i = 0; i < d.n_ports; i++)
    free(d.ports[i].listener);
  free(d.ports);
  if (u->applied)
    u->applied(rec->name, u->applied_arg);
}

static void on_durable(int status, uint64_t seq, void *arg) {
  (void)seq;
  submission_t *sub = arg;
  reg_updates_t *u = sub->u;
  dev_state_t *s = state_find(u, sub->name);
  if (s != NULL) {
    s->in_flight--;
    if (status == 0) {
      reg_journal_record_t rec;
      decode(sub->data, sub->len, &rec);
      set_applied(s, sub->data, sub->len);
      sub->data = NULL;
      apply(u, s, &rec);
    }
    if (s->in_flight == 0) {
      /* After a failure the newest submitted state may never have been
       * written: start again from what is durable. */
      free(s->latest);
      s->latest = NULL;
    }
  }
  u->pending--;
  sub->done(status, sub->arg);
  free(sub->data);
  free(sub);
  maybe_compact(u);
}

int reg_updates_submit(reg_updates_t *u, reg_journal_record_t *rec,
                       reg_update_done_fn *done, void *arg) {
  if (!reg_updates_running(u))
    return -ECANCELED;
  dev_state_t *s = state_find(u, rec->name);
  if (s == NULL) /* reg_updates_base was not called first */
    return -EINVAL;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  rec->time_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
  /* Encodable? Checked before the writer holds a callback for it. */
  uint8_t check[REG_JOURNAL_RECORD_MAX];
  rec->seq = u->last_seq + 1;
  int rc = reg_journal_encode(rec, check, sizeof check);
  if (rc < 0)
    return rc;
  submission_t *sub = xcalloc(1, sizeof *sub);
  sub->u = u;
  memcpy(sub->name, rec->name, sizeof sub->name);
  sub->done = done;
  sub->arg = arg;
  uint64_t seq;
  rc = reg_journal_writer_submit(u->writer, rec, on_durable, sub, &seq);
  if (rc != 0) {
    free(sub);
    return rc;
  }
  rec->seq = seq;
  encode(rec, &sub->data, &sub->len);
  uint8_t *copy = xmalloc(sub->len);
  memcpy(copy, sub->data, sub->len);
  free(s->latest);
  s->latest = copy;
  s->latest_len = sub->len;
  s->in_flight++;
  u->pending++;
  u->last_seq = seq;
  u->since_compaction++;
  return 0;
}
