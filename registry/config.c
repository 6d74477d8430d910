/* SPDX-License-Identifier: MIT */
/* config.c -- the YAML configuration: schema check into reg_config_t */
#include "registry/registry_int.h"
#include "registry/yaml_doc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <idn2.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILE_SIZE ((size_t)64 * 1024 * 1024)
#define QUOTE_SIZE 72       /* a quoted value in a message, cut if longer */
#define TTL_MAX 2147483647u /* RFC 2181 section 8 */
#define PATH_TEXT_SIZE 4200 /* "FILE:LINE:COLUMN" of an earlier definition */

typedef reg_yaml_node_t node_t;

/* Messages are gathered and printed in file order at the end, so sections
 * can be checked in the order their dependencies need (listeners and zones
 * before devices) whatever order the file has them in. */
typedef struct message {
  uint32_t file, line, column;
  size_t seq;
  char *text;
} message_t;

typedef struct messages {
  message_t *v;
  size_t n, cap;
} messages_t;

/* A place in one of the files read: files[file] in the context. Kept
 * instead of a node so it outlives the YAML tree of its file. */
typedef struct pos {
  uint32_t file, line, column;
} pos_t;

/* A set of names with the place that introduced each; grows as needed. */
typedef struct name_entry {
  const char *s;
  uint32_t len;  /* names and keys are shorter than a file */
  uint32_t hash; /* compared first: a probe rarely reads another name */
  pos_t at;
} name_entry_t;

typedef struct name_set {
  name_entry_t *slots;
  size_t mask, count;
} name_set_t;

/* The devices so far by name, for duplicates across every file. With ten
 * million devices a name_set would cost a gigabyte and most of the load in
 * page faults, so a slot here is 8 bytes and the rest is found through the
 * device: its name in the configuration, its place in seen[]. */
typedef struct device_slot {
  uint32_t check; /* the high half of the name's hash; the low picks slots */
  uint32_t index; /* into the devices, plus one; 0 marks a free slot */
} device_slot_t;

typedef struct device_seen {
  pos_t at;
  bool canonical; /* its key was written as its name, see stream_device */
} device_seen_t;

typedef struct device_set {
  device_slot_t *slots;
  size_t mask, count;
  device_seen_t *seen; /* parallel to the configuration's devices */
} device_set_t;

/* A device's owner, checked once every file has given its accounts. */
typedef struct owner_ref {
  size_t device;
  pos_t at;
} owner_ref_t;

typedef struct ctx {
  const char *name; /* the file being read, as messages name it */
  uint32_t file;    /* its index in files */
  char **files;
  size_t n_files;
  reg_config_t *config;
  messages_t errors, warnings;
  const node_t **fallbacks; /* per listener: its 'fallback' value, or NULL */
  device_set_t devices_seen;
  name_set_t accounts_seen;
  name_set_t streamed_keys; /* see stream_device */
  size_t top_checked;       /* root pairs checked before devices streamed */
  bool listeners_done, dns_done;
  owner_ref_t *owners;
  size_t n_owners, cap_owners, cap_devices, cap_accounts;
  pos_t owner_at;    /* of the device just parsed */
  char **real_paths; /* registry files read so far, to refuse repeats */
  size_t n_real_paths;
  struct bound *bound; /* TCP addresses claimed so far, to refuse repeats */
  size_t n_bound, cap_bound;
} ctx_t;

/* An address something listens on (TCP), where it was given, and what. */
typedef struct bound {
  struct sockaddr_storage addr;
  pos_t at;
  char *what;
} bound_t;

/* A key of a fixed-schema mapping and its value, or NULLs when absent. */
typedef struct slot {
  const node_t *key, *value;
} slot_t;

/* ---- messages ------------------------------------------------------------ */

