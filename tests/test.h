/* SPDX-License-Identifier: MIT */
/* test.h -- the smallest test harness: ASSERT_* print both sides and abort */
#ifndef DDPORT_TEST_H
#define DDPORT_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FAIL_(...)                                                        \
  do {                                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    abort();                                                                   \
  } while (0)

#define ASSERT(expr)                                                           \
  do {                                                                         \
    if (!(expr))                                                               \
      TEST_FAIL_("assertion failed: %s", #expr);                               \
  } while (0)

#define ASSERT_EQ(a, b)                                                        \
  do {                                                                         \
    intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                           \
    if (a_ != b_)                                                              \
      TEST_FAIL_("%s == %s: %jd != %jd", #a, #b, a_, b_);                      \
  } while (0)

#define ASSERT_NE(a, b)                                                        \
  do {                                                                         \
    intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                           \
    if (a_ == b_)                                                              \
      TEST_FAIL_("%s != %s: both %jd", #a, #b, a_);                            \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                       \
      TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",     \
                 b_ ? b_ : "(null)");                                          \
  } while (0)

/* A view (ptr, len) equals a C string. */
#define ASSERT_MEM_STR(ptr, len, s)                                            \
  do {                                                                         \
    const char *s_ = (s);                                                      \
    size_t l_ = (len);                                                         \
    if (l_ != strlen(s_) || memcmp((ptr), s_, l_) != 0)                        \
      TEST_FAIL_("%s == %s: \"%.*s\" != \"%s\"", #ptr, #s, (int)l_,            \
                 (const char *)(ptr), s_);                                     \
  } while (0)

#define ASSERT_CONTAINS(hay, needle)                                           \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (h_ == NULL || strstr(h_, n_) == NULL)                                  \
      TEST_FAIL_("%s does not contain \"%s\":\n%s", #hay, n_,                  \
                 h_ ? h_ : "(null)");                                          \
  } while (0)

/* Runs one test function and prints its name, like a TAP line. */
#define RUN_TEST(fn)                                                           \
  do {                                                                         \
    fn();                                                                      \
    printf("ok - %s\n", #fn);                                                  \
  } while (0)

#endif
