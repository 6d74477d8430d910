/* SPDX-License-Identifier: MIT */
/* test_config.c -- the YAML configuration loader: values, defaults, errors */
#include "registry/registry.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *argv0;

/* Loads text under the name "t.yaml"; *diag receives what was reported. */
static int load(const char *text, char **diag, reg_config_t **config) {
  size_t size = 0;
  FILE *f = open_memstream(diag, &size);
  ASSERT(f != NULL);
  int rc = reg_config_load_buffer("t.yaml", text, strlen(text), f, config);
  fclose(f);
  return rc;
}

/* The text must load cleanly; the caller frees the config. */
static reg_config_t *load_ok(const char *text) {
  char *diag;
  reg_config_t *config = NULL;
  int rc = load(text, &diag, &config);
  ASSERT_STR_EQ(diag, "");
  ASSERT_EQ(rc, 0);
  ASSERT(config != NULL);
  free(diag);
  return config;
}

/* The text must fail with exactly these diagnostics. */
static void expect_errors(const char *text, const char *expected) {
  char *diag;
  reg_config_t *config = (reg_config_t *)&config;
  int rc = load(text, &diag, &config);
  ASSERT_STR_EQ(diag, expected);
  ASSERT_EQ(rc, -EINVAL);
  ASSERT(config == NULL);
  free(diag);
}

/* yescrypt of "hunter2", from `ddport hash-secret`. */
#define HUNTER2                                                                \
  "$y$j9T$7nXje.gdLO2k5TLKk8hYi0$lpAG6CTkQlcARmqaqbKmlXwiCrd0TUcCALsJBkPy8Q8"

/* sha512crypt of "hunter2". */
#define SHA512                                                                 \
  "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Ne"  \
  "j73/TFug6pIPSqbJoCT6dfnj."

/* Enough around a device for it to be valid: one listener, one zone. */
#define BASE                                                                   \
  "listeners:\n"                                                               \
  "  - {name: http, protocol: http, address: 127.0.0.1:8080}\n"                \
  "dns:\n"                                                                     \
  "  zones:\n"                                                                 \
  "    - {name: ddport.test, proxy: [127.0.0.1]}\n"
/* BASE is five lines; what follows starts on line 6. */

static const char example[] =
    "workers: auto\n"
    "state_dir: ./ddport-state\n"
    "listeners:\n"
    "  - name: http\n"
    "    protocol: http\n"
    "    address: 127.0.0.1:8080\n"
    "  - name: https\n"
    "    protocol: tls\n"
    "    address: 127.0.0.1:8443\n"
    "proxy:\n"
    "  timeouts: {peek: 5s, connect: 5s, idle: 5m}\n"
    "  max_hello: 16KiB\n"
    "  allow_targets: [127.0.0.0/8, \"::1/128\"]\n"
    "  access_log: stderr\n"
    "dns:\n"
    "  listen: [127.0.0.1:5353]\n"
    "  zones:\n"
    "    - name: ddport.test\n"
    "      proxy: [127.0.0.1, \"::1\"]\n"
    "      ttl: 60\n"
    "      nameservers: [ns1.ddport.test]\n"
    "      glue: {ns1.ddport.test: [127.0.0.1]}\n"
    "      soa: {email: hostmaster@ddport.test, refresh: 1h, retry: 10m, "
    "expire: 7d, minimum: 60}\n"
    "devices:\n"
    "  demo.ddport.test:\n"
    "    owner: demo\n"
    "    address: 127.0.0.1\n"
    "    ports: {http: 10080, https: 10443}\n"
    "    enabled: true\n"
    "  \"*.demo.ddport.test\": {owner: demo, address: 127.0.0.1, "
    "ports: {http: 10080}}\n";

static uint16_t sockaddr_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static const char *ip_text(const core_ip_t *ip, char *buf, size_t size) {
  return core_ip_format(ip, buf, size);
}

static void check_example(const reg_config_t *c) {
  char buf[64];
  ASSERT_EQ(c->workers, 0);
  ASSERT_STR_EQ(c->state_dir, "./ddport-state");
  ASSERT_EQ(c->n_listeners, 2);
  ASSERT_STR_EQ(c->listeners[1].name, "https");
  ASSERT_EQ(c->listeners[1].protocol, REG_PROTOCOL_TLS);
  ASSERT_EQ(sockaddr_port(&c->listeners[1].addr), 8443);
  ASSERT_STR_EQ(c->listeners[0].name, "http");
  ASSERT_EQ(c->listeners[0].protocol, REG_PROTOCOL_HTTP);
  ASSERT_EQ(c->listeners[0].addr.ss_family, AF_INET);
  ASSERT_EQ(sockaddr_port(&c->listeners[0].addr), 8080);
  ASSERT_EQ(c->proxy.peek_timeout_ms, 5000);
  ASSERT_EQ(c->proxy.connect_timeout_ms, 5000);
  ASSERT_EQ(c->proxy.idle_timeout_ms, 300000);
  ASSERT_EQ(c->proxy.max_hello, 16384);
  ASSERT_EQ(c->proxy.n_allow_targets, 2);
  ASSERT_EQ(c->proxy.allow_targets[0].bits, 8);
  ASSERT_STR_EQ(ip_text(&c->proxy.allow_targets[0].ip, buf, sizeof buf),
                "127.0.0.0");
  ASSERT_EQ(c->proxy.allow_targets[1].ip.family, AF_INET6);
  ASSERT_EQ(c->proxy.allow_targets[1].bits, 128);
  ASSERT_STR_EQ(c->proxy.access_log, "stderr");
  ASSERT_EQ(c->dns.n_listen, 1);
  ASSERT_EQ(sockaddr_port(&c->dns.listen[0]), 5353);
  ASSERT_EQ(c->dns.n_zones, 1);
  const reg_zone_t *z = &c->dns.zones[0];
  ASSERT_STR_EQ(z->name, "ddport.test");
  ASSERT_EQ(z->n_proxy, 2);
  ASSERT_STR_EQ(ip_text(&z->proxy[1], buf, sizeof buf), "::1");
  ASSERT_EQ(z->ttl, 60);
  ASSERT_EQ(z->n_nameservers, 1);
  ASSERT_STR_EQ(z->nameservers[0], "ns1.ddport.test");
  ASSERT_EQ(z->n_glue, 1);
  ASSERT_STR_EQ(z->glue[0].name, "ns1.ddport.test");
  ASSERT_EQ(z->glue[0].n_addrs, 1);
  ASSERT_STR_EQ(z->soa_email, "hostmaster@ddport.test");
  ASSERT_EQ(z->soa_refresh, 3600);
  ASSERT_EQ(z->soa_retry, 600);
  ASSERT_EQ(z->soa_expire, 604800);
  ASSERT_EQ(z->soa_minimum, 60);
  ASSERT_EQ(c->n_devices, 2);
  ASSERT_STR_EQ(c->devices[0].name, "demo.ddport.test");
  ASSERT_STR_EQ(c->devices[0].owner, "demo");
  ASSERT_EQ(c->devices[0].wildcard, false);
  ASSERT_EQ(c->devices[0].enabled, true);
  ASSERT_EQ(reg_device_port(&c->devices[0], "http"), 10080);
  ASSERT_EQ(reg_device_port(&c->devices[0], "https"), 10443);
  ASSERT_STR_EQ(c->devices[1].name, "*.demo.ddport.test");
  ASSERT_EQ(c->devices[1].wildcard, true);
  ASSERT_EQ(c->n_not_implemented, 0);
}

static void test_example_embedded(void) {
  reg_config_t *c = load_ok(example);
  check_example(c);
  reg_config_free(c);
}

/* The repository's own example must load: try where the source tree is
 * likely to be from a build directory. */
static void test_example_file(void) {
  char candidates[5][4096];
  size_t n = 0;
  const char *source = getenv("DDPORT_SOURCE");
  if (source != NULL)
    snprintf(candidates[n++], sizeof candidates[0], "%s/config.example.yaml",
             source);
  const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
  if (slash != NULL)
    snprintf(candidates[n++], sizeof candidates[0],
             "%.*s/../../config.example.yaml", (int)(slash - argv0), argv0);
  /* meson compiles with paths relative to the build directory, where it
   * also runs the tests. */
  const char *file = __FILE__;
  slash = strrchr(file, '/');
  if (slash != NULL)
    snprintf(candidates[n++], sizeof candidates[0],
             "%.*s/../../config.example.yaml", (int)(slash - file), file);
  snprintf(candidates[n++], sizeof candidates[0], "../config.example.yaml");
  snprintf(candidates[n++], sizeof candidates[0], "config.example.yaml");
  for (size_t i = 0; i < n; i++) {
    if (access(candidates[i], R_OK) != 0)
      continue;
    char *diag;
    size_t size;
    FILE *f = open_memstream(&diag, &size);
    reg_config_t *c = NULL;
    int rc = reg_config_load(candidates[i], f, &c);
    fclose(f);
    ASSERT_STR_EQ(diag, "");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_EQ(c->path, candidates[i]);
    check_example(c);
    free(diag);
    reg_config_free(c);
    return;
  }
  printf("# config.example.yaml not found; embedded copy tested only\n");
}

