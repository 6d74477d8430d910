/* SPDX-License-Identifier: MIT */
/* test_journal.c -- the journal: format, replay, torn and corrupt tails,
 * compaction, the writer thread */
#include "registry/update_int.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------
 */

static char *temp_dir(void) {
  char *dir = xstrdup("/tmp/ddport-journal-XXXXXX");
  ASSERT(mkdtemp(dir) != NULL);
  return dir;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  return remove(path);
}

static void remove_tree(char *dir) {
  ASSERT_EQ(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
  free(dir);
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Reads a whole file; *len gets its size. -1 in *len when missing. */
static uint8_t *slurp(const char *dir, const char *name, ssize_t *len) {
  char *path = join(dir, name);
  FILE *f = fopen(path, "rb");
  free(path);
  *len = -1;
  if (f == NULL)
    return NULL;
  uint8_t *buf = xmalloc(1 << 20);
  *len = (ssize_t)fread(buf, 1, 1 << 20, f);
  fclose(f);
  return buf;
}

static void spit(const char *dir, const char *name, const uint8_t *data,
                 size_t len) {
  char *path = join(dir, name);
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  ASSERT_EQ(fwrite(data, 1, len, f), len);
  ASSERT_EQ(fclose(f), 0);
  free(path);
}

static reg_journal_record_t make_rec(const char *name, unsigned n,
                                     bool offline) {
  reg_journal_record_t r;
  memset(&r, 0, sizeof r);
  snprintf(r.name, sizeof r.name, "%s", name);
  r.time_ms = 1700000000000ull + n;
  r.admin_tag = 0x1234567890abcdefull ^ n;
  char text[64];
  snprintf(text, sizeof text, "192.0.%u.%u", (n >> 8) & 255, n & 255);
  ASSERT_EQ(core_ip_parse(text, &r.addrs[r.n_addrs++]), 0);
  if (n % 2) {
    snprintf(text, sizeof text, "2001:db8::%x", n);
    ASSERT_EQ(core_ip_parse(text, &r.addrs[r.n_addrs++]), 0);
  }
  snprintf(r.ports[0].listener, sizeof r.ports[0].listener, "http");
  r.ports[0].port = (uint16_t)(10000 + n % 50000);
  r.n_ports = 1;
  if (n % 3 == 0) {
    snprintf(r.ports[1].listener, sizeof r.ports[1].listener, "https");
    r.ports[1].port = 443;
    r.n_ports = 2;
  }
  r.offline = offline;
  return r;
}

static void assert_rec_eq(const reg_journal_record_t *a,
                          const reg_journal_record_t *b) {
  ASSERT_EQ(a->seq, b->seq);
  ASSERT_EQ(a->time_ms, b->time_ms);
  ASSERT_EQ(a->admin_tag, b->admin_tag);
  ASSERT_STR_EQ(a->name, b->name);
  ASSERT_EQ(a->offline, b->offline);
  ASSERT_EQ(a->n_addrs, b->n_addrs);
  for (size_t i = 0; i < a->n_addrs; i++) {
    ASSERT_EQ(a->addrs[i].family, b->addrs[i].family);
    ASSERT(memcmp(a->addrs[i].bytes, b->addrs[i].bytes,
                  a->addrs[i].family == AF_INET ? 4 : 16) == 0);
  }
  ASSERT_EQ(a->n_ports, b->n_ports);
  for (size_t i = 0; i < a->n_ports; i++) {
    ASSERT_STR_EQ(a->ports[i].listener, b->ports[i].listener);
    ASSERT_EQ(a->ports[i].port, b->ports[i].port);
  }
}

/* Replay collects records here. */
typedef struct collected {
  reg_journal_record_t *recs;
  size_t n;
} collected_t;

static void collect(const reg_journal_record_t *rec, void *arg) {
  collected_t *c = arg;
  c->recs = xrealloc(c->recs, (c->n + 1) * sizeof *c->recs);
  c->recs[c->n++] = *rec;
}

static reg_journal_t *open_collect(const char *dir, collected_t *c) {
  free(c->recs);
  memset(c, 0, sizeof *c);
  reg_journal_t *j = NULL;
  ASSERT_EQ(reg_journal_open(dir, collect, c, &j), 0);
  ASSERT(j != NULL);
  return j;
}

/* The state a replay leaves: the last record of each device. */
#define N_DEVICES 10

typedef struct model {
  reg_journal_record_t recs[N_DEVICES];
  bool has[N_DEVICES];
} model_t;

static int device_index(const char *name) {
  int i = -1;
  ASSERT_EQ(sscanf(name, "dev%d.ddport.test", &i), 1);
  ASSERT(i >= 0 && i < N_DEVICES);
  return i;
}

static void model_apply(model_t *m, const reg_journal_record_t *rec) {
  int i = device_index(rec->name);
  m->recs[i] = *rec;
  m->has[i] = true;
}

static void model_from(model_t *m, const collected_t *c) {
  memset(m, 0, sizeof *m);
  for (size_t i = 0; i < c->n; i++)
    model_apply(m, &c->recs[i]);
}

static void assert_model_eq(const model_t *a, const model_t *b) {
  for (int i = 0; i < N_DEVICES; i++) {
    ASSERT_EQ(a->has[i], b->has[i]);
    if (a->has[i])
      assert_rec_eq(&a->recs[i], &b->recs[i]);
  }
}

typedef struct model_iter {
  const model_t *m;
  int next;
  int fail_at; /* -1: never */
} model_iter_t;

static int model_next(void *arg, reg_journal_record_t *rec) {
  model_iter_t *it = arg;
  while (it->next < N_DEVICES && !it->m->has[it->next])
    it->next++;
  if (it->next == it->fail_at)
    return -EIO;
  if (it->next >= N_DEVICES)
    return 0;
  *rec = it->m->recs[it->next++];
  return 1;
}

/* Appends one update of device i (counter n) to j and to the model. */
static void update(reg_journal_t *j, model_t *m, int i, unsigned n) {
  char name[32];
  snprintf(name, sizeof name, "dev%d.ddport.test", i);
  reg_journal_record_t r = make_rec(name, n, n % 7 == 0);
  ASSERT_EQ(reg_journal_append(j, &r), 0);
  model_apply(m, &r);
}

/* ---- the pure parts ---------------------------------------------------- */

static void test_crc32c(void) {
  /* The check value of CRC-32C (RFC 3720, appendix B.4). */
  ASSERT_EQ(reg_crc32c(0, "123456789", 9), 0xE3069283u);
  ASSERT_EQ(reg_crc32c(0, "", 0), 0);
  uint8_t zeros[32] = {0};
  ASSERT_EQ(reg_crc32c(0, zeros, sizeof zeros), 0x8A9136AAu);
  /* Continuing equals computing at once. */
  ASSERT_EQ(reg_crc32c(reg_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_encode_scan_round_trip(void) {
  uint8_t buf[8 * REG_JOURNAL_RECORD_MAX];
  size_t len = 0;
  reg_journal_record_t recs[6];
  for (unsigned i = 0; i < 6; i++) {
    recs[i] =
        make_rec(i == 5 ? "*.wild.ddport.test" : "cam.ddport.test", i, i == 2);
    recs[i].seq = 10 + i;
    int n = reg_journal_encode(&recs[i], buf + len, sizeof buf - len);
    ASSERT(n > 0);
    len += (size_t)n;
  }
  /* The largest record fits in REG_JOURNAL_RECORD_MAX. */
  reg_journal_record_t big = make_rec("cam.ddport.test", 1, false);
  memset(big.name, 'a', CORE_NAME_MAX);
  for (size_t i = 63; i < CORE_NAME_MAX; i += 64)
    big.name[i] = '.';
  big.name[CORE_NAME_MAX] = '\0';
  big.seq = 16;
  big.n_addrs = REG_MAX_ADDRESSES;
  for (size_t i = 0; i < REG_MAX_ADDRESSES; i++)
    ASSERT_EQ(core_ip_parse("2001:db8::1", &big.addrs[i]), 0);
  big.n_ports = REG_UPDATE_MAX_PORTS;
  for (size_t i = 0; i < REG_UPDATE_MAX_PORTS; i++) {
    memset(big.ports[i].listener, 'l', REG_LISTENER_NAME_MAX);
    big.ports[i].listener[REG_LISTENER_NAME_MAX] = '\0';
    big.ports[i].port = 65535;
  }
  int n = reg_journal_encode(&big, buf + len, REG_JOURNAL_RECORD_MAX);
  ASSERT(n > 0 && n <= REG_JOURNAL_RECORD_MAX);
  len += (size_t)n;

  collected_t c = {0};
  reg_journal_scan_t scan;
  reg_journal_scan_records(buf, len, true, collect, &c, &scan);
  ASSERT_EQ(scan.end, REG_JOURNAL_END_CLEAN);
  ASSERT(scan.why == NULL);
  ASSERT_EQ(scan.good_len, len);
  ASSERT_EQ(scan.n_records, 7);
  ASSERT_EQ(scan.last_seq, 16);
  ASSERT_EQ(c.n, 7);
  for (size_t i = 0; i < 6; i++)
    assert_rec_eq(&c.recs[i], &recs[i]);
  assert_rec_eq(&c.recs[6], &big);
  free(c.recs);
}

static void test_encode_limits(void) {
  uint8_t buf[REG_JOURNAL_RECORD_MAX];
  reg_journal_record_t ok = make_rec("cam.ddport.test", 3, false);
  ok.seq = 1;
  int n = reg_journal_encode(&ok, buf, sizeof buf);
  ASSERT(n > 0);
  for (int cap = 0; cap < n; cap++)
    ASSERT_EQ(reg_journal_encode(&ok, buf, (size_t)cap), -ENOSPC);

  reg_journal_record_t r = ok;
  r.seq = 0;
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  const char *names[] = {"", "Cam.ddport.test", "cam.ddport.test.", "a..b",
                         "cam_1.ddport.test"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    r = ok;
    snprintf(r.name, sizeof r.name, "%s", names[i]);
    ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  }
  r = ok;
  r.ports[0].port = 0;
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  r = ok;
  snprintf(r.ports[0].listener, sizeof r.ports[0].listener, "HTTP");
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  r = ok;
  r.ports[0].listener[0] = '\0';
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  r = ok;
  r.n_addrs = REG_MAX_ADDRESSES + 1;
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  r = ok;
  r.addrs[0].family = 0;
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
  r = ok;
  r.n_ports = REG_UPDATE_MAX_PORTS + 1;
  ASSERT_EQ(reg_journal_encode(&r, buf, sizeof buf), -EINVAL);
}

/* ---- files -------------------------------------------------------------- */

static void test_open_creates(void) {
  char *top = temp_dir();
  char *dir = join(top, "state/nested");
  collected_t c = {0};
  reg_journal_t *j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 0);
  ASSERT_EQ(reg_journal_last_seq(j), 0);
  struct stat st;
  ASSERT_EQ(stat(dir, &st), 0);
  ASSERT(S_ISDIR(st.st_mode));
  ASSERT_EQ(st.st_mode & 0777, 0700);
  ssize_t len;
  uint8_t *log = slurp(dir, "journal", &len);
  ASSERT_EQ(len, 8);
  ASSERT(memcmp(log, "ddportJ1", 8) == 0);
  free(log);

  /* One process at a time. */
  reg_journal_t *other = NULL;
  ASSERT_EQ(reg_journal_open(dir, NULL, NULL, &other), -EBUSY);
  ASSERT(other == NULL);
  /* Committing nothing syncs nothing. */
  ASSERT_EQ(reg_journal_commit(j), 0);
  ASSERT_EQ(reg_journal_stats(j)->syncs, 0);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 0);
  reg_journal_close(j);

  /* A file where the directory should be. */
  char *file = join(top, "file");
  spit(top, "file", (const uint8_t *)"x", 1);
  ASSERT_EQ(reg_journal_open(file, NULL, NULL, &other), -ENOTDIR);
  ASSERT_EQ(reg_journal_open("", NULL, NULL, &other), -EINVAL);
  ASSERT(other == NULL);
  /* A log cut inside its magic (a crash while creating it) is empty. */
  spit(dir, "journal", (const uint8_t *)"ddpo", 4);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 0);
  reg_journal_close(j);
  log = slurp(dir, "journal", &len);
  ASSERT_EQ(len, 8);
  free(log);
  free(file);
  free(dir);
  free(c.recs);
  remove_tree(top);
}

static void test_round_trip(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  reg_journal_t *j = open_collect(dir, &c);
  reg_journal_record_t recs[3] = {make_rec("a.ddport.test", 1, false),
                                  make_rec("b.ddport.test", 2, true),
                                  make_rec("a.ddport.test", 3, false)};
  for (size_t i = 0; i < 3; i++) {
    ASSERT_EQ(reg_journal_append(j, &recs[i]), 0);
    ASSERT_EQ(recs[i].seq, i + 1);
  }
  reg_journal_record_t bad = make_rec("a.ddport.test", 4, false);
  bad.ports[0].port = 0;
  bad.seq = 77;
  ASSERT_EQ(reg_journal_append(j, &bad), -EINVAL);
  ASSERT_EQ(bad.seq, 77);
  ASSERT_EQ(reg_journal_last_seq(j), 3);
  ASSERT_EQ(reg_journal_commit(j), 0);
  ASSERT_EQ(reg_journal_stats(j)->syncs, 1);
  /* Appended but never committed: lost, and never acknowledged. */
  reg_journal_record_t lost = make_rec("c.ddport.test", 9, false);
  ASSERT_EQ(reg_journal_append(j, &lost), 0);
  reg_journal_close(j);

  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 3);
  for (size_t i = 0; i < 3; i++)
    assert_rec_eq(&c.recs[i], &recs[i]);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 3);
  ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, 0);
  /* Numbering goes on after the newest durable record. */
  ASSERT_EQ(reg_journal_last_seq(j), 3);

  /* Group commit: a hundred appends, one sync. */
  size_t syncs = reg_journal_stats(j)->syncs;
  for (unsigned i = 0; i < 100; i++) {
    reg_journal_record_t r = make_rec("d.ddport.test", i, false);
    ASSERT_EQ(reg_journal_append(j, &r), 0);
    ASSERT_EQ(r.seq, 4 + i);
  }
  ASSERT_EQ(reg_journal_commit(j), 0);
  ASSERT_EQ(reg_journal_stats(j)->syncs, syncs + 1);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 103);
  for (size_t i = 0; i < c.n; i++)
    ASSERT_EQ(c.recs[i].seq, i + 1);
  reg_journal_close(j);
  free(c.recs);
  remove_tree(dir);
}

