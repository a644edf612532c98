/* test_isolate.c -- a real loomd running the hostile test plugin isolated
 * (plugins.isolate): a lambda that segfaults, one that calls exit(), one
 * that allocates without bound, one that loops forever and one that writes
 * to stdout each end as a typed error (or, for the last, a normal answer),
 * while jobs of other plugins keep being served; after each, the helper is
 * back and the next call works; a retry policy naming plugin_crashed retries
 * a crash; the daemon never dies.
 *
 * Every wait has a deadline: a reply's, or the log's. */
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

/* DIR/plugins holding hostile.so, isolated with a 2 s timeout and 64 MiB,
 * with PROVIDERS (config lines, or NULL) besides the harness's. */
static void setup_hostile_with(const char *providers, const char *extra_workflow_name,
                               const char *extra_workflow)
{
    lh_setup(&D, providers, NULL);
    char dir[400], repl[1024];
    lh_plugin_dir(&D, (const char *const[]){ "hostile", NULL }, dir, sizeof dir);
    snprintf(repl, sizeof repl,
             "shutdown_grace: 5s\n"
             "plugins:\n"
             "  dirs: [%s]\n"
             "  isolate:\n"
             "    hostile: { processes: 1, memory: 64MiB, cpu_seconds: 20, timeout: 2s }\n",
             dir);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
    const char *fns[] = { "segv", "spin", "hog", "chatty", "bye", "ok", "patient", "deadline",
                          "setting", NULL };
    for (int i = 0; fns[i]; i++) {
        char name[32], text[256];
        snprintf(name, sizeof name, "h_%s", fns[i]);
        snprintf(text, sizeof text, "loom: 1\nname: %s\ndo: { lambda: hostile.%s }\n", name, fns[i]);
        lh_workflow(&D, name, text);
    }
    lh_workflow(&D, "plain", "loom: 1\nname: plain\ndo: { lambda: std.length }\n");
    if (extra_workflow)
        lh_workflow(&D, extra_workflow_name, extra_workflow);
}

static void setup_hostile(const char *extra_workflow_name, const char *extra_workflow)
{
    setup_hostile_with(NULL, extra_workflow_name, extra_workflow);
}

static void submit_line(char *req, size_t len, const char *wf)
{
    snprintf(req, len, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":\"abc\",\"wait\":true}", wf);
}

/* The result object of a waited-for job (a new reference). */
static json_t *run(const char *wf, int timeout_ms)
{
    char req[256];
    submit_line(req, sizeof req, wf);
    json_t *r = lh_call(&D, req, timeout_ms);
    cr_assert(r, "no answer for %s within %d ms", wf, timeout_ms);
    json_t *res = json_incref(json_object_get(r, "result"));
    cr_assert(res, "%s", json_dumps(r, 0));
    json_decref(r);
    return res;
}

static const char *state_of(json_t *res)
{
    return json_string_value(json_object_get(res, "state"));
}

static const char *code_of(json_t *res)
{
    return json_string_value(json_object_get(json_object_get(res, "error"), "code"));
}

static const char *message_of(json_t *res)
{
    const char *m = json_string_value(json_object_get(json_object_get(res, "error"), "message"));
    return m ? m : "";
}

static json_t *iso_stats_of(const char *name);
static json_int_t count_of(json_t *st, const char *key);

/* The pid of the helper that ran hostile.ok. */
static int ok_pid(void)
{
    json_t *res = run("h_ok", 20000);
    cr_assert_str_eq(state_of(res), "succeeded", "%s", json_dumps(res, 0));
    json_t *out = json_object_get(res, "output");
    cr_assert_str_eq(json_string_value(json_object_get(out, "input")), "abc");
    int pid = (int)json_integer_value(json_object_get(out, "pid"));
    cr_assert(pid > 0);
    json_decref(res);
    return pid;
}

