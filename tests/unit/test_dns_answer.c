/* SPDX-License-Identifier: MIT */
/* test_dns_answer.c -- dns_answer_query against a hand-built zone */
#include "dns/dns.h"
#include "dns/dns_int.h"
#include "tests/test.h"

#include <arpa/inet.h>

/* ---- the zone ----------------------------------------------------------- */

#define BIG_PROXIES 40 /* IPv6 */
#define BIG_PROXIES_V4 10

static core_ip_t demo_proxy[2];
static core_ip_t big_proxy[BIG_PROXIES + BIG_PROXIES_V4];
static core_ip_t ns1_addrs[1];
static char *demo_nameservers[] = {"ns1.ddport.test"};
static reg_glue_t demo_glue[1];
static reg_zone_t zones[3];
static core_ip_t device_addr[1];
static reg_device_t devices[6];
static reg_config_t config;
static reg_t *reg;

static core_ip_t ip_of(const char *text) {
  core_ip_t ip;
  ASSERT_EQ(core_ip_parse(text, &ip), 0);
  return ip;
}

static reg_device_t device(char *name, bool enabled) {
  reg_device_t d = {.name = name,
                    .addrs = device_addr,
                    .n_addrs = 1,
                    .enabled = enabled,
                    .wildcard = strncmp(name, "*.", 2) == 0};
  return d;
}

static void setup(void) {
  demo_proxy[0] = ip_of("127.0.0.1");
  demo_proxy[1] = ip_of("::1");
  ns1_addrs[0] = ip_of("127.0.0.1");
  device_addr[0] = ip_of("127.0.0.1");
  demo_glue[0] =
      (reg_glue_t){.name = "ns1.ddport.test", .addrs = ns1_addrs, .n_addrs = 1};
  zones[1] = (reg_zone_t){.name = "ddport.test",
                          .proxy = demo_proxy,
                          .n_proxy = 2,
                          .ttl = 60,
                          .nameservers = demo_nameservers,
                          .n_nameservers = 1,
                          .glue = demo_glue,
                          .n_glue = 1,
                          .soa_email = "hostmaster@ddport.test",
                          .soa_refresh = 3600,
                          .soa_retry = 600,
                          .soa_expire = 604800,
                          .soa_minimum = 30,
                          .serial = 2024052001};

  /* A zone whose AAAA answer cannot fit in 512 bytes and whose ANY answer
   * cannot fit in 1232, with no name servers and a dotted mailbox. */
  for (int i = 0; i < BIG_PROXIES; i++) {
    char text[64];
    snprintf(text, sizeof(text), "2001:db8::%x", i + 1);
    big_proxy[i] = ip_of(text);
  }
  for (int i = 0; i < BIG_PROXIES_V4; i++) {
    char text[64];
    snprintf(text, sizeof(text), "192.0.2.%d", i + 1);
    big_proxy[BIG_PROXIES + i] = ip_of(text);
  }
  zones[2] = (reg_zone_t){.name = "big.test",
                          .proxy = big_proxy,
                          .n_proxy = BIG_PROXIES + BIG_PROXIES_V4,
                          .ttl = 300,
                          .soa_email = "ops.team@big.test",
                          .soa_refresh = 1,
                          .soa_retry = 2,
                          .soa_expire = 3,
                          .soa_minimum = 3600,
                          .serial = 7};

  /* A child zone of ddport.test, listed first so that the longest match
   * has to be searched for. */
  zones[0] = (reg_zone_t){.name = "sub.ddport.test",
                          .ttl = 10,
                          .soa_email = "hostmaster@sub.ddport.test",
                          .soa_minimum = 5,
                          .serial = 3};

  devices[0] = device("demo.ddport.test", true);
  devices[1] = device("*.wild.ddport.test", true);
  devices[2] = device("off.ddport.test", false);
  devices[3] = device("host.big.test", true);
  devices[4] = device("big.test", true);
  /* Outside every zone: may not answer for names in ddport.test. */
  devices[5] = device("*.test", true);

  config.dns.zones = zones;
  config.dns.n_zones = 3;
  config.devices = devices;
  config.n_devices = 6;
  reg = reg_new(&config);
  ASSERT(reg != NULL);
}

/* ---- queries and answers ------------------------------------------------ */

typedef struct query {
  uint8_t b[1024];
  size_t len;
} query_t;

#define NO_EDNS (-1)

