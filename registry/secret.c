/* SPDX-License-Identifier: MIT */
/* secret.c -- account secrets: crypt(3) hashes, never plaintext */
#include "registry/registry.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The schemes we accept and the length of the hash after the last '$'.
 * They are the ones libxcrypt rates as fit for new hashes; MD5, DES and
 * sha256crypt (rated legacy by Debian's libxcrypt) are refused. */
static const struct scheme {
  const char *prefix;
  size_t hash_len;
} schemes[] = {
    {"$y$", 43},  {"$gy$", 43}, {"$7$", 43}, {"$2b$", 53},
    {"$2y$", 53}, {"$2a$", 53}, {"$6$", 86},
};

static bool is_crypt64(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '.' || ch == '/';
}

bool reg_secret_is_hash(const char *s, const char **why) {
  const struct scheme *scheme = NULL;
  *why = NULL;
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    if (strncmp(s, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
      scheme = &schemes[i];
  if (scheme == NULL) {
    *why = s[0] == '$' ? "an unknown or weak crypt(3) scheme"
                       : "not a crypt(3) hash (plaintext?)";
    return false;
  }
  switch (crypt_checksalt(s)) {
  case CRYPT_SALT_OK:
    break;
  case CRYPT_SALT_METHOD_DISABLED:
    *why = "a crypt(3) scheme this system's libxcrypt has disabled";
    return false;
  case CRYPT_SALT_METHOD_LEGACY:
  case CRYPT_SALT_TOO_CHEAP:
    *why = "a crypt(3) scheme or cost too weak for new hashes";
    return false;
  default:
    *why = "a malformed crypt(3) hash";
    return false;
  }
  /* The setting (scheme, parameters, salt) must be followed by the hash
   * itself: a bare setting would never match any secret. */
  const char *prefix_end = s + strlen(scheme->prefix);
  const char *last = strrchr(s, '$');
  const char *hash = last + 1;
  size_t len = strlen(hash);
  bool chars_ok = true;
  for (size_t i = 0; i < len; i++)
    chars_ok &= is_crypt64(hash[i]);
  if (last <= prefix_end || len != scheme->hash_len || !chars_ok) {
    *why = "a truncated or malformed crypt(3) hash";
    return false;
  }
  return true;
}

int reg_secret_hash(const char *secret, char *out, size_t size) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  struct crypt_data *data = xcalloc(1, sizeof *data);
  int rc = 0;
  if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof setting) == NULL) {
    rc = errno ? -errno : -EINVAL;
    goto done;
  }
  const char *hash = crypt_rn(secret, setting, data, sizeof *data);
  if (hash == NULL || hash[0] == '*') {
    rc = errno ? -errno : -EINVAL;
    goto done;
  }
  if (strlen(hash) >= size) {
    rc = -ENOSPC;
    goto done;
  }
  strcpy(out, hash);

done:
  explicit_bzero(data, sizeof *data);
  free(data);
  return rc;
}

bool reg_secret_verify(const char *hash, const char *secret) {
  struct crypt_data *data = xcalloc(1, sizeof *data);
  const char *got = crypt_rn(secret, hash, data, sizeof *data);
  bool ok = false;
  if (got != NULL && got[0] != '*') {
    size_t n = strlen(hash);
    /* Compare every byte whatever the first difference, so the time taken
     * says nothing about how much of a guess was right. */
    unsigned char diff = strlen(got) != n;
    for (size_t i = 0; i < n && got[i] != '\0'; i++)
      diff |= (unsigned char)(got[i] ^ hash[i]);
    ok = diff == 0;
  }
  explicit_bzero(data, sizeof *data);
  free(data);
  return ok;
}
