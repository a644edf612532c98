/* test_cluster.c -- daemon/cluster against a real PostgreSQL (tests/pg):
 * the asynchronous connection (queries in order, errors, LISTEN/NOTIFY, a
 * restart of the server, closing, a server that is not there) and the
 * cluster on top of it (payloads from other daemons dispatched, its own and
 * malformed ones dropped, publishing, the poll timer and kicks, claims of
 * jobs whose owner is gone).
 *
 * Each test gets a fresh database and a reactor it drives by hand; every
 * wait runs the reactor until the event or a deadline, never a fixed sleep.
 * A second, plain blocking PGconn plays "another daemon" where one is
 * needed to send a NOTIFY. */
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

#include "daemon/cluster/cluster.h"
#include "daemon/cluster/pgconn.h"
#include "daemon/store/store.h"
#include "tests/unit/pgtest.h"

/* How long an event may take. The slowest thing waited for is a
 * connection coming back: one failed attempt may last the connection
 * timeout (5 s, pgconn.c) and the next retry comes at most 2 s later, so
 * 7 s; doubled for a machine busy with other tests (and ASan). */
#define WAIT_MS 14000

/* ---- fixture */

static reactor_t *g_r;
static char *g_uri;
static log_sink g_log = {.level = LOOM_LOG_DEBUG, .json = false, .fd = 2};

static void setup(void)
{
    if (!pgtest_admin_uri())
        cr_skip_test("no PostgreSQL for the tests (see the reason above)");
    g_uri = pgtest_fresh_db("cluster");
    cr_assert(g_uri != NULL, "cannot create a test database");
    g_r = reactor_new();
    cr_assert(g_r != NULL);
}

static void teardown(void)
{
    reactor_free(g_r);
    free(g_uri);
}

/* A test that restarts PostgreSQL moves to a cluster of its own first
 * (NAME: one per test, as Criterion runs tests side by side), so the other
 * tests see no outage. */
static void private_server(const char *name)
{
    cr_assert(pgtest_private_cluster(name) != NULL, "no private cluster %s", name);
    free(g_uri);
    g_uri = pgtest_fresh_db("cluster");
    cr_assert(g_uri != NULL, "cannot create a test database");
}

TestSuite(pgconn, .init = setup, .fini = teardown, .timeout = 90);
TestSuite(cluster, .init = setup, .fini = teardown, .timeout = 90);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Lets cr_assert take expressions that start with '!' or a macro. */
static bool truth(bool b)
{
    return b;
}

/* Runs the reactor until COND holds or MS pass; the value of COND. */
#define RUN_UNTIL(cond, ms)                                                                        \
    truth(({                                                                                       \
        int64_t until_ = now_ms() + (ms);                                                          \
        while (!(cond) && now_ms() < until_)                                                       \
            reactor_run_once(g_r, 20);                                                             \
        (bool)(cond);                                                                              \
    }))

/* A plain blocking connection for the test's own statements. */
static PGconn *plain_connect(void)
{
    PGconn *p = PQconnectdb(g_uri);
    cr_assert(PQstatus(p) == CONNECTION_OK, "connect: %s", PQerrorMessage(p));
    return p;
}

static void plain_exec(PGconn *p, const char *sql)
{
    PGresult *res = PQexec(p, sql);
    ExecStatusType st = PQresultStatus(res);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(res));
    PQclear(res);
}

/* ---- pgconn: what the callbacks saw */

#define MAX_ANSWERS 64

typedef struct answers {
    int calls;
    int nulls;                   /* RES NULL */
    int order[MAX_ANSWERS];      /* the tag of each call, in order */
    char value[MAX_ANSWERS][64]; /* first cell, or the error line */
    ExecStatusType status[MAX_ANSWERS];
    char sqlstate[MAX_ANSWERS][8];
    bool in_query;               /* pgconn_query is running */
    bool ran_inside;             /* a callback ran inside pgconn_query */
} answers;

typedef struct tag {
    answers *a;
    int n;
} tag;

static void on_answer(void *ud, const PGresult *res, const char *err)
{
    tag *t = ud;
    answers *a = t->a;
    if (a->in_query)
        a->ran_inside = true;
    int i = a->calls++;
    if (i >= MAX_ANSWERS)
        return;
    a->order[i] = t->n;
    if (!res) {
        a->nulls++;
        a->status[i] = PGRES_FATAL_ERROR;
        snprintf(a->value[i], sizeof a->value[i], "%s", err ? err : "(no error)");
        return;
    }
    a->status[i] = PQresultStatus(res);
    if (a->status[i] == PGRES_TUPLES_OK && PQntuples(res) > 0)
        snprintf(a->value[i], sizeof a->value[i], "%s", PQgetvalue(res, 0, 0));
    else
        snprintf(a->value[i], sizeof a->value[i], "%s", err ? err : "");
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(a->sqlstate[i], sizeof a->sqlstate[i], "%s", st ? st : "");
}

