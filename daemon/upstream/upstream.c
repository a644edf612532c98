/* upstream.c -- calls to one provider: limiter, then encode, send, decode
 * (HTTP) or a transport's send, then the answer's effect on the limiter.
 *
 * The token estimate reserved before a request is the encoded body's bytes
 * / 4 (a prompt's JSON is longer than its tokens, so this errs high) plus
 * max_tokens, which providers also reserve up front; the response's usage
 * then corrects it. A transport's request has no body: its messages' (or
 * inputs') compact JSON stands in for it. An error's class comes from the
 * plugin's decode (or the transport); HTTP's own failures are classed here:
 * timeouts as `timeout`, everything else as `upstream` (retryable). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/upstream/upstream_internal.h"

#define DEFAULT_RATE_LIMIT_WAITS 10
#define DEFAULT_429_PAUSE_MS 1000

/* ---- the plugin's context for encode, decode and stream (uctx:
 * upstream_internal.h) */

static uctx *uctx_of(loom_ctx *ctx)
{
    return (uctx *)(void *)((char *)ctx - offsetof(uctx, base));
}

static void u_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    uctx *c = uctx_of(ctx);
    c->failed = true;
    c->code = code;
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
}

static void u_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    const upstream_t *u = uctx_of(ctx)->u;
    if (u->log)
        u->log(u->log_ud, level, fmt, ap);
}

static void u_retry_after(loom_ctx *ctx, uint64_t ms)
{
    uctx *c = uctx_of(ctx);
    c->has_ra = true;
    c->ra_ms = rl_cap_wait_ms(ms);
}

/* encode and decode have no call handle, deadline or cancellation: the
 * entries for those do nothing (they are set so no plugin jumps through
 * NULL). */
static void u_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    json_decref(output);
}
static void u_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage)
{
    json_decref(output);
    json_decref(tool_calls);
}
static void u_fail(loom_call *call, loom_errcode code, const char *message) { }
static void u_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message) { }
static void *u_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    return NULL;
}
static void u_timer_cancel(loom_call *call, void *timer) { }
static uint64_t u_deadline_ms(loom_ctx *ctx) { return 0; }
static int u_cancelled(loom_ctx *ctx) { return 0; }
static void u_call_vlog(loom_call *call, int level, const char *fmt, va_list ap) { }

static const loom_host_api u_api = {
    .verror = u_verror, .vlog = u_vlog, .retry_after = u_retry_after,
    .complete = u_complete, .fail = u_fail, .timer_add = u_timer_add,
    .timer_cancel = u_timer_cancel, .fail_after = u_fail_after,
    .deadline_ms = u_deadline_ms, .cancelled = u_cancelled, .call_vlog = u_call_vlog,
    .complete_tools = u_complete_tools,
};

void uctx_init(uctx *c, const upstream_t *u)
{
    memset(c, 0, sizeof *c);
    c->base.api = &u_api;
    c->u = u;
}

/* ---- calls */

static void call_maybe_free(upstream_call_t *c)
{
    if (!c->finished || c->pending)
        return;
    list_del(&c->link);
    json_decref(c->inputs);
    json_decref(c->vectors);
    json_decref(c->tool_calls);
    free(c->links);
    free(c->step_key);
    free(c->job);
    free(c->step);
    free(c->tenant);
    free(c);
}

static uint64_t mono_us(void);

/* Ends C (if its caller still waits) with OUTPUT (stolen) or an error. */
static void call_finish(upstream_call_t *c, json_t *output, loom_errcode code, const char *msg,
                        bool has_ra, uint64_t ra_ms)
{
    if (c->finished) {
        json_decref(output);
        return;
    }
    c->finished = true;
    upstream_result res = {
        .output = output, .usage = c->usage, .code = output ? LOOM_OK : code,
        .message = msg, .has_retry_after = has_ra, .retry_after_ms = ra_ms,
        .finish_reason = output && c->finish_reason[0] ? c->finish_reason : NULL,
        .tool_calls = output ? c->tool_calls : NULL,
    };
    uint64_t now = mono_us();
    res.wait_us = (c->first_sent_us ? c->first_sent_us : now) - c->created_us;
    res.send_us = c->sent_us ? now - c->sent_us : 0;
    res.ttft_us = c->first_token_us > c->sent_us && c->sent_us ? c->first_token_us - c->sent_us
                                                               : 0;
    if (output)
        c->u->st.succeeded++;
    else
        c->u->st.failed++;
    if (!output && code == LOOM_E_TIMEOUT)
        c->u->st.timeouts++;
    c->done(c, &res, c->ud);
}

