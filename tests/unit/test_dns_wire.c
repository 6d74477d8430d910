/* SPDX-License-Identifier: MIT */
/* test_dns_wire.c -- the DNS codec: round trips and every malformed case */
#include "dns/dns_int.h"
#include "tests/test.h"

#include <errno.h>

/* A message under construction, by hand, so the tests do not trust the
 * writer they check. */
typedef struct msg {
  uint8_t b[1024];
  size_t len;
} msg_t;

static void put(msg_t *m, const void *p, size_t n) {
  ASSERT(m->len + n <= sizeof(m->b));
  memcpy(m->b + m->len, p, n);
  m->len += n;
}

static void put_u16(msg_t *m, uint16_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  put(m, b, 2);
}

static void put_header(msg_t *m, uint16_t qd, uint16_t an, uint16_t ns,
                       uint16_t ar) {
  m->len = 0;
  put_u16(m, 0x1234);
  put_u16(m, DNS_FLAG_RD);
  put_u16(m, qd);
  put_u16(m, an);
  put_u16(m, ns);
  put_u16(m, ar);
}

#define PUT_STR(m, s) put((m), (s), sizeof(s) - 1)

static dns_name_t name_of(const char *text) {
  dns_name_t n;
  ASSERT_EQ(dns_name_from_text(text, strlen(text), &n), 0);
  return n;
}

static void assert_name_text(const dns_name_t *n, const char *want) {
  char text[DNS_NAME_TEXT_MAX];
  int len = dns_name_to_text(n, text, sizeof(text), false);
  ASSERT(len >= 0);
  ASSERT_MEM_STR(text, (size_t)len, want);
}

/* Parses a whole message; returns the first error. */
static dns_wire_t parse_message(const uint8_t *b, size_t len) {
  dns_header_t h;
  dns_wire_t s = dns_header_parse(b, len, &h);
  size_t pos = DNS_HEADER_SIZE;
  for (unsigned i = 0; s == DNS_WIRE_OK && i < h.qdcount; i++) {
    dns_question_t q;
    s = dns_question_parse(b, len, &pos, &q);
  }
  unsigned n_rr = (unsigned)h.ancount + h.nscount + h.arcount;
  for (unsigned i = 0; s == DNS_WIRE_OK && i < n_rr; i++) {
    dns_rr_t rr;
    s = dns_rr_parse(b, len, &pos, &rr);
  }
  return s;
}

/* ---- header ------------------------------------------------------------- */

static void test_header_round_trip(void) {
  dns_header_t h = {.id = 0xBEEF,
                    .flags = DNS_FLAG_QR | DNS_FLAG_OPCODE(5) | DNS_FLAG_AA |
                             DNS_FLAG_RCODE(3),
                    .qdcount = 1,
                    .ancount = 2,
                    .nscount = 3,
                    .arcount = 0xFFFF};
  uint8_t b[DNS_HEADER_SIZE];
  dns_header_t back;

  dns_header_encode(&h, b);
  ASSERT_EQ(b[0], 0xBE);
  ASSERT_EQ(b[1], 0xEF);
  ASSERT_EQ(dns_header_parse(b, sizeof(b), &back), DNS_WIRE_OK);
  ASSERT_EQ(back.id, 0xBEEF);
  ASSERT_EQ(back.flags, h.flags);
  ASSERT_EQ(dns_header_opcode(&back), 5);
  ASSERT_EQ(dns_header_rcode(&back), 3);
  ASSERT_EQ(back.qdcount, 1);
  ASSERT_EQ(back.ancount, 2);
  ASSERT_EQ(back.nscount, 3);
  ASSERT_EQ(back.arcount, 0xFFFF);
  for (size_t n = 0; n < DNS_HEADER_SIZE; n++)
    ASSERT_EQ(dns_header_parse(b, n, &back), DNS_WIRE_TRUNCATED);
}

/* ---- names from and to text --------------------------------------------- */