/* A query for name/qtype; edns_size NO_EDNS leaves the OPT out. */
static query_t make_query_full(const char *name, uint16_t qtype,
                               uint16_t qclass, uint16_t flags, int edns_size,
                               uint8_t edns_version, bool dnssec_ok) {
  query_t q;
  dns_writer_t w;
  dns_question_t question = {.qtype = qtype, .qclass = qclass};
  dns_header_t h = {.id = 0xD0D0,
                    .flags = flags,
                    .qdcount = 1,
                    .arcount = edns_size == NO_EDNS ? 0 : 1};

  ASSERT_EQ(dns_name_from_text(name, strlen(name), &question.name), 0);
  dns_writer_init(&w, q.b, sizeof(q.b));
  dns_write_header(&w, &h);
  dns_write_question(&w, &question);
  if (edns_size != NO_EDNS)
    dns_write_rr_opt(&w, (uint16_t)edns_size, 0, edns_version, dnssec_ok);
  ASSERT(!w.too_big);
  q.len = w.len;
  return q;
}

static query_t make_query(const char *name, uint16_t qtype) {
  return make_query_full(name, qtype, DNS_CLASS_IN, 0, NO_EDNS, 0, false);
}

typedef struct answer {
  uint8_t b[65536];
  size_t len;
  dns_header_t h;
  bool has_question;
  dns_question_t q;
  dns_rr_t rr[64];
  size_t n_rr;
} answer_t;

/* Asks and decodes the whole answer, asserting it is well formed. */
static answer_t *ask_raw(const uint8_t *query, size_t len, size_t cap) {
  static answer_t a;
  size_t pos = DNS_HEADER_SIZE;

  memset(&a, 0, sizeof(a));
  ASSERT(cap <= sizeof(a.b));
  a.len = dns_answer_query(&config, reg, query, len, a.b, cap);
  ASSERT(a.len <= cap);
  if (a.len == 0)
    return &a;
  ASSERT_EQ(dns_header_parse(a.b, a.len, &a.h), DNS_WIRE_OK);
  ASSERT(a.h.flags & DNS_FLAG_QR);
  ASSERT_EQ(a.h.flags & DNS_FLAG_RA, 0);
  ASSERT(a.h.qdcount <= 1);
  if (a.h.qdcount == 1) {
    ASSERT_EQ(dns_question_parse(a.b, a.len, &pos, &a.q), DNS_WIRE_OK);
    a.has_question = true;
  }
  a.n_rr = (size_t)a.h.ancount + a.h.nscount + a.h.arcount;
  ASSERT(a.n_rr <= 64);
  for (size_t i = 0; i < a.n_rr; i++)
    ASSERT_EQ(dns_rr_parse(a.b, a.len, &pos, &a.rr[i]), DNS_WIRE_OK);
  ASSERT_EQ(pos, a.len);
  return &a;
}

static answer_t *ask(const query_t *q) {
  answer_t *a = ask_raw(q->b, q->len, DNS_EDNS_SIZE);
  ASSERT(a->len > 0);
  ASSERT_EQ(a->h.id, 0xD0D0);
  return a;
}

static const dns_rr_t *an(const answer_t *a, size_t i) {
  ASSERT(i < a->h.ancount);
  return &a->rr[i];
}

static const dns_rr_t *ns(const answer_t *a, size_t i) {
  ASSERT(i < a->h.nscount);
  return &a->rr[a->h.ancount + i];
}

static const dns_rr_t *ar(const answer_t *a, size_t i) {
  ASSERT(i < a->h.arcount);
  return &a->rr[a->h.ancount + a->h.nscount + i];
}

static unsigned rcode(const answer_t *a) {
  return dns_header_rcode(&a->h);
}

static bool aa(const answer_t *a) {
  return (a->h.flags & DNS_FLAG_AA) != 0;
}

static bool tc(const answer_t *a) {
  return (a->h.flags & DNS_FLAG_TC) != 0;
}

static void assert_owner(const dns_rr_t *rr, const char *want) {
  char text[DNS_NAME_TEXT_MAX];
  int len = dns_name_to_text(&rr->name, text, sizeof(text), false);
  ASSERT(len > 0);
  ASSERT_MEM_STR(text, (size_t)len, want);
}

/* The owner is the two bytes 0xC00C: a pointer to the question's name. */
static void assert_owner_is_question(const answer_t *a, const dns_rr_t *rr) {
  ASSERT(rr->rdata >= 12);
  ASSERT_EQ(a->b[rr->rdata - 12], 0xC0);
  ASSERT_EQ(a->b[rr->rdata - 11], 0x0C);
}

static void assert_a(const answer_t *a, const dns_rr_t *rr, const char *ip,
                     uint32_t ttl) {
  uint8_t want[4];
  ASSERT_EQ(inet_pton(AF_INET, ip, want), 1);
  ASSERT_EQ(rr->type, DNS_TYPE_A);
  ASSERT_EQ(rr->rclass, DNS_CLASS_IN);
  ASSERT_EQ(rr->ttl, ttl);
  ASSERT_EQ(rr->rdlength, 4);
  ASSERT(memcmp(a->b + rr->rdata, want, 4) == 0);
}

