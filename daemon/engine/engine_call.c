/* engine_call.c -- a call or embed leaf's provider call, and the host side
 * of loom_ctx for the engine's own plugin calls (lambdas, provider init):
 * errors, Retry-After, deadline, cancellation.
 *
 * Every provider is called through its instance's upstream (daemon/upstream:
 * limiter, batching, 429s, quota, then HTTP or, for an invoke provider, the
 * in-process transport that is the host side of loom_call), so its limits
 * hold whatever kind it is. With
 * `cache: true`, the rendered request is looked up first (engine_leaf.c); a
 * miss carries its key in the pcall and stores the answer only when the
 * call succeeds, so errors and cancelled calls leave no entry. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/engine/engine_internal.h"
#include "daemon/upstream/upstream.h"

/* A leaf's call of a provider, waiting for its upstream. */
typedef struct pcall {
    act_t *act;
    pinst_t *inst;
    bool single;               /* EMBED of one string: answer its vector */
    const char *model;         /* the request's (borrowed from the job's graph), or NULL */
    uint64_t start_us;         /* reactor clock: handed to the upstream */
    char *cache_key;           /* owned: store the answer under it, or NULL */
    upstream_call_t *uc;       /* the call in the instance's upstream */
    engine_hold hold;          /* its reservation on the budgets (engine_cost.h) */
    bool batch;                /* through the provider's Batch API (engine_batch.c) */
    engine_price bprice;       /* then the price it is charged at: hold.price */
    trace_span *span;          /* owned: the attempt's span (engine_span.c), or NULL */
} pcall;

static dsl_error_class class_of(loom_errcode c)
{
    if (c == ENGINE_E_PLUGIN_CRASHED) /* an isolated provider's helper died */
        return DSL_ERR_PLUGIN_CRASHED;
    switch (c) {
    case LOOM_E_TIMEOUT: return DSL_ERR_TIMEOUT;
    case LOOM_E_RATE_LIMITED: return DSL_ERR_RATE_LIMITED;
    case LOOM_E_INVALID_OUTPUT: return DSL_ERR_INVALID_OUTPUT;
    case LOOM_E_LAMBDA_FAILED: return DSL_ERR_LAMBDA_FAILED;
    case LOOM_E_QUOTA: return DSL_ERR_QUOTA;
    case LOOM_E_TLS: return DSL_ERR_TLS;
    case LOOM_E_INVALID_REQUEST:
    case LOOM_E_CONFIG: return DSL_ERR_INVALID_REQUEST;
    default: return DSL_ERR_UPSTREAM;
    }
}

/* ---- the host API
 *
 * ctx_api is the table of a loom_ctx (an hctx: lambda calls, provider
 * init). Its loom_call entries do nothing: a plugin that hands its ctx
 * where a call belongs must not corrupt memory. The loom_call of an invoke
 * provider is the upstream's (daemon/upstream/upstream_invoke.c). */

static hctx *hctx_of(loom_ctx *ctx)
{
    return (hctx *)(void *)((char *)ctx - offsetof(hctx, base));
}

static void h_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    hctx *h = hctx_of(ctx);
    h->failed = true;
    h->code = code;
    vsnprintf(h->msg, sizeof h->msg, fmt, ap);
}

/* Any thread: a lambda's ctx lives on its worker for the call's length. */
static void h_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    hctx *h = hctx_of(ctx);
    plugins_vlog(h->plugins, h->plugin, level, fmt, ap);
}

static void h_retry_after(loom_ctx *ctx, uint64_t ms)
{
    hctx *h = hctx_of(ctx);
    h->has_ra = true;
    h->ra_ms = ms;
}

static uint64_t h_deadline_ms(loom_ctx *ctx)
{
    return hctx_of(ctx)->deadline_ms;
}

static int h_cancelled(loom_ctx *ctx)
{
    const atomic_bool *c = hctx_of(ctx)->cancelled;
    return c && atomic_load(c);
}

