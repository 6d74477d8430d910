/* SPDX-License-Identifier: MIT */
/* fuzz.h -- what every fuzz target shares */
#ifndef DDPORT_FUZZ_H
#define DDPORT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property of the code under test: a crash the driver (or libFuzzer)
 * saves when it does not hold. */
#define CHECK(expr)                                                            \
  do {                                                                         \
    if (!(expr))                                                               \
      abort();                                                                 \
  } while (0)

#endif
