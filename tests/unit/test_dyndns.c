/* SPDX-License-Identifier: MIT */
/* test_dyndns.c -- the dyndns2 request parser and reply rendering */
#include "registry/update_int.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <errno.h>

static const core_str_t AUTH = {"Basic ZGVtbzpzM2NyZXQ=", 22}; /* demo:s3cret */
static const core_str_t AGENT = {"ddclient/3.10.0", 15};

static core_str_t str(const char *s) {
  return (core_str_t){s, strlen(s)};
}

static reg_dyndns_status_t parse(const char *target, reg_dyndns_request_t *r) {
  return reg_dyndns_parse(str(target), &AUTH, &AGENT, r);
}

static void assert_ip(const core_ip_t *ip, const char *text) {
  char buf[INET6_ADDRSTRLEN];
  ASSERT_STR_EQ(core_ip_format(ip, buf, sizeof buf), text);
}

static void test_ddclient_request(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(parse("/nic/update?system=dyndns&hostname=cam.ddport.test,"
                  "NAS.DDport.Test.&myip=192.0.2.7&wildcard=NOCHG&mx=NOCHG"
                  "&backmx=NOCHG",
                  &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(r.why == NULL);
  ASSERT_EQ(r.n_hosts, 2);
  ASSERT(r.hosts[0].valid && r.hosts[1].valid);
  ASSERT_STR_EQ(r.hosts[0].name, "cam.ddport.test");
  ASSERT_EQ(r.hosts[0].len, 15);
  ASSERT_STR_EQ(r.hosts[1].name, "nas.ddport.test");
  ASSERT(r.has_ipv4 && !r.has_ipv6);
  assert_ip(&r.ipv4, "192.0.2.7");
  ASSERT_EQ(r.n_ports, 0);
  ASSERT(!r.offline);
  ASSERT_EQ(r.auth, REG_DYNDNS_AUTH_BASIC);
  ASSERT_STR_EQ(r.user, "demo");
  ASSERT_STR_EQ(r.secret, "s3cret");
  ASSERT(r.has_agent);
  reg_dyndns_clear(&r);
  for (size_t i = 0; i < sizeof r.secret; i++)
    ASSERT_EQ(r.secret[i], 0);
}

/* inadyn percent-encodes IPv6 addresses; '+' is a space. */
static void test_percent_decoding(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(
      parse("/nic/update?hostname=a.ddport.test&myip=2001%3adb8%3A%3A1", &r),
      REG_DYNDNS_COMPLETE);
  ASSERT(!r.has_ipv4 && r.has_ipv6);
  assert_ip(&r.ipv6, "2001:db8::1");
  /* Keys decode too, and a %2C splits names like a comma. */
  ASSERT_EQ(parse("/nic/update?hostn%61me=a.ddport.test%2Cb.ddport.test", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, 2);
  ASSERT_STR_EQ(r.hosts[1].name, "b.ddport.test");
  /* A space is never part of a name. */
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test+", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(!r.hosts[0].valid);

  const char *bad[] = {
      "/nic/update?hostname=a.ddport.test%zz",
      "/nic/update?hostname=a.ddport.test%2",
      "/nic/update?hostname=a.ddport.test%",
      "/nic/update?hostname=a.ddport.test%00",
      "/nic/update?hostname=a.ddport.test%0a",
      "/nic/update?hostname=a.ddport.test&myip=1.2.3.4%7f",
      "/nic/update?hostname=a.ddport.test&unknown=%g0",
      "/nic/update?hostname=a.ddport.test&%zz=1",
      "/nic/update?hostname=a.ddport.test&port=8%",
      "/nic/update?hostname=a.ddport.test&offline=%",
      "/nic/update?hostname=a.ddport.test&myipv6=%",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(parse(bad[i], &r), REG_DYNDNS_INVALID);
    ASSERT(r.why != NULL);
  }
}

static void test_addresses(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&myip=192.0.2.1,2001:db8::"
                  "2",
                  &r),
            REG_DYNDNS_COMPLETE);
  assert_ip(&r.ipv4, "192.0.2.1");
  assert_ip(&r.ipv6, "2001:db8::2");
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&myip=2001:db8::2,192.0.2."
                  "1",
                  &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(r.has_ipv4 && r.has_ipv6);
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&myip=192.0.2.1&myipv6="
                  "2001:db8::3",
                  &r),
            REG_DYNDNS_COMPLETE);
  assert_ip(&r.ipv6, "2001:db8::3");
  /* The same IPv6 address twice is one address. */
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&myip=2001:db8::3&myipv6="
                  "2001:db8:0::3",
                  &r),
            REG_DYNDNS_COMPLETE);
  /* An IPv4-mapped address is the IPv4 address. */
  ASSERT_EQ(
      parse("/nic/update?hostname=a.ddport.test&myip=::ffff:192.0.2.9", &r),
      REG_DYNDNS_COMPLETE);
  ASSERT(r.has_ipv4 && !r.has_ipv6);
  assert_ip(&r.ipv4, "192.0.2.9");
  /* Empty values are as good as absent: the source address is used. */
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&myip=&myipv6=", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(!r.has_ipv4 && !r.has_ipv6);

  const char *bad[] = {
      "myip=192.0.2.256",
      "myip=192.0.2.1,192.0.2.2",
      "myip=2001:db8::1,2001:db8::2",
      "myip=192.0.2.1,2001:db8::1,192.0.2.3",
      "myip=192.0.2.1,",
      "myip=cam.ddport.test",
      "myip=fe80::1%25eth0",
      "myip=%5B2001:db8::1%5D",
      "myipv6=192.0.2.1",
      "myipv6=::ffff:192.0.2.1",
      "myip=2001:db8::1&myipv6=2001:db8::2",
      "myip="
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char target[512];
    snprintf(target, sizeof target, "/nic/update?hostname=a.ddport.test&%s",
             bad[i]);
    ASSERT_EQ(parse(target, &r), REG_DYNDNS_BAD_ADDRESS);
    ASSERT(r.why != NULL);
    /* The names are still there: each gets its own dnserr line. */
    ASSERT_EQ(r.n_hosts, 1);
    ASSERT(r.hosts[0].valid);
  }
}

