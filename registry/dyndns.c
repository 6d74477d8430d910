/* SPDX-License-Identifier: MIT */
/* dyndns.c -- the dyndns2 update request parser and its replies */
#include "registry/update_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- URL decoding ---------------------------------------------------------
 * A cursor over a raw query component that yields decoded bytes, so values
 * of any length are decoded without a buffer of that length. */

enum { DEC_END = -1, DEC_BAD = -2 };

typedef struct decoder {
  const char *p, *end;
} decoder_t;

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The next decoded byte, DEC_END, or DEC_BAD for a broken escape or a
 * control byte (no value of ours may hold one, decoded or not). */
static int next_byte(decoder_t *d) {
  if (d->p >= d->end)
    return DEC_END;
  unsigned char c = (unsigned char)*d->p++;
  if (c == '+')
    return ' ';
  if (c == '%') {
    if (d->end - d->p < 2)
      return DEC_BAD;
    int hi = hex_value(d->p[0]), lo = hex_value(d->p[1]);
    if (hi < 0 || lo < 0)
      return DEC_BAD;
    d->p += 2;
    c = (unsigned char)(hi << 4 | lo);
  }
  if (c < 0x20 || c == 0x7f)
    return DEC_BAD;
  return c;
}

/* Decodes all of [p, end) into buf (NUL-terminated). Returns the decoded
 * length, -EINVAL for DEC_BAD, or -ENOSPC when it needs more than cap - 1
 * bytes (the rest is still checked for bad escapes). */
static int decode_into(const char *p, const char *end, char *buf, size_t cap) {
  decoder_t d = {p, end};
  size_t n = 0;
  bool overflow = false;
  int c;
  while ((c = next_byte(&d)) >= 0) {
    if (n + 1 < cap)
      buf[n++] = (char)c;
    else
      overflow = true;
  }
  buf[n] = '\0';
  if (c == DEC_BAD)
    return -EINVAL;
  return overflow ? -ENOSPC : (int)n;
}

/* ---- problems, kept by class so the reported one does not depend on the
 * order of the parameters ---------------------------------------------- */

typedef struct problems {
  const char *why[REG_DYNDNS_BAD_OFFLINE + 1]; /* indexed by status */
} problems_t;

static void note(problems_t *pr, reg_dyndns_status_t status, const char *why) {
  if (pr->why[status] == NULL)
    pr->why[status] = why;
}

/* ---- parameters ------------------------------------------------------- */

static void parse_hostnames(const char *p, const char *end,
                            reg_dyndns_request_t *out, problems_t *pr) {
  decoder_t d = {p, end};
  char elem[CORE_NAME_MAX + 2];
  size_t len = 0, count = 0;
  bool too_long = false;
  if (p == end) {
    note(pr, REG_DYNDNS_NO_HOSTNAME, "empty hostname");
    return;
  }
  for (;;) {
    int c = next_byte(&d);
    if (c == DEC_BAD) {
      note(pr, REG_DYNDNS_INVALID, "bad %-escape in hostname");
      return;
    }
    if (c == ',' || c == DEC_END) {
      count++;
      if (count <= REG_DYNDNS_MAX_HOSTS) {
        reg_dyndns_host_t *h = &out->hosts[out->n_hosts++];
        int n =
            too_long ? -EINVAL : core_name_normalise(elem, len, h->name, false);
        /* dyndns2 wants fully qualified names: at least one dot. */
        if (n > 0 && memchr(h->name, '.', (size_t)n) != NULL) {
          h->len = (size_t)n;
          h->valid = true;
        } else {
          h->name[0] = '\0';
          h->len = 0;
          h->valid = false;
        }
      }
      len = 0;
      too_long = false;
      if (c == DEC_END)
        break;
      continue;
    }
    if (len < sizeof elem)
      elem[len++] = (char)c;
    else
      too_long = true;
  }
  if (count > REG_DYNDNS_MAX_HOSTS)
    note(pr, REG_DYNDNS_TOO_MANY_HOSTS, "more than 20 hostnames");
}

/* An IPv4-mapped IPv6 address is the IPv4 address it maps. */
static void unmap(core_ip_t *ip) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (ip->family == AF_INET6 && memcmp(ip->bytes, prefix, 12) == 0) {
    memmove(ip->bytes, ip->bytes + 12, 4);
    memset(ip->bytes + 4, 0, 12);
    ip->family = AF_INET;
  }
}

/* myip: one or two addresses separated by a comma, at most one per family.
 */
