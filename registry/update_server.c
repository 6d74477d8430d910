/* SPDX-License-Identifier: MIT */
/* update_server.c -- the dyndns2 endpoint: HTTP(S) on the control loop,
 * secrets checked on the thread pool, updates journaled before "good" */
#include "registry/registry_int.h"
#include "registry/update_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bad credentials from one source: after this many within FAIL_WINDOW_MS,
 * each further request waits before it is looked at, doubling up to
 * FAIL_MAX_DELAY_MS. */
#define FAIL_FREE 3
#define FAIL_WINDOW_MS (10 * 60 * 1000)
#define FAIL_MAX_DELAY_MS 16000
#define FAIL_SLOTS 4096
/* Direct-mapped: a verified secret evicts the one in its slot. 64Ki slots
 * (3.5 MiB) keep collisions rare for tens of thousands of routers
 * refreshing within credential_cache; a miss costs one hash. */
#define CACHE_SLOTS 65536

/* What an unknown account's secret is checked against, so that it costs
 * the same yescrypt work as a real one. Its secret was random and thrown
 * away; a match would not count anyway (the account does not exist). A
 * constant, so that start-up pays no hash. */
#define DUMMY_HASH                                                             \
  "$y$j9T$YjvIDyFAzcNaLlSbG8U/A0$XOEX5jsHjOAVrZxKPxle22heZlwpaT8aKhFxSe.fZ76"
#define ACCEPT_BATCH 64
#define BACKOFF_MS 100

typedef struct listener {
  uv_poll_t poll;
  uv_timer_t backoff; /* out of descriptors: wait, then accept again */
  int fd;
  bool tls;
  reg_update_server_t *server;
} listener_t;

/* A verified secret: a keyed digest of account and secret, never the
 * secret itself. */
typedef struct cache_entry {
  uint8_t digest[32];
  uint64_t hash_tag; /* of the account's crypt(3) hash when verified */
  uint64_t expires_ms;
  bool used;
} cache_entry_t;

typedef struct fail_entry {
  core_ip_t source; /* IPv6 sources by their /64 */
  uint64_t window_ms;
  unsigned fails;
} fail_entry_t;

typedef struct conn conn_t;

struct reg_update_server {
  uv_loop_t *loop;
  const reg_config_t *running;
  reg_config_fn *current;
  void *current_arg;
  reg_updates_t *updates;
  reg_t *reg;
  listener_t *listeners;
  size_t n_listeners;
  SSL_CTX *ssl_ctx;
  conn_t *conns;                 /* every open connection, for stop */
  struct verify_work *verifying; /* crypt(3) checks on the thread pool */
  size_t n_conns;
  uint8_t cache_key[32];
  cache_entry_t *cache; /* CACHE_SLOTS */
  fail_entry_t fails[FAIL_SLOTS];
  unsigned open_handles;
  bool stopping;
};

typedef enum conn_state {
  ST_HANDSHAKE, /* TLS */
  ST_READING,
  ST_DELAYED, /* bad credentials from this source: waiting */
  ST_VERIFYING,
  ST_APPLYING,
  ST_WRITING,
  ST_CLOSED,
} conn_state_t;

struct conn {
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  SSL *ssl;
  bool want_read, want_write; /* TLS's wishes beyond the state's */
  reg_update_server_t *s;
  conn_t *prev, *next;
  conn_state_t state;
  core_ip_t peer;
  char peer_text[INET6_ADDRSTRLEN];
  unsigned refs; /* open handles and outstanding callbacks */
  bool request_started;

  char *buf;
  size_t len, cap;
  size_t request_len; /* head and body of the request being answered */
  bool keep_alive;

  reg_dyndns_request_t *req;
  char account[REG_DYNDNS_USER_MAX + 1];
  reg_dyndns_line_t lines[REG_DYNDNS_MAX_HOSTS];
  bool pending[REG_DYNDNS_MAX_HOSTS]; /* waiting for the journal */
  size_t n_lines;
  unsigned waiting; /* journal submissions not called back */

  char out[REG_DYNDNS_REPLY_MAX];
  size_t out_len, out_off;
  bool close_after;
};

static void conn_close(conn_t *c);
static void on_conn_poll(uv_poll_t *p, int status, int events);
static void conn_update_poll(conn_t *c);
static void process_buffer(conn_t *c);

static const reg_config_t *current_config(const reg_update_server_t *s) {
  return s->current(s->current_arg);
}

/* ---- freeing ------------------------------------------------------------- */

static void server_release(reg_update_server_t *s) {
  if (--s->open_handles > 0)
    return;
  free(s->listeners);
  free(s->cache);
  SSL_CTX_free(s->ssl_ctx);
  free(s);
}

