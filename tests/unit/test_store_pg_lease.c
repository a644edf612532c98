/* test_store_pg_lease.c -- what the PostgreSQL store adds to the store's
 * interface: versioned migrations (fresh, newer than known, two daemons
 * at once), leases and epoch fencing between two stores with different
 * node names, claims with SKIP LOCKED, the heartbeat, the notifications and
 * a restart of PostgreSQL under a held checkpoint.
 *
 * Each test gets a fresh database of the test cluster (tests/unit/pgtest.h)
 * and a reactor it drives by hand; every wait has a deadline. The restart
 * test restarts a cluster of its own, so the tests beside it see no
 * outage. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/store/store.h"
#include "tests/unit/pgtest.h"

/* ---- fixture */

static reactor_t *g_r;
static char *g_uri; /* this test's own database */

static void setup(void)
{
    cr_assert(pgtest_admin_uri() != NULL, "no PostgreSQL for the tests (see stderr)");
    g_uri = pgtest_fresh_db("lease");
    cr_assert(g_uri != NULL, "cannot create a test database");
    g_r = reactor_new();
    cr_assert(g_r != NULL);
}

static void teardown(void)
{
    reactor_free(g_r);
    free(g_uri);
}

TestSuite(store_pg, .init = setup, .fini = teardown, .timeout = 90);

/* ---- helpers */

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

typedef struct done {
    int calls, status;
    char id[STORE_ID_SIZE];
    char error[256];
} done_t;

static void on_done(void *ud, const store_result_t *res)
{
    done_t *d = ud;
    d->calls++;
    d->status = res->status;
    snprintf(d->id, sizeof d->id, "%s", res->job_id ? res->job_id : "");
    snprintf(d->error, sizeof d->error, "%s", res->error);
}

typedef struct claimed {
    int calls, status;
    json_t *jobs; /* every job claimed so far (array) */
} claimed_t;

static void on_claim(void *ud, int status, const json_t *jobs)
{
    claimed_t *c = ud;
    c->calls++;
    c->status = status;
    if (!c->jobs)
        c->jobs = json_array();
    if (jobs)
        json_array_extend(c->jobs, (json_t *)jobs);
}

/* Drives the reactor until *COUNTER reaches N, for at most SECONDS. */
static void run_until_for(const int *counter, int n, double seconds)
{
    double deadline = now_s() + seconds;
    while (*counter < n && now_s() < deadline)
        cr_assert(reactor_run_once(g_r, 20) >= 0);
    cr_assert(eq(int, *counter, n), "timed out waiting for completions");
}

static void run_until(const int *counter, int n)
{
    run_until_for(counter, n, 30);
}

static store_t *open_node(const char *node, int64_t lease_ms)
{
    char err[512] = "";
    store_options_t o = {.node = node, .lease_ms = lease_ms};
    store_t *s = store_open(g_uri, g_r, &o, err, sizeof err);
    cr_assert(s != NULL, "store_open: %s", err);
    cr_assert(truth(store_shared(s)));
    cr_assert(eq(str, (char *)store_node(s), (char *)node));
    return s;
}

static void insert(store_t *s, char id[STORE_ID_SIZE])
{
    done_t d = {0};
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "insert: %s", d.error);
    memcpy(id, d.id, STORE_ID_SIZE);
}

static int checkpoint(store_t *s, const char *id, const char *key, char *err, size_t errlen)
{
    done_t d = {0};
    json_t *out = json_string("out");
    cr_assert(eq(int, store_checkpoint_step(s, id, key, out, NULL, 0, on_done, &d), 0));
    json_decref(out);
    run_until(&d.calls, 1);
    if (err)
        snprintf(err, errlen, "%s", d.error);
    return d.status;
}

static int finish(store_t *s, const char *id, store_state_t state)
{
    done_t d = {0};
    store_outcome_t o = {.state = state};
    cr_assert(eq(int, store_finish_job(s, id, &o, on_done, &d), 0));
    run_until(&d.calls, 1);
    return d.status;
}

static PGconn *raw(void)
{
    PGconn *c = PQconnectdb(g_uri);
    cr_assert(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

/* Runs SQL on C; the first column of its first row as an integer (0: none). */
static long long raw_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    long long v = st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)
                      ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return v;
}

/* The database name of g_uri (its path). */
static const char *db_name(void)
{
    const char *slash = strrchr(g_uri, '/');
    return slash ? slash + 1 : g_uri;
}