static void parse_myip(const char *p, const char *end, core_ip_t *v4,
                       core_ip_t *v6, problems_t *pr) {
  char buf[2 * INET6_ADDRSTRLEN + 2];
  int n = decode_into(p, end, buf, sizeof buf);
  if (n == -EINVAL) {
    note(pr, REG_DYNDNS_INVALID, "bad %-escape in myip");
    return;
  }
  if (n < 0) {
    note(pr, REG_DYNDNS_BAD_ADDRESS, "myip is too long for two addresses");
    return;
  }
  if (n == 0)
    return;
  char *comma = strchr(buf, ',');
  char *parts[2] = {buf, NULL};
  if (comma != NULL) {
    *comma = '\0';
    parts[1] = comma + 1;
    if (strchr(parts[1], ',') != NULL) {
      note(pr, REG_DYNDNS_BAD_ADDRESS, "myip holds more than two addresses");
      return;
    }
  }
  for (size_t i = 0; i < 2 && parts[i] != NULL; i++) {
    core_ip_t ip;
    if (core_ip_parse(parts[i], &ip) != 0) {
      note(pr, REG_DYNDNS_BAD_ADDRESS, "myip is not an IP address");
      return;
    }
    unmap(&ip);
    core_ip_t *slot = ip.family == AF_INET ? v4 : v6;
    if (slot->family != 0) {
      note(pr, REG_DYNDNS_BAD_ADDRESS,
           "myip holds two addresses of one family");
      return;
    }
    *slot = ip;
  }
}

static void parse_myipv6(const char *p, const char *end, core_ip_t *v6,
                         problems_t *pr) {
  char buf[INET6_ADDRSTRLEN + 1];
  int n = decode_into(p, end, buf, sizeof buf);
  if (n == -EINVAL) {
    note(pr, REG_DYNDNS_INVALID, "bad %-escape in myipv6");
    return;
  }
  if (n == 0)
    return;
  core_ip_t ip;
  if (n < 0 || core_ip_parse(buf, &ip) != 0) {
    note(pr, REG_DYNDNS_BAD_ADDRESS, "myipv6 is not an IPv6 address");
    return;
  }
  unmap(&ip);
  if (ip.family != AF_INET6) {
    note(pr, REG_DYNDNS_BAD_ADDRESS, "myipv6 is not an IPv6 address");
    return;
  }
  *v6 = ip;
}

static bool valid_listener_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

static void parse_port(const char *listener, const char *p, const char *end,
                       reg_dyndns_request_t *out, problems_t *pr) {
  char buf[8];
  int n = decode_into(p, end, buf, sizeof buf);
  if (n == -EINVAL) {
    note(pr, REG_DYNDNS_INVALID, "bad %-escape in a port");
    return;
  }
  if (n == 0)
    return;
  unsigned long value = 0;
  bool ok = n > 0 && n <= 5;
  for (int i = 0; ok && i < n; i++) {
    if (buf[i] < '0' || buf[i] > '9')
      ok = false;
    else
      value = value * 10 + (unsigned long)(buf[i] - '0');
  }
  if (!ok || value == 0 || value > 65535) {
    note(pr, REG_DYNDNS_BAD_PORT, "a port is not a number from 1 to 65535");
    return;
  }
  for (size_t i = 0; i < out->n_ports; i++) {
    if (strcmp(out->ports[i].listener, listener) == 0) {
      note(pr, REG_DYNDNS_INVALID, "a listener's port is given twice");
      return;
    }
  }
  if (out->n_ports == REG_UPDATE_MAX_PORTS) {
    note(pr, REG_DYNDNS_BAD_PORT, "more ports than one update may set");
    return;
  }
  reg_listener_port_t *lp = &out->ports[out->n_ports++];
  snprintf(lp->listener, sizeof lp->listener, "%s", listener);
  lp->port = (uint16_t)value;
}

static void parse_offline(const char *p, const char *end,
                          reg_dyndns_request_t *out, problems_t *pr) {
  char buf[8];
  int n = decode_into(p, end, buf, sizeof buf);
  if (n == -EINVAL) {
    note(pr, REG_DYNDNS_INVALID, "bad %-escape in offline");
    return;
  }
  if (n == 0)
    return;
  if (n > 0 && strcasecmp(buf, "yes") == 0)
    out->offline = true;
  else if (n > 0 && strcasecmp(buf, "no") == 0)
    out->offline = false;
  else
    note(pr, REG_DYNDNS_BAD_OFFLINE, "offline is neither yes nor no");
}

enum {
  SEEN_HOSTNAME = 1,
  SEEN_MYIP = 2,
  SEEN_MYIPV6 = 4,
  SEEN_OFFLINE = 8,
};

