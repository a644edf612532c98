/* test_store.c -- the durable job store: opening and refusing, group commit
 * and where completions run, every write and read, recovery after a crash,
 * purge, and job ids.
 *
 * Built twice: tests/unit/test_store runs it on SQLite, and
 * tests/unit/test_store_pg (-DSTORE_TEST_PG) runs the same tests on
 * PostgreSQL, so the two backends keep one behaviour. The tests about
 * SQLite's files (the directory, its lock, loom.db's schema, version and
 * migrations, WAL, the busy timeout) and the pure id functions are built
 * for SQLite only; what PostgreSQL adds (leases, fencing, claims, its
 * migrations) is tests/unit/test_store_pg_lease.c.
 *
 * Each test gets its own store (a mkdtemp directory, removed after, or a
 * fresh database of the test cluster, dropped after) and a reactor it
 * drives by hand; every wait has a deadline. To make batches deterministic a
 * test can "plug" the database: a second connection holds the write lock
 * (PostgreSQL: a lock on the jobs table), so the store thread waits in its
 * transaction while requests pile up behind it. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/store/store.h"

#ifdef STORE_TEST_PG
#include <libpq-fe.h>

#include "tests/unit/pgtest.h"
#else
#include <sqlite3.h>
#endif

/* ---- fixture */

static const char *g_loc; /* where the test's store is: g_dir or g_uri */
static reactor_t *g_r;
#ifdef STORE_TEST_PG
static char *g_uri;       /* the test's own database */
#else
static char g_dir[64];
#endif

static void setup(void)
{
#ifdef STORE_TEST_PG
    cr_assert(pgtest_admin_uri() != NULL, "no PostgreSQL for the tests (see stderr)");
    g_uri = pgtest_fresh_db("store");
    cr_assert(g_uri != NULL, "cannot create a test database (see stderr)");
    g_loc = g_uri;
#else
    snprintf(g_dir, sizeof g_dir, "/tmp/loom-store-XXXXXX");
    cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp: %s", strerror(errno));
    g_loc = g_dir;
#endif
    g_r = reactor_new();
    cr_assert(g_r != NULL);
}

#ifdef STORE_TEST_PG
static void teardown(void)
{
    reactor_free(g_r);
    /* a failed drop leaves a database in a throwaway cluster: said, not fatal */
    pgtest_drop_db(g_uri);
    free(g_uri);
}
#else

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    reactor_free(g_r);
    chmod(g_dir, 0700);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
#endif

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers */

/* Lets cr_assert take expressions that start with '!' or a macro. */
static bool truth(bool b)
{
    return b;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What the callbacks saw. Only touched on the reactor (test) thread. */
typedef struct done {
    pthread_t reactor_thread;
    int calls, ok, failed, off_thread;
    int status;
    bool existed;
    int64_t count;
    char id[STORE_ID_SIZE];
    char error[256];
} done_t;

static void done_init(done_t *d)
{
    memset(d, 0, sizeof *d);
    d->reactor_thread = pthread_self();
}

static void on_done(void *ud, const store_result_t *res)
{
    done_t *d = ud;
    d->calls++;
    if (res->status == 0)
        d->ok++;
    else
        d->failed++;
    if (!pthread_equal(pthread_self(), d->reactor_thread))
        d->off_thread++;
    d->status = res->status;
    d->existed = res->existed;
    d->count = res->count;
    snprintf(d->id, sizeof d->id, "%s", res->job_id ? res->job_id : "");
    snprintf(d->error, sizeof d->error, "%s", res->error);
}

/* Drives the reactor until *COUNTER reaches N, for at most 20 s. */
static void run_until(const int *counter, int n)
{
    double deadline = now_s() + 20;
    while (*counter < n && now_s() < deadline)
        cr_assert(reactor_run_once(g_r, 50) >= 0);
    cr_assert(eq(int, *counter, n), "timed out waiting for completions");
}

static store_t *open_store_opts(const store_options_t *opts)
{
    char err[512] = "";
    store_t *s = store_open(g_loc, g_r, opts, err, sizeof err);
    cr_assert(s != NULL, "store_open: %s", err);
    return s;
}

static store_t *open_store(void)
{
    return open_store_opts(NULL);
}

/* A connection of the test's own to the store's database (raw_connect,
 * raw_close), to look at it or to hold its write lock (plug). */
#ifdef STORE_TEST_PG
typedef PGconn raw_db;

static raw_db *raw_connect(void)
{
    PGconn *db = PQconnectdb(g_loc);
    cr_assert(db != NULL && PQstatus(db) == CONNECTION_OK, "connect: %s",
              db != NULL ? PQerrorMessage(db) : "out of memory");
    return db;
}

static void raw_close(raw_db *db)
{
    PQfinish(db);
}

static void raw_exec(raw_db *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
}

static int64_t raw_int(raw_db *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    int64_t v = ok ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    cr_assert(ok, "%s: %s", sql, PQerrorMessage(db));
    return v;
}

/* Every write of the store inserts into or updates jobs, which this lock
 * blocks until COMMIT (reads go on). */
#define PLUG_SQL "BEGIN; LOCK TABLE jobs IN EXCLUSIVE MODE"
#else
typedef sqlite3 raw_db;

static void db_path(char *out, size_t n)
{
    snprintf(out, n, "%s/loom.db", g_dir);
}

/* A connection of the test's own to loom.db. */
static sqlite3 *raw_open(int flags)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    db_path(path, sizeof path);
    cr_assert(eq(int, sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK));
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static raw_db *raw_connect(void)
{
    return raw_open(SQLITE_OPEN_READWRITE);
}

static void raw_close(raw_db *db)
{
    sqlite3_close(db);
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    cr_assert(eq(int, rc, SQLITE_OK), "%s: %s", sql, msg ? msg : "");
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    cr_assert(eq(int, sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK), "%s", sql);
    cr_assert(eq(int, sqlite3_step(st), SQLITE_ROW));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

#define PLUG_SQL "BEGIN IMMEDIATE"
#endif

/* Holds the write lock from another connection (see the top comment). */
static raw_db *plug(void)
{
    raw_db *db = raw_connect();
    raw_exec(db, PLUG_SQL);
    return db;
}

static void unplug(raw_db *db)
{
    raw_exec(db, "COMMIT");
    raw_close(db);
}

/* Inserts a job of WORKFLOW and waits for it; returns its id in ID. */
static void insert_sync(store_t *s, const char *workflow, const char *key, char id[STORE_ID_SIZE])
{
    done_t d;
    done_init(&d);
    store_job_spec_t spec = {.workflow = workflow, .idempotency_key = key};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    memcpy(id, d.id, STORE_ID_SIZE);
}

/* Finishes JOB with STATE at FINISHED_MS and waits; returns the status. */
static int finish_sync(store_t *s, const char *job, store_state_t state, int64_t finished_ms)
{
    done_t d;
    done_init(&d);
    store_outcome_t o = {.state = state, .finished_ms = finished_ms};
    cr_assert(eq(int, store_finish_job(s, job, &o, on_done, &d), 0));
    run_until(&d.calls, 1);
    return d.status;
}

static json_t *get_job(store_t *s, const char *id)
{
    char err[256] = "";
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, id, &job, err, sizeof err), 0), "%s", err);
    return job;
}

static const char *job_str(const json_t *job, const char *key)
{
    return json_string_value(json_object_get(job, key));
}

/* ---- opening */

