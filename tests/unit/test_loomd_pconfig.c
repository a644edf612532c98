/* test_loomd_pconfig.c -- a real loomd with plugins.config: the configured
 * test plugin (tests/plugins/configured.c) answers with its configuration,
 * an edited config file reaches it on SIGHUP, a bad entry is refused at its
 * FILE:LINE:COL and the plugin keeps what it had; `loomd --check` reports a
 * bad entry the same way and ends on a plugin whose init never returns.
 *
 * Every wait is for the event itself (a reply, a log line, an exit) with a
 * deadline; the --check bound is loomd's own trial-init deadline plus the
 * start-up and shut-down of a check. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/plugins/plugins.h"
#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

/* The config lines loomd gets after `shutdown_grace: 5s` (line 4): the
 * plugins named in NAMES, and ENTRIES (YAML under `config:`, its lines
 * indented by 4) from line 8 on. */
static void setup_with(const char *const *names, const char *entries)
{
    lh_setup(&D, NULL, NULL);
    char dir[400], repl[2000];
    lh_plugin_dir(&D, names, dir, sizeof dir);
    snprintf(repl, sizeof repl, "shutdown_grace: 5s\nplugins:\n  dirs: [%s]\n  config:\n%s", dir,
             entries);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
    lh_workflow(&D, "greet",
                "loom: 1\nname: greet\ninput: { name: string }\ndo: { lambda: configured.greet }\n");
    lh_workflow(&D, "conf", "loom: 1\nname: conf\ndo: { lambda: configured.config }\n");
}

static const char *const configured[] = { "configured", NULL };

/* Runs workflow WF with INPUT (JSON text) to its end: its output (a new
 * reference); fails the test when the job does not succeed. */
static json_t *run(const char *wf, const char *input)
{
    char req[512];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s,\"wait\":true}",
             wf, input);
    json_t *r = lh_call(&D, req, 15000);
    cr_assert(r, "no answer for %s", wf);
    json_t *res = json_object_get(r, "result");
    char *text = json_dumps(r, 0);
    cr_assert_str_eq(json_string_value(json_object_get(res, "state")), "succeeded", "%s", text);
    free(text);
    json_t *out = json_incref(json_object_get(res, "output"));
    json_decref(r);
    return out;
}

static void assert_greeting(const char *want)
{
    json_t *out = run("greet", "{\"name\":\"Ada\"}");
    cr_assert(json_is_string(out));
    cr_assert_str_eq(json_string_value(out), want);
    json_decref(out);
}

Test(loomd_pconfig, the_config_reaches_the_plugin_with_its_defaults, .fini = teardown)
{
    setup_with(configured, "    configured:\n      greeting: Bonjour\n");
    lh_start(&D);
    assert_greeting("Bonjour, Ada");
    json_t *c = run("conf", "{}");
    /* the declared default, a duration, arrives as milliseconds; shout has
     * no default and stays out */
    cr_assert_eq(json_integer_value(json_object_get(c, "pause")), 250);
    cr_assert_null(json_object_get(c, "shout"));
    json_decref(c);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

Test(loomd_pconfig, sighup_brings_the_edited_config_and_a_bad_one_is_refused, .fini = teardown)
{
    setup_with(configured, "    configured:\n      greeting: Bonjour\n");
    lh_start(&D);
    assert_greeting("Bonjour, Ada");

    lh_config_replace(&D, "greeting: Bonjour", "greeting: Hola\n      shout: true");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    lh_wait_log(&D, "configured: reload: greeting", "Hola", 1, 10000);
    assert_greeting("HOLA, ADA");

    /* a misspelt key: the error points at it, and the plugin keeps Hola */
    lh_config_replace(&D, "greeting: Hola", "gretting: Salut");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    char want[600];
    snprintf(want, sizeof want,
             "%s:9:7: error: plugins.config.configured: unknown option 'gretting'; did you mean "
             "'greeting'?",
             D.cfg);
    lh_wait_log(&D, want, "keeps its configuration", 1, 10000);
    cr_assert_eq(lh_log_count(&D, "configured: reload: greeting", NULL), 1);
    assert_greeting("HOLA, ADA");
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
}

/* Runs `loomd --check` on the config, waiting at most BOUND_MS: its exit
 * status, what it printed in OUT, and how long it took in *TOOK. */
static int check_within(long bound_ms, char *out, size_t outlen, long *took)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char exe[400], path[400];
    snprintf(exe, sizeof exe, "%s/loomd", bd ? bd : ".");
    snprintf(path, sizeof path, "%s/check.out", D.dir);
    long t0 = lh_now_ms();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(exe, exe, "--check", "--config", D.cfg, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (lh_now_ms() - t0 > bound_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("loomd --check did not end within %ld ms", bound_ms);
        }
        poll(NULL, 0, 10); /* the interval of a loop that asks for the exit itself */
    }
    *took = lh_now_ms() - t0;
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(out, 1, outlen - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(loomd_pconfig, check_reports_a_bad_entry_at_its_position, .fini = teardown)
{
    setup_with(configured, "    configured:\n      greeting: 42\n    configurd: {}\n");
    char out[8192], want[600];
    long took;
    int rc = check_within(30000, out, sizeof out, &took);
    cr_assert_eq(rc, 1, "%s", out);
    snprintf(want, sizeof want,
             "%s:9:7: error: plugins.config.configured: option 'greeting' must be a string, "
             "not an integer", D.cfg);
    cr_assert(strstr(out, want), "%s", out);
    snprintf(want, sizeof want,
             "%s:10:5: error: plugins.config.configurd: no plugin 'configurd' is loaded; did you "
             "mean 'configured'?", D.cfg);
    cr_assert(strstr(out, want), "%s", out);
}

/* A check runs each init in a child; one that never returns is killed at
 * the deadline and named, and the check ends with the error. */
Test(loomd_pconfig, check_ends_on_a_plugin_whose_init_hangs, .fini = teardown)
{
    static const char *const names[] = { "init_hangs", "configured", NULL };
    setup_with(names, "    configured: {}\n");
    /* the deadline, and as much again for starting and stopping a check
     * on a loaded machine (both take well under a second alone) */
    const long deadline = PLUGINS_TRIAL_INIT_TIMEOUT_MS, bound = 2 * deadline;
    char out[8192], want[600];
    long took;
    int rc = check_within(bound, out, sizeof out, &took);
    cr_assert_eq(rc, 1, "%s", out);
    snprintf(want, sizeof want, "init_hangs.so: plugin 'init_hangs': init did not return within %ld s",
             deadline / 1000);
    cr_assert(strstr(out, want), "%s", out);
    cr_assert(took >= deadline, "ended after %ld ms, before the deadline", took);
    cr_assert(strstr(out, "has errors"), "%s", out);
}
