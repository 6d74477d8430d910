/* SPDX-License-Identifier: MIT */
/* journal.c -- the durable, append-only log of device updates, and its
 * snapshot */
#include "registry/update_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Files in state_dir:
 *   journal   "ddportJ1", then records
 *   snapshot  "ddportS1", covered seq (u64), CRC-32C of those 16 bytes,
 *             then records
 *   lock      held with flock() while a process has the journal open
 * A record: payload length (u32), CRC-32C of the length's 4 bytes and the
 * payload (u32), payload. Integers are little-endian. Payload of a device
 * record (type 1): type u8, seq u64, time_ms u64, admin_tag u64, flags u8
 * (bit 0: offline), name (u8 length, bytes), addresses (u8 count; each u8
 * family 4 or 6 and 4 or 16 bytes), ports (u8 count; each u8 length,
 * listener name, u16 port). docs/updates.md describes the same. */

#define LOG_MAGIC "ddportJ1"
#define SNAPSHOT_MAGIC "ddportS1"
#define MAGIC_LEN 8
#define SNAPSHOT_HEADER_LEN 20
#define RECORD_HEADER_LEN 8
#define RECORD_TYPE_DEVICE 1
#define FLAG_OFFLINE 1u

/* ---- CRC-32C --------------------------------------------------------------
 * Reflected Castagnoli polynomial 0x1EDC6F41 (0x82F63B78 reversed), one
 * table lookup per byte; the table is computed once. */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
}

uint32_t reg_crc32c(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc_once, crc_init);
  const uint8_t *p = data;
  crc = ~crc;
  for (size_t i = 0; i < len; i++)
    crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* ---- encoding ------------------------------------------------------------ */

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static bool valid_listener(const char *s, size_t len) {
  if (len == 0 || len > REG_LISTENER_NAME_MAX)
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-'))
      return false;
  }
  return true;
}

/* A device name is stored normalised; anything else is not ours. */
static bool valid_name(const char *s, size_t len) {
  char norm[CORE_NAME_MAX + 1];
  if (len == 0 || len > CORE_NAME_MAX || s[len - 1] == '.')
    return false;
  int n = core_name_normalise(s, len, norm, true);
  return n == (int)len && memcmp(norm, s, len) == 0;
}

int reg_journal_encode(const reg_journal_record_t *rec, uint8_t *buf,
                       size_t cap) {
  size_t name_len = strnlen(rec->name, sizeof rec->name);
  if (rec->seq == 0 || !valid_name(rec->name, name_len) ||
      rec->n_addrs > REG_MAX_ADDRESSES || rec->n_ports > REG_UPDATE_MAX_PORTS)
    return -EINVAL;
  size_t need = RECORD_HEADER_LEN + 1 + 8 + 8 + 8 + 1 + 1 + name_len + 1 + 1;
  for (size_t i = 0; i < rec->n_addrs; i++) {
    int family = rec->addrs[i].family;
    if (family != AF_INET && family != AF_INET6)
      return -EINVAL;
    need += 1 + (family == AF_INET ? 4 : 16);
  }
  for (size_t i = 0; i < rec->n_ports; i++) {
    const reg_listener_port_t *lp = &rec->ports[i];
    size_t len = strnlen(lp->listener, sizeof lp->listener);
    if (!valid_listener(lp->listener, len) || lp->port == 0)
      return -EINVAL;
    need += 1 + len + 2;
  }
  if (need > cap)
    return -ENOSPC;

  uint8_t *p = buf + RECORD_HEADER_LEN;
  *p++ = RECORD_TYPE_DEVICE;
  put_u64(p, rec->seq);
  put_u64(p + 8, rec->time_ms);
  put_u64(p + 16, rec->admin_tag);
  p += 24;
  *p++ = rec->offline ? FLAG_OFFLINE : 0;
  *p++ = (uint8_t)name_len;
  memcpy(p, rec->name, name_len);
  p += name_len;
  *p++ = (uint8_t)rec->n_addrs;
  for (size_t i = 0; i < rec->n_addrs; i++) {
    size_t n = rec->addrs[i].family == AF_INET ? 4 : 16;
    *p++ = (uint8_t)(n == 4 ? 4 : 6);
    memcpy(p, rec->addrs[i].bytes, n);
    p += n;
  }
  *p++ = (uint8_t)rec->n_ports;
  for (size_t i = 0; i < rec->n_ports; i++) {
    size_t len = strlen(rec->ports[i].listener);
    *p++ = (uint8_t)len;
    memcpy(p, rec->ports[i].listener, len);
    p += len;
    put_u16(p, rec->ports[i].port);
    p += 2;
  }
  size_t payload_len = (size_t)(p - buf) - RECORD_HEADER_LEN;
  put_u32(buf, (uint32_t)payload_len);
  uint32_t crc = reg_crc32c(0, buf, 4);
  put_u32(buf + 4, reg_crc32c(crc, buf + RECORD_HEADER_LEN, payload_len));
  return (int)(payload_len + RECORD_HEADER_LEN);
}

