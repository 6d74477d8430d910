/* SPDX-License-Identifier: MIT */
/* respond.c -- one request in, its reply out: zone transfers and their ACL
 * in front of answer.c */
#include "dns/dns.h"
#include "dns/dns_int.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* What respond needs of a request before choosing who answers it. */
typedef struct request_view {
  dns_header_t header;
  const dns_question_t *question; /* ahead's or own */
  size_t after_question;          /* offset of the answer section */
  bool has_question;
  /* Last: view_parse clears only what comes before. */
  dns_question_t own;
} request_view_t;

static void view_parse(const dns_request_t *req, request_view_t *v) {
  size_t pos = DNS_HEADER_SIZE;
  memset(v, 0, offsetof(request_view_t, own));
  dns_header_parse(req->msg, req->len, &v->header);
  if (v->header.qdcount != 1)
    return;
  if (req->ahead) {
    v->question = &req->ahead->question;
    pos = req->ahead->end;
  } else if (dns_question_parse(req->msg, req->len, &pos, &v->own) ==
             DNS_WIRE_OK) {
    v->question = &v->own;
  } else {
    return;
  }
  v->has_question = true;
  v->after_question = pos;
}

/* A reply of header and question only, signed when the request was. */
static size_t reply_short(const request_view_t *v, unsigned rcode,
                          dns_tsig_ctx_t *tsig, uint8_t *out, size_t cap) {
  dns_writer_t w;
  dns_writer_init(&w, out, cap - dns_tsig_reserve(tsig));
  dns_header_t h = {
      .id = v->header.id,
      .flags =
          (uint16_t)(DNS_FLAG_QR |
                     DNS_FLAG_OPCODE(dns_header_opcode(&v->header)) |
                     (v->header.flags & DNS_FLAG_RD) | DNS_FLAG_RCODE(rcode)),
      .qdcount = v->has_question ? 1 : 0,
  };
  dns_write_header(&w, &h);
  if (v->has_question)
    dns_write_question(&w, v->question);
  if (w.too_big)
    return 0;
  return dns_tsig_sign(tsig, out, w.len, cap);
}

static bool transfer_allowed(const reg_zone_t *zone, const dns_request_t *req,
                             const dns_tsig_ctx_t *tsig) {
  core_ip_t ip;
  if (req->peer && core_ip_from_sockaddr(req->peer, &ip) == 0)
    for (size_t i = 0; i < zone->n_transfer_prefixes; i++)
      if (core_prefix_contains(&zone->transfer_prefixes[i], &ip))
        return true;
  if (tsig->key && tsig->error == 0)
    for (size_t i = 0; i < zone->n_transfer_keys; i++)
      if (strcmp(zone->transfer_keys[i], tsig->key->name) == 0)
        return true;
  return false;
}

/* The serial in the SOA an IXFR carries in its authority section, the
 * version the client holds (RFC 1995 3). */
static bool ixfr_client_serial(const dns_request_t *req,
                               const request_view_t *v, uint32_t *serial) {
  size_t pos = v->after_question;
  if (v->header.ancount != 0 || v->header.nscount < 1)
    return false;
  dns_rr_t rr;
  if (dns_rr_parse(req->msg, req->len, &pos, &rr) != DNS_WIRE_OK ||
      rr.type != DNS_TYPE_SOA)
    return false;
  size_t p = rr.rdata;
  dns_name_t skip;
  if (dns_name_decode(req->msg, req->len, &p, &skip) != DNS_WIRE_OK ||
      dns_name_decode(req->msg, req->len, &p, &skip) != DNS_WIRE_OK ||
      p + 4 > rr.rdata + rr.rdlength)
    return false;
  const uint8_t *b = req->msg + p;
  *serial = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) |
            ((uint32_t)b[2] << 8) | b[3];
  return true;
}

static const char *peer_text(const dns_request_t *req, char *buf, size_t size) {
  if (!req->peer)
    return "?";
  return core_sockaddr_format(req->peer, buf, size);
}

