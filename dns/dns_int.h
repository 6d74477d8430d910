/* SPDX-License-Identifier: MIT */
/* dns_int.h -- the DNS wire codec shared inside dns/ and by its tests */
#ifndef DDPORT_DNS_INT_H
#define DDPORT_DNS_INT_H

#include "registry/registry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- protocol numbers -------------------------------------------------- */

#define DNS_HEADER_SIZE 12
#define DNS_LABEL_MAX 63
#define DNS_NAME_WIRE_MAX 255 /* uncompressed, including the root label */
/* Presentation form: every byte may need "\DDD", plus the NUL. */
#define DNS_NAME_TEXT_MAX (4 * DNS_NAME_WIRE_MAX + 1)
/* A 255-byte name has at most 127 labels, so a sane encoder never needs more
 * jumps than that; the cap bounds the work per name whatever the input. */
#define DNS_NAME_MAX_JUMPS 127

enum {
  DNS_TYPE_A = 1,
  DNS_TYPE_NS = 2,
  DNS_TYPE_CNAME = 5,
  DNS_TYPE_SOA = 6,
  DNS_TYPE_MX = 15,
  DNS_TYPE_TXT = 16,
  DNS_TYPE_AAAA = 28,
  DNS_TYPE_OPT = 41,
  DNS_TYPE_TSIG = 250,
  DNS_TYPE_IXFR = 251,
  DNS_TYPE_AXFR = 252,
  DNS_TYPE_ANY = 255,
};

enum {
  DNS_CLASS_IN = 1,
  DNS_CLASS_CH = 3,
  DNS_CLASS_ANY = 255,
};

enum {
  DNS_OPCODE_QUERY = 0,
  DNS_OPCODE_NOTIFY = 4,
  DNS_OPCODE_UPDATE = 5,
};

enum {
  DNS_RCODE_NOERROR = 0,
  DNS_RCODE_FORMERR = 1,
  DNS_RCODE_SERVFAIL = 2,
  DNS_RCODE_NXDOMAIN = 3,
  DNS_RCODE_NOTIMP = 4,
  DNS_RCODE_REFUSED = 5,
  DNS_RCODE_NOTAUTH = 9,
  DNS_RCODE_BADVERS = 16, /* extended: needs an OPT record to carry it */
};

/* Bits of dns_header_t.flags. */
#define DNS_FLAG_QR 0x8000u
#define DNS_FLAG_AA 0x0400u
#define DNS_FLAG_TC 0x0200u
#define DNS_FLAG_RD 0x0100u
#define DNS_FLAG_RA 0x0080u
#define DNS_FLAG_AD 0x0020u
#define DNS_FLAG_CD 0x0010u
#define DNS_FLAG_OPCODE(op) ((uint16_t)(((op)&0xFu) << 11))
#define DNS_FLAG_RCODE(rc) ((uint16_t)((rc)&0xFu))

/* EDNS option codes. */
#define DNS_OPT_CODE_COOKIE 10 /* RFC 7873 */

/* Bit of the OPT record's TTL field (RFC 3225). */
#define DNS_OPT_DO 0x8000u

/* ---- parsing ------------------------------------------------------------ */

/* What a parser found. Parsers read only msg[0..len), never allocate, and
 * leave their outputs unspecified unless they return DNS_WIRE_OK. */
typedef enum dns_wire {
  DNS_WIRE_OK = 0,
  DNS_WIRE_TRUNCATED,      /* the message ends inside the item */
  DNS_WIRE_BAD_POINTER,    /* compression pointer not strictly backwards */
  DNS_WIRE_LABEL_TOO_LONG, /* a length byte of 64..191 */
  DNS_WIRE_NAME_TOO_LONG,  /* more than 255 bytes once decompressed */
} dns_wire_t;

/* A static phrase for s. */
const char *dns_wire_strerror(dns_wire_t s);

typedef struct dns_header {
  uint16_t id;
  uint16_t flags;
  uint16_t qdcount, ancount, nscount, arcount;
} dns_header_t;

static inline unsigned dns_header_opcode(const dns_header_t *h) {
  return (h->flags >> 11) & 0xFu;
}

