/* mcp.c -- the MCP session over either transport: initialize, the tool
 * list (every page, again on list_changed), tools/call with its timeout and
 * cancellation, the server's own requests, and the restart of a server
 * that is gone. The transports (mcp_stdio.c, mcp_http.c) only carry
 * messages and say when the server is lost. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/mcp/mcp_internal.h"

/* The versions loom speaks, newest first: the first is asked for, and the
 * server may answer with any of them. */
static const char *const versions[] = { MCP_PROTOCOL_VERSION, "2025-06-18", "2025-03-26",
                                        "2024-11-05", NULL };

static const char *const methods[] = { [REQ_INIT] = "initialize", [REQ_LIST] = "tools/list",
                                       [REQ_CALL] = "tools/call" };

static void restart_fired(reactor_t *r, reactor_timer_t *t, void *ud);

static mcp_server *find(const mcp_t *m, const char *name)
{
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
        mcp_server *s = LIST_OWNER(l, mcp_server, link);
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static void req_free(mcp_req_t *q);

/* Sends MSG (borrowed) over S's transport; REQ is the request it carries
 * (NULL: a notification or a reply). 0 or -1. */
static int send_msg(mcp_server *s, json_t *msg, mcp_req_t *req)
{
    if (!msg)
        return -1;
    if (s->http)
        return mcp_http_send(s, msg, req);
    /* compact JSON escapes every control character: one message, one line */
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return -1;
    int rc = mcp_stdio_send(s, text, strlen(text));
    free(text);
    return rc;
}

static void notify(mcp_server *s, const char *method, json_t *params)
{
    json_t *msg = params ? json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params",
                                     params)
                         : json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    if (send_msg(s, msg, NULL) < 0)
        MCP_LOG(s, LOOM_LOG_WARN, json_pack("{s:s, s:s}", "mcp", s->name, "method", method),
                "MCP server %s: could not send %s", s->name, method);
    json_decref(msg);
}

static void reply(mcp_server *s, json_t *id, json_t *result, int code, const char *message)
{
    json_t *msg = result ? json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result)
                         : json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error",
                                     "code", code, "message", message);
    send_msg(s, msg, NULL);
    json_decref(msg);
}

static void timer_fired(reactor_t *r, reactor_timer_t *t, void *ud);

/* Sends Q, which waited in no list or in the queue: an id, the pending
 * list, its timer. 0 or -1 (Q untouched but for its id). */
static int send_req(mcp_server *s, mcp_req_t *q)
{
    q->id = ++s->next_id;
    json_t *msg = json_pack("{s:s, s:I, s:s, s:O}", "jsonrpc", "2.0", "id", (json_int_t)q->id,
                            "method", methods[q->kind], "params", q->params);
    if (!q->timer &&
        !(q->timer = reactor_timer_add(s->m->r, q->timeout_ms * REACTOR_MSEC, timer_fired, q))) {
        json_decref(msg);
        return -1;
    }
    if (list_linked(&q->link))
        list_del(&q->link);
    list_add_tail(&s->pending, &q->link);
    int rc = send_msg(s, msg, q);
    json_decref(msg);
    if (rc < 0) {
        list_del(&q->link);
        return -1;
    }
    return 0;
}

static mcp_req_t *req_new(mcp_server *s, enum mcp_kind kind, json_t *params)
{
    mcp_req_t *q = calloc(1, sizeof *q);
    if (!q) {
        json_decref(params);
        return NULL;
    }
    list_init(&q->link);
    q->srv = s;
    q->kind = kind;
    q->params = params;
    q->timeout_ms = s->timeout_ms;
    if (!params) {
        free(q);
        return NULL;
    }
    return q;
}

static void req_free(mcp_req_t *q)
{
    if (q->timer)
        reactor_timer_cancel(q->srv->m->r, q->timer);
    if (q->post)
        mcp_http_abandon(q);
    if (list_linked(&q->link))
        list_del(&q->link);
    json_decref(q->params);
    free(q->tool);
    free(q->late_msg);
    free(q);
}

