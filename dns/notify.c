/* SPDX-License-Identifier: MIT */
/* notify.c -- the zone serial, paced, and NOTIFY (RFC 1996) to secondaries,
 * from the control loop */
#include "dns/dns.h"
#include "dns/dns_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Retries back off from 1 s to at most a minute; after MAX_ATTEMPTS sends
 * without an answer the secondary is left to its SOA refresh timer. */
#define FIRST_RETRY_MS 1000
#define MAX_RETRY_MS 60000
#define MAX_ATTEMPTS 10

typedef struct job {
  dns_notifier_t *notifier;
  size_t zone_index;
  const reg_notify_t *target;
  uv_timer_t timer; /* timer.data: the job */
  uint16_t id;
  unsigned attempts;
  uint32_t serial;
  bool waiting; /* sent and not yet answered */
  /* Signed NOTIFYs: the key, and each try's MAC, which a signed answer
   * must cover (tsig.key NULL: not signed). */
  dns_tsig_ctx_t tsig;
  uint8_t macs[MAX_ATTEMPTS][64];
  uint8_t mac_lens[MAX_ATTEMPTS];
} job_t;

struct dns_notifier {
  uv_loop_t *loop;
  const reg_config_t *config;
  reg_t *reg;      /* published here; the zone serial follows it */
  uv_timer_t pace; /* every serial_batch: publish what changed */
  uint64_t start_ms;
  uint64_t published_ms; /* the last publish, if any */
  bool published;
  uv_udp_t udp[2]; /* IPv4, IPv6; data: the notifier once initialised */
  size_t n_open;
  bool stopping;
  size_t n_jobs;
  job_t jobs[];
};

static const char *target_text(const job_t *job, char *buf, size_t size) {
  return core_sockaddr_format((const struct sockaddr *)&job->target->addr, buf,
                              size);
}

static const reg_zone_t *job_zone(const job_t *job) {
  return &job->notifier->config->dns.zones[job->zone_index];
}

static uv_udp_t *socket_for(dns_notifier_t *n, const job_t *job) {
  uv_udp_t *udp = &n->udp[job->target->addr.ss_family == AF_INET6];
  return udp->data == n ? udp : NULL;
}

/* The NOTIFY: the zone's SOA as question, and the new SOA as a hint
 * (RFC 1996 3.7), signed when the target has a key (its MAC kept for
 * checking the answer). */
static size_t build(job_t *job, uint8_t *out, size_t cap) {
  const reg_zone_t *zone = job_zone(job);
  const reg_config_t *config = job->notifier->config;
  dns_question_t q = {.qtype = DNS_TYPE_SOA, .qclass = DNS_CLASS_IN};
  dns_soa_t soa;
  dns_tsig_ctx_t *tsig = &job->tsig;
  dns_writer_t w;

  memset(tsig, 0, sizeof *tsig);
  if (job->target->key)
    for (size_t i = 0; i < config->dns.n_tsig_keys; i++)
      if (strcmp(config->dns.tsig_keys[i].name, job->target->key) == 0)
        dns_tsig_ctx_for_key(tsig, &config->dns.tsig_keys[i],
                             (uint64_t)time(NULL));
  if (dns_name_from_text(zone->name, strlen(zone->name), &q.name) != 0)
    return 0;
  dns_soa_build(zone, &q.name, job->serial, &soa);
  dns_header_t h = {.id = job->id,
                    .flags = DNS_FLAG_OPCODE(DNS_OPCODE_NOTIFY) | DNS_FLAG_AA,
                    .qdcount = 1,
                    .ancount = 1};
  dns_writer_init(&w, out, cap - dns_tsig_reserve(tsig));
  dns_write_header(&w, &h);
  dns_write_question(&w, &q);
  dns_write_rr_soa(&w, &q.name, zone->ttl, &soa);
  if (w.too_big)
    return 0;
  size_t len = dns_tsig_sign(tsig, out, w.len, cap);
  if (tsig->key && len == w.len)
    return 0; /* a NOTIFY that should be signed goes signed or not at all */
  return len;
}

static void on_retry(uv_timer_t *timer);

