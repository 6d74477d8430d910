/* SPDX-License-Identifier: MIT */
/* fuzz_http_host.c -- fuzz target for the HTTP Host peek */
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_http_host_t host;
  px_peek_result_t r = px_http_host_parse((const char *)data, size, &host);
  if (r == PX_PEEK_COMPLETE) {
    /* The contract: a normalised name and a head inside the input. */
    if (host.head_len == 0 || host.head_len > size ||
        host.name_len != strlen(host.name))
      abort();
    for (size_t i = 0; i < host.name_len; i++)
      if (host.name[i] >= 'A' && host.name[i] <= 'Z')
        abort();
    /* A prefix of a complete head is never complete with another host. */
    px_http_host_t again;
    if (px_http_host_parse((const char *)data, host.head_len, &again) !=
            PX_PEEK_COMPLETE ||
        strcmp(again.name, host.name) != 0)
      abort();
  } else if (r == PX_PEEK_INVALID && host.why == NULL) {
    abort();
  }
  return 0;
}