static void conn_release(conn_t *c) {
  if (--c->refs > 0)
    return;
  reg_update_server_t *s = c->s;
  if (c->req) {
    reg_dyndns_clear(c->req);
    free(c->req);
  }
  free(c->buf);
  free(c);
  server_release(s);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (h == (uv_handle_t *)&c->poll) {
    if (c->ssl)
      SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
  }
  conn_release(c);
}

static void conn_close(conn_t *c) {
  if (c->state == ST_CLOSED)
    return;
  c->state = ST_CLOSED;
  reg_update_server_t *s = c->s;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->n_conns--;
  if (c->ssl)
    SSL_shutdown(c->ssl); /* best effort: a close_notify if it fits */
  uv_close((uv_handle_t *)&c->poll, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* ---- bytes in and out ---------------------------------------------------- */

/* What an SSL_read or SSL_write that returned r < 1 means: -EAGAIN with
 * the direction TLS waits for noted, 0 for the peer's close_notify, or
 * -EPROTO. */
static ssize_t tls_result(conn_t *c, int r) {
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
    c->want_read = true;
    return -EAGAIN;
  case SSL_ERROR_WANT_WRITE:
    c->want_write = true;
    return -EAGAIN;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  default:
    return -EPROTO;
  }
}

static ssize_t plain_result(ssize_t r) {
  if (r < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return r;
}

/* Reads what is there. Returns bytes read, 0 at EOF, -EAGAIN when nothing
 * is ready, or another negative errno. */
static ssize_t conn_read(conn_t *c, char *p, size_t n) {
  if (c->ssl == NULL)
    return plain_result(read(c->fd, p, n));
  c->want_read = c->want_write = false;
  ERR_clear_error();
  int r = SSL_read(c->ssl, p, (int)n);
  return r > 0 ? r : tls_result(c, r);
}

/* Writes what fits. Returns bytes written, -EAGAIN, or a negative errno. */
static ssize_t conn_write(conn_t *c, const char *p, size_t n) {
  if (c->ssl == NULL)
    return plain_result(send(c->fd, p, n, MSG_NOSIGNAL));
  c->want_read = c->want_write = false;
  ERR_clear_error();
  int r = SSL_write(c->ssl, p, (int)n);
  if (r > 0)
    return r;
  ssize_t rc = tls_result(c, r);
  return rc == 0 ? -EPIPE : rc;
}

static void conn_update_poll(conn_t *c) {
  if (c->state == ST_CLOSED)
    return;
  int events = 0;
  if (c->state == ST_READING || c->state == ST_HANDSHAKE)
    events |= UV_READABLE;
  if (c->state == ST_WRITING)
    events |= UV_WRITABLE;
  if (c->want_read)
    events |= UV_READABLE;
  if (c->want_write)
    events |= UV_WRITABLE;
  if (events == 0)
    uv_poll_stop(&c->poll);
  else
    uv_poll_start(&c->poll, events, on_conn_poll);
}

static void on_timer(uv_timer_t *t);

static void arm_timer(conn_t *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Sends what is left of c->out; then goes on with the next request or
 * closes. */
static void flush_out(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = conn_write(c, c->out + c->out_off, c->out_len - c->out_off);
    if (n == -EAGAIN) {
      conn_update_poll(c);
      return;
    }
    if (n < 0) {
      conn_close(c);
      return;
    }
    c->out_off += (size_t)n;
  }
  if (c->close_after || c->s->stopping) {
    conn_close(c);
    return;
  }
  /* Keep-alive: the bytes after this request belong to the next. */
  memmove(c->buf, c->buf + c->request_len, c->len - c->request_len);
  c->len -= c->request_len;
  c->request_len = 0;
  c->out_len = c->out_off = 0;
  c->n_lines = 0;
  c->state = ST_READING;
  c->request_started = c->len > 0;
  arm_timer(c, c->request_started
                   ? current_config(c->s)->update.request_timeout_ms
                   : current_config(c->s)->update.idle_timeout_ms);
  conn_update_poll(c);
  if (c->len > 0)
    process_buffer(c);
}

static void send_reply(conn_t *c, const reg_dyndns_reply_t *reply) {
  int n = reg_dyndns_reply_render(reply, c->out, sizeof c->out);
  if (n < 0) {
    core_log(CORE_LOG_ERROR, "update: cannot render a reply: %s", strerror(-n));
    conn_close(c);
    return;
  }
  c->out_len = (size_t)n;
  c->out_off = 0;
  c->close_after = c->close_after || reply->close || !c->keep_alive;
  c->state = ST_WRITING;
  uv_timer_stop(&c->timer);
  /* A client that stops reading its reply is not kept forever. */
  arm_timer(c, current_config(c->s)->update.request_timeout_ms);
  flush_out(c);
}

/* A reply without lines: the status's reason phrase, and close. */
static void send_status(conn_t *c, unsigned status) {
  reg_dyndns_reply_t reply = {.http_status = status, .close = true};
  send_reply(c, &reply);
}

static void send_one_line(conn_t *c, reg_dyndns_code_t code) {
  c->lines[0] = (reg_dyndns_line_t){.code = code};
  reg_dyndns_reply_t reply = {
      .http_status = 200, .lines = c->lines, .n_lines = 1};
  send_reply(c, &reply);
}

/* ---- bad credentials and the credential cache ---------------------------- */

static fail_entry_t *fail_slot(reg_update_server_t *s, const core_ip_t *ip) {
  core_ip_t key = *ip;
  if (key.family == AF_INET6)
    memset(key.bytes + 8, 0, 8);
  uint64_t h = reg_name_hash((const char *)key.bytes, sizeof key.bytes);
  fail_entry_t *f = &s->fails[h % FAIL_SLOTS];
  uint64_t now = core_now_ms();
  if (f->source.family != key.family ||
      memcmp(f->source.bytes, key.bytes, sizeof key.bytes) != 0 ||
      now - f->window_ms > FAIL_WINDOW_MS) {
    /* Another source's slot, or an old window: start afresh. */
    f->source = key;
    f->window_ms = now;
    f->fails = 0;
  }
  return f;
}

static uint64_t fail_delay_ms(reg_update_server_t *s, const core_ip_t *ip) {
  fail_entry_t *f = fail_slot(s, ip);
  if (f->fails < FAIL_FREE)
    return 0;
  unsigned shift = f->fails - FAIL_FREE;
  uint64_t ms = shift >= 5 ? FAIL_MAX_DELAY_MS : 1000ULL << shift;
  return ms > FAIL_MAX_DELAY_MS ? FAIL_MAX_DELAY_MS : ms;
}

static void cache_digest(const reg_update_server_t *s, const char *account,
                         const char *secret, uint8_t out[32]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned n = 0;
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  EVP_DigestUpdate(md, s->cache_key, sizeof s->cache_key);
  EVP_DigestUpdate(md, account, strlen(account) + 1);
  EVP_DigestUpdate(md, secret, strlen(secret));
  EVP_DigestFinal_ex(md, out, &n);
  EVP_MD_CTX_free(md);
}

static uint64_t hash_tag(const char *hash) {
  return reg_name_hash(hash, strlen(hash));
}

static cache_entry_t *cache_slot(reg_update_server_t *s,
                                 const uint8_t digest[32]) {
  uint32_t i;
  memcpy(&i, digest, sizeof i);
  return &s->cache[i % CACHE_SLOTS];
}

static bool cache_hit(reg_update_server_t *s, const uint8_t digest[32],
                      const char *hash) {
  cache_entry_t *e = cache_slot(s, digest);
  return e->used && e->expires_ms > core_now_ms() &&
         e->hash_tag == hash_tag(hash) &&
         CRYPTO_memcmp(e->digest, digest, 32) == 0;
}

/* ---- deciding each name -------------------------------------------------- */

static const reg_account_t *find_account(const reg_config_t *cfg,
                                         const char *name) {
  for (size_t i = 0; i < cfg->n_accounts; i++)
    if (strcmp(cfg->accounts[i].name, name) == 0)
      return &cfg->accounts[i];
  return NULL;
}

static bool has_listener(const reg_config_t *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_listeners; i++)
    if (strcmp(cfg->listeners[i].name, name) == 0)
      return true;
  return false;
}

/* The addresses this request sets: myip/myipv6, else the source. */
static size_t request_addrs(const conn_t *c, core_ip_t out[2]) {
  size_t n = 0;
  if (c->req->has_ipv4)
    out[n++] = c->req->ipv4;
  if (c->req->has_ipv6)
    out[n++] = c->req->ipv6;
  if (n == 0) {
    out[0] = c->peer;
    n = 1;
  }
  return n;
}

/* new = base with the request's addresses (each family given replaces
 * that family; the other stays, as Dyn's A/AAAA did), ports merged, and
 * the online state. */
static void apply_request(const conn_t *c, const core_ip_t *addrs,
                          size_t n_addrs, reg_journal_record_t *rec) {
  core_ip_t kept[REG_MAX_ADDRESSES];
  size_t n_kept = 0;
  for (size_t i = 0; i < rec->n_addrs; i++) {
    bool replaced = false;
    for (size_t j = 0; j < n_addrs; j++)
      replaced = replaced || rec->addrs[i].family == addrs[j].family;
    if (!replaced && n_kept + n_addrs < REG_MAX_ADDRESSES)
      kept[n_kept++] = rec->addrs[i];
  }
  /* IPv4 first, as the reply lists them. */
  size_t n = 0;
  for (size_t j = 0; j < n_addrs; j++)
    rec->addrs[n++] = addrs[j];
  for (size_t i = 0; i < n_kept; i++)
    rec->addrs[n++] = kept[i];
  rec->n_addrs = n;
  for (size_t i = 0; i < c->req->n_ports; i++) {
    const reg_listener_port_t *p = &c->req->ports[i];
    size_t k = 0;
    while (k < rec->n_ports && strcmp(rec->ports[k].listener, p->listener))
      k++;
    if (k == rec->n_ports) {
      if (rec->n_ports == REG_UPDATE_MAX_PORTS)
        continue;
      rec->n_ports++;
    }
    rec->ports[k] = *p;
  }
  rec->offline = c->req->offline;
}

static bool same_state(const reg_journal_record_t *a,
                       const reg_journal_record_t *b) {
  uint8_t x[REG_JOURNAL_RECORD_MAX], y[REG_JOURNAL_RECORD_MAX];
  reg_journal_record_t ca = *a, cb = *b;
  ca.seq = cb.seq = 1;
  ca.time_ms = cb.time_ms = 0;
  ca.admin_tag = cb.admin_tag = 0;
  int nx = reg_journal_encode(&ca, x, sizeof x);
  int ny = reg_journal_encode(&cb, y, sizeof y);
  return nx > 0 && nx == ny && memcmp(x, y, (size_t)nx) == 0;
}

static void log_line(const conn_t *c, const char *name,
                     const reg_dyndns_line_t *line, const char *why) {
  char a[2][INET6_ADDRSTRLEN] = {"", ""};
  for (size_t i = 0; i < line->n_addrs; i++)
    core_ip_format(&line->addrs[i], a[i], sizeof a[i]);
  core_log(CORE_LOG_INFO, "update: %s from %s: %s %s%s%s%s%s%s%s", c->account,
           c->peer_text, name, reg_dyndns_code_name(line->code),
           line->n_addrs ? " " : "", a[0], line->n_addrs > 1 ? "," : "", a[1],
           why ? ": " : "", why ? why : "");
}

static void finish_request(conn_t *c) {
  if (c->state == ST_CLOSED || c->waiting > 0)
    return;
  reg_dyndns_reply_t reply = {
      .http_status = 200, .lines = c->lines, .n_lines = c->n_lines};
  send_reply(c, &reply);
}

static void on_update_done(int status, void *arg) {
  conn_t *c = arg;
  /* The journal calls back in the order of submission, which is the
   * order of the names: the first pending line is this one. */
  size_t i = 0;
  while (i < c->n_lines && !c->pending[i])
    i++;
  if (i < c->n_lines) {
    c->pending[i] = false;
    c->lines[i].code = status == 0 ? REG_DYNDNS_GOOD : REG_DYNDNS_911;
    if (status != 0)
      c->lines[i].n_addrs = 0;
    log_line(c, c->req->hosts[i].name, &c->lines[i],
             status == 0 ? NULL : "the journal could not be written");
  }
  c->waiting--;
  finish_request(c);
  conn_release(c);
}

/* The line for one name of an authenticated request. Returns true when
 * the update went to the journal (the line is settled by on_update_done). */
static bool decide(conn_t *c, size_t i, reg_dyndns_line_t *line) {
  reg_update_server_t *s = c->s;
  const reg_config_t *cfg = current_config(s);
  const reg_dyndns_host_t *h = &c->req->hosts[i];
  const char *why = NULL;
  *line = (reg_dyndns_line_t){.code = REG_DYNDNS_NOTFQDN};
  if (!h->valid) {
    log_line(c, "(invalid name)", line, NULL);
    return false;
  }
  const reg_device_t *d = reg_find(s->reg, h->name, h->len);
  if (d == NULL || d->owner == NULL || strcmp(d->owner, c->account) != 0) {
    line->code = REG_DYNDNS_NOHOST;
    log_line(c, h->name, line,
             d == NULL ? "no such device" : "another account's device");
    return false;
  }
  line->code = REG_DYNDNS_DNSERR;
  if (c->req->status != REG_DYNDNS_COMPLETE) {
    log_line(c, h->name, line, c->req->why);
    return false;
  }
  for (size_t k = 0; k < c->req->n_ports; k++)
    if (!has_listener(s->running, c->req->ports[k].listener)) {
      log_line(c, h->name, line, "port for a listener that does not exist");
      return false;
    }
  line->code = REG_DYNDNS_ABUSE;
  if (!reg_updates_rate_ok(s->updates, h->name,
                           cfg->update.updates_per_minute)) {
    log_line(c, h->name, line, "too many updates this minute");
    return false;
  }
  core_ip_t addrs[2];
  size_t n_addrs = request_addrs(c, addrs);
  reg_journal_record_t base, next;
  reg_updates_base(s->updates, d, &base);
  next = base;
  apply_request(c, addrs, n_addrs, &next);
  /* The same policy as the proxy's: a device must not point the proxy at
   * the carrier's own network. */
  for (size_t k = 0; k < n_addrs; k++)
    for (size_t p = 0; p < (next.n_ports ? next.n_ports : 1); p++)
      if (!reg_target_allowed(s->running, &addrs[k],
                              next.n_ports ? next.ports[p].port : 0, &why)) {
        log_line(c, h->name, line, why);
        return false;
      }
  line->n_addrs = n_addrs;
  memcpy(line->addrs, addrs, n_addrs * sizeof *addrs);
  if (same_state(&base, &next)) {
    line->code = REG_DYNDNS_NOCHG;
    log_line(c, h->name, line, NULL);
    return false;
  }
  line->code = REG_DYNDNS_GOOD;
  int rc = reg_updates_submit(s->updates, &next, on_update_done, c);
  if (rc != 0) {
    line->code = REG_DYNDNS_911;
    line->n_addrs = 0;
    log_line(c, h->name, line, strerror(-rc));
    return false;
  }
  c->pending[i] = true;
  c->waiting++;
  c->refs++;
  return true;
}

static void decide_all(conn_t *c) {
  c->state = ST_APPLYING;
  c->n_lines = c->req->n_hosts;
  /* Pending lines are settled in order by on_update_done, which looks for
   * the first pending one: the journal calls back in sequence order. */
  for (size_t i = 0; i < c->req->n_hosts; i++)
    decide(c, i, &c->lines[i]);
  finish_request(c);
}

/* ---- authentication ------------------------------------------------------ */

/* One crypt(3) check on the thread pool. Requests with the same account
 * and secret that arrive while it runs wait for it instead of hashing
 * again: a thousand routers of one account refreshing together cost one
 * hash, not a thousand. */
typedef struct verify_work {
  uv_work_t work;
  struct verify_work *next; /* in the server's list of checks running */
  reg_update_server_t *s;
  conn_t **waiters;
  size_t n_waiters, cap_waiters;
  char hash[256];
  char secret[REG_DYNDNS_SECRET_MAX + 1];
  bool known; /* the account exists */
  bool ok;
  uint8_t digest[32];
} verify_work_t;

static void verify_run(uv_work_t *w) {
  verify_work_t *v = w->data;
  v->ok = reg_secret_verify(v->hash, v->secret) && v->known;
}

static void auth_result(conn_t *c, bool ok) {
  fail_entry_t *f = fail_slot(c->s, &c->peer);
  if (!ok) {
    f->fails++;
    core_log(CORE_LOG_INFO, "update: %s from %s: badauth (%u bad in a row)",
             c->account, c->peer_text, f->fails);
    send_one_line(c, REG_DYNDNS_BADAUTH);
    return;
  }
  f->fails = 0;
  decide_all(c);
}

static void verify_add_waiter(verify_work_t *v, conn_t *c) {
  if (v->n_waiters == v->cap_waiters) {
    v->cap_waiters = v->cap_waiters ? v->cap_waiters * 2 : 4;
    v->waiters = xrealloc(v->waiters, v->cap_waiters * sizeof *v->waiters);
  }
  v->waiters[v->n_waiters++] = c;
  c->state = ST_VERIFYING;
  c->refs++;
  conn_update_poll(c);
}

static void verify_done(uv_work_t *w, int status) {
  verify_work_t *v = w->data;
  reg_update_server_t *s = v->s;
  verify_work_t **p = &s->verifying;
  while (*p != v)
    p = &(*p)->next;
  *p = v->next;
  bool ok = status == 0 && v->ok;
  if (ok && current_config(s)->update.credential_cache_ms > 0) {
    cache_entry_t *e = cache_slot(s, v->digest);
    memcpy(e->digest, v->digest, 32);
    e->hash_tag = hash_tag(v->hash);
    e->expires_ms =
        core_now_ms() + current_config(s)->update.credential_cache_ms;
    e->used = true;
  }
  explicit_bzero(v->secret, sizeof v->secret);
  for (size_t i = 0; i < v->n_waiters; i++) {
    conn_t *c = v->waiters[i];
    if (c->state != ST_CLOSED)
      auth_result(c, ok);
    conn_release(c);
  }
  free(v->waiters);
  free(v);
}

static void authenticate(conn_t *c) {
  reg_update_server_t *s = c->s;
  const reg_account_t *acc = find_account(current_config(s), c->req->user);
  const char *hash = acc && acc->secret ? acc->secret : DUMMY_HASH;
  uint8_t digest[32];
  cache_digest(s, c->req->user, c->req->secret, digest);
  if (acc != NULL && cache_hit(s, digest, hash)) {
    reg_dyndns_clear(c->req);
    auth_result(c, true);
    return;
  }
  for (verify_work_t *v = s->verifying; v; v = v->next)
    if (v->known == (acc != NULL) && strcmp(v->hash, hash) == 0 &&
        CRYPTO_memcmp(v->digest, digest, sizeof digest) == 0) {
      reg_dyndns_clear(c->req);
      verify_add_waiter(v, c);
      return;
    }
  /* crypt(3) takes tens of milliseconds by design: off the loop. Unknown
   * accounts cost the same, so timing does not tell which exist. */
  verify_work_t *v = xcalloc(1, sizeof *v);
  v->work.data = v;
  v->s = s;
  v->known = acc != NULL;
  snprintf(v->hash, sizeof v->hash, "%s", hash);
  memcpy(v->secret, c->req->secret, sizeof v->secret);
  reg_dyndns_clear(c->req);
  memcpy(v->digest, digest, sizeof digest);
  int rc = uv_queue_work(s->loop, &v->work, verify_run, verify_done);
  if (rc != 0) {
    explicit_bzero(v->secret, sizeof v->secret);
    free(v);
    send_status(c, 500);
    return;
  }
  v->next = s->verifying;
  s->verifying = v;
  verify_add_waiter(v, c);
}

static void start_auth(conn_t *c) {
  uint64_t delay = fail_delay_ms(c->s, &c->peer);
  if (delay == 0) {
    authenticate(c);
    return;
  }
  core_log(CORE_LOG_INFO,
           "update: %s: slowed down %llu ms after repeated bad credentials",
           c->peer_text, (unsigned long long)delay);
  c->state = ST_DELAYED;
  conn_update_poll(c);
  arm_timer(c, delay);
}

/* ---- requests ------------------------------------------------------------ */

static void handle_request(conn_t *c, const reg_update_head_t *head) {
  c->keep_alive = head->keep_alive;
  if (!head->method_get && !head->method_post) {
    send_status(c, 405);
    return;
  }
  if (c->req == NULL)
    c->req = xmalloc(sizeof *c->req);
  reg_dyndns_parse(head->target,
                   head->n_authorization ? &head->authorization : NULL,
                   head->n_user_agent ? &head->user_agent : NULL, c->req);
  snprintf(c->account, sizeof c->account, "%s",
           c->req->auth == REG_DYNDNS_AUTH_BASIC ? c->req->user : "-");
  reg_dyndns_reply_t reply;
  if (reg_dyndns_early_reply(c->req, &reply, &c->lines[0])) {
    core_log(CORE_LOG_INFO, "update: %s from %s: HTTP %u%s%s%s%s", c->account,
             c->peer_text, reply.http_status, reply.n_lines ? " " : "",
             reply.n_lines ? reg_dyndns_code_name(c->lines[0].code) : "",
             c->req->why ? ": " : "", c->req->why ? c->req->why : "");
    reg_dyndns_clear(c->req);
    send_reply(c, &reply);
    return;
  }
  start_auth(c);
}

static void process_buffer(conn_t *c) {
  if (c->state != ST_READING)
    return;
  reg_update_head_t head;
  switch (reg_update_head_parse(c->buf, c->len, &head)) {
  case REG_UPDATE_HEAD_NEED_MORE:
    if (c->len == c->cap) {
      core_log(CORE_LOG_INFO, "update: %s: request head over %zu bytes",
               c->peer_text, c->cap);
      send_status(c, 431);
    }
    return;
  case REG_UPDATE_HEAD_INVALID:
    core_log(CORE_LOG_INFO, "update: %s: bad request: %s", c->peer_text,
             head.why);
    send_status(c, 400);
    return;
  case REG_UPDATE_HEAD_COMPLETE:
    break;
  }
  if (head.body_len > c->cap - head.head_len) {
    core_log(CORE_LOG_INFO, "update: %s: request body of %llu bytes",
             c->peer_text, (unsigned long long)head.body_len);
    send_status(c, 413);
    return;
  }
  size_t total = head.head_len + (size_t)head.body_len;
  if (c->len < total)
    return; /* the body (ignored: parameters are in the query) is coming */
  c->request_len = total;
  handle_request(c, &head);
}

static void on_readable(conn_t *c) {
  for (int rounds = 0; rounds < 16 && c->state == ST_READING; rounds++) {
    if (c->len == c->cap) {
      process_buffer(c);
      return;
    }
    ssize_t n = conn_read(c, c->buf + c->len, c->cap - c->len);
    if (n == -EAGAIN)
      break;
    if (n <= 0) {
      conn_close(c);
      return;
    }
    if (!c->request_started) {
      c->request_started = true;
      /* An absolute deadline from the first byte: dripping does not help. */
      arm_timer(c, current_config(c->s)->update.request_timeout_ms);
    }
    c->len += (size_t)n;
    process_buffer(c);
  }
  conn_update_poll(c);
}

static void on_handshake(conn_t *c) {
  c->want_read = c->want_write = false;
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    c->state = ST_READING;
    on_readable(c);
    return;
  }
  if (tls_result(c, r) != -EAGAIN) {
    core_log(CORE_LOG_DEBUG, "update: %s: TLS handshake failed", c->peer_text);
    conn_close(c);
    return;
  }
  conn_update_poll(c);
}

