/* SPDX-License-Identifier: MIT */
/* registry.h -- configuration, the name -> device table, and how to read it */
#ifndef DDPORT_REGISTRY_H
#define DDPORT_REGISTRY_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* ---- configuration ---------------------------------------------------- */

typedef enum reg_protocol {
  REG_PROTOCOL_HTTP,
  REG_PROTOCOL_TLS,
} reg_protocol_t;

typedef struct reg_listener {
  char *name;
  reg_protocol_t protocol;
  struct sockaddr_storage addr;
  char *fallback; /* device for visitors naming no device, or NULL */
} reg_listener_t;

typedef struct reg_glue {
  char *name; /* normalised, inside the zone */
  core_ip_t *addrs;
  size_t n_addrs;
} reg_glue_t;

typedef enum reg_tsig_algorithm {
  REG_TSIG_HMAC_SHA256,
  REG_TSIG_HMAC_SHA512,
} reg_tsig_algorithm_t;

/* A TSIG key (RFC 8945) shared with secondaries. */
typedef struct reg_tsig_key {
  char *name; /* normalised, no trailing dot */
  reg_tsig_algorithm_t algorithm;
  uint8_t *secret; /* decoded from base64 */
  size_t secret_len;
} reg_tsig_key_t;

/* A secondary to send NOTIFY to, optionally signed with a TSIG key. */
typedef struct reg_notify {
  struct sockaddr_storage addr;
  char *key; /* a dns.tsig_keys name, or NULL */
} reg_notify_t;

typedef struct reg_zone {
  char *name;       /* normalised, no trailing dot */
  core_ip_t *proxy; /* what A/AAAA answers for device names carry */
  size_t n_proxy;
  uint32_t ttl;
  char **nameservers; /* normalised */
  size_t n_nameservers;
  reg_glue_t *glue;
  size_t n_glue;
  char *soa_email; /* as written: hostmaster@zone */
  uint32_t soa_refresh, soa_retry, soa_expire, soa_minimum; /* seconds */
  uint32_t serial;
  reg_notify_t *notify;
  size_t n_notify;
  /* allow_transfer: a client in one of these prefixes, or one whose request
   * is signed with one of these keys, may transfer the zone. */
  core_prefix_t *transfer_prefixes;
  size_t n_transfer_prefixes;
  char **transfer_keys; /* dns.tsig_keys names */
  size_t n_transfer_keys;
} reg_zone_t;

typedef enum reg_proxy_protocol {
  REG_PROXY_PROTOCOL_OFF,
  REG_PROXY_PROTOCOL_V1,
  REG_PROXY_PROTOCOL_V2,
} reg_proxy_protocol_t;

typedef struct reg_port {
  char *listener; /* a listener name */
  uint16_t port;
} reg_port_t;

/* Most addresses one device may list. */
#define REG_MAX_ADDRESSES 8

/* One device: a name and where its services are. A wildcard device's name
 * starts with "*." and matches every name below the rest. */
typedef struct reg_device {
  char *name;       /* normalised */
  char *owner;      /* account name or NULL */
  core_ip_t *addrs; /* literal addresses, in the order given */
  size_t n_addrs;
  char *target_host; /* a hostname target instead of addrs, or NULL */
  reg_port_t *ports;
  size_t n_ports;
  reg_proxy_protocol_t proxy_protocol;
  bool enabled;
  bool wildcard;
} reg_device_t;

/* An account that owns devices; secret is a crypt(3) hash. */
typedef struct reg_account {
  char *name;
  char *secret;
} reg_account_t;

/* One entry of 'registry:', resolved against the configuration file's
 * directory: a file, or a directory whose *.yaml files were read. */
typedef struct reg_source {
  char *path;
  bool directory;
} reg_source_t;

