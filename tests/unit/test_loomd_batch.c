/* test_loomd_batch.c -- provider Batch APIs through a real loomd, the
 * openai and anthropic plugins and the fake provider's batch endpoints:
 * a 10,000-item map in batch mode makes no direct call and answers what a
 * direct run would; a kill -9 while lines collect or while the batch runs
 * never sends the same lines twice (the fake counts uploads and creates);
 * a cancelled job cancels its batch; 429s and 5xx on the batch endpoints,
 * an expired batch and failed lines are retried (in a later batch, or
 * directly with fallback_direct); a reload does not lose a running
 * batch; the cost is at the batch price; the job's batch_progress events,
 * `loomctl watch`, `loomctl get` and stats.batch show it. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

static int truth(int x)
{
    return x != 0;
}

/* Prices of model m (USD per million tokens): the batch ones are set apart
 * from the direct ones, so a cost at the wrong price cannot pass. */
#define P_IN 1000.0
#define P_OUT 2000.0
#define P_BIN 300.0
#define P_BOUT 700.0

/* The provider entry: plugin PLUGIN against the fake, polled often so a
 * test's time is the fake's --batch-delay, not the backoff. */
static void start(const char *plugin, const char *window, const char *const *fake_args)
{
    char extra[1024];
    snprintf(extra, sizeof extra,
             "  llm: { plugin: %s, base_url: \"@FAKE@\", api_key_env: LOOM_TEST_BATCH_KEY,\n"
             "         batch_api: { window: %s, poll_min: 20ms, poll_max: 100ms } }\n"
             "prices:\n"
             "  llm:\n"
             "    m: { input: %g, output: %g, batch_input: %g, batch_output: %g }\n",
             plugin, window, P_IN, P_OUT, P_BIN, P_BOUT);
    cr_assert_eq(setenv("LOOM_TEST_BATCH_KEY", "sk-test-batch", 1), 0);
    lh_setup(&D, extra, fake_args);
}

/* A map over input.items in batch mode; KEYS: more keys of the map (YAML
 * flow entries, "" for none); RETRY: the call's retry policy. */
static void map_workflow(const char *name, const char *keys, const char *retry)
{
    char wf[1024];
    snprintf(wf, sizeof wf,
             "loom: 1\nname: %s\ndefaults: { provider: llm, model: m }\n"
             "do:\n"
             "  map: { over: '{{ input.items }}', mode: batch, max_concurrency: 4%s,\n"
             "         do: { call: { prompt: 'item {{ item }}', max_tokens: 8 }, retry: %s } }\n",
             name, keys, retry);
    lh_workflow(&D, name, wf);
}

static json_t *call(const char *req)
{
    json_t *r = lh_call(&D, req, 30000);
    cr_assert(r, "no reply to %.200s", req);
    return r;
}

/* Submits WF over items 0..N-1 without waiting; the job's id into JOB. */
static void submit(const char *wf, int n, char job[64])
{
    json_t *items = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(items, json_integer(i));
    json_t *req = json_pack("{s:s, s:s, s:{s:o}}", "op", "submit", "workflow", wf, "input",
                            "items", items);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *r = call(text);
    free(text);
    const char *id = json_string_value(json_object_get(r, "job"));
    cr_assert(id, "%s", json_dumps(r, 0));
    snprintf(job, 64, "%s", id);
    json_decref(r);
}

static void tick(void)
{
    struct timespec t = { 0, 20 * 1000 * 1000 }; /* between polls of a state */
    nanosleep(&t, NULL);
}

/* `get` of JOB (the job object, a new reference). */
static json_t *get_job(const char *job)
{
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *r = call(req);
    json_t *o = json_incref(json_object_get(r, "job"));
    cr_assert(o, "%s", json_dumps(r, 0));
    json_decref(r);
    return o;
}

static const char *state_of(const json_t *o)
{
    return json_string_value(json_object_get(o, "state"));
}