static bool first_time(unsigned *seen, unsigned bit, problems_t *pr) {
  if (*seen & bit) {
    note(pr, REG_DYNDNS_INVALID, "a parameter is given twice");
    return false;
  }
  *seen |= bit;
  return true;
}

static void parse_query(const char *p, const char *end,
                        reg_dyndns_request_t *out, problems_t *pr) {
  unsigned seen = 0;
  core_ip_t v4 = {0}, v6_myip = {0}, v6 = {0};
  while (p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *pair_end = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(pair_end - p));
    const char *key_end = eq ? eq : pair_end;
    const char *value = eq ? eq + 1 : pair_end;

    char key[5 + REG_LISTENER_NAME_MAX + 2];
    int klen = decode_into(p, key_end, key, sizeof key);
    if (klen == -EINVAL) {
      note(pr, REG_DYNDNS_INVALID, "bad %-escape in a parameter name");
    } else if (klen == -ENOSPC) {
      if (strncasecmp(key, "port_", 5) == 0)
        note(pr, REG_DYNDNS_BAD_PORT, "a listener name is too long");
      /* Any other long name is a parameter we do not know: ignored, but
       * its value must still decode. */
      char scratch[1];
      if (decode_into(value, pair_end, scratch, sizeof scratch) == -EINVAL)
        note(pr, REG_DYNDNS_INVALID, "bad %-escape in a value");
    } else if (strcasecmp(key, "hostname") == 0) {
      if (first_time(&seen, SEEN_HOSTNAME, pr))
        parse_hostnames(value, pair_end, out, pr);
    } else if (strcasecmp(key, "myip") == 0) {
      if (first_time(&seen, SEEN_MYIP, pr))
        parse_myip(value, pair_end, &v4, &v6_myip, pr);
    } else if (strcasecmp(key, "myipv6") == 0) {
      if (first_time(&seen, SEEN_MYIPV6, pr))
        parse_myipv6(value, pair_end, &v6, pr);
    } else if (strcasecmp(key, "offline") == 0) {
      if (first_time(&seen, SEEN_OFFLINE, pr))
        parse_offline(value, pair_end, out, pr);
    } else if (strcasecmp(key, "port") == 0) {
      parse_port("http", value, pair_end, out, pr);
    } else if (strncasecmp(key, "port_", 5) == 0) {
      char *name = key + 5;
      bool ok = *name != '\0' && strlen(name) <= REG_LISTENER_NAME_MAX;
      for (char *c = name; *c; c++) {
        if (*c >= 'A' && *c <= 'Z')
          *c = (char)(*c - 'A' + 'a');
        ok = ok && valid_listener_char(*c);
      }
      if (ok)
        parse_port(name, value, pair_end, out, pr);
      else
        note(pr, REG_DYNDNS_BAD_PORT, "port_<listener> names no listener");
    } else {
      /* system, wildcard, mx, backmx and anything else: ignored, but its
       * value must still decode. */
      char scratch[1];
      if (decode_into(value, pair_end, scratch, sizeof scratch) == -EINVAL)
        note(pr, REG_DYNDNS_INVALID, "bad %-escape in a value");
    }
    p = amp ? amp + 1 : end;
  }

  if (!(seen & SEEN_HOSTNAME))
    note(pr, REG_DYNDNS_NO_HOSTNAME, "no hostname");
  if (v6.family != 0 && v6_myip.family != 0 &&
      memcmp(v6.bytes, v6_myip.bytes, 16) != 0)
    note(pr, REG_DYNDNS_BAD_ADDRESS, "myip and myipv6 name two IPv6 addresses");
  if (v6.family == 0)
    v6 = v6_myip;
  if (v4.family != 0) {
    out->has_ipv4 = true;
    out->ipv4 = v4;
  }
  if (v6.family != 0) {
    out->has_ipv6 = true;
    out->ipv6 = v6;
  }
}

/* ---- the request -------------------------------------------------------- */

static bool has_prefix_nocase(const char *p, const char *end,
                              const char *prefix) {
  size_t n = strlen(prefix);
  return (size_t)(end - p) >= n && strncasecmp(p, prefix, n) == 0;
}

