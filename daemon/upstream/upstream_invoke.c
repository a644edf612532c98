/* upstream_invoke.c -- the in-process transport: an invoke provider's
 * calls (the mock, a model linked into a plugin) run on the reactor through
 * its invoke and cancel hooks, behind the same limiter as HTTP providers.
 *
 * This is the host side of loom_call: complete, fail, fail_after, timers
 * on the reactor and call_vlog. Each send is an icall, the loom_call the
 * plugin holds; it lives from start until the plugin ends it (complete,
 * fail, fail_after) or the upstream withdraws it (cancel), and takes the
 * plugin's leftover timers with it. An end that arrives inside invoke is
 * kept and delivered once invoke has returned, so the plugin never sees
 * the upstream's callbacks run under its own feet.
 *
 * Every entry into plugin code (invoke, a timer's callback, cancel) is
 * recorded with inflight_enter as "PROVIDER.invoke" (".timer", ".cancel"),
 * so a crash inside it blames the job and step that were running it. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"
#include "daemon/core/inflight.h"
#include "daemon/upstream/upstream.h"

/* The transport's state: one per instance. */
typedef struct inv {
    reactor_t *r;              /* borrowed */
    const loom_provider *def;  /* borrowed */
    void *state;               /* borrowed: the instance's */
} inv;

/* One send in flight: the plugin's loom_call. */
typedef struct icall {
    loom_call base;            /* first: what the plugin holds */
    inv *t;
    upstream_send_t *send;
    char *job, *step;          /* owned: for crash records of timers and cancel */
    list_link timers;          /* itimer.link */
    bool in_invoke;            /* an end now is kept for after invoke */
    bool ended;                /* complete or fail arrived inside invoke */
    json_t *out;               /* that end's output (owned) */
    json_t *tool_calls;        /* and its tool calls (2.3; owned), or NULL */
    loom_usage usage;
    loom_errcode code;
    bool has_ra;
    uint64_t ra_ms;
    char msg[512];
} icall;

typedef struct itimer {
    list_link link;            /* in icall.timers */
    reactor_timer_t *t;
    icall *c;
    void (*cb)(void *ud);
    void *ud;
} itimer;

/* The loom_ctx invoke gets: its error, Retry-After and the deadline. */
typedef struct ictx {
    loom_ctx base;             /* first: what the plugin holds */
    icall *c;
    uint64_t deadline_ms;
    bool failed, has_ra;
    loom_errcode code;
    uint64_t ra_ms;
    char msg[512];
} ictx;

static icall *icall_of(loom_call *call)
{
    return (icall *)(void *)((char *)call - offsetof(icall, base));
}

static ictx *ictx_of(loom_ctx *ctx)
{
    return (ictx *)(void *)((char *)ctx - offsetof(ictx, base));
}

/* ---- the loom_ctx of invoke */

static void c_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    ictx *x = ictx_of(ctx);
    x->failed = true;
    x->code = code;
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
}

static void c_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    upstream_send_vlog(ictx_of(ctx)->c->send, level, fmt, ap);
}

static void c_retry_after(loom_ctx *ctx, uint64_t ms)
{
    ictx *x = ictx_of(ctx);
    x->has_ra = true;
    x->ra_ms = ms;
}

static uint64_t c_deadline_ms(loom_ctx *ctx)
{
    return ictx_of(ctx)->deadline_ms;
}

/* invoke itself is never given up on while it runs: the call is */
static int c_cancelled(loom_ctx *ctx)
{
    (void)ctx;
    return 0;
}

/* A loom_ctx given to a loom_call entry, or the reverse: a plugin bug that
 * must not corrupt memory. Nothing is read through the handle. */
static void x_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    (void)call;
    (void)usage;
    json_decref(output);
}
static void x_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage)
{
    (void)call, (void)usage;
    json_decref(output);
    json_decref(tool_calls);
}
static void x_fail(loom_call *call, loom_errcode code, const char *message)
{
    (void)call, (void)code, (void)message;
}
static void x_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message)
{
    (void)call, (void)code, (void)ms, (void)message;
}
static void *x_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    (void)call, (void)delay_ms, (void)cb, (void)ud;
    return NULL;
}
static void x_timer_cancel(loom_call *call, void *timer)
{
    (void)call, (void)timer;
}
static void x_call_vlog(loom_call *call, int level, const char *fmt, va_list ap)
{
    (void)call, (void)level, (void)fmt, (void)ap;
}
static void x_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    (void)ctx, (void)code, (void)fmt, (void)ap;
}
static void x_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    (void)ctx, (void)level, (void)fmt, (void)ap;
}
static void x_retry_after(loom_ctx *ctx, uint64_t ms)
{
    (void)ctx, (void)ms;
}
static uint64_t x_deadline_ms(loom_ctx *ctx)
{
    (void)ctx;
    return 0;
}
static int x_cancelled(loom_ctx *ctx)
{
    (void)ctx;
    return 0;
}

