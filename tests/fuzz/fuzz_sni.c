/* SPDX-License-Identifier: MIT */
/* fuzz_sni.c -- fuzz target for the TLS ClientHello SNI peek */
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_sni_t sni;
  px_peek_result_t r = px_sni_parse(data, size, &sni);
  if (r == PX_PEEK_INVALID && sni.why == NULL)
    abort();
  if (r != PX_PEEK_COMPLETE)
    return 0;
  if (sni.name_len != strlen(sni.name) || sni.hello_len < 4)
    abort();
  /* Complete means complete: every shorter input needs more or is bad,
   * and feeding more bytes after it changes nothing. */
  px_sni_t shorter;
  if (size > 0 && px_sni_parse(data, size - 1, &shorter) == PX_PEEK_COMPLETE &&
      strcmp(shorter.name, sni.name) != 0)
    abort();
  return 0;
}
