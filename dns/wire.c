/* SPDX-License-Identifier: MIT */
/* wire.c -- DNS message encode/decode */
#include "dns/dns_int.h"

#include <errno.h>
#include <string.h>

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
}

static uint8_t ascii_lower(uint8_t c) {
  return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

const char *dns_wire_strerror(dns_wire_t s) {
  switch (s) {
  case DNS_WIRE_OK:
    return "ok";
  case DNS_WIRE_TRUNCATED:
    return "message truncated";
  case DNS_WIRE_BAD_POINTER:
    return "bad compression pointer";
  case DNS_WIRE_LABEL_TOO_LONG:
    return "label longer than 63 bytes";
  case DNS_WIRE_NAME_TOO_LONG:
    return "name longer than 255 bytes";
  }
  return "unknown wire error";
}

/* ---- parsing ------------------------------------------------------------ */

dns_wire_t dns_header_parse(const uint8_t *msg, size_t len, dns_header_t *out) {
  if (len < DNS_HEADER_SIZE)
    return DNS_WIRE_TRUNCATED;
  out->id = get_u16(msg);
  out->flags = get_u16(msg + 2);
  out->qdcount = get_u16(msg + 4);
  out->ancount = get_u16(msg + 6);
  out->nscount = get_u16(msg + 8);
  out->arcount = get_u16(msg + 10);
  return DNS_WIRE_OK;
}

void dns_header_encode(const dns_header_t *h, uint8_t out[DNS_HEADER_SIZE]) {
  const uint16_t v[6] = {h->id,      h->flags,   h->qdcount,
                         h->ancount, h->nscount, h->arcount};
  for (size_t i = 0; i < 6; i++) {
    out[2 * i] = (uint8_t)(v[i] >> 8);
    out[2 * i + 1] = (uint8_t)v[i];
  }
}

dns_wire_t dns_name_decode(const uint8_t *msg, size_t len, size_t *pos,
                           dns_name_t *out) {
  size_t p = *pos;
  size_t run_start = p; /* first byte of the labels being read */
  size_t end = 0;       /* where the name ends in place; 0: not yet known */
  size_t n = 0;
  unsigned jumps = 0;

  out->labels = 0;
  for (;;) {
    if (p >= len)
      return DNS_WIRE_TRUNCATED;
    uint8_t c = msg[p];
    if (c == 0)
      break;
    if ((c & 0xC0) == 0xC0) {
      if (p + 1 >= len)
        return DNS_WIRE_TRUNCATED;
      size_t target = ((size_t)(c & 0x3F) << 8) | msg[p + 1];
      /* Targets strictly decrease from run to run, so no loop can form;
       * nothing but the header lies before the first name. */
      if (target >= run_start || target < DNS_HEADER_SIZE ||
          ++jumps > DNS_NAME_MAX_JUMPS)
        return DNS_WIRE_BAD_POINTER;
      if (end == 0)
        end = p + 2;
      p = run_start = target;
      continue;
    }
    if (c > DNS_LABEL_MAX)
      return DNS_WIRE_LABEL_TOO_LONG;
    /* Keep one byte for the root label. */
    if (n + 1 + c + 1 > DNS_NAME_WIRE_MAX)
      return DNS_WIRE_NAME_TOO_LONG;
    if (p + 1 + c > len)
      return DNS_WIRE_TRUNCATED;
    memcpy(out->wire + n, msg + p, (size_t)c + 1);
    n += (size_t)c + 1;
    out->labels++;
    p += (size_t)c + 1;
  }
  out->wire[n++] = 0;
  out->len = (uint8_t)n;
  *pos = end ? end : p + 1;
  return DNS_WIRE_OK;
}

dns_wire_t dns_question_parse(const uint8_t *msg, size_t len, size_t *pos,
                              dns_question_t *out) {
  size_t p = *pos;
  dns_wire_t s = dns_name_decode(msg, len, &p, &out->name);
  if (s != DNS_WIRE_OK)
    return s;
  if (len - p < 4)
    return DNS_WIRE_TRUNCATED;
  out->qtype = get_u16(msg + p);
  out->qclass = get_u16(msg + p + 2);
  *pos = p + 4;
  return DNS_WIRE_OK;
}

dns_wire_t dns_rr_parse(const uint8_t *msg, size_t len, size_t *pos,
                        dns_rr_t *out) {
  size_t p = *pos;
  dns_wire_t s = dns_name_decode(msg, len, &p, &out->name);
  if (s != DNS_WIRE_OK)
    return s;
  if (len - p < 10)
    return DNS_WIRE_TRUNCATED;
  out->type = get_u16(msg + p);
  out->rclass = get_u16(msg + p + 2);
  out->ttl = get_u32(msg + p + 4);
  out->rdlength = get_u16(msg + p + 8);
  p += 10;
  if (len - p < out->rdlength)
    return DNS_WIRE_TRUNCATED;
  out->rdata = p;
  *pos = p + out->rdlength;
  return DNS_WIRE_OK;
}

/* ---- TCP framing -------------------------------------------------------- */

dns_frame_t dns_tcp_frame(const uint8_t *buf, size_t len, const uint8_t **msg,
                          size_t *msg_len, size_t *consumed) {
  *msg = NULL;
  *msg_len = 0;
  *consumed = 2;
  if (len < 2)
    return DNS_FRAME_NEED_MORE;
  size_t n = get_u16(buf);
  if (n < DNS_HEADER_SIZE)
    return DNS_FRAME_INVALID;
  *consumed = 2 + n;
  if (len - 2 < n)
    return DNS_FRAME_NEED_MORE;
  *msg = buf + 2;
  *msg_len = n;
  return DNS_FRAME_COMPLETE;
}

/* ---- names -------------------------------------------------------------- */

int dns_name_from_text(const char *text, size_t len, dns_name_t *out) {
  size_t n = 0, i = 0;

  out->labels = 0;
  if (len == 1 && text[0] == '.')
    len = 0;
  while (i < len) {
    size_t len_at = n++;
    size_t label = 0;
    while (i < len && text[i] != '.') {
      unsigned c = (unsigned char)text[i++];
      if (c == '\\') {
        if (i >= len)
          return -EINVAL;
        if (text[i] >= '0' && text[i] <= '9') {
          if (len - i < 3)
            return -EINVAL;
          c = 0;
          for (int k = 0; k < 3; k++, i++) {
            if (text[i] < '0' || text[i] > '9')
              return -EINVAL;
            c = c * 10 + (unsigned)(text[i] - '0');
          }
          if (c > 255)
            return -EINVAL;
        } else {
          c = (unsigned char)text[i++];
        }
      }
      if (++label > DNS_LABEL_MAX || n + 1 >= DNS_NAME_WIRE_MAX)
        return -EINVAL;
      out->wire[n++] = (uint8_t)c;
    }
    if (label == 0)
      return -EINVAL; /* "a..b" or ".a" */
    out->wire[len_at] = (uint8_t)label;
    out->labels++;
    if (i < len)
      i++; /* the dot; a trailing one ends the loop */
  }
  out->wire[n++] = 0;
  out->len = (uint8_t)n;
  return 0;
}

int dns_name_to_text(const dns_name_t *name, char *out, size_t size,
                     bool lowercase) {
  size_t n = 0;
  size_t p = 0;

  if (size == 0)
    return -ENOSPC;
  if (name->labels == 0) {
    if (size < 2)
      return -ENOSPC;
    out[0] = '.';
    out[1] = '\0';
    return 1;
  }
  while (name->wire[p] != 0) {
    uint8_t l = name->wire[p++];
    if (n > 0) {
      if (n + 1 >= size)
        return -ENOSPC;
      out[n++] = '.';
    }
    for (uint8_t k = 0; k < l; k++) {
      uint8_t c = name->wire[p++];
      if (lowercase)
        c = ascii_lower(c);
      if (c == '.' || c == '\\') {
        if (n + 2 >= size)
          return -ENOSPC;
        out[n++] = '\\';
        out[n++] = (char)c;
      } else if (c <= ' ' || c >= 0x7F) {
        if (n + 4 >= size)
          return -ENOSPC;
        out[n++] = '\\';
        out[n++] = (char)('0' + c / 100);
        out[n++] = (char)('0' + c / 10 % 10);
        out[n++] = (char)('0' + c % 10);
      } else {
        if (n + 1 >= size)
          return -ENOSPC;
        out[n++] = (char)c;
      }
    }
  }
  out[n] = '\0';
  return (int)n;
}

/* Length bytes are at most 63, below 'A', so lowering them is harmless. */
static bool wire_equal_nocase(const uint8_t *a, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (ascii_lower(a[i]) != ascii_lower(b[i]))
      return false;
  return true;
}

bool dns_name_equal(const dns_name_t *a, const dns_name_t *b) {
  return a->len == b->len && wire_equal_nocase(a->wire, b->wire, a->len);
}

bool dns_name_is_under(const dns_name_t *name, const dns_name_t *zone) {
  size_t p = 0;

  if (name->labels < zone->labels)
    return false;
  for (unsigned skip = name->labels - zone->labels; skip > 0; skip--)
    p += (size_t)name->wire[p] + 1;
  return name->len - p == zone->len &&
         wire_equal_nocase(name->wire + p, zone->wire, zone->len);
}

int dns_name_prepend(const dns_name_t *parent, const char *label, size_t len,
                     dns_name_t *out) {
  if (len == 0 || len > DNS_LABEL_MAX ||
      1 + len + parent->len > DNS_NAME_WIRE_MAX)
    return -EINVAL;
  /* out may alias parent. */
  memmove(out->wire + 1 + len, parent->wire, parent->len);
  out->wire[0] = (uint8_t)len;
  memcpy(out->wire + 1, label, len);
  out->len = (uint8_t)(1 + len + parent->len);
  out->labels = (uint8_t)(parent->labels + 1);
  return 0;
}

/* ---- writing ------------------------------------------------------------ */

void dns_writer_init(dns_writer_t *w, uint8_t *buf, size_t cap) {
  w->buf = buf;
  w->cap = cap;
  w->len = 0;
  w->too_big = false;
  w->n_names = 0;
}

void dns_writer_rewind(dns_writer_t *w, size_t len) {
  if (len < w->len)
    w->len = len;
  while (w->n_names > 0 && w->names[w->n_names - 1] >= w->len)
    w->n_names--;
  w->too_big = false;
}

/* Reserves n bytes and returns where to put them, or NULL once too big. */
static uint8_t *reserve(dns_writer_t *w, size_t n) {
  if (w->too_big || w->cap - w->len < n) {
    w->too_big = true;
    return NULL;
  }
  uint8_t *p = w->buf + w->len;
  w->len += n;
  return p;
}

void dns_write_u8(dns_writer_t *w, uint8_t v) {
  uint8_t *p = reserve(w, 1);
  if (p)
    p[0] = v;
}

void dns_write_u16(dns_writer_t *w, uint16_t v) {
  uint8_t *p = reserve(w, 2);
  if (p) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
  }
}

