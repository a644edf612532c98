/* test_loomctl_mcp.c -- `loomctl mcp` against a real loomd, spoken to line
 * by line as an MCP client would, without one from npm (mcp_server_test.sh
 * drives it with the MCP SDK): the workflows op's input schemas, the
 * JSON-RPC errors, a call's answer, and the cancel when the client leaves.
 * Every read has a deadline; nothing sleeps. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

#define truth(x) ((x) ? 1 : 0)
#define DEADLINE_MS 10000

/* loomctl mcp as a child: its stdin to write to, its stdout to read. */
typedef struct mcp_child {
    pid_t pid;
    int in, out;
    char buf[1 << 16];
    size_t len;
} mcp_child;

static void mcp_start(mcp_child *m, lh_daemon *d)
{
    int to[2], from[2];
    signal(SIGPIPE, SIG_IGN); /* a loomctl that died fails a write, not the test process */
    cr_assert_eq(pipe2(to, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(from, O_CLOEXEC), 0);
    const char *bd = getenv("LOOM_BUILDDIR");
    char exe[512], log[400];
    snprintf(exe, sizeof exe, "%s/loomctl", bd ? bd : ".");
    snprintf(log, sizeof log, "%s/mcp.log", d->dir);
    m->pid = fork();
    cr_assert(m->pid >= 0);
    if (m->pid == 0) {
        int err = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0 || err < 0 || dup2(err, 2) < 0)
            _exit(127);
        execl(exe, "loomctl", "mcp", "--socket", d->sock, (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    m->in = to[1];
    m->out = from[0];
    m->len = 0;
}

static void mcp_send(mcp_child *m, const char *line)
{
    char *text = NULL;
    int n = asprintf(&text, "%s\n", line);
    cr_assert(n > 0);
    for (int off = 0; off < n;) {
        ssize_t k = write(m->in, text + off, (size_t)(n - off));
        cr_assert(k > 0 || errno == EINTR, "cannot write to loomctl mcp: %s", strerror(errno));
        off += k > 0 ? (int)k : 0;
    }
    free(text);
}

/* The next message loomctl mcp wrote (new reference), or NULL at EOF or
 * after TIMEOUT_MS. */
static json_t *mcp_recv(mcp_child *m, int timeout_ms)
{
    long end = lh_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(m->buf, '\n', m->len);
        if (nl) {
            json_error_t err;
            json_t *v = json_loadb(m->buf, (size_t)(nl - m->buf), 0, &err);
            cr_assert(v, "loomctl mcp wrote a line that is not JSON: %s", err.text);
            m->len -= (size_t)(nl - m->buf) + 1;
            memmove(m->buf, nl + 1, m->len);
            return v;
        }
        long left = end - lh_now_ms();
        cr_assert(m->len < sizeof m->buf, "a line longer than the test reads");
        struct pollfd p = { .fd = m->out, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return NULL;
        ssize_t n = read(m->out, m->buf + m->len, sizeof m->buf - m->len);
        if (n <= 0)
            return NULL;
        m->len += (size_t)n;
    }
}

/* The response to request ID (an integer), skipping notifications. */
static json_t *mcp_response(mcp_child *m, json_int_t id)
{
    for (;;) {
        json_t *v = mcp_recv(m, DEADLINE_MS);
        cr_assert(v, "no response to request %lld", (long long)id);
        if (json_integer_value(json_object_get(v, "id")) == id && json_object_get(v, "id"))
            return v;
        cr_assert(json_object_get(v, "method"), "a response to another request came first");
        json_decref(v);
    }
}

/* Closes stdin and waits for the exit: its status, or -1 past the deadline. */
static int mcp_finish(mcp_child *m)
{
    close(m->in);
    long end = lh_now_ms() + DEADLINE_MS;
    int st;
    /* its stdout closes when it exits: wait for that, with a deadline */
    for (;;) {
        long left = end - lh_now_ms();
        struct pollfd pf = { .fd = m->out, .events = POLLIN };
        char sink[4096];
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, &st, 0);
            close(m->out);
            return -1;
        }
        if (read(m->out, sink, sizeof sink) <= 0)
            break;
    }
    close(m->out);
    cr_assert_eq(waitpid(m->pid, &st, 0), m->pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int error_code(const json_t *v)
{
    return (int)json_integer_value(json_object_get(json_object_get(v, "error"), "code"));
}

static void setup_daemon(lh_daemon *d)
{
    lh_setup(d, "  glacial: { plugin: mock, latency: 10m }\n", NULL);
    lh_workflow(d, "echo",
                "loom: 1\nname: echo\ndescription: Echoes.\n"
                "input:\n  text: { type: string, description: what to say }\n"
                "  n: { type: integer, default: 2 }\n  extra: { type: any, required: false }\n"
                "do:\n  call: \"echo {{ input.text }}\"\n  output: { said: \"{{ output }}\" }\n");
    lh_workflow(d, "free", "loom: 1\nname: free\ndo: { call: \"hi\" }\n");
    lh_workflow(d, "slow",
                "loom: 1\nname: slow\ndo:\n  chain:\n    - call: start\n"
                "    - call: { provider: glacial, prompt: wait }\n");
    lh_start(d);
}

Test(loomctl_mcp, workflows_op_gives_description_and_input_schema)
{
    lh_daemon d;
    setup_daemon(&d);
    json_t *r = lh_call(&d, "{\"id\":1,\"op\":\"workflows\"}", DEADLINE_MS);
    cr_assert(r);
    json_t *want_echo = json_loads(
        "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"description\":"
        "\"what to say\"},\"n\":{\"type\":\"integer\",\"default\":2},\"extra\":{}},"
        "\"required\":[\"text\"]}", 0, NULL);
    json_t *want_free = json_loads("{\"type\":\"object\"}", 0, NULL);
    size_t i, seen = 0;
    json_t *w;
    json_array_foreach(json_object_get(r, "workflows"), i, w) {
        const char *name = json_string_value(json_object_get(w, "name"));
        json_t *schema = json_object_get(w, "input_schema");
        if (strcmp(name, "echo") == 0) {
            seen++;
            cr_expect(truth(json_equal(schema, want_echo)));
            cr_expect_str_eq(json_string_value(json_object_get(w, "description")), "Echoes.");
        } else if (strcmp(name, "free") == 0) {
            seen++;
            cr_expect(truth(json_equal(schema, want_free)));
            cr_expect(truth(json_is_null(json_object_get(w, "description"))));
        }
    }
    cr_expect_eq(seen, 2);
    json_decref(want_echo);
    json_decref(want_free);
    json_decref(r);
    lh_teardown(&d);
}

Test(loomctl_mcp, json_rpc_errors_and_versions)
{
    lh_daemon d;
    setup_daemon(&d);
    mcp_child m;
    mcp_start(&m, &d);
    /* an older revision the client asks for is answered in kind; an unknown
     * one with the newest */
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                 "{\"protocolVersion\":\"2024-11-05\",\"capabilities\":{}}}");
    json_t *v = mcp_response(&m, 1);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(v, "result"),
                                                       "protocolVersion")), "2024-11-05");
    json_decref(v);
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":"
                 "{\"protocolVersion\":\"1999-01-01\"}}");
    v = mcp_response(&m, 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(v, "result"),
                                                       "protocolVersion")), "2025-11-25");
    json_decref(v);

    /* errors without an id to answer carry id null, in the order sent */
    static const struct { const char *line; int code; } bad[] = {
        { "not json", -32700 },
        { "[{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}]", -32600 },
        { "{\"jsonrpc\":\"2.0\",\"id\":{\"x\":1},\"method\":\"ping\"}", -32600 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mcp_send(&m, bad[i].line);
        v = mcp_recv(&m, DEADLINE_MS);
        cr_assert(v, "no answer to %s", bad[i].line);
        cr_expect(truth(json_is_null(json_object_get(v, "id"))), "%s", bad[i].line);
        cr_expect_eq(error_code(v), bad[i].code, "%s", bad[i].line);
        json_decref(v);
    }
    /* a response and a notification are not answered: the ping after them is next */
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}");
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}");
    v = mcp_recv(&m, DEADLINE_MS);
    cr_assert(v);
    cr_expect_str_eq(json_string_value(json_object_get(v, "id")), "p");
    cr_expect(truth(json_is_object(json_object_get(v, "result"))));
    cr_expect_eq(json_object_size(json_object_get(v, "result")), 0);
    json_decref(v);

    static const struct { const char *line; int code; } errs[] = {
        { "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"prompts/list\"}", -32601 },
        { "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"arguments\":{}}}",
          -32602 },
        { "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\","
          "\"arguments\":[1]}}", -32602 },
        { "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":\"x\"}", -32602 },
        { "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}",
          -32602 },
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        mcp_send(&m, errs[i].line);
        v = mcp_response(&m, (json_int_t)(5 + i));
        cr_expect_eq(error_code(v), errs[i].code, "%s", errs[i].line);
        json_decref(v);
    }
    cr_expect_eq(mcp_finish(&m), 0);
    lh_teardown(&d);
}

