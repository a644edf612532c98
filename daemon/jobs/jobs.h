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
#include "daemon/trace/trace.h"
#include "daemon/wfdir/wfdir.h"

typedef struct jobs jobs_t;
typedef struct ljob ljob;
typedef struct jobs_tenant jobs_tenant;
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
    /* Optional, for metrics: job J left the queue after QUEUED_S seconds
     * there; J's end (STATE "succeeded", "failed" or "cancelled") was
     * committed RUN_S seconds after it started (0 when it never did). */
    void (*job_started)(void *ud, const ljob *j, double queued_s);
    void (*job_ended)(void *ud, const ljob *j, const char *state, double run_s);
    /* Optional: JOB's end is on disk, whether it ran to it or was cancelled
     * while it waited; what it left outside the store (lines in a provider
     * batch) may go. */
    void (*job_closed)(void *ud, const char *job);
    /* Optional: JOB is on disk as waiting on WAITS (its stored waits,
     * borrowed): a wait that can already end (a batch line that is done)
     * is woken from here (jobs_wake_batch). */
    void (*parked)(void *ud, const char *job, const json_t *waits);
    /* Optional, with a shared store (jobs_cluster.c): tells the other
     * daemons KIND ARGS ("cancel JOB": a job one of them runs was cancelled
     * here). Best effort. */
    void (*publish)(void *ud, const char *kind, const char *args);
} jobs_hooks;

enum { LJ_QUEUED, LJ_RUNNING, LJ_ENDING };

/* Who jobs belong to, and their share of the queue (jobs_queue.c): each
 * tenant has a queue of its own (highest priority, then oldest, first), and
 * the tenants with queued jobs take turns by deficit round robin, WEIGHT
 * job starts per turn. Made on first use; kept as long as JS. */
struct jobs_tenant {
    list_link link;            /* in js->tenants */
    list_link turn;            /* in js->active while it has queued jobs */
    char *name;
    int64_t weight;            /* job starts per turn (>= 1) */
    int64_t max_running;       /* 0: only the daemon's max_running */
    int64_t max_queued;        /* 0: only the daemon's max_queued */
    void **queue;              /* ljob heap */
    size_t nqueue, queue_cap;
    size_t nrunning;
    int64_t deficit;           /* starts left in its turn */
    bool in_turn;              /* got its weight for the turn at the front */
    uint64_t submitted, rejected; /* `stats` */
    uint64_t succeeded, failed, cancelled; /* ends committed, as jobs_counts */
};

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
    size_t heap_at;            /* index in its tenant's queue while queued */
    jobs_tenant *tenant;       /* borrowed: js's, outlives the job */
    int state;
    bool was_running;          /* resumed: the store already says running */
    char *traceparent;         /* owned: the stored W3C traceparent, or NULL (jobs_trace.c) */
    uint64_t accepted_ns;      /* unix ns it was accepted: where its job span starts */
    uint64_t queued_us, started_us; /* reactor clock: queued, started (0: not yet) */
    void *gen;                 /* the engine's token while running */
    engine_job_t *ej;          /* while running */
    lwaiter *waiters;          /* replies owed when it ends */
    server_conn_t **subs;      /* `events` subscribers (references) */
    size_t nsubs, subs_cap;
    struct ltok *toks;         /* subscribers that read its tokens (jobs_tokens.c) */
    size_t ntoks, toks_cap;
    store_state_t end_state;   /* the end being recorded (counted once on disk) */
    bool end_rejected;         /* the store refused its end; a failed one replaces it */
    bool has_budget;           /* its submit's budget (jobs_budget.c): */
    double budget_usd;         /* what its provider calls may cost at most */
    json_t *prev_waits;        /* owned: the waits it had when a signal or deadline
                                  woke it (jobs_wait.c), or NULL */
    uint64_t relay_until_us;   /* reactor clock: its live events go to the daemons
                                  watching it until then (jobs_cluster.c) */
    int unsettled;             /* checkpoints handed to the store, not yet answered */
    bool durable_wanted;       /* the engine waits for them (on_durable) */
    bool gone;                 /* shared store: another daemon runs it now (its lease
                                  was lost) or ended it; it leaves unrecorded and its
                                  waiters wait for the end elsewhere (jobs_cluster.c) */
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
    tracer_t *tracer;          /* borrowed: where job spans go (set by the daemon), or NULL */
    bool stopping;             /* no new job starts (SIGTERM) */
    bool hard_stop;            /* running jobs are abandoned, unrecorded */
    reactor_timer_t *pump_timer; /* a freed slot's queued job starts on the next pass */
    /* live jobs */
    ljob **table;              /* hash of live jobs by id */
    size_t table_size, njobs;
    list_link tenants;         /* jobs_tenant.link: every tenant seen */
    list_link active;          /* jobs_tenant.turn: tenants with queued jobs, in turn order */
    size_t nqueue;             /* queued jobs of every tenant */
    list_link running;         /* ljob.run */
    size_t nrunning;
    uint64_t seq;
    jobs_counts counts;
    server_conn_t **subs;      /* `events` subscribers of every job (references) */
    size_t nsubs, subs_cap;
    struct jobs_tenant_sub *tsubs; /* `events` subscribers of every job of one tenant */
    size_t ntsubs, tsubs_cap;
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
    /* jobs whose resume waits for their crash count to be on disk
     * (jobs_quarantine.c), and the waits that came for them meanwhile */
    size_t held;
    struct jobs_held_wait *held_waits;
    /* waits for jobs parked on their batch lines (jobs_bwait.c) */
    struct jobs_bwait *bwaits;
    /* waiting jobs (jobs_wait.c): one timer for the earliest deadline */
    reactor_timer_t *wait_timer;
    /* `events` subscribers of jobs another daemon runs (jobs_cluster.c) */
    struct jobs_rsub *rsubs;
    reactor_timer_t *rearm_timer; /* a coalesced jobs_waits_arm after another daemon parked */
};