/* Writes records 1..n (devices a.., b..) to a fresh log in dir and returns
 * its bytes; offsets[i] is where record i + 1 starts. */
static uint8_t *write_log(const char *dir, unsigned n, size_t *offsets,
                          ssize_t *len) {
  collected_t c = {0};
  reg_journal_t *j = open_collect(dir, &c);
  for (unsigned i = 0; i < n; i++) {
    reg_journal_record_t r =
        make_rec(i % 2 ? "b.ddport.test" : "a.ddport.test", i + 1, false);
    ASSERT_EQ(reg_journal_append(j, &r), 0);
    ASSERT_EQ(reg_journal_commit(j), 0);
    ssize_t l;
    free(slurp(dir, "journal", &l));
    offsets[i + 1] = (size_t)l;
  }
  offsets[0] = 8;
  reg_journal_close(j);
  free(c.recs);
  return slurp(dir, "journal", len);
}

/* A crash mid-write leaves any prefix of the last record: every one of them
 * is dropped, the records before it survive, and the log goes on. */
static void test_torn_tail_every_offset(void) {
  char *dir = temp_dir();
  size_t off[4];
  ssize_t len;
  uint8_t *log = write_log(dir, 3, off, &len);
  ASSERT_EQ((size_t)len, off[3]);
  collected_t c = {0};
  for (size_t cut = off[2] + 1; cut < off[3]; cut++) {
    spit(dir, "journal", log, cut);
    reg_journal_t *j = open_collect(dir, &c);
    ASSERT_EQ(c.n, 2);
    ASSERT_EQ(c.recs[0].seq, 1);
    ASSERT_EQ(c.recs[1].seq, 2);
    ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, cut - off[2]);
    /* The cut-off bytes are kept aside, and the log ends where the good
     * records end. */
    ssize_t dl, ll;
    uint8_t *dropped = slurp(dir, "journal.dropped", &dl);
    ASSERT_EQ(dl, (ssize_t)(cut - off[2]));
    ASSERT(memcmp(dropped, log + off[2], (size_t)dl) == 0);
    free(dropped);
    free(slurp(dir, "journal", &ll));
    ASSERT_EQ(ll, (ssize_t)off[2]);
    /* New records follow the good ones and survive the next replay. */
    reg_journal_record_t r = make_rec("c.ddport.test", 99, false);
    ASSERT_EQ(reg_journal_append(j, &r), 0);
    ASSERT_EQ(r.seq, 3);
    ASSERT_EQ(reg_journal_commit(j), 0);
    reg_journal_close(j);
    j = open_collect(dir, &c);
    ASSERT_EQ(c.n, 3);
    ASSERT_STR_EQ(c.recs[2].name, "c.ddport.test");
    ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, 0);
    reg_journal_close(j);
  }
  /* Cuts at record boundaries lose nothing that was there. */
  for (size_t k = 0; k <= 3; k++) {
    spit(dir, "journal", log, off[k]);
    reg_journal_t *j = open_collect(dir, &c);
    ASSERT_EQ(c.n, k);
    ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, 0);
    reg_journal_close(j);
  }
  free(log);
  free(c.recs);
  remove_tree(dir);
}