/* Decodes one payload strictly: every byte accounted for, every field
 * within the limits the encoder enforces. Returns false otherwise. */
static bool decode_payload(const uint8_t *p, size_t len,
                           reg_journal_record_t *rec) {
  const uint8_t *end = p + len;
  memset(rec, 0, sizeof *rec);
  if (len < 1 + 24 + 1 + 1 || *p++ != RECORD_TYPE_DEVICE)
    return false;
  rec->seq = get_u64(p);
  rec->time_ms = get_u64(p + 8);
  rec->admin_tag = get_u64(p + 16);
  p += 24;
  uint8_t flags = *p++;
  if (rec->seq == 0 || (flags & ~FLAG_OFFLINE) != 0)
    return false;
  rec->offline = flags & FLAG_OFFLINE;
  size_t name_len = *p++;
  if ((size_t)(end - p) < name_len + 1 ||
      !valid_name((const char *)p, name_len))
    return false;
  memcpy(rec->name, p, name_len);
  rec->name[name_len] = '\0';
  p += name_len;
  rec->n_addrs = *p++;
  if (rec->n_addrs > REG_MAX_ADDRESSES)
    return false;
  for (size_t i = 0; i < rec->n_addrs; i++) {
    if (p >= end || (*p != 4 && *p != 6))
      return false;
    size_t n = *p++ == 4 ? 4 : 16;
    if ((size_t)(end - p) < n)
      return false;
    rec->addrs[i].family = n == 4 ? AF_INET : AF_INET6;
    memcpy(rec->addrs[i].bytes, p, n);
    p += n;
  }
  if (p >= end)
    return false;
  rec->n_ports = *p++;
  if (rec->n_ports > REG_UPDATE_MAX_PORTS)
    return false;
  for (size_t i = 0; i < rec->n_ports; i++) {
    if (p >= end)
      return false;
    size_t n = *p++;
    if ((size_t)(end - p) < n + 2 || !valid_listener((const char *)p, n))
      return false;
    memcpy(rec->ports[i].listener, p, n);
    rec->ports[i].listener[n] = '\0';
    rec->ports[i].port = get_u16(p + n);
    if (rec->ports[i].port == 0)
      return false;
    p += n + 2;
  }
  return p == end;
}

void reg_journal_scan_records(const uint8_t *data, size_t len, bool ordered,
                              reg_journal_replay_cb cb, void *arg,
                              reg_journal_scan_t *out) {
  memset(out, 0, sizeof *out);
  size_t off = 0;
  reg_journal_record_t rec;
  while (off < len) {
    if (len - off < RECORD_HEADER_LEN) {
      out->end = REG_JOURNAL_END_TORN;
      out->why = "a record header is cut short";
      return;
    }
    size_t payload_len = get_u32(data + off);
    if (payload_len + RECORD_HEADER_LEN > REG_JOURNAL_RECORD_MAX) {
      out->end = REG_JOURNAL_END_CORRUPT;
      out->why = "a record length is out of range";
      return;
    }
    if (len - off - RECORD_HEADER_LEN < payload_len) {
      out->end = REG_JOURNAL_END_TORN;
      out->why = "a record is cut short";
      return;
    }
    const uint8_t *payload = data + off + RECORD_HEADER_LEN;
    uint32_t crc = reg_crc32c(0, data + off, 4);
    if (reg_crc32c(crc, payload, payload_len) != get_u32(data + off + 4)) {
      out->end = REG_JOURNAL_END_CORRUPT;
      out->why = "a record fails its CRC";
      return;
    }
    if (!decode_payload(payload, payload_len, &rec)) {
      out->end = REG_JOURNAL_END_CORRUPT;
      out->why = "a record does not decode";
      return;
    }
    if (ordered && out->n_records > 0 && rec.seq <= out->last_seq) {
      out->end = REG_JOURNAL_END_CORRUPT;
      out->why = "a record's sequence number goes backwards";
      return;
    }
    if (cb != NULL)
      cb(&rec, arg);
    off += RECORD_HEADER_LEN + payload_len;
    out->good_len = off;
    out->n_records++;
    out->last_seq = rec.seq;
  }
}