/* A loom_ctx given to a loom_call entry: nothing is read through it. */
static void x_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    json_decref(output);
}
static void x_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage)
{
    json_decref(output);
    json_decref(tool_calls);
}
static void x_fail(loom_call *call, loom_errcode code, const char *message) { }
static void x_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message) { }
static void *x_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    return NULL;
}
static void x_timer_cancel(loom_call *call, void *timer) { }
static void x_call_vlog(loom_call *call, int level, const char *fmt, va_list ap) { }

static const loom_host_api ctx_api = {
    .verror = h_verror, .vlog = h_vlog, .retry_after = h_retry_after,
    .complete = x_complete, .fail = x_fail, .timer_add = x_timer_add,
    .timer_cancel = x_timer_cancel, .fail_after = x_fail_after,
    .deadline_ms = h_deadline_ms, .cancelled = h_cancelled, .call_vlog = x_call_vlog,
    .complete_tools = x_complete_tools,
};

void hctx_init(hctx *h, const plugins_t *plugins, const loom_plugin *plugin)
{
    memset(h, 0, sizeof *h);
    h->base.api = &ctx_api;
    h->plugins = plugins;
    h->plugin = plugin ? plugin->name : NULL;
}

uint64_t hctx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

eerr *hctx_error(const act_t *a, const hctx *h, dsl_error_class cls, const char *dflt)
{
    eerr *e = eerr_new(cls, NULL, a->node->path, a->attempt, "%s", h->msg[0] ? h->msg : dflt);
    if (e && h->has_ra) {
        e->has_retry_after = true;
        e->retry_after_ms = h->ra_ms;
    }
    return e;
}

/* ---- providers */

static void pcall_free(pcall *pc)
{
    if (pc->span) /* ended without an answer: withdrawn */
        span_call_end(pc->act->job, &pc->span, NULL);
    free(pc->cache_key);
    free(pc);
}

/* The answer as the node wants it: parsed JSON, or one vector of a batch. */
static void pcall_finish(pcall *pc, json_t *out, eerr *err)
{
    act_t *a = pc->act;
    engine_job_t *job = a->job;
    bool single = pc->single;
    char name[128];
    snprintf(name, sizeof name, "%s", pc->inst->name);
    char *key = pc->cache_key; /* kept past the pcall: stored once the answer is final */
    pc->cache_key = NULL;
    a->k.leaf.call = NULL;
    pcall_free(pc);
    job->busy++;
    if (!err && a->node->kind == DSL_CALL && a->node->u.call.json) {
        json_error_t je;
        json_t *parsed = json_is_string(out)
                             ? json_loadb(json_string_value(out), json_string_length(out),
                                          JSON_DECODE_ANY, &je)
                             : NULL;
        json_decref(out);
        out = parsed;
        char why[512];
        if (!parsed) {
            err = eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path, a->attempt,
                           "the answer is not JSON");
        } else if (a->node->u.call.schema &&
                   dsl_schema_validate(a->node->u.call.schema, parsed, why, sizeof why) < 0) {
            /* checked here whatever the provider promised: a plugin without
             * native structured outputs only asked for JSON */
            json_decref(out);
            out = NULL;
            err = eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path, a->attempt,
                           "the answer does not fit the schema: %s", why);
        }
    } else if (!err && single) {
        json_t *v = json_is_array(out) ? json_incref(json_array_get(out, 0)) : NULL;
        json_decref(out);
        out = v;
        if (!v)
            err = eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path, a->attempt,
                           "no embedding in the answer");
    }
    char msg[512];
    if (!err && output_check(out, msg, sizeof msg) < 0) {
        json_decref(out);
        out = NULL;
        err = eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path, a->attempt, "provider '%s': %s",
                       name, msg);
    }
    if (!err)
        leaf_cache_store(a, key, out);
    free(key);
    act_attempt_done(a, err ? NULL : out, err);
    job->busy--;
    job_pump(job);
}

/* A plugin's token count as one the job may add up: counts are clamped to
 * [0, 2^40], so a bogus one can neither subtract nor overflow the total. */
static json_int_t usage_clamp(int64_t n)
{
    const int64_t max = (int64_t)1 << 40;
    return n < 0 ? 0 : n > max ? max : n;
}

static void usage_add(json_t *u, const char *key, int64_t n)
{
    json_int_t sum = json_integer_value(json_object_get(u, key)) + usage_clamp(n);
    json_object_set_new(u, key, json_integer(sum));
}

