/* SPDX-License-Identifier: MIT */
/* fuzz_tsig_answer.c -- fuzz target for dns_tsig_verify_answer: the answers
 * to ddport's signed NOTIFYs come from the network */
#include "dns/dns_int.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

#define NOW 1700000000u
#define ANSWER_MAX 4096

static uint8_t secret[32];
static reg_tsig_key_t key;
static dns_tsig_ctx_t request; /* a signed NOTIFY's: its MAC in .mac */

/* The NOTIFY's answer as a secondary holding the key signs it: the
 * request's MAC first, then the answer (RFC 8945 5.3). Returns its length,
 * or len unchanged when it does not fit. */
static size_t sign_as_secondary(uint8_t *msg, size_t len, size_t cap) {
  dns_tsig_ctx_t answer = request;
  answer.n_signed = 0;
  return dns_tsig_sign(&answer, msg, len, cap);
}

static void world_build(void) {
  for (size_t i = 0; i < sizeof secret; i++)
    secret[i] = (uint8_t)(7 + i);
  key = (reg_tsig_key_t){.name = "xfr",
                         .algorithm = REG_TSIG_HMAC_SHA256,
                         .secret = secret,
                         .secret_len = sizeof secret};
  dns_tsig_ctx_for_key(&request, &key, NOW);
  CHECK(request.key != NULL);
  /* NOTIFY for ddport.test SOA, ID 0x1234. */
  uint8_t msg[512] = {0x12, 0x34, 0x20, 0x00, 0,   1,   0,   0,   0,   0,
                      0,    0,    6,    'd',  'd', 'p', 'o', 'r', 't', 4,
                      't',  'e',  's',  't',  0,   0,   6,   0,   1};
  size_t n = dns_tsig_sign(&request, msg, 29, sizeof msg);
  CHECK(n > 29 && request.mac_len > 0);

  /* Its answer, signed right, verifies; one bit off in the MAC does not. */
  msg[2] |= 0x80; /* QR */
  msg[11] = 0;    /* ARCOUNT: the answer carries no TSIG of the request's */
  n = sign_as_secondary(msg, 29, sizeof msg);
  CHECK(n > 29);
  uint16_t error;
  CHECK(dns_tsig_verify_answer(&request, msg, n, NOW, &error) == DNS_TSIG_OK);
  CHECK(error == 0);
  msg[n - 10] ^= 1; /* inside the MAC, before original ID, error, other */
  CHECK(dns_tsig_verify_answer(&request, msg, n, NOW, &error) ==
        DNS_TSIG_BADSIG);
}

static bool valid_status(dns_tsig_status_t s) {
  return s == DNS_TSIG_NONE || s == DNS_TSIG_OK || s == DNS_TSIG_FORMERR ||
         s == DNS_TSIG_BADKEY || s == DNS_TSIG_BADSIG || s == DNS_TSIG_BADTIME;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool built;
  if (!built) {
    world_build();
    built = true;
  }
  uint16_t error;
  CHECK(
      valid_status(dns_tsig_verify_answer(&request, data, size, NOW, &error)));

  /* The same bytes signed with the shared key: the parser then meets a
   * TSIG whose MAC is right, behind whatever the input holds. */
  if (size <= ANSWER_MAX) {
    uint8_t msg[ANSWER_MAX + 512];
    memcpy(msg, data, size);
    size_t n = sign_as_secondary(msg, size, sizeof msg);
    CHECK(n <= sizeof msg);
    CHECK(valid_status(dns_tsig_verify_answer(&request, msg, n, NOW, &error)));
  }
  return 0;
}
