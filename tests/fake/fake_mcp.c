/* fake_mcp.c -- a fake stdio MCP server for tests: newline-delimited
 * JSON-RPC 2.0 on stdin and stdout, a few tools that misbehave on purpose.
 *
 *   fake_mcp [--version V] [--no-init] [--die-at-start] [--page N]
 *            [--starts FILE] [--ignore-stdin-eof]
 *
 * --version V       answer initialize with protocol version V (default: the
 *                   one asked for)
 * --no-init         never answer initialize
 * --die-at-start    write "fatal: cannot open the database" to stderr, exit 1
 * --page N          tools/list pages of N tools (default 2), so a client
 *                   must follow nextCursor
 * --starts FILE     append "start PID" to FILE at each start, "eof" when
 *                   stdin closes and "sigterm" at SIGTERM (then it exits)
 * --ignore-stdin-eof  stay up after stdin closes (until a signal)
 *
 * Tools: echo {text} -> the text; add {a, b} -> the sum, also as
 * structuredContent {sum}; slow {ms} -> "slept MS" after MS ms (a cancelled
 * one is never answered, and "cancelled ID" goes to stderr); crash -> exits
 * with status 3 at once; fail -> a result with isError; rpc_error -> a
 * JSON-RPC error -32603; grow -> adds tool "extra" (echoes like echo) and
 * sends notifications/tools/list_changed; ask_client -> sends the client a
 * ping and a roots/list request, and answers with what came back
 * ("ping:{} roots:-32601"). Every line it reads goes to stderr as "got
 * METHOD" (for a test to see notifications). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOW 256

typedef struct slow_call {
    json_t *id;       /* owned; NULL: free slot */
    int64_t due_ms;
    int ms;
} slow_call;

typedef struct fake {
    const char *version;
    bool no_init, ignore_eof, grown;
    size_t page;
    slow_call slow[MAX_SLOW];
    json_t *asking;   /* the id of an ask_client call waiting for its answers */
    json_t *ask_ping, *ask_roots; /* what came back */
    int next_id;
} fake;

/* --starts FILE, open for the SIGTERM handler (which may only write(2)). */
static int starts_fd = -1;