reg_dyndns_status_t reg_dyndns_parse(core_str_t target,
                                     const core_str_t *authorization,
                                     const core_str_t *user_agent,
                                     reg_dyndns_request_t *out) {
  memset(out, 0, sizeof *out);
  problems_t pr = {{NULL}};

  if (authorization != NULL)
    reg_dyndns_parse_basic(*authorization, out);
  if (user_agent != NULL)
    for (size_t i = 0; i < user_agent->len && !out->has_agent; i++)
      out->has_agent = user_agent->ptr[i] != ' ' && user_agent->ptr[i] != '\t';

  const char *p = target.ptr, *end = target.ptr + target.len;
  /* Absolute form (RFC 9112 3.2.2): skip scheme and authority. */
  if (has_prefix_nocase(p, end, "http://") ||
      has_prefix_nocase(p, end, "https://")) {
    p = (const char *)memchr(p, ':', (size_t)(end - p)) + 3;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
      p++;
  }
  const char *hash = memchr(p, '#', (size_t)(end - p));
  if (hash != NULL)
    end = hash;
  const char *qmark = memchr(p, '?', (size_t)(end - p));
  const char *path_end = qmark ? qmark : end;
  static const char path[] = "/nic/update";
  if ((size_t)(path_end - p) != sizeof path - 1 ||
      memcmp(p, path, sizeof path - 1) != 0) {
    out->status = REG_DYNDNS_NOT_FOUND;
    out->why = "the path is not /nic/update";
    return out->status;
  }
  if (qmark != NULL)
    parse_query(qmark + 1, end, out, &pr);
  else
    note(&pr, REG_DYNDNS_NO_HOSTNAME, "no hostname");

  out->status = REG_DYNDNS_COMPLETE;
  for (int s = REG_DYNDNS_INVALID; s <= REG_DYNDNS_BAD_OFFLINE; s++) {
    if (pr.why[s] != NULL) {
      out->status = (reg_dyndns_status_t)s;
      out->why = pr.why[s];
      break;
    }
  }
  return out->status;
}

/* ---- Basic credentials -------------------------------------------------- */

static int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Decodes standard base64 with optional '=' padding into out. Returns the
 * decoded length, or -EINVAL (bad character, bad padding, too long). */
static int base64_decode(const char *p, size_t len, uint8_t *out, size_t cap) {
  while (len > 0 && p[len - 1] == '=')
    len--;
  if (len % 4 == 1)
    return -EINVAL;
  size_t n = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = base64_value((unsigned char)p[i]);
    if (v < 0)
      return -EINVAL;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n == cap)
        return -EINVAL;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  /* Leftover bits must be zero, so each credential has one encoding. */
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return -EINVAL;
  return (int)n;
}

reg_dyndns_auth_t reg_dyndns_parse_basic(core_str_t value,
                                         reg_dyndns_request_t *out) {
  const char *p = value.ptr, *end = value.ptr + value.len;
  out->auth = REG_DYNDNS_AUTH_MALFORMED;
  out->user[0] = out->secret[0] = '\0';
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  if (!has_prefix_nocase(p, end, "basic") || end - p < 6 ||
      (p[5] != ' ' && p[5] != '\t'))
    return out->auth;
  p += 5;
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;

  uint8_t raw[REG_DYNDNS_USER_MAX + 1 + REG_DYNDNS_SECRET_MAX];
  int n = base64_decode(p, (size_t)(end - p), raw, sizeof raw);
  if (n <= 0)
    goto done;
  uint8_t *colon = memchr(raw, ':', (size_t)n);
  if (colon == NULL || colon == raw)
    goto done;
  size_t user_len = (size_t)(colon - raw);
  size_t secret_len = (size_t)n - user_len - 1;
  if (user_len > REG_DYNDNS_USER_MAX || secret_len > REG_DYNDNS_SECRET_MAX)
    goto done;
  for (int i = 0; i < n; i++)
    if (raw[i] < 0x20 || raw[i] == 0x7f)
      goto done;
  memcpy(out->user, raw, user_len);
  out->user[user_len] = '\0';
  memcpy(out->secret, colon + 1, secret_len);
  out->secret[secret_len] = '\0';
  out->auth = REG_DYNDNS_AUTH_BASIC;
done:
  explicit_bzero(raw, sizeof raw);
  return out->auth;
}

void reg_dyndns_clear(reg_dyndns_request_t *req) {
  explicit_bzero(req->secret, sizeof req->secret);
}

/* ---- replies ------------------------------------------------------------- */

const char *reg_dyndns_code_name(reg_dyndns_code_t code) {
  switch (code) {
  case REG_DYNDNS_GOOD:
    return "good";
  case REG_DYNDNS_NOCHG:
    return "nochg";
  case REG_DYNDNS_NOHOST:
    return "nohost";
  case REG_DYNDNS_NOTFQDN:
    return "notfqdn";
  case REG_DYNDNS_NUMHOST:
    return "numhost";
  case REG_DYNDNS_ABUSE:
    return "abuse";
  case REG_DYNDNS_DNSERR:
    return "dnserr";
  case REG_DYNDNS_911:
    return "911";
  case REG_DYNDNS_BADAUTH:
    return "badauth";
  case REG_DYNDNS_BADAGENT:
    return "badagent";
  }
  return NULL;
}

