/* jobs.h -- the daemon's jobs: accepted durably, queued by priority, run on
 * an engine, checkpointed step by step, finished in the store, and the
 * replies owed to the clients waiting for them.
 *
 * Owns: the live jobs (a table by id, the priority queue, the running
 * list), their waiters (`wait`, `submit` with wait, `cancel`) and `events`
 * subscriptions, and the job counters of `stats`.
 * May call: the engine (to run a job), the store (to accept, checkpoint and
 * finish it), the server (to answer a connection), the workflow directory
 * (to find a workflow's current version), core (reactor, log), dsl.
 * Must never call: loomd's main, its ops or its engine generations: what it
 * needs of them comes through jobs_hooks (which engine a new job starts on,
 * and "a job is gone: see whether you may stop"). So the daemon's top calls
 * down into jobs, never the other way round.
 *
 * Threads: the reactor thread only. */
#ifndef LOOM_DAEMON_JOBS_H
#define LOOM_DAEMON_JOBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/containers.h"
#include "daemon/core/inflight.h"
#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/engine/engine.h"
#include "daemon/server/server.h"
#include "daemon/store/store.h"
#include "daemon/wfdir/wfdir.h"

typedef struct jobs jobs_t;
typedef struct ljob ljob;
typedef struct lwaiter lwaiter;

/* What jobs need from the daemon above them. Every hook runs on the reactor
 * thread, never from inside an engine callback that forbids freeing the
 * engine (engine_release and settled run after the engine job is gone). */
typedef struct jobs_hooks {
    void *ud;
    /* The engine new jobs start on, and a token for it (an engine
     * generation): NULL when there is none. Each acquire is paired with one
     * release when the job leaves the engine. */
    engine_t *(*engine_acquire)(void *ud, void **token);
    void (*engine_release)(void *ud, void *token);
    /* A job ended or was abandoned: old engines may be freed, and the daemon
     * may stop if it was waiting for its running jobs. */
    void (*settled)(void *ud);
} jobs_hooks;

enum { LJ_QUEUED, LJ_RUNNING, LJ_ENDING };

struct ljob {
    jobs_t *js;
    char id[STORE_ID_SIZE];
    ljob *hnext;               /* in the job table's chain */
    list_link run;             /* in the running list */
    dsl_graph *g;              /* reference: the version it runs */
    char *workflow;
    json_t *input;             /* owned */
    json_t *replay;            /* owned: checkpoints loaded at resume, or NULL */
    int64_t priority;
    uint64_t seq;              /* arrival order, for FIFO within a priority */
    size_t heap_at;            /* index in the queue while queued */
    int state;
    bool was_running;          /* resumed: the store already says running */
    void *gen;                 /* the engine's token while running */
    engine_job_t *ej;          /* while running */
    lwaiter *waiters;          /* replies owed when it ends */
    server_conn_t **subs;      /* `events` subscribers (references) */
    size_t nsubs, subs_cap;
    store_state_t end_state;   /* the end being recorded (counted once on disk) */
    bool end_rejected;         /* the store refused its end; a failed one replaces it */
};

/* The counters of `stats` (the ends: as committed to the store). */
typedef struct jobs_counts {
    size_t queued, running;
    uint64_t submitted, succeeded, failed, cancelled;
} jobs_counts;

struct jobs {
    reactor_t *r;              /* borrowed, like everything below up to hooks */
    store_t *store;
    wfdir *wf;
    log_sink *log;
    jobs_hooks hooks;
    int64_t max_running;       /* jobs running at once */
    bool log_payloads;         /* a finished job's line carries its input and output */
    bool stopping;             /* no new job starts (SIGTERM) */
    bool hard_stop;            /* running jobs are abandoned, unrecorded */
    reactor_timer_t *pump_timer; /* a freed slot's queued job starts on the next pass */
    /* live jobs */
    ljob **table;              /* hash of live jobs by id */
    size_t table_size, njobs;
    void **queue;              /* ljob heap: highest priority, then oldest, first */
    size_t nqueue, queue_cap;
    list_link running;         /* ljob.run */
    size_t nrunning;
    uint64_t seq;
    jobs_counts counts;
    server_conn_t **subs;      /* `events` subscribers of every job (references) */
    size_t nsubs, subs_cap;
    /* set by the daemon at start; 0: no limit */
    int64_t max_queued;        /* a submit past it is refused with queue_full */
    int64_t max_output_bytes;  /* a job's output past it fails the job (output_too_large) */
    bool store_down;           /* the store holds writes (logged once each way) */
    /* poison jobs (jobs_quarantine.c), set by the daemon before jobs_resume */
    const inflight_prev *crashed; /* what the previous process left (borrowed), or NULL */
    int64_t quarantine_after;  /* consecutive crashes that end a job (config) */
    /* old workflow versions compiled from the store while jobs_resume runs */
    dsl_graph **pinned;
    size_t npinned;
    bool resuming;
};