/* ---- files ----------------------------------------------------------------
 */

typedef struct bytes {
  uint8_t *ptr;
  size_t len, cap;
} bytes_t;

static void bytes_reserve(bytes_t *b, size_t more) {
  if (b->cap - b->len >= more)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < more)
    cap *= 2;
  b->ptr = xrealloc(b->ptr, cap);
  b->cap = cap;
}

struct reg_journal {
  char *dir;
  char *log_path, *snapshot_path;
  int lock_fd, fd;
  uint64_t log_len;          /* durable end of the log */
  uint64_t next_seq;         /* the next to assign */
  uint64_t last_written_seq; /* newest in the log file */
  uint64_t covered_seq;      /* the snapshot covers up to here */
  bytes_t pending;           /* appended, not yet committed */
  uint64_t pending_last_seq;
  bool broken; /* the log's end is unknown after a failed cut-back */
  reg_journal_stats_t stats;
};

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *p = xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int fsync_dir(const char *dir);

/* Creates path and any missing parents (mode 0700). Each directory made is
 * synced into its parent, or a crash could lose the directory and the
 * journal in it after updates were acknowledged. */
static int mkdir_p(const char *path) {
  if (*path == '\0')
    return -EINVAL;
  char *copy = xstrdup(path);
  int rc = 0;
  for (char *p = copy + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(copy, 0700) == 0) {
      char *slash = strrchr(copy, '/');
      if (slash == copy) {
        rc = fsync_dir("/");
      } else if (slash != NULL) {
        *slash = '\0';
        rc = fsync_dir(copy);
        *slash = '/';
      } else {
        rc = fsync_dir(".");
      }
    } else if (errno != EEXIST) {
      rc = -errno;
    }
    *p = saved;
    if (rc != 0 || saved == '\0')
      break;
  }
  free(copy);
  if (rc == 0) {
    struct stat st;
    if (stat(path, &st) != 0)
      rc = -errno;
    else if (!S_ISDIR(st.st_mode))
      rc = -ENOTDIR;
  }
  return rc;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

static int write_all(int fd, const uint8_t *p, size_t len, off_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

/* Reads a whole file into *out (xmalloc'd, len in *len). -ENOENT when it
 * does not exist. */
static int read_file(int fd, uint8_t **out, size_t *len) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return -errno;
  size_t size = (size_t)st.st_size, got = 0;
  uint8_t *buf = xmalloc(size ? size : 1);
  while (got < size) {
    ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int rc = n < 0 ? -errno : -EIO;
      free(buf);
      return rc;
    }
    got += (size_t)n;
  }
  *out = buf;
  *len = size;
  return 0;
}

/* ---- replay ---------------------------------------------------------------
 */

typedef struct replay {
  reg_journal_t *j;
  reg_journal_replay_cb cb;
  void *arg;
  uint64_t max_seq;
} replay_t;

static void replay_snapshot_record(const reg_journal_record_t *rec, void *arg) {
  replay_t *r = arg;
  if (rec->seq > r->max_seq)
    r->max_seq = rec->seq;
  r->j->stats.snapshot_records++;
  if (r->cb != NULL)
    r->cb(rec, r->arg);
}

static void replay_log_record(const reg_journal_record_t *rec, void *arg) {
  replay_t *r = arg;
  if (rec->seq > r->max_seq)
    r->max_seq = rec->seq;
  /* Left over from a crash between a compaction's two steps. */
  if (rec->seq <= r->j->covered_seq) {
    r->j->stats.skipped_records++;
    return;
  }
  r->j->stats.log_records++;
  if (r->cb != NULL)
    r->cb(rec, r->arg);
}

