/* SPDX-License-Identifier: MIT */
/* answer.c -- builds the authoritative answer to one query */
#include "dns/dns.h"
#include "dns/dns_int.h"

#include <stddef.h>
#include <string.h>

/* What the query asked, as far as it could be read. */
typedef struct query {
  dns_header_t header;
  bool has_question;              /* the first question parsed */
  const dns_question_t *question; /* ahead's or own */
  bool well_formed; /* every section parsed, one question, OPT rules kept */
  bool has_opt;
  uint16_t opt_size;
  uint8_t opt_version;
  bool opt_do;
  bool has_cookie; /* a well-formed COOKIE option */
  uint8_t client_cookie[8];
  const uint8_t *server_cookie; /* in the query, or NULL */
  size_t server_cookie_len;
  /* Last: query_parse clears only what comes before. */
  dns_question_t own;
} query_t;

/* The answer being built. Records are counted per section as written; the
 * header goes in last. */
typedef struct reply {
  const query_t *q;
  const dns_answer_opts_t *opts;
  dns_writer_t w;
  unsigned rcode; /* 12-bit: the upper bits travel in the OPT record */
  bool aa;
  uint16_t an, ns, ar;
  const reg_t *reg; /* for the zone serial */
} reply_t;

/* The options in an OPT record's data; false when they do not tile it
 * or a COOKIE has a length RFC 7873 5.2.2 forbids. */
static bool options_parse(const uint8_t *msg, const dns_rr_t *rr, query_t *q) {
  size_t p = rr->rdata, end = rr->rdata + rr->rdlength;
  while (p < end) {
    if (end - p < 4)
      return false;
    uint16_t code = (uint16_t)(msg[p] << 8 | msg[p + 1]);
    size_t n = (size_t)(msg[p + 2] << 8 | msg[p + 3]);
    p += 4;
    if (end - p < n)
      return false;
    if (code == DNS_OPT_CODE_COOKIE) {
      if (n != 8 && (n < 16 || n > 40))
        return false;
      if (!q->has_cookie) {
        q->has_cookie = true;
        memcpy(q->client_cookie, msg + p, 8);
        q->server_cookie = n > 8 ? msg + p + 8 : NULL;
        q->server_cookie_len = n - 8;
      }
    }
    /* Other options are ignored (RFC 6891 6.1.2). */
    p += n;
  }
  return true;
}

static void query_parse(const uint8_t *msg, size_t len,
                        const dns_question_ahead_t *ahead, query_t *q) {
  size_t pos = DNS_HEADER_SIZE;
  unsigned n_opt = 0;

  /* The question is copied only when it is decoded here. */
  memset(q, 0, offsetof(query_t, own));
  dns_header_parse(msg, len, &q->header);
  for (unsigned i = 0; i < q->header.qdcount; i++) {
    dns_question_t scratch;
    dns_question_t *out = i == 0 ? &q->own : &scratch;
    if (i == 0 && ahead) {
      q->question = &ahead->question;
      pos = ahead->end;
    } else if (dns_question_parse(msg, len, &pos, out) != DNS_WIRE_OK) {
      return;
    }
    if (i == 0 && !ahead)
      q->question = &q->own;
    if (i == 0)
      q->has_question = true;
  }
  unsigned n_rr =
      (unsigned)q->header.ancount + q->header.nscount + q->header.arcount;
  unsigned first_additional = n_rr - q->header.arcount;
  for (unsigned i = 0; i < n_rr; i++) {
    dns_rr_t rr;
    if (dns_rr_parse(msg, len, &pos, &rr) != DNS_WIRE_OK)
      return;
    if (rr.type != DNS_TYPE_OPT)
      continue;
    /* RFC 6891 6.1.1: one OPT, in the additional section, owner root. */
    if (++n_opt > 1 || i < first_additional || rr.name.labels != 0)
      return;
    q->has_opt = true;
    q->opt_size = rr.rclass;
    q->opt_version = (uint8_t)(rr.ttl >> 16);
    q->opt_do = (rr.ttl & DNS_OPT_DO) != 0;
    if (!options_parse(msg, &rr, q))
      return;
  }
  q->well_formed = q->header.qdcount == 1;
}