static void send_notify(job_t *job) {
  dns_notifier_t *n = job->notifier;
  uint8_t msg[1024];
  char where[64];
  uv_udp_t *udp = socket_for(n, job);
  size_t len = build(job, msg, sizeof msg);

  target_text(job, where, sizeof where);
  job->attempts++;
  /* attempts never passes MAX_ATTEMPTS: on_retry stops there. */
  memcpy(job->macs[job->attempts - 1], job->tsig.mac, job->tsig.mac_len);
  job->mac_lens[job->attempts - 1] = (uint8_t)job->tsig.mac_len;
  if (!udp || len == 0) {
    core_log(CORE_LOG_ERROR, "dns: cannot NOTIFY %s about %s: %s", where,
             job_zone(job)->name, udp ? "message too big" : "no socket");
    job->waiting = false;
    return;
  }
  uv_buf_t buf = uv_buf_init((char *)msg, (unsigned)len);
  int err = uv_udp_try_send(udp, &buf, 1,
                            (const struct sockaddr *)&job->target->addr);
  if (err < 0)
    core_log(CORE_LOG_WARN, "dns: NOTIFY of %s to %s: %s", job_zone(job)->name,
             where, uv_strerror(err));
  else
    core_log(CORE_LOG_DEBUG, "dns: NOTIFY of %s serial %u sent to %s (try %u)",
             job_zone(job)->name, job->serial, where, job->attempts);
  uint64_t delay = (uint64_t)FIRST_RETRY_MS << (job->attempts - 1);
  uv_timer_start(&job->timer, on_retry,
                 delay > MAX_RETRY_MS ? MAX_RETRY_MS : delay, 0);
}

static void on_retry(uv_timer_t *timer) {
  job_t *job = timer->data;
  char where[64];
  if (!job->waiting || job->notifier->stopping)
    return;
  if (job->attempts >= MAX_ATTEMPTS) {
    core_log(CORE_LOG_WARN,
             "dns: NOTIFY of %s serial %u to %s: no answer after %u tries; "
             "giving up (the secondary will still refresh by the SOA timers)",
             job_zone(job)->name, job->serial,
             target_text(job, where, sizeof where), job->attempts);
    job->waiting = false;
    return;
  }
  send_notify(job);
}

static bool same_addr(const struct sockaddr *a,
                      const struct sockaddr_storage *b) {
  core_ip_t x, y;
  if (core_ip_from_sockaddr(a, &x) != 0 ||
      core_ip_from_sockaddr((const struct sockaddr *)b, &y) != 0)
    return false;
  uint16_t pa = a->sa_family == AF_INET6
                    ? ((const struct sockaddr_in6 *)a)->sin6_port
                    : ((const struct sockaddr_in *)a)->sin_port;
  uint16_t pb = b->ss_family == AF_INET6
                    ? ((const struct sockaddr_in6 *)b)->sin6_port
                    : ((const struct sockaddr_in *)b)->sin_port;
  return x.family == y.family && memcmp(x.bytes, y.bytes, 16) == 0 && pa == pb;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  static char space[4096]; /* the control loop's only reader */
  (void)handle;
  (void)suggested;
  *buf = uv_buf_init(space, sizeof space);
}

static const char *tsig_error_text(uint16_t error) {
  switch (error) {
  case DNS_TSIG_ERR_BADSIG:
    return "BADSIG";
  case DNS_TSIG_ERR_BADKEY:
    return "BADKEY";
  case DNS_TSIG_ERR_BADTIME:
    return "BADTIME";
  }
  return "an unknown error";
}

/* The TSIG of an answer to a signed NOTIFY, against each try's MAC (the
 * answer may be to an earlier try: retries keep the ID). */
static dns_tsig_status_t answer_tsig(const job_t *job, const uint8_t *msg,
                                     size_t len, uint16_t *error) {
  dns_tsig_ctx_t request = job->tsig;
  dns_tsig_status_t status = DNS_TSIG_NONE;
  uint64_t now = (uint64_t)time(NULL);
  for (unsigned i = job->attempts; i-- > 0;) {
    memcpy(request.mac, job->macs[i], job->mac_lens[i]);
    request.mac_len = job->mac_lens[i];
    status = dns_tsig_verify_answer(&request, msg, len, now, error);
    if (status != DNS_TSIG_BADSIG)
      break;
  }
  return status;
}

/* Says why an answer to a signed NOTIFY does not acknowledge it; the job
 * keeps waiting, and retrying. */
