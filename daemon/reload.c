/* SPDX-License-Identifier: MIT */
/* reload.c -- live reload on SIGHUP and on a debounced file watch */
#include "daemon/daemon.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* A reload reads its files on a thread of its own, at this nice value:
 * a registry of millions of devices takes seconds of a core to parse,
 * which the workers (every query and connection) and the control loop
 * (updates, NOTIFY, transfers) need more; it gets what they leave. */
#define RELOAD_NICE 10

/* One watched directory and the names in it that matter. Directories, not
 * files: editors save by writing a new file and renaming it over the old
 * one, which a watch on the old file's inode would never see. */
typedef struct watch {
  uv_fs_event_t handle;
  reloader_t *reloader;
  char *dir;
  char **names; /* file names in dir that are read */
  size_t n_names;
  bool any_yaml; /* a registry directory: every *.yaml in it is read */
} watch_t;

struct reloader {
  uv_loop_t *loop;
  const reg_config_t *running; /* what the workers were started with */
  reg_config_t *current;       /* the last configuration reloaded, or NULL */
  reg_t *reg;
  dns_notifier_t *notifier; /* told when a reload changes the serial */
  reg_updates_t *updates;   /* laid over the YAML on every reload */
  reg_update_server_t *update_server; /* reloads its certificate */
  px_listen_plan_t *listeners; /* the last plan sent: in force; or NULL */
  unsigned n_workers;
  reloader_send_plan_cb send_plan;
  void *send_arg;
  char *path;
  uv_timer_t timer; /* the debounce */
  watch_t **watches;
  size_t n_watches;
  bool watch_enabled;
  uint64_t delay_ms;
  unsigned open_handles; /* freed when the last one is closed */
  bool stopping;
  /* The read in progress, on its own thread; the results are the
   * control loop's once the thread is joined. */
  uv_async_t read_done;
  uv_thread_t thread;
  bool reading;
  const char *cause;
  uint64_t start;
  reg_config_t *next;
  int rc;
  char *diag;
  size_t diag_len;
  bool again; /* asked again during the read: read once more after it */
  const char *again_cause;
};

static void reloader_release(reloader_t *r) {
  if (--r->open_handles > 0)
    return;
  reg_config_free(r->current);
  px_listen_plan_release(r->listeners);
  free(r->watches);
  free(r->path);
  free(r);
}

/* ---- watches ------------------------------------------------------------- */

static bool is_yaml_name(const char *name) {
  size_t len = strlen(name);
  return name[0] != '.' && len > 5 && strcmp(name + len - 5, ".yaml") == 0;
}

static void watch_free(watch_t *w) {
  for (size_t i = 0; i < w->n_names; i++)
    free(w->names[i]);
  free(w->names);
  free(w->dir);
  free(w);
}

static void on_watch_closed(uv_handle_t *handle) {
  watch_t *w = handle->data;
  reloader_t *r = w->reloader;
  watch_free(w);
  reloader_release(r);
}

static void on_timer(uv_timer_t *timer);

static void on_change(uv_fs_event_t *handle, const char *filename, int events,
                      int status) {
  watch_t *w = handle->data;
  reloader_t *r = w->reloader;
  if (status < 0) {
    core_log(CORE_LOG_WARN, "reload: watching %s: %s", w->dir,
             uv_strerror(status));
    return;
  }
  bool relevant = filename == NULL || (w->any_yaml && is_yaml_name(filename));
  for (size_t i = 0; !relevant && i < w->n_names; i++)
    relevant = strcmp(w->names[i], filename) == 0;
  if (!relevant || r->stopping)
    return;
  core_log(CORE_LOG_DEBUG, "reload: %s/%s changed; reloading in %ju ms", w->dir,
           filename ? filename : "", (uintmax_t)r->delay_ms);
  /* Every change restarts the delay: a burst of writes (an editor's
   * save, a generator rewriting a directory) becomes one reload. */
  uv_timer_start(&r->timer, on_timer, r->delay_ms, 0);
}

