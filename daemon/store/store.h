/* store.h -- the durable job store: jobs and finished steps in SQLite.
 *
 * Owns: the SQLite database in its directory (two connections, the
 * statement caches), the lock file, the store thread and its write queue.
 * May call: daemon/core (the reactor, to hand completions back), common/,
 * libc, pthreads, SQLite and jansson.
 * Must never call: the engine, the server, wfdir, jobs or loomd: it stores
 * what it is given and knows nothing of who asks.
 *
 * Why it looks like this: a submit may be acknowledged only once its job row
 * is on disk, and every finished step is checkpointed, yet the reactor thread
 * must never wait for an fsync. So writes are queued (from any thread) and
 * applied by one store thread, which takes everything queued and commits it
 * in one transaction: many records, one fsync. Each write's completion then
 * runs on the reactor thread, after its transaction has committed, so a
 * completion with status 0 means "it is on disk". Reads are quick synchronous
 * queries on a second, read-only connection, made from the reactor thread;
 * WAL lets them run beside the writer and they see every committed write.
 *
 * On disk: DIR/loom.db (+ its -wal and -shm files) and DIR/loom.lock, which
 * an open store holds with flock, so two daemons never resume the same jobs.
 *
 * Conventions:
 * - Functions returning int return 0 or a negative errno.
 * - Strings and json_t given to the store are borrowed for the call only:
 *   they are copied (JSON is serialised) before it returns.
 * - json_t handed back through an out-parameter is a new reference.
 * - Times are milliseconds since the Unix epoch (CLOCK_REALTIME); where a
 *   time argument is 0, the store uses the time of the call.
 * - ERR/ERRLEN, where present, receive one line for people on failure; ERR
 *   may be NULL. The store logs nothing and stores only what it is given.
 */
#ifndef LOOM_DAEMON_STORE_H
#define LOOM_DAEMON_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/reactor.h"

typedef struct store store_t;

/* ---- job ids
 *
 * 26 characters of Crockford base32: 48 bits of milliseconds, then 80 bits
 * from getrandom (ULID layout). Ids sort as text in the order they were
 * made: within one millisecond the random part is incremented instead of
 * redrawn, and a clock that steps back reuses the last time. */

#define STORE_ID_LEN 26
#define STORE_ID_SIZE (STORE_ID_LEN + 1)

/* The state of a monotonic generator. The fields are private; a zeroed
 * struct is ready for use. */
typedef struct store_id_gen {
    bool used;
    uint64_t last_ms;
    uint8_t last_random[10];
} store_id_gen_t;

/* Writes the next id after NOW_MS into OUT (NUL-terminated). Not thread-safe:
 * one generator per thread, or a lock around it. 0, -EOVERFLOW past the year
 * 10889, or the errno of a failing getrandom. */
int store_id_next(store_id_gen_t *gen, uint64_t now_ms, char out[STORE_ID_SIZE]);

/* Whether ID is a well-formed id, as store_id_next writes them. */
bool store_id_valid(const char *id);

/* A fresh id from S's own generator and the real-time clock. Any thread. */
int store_new_job_id(store_t *s, char out[STORE_ID_SIZE]);

/* CLOCK_REALTIME in milliseconds. */
int64_t store_now_ms(void);

/* ---- job states */

typedef enum store_state {
    STORE_QUEUED,
    STORE_RUNNING,
    STORE_SUCCEEDED,
    STORE_FAILED,
    STORE_CANCELLED,
    STORE_WAITING      /* parked on `wait_for` nodes: no run, only its record (v6) */
} store_state_t;

/* "queued", "running", "succeeded", "failed", "cancelled", "waiting" (static
 * strings), or NULL for a value out of range. */
const char *store_state_name(store_state_t state);

/* Parses one of those names into *OUT: 0 or -EINVAL. */
int store_state_parse(const char *name, store_state_t *out);

/* ---- opening and closing */

