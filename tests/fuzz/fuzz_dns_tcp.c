/* SPDX-License-Identifier: MIT */
/* fuzz_dns_tcp.c -- fuzz target for the TCP framing reader and the replies
 * (answers, transfers, TSIG) a TCP connection sends */
#include "dns/dns.h"
#include "dns/dns_int.h"
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small fixed world, built on the first call ----------------------- */

static core_ip_t proxy[3], glue_addrs[1], dev_addr[1];
static core_prefix_t loopback;
/* The key the signed seeds use: "xfr", hmac-sha256, bytes 7..38. */
static uint8_t secret[32];
static reg_tsig_key_t keys[1];
static char *transfer_keys[] = {"xfr"};
static char *ns[] = {"ns1.ddport.test"};
static reg_glue_t glue[1];
static reg_zone_t zones[1];
static reg_device_t devices[4];
static reg_config_t config;
static reg_t *reg;

static core_ip_t ip_of(const char *text) {
  core_ip_t ip;
  CHECK(core_ip_parse(text, &ip) == 0);
  return ip;
}

static void world_build(void) {
  core_log_set_level(CORE_LOG_ERROR); /* every transfer logs a line */
  proxy[0] = ip_of("127.0.0.1");
  proxy[1] = ip_of("::1");
  proxy[2] = ip_of("192.0.2.1");
  glue_addrs[0] = ip_of("127.0.0.1");
  dev_addr[0] = ip_of("127.0.0.1");
  const char *why;
  CHECK(core_prefix_parse("127.0.0.0/8", &loopback, &why) == 0);
  glue[0] = (reg_glue_t){
      .name = "ns1.ddport.test", .addrs = glue_addrs, .n_addrs = 1};
  zones[0] = (reg_zone_t){.name = "ddport.test",
                          .proxy = proxy,
                          .n_proxy = 3,
                          .ttl = 60,
                          .nameservers = ns,
                          .n_nameservers = 1,
                          .glue = glue,
                          .n_glue = 1,
                          .soa_email = "hostmaster@ddport.test",
                          .soa_minimum = 60,
                          .serial = 1,
                          .transfer_prefixes = &loopback,
                          .n_transfer_prefixes = 1,
                          .transfer_keys = transfer_keys,
                          .n_transfer_keys = 1};
  for (size_t i = 0; i < sizeof secret; i++)
    secret[i] = (uint8_t)(7 + i);
  keys[0] = (reg_tsig_key_t){.name = "xfr",
                             .algorithm = REG_TSIG_HMAC_SHA256,
                             .secret = secret,
                             .secret_len = sizeof secret};
  config.dns.tsig_keys = keys;
  config.dns.n_tsig_keys = 1;
  static const char *names[] = {"demo.ddport.test", "*.wild.ddport.test",
                                "off.ddport.test", "ddport.test"};
  for (size_t i = 0; i < 4; i++)
    devices[i] = (reg_device_t){.name = (char *)names[i],
                                .addrs = dev_addr,
                                .n_addrs = 1,
                                .enabled = i != 2,
                                .wildcard = names[i][0] == '*'};
  config.dns.zones = zones;
  config.dns.n_zones = 1;
  config.devices = devices;
  config.n_devices = 4;
  reg = reg_new(&config);
}

/* ---- properties ---------------------------------------------------------- */

static void check_reply(const uint8_t *msg, size_t len, const uint8_t *out,
                        size_t n, size_t cap) {
  dns_header_t qh, h;
  CHECK(n <= cap);
  CHECK(dns_header_parse(msg, len, &qh) == DNS_WIRE_OK);
  CHECK(dns_header_parse(out, n, &h) == DNS_WIRE_OK);
  CHECK(h.id == qh.id && (h.flags & DNS_FLAG_QR));
  /* Over TCP nothing is ever truncated. */
  CHECK(!(h.flags & DNS_FLAG_TC));
  size_t pos = DNS_HEADER_SIZE;
  for (unsigned i = 0; i < h.qdcount; i++) {
    dns_question_t q;
    CHECK(dns_question_parse(out, n, &pos, &q) == DNS_WIRE_OK);
  }
  unsigned n_rr = (unsigned)h.ancount + h.nscount + h.arcount;
  for (unsigned i = 0; i < n_rr; i++) {
    dns_rr_t rr;
    CHECK(dns_rr_parse(out, n, &pos, &rr) == DNS_WIRE_OK);
  }
  CHECK(pos == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint8_t out[65535];
  struct sockaddr_in peer = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  size_t off = 0;

  if (!reg)
    world_build();
  /* Half the inputs come from elsewhere, where only keys may transfer. */
  if (size > 0 && (data[size - 1] & 1))
    peer.sin_addr.s_addr = htonl(0xC0000201);
  /* The input is one TCP byte stream: answer message after message, as a
   * connection would. */
  for (unsigned frames = 0; frames < 64; frames++) {
    const uint8_t *msg;
    size_t msg_len, consumed;
    dns_frame_t f =
        dns_tcp_frame(data + off, size - off, &msg, &msg_len, &consumed);
    if (f != DNS_FRAME_COMPLETE) {
      CHECK(f == DNS_FRAME_INVALID || consumed > size - off || consumed == 2);
      break;
    }
    CHECK(msg == data + off + 2 && consumed == msg_len + 2);
    CHECK(msg_len >= DNS_HEADER_SIZE && consumed <= size - off);
    off += consumed;

    dns_request_t req = {.config = &config,
                         .reg = reg,
                         .peer = (const struct sockaddr *)&peer,
                         .tcp = true,
                         .now = 1700000000,
                         .cookie_secret = (const uint8_t *)"fuzz-cookie-key",
                         .msg = msg,
                         .len = msg_len};
    dns_xfr_t *xfr = NULL;
    size_t n = dns_respond(&req, out, sizeof out, &xfr);
    if (n == 0) {
      CHECK(xfr == NULL);
      continue;
    }
    check_reply(msg, msg_len, out, n, sizeof out);
    for (unsigned k = 0; xfr && k < 1000; k++) {
      n = dns_xfr_next(xfr, out, sizeof out);
      if (n == 0)
        break;
      check_reply(msg, msg_len, out, n, sizeof out);
    }
    dns_xfr_free(xfr);
  }
  return 0;
}
