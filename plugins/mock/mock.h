/* mock.h -- the mock provider's counters, for in-process readers.
 *
 * Workflows read them through the lambda mock.stats; code linked with the
 * plugin (unit tests, benchmarks) may read them directly. */
#ifndef LOOM_PLUGINS_MOCK_H
#define LOOM_PLUGINS_MOCK_H

#include <stdint.h>

#include "loom/plugin.h"

#ifdef LOOM_BUILTIN_PLUGIN
/* The entry of the plugin when linked into the host. */
const loom_plugin *loom_builtin_mock_entry(void);
#endif

typedef struct mock_stats {
    uint64_t calls;          /* calls started (invoke returned 0) */
    uint64_t completed;      /* finished with complete */
    uint64_t failed;         /* finished with fail (injected failures) */
    uint64_t cancelled;      /* dropped by the host's cancel */
    uint64_t in_flight;      /* started and not yet finished or cancelled */
    uint64_t max_in_flight;  /* the most in flight at once */
    /* When the first and the latest call started (invoke returned 0), in
     * CLOCK_MONOTONIC microseconds; 0 before any: what a test of a host's
     * pacing (limits, Retry-After pauses) measures the host by. */
    uint64_t first_start_us, last_start_us;
} mock_stats;

/* Copies the counters of the live instance named NAME (the most recently
 * initialised one if several share the name) of the mock plugin whose state
 * is PLUGIN_STATE into *OUT. 0, or -1 when no instance has that name. Any
 * thread. */
int mock_stats_get(void *plugin_state, const char *name, mock_stats *out);

#endif