/* A complete record that is wrong -- bit rot, a stray write -- ends replay
 * there: what precedes it stays, the rest is set aside. */
static void test_corrupt_middle(void) {
  char *dir = temp_dir();
  size_t off[6];
  ssize_t len;
  uint8_t *log = write_log(dir, 5, off, &len);
  collected_t c = {0};
  /* A payload byte, the CRC, the length (smaller and huge). */
  size_t where[] = {off[2] + 20, off[2] + 5, off[2], off[2] + 3};
  for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
    uint8_t *bad = xmalloc((size_t)len);
    memcpy(bad, log, (size_t)len);
    bad[where[k]] ^= k == 3 ? 0x80 : 0x01;
    spit(dir, "journal", bad, (size_t)len);
    reg_journal_t *j = open_collect(dir, &c);
    ASSERT_EQ(c.n, 2);
    ASSERT_EQ(c.recs[1].seq, 2);
    ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, (size_t)len - off[2]);
    reg_journal_close(j);
    ssize_t dl;
    uint8_t *dropped = slurp(dir, "journal.dropped", &dl);
    ASSERT_EQ(dl, len - (ssize_t)off[2]);
    ASSERT(memcmp(dropped, bad + off[2], (size_t)dl) == 0);
    free(dropped);
    free(bad);
  }
  /* Zeros after the last record (a file extended but never written). */
  uint8_t *zeros = xcalloc(1, (size_t)len + 4096);
  memcpy(zeros, log, (size_t)len);
  spit(dir, "journal", zeros, (size_t)len + 4096);
  reg_journal_t *j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 5);
  ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, 4096);
  reg_journal_close(j);
  free(zeros);

  /* A sequence number going backwards: record 2 again after record 3. */
  uint8_t *dup = xmalloc((size_t)len * 2);
  memcpy(dup, log, off[3]);
  memcpy(dup + off[3], log + off[1], off[2] - off[1]);
  size_t dup_len = off[3] + off[2] - off[1];
  spit(dir, "journal", dup, dup_len);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 3);
  ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, off[2] - off[1]);
  reg_journal_close(j);
  free(dup);

  /* Not a journal at all: refused, and left alone. */
  spit(dir, "journal", (const uint8_t *)"not a journal, an accident", 26);
  ASSERT_EQ(reg_journal_open(dir, collect, &c, &j), -EINVAL);
  ssize_t l;
  free(slurp(dir, "journal", &l));
  ASSERT_EQ(l, 26);
  free(log);
  free(c.recs);
  remove_tree(dir);
}

