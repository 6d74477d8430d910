/* SPDX-License-Identifier: MIT */
/* xfr.c -- zone transfers out: AXFR, and IXFR (RFC 1995) from the history */
#include "dns/dns_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Records per message stop short of this, so a secondary can start on a
 * large zone early and no message comes near the 64 KiB limit. */
#define XFR_MESSAGE_SIZE 16384

/* A transfer is a list of parts sent in order. AXFR: SOA, NS, glue, the
 * device names, SOA. IXFR: the new SOA, then for each batch the SOA
 * before it, the names it hid, the SOA after it and the names it showed,
 * then the new SOA again. */
typedef enum part_kind {
  PART_SOA,   /* one record: the SOA with serial */
  PART_NS,    /* i: nameserver */
  PART_GLUE,  /* i: glue entry, k: its address */
  PART_NAMES, /* i: name, k: the zone's proxy address */
} part_kind_t;

typedef struct part {
  part_kind_t kind;
  uint32_t serial;     /* PART_SOA */
  size_t first, count; /* PART_NAMES: names[first .. first + count) */
} part_t;

struct dns_xfr {
  const reg_config_t *config;
  const reg_zone_t *zone;
  dns_name_t apex;
  dns_soa_t soa; /* the newest; each PART_SOA sets its own serial */
  dns_header_t query;
  dns_question_t question;
  dns_xfr_form_t form;
  uint32_t from_serial; /* DNS_XFR_INCREMENTAL: the client's */
  part_t *parts;
  size_t n_parts, cap_parts;
  size_t part, i, k; /* the next record */
  dns_name_t owner;  /* the current name, once parsed */
  bool owner_ok;
  size_t n_messages, n_records;
  dns_tsig_ctx_t tsig;
  /* The names, copied when the transfer starts: it streams over many
   * callbacks, and the registry may publish meanwhile. */
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

/* Does a visible device called name put records in x's zone? In this zone
 * and not in a child zone we also serve, and not shadowed by glue of the
 * same name (queries answer the glue there). */
static bool name_in_zone(const dns_xfr_t *x, const char *name) {
  const char *base = name;
  if (strncmp(base, "*.", 2) == 0)
    base += 2;
  return zone_of(x->config, base) == x->zone && !glue_named(x->zone, name);
}

static void add_part(dns_xfr_t *x, part_kind_t kind, uint32_t serial) {
  if (x->n_parts == x->cap_parts) {
    x->cap_parts = x->cap_parts ? x->cap_parts * 2 : 8;
    x->parts = xrealloc(x->parts, x->cap_parts * sizeof *x->parts);
  }
  x->parts[x->n_parts++] =
      (part_t){.kind = kind, .serial = serial, .first = x->n_names};
}

/* Adds name to the PART_NAMES part last added, if it belongs in the
 * zone. */
static void add_name(dns_xfr_t *x, const char *name) {
  if (!name_in_zone(x, name))
    return;
  if (x->n_names == x->cap_names) {
    x->cap_names = x->cap_names ? x->cap_names * 2 : 64;
    x->names = xrealloc(x->names, x->cap_names * sizeof *x->names);
  }
  x->names[x->n_names++] = xstrdup(name);
  x->parts[x->n_parts - 1].count++;
}

static bool addr_usable(const core_ip_t *ip) {
  return ip->family == AF_INET || ip->family == AF_INET6;
}

/* Moves the cursor forward until it names a record, or past the last
 * part. */
static void settle(dns_xfr_t *x) {
  for (; x->part < x->n_parts; x->part++, x->i = x->k = 0, x->owner_ok = 0) {
    const part_t *p = &x->parts[x->part];
    switch (p->kind) {
    case PART_SOA:
      if (x->i == 0)
        return;
      break;
    case PART_NS:
      for (; x->i < x->zone->n_nameservers; x->i++) {
        const char *ns = x->zone->nameservers[x->i];
        if (dns_name_from_text(ns, strlen(ns), &x->owner) == 0)
          return;
      }
      break;
    case PART_GLUE:
      for (; x->i < x->zone->n_glue; x->i++, x->k = 0) {
        const reg_glue_t *g = &x->zone->glue[x->i];
        for (; x->k < g->n_addrs; x->k++)
          if (addr_usable(&g->addrs[x->k]) &&
              dns_name_from_text(g->name, strlen(g->name), &x->owner) == 0)
            return;
      }
      break;
    case PART_NAMES:
      for (; x->i < p->count; x->i++, x->k = 0, x->owner_ok = false) {
        const char *name = x->names[p->first + x->i];
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
  }
}

static void advance(dns_xfr_t *x) {
  switch (x->parts[x->part].kind) {
  case PART_SOA:
  case PART_NS:
    x->i++;
    break;
  case PART_GLUE:
  case PART_NAMES:
    x->k++;
    break;
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
  const part_t *p = &x->parts[x->part];
  dns_soa_t soa;
  switch (p->kind) {
  case PART_SOA:
    soa = x->soa;
    soa.serial = p->serial;
    dns_write_rr_soa(w, &x->apex, z->ttl, &soa);
    break;
  case PART_NS:
    dns_write_rr_ns(w, &x->apex, z->ttl, &x->owner);
    break;
  case PART_GLUE:
    write_addr(w, &x->owner, z->ttl, &z->glue[x->i].addrs[x->k]);
    break;
  case PART_NAMES:
    write_addr(w, &x->owner, z->ttl, &z->proxy[x->k]);
    break;
  }
}

static int collect_name(const char *name, void *arg) {
  add_name(arg, name);
  return 0;
}

/* The whole zone as published. */
static int plan_axfr(dns_xfr_t *x, const reg_t *reg) {
  uint64_t number = 0;
  add_part(x, PART_SOA, 0);
  add_part(x, PART_NS, 0);
  add_part(x, PART_GLUE, 0);
  add_part(x, PART_NAMES, 0);
  int rc = reg_foreach_published(reg, &number, collect_name, x);
  if (rc != 0)
    return rc;
  x->soa.serial = dns_zone_serial_at(x->zone, number);
  x->parts[0].serial = x->soa.serial;
  add_part(x, PART_SOA, x->soa.serial);
  return 0;
}

static int collect_batch(uint64_t number, const reg_change_t *changes, size_t n,
                         void *arg) {
  dns_xfr_t *x = arg;
  add_part(x, PART_SOA, dns_zone_serial_at(x->zone, number - 1));
  add_part(x, PART_NAMES, 0);
  for (size_t i = 0; i < n; i++)
    if (!changes[i].visible)
      add_name(x, changes[i].name);
  add_part(x, PART_SOA, dns_zone_serial_at(x->zone, number));
  add_part(x, PART_NAMES, 0);
  for (size_t i = 0; i < n; i++)
    if (changes[i].visible)
      add_name(x, changes[i].name);
  return 0;
}

/* The batches since the client's serial, if the history holds them. */
static int plan_ixfr(dns_xfr_t *x, const reg_t *reg, uint32_t client) {
  uint64_t published = reg_published(reg), to = 0;
  uint32_t ours = dns_zone_serial_at(x->zone, published);
  if ((int32_t)(client - ours) >= 0) {
    x->form = DNS_XFR_UP_TO_DATE;
    x->soa.serial = ours;
    add_part(x, PART_SOA, ours);
    return 0;
  }
  /* Behind us by delta states, if it is one of ours at all. */
  uint32_t delta = ours - client;
  if (delta > published)
    return -ENOENT;
  add_part(x, PART_SOA, 0);
  int rc = reg_batches_since(reg, published - delta, &to, collect_batch, x);
  if (rc != 0)
    return rc;
  x->form = DNS_XFR_INCREMENTAL;
  x->from_serial = client;
  x->soa.serial = dns_zone_serial_at(x->zone, to);
  x->parts[0].serial = x->soa.serial;
  add_part(x, PART_SOA, x->soa.serial);
  return 0;
}

static void forget_plan(dns_xfr_t *x) {
  for (size_t i = 0; i < x->n_names; i++)
    free(x->names[i]);
  x->n_names = 0;
  x->n_parts = 0;
}

dns_xfr_t *dns_xfr_new(const reg_config_t *config, const reg_t *reg,
                       const reg_zone_t *zone, const dns_name_t *apex,
                       const dns_header_t *query,
                       const dns_question_t *question,
                       const uint32_t *ixfr_serial) {
  dns_xfr_t *x = xcalloc(1, sizeof *x);
  x->config = config;
  x->zone = zone;
  x->apex = *apex;
  dns_soa_build(zone, apex, 0, &x->soa);
  x->query = *query;
  x->question = *question;
  x->form = DNS_XFR_WHOLE;
  if (ixfr_serial == NULL || plan_ixfr(x, reg, *ixfr_serial) != 0) {
    /* RFC 1995 4: without the history, the whole zone answers an IXFR. */
    forget_plan(x);
    if (plan_axfr(x, reg) != 0) {
      dns_xfr_free(x);
      return NULL;
    }
  }
  settle(x);
  return x;
}

dns_tsig_ctx_t *dns_xfr_tsig(dns_xfr_t *xfr) {
  return &xfr->tsig;
}

uint32_t dns_xfr_serial(const dns_xfr_t *xfr) {
  return xfr->soa.serial;
}

dns_xfr_form_t dns_xfr_form(const dns_xfr_t *xfr, uint32_t *from_serial) {
  if (from_serial)
    *from_serial = xfr->from_serial;
  return xfr->form;
}

size_t dns_xfr_next(dns_xfr_t *x, uint8_t *out, size_t cap) {
  dns_writer_t w;
  size_t reserve = dns_tsig_reserve(&x->tsig);
  size_t limit = cap < XFR_MESSAGE_SIZE + reserve ? cap : XFR_MESSAGE_SIZE;
  uint16_t an = 0;

  if (x->part == x->n_parts || limit <= reserve + DNS_HEADER_SIZE)
    return 0;
  limit -= reserve;
  dns_writer_init(&w, out, limit);
  dns_write_header(&w, &x->query);
  /* The question goes in the first message only (RFC 5936 2.2). */
  if (x->n_messages == 0)
    dns_write_question(&w, &x->question);
  while (x->part < x->n_parts) {
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
  if (x->part == x->n_parts)
    core_log(CORE_LOG_INFO,
             "dns: transfer of %s serial %u done: %zu records in %zu "
             "messages",
             x->zone->name, x->soa.serial, x->n_records, x->n_messages);
  return n;
}

void dns_xfr_free(dns_xfr_t *xfr) {
  if (xfr == NULL)
    return;
  forget_plan(xfr);
  free(xfr->names);
  free(xfr->parts);
  free(xfr);
}
