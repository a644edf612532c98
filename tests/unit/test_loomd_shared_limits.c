/* test_loomd_shared_limits.c -- one provider's limits held across three
 * loomd sharing a PostgreSQL store (docs/scale-out.md): the limit
 * test.
 *
 * Three daemons, each with its own socket, workflows directory, node name
 * and local state, on one database, their provider `llm` pointing at ONE
 * fake provider server that enforces --rpm 1200 --tpm 120000 (a GCRA with
 * one second of burst: tests/fake/README.md). Each daemon's provider is
 * configured with the same rpm 1,200 and tpm 120,000: the limits of the
 * provider, which the three hold together through the shared bucket
 * (daemon/cluster/cluster_limits.h). Each daemon gets more one-call jobs
 * than the whole limit can run in the measured minute, so the three
 * together saturate it for all of it.
 *
 * What must hold over the 60 s measured (from the fake's counters reset,
 * which also fills its bucket):
 * - the fake answered no request with 429;
 * - it got at least 97% of what it allows in 60 s: 1,200 a minute (one
 *   every 50 ms) plus its burst of one second's budget (20) at the start,
 *   1,220, so at least 1,184 (the daemons' shared bucket grants at most
 *   1,200 + 13, its burst being 1 s - 100 ms - the 250 ms lease window);
 * - tokens are under 120,000 too (each call costs far less than the 100
 *   tokens a call the rate leaves it, so the rate binds).
 * Halfway through, one daemon reloads its config (new provider instances,
 * the old ones serving the jobs still running on them). The lease round
 * trips per call (stats.cluster.limits) are reported.
 *
 * Every wait has a deadline; the minute itself is measured, not slept:
 * the test reads the daemons' replies until it ends. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"
#include "tests/unit/pgtest.h"

enum {
    NDAEMONS = 3,
    RPM = 1200,
    TPM = 120000,
    RUN_MS = 60000,
    /* a job is one call: each daemon gets 800, 2,400 in all, twice what the
     * minute can run, so no daemon runs dry whatever its share */
    JOBS_PER_DAEMON = 800,
    LATENCY_MS = 20,
    START_BOUND_MS = 30000,
};

#define ONE_CALL_WF \
    "loom: 1\nname: one\ndefaults: { provider: llm, model: m }\ndo: { call: 'q {{ input.text }}' }\n"

static lh_daemon D[NDAEMONS];
static char *db_uri;

static void teardown(void)
{
    for (int i = 0; i < NDAEMONS; i++)
        lh_teardown(&D[i]);
    if (db_uri)
        (void)pgtest_drop_db(db_uri);
    free(db_uri);
    db_uri = NULL;
}

static void setup_daemon(int i, const char *providers, const char *const *fake_args)
{
    lh_daemon *d = &D[i];
    lh_setup(d, providers, fake_args);
    lh_workflow(d, "one", ONE_CALL_WF);
    char node[16];
    snprintf(node, sizeof node, "n%d", i + 1);
    lh_use_pg(d, db_uri, node, "", "max_running_jobs: 32\n");
    lh_config_replace(d, "log: { level: debug }", "log: { level: info }");
}

/* stats.cluster.limits of daemon I (a new reference), or NULL. */
static json_t *limits_stats(int i)
{
    json_t *r = lh_call(&D[i], "{\"op\":\"stats\"}", 10000);
    if (!r)
        return NULL;
    json_t *res = json_object_get(r, "result");
    json_t *l = json_object_get(json_object_get(res ? res : r, "cluster"), "limits");
    json_incref(l);
    json_decref(r);
    return json_is_object(l) ? l : (json_decref(l), NULL);
}

/* The submits' replies so far. */
typedef struct ack_ctx {
    int acked, refused;
    char why[200]; /* the first refusal */
} ack_ctx;