static void assert_aaaa(const answer_t *a, const dns_rr_t *rr, const char *ip,
                        uint32_t ttl) {
  uint8_t want[16];
  ASSERT_EQ(inet_pton(AF_INET6, ip, want), 1);
  ASSERT_EQ(rr->type, DNS_TYPE_AAAA);
  ASSERT_EQ(rr->ttl, ttl);
  ASSERT_EQ(rr->rdlength, 16);
  ASSERT(memcmp(a->b + rr->rdata, want, 16) == 0);
}

static uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
}

static void assert_rdata_name(const answer_t *a, size_t *pos,
                              const char *want) {
  dns_name_t n;
  char text[DNS_NAME_TEXT_MAX];
  ASSERT_EQ(dns_name_decode(a->b, a->len, pos, &n), DNS_WIRE_OK);
  int len = dns_name_to_text(&n, text, sizeof(text), false);
  ASSERT(len > 0);
  ASSERT_MEM_STR(text, (size_t)len, want);
}

/* The SOA of ddport.test, with the TTL expected where it stands. */
static void assert_demo_soa(const answer_t *a, const dns_rr_t *rr,
                            uint32_t ttl) {
  ASSERT_EQ(rr->type, DNS_TYPE_SOA);
  ASSERT_EQ(rr->ttl, ttl);
  assert_owner(rr, "ddport.test");
  size_t p = rr->rdata;
  assert_rdata_name(a, &p, "ns1.ddport.test");
  assert_rdata_name(a, &p, "hostmaster.ddport.test");
  ASSERT_EQ(p + 20, rr->rdata + rr->rdlength);
  ASSERT_EQ(get_u32(a->b + p), 2024052001);
  ASSERT_EQ(get_u32(a->b + p + 4), 3600);
  ASSERT_EQ(get_u32(a->b + p + 8), 600);
  ASSERT_EQ(get_u32(a->b + p + 12), 604800);
  ASSERT_EQ(get_u32(a->b + p + 16), 30);
}

/* NXDOMAIN or NODATA: no answer, the SOA with min(minimum, ttl). */
static void assert_negative(const answer_t *a, unsigned want_rcode) {
  ASSERT_EQ(rcode(a), want_rcode);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 0);
  ASSERT_EQ(a->h.nscount, 1);
  assert_demo_soa(a, ns(a, 0), 30);
}

/* ---- positive answers --------------------------------------------------- */

static void test_device_a(void) {
  query_t q = make_query("demo.ddport.test", DNS_TYPE_A);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT(!tc(a));
  ASSERT_EQ(dns_header_opcode(&a->h), 0);
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(a->h.nscount, 0);
  ASSERT_EQ(a->h.arcount, 0);
  ASSERT_EQ(a->q.qtype, DNS_TYPE_A);
  assert_a(a, an(a, 0), "127.0.0.1", 60);
  assert_owner_is_question(a, an(a, 0));
  /* Header, question, one 16-byte record: nothing else. */
  ASSERT_EQ(a->len, 12 + 22 + 16);
}

static void test_device_aaaa(void) {
  query_t q = make_query("demo.ddport.test", DNS_TYPE_AAAA);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 1);
  assert_aaaa(a, an(a, 0), "::1", 60);
  assert_owner_is_question(a, an(a, 0));
}

static void test_device_any(void) {
  query_t q = make_query("demo.ddport.test", DNS_TYPE_ANY);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 2);
  assert_a(a, an(a, 0), "127.0.0.1", 60);
  assert_aaaa(a, an(a, 1), "::1", 60);
}

static void test_case_preserved(void) {
  query_t q = make_query("DeMo.DDport.TEST", DNS_TYPE_A);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 1);
  /* The question comes back byte for byte. */
  ASSERT(memcmp(a->b + 12, q.b + 12, q.len - 12) == 0);
  ASSERT(memcmp(a->b + 12, "\4DeMo\6DDport\4TEST", 17) == 0);
  assert_owner_is_question(a, an(a, 0));
  assert_owner(an(a, 0), "DeMo.DDport.TEST");
  assert_a(a, an(a, 0), "127.0.0.1", 60);
}

static void test_wildcard(void) {
  static const char *names[] = {"x.wild.ddport.test", "a.b.wild.ddport.test",
                                "*.wild.ddport.test", "X.WILD.ddport.test"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    query_t q = make_query(names[i], DNS_TYPE_AAAA);
    answer_t *a = ask(&q);
    ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
    ASSERT_EQ(a->h.ancount, 1);
    assert_aaaa(a, an(a, 0), "::1", 60);
    assert_owner(an(a, 0), names[i]);
  }

  /* The wildcard's parent is not covered by it, but exists. */
  query_t q = make_query("wild.ddport.test", DNS_TYPE_A);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
}

