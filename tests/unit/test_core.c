/* SPDX-License-Identifier: MIT */
/* test_core.c -- addresses, prefixes, names and units */
#include "core/core.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_ip_parse(void) {
  core_ip_t ip;
  char buf[INET6_ADDRSTRLEN];
  ASSERT_EQ(core_ip_parse("192.0.2.7", &ip), 0);
  ASSERT_EQ(ip.family, AF_INET);
  ASSERT_STR_EQ(core_ip_format(&ip, buf, sizeof buf), "192.0.2.7");
  ASSERT_EQ(core_ip_parse("2001:db8::7", &ip), 0);
  ASSERT_EQ(ip.family, AF_INET6);
  ASSERT_STR_EQ(core_ip_format(&ip, buf, sizeof buf), "2001:db8::7");
  ASSERT_EQ(core_ip_parse("999.1.1.1", &ip), -EINVAL);
  ASSERT_EQ(core_ip_parse("[::1]", &ip), -EINVAL);
  ASSERT_EQ(core_ip_parse("", &ip), -EINVAL);
}

static void test_hostport_parse(void) {
  struct sockaddr_storage ss;
  const char *why = NULL;
  char buf[64];
  ASSERT_EQ(core_hostport_parse("127.0.0.1:8080", &ss, &why), 0);
  ASSERT_STR_EQ(core_sockaddr_format((struct sockaddr *)&ss, buf, sizeof buf),
                "127.0.0.1:8080");
  ASSERT_EQ(core_hostport_parse("[::1]:443", &ss, &why), 0);
  ASSERT_STR_EQ(core_sockaddr_format((struct sockaddr *)&ss, buf, sizeof buf),
                "[::1]:443");
  ASSERT_EQ(core_hostport_parse("[::]:53", &ss, &why), 0);
  ASSERT_EQ(ss.ss_family, AF_INET6);
  const char *bad[] = {
      "127.0.0.1",  "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x",
      "::1:80",     "[::1]80",     "host.test:80",    ":80",
      "127.0.0.1:", "[::1:80",     "1.2.3.4:-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    if (core_hostport_parse(bad[i], &ss, &why) != -EINVAL || why == NULL)
      TEST_FAIL_("accepted %s", bad[i]);
  }
}

static void test_prefixes(void) {
  core_prefix_t p;
  core_ip_t ip;
  const char *why;
  ASSERT_EQ(core_prefix_parse("192.0.2.0/24", &p, &why), 0);
  ASSERT_EQ(p.bits, 24);
  core_ip_parse("192.0.2.200", &ip);
  ASSERT(core_prefix_contains(&p, &ip));
  core_ip_parse("192.0.3.1", &ip);
  ASSERT(!core_prefix_contains(&p, &ip));
  /* An IPv4-mapped IPv6 address is compared as the IPv4 it carries. */
  core_ip_parse("::ffff:192.0.2.9", &ip);
  ASSERT(core_prefix_contains(&p, &ip));
  core_ip_parse("2001:db8::1", &ip);
  ASSERT(!core_prefix_contains(&p, &ip));

  ASSERT_EQ(core_prefix_parse("2001:db8::/33", &p, &why), 0);
  core_ip_parse("2001:db8:7fff::1", &ip);
  ASSERT(core_prefix_contains(&p, &ip));
  core_ip_parse("2001:db8:8000::1", &ip);
  ASSERT(!core_prefix_contains(&p, &ip));

  ASSERT_EQ(core_prefix_parse("0.0.0.0/0", &p, &why), 0);
  core_ip_parse("203.0.113.1", &ip);
  ASSERT(core_prefix_contains(&p, &ip));
  ASSERT_EQ(core_prefix_parse("10.1.2.3", &p, &why), 0);
  ASSERT_EQ(p.bits, 32);

  ASSERT_EQ(core_prefix_parse("192.0.2.1/24", &p, &why), -EINVAL);
  ASSERT_CONTAINS(why, "beyond the prefix");
  ASSERT_EQ(core_prefix_parse("192.0.2.0/33", &p, &why), -EINVAL);
  ASSERT_EQ(core_prefix_parse("::/129", &p, &why), -EINVAL);
  ASSERT_EQ(core_prefix_parse("x/8", &p, &why), -EINVAL);
  ASSERT_EQ(core_prefix_parse("10.0.0.0/", &p, &why), -EINVAL);
}