static void query(pgconn_t *c, answers *a, tag *t, const char *sql, int n, const char *const *p)
{
    a->in_query = true;
    int rc = pgconn_query(c, sql, n, p, on_answer, t);
    a->in_query = false;
    cr_assert(eq(int, rc, 0));
}

typedef struct states {
    int ups, downs;
    bool last;
    char seq[64];                /* "+" up, "-" down, in order */
} states;

static void on_state(void *ud, bool up)
{
    states *s = ud;
    up ? s->ups++ : s->downs++;
    s->last = up;
    size_t n = strlen(s->seq);
    if (n + 1 < sizeof s->seq) {
        s->seq[n] = up ? '+' : '-';
        s->seq[n + 1] = '\0';
    }
}

typedef struct notes {
    int n;
    char channel[32][64];
    char payload[32][128];
    states st;
} notes;

static void on_notify(void *ud, const char *channel, const char *payload)
{
    notes *no = ud;
    if (no->n >= 32)
        return;
    snprintf(no->channel[no->n], sizeof no->channel[0], "%s", channel);
    snprintf(no->payload[no->n], sizeof no->payload[0], "%s", payload);
    no->n++;
}

static void on_notes_state(void *ud, bool up)
{
    on_state(&((notes *)ud)->st, up);
}

static pgconn_t *conn_new(const char *uri, const char *const *listen, void *ud,
                          pgconn_notify_fn nf, pgconn_state_fn sf)
{
    pgconn_options o = {
        .conninfo = uri, .listen = listen, .on_notify = nf, .on_state = sf, .ud = ud,
        .name = "test"};
    pgconn_t *c = pgconn_new(g_r, &g_log, &o);
    cr_assert(c != NULL, "pgconn_new: %s", strerror(errno));
    return c;
}

/* ---- pgconn */

Test(pgconn, query_round_trip)
{
    states s = {0};
    pgconn_t *c = conn_new(g_uri, NULL, &s, NULL, on_state);
    answers a = {0};
    tag t = {&a, 1};
    const char *p[] = {"41"};
    query(c, &a, &t, "SELECT $1::int + 1", 1, p);
    cr_assert(RUN_UNTIL(a.calls == 1, WAIT_MS), "no answer");
    cr_assert(eq(int, a.status[0], PGRES_TUPLES_OK));
    cr_assert(eq(str, a.value[0], "42"));
    cr_assert(truth(pgconn_up(c)));
    cr_assert(eq(int, s.ups, 1));
    cr_assert(eq(int, s.downs, 0));
    /* A NULL parameter is SQL NULL. */
    const char *pn[] = {NULL};
    tag t2 = {&a, 2};
    query(c, &a, &t2, "SELECT coalesce($1::text, 'was null')", 1, pn);
    cr_assert(RUN_UNTIL(a.calls == 2, WAIT_MS));
    cr_assert(eq(str, a.value[1], "was null"));
    cr_assert(truth(!a.ran_inside));
    pgconn_free(c);
}

Test(pgconn, bad_sql_gives_an_error_result_and_the_connection_goes_on)
{
    pgconn_t *c = conn_new(g_uri, NULL, NULL, NULL, NULL);
    answers a = {0};
    tag t1 = {&a, 1}, t2 = {&a, 2}, t3 = {&a, 3};
    query(c, &a, &t1, "SELEKT 1", 0, NULL);
    query(c, &a, &t2, "SELECT 1/0", 0, NULL);
    query(c, &a, &t3, "SELECT 'fine'", 0, NULL);
    cr_assert(RUN_UNTIL(a.calls == 3, WAIT_MS), "answers: %d", a.calls);
    cr_assert(eq(int, a.nulls, 0));
    cr_assert(eq(int, a.status[0], PGRES_FATAL_ERROR));
    cr_assert(eq(str, a.sqlstate[0], "42601")); /* syntax error */
    cr_assert(strstr(a.value[0], "syntax error") != NULL, "error line: %s", a.value[0]);
    cr_assert(eq(int, a.status[1], PGRES_FATAL_ERROR));
    cr_assert(eq(str, a.sqlstate[1], "22012")); /* division by zero */
    cr_assert(eq(int, a.status[2], PGRES_TUPLES_OK));
    cr_assert(eq(str, a.value[2], "fine"));
    cr_assert(truth(pgconn_up(c)));
    pgconn_free(c);
}