/* Ends call Q: DONE gets RESULT (stolen) or CODE and MESSAGE. */
static void call_end(mcp_req_t *q, json_t *result, const char *code, const char *message)
{
    mcp_server *s = q->srv;
    mcp_done_fn done = q->done;
    void *ud = q->ud;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", message ? message : "");
    if (!result || json_is_true(json_object_get(result, "isError")))
        s->failed++;
    q->done = NULL;
    req_free(q);
    if (done)
        done(ud, result, result ? NULL : code, result ? NULL : msg);
    else
        json_decref(result);
}

/* ---- the tool list */

static void set_ready(mcp_server *s)
{
    if (s->state == MCP_READY)
        return;
    s->state = MCP_READY;
    s->why[0] = '\0';
    MCP_LOG(s, LOOM_LOG_INFO,
            json_pack("{s:s, s:s, s:I}", "mcp", s->name, "protocol", s->proto, "tools",
                      (json_int_t)json_array_size(s->tools)),
            "MCP server %s is ready: %zu tool%s (protocol %s)", s->name, json_array_size(s->tools),
            json_array_size(s->tools) == 1 ? "" : "s", s->proto);
}

static void list_page(mcp_server *s, const char *cursor)
{
    mcp_req_t *q = req_new(s, REQ_LIST, cursor ? json_pack("{s:s}", "cursor", cursor) : json_object());
    if (q && send_req(s, q) == 0)
        return;
    if (q)
        req_free(q);
    json_decref(s->listing);
    s->listing = NULL;
    MCP_LOG(s, LOOM_LOG_ERROR, json_pack("{s:s}", "mcp", s->name),
            "MCP server %s: out of memory listing its tools", s->name);
}

static void list_start(mcp_server *s)
{
    if (s->listing) { /* the list on its way may predate the change */
        s->relist = true;
        return;
    }
    if (!(s->listing = json_array()))
        return;
    list_page(s, NULL);
}

static void list_answer(mcp_server *s, json_t *result, json_t *error)
{
    if (!s->listing)
        return;
    json_t *tools = json_object_get(result, "tools");
    if (error || !json_is_array(tools)) {
        json_decref(s->listing);
        s->listing = NULL;
        s->relist = false;
        MCP_LOG(s, LOOM_LOG_WARN, json_pack("{s:s}", "mcp", s->name),
                "MCP server %s: tools/list failed: %s", s->name,
                error ? json_string_value(json_object_get(error, "message")) ?: "an error"
                      : "no tools array in the answer");
        if (!s->tools)
            s->tools = json_array();
        if (s->tools)
            set_ready(s);
        return;
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        /* a tool without a name cannot be called: not offered */
        if (json_is_object(t) && json_is_string(json_object_get(t, "name")))
            json_array_append(s->listing, t);
    }
    const char *cursor = json_string_value(json_object_get(result, "nextCursor"));
    if (cursor && *cursor) {
        list_page(s, cursor);
        return;
    }
    json_decref(s->tools);
    s->tools = s->listing;
    s->listing = NULL;
    if (s->state == MCP_READY)
        MCP_LOG(s, LOOM_LOG_INFO,
                json_pack("{s:s, s:I}", "mcp", s->name, "tools", (json_int_t)json_array_size(s->tools)),
                "MCP server %s: its tools changed: %zu now", s->name, json_array_size(s->tools));
    set_ready(s);
    if (s->relist) {
        s->relist = false;
        list_start(s);
    }
}

/* ---- the session */

void mcp_session_start(mcp_server *s)
{
    s->initialized = false;
    s->state = MCP_STARTING;
    s->started_us = reactor_now_us(s->m->r);
    if (s->starts++ > 0)
        s->restarts++;
    json_t *params = json_pack("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion",
                               MCP_PROTOCOL_VERSION, "capabilities", "clientInfo", "name", "loom",
                               "version", s->m->version);
    mcp_req_t *q = req_new(s, REQ_INIT, params);
    if (!q || send_req(s, q) < 0) {
        if (q)
            req_free(q);
        mcp_session_lost(s, "out of memory sending initialize");
    }
}