static void test_rd_copied(void) {
  query_t q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN,
                              DNS_FLAG_RD, NO_EDNS, 0, false);
  answer_t *a = ask(&q);
  ASSERT(a->h.flags & DNS_FLAG_RD);
  ASSERT_EQ(a->h.flags & DNS_FLAG_RA, 0);
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  a = ask(&q);
  ASSERT_EQ(a->h.flags & DNS_FLAG_RD, 0);
  ASSERT_EQ(a->h.flags & DNS_FLAG_CD, 0);
  /* CD too (RFC 4035 3.1.6); AD never, as we do not sign. */
  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN,
                      DNS_FLAG_CD | DNS_FLAG_AD, NO_EDNS, 0, false);
  a = ask(&q);
  ASSERT(a->h.flags & DNS_FLAG_CD);
  ASSERT_EQ(a->h.flags & DNS_FLAG_AD, 0);
}

/* ---- negative answers --------------------------------------------------- */

static void test_nxdomain(void) {
  query_t q = make_query("nope.ddport.test", DNS_TYPE_A);
  answer_t *a = ask(&q);
  assert_negative(a, DNS_RCODE_NXDOMAIN);
  ASSERT_EQ(a->h.arcount, 0);

  q = make_query("deeper.nope.ddport.test", DNS_TYPE_MX);
  assert_negative(ask(&q), DNS_RCODE_NXDOMAIN);
}

static void test_disabled_device(void) {
  query_t q = make_query("off.ddport.test", DNS_TYPE_A);
  assert_negative(ask(&q), DNS_RCODE_NXDOMAIN);
}

static void test_nodata(void) {
  static const uint16_t types[] = {DNS_TYPE_MX, DNS_TYPE_TXT, DNS_TYPE_NS,
                                   DNS_TYPE_SOA, DNS_TYPE_CNAME};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    query_t q = make_query("demo.ddport.test", types[i]);
    assert_negative(ask(&q), DNS_RCODE_NOERROR);
  }
}

static void test_refused_outside(void) {
  static const char *names[] = {"example.com", "test", "xddport.test", "."};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    query_t q = make_query(names[i], DNS_TYPE_A);
    answer_t *a = ask(&q);
    ASSERT_EQ(rcode(a), DNS_RCODE_REFUSED);
    ASSERT(!aa(a));
    ASSERT(a->has_question);
    ASSERT_EQ(a->n_rr, 0);
  }
}

static void test_chaos_refused(void) {
  query_t q = make_query_full("version.bind", DNS_TYPE_TXT, DNS_CLASS_CH, 0,
                              NO_EDNS, 0, false);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_REFUSED);
  ASSERT_EQ(a->n_rr, 0);
  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_ANY, 0, NO_EDNS,
                      0, false);
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_REFUSED);
}

static void test_chaos_answered(void) {
  config.dns.version = "ddport test";
  config.dns.identity = "host-7";
  query_t q = make_query_full("VERSION.bind", DNS_TYPE_TXT, DNS_CLASS_CH, 0,
                              1232, 0, false);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(an(a, 0)->type, DNS_TYPE_TXT);
  ASSERT_EQ(an(a, 0)->rclass, DNS_CLASS_CH);
  ASSERT_EQ(an(a, 0)->rdlength, 12);
  ASSERT(memcmp(a->b + an(a, 0)->rdata, "\013ddport test", 12) == 0);
  ASSERT_EQ(a->h.arcount, 1); /* the OPT */
  q = make_query_full("id.server", DNS_TYPE_ANY, DNS_CLASS_CH, 0, NO_EDNS, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT(memcmp(a->b + an(a, 0)->rdata, "\006host-7", 7) == 0);
  /* Other types at those names: NODATA; other names: REFUSED. */
  q = make_query_full("hostname.bind", DNS_TYPE_A, DNS_CLASS_CH, 0, NO_EDNS, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->n_rr, 0);
  q = make_query_full("authors.bind", DNS_TYPE_TXT, DNS_CLASS_CH, 0, NO_EDNS, 0,
                      false);
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_REFUSED);
  config.dns.identity = NULL;
  q = make_query_full("id.server", DNS_TYPE_TXT, DNS_CLASS_CH, 0, NO_EDNS, 0,
                      false);
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_REFUSED);
  config.dns.version = NULL;
}

/* A label holding a dot is one label: "a.wild" is not below wild. */
static void test_dotted_label(void) {
  query_t q = make_query("a\\.wild.ddport.test", DNS_TYPE_A);
  answer_t *a = ask(&q);
  assert_negative(a, DNS_RCODE_NXDOMAIN);
  ASSERT(memcmp(a->b + 12, "\6a.wild\6ddport", 14) == 0);

  q = make_query("a\\.ddport.test", DNS_TYPE_A); /* under "test" only */
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_REFUSED);
  q = make_query("de\\000mo.ddport.test", DNS_TYPE_A);
  assert_negative(ask(&q), DNS_RCODE_NXDOMAIN);
}