/* A schedule of injected I/O faults (store_vfs.c): tests only. */
typedef struct store_faults store_faults_t;

typedef struct store_options {
    int busy_timeout_ms; /* how long a write or read waits for a lock held by
                          * another process (a sqlite3 shell, a backup; on
                          * PostgreSQL a row another session locked: its
                          * lock_timeout); 0: 5000 */
    size_t max_batch;    /* most requests in one transaction; 0: no limit */
    store_faults_t *faults; /* tests only: the database's files go through a
                             * VFS that fails writes and syncs as this
                             * schedule says (borrowed; it must outlive the
                             * store). NULL: no faults; loomd sets it only under
                             * LOOM_TEST_STORE_FAULTS (docs/operations.md). */
    /* PostgreSQL only (ignored for a directory): */
    const char *node;          /* this daemon's name in the cluster, unique per
                                * daemon and stable across its restarts (it
                                * reclaims its own jobs at once); NULL:
                                * "HOSTNAME" */
    int64_t lease_ms;          /* how long a job's lease lasts without a
                                * heartbeat; 0: 10000. Heartbeats every third */
    const char *password_file; /* a file holding the password (first line);
                                * NULL: libpq's own (PGPASSWORD, PGPASSFILE,
                                * ~/.pgpass) */
} store_options_t;

/* ---- the shared backend: PostgreSQL (docs/scale-out.md)
 *
 * store_open's DIR may instead be a libpq URI (postgresql://... or
 * postgres://...): the same interface, the same semantics, with these
 * differences:
 * - Several daemons may open the same database. Each job is run by one
 *   daemon at a time, its owner, under a lease: the job's row names the
 *   owner's node, an epoch and lease_until. The daemon that inserts a job
 *   owns it (epoch 1); store_wake_job and store_retry_job make the caller
 *   the owner (epoch + 1); store_claim_jobs takes over jobs whose lease
 *   expired (epoch + 1). The store thread renews every lease of its node
 *   every lease_ms / 3 in one statement. Leases are reckoned on the
 *   database server's clock, so daemons' clocks need not agree.
 * - Fencing: a set_running, checkpoint, set_waiting, finish or set_crashes
 *   (every write about a job except store_cancel_job, store_insert_job,
 *   store_wake_job and store_retry_job, which make the caller the owner) of
 *   a queued or running job commits only if the row still names this node
 *   and the epoch this store got it with (a job this store never got, by
 *   the node alone); otherwise it is refused with -ESTALE ("lease lost: job
 *   ID is run by NODE now") and changes nothing. A write to a waiting job is
 *   not fenced (a waiting job has no owner). store_cancel_job (any finish as
 *   cancelled) is not fenced: any daemon may cancel any job; its owner's
 *   later writes get -EALREADY. store_add_spend is about a tenant, not a
 *   job: never fenced.
 * - store_unfinished_jobs returns (and re-leases, epoch + 1) the unfinished
 *   jobs this node owned (a restart under the same node name resumes its own
 *   jobs at once), not every unfinished job of the database.
 * - Every committed insert, wake, retry, checkpoint and end is announced to
 *   every daemon with NOTIFY on channel "loom" in the same transaction, so
 *   it is sent only if it committed (payloads: STORE_NOTIFY_* below).
 * - A connection lost (PostgreSQL restarting) makes writes transient
 *   failures (-EIO): held writes wait and retry as for a full disk; reads
 *   fail -EIO and reconnect at the next call (at most once a second).
 * - Schema migrations are versioned (table loom_schema) and run under an
 *   advisory lock by whichever daemon gets there first; a database with a
 *   newer version than this code knows is refused (ENOTSUP).
 * - Provider batches (store_batch_*) are kept in PostgreSQL too.
 * - Job objects (store_get_job, store_claim_jobs...) also have the members
 *   node (the owner's node name, or null) and epoch; summaries have node. */

