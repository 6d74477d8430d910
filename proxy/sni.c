/* SPDX-License-Identifier: MIT */
/* sni.c -- find the server name in a TLS ClientHello, across records */
#include "proxy/proxy_int.h"

#include <string.h>

/* TLS record and handshake constants (RFC 8446 section 5.1, 4). */
#define TLS_RECORD_HEADER 5
#define TLS_CONTENT_HANDSHAKE 22
#define TLS_HANDSHAKE_HEADER 4
#define TLS_CLIENT_HELLO 1
#define TLS_MAX_PLAINTEXT 16384
#define TLS_EXT_SERVER_NAME 0
#define TLS_SNI_HOST_NAME 0

/* A ClientHello split into more records than this is not a browser's: real
 * clients use one or two, and a cap keeps the fragment table on the stack. */
#define MAX_FRAGMENTS 64

/* The handshake bytes are the record payloads laid end to end; a cursor
 * reads them in place, whatever the record boundaries. */
typedef struct hs_stream {
  const uint8_t *frag[MAX_FRAGMENTS];
  size_t frag_len[MAX_FRAGMENTS];
  size_t n_frags;
  size_t total;
} hs_stream_t;

typedef struct hs_cursor {
  const hs_stream_t *s;
  size_t frag, at; /* position: fragment index and offset inside it */
  size_t left;     /* bytes the current structure still allows */
  bool bad;        /* read past `left` */
} hs_cursor_t;

static uint8_t read_u8(hs_cursor_t *c) {
  if (c->left == 0) {
    c->bad = true;
    return 0;
  }
  while (c->at == c->s->frag_len[c->frag]) {
    c->frag++;
    c->at = 0;
  }
  c->left--;
  return c->s->frag[c->frag][c->at++];
}

static unsigned read_u16(hs_cursor_t *c) {
  unsigned hi = read_u8(c);
  return hi << 8 | read_u8(c);
}

static void skip(hs_cursor_t *c, size_t n) {
  if (n > c->left) {
    c->bad = true;
    c->left = 0;
    return;
  }
  while (n > 0) {
    size_t here = c->s->frag_len[c->frag] - c->at;
    if (here == 0) {
      c->frag++;
      c->at = 0;
      continue;
    }
    size_t step = n < here ? n : here;
    c->at += step;
    n -= step;
    c->left -= step;
  }
}

/* A cursor over the next n bytes of c, which skips them. */
static hs_cursor_t sub_cursor(hs_cursor_t *c, size_t n) {
  hs_cursor_t sub = *c;
  if (n > c->left) {
    c->bad = true;
    sub.bad = true;
    n = c->left;
  }
  sub.left = n;
  skip(c, n);
  return sub;
}

static px_peek_result_t invalid(px_sni_t *out, const char *why) {
  out->why = why;
  return PX_PEEK_INVALID;
}

/* Collects the handshake record payloads at the start of buf. Returns
 * NEED_MORE until the first handshake message is all there. */
static px_peek_result_t gather(const uint8_t *buf, size_t len, hs_stream_t *s,
                               size_t *hello_len, px_sni_t *out) {
  size_t at = 0;
  *hello_len = 0;
  while (at < len) {
    if (len - at < TLS_RECORD_HEADER) {
      /* Reject a non-TLS first byte at once rather than at the deadline. */
      if (buf[at] != TLS_CONTENT_HANDSHAKE)
        return invalid(out, "not a TLS handshake record");
      return PX_PEEK_NEED_MORE;
    }
    const uint8_t *h = buf + at;
    size_t rec_len = (size_t)h[3] << 8 | h[4];
    if (h[0] != TLS_CONTENT_HANDSHAKE)
      return invalid(out, "not a TLS handshake record");
    if (h[1] != 3)
      return invalid(out, "unknown TLS record version");
    if (rec_len == 0 || rec_len > TLS_MAX_PLAINTEXT)
      return invalid(out, "TLS record length out of range");
    if (s->n_frags == MAX_FRAGMENTS)
      return invalid(out, "ClientHello split into too many records");
    size_t have = len - at - TLS_RECORD_HEADER;
    if (have > rec_len)
      have = rec_len;
    s->frag[s->n_frags] = h + TLS_RECORD_HEADER;
    s->frag_len[s->n_frags] = have;
    s->n_frags++;
    s->total += have;
    at += TLS_RECORD_HEADER + have;

    if (*hello_len == 0 && s->total >= TLS_HANDSHAKE_HEADER) {
      hs_cursor_t c = {.s = s, .left = TLS_HANDSHAKE_HEADER};
      if (read_u8(&c) != TLS_CLIENT_HELLO)
        return invalid(out, "first handshake message is not a ClientHello");
      size_t body = (size_t)read_u8(&c) << 16;
      body |= read_u16(&c);
      *hello_len = TLS_HANDSHAKE_HEADER + body;
    }
    if (*hello_len != 0 && s->total >= *hello_len)
      return PX_PEEK_COMPLETE;
    if (have < rec_len)
      return PX_PEEK_NEED_MORE;
  }
  return PX_PEEK_NEED_MORE;
}