static int replay_snapshot(reg_journal_t *j, replay_t *r) {
  int fd = open(j->snapshot_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  uint8_t *data = NULL;
  size_t len = 0;
  int rc = read_file(fd, &data, &len);
  close(fd);
  if (rc != 0)
    return rc;
  if (len < SNAPSHOT_HEADER_LEN ||
      memcmp(data, SNAPSHOT_MAGIC, MAGIC_LEN) != 0 ||
      reg_crc32c(0, data, 16) != get_u32(data + 16)) {
    /* Snapshots appear only by rename after fsync: this is not a crash
     * artefact but a foreign or damaged file; replaying only the log
     * could silently roll devices back, so refuse. */
    core_log(CORE_LOG_ERROR,
             "journal: %s is not a ddport snapshot (bad header); move it "
             "away to start from the YAML and the log alone",
             j->snapshot_path);
    free(data);
    return -EINVAL;
  }
  j->covered_seq = get_u64(data + 8);
  r->max_seq = j->covered_seq;
  reg_journal_scan_t scan;
  reg_journal_scan_records(data + SNAPSHOT_HEADER_LEN,
                           len - SNAPSHOT_HEADER_LEN, false,
                           replay_snapshot_record, r, &scan);
  if (scan.end != REG_JOURNAL_END_CLEAN)
    core_log(CORE_LOG_ERROR,
             "journal: %s: %s at offset %zu; kept the %zu records before it",
             j->snapshot_path, scan.why, SNAPSHOT_HEADER_LEN + scan.good_len,
             scan.n_records);
  free(data);
  return 0;
}

static void save_dropped(reg_journal_t *j, const uint8_t *p, size_t len) {
  char *path = path_join(j->dir, "journal.dropped");
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int rc = fd < 0 ? -errno : write_all(fd, p, len, 0);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (fd >= 0)
    close(fd);
  if (rc != 0)
    core_log(CORE_LOG_WARN, "journal: cannot keep the dropped bytes in %s: %s",
             path, strerror(-rc));
  free(path);
}

/* Makes fd an empty log: the magic and nothing else, durable. */
static int init_log(reg_journal_t *j) {
  int rc = 0;
  if (ftruncate(j->fd, 0) != 0)
    rc = -errno;
  if (rc == 0)
    rc = write_all(j->fd, (const uint8_t *)LOG_MAGIC, MAGIC_LEN, 0);
  if (rc == 0 && fdatasync(j->fd) != 0)
    rc = -errno;
  if (rc == 0)
    rc = fsync_dir(j->dir);
  j->log_len = MAGIC_LEN;
  return rc;
}

static int replay_log(reg_journal_t *j, replay_t *r) {
  uint8_t *data = NULL;
  size_t len = 0;
  int rc = read_file(j->fd, &data, &len);
  if (rc != 0)
    return rc;
  if (len < MAGIC_LEN) {
    /* Created, but the crash came before its magic was durable. */
    free(data);
    return init_log(j);
  }
  if (memcmp(data, LOG_MAGIC, MAGIC_LEN) != 0) {
    core_log(CORE_LOG_ERROR, "journal: %s is not a ddport journal",
             j->log_path);
    free(data);
    return -EINVAL;
  }
  reg_journal_scan_t scan;
  reg_journal_scan_records(data + MAGIC_LEN, len - MAGIC_LEN, true,
                           replay_log_record, r, &scan);
  j->last_written_seq = scan.last_seq;
  j->log_len = MAGIC_LEN + scan.good_len;
  if (scan.end != REG_JOURNAL_END_CLEAN) {
    size_t dropped = len - j->log_len;
    j->stats.dropped_bytes = dropped;
    core_log(scan.end == REG_JOURNAL_END_TORN ? CORE_LOG_WARN : CORE_LOG_ERROR,
             "journal: %s: %s at offset %zu; kept the %zu records before "
             "it, moved the last %zu bytes to journal.dropped",
             j->log_path, scan.why, (size_t)j->log_len, scan.n_records,
             dropped);
    save_dropped(j, data + j->log_len, dropped);
    if (ftruncate(j->fd, (off_t)j->log_len) != 0 || fdatasync(j->fd) != 0)
      rc = -errno;
  }
  free(data);
  return rc;
}

int reg_journal_open(const char *state_dir, reg_journal_replay_cb cb, void *arg,
                     reg_journal_t **out) {
  *out = NULL;
  int rc = mkdir_p(state_dir);
  if (rc != 0) {
    core_log(CORE_LOG_ERROR, "journal: cannot create %s: %s", state_dir,
             strerror(-rc));
    return rc;
  }
  reg_journal_t *j = xcalloc(1, sizeof *j);
  j->dir = xstrdup(state_dir);
  j->log_path = path_join(state_dir, "journal");
  j->snapshot_path = path_join(state_dir, "snapshot");
  j->fd = -1;
  char *lock_path = path_join(state_dir, "lock");
  j->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  free(lock_path);
  if (j->lock_fd < 0) {
    rc = -errno;
    goto fail;
  }
  if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (rc == -EBUSY)
      core_log(CORE_LOG_ERROR, "journal: %s is in use by another process",
               state_dir);
    goto fail;
  }
  /* Half-written files of an interrupted compaction. */
  static const char *const leftovers[] = {"snapshot.tmp", "journal.tmp"};
  for (size_t i = 0; i < sizeof leftovers / sizeof leftovers[0]; i++) {
    char *p = path_join(state_dir, leftovers[i]);
    unlink(p);
    free(p);
  }

  replay_t r = {j, cb, arg, 0};
  rc = replay_snapshot(j, &r);
  if (rc != 0)
    goto fail;

  bool created = false;
  j->fd = open(j->log_path, O_RDWR | O_CLOEXEC);
  if (j->fd < 0 && errno == ENOENT) {
    j->fd = open(j->log_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    created = true;
  }
  if (j->fd < 0) {
    rc = -errno;
    goto fail;
  }
  rc = created ? init_log(j) : replay_log(j, &r);
  if (rc != 0)
    goto fail;
  j->next_seq = r.max_seq + 1;
  *out = j;
  return 0;

fail:
  if (rc != -EBUSY && rc != -EINVAL)
    core_log(CORE_LOG_ERROR, "journal: cannot open %s: %s", j->log_path,
             strerror(-rc));
  reg_journal_close(j);
  return rc;
}

void reg_journal_close(reg_journal_t *j) {
  if (j == NULL)
    return;
  if (j->fd >= 0)
    close(j->fd);
  if (j->lock_fd >= 0)
    close(j->lock_fd);
  free(j->pending.ptr);
  free(j->dir);
  free(j->log_path);
  free(j->snapshot_path);
  free(j);
}

/* ---- appending --------------------------------------------------------------
 */

uint64_t reg_journal_next_seq(const reg_journal_t *j) {
  return j->next_seq;
}

void reg_journal_set_next_seq(reg_journal_t *j, uint64_t seq) {
  j->next_seq = seq;
}

int reg_journal_append(reg_journal_t *j, reg_journal_record_t *rec) {
  bytes_reserve(&j->pending, REG_JOURNAL_RECORD_MAX);
  uint64_t saved = rec->seq;
  rec->seq = j->next_seq;
  int n = reg_journal_encode(rec, j->pending.ptr + j->pending.len,
                             j->pending.cap - j->pending.len);
  if (n < 0) {
    rec->seq = saved;
    return n;
  }
  j->next_seq++;
  j->pending.len += (size_t)n;
  j->pending_last_seq = rec->seq;
  return 0;
}

int reg_journal_write_durable(reg_journal_t *j, const uint8_t *data, size_t len,
                              uint64_t last_seq) {
  if (j->broken)
    return -EIO;
  if (len == 0)
    return 0;
  int rc = write_all(j->fd, data, len, (off_t)j->log_len);
  if (rc == 0) {
    j->stats.syncs++;
    if (fdatasync(j->fd) != 0)
      rc = -errno;
  }
  if (rc == 0) {
    j->log_len += len;
    j->last_written_seq = last_seq;
    return 0;
  }
  core_log(CORE_LOG_ERROR, "journal: writing %s failed: %s", j->log_path,
           strerror(-rc));
  /* Whatever part of the batch reached the file must go, or later records
   * would follow garbage that replay stops at. */
  if (ftruncate(j->fd, (off_t)j->log_len) != 0 || fdatasync(j->fd) != 0) {
    j->broken = true;
    core_log(CORE_LOG_ERROR,
             "journal: cannot cut %s back after a failed write; refusing "
             "further updates",
             j->log_path);
  }
  return rc;
}

int reg_journal_commit(reg_journal_t *j) {
  int rc = reg_journal_write_durable(j, j->pending.ptr, j->pending.len,
                                     j->pending_last_seq);
  j->pending.len = 0;
  return rc;
}

uint64_t reg_journal_last_seq(const reg_journal_t *j) {
  return j->next_seq - 1;
}

const reg_journal_stats_t *reg_journal_stats(const reg_journal_t *j) {
  return &j->stats;
}

/* ---- compaction ------------------------------------------------------------
 */

static int write_snapshot(reg_journal_t *j, const char *tmp,
                          uint64_t covered_seq, reg_journal_next_fn next,
                          void *arg) {
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  bytes_t buf = {0};
  bytes_reserve(&buf, 64 * 1024);
  memcpy(buf.ptr, SNAPSHOT_MAGIC, MAGIC_LEN);
  put_u64(buf.ptr + 8, covered_seq);
  put_u32(buf.ptr + 16, reg_crc32c(0, buf.ptr, 16));
  buf.len = SNAPSHOT_HEADER_LEN;
  off_t off = 0;
  int rc = 0;
  reg_journal_record_t rec;
  for (;;) {
    int more = next(arg, &rec);
    if (more <= 0) {
      rc = more;
      break;
    }
    if (buf.cap - buf.len < REG_JOURNAL_RECORD_MAX) {
      rc = write_all(fd, buf.ptr, buf.len, off);
      off += (off_t)buf.len;
      buf.len = 0;
      if (rc != 0)
        break;
    }
    int n = reg_journal_encode(&rec, buf.ptr + buf.len, buf.cap - buf.len);
    if (n < 0) {
      rc = n;
      break;
    }
    buf.len += (size_t)n;
  }
  if (rc == 0)
    rc = write_all(fd, buf.ptr, buf.len, off);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  close(fd);
  free(buf.ptr);
  return rc;
}

/* Replaces the log with one holding only its records newer than
 * covered_seq, the same way a snapshot is replaced. */
static int rewrite_log(reg_journal_t *j, uint64_t covered_seq) {
  uint8_t *data = NULL;
  size_t len = 0;
  int rc = read_file(j->fd, &data, &len);
  if (rc != 0)
    return rc;
  if (len > j->log_len)
    len = j->log_len;
  /* Records are ordered: find the first one past covered_seq. */
  size_t off = MAGIC_LEN;
  while (off < len) {
    reg_journal_scan_t scan;
    size_t rec_len = len - off < RECORD_HEADER_LEN
                         ? len - off + 1
                         : RECORD_HEADER_LEN + get_u32(data + off);
    if (rec_len <= len - off)
      reg_journal_scan_records(data + off, rec_len, false, NULL, NULL, &scan);
    if (rec_len > len - off || scan.end != REG_JOURNAL_END_CLEAN) {
      free(data);
      return -EIO;
    }
    if (scan.last_seq > covered_seq)
      break;
    off += rec_len;
  }
  char *tmp = path_join(j->dir, "journal.tmp");
  int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    rc = -errno;
  if (rc == 0)
    rc = write_all(fd, (const uint8_t *)LOG_MAGIC, MAGIC_LEN, 0);
  if (rc == 0)
    rc = write_all(fd, data + off, len - off, MAGIC_LEN);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, j->log_path) != 0)
    rc = -errno;
  if (rc == 0)
    rc = fsync_dir(j->dir);
  if (rc == 0) {
    close(j->fd);
    j->fd = fd;
    j->log_len = MAGIC_LEN + (len - off);
  } else {
    if (fd >= 0)
      close(fd);
    unlink(tmp);
  }
  free(tmp);
  free(data);
  return rc;
}

