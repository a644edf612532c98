/* test_loomd_stop.c -- a real loomd whose plugins misbehave: a lambda that
 * never returns cannot hold a stop past its grace, a second signal cuts the
 * grace short, bad output ends a job with invalid_output, and --check fails
 * on every error it prints, naming a plugin that crashes in init.
 *
 * Bounds come from the config and from loomd's own: a stop ends within
 * shutdown_grace, plus the 200 ms loomd gives calls it cancelled, plus the
 * same again as the grace for closing the store and the socket on a loaded
 * machine. */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

/* Makes DIR/plugins holding a link to each test plugin named in NAMES and
 * points the config at it, with shutdown_grace GRACE. */
static void setup_with(const char *const *names, const char *grace)
{
    lh_setup(&D, NULL, NULL);
    char dir[400], repl[600];
    lh_plugin_dir(&D, names, dir, sizeof dir);
    snprintf(repl, sizeof repl, "shutdown_grace: %s\nplugins: [%s]\n", grace, dir);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
}

static const char *const misbehave[] = { "misbehave", NULL };

/* Submits a job whose lambda never returns and waits for its step's step to start; the job id is copied to JOB. */
static void start_stuck_job(char *job, size_t len)
{
    lh_workflow(&D, "stuck", "loom: 1\nname: stuck\ndo: { lambda: misbehave.forever }\n");
    lh_start(&D);
    int ev = lh_subscribe(&D);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"stuck\"}", 5000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "%s", r ? json_dumps(r, 0) : "no reply");
    const char *id = json_string_value(json_object_get(r, "job"));
    cr_assert(id, "%s", json_dumps(r, 0));
    snprintf(job, len, "%s", id);
    json_decref(r);
    json_t *e = lh_wait_event(ev, "step_started", job, 10000);
    cr_assert(e, "the stuck step did not start within 10 s");
    json_decref(e);
    close(ev);
}

static const char *job_state(const char *job)
{
    static char state[32];
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    json_t *r = lh_call(&D, req, 5000);
    cr_assert(r);
    snprintf(state, sizeof state, "%s",
             json_string_value(json_object_get(json_object_get(r, "job"), "state")) ?: "?");
    json_decref(r);
    return state;
}

Test(loomd_stop, sigterm_ends_within_the_grace_despite_a_stuck_lambda, .fini = teardown,
     .timeout = 60)
{
    setup_with(misbehave, "1s");
    char job[64];
    start_stuck_job(job, sizeof job);
    long t0 = lh_now_ms();
    int rc = lh_stop(&D, SIGTERM);
    long took = lh_now_ms() - t0;
    cr_assert_eq(rc, 0, "exit status %d", rc);
    const long grace = 1000, workers = 200;
    cr_assert(took >= grace, "stopped after %ld ms, before the grace", took);
    cr_assert(took < grace + workers + grace, "stopped after %ld ms", took);
    cr_assert_eq(lh_log_count(&D, "abandoned a call still running", "lambda misbehave.forever"), 1);
    cr_assert_eq(lh_log_count(&D, "abandoned a call still running", job), 1);
    /* the job was left running in the store and resumes at the next start */
    lh_start(&D);
    lh_wait_log(&D, "ready", "resumed=1", 1, 10000);
    cr_assert_str_eq(job_state(job), "running");
}

Test(loomd_stop, a_second_sigterm_ends_at_once, .fini = teardown, .timeout = 60)
{
    const long grace = 30000;
    setup_with(misbehave, "30s");
    char job[64];
    start_stuck_job(job, sizeof job);
    long t0 = lh_now_ms();
    kill(D.pid, SIGTERM);
    lh_wait_log(&D, "SIGTERM: taking no new jobs", NULL, 1, 10000);
    int rc = lh_stop(&D, SIGINT);
    long took = lh_now_ms() - t0;
    cr_assert_eq(rc, 0, "exit status %d", rc);
    cr_assert(took < grace / 2, "stopped after %ld ms of a %ld ms grace", took, grace);
    cr_assert_eq(lh_log_count(&D, "SIGINT again: stopping now", NULL), 1);
    lh_start(&D);
    lh_wait_log(&D, "ready", "resumed=1", 1, 10000);
}

