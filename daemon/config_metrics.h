/* config_metrics.h -- the `metrics` section of the config: where loomd
 * serves its metrics in the Prometheus text format (docs/operations.md,
 * "Monitoring"). Parsed by config_file.c, read by loomd_metrics.c. Off
 * unless `listen` is given. */
#ifndef LOOM_DAEMON_CONFIG_METRICS_H
#define LOOM_DAEMON_CONFIG_METRICS_H

#include <stddef.h>

#include "dsl/diag.h"

/* Label sets per metric family when `max_series` is not given. */
#define CONFIG_METRICS_MAX_SERIES 1000

typedef struct config_metrics {
    char *listen;            /* "HOST:PORT" of GET /metrics; NULL: no endpoint */
    size_t max_series;       /* label sets per family; more are dropped and counted */
} config_metrics;

struct dsl_ynode;

/* Parses Y, the value of `metrics:`, into M (its strings replaced),
 * reporting every problem in D at its position. */
void config_metrics_parse(dsl_diags *d, const struct dsl_ynode *y, config_metrics *m);

/* Frees what M holds (not M). */
void config_metrics_free(config_metrics *m);

#endif