static size_t size_limit(const query_t *q, size_t cap,
                         const dns_answer_opts_t *opts) {
  size_t limit = DNS_UDP_PLAIN_MAX;
  if (opts->tcp) {
    limit = cap;
  } else if (q->has_opt) {
    limit = q->opt_size < DNS_UDP_PLAIN_MAX ? DNS_UDP_PLAIN_MAX : q->opt_size;
    if (limit > DNS_EDNS_SIZE)
      limit = DNS_EDNS_SIZE;
  }
  if (limit > cap)
    limit = cap;
  /* Keep room for a header however large the reserve. */
  if (limit > DNS_HEADER_SIZE + opts->reserve)
    limit -= opts->reserve;
  return limit;
}

/* ---- sections ----------------------------------------------------------- */

static const dns_name_t *qname(const reply_t *r) {
  return &r->q->question->name;
}

/* The owner name of records at the question name: the question's own bytes,
 * which the writer turns into a pointer to offset 12. */
static void answer_addrs(reply_t *r, const core_ip_t *ips, size_t n, int family,
                         uint32_t ttl) {
  for (size_t i = 0; i < n; i++) {
    if (ips[i].family != family)
      continue;
    if (family == AF_INET)
      dns_write_rr_a(&r->w, qname(r), ttl, ips[i].bytes);
    else
      dns_write_rr_aaaa(&r->w, qname(r), ttl, ips[i].bytes);
    r->an++;
  }
}

uint32_t dns_zone_serial_at(const reg_zone_t *zone, uint64_t published) {
  /* Serial arithmetic (RFC 1982) wraps, so the sum may too. */
  return zone->serial + (uint32_t)published;
}

uint32_t dns_zone_serial(const reg_zone_t *zone, const reg_t *reg) {
  return dns_zone_serial_at(zone, reg ? reg_published(reg) : 0);
}

void dns_soa_build(const reg_zone_t *zone, const dns_name_t *apex,
                   uint32_t serial, dns_soa_t *soa) {
  if (zone->n_nameservers == 0 ||
      dns_name_from_text(zone->nameservers[0], strlen(zone->nameservers[0]),
                         &soa->mname) != 0) {
    if (dns_name_prepend(apex, "ns", 2, &soa->mname) != 0)
      soa->mname = *apex;
  }

  /* The mailbox's local part is one label even when it holds dots
   * (RFC 1035 8), so it is not simply the address with '@' -> '.'. */
  const char *email = zone->soa_email ? zone->soa_email : "";
  const char *at = strchr(email, '@');
  int err;
  if (at) {
    dns_name_t domain;
    err = dns_name_from_text(at + 1, strlen(at + 1), &domain);
    if (err == 0)
      err = dns_name_prepend(&domain, email, (size_t)(at - email), &soa->rname);
  } else {
    err = *email ? dns_name_from_text(email, strlen(email), &soa->rname) : -1;
  }
  if (err != 0 && dns_name_prepend(apex, "hostmaster", 10, &soa->rname) != 0)
    soa->rname = *apex;

  soa->serial = serial;
  soa->refresh = zone->soa_refresh;
  soa->retry = zone->soa_retry;
  soa->expire = zone->soa_expire;
  soa->minimum = zone->soa_minimum;
}

static void answer_soa(reply_t *r, const reg_zone_t *zone,
                       const dns_name_t *apex) {
  dns_soa_t soa;
  dns_soa_build(zone, apex, dns_zone_serial(zone, r->reg), &soa);
  dns_write_rr_soa(&r->w, qname(r), zone->ttl, &soa);
  r->an++;
}

/* NXDOMAIN and NODATA carry the SOA so resolvers know how long to cache the
 * negative answer: the lesser of its TTL and MINIMUM (RFC 2308 3). */
