/* engine.c -- jobs, activations, the done-queue pump, retry and timeouts.
 *
 * Everything a node run has in common lives here: starting an attempt,
 * arming its timeout, deciding between retry (exponential back-off with full
 * jitter, or the provider's Retry-After), fallback and failure, reshaping the
 * result with `output:`, recording `steps.ID`, and handing the outcome to the
 * parent through the job's done queue. What differs per kind is in
 * engine_nodes.c; template roots in engine_eval.c; leaf calls in
 * engine_call.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/engine/engine_internal.h"

#define DEFAULT_MAX_IN_FLIGHT 1024

/* ---- errors: one allocation holding the strings */

static eerr *eerr_make(dsl_error_class cls, const char *code, const char *node, int attempts,
                       const char *msg)
{
    if (!code)
        code = dsl_error_class_name(cls);
    if (!node)
        node = "";
    size_t lc = strlen(code) + 1, ln = strlen(node) + 1, lm = strlen(msg) + 1;
    eerr *e = calloc(1, sizeof *e + lc + ln + lm);
    if (!e)
        return NULL;
    char *p = (char *)(e + 1);
    memcpy(p, code, lc);
    e->pub.code = p;
    memcpy(p + lc, node, ln);
    e->pub.node = p + lc;
    memcpy(p + lc + ln, msg, lm);
    e->pub.message = p + lc + ln;
    e->pub.cls = cls;
    e->pub.attempts = attempts;
    return e;
}

eerr *eerr_new(dsl_error_class cls, const char *code, const char *node, int attempts,
               const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return eerr_make(cls, code, node, attempts, msg);
}

eerr *eerr_dup(const eerr *e)
{
    eerr *d = eerr_make(e->pub.cls, e->pub.code, e->pub.node, e->pub.attempts, e->pub.message);
    if (d) {
        d->has_retry_after = e->has_retry_after;
        d->retry_after_ms = e->retry_after_ms;
    }
    return d;
}

void eerr_free(eerr *e) { free(e); }

json_t *engine_error_json(const engine_error *err)
{
    if (!err)
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:i}", "code", err->code, "message", err->message,
                     "node", err->node, "attempts", err->attempts);
}

/* The fallback of last resort when memory runs out while failing. */
static eerr *eerr_oom(const act_t *a)
{
    return eerr_new(DSL_ERR_FAILED, "out_of_memory", a ? a->node->path : "", a ? a->attempt : 0,
                    "out of memory");
}

/* ---- job helpers */

static uint64_t xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

uint64_t job_rand(engine_job_t *job) { return xorshift64s(&job->rng); }

uint64_t engine_backoff_ms(const dsl_retry *rt, int attempt, uint64_t *rng)
{
    double d = (double)rt->initial_delay_ms;
    for (int i = 1; i < attempt && d < (double)rt->max_delay_ms; i++)
        d *= rt->multiplier;
    if (d > (double)rt->max_delay_ms)
        d = (double)rt->max_delay_ms;
    uint64_t cap = (uint64_t)d;
    return cap ? xorshift64s(rng) % (cap + 1) : 0;
}

void job_trace(engine_job_t *job, const act_t *a, engine_trace_event ev, const char *code)
{
    if (!job->trace)
        return;
    const dsl_node *n = a->node;
    engine_trace t = {
        .job = job, .node = n->path, .kind = n->kind, .event = ev,
        .time_us = reactor_now_us(job->eng->r), .attempt = a->attempt,
        .provider = n->kind == DSL_CALL ? n->u.call.provider
                    : n->kind == DSL_EMBED ? n->u.embed.provider : NULL,
        .code = code, .cached = a->cached, .replayed = a->replayed,
    };
    job->trace(job->trace_ud, &t);
}

void job_trace_progress(engine_job_t *job, const act_t *a, size_t done, size_t total)
{
    if (!job->trace)
        return;
    engine_trace t = {
        .job = job, .node = a->node->path, .kind = a->node->kind,
        .event = ENGINE_TRACE_PROGRESS, .time_us = reactor_now_us(job->eng->r),
        .attempt = a->attempt, .done = done, .total = total,
    };
    job->trace(job->trace_ud, &t);
}

