/* SPDX-License-Identifier: MIT */
/* fuzz_config.c -- fuzz target for the YAML configuration loader */
#include "registry/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the rest of ddport relies on in a config that loaded. */
static void check_config(const reg_config_t *c) {
  for (size_t i = 0; i < c->n_devices; i++) {
    const reg_device_t *d = &c->devices[i];
    if (d->name == NULL || d->n_ports == 0 ||
        (d->n_addrs == 0) == (d->target_host == NULL) ||
        d->wildcard != (d->name[0] == '*'))
      abort();
    /* Normalised: lowercase ASCII, IDNs as A-labels. */
    for (const char *p = d->name; *p; p++)
      if ((*p >= 'A' && *p <= 'Z') || (unsigned char)*p >= 0x80)
        abort();
    for (size_t j = 0; j < d->n_ports; j++)
      if (d->ports[j].port == 0 ||
          reg_device_port(d, d->ports[j].listener) == 0)
        abort();
  }
  const char *why;
  for (size_t i = 0; i < c->n_accounts; i++)
    if (c->accounts[i].name == NULL || c->accounts[i].secret == NULL ||
        !reg_secret_is_hash(c->accounts[i].secret, &why))
      abort();
  for (size_t i = 0; i < c->dns.n_zones; i++)
    if (c->dns.zones[i].name == NULL || c->dns.zones[i].n_proxy == 0 ||
        c->dns.zones[i].soa_email == NULL)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
    abort();
  reg_config_t *config = NULL;
  /* Relative registry paths resolve below a directory that does not
   * exist, so the target reads no files of the machine it runs on. */
  int rc = reg_config_load_buffer("/nonexistent-ddport-fuzz/fuzz.yaml",
                                  (const char *)data, size, devnull, &config);
  if ((rc == 0) != (config != NULL) || (rc != 0 && rc != -EINVAL))
    abort();
  if (config != NULL)
    check_config(config);
  reg_config_free(config);
  return 0;
}
