/* SPDX-License-Identifier: MIT */
/* dns.h -- the authoritative DNS responder: answers from the registry */
#ifndef DDPORT_DNS_H
#define DDPORT_DNS_H

#include "registry/registry.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Largest UDP answer we build when the client sent no EDNS0 OPT. */
#define DNS_UDP_PLAIN_MAX 512
/* Our EDNS0 UDP payload size (DNS flag day 2020). */
#define DNS_EDNS_SIZE 1232

/* Builds the answer to one query message into out (cap bytes; pass at least
 * 512). Answers from config's zones and reg's devices. Returns the answer's
 * length, or 0 when nothing must be sent back (the packet is not a query,
 * or too short to carry a header). Pure: no allocation, no I/O. */
size_t dns_answer_query(const reg_config_t *config, const reg_t *reg,
                        const uint8_t *query, size_t len, uint8_t *out,
                        size_t cap);

typedef struct dns_server dns_server_t;

/* Opens and binds one worker's UDP socket on addr, as the server does for
 * each DNS address: non-blocking, SO_REUSEPORT, IPv6-only for an IPv6
 * address, a 4 MiB receive buffer where the kernel grants it, steered by
 * CPU under cpu_affinity (core_affinity_steer). Returns the descriptor or a
 * negative errno. bench/dns_floor.c opens its sockets with it too. */
int dns_udp_socket_open(const struct sockaddr_storage *addr);

/* Opens one SO_REUSEPORT UDP socket and one TCP listener per address in
 * config->dns.listen on loop and starts answering. config and reg are borrowed
 * and must outlive the server. Returns 0 and *out, or a negative errno / UV_E*
 * (logged). */
int dns_server_start(uv_loop_t *loop, const reg_config_t *config,
                     const reg_t *reg, dns_server_t **out);

/* Closes the sockets; the server frees itself once libuv is done with the
 * handles (run the loop afterwards). */
void dns_server_stop(dns_server_t *server);

typedef struct dns_notifier dns_notifier_t;

/* Paces the zone serial and tells secondaries of it, from control_loop
 * (one place, not every worker). Every dns.serial_batch it publishes reg's
 * changes since the last time, if any, as the next state (reg_publish):
 * the serial of every zone rises by one, and each zone's notify targets
 * get a NOTIFY, retried with backoff until they answer; outcomes are
 * logged. At start it NOTIFYs every zone. config and reg are borrowed and
 * must outlive the notifier. Never NULL: the serial needs pacing whether
 * or not there is anybody to notify. */
dns_notifier_t *dns_notifier_start(uv_loop_t *control_loop,
                                   const reg_config_t *config, reg_t *reg);

/* Says that the registry changed in config->dns.zones[zone_index]: call on
 * the control loop after each change (a reload, a device update). Changes
 * are batched: the first after a quiet serial_batch is published at once,
 * those after it with the next batch, so the serial rises, and the
 * secondaries are NOTIFYed, at most once per serial_batch. NULL n is
 * fine. */
void dns_notify_zone(dns_notifier_t *n, size_t zone_index);

/* Stops pacing and retrying and closes the socket; frees itself once
 * libuv is done with the handles. NULL is fine. */
void dns_notifier_stop(dns_notifier_t *n);

#endif