static void on_early_end(reactor_t *r, void *ud)
{
    upstream_call_t *c = ud;
    (void)r;
    /* LOOM_OK: an embedding of nothing, answered without asking anyone */
    call_finish(c, c->early_code == LOOM_OK ? json_array() : NULL, c->early_code, c->early_msg,
                false, 0);
    call_maybe_free(c);
}

/* Ends C on a later pass with CODE (LOOM_OK: an empty list of vectors). */
void call_end_later(upstream_call_t *c, loom_errcode code, const char *msg)
{
    c->early_code = code;
    snprintf(c->early_msg, sizeof c->early_msg, "%s", msg);
    reactor_post_embedded(c->u->r, &c->post, on_early_end, c);
}

/* ---- xfers */

xfer *xfer_new(upstream_t *u, loom_call_kind kind, const char *model)
{
    xfer *x = calloc(1, sizeof *x);
    if (!x || (model && !(x->model = strdup(model)))) {
        free(x);
        return NULL;
    }
    x->u = u;
    x->kind = kind;
    list_add_head(&u->xfers, &x->link);
    return x;
}

/* Frees X, which no longer holds a ticket or an HTTP call. Parts still
 * attached are detached from their calls (which may then be freed). */
void xfer_free(xfer *x)
{
    upstream_t *u = x->u;
    if (u->open_batch == x)
        u->open_batch = NULL;
    if (x->window)
        reactor_timer_cancel(u->r, x->window);
    reactor_post_cancel(u->r, &x->post);
    for (size_t i = 0; i < x->nparts; i++) {
        upstream_call_t *c = x->parts[i].call;
        if (!c)
            continue;
        for (size_t k = 0; k < c->nlinks; k++)
            if (c->links[k].x == x && c->links[k].idx == i)
                c->links[k].x = NULL;
        c->pending--;
        call_maybe_free(c);
    }
    list_del(&x->link);
    xfer_stream_free(x);
    http_request_free(&x->enc);
    json_decref(x->messages);
    json_decref(x->params);
    json_decref(x->inputs);
    json_decref(x->tools);
    json_decref(x->schema);
    json_decref(x->tool_calls);
    free(x->schema_name);
    free(x->parts);
    free(x->model);
    free(x);
}

int xfer_add_part(xfer *x, upstream_call_t *c, size_t call_off, size_t n)
{
    if (vec_reserve(&x->parts, x->nparts, &x->pcap, sizeof *x->parts, 1) < 0 ||
        vec_reserve(&c->links, c->nlinks, &c->lcap, sizeof *c->links, 1) < 0)
        return -ENOMEM;
    x->parts[x->nparts] = (part){ .call = c, .call_off = call_off, .n = n,
                                  .batch_off = x->ninputs };
    c->links[c->nlinks++] = (plink){ .x = x, .idx = x->nparts };
    x->nparts++;
    x->ninputs += n;
    c->pending++;
    return 0;
}

/* Ends every part of X with an error, then frees X. */
static void xfer_fail(xfer *x, loom_errcode code, const char *msg, bool has_ra, uint64_t ra_ms)
{
    x->busy = true; /* a callback cancelling another part must not free X */
    for (size_t i = 0; i < x->nparts; i++)
        if (x->parts[i].call)
            call_finish(x->parts[i].call, NULL, code, msg, has_ra, ra_ms);
    xfer_free(x);
}

/* Adds V (if positive) to the running total *SUM, saturating. */
static void stat_add(int64_t *sum, int64_t v)
{
    if (v > 0)
        *sum = *sum > INT64_MAX - v ? INT64_MAX : *sum + v;
}

