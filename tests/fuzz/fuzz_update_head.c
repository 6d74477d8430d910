/* SPDX-License-Identifier: MIT */
/* fuzz_update_head.c -- fuzz target for the update endpoint's request head,
 * fed on to the dyndns2 parser as the server does */
#include "registry/update_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(core_str_t s, const char *buf, size_t size) {
  return s.len == 0 || (s.ptr >= buf && s.ptr + s.len <= buf + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  reg_update_head_t head;
  reg_update_head_status_t r = reg_update_head_parse(buf, size, &head);
  if (r == REG_UPDATE_HEAD_INVALID && head.why == NULL)
    abort();
  if (r != REG_UPDATE_HEAD_COMPLETE)
    return 0;
  /* The contract: views inside the input, a head no longer than it, and
   * the same answer for the head alone. */
  if (head.head_len == 0 || head.head_len > size ||
      !inside(head.target, buf, head.head_len) ||
      !inside(head.authorization, buf, head.head_len) ||
      !inside(head.user_agent, buf, head.head_len) ||
      head.n_authorization > 1 || head.n_user_agent > 1)
    abort();
  reg_update_head_t again;
  if (reg_update_head_parse(buf, head.head_len, &again) !=
          REG_UPDATE_HEAD_COMPLETE ||
      again.target.len != head.target.len)
    abort();
  reg_dyndns_request_t req;
  reg_dyndns_reply_t reply;
  reg_dyndns_line_t line;
  reg_dyndns_parse(head.target,
                   head.n_authorization ? &head.authorization : NULL,
                   head.n_user_agent ? &head.user_agent : NULL, &req);
  if (reg_dyndns_early_reply(&req, &reply, &line)) {
    char out[REG_DYNDNS_REPLY_MAX];
    if (reg_dyndns_reply_render(&reply, out, sizeof out) <= 0)
      abort();
  }
  reg_dyndns_clear(&req);
  return 0;
}
