/* SPDX-License-Identifier: MIT */
/* workers.c -- worker threads, signals and the control loop */
#include "daemon/daemon.h"
#include "dns/dns.h"
#include "proxy/proxy.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct worker {
  uv_thread_t thread;
  uv_loop_t loop;
  uv_async_t stop;  /* the control loop asks the worker to stop */
  uv_async_t apply; /* ... or to apply the listener plans in its inbox */
  uv_mutex_t inbox_lock;
  px_listen_plan_t **inbox; /* in the order the reloads made them */
  size_t n_inbox;
  uv_sem_t started;
  int start_rc;
  unsigned id;
  const reg_config_t *config;
  const reg_t *reg;
  px_limits_t *limits;
  px_server_t *proxy;
  dns_server_t *dns;
} worker_t;

typedef struct control {
  uv_signal_t signals[4];
  reloader_t *reloader;
  worker_t *workers;
  unsigned n_workers;
  bool stopping;
  dns_notifier_t *notifier;
  const reg_config_t *config;
  reg_updates_t *updates;
  reg_update_server_t *update_server;
} control_t;

static void stop_worker_servers(worker_t *w) {
  if (w->proxy)
    px_server_stop(w->proxy);
  if (w->dns)
    dns_server_stop(w->dns);
  w->proxy = NULL;
  w->dns = NULL;
  uv_close((uv_handle_t *)&w->stop, NULL);
  uv_close((uv_handle_t *)&w->apply, NULL);
}

static void on_stop_request(uv_async_t *async) {
  stop_worker_servers(async->data);
}

/* Takes the plans waiting for w; the caller owns their references. */
static px_listen_plan_t **take_inbox(worker_t *w, size_t *n) {
  uv_mutex_lock(&w->inbox_lock);
  px_listen_plan_t **plans = w->inbox;
  *n = w->n_inbox;
  w->inbox = NULL;
  w->n_inbox = 0;
  uv_mutex_unlock(&w->inbox_lock);
  return plans;
}

/* Applies the plans waiting for w, or drops them once its proxy is gone. */
static void apply_inbox(worker_t *w) {
  size_t n;
  px_listen_plan_t **plans = take_inbox(w, &n);
  for (size_t i = 0; i < n; i++) {
    if (w->proxy != NULL)
      px_server_apply(w->proxy, plans[i], w->id);
    else
      px_listen_plan_release(plans[i]);
  }
  free(plans);
}

static void on_apply_request(uv_async_t *async) {
  apply_inbox(async->data);
}

/* On the control loop: every worker applies plan, in the order of the
 * reloads (uv_async_send coalesces wake-ups, so plans queue). */
static void send_listen_plan(px_listen_plan_t *plan, void *arg) {
  control_t *ctl = arg;
  for (unsigned i = 0; i < ctl->n_workers; i++) {
    worker_t *w = &ctl->workers[i];
    px_listen_plan_hold(plan);
    uv_mutex_lock(&w->inbox_lock);
    w->inbox = xrealloc(w->inbox, (w->n_inbox + 1) * sizeof *w->inbox);
    w->inbox[w->n_inbox++] = plan;
    uv_mutex_unlock(&w->inbox_lock);
    uv_async_send(&w->apply);
  }
}

/* libuv calls prepare callbacks right before it polls for I/O. The I/O
 * callbacks run inside that same poll call, with nothing in between, so
 * the thread stays offline only until the first of them reads the
 * registry: reg_lookup brings it back online. */
static void go_offline_before_poll(uv_prepare_t *prepare) {
  (void)prepare;
  reg_thread_offline();
}

static void on_before_poll_closed(uv_handle_t *handle) {
  *(bool *)handle->data = true;
}

/* Runs loop until it has nothing left to do, with uv_run(UV_RUN_DEFAULT),
 * as a registry reader: offline from right before every poll for I/O,
 * which is a quiescent point each iteration (no callback holds a
 * reg_lookup pointer between iterations) and means a worker that waits
 * for traffic never holds up the freeing of retired registry entries.
 * libuv's epoll_wait is the only one per iteration. Returns online. */