/* Hands each part its share of a successful answer, then frees X. */
static void xfer_deliver(xfer *x, json_t *out, const loom_usage *usage)
{
    size_t total = x->ninputs ? x->ninputs : 1;
    x->busy = true; /* a callback cancelling another part must not free X */
    for (size_t i = 0; i < x->nparts; i++) {
        part *p = &x->parts[i];
        upstream_call_t *c = p->call;
        if (!c || c->finished)
            continue;
        /* usage is shared out by inputs; a chat call has the whole of it */
        for (int k = 0; k < 4; k++) {
            int64_t v = k == 0 ? usage->input_tokens : k == 1 ? usage->output_tokens
                      : k == 2 ? usage->cache_read_tokens : usage->cache_write_tokens;
            int64_t *dst = k == 0 ? &c->usage.input_tokens : k == 1 ? &c->usage.output_tokens
                         : k == 2 ? &c->usage.cache_read_tokens : &c->usage.cache_write_tokens;
            if (v >= 0) /* v <= 2^40 and p->n <= total: no overflow */
                *dst = rl_clamp_tokens((*dst < 0 ? 0 : *dst) + v / (int64_t)total * (int64_t)p->n +
                                       v % (int64_t)total * (int64_t)p->n / (int64_t)total);
        }
        if (x->kind == LOOM_CALL_CHAT || !c->vectors) {
            c->pending--; /* this is the call's only part */
            p->call = NULL;
            memcpy(c->finish_reason, x->finish_reason, sizeof c->finish_reason);
            json_decref(c->tool_calls);
            c->tool_calls = json_incref(x->tool_calls);
            for (size_t k = 0; k < c->nlinks; k++)
                if (c->links[k].x == x && c->links[k].idx == i)
                    c->links[k].x = NULL;
            call_finish(c, json_incref(out), LOOM_OK, NULL, false, 0);
            call_maybe_free(c);
            continue;
        }
        for (size_t j = 0; j < p->n; j++)
            json_array_set(c->vectors, p->call_off + j, json_array_get(out, p->batch_off + j));
        if (c->pending == 1) { /* the last part: xfer_free below drops it */
            json_t *v = c->vectors;
            c->vectors = NULL;
            call_finish(c, v, LOOM_OK, NULL, false, 0);
        }
    }
    json_decref(out);
    xfer_free(x);
}

/* X's request. With REBUILD (before encoding), the EMBED inputs of a batch
 * are gathered from its live parts, so a withdrawn call's inputs are left
 * out; after sending they must stay as sent, for decode to match them. */
int xfer_request(xfer *x, loom_request *req, bool rebuild)
{
    memset(req, 0, sizeof *req);
    req->kind = x->kind;
    req->model = x->model;
    req->messages = x->messages;
    req->params = x->params;
    req->json_mode = x->json_mode;
    req->prompt_cache = x->prompt_cache;
    req->tools = x->tools;
    req->schema = x->schema;
    req->schema_name = x->schema_name;
    if (rebuild && x->kind == LOOM_CALL_EMBED && x->batch) {
        json_t *in = json_array();
        if (!in)
            return -ENOMEM;
        size_t off = 0;
        for (size_t i = 0; i < x->nparts; i++) {
            part *p = &x->parts[i];
            if (!p->call)
                continue;
            p->batch_off = off;
            for (size_t j = 0; j < p->n; j++)
                if (json_array_append(in, json_array_get(p->call->inputs, p->call_off + j)) < 0) {
                    json_decref(in);
                    return -ENOMEM;
                }
            off += p->n;
        }
        x->ninputs = off;
        json_decref(x->inputs);
        x->inputs = in;
    }
    req->inputs = x->inputs;
    if (rebuild) /* decided where the request is encoded, kept for its answer */
        x->want_stream = xfer_wants_stream(x);
    req->stream = x->want_stream;
    return 0;
}

static void on_grant(rl_ticket *t, void *ud);
static void on_http(http_call_t *hc, const http_response *resp, void *ud);

static bool xfer_has_live_parts(const xfer *x)
{
    for (size_t i = 0; i < x->nparts; i++)
        if (x->parts[i].call && !x->parts[i].call->finished)
            return true;
    return false;
}

