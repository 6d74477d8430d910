/* SPDX-License-Identifier: MIT */
/* test_dns_cookie.c -- SipHash-2-4 and server cookies (RFC 7873, 9018) */
#include "dns/dns_int.h"
#include "tests/test.h"

static struct sockaddr_storage addr(const char *text) {
  struct sockaddr_storage ss;
  core_ip_t ip;
  ASSERT_EQ(core_ip_parse(text, &ip), 0);
  core_ip_to_sockaddr(&ip, 5353, &ss);
  return ss;
}

static void test_siphash_vector(void) {
  /* The SipHash paper's example: key 00..0f, message 00..0e. */
  uint8_t key[16], msg[15];
  for (int i = 0; i < 16; i++)
    key[i] = (uint8_t)i;
  for (int i = 0; i < 15; i++)
    msg[i] = (uint8_t)i;
  ASSERT(dns_siphash24(key, msg, 15) == 0xa129ca6149be45e5ull);
  /* The empty message, from the reference vectors. */
  ASSERT(dns_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ull);
}

static void test_cookie_round_trip(void) {
  uint8_t secret[16] = {9, 8, 7}, client[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t server[16];
  struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2"),
                          v6 = addr("2001:db8::1");
  const struct sockaddr *pa = (const struct sockaddr *)&a;
  const struct sockaddr *pb = (const struct sockaddr *)&b;
  const struct sockaddr *p6 = (const struct sockaddr *)&v6;

  dns_cookie_make(secret, client, pa, 1000000, server);
  ASSERT_EQ(server[0], 1);
  ASSERT_EQ(server[1] | server[2] | server[3], 0);
  ASSERT_EQ(server[7], 1000000 & 0xFF);
  ASSERT(dns_cookie_valid(secret, client, server, 16, pa, 1000000));
  /* Within the hour, and a little ahead; not after, not far ahead. */
  ASSERT(dns_cookie_valid(secret, client, server, 16, pa, 1000000 + 3600));
  ASSERT(!dns_cookie_valid(secret, client, server, 16, pa, 1000000 + 3601));
  ASSERT(dns_cookie_valid(secret, client, server, 16, pa, 1000000 - 300));
  ASSERT(!dns_cookie_valid(secret, client, server, 16, pa, 1000000 - 301));
  /* Bound to the client's address, its client cookie and our secret. */
  ASSERT(!dns_cookie_valid(secret, client, server, 16, pb, 1000000));
  uint8_t other[8] = {1, 2, 3, 4, 5, 6, 7, 9};
  ASSERT(!dns_cookie_valid(secret, other, server, 16, pa, 1000000));
  uint8_t secret2[16] = {9, 8, 6};
  ASSERT(!dns_cookie_valid(secret2, client, server, 16, pa, 1000000));
  for (int i = 0; i < 16; i++) {
    uint8_t bad[16];
    memcpy(bad, server, 16);
    bad[i] ^= 0x10;
    ASSERT(!dns_cookie_valid(secret, client, bad, 16, pa, 1000000));
  }
  ASSERT(!dns_cookie_valid(secret, client, server, 15, pa, 1000000));
  dns_cookie_make(secret, client, p6, 5, server);
  ASSERT(dns_cookie_valid(secret, client, server, 16, p6, 5));
  ASSERT(!dns_cookie_valid(secret, client, server, 16, pa, 5));
}

int main(void) {
  RUN_TEST(test_siphash_vector);
  RUN_TEST(test_cookie_round_trip);
  return 0;
}
