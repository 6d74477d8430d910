/* SPDX-License-Identifier: MIT */
/* update_int.h -- device updates inside registry/: the dyndns2 request
 * parser, its replies, and the durable journal of updates */
#ifndef DDPORT_REGISTRY_UPDATE_INT_H
#define DDPORT_REGISTRY_UPDATE_INT_H

#include "core/core.h"
#include "registry/registry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Listener names are 1..63 of [a-z0-9_-], as the configuration demands. */
#define REG_LISTENER_NAME_MAX 63

/* Most listener ports one update (and one journal record) may carry. */
#define REG_UPDATE_MAX_PORTS 32

/* A port for a named listener, stored by value (no pointers, so requests
 * and journal records can live on the stack and be copied freely). */
typedef struct reg_listener_port {
  char listener[REG_LISTENER_NAME_MAX + 1];
  uint16_t port;
} reg_listener_port_t;

/* ---- dyndns2 requests ---------------------------------------------------- */

#define REG_DYNDNS_MAX_HOSTS 20
#define REG_DYNDNS_USER_MAX 128
#define REG_DYNDNS_SECRET_MAX 256

/* What reg_dyndns_parse found in the request target. When several problems
 * occur, the first in this order is reported (after COMPLETE). */
typedef enum reg_dyndns_status {
  REG_DYNDNS_COMPLETE,       /* everything decoded */
  REG_DYNDNS_NOT_FOUND,      /* the path is not /nic/update: HTTP 404 */
  REG_DYNDNS_INVALID,        /* undecodable query, duplicate parameter */
  REG_DYNDNS_NO_HOSTNAME,    /* hostname missing or empty: notfqdn once */
  REG_DYNDNS_TOO_MANY_HOSTS, /* more than 20 names: numhost once */
  REG_DYNDNS_BAD_ADDRESS,    /* myip / myipv6 unusable: dnserr per name */
  REG_DYNDNS_BAD_PORT,       /* port / port_<listener> unusable: dnserr */
  REG_DYNDNS_BAD_OFFLINE,    /* offline= neither yes nor no: dnserr */
} reg_dyndns_status_t;

typedef enum reg_dyndns_auth {
  REG_DYNDNS_AUTH_NONE,      /* no Authorization header: HTTP 401 */
  REG_DYNDNS_AUTH_BASIC,     /* user and secret decoded */
  REG_DYNDNS_AUTH_MALFORMED, /* another scheme, bad base64, no ':' */
} reg_dyndns_auth_t;

typedef struct reg_dyndns_host {
  char name[CORE_NAME_MAX + 1]; /* normalised when valid, else "" */
  size_t len;
  bool valid; /* false: this name is answered notfqdn */
} reg_dyndns_host_t;

/* One decoded update request. Everything is copied in: no pointer into the
 * caller's bytes survives reg_dyndns_parse. hosts, addresses, ports and
 * offline are meaningful for COMPLETE and the BAD_* statuses. */
typedef struct reg_dyndns_request {
  reg_dyndns_status_t status;
  const char *why; /* a static phrase for the log when status != COMPLETE */

  reg_dyndns_host_t hosts[REG_DYNDNS_MAX_HOSTS]; /* in request order */
  size_t n_hosts;

  bool has_ipv4, has_ipv6; /* neither: use the connection's source */
  core_ip_t ipv4, ipv6;

  reg_listener_port_t ports[REG_UPDATE_MAX_PORTS]; /* "port" is "http" */
  size_t n_ports;

  bool offline; /* offline=yes */

  reg_dyndns_auth_t auth;
  char user[REG_DYNDNS_USER_MAX + 1];
  char secret[REG_DYNDNS_SECRET_MAX + 1]; /* wipe with reg_dyndns_clear */

  bool has_agent; /* a non-empty User-Agent was sent */
} reg_dyndns_request_t;

