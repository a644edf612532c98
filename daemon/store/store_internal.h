/* store_internal.h -- the store's private structures, shared by store*.c.
 *
 * store.c owns the queue, the thread and the hand-back to the reactor;
 * store_db.c owns SQLite (opening, schema, the write statements run by the
 * store thread); store_read.c the reactor thread's reads; store_id.c ids.
 * Each connection and its statement cache belongs to one thread: the writer
 * to the store thread (after store_open), the reader to the reactor thread. */
#ifndef LOOM_DAEMON_STORE_INTERNAL_H
#define LOOM_DAEMON_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "common/containers.h"
#include "daemon/store/store.h"

/* Bumped with every change to the schema in store_db.c. */
#define STORE_SCHEMA_VERSION 7
/* How many workflow versions a store remembers as stored. */
#define STORE_KNOWN_SOURCES 32
/* PRAGMA application_id: "LOOM", so another program's database is refused. */
#define STORE_APPLICATION_ID 0x4C4F4F4D

enum store_op {
    STORE_OP_INSERT,
    STORE_OP_RUNNING,
    STORE_OP_STEP,
    STORE_OP_FINISH,
    STORE_OP_PURGE,
    STORE_OP_CRASHES,
    STORE_OP_RETRY,
    STORE_OP_SPEND,
    STORE_OP_WAIT,   /* STATE waiting (with WAITS in output) or queued (a wake) */
    STORE_OP_BATCH,  /* a provider batch's record (store_batch.c; BATCH says which) */
    STORE_OP_CLAIM,  /* PostgreSQL: take over up to COUNT jobs whose lease expired */
    STORE_OP_RELEASE /* PostgreSQL: expire this node's lease on JOB_ID (SQLite: nothing) */
};

/* Write statements, prepared once on the writer connection. */
enum store_wstmt {
    STORE_W_BEGIN,
    STORE_W_COMMIT,
    STORE_W_ROLLBACK,
    STORE_W_FIND_KEY,
    STORE_W_INSERT,
    STORE_W_RUNNING,
    STORE_W_STEP,
    STORE_W_FINISH,
    STORE_W_STATE,
    STORE_W_PURGE,
    STORE_W_SOURCE,
    STORE_W_PURGE_SOURCES,
    STORE_W_CRASHES,
    STORE_W_RETRY,
    STORE_W_SPEND,
    STORE_W_WAIT,
    STORE_W_WAKE,
    STORE_W_COUNT
};

/* Read statements: the fixed ones, then the list variants, one per filter
 * (any combination of state, workflow and tenant) and order (newest,
 * oldest first). */
enum store_rstmt {
    STORE_R_GET,
    STORE_R_STEPS,
    STORE_R_UNFINISHED,
    STORE_R_SOURCE,
    STORE_R_SPEND,
    STORE_R_WAITING,
    STORE_R_LIST,
    STORE_R_COUNT = STORE_R_LIST + 16
};

/* store_batch.c's cached statements, beside the ones above. */
#define STORE_BATCH_W_COUNT 12
#define STORE_BATCH_R_COUNT 4

/* A provider batch request (store_batch.c queues them; store_batch.c and
 * store_pg_batch.c apply them). One line of a request: its strings live in
 * BUF (owned). */
enum sb_what { SB_INSERT, SB_UPDATE, SB_FINISH, SB_DROP_JOB, SB_DELETE };

typedef struct sb_item {
    char *buf;
    const char *custom_id, *job, *key, *node, *text, *message;
    size_t len;
    int64_t attempt;
    int code;
} sb_item;

struct store_batch_req {
    enum sb_what what;
    char *name, *provider, *model, *kind;
    int64_t deadline_ms;
    char *state, *file_id, *remote_id, *remote_state;
    bool drop_text;
    bool finished_jobs;          /* SB_DROP_JOB without a job: every finished one's */
    sb_item *items;
    size_t n;
};

struct store_pg;

/* One queued write. Strings are owned copies; JSON is already serialised. */
typedef struct store_req {
    list_link link;  /* in the queue, a batch, or the done list */
    enum store_op op;
    store_done_cb cb;
    void *ud;

    char job_id[STORE_ID_SIZE];
    char *workflow, *version, *idempotency_key, *step_key;
    char *input, *output, *error, *usage;
    char *tenant, *budget, *traceparent; /* insert (v4) */
    bool has_cost;   /* finish: COST (USD) is known */
    double cost;
    char *source;    /* insert: the workflow version's text, when the store
                      * may not have it yet; NULL otherwise */
    size_t source_len;
    int64_t priority;
    int64_t crashes;  /* STORE_OP_CRASHES: the count, and CRASH what ran at the last */
    char *crash;
    char *day, *month; /* STORE_OP_SPEND: the periods COST (USD) counts for, of TENANT */
    bool has_peer;
    int64_t peer_uid, peer_gid, peer_pid;
    int64_t time_ms; /* created, started, finished, or the purge cut-off */
    store_state_t state;
    struct store_batch_req *batch; /* STORE_OP_BATCH: what to write (owned) */
    store_claim_cb claim_cb;  /* STORE_OP_CLAIM: the caller's callback (CB is NULL) */
    json_t *jobs;             /* STORE_OP_CLAIM: the claimed jobs (owned), once done */
    int64_t epoch;            /* PostgreSQL: the job's epoch after this write (0: none) */
    bool lost_commit;         /* PostgreSQL: a COMMIT holding this write lost its
                               * connection: it may have committed */

    /* the result, written by the store thread */
    int status;
    bool existed;
    int64_t count;
    char result_id[STORE_ID_SIZE];
    char error_text[200];
} store_req_t;

