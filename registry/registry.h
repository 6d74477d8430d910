/* SPDX-License-Identifier: MIT */
/* registry.h -- configuration, the name -> device table, and how to read it */
#ifndef DDPORT_REGISTRY_H
#define DDPORT_REGISTRY_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

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
  char *name;        /* normalised */
  char *owner;       /* account name or NULL */
  core_ip_t *addrs;  /* literal addresses, in the order given */
  char *target_host; /* a hostname target instead of addrs, or NULL */
  reg_port_t *ports;
  /* Small counts and flags last, packed: a table holds millions of these
   * (48 bytes each, not 72). */
  uint16_t n_addrs;       /* at most REG_MAX_ADDRESSES */
  uint16_t n_ports;       /* one a listener name */
  uint8_t proxy_protocol; /* a reg_proxy_protocol_t */
  bool enabled;
  bool wildcard;
} reg_device_t;

_Static_assert(sizeof(reg_device_t) <= 48, "a device stays small");

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

/* proxy.splice: how a relay moves bytes once the connection is routed. */
typedef enum reg_splice {
  REG_SPLICE_AUTO, /* splice(2) where it measures faster than copying */
  REG_SPLICE_ON,   /* splice(2) through pipes (Linux only) */
  REG_SPLICE_OFF,  /* read into a small buffer and write it out */
} reg_splice_t;

/* cpu_scheduling: the scheduling policy of the worker threads. */
typedef enum reg_sched {
  REG_SCHED_NORMAL, /* SCHED_OTHER, as every other thread */
  REG_SCHED_BATCH,  /* SCHED_BATCH: a wakeup does not preempt */
} reg_sched_t;