/* ---- the apex and the name servers -------------------------------------- */

static void test_apex_soa(void) {
  query_t q = make_query("ddport.test", DNS_TYPE_SOA);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(a->h.nscount, 0);
  assert_demo_soa(a, an(a, 0), 60);
  assert_owner_is_question(a, an(a, 0));

  q = make_query("DDPORT.test", DNS_TYPE_ANY);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(a->h.nscount + a->h.arcount, 0);
  ASSERT_EQ(an(a, 0)->type, DNS_TYPE_SOA);
  assert_owner(an(a, 0), "DDPORT.test");
}

static void test_apex_ns(void) {
  query_t q = make_query("ddport.test", DNS_TYPE_NS);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(a->h.nscount, 0);
  ASSERT_EQ(a->h.arcount, 1);
  const dns_rr_t *rr = an(a, 0);
  ASSERT_EQ(rr->type, DNS_TYPE_NS);
  ASSERT_EQ(rr->ttl, 60);
  size_t p = rr->rdata;
  assert_rdata_name(a, &p, "ns1.ddport.test");
  ASSERT_EQ(p, rr->rdata + rr->rdlength);
  /* Glue. */
  assert_a(a, ar(a, 0), "127.0.0.1", 60);
  assert_owner(ar(a, 0), "ns1.ddport.test");
}

static void test_apex_address_nodata(void) {
  query_t q = make_query("ddport.test", DNS_TYPE_A);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
  q = make_query("ddport.test", DNS_TYPE_AAAA);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
  q = make_query("ddport.test", DNS_TYPE_MX);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
}

static void test_glue_name(void) {
  query_t q = make_query("NS1.ddport.test", DNS_TYPE_A);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.ancount, 1);
  assert_a(a, an(a, 0), "127.0.0.1", 60);
  assert_owner_is_question(a, an(a, 0));

  q = make_query("ns1.ddport.test", DNS_TYPE_AAAA);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
  q = make_query("ns1.ddport.test", DNS_TYPE_TXT);
  assert_negative(ask(&q), DNS_RCODE_NOERROR);
}

/* big.test: no name servers ("ns.<zone>" stands in), a dotted mailbox, a
 * device at the apex, and the SOA TTL below MINIMUM. */
static void test_other_zone(void) {
  query_t q = make_query("big.test", DNS_TYPE_SOA);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 1);
  const dns_rr_t *rr = an(a, 0);
  ASSERT_EQ(rr->ttl, 300);
  size_t p = rr->rdata;
  assert_rdata_name(a, &p, "ns.big.test");
  assert_rdata_name(a, &p, "ops\\.team.big.test");
  ASSERT_EQ(get_u32(a->b + p), 7);

  q = make_query("nothing.big.test", DNS_TYPE_A);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NXDOMAIN);
  ASSERT_EQ(a->h.nscount, 1);
  ASSERT_EQ(ns(a, 0)->ttl, 300);
  assert_owner(ns(a, 0), "big.test");

  /* No name servers: NODATA. */
  q = make_query("big.test", DNS_TYPE_NS);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 0);
  ASSERT_EQ(a->h.nscount, 1);

  /* A device at the apex answers like any device. */
  q = make_query("big.test", DNS_TYPE_A);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, BIG_PROXIES_V4);
  assert_a(a, an(a, 0), "192.0.2.1", 300);
  q = make_query_full("big.test", DNS_TYPE_AAAA, DNS_CLASS_IN, 0, 4096, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(a->h.ancount, BIG_PROXIES);
}

static void test_child_zone(void) {
  query_t q = make_query("sub.ddport.test", DNS_TYPE_SOA);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 1);
  size_t p = an(a, 0)->rdata;
  assert_rdata_name(a, &p, "ns.sub.ddport.test");
  assert_rdata_name(a, &p, "hostmaster.sub.ddport.test");
  ASSERT_EQ(get_u32(a->b + p), 3);

  q = make_query("x.sub.ddport.test", DNS_TYPE_A);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NXDOMAIN);
  ASSERT(aa(a));
  ASSERT_EQ(a->h.nscount, 1);
  assert_owner(ns(a, 0), "sub.ddport.test");
  ASSERT_EQ(ns(a, 0)->ttl, 5);
}

/* ---- errors ------------------------------------------------------------- */