struct store {
    char *dir;
    char *db_path;
    int lock_fd;
    size_t max_batch;
    int busy_timeout_ms;
    struct store_vfs *vfs; /* the fault VFS (tests), or NULL */
    struct store_pg *pg;   /* the PostgreSQL backend (store_pg.c), or NULL for SQLite */

    sqlite3 *wdb; /* store thread */
    sqlite3_stmt *wstmt[STORE_W_COUNT];
    sqlite3 *rdb; /* reactor thread */
    sqlite3_stmt *rstmt[STORE_R_COUNT];
    sqlite3_stmt *bwstmt[STORE_BATCH_W_COUNT]; /* store_batch.c's, on WDB */
    sqlite3_stmt *brstmt[STORE_BATCH_R_COUNT]; /* store_batch.c's, on RDB */

    pthread_t thread;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* signalled when work arrives or closing begins;
                           * waits on CLOCK_MONOTONIC (the backoff) */
    list_link queue; /* store_req_t.link, oldest first */
    size_t queued;
    reactor_handback_t done;
    bool closing;
    store_id_gen_t ids;
    uint64_t completed, failed;
    /* held writes (store.h): they are at the head of QUEUE */
    size_t held;
    uint64_t held_tries;
    int held_status;
    int64_t backoff_ms;   /* the current wait between tries; 0 when none held */
    int64_t retry_at_ms;  /* CLOCK_MONOTONIC: when the held writes go again */
    char held_error[200];
    /* workflow versions whose source is on disk (committed by the store
     * thread), so a submit need not copy it again; emptied when a purge is
     * queued, since that purge may delete them */
    char known_sources[STORE_KNOWN_SOURCES][17];
    size_t nknown_sources, next_known;
    list_link health;     /* in DONE while a health call is pending */
    store_health_cb health_cb; /* reactor thread only */
    void *health_ud;

    /* written by the store thread, read by anyone */
    atomic_uint_fast64_t transactions, batch_retries;
    /* store_set_commit_observer: UD is stored before FN (release), read
     * after it (acquire) */
    _Atomic(store_commit_fn) commit_obs;
    _Atomic(void *) commit_obs_ud;
};

/* What request OP does, as errors name it ("finish job"): static. */
const char *store_op_name(enum store_op op);

/* Formats one line into ERR (if any). */
void store_set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A negative errno for a SQLite (extended) result code. */
int store_errno_of(int sqlite_rc);

/* store_db.c: opens DB_PATH read-write, sets the pragmas and creates or
 * checks the schema. *DB is set even on failure (close it). */
int store_db_open_writer(const char *db_path, const char *vfs, int busy_timeout_ms,
                         sqlite3 **db, char *err, size_t errlen);
/* Opens the read-only connection (after the writer made the schema). VFS:
 * the name of the SQLite VFS to use, NULL for the default. */
int store_db_open_reader(const char *db_path, const char *vfs, int busy_timeout_ms,
                         sqlite3 **db, char *err, size_t errlen);

/* The cached statement IDX of CACHE, prepared from SQL on first use; NULL
 * with the SQLite code in *RC on failure. */
sqlite3_stmt *store_db_stmt(sqlite3 *db, sqlite3_stmt **cache, int idx, const char *sql,
                            int *rc);
/* Finalises N cached statements. */
void store_db_finalize(sqlite3_stmt **cache, size_t n);
/* Store thread: applies the requests of LIST (store_req_t.link), grouped
 * into as few transactions as it can, and fills in each one's result. */
void store_db_apply(store_t *s, list_link *list);

/* store_batch.c: runs batch request Q inside the open transaction (an
 * SQLite code, as the other requests' runners return). */
int store_batch_apply(store_t *s, store_req_t *q);
/* Frees a batch request's part. NULL is a no-op. */
void store_batch_req_free(struct store_batch_req *b);

/* store_vfs.c: registers a VFS of its own over the default one, failing as
 * FAULTS (borrowed) says; *OUT is freed by store_vfs_unregister. */
struct store_vfs;
int store_vfs_register(store_faults_t *faults, struct store_vfs **out, char *err, size_t errlen);
/* Its registered name (NULL for NULL). */
const char *store_vfs_name(const struct store_vfs *v);
void store_vfs_unregister(struct store_vfs *v);

#endif