/* Adds USAGE (may be NULL) of one call of provider NAME, which cost COST
 * USD (< 0: unpriced), to the job's. The cache counts and cost_usd appear
 * once a call gave them, so a provider that never says has none. */
static void job_add_usage(engine_job_t *job, const char *name, const loom_usage *usage,
                          double cost)
{
    if (!job->usage && !(job->usage = json_object()))
        return;
    json_t *u = json_object_get(job->usage, name);
    if (!u) {
        u = json_pack("{s:i, s:i, s:i}", "calls", 0, "input_tokens", 0, "output_tokens", 0);
        if (!u || json_object_set_new(job->usage, name, u) < 0)
            return;
    }
    json_object_set_new(u, "calls", json_integer(json_integer_value(json_object_get(u, "calls")) + 1));
    if (usage) {
        usage_add(u, "input_tokens", usage->input_tokens);
        usage_add(u, "output_tokens", usage->output_tokens);
        if (usage->cache_read_tokens >= 0)
            usage_add(u, "cache_read_tokens", usage->cache_read_tokens);
        if (usage->cache_write_tokens >= 0)
            usage_add(u, "cache_write_tokens", usage->cache_write_tokens);
    }
    if (cost >= 0)
        json_object_set_new(u, "cost_usd",
                            json_real(json_number_value(json_object_get(u, "cost_usd")) + cost));
}

/* ---- cost and budgets */

/* The input tokens REQ is estimated at, as the limiter's tpm estimate of a
 * request without a body: its messages' (or inputs') compact JSON / 4. */
static int64_t est_input_tokens(const loom_request *req)
{
    char *s = json_dumps(req->kind == LOOM_CALL_EMBED ? req->inputs : req->messages,
                         JSON_COMPACT | JSON_ENCODE_ANY);
    int64_t n = s ? (int64_t)(strlen(s) / 4) + 1 : 1;
    free(s);
    return n;
}

/* Output tokens: max_tokens, which bounds the answer, else the default. */
static int64_t est_output_tokens(const loom_request *req)
{
    if (req->kind == LOOM_CALL_EMBED)
        return 0;
    json_t *mt = json_object_get(req->params, "max_tokens");
    return json_is_integer(mt) && json_integer_value(mt) > 0 ? json_integer_value(mt)
                                                              : ENGINE_COST_DEFAULT_OUTPUT_TOKENS;
}

/* Reserves the estimated cost of PC's request REQ against every budget of
 * its job. -1 with why in MSG when one would be passed. An unpriced call
 * holds nothing: it has no cost to count. */
static int budget_reserve(pcall *pc, const loom_request *req, char *msg, size_t len)
{
    engine_job_t *job = pc->act->job;
    engine_t *e = job->eng;
    memset(&pc->hold, 0, sizeof pc->hold);
    pc->hold.price = engine_price_find(e->prices, pc->inst->name, req->model);
    if (!pc->hold.price)
        return 0;
    if (pc->batch) {
        engine_price_batch(pc->hold.price, &pc->bprice);
        pc->hold.price = &pc->bprice;
    }
    double est = engine_price_estimate(pc->hold.price, est_input_tokens(req),
                                       est_output_tokens(req));
    return engine_ledger_reserve(e->ledger, job->tenant, job->budget_usd, job->spent_usd,
                                 &job->reserved_usd, est, &pc->hold, msg, len);
}

/* Replaces PC's reservation by what USAGE (NULL: the call was withdrawn)
 * cost. Returns that cost, -1 when unpriced or unknown. A priced answer
 * that gave no usage is charged its estimate, so that budgets still hold;
 * a failure that gave none, nothing: providers do not bill refusals. */
static double budget_settle(pcall *pc, const loom_usage *usage, bool ok)
{
    engine_job_t *job = pc->act->job;
    engine_t *e = job->eng;
    double cost = -1;
    if (pc->hold.price && usage) {
        cost = engine_price_cost(pc->hold.price, usage, pc->act->node->kind == DSL_CALL);
        if (cost < 0 && ok)
            cost = pc->hold.est;
    }
    engine_ledger_settle(e->ledger, job->tenant, job->scope.g ? job->scope.g->name : NULL,
                         pc->inst->name, &pc->hold, cost);
    if (cost >= 0) {
        job->spent_usd += cost;
        job->has_cost = true;
    }
    return cost;
}