/* Whether LOCATION names a PostgreSQL store (postgresql:// or postgres://). */
bool store_location_is_pg(const char *location);

/* LOCATION with any password in it replaced by "***", into OUT (for logs and
 * errors: a store never puts a password anywhere). */
void store_location_redact(const char *location, char *out, size_t outlen);

/* Whether S is shared with other daemons (PostgreSQL). */
bool store_shared(const store_t *s);

/* S's node name ("" for SQLite). Borrowed for S's lifetime. */
const char *store_node(const store_t *s);

/* The lease length (ms) S runs with; 0 for SQLite. */
int64_t store_lease_ms(const store_t *s);

/* NOTIFY payloads on channel STORE_NOTIFY_CHANNEL: "KIND NODE ARGS", NODE
 * the daemon that sent it (a daemon ignores its own):
 *   new NODE JOB            a job was inserted (queued, owned by NODE)
 *   queued NODE JOB         a job was woken or retried
 *   step NODE JOB KEY       a step was checkpointed
 *   end NODE JOB STATE      a job finished (succeeded, failed, cancelled)
 *   waiting NODE JOB        a job parked (waiting)
 *   released NODE JOB       NODE let a job go unfinished (store_release_job):
 *                           any daemon may claim it now
 * and, sent by the cluster module (daemon/cluster/cluster.h), not the store:
 *   cancel NODE JOB         stop running JOB now (it was cancelled)
 *   signal NODE JOB NAME    a signal for a waiting job was recorded
 *   workflow NODE NAME VERSION   NODE loaded a new version of NAME
 *   watch NODE JOB          NODE has `events` subscribers to JOB, run elsewhere
 *   event NODE JOB EVENT    a live event of JOB (JSON), which NODE runs */
#define STORE_NOTIFY_CHANNEL "loom"

/* Claims for this node up to MAX jobs that are queued or running and whose
 * lease expired (their owner is gone), oldest (highest priority first)
 * first, with SELECT ... FOR UPDATE SKIP LOCKED, so two daemons never claim
 * the same job: each gets epoch + 1 and a fresh lease. Never this node's
 * own jobs (it still runs them, or resumes them at a restart through
 * store_unfinished_jobs), so a claim never hands a job it runs back to the
 * daemon running it. Queued: CB runs on
 * the reactor thread with the result: status 0 and JOBS (borrowed for the
 * call: an array of full job objects, as store_get_job, possibly empty), or
 * a negative errno and JOBS NULL. SQLite: -ENOTSUP, CB never runs. Returns
 * 0 or a negative errno (CB never runs). */
typedef void (*store_claim_cb)(void *ud, int status, const json_t *jobs);
int store_claim_jobs(store_t *s, size_t max, store_claim_cb cb, void *ud);

/* Opens the store in DIR, creating DIR (mode 0700, parent must exist) and
 * DIR/loom.db as needed, and starts the store thread. It does its disk
 * work on the calling thread: call it at startup. Completions are
 * delivered through R (borrowed; it must outlive the store). OPTIONS may be
 * NULL for the defaults. Returns a store to close with store_close, or NULL
 * with errno set and the reason in ERR:
 *   EBUSY    another open store (in any process) holds DIR
 *   ENOTSUP  loom.db has a newer schema version than this code knows
 *   EINVAL   loom.db is not a Loom state database (or bad arguments)
 *   EACCES, ENOTDIR, ENOSPC, EROFS, EIO ...  the directory or file is unusable */
store_t *store_open(const char *dir, reactor_t *r, const store_options_t *options,
                    char *err, size_t errlen);

/* Stops and frees S. Reactor thread, never from inside a store callback.
 * Every write already queued is committed (or fails) and its callback runs
 * before this returns, inside this call. A write queued from one of those
 * callbacks, or from any thread once closing has begun, is refused with
 * -ESHUTDOWN and its callback never runs. No other thread may use S after
 * this returns. NULL is a no-op. */
void store_close(store_t *s);

