/* SPDX-License-Identifier: MIT */
/* tsig.c -- TSIG (RFC 8945): verifying requests, signing replies */
#include "dns/dns_int.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#define TSIG_FUDGE 300 /* seconds our signatures allow for clock skew */

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put_u48(uint8_t *p, uint64_t v) {
  for (int i = 5; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t)v;
}

static const char *algorithm_name(reg_tsig_algorithm_t a) {
  return a == REG_TSIG_HMAC_SHA512 ? "hmac-sha512" : "hmac-sha256";
}

static size_t algorithm_size(reg_tsig_algorithm_t a) {
  return a == REG_TSIG_HMAC_SHA512 ? 64 : 32;
}

/* Lowercase, uncompressed: the form names take inside the digest. */
static void name_canonical(const dns_name_t *in, uint8_t *out) {
  for (size_t i = 0; i < in->len; i++) {
    uint8_t c = in->wire[i];
    out[i] = c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
  }
}

/* ---- the MAC ------------------------------------------------------------ */

typedef struct mac {
  EVP_MAC *mac;
  EVP_MAC_CTX *ctx;
  bool ok;
} mac_t;

static bool mac_begin(mac_t *m, const reg_tsig_key_t *key) {
  char digest[16];
  strcpy(digest, key->algorithm == REG_TSIG_HMAC_SHA512 ? "SHA512" : "SHA256");
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  m->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  m->ctx = m->mac ? EVP_MAC_CTX_new(m->mac) : NULL;
  m->ok = m->ctx && EVP_MAC_init(m->ctx, key->secret, key->secret_len, params);
  return m->ok;
}

static void mac_add(mac_t *m, const void *p, size_t n) {
  if (m->ok && n > 0)
    m->ok = EVP_MAC_update(m->ctx, p, n);
}

static void mac_add_u16(mac_t *m, uint16_t v) {
  uint8_t b[2];
  put_u16(b, v);
  mac_add(m, b, 2);
}

/* Writes the MAC to out (64 bytes of room); returns its length or 0. */
static size_t mac_end(mac_t *m, uint8_t *out) {
  size_t n = 0;
  if (m->ok && !EVP_MAC_final(m->ctx, out, &n, 64))
    n = 0;
  EVP_MAC_CTX_free(m->ctx);
  EVP_MAC_free(m->mac);
  return m->ok ? n : 0;
}

/* The digest of RFC 8945 4.3.3: prior MAC, message (with the given ID and
 * ARCOUNT, without the TSIG record), then the TSIG variables (only the
 * timers after the first message of a transfer). */
static size_t mac_compute(const reg_tsig_key_t *key, const uint8_t *prior,
                          size_t prior_len, const uint8_t *msg, size_t len,
                          uint16_t id, uint16_t arcount,
                          const dns_name_t *key_name,
                          const dns_name_t *alg_name, uint64_t time_signed,
                          uint16_t fudge, uint16_t error, const uint8_t *other,
                          uint16_t other_len, bool timers_only, uint8_t *out) {
  mac_t m;
  uint8_t buf[DNS_NAME_WIRE_MAX], head[DNS_HEADER_SIZE], t[8];
  if (!mac_begin(&m, key))
    return mac_end(&m, out);
  if (prior_len > 0) {
    mac_add_u16(&m, (uint16_t)prior_len);
    mac_add(&m, prior, prior_len);
  }
  memcpy(head, msg, DNS_HEADER_SIZE);
  put_u16(head, id);
  put_u16(head + 10, arcount);
  mac_add(&m, head, DNS_HEADER_SIZE);
  mac_add(&m, msg + DNS_HEADER_SIZE, len - DNS_HEADER_SIZE);
  if (!timers_only) {
    name_canonical(key_name, buf);
    mac_add(&m, buf, key_name->len);
    mac_add_u16(&m, DNS_CLASS_ANY);
    mac_add(&m, "\0\0\0\0", 4); /* TTL */
    name_canonical(alg_name, buf);
    mac_add(&m, buf, alg_name->len);
  }
  put_u48(t, time_signed);
  put_u16(t + 6, fudge);
  mac_add(&m, t, 8);
  if (!timers_only) {
    mac_add_u16(&m, error);
    mac_add_u16(&m, other_len);
    mac_add(&m, other, other_len);
  }
  return mac_end(&m, out);
}

