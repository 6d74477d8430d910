/* SPDX-License-Identifier: MIT */
/* test_sni.c -- the SNI peek on real and reshaped ClientHellos */
#include "proxy/proxy_int.h"
#include "tests/test.h"

#include <stdint.h>

/* Real ClientHellos captured from openssl s_client and curl (see
 * tests/data/README.md); the data directory comes as argv[1]. */
static const char *data_dir = "tests/data";

typedef struct bytes {
  uint8_t data[40000];
  size_t len;
} bytes_t;

static void load(const char *name, bytes_t *out) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", data_dir, name);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    TEST_FAIL_("cannot open %s", path);
  out->len = fread(out->data, 1, sizeof out->data, f);
  fclose(f);
  ASSERT(out->len > 0);
}

static px_peek_result_t parse(const bytes_t *b, size_t len, px_sni_t *out) {
  return px_sni_parse(b->data, len, out);
}

/* Every strict prefix needs more; the whole names the server. */
static void expect_every_split(const bytes_t *b, const char *name) {
  px_sni_t sni;
  for (size_t i = 0; i < b->len; i++) {
    px_peek_result_t r = parse(b, i, &sni);
    if (r != PX_PEEK_NEED_MORE)
      TEST_FAIL_("prefix %zu/%zu gave %d (%s)", i, b->len, (int)r,
                 sni.why ? sni.why : "");
  }
  ASSERT_EQ(parse(b, b->len, &sni), PX_PEEK_COMPLETE);
  ASSERT_STR_EQ(sni.name, name);
  ASSERT_EQ(sni.name_len, strlen(name));
}

/* The handshake message (without record headers) of a one-record hello. */
static void handshake_of(const bytes_t *hello, bytes_t *hs) {
  size_t rec = (size_t)hello->data[3] << 8 | hello->data[4];
  ASSERT(rec + 5 <= hello->len);
  memcpy(hs->data, hello->data + 5, rec);
  hs->len = rec;
}

/* Wraps handshake bytes into TLS records of at most chunk bytes each. */
static void into_records(const bytes_t *hs, size_t chunk, bytes_t *out) {
  out->len = 0;
  for (size_t at = 0; at < hs->len; at += chunk) {
    size_t n = hs->len - at < chunk ? hs->len - at : chunk;
    uint8_t *h = out->data + out->len;
    h[0] = 22;
    h[1] = 3;
    h[2] = 1;
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    memcpy(h + 5, hs->data + at, n);
    out->len += 5 + n;
    ASSERT(out->len < sizeof out->data);
  }
}

static void put_u16(uint8_t *p, size_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* Offset of the extensions length field inside a handshake message. */
static size_t extensions_at(const bytes_t *hs) {
  size_t at = 4 + 2 + 32;
  at += 1 + hs->data[at];
  at += 2 + ((size_t)hs->data[at] << 8 | hs->data[at + 1]);
  at += 1 + hs->data[at];
  return at;
}

/* Grows a handshake by a padding extension (type 21) of pad bytes, placed
 * first so that the server_name lands far from the start. */
static void pad_handshake(bytes_t *hs, size_t pad) {
  size_t ext = extensions_at(hs);
  size_t ext_total = (size_t)hs->data[ext] << 8 | hs->data[ext + 1];
  uint8_t *first = hs->data + ext + 2;
  memmove(first + 4 + pad, first, hs->len - (ext + 2));
  put_u16(first, 21);
  put_u16(first + 2, pad);
  memset(first + 4, 0, pad);
  hs->len += 4 + pad;
  put_u16(hs->data + ext, ext_total + 4 + pad);
  size_t body = hs->len - 4;
  hs->data[1] = (uint8_t)(body >> 16);
  hs->data[2] = (uint8_t)(body >> 8);
  hs->data[3] = (uint8_t)body;
}

static void test_openssl_hello(void) {
  bytes_t b;
  load("clienthello_openssl.bin", &b);
  expect_every_split(&b, "cam.example.net");
}

static void test_curl_hello(void) {
  bytes_t b;
  load("clienthello_curl.bin", &b);
  expect_every_split(&b, "cam.example.net");
}

static void test_no_sni(void) {
  bytes_t b;
  px_sni_t sni;
  load("clienthello_openssl_nosni.bin", &b);
  ASSERT_EQ(parse(&b, b.len, &sni), PX_PEEK_COMPLETE);
  ASSERT_EQ(sni.name_len, 0);
}

/* The server_name may sit in the second (or a later) record. */
static void test_many_records(void) {
  bytes_t b, hs, rec;
  load("clienthello_curl.bin", &b);
  handshake_of(&b, &hs);
  size_t chunks[] = {1, 7, 100, 256, 400};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    if (hs.len / chunks[i] >= 64)
      continue;
    into_records(&hs, chunks[i], &rec);
    expect_every_split(&rec, "cam.example.net");
  }
  /* One-byte records: more fragments than any real client sends. */
  into_records(&hs, 1, &rec);
  px_sni_t sni;
  ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_INVALID);
}

/* Post-quantum key shares make hellos of kilobytes; 16 KiB needs two
 * records because one record carries at most 16384 bytes. */