#ifndef STORE_TEST_PG /* SQLite's directory and file */
Test(store, open_creates_directory_and_reopens)
{
    char state[PATH_MAX], err[512] = "";
    struct stat st;
    snprintf(state, sizeof state, "%s/state", g_dir);
    store_t *s = store_open(state, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    cr_assert(eq(int, stat(state, &st), 0));
    cr_assert(truth(S_ISDIR(st.st_mode)));
    cr_assert(eq(int, (int)(st.st_mode & 0777), 0700));

    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);

    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/loom.db", state);
    sqlite3 *db = NULL;
    cr_assert(eq(int, sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK));
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    sqlite3_stmt *q = NULL;
    cr_assert(eq(int, sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK));
    cr_assert(eq(int, sqlite3_step(q), SQLITE_ROW));
    cr_assert(eq(str, (char *)sqlite3_column_text(q, 0), "wal"));
    sqlite3_finalize(q);
    sqlite3_close(db);

    s = store_open(state, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "reopen: %s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "workflow"), "wf"));
    json_decref(job);
    store_close(s);
}

Test(store, second_open_of_the_same_directory_is_refused)
{
    char err[512] = "";
    store_t *s = open_store();
    cr_assert(store_open(g_dir, g_r, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EBUSY));
    cr_assert(strstr(err, "in use") != NULL, "%s", err);
    store_close(s);
    s = open_store();
    store_close(s);
}

Test(store, newer_schema_is_refused_with_a_clear_message)
{
    char err[512] = "";
    store_close(open_store());
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, "PRAGMA user_version = 99");
    sqlite3_close(db);
    cr_assert(store_open(g_dir, g_r, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, ENOTSUP));
    cr_assert(strstr(err, "schema version 99") != NULL, "%s", err);
    cr_assert(strstr(err, "newer") != NULL, "%s", err);
}

/* A v1 database (the state checks written with IN) is rebuilt as v2 at
 * open, its jobs and steps kept. */
Test(store, v1_database_is_migrated)
{
    char err[512] = "";
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    raw_exec(db,
             "PRAGMA journal_mode = WAL;"
             "CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, workflow TEXT NOT NULL, version TEXT,"
             " input TEXT NOT NULL, state TEXT NOT NULL"
             "  CHECK (state IN ('queued','running','succeeded','failed','cancelled')),"
             " priority INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT UNIQUE,"
             " peer_uid INTEGER, peer_gid INTEGER, peer_pid INTEGER, created_ms INTEGER NOT NULL,"
             " started_ms INTEGER, finished_ms INTEGER, output TEXT, error TEXT, usage TEXT,"
             " CHECK ((state IN ('succeeded','failed','cancelled')) = (finished_ms IS NOT NULL)));"
             "CREATE INDEX jobs_by_state ON jobs (state, id);"
             "CREATE INDEX jobs_by_workflow ON jobs (workflow, id);"
             "CREATE INDEX jobs_by_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;"
             "CREATE TABLE steps (job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
             " key TEXT NOT NULL, output TEXT, error TEXT, finished_ms INTEGER NOT NULL,"
             " PRIMARY KEY (job_id, key));"
             "INSERT INTO jobs (id, workflow, input, state, created_ms)"
             " VALUES ('01ARZ3NDEKTSV4RRFFQ69G5FAV', 'wf', '{}', 'running', 1);"
             "INSERT INTO steps VALUES ('01ARZ3NDEKTSV4RRFFQ69G5FAV', 'k', '1', NULL, 2);"
             "PRAGMA application_id = 1280266061; PRAGMA user_version = 1;");
    sqlite3_close(db);
    store_t *s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &steps, err, sizeof err), 0));
    cr_assert(json_object_get(steps, "k") != NULL, "the step survived the rebuild");
    json_decref(steps);
    json_t *job = get_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    cr_assert(eq(str, (char *)job_str(job, "state"), "running"));
    json_decref(job);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT attempt FROM jobs"), 1));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM jobs WHERE tenant = 'default'"), 1));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sources"), 0));
    /* no temporary b-tree per written row any more */
    sqlite3_stmt *q = NULL;
    cr_assert(eq(int, sqlite3_prepare_v2(db, "EXPLAIN UPDATE jobs SET state = 'failed', finished_ms = 3",
                                         -1, &q, NULL), SQLITE_OK));
    int ephemeral = 0;
    while (sqlite3_step(q) == SQLITE_ROW)
        ephemeral += strcmp((const char *)sqlite3_column_text(q, 1), "OpenEphemeral") == 0;
    sqlite3_finalize(q);
    cr_assert(eq(int, ephemeral, 0));
    sqlite3_close(db);
}