Test(loomctl_mcp, call_answers_the_output_or_the_error)
{
    lh_daemon d;
    setup_daemon(&d);
    mcp_child m;
    mcp_start(&m, &d);
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
                 "{\"name\":\"echo\",\"arguments\":{\"text\":\"hi\"}}}");
    json_t *v = mcp_response(&m, 1);
    json_t *r = json_object_get(v, "result");
    json_t *want = json_pack("{s:s}", "said", "echo hi");
    cr_expect(truth(json_equal(json_object_get(r, "structuredContent"), want)));
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r, "content"),
                                                                      0), "text")),
                     "{\"said\":\"echo hi\"}");
    cr_expect(truth(json_is_false(json_object_get(r, "isError"))));
    json_decref(want);
    json_decref(v);
    /* a job that fails (its input lacks a required field) is a tool error */
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":"
                 "{\"name\":\"echo\"}}");
    v = mcp_response(&m, 2);
    r = json_object_get(v, "result");
    cr_expect(truth(json_is_true(json_object_get(r, "isError"))));
    const char *text = json_string_value(
        json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
    cr_expect(text && strstr(text, "invalid_input"), "%s", text ? text : "(none)");
    json_decref(v);
    cr_expect_eq(mcp_finish(&m), 0);
    lh_teardown(&d);
}