static void run_loop(uv_loop_t *loop) {
  uv_prepare_t before_poll;
  bool closed = false;
  uv_prepare_init(loop, &before_poll);
  before_poll.data = &closed;
  uv_prepare_start(&before_poll, go_offline_before_poll);
  /* The loop ends when the servers' handles are gone, not this one. */
  uv_unref((uv_handle_t *)&before_poll);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&before_poll, on_before_poll_closed);
  while (!closed)
    uv_run(loop, UV_RUN_NOWAIT);
  /* The last iteration may have left the thread offline. */
  reg_thread_online();
}

/* Names the calling worker thread, and puts it on its CPU and under its
 * scheduling policy (cpu_affinity, cpu_scheduling). Failures are logged:
 * the worker then runs where and how any thread does. */
static void place_worker(const worker_t *w) {
  /* "ddport-w0" ...: top -H and /proc/PID/task/TID/comm tell them apart. */
  char name[16];
  snprintf(name, sizeof name, "ddport-w%u", w->id);
  pthread_setname_np(pthread_self(), name);
  int pin_rc = core_affinity_pin(w->id);
  if (pin_rc != 0)
    core_log(CORE_LOG_WARN, "worker %u: cannot run on CPU %d only: %s", w->id,
             core_affinity_cpu(w->id), strerror(-pin_rc));
  if (w->config->cpu_scheduling == REG_SCHED_BATCH) {
    int sched_rc = core_sched_batch();
    if (sched_rc != 0)
      core_log(CORE_LOG_WARN,
               "worker %u: cannot use cpu_scheduling: batch (%s); it runs "
               "under the normal policy",
               w->id, strerror(-sched_rc));
  }
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  /* Before any socket: its memory and its packets belong on this CPU. */
  place_worker(w);
  reg_thread_register();
  uv_loop_init(&w->loop);
  uv_async_init(&w->loop, &w->stop, on_stop_request);
  w->stop.data = w;
  uv_async_init(&w->loop, &w->apply, on_apply_request);
  w->apply.data = w;
  int rc = px_server_start(&w->loop, w->config, w->reg, w->limits, &w->proxy);
  if (rc == 0 && w->config->dns.n_listen > 0)
    rc = dns_server_start(&w->loop, w->config, w->reg, &w->dns);
  w->start_rc = rc;
  if (rc != 0)
    stop_worker_servers(w);
  uv_sem_post(&w->started);
  run_loop(&w->loop);
  /* Plans sent while the worker was stopping. */
  apply_inbox(w);
  if (uv_loop_close(&w->loop) != 0)
    core_log(CORE_LOG_WARN, "worker %u: handles still open at exit", w->id);
  reg_thread_unregister();
}

static void stop_workers(control_t *ctl) {
  if (ctl->stopping)
    return;
  ctl->stopping = true;
  /* Updates first: a request waiting for the journal is answered while
   * the notifier can still tell the secondaries. */
  reg_update_server_stop(ctl->update_server);
  ctl->update_server = NULL;
  reg_updates_stop(ctl->updates);
  dns_notifier_stop(ctl->notifier);
  ctl->notifier = NULL;
  /* A worker that failed to start has closed its async handle already. */
  for (unsigned i = 0; i < ctl->n_workers; i++)
    if (ctl->workers[i].start_rc == 0)
      uv_async_send(&ctl->workers[i].stop);
  for (size_t i = 0; i < sizeof ctl->signals / sizeof ctl->signals[0]; i++)
    uv_close((uv_handle_t *)&ctl->signals[i], NULL);
  reloader_stop(ctl->reloader);
}

