/* loomctl_mcp.c -- `loomctl mcp`: loomd's workflows served as MCP tools over
 * stdio, so any MCP client (an IDE, an agent) can run them.
 *
 * The transport is MCP's stdio one: one JSON-RPC 2.0 message per line on
 * stdin and stdout (compact JSON has no raw newline inside), logs on stderr
 * only. Served: initialize, ping, tools/list, tools/call, and the
 * notification notifications/cancelled; any other request is answered
 * -32601, other notifications are ignored.
 *
 * tools/list asks loomd for its workflows (op `workflows`) each time, so a
 * workflow dropped in meanwhile shows on the next list: one tool per served
 * workflow, named after it, its inputSchema the workflow's `input:`
 * declaration as loomd gives it.
 *
 * tools/call submits a job of the workflow with the call's arguments as the
 * input, on a connection of its own, then sends `wait` on it, whose reply
 * carries the ended job. When the client sent a progressToken, that
 * connection subscribes to `events` before the submit (a job may run its
 * first steps before its submit is answered) and each step of the job that
 * finishes is a progress notification. Calls run at once: the loop below polls stdin and every call's
 * connection, so a long job holds up nothing else. A client's cancellation
 * cancels the job (op `cancel`) and, as MCP wants, the request gets no
 * response. When stdin ends the client is gone and no answer can reach it:
 * the jobs still running are cancelled before loomctl exits. */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The newest MCP revision spoken; an older one a client asks for that is
 * listed below is answered in kind (tools have not changed between them). */
#define MCP_LATEST "2025-11-25"
static const char *const mcp_versions[] = { MCP_LATEST, "2025-06-18", "2025-03-26",
                                            "2024-11-05" };

/* JSON-RPC error codes. */
enum {
    RPC_PARSE_ERROR = -32700,
    RPC_INVALID_REQUEST = -32600,
    RPC_METHOD_NOT_FOUND = -32601,
    RPC_INVALID_PARAMS = -32602,
    RPC_INTERNAL = -32603
};

/* The longest message read from the client. loomd takes lines of 16 MiB,
 * so a job input needs no more than that and some room for the envelope. */
#define MCP_MAX_LINE ((size_t)32 << 20)
#define STDIN_CHUNK ((size_t)64 << 10)

/* One tools/call whose job runs. */
typedef struct mcp_call {
    json_t *rpc_id;          /* the client's request id (owned reference) */
    json_t *token;           /* its progressToken (owned), or NULL: no progress sent */
    char *job;               /* the job's id (owned) */
    char *workflow;          /* owned, for log lines */
    loomctl_conn *conn;      /* owned: the submit, events and wait of this call */
    json_int_t wait_id;      /* loomd's request id of the wait */
    bool cancelled;          /* the client cancelled: no response is owed */
    json_int_t steps;        /* steps finished: the progress reported */
    struct mcp_call *next;
} mcp_call;

typedef struct mcp_server {
    const char *socket;      /* borrowed (argv or the environment) */
    int64_t timeout_ms;      /* for loomd's quick answers */
    mcp_call *calls;         /* running, owned */
    size_t ncalls;
    char *in;                /* bytes from stdin: [0, in_len) not yet a whole line */
    size_t in_len, in_cap;
    bool skipping;           /* dropping the rest of a line that was too long */
    bool in_eof;
    bool out_failed;         /* stdout is gone: the client cannot be answered */
} mcp_server;

/* ---- writing to the client ---- */

/* Writes MSG (stolen) as one line on stdout. The transport is blocking: a
 * client that stops reading stops the server, as with any pipe. */
static void send_msg(mcp_server *s, json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(msg);
    if (!text) {
        fprintf(stderr, "loomctl mcp: out of memory writing a message\n");
        return;
    }
    if (!s->out_failed && (fputs(text, stdout) < 0 || fputc('\n', stdout) < 0 || fflush(stdout)))
    {
        fprintf(stderr, "loomctl mcp: cannot write to the client: %s\n", strerror(errno));
        s->out_failed = true;
    }
    free(text);
}