/* Waits up to BOUND_MS for JOB to reach STATE; the job object then. */
static json_t *wait_state(const char *job, const char *state, long bound_ms)
{
    long end = lh_now_ms() + bound_ms;
    for (;;) {
        json_t *o = get_job(job);
        if (strcmp(state_of(o) ? state_of(o) : "", state) == 0)
            return o;
        char *s = json_dumps(o, JSON_COMPACT);
        cr_assert(lh_now_ms() < end, "job %s is not %s after %ld ms: %.400s", job, state,
                  bound_ms, s);
        free(s);
        json_decref(o);
        tick();
    }
}

/* Waits up to BOUND_MS for JOB to end (succeeded, failed or cancelled). */
static json_t *wait_end(const char *job, long bound_ms)
{
    long end = lh_now_ms() + bound_ms;
    for (;;) {
        json_t *o = get_job(job);
        const char *s = state_of(o) ? state_of(o) : "";
        if (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))
            return o;
        cr_assert(lh_now_ms() < end, "job %s still %s after %ld ms", job, s, bound_ms);
        json_decref(o);
        tick();
    }
}

/* Waits up to BOUND_MS for the fake's counter NAME to reach at least N. */
static void wait_stat(const char *name, long n, long bound_ms)
{
    long end = lh_now_ms() + bound_ms;
    while (fake_server_stat(&D.fake, name) < n) {
        cr_assert(lh_now_ms() < end, "the fake's %s is %ld, not %ld, after %ld ms", name,
                  fake_server_stat(&D.fake, name), n, bound_ms);
        tick();
    }
}

static long fake_stat(const char *name)
{
    return fake_server_stat(&D.fake, name);
}

/* JOB (a job object) succeeded and its output is the fake's echo of every
 * item's prompt, in order. */
static void assert_echoes(const json_t *o, int n)
{
    char *dump = json_dumps(json_object_get(o, "error"), JSON_COMPACT);
    cr_assert_str_eq(state_of(o), "succeeded", "error: %s", dump ? dump : "none");
    free(dump);
    const json_t *out = json_object_get(o, "output");
    cr_assert_eq(json_array_size(out), (size_t)n, "%zu outputs", json_array_size(out));
    for (int i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "item %d", i);
        const char *got = json_string_value(json_array_get(out, (size_t)i));
        cr_assert(got && strcmp(got, want) == 0, "output %d is %s", i, got ? got : "not a string");
    }
}

/* A 10,000-line job's end: each line is a store write at submit, one in the
 * results' transaction and one checkpoint; well under 20 ms a line even
 * under the sanitizers, which is 200 s. */
#define BIG 10000
#define BIG_BOUND_MS (BIG * 20L)

static void ten_thousand(const char *plugin, const char *direct_counter)
{
    start(plugin, "200ms", NULL);
    map_workflow("many", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("many", BIG, job);
    json_t *o = wait_end(job, BIG_BOUND_MS);
    assert_echoes(o, BIG);
    cr_assert_eq(fake_stat(direct_counter), 0, "no call went direct");
    cr_assert_eq(fake_stat("batch_lines"), BIG, "every line once");
    /* OpenAI takes 50,000 lines a batch, Anthropic 100,000: one batch */
    cr_assert_eq(fake_stat("batch_creates"), 1);
    cr_assert_eq(fake_stat("batch_results") >= 1, 1);
    /* the cost is at the batch price, of the usage the job reports */
    json_t *u = json_object_get(json_object_get(o, "usage"), "llm");
    double in = (double)json_integer_value(json_object_get(u, "input_tokens"));
    double out = (double)json_integer_value(json_object_get(u, "output_tokens"));
    cr_assert(in > 0 && out > 0, "usage is reported: %s", json_dumps(u, 0));
    cr_assert_eq(json_integer_value(json_object_get(u, "calls")), BIG);
    double want = (in * P_BIN + out * P_BOUT) / 1e6;
    double cost = json_number_value(json_object_get(o, "cost"));
    cr_assert(fabs(cost - want) < 1e-9, "cost %.9f, at the batch price %.9f, direct %.9f", cost,
              want, (in * P_IN + out * P_OUT) / 1e6);
    json_decref(o);
    /* stats.batch: the lines are done, nothing left open */
    json_t *st = call("{\"op\":\"stats\"}");
    json_t *b = json_object_get(st, "batch");
    cr_assert(json_is_object(b), "stats.batch: %s", json_dumps(st, 0));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "lines"), "collecting")), 0);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "lines"), "pending")), 0);
    json_decref(st);
}

