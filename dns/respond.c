/* SPDX-License-Identifier: MIT */
/* respond.c -- one request in, its reply out: transport rules on top of
 * answer.c */
#include "dns/dns_int.h"

size_t dns_respond(const dns_request_t *req, uint8_t *out, size_t cap,
                   dns_xfr_t **xfr) {
  const dns_answer_opts_t opts = {.tcp = req->tcp};
  *xfr = NULL;
  return dns_answer_build(req->config, req->reg, req->msg, req->len, out, cap,
                          &opts);
}