static void authority_soa(reply_t *r, const reg_zone_t *zone,
                          const dns_name_t *apex) {
  dns_soa_t soa;
  dns_soa_build(zone, apex, dns_zone_serial(zone, r->reg), &soa);
  uint32_t ttl = zone->soa_minimum < zone->ttl ? zone->soa_minimum : zone->ttl;
  dns_write_rr_soa(&r->w, apex, ttl, &soa);
  r->ns++;
}

static const reg_glue_t *glue_find(const reg_zone_t *zone, const char *name) {
  for (size_t i = 0; i < zone->n_glue; i++)
    if (zone->glue[i].name && strcmp(zone->glue[i].name, name) == 0)
      return &zone->glue[i];
  return NULL;
}

static void answer_ns(reply_t *r, const reg_zone_t *zone,
                      const dns_name_t *apex) {
  for (size_t i = 0; i < zone->n_nameservers; i++) {
    dns_name_t host;
    const char *ns = zone->nameservers[i];
    if (dns_name_from_text(ns, strlen(ns), &host) != 0)
      continue;
    dns_write_rr_ns(&r->w, qname(r), zone->ttl, &host);
    r->an++;
  }
  /* Glue: addresses of the in-zone servers, so resolvers need no second
   * round trip. */
  for (size_t i = 0; i < zone->n_nameservers; i++) {
    dns_name_t host;
    const char *ns = zone->nameservers[i];
    const reg_glue_t *glue = glue_find(zone, ns);
    if (!glue || dns_name_from_text(ns, strlen(ns), &host) != 0)
      continue;
    for (size_t k = 0; k < glue->n_addrs; k++) {
      const core_ip_t *ip = &glue->addrs[k];
      if (ip->family == AF_INET)
        dns_write_rr_a(&r->w, &host, zone->ttl, ip->bytes);
      else if (ip->family == AF_INET6)
        dns_write_rr_aaaa(&r->w, &host, zone->ttl, ip->bytes);
      else
        continue;
      r->ar++;
    }
  }
  if (r->an == 0)
    authority_soa(r, zone, apex);
}

/* A/AAAA/ANY from a list of addresses; other types get NODATA. */
static void answer_host(reply_t *r, const reg_zone_t *zone,
                        const dns_name_t *apex, const core_ip_t *ips,
                        size_t n) {
  uint16_t qtype = r->q->question->qtype;
  if (qtype == DNS_TYPE_A || qtype == DNS_TYPE_ANY)
    answer_addrs(r, ips, n, AF_INET, zone->ttl);
  if (qtype == DNS_TYPE_AAAA || qtype == DNS_TYPE_ANY)
    answer_addrs(r, ips, n, AF_INET6, zone->ttl);
  if (r->an == 0)
    authority_soa(r, zone, apex);
}

/* The device that answers for name, if it belongs to zone: a wildcard or
 * name from a parent zone must not reach across the cut into a child. (So
 * no wildcard answers for an apex: it would sit above it.) */
static const reg_device_t *device_find(const reply_t *r, const reg_t *reg,
                                       const reg_zone_t *zone, const char *name,
                                       size_t len) {
  const dns_lookup_hint_t *hint = r->opts->hint;
  const reg_device_t *dev =
      hint != NULL && hint->len == len && memcmp(hint->name, name, len) == 0
          ? hint->device
          : reg_lookup(reg, name, len);
  if (!dev)
    return NULL;
  /* A device found by its own name has name's text: its entry's name is
   * not read again (at millions of devices, another wait for memory). */
  const char *base = name;
  size_t base_len = len;
  if (dev->wildcard) {
    base = dev->name;
    if (strncmp(base, "*.", 2) == 0)
      base += 2;
    base_len = strlen(base);
  }
  if (!core_name_in_zone(base, base_len, zone->name, strlen(zone->name)))
    return NULL;
  return dev;
}