void dns_write_u32(dns_writer_t *w, uint32_t v) {
  uint8_t *p = reserve(w, 4);
  if (p) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
  }
}

void dns_write_bytes(dns_writer_t *w, const void *src, size_t n) {
  uint8_t *p = reserve(w, n);
  if (p && n > 0)
    memcpy(p, src, n);
}

void dns_writer_patch_u16(dns_writer_t *w, size_t offset, uint16_t v) {
  if (offset > w->len || w->len - offset < 2)
    return;
  w->buf[offset] = (uint8_t)(v >> 8);
  w->buf[offset + 1] = (uint8_t)v;
}

void dns_write_header(dns_writer_t *w, const dns_header_t *h) {
  uint8_t *p = reserve(w, DNS_HEADER_SIZE);
  if (p)
    dns_header_encode(h, p);
}

/* True when the name written at buf[off] (our own output, so pointers only
 * go backwards) is exactly the uncompressed suffix. */
static bool written_name_is(const dns_writer_t *w, size_t off,
                            const uint8_t *suffix) {
  unsigned jumps = 0;
  for (;;) {
    if (off >= w->len)
      return false;
    uint8_t c = w->buf[off];
    if ((c & 0xC0) == 0xC0) {
      if (off + 1 >= w->len || ++jumps > DNS_NAME_MAX_JUMPS)
        return false;
      off = ((size_t)(c & 0x3F) << 8) | w->buf[off + 1];
      continue;
    }
    if (c != *suffix || w->len - off < (size_t)c + 1 ||
        memcmp(w->buf + off + 1, suffix + 1, c) != 0)
      return false;
    if (c == 0)
      return true;
    off += (size_t)c + 1;
    suffix += (size_t)c + 1;
  }
}