static void init_answer(mcp_server *s, json_t *result, json_t *error)
{
    char why[300];
    const char *v = json_string_value(json_object_get(result, "protocolVersion"));
    if (error || !v) {
        snprintf(why, sizeof why, "initialize failed: %s",
                 error ? json_string_value(json_object_get(error, "message")) ?: "an error"
                       : "no protocolVersion in the answer");
        goto lost;
    }
    size_t k = 0;
    while (versions[k] && strcmp(versions[k], v) != 0)
        k++;
    if (!versions[k]) {
        snprintf(why, sizeof why, "it speaks MCP %.40s, which loom does not (it speaks %s to %s)",
                 v, versions[3], versions[0]);
        goto lost;
    }
    snprintf(s->proto, sizeof s->proto, "%s", v);
    s->has_tools = json_is_object(json_object_get(json_object_get(result, "capabilities"), "tools"));
    json_t *info = json_object_get(result, "serverInfo");
    MCP_LOG(s, LOOM_LOG_DEBUG,
            json_pack("{s:s, s:s?, s:s?}", "mcp", s->name, "server",
                      json_string_value(json_object_get(info, "name")), "version",
                      json_string_value(json_object_get(info, "version"))),
            "MCP server %s initialized", s->name);
    notify(s, "notifications/initialized", NULL);
    s->initialized = true;
    /* calls made while it started go now, in order */
    while (!list_empty(&s->queue)) {
        mcp_req_t *q = LIST_OWNER(s->queue.next, mcp_req_t, link);
        list_del(&q->link);
        if (send_req(s, q) < 0)
            call_end(q, NULL, "upstream", "out of memory sending the call");
    }
    if (s->has_tools) {
        list_start(s);
    } else {
        json_decref(s->tools);
        s->tools = json_array();
        set_ready(s);
    }
    return;
lost:
    if (s->http)
        mcp_session_lost(s, why);
    else
        mcp_stdio_kill(s, why);
}

static mcp_req_t *pending_req(mcp_server *s, json_t *id)
{
    if (!json_is_integer(id))
        return NULL;
    for (list_link *l = s->pending.next; l != &s->pending; l = l->next) {
        mcp_req_t *q = LIST_OWNER(l, mcp_req_t, link);
        if (q->id == json_integer_value(id))
            return q;
    }
    return NULL;
}

static void on_response(mcp_server *s, json_t *msg)
{
    mcp_req_t *q = pending_req(s, json_object_get(msg, "id"));
    if (!q)
        return; /* an answer to a request given up on: dropped, as the spec says */
    json_t *result = json_object_get(msg, "result");
    json_t *error = json_object_get(msg, "error");
    if (!json_is_object(error))
        error = NULL;
    if (!error && !json_is_object(result))
        error = json_pack("{s:i, s:s}", "code", -32603, "message", "an answer with no result");
    else
        json_incref(error);
    switch (q->kind) {
    case REQ_INIT:
        req_free(q);
        init_answer(s, result, error);
        break;
    case REQ_LIST:
        req_free(q);
        list_answer(s, result, error);
        break;
    case REQ_CALL:
        if (error) {
            char m[400];
            snprintf(m, sizeof m, "MCP server %s: tool %s: error %lld: %s", s->name, q->tool,
                     (long long)json_integer_value(json_object_get(error, "code")),
                     json_string_value(json_object_get(error, "message")) ?: "(no message)");
            call_end(q, NULL, "upstream", m);
        } else {
            call_end(q, json_incref(result), NULL, NULL);
        }
        break;
    }
    json_decref(error);
}

