/* SPDX-License-Identifier: MIT */
/* test_http_host.c -- the HTTP Host peek, byte by byte */
#include "proxy/proxy_int.h"
#include "tests/test.h"

static px_peek_result_t parse(const char *text, px_http_host_t *out) {
  return px_http_host_parse(text, strlen(text), out);
}

static void expect_invalid(const char *text) {
  px_http_host_t h;
  if (parse(text, &h) != PX_PEEK_INVALID)
    TEST_FAIL_("expected INVALID for %s", text);
  ASSERT(h.why != NULL);
}

static void expect_name(const char *text, const char *name) {
  px_http_host_t h;
  px_peek_result_t r = parse(text, &h);
  if (r != PX_PEEK_COMPLETE)
    TEST_FAIL_("expected COMPLETE for %s, got %d (%s)", text, (int)r,
               h.why ? h.why : "");
  ASSERT_STR_EQ(h.name, name);
  ASSERT_EQ(h.name_len, strlen(name));
}

static void test_simple_get(void) {
  const char *req = "GET / HTTP/1.1\r\nHost: demo.ddport.test\r\n"
                    "Accept: */*\r\n\r\n";
  px_http_host_t h;
  ASSERT_EQ(parse(req, &h), PX_PEEK_COMPLETE);
  ASSERT_STR_EQ(h.name, "demo.ddport.test");
  ASSERT_MEM_STR(h.raw.ptr, h.raw.len, "demo.ddport.test");
  ASSERT_EQ(h.head_len, strlen(req));
}

/* Every prefix of a request is "need more"; the whole is complete. */
static void test_every_split_point(void) {
  const char *req = "GET /index.html?q=1 HTTP/1.1\r\n"
                    "User-Agent: curl/7.88.1\r\n"
                    "Host: Cam.Example.NET.:8080\r\n"
                    "Accept: */*\r\n\r\n";
  size_t len = strlen(req);
  for (size_t i = 0; i < len; i++) {
    px_http_host_t h;
    px_peek_result_t r = px_http_host_parse(req, i, &h);
    if (r != PX_PEEK_NEED_MORE)
      TEST_FAIL_("prefix of %zu bytes gave %d (%s)", i, (int)r,
                 h.why ? h.why : "");
  }
  expect_name(req, "cam.example.net");
}

static void test_body_not_in_head(void) {
  const char *req = "POST /x HTTP/1.1\r\nHost: a.test\r\n"
                    "Content-Length: 5\r\n\r\nhello";
  px_http_host_t h;
  ASSERT_EQ(parse(req, &h), PX_PEEK_COMPLETE);
  ASSERT_EQ(h.head_len, strlen(req) - 5);
  ASSERT_STR_EQ(h.name, "a.test");
}

static void test_normalisation(void) {
  expect_name("GET / HTTP/1.1\r\nHost: DEMO.ddport.TEST\r\n\r\n",
              "demo.ddport.test");
  expect_name("GET / HTTP/1.1\r\nHost: demo.ddport.test.\r\n\r\n",
              "demo.ddport.test");
  expect_name("GET / HTTP/1.1\r\nHost: demo.ddport.test:8080\r\n\r\n",
              "demo.ddport.test");
  expect_name("GET / HTTP/1.1\r\nHost:   demo.ddport.test  \r\n\r\n",
              "demo.ddport.test");
  expect_name("GET / HTTP/1.1\r\nhOsT: x-1.test\r\n\r\n", "x-1.test");
}

/* Bare LF line endings are refused (llhttp is strict): two parsers that
 * split lines differently are how requests get smuggled. */
static void test_lf_line_endings(void) {
  /* Found by the fuzzer: llhttp ends the head at CR + any byte. */
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test\r\n\r\x84");
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test\r\n\rX\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\nHost: lf.test\n\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: lf.test\n\n");
}

static void test_absolute_form_wins(void) {
  expect_name("GET http://Real.Test:81/p?q HTTP/1.1\r\nHost: other.test"
              "\r\n\r\n",
              "real.test");
  expect_name("GET http://user@real.test/ HTTP/1.1\r\nHost: other.test"
              "\r\n\r\n",
              "real.test");
  /* HTTP/1.1 still needs a Host header even with an absolute target. */
  expect_invalid("GET http://real.test/ HTTP/1.1\r\n\r\n");
  expect_name("GET http://real.test/ HTTP/1.0\r\n\r\n", "real.test");
}

static void test_host_header_rules(void) {
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
  /* HTTP/1.0 may omit Host: complete, naming no device. */
  px_http_host_t h;
  ASSERT_EQ(parse("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", &h),
            PX_PEEK_COMPLETE);
  ASSERT_EQ(h.name_len, 0);
  ASSERT_EQ(h.head_len, 31);
  expect_invalid("GET / HTTP/1.1\r\nHost : a.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHo st: a.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost:\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a\x01.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a_b.test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test:x\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a..test\r\n\r\n");
  expect_invalid("GET / HTTP/1.1\r\nHost: a.test b.test\r\n\r\n");
}

/* Bytes that cannot start an HTTP request fail at once, before any
 * deadline: a TLS ClientHello sent to an HTTP listener, for instance. */
static void test_garbage_fails_early(void) {
  static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
  px_http_host_t h;
  ASSERT_EQ(px_http_host_parse(hello, sizeof hello - 1, &h), PX_PEEK_INVALID);
  ASSERT_EQ(px_http_host_parse("GET /\x01", 6, &h), PX_PEEK_INVALID);
}

static void test_normalise_helper(void) {
  char out[CORE_NAME_MAX + 1];
  ASSERT_EQ(px_http_host_normalise("A.b:65535", 9, out), 3);
  ASSERT_STR_EQ(out, "a.b");
  ASSERT(px_http_host_normalise("a.b:123456", 10, out) < 0);
  ASSERT(px_http_host_normalise("", 0, out) < 0);
  ASSERT(px_http_host_normalise(".", 1, out) < 0);
  char long_label[80];
  memset(long_label, 'a', 64);
  memcpy(long_label + 64, ".test", 6);
  ASSERT(px_http_host_normalise(long_label, strlen(long_label), out) < 0);
}

int main(void) {
  RUN_TEST(test_simple_get);
  RUN_TEST(test_every_split_point);
  RUN_TEST(test_body_not_in_head);
  RUN_TEST(test_normalisation);
  RUN_TEST(test_lf_line_endings);
  RUN_TEST(test_absolute_form_wins);
  RUN_TEST(test_host_header_rules);
  RUN_TEST(test_garbage_fails_early);
  RUN_TEST(test_normalise_helper);
  return 0;
}