Test(pgconn, queries_queued_while_connecting_are_answered_in_order)
{
    pgconn_t *c = conn_new(g_uri, NULL, NULL, NULL, NULL);
    cr_assert(truth(!pgconn_up(c))); /* connecting takes round trips */
    answers a = {0};
    tag t[40];
    char num[40][8];
    for (int i = 0; i < 40; i++) {
        t[i] = (tag){&a, i};
        snprintf(num[i], sizeof num[i], "%d", i);
        const char *p[] = {num[i]};
        query(c, &a, &t[i], "SELECT $1::int * 10", 1, p);
    }
    cr_assert(eq(int, a.calls, 0));
    cr_assert(RUN_UNTIL(a.calls == 40, WAIT_MS), "answers: %d", a.calls);
    for (int i = 0; i < 40; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i * 10);
        cr_assert(eq(int, a.order[i], i));
        cr_assert(eq(str, a.value[i], want));
    }
    cr_assert(truth(!a.ran_inside));
    pgconn_free(c);
}

Test(pgconn, listen_and_notify_with_escaped_channel_names)
{
    notes no = {0};
    const char *const chans[] = {"loom", "odd \"chan\"", NULL};
    pgconn_t *c = conn_new(g_uri, chans, &no, on_notify, on_notes_state);
    cr_assert(RUN_UNTIL(no.st.ups == 1, WAIT_MS), "never up");
    PGconn *p = plain_connect();
    plain_exec(p, "NOTIFY loom, 'new a 01J'");
    plain_exec(p, "NOTIFY \"odd \"\"chan\"\"\", 'hello there'");
    plain_exec(p, "NOTIFY elsewhere, 'not listened to'");
    plain_exec(p, "SELECT pg_notify('loom', 'last')");
    cr_assert(RUN_UNTIL(no.n == 3, WAIT_MS), "notifications: %d", no.n);
    cr_assert(eq(str, no.channel[0], "loom"));
    cr_assert(eq(str, no.payload[0], "new a 01J"));
    cr_assert(eq(str, no.channel[1], "odd \"chan\""));
    cr_assert(eq(str, no.payload[1], "hello there"));
    cr_assert(eq(str, no.payload[2], "last"));
    /* Notifications arriving between a query's answers are delivered too. */
    answers a = {0};
    tag t = {&a, 1};
    query(c, &a, &t, "SELECT pg_notify('loom', 'from myself')", 0, NULL);
    cr_assert(RUN_UNTIL(a.calls == 1 && no.n == 4, WAIT_MS));
    cr_assert(eq(str, no.payload[3], "from myself"));
    PQfinish(p);
    pgconn_free(c);
}

Test(pgconn, free_answers_queued_queries_with_closing)
{
    pgconn_t *c = conn_new(g_uri, NULL, NULL, NULL, NULL);
    answers a = {0};
    tag t1 = {&a, 1}, t2 = {&a, 2};
    query(c, &a, &t1, "SELECT 1", 0, NULL);
    query(c, &a, &t2, "SELECT 2", 0, NULL);
    pgconn_free(c);
    cr_assert(eq(int, a.calls, 2));
    cr_assert(eq(int, a.nulls, 2));
    cr_assert(eq(str, a.value[0], "closing"));
    cr_assert(eq(int, a.order[0], 1));
    cr_assert(eq(int, a.order[1], 2));
    pgconn_free(NULL);
}

/* A port nothing listens on: an attempt fails at once. The password in the
 * conninfo never reaches the log. */
Test(pgconn, server_not_there_fails_fast_and_never_logs_the_password)
{
    char logpath[] = "/tmp/loom-cluster-log-XXXXXX";
    int fd = mkstemp(logpath);
    cr_assert(fd >= 0);
    unlink(logpath);
    log_sink l = {.level = LOOM_LOG_DEBUG, .fd = fd};
    states s = {0};
    pgconn_options o = {
        .conninfo = "postgresql://loom:s3cr3tpw@127.0.0.1:1/postgres", .on_state = on_state,
        .ud = &s, .name = "test"};
    pgconn_t *c = pgconn_new(g_r, &l, &o);
    cr_assert(c != NULL);
    answers a = {0};
    tag t1 = {&a, 1};
    query(c, &a, &t1, "SELECT 1", 0, NULL); /* queued: the first attempt is on */
    cr_assert(RUN_UNTIL(s.downs == 1, WAIT_MS));
    cr_assert(RUN_UNTIL(a.calls == 1, WAIT_MS));
    cr_assert(eq(int, a.nulls, 1));
    /* Down: the next query fails on the next pass, not inside the call. */
    tag t2 = {&a, 2};
    query(c, &a, &t2, "SELECT 2", 0, NULL);
    cr_assert(eq(int, a.calls, 1));
    int64_t t0 = now_ms();
    cr_assert(RUN_UNTIL(a.calls == 2, WAIT_MS));
    cr_assert(lt(i64, now_ms() - t0, 1000), "took %lld ms", (long long)(now_ms() - t0));
    cr_assert(strstr(a.value[1], "down") != NULL, "error: %s", a.value[1]);
    cr_assert(truth(!a.ran_inside));
    /* Retries (100 ms, 200 ms...) log nothing more and call on_state no more. */
    int64_t until = now_ms() + 500;
    RUN_UNTIL(now_ms() >= until, 1000);
    cr_assert(eq(int, s.downs, 1));
    cr_assert(eq(int, s.ups, 0));
    pgconn_free(c);
    char buf[4096] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    cr_assert(n > 0);
    buf[n] = '\0';
    close(fd);
    cr_assert(strstr(buf, "test connection to PostgreSQL failed") != NULL, "log: %s", buf);
    cr_assert(strstr(buf, "s3cr3tpw") == NULL, "the password was logged: %s", buf);
    const char *first = strstr(buf, "failed");
    cr_assert(strstr(first + 1, "connection to PostgreSQL failed") == NULL,
              "logged more than once: %s", buf);
}