/* Parses a dyndns2 update from the request target (origin form
 * "/nic/update?..." or absolute form "http://host/nic/update?...") and the
 * values of the Authorization and User-Agent headers (NULL when the header
 * is absent). Query keys and values are URL-decoded (%XX and '+'); unknown
 * keys are ignored; a known key given twice is INVALID (so two parsers of
 * one request can never disagree on which value counts). Pure: no
 * allocation, no I/O. Returns out->status. */
reg_dyndns_status_t reg_dyndns_parse(core_str_t target,
                                     const core_str_t *authorization,
                                     const core_str_t *user_agent,
                                     reg_dyndns_request_t *out);

/* Decodes an Authorization header value "Basic base64(user:secret)" into
 * out->auth, out->user and out->secret (split at the first ':'). Returns
 * out->auth. reg_dyndns_parse calls it. */
reg_dyndns_auth_t reg_dyndns_parse_basic(core_str_t value,
                                         reg_dyndns_request_t *out);

/* Overwrites the secret so it does not linger on the stack or heap. */
void reg_dyndns_clear(reg_dyndns_request_t *req);

/* ---- dyndns2 replies ----------------------------------------------------- */

typedef enum reg_dyndns_code {
  REG_DYNDNS_GOOD,
  REG_DYNDNS_NOCHG,
  REG_DYNDNS_NOHOST,
  REG_DYNDNS_NOTFQDN,
  REG_DYNDNS_NUMHOST,
  REG_DYNDNS_ABUSE,
  REG_DYNDNS_DNSERR,
  REG_DYNDNS_911,
  REG_DYNDNS_BADAUTH,
  REG_DYNDNS_BADAGENT,
} reg_dyndns_code_t;

/* One reply line. good and nochg echo the addresses ("good 192.0.2.1" or
 * "good 192.0.2.1,2001:db8::1"); the other codes carry none. */
typedef struct reg_dyndns_line {
  reg_dyndns_code_t code;
  core_ip_t addrs[2];
  size_t n_addrs;
} reg_dyndns_line_t;

typedef struct reg_dyndns_reply {
  unsigned http_status; /* 200, 400, 401, 404, 405, 408, 413, 431, 500, 503 */
  const reg_dyndns_line_t *lines; /* the body, one line each; none: the */
  size_t n_lines;                 /* status's reason phrase */
  bool close;                     /* "Connection: close" */
} reg_dyndns_reply_t;

/* Enough for any reply with up to REG_DYNDNS_MAX_HOSTS lines. */
#define REG_DYNDNS_REPLY_MAX 2048

/* The word a code stands for on the wire ("good", "911", ...). */
const char *reg_dyndns_code_name(reg_dyndns_code_t code);

/* Renders the complete HTTP/1.1 response -- status line, Content-Type:
 * text/plain, Content-Length (never chunked), WWW-Authenticate: Basic
 * realm="ddport" on 401 -- and the body into buf. Returns its length, or
 * -ENOSPC when it does not fit in cap bytes, -EINVAL for an unknown status
 * or code. */
int reg_dyndns_reply_render(const reg_dyndns_reply_t *reply, char *buf,
                            size_t cap);

/* The answer a parsed request gets before any account or device is looked
 * at, checked in this order: wrong path (404), no credentials (401,
 * badauth), undecodable query (400, dnserr), no User-Agent (badagent),
 * malformed credentials (badauth), no hostname (notfqdn), too many
 * (numhost). Fills reply (its lines point at *line) and returns true, or
 * returns false when the request must go on to authentication; after it,
 * BAD_ADDRESS, BAD_PORT and BAD_OFFLINE answer dnserr for every valid name
 * the account owns (see docs/updates.md). */
bool reg_dyndns_early_reply(const reg_dyndns_request_t *req,
                            reg_dyndns_reply_t *reply, reg_dyndns_line_t *line);

/* ---- the journal ----------------------------------------------------------
 */

/* One device's dynamic state after an update: what replay hands back. A
 * record is a whole state, not a delta, so replaying a record twice, or
 * only the newest record of a device, gives the same result. */