/* X is with the provider: an HTTP request, or a transport's send. */
static bool xfer_on_wire(const xfer *x)
{
    return x->http || x->sending;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A transport's stand-in for the body's bytes / 4: the compact JSON of
 * what it will be handed, which is what an encoder would have written. */
static int64_t request_est_tokens(const loom_request *req)
{
    if (req->kind == LOOM_CALL_EMBED) {
        int64_t t = 0;
        size_t i;
        json_t *in;
        json_array_foreach(req->inputs, i, in) t += batch_input_tokens(in);
        return t;
    }
    size_t n = req->messages ? json_dumpb(req->messages, NULL, 0, JSON_COMPACT) : 0;
    return (int64_t)(n / 4) + 1;
}

/* Encodes X into x->enc. 0, or -1 after failing X's parts. */
static int xfer_encode(xfer *x)
{
    loom_request req;
    uctx ctx;
    uctx_init(&ctx, x->u);
    http_request_free(&x->enc);
    if (xfer_request(x, &req, true) < 0) {
        xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
        return -1;
    }
    if (x->u->def->encode(&ctx.base, x->u->state, &req, &x->enc) < 0) {
        http_request_free(&x->enc);
        xfer_fail(x, ctx.failed ? ctx.code : LOOM_E_INVALID_REQUEST,
                  ctx.msg[0] ? ctx.msg : "the provider could not encode the request", false, 0);
        return -1;
    }
    if (xfer_add_step_keys(x, &x->enc) < 0 || xfer_add_traceparent(x, &x->enc) < 0) {
        http_request_free(&x->enc);
        xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
        return -1;
    }
    return 0;
}

void xfer_submit(xfer *x)
{
    upstream_t *u = x->u;
    if (!xfer_has_live_parts(x)) {
        xfer_free(x);
        return;
    }
    if (u->disabled) {
        xfer_fail(x, LOOM_E_QUOTA, u->disabled_msg, false, 0);
        return;
    }
    rl_cost cost = { .requests = 1 };
    if (u->tp) {
        loom_request req;
        if (xfer_request(x, &req, true) < 0) {
            xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
            return;
        }
        cost.est_input_tokens = request_est_tokens(&req);
    } else {
        if (xfer_encode(x) < 0)
            return;
        cost.est_input_tokens = (int64_t)(x->enc.body_len / 4) + 1;
    }
    json_t *mt = x->params ? json_object_get(x->params, "max_tokens") : NULL;
    if (json_is_integer(mt) && json_integer_value(mt) > 0)
        cost.est_output_tokens = json_integer_value(mt);
    /* the call waits in its tenant's share of the queue */
    const upstream_call_t *first = NULL;
    for (size_t i = 0; i < x->nparts && !first; i++)
        if (x->parts[i].call && !x->parts[i].call->finished)
            first = x->parts[i].call;
    x->ticket = rl_acquire_for(u->rl, &cost, first ? first->tenant : NULL,
                               first ? first->tenant_weight : 1, on_grant, x);
    if (!x->ticket)
        xfer_fail(x, errno == EINVAL ? LOOM_E_INVALID_REQUEST : LOOM_E_NOMEM,
                  errno == EINVAL ? "the request is larger than the provider's limits allow"
                                  : "out of memory",
                  false, 0);
}

static void on_submit(reactor_t *r, void *ud)
{
    (void)r;
    xfer_submit(ud);
}

void xfer_submit_later(xfer *x)
{
    if (reactor_post_embedded(x->u->r, &x->post, on_submit, x) < 0)
        xfer_submit(x); /* already queued: cannot happen, but never lose X */
}

/* Hands granted X to the transport. The send may end (and X be freed)
 * before start returns. */
static void xfer_start(xfer *x)
{
    upstream_t *u = x->u;
    loom_request req;
    /* again: calls withdrawn while X queued leave their inputs out */
    if (xfer_request(x, &req, true) < 0) {
        rl_cancel(x->ticket);
        x->ticket = NULL;
        xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
        return;
    }
    upstream_send_info info = { .job = "", .step = "" };
    bool first = true;
    for (size_t i = 0; i < x->nparts; i++) {
        const upstream_call_t *c = x->parts[i].call;
        if (!c || c->finished)
            continue;
        if (first) {
            info.job = c->job ? c->job : "";
            info.step = c->step ? c->step : "";
            first = false;
        }
        if (c->deadline_ms && (!info.deadline_ms || c->deadline_ms < info.deadline_ms))
            info.deadline_ms = c->deadline_ms;
    }
    x->sending = true;
    x->sent_us = mono_us();
    u->st.requests++;
    u->tp->start(u->tp_ud, x, &req, &info);
}

static void on_grant(rl_ticket *t, void *ud)
{
    xfer *x = ud;
    upstream_t *u = x->u;
    (void)t;
    if (u->disabled || !xfer_has_live_parts(x)) {
        rl_cancel(x->ticket);
        x->ticket = NULL;
        if (u->disabled)
            xfer_fail(x, LOOM_E_QUOTA, u->disabled_msg, false, 0);
        else
            xfer_free(x);
        return;
    }
    uint64_t now = mono_us();
    for (size_t i = 0; i < x->nparts; i++) {
        upstream_call_t *c = x->parts[i].call;
        if (c && !c->finished) {
            if (!c->first_sent_us)
                c->first_sent_us = now;
            c->sent_us = now;
        }
    }
    if (u->tp) {
        xfer_start(x);
        return;
    }
    http_call_opts o = u->opt.timeouts;
    if (x->kind == LOOM_CALL_EMBED)
        o.recv_buffer = 64 * 1024; /* vectors: kilobytes per input */
    if (x->want_stream && xfer_stream_begin(x, &o) < 0) {
        rl_cancel(x->ticket);
        x->ticket = NULL;
        xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
        return;
    }
    x->http = http_call(u->http, &x->enc, &o, on_http, x);
    if (!x->http) {
        rl_cancel(x->ticket);
        x->ticket = NULL;
        xfer_fail(x, LOOM_E_NOMEM, "out of memory", false, 0);
        return;
    }
    u->st.requests++;
}

static void disable(upstream_t *u, const char *msg)
{
    if (u->disabled)
        return;
    u->disabled = true;
    u->st.disabled = true;
    snprintf(u->disabled_msg, sizeof u->disabled_msg,
             "provider '%.60s' is disabled until reload: %.150s", u->name, msg);
    /* fail everything not yet on the wire; from the head each time, since
     * callbacks may withdraw (and free) other xfers */
    for (;;) {
        xfer *x = NULL;
        LIST_EACH_SAFE(l, nx, &u->xfers) {
            xfer *y = LIST_OWNER(l, xfer, link);
            if (!xfer_on_wire(y) && !y->busy) {
                x = y;
                break;
            }
        }
        if (!x)
            break;
        if (x->ticket) {
            rl_cancel(x->ticket);
            x->ticket = NULL;
        }
        xfer_fail(x, LOOM_E_QUOTA, u->disabled_msg, false, 0);
    }
}

/* What X's answer does: OUTPUT (stolen) with USAGE delivered, or the
 * failure CODE (MSG borrowed, and it must outlive the callbacks) classed:
 * a 429 pauses the provider and queues X again, quota disables it. X's
 * ticket is released here; LATENCY_MS (0: none to report) and OVERLOADED
 * feed the limiter. X is gone when this returns. */
void xfer_answer(xfer *x, json_t *output, const loom_usage *usage, loom_errcode code,
                        const char *msg, bool has_ra, uint64_t ra_ms, bool overloaded,
                        uint64_t latency_ms)
{
    upstream_t *u = x->u;
    if (output) {
        /* a provider's figures are not trusted to be sane: 2^62 tokens
         * would overflow every sum they enter */
        loom_usage use = { rl_clamp_tokens(usage ? usage->input_tokens : -1),
                           rl_clamp_tokens(usage ? usage->output_tokens : -1),
                           rl_clamp_tokens(usage ? usage->cache_read_tokens : -1),
                           rl_clamp_tokens(usage ? usage->cache_write_tokens : -1) };
        rl_usage rl_use = { use.input_tokens, use.output_tokens };
        rl_release(x->ticket, use.input_tokens >= 0 ? &rl_use : NULL);
        x->ticket = NULL;
        rl_observe(u->rl, RL_OK, latency_ms);
        stat_add(&u->st.input_tokens, use.input_tokens);
        stat_add(&u->st.output_tokens, use.output_tokens);
        xfer_deliver(x, output, &use);
        return;
    }
    rl_release(x->ticket, NULL);
    x->ticket = NULL;
    if (code == LOOM_E_RATE_LIMITED) {
        u->st.rate_limited++;
        rl_pause(u->rl, has_ra ? ra_ms : DEFAULT_429_PAUSE_MS);
        if (x->waits < u->opt.max_rate_limit_waits) {
            x->waits++;
            xfer_submit(x); /* back in the queue, behind the pause */
            return;
        }
        xfer_fail(x, code, msg, has_ra, ra_ms);
        return;
    }
    overloaded = overloaded || (code == LOOM_E_UPSTREAM && strstr(msg, "overload"));
    rl_observe(u->rl, overloaded ? RL_OVERLOADED : RL_OK, latency_ms);
    if (code == LOOM_E_QUOTA) {
        xfer_fail(x, code, msg, false, 0);
        disable(u, msg);
        return;
    }
    xfer_fail(x, code, msg, has_ra, ra_ms);
}

static void on_http(http_call_t *hc, const http_response *resp, void *ud)
{
    xfer *x = ud;
    upstream_t *u = x->u;
    (void)hc;
    x->http = NULL;
    uint64_t ms = resp->total_us / 1000;
    u->st.latency_ewma_us = u->st.latency_ewma_us
                                ? (u->st.latency_ewma_us * 7 + resp->total_us) / 8
                                : resp->total_us;
    if (resp->streamed) {
        /* an event stream: it ends as its events said, or cut off */
        if (resp->outcome == HTTP_OK)
            upstream_sync_headers(u->rl, resp->headers, resp->nheaders, (int64_t)time(NULL));
        xfer_stream_end(x, resp, ms);
        return;
    }
    if (resp->outcome != HTTP_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s (%s)", resp->error ? resp->error : "HTTP failed",
                 http_outcome_name(resp->outcome));
        rl_release(x->ticket, NULL);
        x->ticket = NULL;
        rl_observe(u->rl, RL_OK, ms);
        xfer_fail(x, http_outcome_code(resp->outcome), msg, false, 0);
        return;
    }
    upstream_sync_headers(u->rl, resp->headers, resp->nheaders, (int64_t)time(NULL));
    loom_request req;
    loom_result out = { .output = NULL, .usage = { -1, -1, -1, -1 } };
    uctx ctx;
    uctx_init(&ctx, u);
    loom_http_response hr = { .status = resp->status, .headers = resp->headers,
                              .nheaders = resp->nheaders, .body = resp->body,
                              .body_len = resp->body_len };
    int rc = xfer_request(x, &req, false);
    if (rc == 0)
        rc = u->def->decode(&ctx.base, u->state, &req, &hr, &out);
    else
        ctx.code = LOOM_E_NOMEM, ctx.failed = true;
    if (rc == 0) {
        /* a reader of tokens whose answer came whole (not asked for as a
         * stream, or the server ignored the request for one) */
        xfer_stream_whole(x, out.output);
        /* a plugin's reason is not trusted to be terminated */
        memcpy(x->finish_reason, out.finish_reason, sizeof x->finish_reason);
        x->finish_reason[sizeof x->finish_reason - 1] = '\0';
        /* a plugin older than 2.3 has no such member: the zero it was
         * handed is all it can leave there */
        json_decref(x->tool_calls);
        x->tool_calls = u->abi_minor >= 3 ? out.tool_calls : NULL;
        xfer_answer(x, out.output, &out.usage, LOOM_OK, NULL, false, 0, false, ms);
        return;
    }
    json_decref(out.output);
    if (u->abi_minor >= 3)
        json_decref(out.tool_calls);
    loom_errcode code = ctx.failed ? ctx.code : LOOM_E_UPSTREAM;
    const char *msg = ctx.msg[0] ? ctx.msg : "the provider's answer could not be read";
    if (!ctx.has_ra) {
        /* the plugin may not read HTTP dates; the limiter's parser does */
        ctx.has_ra = rl_parse_wait_headers(resp->headers, resp->nheaders, (int64_t)time(NULL),
                                           &ctx.ra_ms) == 0;
    }
    /* msg is in ctx, which outlives the answer's handling */
    xfer_answer(x, NULL, NULL, code, msg, ctx.has_ra, ctx.ra_ms,
                resp->status == 503 || resp->status == 529, ms);
}