/* The watch on dir, added if missing. */
static watch_t *watch_for(reloader_t *r, const char *dir, size_t dir_len) {
  for (size_t i = 0; i < r->n_watches; i++)
    if (strlen(r->watches[i]->dir) == dir_len &&
        memcmp(r->watches[i]->dir, dir, dir_len) == 0)
      return r->watches[i];
  watch_t *w = xcalloc(1, sizeof *w);
  w->reloader = r;
  w->dir = xstrndup(dir, dir_len);
  r->watches = xrealloc(r->watches, (r->n_watches + 1) * sizeof *r->watches);
  r->watches[r->n_watches++] = w;
  return w;
}

/* Watches the directory holding path for changes to path's name. */
static void watch_path(reloader_t *r, const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    len--;
  const char *slash = memrchr(path, '/', len);
  const char *dir = slash ? path : ".";
  size_t dir_len = slash ? (size_t)(slash == path ? 1 : slash - path) : 1;
  const char *name = slash ? slash + 1 : path;
  size_t name_len = len - (size_t)(name - path);
  watch_t *w = watch_for(r, dir, dir_len);
  w->names = xrealloc(w->names, (w->n_names + 1) * sizeof *w->names);
  w->names[w->n_names++] = xstrndup(name, name_len);
}

static void watches_close(reloader_t *r) {
  for (size_t i = 0; i < r->n_watches; i++) {
    watch_t *w = r->watches[i];
    if (w->handle.type == UV_FS_EVENT) {
      uv_close((uv_handle_t *)&w->handle, on_watch_closed);
    } else {
      watch_free(w);
      reloader_release(r);
    }
  }
  r->n_watches = 0;
}

static bool same_watch(const watch_t *a, const watch_t *b) {
  if (strcmp(a->dir, b->dir) != 0 || a->any_yaml != b->any_yaml ||
      a->n_names != b->n_names)
    return false;
  for (size_t i = 0; i < a->n_names; i++)
    if (strcmp(a->names[i], b->names[i]) != 0)
      return false;
  return true;
}

/* Watches the configuration file and every registry file and directory
 * of config. When that is the set watched already, the watches stay as
 * they are: closing and reopening them would miss a change made in
 * between, such as an edit right after the reload it follows. */
static void watches_open(reloader_t *r, const reg_config_t *config) {
  watch_t **old = r->watches;
  size_t n_old = r->n_watches;
  r->watches = NULL;
  r->n_watches = 0;
  if (r->watch_enabled) {
    watch_path(r, r->path);
    for (size_t i = 0; i < config->n_registry; i++) {
      const reg_source_t *src = &config->registry[i];
      watch_path(r, src->path);
      if (src->directory) {
        size_t len = strlen(src->path);
        while (len > 1 && src->path[len - 1] == '/')
          len--;
        watch_for(r, src->path, len)->any_yaml = true;
      }
    }
  }
  bool unchanged = n_old == r->n_watches;
  for (size_t i = 0; unchanged && i < n_old; i++)
    unchanged = same_watch(old[i], r->watches[i]);
  if (unchanged) {
    for (size_t i = 0; i < r->n_watches; i++)
      watch_free(r->watches[i]);
    free(r->watches);
    r->watches = old;
    r->n_watches = n_old;
    return;
  }
  /* New watches first, then the old ones go: no moment unwatched. */
  watch_t **fresh = r->watches;
  size_t n_fresh = r->n_watches;
  for (size_t i = 0; i < n_fresh; i++) {
    watch_t *w = fresh[i];
    r->open_handles++;
    int rc = uv_fs_event_init(r->loop, &w->handle);
    if (rc == 0) {
      w->handle.data = w;
      rc = uv_fs_event_start(&w->handle, on_change, w->dir, 0);
    }
    if (rc != 0)
      core_log(CORE_LOG_WARN,
               "reload: cannot watch %s (%s); changes there need SIGHUP",
               w->dir, uv_strerror(rc));
  }
  r->watches = old;
  r->n_watches = n_old;
  watches_close(r);
  free(old);
  r->watches = fresh;
  r->n_watches = n_fresh;
}

/* ---- reloading ----------------------------------------------------------- */