/* The response to request ID (borrowed) carrying RESULT (stolen). */
static void send_result(mcp_server *s, json_t *id, json_t *result)
{
    if (!result) {
        fprintf(stderr, "loomctl mcp: out of memory answering a request\n");
        return;
    }
    send_msg(s, json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

static void send_error(mcp_server *s, json_t *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_error(mcp_server *s, json_t *id, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_msg(s, json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                          id ? id : json_null(), "error", "code", code, "message", msg));
}

/* A tools/call result: one text item, plus structuredContent when given
 * (stolen, may be NULL), isError when the tool failed. A new object. */
static json_t *tool_result(const char *text, json_t *structured, bool is_error, const char *job)
{
    json_t *r = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text,
                          "isError", is_error);
    if (r && structured)
        json_object_set(r, "structuredContent", structured);
    /* the job id, for `loomctl get` and `watch` beside the client */
    if (r && job)
        json_object_set_new(r, "_meta", json_pack("{s:s}", "loom/job", job));
    json_decref(structured);
    return r;
}

static void send_tool_error(mcp_server *s, json_t *id, const char *job, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_tool_error(mcp_server *s, json_t *id, const char *job, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_result(s, id, tool_result(msg, NULL, true, job));
}

/* ---- talking to loomd ---- */

/* The message of loomd's error reply REPLY (borrowed), never NULL. */
static const char *message_of(const json_t *reply)
{
    const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
    return m ? m : "(no message)";
}

/* Asks loomd REQ (stolen) on a new connection. LOOMCTL_OK with the reply in
 * *REPLY (new reference), else the failure's status (printed on stderr;
 * *REPLY holds an error reply when loomd refused). */
static int ask(mcp_server *s, json_t *req, json_t **reply)
{
    *reply = NULL;
    if (!req) {
        fprintf(stderr, "loomctl mcp: out of memory\n");
        return LOOMCTL_UNREACHABLE;
    }
    loomctl_conn *c = loomctl_connect(s->socket, s->timeout_ms);
    int rc = c ? loomctl_request(c, req, s->timeout_ms, NULL, NULL, reply) : LOOMCTL_UNREACHABLE;
    loomctl_close(c);
    json_decref(req);
    return rc;
}

/* ---- the methods ---- */

static void on_initialize(mcp_server *s, json_t *id, const json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = MCP_LATEST;
    for (size_t i = 0; asked && i < sizeof mcp_versions / sizeof *mcp_versions; i++)
        if (strcmp(asked, mcp_versions[i]) == 0)
            version = mcp_versions[i];
    send_result(s, id,
                json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion", version,
                          "capabilities", "tools", "listChanged", 0, "serverInfo", "name",
                          "loom", "version", PACKAGE_VERSION, "instructions",
                          "Each tool runs the Loom workflow of its name as a job on loomd and "
                          "returns the job's output as JSON. Jobs can take long: send a "
                          "progressToken to see their steps finish."));
}

/* The tool for workflow W (an entry of loomd's `workflows` reply), or NULL
 * when it is not served. A new object. */
static json_t *tool_of(const json_t *w)
{
    const char *name = json_string_value(json_object_get(w, "name"));
    if (!name || !json_is_true(json_object_get(w, "served")))
        return NULL;
    const char *desc = json_string_value(json_object_get(w, "description"));
    json_t *schema = json_object_get(w, "input_schema");
    char fallback[512];
    if (!desc) {
        snprintf(fallback, sizeof fallback, "Runs the Loom workflow %s and returns its output.",
                 name);
        desc = fallback;
    }
    /* a loomd from before input_schema was in the reply: any object */
    return json_pack("{s:s, s:s, s:o}", "name", name, "description", desc, "inputSchema",
                     json_is_object(schema) ? json_deep_copy(schema)
                                            : json_pack("{s:s}", "type", "object"));
}

static void on_tools_list(mcp_server *s, json_t *id)
{
    json_t *reply;
    int rc = ask(s, json_pack("{s:s}", "op", "workflows"), &reply);
    if (rc != LOOMCTL_OK) {
        send_error(s, id, RPC_INTERNAL, "cannot list loomd's workflows on %s (%s)", s->socket,
                   rc == LOOMCTL_REFUSED ? "it refused" : "unreachable");
        json_decref(reply);
        return;
    }
    json_t *tools = json_array();
    const json_t *ws = json_object_get(reply, "workflows");
    for (size_t i = 0; tools && i < json_array_size(ws); i++) {
        json_t *t = tool_of(json_array_get(ws, i));
        if (t && json_array_append_new(tools, t) < 0) {
            json_decref(tools);
            tools = NULL;
        }
    }
    json_decref(reply);
    /* one page: a daemon serves a directory's worth of workflows */
    send_result(s, id, tools ? json_pack("{s:o}", "tools", tools) : NULL);
}

static void call_free(mcp_call *c)
{
    if (!c)
        return;
    json_decref(c->rpc_id);
    json_decref(c->token);
    free(c->job);
    free(c->workflow);
    loomctl_close(c->conn);
    free(c);
}

/* One event of C's job: a finished step is one more step of progress. */
static void on_event(mcp_server *s, mcp_call *c, const json_t *ev)
{
    const char *name = json_string_value(json_object_get(ev, "event"));
    const char *job = json_string_value(json_object_get(ev, "job"));
    if (!c->token || c->cancelled || !name || strcmp(name, "step_finished") != 0 || !job ||
        strcmp(job, c->job) != 0)
        return;
    const char *node = json_string_value(json_object_get(ev, "node"));
    char msg[512];
    snprintf(msg, sizeof msg, "%s finished%s", node ? node : "a step",
             json_is_true(json_object_get(ev, "replayed")) ? " (replayed)" : "");
    c->steps++;
    send_msg(s, json_pack("{s:s, s:s, s:{s:O, s:I, s:s}}", "jsonrpc", "2.0", "method",
                          "notifications/progress", "params", "progressToken", c->token,
                          "progress", c->steps, "message", msg));
}

/* Events that came before the submit's reply, when the job's id was not
 * known yet: kept to be sorted out once it is (a loomctl_message_fn with UD
 * the array). Progress is all they are for, so past a bound they are
 * dropped rather than held without limit. */
#define EARLY_EVENTS_MAX 10000
static void keep_early(json_t *msg, void *ud)
{
    if (json_object_get(msg, "event") && json_array_size(ud) < EARLY_EVENTS_MAX)
        json_array_append(ud, msg);
}

/* Sends REQ (stolen) on C's connection without waiting for its reply (it is
 * read among the call's other lines). The request id, or minus a status. */
static json_int_t send_on(mcp_server *s, mcp_call *c, json_t *req)
{
    json_t *reply = NULL;
    json_int_t id = req ? loomctl_send(c->conn, req, s->timeout_ms, &reply) : -LOOMCTL_UNREACHABLE;
    json_decref(req);
    json_decref(reply);
    return id;
}

static void on_tools_call(mcp_server *s, json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    json_t *token = json_object_get(json_object_get(params, "_meta"), "progressToken");
    if (!name) {
        send_error(s, id, RPC_INVALID_PARAMS, "tools/call needs the tool's name in params.name");
        return;
    }
    if (args && !json_is_object(args)) {
        send_error(s, id, RPC_INVALID_PARAMS, "params.arguments must be an object");
        return;
    }
    mcp_call *c = calloc(1, sizeof *c);
    json_t *req = json_pack("{s:s, s:s, s:o}", "op", "submit", "workflow", name, "input",
                            args ? json_incref(args) : json_object());
    if (!c || !req || !(c->workflow = strdup(name))) {
        json_decref(req);
        call_free(c);
        send_error(s, id, RPC_INTERNAL, "out of memory");
        return;
    }
    c->rpc_id = json_incref(id);
    c->token = json_is_string(token) || json_is_integer(token) ? json_incref(token) : NULL;
    c->conn = loomctl_connect(s->socket, s->timeout_ms);
    if (!c->conn) {
        json_decref(req);
        send_tool_error(s, id, NULL, "cannot reach loomd on %s", s->socket);
        call_free(c);
        return;
    }
    /* A job starts before its submit is answered (that waits for the disk),
     * so a subscription to the job alone would come too late for its first
     * steps: for progress the connection follows every job's events from
     * before the submit and keeps this job's. */
    json_t *reply = NULL, *early = json_array();
    int rc = early ? LOOMCTL_OK : LOOMCTL_UNREACHABLE;
    if (rc == LOOMCTL_OK && c->token) {
        json_t *sub = json_pack("{s:s}", "op", "events");
        rc = sub ? loomctl_request(c->conn, sub, s->timeout_ms, NULL, NULL, &reply)
                 : LOOMCTL_UNREACHABLE;
        json_decref(sub);
    }
    if (rc == LOOMCTL_OK) {
        json_decref(reply);
        reply = NULL;
        /* answered once the job is on disk: soon, and it gives the id every
         * later request needs */
        rc = loomctl_request(c->conn, req, s->timeout_ms, keep_early, early, &reply);
    }
    json_decref(req);
    const json_t *err = json_object_get(reply, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *job = json_string_value(json_object_get(reply, "job"));
    if (rc == LOOMCTL_REFUSED && code && strcmp(code, "unknown_workflow") == 0) {
        send_error(s, id, RPC_INVALID_PARAMS, "Unknown tool: %s (%s)", name, message_of(reply));
    } else if (rc == LOOMCTL_REFUSED) {
        send_tool_error(s, id, NULL, "loomd did not take the job: %s: %s", code ? code : "error",
                        message_of(reply));
    } else if (rc != LOOMCTL_OK || !job) {
        send_tool_error(s, id, NULL, "the job could not be submitted to loomd on %s (%s)",
                        s->socket, rc == LOOMCTL_TIMEOUT ? "no answer in time" : "connection lost");
    } else if (!(c->job = strdup(job))) {
        send_error(s, id, RPC_INTERNAL, "out of memory");
    } else {
        json_decref(reply);
        reply = NULL;
        size_t i;
        json_t *ev;
        json_array_foreach(early, i, ev)
            on_event(s, c, ev);
        json_decref(early);
        early = NULL;
        /* the wait's reply is the job's end, whatever the events said */
        c->wait_id = send_on(s, c, json_pack("{s:s, s:s}", "op", "wait", "job", c->job));
        if (c->wait_id > 0) {
            fprintf(stderr, "loomctl mcp: job %s of %s submitted\n", c->job, name);
            c->next = s->calls;
            s->calls = c;
            s->ncalls++;
            return;
        }
        send_tool_error(s, id, c->job, "lost loomd on %s after submitting job %s (it goes on)",
                        s->socket, c->job);
    }
    json_decref(reply);
    json_decref(early);
    call_free(c);
}

/* The response to C's request once its job ended: JOB, the job object of
 * the wait's reply (borrowed). */
static void answer_ended(mcp_server *s, mcp_call *c, const json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "state"));
    json_t *output = json_object_get(job, "output");
    fprintf(stderr, "loomctl mcp: job %s of %s %s\n", c->job, c->workflow, state ? state : "ended");
    if (state && strcmp(state, "succeeded") == 0) {
        if (!output)
            output = json_null();
        char *text = json_dumps(output, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (!text) {
            send_error(s, c->rpc_id, RPC_INTERNAL, "out of memory");
            return;
        }
        /* structuredContent must be an object; other outputs are the text alone */
        send_result(s, c->rpc_id, tool_result(text, json_is_object(output) ? json_incref(output)
                                                                            : NULL,
                                              false, c->job));
        free(text);
        return;
    }
    const json_t *error = json_object_get(job, "error");
    if (state && strcmp(state, "failed") == 0 && json_is_object(error)) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) {
            send_error(s, c->rpc_id, RPC_INTERNAL, "out of memory");
            return;
        }
        fprintf(f, "job %s failed: ", c->job);
        loomctl_describe_job_error(f, error);
        if (fclose(f) != 0 || !text) {
            free(text);
            send_error(s, c->rpc_id, RPC_INTERNAL, "out of memory");
            return;
        }
        send_result(s, c->rpc_id, tool_result(text, NULL, true, c->job));
        free(text);
        return;
    }
    send_tool_error(s, c->rpc_id, c->job, "job %s %s", c->job,
                    state && strcmp(state, "cancelled") == 0 ? "was cancelled"
                                                             : "ended without an output");
}