typedef struct reg_config {
  char *path;
  unsigned workers;  /* 0: one per CPU */
  bool cpu_affinity; /* worker i on CPU i, sockets steered by CPU */
  reg_sched_t cpu_scheduling;
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
    reg_splice_t splice;
  } proxy;

  struct {
    struct sockaddr_storage *listen;
    size_t n_listen;
    reg_zone_t *zones;
    size_t n_zones;
    reg_tsig_key_t *tsig_keys;
    size_t n_tsig_keys;
    uint64_t tcp_idle_ms;     /* a DNS TCP connection without a query */
    uint64_t serial_batch_ms; /* the serial rises at most this often */
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

  /* The dyndns2 endpoint devices call (update:). No listen address at
   * all: no endpoint. */
  struct {
    struct sockaddr_storage *listen; /* plain HTTP */
    size_t n_listen;
    struct sockaddr_storage *tls_listen; /* HTTPS, with tls_cert/tls_key */
    size_t n_tls_listen;
    char *tls_cert, *tls_key;     /* PEM files, resolved; NULL: no HTTPS */
    uint64_t request_timeout_ms;  /* a whole request must arrive within */
    uint64_t idle_timeout_ms;     /* keep-alive between requests */
    uint64_t credential_cache_ms; /* a verified secret is trusted for; 0 */
    uint32_t max_connections;     /* open update connections */
    uint32_t updates_per_minute;  /* per device name; 0: unlimited */
    uint32_t max_request;         /* bytes of one request, head and body */
  } update;

  reg_device_t *devices; /* from the file and every registry file */
  size_t n_devices;
  /* What the devices point to (names, addresses, ports, owners): millions
   * of small blocks that go together, in reg_config_free_devices. */
  core_arena_t device_mem;

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

/* Frees config's devices and empties the list: once a registry holds
 * copies, a reloaded config need not keep them too. */
void reg_config_free_devices(reg_config_t *config);

/* The most settings reg_config_restart_keys reports. */
#define REG_RESTART_KEYS_MAX 24

/* Compares a configuration read on reload with the one the workers run
 * with, and stores in keys (up to max) the names of the settings that
 * differ and that running workers cannot change: "workers", "cpu_affinity",
 * "cpu_scheduling", "state_dir", "proxy.timeouts", "proxy.limits",
 * "proxy.max_hello", "proxy.allow_targets", "proxy.access_log",
 * "proxy.splice", "dns.listen", "dns.zones", "dns.serial_batch",
 * "update.listen". Update timeouts, limits and the certificate apply at
 * once, and so do listeners (the daemon opens and closes them). Devices,
 * accounts, registry files and reload settings apply at once and are never
 * named. Returns the number stored. Pure. */
size_t reg_config_restart_keys(const reg_config_t *running,
                               const reg_config_t *next, const char **keys,
                               size_t max);

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

/* The registry is read by every worker without waiting and written by one
 * thread, the control loop (liburcu's QSBR flavour and its lock-free hash
 * table). Every thread that calls reg_lookup registers once, then passes a
 * quiescent point between units of work and goes offline while it blocks:
 *
 *   reg_thread_register();
 *   for (;;) { reg_quiescent(); reg_thread_offline(); wait();
 *              reg_thread_online(); work(); }
 *   reg_thread_unregister();
 *
 * What the writer replaces or removes is freed once every registered,
 * online thread has passed a quiescent point; an offline thread holds
 * nothing up. reg_lookup, reg_find and reg_count bring an offline thread
 * back online themselves, so an event loop may go offline right before
 * it polls without knowing which of the callbacks it runs next will read
 * the registry. A thread that calls reg_new or another writer's call without
 * registering first (a test's main, a one-shot command) is registered by
 * that call and stays online; reg_free lets it wait for the grace periods
 * it holds up. */

/* Registers the calling thread as a reader, online. Idempotent; brings an
 * offline registered thread back online. */
void reg_thread_register(void);

/* Unregisters the calling thread; call before it exits. */
void reg_thread_unregister(void);

/* The calling thread holds no pointer from reg_lookup any more: those
 * pointers may be freed from now on. Costs a load when nothing changed. */
void reg_quiescent(void);

/* Before and after blocking (epoll_wait, a join): while offline the
 * thread may not use pointers from reg_lookup, and never delays a writer.
 * A lookup made while offline brings the thread back online. */
void reg_thread_offline(void);
void reg_thread_online(void);

typedef struct reg reg_t;

/* Builds the registry over copies of config's devices; config may be freed
 * afterwards. */
reg_t *reg_new(const reg_config_t *config);

/* Frees the registry once no thread will read it again (workers joined).
 * Waits for entries retired earlier to be freed. */
void reg_free(reg_t *reg);

/* For a process about to exit: waits for what reg_free would wait for,
 * then leaves reg to the kernel, which takes the memory of a table of
 * millions of devices back at once. */
void reg_leave(reg_t *reg);

/* Looks up a normalised name: an exact device wins (a disabled one hides
 * the name: NULL, no wildcard fallback); otherwise the nearest wildcard
 * above it ("*.b.c" for "a.b.c", then "*.c"), which likewise hides what
 * lies further up when disabled. Returns NULL when none. One call sees one
 * registry: the one before a swap or the one after, never a mix.
 *
 * The pointer is borrowed: valid until the calling thread's next
 * reg_quiescent or reg_thread_offline (for a worker: until its current
 * loop iteration ends). Copy what must live longer, as a connection does
 * with its route. A registered thread that is offline comes back online
 * for it. Never blocks and takes no lock. */
const reg_device_t *reg_lookup(const reg_t *reg, const char *name, size_t len);

/* reg_lookup of n names at once: out[i] is what reg_lookup(reg, names[i],
 * lens[i]) gives, all from the same registry. At millions of devices a
 * lookup mostly waits for memory; here the waits of a batch overlap, which
 * makes it several times faster than n calls. */
void reg_lookup_many(const reg_t *reg, size_t n, const char *const names[],
                     const size_t lens[], const reg_device_t *out[]);

/* The device called exactly name (normalised), disabled or not, without
 * wildcard matching: what the update server and admins act on. Borrowed
 * like reg_lookup's pointer. */
const reg_device_t *reg_find(const reg_t *reg, const char *name, size_t len);

/* Number of devices in the table, disabled ones included. */
size_t reg_count(const reg_t *reg);

/* A counter that rises with every change (replace, update, remove).
 * Readable from any thread. */
uint64_t reg_version(const reg_t *reg);

/* ---- published batches: one version of the table over time -------------- */

/* Lookups see every change at once. Readers that need one version of the
 * whole table, and a number for it (a zone transfer and its SOA serial),
 * read the published state instead: state 0 is what reg_new built, and
 * each reg_publish closes the changes made since into a batch and
 * publishes the state after it. What the last REG_HISTORY_BATCHES batches
 * did is kept, as long as they changed at most REG_HISTORY_CHANGES names in
 * all; a batch changing more is not kept, and the history starts after
 * it. A change is a name becoming visible (added, or enabled) or hidden
 * (removed, or disabled); a batch may have none (an address changed). */
#define REG_HISTORY_BATCHES 1000
#define REG_HISTORY_CHANGES 100000

/* The number of the published state: 0 until the first reg_publish. Any
 * thread. */
uint64_t reg_published(const reg_t *reg);

typedef int reg_name_visit_fn(const char *name, void *arg);

/* Calls visit with the name of every device visible (present and enabled)
 * in the published state, in no particular order, until visit returns
 * non-zero, and stores the state's number in *number. Changes the writer
 * makes meanwhile never show. Returns visit's value, 0, or -EAGAIN when
 * states were published faster than the table could be walked. The names
 * are borrowed like reg_lookup's result; for a registered reader. */
int reg_foreach_published(const reg_t *reg, uint64_t *number,
                          reg_name_visit_fn *visit, void *arg);

/* One name that became visible or hidden in a batch. */
typedef struct reg_change {
  const char *name;
  bool visible; /* after the batch */
} reg_change_t;

/* Calls visit(number, changes, n, arg) for each batch leading from state
 * from to the published state, oldest first, and stores the published
 * state's number in *to; a batch leads to state number, and lists each
 * name once, sorted. Returns 0, visit's non-zero value, or -ENOENT when
 * the history does not reach back to from or from lies ahead. Borrowed
 * like reg_lookup's result; for a registered reader. */
typedef int reg_batch_visit_fn(uint64_t number, const reg_change_t *changes,
                               size_t n, void *arg);
int reg_batches_since(const reg_t *reg, uint64_t from, uint64_t *to,
                      reg_batch_visit_fn *visit, void *arg);

/* ---- writing: the control loop only ------------------------------------- */

/* A full reload: builds a new table from config's devices (copied) away
 * from the workers' path and swaps it in with one pointer store; the old
 * table is freed after a grace period. Returns 0. */
int reg_replace_all(reg_t *reg, const reg_config_t *config);

/* Adds device, or replaces the device of the same name, in O(1) whatever
 * the table's size; device (its name normalised) is copied. Lookups see the
 * old entry or the new one, never a mix. Returns 0 or -EINVAL (bad name). */
int reg_update_device(reg_t *reg, const reg_device_t *device);

/* Removes the device called name (normalised). Returns 0 or -ENOENT. */
int reg_remove_device(reg_t *reg, const char *name);

/* Publishes the next batch when the table changed since the last one
 * (whether or not a name's visibility did). Returns true when it did. */
bool reg_publish(reg_t *reg);

/* Calls visit for every device in the table (disabled ones too), in no
 * particular order, until visit returns non-zero; returns that value or 0.
 * On the control loop the walk sees one consistent table; from another
 * thread it may miss or repeat devices changed meanwhile. visit must not
 * change the registry. For dumps; AXFR reads the published state. */
typedef int reg_visit_fn(const reg_device_t *device, void *arg);
int reg_foreach(const reg_t *reg, reg_visit_fn *visit, void *arg);

/* ---- device updates: state, journal, the dyndns2 server ----------------- */

/* The dynamic state devices report over dyndns2, kept durable in a journal
 * in state_dir and laid over the YAML definitions (docs/updates.md). All
 * calls on the control loop. */
typedef struct reg_updates reg_updates_t;

/* Opens the journal in config->state_dir and replays it, when the update
 * endpoint is configured or a journal from an earlier run is there.
 * Returns 0 and *out (NULL when neither), or a negative errno after
 * logging why (state_dir unusable, locked by another process, not a
 * ddport journal). */
int reg_updates_open(const reg_config_t *config, reg_updates_t **out);

/* Lays the updates in force over config's devices, in place: a device
 * updated since its YAML definition last changed gets the update's
 * addresses, ports and online state. An update over a definition the
 * admin has changed since, or of a device no longer in the registry, is
 * dropped: the YAML wins until the device updates again. Call before
 * reg_new and reg_replace_all. Returns the number dropped. u may be NULL. */
size_t reg_updates_merge(reg_updates_t *u, reg_config_t *config);

/* Called on the control loop after an update is applied to the registry. */
typedef void reg_update_applied_fn(const char *name, void *arg);

/* Starts the journal's writer thread on loop; updates are applied to reg.
 * Returns 0 or a negative errno (logged). */
int reg_updates_start(reg_updates_t *u, uv_loop_t *loop, reg_t *reg,
                      reg_update_applied_fn *applied, void *arg);

/* Writes what is queued, runs every pending callback and stops the
 * writer; run the loop afterwards to close its handle. u may be NULL. */
void reg_updates_stop(reg_updates_t *u);

/* Closes the journal and frees the state (after reg_updates_stop and the
 * loop has run). u may be NULL. */
void reg_updates_free(reg_updates_t *u);

typedef struct reg_update_server reg_update_server_t;

/* The configuration in force (accounts change on reload). */
typedef const reg_config_t *reg_config_fn(void *arg);

/* Opens the dyndns2 endpoint on running->update.listen (HTTP) and
 * update.tls.listen (HTTPS) on loop, answering from reg and journaling
 * through u. Accounts and update settings are read through current at
 * each request; the target policy is running's, as the proxy's. Returns 0
 * and *out, or a negative errno (logged: address in use, certificate
 * unreadable). */
int reg_update_server_start(uv_loop_t *loop, const reg_config_t *running,
                            reg_config_fn *current, void *current_arg,
                            reg_updates_t *u, reg_t *reg,
                            reg_update_server_t **out);

/* Whether the update endpoint's certificate and key (update.tls) load and
 * match: 0 (also without update.tls), or a negative errno and why in err
 * (for `ddport check`, which reads every file serve would). */
int reg_update_tls_check(const reg_config_t *cfg, char *err, size_t size);

/* Loads the certificate and key of next again (SIGHUP). Keeps the old
 * ones and returns a negative errno (logged) when they do not load. */
int reg_update_server_reload(reg_update_server_t *s, const reg_config_t *next);

/* Stops accepting and closes idle connections; requests waiting for the
 * journal are answered when it calls back (reg_updates_stop). Frees
 * itself once every handle is closed (run the loop afterwards). */
void reg_update_server_stop(reg_update_server_t *s);

#endif