static bool find_written(const dns_writer_t *w, const uint8_t *suffix,
                         uint16_t *off) {
  for (size_t i = 0; i < w->n_names; i++) {
    if (written_name_is(w, w->names[i], suffix)) {
      *off = w->names[i];
      return true;
    }
  }
  return false;
}

static void write_name(dns_writer_t *w, const dns_name_t *name, bool compress) {
  size_t p = 0;

  while (name->wire[p] != 0) {
    uint16_t target;
    if (compress && find_written(w, name->wire + p, &target)) {
      dns_write_u16(w, (uint16_t)(0xC000u | target));
      return;
    }
    size_t at = w->len;
    size_t n = (size_t)name->wire[p] + 1;
    dns_write_bytes(w, name->wire + p, n);
    /* Pointers carry 14 bits of offset. */
    if (!w->too_big && at < 0x4000 && w->n_names < DNS_WRITER_MAX_NAMES)
      w->names[w->n_names++] = (uint16_t)at;
    p += n;
  }
  dns_write_u8(w, 0);
}

void dns_write_name(dns_writer_t *w, const dns_name_t *name) {
  write_name(w, name, true);
}

void dns_write_question(dns_writer_t *w, const dns_question_t *q) {
  write_name(w, &q->name, false);
  dns_write_u16(w, q->qtype);
  dns_write_u16(w, q->qclass);
}