static void test_name_text_round_trip(void) {
  static const char *names[] = {
      "demo.ddport.test",   "DeMo.DDport.TEST",    "a",
      "*.wild.ddport.test", "_acme-challenge.x.y", "a\\.b.c",
      "back\\\\slash",      "nul\\000byte.x",      "sp\\032ace.\\255",
  };
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    dns_name_t n = name_of(names[i]);
    assert_name_text(&n, names[i]);
  }

  dns_name_t n = name_of("demo.ddport.test.");
  ASSERT_EQ(n.len, 18);
  ASSERT_EQ(n.labels, 3);
  ASSERT(memcmp(n.wire, "\4demo\6ddport\4test", 18) == 0);
  assert_name_text(&n, "demo.ddport.test");

  n = name_of(".");
  ASSERT_EQ(n.len, 1);
  ASSERT_EQ(n.labels, 0);
  assert_name_text(&n, ".");
  n = name_of("");
  ASSERT_EQ(n.len, 1);

  /* Escapes decode to the byte they name. */
  n = name_of("a\\.b.c");
  ASSERT_EQ(n.labels, 2);
  ASSERT(memcmp(n.wire, "\3a.b\1c", 7) == 0);
  n = name_of("\\065\\066");
  ASSERT(memcmp(n.wire, "\2AB", 4) == 0);

  char text[DNS_NAME_TEXT_MAX];
  n = name_of("DeMo.DDport.TEST");
  ASSERT_EQ(dns_name_to_text(&n, text, sizeof(text), true), 16);
  ASSERT_STR_EQ(text, "demo.ddport.test");
  ASSERT_EQ(dns_name_to_text(&n, text, 16, false), -ENOSPC);
  ASSERT_EQ(dns_name_to_text(&n, text, 17, false), 16);
  ASSERT_EQ(dns_name_to_text(&n, text, 0, false), -ENOSPC);
}