/* ---- writes: queued from any thread while S is open; committed by the
 * store thread; completed on the reactor thread
 *
 * Each write function returns 0 when the request was queued: CB then runs
 * exactly once, on the reactor thread, after the transaction holding the
 * request has committed (or failed). Otherwise it returns -EINVAL (bad
 * arguments: a missing field, a malformed job id, a state that is not
 * terminal), -EILSEQ (a JSON value that cannot be written as JSON text: a
 * string that is not valid UTF-8), -ENOMEM or -ESHUTDOWN (store_close has
 * begun), and CB never runs. CB may be NULL. Writes are applied in the
 * order they were queued.
 *
 * Held writes. A start, checkpoint or finish (the writes that record work
 * already done) that fails for want of the disk (-ENOSPC, -EIO, -EROFS,
 * -EBUSY, -ENOMEM, -EACCES: nothing about the request itself) is not
 * reported: it stays queued, in order and ahead of everything queued after
 * it, and is retried with backoff (50 ms doubling to 5 s) until it commits;
 * only then does its callback run. Meanwhile the store is "unavailable"
 * (store_unavailable). An insert or a purge failing that way is reported at
 * once (its caller may say "retry later"); a write refused because of its
 * own data (-E2BIG, -EINVAL, -ENOENT, -EEXIST, -EALREADY) is reported and
 * never retried. At store_close, writes still held after one last try are
 * reported with the status of that try.
 *
 * The status a callback sees:
 *   0          committed
 *   -ENOENT    no such job (set running, checkpoint, finish, cancel)
 *   -EALREADY  the job had already finished; nothing was changed
 *   -EEXIST    insert: a job with that id exists
 *   -EINVAL    a constraint of the schema refused the row
 *   -EBUSY     another process held the database locked past busy_timeout
 *   -E2BIG     a value is larger than SQLite allows (1 GB by default)
 *   -ENOSPC, -EIO, -ENOMEM, -EROFS  the transaction failed
 * A transaction that fails because of one request's data is rolled back
 * and, when more than one request was in it, each is retried in a
 * transaction of its own, so one bad request does not fail the others. */

/* -ESTALE (PostgreSQL only): the write was fenced: this daemon's lease on
 * the job is lost; another daemon runs it now. Never transient. */

/* Whether a write's STATUS means "not now": the disk, not the request
 * (-ENOSPC, -EIO, -EROFS, -EBUSY, -ENOMEM, -EACCES). */
bool store_status_transient(int status);

typedef struct store_result {
    int status;         /* as above */
    const char *job_id; /* the job the request was about; for an insert, the
                         * new job's id or, when EXISTED, the existing job's;
                         * NULL for a purge. Borrowed for the callback. */
    bool existed;       /* insert: the idempotency key was already taken;
                         * nothing was inserted */
    int64_t count;      /* purge: how many jobs were deleted */
    const char *error;  /* when status < 0, one line for people; else "".
                         * Borrowed for the callback. */
} store_result_t;

/* UD is the caller's pointer, RES is borrowed for the call. */
typedef void (*store_done_cb)(void *ud, const store_result_t *res);

typedef struct store_job_spec {
    const char *id;              /* NULL: a fresh id from S's generator */
    const char *workflow;        /* required, non-empty */
    const char *version;         /* NULL: none */
    const json_t *input;         /* any JSON value; NULL: null */
    int64_t priority;
    const char *idempotency_key; /* NULL: none. Unique across all jobs. */
    bool has_peer;               /* the submitter's credentials are known */
    uid_t peer_uid;
    gid_t peer_gid;
    pid_t peer_pid;
    int64_t created_ms;          /* 0: now */
    const char *source;          /* the text of workflow VERSION (its bytes, which
                                  * VERSION hashes), stored once per version so a
                                  * resumed job can compile the version it started
                                  * with; NULL: none. Copied only when the store
                                  * does not have it yet. */
    size_t source_len;
    const char *tenant;          /* who the job belongs to; NULL: "default" */
    const json_t *budget;        /* the submit's budget ({"usd": N}); NULL: none */
    const char *traceparent;     /* the W3C traceparent it came with; NULL: none */
} store_job_spec_t;