/* A submit's reply: acknowledged, or refused (the first reason kept). */
static void on_line(void *ud, json_t *line)
{
    ack_ctx *c = ud;
    if (json_is_true(json_object_get(line, "ok"))) {
        c->acked++;
        return;
    }
    c->refused++;
    if (!c->why[0]) {
        char *t = json_dumps(line, JSON_COMPACT);
        snprintf(c->why, sizeof c->why, "%s", t ? t : "?");
        free(t);
    }
}

static bool limits_connected(int i)
{
    json_t *l = limits_stats(i);
    bool up = l && json_is_true(json_object_get(l, "connected"));
    json_decref(l);
    return up;
}

Test(loomd_shared_limits, three_daemons_one_provider_limit, .fini = teardown, .timeout = 300)
{
    if (!pgtest_admin_uri())
        cr_skip_test("no PostgreSQL for the shared limits test (see the reason above)");
    db_uri = pgtest_fresh_db("loomd_limits");
    cr_assert(db_uri, "cannot create a database for the test");

    /* ---- one fake provider enforcing the limits, three daemons */
    char lat[16], rpm[16], tpm[16], prov[512], url[64];
    snprintf(lat, sizeof lat, "%d", LATENCY_MS);
    snprintf(rpm, sizeof rpm, "%d", RPM);
    snprintf(tpm, sizeof tpm, "%d", TPM);
    snprintf(prov, sizeof prov,
             "  llm: { plugin: openai, base_url: \"@FAKE@\", limits: { rpm: %d, tpm: %d } }\n",
             RPM, TPM);
    setup_daemon(0, prov, (const char *const[]){"--latency", lat, "--rpm", rpm, "--tpm", tpm,
                                                "--max-seconds", "600", NULL});
    fake_server *fake = &D[0].fake;
    fake_server_base_url(fake, url, sizeof url);
    snprintf(prov, sizeof prov,
             "  llm: { plugin: openai, base_url: \"%s\", limits: { rpm: %d, tpm: %d } }\n", url,
             RPM, TPM);
    for (int i = 1; i < NDAEMONS; i++)
        setup_daemon(i, prov, NULL);
    /* one at a time: the first runs the schema's migrations */
    for (int i = 0; i < NDAEMONS; i++) {
        lh_spawn(&D[i]);
        int st = lh_wait_listening(&D[i], START_BOUND_MS);
        cr_assert(st == 0, "daemon %d exited at start (status %d); see %s/loomd.log", i + 1, st,
                  D[i].dir);
    }
    /* every daemon's limits on line before the minute starts */
    long long until = lh_now_ms() + START_BOUND_MS;
    for (int i = 0; i < NDAEMONS; i++) {
        while (!limits_connected(i) && lh_now_ms() < until) {
            struct pollfd none;
            (void)poll(&none, 0, 20); /* a probe's period, not a wait for the event */
        }
        cr_assert(limits_connected(i), "daemon %d: stats.cluster.limits never connected", i + 1);
    }

    /* ---- the minute: counters reset (the fake's bucket full), then every
     * daemon's jobs sent at once, pipelined, replies read as they come */
    json_t *z = fake_server_stats(fake, 1);
    cr_assert(z, "cannot reset the fake's counters");
    json_decref(z);
    long long t0 = lh_now_ms();
    int fd[NDAEMONS];
    lh_pipe pipes[NDAEMONS];
    memset(pipes, 0, sizeof pipes);
    for (int i = 0; i < NDAEMONS; i++) {
        fd[i] = lh_connect(&D[i]);
        cr_assert(fd[i] >= 0);
        pipes[i].fd = fd[i];
        size_t cap = (size_t)JOBS_PER_DAEMON * 96, len = 0;
        char *all = malloc(cap);
        cr_assert(all);
        for (int j = 0; j < JOBS_PER_DAEMON; j++)
            len += (size_t)snprintf(all + len, cap - len,
                                    "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"one\","
                                    "\"input\":{\"text\":\"d%dj%d\"}}\n",
                                    j, i + 1, j);
        cr_assert(lh_send_all(fd[i], all, len), "daemon %d: the submits could not be sent", i + 1);
        free(all);
        pipes[i].pending = JOBS_PER_DAEMON;
    }
    ack_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    bool reloaded = false;
    while (lh_now_ms() < t0 + RUN_MS) {
        /* halfway, daemon 2 reloads: its providers are built again, the new
         * limiters put under the shared budget beside the old ones, which
         * its running jobs finish on, then taken off */
        if (!reloaded && lh_now_ms() >= t0 + RUN_MS / 2) {
            cr_assert_eq(kill(D[1].pid, SIGHUP), 0);
            reloaded = true;
        }
        struct pollfd p[NDAEMONS];
        for (int i = 0; i < NDAEMONS; i++)
            p[i] = (struct pollfd){.fd = pipes[i].fd, .events = POLLIN};
        long long left = t0 + RUN_MS - lh_now_ms();
        if (left <= 0)
            break;
        if (poll(p, NDAEMONS, (int)(left < 1000 ? left : 1000)) <= 0)
            continue;
        for (int i = 0; i < NDAEMONS; i++)
            if (p[i].revents & (POLLIN | POLLHUP))
                cr_assert(lh_pipe_read(&pipes[i], on_line, &ctx),
                          "daemon %d closed the connection", i + 1);
    }
    long long t1 = lh_now_ms();
    json_t *st = fake_server_stats(fake, 0);
    cr_assert(st, "cannot read the fake's counters");
    long requests = (long)json_integer_value(json_object_get(st, "requests"));
    long r429 = (long)json_integer_value(json_object_get(st, "r429"));
    long tokens = (long)json_integer_value(json_object_get(st, "tokens"));
    json_decref(st);

    /* ---- figures */
    long long leases = 0, returns = 0, denied = 0, calls = 0;
    for (int i = 0; i < NDAEMONS; i++) {
        json_t *l = limits_stats(i);
        cr_assert(l, "daemon %d: no stats.cluster.limits", i + 1);
        leases += json_integer_value(json_object_get(l, "leases"));
        returns += json_integer_value(json_object_get(l, "returns"));
        denied += json_integer_value(json_object_get(l, "denied"));
        calls += json_integer_value(json_object_get(l, "calls"));
        json_decref(l);
    }
    double span_s = (double)(t1 - t0) / 1000.0;
    /* what the fake allows in the span: its burst (one second of budget)
     * plus the rate over the span */
    double allowed = (double)RPM / 60.0 * (1.0 + span_s);
    long answered = requests - r429;
    fprintf(stderr,
            "shared limits: %ld requests in %.1f s (%ld answered, %ld 429), allowed %.0f: %.1f%%;"
            " %ld tokens (limit %.0f in the span); %d submits acked, %d refused%s%s; %lld leases "
            "(%lld denied) and %lld returns for %lld calls: %.3f round trips a call\n",
            requests, span_s, answered, r429, allowed, 100.0 * (double)answered / allowed, tokens,
            (double)TPM / 60.0 * (1.0 + span_s), ctx.acked, ctx.refused, ctx.why[0] ? ": " : "", ctx.why, leases,
            denied, returns, calls, calls ? (double)(leases + returns) / (double)calls : 0.0);
    cr_assert_eq(ctx.refused, 0, "submits refused: %s", ctx.why);
    cr_assert(lh_log_count(&D[1], "reloading", NULL) >= 1, "daemon 2 did not reload");
    cr_assert_eq(r429, 0, "the fake answered %ld requests with 429", r429);
    cr_assert((double)answered >= 0.97 * allowed, "%ld answered, under 97%% of %.0f", answered,
              allowed);
    cr_assert((double)tokens <= (double)TPM / 60.0 * (1.0 + span_s), "%ld tokens", tokens);
    for (int i = 0; i < NDAEMONS; i++) {
        close(pipes[i].fd);
        free(pipes[i].buf);
    }
}