/* ---- the loom_call */

static void h_complete(loom_call *call, json_t *output, const loom_usage *usage);
static void h_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage);
static void h_fail(loom_call *call, loom_errcode code, const char *message);
static void h_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message);
static void *h_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud);
static void h_timer_cancel(loom_call *call, void *timer);
static void h_call_vlog(loom_call *call, int level, const char *fmt, va_list ap);

static const loom_host_api ctx_api = {
    .verror = c_verror, .vlog = c_vlog, .retry_after = c_retry_after,
    .complete = x_complete, .fail = x_fail, .timer_add = x_timer_add,
    .timer_cancel = x_timer_cancel, .fail_after = x_fail_after,
    .deadline_ms = c_deadline_ms, .cancelled = c_cancelled, .call_vlog = x_call_vlog,
    .complete_tools = x_complete_tools,
};

static const loom_host_api call_api = {
    .verror = x_verror, .vlog = x_vlog, .retry_after = x_retry_after,
    .complete = h_complete, .fail = h_fail, .timer_add = h_timer_add,
    .timer_cancel = h_timer_cancel, .fail_after = h_fail_after,
    .deadline_ms = x_deadline_ms, .cancelled = x_cancelled, .call_vlog = h_call_vlog,
    .complete_tools = h_complete_tools,
};

static void itimer_cancel(reactor_t *r, itimer *it)
{
    reactor_timer_cancel(r, it->t);
    list_del(&it->link);
    free(it);
}

/* Frees C and any timer its plugin left behind. */
static void icall_free(icall *c)
{
    while (!list_empty(&c->timers))
        itimer_cancel(c->t->r, LIST_OWNER(list_first(&c->timers), itimer, link));
    json_decref(c->out);
    json_decref(c->tool_calls);
    free(c->job);
    free(c->step);
    free(c);
}

/* Ends C: frees it, then tells the upstream, whose callbacks may start or
 * cancel other calls of the same plugin. OUT and TOOL_CALLS are stolen,
 * MSG copied first. */
static void icall_end(icall *c, json_t *out, json_t *tool_calls, const loom_usage *usage,
                      loom_errcode code, bool has_ra, uint64_t ra_ms, const char *msg)
{
    upstream_send_t *s = c->send;
    char m[512];
    snprintf(m, sizeof m, "%s", msg ? msg : "");
    upstream_result res = {
        .output = out, .code = code, .message = m, .has_retry_after = has_ra,
        .retry_after_ms = ra_ms, .tool_calls = tool_calls,
    };
    res.usage = usage ? *usage : (loom_usage){ -1, -1, -1, -1 };
    icall_free(c);
    upstream_send_done(s, &res);
}

/* The plugin's USAGE (may be NULL) as this host's struct: a plugin built
 * before 2.2 passes a struct without the cache counts, which must not be
 * read past its end. */
static loom_usage plugin_usage(const icall *c, const loom_usage *usage)
{
    loom_usage u = { -1, -1, -1, -1 };
    if (!usage)
        return u;
    u.input_tokens = usage->input_tokens;
    u.output_tokens = usage->output_tokens;
    if (upstream_send_abi_minor(c->send) >= 2) {
        u.cache_read_tokens = usage->cache_read_tokens;
        u.cache_write_tokens = usage->cache_write_tokens;
    }
    return u;
}

static void h_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage)
{
    icall *c = icall_of(call);
    if (c->in_invoke) {
        if (c->ended) { /* a second end: the first one counts */
            json_decref(output);
            json_decref(tool_calls);
            return;
        }
        c->ended = true;
        c->out = output;
        c->tool_calls = tool_calls;
        c->code = LOOM_OK;
        c->usage = plugin_usage(c, usage);
        return;
    }
    loom_usage use = plugin_usage(c, usage);
    icall_end(c, output, tool_calls, usage ? &use : NULL, LOOM_OK, false, 0, NULL);
}

static void h_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    h_complete_tools(call, output, NULL, usage);
}

static void h_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message)
{
    icall *c = icall_of(call);
    if (code == LOOM_OK) /* a failure that names no class is still one */
        code = LOOM_E_UPSTREAM;
    if (c->in_invoke) {
        if (c->ended)
            return;
        c->ended = true;
        c->code = code;
        c->has_ra = ms > 0;
        c->ra_ms = ms;
        snprintf(c->msg, sizeof c->msg, "%s", message ? message : "failed");
        return;
    }
    icall_end(c, NULL, NULL, NULL, code, ms > 0, ms, message ? message : "failed");
}

static void h_fail(loom_call *call, loom_errcode code, const char *message)
{
    h_fail_after(call, code, 0, message);
}