Test(loomd_batch, openai_ten_thousand_items_in_one_batch, .fini = teardown)
{
    ten_thousand("openai", "chat");
}

Test(loomd_batch, anthropic_ten_thousand_items_in_one_batch, .fini = teardown)
{
    ten_thousand("anthropic", "messages");
}

/* A kill -9 while the batch runs at the provider: the restarted daemon
 * polls it on, and the job ends with the lines sent once. The batch runs
 * 2 s at the fake; the test kills within a poll tick (20 ms) of the
 * create being counted. */
Test(loomd_batch, kill9_while_the_batch_runs_sends_nothing_twice, .fini = teardown)
{
    const char *args[] = { "--batch-delay", "2000", NULL };
    start("openai", "100ms", args);
    map_workflow("few", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("few", 50, job);
    wait_stat("batch_creates", 1, 15000);
    cr_assert_eq(fake_stat("batch_expired") + fake_stat("batch_results"), 0, "the batch still runs");
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    lh_start(&D);
    json_t *o = wait_end(job, 30000);
    assert_echoes(o, 50);
    json_decref(o);
    cr_assert_eq(fake_stat("batch_uploads"), 1);
    cr_assert_eq(fake_stat("batch_creates"), 1);
    cr_assert_eq(fake_stat("batch_lines"), 50);
    cr_assert_eq(fake_stat("chat"), 0);
}

/* A kill -9 while the lines collect (a 3 s window: the job is recorded
 * waiting long before it ends): the restarted daemon sends them, once. */
Test(loomd_batch, kill9_while_lines_collect_sends_them_once, .fini = teardown)
{
    start("openai", "3s", NULL);
    map_workflow("few", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("few", 50, job);
    json_decref(wait_state(job, "waiting", 15000));
    cr_assert_eq(fake_stat("batch_uploads") + fake_stat("batch_creates"), 0, "still collecting");
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    /* collecting lines are in memory only: the restarted daemon wakes the
     * job, recorded waiting on lines it does not have, to submit them again */
    lh_start(&D);
    lh_wait_log(&D, "job woken for its batch lines", job, 1, 15000);
    json_t *o = wait_end(job, 30000);
    assert_echoes(o, 50);
    json_decref(o);
    cr_assert_eq(fake_stat("batch_uploads"), 1);
    cr_assert_eq(fake_stat("batch_creates"), 1);
    cr_assert_eq(fake_stat("batch_lines"), 50);
    cr_assert_eq(fake_stat("chat"), 0);
}

/* Cancelling the only job whose lines a running batch holds cancels the
 * batch at the provider. */
Test(loomd_batch, cancel_cancels_the_batch, .fini = teardown)
{
    const char *args[] = { "--batch-delay", "60000", NULL };
    start("openai", "100ms", args);
    map_workflow("few", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("few", 20, job);
    wait_stat("batch_creates", 1, 15000);
    json_decref(wait_state(job, "waiting", 15000));
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"cancel\",\"job\":\"%s\"}", job);
    json_decref(call(req));
    json_t *o = wait_state(job, "cancelled", 15000);
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    cr_assert(msg && strstr(msg, "batch lines"), "%s", json_dumps(o, 0));
    json_decref(o);
    wait_stat("batch_cancels", 1, 15000);
    cr_assert_eq(fake_stat("batch_cancels"), 1);
    cr_assert_eq(fake_stat("chat"), 0);
}

/* Every other request to a batch endpoint answered CODE: each step is
 * retried, the job ends right, and nothing is made twice. */
static void faults(const char *code)
{
    const char *args[] = { "--batch-fault", code, "--batch-fault-every", "2", NULL };
    start("openai", "100ms", args);
    map_workflow("few", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("few", 30, job);
    json_t *o = wait_end(job, 60000);
    assert_echoes(o, 30);
    json_decref(o);
    /* upload, create, at least one retrieve and the results: 4 or more
     * requests, every other one refused */
    cr_assert(fake_stat("batch_faults") >= 2, "faults: %ld", fake_stat("batch_faults"));
    cr_assert_eq(fake_stat("batch_creates"), 1);
    cr_assert_eq(fake_stat("batch_lines"), 30);
    cr_assert_eq(fake_stat("chat"), 0);
}

Test(loomd_batch, answers_429_on_the_batch_endpoints_are_waited_out, .fini = teardown)
{
    faults("429");
}

Test(loomd_batch, answers_503_on_the_batch_endpoints_are_retried, .fini = teardown)
{
    faults("503");
}

/* The second batch the fake makes expires: half of its lines have
 * results, the rest are retried by the step's policy in a later batch. */
Test(loomd_batch, an_expired_batch_is_retried_in_a_later_one, .fini = teardown)
{
    const char *args[] = { "--batch-expire-every", "2", NULL };
    start("openai", "100ms", args);
    map_workflow("few", "", "{ max_attempts: 4, initial_delay: 10ms, on: [upstream] }");
    lh_start(&D);
    char job[64];
    submit("few", 1, job); /* the first batch: it completes */
    json_t *o = wait_end(job, 30000);
    assert_echoes(o, 1);
    json_decref(o);
    submit("few", 10, job); /* the second: it expires */
    o = wait_end(job, 60000);
    assert_echoes(o, 10);
    json_decref(o);
    cr_assert_eq(fake_stat("batch_expired"), 1);
    cr_assert(fake_stat("batch_creates") >= 3, "creates: %ld", fake_stat("batch_creates"));
    /* 1, then 10, then the 5 that expired */
    cr_assert_eq(fake_stat("batch_lines"), 16);
    cr_assert_eq(fake_stat("chat"), 0);
}

/* With fallback_direct the lines that failed in the batch go direct: as
 * many direct calls as failed lines, and the right answers. */
Test(loomd_batch, fallback_direct_sends_the_failed_lines_direct, .fini = teardown)
{
    const char *args[] = { "--batch-fail-every", "4", NULL };
    start("openai", "100ms", args);
    map_workflow("few", ", fallback_direct: true", "{ max_attempts: 2, on: [upstream] }");
    lh_start(&D);
    char job[64];
    submit("few", 20, job);
    json_t *o = wait_end(job, 30000);
    assert_echoes(o, 20);
    json_decref(o);
    cr_assert_eq(fake_stat("batch_line_failures"), 5, "lines 4, 8, ..., 20 failed");
    cr_assert_eq(fake_stat("chat"), 5, "one direct call per failed line");
    cr_assert_eq(fake_stat("batch_creates"), 1);
}

#define WATCHED_WF                                                                                \
    "loom: 1\nname: watched\ndefaults: { provider: llm, model: m }\ndo:\n  chain:\n"              \
    "    - { id: first, call: { prompt: 'first', mode: direct } }\n"                              \
    "    - map: { over: '{{ input.items }}', mode: batch,\n"                                      \
    "             do: { call: { prompt: 'item {{ item }}', max_tokens: 8 } } }\n"

/* The job's batch_progress events, on an `events` subscription of every
 * job (a parked job has no subscribers of its own); loomctl watch shows
 * the batch while the job runs; loomctl get names the batch it waits on. */
Test(loomd_batch, progress_watch_and_get_show_the_batch, .fini = teardown)
{
    /* the direct call first takes 2 s at the fake: loomctl watch, started
     * right after the submit, is subscribed long before the lines go */
    const char *args[] = { "--latency", "2000", "--batch-delay", "1000", NULL };
    start("openai", "300ms", args);
    lh_workflow(&D, "watched", WATCHED_WF);
    lh_start(&D);
    int ev = lh_subscribe(&D);
    cr_assert(ev >= 0);
    char job[64];
    submit("watched", 3, job);
    char *cmd = NULL;
    const char *bd = getenv("LOOM_BUILDDIR");
    cr_assert(asprintf(&cmd, "'%s/loomctl' watch --socket '%s' %s", bd ? bd : ".", D.sock, job) > 0);
    FILE *watch = popen(cmd, "r");
    free(cmd);
    cr_assert(watch);

    json_t *e = lh_wait_event(ev, "batch_progress", job, 15000);
    cr_assert(e, "no batch_progress event");
    const char *name = json_string_value(json_object_get(e, "batch"));
    cr_assert(name && strncmp(name, "loom-", 5) == 0 && strlen(name) == 31, "batch %s", name);
    cr_assert_str_eq(json_string_value(json_object_get(e, "state")), "collecting");
    cr_assert_str_eq(json_string_value(json_object_get(e, "provider")), "llm");
    char batch[64];
    snprintf(batch, sizeof batch, "%s", name);
    json_decref(e);

    /* parked on its lines: get names the batch ("" while the lines collect,
     * as they did when the job parked: the window is 300 ms) */
    json_t *o = wait_state(job, "waiting", 15000);
    json_t *w = json_array_get(json_object_get(o, "waits"), 0);
    const char *wb = json_string_value(json_object_get(w, "batch"));
    cr_assert(wb && (!*wb || !strcmp(wb, batch)), "%s", json_dumps(o, 0));
    cr_assert(truth(json_object_get(w, "signal") == NULL), "a batch wait has no signal");
    cr_assert(truth(json_object_get(w, "deadline_ms") == NULL ||
                    json_is_null(json_object_get(w, "deadline_ms"))), "and no deadline");
    char want[128];
    snprintf(want, sizeof want, "batch %s at do.chain[1]", *wb ? batch : "(collecting)");
    json_decref(o);
    char args_get[512], *out = NULL;
    snprintf(args_get, sizeof args_get, "get --socket '%s' %s", D.sock, job);
    cr_assert_eq(lh_loomctl(args_get, &out), 0);
    cr_assert(strstr(out, want), "get says: %s", out);
    free(out);
    /* no signal ends a batch wait, not even one named as its batch */
    char sig[256];
    snprintf(sig, sizeof sig, "{\"op\":\"signal\",\"job\":\"%s\",\"signal\":\"%s\",\"data\":1}",
             job, batch);
    json_t *r = call(sig);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                     "unknown_signal", "%s", json_dumps(r, 0));
    json_decref(r);

    /* the parked job's progress still reaches every job's subscribers,
     * up to its end with every line done */
    for (;;) {
        e = lh_wait_event(ev, "batch_progress", job, 15000);
        cr_assert(e, "no batch_progress event with the batch ended");
        const char *st = json_string_value(json_object_get(e, "state"));
        bool ended = st && strcmp(st, "ended") == 0;
        cr_assert_str_eq(json_string_value(json_object_get(e, "provider")), "llm");
        if (ended) {
            cr_assert_eq(json_integer_value(json_object_get(e, "done")), 3);
            cr_assert_eq(json_integer_value(json_object_get(e, "total")), 3);
            cr_assert(json_string_length(json_object_get(e, "remote")) > 0);
        }
        json_decref(e);
        if (ended)
            break;
    }
    o = wait_end(job, 15000);
    cr_assert_str_eq(state_of(o), "succeeded");
    json_decref(o);
    close(ev);

    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, watch);
    buf[n] = '\0';
    int wst = pclose(watch);
    snprintf(want, sizeof want, "batch %s", batch);
    cr_assert(strstr(buf, want), "watch printed: %s", buf);
    /* the watch went on through the job's park, up to its end */
    cr_assert(strstr(buf, "submitted to batch "), "watch printed: %s", buf);
    cr_assert(strstr(buf, "3 of 3 lines done"), "watch printed: %s", buf);
    cr_assert(strstr(buf, "job_finished") && strstr(buf, "succeeded"), "watch printed: %s", buf);
    cr_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "watch ended with %d: %s", wst, buf);

    /* stats.batch counts what was done */
    r = call("{\"op\":\"stats\"}");
    json_t *b = json_object_get(r, "batch");
    cr_assert(json_is_object(json_object_get(b, "batches")), "%s", json_dumps(r, 0));
    cr_assert(json_integer_value(json_object_get(b, "uploads")) >= 1, "%s", json_dumps(b, 0));
    json_decref(r);
}

