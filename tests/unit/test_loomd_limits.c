/* test_loomd_limits.c -- a real loomd keeps its promises at the edges: the
 * queue moves on its own (3,000 jobs through 8 running slots), and
 * everything one client can make it hold has a bound with a stable error:
 * output size, queued jobs, waits and subscriptions per connection, idle
 * connections, connections per uid, and every number of every request. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

#define ECHO_WF "loom: 1\nname: echo\ndo: { call: 'echo {{ input.text }}' }\n"
#define SLOW_WF "loom: 1\nname: slow\ndefaults: { provider: slow }\ndo: { call: 'slowly {{ input.text }}' }\n"
/* the harness's providers: default answers in 5 ms, slow in 2 s */
#define MOCK_LATENCY_MS 5
#define SLOW_LATENCY_MS 2000

static void start_with(const char *extra)
{
    lh_setup(&D, extra, NULL);
    lh_workflow(&D, "echo", ECHO_WF);
    lh_workflow(&D, "slow", SLOW_WF);
    lh_start(&D);
}

static const char *code_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static const char *message_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "message"));
}

static json_t *call(const char *req)
{
    json_t *r = lh_call(&D, req, 10000);
    cr_assert(r, "no reply to %s", req);
    return r;
}

/* REQ is refused with CODE, and the message holds every one of WORDS. */
static void refused(const char *req, const char *code, const char *const *words)
{
    json_t *r = call(req);
    char *text = json_dumps(r, 0);
    cr_assert_str_eq(code_of(r) ? code_of(r) : "(none)", code, "%s -> %s", req, text);
    for (size_t i = 0; words && words[i]; i++)
        cr_assert(strstr(message_of(r), words[i]), "%s: '%s' not in %s", req, words[i], text);
    free(text);
    json_decref(r);
}

