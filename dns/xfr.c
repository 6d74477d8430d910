/* SPDX-License-Identifier: MIT */
/* xfr.c -- zone transfers out: AXFR, and IXFR answered as AXFR */
#include "dns/dns_int.h"

#include <stdlib.h>
#include <string.h>

/* Records per message stop short of this, so a secondary can start on a
 * large zone early and no message comes near the 64 KiB limit. */
#define XFR_MESSAGE_SIZE 16384

/* What the transfer sends, in order; the cursor (stage, i, k) names the
 * next record. */
typedef enum stage {
  STAGE_SOA_FIRST,
  STAGE_NS,
  STAGE_GLUE,    /* i: glue entry, k: its address */
  STAGE_DEVICES, /* i: device name, k: the zone's proxy address */
  STAGE_SOA_LAST,
  STAGE_DONE,
} stage_t;

struct dns_xfr {
  const reg_config_t *config;
  const reg_zone_t *zone;
  dns_name_t apex;
  dns_soa_t soa;
  dns_header_t query;
  dns_question_t question;
  stage_t stage;
  size_t i, k;
  dns_name_t owner; /* the current device's name, once parsed */
  bool owner_ok;
  bool up_to_date; /* IXFR from our serial: one SOA is the whole answer */
  size_t n_messages, n_records;
  dns_tsig_ctx_t tsig;
  /* The zone's device names, copied from the live registry when the
   * transfer starts: the transfer streams over many callbacks, and the
   * registry may change (reload, update) meanwhile. */
  char **names;
  size_t n_names, cap_names;
};

/* The configured zone that holds name (text, normalised): the one with
 * the longest apex. */
static const reg_zone_t *zone_of(const reg_config_t *config, const char *name) {
  const reg_zone_t *best = NULL;
  size_t best_len = 0, len = strlen(name);
  for (size_t i = 0; i < config->dns.n_zones; i++) {
    const reg_zone_t *z = &config->dns.zones[i];
    size_t zl = z->name ? strlen(z->name) : 0;
    if (z->name && core_name_in_zone(name, len, z->name, zl) &&
        (!best || zl > best_len)) {
      best = z;
      best_len = zl;
    }
  }
  return best;
}

static const reg_glue_t *glue_named(const reg_zone_t *zone, const char *name) {
  for (size_t i = 0; i < zone->n_glue; i++)
    if (zone->glue[i].name && strcmp(zone->glue[i].name, name) == 0)
      return &zone->glue[i];
  return NULL;
}

/* Does device d put records in x's zone? Enabled, in this zone and not in
 * a child zone we also serve, and not shadowed by glue of the same name
 * (queries answer the glue there). */
static bool device_in_zone(const dns_xfr_t *x, const reg_device_t *d) {
  if (!d->enabled || !d->name)
    return false;
  const char *base = d->name;
  if (d->wildcard && strncmp(base, "*.", 2) == 0)
    base += 2;
  return zone_of(x->config, base) == x->zone && !glue_named(x->zone, d->name);
}

static int collect_name(const reg_device_t *d, void *arg) {
  dns_xfr_t *x = arg;
  if (!device_in_zone(x, d))
    return 0;
  if (x->n_names == x->cap_names) {
    x->cap_names = x->cap_names ? x->cap_names * 2 : 64;
    x->names = xrealloc(x->names, x->cap_names * sizeof *x->names);
  }
  x->names[x->n_names++] = xstrdup(d->name);
  return 0;
}

static bool addr_usable(const core_ip_t *ip) {
  return ip->family == AF_INET || ip->family == AF_INET6;
}

/* Moves the cursor forward until it names a record, or to STAGE_DONE. */
static void settle(dns_xfr_t *x) {
  for (;;) {
    switch (x->stage) {
    case STAGE_SOA_FIRST:
    case STAGE_SOA_LAST:
    case STAGE_DONE:
      return;
    case STAGE_NS:
      for (; x->i < x->zone->n_nameservers; x->i++) {
        const char *ns = x->zone->nameservers[x->i];
        if (dns_name_from_text(ns, strlen(ns), &x->owner) == 0)
          return;
      }
      break;
    case STAGE_GLUE:
      for (; x->i < x->zone->n_glue; x->i++, x->k = 0) {
        const reg_glue_t *g = &x->zone->glue[x->i];
        for (; x->k < g->n_addrs; x->k++)
          if (addr_usable(&g->addrs[x->k]) &&
              dns_name_from_text(g->name, strlen(g->name), &x->owner) == 0)
            return;
      }
      break;
    case STAGE_DEVICES:
      for (; x->i < x->n_names; x->i++, x->k = 0, x->owner_ok = 0) {
        const char *name = x->names[x->i];
        if (x->k == 0 && !x->owner_ok) {
          if (dns_name_from_text(name, strlen(name), &x->owner) != 0)
            continue;
          x->owner_ok = true;
        }
        for (; x->k < x->zone->n_proxy; x->k++)
          if (addr_usable(&x->zone->proxy[x->k]))
            return;
      }
      break;
    }
    x->stage++;
    x->i = x->k = 0;
    x->owner_ok = false;
  }
}