/* ---- verifying ---------------------------------------------------------- */

static const reg_tsig_key_t *key_find(const reg_config_t *config,
                                      const dns_name_t *name) {
  char text[DNS_NAME_TEXT_MAX];
  if (dns_name_to_text(name, text, sizeof text, true) < 0)
    return NULL;
  for (size_t i = 0; i < config->dns.n_tsig_keys; i++)
    if (strcmp(config->dns.tsig_keys[i].name, text) == 0)
      return &config->dns.tsig_keys[i];
  return NULL;
}

/* A message's TSIG record, as found by tsig_find. */
typedef struct tsig_record {
  dns_header_t header;
  dns_rr_t rr;         /* rr.name: the key's name */
  size_t at;           /* offset of the record: the end of what is signed */
  dns_name_t alg_name; /* the algorithm */
  uint64_t time_signed;
  uint16_t fudge;
  const uint8_t *mac;
  size_t mac_len;
  uint16_t orig_id, error;
  const uint8_t *other;
  uint16_t other_len;
} tsig_record_t;

/* Finds and decodes the TSIG record of msg[0..len): DNS_TSIG_OK with *t
 * filled, DNS_TSIG_NONE when there is none (or the message cannot be read
 * up to one), DNS_TSIG_FORMERR when it is malformed or not last. */
static dns_tsig_status_t tsig_find(const uint8_t *msg, size_t len,
                                   const dns_question_ahead_t *ahead,
                                   tsig_record_t *t) {
  size_t pos = DNS_HEADER_SIZE;
  dns_rr_t rr;
  bool found = false;

  if (dns_header_parse(msg, len, &t->header) != DNS_WIRE_OK)
    return DNS_TSIG_NONE;
  const dns_header_t *h = &t->header;
  for (unsigned i = 0; i < h->qdcount; i++) {
    dns_question_t q;
    if (i == 0 && ahead) {
      pos = ahead->end;
      continue;
    }
    if (dns_question_parse(msg, len, &pos, &q) != DNS_WIRE_OK)
      return DNS_TSIG_NONE;
  }
  unsigned n_rr = (unsigned)h->ancount + h->nscount + h->arcount;
  for (unsigned i = 0; i < n_rr; i++) {
    size_t at = pos;
    if (dns_rr_parse(msg, len, &pos, &rr) != DNS_WIRE_OK)
      return found ? DNS_TSIG_FORMERR : DNS_TSIG_NONE;
    if (rr.type != DNS_TYPE_TSIG)
      continue;
    /* One TSIG, the last record of the message (RFC 8945 5.1). */
    if (found || i != n_rr - 1 || h->arcount == 0)
      return DNS_TSIG_FORMERR;
    found = true;
    t->rr = rr;
    t->at = at;
  }
  if (!found)
    return DNS_TSIG_NONE;
  if (pos != len || t->rr.rclass != DNS_CLASS_ANY || t->rr.ttl != 0)
    return DNS_TSIG_FORMERR;

  /* The record's data: algorithm, time, fudge, MAC, original ID, error,
   * other data; exactly. */
  size_t p = t->rr.rdata, end = t->rr.rdata + t->rr.rdlength;
  if (dns_name_decode(msg, end, &p, &t->alg_name) != DNS_WIRE_OK ||
      end - p < 10)
    return DNS_TSIG_FORMERR;
  t->time_signed = ((uint64_t)get_u16(msg + p) << 32) |
                   ((uint64_t)get_u16(msg + p + 2) << 16) |
                   get_u16(msg + p + 4);
  t->fudge = get_u16(msg + p + 6);
  t->mac_len = get_u16(msg + p + 8);
  p += 10;
  if (end - p < t->mac_len + 6)
    return DNS_TSIG_FORMERR;
  t->mac = msg + p;
  p += t->mac_len;
  t->orig_id = get_u16(msg + p);
  t->error = get_u16(msg + p + 2);
  t->other_len = get_u16(msg + p + 4);
  p += 6;
  if (end - p != t->other_len)
    return DNS_TSIG_FORMERR;
  t->other = msg + p;
  return DNS_TSIG_OK;
}

