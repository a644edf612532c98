/* test_loomd_ops.c -- a real loomd's operator comforts: the log in a file
 * (nothing on stderr, reopened on SIGHUP after a rotation, a clear error
 * when it cannot be opened), the pid file (written, locked against a second
 * daemon, removed at a clean stop, a stale one replaced), the mock's tokens,
 * latency and timeouts in stats, and loomctl watch ending with a failed
 * job's own error.
 *
 * Nothing sleeps: every wait polls for its event (a line in a file, a file
 * appearing, an exit) with a deadline. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D, E;

static void teardown(void)
{
    lh_teardown(&D);
    lh_teardown(&E);
}

/* ---- small helpers */

/* The whole of PATH (new string), or NULL when it cannot be read. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            cr_assert(p);
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Lines of PATH holding NEEDLE (0 when it does not exist). */
static int count_in(const char *path, const char *needle)
{
    char *s = slurp(path);
    int n = 0;
    for (char *line = s; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        n += strstr(line, needle) != NULL;
        line = nl ? nl + 1 : line + strlen(line);
    }
    free(s);
    return n;
}

/* Waits until PATH has N lines holding NEEDLE; fails after TIMEOUT_MS. */
static void wait_in(const char *path, const char *needle, int n, int timeout_ms)
{
    long until = lh_now_ms() + timeout_ms;
    while (count_in(path, needle) < n) {
        cr_assert(lh_now_ms() < until, "no %d line(s) with '%s' in %s within %d ms", n, needle,
                  path, timeout_ms);
        poll(NULL, 0, 10);
    }
}