static void on_conn_poll(uv_poll_t *p, int status, int events) {
  conn_t *c = p->data;
  (void)events;
  if (status < 0) {
    conn_close(c);
    return;
  }
  switch (c->state) {
  case ST_HANDSHAKE:
    on_handshake(c);
    break;
  case ST_READING:
    on_readable(c);
    break;
  case ST_WRITING:
    flush_out(c);
    break;
  default:
    conn_update_poll(c);
    break;
  }
}

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  switch (c->state) {
  case ST_DELAYED:
    authenticate(c);
    break;
  case ST_READING:
    if (c->request_started) {
      core_log(CORE_LOG_INFO, "update: %s: request not complete in time",
               c->peer_text);
      send_status(c, 408);
    } else {
      conn_close(c); /* idle keep-alive connection */
    }
    break;
  case ST_VERIFYING:
  case ST_APPLYING:
    break; /* their callbacks answer */
  default:
    conn_close(c);
    break;
  }
}

/* ---- accepting ----------------------------------------------------------- */

static void conn_start(reg_update_server_t *s, int fd, bool tls,
                       const struct sockaddr_storage *peer) {
  const reg_config_t *cfg = current_config(s);
  conn_t *c = xcalloc(1, sizeof *c);
  c->s = s;
  c->fd = fd;
  c->cap = cfg->update.max_request;
  c->buf = xmalloc(c->cap);
  core_ip_from_sockaddr((const struct sockaddr *)peer, &c->peer);
  if (c->peer.family == AF_INET6 &&
      memcmp(c->peer.bytes, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
    c->peer.family = AF_INET;
    memmove(c->peer.bytes, c->peer.bytes + 12, 4);
    memset(c->peer.bytes + 4, 0, 12);
  }
  core_ip_format(&c->peer, c->peer_text, sizeof c->peer_text);
  uv_poll_init_socket(s->loop, &c->poll, fd);
  uv_timer_init(s->loop, &c->timer);
  c->poll.data = c->timer.data = c;
  c->refs = 2;
  s->open_handles++;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
  c->state = ST_READING;
  if (tls) {
    c->ssl = SSL_new(s->ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
      conn_close(c);
      return;
    }
    SSL_set_accept_state(c->ssl);
    c->state = ST_HANDSHAKE;
    c->request_started = true; /* the handshake counts as the request */
  }
  arm_timer(c, c->request_started ? cfg->update.request_timeout_ms
                                  : cfg->update.idle_timeout_ms);
  uv_poll_start(&c->poll, UV_READABLE, on_conn_poll);
}

static void on_backoff(uv_timer_t *t);

static void on_accept(uv_poll_t *p, int status, int events) {
  listener_t *l = p->data;
  reg_update_server_t *s = l->server;
  (void)events;
  if (status < 0 || s->stopping)
    return;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Out of descriptors: stop polling a while instead of spinning. */
        core_log(CORE_LOG_WARN, "update: cannot accept: %s; pausing %d ms",
                 strerror(errno), BACKOFF_MS);
        uv_poll_stop(&l->poll);
        uv_timer_start(&l->backoff, on_backoff, BACKOFF_MS, 0);
      }
      return;
    }
    if (s->n_conns >= current_config(s)->update.max_connections) {
      core_log(CORE_LOG_WARN,
               "update: connection limit (%u) reached; closing a new one",
               current_config(s)->update.max_connections);
      close(fd);
      continue;
    }
    conn_start(s, fd, l->tls, &peer);
  }
}