static void test_name_text_limits(void) {
  char text[400];
  dns_name_t n;

  /* 63 bytes is the longest label. */
  memset(text, 'a', 63);
  ASSERT_EQ(dns_name_from_text(text, 63, &n), 0);
  memset(text, 'a', 64);
  ASSERT_EQ(dns_name_from_text(text, 64, &n), -EINVAL);

  /* 63+63+63+61 labels: 255 bytes with lengths and the root. */
  memset(text, 'b', sizeof(text));
  text[63] = text[127] = text[191] = '.';
  ASSERT_EQ(dns_name_from_text(text, 253, &n), 0);
  ASSERT_EQ(n.len, 255);
  ASSERT_EQ(n.labels, 4);
  ASSERT_EQ(dns_name_from_text(text, 254, &n), -EINVAL);

  ASSERT_EQ(dns_name_from_text("a..b", 4, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text(".a", 2, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text("..", 2, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text("a\\", 2, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text("a\\25", 4, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text("a\\256", 5, &n), -EINVAL);
  ASSERT_EQ(dns_name_from_text("a\\2x5", 5, &n), -EINVAL);
}

static void test_name_compare(void) {
  dns_name_t zone = name_of("ddport.test");
  dns_name_t a = name_of("DeMo.DDport.TEST");
  dns_name_t b = name_of("demo.ddport.test");
  dns_name_t other = name_of("demoddport.test");
  dns_name_t dotted = name_of("a\\.ddport.test");
  dns_name_t root = name_of(".");

  ASSERT(dns_name_equal(&a, &b));
  ASSERT(!dns_name_equal(&a, &zone));
  ASSERT(dns_name_is_under(&a, &zone));
  ASSERT(dns_name_is_under(&zone, &zone));
  ASSERT(!dns_name_is_under(&zone, &a));
  ASSERT(!dns_name_is_under(&other, &zone));
  /* One label "a.ddport" under "test": not in ddport.test. */
  ASSERT(!dns_name_is_under(&dotted, &zone));
  ASSERT(dns_name_is_under(&a, &root));

  dns_name_t ns;
  ASSERT_EQ(dns_name_prepend(&zone, "ns", 2, &ns), 0);
  assert_name_text(&ns, "ns.ddport.test");
  ASSERT_EQ(ns.labels, 3);
  ASSERT_EQ(dns_name_prepend(&zone, "x.y", 3, &ns), 0);
  assert_name_text(&ns, "x\\.y.ddport.test");
  ASSERT_EQ(dns_name_prepend(&zone, "", 0, &ns), -EINVAL);

  char label[64];
  memset(label, 'c', sizeof(label));
  ASSERT_EQ(dns_name_prepend(&zone, label, 64, &ns), -EINVAL);
  dns_name_t big = zone;
  int err = 0;
  while (err == 0)
    err = dns_name_prepend(&big, label, 63, &big);
  ASSERT_EQ(err, -EINVAL);
  ASSERT(big.len <= DNS_NAME_WIRE_MAX);
  assert_name_text(&zone, "ddport.test");
}

/* ---- decoding ----------------------------------------------------------- */

static void test_question_decode(void) {
  msg_t m;
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\4DeMo\6DDport\4TEST\0");
  put_u16(&m, DNS_TYPE_AAAA);
  put_u16(&m, DNS_CLASS_IN);

  dns_question_t q;
  size_t pos = DNS_HEADER_SIZE;
  ASSERT_EQ(dns_question_parse(m.b, m.len, &pos, &q), DNS_WIRE_OK);
  ASSERT_EQ(pos, m.len);
  ASSERT_EQ(q.qtype, DNS_TYPE_AAAA);
  ASSERT_EQ(q.qclass, DNS_CLASS_IN);
  ASSERT_EQ(q.name.labels, 3);
  ASSERT_EQ(q.name.len, 18);
  /* Case kept as sent. */
  assert_name_text(&q.name, "DeMo.DDport.TEST");
  ASSERT(memcmp(q.name.wire, m.b + DNS_HEADER_SIZE, 18) == 0);
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_OK);

  /* The root name. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\0\0\2\0\1");
  pos = DNS_HEADER_SIZE;
  ASSERT_EQ(dns_question_parse(m.b, m.len, &pos, &q), DNS_WIRE_OK);
  ASSERT_EQ(q.name.labels, 0);
  ASSERT_EQ(q.name.len, 1);
  ASSERT_EQ(q.qtype, DNS_TYPE_NS);
}

static void test_compression_pointers(void) {
  msg_t m;
  put_header(&m, 1, 2, 0, 0);
  /* 12: www.example.com; 16: example.com */
  PUT_STR(&m, "\3www\7example\3com\0");
  put_u16(&m, DNS_TYPE_NS);
  put_u16(&m, DNS_CLASS_IN);
  /* An answer owned by a pointer to the question, with NS rdata
   * "ns1" + pointer to example.com. */
  size_t rr1 = m.len;
  PUT_STR(&m, "\xC0\x0C\0\2\0\1\0\0\x0E\x10\0\6\3ns1\xC0\x10");
  /* A second one whose rdata points at the first rdata's name: a chain of
   * two jumps. */
  PUT_STR(&m, "\xC0\x10\0\2\0\1\0\0\x0E\x10\0\5\2ns\xC0");
  uint8_t ptr = (uint8_t)(rr1 + 12);
  put(&m, &ptr, 1);

  dns_question_t q;
  dns_rr_t rr;
  dns_name_t n;
  size_t pos = DNS_HEADER_SIZE;
  ASSERT_EQ(dns_question_parse(m.b, m.len, &pos, &q), DNS_WIRE_OK);
  ASSERT_EQ(dns_rr_parse(m.b, m.len, &pos, &rr), DNS_WIRE_OK);
  assert_name_text(&rr.name, "www.example.com");
  ASSERT_EQ(rr.type, DNS_TYPE_NS);
  ASSERT_EQ(rr.ttl, 3600);
  ASSERT_EQ(rr.rdlength, 6);
  size_t rd = rr.rdata;
  ASSERT_EQ(dns_name_decode(m.b, m.len, &rd, &n), DNS_WIRE_OK);
  ASSERT_EQ(rd, rr.rdata + rr.rdlength);
  assert_name_text(&n, "ns1.example.com");

  ASSERT_EQ(dns_rr_parse(m.b, m.len, &pos, &rr), DNS_WIRE_OK);
  assert_name_text(&rr.name, "example.com");
  rd = rr.rdata;
  ASSERT_EQ(dns_name_decode(m.b, m.len, &rd, &n), DNS_WIRE_OK);
  assert_name_text(&n, "ns.ns1.example.com");
  ASSERT_EQ(n.labels, 4);
  ASSERT_EQ(pos, m.len);
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_OK);
}

static dns_wire_t decode_at(const msg_t *m, size_t at) {
  dns_name_t n;
  size_t pos = at;
  dns_wire_t s = dns_name_decode(m->b, m->len, &pos, &n);
  if (s != DNS_WIRE_OK)
    ASSERT_EQ(pos, at);
  return s;
}

static void test_bad_pointers(void) {
  msg_t m;

  /* A pointer to itself. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\xC0\x0C");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_BAD_POINTER);

  /* A label, then a pointer back to that label: an endless name. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\0\0\1\0\1"); /* 12: question "a" */
  PUT_STR(&m, "\1b\xC0\x13");   /* 19: "b" + pointer to 19 */
  ASSERT_EQ(decode_at(&m, 19), DNS_WIRE_BAD_POINTER);

  /* Two runs pointing at each other: 19 -> 23 -> 19. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\0\0\1\0\1");
  PUT_STR(&m, "\1b\xC0\x17"); /* 19 */
  PUT_STR(&m, "\1c\xC0\x13"); /* 23 */
  ASSERT_EQ(decode_at(&m, 23), DNS_WIRE_BAD_POINTER);
  ASSERT_EQ(decode_at(&m, 19), DNS_WIRE_BAD_POINTER);

  /* Forward, beyond the end of the message. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\xC0\xFF");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_BAD_POINTER);
  PUT_STR(&m, "\xFF\xFF");
  ASSERT_EQ(decode_at(&m, 16), DNS_WIRE_BAD_POINTER);

  /* Forward but inside the message. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\xC0\x0E\1a\0");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_BAD_POINTER);

  /* Into the header. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\0\0\1\0\1\xC0\x04");
  ASSERT_EQ(decode_at(&m, 19), DNS_WIRE_BAD_POINTER);

  /* A pointer cut in half. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\0\0\1\0\1\xC0");
  ASSERT_EQ(decode_at(&m, 19), DNS_WIRE_TRUNCATED);

  /* A long chain of pointers, each one back to the previous: legal in
   * form, but past DNS_NAME_MAX_JUMPS. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\1a\0");
  for (size_t i = 0; i < 200; i++) {
    size_t prev = m.len - (i == 0 ? 3 : 2);
    put_u16(&m, (uint16_t)(0xC000 | prev));
  }
  /* The tenth pointer needs ten jumps: fine. */
  ASSERT_EQ(decode_at(&m, 15 + 2 * 9), DNS_WIRE_OK);
  ASSERT_EQ(decode_at(&m, 15 + 2 * DNS_NAME_MAX_JUMPS), DNS_WIRE_BAD_POINTER);
}

static void test_bad_labels(void) {
  msg_t m;
  uint8_t label[64];
  memset(label, 'x', sizeof(label));

  /* 64: what would be a longer label is the reserved 01 prefix. */
  put_header(&m, 1, 0, 0, 0);
  uint8_t l = 64;
  put(&m, &l, 1);
  put(&m, label, 64);
  put(&m, "\0", 1);
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_LABEL_TOO_LONG);

  /* The 10 prefix, also reserved. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\x80\0");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_LABEL_TOO_LONG);

  /* Four labels of 63: 257 bytes. */
  put_header(&m, 1, 0, 0, 0);
  for (int i = 0; i < 4; i++) {
    l = 63;
    put(&m, &l, 1);
    put(&m, label, 63);
  }
  put(&m, "\0", 1);
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_NAME_TOO_LONG);

  /* 63+63+63+61: exactly 255 is fine. */
  m.b[12 + 3 * 64] = 61;
  memmove(m.b + 12 + 3 * 64 + 62, "\0", 1);
  m.len = 12 + 3 * 64 + 63;
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_OK);

  /* 63+63+63+62: 256, one too many. */
  m.b[12 + 3 * 64] = 62;
  m.b[12 + 3 * 64 + 62] = 'x';
  m.b[12 + 3 * 64 + 63] = 0;
  m.len = 12 + 3 * 64 + 64;
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_NAME_TOO_LONG);
  m.b[12 + 3 * 64] = 61;
  m.b[12 + 3 * 64 + 62] = 0;
  m.len = 12 + 3 * 64 + 63;

  /* Too long only once a pointer is followed. */
  size_t second = m.len;
  l = 20;
  put(&m, &l, 1);
  put(&m, label, 20);
  put_u16(&m, 0xC000 | 12);
  ASSERT_EQ(decode_at(&m, second), DNS_WIRE_NAME_TOO_LONG);

  /* A label running past the end. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\5ab");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_TRUNCATED);
  /* No root label. */
  put_header(&m, 1, 0, 0, 0);
  PUT_STR(&m, "\2ab");
  ASSERT_EQ(decode_at(&m, 12), DNS_WIRE_TRUNCATED);
  ASSERT_EQ(decode_at(&m, m.len), DNS_WIRE_TRUNCATED);
}