/* A name with a wildcard right below it exists as an empty non-terminal
 * (RFC 4592 2.2.2). It gets NODATA: an NXDOMAIN would tell resolvers that
 * cut the tree there (RFC 8020) that the names the wildcard covers do not
 * exist either. */
static bool wildcard_below(const reg_t *reg, const char *name, size_t len) {
  char key[CORE_NAME_MAX + 1];
  if (len + 2 > CORE_NAME_MAX)
    return false;
  key[0] = '*';
  key[1] = '.';
  memcpy(key + 2, name, len);
  const reg_device_t *dev = reg_lookup(reg, key, len + 2);
  return dev && strncmp(dev->name, key, len + 2) == 0 &&
         dev->name[len + 2] == '\0';
}

static void answer_apex(reply_t *r, const reg_t *reg, const reg_zone_t *zone,
                        const dns_name_t *apex) {
  switch (r->q->question->qtype) {
  case DNS_TYPE_SOA:
  case DNS_TYPE_ANY: /* RFC 8482: one RRset is enough */
    answer_soa(r, zone, apex);
    return;
  case DNS_TYPE_NS:
    answer_ns(r, zone, apex);
    return;
  case DNS_TYPE_A:
  case DNS_TYPE_AAAA: {
    /* A device registered at the apex itself is served like any other. */
    const reg_device_t *dev =
        device_find(r, reg, zone, zone->name, strlen(zone->name));
    if (dev) {
      answer_host(r, zone, apex, zone->proxy, zone->n_proxy);
      return;
    }
    break;
  }
  default:
    break;
  }
  authority_soa(r, zone, apex);
}

static void answer_zone(reply_t *r, const reg_t *reg, const reg_zone_t *zone,
                        const dns_name_t *apex) {
  char buf[DNS_NAME_TEXT_MAX];
  const dns_question_ahead_t *ahead = r->opts->ahead;
  const char *text = buf;
  int len;

  r->aa = true;
  if (qname(r)->labels == apex->labels) {
    answer_apex(r, reg, zone, apex);
    return;
  }
  if (ahead && ahead->text) {
    text = ahead->text;
    len = (int)ahead->text_len;
  } else {
    len = dns_name_to_text(qname(r), buf, sizeof buf, true);
  }
  /* An escape means a byte no host name can hold (a dot inside a label,
   * say): the text would split labels differently than the wire does, and
   * no glue or device can carry such a name. */
  if (len > 0 && memchr(text, '\\', (size_t)len) == NULL) {
    const reg_glue_t *glue = glue_find(zone, text);
    if (glue) {
      answer_host(r, zone, apex, glue->addrs, glue->n_addrs);
      return;
    }
    if (device_find(r, reg, zone, text, (size_t)len)) {
      answer_host(r, zone, apex, zone->proxy, zone->n_proxy);
      return;
    }
    if (wildcard_below(reg, text, (size_t)len)) {
      authority_soa(r, zone, apex);
      return;
    }
  }
  r->rcode = DNS_RCODE_NXDOMAIN;
  authority_soa(r, zone, apex);
}

/* The zone holding qname: the one with the most labels among those it lies
 * in. */
const reg_zone_t *dns_zone_find(const reg_config_t *config,
                                const dns_name_t *name, dns_name_t *apex) {
  const reg_zone_t *best = NULL;
  for (size_t i = 0; i < config->dns.n_zones; i++) {
    const reg_zone_t *zone = &config->dns.zones[i];
    dns_name_t candidate;
    if (!zone->name ||
        dns_name_from_text(zone->name, strlen(zone->name), &candidate) != 0)
      continue;
    if (!dns_name_is_under(name, &candidate))
      continue;
    if (best && candidate.labels <= apex->labels)
      continue;
    best = zone;
    *apex = candidate;
  }
  return best;
}

/* CHAOS TXT for the names operators and monitoring ask servers about
 * themselves; refused unless the configuration gives a text. */