static void test_compaction(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0}, got;
  reg_journal_t *j = open_collect(dir, &c);
  unsigned n = 0;
  for (int round = 0; round < 20; round++) {
    for (int k = 0; k < 10; k++, n++)
      update(j, &m, (int)((n * 7 + 3) % N_DEVICES), n);
    ASSERT_EQ(reg_journal_commit(j), 0);
  }
  model_iter_t it = {&m, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, reg_journal_last_seq(j), model_next, &it),
            0);
  reg_journal_close(j);
  /* The log is empty again; the snapshot holds one record per device. */
  ssize_t l;
  free(slurp(dir, "journal", &l));
  ASSERT_EQ(l, 8);
  j = open_collect(dir, &c);
  ASSERT_EQ(reg_journal_stats(j)->snapshot_records, N_DEVICES);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 0);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  ASSERT_EQ(reg_journal_last_seq(j), 200);

  /* Updates after it replay over the snapshot. */
  for (int k = 0; k < 30; k++, n++)
    update(j, &m, k % 4, n);
  ASSERT_EQ(reg_journal_commit(j), 0);
  ASSERT_EQ(reg_journal_last_seq(j), 230);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(reg_journal_stats(j)->snapshot_records, N_DEVICES);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 30);
  model_from(&got, &c);
  assert_model_eq(&got, &m);

  /* A snapshot covering only part of the log: the log keeps the rest. */
  model_t half = m;
  for (int k = 0; k < 10; k++, n++) {
    update(j, &m, k, n);
    if (k == 4)
      half = m;
  }
  ASSERT_EQ(reg_journal_commit(j), 0);
  it = (model_iter_t){&half, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, 235, model_next, &it), 0);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 5);
  ASSERT_EQ(reg_journal_stats(j)->skipped_records, 0);
  ASSERT_EQ(c.recs[N_DEVICES].seq, 236);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  reg_journal_close(j);
  free(c.recs);
  remove_tree(dir);
}