static void build_edns_query(msg_t *m) {
  put_header(m, 1, 0, 0, 1);
  PUT_STR(m, "\4demo\6ddport\4test\0");
  put_u16(m, DNS_TYPE_A);
  put_u16(m, DNS_CLASS_IN);
  /* OPT with a cookie option. */
  PUT_STR(m, "\0\0\x29\x10\0\0\0\x80\0\0\x0C\0\x0A\0\x08"
             "\1\2\3\4\5\6\7\x08");
}

static void test_truncated_everywhere(void) {
  msg_t m;
  build_edns_query(&m);
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_OK);
  for (size_t n = 0; n < m.len; n++)
    ASSERT_NE(parse_message(m.b, n), DNS_WIRE_OK);

  /* The same with compression in the additional section. */
  put_header(&m, 1, 0, 0, 1);
  PUT_STR(&m, "\4demo\6ddport\4test\0\0\1\0\1");
  PUT_STR(&m, "\xC0\x0C\0\1\0\1\0\0\0\x3C\0\4\x7F\0\0\1");
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_OK);
  for (size_t n = 0; n < m.len; n++)
    ASSERT_NE(parse_message(m.b, n), DNS_WIRE_OK);
}

static void test_bad_counts(void) {
  msg_t m;
  build_edns_query(&m);
  /* QDCOUNT 2 with one question: the OPT is read as a question, then the
   * message runs out. */
  m.b[5] = 2;
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_TRUNCATED);
  m.b[5] = 0xFF;
  m.b[4] = 0xFF;
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_TRUNCATED);
  /* ARCOUNT 2. */
  build_edns_query(&m);
  m.b[11] = 2;
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_TRUNCATED);
  /* rdlength past the end. */
  build_edns_query(&m);
  m.b[m.len - 13] = 13;
  ASSERT_EQ(parse_message(m.b, m.len), DNS_WIRE_TRUNCATED);
}