/* ---- transports */

void upstream_send_set_data(upstream_send_t *s, void *data)
{
    s->tx = data;
}

void *upstream_send_data(const upstream_send_t *s)
{
    return s->tx;
}

void upstream_send_vlog(upstream_send_t *s, int level, const char *fmt, va_list ap)
{
    if (s->u->log)
        s->u->log(s->u->log_ud, level, fmt, ap);
}

void upstream_send_done(upstream_send_t *x, upstream_result *res)
{
    upstream_t *u = x->u;
    uint64_t us = mono_us() - x->sent_us;
    x->sending = false;
    x->tx = NULL;
    u->st.latency_ewma_us = u->st.latency_ewma_us ? (u->st.latency_ewma_us * 7 + us) / 8 : us;
    json_t *out = res->output;
    loom_errcode code = res->code;
    const char *msg = res->message && *res->message ? res->message : "failed";
    char bad[160];
    if (out && code == LOOM_OK && x->kind == LOOM_CALL_EMBED &&
        (!json_is_array(out) || json_array_size(out) != x->ninputs)) {
        json_decref(out);
        out = NULL;
        code = LOOM_E_INVALID_OUTPUT;
        snprintf(bad, sizeof bad, "provider '%.60s': not one vector per input", u->name);
        msg = bad;
    } else if (!out && code == LOOM_OK) {
        code = LOOM_E_INVALID_OUTPUT;
        snprintf(bad, sizeof bad, "provider '%.60s': the call completed with no value", u->name);
        msg = bad;
    } else if (out && code != LOOM_OK) {
        json_decref(out);
        out = NULL;
    }
    json_decref(x->tool_calls);
    x->tool_calls = out ? res->tool_calls : NULL;
    if (!out)
        json_decref(res->tool_calls);
    res->tool_calls = NULL;
    if (out)
        xfer_stream_whole(x, out); /* a transport's answer is always whole */
    /* latency 0: an instance's own work time says nothing of a server's
     * queue (upstream.h) */
    xfer_answer(x, out, &res->usage, code, msg, res->has_retry_after,
                rl_cap_wait_ms(res->retry_after_ms), false, 0);
}

