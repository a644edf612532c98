/* test_mcp.c -- daemon/mcp against tests/fake/fake_mcp, a stdio MCP server
 * that misbehaves on purpose: the handshake and its versions, paged tool
 * lists and list_changed, calls, timeouts and cancels (the server is told),
 * the server's own requests, crashes (calls fail `upstream`, the server
 * comes back), failed starts and the stop. Every wait is for the event,
 * with a deadline. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/file.h"
#include "daemon/mcp/mcp.h"

/* A condition as a function call, which Criterion's assert macros take
 * whole (a leading ! or ( confuses them). */
static bool truth(bool b)
{
    return b;
}
/* What any wait here may take at most: starting a small C program and a
 * few lines each way take milliseconds; this bound is for a loaded machine. */
#define DEADLINE_MS 15000

typedef struct env {
    reactor_t *r;
    log_sink log;
    char logpath[64];
    char starts[64];
    mcp_t *m;
} env;

typedef struct outcome {
    bool done;
    json_t *result;
    char code[64], message[512];
} outcome;

static void on_done(void *ud, json_t *result, const char *code, const char *message)
{
    outcome *o = ud;
    cr_assert(truth(!o->done), "done twice");
    o->done = true;
    o->result = result;
    snprintf(o->code, sizeof o->code, "%s", code ? code : "");
    snprintf(o->message, sizeof o->message, "%s", message ? message : "");
}

static void log_to_file(void *ud, int level, json_t *data, const char *fmt, ...)
{
    env *e = ud;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(&e->log, level, data, "%s", line);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *log_text(env *e)
{
    size_t len;
    char *t = file_read_all(e->logpath, 64 << 20, &len);
    return t ? t : strdup("");
}

static bool log_has(env *e, const char *what)
{
    char *t = log_text(e);
    bool yes = strstr(t, what) != NULL;
    free(t);
    return yes;
}

/* Runs the reactor until COND(E, ARG) holds; false at the deadline. */
static bool run_until(env *e, bool (*cond)(env *, void *), void *arg)
{
    int64_t end = now_ms() + DEADLINE_MS;
    while (!cond(e, arg)) {
        if (now_ms() > end)
            return false;
        reactor_run_once(e->r, 20);
    }
    return true;
}

static bool is_done(env *e, void *arg)
{
    return ((outcome *)arg)->done;
}

static bool n_ready(env *e, void *arg)
{
    return mcp_ready_count(e->m) == *(size_t *)arg;
}

static bool logged(env *e, void *arg)
{
    return log_has(e, arg);
}

static json_t *stat_of(env *e, const char *server)
{
    json_t *s = mcp_stats_json(e->m);
    json_t *v = json_incref(json_object_get(s, server));
    json_decref(s);
    return v;
}

static bool restarted(env *e, void *arg)
{
    json_t *s = stat_of(e, "fake");
    bool yes = json_integer_value(json_object_get(s, "restarts")) >= *(int *)arg;
    json_decref(s);
    return yes;
}

static void setup(env *e)
{
    signal(SIGPIPE, SIG_IGN);
    memset(e, 0, sizeof *e);
    e->r = reactor_new();
    cr_assert(e->r != NULL);
    strcpy(e->logpath, "/tmp/test_mcp_log_XXXXXX");
    int fd = mkstemp(e->logpath);
    cr_assert(fd >= 0);
    strcpy(e->starts, "/tmp/test_mcp_starts_XXXXXX");
    int sfd = mkstemp(e->starts);
    cr_assert(sfd >= 0);
    close(sfd);
    e->log = (log_sink){ .level = LOOM_LOG_DEBUG, .fd = fd };
    e->m = mcp_new(e->r, log_to_file, e, "test");
    cr_assert(e->m != NULL);
}

static void teardown(env *e)
{
    mcp_free(e->m);
    reactor_free(e->r);
    close(e->log.fd);
    unlink(e->logpath);
    unlink(e->starts);
}

static const char *fake_path(void)
{
    static char path[4096];
    const char *bd = getenv("LOOM_BUILDDIR");
    snprintf(path, sizeof path, "%s/tests/fake/fake_mcp", bd ? bd : ".");
    return path;
}

/* Adds the fake as server "fake" with EXTRA arguments and TIMEOUT_MS. */
static void add_fake(env *e, uint64_t timeout_ms, const char *a1, const char *a2)
{
    const char *argv[] = { fake_path(), "--starts", e->starts, a1, a2, NULL };
    mcp_server_opts o = { .name = "fake", .argv = argv, .timeout_ms = timeout_ms };
    cr_assert(eq(int, mcp_add_server(e->m, &o), 0));
}

static void start_ready(env *e, const char *a1, const char *a2)
{
    add_fake(e, 0, a1, a2);
    size_t one = 1;
    cr_assert(run_until(e, n_ready, &one), "not ready; log:\n%s", log_text(e));
}

static outcome call(env *e, const char *tool, const char *args_json, uint64_t timeout_ms)
{
    outcome o = { 0 };
    char err[256] = "";
    json_t *args = args_json ? json_loads(args_json, 0, NULL) : NULL;
    mcp_call_t *c = mcp_call(e->m, "fake", tool, args, timeout_ms, on_done, &o, err, sizeof err);
    json_decref(args);
    cr_assert(c != NULL, "%s", err);
    cr_assert(truth(!o.done), "done inside mcp_call");
    cr_assert(run_until(e, is_done, &o), "%s never ended; log:\n%s", tool, log_text(e));
    return o;
}

static const char *first_text(const outcome *o)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(o->result, "content"), 0), "text"));
}