static void log_lines(core_log_level_t level, const char *cause,
                      const char *text) {
  while (text != NULL && *text != '\0') {
    const char *nl = strchr(text, '\n');
    int len = nl ? (int)(nl - text) : (int)strlen(text);
    core_log(level, "reload (%s): %.*s", cause, len, text);
    text = nl ? nl + 1 : NULL;
  }
}

/* A plan from the listeners in force to next's (NULL: the same), or
 * NULL after logging why next's cannot all be opened. */
static px_listen_plan_t *plan_listeners(reloader_t *r, const char *cause,
                                        const reg_config_t *next) {
  if (r->send_plan == NULL)
    return NULL; /* no workers to change */
  size_t n_in_force = r->running->n_listeners;
  const reg_listener_t *in_force = r->running->listeners;
  if (r->listeners != NULL)
    in_force =
        px_listen_plan_listeners(r->listeners, &n_in_force, NULL, NULL, NULL);
  px_listen_plan_t *plan = NULL;
  int rc = px_listen_plan_new(in_force, n_in_force, next, r->n_workers, &plan);
  if (rc != 0)
    core_log(CORE_LOG_ERROR,
             "reload (%s): listeners not changed (%s); the %zu listeners in "
             "force keep serving, the rest of the reload applies",
             cause, uv_strerror(rc), n_in_force);
  return plan;
}

/* The new configuration read (rc 0), or why it was not, into force. */
static void reload_apply(reloader_t *r, const char *cause, int rc,
                         reg_config_t *next, char *diag) {
  if (rc != 0) {
    /* A bad file never replaces a good registry. */
    log_lines(CORE_LOG_ERROR, cause, diag);
    core_log(CORE_LOG_ERROR,
             "reload (%s): %s refused; the registry in force is unchanged "
             "(%zu devices)",
             cause, r->path, reg_count(r->reg));
    free(diag);
    reg_config_free(next);
    return;
  }
  free(diag);

  for (size_t i = 0; i < next->n_not_implemented; i++)
    core_log(CORE_LOG_WARN, "reload (%s): %s", cause, next->not_implemented[i]);
  const char *keys[REG_RESTART_KEYS_MAX];
  size_t n_keys =
      reg_config_restart_keys(r->running, next, keys, REG_RESTART_KEYS_MAX);
  for (size_t i = 0; i < n_keys; i++)
    core_log(CORE_LOG_WARN,
             "reload (%s): needs a restart: %s (changed, but the running "
             "workers keep the value they started with)",
             cause, keys[i]);

  px_listen_plan_t *plan = plan_listeners(r, cause, next);
  size_t before = reg_count(r->reg);
  reg_updates_merge(r->updates, next);
  reg_replace_all(r->reg, next);
  if (plan != NULL) {
    size_t n, added, removed, changed;
    px_listen_plan_listeners(plan, &n, &added, &removed, &changed);
    r->send_plan(plan, r->send_arg);
    px_listen_plan_release(r->listeners);
    r->listeners = plan;
    core_log(CORE_LOG_INFO,
             "reload (%s): %zu listeners in force (%zu added, %zu removed, "
             "%zu changed)",
             cause, n, added, removed, changed);
  }
  reg_update_server_reload(r->update_server, next);
  /* Changed names reach the zones with the next serial step (dns.serial_batch):
   * tell the secondaries. */
  for (size_t i = 0; i < r->running->dns.n_zones; i++)
    dns_notify_zone(r->notifier, i);
  size_t n_devices = next->n_devices;
  /* The registry holds its own copies; the accounts stay here for the
   * update API. */
  reg_config_free_devices(next);
  reg_config_free(r->current);
  r->current = next;
  core_log(CORE_LOG_INFO,
           "reload (%s): %zu devices in force (%zu before), %zu accounts, "
           "%zu registry files; took %ju ms",
           cause, n_devices, before, next->n_accounts, next->n_registry_files,
           (uintmax_t)((uv_hrtime() - r->start) / 1000000));

  r->watch_enabled = next->reload.watch;
  r->delay_ms = next->reload.delay_ms;
  watches_open(r, next);
}

