/* SPDX-License-Identifier: MIT */
/* yaml_doc.c -- libyaml events into a position-carrying tree, no aliases */
#include "registry/yaml_doc.h"

#include "core/core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Nodes and text live in a few large chunks: a config with a million devices
 * holds tens of millions of nodes, and one malloc each would double the
 * memory and make freeing slow. */
#define CHUNK_SIZE ((size_t)64 * 1024)

typedef struct chunk {
  struct chunk *next;
  size_t size, used;
  max_align_t mem[];
} chunk_t;

struct reg_yaml_doc {
  chunk_t *chunks;
  reg_yaml_node_t **big; /* kids arrays handed over whole, see on_end */
  size_t n_big;
  reg_yaml_node_t *root;
};

/* Children of a collection still open, gathered until its end event. */
typedef struct level {
  reg_yaml_node_t self;
  reg_yaml_node_t *kids;
  size_t n_kids, cap;
} level_t;

typedef struct builder {
  reg_yaml_doc_t *doc;
  reg_yaml_doc_t *mem;      /* where nodes go: doc, or pair_mem streaming */
  reg_yaml_doc_t *pair_mem; /* the streamed pair's nodes, reset after each */
  const reg_yaml_stream_t *stream;
  bool stream_seen;    /* the streamed key came; a repeat is not streamed */
  size_t stream_depth; /* of the streamed mapping while inside it, else 0 */
  level_t levels[REG_YAML_MAX_DEPTH + 1]; /* [0] collects the root */
  size_t depth;
  size_t n_nodes;
  size_t n_documents;
  reg_yaml_error_t *err;
} builder_t;

/* align is 1 for text, which needs none, or sizeof(max_align_t). */
static void *arena_alloc(reg_yaml_doc_t *doc, size_t size, size_t align) {
  chunk_t *c = doc->chunks;
  if (c != NULL) {
    size_t start = (c->used + align - 1) / align * align;
    if (start <= c->size && c->size - start >= size) {
      c->used = start + size;
      return (char *)c->mem + start;
    }
  }
  size_t cap = size > CHUNK_SIZE ? size : CHUNK_SIZE;
  chunk_t *n = xmalloc(sizeof *n + cap);
  n->size = cap;
  n->used = size;
  /* A big array gets a chunk of its own behind the current one, so the
   * current chunk's free space is not thrown away. */
  if (c != NULL && cap == size) {
    n->next = c->next;
    c->next = n;
  } else {
    n->next = c;
    doc->chunks = n;
  }
  return n->mem;
}

/* Keeps one ordinary chunk for the next pair and frees the rest. */
static void arena_reset(reg_yaml_doc_t *doc) {
  chunk_t *keep = NULL;
  for (chunk_t *c = doc->chunks, *next; c != NULL; c = next) {
    next = c->next;
    if (keep == NULL && c->size == CHUNK_SIZE)
      keep = c;
    else
      free(c);
  }
  if (keep != NULL) {
    keep->used = 0;
    keep->next = NULL;
  }
  doc->chunks = keep;
  for (size_t i = 0; i < doc->n_big; i++)
    free(doc->big[i]);
  doc->n_big = 0;
}

static uint32_t mark_number(size_t zero_based) {
  return zero_based >= UINT32_MAX ? UINT32_MAX : (uint32_t)zero_based + 1;
}

static void set_error(reg_yaml_error_t *err, yaml_mark_t mark, const char *fmt,
                      ...) __attribute__((format(printf, 3, 4)));

