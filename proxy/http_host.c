/* SPDX-License-Identifier: MIT */
/* http_host.c -- find the host an HTTP request is for, without allocating */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <llhttp.h>
#include <string.h>
#include <strings.h>

typedef struct head_scan {
  core_str_t field; /* current header field, accumulated */
  core_str_t value;
  core_str_t host;
  core_str_t url;
  unsigned n_host;
  bool in_value;
  bool complete;
} head_scan_t;

/* llhttp reports a span in pieces only where a buffer ends; we always hand
 * it one buffer, but joining contiguous pieces keeps that assumption safe. */
static void extend(core_str_t *s, const char *at, size_t len) {
  if (s->ptr != NULL && s->ptr + s->len == at)
    s->len += len;
  else {
    s->ptr = at;
    s->len = len;
  }
}

static void finish_header(head_scan_t *scan) {
  if (scan->field.len == 4 && strncasecmp(scan->field.ptr, "host", 4) == 0) {
    scan->n_host++;
    scan->host = scan->value;
  }
  scan->field = (core_str_t){NULL, 0};
  scan->value = (core_str_t){NULL, 0};
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  head_scan_t *scan = p->data;
  extend(&scan->url, at, len);
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  head_scan_t *scan = p->data;
  if (scan->in_value) {
    finish_header(scan);
    scan->in_value = false;
  }
  extend(&scan->field, at, len);
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  head_scan_t *scan = p->data;
  scan->in_value = true;
  extend(&scan->value, at, len);
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  head_scan_t *scan = p->data;
  if (scan->in_value || scan->field.len > 0)
    finish_header(scan);
  scan->complete = true;
  return HPE_PAUSED;
}

static const llhttp_settings_t head_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

/* The authority of an absolute-form target ("http://host:port/path"), or an
 * empty view for origin-form ("/path"). */
static core_str_t absolute_host(core_str_t url) {
  core_str_t none = {NULL, 0};
  const char *sep = memchr(url.ptr, ':', url.len);
  if (url.len == 0 || url.ptr[0] == '/' || sep == NULL)
    return none;
  size_t scheme = (size_t)(sep - url.ptr);
  if (url.len < scheme + 3 || memcmp(sep, "://", 3) != 0)
    return none;
  const char *start = sep + 3, *end = url.ptr + url.len;
  const char *p = start;
  while (p < end && *p != '/' && *p != '?' && *p != '#')
    p++;
  /* userinfo@host: route by the host part. */
  const char *at = memchr(start, '@', (size_t)(p - start));
  if (at != NULL)
    start = at + 1;
  return (core_str_t){start, (size_t)(p - start)};
}

static void trim(core_str_t *s) {
  while (s->len > 0 && (s->ptr[0] == ' ' || s->ptr[0] == '\t')) {
    s->ptr++;
    s->len--;
  }
  while (s->len > 0 &&
         (s->ptr[s->len - 1] == ' ' || s->ptr[s->len - 1] == '\t'))
    s->len--;
}

int px_http_host_normalise(const char *host, size_t len, char *out) {
  const char *colon = memchr(host, ':', len);
  if (colon != NULL) {
    size_t port_len = len - (size_t)(colon - host) - 1;
    if (port_len == 0 || port_len > 5)
      return -EINVAL;
    for (size_t i = 1; i <= port_len; i++)
      if (colon[i] < '0' || colon[i] > '9')
        return -EINVAL;
    len = (size_t)(colon - host);
  }
  return core_name_normalise(host, len, out, false);
}

/* Length of the head (through the blank line), or 0 while incomplete. */
static size_t head_length(const char *buf, size_t len) {
  for (const char *nl = memchr(buf, '\n', len); nl != NULL;
       nl = memchr(nl + 1, '\n', len - (size_t)(nl + 1 - buf))) {
    size_t rest = len - (size_t)(nl + 1 - buf);
    if (rest >= 1 && nl[1] == '\n')
      return (size_t)(nl + 2 - buf);
    if (rest >= 2 && nl[1] == '\r' && nl[2] == '\n')
      return (size_t)(nl + 3 - buf);
  }
  return 0;
}

px_peek_result_t px_http_host_parse(const char *buf, size_t len,
                                    px_http_host_t *out) {
  memset(out, 0, sizeof *out);
  head_scan_t scan = {0};
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &head_settings);
  parser.data = &scan;

  /* Only complete header lines count: llhttp sees the whole head or, while
   * it is incomplete, the bytes so far so that garbage fails early. */
  size_t head = head_length(buf, len);
  llhttp_errno_t err = llhttp_execute(&parser, buf, head ? head : len);
  if (err != HPE_OK && err != HPE_PAUSED) {
    out->why = llhttp_errno_name(err);
    return PX_PEEK_INVALID;
  }
  /* Both must agree where the head ends. llhttp 8.1 takes CR followed by
   * any byte as the blank line; two parsers that disagree on where headers
   * end are how requests get smuggled, so that is invalid here. */
  if (scan.complete != (head != 0) ||
      (scan.complete && llhttp_get_error_pos(&parser) != buf + head)) {
    out->why = "malformed end of request head";
    return PX_PEEK_INVALID;
  }
  if (!scan.complete)
    return PX_PEEK_NEED_MORE;
  out->head_len = head;

  if (scan.n_host > 1) {
    out->why = "more than one Host header";
    return PX_PEEK_INVALID;
  }
  /* HTTP/1.1 demands Host (RFC 9112 section 3.2); HTTP/1.0 may lack it,
   * which names no device: the caller uses the fallback or refuses. */
  bool host_required = parser.http_major > 1 ||
                       (parser.http_major == 1 && parser.http_minor >= 1);
  core_str_t host = absolute_host(scan.url);
  if (scan.n_host == 0 && host_required) {
    out->why = "no Host header";
    return PX_PEEK_INVALID;
  }
  if (host.len == 0)
    host = scan.host;
  if (host.ptr == NULL) {
    out->head_len = head;
    out->why = "no Host header";
    return PX_PEEK_COMPLETE;
  }
  trim(&host);
  out->raw = host;
  int n = px_http_host_normalise(host.ptr, host.len, out->name);
  if (n < 0) {
    out->why = "Host is not a valid name";
    return PX_PEEK_INVALID;
  }
  out->name_len = (size_t)n;
  return PX_PEEK_COMPLETE;
}
