/* SPDX-License-Identifier: MIT */
/* test_listen_plan.c -- listener plans: pairing by address, all or nothing */
#include "proxy/proxy.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_storage loopback(uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ss;
}

/* A loopback socket bound to a free port; listening when listen_too. */
static int bound_socket(uint16_t *port, bool listen_too) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(fd >= 0);
  struct sockaddr_storage ss = loopback(0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  if (listen_too)
    ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof ss;
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

static uint16_t free_port(void) {
  uint16_t port;
  close(bound_socket(&port, false));
  return port;
}

static bool accepts(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_storage ss = loopback(port);
  bool ok =
      connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) == 0;
  close(fd);
  return ok;
}

static int open_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  ASSERT(dir != NULL);
  int n = 0;
  while (readdir(dir) != NULL)
    n++;
  closedir(dir);
  return n;
}

static reg_listener_t listener(const char *name, reg_protocol_t protocol,
                               uint16_t port) {
  reg_listener_t l = {.name = (char *)name, .protocol = protocol};
  l.addr = loopback(port);
  return l;
}

static void test_same_set_needs_no_plan(void) {
  reg_listener_t set[] = {listener("http", REG_PROTOCOL_HTTP, 8080)};
  reg_config_t next = {.listeners = set, .n_listeners = 1};
  px_listen_plan_t *plan = (px_listen_plan_t *)&next; /* must become NULL */
  ASSERT_EQ(px_listen_plan_new(set, 1, &next, 2, &plan), 0);
  ASSERT(plan == NULL);
}

static void test_pairs_by_address(void) {
  uint16_t p1 = free_port(), p2 = free_port(), p3 = free_port();
  uint16_t p4 = free_port();
  reg_listener_t from[] = {listener("a", REG_PROTOCOL_HTTP, p1),
                           listener("b", REG_PROTOCOL_HTTP, p2),
                           listener("c", REG_PROTOCOL_HTTP, p3)};
  /* b changes protocol in place, d is new, a moves in the list, c goes. */
  reg_listener_t to[] = {listener("b", REG_PROTOCOL_TLS, p2),
                         listener("d", REG_PROTOCOL_HTTP, p4),
                         listener("a", REG_PROTOCOL_HTTP, p1)};
  reg_config_t next = {.listeners = to, .n_listeners = 3};
  int fds_before = open_fds();
  px_listen_plan_t *plan;
  ASSERT_EQ(px_listen_plan_new(from, 3, &next, 2, &plan), 0);
  ASSERT(plan != NULL);
  size_t n, added, removed, changed;
  const reg_listener_t *ls =
      px_listen_plan_listeners(plan, &n, &added, &removed, &changed);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(added, 1);
  ASSERT_EQ(removed, 1);
  ASSERT_EQ(changed, 1);
  ASSERT_STR_EQ(ls[1].name, "d");
  ASSERT(ls[1].name != to[1].name); /* the plan's own copy */
  /* Only the new address is opened: one socket per worker, listening. */
  ASSERT_EQ(open_fds(), fds_before + 2);
  ASSERT(accepts(p4));
  ASSERT(!accepts(p2));
  px_listen_plan_hold(plan);
  px_listen_plan_release(plan);
  ASSERT_EQ(open_fds(), fds_before + 2);
  /* The last reference closes the sockets no worker took. */
  px_listen_plan_release(plan);
  ASSERT_EQ(open_fds(), fds_before);
  ASSERT(!accepts(p4));
}

static void test_address_in_use_opens_nothing(void) {
  uint16_t kept = free_port(), fresh = free_port(), busy;
  int squatter = bound_socket(&busy, true);
  reg_listener_t from[] = {listener("http", REG_PROTOCOL_HTTP, kept)};
  reg_listener_t to[] = {listener("http", REG_PROTOCOL_HTTP, kept),
                         listener("fresh", REG_PROTOCOL_HTTP, fresh),
                         listener("busy", REG_PROTOCOL_TLS, busy)};
  reg_config_t next = {.listeners = to, .n_listeners = 3};
  int fds_before = open_fds();
  px_listen_plan_t *plan = NULL;
  ASSERT_EQ(px_listen_plan_new(from, 1, &next, 4, &plan), UV_EADDRINUSE);
  ASSERT(plan == NULL);
  /* fresh's four sockets were opened before busy failed: all closed. */
  ASSERT_EQ(open_fds(), fds_before);
  ASSERT(!accepts(fresh));
  close(squatter);
}

int main(void) {
  RUN_TEST(test_same_set_needs_no_plan);
  RUN_TEST(test_pairs_by_address);
  RUN_TEST(test_address_in_use_opens_nothing);
  return 0;
}