static inline unsigned dns_header_rcode(const dns_header_t *h) {
  return h->flags & 0xFu;
}

/* A domain name in uncompressed wire form: length-prefixed labels ending
 * with the root label (0). Case is kept as received. */
typedef struct dns_name {
  uint8_t wire[DNS_NAME_WIRE_MAX];
  uint8_t len;    /* bytes used in wire, 1..255 */
  uint8_t labels; /* not counting the root */
} dns_name_t;

typedef struct dns_question {
  dns_name_t name;
  uint16_t qtype, qclass;
} dns_question_t;

/* A resource record as parsed; rdata stays in the message. */
typedef struct dns_rr {
  dns_name_t name;
  uint16_t type, rclass;
  uint32_t ttl;
  uint16_t rdlength;
  size_t rdata; /* offset of the rdata in the message */
} dns_rr_t;

/* Reads the 12-byte header at the start of msg. */
dns_wire_t dns_header_parse(const uint8_t *msg, size_t len, dns_header_t *out);

/* Writes h as 12 bytes to out. */
void dns_header_encode(const dns_header_t *h, uint8_t out[DNS_HEADER_SIZE]);

/* Decodes the name at msg[*pos], following compression pointers, and
 * advances *pos past the name's bytes at that place (past the first pointer
 * when there is one). A pointer must point before the start of the run of
 * labels it ends and not into the header; that rule alone rules out loops,
 * and DNS_NAME_MAX_JUMPS bounds the work. */
dns_wire_t dns_name_decode(const uint8_t *msg, size_t len, size_t *pos,
                           dns_name_t *out);

/* Decodes one question at msg[*pos] and advances *pos past it. */
dns_wire_t dns_question_parse(const uint8_t *msg, size_t len, size_t *pos,
                              dns_question_t *out);

/* Decodes one resource record at msg[*pos] (rdata is checked to lie inside
 * the message, not decoded) and advances *pos past it. */
dns_wire_t dns_rr_parse(const uint8_t *msg, size_t len, size_t *pos,
                        dns_rr_t *out);

/* ---- TCP framing (RFC 1035 4.2.2) -------------------------------------- */

typedef enum dns_frame {
  DNS_FRAME_COMPLETE,  /* one whole message is at the start of the buffer */
  DNS_FRAME_NEED_MORE, /* read more bytes and call again */
  DNS_FRAME_INVALID,   /* the length cannot hold a DNS header: close */
} dns_frame_t;

/* One length-prefixed message at the start of buf[0..len): on
 * DNS_FRAME_COMPLETE, *msg points into buf, *msg_len is its length and
 * *consumed the bytes to drop (2 + *msg_len). On DNS_FRAME_NEED_MORE,
 * *consumed is the whole frame's size when the prefix has arrived (so the
 * caller can size its buffer), else 2. Pure: no allocation. */
dns_frame_t dns_tcp_frame(const uint8_t *buf, size_t len, const uint8_t **msg,
                          size_t *msg_len, size_t *consumed);

/* ---- names -------------------------------------------------------------- */

/* Encodes a presentation-form name ("a.b.c", trailing dot optional, "." or
 * "" for the root; "\." and "\DDD" escapes accepted). Returns 0, or -EINVAL
 * for an empty label, a label over 63 bytes, a name over 255 wire bytes or
 * a bad escape. */
int dns_name_from_text(const char *text, size_t len, dns_name_t *out);

/* Writes name in presentation form to out (size bytes, NUL-terminated):
 * no trailing dot, "." for the root; '.', '\\' and bytes outside
 * printable ASCII escaped as "\." or "\DDD", so the text always names the
 * same labels. With lowercase, A-Z become a-z. Returns the length, or
 * -ENOSPC (DNS_NAME_TEXT_MAX always suffices). */
int dns_name_to_text(const dns_name_t *name, char *out, size_t size,
                     bool lowercase);

/* True when a and b are the same name, ASCII case ignored. */
bool dns_name_equal(const dns_name_t *a, const dns_name_t *b);

/* True when name equals zone or lies below it, by labels, ASCII case
 * ignored. */
bool dns_name_is_under(const dns_name_t *name, const dns_name_t *zone);

