/* test_loomd_loop.c -- a loop killed in the middle resumes where it was: a
 * real loomd runs a workflow whose loop makes one provider call per
 * iteration, is killed with SIGKILL while iteration 7's call waits out the
 * fake server's latency (six iterations committed to the store), and the
 * restarted daemon finishes the job paying for iterations 7 to 10 only.
 *
 * Each iteration's prompt starts "rev I <-" and carries the previous
 * iteration's output, which the fake server echoes back; so the fake
 * server's request log says which iteration each request was for and how
 * often it was paid for, and the final output shows that the resumed
 * iterations saw what the replayed ones had answered. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

#define LAST 10 /* the iteration whose until holds */
#define KILL_AT 7

#define LOOP_WF                                                                       \
    "loom: 1\nname: revise\ndefaults: { provider: llm, model: m }\n"                  \
    "do:\n  loop:\n    max_iterations: 12\n"                                          \
    "    do: { call: 'rev {{ loop.iteration }} <- {{ loop.previous }}' }\n"           \
    "    until: '{{ loop.iteration | eq(10) }}'\n"

/* The fake server's log lines for iteration I's call: all of them (paid
 * for, whether or not loomd was alive to read the answer), or only those
 * delivered. Each line's step key must name iteration I. */
static int requests(int i, bool delivered_only)
{
    char path[400], line[16384], prefix[32], seg[32];
    snprintf(path, sizeof path, "%s/fake.log", D.dir);
    snprintf(prefix, sizeof prefix, "rev %d <-", i);
    snprintf(seg, sizeof seg, "#%d ", i);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        cr_assert(e, "a log line is not JSON: %s", line);
        const char *echo = json_string_value(json_object_get(e, "echo"));
        const char *key = json_string_value(json_object_get(e, "key"));
        if (echo && strncmp(echo, prefix, strlen(prefix)) == 0) {
            cr_assert(key && strstr(key, seg), "iteration %d's call has the key '%s'", i,
                      key ? key : "(none)");
            n += !delivered_only || json_is_true(json_object_get(e, "delivered"));
        }
        json_decref(e);
    }
    if (f)
        fclose(f);
    return n;
}

/* What iteration N answers: "rev N <- rev N-1 <- ... rev 1 <- ". */
static void expected_output(int n, char *out, size_t len)
{
    size_t k = 0;
    out[0] = 0;
    for (int i = n; i >= 1 && k < len; i--)
        k += (size_t)snprintf(out + k, len - k, "rev %d <- ", i);
}

Test(loomd_loop, a_loop_killed_in_iteration_7_resumes_at_7, .fini = teardown)
{
    lh_setup(&D, "  llm: { plugin: openai, base_url: \"@FAKE@\" }\n",
             (const char *const[]){ "--latency", "400", "--log", "@DIR@/fake.log", NULL });
    lh_workflow(&D, "revise", LOOP_WF);
    lh_start(&D);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"revise\",\"input\":{}}", 5000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "%s", r ? json_dumps(r, 0) : "none");
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);
    /* six iterations on disk, the seventh's call then waits 400 ms at the
     * fake server: the kill comes in iteration 7 */
    long deadline = lh_now_ms() + 20000;
    while (lh_store_steps(&D, job) < KILL_AT - 1 && lh_now_ms() < deadline)
        usleep(2000); /* polling a counter with a deadline */
    cr_assert_eq(lh_store_steps(&D, job), KILL_AT - 1, "six iterations were not checkpointed in 20 s");
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(requests(KILL_AT, true), 0, "the kill came after iteration 7 had ended");
    cr_assert_eq(lh_store_steps(&D, job), KILL_AT - 1);

    lh_start(&D);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":20}", job);
    r = lh_call(&D, req, 25000);
    cr_assert(r, "no answer to wait");
    json_t *j = json_object_get(r, "job");
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "%s",
                     json_dumps(r, 0));
    char want[4096];
    expected_output(LAST, want, sizeof want);
    cr_assert_str_eq(json_string_value(json_object_get(j, "output")), want);
    json_decref(r);

    for (int i = 1; i < KILL_AT; i++)
        cr_assert_eq(requests(i, false), 1, "iteration %d was paid for %d times", i, requests(i, false));
    for (int i = KILL_AT; i <= LAST; i++)
        cr_assert_eq(requests(i, true), 1, "iteration %d was answered %d times", i, requests(i, true));
    cr_assert_eq(requests(LAST + 1, false), 0, "the loop went on after its until held");
    cr_assert_eq(lh_store_steps(&D, job), LAST);
}