/* ---- writing ------------------------------------------------------------ */

static void test_writer_bounds(void) {
  uint8_t buf[32];
  dns_writer_t w;

  memset(buf, 0xAA, sizeof(buf));
  dns_writer_init(&w, buf, 16);
  dns_write_u32(&w, 0x01020304);
  dns_write_u16(&w, 0x0506);
  dns_write_bytes(&w, "abcdefgh", 8);
  ASSERT(!w.too_big);
  ASSERT_EQ(w.len, 14);
  dns_write_u32(&w, 0xFFFFFFFF); /* does not fit: nothing written */
  ASSERT(w.too_big);
  ASSERT_EQ(w.len, 14);
  dns_write_u8(&w, 1); /* would fit, but a hole would be worse */
  ASSERT_EQ(w.len, 14);
  for (size_t i = 14; i < sizeof(buf); i++)
    ASSERT_EQ(buf[i], 0xAA);

  dns_writer_rewind(&w, 4);
  ASSERT(!w.too_big);
  ASSERT_EQ(w.len, 4);
  dns_write_u16(&w, 0x0708);
  ASSERT_EQ(buf[4], 7);
  dns_writer_patch_u16(&w, 0, 0xCAFE);
  ASSERT_EQ(buf[0], 0xCA);
  dns_writer_patch_u16(&w, 5, 0xFFFF); /* past the end: ignored */
  ASSERT_EQ(buf[5], 0x08);

  /* Names never overflow either, at any capacity. */
  dns_name_t n = name_of("www.example.com");
  for (size_t cap = 0; cap < 20; cap++) {
    memset(buf, 0xAA, sizeof(buf));
    dns_writer_init(&w, buf, cap);
    dns_write_name(&w, &n);
    ASSERT(w.len <= cap);
    ASSERT_EQ(w.too_big, cap < n.len);
    for (size_t i = cap; i < sizeof(buf); i++)
      ASSERT_EQ(buf[i], 0xAA);
  }
}