/* Builds label "." parent into out; -EINVAL when label is empty, over 63
 * bytes, or the result would exceed 255 wire bytes. */
int dns_name_prepend(const dns_name_t *parent, const char *label, size_t len,
                     dns_name_t *out);

/* ---- writing ------------------------------------------------------------ */

#define DNS_WRITER_MAX_NAMES 64

/* Builds a message into a caller's buffer. A write that does not fit sets
 * too_big and writes nothing, and every later write is ignored, so callers
 * write a whole answer and check too_big once at the end. Names are
 * compressed against earlier names in the buffer (case-sensitively, so a
 * pointer never changes the case a client sees). */
typedef struct dns_writer {
  uint8_t *buf;
  size_t cap;
  size_t len;
  bool too_big;
  size_t n_names;
  uint16_t names[DNS_WRITER_MAX_NAMES]; /* offsets of labels written whole */
} dns_writer_t;

void dns_writer_init(dns_writer_t *w, uint8_t *buf, size_t cap);

/* Forgets everything after offset len (including remembered names there)
 * and clears too_big. */
void dns_writer_rewind(dns_writer_t *w, size_t len);

void dns_write_u8(dns_writer_t *w, uint8_t v);
void dns_write_u16(dns_writer_t *w, uint16_t v);
void dns_write_u32(dns_writer_t *w, uint32_t v);
void dns_write_bytes(dns_writer_t *w, const void *p, size_t n);

/* Overwrites 2 bytes already written at offset (no-op if they were not). */
void dns_writer_patch_u16(dns_writer_t *w, size_t offset, uint16_t v);

void dns_write_header(dns_writer_t *w, const dns_header_t *h);

/* Writes name, compressed against names written before. */
void dns_write_name(dns_writer_t *w, const dns_name_t *name);

/* Writes q's name uncompressed (but remembered for later pointers), then
 * its type and class: the bytes a client sent, case and all. */
void dns_write_question(dns_writer_t *w, const dns_question_t *q);

/* Writes an RR's owner, type, class, TTL and a placeholder rdlength;
 * returns the placeholder's offset for dns_write_rr_end. */
size_t dns_write_rr_begin(dns_writer_t *w, const dns_name_t *owner,
                          uint16_t type, uint16_t rclass, uint32_t ttl);

/* Patches the rdlength of the RR begun at rdlength_at to cover what was
 * written since. */
void dns_write_rr_end(dns_writer_t *w, size_t rdlength_at);

void dns_write_rr_a(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                    const uint8_t addr[4]);
void dns_write_rr_aaaa(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                       const uint8_t addr[16]);
void dns_write_rr_ns(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                     const dns_name_t *host);

typedef struct dns_soa {
  dns_name_t mname, rname;
  uint32_t serial, refresh, retry, expire, minimum;
} dns_soa_t;

void dns_write_rr_soa(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                      const dns_soa_t *soa);

/* Writes an OPT record (root owner, no options). ext_rcode is the upper 8
 * bits of a 12-bit RCODE. */
void dns_write_rr_opt(dns_writer_t *w, uint16_t udp_size, uint8_t ext_rcode,
                      uint8_t version, bool dnssec_ok);

/* The same with options: options[0..len) as the record's data. */
void dns_write_rr_opt_options(dns_writer_t *w, uint16_t udp_size,
                              uint8_t ext_rcode, uint8_t version,
                              bool dnssec_ok, const uint8_t *options,
                              size_t len);

/* ---- cookies (RFC 7873, RFC 9018) --------------------------------------- */

/* SipHash-2-4 of in[0..len) under key. */
uint64_t dns_siphash24(const uint8_t key[16], const uint8_t *in, size_t len);

/* A fresh 16-byte server cookie for a client cookie from peer at time now
 * (Unix seconds): version 1, the time, and a SipHash under secret. */
void dns_cookie_make(const uint8_t secret[16], const uint8_t client[8],
                     const struct sockaddr *peer, uint32_t now,
                     uint8_t out[16]);

/* True when server[0..server_len) is a cookie we made for this client
 * cookie and peer within the last hour. */
bool dns_cookie_valid(const uint8_t secret[16], const uint8_t client[8],
                      const uint8_t *server, size_t server_len,
                      const struct sockaddr *peer, uint32_t now);