/* Claims with S until it has gotten N jobs, for at most SECONDS. */
static void claim_until(store_t *s, claimed_t *c, size_t n, double seconds)
{
    double deadline = now_s() + seconds;
    while ((!c->jobs || json_array_size(c->jobs) < n) && now_s() < deadline) {
        int calls = c->calls;
        cr_assert(eq(int, store_claim_jobs(s, n, on_claim, c), 0));
        run_until(&c->calls, calls + 1);
        cr_assert(eq(int, c->status, 0));
        if (json_array_size(c->jobs) < n)
            reactor_run_once(g_r, 20); /* the lease has not expired yet */
    }
    cr_assert(eq(sz, json_array_size(c->jobs), n), "claimed %zu jobs, not %zu",
              json_array_size(c->jobs), n);
}

/* ---- locations */

Test(store_pg, location_redacted)
{
    char out[256];
    cr_assert(truth(store_location_is_pg("postgresql://h/db")));
    cr_assert(truth(store_location_is_pg("postgres://h/db")));
    cr_assert(truth(!store_location_is_pg("./loom-state")));
    store_location_redact("postgresql://loom:s3cret@127.0.0.1:5432/db?sslmode=disable", out,
                          sizeof out);
    cr_assert(eq(str, out, "postgresql://loom:***@127.0.0.1:5432/db?sslmode=disable"));
    store_location_redact("postgres://u@h/db?password=s3cret&application_name=x", out,
                          sizeof out);
    cr_assert(eq(str, out, "postgres://u@h/db?password=***&application_name=x"));
    store_location_redact("host=h password='a b' dbname=x", out, sizeof out);
    cr_assert(eq(str, out, "host=h password=*** dbname=x"));
    store_location_redact("postgresql://h/db", out, sizeof out);
    cr_assert(eq(str, out, "postgresql://h/db"));
}

/* A password never reaches an error: a refused connection names the
 * location redacted. */
Test(store_pg, password_never_in_errors)
{
    char uri[512], err[512] = "";
    /* a port nothing listens on (the cluster's own port + 1 is not promised
     * free, so a closed port of the discard service) */
    snprintf(uri, sizeof uri, "postgresql://loom:topsecret@127.0.0.1:9/x");
    store_t *s = store_open(uri, g_r, NULL, err, sizeof err);
    cr_assert(s == NULL);
    cr_assert(truth(strstr(err, "topsecret") == NULL), "%s", err);
    cr_assert(truth(strstr(err, "***") != NULL), "%s", err);
    /* libpq quotes a token it cannot parse: a password of stars, cut from
     * the message, leaves it readable (and the cutting ends) */
    snprintf(uri, sizeof uri, "postgresql://loom:*%%zz@127.0.0.1:9/x");
    s = store_open(uri, g_r, NULL, err, sizeof err);
    cr_assert(s == NULL);
    cr_assert(truth(strstr(err, "%zz") == NULL), "%s", err);
}

/* A password file is read (its first line) and named in errors; the test
 * cluster trusts local connections, so the password itself is not
 * checked here. */
Test(store_pg, password_file)
{
    char path[] = "/tmp/loom-pgpass-XXXXXX", err[512] = "";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert(eq(int, (int)write(fd, "s3cret\nignored\n", 15), 15));
    close(fd);
    store_options_t o = {.node = "a", .password_file = path};
    store_t *s = store_open(g_uri, g_r, &o, err, sizeof err);
    cr_assert(s != NULL, "store_open: %s", err);
    store_close(s);
    unlink(path);
    errno = 0;
    s = store_open(g_uri, g_r, &o, err, sizeof err);
    cr_assert(s == NULL);
    cr_assert(eq(int, errno, ENOENT));
    cr_assert(truth(strstr(err, path) != NULL), "%s", err);
}

/* ---- migrations */

