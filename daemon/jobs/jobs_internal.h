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