/* The jobs of workflow slow in STATE, as list counts them. */
static size_t slow_jobs(lh_daemon *d, const char *state)
{
    char req[128];
    snprintf(req, sizeof req, "{\"id\":1,\"op\":\"list\",\"workflow\":\"slow\",\"state\":\"%s\"}",
             state);
    json_t *r = lh_call(d, req, DEADLINE_MS);
    cr_assert(r);
    size_t n = json_array_size(json_object_get(r, "jobs"));
    json_decref(r);
    return n;
}

Test(loomctl_mcp, leaving_client_cancels_its_running_job)
{
    lh_daemon d;
    setup_daemon(&d);
    mcp_child m;
    mcp_start(&m, &d);
    mcp_send(&m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
                 "{\"name\":\"slow\",\"_meta\":{\"progressToken\":7}}}");
    /* the first step's progress: the job runs, waiting on the ten-minute step */
    json_t *v = mcp_recv(&m, DEADLINE_MS);
    cr_assert(v, "no progress");
    json_t *p = json_object_get(v, "params");
    cr_expect_str_eq(json_string_value(json_object_get(v, "method")), "notifications/progress");
    cr_expect_eq(json_integer_value(json_object_get(p, "progressToken")), 7);
    cr_expect_eq(json_integer_value(json_object_get(p, "progress")), 1);
    cr_expect_str_eq(json_string_value(json_object_get(p, "message")), "do.chain[0] finished");
    json_decref(v);
    cr_expect_eq(mcp_finish(&m), 0);
    /* the store records the end after loomd answered the cancel: wait for it */
    long end = lh_now_ms() + DEADLINE_MS;
    while (slow_jobs(&d, "cancelled") != 1 && lh_now_ms() < end) {
        struct pollfd none = { .fd = -1 };
        poll(&none, 1, 20); /* between two looks at the store */
    }
    cr_expect_eq(slow_jobs(&d, "cancelled"), 1);
    cr_expect_eq(slow_jobs(&d, "running"), 0);
    lh_teardown(&d);
}