static void test_names(void) {
  char out[CORE_NAME_MAX + 1];
  ASSERT_EQ(core_name_normalise("Cam.Example.NET.", 16, out, false), 15);
  ASSERT_STR_EQ(out, "cam.example.net");
  ASSERT_EQ(core_name_normalise("*.Cam.test", 10, out, true), 10);
  ASSERT_STR_EQ(out, "*.cam.test");
  ASSERT_EQ(core_name_normalise("*.cam.test", 10, out, false), -EINVAL);
  ASSERT_EQ(core_name_normalise("a.*.test", 8, out, true), -EINVAL);
  ASSERT_EQ(core_name_normalise("a..b", 4, out, false), -EINVAL);
  ASSERT_EQ(core_name_normalise(".a", 2, out, false), -EINVAL);
  ASSERT_EQ(core_name_normalise("a b", 3, out, false), -EINVAL);
  ASSERT_EQ(core_name_normalise("a\0b", 3, out, false), -EINVAL);
  char name[300];
  /* 253 bytes in 63-byte labels is the longest name. */
  memset(name, 'a', sizeof name);
  name[63] = name[127] = name[191] = '.';
  ASSERT_EQ(core_name_normalise(name, 253, out, false), 253);
  ASSERT_EQ(core_name_normalise(name, 254, out, false), -EINVAL);
  name[63] = 'a';
  ASSERT_EQ(core_name_normalise(name, 100, out, false), -EINVAL);

  ASSERT(core_name_in_zone("a.ddport.test", 13, "ddport.test", 11));
  ASSERT(core_name_in_zone("ddport.test", 11, "ddport.test", 11));
  ASSERT(!core_name_in_zone("xddport.test", 12, "ddport.test", 11));
  ASSERT(!core_name_in_zone("test", 4, "ddport.test", 11));
}

static void test_units(void) {
  uint64_t v;
  ASSERT_EQ(core_duration_parse("500ms", &v), 0);
  ASSERT_EQ(v, 500);
  ASSERT_EQ(core_duration_parse("5s", &v), 0);
  ASSERT_EQ(v, 5000);
  ASSERT_EQ(core_duration_parse("10m", &v), 0);
  ASSERT_EQ(v, 600000);
  ASSERT_EQ(core_duration_parse("1h", &v), 0);
  ASSERT_EQ(v, 3600000);
  ASSERT_EQ(core_duration_parse("7d", &v), 0);
  ASSERT_EQ(v, 604800000);
  ASSERT_EQ(core_duration_parse("5", &v), -EINVAL);
  ASSERT_EQ(core_duration_parse("s", &v), -EINVAL);
  ASSERT_EQ(core_duration_parse("5 s", &v), -EINVAL);
  ASSERT_EQ(core_duration_parse("-5s", &v), -EINVAL);
  ASSERT_EQ(core_duration_parse("99999999999999999999s", &v), -EINVAL);
  ASSERT_EQ(core_duration_parse("18446744073709552s", &v), -EINVAL);
  ASSERT_EQ(core_size_parse("16KiB", &v), 0);
  ASSERT_EQ(v, 16384);
  ASSERT_EQ(core_size_parse("1MiB", &v), 0);
  ASSERT_EQ(v, 1048576);
  ASSERT_EQ(core_size_parse("512", &v), 0);
  ASSERT_EQ(v, 512);
  ASSERT_EQ(core_size_parse("16KB", &v), -EINVAL);
  ASSERT_EQ(core_size_parse("", &v), -EINVAL);
}

/* core_arena_alloc_fit: blocks 8-byte aligned and apart, the asked range
 * in one 64-byte line whatever the arena's position, across new chunks;
 * a range longer than a line is placed like any block. */