static void test_ports(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&port=10080&port_https="
                  "10443&port_Admin-2=00022",
                  &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_ports, 3);
  ASSERT_STR_EQ(r.ports[0].listener, "http");
  ASSERT_EQ(r.ports[0].port, 10080);
  ASSERT_STR_EQ(r.ports[1].listener, "https");
  ASSERT_EQ(r.ports[1].port, 10443);
  ASSERT_STR_EQ(r.ports[2].listener, "admin-2");
  ASSERT_EQ(r.ports[2].port, 22);
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&port=", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_ports, 0);
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&port=1&port_x=65535", &r),
            REG_DYNDNS_COMPLETE);

  const char *bad[] = {
      "port=0",     "port=65536",   "port=-1",        "port=%2B80",
      "port=80x",   "port=8 0",     "port=123456",    "port_=80",
      "port_a.b=1", "port_a%2Fb=1", "port_h%C3%A9=1",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char target[256];
    snprintf(target, sizeof target, "/nic/update?hostname=a.ddport.test&%s",
             bad[i]);
    ASSERT_EQ(parse(target, &r), REG_DYNDNS_BAD_PORT);
  }
  /* A listener name longer than any listener may have. */
  char target[512];
  snprintf(target, sizeof target,
           "/nic/update?hostname=a.ddport.test&port_%s=1",
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  ASSERT_EQ(parse(target, &r), REG_DYNDNS_BAD_PORT);
  /* More listeners than one update may set. */
  size_t len = (size_t)snprintf(target, sizeof target,
                                "/nic/update?hostname=a.ddport.test");
  for (int i = 0; i <= REG_UPDATE_MAX_PORTS; i++)
    len += (size_t)snprintf(target + len, sizeof target - len, "&port_l%d=%d",
                            i, i + 1);
  ASSERT_EQ(parse(target, &r), REG_DYNDNS_BAD_PORT);
  /* port is the http listener's: both at once is a duplicate. */
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&port=1&port_http=2", &r),
            REG_DYNDNS_INVALID);
  ASSERT_EQ(parse("/nic/update?hostname=a.ddport.test&port_x=1&port_X=2", &r),
            REG_DYNDNS_INVALID);
}

