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

static bool same_prefixes(const core_prefix_t *a, size_t na,
                          const core_prefix_t *b, size_t nb) {
  if (na != nb)
    return false;
  for (size_t i = 0; i < na; i++)
    if (a[i].bits != b[i].bits || !same_ips(&a[i].ip, 1, &b[i].ip, 1))
      return false;
  return true;
}

static bool same_strs(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb)
    return false;
  for (size_t i = 0; i < na; i++)
    if (!same_str(a[i], b[i]))
      return false;
  return true;
}

/* notify and allow_transfer: the DNS workers keep their start values. */
static bool same_replication(const reg_zone_t *x, const reg_zone_t *y) {
  if (x->n_notify != y->n_notify ||
      !same_prefixes(x->transfer_prefixes, x->n_transfer_prefixes,
                     y->transfer_prefixes, y->n_transfer_prefixes) ||
      !same_strs(x->transfer_keys, x->n_transfer_keys, y->transfer_keys,
                 y->n_transfer_keys))
    return false;
  for (size_t i = 0; i < x->n_notify; i++)
    if (!same_addrs(&x->notify[i].addr, 1, &y->notify[i].addr, 1) ||
        !same_str(x->notify[i].key, y->notify[i].key))
      return false;
  return true;
}

static bool same_zone(const reg_zone_t *x, const reg_zone_t *y) {
  if (!same_str(x->name, y->name) ||
      !same_ips(x->proxy, x->n_proxy, y->proxy, y->n_proxy) ||
      x->ttl != y->ttl || !same_str(x->soa_email, y->soa_email) ||
      x->soa_refresh != y->soa_refresh || x->soa_retry != y->soa_retry ||
      x->soa_expire != y->soa_expire || x->soa_minimum != y->soa_minimum ||
      !same_strs(x->nameservers, x->n_nameservers, y->nameservers,
                 y->n_nameservers) ||
      x->n_glue != y->n_glue || !same_replication(x, y))
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

static bool same_tsig_keys(const reg_config_t *a, const reg_config_t *b) {
  if (a->dns.n_tsig_keys != b->dns.n_tsig_keys)
    return false;
  for (size_t i = 0; i < a->dns.n_tsig_keys; i++) {
    const reg_tsig_key_t *x = &a->dns.tsig_keys[i], *y = &b->dns.tsig_keys[i];
    if (!same_str(x->name, y->name) || x->algorithm != y->algorithm ||
        x->secret_len != y->secret_len ||
        memcmp(x->secret, y->secret, x->secret_len) != 0)
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
  DIFFERS("cpu_affinity", a->cpu_affinity == b->cpu_affinity);
  DIFFERS("cpu_scheduling", a->cpu_scheduling == b->cpu_scheduling);
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
  DIFFERS("proxy.allow_targets",
          same_prefixes(a->proxy.allow_targets, a->proxy.n_allow_targets,
                        b->proxy.allow_targets, b->proxy.n_allow_targets));
  DIFFERS("proxy.access_log",
          same_str(a->proxy.access_log, b->proxy.access_log));
  DIFFERS("proxy.splice", a->proxy.splice == b->proxy.splice);
  DIFFERS("proxy.resolvers", same_str(a->proxy.resolvers, b->proxy.resolvers));
  DIFFERS("dns.listen", same_addrs(a->dns.listen, a->dns.n_listen,
                                   b->dns.listen, b->dns.n_listen));
  DIFFERS("dns.zones", same_zones(a, b));
  DIFFERS("update.listen",
          same_addrs(a->update.listen, a->update.n_listen, b->update.listen,
                     b->update.n_listen) &&
              same_addrs(a->update.tls_listen, a->update.n_tls_listen,
                         b->update.tls_listen, b->update.n_tls_listen));
  DIFFERS("dns.serial_batch", a->dns.serial_batch_ms == b->dns.serial_batch_ms);
  DIFFERS("dns.tsig_keys", same_tsig_keys(a, b));
  DIFFERS("dns.rate_limit",
          a->dns.rrl_responses_per_second == b->dns.rrl_responses_per_second &&
              a->dns.rrl_slip == b->dns.rrl_slip);
  DIFFERS("dns.tcp_idle", a->dns.tcp_idle_ms == b->dns.tcp_idle_ms);
  DIFFERS("dns.tcp_connections",
          a->dns.tcp_connections == b->dns.tcp_connections);
  DIFFERS("dns.version", same_str(a->dns.version, b->dns.version));
  DIFFERS("dns.identity", same_str(a->dns.identity, b->dns.identity));
#undef DIFFERS
  return n;
}
