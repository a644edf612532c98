/* test_loomd.c -- a real loomd in a temporary directory, over its socket:
 * every op, errors with stable codes, hot reload of workflows, durability
 * across a kill -9, graceful stop, many clients at once. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

static void start_default(void)
{
    lh_setup(&D, NULL, NULL);
    lh_workflow(&D, "echo", ECHO_WF);
    lh_workflow(&D, "slow", SLOW_WF);
    lh_start(&D);
}

static const char *code_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static json_t *submit_wait(const char *wf, const char *input)
{
    char req[1024];
    snprintf(req, sizeof req, "{\"id\":7,\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s,\"wait\":true}",
             wf, input);
    return lh_call(&D, req, 15000);
}

Test(loomd, submit_and_wait_for_the_result, .fini = teardown)
{
    start_default();
    json_t *r = submit_wait("echo", "{\"text\":\"hi\"}");
    cr_assert(r, "no reply");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(r, "id")), 7, "the id is echoed");
    json_t *res = json_object_get(r, "result");
    cr_assert_str_eq(json_string_value(json_object_get(res, "state")), "succeeded");
    cr_assert(strstr(json_string_value(json_object_get(res, "output")), "echo hi"));
    cr_assert(json_is_integer(json_object_get(json_object_get(res, "peer"), "pid")),
              "the submitter is recorded");
    json_decref(r);
}

Test(loomd, submit_then_get_wait_and_list, .fini = teardown)
{
    start_default();
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"x\"}}", 5000);
    cr_assert(json_is_true(json_object_get(r, "ok")));
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")));
    cr_assert_eq(strlen(job), 26);
    json_decref(r);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", job);
    r = lh_call(&D, req, 12000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")), "succeeded");
    json_decref(r);
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    r = lh_call(&D, req, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "workflow")), "echo");
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"list\",\"workflow\":\"echo\"}", 5000);
    cr_assert_eq(json_array_size(json_object_get(r, "jobs")), 1);
    json_decref(r);
}

Test(loomd, errors_have_stable_codes, .fini = teardown)
{
    start_default();
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"nope\"}", 5000);
    cr_assert_str_eq(code_of(r), "unknown_workflow");
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"get\",\"job\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\"}", 5000);
    cr_assert_str_eq(code_of(r), "not_found");
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"sumbit\"}", 5000);
    cr_assert_str_eq(code_of(r), "unknown_op");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "submit"));
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":3}", 5000);
    cr_assert_str_eq(code_of(r), "invalid_request");
    json_decref(r);
    r = lh_call(&D, "{not json", 5000);
    cr_assert_str_eq(code_of(r), "invalid_json");
    json_decref(r);
}

Test(loomd, idempotency_key_returns_the_same_job, .fini = teardown)
{
    start_default();
    const char *req = "{\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"a\"},\"idempotency_key\":\"k1\"}";
    json_t *a = lh_call(&D, req, 5000), *b = lh_call(&D, req, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(a, "job")), json_string_value(json_object_get(b, "job")));
    cr_assert(json_is_false(json_object_get(a, "existed")));
    cr_assert(json_is_true(json_object_get(b, "existed")));
    json_decref(a);
    json_decref(b);
}

/* Submits to WF with INPUT (JSON text) and returns the job id (static
 * storage: one at a time) once the job has started, seen on EV (lh_subscribe
 * before the submit: events are not stored). */
static const char *submit_started(int ev, const char *wf, const char *input)
{
    static char job[64];
    char req[1024];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s}", wf, input);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert(json_is_string(json_object_get(r, "job")), "submit failed: %s", r ? json_dumps(r, 0) : "no reply");
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);
    json_t *e = lh_wait_event(ev, "job_started", job, 10000);
    cr_assert(e, "job %s did not start within 10 s", job);
    json_decref(e);
    return job;
}

Test(loomd, cancel_a_running_job, .fini = teardown)
{
    start_default();
    int ev = lh_subscribe(&D);
    const char *job = submit_started(ev, "slow", "{\"text\":\"x\"}");
    close(ev);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"cancel\",\"job\":\"%s\"}", job);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    cr_assert_str_eq(json_string_value(json_object_get(r, "state")), "cancelled");
    json_decref(r);
}