static void log_unverified(const job_t *job, dns_tsig_status_t status,
                           uint16_t error) {
  static const char *const why[] = {
      [DNS_TSIG_NONE] = "is not signed",
      [DNS_TSIG_FORMERR] = "has a malformed TSIG record",
      [DNS_TSIG_BADKEY] = "is signed with another key or algorithm",
      [DNS_TSIG_BADSIG] = "has a wrong MAC",
      [DNS_TSIG_BADTIME] = "is signed too far from our clock",
  };
  char where[64], reports[64] = "";
  if (error != 0)
    snprintf(reports, sizeof reports, " (it reports TSIG %s)",
             tsig_error_text(error));
  core_log(CORE_LOG_WARN,
           "dns: NOTIFY of %s serial %u to %s: the answer %s%s; not an "
           "acknowledgement, retrying",
           job_zone(job)->name, job->serial,
           target_text(job, where, sizeof where), why[status], reports);
}

/* An answer acknowledges the job whose ID and target it matches; when the
 * NOTIFY was signed, only once the answer's TSIG checks out against it
 * (RFC 8945 5.3): anybody can send an unsigned answer. */
static void on_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  dns_notifier_t *n = udp->data;
  const uint8_t *msg = (const uint8_t *)buf->base;
  dns_header_t h;
  char where[64];
  if (nread <= 0 || !addr || n->stopping || (flags & UV_UDP_PARTIAL) ||
      dns_header_parse(msg, (size_t)nread, &h) != DNS_WIRE_OK ||
      !(h.flags & DNS_FLAG_QR) || dns_header_opcode(&h) != DNS_OPCODE_NOTIFY)
    return;
  for (size_t i = 0; i < n->n_jobs; i++) {
    job_t *job = &n->jobs[i];
    if (!job->waiting || job->id != h.id ||
        !same_addr(addr, &job->target->addr))
      continue;
    if (job->tsig.key) {
      uint16_t error;
      dns_tsig_status_t status = answer_tsig(job, msg, (size_t)nread, &error);
      if (status != DNS_TSIG_OK || error != 0) {
        log_unverified(job, status, error);
        return;
      }
    }
    job->waiting = false;
    uv_timer_stop(&job->timer);
    unsigned rcode = dns_header_rcode(&h);
    if (rcode == DNS_RCODE_NOERROR)
      core_log(CORE_LOG_INFO,
               "dns: NOTIFY of %s serial %u to %s acknowledged%s",
               job_zone(job)->name, job->serial,
               target_text(job, where, sizeof where),
               job->tsig.key ? " (TSIG verified)" : "");
    else
      core_log(CORE_LOG_WARN,
               "dns: NOTIFY of %s serial %u to %s answered with rcode %u%s",
               job_zone(job)->name, job->serial,
               target_text(job, where, sizeof where), rcode,
               rcode == DNS_RCODE_NOTAUTH   ? " (NOTAUTH: check its TSIG key)"
               : rcode == DNS_RCODE_REFUSED ? " (REFUSED: check its ACL)"
                                            : "");
    return;
  }
}

static void notifier_release(dns_notifier_t *n) {
  if (--n->n_open == 0)
    free(n);
}

/* The sockets and the pace timer carry the notifier, job timers their
 * job. */
static void on_closed(uv_handle_t *handle) {
  notifier_release(handle->data);
}

static void on_job_closed(uv_handle_t *handle) {
  notifier_release(((job_t *)handle->data)->notifier);
}