static const char *reason_phrase(unsigned status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  }
  return NULL;
}

/* Appends to a bounded buffer; remembers overflow instead of failing at
 * every call site. */
typedef struct out_buf {
  char *ptr;
  size_t len, cap;
  bool overflow;
} out_buf_t;

static void put(out_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(out_buf_t *b, const char *fmt, ...) {
  if (b->overflow)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->ptr + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= b->cap - b->len)
    b->overflow = true;
  else
    b->len += (size_t)n;
}

static int render_body(const reg_dyndns_reply_t *reply, out_buf_t *b) {
  if (reply->n_lines == 0) {
    put(b, "%s\n", reason_phrase(reply->http_status));
    return 0;
  }
  for (size_t i = 0; i < reply->n_lines; i++) {
    const reg_dyndns_line_t *line = &reply->lines[i];
    const char *word = reg_dyndns_code_name(line->code);
    if (word == NULL || line->n_addrs > 2)
      return -EINVAL;
    put(b, "%s", word);
    if (line->code == REG_DYNDNS_GOOD || line->code == REG_DYNDNS_NOCHG) {
      for (size_t k = 0; k < line->n_addrs; k++) {
        char ip[INET6_ADDRSTRLEN];
        put(b, "%c%s", k == 0 ? ' ' : ',',
            core_ip_format(&line->addrs[k], ip, sizeof ip));
      }
    }
    put(b, "\n");
  }
  return 0;
}

int reg_dyndns_reply_render(const reg_dyndns_reply_t *reply, char *buf,
                            size_t cap) {
  const char *phrase = reason_phrase(reply->http_status);
  if (phrase == NULL)
    return -EINVAL;
  /* The body first, at the end of buf, to learn its length. */
  char body[REG_DYNDNS_REPLY_MAX];
  out_buf_t bb = {body, 0, sizeof body, false};
  if (render_body(reply, &bb) != 0)
    return -EINVAL;
  if (bb.overflow)
    return -ENOSPC;

  out_buf_t b = {buf, 0, cap, cap == 0};
  put(&b, "HTTP/1.1 %u %s\r\n", reply->http_status, phrase);
  put(&b, "Content-Type: text/plain; charset=utf-8\r\n");
  put(&b, "Content-Length: %zu\r\n", bb.len);
  put(&b, "Cache-Control: no-store\r\n");
  if (reply->http_status == 401)
    put(&b, "WWW-Authenticate: Basic realm=\"ddport\"\r\n");
  if (reply->http_status == 405)
    put(&b, "Allow: GET, POST\r\n");
  if (reply->close)
    put(&b, "Connection: close\r\n");
  put(&b, "\r\n");
  if (!b.overflow && cap - b.len >= bb.len) {
    memcpy(b.ptr + b.len, body, bb.len);
    b.len += bb.len;
  } else {
    b.overflow = true;
  }
  return b.overflow ? -ENOSPC : (int)b.len;
}

static bool early(reg_dyndns_reply_t *reply, reg_dyndns_line_t *line,
                  unsigned status, reg_dyndns_code_t code) {
  memset(line, 0, sizeof *line);
  line->code = code;
  reply->http_status = status;
  reply->lines = line;
  reply->n_lines = 1;
  reply->close = false;
  return true;
}

bool reg_dyndns_early_reply(const reg_dyndns_request_t *req,
                            reg_dyndns_reply_t *reply,
                            reg_dyndns_line_t *line) {
  if (req->status == REG_DYNDNS_NOT_FOUND) {
    memset(reply, 0, sizeof *reply);
    reply->http_status = 404;
    return true;
  }
  if (req->auth == REG_DYNDNS_AUTH_NONE)
    return early(reply, line, 401, REG_DYNDNS_BADAUTH);
  if (req->status == REG_DYNDNS_INVALID)
    return early(reply, line, 400, REG_DYNDNS_DNSERR);
  if (!req->has_agent)
    return early(reply, line, 200, REG_DYNDNS_BADAGENT);
  if (req->auth == REG_DYNDNS_AUTH_MALFORMED)
    return early(reply, line, 200, REG_DYNDNS_BADAUTH);
  if (req->status == REG_DYNDNS_NO_HOSTNAME)
    return early(reply, line, 200, REG_DYNDNS_NOTFQDN);
  if (req->status == REG_DYNDNS_TOO_MANY_HOSTS)
    return early(reply, line, 200, REG_DYNDNS_NUMHOST);
  return false;
}