/* True when t's algorithm is key's. */
static bool algorithm_matches(const tsig_record_t *t,
                              const reg_tsig_key_t *key) {
  char alg[DNS_NAME_TEXT_MAX];
  return dns_name_to_text(&t->alg_name, alg, sizeof alg, true) >= 0 &&
         strcmp(alg, algorithm_name(key->algorithm)) == 0;
}

/* True when t's MAC is the one key gives msg, chained to prior (the
 * request's MAC when msg is an answer; none for a request). Truncated MACs
 * (RFC 8945 5.2.2.1) are not accepted: nobody sends them to a primary, and
 * we never ask for them. */
static bool mac_matches(const tsig_record_t *t, const reg_tsig_key_t *key,
                        const uint8_t *prior, size_t prior_len,
                        const uint8_t *msg) {
  uint8_t want[64];
  size_t want_len = mac_compute(key, prior, prior_len, msg, t->at, t->orig_id,
                                (uint16_t)(t->header.arcount - 1), &t->rr.name,
                                &t->alg_name, t->time_signed, t->fudge,
                                t->error, t->other, t->other_len, false, want);
  return want_len != 0 && t->mac_len == want_len &&
         CRYPTO_memcmp(want, t->mac, want_len) == 0;
}

static bool time_in_range(const tsig_record_t *t, uint64_t now) {
  uint64_t skew =
      now > t->time_signed ? now - t->time_signed : t->time_signed - now;
  return skew <= t->fudge;
}

dns_tsig_status_t dns_tsig_verify(const reg_config_t *config,
                                  const uint8_t *msg, size_t len,
                                  const dns_question_ahead_t *ahead,
                                  uint64_t now, dns_tsig_ctx_t *ctx) {
  tsig_record_t t;

  memset(ctx, 0, sizeof *ctx);
  dns_tsig_status_t found = tsig_find(msg, len, ahead, &t);
  if (found != DNS_TSIG_OK)
    return found;
  ctx->key_name = t.rr.name;
  ctx->alg_name = t.alg_name;
  ctx->time_signed = now;
  ctx->fudge = TSIG_FUDGE;
  const reg_tsig_key_t *key = key_find(config, &t.rr.name);
  if (!key || !algorithm_matches(&t, key)) {
    ctx->error = DNS_TSIG_ERR_BADKEY;
    return DNS_TSIG_BADKEY;
  }
  ctx->key = key;
  if (!mac_matches(&t, key, NULL, 0, msg)) {
    ctx->key = NULL;
    ctx->error = DNS_TSIG_ERR_BADSIG;
    return DNS_TSIG_BADSIG;
  }
  memcpy(ctx->mac, t.mac, t.mac_len);
  ctx->mac_len = t.mac_len;
  if (!time_in_range(&t, now)) {
    /* Signed, so the client can trust our clock in the Other Data; the
     * time is the request's own (RFC 8945 5.2.3). */
    ctx->error = DNS_TSIG_ERR_BADTIME;
    ctx->other_time = now;
    ctx->time_signed = t.time_signed;
    return DNS_TSIG_BADTIME;
  }
  return DNS_TSIG_OK;
}

dns_tsig_status_t dns_tsig_verify_answer(const dns_tsig_ctx_t *request,
                                         const uint8_t *msg, size_t len,
                                         uint64_t now, uint16_t *error) {
  tsig_record_t t;

  *error = 0;
  dns_tsig_status_t found = tsig_find(msg, len, NULL, &t);
  if (found != DNS_TSIG_OK)
    return found;
  *error = t.error;
  if (!request->key || !dns_name_equal(&t.rr.name, &request->key_name) ||
      !algorithm_matches(&t, request->key))
    return DNS_TSIG_BADKEY;
  /* An answer that reports BADKEY or BADSIG carries no MAC: nothing in it
   * can be trusted. */
  if (!mac_matches(&t, request->key, request->mac, request->mac_len, msg))
    return DNS_TSIG_BADSIG;
  if (!time_in_range(&t, now))
    return DNS_TSIG_BADTIME;
  return DNS_TSIG_OK;
}