/* Sets up JS over R, STORE, WF and LOG (all borrowed; they must outlive it;
 * STORE may be set later, before jobs_resume). 0 or -ENOMEM. */
int jobs_init(jobs_t *js, reactor_t *r, store_t *store, wfdir *wf, log_sink *log,
              const jobs_hooks *hooks);
/* Abandons every job (see jobs_abandon) and frees what JS holds. */
void jobs_fini(jobs_t *js);
/* The limits of the config in force (at start and at each reload). */
void jobs_set_limits(jobs_t *js, int64_t max_running, bool log_payloads);

/* Resumes every queued or running job of the store. 0 or -1 (logged). */
int jobs_resume(jobs_t *js);
/* The graph of the version the stored job STORED_JOB (a store job object)
 * started with: the served graph when that is still the version, else the
 * version's text from the store, compiled now (on this thread). A new
 * reference, its version in *VER (load 0 for one not served); NULL with the
 * reason in ERR when it can be neither. */
dsl_graph *jobs_stored_graph(jobs_t *js, const json_t *stored_job, wfdir_version *ver, char *err,
                             size_t errlen);
/* Drops the old versions jobs_resume compiled (it calls this itself). */
void jobs_pinned_clear(jobs_t *js);

/* Loads the stored job STORED_JOB (borrowed: a queued or running job object
 * of the store) into memory as a resumed job: the graph of the version it
 * started with, its checkpoints as its replay (steps that finished are not
 * run again), queued. *OUT (may be NULL) receives it (borrowed). 0;
 * -ENOENT when it cannot run any more: it was ended failed in the store
 * (unknown_workflow), with the reason in ERR, logged; -ENOMEM. */
int jobs_load_stored(jobs_t *js, const json_t *stored_job, ljob **out, char *err, size_t errlen);

/* ---- jobs_quarantine.c: poison jobs and `retry` */
/* quarantine_after when the daemon sets none (the config's default) */
#define JOBS_QUARANTINE_DEFAULT 2
/* Before the unfinished jobs JOBS (an array of store job objects, changed
 * in place) are resumed: blames the jobs js->crashed says were running
 * plugin code when the previous process died, and ends failed (code
 * crashed) those that reached quarantine_after crashes in a row. Every job
 * whose crash count changes is taken out of JOBS and resumed here once its
 * new count is on disk. */
void jobs_quarantine(jobs_t *js, json_t *jobs);
/* The `retry` op (already validated): see docs/protocol.md. */
void jobs_retry(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);

/* The live job ID (borrowed), or NULL. */
ljob *jobs_find(jobs_t *js, const char *id);
/* Starts queued jobs while there is room. */
void jobs_pump(jobs_t *js);
/* The `submit` op (already validated): see docs/protocol.md. */
void jobs_submit(jobs_t *js, server_conn_t *conn, json_t *req);
void jobs_wait(jobs_t *js, server_conn_t *conn, json_t *id, const char *job, double timeout_s,
               bool as_submit);
void jobs_cancel(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);
void jobs_subscribe(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);
/* A connection closed: drop its waiters and subscriptions. */
void jobs_conn_closed(jobs_t *js, server_conn_t *conn);
/* No new job starts from now on (running ones go on). */
void jobs_stop_starting(jobs_t *js);
/* Cancels every running job without recording it (they resume at the next
 * start) and empties the queue: the hard stop. */
void jobs_abandon(jobs_t *js);
/* Whether no job is running or being recorded (only queued ones, if any). */
bool jobs_idle(const jobs_t *js);
void jobs_counts_get(const jobs_t *js, jobs_counts *out);

/* ---- jobs_queue.c: the table by id and the priority queue */
int jobs_table_grow(jobs_t *js);
int jobs_table_add(jobs_t *js, ljob *j);
void jobs_table_del(jobs_t *js, ljob *j);
int jobs_queue_push(jobs_t *js, ljob *j);
void jobs_queue_remove(jobs_t *js, ljob *j);

#endif