/* The process's random cookie secret (made on the first call). */
const uint8_t *dns_cookie_secret(void);

/* ---- answering ---------------------------------------------------------- */

/* The question's name looked up ahead of the answer, as reg_lookup gives
 * it: the UDP server looks up a whole batch's names at once
 * (reg_lookup_many), and the answer takes the device from here rather
 * than look the same name up again. Valid only as long as reg_lookup's
 * pointer: nothing between the batch's lookup and its answers may pass a
 * quiescent point or go offline. */
typedef struct dns_lookup_hint {
  const char *name; /* normalised text, as the answer looks it up */
  size_t len;
  const reg_device_t *device;
} dns_lookup_hint_t;

/* A message's first question, decoded ahead of its answer: the UDP server
 * decodes a batch's questions to look their names up together, and
 * whoever reads the message next starts after it rather than decode it
 * again. It must be read from the very message it travels with. */
typedef struct dns_question_ahead {
  dns_question_t question;
  size_t end;       /* offset just past the question */
  const char *text; /* its name as lowercase text, or NULL: too long */
  size_t text_len;
} dns_question_ahead_t;

/* Reads msg's first question into out, its name's lowercase text into
 * text[0..size) when it fits (out->text points there; NULL when it does
 * not). False when msg has no question or it does not parse. */
bool dns_question_read_ahead(const uint8_t *msg, size_t len, char *text,
                             size_t size, dns_question_ahead_t *out);

/* How a query arrived, for dns_answer_build. */
typedef struct dns_answer_opts {
  bool tcp;       /* the answer may fill cap and is never truncated */
  size_t reserve; /* bytes to leave free at the end (room for a TSIG) */
  /* Server cookies: answered when a query carries a COOKIE option and
   * cookie_secret (16 bytes) is set; peer and now go into the cookie. */
  const uint8_t *cookie_secret;
  const struct sockaddr *peer;
  uint32_t now;
  bool *cookie_ok; /* if set: true when the query's server cookie is ours */
  const dns_lookup_hint_t *hint;     /* or NULL */
  const dns_question_ahead_t *ahead; /* or NULL */
} dns_answer_opts_t;

/* dns_answer_query with the transport spelled out: over UDP the answer
 * fits the client's EDNS size (or 512), minus opts->reserve; over TCP it
 * may use cap minus opts->reserve. */
size_t dns_answer_build(const reg_config_t *config, const reg_t *reg,
                        const uint8_t *query, size_t len, uint8_t *out,
                        size_t cap, const dns_answer_opts_t *opts);

/* The SOA record of zone, whose apex is apex, with serial. */
void dns_soa_build(const reg_zone_t *zone, const dns_name_t *apex,
                   uint32_t serial, dns_soa_t *soa);

/* The serial of zone in the registry's published state number published:
 * the zone's serial at load (the Unix time then) plus the number. The
 * notifier publishes at most once a second and never sooner than the
 * serial's own second has passed, so a serial names one version of the
 * zone, across restarts too (as long as the clock does not step back). */
uint32_t dns_zone_serial_at(const reg_zone_t *zone, uint64_t published);

/* The serial zone has now: dns_zone_serial_at reg's published state. */
uint32_t dns_zone_serial(const reg_zone_t *zone, const reg_t *reg);

/* The zone holding name (the one with the most labels among those it lies
 * in) and its apex, or NULL. */
const reg_zone_t *dns_zone_find(const reg_config_t *config,
                                const dns_name_t *name, dns_name_t *apex);

/* ---- TSIG (RFC 8945) ---------------------------------------------------- */

/* The TSIG state of one exchange. key NULL: the request was not signed, and
 * neither is anything sent back. */
/* TSIG errors (RFC 8945 3), in the TSIG record's Error field. */
enum {
  DNS_TSIG_ERR_BADSIG = 16,
  DNS_TSIG_ERR_BADKEY = 17,
  DNS_TSIG_ERR_BADTIME = 18,
};

