/* SPDX-License-Identifier: MIT */
/* http_host.c -- find the host an HTTP request is for, without allocating */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

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

px_peek_result_t px_http_host_parse(const char *buf, size_t len,
                                    px_http_host_t *out) {
  static const char *const wanted[] = {"host"};
  memset(out, 0, sizeof *out);
  core_http_head_t h;
  switch (core_http_head_parse(buf, len, wanted, 1, &h)) {
  case CORE_HTTP_HEAD_INVALID:
    out->why = h.why;
    return PX_PEEK_INVALID;
  case CORE_HTTP_HEAD_NEED_MORE:
    return PX_PEEK_NEED_MORE;
  case CORE_HTTP_HEAD_COMPLETE:
    break;
  }
  size_t head = h.head_len;
  out->head_len = head;

  if (h.counts[0] > 1) {
    out->why = "more than one Host header";
    return PX_PEEK_INVALID;
  }
  /* HTTP/1.1 demands Host (RFC 9112 section 3.2); HTTP/1.0 may lack it,
   * which names no device: the caller uses the fallback or refuses. */
  bool host_required =
      h.http_major > 1 || (h.http_major == 1 && h.http_minor >= 1);
  core_str_t host = absolute_host(h.target);
  if (h.counts[0] == 0 && host_required) {
    out->why = "no Host header";
    return PX_PEEK_INVALID;
  }
  if (host.len == 0 && h.counts[0] == 1) {
    if (h.values[0].len == 0) { /* "Host:" with nothing after it */
      out->why = "Host is not a valid name";
      return PX_PEEK_INVALID;
    }
    host = h.values[0];
  }
  if (host.ptr == NULL) {
    out->head_len = head;
    out->why = "no Host header";
    return PX_PEEK_COMPLETE;
  }
  core_str_trim(&host);
  out->raw = host;
  int n = px_http_host_normalise(host.ptr, host.len, out->name);
  if (n < 0) {
    out->why = "Host is not a valid name";
    return PX_PEEK_INVALID;
  }
  out->name_len = (size_t)n;
  return PX_PEEK_COMPLETE;
}
