/* SPDX-License-Identifier: MIT */
/* fuzz_dns_query.c -- fuzz target for dns_answer_query and the name decoder */
#include "dns/dns.h"
#include "dns/dns_int.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

/* ---- a small fixed world, built on the first call ----------------------- */

#define MANY 48

static core_ip_t demo_proxy[2], many_proxy[MANY], glue_addrs[2], dev_addr[1];
static char *demo_ns[] = {"ns1.ddport.test", "ns.elsewhere.example"};
static reg_glue_t demo_glue[1];
static reg_zone_t zones[3];
static reg_device_t devices[6];
static reg_config_t config;
static reg_t *reg;

static core_ip_t ip_of(const char *text) {
  core_ip_t ip;
  CHECK(core_ip_parse(text, &ip) == 0);
  return ip;
}

static void world_build(void) {
  demo_proxy[0] = ip_of("127.0.0.1");
  demo_proxy[1] = ip_of("::1");
  glue_addrs[0] = ip_of("127.0.0.1");
  glue_addrs[1] = ip_of("::1");
  dev_addr[0] = ip_of("127.0.0.1");
  for (int i = 0; i < MANY; i++) {
    many_proxy[i] = ip_of(i % 2 ? "2001:db8::1" : "192.0.2.1");
    many_proxy[i].bytes[i % 2 ? 15 : 3] = (uint8_t)i;
  }
  demo_glue[0] = (reg_glue_t){
      .name = "ns1.ddport.test", .addrs = glue_addrs, .n_addrs = 2};
  zones[0] = (reg_zone_t){.name = "ddport.test",
                          .proxy = demo_proxy,
                          .n_proxy = 2,
                          .ttl = 60,
                          .nameservers = demo_ns,
                          .n_nameservers = 2,
                          .glue = demo_glue,
                          .n_glue = 1,
                          .soa_email = "hostmaster@ddport.test",
                          .soa_refresh = 3600,
                          .soa_retry = 600,
                          .soa_expire = 604800,
                          .soa_minimum = 60,
                          .serial = 1};
  /* A child zone inside the first, with many addresses and odd SOA data. */
  zones[1] = (reg_zone_t){.name = "sub.ddport.test",
                          .proxy = many_proxy,
                          .n_proxy = MANY,
                          .ttl = 5,
                          .soa_email = "a.b.c",
                          .soa_minimum = 1,
                          .serial = 2};
  zones[2] = (reg_zone_t){.name = "test", .ttl = 1};
  static const char *names[] = {"demo.ddport.test", "*.wild.ddport.test",
                                "off.ddport.test",  "x.sub.ddport.test",
                                "*.test",           "sub.ddport.test"};
  for (size_t i = 0; i < 6; i++) {
    devices[i] = (reg_device_t){.name = (char *)names[i],
                                .addrs = dev_addr,
                                .n_addrs = 1,
                                .enabled = i != 2,
                                .wildcard = names[i][0] == '*'};
  }
  config.dns.zones = zones;
  config.dns.n_zones = 3;
  config.devices = devices;
  config.n_devices = 6;
  reg = reg_new(&config);
}

/* ---- properties ---------------------------------------------------------- */