/* The request of leaf A: CHAT messages and params, or EMBED inputs. */
static int build_request(act_t *a, loom_request *req, bool *single, char *msg, size_t len)
{
    const dsl_node *n = a->node;
    const dsl_graph *g = a->scope->g;
    memset(req, 0, sizeof *req);
    if (n->kind == DSL_EMBED) {
        req->kind = LOOM_CALL_EMBED;
        req->model = n->u.embed.model ? n->u.embed.model : g->defaults.model;
        json_t *in = n->u.embed.input ? eval_tvalue(a, n->u.embed.input, NULL, msg, len)
                                      : json_incref(a->input);
        if (!in)
            return -1;
        *single = json_is_string(in);
        if (*single) {
            req->inputs = json_pack("[o]", in);
        } else {
            req->inputs = in;
            size_t i;
            json_t *x;
            json_array_foreach(in, i, x) if (!json_is_string(x)) break;
            if (!json_is_array(in) || i < json_array_size(in)) {
                snprintf(msg, len, "embed input must be a string or a list of strings");
                return -1;
            }
        }
        return req->inputs ? 0 : -1;
    }
    if (a->role == ROLE_TURN) /* a model turn of a call with tools */
        return agent_turn_request(a, req, msg, len);
    const dsl_call *c = &n->u.call;
    req->kind = LOOM_CALL_CHAT;
    req->model = c->model ? c->model : g->defaults.model;
    req->json_mode = c->json;
    req->prompt_cache = c->prompt_cache;
    if (c->schema) {
        /* borrowed from the graph, which the job holds; the name is the
         * node's id when a provider accepts it as one ([A-Za-z0-9_-]{1,64}) */
        req->schema = dsl_schema_doc(c->schema);
        req->schema_name = n->id && strlen(n->id) <= 64 && !strchr(n->id, '.') ? n->id : "output";
    }
    if (!(req->messages = json_array()))
        return -1;
    if (call_messages(a, c, req->messages, msg, len) < 0)
        return -1;
    req->params = json_is_object(g->defaults.params) ? json_copy(g->defaults.params) : json_object();
    if (!req->params || (c->params && json_object_update(req->params, c->params) < 0))
        return -1;
    return 0;
}