void mcp_session_message(mcp_server *s, json_t *msg)
{
    if (!json_is_object(msg)) {
        MCP_LOG(s, LOOM_LOG_WARN, json_pack("{s:s}", "mcp", s->name),
                "MCP server %s sent something other than a JSON-RPC message: ignored", s->name);
        return;
    }
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    if (!method) {
        on_response(s, msg);
        return;
    }
    if (id && !json_is_null(id)) { /* a request of the server's */
        if (strcmp(method, "ping") == 0) {
            json_t *empty = json_object();
            if (empty)
                reply(s, id, empty, 0, NULL); /* stolen */
        } else {
            char m[200];
            snprintf(m, sizeof m, "method not found: %.100s", method);
            reply(s, id, NULL, -32601, m);
        }
        return;
    }
    if (strcmp(method, "notifications/tools/list_changed") == 0) {
        if (s->initialized && s->has_tools)
            list_start(s);
    } else if (strcmp(method, "notifications/message") == 0) {
        json_t *p = json_object_get(msg, "params");
        char *data = json_dumps(json_object_get(p, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
        MCP_LOG(s, LOOM_LOG_DEBUG, json_pack("{s:s}", "mcp", s->name), "MCP server %s says: %s",
                s->name, data ? data : "?");
        free(data);
    }
    /* progress and anything else: nothing to do */
}

static const char *state_name(enum mcp_state st)
{
    switch (st) {
    case MCP_STARTING: return "starting";
    case MCP_READY: return "ready";
    case MCP_RESTARTING: return "restarting";
    }
    return "?";
}

void mcp_session_lost(mcp_server *s, const char *why)
{
    mcp_t *m = s->m;
    bool was_initialized = s->initialized;
    if (why && why != s->why)
        snprintf(s->why, sizeof s->why, "%s", why);
    s->initialized = false;
    s->state = MCP_RESTARTING;
    json_decref(s->listing);
    s->listing = NULL;
    s->relist = false;
    free(s->session);
    s->session = NULL;
    if (s->http)
        mcp_http_drop_all(s);
    char msg[400];
    snprintf(msg, sizeof msg, "MCP server %s is gone: %s", s->name, s->why);
    while (!list_empty(&s->pending)) {
        mcp_req_t *q = LIST_OWNER(s->pending.next, mcp_req_t, link);
        if (q->kind == REQ_CALL)
            call_end(q, NULL, "upstream", msg);
        else
            req_free(q);
    }
    /* a server that never came up fails the calls waiting for it, rather
     * than holding them until their timeouts */
    if (!was_initialized) {
        snprintf(msg, sizeof msg, "MCP server %s cannot start: %s", s->name, s->why);
        while (!list_empty(&s->queue))
            call_end(LIST_OWNER(s->queue.next, mcp_req_t, link), NULL, "upstream", msg);
    }
    uint64_t now = reactor_now_us(m->r);
    s->backoff_ms = !s->backoff_ms || now - s->started_us >= MCP_HEALTHY_US
                        ? MCP_BACKOFF_FIRST_MS
                        : (s->backoff_ms * 2 > MCP_BACKOFF_MAX_MS ? MCP_BACKOFF_MAX_MS
                                                                   : s->backoff_ms * 2);
    MCP_LOG(s, LOOM_LOG_ERROR,
            json_pack("{s:s, s:s, s:I}", "mcp", s->name, "reason", s->why, "restart_ms",
                      (json_int_t)s->backoff_ms),
            "MCP server %s %s: %s: starting it again in %llu ms", s->name,
            was_initialized ? "is gone" : "did not start", s->why,
            (unsigned long long)s->backoff_ms);
    if (s->restart)
        reactor_timer_cancel(m->r, s->restart);
    if (!(s->restart = reactor_timer_add(m->r, s->backoff_ms * REACTOR_MSEC, restart_fired, s)))
        MCP_LOG(s, LOOM_LOG_ERROR, json_pack("{s:s}", "mcp", s->name),
                "MCP server %s: out of memory: not started again", s->name);
}

void mcp_req_failed(mcp_req_t *q, const char *code, const char *message)
{
    mcp_server *s = q->srv;
    switch (q->kind) {
    case REQ_INIT:
        req_free(q);
        mcp_session_lost(s, message);
        break;
    case REQ_LIST:
        req_free(q);
        {
            json_t *err = json_pack("{s:s}", "message", message);
            list_answer(s, NULL, err);
            json_decref(err);
        }
        break;
    case REQ_CALL:
        call_end(q, NULL, code, message);
        break;
    }
}

static void restart_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    mcp_server *s = ud;
    s->restart = NULL;
    if (s->http)
        mcp_http_start(s);
    else
        mcp_stdio_spawn(s);
}

/* A timeout, or the failure of a call told on the pass after mcp_call. */
static void timer_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    mcp_req_t *q = ud;
    mcp_server *s = q->srv;
    char m[400];
    q->timer = NULL;
    if (q->late_code) {
        snprintf(m, sizeof m, "%s", q->late_msg ? q->late_msg : "");
        call_end(q, NULL, q->late_code, m);
        return;
    }
    switch (q->kind) {
    case REQ_INIT:
        snprintf(m, sizeof m, "it did not answer initialize within %llu ms",
                 (unsigned long long)q->timeout_ms);
        req_free(q);
        if (s->http)
            mcp_session_lost(s, m);
        else
            mcp_stdio_kill(s, m);
        break;
    case REQ_LIST:
        snprintf(m, sizeof m, "no answer within %llu ms", (unsigned long long)q->timeout_ms);
        req_free(q);
        {
            json_t *err = json_pack("{s:s}", "message", m);
            list_answer(s, NULL, err);
            json_decref(err);
        }
        break;
    case REQ_CALL:
        if (q->id && list_linked(&q->link) && s->initialized)
            notify(s, "notifications/cancelled",
                   json_pack("{s:I, s:s}", "requestId", (json_int_t)q->id, "reason", "timed out"));
        snprintf(m, sizeof m, "MCP server %s: tool %s did not answer within %llu ms", s->name,
                 q->tool, (unsigned long long)q->timeout_ms);
        call_end(q, NULL, "timeout", m);
        break;
    }
}

