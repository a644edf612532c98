/* loomd.h -- the daemon's one context, shared by loomd*.c.
 *
 * Everything the daemon holds lives in one `loomd` struct made in main: no
 * global mutable state but what crash handlers need (daemon/core/inflight.h);
 * stop signals are taken by a thread of loomd's own. All of it is touched on the reactor thread only,
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
    dsl_lambda_sig *lambda_sigs;   /* the plugins' lambda arguments, for the compiler (owned) */
    dsl_registry reg;
    jobs_t jobs;
    bool jobs_ready;           /* jobs_init ran */
    inflight_prev crashed;     /* what the previous process left in STATE/inflight */
    /* life */
    struct loomd_signals *signals; /* the signal thread (loomd_signals.c) */
    bool stopping;             /* SIGTERM: no new jobs */
    reactor_timer_t *grace_timer, *purge_timer;
    int64_t started_ms;
    int exit_code;
} loomd;

/* ---- loomd.c, for the signal thread's posts (reactor thread) */
void loomd_reload(loomd *d);
/* A stop signal WHY ("SIGTERM"): the first stops taking jobs and waits up
 * to shutdown_grace, a second abandons the running jobs and stops. */
void loomd_begin_stop(loomd *d, const char *why);

/* ---- loomd_signals.c: SIGTERM, SIGINT and SIGHUP on a thread of their own */
#include <signal.h>
/* Blocks them in the calling thread (and every thread it starts from now
 * on), ignores SIGPIPE; SET receives them. Call before any thread starts.
 * 0 or -1 (errno). */
int loomd_signals_block(sigset_t *set);
/* Starts the thread that takes them for D (borrowed; its reactor, config
 * and log must outlive every post), or NULL (errno). */
struct loomd_signals *loomd_signals_start(loomd *d);
/* A reload's new shutdown_grace, for the watchdog of a stuck stop. */
void loomd_signals_set_grace(struct loomd_signals *s, uint64_t grace_ms);
/* The reactor is about to go: signals are no longer posted to it (the
 * watchdog keeps running until the process exits). NULL is a no-op. */
void loomd_signals_detach(struct loomd_signals *s);

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
/* SIGHUP: every isolated plugin's helpers run its reload hook with its
 * configuration as plugins_reload left it (plugins_config). */
void loomd_isolate_reload(loomd *d);
/* Kills and reaps every helper; after the engines are freed. */
void loomd_isolate_stop(loomd *d);

#endif