/* Inserts a queued job. If SPEC's idempotency key is already taken, nothing
 * is inserted and the result carries the existing job's id with EXISTED set
 * (the existing job's other fields are not compared). */
int store_insert_job(store_t *s, const store_job_spec_t *spec, store_done_cb cb, void *ud);

/* Marks a queued (or, after a restart, running) job running. STARTED_MS is
 * kept only if the job never started before. */
int store_set_running(store_t *s, const char *job_id, int64_t started_ms,
                      store_done_cb cb, void *ud);

/* Records (or replaces) the result of the step KEY of a job: KEY is opaque
 * to the store (the engine's node path, map index...). OUTPUT and ERROR
 * (either may be NULL) are any JSON values. Allowed in any job state
 * (PostgreSQL: not once the job finished, -EALREADY: with several daemons a
 * finished job was ended elsewhere, and its owner learns it here). */
int store_checkpoint_step(store_t *s, const char *job_id, const char *key,
                          const json_t *output, const json_t *error,
                          int64_t finished_ms, store_done_cb cb, void *ud);

typedef struct store_outcome {
    store_state_t state;  /* STORE_SUCCEEDED, STORE_FAILED or STORE_CANCELLED */
    const json_t *output; /* NULL: none */
    const json_t *error;  /* NULL: none; a typed error object by convention */
    const json_t *usage;  /* NULL: none; token usage per provider */
    int64_t finished_ms;  /* 0: now */
    bool has_cost;        /* COST is known (a job with no priced call: false) */
    double cost;          /* USD spent by the job's calls */
} store_outcome_t;

/* Parks a queued or running job: state waiting, with WAITS (borrowed; any
 * JSON, by convention an array of {key, signal, node, deadline_ms, seq,
 * schema?}) saying what it waits for. A held write, like a checkpoint. */
int store_set_waiting(store_t *s, const char *job_id, const json_t *waits, store_done_cb cb,
                      void *ud);

/* Makes a waiting job queued again (a signal or a deadline came); its waits
 * stay recorded, so deadlines of the waits still pending survive. -EALREADY:
 * the job is not waiting (the error text names its state). */
int store_wake_job(store_t *s, const char *job_id, store_done_cb cb, void *ud);

/* Finishes a queued, running or waiting job. A finished job never changes again:
 * finishing it twice gives -EALREADY. */
int store_finish_job(store_t *s, const char *job_id, const store_outcome_t *outcome,
                     store_done_cb cb, void *ud);

/* store_finish_job with STORE_CANCELLED, no output or error, now. */
int store_cancel_job(store_t *s, const char *job_id, store_done_cb cb, void *ud);

/* Lets go of JOB_ID (this node stops running it without an end: a hard
 * stop): its owner is cleared and its lease expired at once, so another
 * daemon may claim it without waiting (and this node's later writes of it
 * are fenced). Queued like a write; not fenced beyond "this node, this
 * epoch"; SQLite: a no-op that succeeds. */
int store_release_job(store_t *s, const char *job_id, store_done_cb cb, void *ud);

/* Records that the daemon died CRASHES times in a row while the job JOB_ID
 * was running plugin code, CRASH (may be NULL; any JSON) saying what ran at
 * the last one ({step, function, signal} by convention). A held write, like
 * a checkpoint; allowed while the job is queued or running (-EALREADY once
 * it finished). CRASHES 0 clears both. */
int store_set_crashes(store_t *s, const char *job_id, int64_t crashes, const json_t *crash,
                      store_done_cb cb, void *ud);

/* Makes a failed job queued again as a new attempt: its attempt number goes
 * up by one, its output, error, usage, finished_ms and crashes are cleared,
 * its checkpoints stay. -ENOENT: no such job; -EPERM: the job is not failed
 * (the error text names its state). */
