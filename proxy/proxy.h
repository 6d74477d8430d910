/* SPDX-License-Identifier: MIT */
/* proxy.h -- listeners that peek at Host/SNI and relay to devices */
#ifndef DDPORT_PROXY_H
#define DDPORT_PROXY_H

#include "registry/registry.h"

#include <uv.h>

typedef struct px_server px_server_t;
typedef struct px_limits px_limits_t;

/* The connection limits of config (proxy.limits), one set for the whole
 * process: every worker's server shares it. Freed with px_limits_free
 * after every server is gone. */
px_limits_t *px_limits_new(const reg_config_t *config);
void px_limits_free(px_limits_t *limits);

/* Opens one SO_REUSEPORT socket per configured listener on loop and starts
 * accepting. config, reg and limits are borrowed and must outlive the
 * server. Returns 0 and *out, or a negative errno / UV_E* (logged). */
int px_server_start(uv_loop_t *loop, const reg_config_t *config,
                    const reg_t *reg, px_limits_t *limits, px_server_t **out);

/* ---- changing the listeners on reload ------------------------------------
 * The control loop prepares a plan, every worker applies it on its own
 * loop. Every socket a plan needs is opened while preparing it, so a
 * change either applies on every worker or on none. */
typedef struct px_listen_plan px_listen_plan_t;

/* Compares the listeners in force (from, n_from) with next's. The same
 * (name, protocol, address and fallback of each, in order): returns 0 and
 * *out NULL. Otherwise copies next's listeners into a plan and, for each at
 * an address none of from has, opens n_workers SO_REUSEPORT sockets, bound
 * and listening; returns 0 and *out, holding one reference for the caller.
 * When a socket cannot be opened, the listener and address are logged,
 * nothing is left open and the negative errno is returned. */
int px_listen_plan_new(const reg_listener_t *from, size_t n_from,
                       const reg_config_t *next, unsigned n_workers,
                       px_listen_plan_t **out);

/* The plan's listeners (its own copy, valid while a reference is held);
 * *added, *removed and *changed count them against the set it replaces.
 * Any of the counts may be NULL. */
const reg_listener_t *px_listen_plan_listeners(const px_listen_plan_t *plan,
                                               size_t *n, size_t *added,
                                               size_t *removed,
                                               size_t *changed);

/* References may be taken and dropped on any thread; the last one closes
 * the sockets no worker took and frees the plan. NULL is ignored. */
void px_listen_plan_hold(px_listen_plan_t *plan);
void px_listen_plan_release(px_listen_plan_t *plan);

/* On server's loop, takes over one reference to plan and makes its
 * listeners the server's: a listener at a new address starts accepting on
 * this worker's socket of the plan (worker: the worker's index, below the
 * plan's n_workers); one whose address stays keeps its socket, and when
 * its name, protocol or fallback changed, a new listener takes the socket
 * over through a duplicate descriptor, so no queued connection is lost;
 * the others stop accepting. Connections accepted before carry on with the
 * listener they came through. A stopping server just drops the plan. */
void px_server_apply(px_server_t *server, px_listen_plan_t *plan,
                     unsigned worker);

/* Stops accepting and closes every connection; the server frees itself once
 * libuv has closed the handles (run the loop afterwards). */
void px_server_stop(px_server_t *server);

#endif