static void on_backoff(uv_timer_t *t) {
  listener_t *l = t->data;
  if (!l->server->stopping)
    uv_poll_start(&l->poll, UV_READABLE, on_accept);
}

static int listen_on(const struct sockaddr_storage *addr, int *out) {
  int fd =
      socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  socklen_t len = addr->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6);
  if (bind(fd, (const struct sockaddr *)addr, len) != 0 ||
      listen(fd, 1024) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

/* ---- TLS ----------------------------------------------------------------- */

static void ssl_error(char *err, size_t size, const char *what,
                      const char *path) {
  char buf[256];
  unsigned long e = ERR_get_error();
  ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, size, "%s %s: %s", what, path, e ? buf : "unknown error");
  ERR_clear_error();
}

/* The certificate and key of cfg in a new context, or a negative errno
 * and why in err. */
static int make_tls(const reg_config_t *cfg, SSL_CTX **out, char *err,
                    size_t size) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    snprintf(err, size, "out of memory for TLS");
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(ctx, cfg->update.tls_cert) != 1) {
    ssl_error(err, size, "cannot load the certificate", cfg->update.tls_cert);
    SSL_CTX_free(ctx);
    return -EINVAL;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, cfg->update.tls_key, SSL_FILETYPE_PEM) !=
          1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    ssl_error(err, size,
              "cannot load the key (or it does not match the certificate)",
              cfg->update.tls_key);
    SSL_CTX_free(ctx);
    return -EINVAL;
  }
  *out = ctx;
  return 0;
}