static void test_notimp(void) {
  query_t q =
      make_query_full("ddport.test", DNS_TYPE_SOA, DNS_CLASS_IN,
                      DNS_FLAG_OPCODE(DNS_OPCODE_UPDATE), NO_EDNS, 0, false);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOTIMP);
  ASSERT_EQ(dns_header_opcode(&a->h), DNS_OPCODE_UPDATE);
  ASSERT(!aa(a));
  ASSERT(a->has_question);
  ASSERT_EQ(a->n_rr, 0);

  /* With EDNS, the OPT comes back. */
  q = make_query_full("ddport.test", DNS_TYPE_SOA, DNS_CLASS_IN,
                      DNS_FLAG_OPCODE(DNS_OPCODE_NOTIFY), 1232, 0, false);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOTIMP);
  ASSERT_EQ(a->h.arcount, 1);
  ASSERT_EQ(ar(a, 0)->type, DNS_TYPE_OPT);

  q = make_query("ddport.test", DNS_TYPE_AXFR);
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_NOTIMP);
}

static void test_formerr(void) {
  /* QDCOUNT 2, both questions present. */
  query_t q = make_query("demo.ddport.test", DNS_TYPE_A);
  memcpy(q.b + q.len, q.b + 12, q.len - 12);
  q.len += q.len - 12;
  q.b[5] = 2;
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
  ASSERT(!aa(a));
  ASSERT_EQ(a->n_rr, 0);
  ASSERT(a->has_question);

  /* QDCOUNT 0. */
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  q.b[5] = 0;
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
  ASSERT(!a->has_question);
  ASSERT_EQ(a->len, 12);

  /* A question cut short at every length. */
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  for (size_t len = 12; len < q.len; len++) {
    a = ask_raw(q.b, len, DNS_EDNS_SIZE);
    ASSERT_EQ(a->len, 12);
    ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
    ASSERT_EQ(a->h.id, 0xD0D0);
  }

  /* A compression loop in the question. */
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  q.b[12] = 0xC0;
  q.b[13] = 0x0C;
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
  ASSERT(!a->has_question);

  /* ARCOUNT promising a record that is not there. */
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  q.b[11] = 1;
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
  ASSERT(a->has_question);
}

static void test_no_answer(void) {
  query_t q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN,
                              DNS_FLAG_QR, NO_EDNS, 0, false);
  ASSERT_EQ(ask_raw(q.b, q.len, DNS_EDNS_SIZE)->len, 0);
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  for (size_t len = 0; len < 12; len++)
    ASSERT_EQ(ask_raw(q.b, len, DNS_EDNS_SIZE)->len, 0);
  ASSERT_EQ(ask_raw(q.b, 5, DNS_EDNS_SIZE)->len, 0);
}

/* ---- EDNS and truncation ------------------------------------------------ */

static const dns_rr_t *last_opt(const answer_t *a) {
  ASSERT(a->h.arcount >= 1);
  const dns_rr_t *opt = ar(a, a->h.arcount - 1u);
  ASSERT_EQ(opt->type, DNS_TYPE_OPT);
  ASSERT_EQ(opt->name.labels, 0);
  return opt;
}

static void test_edns(void) {
  query_t q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0,
                              4096, 0, true);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT_EQ(a->h.ancount, 1);
  ASSERT_EQ(a->h.arcount, 1);
  const dns_rr_t *opt = last_opt(a);
  ASSERT_EQ(opt->rclass, DNS_EDNS_SIZE);
  ASSERT_EQ(opt->ttl, DNS_OPT_DO); /* rcode 0, version 0, DO */
  ASSERT_EQ(opt->rdlength, 0);

  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0, 512, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(last_opt(a)->ttl, 0);

  /* After the glue, on an NS answer. */
  q = make_query_full("ddport.test", DNS_TYPE_NS, DNS_CLASS_IN, 0, 1232, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(a->h.arcount, 2);
  ASSERT_EQ(ar(a, 0)->type, DNS_TYPE_A);
  last_opt(a);

  /* And on NXDOMAIN. */
  q = make_query_full("nope.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0, 1232, 0,
                      false);
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NXDOMAIN);
  last_opt(a);
}

static void test_badvers(void) {
  query_t q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0,
                              4096, 1, true);
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), 0); /* the low bits of 16 */
  ASSERT_EQ(a->h.ancount, 0);
  ASSERT_EQ(a->h.nscount, 0);
  ASSERT_EQ(a->h.arcount, 1);
  const dns_rr_t *opt = last_opt(a);
  ASSERT_EQ(opt->ttl >> 24, 1);          /* 16 >> 4 */
  ASSERT_EQ((opt->ttl >> 16) & 0xFF, 0); /* the version we speak */
  ASSERT(opt->ttl & DNS_OPT_DO);
  ASSERT_EQ(opt->rclass, DNS_EDNS_SIZE);
}

