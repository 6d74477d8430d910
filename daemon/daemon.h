/* SPDX-License-Identifier: MIT */
/* daemon.h -- worker threads and the control loop of `ddport serve` */
#ifndef DDPORT_DAEMON_H
#define DDPORT_DAEMON_H

#include "registry/registry.h"

/* Starts config->workers worker threads (0: one per CPU), each with its own
 * loop, proxy listeners and DNS sockets, then runs the control loop on the
 * calling thread until SIGTERM or SIGINT, drains and stops the workers.
 * Returns the process exit code: 0 after a clean stop, 1 when the workers
 * could not start (the reason is logged). */
int daemon_serve(const reg_config_t *config, const reg_t *reg);

#endif
