/* SPDX-License-Identifier: MIT */
/* test_dns_xfr.c -- AXFR and IXFR (RFC 1995) from the registry's published
 * batches: every record of a transfer, in order */
#include "dns/dns.h"
#include "dns/dns_int.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#define SERIAL 1000u

static const char zone_yaml[] =
    "listeners:\n"
    "  - {name: http, protocol: http, address: 127.0.0.1:8080}\n"
    "dns:\n"
    "  zones:\n"
    "    - name: ddport.test\n"
    "      proxy: [192.0.2.1, 2001:db8::1]\n"
    "      nameservers: [ns1.ddport.test]\n"
    "      glue: {ns1.ddport.test: [192.0.2.53]}\n"
    "      allow_transfer: [127.0.0.0/8]\n";

static reg_config_t *config;
static reg_t *reg;

static reg_device_t device(const char *name, bool enabled) {
  static reg_port_t port = {.listener = "http", .port = 8081};
  static core_ip_t addr = {.family = AF_INET, .bytes = {192, 0, 2, 99}};
  reg_device_t d = {.name = (char *)name,
                    .addrs = &addr,
                    .n_addrs = 1,
                    .ports = &port,
                    .n_ports = 1,
                    .enabled = enabled,
                    .wildcard = name[0] == '*'};
  return d;
}

/* State 0: a; 1: b added, a disabled (and a name in no zone); 2: c added;
 * 3: c's address changed (an empty batch). */
static void setup(void) {
  FILE *diag = tmpfile();
  ASSERT_EQ(reg_config_load_buffer("t.yaml", zone_yaml, sizeof zone_yaml - 1,
                                   diag, &config),
            0);
  fclose(diag);
  config->dns.zones[0].serial = SERIAL;
  reg_config_t start = {0};
  reg_device_t a = device("a.ddport.test", true);
  start.devices = &a;
  start.n_devices = 1;
  reg = reg_new(&start);

  reg_device_t b = device("b.ddport.test", true),
               a_off = device("a.ddport.test", false),
               other = device("x.other.test", true),
               c = device("c.ddport.test", true);
  ASSERT_EQ(reg_update_device(reg, &b), 0);
  ASSERT_EQ(reg_update_device(reg, &a_off), 0);
  ASSERT_EQ(reg_update_device(reg, &other), 0);
  ASSERT(reg_publish(reg));
  ASSERT_EQ(reg_update_device(reg, &c), 0);
  ASSERT(reg_publish(reg));
  c.n_addrs = 0;
  ASSERT_EQ(reg_update_device(reg, &c), 0);
  ASSERT(reg_publish(reg));
  /* Not published: no transfer may show it. */
  reg_device_t late = device("late.ddport.test", true);
  ASSERT_EQ(reg_update_device(reg, &late), 0);
}

/* An IXFR query for ddport.test from serial (or an AXFR when serial is 0):
 * the client's SOA in the authority section, as RFC 1995 3 has it. */
static size_t query(uint32_t serial, uint8_t *out, size_t cap) {
  dns_writer_t w;
  dns_question_t q = {.qtype = serial ? DNS_TYPE_IXFR : DNS_TYPE_AXFR,
                      .qclass = DNS_CLASS_IN};
  ASSERT_EQ(dns_name_from_text("ddport.test", 11, &q.name), 0);
  dns_header_t h = {.id = 0x4242, .qdcount = 1, .nscount = serial ? 1 : 0};
  dns_writer_init(&w, out, cap);
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  if (serial) {
    dns_soa_t soa = {.serial = serial};
    soa.mname.len = soa.rname.len = 1; /* the root: the rest is unused */
    dns_write_rr_soa(&w, &q.name, 0, &soa);
  }
  ASSERT(!w.too_big);
  return w.len;
}

/* Appends one line per answer record of msg: "owner TYPE data". */
static void render(const uint8_t *msg, size_t len, bool first, char *text,
                   size_t size) {
  dns_header_t h;
  size_t pos = DNS_HEADER_SIZE;
  ASSERT_EQ(dns_header_parse(msg, len, &h), DNS_WIRE_OK);
  ASSERT(h.flags & DNS_FLAG_QR);
  ASSERT(h.flags & DNS_FLAG_AA);
  ASSERT_EQ(h.id, 0x4242);
  ASSERT_EQ(dns_header_rcode(&h), DNS_RCODE_NOERROR);
  ASSERT_EQ(h.qdcount, first ? 1 : 0);
  for (unsigned i = 0; i < h.qdcount; i++) {
    dns_question_t q;
    ASSERT_EQ(dns_question_parse(msg, len, &pos, &q), DNS_WIRE_OK);
  }
  for (unsigned i = 0; i < h.ancount; i++) {
    dns_rr_t rr;
    char owner[DNS_NAME_TEXT_MAX], data[64] = "";
    ASSERT_EQ(dns_rr_parse(msg, len, &pos, &rr), DNS_WIRE_OK);
    dns_name_to_text(&rr.name, owner, sizeof owner, true);
    const char *type = "?";
    if (rr.type == DNS_TYPE_SOA) {
      size_t p = rr.rdata;
      dns_name_t skip;
      ASSERT_EQ(dns_name_decode(msg, len, &p, &skip), DNS_WIRE_OK);
      ASSERT_EQ(dns_name_decode(msg, len, &p, &skip), DNS_WIRE_OK);
      type = "SOA";
      snprintf(data, sizeof data, "%u",
               (unsigned)((uint32_t)msg[p] << 24 | (uint32_t)msg[p + 1] << 16 |
                          (uint32_t)msg[p + 2] << 8 | msg[p + 3]));
    } else if (rr.type == DNS_TYPE_A || rr.type == DNS_TYPE_AAAA) {
      type = rr.type == DNS_TYPE_A ? "A" : "AAAA";
      inet_ntop(rr.type == DNS_TYPE_A ? AF_INET : AF_INET6, msg + rr.rdata,
                data, sizeof data);
    } else if (rr.type == DNS_TYPE_NS) {
      type = "NS";
    }
    size_t used = strlen(text);
    snprintf(text + used, size - used, "%s %s%s%s\n", owner, type,
             *data ? " " : "", data);
  }
}