/* A reload while the batch runs builds new provider instances and frees
 * the old ones once no job runs on them (the job is parked): the batch is
 * polled on through the new instance and ends right, made once. */
/* A job parked on its batch lines goes on by itself, so a client waiting
 * for its end is not answered at the park (as it is for a signal, which
 * needs a person): a wait sent while the job runs and one sent while it is
 * parked both get its end; a wait whose time runs out while it is parked
 * says so, with the job waiting. */
Test(loomd_batch, waits_for_the_end_go_on_through_a_batch_park, .fini = teardown)
{
    const char *args[] = { "--batch-delay", "1500", NULL };
    start("openai", "100ms", args);
    map_workflow("waited", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64], req[256];
    submit("waited", 3, job);
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"id\":1,\"job\":\"%s\",\"timeout\":30}", job);
    int early = lh_connect(&D);
    cr_assert(early >= 0);
    lh_send(early, req); /* queued or running now: a waiter of the live job */

    json_t *o = wait_state(job, "waiting", 15000);
    json_decref(o);
    int parked = lh_connect(&D);
    cr_assert(parked >= 0);
    lh_send(parked, req);
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"id\":2,\"job\":\"%s\",\"timeout\":0.2}",
             job);
    json_t *r = call(req);
    cr_assert(truth(json_is_true(json_object_get(r, "timed_out"))), "%s", json_dumps(r, 0));
    cr_assert_str_eq(state_of(json_object_get(r, "job")), "waiting");
    json_decref(r);

    int fds[] = { early, parked };
    for (int i = 0; i < 2; i++) {
        r = lh_recv(fds[i], 20000);
        cr_assert(r, "no answer to the wait %s the park", i ? "sent during" : "sent before");
        cr_assert(truth(json_is_false(json_object_get(r, "timed_out"))), "%s", json_dumps(r, 0));
        cr_assert_str_eq(state_of(json_object_get(r, "job")), "succeeded", "%s",
                         json_dumps(r, 0));
        cr_assert_eq(json_array_size(json_object_get(json_object_get(r, "job"), "output")), 3);
        json_decref(r);
        close(fds[i]);
    }
}

Test(loomd_batch, a_reload_while_the_batch_runs, .fini = teardown)
{
    const char *args[] = { "--batch-delay", "1500", NULL };
    start("openai", "100ms", args);
    map_workflow("few", "", "{ max_attempts: 2 }");
    lh_start(&D);
    char job[64];
    submit("few", 20, job);
    wait_stat("batch_creates", 1, 15000);
    json_decref(wait_state(job, "waiting", 15000));
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    lh_wait_log(&D, "reloading", NULL, 1, 10000);
    cr_assert_eq(fake_stat("batch_results"), 0, "the reload came while the batch ran");
    json_t *o = wait_end(job, 30000);
    assert_echoes(o, 20);
    json_decref(o);
    cr_assert_eq(fake_stat("batch_expired"), 0, "the batch ended by itself");
    cr_assert_eq(fake_stat("batch_creates"), 1);
    cr_assert_eq(fake_stat("batch_uploads"), 1);
    cr_assert_eq(fake_stat("chat"), 0);
}