/* Reads the server_name extension body; fills out->name if a host_name is
 * there. */
static px_peek_result_t read_server_name(hs_cursor_t *ext, px_sni_t *out) {
  size_t list_len = read_u16(ext);
  hs_cursor_t list = sub_cursor(ext, list_len);
  if (ext->bad || list_len == 0)
    return invalid(out, "malformed server_name extension");
  while (list.left > 0 && !list.bad) {
    unsigned type = read_u8(&list);
    size_t name_len = read_u16(&list);
    if (list.bad || name_len > list.left)
      return invalid(out, "malformed server_name extension");
    if (type != TLS_SNI_HOST_NAME || out->name_len != 0) {
      skip(&list, name_len);
      continue;
    }
    if (name_len == 0 || name_len > CORE_NAME_MAX + 1)
      return invalid(out, "server name has a bad length");
    char raw[CORE_NAME_MAX + 2];
    for (size_t i = 0; i < name_len; i++)
      raw[i] = (char)read_u8(&list);
    int n = core_name_normalise(raw, name_len, out->name, false);
    if (n < 0)
      return invalid(out, "server name is not a valid host name");
    out->name_len = (size_t)n;
  }
  if (list.bad)
    return invalid(out, "malformed server_name extension");
  return PX_PEEK_COMPLETE;
}

px_peek_result_t px_sni_parse(const uint8_t *buf, size_t len, px_sni_t *out) {
  memset(out, 0, sizeof *out);
  hs_stream_t s = {0};
  size_t hello_len;
  px_peek_result_t r = gather(buf, len, &s, &hello_len, out);
  if (r != PX_PEEK_COMPLETE)
    return r;
  out->hello_len = hello_len;

  hs_cursor_t c = {.s = &s, .left = hello_len};
  skip(&c, TLS_HANDSHAKE_HEADER);
  unsigned version = read_u16(&c);
  if ((version >> 8) != 3)
    return invalid(out, "unknown ClientHello version");
  skip(&c, 32); /* random */
  size_t session_id = read_u8(&c);
  if (session_id > 32)
    return invalid(out, "session id too long");
  skip(&c, session_id);
  size_t suites = read_u16(&c);
  if (suites < 2 || suites % 2 != 0)
    return invalid(out, "malformed cipher suites");
  skip(&c, suites);
  size_t compression = read_u8(&c);
  if (compression < 1)
    return invalid(out, "malformed compression methods");
  skip(&c, compression);
  if (c.bad)
    return invalid(out, "ClientHello truncated");
  if (c.left == 0)
    return PX_PEEK_COMPLETE; /* no extensions, so no name */

  size_t ext_total = read_u16(&c);
  hs_cursor_t exts = sub_cursor(&c, ext_total);
  if (c.bad || c.left != 0)
    return invalid(out, "extensions do not fill the ClientHello");
  bool seen_sni = false;
  while (exts.left > 0) {
    unsigned type = read_u16(&exts);
    size_t ext_len = read_u16(&exts);
    hs_cursor_t ext = sub_cursor(&exts, ext_len);
    if (exts.bad)
      return invalid(out, "malformed extension");
    if (type != TLS_EXT_SERVER_NAME)
      continue;
    if (seen_sni)
      return invalid(out, "duplicate server_name extension");
    seen_sni = true;
    r = read_server_name(&ext, out);
    if (r != PX_PEEK_COMPLETE)
      return r;
  }
  return PX_PEEK_COMPLETE;
}
