/* cluster.h -- what one loomd needs to know of the others sharing its
 * PostgreSQL store: their notifications (LISTEN/NOTIFY on channel
 * STORE_NOTIFY_CHANNEL), with polling as the safety net, and the
 * notifications it sends itself (a cancel for a job another daemon runs, a
 * signal, a workflow version it loaded).
 *
 * Owns: one pgconn (daemon/cluster/pgconn.h) listening on "loom", the poll
 * and claim timers.
 * May call: pgconn, the store (store_claim_jobs, store_node), core (reactor,
 * log), libc.
 * Must never call: jobs, the engine, loomd: what it learns goes up through
 * cluster_hooks, so the daemon's top decides what a job does with it.
 *
 * Timing: every POLL_MS (default lease_ms / 2, at most 1000), when the
 * connection comes back, on cluster_kick and on a `released` notice (a
 * daemon let a job go: it is claimable at once) (coalesced: at most one
 * poll pending; other notifications never poll: their hooks act on them),
 * hooks.poll runs (the safety net: the daemon checks
 * its remote waiters against the store) and, when hooks.capacity says there
 * is room, store_claim_jobs takes over jobs whose owners are gone; what it
 * claims goes to hooks.claimed. Claims never overlap: one is in flight at
 * a time.
 *
 * Threads: the reactor thread only. */
#ifndef LOOM_DAEMON_CLUSTER_H
#define LOOM_DAEMON_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/store/store.h"

typedef struct cluster cluster_t;

/* Every hook runs on the reactor thread; any may be NULL. Strings are
 * borrowed for the call. NODE is the daemon that sent the notification
 * (never this one: its own are dropped). */
typedef struct cluster_hooks {
    void *ud;
    void (*job_new)(void *ud, const char *node, const char *job);
    void (*job_queued)(void *ud, const char *node, const char *job);
    void (*job_step)(void *ud, const char *node, const char *job, const char *key);
    void (*job_end)(void *ud, const char *node, const char *job, const char *state);
    void (*job_waiting)(void *ud, const char *node, const char *job);
    void (*job_cancel)(void *ud, const char *node, const char *job);
    void (*job_signal)(void *ud, const char *node, const char *job, const char *name);
    void (*workflow)(void *ud, const char *node, const char *name, const char *version);
    /* Live events relayed between daemons (daemon/jobs/jobs_cluster.c):
     * "watch NODE JOB", NODE has `events` subscribers to JOB, which it does
     * not run; "event NODE JOB EVENT", an event (JSON text) of JOB, which
     * NODE runs, for such subscribers. */
    void (*job_watch)(void *ud, const char *node, const char *job);
    void (*job_event)(void *ud, const char *node, const char *job, const char *event);
    /* The safety net (see above). */
    void (*poll)(void *ud);
    /* How many more jobs this daemon would take over now (0: none). */
    size_t (*capacity)(void *ud);
    /* Jobs this daemon now owns (store_claim_jobs' JOBS, borrowed). */
    void (*claimed)(void *ud, const json_t *jobs);
} cluster_hooks;

typedef struct cluster_options {
    const char *conninfo;       /* the store's URI (copied) */
    const char *password_file;  /* NULL: libpq's own */
    int64_t poll_ms;            /* 0: min(lease / 2, 1000) */
} cluster_options;

/* Starts listening (asynchronously). R, LOG and STORE are borrowed and must
 * outlive it; STORE must be shared (store_shared). NULL with errno set. */
cluster_t *cluster_new(reactor_t *r, log_sink *log, store_t *store, const cluster_options *o,
                       const cluster_hooks *h);

/* Sends "KIND NODE ARGS" on channel STORE_NOTIFY_CHANNEL (NODE: this
 * daemon's), e.g. cluster_publish(c, "cancel", job_id). Best effort: when the
 * connection is down it is dropped (the poll is the safety net). 0 or
 * -ENOMEM / -EINVAL (a payload over 7,900 bytes or with a newline). */
int cluster_publish(cluster_t *c, const char *kind, const char *args);

/* Runs a poll (and a claim) on the next reactor pass: a slot freed, say. */
void cluster_kick(cluster_t *c);

/* Counters for `stats` (stats.cluster). */
typedef struct cluster_stats {
    bool connected;
    uint64_t notifications;     /* received from other daemons */
    uint64_t polls, claims;     /* claim round trips */
    uint64_t claimed;           /* jobs taken over */
    uint64_t published;
    uint64_t malformed;         /* notifications ignored: not "KIND NODE ARGS" */
} cluster_stats;
void cluster_get_stats(const cluster_t *c, cluster_stats *out);

/* Stops listening. NULL is a no-op. */
void cluster_free(cluster_t *c);

#endif