static void submitted(int fd, int n)
{
    for (int i = 0; i < n; i++) {
        json_t *r = lh_recv(fd, 30000);
        cr_assert(r && json_is_true(json_object_get(r, "ok")), "submit %d: %s", i,
                  r ? json_dumps(r, 0) : "no reply");
        json_decref(r);
    }
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* ---- liveness */

Test(limits, three_thousand_jobs_through_eight_slots_all_finish, .fini = teardown,
     .timeout = 600)
{
    enum { JOBS = 3000, SLOTS = 8, BATCH = 500 };
    start_with("max_running_jobs: 8\n");
    int ev = lh_subscribe(&D);
    int fd = lh_connect(&D);
    cr_assert(fd >= 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* pipelined in batches whose replies fit the socket buffers, so the
     * test never blocks on its own unread replies */
    for (int sent = 0; sent < JOBS; sent += BATCH) {
        for (int i = sent; i < sent + BATCH; i++) {
            char req[160];
            snprintf(req, sizeof req,
                     "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"n%d\"}}",
                     i, i);
            lh_send(fd, req);
        }
        submitted(fd, BATCH);
    }
    /* Nothing more is submitted: the queue must drain on its own. The jobs
     * need JOBS / SLOTS rounds of the mock's latency at the least; the
     * deadline gives each round 20 times that (a shared machine, sanitizers)
     * plus the time the submits took. */
    long ideal_ms = (long)JOBS / SLOTS * MOCK_LATENCY_MS;
    long deadline_ms = ms_since(&t0) + ideal_ms * 20;
    int finished = 0;
    while (finished < JOBS) {
        long left = deadline_ms - ms_since(&t0);
        json_t *e = left > 0 ? lh_wait_event(ev, "job_finished", NULL, (int)left) : NULL;
        cr_assert(e, "%d of %d jobs finished within %ld ms", finished, JOBS, deadline_ms);
        cr_assert_str_eq(json_string_value(json_object_get(e, "state")), "succeeded");
        json_decref(e);
        finished++;
    }
    json_t *s = call("{\"op\":\"stats\"}");
    json_t *jobs = json_object_get(s, "jobs");
    cr_assert_eq(json_integer_value(json_object_get(jobs, "succeeded")), JOBS);
    cr_assert_eq(json_integer_value(json_object_get(jobs, "queued")), 0);
    json_decref(s);
    close(fd);
    close(ev);
}

/* ---- numbers and fields */

Test(limits, numbers_out_of_range_and_unknown_fields_are_refused, .fini = teardown)
{
    start_with(NULL);
    refused("{\"op\":\"wait\",\"job\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\",\"timeout\":1e300}",
            "invalid_request", (const char *const[]){ "'timeout'", "0 to 31536000", NULL });
    refused("{\"op\":\"wait\",\"job\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\",\"timeout\":-1}",
            "invalid_request", (const char *const[]){ "'timeout'", NULL });
    refused("{\"op\":\"wait\",\"job\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\",\"timeout\":\"5\"}",
            "invalid_request", (const char *const[]){ "'timeout'", NULL });
    refused("{\"op\":\"submit\",\"workflow\":\"echo\",\"wait\":-1}", "invalid_request",
            (const char *const[]){ "'wait'", NULL });
    refused("{\"op\":\"submit\",\"workflow\":\"echo\",\"wait\":1e300}", "invalid_request",
            (const char *const[]){ "'wait'", "31536000", NULL });
    refused("{\"op\":\"submit\",\"workflow\":\"echo\",\"priority\":10000000}", "invalid_request",
            (const char *const[]){ "'priority'", "-1000000 to 1000000", NULL });
    refused("{\"op\":\"submit\",\"workflow\":\"echo\",\"priority\":1.5}", "invalid_request",
            (const char *const[]){ "'priority'", "integer", NULL });
    const char *limits[] = { "-1", "0", "1001", "4611686018427387904" };
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        char req[128];
        snprintf(req, sizeof req, "{\"op\":\"list\",\"limit\":%s}", limits[i]);
        refused(req, "invalid_request", (const char *const[]){ "'limit'", "1 to 1000", NULL });
    }
    refused("{\"op\":\"submit\",\"workflow\":\"echo\",\"inptu\":{\"text\":\"x\"}}", "unknown_field",
            (const char *const[]){ "'inptu'", "did you mean 'input'", NULL });
    refused("{\"op\":\"stats\",\"verbose\":true}", "unknown_field",
            (const char *const[]){ "'verbose'", NULL });
    refused("{\"op\":\"get\"}", "invalid_request", (const char *const[]){ "'job'", NULL });
    /* nothing above ran a job */
    json_t *r = call("{\"op\":\"list\",\"limit\":1000}");
    cr_assert(json_is_true(json_object_get(r, "ok")));
    cr_assert_eq(json_array_size(json_object_get(r, "jobs")), 0);
    json_decref(r);
    /* the edges themselves are taken */
    r = call("{\"op\":\"list\",\"limit\":1}");
    cr_assert(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    r = call("{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"e\"},\"wait\":31536000,"
             "\"priority\":-1000000}");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")),
                     "succeeded", "%s", json_dumps(r, 0));
    json_decref(r);
}

/* ---- output size */

Test(limits, an_output_over_max_output_bytes_fails_the_job_and_stays_readable, .fini = teardown)
{
    start_with("max_output_bytes: 1024\n");
    char text[2048 + 1];
    memset(text, 'a', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    char req[2300];
    snprintf(req, sizeof req,
             "{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"%s\"},\"wait\":true}",
             text);
    json_t *r = call(req);
    json_t *res = json_object_get(r, "result");
    cr_assert_str_eq(json_string_value(json_object_get(res, "state")), "failed", "%s",
                     json_dumps(r, 0));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
                     "output_too_large");
    char get[128];
    snprintf(get, sizeof get, "{\"op\":\"get\",\"job\":\"%s\"}",
             json_string_value(json_object_get(r, "job")));
    json_decref(r);
    r = call(get);
    cr_assert(json_is_true(json_object_get(r, "ok")));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")), "failed");
    json_decref(r);
    lh_wait_log(&D, "output_too_large", NULL, 1, 10000);
}

/* A row stored before the limit existed, with an output no reply can
 * carry: get and wait answer without it, saying why, and log it. */
Test(limits, a_stored_output_too_large_for_a_reply_is_answered_without_it, .fini = teardown,
     .timeout = 300)
{
    start_with(NULL);
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"x\"},\"wait\":true}");
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/loom.db", D.state);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    /* 70 MB of JSON string: over the 64 MiB a connection may have unsent */
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "UPDATE jobs SET output = '\"' || "
                                    "replace(hex(zeroblob(35000000)), '0', 'x') || '\"' WHERE id = ?1",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    lh_start(&D);
    const char *ops[] = { "get", "wait" };
    for (size_t i = 0; i < 2; i++) {
        char req[128];
        snprintf(req, sizeof req, "{\"op\":\"%s\",\"job\":\"%s\"}", ops[i], job);
        r = lh_call(&D, req, 60000);
        cr_assert(r, "%s of the job: the connection was dropped", ops[i]);
        json_t *o = json_object_get(r, "job");
        cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "succeeded");
        cr_assert(json_is_null(json_object_get(o, "output")));
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "output_error"), "code")),
                         "output_too_large");
        json_decref(r);
    }
    lh_wait_log(&D, "too large for a reply", job, 2, 10000);
}