static off_t size_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Waits for the spawned loomd of L to exit on its own; its status. */
static int wait_exit(lh_daemon *l, int timeout_ms)
{
    long until = lh_now_ms() + timeout_ms;
    for (;;) {
        int st;
        if (waitpid(l->pid, &st, WNOHANG) == l->pid) {
            l->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        cr_assert(lh_now_ms() < until, "loomd did not exit within %d ms", timeout_ms);
        poll(NULL, 0, 10);
    }
}

static json_t *submit_wait(const char *workflow)
{
    char req[256];
    snprintf(req, sizeof req,
             "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"text\":\"hello there\"},"
             "\"wait\":true}", workflow);
    json_t *r = lh_call(&D, req, 20000);
    cr_assert(r, "no reply to the submit of %s", workflow);
    return r;
}

#define ECHO_WF "loom: 1\nname: echo\ndo: { call: 'echo {{ input.text }}' }\n"

/* ---- the log file */

static void use_log_file(lh_daemon *l, const char *path)
{
    char repl[600];
    snprintf(repl, sizeof repl, "log: { level: debug, file: %s }\n", path);
    lh_config_replace(l, "log: { level: debug }\n", repl);
}

Test(ops, log_file_takes_the_log_and_is_reopened_on_sighup, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    char log[400], rotated[420], err[400];
    snprintf(log, sizeof log, "%s/daemon.log", D.dir);
    snprintf(rotated, sizeof rotated, "%s.1", log);
    snprintf(err, sizeof err, "%s/loomd.log", D.dir); /* the harness's stderr */
    use_log_file(&D, log);
    lh_workflow(&D, "echo", ECHO_WF);
    lh_start(&D);
    wait_in(log, "ready", 1, 10000);
    json_t *r = submit_wait("echo");
    json_decref(r);
    wait_in(log, "job finished", 1, 10000);

    /* 0640, less what the umask takes away */
    mode_t um = umask(022);
    umask(um);
    struct stat st;
    cr_assert_eq(stat(log, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640 & ~um, "mode %o", (unsigned)(st.st_mode & 0777));

    /* logrotate: rename, then SIGHUP; the new file starts with the reload */
    cr_assert_eq(rename(log, rotated), 0);
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    wait_in(log, "reloading", 1, 10000);
    int old_lines = count_in(rotated, "");
    r = submit_wait("echo");
    json_decref(r);
    wait_in(log, "job finished", 1, 10000);
    cr_assert_eq(count_in(rotated, ""), old_lines, "the rotated file was written after the reopen");
    cr_assert_eq(count_in(rotated, "reloading"), 0);

    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    cr_assert_eq(count_in(log, "stopped"), 1);
    /* nothing at all went to stderr, from start to stop */
    cr_assert_eq(size_of(err), 0, "stderr got: %s", slurp(err));
}

/* a reload that names another file moves the log there; one that drops the
 * key cannot give the terminal back, and says so */
Test(ops, log_file_changed_by_a_reload, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    char one[400], two[400], err[400], old_key[500], new_key[500];
    snprintf(one, sizeof one, "%s/one.log", D.dir);
    snprintf(two, sizeof two, "%s/two.log", D.dir);
    snprintf(err, sizeof err, "%s/loomd.log", D.dir);
    use_log_file(&D, one);
    lh_start(&D);
    wait_in(one, "ready", 1, 10000);
    snprintf(old_key, sizeof old_key, "file: %s", one);
    snprintf(new_key, sizeof new_key, "file: %s", two);
    lh_config_replace(&D, old_key, new_key);
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    /* the reload's first line is still in the old file; what follows, in the new */
    wait_in(one, "reloading", 1, 10000);
    lh_config_replace(&D, new_key, "format: text");
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    wait_in(two, "log.file changed: only the next start applies it", 1, 10000);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    cr_assert_eq(count_in(two, "stopped"), 1);
    cr_assert_eq(count_in(one, "stopped"), 0);
    cr_assert_eq(size_of(err), 0, "stderr got: %s", slurp(err));
}

/* an isolated plugin's helper: its loom_log lines come through loomd into the
 * file, and its own stderr (a sanitizer's report of its crash) is the file
 * too, so neither reaches loomd's stderr */
Test(ops, log_file_takes_isolated_helpers_lines, .fini = teardown)
{
    lh_setup(&D, "  echo: { plugin: hostile_echo, prefix: 'P:' }\n", NULL);
    char log[400], err[400], dir[400], repl[1024];
    snprintf(log, sizeof log, "%s/daemon.log", D.dir);
    snprintf(err, sizeof err, "%s/loomd.log", D.dir);
    use_log_file(&D, log);
    lh_plugin_dir(&D, (const char *const[]){ "hostile", NULL }, dir, sizeof dir);
    snprintf(repl, sizeof repl,
             "shutdown_grace: 5s\nplugins:\n  dirs: [%s]\n  isolate:\n"
             "    hostile: { processes: 1, memory: 64MiB, cpu_seconds: 20, timeout: 2s }\n", dir);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
    lh_workflow(&D, "p_never", "loom: 1\nname: p_never\n"
                               "do: { call: { prompt: x, provider: echo, model: never }, "
                               "timeout: 300ms }\n");
    lh_workflow(&D, "h_segv", "loom: 1\nname: h_segv\ndo: { lambda: hostile.segv }\n");
    lh_start(&D);
    json_t *r = submit_wait("p_never");
    json_decref(r);
    wait_in(log, "hostile_echo: call cancelled", 1, 10000);
    r = submit_wait("h_segv");
    json_t *e = json_object_get(json_object_get(r, "result"), "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "plugin_crashed", "%s",
                     json_dumps(r, 0));
    json_decref(r);
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    cr_assert_eq(count_in(log, "stopped"), 1);
    cr_assert_eq(size_of(err), 0, "stderr got: %s", slurp(err));
}

Test(ops, log_file_that_cannot_be_opened_is_reported_at_its_key, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    char log[400], err[400];
    snprintf(log, sizeof log, "%s/no-such-dir/daemon.log", D.dir);
    snprintf(err, sizeof err, "%s/loomd.log", D.dir);
    use_log_file(&D, log);
    lh_spawn(&D);
    int st = wait_exit(&D, 10000);
    cr_assert_eq(st, 1, "exit status %d; stderr: %s", st, slurp(err));
    /* the config's line 5 is the log mapping; file's value is at column 28 */
    char want[1200];
    snprintf(want, sizeof want, "%s:5:28: error: cannot open the log file '%s': %s", D.cfg, log,
             strerror(ENOENT));
    cr_assert_eq(count_in(err, want), 1, "stderr: %s", slurp(err));
}

/* ---- the pid file */

static void use_pid_file(lh_daemon *l, const char *path)
{
    char repl[600];
    snprintf(repl, sizeof repl, "pid_file: %s\nlog: { level: debug }\n", path);
    lh_config_replace(l, "log: { level: debug }\n", repl);
}

static long pid_in(const char *path)
{
    char *s = slurp(path);
    cr_assert(s, "no pid file %s", path);
    char *end;
    long v = strtol(s, &end, 10);
    cr_assert(end != s && strcmp(end, "\n") == 0, "pid file holds '%s'", s);
    free(s);
    return v;
}

/* Waits until PATH names PID: loomd writes it just after its socket
 * listens, which is what lh_start waits for. */
static void wait_pid(const char *path, long pid, int timeout_ms)
{
    long until = lh_now_ms() + timeout_ms;
    for (;;) {
        char *s = slurp(path);
        long v = s ? strtol(s, NULL, 10) : 0;
        free(s);
        if (v == pid)
            return;
        cr_assert(lh_now_ms() < until, "%s did not name pid %ld within %d ms", path, pid,
                  timeout_ms);
        poll(NULL, 0, 10);
    }
}

Test(ops, pid_file_written_locked_and_removed, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    char pid[400];
    snprintf(pid, sizeof pid, "%s/loomd.pid", D.dir);
    use_pid_file(&D, pid);
    lh_start(&D);
    wait_pid(pid, (long)D.pid, 10000);
    cr_assert_eq(pid_in(pid), (long)D.pid); /* and nothing else in it */
    struct stat st;
    cr_assert_eq(stat(pid, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644, "mode %o", (unsigned)(st.st_mode & 0777));

    /* a second daemon (its own socket and state) given the same pid file */
    lh_setup(&E, NULL, NULL);
    use_pid_file(&E, pid);
    lh_spawn(&E);
    cr_assert_eq(wait_exit(&E, 10000), 1);
    char want[600], elog[400];
    snprintf(want, sizeof want, "pid file '%s': held by pid %ld", pid, (long)D.pid);
    snprintf(elog, sizeof elog, "%s/loomd.log", E.dir);
    cr_assert_eq(count_in(elog, want), 1, "its log: %s", slurp(elog));
    cr_assert_eq(pid_in(pid), (long)D.pid, "the refused daemon touched the pid file");
    /* no temporary file left beside it */
    DIR *dir = opendir(D.dir);
    cr_assert(dir);
    for (struct dirent *de; (de = readdir(dir));)
        cr_assert(strncmp(de->d_name, "loomd.pid.", 10) != 0, "left behind: %s", de->d_name);
    closedir(dir);

    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    cr_assert_eq(access(pid, F_OK), -1, "the pid file is still there after a clean stop");
    cr_assert_eq(errno, ENOENT);
}

Test(ops, stale_pid_file_is_replaced, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    char pid[400];
    snprintf(pid, sizeof pid, "%s/loomd.pid", D.dir);
    use_pid_file(&D, pid);
    /* what a daemon killed with -9 leaves: a pid, and nobody holding the lock */
    FILE *f = fopen(pid, "w");
    cr_assert(f);
    fprintf(f, "%d\n", 2147483646);
    cr_assert_eq(fclose(f), 0);
    lh_start(&D);
    wait_pid(pid, (long)D.pid, 10000);
    lh_wait_log(&D, "replaced a stale pid file", "stale_pid=2147483646", 1, 10000);
    /* a killed daemon leaves its file behind; the next start takes it over */
    cr_assert_eq(lh_stop(&D, SIGKILL), 128 + SIGKILL);
    cr_assert_eq(access(pid, F_OK), 0);
    long killed = pid_in(pid);
    lh_start(&D);
    wait_pid(pid, (long)D.pid, 10000);
    char want[64];
    snprintf(want, sizeof want, "stale_pid=%ld", killed);
    lh_wait_log(&D, "replaced a stale pid file", want, 1, 10000);
}

/* ---- stats of an invoke provider (the mock) */

Test(ops, stats_count_tokens_latency_and_timeouts_of_the_mock, .fini = teardown)
{
    /* flaky: every call fails as a timeout of its own; slow (the harness's,
     * 2 s) outlives the 100 ms its step gives it */
    lh_setup(&D, "  flaky: { plugin: mock, latency: 5ms, fail_every: 1, fail_code: timeout }\n",
             NULL);
    lh_workflow(&D, "echo", ECHO_WF);
    lh_workflow(&D, "late",
                "loom: 1\nname: late\ndefaults: { provider: slow }\ndo: { call: 'hi', timeout: 100ms }\n");
    lh_workflow(&D, "flaky", "loom: 1\nname: flaky\ndefaults: { provider: flaky }\ndo: { call: 'hi' }\n");
    lh_start(&D);
    json_t *r = submit_wait("echo");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")),
                     "succeeded");
    json_decref(r);
    r = submit_wait("late");
    json_t *e = json_object_get(json_object_get(r, "result"), "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "timeout");
    json_decref(r);
    r = submit_wait("flaky");
    e = json_object_get(json_object_get(r, "result"), "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "timeout");
    json_decref(r);

    json_t *s = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert(s);
    json_t *p = json_object_get(s, "providers");
    json_t *def = json_object_get(p, "default"), *slow = json_object_get(p, "slow"),
           *flaky = json_object_get(p, "flaky");
    cr_assert(def && slow && flaky, "%s", json_dumps(s, 0));
    /* the mock counts a token per 4 bytes, at least one, each way */
    cr_assert_geq(json_integer_value(json_object_get(def, "input_tokens")), 1);
    cr_assert_geq(json_integer_value(json_object_get(def, "output_tokens")), 1);
    /* it answers after its latency (5 ms) and not before */
    cr_assert_geq(json_number_value(json_object_get(def, "latency_ms")), 5.0, "%s",
                  json_dumps(def, 0));
    cr_assert_eq(json_integer_value(json_object_get(def, "succeeded")), 1);
    cr_assert_eq(json_integer_value(json_object_get(def, "timeouts")), 0);
    /* given up on by its step: a timeout, not an answer */
    cr_assert_eq(json_integer_value(json_object_get(slow, "timeouts")), 1, "%s",
                 json_dumps(slow, 0));
    cr_assert_eq(json_integer_value(json_object_get(slow, "failed")), 0);
    cr_assert_gt(json_number_value(json_object_get(slow, "latency_ms")), 0.0,
                 "the time it was given counts: %s", json_dumps(slow, 0));
    cr_assert_lt(json_number_value(json_object_get(slow, "latency_ms")), 2000.0);
    /* a timeout the provider answered: failed, and a timeout */
    cr_assert_eq(json_integer_value(json_object_get(flaky, "timeouts")), 1, "%s",
                 json_dumps(flaky, 0));
    cr_assert_eq(json_integer_value(json_object_get(flaky, "failed")), 1);
    json_decref(s);
}

/* ---- loomctl watch on a failing job */

Test(ops, watch_ends_with_the_jobs_error, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    lh_workflow(&D, "late",
                "loom: 1\nname: late\ndefaults: { provider: slow }\ndo: { call: 'hi', timeout: 1s }\n");
    lh_start(&D);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"late\"}", 5000);
    cr_assert(r);
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(r, "job")));
    json_decref(r);

    char out[400], err[400], exe[400];
    snprintf(out, sizeof out, "%s/watch.out", D.dir);
    snprintf(err, sizeof err, "%s/watch.err", D.dir);
    const char *bd = getenv("LOOM_BUILDDIR");
    snprintf(exe, sizeof exe, "%s/loomctl", bd ? bd : ".");
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        execl(exe, exe, "watch", "--socket", D.sock, "--timeout", "20", job, (char *)NULL);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st));
    /* 1: the job failed (loomctl(1), EXIT STATUS) */
    cr_assert_eq(WEXITSTATUS(st), 1, "stderr: %s", slurp(err));
    char want[200];
    snprintf(want, sizeof want, "loomctl: job %s failed: timeout at do: timed out after 1000 ms",
             job);
    cr_assert_eq(count_in(err, want), 1, "stderr: %s", slurp(err));
}
