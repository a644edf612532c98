/* jobs_internal.h -- what jobs.c (the life of a job) and jobs_reply.c (the
 * replies and events owed to clients) share. Not for other modules. */
#ifndef LOOM_DAEMON_JOBS_INTERNAL_H
#define LOOM_DAEMON_JOBS_INTERNAL_H

#include "daemon/jobs/jobs.h"

struct lwaiter {
    lwaiter *next;
    jobs_t *js;
    ljob *job;
    server_conn_t *conn;       /* reference */
    json_t *id;                /* the request's id (reference) or NULL */
    reactor_timer_t *timer;    /* the wait's timeout, or NULL */
    int kind;                  /* W_WAIT, W_SUBMIT or W_CANCEL */
};

enum { W_WAIT, W_SUBMIT, W_CANCEL };

/* A `wait` for a job that is unfinished in the store but not live yet: its
 * resume waits for its crash count to be stored. It becomes an ordinary
 * waiter once the job is live (its timeout counted from then), or is
 * answered from the store if the job is not resumed. */
struct jobs_held_wait {
    struct jobs_held_wait *next;
    server_conn_t *conn;       /* reference */
    json_t *id;                /* the request's id (reference) or NULL */
    char job[STORE_ID_SIZE];
    double timeout_s;
};

/* jobs_cluster.c: publishes EV (borrowed; "job" and "time_ms" set) of J,
 * which runs here, for the daemons watching J (jobs_remote_watch). */
void jobs_relay(jobs_t *js, ljob *j, const json_t *ev);

/* jobs.c: whether the queue (all of it, or tenant T's share; T may be NULL)
 * is full; if so, answers ID on CONN with queue_full and counts the refusal. */
bool jobs_queue_refuses(jobs_t *js, jobs_tenant *t, server_conn_t *conn, json_t *id);

/* jobs_reply.c: hands the held waits for JOB to it now that it is live, or
 * answers them from the store (JOB NULL: every one, at the end). */
void jobs_release_held_waits(jobs_t *js, const char *job);

/* jobs_bwait.c: waits for jobs parked on their batch lines, which go on by
 * themselves (see there). */
/* Keeps a wait (W_WAIT or W_SUBMIT; CONN and ID referenced) for JOB, parked
 * on its batch lines, until DEADLINE_US (reactor clock; 0: none), when it is
 * answered from the store as timed out. 0 or -ENOMEM. */
int jobs_bwait_add(jobs_t *js, server_conn_t *conn, json_t *id, const char *job, int kind,
                   uint64_t deadline_us);
/* Hands the waits kept for J's id to J, woken, as ordinary waiters with
 * the time they have left. */
void jobs_bwait_take(jobs_t *js, ljob *j);
/* Drops the waits of CONN (closed); CONN NULL: every one, answered
 * shutting_down (the daemon stops). */
void jobs_bwait_drop(jobs_t *js, server_conn_t *conn);
/* Answers the waits kept for JOB from the store if it is over there. */
void jobs_bwait_end(jobs_t *js, const char *job);
/* jobs_bwait_end for every job with kept waits that is not live here (at
 * most 64 jobs a call; the poll runs again). */
void jobs_bwait_poll(jobs_t *js);

/* A subscriber to every job of one tenant. */
struct jobs_tenant_sub {
    server_conn_t *conn;       /* reference */
    char *tenant;              /* owned */
};
/* Drops CONN's tenant subscriptions (every one when NULL). */
void jobs_tsubs_drop(jobs_t *js, server_conn_t *conn);

/* ---- waits (jobs_wait.c) */
/* J's run parked on WAITS (borrowed; engine_job_waits): records it waiting
 * and frees J once that is on disk. */
void jobs_park(jobs_t *js, ljob *j, json_t *waits);
/* Cancels the waiting (not live) job OBJ (a stored job object, borrowed),
 * answering ID on CONN. */
void jobs_cancel_waiting(jobs_t *js, server_conn_t *conn, json_t *id, const json_t *obj);
/* jobs_cluster.c: cancels JOB, queued or running on another daemon of a
 * shared store: its end is recorded here (the store does not fence a
 * cancel), that daemon is told to stop it, and ID on CONN is answered
 * once the end is on disk. */
void jobs_cancel_elsewhere(jobs_t *js, server_conn_t *conn, json_t *id, const char *job);
/* jobs.c: frees J, which is in no queue and not running. */
void jobs_forget(jobs_t *js, ljob *j);

/* ---- traces (jobs_trace.c) */
/* The traceparent a submit stores: GIVEN (already validated; copied), or,
 * when tracing is on and it gave none, one made for the job (trace.h). A
 * new string, or NULL for none (or out of memory). */
char *jobs_trace_parent_for(const jobs_t *js, const char *given);
/* J's stored TRACEPARENT (copied; may be NULL) and the time it was
 * accepted (unix ms; 0: now), where its job span starts. 0 or -1 (out of
 * memory: no traceparent). */
int jobs_trace_set(ljob *j, const char *traceparent, int64_t accepted_ms);
/* The context J's run gets (engine_job_options.job_span) into OUT: its job
 * span's with a tracer, its stored traceparent as is without. False: none. */
bool jobs_trace_context(const jobs_t *js, ljob *j, trace_ctx *out);
/* J ended with OUT (not abandoned): its job span goes to the tracer. */
void jobs_trace_end(jobs_t *js, const ljob *j, const store_outcome_t *out);

/* ---- events (jobs_reply.c) */
/* Adds CONN (a reference is taken) to the subscribers *V once: 1 when it
 * was there already, 0 when added, -ENOMEM. */
int jobs_subs_add(server_conn_t ***v, size_t *n, size_t *cap, server_conn_t *conn);
/* Drops CONN (every subscriber when NULL) from V, releasing its reference. */
void jobs_subs_drop(server_conn_t **v, size_t *n, server_conn_t *conn);
/* Sends EV (stolen) to J's subscribers and to those of every job. */
void jobs_emit(jobs_t *js, ljob *j, json_t *ev);
/* Whether anyone listens to J's events. */
bool jobs_watched(jobs_t *js, ljob *j);

/* ---- token streams (jobs_tokens.c) */
/* J started on its engine: its calls stream if anyone reads its tokens. */
void jobs_tokens_started(ljob *j);
/* Sends every token J's readers hold back (before any other event of J). */
void jobs_tokens_flush(ljob *j);
/* CONN no longer reads J's tokens. */
void jobs_tokens_drop(ljob *j, server_conn_t *conn);
/* Frees J's readers (the job is going). */
void jobs_tokens_free(ljob *j);

/* ---- replies (jobs_reply.c) */
/* The job ID's object from the store (new reference), or NULL. */
json_t *jobs_job_object(jobs_t *js, const char *id);
void jobs_waiter_free(lwaiter *w);
/* Answers W (taken off its job by the caller) from OBJ (borrowed, may be
 * NULL) and frees it. */
void jobs_waiter_answer(lwaiter *w, json_t *obj, bool timed_out);
/* Adds a waiter of KIND for CONN's request ID on J, with a timeout in
 * seconds (< 0: none). 0 or -ENOMEM. */
int jobs_add_waiter(jobs_t *js, ljob *j, server_conn_t *conn, json_t *id, int kind,
                    double timeout_s);

#endif