/* Every record of the transfer query(serial) starts, in order. */
static const char *transfer(uint32_t serial) {
  static char text[4096];
  static uint8_t q[512], out[65535];
  struct sockaddr_in peer = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  dns_request_t req = {.config = config,
                       .reg = reg,
                       .peer = (const struct sockaddr *)&peer,
                       .tcp = true,
                       .now = 1700000000,
                       .msg = q,
                       .len = query(serial, q, sizeof q)};
  dns_xfr_t *x = NULL;
  text[0] = '\0';
  size_t n = dns_respond(&req, out, sizeof out, &x);
  ASSERT(n > 0);
  ASSERT(x != NULL);
  render(out, n, true, text, sizeof text);
  while ((n = dns_xfr_next(x, out, sizeof out)) > 0)
    render(out, n, false, text, sizeof text);
  dns_xfr_free(x);
  return text;
}

static void test_ixfr_every_batch(void) {
  ASSERT_STR_EQ(transfer(SERIAL), "ddport.test SOA 1003\n"
                                  "ddport.test SOA 1000\n"
                                  "a.ddport.test A 192.0.2.1\n"
                                  "a.ddport.test AAAA 2001:db8::1\n"
                                  "ddport.test SOA 1001\n"
                                  "b.ddport.test A 192.0.2.1\n"
                                  "b.ddport.test AAAA 2001:db8::1\n"
                                  "ddport.test SOA 1001\n"
                                  "ddport.test SOA 1002\n"
                                  "c.ddport.test A 192.0.2.1\n"
                                  "c.ddport.test AAAA 2001:db8::1\n"
                                  "ddport.test SOA 1002\n"
                                  "ddport.test SOA 1003\n"
                                  "ddport.test SOA 1003\n");
}

/* A batch that changed no name still carries its pair of SOAs. */
static void test_ixfr_empty_batch(void) {
  ASSERT_STR_EQ(transfer(SERIAL + 2), "ddport.test SOA 1003\n"
                                      "ddport.test SOA 1002\n"
                                      "ddport.test SOA 1003\n"
                                      "ddport.test SOA 1003\n");
}

static void test_ixfr_up_to_date(void) {
  ASSERT_STR_EQ(transfer(SERIAL + 3), "ddport.test SOA 1003\n");
  /* A serial ahead of ours (RFC 1982) is not older either. */
  ASSERT_STR_EQ(transfer(SERIAL + 10), "ddport.test SOA 1003\n");
}

static const char whole_zone[] = "ddport.test SOA 1003\n"
                                 "ddport.test NS\n"
                                 "ns1.ddport.test A 192.0.2.53\n"
                                 "b.ddport.test A 192.0.2.1\n"
                                 "b.ddport.test AAAA 2001:db8::1\n"
                                 "c.ddport.test A 192.0.2.1\n"
                                 "c.ddport.test AAAA 2001:db8::1\n"
                                 "ddport.test SOA 1003\n";

/* Names come in table order: compare as sorted lines. */
static const char *sorted_lines(const char *text) {
  static char out[4096];
  char copy[4096], *lines[64];
  size_t n = 0;
  snprintf(copy, sizeof copy, "%s", text);
  for (char *l = strtok(copy, "\n"); l && n < 64; l = strtok(NULL, "\n"))
    lines[n++] = l;
  for (size_t i = 1; i < n; i++)
    for (size_t k = i; k > 0 && strcmp(lines[k - 1], lines[k]) > 0; k--) {
      char *t = lines[k];
      lines[k] = lines[k - 1];
      lines[k - 1] = t;
    }
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s\n", lines[i]);
  return out;
}

/* An IXFR from before the history: the whole zone, AXFR's records. */
static void test_ixfr_older_than_history(void) {
  const char *got = transfer(SERIAL - 1);
  ASSERT(strncmp(got, "ddport.test SOA 1003\nddport.test NS\n", 36) == 0);
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", sorted_lines(got));
  ASSERT_STR_EQ(copy, sorted_lines(whole_zone));
  snprintf(copy, sizeof copy, "%s", sorted_lines(transfer(0)));
  ASSERT_STR_EQ(copy, sorted_lines(whole_zone));
}

int main(void) {
  setup();
  RUN_TEST(test_ixfr_every_batch);
  RUN_TEST(test_ixfr_empty_batch);
  RUN_TEST(test_ixfr_up_to_date);
  RUN_TEST(test_ixfr_older_than_history);
  reg_free(reg);
  reg_config_free(config);
  return 0;
}