Test(store_pg, migrations_fresh_and_newer)
{
    store_t *s = open_node("a", 0);
    cr_assert(eq(i64, store_lease_ms(s), 10000));
    PGconn *c = raw();
    cr_assert(eq(i64, raw_int(c, "SELECT max(version) FROM loom_schema"), 1));
    /* the shared limits' tables came with step 1 */
    cr_assert(eq(i64, raw_int(c, "SELECT count(*) FROM loom_rl_bucket"), 0));
    store_close(s);
    /* opening again runs nothing */
    s = open_node("a", 0);
    store_close(s);
    cr_assert(eq(i64, raw_int(c, "SELECT count(*) FROM loom_schema"), 1));

    raw_int(c, "INSERT INTO loom_schema (version) VALUES (99)");
    char err[512] = "";
    errno = 0;
    s = store_open(g_uri, g_r, NULL, err, sizeof err);
    cr_assert(s == NULL);
    cr_assert(eq(int, errno, ENOTSUP));
    cr_assert(truth(strstr(err, "schema version 99") != NULL), "%s", err);
    PQfinish(c);
}

/* A database another program uses (a table "jobs", no loom_schema) is
 * refused, not half-used. */
Test(store_pg, another_programs_database_is_refused)
{
    PGconn *c = raw();
    raw_int(c, "CREATE TABLE jobs (x int)");
    PQfinish(c);
    char err[512] = "";
    errno = 0;
    store_t *s = store_open(g_uri, g_r, NULL, err, sizeof err);
    cr_assert(s == NULL);
    cr_assert(eq(int, errno, EINVAL));
    cr_assert(truth(strstr(err, "not a Loom state database") != NULL), "%s", err);
}

typedef struct opener {
    reactor_t *r;
    const char *node;
    store_t *s;
    char err[512];
} opener_t;

static void *open_thread(void *arg)
{
    opener_t *o = arg;
    store_options_t opts = {.node = o->node};
    o->s = store_open(g_uri, o->r, &opts, o->err, sizeof o->err);
    return NULL;
}

Test(store_pg, migrations_concurrent)
{
    opener_t o[2] = {{.node = "a"}, {.node = "b"}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        o[i].r = reactor_new();
        cr_assert(o[i].r != NULL);
        cr_assert(eq(int, pthread_create(&t[i], NULL, open_thread, &o[i]), 0));
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert(o[i].s != NULL, "store_open %s: %s", o[i].node, o[i].err);
        store_close(o[i].s);
        reactor_free(o[i].r);
    }
    PGconn *c = raw();
    cr_assert(eq(i64, raw_int(c, "SELECT count(*) FROM loom_schema"), 1));
    PQfinish(c);
}

/* ---- the interface over PostgreSQL: each read's shape */