/* ---- what one client can make the daemon hold */

Test(limits, a_full_queue_refuses_with_queue_full, .fini = teardown)
{
    start_with("max_running_jobs: 1\nmax_queued_jobs: 2\n");
    int ev = lh_subscribe(&D);
    /* one running (started: seen on the events), two queued, one refused */
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"1\"}}");
    json_t *e = lh_wait_event(ev, "job_started", json_string_value(json_object_get(r, "job")), 10000);
    cr_assert(e);
    json_decref(e);
    json_decref(r);
    for (int i = 0; i < 2; i++) {
        r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"q\"}}");
        cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "queued", "%s",
                         json_dumps(r, 0));
        json_decref(r);
    }
    refused("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"4\"}}", "queue_full",
            (const char *const[]){ "max_queued_jobs", NULL });
    close(ev);
}

Test(limits, repeated_events_are_not_doubled_and_pending_is_bounded, .fini = teardown)
{
    start_with("max_pending_per_connection: 2\n");
    int ev = lh_connect(&D);
    cr_assert(ev >= 0);
    for (int i = 0; i < 2; i++) { /* the same subscription twice: one hold */
        lh_send(ev, "{\"op\":\"events\"}");
        json_t *r = lh_recv(ev, 5000);
        cr_assert(r && json_is_true(json_object_get(r, "subscribed")));
        json_decref(r);
    }
    const char *jobs[2];
    char ids[2][64];
    for (int i = 0; i < 2; i++) {
        json_t *r = call("{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"d\"}}");
        snprintf(ids[i], sizeof ids[i], "%s", json_string_value(json_object_get(r, "job")));
        jobs[i] = ids[i];
        json_decref(r);
        /* events come in order: a doubled job_finished would come before
         * the next job's */
        json_t *e = lh_wait_event(ev, "job_finished", NULL, 10000);
        cr_assert(e);
        cr_assert_str_eq(json_string_value(json_object_get(e, "job")), jobs[i],
                         "job_finished of %s came twice", jobs[0]);
        json_decref(e);
    }
    /* one subscription + one wait on a slow job = 2 held: the next is refused */
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"s\"}}");
    char req[160];
    snprintf(req, sizeof req, "{\"id\":1,\"op\":\"wait\",\"job\":\"%s\"}",
             json_string_value(json_object_get(r, "job")));
    json_decref(r);
    lh_send(ev, req);
    snprintf(req + 0, sizeof req, "{\"id\":2,\"op\":\"events\",\"job\":\"%s\"}", jobs[0]);
    lh_send(ev, req);
    for (;;) { /* skip the stream's events up to the reply with id 2 */
        json_t *m = lh_recv(ev, 10000);
        cr_assert(m, "no reply to the third hold");
        if (json_integer_value(json_object_get(m, "id")) == 2) {
            cr_assert_str_eq(code_of(m), "too_many_pending", "%s", json_dumps(m, 0));
            cr_assert(strstr(message_of(m), "max_pending_per_connection"));
            json_decref(m);
            break;
        }
        json_decref(m);
    }
    close(ev);
}

/* Reads FD until its end, at most TIMEOUT_MS: whether it ended. Lines
 * before the end go to *LAST (the last one; new reference or NULL). */
static bool ends_within(int fd, int timeout_ms, json_t **last)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[4096];
    size_t len = 0;
    for (;;) {
        long left = timeout_ms - ms_since(&t0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) {
            if (last && len) {
                buf[len] = '\0';
                *last = json_loads(buf, 0, NULL);
            }
            return n == 0;
        }
        len += (size_t)n;
        if (len >= sizeof buf - 1)
            len = 0; /* only short lines matter here */
    }
}

Test(limits, idle_connections_close_but_waiting_ones_do_not, .fini = teardown)
{
    enum { IDLE_MS = 300 };
    start_with("idle_timeout: 300ms\n");
    int idle = lh_connect(&D), waiting = lh_connect(&D);
    cr_assert(idle >= 0 && waiting >= 0);
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"w\"}}");
    char req[160];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\"}",
             json_string_value(json_object_get(r, "job")));
    json_decref(r);
    lh_send(waiting, req);
    /* closed within 1.25 times the timeout (a sweep every quarter); the
     * bound allows for a busy machine */
    cr_assert(ends_within(idle, IDLE_MS * 20, NULL), "an idle connection stayed open");
    lh_wait_log(&D, "idle for", NULL, 1, 5000);
    /* the one with a wait pending outlives several idle timeouts, until the
     * slow job (longer than the idle timeout) ends */
    r = lh_recv(waiting, SLOW_LATENCY_MS * 10);
    cr_assert(r, "the waiting connection got no answer");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")),
                     "succeeded");
    json_decref(r);
    close(idle);
    close(waiting);
}

