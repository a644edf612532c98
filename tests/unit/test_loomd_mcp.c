/* test_loomd_mcp.c -- a real loomd with the config's `mcp` section: it
 * starts the fake MCP server (tests/fake/fake_mcp), `stats` shows it ready
 * with its tools, a server killed from outside is started again and
 * counted, the stop ends it, --check refuses a headers_env variable that
 * is not set, at its position, and a workflow's call with `tools: [{mcp:
 * fake}]` runs the server's tools for the model (the mock plays it). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/file.h"
#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static bool truth(bool b)
{
    return b;
}

/* The model: the mock asks for three of the fake's tools in its first turn
 * and answers with their results in its second. */
#define AGENT_PROVIDER                                                                     \
    "  agent:\n    plugin: mock\n    latency: 1ms\n    tool_script:\n"                      \
    "      - [{name: add, arguments: {a: 2, b: 3}}, {name: echo, arguments: {text: hi}},\n" \
    "         {name: fail, arguments: {}}]\n"                                               \
    "      - \"results: {results}\"\n"

static void setup(void)
{
    lh_setup(&D, AGENT_PROVIDER, NULL);
}

static void teardown(void)
{
    lh_teardown(&D);
}

TestSuite(loomd_mcp, .init = setup, .fini = teardown);

/* `stats.mcp.fake` (a new reference), or NULL. */
static json_t *fake_stats(void)
{
    json_t *r = lh_call(&D, "{\"id\":1,\"op\":\"stats\"}", 10000);
    json_t *v = json_incref(json_object_get(json_object_get(r, "mcp"), "fake"));
    json_decref(r);
    return v;
}

/* Waits until the fake is ready with RESTARTS restarts; its stats then. */
static json_t *wait_ready(int restarts)
{
    long end = lh_now_ms() + 15000;
    for (;;) {
        json_t *s = fake_stats();
        if (s && strcmp(json_string_value(json_object_get(s, "state")) ?: "", "ready") == 0 &&
            json_integer_value(json_object_get(s, "restarts")) == restarts)
            return s;
        char *txt = s ? json_dumps(s, JSON_COMPACT) : NULL;
        json_decref(s);
        cr_assert(lh_now_ms() < end, "never ready after %d restarts: %s", restarts,
                  txt ? txt : "no stats");
        free(txt);
        struct timespec tick = { 0, 20 * 1000 * 1000 }; /* between polls of the state */
        nanosleep(&tick, NULL);
    }
}

static pid_t last_pid(const char *starts)
{
    size_t len;
    char *t = file_read_all(starts, 1 << 20, &len);
    char *last = t ? strstr(t, "start ") : NULL;
    while (last && strstr(last + 1, "start "))
        last = strstr(last + 1, "start ");
    pid_t pid = last ? (pid_t)atoi(last + strlen("start ")) : 0;
    free(t);
    return pid;
}

/* The config gets the fake as server "fake", its starts written to STARTS. */
static void config_fake(char *starts, size_t len)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char mcp[1200];
    snprintf(starts, len, "%s/starts", D.dir);
    snprintf(mcp, sizeof mcp,
             "log: { level: debug }\nmcp:\n  fake:\n    command: [\"%s/tests/fake/fake_mcp\", "
             "--starts, \"%s\"]\n    timeout: 5s\n",
             bd ? bd : ".", starts);
    lh_config_replace(&D, "log: { level: debug }\n", mcp);
}

Test(loomd_mcp, starts_supervises_and_stops_a_server)
{
    char starts[400];
    config_fake(starts, sizeof starts);
    lh_start(&D);
    json_t *s = wait_ready(0);
    cr_assert(eq(int, json_integer_value(json_object_get(s, "tools")), 8));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(s, "transport")), "stdio"));
    json_decref(s);
    pid_t first = last_pid(starts);
    cr_assert(first > 0);
    /* killed from outside: loomd sees it go, starts it again, counts it */
    cr_assert(eq(int, kill(first, SIGKILL), 0));
    lh_wait_log(&D, "MCP server fake is gone", "killed by signal 9", 1, 15000);
    s = wait_ready(1);
    json_decref(s);
    pid_t second = last_pid(starts);
    cr_assert(second > 0 && second != first);
    cr_assert(eq(int, lh_stop(&D, SIGTERM), 0));
    cr_assert(truth(kill(second, 0) < 0 && errno == ESRCH), "the server outlived loomd");
}

Test(loomd_mcp, check_refuses_a_header_variable_that_is_not_set)
{
    lh_config_replace(&D, "log: { level: debug }\n",
                      "log: { level: debug }\nmcp:\n  remote:\n    url: http://127.0.0.1:9/mcp\n"
                      "    headers_env: { Authorization: LOOM_TEST_MCP_UNSET }\n");
    unsetenv("LOOM_TEST_MCP_UNSET");
    char out[8192];
    int rc = lh_check(&D, out, sizeof out);
    cr_assert(ne(int, rc, 0), "%s", out);
    cr_assert(strstr(out, ":7:3: error: MCP server 'remote': headers_env: the environment "
                          "variable LOOM_TEST_MCP_UNSET is not set") != NULL,
              "%s", out);
}

Test(loomd_mcp, a_calls_tools_run_on_the_server)
{
    char starts[400];
    config_fake(starts, sizeof starts);
    lh_workflow(&D, "agent",
                "loom: 1\nname: agent\ndefaults: { provider: agent }\n"
                "do:\n  call:\n    prompt: add and echo\n    tools:\n      - mcp: fake\n");
    lh_start(&D);
    json_decref(wait_ready(0));
    json_t *r = lh_call(&D, "{\"id\":2,\"op\":\"submit\",\"workflow\":\"agent\",\"input\":{},"
                            "\"wait\":true}", 15000);
    char *txt = r ? json_dumps(r, JSON_COMPACT) : NULL;
    cr_assert(truth(json_is_true(json_object_get(r, "ok"))), "%s", txt ? txt : "no reply");
    const char *out = json_string_value(json_object_get(json_object_get(r, "result"), "output"));
    cr_assert(out != NULL, "%s", txt);
    /* each tool's result, from the server, went back to the model */
    cr_assert(strstr(out, "5") && strstr(out, "hi") && strstr(out, "the tool failed on purpose"),
              "%s", txt);
    free(txt);
    json_decref(r);
    json_t *s = fake_stats();
    cr_assert(eq(int, json_integer_value(json_object_get(s, "calls")), 3));
    cr_assert(eq(int, json_integer_value(json_object_get(s, "failed")), 1)); /* fail's isError */
    json_decref(s);
    lh_wait_log(&D, "MCP server fake: got tools/call", NULL, 3, 5000);
}
