/* SPDX-License-Identifier: MIT */
/* http_head.c -- an HTTP/1 request head, parsed whole with llhttp */
#include "core/core.h"

#include <llhttp.h>
#include <string.h>
#include <strings.h>

typedef struct head_scan {
  core_http_head_t *out;
  const char *const *wanted;
  size_t n_wanted;
  core_str_t field, value;
  bool in_value;
  bool complete;
} head_scan_t;

/* llhttp reports a span in pieces only where a buffer ends; we always hand
 * it one buffer, but joining contiguous pieces keeps that assumption safe. */
static void extend(core_str_t *s, const char *at, size_t len) {
  if (s->ptr != NULL && s->ptr + s->len == at)
    s->len += len;
  else
    *s = (core_str_t){at, len};
}

void core_str_trim(core_str_t *s) {
  while (s->len > 0 && (s->ptr[0] == ' ' || s->ptr[0] == '\t')) {
    s->ptr++;
    s->len--;
  }
  while (s->len > 0 &&
         (s->ptr[s->len - 1] == ' ' || s->ptr[s->len - 1] == '\t'))
    s->len--;
}

static void finish_header(head_scan_t *scan) {
  for (size_t i = 0; i < scan->n_wanted; i++) {
    size_t n = strlen(scan->wanted[i]);
    if (scan->field.len == n &&
        strncasecmp(scan->field.ptr, scan->wanted[i], n) == 0) {
      scan->out->counts[i]++;
      core_str_trim(&scan->value);
      scan->out->values[i] = scan->value;
    }
  }
  scan->field = (core_str_t){NULL, 0};
  scan->value = (core_str_t){NULL, 0};
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  head_scan_t *scan = p->data;
  extend(&scan->out->target, at, len);
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

core_http_head_status_t core_http_head_parse(const char *buf, size_t len,
                                             const char *const *wanted,
                                             size_t n_wanted,
                                             core_http_head_t *out) {
  memset(out, 0, sizeof *out);
  if (n_wanted > CORE_HTTP_HEAD_WANTED_MAX) {
    out->why = "too many headers wanted";
    return CORE_HTTP_HEAD_INVALID;
  }
  head_scan_t scan = {.out = out, .wanted = wanted, .n_wanted = n_wanted};
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &head_settings);
  parser.data = &scan;

  /* Only complete header lines count: llhttp sees the whole head or, while
   * it is incomplete, the bytes so far so that garbage fails early. */
  size_t head = head_length(buf, len);
  llhttp_errno_t err = llhttp_execute(&parser, buf, head ? head : len);
  if (err != HPE_OK && err != HPE_PAUSED) {
    out->why = llhttp_errno_name(err);
    return CORE_HTTP_HEAD_INVALID;
  }
  /* Both must agree where the head ends. llhttp 8.1 takes CR followed by
   * any byte as the blank line; two parsers that disagree on where headers
   * end are how requests get smuggled, so that is invalid here. */
  if (scan.complete != (head != 0) ||
      (scan.complete && llhttp_get_error_pos(&parser) != buf + head)) {
    out->why = "malformed end of request head";
    return CORE_HTTP_HEAD_INVALID;
  }
  if (!scan.complete)
    return CORE_HTTP_HEAD_NEED_MORE;
  out->head_len = head;
  out->http_major = parser.http_major;
  out->http_minor = parser.http_minor;
  out->method = llhttp_method_name((llhttp_method_t)parser.method);
  out->keep_alive = llhttp_should_keep_alive(&parser) != 0;
  out->chunked = (parser.flags & F_CHUNKED) != 0;
  if (parser.flags & F_CONTENT_LENGTH)
    out->content_length = parser.content_length;
  return CORE_HTTP_HEAD_COMPLETE;
}