typedef struct dns_tsig_ctx {
  const reg_tsig_key_t *key;
  dns_name_t key_name; /* as the request wrote it */
  dns_name_t alg_name;
  uint8_t mac[64]; /* the request's MAC, then each signed message's */
  size_t mac_len;
  uint64_t time_signed; /* what our signatures say (the request's on BADTIME) */
  uint16_t fudge;
  uint16_t error;      /* TSIG error to send: 0, BADSIG, BADKEY, BADTIME */
  uint64_t other_time; /* BADTIME: our clock, in the Other Data */
  unsigned n_signed;   /* messages signed so far in this exchange */
} dns_tsig_ctx_t;

typedef enum dns_tsig_status {
  DNS_TSIG_NONE,    /* the message carries no TSIG */
  DNS_TSIG_OK,      /* signed with a key we know, MAC right, time in range */
  DNS_TSIG_FORMERR, /* a TSIG record that is malformed or not last */
  DNS_TSIG_BADKEY,  /* a key name or algorithm we do not have */
  DNS_TSIG_BADSIG,  /* the MAC does not match */
  DNS_TSIG_BADTIME, /* MAC right, but signed too far from now */
} dns_tsig_status_t;

/* Checks the TSIG of a request msg[0..len) against config's keys at time
 * now (Unix seconds) and fills ctx for signing the reply: on OK with the
 * key and the request's MAC; on BADKEY, BADSIG and BADTIME with the error
 * to report. ahead (or NULL) is msg's first question, already read. Pure:
 * reads msg only. */
dns_tsig_status_t dns_tsig_verify(const reg_config_t *config,
                                  const uint8_t *msg, size_t len,
                                  const dns_question_ahead_t *ahead,
                                  uint64_t now, dns_tsig_ctx_t *ctx);

/* Checks the TSIG of msg[0..len), the answer to a request of ours that
 * dns_tsig_sign signed with request (so request->mac is that request's
 * MAC, which the answer's MAC must cover: RFC 8945 5.3). DNS_TSIG_OK only
 * for an answer signed with the same key and algorithm, MAC right, time
 * within its fudge of now; DNS_TSIG_NONE for an unsigned answer; BADKEY
 * for another key or algorithm; BADSIG for a wrong or missing MAC;
 * BADTIME; FORMERR. *error gets the TSIG error the answer reports (0 when
 * it has no TSIG). Pure: reads msg only. */
dns_tsig_status_t dns_tsig_verify_answer(const dns_tsig_ctx_t *request,
                                         const uint8_t *msg, size_t len,
                                         uint64_t now, uint16_t *error);

/* Prepares ctx to sign a request of our own (a NOTIFY) with key. */
void dns_tsig_ctx_for_key(dns_tsig_ctx_t *ctx, const reg_tsig_key_t *key,
                          uint64_t now);

/* Bytes a TSIG record appended by dns_tsig_sign may take (0 unsigned). */
size_t dns_tsig_reserve(const dns_tsig_ctx_t *ctx);

/* Appends a TSIG record to the message msg[0..len) (room: cap) and counts
 * it in ARCOUNT: signed with ctx->key, chained to ctx->mac (the request's
 * MAC for the first message; after that the previous message's, with only
 * the timers digested, RFC 8945 5.3.1). With BADKEY or BADSIG, or no key,
 * the record carries no MAC; with no key and no error nothing is added.
 * Returns the new length, or len when there is no room. */
size_t dns_tsig_sign(dns_tsig_ctx_t *ctx, uint8_t *msg, size_t len, size_t cap);

/* One request as a server received it. */
typedef struct dns_request {
  const reg_config_t *config;
  const reg_t *reg;
  const struct sockaddr *peer; /* the client, for the transfer ACL */
  bool tcp;
  uint64_t now;                 /* Unix seconds, for TSIG and cookies */
  const uint8_t *cookie_secret; /* 16 bytes, or NULL: no server cookies */
  bool *cookie_ok; /* if set: true when the query's server cookie is ours,
                    * so the client's address is not spoofed */
  const uint8_t *msg;
  size_t len;
  const dns_lookup_hint_t *hint;     /* or NULL */
  const dns_question_ahead_t *ahead; /* or NULL */
} dns_request_t;

/* A zone transfer in progress on one TCP connection. */
typedef struct dns_xfr dns_xfr_t;