Test(loomd_stop, bad_output_fails_the_job_with_invalid_output, .fini = teardown, .timeout = 60)
{
    setup_with(misbehave, "5s");
    lh_workflow(&D, "bad", "loom: 1\nname: bad\ndo: { lambda: misbehave.bad_utf8 }\n");
    lh_workflow(&D, "none", "loom: 1\nname: none\ndo: { lambda: misbehave.nothing }\n");
    lh_start(&D);
    const char *wfs[] = { "bad", "none" }, *codes[] = { "invalid_output", "lambda_failed" };
    for (int i = 0; i < 2; i++) {
        char req[256];
        snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"wait\":true}", wfs[i]);
        json_t *r = lh_call(&D, req, 15000);
        cr_assert(r, "no answer for %s", wfs[i]);
        json_t *res = json_object_get(r, "result");
        cr_assert_str_eq(json_string_value(json_object_get(res, "state")), "failed", "%s",
                         json_dumps(r, 0));
        json_t *err = json_object_get(res, "error");
        cr_assert_str_eq(json_string_value(json_object_get(err, "code")), codes[i], "%s",
                         json_dumps(r, 0));
        if (i == 0)
            cr_assert(strstr(json_string_value(json_object_get(err, "message")), "$.text"),
                      "%s", json_dumps(r, 0));
        char job[64];
        snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")) ?: "");
        json_decref(r);
        cr_assert_str_eq(job_state(job), "failed"); /* the row is final */
        snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":5}", job);
        r = lh_call(&D, req, 7000);
        cr_assert(r, "no answer to wait");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")),
                         "failed", "%s", json_dumps(r, 0));
        cr_assert(!json_is_true(json_object_get(r, "timed_out")));
        json_decref(r);
    }
    cr_assert_eq(lh_log_count(&D, "the store is closed", NULL), 0);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(loomd_stop, check_fails_on_a_missing_plugin_directory, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    lh_config_replace(&D, "shutdown_grace: 5s\n", "shutdown_grace: 5s\nplugins: [/nonexistent-loom-plugins]\n");
    char out[8192];
    int rc = lh_check(&D, out, sizeof out);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "cannot read the plugin directory"), "%s", out);
}

Test(loomd_stop, check_names_a_plugin_that_crashes_in_init, .fini = teardown)
{
    static const char *const names[] = { "init_crashes", "misbehave", NULL };
    setup_with(names, "5s");
    char out[8192];
    int rc = lh_check(&D, out, sizeof out);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "init_crashes.so: plugin 'init_crashes' crashed in init"), "%s", out);
}

Test(loomd_stop, check_passes_a_clean_config, .fini = teardown)
{
    setup_with(misbehave, "5s");
    char out[8192];
    int rc = lh_check(&D, out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
}

/* A lambda flagged PURE|FAST runs on the reactor: one that never returns
 * freezes the loop, so nothing on it can read a signal. Signals have a
 * thread of their own (daemon/loomd_signals.c): the stop still ends, after
 * shutdown_grace plus the margin loomd gives its close (5 s), or about a
 * second after a second signal. */
static long start_spinning_reactor(void)
{
    lh_workflow(&D, "spin", "loom: 1\nname: spin\ndo: { lambda: misbehave.spin_inline }\n");
    lh_start(&D);
    int ev = lh_subscribe(&D);
    int fd = lh_connect(&D);
    cr_assert(fd >= 0);
    lh_send(fd, "{\"op\":\"submit\",\"workflow\":\"spin\"}");
    json_t *e = lh_wait_event(ev, "step_started", NULL, 10000);
    cr_assert(e, "the spinning step did not start within 10 s");
    json_decref(e);
    close(ev);
    close(fd);
    return lh_now_ms();
}

Test(loomd_stop, a_stuck_reactor_still_stops_after_the_grace, .fini = teardown)
{
    const long grace = 1000, margin = 5000, slack = 3000;
    setup_with(misbehave, "1s");
    long t0 = start_spinning_reactor();
    int rc = lh_stop(&D, SIGTERM);
    long took = lh_now_ms() - t0;
    cr_assert_eq(rc, 1, "exit status %d", rc);
    cr_assert(took >= grace && took < grace + margin + slack, "stopped after %ld ms", took);
    cr_assert_eq(lh_log_count(&D, "the reactor is stuck", NULL), 1);
}

Test(loomd_stop, a_stuck_reactor_stops_soon_after_a_second_signal, .fini = teardown)
{
    const long second = 1000, slack = 3000;
    setup_with(misbehave, "30s");
    start_spinning_reactor();
    kill(D.pid, SIGTERM);
    long t0 = lh_now_ms();
    int rc = lh_stop(&D, SIGINT);
    long took = lh_now_ms() - t0;
    cr_assert_eq(rc, 1, "exit status %d", rc);
    cr_assert(took < second + slack, "stopped after %ld ms", took);
}