static bool is_leaf(const dsl_node *n)
{
    return n->kind == DSL_CALL || n->kind == DSL_EMBED || n->kind == DSL_LAMBDA;
}

/* ---- activations */

act_t *act_new(engine_job_t *job, act_t *parent, const dsl_node *node, json_t *input, int role,
               size_t slot)
{
    act_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->node = node;
    a->parent = parent;
    a->job = job;
    list_init(&a->kids);
    list_init(&a->sib);
    list_init(&a->q);
    a->scope = parent ? parent->scope : &job->scope;
    a->frame = parent ? parent->frame : &job->scope.top;
    a->input = json_incref(input ? input : json_null());
    a->role = role;
    a->slot = slot;
    a->attempt = 1;
    a->rheap = RHEAP_NONE;
    if (parent)
        list_add_tail(&parent->kids, &a->sib);
    return a;
}

static void timeout_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    act_t *a = ud;
    engine_job_t *job = a->job;
    a->timeout = NULL;
    job->busy++;
    call_cancel(a);
    act_attempt_done(a, NULL,
                     eerr_new(DSL_ERR_TIMEOUT, NULL, a->node->path, a->attempt,
                              "timed out after %llu ms", (unsigned long long)a->node->timeout_ms));
    job->busy--;
    job_pump(job);
}

static void arm_timeout(act_t *a)
{
    if (a->node->timeout_ms && !a->timeout)
        a->timeout = reactor_timer_add(a->job->eng->r, a->node->timeout_ms * REACTOR_MSEC,
                                       timeout_fired, a);
}

static void begin_attempt(act_t *a)
{
    if (!is_leaf(a->node))
        arm_timeout(a); /* a composite's timeout covers the whole node */
    nodes_start(a);
}

void act_start(act_t *a)
{
    job_trace(a->job, a, ENGINE_TRACE_START, NULL);
    begin_attempt(a);
}

void act_cancel_kids(act_t *a)
{
    while (!list_empty(&a->kids))
        act_free(LIST_OWNER(a->kids.next, act_t, sib));
}

void act_free(act_t *a)
{
    if (!a)
        return;
    act_cancel_kids(a);
    call_cancel(a);
    leaf_release(a);
    replay_forget(a);
    reactor_t *r = a->job->eng->r;
    if (a->timeout)
        reactor_timer_cancel(r, a->timeout);
    if (a->retry_timer)
        reactor_timer_cancel(r, a->retry_timer);
    if (a->inq)
        list_del(&a->q);
    list_del(&a->sib);
    json_decref(a->input);
    json_decref(a->orig_input);
    json_decref(a->bind);
    json_decref(a->bind_index);
    json_decref(a->res);
    json_decref(a->a);
    json_decref(a->b);
    json_decref(a->c);
    json_decref(a->rrec);
    free(a->key);
    eerr_free(a->err);
    eerr_free(a->fb_err);
    frame_free(a->own_frame);
    if (a->own_scope) {
        scope_fini(a->own_scope);
        free(a->own_scope);
    }
    free(a);
}

/* A's final outcome: recorded, traced and queued for the parent. */
static void act_finish(act_t *a, json_t *res, eerr *err)
{
    if (a->timeout) {
        reactor_timer_cancel(a->job->eng->r, a->timeout);
        a->timeout = NULL;
    }
    if (!err && eval_record_step(a, res, a->fb_err) < 0) {
        json_decref(res);
        res = NULL;
        err = eerr_oom(a);
    }
    job_trace(a->job, a, err ? ENGINE_TRACE_ERROR : ENGINE_TRACE_FINISH,
              err ? err->pub.code : NULL);
    a->res = res;
    a->err = err;
    if (a->inq)
        list_del(&a->q);
    list_add_tail(&a->job->doneq, &a->q);
    a->inq = Q_DONE;
}

