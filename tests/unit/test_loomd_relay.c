/* test_loomd_relay.c -- `events` of a job another daemon runs (docs/scale-out.md):
 * two loomd on one PostgreSQL database, one fake provider answering each
 * call after 300 ms. A three-call chain is submitted to daemon n0; a client
 * of daemon n1 subscribes to it. n1 asks n0 to relay the job's live events
 * (NOTIFY watch), and n0 does (NOTIFY event), so the subscriber on n1 sees
 * what a subscriber on n0 would: step_started of the calls still to come,
 * each with "daemon": "n0", then step_checkpointed for each step and
 * job_finished at the end. Every wait has a deadline. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"
#include "tests/unit/pgtest.h"

enum { LATENCY_MS = 300, START_BOUND_MS = 30000 };

#define RELAY_WF                                                               \
    "loom: 1\nname: relay\ndefaults: { provider: llm, model: m }\n"            \
    "do:\n  chain:\n"                                                          \
    "    - call: 'a {{ input.text }}'\n"                                       \
    "    - call: 'b {{ prev }}'\n"                                             \
    "    - call: 'c {{ prev }}'\n"

static lh_daemon D[2];
static char *db_uri;

static void teardown(void)
{
    for (int i = 1; i >= 0; i--)
        lh_teardown(&D[i]);
    if (db_uri)
        pgtest_drop_db(db_uri);
    free(db_uri);
}

static void setup_daemon(int i, const char *providers, const char *const *fake_args)
{
    lh_daemon *d = &D[i];
    lh_setup(d, providers, fake_args);
    lh_workflow(d, "relay", RELAY_WF);
    char node[16];
    snprintf(node, sizeof node, "n%d", i);
    lh_use_pg(d, db_uri, node, "lease: 5s, poll: 250ms", "");
    lh_spawn(d);
    int st = lh_wait_listening(d, START_BOUND_MS);
    cr_assert(st == 0, "daemon n%d exited at start (status %d); see %s/loomd.log", i, st, d->dir);
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

Test(relay, events_of_a_job_run_by_another_daemon, .fini = teardown, .timeout = 120)
{
    if (!pgtest_admin_uri())
        cr_skip_test("no PostgreSQL for the relay test (see the reason above)");
    db_uri = pgtest_fresh_db("loomd_relay");
    cr_assert(db_uri, "cannot create a database");
    char lat[16], prov[512], url[64];
    snprintf(lat, sizeof lat, "%d", LATENCY_MS);
    setup_daemon(0, "  llm: { plugin: openai, base_url: \"@FAKE@\" }\n",
                 (const char *const[]){ "--latency", lat, NULL });
    fake_server_base_url(&D[0].fake, url, sizeof url);
    snprintf(prov, sizeof prov, "  llm: { plugin: openai, base_url: \"%s\" }\n", url);
    setup_daemon(1, prov, NULL);

    json_t *r = lh_call(&D[0], "{\"op\":\"submit\",\"workflow\":\"relay\",\"input\":{\"text\":\"x\"}}",
                        10000);
    cr_assert(r && json_is_string(json_object_get(r, "job")), "%s", r ? json_dumps(r, 0) : "no reply");
    char job[64], req[256];
    snprintf(job, sizeof job, "%s", str(r, "job"));
    json_decref(r);

    int fd = lh_connect(&D[1]);
    cr_assert(fd >= 0);
    snprintf(req, sizeof req, "{\"id\":1,\"op\":\"events\",\"job\":\"%s\"}", job);
    lh_send(fd, req);
    r = lh_recv(fd, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "subscribed")), "%s",
              r ? json_dumps(r, 0) : "no reply");
    json_decref(r);

    /* the three calls take 900 ms at least; the stream must end well within
     * the test's bound */
    int started_calls = 0, checkpointed = 0, from_n0 = 0, events = 0;
    bool finished = false, started_after_finish = false;
    char seen[1024] = "";
    size_t at = 0;
    while (!finished && (r = lh_recv(fd, 30000))) {
        const char *ev = str(r, "event");
        events++;
        if (at < sizeof seen - 64)
            at += (size_t)snprintf(seen + at, sizeof seen - at, "%s%s(%s)", at ? " " : "", ev,
                                   str(r, "node"));
        cr_assert_str_eq(str(r, "job"), job);
        if (strcmp(ev, "job_finished") == 0) {
            finished = true;
            cr_assert_str_eq(str(r, "state"), "succeeded", "%s", json_dumps(r, 0));
        } else if (strcmp(ev, "step_checkpointed") == 0) {
            checkpointed++;
        } else {
            /* a relayed live event says which daemon runs the job */
            cr_assert_str_eq(str(r, "daemon"), "n0", "%s", json_dumps(r, 0));
            from_n0++;
            if (strcmp(ev, "step_started") == 0 && strcmp(str(r, "kind"), "call") == 0)
                started_calls++;
            started_after_finish |= finished;
        }
        json_decref(r);
    }
    close(fd);
    fprintf(stderr, "test_loomd_relay: %d events on n1: %s\n", events, seen);
    cr_assert(finished, "no job_finished on n1 within 30 s of the last event (%s)", seen);
    /* subscribed after the submit: the first call may have started before
     * n0 heard the watch, never the second and third (300 ms apart) */
    cr_assert_geq(started_calls, 2, "step_started of the calls relayed: %d (%s)", started_calls,
                  seen);
    cr_assert_geq(from_n0, 4, "live events relayed: %d (%s)", from_n0, seen);
    cr_assert_eq(checkpointed, 3, "step_checkpointed: %d (%s)", checkpointed, seen);
    cr_assert(!started_after_finish);
}