Test(store_pg, reads_and_writes)
{
    store_t *s = open_node("a", 0);
    done_t d = {0};
    json_t *input = json_pack("{s:i}", "n", 1), *budget = json_pack("{s:f}", "usd", 2.5);
    store_job_spec_t spec = {.workflow = "wf", .version = "v1hash", .input = input,
                             .priority = 3, .idempotency_key = "key-1", .has_peer = true,
                             .peer_uid = 1, .peer_gid = 2, .peer_pid = 3,
                             .source = "steps: []\n", .source_len = 10, .tenant = "t1",
                             .budget = budget, .traceparent = "00-abc"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    char id[STORE_ID_SIZE];
    memcpy(id, d.id, sizeof id);
    /* the same key again: the existing job */
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d), 0));
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.status, 0));
    cr_assert(eq(str, d.id, id));
    json_decref(input);
    json_decref(budget);

    char err[256];
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, id, &job, err, sizeof err), 0), "%s", err);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(job, "state")), "queued"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(job, "node")), "a"));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "epoch")), 1));
    cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(job, "input"), "n")),
                 1));
    cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(job, "peer"), "pid")),
                 3));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(job, "tenant")), "t1"));
    cr_assert(truth(json_is_null(json_object_get(job, "finished_ms"))));
    json_decref(job);
    cr_assert(eq(int, store_get_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &job, err, sizeof err),
                 -ENOENT));

    char *text = NULL, *wf = NULL;
    size_t len = 0;
    cr_assert(eq(int, store_get_source(s, "v1hash", &text, &len, &wf, err, sizeof err), 0));
    cr_assert(eq(str, text, "steps: []\n"));
    cr_assert(eq(str, wf, "wf"));
    free(text);
    free(wf);

    cr_assert(eq(int, store_set_running(s, id, 0, on_done, &d), 0));
    run_until(&d.calls, 3);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, checkpoint(s, id, "b", NULL, 0), 0));
    cr_assert(eq(int, checkpoint(s, id, "a", NULL, 0), 0));
    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(s, id, &steps, err, sizeof err), 0));
    cr_assert(eq(sz, json_object_size(steps), 2));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(steps, "a"),
                                                                 "output")), "out"));
    json_decref(steps);

    cr_assert(eq(int, store_add_spend(s, "t1", "2026-01-02", "2026-01", 0.25, on_done, &d), 0));
    cr_assert(eq(int, store_add_spend(s, "t1", "2026-01-02", "2026-01", 0.5, on_done, &d), 0));
    run_until(&d.calls, 5);
    json_t *spend = NULL;
    cr_assert(eq(int, store_load_spend(s, "2026-01-02", "2026-01", &spend, err, sizeof err), 0));
    cr_assert(eq(dbl, json_real_value(json_object_get(json_object_get(spend, "t1"), "2026-01")),
                 0.75));
    json_decref(spend);

    json_t *list = NULL;
    store_list_query_t q = {.tenant = "t1"};
    cr_assert(eq(int, store_list_jobs(s, &q, &list, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(list), 1));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(list, 0),
                                                                 "node")), "a"));
    json_decref(list);

    store_outcome_t o = {.state = STORE_FAILED, .has_cost = true, .cost = 0.125};
    cr_assert(eq(int, store_finish_job(s, id, &o, on_done, &d), 0));
    run_until(&d.calls, 6);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, finish(s, id, STORE_SUCCEEDED), -EALREADY));
    cr_assert(eq(int, store_retry_job(s, id, on_done, &d), 0));
    run_until(&d.calls, 7);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, store_retry_job(s, id, on_done, &d), 0));
    run_until(&d.calls, 8);
    cr_assert(eq(int, d.status, -EPERM));
    cr_assert(eq(str, d.error, (char *)(strcpy(err, "job "), strcat(err, id),
                                        strcat(err, " is queued, not failed"))));
    cr_assert(eq(int, store_get_job(s, id, &job, err, sizeof err), 0));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "attempt")), 2));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "epoch")), 2));
    json_decref(job);

    /* park and wake */
    json_t *waits = json_pack("[{s:s}]", "signal", "go");
    cr_assert(eq(int, store_set_waiting(s, id, waits, on_done, &d), 0));
    json_decref(waits);
    run_until(&d.calls, 9);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    json_t *waiting = NULL;
    cr_assert(eq(int, store_waiting_jobs(s, &waiting, err, sizeof err), 0));
    cr_assert(eq(sz, json_array_size(waiting), 1));
    cr_assert(truth(json_is_null(json_object_get(json_array_get(waiting, 0), "node"))));
    json_decref(waiting);
    cr_assert(eq(int, store_wake_job(s, id, on_done, &d), 0));
    cr_assert(eq(int, store_wake_job(s, id, on_done, &d), 0));
    run_until(&d.calls, 11);
    cr_assert(eq(int, d.status, -EALREADY));
    cr_assert(eq(int, finish(s, id, STORE_SUCCEEDED), 0));

    cr_assert(eq(int, store_purge_finished(s, store_now_ms() + 1000, on_done, &d), 0));
    run_until(&d.calls, 12);
    cr_assert(eq(int, d.status, 0));
    cr_assert(eq(int, store_get_source(s, "v1hash", &text, &len, NULL, err, sizeof err),
                 -ENOENT));
    store_close(s);
}

/* A request refused for its own data (a duplicate id) fails alone; the
 * others queued with it commit, whether or not they shared a transaction. */