static void on_sigterm(int sig)
{
    if (starts_fd >= 0 && write(starts_fd, "sigterm\n", 8) < 0)
        _exit(1);
    _exit(0);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_msg(json_t *m)
{
    char *s = json_dumps(m, JSON_COMPACT);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    free(s);
    json_decref(m);
}

static void result(json_t *id, json_t *res)
{
    send_msg(json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", res));
}

static void error(json_t *id, int code, const char *msg)
{
    send_msg(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                       code, "message", msg));
}

static json_t *text(const char *t)
{
    return json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", t);
}

static json_t *tool(const char *name, const char *desc, json_t *props, const char *required)
{
    return json_pack("{s:s, s:s, s:{s:s, s:o, s:[s*]}}", "name", name, "description", desc,
                     "inputSchema", "type", "object", "properties", props, "required", required);
}

static json_t *all_tools(const fake *f)
{
    json_t *a = json_array();
    json_array_append_new(a, tool("echo", "Echoes its text", json_pack("{s:{s:s}}", "text", "type", "string"), "text"));
    json_array_append_new(a, tool("add", "Adds two numbers", json_pack("{s:{s:s}, s:{s:s}}", "a", "type", "number", "b", "type", "number"), "a"));
    json_array_append_new(a, tool("slow", "Answers after ms milliseconds", json_pack("{s:{s:s}}", "ms", "type", "integer"), "ms"));
    json_array_append_new(a, tool("crash", "Exits at once", json_object(), NULL));
    json_array_append_new(a, tool("fail", "Fails as a tool", json_object(), NULL));
    json_array_append_new(a, tool("rpc_error", "Answers with a JSON-RPC error", json_object(), NULL));
    json_array_append_new(a, tool("grow", "Adds the tool extra", json_object(), NULL));
    json_array_append_new(a, tool("ask_client", "Asks the client things", json_object(), NULL));
    if (f->grown)
        json_array_append_new(a, tool("extra", "Echoes its text too", json_pack("{s:{s:s}}", "text", "type", "string"), "text"));
    return a;
}

static void list_tools(fake *f, json_t *id, json_t *params)
{
    json_t *all = all_tools(f);
    const char *cursor = json_string_value(json_object_get(params, "cursor"));
    size_t from = cursor ? (size_t)atoi(cursor) : 0;
    json_t *page = json_array();
    for (size_t i = from; i < json_array_size(all) && i < from + f->page; i++)
        json_array_append(page, json_array_get(all, i));
    json_t *res = json_pack("{s:o}", "tools", page);
    if (from + f->page < json_array_size(all)) {
        char next[32];
        snprintf(next, sizeof next, "%zu", from + f->page);
        json_object_set_new(res, "nextCursor", json_string(next));
    }
    json_decref(all);
    result(id, res);
}

static void answer_ask(fake *f)
{
    if (!f->asking || !f->ask_ping || !f->ask_roots)
        return;
    char *p = json_dumps(f->ask_ping, JSON_COMPACT | JSON_ENCODE_ANY);
    char buf[256];
    snprintf(buf, sizeof buf, "ping:%s roots:%lld", p ? p : "?",
             (long long)json_integer_value(json_object_get(f->ask_roots, "code")));
    free(p);
    result(f->asking, text(buf));
    json_decref(f->asking);
    json_decref(f->ask_ping);
    json_decref(f->ask_roots);
    f->asking = f->ask_ping = f->ask_roots = NULL;
}

static void call_tool(fake *f, json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    if (!name) {
        error(id, -32602, "no tool name");
    } else if (strcmp(name, "echo") == 0 || (strcmp(name, "extra") == 0 && f->grown)) {
        result(id, text(json_string_value(json_object_get(args, "text")) ?: ""));
    } else if (strcmp(name, "add") == 0) {
        double sum = json_number_value(json_object_get(args, "a")) +
                     json_number_value(json_object_get(args, "b"));
        char buf[64];
        snprintf(buf, sizeof buf, "%g", sum);
        json_t *r = text(buf);
        json_object_set_new(r, "structuredContent", json_pack("{s:f}", "sum", sum));
        result(id, r);
    } else if (strcmp(name, "slow") == 0) {
        int ms = (int)json_integer_value(json_object_get(args, "ms"));
        for (int i = 0; i < MAX_SLOW; i++)
            if (!f->slow[i].id) {
                f->slow[i] = (slow_call){ json_incref(id), now_ms() + ms, ms };
                return;
            }
        error(id, -32603, "too many slow calls");
    } else if (strcmp(name, "crash") == 0) {
        fprintf(stderr, "crashing on purpose\n");
        exit(3);
    } else if (strcmp(name, "fail") == 0) {
        json_t *r = text("the tool failed on purpose");
        json_object_set_new(r, "isError", json_true());
        result(id, r);
    } else if (strcmp(name, "rpc_error") == 0) {
        error(id, -32603, "internal error on purpose");
    } else if (strcmp(name, "grow") == 0) {
        f->grown = true;
        result(id, text("grown"));
        send_msg(json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method",
                           "notifications/tools/list_changed"));
    } else if (strcmp(name, "ask_client") == 0) {
        json_decref(f->asking);
        f->asking = json_incref(id);
        send_msg(json_pack("{s:s, s:s, s:s}", "jsonrpc", "2.0", "id", "srv-ping", "method", "ping"));
        send_msg(json_pack("{s:s, s:s, s:s}", "jsonrpc", "2.0", "id", "srv-roots", "method",
                           "roots/list"));
    } else {
        error(id, -32602, "unknown tool");
    }
}

static void cancelled(fake *f, json_t *params)
{
    json_t *rid = json_object_get(params, "requestId");
    for (int i = 0; i < MAX_SLOW; i++)
        if (f->slow[i].id && json_equal(f->slow[i].id, rid)) {
            char *s = json_dumps(rid, JSON_ENCODE_ANY);
            fprintf(stderr, "cancelled %s\n", s ? s : "?");
            free(s);
            json_decref(f->slow[i].id);
            f->slow[i].id = NULL;
        }
}