Test(store, foreign_database_is_refused)
{
    char err[512] = "", path[PATH_MAX];
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    raw_exec(db, "CREATE TABLE jobs (x)");
    sqlite3_close(db);
    cr_assert(store_open(g_dir, g_r, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    cr_assert(strstr(err, "not a Loom state database") != NULL, "%s", err);

    db_path(path, sizeof path);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    for (int i = 0; i < 100; i++)
        fputs("this is not a database file at all. ", f);
    fclose(f);
    cr_assert(store_open(g_dir, g_r, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    cr_assert(strstr(err, "not a database") != NULL, "%s", err);
}

/* Opens DIR expecting a refusal; returns errno, with the message in ERR. */
static int open_refused(const char *dir, char *err, size_t errlen)
{
    store_t *s = store_open(dir, g_r, NULL, err, errlen);
    int e = errno;
    store_close(s);
    return s ? 0 : e;
}

/* As root, permissions bind only another user, so the opens run with the
 * effective uid of nobody; the files stay root's. Three ways to be
 * unwritable: the directory, its parent, and the database file itself. */
Test(store, unwritable_directory_gives_a_clear_error)
{
    char ro[PATH_MAX], sub[PATH_MAX + 8], rodb[PATH_MAX], path[PATH_MAX + 16];
    char err[3][512] = {"", "", ""};
    int e[3];
    snprintf(ro, sizeof ro, "%s/ro", g_dir);
    snprintf(sub, sizeof sub, "%s/state", ro);
    snprintf(rodb, sizeof rodb, "%s/rodb", g_dir);
    cr_assert(eq(int, mkdir(ro, 0755), 0));
    cr_assert(eq(int, mkdir(rodb, 0777), 0));
    store_t *s = store_open(rodb, g_r, NULL, err[0], sizeof err[0]);
    cr_assert(s != NULL, "%s", err[0]);
    store_close(s);
    bool root = geteuid() == 0;
    cr_assert(eq(int, chmod(g_dir, 0755), 0));
    cr_assert(eq(int, chmod(rodb, 0777), 0));
    snprintf(path, sizeof path, "%s/loom.lock", rodb);
    cr_assert(eq(int, chmod(path, 0666), 0));
    snprintf(path, sizeof path, "%s/loom.db", rodb);
    cr_assert(eq(int, chmod(path, 0444), 0));
    if (root) {
        if (seteuid(65534) != 0)
            cr_skip_test("cannot drop privileges to test permissions");
    } else {
        cr_assert(eq(int, chmod(ro, 0555), 0));
    }
    e[0] = open_refused(ro, err[0], sizeof err[0]);
    e[1] = open_refused(sub, err[1], sizeof err[1]);
    e[2] = open_refused(rodb, err[2], sizeof err[2]);
    if (root)
        cr_assert(eq(int, seteuid(0), 0));
    chmod(ro, 0755);

    cr_assert(eq(int, e[0], EACCES), "%s", err[0]);
    cr_assert(truth(strstr(err[0], ro) && strstr(err[0], "Permission denied")), "%s", err[0]);
    cr_assert(eq(int, e[1], EACCES), "%s", err[1]);
    cr_assert(truth(strstr(err[1], "cannot create state directory") &&
                    strstr(err[1], "Permission denied")), "%s", err[1]);
    cr_assert(eq(int, e[2], EACCES), "%s", err[2]);
    cr_assert(truth(strstr(err[2], "cannot write state database") &&
                    strstr(err[2], "Permission denied")), "%s", err[2]);
}

#endif

Test(store, bad_arguments)
{
    char err[256] = "";
    cr_assert(store_open(NULL, g_r, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    cr_assert(store_open(g_loc, NULL, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    store_t *s = open_store();
    store_job_spec_t spec = {.workflow = ""};
    cr_assert(eq(int, store_insert_job(s, &spec, NULL, NULL), -EINVAL));
    spec = (store_job_spec_t){.workflow = "wf", .id = "not-an-id"};
    cr_assert(eq(int, store_insert_job(s, &spec, NULL, NULL), -EINVAL));
    cr_assert(eq(int, store_set_running(s, "01ARZ3NDEKTSV4RRFFQ69G5FAv", 0, NULL, NULL), -EINVAL));
    store_outcome_t o = {.state = STORE_RUNNING};
    cr_assert(eq(int, store_finish_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &o, NULL, NULL), -EINVAL));
    cr_assert(eq(int, store_checkpoint_step(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", NULL, NULL, NULL, 0,
                                            NULL, NULL), -EINVAL));
    store_state_t st;
    cr_assert(eq(int, store_state_parse("cancelled", &st), 0));
    cr_assert(eq(int, (int)st, STORE_CANCELLED));
    cr_assert(eq(int, store_state_parse("done", &st), -EINVAL));
    cr_assert(eq(str, (char *)store_state_name(STORE_RUNNING), "running"));
    cr_assert(store_state_name((store_state_t)42) == NULL);
    store_close(s);
}

/* ---- writes and where their completions run */

Test(store, insert_then_get)
{
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    cr_assert(eq(int, store_new_job_id(s, id), 0));
    json_t *input = json_pack("{s:s, s:[i,i]}", "text", "héllo", "n", 1, 2);
    store_job_spec_t spec = {
        .id = id, .workflow = "summarise", .version = "3", .input = input, .priority = 7,
        .idempotency_key = "k-1", .has_peer = true, .peer_uid = 1000, .peer_gid = 100,
        .peer_pid = 4242, .created_ms = 1700000000123,
    };
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(str, d.id, id));
    cr_assert(truth(!d.existed));
    cr_assert(eq(str, d.error, ""));

    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "id"), id));
    cr_assert(eq(str, (char *)job_str(job, "workflow"), "summarise"));
    cr_assert(eq(str, (char *)job_str(job, "version"), "3"));
    cr_assert(eq(str, (char *)job_str(job, "state"), "queued"));
    cr_assert(eq(str, (char *)job_str(job, "idempotency_key"), "k-1"));
    cr_assert(json_equal(json_object_get(job, "input"), input));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "priority")), 7));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "created_ms")), 1700000000123));
    json_t *peer = json_object_get(job, "peer");
    cr_assert(eq(i64, json_integer_value(json_object_get(peer, "uid")), 1000));
    cr_assert(eq(i64, json_integer_value(json_object_get(peer, "gid")), 100));
    cr_assert(eq(i64, json_integer_value(json_object_get(peer, "pid")), 4242));
    cr_assert(truth(json_is_null(json_object_get(job, "started_ms"))));
    cr_assert(truth(json_is_null(json_object_get(job, "output"))));
    json_decref(job);

    /* Without input or peer: null and null; the id is generated. */
    char id2[STORE_ID_SIZE];
    insert_sync(s, "other", NULL, id2);
    cr_assert(store_id_valid(id2));
    cr_assert(strcmp(id2, id) > 0);
    job = get_job(s, id2);
    cr_assert(truth(json_is_null(json_object_get(job, "input"))));
    cr_assert(truth(json_is_null(json_object_get(job, "peer"))));
    cr_assert(truth(json_is_null(json_object_get(job, "version"))));
    json_decref(job);

    char err[256] = "";
    cr_assert(eq(int, store_get_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &job, err, sizeof err),
                 -ENOENT));
    cr_assert(strstr(err, "no job") != NULL);
    /* A duplicate id is refused, not overwritten. */
    done_init(&d);
    spec.idempotency_key = NULL;
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, -EEXIST), "%s", d.error);
    json_decref(input);
    store_close(s);
}

typedef struct commit_probe {
    done_t d;
    int visible;
} commit_probe;

/* Looks for the job from a connection of its own: if the row is there,
 * the transaction committed before the callback ran. */
static void on_done_probe(void *ud, const store_result_t *res)
{
    commit_probe *p = ud;
    on_done(&p->d, res);
    if (!store_id_valid(res->job_id))
        return; /* visible stays -1 */
    char sql[128];
    /* a valid id is base32: it can stand in the SQL text */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM jobs WHERE id = '%s'", res->job_id);
    raw_db *db = raw_connect();
    p->visible = (int)raw_int(db, sql);
    raw_close(db);
}

Test(store, completion_runs_on_the_reactor_thread_after_commit)
{
    store_t *s = open_store();
    commit_probe p = {.visible = -1};
    done_init(&p.d);
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done_probe, &p), 0));
    cr_assert(eq(int, p.d.calls, 0)); /* never from inside the call */
    run_until(&p.d.calls, 1);
    cr_assert(eq(int, p.d.status, 0));
    cr_assert(eq(int, p.d.off_thread, 0));
    cr_assert(eq(int, p.visible, 1));
    store_close(s);
}

Test(store, idempotency_key_returns_the_existing_job)
{
    store_t *s = open_store();
    char first[STORE_ID_SIZE];
    insert_sync(s, "wf", "key-1", first);

    done_t d;
    done_init(&d);
    char other[STORE_ID_SIZE];
    cr_assert(eq(int, store_new_job_id(s, other), 0));
    store_job_spec_t spec = {.id = other, .workflow = "wf", .idempotency_key = "key-1"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0));
    cr_assert(d.existed);
    cr_assert(eq(str, d.id, first));
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, other, &job, NULL, 0), -ENOENT));

    /* Two with one new key, queued back to back (likely one transaction). */
    done_t a, b;
    done_init(&a);
    done_init(&b);
    spec = (store_job_spec_t){.workflow = "wf", .idempotency_key = "key-2"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &a), 0));
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &b), 0));
    run_until(&b.calls, 1);
    cr_assert(eq(int, a.calls, 1));
    cr_assert(truth(!a.existed && b.existed));
    cr_assert(eq(str, a.id, b.id));
    json_t *all = NULL;
    store_list_query_t q = {0};
    cr_assert(eq(int, store_list_jobs(s, &q, &all, NULL, 0), 0));
    cr_assert(eq(sz, json_array_size(all), 2));
    json_decref(all);
    store_close(s);
}

Test(store, thousand_queued_inserts_commit_in_few_transactions)
{
    store_t *s = open_store();
    store_stats_t before, after;
    store_get_stats(s, &before);
    raw_db *p = plug();
    done_t d;
    done_init(&d);
    for (int i = 0; i < 1000; i++) {
        store_job_spec_t spec = {.workflow = i % 2 ? "odd" : "even", .priority = i};
        cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    }
    unplug(p);
    run_until(&d.calls, 1000);
    cr_assert(eq(int, d.ok, 1000));
    cr_assert(eq(int, d.off_thread, 0));
    store_get_stats(s, &after);
    uint64_t txns = after.transactions - before.transactions;
    cr_assert(txns >= 1 && txns <= 2, "1000 inserts took %llu transactions",
              (unsigned long long)txns);
    cr_assert(eq(u64, after.completed - before.completed, 1000));
    cr_assert(eq(sz, after.queued, 0));

    json_t *all = NULL;
    store_list_query_t q = {.limit = 1000, .workflow = "odd"};
    cr_assert(eq(int, store_list_jobs(s, &q, &all, NULL, 0), 0));
    cr_assert(eq(sz, json_array_size(all), 500));
    json_decref(all);
    store_close(s);
}