Test(pgconn, unreadable_password_file_is_refused)
{
    pgconn_options o = {.conninfo = g_uri, .password_file = "/nonexistent/pw", .name = "test"};
    errno = 0;
    cr_assert(pgconn_new(g_r, &g_log, &o) == NULL);
    cr_assert(eq(int, errno, ENOENT));
}

/* pgtest_restart blocks until the server answers again, so it runs on a
 * thread of its own while the test drives the reactor through the outage. */
typedef struct restarter {
    pthread_t th;
    volatile int done; /* read by the test thread after a join-free wait */
    int rc;
} restarter;

static void *restart_main(void *arg)
{
    restarter *rs = arg;
    rs->rc = pgtest_restart();
    __atomic_store_n(&rs->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static bool restart_done(restarter *rs)
{
    return __atomic_load_n(&rs->done, __ATOMIC_ACQUIRE) != 0;
}

Test(pgconn, restart_of_the_server_down_fail_fast_up_and_notifications_again)
{
    private_server("cluster-pgconn");
    notes no = {0};
    const char *const chans[] = {"loom", NULL};
    pgconn_t *c = conn_new(g_uri, chans, &no, on_notify, on_notes_state);
    cr_assert(RUN_UNTIL(no.st.ups == 1, WAIT_MS), "never up");
    /* A query in flight when the server goes: answered, never left hanging. */
    answers slow = {0};
    tag ts = {&slow, 1};
    query(c, &slow, &ts, "SELECT pg_sleep(60)", 0, NULL);

    restarter rs = {0};
    cr_assert(eq(int, pthread_create(&rs.th, NULL, restart_main, &rs), 0));
    cr_assert(RUN_UNTIL(no.st.downs == 1, 60000), "the loss was never seen");
    cr_assert(RUN_UNTIL(slow.calls == 1, WAIT_MS), "the query in flight hangs");
    cr_assert(truth(slow.nulls == 1 || slow.status[0] == PGRES_FATAL_ERROR));
    cr_assert(truth(!pgconn_up(c)));

    /* While down, queries fail on the next pass. */
    answers during = {0};
    tag td = {&during, 1};
    query(c, &during, &td, "SELECT 1", 0, NULL);
    cr_assert(RUN_UNTIL(during.calls == 1, WAIT_MS));
    cr_assert(eq(int, during.nulls, 1));

    cr_assert(RUN_UNTIL(restart_done(&rs), 60000), "pg_ctl restart never returned");
    pthread_join(rs.th, NULL);
    cr_assert(eq(int, rs.rc, 0), "pgtest_restart failed");
    cr_assert(RUN_UNTIL(no.st.ups == 2, WAIT_MS), "never up again: %s", no.st.seq);
    cr_assert(eq(str, no.st.seq, "+-+"));
    cr_assert(truth(pgconn_up(c)));

    answers after = {0};
    tag ta = {&after, 1};
    query(c, &after, &ta, "SELECT 'back'", 0, NULL);
    cr_assert(RUN_UNTIL(after.calls == 1, WAIT_MS));
    cr_assert(eq(str, after.value[0], "back"));

    PGconn *p = plain_connect();
    plain_exec(p, "NOTIFY loom, 'after the restart'");
    cr_assert(RUN_UNTIL(no.n == 1, WAIT_MS), "LISTEN was not re-established");
    cr_assert(eq(str, no.payload[0], "after the restart"));
    PQfinish(p);
    pgconn_free(c);
}

/* ---- cluster */

typedef struct seen {
    int calls[11];               /* per kind, in the order of the hooks */
    char last_node[64], last_a[128], last_b[128];
    int polls;
    size_t capacity;             /* what the capacity hook answers */
    int claimed_calls;
    size_t claimed_jobs;
    char claimed_ids[16][STORE_ID_SIZE];
} seen;

enum { K_NEW, K_QUEUED, K_STEP, K_END, K_WAITING, K_CANCEL, K_SIGNAL, K_WORKFLOW, K_WATCH,
       K_EVENT };

static void seen_set(seen *s, int k, const char *node, const char *a, const char *b)
{
    s->calls[k]++;
    snprintf(s->last_node, sizeof s->last_node, "%s", node);
    snprintf(s->last_a, sizeof s->last_a, "%s", a);
    snprintf(s->last_b, sizeof s->last_b, "%s", b ? b : "");
}

static void h_new(void *ud, const char *n, const char *j) { seen_set(ud, K_NEW, n, j, NULL); }
static void h_queued(void *ud, const char *n, const char *j) { seen_set(ud, K_QUEUED, n, j, NULL); }
static void h_step(void *ud, const char *n, const char *j, const char *k)
{
    seen_set(ud, K_STEP, n, j, k);
}
static void h_end(void *ud, const char *n, const char *j, const char *st)
{
    seen_set(ud, K_END, n, j, st);
}
static void h_waiting(void *ud, const char *n, const char *j) { seen_set(ud, K_WAITING, n, j, NULL); }
static void h_cancel(void *ud, const char *n, const char *j) { seen_set(ud, K_CANCEL, n, j, NULL); }
static void h_signal(void *ud, const char *n, const char *j, const char *name)
{
    seen_set(ud, K_SIGNAL, n, j, name);
}
static void h_workflow(void *ud, const char *n, const char *name, const char *v)
{
    seen_set(ud, K_WORKFLOW, n, name, v);
}
static void h_watch(void *ud, const char *n, const char *j) { seen_set(ud, K_WATCH, n, j, NULL); }
static void h_event(void *ud, const char *n, const char *j, const char *ev)
{
    seen_set(ud, K_EVENT, n, j, ev);
}
static void h_poll(void *ud) { ((seen *)ud)->polls++; }
static size_t h_capacity(void *ud) { return ((seen *)ud)->capacity; }
static void h_claimed(void *ud, const json_t *jobs)
{
    seen *s = ud;
    s->claimed_calls++;
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) {
        if (s->claimed_jobs < 16)
            snprintf(s->claimed_ids[s->claimed_jobs], STORE_ID_SIZE, "%s",
                     json_string_value(json_object_get(j, "id")));
        s->claimed_jobs++;
    }
    /* As a daemon's: the jobs it took fill its slots. */
    size_t n = json_array_size(jobs);
    s->capacity = s->capacity > n ? s->capacity - n : 0;
}

static cluster_hooks hooks_for(seen *s)
{
    return (cluster_hooks){
        .ud = s, .job_new = h_new, .job_queued = h_queued, .job_step = h_step,
        .job_end = h_end, .job_waiting = h_waiting, .job_cancel = h_cancel,
        .job_signal = h_signal, .workflow = h_workflow, .job_watch = h_watch,
        .job_event = h_event, .poll = h_poll,
        .capacity = h_capacity, .claimed = h_claimed};
}

static store_t *store_for(const char *node, int64_t lease_ms)
{
    store_options_t so = {.node = node, .lease_ms = lease_ms};
    char err[256] = "";
    store_t *st = store_open(g_uri, g_r, &so, err, sizeof err);
    cr_assert(st != NULL, "store_open: %s", err);
    cr_assert(truth(store_shared(st)));
    cr_assert(eq(str, (char *)store_node(st), (char *)node));
    return st;
}

static cluster_t *cluster_for(store_t *st, seen *s, int64_t poll_ms)
{
    cluster_options o = {.conninfo = g_uri, .poll_ms = poll_ms};
    cluster_hooks h = hooks_for(s);
    cluster_t *c = cluster_new(g_r, &g_log, st, &o, &h);
    cr_assert(c != NULL, "cluster_new: %s", strerror(errno));
    return c;
}

static bool connected(const cluster_t *c)
{
    cluster_stats cs;
    cluster_get_stats(c, &cs);
    return cs.connected;
}

static cluster_stats stats_of(const cluster_t *c)
{
    cluster_stats cs;
    cluster_get_stats(c, &cs);
    return cs;
}

/* A long poll period, so only notifications and kicks poll. */
#define NO_TIMER_MS 600000

Test(cluster, payloads_of_others_reach_the_hooks_and_its_own_are_dropped)
{
    store_t *st = store_for("b", 0);
    seen s = {0};
    cluster_t *c = cluster_for(st, &s, NO_TIMER_MS);
    cr_assert(RUN_UNTIL(connected(c), WAIT_MS));
    PGconn *p = plain_connect();
    static const struct {
        const char *payload;
        int kind;
        const char *a, *b;
    } cases[] = {
        {"new x J1", K_NEW, "J1", ""},
        {"queued x J2", K_QUEUED, "J2", ""},
        {"step x J3 main/2 [0]", K_STEP, "J3", "main/2 [0]"},
        {"end x J4 succeeded", K_END, "J4", "succeeded"},
        {"waiting x J5", K_WAITING, "J5", ""},
        {"cancel x J6", K_CANCEL, "J6", ""},
        {"signal x J7 approve", K_SIGNAL, "J7", "approve"},
        {"workflow x summarize 3f2a", K_WORKFLOW, "summarize", "3f2a"},
        {"watch x J8", K_WATCH, "J8", ""},
        {"event x J9 {\"event\": \"step_started\", \"node\": \"do\"}", K_EVENT, "J9",
         "{\"event\": \"step_started\", \"node\": \"do\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* One of its own first: dropped, so the hook sees only the other. */
        char own[160], sql[256];
        snprintf(own, sizeof own, "%.*s b%s", (int)strcspn(cases[i].payload, " "),
                 cases[i].payload, strchr(strchr(cases[i].payload, ' ') + 1, ' '));
        snprintf(sql, sizeof sql, "SELECT pg_notify('loom', '%s'), pg_notify('loom', '%s')", own,
                 cases[i].payload);
        plain_exec(p, sql);
        int k = cases[i].kind;
        cr_assert(RUN_UNTIL(s.calls[k] >= 1, WAIT_MS), "%s never arrived", cases[i].payload);
        cr_assert(eq(int, s.calls[k], 1), "%s: %d calls", cases[i].payload, s.calls[k]);
        cr_assert(eq(str, s.last_node, "x"));
        cr_assert(eq(str, s.last_a, (char *)cases[i].a));
        cr_assert(eq(str, s.last_b, (char *)cases[i].b));
    }
    cluster_stats cs = stats_of(c);
    cr_assert(eq(u64, cs.notifications, 10));
    cr_assert(eq(u64, cs.malformed, 0));
    PQfinish(p);
    cluster_free(c);
    store_close(st);
}

Test(cluster, malformed_payloads_are_ignored_and_counted)
{
    store_t *st = store_for("b", 0);
    seen s = {0};
    cluster_t *c = cluster_for(st, &s, NO_TIMER_MS);
    cr_assert(RUN_UNTIL(connected(c), WAIT_MS));
    PGconn *p = plain_connect();
    static const char *const bad[] = {
        "", "cancel", "cancel x", "cancel x ", "cancel  J", "cancel x J extra", "bogus x J",
        "end x J", "end x J succeeded more", "step x J", "signal x J", "workflow x name",
        " x J", "new x J\tz",
    };
    size_t nbad = sizeof bad / sizeof bad[0];
    for (size_t i = 0; i < nbad; i++) {
        PGresult *res = PQexecParams(p, "SELECT pg_notify('loom', $1)", 1, NULL, &bad[i], NULL,
                                     NULL, 0);
        cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
        PQclear(res);
    }
    plain_exec(p, "NOTIFY loom, 'cancel x DONE'"); /* in order after the others */
    cr_assert(RUN_UNTIL(s.calls[K_CANCEL] == 1, WAIT_MS));
    cr_assert(eq(str, s.last_a, "DONE"));
    cluster_stats cs = stats_of(c);
    /* "new x J\tz" is well formed: a tab is no separator, so the job id is
     * "J\tz" (for the daemon to find unknown). */
    cr_assert(eq(u64, cs.malformed, nbad - 1));
    cr_assert(eq(u64, cs.notifications, 2));
    cr_assert(eq(int, s.calls[K_NEW], 1));
    for (int k = 0; k <= K_WORKFLOW; k++)
        if (k != K_CANCEL && k != K_NEW)
            cr_assert(eq(int, s.calls[k], 0), "kind %d called", k);
    PQfinish(p);
    cluster_free(c);
    store_close(st);
}

Test(cluster, publish_reaches_another_daemon_and_not_itself)
{
    store_t *sa = store_for("node-a", 0), *sb = store_for("node-b", 0);
    seen a = {0}, b = {0};
    cluster_t *ca = cluster_for(sa, &a, NO_TIMER_MS), *cb = cluster_for(sb, &b, NO_TIMER_MS);
    cr_assert(RUN_UNTIL(connected(ca) && connected(cb), WAIT_MS));
    cr_assert(eq(int, cluster_publish(ca, "cancel", "01JOB"), 0));
    cr_assert(eq(int, cluster_publish(ca, "signal", "01JOB approve"), 0));
    cr_assert(eq(int, cluster_publish(cb, "workflow", "summarize abc123"), 0));
    cr_assert(RUN_UNTIL(b.calls[K_SIGNAL] == 1 && a.calls[K_WORKFLOW] == 1, WAIT_MS));
    cr_assert(eq(int, b.calls[K_CANCEL], 1));
    cr_assert(eq(str, b.last_node, "node-a"));
    cr_assert(eq(str, b.last_a, "01JOB"));
    cr_assert(eq(str, b.last_b, "approve"));
    cr_assert(eq(str, a.last_node, "node-b"));
    cr_assert(eq(str, a.last_a, "summarize"));
    cr_assert(eq(str, a.last_b, "abc123"));
    /* Its own never come back to it: a publish from A after B's tells A
     * saw everything sent to it. */
    cr_assert(eq(int, cluster_publish(cb, "cancel", "MARK"), 0));
    cr_assert(RUN_UNTIL(a.calls[K_CANCEL] == 1, WAIT_MS));
    cr_assert(eq(int, a.calls[K_SIGNAL], 0));
    cr_assert(eq(int, b.calls[K_WORKFLOW], 0));
    cr_assert(RUN_UNTIL(stats_of(ca).published == 2 && stats_of(cb).published == 2, WAIT_MS));
    cr_assert(eq(u64, stats_of(cb).notifications, 2));
    cr_assert(eq(u64, stats_of(ca).notifications, 2));

    /* Refused: a newline, a space in the kind, over the size. */
    cr_assert(eq(int, cluster_publish(ca, "cancel", "a\nb"), -EINVAL));
    cr_assert(eq(int, cluster_publish(ca, "can cel", "J"), -EINVAL));
    char *big = malloc(8000);
    cr_assert(big != NULL);
    memset(big, 'x', 7999);
    big[7999] = '\0';
    cr_assert(eq(int, cluster_publish(ca, "cancel", big), -EINVAL));
    free(big);
    cluster_free(ca);
    cluster_free(cb);
    store_close(sa);
    store_close(sb);
}

Test(cluster, poll_timer_runs_and_kicks_coalesced)
{
    store_t *st = store_for("b", 0);
    seen s = {0};
    cluster_t *c = cluster_for(st, &s, 50);
    cr_assert(RUN_UNTIL(s.polls >= 3, WAIT_MS), "polls: %d", s.polls);
    cr_assert(eq(u64, stats_of(c).claims, 0)); /* capacity 0: no claim */
    cluster_free(c);

    seen k = {0};
    c = cluster_for(st, &k, NO_TIMER_MS);
    cr_assert(RUN_UNTIL(connected(c) && k.polls >= 1, WAIT_MS)); /* the kick of "up" */
    int before = k.polls;
    PGconn *p = plain_connect();
    /* Notifications reach their hooks and never poll (a claim per
     * notification would cost a transaction per job started or ended). */
    plain_exec(p, "BEGIN");
    for (int i = 0; i < 10; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "NOTIFY loom, 'end x J%d failed'", i);
        plain_exec(p, sql);
    }
    plain_exec(p, "COMMIT");
    cr_assert(RUN_UNTIL(k.calls[K_END] == 10, WAIT_MS));
    reactor_run_once(g_r, 0);
    cr_assert(eq(int, k.polls, before));
    plain_exec(p, "NOTIFY loom, 'step x J k'");
    plain_exec(p, "NOTIFY loom, 'cancel x MARK'");
    cr_assert(RUN_UNTIL(k.calls[K_CANCEL] == 1, WAIT_MS));
    reactor_run_once(g_r, 0);
    cr_assert(eq(int, k.polls, before));
    /* cluster_kick polls on the next pass, never inside the call. */
    cluster_kick(c);
    cluster_kick(c);
    cr_assert(eq(int, k.polls, before));
    cr_assert(RUN_UNTIL(k.polls == before + 1, WAIT_MS));
    reactor_run_once(g_r, 0);
    cr_assert(eq(int, k.polls, before + 1));
    PQfinish(p);
    cluster_free(c);
    store_close(st);
}

static void inserted(void *ud, const store_result_t *res)
{
    int *n = ud;
    cr_assert(eq(int, res->status, 0), "insert: %s", res->error);
    (*n)++;
}

/* A daemon goes away with three jobs: once their leases expire, another
 * daemon with room for two claims two, then the third when room frees. */
Test(cluster, jobs_of_a_daemon_gone_are_claimed_as_capacity_allows)
{
    const int64_t lease_ms = 300;
    store_t *gone = store_for("gone", lease_ms);
    int n = 0;
    for (int i = 0; i < 3; i++) {
        store_job_spec_t spec = {.workflow = "wf"};
        cr_assert(eq(int, store_insert_job(gone, &spec, inserted, &n), 0));
    }
    cr_assert(RUN_UNTIL(n == 3, WAIT_MS));
    store_close(gone); /* no more heartbeats: the leases run out */

    store_t *st = store_for("heir", lease_ms);
    seen s = {.capacity = 2};
    cluster_t *c = cluster_for(st, &s, 50);
    cr_assert(RUN_UNTIL(s.claimed_jobs == 2, lease_ms + WAIT_MS), "claimed %zu",
              s.claimed_jobs);
    cr_assert(eq(sz, s.capacity, 0));
    /* Nothing more is claimed while there is no room. */
    int polls = s.polls;
    cr_assert(RUN_UNTIL(s.polls >= polls + 3, WAIT_MS));
    cr_assert(eq(sz, s.claimed_jobs, 2));
    s.capacity = 5;
    cluster_kick(c);
    cr_assert(RUN_UNTIL(s.claimed_jobs == 3, WAIT_MS));
    cr_assert(strcmp(s.claimed_ids[0], s.claimed_ids[2]) != 0);
    cr_assert(strcmp(s.claimed_ids[1], s.claimed_ids[2]) != 0);
    cluster_stats cs = stats_of(c);
    cr_assert(eq(u64, cs.claimed, 3));
    cr_assert(ge(u64, cs.claims, 2));
    /* Claims never overlap: never more round trips than polls. */
    cr_assert(le(u64, cs.claims, cs.polls));
    cluster_free(c);
    store_close(st);
}

static void inserted_id(void *ud, const store_result_t *res)
{
    char *id = ud;
    cr_assert(eq(int, res->status, 0), "insert: %s", res->error);
    snprintf(id, STORE_ID_SIZE, "%s", res->job_id);
}

static void released(void *ud, const store_result_t *res)
{
    int *n = ud;
    cr_assert(eq(int, res->status, 0), "release: %s", res->error);
    (*n)++;
}

/* A daemon that lets a job go (a stop) announces it: another with room
 * claims it at once, not at its next poll (here ten minutes away). */
Test(cluster, a_released_job_is_claimed_at_once)
{
    store_t *leaver = store_for("leaver", 60000);
    char id[STORE_ID_SIZE] = "";
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(leaver, &spec, inserted_id, id), 0));
    cr_assert(RUN_UNTIL(id[0] != '\0', WAIT_MS));

    store_t *st = store_for("taker", 60000);
    seen s = {.capacity = 1};
    cluster_t *c = cluster_for(st, &s, NO_TIMER_MS);
    /* the poll of the connection's coming up finds the lease alive (its
     * claim may still be in flight when the release comes: the notice's
     * poll then claims once more after it) */
    cr_assert(RUN_UNTIL(connected(c) && stats_of(c).claims >= 1, WAIT_MS));
    cr_assert(eq(sz, s.claimed_jobs, 0));

    int n = 0;
    cr_assert(eq(int, store_release_job(leaver, id, released, &n), 0));
    cr_assert(RUN_UNTIL(s.claimed_jobs == 1, WAIT_MS), "the released job was not claimed");
    cr_assert(eq(str, s.claimed_ids[0], id));
    cr_assert(RUN_UNTIL(n == 1, WAIT_MS));
    cluster_free(c);
    store_close(st);
    store_close(leaver);
}