static void test_defaults(void) {
  reg_config_t *c = load_ok(BASE "devices:\n"
                                 "  a.ddport.test: {address: 192.0.2.7, "
                                 "ports: {http: 80}}\n");
  ASSERT_STR_EQ(c->path, "t.yaml");
  ASSERT_EQ(c->workers, 0);
  ASSERT_STR_EQ(c->state_dir, "./ddport-state");
  ASSERT_EQ(c->proxy.peek_timeout_ms, 5000);
  ASSERT_EQ(c->proxy.connect_timeout_ms, 5000);
  ASSERT_EQ(c->proxy.idle_timeout_ms, 300000);
  ASSERT_EQ(c->proxy.drain_timeout_ms, 30000);
  ASSERT_EQ(c->proxy.max_connections, 100000);
  ASSERT_EQ(c->proxy.max_per_source, 256);
  ASSERT_EQ(c->proxy.max_peeking, 10000);
  ASSERT_EQ(c->proxy.max_hello, 16384);
  ASSERT_EQ(c->proxy.n_allow_targets, 0);
  ASSERT_STR_EQ(c->proxy.access_log, "stderr");
  ASSERT_EQ(c->dns.n_listen, 0);
  ASSERT_EQ(c->dns.tcp_idle_ms, 10000);
  ASSERT_EQ(c->dns.serial_batch_ms, 1000);
  ASSERT(c->dns.version == NULL && c->dns.identity == NULL);
  ASSERT_EQ(c->dns.rrl_responses_per_second, 0);
  ASSERT_EQ(c->dns.tcp_connections, 1000);
  const reg_zone_t *z = &c->dns.zones[0];
  ASSERT_EQ(z->ttl, 60);
  ASSERT_EQ(z->n_nameservers, 0);
  ASSERT_EQ(z->n_glue, 0);
  ASSERT_STR_EQ(z->soa_email, "hostmaster@ddport.test");
  ASSERT_EQ(z->soa_refresh, 3600);
  ASSERT_EQ(z->soa_retry, 600);
  ASSERT_EQ(z->soa_expire, 604800);
  ASSERT_EQ(z->soa_minimum, 60);
  uint32_t now = (uint32_t)time(NULL);
  ASSERT(z->serial <= now && z->serial + 60 >= now);
  const reg_device_t *d = &c->devices[0];
  ASSERT(d->owner == NULL);
  ASSERT(d->target_host == NULL);
  ASSERT_EQ(d->n_addrs, 1);
  ASSERT_EQ(d->addrs[0].family, AF_INET);
  ASSERT_EQ(d->proxy_protocol, REG_PROXY_PROTOCOL_OFF);
  ASSERT_EQ(d->enabled, true);
  ASSERT_EQ(d->wildcard, false);
  ASSERT_EQ(reg_device_port(d, "http"), 80);
  ASSERT_EQ(reg_device_port(d, "https"), 0);
  reg_config_free(c);
}

static void test_values(void) {
  char buf[64];
  reg_config_t *c = load_ok(
      "workers: 4\n"
      "state_dir: /var/lib/ddport\n"
      "listeners:\n"
      "  - {name: http, protocol: http, address: \"[::1]:8080\"}\n"
      "  - {name: alt_2-x, protocol: http, address: 0.0.0.0:8081}\n"
      "proxy:\n"
      "  timeouts: {peek: 500ms, connect: 2s, idle: 1h, drain: 30s}\n"
      "  limits: {connections: 100000, per_source: 256, peeking: 10000}\n"
      "  max_hello: 1MiB\n"
      "  allow_targets: 192.0.2.0/24\n"
      "  access_log: off\n"
      "dns:\n"
      "  listen: [\"[::]:53\", 127.0.0.1:53]\n"
      "  zones:\n"
      "    - name: DDport.TEST.\n"
      "      proxy: 2001:db8::1\n"
      "      ttl: 1h\n"
      "      nameservers: [NS1.ddport.test, ns.example.net.]\n"
      "      glue: {NS1.DDPORT.TEST: 192.0.2.53}\n"
      "      soa: {email: dns@example.net, refresh: 7200, retry: 1m,\n"
      "            expire: 2w, minimum: 5m}\n"
      "      notify: []\n"
      "      allow_transfer: []\n"
      "  tsig_keys: {}\n"
      "  rate_limit: off\n"
      "  tcp_idle: 2500ms\n"
      "  serial_batch: 5s\n"
      "  version: on\n"
      "  identity: \"edge 7\"\n"
      "  tcp_connections: 7\n"
      "update: {}\n"
      "registry: []\n"
      "devices:\n"
      "  Cam.DDport.Test.:\n"
      "    owner: alice\n"
      "    address: [203.0.113.7, \"2001:db8::7\"]\n"
      "    ports: {http: 10080, alt_2-x: 65535}\n"
      "    proxy_protocol: off\n"
      "    enabled: no\n"
      "  \"*.Cam.ddport.test\": {address: 10.0.0.1, ports: {http: 1},\n"
      "                        enabled: On}\n");
  ASSERT_EQ(c->workers, 4);
  ASSERT_STR_EQ(c->state_dir, "/var/lib/ddport");
  ASSERT_EQ(c->n_listeners, 2);
  ASSERT_EQ(c->listeners[0].addr.ss_family, AF_INET6);
  ASSERT_EQ(sockaddr_port(&c->listeners[0].addr), 8080);
  ASSERT_STR_EQ(c->listeners[1].name, "alt_2-x");
  ASSERT_EQ(sockaddr_port(&c->listeners[1].addr), 8081);
  ASSERT_EQ(c->proxy.peek_timeout_ms, 500);
  ASSERT_EQ(c->proxy.connect_timeout_ms, 2000);
  ASSERT_EQ(c->proxy.idle_timeout_ms, 3600000);
  ASSERT_EQ(c->proxy.max_hello, 1048576);
  ASSERT_EQ(c->proxy.n_allow_targets, 1);
  ASSERT_EQ(c->proxy.allow_targets[0].bits, 24);
  ASSERT_STR_EQ(c->proxy.access_log, "off");
  ASSERT_EQ(c->dns.n_listen, 2);
  ASSERT_EQ(c->dns.tcp_idle_ms, 2500);
  ASSERT_EQ(c->dns.serial_batch_ms, 5000);
  ASSERT_STR_EQ(c->dns.version, "ddport " DDPORT_VERSION);
  ASSERT_STR_EQ(c->dns.identity, "edge 7");
  ASSERT_EQ(c->dns.tcp_connections, 7);
  ASSERT_EQ(c->dns.listen[0].ss_family, AF_INET6);
  ASSERT_EQ(sockaddr_port(&c->dns.listen[1]), 53);
  const reg_zone_t *z = &c->dns.zones[0];
  ASSERT_STR_EQ(z->name, "ddport.test");
  ASSERT_EQ(z->n_proxy, 1);
  ASSERT_STR_EQ(ip_text(&z->proxy[0], buf, sizeof buf), "2001:db8::1");
  ASSERT_EQ(z->ttl, 3600);
  ASSERT_EQ(z->n_nameservers, 2);
  ASSERT_STR_EQ(z->nameservers[0], "ns1.ddport.test");
  ASSERT_STR_EQ(z->nameservers[1], "ns.example.net");
  ASSERT_STR_EQ(z->glue[0].name, "ns1.ddport.test");
  ASSERT_STR_EQ(ip_text(&z->glue[0].addrs[0], buf, sizeof buf), "192.0.2.53");
  ASSERT_STR_EQ(z->soa_email, "dns@example.net");
  ASSERT_EQ(z->soa_refresh, 7200);
  ASSERT_EQ(z->soa_retry, 60);
  ASSERT_EQ(z->soa_expire, 14 * 86400);
  ASSERT_EQ(z->soa_minimum, 300);
  ASSERT_EQ(c->n_devices, 2);
  const reg_device_t *d = &c->devices[0];
  ASSERT_STR_EQ(d->name, "cam.ddport.test");
  ASSERT_STR_EQ(d->owner, "alice");
  ASSERT_EQ(d->n_addrs, 2);
  ASSERT_STR_EQ(ip_text(&d->addrs[0], buf, sizeof buf), "203.0.113.7");
  ASSERT_STR_EQ(ip_text(&d->addrs[1], buf, sizeof buf), "2001:db8::7");
  ASSERT_EQ(d->n_ports, 2);
  ASSERT_EQ(reg_device_port(d, "http"), 10080);
  ASSERT_EQ(reg_device_port(d, "alt_2-x"), 65535);
  ASSERT_EQ(d->enabled, false);
  ASSERT_EQ(d->wildcard, false);
  d = &c->devices[1];
  ASSERT_STR_EQ(d->name, "*.cam.ddport.test");
  ASSERT_EQ(d->wildcard, true);
  ASSERT_EQ(d->enabled, true);
  ASSERT_EQ(c->n_not_implemented, 0);
  reg_config_free(c);
}

static void test_proxy_protocol_values(void) {
  reg_config_t *c =
      load_ok(BASE "devices:\n"
                   "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                   "proxy_protocol: v1}\n"
                   "  b.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                   "proxy_protocol: v2}\n"
                   "  c.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                   "proxy_protocol: off}\n");
  ASSERT_EQ(c->devices[0].proxy_protocol, REG_PROXY_PROTOCOL_V1);
  ASSERT_EQ(c->devices[1].proxy_protocol, REG_PROXY_PROTOCOL_V2);
  ASSERT_EQ(c->devices[2].proxy_protocol, REG_PROXY_PROTOCOL_OFF);
  reg_config_free(c);
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                     "proxy_protocol: v3}\n",
                "t.yaml:7:74: expected 'off', 'v1' or 'v2' for "
                "'proxy_protocol', got 'v3'\n");
}

static void test_too_many_addresses(void) {
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: [192.0.2.1, 192.0.2.2, "
                     "192.0.2.3, 192.0.2.4, 192.0.2.5, 192.0.2.6, 192.0.2.7, "
                     "192.0.2.8, 192.0.2.9], ports: {http: 80}}\n",
                "t.yaml:7:28: 9 addresses for 'address'; a device may have "
                "at most 8\n");
}

/* An owner must be a non-empty account name. */
static void test_bad_owner(void) {
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {owner: \"\", address: 192.0.2.7, "
                     "ports: {http: 80}}\n"
                     "  b.ddport.test: {owner: [x], address: 192.0.2.7, "
                     "ports: {http: 80}}\n",
                "t.yaml:7:26: expected an account name for 'owner', got ''\n"
                "t.yaml:8:26: expected an account name for 'owner', got a "
                "sequence\n");
}

static void test_hostname_target_and_resolvers(void) {
  reg_config_t *c = load_ok(BASE "proxy: {resolvers: [127.0.0.1:5353, "
                                 "\"[::1]:53\"]}\n"
                                 "devices:\n"
                                 "  a.ddport.test: {address: Cam.Example.NET., "
                                 "ports: {http: 80}}\n");
  ASSERT_STR_EQ(c->devices[0].target_host, "cam.example.net");
  ASSERT_EQ(c->devices[0].n_addrs, 0);
  ASSERT_STR_EQ(c->proxy.resolvers, "127.0.0.1:5353,[::1]:53");
  reg_config_free(c);
  expect_errors(BASE "proxy: {resolvers: [localhost]}\n",
                "t.yaml:6:21: bad address 'localhost' for 'resolvers': "
                "expected address:port, such as 127.0.0.1:8080 or "
                "[::1]:8080\n");
}

