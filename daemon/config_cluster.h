/* config_cluster.h -- the `cluster` section of the config: how this daemon
 * takes part when `state` is a PostgreSQL URI (docs/scale-out.md). Parsed
 * by config_file.c, read by loomd.c. Ignored with a SQLite state directory. */
#ifndef LOOM_DAEMON_CONFIG_CLUSTER_H
#define LOOM_DAEMON_CONFIG_CLUSTER_H

#include <stdint.h>

#include "dsl/diag.h"

typedef struct config_cluster {
    char *node;             /* this daemon's name; NULL: the host name */
    uint64_t lease_ms;      /* a job's lease without a heartbeat (10 s) */
    char *password_file;    /* the PostgreSQL password's file; NULL: libpq's own */
    char *local_state;      /* the daemon's local files (./loom-local) */
    uint64_t limits_window_ms; /* a shared limit lease's window (250 ms) */
    uint64_t poll_ms;       /* the safety net's poll (1 s) */
} config_cluster;

struct dsl_ynode;

/* The defaults into C (NULL strings but local_state). 0 or -ENOMEM. */
int config_cluster_default(config_cluster *c);

/* Parses Y, the value of `cluster:`, into C (its strings replaced),
 * reporting every problem in D at its position. */
void config_cluster_parse(dsl_diags *d, const struct dsl_ynode *y, config_cluster *c);

/* Frees what C holds (not C). */
void config_cluster_free(config_cluster *c);

#endif