/* Takes every line that came on C's connection. Returns true when the call
 * is over (answered, or owed no answer), false while its job runs. */
static bool drain_call(mcp_server *s, mcp_call *c)
{
    for (;;) {
        json_t *msg;
        int rc = loomctl_read(c->conn, 0, &msg);
        if (rc == LOOMCTL_TIMEOUT)
            return false;
        if (rc != LOOMCTL_OK) {
            fprintf(stderr, "loomctl mcp: job %s: %s\n", c->job, loomctl_conn_error(c->conn));
            if (!c->cancelled)
                send_tool_error(s, c->rpc_id, c->job,
                                "lost loomd while job %s ran (it goes on: `loomctl get %s`)",
                                c->job, c->job);
            return true;
        }
        bool over = false;
        if (json_object_get(msg, "event")) {
            on_event(s, c, msg);
        } else if (loomctl_is_reply(msg, c->wait_id)) {
            over = true;
            if (c->cancelled)
                ; /* MCP: a cancelled request is not answered */
            else if (json_is_true(json_object_get(msg, "ok")))
                answer_ended(s, c, json_object_get(msg, "job"));
            else
                send_tool_error(s, c->rpc_id, c->job, "waiting for job %s failed: %s", c->job,
                                message_of(msg));
        } else if (!json_is_true(json_object_get(msg, "ok"))) {
            /* the events subscription or a cancel refused: the wait still ends the call */
            fprintf(stderr, "loomctl mcp: job %s: loomd refused a request: %s\n", c->job,
                    message_of(msg));
        }
        json_decref(msg);
        if (over)
            return true;
    }
}