typedef struct reg_config {
  char *path;
  unsigned workers; /* 0: one per CPU */
  char *state_dir;

  reg_listener_t *listeners;
  size_t n_listeners;

  struct {
    uint64_t peek_timeout_ms, connect_timeout_ms, idle_timeout_ms,
        drain_timeout_ms;
    uint32_t max_connections, max_per_source, max_peeking;
    uint32_t max_hello; /* bytes */
    core_prefix_t *allow_targets;
    size_t n_allow_targets;
    char *access_log; /* "stderr", "off" or a path */
    char *resolvers;  /* "ip:port,..." for c-ares, or NULL: the system's */
  } proxy;

  struct {
    struct sockaddr_storage *listen;
    size_t n_listen;
    reg_zone_t *zones;
    size_t n_zones;
    reg_tsig_key_t *tsig_keys;
    size_t n_tsig_keys;
    uint64_t tcp_idle_ms;     /* a DNS TCP connection without a query */
    uint32_t tcp_connections; /* open DNS TCP connections, all workers */
    /* rate_limit: UDP responses per second per /24 or /56; 0: off. Every
     * rrl_slip-th response over the limit goes out truncated (0: none). */
    uint32_t rrl_responses_per_second;
    uint32_t rrl_slip;
    /* CHAOS TXT answers for version.bind/version.server and
     * id.server/hostname.bind; NULL: refused. */
    char *version;
    char *identity;
  } dns;

  reg_device_t *devices; /* from the file and every registry file */
  size_t n_devices;

  reg_account_t *accounts; /* likewise */
  size_t n_accounts;

  reg_source_t *registry;
  size_t n_registry;
  size_t n_registry_files; /* files read through registry */

  struct {
    bool watch;        /* reload when a file read changes */
    uint64_t delay_ms; /* after the last change seen */
  } reload;

  /* Keys that parse but whose feature is not built yet; serve warns. */
  char **not_implemented;
  size_t n_not_implemented;
} reg_config_t;

/* Loads and validates a configuration file. Every problem found is written
 * to diag as "FILE:LINE:COLUMN: message" lines. Returns 0 and a config the
 * caller frees with reg_config_free, or -EINVAL (problems reported) or a
 * negative errno (file unreadable, also reported). */
int reg_config_load(const char *path, FILE *diag, reg_config_t **out);

/* Same, from bytes in memory; name is used in messages, and registry files
 * it names are read relative to name's directory. */
int reg_config_load_buffer(const char *name, const char *data, size_t len,
                           FILE *diag, reg_config_t **out);

void reg_config_free(reg_config_t *config);

/* True when s is a crypt(3) hash in a scheme fit for secrets (yescrypt $y$,
 * gost-yescrypt $gy$, scrypt $7$, bcrypt $2b$/$2y$/$2a$, sha512crypt $6$),
 * complete with its hash part. Otherwise false with *why set to a static
 * phrase ("not a crypt(3) hash (plaintext?)", ...). Pure. */
bool reg_secret_is_hash(const char *s, const char **why);

/* Hashes secret with yescrypt and a fresh random salt into out (size
 * bytes; 128 is enough). Returns 0, or a negative errno. */
int reg_secret_hash(const char *secret, char *out, size_t size);

/* True when secret matches hash (compared in constant time). */
bool reg_secret_verify(const char *hash, const char *secret);

/* Port of device for the listener called listener_name, or 0 if the device
 * has none there. */
uint16_t reg_device_port(const reg_device_t *device, const char *listener_name);

/* The target policy: may the proxy connect to ip:port for a device?
 * Addresses outside every allow_targets prefix are refused when the list
 * is not empty. Loopback, link-local, multicast, unspecified, reserved and
 * private (RFC 1918, RFC 6598, fc00::/7) addresses, and the proxy's own
 * listener addresses, are refused unless an allow_targets prefix lying
 * inside that range names them (127.0.0.0/8 allows loopback; 0.0.0.0/0
 * does not). Returns true, or false with *why set to a static phrase. */
bool reg_target_allowed(const reg_config_t *config, const core_ip_t *ip,
                        uint16_t port, const char **why);

/* ---- the table that workers read --------------------------------------- */

typedef struct reg reg_t;

/* Builds the lookup table over config's devices. The registry borrows the
 * devices from config: config must outlive it. */
reg_t *reg_new(const reg_config_t *config);
void reg_free(reg_t *reg);

/* Looks up a normalised name: an exact, enabled device wins; otherwise the
 * nearest enabled wildcard above it ("*.b.c" for "a.b.c", then "*.c"...).
 * Returns NULL when none. The pointer is borrowed: valid until the calling
 * worker's next quiescent point (today: for the registry's lifetime). Never
 * blocks and takes no lock. */
const reg_device_t *reg_lookup(const reg_t *reg, const char *name, size_t len);

/* Number of devices in the table. */
size_t reg_count(const reg_t *reg);

#endif