static char *vformat(const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(NULL, 0, fmt, copy);
  va_end(copy);
  size_t size = n > 0 ? (size_t)n + 1 : 1;
  char *s = xmalloc(size);
  vsnprintf(s, size, fmt, ap);
  return s;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

static void push_message_in(ctx_t *c, messages_t *list, uint32_t file,
                            uint32_t line, uint32_t column, char *body) {
  if (list->n == list->cap) {
    list->cap = list->cap ? list->cap * 2 : 16;
    list->v = xrealloc(list->v, list->cap * sizeof *list->v);
  }
  message_t *m = &list->v[list->n];
  m->file = file;
  m->line = line;
  m->column = column;
  m->seq = list->n++;
  m->text = format("%s:%u:%u: %s", c->files[file], line, column, body);
  free(body);
}

static void push_message(ctx_t *c, messages_t *list, uint32_t line,
                         uint32_t column, char *body) {
  push_message_in(c, list, c->file, line, column, body);
}

static pos_t pos_of(const ctx_t *c, const node_t *n) {
  pos_t p = {c->file, n ? n->line : 1, n ? n->column : 1};
  return p;
}

/* "line 3, column 5" in the same file, "devices.yaml:3:5" in another. */
static const char *pos_text(const ctx_t *c, pos_t p, char *buf, size_t size) {
  if (p.file == c->file)
    snprintf(buf, size, "line %u, column %u", p.line, p.column);
  else
    snprintf(buf, size, "%s:%u:%u", c->files[p.file], p.line, p.column);
  return buf;
}

static void error_at(ctx_t *c, const node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(ctx_t *c, const node_t *at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *body = vformat(fmt, ap);
  va_end(ap);
  push_message(c, &c->errors, at ? at->line : 1, at ? at->column : 1, body);
}

static void error_at_pos(ctx_t *c, pos_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at_pos(ctx_t *c, pos_t at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *body = vformat(fmt, ap);
  va_end(ap);
  push_message_in(c, &c->errors, at.file, at.line, at.column, body);
}

/* A key that parses but whose feature is not built: serve must say so
 * rather than pretend. */
static void not_implemented(ctx_t *c, const node_t *at, const char *path) {
  push_message(c, &c->warnings, at->line, at->column,
               format("%s is not implemented yet; ignored", path));
}

static int message_order(const void *a, const void *b) {
  const message_t *x = a, *y = b;
  if (x->file != y->file)
    return x->file < y->file ? -1 : 1;
  if (x->line != y->line)
    return x->line < y->line ? -1 : 1;
  if (x->column != y->column)
    return x->column < y->column ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void sort_messages(messages_t *list) {
  if (list->n > 1)
    qsort(list->v, list->n, sizeof *list->v, message_order);
}

static void truncate_messages(messages_t *list, size_t n) {
  while (list->n > n)
    free(list->v[--list->n].text);
}

static void free_messages(messages_t *list) {
  for (size_t i = 0; i < list->n; i++)
    free(list->v[i].text);
  free(list->v);
  list->v = NULL;
  list->n = list->cap = 0;
}

/* User text inside a one-line message: quoted, control bytes shown as '?'
 * so a message never spans lines, and cut when long. */
static const char *quote(const char *s, size_t len, char *buf, size_t size) {
  size_t max = size - 6, o = 0, i = 0;
  buf[o++] = '\'';
  for (; i < len && o < max; i++) {
    unsigned char ch = (unsigned char)s[i];
    buf[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  if (i < len) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o++] = '\'';
  buf[o] = '\0';
  return buf;
}

static const char *quote_node(const node_t *n, char *buf, size_t size) {
  return quote(n->text, n->len, buf, size);
}

static bool is_null(const node_t *n) {
  if (n == NULL)
    return true;
  if (n->kind != REG_YAML_SCALAR || !n->plain)
    return false;
  return n->len == 0 || strcmp(n->text, "~") == 0 ||
         strcmp(n->text, "null") == 0 || strcmp(n->text, "Null") == 0 ||
         strcmp(n->text, "NULL") == 0;
}

static const char *describe(const node_t *n, char *buf, size_t size) {
  if (is_null(n))
    return "nothing";
  if (n->kind == REG_YAML_SEQUENCE)
    return "a sequence";
  if (n->kind == REG_YAML_MAPPING)
    return "a mapping";
  if (strlen(n->text) != n->len)
    return "a string with a NUL byte";
  return quote_node(n, buf, size);
}

static void expected(ctx_t *c, const node_t *n, const node_t *key,
                     const char *what, const char *where) {
  char buf[QUOTE_SIZE];
  /* A missing value has no useful position of its own. */
  const node_t *at = is_null(n) && key != NULL ? key : n;
  error_at(c, at, "expected %s for %s, got %s", what, where,
           describe(n, buf, sizeof buf));
}

/* ---- suggestions --------------------------------------------------------- */

/* Levenshtein distance, for "did you mean"; long strings are never close. */
static size_t edit_distance(const char *a, size_t alen, const char *b,
                            size_t blen) {
  size_t row[65];
  if (alen > 64 || blen > 64)
    return SIZE_MAX;
  for (size_t j = 0; j <= blen; j++)
    row[j] = j;
  for (size_t i = 1; i <= alen; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= blen; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[blen];
}

static const char *closest(const char *s, size_t len, const char *const *names,
                           size_t n) {
  const char *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < n; i++) {
    if (names[i] == NULL)
      continue;
    size_t nl = strlen(names[i]);
    size_t d = edit_distance(s, len, names[i], nl);
    if (d < best_d && d < nl) {
      best = names[i];
      best_d = d;
    }
  }
  return best;
}

/* "a, b, c" for messages; the caller frees. */
static char *join(const char *const *names, size_t n) {
  size_t size = 1;
  for (size_t i = 0; i < n; i++)
    size += strlen(names[i]) + 2;
  char *s = xmalloc(size);
  s[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i > 0)
      strcat(s, ", ");
    strcat(s, names[i]);
  }
  return s;
}

/* ---- a set of names with the place that introduced each ----------------- */

static void set_init(name_set_t *set, size_t expected_count) {
  size_t size = 16;
  while (size < expected_count * 2)
    size *= 2;
  set->slots = xcalloc(size, sizeof *set->slots);
  set->mask = size - 1;
  set->count = 0;
}

static name_entry_t *set_slot(name_set_t *set, const char *s, size_t len,
                              uint64_t hash) {
  size_t i = (size_t)hash & set->mask;
  for (;; i = (i + 1) & set->mask) {
    name_entry_t *e = &set->slots[i];
    if (e->s == NULL || (e->hash == (uint32_t)hash && e->len == len &&
                         memcmp(e->s, s, len) == 0))
      return e;
  }
}

/* Copies an entry known to be absent into a set with room for it. */
static void set_put(name_set_t *set, const name_entry_t *e) {
  /* The stored hash is the low half: it still picks the slot, since sets
   * stay below 2^32 slots. */
  size_t j = e->hash & set->mask;
  while (set->slots[j].s != NULL)
    j = (j + 1) & set->mask;
  set->slots[j] = *e;
  set->count++;
}

/* Room for count names in all without growing on the way. */
static void set_reserve(name_set_t *set, size_t count) {
  if (set->slots != NULL && count * 2 <= set->mask + 1)
    return;
  name_set_t bigger;
  set_init(&bigger, count > 2 * set->count ? count : 2 * set->count);
  for (size_t i = 0; set->slots != NULL && i <= set->mask; i++) {
    const name_entry_t *e = &set->slots[i];
    if (e->s == NULL)
      continue;
    set_put(&bigger, e);
  }
  free(set->slots);
  *set = bigger;
}

/* Adds s (which must outlive the set) unless present. Returns the entry of
 * an earlier equal name, or NULL when s is new. */
static const name_entry_t *set_add(name_set_t *set, const char *s, size_t len,
                                   pos_t at) {
  set_reserve(set, set->count + 1);
  uint64_t hash = reg_name_hash(s, len);
  name_entry_t *e = set_slot(set, s, len, hash);
  if (e->s != NULL)
    return e;
  e->s = s;
  e->len = (uint32_t)len;
  e->hash = (uint32_t)hash;
  e->at = at;
  set->count++;
  return NULL;
}

static const name_entry_t *set_find_len(const name_set_t *set, const char *s,
                                        size_t len) {
  if (set->count == 0)
    return NULL;
  name_entry_t *e = set_slot((name_set_t *)set, s, len, reg_name_hash(s, len));
  return e->s != NULL ? e : NULL;
}

static const name_entry_t *set_find(const name_set_t *set, const char *s) {
  return set_find_len(set, s, strlen(s));
}

static void set_free(name_set_t *set) {
  free(set->slots);
  set->slots = NULL;
  set->count = 0;
}

/* ---- duplicate keys, anywhere in the document ---------------------------- */

static bool same_key(const node_t *a, const node_t *b) {
  return a->kind == REG_YAML_SCALAR && b->kind == REG_YAML_SCALAR &&
         a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

static void report_duplicate_key(ctx_t *c, node_t *key, pos_t first) {
  char buf[QUOTE_SIZE];
  key->duplicate = true;
  error_at(c, key, "duplicate key %s; already given at line %u, column %u",
           quote_node(key, buf, sizeof buf), first.line, first.column);
}

static void mark_duplicates_from(ctx_t *c, node_t *n, size_t start);

/* Marks every repeated key so the schema walk sees only the first. */
static void mark_duplicates(ctx_t *c, node_t *n) {
  mark_duplicates_from(c, n, 0);
}

/* The same for a mapping's pairs from start on, the ones before having
 * been checked already (when they were all the mapping had). */
static void mark_duplicates_from(ctx_t *c, node_t *n, size_t start) {
  if (n->kind == REG_YAML_SEQUENCE) {
    for (size_t i = 0; i < n->len; i++)
      mark_duplicates(c, &n->kids[i]);
    return;
  }
  if (n->kind != REG_YAML_MAPPING)
    return;
  if (n->len <= 16) {
    for (size_t i = start > 1 ? start : 1; i < n->len; i++)
      for (size_t j = 0; j < i; j++)
        if (same_key(reg_yaml_key(n, i), reg_yaml_key(n, j))) {
          report_duplicate_key(c, reg_yaml_key(n, i),
                               pos_of(c, reg_yaml_key(n, j)));
          break;
        }
  } else {
    name_set_t set;
    set_init(&set, n->len);
    for (size_t i = 0; i < n->len; i++) {
      node_t *key = reg_yaml_key(n, i);
      if (key->kind != REG_YAML_SCALAR)
        continue;
      const name_entry_t *first =
          set_add(&set, key->text, key->len, pos_of(c, key));
      if (first != NULL && i >= start)
        report_duplicate_key(c, key, first->at);
    }
    set_free(&set);
  }
  for (size_t i = 2 * start; i < 2 * n->len; i++)
    mark_duplicates(c, &n->kids[i]);
}

/* ---- scalars ------------------------------------------------------------- */

/* The text of a scalar value, or NULL after reporting what was expected. */
static const char *text_of(ctx_t *c, const node_t *n, const node_t *key,
                           const char *what, const char *where) {
  if (is_null(n) || n->kind != REG_YAML_SCALAR || strlen(n->text) != n->len) {
    expected(c, n, key, what, where);
    return NULL;
  }
  return n->text;
}

/* Decimal only: a leading zero would be octal in YAML 1.1, so refuse the
 * ambiguity. Returns 0, -EINVAL (not a number) or -ERANGE. */
static int parse_decimal(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '\0'))
    return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -EINVAL;
    if (v > (UINT64_MAX - 9) / 10)
      return -ERANGE;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = v;
  return 0;
}

static bool range_check(ctx_t *c, const node_t *n, const char *where,
                        uint64_t v, int rc, uint64_t min, uint64_t max) {
  if (rc == 0 && v >= min && v <= max)
    return true;
  error_at(c, n, "value %.40s for %s is out of range; expected %ju..%ju",
           n->text, where, (uintmax_t)min, (uintmax_t)max);
  return false;
}

static bool get_uint(ctx_t *c, const node_t *n, const node_t *key,
                     const char *where, uint64_t min, uint64_t max,
                     uint64_t *out) {
  const char *what = "a number";
  const char *s = text_of(c, n, key, what, where);
  if (s == NULL)
    return false;
  uint64_t v = 0;
  int rc = parse_decimal(s, &v);
  if (rc == -EINVAL) {
    expected(c, n, key, what, where);
    return false;
  }
  if (!range_check(c, n, where, v, rc, min, max))
    return false;
  *out = v;
  return true;
}

static bool get_u32(ctx_t *c, const node_t *n, const node_t *key,
                    const char *where, uint32_t min, uint32_t *out) {
  uint64_t v;
  if (!get_uint(c, n, key, where, min, UINT32_MAX, &v))
    return false;
  *out = (uint32_t)v;
  return true;
}

/* YAML 1.1 booleans, which is also how "off" reads as false. */
static int bool_value(const node_t *n) {
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};
  if (n == NULL || n->kind != REG_YAML_SCALAR)
    return -1;
  for (size_t i = 0; i < 3; i++) {
    if (strcasecmp(n->text, yes[i]) == 0)
      return 1;
    if (strcasecmp(n->text, no[i]) == 0)
      return 0;
  }
  return -1;
}

static bool get_bool(ctx_t *c, const node_t *n, const node_t *key,
                     const char *where, bool *out) {
  int v = bool_value(n);
  if (v < 0) {
    expected(c, n, key, "true or false", where);
    return false;
  }
  *out = v == 1;
  return true;
}

static bool get_duration(ctx_t *c, const node_t *n, const node_t *key,
                         const char *where, uint64_t *ms) {
  const char *what = "a duration such as 500ms, 5s, 10m or 1h";
  const char *s = text_of(c, n, key, what, where);
  if (s == NULL)
    return false;
  if (core_duration_parse(s, ms) != 0) {
    expected(c, n, key, what, where);
    return false;
  }
  return true;
}

/* DNS timers: a plain number of seconds, or a duration in whole seconds. */
static bool get_seconds(ctx_t *c, const node_t *n, const node_t *key,
                        const char *where, uint32_t max, uint32_t *out) {
  const char *what = "a number of seconds or a duration such as 10m or 1h";
  const char *s = text_of(c, n, key, what, where);
  if (s == NULL)
    return false;
  uint64_t v = 0, ms;
  int rc = parse_decimal(s, &v);
  if (rc == -EINVAL) {
    if (core_duration_parse(s, &ms) != 0) {
      expected(c, n, key, what, where);
      return false;
    }
    if (ms % 1000 != 0) {
      error_at(c, n, "%s for %s is not a whole number of seconds", s, where);
      return false;
    }
    v = ms / 1000;
    rc = 0;
  }
  if (!range_check(c, n, where, v, rc, 0, max))
    return false;
  *out = (uint32_t)v;
  return true;
}

/* n's text if it is a non-empty string (valid while n is), else NULL
 * after saying what was expected. */
static const char *nonempty_text(ctx_t *c, const node_t *n, const node_t *key,
                                 const char *what, const char *where) {
  const char *s = text_of(c, n, key, what, where);
  if (s != NULL && *s == '\0') {
    expected(c, n, key, what, where);
    return NULL;
  }
  return s;
}

static bool get_string(ctx_t *c, const node_t *n, const node_t *key,
                       const char *what, const char *where, char **out) {
  const char *s = nonempty_text(c, n, key, what, where);
  if (s == NULL)
    return false;
  free(*out);
  *out = xstrdup(s);
  return true;
}

static bool get_ip(ctx_t *c, const node_t *n, const char *where,
                   core_ip_t *out) {
  const char *what = "an IP address such as 192.0.2.7 or 2001:db8::7";
  const char *s = text_of(c, n, NULL, what, where);
  if (s == NULL)
    return false;
  if (core_ip_parse(s, out) != 0) {
    char buf[QUOTE_SIZE];
    error_at(c, n, "bad address %s in %s; expected %s",
             quote_node(n, buf, sizeof buf), where, what);
    return false;
  }
  return true;
}

static bool get_hostport(ctx_t *c, const node_t *n, const node_t *key,
                         const char *where, struct sockaddr_storage *out) {
  const char *what = "an address such as 127.0.0.1:8080 or [::1]:8080";
  const char *s = text_of(c, n, key, what, where);
  if (s == NULL)
    return false;
  /* Say "out of range" for a number that is only too big or zero; the
   * general parser cannot tell that from a typo. */
  const char *colon = strrchr(s, ':');
  uint64_t port = 0;
  int rc = colon ? parse_decimal(colon + 1, &port) : -EINVAL;
  if (rc == -ERANGE || (rc == 0 && (port == 0 || port > 65535))) {
    error_at(c, n, "port %.40s in %s is out of range; expected 1..65535",
             colon + 1, where);
    return false;
  }
  const char *why = NULL;
  if (core_hostport_parse(s, out, &why) != 0) {
    char buf[QUOTE_SIZE];
    error_at(c, n, "bad address %s for %s: %s", quote_node(n, buf, sizeof buf),
             where, why);
    return false;
  }
  return true;
}

static bool get_prefix(ctx_t *c, const node_t *n, const char *where,
                       core_prefix_t *out) {
  const char *what = "an address prefix such as 192.0.2.0/24";
  const char *s = text_of(c, n, NULL, what, where);
  if (s == NULL)
    return false;
  const char *why = NULL;
  if (core_prefix_parse(s, out, &why) != 0) {
    char buf[QUOTE_SIZE];
    error_at(c, n, "bad prefix %s in %s: %s", quote_node(n, buf, sizeof buf),
             where, why);
    return false;
  }
  return true;
}

/* Unicode names, and ASCII ones with A-labels to check, go through IDNA;
 * plain ASCII names (nearly all of a large registry) skip it. */
static bool needs_idna(const char *s) {
  for (const char *p = s; *p; p++)
    if ((unsigned char)*p >= 0x80)
      return true;
  for (const char *p = s; (p = strcasestr(p, "xn--")) != NULL; p += 4)
    if (p == s || p[-1] == '.')
      return true;
  return false;
}

/* Normalises a host name into out (CORE_NAME_MAX + 1 bytes); IDNs are
 * stored in their A-label (punycode) form. */
static bool get_name(ctx_t *c, const node_t *n, const char *where,
                     const char *example, bool wildcard, char *out) {
  char what[96];
  snprintf(what, sizeof what, "a host name such as %s", example);
  const char *s = text_of(c, n, NULL, what, where);
  if (s == NULL)
    return false;
  char buf[QUOTE_SIZE];
  char *alabel = NULL;
  if (needs_idna(s)) {
    /* UTS #46 non-transitional processing, as browsers do: "ß" stays
     * itself (xn--fa-hia), letters are lowercased, A-labels are checked.
     * Not STD3 rules: they would silently drop '*' and '_' instead of
     * letting core_name_normalise refuse what is not a host name. */
    int rc = idn2_to_ascii_8z(s, &alabel, IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK) {
      error_at(c, n, "bad international name %s for %s: %s; expected %s",
               quote_node(n, buf, sizeof buf), where, idn2_strerror(rc), what);
      return false;
    }
    s = alabel;
  }
  bool ok = core_name_normalise(s, strlen(s), out, wildcard) >= 0;
  idn2_free(alabel);
  if (!ok)
    error_at(c, n, "bad name %s for %s; expected %s",
             quote_node(n, buf, sizeof buf), where, what);
  return ok;
}

/* ---- collections --------------------------------------------------------- */

/* The items of a list; a lone scalar stands for a list of one, so
 * "listen: 127.0.0.1:53" works as well as "listen: [127.0.0.1:53]". */
static bool items_of(ctx_t *c, const node_t *n, const node_t *key,
                     const char *what, const char *where, const node_t **items,
                     size_t *count) {
  *items = NULL;
  *count = 0;
  if (is_null(n))
    return true;
  if (n->kind == REG_YAML_SEQUENCE) {
    *items = n->kids;
    *count = n->len;
    return true;
  }
  if (n->kind == REG_YAML_SCALAR) {
    *items = n;
    *count = 1;
    return true;
  }
  expected(c, n, key, what, where);
  return false;
}

static bool is_mapping_or_null(ctx_t *c, const node_t *n, const node_t *key,
                               const char *where) {
  if (is_null(n) || n->kind == REG_YAML_MAPPING)
    return true;
  expected(c, n, key, "a mapping", where);
  return false;
}

static void unknown_key(ctx_t *c, const node_t *key, const char *where,
                        const char *const *keys, size_t n_keys) {
  char buf[QUOTE_SIZE];
  const char *guess = closest(key->text, key->len, keys, n_keys);
  quote_node(key, buf, sizeof buf);
  if (guess != NULL) {
    error_at(c, key, "unknown key %s in %s; did you mean '%s'?", buf, where,
             guess);
  } else {
    char *all = join(keys, n_keys);
    error_at(c, key, "unknown key %s in %s; expected one of: %s", buf, where,
             all);
    free(all);
  }
}

/* Checks a fixed-schema mapping: fills slots[i] for keys[i] and reports
 * keys it does not know. A null value counts as an empty mapping. */
static bool walk_mapping(ctx_t *c, const node_t *map, const node_t *key,
                         const char *where, const char *const *keys,
                         size_t n_keys, slot_t *slots) {
  memset(slots, 0, n_keys * sizeof *slots);
  if (!is_mapping_or_null(c, map, key, where))
    return false;
  if (is_null(map))
    return true;
  for (size_t i = 0; i < map->len; i++) {
    const node_t *k = reg_yaml_key(map, i);
    char buf[QUOTE_SIZE];
    if (k->duplicate)
      continue;
    if (k->kind != REG_YAML_SCALAR) {
      error_at(c, k, "expected a key in %s, got %s", where,
               describe(k, buf, sizeof buf));
      continue;
    }
    size_t j = 0;
    while (j < n_keys && strcmp(keys[j], k->text) != 0)
      j++;
    if (j == n_keys || strlen(k->text) != k->len) {
      unknown_key(c, k, where, keys, n_keys);
      continue;
    }
    slots[j].key = k;
    slots[j].value = reg_yaml_value(map, i);
  }
  return true;
}

static bool present(const slot_t *s) {
  return !is_null(s->value);
}

/* ---- listening addresses ------------------------------------------------- */

/* Listeners, DNS (whose TCP shares the proxy's SO_REUSEPORT) and the
 * update endpoint each need an address of their own: two sockets on one
 * address would split its connections between them. Returns whether addr
 * was free; if not, says which came first. */
static bool claim_address(ctx_t *c, const node_t *n,
                          const struct sockaddr_storage *addr,
                          const char *what) {
  for (size_t i = 0; i < c->n_bound; i++) {
    /* core_hostport_parse zeroes the whole storage before filling it. */
    if (memcmp(&c->bound[i].addr, addr, sizeof *addr) != 0)
      continue;
    char where[64];
    core_sockaddr_format((const struct sockaddr *)addr, where, sizeof where);
    error_at(c, n,
             "address %s is already taken by %s at line %u, column %u; "
             "give each its own address",
             where, c->bound[i].what, c->bound[i].at.line,
             c->bound[i].at.column);
    return false;
  }
  if (c->n_bound == c->cap_bound) {
    c->cap_bound = c->cap_bound ? 2 * c->cap_bound : 8;
    c->bound = xrealloc(c->bound, c->cap_bound * sizeof *c->bound);
  }
  c->bound[c->n_bound++] =
      (bound_t){*addr, {c->file, n->line, n->column}, xstrdup(what)};
  return true;
}

/* ---- listeners ----------------------------------------------------------- */

enum { L_NAME, L_PROTOCOL, L_ADDRESS, L_FALLBACK, L_COUNT };
static const char *const listener_keys[L_COUNT] = {
    [L_NAME] = "name",
    [L_PROTOCOL] = "protocol",
    [L_ADDRESS] = "address",
    [L_FALLBACK] = "fallback",
};

static bool valid_listener_name(const char *s) {
  if (*s == '\0' || strlen(s) > 63)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
          *s == '-'))
      return false;
  return true;
}

