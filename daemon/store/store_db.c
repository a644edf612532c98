/* store_db.c -- SQLite for the store: opening, the schema, and the store
 * thread's side of group commit.
 *
 * A batch of requests runs in one BEGIN IMMEDIATE ... COMMIT. A request the
 * schema refuses (a constraint: unknown job, duplicate id) fails alone, since
 * SQLite undoes only that statement; anything that breaks the transaction
 * itself (I/O error, full disk, a trigger's RAISE(ROLLBACK), a failed COMMIT)
 * rolls it all back, and each request is then retried in a transaction of
 * its own, so the one that caused it fails and the others commit. */
#include "daemon/store/store_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Integrity lives in the schema, not only in the code: states are checked,
 * finished_ms is set exactly when the state is terminal, steps cannot
 * outlive their job. TEXT primary keys say NOT NULL because SQLite would
 * otherwise allow NULL in them.
 *
 * The state checks are written with OR, not IN (...): SQLite evaluates a
 * CHECK's IN list by building a temporary b-tree for every row written,
 * which made each write of a job cost a fresh page cache (v1). */
#define JOBS_TABLE(name)                                                                          \
    "CREATE TABLE " name " ("                                                                     \
    " id TEXT PRIMARY KEY NOT NULL,"                                                              \
    " workflow TEXT NOT NULL,"                                                                    \
    " version TEXT,"                                                                              \
    " input TEXT NOT NULL,"                                                                       \
    " state TEXT NOT NULL"                                                                        \
    "  CHECK (state = 'queued' OR state = 'running' OR state = 'succeeded'"                       \
    "         OR state = 'failed' OR state = 'cancelled' OR state = 'waiting'),"                  \
    " priority INTEGER NOT NULL DEFAULT 0,"                                                       \
    " idempotency_key TEXT UNIQUE,"                                                               \
    " peer_uid INTEGER, peer_gid INTEGER, peer_pid INTEGER,"                                      \
    " created_ms INTEGER NOT NULL,"                                                               \
    " started_ms INTEGER,"                                                                        \
    " finished_ms INTEGER,"                                                                       \
    " output TEXT, error TEXT, usage TEXT,"                                                       \
    " attempt INTEGER NOT NULL DEFAULT 1,"                                                        \
    " crashes INTEGER NOT NULL DEFAULT 0,"                                                        \
    " crash TEXT,"                                                                                \
    TENANT_COLUMNS                                                                                \
    " waits TEXT,"                                                                                \
    " CHECK ((state = 'queued' OR state = 'running' OR state = 'waiting')"                        \
    "        = (finished_ms IS NULL))"                                                            \
    ");"

#define JOBS_INDEXES                                                                              \
    "CREATE INDEX jobs_by_state ON jobs (state, id);"                                             \
    "CREATE INDEX jobs_by_workflow ON jobs (workflow, id);"                                       \
    "CREATE INDEX jobs_by_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;"         \
    JOBS_BY_VERSION JOBS_BY_TENANT

/* v4: who a job belongs to (its tenant, "default" without access rules),
 * the budget its submit gave (JSON), the W3C traceparent it was submitted
 * with, and what it cost in USD (set when it finishes; NULL: not priced). */
#define TENANT_COLUMNS                                                                            \
    " tenant TEXT NOT NULL DEFAULT 'default',"                                                    \
    " budget TEXT, traceparent TEXT, cost REAL,"
#define JOBS_BY_TENANT "CREATE INDEX jobs_by_tenant ON jobs (tenant, id);"

/* Which jobs use a version: a purge deletes the sources no job needs. */
#define JOBS_BY_VERSION "CREATE INDEX jobs_by_version ON jobs (version);"

/* The text of every workflow version a job refers to, by its hash (jobs.version),
 * so a job resumed after its file changed or vanished compiles the version it
 * started with (v3). */
#define SOURCES_TABLE                                                                             \
    "CREATE TABLE sources ("                                                                      \
    " hash TEXT PRIMARY KEY NOT NULL,"                                                            \
    " workflow TEXT NOT NULL,"                                                                    \
    " source BLOB NOT NULL,"                                                                      \
    " created_ms INTEGER NOT NULL"                                                                \
    ");"

/* v5: what each tenant spent on provider calls, per UTC day ("YYYY-MM-DD")
 * and month ("YYYY-MM"), so that its budgets hold across restarts. A
 * ledger of its own rather than a sum over jobs' costs: a job's cost is
 * written only when it ends, and a day's spend must count the calls of jobs
 * still running (or cut short by a crash), on the day each call was made. */
