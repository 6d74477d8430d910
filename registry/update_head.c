/* SPDX-License-Identifier: MIT */
/* update_head.c -- the head of an HTTP request to the update endpoint */
#include "registry/update_int.h"

#include <string.h>

reg_update_head_status_t reg_update_head_parse(const char *buf, size_t len,
                                               reg_update_head_t *out) {
  static const char *const wanted[] = {"authorization", "user-agent"};
  core_http_head_t h;
  memset(out, 0, sizeof *out);
  switch (core_http_head_parse(buf, len, wanted, 2, &h)) {
  case CORE_HTTP_HEAD_INVALID:
    out->why = h.why;
    return REG_UPDATE_HEAD_INVALID;
  case CORE_HTTP_HEAD_NEED_MORE:
    return REG_UPDATE_HEAD_NEED_MORE;
  case CORE_HTTP_HEAD_COMPLETE:
    break;
  }
  out->head_len = h.head_len;
  out->target = h.target;
  out->authorization = h.values[0];
  out->n_authorization = h.counts[0];
  out->user_agent = h.values[1];
  out->n_user_agent = h.counts[1];
  out->keep_alive = h.keep_alive;
  out->method_get = strcmp(h.method, "GET") == 0;
  out->method_post = strcmp(h.method, "POST") == 0;
  out->body_len = h.content_length;
  /* Parameters come in the query; a body is skipped, and only one whose
   * end is known up front. */
  if (h.chunked) {
    out->why = "chunked request body";
    return REG_UPDATE_HEAD_INVALID;
  }
  if (out->n_authorization > 1 || out->n_user_agent > 1) {
    out->why = "a header given twice";
    return REG_UPDATE_HEAD_INVALID;
  }
  return REG_UPDATE_HEAD_COMPLETE;
}
