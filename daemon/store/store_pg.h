/* store_pg.h -- the store's PostgreSQL backend, private to daemon/store.
 *
 * store_pg.c owns the connections, the migrations, the store thread's side
 * of a batch of writes (one transaction), the heartbeat and the epoch map;
 * store_pg_read.c the reactor thread's reads; store_pg_batch.c the provider
 * batches. The writer connection belongs to the store thread (after
 * store_open), the reader to the reactor thread, as with SQLite. */
#ifndef LOOM_DAEMON_STORE_PG_H
#define LOOM_DAEMON_STORE_PG_H

#include <libpq-fe.h>

#include "daemon/store/store_internal.h"

/* The database server's clock in ms since the Unix epoch, in SQL. Leases
 * are reckoned on it alone, so daemons whose clocks disagree still agree
 * on when a lease ran out. */
#define STORE_PG_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

/* The schema version this code knows (table loom_schema). */
#define STORE_PG_SCHEMA_VERSION 1

/* How many statements a connection keeps prepared. */
#define STORE_PG_PREPARED 64

/* One PostgreSQL connection and when it was last (re)opened. */
typedef struct store_pg_conn {
    PGconn *conn;
    bool broken;         /* lost: reconnect before the next use */
    int64_t last_try_ms; /* CLOCK_MONOTONIC of the last connection attempt */
    /* the statements prepared on CONN, by the address of their text (a
     * string constant); statement I is named "lI". Emptied on reconnect. */
    const char *prepared[STORE_PG_PREPARED];
    int nprepared;
} store_pg_conn_t;

struct store_pg {
    char *uri;            /* the location as given (may hold a password: never print) */
    char *redacted;       /* the location for messages */
    char *password;       /* from password_file, or NULL (libpq's own) */
    char *node;
    int64_t lease_ms;
    int lock_timeout_ms;  /* busy_timeout_ms: a write waits this long for a
                           * row another program holds, then fails -EBUSY */
    store_pg_conn_t w;    /* store thread */
    store_pg_conn_t r;    /* reactor thread */
    /* job id -> the epoch this store holds it with (json integers), guarded
     * by the store's lock: filled by insert, claim, wake, retry and
     * unfinished_jobs, emptied by finish and release */
    json_t *epochs;
    int64_t next_heartbeat_ms; /* CLOCK_MONOTONIC; store thread only */
    atomic_uint_fast64_t heartbeats;
    /* The reads' reconnects (store_pg_reader, reactor thread): tried at
     * once when a live connection is found dead, then backing off (1 s,
     * doubling, at most 30 s) while they fail, for each try may hold the
     * reactor for connect_timeout when the server is cut off; at once again
     * when the writer connected since (the server is back). */
    int64_t read_retry_ms;
    uint64_t read_seen_writer;     /* writer_connects at the last try */
    atomic_uint_fast64_t writer_connects;
    atomic_uint_fast64_t read_reconnects; /* tries, for stats */
};

/* Opens both connections, runs the migrations and fills S->pg. */
int store_pg_open(store_t *s, const char *uri, const store_options_t *o, char *err,
                  size_t errlen);
/* Tries the reads made to reconnect (store_stats_t.read_reconnects). */
uint64_t store_pg_read_reconnects(store_t *s);
/* Closes the connections and frees S->pg. NULL-safe. */
void store_pg_close(store_t *s);

/* Store thread: store_db_apply's counterpart. */
void store_pg_apply(store_t *s, list_link *list);
/* Store thread: renews the leases of this node's jobs when due; returns the
 * CLOCK_MONOTONIC ms of the next one. */
int64_t store_pg_heartbeat(store_t *s, int64_t now_mono_ms);

/* Runs SQL with N text parameters (NULL: SQL NULL) on C; binary: the index
 * of one parameter sent in binary (LENGTHS gives its length), -1 none.
 * PREPARE: SQL is a string constant, prepared once per connection and
 * found again by its address (a statement built at run time: false).
 * Returns the result (PQclear it) or NULL when out of memory. */
PGresult *store_pg_exec(store_pg_conn_t *c, const char *sql, bool prepare, int n,
                        const char *const *values, const int *lengths, int binary,
                        int result_format);
/* The negative errno for a failed result R (or connection C's state):
 * -EEXIST, -ENOENT, -EINVAL, -E2BIG, -ENOSPC, -ENOMEM, -EIO, -EPROTO, or
 * -EAGAIN for a serialization failure or deadlock (retry). */
int store_pg_errno(PGconn *c, const PGresult *r);
/* Whether the result R is a success (command or rows). */
bool store_pg_ok(const PGresult *r);
/* One line about R's failure (or C's), without a newline. */
const char *store_pg_message(PGconn *c, const PGresult *r, char *buf, size_t len);

/* Reactor thread: a usable reader connection, reconnecting at most once a
 * second; NULL with -EIO and the reason in ERR. */
PGconn *store_pg_reader(store_t *s, char *err, size_t errlen, int *status);
/* Reactor thread: a failed read on the reader: marks it broken when the
 * connection went; returns the errno and puts "WHAT: why" into ERR. */
int store_pg_read_fail(store_t *s, PGresult *r, const char *what, char *err, size_t errlen);

/* Epoch map (any thread; takes the store's lock). */
void store_pg_epoch_set(store_t *s, const char *job_id, int64_t epoch);
void store_pg_epoch_drop(store_t *s, const char *job_id);
/* 0 when S holds no epoch for JOB_ID. */
int64_t store_pg_epoch_get(store_t *s, const char *job_id);

/* store_pg_read.c: a job object from row ROW of R (columns STORE_PG_JOB_COLUMNS). */
int store_pg_row_job(const PGresult *r, int row, json_t **out, char *err, size_t errlen);
#define STORE_PG_JOB_COLUMNS                                                                   \
    "id, workflow, version, input, state, priority, idempotency_key, peer_uid, peer_gid, "  \
    "peer_pid, created_ms, started_ms, finished_ms, output, error, usage, attempt, crashes, " \
    "crash, tenant, budget, traceparent, cost, waits, node, epoch"

/* The reads (store_read.c and store_batch.c dispatch to them). */
int store_pg_get_job(store_t *s, const char *job_id, json_t **job, char *err, size_t errlen);
int store_pg_list_jobs(store_t *s, const store_list_query_t *q, json_t **jobs, char *err,
                       size_t errlen);
int store_pg_unfinished_jobs(store_t *s, json_t **jobs, char *err, size_t errlen);
int store_pg_waiting_jobs(store_t *s, json_t **jobs, char *err, size_t errlen);
int store_pg_load_steps(store_t *s, const char *job_id, json_t **steps, char *err,
                        size_t errlen);
int store_pg_get_source(store_t *s, const char *version, char **text, size_t *len,
                        char **workflow, char *err, size_t errlen);
int store_pg_load_spend(store_t *s, const char *day, const char *month, json_t **spend,
                        char *err, size_t errlen);

/* store_pg_batch.c: runs batch request Q inside the writer's open
 * transaction: 0 or a negative errno (Q's error_text says why). */
int store_pg_batch_apply(store_t *s, store_req_t *q);
int store_pg_batch_load(store_t *s, json_t **batches, char *err, size_t errlen);
int store_pg_batch_text(store_t *s, const char *name, char **text, size_t *len, char *err,
                        size_t errlen);
int store_pg_batch_result(store_t *s, const char *name, const char *custom_id,
                          json_t **result, int *code, char *message, size_t msglen, char *err,
                          size_t errlen);

#endif