static void test_hostnames(void) {
  reg_dyndns_request_t r;
  char target[8192];
  size_t len = (size_t)snprintf(target, sizeof target, "/nic/update?hostname=");
  for (int i = 0; i < REG_DYNDNS_MAX_HOSTS; i++)
    len += (size_t)snprintf(target + len, sizeof target - len, "%sh%d.test",
                            i ? "," : "", i);
  ASSERT_EQ(parse(target, &r), REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, REG_DYNDNS_MAX_HOSTS);
  ASSERT_STR_EQ(r.hosts[19].name, "h19.test");
  snprintf(target + len, sizeof target - len, ",h20.test");
  ASSERT_EQ(parse(target, &r), REG_DYNDNS_TOO_MANY_HOSTS);

  ASSERT_EQ(parse("/nic/update?hostname=a.x,,foo,*.b.x,c..x,d.x", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, 6);
  bool expect[] = {true, false, false, false, false, true};
  for (size_t i = 0; i < 6; i++)
    ASSERT_EQ(r.hosts[i].valid, expect[i]);
  ASSERT_STR_EQ(r.hosts[1].name, "");

  /* A name of more than 253 bytes is refused; parsing goes on. */
  len = (size_t)snprintf(target, sizeof target, "/nic/update?hostname=");
  for (int i = 0; i < 4; i++)
    len += (size_t)snprintf(
        target + len, sizeof target - len, "%s%s", i ? "." : "",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  snprintf(target + len, sizeof target - len, "aa,ok.test");
  ASSERT_EQ(parse(target, &r), REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, 2);
  ASSERT(!r.hosts[0].valid && r.hosts[1].valid);

  ASSERT_EQ(parse("/nic/update?hostname=", &r), REG_DYNDNS_NO_HOSTNAME);
  ASSERT_EQ(parse("/nic/update?myip=192.0.2.1", &r), REG_DYNDNS_NO_HOSTNAME);
  ASSERT_EQ(parse("/nic/update", &r), REG_DYNDNS_NO_HOSTNAME);
  ASSERT_EQ(parse("/nic/update?", &r), REG_DYNDNS_NO_HOSTNAME);
  ASSERT_EQ(parse("/nic/update?hostname", &r), REG_DYNDNS_NO_HOSTNAME);
}

static void test_paths(void) {
  reg_dyndns_request_t r;
  const char *not_found[] = {"/",
                             "/nic/update2?hostname=a.x",
                             "/nic/updat?hostname=a.x",
                             "/nic/update/?hostname=a.x",
                             "/NIC/UPDATE?hostname=a.x",
                             "nic/update?hostname=a.x",
                             "/nic/%75pdate?hostname=a.x",
                             "http://ddport.test?hostname=a.x",
                             ""};
  for (size_t i = 0; i < sizeof not_found / sizeof not_found[0]; i++) {
    ASSERT_EQ(parse(not_found[i], &r), REG_DYNDNS_NOT_FOUND);
    ASSERT(r.why != NULL);
  }
  ASSERT_EQ(parse("http://ddport.test:8081/nic/update?hostname=a.x", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_STR_EQ(r.hosts[0].name, "a.x");
  ASSERT_EQ(parse("HTTPS://ddport.test/nic/update?hostname=a.x", &r),
            REG_DYNDNS_COMPLETE);
  /* A fragment is not part of the query. */
  ASSERT_EQ(parse("/nic/update?hostname=a.x#&hostname=b.x", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, 1);
}

/* Duplicate parameters are an error rather than "last wins": a proxy in
 * front of ddport that picks the first value must not see another update
 * than ddport does. Unknown parameters are ignored, repeated or not. */
static void test_duplicates_and_unknown(void) {
  reg_dyndns_request_t r;
  const char *dup[] = {
      "/nic/update?hostname=a.x&hostname=b.x",
      "/nic/update?hostname=a.x&HOSTNAME=a.x",
      "/nic/update?hostname=a.x&myip=192.0.2.1&myip=192.0.2.1",
      "/nic/update?hostname=a.x&myipv6=::2&myipv6=::2",
      "/nic/update?hostname=a.x&offline=no&offline=no",
      "/nic/update?hostname=a.x&port=1&port=1",
      "/nic/update?hostname=&hostname=a.x",
  };
  for (size_t i = 0; i < sizeof dup / sizeof dup[0]; i++) {
    ASSERT_EQ(parse(dup[i], &r), REG_DYNDNS_INVALID);
    ASSERT_STR_EQ(r.why, i == 5 ? "a listener's port is given twice"
                                : "a parameter is given twice");
  }
  ASSERT_EQ(parse("/nic/update?&&x=1&x=2&system=custom&wildcard=ON&mx=mx.x&"
                  "backmx=YES&=&hostname=a.x&",
                  &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.n_hosts, 1);
}

static void test_offline(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(parse("/nic/update?hostname=a.x&offline=YES", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(r.offline);
  ASSERT_EQ(parse("/nic/update?hostname=a.x&offline=no", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(!r.offline);
  ASSERT_EQ(parse("/nic/update?hostname=a.x&offline=", &r),
            REG_DYNDNS_COMPLETE);
  ASSERT(!r.offline);
  ASSERT_EQ(parse("/nic/update?hostname=a.x&offline=maybe", &r),
            REG_DYNDNS_BAD_OFFLINE);
  ASSERT_EQ(parse("/nic/update?hostname=a.x&offline=NOCHG", &r),
            REG_DYNDNS_BAD_OFFLINE);
}

/* The reported problem does not depend on the order of parameters. */
static void test_precedence(void) {
  reg_dyndns_request_t r;
  ASSERT_EQ(parse("/nic/update?port=0&myip=x&hostname=a.x&offline=z", &r),
            REG_DYNDNS_BAD_ADDRESS);
  ASSERT_EQ(parse("/nic/update?offline=z&hostname=a.x&port=0&myip=x", &r),
            REG_DYNDNS_BAD_ADDRESS);
  ASSERT_EQ(parse("/nic/update?offline=z&hostname=a.x&port=0", &r),
            REG_DYNDNS_BAD_PORT);
  ASSERT_EQ(parse("/nic/update?myip=x&hostname=", &r), REG_DYNDNS_NO_HOSTNAME);
  ASSERT_EQ(parse("/nic/update?myip=x&x=%&hostname=", &r), REG_DYNDNS_INVALID);
}

/* Standard base64 with padding, for building headers. */
static void base64(const char *in, size_t len, char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = (const unsigned char *)in;
  for (size_t i = 0; i < len; i += 3) {
    unsigned v = (unsigned)p[i] << 16;
    if (i + 1 < len)
      v |= (unsigned)p[i + 1] << 8;
    if (i + 2 < len)
      v |= p[i + 2];
    *out++ = abc[v >> 18 & 63];
    *out++ = abc[v >> 12 & 63];
    *out++ = i + 1 < len ? abc[v >> 6 & 63] : '=';
    *out++ = i + 2 < len ? abc[v & 63] : '=';
  }
  *out = '\0';
}

static void test_basic_auth(void) {
  reg_dyndns_request_t r;
  struct {
    const char *header;
    reg_dyndns_auth_t auth;
    const char *user, *secret;
  } cases[] = {
      {"Basic ZGVtbzpzM2NyZXQ=", REG_DYNDNS_AUTH_BASIC, "demo", "s3cret"},
      {"basic \t ZGVtbzpzM2NyZXQ  ", REG_DYNDNS_AUTH_BASIC, "demo", "s3cret"},
      {"Basic dXNlcjo=", REG_DYNDNS_AUTH_BASIC, "user", ""},
      {"Basic dTpwYTpzcw==", REG_DYNDNS_AUTH_BASIC, "u", "pa:ss"},
      {"Basic w6nDqTrDqQ==", REG_DYNDNS_AUTH_BASIC, "\xc3\xa9\xc3\xa9",
       "\xc3\xa9"},
      {"Bearer ZGVtbzpzM2NyZXQ=", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"Basic", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"Basic ", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"BasicZGVtbzpzM2NyZXQ=", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"Basic ZGVtbzpzM2N!ZXQ=", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"Basic ZGVt bzpzM2NyZXQ=", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"Basic ZGVtbw==", REG_DYNDNS_AUTH_MALFORMED, "", ""},     /* demo */
      {"Basic OnNlY3JldA==", REG_DYNDNS_AUTH_MALFORMED, "", ""}, /* :secret */
      {"Basic ZGVtbzpzM2NyZXR=", REG_DYNDNS_AUTH_MALFORMED, "", ""}, /* bits */
      {"Basic ZGVtbzpzM2NyZXQA", REG_DYNDNS_AUTH_MALFORMED, "", ""}, /* NUL */
      {"Basic Z", REG_DYNDNS_AUTH_MALFORMED, "", ""},
      {"", REG_DYNDNS_AUTH_MALFORMED, "", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    core_str_t h = str(cases[i].header);
    ASSERT_EQ(reg_dyndns_parse(str("/nic/update?hostname=a.x"), &h, &AGENT, &r),
              REG_DYNDNS_COMPLETE);
    if (r.auth != cases[i].auth)
      TEST_FAIL_("case %zu (%s): auth %d", i, cases[i].header, (int)r.auth);
    ASSERT_STR_EQ(r.user, cases[i].user);
    ASSERT_STR_EQ(r.secret, cases[i].secret);
  }
  /* The longest user and secret pass; one byte more is refused. */
  struct {
    size_t user, secret;
    reg_dyndns_auth_t auth;
  } sizes[] = {
      {REG_DYNDNS_USER_MAX, REG_DYNDNS_SECRET_MAX, REG_DYNDNS_AUTH_BASIC},
      {REG_DYNDNS_USER_MAX + 1, 1, REG_DYNDNS_AUTH_MALFORMED},
      {1, REG_DYNDNS_SECRET_MAX + 1, REG_DYNDNS_AUTH_MALFORMED},
  };
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char plain[REG_DYNDNS_USER_MAX + REG_DYNDNS_SECRET_MAX + 3];
    memset(plain, 'u', sizes[i].user);
    plain[sizes[i].user] = ':';
    memset(plain + sizes[i].user + 1, 's', sizes[i].secret);
    char header[1024] = "Basic ";
    base64(plain, sizes[i].user + 1 + sizes[i].secret, header + 6);
    ASSERT_EQ(reg_dyndns_parse_basic(str(header), &r), sizes[i].auth);
    if (sizes[i].auth == REG_DYNDNS_AUTH_BASIC) {
      ASSERT_EQ(strlen(r.user), sizes[i].user);
      ASSERT_EQ(strlen(r.secret), sizes[i].secret);
    }
  }

  ASSERT_EQ(reg_dyndns_parse(str("/nic/update?hostname=a.x"), NULL, &AGENT, &r),
            REG_DYNDNS_COMPLETE);
  ASSERT_EQ(r.auth, REG_DYNDNS_AUTH_NONE);
}

static void test_user_agent(void) {
  reg_dyndns_request_t r;
  core_str_t blank = str(" \t");
  reg_dyndns_parse(str("/nic/update?hostname=a.x"), &AUTH, NULL, &r);
  ASSERT(!r.has_agent);
  reg_dyndns_parse(str("/nic/update?hostname=a.x"), &AUTH, &blank, &r);
  ASSERT(!r.has_agent);
  reg_dyndns_parse(str("/nic/update?hostname=a.x"), &AUTH, &AGENT, &r);
  ASSERT(r.has_agent);
}

/* ---- replies ---------------------------------------------------------- */

static void ip(core_ip_t *out, const char *text) {
  ASSERT_EQ(core_ip_parse(text, out), 0);
}

static void test_render_lines(void) {
  reg_dyndns_line_t lines[4] = {{.code = REG_DYNDNS_GOOD, .n_addrs = 1},
                                {.code = REG_DYNDNS_NOCHG, .n_addrs = 2},
                                {.code = REG_DYNDNS_NOHOST},
                                {.code = REG_DYNDNS_NOTFQDN}};
  ip(&lines[0].addrs[0], "192.0.2.7");
  ip(&lines[1].addrs[0], "192.0.2.7");
  ip(&lines[1].addrs[1], "2001:db8::7");
  reg_dyndns_reply_t reply = {200, lines, 4, false};
  char buf[REG_DYNDNS_REPLY_MAX];
  int n = reg_dyndns_reply_render(&reply, buf, sizeof buf);
  const char *expect = "HTTP/1.1 200 OK\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: 58\r\n"
                       "Cache-Control: no-store\r\n"
                       "\r\n"
                       "good 192.0.2.7\n"
                       "nochg 192.0.2.7,2001:db8::7\n"
                       "nohost\n"
                       "notfqdn\n";
  ASSERT_MEM_STR(buf, (size_t)n, expect);

  /* Too small a buffer is refused at every size, never cut short. */
  for (int cap = 0; cap < n; cap++)
    ASSERT_EQ(reg_dyndns_reply_render(&reply, buf, (size_t)cap), -ENOSPC);
  ASSERT_EQ(reg_dyndns_reply_render(&reply, buf, (size_t)n), n);

  /* Every code has its word. */
  const char *words[] = {"good",  "nochg",  "nohost", "notfqdn", "numhost",
                         "abuse", "dnserr", "911",    "badauth", "badagent"};
  for (int c = REG_DYNDNS_GOOD; c <= REG_DYNDNS_BADAGENT; c++)
    ASSERT_STR_EQ(reg_dyndns_code_name((reg_dyndns_code_t)c), words[c]);
}

static void test_render_statuses(void) {
  char buf[REG_DYNDNS_REPLY_MAX];
  reg_dyndns_line_t badauth = {.code = REG_DYNDNS_BADAUTH};
  reg_dyndns_reply_t reply = {401, &badauth, 1, true};
  int n = reg_dyndns_reply_render(&reply, buf, sizeof buf);
  ASSERT(n > 0);
  buf[n] = '\0';
  ASSERT_CONTAINS(buf, "HTTP/1.1 401 Unauthorized\r\n");
  ASSERT_CONTAINS(buf, "\r\nWWW-Authenticate: Basic realm=\"ddport\"\r\n");
  ASSERT_CONTAINS(buf, "\r\nConnection: close\r\n");
  ASSERT_CONTAINS(buf, "\r\nContent-Length: 8\r\n");
  ASSERT(strstr(buf, "chunked") == NULL);
  ASSERT_CONTAINS(buf, "\r\n\r\nbadauth\n");

  reg_dyndns_reply_t not_found = {404, NULL, 0, false};
  n = reg_dyndns_reply_render(&not_found, buf, sizeof buf);
  buf[n] = '\0';
  ASSERT_CONTAINS(buf, "HTTP/1.1 404 Not Found\r\n");
  ASSERT_CONTAINS(buf, "\r\nContent-Length: 10\r\n");
  ASSERT_CONTAINS(buf, "\r\n\r\nNot Found\n");
  ASSERT(strstr(buf, "WWW-Authenticate") == NULL);

  reg_dyndns_reply_t method = {405, NULL, 0, true};
  n = reg_dyndns_reply_render(&method, buf, sizeof buf);
  buf[n] = '\0';
  ASSERT_CONTAINS(buf, "\r\nAllow: GET, POST\r\n");

  unsigned ok[] = {400, 408, 413, 431, 500, 503};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    reg_dyndns_reply_t r = {ok[i], NULL, 0, true};
    ASSERT(reg_dyndns_reply_render(&r, buf, sizeof buf) > 0);
  }
  reg_dyndns_reply_t odd = {299, NULL, 0, false};
  ASSERT_EQ(reg_dyndns_reply_render(&odd, buf, sizeof buf), -EINVAL);
  reg_dyndns_line_t bad = {.code = (reg_dyndns_code_t)99};
  reg_dyndns_reply_t bad_line = {200, &bad, 1, false};
  ASSERT_EQ(reg_dyndns_reply_render(&bad_line, buf, sizeof buf), -EINVAL);
}

/* The longest possible 20-line reply fits in REG_DYNDNS_REPLY_MAX. */
static void test_render_largest(void) {
  reg_dyndns_line_t lines[REG_DYNDNS_MAX_HOSTS];
  for (size_t i = 0; i < REG_DYNDNS_MAX_HOSTS; i++) {
    lines[i] = (reg_dyndns_line_t){.code = REG_DYNDNS_NOCHG, .n_addrs = 2};
    ip(&lines[i].addrs[0], "255.255.255.255");
    ip(&lines[i].addrs[1], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  }
  reg_dyndns_reply_t reply = {200, lines, REG_DYNDNS_MAX_HOSTS, true};
  char buf[REG_DYNDNS_REPLY_MAX];
  int n = reg_dyndns_reply_render(&reply, buf, sizeof buf);
  ASSERT(n > 0);
  /* Content-Length matches the body exactly. */
  buf[n] = '\0';
  const char *cl = strstr(buf, "Content-Length: ");
  const char *body = strstr(buf, "\r\n\r\n");
  ASSERT(cl != NULL && body != NULL);
  ASSERT_EQ(strtoul(cl + 16, NULL, 10), (size_t)n - (size_t)(body + 4 - buf));
}

static void early_case(const char *target, const core_str_t *auth,
                       const core_str_t *agent, bool decided, unsigned status,
                       int code) {
  reg_dyndns_request_t r;
  reg_dyndns_reply_t reply;
  reg_dyndns_line_t line;
  reg_dyndns_parse(str(target), auth, agent, &r);
  bool got = reg_dyndns_early_reply(&r, &reply, &line);
  if (got != decided)
    TEST_FAIL_("%s: decided %d", target, got);
  if (!decided)
    return;
  ASSERT_EQ(reply.http_status, status);
  if (code < 0) {
    ASSERT_EQ(reply.n_lines, 0);
  } else {
    ASSERT_EQ(reply.n_lines, 1);
    ASSERT_EQ(reply.lines[0].code, code);
  }
}

static void test_early_reply(void) {
  core_str_t bad_auth = str("Basic !!");
  early_case("/other?hostname=a.x", NULL, NULL, true, 404, -1);
  early_case("/nic/update?hostname=%zz", NULL, &AGENT, true, 401,
             REG_DYNDNS_BADAUTH);
  early_case("/nic/update?hostname=%zz", &AUTH, NULL, true, 400,
             REG_DYNDNS_DNSERR);
  early_case("/nic/update?hostname=", &bad_auth, NULL, true, 200,
             REG_DYNDNS_BADAGENT);
  early_case("/nic/update?hostname=", &bad_auth, &AGENT, true, 200,
             REG_DYNDNS_BADAUTH);
  early_case("/nic/update?hostname=", &AUTH, &AGENT, true, 200,
             REG_DYNDNS_NOTFQDN);
  early_case("/nic/update?hostname=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u",
             &AUTH, &AGENT, true, 200, REG_DYNDNS_NUMHOST);
  /* Everything else needs the account and the registry. */
  early_case("/nic/update?hostname=a.x", &AUTH, &AGENT, false, 0, 0);
  early_case("/nic/update?hostname=a.x&myip=x", &AUTH, &AGENT, false, 0, 0);
  early_case("/nic/update?hostname=a.x&port=0", &AUTH, &AGENT, false, 0, 0);
  early_case("/nic/update?hostname=nodot", &AUTH, &AGENT, false, 0, 0);
}

int main(void) {
  RUN_TEST(test_ddclient_request);
  RUN_TEST(test_percent_decoding);
  RUN_TEST(test_addresses);
  RUN_TEST(test_ports);
  RUN_TEST(test_hostnames);
  RUN_TEST(test_paths);
  RUN_TEST(test_duplicates_and_unknown);
  RUN_TEST(test_offline);
  RUN_TEST(test_precedence);
  RUN_TEST(test_basic_auth);
  RUN_TEST(test_user_agent);
  RUN_TEST(test_render_lines);
  RUN_TEST(test_render_statuses);
  RUN_TEST(test_render_largest);
  RUN_TEST(test_early_reply);
  return 0;
}
