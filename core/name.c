/* SPDX-License-Identifier: MIT */
/* name.c -- host name normalisation and zone membership */
#include "core/core.h"

#include <errno.h>
#include <string.h>

static bool is_name_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int core_name_normalise(const char *name, size_t len, char *out,
                        bool allow_wildcard) {
  if (len > 0 && name[len - 1] == '.')
    len--;
  if (len == 0 || len > CORE_NAME_MAX)
    return -EINVAL;
  size_t i = 0;
  if (allow_wildcard && len >= 2 && name[0] == '*' && name[1] == '.') {
    out[0] = '*';
    out[1] = '.';
    i = 2;
  }
  size_t label = 0;
  for (; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c >= 'A' && c <= 'Z')
      c = (unsigned char)(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0)
        return -EINVAL;
      label = 0;
    } else if (is_name_char(c)) {
      if (++label > 63)
        return -EINVAL;
    } else {
      return -EINVAL;
    }
    out[i] = (char)c;
  }
  if (label == 0)
    return -EINVAL;
  out[len] = '\0';
  return (int)len;
}

bool core_name_in_zone(const char *name, size_t name_len, const char *zone,
                       size_t zone_len) {
  if (name_len == zone_len)
    return memcmp(name, zone, zone_len) == 0;
  if (name_len < zone_len + 1)
    return false;
  return name[name_len - zone_len - 1] == '.' &&
         memcmp(name + name_len - zone_len, zone, zone_len) == 0;
}