/* notifications/cancelled: the job of that request is cancelled; its wait
 * then ends and the call is dropped unanswered. */
static void on_cancelled(mcp_server *s, const json_t *params)
{
    const json_t *rid = json_object_get(params, "requestId");
    for (mcp_call *c = s->calls; rid && c; c = c->next) {
        if (c->cancelled || !json_equal(c->rpc_id, rid))
            continue;
        const char *why = json_string_value(json_object_get(params, "reason"));
        fprintf(stderr, "loomctl mcp: cancelling job %s of %s at the client's request%s%s\n",
                c->job, c->workflow, why ? ": " : "", why ? why : "");
        c->cancelled = true;
        send_on(s, c, json_pack("{s:s, s:s}", "op", "cancel", "job", c->job));
        return;
    }
}

/* One message from the client (stolen). */
static void on_message(mcp_server *s, json_t *msg)
{
    if (!json_is_object(msg)) {
        send_error(s, NULL, RPC_INVALID_REQUEST,
                   json_is_array(msg) ? "batches are not supported" : "a message is an object");
        json_decref(msg);
        return;
    }
    json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        send_error(s, NULL, RPC_INVALID_REQUEST, "an id is a string or an integer");
    } else if (!method) {
        /* a response: this server sends no requests, so none is awaited */
        if (!json_object_get(msg, "result") && !json_object_get(msg, "error"))
            send_error(s, id, RPC_INVALID_REQUEST, "a request needs a method");
    } else if (!id) {
        if (strcmp(method, "notifications/cancelled") == 0)
            on_cancelled(s, params);
        /* any other notification (initialized, progress, ...) needs nothing */
    } else if (params && !json_is_object(params)) {
        send_error(s, id, RPC_INVALID_PARAMS, "params must be an object");
    } else if (strcmp(method, "initialize") == 0) {
        on_initialize(s, id, params);
    } else if (strcmp(method, "ping") == 0) {
        send_result(s, id, json_object());
    } else if (strcmp(method, "tools/list") == 0) {
        on_tools_list(s, id);
    } else if (strcmp(method, "tools/call") == 0) {
        on_tools_call(s, id, params);
    } else {
        send_error(s, id, RPC_METHOD_NOT_FOUND, "Method not found: %s", method);
    }
    json_decref(msg);
}

