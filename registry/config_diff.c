/* SPDX-License-Identifier: MIT */
/* config_diff.c -- which settings a reload cannot apply to running workers */
#include "registry/registry.h"

#include <string.h>

static bool same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool same_ips(const core_ip_t *a, size_t na, const core_ip_t *b,
                     size_t nb) {
  if (na != nb)
    return false;
  for (size_t i = 0; i < na; i++)
    if (a[i].family != b[i].family ||
        memcmp(a[i].bytes, b[i].bytes, sizeof a[i].bytes) != 0)
      return false;
  return true;
}

static bool same_addrs(const struct sockaddr_storage *a, size_t na,
                       const struct sockaddr_storage *b, size_t nb) {
  /* core_hostport_parse zeroes the whole storage before filling it. */
  return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static bool same_zone(const reg_zone_t *x, const reg_zone_t *y) {
  if (!same_str(x->name, y->name) ||
      !same_ips(x->proxy, x->n_proxy, y->proxy, y->n_proxy) ||
      x->ttl != y->ttl || !same_str(x->soa_email, y->soa_email) ||
      x->soa_refresh != y->soa_refresh || x->soa_retry != y->soa_retry ||
      x->soa_expire != y->soa_expire || x->soa_minimum != y->soa_minimum ||
      x->n_nameservers != y->n_nameservers || x->n_glue != y->n_glue)
    return false;
  for (size_t i = 0; i < x->n_nameservers; i++)
    if (!same_str(x->nameservers[i], y->nameservers[i]))
      return false;
  for (size_t i = 0; i < x->n_glue; i++)
    if (!same_str(x->glue[i].name, y->glue[i].name) ||
        !same_ips(x->glue[i].addrs, x->glue[i].n_addrs, y->glue[i].addrs,
                  y->glue[i].n_addrs))
      return false;
  return true;
}

static bool same_zones(const reg_config_t *a, const reg_config_t *b) {
  if (a->dns.n_zones != b->dns.n_zones)
    return false;
  for (size_t i = 0; i < a->dns.n_zones; i++)
    if (!same_zone(&a->dns.zones[i], &b->dns.zones[i]))
      return false;
  return true;
}

static bool same_allow_targets(const reg_config_t *a, const reg_config_t *b) {
  if (a->proxy.n_allow_targets != b->proxy.n_allow_targets)
    return false;
  for (size_t i = 0; i < a->proxy.n_allow_targets; i++) {
    const core_prefix_t *x = &a->proxy.allow_targets[i];
    const core_prefix_t *y = &b->proxy.allow_targets[i];
    if (x->bits != y->bits || !same_ips(&x->ip, 1, &y->ip, 1))
      return false;
  }
  return true;
}

size_t reg_config_restart_keys(const reg_config_t *running,
                               const reg_config_t *next, const char **keys,
                               size_t max) {
  const reg_config_t *a = running, *b = next;
  size_t n = 0;
#define DIFFERS(key, same)                                                     \
  do {                                                                         \
    if (!(same) && n < max)                                                    \
      keys[n++] = (key);                                                       \
  } while (0)
  DIFFERS("workers", a->workers == b->workers);
  DIFFERS("state_dir", same_str(a->state_dir, b->state_dir));
  DIFFERS("proxy.timeouts",
          a->proxy.peek_timeout_ms == b->proxy.peek_timeout_ms &&
              a->proxy.connect_timeout_ms == b->proxy.connect_timeout_ms &&
              a->proxy.idle_timeout_ms == b->proxy.idle_timeout_ms &&
              a->proxy.drain_timeout_ms == b->proxy.drain_timeout_ms);
  DIFFERS("proxy.limits",
          a->proxy.max_connections == b->proxy.max_connections &&
              a->proxy.max_per_source == b->proxy.max_per_source &&
              a->proxy.max_peeking == b->proxy.max_peeking);
  DIFFERS("proxy.max_hello", a->proxy.max_hello == b->proxy.max_hello);
  DIFFERS("proxy.allow_targets", same_allow_targets(a, b));
  DIFFERS("proxy.access_log",
          same_str(a->proxy.access_log, b->proxy.access_log));
  DIFFERS("proxy.splice", a->proxy.splice == b->proxy.splice);
  DIFFERS("dns.listen", same_addrs(a->dns.listen, a->dns.n_listen,
                                   b->dns.listen, b->dns.n_listen));
  DIFFERS("dns.zones", same_zones(a, b));
  DIFFERS("update.listen",
          same_addrs(a->update.listen, a->update.n_listen, b->update.listen,
                     b->update.n_listen) &&
              same_addrs(a->update.tls_listen, a->update.n_tls_listen,
                         b->update.tls_listen, b->update.n_tls_listen));
  DIFFERS("dns.serial_batch", a->dns.serial_batch_ms == b->dns.serial_batch_ms);
#undef DIFFERS
  return n;
}
