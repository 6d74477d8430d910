/* SPDX-License-Identifier: MIT */
/* test_registry_table.c -- lookups, wildcards and the target policy */
#include "registry/registry.h"
#include "tests/test.h"

#include <errno.h>

static reg_device_t device(const char *name, bool enabled) {
  reg_device_t d = {0};
  d.name = (char *)name;
  d.enabled = enabled;
  d.wildcard = name[0] == '*';
  return d;
}

static const reg_device_t *lookup(const reg_t *reg, const char *name) {
  return reg_lookup(reg, name, strlen(name));
}

static void test_exact_and_wildcard(void) {
  reg_device_t devices[] = {
      device("cam.example.net", true),
      device("*.cam.example.net", true),
      device("exact.cam.example.net", true),
      device("*.example.net", true),
      device("off.example.net", false),
      device("*.off2.example.net", false),
  };
  reg_config_t config = {.devices = devices,
                         .n_devices = sizeof devices / sizeof devices[0]};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), 6);
  ASSERT(lookup(reg, "cam.example.net") == &devices[0]);
  /* Exact beats wildcard; the nearest wildcard wins. */
  ASSERT(lookup(reg, "exact.cam.example.net") == &devices[2]);
  ASSERT(lookup(reg, "a.cam.example.net") == &devices[1]);
  ASSERT(lookup(reg, "a.b.cam.example.net") == &devices[1]);
  ASSERT(lookup(reg, "other.example.net") == &devices[3]);
  /* A wildcard covers names below it, not its own base name. */
  ASSERT(lookup(reg, "example.net") == NULL);
  /* Disabled devices are not found, and do not fall through. */
  ASSERT(lookup(reg, "off.example.net") == NULL);
  ASSERT(lookup(reg, "x.off2.example.net") == NULL);
  ASSERT(lookup(reg, "nothing.test") == NULL);
  ASSERT(lookup(reg, "") == NULL);
  /* Lookups take a length: the rest of the buffer is not part of it. */
  ASSERT(reg_lookup(reg, "cam.example.netXYZ", 15) == &devices[0]);
  ASSERT(reg_lookup(reg, "cam.example.ne", 14) == NULL);
  reg_free(reg);
}

static void test_many_devices(void) {
  enum { N = 5000 };
  static char names[N][32];
  static reg_device_t devices[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "dev%d.example.net", i);
    devices[i] = device(names[i], true);
  }
  reg_config_t config = {.devices = devices, .n_devices = N};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), N);
  for (int i = 0; i < N; i++)
    ASSERT(lookup(reg, names[i]) == &devices[i]);
  ASSERT(lookup(reg, "dev5000.example.net") == NULL);
  reg_free(reg);
}

static void test_empty_registry(void) {
  reg_config_t config = {0};
  reg_t *reg = reg_new(&config);
  ASSERT_EQ(reg_count(reg), 0);
  ASSERT(lookup(reg, "a.test") == NULL);
  reg_free(reg);
}

static bool allowed(const reg_config_t *config, const char *ip_text,
                    uint16_t port) {
  core_ip_t ip;
  const char *why = NULL;
  ASSERT_EQ(core_ip_parse(ip_text, &ip), 0);
  bool ok = reg_target_allowed(config, &ip, port, &why);
  ASSERT(ok || why != NULL);
  return ok;
}

static void test_policy_defaults(void) {
  reg_config_t config = {0};
  ASSERT(allowed(&config, "203.0.113.7", 80));
  ASSERT(allowed(&config, "2001:db8::7", 80));
  const char *refused[] = {
      "127.0.0.1",   "127.1.2.3",       "0.0.0.0",  "169.254.1.1",
      "224.0.0.1",   "255.255.255.255", "10.1.2.3", "172.16.0.1",
      "192.168.1.1", "100.64.0.1",      "::1",      "::",
      "fe80::1",     "ff02::1",         "fd00::1",  "::ffff:127.0.0.1"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    if (allowed(&config, refused[i], 80))
      TEST_FAIL_("%s allowed by default", refused[i]);
}

static void test_policy_allow_list(void) {
  core_prefix_t allow[3];
  const char *why;
  ASSERT_EQ(core_prefix_parse("127.0.0.0/8", &allow[0], &why), 0);
  ASSERT_EQ(core_prefix_parse("198.51.100.0/24", &allow[1], &why), 0);
  ASSERT_EQ(core_prefix_parse("0.0.0.0/0", &allow[2], &why), 0);
  reg_config_t config = {0};
  config.proxy.allow_targets = allow;
  config.proxy.n_allow_targets = 2;
  ASSERT(allowed(&config, "127.0.0.1", 10080));
  ASSERT(allowed(&config, "198.51.100.9", 80));
  ASSERT(!allowed(&config, "203.0.113.7", 80));
  ASSERT(!allowed(&config, "::1", 80));
  /* 0.0.0.0/0 lets public addresses through but names no special range. */
  config.proxy.allow_targets = &allow[2];
  config.proxy.n_allow_targets = 1;
  ASSERT(allowed(&config, "203.0.113.7", 80));
  ASSERT(!allowed(&config, "127.0.0.1", 80));
  ASSERT(!allowed(&config, "10.0.0.1", 80));
}

static void test_policy_own_listener(void) {
  core_prefix_t allow;
  const char *why;
  ASSERT_EQ(core_prefix_parse("127.0.0.0/8", &allow, &why), 0);
  reg_listener_t listeners[2] = {{.name = "http"}, {.name = "any"}};
  ASSERT_EQ(core_hostport_parse("127.0.0.1:8080", &listeners[0].addr, &why), 0);
  ASSERT_EQ(core_hostport_parse("0.0.0.0:9090", &listeners[1].addr, &why), 0);
  reg_config_t config = {0};
  config.proxy.allow_targets = &allow;
  config.proxy.n_allow_targets = 1;
  config.listeners = listeners;
  config.n_listeners = 2;
  ASSERT(!allowed(&config, "127.0.0.1", 8080));
  ASSERT(allowed(&config, "127.0.0.1", 8081));
  ASSERT(allowed(&config, "127.0.0.2", 8080));
  ASSERT(!allowed(&config, "127.0.0.5", 9090));
}

int main(void) {
  RUN_TEST(test_exact_and_wildcard);
  RUN_TEST(test_many_devices);
  RUN_TEST(test_empty_registry);
  RUN_TEST(test_policy_defaults);
  RUN_TEST(test_policy_allow_list);
  RUN_TEST(test_policy_own_listener);
  return 0;
}