/* ---- reading the client ---- */

/* Handles each whole line in S's buffer, keeping the rest. */
static void take_lines(mcp_server *s, size_t scan_from)
{
    size_t start = 0;
    char *nl;
    while ((nl = memchr(s->in + scan_from, '\n', s->in_len - scan_from))) {
        size_t end = (size_t)(nl - s->in), len = end - start;
        if (len > 0 && s->in[start + len - 1] == '\r')
            len--;
        if (s->skipping) {
            s->skipping = false;
        } else if (len > 0) {
            json_error_t err;
            json_t *msg = json_loadb(s->in + start, len, JSON_DECODE_ANY, &err);
            if (msg)
                on_message(s, msg);
            else
                send_error(s, NULL, RPC_PARSE_ERROR, "Parse error: %s at column %d", err.text,
                           err.column);
        }
        start = scan_from = end + 1;
    }
    memmove(s->in, s->in + start, s->in_len - start);
    s->in_len -= start;
    if (s->in_len > MCP_MAX_LINE) {
        if (!s->skipping)
            send_error(s, NULL, RPC_PARSE_ERROR, "a message longer than %zu MiB was dropped",
                       MCP_MAX_LINE >> 20);
        s->skipping = true;
        s->in_len = 0;
    }
}

/* Reads what stdin has (it polled readable: one read does not block). */
static void read_stdin(mcp_server *s)
{
    if (s->in_cap - s->in_len < STDIN_CHUNK) {
        size_t cap = s->in_cap ? s->in_cap * 2 : STDIN_CHUNK * 2;
        char *b = realloc(s->in, cap);
        if (!b) {
            fprintf(stderr, "loomctl mcp: out of memory reading from the client\n");
            s->in_eof = true;
            return;
        }
        s->in = b;
        s->in_cap = cap;
    }
    ssize_t n = read(STDIN_FILENO, s->in + s->in_len, s->in_cap - s->in_len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        if (n < 0)
            fprintf(stderr, "loomctl mcp: cannot read from the client: %s\n", strerror(errno));
        s->in_eof = true;
        return;
    }
    size_t from = s->in_len;
    s->in_len += (size_t)n;
    take_lines(s, from);
}