static void parse_listener(ctx_t *c, const node_t *item, const node_t **seen) {
  reg_config_t *cfg = c->config;
  slot_t s[L_COUNT];
  if (!walk_mapping(c, item, NULL, "a listener", listener_keys, L_COUNT, s))
    return;

  reg_listener_t l;
  memset(&l, 0, sizeof l);
  if (!present(&s[L_NAME])) {
    error_at(c, s[L_NAME].key ? s[L_NAME].key : item,
             "listener is missing 'name'; add e.g. 'name: http'");
  } else {
    const node_t *v = s[L_NAME].value;
    const char *name = text_of(c, v, NULL, "a listener name", "'name'");
    char buf[QUOTE_SIZE];
    if (name != NULL && !valid_listener_name(name)) {
      error_at(c, v,
               "bad listener name %s; use lowercase letters, digits, '_' "
               "and '-', such as 'http'",
               quote_node(v, buf, sizeof buf));
    } else if (name != NULL) {
      size_t i = 0;
      while (i < cfg->n_listeners && strcmp(cfg->listeners[i].name, name))
        i++;
      if (i < cfg->n_listeners)
        error_at(c, v,
                 "duplicate listener name '%s'; already defined at line %u, "
                 "column %u",
                 name, seen[i]->line, seen[i]->column);
      else
        l.name = xstrdup(name);
    }
  }

  if (!present(&s[L_PROTOCOL])) {
    error_at(c, s[L_PROTOCOL].key ? s[L_PROTOCOL].key : item,
             "listener is missing 'protocol'; add 'protocol: http' or "
             "'protocol: tls'");
  } else {
    const node_t *v = s[L_PROTOCOL].value;
    if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "http") == 0) {
      l.protocol = REG_PROTOCOL_HTTP;
    } else if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "tls") == 0) {
      l.protocol = REG_PROTOCOL_TLS;
    } else {
      expected(c, v, s[L_PROTOCOL].key, "'http' or 'tls'", "'protocol'");
    }
  }

  /* One address, or a list: one socket each, all serving this listener
   * (an IPv6 socket takes IPv6 only, so dual stack is two addresses). */
  const node_t *addrs = s[L_ADDRESS].value;
  size_t n_addrs = 0;
  if (!present(&s[L_ADDRESS]))
    error_at(c, s[L_ADDRESS].key ? s[L_ADDRESS].key : item,
             "listener is missing 'address'; add e.g. "
             "'address: 127.0.0.1:8080'");
  else if (addrs->kind != REG_YAML_SEQUENCE)
    n_addrs = 1;
  else if (addrs->len == 0)
    error_at(c, addrs,
             "listener 'address' is an empty list; give one address or "
             "more");
  else
    n_addrs = addrs->len;

  if (present(&s[L_FALLBACK])) {
    const node_t *v = s[L_FALLBACK].value;
    const char *text =
        text_of(c, v, s[L_FALLBACK].key, "a device name", "'fallback'");
    char norm[CORE_NAME_MAX + 1];
    char buf[QUOTE_SIZE];
    if (text != NULL &&
        core_name_normalise(text, strlen(text), norm, false) < 0)
      error_at(c, v, "bad name %s for 'fallback'; expected a device name",
               quote_node(v, buf, sizeof buf));
    else if (text != NULL)
      l.fallback = xstrdup(norm);
  }

  /* Keep a named listener even when another field is wrong, so devices
   * naming it do not also report it missing: one entry per address (an
   * address that does not parse keeps the entry, unbound). */
  char what[96];
  snprintf(what, sizeof what, "listener '%s'", l.name ? l.name : "?");
  for (size_t i = 0; l.name != NULL && i < (n_addrs ? n_addrs : 1); i++) {
    reg_listener_t entry = l;
    /* None when 'address' is missing or an empty list (told above). */
    const node_t *a = n_addrs == 0                       ? NULL
                      : addrs->kind == REG_YAML_SEQUENCE ? &addrs->kids[i]
                                                         : addrs;
    if (n_addrs > 0 && get_hostport(c, a, a == addrs ? s[L_ADDRESS].key : NULL,
                                    "'address'", &entry.addr))
      claim_address(c, a, &entry.addr, what);
    if (i > 0) {
      entry.name = xstrdup(l.name);
      entry.fallback = l.fallback ? xstrdup(l.fallback) : NULL;
    }
    seen[cfg->n_listeners] = s[L_NAME].value;
    /* The fallback is checked once, with the listener's first entry. */
    c->fallbacks[cfg->n_listeners] =
        i == 0 && l.fallback != NULL ? s[L_FALLBACK].value : NULL;
    cfg->listeners[cfg->n_listeners++] = entry;
  }
  if (l.name == NULL)
    free(l.fallback);
}

/* The entries a listener item makes: one per address. */
static size_t listener_entries(const node_t *item) {
  for (size_t i = 0; item->kind == REG_YAML_MAPPING && i < item->len; i++) {
    const node_t *k = reg_yaml_key(item, i), *v = reg_yaml_value(item, i);
    if (k->kind == REG_YAML_SCALAR && strcmp(k->text, "address") == 0 &&
        v->kind == REG_YAML_SEQUENCE && v->len > 1)
      return v->len;
  }
  return 1;
}

static void parse_listeners(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  if (is_null(v))
    return;
  if (v->kind != REG_YAML_SEQUENCE) {
    expected(c, v, slot->key, "a list of listeners", "'listeners'");
    return;
  }
  reg_config_t *cfg = c->config;
  size_t n = 0;
  for (size_t i = 0; i < v->len; i++)
    n += listener_entries(&v->kids[i]);
  cfg->listeners = xcalloc(n ? n : 1, sizeof *cfg->listeners);
  c->fallbacks = xcalloc(n ? n : 1, sizeof *c->fallbacks);
  const node_t **seen = xcalloc(n ? n : 1, sizeof *seen);
  for (size_t i = 0; i < v->len; i++)
    parse_listener(c, &v->kids[i], seen);
  free(seen);
}

static const reg_listener_t *find_listener(const reg_config_t *cfg,
                                           const char *name) {
  for (size_t i = 0; i < cfg->n_listeners; i++)
    if (strcmp(cfg->listeners[i].name, name) == 0)
      return &cfg->listeners[i];
  return NULL;
}

/* ---- proxy --------------------------------------------------------------- */

enum {
  P_TIMEOUTS,
  P_LIMITS,
  P_MAX_HELLO,
  P_ALLOW_TARGETS,
  P_ACCESS_LOG,
  P_RESOLVERS,
  P_SPLICE,
  P_COUNT
};
static const char *const proxy_keys[P_COUNT] = {
    [P_TIMEOUTS] = "timeouts",     [P_LIMITS] = "limits",
    [P_MAX_HELLO] = "max_hello",   [P_ALLOW_TARGETS] = "allow_targets",
    [P_ACCESS_LOG] = "access_log", [P_RESOLVERS] = "resolvers",
    [P_SPLICE] = "splice",
};

enum { T_PEEK, T_CONNECT, T_IDLE, T_DRAIN, T_COUNT };
static const char *const timeout_keys[T_COUNT] = {
    [T_PEEK] = "peek",
    [T_CONNECT] = "connect",
    [T_IDLE] = "idle",
    [T_DRAIN] = "drain",
};

enum { LIM_CONNECTIONS, LIM_PER_SOURCE, LIM_PEEKING, LIM_COUNT };
static const char *const limit_keys[LIM_COUNT] = {
    [LIM_CONNECTIONS] = "connections",
    [LIM_PER_SOURCE] = "per_source",
    [LIM_PEEKING] = "peeking",
};

#define DEFAULT_DRAIN_MS 30000
#define DEFAULT_CONNECTIONS 100000
#define DEFAULT_PER_SOURCE 256
#define DEFAULT_PEEKING 10000

static void parse_timeouts(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[T_COUNT];
  uint64_t *fields[T_COUNT] = {
      [T_PEEK] = &cfg->proxy.peek_timeout_ms,
      [T_CONNECT] = &cfg->proxy.connect_timeout_ms,
      [T_IDLE] = &cfg->proxy.idle_timeout_ms,
      [T_DRAIN] = &cfg->proxy.drain_timeout_ms,
  };
  if (!walk_mapping(c, slot->value, slot->key, "'timeouts'", timeout_keys,
                    T_COUNT, s))
    return;
  for (size_t i = 0; i < T_COUNT; i++) {
    char where[32];
    uint64_t ms;
    if (s[i].key == NULL)
      continue;
    snprintf(where, sizeof where, "'%s'", timeout_keys[i]);
    if (!get_duration(c, s[i].value, s[i].key, where, &ms))
      continue;
    if (ms == 0 && i != T_DRAIN) {
      error_at(c, s[i].value, "%s must be longer than 0s", where);
      continue;
    }
    *fields[i] = ms;
  }
}

static void parse_limits(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[LIM_COUNT];
  uint32_t *fields[LIM_COUNT] = {
      [LIM_CONNECTIONS] = &cfg->proxy.max_connections,
      [LIM_PER_SOURCE] = &cfg->proxy.max_per_source,
      [LIM_PEEKING] = &cfg->proxy.max_peeking,
  };
  if (!walk_mapping(c, slot->value, slot->key, "'limits'", limit_keys,
                    LIM_COUNT, s))
    return;
  for (size_t i = 0; i < LIM_COUNT; i++) {
    char where[32];
    if (s[i].key == NULL)
      continue;
    snprintf(where, sizeof where, "'%s'", limit_keys[i]);
    get_u32(c, s[i].value, s[i].key, where, 1, fields[i]);
  }
}

static void parse_max_hello(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  const char *what = "a size such as 16KiB or 1MiB";
  const char *text = text_of(c, v, slot->key, what, "'max_hello'");
  uint64_t bytes;
  if (text == NULL)
    return;
  if (core_size_parse(text, &bytes) != 0) {
    expected(c, v, NULL, what, "'max_hello'");
    return;
  }
  /* Below 1KiB no real ClientHello fits; above 1MiB a peek costs too much
   * memory per connection. */
  if (bytes < 1024 || bytes > 1024 * 1024) {
    error_at(c, v,
             "max_hello %s is out of range; expected 1KiB..1MiB (16KiB "
             "suits most clients)",
             text);
    return;
  }
  c->config->proxy.max_hello = (uint32_t)bytes;
}

/* proxy.resolvers: DNS servers for device hostnames, kept in the
 * "ip:port,[ip6]:port" form c-ares takes. */
static void parse_resolvers(ctx_t *c, const slot_t *slot) {
  const node_t *items;
  size_t n;
  if (!items_of(c, slot->value, slot->key, "a list of addresses", "'resolvers'",
                &items, &n))
    return;
  size_t cap = n * (INET6_ADDRSTRLEN + 10) + 1, len = 0;
  char *csv = xcalloc(1, cap);
  for (size_t i = 0; i < n; i++) {
    struct sockaddr_storage ss;
    char text[INET6_ADDRSTRLEN + 10];
    if (!get_hostport(c, &items[i], NULL, "'resolvers'", &ss))
      continue;
    core_sockaddr_format((struct sockaddr *)&ss, text, sizeof text);
    len += (size_t)snprintf(csv + len, cap - len, "%s%s", len ? "," : "", text);
  }
  free(c->config->proxy.resolvers);
  c->config->proxy.resolvers = csv;
}

static void parse_proxy(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[P_COUNT];
  if (!walk_mapping(c, slot->value, slot->key, "'proxy'", proxy_keys, P_COUNT,
                    s))
    return;
  if (s[P_TIMEOUTS].key != NULL)
    parse_timeouts(c, &s[P_TIMEOUTS]);
  if (s[P_LIMITS].key != NULL)
    parse_limits(c, &s[P_LIMITS]);

  if (s[P_MAX_HELLO].key != NULL)
    parse_max_hello(c, &s[P_MAX_HELLO]);

  if (s[P_ALLOW_TARGETS].key != NULL) {
    const node_t *items;
    size_t n;
    if (items_of(c, s[P_ALLOW_TARGETS].value, s[P_ALLOW_TARGETS].key,
                 "a list of address prefixes", "'allow_targets'", &items, &n)) {
      cfg->proxy.allow_targets = xcalloc(n, sizeof *cfg->proxy.allow_targets);
      for (size_t i = 0; i < n; i++) {
        core_prefix_t *p =
            &cfg->proxy.allow_targets[cfg->proxy.n_allow_targets];
        if (get_prefix(c, &items[i], "'allow_targets'", p))
          cfg->proxy.n_allow_targets++;
      }
    }
  }

  if (s[P_RESOLVERS].key != NULL)
    parse_resolvers(c, &s[P_RESOLVERS]);

  if (s[P_ACCESS_LOG].key != NULL) {
    const node_t *v = s[P_ACCESS_LOG].value;
    if (v->kind == REG_YAML_SCALAR && v->plain && bool_value(v) == 0) {
      free(cfg->proxy.access_log);
      cfg->proxy.access_log = xstrdup("off");
    } else {
      get_string(c, v, s[P_ACCESS_LOG].key, "'stderr', 'off' or a file path",
                 "'access_log'", &cfg->proxy.access_log);
    }
  }

  if (s[P_SPLICE].key != NULL) {
    const node_t *v = s[P_SPLICE].value;
    int b = v->kind == REG_YAML_SCALAR ? bool_value(v) : -1;
    if (b >= 0)
      cfg->proxy.splice = b ? REG_SPLICE_ON : REG_SPLICE_OFF;
    else if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "auto") == 0)
      cfg->proxy.splice = REG_SPLICE_AUTO;
    else
      expected(c, v, s[P_SPLICE].key, "'auto', 'on' or 'off'", "'splice'");
  }
}

/* ---- dns ----------------------------------------------------------------- */

enum {
  D_LISTEN,
  D_ZONES,
  D_TSIG_KEYS,
  D_RATE_LIMIT,
  D_TCP_IDLE,
  D_TCP_CONNECTIONS,
  D_VERSION,
  D_IDENTITY,
  D_SERIAL_BATCH,
  D_COUNT
};
static const char *const dns_keys[D_COUNT] = {
    [D_LISTEN] = "listen",
    [D_ZONES] = "zones",
    [D_TSIG_KEYS] = "tsig_keys",
    [D_RATE_LIMIT] = "rate_limit",
    [D_TCP_IDLE] = "tcp_idle",
    [D_TCP_CONNECTIONS] = "tcp_connections",
    [D_VERSION] = "version",
    [D_IDENTITY] = "identity",
    [D_SERIAL_BATCH] = "serial_batch",
};

enum {
  Z_NAME,
  Z_PROXY,
  Z_TTL,
  Z_NAMESERVERS,
  Z_GLUE,
  Z_SOA,
  Z_NOTIFY,
  Z_ALLOW_TRANSFER,
  Z_COUNT
};
static const char *const zone_keys[Z_COUNT] = {
    [Z_NAME] = "name",     [Z_PROXY] = "proxy",
    [Z_TTL] = "ttl",       [Z_NAMESERVERS] = "nameservers",
    [Z_GLUE] = "glue",     [Z_SOA] = "soa",
    [Z_NOTIFY] = "notify", [Z_ALLOW_TRANSFER] = "allow_transfer",
};

enum { SOA_EMAIL, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM, SOA_COUNT };
static const char *const soa_keys[SOA_COUNT] = {
    [SOA_EMAIL] = "email",   [SOA_REFRESH] = "refresh", [SOA_RETRY] = "retry",
    [SOA_EXPIRE] = "expire", [SOA_MINIMUM] = "minimum",
};

enum { RL_RESPONSES, RL_SLIP, RL_COUNT };
static const char *const rate_limit_keys[RL_COUNT] = {
    [RL_RESPONSES] = "responses_per_second", [RL_SLIP] = "slip"};

/* Fills an address array from a non-empty list of IP literals; returns the
 * count. */
static size_t parse_ip_list(ctx_t *c, const slot_t *slot, const char *where,
                            core_ip_t **out) {
  const node_t *items;
  size_t n, count = 0;
  if (!items_of(c, slot->value, slot->key, "a list of IP addresses", where,
                &items, &n))
    return 0;
  if (n == 0) {
    error_at(c, is_null(slot->value) ? slot->key : slot->value,
             "%s needs at least one IP address, such as 192.0.2.7", where);
    return 0;
  }
  *out = xcalloc(n, sizeof **out);
  for (size_t i = 0; i < n; i++)
    if (get_ip(c, &items[i], where, &(*out)[count]))
      count++;
  return count;
}

/* A 'listen:' list of addresses with ports. */
static void parse_listen(ctx_t *c, const slot_t *slot, const char *what,
                         struct sockaddr_storage **out, size_t *n_out) {
  const node_t *items;
  size_t n;
  if (!items_of(c, slot->value, slot->key, "a list of addresses", "'listen'",
                &items, &n))
    return;
  free(*out);
  *out = xcalloc(n ? n : 1, sizeof **out);
  *n_out = 0;
  for (size_t i = 0; i < n; i++)
    if (get_hostport(c, &items[i], NULL, "'listen'", &(*out)[*n_out]) &&
        claim_address(c, &items[i], &(*out)[*n_out], what))
      (*n_out)++;
}