Test(store_pg, one_bad_request_does_not_fail_its_batch)
{
    store_t *s = open_node("a", 0);
    char id[STORE_ID_SIZE];
    cr_assert(eq(int, store_new_job_id(s, id), 0));
    done_t d[4] = {0};
    store_job_spec_t spec = {.id = id, .workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d[0]), 0));
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &d[1]), 0));
    json_t *v = json_true();
    cr_assert(eq(int, store_checkpoint_step(s, id, "k", v, NULL, 0, on_done, &d[2]), 0));
    json_decref(v);
    cr_assert(eq(int, store_set_running(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0, on_done, &d[3]),
                 0));
    for (int i = 0; i < 4; i++)
        run_until(&d[i].calls, 1);
    cr_assert(eq(int, d[0].status, 0), "%s", d[0].error);
    cr_assert(eq(int, d[1].status, -EEXIST), "%s", d[1].error);
    cr_assert(eq(int, d[2].status, 0), "%s", d[2].error);
    cr_assert(eq(int, d[3].status, -ENOENT), "%s", d[3].error);
    cr_assert(eq(str, d[3].error, "no job 01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    store_close(s);
}

/* ---- leases and fencing */

Test(store_pg, fencing)
{
    store_t *a = open_node("a", 200), *b = open_node("b", 200);
    char id[STORE_ID_SIZE], id2[STORE_ID_SIZE], err[256];
    insert(a, id);
    insert(a, id2);
    cr_assert(eq(int, checkpoint(a, id, "s1", NULL, 0), 0));

    /* A is cut off from the database (its connections killed, no new ones
     * allowed): its heartbeat stops and its lease runs out */
    PGconn *c = PQconnectdb(pgtest_admin_uri()); /* not from inside the database */
    cr_assert(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    char sql[512];
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false", db_name());
    raw_int(c, sql);
    snprintf(sql, sizeof sql, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND application_name = 'loomd a'", db_name());
    cr_assert(eq(i64, raw_int(c, sql), 2));

    claimed_t cl = {0};
    claim_until(b, &cl, 2, 10);
    json_t *job = json_array_get(cl.jobs, 0);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(job, "node")), "b"));
    cr_assert(eq(i64, json_integer_value(json_object_get(job, "epoch")), 2));

    /* A comes back: its writes are refused, B's go through */
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS true", db_name());
    raw_int(c, sql);
    cr_assert(eq(int, checkpoint(a, id, "s2", err, sizeof err), -ESTALE));
    char want[200];
    snprintf(want, sizeof want, "lease lost: job %s is run by b now", id);
    cr_assert(eq(str, err, want));
    cr_assert(eq(int, finish(a, id, STORE_SUCCEEDED), -ESTALE));
    done_t d = {0};
    json_t *waits = json_array();
    cr_assert(eq(int, store_set_running(a, id, 0, on_done, &d), 0));
    cr_assert(eq(int, store_set_crashes(a, id, 1, waits, on_done, &d), 0));
    cr_assert(eq(int, store_set_waiting(a, id, waits, on_done, &d), 0));
    json_decref(waits);
    run_until(&d.calls, 3);
    cr_assert(eq(int, d.status, -ESTALE), "%s", d.error);
    cr_assert(eq(int, checkpoint(b, id, "s2", NULL, 0), 0));
    cr_assert(eq(int, finish(b, id, STORE_SUCCEEDED), 0));
    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(b, id, &steps, err, sizeof err), 0));
    cr_assert(eq(sz, json_object_size(steps), 2)); /* s1 by A, s2 by B */
    json_decref(steps);
    cr_assert(eq(int, finish(a, id, STORE_SUCCEEDED), -EALREADY));

    /* anyone may cancel: A cancels B's job; B's next writes are refused,
     * a checkpoint too (unlike SQLite's), so B learns it at its next step */
    cr_assert(eq(int, finish(a, id2, STORE_CANCELLED), 0));
    cr_assert(eq(int, checkpoint(b, id2, "s9", err, sizeof err), -EALREADY));
    snprintf(want, sizeof want, "job %s is already cancelled", id2);
    cr_assert(eq(str, err, want));
    cr_assert(eq(int, finish(b, id2, STORE_SUCCEEDED), -EALREADY));

    /* a job B inserted and A cancels: B's finish is refused */
    char id3[STORE_ID_SIZE];
    insert(b, id3);
    cr_assert(eq(int, finish(a, id3, STORE_CANCELLED), 0));
    cr_assert(eq(int, finish(b, id3, STORE_FAILED), -EALREADY));

    json_decref(cl.jobs);
    PQfinish(c);
    store_close(a);
    store_close(b);
}

/* A restart of the same node re-leases its own jobs (epoch + 1), so a write
 * of its earlier life still in flight would be fenced; another node's jobs
 * are not its. */