/* How many starts the fake wrote down in PATH. */
static size_t count_starts(const char *path)
{
    size_t len, n = 0;
    char *t = file_read_all(path, 1 << 20, &len);
    for (const char *p = t; p && (p = strstr(p, "start ")); p++)
        n++;
    free(t);
    return n;
}

Test(mcp, lists_every_page_of_tools)
{
    env e;
    setup(&e);
    start_ready(&e, "--page", "3");
    char err[128];
    json_t *tools = mcp_tools(e.m, "fake", err, sizeof err);
    cr_assert(tools != NULL, "%s", err);
    cr_assert(eq(sz, json_array_size(tools), 8)); /* 3 + 3 + 2: every page followed */
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(tools, 0), "name")),
                 "echo"));
    cr_assert(truth(json_is_object(json_object_get(json_array_get(tools, 1), "inputSchema"))));
    json_decref(tools);
    cr_assert(mcp_tools(e.m, "nope", err, sizeof err) == NULL);
    cr_assert(strstr(err, "no MCP server named 'nope'") != NULL, "%s", err);
    json_t *st = stat_of(&e, "fake");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(st, "state")), "ready"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(st, "transport")), "stdio"));
    cr_assert(eq(int, json_integer_value(json_object_get(st, "tools")), 8));
    cr_assert(eq(int, json_integer_value(json_object_get(st, "restarts")), 0));
    json_decref(st);
    /* the handshake's second half reached the server: its line comes on
     * the server's stderr, read on its own pipe, so not always before the
     * answers on stdout */
    cr_assert(run_until(&e, logged, "got notifications/initialized"));
    teardown(&e);
}

Test(mcp, calls_return_the_servers_results)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    outcome o = call(&e, "echo", "{\"text\": \"hello\"}", 0);
    cr_assert(eq(str, o.code, ""), "%s: %s", o.code, o.message);
    cr_assert(eq(str, (char *)first_text(&o), "hello"));
    json_decref(o.result);
    o = call(&e, "add", "{\"a\": 2, \"b\": 3.5}", 0);
    cr_assert(eq(dbl, json_number_value(json_object_get(json_object_get(o.result, "structuredContent"),
                                                        "sum")), 5.5));
    json_decref(o.result);
    /* a tool's own failure is a result, counted as failed */
    o = call(&e, "fail", NULL, 0);
    cr_assert(truth(json_is_true(json_object_get(o.result, "isError"))));
    json_decref(o.result);
    o = call(&e, "rpc_error", NULL, 0);
    cr_assert(o.result == NULL);
    cr_assert(eq(str, o.code, "upstream"));
    cr_assert(strstr(o.message, "-32603") && strstr(o.message, "internal error on purpose"), "%s",
              o.message);
    o = call(&e, "no_such_tool", "{}", 0);
    cr_assert(eq(str, o.code, "invalid_request"));
    cr_assert(strstr(o.message, "no tool 'no_such_tool'") != NULL, "%s", o.message);
    json_t *st = stat_of(&e, "fake");
    cr_assert(eq(int, json_integer_value(json_object_get(st, "calls")), 5));
    cr_assert(eq(int, json_integer_value(json_object_get(st, "failed")), 3));
    json_decref(st);
    char err[128];
    outcome never = { 0 };
    cr_assert(mcp_call(e.m, "other", "echo", NULL, 0, on_done, &never, err, sizeof err) == NULL);
    cr_assert(strstr(err, "no MCP server named 'other'") != NULL, "%s", err);
    teardown(&e);
}