Test(isolate, each_hostile_lambda_is_a_typed_error_and_the_daemon_serves_others,
     .fini = teardown)
{
    setup_hostile(NULL, NULL);
    lh_start(&D);
    lh_wait_log(&D, "plugin hostile helper 0 ready", NULL, 1, 10000);
    int pid = ok_pid();
    static const struct {
        const char *wf, *code, *says;
    } cases[] = {
        { "h_segv", "plugin_crashed", "signal 11" },
        { "h_bye", "plugin_crashed", "exited with status 3" },
        { "h_hog", "plugin_crashed", "hostile.hog" },
        { "h_spin", "timeout", "timeout of 2000 ms" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* the hostile job on one connection... */
        int c = lh_connect(&D);
        cr_assert(c >= 0);
        char req[256];
        submit_line(req, sizeof req, cases[i].wf);
        lh_send(c, req);
        /* ...while a job of another plugin is served */
        json_t *plain = run("plain", 10000);
        cr_assert_str_eq(state_of(plain), "succeeded", "%s", json_dumps(plain, 0));
        cr_assert_eq(json_integer_value(json_object_get(plain, "output")), 3);
        json_decref(plain);
        json_t *r = lh_recv(c, 30000);
        cr_assert(r, "no answer for %s", cases[i].wf);
        json_t *res = json_object_get(r, "result");
        cr_assert_str_eq(state_of(res), "failed", "%s", json_dumps(r, 0));
        cr_assert_str_eq(code_of(res), cases[i].code, "%s", json_dumps(r, 0));
        cr_assert(strstr(message_of(res), cases[i].says), "%s: %s", cases[i].wf, message_of(res));
        json_decref(r);
        close(c);
        /* a new helper serves the next call */
        int again = ok_pid();
        cr_assert_neq(again, pid, "%s: the helper was not restarted", cases[i].wf);
        pid = again;
    }
    /* stdout goes nowhere near the protocol: a normal answer, same helper */
    json_t *res = run("h_chatty", 10000);
    cr_assert_str_eq(state_of(res), "succeeded", "%s", json_dumps(res, 0));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(res, "output"), "said")),
                     "hello");
    json_decref(res);
    cr_assert_eq(ok_pid(), pid, "chatty must not cost the helper");
    /* segv, and hog: its malloc fails at the address-space limit and it
     * writes through the NULL it was given (under ASan, which needs the
     * address space, ASan's RSS limit ends it instead: exit status 1) */
    int segvs = lh_log_count(&D, "plugin hostile helper 0 killed by signal 11", "restarting");
    cr_assert(segvs == 2 || segvs == 1, "%d", segvs);
    cr_assert_eq(lh_log_count(&D, "plugin hostile helper 0 exited with status 3", "restarting"), 1);
    cr_assert_eq(lh_log_count(&D, "ran past its timeout", "hostile.spin"), 1);
    /* spin never polls loom_cancelled: killed once the grace was over */
    cr_assert_eq(lh_log_count(&D, "hostile.spin did not return within", "killing its helper 0"), 1);
    json_t *st = iso_stats_of("hostile");
    cr_assert_eq(count_of(st, "timeouts"), 1, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "grace_kills"), 1, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "restarts"), 4, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "crashes"), 3, "%s", json_dumps(st, 0));
    json_decref(st);
    cr_assert_eq(kill(D.pid, 0), 0, "loomd died");
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(isolate, a_retry_policy_naming_plugin_crashed_retries_a_crash, .fini = teardown)
{
    setup_hostile("retried", "loom: 1\nname: retried\n"
                             "do: { lambda: hostile.segv, retry: { max_attempts: 2, "
                             "initial_delay: 10ms, on: [plugin_crashed] } }\n");
    lh_start(&D);
    json_t *res = run("retried", 30000);
    cr_assert_str_eq(state_of(res), "failed", "%s", json_dumps(res, 0));
    cr_assert_str_eq(code_of(res), "plugin_crashed");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(res, "error"), "attempts")), 2,
                 "%s", json_dumps(res, 0));
    json_decref(res);
    /* and by default a crash is not retried */
    res = run("h_segv", 30000);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(res, "error"), "attempts")), 1,
                 "%s", json_dumps(res, 0));
    json_decref(res);
    lh_wait_log(&D, "plugin hostile helper 0 killed by signal 11", "restarting", 3, 10000);
    cr_assert_gt(ok_pid(), 0);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(isolate, check_refuses_isolating_a_plugin_that_is_not_loaded, .fini = teardown)
{
    setup_hostile(NULL, NULL);
    lh_config_replace(&D, "    hostile: {", "    nosuch: {");
    char out[4096];
    int rc = lh_check(&D, out, sizeof out);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "plugins.isolate: no plugin of that name"), "%s", out);
}

