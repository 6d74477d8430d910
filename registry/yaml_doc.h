/* SPDX-License-Identifier: MIT */
/* yaml_doc.h -- one YAML document as a small tree with line:column marks */
#ifndef DDPORT_REGISTRY_YAML_DOC_H
#define DDPORT_REGISTRY_YAML_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits that keep a hostile file from costing more than its size suggests:
 * aliases are refused outright, so the tree is never larger than the text. */
#define REG_YAML_MAX_DEPTH 64
#define REG_YAML_MAX_NODES (1u << 24)

typedef enum reg_yaml_kind {
  REG_YAML_SCALAR,
  REG_YAML_SEQUENCE,
  REG_YAML_MAPPING,
} reg_yaml_kind_t;

typedef struct reg_yaml_node reg_yaml_node_t;

/* Lines and columns count from 1, as editors show them. A mapping keeps its
 * pairs in file order as kids[2i] (key) and kids[2i + 1] (value), so the key
 * node carries the position of the key. */
struct reg_yaml_node {
  reg_yaml_kind_t kind;
  uint32_t line, column;
  bool plain;       /* scalar written without quotes or block indicators */
  bool duplicate;   /* free for the reader: marks a repeated mapping key */
  size_t len;       /* scalar: bytes of text; sequence: items; mapping: pairs */
  const char *text; /* scalar only: NUL-terminated, may hold NULs inside */
  reg_yaml_node_t *kids; /* sequence: len items; mapping: 2 * len nodes */
};

typedef struct reg_yaml_doc reg_yaml_doc_t;

typedef struct reg_yaml_error {
  uint32_t line, column;
  char message[200];
} reg_yaml_error_t;

/* Parses one YAML document from data. On success returns 0 and a document
 * the caller frees with reg_yaml_free; its root is NULL when the stream
 * holds no document at all. On failure returns -EINVAL and fills err with
 * the position and a one-line description (libyaml's, or ours for anchors,
 * aliases, tags, depth, size and extra documents). */
int reg_yaml_parse(const char *data, size_t len, reg_yaml_doc_t **out,
                   reg_yaml_error_t *err);

/* Streaming: the value of one key of the root mapping, when it is a
 * mapping, is not kept in the tree but handed over pair by pair, so a
 * registry of millions of devices costs the memory of one device. Only the
 * first such key counts (a repeat is an ordinary duplicate key). */
typedef struct reg_yaml_stream {
  const char *key;
  /* Called as that mapping starts with the root's pairs read so far (a
   * mapping node, valid during the call). Returns whether to stream: false
   * builds the mapping into the tree as usual. */
  bool (*begin)(void *arg, reg_yaml_node_t *pairs_before);
  /* One pair of the mapping, in file order; key and value (with all below
   * them) are freed when the call returns. */
  void (*pair)(void *arg, reg_yaml_node_t *key, reg_yaml_node_t *value);
  void *arg;
  /* Optional: a pair's key, as soon as it is read and before its value
   * is, so the caller can start fetching what it will need (valid during
   * the call only). */
  void (*key_read)(void *arg, const reg_yaml_node_t *key);
} reg_yaml_stream_t;

/* reg_yaml_parse, streaming the mapping that stream names (NULL streams
 * nothing). In the tree that mapping is left empty. When the document
 * fails, pairs may already have been handed over: the caller undoes what
 * it did with them. */
int reg_yaml_parse_stream(const char *data, size_t len,
                          const reg_yaml_stream_t *stream, reg_yaml_doc_t **out,
                          reg_yaml_error_t *err);

/* The document's root node or NULL; owned by doc. */
reg_yaml_node_t *reg_yaml_root(reg_yaml_doc_t *doc);

void reg_yaml_free(reg_yaml_doc_t *doc);

static inline reg_yaml_node_t *reg_yaml_key(const reg_yaml_node_t *map,
                                            size_t i) {
  return &map->kids[2 * i];
}

static inline reg_yaml_node_t *reg_yaml_value(const reg_yaml_node_t *map,
                                              size_t i) {
  return &map->kids[2 * i + 1];
}

#endif