static void test_two_opts(void) {
  query_t q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0,
                              4096, 0, false);
  memcpy(q.b + q.len, q.b + q.len - 11, 11);
  q.len += 11;
  q.b[11] = 2;
  answer_t *a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_FORMERR);
  ASSERT_EQ(a->n_rr, 0);

  /* An OPT whose owner is not the root. */
  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0, 4096, 0,
                      false);
  q.b[q.len - 11] = 0xC0;
  memmove(q.b + q.len - 9, q.b + q.len - 10, 10);
  q.b[q.len - 10] = 0x0C;
  q.len++;
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_FORMERR);

  /* An OPT outside the additional section. */
  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN, 0, 4096, 0,
                      false);
  q.b[7] = 1;
  q.b[11] = 0;
  ASSERT_EQ(rcode(ask(&q)), DNS_RCODE_FORMERR);

  /* An opcode we do not know, with a broken OPT: NOTIMP, and no OPT back
   * since the query's could not be trusted. */
  q = make_query_full("demo.ddport.test", DNS_TYPE_A, DNS_CLASS_IN,
                      DNS_FLAG_OPCODE(DNS_OPCODE_NOTIFY), 4096, 0, false);
  memcpy(q.b + q.len, q.b + q.len - 11, 11);
  q.len += 11;
  q.b[11] = 2;
  a = ask(&q);
  ASSERT_EQ(rcode(a), DNS_RCODE_NOTIMP);
  ASSERT_EQ(a->n_rr, 0);
}

static void test_truncation(void) {
  /* 40 AAAA records are 1120 bytes: too many for 512. */
  query_t q = make_query("host.big.test", DNS_TYPE_AAAA);
  answer_t *a = ask(&q);
  ASSERT(tc(a));
  ASSERT(aa(a));
  ASSERT_EQ(rcode(a), DNS_RCODE_NOERROR);
  ASSERT(a->has_question);
  ASSERT_EQ(a->n_rr, 0);
  ASSERT_EQ(a->len, q.len);

  /* EDNS with 4096: capped to 1232, which is enough. */
  q = make_query_full("host.big.test", DNS_TYPE_AAAA, DNS_CLASS_IN, 0, 4096, 0,
                      false);
  a = ask(&q);
  ASSERT(!tc(a));
  ASSERT_EQ(a->h.ancount, BIG_PROXIES);
  assert_aaaa(a, an(a, 0), "2001:db8::1", 300);
  assert_aaaa(a, an(a, BIG_PROXIES - 1), "2001:db8::28", 300);
  for (size_t i = 0; i < BIG_PROXIES; i++)
    assert_owner_is_question(a, an(a, i));
  ASSERT(a->len <= DNS_EDNS_SIZE);
  last_opt(a);

  /* EDNS with a size below 512 counts as 512: truncated, OPT kept. */
  q = make_query_full("host.big.test", DNS_TYPE_AAAA, DNS_CLASS_IN, 0, 100, 0,
                      false);
  a = ask(&q);
  ASSERT(tc(a));
  ASSERT_EQ(a->h.ancount, 0);
  ASSERT_EQ(a->h.arcount, 1);
  last_opt(a);

  /* ...but not when the answer fits in 512: ten A records. */
  q = make_query_full("host.big.test", DNS_TYPE_A, DNS_CLASS_IN, 0, 100, 0,
                      false);
  a = ask(&q);
  ASSERT(!tc(a));
  ASSERT_EQ(a->h.ancount, BIG_PROXIES_V4);
  ASSERT(a->len > 100);

  /* ANY takes A and AAAA of the proxy: 1280 bytes of records, over our
   * 1232 whatever the client offers. */
  static const int sizes[] = {NO_EDNS, 512, 1300, 4096, 65535};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    q = make_query_full("host.big.test", DNS_TYPE_ANY, DNS_CLASS_IN, 0,
                        sizes[i], 0, false);
    a = ask_raw(q.b, q.len, 65535);
    ASSERT(tc(a));
    ASSERT_EQ(a->h.ancount, 0);
    ASSERT_EQ(a->h.arcount, sizes[i] == NO_EDNS ? 0 : 1);
  }

  /* A small cap from the caller, as TCP framing or a test might pass. */
  q = make_query("demo.ddport.test", DNS_TYPE_A);
  a = ask_raw(q.b, q.len, 40);
  ASSERT(tc(a));
  ASSERT(a->has_question);
  ASSERT_EQ(a->len, q.len);
  a = ask_raw(q.b, q.len, 20);
  ASSERT(tc(a));
  ASSERT(!a->has_question);
  ASSERT_EQ(a->len, 12);
  ASSERT_EQ(a->h.id, 0xD0D0);
  ASSERT_EQ(ask_raw(q.b, q.len, 11)->len, 0);
  ASSERT_EQ(ask_raw(q.b, q.len, 0)->len, 0);
  /* Exactly enough. */
  a = ask_raw(q.b, q.len, 12 + 22 + 16);
  ASSERT(!tc(a));
  ASSERT_EQ(a->h.ancount, 1);
}