static void test_large_hellos(void) {
  size_t pads[] = {1800, 9 * 1024, 16 * 1024};
  for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
    bytes_t b, hs, rec;
    load("clienthello_openssl.bin", &b);
    handshake_of(&b, &hs);
    pad_handshake(&hs, pads[i]);
    into_records(&hs, 16384, &rec);
    px_sni_t sni;
    ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_COMPLETE);
    ASSERT_STR_EQ(sni.name, "cam.example.net");
    ASSERT_EQ(sni.hello_len, hs.len);
    ASSERT_EQ(parse(&rec, rec.len - 1, &sni), PX_PEEK_NEED_MORE);
    into_records(&hs, 1400, &rec);
    ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_COMPLETE);
    ASSERT_STR_EQ(sni.name, "cam.example.net");
  }
}

/* A hello whose inner lengths lie about the bytes there: never read past
 * them, never accept them. */
static void test_lying_lengths(void) {
  bytes_t b, hs, rec;
  px_sni_t sni;
  load("clienthello_openssl.bin", &b);
  handshake_of(&b, &hs);
  /* Truncate the handshake body but keep the message consistent with its
   * own length header: every cut is malformed, never complete. */
  for (size_t cut = 5; cut < hs.len; cut++) {
    bytes_t t = hs;
    t.len = cut;
    size_t body = cut - 4;
    t.data[1] = (uint8_t)(body >> 16);
    t.data[2] = (uint8_t)(body >> 8);
    t.data[3] = (uint8_t)body;
    into_records(&t, 16384, &rec);
    px_peek_result_t r = parse(&rec, rec.len, &sni);
    size_t ext = extensions_at(&hs);
    /* Cutting exactly before the extensions leaves a valid hello without
     * them; every other cut is invalid. */
    if (cut == ext) {
      ASSERT_EQ(r, PX_PEEK_COMPLETE);
      ASSERT_EQ(sni.name_len, 0);
    } else if (r != PX_PEEK_INVALID) {
      TEST_FAIL_("cut at %zu gave %d", cut, (int)r);
    }
  }
  /* Extensions length larger than what follows. */
  bytes_t t = hs;
  size_t ext = extensions_at(&t);
  put_u16(t.data + ext, 0xffff);
  into_records(&t, 16384, &rec);
  ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_INVALID);
  /* Session id longer than 32. */
  t = hs;
  t.data[4 + 2 + 32] = 33;
  into_records(&t, 16384, &rec);
  ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_INVALID);
}

static void test_not_tls(void) {
  px_sni_t sni;
  ASSERT_EQ(px_sni_parse((const uint8_t *)"GET / HTTP/1.1\r\n", 16, &sni),
            PX_PEEK_INVALID);
  ASSERT_EQ(px_sni_parse((const uint8_t *)"G", 1, &sni), PX_PEEK_INVALID);
  static const uint8_t alert[] = {21, 3, 1, 0, 2, 2, 40};
  ASSERT_EQ(px_sni_parse(alert, sizeof alert, &sni), PX_PEEK_INVALID);
  static const uint8_t sslv2[] = {0x80, 0x2e, 0x01, 0x03, 0x01};
  ASSERT_EQ(px_sni_parse(sslv2, sizeof sslv2, &sni), PX_PEEK_INVALID);
  static const uint8_t server_hello[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
  ASSERT_EQ(px_sni_parse(server_hello, sizeof server_hello, &sni),
            PX_PEEK_INVALID);
  static const uint8_t empty_record[] = {22, 3, 1, 0, 0};
  ASSERT_EQ(px_sni_parse(empty_record, sizeof empty_record, &sni),
            PX_PEEK_INVALID);
  static const uint8_t huge_record[] = {22, 3, 1, 0x48, 0x01};
  ASSERT_EQ(px_sni_parse(huge_record, sizeof huge_record, &sni),
            PX_PEEK_INVALID);
  ASSERT_EQ(px_sni_parse((const uint8_t *)"", 0, &sni), PX_PEEK_NEED_MORE);
}

static void test_bad_server_names(void) {
  bytes_t b, hs, rec;
  px_sni_t sni;
  load("clienthello_openssl.bin", &b);
  handshake_of(&b, &hs);
  /* Find "cam.example.net" inside and spoil one byte at a time. */
  uint8_t *name = memmem(hs.data, hs.len, "Cam.Example.NET", 15);
  ASSERT(name != NULL);
  const char spoilers[] = {'_', ' ', '\0', '/', '\xff'};
  for (size_t i = 0; i < sizeof spoilers; i++) {
    bytes_t t = hs;
    t.data[name - hs.data + 3] = (uint8_t)spoilers[i];
    into_records(&t, 16384, &rec);
    ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_INVALID);
  }
  /* A trailing dot is stripped, like in Host. */
  bytes_t t = hs;
  t.data[name - hs.data + 14] = '.';
  into_records(&t, 16384, &rec);
  ASSERT_EQ(parse(&rec, rec.len, &sni), PX_PEEK_COMPLETE);
  ASSERT_STR_EQ(sni.name, "cam.example.ne");
}

int main(int argc, char **argv) {
  if (argc > 1)
    data_dir = argv[1];
  RUN_TEST(test_openssl_hello);
  RUN_TEST(test_curl_hello);
  RUN_TEST(test_no_sni);
  RUN_TEST(test_many_records);
  RUN_TEST(test_large_hellos);
  RUN_TEST(test_lying_lengths);
  RUN_TEST(test_not_tls);
  RUN_TEST(test_bad_server_names);
  return 0;
}
