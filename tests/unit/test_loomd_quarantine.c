/* test_loomd_quarantine.c -- poison jobs under a real loomd.
 *
 * A job whose lambda segfaults (misbehave.crash_on on {"crash": true})
 * takes loomd down at each start. Run under a supervisor loop written here
 * (restart after each abnormal exit, up to a bound), loomd must be
 * restarted at most quarantine_after + 1 times, then stay up: the job ends
 * failed with the code `crashed`, naming the step and the function, and
 * other jobs run. `retry` brings it back as attempt 2, which crashes and is
 * quarantined again the same way.
 *
 * kill -9 is judged by the record of plugin code in flight alone: a kill
 * while a job waits on its provider blames nobody; kills while a lambda
 * runs blame its job, and quarantine it at the limit.
 *
 * loomd runs with ASAN_OPTIONS=handle_segv=0 (added to what is set), so
 * that under AddressSanitizer its own crash handler, not ASan's, sees the
 * fault (docs/operations.md). Every wait has a deadline; nothing sleeps. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/core/inflight.h"
#include "tests/unit/loomd_harness.h"

enum { QUARANTINE_AFTER = 2, SUPERVISE_MS = 60000 };

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

/* A loomd whose config loads the misbehave plugin, a mock provider `warm`
 * with 300 ms of latency, and quarantine_after. */
static void setup(void)
{
    char opts[512];
    const char *old = getenv("ASAN_OPTIONS");
    snprintf(opts, sizeof opts, "%s%shandle_segv=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    lh_setup(&D, "  warm: { plugin: mock, latency: 300ms }\n", NULL);
    char dir[400], repl[700];
    lh_plugin_dir(&D, (const char *const[]){ "misbehave", NULL }, dir, sizeof dir);
    snprintf(repl, sizeof repl, "shutdown_grace: 5s\nplugins: [%s]\nquarantine_after: %d\n", dir,
             QUARANTINE_AFTER);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
    /* a first step that is checkpointed, then the lambda on the job's input */
    lh_workflow(&D, "poison",
                "loom: 1\nname: poison\ndefaults: { provider: warm }\n"
                "do:\n  chain:\n"
                "    - call: 'warm up'\n"
                "    - lambda: { fn: misbehave.crash_on, input: '{{ input }}' }\n");
    lh_workflow(&D, "waits",
                "loom: 1\nname: waits\ndefaults: { provider: slow }\ndo: { call: 'hello' }\n");
    lh_workflow(&D, "stuck", "loom: 1\nname: stuck\ndo: { lambda: misbehave.forever }\n");
}

/* JOB's stored object (new reference), or NULL when loomd does not answer. */
static json_t *get_job(const char *job, int timeout_ms)
{
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *r = lh_call(&D, req, timeout_ms);
    json_t *o = json_incref(json_object_get(r, "job"));
    json_decref(r);
    return o;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* The supervisor: loomd (D.pid, running or dying) is restarted after each
 * abnormal exit (here always SIGSEGV: the test plugin is not instrumented
 * by UBSan, and loomd runs without ASan's SEGV handler), at most MAX times,
 * until it answers that JOB failed and is still running. Returns how many
 * restarts that took. */
static int supervise(const char *job, int max)
{
    int restarts = 0;
    long deadline = lh_now_ms() + SUPERVISE_MS;
    for (;;) {
        cr_assert(lh_now_ms() < deadline, "job %s not failed after %d restarts in %d ms", job,
                  restarts, SUPERVISE_MS);
        int st = 0;
        if (waitpid(D.pid, &st, WNOHANG) == D.pid) {
            D.pid = 0;
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
                      "loomd ended with status %#x, not by SIGSEGV (see %s/loomd.log)", st, D.dir);
            cr_assert(restarts < max, "loomd crashed again after %d restarts (see %s/loomd.log)",
                      restarts, D.dir);
            restarts++;
            lh_spawn(&D);
            continue;
        }
        json_t *o = get_job(job, 1000);
        bool failed = o && strcmp(str(o, "state"), "failed") == 0;
        json_decref(o);
        if (failed && waitpid(D.pid, &st, WNOHANG) == 0)
            return restarts;
        poll(NULL, 0, 20); /* the supervisor's polling interval, not a wait for an event */
    }
}

/* The poison job ID failed with code crashed, naming the step, the
 * function and the signal, at ATTEMPT after QUARANTINE_AFTER crashes. */
static void assert_quarantined(const char *job, int attempt, const char *signal)
{
    json_t *o = get_job(job, 5000);
    cr_assert(o, "no answer to get");
    char *text = json_dumps(o, JSON_COMPACT);
    cr_assert_str_eq(str(o, "state"), "failed", "%s", text);
    json_t *err = json_object_get(o, "error");
    cr_assert_str_eq(str(err, "code"), "crashed", "%s", text);
    const char *msg = str(err, "message");
    cr_assert(strstr(msg, "misbehave."), "the message names the function: %s", text);
    cr_assert(strstr(msg, "step do"), "the message names the step: %s", text);
    cr_assert(strstr(msg, signal), "the message names %s: %s", signal, text);
    cr_assert_eq(json_integer_value(json_object_get(err, "crashes")), QUARANTINE_AFTER, "%s", text);
    cr_assert_eq(json_integer_value(json_object_get(o, "attempt")), attempt, "%s", text);
    cr_assert_eq(json_integer_value(json_object_get(o, "crashes")), QUARANTINE_AFTER, "%s", text);
    free(text);
    json_decref(o);
}

static void submit(const char *workflow, const char *input, char *job, size_t len)
{
    char req[512];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s}", workflow,
             input);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert(r && json_string_value(json_object_get(r, "job")), "%s",
              r ? json_dumps(r, 0) : "no reply");
    snprintf(job, len, "%s", str(r, "job"));
    json_decref(r);
}