static void retry_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    act_t *a = ud;
    engine_job_t *job = a->job;
    a->retry_timer = NULL;
    a->attempt++;
    job->busy++;
    job_trace(job, a, ENGINE_TRACE_RETRY, NULL);
    begin_attempt(a);
    job->busy--;
    job_pump(job);
}

/* The delay before attempt A->attempt + 1, in ms: full jitter over the
 * exponential delay, unless the provider said how long to wait. */
static uint64_t retry_delay_ms(act_t *a, const eerr *err)
{
    if (err->has_retry_after)
        return err->retry_after_ms;
    return engine_backoff_ms(a->node->retry, a->attempt, &a->job->rng);
}

void act_attempt_done(act_t *a, json_t *res, eerr *err)
{
    if (a->timeout) {
        reactor_timer_cancel(a->job->eng->r, a->timeout);
        a->timeout = NULL;
    }
    leaf_release(a);
    bool leaf = is_leaf(a->node);
    json_t *raw = leaf ? json_incref(res) : NULL; /* what a checkpoint records */
    if (!err && a->node->output) {
        char msg[256];
        json_t *shaped = eval_tvalue(a, a->node->output, res, msg, sizeof msg);
        json_decref(res);
        res = shaped;
        if (!shaped)
            err = eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path, a->attempt,
                           "output: %s", msg);
    }
    if (!err) {
        /* only now: an attempt whose `output:` fails is not a success */
        if (leaf && raw)
            checkpoint_leaf(a, raw, NULL);
        json_decref(raw);
        act_finish(a, res, NULL);
        return;
    }
    json_decref(raw);
    act_cancel_kids(a);
    call_cancel(a);
    nodes_reset(a);
    const dsl_retry *rt = a->node->retry;
    dsl_error_class cls = err->pub.cls;
    /* a replayed failure is final: the attempts it took are behind it */
    if (!a->replayed && cls != DSL_ERR_CANCELLED && rt && a->attempt < rt->max_attempts &&
        (rt->on & (1u << cls))) {
        uint64_t ms = retry_delay_ms(a, err);
        job_trace(a->job, a, ENGINE_TRACE_ERROR, err->pub.code);
        a->retry_timer = reactor_timer_add(a->job->eng->r, ms * REACTOR_MSEC, retry_fired, a);
        if (a->retry_timer) {
            eerr_free(err);
            return;
        }
    }
    /* recorded too: a fallback or a partial map may absorb it */
    if (leaf && cls != DSL_ERR_CANCELLED)
        checkpoint_leaf(a, NULL, err);
    if (cls != DSL_ERR_CANCELLED && a->node->fallback) {
        json_t *ej = engine_error_json(&err->pub);
        act_t *fb = ej ? act_new(a->job, a, a->node->fallback, a->input, ROLE_FALLBACK, 0) : NULL;
        if (fb) {
            job_trace(a->job, a, ENGINE_TRACE_ERROR, err->pub.code);
            a->replayed = false; /* what finishes A now is the fallback's */
            fb->bind_kind = BIND_ERROR;
            fb->bind = ej;
            a->in_fallback = true;
            a->fb_err = err;
            act_start(fb);
            return;
        }
        json_decref(ej);
    }
    act_finish(a, NULL, err);
}

/* ---- the in-flight cap on leaves */

static void leaf_grant(act_t *a)
{
    engine_job_t *job = a->job;
    a->holds_slot = true;
    job->inflight++;
    arm_timeout(a);
    call_start(a);
}

void leaf_request(act_t *a)
{
    engine_job_t *job = a->job;
    /* While recorded steps wait to be replayed, a live leaf waits too: what
     * they decide may cancel it (a vote that had stopped early), and a call
     * cancelled before it starts costs nothing. */
    if (job->inflight < job->max_in_flight && list_empty(&job->waitq) && !replay_pending(job)) {
        leaf_grant(a);
        return;
    }
    list_add_tail(&job->waitq, &a->q);
    a->inq = Q_WAIT;
}