#define SPEND_TABLE                                                                               \
    "CREATE TABLE spend ("                                                                        \
    " tenant TEXT NOT NULL,"                                                                      \
    " period TEXT NOT NULL,"                                                                      \
    " usd REAL NOT NULL CHECK (usd >= 0),"                                                        \
    " PRIMARY KEY (tenant, period)"                                                               \
    ");"

/* v7: provider batches (daemon/batch/): each batch sent, or about to be
 * sent, to a provider's Batch API, and its lines: which job step each
 * custom_id stands for, the line's JSONL until the batch is created, and its
 * result (or why it has none) once the batch ended. No foreign key to jobs:
 * the batch manager drops a job's lines when the job ends, and a line's
 * result is read only by its job. STATE is the manager's: written,
 * uploaded (FILE_ID known), created (REMOTE_ID known), done (results
 * stored); REMOTE_STATE what the provider last said. */
#define BATCH_TABLES                                                                              \
    "CREATE TABLE batches ("                                                                      \
    " name TEXT PRIMARY KEY NOT NULL,"                                                            \
    " provider TEXT NOT NULL,"                                                                    \
    " kind TEXT NOT NULL CHECK (kind = 'chat' OR kind = 'embed'),"                                \
    " model TEXT NOT NULL,"                                                                       \
    " deadline_ms INTEGER NOT NULL,"                                                              \
    " state TEXT NOT NULL"                                                                        \
    "  CHECK (state = 'written' OR state = 'uploaded' OR state = 'created' OR state = 'done'),"   \
    " file_id TEXT, remote_id TEXT, remote_state TEXT,"                                           \
    " created_ms INTEGER NOT NULL,"                                                               \
    " CHECK (state = 'written' OR state = 'done' OR file_id IS NOT NULL OR remote_id IS NOT NULL)" \
    ");"                                                                                          \
    "CREATE INDEX batches_by_state ON batches (state, name);"                                     \
    "CREATE TABLE batch_lines ("                                                                  \
    " batch TEXT NOT NULL REFERENCES batches (name) ON DELETE CASCADE,"                           \
    " seq INTEGER NOT NULL,"                                                                      \
    " custom_id TEXT NOT NULL,"                                                                   \
    " job_id TEXT NOT NULL,"                                                                      \
    " key TEXT NOT NULL,"                                                                         \
    " node TEXT,"                                                                                 \
    " attempt INTEGER NOT NULL,"                                                                  \
    " line TEXT,"                                                                                 \
    " done INTEGER NOT NULL DEFAULT 0,"                                                           \
    " result TEXT, code INTEGER, message TEXT,"                                                   \
    " PRIMARY KEY (batch, custom_id)"                                                             \
    ");"                                                                                          \
    "CREATE UNIQUE INDEX batch_lines_by_seq ON batch_lines (batch, seq);"                         \
    "CREATE INDEX batch_lines_by_job ON batch_lines (job_id, key);"

static const char store_schema[] =
    JOBS_TABLE("jobs")
    JOBS_INDEXES
    "CREATE TABLE steps ("
    " job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    " key TEXT NOT NULL,"
    " output TEXT, error TEXT,"
    " finished_ms INTEGER NOT NULL,"
    " PRIMARY KEY (job_id, key)"
    ");"
    SOURCES_TABLE
    SPEND_TABLE
    BATCH_TABLES;

/* v1 -> v4: the jobs table rebuilt with the OR checks (SQLite cannot alter
 * a CHECK in place) and the columns of v3. Runs with foreign keys off, so
 * dropping the old table does not cascade into steps. */
static const char store_migrate_v1[] =
    JOBS_TABLE("jobs_v2")
    "INSERT INTO jobs_v2 (id, workflow, version, input, state, priority, idempotency_key,"
    " peer_uid, peer_gid, peer_pid, created_ms, started_ms, finished_ms, output, error, usage)"
    " SELECT id, workflow, version, input, state, priority, idempotency_key,"
    " peer_uid, peer_gid, peer_pid, created_ms, started_ms, finished_ms, output, error, usage"
    " FROM jobs;"
    "DROP TABLE jobs;"
    "ALTER TABLE jobs_v2 RENAME TO jobs;"
    JOBS_INDEXES
    SOURCES_TABLE
    SPEND_TABLE
    BATCH_TABLES;

