/* SPDX-License-Identifier: MIT */
/* update_load.c -- closed-loop dyndns2 load: N keep-alive clients, each
 * updating its own device with a port that changes every time, so every
 * answer is a durable write (good). Prints one JSON line of results. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define REQ_MAX 1024
#define RESP_MAX 4096
/* 0.1 ms each, 0..10 s, then one for the slower: 1000 clients waiting on
 * a loaded machine see answers after hundreds of ms. */
#define HIST_BUCKETS 100000

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  unsigned id;
  unsigned n; /* requests sent */
  uint64_t sent_ns;
  char req[REQ_MAX];
  size_t req_len;
  char resp[RESP_MAX];
  size_t resp_len;
  bool done;
} client_t;

static struct {
  const char *host, *prefix, *account, *secret, *zone;
  unsigned port, conns, accounts;
  double duration, warmup;
  uint64_t start_ns, measure_ns, end_ns;
  uint64_t good, nochg, other, errors, measured;
  uint64_t hist[HIST_BUCKETS + 1];
  uint64_t max_ns;
  char auth[REQ_MAX];
  uv_loop_t *loop;
  unsigned open;
} g = {.host = "127.0.0.1",
       .prefix = "dev",
       .zone = "bench.test",
       .account = "bench",
       .secret = "bench",
       .conns = 100,
       .duration = 5,
       .warmup = 1};

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const char *in, char *out) {
  size_t len = strlen(in), o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)(uint8_t)in[i + 1] << 8;
    if (i + 2 < len)
      v |= (uint8_t)in[i + 2];
    out[o++] = b64[v >> 18 & 63];
    out[o++] = b64[v >> 12 & 63];
    out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
    out[o++] = i + 2 < len ? b64[v & 63] : '=';
  }
  out[o] = '\0';
}

static void on_write(uv_write_t *w, int status);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_closed(uv_handle_t *h) {
  (void)h;
  g.open--;
}

static void finish(client_t *c) {
  if (!c->done) {
    c->done = true;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
  }
}

static void send_next(client_t *c) {
  uint64_t now = uv_hrtime();
  if (now >= g.end_ns) {
    finish(c);
    return;
  }
  char basic[REQ_MAX];
  if (g.accounts > 0) {
    char cred[256];
    snprintf(cred, sizeof cred, "%s%u:%s", g.account, c->id % g.accounts,
             g.secret);
    base64(cred, basic);
  } else {
    snprintf(basic, sizeof basic, "%s", g.auth);
  }
  /* Two ports in turn: every update changes the device. */
  c->req_len = (size_t)snprintf(
      c->req, sizeof c->req,
      "GET /nic/update?hostname=%s%u.%s&myip=127.0.0.1&port=%u HTTP/1.1\r\n"
      "Host: update\r\nAuthorization: Basic %s\r\nUser-Agent: "
      "ddport-bench/1\r\n\r\n",
      g.prefix, c->id, g.zone, 20000 + (c->n & 1), basic);
  c->n++;
  c->resp_len = 0;
  c->sent_ns = now;
  uv_buf_t b = uv_buf_init(c->req, (unsigned)c->req_len);
  uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_write);
}

static void on_write(uv_write_t *w, int status) {
  client_t *c = w->data;
  if (status < 0) {
    g.errors++;
    finish(c);
  }
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)size;
  *buf = uv_buf_init(c->resp + c->resp_len,
                     (unsigned)(sizeof c->resp - c->resp_len));
}

static void record(client_t *c) {
  uint64_t now = uv_hrtime();
  const char *body = strstr(c->resp, "\r\n\r\n");
  body = body ? body + 4 : "";
  if (now < g.measure_ns)
    return; /* warm-up: secrets hashed, caches filled */
  g.measured++;
  if (strncmp(body, "good", 4) == 0)
    g.good++;
  else if (strncmp(body, "nochg", 5) == 0)
    g.nochg++;
  else
    g.other++;
  uint64_t ns = now - c->sent_ns;
  size_t b = ns / 100000;
  g.hist[b < HIST_BUCKETS ? b : HIST_BUCKETS]++;
  if (ns > g.max_ns)
    g.max_ns = ns;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (n < 0) {
    g.errors++;
    finish(c);
    return;
  }
  c->resp_len += (size_t)n;
  c->resp[c->resp_len < RESP_MAX ? c->resp_len : RESP_MAX - 1] = '\0';
  const char *end = strstr(c->resp, "\r\n\r\n");
  const char *cl = strstr(c->resp, "Content-Length: ");
  if (end == NULL || cl == NULL)
    return;
  size_t want = (size_t)(end + 4 - c->resp) + strtoul(cl + 16, NULL, 10);
  if (c->resp_len < want)
    return;
  record(c);
  send_next(c);
}

