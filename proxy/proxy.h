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

/* Stops accepting and closes every connection; the server frees itself once
 * libuv has closed the handles (run the loop afterwards). */
void px_server_stop(px_server_t *server);

#endif