int store_retry_job(store_t *s, const char *job_id, store_done_cb cb, void *ud);

/* Deletes every job that finished strictly before FINISHED_BEFORE_MS, with
 * its steps, and the workflow sources no job refers to any more. The
 * result's COUNT says how many jobs went. */
int store_purge_finished(store_t *s, int64_t finished_before_ms, store_done_cb cb, void *ud);

/* ---- reads: synchronous, reactor thread only (one thread at a time)
 *
 * A job object has the members id, workflow, version, input, state,
 * priority, idempotency_key, peer ({uid, gid, pid} or null), created_ms,
 * started_ms, finished_ms, output, error, usage, attempt (1, then one more
 * per store_retry_job), crashes and crash (store_set_crashes), tenant,
 * budget, traceparent, cost and waits (store_set_waiting); a member with no
 * value is null. A job
 * summary (from store_list_jobs) has only id, workflow, version, state,
 * priority, created_ms, started_ms, finished_ms, tenant and cost.
 * Errors: -ENOENT (store_get_job: no such job), -EBUSY, -EIO (including a
 * stored value that is no longer valid JSON), -ENOMEM. */

/* *JOB receives the job object (new reference). */
int store_get_job(store_t *s, const char *job_id, json_t **job, char *err, size_t errlen);

typedef struct store_list_query {
    const char *state;    /* NULL: any; else a state name (-EINVAL if not) */
    const char *workflow; /* NULL: any */
    const char *tenant;   /* NULL: any */
    const char *after;    /* NULL: from the start; else a cursor: the last id
                           * of the previous page */
    size_t limit;         /* 0: 100; at most 1000 (larger is clamped) */
    bool oldest_first;    /* default (false): newest first */
} store_list_query_t;

/* *JOBS receives an array (new reference) of at most LIMIT job summaries
 * matching Q, ordered by id: newest first, so AFTER selects ids below it,
 * or, with OLDEST_FIRST, oldest first and ids above AFTER. */
int store_list_jobs(store_t *s, const store_list_query_t *q, json_t **jobs, char *err,
                    size_t errlen);

/* *STEPS receives an object (new reference) mapping each checkpointed step
 * key of JOB_ID to {output, error, finished_ms}; empty when there are none
 * (also when there is no such job). */
int store_load_steps(store_t *s, const char *job_id, json_t **steps, char *err, size_t errlen);

/* Adds USD (>= 0) to what TENANT spent on provider calls in the UTC DAY
 * ("YYYY-MM-DD") and MONTH ("YYYY-MM") (all copied): the spend ledger that
 * keeps tenants' budgets across restarts (schema v5). A held write, like a
 * checkpoint. */
int store_add_spend(store_t *s, const char *tenant, const char *day, const char *month,
                    double usd, store_done_cb cb, void *ud);

/* The ledger's rows of DAY and MONTH, as a new object {TENANT: {PERIOD:
 * usd}} in *SPEND. 0, or a negative errno with the reason in ERR. */
int store_load_spend(store_t *s, const char *day, const char *month, json_t **spend, char *err,
                     size_t errlen);

/* The source text of workflow version VERSION, as stored with its jobs:
 * *TEXT (NUL-terminated, *LEN bytes before the NUL) and *WORKFLOW (the name
 * it was stored under, may be NULL) are new allocations to free(). -ENOENT
 * when the store does not have it. */
int store_get_source(store_t *s, const char *version, char **text, size_t *len,
                     char **workflow, char *err, size_t errlen);

/* *JOBS receives an array (new reference) of the full job objects of every
 * queued or running job, oldest first: what to resume after a restart. */
int store_unfinished_jobs(store_t *s, json_t **jobs, char *err, size_t errlen);

/* *JOBS receives an array (new reference) of the full job objects of every
 * waiting job, oldest first: whose deadlines to watch. */
