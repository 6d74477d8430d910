/* SPDX-License-Identifier: MIT */
/* daemon.h -- worker threads and the control loop of `ddport serve` */
#ifndef DDPORT_DAEMON_H
#define DDPORT_DAEMON_H

#include "dns/dns.h"
#include "proxy/proxy.h"
#include "registry/registry.h"

#include <uv.h>

/* Starts config->workers worker threads (0: one per CPU), each with its own
 * loop, proxy listeners and DNS sockets, then runs the control loop on the
 * calling thread until SIGTERM or SIGINT, drains and stops the workers.
 * With updates (may be NULL), the dyndns2 endpoint runs on the control
 * loop and applies them to reg. Returns the process exit code: 0 after a
 * clean stop, 1 when the workers or the update endpoint could not start
 * (the reason is logged). */
int daemon_serve(const reg_config_t *config, reg_t *reg,
                 reg_updates_t *updates);

/* ---- reload (reload.c), on the control loop ------------------------------ */

typedef struct reloader reloader_t;

/* Starts watching running->path and its registry files and directories
 * (unless reload.watch is off): a change reloads after reload.delay of
 * quiet. running is the configuration the workers were started with; it
 * must outlive the reloader. */
reloader_t *reloader_start(uv_loop_t *loop, const reg_config_t *running,
                           reg_t *reg, dns_notifier_t *notifier,
                           reg_updates_t *updates);

/* After a successful reload, the update endpoint loads its certificate
 * again. */
void reloader_set_update_server(reloader_t *r, reg_update_server_t *server);

/* Hands a listener plan to every worker; takes its own references. */
typedef void (*reloader_send_plan_cb)(px_listen_plan_t *plan, void *arg);

/* A reload that changes the listeners prepares a plan for n_workers
 * workers (px_listen_plan_new) and passes it to send, after the new
 * registry is in force, so a new listener routes by the new devices. */
void reloader_set_workers(reloader_t *r, unsigned n_workers,
                          reloader_send_plan_cb send, void *arg);

/* Reads the configuration and registry files again, on a thread of its
 * own at a lower priority (nice 10), while the control loop goes on
 * serving; returns 0 once the read has started (or is queued behind one
 * in progress: the files are then read once more after it), or why it
 * could not start. Back on the control loop, when the files load
 * cleanly: lays device updates over the new devices (reg_updates_merge,
 * so updates taken during the read are kept), swaps them into reg at once
 * (a lookup sees the old registry or the new one), changes the workers'
 * listeners (all of them, or, when a new address cannot be opened, none:
 * logged, the listeners in force stay while the rest applies), logs
 * "needs a restart: KEY" for each setting the running workers cannot
 * change, and re-arms the watches. Otherwise logs every FILE:LINE:COLUMN
 * problem and keeps the registry in force. cause goes into the log
 * lines. */
int reloader_reload(reloader_t *r, const char *cause);

/* The configuration last loaded (running until a reload succeeds): its
 * accounts are the ones in force. Valid until the next reload. */
const reg_config_t *reloader_config(const reloader_t *r);

/* Stops watching, after waiting for a read in progress (its result is
 * dropped); the reloader frees itself once libuv has closed its handles
 * (run the loop afterwards). */
void reloader_stop(reloader_t *r);

#endif