Test(loomd, workflows_validate_and_stats, .fini = teardown)
{
    start_default();
    json_t *r = lh_call(&D, "{\"op\":\"workflows\"}", 5000);
    cr_assert_eq(json_array_size(json_object_get(r, "workflows")), 2);
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"validate\",\"yaml\":\"loom: 1\\nname: v\\ndo: { call: { prompt: x, provider: nowhere } }\\n\",\"file\":\"v.yaml\"}", 5000);
    cr_assert(json_is_false(json_object_get(r, "valid")));
    cr_assert(strstr(json_string_value(json_array_get(json_object_get(r, "diagnostics"), 0)), "v.yaml:"));
    json_decref(r);
    json_decref(submit_wait("echo", "{\"text\":\"s\"}"));
    r = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r, "jobs"), "succeeded")), 1);
    json_t *mock = json_object_get(json_object_get(r, "providers"), "default");
    cr_assert(mock);
    cr_assert_eq(json_integer_value(json_object_get(mock, "succeeded")), 1, "the mock's call is counted");
    json_decref(r);
}

/* A lambda's arguments are checked when the workflow compiles: a file
 * dropped into the directory with a misspelt one is refused, its position in
 * the log, and the `validate` op says the same. */
Test(loomd, a_bad_lambda_argument_is_a_compile_error, .fini = teardown)
{
    start_default();
    lh_workflow(&D, "picky", "loom: 1\nname: picky\ndo:\n  lambda: { fn: std.const, args: { valeu: 1 } }\n");
    lh_wait_log(&D, "picky.yaml:4:36: error: unknown argument 'valeu' for lambda 'std.const'; "
                    "did you mean 'value'?", NULL, 1, 10000);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"picky\"}", 5000);
    cr_assert_str_eq(code_of(r), "unknown_workflow", "the file was not loaded");
    json_decref(r);

    r = lh_call(&D, "{\"op\":\"validate\",\"file\":\"v.yaml\",\"yaml\":\"loom: 1\\nname: v\\ndo:\\n"
                    "  lambda: { fn: std.regex_match, args: { pattern: 5 } }\\n\"}", 5000);
    cr_assert(json_is_false(json_object_get(r, "valid")));
    json_t *diags = json_object_get(r, "diagnostics");
    cr_assert_eq(json_array_size(diags), 1);
    cr_assert_str_eq(json_string_value(json_array_get(diags, 0)),
                     "v.yaml:4:51: error: argument 'pattern' of lambda 'std.regex_match' must be a "
                     "string, got an integer");
    json_decref(r);

    /* a fixed file is loaded and runs */
    lh_workflow(&D, "picky", "loom: 1\nname: picky\ndo:\n  lambda: { fn: std.const, args: { value: 1 } }\n");
    lh_wait_log(&D, "loaded", "workflow=picky ", 1, 10000);
    r = submit_wait("picky", "{}");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r, "result"), "output")), 1);
    json_decref(r);
}

Test(loomd, events_of_one_job, .fini = teardown)
{
    start_default();
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"x\"}}", 5000);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"events\",\"job\":\"%s\"}", json_string_value(json_object_get(r, "job")));
    json_decref(r);
    int fd = lh_connect(&D);
    lh_send(fd, req);
    r = lh_recv(fd, 5000);
    cr_assert(json_is_true(json_object_get(r, "subscribed")));
    json_decref(r);
    bool finished = false;
    int n = 0;
    while (!finished && (r = lh_recv(fd, 10000))) {
        n++;
        finished = strcmp(json_string_value(json_object_get(r, "event")), "job_finished") == 0;
        json_decref(r);
    }
    cr_assert(finished, "the stream ends with job_finished (%d events)", n);
    close(fd);
}

Test(loomd, hot_reload_of_workflows, .fini = teardown)
{
    start_default();
    lh_workflow(&D, "fresh", "loom: 1\nname: fresh\ndo: { call: 'v1' }\n");
    lh_wait_log(&D, "loaded", "workflow=fresh ", 1, 10000);
    json_t *r = submit_wait("fresh", "{}");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "result"), "output")), "v1"));
    json_decref(r);
    lh_workflow(&D, "fresh", "loom: 1\nname: fresh\ndo: { call: 'v1' \n"); /* broken */
    lh_wait_log(&D, "fresh.yaml: note: not loaded", NULL, 1, 10000);
    r = lh_call(&D, "{\"op\":\"workflows\"}", 5000);
    size_t i;
    json_t *w;
    bool shown = false;
    json_array_foreach(json_object_get(r, "workflows"), i, w)
        if (json_string_value(json_object_get(w, "error")) &&
            strstr(json_string_value(json_object_get(w, "file")), "fresh"))
            shown = true;
    cr_assert(shown, "the error is shown beside the workflow");
    json_decref(r);
    r = submit_wait("fresh", "{}");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")),
                     "succeeded", "the last good version is still served");
    json_decref(r);
    char path[400];
    snprintf(path, sizeof path, "%s/fresh.yaml", D.wf);
    unlink(path);
    lh_wait_log(&D, "workflow removed", "workflow=fresh ", 1, 10000);
    r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"fresh\"}", 5000);
    cr_assert_str_eq(code_of(r), "unknown_workflow");
    json_decref(r);
}