static void handle(fake *f, json_t *m)
{
    const char *method = json_string_value(json_object_get(m, "method"));
    json_t *id = json_object_get(m, "id");
    json_t *params = json_object_get(m, "params");
    fprintf(stderr, "got %s\n", method ? method : "a response");
    if (!method) { /* an answer to one of our requests */
        const char *rid = json_string_value(id);
        if (rid && strcmp(rid, "srv-ping") == 0)
            f->ask_ping = json_incref(json_object_get(m, "result") ?: json_null());
        else if (rid && strcmp(rid, "srv-roots") == 0)
            f->ask_roots = json_incref(json_object_get(m, "error") ?: json_null());
        answer_ask(f);
        return;
    }
    if (!id) {
        if (strcmp(method, "notifications/cancelled") == 0)
            cancelled(f, params);
        return;
    }
    if (strcmp(method, "initialize") == 0) {
        if (f->no_init)
            return;
        const char *v = f->version ? f->version
                                   : json_string_value(json_object_get(params, "protocolVersion"));
        result(id, json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}}", "protocolVersion", v ? v : "?",
                             "capabilities", "tools", "listChanged", 1, "serverInfo", "name",
                             "fake_mcp", "version", "1.0"));
    } else if (strcmp(method, "ping") == 0) {
        result(id, json_object());
    } else if (strcmp(method, "tools/list") == 0) {
        list_tools(f, id, params);
    } else if (strcmp(method, "tools/call") == 0) {
        call_tool(f, id, params);
    } else {
        error(id, -32601, "method not found");
    }
}

static void run_due(fake *f)
{
    int64_t now = now_ms();
    for (int i = 0; i < MAX_SLOW; i++)
        if (f->slow[i].id && f->slow[i].due_ms <= now) {
            char buf[64];
            snprintf(buf, sizeof buf, "slept %d", f->slow[i].ms);
            result(f->slow[i].id, text(buf));
            json_decref(f->slow[i].id);
            f->slow[i].id = NULL;
        }
}

static int next_timeout(const fake *f)
{
    int64_t now = now_ms(), best = -1;
    for (int i = 0; i < MAX_SLOW; i++)
        if (f->slow[i].id) {
            int64_t d = f->slow[i].due_ms - now;
            if (d < 0)
                d = 0;
            if (best < 0 || d < best)
                best = d;
        }
    return (int)best;
}

int main(int argc, char **argv)
{
    fake f = { .page = 2 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 && i + 1 < argc)
            f.version = argv[++i];
        else if (strcmp(argv[i], "--no-init") == 0)
            f.no_init = true;
        else if (strcmp(argv[i], "--ignore-stdin-eof") == 0)
            f.ignore_eof = true;
        else if (strcmp(argv[i], "--page") == 0 && i + 1 < argc)
            f.page = (size_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--starts") == 0 && i + 1 < argc) {
            starts_fd = open(argv[++i], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            char line[32];
            int n = snprintf(line, sizeof line, "start %d\n", (int)getpid());
            if (starts_fd >= 0 && write(starts_fd, line, (size_t)n) < 0)
                return 1;
            signal(SIGTERM, on_sigterm);
        } else if (strcmp(argv[i], "--die-at-start") == 0) {
            fprintf(stderr, "fatal: cannot open the database\n");
            return 1;
        } else {
            fprintf(stderr, "fake_mcp: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (f.page == 0)
        f.page = 2;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool eof = false;
    for (;;) {
        struct pollfd p = { .fd = eof ? -1 : 0, .events = POLLIN };
        int rc = poll(&p, 1, next_timeout(&f));
        if (rc < 0 && errno != EINTR)
            return 1;
        run_due(&f);
        if (eof || rc <= 0 || !(p.revents & (POLLIN | POLLHUP)))
            continue;
        if (len + 65536 > cap) {
            cap = (len + 65536) * 2;
            if (!(buf = realloc(buf, cap)))
                return 1;
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n <= 0) {
            if (starts_fd >= 0 && write(starts_fd, "eof\n", 4) < 0)
                return 1;
            if (!f.ignore_eof)
                return 0;
            eof = true;
            continue;
        }
        len += (size_t)n;
        char *nl;
        size_t off = 0;
        while ((nl = memchr(buf + off, '\n', len - off))) {
            json_t *m = json_loadb(buf + off, (size_t)(nl - (buf + off)), 0, NULL);
            off = (size_t)(nl - buf) + 1;
            if (m)
                handle(&f, m);
            json_decref(m);
        }
        memmove(buf, buf + off, len - off);
        len -= off;
    }
}