static void test_writer_compression(void) {
  uint8_t buf[512];
  dns_writer_t w;
  dns_header_t h = {.id = 1, .qdcount = 1};
  dns_question_t q = {.name = name_of("DeMo.DDport.TEST"),
                      .qtype = DNS_TYPE_A,
                      .qclass = DNS_CLASS_IN};

  dns_writer_init(&w, buf, sizeof(buf));
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  ASSERT_EQ(w.len, 12 + 18 + 4);
  ASSERT(memcmp(buf + 12, "\4DeMo\6DDport\4TEST\0", 18) == 0);

  /* Same bytes: a pointer to the question. */
  size_t at = w.len;
  dns_write_name(&w, &q.name);
  ASSERT_EQ(w.len, at + 2);
  ASSERT_EQ(buf[at], 0xC0);
  ASSERT_EQ(buf[at + 1], 0x0C);

  /* Different case: not compressed against it, so no client sees case it
   * did not send; the suffix that matches is shared. */
  at = w.len;
  dns_name_t lower = name_of("demo.ddport.TEST");
  dns_write_name(&w, &lower);
  ASSERT_EQ(w.len, at + 5 + 7 + 2);
  ASSERT(memcmp(buf + at, "\4demo\6ddport\xC0\x18", 14) == 0);

  /* A longer name ends in a pointer to the lowercase one. */
  at = w.len;
  dns_name_t ns = name_of("ns1.demo.ddport.TEST");
  dns_write_name(&w, &ns);
  ASSERT_EQ(w.len, at + 4 + 2);
  ASSERT_EQ(buf[at + 4], 0xC0);
  ASSERT_EQ(buf[at + 5], 36);

  /* The root is one byte. */
  at = w.len;
  dns_name_t root = name_of(".");
  dns_write_name(&w, &root);
  ASSERT_EQ(w.len, at + 1);
  ASSERT_EQ(buf[at], 0);

  /* Everything decodes back. */
  size_t pos = 12 + 18 + 4;
  dns_name_t back;
  ASSERT_EQ(dns_name_decode(buf, w.len, &pos, &back), DNS_WIRE_OK);
  assert_name_text(&back, "DeMo.DDport.TEST");
  ASSERT_EQ(dns_name_decode(buf, w.len, &pos, &back), DNS_WIRE_OK);
  assert_name_text(&back, "demo.ddport.TEST");
  ASSERT_EQ(dns_name_decode(buf, w.len, &pos, &back), DNS_WIRE_OK);
  assert_name_text(&back, "ns1.demo.ddport.TEST");
  ASSERT_EQ(dns_name_decode(buf, w.len, &pos, &back), DNS_WIRE_OK);
  assert_name_text(&back, ".");
  ASSERT_EQ(pos, w.len);

  /* Rewinding forgets names written after the mark. */
  dns_writer_rewind(&w, 12 + 18 + 4);
  dns_write_name(&w, &ns);
  ASSERT_EQ(w.len, 12 + 18 + 4 + 4 + 5 + 7 + 2);
}

/* Pointers hold 14 bits: a name written past 16 KiB is never a target. */
static void test_writer_far_names(void) {
  static uint8_t buf[20000];
  static uint8_t filler[0x4000];
  dns_writer_t w;
  dns_name_t n = name_of("far.example");
  dns_name_t back;

  dns_writer_init(&w, buf, sizeof(buf));
  dns_header_t h = {0};
  dns_write_header(&w, &h);
  dns_write_bytes(&w, filler, sizeof(filler));
  size_t first = w.len;
  dns_write_name(&w, &n);
  size_t second = w.len;
  dns_write_name(&w, &n);
  ASSERT(!w.too_big);
  ASSERT_EQ(w.len - second, n.len);
  size_t pos = second;
  ASSERT_EQ(dns_name_decode(buf, w.len, &pos, &back), DNS_WIRE_OK);
  ASSERT(dns_name_equal(&back, &n));
  ASSERT_EQ(second - first, n.len);
}

static uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
}

static void test_rr_round_trip(void) {
  uint8_t buf[1024];
  dns_writer_t w;
  dns_question_t q = {.name = name_of("ddport.test"),
                      .qtype = DNS_TYPE_ANY,
                      .qclass = DNS_CLASS_IN};
  dns_header_t h = {
      .id = 7, .flags = DNS_FLAG_QR, .qdcount = 1, .ancount = 5, .arcount = 1};
  const uint8_t v4[4] = {192, 0, 2, 1};
  const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7};
  dns_soa_t soa = {.mname = name_of("ns1.ddport.test"),
                   .rname = name_of("host\\.master.ddport.test"),
                   .serial = 2024010101,
                   .refresh = 3600,
                   .retry = 600,
                   .expire = 604800,
                   .minimum = 60};
  dns_name_t host = name_of("ns1.ddport.test");

  dns_writer_init(&w, buf, sizeof(buf));
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  dns_write_rr_a(&w, &q.name, 60, v4);
  dns_write_rr_aaaa(&w, &q.name, 61, v6);
  dns_write_rr_ns(&w, &q.name, 62, &host);
  dns_write_rr_soa(&w, &q.name, 63, &soa);
  size_t rd = dns_write_rr_begin(&w, &q.name, DNS_TYPE_TXT, DNS_CLASS_IN, 64);
  dns_write_bytes(&w, "\5hello", 6);
  dns_write_rr_end(&w, rd);
  dns_write_rr_opt(&w, 1232, 1, 0, true);
  ASSERT(!w.too_big);
  ASSERT_EQ(parse_message(buf, w.len), DNS_WIRE_OK);

  dns_header_t back_h;
  dns_question_t back_q;
  dns_rr_t rr;
  dns_name_t n;
  size_t pos = DNS_HEADER_SIZE;
  ASSERT_EQ(dns_header_parse(buf, w.len, &back_h), DNS_WIRE_OK);
  ASSERT_EQ(back_h.ancount, 5);
  ASSERT_EQ(dns_question_parse(buf, w.len, &pos, &back_q), DNS_WIRE_OK);
  ASSERT(dns_name_equal(&back_q.name, &q.name));
  ASSERT_EQ(back_q.qtype, DNS_TYPE_ANY);

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_A);
  ASSERT_EQ(rr.rclass, DNS_CLASS_IN);
  ASSERT_EQ(rr.ttl, 60);
  ASSERT_EQ(rr.rdlength, 4);
  ASSERT(memcmp(buf + rr.rdata, v4, 4) == 0);
  assert_name_text(&rr.name, "ddport.test");
  /* The owner is a pointer to the question. */
  ASSERT_EQ(buf[rr.rdata - 12], 0xC0);
  ASSERT_EQ(buf[rr.rdata - 11], 0x0C);

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_AAAA);
  ASSERT_EQ(rr.ttl, 61);
  ASSERT_EQ(rr.rdlength, 16);
  ASSERT(memcmp(buf + rr.rdata, v6, 16) == 0);

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_NS);
  ASSERT_EQ(rr.ttl, 62);
  ASSERT_EQ(rr.rdlength, 6); /* "ns1" + pointer */
  size_t p = rr.rdata;
  ASSERT_EQ(dns_name_decode(buf, w.len, &p, &n), DNS_WIRE_OK);
  assert_name_text(&n, "ns1.ddport.test");

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_SOA);
  ASSERT_EQ(rr.ttl, 63);
  p = rr.rdata;
  ASSERT_EQ(dns_name_decode(buf, w.len, &p, &n), DNS_WIRE_OK);
  assert_name_text(&n, "ns1.ddport.test");
  ASSERT_EQ(dns_name_decode(buf, w.len, &p, &n), DNS_WIRE_OK);
  assert_name_text(&n, "host\\.master.ddport.test");
  ASSERT_EQ(p + 20, rr.rdata + rr.rdlength);
  ASSERT_EQ(get_u32(buf + p), 2024010101);
  ASSERT_EQ(get_u32(buf + p + 4), 3600);
  ASSERT_EQ(get_u32(buf + p + 8), 600);
  ASSERT_EQ(get_u32(buf + p + 12), 604800);
  ASSERT_EQ(get_u32(buf + p + 16), 60);

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_TXT);
  ASSERT_EQ(rr.rdlength, 6);

  ASSERT_EQ(dns_rr_parse(buf, w.len, &pos, &rr), DNS_WIRE_OK);
  ASSERT_EQ(rr.type, DNS_TYPE_OPT);
  ASSERT_EQ(rr.name.labels, 0);
  ASSERT_EQ(rr.rclass, 1232);
  ASSERT_EQ(rr.ttl, 0x01008000u);
  ASSERT_EQ(rr.rdlength, 0);
  ASSERT_EQ(pos, w.len);
}