static void test_tls_listener(void) {
  reg_config_t *c =
      load_ok("listeners:\n"
              "  - {name: http, protocol: http, address: 127.0.0.1:8080}\n"
              "  - {name: https, protocol: tls, address: \"[::1]:8443\"}\n"
              "devices:\n"
              "  a.test: {address: 192.0.2.7, ports: {http: 1, https: 2}}\n");
  ASSERT_EQ(c->n_listeners, 2);
  ASSERT_EQ(c->listeners[0].protocol, REG_PROTOCOL_HTTP);
  ASSERT_EQ(c->listeners[1].protocol, REG_PROTOCOL_TLS);
  ASSERT_EQ(reg_device_port(&c->devices[0], "https"), 2);
  ASSERT_EQ(reg_device_port(&c->devices[0], "http"), 1);
  ASSERT_EQ(reg_device_port(&c->devices[0], "imaps"), 0);
  reg_config_free(c);
}

static void test_booleans(void) {
  static const char *const yes[] = {"true", "yes", "on", "True", "YES"};
  static const char *const no[] = {"false", "no", "off", "False", "OFF"};
  char text[512];
  for (size_t i = 0; i < 10; i++) {
    const char *word = i < 5 ? yes[i] : no[i - 5];
    snprintf(text, sizeof text,
             BASE "devices:\n"
                  "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                  "enabled: %s}\n",
             word);
    reg_config_t *c = load_ok(text);
    ASSERT_EQ(c->devices[0].enabled, i < 5);
    reg_config_free(c);
  }
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}, "
                     "enabled: maybe}\n",
                "t.yaml:7:67: expected true or false for 'enabled', got "
                "'maybe'\n");
}

static void test_no_devices_no_zones(void) {
  /* Null sections read as empty ones. */
  reg_config_t *c = load_ok("listeners:\ndevices:\nregistry:\n");
  ASSERT_EQ(c->n_listeners, 0);
  ASSERT_EQ(c->n_devices, 0);
  reg_config_free(c);
  /* Without zones, devices are not checked against them. */
  c = load_ok("listeners: [{name: http, protocol: http, "
              "address: 127.0.0.1:80}]\n"
              "devices: {x.example: {address: 192.0.2.1, ports: {http: 8}}}\n");
  ASSERT_EQ(c->n_devices, 1);
  reg_config_free(c);
}

static void test_not_implemented(void) {
  reg_config_t *c =
      load_ok("proxy:\n"
              "  timeouts: {drain: 1m}\n"
              "  limits: {connections: 5}\n"
              "dns:\n"
              "  zones:\n"
              "    - name: ddport.test\n"
              "      proxy: [127.0.0.1]\n"
              "      notify: [192.0.2.53:53]\n"
              "      allow_transfer: [192.0.2.0/24, key1]\n"
              "  tsig_keys: {key1: {algorithm: hmac-sha256, secret: AAAA}}\n"
              "  rate_limit: {responses_per_second: 20, slip: 2}\n"
              "update: {listen: [127.0.0.1:8081]}\n"
              "admin: {listen: 127.0.0.1:9090}\n"
              "accounts:\n"
              "  demo: {secret: \"" HUNTER2 "\"}\n");
  char joined[2048] = "";
  for (size_t i = 0; i < c->n_not_implemented; i++)
    snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s\n",
             c->not_implemented[i]);
  ASSERT_STR_EQ(joined, "t.yaml:13:1: admin is not implemented yet; ignored\n");
  ASSERT_EQ(c->proxy.drain_timeout_ms, 60000);
  ASSERT_EQ(c->proxy.max_connections, 5);
  ASSERT_EQ(c->dns.rrl_responses_per_second, 20);
  ASSERT_EQ(c->dns.rrl_slip, 2);
  reg_config_free(c);

  c = load_ok("proxy: {access_log: /var/log/ddport/access.log}\n");
  ASSERT_EQ(c->n_not_implemented, 0);
  ASSERT_STR_EQ(c->proxy.access_log, "/var/log/ddport/access.log");
  ASSERT_EQ(c->proxy.splice, REG_SPLICE_AUTO);
  reg_config_free(c);

  static const struct {
    const char *text;
    reg_splice_t splice;
  } splices[] = {
      {"proxy: {splice: auto}\n", REG_SPLICE_AUTO},
      {"proxy: {splice: on}\n", REG_SPLICE_ON},
      {"proxy: {splice: off}\n", REG_SPLICE_OFF},
  };
  for (size_t i = 0; i < sizeof splices / sizeof *splices; i++) {
    c = load_ok(splices[i].text);
    ASSERT_EQ(c->proxy.splice, splices[i].splice);
    reg_config_free(c);
  }
  expect_errors("proxy: {splice: sometimes}\n",
                "t.yaml:1:17: expected 'auto', 'on' or 'off' for 'splice', "
                "got 'sometimes'\n");
}

static void test_update_section(void) {
  reg_config_t *c = load_ok("state_dir: /tmp/s\n");
  /* Defaults: no endpoint; the limits a router's refresh fits in. */
  ASSERT_EQ(c->update.n_listen, 0);
  ASSERT_EQ(c->update.n_tls_listen, 0);
  ASSERT_EQ(c->update.request_timeout_ms, 10000);
  ASSERT_EQ(c->update.idle_timeout_ms, 30000);
  ASSERT_EQ(c->update.credential_cache_ms, 300000);
  ASSERT_EQ(c->update.max_connections, 1000);
  ASSERT_EQ(c->update.updates_per_minute, 30);
  ASSERT_EQ(c->update.max_request, 8192);
  reg_config_free(c);

  c = load_ok("update:\n"
              "  listen: [127.0.0.1:8081, \"[::1]:8081\"]\n"
              "  tls: {cert: u.crt, key: /k/u.key, listen: [127.0.0.1:8444]}\n"
              "  timeouts: {request: 2s, idle: 1m}\n"
              "  limits: {connections: 7, updates_per_minute: 0}\n"
              "  credential_cache: 0s\n"
              "  max_request: 2KiB\n");
  ASSERT_EQ(c->update.n_listen, 2);
  ASSERT_EQ(sockaddr_port(&c->update.listen[1]), 8081);
  ASSERT_EQ(c->update.n_tls_listen, 1);
  ASSERT_EQ(sockaddr_port(&c->update.tls_listen[0]), 8444);
  /* Relative to the configuration file's directory, like registry files. */
  ASSERT_STR_EQ(c->update.tls_cert, "u.crt");
  ASSERT_STR_EQ(c->update.tls_key, "/k/u.key");
  ASSERT_EQ(c->update.request_timeout_ms, 2000);
  ASSERT_EQ(c->update.idle_timeout_ms, 60000);
  ASSERT_EQ(c->update.max_connections, 7);
  ASSERT_EQ(c->update.updates_per_minute, 0);
  ASSERT_EQ(c->update.credential_cache_ms, 0);
  ASSERT_EQ(c->update.max_request, 2048);
  ASSERT_EQ(c->n_not_implemented, 0);
  reg_config_free(c);

  c = load_ok("update: {listen: [127.0.0.1:8081], tls: off}\n");
  ASSERT_EQ(c->update.n_tls_listen, 0);
  ASSERT(c->update.tls_cert == NULL);
  reg_config_free(c);

  expect_errors("update: {tls: {cert: a.crt}}\n",
                "t.yaml:1:15: 'tls' needs 'cert' and 'key' (PEM files), e.g. "
                "{cert: update.crt, key: update.key, listen: "
                "[127.0.0.1:8444]}\n"
                "t.yaml:1:15: 'tls' needs a 'listen' address for HTTPS, e.g. "
                "listen: [127.0.0.1:8444]\n");
  expect_errors(
      "update: {tls: yes please}\n",
      "t.yaml:1:15: expected 'off' or a mapping such as {cert: "
      "FILE, key: FILE, listen: [ADDR]} for 'tls', got 'yes please'\n");
  expect_errors("update: {listen: [127.0.0.1:0], timeouts: {request: 0s}}\n",
                "t.yaml:1:19: port 0 in 'listen' is out of range; expected "
                "1..65535\n"
                "t.yaml:1:53: 'request' must be longer than 0s\n");
  expect_errors("update: {max_request: 1MiB, credential_cache: 2h}\n",
                "t.yaml:1:23: max_request 1MiB is out of range; expected "
                "1KiB..64KiB (8KiB suits every dyndns2 client)\n"
                "t.yaml:1:47: 'credential_cache' is out of range; expected "
                "0s..1h (5m suits routers that refresh every minute)\n");
  expect_errors("update: {limits: {connections: 0, per_minute: 3}}\n",
                "t.yaml:1:32: value 0 for 'connections' is out of range; "
                "expected 1..4294967295\n"
                "t.yaml:1:35: unknown key 'per_minute' in 'limits'; expected "
                "one of: connections, updates_per_minute\n");
}

static void test_unknown_key(void) {
  expect_errors("listners: []\n",
                "t.yaml:1:1: unknown key 'listners' in the top level; did you "
                "mean 'listeners'?\n");
  expect_errors("proxy: {colour: blue}\n",
                "t.yaml:1:9: unknown key 'colour' in 'proxy'; expected one "
                "of: timeouts, limits, max_hello, allow_targets, "
                "access_log, resolvers, splice\n");
  expect_errors(BASE
                "devices:\n"
                "  a.ddport.test: {adress: 192.0.2.7, ports: {http: 80}}\n",
                "t.yaml:7:3: device 'a.ddport.test' is missing 'address'; "
                "add e.g. 'address: 192.0.2.7'\n"
                "t.yaml:7:19: unknown key 'adress' in device 'a.ddport.test'; "
                "did you mean 'address'?\n");
}

static void test_wrong_type(void) {
  expect_errors("proxy: [1, 2]\n",
                "t.yaml:1:8: expected a mapping for 'proxy', got a "
                "sequence\n");
  expect_errors("workers: many\n",
                "t.yaml:1:10: expected a number or 'auto' for 'workers', got "
                "'many'\n");
  expect_errors("workers: 0\n",
                "t.yaml:1:10: value 0 for 'workers' is out of range; expected "
                "1..1024\n");
  expect_errors("listeners: {name: http}\n",
                "t.yaml:1:12: expected a list of listeners for 'listeners', "
                "got a mapping\n");
  expect_errors("- a\n",
                "t.yaml:1:1: expected a mapping of settings at the top "
                "level, got a sequence\n");
  expect_errors("dns: {zones: [{name: a.test, proxy: [1.2.3.4], ttl: soon}]}\n",
                "t.yaml:1:53: expected a number of seconds or a duration such "
                "as 10m or 1h for 'ttl', got 'soon'\n");
  expect_errors("state_dir:\n",
                "t.yaml:1:1: expected a directory path for 'state_dir', got "
                "nothing\n");
  expect_errors("dns: {rate_limit: {slip: 1}}\n",
                "t.yaml:1:19: 'rate_limit' needs 'responses_per_second', e.g. "
                "{responses_per_second: 20, slip: 2}\n");
  expect_errors("dns: {tcp_idle: 0s, tcp_connections: 0}\n",
                "t.yaml:1:17: 'tcp_idle' must be longer than 0s\n"
                "t.yaml:1:38: value 0 for 'tcp_connections' is out of range; "
                "expected 1..4294967295\n");
  expect_errors("dns: {serial_batch: 500ms}\n",
                "t.yaml:1:21: 'serial_batch' must be at least 1s (a serial "
                "counts seconds)\n");
  expect_errors("cpu_scheduling: fifo\n",
                "t.yaml:1:17: expected 'normal' or 'batch' for "
                "'cpu_scheduling', got 'fifo'\n");
  expect_errors("cpu_scheduling: [batch]\n",
                "t.yaml:1:17: expected 'normal' or 'batch' for "
                "'cpu_scheduling', got a sequence\n");
}

