/* SPDX-License-Identifier: MIT */
/* pages.c -- the small HTTP answers the proxy gives when it cannot relay */
#include "proxy/proxy_int.h"

#include <pthread.h>

/* The bodies are fixed, so their lengths are computed at compile time. */
#define BODY(title, msg)                                                       \
  "<!doctype html><title>" title "</title><h1>" title "</h1><p>" msg "</p>\n"

static const char body_400[] =
    BODY("400 Bad Request", "The request could not be understood.");
static const char body_404[] =
    BODY("404 Not Found", "No device is registered under this name.");
static const char body_408[] =
    BODY("408 Request Timeout", "The request did not arrive in time.");
static const char body_431[] =
    BODY("431 Request Header Fields Too Large",
         "The request head is larger than this proxy accepts.");
static const char body_503[] =
    BODY("503 Service Unavailable",
         "Too many connections right now; try again shortly.");
static const char body_502[] =
    BODY("502 Bad Gateway", "The device is offline: it did not accept the "
                            "connection.");

typedef struct page_text {
  const char *status;
  const char *body;
  size_t body_len;
  char response[512];
  size_t len;
} page_text_t;

static page_text_t pages[] = {
    [PX_PAGE_BAD_REQUEST] =
        {"400 Bad Request", body_400, sizeof body_400 - 1, {0}, 0},
    [PX_PAGE_NOT_FOUND] =
        {"404 Not Found", body_404, sizeof body_404 - 1, {0}, 0},
    [PX_PAGE_TIMEOUT] =
        {"408 Request Timeout", body_408, sizeof body_408 - 1, {0}, 0},
    [PX_PAGE_TOO_LARGE] = {"431 Request Header Fields Too Large",
                           body_431,
                           sizeof body_431 - 1,
                           {0},
                           0},
    [PX_PAGE_OFFLINE] =
        {"502 Bad Gateway", body_502, sizeof body_502 - 1, {0}, 0},
    [PX_PAGE_BUSY] =
        {"503 Service Unavailable", body_503, sizeof body_503 - 1, {0}, 0},
};

static void build_pages(void) {
  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    page_text_t *p = &pages[i];
    int n = snprintf(p->response, sizeof p->response,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "Cache-Control: no-store\r\n"
                     "Server: ddport\r\n"
                     "\r\n"
                     "%s",
                     p->status, p->body_len, p->body);
    p->len = (size_t)n;
  }
}

/* TLS alert descriptions (RFC 8446 section 6). */
enum {
  ALERT_DECODE_ERROR = 50,
  ALERT_INTERNAL_ERROR = 80,
  ALERT_UNRECOGNIZED_NAME = 112,
};

#define ALERT_RECORD(desc)                                                     \
  { 21, 3, 3, 0, 2, 2 /* fatal */, desc }

static const char alerts[][7] = {
    [PX_PAGE_BAD_REQUEST] = ALERT_RECORD(ALERT_DECODE_ERROR),
    [PX_PAGE_NOT_FOUND] = ALERT_RECORD(ALERT_UNRECOGNIZED_NAME),
    [PX_PAGE_TIMEOUT] = ALERT_RECORD(0),
    [PX_PAGE_TOO_LARGE] = ALERT_RECORD(ALERT_DECODE_ERROR),
    [PX_PAGE_OFFLINE] = ALERT_RECORD(ALERT_INTERNAL_ERROR),
    [PX_PAGE_BUSY] = ALERT_RECORD(0),
};

core_str_t px_refusal(reg_protocol_t protocol, px_page_t page) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (protocol == REG_PROTOCOL_TLS) {
    /* A half-sent hello that timed out gets no alert: nothing to decode;
     * nor does a connection over a limit: the cheapest answer wins. */
    if (page == PX_PAGE_TIMEOUT || page == PX_PAGE_BUSY)
      return (core_str_t){NULL, 0};
    return (core_str_t){alerts[page], sizeof alerts[page]};
  }
  pthread_once(&once, build_pages);
  return (core_str_t){pages[page].response, pages[page].len};
}
