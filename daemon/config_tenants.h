/* config_tenants.h -- the `tenants` section of the config: who shares the
 * daemon, and how much of it each may hold (docs/operations.md, "Tenants
 * and access"). Parsed by config_file.c; read by the job queue (weights and
 * limits), by access rules (config_access.h: a rule names a tenant) and by
 * budgets (the figures here are only parsed and kept).
 *
 *   tenants:
 *     search: { weight: 3, max_running_jobs: 50, max_queued_jobs: 5000,
 *               budget: { usd_per_day: 20, usd_per_month: 400 } }
 *     batch: {}
 *
 * The tenant `default` always exists (weight 1, no limits of its own)
 * unless the section configures it. */
#ifndef LOOM_DAEMON_CONFIG_TENANTS_H
#define LOOM_DAEMON_CONFIG_TENANTS_H

#include <stddef.h>
#include <stdint.h>

#include "dsl/diag.h"

#define CONFIG_TENANT_DEFAULT "default"
#define CONFIG_TENANT_MAX_WEIGHT 1000
/* A tenant name: letters, digits, '_', '-', '.', at most this long. */
#define CONFIG_TENANT_MAX_NAME 64

typedef struct config_tenant {
    char *name;
    int64_t weight;            /* its share of every queue (1..1000; 1) */
    int64_t max_running_jobs;  /* 0: only the daemon's max_running_jobs */
    int64_t max_queued_jobs;   /* 0: only the daemon's max_queued_jobs */
    double usd_per_day;        /* budget; < 0: none */
    double usd_per_month;      /* budget; < 0: none */
    int line, col;             /* of its name, for messages */
} config_tenant;

typedef struct config_tenants {
    config_tenant *v;          /* owned */
    size_t n;
} config_tenants;

struct dsl_ynode;

/* Parses Y, the value of `tenants`, into T (which it fills; T was empty),
 * reporting every problem in D at its position. */
void config_tenants_parse(dsl_diags *d, const struct dsl_ynode *y, config_tenants *t);

void config_tenants_free(config_tenants *t);

/* The tenant NAME (borrowed), or NULL when the section does not configure
 * it (`default` then still exists, with the defaults). */
const config_tenant *config_tenant_find(const config_tenants *t, const char *name);

/* Whether NAME is a tenant jobs may belong to: configured, or `default`. */
int config_tenant_known(const config_tenants *t, const char *name);

/* Whether NAME is well formed as a tenant name (see above). */
int config_tenant_name_ok(const char *name);

#endif