int store_waiting_jobs(store_t *s, json_t **jobs, char *err, size_t errlen);

/* ---- provider batches (v7; daemon/batch/)
 *
 * What a provider batch needs to survive a restart: the batch (its name,
 * provider, kind, model, completion window and how far it got) and its
 * lines (which job step each custom_id stands for, the line's JSONL until
 * the batch is created, its result once the batch ended). The store keeps
 * them as given; what they mean is the batch manager's. Every write is a
 * held write, like a checkpoint. */

typedef struct store_batch_line {
    const char *custom_id;       /* unique within the batch */
    const char *job_id, *key;    /* the job step the line is for */
    const char *node;            /* NULL: none */
    int64_t attempt;
    const char *text;            /* the JSONL line, without its newline */
    size_t len;
} store_batch_line_t;

typedef struct store_batch_spec {
    const char *name;            /* "loom-" and an id */
    const char *provider, *model;
    const char *kind;            /* "chat" or "embed" */
    int64_t deadline_ms;         /* the completion window asked for */
    const store_batch_line_t *lines; /* in file order */
    size_t nlines;
} store_batch_spec_t;

/* Records a new batch (state "written") with its lines. */
int store_batch_insert(store_t *s, const store_batch_spec_t *spec, store_done_cb cb, void *ud);

/* What store_batch_update changes; a NULL member is left as it is. */
typedef struct store_batch_set {
    const char *state;           /* "written", "uploaded", "created" or "done" */
    const char *file_id;         /* the upload's id */
    const char *remote_id;       /* the provider's batch id */
    const char *remote_state;    /* what the provider says of it */
    bool drop_text;              /* forget the lines' JSONL (the batch was created) */
} store_batch_set_t;

/* Updates batch NAME as SET says. -ENOENT: no such batch. */
int store_batch_update(store_t *s, const char *name, const store_batch_set_t *set,
                       store_done_cb cb, void *ud);

/* One line's outcome: RESULT (the provider's result line, LEN bytes, JSON
 * text) or, when RESULT is NULL, CODE (a loom_errcode) and MESSAGE. */
typedef struct store_batch_outcome {
    const char *custom_id;
    const char *result;
    size_t len;
    int code;
    const char *message;
} store_batch_outcome_t;

/* Batch NAME ended as REMOTE_STATE: the outcome of each of its lines (N of
 * them) and the state "done", in one transaction. Outcomes of lines the
 * batch no longer has (their job was dropped) are ignored. */
int store_batch_finish(store_t *s, const char *name, const char *remote_state,
                       const store_batch_outcome_t *outcomes, size_t n, store_done_cb cb,
                       void *ud);

/* Deletes the lines of JOB_ID (NULL: of every job that has finished), then
 * every batch left without lines that nothing was sent of or that is done
 * (one that was sent and is not done is cancelled by its owner first, then
 * deleted with store_batch_delete). */
int store_batch_drop_job(store_t *s, const char *job_id, store_done_cb cb, void *ud);

/* Deletes batch NAME and its lines. */
int store_batch_delete(store_t *s, const char *name, store_done_cb cb, void *ud);

/* *BATCHES receives an array (new reference), oldest first, of every batch
 * with the lines of jobs that have not finished: {name, provider, kind,
 * model, deadline_ms, state, file_id, remote_id, remote_state, created_ms,
 * lines: [{custom_id, job, key, node, attempt, done, code}]} (lines in file
 * order; code null unless the line is done without a result; a member with
 * no value is null). */
int store_batch_load(store_t *s, json_t **batches, char *err, size_t errlen);

/* The JSONL of batch NAME: each line that still has its text, in file
 * order, each ending in a newline. *TEXT (NUL-terminated; free() it) and
 * *LEN. */
int store_batch_text(store_t *s, const char *name, char **text, size_t *len, char *err,
                     size_t errlen);