/* Builds the reply to req into out (cap bytes, at least 512). Returns its
 * length, or 0 when nothing must be sent. When req starts a zone transfer
 * over TCP that the ACL allows, the reply is the transfer's first message
 * and *xfr is set to a transfer the caller drives with dns_xfr_next and
 * frees with dns_xfr_free; otherwise *xfr is NULL. */
size_t dns_respond(const dns_request_t *req, uint8_t *out, size_t cap,
                   dns_xfr_t **xfr);

/* The transfer's next message into out (cap bytes, at least 16 KiB), or 0
 * once the closing SOA has been sent. */
size_t dns_xfr_next(dns_xfr_t *xfr, uint8_t *out, size_t cap);

/* Frees xfr; NULL is fine. */
void dns_xfr_free(dns_xfr_t *xfr);

/* What a transfer sends. */
typedef enum dns_xfr_form {
  DNS_XFR_WHOLE,       /* the zone: AXFR, or an IXFR the history cannot serve */
  DNS_XFR_INCREMENTAL, /* IXFR: the batches since the client's serial */
  DNS_XFR_UP_TO_DATE,  /* IXFR from our serial (or later): the SOA alone */
} dns_xfr_form_t;

/* A transfer of zone (at apex) answering query/question, as of reg's
 * published state. ixfr_serial NULL: AXFR. Otherwise an IXFR from the
 * client's serial: the batches since, when the history reaches back to it
 * (RFC 1995 4); the whole zone when not. Everything is copied now, so
 * later registry changes do not touch a transfer under way. NULL when the
 * registry was published over faster than it could be read. */
dns_xfr_t *dns_xfr_new(const reg_config_t *config, const reg_t *reg,
                       const reg_zone_t *zone, const dns_name_t *apex,
                       const dns_header_t *query,
                       const dns_question_t *question,
                       const uint32_t *ixfr_serial);

/* The serial the transfer ends at. */
uint32_t dns_xfr_serial(const dns_xfr_t *xfr);

/* What the transfer sends; for DNS_XFR_INCREMENTAL, *from_serial (if
 * set) is the client's serial. */
dns_xfr_form_t dns_xfr_form(const dns_xfr_t *xfr, uint32_t *from_serial);

/* The transfer's TSIG state, for the caller to fill before the first
 * message. */
dns_tsig_ctx_t *dns_xfr_tsig(dns_xfr_t *xfr);

/* ---- response rate limiting -------------------------------------------- */

typedef struct dns_rrl dns_rrl_t;

typedef enum dns_rrl_action {
  DNS_RRL_SEND, /* under the limit */
  DNS_RRL_DROP, /* over it: send nothing */
  DNS_RRL_SLIP, /* over it, but send a truncated answer (TC=1) */
} dns_rrl_action_t;

/* A table of at least slots per-second counters; seed keys the hash so
 * sources cannot aim at one slot. Freed with dns_rrl_free. */
dns_rrl_t *dns_rrl_new(size_t slots, uint64_t seed);
void dns_rrl_free(dns_rrl_t *rrl);

/* Counts one response to src (its /24 or /56) in second now and says what
 * to do with it: send while the prefix has had at most per_second
 * responses this second, then drop, slipping every slip-th (0: none) out
 * truncated. Lock-free; any thread. */
dns_rrl_action_t dns_rrl_account(dns_rrl_t *rrl, const struct sockaddr *src,
                                 uint32_t now, uint32_t per_second,
                                 uint32_t slip);

/* Cuts answer[0..len) down to its header and question with TC set, in
 * place; returns the new length (0 if it is not a DNS message). */
size_t dns_rrl_slip(uint8_t *answer, size_t len);

/* ---- servers ------------------------------------------------------------ */

typedef struct dns_tcp dns_tcp_t;

/* Opens one SO_REUSEPORT TCP listener per dns.listen address on loop.
 * config and reg are borrowed. Returns 0 and *out, or a negative errno /
 * UV_E* (logged). */
int dns_tcp_start(uv_loop_t *loop, const reg_config_t *config, const reg_t *reg,
                  dns_tcp_t **out);

/* Closes the listeners and every open connection; frees itself once libuv
 * is done with the handles. */
void dns_tcp_stop(dns_tcp_t *tcp);

#endif