Test(mcp, a_timeout_ends_the_call_and_tells_the_server)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    int64_t t0 = now_ms();
    outcome o = call(&e, "slow", "{\"ms\": 60000}", 300);
    cr_assert(eq(str, o.code, "timeout"));
    cr_assert(now_ms() - t0 >= 300);
    cr_assert(strstr(o.message, "did not answer within 300 ms") != NULL, "%s", o.message);
    cr_assert(run_until(&e, logged, "cancelled "), "the server was not told; log:\n%s", log_text(&e));
    /* the server is still good for the next call */
    o = call(&e, "echo", "{\"text\": \"after\"}", 0);
    cr_assert(eq(str, (char *)first_text(&o), "after"));
    json_decref(o.result);
    teardown(&e);
}

Test(mcp, a_cancelled_call_never_ends_and_the_server_is_told)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    outcome o = { 0 };
    char err[128];
    json_t *args = json_pack("{s:i}", "ms", 60000);
    mcp_call_t *c = mcp_call(e.m, "fake", "slow", args, 0, on_done, &o, err, sizeof err);
    json_decref(args);
    cr_assert(c != NULL);
    cr_assert(run_until(&e, logged, "got tools/call"));
    mcp_cancel(c);
    cr_assert(run_until(&e, logged, "cancelled "), "log:\n%s", log_text(&e));
    cr_assert(truth(!o.done));
    teardown(&e);
}

Test(mcp, a_crash_fails_the_calls_in_flight_and_the_server_comes_back)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    outcome slow = { 0 };
    char err[128];
    json_t *args = json_pack("{s:i}", "ms", 60000);
    cr_assert(mcp_call(e.m, "fake", "slow", args, 0, on_done, &slow, err, sizeof err) != NULL);
    json_decref(args);
    outcome o = call(&e, "crash", NULL, 0);
    cr_assert(eq(str, o.code, "upstream"));
    cr_assert(strstr(o.message, "exited with status 3") != NULL, "%s", o.message);
    cr_assert(strstr(o.message, "crashing on purpose") != NULL, "%s", o.message);
    cr_assert(run_until(&e, is_done, &slow));
    cr_assert(eq(str, slow.code, "upstream"));
    int one = 1;
    cr_assert(run_until(&e, restarted, &one));
    size_t ready = 1;
    cr_assert(run_until(&e, n_ready, &ready));
    cr_assert(eq(sz, count_starts(e.starts), 2));
    o = call(&e, "echo", "{\"text\": \"back\"}", 0);
    cr_assert(eq(str, (char *)first_text(&o), "back"));
    json_decref(o.result);
    teardown(&e);
}

static bool has_extra(env *e, void *arg)
{
    char err[128];
    json_t *t = mcp_tools(e->m, "fake", err, sizeof err);
    bool yes = json_array_size(t) == 9;
    json_decref(t);
    return yes;
}

Test(mcp, list_changed_lists_the_tools_again)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    outcome o = call(&e, "grow", NULL, 0);
    json_decref(o.result);
    cr_assert(run_until(&e, has_extra, NULL), "log:\n%s", log_text(&e));
    o = call(&e, "extra", "{\"text\": \"new\"}", 0);
    cr_assert(eq(str, (char *)first_text(&o), "new"));
    json_decref(o.result);
    teardown(&e);
}

Test(mcp, the_servers_ping_is_answered_and_other_requests_refused)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    outcome o = call(&e, "ask_client", NULL, 0);
    cr_assert(eq(str, (char *)first_text(&o), "ping:{} roots:-32601"));
    json_decref(o.result);
    teardown(&e);
}

Test(mcp, an_older_protocol_version_is_accepted)
{
    env e;
    setup(&e);
    start_ready(&e, "--version", "2024-11-05");
    cr_assert(log_has(&e, "protocol 2024-11-05"));
    teardown(&e);
}