static bool valid_email(const char *s) {
  const char *at = strchr(s, '@');
  char name[CORE_NAME_MAX + 1];
  if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
    return false;
  for (const char *p = s; p < at; p++)
    if ((unsigned char)*p <= ' ' || *p == 0x7f)
      return false;
  return core_name_normalise(at + 1, strlen(at + 1), name, false) >= 0;
}

static void parse_soa(ctx_t *c, const slot_t *slot, reg_zone_t *z) {
  slot_t s[SOA_COUNT];
  uint32_t *timers[SOA_COUNT] = {
      [SOA_REFRESH] = &z->soa_refresh,
      [SOA_RETRY] = &z->soa_retry,
      [SOA_EXPIRE] = &z->soa_expire,
      [SOA_MINIMUM] = &z->soa_minimum,
  };
  if (!walk_mapping(c, slot->value, slot->key, "'soa'", soa_keys, SOA_COUNT, s))
    return;
  if (s[SOA_EMAIL].key != NULL) {
    const char *what = "an email address such as hostmaster@example.net";
    char *email = NULL;
    if (get_string(c, s[SOA_EMAIL].value, s[SOA_EMAIL].key, what, "'email'",
                   &email)) {
      if (valid_email(email)) {
        free(z->soa_email);
        z->soa_email = email;
      } else {
        expected(c, s[SOA_EMAIL].value, NULL, what, "'email'");
        free(email);
      }
    }
  }
  for (size_t i = SOA_REFRESH; i < SOA_COUNT; i++) {
    char where[32];
    if (s[i].key == NULL)
      continue;
    snprintf(where, sizeof where, "'%s'", soa_keys[i]);
    get_seconds(c, s[i].value, s[i].key, where, TTL_MAX, timers[i]);
  }
}

static void parse_glue(ctx_t *c, const slot_t *slot, reg_zone_t *z) {
  const node_t *map = slot->value;
  if (!is_mapping_or_null(c, map, slot->key, "'glue'") || is_null(map))
    return;
  z->glue = xcalloc(map->len, sizeof *z->glue);
  for (size_t i = 0; i < map->len; i++) {
    const node_t *k = reg_yaml_key(map, i);
    char name[CORE_NAME_MAX + 1];
    if (k->duplicate ||
        !get_name(c, k, "a glue record", "ns1.example.net", false, name))
      continue;
    if (z->name != NULL &&
        !core_name_in_zone(name, strlen(name), z->name, strlen(z->name))) {
      error_at(c, k,
               "glue name '%s' is outside zone '%s'; glue is only for "
               "nameservers inside the zone",
               name, z->name);
      continue;
    }
    slot_t value = {k, reg_yaml_value(map, i)};
    reg_glue_t *g = &z->glue[z->n_glue++];
    g->name = xstrdup(name);
    g->n_addrs = parse_ip_list(c, &value, "a glue record", &g->addrs);
  }
}

static const reg_tsig_key_t *find_tsig_key(const reg_config_t *cfg,
                                           const char *name) {
  for (size_t i = 0; i < cfg->dns.n_tsig_keys; i++)
    if (strcmp(cfg->dns.tsig_keys[i].name, name) == 0)
      return &cfg->dns.tsig_keys[i];
  return NULL;
}

/* A key name that dns.tsig_keys defines, normalised into out. */
static bool get_key_name(ctx_t *c, const node_t *n, const char *where,
                         char *out) {
  if (!get_name(c, n, where, "xfr-key", false, out))
    return false;
  const reg_config_t *cfg = c->config;
  if (find_tsig_key(cfg, out) != NULL)
    return true;
  if (cfg->dns.n_tsig_keys == 0) {
    error_at(c, n,
             "no TSIG key named '%s' in %s; define it under 'dns: tsig_keys:'",
             out, where);
    return false;
  }
  const char **names = xcalloc(cfg->dns.n_tsig_keys, sizeof *names);
  for (size_t i = 0; i < cfg->dns.n_tsig_keys; i++)
    names[i] = cfg->dns.tsig_keys[i].name;
  char *all = join(names, cfg->dns.n_tsig_keys);
  error_at(c, n, "no TSIG key named '%s' in %s; the keys are: %s", out, where,
           all);
  free(all);
  free(names);
  return false;
}

enum { N_ADDRESS, N_KEY, N_COUNT };
static const char *const notify_keys[N_COUNT] = {
    [N_ADDRESS] = "address", [N_KEY] = "key"};

/* notify: [ADDR, {address: ADDR, key: NAME}, ...] */
static void parse_notify(ctx_t *c, const slot_t *slot, reg_zone_t *z) {
  const node_t *items;
  size_t n;
  if (!items_of(c, slot->value, slot->key,
                "a list of addresses such as 192.0.2.53:53", "'notify'", &items,
                &n))
    return;
  z->notify = xcalloc(n ? n : 1, sizeof *z->notify);
  for (size_t i = 0; i < n; i++) {
    reg_notify_t nt;
    memset(&nt, 0, sizeof nt);
    const node_t *item = &items[i], *addr = item;
    slot_t ns[N_COUNT];
    if (item->kind == REG_YAML_MAPPING) {
      if (!walk_mapping(c, item, NULL, "a notify target", notify_keys, N_COUNT,
                        ns))
        continue;
      if (!present(&ns[N_ADDRESS])) {
        error_at(c, ns[N_ADDRESS].key ? ns[N_ADDRESS].key : item,
                 "notify target is missing 'address'; add e.g. "
                 "'address: 192.0.2.53:53'");
        continue;
      }
      addr = ns[N_ADDRESS].value;
      char key[CORE_NAME_MAX + 1];
      if (present(&ns[N_KEY])) {
        if (!get_key_name(c, ns[N_KEY].value, "'notify'", key))
          continue;
        nt.key = xstrdup(key);
      }
    }
    if (!get_hostport(c, addr, NULL, "'notify'", &nt.addr)) {
      free(nt.key);
      continue;
    }
    z->notify[z->n_notify++] = nt;
  }
}

/* A prefix when it looks like an address, else a TSIG key name. */
static void parse_allow_transfer(ctx_t *c, const slot_t *slot, reg_zone_t *z) {
  const node_t *items;
  size_t n;
  if (!items_of(c, slot->value, slot->key,
                "a list of prefixes or TSIG key names", "'allow_transfer'",
                &items, &n))
    return;
  z->transfer_prefixes = xcalloc(n ? n : 1, sizeof *z->transfer_prefixes);
  z->transfer_keys = xcalloc(n ? n : 1, sizeof *z->transfer_keys);
  for (size_t i = 0; i < n; i++) {
    const char *s = text_of(c, &items[i], NULL, "a prefix or a TSIG key name",
                            "'allow_transfer'");
    if (s == NULL)
      continue;
    if (strchr(s, ':') || strchr(s, '/') || (*s >= '0' && *s <= '9')) {
      if (get_prefix(c, &items[i], "'allow_transfer'",
                     &z->transfer_prefixes[z->n_transfer_prefixes]))
        z->n_transfer_prefixes++;
      continue;
    }
    char key[CORE_NAME_MAX + 1];
    if (get_key_name(c, &items[i], "'allow_transfer'", key))
      z->transfer_keys[z->n_transfer_keys++] = xstrdup(key);
  }
}

static void parse_zone(ctx_t *c, const node_t *item, const node_t **seen,
                       size_t index) {
  reg_config_t *cfg = c->config;
  slot_t s[Z_COUNT];
  (void)index;
  if (!walk_mapping(c, item, NULL, "a zone", zone_keys, Z_COUNT, s))
    return;

  reg_zone_t *z = &cfg->dns.zones[cfg->dns.n_zones++];
  z->ttl = 60;
  z->soa_refresh = 3600;
  z->soa_retry = 600;
  z->soa_expire = 7 * 86400;
  z->soa_minimum = 60;
  z->serial = (uint32_t)time(NULL);

  char name[CORE_NAME_MAX + 1];
  if (!present(&s[Z_NAME])) {
    error_at(c, s[Z_NAME].key ? s[Z_NAME].key : item,
             "zone is missing 'name'; add e.g. 'name: example.net'");
  } else if (get_name(c, s[Z_NAME].value, "'name'", "example.net", false,
                      name)) {
    size_t i = 0;
    while (i + 1 < cfg->dns.n_zones &&
           (cfg->dns.zones[i].name == NULL ||
            strcmp(cfg->dns.zones[i].name, name) != 0))
      i++;
    if (i + 1 < cfg->dns.n_zones)
      error_at(c, s[Z_NAME].value,
               "duplicate zone '%s'; already defined at line %u, column %u",
               name, seen[i]->line, seen[i]->column);
    else
      z->name = xstrdup(name);
    seen[cfg->dns.n_zones - 1] = s[Z_NAME].value;
  }

  if (!present(&s[Z_PROXY]))
    error_at(c, s[Z_PROXY].key ? s[Z_PROXY].key : item,
             "zone is missing 'proxy'; add the proxy's public addresses, "
             "e.g. 'proxy: [192.0.2.1]'");
  else
    z->n_proxy = parse_ip_list(c, &s[Z_PROXY], "'proxy'", &z->proxy);

  if (s[Z_TTL].key != NULL)
    get_seconds(c, s[Z_TTL].value, s[Z_TTL].key, "'ttl'", TTL_MAX, &z->ttl);

  if (s[Z_NAMESERVERS].key != NULL) {
    const node_t *items;
    size_t n;
    if (items_of(c, s[Z_NAMESERVERS].value, s[Z_NAMESERVERS].key,
                 "a list of host names", "'nameservers'", &items, &n)) {
      z->nameservers = xcalloc(n, sizeof *z->nameservers);
      for (size_t i = 0; i < n; i++)
        if (get_name(c, &items[i], "'nameservers'", "ns1.example.net", false,
                     name))
          z->nameservers[z->n_nameservers++] = xstrdup(name);
    }
  }

  if (s[Z_GLUE].key != NULL)
    parse_glue(c, &s[Z_GLUE], z);
  if (s[Z_SOA].key != NULL)
    parse_soa(c, &s[Z_SOA], z);
  if (z->soa_email == NULL && z->name != NULL)
    z->soa_email = format("hostmaster@%s", z->name);

  if (s[Z_NOTIFY].key != NULL)
    parse_notify(c, &s[Z_NOTIFY], z);
  if (s[Z_ALLOW_TRANSFER].key != NULL)
    parse_allow_transfer(c, &s[Z_ALLOW_TRANSFER], z);
}

static void parse_zones(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  if (is_null(v))
    return;
  if (v->kind != REG_YAML_SEQUENCE) {
    expected(c, v, slot->key, "a list of zones", "'zones'");
    return;
  }
  reg_config_t *cfg = c->config;
  cfg->dns.zones = xcalloc(v->len, sizeof *cfg->dns.zones);
  const node_t **seen = xcalloc(v->len, sizeof *seen);
  for (size_t i = 0; i < v->len; i++)
    parse_zone(c, &v->kids[i], seen, i);
  free(seen);
}

static void parse_rate_limit(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  slot_t s[RL_COUNT];
  if (is_null(v) || bool_value(v) == 0)
    return;
  if (v->kind != REG_YAML_MAPPING) {
    expected(c, v, slot->key,
             "'off' or a mapping such as {responses_per_second: 20, slip: 2}",
             "'rate_limit'");
    return;
  }
  walk_mapping(c, v, slot->key, "'rate_limit'", rate_limit_keys, RL_COUNT, s);
  uint64_t n, slip = 2;
  if (!present(&s[RL_RESPONSES])) {
    error_at(c, s[RL_RESPONSES].key ? s[RL_RESPONSES].key : v,
             "'rate_limit' needs 'responses_per_second', e.g. "
             "{responses_per_second: 20, slip: 2}");
    return;
  }
  if (!get_uint(c, s[RL_RESPONSES].value, s[RL_RESPONSES].key,
                "'responses_per_second'", 1, 1000000, &n))
    return;
  if (s[RL_SLIP].key != NULL &&
      !get_uint(c, s[RL_SLIP].value, s[RL_SLIP].key, "'slip'", 0, 10, &slip))
    return;
  c->config->dns.rrl_responses_per_second = (uint32_t)n;
  c->config->dns.rrl_slip = (uint32_t)slip;
}

enum { K_ALGORITHM, K_SECRET, K_COUNT };
static const char *const tsig_key_keys[K_COUNT] = {
    [K_ALGORITHM] = "algorithm", [K_SECRET] = "secret"};

/* Strict RFC 4648 base64 with padding; returns the decoded length, or -1.
 * out needs 3 * (len / 4) bytes. */
static ssize_t base64_decode(const char *s, size_t len, uint8_t *out) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = 0;
  if (len == 0 || len % 4 != 0)
    return -1;
  for (size_t i = 0; i < len; i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; k++) {
      char ch = s[i + k];
      const char *at = ch ? strchr(alphabet, ch) : NULL;
      if (ch == '=' && i + 4 == len && k >= 2 && (k == 3 || s[i + 3] == '=')) {
        pad++;
        v <<= 6;
        continue;
      }
      if (at == NULL || pad > 0)
        return -1;
      v = (v << 6) | (uint32_t)(at - alphabet);
    }
    out[n++] = (uint8_t)(v >> 16);
    if (pad < 2)
      out[n++] = (uint8_t)(v >> 8);
    if (pad < 1)
      out[n++] = (uint8_t)v;
  }
  return (ssize_t)n;
}

static void parse_tsig_key(ctx_t *c, const node_t *key, const node_t *value) {
  reg_config_t *cfg = c->config;
  char name[CORE_NAME_MAX + 1];
  slot_t s[K_COUNT];
  if (!get_name(c, key, "a TSIG key", "xfr-key", false, name))
    return;
  if (find_tsig_key(cfg, name) != NULL) {
    error_at(c, key, "duplicate TSIG key '%s'", name);
    return;
  }
  if (!walk_mapping(c, value, key, "a TSIG key", tsig_key_keys, K_COUNT, s))
    return;
  reg_tsig_key_t k = {.algorithm = REG_TSIG_HMAC_SHA256};
  bool ok = true;
  if (present(&s[K_ALGORITHM])) {
    const node_t *v = s[K_ALGORITHM].value;
    const char *what = "'hmac-sha256' or 'hmac-sha512'";
    const char *alg = text_of(c, v, s[K_ALGORITHM].key, what, "'algorithm'");
    if (alg && strcasecmp(alg, "hmac-sha256") == 0) {
      k.algorithm = REG_TSIG_HMAC_SHA256;
    } else if (alg && strcasecmp(alg, "hmac-sha512") == 0) {
      k.algorithm = REG_TSIG_HMAC_SHA512;
    } else if (alg) {
      char buf[QUOTE_SIZE];
      error_at(c, v, "unknown TSIG algorithm %s; expected %s",
               quote_node(v, buf, sizeof buf), what);
      ok = false;
    } else {
      ok = false;
    }
  }
  if (!present(&s[K_SECRET])) {
    error_at(c, s[K_SECRET].key ? s[K_SECRET].key : key,
             "TSIG key '%s' is missing 'secret'; add one made by "
             "'openssl rand -base64 32'",
             name);
    ok = false;
  } else {
    const node_t *v = s[K_SECRET].value;
    const char *text =
        text_of(c, v, s[K_SECRET].key, "a base64 secret", "'secret'");
    if (text == NULL) {
      ok = false;
    } else {
      size_t len = strlen(text);
      k.secret = xmalloc(len / 4 * 3 + 1);
      ssize_t n = base64_decode(text, len, k.secret);
      if (n <= 0) {
        error_at(c, v,
                 "bad base64 in 'secret' of TSIG key '%s'; expected e.g. the "
                 "output of 'openssl rand -base64 32'",
                 name);
        ok = false;
      }
      k.secret_len = n > 0 ? (size_t)n : 0;
    }
  }
  if (!ok) {
    free(k.secret);
    return;
  }
  k.name = xstrdup(name);
  cfg->dns.tsig_keys[cfg->dns.n_tsig_keys++] = k;
}