/* Every answer is a whole, well-formed message for the query it answers. */
static void check_answer(const uint8_t *query, size_t len, size_t cap) {
  static uint8_t out[65536];
  size_t n = dns_answer_query(&config, reg, query, len, out, cap);

  CHECK(n <= cap);
  CHECK(n <= DNS_EDNS_SIZE);

  /* The UDP server's way, its question read ahead: the same bytes. */
  static uint8_t again[65536];
  char text[CORE_NAME_MAX + 1];
  dns_question_ahead_t ahead;
  if (dns_question_read_ahead(query, len, text, sizeof text, &ahead)) {
    const dns_answer_opts_t opts = {.tcp = false, .ahead = &ahead};
    size_t m = dns_answer_build(&config, reg, query, len, again, cap, &opts);
    CHECK(m == n && memcmp(again, out, n) == 0);
    /* And through dns_respond, which checks for a TSIG first. */
    if (cap >= DNS_UDP_PLAIN_MAX) {
      static uint8_t plain[65536];
      dns_request_t req = {
          .config = &config, .reg = reg, .now = 1, .msg = query, .len = len};
      dns_xfr_t *xfr;
      size_t k = dns_respond(&req, plain, cap, &xfr);
      CHECK(xfr == NULL);
      req.ahead = &ahead;
      CHECK(dns_respond(&req, again, cap, &xfr) == k && xfr == NULL &&
            memcmp(again, plain, k) == 0);
    }
  }
  if (n == 0)
    return;
  CHECK(len >= DNS_HEADER_SIZE);

  dns_header_t qh, h;
  CHECK(dns_header_parse(query, len, &qh) == DNS_WIRE_OK);
  CHECK(dns_header_parse(out, n, &h) == DNS_WIRE_OK);
  CHECK(h.id == qh.id);
  CHECK(h.flags & DNS_FLAG_QR);
  CHECK(!(qh.flags & DNS_FLAG_QR));
  CHECK(dns_header_opcode(&h) == dns_header_opcode(&qh));
  CHECK(h.qdcount <= 1);

  size_t pos = DNS_HEADER_SIZE;
  if (h.qdcount == 1) {
    dns_question_t q;
    CHECK(dns_question_parse(out, n, &pos, &q) == DNS_WIRE_OK);
    /* The question is the query's own, byte for byte. */
    CHECK(len >= pos && memcmp(out + DNS_HEADER_SIZE, query + DNS_HEADER_SIZE,
                               pos - DNS_HEADER_SIZE) == 0);
  }
  unsigned n_rr = (unsigned)h.ancount + h.nscount + h.arcount;
  unsigned n_opt = 0;
  for (unsigned i = 0; i < n_rr; i++) {
    dns_rr_t rr;
    CHECK(dns_rr_parse(out, n, &pos, &rr) == DNS_WIRE_OK);
    if (rr.type == DNS_TYPE_OPT) {
      CHECK(i == n_rr - 1 && rr.name.labels == 0);
      n_opt++;
    }
    /* Answer records are all at the question name: a pointer to it. */
    if (i < h.ancount)
      CHECK(out[rr.rdata - 12] == 0xC0 && out[rr.rdata - 11] == 0x0C);
  }
  CHECK(n_opt <= 1);
  CHECK(pos == n);
  if (h.flags & DNS_FLAG_TC)
    CHECK(h.ancount == 0 && h.nscount == 0);
}

/* Whatever the decoder accepts is a valid name that survives a trip
 * through presentation form. */
static void check_name_at(const uint8_t *data, size_t size, size_t at) {
  dns_name_t name, back;
  char text[DNS_NAME_TEXT_MAX];
  size_t pos = at;

  if (dns_name_decode(data, size, &pos, &name) != DNS_WIRE_OK) {
    CHECK(pos == at);
    return;
  }
  CHECK(pos > at && pos <= size);
  CHECK(name.len >= 1 && name.len <= DNS_NAME_WIRE_MAX);
  size_t p = 0;
  unsigned labels = 0;
  while (name.wire[p] != 0) {
    CHECK(name.wire[p] <= DNS_LABEL_MAX);
    p += (size_t)name.wire[p] + 1;
    labels++;
    CHECK(p < name.len);
  }
  CHECK(p + 1 == name.len && labels == name.labels);

  int len = dns_name_to_text(&name, text, sizeof(text), false);
  CHECK(len > 0);
  CHECK(dns_name_from_text(text, (size_t)len, &back) == 0);
  CHECK(back.len == name.len && back.labels == name.labels &&
        memcmp(back.wire, name.wire, name.len) == 0);
  len = dns_name_to_text(&name, text, sizeof(text), true);
  CHECK(len > 0);
  CHECK(dns_name_from_text(text, (size_t)len, &back) == 0);
  CHECK(dns_name_equal(&back, &name));
  CHECK(dns_name_is_under(&name, &back) && dns_name_is_under(&back, &name));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!reg)
    world_build();

  check_answer(data, size, DNS_EDNS_SIZE);
  check_answer(data, size, DNS_UDP_PLAIN_MAX);
  check_answer(data, size, 65535);
  /* Caps below the contract's 512 must still never be overrun. */
  check_answer(data, size, size ? data[size - 1] % 64 : 0);

  size_t n_offsets = size < 512 ? size + 1 : 512;
  for (size_t at = 0; at < n_offsets; at++)
    check_name_at(data, size, at);
  return 0;
}