/* A quick step, then a slow one: the kill comes between them. */
#define TWO_STEP_WF                                                                               \
    "loom: 1\nname: durable\n"                                                                    \
    "do:\n  chain:\n    - call: 'fast {{ input.text }}'\n"                                         \
    "    - call: { prompt: 'slowly {{ prev }}', provider: slow }\n"

Test(loomd, a_job_survives_kill_9, .fini = teardown)
{
    start_default();
    lh_workflow(&D, "durable", TWO_STEP_WF);
    lh_wait_log(&D, "loaded", "workflow=durable ", 1, 10000);
    int ev = lh_subscribe(&D);
    char job[64];
    snprintf(job, sizeof job, "%s", submit_started(ev, "durable", "{\"text\":\"durable\"}"));
    /* the first step's checkpoint is committed: read from the store itself,
     * since a step_finished event may come before its commit */
    json_t *e = lh_wait_event(ev, "step_finished", job, 10000);
    cr_assert(e, "the first step did not finish within 10 s");
    json_decref(e);
    close(ev);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long steps;
    while ((steps = lh_store_steps(&D, job)) < 1) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        cr_assert(t.tv_sec - t0.tv_sec < 10, "the first step was not committed within 10 s (%ld)", steps);
        poll(NULL, 0, 10); /* the interval of a loop that tests the store itself */
    }
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")), "running",
                     "killed mid-job: %s", json_dumps(r, 0));
    json_decref(r);
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    cr_assert_geq(lh_store_steps(&D, job), 1, "the checkpoint is in the store after the kill");
    lh_start(&D);
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", job);
    r = lh_call(&D, req, 12000);
    json_t *o = json_object_get(r, "job");
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "succeeded", "%s", json_dumps(r, 0));
    cr_assert(strstr(json_string_value(json_object_get(o, "output")), "durable"));
    json_decref(r);
    /* the new daemon took the first step from its checkpoint: its quick
     * provider was never called */
    r = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    json_t *prov = json_object_get(r, "providers");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(prov, "default"), "succeeded")), 0,
                 "the checkpointed step was called again: %s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(prov, "slow"), "succeeded")), 1);
    json_decref(r);
}

Test(loomd, sigterm_lets_running_jobs_finish, .fini = teardown)
{
    start_default();
    int ev = lh_subscribe(&D);
    char job[64];
    snprintf(job, sizeof job, "%s", submit_started(ev, "slow", "{\"text\":\"x\"}"));
    close(ev);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    lh_start(&D);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")), "succeeded");
    json_decref(r);
}

Test(loomd, a_thousand_clients_at_once, .fini = teardown, .timeout = 120)
{
    start_default();
    enum { N = 1000 };
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = lh_connect(&D);
        cr_assert(fds[i] >= 0, "connection %d", i);
    }
    for (int i = 0; i < N; i++) {
        char req[200];
        snprintf(req, sizeof req, "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"c%d\"},\"wait\":true}", i, i);
        lh_send(fds[i], req);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        json_t *r = lh_recv(fds[i], 60000);
        ok += r && json_is_true(json_object_get(r, "ok")) &&
              json_integer_value(json_object_get(r, "id")) == i;
        json_decref(r);
        close(fds[i]);
    }
    cr_assert_eq(ok, N);
}

