/* SPDX-License-Identifier: MIT */
/* fuzz_journal.c -- fuzz target for journal replay over arbitrary bytes */
#include "registry/update_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Each good record must be the canonical encoding of what replay made of
 * it: re-encoding gives back exactly the bytes it came from. */
typedef struct walk {
  const uint8_t *data;
  size_t off;
  size_t n;
} walk_t;

static void check_record(const reg_journal_record_t *rec, void *arg) {
  walk_t *w = arg;
  uint8_t buf[REG_JOURNAL_RECORD_MAX];
  int n = reg_journal_encode(rec, buf, sizeof buf);
  if (n <= 0 || memcmp(buf, w->data + w->off, (size_t)n) != 0)
    abort();
  w->off += (size_t)n;
  w->n++;
}

static void count(const reg_journal_record_t *rec, void *arg) {
  (*(size_t *)arg)++;
}

/* Opens the bytes as a log file: whatever they hold, opening succeeds and
 * leaves the log holding exactly the good records. */
static void check_open(const uint8_t *data, size_t size, size_t good_len,
                       size_t good_records) {
  char dir[] = "/tmp/ddport-fuzz-journal-XXXXXX";
  if (mkdtemp(dir) == NULL)
    abort();
  char path[sizeof dir + 32];
  snprintf(path, sizeof path, "%s/journal", dir);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite("ddportJ1", 1, 8, f) != 8 ||
      fwrite(data, 1, size, f) != size || fclose(f) != 0)
    abort();
  reg_journal_t *j = NULL;
  size_t replayed = 0;
  if (reg_journal_open(dir, count, &replayed, &j) != 0 ||
      replayed != good_records)
    abort();
  struct stat st;
  if (stat(path, &st) != 0 || (size_t)st.st_size != 8 + good_len)
    abort();
  reg_journal_close(j);
  static const char *const names[] = {"journal", "journal.dropped", "lock"};
  for (size_t i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  if (rmdir(dir) != 0)
    abort();
}

/* Rewrites every CRC the length fields reach, so that mutated payloads get
 * past the CRC and into the decoder. */
static void fix_crcs(uint8_t *p, size_t len) {
  size_t off = 0;
  while (len - off >= 8) {
    size_t n = (size_t)p[off] | (size_t)p[off + 1] << 8 |
               (size_t)p[off + 2] << 16 | (size_t)p[off + 3] << 24;
    if (n > REG_JOURNAL_RECORD_MAX || n > len - off - 8)
      return;
    uint32_t crc = reg_crc32c(reg_crc32c(0, p + off, 4), p + off + 8, n);
    for (int i = 0; i < 4; i++)
      p[off + 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    off += 8 + n;
  }
}

/* Scans data both ways and checks the results against each other;
 * returns the ordered scan. */
static reg_journal_scan_t check_scan(const uint8_t *data, size_t size) {
  reg_journal_scan_t ordered, unordered, again;
  walk_t w = {data, 0, 0};
  reg_journal_scan_records(data, size, true, check_record, &w, &ordered);
  if (ordered.good_len > size || w.off != ordered.good_len ||
      w.n != ordered.n_records ||
      (ordered.end == REG_JOURNAL_END_CLEAN) != (ordered.good_len == size) ||
      (ordered.end == REG_JOURNAL_END_CLEAN) != (ordered.why == NULL))
    abort();

  /* Order only ever stops a scan earlier. */
  walk_t w2 = {data, 0, 0};
  reg_journal_scan_records(data, size, false, check_record, &w2, &unordered);
  if (unordered.good_len < ordered.good_len ||
      unordered.n_records < ordered.n_records)
    abort();

  /* The good prefix alone is clean and holds the same records. */
  reg_journal_scan_records(data, ordered.good_len, true, NULL, NULL, &again);
  if (again.end != REG_JOURNAL_END_CLEAN ||
      again.n_records != ordered.n_records ||
      again.last_seq != ordered.last_seq)
    abort();

  return ordered;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_scan(data, size);
  uint8_t *fixed = malloc(size ? size : 1);
  memcpy(fixed, data, size);
  fix_crcs(fixed, size);
  reg_journal_scan_t scan = check_scan(fixed, size);
  /* The file path too, for a deterministic sixteenth of the inputs (it
   * syncs, so not for all of them). */
  if (reg_crc32c(0, data, size) % 16 == 0)
    check_open(fixed, size, scan.good_len, scan.n_records);
  free(fixed);
  return 0;
}