Test(store, max_batch_bounds_a_transaction)
{
    store_options_t opts = {.max_batch = 10};
    store_t *s = open_store_opts(&opts);
    raw_db *p = plug();
    done_t d;
    done_init(&d);
    for (int i = 0; i < 100; i++) {
        store_job_spec_t spec = {.workflow = "wf"};
        cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    }
    unplug(p);
    run_until(&d.calls, 100);
    store_stats_t st;
    store_get_stats(s, &st);
    cr_assert(st.transactions >= 10, "%llu", (unsigned long long)st.transactions);
    store_close(s);
}

#ifndef STORE_TEST_PG /* busy_timeout_ms bounds SQLite's lock waits */
Test(store, failed_transaction_fails_every_request_in_it)
{
    store_options_t opts = {.busy_timeout_ms = 100};
    store_t *s = open_store_opts(&opts);
    char ids[3][STORE_ID_SIZE];
    done_t d;
    done_init(&d);
    sqlite3 *p = plug();
    for (int i = 0; i < 3; i++) {
        cr_assert(eq(int, store_new_job_id(s, ids[i]), 0));
        store_job_spec_t spec = {.id = ids[i], .workflow = "wf"};
        cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    }
    run_until(&d.calls, 3); /* still plugged: every BEGIN times out */
    unplug(p);
    cr_assert(eq(int, d.failed, 3));
    cr_assert(eq(int, d.status, -EBUSY));
    cr_assert(strstr(d.error, "locked") != NULL, "%s", d.error);
    store_stats_t st;
    store_get_stats(s, &st);
    cr_assert(eq(u64, st.failed, 3));
    for (int i = 0; i < 3; i++) {
        json_t *job = NULL;
        cr_assert(eq(int, store_get_job(s, ids[i], &job, NULL, 0), -ENOENT));
    }
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id); /* the store recovers */
    store_close(s);
}
#endif

Test(store, one_bad_request_does_not_fail_its_batch)
{
    store_t *s = open_store();
    raw_db *p = raw_connect();
#ifdef STORE_TEST_PG
    /* a data error (check_violation), as a bad row's would be */
    raw_exec(p, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.workflow = 'poison' THEN"
                " RAISE EXCEPTION 'poisoned' USING ERRCODE = 'check_violation'; END IF;"
                " RETURN NEW; END $$;"
                "CREATE TRIGGER poison BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION poison()");
#else
    raw_exec(p, "CREATE TRIGGER poison BEFORE INSERT ON jobs WHEN NEW.workflow = 'poison'"
                " BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END");
#endif
    raw_exec(p, PLUG_SQL);
    const char *names[] = {"first", "good", "poison", "also-good"};
    done_t d[4];
    for (int i = 0; i < 4; i++) {
        done_init(&d[i]);
        store_job_spec_t spec = {.workflow = names[i]};
        cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d[i]), 0));
    }
    unplug(p);
    for (int i = 0; i < 4; i++)
        run_until(&d[i].calls, 1);
    cr_assert(eq(int, d[0].status, 0), "%s", d[0].error);
    cr_assert(eq(int, d[1].status, 0), "%s", d[1].error);
    cr_assert(eq(int, d[3].status, 0), "%s", d[3].error);
    cr_assert(d[2].status < 0);
    cr_assert(strstr(d[2].error, "poisoned") != NULL, "%s", d[2].error);
    store_stats_t st;
    store_get_stats(s, &st);
    cr_assert(st.batch_retries >= 1);
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, d[2].id, &job, NULL, 0), -ENOENT));
    json_decref(get_job(s, d[1].id));
    json_decref(get_job(s, d[3].id));
    store_close(s);
}

Test(store, checkpoint_steps_and_load_them)
{
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    json_t *o1 = json_pack("{s:i}", "x", 1), *o2 = json_integer(2), *o3 = json_string("s");
    json_t *e = json_pack("{s:s}", "code", "timeout");
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_checkpoint_step(s, id, "a", o1, NULL, 10, on_done, &d), 0));
    cr_assert(eq(int, store_checkpoint_step(s, id, "b/map[0]", o3, NULL, 11, on_done, &d), 0));
    cr_assert(eq(int, store_checkpoint_step(s, id, "c", NULL, e, 12, on_done, &d), 0));
    cr_assert(eq(int, store_checkpoint_step(s, id, "a", o2, NULL, 13, on_done, &d), 0));
    cr_assert(eq(int, store_checkpoint_step(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "a", o1, NULL, 0,
                                            on_done, &d), 0));
    run_until(&d.calls, 5);
    cr_assert(eq(int, d.ok, 4));
    cr_assert(eq(int, d.status, -ENOENT), "%s", d.error);
    cr_assert(strstr(d.error, "no job") != NULL, "%s", d.error);

    json_t *steps = NULL;
    char err[256] = "";
    cr_assert(eq(int, store_load_steps(s, id, &steps, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_object_size(steps), 3));
    json_t *a = json_object_get(steps, "a");
    cr_assert(json_equal(json_object_get(a, "output"), o2)); /* replaced */
    cr_assert(truth(json_is_null(json_object_get(a, "error"))));
    cr_assert(eq(i64, json_integer_value(json_object_get(a, "finished_ms")), 13));
    cr_assert(json_equal(json_object_get(json_object_get(steps, "b/map[0]"), "output"), o3));
    cr_assert(json_equal(json_object_get(json_object_get(steps, "c"), "error"), e));
    json_decref(steps);

    cr_assert(eq(int, store_load_steps(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &steps, NULL, 0), 0));
    cr_assert(eq(sz, json_object_size(steps), 0));
    json_decref(steps);
    json_decref(o1);
    json_decref(o2);
    json_decref(o3);
    json_decref(e);
    store_close(s);
}

Test(store, finish_and_get_output_or_error)
{
    store_t *s = open_store();
    char ok[STORE_ID_SIZE], bad[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, ok);
    insert_sync(s, "wf", NULL, bad);
    json_t *out = json_pack("{s:s}", "summary", "short");
    json_t *usage = json_pack("{s:{s:i, s:i}}", "openai", "input", 100, "output", 20);
    json_t *error = json_pack("{s:s, s:s}", "code", "provider", "message", "boom");
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_set_running(s, ok, 500, on_done, &d), 0));
    store_outcome_t o1 = {.state = STORE_SUCCEEDED, .output = out, .usage = usage,
                          .finished_ms = 900};
    cr_assert(eq(int, store_finish_job(s, ok, &o1, on_done, &d), 0));
    store_outcome_t o2 = {.state = STORE_FAILED, .error = error};
    cr_assert(eq(int, store_finish_job(s, bad, &o2, on_done, &d), 0));
    run_until(&d.calls, 3);
    cr_assert(eq(int, d.ok, 3), "%s", d.error);

    json_t *job = get_job(s, ok);
    cr_assert(eq(str, (char *)job_str(job, "state"), "succeeded"));
    cr_assert(json_equal(json_object_get(job, "output"), out));
    cr_assert(json_equal(json_object_get(job, "usage"), usage));
    cr_assert(truth(json_is_null(json_object_get(job, "error"))));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "started_ms")), 500));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "finished_ms")), 900));
    json_decref(job);
    job = get_job(s, bad);
    cr_assert(eq(str, (char *)job_str(job, "state"), "failed"));
    cr_assert(json_equal(json_object_get(job, "error"), error));
    cr_assert(truth(json_is_integer(json_object_get(job, "finished_ms"))));
    json_decref(job);

    /* A finished job never changes again. */
    cr_assert(eq(int, finish_sync(s, ok, STORE_FAILED, 0), -EALREADY));
    done_init(&d);
    cr_assert(eq(int, store_set_running(s, ok, 0, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, -EALREADY));
    cr_assert(strstr(d.error, "already succeeded") != NULL, "%s", d.error);
    cr_assert(eq(int, finish_sync(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", STORE_FAILED, 0), -ENOENT));
    json_decref(out);
    json_decref(usage);
    json_decref(error);
    store_close(s);
}

Test(store, set_running_then_cancel)
{
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_set_running(s, id, 1234, on_done, &d), 0));
    cr_assert(eq(int, store_set_running(s, id, 9999, on_done, &d), 0)); /* resumed */
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.ok, 2));
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "running"));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "started_ms")), 1234));
    json_decref(job);

    done_init(&d);
    cr_assert(eq(int, store_cancel_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_cancel_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_cancel_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", on_done, &d), 0));
    cr_assert(eq(int, store_set_running(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0, on_done, &d), 0));
    run_until(&d.calls, 4);
    cr_assert(eq(int, d.ok, 1));
    cr_assert(eq(int, d.status, -ENOENT));
    job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "cancelled"));
    cr_assert(truth(json_is_integer(json_object_get(job, "finished_ms"))));
    json_decref(job);
    store_close(s);
}

