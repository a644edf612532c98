/* config_tracing.h -- the `tracing` section of the config: where loomd
 * sends its spans (OTLP/HTTP with JSON bodies), the service name they
 * carry, and the share of new traces kept (docs/operations.md, "Tracing").
 * Parsed by config_file.c, read by loomd.c. Off unless `otlp` is given. */
#ifndef LOOM_DAEMON_CONFIG_TRACING_H
#define LOOM_DAEMON_CONFIG_TRACING_H

#include "dsl/diag.h"

#define CONFIG_TRACING_SERVICE "loomd"

typedef struct config_tracing {
    char *otlp;              /* the collector's base URL; NULL: tracing is off */
    char *service_name;      /* NULL: CONFIG_TRACING_SERVICE */
    double sample;           /* share of new traces kept, 0..1 (1) */
} config_tracing;

struct dsl_ynode;

/* Parses Y, the value of `tracing:`, into T (its strings replaced),
 * reporting every problem in D at its position. */
void config_tracing_parse(dsl_diags *d, const struct dsl_ynode *y, config_tracing *t);

/* Frees what T holds (not T). */
void config_tracing_free(config_tracing *t);

#endif
