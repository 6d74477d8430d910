/* SPDX-License-Identifier: MIT */
/* proxy_protocol.c -- the PROXY protocol v1/v2 header sent ahead to devices */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

/* haproxy's PROXY protocol specification, sections 2.1 and 2.2. */
static const uint8_t v2_signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
#define V2_VERSION_PROXY 0x21 /* version 2, command PROXY */
#define V2_TCP4 0x11
#define V2_TCP6 0x21

static uint16_t port_of(const struct sockaddr *sa) {
  return ntohs(sa->sa_family == AF_INET
                   ? ((const struct sockaddr_in *)sa)->sin_port
                   : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static const void *addr_of(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET
             ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
             : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
}

static int build_v1(const struct sockaddr *src, const struct sockaddr *dst,
                    uint8_t *out, size_t cap) {
  char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
  inet_ntop(src->sa_family, addr_of(src), s, sizeof s);
  inet_ntop(dst->sa_family, addr_of(dst), d, sizeof d);
  int n = snprintf((char *)out, cap, "PROXY %s %s %s %u %u\r\n",
                   src->sa_family == AF_INET ? "TCP4" : "TCP6", s, d,
                   port_of(src), port_of(dst));
  /* The specification caps a v1 line at 107 bytes. */
  if (n < 0 || (size_t)n >= cap || n > 107)
    return -ENOSPC;
  return n;
}

static int build_v2(const struct sockaddr *src, const struct sockaddr *dst,
                    uint8_t *out, size_t cap) {
  size_t addr_len = src->sa_family == AF_INET ? 4 : 16;
  size_t body = 2 * addr_len + 4;
  if (cap < 16 + body)
    return -ENOSPC;
  memcpy(out, v2_signature, sizeof v2_signature);
  out[12] = V2_VERSION_PROXY;
  out[13] = src->sa_family == AF_INET ? V2_TCP4 : V2_TCP6;
  out[14] = (uint8_t)(body >> 8);
  out[15] = (uint8_t)body;
  uint8_t *p = out + 16;
  memcpy(p, addr_of(src), addr_len);
  memcpy(p + addr_len, addr_of(dst), addr_len);
  uint16_t sport = htons(port_of(src)), dport = htons(port_of(dst));
  memcpy(p + 2 * addr_len, &sport, 2);
  memcpy(p + 2 * addr_len + 2, &dport, 2);
  return (int)(16 + body);
}

int px_proxy_header(reg_proxy_protocol_t version, const struct sockaddr *src,
                    const struct sockaddr *dst, uint8_t *out, size_t cap) {
  if ((src->sa_family != AF_INET && src->sa_family != AF_INET6) ||
      src->sa_family != dst->sa_family)
    return -EAFNOSUPPORT;
  switch (version) {
  case REG_PROXY_PROTOCOL_V1:
    return build_v1(src, dst, out, cap);
  case REG_PROXY_PROTOCOL_V2:
    return build_v2(src, dst, out, cap);
  case REG_PROXY_PROTOCOL_OFF:
    break;
  }
  return 0;
}