/* ---- reads */

/* The ids of a list result, joined by spaces, for comparison. */
static void list_ids(store_t *s, const store_list_query_t *q, char *out, size_t n)
{
    json_t *jobs = NULL;
    char err[256] = "";
    cr_assert(eq(int, store_list_jobs(s, q, &jobs, err, sizeof err), 0), "%s", err);
    out[0] = '\0';
    size_t i;
    json_t *job;
    json_array_foreach(jobs, i, job) {
        cr_assert(json_object_get(job, "input") == NULL); /* a summary */
        strncat(out, job_str(job, "id"), n - strlen(out) - 1);
        strncat(out, " ", n - strlen(out) - 1);
    }
    json_decref(jobs);
}

Test(store, list_filters_and_pages)
{
    store_t *s = open_store();
    char ids[10][STORE_ID_SIZE], got[512], want[512];
    for (int i = 0; i < 10; i++)
        insert_sync(s, i % 2 ? "b" : "a", NULL, ids[i]);
    for (int i = 0; i < 4; i++)
        cr_assert(eq(int, finish_sync(s, ids[i], STORE_SUCCEEDED, 0), 0));

#define WANT(...)                                                \
    do {                                                         \
        int idx[] = {__VA_ARGS__};                               \
        want[0] = '\0';                                          \
        for (size_t k = 0; k < sizeof idx / sizeof *idx; k++) {  \
            if (idx[k] < 0)                                      \
                continue;                                        \
            strcat(want, ids[idx[k]]);                           \
            strcat(want, " ");                                   \
        }                                                        \
    } while (0)

    store_list_query_t q = {0};
    list_ids(s, &q, got, sizeof got);
    WANT(9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    cr_assert(eq(str, got, want));

    q = (store_list_query_t){.state = "succeeded", .oldest_first = true};
    list_ids(s, &q, got, sizeof got);
    WANT(0, 1, 2, 3);
    cr_assert(eq(str, got, want));

    q = (store_list_query_t){.workflow = "a"};
    list_ids(s, &q, got, sizeof got);
    WANT(8, 6, 4, 2, 0);
    cr_assert(eq(str, got, want));

    q = (store_list_query_t){.workflow = "a", .state = "succeeded"};
    list_ids(s, &q, got, sizeof got);
    WANT(2, 0);
    cr_assert(eq(str, got, want));

    q = (store_list_query_t){.workflow = "b", .state = "queued", .oldest_first = true};
    list_ids(s, &q, got, sizeof got);
    WANT(5, 7, 9);
    cr_assert(eq(str, got, want));

    /* Pages of three, newest first, each from the last id of the one before. */
    int expect[4][3] = {{9, 8, 7}, {6, 5, 4}, {3, 2, 1}, {0, -1, -1}};
    const char *after = NULL;
    char cursor[STORE_ID_SIZE];
    for (int page = 0; page < 4; page++) {
        q = (store_list_query_t){.limit = 3, .after = after};
        list_ids(s, &q, got, sizeof got);
        WANT(expect[page][0], expect[page][1], expect[page][2]);
        cr_assert(eq(str, got, want), "page %d", page);
        int last = expect[page][2] >= 0 ? expect[page][2] : expect[page][0];
        memcpy(cursor, ids[last], sizeof cursor);
        after = cursor;
    }
    q = (store_list_query_t){.limit = 3, .after = after};
    list_ids(s, &q, got, sizeof got);
    cr_assert(eq(str, got, ""));

    q = (store_list_query_t){.limit = 2, .after = ids[4], .oldest_first = true};
    list_ids(s, &q, got, sizeof got);
    WANT(5, 6);
    cr_assert(eq(str, got, want));
#undef WANT

    json_t *jobs = NULL;
    char err[256] = "";
    q = (store_list_query_t){.state = "done"};
    cr_assert(eq(int, store_list_jobs(s, &q, &jobs, err, sizeof err), -EINVAL));
    cr_assert(strstr(err, "done") != NULL);
    store_close(s);
}

/* The child of the crash test: writes, waits for the commits, then dies
 * without closing anything. Exit codes say which step failed. */
static void crash_child(char ids[3][STORE_ID_SIZE])
{
    reactor_t *r = reactor_new();
    if (!r)
        _exit(10);
    store_t *s = store_open(g_loc, r, NULL, NULL, 0);
    if (!s)
        _exit(11);
    done_t d;
    done_init(&d);
    json_t *one = json_integer(1);
    for (int i = 0; i < 3; i++) {
        store_job_spec_t spec = {.id = ids[i], .workflow = "wf", .input = one};
        if (store_insert_job(s, &spec, on_done, &d) != 0)
            _exit(12);
    }
    store_outcome_t o = {.state = STORE_SUCCEEDED, .output = one};
    if (store_set_running(s, ids[1], 0, on_done, &d) ||
        store_checkpoint_step(s, ids[0], "s1", one, NULL, 0, on_done, &d) ||
        store_checkpoint_step(s, ids[1], "s1", one, NULL, 0, on_done, &d) ||
        store_checkpoint_step(s, ids[1], "s2", NULL, one, 0, on_done, &d) ||
        store_finish_job(s, ids[2], &o, on_done, &d))
        _exit(13);
    double deadline = now_s() + 20;
    while (d.calls < 8 && now_s() < deadline)
        reactor_run_once(r, 50);
    _exit(d.calls == 8 && d.ok == 8 ? 0 : 14);
}

Test(store, unfinished_jobs_and_steps_survive_a_crash)
{
    char ids[3][STORE_ID_SIZE];
    store_id_gen_t gen = {0};
    for (int i = 0; i < 3; i++)
        cr_assert(eq(int, store_id_next(&gen, (uint64_t)store_now_ms(), ids[i]), 0));
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        crash_child(ids);
    int status = 0;
    cr_assert(eq(int, waitpid(pid, &status, 0), pid));
    cr_assert(truth(WIFEXITED(status) && WEXITSTATUS(status) == 0), "child status %d", status);

#ifndef STORE_TEST_PG
    /* The child left its WAL behind, as a crash would. */
    char path[PATH_MAX + 8];
    struct stat st;
    snprintf(path, sizeof path, "%s/loom.db-wal", g_dir);
    cr_assert(eq(int, stat(path, &st), 0));
    cr_assert(st.st_size > 0);
#endif

    store_t *s = open_store();
    json_t *jobs = NULL;
    char err[256] = "";
    cr_assert(eq(int, store_unfinished_jobs(s, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 2));
    json_t *j0 = json_array_get(jobs, 0), *j1 = json_array_get(jobs, 1);
    cr_assert(eq(str, (char *)job_str(j0, "id"), ids[0]));
    cr_assert(eq(str, (char *)job_str(j0, "state"), "queued"));
    cr_assert(eq(i64, json_integer_value(json_object_get(j0, "input")), 1));
    cr_assert(eq(str, (char *)job_str(j1, "id"), ids[1]));
    cr_assert(eq(str, (char *)job_str(j1, "state"), "running"));
    json_decref(jobs);

    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(s, ids[0], &steps, NULL, 0), 0));
    cr_assert(eq(sz, json_object_size(steps), 1));
    cr_assert(json_object_get(steps, "s1") != NULL);
    json_decref(steps);
    cr_assert(eq(int, store_load_steps(s, ids[1], &steps, NULL, 0), 0));
    cr_assert(eq(sz, json_object_size(steps), 2));
    cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(steps, "s2"), "error")),
                 1));
    json_decref(steps);
    json_t *done_job = get_job(s, ids[2]);
    cr_assert(eq(str, (char *)job_str(done_job, "state"), "succeeded"));
    json_decref(done_job);
    store_close(s);
}

