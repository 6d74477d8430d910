/* SPDX-License-Identifier: MIT */
/* test_dns_golden.c -- golden DNS answers: tests/golden/dns/zone.yaml plus
 * each CASE.query (hex) must give exactly the bytes of CASE.answer */
#include "dns/dns.h"
#include "dns/dns_int.h"
#include "tests/test.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>

#define MAX_MSG 65535
#define GOLDEN_SERIAL 2024010101u

/* Hex bytes, whitespace between them, '#' comments to the end of a line.
 * Returns the byte count. */
static size_t hex_read(const char *path, uint8_t *out, size_t cap) {
  FILE *f = fopen(path, "r");
  size_t n = 0;
  int c, hi = -1;
  ASSERT(f != NULL);
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') {
      while ((c = fgetc(f)) != EOF && c != '\n')
        ;
      continue;
    }
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (v < 0) {
      ASSERT(hi < 0); /* no half bytes */
      continue;
    }
    if (hi < 0) {
      hi = v;
      continue;
    }
    ASSERT(n < cap);
    out[n++] = (uint8_t)(hi << 4 | v);
    hi = -1;
  }
  ASSERT(hi < 0);
  fclose(f);
  return n;
}

static void hex_write(const char *path, const char *name, const uint8_t *b,
                      size_t n) {
  FILE *f = fopen(path, "w");
  ASSERT(f != NULL);
  fprintf(f, "# %s: the answer (written by DDPORT_GOLDEN_UPDATE=1)\n", name);
  for (size_t i = 0; i < n; i++)
    fprintf(f, "%02x%s", b[i], i % 16 == 15 || i + 1 == n ? "\n" : " ");
  fclose(f);
}

static void hex_print(const char *what, const uint8_t *b, size_t n) {
  fprintf(stderr, "%s (%zu bytes):", what, n);
  for (size_t i = 0; i < n; i++)
    fprintf(stderr, "%s%02x", i % 16 ? " " : "\n  ", b[i]);
  fputc('\n', stderr);
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_query(const struct dirent *e) {
  size_t n = strlen(e->d_name);
  return n > 6 && strcmp(e->d_name + n - 6, ".query") == 0;
}

int main(int argc, char **argv) {
  char dir[2048], path[2560];
  static uint8_t query[MAX_MSG], answer[MAX_MSG], expected[MAX_MSG];
  const char *source = getenv("DDPORT_SOURCE");
  bool update = getenv("DDPORT_GOLDEN_UPDATE") != NULL;
  (void)argc;
  (void)argv;

  core_log_set_level(CORE_LOG_ERROR); /* refused transfers log warnings */
  snprintf(dir, sizeof dir, "%s/tests/golden/dns", source ? source : ".");
  snprintf(path, sizeof path, "%s/zone.yaml", dir);
  reg_config_t *config = NULL;
  ASSERT_EQ(reg_config_load(path, stderr, &config), 0);
  /* The serial is the load time; golden bytes need a fixed one. */
  for (size_t i = 0; i < config->dns.n_zones; i++)
    config->dns.zones[i].serial = GOLDEN_SERIAL;
  reg_t *reg = reg_new(config);

  struct dirent **names;
  int n = scandir(dir, &names, is_query, by_name);
  ASSERT(n > 0);
  int failed = 0;
  for (int i = 0; i < n; i++) {
    const char *name = names[i]->d_name;
    size_t base = strlen(name) - 6;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t qlen = hex_read(path, query, sizeof query);

    struct sockaddr_in peer = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    static const uint8_t cookie_secret[16] = "golden-cookie-k";
    dns_request_t req = {.config = config,
                         .cookie_secret = cookie_secret,
                         .reg = reg,
                         .peer = (const struct sockaddr *)&peer,
                         .tcp = strncmp(name, "tcp-", 4) == 0,
                         .now = 1700000000,
                         .msg = query,
                         .len = qlen};
    dns_xfr_t *xfr = NULL;
    size_t alen = dns_respond(&req, answer, sizeof answer, &xfr);
    ASSERT(xfr == NULL); /* transfers are tested against real secondaries */

    snprintf(path, sizeof path, "%s/%.*s.answer", dir, (int)base, name);
    if (update) {
      hex_write(path, name, answer, alen);
      printf("ok - %.*s (written)\n", (int)base, name);
    } else {
      size_t elen = hex_read(path, expected, sizeof expected);
      if (elen != alen || memcmp(expected, answer, alen) != 0) {
        fprintf(stderr, "golden %.*s differs\n", (int)base, name);
        hex_print("expected", expected, elen);
        hex_print("got", answer, alen);
        failed++;
        printf("not ok - %.*s\n", (int)base, name);
      } else {
        printf("ok - %.*s\n", (int)base, name);
      }
    }
    free(names[i]);
  }
  free(names);
  reg_free(reg);
  reg_config_free(config);
  return failed ? 1 : 0;
}