Test(limits, connections_per_uid_are_capped_with_a_final_line, .fini = teardown)
{
    enum { CAP = 3 };
    start_with("max_connections_per_uid: 3\n");
    int fds[CAP];
    fds[0] = lh_connect(&D);
    cr_assert(fds[0] >= 0);
    /* wait until the start's probe connection is gone: only this one left */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        lh_send(fds[0], "{\"op\":\"stats\"}");
        json_t *s = lh_recv(fds[0], 5000);
        cr_assert(s, "the first connection was refused");
        json_int_t n = json_integer_value(json_object_get(s, "connections"));
        json_decref(s);
        if (n == 1)
            break;
        cr_assert(ms_since(&t0) < 10000, "%lld connections open, expected 1", (long long)n);
        poll(NULL, 0, 10); /* the server closes the probe on its next pass */
    }
    for (int i = 1; i < CAP; i++) {
        fds[i] = lh_connect(&D);
        lh_send(fds[i], "{\"op\":\"stats\"}");
        json_t *s = lh_recv(fds[i], 5000);
        cr_assert(s && json_is_true(json_object_get(s, "ok")), "connection %d was refused", i);
        json_decref(s);
    }
    int extra = lh_connect(&D);
    cr_assert(extra >= 0);
    json_t *last = NULL;
    cr_assert(ends_within(extra, 10000, &last), "the connection over the cap stayed open");
    cr_assert_str_eq(code_of(last) ? code_of(last) : "(none)", "too_many_connections");
    json_decref(last);
    close(extra);
    close(fds[CAP - 1]);
    for (int i = 0; i < CAP - 1; i++)
        close(fds[i]);
}

/* ---- limits changed by a reload */

Test(limits, a_reload_lowers_max_queued_jobs_at_once, .fini = teardown)
{
    start_with("max_running_jobs: 1\nmax_queued_jobs: 5\n");
    int ev = lh_subscribe(&D);
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"1\"}}");
    json_t *e = lh_wait_event(ev, "job_started", json_string_value(json_object_get(r, "job")), 10000);
    cr_assert(e);
    json_decref(e);
    json_decref(r);
    for (int i = 0; i < 2; i++) {
        r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"q\"}}");
        cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "queued", "%s",
                         json_dumps(r, 0));
        json_decref(r);
    }
    /* two queued of five allowed; a reload lowers it to two (and changes
     * workers, which only a restart applies: the log says so) */
    lh_config_replace(&D, "max_queued_jobs: 5\n", "max_queued_jobs: 2\nworkers: 3\n");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    /* the reload runs whole in one turn of the reactor, so a request sent
     * once its first line is logged is handled after it */
    lh_wait_log(&D, "reloading", NULL, 1, 10000);
    refused("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"4\"}}", "queue_full",
            (const char *const[]){ "max_queued_jobs", NULL });
    lh_wait_log(&D, "workers changed", "next start", 1, 5000);
    /* and raised again, it takes the submit */
    lh_config_replace(&D, "max_queued_jobs: 2\n", "max_queued_jobs: 3\n");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    lh_wait_log(&D, "reloading", NULL, 2, 10000);
    r = call("{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"5\"}}");
    cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "queued", "%s",
                     json_dumps(r, 0));
    json_decref(r);
    close(ev);
}

Test(limits, a_reload_shortens_idle_timeout_for_open_connections, .fini = teardown)
{
    start_with("idle_timeout: 300s\n");
    int idle = lh_connect(&D);
    cr_assert(idle >= 0);
    lh_send(idle, "{\"op\":\"stats\"}");
    json_t *s = lh_recv(idle, 5000);
    cr_assert(s);
    json_decref(s);
    cr_assert(!ends_within(idle, 300, NULL), "closed before the reload");
    lh_config_replace(&D, "idle_timeout: 300s\n", "idle_timeout: 200ms\n");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    /* idle for 300 ms already: closed by the sweep the reload starts, or
     * the next one; the bound allows for a busy machine */
    cr_assert(ends_within(idle, 200 * 20, NULL), "the new idle timeout was not applied");
    lh_wait_log(&D, "idle for", NULL, 1, 5000);
    close(idle);
}