typedef struct reg_journal_record {
  uint64_t seq;       /* set by append; strictly increasing in the log */
  uint64_t time_ms;   /* when the update was made, Unix time in ms */
  uint64_t admin_tag; /* opaque to the journal: the registry stores a
                         fingerprint of the YAML definition the update was
                         applied over, to tell at replay whether an admin
                         changed the device since */
  char name[CORE_NAME_MAX + 1]; /* normalised device name */
  core_ip_t addrs[REG_MAX_ADDRESSES];
  size_t n_addrs;
  reg_listener_port_t ports[REG_UPDATE_MAX_PORTS];
  size_t n_ports;
  bool offline;
} reg_journal_record_t;

/* Largest encoded record, header included. */
#define REG_JOURNAL_RECORD_MAX 4096

typedef struct reg_journal reg_journal_t;

/* Called once per record, in order: the snapshot's records, then the log's
 * records newer than the snapshot. rec is valid only during the call. */
typedef void (*reg_journal_replay_cb)(const reg_journal_record_t *rec,
                                      void *arg);

/* What opening found; for the log and for tests. */
typedef struct reg_journal_stats {
  size_t snapshot_records; /* replayed from the snapshot */
  size_t log_records;      /* replayed from the log */
  size_t skipped_records;  /* in the log but already in the snapshot */
  size_t dropped_bytes;    /* torn or corrupt tail cut off the log */
  size_t syncs;            /* fdatasync calls by commits so far */
} reg_journal_stats_t;

/* Opens the journal in state_dir (creating the directory, mode 0700, and
 * an empty log if missing), takes an exclusive lock on it (-EBUSY when
 * another process holds it), and replays the snapshot and the log through
 * cb. A torn or corrupt tail of the log -- a crash mid-write, a bad CRC --
 * ends replay there: what precedes it is kept, the rest is logged, saved
 * to state_dir/journal.dropped and cut off; never fatal. Returns 0 and a
 * journal for reg_journal_close, or a negative errno (directory or file
 * unusable, or a file that is not a ddport journal). */
int reg_journal_open(const char *state_dir, reg_journal_replay_cb cb, void *arg,
                     reg_journal_t **out);

/* Closes the log and releases the lock; buffered, uncommitted records are
 * lost (they were never acknowledged). */
void reg_journal_close(reg_journal_t *j);

/* Buffers rec, assigning rec->seq. Nothing reaches the disk until
 * reg_journal_commit. Returns 0, or -EINVAL when rec cannot be encoded (bad
 * name, port 0, too many addresses or ports). Not thread-safe; while a
 * writer thread owns the journal, use reg_journal_writer_submit instead. */
int reg_journal_append(reg_journal_t *j, reg_journal_record_t *rec);

/* Writes every buffered record and fdatasyncs once (group commit: any
 * number of appends share one sync). Returns 0 once they are durable, or a
 * negative errno; then the log is cut back to its last durable end and the
 * records are gone (-EIO from then on if even that failed). */
int reg_journal_commit(reg_journal_t *j);

/* Fills *rec with the next record of the current state and returns 1,
 * returns 0 after the last, or a negative errno to abandon compaction. */
typedef int (*reg_journal_next_fn)(void *arg, reg_journal_record_t *rec);

/* Compacts: writes every record next() yields as a new snapshot covering
 * all updates up to covered_seq (snapshot.tmp, fsync, rename, fsync of the
 * directory), then drops log records up to covered_seq (truncating the log,
 * or rewriting it the same way when newer records are already in it). A
 * crash at any point leaves a journal that replays to the same state.
 * Buffered records are committed first. Returns 0 or a negative errno (the
 * old snapshot and log stay in force). */
int reg_journal_compact(reg_journal_t *j, uint64_t covered_seq,
                        reg_journal_next_fn next, void *arg);