/* The outcome of line CUSTOM_ID of batch NAME: *RESULT (the parsed result
 * line, a new reference) or, when it has none, *RESULT NULL with *CODE and
 * MESSAGE. -ENOENT: no such line; -EAGAIN: the line is not done. */
int store_batch_result(store_t *s, const char *name, const char *custom_id, json_t **result,
                       int *code, char *message, size_t msglen, char *err, size_t errlen);

/* ---- counters */

typedef struct store_stats {
    uint64_t transactions;  /* transactions committed */
    uint64_t completed;     /* requests completed with status 0 */
    uint64_t failed;        /* requests completed with an error */
    uint64_t batch_retries; /* transactions rolled back and split up */
    size_t queued;          /* requests waiting for the store thread */
    size_t held;            /* held writes (see above); 0 when available */
    uint64_t held_tries;    /* failed tries of held writes, ever */
    int held_status;        /* while held: the last try's status (< 0) */
    int64_t retry_ms;       /* while held: the wait before the next try */
    char held_error[200];   /* while held: what the last try said */
    uint64_t read_reconnects; /* PostgreSQL: tries to reopen the reads' connection
                                 (each may hold the caller up to 2 s while the
                                 server is cut off); 0 with SQLite */
} store_stats_t;

/* A snapshot of S's counters. Any thread while S is open. */
void store_get_stats(store_t *s, store_stats_t *out);

/* FN(UD, seconds) on the store thread after each transaction commits, with
 * the time from its BEGIN to the end of its COMMIT (for a histogram; FN must
 * be cheap and thread-safe). NULL: none. Any thread; UD must outlive S or
 * the next call. */
typedef void (*store_commit_fn)(void *ud, double seconds);
void store_set_commit_observer(store_t *s, store_commit_fn fn, void *ud);

/* Whether S holds writes it cannot commit (disk full, I/O error, read-only);
 * if so, *RETRY_AFTER_MS (when not NULL) receives a hint of when to try
 * again and WHY (when not NULL) the last failure. Any thread while S is
 * open. */
bool store_unavailable(store_t *s, int64_t *retry_after_ms, char *why, size_t whylen);

/* What the store says of itself: whether it holds writes it cannot commit. */
typedef struct store_health {
    bool unavailable;
    size_t held;        /* writes held */
    int status;         /* while unavailable: the last try's status (< 0) */
    const char *error;  /* while unavailable: what the last try said, else "";
                         * borrowed for the call */
} store_health_t;

typedef void (*store_health_cb)(void *ud, const store_health_t *h);

/* CB (NULL: none) runs on the reactor thread after S starts holding writes
 * and after it has committed them all, with the state at the time it runs:
 * at most one call is pending, so a brief flap may be seen once or not at
 * all. Reactor thread; UD is the caller's, borrowed. */
void store_set_health_cb(store_t *s, store_health_cb cb, void *ud);

/* ---- injected faults (store_vfs.c), for tests
 *
 * A schedule is thread-safe and may change while a store uses it. Writes
 * and syncs are counted across every file of the database (main, WAL). */

typedef enum store_fault_on { STORE_FAULT_WRITE, STORE_FAULT_SYNC } store_fault_on_t;

/* A schedule that injects nothing yet, or NULL (out of memory). Free it
 * with store_faults_free after the store using it is closed. */
store_faults_t *store_faults_new(void);
void store_faults_free(store_faults_t *f);
/* From the NTH write (or sync) from now on (1: the next), every one fails
 * with the SQLite code SQLITE_RC (SQLITE_FULL, SQLITE_IOERR_WRITE,
 * SQLITE_READONLY...) until store_faults_heal. */
void store_faults_fail(store_faults_t *f, store_fault_on_t on, unsigned nth, int sqlite_rc);
/* No more faults from now on. */
void store_faults_heal(store_faults_t *f);
/* How many faults were injected so far. */
uint64_t store_faults_injected(store_faults_t *f);

#endif