/* The stats op's counts of isolated plugin NAME (a new reference). */
static json_t *iso_stats_of(const char *name)
{
    json_t *r = lh_call(&D, "{\"op\":\"stats\"}", 10000);
    cr_assert(r, "no answer to stats");
    json_t *st = json_object_get(json_object_get(r, "isolate"), name);
    cr_assert(json_is_object(st), "%s", json_dumps(r, 0));
    json_incref(st);
    json_decref(r);
    return st;
}

static json_int_t count_of(json_t *st, const char *key)
{
    json_t *v = json_object_get(st, key);
    cr_assert(json_is_integer(v), "%s: %s", key, json_dumps(st, 0));
    return json_integer_value(v);
}

Test(isolate, a_lambda_in_a_helper_sees_its_deadline, .fini = teardown)
{
    setup_hostile("h_deadline_step", "loom: 1\nname: h_deadline_step\n"
                                     "do: { lambda: hostile.deadline, timeout: 1500ms }\n");
    lh_start(&D);
    /* the step's timeout when it is the earlier, the plugin's (2 s) when
     * the step has none */
    static const struct {
        const char *wf;
        json_int_t bound_ms;
    } cases[] = { { "h_deadline_step", 1500 }, { "h_deadline", 2000 } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *res = run(cases[i].wf, 20000);
        cr_assert_str_eq(state_of(res), "succeeded", "%s", json_dumps(res, 0));
        json_t *out = json_object_get(res, "output");
        json_int_t deadline = json_integer_value(json_object_get(out, "deadline_ms"));
        json_int_t now = json_integer_value(json_object_get(out, "now_ms"));
        cr_assert_gt(deadline, now, "%s: %s", cases[i].wf, json_dumps(out, 0));
        cr_assert_leq(deadline - now, cases[i].bound_ms, "%s: %s", cases[i].wf, json_dumps(out, 0));
        json_decref(res);
    }
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(isolate, a_lambda_that_polls_loom_cancelled_returns_and_keeps_its_helper, .fini = teardown)
{
    setup_hostile("h_patient_step", "loom: 1\nname: h_patient_step\n"
                                    "do: { lambda: hostile.patient, timeout: 300ms }\n");
    lh_start(&D);
    lh_wait_log(&D, "plugin hostile helper 0 ready", NULL, 1, 10000);
    int pid = ok_pid();
    /* given up on by the step's timeout, by the plugin's timeout, and by a
     * cancelled job */
    json_t *res = run("h_patient_step", 20000);
    cr_assert_str_eq(state_of(res), "failed", "%s", json_dumps(res, 0));
    cr_assert_str_eq(code_of(res), "timeout", "%s", json_dumps(res, 0));
    json_decref(res);
    lh_wait_log(&D, "hostile.patient returned", "(cancelled call): helper 0 kept", 1, 10000);
    res = run("h_patient", 20000);
    cr_assert_str_eq(code_of(res), "timeout", "%s", json_dumps(res, 0));
    cr_assert(strstr(message_of(res), "timeout of 2000 ms"), "%s", message_of(res));
    json_decref(res);
    lh_wait_log(&D, "hostile.patient returned", "(timeout): helper 0 kept", 1, 10000);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"h_patient\",\"input\":1}", 10000);
    cr_assert(r);
    const char *job = json_string_value(json_object_get(r, "job"));
    cr_assert(job, "%s", json_dumps(r, 0));
    /* the call is in its helper once the plugin counts it */
    long until = lh_now_ms() + 10000;
    json_t *st;
    while ((st = iso_stats_of("hostile")), count_of(st, "calls") < 4 && lh_now_ms() < until)
        json_decref(st), usleep(10000);
    cr_assert_eq(count_of(st, "calls"), 4, "%s", json_dumps(st, 0));
    json_decref(st);
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"cancel\",\"job\":\"%s\"}", job);
    json_decref(lh_call(&D, req, 10000));
    json_decref(r);
    lh_wait_log(&D, "hostile.patient returned", "(cancelled call): helper 0 kept", 2, 10000);
    /* the same process serves the next call: nothing was killed */
    cr_assert_eq(ok_pid(), pid);
    st = iso_stats_of("hostile");
    cr_assert_eq(count_of(st, "cancels"), 3, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "timeouts"), 1, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "restarts"), 0, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "grace_kills"), 0, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "crashes"), 0, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "helpers_ready"), 1, "%s", json_dumps(st, 0));
    json_decref(st);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

