/* cluster_limits.h -- one set of provider limits for every daemon sharing a
 * PostgreSQL store: each provider's rpm, tpm (input/output tpm) and
 * concurrency hold across all daemons that use the same provider name.
 *
 * How: the provider's bucket lives in PostgreSQL (its schema:
 * CLUSTER_LIMITS_SCHEMA, run by the store's migrations). Each daemon leases
 * a slice of the budget for a short window, one round trip per lease (not
 * per call), spends it through its own limiter's gate (rl_set_gate,
 * daemon/upstream/ratelimit.h), returns what it did not use when the window
 * ends, and asks again when its queue needs more. Concurrency slots are
 * leased the same way and expire with the window. A 429 pause or a quota
 * stop seen by one daemon is written to the bucket and pauses the provider
 * for all (each daemon learns it at its next lease, or at once through a
 * NOTIFY on channel "loom_limits"). When PostgreSQL cannot be reached, a
 * daemon spends only what it already leased and then waits: it fails closed,
 * never over the limit.
 *
 * Owns: its own pgconn, the leases of each attached provider.
 * May call: pgconn, the rate limiter (rl_set_gate, rl_kick, rl_pause), core.
 * Must never call: the store's thread, jobs, the engine.
 *
 * Threads: the reactor thread only. */
#ifndef LOOM_DAEMON_CLUSTER_LIMITS_H
#define LOOM_DAEMON_CLUSTER_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/upstream/ratelimit.h"

typedef struct cluster_limits cluster_limits_t;

/* The SQL (one or more statements) that creates the limits' tables: a step
 * of the PostgreSQL store's schema migrations (daemon/store). */
extern const char CLUSTER_LIMITS_SCHEMA[];

typedef struct cluster_limits_options {
    const char *conninfo;       /* the store's URI (copied) */
    const char *password_file;  /* NULL: libpq's own */
    const char *node;           /* this daemon's node name (copied) */
    int64_t window_ms;          /* a lease's window; 0: 250 */
} cluster_limits_options;

/* NULL with errno set. R and LOG are borrowed and must outlive it. */
cluster_limits_t *cluster_limits_new(reactor_t *r, log_sink *log,
                                     const cluster_limits_options *o);

/* Puts RL (borrowed; detach before freeing it) under the shared budget of
 * PROVIDER (copied) whose limits are LIMITS (copied): the configured limits
 * are the provider's, for the whole cluster. Attaching the same provider
 * again with another limiter (a reload: the new engine generation's, while
 * the old one still serves its jobs) adds it beside the others, all drawing
 * on one budget, and the latest limits replace the former. 0 or -ENOMEM. */
int cluster_limits_attach(cluster_limits_t *cl, const char *provider, rl_t *rl,
                          const rl_limits *limits);

/* Returns what PROVIDER's leases hold unused and takes its gate off every
 * limiter attached for it. */
void cluster_limits_detach(cluster_limits_t *cl, const char *provider);

/* Takes the gate off RL alone (its generation is being freed); the
 * provider's other limiters keep the budget. A limiter never attached: a
 * no-op. */
void cluster_limits_detach_limiter(cluster_limits_t *cl, rl_t *rl);

/* Counters for `stats` (stats.cluster.limits). */
typedef struct cluster_limits_stats {
    bool connected;
    uint64_t leases;            /* lease round trips */
    uint64_t returns;           /* return round trips */
    uint64_t denied;            /* leases that got nothing (bucket empty or paused) */
    uint64_t calls;             /* calls admitted through the gates */
} cluster_limits_stats;
void cluster_limits_get_stats(const cluster_limits_t *cl, cluster_limits_stats *out);

/* Returns every unused lease (best effort) and frees. NULL is a no-op. */
void cluster_limits_free(cluster_limits_t *cl);

#endif