int reg_journal_compact(reg_journal_t *j, uint64_t covered_seq,
                        reg_journal_next_fn next, void *arg) {
  if (j->broken)
    return -EIO;
  if (covered_seq < j->covered_seq || covered_seq >= j->next_seq)
    return -EINVAL;
  int rc = reg_journal_commit(j);
  if (rc != 0)
    return rc;

  char *tmp = path_join(j->dir, "snapshot.tmp");
  rc = write_snapshot(j, tmp, covered_seq, next, arg);
  if (rc == 0 && rename(tmp, j->snapshot_path) != 0)
    rc = -errno;
  if (rc != 0) {
    unlink(tmp);
    free(tmp);
    core_log(CORE_LOG_ERROR, "journal: compaction failed: %s", strerror(-rc));
    return rc;
  }
  free(tmp);
  /* The snapshot is in force from here even if the rest fails: replay
   * skips log records it covers. */
  j->covered_seq = covered_seq;
  rc = fsync_dir(j->dir);
  if (rc == 0 && j->last_written_seq <= covered_seq) {
    if (ftruncate(j->fd, MAGIC_LEN) != 0) {
      rc = -errno;
    } else {
      /* Appends go here from now on, synced or not: were this truncation
       * lost in a crash, the old records after them replay as going
       * backwards and are cut, and the snapshot holds their state. */
      j->log_len = MAGIC_LEN;
      if (fdatasync(j->fd) != 0)
        rc = -errno;
    }
  } else if (rc == 0) {
    rc = rewrite_log(j, covered_seq);
  }
  if (rc != 0)
    core_log(CORE_LOG_ERROR,
             "journal: compaction wrote the snapshot but could not shorten "
             "the log: %s",
             strerror(-rc));
  return rc;
}