static void h_call_vlog(loom_call *call, int level, const char *fmt, va_list ap)
{
    upstream_send_vlog(icall_of(call)->send, level, fmt, ap);
}

static void itimer_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    itimer *it = ud;
    void (*cb)(void *) = it->cb;
    void *cud = it->ud;
    icall *c = it->c;
    (void)r;
    (void)t;
    /* the plugin's own code, for its job, as much as invoke is */
    inflight_slot *fl = inflight_enter(c->job, c->step, c->t->def->name, "timer");
    list_del(&it->link);
    free(it);
    cb(cud); /* may end C: nothing of it is touched after */
    inflight_leave(fl);
}

static void *h_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    icall *c = icall_of(call);
    if (!cb)
        return NULL;
    itimer *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    it->c = c;
    it->cb = cb;
    it->ud = ud;
    /* a day at most: a plugin's wait of 2^60 ms must not overflow the clock */
    uint64_t ms = delay_ms < UINT64_C(86400000) ? delay_ms : UINT64_C(86400000);
    it->t = reactor_timer_add(c->t->r, ms * REACTOR_MSEC, itimer_fired, it);
    if (!it->t) {
        free(it);
        return NULL;
    }
    list_add_tail(&c->timers, &it->link);
    return it;
}

static void h_timer_cancel(loom_call *call, void *timer)
{
    if (timer)
        itimer_cancel(icall_of(call)->t->r, timer);
}

/* ---- the transport */

static void inv_start(void *ud, upstream_send_t *s, const loom_request *req,
                      const upstream_send_info *info)
{
    inv *t = ud;
    icall *c = calloc(1, sizeof *c);
    if (!c || !(c->job = strdup(info->job)) || !(c->step = strdup(info->step))) {
        if (c)
            free(c->job);
        free(c);
        upstream_send_done(s, &(upstream_result){ .code = LOOM_E_NOMEM,
                                                  .message = "out of memory",
                                                  .usage = { -1, -1, -1, -1 } });
        return;
    }
    c->base.api = &call_api;
    c->t = t;
    c->send = s;
    list_init(&c->timers);
    upstream_send_set_data(s, c);
    ictx ctx = { .base.api = &ctx_api, .c = c, .deadline_ms = info->deadline_ms };
    c->in_invoke = true;
    inflight_slot *fl = inflight_enter(c->job, c->step, t->def->name, "invoke");
    int rc = t->def->invoke(&ctx.base, t->state, req, &c->base);
    inflight_leave(fl);
    c->in_invoke = false;
    if (rc < 0) {
        /* the reason is in the ctx, or in a fail that came before the -1 */
        json_decref(c->out);
        c->out = NULL;
        if (ctx.failed)
            icall_end(c, NULL, NULL, NULL, ctx.code == LOOM_OK ? LOOM_E_UPSTREAM : ctx.code,
                      ctx.has_ra, ctx.ra_ms, ctx.msg[0] ? ctx.msg : "the call did not start");
        else if (c->ended && c->code != LOOM_OK)
            icall_end(c, NULL, NULL, NULL, c->code, c->has_ra || ctx.has_ra,
                      c->has_ra ? c->ra_ms : ctx.ra_ms, c->msg);
        else
            icall_end(c, NULL, NULL, NULL, LOOM_E_UPSTREAM, ctx.has_ra, ctx.ra_ms,
                      "the call did not start");
        return;
    }
    if (c->ended) {
        json_t *out = c->out, *tc = c->tool_calls;
        c->out = NULL;
        c->tool_calls = NULL;
        loom_usage usage = c->usage;
        char msg[sizeof c->msg];
        snprintf(msg, sizeof msg, "%s", c->msg);
        icall_end(c, out, tc, &usage, c->code, c->has_ra, c->ra_ms, msg);
    }
}

static void inv_cancel(void *ud, upstream_send_t *s)
{
    inv *t = ud;
    icall *c = upstream_send_data(s);
    if (!c)
        return;
    if (t->def->cancel) {
        inflight_slot *fl = inflight_enter(c->job, c->step, t->def->name, "cancel");
        t->def->cancel(t->state, &c->base);
        inflight_leave(fl);
    }
    icall_free(c);
}

static void inv_free(void *ud)
{
    free(ud);
}

static const upstream_transport invoke_transport = {
    .start = inv_start,
    .cancel = inv_cancel,
    .free = inv_free,
};

upstream_t *upstream_new_invoke(reactor_t *r, const char *name, const loom_provider *def,
                                void *state, const rl_limits *limits,
                                const upstream_options *opt)
{
    if (!def || !def->invoke) {
        errno = EINVAL;
        return NULL;
    }
    inv *t = calloc(1, sizeof *t);
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    t->r = r;
    t->def = def;
    t->state = state;
    return upstream_new_transport(r, name, def, state, &invoke_transport, t, limits, opt);
}