static void advance(dns_xfr_t *x) {
  switch (x->stage) {
  case STAGE_SOA_FIRST:
    x->stage = x->up_to_date ? STAGE_DONE : STAGE_NS;
    break;
  case STAGE_SOA_LAST:
    x->stage = STAGE_DONE;
    break;
  case STAGE_NS:
    x->i++;
    break;
  case STAGE_GLUE:
  case STAGE_DEVICES:
    x->k++;
    break;
  case STAGE_DONE:
    return;
  }
  settle(x);
}

static void write_addr(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                       const core_ip_t *ip) {
  if (ip->family == AF_INET)
    dns_write_rr_a(w, owner, ttl, ip->bytes);
  else
    dns_write_rr_aaaa(w, owner, ttl, ip->bytes);
}

/* Writes the record under the cursor. */
static void write_current(dns_xfr_t *x, dns_writer_t *w) {
  const reg_zone_t *z = x->zone;
  switch (x->stage) {
  case STAGE_SOA_FIRST:
  case STAGE_SOA_LAST:
    dns_write_rr_soa(w, &x->apex, z->ttl, &x->soa);
    break;
  case STAGE_NS:
    dns_write_rr_ns(w, &x->apex, z->ttl, &x->owner);
    break;
  case STAGE_GLUE:
    write_addr(w, &x->owner, z->ttl, &z->glue[x->i].addrs[x->k]);
    break;
  case STAGE_DEVICES:
    write_addr(w, &x->owner, z->ttl, &z->proxy[x->k]);
    break;
  case STAGE_DONE:
    break;
  }
}

dns_xfr_t *dns_xfr_new(const reg_config_t *config, const reg_t *reg,
                       const reg_zone_t *zone, const dns_name_t *apex,
                       const dns_soa_t *soa, const dns_header_t *query,
                       const dns_question_t *question, bool up_to_date) {
  dns_xfr_t *x = xcalloc(1, sizeof *x);
  x->config = config;
  x->zone = zone;
  x->apex = *apex;
  x->soa = *soa;
  x->query = *query;
  x->question = *question;
  x->up_to_date = up_to_date;
  x->stage = STAGE_SOA_FIRST;
  if (!up_to_date)
    reg_foreach(reg, collect_name, x);
  return x;
}

dns_tsig_ctx_t *dns_xfr_tsig(dns_xfr_t *xfr) {
  return &xfr->tsig;
}

size_t dns_xfr_next(dns_xfr_t *x, uint8_t *out, size_t cap) {
  dns_writer_t w;
  size_t reserve = dns_tsig_reserve(&x->tsig);
  size_t limit = cap < XFR_MESSAGE_SIZE + reserve ? cap : XFR_MESSAGE_SIZE;
  uint16_t an = 0;

  if (x->stage == STAGE_DONE || limit <= reserve + DNS_HEADER_SIZE)
    return 0;
  limit -= reserve;
  dns_writer_init(&w, out, limit);
  dns_write_header(&w, &x->query);
  /* The question goes in the first message only (RFC 5936 2.2). */
  if (x->n_messages == 0)
    dns_write_question(&w, &x->question);
  while (x->stage != STAGE_DONE) {
    size_t before = w.len;
    write_current(x, &w);
    if (w.too_big) {
      dns_writer_rewind(&w, before);
      break;
    }
    an++;
    advance(x);
  }
  /* Not even one record fits: only with a cap far below the contract. */
  if (an == 0)
    return 0;
  dns_header_t h = {
      .id = x->query.id,
      .flags = (uint16_t)(DNS_FLAG_QR | DNS_FLAG_AA |
                          (x->query.flags & DNS_FLAG_RD)),
      .qdcount = x->n_messages == 0 ? 1 : 0,
      .ancount = an,
  };
  dns_header_encode(&h, out);
  x->n_messages++;
  x->n_records += an;
  size_t n = dns_tsig_sign(&x->tsig, out, w.len, cap);
  if (x->stage == STAGE_DONE)
    core_log(CORE_LOG_INFO,
             "dns: transfer of %s serial %u done: %zu records in %zu "
             "messages",
             x->zone->name, x->soa.serial, x->n_records, x->n_messages);
  return n;
}

void dns_xfr_free(dns_xfr_t *xfr) {
  if (xfr == NULL)
    return;
  for (size_t i = 0; i < xfr->n_names; i++)
    free(xfr->names[i]);
  free(xfr->names);
  free(xfr);
}