/* A crash after the snapshot's rename but before the log is cut: the old
 * log is still there, and replay skips what the snapshot covers. */
static void test_compaction_crash_window(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0}, got;
  reg_journal_t *j = open_collect(dir, &c);
  for (unsigned n = 0; n < 50; n++)
    update(j, &m, (int)(n % N_DEVICES), n);
  ASSERT_EQ(reg_journal_commit(j), 0);
  ssize_t len;
  uint8_t *old_log = slurp(dir, "journal", &len);
  model_iter_t it = {&m, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, 50, model_next, &it), 0);
  reg_journal_close(j);
  spit(dir, "journal", old_log, (size_t)len);
  /* And the leftovers of a compaction cut short. */
  spit(dir, "snapshot.tmp", (const uint8_t *)"ddportS1 half", 13);
  j = open_collect(dir, &c);
  ASSERT_EQ(reg_journal_stats(j)->snapshot_records, N_DEVICES);
  ASSERT_EQ(reg_journal_stats(j)->skipped_records, 50);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 0);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  ASSERT_EQ(reg_journal_last_seq(j), 50);
  ssize_t l;
  free(slurp(dir, "snapshot.tmp", &l));
  ASSERT_EQ(l, -1);
  reg_journal_close(j);
  free(old_log);
  free(c.recs);
  remove_tree(dir);
}