static void test_tcp_frame(void) {
  uint8_t b[2 + 300];
  const uint8_t *msg;
  size_t msg_len, consumed;

  memset(b, 0xAB, sizeof b);
  ASSERT_EQ(dns_tcp_frame(b, 0, &msg, &msg_len, &consumed),
            DNS_FRAME_NEED_MORE);
  ASSERT_EQ(consumed, 2);
  b[0] = 0;
  ASSERT_EQ(dns_tcp_frame(b, 1, &msg, &msg_len, &consumed),
            DNS_FRAME_NEED_MORE);
  /* Shorter than a header: no DNS message, close. */
  for (uint8_t n = 0; n < DNS_HEADER_SIZE; n++) {
    b[1] = n;
    ASSERT_EQ(dns_tcp_frame(b, sizeof b, &msg, &msg_len, &consumed),
              DNS_FRAME_INVALID);
  }
  b[0] = 1;
  b[1] = 0x2C; /* 300 */
  for (size_t len = 2; len < sizeof b; len++) {
    ASSERT_EQ(dns_tcp_frame(b, len, &msg, &msg_len, &consumed),
              DNS_FRAME_NEED_MORE);
    ASSERT_EQ(consumed, 302); /* tells the caller how much to buffer */
  }
  ASSERT_EQ(dns_tcp_frame(b, sizeof b, &msg, &msg_len, &consumed),
            DNS_FRAME_COMPLETE);
  ASSERT(msg == b + 2);
  ASSERT_EQ(msg_len, 300);
  ASSERT_EQ(consumed, 302);
  /* The largest frame the prefix can say. */
  b[0] = b[1] = 0xFF;
  ASSERT_EQ(dns_tcp_frame(b, sizeof b, &msg, &msg_len, &consumed),
            DNS_FRAME_NEED_MORE);
  ASSERT_EQ(consumed, 65537);
}

static void test_strerror(void) {
  ASSERT_STR_EQ(dns_wire_strerror(DNS_WIRE_OK), "ok");
  ASSERT_CONTAINS(dns_wire_strerror(DNS_WIRE_BAD_POINTER), "pointer");
  ASSERT_CONTAINS(dns_wire_strerror((dns_wire_t)99), "unknown");
}

int main(void) {
  RUN_TEST(test_header_round_trip);
  RUN_TEST(test_name_text_round_trip);
  RUN_TEST(test_name_text_limits);
  RUN_TEST(test_name_compare);
  RUN_TEST(test_question_decode);
  RUN_TEST(test_compression_pointers);
  RUN_TEST(test_bad_pointers);
  RUN_TEST(test_bad_labels);
  RUN_TEST(test_truncated_everywhere);
  RUN_TEST(test_bad_counts);
  RUN_TEST(test_writer_bounds);
  RUN_TEST(test_writer_compression);
  RUN_TEST(test_writer_far_names);
  RUN_TEST(test_rr_round_trip);
  RUN_TEST(test_tcp_frame);
  RUN_TEST(test_strerror);
  return 0;
}