Test(mcp, an_unknown_protocol_version_is_refused)
{
    env e;
    setup(&e);
    add_fake(&e, 0, "--version", "1999-01-01");
    cr_assert(run_until(&e, logged, "speaks MCP 1999-01-01"), "log:\n%s", log_text(&e));
    int one = 1;
    cr_assert(run_until(&e, restarted, &one)); /* tried again, after a backoff */
    cr_assert(eq(sz, mcp_ready_count(e.m), 0));
    teardown(&e);
}

Test(mcp, a_server_that_cannot_start_fails_calls_with_its_last_words)
{
    env e;
    setup(&e);
    add_fake(&e, 0, "--die-at-start", NULL);
    outcome o = call(&e, "echo", "{\"text\": \"x\"}", 0);
    cr_assert(eq(str, o.code, "upstream"));
    cr_assert(strstr(o.message, "cannot start") && strstr(o.message, "exited with status 1") &&
                  strstr(o.message, "fatal: cannot open the database"),
              "%s", o.message);
    int two = 2;
    cr_assert(run_until(&e, restarted, &two)); /* backoff: it keeps trying */
    json_t *st = stat_of(&e, "fake");
    /* between tries it is "restarting", during one "starting": never ready */
    cr_assert(ne(str, (char *)json_string_value(json_object_get(st, "state")), "ready"));
    json_decref(st);
    teardown(&e);
}

Test(mcp, a_command_that_does_not_exist)
{
    env e;
    setup(&e);
    const char *argv[] = { "loom-no-such-mcp-server", NULL };
    mcp_server_opts so = { .name = "fake", .argv = argv };
    cr_assert(eq(int, mcp_add_server(e.m, &so), 0));
    cr_assert(eq(int, mcp_add_server(e.m, &so), -EEXIST));
    cr_assert(run_until(&e, logged, "loom-no-such-mcp-server"), "log:\n%s", log_text(&e));
    outcome o = call(&e, "echo", NULL, 0);
    cr_assert(eq(str, o.code, "upstream"));
    cr_assert(strstr(o.message, "loom-no-such-mcp-server") != NULL, "%s", o.message);
    teardown(&e);
}

Test(mcp, a_server_silent_at_initialize_is_restarted)
{
    env e;
    setup(&e);
    add_fake(&e, 200, "--no-init", NULL);
    cr_assert(run_until(&e, logged, "did not answer initialize within 200 ms"), "log:\n%s",
              log_text(&e));
    int one = 1;
    cr_assert(run_until(&e, restarted, &one));
    teardown(&e);
}

/* The pid of the last start the fake wrote down. */
static pid_t last_pid(env *e)
{
    size_t len;
    char *t = file_read_all(e->starts, 1 << 20, &len);
    char *last = t ? strstr(t, "start ") : NULL;
    while (last && strstr(last + 1, "start "))
        last = strstr(last + 1, "start ");
    pid_t pid = last ? (pid_t)atoi(last + strlen("start ")) : 0;
    free(t);
    return pid;
}

static bool starts_has(env *e, const char *what)
{
    size_t len;
    char *t = file_read_all(e->starts, 1 << 20, &len);
    bool yes = t && strstr(t, what);
    free(t);
    return yes;
}

Test(mcp, the_stop_closes_stdin_then_signals)
{
    env e;
    setup(&e);
    start_ready(&e, NULL, NULL);
    pid_t pid = last_pid(&e);
    cr_assert(pid > 0);
    mcp_free(e.m); /* closing stdin is enough for this one */
    e.m = NULL;
    cr_assert(truth(kill(pid, 0) < 0 && errno == ESRCH));
    cr_assert(truth(starts_has(&e, "eof\n")), "its stdin was not closed");
    e.m = mcp_new(e.r, log_to_file, &e, "test");
    cr_assert(e.m != NULL);
    start_ready(&e, "--ignore-stdin-eof", NULL);
    pid = last_pid(&e);
    int64_t t0 = now_ms();
    mcp_free(e.m); /* this one needs SIGTERM, after the grace */
    e.m = NULL;
    cr_assert(now_ms() - t0 >= MCP_EXIT_GRACE_MS);
    cr_assert(truth(kill(pid, 0) < 0 && errno == ESRCH));
    cr_assert(truth(starts_has(&e, "sigterm\n")), "it did not get SIGTERM");
    teardown(&e);
}