/* ---- the UDP server's lookup hint --------------------------------------- */

/* The answer to q as the UDP server builds it: its question read ahead
 * (the name as lowercase text) and looked up in the batch for the hint,
 * or with hint if one is given. */
static size_t answer_hinted(const query_t *q, const dns_lookup_hint_t *given,
                            uint8_t *out, size_t cap) {
  char text[CORE_NAME_MAX + 1];
  dns_lookup_hint_t hint = {0};
  dns_question_ahead_t ahead;
  bool read = dns_question_read_ahead(q->b, q->len, text, sizeof text, &ahead);
  if (given != NULL) {
    hint = *given;
  } else if (read && ahead.text != NULL) {
    const char *names[1] = {ahead.text};
    size_t lens[1] = {ahead.text_len};
    const reg_device_t *dev[1];
    reg_lookup_many(reg, 1, names, lens, dev);
    hint = (dns_lookup_hint_t){ahead.text, ahead.text_len, dev[0]};
  }
  const dns_answer_opts_t opts = {.tcp = false,
                                  .hint = hint.name ? &hint : NULL,
                                  .ahead = read ? &ahead : NULL};
  return dns_answer_build(&config, reg, q->b, q->len, out, cap, &opts);
}

/* An answer given the server's hint and question read ahead is the
 * answer without them, byte for byte; a hint for another name changes
 * nothing. */
static void test_lookup_hint(void) {
  static const char *names[] = {
      "demo.ddport.test", "DEMO.ddport.TEST", "x.wild.ddport.test",
      "off.ddport.test", "nope.ddport.test", "ddport.test", "big.test",
      "host.big.test", "a.sub.ddport.test", "sub.ddport.test",
      "a\\.demo.ddport.test", "x.y.wild.ddport.test", "ns1.ddport.test",
      "elsewhere.test", "wild.ddport.test",
      /* Text longer than a device name's: read ahead without it. */
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200\\200\\200\\200\\200\\200\\200\\200"
      "\\200\\200\\200.ddport.test"};
  static const uint16_t types[] = {DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_ANY,
                                   DNS_TYPE_MX};
  static uint8_t plain[DNS_EDNS_SIZE], hinted[DNS_EDNS_SIZE];
  const reg_device_t *demo = reg_lookup(reg, "demo.ddport.test", 16);
  ASSERT(demo != NULL);
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
      query_t q = make_query(names[i], types[t]);
      const dns_answer_opts_t none = {.tcp = false};
      size_t n = dns_answer_build(&config, reg, q.b, q.len, plain, sizeof plain,
                                  &none);
      ASSERT(n > 0);
      size_t m = answer_hinted(&q, NULL, hinted, sizeof hinted);
      if (m != n || memcmp(plain, hinted, n) != 0)
        TEST_FAIL_("%s type %u: the server's hint changes the answer", names[i],
                   types[t]);
      /* A hint left over from another datagram, or another name. */
      dns_lookup_hint_t other = {"demo.ddport.test", 16, demo};
      if (strcmp(names[i], "demo.ddport.test") != 0) {
        m = answer_hinted(&q, &other, hinted, sizeof hinted);
        if (m != n || memcmp(plain, hinted, n) != 0)
          TEST_FAIL_("%s type %u: a hint for another name is used", names[i],
                     types[t]);
      }
    }
  }
}

int main(void) {
  setup();
  RUN_TEST(test_device_a);
  RUN_TEST(test_device_aaaa);
  RUN_TEST(test_device_any);
  RUN_TEST(test_case_preserved);
  RUN_TEST(test_wildcard);
  RUN_TEST(test_rd_copied);
  RUN_TEST(test_nxdomain);
  RUN_TEST(test_disabled_device);
  RUN_TEST(test_nodata);
  RUN_TEST(test_refused_outside);
  RUN_TEST(test_chaos_refused);
  RUN_TEST(test_chaos_answered);
  RUN_TEST(test_dotted_label);
  RUN_TEST(test_apex_soa);
  RUN_TEST(test_apex_ns);
  RUN_TEST(test_apex_address_nodata);
  RUN_TEST(test_glue_name);
  RUN_TEST(test_other_zone);
  RUN_TEST(test_child_zone);
  RUN_TEST(test_notimp);
  RUN_TEST(test_formerr);
  RUN_TEST(test_no_answer);
  RUN_TEST(test_edns);
  RUN_TEST(test_badvers);
  RUN_TEST(test_two_opts);
  RUN_TEST(test_truncation);
  RUN_TEST(test_lookup_hint);
  reg_free(reg);
  return 0;
}
