/* SPDX-License-Identifier: MIT */
/* rrl.c -- response rate limiting for UDP, per source prefix, shared by
 * every worker without locks */
#include "dns/dns_int.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Each slot counts the responses of one second to the prefixes hashing to
 * it: the second in the upper 32 bits, the count in the lower. Colliding
 * prefixes share a count, which can only make limiting earlier, never
 * let a flood through. */
struct dns_rrl {
  uint64_t seed;
  size_t mask;
  _Atomic uint64_t slots[];
};

dns_rrl_t *dns_rrl_new(size_t slots, uint64_t seed) {
  size_t n = 1;
  while (n < slots)
    n *= 2;
  dns_rrl_t *rrl = xcalloc(1, sizeof *rrl + n * sizeof(_Atomic uint64_t));
  rrl->seed = seed;
  rrl->mask = n - 1;
  return rrl;
}

void dns_rrl_free(dns_rrl_t *rrl) {
  free(rrl);
}

/* The prefix a source belongs to: /24 for IPv4, /56 for IPv6 (one
 * customer's usual allocation), IPv4-mapped IPv6 as IPv4. */
static size_t prefix_of(const struct sockaddr *src, uint8_t key[8]) {
  core_ip_t ip;
  if (core_ip_from_sockaddr(src, &ip) != 0)
    return 0;
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (ip.family == AF_INET6 && memcmp(ip.bytes, mapped, 12) == 0) {
    memmove(ip.bytes, ip.bytes + 12, 4);
    ip.family = AF_INET;
  }
  key[0] = ip.family == AF_INET ? 4 : 6;
  size_t n = ip.family == AF_INET ? 3 : 7;
  memcpy(key + 1, ip.bytes, n);
  return n + 1;
}

static uint64_t hash(const uint8_t *p, size_t n, uint64_t seed) {
  uint64_t h = seed ^ 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h ^ (h >> 31);
}

dns_rrl_action_t dns_rrl_account(dns_rrl_t *rrl, const struct sockaddr *src,
                                 uint32_t now, uint32_t per_second,
                                 uint32_t slip) {
  uint8_t key[8];
  size_t n = prefix_of(src, key);
  if (n == 0)
    return DNS_RRL_SEND;
  _Atomic uint64_t *slot = &rrl->slots[hash(key, n, rrl->seed) & rrl->mask];
  uint64_t old = atomic_load_explicit(slot, memory_order_relaxed), next;
  do {
    if ((uint32_t)(old >> 32) != now)
      next = ((uint64_t)now << 32) | 1;
    else if ((uint32_t)old == UINT32_MAX)
      next = old;
    else
      next = old + 1;
  } while (!atomic_compare_exchange_weak_explicit(
      slot, &old, next, memory_order_relaxed, memory_order_relaxed));
  uint32_t count = (uint32_t)next;
  if (count <= per_second)
    return DNS_RRL_SEND;
  /* Every slip-th excess answer goes out truncated, so a real client
   * caught in a spoofed flood still gets through over TCP. */
  if (slip > 0 && (count - per_second) % slip == 0)
    return DNS_RRL_SLIP;
  return DNS_RRL_DROP;
}

size_t dns_rrl_slip(uint8_t *answer, size_t len) {
  dns_header_t h;
  size_t pos = DNS_HEADER_SIZE;
  dns_question_t q;
  if (dns_header_parse(answer, len, &h) != DNS_WIRE_OK)
    return 0;
  if (h.qdcount != 1 ||
      dns_question_parse(answer, len, &pos, &q) != DNS_WIRE_OK) {
    h.qdcount = 0;
    pos = DNS_HEADER_SIZE;
  }
  h.flags |= DNS_FLAG_TC;
  h.ancount = h.nscount = h.arcount = 0;
  dns_header_encode(&h, answer);
  return pos;
}