/* The sequence number of the newest record appended (0: none yet). */
uint64_t reg_journal_last_seq(const reg_journal_t *j);

const reg_journal_stats_t *reg_journal_stats(const reg_journal_t *j);

/* ---- the journal, pure parts (encoding, scanning; fuzzed) --------------- */

/* CRC-32C (Castagnoli), continuing from crc (start with 0). */
uint32_t reg_crc32c(uint32_t crc, const void *data, size_t len);

/* Encodes rec as one log record (length, CRC-32C, payload) into buf.
 * Returns its length, -EINVAL for a record that breaks the limits, or
 * -ENOSPC when cap is too small (REG_JOURNAL_RECORD_MAX always fits). */
int reg_journal_encode(const reg_journal_record_t *rec, uint8_t *buf,
                       size_t cap);

typedef enum reg_journal_end {
  REG_JOURNAL_END_CLEAN,   /* every byte belonged to a good record */
  REG_JOURNAL_END_TORN,    /* the last record is incomplete */
  REG_JOURNAL_END_CORRUPT, /* a complete record is not a good one */
} reg_journal_end_t;

typedef struct reg_journal_scan {
  size_t good_len; /* bytes of good records from the start */
  size_t n_records;
  uint64_t last_seq; /* of the last good record, or 0 */
  reg_journal_end_t end;
  const char *why; /* a static phrase unless CLEAN */
} reg_journal_scan_t;

/* Scans a run of records (a file's contents after its header), calling cb
 * (when not NULL) for each good one, until the end or the first record
 * that is torn, fails its CRC, does not decode, or -- with ordered -- has
 * a sequence number not above the previous one. Pure: no allocation, no
 * I/O. */
void reg_journal_scan_records(const uint8_t *data, size_t len, bool ordered,
                              reg_journal_replay_cb cb, void *arg,
                              reg_journal_scan_t *out);

/* ---- the journal writer thread ------------------------------------------ */

typedef struct reg_journal_writer reg_journal_writer_t;

/* Runs on the loop's thread once the record is durable (status 0) or lost
 * (negative errno: answer 911, never good). */
typedef void (*reg_journal_done_cb)(int status, uint64_t seq, void *arg);

/* Creates a writer for j on loop (a uv_async_t brings completions back to
 * the loop's thread). Records may be submitted at once; they are written
 * after reg_journal_writer_start. From then until the writer is stopped,
 * the writer owns j: call no other reg_journal_* function on it. Returns 0
 * or a negative errno. */
int reg_journal_writer_new(uv_loop_t *loop, reg_journal_t *j,
                           reg_journal_writer_t **out);

/* Starts the writer thread. Returns 0 or a negative errno. */
int reg_journal_writer_start(reg_journal_writer_t *w);

/* Queues a copy of rec (from the loop's thread) and returns its sequence
 * number in *seq. The thread writes everything queued while it was busy as
 * one batch with one fdatasync, then cb runs on the loop's thread. Returns
 * 0, -EINVAL (rec unencodable; cb never runs) or -ECANCELED (stopping). */
int reg_journal_writer_submit(reg_journal_writer_t *w,
                              const reg_journal_record_t *rec,
                              reg_journal_done_cb cb, void *arg, uint64_t *seq);

/* Queues a compaction (reg_journal_compact) that the thread runs after the
 * records queued before it. covered_seq is the newest update the state
 * reflects and must already have been submitted. next is called on the
 * writer thread, so the state it reads must be safe to read there (a copy,
 * or an RCU read-side section). The thread writes no records meanwhile.
 * cb gets its status, seq 0. Returns 0 or -ECANCELED. */
int reg_journal_writer_compact(reg_journal_writer_t *w, uint64_t covered_seq,
                               reg_journal_next_fn next, void *next_arg,
                               reg_journal_done_cb cb, void *arg);

/* Writes what is queued, runs every pending callback, joins the thread and
 * closes the async handle; the writer is freed in its close callback, so
 * run the loop afterwards as for any handle. The journal stays open and
 * is the caller's again. */
