/* test_loomd_version.c -- a job runs the workflow version it started with,
 * always: killed after its first step, its file edited (or deleted) before
 * the restart, it resumes on its own version from the text the store kept,
 * does not pay for its first step again, and reports that version.
 *
 * The fake provider echoes each prompt and logs every answer; the two steps'
 * prompts start with "one" and "two" (the edit changes the second to
 * "TWO"), so the log says which version ran each step and how often. The
 * kill comes once the store holds the first step's checkpoint, while the
 * second call waits out the fake server's latency. */
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

#define WF_V1                                                                  \
    "loom: 1\nname: pin\ndefaults: { provider: llm, model: m }\n"              \
    "do:\n  chain:\n"                                                          \
    "    - call: 'one {{ input.text }}'\n"                                     \
    "    - call: 'two {{ prev }}'\n"
#define WF_V2                                                                  \
    "loom: 1\nname: pin\ndefaults: { provider: llm, model: m }\n"              \
    "do:\n  chain:\n"                                                          \
    "    - call: 'one {{ input.text }}'\n"                                     \
    "    - call: 'TWO {{ prev }}'\n"

/* Answers the fake server delivered (a call in flight at the kill is
 * answered to nobody) whose echoed prompt starts with PREFIX. */
static int answers(const char *prefix)
{
    char path[400], line[4096], needle[128];
    snprintf(path, sizeof path, "%s/fake.log", D.dir);
    snprintf(needle, sizeof needle, "\"echo\":\"%s", prefix);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) && strstr(line, "\"delivered\":true");
    if (f)
        fclose(f);
    return n;
}

static json_t *get_job(const char *job)
{
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":20}", job);
    json_t *r = lh_call(&D, req, 25000);
    cr_assert(r, "no answer to wait");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    json_t *j = json_incref(json_object_get(r, "job"));
    json_decref(r);
    return j;
}

/* Starts loomd on V1, submits one job and kills loomd once the job's first
 * step is on disk. The job's id goes to JOB; V1's version hash to VER. */
static void kill_after_first_step(char job[64], char ver[32])
{
    lh_setup(&D, "  llm: { plugin: openai, base_url: \"@FAKE@\" }\n",
             (const char *const[]){ "--latency", "400", "--log", "@DIR@/fake.log", NULL });
    lh_workflow(&D, "pin", WF_V1);
    lh_start(&D);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"pin\",\"input\":{\"text\":\"x\"}}",
                        5000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "%s", r ? json_dumps(r, 0) : "none");
    snprintf(job, 64, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    r = lh_call(&D, req, 5000);
    cr_assert(r);
    snprintf(ver, 32, "%s",
             json_string_value(json_object_get(json_object_get(r, "job"), "version")) ?: "");
    json_decref(r);
    cr_assert(strlen(ver) == 16, "no version on the job");
    /* the first step's checkpoint, then the kill while the second waits */
    long deadline = lh_now_ms() + 10000;
    while (lh_store_steps(&D, job) < 1 && lh_now_ms() < deadline)
        usleep(2000); /* polling a counter with a deadline */
    cr_assert_eq(lh_store_steps(&D, job), 1, "the first step was not checkpointed in 10 s");
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(answers("two one x"), 0, "the kill came after the second step had finished");
}

Test(version, a_resumed_job_runs_its_own_version_after_its_file_changed, .fini = teardown)
{
    char job[64], ver[32];
    kill_after_first_step(job, ver);
    lh_workflow(&D, "pin", WF_V2);
    lh_start(&D);
    json_t *j = get_job(job);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "%s",
                     json_dumps(j, 0));
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), ver);
    char *out = json_dumps(json_object_get(j, "output"), JSON_ENCODE_ANY);
    cr_assert(out && strstr(out, "two one x"), "the old version's second step ran: %s", out);
    free(out);
    json_decref(j);
    cr_assert_eq(answers("one x"), 1, "the first step was paid for again");
    cr_assert_eq(answers("TWO"), 0, "the new version ran a step of the old job");
    /* the new version serves new jobs */
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"pin\",\"input\":{\"text\":\"y\"},"
                            "\"wait\":20}", 25000);
    cr_assert(r);
    out = json_dumps(r, 0);
    cr_assert(strstr(out, "TWO one y") && !strstr(out, ver), "%s", out);
    free(out);
    json_decref(r);
}

Test(version, a_resumed_job_runs_even_when_its_file_was_deleted, .fini = teardown)
{
    char job[64], ver[32], path[400];
    kill_after_first_step(job, ver);
    snprintf(path, sizeof path, "%s/pin.yaml", D.wf);
    cr_assert_eq(unlink(path), 0);
    lh_start(&D);
    json_t *j = get_job(job);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "%s",
                     json_dumps(j, 0));
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), ver);
    json_decref(j);
    cr_assert_eq(answers("one x"), 1, "the first step was paid for again");
    cr_assert_eq(answers("two one x"), 1);
    lh_wait_log(&D, "compiled the stored version", NULL, 1, 5000);
}