static void test_transfers(void) {
  reg_config_t *c = load_ok(
      "dns:\n"
      "  zones:\n"
      "    - name: a.test\n"
      "      proxy: [192.0.2.1]\n"
      "      notify: [127.0.0.1:5300, {address: \"[::1]:53\", key: Xfr.Key}]\n"
      "      allow_transfer: [127.0.0.0/8, \"::1\", xfr.key, big]\n"
      "  tsig_keys:\n"
      "    xfr.key: {algorithm: hmac-sha256, secret: c2VjcmV0IQ==}\n"
      "    big: {algorithm: HMAC-SHA512, secret: AAECAwQF}\n");
  ASSERT_EQ(c->dns.n_tsig_keys, 2);
  const reg_tsig_key_t *k = &c->dns.tsig_keys[0];
  ASSERT_STR_EQ(k->name, "xfr.key");
  ASSERT_EQ(k->algorithm, REG_TSIG_HMAC_SHA256);
  ASSERT_MEM_STR(k->secret, k->secret_len, "secret!");
  ASSERT_EQ(c->dns.tsig_keys[1].algorithm, REG_TSIG_HMAC_SHA512);
  ASSERT_EQ(c->dns.tsig_keys[1].secret_len, 6);
  ASSERT_EQ(c->dns.tsig_keys[1].secret[5], 5);
  const reg_zone_t *z = &c->dns.zones[0];
  ASSERT_EQ(z->n_notify, 2);
  ASSERT_EQ(z->notify[0].addr.ss_family, AF_INET);
  ASSERT(z->notify[0].key == NULL);
  ASSERT_EQ(z->notify[1].addr.ss_family, AF_INET6);
  ASSERT_STR_EQ(z->notify[1].key, "xfr.key");
  ASSERT_EQ(z->n_transfer_prefixes, 2);
  ASSERT_EQ(z->transfer_prefixes[0].bits, 8);
  ASSERT_EQ(z->transfer_prefixes[1].bits, 128);
  ASSERT_EQ(z->n_transfer_keys, 2);
  ASSERT_STR_EQ(z->transfer_keys[0], "xfr.key");
  ASSERT_STR_EQ(z->transfer_keys[1], "big");
  reg_config_free(c);

  expect_errors(
      "dns:\n"
      "  tsig_keys:\n"
      "    k1: {algorithm: hmac-md5, secret: AAAA}\n"
      "    k2: {secret: \"not base64!\"}\n"
      "    k3: {algorithm: hmac-sha256}\n"
      "    k4: {secret: AAA}\n"
      "    k5: {secret: AAAA, salt: x}\n"
      "  zones:\n"
      "    - name: a.test\n"
      "      proxy: [192.0.2.1]\n"
      "      allow_transfer: [192.0.2.0/33, k1, nokey]\n"
      "      notify: [{key: k5}, {address: 127.0.0.1:53, key: k9}]\n",
      "t.yaml:3:21: unknown TSIG algorithm 'hmac-md5'; expected "
      "'hmac-sha256' or 'hmac-sha512'\n"
      "t.yaml:4:18: bad base64 in 'secret' of TSIG key 'k2'; expected e.g. "
      "the output of 'openssl rand -base64 32'\n"
      "t.yaml:5:5: TSIG key 'k3' is missing 'secret'; add one made by "
      "'openssl rand -base64 32'\n"
      "t.yaml:6:18: bad base64 in 'secret' of TSIG key 'k4'; expected e.g. "
      "the output of 'openssl rand -base64 32'\n"
      "t.yaml:7:24: unknown key 'salt' in a TSIG key; expected one of: "
      "algorithm, secret\n"
      "t.yaml:11:24: bad prefix '192.0.2.0/33' in 'allow_transfer': prefix "
      "length must be 0 to 32\n"
      "t.yaml:11:38: no TSIG key named 'k1' in 'allow_transfer'; the keys "
      "are: k5\n"
      "t.yaml:11:42: no TSIG key named 'nokey' in 'allow_transfer'; the keys "
      "are: k5\n"
      "t.yaml:12:16: notify target is missing 'address'; add e.g. "
      "'address: 192.0.2.53:53'\n"
      "t.yaml:12:56: no TSIG key named 'k9' in 'notify'; the keys are: k5\n");
  expect_errors("dns: {zones: [{name: a.test, proxy: [192.0.2.1],\n"
                "                allow_transfer: [secondary]}]}\n",
                "t.yaml:2:34: no TSIG key named 'secondary' in "
                "'allow_transfer'; define it under 'dns: tsig_keys:'\n");
}

static void test_bad_address(void) {
  expect_errors("listeners:\n"
                "  - {name: http, protocol: http, address: localhost:80}\n",
                "t.yaml:2:43: bad address 'localhost:80' for 'address': not "
                "an IP address (IPv6 goes in brackets: [::1]:8080)\n");
  expect_errors("dns: {listen: [\"::1\"]}\n",
                "t.yaml:1:16: bad address '::1' for 'listen': expected "
                "address:port, such as 127.0.0.1:8080 or [::1]:8080\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.300, "
                     "ports: {http: 80}}\n",
                "t.yaml:7:28: bad address '192.0.2.300' for 'address'; "
                "expected an IP address such as 192.0.2.7 or 2001:db8::7\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: [192.0.2.1, 1::2::3], "
                     "ports: {http: 80}}\n",
                "t.yaml:7:40: bad address '1::2::3' in 'address'; expected "
                "an IP address such as 192.0.2.7 or 2001:db8::7\n");
  expect_errors("dns: {zones: [{name: a.test, proxy: [a.test]}]}\n",
                "t.yaml:1:38: bad address 'a.test' in 'proxy'; expected an "
                "IP address such as 192.0.2.7 or 2001:db8::7\n");
}

static void test_port_range(void) {
  expect_errors("listeners:\n"
                "  - {name: http, protocol: http, address: 127.0.0.1:65536}\n",
                "t.yaml:2:43: port 65536 in 'address' is out of range; "
                "expected 1..65535\n");
  expect_errors("listeners:\n"
                "  - {name: http, protocol: http, address: \"[::1]:0\"}\n",
                "t.yaml:2:43: port 0 in 'address' is out of range; expected "
                "1..65535\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: 70000}}\n",
                "t.yaml:7:53: port 70000 for listener 'http' is out of range; "
                "expected 1..65535\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: 0}}\n",
                "t.yaml:7:53: port 0 for listener 'http' is out of range; "
                "expected 1..65535\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: web}}\n",
                "t.yaml:7:53: expected a port number from 1 to 65535 for "
                "listener 'http', got 'web'\n");
}

static void test_duplicate_device(void) {
  expect_errors(BASE "devices:\n"
                     "  cam.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: 80}}\n"
                     "  Cam.DDPORT.test.: {address: 192.0.2.8, "
                     "ports: {http: 81}}\n",
                "t.yaml:8:3: duplicate device 'cam.ddport.test'; already "
                "defined at line 7, column 3\n");
  /* The repeated device's own mistakes are reported as well. */
  expect_errors(BASE "devices:\n"
                     "  cam.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: 80}}\n"
                     "  CAM.ddport.test: {address: 192.0.2.8}\n",
                "t.yaml:8:3: duplicate device 'cam.ddport.test'; already "
                "defined at line 7, column 3\n"
                "t.yaml:8:3: device 'cam.ddport.test' is missing 'ports'; "
                "add e.g. 'ports: {http: 10080}'\n");
}

static void test_duplicate_listener(void) {
  expect_errors("listeners:\n"
                "  - {name: http, protocol: http, address: 127.0.0.1:80}\n"
                "  - {name: http, protocol: http, address: 127.0.0.1:81}\n",
                "t.yaml:3:12: duplicate listener name 'http'; already "
                "defined at line 2, column 12\n");
  expect_errors("listeners:\n"
                "  - {name: HTTP, protocol: http, address: 127.0.0.1:80}\n",
                "t.yaml:2:12: bad listener name 'HTTP'; use lowercase "
                "letters, digits, '_' and '-', such as 'http'\n");
}

static void test_duplicate_key(void) {
  expect_errors("workers: 2\n"
                "state_dir: /a\n"
                "workers: 3\n",
                "t.yaml:3:1: duplicate key 'workers'; already given at line "
                "1, column 1\n");
  expect_errors(BASE
                "devices:\n"
                "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80},\n"
                "                  address: 192.0.2.8}\n",
                "t.yaml:8:19: duplicate key 'address'; already given at line "
                "7, column 19\n");
  /* A large mapping takes the hashed path. */
  char text[4096] = BASE "devices:\n";
  for (int i = 0; i < 40; i++)
    snprintf(text + strlen(text), sizeof text - strlen(text),
             "  d%d.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n",
             i == 39 ? 3 : i);
  expect_errors(text, "t.yaml:46:3: duplicate key 'd3.ddport.test'; already "
                      "given at line 10, column 3\n");
}

static void test_bad_prefix(void) {
  expect_errors("proxy: {allow_targets: [192.0.2.1/24]}\n",
                "t.yaml:1:25: bad prefix '192.0.2.1/24' in 'allow_targets': "
                "address has bits set beyond the prefix length\n");
  expect_errors("proxy: {allow_targets: [10.0.0.0/33, any]}\n",
                "t.yaml:1:25: bad prefix '10.0.0.0/33' in 'allow_targets': "
                "prefix length must be 0 to 32\n"
                "t.yaml:1:38: bad prefix 'any' in 'allow_targets': not an IP "
                "address; expected a prefix such as 192.0.2.0/24\n");
}