/* ---- the public side */

/* The upstream without its way of sending (HTTP client or transport). */
static upstream_t *upstream_alloc(reactor_t *r, const char *name, const loom_provider *def,
                                  void *state, const rl_limits *limits,
                                  const upstream_options *opt)
{
    upstream_t *u = calloc(1, sizeof *u);
    if (!u || !(u->name = strdup(name)))
        goto nomem;
    u->r = r;
    u->abi_minor = LOOM_ABI_MINOR; /* until told otherwise: a plugin built with this host */
    list_init(&u->xfers);
    list_init(&u->calls);
    u->def = def;
    u->state = state;
    if (opt)
        u->opt = *opt;
    if (!u->opt.max_rate_limit_waits)
        u->opt.max_rate_limit_waits = DEFAULT_RATE_LIMIT_WAITS;
    if (!u->opt.batch_max_tokens)
        u->opt.batch_max_tokens = 300000;
    if (!u->opt.batch_window_ms)
        u->opt.batch_window_ms = 5;
    upstream_batch_api_defaults(&u->opt.batch_api, def);
    /* batching is on by default where the plugin declares a batch size;
     * without one, only where the config asks for it */
    if (u->opt.batch_max_inputs < 0)
        u->opt.batch_max_inputs = 0;
    else if (def->max_batch && (u->opt.batch_max_inputs == 0 ||
                                u->opt.batch_max_inputs > (int64_t)def->max_batch))
        u->opt.batch_max_inputs = (int64_t)def->max_batch;
    rl_limits none = { 0 };
    if (!(u->rl = rl_new(r, limits ? limits : &none))) {
        int e = errno;
        free(u->name);
        free(u);
        errno = e;
        return NULL;
    }
    return u;
nomem:
    free(u);
    errno = ENOMEM;
    return NULL;
}

