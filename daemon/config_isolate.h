/* config_isolate.h -- the `isolate` key of the config's `plugins` section:
 * which plugins run in helper processes, and with which limits
 * (docs/operations.md). Parsed by config_file.c, read by loomd_isolate.c. */
#ifndef LOOM_DAEMON_CONFIG_ISOLATE_H
#define LOOM_DAEMON_CONFIG_ISOLATE_H

#include <stddef.h>
#include <stdint.h>

#include "dsl/diag.h"

/* The defaults and bounds of each key. */
#define CONFIG_ISOLATE_PROCESSES 1
#define CONFIG_ISOLATE_MAX_PROCESSES 64
#define CONFIG_ISOLATE_MEMORY ((uint64_t)1 << 30)      /* 1 GiB of address space */
#define CONFIG_ISOLATE_MIN_MEMORY ((uint64_t)64 << 20)
#define CONFIG_ISOLATE_CPU_SECONDS 60
#define CONFIG_ISOLATE_TIMEOUT_MS 30000

typedef struct config_isolate {
    char *plugin;            /* the plugin's name (its descriptor's `name`) */
    int processes;           /* helpers (1..64) */
    uint64_t memory_bytes;   /* RLIMIT_AS per helper (0: none, `memory: unlimited`) */
    uint64_t cpu_seconds;    /* CPU time per call (0: none) */
    uint64_t timeout_ms;     /* wall time per call */
    int line, col;           /* of the entry, for messages */
} config_isolate;

struct dsl_ynode;

/* Parses Y, the value of plugins.isolate: a mapping of plugin names to
 * mappings of options, or a list of plugin names (all defaults). Appends to
 * *OUT (a realloc'd array of *N entries; strings new), reporting every
 * problem in D at its position. */
void config_isolate_parse(dsl_diags *d, const struct dsl_ynode *y, config_isolate **out, size_t *n);

/* Frees the array of N entries. */
void config_isolate_free(config_isolate *v, size_t n);

#endif