Test(store, purge_removes_jobs_finished_before_a_time)
{
    store_t *s = open_store();
    char ids[4][STORE_ID_SIZE];
    for (int i = 0; i < 4; i++)
        insert_sync(s, "wf", NULL, ids[i]);
    done_t d;
    done_init(&d);
    json_t *v = json_true();
    cr_assert(eq(int, store_checkpoint_step(s, ids[0], "s", v, NULL, 0, on_done, &d), 0));
    cr_assert(eq(int, store_checkpoint_step(s, ids[3], "s", v, NULL, 0, on_done, &d), 0));
    run_until(&d.calls, 2);
    cr_assert(eq(int, finish_sync(s, ids[0], STORE_SUCCEEDED, 1000), 0));
    cr_assert(eq(int, finish_sync(s, ids[1], STORE_FAILED, 2000), 0));
    cr_assert(eq(int, finish_sync(s, ids[2], STORE_CANCELLED, 3000), 0));

    done_init(&d);
    cr_assert(eq(int, store_purge_finished(s, 2500, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(i64, d.count, 2));
    cr_assert(eq(str, d.id, ""));

    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, ids[0], &job, NULL, 0), -ENOENT));
    cr_assert(eq(int, store_get_job(s, ids[1], &job, NULL, 0), -ENOENT));
    json_decref(get_job(s, ids[2]));
    json_decref(get_job(s, ids[3])); /* queued: never purged */

    raw_db *db = raw_connect();
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM steps"), 1)); /* cascaded */
    raw_close(db);
    store_close(s);
}

Test(store, close_commits_everything_queued)
{
    store_t *s = open_store();
    done_t d;
    done_init(&d);
    for (int i = 0; i < 200; i++) {
        store_job_spec_t spec = {.workflow = "wf"};
        cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    }
    store_close(s); /* no reactor pass: the callbacks run inside close */
    cr_assert(eq(int, d.calls, 200));
    cr_assert(eq(int, d.ok, 200));
    cr_assert(eq(int, d.off_thread, 0));
    cr_assert(eq(int, reactor_run_once(g_r, 0), 0)); /* nothing left behind */

    s = open_store();
    json_t *jobs = NULL;
    store_list_query_t q = {.limit = 1000};
    cr_assert(eq(int, store_list_jobs(s, &q, &jobs, NULL, 0), 0));
    cr_assert(eq(sz, json_array_size(jobs), 200));
    json_decref(jobs);
    store_close(s);
}

typedef struct requeue {
    store_t *s;
    int calls, refused;
} requeue;

static void on_done_requeue(void *ud, const store_result_t *res)
{
    (void)res;
    requeue *rq = ud;
    rq->calls++;
    store_job_spec_t spec = {.workflow = "late"};
    if (store_insert_job(rq->s, &spec, on_done_requeue, rq) == -ESHUTDOWN)
        rq->refused++;
}

Test(store, writes_during_close_are_refused_and_never_called_back)
{
    store_t *s = open_store();
    requeue rq = {.s = s};
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done_requeue, &rq), 0));
    store_close(s);
    cr_assert(eq(int, rq.calls, 1));
    cr_assert(eq(int, rq.refused, 1));
}

/* ---- ids */

#ifndef STORE_TEST_PG /* no store: once is enough */
Test(store, ids_are_sorted_and_unique_within_one_millisecond)
{
    store_id_gen_t gen = {0};
    const uint64_t ms = 1700000000000;
    char prev[STORE_ID_SIZE], cur[STORE_ID_SIZE];
    cr_assert(eq(int, store_id_next(&gen, ms, prev), 0));
    cr_assert(store_id_valid(prev));
    for (int i = 1; i < 100000; i++) {
        cr_assert(eq(int, store_id_next(&gen, ms, cur), 0));
        if (strcmp(prev, cur) >= 0 || strncmp(prev, cur, 10) != 0 || !store_id_valid(cur))
            cr_fatal("id %d: %s after %s", i, cur, prev);
        memcpy(prev, cur, sizeof cur);
    }
    /* A clock that steps back still gives a larger id; a later one, too. */
    cr_assert(eq(int, store_id_next(&gen, ms - 5, cur), 0));
    cr_assert(strcmp(cur, prev) > 0);
    memcpy(prev, cur, sizeof cur);
    cr_assert(eq(int, store_id_next(&gen, ms + 1, cur), 0));
    cr_assert(strcmp(cur, prev) > 0);
    cr_assert(strncmp(cur, prev, 10) != 0);
    cr_assert(eq(int, store_id_next(&gen, UINT64_C(1) << 48, cur), -EOVERFLOW));

    /* The time prefix is the time, in base32. */
    store_id_gen_t g2 = {0};
    cr_assert(eq(int, store_id_next(&g2, 1469918176385, cur), 0));
    cr_assert(eq(int, strncmp(cur, "01ARYZ6S41", 10), 0), "%s", cur);
}
#endif

Test(store, new_job_ids_increase_across_many_calls)
{
    store_t *s = open_store();
    char prev[STORE_ID_SIZE] = "", cur[STORE_ID_SIZE];
    for (int i = 0; i < 100000; i++) {
        cr_assert(eq(int, store_new_job_id(s, cur), 0));
        if (strcmp(prev, cur) >= 0 || !store_id_valid(cur))
            cr_fatal("id %d: %s after %s", i, cur, prev);
        memcpy(prev, cur, sizeof cur);
    }
    store_close(s);
}