static void test_compaction_errors(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0}, got;
  reg_journal_t *j = open_collect(dir, &c);
  for (unsigned n = 0; n < 20; n++)
    update(j, &m, (int)(n % N_DEVICES), n);
  ASSERT_EQ(reg_journal_commit(j), 0);
  model_iter_t it = {&m, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, 21, model_next, &it), -EINVAL);
  it = (model_iter_t){&m, 0, 3};
  ASSERT_EQ(reg_journal_compact(j, 20, model_next, &it), -EIO);
  ssize_t l;
  free(slurp(dir, "snapshot", &l));
  ASSERT_EQ(l, -1);
  free(slurp(dir, "snapshot.tmp", &l));
  ASSERT_EQ(l, -1);
  it = (model_iter_t){&m, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, 20, model_next, &it), 0);
  /* Never back to an older snapshot. */
  it = (model_iter_t){&m, 0, -1};
  ASSERT_EQ(reg_journal_compact(j, 19, model_next, &it), -EINVAL);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  reg_journal_close(j);

  /* A damaged snapshot header is refused rather than silently skipped. */
  ssize_t len;
  uint8_t *snap = slurp(dir, "snapshot", &len);
  snap[9] ^= 1;
  spit(dir, "snapshot", snap, (size_t)len);
  ASSERT_EQ(reg_journal_open(dir, collect, &c, &j), -EINVAL);
  /* A damaged snapshot record: the records before it are kept. */
  snap[9] ^= 1;
  snap[len - 3] ^= 1;
  spit(dir, "snapshot", snap, (size_t)len);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, N_DEVICES - 1);
  reg_journal_close(j);
  free(snap);
  free(c.recs);
  remove_tree(dir);
}