static void set_error(reg_yaml_error_t *err, yaml_mark_t mark, const char *fmt,
                      ...) {
  va_list ap;
  err->line = mark_number(mark.line);
  err->column = mark_number(mark.column);
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

/* The reader reports a byte offset but no mark (bad UTF-8 and control
 * characters), so count lines ourselves. */
static void set_reader_error(const yaml_parser_t *parser, const char *data,
                             size_t len, reg_yaml_error_t *err) {
  size_t offset = parser->problem_offset < len ? parser->problem_offset : len;
  yaml_mark_t mark = {0, 0, 0};
  for (size_t i = 0; i < offset; i++) {
    if (data[i] == '\n') {
      mark.line++;
      mark.column = 0;
    } else {
      mark.column++;
    }
  }
  if (parser->problem_value != -1)
    set_error(err, mark, "%s (byte 0x%02x)", parser->problem,
              (unsigned)parser->problem_value & 0xffu);
  else
    set_error(err, mark, "%s", parser->problem);
}

static void set_syntax_error(const yaml_parser_t *parser, const char *data,
                             size_t len, reg_yaml_error_t *err) {
  const char *problem = parser->problem ? parser->problem : "invalid YAML";
  switch (parser->error) {
  case YAML_READER_ERROR:
    set_reader_error(parser, data, len, err);
    return;
  case YAML_MEMORY_ERROR:
    set_error(err, parser->mark, "out of memory while parsing");
    return;
  default:
    break;
  }
  if (parser->context != NULL)
    set_error(err, parser->problem_mark, "%s (%s at line %u, column %u)",
              problem, parser->context, mark_number(parser->context_mark.line),
              mark_number(parser->context_mark.column));
  else
    set_error(err, parser->problem_mark, "%s", problem);
}

/* Only the core schema's own tags: they change nothing for us except that
 * !!str makes a scalar a string however it is written. */
static int check_tag(builder_t *b, const yaml_char_t *tag, yaml_mark_t mark,
                     bool *plain) {
  static const char *const allowed[] = {
      "tag:yaml.org,2002:int",  "tag:yaml.org,2002:bool",
      "tag:yaml.org,2002:null", "tag:yaml.org,2002:float",
      "tag:yaml.org,2002:map",  "tag:yaml.org,2002:seq",
  };
  if (tag == NULL)
    return 0;
  if (strcmp((const char *)tag, "tag:yaml.org,2002:str") == 0) {
    *plain = false;
    return 0;
  }
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
    if (strcmp((const char *)tag, allowed[i]) == 0)
      return 0;
  set_error(b->err, mark, "YAML tag '%.60s' is not supported; remove it",
            (const char *)tag);
  return -EINVAL;
}

static int check_anchor(builder_t *b, const yaml_char_t *anchor,
                        yaml_mark_t mark) {
  if (anchor == NULL)
    return 0;
  set_error(b->err, mark,
            "YAML anchors ('&%.60s') are not supported; write the value out",
            (const char *)anchor);
  return -EINVAL;
}

static int count_node(builder_t *b, yaml_mark_t mark) {
  if (++b->n_nodes <= REG_YAML_MAX_NODES)
    return 0;
  set_error(b->err, mark, "more than %u YAML nodes; split the file",
            REG_YAML_MAX_NODES);
  return -EINVAL;
}

static void add_kid(level_t *level, const reg_yaml_node_t *node) {
  if (level->n_kids == level->cap) {
    level->cap = level->cap ? level->cap * 2 : 8;
    level->kids = xrealloc(level->kids, level->cap * sizeof *level->kids);
  }
  level->kids[level->n_kids++] = *node;
}

static reg_yaml_node_t node_at(reg_yaml_kind_t kind, yaml_mark_t mark) {
  reg_yaml_node_t n;
  memset(&n, 0, sizeof n);
  n.kind = kind;
  n.line = mark_number(mark.line);
  n.column = mark_number(mark.column);
  return n;
}

static int on_scalar(builder_t *b, const yaml_event_t *ev) {
  reg_yaml_node_t n = node_at(REG_YAML_SCALAR, ev->start_mark);
  n.plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  if (check_anchor(b, ev->data.scalar.anchor, ev->start_mark) != 0 ||
      check_tag(b, ev->data.scalar.tag, ev->start_mark, &n.plain) != 0 ||
      count_node(b, ev->start_mark) != 0)
    return -EINVAL;
  n.len = ev->data.scalar.length;
  char *text = arena_alloc(b->mem, n.len + 1, 1);
  memcpy(text, ev->data.scalar.value, n.len);
  text[n.len] = '\0';
  n.text = text;
  add_kid(&b->levels[b->depth], &n);
  return 0;
}

static int on_start(builder_t *b, const yaml_event_t *ev, reg_yaml_kind_t kind,
                    const yaml_char_t *anchor, const yaml_char_t *tag) {
  bool plain = false;
  if (check_anchor(b, anchor, ev->start_mark) != 0 ||
      check_tag(b, tag, ev->start_mark, &plain) != 0 ||
      count_node(b, ev->start_mark) != 0)
    return -EINVAL;
  if (b->depth == REG_YAML_MAX_DEPTH) {
    set_error(b->err, ev->start_mark,
              "nested deeper than %d levels; flatten the structure",
              REG_YAML_MAX_DEPTH);
    return -EINVAL;
  }
  level_t *level = &b->levels[++b->depth];
  level->self = node_at(kind, ev->start_mark);
  level->n_kids = 0;
  return 0;
}

static void on_end(builder_t *b) {
  level_t *level = &b->levels[b->depth--];
  reg_yaml_node_t n = level->self;
  size_t bytes = level->n_kids * sizeof *n.kids;
  if (bytes > CHUNK_SIZE) {
    /* A large collection (a registry's devices) keeps the array it was
     * gathered in: copying hundreds of megabytes into the arena would
     * cost a fifth of the load. */
    reg_yaml_doc_t *doc = b->mem;
    doc->big = xrealloc(doc->big, (doc->n_big + 1) * sizeof *doc->big);
    n.kids = doc->big[doc->n_big++] = xrealloc(level->kids, bytes);
    level->kids = NULL;
    level->cap = 0;
  } else if (level->n_kids > 0) {
    n.kids = arena_alloc(b->mem, bytes, sizeof(max_align_t));
    memcpy(n.kids, level->kids, bytes);
  }
  n.len = n.kind == REG_YAML_MAPPING ? level->n_kids / 2 : level->n_kids;
  level->n_kids = 0;
  add_kid(&b->levels[b->depth], &n);
}

/* Whether the next node is the value of the root's streamed key. */
static bool at_stream_key(const builder_t *b) {
  const level_t *root = &b->levels[1];
  if (b->stream == NULL || b->stream_seen || b->depth != 1 ||
      root->self.kind != REG_YAML_MAPPING || root->n_kids % 2 == 0)
    return false;
  const reg_yaml_node_t *key = &root->kids[root->n_kids - 1];
  return key->kind == REG_YAML_SCALAR && key->len == strlen(b->stream->key) &&
         memcmp(key->text, b->stream->key, key->len) == 0;
}

static void stream_begin(builder_t *b) {
  const level_t *root = &b->levels[1];
  reg_yaml_node_t before = root->self;
  before.len = (root->n_kids - 1) / 2;
  before.kids = root->kids;
  if (b->stream->begin(b->stream->arg, &before)) {
    b->stream_depth = b->depth;
    b->mem = b->pair_mem;
  }
}

/* A pair of the streamed mapping is complete: hand it over, then forget
 * it. */
static void stream_pair(builder_t *b) {
  level_t *level = &b->levels[b->stream_depth];
  b->stream->pair(b->stream->arg, &level->kids[0], &level->kids[1]);
  level->n_kids = 0;
  arena_reset(b->pair_mem);
}

static int tree_event(builder_t *b, const yaml_event_t *ev) {
  switch (ev->type) {
  case YAML_DOCUMENT_START_EVENT:
    if (++b->n_documents > 1) {
      set_error(b->err, ev->start_mark,
                "a second YAML document; a configuration file holds one, "
                "so remove this '---' and what follows or merge them");
      return -EINVAL;
    }
    return 0;
  case YAML_ALIAS_EVENT:
    set_error(b->err, ev->start_mark,
              "YAML aliases ('*%.60s') are not supported; write the value "
              "out",
              (const char *)ev->data.alias.anchor);
    return -EINVAL;
  case YAML_SCALAR_EVENT:
    return on_scalar(b, ev);
  case YAML_SEQUENCE_START_EVENT:
    return on_start(b, ev, REG_YAML_SEQUENCE, ev->data.sequence_start.anchor,
                    ev->data.sequence_start.tag);
  case YAML_MAPPING_START_EVENT:
    return on_start(b, ev, REG_YAML_MAPPING, ev->data.mapping_start.anchor,
                    ev->data.mapping_start.tag);
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT:
    if (b->stream_depth != 0 && b->depth == b->stream_depth) {
      b->stream_depth = 0;
      b->mem = b->doc;
    }
    on_end(b);
    return 0;
  default:
    return 0;
  }
}

static int on_event(builder_t *b, const yaml_event_t *ev) {
  bool node = ev->type == YAML_SCALAR_EVENT || ev->type == YAML_ALIAS_EVENT ||
              ev->type == YAML_SEQUENCE_START_EVENT ||
              ev->type == YAML_MAPPING_START_EVENT;
  bool begin = false;
  if (node && at_stream_key(b)) {
    b->stream_seen = true;
    begin = ev->type == YAML_MAPPING_START_EVENT;
  }
  int rc = tree_event(b, ev);
  if (rc != 0)
    return rc;
  if (begin) {
    stream_begin(b);
  } else if (b->stream_depth != 0 && b->depth == b->stream_depth) {
    level_t *level = &b->levels[b->stream_depth];
    if (level->n_kids == 2)
      stream_pair(b);
    else if (level->n_kids == 1 && b->stream->key_read != NULL)
      b->stream->key_read(b->stream->arg, &level->kids[0]);
  }
  return 0;
}

int reg_yaml_parse(const char *data, size_t len, reg_yaml_doc_t **out,
                   reg_yaml_error_t *err) {
  return reg_yaml_parse_stream(data, len, NULL, out, err);
}

int reg_yaml_parse_stream(const char *data, size_t len,
                          const reg_yaml_stream_t *stream, reg_yaml_doc_t **out,
                          reg_yaml_error_t *err) {
  builder_t *b = xcalloc(1, sizeof *b);
  yaml_parser_t parser;
  int rc = -EINVAL;

  *out = NULL;
  memset(err, 0, sizeof *err);
  b->doc = xcalloc(1, sizeof *b->doc);
  b->mem = b->doc;
  b->pair_mem = xcalloc(1, sizeof *b->pair_mem);
  b->stream = stream;
  b->err = err;
  if (!yaml_parser_initialize(&parser)) {
    snprintf(err->message, sizeof err->message, "out of memory");
    err->line = err->column = 1;
    goto done;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
  for (;;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&parser, &ev)) {
      set_syntax_error(&parser, data, len, err);
      break;
    }
    bool end = ev.type == YAML_STREAM_END_EVENT;
    int r = on_event(b, &ev);
    yaml_event_delete(&ev);
    if (r != 0)
      break;
    if (end) {
      rc = 0;
      break;
    }
  }
  yaml_parser_delete(&parser);
  if (rc == 0 && b->levels[0].n_kids > 0) {
    b->doc->root =
        arena_alloc(b->doc, sizeof *b->doc->root, sizeof(max_align_t));
    *b->doc->root = b->levels[0].kids[0];
  }

done:
  for (size_t i = 0; i <= REG_YAML_MAX_DEPTH; i++)
    free(b->levels[i].kids);
  reg_yaml_free(b->pair_mem);
  if (rc == 0)
    *out = b->doc;
  else
    reg_yaml_free(b->doc);
  free(b);
  return rc;
}

reg_yaml_node_t *reg_yaml_root(reg_yaml_doc_t *doc) {
  return doc->root;
}

void reg_yaml_free(reg_yaml_doc_t *doc) {
  if (doc == NULL)
    return;
  for (chunk_t *c = doc->chunks, *next; c != NULL; c = next) {
    next = c->next;
    free(c);
  }
  for (size_t i = 0; i < doc->n_big; i++)
    free(doc->big[i]);
  free(doc->big);
  free(doc);
}