static int load_tls(const reg_config_t *cfg, SSL_CTX **out) {
  char err[512];
  int rc = make_tls(cfg, out, err, sizeof err);
  if (rc != 0)
    core_log(CORE_LOG_ERROR, "update: %s", err);
  return rc;
}

int reg_update_tls_check(const reg_config_t *cfg, char *err, size_t size) {
  SSL_CTX *ctx;
  if (cfg->update.tls_cert == NULL)
    return 0;
  int rc = make_tls(cfg, &ctx, err, size);
  if (rc == 0)
    SSL_CTX_free(ctx);
  return rc;
}

int reg_update_server_reload(reg_update_server_t *s, const reg_config_t *next) {
  if (s == NULL || s->ssl_ctx == NULL || next->update.tls_cert == NULL)
    return 0;
  SSL_CTX *ctx;
  int rc = load_tls(next, &ctx);
  if (rc != 0) {
    core_log(CORE_LOG_ERROR,
             "update: keeping the certificate in use until a reload loads");
    return rc;
  }
  /* Connections hold their own reference to the old context. */
  SSL_CTX_free(s->ssl_ctx);
  s->ssl_ctx = ctx;
  core_log(CORE_LOG_INFO, "update: certificate %s reloaded",
           next->update.tls_cert);
  return 0;
}