/* ---- signing ------------------------------------------------------------ */

void dns_tsig_ctx_for_key(dns_tsig_ctx_t *ctx, const reg_tsig_key_t *key,
                          uint64_t now) {
  memset(ctx, 0, sizeof *ctx);
  ctx->key = key;
  ctx->fudge = TSIG_FUDGE;
  ctx->time_signed = now;
  if (dns_name_from_text(key->name, strlen(key->name), &ctx->key_name) != 0 ||
      dns_name_from_text(algorithm_name(key->algorithm),
                         strlen(algorithm_name(key->algorithm)),
                         &ctx->alg_name) != 0)
    ctx->key = NULL;
}

size_t dns_tsig_reserve(const dns_tsig_ctx_t *ctx) {
  if (!ctx->key && ctx->error == 0)
    return 0;
  size_t mac = ctx->key ? algorithm_size(ctx->key->algorithm) : 0;
  return ctx->key_name.len + 10 + ctx->alg_name.len + 10 + mac + 6 + 6;
}

size_t dns_tsig_sign(dns_tsig_ctx_t *ctx, uint8_t *msg, size_t len,
                     size_t cap) {
  uint8_t mac[64], other[6];
  size_t mac_len = 0;
  uint16_t other_len = 0;

  if ((!ctx->key && ctx->error == 0) || len < DNS_HEADER_SIZE)
    return len;
  if (cap < len || cap - len < dns_tsig_reserve(ctx))
    return len;
  uint16_t id = get_u16(msg);
  uint16_t arcount = get_u16(msg + 10);
  if (ctx->error == DNS_TSIG_ERR_BADTIME) {
    put_u48(other, ctx->other_time);
    other_len = 6;
  }
  /* BADKEY and BADSIG answers go unsigned: we have no key the client
   * shares (RFC 8945 5.3.2). */
  if (ctx->key && ctx->error != DNS_TSIG_ERR_BADKEY &&
      ctx->error != DNS_TSIG_ERR_BADSIG) {
    mac_len = mac_compute(ctx->key, ctx->mac, ctx->mac_len, msg, len, id,
                          arcount, &ctx->key_name, &ctx->alg_name,
                          ctx->time_signed, ctx->fudge, ctx->error, other,
                          other_len, ctx->n_signed > 0, mac);
    if (mac_len == 0)
      return len;
    memcpy(ctx->mac, mac, mac_len);
    ctx->mac_len = mac_len;
    ctx->n_signed++;
  }

  uint8_t *p = msg + len;
  memcpy(p, ctx->key_name.wire, ctx->key_name.len);
  p += ctx->key_name.len;
  put_u16(p, DNS_TYPE_TSIG);
  put_u16(p + 2, DNS_CLASS_ANY);
  memset(p + 4, 0, 4);
  uint8_t *rdlength = p + 8;
  p += 10;
  uint8_t *rdata = p;
  memcpy(p, ctx->alg_name.wire, ctx->alg_name.len);
  p += ctx->alg_name.len;
  put_u48(p, ctx->time_signed);
  put_u16(p + 6, ctx->fudge);
  put_u16(p + 8, (uint16_t)mac_len);
  p += 10;
  memcpy(p, mac, mac_len);
  p += mac_len;
  put_u16(p, id);
  put_u16(p + 2, ctx->error);
  put_u16(p + 4, other_len);
  p += 6;
  memcpy(p, other, other_len);
  p += other_len;
  put_u16(rdlength, (uint16_t)(p - rdata));
  put_u16(msg + 10, (uint16_t)(arcount + 1));
  return (size_t)(p - msg);
}