#ifndef STORE_TEST_PG
Test(store, id_validation)
{
    cr_assert(store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    cr_assert(store_id_valid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
    cr_assert(truth(!store_id_valid("81ARZ3NDEKTSV4RRFFQ69G5FAV"))); /* beyond 48 bits */
    cr_assert(truth(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAv")));
    cr_assert(truth(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAU")));
    cr_assert(truth(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FA")));
    cr_assert(truth(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAVV")));
    cr_assert(truth(!store_id_valid("")));
    cr_assert(truth(!store_id_valid(NULL)));
}
#endif

/* ---- v3: workflow sources, attempts and crash counts */

static void insert_with_source(store_t *s, const char *version, const char *text,
                               char id[STORE_ID_SIZE])
{
    done_t d;
    done_init(&d);
    store_job_spec_t spec = { .workflow = "wf", .version = version, .source = text,
                              .source_len = strlen(text) };
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    snprintf(id, STORE_ID_SIZE, "%s", d.id);
}

#ifndef STORE_TEST_PG /* loom.db's migrations */
/* What a v5 daemon left has no waits column (its state CHECK does not
 * allow 'waiting' either, but a test cannot take that back). */
/* What a v6 daemon left has no provider batches. */
#define DROP_V7 "DROP TABLE batch_lines; DROP TABLE batches;"

#define DROP_V6 DROP_V7 "ALTER TABLE jobs DROP COLUMN waits;"

/* What a v4 daemon left has no spend ledger. */
#define DROP_V5 DROP_V6 "DROP TABLE spend;"

/* What a v3 daemon left has no v4 columns (tenant, budget, traceparent,
 * cost) and no tenant index. */
#define DROP_V4 DROP_V5 \
    "DROP INDEX jobs_by_tenant; ALTER TABLE jobs DROP COLUMN tenant;" \
    "ALTER TABLE jobs DROP COLUMN budget; ALTER TABLE jobs DROP COLUMN traceparent;" \
    "ALTER TABLE jobs DROP COLUMN cost;"

Test(store, v2_database_is_migrated_to_v7)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);
    /* make it what a v2 daemon left: no v3 columns, no sources table */
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, DROP_V4 "DROP TABLE sources; DROP INDEX jobs_by_version;"
                 "ALTER TABLE jobs DROP COLUMN attempt; ALTER TABLE jobs DROP COLUMN crashes;"
                 "ALTER TABLE jobs DROP COLUMN crash; PRAGMA user_version = 2;");
    sqlite3_close(db);
    s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "attempt")), 1));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "crashes")), 0));
    cr_assert(truth(json_is_null(json_object_get(job, "crash"))));
    cr_assert(eq(str, (char *)job_str(job, "tenant"), "default"));
    json_decref(job);
    char id2[STORE_ID_SIZE];
    insert_with_source(s, "00000000000000aa", "loom: 1", id2);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sources"), 1));
    sqlite3_close(db);
}

Test(store, v3_database_is_migrated_to_v7)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, DROP_V4 "PRAGMA user_version = 3;");
    sqlite3_close(db);
    s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "tenant"), "default"), "a job from before tenants is the default tenant's");
    cr_assert(truth(json_is_null(json_object_get(job, "cost"))));
    cr_assert(truth(json_is_null(json_object_get(job, "budget"))));
    json_decref(job);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs_by_tenant'"), 1));
    sqlite3_close(db);
}

Test(store, v4_database_is_migrated_to_v7)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, DROP_V5 "PRAGMA user_version = 4;");
    sqlite3_close(db);
    s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "workflow"), "wf"), "the jobs are kept");
    json_decref(job);
    json_t *spend = NULL;
    cr_assert(eq(int, store_load_spend(s, "2026-12-03", "2026-12", &spend, err, sizeof err), 0),
              "%s", err);
    cr_assert(eq(sz, json_object_size(spend), 0));
    json_decref(spend);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'spend'"), 1));
    sqlite3_close(db);
}

#endif

/* v5: what each tenant spent, per UTC day and month, adds up across writes
 * and is read back for the periods asked (a restart's budgets). */
Test(store, spend_ledger_adds_up_per_tenant_and_period)
{
    char err[512] = "";
    store_t *s = open_store();
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_add_spend(s, "t", "2026-12-03", "2026-12", 0.25, on_done, &d), 0));
    cr_assert(eq(int, store_add_spend(s, "t", "2026-12-03", "2026-12", 0.5, on_done, &d), 0));
    cr_assert(eq(int, store_add_spend(s, "t", "2026-12-02", "2026-12", 1, on_done, &d), 0));
    cr_assert(eq(int, store_add_spend(s, "u", "2026-12-03", "2026-12", 2, on_done, &d), 0));
    cr_assert(eq(int, store_add_spend(s, "t", "2026-11-30", "2026-11", 4, on_done, &d), 0));
    run_until(&d.calls, 5);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, store_add_spend(s, "t", "2026-12-03", "2026-12", -1, NULL, NULL), -EINVAL));
    json_t *spend = NULL;
    cr_assert(eq(int, store_load_spend(s, "2026-12-03", "2026-12", &spend, err, sizeof err), 0),
              "%s", err);
    json_t *t = json_object_get(spend, "t"), *u = json_object_get(spend, "u");
    cr_assert(eq(sz, json_object_size(spend), 2));
    cr_assert(eq(dbl, json_number_value(json_object_get(t, "2026-12-03")), 0.75));
    cr_assert(eq(dbl, json_number_value(json_object_get(t, "2026-12")), 1.75));
    cr_assert(eq(sz, json_object_size(t), 2), "other days and months are not read");
    cr_assert(eq(dbl, json_number_value(json_object_get(u, "2026-12-03")), 2));
    json_decref(spend);
    store_close(s);
}

/* v4: a job's tenant, budget and traceparent are kept from its insert, its
 * cost from its finish, and a list can ask for one tenant's jobs. */
