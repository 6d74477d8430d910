/* SPDX-License-Identifier: MIT */
/* cookie.c -- DNS server cookies (RFC 7873, RFC 9018) with SipHash-2-4 */
#include "dns/dns_int.h"

#include <netinet/in.h>
#include <string.h>

/* A server cookie is good for an hour, and may come from a clock a few
 * minutes ahead of ours (RFC 9018 4.3). */
#define COOKIE_LIFETIME 3600
#define COOKIE_AHEAD 300

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

uint64_t dns_siphash24(const uint8_t key[16], const uint8_t *in, size_t len) {
  uint64_t k0 = get_le64(key), k1 = get_le64(key + 8);
  uint64_t v0 = 0x736f6d6570736575ull ^ k0;
  uint64_t v1 = 0x646f72616e646f6dull ^ k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k0;
  uint64_t v3 = 0x7465646279746573ull ^ k1;
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = get_le64(in + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t i = 0; i < len % 8; i++)
    b |= (uint64_t)in[whole + i] << (8 * i);
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* RFC 9018 4.4: SipHash-2-4 over client cookie, version, reserved,
 * timestamp and the client's address. */
static uint64_t cookie_hash(const uint8_t secret[16], const uint8_t client[8],
                            const uint8_t head[8],
                            const struct sockaddr *peer) {
  uint8_t in[8 + 8 + 16];
  size_t n = 16;
  core_ip_t ip;
  memcpy(in, client, 8);
  memcpy(in + 8, head, 8);
  if (peer && core_ip_from_sockaddr(peer, &ip) == 0) {
    size_t alen = ip.family == AF_INET ? 4 : 16;
    memcpy(in + 16, ip.bytes, alen);
    n += alen;
  }
  return dns_siphash24(secret, in, n);
}

void dns_cookie_make(const uint8_t secret[16], const uint8_t client[8],
                     const struct sockaddr *peer, uint32_t now,
                     uint8_t out[16]) {
  out[0] = 1; /* version */
  out[1] = out[2] = out[3] = 0;
  out[4] = (uint8_t)(now >> 24);
  out[5] = (uint8_t)(now >> 16);
  out[6] = (uint8_t)(now >> 8);
  out[7] = (uint8_t)now;
  uint64_t h = cookie_hash(secret, client, out, peer);
  for (int i = 0; i < 8; i++)
    out[8 + i] = (uint8_t)(h >> (8 * i));
}

bool dns_cookie_valid(const uint8_t secret[16], const uint8_t client[8],
                      const uint8_t *server, size_t server_len,
                      const struct sockaddr *peer, uint32_t now) {
  if (server_len != 16 || server[0] != 1)
    return false;
  uint32_t t = ((uint32_t)server[4] << 24) | ((uint32_t)server[5] << 16) |
               ((uint32_t)server[6] << 8) | server[7];
  /* Serial-number arithmetic, so the check survives 2106. */
  int32_t age = (int32_t)(now - t);
  if (age > COOKIE_LIFETIME || age < -COOKIE_AHEAD)
    return false;
  uint8_t want[16];
  memcpy(want, server, 8);
  uint64_t h = cookie_hash(secret, client, server, peer);
  for (int i = 0; i < 8; i++)
    want[8 + i] = (uint8_t)(h >> (8 * i));
  uint8_t diff = 0;
  for (int i = 8; i < 16; i++)
    diff |= (uint8_t)(want[i] ^ server[i]);
  return diff == 0;
}

static uint8_t process_secret[16];
static uv_once_t secret_once = UV_ONCE_INIT;

static void secret_create(void) {
  if (uv_random(NULL, NULL, process_secret, sizeof process_secret, 0, NULL) !=
      0)
    core_log(CORE_LOG_WARN, "dns: no random bytes for the cookie secret");
}

const uint8_t *dns_cookie_secret(void) {
  uv_once(&secret_once, secret_create);
  return process_secret;
}