static void test_arena_fit(void) {
  core_arena_t a = {0};
  char *prev = NULL;
  size_t prev_size = 0;
  for (size_t i = 0; i < 20000; i++) {
    size_t size = 8 + (i * 7) % 120; /* odd sizes shift every position */
    size_t at = (i * 13) % 50, len = 1 + (i * 5) % 64;
    if (at + len > size)
      size = at + len;
    char *p = core_arena_alloc_fit(&a, size, at, len);
    ASSERT_EQ((uintptr_t)p % 8, 0);
    /* the range is in one line when an 8-byte aligned place allows it,
     * that is whenever (at % 8) + len <= 64 */
    if (at % 8 + len <= 64)
      ASSERT_EQ(((uintptr_t)p + at) / 64, ((uintptr_t)p + at + len - 1) / 64);
    for (size_t j = 0; j < size; j++)
      ASSERT_EQ(p[j], 0); /* zeroed, and not given out before */
    memset(p, 0xA5, size);
    if (prev != NULL && p > prev && p < prev + 8192)
      ASSERT(p >= prev + prev_size);
    prev = p;
    prev_size = size;
  }
  char *big = core_arena_alloc_fit(&a, 200, 10, 100);
  ASSERT_EQ((uintptr_t)big % 8, 0);
  core_arena_free(&a);
}

/* A UDP socket on 127.0.0.1:port (0: any) in a SO_REUSEPORT group. */
static int reuseport_udp(uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  ASSERT(fd >= 0);
  int one = 1;
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  return fd;
}

static size_t drain(int fd) {
  char buf[64];
  size_t n = 0;
  while (n < 1000 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
    n++;
  return n;
}

/* The plan refuses more workers than CPUs; with one, each datagram goes to
 * the group's socket of the worker on the CPU that sent it (loopback
 * receives a packet on its sender's CPU). */
static void test_affinity_steer(void) {
  cpu_set_t mine;
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  unsigned n_cpus = 0;
  ASSERT_EQ(core_affinity_plan((unsigned)CPU_COUNT(&mine) + 1, &n_cpus),
            -ERANGE);
  ASSERT_EQ(n_cpus, (unsigned)CPU_COUNT(&mine));
  ASSERT_EQ(core_affinity_cpu(0), -1);   /* refused: no plan */
  ASSERT_EQ(core_affinity_steer(-1), 0); /* no plan: nothing to do */
  if (n_cpus < 2) {
    printf("# skip steering: this process may use one CPU\n");
    return;
  }
  ASSERT_EQ(core_affinity_plan(2, &n_cpus), 0);
  ASSERT(core_affinity_cpu(0) < core_affinity_cpu(1));
  ASSERT(CPU_ISSET(core_affinity_cpu(1), &mine));

  int group[2];
  group[0] = reuseport_udp(0);
  struct sockaddr_in to;
  socklen_t len = sizeof to;
  ASSERT_EQ(getsockname(group[0], (struct sockaddr *)&to, &len), 0);
  group[1] = reuseport_udp(ntohs(to.sin_port));
  for (size_t i = 0; i < 2; i++)
    ASSERT_EQ(core_affinity_steer(group[i]), 0);
  int client = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT(client >= 0);
  for (unsigned w = 0; w < 2; w++) {
    ASSERT_EQ(core_affinity_pin(w), 0);
    for (int i = 0; i < 16; i++)
      ASSERT_EQ(sendto(client, "q", 1, 0, (struct sockaddr *)&to, sizeof to),
                1);
    ASSERT_EQ(drain(group[w]), 16);
    ASSERT_EQ(drain(group[1 - w]), 0);
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof mine, &mine), 0);
  close(client);
  close(group[0]);
  close(group[1]);
}

int main(void) {
  RUN_TEST(test_ip_parse);
  RUN_TEST(test_hostport_parse);
  RUN_TEST(test_prefixes);
  RUN_TEST(test_names);
  RUN_TEST(test_units);
  RUN_TEST(test_arena_fit);
  RUN_TEST(test_affinity_steer);
  return 0;
}
