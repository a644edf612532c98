/* pgconn.h -- one asynchronous PostgreSQL connection driven by the reactor:
 * queries with callbacks, LISTEN with a callback per notification, and
 * reconnection with backoff. Nothing here ever blocks the reactor thread:
 * connecting uses PQconnectStart/PQconnectPoll, queries PQsendQueryParams,
 * and the socket is watched with reactor_add_fd.
 *
 * Owns: the PGconn, its socket's registration, the queue of queries.
 * May call: libpq, daemon/core (reactor, log), libc.
 * Must never call: the store, jobs, the engine.
 *
 * Why: the cluster's notifications (LISTEN/NOTIFY) and the shared rate
 * limits need PostgreSQL round trips from the reactor thread, and a
 * PostgreSQL restart must not stall the daemon: while the connection is
 * down, queries fail at once (their callback runs with RES NULL) and the
 * connection is retried every 100 ms doubling to 2 s.
 *
 * Threads: the reactor thread only. */
#ifndef LOOM_DAEMON_PGCONN_H
#define LOOM_DAEMON_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"

typedef struct pgconn pgconn_t;

/* A query's answer: RES (borrowed for the call; PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK, else an error result) or NULL when the connection was
 * down or failed before the answer, with ERR (one line, borrowed) saying
 * why; ERR is also the first line of an error result's message, and NULL
 * with a success. Runs on the reactor thread, never inside pgconn_query
 * itself. Callbacks (these and the options' hooks) may queue queries but
 * must not free the connection. */
typedef void (*pgconn_result_fn)(void *ud, const PGresult *res, const char *err);

/* A NOTIFY on one of the channels listened to: CHANNEL, PAYLOAD borrowed. */
typedef void (*pgconn_notify_fn)(void *ud, const char *channel, const char *payload);

/* The connection came up (UP true: LISTEN is in force again; notifications
 * may have been missed while it was down, so poll) or went down. */
typedef void (*pgconn_state_fn)(void *ud, bool up);

typedef struct pgconn_options {
    const char *conninfo;        /* a libpq URI or keyword string (copied) */
    const char *password_file;   /* NULL: libpq's own; else first line used */
    const char *const *listen;   /* NULL-terminated channels to LISTEN on, or NULL */
    pgconn_notify_fn on_notify;  /* NULL: none */
    pgconn_state_fn on_state;    /* NULL: none */
    void *ud;
    const char *name;            /* for log lines ("cluster", "limits") */
} pgconn_options;

/* Starts connecting (asynchronously) and returns at once. NULL with errno
 * set (ENOMEM, EINVAL). R and LOG are borrowed and must outlive it. */
pgconn_t *pgconn_new(reactor_t *r, log_sink *log, const pgconn_options *o);

/* Sends SQL with NPARAMS text parameters (copied) when the connection is
 * up and the queries before it are answered (one at a time, in order). CB
 * (may be NULL) runs exactly once. 0, or -ENOMEM (CB never runs). While
 * the connection is down, CB runs on the next reactor pass with RES NULL. */
int pgconn_query(pgconn_t *c, const char *sql, int nparams, const char *const *params,
                 pgconn_result_fn cb, void *ud);

/* Whether the connection is up now. */
bool pgconn_up(const pgconn_t *c);

/* Closes the connection; queued queries' callbacks run with RES NULL and
 * ERR "closing" before it returns. NULL is a no-op. */
void pgconn_free(pgconn_t *c);

#endif