void leaf_release(act_t *a)
{
    if (a->holds_slot) {
        a->holds_slot = false;
        a->job->inflight--;
    }
}

/* ---- jobs */

static void job_free(engine_job_t *job)
{
    engine_t *e = job->eng;
    act_free(job->root);
    if (job->start_timer)
        reactor_timer_cancel(e->r, job->start_timer);
    if (job->job_timer)
        reactor_timer_cancel(e->r, job->job_timer);
    list_del(&job->link);
    e->njobs--;
    json_decref(job->output);
    json_decref(job->usage);
    eerr_free(job->error);
    replay_job_fini(job);
    scope_fini(&job->scope);
    free(job);
}

/* Ends JOB now with RES or ERR (stolen), dropping whatever still runs. */
static void job_end(engine_job_t *job, json_t *res, eerr *err)
{
    if (job->ended) {
        json_decref(res);
        eerr_free(err);
        return;
    }
    act_t *root = job->root;
    job->root = NULL;
    act_free(root);
    job->output = res;
    job->error = err;
    job->ended = true;
}

/* Runs the done callback and frees the job. */
static void job_finalize(engine_job_t *job)
{
    job->ending = true;
    if (job->job_timer) {
        reactor_timer_cancel(job->eng->r, job->job_timer);
        job->job_timer = NULL;
    }
    if (job->done)
        job->done(job, job->ud);
    job_free(job);
}

static void deliver(engine_job_t *job, act_t *k)
{
    list_del(&k->q);
    k->inq = Q_NONE;
    json_t *res = k->res;
    eerr *err = k->err;
    k->res = NULL;
    k->err = NULL;
    act_t *p = k->parent;
    if (!p) {
        job_end(job, res, err);
        return;
    }
    int role = k->role;
    size_t slot = k->slot;
    act_free(k);
    if (role == ROLE_FALLBACK) {
        if (err) {
            act_finish(p, NULL, err);
        } else {
            act_finish(p, res, NULL);
        }
        return;
    }
    nodes_child_done(p, role, slot, res, err);
}

bool job_pump(engine_job_t *job)
{
    if (job->busy)
        return true;
    job->busy++;
    while (!job->ended) {
        if (job->cancel_req) {
            eerr *err = eerr_new(DSL_ERR_CANCELLED, NULL, job->scope.g->root->path, 0,
                                 "the job was cancelled");
            job_end(job, NULL, err ? err : eerr_oom(NULL));
        } else if (!list_empty(&job->doneq)) {
            deliver(job, LIST_OWNER(job->doneq.next, act_t, q));
        } else if (replay_pending(job)) {
            /* one at a time and only when nothing else is queued, so that
             * recorded steps reach their parents in their first order */
            replay_release(job);
        } else if (!list_empty(&job->waitq) && job->inflight < job->max_in_flight) {
            act_t *a = LIST_OWNER(job->waitq.next, act_t, q);
            list_del(&a->q);
            a->inq = Q_NONE;
            leaf_grant(a);
        } else {
            break;
        }
    }
    job->busy--;
    if (job->ended && !job->ending) {
        job_finalize(job);
        return false;
    }
    return true;
}

static void job_timeout_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    engine_job_t *job = ud;
    job->job_timer = NULL;
    eerr *err = eerr_new(DSL_ERR_TIMEOUT, NULL, job->scope.g->root->path, 1,
                         "the job timed out after %llu ms",
                         (unsigned long long)job->scope.g->timeout_ms);
    job_end(job, NULL, err ? err : eerr_oom(NULL));
    job_pump(job);
}

static void job_start_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    engine_job_t *job = ud;
    job->start_timer = NULL;
    if (job->error) { /* refused at submit */
        job->ended = true;
        job_pump(job);
        return;
    }
    dsl_graph *g = job->scope.g;
    job->root = act_new(job, NULL, g->root, job->scope.input, ROLE_MAIN, 0);
    if (!job->root) {
        job_end(job, NULL, eerr_oom(NULL));
        job_pump(job);
        return;
    }
    if (g->timeout_ms)
        job->job_timer = reactor_timer_add(r, g->timeout_ms * REACTOR_MSEC, job_timeout_fired, job);
    job->busy++;
    act_start(job->root);
    job->busy--;
    job_pump(job);
}