static size_t respond_transfer(const dns_request_t *req,
                               const request_view_t *v, dns_tsig_ctx_t *tsig,
                               uint8_t *out, size_t cap, dns_xfr_t **xfr) {
  const char *kind = v->question->qtype == DNS_TYPE_AXFR ? "AXFR" : "IXFR";
  char peer[64];
  dns_name_t apex;

  const reg_zone_t *zone =
      dns_zone_find(req->config, &v->question->name, &apex);
  /* Only a zone's apex can be transferred; outside our zones we are not
   * the authority (RFC 5936 2.2.1). */
  if (!zone || apex.labels != v->question->name.labels)
    return reply_short(v, zone ? DNS_RCODE_NOTAUTH : DNS_RCODE_REFUSED, tsig,
                       out, cap);
  if (!transfer_allowed(zone, req, tsig)) {
    core_log(CORE_LOG_WARN,
             "dns: %s of %s from %s%s%s refused: not in allow_transfer", kind,
             zone->name, peer_text(req, peer, sizeof peer),
             tsig->key ? " key " : "", tsig->key ? tsig->key->name : "");
    return reply_short(v, DNS_RCODE_REFUSED, tsig, out, cap);
  }
  /* Transfers are TCP's (RFC 5936 4.2); an IXFR client falls back to TCP
   * when told it is not implemented over UDP. */
  if (!req->tcp)
    return reply_short(v, DNS_RCODE_NOTIMP, tsig, out, cap);

  uint32_t client = 0;
  bool ixfr = v->question->qtype == DNS_TYPE_IXFR &&
              ixfr_client_serial(req, v, &client);
  dns_xfr_t *x = dns_xfr_new(req->config, req->reg, zone, &apex, &v->header,
                             v->question, ixfr ? &client : NULL);
  if (x == NULL) {
    core_log(CORE_LOG_WARN,
             "dns: %s of %s to %s: the registry changed too fast to read; "
             "SERVFAIL",
             kind, zone->name, peer_text(req, peer, sizeof peer));
    return reply_short(v, DNS_RCODE_SERVFAIL, tsig, out, cap);
  }
  *dns_xfr_tsig(x) = *tsig;
  char form[64] = "";
  uint32_t from = 0;
  switch (dns_xfr_form(x, &from)) {
  case DNS_XFR_WHOLE:
    if (ixfr)
      snprintf(form, sizeof form, ": whole zone (serial %u not in the history)",
               client);
    break;
  case DNS_XFR_INCREMENTAL:
    snprintf(form, sizeof form, ": incremental from serial %u", from);
    break;
  case DNS_XFR_UP_TO_DATE:
    snprintf(form, sizeof form, ": up to date");
    break;
  }
  core_log(CORE_LOG_INFO, "dns: %s of %s serial %u to %s%s%s%s", kind,
           zone->name, dns_xfr_serial(x), peer_text(req, peer, sizeof peer),
           tsig->key ? " key " : "", tsig->key ? tsig->key->name : "", form);
  size_t n = dns_xfr_next(x, out, cap);
  if (n == 0) {
    dns_xfr_free(x);
    return reply_short(v, DNS_RCODE_SERVFAIL, tsig, out, cap);
  }
  *xfr = x;
  return n;
}

size_t dns_respond(const dns_request_t *req, uint8_t *out, size_t cap,
                   dns_xfr_t **xfr) {
  request_view_t v;
  dns_tsig_ctx_t tsig;

  *xfr = NULL;
  if (req->len < DNS_HEADER_SIZE || cap < DNS_UDP_PLAIN_MAX)
    return 0;
  view_parse(req, &v);
  if (v.header.flags & DNS_FLAG_QR)
    return 0;
  dns_tsig_status_t ts = dns_tsig_verify(req->config, req->msg, req->len,
                                         req->ahead, req->now, &tsig);
  if (ts == DNS_TSIG_FORMERR) {
    memset(&tsig, 0, sizeof tsig);
    return reply_short(&v, DNS_RCODE_FORMERR, &tsig, out, cap);
  }
  if (ts == DNS_TSIG_BADKEY || ts == DNS_TSIG_BADSIG ||
      ts == DNS_TSIG_BADTIME) {
    char peer[64], key[DNS_NAME_TEXT_MAX];
    static const char *const what[] = {[DNS_TSIG_BADKEY] = "BADKEY (unknown "
                                                           "key or algorithm)",
                                       [DNS_TSIG_BADSIG] = "BADSIG (wrong MAC)",
                                       [DNS_TSIG_BADTIME] = "BADTIME (clock "
                                                            "skew)"};
    dns_name_to_text(&tsig.key_name, key, sizeof key, true);
    core_log(CORE_LOG_WARN, "dns: TSIG %s from %s key %s", what[ts],
             peer_text(req, peer, sizeof peer), key);
    return reply_short(&v, DNS_RCODE_NOTAUTH, &tsig, out, cap);
  }
  if (dns_header_opcode(&v.header) == DNS_OPCODE_QUERY && v.has_question &&
      v.question->qclass == DNS_CLASS_IN &&
      (v.question->qtype == DNS_TYPE_AXFR ||
       v.question->qtype == DNS_TYPE_IXFR))
    return respond_transfer(req, &v, &tsig, out, cap, xfr);

  const dns_answer_opts_t opts = {.tcp = req->tcp,
                                  .reserve = dns_tsig_reserve(&tsig),
                                  .cookie_secret = req->cookie_secret,
                                  .peer = req->peer,
                                  .now = (uint32_t)req->now,
                                  .cookie_ok = req->cookie_ok,
                                  .hint = req->hint,
                                  .ahead = req->ahead};
  size_t n = dns_answer_build(req->config, req->reg, req->msg, req->len, out,
                              cap, &opts);
  return n ? dns_tsig_sign(&tsig, out, n, cap) : 0;
}