static bool answer_chaos(reply_t *r, const reg_config_t *config) {
  static const struct {
    const char *name;
    bool identity;
  } names[] = {{"version.bind", false},
               {"version.server", false},
               {"id.server", true},
               {"hostname.bind", true}};
  char text[DNS_NAME_TEXT_MAX];
  if (dns_name_to_text(qname(r), text, sizeof text, true) < 0)
    return false;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(text, names[i].name) != 0)
      continue;
    const char *value =
        names[i].identity ? config->dns.identity : config->dns.version;
    if (!value)
      return false;
    r->aa = true;
    uint16_t qtype = r->q->question->qtype;
    if (qtype == DNS_TYPE_TXT || qtype == DNS_TYPE_ANY) {
      size_t len = strlen(value);
      size_t at =
          dns_write_rr_begin(&r->w, qname(r), DNS_TYPE_TXT, DNS_CLASS_CH, 0);
      dns_write_u8(&r->w, (uint8_t)len);
      dns_write_bytes(&r->w, value, len);
      dns_write_rr_end(&r->w, at);
      r->an++;
    }
    return true;
  }
  return false;
}

/* ---- the message -------------------------------------------------------- */

bool dns_question_read_ahead(const uint8_t *msg, size_t len, char *text,
                             size_t size, dns_question_ahead_t *out) {
  size_t pos = DNS_HEADER_SIZE;
  if (len < DNS_HEADER_SIZE || (msg[4] == 0 && msg[5] == 0) ||
      dns_question_parse(msg, len, &pos, &out->question) != DNS_WIRE_OK)
    return false;
  out->end = pos;
  int n = dns_name_to_text(&out->question.name, text, size, true);
  out->text = n >= 0 ? text : NULL;
  out->text_len = n >= 0 ? (size_t)n : 0;
  return true;
}

/* The OPT of the reply, with a server cookie when the query sent a client
 * cookie (RFC 7873 5.2): a fresh one each time, whether or not the
 * client's server cookie was still good, since none is ever required. */
static void write_opt(reply_t *r) {
  const query_t *q = r->q;
  uint8_t cookie[4 + 8 + 16];
  size_t n = 0;
  if (!q->has_opt)
    return;
  if (q->has_cookie && r->opts->cookie_secret) {
    cookie[0] = 0;
    cookie[1] = DNS_OPT_CODE_COOKIE;
    cookie[2] = 0;
    cookie[3] = 24;
    memcpy(cookie + 4, q->client_cookie, 8);
    dns_cookie_make(r->opts->cookie_secret, q->client_cookie, r->opts->peer,
                    r->opts->now, cookie + 12);
    n = sizeof cookie;
  }
  dns_write_rr_opt_options(&r->w, DNS_EDNS_SIZE, (uint8_t)(r->rcode >> 4), 0,
                           q->opt_do, cookie, n);
  r->ar++;
}

static void write_header(reply_t *r, bool tc, bool with_question) {
  const dns_header_t *qh = &r->q->header;
  dns_header_t h = {
      .id = qh->id,
      .flags = (uint16_t)(DNS_FLAG_QR | DNS_FLAG_OPCODE(dns_header_opcode(qh)) |
                          (qh->flags & (DNS_FLAG_RD | DNS_FLAG_CD)) |
                          (r->aa ? DNS_FLAG_AA : 0) | (tc ? DNS_FLAG_TC : 0) |
                          DNS_FLAG_RCODE(r->rcode)),
      .qdcount = with_question ? 1 : 0,
      .ancount = r->an,
      .nscount = r->ns,
      .arcount = r->ar,
  };
  dns_header_encode(&h, r->w.buf);
}

/* Header, question and OPT only: the answer for errors, and with TC set,
 * for answers that do not fit. */