size_t dns_write_rr_begin(dns_writer_t *w, const dns_name_t *owner,
                          uint16_t type, uint16_t rclass, uint32_t ttl) {
  dns_write_name(w, owner);
  dns_write_u16(w, type);
  dns_write_u16(w, rclass);
  dns_write_u32(w, ttl);
  size_t at = w->len;
  dns_write_u16(w, 0);
  return at;
}

void dns_write_rr_end(dns_writer_t *w, size_t rdlength_at) {
  if (w->too_big)
    return;
  dns_writer_patch_u16(w, rdlength_at, (uint16_t)(w->len - rdlength_at - 2));
}

void dns_write_rr_a(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                    const uint8_t addr[4]) {
  size_t at = dns_write_rr_begin(w, owner, DNS_TYPE_A, DNS_CLASS_IN, ttl);
  dns_write_bytes(w, addr, 4);
  dns_write_rr_end(w, at);
}

void dns_write_rr_aaaa(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                       const uint8_t addr[16]) {
  size_t at = dns_write_rr_begin(w, owner, DNS_TYPE_AAAA, DNS_CLASS_IN, ttl);
  dns_write_bytes(w, addr, 16);
  dns_write_rr_end(w, at);
}

void dns_write_rr_ns(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                     const dns_name_t *host) {
  size_t at = dns_write_rr_begin(w, owner, DNS_TYPE_NS, DNS_CLASS_IN, ttl);
  dns_write_name(w, host);
  dns_write_rr_end(w, at);
}

void dns_write_rr_soa(dns_writer_t *w, const dns_name_t *owner, uint32_t ttl,
                      const dns_soa_t *soa) {
  size_t at = dns_write_rr_begin(w, owner, DNS_TYPE_SOA, DNS_CLASS_IN, ttl);
  dns_write_name(w, &soa->mname);
  dns_write_name(w, &soa->rname);
  dns_write_u32(w, soa->serial);
  dns_write_u32(w, soa->refresh);
  dns_write_u32(w, soa->retry);
  dns_write_u32(w, soa->expire);
  dns_write_u32(w, soa->minimum);
  dns_write_rr_end(w, at);
}

void dns_write_rr_opt(dns_writer_t *w, uint16_t udp_size, uint8_t ext_rcode,
                      uint8_t version, bool dnssec_ok) {
  dns_write_rr_opt_options(w, udp_size, ext_rcode, version, dnssec_ok, NULL, 0);
}

void dns_write_rr_opt_options(dns_writer_t *w, uint16_t udp_size,
                              uint8_t ext_rcode, uint8_t version,
                              bool dnssec_ok, const uint8_t *options,
                              size_t len) {
  uint32_t ttl = ((uint32_t)ext_rcode << 24) | ((uint32_t)version << 16) |
                 (dnssec_ok ? DNS_OPT_DO : 0);
  dns_write_u8(w, 0); /* root owner */
  dns_write_u16(w, DNS_TYPE_OPT);
  dns_write_u16(w, udp_size);
  dns_write_u32(w, ttl);
  dns_write_u16(w, (uint16_t)len);
  dns_write_bytes(w, options, len);
}