static void on_signal(uv_signal_t *handle, int signum) {
  control_t *ctl = handle->data;
  switch (signum) {
  case SIGTERM:
  case SIGINT:
    core_log(CORE_LOG_INFO, "%s: draining connections and stopping",
             signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop_workers(ctl);
    break;
  case SIGHUP:
    if (ctl->reloader != NULL)
      reloader_reload(ctl->reloader, "SIGHUP");
    break;
  case SIGUSR1: {
    int rc = core_access_log_reopen();
    if (rc < 0)
      core_log(CORE_LOG_ERROR, "SIGUSR1: cannot reopen the access log: %s",
               strerror(-rc));
    else
      core_log(CORE_LOG_INFO, "SIGUSR1: access log reopened");
    break;
  }
  }
}

/* An update changed a device: the zone holding it has a new serial. */
static void on_update_applied(const char *name, void *arg) {
  control_t *ctl = arg;
  size_t len = strlen(name);
  for (size_t i = 0; i < ctl->config->dns.n_zones; i++) {
    const char *zone = ctl->config->dns.zones[i].name;
    if (core_name_in_zone(name, len, zone, strlen(zone)))
      dns_notify_zone(ctl->notifier, i);
  }
}

static const reg_config_t *current_config(void *arg) {
  control_t *ctl = arg;
  return ctl->reloader ? reloader_config(ctl->reloader) : ctl->config;
}

/* The journal's writer and the dyndns2 endpoint, on the control loop. */
static int start_updates(control_t *ctl, uv_loop_t *loop, reg_t *reg) {
  if (ctl->updates == NULL)
    return 0;
  int rc = reg_updates_start(ctl->updates, loop, reg, on_update_applied, ctl);
  if (rc != 0 ||
      ctl->config->update.n_listen + ctl->config->update.n_tls_listen == 0)
    return rc;
  rc = reg_update_server_start(loop, ctl->config, current_config, ctl,
                               ctl->updates, reg, &ctl->update_server);
  if (rc == 0)
    reloader_set_update_server(ctl->reloader, ctl->update_server);
  return rc;
}

/* Whether type's socket at addr can be ours alone; logs what holds it
 * back, in the words the bind that would follow uses. */
static bool address_free(const char *what, const char *name,
                         const struct sockaddr_storage *addr, int type) {
  int rc = core_addr_in_use(addr, type);
  if (rc == 0)
    return true;
  char where[64];
  core_sockaddr_format((const struct sockaddr *)addr, where, sizeof where);
  core_log(CORE_LOG_ERROR, "%s%s: cannot listen on %s%s: %s%s", what, name,
           where, type == SOCK_DGRAM ? " (udp)" : "", uv_strerror(rc),
           rc == -EADDRINUSE ? " (by another process: is ddport already "
                               "running?)"
                             : "");
  return false;
}

/* Every address this server binds is free of other processes' sockets,
 * checked before any of ours is bound: our workers share each address
 * through SO_REUSEPORT, so a bind of theirs would succeed beside another
 * ddport's sockets and quietly split the traffic with it. All are
 * checked, so the log names every one in use. */
static bool addresses_free(const reg_config_t *config) {
  bool ok = true;
  for (size_t i = 0; i < config->n_listeners; i++)
    ok &= address_free("listener ", config->listeners[i].name,
                       &config->listeners[i].addr, SOCK_STREAM);
  for (size_t i = 0; i < config->dns.n_listen; i++) {
    ok &= address_free("dns", "", &config->dns.listen[i], SOCK_DGRAM);
    ok &= address_free("dns", "", &config->dns.listen[i], SOCK_STREAM);
  }
  for (size_t i = 0; i < config->update.n_listen; i++)
    ok &= address_free("update", "", &config->update.listen[i], SOCK_STREAM);
  for (size_t i = 0; i < config->update.n_tls_listen; i++)
    ok &= address_free("update.tls", "", &config->update.tls_listen[i],
                       SOCK_STREAM);
  return ok;
}

/* cpu_affinity: on. One worker per CPU at most: a CPU's packets go to
 * one socket, so a second worker on that CPU would get none of them. */
static bool plan_affinity(unsigned n_workers) {
  unsigned n_cpus = 0;
  int rc = core_affinity_plan(n_workers, &n_cpus);
  if (rc == -ERANGE) {
    core_log(CORE_LOG_ERROR,
             "cpu_affinity: on needs a CPU for each worker: %u workers, but "
             "this process may use %u CPU%s (set workers to at most %u, or "
             "auto)",
             n_workers, n_cpus, n_cpus == 1 ? "" : "s", n_cpus);
    return false;
  }
  if (rc != 0) {
    core_log(CORE_LOG_ERROR,
             "cpu_affinity: cannot read this process's CPUs: %s",
             strerror(-rc));
    return false;
  }
  char cpus[256];
  size_t used = 0;
  for (unsigned i = 0; i < n_workers && used < sizeof cpus - 16; i++)
    used += (size_t)snprintf(cpus + used, sizeof cpus - used, "%s%d",
                             i ? "," : "", core_affinity_cpu(i));
  if (used >= sizeof cpus - 16)
    snprintf(cpus + used, sizeof cpus - used, ",...");
  core_log(CORE_LOG_INFO,
           "cpu_affinity: workers on CPUs %s (one each, in order); sockets "
           "steered by CPU",
           cpus);
  return true;
}

int daemon_serve(const reg_config_t *config, reg_t *reg,
                 reg_updates_t *updates) {
  unsigned n = config->workers ? config->workers : uv_available_parallelism();
  if (config->cpu_affinity && !plan_affinity(n))
    return 1;
  if (config->cpu_scheduling == REG_SCHED_BATCH)
    core_log(CORE_LOG_INFO,
             "cpu_scheduling: batch: a worker woken by its sockets waits for "
             "the task on its CPU to yield, then takes a batch of events");
  if (!addresses_free(config))
    return 1;
  int log_rc = core_access_log_open(config->proxy.access_log);
  if (log_rc < 0) {
    core_log(CORE_LOG_ERROR, "access_log %s: %s", config->proxy.access_log,
             strerror(-log_rc));
    return 1;
  }
  /* The control loop reads (and later writes) the registry too. */
  reg_thread_register();
  control_t ctl = {.n_workers = n, .config = config, .updates = updates};
  ctl.workers = xcalloc(n, sizeof *ctl.workers);
  px_limits_t *limits = px_limits_new(config);
  /* A visitor closing mid-write must cost an EPIPE, not the process. */
  signal(SIGPIPE, SIG_IGN);

  /* Handlers first: a SIGTERM while workers start must not take the
   * default action. It waits in libuv's signal pipe until the loop runs. */
  uv_loop_t *loop = uv_default_loop();
  static const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
  for (size_t i = 0; i < 4; i++) {
    uv_signal_init(loop, &ctl.signals[i]);
    ctl.signals[i].data = &ctl;
    uv_signal_start(&ctl.signals[i], on_signal, signums[i]);
  }

  unsigned started = 0;
  int rc = 0;
  for (; started < n; started++) {
    worker_t *w = &ctl.workers[started];
    w->id = started;
    w->config = config;
    w->reg = reg;
    w->limits = limits;
    uv_sem_init(&w->started, 0);
    uv_mutex_init(&w->inbox_lock);
    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
      core_log(CORE_LOG_ERROR, "cannot start worker thread %u", started);
      uv_sem_destroy(&w->started);
      uv_mutex_destroy(&w->inbox_lock);
      rc = 1;
      break;
    }
    reg_thread_offline();
    uv_sem_wait(&w->started);
    reg_thread_online();
    uv_sem_destroy(&w->started);
    if (w->start_rc != 0) {
      rc = 1;
      started++;
      break;
    }
  }
  ctl.n_workers = started;

  if (rc == 0) {
    ctl.notifier = dns_notifier_start(loop, config, reg);
    ctl.reloader = reloader_start(loop, config, reg, ctl.notifier, updates);
    reloader_set_workers(ctl.reloader, ctl.n_workers, send_listen_plan, &ctl);
    if (start_updates(&ctl, loop, reg) != 0) {
      rc = 1;
      stop_workers(&ctl);
    }
  }
  if (rc == 0) {
    core_log(CORE_LOG_INFO,
             "ddport %s serving: %zu listeners, %zu DNS addresses, %zu "
             "devices, %u workers",
             DDPORT_VERSION, config->n_listeners, config->dns.n_listen,
             reg_count(reg), n);
  } else {
    stop_workers(&ctl);
  }
  run_loop(loop);
  reg_thread_offline();
  for (unsigned i = 0; i < ctl.n_workers; i++) {
    uv_thread_join(&ctl.workers[i].thread);
    uv_mutex_destroy(&ctl.workers[i].inbox_lock);
  }
  reg_thread_online();
  uv_loop_close(loop);
  px_limits_free(limits);
  core_access_log_close();
  free(ctl.workers);
  return rc;
}