/* hostile.setting's answer: its configured value (a new reference), and
 * the pid of the helper that ran it in *PID. */
static json_t *setting(int *pid)
{
    json_t *res = run("h_setting", 20000);
    cr_assert_str_eq(state_of(res), "succeeded", "%s", json_dumps(res, 0));
    json_t *out = json_object_get(res, "output");
    *pid = (int)json_integer_value(json_object_get(out, "pid"));
    json_t *v = json_incref(json_object_get(out, "value"));
    json_decref(res);
    return v;
}

Test(isolate, an_isolated_plugin_gets_its_configuration_and_reloads_it, .fini = teardown)
{
    setup_hostile(NULL, NULL);
    lh_config_replace(&D, "  isolate:\n", "  config:\n    hostile: { value: first }\n  isolate:\n");
    lh_start(&D);
    int pid, again;
    json_t *v = setting(&pid);
    cr_assert_str_eq(json_string_value(v), "first", "%s", json_dumps(v, JSON_ENCODE_ANY));
    json_decref(v);
    /* SIGHUP: the helper runs the plugin's reload with the new value */
    lh_config_replace(&D, "value: first", "value: second");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    long until = lh_now_ms() + 10000;
    for (;;) {
        v = setting(&again);
        if (json_is_string(v) && !strcmp(json_string_value(v), "second"))
            break;
        cr_assert_str_eq(json_string_value(v), "first", "%s", json_dumps(v, JSON_ENCODE_ANY));
        cr_assert_lt(lh_now_ms(), until, "the reload did not reach the helper");
        json_decref(v);
        usleep(20000);
    }
    json_decref(v);
    cr_assert_eq(again, pid, "a reload must not restart the helper");
    /* a helper started after the reload gets the new value for its init */
    json_t *res = run("h_segv", 20000);
    cr_assert_str_eq(code_of(res), "plugin_crashed", "%s", json_dumps(res, 0));
    json_decref(res);
    v = setting(&again);
    cr_assert_neq(again, pid);
    cr_assert_str_eq(json_string_value(v), "second", "%s", json_dumps(v, JSON_ENCODE_ANY));
    json_decref(v);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(isolate, an_isolated_plugins_invoke_provider_answers_from_its_helper, .fini = teardown)
{
    setup_hostile_with("  echo: { plugin: hostile_echo, prefix: 'P:' }\n", "p_echo",
                       "loom: 1\nname: p_echo\ndo: { call: { prompt: 'hi {{ input }}', "
                       "provider: echo } }\n");
    lh_workflow(&D, "p_segv", "loom: 1\nname: p_segv\n"
                              "do: { call: { prompt: x, provider: echo, model: segv } }\n");
    lh_workflow(&D, "p_never", "loom: 1\nname: p_never\n"
                               "do: { call: { prompt: x, provider: echo, model: never }, "
                               "timeout: 300ms }\n");
    lh_start(&D);
    json_t *res = run("p_echo", 20000);
    cr_assert_str_eq(state_of(res), "succeeded", "%s", json_dumps(res, 0));
    cr_assert_str_eq(json_string_value(json_object_get(res, "output")), "P:hi abc", "%s",
                     json_dumps(res, 0));
    json_decref(res);
    /* a segfault in the provider: plugin_crashed, while other jobs are served */
    int c = lh_connect(&D);
    cr_assert(c >= 0);
    char req[256];
    submit_line(req, sizeof req, "p_segv");
    lh_send(c, req);
    json_t *plain = run("plain", 10000);
    cr_assert_str_eq(state_of(plain), "succeeded", "%s", json_dumps(plain, 0));
    json_decref(plain);
    json_t *r = lh_recv(c, 30000);
    cr_assert(r != NULL, "no answer for p_segv");
    res = json_object_get(r, "result");
    cr_assert_str_eq(state_of(res), "failed", "%s", json_dumps(r, 0));
    cr_assert_str_eq(code_of(res), "plugin_crashed", "%s", json_dumps(r, 0));
    cr_assert(strstr(message_of(res), "signal 11"), "%s", message_of(res));
    json_decref(r);
    close(c);
    /* a step's timeout cancels the call in the helper (its cancel hook): once
     * the helper is back, or the call would time out still queued for it */
    lh_wait_log(&D, "plugin hostile helper 0 ready", NULL, 2, 30000);
    res = run("p_never", 20000);
    cr_assert_str_eq(code_of(res), "timeout", "%s", json_dumps(res, 0));
    json_decref(res);
    lh_wait_log(&D, "hostile_echo: call cancelled", NULL, 1, 10000);
    /* the restarted helper has the instance again */
    res = run("p_echo", 20000);
    cr_assert_str_eq(json_string_value(json_object_get(res, "output")), "P:hi abc", "%s",
                     json_dumps(res, 0));
    json_decref(res);
    json_t *st = iso_stats_of("hostile");
    cr_assert_eq(count_of(st, "crashes"), 1, "%s", json_dumps(st, 0));
    cr_assert_eq(count_of(st, "invokes"), 4, "%s", json_dumps(st, 0));
    json_decref(st);
    /* the provider's own counters, as an HTTP provider's: the two answers'
     * usage (3 in, 5 out each), the crash failed, the step's timeout counted */
    json_t *all = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert(all);
    json_t *pv = json_object_get(json_object_get(all, "providers"), "echo");
    cr_assert_eq(json_integer_value(json_object_get(pv, "succeeded")), 2, "%s", json_dumps(pv, 0));
    cr_assert_eq(json_integer_value(json_object_get(pv, "failed")), 1, "%s", json_dumps(pv, 0));
    cr_assert_eq(json_integer_value(json_object_get(pv, "timeouts")), 1, "%s", json_dumps(pv, 0));
    cr_assert_eq(json_integer_value(json_object_get(pv, "input_tokens")), 6, "%s", json_dumps(pv, 0));
    cr_assert_eq(json_integer_value(json_object_get(pv, "output_tokens")), 10, "%s",
                 json_dumps(pv, 0));
    cr_assert_gt(json_number_value(json_object_get(pv, "latency_ms")), 0.0, "%s", json_dumps(pv, 0));
    json_decref(all);
    cr_assert_eq(kill(D.pid, 0), 0, "loomd died");
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}
