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
#include "daemon/engine/engine.h"
#include "daemon/core/log.h"
#include "daemon/plugins/plugins.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "daemon/server/server.h"
#include "daemon/store/store.h"
#include "daemon/wfdir/wfdir.h"

typedef struct ljob ljob;
typedef struct lwaiter lwaiter;

/* One engine and the jobs running on it. */
typedef struct lgen {
    struct lgen *next;
    engine_t *eng;             /* owned */
    size_t jobs;               /* running on it */
} lgen;

enum { LJ_QUEUED, LJ_RUNNING, LJ_ENDING };

struct ljob {
    struct loomd *d;
    char id[STORE_ID_SIZE];
    ljob *hnext;               /* in the job table's chain */
    ljob *prev, *next;         /* in the running list */
    dsl_graph *g;              /* reference: the version it runs */
    char *workflow;
    json_t *input;             /* owned */
    json_t *replay;            /* owned: checkpoints loaded at resume, or NULL */
    int64_t priority;
    uint64_t seq;              /* arrival order, for FIFO within a priority */
    size_t heap_at;            /* index in the queue while queued */
    int state;
    bool was_running;          /* resumed: the store already says running */
    lgen *gen;                 /* while running */
    engine_job_t *ej;          /* while running */
    lwaiter *waiters;          /* replies owed when it ends */
    server_conn_t **subs;      /* `events` subscribers (references) */
    size_t nsubs, subs_cap;
};

typedef struct loomd {
    const char *config_path;   /* NULL: defaults */
    config *cfg;               /* owned: the config in force */
    log_sink log;
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    lgen *gens;                /* current first */
    store_t *store;
    wfdir *wf;
    server_t *srv;
    const char **provider_names;   /* from cfg, for the compiler */
    dsl_registry reg;
    /* jobs */
    ljob **table;              /* hash of live jobs by id */
    size_t table_size, njobs;
    ljob **queue;              /* heap: highest priority, then oldest, first */
    size_t nqueue, queue_cap;
    ljob *running;             /* list */
    size_t nrunning;
    uint64_t seq;
    uint64_t done_ok, done_failed, done_cancelled, submitted;
    server_conn_t **subs;      /* `events` subscribers of every job (references) */
    size_t nsubs, subs_cap;
    /* life */
    int sigfd;
    bool stopping;             /* SIGTERM: no new jobs */
    bool hard_stop;            /* grace over or second SIGTERM */
    reactor_timer_t *grace_timer, *purge_timer;
    int64_t started_ms;
    int exit_code;
} loomd;

/* ---- loomd_queue.c */
int jobs_table_grow(loomd *d);
int jobs_table_add(loomd *d, ljob *j);
void jobs_table_del(loomd *d, ljob *j);
int jobs_queue_push(loomd *d, ljob *j);
void jobs_queue_remove(loomd *d, ljob *j);

/* ---- loomd_jobs.c */
int jobs_init(loomd *d);
void jobs_fini(loomd *d);
/* Resumes every queued or running job of the store. 0 or -1 (logged). */
int jobs_resume(loomd *d);
ljob *jobs_find(loomd *d, const char *id);
/* Starts queued jobs while there is room. */
void jobs_pump(loomd *d);
/* The `submit` op (already validated): see docs/protocol.md. */
void jobs_submit(loomd *d, server_conn_t *conn, json_t *req);
void jobs_wait(loomd *d, server_conn_t *conn, json_t *id, const char *job, double timeout_s,
               bool as_submit);
void jobs_cancel(loomd *d, server_conn_t *conn, json_t *id, const char *job);
void jobs_subscribe(loomd *d, server_conn_t *conn, json_t *id, const char *job);
/* A connection closed: drop its waiters and subscriptions. */
void jobs_conn_closed(loomd *d, server_conn_t *conn);
/* Cancels every running job without recording it (they resume at the next
 * start) and empties the queue: the hard stop. */
void jobs_abandon(loomd *d);

/* ---- loomd_ops.c */
void ops_handle(server_conn_t *conn, json_t *req, void *ud);
void ops_conn_closed(server_conn_t *conn, void *ud);

/* ---- loomd.c */
/* Stops the reactor once a stop was asked for and no job is running or
 * being recorded. */
void loomd_check_stop(loomd *d);

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

#endif