void reg_journal_writer_stop(reg_journal_writer_t *w);

/* Write-and-sync durations of the batches written so far, in buckets of
 * powers of two microseconds (bucket i: under 2^i us). */
#define REG_JOURNAL_SYNC_BUCKETS 32
typedef struct reg_journal_sync_stats {
  uint64_t syncs, records;
  uint64_t buckets[REG_JOURNAL_SYNC_BUCKETS];
} reg_journal_sync_stats_t;

void reg_journal_writer_stats(reg_journal_writer_t *w,
                              reg_journal_sync_stats_t *out);

/* The upper bound, in milliseconds, of the bucket holding the p-quantile
 * (0 < p <= 1) of the syncs in st; 0 when there were none. */
double reg_journal_sync_percentile(const reg_journal_sync_stats_t *st,
                                   double p);

/* ---- for journal_writer.c only ------------------------------------------- */

/* The sequence number the next record gets. A writer numbers records
 * itself and hands its counter back to the journal with each batch. */
uint64_t reg_journal_next_seq(const reg_journal_t *j);
void reg_journal_set_next_seq(reg_journal_t *j, uint64_t seq);

/* Writes len bytes of encoded records (the newest numbered last_seq) at
 * the log's end and fdatasyncs; on failure cuts the log back as
 * reg_journal_commit does. */
int reg_journal_write_durable(reg_journal_t *j, const uint8_t *data, size_t len,
                              uint64_t last_seq);

/* ---- the request head (update_head.c) ------------------------------------ */

typedef enum reg_update_head_status {
  REG_UPDATE_HEAD_COMPLETE,
  REG_UPDATE_HEAD_NEED_MORE,
  REG_UPDATE_HEAD_INVALID, /* HTTP 400 */
} reg_update_head_status_t;

/* What the server needs from a request head; views into the caller's
 * buffer. */
typedef struct reg_update_head {
  size_t head_len;                      /* through the blank line */
  uint64_t body_len;                    /* Content-Length, or 0 */
  core_str_t target;                    /* the request target as sent */
  core_str_t authorization, user_agent; /* valid when n_* is 1 */
  unsigned n_authorization, n_user_agent;
  bool method_get, method_post;
  bool keep_alive;
  const char *why; /* static, for INVALID */
} reg_update_head_t;

/* Parses the request head at the start of buf (llhttp, whole header lines
 * only). A chunked body, or Authorization or User-Agent given twice, is
 * INVALID. Pure: no allocation. */
reg_update_head_status_t reg_update_head_parse(const char *buf, size_t len,
                                               reg_update_head_t *out);

/* ---- the update state (updates.c), for the server ----------------------- */

/* A fingerprint of a device's YAML definition: the admin tag of records. */
uint64_t reg_device_fingerprint(const reg_device_t *device);

/* True while updates can be submitted. */
bool reg_updates_running(const reg_updates_t *u);

/* Fills out with the state an update of device starts from: its newest
 * submitted update, or its definition in the registry. Returns 0. */
int reg_updates_base(reg_updates_t *u, const reg_device_t *device,
                     reg_journal_record_t *out);

/* Counts an update of name against per_minute (0: no limit); false once
 * the device has used up this minute. */
bool reg_updates_rate_ok(reg_updates_t *u, const char *name,
                         uint32_t per_minute);

/* Runs on the control loop once the record is durable and applied
 * (status 0) or lost (negative errno: answer 911). */
typedef void reg_update_done_fn(int status, void *arg);

/* Journals rec (from reg_updates_base, changed), setting its seq and time;
 * once durable it is applied to the registry and done runs. Returns 0, or
 * a negative errno (done never runs): -EINVAL unencodable, -ECANCELED
 * stopping. */
int reg_updates_submit(reg_updates_t *u, reg_journal_record_t *rec,
                       reg_update_done_fn *done, void *arg);

#endif
