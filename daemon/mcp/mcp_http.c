/* mcp_http.c -- Streamable HTTP MCP servers: each message a POST to the
 * server's URL through the reactor's HTTP client, the answer JSON or an SSE
 * stream of messages (read whole when the POST ends: the server closes the
 * stream after its response), the session id and protocol version headers,
 * and a new session when the server forgets ours (404). The GET stream for
 * messages the server sends on its own is not opened: its tool list is read
 * at each session's start. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/mcp/mcp_internal.h"

struct mcp_post {
    list_link link;            /* in the server's posts */
    mcp_server *srv;
    mcp_req_t *req;            /* the request it carries, or NULL */
    http_call_t *call;
};

#define CONNECT_MS 10000

static int add_header(loom_http_request *hr, const char *name, const char *value)
{
    loom_header *h = realloc(hr->headers, (hr->nheaders + 1) * sizeof *h);
    if (!h)
        return -1;
    hr->headers = h;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    h[hr->nheaders].name = n;
    h[hr->nheaders].value = v;
    hr->nheaders++;
    return 0;
}

/* A configured "Name: value" header. */
static int add_config_header(loom_http_request *hr, const char *line)
{
    const char *colon = strchr(line, ':');
    if (!colon)
        return 0;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(colon - line), line);
    const char *v = colon + 1;
    while (*v == ' ')
        v++;
    return add_header(hr, name, v);
}

static const char *header(const http_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

static void post_free(mcp_post *p)
{
    if (list_linked(&p->link))
        list_del(&p->link);
    if (p->req)
        p->req->post = NULL;
    free(p);
}

/* Hands every message of an SSE body to the session. */
static void take_sse(mcp_server *s, const char *body, size_t len)
{
    sbuf data;
    sbuf_init(&data, 0);
    const char *p = body, *end = body + len;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0) { /* the end of an event */
            if (data.n && !data.failed) {
                json_t *msg = json_loadb(data.p, data.n, 0, NULL);
                if (msg)
                    mcp_session_message(s, msg);
                json_decref(msg);
            }
            sbuf_reset(&data);
        } else if (n >= 5 && strncmp(p, "data:", 5) == 0) {
            const char *v = p + 5;
            size_t vn = n - 5;
            if (vn && *v == ' ') {
                v++;
                vn--;
            }
            if (data.n)
                sbuf_addc(&data, '\n');
            sbuf_add(&data, v, vn);
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    if (data.n && !data.failed) {
        json_t *msg = json_loadb(data.p, data.n, 0, NULL);
        if (msg)
            mcp_session_message(s, msg);
        json_decref(msg);
    }
    sbuf_free(&data);
}

static void take_json(mcp_server *s, const char *body, size_t len)
{
    json_t *v = json_loadb(body, len, 0, NULL);
    if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) mcp_session_message(s, m);
    } else if (v) {
        mcp_session_message(s, v);
    }
    json_decref(v);
}

/* Whether a request with ID is still waiting for its answer. */
static mcp_req_t *still_pending(mcp_server *s, json_int_t id)
{
    for (list_link *l = s->pending.next; l != &s->pending; l = l->next) {
        mcp_req_t *q = LIST_OWNER(l, mcp_req_t, link);
        if (q->id == id)
            return q;
    }
    return NULL;
}

static void on_done(http_call_t *call, const http_response *resp, void *ud)
{
    mcp_post *p = ud;
    mcp_server *s = p->srv;
    mcp_req_t *req = p->req;
    json_int_t id = req ? req->id : 0;
    bool init = req && req->kind == REQ_INIT;
    char m[512];
    post_free(p);
    if (resp->outcome != HTTP_OK) {
        snprintf(m, sizeof m, "MCP server %s: %s", s->name, resp->error ? resp->error : "no answer");
        if (req)
            mcp_req_failed(req, "upstream", m);
        return;
    }
    if (resp->status == 404 && s->session) {
        mcp_session_lost(s, "it forgot our session (HTTP 404)");
        return;
    }
    if (resp->status < 200 || resp->status > 299) {
        snprintf(m, sizeof m, "MCP server %s answered HTTP %d: %.200s", s->name, resp->status,
                 resp->body ? resp->body : "");
        if (req)
            mcp_req_failed(req, "upstream", m);
        return;
    }
    const char *sid = header(resp, "mcp-session-id");
    if (init && sid && *sid) {
        free(s->session);
        s->session = strdup(sid);
    }
    const char *ct = header(resp, "content-type");
    if (resp->body_len) {
        if (ct && strncasecmp(ct, "text/event-stream", 17) == 0)
            take_sse(s, resp->body, resp->body_len);
        else
            take_json(s, resp->body, resp->body_len);
    }
    if (id && (req = still_pending(s, id)) && !req->post) {
        snprintf(m, sizeof m, "MCP server %s answered HTTP %d without a response to the request",
                 s->name, resp->status);
        mcp_req_failed(req, "upstream", m);
    }
}

int mcp_http_send(mcp_server *s, json_t *msg, mcp_req_t *req)
{
    loom_http_request hr = { 0 };
    mcp_post *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    list_init(&p->link);
    hr.method = strdup("POST");
    hr.url = strdup(s->url);
    hr.body = json_dumps(msg, JSON_COMPACT);
    if (!hr.method || !hr.url || !hr.body)
        goto fail;
    hr.body_len = strlen(hr.body);
    if (add_header(&hr, "Content-Type", "application/json") < 0 ||
        add_header(&hr, "Accept", "application/json, text/event-stream") < 0 ||
        (s->session && add_header(&hr, "MCP-Session-Id", s->session) < 0) ||
        (s->proto[0] && !(req && req->kind == REQ_INIT) &&
         add_header(&hr, "MCP-Protocol-Version", s->proto) < 0))
        goto fail;
    for (size_t i = 0; s->headers && s->headers[i]; i++)
        if (add_config_header(&hr, s->headers[i]) < 0)
            goto fail;
    /* a request's own timer ends it; the total bounds a notification */
    http_call_opts o = { .connect_ms = CONNECT_MS,
                         .total_ms = (req ? req->timeout_ms : s->timeout_ms) + 1000 };
    p->srv = s;
    p->req = req;
    if (!(p->call = http_call(s->m->http, &hr, &o, on_done, p))) {
        http_request_free(&hr);
        free(p);
        return -1;
    }
    list_add_tail(&s->posts, &p->link);
    if (req)
        req->post = p;
    return 0;
fail:
    http_request_free(&hr);
    free(p);
    return -1;
}

void mcp_http_abandon(mcp_req_t *req)
{
    mcp_post *p = req->post;
    if (!p)
        return;
    http_cancel(p->call);
    post_free(p);
}

void mcp_http_drop_all(mcp_server *s)
{
    while (!list_empty(&s->posts)) {
        mcp_post *p = LIST_OWNER(s->posts.next, mcp_post, link);
        http_cancel(p->call);
        post_free(p);
    }
}

void mcp_http_start(mcp_server *s)
{
    free(s->session);
    s->session = NULL;
    mcp_session_start(s);
}