/* A write that fails half-way (here: the file size limit) must not leave
 * half a batch for later records to follow. */
static void test_write_failure(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0};
  reg_journal_t *j = open_collect(dir, &c);
  update(j, &m, 0, 1);
  update(j, &m, 1, 2);
  ASSERT_EQ(reg_journal_commit(j), 0);
  ssize_t before;
  free(slurp(dir, "journal", &before));

  struct rlimit saved, low;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  low = saved;
  low.rlim_cur = (rlim_t)before + 100;
  signal(SIGXFSZ, SIG_IGN);
  for (unsigned n = 3; n < 20; n++)
    update(j, &m, 2, n);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &low), 0);
  int rc = reg_journal_commit(j);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  signal(SIGXFSZ, SIG_DFL);
  ASSERT_EQ(rc, -EFBIG);
  ssize_t after;
  free(slurp(dir, "journal", &after));
  ASSERT_EQ(after, before);

  /* The journal goes on. */
  reg_journal_record_t r = make_rec("dev3.ddport.test", 30, false);
  ASSERT_EQ(reg_journal_append(j, &r), 0);
  ASSERT_EQ(reg_journal_commit(j), 0);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 3);
  ASSERT_EQ(c.recs[2].seq, r.seq);
  ASSERT_EQ(reg_journal_stats(j)->dropped_bytes, 0);
  reg_journal_close(j);
  free(c.recs);
  remove_tree(dir);
}

/* ---- the writer thread -----------------------------------------------------
 */

typedef struct done_log {
  uint64_t seqs[512];
  int status[512];
  size_t n;
  size_t compactions;
  int compaction_status;
} done_log_t;

static void on_done(int status, uint64_t seq, void *arg) {
  done_log_t *d = arg;
  ASSERT(d->n < 512);
  d->seqs[d->n] = seq;
  d->status[d->n++] = status;
}

static void on_compacted(int status, uint64_t seq, void *arg) {
  done_log_t *d = arg;
  ASSERT_EQ(seq, 0);
  d->compactions++;
  d->compaction_status = status;
}

static void run_until(uv_loop_t *loop, const done_log_t *d, size_t n,
                      size_t compactions) {
  for (int i = 0; i < 100000 && (d->n < n || d->compactions < compactions); i++)
    uv_run(loop, UV_RUN_ONCE);
  ASSERT_EQ(d->n, n);
  ASSERT_EQ(d->compactions, compactions);
}

static void submit(reg_journal_writer_t *w, model_t *m, int i, unsigned n,
                   done_log_t *d, uint64_t expect_seq) {
  char name[32];
  snprintf(name, sizeof name, "dev%d.ddport.test", i);
  reg_journal_record_t r = make_rec(name, n, false);
  uint64_t seq = 0;
  ASSERT_EQ(reg_journal_writer_submit(w, &r, on_done, d, &seq), 0);
  ASSERT_EQ(seq, expect_seq);
  r.seq = seq;
  model_apply(m, &r);
}