int call_messages(act_t *a, const dsl_call *c, json_t *out, char *msg, size_t len)
{
    for (size_t i = 0; i < c->nmessages + 2; i++) {
        const char *role;
        const dsl_tvalue *tv;
        if (i < c->nmessages) {
            role = c->messages[i].role;
            tv = c->messages[i].content;
        } else if (i == c->nmessages) {
            role = "system";
            tv = c->system;
        } else {
            role = "user";
            tv = c->prompt;
        }
        if (!tv)
            continue;
        json_t *v = eval_tvalue(a, tv, NULL, msg, len);
        char *text = v ? dsl_value_to_text(v) : NULL;
        json_decref(v);
        if (!text)
            return -1;
        json_t *m = json_pack("{s:s, s:s}", "role", role, "content", text);
        free(text);
        if (!m)
            return -1;
        /* system goes first even though it is looked at after `messages` */
        int rc = i == c->nmessages ? json_array_insert_new(out, 0, m)
                                   : json_array_append_new(out, m);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Tells the engine's call observer about PC's answer RES, which cost COST
 * USD (-1: unpriced). */
static void call_report(pcall *pc, const upstream_result *res, double cost)
{
    engine_t *e = pc->act->job->eng;
    if (!e->call_obs && !pc->span)
        return;
    const engine_job_t *job = pc->act->job;
    engine_call_report r = {
        .provider = pc->inst->name,
        .plugin = pc->inst->prov ? pc->inst->prov->name : NULL,
        .model = pc->model,
        .operation = pc->act->node->kind == DSL_EMBED ? "embeddings" : "chat",
        .workflow = job->scope.g ? job->scope.g->name : NULL,
        .tenant = job->tenant,
        .ok = res->output != NULL,
        .error = res->output ? NULL : dsl_error_class_name(class_of(res->code)),
        .duration_s = (double)(res->send_us ? res->send_us
                                            : reactor_now_us(e->r) - pc->start_us) / 1e6,
        .wait_s = (double)res->wait_us / 1e6,
        .ttft_s = res->ttft_us ? (double)res->ttft_us / 1e6 : -1,
        .input_tokens = res->usage.input_tokens,
        .output_tokens = res->usage.output_tokens,
        .cache_read_tokens = res->usage.cache_read_tokens,
        .cache_write_tokens = res->usage.cache_write_tokens,
        .cost_usd = cost,
        .finish_reason = res->finish_reason,
        .attempt = pc->act->attempt,
        .message = res->output ? NULL : res->message,
    };
    span_call_end(pc->act->job, &pc->span, &r);
    if (e->call_obs)
        e->call_obs(e->call_obs_ud, &r);
}

/* The provider's answer (or typed failure) from the upstream. */
static void upstream_done(upstream_call_t *uc, upstream_result *res, void *ud)
{
    pcall *pc = ud;
    pc->uc = NULL;
    double cost = budget_settle(pc, &res->usage, res->output != NULL);
    call_report(pc, res, cost);
    job_add_usage(pc->act->job, pc->inst->name, &res->usage, cost);
    if (res->output && pc->act->role == ROLE_TURN) {
        /* a model turn ends with its tool calls and usage, all recorded */
        json_t *turn = agent_turn_result(res->output, res->tool_calls, &res->usage);
        json_decref(res->output);
        pcall_finish(pc, turn, turn ? NULL : eerr_new(DSL_ERR_UPSTREAM, NULL, pc->act->node->path,
                                                      pc->act->attempt, "out of memory"));
        return;
    }
    if (res->output) {
        pcall_finish(pc, res->output, NULL);
        return;
    }
    eerr *e = eerr_new(class_of(res->code), NULL, pc->act->node->path, pc->act->attempt, "%s",
                       res->message && *res->message ? res->message : "failed");
    if (e && res->has_retry_after) {
        e->has_retry_after = true;
        e->retry_after_ms = res->retry_after_ms;
    }
    pcall_finish(pc, NULL, e);
}

void provider_start(act_t *a)
{
    const dsl_node *n = a->node;
    engine_t *e = a->job->eng;
    const char *name = n->kind == DSL_CALL ? n->u.call.provider : n->u.embed.provider;
    char msg[512] = "out of memory";
    pinst_t *pi = pinst_find(e, name);
    if (!pi) {
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_INVALID_REQUEST, NULL, n->path, a->attempt,
                                           "no provider '%s'", name));
        return;
    }
    loom_request req;
    bool single = false;
    pcall *pc = NULL;
    char *key = NULL;
    if (build_request(a, &req, &single, msg, sizeof msg) < 0)
        goto fail;
    if (n->cache) {
        /* everything the answer depends on; `single` because one string
         * answers a vector and a list of one answers a list */
        json_t *rq = n->kind == DSL_EMBED
                         ? json_pack("{s:O, s:b}", "inputs", req.inputs, "single", single)
                         : json_pack("{s:O, s:O, s:b}", "messages", req.messages, "params",
                                     req.params, "json", req.json_mode);
        if (rq && req.schema && json_object_set(rq, "schema", req.schema) < 0) {
            json_decref(rq);
            rq = NULL;
        }
        key = leaf_cache_key(a, name, req.model, rq);
        json_decref(rq);
        if (leaf_cache_hit(a, key)) {
            free(key);
            json_decref(req.messages);
            json_decref(req.params);
            json_decref(req.inputs);
            return;
        }
    }
    upstream_result bres;
    batch_route_t route = batch_route(a, pi, &req, &bres);
    if (route == BATCH_HANDLED) {
        free(key);
        json_decref(req.messages);
        json_decref(req.params);
        json_decref(req.inputs);
        return;
    }
    if (!(pc = calloc(1, sizeof *pc))) {
        if (route == BATCH_ANSWER) {
            json_decref(bres.output);
            json_decref(bres.tool_calls);
            free((char *)bres.message);
        }
        goto fail;
    }
    pc->batch = route != BATCH_DIRECT;
    pc->cache_key = key; /* from here on the pcall owns it */
    key = NULL;
    pc->act = a;
    pc->inst = pi;
    pc->single = single;
    pc->model = req.model;
    pc->start_us = reactor_now_us(e->r);
    if (route == BATCH_ANSWER) {
        /* paid for already (the budgets were asked at its submit): its
         * cost is charged, at the batch price, and nothing is held */
        const engine_price *price = engine_price_find(e->prices, pi->name, req.model);
        if (price) {
            engine_price_batch(price, &pc->bprice);
            pc->hold.price = &pc->bprice;
        }
        a->k.leaf.call = pc;
        a->k.leaf.call_kind = LEAF_PROVIDER;
        json_decref(req.messages);
        json_decref(req.params);
        json_decref(req.inputs);
        json_t *tool_calls = bres.tool_calls;
        char *bmsg = (char *)bres.message;
        upstream_done(NULL, &bres, pc);
        json_decref(tool_calls);
        free(bmsg);
        return;
    }
    /* before anything is sent: a call that would pass a budget never starts */
    if (budget_reserve(pc, &req, msg, sizeof msg) < 0) {
        pcall_free(pc);
        json_decref(req.messages);
        json_decref(req.params);
        json_decref(req.inputs);
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_BUDGET_EXCEEDED, NULL, n->path, a->attempt,
                                           "%s", msg));
        return;
    }
    if (route == BATCH_SUBMIT) {
        /* the budgets allow it: nothing is charged until its line is done */
        budget_settle(pc, NULL, false);
        pcall_free(pc);
        batch_submit(a, pi, &req);
        json_decref(req.messages);
        json_decref(req.params);
        json_decref(req.inputs);
        return;
    }
    a->k.leaf.call = pc;
    a->k.leaf.call_kind = LEAF_PROVIDER;
    char traceparent[TRACE_PARENT_LEN + 1];
    pc->span = span_call_begin(a, pi, req.model, traceparent);
    /* the deadline an invoke provider reads with loom_deadline_ms: the
     * step's timeout from now, which a wait in the queue eats into */
    upstream_call_info info = { .step_key = step_key(a), .job = a->job->name, .step = n->path,
                                .deadline_ms = n->timeout_ms ? hctx_now_ms() + n->timeout_ms
                                                             : 0,
                                .tenant = a->job->tenant, .tenant_weight = a->job->tenant_weight,
                                .traceparent = traceparent[0] ? traceparent : NULL };
    tokens_call_info(a, &info);
    pc->uc = upstream_call(pi->up, &req, &info, upstream_done, pc);
    if (pc->uc && upstream_coalesces(pi->up, req.kind))
        job_slot_exempt(a);
    json_decref(req.messages);
    json_decref(req.params);
    json_decref(req.inputs);
    if (!pc->uc) {
        budget_settle(pc, NULL, false);
        pcall_finish(pc, NULL, eerr_new(DSL_ERR_UPSTREAM, NULL, n->path, a->attempt,
                                        "out of memory"));
    }
    return;
fail:
    free(key);
    json_decref(req.messages);
    json_decref(req.params);
    json_decref(req.inputs);
    act_attempt_done(a, NULL, eerr_new(DSL_ERR_INVALID_REQUEST, NULL, n->path, a->attempt, "%s",
                                       msg));
}


/* The upstream withdraws the call: from its queue, or from the plugin
 * through its cancel hook (an invoke provider), which never finishes it. */
void provider_cancel(act_t *a)
{
    pcall *pc = a->k.leaf.call;
    if (pc->uc && a->timing_out)
        upstream_cancel_timeout(pc->uc);
    else if (pc->uc)
        upstream_cancel(pc->uc);
    /* withdrawn: the reservation goes, nothing is charged (the upstream
     * does not say whether a call given up on was already billed) */
    budget_settle(pc, NULL, false);
    pcall_free(pc);
    a->k.leaf.call = NULL;
}