Test(store_pg, unfinished_are_this_nodes)
{
    store_t *a = open_node("a", 60000), *b = open_node("b", 60000);
    char ida[STORE_ID_SIZE], idb[STORE_ID_SIZE], err[256];
    insert(a, ida);
    insert(b, idb);
    store_close(a);
    a = open_node("a", 60000);
    json_t *jobs = NULL;
    cr_assert(eq(int, store_unfinished_jobs(a, &jobs, err, sizeof err), 0), "%s", err);
    cr_assert(eq(sz, json_array_size(jobs), 1));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(jobs, 0), "id")),
                 ida));
    cr_assert(eq(i64, json_integer_value(json_object_get(json_array_get(jobs, 0), "epoch")), 2));
    json_decref(jobs);
    cr_assert(eq(int, checkpoint(a, ida, "k", NULL, 0), 0));
    cr_assert(eq(int, checkpoint(a, idb, "k", err, sizeof err), -ESTALE));
    /* nothing expired: nothing to claim */
    claimed_t cl = {0};
    cr_assert(eq(int, store_claim_jobs(a, 10, on_claim, &cl), 0));
    run_until(&cl.calls, 1);
    cr_assert(eq(int, cl.status, 0));
    cr_assert(eq(sz, json_array_size(cl.jobs), 0));
    json_decref(cl.jobs);
    /* a release lets B take A's job at once */
    done_t d = {0};
    cr_assert(eq(int, store_release_job(a, ida, on_done, &d), 0));
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0));
    claimed_t cb = {0};
    claim_until(b, &cb, 1, 10);
    json_decref(cb.jobs);
    store_close(a);
    store_close(b);
}

/* Two stores claiming at once never get the same job. */
Test(store_pg, claim_skip_locked)
{
    enum { N = 60 };
    store_t *x = open_node("x", 100);
    char ids[N][STORE_ID_SIZE];
    for (int i = 0; i < N; i++)
        insert(x, ids[i]);
    store_close(x); /* x is gone: its leases run out */

    store_t *b = open_node("b", 60000), *c = open_node("c", 60000);
    claimed_t cb = {0}, cc = {0};
    double deadline = now_s() + 30;
    while ((cb.jobs ? json_array_size(cb.jobs) : 0) + (cc.jobs ? json_array_size(cc.jobs) : 0)
               < N && now_s() < deadline) {
        int nb = cb.calls, nc = cc.calls;
        cr_assert(eq(int, store_claim_jobs(b, 7, on_claim, &cb), 0));
        cr_assert(eq(int, store_claim_jobs(c, 7, on_claim, &cc), 0));
        run_until(&cb.calls, nb + 1);
        run_until(&cc.calls, nc + 1);
        cr_assert(eq(int, cb.status, 0));
        cr_assert(eq(int, cc.status, 0));
    }
    cr_assert(eq(sz, json_array_size(cb.jobs) + json_array_size(cc.jobs), N));
    json_t *seen = json_object();
    json_t *all[] = {cb.jobs, cc.jobs};
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *j;
        json_array_foreach(all[k], i, j) {
            const char *id = json_string_value(json_object_get(j, "id"));
            cr_assert(truth(json_object_get(seen, id) == NULL), "job %s claimed twice", id);
            json_object_set_new(seen, id, json_true());
        }
    }
    cr_assert(eq(sz, json_object_size(seen), N));
    json_decref(seen);
    json_decref(cb.jobs);
    json_decref(cc.jobs);
    store_close(b);
    store_close(c);
}

/* The heartbeat keeps a lease alive well past its length. */
Test(store_pg, heartbeat)
{
    store_t *a = open_node("a", 300), *b = open_node("b", 300);
    char id[STORE_ID_SIZE];
    insert(a, id);
    /* three leases' time, claiming all along: nothing expires */
    double until = now_s() + 3 * 0.3;
    while (now_s() < until) {
        claimed_t cl = {0};
        cr_assert(eq(int, store_claim_jobs(b, 10, on_claim, &cl), 0));
        run_until(&cl.calls, 1);
        cr_assert(eq(int, cl.status, 0));
        cr_assert(eq(sz, json_array_size(cl.jobs), 0), "a lease expired under its heartbeat");
        json_decref(cl.jobs);
    }
    cr_assert(eq(int, checkpoint(a, id, "k", NULL, 0), 0));
    /* once A is gone, B takes the job over after the lease */
    store_close(a);
    claimed_t cl = {0};
    claim_until(b, &cl, 1, 10);
    json_decref(cl.jobs);
    store_close(b);
}

/* ---- notifications */