static size_t finish_short(reply_t *r, bool tc, bool with_question) {
  dns_writer_rewind(&r->w, 0);
  r->an = r->ns = r->ar = 0;
  dns_write_header(&r->w, &r->q->header);
  if (with_question)
    dns_write_question(&r->w, r->q->question);
  write_opt(r);
  if (r->w.too_big) {
    /* Only with a cap below the 512 the contract asks for. */
    if (r->w.cap < DNS_HEADER_SIZE)
      return 0;
    dns_writer_rewind(&r->w, DNS_HEADER_SIZE);
    r->ar = 0;
    with_question = false;
    tc = true;
  }
  write_header(r, tc, with_question);
  return r->w.len;
}

size_t dns_answer_query(const reg_config_t *config, const reg_t *reg,
                        const uint8_t *query, size_t len, uint8_t *out,
                        size_t cap) {
  const dns_answer_opts_t udp = {.tcp = false};
  return dns_answer_build(config, reg, query, len, out, cap, &udp);
}

size_t dns_answer_build(const reg_config_t *config, const reg_t *reg,
                        const uint8_t *query, size_t len, uint8_t *out,
                        size_t cap, const dns_answer_opts_t *opts) {
  query_t q;
  reply_t r = {.q = &q, .opts = opts, .reg = reg};

  if (len < DNS_HEADER_SIZE || !out)
    return 0;
  query_parse(query, len, opts->ahead, &q);
  if (q.header.flags & DNS_FLAG_QR)
    return 0;
  if (opts->cookie_ok)
    *opts->cookie_ok =
        q.well_formed && q.has_cookie && opts->cookie_secret &&
        q.server_cookie &&
        dns_cookie_valid(opts->cookie_secret, q.client_cookie, q.server_cookie,
                         q.server_cookie_len, opts->peer, opts->now);
  dns_writer_init(&r.w, out, size_limit(&q, cap, opts));

  bool echo = q.has_question && q.header.qdcount == 1;
  if (dns_header_opcode(&q.header) != DNS_OPCODE_QUERY) {
    /* Other opcodes may lay out their sections differently: say we do not
     * implement them before judging their format. */
    r.rcode = DNS_RCODE_NOTIMP;
    q.has_opt = q.has_opt && q.well_formed;
    return finish_short(&r, false, echo);
  }
  if (!q.well_formed) {
    r.rcode = DNS_RCODE_FORMERR;
    q.has_opt = false;
    return finish_short(&r, false, q.has_question);
  }
  if (q.has_opt && q.opt_version > 0) {
    r.rcode = DNS_RCODE_BADVERS;
    return finish_short(&r, false, true);
  }
  if (q.question->qclass == DNS_CLASS_CH) {
    dns_write_header(&r.w, &q.header);
    dns_write_question(&r.w, q.question);
    if (!answer_chaos(&r, config)) {
      r.rcode = DNS_RCODE_REFUSED;
      return finish_short(&r, false, true);
    }
    write_opt(&r);
    if (r.w.too_big)
      return finish_short(&r, true, true);
    write_header(&r, false, true);
    return r.w.len;
  }
  /* Only IN holds our zones. */
  if (q.question->qclass != DNS_CLASS_IN) {
    r.rcode = DNS_RCODE_REFUSED;
    return finish_short(&r, false, true);
  }
  /* Zone transfers belong to TCP and to the transfer ACL; neither exists
   * yet. */
  if (q.question->qtype == DNS_TYPE_AXFR ||
      q.question->qtype == DNS_TYPE_IXFR) {
    r.rcode = DNS_RCODE_NOTIMP;
    return finish_short(&r, false, true);
  }

  dns_name_t apex;
  const reg_zone_t *zone = dns_zone_find(config, &q.question->name, &apex);
  if (!zone) {
    r.rcode = DNS_RCODE_REFUSED;
    return finish_short(&r, false, true);
  }

  dns_write_header(&r.w, &q.header);
  dns_write_question(&r.w, q.question);
  answer_zone(&r, reg, zone, &apex);
  write_opt(&r);
  if (r.w.too_big)
    return finish_short(&r, true, true);
  write_header(&r, false, true);
  return r.w.len;
}