Test(loomd_quarantine, a_poison_job_is_quarantined_and_loomd_stays_up, .init = setup,
     .fini = teardown)
{
    char poison[64], fine[64], req[256];
    lh_start(&D);
    submit("poison", "{\"crash\":true}", poison, sizeof poison);
    int restarts = supervise(poison, QUARANTINE_AFTER + 1);
    cr_assert(restarts >= 1 && restarts <= QUARANTINE_AFTER + 1, "%d restarts", restarts);
    assert_quarantined(poison, 1, "SIGSEGV");
    /* the call before the crashing lambda was committed before the lambda
     * ran (engine.h, engine_durable_fn), so no crash lost it */
    cr_assert_eq(lh_store_steps(&D, poison), 1);
    cr_assert_eq(lh_log_count(&D, "quarantined: it was running", poison), 1);
    cr_assert_eq(lh_log_count(&D, "the previous run crashed (SIGSEGV) in plugin code", NULL),
                 restarts);
    /* it stays up and serves other jobs, the same workflow included */
    snprintf(req, sizeof req,
             "{\"op\":\"submit\",\"workflow\":\"poison\",\"input\":{\"crash\":false},\"wait\":30}");
    json_t *r = lh_call(&D, req, 35000);
    cr_assert(r, "no answer");
    cr_assert_str_eq(str(json_object_get(r, "result"), "state"), "succeeded", "%s",
                     json_dumps(r, 0));
    snprintf(fine, sizeof fine, "%s", str(r, "job"));
    json_decref(r);
    int st;
    cr_assert_eq(waitpid(D.pid, &st, WNOHANG), 0, "loomd is still running");

    /* retry: only a failed job */
    snprintf(req, sizeof req, "{\"op\":\"retry\",\"job\":\"%s\"}", fine);
    r = lh_call(&D, req, 5000);
    cr_assert(r);
    cr_assert_str_eq(str(json_object_get(r, "error"), "code"), "not_retryable", "%s",
                     json_dumps(r, 0));
    cr_assert(strstr(str(json_object_get(r, "error"), "message"), "succeeded"));
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"retry\",\"job\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\"}", 5000);
    cr_assert(r);
    cr_assert_str_eq(str(json_object_get(r, "error"), "code"), "not_found", "%s", json_dumps(r, 0));
    json_decref(r);

    /* the quarantined job again, as attempt 2: it crashes and is quarantined again */
    snprintf(req, sizeof req, "{\"op\":\"retry\",\"job\":\"%s\"}", poison);
    r = lh_call(&D, req, 5000);
    cr_assert(r, "no answer to retry");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    cr_assert_str_eq(str(r, "state"), "queued", "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(r, "attempt")), 2, "%s", json_dumps(r, 0));
    json_decref(r);
    restarts = supervise(poison, QUARANTINE_AFTER + 1);
    cr_assert(restarts >= 1 && restarts <= QUARANTINE_AFTER + 1, "%d restarts", restarts);
    assert_quarantined(poison, 2, "SIGSEGV");
    cr_assert_eq(lh_log_count(&D, "quarantined: it was running", poison), 2);
    /* its checkpoint was kept: the first step is all the store holds */
    cr_assert_eq(lh_store_steps(&D, poison), 1);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

/* Waits until STATE/inflight shows JOB's plugin code in flight. */
static void wait_in_flight(const char *job, int timeout_ms)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", D.state, INFLIGHT_FILE);
    long deadline = lh_now_ms() + timeout_ms;
    for (;;) {
        int fd = open(path, O_RDONLY);
        inflight_header h;
        if (fd >= 0 && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h) {
            for (uint32_t i = 0; i < h.nslots && i < INFLIGHT_MAX_SLOTS; i++) {
                inflight_slot s;
                if (pread(fd, &s, sizeof s, (off_t)(sizeof h + i * sizeof s)) == (ssize_t)sizeof s &&
                    !(s.seq & 1) && strncmp(s.job, job, sizeof s.job) == 0) {
                    close(fd);
                    return;
                }
            }
        }
        if (fd >= 0)
            close(fd);
        cr_assert(lh_now_ms() < deadline, "job %s's lambda not in flight after %d ms", job,
                  timeout_ms);
        poll(NULL, 0, 10); /* polling a file: there is no event to wait on */
    }
}