static void parse_tsig_keys(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  if (!is_mapping_or_null(c, v, slot->key, "'tsig_keys'") || is_null(v))
    return;
  c->config->dns.tsig_keys =
      xcalloc(v->len ? v->len : 1, sizeof *c->config->dns.tsig_keys);
  for (size_t i = 0; i < v->len; i++)
    if (!reg_yaml_key(v, i)->duplicate)
      parse_tsig_key(c, reg_yaml_key(v, i), reg_yaml_value(v, i));
}

/* off (refuse), on (the given default) or a text of at most 255 bytes: one
 * TXT string. */
static void parse_chaos(ctx_t *c, const slot_t *slot, const char *where,
                        const char *on, char **out) {
  const node_t *v = slot->value;
  int b = v->plain ? bool_value(v) : -1;
  if (is_null(v) || b == 0)
    return;
  const char *text =
      b == 1 ? on : text_of(c, v, slot->key, "off, on or a text", where);
  if (text == NULL)
    return;
  if (*text == '\0' || strlen(text) > 255) {
    error_at(c, v, "%s must be 1 to 255 bytes long", where);
    return;
  }
  free(*out);
  *out = xstrdup(text);
}

static void parse_dns(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[D_COUNT];
  if (!walk_mapping(c, slot->value, slot->key, "'dns'", dns_keys, D_COUNT, s))
    return;
  if (s[D_LISTEN].key != NULL)
    parse_listen(c, &s[D_LISTEN], "dns.listen", &cfg->dns.listen,
                 &cfg->dns.n_listen);
  /* Zones name keys, so keys come first. */
  if (s[D_TSIG_KEYS].key != NULL)
    parse_tsig_keys(c, &s[D_TSIG_KEYS]);
  if (s[D_ZONES].key != NULL)
    parse_zones(c, &s[D_ZONES]);
  if (s[D_RATE_LIMIT].key != NULL)
    parse_rate_limit(c, &s[D_RATE_LIMIT]);
  if (s[D_TCP_IDLE].key != NULL) {
    uint64_t ms;
    if (get_duration(c, s[D_TCP_IDLE].value, s[D_TCP_IDLE].key, "'tcp_idle'",
                     &ms)) {
      if (ms == 0)
        error_at(c, s[D_TCP_IDLE].value, "'tcp_idle' must be longer than 0s");
      else
        cfg->dns.tcp_idle_ms = ms;
    }
  }
  if (s[D_SERIAL_BATCH].key != NULL) {
    uint64_t ms;
    if (get_duration(c, s[D_SERIAL_BATCH].value, s[D_SERIAL_BATCH].key,
                     "'serial_batch'", &ms)) {
      if (ms < 1000)
        error_at(c, s[D_SERIAL_BATCH].value,
                 "'serial_batch' must be at least 1s (a serial counts "
                 "seconds)");
      else
        cfg->dns.serial_batch_ms = ms;
    }
  }
  if (s[D_VERSION].key != NULL)
    parse_chaos(c, &s[D_VERSION], "'version'", "ddport " DDPORT_VERSION,
                &cfg->dns.version);
  if (s[D_IDENTITY].key != NULL) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
      host[0] = '\0';
    parse_chaos(c, &s[D_IDENTITY], "'identity'", host, &cfg->dns.identity);
  }
  if (s[D_TCP_CONNECTIONS].key != NULL)
    get_u32(c, s[D_TCP_CONNECTIONS].value, s[D_TCP_CONNECTIONS].key,
            "'tcp_connections'", 1, &cfg->dns.tcp_connections);
}

/* ---- update -------------------------------------------------------------- */

enum {
  U_LISTEN,
  U_TLS,
  U_TIMEOUTS,
  U_LIMITS,
  U_CREDENTIAL_CACHE,
  U_MAX_REQUEST,
  U_COUNT
};
static const char *const update_keys[U_COUNT] = {
    [U_LISTEN] = "listen",
    [U_TLS] = "tls",
    [U_TIMEOUTS] = "timeouts",
    [U_LIMITS] = "limits",
    [U_CREDENTIAL_CACHE] = "credential_cache",
    [U_MAX_REQUEST] = "max_request",
};

enum { UT_CERT, UT_KEY, UT_LISTEN, UT_COUNT };
static const char *const update_tls_keys[UT_COUNT] = {
    [UT_CERT] = "cert", [UT_KEY] = "key", [UT_LISTEN] = "listen"};

enum { UTO_REQUEST, UTO_IDLE, UTO_COUNT };
static const char *const update_timeout_keys[UTO_COUNT] = {
    [UTO_REQUEST] = "request", [UTO_IDLE] = "idle"};

enum { ULIM_CONNECTIONS, ULIM_PER_MINUTE, ULIM_COUNT };
static const char *const update_limit_keys[ULIM_COUNT] = {
    [ULIM_CONNECTIONS] = "connections",
    [ULIM_PER_MINUTE] = "updates_per_minute"};

static char *resolve_path(const ctx_t *c, const char *text);

static void parse_update_tls(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  const node_t *v = slot->value;
  slot_t s[UT_COUNT];
  if (is_null(v) || bool_value(v) == 0)
    return;
  if (v->kind != REG_YAML_MAPPING) {
    expected(c, v, slot->key,
             "'off' or a mapping such as {cert: FILE, key: FILE, listen: "
             "[ADDR]}",
             "'tls'");
    return;
  }
  if (!walk_mapping(c, v, slot->key, "'tls'", update_tls_keys, UT_COUNT, s))
    return;
  char *path = NULL;
  for (size_t i = UT_CERT; i <= UT_KEY; i++) {
    char where[16];
    snprintf(where, sizeof where, "'%s'", update_tls_keys[i]);
    if (!present(&s[i])) {
      error_at(c, s[i].key ? s[i].key : v,
               "'tls' needs 'cert' and 'key' (PEM files), e.g. {cert: "
               "update.crt, key: update.key, listen: [127.0.0.1:8444]}");
      continue;
    }
    if (!get_string(c, s[i].value, s[i].key, "a file path", where, &path))
      continue;
    char **field = i == UT_CERT ? &cfg->update.tls_cert : &cfg->update.tls_key;
    free(*field);
    *field = resolve_path(c, path);
  }
  free(path);
  if (present(&s[UT_LISTEN]))
    parse_listen(c, &s[UT_LISTEN], "update.tls.listen", &cfg->update.tls_listen,
                 &cfg->update.n_tls_listen);
  else if (s[UT_LISTEN].key == NULL)
    error_at(c, v,
             "'tls' needs a 'listen' address for HTTPS, e.g. listen: "
             "[127.0.0.1:8444]");
}

static void parse_update(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[U_COUNT];
  if (!walk_mapping(c, slot->value, slot->key, "'update'", update_keys, U_COUNT,
                    s))
    return;
  if (s[U_LISTEN].key != NULL)
    parse_listen(c, &s[U_LISTEN], "update.listen", &cfg->update.listen,
                 &cfg->update.n_listen);
  if (s[U_TLS].key != NULL)
    parse_update_tls(c, &s[U_TLS]);

  slot_t t[UTO_COUNT];
  uint64_t *timeouts[UTO_COUNT] = {
      [UTO_REQUEST] = &cfg->update.request_timeout_ms,
      [UTO_IDLE] = &cfg->update.idle_timeout_ms,
  };
  if (present(&s[U_TIMEOUTS]) &&
      walk_mapping(c, s[U_TIMEOUTS].value, s[U_TIMEOUTS].key, "'timeouts'",
                   update_timeout_keys, UTO_COUNT, t))
    for (size_t i = 0; i < UTO_COUNT; i++) {
      char where[16];
      uint64_t ms;
      if (t[i].key == NULL)
        continue;
      snprintf(where, sizeof where, "'%s'", update_timeout_keys[i]);
      if (!get_duration(c, t[i].value, t[i].key, where, &ms))
        continue;
      if (ms == 0)
        error_at(c, t[i].value, "%s must be longer than 0s", where);
      else
        *timeouts[i] = ms;
    }

  slot_t l[ULIM_COUNT];
  if (present(&s[U_LIMITS]) &&
      walk_mapping(c, s[U_LIMITS].value, s[U_LIMITS].key, "'limits'",
                   update_limit_keys, ULIM_COUNT, l)) {
    if (l[ULIM_CONNECTIONS].key != NULL)
      get_u32(c, l[ULIM_CONNECTIONS].value, l[ULIM_CONNECTIONS].key,
              "'connections'", 1, &cfg->update.max_connections);
    if (l[ULIM_PER_MINUTE].key != NULL)
      get_u32(c, l[ULIM_PER_MINUTE].value, l[ULIM_PER_MINUTE].key,
              "'updates_per_minute'", 0, &cfg->update.updates_per_minute);
  }

  if (s[U_CREDENTIAL_CACHE].key != NULL) {
    uint64_t ms;
    if (get_duration(c, s[U_CREDENTIAL_CACHE].value, s[U_CREDENTIAL_CACHE].key,
                     "'credential_cache'", &ms)) {
      if (ms > 3600 * 1000)
        error_at(c, s[U_CREDENTIAL_CACHE].value,
                 "'credential_cache' is out of range; expected 0s..1h (5m "
                 "suits routers that refresh every minute)");
      else
        cfg->update.credential_cache_ms = ms;
    }
  }

  if (s[U_MAX_REQUEST].key != NULL) {
    const node_t *v = s[U_MAX_REQUEST].value;
    const char *what = "a size such as 8KiB";
    const char *text =
        text_of(c, v, s[U_MAX_REQUEST].key, what, "'max_request'");
    uint64_t bytes;
    if (text != NULL && core_size_parse(text, &bytes) != 0)
      expected(c, v, NULL, what, "'max_request'");
    else if (text != NULL && (bytes < 1024 || bytes > 64 * 1024))
      error_at(c, v,
               "max_request %s is out of range; expected 1KiB..64KiB (8KiB "
               "suits every dyndns2 client)",
               text);
    else if (text != NULL)
      cfg->update.max_request = (uint32_t)bytes;
  }
}

/* ---- devices ------------------------------------------------------------- */

enum {
  DEV_OWNER,
  DEV_ADDRESS,
  DEV_PORTS,
  DEV_PROXY_PROTOCOL,
  DEV_ENABLED,
  DEV_COUNT
};
static const char *const device_keys[DEV_COUNT] = {
    [DEV_OWNER] = "owner",     [DEV_ADDRESS] = "address",
    [DEV_PORTS] = "ports",     [DEV_PROXY_PROTOCOL] = "proxy_protocol",
    [DEV_ENABLED] = "enabled",
};

/* Memory for what a device points to: the configuration's devices arena,
 * freed with them. */
static void *device_alloc(ctx_t *c, size_t size) {
  return core_arena_alloc(&c->config->device_mem, size);
}

static char *device_strdup(ctx_t *c, const char *s) {
  return core_arena_strndup(&c->config->device_mem, s, strlen(s));
}

/* "192.0.2.300" is a bad address, not a host name: a name's last label is
 * never all digits. */
static bool looks_like_hostname(const node_t *n) {
  char name[CORE_NAME_MAX + 1];
  int len = core_name_normalise(n->text, n->len, name, false);
  if (len < 0)
    return false;
  const char *last = strrchr(name, '.');
  last = last ? last + 1 : name;
  return strspn(last, "0123456789") != strlen(last);
}

static void parse_device_address(ctx_t *c, const slot_t *slot,
                                 reg_device_t *d) {
  const node_t *v = slot->value;
  const char *what = "an IP address or a list of them";
  if (v->kind == REG_YAML_SEQUENCE) {
    core_ip_t *list = NULL;
    size_t n = parse_ip_list(c, slot, "'address'", &list);
    /* The proxy tries each in turn for one visitor; a longer list would
     * only lengthen an offline device's timeout. */
    if (n > REG_MAX_ADDRESSES) {
      error_at(c, v,
               "%zu addresses for 'address'; a device may have at most "
               "%d",
               n, REG_MAX_ADDRESSES);
      n = REG_MAX_ADDRESSES;
    }
    d->n_addrs = (uint16_t)n;
    if (n) {
      d->addrs = device_alloc(c, n * sizeof *d->addrs);
      memcpy(d->addrs, list, n * sizeof *d->addrs);
    }
    free(list);
    return;
  }
  const char *s = text_of(c, v, slot->key, what, "'address'");
  if (s == NULL)
    return;
  core_ip_t ip;
  if (core_ip_parse(s, &ip) == 0) {
    d->addrs = device_alloc(c, sizeof *d->addrs);
    d->addrs[0] = ip;
    d->n_addrs = 1;
  } else if (looks_like_hostname(v)) {
    char name[CORE_NAME_MAX + 1];
    if (core_name_normalise(s, strlen(s), name, false) < 0) {
      char buf[QUOTE_SIZE];
      error_at(c, v, "bad hostname %s for 'address'",
               quote_node(v, buf, sizeof buf));
      return;
    }
    d->target_host = device_strdup(c, name);
  } else {
    char buf[QUOTE_SIZE];
    error_at(c, v,
             "bad address %s for 'address'; expected an IP address such as "
             "192.0.2.7 or 2001:db8::7",
             quote_node(v, buf, sizeof buf));
  }
}

static void unknown_listener(ctx_t *c, const node_t *k) {
  const reg_config_t *cfg = c->config;
  char buf[QUOTE_SIZE];
  /* Each name once: a listener on several addresses has an entry each. */
  const char **names = xcalloc(cfg->n_listeners + 1, sizeof *names);
  size_t n_names = 0;
  for (size_t i = 0; i < cfg->n_listeners; i++)
    if (n_names == 0 || strcmp(names[n_names - 1], cfg->listeners[i].name) != 0)
      names[n_names++] = cfg->listeners[i].name;
  const char *guess = closest(k->text, k->len, names, n_names);
  quote_node(k, buf, sizeof buf);
  if (guess != NULL) {
    error_at(c, k, "no listener named %s; did you mean '%s'?", buf, guess);
  } else if (cfg->n_listeners == 0) {
    error_at(c, k,
             "no listener named %s; add it under 'listeners:' with a "
             "protocol and address",
             buf);
  } else {
    char *all = join(names, n_names);
    error_at(c, k, "no listener named %s; the listeners are: %s", buf, all);
    free(all);
  }
  free(names);
}

