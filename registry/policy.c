/* SPDX-License-Identifier: MIT */
/* policy.c -- which device addresses the proxy may connect to */
#include "registry/registry.h"

#include <arpa/inet.h>
#include <string.h>

typedef struct special_range {
  const char *prefix;
  const char *why;
} special_range_t;

/* Ranges a device must never point the proxy at by accident or by malice:
 * they reach the proxy host itself, nobody in particular, or the carrier's
 * internal network. */
static const special_range_t special_ranges[] = {
    {"127.0.0.0/8", "loopback address"},
    {"0.0.0.0/8", "unspecified address"},
    {"169.254.0.0/16", "link-local address"},
    {"224.0.0.0/4", "multicast address"},
    {"240.0.0.0/4", "reserved or broadcast address"},
    {"10.0.0.0/8", "private address"},
    {"172.16.0.0/12", "private address"},
    {"192.168.0.0/16", "private address"},
    {"100.64.0.0/10", "shared (carrier-grade NAT) address"},
    {"fc00::/7", "unique local address"},
    {"::1/128", "loopback address"},
    {"::/128", "unspecified address"},
    {"fe80::/10", "link-local address"},
    {"ff00::/8", "multicast address"},
};

static bool prefix_inside(const core_prefix_t *inner,
                          const core_prefix_t *outer) {
  return inner->ip.family == outer->ip.family && inner->bits >= outer->bits &&
         core_prefix_contains(outer, &inner->ip);
}

/* True when some allow_targets prefix inside range contains ip. */
static bool explicitly_allowed(const reg_config_t *config,
                               const core_prefix_t *range,
                               const core_ip_t *ip) {
  for (size_t i = 0; i < config->proxy.n_allow_targets; i++) {
    const core_prefix_t *allow = &config->proxy.allow_targets[i];
    if (prefix_inside(allow, range) && core_prefix_contains(allow, ip))
      return true;
  }
  return false;
}

static bool is_own_listener(const reg_config_t *config, const core_ip_t *ip,
                            uint16_t port) {
  for (size_t i = 0; i < config->n_listeners; i++) {
    const struct sockaddr *sa =
        (const struct sockaddr *)&config->listeners[i].addr;
    core_ip_t own;
    if (core_ip_from_sockaddr(sa, &own) != 0)
      continue;
    uint16_t own_port =
        ntohs(sa->sa_family == AF_INET
                  ? ((const struct sockaddr_in *)sa)->sin_port
                  : ((const struct sockaddr_in6 *)sa)->sin6_port);
    if (own_port != port)
      continue;
    core_prefix_t exact = {own, own.family == AF_INET ? 32 : 128};
    static const uint8_t zero[16];
    /* A wildcard listener answers on every local address. */
    if (memcmp(own.bytes, zero, 16) == 0 || core_prefix_contains(&exact, ip))
      return true;
  }
  return false;
}

bool reg_target_allowed(const reg_config_t *config, const core_ip_t *ip,
                        uint16_t port, const char **why) {
  if (is_own_listener(config, ip, port)) {
    *why = "the proxy's own listener address";
    return false;
  }
  for (size_t i = 0; i < sizeof special_ranges / sizeof special_ranges[0];
       i++) {
    core_prefix_t range;
    const char *unused;
    if (core_prefix_parse(special_ranges[i].prefix, &range, &unused) != 0)
      continue;
    if (core_prefix_contains(&range, ip)) {
      if (explicitly_allowed(config, &range, ip))
        return true;
      *why = special_ranges[i].why;
      return false;
    }
  }
  if (config->proxy.n_allow_targets == 0)
    return true;
  for (size_t i = 0; i < config->proxy.n_allow_targets; i++)
    if (core_prefix_contains(&config->proxy.allow_targets[i], ip))
      return true;
  *why = "outside allow_targets";
  return false;
}