/* v5 -> v6: the state 'waiting' and what a waiting job waits for (waits:
 * JSON). The state's CHECK cannot be altered in place, so the jobs table is
 * rebuilt, as in v1 -> v2 (foreign keys are off meanwhile). */
#define STORE_MIGRATE_V5                                                                          \
    JOBS_TABLE("jobs_v6")                                                                         \
    "INSERT INTO jobs_v6 (id, workflow, version, input, state, priority, idempotency_key,"        \
    " peer_uid, peer_gid, peer_pid, created_ms, started_ms, finished_ms, output, error, usage,"   \
    " attempt, crashes, crash, tenant, budget, traceparent, cost)"                                \
    " SELECT id, workflow, version, input, state, priority, idempotency_key,"                     \
    " peer_uid, peer_gid, peer_pid, created_ms, started_ms, finished_ms, output, error, usage,"   \
    " attempt, crashes, crash, tenant, budget, traceparent, cost FROM jobs;"                      \
    "DROP TABLE jobs;"                                                                            \
    "ALTER TABLE jobs_v6 RENAME TO jobs;"                                                         \
    JOBS_INDEXES
static const char store_migrate_v5[] = STORE_MIGRATE_V5 BATCH_TABLES;

/* v6 -> v7: the provider batches. */
static const char store_migrate_v6[] = BATCH_TABLES;

/* v4 -> v5: the spend ledger, then v6 and v7. */
static const char store_migrate_v4[] = SPEND_TABLE STORE_MIGRATE_V5 BATCH_TABLES;

/* v3 -> v4: tenants, budgets, trace parents and cost. */
#define STORE_MIGRATE_V3                                                                          \
    "ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';"                         \
    "ALTER TABLE jobs ADD COLUMN budget TEXT;"                                                    \
    "ALTER TABLE jobs ADD COLUMN traceparent TEXT;"                                               \
    "ALTER TABLE jobs ADD COLUMN cost REAL;"                                                      \
    JOBS_BY_TENANT
static const char store_migrate_v3[] = STORE_MIGRATE_V3 SPEND_TABLE STORE_MIGRATE_V5 BATCH_TABLES;

/* v2 -> v4: attempts and crash counts (the poison-job quarantine), and the
 * workflow sources (a job runs the version it started with), then v4. */
static const char store_migrate_v2[] =
    "ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN crash TEXT;"
    JOBS_BY_VERSION
    SOURCES_TABLE
    STORE_MIGRATE_V3
    SPEND_TABLE
    STORE_MIGRATE_V5
    BATCH_TABLES;


int store_errno_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_TOOBIG:
        return -E2BIG;
    case SQLITE_NOTADB:
        return -EINVAL;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return -ENOENT;
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return -EEXIST;
        return -EINVAL;
    default:
        return -EIO;
    }
}

sqlite3_stmt *store_db_stmt(sqlite3 *db, sqlite3_stmt **cache, int idx, const char *sql, int *rc)
{
    *rc = SQLITE_OK;
    if (!cache[idx])
        *rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &cache[idx], NULL);
    return cache[idx];
}

void store_db_finalize(sqlite3_stmt **cache, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_finalize(cache[i]);
        cache[i] = NULL;
    }
}

/* ---- opening */

/* Reports a failure to open or set up PATH, preferring the system's reason
 * (EACCES, ENOSPC...) to SQLite's vaguer "unable to open database file". */