static void parse_device_ports(ctx_t *c, const slot_t *slot, reg_device_t *d) {
  const node_t *map = slot->value;
  if (!is_mapping_or_null(c, map, slot->key, "'ports'"))
    return;
  if (is_null(map) || map->len == 0) {
    error_at(c, is_null(map) ? slot->key : map,
             "device '%s' has no ports; add e.g. 'ports: {http: 10080}'",
             d->name);
    return;
  }
  d->ports = device_alloc(c, map->len * sizeof *d->ports);
  for (size_t i = 0; i < map->len; i++) {
    const node_t *k = reg_yaml_key(map, i), *v = reg_yaml_value(map, i);
    char buf[QUOTE_SIZE];
    if (k->duplicate)
      continue;
    if (k->kind != REG_YAML_SCALAR || strlen(k->text) != k->len) {
      error_at(c, k, "expected a listener name in 'ports', got %s",
               describe(k, buf, sizeof buf));
      continue;
    }
    bool known = find_listener(c->config, k->text) != NULL;
    if (!known)
      unknown_listener(c, k);
    char where[QUOTE_SIZE + 16];
    snprintf(where, sizeof where, "listener %s",
             quote_node(k, buf, sizeof buf));
    const char *what = "a port number from 1 to 65535";
    const char *s = text_of(c, v, k, what, where);
    if (s == NULL)
      continue;
    uint64_t port = 0;
    int rc = parse_decimal(s, &port);
    if (rc == -EINVAL) {
      expected(c, v, k, what, where);
    } else if (rc == -ERANGE || port < 1 || port > 65535) {
      error_at(c, v, "port %.40s for %s is out of range; expected 1..65535", s,
               where);
    } else if (known && d->n_ports < UINT16_MAX) {
      reg_port_t *p = &d->ports[d->n_ports++];
      p->listener = device_strdup(c, k->text);
      p->port = (uint16_t)port;
    }
  }
}

static void check_device_zone(ctx_t *c, const node_t *key,
                              const reg_device_t *d) {
  const reg_config_t *cfg = c->config;
  size_t len = strlen(d->name), n_named = 0;
  /* Without zones the proxy still routes by name; DNS lives elsewhere. */
  for (size_t i = 0; i < cfg->dns.n_zones; i++) {
    const char *zone = cfg->dns.zones[i].name;
    if (zone == NULL)
      continue;
    n_named++;
    if (core_name_in_zone(d->name, len, zone, strlen(zone)))
      return;
  }
  if (n_named == 0)
    return;
  const char **names = xcalloc(n_named, sizeof *names);
  size_t k = 0;
  for (size_t i = 0; i < cfg->dns.n_zones && k < 8; i++)
    if (cfg->dns.zones[i].name != NULL)
      names[k++] = cfg->dns.zones[i].name;
  char *all = join(names, k);
  error_at(c, key,
           "device '%s' is outside every configured zone (%s%s); rename it "
           "or add its zone under 'dns: zones:'",
           d->name, all, n_named > k ? ", ..." : "");
  free(all);
  free(names);
}

static void parse_device_fields(ctx_t *c, const node_t *key,
                                const node_t *value, reg_device_t *d) {
  const char *name = d->name;

  char where[CORE_NAME_MAX + 16];
  snprintf(where, sizeof where, "device '%s'", name);
  slot_t s[DEV_COUNT];
  if (!walk_mapping(c, value, key, where, device_keys, DEV_COUNT, s))
    return;

  const char *owner =
      present(&s[DEV_OWNER])
          ? nonempty_text(c, s[DEV_OWNER].value, s[DEV_OWNER].key,
                          "an account name", "'owner'")
          : NULL;
  if (owner != NULL) {
    d->owner = device_strdup(c, owner);
    c->owner_at = pos_of(c, s[DEV_OWNER].value);
  }

  if (!present(&s[DEV_ADDRESS]))
    error_at(c, s[DEV_ADDRESS].key ? s[DEV_ADDRESS].key : key,
             "device '%s' is missing 'address'; add e.g. "
             "'address: 192.0.2.7'",
             name);
  else
    parse_device_address(c, &s[DEV_ADDRESS], d);

  if (s[DEV_PORTS].key == NULL)
    error_at(c, key,
             "device '%s' is missing 'ports'; add e.g. "
             "'ports: {http: 10080}'",
             name);
  else
    parse_device_ports(c, &s[DEV_PORTS], d);

  if (s[DEV_PROXY_PROTOCOL].key != NULL) {
    const node_t *v = s[DEV_PROXY_PROTOCOL].value;
    if (bool_value(v) == 0) {
      d->proxy_protocol = REG_PROXY_PROTOCOL_OFF;
    } else if (v->kind == REG_YAML_SCALAR &&
               (strcmp(v->text, "v1") == 0 || strcmp(v->text, "v2") == 0)) {
      d->proxy_protocol =
          v->text[1] == '1' ? REG_PROXY_PROTOCOL_V1 : REG_PROXY_PROTOCOL_V2;
    } else {
      expected(c, v, s[DEV_PROXY_PROTOCOL].key, "'off', 'v1' or 'v2'",
               "'proxy_protocol'");
    }
  }

  if (s[DEV_ENABLED].key != NULL)
    get_bool(c, s[DEV_ENABLED].value, s[DEV_ENABLED].key, "'enabled'",
             &d->enabled);
}

/* The slot of the device named name, or the free slot where it would go. */
static device_slot_t *device_slot(const ctx_t *c, const char *name, size_t len,
                                  uint64_t hash) {
  const device_set_t *set = &c->devices_seen;
  uint32_t check = (uint32_t)(hash >> 32);
  for (size_t i = (size_t)hash & set->mask;; i = (i + 1) & set->mask) {
    device_slot_t *s = &set->slots[i];
    if (s->index == 0)
      return s;
    if (s->check != check)
      continue;
    const char *other = c->config->devices[s->index - 1].name;
    if (strncmp(other, name, len) == 0 && other[len] == '\0')
      return s;
  }
}

/* Files all the devices before n again, at a size for count in all: the
 * hashes are not kept, so growing reads the names, which is rare when
 * reserve_devices is told the files' sizes. */
static void device_set_rebuild(ctx_t *c, size_t n, size_t count) {
  device_set_t *set = &c->devices_seen;
  size_t size = 1024;
  while (size < 2 * count)
    size *= 2;
  xbig_free(set->slots, (set->mask + 1) * sizeof *set->slots);
  set->slots = xbig_alloc(size * sizeof *set->slots);
  set->mask = size - 1;
  set->count = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name = c->config->devices[i].name;
    size_t len = strlen(name);
    uint64_t hash = reg_name_hash(name, len);
    device_slot_t *s = device_slot(c, name, len, hash);
    s->check = (uint32_t)(hash >> 32);
    s->index = (uint32_t)i + 1;
    set->count++;
  }
}

/* Room for count devices in all; grows the array by doubling and the set
 * to twice the devices. */
static void reserve_devices(ctx_t *c, size_t count) {
  reg_config_t *cfg = c->config;
  if (count > c->cap_devices) {
    size_t cap = c->cap_devices ? c->cap_devices : 16;
    while (cap < count)
      cap *= 2;
    cfg->devices = xrealloc(cfg->devices, cap * sizeof *cfg->devices);
    c->devices_seen.seen =
        xrealloc(c->devices_seen.seen, cap * sizeof *c->devices_seen.seen);
    c->cap_devices = cap;
  }
  device_set_t *set = &c->devices_seen;
  if (set->slots == NULL || 2 * count > set->mask + 1)
    device_set_rebuild(c, cfg->n_devices,
                       count > 2 * set->count ? count : 2 * set->count);
}

/* A hint before reading len bytes of YAML: a device takes some 60 bytes,
 * so reserving for len / 64 more saves most regrowing. */
static void reserve_devices_for(ctx_t *c, size_t len) {
  reserve_devices(c, c->config->n_devices + len / 64);
}

/* A streamed key that is not a new device written as its own name: the
 * only kind whose exact repeat the devices seen so far cannot tell. */
static void remember_key(ctx_t *c, const node_t *key) {
  char *copy = xmalloc(key->len + 1);
  memcpy(copy, key->text, key->len + 1);
  if (set_add(&c->streamed_keys, copy, key->len, pos_of(c, key)) != NULL)
    free(copy);
}

static void forget_streamed_keys(ctx_t *c) {
  for (size_t i = 0;
       c->streamed_keys.slots != NULL && i <= c->streamed_keys.mask; i++)
    free((char *)c->streamed_keys.slots[i].s);
  set_free(&c->streamed_keys);
}

/* Checks one device whose key normalised to name. With streamed, a key
 * written exactly as an earlier one of the same mapping is a duplicate key,
 * as mark_duplicates would have found in a whole tree. */
static void parse_named_device(ctx_t *c, node_t *key, const node_t *value,
                               const char *name, bool canonical,
                               bool streamed) {
  reg_config_t *cfg = c->config;
  /* A repeated device is still checked, into a scratch copy, so its own
   * mistakes are reported too. */
  reg_device_t scratch, *d = &scratch;
  size_t len = strlen(name);
  reserve_devices(c, cfg->n_devices + 1);
  uint64_t hash = reg_name_hash(name, len);
  device_slot_t *slot = device_slot(c, name, len, hash);
  const device_seen_t *first =
      slot->index ? &c->devices_seen.seen[slot->index - 1] : NULL;
  if (first != NULL && streamed && canonical && first->canonical &&
      first->at.file == c->file) {
    report_duplicate_key(c, key, first->at);
    return;
  }
  if (first != NULL) {
    char at[PATH_TEXT_SIZE];
    if (streamed && canonical)
      remember_key(c, key);
    error_at(c, key, "duplicate device '%s'; already defined at %s", name,
             pos_text(c, first->at, at, sizeof at));
  } else {
    slot->check = (uint32_t)(hash >> 32);
    slot->index = (uint32_t)cfg->n_devices + 1;
    c->devices_seen.count++;
    device_seen_t *seen = &c->devices_seen.seen[cfg->n_devices];
    seen->at = pos_of(c, key);
    seen->canonical = canonical;
    d = &cfg->devices[cfg->n_devices++];
  }
  memset(d, 0, sizeof *d);
  d->name = device_strdup(c, name);
  d->enabled = true;
  d->wildcard = name[0] == '*';
  if (d != &scratch)
    check_device_zone(c, key, d);
  parse_device_fields(c, key, value, d);
  /* A repeat's memory stays in the arena, unused, until the devices go. */
  if (d != &scratch && d->owner != NULL) {
    if (c->n_owners == c->cap_owners) {
      c->cap_owners = c->cap_owners ? c->cap_owners * 2 : 64;
      c->owners = xrealloc(c->owners, c->cap_owners * sizeof *c->owners);
    }
    c->owners[c->n_owners].device = (size_t)(d - cfg->devices);
    c->owners[c->n_owners++].at = c->owner_at;
  }
}

static void parse_device(ctx_t *c, node_t *key, const node_t *value,
                         bool streamed) {
  char name[CORE_NAME_MAX + 1];
  if (!get_name(c, key, "a device", "cam.example.net or *.example.net", true,
                name))
    return;
  parse_named_device(c, key, value, name, false, streamed);
}

static void parse_devices(ctx_t *c, const slot_t *slot) {
  const node_t *map = slot->value;
  if (!is_mapping_or_null(c, map, slot->key, "'devices'") || is_null(map))
    return;
  reserve_devices(c, c->config->n_devices + map->len);
  for (size_t i = 0; i < map->len; i++) {
    node_t *key = reg_yaml_key(map, i);
    if (!key->duplicate)
      parse_device(c, key, reg_yaml_value(map, i), false);
  }
}

/* One pair of a streamed 'devices:' mapping. Its duplicate keys are found
 * without the whole mapping: a key written as the name it normalises to
 * repeats an earlier one exactly when that name's first device is from
 * this mapping and was written so too (the devices set keeps both facts);
 * every other key is remembered in streamed_keys, few in practice. */
static void stream_device(void *arg, node_t *key, node_t *value) {
  ctx_t *c = arg;
  mark_duplicates(c, key);
  mark_duplicates(c, value);
  if (key->kind != REG_YAML_SCALAR) {
    parse_device(c, key, value, true);
    return;
  }
  const name_entry_t *first =
      set_find_len(&c->streamed_keys, key->text, key->len);
  if (first != NULL) {
    report_duplicate_key(c, key, first->at);
    return;
  }
  char name[CORE_NAME_MAX + 1];
  if (!is_null(key) && strlen(key->text) == key->len &&
      !needs_idna(key->text) &&
      core_name_normalise(key->text, key->len, name, true) >= 0 &&
      strcmp(name, key->text) == 0) {
    parse_named_device(c, key, value, name, true, true);
    return;
  }
  remember_key(c, key);
  parse_device(c, key, value, true);
}

/* A device's key is read before its value: the slot its name probes first
 * in the set of devices, a random place in a table of hundreds of
 * megabytes at carrier scale, is fetched while the value is parsed. A key
 * that is not written as its name probes elsewhere; the fetch is only a
 * hint. */
static void device_key_read(void *arg, const node_t *key) {
  const ctx_t *c = arg;
  const device_set_t *set = &c->devices_seen;
  if (key->kind == REG_YAML_SCALAR && set->slots != NULL)
    __builtin_prefetch(
        &set->slots[(size_t)reg_name_hash(key->text, key->len) & set->mask]);
}

/* Owners name accounts from any file, so they are checked once every file
 * is read. Without accounts an owner is only a label. */
static void check_owners(ctx_t *c) {
  const reg_config_t *cfg = c->config;
  if (cfg->n_accounts == 0)
    return;
  const char **names = NULL;
  for (size_t i = 0; i < c->n_owners; i++) {
    const reg_device_t *d = &cfg->devices[c->owners[i].device];
    if (set_find(&c->accounts_seen, d->owner) != NULL)
      continue;
    if (names == NULL) {
      names = xcalloc(cfg->n_accounts, sizeof *names);
      for (size_t j = 0; j < cfg->n_accounts; j++)
        names[j] = cfg->accounts[j].name;
    }
    char buf[QUOTE_SIZE];
    quote(d->owner, strlen(d->owner), buf, sizeof buf);
    const char *guess =
        closest(d->owner, strlen(d->owner), names, cfg->n_accounts);
    if (guess != NULL) {
      error_at_pos(c, c->owners[i].at,
                   "unknown owner %s for device '%s'; did you mean '%s'?", buf,
                   d->name, guess);
    } else {
      size_t shown = cfg->n_accounts < 8 ? cfg->n_accounts : 8;
      char *all = join(names, shown);
      error_at_pos(c, c->owners[i].at,
                   "unknown owner %s for device '%s'; add it under "
                   "'accounts:' or use one of: %s%s",
                   buf, d->name, all, cfg->n_accounts > shown ? ", ..." : "");
      free(all);
    }
  }
  free(names);
}

