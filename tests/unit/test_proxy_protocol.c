/* SPDX-License-Identifier: MIT */
/* test_proxy_protocol.c -- PROXY protocol v1/v2 headers, byte for byte */
#include "proxy/proxy_int.h"
#include "tests/test.h"

#include <errno.h>

static struct sockaddr_storage addr(const char *text) {
  struct sockaddr_storage ss;
  const char *why;
  if (core_hostport_parse(text, &ss, &why) != 0)
    TEST_FAIL_("bad test address %s", text);
  return ss;
}

static int build(reg_proxy_protocol_t v, const char *src, const char *dst,
                 uint8_t *out, size_t cap) {
  struct sockaddr_storage s = addr(src), d = addr(dst);
  return px_proxy_header(v, (struct sockaddr *)&s, (struct sockaddr *)&d, out,
                         cap);
}

static void test_v1(void) {
  uint8_t out[PX_PROXY_HEADER_MAX];
  int n = build(REG_PROXY_PROTOCOL_V1, "198.51.100.22:35646", "192.0.2.1:80",
                out, sizeof out);
  ASSERT_MEM_STR(out, (size_t)n,
                 "PROXY TCP4 198.51.100.22 192.0.2.1 35646 80\r\n");
  n = build(REG_PROXY_PROTOCOL_V1, "[2001:db8::1]:1", "[::1]:443", out,
            sizeof out);
  ASSERT_MEM_STR(out, (size_t)n, "PROXY TCP6 2001:db8::1 ::1 1 443\r\n");
  /* The longest possible line fits the specification's 107 bytes. */
  n = build(REG_PROXY_PROTOCOL_V1,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", out, sizeof out);
  ASSERT_EQ(n, 104);
  ASSERT_EQ(build(REG_PROXY_PROTOCOL_V1, "127.0.0.1:1", "127.0.0.1:2", out, 10),
            -ENOSPC);
}

static void test_v2(void) {
  uint8_t out[PX_PROXY_HEADER_MAX];
  static const uint8_t want4[] = {
      0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55,
      0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c,    /* PROXY, TCP4, 12 bytes */
      198,  51,   100,  22,   192,  0,    2,    1, /* src, dst */
      0x8b, 0x3e, 0x00, 0x50};                     /* 35646, 80 */
  int n = build(REG_PROXY_PROTOCOL_V2, "198.51.100.22:35646", "192.0.2.1:80",
                out, sizeof out);
  ASSERT_EQ(n, sizeof want4);
  ASSERT(memcmp(out, want4, sizeof want4) == 0);

  n = build(REG_PROXY_PROTOCOL_V2, "[2001:db8::1]:1", "[::1]:443", out,
            sizeof out);
  ASSERT_EQ(n, 16 + 36);
  ASSERT_EQ(out[13], 0x21); /* TCP6 */
  ASSERT_EQ(out[15], 36);
  ASSERT_EQ(out[16], 0x20);
  ASSERT_EQ(out[17], 0x01);
  ASSERT_EQ(out[16 + 31], 1); /* ::1 */
  ASSERT_EQ(out[16 + 33], 1); /* source port 1 */
  ASSERT_EQ(out[16 + 34], 0x01);
  ASSERT_EQ(out[16 + 35], 0xbb); /* 443 */
  ASSERT_EQ(build(REG_PROXY_PROTOCOL_V2, "[::1]:1", "[::1]:2", out, 51),
            -ENOSPC);
}

static void test_off_and_mixed(void) {
  uint8_t out[PX_PROXY_HEADER_MAX];
  ASSERT_EQ(build(REG_PROXY_PROTOCOL_OFF, "127.0.0.1:1", "127.0.0.1:2", out,
                  sizeof out),
            0);
  ASSERT_EQ(
      build(REG_PROXY_PROTOCOL_V1, "127.0.0.1:1", "[::1]:2", out, sizeof out),
      -EAFNOSUPPORT);
}

int main(void) {
  RUN_TEST(test_v1);
  RUN_TEST(test_v2);
  RUN_TEST(test_off_and_mixed);
  return 0;
}