static void on_connect(uv_connect_t *req, int status) {
  client_t *c = req->data;
  if (status < 0) {
    fprintf(stderr, "update_load: connect: %s\n", uv_strerror(status));
    g.errors++;
    finish(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
  send_next(c);
}

static double percentile(double p) {
  uint64_t total = 0;
  for (size_t i = 0; i <= HIST_BUCKETS; i++)
    total += g.hist[i];
  if (total == 0)
    return 0;
  uint64_t rank = (uint64_t)ceil(p * (double)total), seen = 0;
  for (size_t i = 0; i < HIST_BUCKETS; i++) {
    seen += g.hist[i];
    if (seen >= rank)
      return (double)(i + 1) * 0.1;
  }
  return (double)g.max_ns / 1e6;
}

static void usage(void) {
  fprintf(stderr,
          "usage: update_load -p PORT [-c CONNS] [-d SECONDS] [-w WARMUP]\n"
          "         [-u ACCOUNT] [-s SECRET] [-A ACCOUNTS] [-x PREFIX] "
          "[-z ZONE]\n"
          "Client i updates PREFIXi.ZONE as ACCOUNT (or ACCOUNT<i %% "
          "ACCOUNTS>).\n");
  exit(2);
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "p:c:d:w:u:s:A:x:z:h:")) != -1) {
    switch (opt) {
    case 'p':
      g.port = (unsigned)atoi(optarg);
      break;
    case 'c':
      g.conns = (unsigned)atoi(optarg);
      break;
    case 'd':
      g.duration = atof(optarg);
      break;
    case 'w':
      g.warmup = atof(optarg);
      break;
    case 'u':
      g.account = optarg;
      break;
    case 's':
      g.secret = optarg;
      break;
    case 'A':
      g.accounts = (unsigned)atoi(optarg);
      break;
    case 'x':
      g.prefix = optarg;
      break;
    case 'z':
      g.zone = optarg;
      break;
    case 'h':
      g.host = optarg;
      break;
    default:
      usage();
    }
  }
  if (g.port == 0 || g.conns == 0 || g.duration <= 0)
    usage();
  char cred[512];
  snprintf(cred, sizeof cred, "%s:%s", g.account, g.secret);
  base64(cred, g.auth);
  g.loop = uv_default_loop();
  struct sockaddr_in sa;
  uv_ip4_addr(g.host, (int)g.port, &sa);
  client_t *clients = calloc(g.conns, sizeof *clients);
  if (clients == NULL)
    return 1;
  g.start_ns = uv_hrtime();
  g.measure_ns = g.start_ns + (uint64_t)(g.warmup * 1e9);
  g.end_ns = g.measure_ns + (uint64_t)(g.duration * 1e9);
  for (unsigned i = 0; i < g.conns; i++) {
    client_t *c = &clients[i];
    c->id = i;
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c->connect.data = c->write.data = c;
    g.open++;
    uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&sa,
                   on_connect);
  }
  uv_run(g.loop, UV_RUN_DEFAULT);
  double secs = g.duration;
  printf("{\"conns\": %u, \"seconds\": %.2f, \"responses\": %llu, "
         "\"good\": %llu, \"nochg\": %llu, \"other\": %llu, \"errors\": %llu, "
         "\"rate\": %.1f, \"p50_ms\": %.1f, \"p90_ms\": %.1f, \"p99_ms\": "
         "%.1f, \"max_ms\": %.1f}\n",
         g.conns, secs, (unsigned long long)g.measured,
         (unsigned long long)g.good, (unsigned long long)g.nochg,
         (unsigned long long)g.other, (unsigned long long)g.errors,
         (double)g.good / secs, percentile(0.50), percentile(0.90),
         percentile(0.99), (double)g.max_ns / 1e6);
  free(clients);
  return g.errors > 0 || g.other > 0 ? 1 : 0;
}