/* Waits for NOTIFY payloads on C until WANT (N of them) all arrived. */
static void expect_notifies(PGconn *c, const char *const *want, int n)
{
    bool got[16] = {false};
    int have = 0;
    double deadline = now_s() + 20;
    while (have < n && now_s() < deadline) {
        reactor_run_once(g_r, 10);
        cr_assert(eq(int, PQconsumeInput(c), 1));
        PGnotify *m;
        while ((m = PQnotifies(c))) {
            cr_assert(eq(str, m->relname, STORE_NOTIFY_CHANNEL));
            for (int i = 0; i < n; i++)
                if (!got[i] && strcmp(m->extra, want[i]) == 0) {
                    got[i] = true;
                    have++;
                }
            PQfreemem(m);
        }
    }
    for (int i = 0; i < n; i++)
        cr_assert(truth(got[i]), "no notification \"%s\"", want[i]);
}

Test(store_pg, notifications)
{
    PGconn *c = raw();
    raw_int(c, "LISTEN " STORE_NOTIFY_CHANNEL);
    store_t *a = open_node("a", 0);
    char id[STORE_ID_SIZE];
    insert(a, id);
    cr_assert(eq(int, checkpoint(a, id, "map/1 x", NULL, 0), 0));
    done_t d = {0};
    json_t *waits = json_array();
    cr_assert(eq(int, store_set_waiting(a, id, waits, on_done, &d), 0));
    cr_assert(eq(int, store_wake_job(a, id, on_done, &d), 0));
    json_decref(waits);
    run_until(&d.calls, 2);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, finish(a, id, STORE_SUCCEEDED), 0));
    char w[5][128];
    snprintf(w[0], sizeof w[0], "new a %s", id);
    snprintf(w[1], sizeof w[1], "step a %s map/1 x", id);
    snprintf(w[2], sizeof w[2], "waiting a %s", id);
    snprintf(w[3], sizeof w[3], "queued a %s", id);
    snprintf(w[4], sizeof w[4], "end a %s succeeded", id);
    const char *want[] = {w[0], w[1], w[2], w[3], w[4]};
    expect_notifies(c, want, 5);
    /* a step key too long for a payload is cut, and its step still lands */
    char id2[STORE_ID_SIZE], key[9000], cut[8000];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    insert(a, id2);
    cr_assert(eq(int, checkpoint(a, id2, key, NULL, 0), 0));
    /* the payload cut at 7998 bytes: "step a ID " and the key's start */
    int head = snprintf(cut, sizeof cut, "step a %s ", id2);
    memcpy(cut + head, key, 7998 - (size_t)head);
    cut[7998] = '\0';
    const char *want2[] = {cut};
    expect_notifies(c, want2, 1);
    /* a refused write announces nothing */
    cr_assert(eq(int, finish(a, id, STORE_FAILED), -EALREADY));
    reactor_run_once(g_r, 50);
    cr_assert(eq(int, PQconsumeInput(c), 1));
    PGnotify *m = PQnotifies(c);
    cr_assert(m == NULL, "unexpected notification \"%s\"", m ? m->extra : "");
    store_close(a);
    PQfinish(c);
}

/* ---- PostgreSQL restarting */

/* Node "a" on a fresh database of a cluster of the test's own, NAME (the
 * test stops or restarts it under the store), with one job, ID. */
static store_t *private_store(const char *name, char id[STORE_ID_SIZE])
{
    cr_assert(pgtest_private_cluster(name) != NULL);
    free(g_uri);
    g_uri = pgtest_fresh_db("lease");
    cr_assert(g_uri != NULL);
    store_t *a = open_node("a", 60000);
    insert(a, id);
    return a;
}

Test(store_pg, restart_holds_a_checkpoint)
{
    char id[STORE_ID_SIZE], err[256];
    store_t *a = private_store("store-pg-lease", id);
    cr_assert(eq(int, pgtest_restart(), 0));
    /* the connection the store had is gone: the checkpoint's first try
     * fails, it is held, and it commits once the store has reconnected */
    cr_assert(eq(int, checkpoint(a, id, "after", err, sizeof err), 0), "%s", err);
    store_stats_t st;
    store_get_stats(a, &st);
    cr_assert(ge(u64, st.held_tries, 1));
    cr_assert(eq(sz, st.held, 0));
    /* a read that finds its connection dead (the server restarted since
     * it was made) reconnects and answers at once, the server being back */
    json_t *steps = NULL;
    int rc = store_get_job(a, id, &steps, err, sizeof err);
    cr_assert(eq(int, rc, 0), "the first read after the restart: %s", err);
    json_decref(steps);
    steps = NULL;
    rc = -EIO;
    double deadline = now_s() + 20;
    while (rc != 0 && now_s() < deadline) {
        rc = store_load_steps(a, id, &steps, err, sizeof err);
        if (rc != 0) {
            cr_assert(eq(int, rc, -EIO), "%s", err);
            reactor_run_once(g_r, 50);
        }
    }
    cr_assert(eq(int, rc, 0), "%s", err);
    cr_assert(truth(json_object_get(steps, "after") != NULL));
    json_decref(steps);
    store_close(a);
    pgtest_stop_private();
}