upstream_t *upstream_new(reactor_t *r, http_client_t *http, const char *name,
                         const loom_provider *def, void *state, const rl_limits *limits,
                         const upstream_options *opt)
{
    if (!def || !def->encode || !def->decode || !http) {
        errno = EINVAL;
        return NULL;
    }
    upstream_t *u = upstream_alloc(r, name, def, state, limits, opt);
    if (u)
        u->http = http;
    return u;
}

upstream_t *upstream_new_transport(reactor_t *r, const char *name, const loom_provider *def,
                                   void *state, const upstream_transport *tp, void *tp_ud,
                                   const rl_limits *limits, const upstream_options *opt)
{
    upstream_t *u = NULL;
    if (!def || !tp || !tp->start || !tp->cancel)
        errno = EINVAL;
    else
        u = upstream_alloc(r, name, def, state, limits, opt);
    if (!u) {
        int e = errno;
        if (tp && tp->free)
            tp->free(tp_ud);
        errno = e;
        return NULL;
    }
    u->tp = tp;
    u->tp_ud = tp_ud;
    return u;
}

void upstream_set_plugin_abi(upstream_t *u, uint32_t minor)
{
    u->abi_minor = minor;
}

uint32_t upstream_send_abi_minor(const upstream_send_t *s)
{
    return s->u->abi_minor;
}

void upstream_set_log(upstream_t *u, upstream_log_fn log, void *ud)
{
    u->log = log;
    u->log_ud = ud;
}

void upstream_free(upstream_t *u)
{
    if (!u)
        return;
    LIST_EACH_SAFE(l, nx, &u->calls) {
        upstream_call_t *c = LIST_OWNER(l, upstream_call_t, link);
        c->finished = true; /* nobody is called back any more */
        reactor_post_cancel(u->r, &c->post);
    }
    /* freeing an xfer may free calls, never other xfers */
    LIST_EACH_SAFE(l, nx, &u->xfers) {
        xfer *x = LIST_OWNER(l, xfer, link);
        if (x->http)
            http_cancel(x->http);
        x->http = NULL;
        if (x->sending)
            u->tp->cancel(u->tp_ud, x);
        x->sending = false;
        x->ticket = NULL; /* rl_free below drops every ticket */
        xfer_free(x);
    }
    while (!list_empty(&u->calls)) {
        upstream_call_t *c = LIST_OWNER(list_first(&u->calls), upstream_call_t, link);
        c->pending = 0;
        call_maybe_free(c);
    }
    rl_free(u->rl);
    if (u->tp && u->tp->free)
        u->tp->free(u->tp_ud);
    free(u->name);
    free(u);
}