/* ---- the public side */

mcp_t *mcp_new(reactor_t *r, mcp_log_fn log, void *log_ud, const char *version)
{
    mcp_t *m = calloc(1, sizeof *m);
    if (!m || !(m->version = strdup(version ? version : "0"))) {
        free(m);
        errno = ENOMEM;
        return NULL;
    }
    m->r = r;
    m->log = log;
    m->log_ud = log_ud;
    list_init(&m->servers);
    return m;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* A copy of the NULL-terminated V into *OUT (NULL stays NULL). 0 or -1. */
static int strv_dup(const char *const *v, char ***out)
{
    *out = NULL;
    if (!v)
        return 0;
    size_t n = 0;
    while (v[n])
        n++;
    char **c = calloc(n + 1, sizeof *c);
    if (!c)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(c[i] = strdup(v[i]))) {
            strv_free(c);
            return -1;
        }
    *out = c;
    return 0;
}

static void server_free(mcp_server *s)
{
    mcp_t *m = s->m;
    while (!list_empty(&s->pending))
        req_free(LIST_OWNER(s->pending.next, mcp_req_t, link));
    while (!list_empty(&s->queue))
        req_free(LIST_OWNER(s->queue.next, mcp_req_t, link));
    if (s->http)
        mcp_http_drop_all(s);
    else
        mcp_stdio_close(s);
    if (s->restart)
        reactor_timer_cancel(m->r, s->restart);
    json_decref(s->tools);
    json_decref(s->listing);
    free(s->name);
    strv_free(s->argv);
    strv_free(s->env);
    strv_free(s->headers);
    free(s->url);
    free(s->session);
    free(s);
}

void mcp_free(mcp_t *m)
{
    if (!m)
        return;
    mcp_stdio_stop_all(m);
    while (!list_empty(&m->servers)) {
        mcp_server *s = LIST_OWNER(m->servers.next, mcp_server, link);
        list_del(&s->link);
        server_free(s);
    }
    http_client_free(m->http);
    free(m->version);
    free(m);
}

int mcp_add_server(mcp_t *m, const mcp_server_opts *o)
{
    if (!o->name || !*o->name || !o->argv == !o->url || (o->argv && !o->argv[0]))
        return -EINVAL;
    if (find(m, o->name))
        return -EEXIST;
    if (o->url && !m->http && !(m->http = http_client_new(m->r, NULL)))
        return -ENOMEM;
    mcp_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->m = m;
    list_init(&s->pending);
    list_init(&s->queue);
    list_init(&s->posts);
    s->in_fd = s->out_fd = s->err_fd = s->pidfd = -1;
    sbuf_init(&s->rd, 0);
    sbuf_init(&s->wr, 0);
    sbuf_init(&s->errline, 0);
    s->http = o->url != NULL;
    s->timeout_ms = o->timeout_ms ? o->timeout_ms : MCP_DEFAULT_TIMEOUT_MS;
    if (!(s->name = strdup(o->name)) || strv_dup(o->argv, &s->argv) < 0 ||
        strv_dup(o->env, &s->env) < 0 || strv_dup(o->headers, &s->headers) < 0 ||
        (o->url && !(s->url = strdup(o->url)))) {
        server_free(s);
        return -ENOMEM;
    }
    list_add_tail(&m->servers, &s->link);
    if (s->http)
        mcp_http_start(s);
    else
        mcp_stdio_spawn(s);
    return 0;
}

