/* mcp_probe.c -- daemon/mcp from the command line, for tests against real
 * MCP servers (tests/unit/mcp_client_test.sh):
 *
 *   mcp_probe [--timeout MS] [--call-timeout MS] OP... (-- COMMAND ARGS... | --url URL)
 *
 * OP is `list` (prints the tool names, one a line) or `call TOOL JSON`
 * (prints the CallToolResult as compact JSON, or `error CODE: MESSAGE`).
 * The operations run in order once the server is ready, which must happen
 * within --timeout (default 60 s: npm servers start slowly on a loaded
 * machine). Exits 0 when every operation succeeded (a result with isError
 * is a success of the call: the tool's own failure), 1 otherwise, 2 on bad
 * usage. The log goes to stderr. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/log.h"
#include "daemon/mcp/mcp.h"

typedef struct probe {
    reactor_t *r;
    log_sink log;
    bool done;
    int failed;
} probe;

static void log_fn(void *ud, int level, json_t *data, const char *fmt, ...)
{
    probe *p = ud;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(&p->log, level, data, "%s", line);
}

static void on_done(void *ud, json_t *result, const char *code, const char *message)
{
    probe *p = ud;
    p->done = true;
    if (result) {
        char *s = json_dumps(result, JSON_COMPACT);
        printf("%s\n", s ? s : "?");
        free(s);
        json_decref(result);
    } else {
        printf("error %s: %s\n", code, message);
        p->failed = 1;
    }
    fflush(stdout);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int usage(void)
{
    fputs("usage: mcp_probe [--timeout MS] [--call-timeout MS] OP... (-- COMMAND ARGS... | --url URL)\n"
          "  OP: list | call TOOL JSON\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    probe p = { .log = { .level = LOOM_LOG_INFO, .fd = 2 } };
    long timeout = 60000, call_timeout = 0;
    const char *url = NULL;
    char **cmd = NULL;
    int first_op = 0, last_op = 0;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout = atol(argv[++i]);
        } else if (strcmp(argv[i], "--call-timeout") == 0 && i + 1 < argc) {
            call_timeout = atol(argv[++i]);
        } else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
            url = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            cmd = argv + i + 1;
            break;
        } else {
            if (!first_op)
                first_op = i;
            last_op = i + 1;
        }
    }
    if (!first_op || !url == !(cmd && *cmd))
        return usage();
    if (!(p.r = reactor_new()))
        return 1;
    mcp_t *m = mcp_new(p.r, log_fn, &p, "probe");
    mcp_server_opts o = { .name = "probe", .argv = cmd ? (const char *const *)cmd : NULL,
                          .url = url, .timeout_ms = (uint64_t)timeout };
    if (!m || mcp_add_server(m, &o) < 0)
        return 1;
    long end = now_ms() + timeout;
    while (mcp_ready_count(m) == 0 && now_ms() < end)
        reactor_run_once(p.r, 50);
    if (mcp_ready_count(m) == 0) {
        fprintf(stderr, "mcp_probe: the server was not ready within %ld ms\n", timeout);
        mcp_free(m);
        reactor_free(p.r);
        return 1;
    }
    int rc = 0;
    for (int i = first_op; i < last_op && rc != 2; i++) {
        char err[512];
        if (strcmp(argv[i], "list") == 0) {
            json_t *tools = mcp_tools(m, "probe", err, sizeof err);
            size_t k;
            json_t *t;
            json_array_foreach(tools, k, t) printf("%s\n", json_string_value(json_object_get(t, "name")));
            fflush(stdout);
            if (!tools)
                rc = 1;
            json_decref(tools);
        } else if (strcmp(argv[i], "call") == 0 && i + 2 < last_op) {
            json_t *args = json_loads(argv[i + 2], 0, NULL);
            if (!json_is_object(args)) {
                json_decref(args);
                rc = usage();
                break;
            }
            p.done = false;
            p.failed = 0;
            mcp_call_t *c = mcp_call(m, "probe", argv[i + 1], args, (uint64_t)call_timeout,
                                     on_done, &p, err, sizeof err);
            json_decref(args);
            if (!c) {
                printf("error: %s\n", err);
                rc = 1;
            }
            while (c && !p.done)
                reactor_run_once(p.r, 50);
            if (p.failed)
                rc = 1;
            i += 2;
        } else {
            rc = usage();
        }
    }
    mcp_free(m);
    reactor_free(p.r);
    return rc;
}