upstream_call_t *upstream_call(upstream_t *u, const loom_request *req,
                               const upstream_call_info *info, upstream_done_fn done, void *ud)
{
    upstream_call_info none = { 0 };
    if (!info)
        info = &none;
    upstream_call_t *c = calloc(1, sizeof *c);
    if (!c || (info->step_key && !(c->step_key = strdup(info->step_key))) ||
        (info->job && !(c->job = strdup(info->job))) ||
        (info->step && !(c->step = strdup(info->step))) ||
        (info->tenant && !(c->tenant = strdup(info->tenant)))) {
        if (c) {
            free(c->step_key);
            free(c->job);
            free(c->step);
        }
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->deadline_ms = info->deadline_ms;
    if (info->traceparent)
        snprintf(c->traceparent, sizeof c->traceparent, "%s", info->traceparent);
    c->tenant_weight = info->tenant_weight;
    c->token = info->token;
    c->token_ud = info->token_ud;
    c->u = u;
    c->done = done;
    c->ud = ud;
    c->kind = req->kind;
    c->usage = (loom_usage){ -1, -1, -1, -1 };
    c->created_us = mono_us();
    list_add_head(&u->calls, &c->link);
    u->st.calls++;
    if (u->disabled) {
        call_end_later(c, LOOM_E_QUOTA, u->disabled_msg);
        return c;
    }
    if (req->kind == LOOM_CALL_EMBED) {
        if (!json_is_array(req->inputs)) {
            call_end_later(c, LOOM_E_INVALID_REQUEST, "embedding inputs must be a list");
            return c;
        }
        c->inputs = json_incref(req->inputs);
        if (u->opt.batch_max_inputs > 0) {
            if (batch_add(u, c, req->model) < 0)
                call_end_later(c, LOOM_E_NOMEM, "out of memory");
            return c;
        }
    }
    xfer *x = xfer_new(u, req->kind, req->model);
    if (!x || xfer_add_part(x, c, 0, req->kind == LOOM_CALL_EMBED ?
                                           json_array_size(req->inputs) : 1) < 0) {
        if (x)
            xfer_free(x);
        call_end_later(c, LOOM_E_NOMEM, "out of memory");
        return c;
    }
    x->messages = json_incref(req->messages);
    x->params = json_incref(req->params);
    x->json_mode = req->json_mode;
    x->prompt_cache = req->prompt_cache;
    x->inputs = json_incref(req->inputs);
    x->tools = json_incref(req->tools);
    x->schema = json_incref(req->schema);
    if (req->schema && req->schema_name && !(x->schema_name = strdup(req->schema_name))) {
        xfer_free(x);
        call_end_later(c, LOOM_E_NOMEM, "out of memory");
        return c;
    }
    xfer_submit_later(x);
    return c;
}

void upstream_cancel_timeout(upstream_call_t *c)
{
    upstream_t *u = c->u;
    if (!c->finished) {
        u->st.timeouts++;
        /* a provider whose calls all time out is slow, not instant: the
         * time it was given counts in its latency (as a lower bound) */
        if (c->sent_us) {
            uint64_t us = mono_us() - c->sent_us;
            u->st.latency_ewma_us = u->st.latency_ewma_us ? (u->st.latency_ewma_us * 7 + us) / 8
                                                          : us;
        }
    }
    upstream_cancel(c);
}

void upstream_cancel(upstream_call_t *c)
{
    upstream_t *u = c->u;
    reactor_post_cancel(u->r, &c->post);
    c->finished = true;
    for (size_t k = 0; k < c->nlinks; k++) {
        xfer *x = c->links[k].x;
        if (!x)
            continue;
        c->links[k].x = NULL;
        x->parts[c->links[k].idx].call = NULL;
        c->pending--;
        if (x->busy || x->open || xfer_has_live_parts(x))
            continue; /* being delivered, still filling, or serving others */
        /* nobody else waits for this request */
        if (x->http) {
            http_cancel(x->http);
            x->http = NULL;
            rl_release(x->ticket, NULL);
        } else if (x->sending) {
            x->sending = false;
            u->tp->cancel(u->tp_ud, x);
            rl_release(x->ticket, NULL);
        } else if (x->ticket) {
            rl_cancel(x->ticket);
        }
        x->ticket = NULL;
        xfer_free(x);
    }
    call_maybe_free(c);
}

void upstream_stats(const upstream_t *u, upstream_stats_t *out)
{
    *out = u->st;
    rl_stats(u->rl, &out->limiter);
}

const char *upstream_name(const upstream_t *u)
{
    return u->name;
}

rl_t *upstream_limiter(upstream_t *u)
{
    return u->rl;
}