/* Whether every wait of WAITS (a job object's, borrowed) is a provider
 * batch line's: such a parked job goes on by itself (jobs_bwait.c). */
bool jobs_only_batch_waits(const json_t *waits);

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

/* ---- jobs_wait.c: jobs parked on `wait_for` nodes
 *
 * A run that only has waits left parks (engine_job_waits): the job is
 * recorded waiting with its waits and deadlines and leaves memory. A
 * signal, or a deadline passing, writes the wait's checkpoint record and
 * makes it queued again; its next run replays every finished step. */
/* The `signal` op (already validated): see docs/protocol.md. */
void jobs_signal(jobs_t *js, server_conn_t *conn, json_t *id, const char *job,
                 const char *signal, json_t *data);
/* Arms the timer of the earliest deadline of the waiting jobs of the store
 * (at resume, and whenever a job parks or wakes). */
void jobs_waits_arm(jobs_t *js);
/* Waiting job JOB has batch waits ({key, node, batch, seq}, no signal)
 * whose lines are done, or lost: it is made queued and loaded to run, and
 * its run looks its lines up again (no record is written: the lines'
 * results are the batch manager's). 0 when woken; 1 when JOB is not
 * waiting (live already, ended, or unknown): nothing to do; -1 logged. */
int jobs_wake_batch(jobs_t *js, const char *job);
/* Sends event EV (stolen) of JOB to those who listen: its own subscribers
 * while it is live, and those of every job (or of its tenant) always, so a
 * waiting job's events reach `events` without a job. */
void jobs_event(jobs_t *js, const char *job, json_t *ev);

/* ---- jobs_budget.c: a submit's `budget` */
/* *USD from a submit's budget B (borrowed, may be NULL: none, *USD -1):
 * 0, or -1 with why in MSG when B is not {"usd": N}, 0 <= N <= 1e12. */
int jobs_budget_parse(const json_t *b, double *usd, char *msg, size_t msglen);
/* J's budget from B (a stored job's `budget`, borrowed, may be NULL). */
void jobs_budget_set(ljob *j, const json_t *b);

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
/* The `submit` op (already validated, and allowed for TENANT, borrowed;
 * NULL: "default"): see docs/protocol.md. */
void jobs_submit(jobs_t *js, server_conn_t *conn, json_t *req, const char *tenant);
void jobs_wait(jobs_t *js, server_conn_t *conn, json_t *id, const char *job, double timeout_s,
               bool as_submit);
void jobs_cancel(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);
void jobs_subscribe(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);
/* `events` for every job of TENANT (borrowed; copied) only. */
void jobs_subscribe_tenant(jobs_t *js, server_conn_t *conn, json_t *id, const char *tenant);
/* `events` with `tokens: true` (after jobs_subscribe for the same job):
 * CONN, if now subscribed to live job JOB, also gets its `token` events;
 * the job's calls stream while anyone does. */
void jobs_tokens_add(jobs_t *js, server_conn_t *conn, const char *job);
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