Test(cluster, refuses_a_store_that_is_not_shared)
{
    char dir[] = "/tmp/loom-cluster-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    char err[256];
    store_t *st = store_open(dir, g_r, NULL, err, sizeof err);
    cr_assert(st != NULL, "%s", err);
    seen s = {0};
    cluster_options o = {.conninfo = g_uri};
    cluster_hooks h = hooks_for(&s);
    errno = 0;
    cr_assert(cluster_new(g_r, &g_log, st, &o, &h) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    store_close(st);
    char path[128];
    snprintf(path, sizeof path, "%s/loom.db", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/loom.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/loom.db-shm", dir);
    unlink(path);
    rmdir(dir);
}

Test(cluster, connection_back_after_a_restart_kicks_a_poll)
{
    private_server("cluster-restart");
    store_t *st = store_for("b", 0);
    seen s = {0};
    cluster_t *c = cluster_for(st, &s, NO_TIMER_MS);
    cr_assert(RUN_UNTIL(connected(c) && s.polls == 1, WAIT_MS));
    restarter rs = {0};
    cr_assert(eq(int, pthread_create(&rs.th, NULL, restart_main, &rs), 0));
    cr_assert(RUN_UNTIL(!connected(c), 60000), "the loss was never seen");
    /* Best effort while down: dropped, not queued, not an error. */
    cr_assert(eq(int, cluster_publish(c, "cancel", "J"), 0));
    cr_assert(RUN_UNTIL(restart_done(&rs), 60000));
    pthread_join(rs.th, NULL);
    cr_assert(eq(int, rs.rc, 0));
    cr_assert(RUN_UNTIL(connected(c) && s.polls == 2, WAIT_MS), "polls %d", s.polls);
    PGconn *p = plain_connect();
    plain_exec(p, "NOTIFY loom, 'cancel x AFTER'");
    cr_assert(RUN_UNTIL(s.calls[K_CANCEL] == 1, WAIT_MS));
    PQfinish(p);
    cluster_free(c);
    store_close(st);
}