static void test_writer(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0}, got;
  reg_journal_t *j = open_collect(dir, &c);
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  reg_journal_writer_t *w;
  ASSERT_EQ(reg_journal_writer_new(&loop, j, &w), 0);
  static done_log_t d;
  memset(&d, 0, sizeof d);

  /* Queued before the thread runs: one batch, one sync. */
  for (unsigned n = 0; n < 200; n++)
    submit(w, &m, (int)(n % N_DEVICES), n, &d, n + 1);
  reg_journal_record_t bad = make_rec("Bad.Name", 1, false);
  uint64_t seq = 0;
  ASSERT_EQ(reg_journal_writer_submit(w, &bad, on_done, &d, &seq), -EINVAL);
  ASSERT_EQ(reg_journal_writer_start(w), 0);
  run_until(&loop, &d, 200, 0);
  ASSERT_EQ(reg_journal_stats(j)->syncs, 1);
  /* Callbacks come in sequence order, each after its record is durable. */
  for (size_t i = 0; i < 200; i++) {
    ASSERT_EQ(d.seqs[i], i + 1);
    ASSERT_EQ(d.status[i], 0);
  }

  /* Records submitted while it runs, then a compaction behind them. */
  for (unsigned n = 200; n < 300; n++)
    submit(w, &m, (int)(n % 3), n, &d, n + 1);
  static model_t snap;
  snap = m;
  model_iter_t it = {&snap, 0, -1};
  ASSERT_EQ(
      reg_journal_writer_compact(w, 300, model_next, &it, on_compacted, &d), 0);
  run_until(&loop, &d, 300, 1);
  ASSERT_EQ(d.compaction_status, 0);
  for (size_t i = 200; i < 300; i++)
    ASSERT_EQ(d.seqs[i], i + 1);

  /* Queued at stop: written before the thread ends. */
  for (unsigned n = 300; n < 310; n++)
    submit(w, &m, 5, n, &d, n + 1);
  reg_journal_writer_stop(w);
  ASSERT_EQ(d.n, 310);
  ASSERT_EQ(reg_journal_writer_submit(w, &bad, on_done, &d, &seq), -ECANCELED);
  ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);

  /* The journal is the caller's again and knows the numbering. */
  ASSERT_EQ(reg_journal_last_seq(j), 310);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(reg_journal_stats(j)->snapshot_records, N_DEVICES);
  ASSERT_EQ(reg_journal_stats(j)->log_records, 10);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  reg_journal_close(j);
  free(c.recs);
  remove_tree(dir);
}

/* A writer stopped before it was started still writes what was queued. */
static void test_writer_never_started(void) {
  char *dir = temp_dir();
  collected_t c = {0};
  model_t m = {0}, got;
  reg_journal_t *j = open_collect(dir, &c);
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  reg_journal_writer_t *w;
  ASSERT_EQ(reg_journal_writer_new(&loop, j, &w), 0);
  static done_log_t d;
  memset(&d, 0, sizeof d);
  for (unsigned n = 0; n < 5; n++)
    submit(w, &m, (int)n, n, &d, n + 1);
  reg_journal_writer_stop(w);
  ASSERT_EQ(d.n, 5);
  ASSERT_EQ(d.status[4], 0);
  ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  reg_journal_close(j);
  j = open_collect(dir, &c);
  ASSERT_EQ(c.n, 5);
  model_from(&got, &c);
  assert_model_eq(&got, &m);
  reg_journal_close(j);
  free(c.recs);
  remove_tree(dir);
}

int main(void) {
  core_log_set_level(CORE_LOG_ERROR);
  RUN_TEST(test_crc32c);
  RUN_TEST(test_encode_scan_round_trip);
  RUN_TEST(test_encode_limits);
  RUN_TEST(test_open_creates);
  RUN_TEST(test_round_trip);
  RUN_TEST(test_torn_tail_every_offset);
  RUN_TEST(test_corrupt_middle);
  RUN_TEST(test_compaction);
  RUN_TEST(test_compaction_crash_window);
  RUN_TEST(test_compaction_errors);
  RUN_TEST(test_write_failure);
  RUN_TEST(test_writer);
  RUN_TEST(test_writer_never_started);
  return 0;
}
