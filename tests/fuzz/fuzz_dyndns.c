/* SPDX-License-Identifier: MIT */
/* fuzz_dyndns.c -- fuzz target for the dyndns2 request parser and replies */
#include "registry/update_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool listener_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > REG_LISTENER_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
          s[i] == '_' || s[i] == '-'))
      return false;
  return true;
}

static void check_request(const reg_dyndns_request_t *r) {
  if (r->status > REG_DYNDNS_BAD_OFFLINE)
    abort();
  if ((r->status == REG_DYNDNS_COMPLETE) != (r->why == NULL))
    abort();
  if (r->n_hosts > REG_DYNDNS_MAX_HOSTS || r->n_ports > REG_UPDATE_MAX_PORTS)
    abort();
  bool usable =
      r->status == REG_DYNDNS_COMPLETE || r->status >= REG_DYNDNS_BAD_ADDRESS;
  if (usable && r->n_hosts == 0)
    abort();
  for (size_t i = 0; i < r->n_hosts; i++) {
    const reg_dyndns_host_t *h = &r->hosts[i];
    if (h->len != strlen(h->name) || h->valid != (h->len > 0))
      abort();
    /* A valid name is already normalised and fully qualified. */
    char again[CORE_NAME_MAX + 1];
    if (h->valid &&
        (core_name_normalise(h->name, h->len, again, false) != (int)h->len ||
         strcmp(again, h->name) != 0 || strchr(h->name, '.') == NULL))
      abort();
  }
  if ((r->has_ipv4 && r->ipv4.family != AF_INET) ||
      (r->has_ipv6 && r->ipv6.family != AF_INET6))
    abort();
  for (size_t i = 0; i < r->n_ports; i++)
    if (r->ports[i].port == 0 || !listener_ok(r->ports[i].listener))
      abort();
  if (r->auth == REG_DYNDNS_AUTH_BASIC) {
    if (r->user[0] == '\0')
      abort();
    for (const char *p = r->user; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == ':')
        abort();
  } else if (r->user[0] != '\0' || r->secret[0] != '\0') {
    abort();
  }
}

/* Renders the reply the server would send and checks its framing. */
static void check_reply(const reg_dyndns_request_t *r) {
  reg_dyndns_line_t early_line, lines[REG_DYNDNS_MAX_HOSTS];
  reg_dyndns_reply_t reply;
  if (!reg_dyndns_early_reply(r, &reply, &early_line)) {
    for (size_t i = 0; i < r->n_hosts; i++) {
      lines[i] = (reg_dyndns_line_t){.code = REG_DYNDNS_GOOD};
      if (r->has_ipv4)
        lines[i].addrs[lines[i].n_addrs++] = r->ipv4;
      if (r->has_ipv6)
        lines[i].addrs[lines[i].n_addrs++] = r->ipv6;
      if (!r->hosts[i].valid)
        lines[i].code = REG_DYNDNS_NOTFQDN;
      else if (r->status != REG_DYNDNS_COMPLETE)
        lines[i].code = REG_DYNDNS_DNSERR;
    }
    reply = (reg_dyndns_reply_t){200, lines, r->n_hosts, true};
  }
  char buf[REG_DYNDNS_REPLY_MAX + 1];
  int n = reg_dyndns_reply_render(&reply, buf, sizeof buf - 1);
  if (n <= 0)
    abort();
  buf[n] = '\0';
  const char *cl = strstr(buf, "\r\nContent-Length: ");
  const char *body = strstr(buf, "\r\n\r\n");
  if (cl == NULL || body == NULL ||
      strtoul(cl + 18, NULL, 10) != (size_t)(buf + n - body - 4) ||
      strstr(buf, "chunked") != NULL)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Line 1: the request target; line 2, if any: Authorization; line 3, if
   * any: User-Agent. */
  const char *p = (const char *)data, *end = p + size;
  core_str_t fields[3];
  size_t n = 0;
  while (n < 3) {
    const char *nl = n < 2 ? memchr(p, '\n', (size_t)(end - p)) : NULL;
    const char *stop = nl ? nl : end;
    fields[n++] = (core_str_t){p, (size_t)(stop - p)};
    if (nl == NULL)
      break;
    p = nl + 1;
  }
  reg_dyndns_request_t r, again;
  reg_dyndns_parse(fields[0], n > 1 ? &fields[1] : NULL,
                   n > 2 ? &fields[2] : NULL, &r);
  check_request(&r);
  check_reply(&r);
  /* Pure: the same bytes give the same request. */
  reg_dyndns_parse(fields[0], n > 1 ? &fields[1] : NULL,
                   n > 2 ? &fields[2] : NULL, &again);
  if (memcmp(&r, &again, sizeof r) != 0)
    abort();
  return 0;
}