/* ---- accounts ------------------------------------------------------------ */

enum { ACC_SECRET, ACC_COUNT };
static const char *const account_keys[ACC_COUNT] = {[ACC_SECRET] = "secret"};

/* Account names travel in HTTP Basic auth, where a ':' would end them. */
static bool valid_account_name(const char *s, size_t len) {
  if (len == 0 || len > 64 || strlen(s) != len)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || strchr("._@+-", *s) != NULL))
      return false;
  return true;
}

static void parse_account(ctx_t *c, const node_t *key, const node_t *value) {
  reg_config_t *cfg = c->config;
  char buf[QUOTE_SIZE];
  if (key->kind != REG_YAML_SCALAR ||
      !valid_account_name(key->text, key->len)) {
    error_at(c, key,
             "bad account name %s; use 1 to 64 letters, digits and '._@+-', "
             "such as 'alice'",
             describe(key, buf, sizeof buf));
    return;
  }
  if (cfg->n_accounts == c->cap_accounts) {
    c->cap_accounts = c->cap_accounts ? c->cap_accounts * 2 : 16;
    cfg->accounts =
        xrealloc(cfg->accounts, c->cap_accounts * sizeof *cfg->accounts);
  }
  /* Keep a named account even when its secret is wrong, so devices naming
   * it do not also report an unknown owner. */
  reg_account_t *a = &cfg->accounts[cfg->n_accounts];
  a->name = xstrdup(key->text);
  a->secret = NULL;
  const name_entry_t *first =
      set_add(&c->accounts_seen, a->name, key->len, pos_of(c, key));
  if (first != NULL) {
    char at[PATH_TEXT_SIZE];
    error_at(c, key, "duplicate account '%s'; already defined at %s", key->text,
             pos_text(c, first->at, at, sizeof at));
    free(a->name);
    return;
  }
  cfg->n_accounts++;

  slot_t s[ACC_COUNT];
  char where[QUOTE_SIZE + 16];
  snprintf(where, sizeof where, "account %s", quote_node(key, buf, sizeof buf));
  if (!walk_mapping(c, value, key, where, account_keys, ACC_COUNT, s))
    return;
  if (!present(&s[ACC_SECRET])) {
    error_at(c, s[ACC_SECRET].key ? s[ACC_SECRET].key : key,
             "account '%s' is missing 'secret'; add the hash that `ddport "
             "hash-secret` prints, e.g. 'secret: \"$y$j9T$...\"'",
             key->text);
    return;
  }
  const node_t *v = s[ACC_SECRET].value;
  char *secret = NULL;
  if (!get_string(c, v, s[ACC_SECRET].key, "a crypt(3) hash", "'secret'",
                  &secret))
    return;
  /* Never quote the value: it may be a password pasted by mistake. */
  const char *why = NULL;
  if (!reg_secret_is_hash(secret, &why)) {
    error_at(c, v,
             "the secret of account '%s' is %s; store a hash instead: run "
             "`ddport hash-secret` and paste what it prints (yescrypt $y$, "
             "sha512crypt $6$ or bcrypt $2b$)",
             key->text, why);
    explicit_bzero(secret, strlen(secret));
    free(secret);
    return;
  }
  a->secret = secret;
}

static void parse_accounts(ctx_t *c, const slot_t *slot) {
  const node_t *map = slot->value;
  if (!is_mapping_or_null(c, map, slot->key, "'accounts'") || is_null(map))
    return;
  for (size_t i = 0; i < map->len; i++) {
    const node_t *key = reg_yaml_key(map, i);
    if (!key->duplicate)
      parse_account(c, key, reg_yaml_value(map, i));
  }
}

/* ---- the top level ------------------------------------------------------- */

static void parse_cpu_scheduling(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "normal") == 0)
    c->config->cpu_scheduling = REG_SCHED_NORMAL;
  else if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "batch") == 0)
    c->config->cpu_scheduling = REG_SCHED_BATCH;
  else
    expected(c, v, slot->key, "'normal' or 'batch'", "'cpu_scheduling'");
}

enum {
  TOP_WORKERS,
  TOP_CPU_AFFINITY,
  TOP_CPU_SCHEDULING,
  TOP_STATE_DIR,
  TOP_LISTENERS,
  TOP_PROXY,
  TOP_DNS,
  TOP_UPDATE,
  TOP_ADMIN,
  TOP_ACCOUNTS,
  TOP_RELOAD,
  TOP_REGISTRY,
  TOP_DEVICES,
  TOP_COUNT
};
static const char *const top_keys[TOP_COUNT] = {
    [TOP_WORKERS] = "workers",
    [TOP_CPU_AFFINITY] = "cpu_affinity",
    [TOP_CPU_SCHEDULING] = "cpu_scheduling",
    [TOP_STATE_DIR] = "state_dir",
    [TOP_LISTENERS] = "listeners",
    [TOP_PROXY] = "proxy",
    [TOP_DNS] = "dns",
    [TOP_UPDATE] = "update",
    [TOP_ADMIN] = "admin",
    [TOP_ACCOUNTS] = "accounts",
    [TOP_RELOAD] = "reload",
    [TOP_REGISTRY] = "registry",
    [TOP_DEVICES] = "devices",
};

static void parse_workers(ctx_t *c, const slot_t *slot) {
  const node_t *v = slot->value;
  uint64_t n = 0;
  int rc = 0;
  if (v->kind == REG_YAML_SCALAR && strcmp(v->text, "auto") == 0) {
    c->config->workers = 0;
    return;
  }
  if (v->kind != REG_YAML_SCALAR || is_null(v) ||
      (rc = parse_decimal(v->text, &n)) == -EINVAL) {
    expected(c, v, slot->key, "a number or 'auto'", "'workers'");
    return;
  }
  if (range_check(c, v, "'workers'", n, rc, 1, 1024))
    c->config->workers = (unsigned)n;
}

/* Sections whose features are not built: check the shape only. */
static void parse_unbuilt(ctx_t *c, const slot_t *slot, const char *path) {
  char where[32];
  snprintf(where, sizeof where, "'%s'", path);
  if (is_mapping_or_null(c, slot->value, slot->key, where) &&
      !is_null(slot->value) && slot->value->len > 0)
    not_implemented(c, slot->key, path);
}

/* ---- reload -------------------------------------------------------------- */

enum { RE_WATCH, RE_DELAY, RE_COUNT };
static const char *const reload_keys[RE_COUNT] = {
    [RE_WATCH] = "watch", [RE_DELAY] = "delay"};

static void parse_reload(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  slot_t s[RE_COUNT];
  if (!walk_mapping(c, slot->value, slot->key, "'reload'", reload_keys,
                    RE_COUNT, s))
    return;
  if (s[RE_WATCH].key != NULL)
    get_bool(c, s[RE_WATCH].value, s[RE_WATCH].key, "'watch'",
             &cfg->reload.watch);
  uint64_t ms;
  if (s[RE_DELAY].key != NULL &&
      get_duration(c, s[RE_DELAY].value, s[RE_DELAY].key, "'delay'", &ms)) {
    /* Long enough for an editor's write-and-rename, short enough that an
     * admin sees the change take effect. */
    if (ms > 60000)
      error_at(c, s[RE_DELAY].value,
               "'delay' %s is out of range; expected 0s..1m (500ms suits "
               "most editors)",
               s[RE_DELAY].value->text);
    else
      cfg->reload.delay_ms = ms;
  }
}

/* ---- registry files ------------------------------------------------------ */

enum { RF_ACCOUNTS, RF_DEVICES, RF_COUNT };
static const char *const registry_file_keys[RF_COUNT] = {
    [RF_ACCOUNTS] = "accounts", [RF_DEVICES] = "devices"};

/* The most one read(2) of read_file asks for. */
#define READ_CHUNK ((size_t)1 << 20)

/* Reads a whole file, one byte past the limit to tell "exactly 64 MiB"
 * from more. With regular_only, anything but a regular file (a FIFO, a
 * device) is refused before a read could block or never end. Returns 0,
 * -EFBIG, -EINVAL (not a regular file) or a negative errno. */
static int read_file(const char *path, bool regular_only, char **out,
                     size_t *out_len) {
  struct stat st;
  size_t len = 0, cap = 64 * 1024;
  char *data = NULL;
  int rc = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
  if (fd < 0)
    return -errno;
  bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (regular_only && !regular) {
    close(fd);
    return -EINVAL;
  }
  if (regular && st.st_size > 0)
    cap = (size_t)st.st_size < MAX_FILE_SIZE ? (size_t)st.st_size + 1
                                             : MAX_FILE_SIZE + 1;
  data = xmalloc(cap);
  while (len <= MAX_FILE_SIZE) {
    if (len == cap) {
      cap = cap * 2 > MAX_FILE_SIZE + 1 ? MAX_FILE_SIZE + 1 : cap * 2;
      data = xrealloc(data, cap);
    }
    /* At most READ_CHUNK a call. One read(2) of a 62 MiB file into a
     * fresh buffer stays 0.23 s in the kernel here (every page of the
     * buffer faults in on the way), and this kernel did not switch away
     * from it: during a reload the workers queued behind that core
     * answered DNS up to 0.1 s late. A 1 MiB call takes under 5 ms, and
     * between calls the scheduler can switch. */
    size_t want = cap - len < READ_CHUNK ? cap - len : READ_CHUNK;
    ssize_t n = read(fd, data + len, want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      goto done;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  if (len > MAX_FILE_SIZE)
    rc = -EFBIG;

done:
  close(fd);
  if (rc != 0) {
    free(data);
    data = NULL;
    len = 0;
  }
  *out = data;
  *out_len = len;
  return rc;
}

/* A path from the configuration: relative ones are relative to the
 * directory of the configuration file. The caller frees. */
static char *resolve_path(const ctx_t *c, const char *text) {
  const char *base = c->files[0];
  const char *slash = strrchr(base, '/');
  if (text[0] == '/' || slash == NULL)
    return xstrdup(text);
  return format("%.*s/%s", (int)(slash - base), base, text);
}

static bool begin_registry_devices(void *arg, node_t *pairs_before) {
  (void)arg;
  (void)pairs_before;
  return true;
}

/* What a registry file added, to take back when its YAML proves broken
 * after devices were streamed: such a file reports its syntax error only. */
typedef struct file_mark {
  size_t errors, warnings, devices, owners;
} file_mark_t;

static file_mark_t file_mark(const ctx_t *c) {
  file_mark_t m = {c->errors.n, c->warnings.n, c->config->n_devices,
                   c->n_owners};
  return m;
}

static void undo_file(ctx_t *c, const file_mark_t *m) {
  reg_config_t *cfg = c->config;
  truncate_messages(&c->errors, m->errors);
  truncate_messages(&c->warnings, m->warnings);
  cfg->n_devices = m->devices; /* their memory stays in the arena */
  device_set_rebuild(c, cfg->n_devices, c->devices_seen.mask / 2);
  c->n_owners = m->owners;
}

static void parse_registry_doc(ctx_t *c, node_t *root) {
  char buf[QUOTE_SIZE];
  if (root == NULL || is_null(root))
    return;
  if (root->kind != REG_YAML_MAPPING) {
    error_at(c, root,
             "expected a mapping with 'devices:' (and 'accounts:') in a "
             "registry file, got %s",
             describe(root, buf, sizeof buf));
    return;
  }
  mark_duplicates(c, root);
  slot_t s[RF_COUNT];
  walk_mapping(c, root, NULL, "a registry file", registry_file_keys, RF_COUNT,
               s);
  if (s[RF_ACCOUNTS].key != NULL)
    parse_accounts(c, &s[RF_ACCOUNTS]);
  if (s[RF_DEVICES].key != NULL)
    parse_devices(c, &s[RF_DEVICES]);
}

/* Reads one registry file named by (or found through) the 'registry' entry
 * item; problems opening it are reported at item, problems inside it at
 * their own place in the file. */
static void load_registry_file(ctx_t *c, const node_t *item, const char *path) {
  char buf[QUOTE_SIZE];
  char *real = realpath(path, NULL);
  for (size_t i = 0; real != NULL && i < c->n_real_paths; i++) {
    if (strcmp(c->real_paths[i], real) == 0) {
      error_at(c, item,
               "registry file %s is included twice; list each file once",
               quote(path, strlen(path), buf, sizeof buf));
      free(real);
      return;
    }
  }
  char *data = NULL;
  size_t len = 0;
  int rc = read_file(path, true, &data, &len);
  if (rc != 0) {
    error_at(c, item, "cannot read registry file %s: %s",
             quote(path, strlen(path), buf, sizeof buf),
             rc == -EFBIG    ? "larger than 64 MiB; split it into several files"
             : rc == -EINVAL ? "not a regular file"
                             : strerror(-rc));
    free(real);
    return;
  }
  if (real != NULL) {
    c->real_paths =
        xrealloc(c->real_paths, (c->n_real_paths + 1) * sizeof(char *));
    c->real_paths[c->n_real_paths++] = real;
  }
  c->files = xrealloc(c->files, (c->n_files + 1) * sizeof *c->files);
  c->files[c->n_files] = xstrdup(path);
  uint32_t saved_file = c->file;
  const char *saved_name = c->name;
  c->file = (uint32_t)c->n_files++;
  c->name = c->files[c->file];
  c->config->n_registry_files++;

  reg_yaml_doc_t *doc = NULL;
  reg_yaml_error_t yerr;
  reg_yaml_stream_t stream = {"devices", begin_registry_devices, stream_device,
                              c, device_key_read};
  file_mark_t mark = file_mark(c);
  reserve_devices_for(c, len);
  if (reg_yaml_parse_stream(data, len, &stream, &doc, &yerr) != 0) {
    undo_file(c, &mark);
    push_message(c, &c->errors, yerr.line, yerr.column, xstrdup(yerr.message));
  } else {
    parse_registry_doc(c, reg_yaml_root(doc));
  }
  forget_streamed_keys(c);
  reg_yaml_free(doc);
  free(data);
  c->file = saved_file;
  c->name = saved_name;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_yaml_name(const char *name) {
  size_t len = strlen(name);
  /* Hidden files are editors' and tools' scratch copies. */
  return name[0] != '.' && len > 5 && strcmp(name + len - 5, ".yaml") == 0;
}

/* Every *.yaml file directly in dir, in byte order of their names. */
static void load_registry_dir(ctx_t *c, const node_t *item, const char *dir) {
  char buf[QUOTE_SIZE];
  DIR *d = opendir(dir);
  if (d == NULL) {
    error_at(c, item, "cannot read registry directory %s: %s",
             quote(dir, strlen(dir), buf, sizeof buf), strerror(errno));
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!is_yaml_name(e->d_name))
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      names = xrealloc(names, cap * sizeof *names);
    }
    names[n++] = xstrdup(e->d_name);
  }
  /* Room for every file's devices at once, not file by file. */
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (fstatat(dirfd(d), names[i], &st, 0) == 0 && S_ISREG(st.st_mode))
      total += (size_t)st.st_size;
  }
  reserve_devices_for(c, total);
  closedir(d);
  if (n > 1)
    qsort(names, n, sizeof *names, compare_names);
  size_t dir_len = strlen(dir);
  bool slash = dir_len > 0 && dir[dir_len - 1] == '/';
  for (size_t i = 0; i < n; i++) {
    char *path = format("%s%s%s", dir, slash ? "" : "/", names[i]);
    struct stat st;
    /* Subdirectories (even named x.yaml) are not read: one level only. */
    if (stat(path, &st) != 0 || S_ISREG(st.st_mode))
      load_registry_file(c, item, path);
    free(path);
    free(names[i]);
  }
  free(names);
}

