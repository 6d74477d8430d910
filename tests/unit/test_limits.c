/* SPDX-License-Identifier: MIT */
/* test_limits.c -- connection limits: exact counts, sources, release */
#include "proxy/proxy_int.h"
#include "tests/test.h"

static core_ip_t ip(const char *text) {
  core_ip_t out;
  ASSERT_EQ(core_ip_parse(text, &out), 0);
  return out;
}

static px_limits_t *limits(uint32_t total, uint32_t per_source,
                           uint32_t peeking) {
  reg_config_t config = {0};
  config.proxy.max_connections = total;
  config.proxy.max_per_source = per_source;
  config.proxy.max_peeking = peeking;
  return px_limits_new(&config);
}

static void test_per_source(void) {
  px_limits_t *l = limits(1000, 3, 1000);
  px_admission_t a[4], other;
  core_ip_t visitor = ip("198.51.100.7");
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(px_limits_admit(l, &visitor, &a[i]), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &visitor, &a[3]), PX_LIMIT_PER_SOURCE);
  /* Another source is unaffected. */
  core_ip_t neighbour = ip("198.51.100.8");
  ASSERT_EQ(px_limits_admit(l, &neighbour, &other), PX_LIMIT_NONE);
  /* A refusal holds nothing; a release frees one place. */
  px_limits_release(l, &a[0]);
  ASSERT_EQ(px_limits_admit(l, &visitor, &a[0]), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &visitor, &a[3]), PX_LIMIT_PER_SOURCE);
  for (int i = 0; i < 3; i++)
    px_limits_release(l, &a[i]);
  px_limits_release(l, &other);
  px_limits_free(l);
}

/* One subscriber holds a /64: its addresses share one count. */
static void test_ipv6_per_64(void) {
  px_limits_t *l = limits(1000, 2, 1000);
  px_admission_t a, b, c, d;
  core_ip_t x1 = ip("2001:db8:1:2::1"), x2 = ip("2001:db8:1:2:ffff::9");
  core_ip_t y = ip("2001:db8:1:3::1");
  ASSERT_EQ(px_limits_admit(l, &x1, &a), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &x2, &b), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &x1, &c), PX_LIMIT_PER_SOURCE);
  ASSERT_EQ(px_limits_admit(l, &y, &d), PX_LIMIT_NONE);
  px_limits_release(l, &a);
  px_limits_release(l, &b);
  px_limits_release(l, &d);
  px_limits_free(l);
}

static void test_total_and_peeking(void) {
  px_limits_t *l = limits(3, 100, 2);
  px_admission_t a[4];
  char text[32];
  core_ip_t v[4];
  for (int i = 0; i < 4; i++) {
    snprintf(text, sizeof text, "192.0.2.%d", i + 1);
    v[i] = ip(text);
  }
  ASSERT_EQ(px_limits_admit(l, &v[0], &a[0]), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &v[1], &a[1]), PX_LIMIT_NONE);
  ASSERT_EQ(px_limits_admit(l, &v[2], &a[2]), PX_LIMIT_PEEKING);
  /* Done peeking frees a peeking place but still counts as open. */
  px_limits_peek_done(l, &a[0]);
  px_limits_peek_done(l, &a[0]); /* idempotent */
  ASSERT_EQ(px_limits_admit(l, &v[2], &a[2]), PX_LIMIT_NONE);
  px_limits_peek_done(l, &a[1]);
  ASSERT_EQ(px_limits_admit(l, &v[3], &a[3]), PX_LIMIT_CONNECTIONS);
  px_limits_release(l, &a[2]);
  ASSERT_EQ(px_limits_admit(l, &v[3], &a[3]), PX_LIMIT_NONE);
  px_limits_release(l, &a[0]);
  px_limits_release(l, &a[1]);
  px_limits_release(l, &a[3]);
  /* Everything given back: the full limits are available again. */
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(px_limits_admit(l, &v[0], &a[i]), PX_LIMIT_NONE);
  px_limits_release(l, &a[0]);
  px_limits_release(l, &a[1]);
  px_limits_free(l);
}

/* Many distinct sources at the limit each: the sketch must not refuse a
 * source that is under its limit just because others are busy. (A false
 * refusal here needs all four counters of a source shared with another
 * source: about 2000 * (2000/2^17)^4, or 1e-4, per run.) */
static void test_many_sources(void) {
  enum { SOURCES = 2000, EACH = 2 };
  px_limits_t *l = limits(1000000, EACH, 1000000);
  static px_admission_t held[SOURCES][EACH];
  char text[32];
  for (int s = 0; s < SOURCES; s++) {
    snprintf(text, sizeof text, "10.%d.%d.1", s / 256, s % 256);
    core_ip_t v = ip(text);
    for (int i = 0; i < EACH; i++)
      ASSERT_EQ(px_limits_admit(l, &v, &held[s][i]), PX_LIMIT_NONE);
  }
  for (int s = 0; s < SOURCES; s++)
    for (int i = 0; i < EACH; i++)
      px_limits_release(l, &held[s][i]);
  px_limits_free(l);
}

int main(void) {
  RUN_TEST(test_per_source);
  RUN_TEST(test_ipv6_per_64);
  RUN_TEST(test_total_and_peeking);
  RUN_TEST(test_many_sources);
  return 0;
}