Test(loomd, socket_mode_is_0660, .fini = teardown)
{
    start_default();
    struct stat st;
    cr_assert_eq(stat(D.sock, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0660);
}

Test(loomd, http_provider_through_the_daemon, .fini = teardown)
{
    lh_setup(&D, "  llm: { plugin: openai, base_url: \"@FAKE@\", limits: { concurrency: 4 } }\n",
             (const char *const[]){ "--latency", "20", NULL });
    lh_workflow(&D, "remote", "loom: 1\nname: remote\ndefaults: { provider: llm, model: m }\n"
                              "do: { map: { over: '{{ input }}', do: { call: 'r{{ item }}' } } }\n");
    lh_start(&D);
    json_t *r = submit_wait("remote", "[1,2,3,4,5,6,7,8]");
    json_t *res = json_object_get(r, "result");
    cr_assert_str_eq(json_string_value(json_object_get(res, "state")), "succeeded", "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_object_get(res, "usage"), "llm"), "calls")), 8);
    cr_assert_leq(fake_server_stat(&D.fake, "max_in_flight"), 4);
    json_decref(r);
}

Test(loomd, oversize_line_refused_connection_lives, .fini = teardown, .timeout = 60)
{
    start_default();
    int fd = lh_connect(&D);
    size_t n = (size_t)17 << 20;
    char *big = malloc(n + 64);
    cr_assert(big);
    strcpy(big, "{\"op\":\"validate\",\"yaml\":\"");
    memset(big + strlen(big), 'x', n);
    strcpy(big + 26 + n, "\"}");
    lh_send(fd, big);
    free(big);
    json_t *r = lh_recv(fd, 20000);
    cr_assert_str_eq(code_of(r), "line_too_long");
    json_decref(r);
    lh_send(fd, "{\"id\":2,\"op\":\"workflows\"}");
    r = lh_recv(fd, 5000);
    cr_assert(json_is_true(json_object_get(r, "ok")), "the connection still serves");
    json_decref(r);
    close(fd);
}

Test(loomd, a_half_closed_client_still_gets_its_answer, .fini = teardown)
{
    start_default();
    int fd = lh_connect(&D);
    lh_send(fd, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"echo\",\"input\":{\"text\":\"hc\"},\"wait\":true}");
    shutdown(fd, SHUT_WR);
    json_t *r = lh_recv(fd, 10000);
    cr_assert(json_is_true(json_object_get(r, "ok")));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")), "succeeded");
    json_decref(r);
    close(fd);
}

Test(loomd, a_client_gone_mid_wait_loses_nothing, .fini = teardown)
{
    start_default();
    int ev = lh_subscribe(&D);
    int fd = lh_connect(&D);
    lh_send(fd, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"gone\"},\"idempotency_key\":\"g1\",\"wait\":true}");
    json_t *e = lh_wait_event(ev, "job_started", NULL, 10000);
    cr_assert(e, "the job did not start within 10 s");
    json_decref(e);
    close(ev);
    close(fd); /* the job was acknowledged only by the wait's reply: ask again */
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"slow\",\"input\":{\"text\":\"gone\"},\"idempotency_key\":\"g1\",\"wait\":10}", 12000);
    cr_assert(json_is_true(json_object_get(r, "existed")) || json_is_true(json_object_get(r, "ok")));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")), "succeeded",
                     "%s", json_dumps(r, 0));
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"list\"}", 5000);
    cr_assert_eq(json_array_size(json_object_get(r, "jobs")), 1, "one job, not two");
    json_decref(r);
}

Test(loomd, hot_reload_while_jobs_run, .fini = teardown)
{
    start_default();
    lh_workflow(&D, "two", "loom: 1\nname: two\ndefaults: { provider: slow }\ndo: { call: 'first' }\n");
    lh_wait_log(&D, "loaded", "workflow=two ", 1, 10000);
    int ev = lh_subscribe(&D);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":10}", submit_started(ev, "two", "{}"));
    close(ev);
    /* while it runs, a new version: the running job keeps the one it started with */
    lh_workflow(&D, "two", "loom: 1\nname: two\ndo: { call: 'second' }\n");
    lh_wait_log(&D, "loaded", "workflow=two ", 2, 10000);
    json_t *r = lh_call(&D, req, 12000);
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "job"), "output")), "first"),
              "%s", json_dumps(r, 0));
    json_decref(r);
    r = submit_wait("two", "{}");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "result"), "output")), "second"));
    json_decref(r);
}

/* A plugin's loom_log from a provider instance's init reaches loomd's log
 * at the level the plugin gave, with the plugin's name (ABI 2.0: before,
 * the host dropped every line but init's, and printed those as warn). */
Test(loomd, a_provider_instance_logs_with_its_level_and_name, .fini = teardown)
{
    unsetenv("LOOM_TEST_UNSET_KEY_Q7");
    lh_setup(&D, "  keyless: { plugin: openai, api_key_env: LOOM_TEST_UNSET_KEY_Q7, "
                 "base_url: \"http://127.0.0.1:9/v1\" }\n", NULL);
    lh_start(&D);
    lh_wait_log(&D, " info  openai: no API key (LOOM_TEST_UNSET_KEY_Q7 unset): "
                    "no Authorization header", NULL, 1, 10000);
    cr_assert_eq(lh_log_count(&D, "warn  openai: no API key", NULL), 0);
}