Test(loomd_quarantine, kill_9_while_waiting_on_a_provider_blames_nobody, .init = setup,
     .fini = teardown)
{
    char job[64], req[256];
    lh_start(&D);
    int ev = lh_subscribe(&D);
    submit("waits", "{}", job, sizeof job);
    json_t *e = lh_wait_event(ev, "step_started", job, 10000);
    cr_assert(e, "the call did not start");
    json_decref(e);
    close(ev);
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    lh_start(&D);
    lh_wait_log(&D, "the previous run did not stop cleanly", "calls=0", 1, 10000);
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":30}", job);
    json_t *r = lh_call(&D, req, 35000);
    cr_assert(r, "no answer to wait");
    json_t *o = json_object_get(r, "job");
    cr_assert_str_eq(str(o, "state"), "succeeded", "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(o, "crashes")), 0, "%s", json_dumps(r, 0));
    json_decref(r);
    cr_assert_eq(lh_log_count(&D, "when the daemon died", NULL), 0);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    /* a clean stop leaves nothing to report */
    lh_start(&D);
    lh_wait_log(&D, "ready", NULL, 3, 10000);
    cr_assert_eq(lh_log_count(&D, "the previous run", NULL), 1);
}

Test(loomd_quarantine, kill_9_twice_inside_a_lambda_quarantines_its_job, .init = setup,
     .fini = teardown)
{
    char job[64];
    lh_start(&D);
    submit("stuck", "{}", job, sizeof job);
    wait_in_flight(job, 10000);
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    lh_start(&D);
    /* asked at once, perhaps before the job is live again (its resume waits
     * for its crash count): the answer is never "running" unless timed out */
    char req[160];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":0.2}", job);
    json_t *w = lh_call(&D, req, 10000);
    cr_assert(w);
    cr_assert(json_is_true(json_object_get(w, "timed_out")), "%s", json_dumps(w, 0));
    cr_assert_str_eq(str(json_object_get(w, "job"), "state"), "running", "%s", json_dumps(w, 0));
    json_decref(w);
    lh_wait_log(&D, "when the daemon died: crash 1 of 2", job, 1, 10000);
    /* resumed once its count is on disk: in flight again */
    wait_in_flight(job, 10000);
    json_t *o = get_job(job, 5000);
    cr_assert(o);
    cr_assert_eq(json_integer_value(json_object_get(o, "crashes")), 1, "%s", json_dumps(o, 0));
    cr_assert_str_eq(str(json_object_get(o, "crash"), "function"), "misbehave.forever", "%s",
                     json_dumps(o, 0));
    json_decref(o);
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    lh_start(&D);
    lh_wait_log(&D, "quarantined: it was running", job, 1, 10000);
    long deadline = lh_now_ms() + 10000;
    for (;;) { /* the end is committed just after the log line */
        o = get_job(job, 5000);
        if (o && strcmp(str(o, "state"), "failed") == 0)
            break;
        json_decref(o);
        cr_assert(lh_now_ms() < deadline, "job %s did not end", job);
        poll(NULL, 0, 10);
    }
    json_t *err = json_object_get(o, "error");
    cr_assert_str_eq(str(err, "code"), "crashed", "%s", json_dumps(o, 0));
    cr_assert(strstr(str(err, "message"), "killed, no crash signal"), "%s", json_dumps(o, 0));
    cr_assert(strstr(str(err, "message"), "misbehave.forever"), "%s", json_dumps(o, 0));
    json_decref(o);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}
