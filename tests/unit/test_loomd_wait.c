/* test_loomd_wait.c -- `wait_for` through a real loomd and the fake
 * provider: a job that waits holds nothing but its record (it survives a
 * restart as `waiting`), a signal's data is checked and becomes the wait's
 * output, the work done before the wait is never paid for again (the fake
 * server's request counter), and a deadline that passes while no daemon
 * runs still fires, from the store, once one does. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

#define LLM "  llm: { plugin: openai, base_url: \"@FAKE@\" }\n"

#define APPROVE_WF                                                                                \
    "loom: 1\nname: approve\ndefaults: { provider: llm, model: m }\ndo:\n  chain:\n"             \
    "    - { id: draft, call: 'draft about {{ input.topic }}' }\n"                                \
    "    - id: ok\n"                                                                              \
    "      wait_for:\n"                                                                           \
    "        signal: approve\n"                                                                   \
    "        timeout: 1h\n"                                                                       \
    "        schema: { type: object, required: [approved],\n"                                    \
    "                  properties: { approved: { type: boolean } } }\n"                           \
    "    - { id: send, call: 'send {{ steps.draft.output }} {{ steps.ok.output.approved }}' }\n"

static const char *code_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static json_t *call(const char *fmt, const char *job)
{
    char req[1024];
    snprintf(req, sizeof req, fmt, job);
    json_t *r = lh_call(&D, req, 15000);
    cr_assert(r, "no reply to %s", req);
    return r;
}

/* Submits WF with INPUT and waits for the job to park; its id into JOB. */
static void submit_until_waiting(const char *wf, const char *input, char job[64])
{
    char req[512];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s,\"wait\":10}",
             wf, input);
    json_t *r = lh_call(&D, req, 15000);
    cr_assert(r, "no reply to the submit");
    cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "waiting", "%s",
                     json_dumps(r, 0));
    snprintf(job, 64, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);
}

Test(loomd_wait, a_signal_resumes_without_repeating_the_work_before_it, .fini = teardown)
{
    lh_setup(&D, LLM, NULL);
    lh_workflow(&D, "approve", APPROVE_WF);
    lh_start(&D);
    char job[64];
    submit_until_waiting("approve", "{\"topic\":\"tea\"}", job);
    cr_assert_eq(fake_server_stat(&D.fake, "chat"), 1, "the draft was asked once");

    json_t *r = call("{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *o = json_object_get(r, "job"), *w = json_array_get(json_object_get(o, "waits"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "waiting");
    cr_assert_str_eq(json_string_value(json_object_get(w, "signal")), "approve", "%s",
                     json_dumps(r, 0));
    cr_assert(json_is_integer(json_object_get(w, "deadline_ms")), "a 1h timeout has a deadline");
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"list\",\"state\":\"waiting\"}", 5000);
    cr_assert_eq(json_array_size(json_object_get(r, "jobs")), 1, "%s", json_dumps(r, 0));
    json_decref(r);

    /* a daemon restart: the job is still waiting, nothing ran again */
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    lh_start(&D);
    r = call("{\"op\":\"get\",\"job\":\"%s\"}", job);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")),
                     "waiting", "%s", json_dumps(r, 0));
    json_decref(r);

    /* wrong name, data that does not fit: refused, nothing recorded */
    r = call("{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"aprove\",\"data\":{}}", job);
    cr_assert_str_eq(code_of(r), "unknown_signal", "%s", json_dumps(r, 0));
    json_decref(r);
    r = call("{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"approve\",\"data\":{\"approved\":1}}",
             job);
    cr_assert_str_eq(code_of(r), "invalid_signal", "%s", json_dumps(r, 0));
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                     "/approved"), "the message names where: %s", json_dumps(r, 0));
    json_decref(r);
    cr_assert_eq(lh_store_steps(&D, job), 1, "only the draft is recorded");

    r = call("{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"approve\",\"data\":{\"approved\":true}}",
             job);
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    json_decref(r);
    r = call("{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", job);
    o = json_object_get(r, "job");
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "succeeded", "%s",
                     json_dumps(r, 0));
    cr_assert_eq(fake_server_stat(&D.fake, "chat"), 2,
                 "the draft was not asked again, the send once");
    json_decref(r);
    r = call("{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"approve\",\"data\":{\"approved\":true}}",
             job);
    cr_assert_str_eq(code_of(r), "not_waiting", "%s", json_dumps(r, 0));
    json_decref(r);
}

#define DEADLINE_WF                                                                               \
    "loom: 1\nname: deadline\ndefaults: { provider: llm, model: m }\ndo:\n  chain:\n"            \
    "    - { id: draft, call: 'draft' }\n"                                                        \
    "    - wait_for: { signal: 'go-{{ input.n }}', timeout: 2s }\n"                            \
    "      fallback: { lambda: { fn: std.const, args: { value: 'timed out: {{ error.code }}' } } }\n"

