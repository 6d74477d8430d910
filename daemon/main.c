/* SPDX-License-Identifier: MIT */
/* main.c -- the ddport command line */
#include "daemon/daemon.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: ddport COMMAND [OPTIONS]\n"
    "\n"
    "Dynamic DNS with port redirection: an authoritative DNS server and a\n"
    "transparent proxy that routes visitors by HTTP Host or TLS SNI to\n"
    "devices on other ports.\n"
    "\n"
    "commands:\n"
    "  serve -c FILE     run in the foreground until SIGTERM/SIGINT\n"
    "  check -c FILE     validate the configuration and registry\n"
    "  hash-secret       read a secret on stdin, print its crypt(3) hash\n"
    "\n"
    "options:\n"
    "  -c, --config FILE configuration file (YAML)\n"
    "  -v, --verbose     log debug messages too (serve)\n"
    "  -h, --help        show this help\n"
    "  -V, --version     show the version\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "ddport: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'ddport --help'.\n");
  return 2;
}

static void print_not_implemented(const reg_config_t *config) {
  for (size_t i = 0; i < config->n_not_implemented; i++)
    fprintf(stderr, "%s\n", config->not_implemented[i]);
}

static int cmd_check(const char *path) {
  reg_config_t *config;
  if (reg_config_load(path, stderr, &config) != 0)
    return 1;
  print_not_implemented(config);
  char err[512];
  if (reg_update_tls_check(config, err, sizeof err) != 0) {
    fprintf(stderr, "%s: update.tls: %s\n", path, err);
    reg_config_free(config);
    return 1;
  }
  printf("%s: ok: %zu listeners, %zu zones, %zu devices, %zu accounts, %zu "
         "registry files\n",
         path, config->n_listeners, config->dns.n_zones, config->n_devices,
         config->n_accounts, config->n_registry_files);
  reg_config_free(config);
  return 0;
}

/* Up to this many devices, a stopping server frees its table. */
#define FREE_AT_EXIT_MAX 100000

static int cmd_serve(const char *path) {
  reg_config_t *config;
  if (reg_config_load(path, stderr, &config) != 0)
    return 1;
  for (size_t i = 0; i < config->n_not_implemented; i++)
    core_log(CORE_LOG_WARN, "%s", config->not_implemented[i]);
  /* Updates devices made before this start are laid over the YAML before
   * the first lookup. */
  reg_updates_t *updates;
  if (reg_updates_open(config, &updates) != 0) {
    reg_config_free(config);
    return 1;
  }
  reg_updates_merge(updates, config);
  reg_t *reg = reg_new(config);
  /* The table holds its own copies: at a carrier's scale, a second set
   * would double the registry's memory. */
  reg_config_free_devices(config);
  int rc = daemon_serve(config, reg, updates);
  /* A server that stops does not spend seconds freeing millions of
   * devices (10M: about 4 s) that the kernel frees at exit anyway; a small
   * table, a test's, is freed, so leak checkers see everything. */
  size_t devices = reg_count(reg);
  if (devices > FREE_AT_EXIT_MAX) {
    core_log(CORE_LOG_INFO, "stopping: %zu devices left to the kernel to free",
             devices);
    reg_leave(reg);
  } else {
    reg_free(reg);
  }
  reg_updates_free(updates);
  reg_config_free(config);
  return rc;
}

#define SECRET_MAX 1024

/* Reads the secret: from a terminal one line without echo, otherwise all
 * of stdin. Returns its length, or -1 after printing why. */
static ssize_t read_secret(char *buf, size_t size) {
  bool tty = isatty(STDIN_FILENO);
  struct termios saved, quiet;
  bool echo_off = false;
  if (tty) {
    /* Echo off before the prompt: what is typed after it must not show. */
    if (tcgetattr(STDIN_FILENO, &saved) == 0) {
      quiet = saved;
      quiet.c_lflag &= ~(tcflag_t)ECHO;
      quiet.c_lflag |= ECHONL;
      echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
    fprintf(stderr, "Secret: ");
    fflush(stderr);
  }
  size_t len = 0;
  ssize_t rc = 0;
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf + len, size - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      fprintf(stderr, "ddport hash-secret: cannot read stdin: %s\n",
              strerror(errno));
      rc = -1;
      break;
    }
    len += (size_t)n;
    if (n == 0 || len == size || (tty && memchr(buf, '\n', len) != NULL))
      break;
  }
  if (echo_off)
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  if (rc < 0)
    return rc;
  if (tty) {
    char *nl = memchr(buf, '\n', len);
    if (nl != NULL)
      len = (size_t)(nl - buf) + 1;
  }
  if (len == size) {
    fprintf(stderr,
            "ddport hash-secret: the secret is longer than %d bytes; use a "
            "shorter one\n",
            SECRET_MAX);
    return -1;
  }
  /* One trailing newline is the end of the line typed or echoed, not part
   * of the secret. */
  if (len > 0 && buf[len - 1] == '\n')
    len--;
  if (len > 0 && buf[len - 1] == '\r')
    len--;
  if (memchr(buf, '\0', len) != NULL) {
    fprintf(stderr, "ddport hash-secret: the secret contains a NUL byte; "
                    "crypt(3) cannot hash it\n");
    return -1;
  }
  if (len == 0) {
    fprintf(stderr, "ddport hash-secret: empty secret; type or pipe the "
                    "secret on stdin, e.g. "
                    "`printf %%s \"$SECRET\" | ddport hash-secret`\n");
    return -1;
  }
  buf[len] = '\0';
  return (ssize_t)len;
}

static int cmd_hash_secret(void) {
  char secret[SECRET_MAX + 1];
  char hash[256];
  ssize_t len = read_secret(secret, SECRET_MAX);
  int rc = 1;
  if (len > 0) {
    int err = reg_secret_hash(secret, hash, sizeof hash);
    if (err != 0) {
      fprintf(stderr, "ddport hash-secret: cannot hash: %s\n", strerror(-err));
    } else {
      printf("%s\n", hash);
      rc = fflush(stdout) == 0 ? 0 : 1;
    }
  }
  explicit_bzero(secret, sizeof secret);
  return rc;
}

int main(int argc, char **argv) {
  static const struct option options[] = {
      {"config", required_argument, NULL, 'c'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  if (argc < 2)
    return usage_error("%s", "missing command");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("ddport %s\n", DDPORT_VERSION);
    return 0;
  }
  const char *command = argv[1];
  if (command[0] == '-')
    return usage_error("unknown option '%s'", command);

  /* Options follow the command: let getopt see the command as argv[0]. */
  const char *config_path = NULL;
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc - 1, argv + 1, ":c:vhV", options, NULL)) !=
         -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'v':
      core_log_set_level(CORE_LOG_DEBUG);
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    case 'V':
      printf("ddport %s\n", DDPORT_VERSION);
      return 0;
    case ':':
      return usage_error("option '%s' needs an argument", argv[optind]);
    default:
      return usage_error("unknown option '%s'", argv[optind]);
    }
  }
  if (optind + 1 < argc)
    return usage_error("unexpected argument '%s'", argv[optind + 1]);

  if (strcmp(command, "hash-secret") == 0)
    return cmd_hash_secret();
  if (strcmp(command, "serve") != 0 && strcmp(command, "check") != 0)
    return usage_error("unknown command '%s'", command);
  if (config_path == NULL)
    return usage_error("%s needs -c FILE", command);
  return strcmp(command, "serve") == 0 ? cmd_serve(config_path)
                                       : cmd_check(config_path);
}