/* The client is gone: the jobs it was waiting for are cancelled, since
 * their answers can reach nobody. Each cancel is waited for, so loomd has
 * taken it before the connection closes. */
static void cancel_all(mcp_server *s)
{
    for (mcp_call *c = s->calls; c; c = c->next) {
        if (c->cancelled)
            continue;
        fprintf(stderr, "loomctl mcp: the client left: cancelling job %s of %s\n", c->job,
                c->workflow);
        json_t *req = json_pack("{s:s, s:s}", "op", "cancel", "job", c->job), *reply = NULL;
        if (req)
            loomctl_request(c->conn, req, s->timeout_ms, NULL, NULL, &reply);
        json_decref(req);
        json_decref(reply);
    }
}

static int serve(mcp_server *s)
{
    struct pollfd *fds = NULL;
    mcp_call **owners = NULL;
    size_t cap = 0;
    int rc = LOOMCTL_OK;
    while (!s->in_eof && !s->out_failed) {
        if (cap < s->ncalls + 1) {
            size_t want = (s->ncalls + 1) * 2;
            struct pollfd *f = realloc(fds, want * sizeof *fds);
            if (f)
                fds = f;
            mcp_call **o = f ? realloc(owners, want * sizeof *owners) : NULL;
            if (o)
                owners = o;
            if (!f || !o) {
                fprintf(stderr, "loomctl mcp: out of memory\n");
                rc = LOOMCTL_FAILED;
                break;
            }
            cap = want;
        }
        size_t n = 0;
        fds[n++] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
        for (mcp_call *c = s->calls; c; c = c->next) {
            owners[n] = c;
            fds[n++] = (struct pollfd){ .fd = loomctl_conn_fd(c->conn), .events = POLLIN };
        }
        if (poll(fds, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "loomctl mcp: poll: %s\n", strerror(errno));
            rc = LOOMCTL_FAILED;
            break;
        }
        /* calls first: a message read from stdin may end or add calls */
        for (size_t i = 1; i < n; i++) {
            if (!fds[i].revents)
                continue;
            mcp_call *c = owners[i];
            if (!drain_call(s, c))
                continue;
            for (mcp_call **p = &s->calls; *p; p = &(*p)->next)
                if (*p == c) {
                    *p = c->next;
                    break;
                }
            s->ncalls--;
            call_free(c);
        }
        if (fds[0].revents)
            read_stdin(s);
    }
    cancel_all(s);
    free(fds);
    free(owners);
    return rc;
}

int loomctl_cmd_mcp(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("mcp");
    const char *socket = NULL, *timeout_text = NULL;
    const loomctl_option opts[] = {
        { "socket", 0, &socket, NULL },
        { "timeout", 0, &timeout_text, NULL },
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop)
        return loomctl_usage_error(self, "unexpected argument '%s'", argv[1]);
    mcp_server s = { .socket = loomctl_socket_path(socket), .timeout_ms = LOOMCTL_REPLY_TIMEOUT_MS };
    if (timeout_text && loomctl_parse_seconds(timeout_text, &s.timeout_ms) < 0)
        return loomctl_usage_error(self, "--timeout takes a number of seconds");
    /* a client that closed its end is seen as a failed write, not a signal */
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "loomctl mcp: serving the workflows of loomd on %s over stdio\n", s.socket);
    rc = serve(&s);
    while (s.calls) {
        mcp_call *c = s.calls;
        s.calls = c->next;
        call_free(c);
    }
    free(s.in);
    return rc;
}
