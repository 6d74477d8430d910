/* SPDX-License-Identifier: MIT */
/* tsig.c -- TSIG (RFC 8945): verifying requests, signing replies */
#include "dns/dns_int.h"

size_t dns_tsig_reserve(const dns_tsig_ctx_t *ctx) {
  (void)ctx;
  return 0;
}

size_t dns_tsig_sign(dns_tsig_ctx_t *ctx, uint8_t *msg, size_t len,
                     size_t cap) {
  (void)ctx;
  (void)msg;
  (void)cap;
  return len;
}