/* A row another session holds locked (a psql session left in a
 * transaction) stops a write for busy_timeout, not for as long as the lock
 * is held: the write fails -EBUSY, is held and tried again, and commits
 * once the lock is gone, while the store thread stays free to notice. */
Test(store_pg, a_row_locked_elsewhere_holds_the_write_not_the_store)
{
    char err[512] = "";
    store_options_t o = {.node = "a", .lease_ms = 60000, .busy_timeout_ms = 200};
    store_t *a = store_open(g_uri, g_r, &o, err, sizeof err);
    cr_assert(a != NULL, "store_open: %s", err);
    char id[STORE_ID_SIZE];
    insert(a, id);
    PGconn *c = raw();
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT 1 FROM jobs WHERE id = '%s' FOR UPDATE", id);
    raw_int(c, "BEGIN");
    raw_int(c, sql);

    done_t d = {0};
    json_t *out = json_string("out");
    cr_assert(eq(int, store_checkpoint_step(a, id, "k", out, NULL, 0, on_done, &d), 0));
    json_decref(out);
    /* the first try gives up after 200 ms: wait for the store to say it
     * holds the write (the bound is the whole test's, not a tuned one) */
    store_stats_t st = {0};
    double deadline = now_s() + 30;
    while (st.held_tries < 1 && now_s() < deadline) {
        cr_assert(reactor_run_once(g_r, 20) >= 0);
        store_get_stats(a, &st);
    }
    cr_assert(ge(u64, st.held_tries, 1), "the write waited on the lock instead of timing out");
    cr_assert(eq(int, d.calls, 0), "the write ended while the row was locked: %s", d.error);

    raw_int(c, "COMMIT");
    run_until(&d.calls, 1);
    cr_assert(eq(int, d.status, 0), "%s", d.error);
    cr_assert(eq(int, (int)raw_int(c, "SELECT count(*) FROM steps WHERE key = 'k'"), 1));
    PQfinish(c);
    store_close(a);
}

/* Reads that find the server gone try to reconnect at once, then back off
 * (1 s, 2 s, 4 s, ...: each try may hold the reactor for connect_timeout
 * when the server is cut off rather than down); once the writer is back
 * on the server, the next read reconnects at once. */
Test(store_pg, reads_back_off_while_the_server_is_gone)
{
    char id[STORE_ID_SIZE], err[256];
    store_t *a = private_store("store-pg-backoff", id);
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(a, id, &job, err, sizeof err), 0), "%s", err);
    json_decref(job);
    cr_assert(eq(int, pgtest_stop_private(), 0));

    /* reads every 20 ms for 7.5 s: tries at 0, 1, 3 and 7 s (backing off),
     * where a try a second would make 8 */
    store_stats_t st;
    double t0 = now_s();
    int reads = 0;
    while (now_s() - t0 < 7.5) {
        job = NULL;
        cr_assert(truth(store_get_job(a, id, &job, err, sizeof err) < 0));
        reads++;
        reactor_run_once(g_r, 20);
    }
    store_get_stats(a, &st);
    fprintf(stderr, "reads_back_off: %d reads, %llu reconnect tries in 7.5 s\n", reads,
            (unsigned long long)st.read_reconnects);
    cr_assert(ge(u64, st.read_reconnects, 3));
    cr_assert(le(u64, st.read_reconnects, 5), "%llu tries: no back-off",
              (unsigned long long)st.read_reconnects);

    /* back: a write reconnects the writer, and the next read follows at
     * once instead of waiting out its back-off */
    cr_assert(pgtest_private_cluster("store-pg-backoff") != NULL);
    cr_assert(eq(int, checkpoint(a, id, "after", err, sizeof err), 0), "%s", err);
    job = NULL;
    cr_assert(eq(int, store_get_job(a, id, &job, err, sizeof err), 0),
              "the first read after the writer reconnected: %s", err);
    json_decref(job);
    store_close(a);
    pgtest_stop_private();
}
