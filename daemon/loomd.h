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
#include "daemon/trace/trace.h"
#include "daemon/wfdir/wfdir.h"

/* One engine and the jobs running on it. */
typedef struct lgen {
    struct lgen *next;
    engine_t *eng;             /* owned */
    struct providers *prov;    /* owned: the HTTP client of eng's upstreams; freed after eng */
    size_t jobs;               /* running on it */
    engine_prices prices;      /* owned: the config's, which eng borrows (loomd_cost.c) */
} lgen;

typedef struct loomd {
    const char *config_path;   /* NULL: defaults */
    config *cfg;               /* owned: the config in force */
    log_sink log;
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    struct iso *iso;           /* isolated plugins' helpers (loomd_isolate.c), or NULL */
    struct mcp *mcp;           /* the config's MCP servers (loomd_mcp.c), or NULL */
    struct loomd_batch *batch; /* provider batches (loomd_batch.c), or NULL before start */
    lgen *gens;                /* current first */
    struct engine_ledger *ledger; /* tenants' spend and budgets, cost counters
                                     (loomd_cost.c); outlives generations */
    store_t *store;
    struct cluster *cluster;   /* the other daemons of a shared store (loomd_cluster.c), or NULL */
    struct loomd_limits *limits; /* the providers' limits shared with them (loomd_limits.c), or NULL */
    char node[64];             /* this daemon's node name with a shared store */
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
    tracer_t *tracer;          /* spans to the collector (loomd_trace.c), or NULL */
    struct loomd_metrics *metrics; /* the metrics (loomd_metrics.c), or NULL before start */
    struct pidfile *pidfile;   /* pid_file, held while running (loomd_files.c), or NULL */
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

/* ---- loomd_files.c: log.file and pid_file */
/* Puts the log in log.file when the config names one (before any thread
 * starts). 0, or -1 with FILE:LINE:COL and the reason on stderr. */
int loomd_log_start(loomd *d);
/* SIGHUP: opens K's path again (a no-op without one): a rotated log
 * starts a new file. A failure is logged and the log stays where it was. */
void loomd_log_reopen(loomd *d, const config_path_key *k);
/* Writes and locks pid_file when the config names one. 0, or -1 logged
 * (another loomd holds it: its pid is named). */
int loomd_pidfile_start(loomd *d);
/* Removes the pid file (a clean stop). */
void loomd_pidfile_stop(loomd *d);

/* ---- loomd_trace.c: the tracer (config `tracing`) */
/* Starts it when the config has `tracing`, for the jobs. 0, or -1 logged. */
int loomd_trace_start(loomd *d);
/* Flushes what is buffered (bounded) and stops it; after the engines. */
void loomd_trace_stop(loomd *d);
/* `stats.tracing`: {enabled, exported, dropped, failed_posts, queued}. New. */
json_t *loomd_trace_stats(loomd *d);
/* Whether two configs' `tracing` are the same (a reload cannot change it). */
bool loomd_trace_same(const config_tracing *a, const config_tracing *b);

/* ---- loomd_metrics.c: the metrics (config `metrics`, docs/operations.md) */
/* The registry of what is recorded as it happens; the store's commit and
 * the reactor's lag observers. After the store opens. 0, or -1 logged. */
int loomd_metrics_start(loomd *d);
/* Serves GET /metrics when the config has `metrics.listen`. 0, or -1 logged. */
int loomd_metrics_listen(loomd *d);
/* The engine's call observer (UD: the loomd): set on every generation. */
void loomd_metrics_call(void *ud, const engine_call_report *r);
/* The jobs' hooks that feed queue wait and jobs by workflow into H. */
void loomd_metrics_hooks(loomd *d, jobs_hooks *h);
/* The exposition text (Prometheus 0.0.4) appended to OUT. 0 or -1. */
int loomd_metrics_text(loomd *d, sbuf *out);
/* Stops serving (first thing on stop: a scrape must not wait on a reactor
 * that is stopping), then frees it all (after the store and the engines). */
void loomd_metrics_stop_http(loomd *d);
void loomd_metrics_free(loomd *d);

/* ---- loomd_cluster.c: beside other daemons on a PostgreSQL store */
/* Whether the store is (before it opens: the config's state names) a
 * PostgreSQL store. */
bool loomd_shared(const loomd *d);
/* Whether A and B (`cluster` of two configs) are the same: read at start. */
bool loomd_cluster_same(const config_cluster *a, const config_cluster *b);
/* The directory of this daemon's own files (the in-flight crash record):
 * the state directory, or cluster.local_state with a shared store. */
const char *loomd_local_state(const loomd *d);
/* Creates cluster.local_state (mode 0700) with a shared store. 0, or -1 logged. */
int loomd_local_state_prepare(loomd *d);
/* The store's node, lease and password file from the config. */
void loomd_store_options(loomd *d, store_options_t *o);
/* The jobs' publish hook with a shared store. */
void loomd_cluster_hooks(loomd *d, jobs_hooks *h);
/* Starts listening to the others (after the store opens). 0, or -1 logged. */
int loomd_cluster_start(loomd *d);
/* Tells the others this daemon loaded VERSION of NAME. */
void loomd_cluster_workflow(loomd *d, const char *name, const char *version);
/* ---- loomd_limits.c: the providers' limits shared through the store */
/* With a shared store, once it is open: the shared limits, every
 * generation's providers under them. 0, or -1 logged. */
int loomd_limits_start(loomd *d);
/* G, just made from CFG: its providers under the shared limits. */
void loomd_limits_gen(loomd *d, lgen *g, const config *cfg);
/* G is about to be freed: its providers' limiters taken off. */
void loomd_limits_gen_gone(loomd *d, lgen *g);
/* Before the generations are freed. */
void loomd_limits_stop(loomd *d);
/* `stats.cluster.limits` (new), null without a shared store. */
json_t *loomd_limits_stats(loomd *d);
/* `stats.cluster` (new), null without a shared store. */
json_t *loomd_cluster_stats(loomd *d);
/* Stops listening (before the store closes). */
void loomd_cluster_stop(loomd *d);

/* ---- loomd_ops.c */
void ops_handle(server_conn_t *conn, json_t *req, void *ud);
/* What the `stats` op answers, for every tenant (new reference, or NULL). */
json_t *loomd_stats(loomd *d);
void ops_conn_closed(server_conn_t *conn, void *ud);

/* ---- loomd_access.c: tenants and roles of requests (config_access.h) */
typedef struct loomd_access {
    const char *tenant;        /* its own tenant (borrowed from the config in force) */
    config_role role;
} loomd_access;
/* CONN's tenant and role under the config in force into OUT; false when
 * no rule matches it (without `access`: admin of `default`). */
bool loomd_access_of(const loomd *d, server_conn_t *conn, loomd_access *out);
/* Whether REQ (borrowed; checked by ops_check) of op OP may run for CONN:
 * a matching rule, a role that allows OP, and a `tenant` it may name (only
 * admin names another). Otherwise answers access_denied, forbidden or
 * unknown_tenant on CONN with ID and returns false. */
bool loomd_access_gate(loomd *d, server_conn_t *conn, json_t *req, json_t *id, const char *op);
/* The tenant REQ's jobs are limited to (borrowed): the one it names, else
 * CONN's own; NULL (every tenant) for an admin naming none. After the gate. */
const char *loomd_access_scope(const loomd *d, server_conn_t *conn, json_t *req);
/* The tenant a job REQ submits belongs to (borrowed): the one it names,
 * else CONN's own. After the gate. */
const char *loomd_access_tenant(const loomd *d, server_conn_t *conn, json_t *req);
/* Whether a job of TENANT (NULL: "default") is seen within SCOPE (NULL:
 * every tenant). */
bool loomd_tenant_sees(const char *scope, const char *tenant);
/* Whether JOB (live or stored) is seen within SCOPE (NULL: always);
 * otherwise answers not_found on CONN with ID, as for a job that does not
 * exist, and returns false. A job not found at all is left to the op. */
bool loomd_job_visible(loomd *d, server_conn_t *conn, json_t *id, const char *job,
                       const char *scope);
/* Cuts the `stats` reply STATS (borrowed, changed in place) to what a
 * client of tenant SCOPE may see: its own jobs, tenant entry and spending;
 * the daemon's health (providers, reactor, store) stays. */
void loomd_stats_scope(loomd *d, json_t *stats, const char *scope);
/* Gives the job queue the tenants' weights and limits of the config in
 * force (at start and at each reload); logged when out of memory. */
void loomd_tenants_apply(loomd *d);

/* ---- loomd_cost.c: cost and budgets */
/* G's prices from CFG, and the ledger (made on first use), lent to G's
 * engine. 0 or -1 (out of memory). */
int loomd_cost_gen(loomd *d, lgen *g, const config *cfg);
/* Once the store is open: tenants' spend of today and this month read back,
 * each call's cost written from now on, the config's budgets applied. 0 or
 * -1 logged. */
int loomd_cost_start(loomd *d);
/* The budgets of the config in force (start and each reload). */
void loomd_cost_limits(loomd *d);
/* Before the store closes: spend is no longer written. */
void loomd_cost_detach(loomd *d);
/* After the engines are freed. */
void loomd_cost_free(loomd *d);
/* `stats.cost` (a new reference, or NULL). */
json_t *loomd_cost_stats(loomd *d);

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

/* loomd_mcp.c: starts the MCP servers of the config's `mcp` section (with
 * CHECK, only checks that their headers_env variables are set). 0, or -1
 * with every problem logged. */
int loomd_mcp_start(loomd *d, bool check);
/* Gives engine E the servers' tools (engine_set_mcp); a no-op without any. */
void loomd_mcp_attach(loomd *d, engine_t *e);
/* `stats.mcp`: {NAME: {state, transport, tools, calls, failed, restarts}}. New. */
json_t *loomd_mcp_stats(loomd *d);
/* Stops every server (bounded: mcp.h); after the engines are freed. */
void loomd_mcp_stop(loomd *d);
/* Whether two configs' `mcp` sections are the same (a reload cannot change it). */
bool loomd_mcp_same(const config_mcp *a, const config_mcp *b);

/* loomd_batch.c: provider Batch APIs (daemon/batch) */
/* Gives engine E the batch hooks (engine_set_batch); every generation. */
void loomd_batch_attach(loomd *d, engine_t *e);
/* The jobs' hooks that drop an ended job's lines and wake a job parked on
 * lines already done. Before jobs_init. */
void loomd_batch_hooks(loomd *d, jobs_hooks *h);
/* Makes the manager and resumes the store's batches; after the store opens
 * and jobs_init, before jobs_resume. 0, or -1 logged. */
int loomd_batch_start(loomd *d);
/* After jobs_resume: wakes the waiting jobs whose batch lines are done or
 * were never stored. 0, or -1 logged. */
int loomd_batch_resume(loomd *d);
/* `stats.batch` (batch_mgr_stats), null before start. New. */
json_t *loomd_batch_stats(loomd *d);
/* Whether the batch manager has a request in flight on G's HTTP client:
 * G is then kept (gen_collect) until the answer comes. */
bool loomd_batch_holds(loomd *d, const lgen *g);
/* Stops every batch timer and request (the store has it all); before the
 * store closes and the generations are freed. */
void loomd_batch_stop(loomd *d);

#endif