static int store_db_open_error(sqlite3 *db, int rc, const char *path, const char *what,
                               char *err, size_t errlen)
{
    int sys = db ? sqlite3_system_errno(db) : 0;
    int e = store_errno_of(rc);
    if ((rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_IOERR)
        e = sys > 0 ? -sys : -EIO;
    if (sys > 0)
        store_set_error(err, errlen, "cannot %s state database %s: %s (%s)", what, path,
                        sqlite3_errstr(rc), strerror(sys));
    else
        store_set_error(err, errlen, "cannot %s state database %s: %s", what, path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return e ? e : -EIO;
}

/* The single integer a query such as a PRAGMA returns, in *OUT. */
static int store_db_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Creates the schema in an empty database, or checks that an existing one
 * is Loom's and not newer than this code. */
static int store_db_schema(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int64_t app = 0, version = 0, tables = 0;
    /* a migration drops and renames tables: foreign keys stay off until the
     * schema is settled (this pragma is a no-op inside a transaction) */
    int rc = sqlite3_exec(db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_db_open_error(db, rc, path, "lock", err, errlen);
    if ((rc = store_db_int(db, "PRAGMA application_id", &app)) != SQLITE_OK ||
        (rc = store_db_int(db, "PRAGMA user_version", &version)) != SQLITE_OK ||
        (rc = store_db_int(db, "SELECT count(*) FROM sqlite_master", &tables)) != SQLITE_OK) {
        rc = store_db_open_error(db, rc, path, "read", err, errlen);
        goto fail;
    }
    if ((app != 0 && app != STORE_APPLICATION_ID) || (app == 0 && (version != 0 || tables != 0))) {
        store_set_error(err, errlen, "%s is not a Loom state database (it belongs to another "
                        "program); use another state directory", path);
        rc = -EINVAL;
        goto fail;
    }
    if (version > STORE_SCHEMA_VERSION) {
        store_set_error(err, errlen, "state database %s has schema version %lld, newer than "
                        "the %d this loomd understands: it was written by a newer loomd; "
                        "upgrade loomd or use another state directory",
                        path, (long long)version, STORE_SCHEMA_VERSION);
        rc = -ENOTSUP;
        goto fail;
    }
    if (version == 0) {
        char pragmas[128];
        snprintf(pragmas, sizeof pragmas, "PRAGMA application_id = %d; PRAGMA user_version = %d;",
                 STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
        if ((rc = sqlite3_exec(db, store_schema, NULL, NULL, NULL)) != SQLITE_OK ||
            (rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL)) != SQLITE_OK) {
            rc = store_db_open_error(db, rc, path, "create the schema of", err, errlen);
            goto fail;
        }
    }
    if (version >= 1 && version < STORE_SCHEMA_VERSION) {
        char pragma[64], what[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d;", STORE_SCHEMA_VERSION);
        snprintf(what, sizeof what, "migrate (v%d to v%d) the schema of", (int)version,
                 STORE_SCHEMA_VERSION);
        /* each migration goes all the way to the current version */
        const char *sql = version == 1   ? store_migrate_v1
                          : version == 2 ? store_migrate_v2
                          : version == 3 ? store_migrate_v3
                          : version == 4 ? store_migrate_v4
                          : version == 5 ? store_migrate_v5
                                         : store_migrate_v6;
        if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK ||
            (rc = sqlite3_exec(db, pragma, NULL, NULL, NULL)) != SQLITE_OK) {
            rc = store_db_open_error(db, rc, path, what, err, errlen);
            goto fail;
        }
    }
    if ((rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK) {
        rc = store_db_open_error(db, rc, path, "write", err, errlen);
        goto fail;
    }
    if ((rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL)) != SQLITE_OK)
        return store_db_open_error(db, rc, path, "configure", err, errlen);
    return 0;
fail:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int store_db_open_writer(const char *db_path, const char *vfs, int busy_timeout_ms,
                         sqlite3 **db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(db_path, db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             vfs);
    if (rc != SQLITE_OK)
        return store_db_open_error(*db, rc, db_path, "open", err, errlen);
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, busy_timeout_ms);
    /* SQLite quietly opens a file it may not write read-only; every write
     * would then fail, so say so now. */
    if (sqlite3_db_readonly(*db, "main") == 1) {
        store_set_error(err, errlen, "cannot write state database %s: %s", db_path,
                        strerror(EACCES));
        return -EACCES;
    }

    /* journal_mode answers with the mode it ended up in: anything but "wal"
     * (a file system without shared memory, say) means no concurrent reads
     * and weaker crash behaviour, so refuse it. */
    rc = sqlite3_prepare_v2(*db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || strcmp(mode, "wal") != 0) {
            store_set_error(err, errlen, "state database %s cannot use WAL mode (got %s)",
                            db_path, mode ? mode : "nothing");
            sqlite3_finalize(st);
            return -EIO;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return store_db_open_error(*db, rc, db_path, "open", err, errlen);

    rc = sqlite3_exec(*db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;", NULL, NULL,
                      NULL);
    if (rc != SQLITE_OK)
        return store_db_open_error(*db, rc, db_path, "configure", err, errlen);
    return store_db_schema(*db, db_path, err, errlen);
}

int store_db_open_reader(const char *db_path, const char *vfs, int busy_timeout_ms,
                         sqlite3 **db, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(db_path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc != SQLITE_OK)
        return store_db_open_error(*db, rc, db_path, "open (for reading)", err, errlen);
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, busy_timeout_ms);
    return 0;
}

/* ---- the write requests (store thread) */

static const char *const store_wsql[STORE_W_COUNT] = {
    [STORE_W_BEGIN] = "BEGIN IMMEDIATE",
    [STORE_W_COMMIT] = "COMMIT",
    [STORE_W_ROLLBACK] = "ROLLBACK",
    [STORE_W_FIND_KEY] = "SELECT id FROM jobs WHERE idempotency_key = ?1",
    [STORE_W_INSERT] =
        "INSERT INTO jobs (id, workflow, version, input, state, priority, idempotency_key,"
        " peer_uid, peer_gid, peer_pid, created_ms, tenant, budget, traceparent)"
        " VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, coalesce(?11, 'default'),"
        " ?12, ?13)",
    [STORE_W_RUNNING] =
        "UPDATE jobs SET state = 'running', started_ms = coalesce(started_ms, ?2)"
        " WHERE id = ?1 AND state IN ('queued', 'running')",
    [STORE_W_STEP] =
        "INSERT INTO steps (job_id, key, output, error, finished_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
        " ON CONFLICT (job_id, key) DO UPDATE SET output = excluded.output,"
        " error = excluded.error, finished_ms = excluded.finished_ms",
    [STORE_W_FINISH] =
        "UPDATE jobs SET state = ?2, output = ?3, error = ?4, usage = ?5, finished_ms = ?6,"
        " cost = ?7 WHERE id = ?1 AND state IN ('queued', 'running', 'waiting')",
    [STORE_W_STATE] = "SELECT state FROM jobs WHERE id = ?1",
    [STORE_W_PURGE] = "DELETE FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms < ?1",
    [STORE_W_SOURCE] =
        "INSERT INTO sources (hash, workflow, source, created_ms) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (hash) DO NOTHING",
    [STORE_W_PURGE_SOURCES] =
        "DELETE FROM sources WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.version = sources.hash)",
    [STORE_W_CRASHES] =
        "UPDATE jobs SET crashes = ?2, crash = ?3 WHERE id = ?1 AND state IN ('queued', 'running')",
    [STORE_W_RETRY] =
        "UPDATE jobs SET state = 'queued', attempt = attempt + 1, output = NULL, error = NULL,"
        " usage = NULL, finished_ms = NULL, crashes = 0, crash = NULL, cost = NULL"
        " WHERE id = ?1 AND state = 'failed'",
    [STORE_W_SPEND] =
        "INSERT INTO spend (tenant, period, usd) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (tenant, period) DO UPDATE SET usd = usd + excluded.usd",
    [STORE_W_WAIT] =
        "UPDATE jobs SET state = 'waiting', waits = ?2 WHERE id = ?1 AND state IN ('queued', 'running')",
    [STORE_W_WAKE] = "UPDATE jobs SET state = 'queued' WHERE id = ?1 AND state = 'waiting'",
};


/* The cached write statement IDX, or NULL with the failure noted in Q. */
static sqlite3_stmt *store_db_w(store_t *s, enum store_wstmt idx, store_req_t *q, int *rc)
{
    sqlite3_stmt *st = store_db_stmt(s->wdb, s->wstmt, idx, store_wsql[idx], rc);
    if (!st && q)
        store_set_error(q->error_text, sizeof q->error_text, "%s %s: %s", store_op_name(q->op),
                        q->job_id, sqlite3_errmsg(s->wdb));
    return st;
}

static void store_bind_text(sqlite3_stmt *st, int i, const char *text)
{
    if (text)
        sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Steps a statement that returns no rows, then resets it. On failure the
 * message goes into Q (when there is one) before the reset can lose it. */
static int store_db_exec(store_t *s, sqlite3_stmt *st, store_req_t *q)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        rc = SQLITE_OK;
    else if (q)
        store_set_error(q->error_text, sizeof q->error_text, "%s %s: %s", store_op_name(q->op),
                        q->op == STORE_OP_PURGE ? ""
                        : q->op == STORE_OP_SPEND ? q->tenant : q->job_id,
                        sqlite3_errmsg(s->wdb));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/* A RUNNING, FINISH, CRASHES or RETRY update changed nothing: says why, in
 * Q's result. */
static int store_db_unchanged(store_t *s, store_req_t *q)
{
    int rc;
    sqlite3_stmt *st = store_db_w(s, STORE_W_STATE, q, &rc);
    if (!st)
        return rc;
    store_bind_text(st, 1, q->job_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && q->op == STORE_OP_WAIT && q->state == STORE_QUEUED) {
        q->status = -EALREADY;
        store_set_error(q->error_text, sizeof q->error_text, "job %s is %s, not waiting",
                        q->job_id, (const char *)sqlite3_column_text(st, 0));
        rc = SQLITE_OK;
    } else if (rc == SQLITE_ROW && q->op == STORE_OP_RETRY) {
        q->status = -EPERM;
        store_set_error(q->error_text, sizeof q->error_text, "job %s is %s, not failed",
                        q->job_id, (const char *)sqlite3_column_text(st, 0));
        rc = SQLITE_OK;
    } else if (rc == SQLITE_ROW) {
        q->status = -EALREADY;
        store_set_error(q->error_text, sizeof q->error_text, "job %s is already %s", q->job_id,
                        (const char *)sqlite3_column_text(st, 0));
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        q->status = -ENOENT;
        store_set_error(q->error_text, sizeof q->error_text, "no job %s", q->job_id);
        rc = SQLITE_OK;
    } else {
        store_set_error(q->error_text, sizeof q->error_text, "%s %s: %s", store_op_name(q->op),
                        q->job_id, sqlite3_errmsg(s->wdb));
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int store_db_insert(store_t *s, store_req_t *q)
{
    int rc;
    sqlite3_stmt *st;
    if (q->idempotency_key) {
        if (!(st = store_db_w(s, STORE_W_FIND_KEY, q, &rc)))
            return rc;
        store_bind_text(st, 1, q->idempotency_key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *id = (const char *)sqlite3_column_text(st, 0);
            snprintf(q->result_id, sizeof q->result_id, "%s", id ? id : "");
            q->existed = true;
        }
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            rc = SQLITE_OK;
        else
            store_set_error(q->error_text, sizeof q->error_text, "insert job %s: %s", q->job_id,
                            sqlite3_errmsg(s->wdb));
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_OK || q->existed)
            return rc;
    }
    if (q->source) {
        if (!(st = store_db_w(s, STORE_W_SOURCE, q, &rc)))
            return rc;
        store_bind_text(st, 1, q->version);
        store_bind_text(st, 2, q->workflow);
        sqlite3_bind_blob64(st, 3, q->source, q->source_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, q->time_ms);
        if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
            return rc;
    }
    if (!(st = store_db_w(s, STORE_W_INSERT, q, &rc)))
        return rc;
    store_bind_text(st, 1, q->job_id);
    store_bind_text(st, 2, q->workflow);
    store_bind_text(st, 3, q->version);
    store_bind_text(st, 4, q->input);
    sqlite3_bind_int64(st, 5, q->priority);
    store_bind_text(st, 6, q->idempotency_key);
    if (q->has_peer) {
        sqlite3_bind_int64(st, 7, q->peer_uid);
        sqlite3_bind_int64(st, 8, q->peer_gid);
        sqlite3_bind_int64(st, 9, q->peer_pid);
    }
    sqlite3_bind_int64(st, 10, q->time_ms);
    store_bind_text(st, 11, q->tenant);
    store_bind_text(st, 12, q->budget);
    store_bind_text(st, 13, q->traceparent);
    if ((rc = store_db_exec(s, st, q)) == SQLITE_OK)
        memcpy(q->result_id, q->job_id, sizeof q->result_id);
    return rc;
}

static int store_db_update(store_t *s, store_req_t *q)
{
    int rc;
    bool finish = q->op == STORE_OP_FINISH;
    sqlite3_stmt *st = store_db_w(s, finish ? STORE_W_FINISH : STORE_W_RUNNING, q, &rc);
    if (!st)
        return rc;
    store_bind_text(st, 1, q->job_id);
    if (finish) {
        store_bind_text(st, 2, store_state_name(q->state));
        store_bind_text(st, 3, q->output);
        store_bind_text(st, 4, q->error);
        store_bind_text(st, 5, q->usage);
        sqlite3_bind_int64(st, 6, q->time_ms);
        if (q->has_cost)
            sqlite3_bind_double(st, 7, q->cost);
    } else {
        sqlite3_bind_int64(st, 2, q->time_ms);
    }
    if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
        return rc;
    return sqlite3_changes(s->wdb) > 0 ? SQLITE_OK : store_db_unchanged(s, q);
}

static int store_db_mark(store_t *s, store_req_t *q)
{
    int rc;
    bool retry = q->op == STORE_OP_RETRY;
    sqlite3_stmt *st = store_db_w(s, retry ? STORE_W_RETRY : STORE_W_CRASHES, q, &rc);
    if (!st)
        return rc;
    store_bind_text(st, 1, q->job_id);
    if (!retry) {
        sqlite3_bind_int64(st, 2, q->crashes);
        store_bind_text(st, 3, q->crash);
    }
    if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
        return rc;
    return sqlite3_changes(s->wdb) > 0 ? SQLITE_OK : store_db_unchanged(s, q);
}

/* Parks (waits in Q's output) or wakes Q's job. */
static int store_db_wait(store_t *s, store_req_t *q)
{
    int rc;
    bool park = q->state == STORE_WAITING;
    sqlite3_stmt *st = store_db_w(s, park ? STORE_W_WAIT : STORE_W_WAKE, q, &rc);
    if (!st)
        return rc;
    store_bind_text(st, 1, q->job_id);
    if (park)
        store_bind_text(st, 2, q->output);
    if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
        return rc;
    return sqlite3_changes(s->wdb) > 0 ? SQLITE_OK : store_db_unchanged(s, q);
}

static int store_db_step(store_t *s, store_req_t *q)
{
    int rc;
    sqlite3_stmt *st = store_db_w(s, STORE_W_STEP, q, &rc);
    if (!st)
        return rc;
    store_bind_text(st, 1, q->job_id);
    store_bind_text(st, 2, q->step_key);
    store_bind_text(st, 3, q->output);
    store_bind_text(st, 4, q->error);
    sqlite3_bind_int64(st, 5, q->time_ms);
    rc = store_db_exec(s, st, q);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        store_set_error(q->error_text, sizeof q->error_text, "no job %s", q->job_id);
    return rc;
}

/* Adds Q's cost to its tenant's day and month. */
static int store_db_spend(store_t *s, store_req_t *q)
{
    int rc;
    sqlite3_stmt *st = store_db_w(s, STORE_W_SPEND, q, &rc);
    if (!st)
        return rc;
    for (int i = 0; i < 2; i++) {
        store_bind_text(st, 1, q->tenant);
        store_bind_text(st, 2, i ? q->month : q->day);
        sqlite3_bind_double(st, 3, q->cost);
        if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int store_db_purge(store_t *s, store_req_t *q)
{
    int rc;
    sqlite3_stmt *st = store_db_w(s, STORE_W_PURGE, q, &rc);
    if (!st)
        return rc;
    sqlite3_bind_int64(st, 1, q->time_ms);
    if ((rc = store_db_exec(s, st, q)) != SQLITE_OK)
        return rc;
    q->count = sqlite3_changes(s->wdb);
    if (q->count == 0)
        return SQLITE_OK; /* no job went, so no source lost its last job */
    if (!(st = store_db_w(s, STORE_W_PURGE_SOURCES, q, &rc)))
        return rc;
    return store_db_exec(s, st, q);
}

/* Runs Q inside the open transaction and sets its result. Returns whether
 * the transaction can go on: a refusal by a constraint undoes only Q's
 * statement, anything else (or a transaction SQLite already rolled back)
 * ends it. */
static bool store_db_run_request(store_t *s, store_req_t *q)
{
    int rc;
    q->status = 0;
    q->existed = false;
    q->count = 0;
    q->result_id[0] = q->error_text[0] = '\0';
    switch (q->op) {
    case STORE_OP_INSERT:
        rc = store_db_insert(s, q);
        break;
    case STORE_OP_RUNNING:
    case STORE_OP_FINISH:
        rc = store_db_update(s, q);
        break;
    case STORE_OP_STEP:
        rc = store_db_step(s, q);
        break;
    case STORE_OP_CRASHES:
    case STORE_OP_RETRY:
        rc = store_db_mark(s, q);
        break;
    case STORE_OP_SPEND:
        rc = store_db_spend(s, q);
        break;
    case STORE_OP_WAIT:
        rc = store_db_wait(s, q);
        break;
    case STORE_OP_BATCH:
        rc = store_batch_apply(s, q);
        break;
    case STORE_OP_RELEASE:
        rc = SQLITE_OK; /* no leases without PostgreSQL */
        break;
    default:
        rc = store_db_purge(s, q);
        break;
    }
    if (rc == SQLITE_OK)
        return true;
    q->status = store_errno_of(rc);
    if (q->status == 0)
        q->status = -EIO;
    return (rc & 0xff) == SQLITE_CONSTRAINT && !sqlite3_get_autocommit(s->wdb);
}

#define LOUT(l) LIST_OWNER((l), store_req_t, link)

/* Fails every request from FIRST on (all of them up to, not including,
 * STOP), except SKIP, which keeps the status it has. */
static void store_db_fail_all(list_link *first, list_link *stop, store_req_t *skip,
                              int status, const char *why)
{
    for (list_link *l = first; l != stop; l = l->next) {
        store_req_t *q = LIST_OWNER(l, store_req_t, link);
        if (q == skip)
            continue;
        q->status = status;
        q->existed = false;
        q->count = 0;
        snprintf(q->error_text, sizeof q->error_text, "%s", why);
    }
}

/* Runs the requests from FIRST up to (not including) STOP in one
 * transaction. Returns false when the transaction failed after requests ran,
 * so that running them one by one could save some; every request has a
 * result either way. */
static bool store_db_transaction(store_t *s, list_link *first, list_link *stop)
{
    char why[sizeof ((store_req_t *)0)->error_text];
    int rc;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sqlite3_stmt *st = store_db_w(s, STORE_W_BEGIN, NULL, &rc);
    if (st)
        rc = store_db_exec(s, st, NULL);
    if (rc != SQLITE_OK) {
        /* Nothing ran: no request is to blame, so splitting cannot help. */
        snprintf(why, sizeof why, "cannot begin a transaction: %s", sqlite3_errmsg(s->wdb));
        store_db_fail_all(first, stop, NULL, store_errno_of(rc), why);
        return true;
    }
    store_req_t *bad = NULL;
    for (list_link *l = first; l != stop; l = l->next) {
        store_req_t *q = LIST_OWNER(l, store_req_t, link);
        if (!store_db_run_request(s, q)) {
            bad = q;
            break;
        }
    }
    if (!bad) {
        st = store_db_w(s, STORE_W_COMMIT, NULL, &rc);
        if (st)
            rc = store_db_exec(s, st, NULL);
        if (rc == SQLITE_OK) {
            atomic_fetch_add(&s->transactions, 1);
            store_commit_fn obs = atomic_load_explicit(&s->commit_obs, memory_order_acquire);
            if (obs) {
                struct timespec t1;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                obs(atomic_load_explicit(&s->commit_obs_ud, memory_order_relaxed),
                    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
            }
            return true;
        }
        snprintf(why, sizeof why, "commit failed: %s", sqlite3_errmsg(s->wdb));
        store_db_fail_all(first, stop, NULL, store_errno_of(rc), why);
    } else if (store_status_transient(bad->status)) {
        /* the disk, not the request: every request in it failed alike */
        snprintf(why, sizeof why, "%s", bad->error_text);
        store_db_fail_all(first, stop, NULL, bad->status, why);
    } else {
        /* Precision keeps the compiler sure the copy fits; "why" is cut anyway. */
        snprintf(why, sizeof why, "rolled back with another request: %.160s", bad->error_text);
        store_db_fail_all(first, stop, bad, bad->status, why);
    }
    if (!sqlite3_get_autocommit(s->wdb)) {
        st = store_db_w(s, STORE_W_ROLLBACK, NULL, &rc);
        if (!st || store_db_exec(s, st, NULL) != SQLITE_OK)
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    /* Splitting helps only when one request's data was to blame. */
    return store_status_transient(LOUT(first)->status);
}

bool store_status_transient(int status)
{
    switch (status) {
    case -ENOSPC:
    case -EIO:
    case -EROFS:
    case -EBUSY:
    case -ENOMEM:
    case -EACCES:
        return true;
    default:
        return false;
    }
}

void store_db_apply(store_t *s, list_link *list)
{
    if (list_empty(list) || store_db_transaction(s, list->next, list) ||
        list->next->next == list)
        return;
    atomic_fetch_add(&s->batch_retries, 1);
    for (list_link *l = list->next; l != list; l = l->next) {
        store_db_transaction(s, l, l->next);
        store_req_t *q = LOUT(l);
        if (store_status_transient(q->status) && l->next != list) {
            /* the disk went meanwhile: what follows waits, untried, so that
             * nothing commits ahead of a request queued before it */
            store_db_fail_all(l->next, list, NULL, q->status, q->error_text);
            return;
        }
    }
}
