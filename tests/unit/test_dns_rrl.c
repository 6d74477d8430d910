/* SPDX-License-Identifier: MIT */
/* test_dns_rrl.c -- response rate limiting: counts, slip, prefixes */
#include "dns/dns_int.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static struct sockaddr_storage addr(const char *text) {
  struct sockaddr_storage ss;
  core_ip_t ip;
  ASSERT_EQ(core_ip_parse(text, &ip), 0);
  core_ip_to_sockaddr(&ip, 5353, &ss);
  return ss;
}

static dns_rrl_action_t account(dns_rrl_t *rrl, const char *src, uint32_t now,
                                uint32_t rps, uint32_t slip) {
  struct sockaddr_storage ss = addr(src);
  return dns_rrl_account(rrl, (const struct sockaddr *)&ss, now, rps, slip);
}

static void test_limit_and_slip(void) {
  dns_rrl_t *rrl = dns_rrl_new(1024, 42);
  /* Three a second, then every second excess response slips. */
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(account(rrl, "192.0.2.1", 100, 3, 2), DNS_RRL_SEND);
  ASSERT_EQ(account(rrl, "192.0.2.1", 100, 3, 2), DNS_RRL_DROP);
  ASSERT_EQ(account(rrl, "192.0.2.77", 100, 3, 2), DNS_RRL_SLIP); /* same /24 */
  ASSERT_EQ(account(rrl, "192.0.2.1", 100, 3, 2), DNS_RRL_DROP);
  ASSERT_EQ(account(rrl, "192.0.2.1", 100, 3, 2), DNS_RRL_SLIP);
  /* Another /24 has its own count; a new second starts over. */
  ASSERT_EQ(account(rrl, "192.0.3.1", 100, 3, 2), DNS_RRL_SEND);
  ASSERT_EQ(account(rrl, "192.0.2.1", 101, 3, 2), DNS_RRL_SEND);
  /* slip 0: nothing over the limit goes out; slip 1: all of it, cut. */
  ASSERT_EQ(account(rrl, "198.51.100.1", 7, 1, 0), DNS_RRL_SEND);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(account(rrl, "198.51.100.1", 7, 1, 0), DNS_RRL_DROP);
  ASSERT_EQ(account(rrl, "203.0.113.1", 7, 1, 1), DNS_RRL_SEND);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(account(rrl, "203.0.113.1", 7, 1, 1), DNS_RRL_SLIP);
  dns_rrl_free(rrl);
}

static void test_prefixes(void) {
  dns_rrl_t *rrl = dns_rrl_new(1024, 7);
  /* One /56 is one customer: its /64s share a count. */
  ASSERT_EQ(account(rrl, "2001:db8:0:1200::1", 5, 1, 0), DNS_RRL_SEND);
  ASSERT_EQ(account(rrl, "2001:db8:0:12ff::2", 5, 1, 0), DNS_RRL_DROP);
  ASSERT_EQ(account(rrl, "2001:db8:0:1300::1", 5, 1, 0), DNS_RRL_SEND);
  /* An IPv4-mapped source counts as its IPv4 /24. */
  ASSERT_EQ(account(rrl, "10.1.2.3", 5, 1, 0), DNS_RRL_SEND);
  ASSERT_EQ(account(rrl, "::ffff:10.1.2.200", 5, 1, 0), DNS_RRL_DROP);
  dns_rrl_free(rrl);
}

static void test_slip_message(void) {
  /* An answer with a question, one A record and an OPT. */
  uint8_t msg[512];
  dns_writer_t w;
  dns_question_t q = {.qtype = DNS_TYPE_A, .qclass = DNS_CLASS_IN};
  dns_header_t h = {.id = 9,
                    .flags = DNS_FLAG_QR | DNS_FLAG_AA,
                    .qdcount = 1,
                    .ancount = 1,
                    .arcount = 1};
  static const uint8_t a[4] = {192, 0, 2, 1};
  ASSERT_EQ(dns_name_from_text("x.test", 6, &q.name), 0);
  dns_writer_init(&w, msg, sizeof msg);
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  size_t question_end = w.len;
  dns_write_rr_a(&w, &q.name, 60, a);
  dns_write_rr_opt(&w, 1232, 0, 0, false);
  ASSERT(!w.too_big);
  size_t n = dns_rrl_slip(msg, w.len);
  ASSERT_EQ(n, question_end);
  dns_header_t out;
  ASSERT_EQ(dns_header_parse(msg, n, &out), DNS_WIRE_OK);
  ASSERT_EQ(out.id, 9);
  ASSERT(out.flags & DNS_FLAG_TC);
  ASSERT(out.flags & DNS_FLAG_AA);
  ASSERT_EQ(out.qdcount, 1);
  ASSERT_EQ(out.ancount + out.nscount + out.arcount, 0);
  ASSERT_EQ(dns_rrl_slip(msg, 5), 0);
}

int main(void) {
  RUN_TEST(test_limit_and_slip);
  RUN_TEST(test_prefixes);
  RUN_TEST(test_slip_message);
  return 0;
}