static void test_bad_duration_and_size(void) {
  expect_errors("proxy: {timeouts: {peek: 5 seconds, idle: 0s}}\n",
                "t.yaml:1:26: expected a duration such as 500ms, 5s, 10m or "
                "1h for 'peek', got '5 seconds'\n"
                "t.yaml:1:43: 'idle' must be longer than 0s\n");
  expect_errors("proxy: {max_hello: 16KB}\n",
                "t.yaml:1:20: expected a size such as 16KiB or 1MiB for "
                "'max_hello', got '16KB'\n");
  expect_errors("proxy: {max_hello: 512}\n",
                "t.yaml:1:20: max_hello 512 is out of range; expected "
                "1KiB..1MiB (16KiB suits most clients)\n");
  expect_errors(
      "dns: {zones: [{name: a.test, proxy: [1.2.3.4],\n"
      "                soa: {refresh: 1500ms, expire: 99999999999}}]}\n",
      "t.yaml:2:32: 1500ms for 'refresh' is not a whole number of "
      "seconds\n"
      "t.yaml:2:48: value 99999999999 for 'expire' is out of "
      "range; expected 0..2147483647\n");
}

static void test_device_outside_zone(void) {
  expect_errors(BASE
                "devices:\n"
                "  cam.example.net: {address: 192.0.2.7, "
                "ports: {http: 80}}\n"
                "  xddport.test: {address: 192.0.2.7, ports: {http: 80}}\n",
                "t.yaml:7:3: device 'cam.example.net' is outside every "
                "configured zone (ddport.test); rename it or add its zone "
                "under 'dns: zones:'\n"
                "t.yaml:8:3: device 'xddport.test' is outside every "
                "configured zone (ddport.test); rename it or add its zone "
                "under 'dns: zones:'\n");
}

static void test_unknown_listener(void) {
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: 192.0.2.7, "
                     "ports: {htp: 80, ssh: 22}}\n",
                "t.yaml:7:47: no listener named 'htp'; did you mean "
                "'http'?\n"
                "t.yaml:7:56: no listener named 'ssh'; the listeners are: "
                "http\n");
  expect_errors("devices:\n"
                "  a.example: {address: 192.0.2.7, ports: {web: 80}}\n",
                "t.yaml:2:43: no listener named 'web'; add it under "
                "'listeners:' with a protocol and address\n");
}

static void test_missing_keys(void) {
  expect_errors("listeners:\n"
                "  - protocol: http\n"
                "  - name: x\n"
                "    address:\n",
                "t.yaml:2:5: listener is missing 'name'; add e.g. "
                "'name: http'\n"
                "t.yaml:2:5: listener is missing 'address'; add e.g. "
                "'address: 127.0.0.1:8080'\n"
                "t.yaml:3:5: listener is missing 'protocol'; add "
                "'protocol: http' or 'protocol: tls'\n"
                "t.yaml:4:5: listener is missing 'address'; add e.g. "
                "'address: 127.0.0.1:8080'\n");
  expect_errors("dns:\n"
                "  zones:\n"
                "    - ttl: 5\n",
                "t.yaml:3:7: zone is missing 'name'; add e.g. "
                "'name: example.net'\n"
                "t.yaml:3:7: zone is missing 'proxy'; add the proxy's public "
                "addresses, e.g. 'proxy: [192.0.2.1]'\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {owner: me}\n"
                     "  b.ddport.test: {address: 192.0.2.7, ports: {}}\n"
                     "  c.ddport.test:\n",
                "t.yaml:7:3: device 'a.ddport.test' is missing 'address'; "
                "add e.g. 'address: 192.0.2.7'\n"
                "t.yaml:7:3: device 'a.ddport.test' is missing 'ports'; add "
                "e.g. 'ports: {http: 10080}'\n"
                "t.yaml:8:46: device 'b.ddport.test' has no ports; add e.g. "
                "'ports: {http: 10080}'\n"
                "t.yaml:9:3: device 'c.ddport.test' is missing 'address'; "
                "add e.g. 'address: 192.0.2.7'\n"
                "t.yaml:9:3: device 'c.ddport.test' is missing 'ports'; add "
                "e.g. 'ports: {http: 10080}'\n");
}

static void test_not_implemented_errors(void) {
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: cam_1.example.net, "
                     "ports: {http: 80}}\n",
                "t.yaml:7:28: bad address 'cam_1.example.net' for "
                "'address'; expected an IP address such as 192.0.2.7 or "
                "2001:db8::7\n");
}

static void test_names(void) {
  expect_errors(BASE "devices:\n"
                     "  bad_name.ddport.test: {address: 192.0.2.7, "
                     "ports: {http: 80}}\n",
                "t.yaml:7:3: bad name 'bad_name.ddport.test' for a device; "
                "expected a host name such as cam.example.net or "
                "*.example.net\n");
  expect_errors("dns: {zones: [{name: \"*.a.test\", proxy: [1.2.3.4],\n"
                "                nameservers: [ns..a.test],\n"
                "                glue: {ns1.b.test: [1.2.3.4]},\n"
                "                soa: {email: nobody}}]}\n",
                "t.yaml:1:22: bad name '*.a.test' for 'name'; expected a "
                "host name such as example.net\n"
                "t.yaml:2:31: bad name 'ns..a.test' for 'nameservers'; "
                "expected a host name such as ns1.example.net\n"
                "t.yaml:4:30: expected an email address such as "
                "hostmaster@example.net for 'email', got 'nobody'\n");
  expect_errors("dns: {zones: [{name: a.test, proxy: [1.2.3.4],\n"
                "                glue: {ns1.b.test: [1.2.3.4]}},\n"
                "               {name: A.test, proxy: [1.2.3.4]}]}\n",
                "t.yaml:2:24: glue name 'ns1.b.test' is outside zone 'a.test'; "
                "glue is only for nameservers inside the zone\n"
                "t.yaml:3:23: duplicate zone 'a.test'; already defined at "
                "line 1, column 22\n");
  expect_errors("dns: {zones: [{name: a.test, proxy: [],\n"
                "                glue: {ns1.a.test: []}}]}\n",
                "t.yaml:1:37: 'proxy' needs at least one IP address, such as "
                "192.0.2.7\n"
                "t.yaml:2:36: a glue record needs at least one IP address, "
                "such as 192.0.2.7\n");
  expect_errors(BASE "devices:\n"
                     "  a.ddport.test: {address: [], ports: {http: 80}}\n",
                "t.yaml:7:28: 'address' needs at least one IP address, such "
                "as 192.0.2.7\n");
}

static void test_yaml_errors(void) {
  expect_errors("listeners: [\n",
                "t.yaml:2:1: did not find expected node content (while "
                "parsing a flow node at line 2, column 1)\n");
  expect_errors("a: 'open\n",
                "t.yaml:2:1: found unexpected end of stream (while scanning a "
                "quoted scalar at line 1, column 4)\n");
  expect_errors("base: &b {x: 1}\nother: *b\n",
                "t.yaml:1:7: YAML anchors ('&b') are not supported; write "
                "the value out\n");
  expect_errors("other: *b\n",
                "t.yaml:1:8: YAML aliases ('*b') are not supported; write "
                "the value out\n");
  expect_errors("workers: !int 4\n",
                "t.yaml:1:10: YAML tag '!int' is not supported; remove it\n");
  expect_errors("workers: 2\n---\nworkers: 3\n",
                "t.yaml:2:1: a second YAML document; a configuration file "
                "holds one, so remove this '---' and what follows or merge "
                "them\n");
  expect_errors("a: \"\xc3\x28\"\n",
                "t.yaml:1:6: invalid trailing UTF-8 octet (byte 0x28)\n");
  char deep[256] = "";
  for (int i = 0; i < 70; i++)
    strcat(deep, "[");
  expect_errors(deep, "t.yaml:1:65: nested deeper than 64 levels; flatten "
                      "the structure\n");
  /* !!str keeps a number a string, and is otherwise harmless. */
  reg_config_t *c = load_ok("workers: !!str 4\n");
  ASSERT_EQ(c->workers, 4);
  reg_config_free(c);
}

static void test_empty(void) {
  const char *empty = "t.yaml:1:1: empty configuration; expected settings "
                      "such as 'listeners:' and 'devices:' (see "
                      "config.example.yaml)\n";
  expect_errors("", empty);
  expect_errors("# nothing but a comment\n\n", empty);
  expect_errors("---\n", empty);
  expect_errors("~\n", empty);
}

static void test_nul_byte(void) {
  static const char text[] = "workers: 1\0\n";
  char *diag;
  size_t size;
  FILE *f = open_memstream(&diag, &size);
  reg_config_t *c = NULL;
  int rc = reg_config_load_buffer("t.yaml", text, sizeof text - 1, f, &c);
  fclose(f);
  ASSERT_EQ(rc, -EINVAL);
  ASSERT_STR_EQ(diag, "t.yaml:1:11: control characters are not allowed "
                      "(byte 0x00)\n");
  free(diag);
  expect_errors("state_dir: \"a\\0b\"\n",
                "t.yaml:1:12: expected a directory path for 'state_dir', got "
                "a string with a NUL byte\n");
}

static void test_many_errors(void) {
  /* Every problem is reported, in file order, whatever the order of the
   * sections they are checked in. */
  expect_errors("workers: lots\n"
                "devices:\n"
                "  a.ddport.test: {address: 192.0.2.7, ports: {http: 99999}}\n"
                "  b.ddport.test: {address: 192.0.2., ports: {https: 443}}\n"
                "listeners:\n"
                "  - {name: http, protocol: htp, address: 127.0.0.1:80}\n"
                "dns:\n"
                "  zones: [{name: ddport.test, proxy: [127.0.0.1], ttl: -1}]\n"
                "proxy: {allow_targets: [\"::1/129\"], colour: red}\n"
                "registry: [x.yaml]\n",
                "t.yaml:1:10: expected a number or 'auto' for 'workers', got "
                "'lots'\n"
                "t.yaml:3:53: port 99999 for listener 'http' is out of range; "
                "expected 1..65535\n"
                "t.yaml:4:28: bad address '192.0.2.' for 'address'; expected "
                "an IP address such as 192.0.2.7 or 2001:db8::7\n"
                "t.yaml:4:46: no listener named 'https'; did you mean "
                "'http'?\n"
                "t.yaml:6:28: expected 'http' or 'tls' for 'protocol', got "
                "'htp'\n"
                "t.yaml:8:56: expected a number of seconds or a duration such "
                "as 10m or 1h for 'ttl', got '-1'\n"
                "t.yaml:9:25: bad prefix '::1/129' in 'allow_targets': prefix "
                "length must be 0 to 128\n"
                "t.yaml:9:37: unknown key 'colour' in 'proxy'; expected one "
                "of: timeouts, limits, max_hello, allow_targets, "
                "access_log, resolvers, splice\n"
                "t.yaml:10:12: cannot read registry 'x.yaml': No such file "
                "or directory\n");
}

