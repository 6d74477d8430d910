/* SPDX-License-Identifier: MIT */
/* addr.c -- IP addresses, host:port pairs and prefixes */
#include "core/core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int core_ip_parse(const char *text, core_ip_t *out) {
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, text, out->bytes) == 1) {
    out->family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, text, out->bytes) == 1) {
    out->family = AF_INET6;
    return 0;
  }
  return -EINVAL;
}

const char *core_ip_format(const core_ip_t *ip, char *buf, size_t size) {
  if (inet_ntop(ip->family, ip->bytes, buf, (socklen_t)size) == NULL)
    snprintf(buf, size, "?");
  return buf;
}

int core_hostport_parse(const char *text, struct sockaddr_storage *out,
                        const char **why) {
  char host[INET6_ADDRSTRLEN + 2];
  const char *port_text;
  size_t host_len;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (close == NULL || close[1] != ':') {
      *why = "expected [IPv6]:port";
      return -EINVAL;
    }
    host_len = (size_t)(close - text - 1);
    port_text = close + 2;
    text++;
  } else {
    const char *colon = strrchr(text, ':');
    if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL) {
      *why = "expected address:port, such as 127.0.0.1:8080 or [::1]:8080";
      return -EINVAL;
    }
    host_len = (size_t)(colon - text);
    port_text = colon + 1;
  }
  if (host_len == 0 || host_len >= sizeof host) {
    *why = "expected an IP address before the port";
    return -EINVAL;
  }
  memcpy(host, text, host_len);
  host[host_len] = '\0';

  char *end;
  errno = 0;
  long port = strtol(port_text, &end, 10);
  if (*port_text == '\0' || *end != '\0' || errno != 0 || port < 1 ||
      port > 65535) {
    *why = "port must be a number from 1 to 65535";
    return -EINVAL;
  }
  core_ip_t ip;
  if (core_ip_parse(host, &ip) != 0) {
    *why = "not an IP address (IPv6 goes in brackets: [::1]:8080)";
    return -EINVAL;
  }
  core_ip_to_sockaddr(&ip, (uint16_t)port, out);
  return 0;
}

int core_prefix_parse(const char *text, core_prefix_t *out, const char **why) {
  char addr[INET6_ADDRSTRLEN + 1];
  const char *slash = strchr(text, '/');
  size_t len = slash ? (size_t)(slash - text) : strlen(text);
  if (len == 0 || len >= sizeof addr) {
    *why = "expected a prefix such as 192.0.2.0/24 or 2001:db8::/32";
    return -EINVAL;
  }
  memcpy(addr, text, len);
  addr[len] = '\0';
  if (core_ip_parse(addr, &out->ip) != 0) {
    *why = "not an IP address; expected a prefix such as 192.0.2.0/24";
    return -EINVAL;
  }
  unsigned max = out->ip.family == AF_INET ? 32 : 128;
  out->bits = max;
  if (slash != NULL) {
    char *end;
    errno = 0;
    long bits = strtol(slash + 1, &end, 10);
    if (slash[1] == '\0' || *end != '\0' || errno != 0 || bits < 0 ||
        (unsigned long)bits > max) {
      *why = out->ip.family == AF_INET ? "prefix length must be 0 to 32"
                                       : "prefix length must be 0 to 128";
      return -EINVAL;
    }
    out->bits = (unsigned)bits;
  }
  for (unsigned i = out->bits; i < max; i++) {
    if (out->ip.bytes[i / 8] & (0x80 >> (i % 8))) {
      *why = "address has bits set beyond the prefix length";
      return -EINVAL;
    }
  }
  return 0;
}

/* ::ffff:a.b.c.d is an IPv4 visitor or target in IPv6 clothing. */
static core_ip_t unmap(const core_ip_t *ip) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  core_ip_t v = *ip;
  if (ip->family == AF_INET6 && memcmp(ip->bytes, mapped, 12) == 0) {
    memset(&v, 0, sizeof v);
    v.family = AF_INET;
    memcpy(v.bytes, ip->bytes + 12, 4);
  }
  return v;
}

bool core_prefix_contains(const core_prefix_t *prefix, const core_ip_t *ip) {
  core_ip_t a = unmap(ip);
  core_ip_t p = unmap(&prefix->ip);
  unsigned bits = prefix->bits;
  if (p.family == AF_INET && prefix->ip.family == AF_INET6)
    bits = bits >= 96 ? bits - 96 : 0;
  if (a.family != p.family)
    return false;
  unsigned full = bits / 8, rest = bits % 8;
  if (memcmp(a.bytes, p.bytes, full) != 0)
    return false;
  if (rest == 0)
    return true;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a.bytes[full] & mask) == (p.bytes[full] & mask);
}

int core_ip_from_sockaddr(const struct sockaddr *sa, core_ip_t *out) {
  memset(out, 0, sizeof *out);
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    out->family = AF_INET;
    memcpy(out->bytes, &in->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    out->family = AF_INET6;
    memcpy(out->bytes, &in6->sin6_addr, 16);
    return 0;
  }
  return -EAFNOSUPPORT;
}

socklen_t core_ip_to_sockaddr(const core_ip_t *ip, uint16_t port,
                              struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  if (ip->family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    memcpy(&in->sin_addr, ip->bytes, 4);
    return sizeof *in;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  memcpy(&in6->sin6_addr, ip->bytes, 16);
  return sizeof *in6;
}

const char *core_sockaddr_format(const struct sockaddr *sa, char *buf,
                                 size_t size) {
  core_ip_t ip;
  char text[INET6_ADDRSTRLEN];
  if (core_ip_from_sockaddr(sa, &ip) != 0) {
    snprintf(buf, size, "?");
    return buf;
  }
  core_ip_format(&ip, text, sizeof text);
  uint16_t port = ntohs(sa->sa_family == AF_INET
                            ? ((const struct sockaddr_in *)sa)->sin_port
                            : ((const struct sockaddr_in6 *)sa)->sin6_port);
  if (ip.family == AF_INET6)
    snprintf(buf, size, "[%s]:%u", text, port);
  else
    snprintf(buf, size, "%s:%u", text, port);
  return buf;
}

int core_addr_in_use(const struct sockaddr_storage *addr, int type) {
  int fd = socket(addr->ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1, rc = 0;
  socklen_t len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
  /* No SO_REUSEPORT: the bind fails wherever any socket is bound. TCP's
   * SO_REUSEADDR passes over connections left in TIME_WAIT (a listening
   * socket still counts); UDP's would share with others that set it. */
  if ((type == SOCK_STREAM &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) ||
      (addr->ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      bind(fd, (const struct sockaddr *)addr, len) != 0)
    rc = -errno;
  close(fd);
  return rc;
}