Test(store, tenant_budget_traceparent_and_cost_are_kept)
{
    store_t *s = open_store();
    done_t d;
    done_init(&d);
    json_t *budget = json_pack("{s:f}", "usd", 2.5);
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    store_job_spec_t spec = {.workflow = "wf", .tenant = "team-a", .budget = budget,
                             .traceparent = tp};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    char a[STORE_ID_SIZE], b[STORE_ID_SIZE];
    memcpy(a, d.id, STORE_ID_SIZE);
    json_decref(budget);
    insert_sync(s, "wf", NULL, b);

    done_init(&d);
    store_outcome_t o = {.state = STORE_SUCCEEDED, .has_cost = true, .cost = 0.125};
    cr_assert(eq(int, store_finish_job(s, a, &o, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);

    json_t *job = get_job(s, a);
    cr_assert(eq(str, (char *)job_str(job, "tenant"), "team-a"));
    cr_assert(eq(str, (char *)job_str(job, "traceparent"), (char *)tp));
    cr_assert(eq(dbl, json_real_value(json_object_get(json_object_get(job, "budget"), "usd")), 2.5));
    cr_assert(eq(dbl, json_real_value(json_object_get(job, "cost")), 0.125));
    json_decref(job);
    job = get_job(s, b);
    cr_assert(eq(str, (char *)job_str(job, "tenant"), "default"));
    cr_assert(truth(json_is_null(json_object_get(job, "cost"))));
    json_decref(job);

    char err[256] = "";
    json_t *jobs = NULL;
    store_list_query_t q = {.tenant = "team-a"};
    cr_assert(eq(int, store_list_jobs(s, &q, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 1));
    json_t *row = json_array_get(jobs, 0);
    cr_assert(eq(str, (char *)job_str(row, "id"), a));
    cr_assert(eq(str, (char *)job_str(row, "tenant"), "team-a"));
    cr_assert(eq(dbl, json_real_value(json_object_get(row, "cost")), 0.125));
    json_decref(jobs);
    q = (store_list_query_t){.tenant = "default", .state = "queued"};
    cr_assert(eq(int, store_list_jobs(s, &q, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 1));
    cr_assert(eq(str, (char *)job_str(json_array_get(jobs, 0), "id"), b));
    json_decref(jobs);
    store_close(s);
}

Test(store, a_version_source_is_kept_once_and_purged_with_its_last_job)
{
    store_t *s = open_store();
    const char *text = "loom: 1\nname: wf\ndo: { call: hi }\n";
    char a[STORE_ID_SIZE], b[STORE_ID_SIZE], c[STORE_ID_SIZE];
    insert_with_source(s, "00000000000000a1", text, a);
    insert_with_source(s, "00000000000000a1", text, b);
    insert_with_source(s, "00000000000000b2", "other", c);
    char *got = NULL, *name = NULL, err[256];
    size_t len = 0;
    cr_assert(eq(int, store_get_source(s, "00000000000000a1", &got, &len, &name, err, sizeof err), 0),
              "%s", err);
    cr_assert(eq(str, got, (char *)text));
    cr_assert(eq(sz, len, strlen(text)));
    cr_assert(eq(str, name, "wf"));
    free(got);
    free(name);
    cr_assert(eq(int, store_get_source(s, "ffffffffffffffff", &got, &len, NULL, err, sizeof err),
                 -ENOENT));
    /* one job of a1 purged: its source stays for the other */
    cr_assert(eq(int, finish_sync(s, a, STORE_SUCCEEDED, 1000), 0));
    cr_assert(eq(int, finish_sync(s, c, STORE_SUCCEEDED, 1000), 0));
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_purge_finished(s, 2000, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(i64, d.count, 2));
    cr_assert(eq(int, store_get_source(s, "00000000000000a1", &got, &len, NULL, err, sizeof err), 0));
    free(got);
    cr_assert(eq(int, store_get_source(s, "00000000000000b2", &got, &len, NULL, err, sizeof err),
                 -ENOENT), "b2's only job went, and its source with it");
    /* a submit after the purge stores the source again, even though the store
     * had seen that version before */
    char e[STORE_ID_SIZE];
    insert_with_source(s, "00000000000000b2", "other", e);
    cr_assert(eq(int, store_get_source(s, "00000000000000b2", &got, &len, NULL, err, sizeof err), 0));
    free(got);
    cr_assert(eq(int, finish_sync(s, b, STORE_SUCCEEDED, 1000), 0));
    done_init(&d);
    cr_assert(eq(int, store_purge_finished(s, 2000, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, store_get_source(s, "00000000000000a1", &got, &len, NULL, err, sizeof err),
                 -ENOENT));
    store_close(s);
}

Test(store, retry_makes_a_failed_job_a_new_attempt_keeping_its_steps)
{
    store_t *s = open_store();
    char id[STORE_ID_SIZE], q[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    insert_sync(s, "wf", NULL, q);
    done_t d;
    done_init(&d);
    json_t *v = json_string("kept");
    cr_assert(eq(int, store_checkpoint_step(s, id, "k", v, NULL, 0, on_done, &d), 0));
    json_decref(v);
    json_t *crash = json_pack("{s:s}", "step", "do");
    cr_assert(eq(int, store_set_crashes(s, id, 1, crash, on_done, &d), 0));
    json_decref(crash);
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    json_t *job = get_job(s, id);
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "crashes")), 1));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(job, "crash"), "step")),
                 "do"));
    json_decref(job);
    /* only a failed job may be retried */
    done_init(&d);
    cr_assert(eq(int, store_retry_job(s, id, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, -EPERM));
    cr_assert(strstr(d.error, "queued") != NULL, "%s", d.error);
    cr_assert(eq(int, finish_sync(s, id, STORE_FAILED, 0), 0));
    done_init(&d);
    cr_assert(eq(int, store_retry_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_retry_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", on_done, &d), 0));
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.status, -ENOENT));
    job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "queued"));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "attempt")), 2));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "crashes")), 0));
    cr_assert(truth(json_is_null(json_object_get(job, "finished_ms"))));
    cr_assert(truth(json_is_null(json_object_get(job, "error"))));
    json_decref(job);
    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(s, id, &steps, NULL, 0), 0));
    cr_assert(json_object_get(steps, "k") != NULL);
    json_decref(steps);
    /* crash counts of a finished job cannot change */
    cr_assert(eq(int, finish_sync(s, q, STORE_SUCCEEDED, 0), 0));
    done_init(&d);
    cr_assert(eq(int, store_set_crashes(s, q, 2, NULL, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, -EALREADY));
    store_close(s);
}

/* v6: a job parks as waiting with what it waits for, is neither
 * unfinished (nothing to resume) nor finished, is listed by its state,
 * wakes to queued once (a second wake says it is not waiting), and can
 * be cancelled while it waits. */
Test(store, waiting_job_parks_wakes_and_is_listed)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    json_t *waits = json_pack("[{s:s, s:s, s:I}]", "key", "k1", "signal", "approve",
                              "deadline_ms", (json_int_t)1234);
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_set_waiting(s, id, waits, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "waiting"));
    cr_assert(truth(json_equal(json_object_get(job, "waits"), waits)));
    cr_assert(truth(json_is_null(json_object_get(job, "finished_ms"))));
    json_decref(job);
    json_t *jobs = NULL;
    cr_assert(eq(int, store_unfinished_jobs(s, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 0), "a waiting job is not resumed");
    json_decref(jobs);
    cr_assert(eq(int, store_waiting_jobs(s, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 1));
    cr_assert(eq(str, (char *)job_str(json_array_get(jobs, 0), "id"), id));
    json_decref(jobs);
    char ids[64];
    store_list_query_t q = { .state = "waiting" };
    list_ids(s, &q, ids, sizeof ids);
    cr_assert(strncmp(ids, id, STORE_ID_LEN) == 0 && strlen(ids) == STORE_ID_LEN + 1, "%s", ids);

    done_init(&d);
    cr_assert(eq(int, store_wake_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_wake_job(s, id, on_done, &d), 0));
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.ok, 1));
    cr_assert(eq(int, d.status, -EALREADY), "%s", d.error);
    cr_assert(strstr(d.error, "not waiting") != NULL, "%s", d.error);
    job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "queued"));
    cr_assert(truth(json_equal(json_object_get(job, "waits"), waits)), "the waits stay recorded");
    json_decref(job);

    done_init(&d);
    cr_assert(eq(int, store_set_waiting(s, id, waits, on_done, &d), 0));
    cr_assert(eq(int, store_cancel_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_set_waiting(s, id, waits, on_done, &d), 0));
    run_until(&d.calls, 3);
    cr_assert(eq(int, d.ok, 2));
    cr_assert(eq(int, d.status, -EALREADY), "a finished job never waits again");
    job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "state"), "cancelled"));
    json_decref(job);
    json_decref(waits);
    store_close(s);
}

#ifndef STORE_TEST_PG /* loom.db's migrations */
Test(store, v5_database_is_migrated_to_v7)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, DROP_V6 "PRAGMA user_version = 5;");
    sqlite3_close(db);
    s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "workflow"), "wf"), "the jobs are kept");
    cr_assert(truth(json_is_null(json_object_get(job, "waits"))));
    json_decref(job);
    json_t *w = json_pack("[]");
    done_t d;
    done_init(&d);
    cr_assert(eq(int, store_set_waiting(s, id, w, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "the rebuilt table takes the new state: %s", d.error);
    json_decref(w);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs_by_tenant'"), 1));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0));
    sqlite3_close(db);
}

Test(store, v6_database_is_migrated_to_v7)
{
    char err[512] = "";
    store_t *s = open_store();
    char id[STORE_ID_SIZE];
    insert_sync(s, "wf", NULL, id);
    store_close(s);
    sqlite3 *db = raw_open(SQLITE_OPEN_READWRITE);
    raw_exec(db, DROP_V7 "PRAGMA user_version = 6;");
    sqlite3_close(db);
    s = store_open(g_dir, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    json_t *job = get_job(s, id);
    cr_assert(eq(str, (char *)job_str(job, "workflow"), "wf"), "the jobs are kept");
    json_decref(job);
    json_t *batches = NULL;
    cr_assert(eq(int, store_batch_load(s, &batches, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(batches), 0), "the new tables are there, empty");
    json_decref(batches);
    store_close(s);
    db = raw_open(SQLITE_OPEN_READONLY);
    cr_assert(eq(i64, raw_int(db, "PRAGMA user_version"), 7));
    cr_assert(eq(i64, raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'batch_lines_by_job'"), 1));
    sqlite3_close(db);
}
#endif