static void test_load_file(void) {
  char path[] = "/tmp/ddport-test-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, example, sizeof example - 1),
            (ssize_t)(sizeof example - 1));
  close(fd);
  reg_config_t *c = NULL;
  ASSERT_EQ(reg_config_load(path, stderr, &c), 0);
  check_example(c);
  ASSERT_STR_EQ(c->path, path);
  reg_config_free(c);
  unlink(path);

  char *diag;
  size_t size;
  FILE *f = open_memstream(&diag, &size);
  c = (reg_config_t *)&c;
  ASSERT_EQ(reg_config_load(path, f, &c), -ENOENT);
  fclose(f);
  ASSERT(c == NULL);
  char expected[128];
  snprintf(expected, sizeof expected,
           "%s: cannot read: No such file or directory\n", path);
  ASSERT_STR_EQ(diag, expected);
  free(diag);
}

/* ---- registry files and accounts ----------------------------------------- */

static char tmp_dir[64];

static void write_text(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
  FILE *f = fopen(path, "w");
  ASSERT(f != NULL);
  ASSERT_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
  ASSERT_EQ(fclose(f), 0);
}

static void make_tmp_dir(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/ddport-test-registry-XXXXXX");
  ASSERT(mkdtemp(tmp_dir) != NULL);
}

static void remove_tmp_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  ASSERT_EQ(system(cmd), 0);
}

/* Loads tmp_dir/ddport.yaml; *diag gets the messages with "tmp_dir/" cut
 * out so expectations read like the files' own names. */
static int load_dir(char **diag, reg_config_t **config) {
  char path[256], *raw;
  size_t size = 0;
  snprintf(path, sizeof path, "%s/ddport.yaml", tmp_dir);
  FILE *f = open_memstream(&raw, &size);
  ASSERT(f != NULL);
  int rc = reg_config_load(path, f, config);
  fclose(f);
  char prefix[80];
  snprintf(prefix, sizeof prefix, "%s/", tmp_dir);
  *diag = xcalloc(1, strlen(raw) + 1);
  char *o = *diag;
  for (const char *p = raw; *p;) {
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      p += strlen(prefix);
      continue;
    }
    *o++ = *p++;
  }
  free(raw);
  return rc;
}

static void expect_dir_errors(const char *expected) {
  char *diag;
  reg_config_t *c = NULL;
  int rc = load_dir(&diag, &c);
  ASSERT_STR_EQ(diag, expected);
  ASSERT_EQ(rc, -EINVAL);
  ASSERT(c == NULL);
  free(diag);
}

static reg_config_t *load_dir_ok(void) {
  char *diag;
  reg_config_t *c = NULL;
  int rc = load_dir(&diag, &c);
  ASSERT_STR_EQ(diag, "");
  ASSERT_EQ(rc, 0);
  free(diag);
  return c;
}

static void test_registry_files(void) {
  make_tmp_dir();
  char sub[128];
  snprintf(sub, sizeof sub, "%s/devices.d", tmp_dir);
  ASSERT_EQ(mkdir(sub, 0700), 0);
  snprintf(sub, sizeof sub, "%s/devices.d/sub.yaml", tmp_dir);
  ASSERT_EQ(mkdir(sub, 0700), 0);
  write_text("ddport.yaml", BASE "registry: [devices.yaml, devices.d/]\n"
                                 "devices:\n"
                                 "  main.ddport.test: {address: 192.0.2.1, "
                                 "ports: {http: 80}}\n");
  write_text("devices.yaml", "accounts:\n"
                             "  alice: {secret: \"" HUNTER2 "\"}\n"
                             "devices:\n"
                             "  one.ddport.test: {owner: alice, address: "
                             "192.0.2.2, ports: {http: 80}}\n");
  write_text("devices.d/b.yaml", "devices:\n"
                                 "  three.ddport.test: {owner: alice, "
                                 "address: 192.0.2.4, ports: {http: 80}}\n");
  write_text("devices.d/a.yaml", "devices:\n"
                                 "  Two.DDport.test.: {address: 192.0.2.3, "
                                 "ports: {http: 80}}\n");
  /* Neither hidden files nor other suffixes are read. */
  write_text("devices.d/.a.yaml", "garbage: [\n");
  write_text("devices.d/notes.txt", "garbage: [\n");
  write_text("devices.d/c.yml", "garbage: [\n");
  write_text("devices.d/empty.yaml", "# nothing yet\n");

  reg_config_t *c = load_dir_ok();
  ASSERT_EQ(c->n_devices, 4);
  ASSERT_STR_EQ(c->devices[0].name, "main.ddport.test");
  ASSERT_STR_EQ(c->devices[1].name, "one.ddport.test");
  ASSERT_STR_EQ(c->devices[2].name, "two.ddport.test");
  ASSERT_STR_EQ(c->devices[3].name, "three.ddport.test");
  ASSERT_STR_EQ(c->devices[3].owner, "alice");
  ASSERT_EQ(c->n_accounts, 1);
  ASSERT_STR_EQ(c->accounts[0].name, "alice");
  ASSERT_STR_EQ(c->accounts[0].secret, HUNTER2);
  ASSERT_EQ(c->n_registry, 2);
  ASSERT(!c->registry[0].directory);
  ASSERT(c->registry[1].directory);
  ASSERT_CONTAINS(c->registry[1].path, "/devices.d/");
  ASSERT_EQ(c->n_registry_files, 4);
  ASSERT(c->reload.watch);
  ASSERT_EQ(c->reload.delay_ms, 500);
  reg_config_free(c);

  /* A lone path is a list of one; absolute paths are taken as they are. */
  char text[512];
  snprintf(text, sizeof text,
           BASE "registry: %s/devices.yaml\nreload: {watch: off, delay: 2s}\n",
           tmp_dir);
  write_text("ddport.yaml", text);
  c = load_dir_ok();
  ASSERT_EQ(c->n_devices, 1);
  ASSERT(!c->reload.watch);
  ASSERT_EQ(c->reload.delay_ms, 2000);
  reg_config_free(c);

  /* Problems inside registry files name their own file; a device given
   * twice names both places. */
  write_text("ddport.yaml", BASE
             "registry: [devices.yaml, devices.d]\n"
             "devices:\n"
             "  one.ddport.test: {address: 192.0.2.1, ports: {http: 80}}\n");
  write_text("devices.d/a.yaml", "devices:\n"
                                 "  two.ddport.test: {address: 192.0.2.3,\n"
                                 "    ports: {http: 99999}}\n"
                                 "  one.ddport.test: {address: 192.0.2.5, "
                                 "ports: {http: 80}}\n"
                                 "listeners: []\n"
                                 "device: {}\n");
  write_text("devices.d/b.yaml", "devices:\n"
                                 "  two.ddport.test: {address: 192.0.2.4, "
                                 "ports: {http: 80}}\n"
                                 "  x.example.net: {address: 192.0.2.4, "
                                 "ports: {http: 80}}\n");
  write_text("devices.d/c.yaml", "devices: [\n");
  expect_dir_errors(
      "devices.yaml:4:3: duplicate device 'one.ddport.test'; already "
      "defined at ddport.yaml:8:3\n"
      "devices.d/a.yaml:3:19: port 99999 for listener 'http' is out of "
      "range; expected 1..65535\n"
      "devices.d/a.yaml:4:3: duplicate device 'one.ddport.test'; already "
      "defined at ddport.yaml:8:3\n"
      "devices.d/a.yaml:5:1: unknown key 'listeners' in a registry file; "
      "expected one of: accounts, devices\n"
      "devices.d/a.yaml:6:1: unknown key 'device' in a registry file; did "
      "you mean 'devices'?\n"
      "devices.d/b.yaml:2:3: duplicate device 'two.ddport.test'; already "
      "defined at devices.d/a.yaml:2:3\n"
      "devices.d/b.yaml:3:3: device 'x.example.net' is outside every "
      "configured zone (ddport.test); rename it or add its zone under "
      "'dns: zones:'\n"
      "devices.d/c.yaml:2:1: did not find expected node content (while "
      "parsing a flow node at line 2, column 1)\n");

  /* Files that cannot be read are reported where the config names them. */
  remove_tmp_dir();
  make_tmp_dir();
  write_text("ddport.yaml", "registry:\n"
                            "  - missing.yaml\n"
                            "  - devices.yaml\n"
                            "  - ./devices.yaml\n"
                            "  - fifo.yaml\n"
                            "  - \"\"\n"
                            "  - {a: b}\n");
  write_text("devices.yaml", "- not a mapping\n");
  snprintf(sub, sizeof sub, "%s/fifo.yaml", tmp_dir);
  ASSERT_EQ(mkfifo(sub, 0600), 0);
  expect_dir_errors(
      "ddport.yaml:2:5: cannot read registry 'missing.yaml': No such file "
      "or directory\n"
      "ddport.yaml:4:5: registry file './devices.yaml' is included twice; "
      "list each file once\n"
      "ddport.yaml:5:5: cannot read registry file 'fifo.yaml': not a "
      "regular file\n"
      "ddport.yaml:6:5: expected a file or directory path for 'registry', "
      "got ''\n"
      "ddport.yaml:7:5: expected a file or directory path for 'registry', "
      "got a mapping\n"
      "devices.yaml:1:1: expected a mapping with 'devices:' (and "
      "'accounts:') in a registry file, got a sequence\n");
  remove_tmp_dir();
}

/* Devices are streamed one at a time from registry files and from a main
 * file whose listeners and zones come first; the messages must be the ones
 * a whole tree gave, and a file broken after its devices were read reports
 * its syntax error only and leaves no devices behind. */