engine_job_t *engine_submit(engine_t *e, dsl_graph *g, json_t *input,
                            const engine_job_options *o, engine_done_fn done, void *ud)
{
    engine_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->eng = e;
    job->done = done;
    job->ud = ud;
    list_init(&job->doneq);
    list_init(&job->waitq);
    job->max_in_flight = o && o->max_in_flight ? o->max_in_flight : e->opt.max_in_flight;
    job->trace = o && o->trace ? o->trace : e->opt.trace;
    job->trace_ud = o && o->trace ? o->trace_ud : e->opt.trace_ud;
    uint64_t seed = o && o->seed ? o->seed : (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)job;
    job->rng = seed ? seed : 0x9E3779B97F4A7C15u;
    if (replay_job_init(job, o) < 0)
        goto fail;
    char msg[512];
    dsl_error_class cls = DSL_ERR_FAILED;
    if (scope_init(&job->scope, g, input, msg, sizeof msg, &cls) < 0) {
        bool invalid = cls != DSL_ERR_CLASS_COUNT;
        job->error = eerr_new(DSL_ERR_FAILED, invalid ? "invalid_input" : "out_of_memory",
                              g->root->path, 0, "%s", msg);
        if (!job->error)
            goto fail;
    }
    job->start_timer = reactor_timer_add(e->r, 0, job_start_fired, job);
    if (!job->start_timer)
        goto fail;
    list_add_tail(&e->jobs, &job->link);
    e->njobs++;
    return job;
fail:
    eerr_free(job->error);
    replay_job_fini(job);
    scope_fini(&job->scope);
    free(job);
    return NULL;
}

void engine_cancel(engine_job_t *job)
{
    if (!job || job->ending || job->ended)
        return;
    /* Inside one of the job's own callbacks the tree is in use: the pump
     * ends the job as soon as that callback returns. */
    job->cancel_req = true;
    job_pump(job);
}

json_t *engine_job_output(const engine_job_t *job) { return job->ended ? job->output : NULL; }

json_t *engine_job_usage(const engine_job_t *job) { return job->usage; }

const engine_error *engine_job_error(const engine_job_t *job)
{
    return job->ended && job->error ? &job->error->pub : NULL;
}

size_t engine_job_count(const engine_t *e) { return e->njobs; }

/* ---- the engine */

engine_t *engine_new(reactor_t *r, pool_t *pool, const plugins_t *plugins,
                     const engine_options *opt)
{
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->r = r;
    e->pool = pool;
    e->plugins = plugins;
    if (opt)
        e->opt = *opt;
    if (!e->opt.max_in_flight)
        e->opt.max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    list_init(&e->jobs);
    if (!(e->cache = engine_cache_new(e->opt.cache_entries)))
        goto fail;
    return e;
fail:
    free(e);
    return NULL;
}

void engine_set_workflow_lookup(engine_t *e, engine_workflow_lookup_fn fn, void *ud)
{
    e->wf_lookup = fn;
    e->wf_ud = ud;
}

void engine_free(engine_t *e)
{
    if (!e)
        return;
    while (!list_empty(&e->jobs)) {
        engine_job_t *job = LIST_OWNER(e->jobs.next, engine_job_t, link);
        if (job->ending) { /* freed by the callback that is running it */
            list_del(&job->link);
            continue;
        }
        engine_cancel(job);
        if (!list_empty(&e->jobs) && LIST_OWNER(e->jobs.next, engine_job_t, link) == job)
            list_del(&job->link); /* busy: engine_free from its callback is not allowed */
    }
    call_free_providers(e);
    engine_cache_free(e->cache); /* after the jobs: none can store into it now */
    free(e);
}
