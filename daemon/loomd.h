/* loomd.h -- the daemon's one context, shared by loomd*.c.
 *
 * Everything the daemon holds lives in one `loomd` struct made in main: no
 * global mutable state (the signal handler only writes a signalfd's pipe,
 * and signalfd needs none). All of it is touched on the reactor thread only,
 * except what the store thread and the worker pool own themselves.
 *
 * Engines come in generations: SIGHUP builds a new engine from the new
 * config (providers, limits) for jobs started from then on, and the old one
 * is freed when its last job ends. So a reload never cuts a call in flight,
 * and a provider disabled by a quota answer comes back. */
#ifndef LOOM_DAEMON_LOOMD_H
#define LOOM_DAEMON_LOOMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/config_file.h"
#include "daemon/core/inflight.h"
#include "daemon/engine/engine.h"
#include "daemon/jobs/jobs.h"
#include "daemon/core/log.h"
#include "daemon/plugins/plugins.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "daemon/server/server.h"
#include "daemon/store/store.h"
#include "daemon/wfdir/wfdir.h"

/* One engine and the jobs running on it. */
typedef struct lgen {
    struct lgen *next;
    engine_t *eng;             /* owned */
    struct providers *prov;    /* owned: the HTTP client of eng's upstreams; freed after eng */
    size_t jobs;               /* running on it */
} lgen;

typedef struct loomd {
    const char *config_path;   /* NULL: defaults */
    config *cfg;               /* owned: the config in force */
    log_sink log;
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    struct iso *iso;           /* isolated plugins' helpers (loomd_isolate.c), or NULL */
    lgen *gens;                /* current first */
    store_t *store;
    struct faults_env *test_faults; /* LOOM_TEST_STORE_FAULTS (tests only), else NULL */
    wfdir *wf;
    server_t *srv;
    const char **provider_names;   /* from cfg, for the compiler */
    dsl_registry reg;
    jobs_t jobs;
    bool jobs_ready;           /* jobs_init ran */
    inflight_prev crashed;     /* what the previous process left in STATE/inflight */
    /* life */
    int sigfd;
    bool stopping;             /* SIGTERM: no new jobs */
    reactor_timer_t *grace_timer, *purge_timer;
    int64_t started_ms;
    int exit_code;
} loomd;

/* ---- loomd_ops.c */
void ops_handle(server_conn_t *conn, json_t *req, void *ud);
void ops_conn_closed(server_conn_t *conn, void *ud);

/* ---- loomd_engine.c */
/* Builds a generation from CFG (borrowed: the engine copies what it keeps)
 * and makes it current. 0 or -1 with the reason logged. */
int gen_start(loomd *d, const config *cfg);
/* Frees generations other than the current one that have no jobs left. */
void gen_collect(loomd *d);
void gen_free_all(loomd *d);
/* Provider counters of the current generation as {name: {...}}. */
json_t *gen_provider_stats(loomd *d);
/* The compiler's registry from the current config and plugins. */
int gen_registry(loomd *d);

/* loomd_isolate.c: starts the helpers of the plugins the config isolates
 * (with CHECK, only checks that each is loaded from a shared object).
 * 0, or -1 with every problem logged. */
int loomd_isolate_start(loomd *d, bool check);
/* Kills and reaps every helper; after the engines are freed. */
void loomd_isolate_stop(loomd *d);

#endif