static void test_streamed_devices(void) {
  make_tmp_dir();
  char sub[128];
  snprintf(sub, sizeof sub, "%s/devices.d", tmp_dir);
  ASSERT_EQ(mkdir(sub, 0700), 0);
  write_text("ddport.yaml", BASE
             "registry: [devices.d]\n"
             "devices:\n"
             "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  A.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  A.ddport.test: {address: 192.0.2.7}\n"
             "  \"bad name\": {}\n"
             "  \"bad name\": {}\n"
             "  b.ddport.test.: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  b.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  b.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  b.ddport.test.: {address: 192.0.2.7, ports: {http: 80}}\n");
  write_text("devices.d/a.yaml",
             "devices:\n"
             "  c.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  d.ddport.test: {address: 192.0.2.7, ports: {http: 99999}}\n"
             "bad: [\n");
  write_text("devices.d/b.yaml",
             "devices:\n"
             "  c.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  f.ddport.test: {address: 192.0.2.7, ports: {http: 80, "
             "http: 81}}\n"
             "devices:\n"
             "  g.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n");
  expect_dir_errors(
      "ddport.yaml:9:3: duplicate device 'a.ddport.test'; already defined "
      "at line 8, column 3\n"
      "ddport.yaml:10:3: duplicate key 'a.ddport.test'; already given at "
      "line 8, column 3\n"
      "ddport.yaml:11:3: duplicate key 'A.ddport.test'; already given at "
      "line 9, column 3\n"
      "ddport.yaml:12:3: bad name 'bad name' for a device; expected a host "
      "name such as cam.example.net or *.example.net\n"
      "ddport.yaml:13:3: duplicate key 'bad name'; already given at line "
      "12, column 3\n"
      "ddport.yaml:15:3: duplicate device 'b.ddport.test'; already defined "
      "at line 14, column 3\n"
      "ddport.yaml:16:3: duplicate key 'b.ddport.test'; already given at "
      "line 15, column 3\n"
      "ddport.yaml:17:3: duplicate key 'b.ddport.test.'; already given at "
      "line 14, column 3\n"
      "devices.d/a.yaml:5:1: did not find expected node content (while "
      "parsing a flow node at line 5, column 1)\n"
      "devices.d/b.yaml:3:3: duplicate device 'a.ddport.test'; already "
      "defined at ddport.yaml:8:3\n"
      "devices.d/b.yaml:4:3: duplicate key 'a.ddport.test'; already given "
      "at line 3, column 3\n"
      "devices.d/b.yaml:5:57: duplicate key 'http'; already given at line "
      "5, column 47\n"
      "devices.d/b.yaml:6:1: duplicate key 'devices'; already given at "
      "line 1, column 1\n");

  /* Without the broken file the rest loads; the streamed devices are all
   * there, in file order. */
  snprintf(sub, sizeof sub, "%s/devices.d/a.yaml", tmp_dir);
  ASSERT_EQ(unlink(sub), 0);
  write_text("ddport.yaml",
             BASE "registry: [devices.d]\n"
                  "devices:\n"
                  "  a.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n");
  write_text("devices.d/b.yaml",
             "devices:\n"
             "  c.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
             "  d.ddport.test: {address: 192.0.2.8, ports: {http: 81}}\n");
  reg_config_t *c = load_dir_ok();
  ASSERT_EQ(c->n_devices, 3);
  ASSERT_STR_EQ(c->devices[0].name, "a.ddport.test");
  ASSERT_STR_EQ(c->devices[2].name, "d.ddport.test");
  ASSERT_EQ(c->devices[2].ports[0].port, 81);
  reg_config_free(c);
  remove_tmp_dir();
}

static void test_accounts(void) {
  /* Owners are checked against accounts from every file. */
  reg_config_t *c = load_ok(BASE "accounts:\n"
                                 "  alice: {secret: \"" HUNTER2 "\"}\n"
                                 "  bob@example.net: {secret: \"" SHA512 "\"}\n"
                                 "devices:\n"
                                 "  a.ddport.test: {owner: alice, address: "
                                 "192.0.2.7, ports: {http: 80}}\n");
  ASSERT_EQ(c->n_accounts, 2);
  ASSERT_STR_EQ(c->accounts[1].name, "bob@example.net");
  ASSERT_STR_EQ(c->accounts[1].secret, SHA512);
  reg_config_free(c);

  /* Without accounts an owner is only a label. */
  c = load_ok(BASE "devices:\n"
                   "  a.ddport.test: {owner: anyone, address: 192.0.2.7, "
                   "ports: {http: 80}}\n");
  reg_config_free(c);

  expect_errors(BASE "accounts:\n"
                     "  alice: {secret: hunter2}\n"
                     "  bob: {secret: \"$1$abc$abcdefghijklmnopqrstuv\"}\n"
                     "  carol: {secret: \"$y$j9T$abc$short\"}\n"
                     "  dave: {}\n"
                     "  \"eve:x\": {secret: \"" HUNTER2 "\"}\n"
                     "  alice: {secret: \"" HUNTER2 "\"}\n"
                     "  frank: {secret: \"" HUNTER2 "\", colour: red}\n"
                     "devices:\n"
                     "  a.ddport.test: {owner: alcie, address: 192.0.2.7, "
                     "ports: {http: 80}}\n"
                     "  b.ddport.test: {owner: zed, address: 192.0.2.7, "
                     "ports: {http: 80}}\n",
                "t.yaml:7:19: the secret of account 'alice' is not a "
                "crypt(3) hash (plaintext?); store a hash instead: run "
                "`ddport hash-secret` and paste what it prints (yescrypt $y$, "
                "sha512crypt $6$ or bcrypt $2b$)\n"
                "t.yaml:8:17: the secret of account 'bob' is an unknown or "
                "weak crypt(3) scheme; store a hash instead: run `ddport "
                "hash-secret` and paste what it prints (yescrypt $y$, "
                "sha512crypt $6$ or bcrypt $2b$)\n"
                "t.yaml:9:19: the secret of account 'carol' is a truncated "
                "or malformed crypt(3) hash; store a hash instead: run "
                "`ddport hash-secret` and paste what it prints (yescrypt $y$, "
                "sha512crypt $6$ or bcrypt $2b$)\n"
                "t.yaml:10:3: account 'dave' is missing 'secret'; add the "
                "hash that `ddport hash-secret` prints, e.g. 'secret: "
                "\"$y$j9T$...\"'\n"
                "t.yaml:11:3: bad account name 'eve:x'; use 1 to 64 letters, "
                "digits and '._@+-', such as 'alice'\n"
                "t.yaml:12:3: duplicate key 'alice'; already given at line 7, "
                "column 3\n"
                "t.yaml:13:96: unknown key 'colour' in account 'frank'; "
                "expected one of: secret\n"
                "t.yaml:15:26: unknown owner 'alcie' for device "
                "'a.ddport.test'; did you mean 'alice'?\n"
                "t.yaml:16:26: unknown owner 'zed' for device "
                "'b.ddport.test'; add it under 'accounts:' or use one of: "
                "alice, bob, carol, dave, frank\n");

  /* An account given in two files names both places. */
  make_tmp_dir();
  write_text("ddport.yaml", BASE "registry: more.yaml\n"
                                 "accounts:\n"
                                 "  alice: {secret: \"" HUNTER2 "\"}\n");
  write_text("more.yaml", "accounts:\n"
                          "  alice: {secret: \"" HUNTER2 "\"}\n"
                          "  bob: {secret: \"" HUNTER2 "\"}\n"
                          "devices:\n"
                          "  a.ddport.test: {owner: bbo, address: 192.0.2.7, "
                          "ports: {http: 80}}\n");
  expect_dir_errors("more.yaml:2:3: duplicate account 'alice'; already "
                    "defined at ddport.yaml:8:3\n"
                    "more.yaml:5:26: unknown owner 'bbo' for device "
                    "'a.ddport.test'; did you mean 'bob'?\n");
  remove_tmp_dir();
}

static void test_secret_hash(void) {
  const char *why = NULL;
  ASSERT(reg_secret_is_hash(HUNTER2, &why));
  ASSERT(reg_secret_is_hash(SHA512, &why));
  ASSERT(reg_secret_is_hash("$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnop"
                            "qrstuvwxyzABCDE",
                            &why));
  ASSERT(!reg_secret_is_hash("hunter2", &why));
  ASSERT_STR_EQ(why, "not a crypt(3) hash (plaintext?)");
  ASSERT(!reg_secret_is_hash("", &why));
  ASSERT(!reg_secret_is_hash("abcdefghijklm", &why)); /* DES-shaped */
  ASSERT(!reg_secret_is_hash("$5$salt$abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                             "KLMNOPQ",
                             &why));
  ASSERT(!reg_secret_is_hash("$y$j9T$7nXje.gdLO2k5TLKk8hYi0", &why));
  ASSERT(!reg_secret_is_hash("$y$j9T$7nXje.gdLO2k5TLKk8hYi0$", &why));
  ASSERT(!reg_secret_is_hash(HUNTER2 "x", &why));
  ASSERT(!reg_secret_is_hash("$y$$lpAG6CTkQlcARmqaqbKmlXwiCrd0TUcCALsJBkPy8Q8",
                             &why));

  ASSERT(reg_secret_verify(HUNTER2, "hunter2"));
  ASSERT(!reg_secret_verify(HUNTER2, "hunter3"));
  ASSERT(!reg_secret_verify(HUNTER2, ""));
  char hash[128];
  ASSERT_EQ(reg_secret_hash("correct horse", hash, sizeof hash), 0);
  ASSERT(strncmp(hash, "$y$", 3) == 0);
  ASSERT(reg_secret_is_hash(hash, &why));
  ASSERT(reg_secret_verify(hash, "correct horse"));
  ASSERT(!reg_secret_verify(hash, "correct horse "));
  char again[128];
  ASSERT_EQ(reg_secret_hash("correct horse", again, sizeof again), 0);
  ASSERT(strcmp(hash, again) != 0); /* a fresh salt each time */
  ASSERT_EQ(reg_secret_hash("x", hash, 10), -ENOSPC);
}

