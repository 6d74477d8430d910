/* SPDX-License-Identifier: MIT */
/* test_dns_tsig.c -- TSIG (RFC 8945): a signed request, its signed answer */
#include "dns/dns_int.h"
#include "tests/test.h"

#include <string.h>

#define NOW 1700000000u

static uint8_t secret[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static reg_tsig_key_t key = {.name = "xfr",
                             .algorithm = REG_TSIG_HMAC_SHA256,
                             .secret = secret,
                             .secret_len = sizeof secret};

/* Header and question of a NOTIFY for ddport.test (or its answer). */
static size_t notify_message(uint8_t *out, size_t cap, bool answer) {
  dns_writer_t w;
  dns_question_t q = {.qtype = DNS_TYPE_SOA, .qclass = DNS_CLASS_IN};
  ASSERT_EQ(dns_name_from_text("ddport.test", 11, &q.name), 0);
  dns_header_t h = {.id = 4242,
                    .flags =
                        (uint16_t)(DNS_FLAG_OPCODE(DNS_OPCODE_NOTIFY) |
                                   DNS_FLAG_AA | (answer ? DNS_FLAG_QR : 0)),
                    .qdcount = 1};
  dns_writer_init(&w, out, cap);
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  ASSERT(!w.too_big);
  return w.len;
}

/* A configuration whose only TSIG key is k. */
static reg_config_t config_with(reg_tsig_key_t *k) {
  reg_config_t config = {0};
  config.dns.tsig_keys = k;
  config.dns.n_tsig_keys = 1;
  return config;
}

typedef struct exchange {
  dns_tsig_ctx_t request; /* ours, after signing: holds the request MAC */
  dns_tsig_ctx_t server;  /* the secondary's, from verifying the request */
  uint8_t answer[512];
  size_t answer_len;
} exchange_t;

/* We sign a NOTIFY, the secondary checks it with config's keys and signs
 * its answer. */
static void exchange(exchange_t *x, const reg_config_t *config) {
  uint8_t req[512];
  dns_tsig_ctx_for_key(&x->request, &key, NOW);
  size_t len = notify_message(req, sizeof req, false);
  len = dns_tsig_sign(&x->request, req, len, sizeof req);
  dns_tsig_verify(config, req, len, NULL, NOW, &x->server);
  x->answer_len = notify_message(x->answer, sizeof x->answer, true);
  x->answer_len =
      dns_tsig_sign(&x->server, x->answer, x->answer_len, sizeof x->answer);
}

static void test_answer_signed_right(void) {
  reg_config_t config = config_with(&key);
  exchange_t x;
  uint16_t error = 99;
  exchange(&x, &config);
  ASSERT_EQ(
      dns_tsig_verify_answer(&x.request, x.answer, x.answer_len, NOW, &error),
      DNS_TSIG_OK);
  ASSERT_EQ(error, 0);
  /* Within the fudge, and outside it. */
  ASSERT_EQ(dns_tsig_verify_answer(&x.request, x.answer, x.answer_len,
                                   NOW + 300, &error),
            DNS_TSIG_OK);
  ASSERT_EQ(dns_tsig_verify_answer(&x.request, x.answer, x.answer_len,
                                   NOW + 301, &error),
            DNS_TSIG_BADTIME);
}

static void test_answer_tampered_or_unchained(void) {
  reg_config_t config = config_with(&key);
  exchange_t x;
  uint16_t error;
  exchange(&x, &config);
  /* One bit of the question changed. */
  x.answer[DNS_HEADER_SIZE + 1] ^= 0x20;
  ASSERT_EQ(
      dns_tsig_verify_answer(&x.request, x.answer, x.answer_len, NOW, &error),
      DNS_TSIG_BADSIG);
  x.answer[DNS_HEADER_SIZE + 1] ^= 0x20;
  /* Checked against another request's MAC. */
  dns_tsig_ctx_t other = x.request;
  other.mac[0] ^= 1;
  ASSERT_EQ(dns_tsig_verify_answer(&other, x.answer, x.answer_len, NOW, &error),
            DNS_TSIG_BADSIG);
  /* Signed with the right key, but not covering the request's MAC. */
  dns_tsig_ctx_t fresh;
  dns_tsig_ctx_for_key(&fresh, &key, NOW);
  uint8_t answer[512];
  size_t len = notify_message(answer, sizeof answer, true);
  len = dns_tsig_sign(&fresh, answer, len, sizeof answer);
  ASSERT_EQ(dns_tsig_verify_answer(&x.request, answer, len, NOW, &error),
            DNS_TSIG_BADSIG);
  /* Unsigned. */
  len = notify_message(answer, sizeof answer, true);
  ASSERT_EQ(dns_tsig_verify_answer(&x.request, answer, len, NOW, &error),
            DNS_TSIG_NONE);
  ASSERT_EQ(error, 0);
}

static void test_answer_other_key_or_error(void) {
  /* The secondary has the key under another secret: it answers BADSIG,
   * with no MAC. */
  uint8_t other_secret[32] = {9};
  reg_tsig_key_t wrong = key;
  wrong.secret = other_secret;
  reg_config_t config = config_with(&wrong);
  exchange_t x;
  uint16_t error;
  exchange(&x, &config);
  ASSERT_EQ(
      dns_tsig_verify_answer(&x.request, x.answer, x.answer_len, NOW, &error),
      DNS_TSIG_BADSIG);
  ASSERT_EQ(error, DNS_TSIG_ERR_BADSIG);
  /* An answer signed under another key name. */
  reg_tsig_key_t renamed = key;
  renamed.name = "other";
  dns_tsig_ctx_t ctx;
  dns_tsig_ctx_for_key(&ctx, &renamed, NOW);
  memcpy(ctx.mac, x.request.mac, x.request.mac_len);
  ctx.mac_len = x.request.mac_len;
  uint8_t answer[512];
  size_t len = notify_message(answer, sizeof answer, true);
  len = dns_tsig_sign(&ctx, answer, len, sizeof answer);
  ASSERT_EQ(dns_tsig_verify_answer(&x.request, answer, len, NOW, &error),
            DNS_TSIG_BADKEY);
}

int main(void) {
  RUN_TEST(test_answer_signed_right);
  RUN_TEST(test_answer_tampered_or_unchained);
  RUN_TEST(test_answer_other_key_or_error);
  return 0;
}