Test(loomd_wait, a_deadline_fires_from_the_store_after_a_restart, .fini = teardown)
{
    lh_setup(&D, LLM, NULL);
    lh_workflow(&D, "deadline", DEADLINE_WF);
    lh_start(&D);
    char job[64];
    submit_until_waiting("deadline", "{\"n\":3}", job);
    json_t *r = call("{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *w = json_array_get(json_object_get(json_object_get(r, "job"), "waits"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(w, "signal")), "go-3",
                     "the name is a template: %s", json_dumps(r, 0));
    json_decref(r);
    /* the daemon that armed the timer goes before its deadline (2 s is
     * far more than a park, a get and a kill take); the next one re-arms it
     * from the store */
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(lh_log_count(&D, "job woken by a wait's deadline", NULL), 0);
    lh_start(&D);
    lh_wait_log(&D, "job woken by a wait's deadline", NULL, 1, 10000);
    r = call("{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", job);
    json_t *o = json_object_get(r, "job");
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "succeeded", "%s",
                     json_dumps(r, 0));
    cr_assert_str_eq(json_string_value(json_object_get(o, "output")), "timed out: timeout");
    cr_assert_eq(fake_server_stat(&D.fake, "chat"), 1, "the draft ran once");
    json_decref(r);
}

Test(loomd_wait, a_waiting_job_can_be_cancelled, .fini = teardown)
{
    lh_setup(&D, LLM, NULL);
    lh_workflow(&D, "approve", APPROVE_WF);
    lh_start(&D);
    char job[64];
    submit_until_waiting("approve", "{\"topic\":\"x\"}", job);
    json_t *r = call("{\"op\":\"cancel\",\"job\":\"%s\"}", job);
    cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "cancelled", "%s",
                     json_dumps(r, 0));
    json_decref(r);
    r = call("{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"approve\",\"data\":{\"approved\":true}}",
             job);
    cr_assert_str_eq(code_of(r), "not_waiting", "%s", json_dumps(r, 0));
    json_decref(r);
}

/* Each map item waits for its own name; signalling one wakes the job,
 * which replays what is done and parks again on the other. Through
 * loomctl: signal (data from a file and from stdin), list, get. */
#define FANOUT_WF                                                                                 \
    "loom: 1\nname: fanout\ndefaults: { provider: llm, model: m }\ndo:\n  chain:\n"              \
    "    - { id: draft, call: 'draft' }\n"                                                        \
    "    - map:\n"                                                                                \
    "        over: '{{ input.items }}'\n"                                                         \
    "        do:\n"                                                                               \
    "          chain:\n"                                                                          \
    "            - wait_for: 'ok-{{ item }}'\n"                                                   \
    "            - lambda: { fn: std.const, args: { value: '{{ item }}:{{ prev.v }}' } }\n"

Test(loomd_wait, waits_of_map_items_each_have_their_name, .fini = teardown)
{
    lh_setup(&D, LLM, NULL);
    lh_workflow(&D, "fanout", FANOUT_WF);
    lh_start(&D);
    char job[64], args[1024], *out = NULL;
    submit_until_waiting("fanout", "{\"items\":[\"a\",\"b\"]}", job);
    snprintf(args, sizeof args, "list --state waiting --socket '%s'", D.sock);
    cr_assert_eq(lh_loomctl(args, &out), 0);
    cr_assert(strstr(out, job), "%s", out);
    free(out);
    snprintf(args, sizeof args, "get --socket '%s' %s", D.sock, job);
    cr_assert_eq(lh_loomctl(args, &out), 0);
    cr_assert(strstr(out, "signal ok-a") && strstr(out, "signal ok-b"), "%s", out);
    free(out);

    char data[400];
    snprintf(data, sizeof data, "%s/a.json", D.dir);
    FILE *f = fopen(data, "w");
    cr_assert(f);
    fputs("{\"v\": 1}\n", f);
    fclose(f);
    snprintf(args, sizeof args, "signal --socket '%s' --data '%s' %s ok-a", D.sock, data, job);
    cr_assert_eq(lh_loomctl(args, &out), 0);
    cr_assert(strstr(out, "queued"), "%s", out);
    free(out);
    /* it ran again up to the other wait, and parked there */
    lh_wait_log(&D, "job waiting for a signal", NULL, 2, 10000);
    snprintf(args, sizeof args, "signal --socket '%s' %s ok-a", D.sock, job);
    cr_assert_eq(lh_loomctl(args, &out), 4, "ok-a is not waited for any more");
    free(out);
    snprintf(args, sizeof args, "signal --socket '%s' --data - %s ok-b < '%s'", D.sock, job, data);
    cr_assert_eq(lh_loomctl(args, &out), 0);
    free(out);
    json_t *r = call("{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", job);
    json_t *o = json_object_get(r, "job");
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "succeeded", "%s",
                     json_dumps(r, 0));
    json_t *want = json_pack("[ss]", "a:1", "b:1");
    cr_assert(json_equal(json_object_get(o, "output"), want), "%s", json_dumps(r, 0));
    json_decref(want);
    cr_assert_eq(fake_server_stat(&D.fake, "chat"), 1, "the draft ran once in three runs");
    json_decref(r);
}