static void read_main(void *arg) {
  reloader_t *r = arg;
  /* Per thread on Linux; advice only, so a refusal changes nothing. */
  (void)setpriority(PRIO_PROCESS, (id_t)gettid(), RELOAD_NICE);
  FILE *f = open_memstream(&r->diag, &r->diag_len);
  if (f == NULL) {
    r->rc = -errno;
  } else {
    r->rc = reg_config_load(r->path, f, &r->next);
    fclose(f);
  }
  uv_async_send(&r->read_done);
}

/* Joins the reading thread; its results are then the caller's. */
static void read_join(reloader_t *r) {
  uv_thread_join(&r->thread);
  r->reading = false;
}

static void on_read_done(uv_async_t *async) {
  reloader_t *r = async->data;
  if (!r->reading)
    return;
  read_join(r);
  reg_config_t *next = r->next;
  char *diag = r->diag;
  r->next = NULL;
  r->diag = NULL;
  reload_apply(r, r->cause, r->rc, next, diag);
  if (r->again && !r->stopping) {
    r->again = false;
    reloader_reload(r, r->again_cause);
  }
}

int reloader_reload(reloader_t *r, const char *cause) {
  if (r->stopping)
    return -ECANCELED;
  uv_timer_stop(&r->timer);
  if (r->reading) {
    /* The files may have changed since that read began. */
    r->again = true;
    r->again_cause = cause;
    core_log(CORE_LOG_INFO,
             "reload (%s): another reload is being read; this one follows it",
             cause);
    return 0;
  }
  r->cause = cause;
  r->start = uv_hrtime();
  r->next = NULL;
  r->diag = NULL;
  r->diag_len = 0;
  r->rc = 0;
  r->reading = true;
  int rc = uv_thread_create(&r->thread, read_main, r);
  if (rc != 0) {
    r->reading = false;
    core_log(CORE_LOG_ERROR,
             "reload (%s): cannot start reading %s: %s; the registry in "
             "force is unchanged",
             cause, r->path, uv_strerror(rc));
    return rc;
  }
  core_log(CORE_LOG_INFO, "reload (%s): reading %s", cause, r->path);
  return 0;
}

void reloader_set_update_server(reloader_t *r, reg_update_server_t *server) {
  r->update_server = server;
}

void reloader_set_workers(reloader_t *r, unsigned n_workers,
                          reloader_send_plan_cb send, void *arg) {
  r->n_workers = n_workers;
  r->send_plan = send;
  r->send_arg = arg;
}

static void on_timer(uv_timer_t *timer) {
  reloader_reload(timer->data, "file change");
}

static void on_handle_closed(uv_handle_t *handle) {
  reloader_release(handle->data);
}

reloader_t *reloader_start(uv_loop_t *loop, const reg_config_t *running,
                           reg_t *reg, dns_notifier_t *notifier,
                           reg_updates_t *updates) {
  reloader_t *r = xcalloc(1, sizeof *r);
  r->loop = loop;
  r->running = running;
  r->reg = reg;
  r->notifier = notifier;
  r->updates = updates;
  r->path = xstrdup(running->path);
  r->watch_enabled = running->reload.watch;
  r->delay_ms = running->reload.delay_ms;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  uv_async_init(loop, &r->read_done, on_read_done);
  r->read_done.data = r;
  r->open_handles = 2;
  watches_open(r, running);
  return r;
}

const reg_config_t *reloader_config(const reloader_t *r) {
  return r->current ? r->current : r->running;
}

void reloader_stop(reloader_t *r) {
  if (r == NULL || r->stopping)
    return;
  r->stopping = true;
  if (r->reading) {
    /* Bounded by the files' size; the thread holds r until it is done. */
    core_log(CORE_LOG_INFO, "stopping: waiting for the reload being read");
    read_join(r);
    reg_config_free(r->next);
    free(r->diag);
    r->next = NULL;
    r->diag = NULL;
  }
  watches_close(r);
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
  uv_close((uv_handle_t *)&r->read_done, on_handle_closed);
}