json_t *mcp_tools(mcp_t *m, const char *server, char *err, size_t errlen)
{
    mcp_server *s = find(m, server);
    if (!s) {
        snprintf(err, errlen, "no MCP server named '%s' in the config", server);
        return NULL;
    }
    if (!s->tools) {
        snprintf(err, errlen, "MCP server '%s' has not listed its tools yet%s%s", server,
                 s->why[0] ? ": " : "", s->why);
        return NULL;
    }
    return json_incref(s->tools);
}

static bool has_tool(const mcp_server *s, const char *tool)
{
    size_t i;
    json_t *t;
    json_array_foreach(s->tools, i, t) {
        if (strcmp(json_string_value(json_object_get(t, "name")), tool) == 0)
            return true;
    }
    return false;
}

mcp_call_t *mcp_call(mcp_t *m, const char *server, const char *tool, json_t *args,
                     uint64_t timeout_ms, mcp_done_fn done, void *ud, char *err, size_t errlen)
{
    mcp_server *s = find(m, server);
    if (!s) {
        snprintf(err, errlen, "no MCP server named '%s' in the config", server);
        return NULL;
    }
    json_t *params = json_pack("{s:s, s:o}", "name", tool, "arguments",
                               args ? json_incref(args) : json_object());
    mcp_req_t *q = req_new(s, REQ_CALL, params);
    if (!q || !(q->tool = strdup(tool))) {
        if (q)
            req_free(q);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->done = done;
    q->ud = ud;
    if (timeout_ms)
        q->timeout_ms = timeout_ms;
    s->calls++;
    if (s->tools && !has_tool(s, tool)) {
        q->late_code = "invalid_request";
        if (asprintf(&q->late_msg, "MCP server %s has no tool '%s'", s->name, tool) < 0)
            q->late_msg = NULL;
    }
    if (!q->late_code && s->initialized && send_req(s, q) == 0)
        return q;
    if (!q->late_code && !s->initialized) {
        q->timer = reactor_timer_add(m->r, q->timeout_ms * REACTOR_MSEC, timer_fired, q);
        if (q->timer) {
            list_add_tail(&s->queue, &q->link);
            return q;
        }
    }
    if (!q->late_code)
        q->late_code = "upstream";
    if (q->timer)
        reactor_timer_cancel(m->r, q->timer);
    if (!(q->timer = reactor_timer_add(m->r, 0, timer_fired, q))) {
        s->calls--;
        req_free(q);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return q;
}

void mcp_cancel(mcp_call_t *q)
{
    if (!q)
        return;
    mcp_server *s = q->srv;
    if (q->id && list_linked(&q->link) && !q->late_code && s->initialized)
        notify(s, "notifications/cancelled",
               json_pack("{s:I, s:s}", "requestId", (json_int_t)q->id, "reason", "cancelled"));
    req_free(q);
}

json_t *mcp_stats_json(const mcp_t *m)
{
    json_t *o = json_object();
    if (!o || !m)
        return o;
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
        const mcp_server *s = LIST_OWNER(l, mcp_server, link);
        json_t *e = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "state", state_name(s->state),
                              "transport", s->http ? "http" : "stdio", "tools",
                              (json_int_t)json_array_size(s->tools), "calls", (json_int_t)s->calls,
                              "failed", (json_int_t)s->failed, "restarts",
                              (json_int_t)s->restarts);
        if (!e || json_object_set_new(o, s->name, e) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

size_t mcp_ready_count(const mcp_t *m)
{
    size_t n = 0;
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next)
        n += LIST_OWNER(l, mcp_server, link)->state == MCP_READY;
    return n;
}