static int udp_open(uv_loop_t *loop, dns_notifier_t *n, int family) {
  uv_udp_t *udp = &n->udp[family == AF_INET6];
  struct sockaddr_storage any;
  core_ip_t ip = {.family = family};
  core_ip_to_sockaddr(&ip, 0, &any);
  int err = uv_udp_init(loop, udp);
  if (err != 0)
    return err;
  udp->data = n;
  n->n_open++;
  err = uv_udp_bind(udp, (const struct sockaddr *)&any,
                    family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
  if (err == 0)
    err = uv_udp_recv_start(udp, on_alloc, on_recv);
  return err;
}

/* ---- pacing the serial ----------------------------------------------------
 */

/* May the registry's next state be published now? Not within serial_batch
 * of the last publish; and not before the serial it gives, load time plus
 * the state's number, names a second that has passed: the serial after a
 * restart is the Unix time then, so no serial is ever used twice (for two
 * versions of a zone an IXFR would confuse). Whole seconds since start
 * bound those since the load from below. */
static bool may_publish(const dns_notifier_t *n) {
  uint64_t now = uv_now(n->loop);
  if (n->published && now - n->published_ms < n->config->dns.serial_batch_ms)
    return false;
  uint64_t next = reg_published(n->reg) + 1;
  return now - n->start_ms >= (next + 1) * 1000;
}

static void notify_zone_now(dns_notifier_t *n, size_t zone_index);

static void publish_if_due(dns_notifier_t *n) {
  if (n->stopping || !may_publish(n) || !reg_publish(n->reg))
    return;
  n->published = true;
  n->published_ms = uv_now(n->loop);
  /* The next look a whole batch from now: changes that land meanwhile
   * wait for it. */
  uv_timer_again(&n->pace);
  core_log(CORE_LOG_DEBUG, "dns: registry state %ju published",
           (uintmax_t)reg_published(n->reg));
  for (size_t i = 0; i < n->config->dns.n_zones; i++)
    notify_zone_now(n, i);
}

static void on_pace(uv_timer_t *timer) {
  publish_if_due(timer->data);
}

dns_notifier_t *dns_notifier_start(uv_loop_t *control_loop,
                                   const reg_config_t *config, reg_t *reg) {
  size_t n_jobs = 0;
  bool family[2] = {false, false};
  for (size_t i = 0; i < config->dns.n_zones; i++)
    for (size_t k = 0; k < config->dns.zones[i].n_notify; k++) {
      n_jobs++;
      family[config->dns.zones[i].notify[k].addr.ss_family == AF_INET6] = true;
    }

  dns_notifier_t *n = xcalloc(1, sizeof *n + n_jobs * sizeof(job_t));
  n->loop = control_loop;
  n->reg = reg;
  n->config = config;
  n->n_jobs = n_jobs;
  n->start_ms = uv_now(control_loop);
  uv_timer_init(control_loop, &n->pace);
  n->pace.data = n;
  n->n_open++;
  uv_timer_start(&n->pace, on_pace, config->dns.serial_batch_ms,
                 config->dns.serial_batch_ms);
  for (int f = 0; f < 2; f++) {
    if (!family[f])
      continue;
    int err = udp_open(control_loop, n, f ? AF_INET6 : AF_INET);
    if (err != 0)
      core_log(CORE_LOG_ERROR, "dns: cannot open a socket for NOTIFY: %s",
               uv_strerror(err));
  }
  size_t j = 0;
  for (size_t i = 0; i < config->dns.n_zones; i++)
    for (size_t k = 0; k < config->dns.zones[i].n_notify; k++, j++) {
      job_t *job = &n->jobs[j];
      job->notifier = n;
      job->zone_index = i;
      job->target = &config->dns.zones[i].notify[k];
      uv_timer_init(control_loop, &job->timer);
      job->timer.data = job;
      n->n_open++;
    }
  for (size_t i = 0; i < config->dns.n_zones; i++)
    notify_zone_now(n, i);
  return n;
}

void dns_notify_zone(dns_notifier_t *n, size_t zone_index) {
  if (!n || n->stopping || zone_index >= n->config->dns.n_zones)
    return;
  publish_if_due(n);
}

/* A fresh NOTIFY with the serial in force to each of the zone's targets. */
static void notify_zone_now(dns_notifier_t *n, size_t zone_index) {
  for (size_t i = 0; i < n->n_jobs; i++) {
    job_t *job = &n->jobs[i];
    if (job->zone_index != zone_index)
      continue;
    uint16_t id;
    if (getrandom(&id, sizeof id, 0) != sizeof id)
      id = (uint16_t)(job->id * 31421u + 6927u + i);
    job->id = id;
    job->attempts = 0;
    job->serial = dns_zone_serial(job_zone(job), n->reg);
    job->waiting = true;
    send_notify(job);
  }
}

void dns_notifier_stop(dns_notifier_t *n) {
  if (!n || n->stopping)
    return;
  n->stopping = true;
  uv_close((uv_handle_t *)&n->pace, on_closed);
  for (size_t i = 0; i < n->n_jobs; i++)
    uv_close((uv_handle_t *)&n->jobs[i].timer, on_job_closed);
  for (int f = 0; f < 2; f++)
    if (n->udp[f].data == n)
      uv_close((uv_handle_t *)&n->udp[f], on_closed);
}