static void test_idn(void) {
  /* Unicode names are stored as A-labels, zones and devices alike. */
  reg_config_t *c = load_ok(
      "listeners:\n"
      "  - {name: http, protocol: http, address: 127.0.0.1:8080}\n"
      "dns:\n"
      "  zones:\n"
      "    - {name: Bücher.TEST, proxy: [127.0.0.1],\n"
      "       nameservers: [ns1.bücher.test]}\n"
      "devices:\n"
      "  Straße.bücher.test: {address: 192.0.2.7, ports: {http: 80}}\n"
      "  \"*.café.bücher.test.\": {address: 192.0.2.7, ports: {http: 80}}\n"
      "  xn--caf-dma.xn--bcher-kva.test: {address: 192.0.2.7, ports: {http: "
      "80}}\n");
  ASSERT_STR_EQ(c->dns.zones[0].name, "xn--bcher-kva.test");
  ASSERT_STR_EQ(c->dns.zones[0].nameservers[0], "ns1.xn--bcher-kva.test");
  ASSERT_STR_EQ(c->devices[0].name, "xn--strae-oqa.xn--bcher-kva.test");
  ASSERT_STR_EQ(c->devices[1].name, "*.xn--caf-dma.xn--bcher-kva.test");
  ASSERT(c->devices[1].wildcard);
  ASSERT_STR_EQ(c->devices[2].name, "xn--caf-dma.xn--bcher-kva.test");
  reg_config_free(c);

  expect_errors(
      BASE "devices:\n"
           "  xn--zz.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
           "  \"\xf0\x9f\x92\xa9.ddport.test\": {address: 192.0.2.7, "
           "ports: {http: 80}}\n"
           "  -ü.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
           "  a_ü.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
           "  café.ddport.test: {address: 192.0.2.7, ports: {http: 80}}\n"
           "  xn--caf-dma.ddport.test: {address: 192.0.2.7, ports: {http: "
           "80}}\n",
      "t.yaml:7:3: bad international name 'xn--zz.ddport.test' for a "
      "device: string contains invalid punycode data; expected a host name "
      "such as cam.example.net or *.example.net\n"
      "t.yaml:8:3: bad international name '\xf0\x9f\x92\xa9.ddport.test' "
      "for a device: string contains a disallowed character; expected a "
      "host name such as cam.example.net or *.example.net\n"
      "t.yaml:9:3: bad international name '-ü.ddport.test' for a device: "
      "string start/ends with forbidden hyphen; expected a host name such "
      "as cam.example.net or *.example.net\n"
      "t.yaml:10:3: bad name 'a_ü.ddport.test' for a device; expected a "
      "host name such as cam.example.net or *.example.net\n"
      "t.yaml:12:3: duplicate device 'xn--caf-dma.ddport.test'; already "
      "defined at line 11, column 3\n");
  expect_errors("dns: {zones: [{name: \"\xe2\x80\x8b.test\", proxy: "
                "[1.2.3.4]}]}\n",
                "t.yaml:1:22: bad name '\xe2\x80\x8b.test' for 'name'; "
                "expected a host name such as example.net\n");
}

/* A listener may take several addresses (dual stack: an IPv6 socket takes
 * IPv6 only); no address serves two things. */
static void test_listener_addresses(void) {
  reg_config_t *cfg = load_ok(
      "listeners:\n"
      "  - {name: web, protocol: http, address: [127.0.0.1:8080, "
      "\"[::1]:8080\"]}\n"
      "  - {name: tls, protocol: tls, address: 127.0.0.1:8443}\n"
      "devices:\n"
      "  a.example.net: {address: 127.0.0.1, ports: {web: 1, tls: 2}}\n");
  ASSERT_EQ(cfg->n_listeners, 3);
  ASSERT_STR_EQ(cfg->listeners[0].name, "web");
  ASSERT_STR_EQ(cfg->listeners[1].name, "web");
  ASSERT_EQ(cfg->listeners[0].addr.ss_family, AF_INET);
  ASSERT_EQ(cfg->listeners[1].addr.ss_family, AF_INET6);
  ASSERT_EQ(sockaddr_port(&cfg->listeners[1].addr), 8080);
  ASSERT_STR_EQ(cfg->listeners[2].name, "tls");
  reg_config_free(cfg);

  /* An unknown listener lists each name once. */
  expect_errors("listeners:\n"
                "  - {name: web, protocol: http, address: [127.0.0.1:1, "
                "127.0.0.2:1]}\n"
                "devices:\n"
                "  a.example.net: {address: 127.0.0.1, ports: {zzz: 1}}\n",
                "t.yaml:4:47: no listener named 'zzz'; the listeners are: "
                "web\n");
  expect_errors("listeners:\n"
                "  - {name: web, protocol: http, address: []}\n",
                "t.yaml:2:42: listener 'address' is an empty list; give one "
                "address or more\n");
  /* Two listeners, a listener and DNS, DNS twice, the update endpoint
   * and a listener: each second one is refused, naming the first. */
  expect_errors(
      "listeners:\n"
      "  - {name: one, protocol: http, address: 127.0.0.1:8080}\n"
      "  - {name: two, protocol: tls, address: [127.0.0.1:8443, "
      "127.0.0.1:8080]}\n"
      "dns:\n"
      "  listen: [127.0.0.1:8443, 127.0.0.1:5353, 127.0.0.1:5353]\n"
      "update: {listen: [127.0.0.1:8080]}\n",
      "t.yaml:3:58: address 127.0.0.1:8080 is already taken by listener "
      "'one' at line 2, column 42; give each its own address\n"
      "t.yaml:5:12: address 127.0.0.1:8443 is already taken by listener "
      "'two' at line 3, column 42; give each its own address\n"
      "t.yaml:5:44: address 127.0.0.1:5353 is already taken by dns.listen "
      "at line 5, column 28; give each its own address\n"
      "t.yaml:6:19: address 127.0.0.1:8080 is already taken by listener "
      "'one' at line 2, column 42; give each its own address\n");
}

/* text with insert put right after the first 'after' in it, into out. */
static void insert_after(const char *text, const char *after,
                         const char *insert, char *out, size_t size) {
  const char *at = strstr(text, after);
  ASSERT(at != NULL);
  size_t head = (size_t)(at - text) + strlen(after);
  int n = snprintf(out, size, "%.*s%s%s", (int)head, text, insert, text + head);
  ASSERT(n > 0 && (size_t)n < size);
}

static void test_restart_keys(void) {
  reg_config_t *a = load_ok(example);
  reg_config_t *b = load_ok(example);
  const char *keys[REG_RESTART_KEYS_MAX];
  ASSERT_EQ(reg_config_restart_keys(a, b, keys, REG_RESTART_KEYS_MAX), 0);
  reg_config_free(b);

  /* Devices, accounts and reload settings apply at once: never named. */
  char text[4096];
  snprintf(text, sizeof text,
           "%s  new.ddport.test: {address: 127.0.0.1, ports: {http: 1}}\n"
           "reload: {watch: off}\n",
           example);
  b = load_ok(text);
  ASSERT_EQ(reg_config_restart_keys(a, b, keys, REG_RESTART_KEYS_MAX), 0);
  reg_config_free(b);

  b = load_ok("workers: 3\n"
              "cpu_affinity: on\n"
              "cpu_scheduling: batch\n"
              "listeners:\n"
              "  - {name: http, protocol: http, address: 127.0.0.1:8080}\n"
              "proxy: {timeouts: {idle: 1m}, allow_targets: [127.0.0.0/8]}\n"
              "dns:\n"
              "  listen: [127.0.0.1:5353]\n"
              "  serial_batch: 3s\n"
              "  zones: [{name: ddport.test, proxy: [127.0.0.1]}]\n");
  size_t n = reg_config_restart_keys(a, b, keys, REG_RESTART_KEYS_MAX);
  char joined[512] = "";
  for (size_t i = 0; i < n; i++)
    snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s",
             i ? " " : "", keys[i]);
  ASSERT_STR_EQ(joined, "workers cpu_affinity cpu_scheduling proxy.timeouts "
                        "proxy.allow_targets dns.zones dns.serial_batch");
  ASSERT(b->cpu_affinity && !a->cpu_affinity);
  ASSERT(b->cpu_scheduling == REG_SCHED_BATCH &&
         a->cpu_scheduling == REG_SCHED_NORMAL);
  ASSERT_EQ(reg_config_restart_keys(a, b, keys, 2), 2);
  reg_config_free(b);

  /* Every DNS setting the workers hold from the start is named, a zone's
   * notify and allow_transfer as dns.zones. */
  char more[4096];
  insert_after(example, "  access_log: stderr\n",
               "  resolvers: [127.0.0.1:53]\n", text, sizeof text);
  insert_after(text, "  listen: [127.0.0.1:5353]\n",
               "  tsig_keys: {k: {algorithm: hmac-sha256, secret: "
               "\"c2VjcmV0c2VjcmV0c2VjcmV0\"}}\n"
               "  rate_limit: {responses_per_second: 20}\n"
               "  tcp_idle: 3s\n"
               "  tcp_connections: 7\n"
               "  version: v\n"
               "  identity: i\n",
               more, sizeof more);
  insert_after(more, "expire: 7d, minimum: 60}\n",
               "      allow_transfer: [127.0.0.0/8]\n", text, sizeof text);
  b = load_ok(text);
  n = reg_config_restart_keys(a, b, keys, REG_RESTART_KEYS_MAX);
  joined[0] = '\0';
  for (size_t i = 0; i < n; i++)
    snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s",
             i ? " " : "", keys[i]);
  ASSERT_STR_EQ(joined, "proxy.resolvers dns.zones dns.tsig_keys "
                        "dns.rate_limit dns.tcp_idle dns.tcp_connections "
                        "dns.version dns.identity");
  reg_config_free(b);
  reg_config_free(a);
}

int main(int argc, char **argv) {
  (void)argc;
  argv0 = argv[0];
  RUN_TEST(test_example_embedded);
  RUN_TEST(test_example_file);
  RUN_TEST(test_defaults);
  RUN_TEST(test_values);
  RUN_TEST(test_tls_listener);
  RUN_TEST(test_hostname_target_and_resolvers);
  RUN_TEST(test_too_many_addresses);
  RUN_TEST(test_bad_owner);
  RUN_TEST(test_proxy_protocol_values);
  RUN_TEST(test_booleans);
  RUN_TEST(test_no_devices_no_zones);
  RUN_TEST(test_not_implemented);
  RUN_TEST(test_update_section);
  RUN_TEST(test_unknown_key);
  RUN_TEST(test_wrong_type);
  RUN_TEST(test_transfers);
  RUN_TEST(test_bad_address);
  RUN_TEST(test_port_range);
  RUN_TEST(test_duplicate_device);
  RUN_TEST(test_duplicate_listener);
  RUN_TEST(test_duplicate_key);
  RUN_TEST(test_bad_prefix);
  RUN_TEST(test_bad_duration_and_size);
  RUN_TEST(test_device_outside_zone);
  RUN_TEST(test_unknown_listener);
  RUN_TEST(test_missing_keys);
  RUN_TEST(test_not_implemented_errors);
  RUN_TEST(test_names);
  RUN_TEST(test_yaml_errors);
  RUN_TEST(test_empty);
  RUN_TEST(test_nul_byte);
  RUN_TEST(test_many_errors);
  RUN_TEST(test_load_file);
  RUN_TEST(test_registry_files);
  RUN_TEST(test_streamed_devices);
  RUN_TEST(test_accounts);
  RUN_TEST(test_secret_hash);
  RUN_TEST(test_idn);
  RUN_TEST(test_restart_keys);
  RUN_TEST(test_listener_addresses);
  return 0;
}