static void parse_registry(ctx_t *c, const slot_t *slot) {
  reg_config_t *cfg = c->config;
  const node_t *items;
  size_t n;
  if (!items_of(c, slot->value, slot->key, "a list of files and directories",
                "'registry'", &items, &n) ||
      n == 0)
    return;
  cfg->registry = xcalloc(n, sizeof *cfg->registry);
  for (size_t i = 0; i < n; i++) {
    const node_t *item = &items[i];
    char buf[QUOTE_SIZE];
    const char *what = "a file or directory path";
    const char *text = text_of(c, item, NULL, what, "'registry'");
    if (text == NULL)
      continue;
    if (*text == '\0') {
      expected(c, item, NULL, what, "'registry'");
      continue;
    }
    char *path = resolve_path(c, item->text);
    struct stat st;
    if (stat(path, &st) != 0) {
      error_at(c, item, "cannot read registry %s: %s",
               quote(path, strlen(path), buf, sizeof buf), strerror(errno));
      free(path);
      continue;
    }
    reg_source_t *src = &cfg->registry[cfg->n_registry++];
    src->path = path;
    src->directory = S_ISDIR(st.st_mode);
    if (src->directory)
      load_registry_dir(c, item, path);
    else
      load_registry_file(c, item, path);
  }
}

/* A listener's fallback must be a device (not a wildcard) with a port on
 * that listener. Runs after the devices are known. */
static void check_fallbacks(ctx_t *c) {
  reg_config_t *cfg = c->config;
  for (size_t i = 0; c->fallbacks != NULL && i < cfg->n_listeners; i++) {
    const reg_listener_t *l = &cfg->listeners[i];
    if (l->fallback == NULL || c->fallbacks[i] == NULL)
      continue;
    const reg_device_t *d = NULL;
    for (size_t j = 0; j < cfg->n_devices && d == NULL; j++)
      if (strcmp(cfg->devices[j].name, l->fallback) == 0)
        d = &cfg->devices[j];
    if (d == NULL)
      error_at(c, c->fallbacks[i],
               "fallback '%s' is not a device under 'devices:'; name one "
               "of them",
               l->fallback);
    else if (reg_device_port(d, l->name) == 0)
      error_at(c, c->fallbacks[i],
               "fallback device '%s' has no port for listener '%s'; add "
               "'%s: PORT' to its ports",
               l->fallback, l->name, l->name);
  }
  free(c->fallbacks);
  c->fallbacks = NULL;
}

/* The main file's devices are streamed only when the listeners and zones
 * they name came before them; those two are then read at once. Otherwise
 * the devices wait in the tree for the rest of the file. */
static bool begin_top_devices(void *arg, node_t *pairs_before) {
  ctx_t *c = arg;
  const node_t *map = pairs_before;
  slot_t listeners = {NULL, NULL}, dns = {NULL, NULL};
  for (size_t i = 0; i < map->len; i++) {
    const node_t *k = reg_yaml_key(map, i);
    slot_t *s = NULL;
    if (k->kind != REG_YAML_SCALAR || strlen(k->text) != k->len)
      continue;
    if (strcmp(k->text, top_keys[TOP_LISTENERS]) == 0)
      s = &listeners;
    else if (strcmp(k->text, top_keys[TOP_DNS]) == 0)
      s = &dns;
    if (s != NULL && s->key == NULL) {
      s->key = k;
      s->value = reg_yaml_value(map, i);
    }
  }
  if (listeners.key == NULL || dns.key == NULL)
    return false;
  mark_duplicates(c, pairs_before);
  c->top_checked = map->len;
  parse_listeners(c, &listeners);
  parse_dns(c, &dns);
  c->listeners_done = c->dns_done = true;
  return true;
}

static void parse_top(ctx_t *c, node_t *root) {
  reg_config_t *cfg = c->config;
  slot_t s[TOP_COUNT];
  char buf[QUOTE_SIZE];
  if (root == NULL || is_null(root)) {
    error_at(c, NULL,
             "empty configuration; expected settings such as 'listeners:' "
             "and 'devices:' (see config.example.yaml)");
    return;
  }
  if (root->kind != REG_YAML_MAPPING) {
    error_at(c, root, "expected a mapping of settings at the top level, got %s",
             describe(root, buf, sizeof buf));
    return;
  }
  mark_duplicates_from(c, root, c->top_checked);
  walk_mapping(c, root, NULL, "the top level", top_keys, TOP_COUNT, s);

  if (s[TOP_WORKERS].key != NULL)
    parse_workers(c, &s[TOP_WORKERS]);
  if (s[TOP_CPU_AFFINITY].key != NULL)
    get_bool(c, s[TOP_CPU_AFFINITY].value, s[TOP_CPU_AFFINITY].key,
             "'cpu_affinity'", &c->config->cpu_affinity);
  if (s[TOP_CPU_SCHEDULING].key != NULL)
    parse_cpu_scheduling(c, &s[TOP_CPU_SCHEDULING]);
  if (s[TOP_STATE_DIR].key != NULL)
    get_string(c, s[TOP_STATE_DIR].value, s[TOP_STATE_DIR].key,
               "a directory path", "'state_dir'", &cfg->state_dir);
  /* Devices refer to listeners and zones, so those come first. */
  if (s[TOP_LISTENERS].key != NULL && !c->listeners_done)
    parse_listeners(c, &s[TOP_LISTENERS]);
  if (s[TOP_PROXY].key != NULL)
    parse_proxy(c, &s[TOP_PROXY]);
  if (s[TOP_DNS].key != NULL && !c->dns_done)
    parse_dns(c, &s[TOP_DNS]);
  if (s[TOP_UPDATE].key != NULL)
    parse_update(c, &s[TOP_UPDATE]);
  if (s[TOP_ADMIN].key != NULL)
    parse_unbuilt(c, &s[TOP_ADMIN], "admin");
  if (s[TOP_RELOAD].key != NULL)
    parse_reload(c, &s[TOP_RELOAD]);
  if (s[TOP_ACCOUNTS].key != NULL)
    parse_accounts(c, &s[TOP_ACCOUNTS]);
  if (s[TOP_DEVICES].key != NULL)
    parse_devices(c, &s[TOP_DEVICES]);
  /* After the file's own devices, so a repeat in a registry file is the
   * one reported. */
  if (s[TOP_REGISTRY].key != NULL)
    parse_registry(c, &s[TOP_REGISTRY]);
  check_owners(c);
  check_fallbacks(c);
}

static reg_config_t *config_new(const char *name) {
  reg_config_t *cfg = xcalloc(1, sizeof *cfg);
  cfg->path = xstrdup(name);
  cfg->workers = 0;
  cfg->state_dir = xstrdup("./ddport-state");
  cfg->proxy.peek_timeout_ms = 5000;
  cfg->proxy.connect_timeout_ms = 5000;
  cfg->proxy.idle_timeout_ms = 5 * 60000;
  cfg->proxy.drain_timeout_ms = DEFAULT_DRAIN_MS;
  cfg->proxy.max_connections = DEFAULT_CONNECTIONS;
  cfg->proxy.max_per_source = DEFAULT_PER_SOURCE;
  cfg->proxy.max_peeking = DEFAULT_PEEKING;
  cfg->proxy.max_hello = 16 * 1024;
  cfg->proxy.access_log = xstrdup("stderr");
  cfg->dns.tcp_idle_ms = 10000;
  cfg->update.request_timeout_ms = 10000;
  cfg->update.idle_timeout_ms = 30000;
  cfg->update.credential_cache_ms = 5 * 60000;
  cfg->update.max_connections = 1000;
  cfg->update.updates_per_minute = 30;
  cfg->update.max_request = 8192;
  cfg->dns.serial_batch_ms = 1000;
  cfg->dns.tcp_connections = 1000;
  cfg->reload.watch = true;
  cfg->reload.delay_ms = 500;
  return cfg;
}

/* ---- public -------------------------------------------------------------- */

int reg_config_load_buffer(const char *name, const char *data, size_t len,
                           FILE *diag, reg_config_t **out) {
  ctx_t c;
  reg_yaml_doc_t *doc = NULL;
  reg_yaml_error_t yerr;
  int rc = -EINVAL;

  memset(&c, 0, sizeof c);
  c.files = xmalloc(sizeof *c.files);
  c.files[0] = xstrdup(name);
  c.n_files = 1;
  c.name = c.files[0];
  c.config = config_new(name);
  *out = NULL;
  reg_yaml_stream_t stream = {"devices", begin_top_devices, stream_device, &c,
                              device_key_read};
  reserve_devices_for(&c, len);
  if (reg_yaml_parse_stream(data, len, &stream, &doc, &yerr) != 0) {
    /* Only the syntax error, as when nothing was read before it. */
    truncate_messages(&c.errors, 0);
    truncate_messages(&c.warnings, 0);
    push_message(&c, &c.errors, yerr.line, yerr.column, xstrdup(yerr.message));
  } else {
    parse_top(&c, reg_yaml_root(doc));
  }
  forget_streamed_keys(&c);
  reg_yaml_free(doc);
  free(c.fallbacks);

  sort_messages(&c.errors);
  for (size_t i = 0; diag != NULL && i < c.errors.n; i++)
    fprintf(diag, "%s\n", c.errors.v[i].text);
  if (c.errors.n == 0) {
    sort_messages(&c.warnings);
    reg_config_t *cfg = c.config;
    cfg->not_implemented = xcalloc(c.warnings.n, sizeof(char *));
    for (size_t i = 0; i < c.warnings.n; i++)
      cfg->not_implemented[i] = c.warnings.v[i].text;
    cfg->n_not_implemented = c.warnings.n;
    c.warnings.n = 0;
    *out = cfg;
    c.config = NULL;
    rc = 0;
  }
  free_messages(&c.errors);
  free_messages(&c.warnings);
  reg_config_free(c.config);
  xbig_free(c.devices_seen.slots,
            (c.devices_seen.mask + 1) * sizeof *c.devices_seen.slots);
  free(c.devices_seen.seen);
  set_free(&c.accounts_seen);
  free(c.owners);
  for (size_t i = 0; i < c.n_real_paths; i++)
    free(c.real_paths[i]);
  free(c.real_paths);
  for (size_t i = 0; i < c.n_bound; i++)
    free(c.bound[i].what);
  free(c.bound);
  for (size_t i = 0; i < c.n_files; i++)
    free(c.files[i]);
  free(c.files);
  return rc;
}

int reg_config_load(const char *path, FILE *diag, reg_config_t **out) {
  char *data = NULL;
  size_t len = 0;
  *out = NULL;
  int rc = read_file(path, false, &data, &len);
  if (rc == -EFBIG) {
    if (diag != NULL)
      fprintf(diag,
              "%s: too large; a configuration file may hold at most "
              "64 MiB\n",
              path);
    return rc;
  }
  if (rc != 0) {
    if (diag != NULL)
      fprintf(diag, "%s: cannot read: %s\n", path, strerror(-rc));
    return rc;
  }
  rc = reg_config_load_buffer(path, data, len, diag, out);
  free(data);
  return rc;
}

static void free_zone(reg_zone_t *z) {
  free(z->name);
  free(z->proxy);
  for (size_t i = 0; i < z->n_nameservers; i++)
    free(z->nameservers[i]);
  free(z->nameservers);
  for (size_t i = 0; i < z->n_glue; i++) {
    free(z->glue[i].name);
    free(z->glue[i].addrs);
  }
  free(z->glue);
  free(z->soa_email);
  for (size_t i = 0; i < z->n_notify; i++)
    free(z->notify[i].key);
  free(z->notify);
  free(z->transfer_prefixes);
  for (size_t i = 0; i < z->n_transfer_keys; i++)
    free(z->transfer_keys[i]);
  free(z->transfer_keys);
}

void reg_config_free_devices(reg_config_t *config) {
  core_arena_free(&config->device_mem);
  free(config->devices);
  config->devices = NULL;
  config->n_devices = 0;
#ifdef __GLIBC__
  /* Loading grew the heap with scratch memory that glibc would keep
   * mapped for good: hand the pages back. */
  malloc_trim(0);
#endif
}

void reg_config_free(reg_config_t *config) {
  if (config == NULL)
    return;
  free(config->path);
  free(config->state_dir);
  for (size_t i = 0; i < config->n_listeners; i++) {
    free(config->listeners[i].name);
    free(config->listeners[i].fallback);
  }
  free(config->listeners);
  free(config->proxy.allow_targets);
  free(config->proxy.access_log);
  free(config->proxy.resolvers);
  free(config->dns.listen);
  free(config->update.listen);
  free(config->update.tls_listen);
  free(config->update.tls_cert);
  free(config->update.tls_key);
  for (size_t i = 0; i < config->dns.n_zones; i++)
    free_zone(&config->dns.zones[i]);
  free(config->dns.zones);
  for (size_t i = 0; i < config->dns.n_tsig_keys; i++) {
    free(config->dns.tsig_keys[i].name);
    free(config->dns.tsig_keys[i].secret);
  }
  free(config->dns.tsig_keys);
  free(config->dns.version);
  free(config->dns.identity);
  reg_config_free_devices(config);
  for (size_t i = 0; i < config->n_accounts; i++) {
    free(config->accounts[i].name);
    if (config->accounts[i].secret != NULL)
      explicit_bzero(config->accounts[i].secret,
                     strlen(config->accounts[i].secret));
    free(config->accounts[i].secret);
  }
  free(config->accounts);
  for (size_t i = 0; i < config->n_registry; i++)
    free(config->registry[i].path);
  free(config->registry);
  for (size_t i = 0; i < config->n_not_implemented; i++)
    free(config->not_implemented[i]);
  free(config->not_implemented);
  free(config);
}

uint16_t reg_device_port(const reg_device_t *device,
                         const char *listener_name) {
  for (size_t i = 0; i < device->n_ports; i++)
    if (strcmp(device->ports[i].listener, listener_name) == 0)
      return device->ports[i].port;
  return 0;
}