/* ---- jobs_cluster.c: beside other daemons on a shared (PostgreSQL) store.
 * Each is called by the daemon's top with what daemon/cluster learnt. */
/* How many more jobs this daemon would take over now: at most
 * max_running a claim, within max_queued; 0 while stopping. */
size_t jobs_capacity(const jobs_t *js);
/* Jobs this daemon claimed (store job objects, borrowed): each is loaded
 * from its checkpoints, as at a restart, and queued; waits and
 * subscriptions kept here for them move to them. */
void jobs_adopt(jobs_t *js, const json_t *jobs);
/* Another daemon (NODE) checkpointed step KEY of JOB, or ended it (STATE):
 * the subscribers and waits kept here for it are told. */
void jobs_remote_step(jobs_t *js, const char *node, const char *job, const char *key);
void jobs_remote_end(jobs_t *js, const char *job);
/* JOB was cancelled by another daemon: if it runs here, it stops now. */
void jobs_remote_cancel(jobs_t *js, const char *job);
/* Another daemon parked a job: its deadline is watched here too. */
void jobs_remote_parked(jobs_t *js);
/* The safety net beside notifications: every wait and subscription kept
 * for a job run elsewhere is checked against the store. */
void jobs_remote_poll(jobs_t *js);
/* J's lease is lost (-ESTALE) or it ended elsewhere (-EALREADY): it stops
 * here without recording anything; its waiters wait for its end elsewhere. */
void jobs_lease_lost(jobs_t *js, ljob *j, const char *why);
/* Keeps CONN's `events` subscription to JOB (run elsewhere): 0 or -ENOMEM.
 * The daemon running JOB is asked (publish "watch JOB", again at each poll)
 * to relay its live events. */
int jobs_rsub_add(jobs_t *js, server_conn_t *conn, const char *job);
/* NODE has subscribers to JOB: if it runs here, its live events are
 * published ("event JOB EVENT") for JOBS_WATCH_US from now. */
void jobs_remote_watch(jobs_t *js, const char *node, const char *job);
/* NODE, which runs JOB, relayed EVENT (JSON text): this daemon's
 * subscribers to JOB get it, with "daemon": NODE. */
void jobs_remote_event(jobs_t *js, const char *node, const char *job, const char *event);
/* Drops CONN's (every one when NULL) subscriptions to jobs run elsewhere. */
void jobs_rsub_drop(jobs_t *js, server_conn_t *conn);
/* Moves J's waiters to waits kept by id (jobs_bwait.c) until its end
 * elsewhere, and its subscribers to subscriptions by id. */
void jobs_hand_off(jobs_t *js, ljob *j);

/* ---- jobs_queue.c: the table by id and the tenants' queues */
int jobs_table_grow(jobs_t *js);
int jobs_table_add(jobs_t *js, ljob *j);
void jobs_table_del(jobs_t *js, ljob *j);
/* Queues J (its tenant set) in its tenant's queue. 0 or -ENOMEM. */
int jobs_queue_push(jobs_t *js, ljob *j);
/* Takes queued J out of the queue (cancelled, or started). */
void jobs_queue_remove(jobs_t *js, ljob *j);
/* The job that starts next (borrowed, still queued), or NULL when every
 * tenant with queued jobs is at its max_running: the front tenant's best
 * job, the turn passing on once a tenant used its weight. jobs_queue_take
 * must follow before anything else changes the queue. */
ljob *jobs_queue_next(jobs_t *js);
/* Takes J, which jobs_queue_next just returned, out of the queue, counting
 * it against its tenant's turn. */
void jobs_queue_take(jobs_t *js, ljob *j);
/* The tenant NAME (NULL: "default"), made with weight 1 and no limits on
 * first use (borrowed: JS owns it). NULL when out of memory. */
jobs_tenant *jobs_tenant_get(jobs_t *js, const char *name);
/* Sets NAME's weight (>= 1) and limits (0: none); a reload first puts
 * every tenant back to the defaults with jobs_tenants_reset. 0 or -ENOMEM. */
int jobs_tenant_set(jobs_t *js, const char *name, int64_t weight, int64_t max_running,
                    int64_t max_queued);
void jobs_tenants_reset(jobs_t *js);
/* Frees every tenant (jobs_fini, once no job is left). */
void jobs_tenants_free(jobs_t *js);
/* `stats.tenants`: {NAME: {running, queued, weight, submitted, rejected}}
 * of every tenant, or of ONLY when it is not NULL. A new reference. */
json_t *jobs_tenants_json(const jobs_t *js, const char *only);

#endif