/* ---- starting and stopping ----------------------------------------------- */

static void on_listener_closed(uv_handle_t *h) {
  listener_t *l = h->data;
  if (h == (uv_handle_t *)&l->poll)
    close(l->fd);
  server_release(l->server);
}

int reg_update_server_start(uv_loop_t *loop, const reg_config_t *running,
                            reg_config_fn *current, void *current_arg,
                            reg_updates_t *u, reg_t *reg,
                            reg_update_server_t **out) {
  *out = NULL;
  reg_update_server_t *s = xcalloc(1, sizeof *s);
  s->loop = loop;
  s->running = running;
  s->current = current;
  s->current_arg = current_arg;
  s->updates = u;
  s->reg = reg;
  s->open_handles = 1; /* the server's own, dropped by stop */
  s->cache = xcalloc(CACHE_SLOTS, sizeof *s->cache);
  int rc = 0;
  if (RAND_bytes(s->cache_key, sizeof s->cache_key) != 1)
    rc = -EIO;
  if (rc == 0 && running->update.n_tls_listen > 0)
    rc = load_tls(running, &s->ssl_ctx);
  size_t n = running->update.n_listen + running->update.n_tls_listen;
  s->listeners = xcalloc(n ? n : 1, sizeof *s->listeners);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    bool tls = i >= running->update.n_listen;
    const struct sockaddr_storage *addr =
        tls ? &running->update.tls_listen[i - running->update.n_listen]
            : &running->update.listen[i];
    listener_t *l = &s->listeners[i];
    l->server = s;
    l->tls = tls;
    rc = listen_on(addr, &l->fd);
    char where[64];
    core_sockaddr_format((const struct sockaddr *)addr, where, sizeof where);
    if (rc != 0) {
      core_log(CORE_LOG_ERROR, "update: cannot listen on %s: %s", where,
               strerror(-rc));
      break;
    }
    uv_poll_init_socket(loop, &l->poll, l->fd);
    uv_timer_init(loop, &l->backoff);
    l->poll.data = l->backoff.data = l;
    s->open_handles += 2;
    s->n_listeners++;
    uv_poll_start(&l->poll, UV_READABLE, on_accept);
    core_log(CORE_LOG_INFO, "update: listening on %s (%s)", where,
             tls ? "HTTPS" : "HTTP");
  }
  if (rc != 0) {
    reg_update_server_stop(s);
    return rc;
  }
  *out = s;
  return 0;
}

void reg_update_server_stop(reg_update_server_t *s) {
  if (s == NULL || s->stopping)
    return;
  s->stopping = true;
  for (size_t i = 0; i < s->n_listeners; i++) {
    uv_close((uv_handle_t *)&s->listeners[i].poll, on_listener_closed);
    uv_close((uv_handle_t *)&s->listeners[i].backoff, on_listener_closed);
  }
  /* Requests waiting for a secret check or the journal are answered when
   * those call back; the rest go now. */
  for (conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (c->state != ST_VERIFYING && c->state != ST_APPLYING &&
        !(c->state == ST_WRITING && c->out_off < c->out_len))
      conn_close(c);
  }
  server_release(s);
}
