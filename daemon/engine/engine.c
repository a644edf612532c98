/* engine.c -- the life of an activation and the job's pump.
 *
 * Everything a node run has in common lives here: starting an attempt,
 * arming its timeout, deciding between retry (exponential back-off with full
 * jitter, or the provider's Retry-After), fallback and failure, reshaping the
 * result with `output:`, recording `steps.ID`, and handing the outcome to the
 * parent through the job's done queue, which the pump drains. What a kind
 * does is behind its act_ops (engine_internal.h has the whole lifecycle);
 * jobs themselves are in engine_job.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

/* ---- per kind */

static void unknown_start(act_t *a) { act_fail(a, DSL_ERR_FAILED, NULL, "unknown node kind"); }

static const act_ops unknown_ops = { .start = unknown_start };

static const act_ops *kind_ops(dsl_kind k)
{
    switch (k) {
    case DSL_CALL:
    case DSL_EMBED:
    case DSL_LAMBDA: return &engine_leaf_ops;
    case DSL_CHAIN: return &engine_chain_ops;
    case DSL_PARALLEL: return &engine_parallel_ops;
    case DSL_ROUTE: return &engine_route_ops;
    case DSL_VOTE: return &engine_vote_ops;
    case DSL_MAP: return &engine_map_ops;
    case DSL_GATE: return &engine_gate_ops;
    case DSL_USE: return &engine_use_ops;
    case DSL_FAIL: return &engine_fail_ops;
    case DSL_LOOP: return &engine_loop_ops;
    case DSL_WAIT: return &engine_wait_ops;
    case DSL_KIND_COUNT: break;
    }
    return &unknown_ops;
}

/* ---- randomness and traces */

static uint64_t xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

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

/* ---- activations */

act_t *act_new(engine_job_t *job, act_t *parent, const dsl_node *node, json_t *input, int role,
               size_t slot)
{
    act_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->node = node;
    /* a call with tools is a composite: its turns and tool calls */
    a->ops = node->kind == DSL_CALL && node->u.call.ntools ? &engine_agent_ops
                                                           : kind_ops(node->kind);
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
    if (parent)
        list_add_tail(&parent->kids, &a->sib);
    return a;
}

act_t *act_spawn(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot)
{
    act_t *k = act_new(a->job, a, node, input, role, slot);
    if (!k)
        act_fail_oom(a);
    return k;
}

bool act_spawn_start(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot)
{
    act_t *k = act_spawn(a, node, input, role, slot);
    if (!k)
        return false;
    act_start(k);
    return true;
}

void act_fail(act_t *a, dsl_error_class cls, const char *code, const char *msg)
{
    act_attempt_done(a, NULL, eerr_new(cls, code, a->node->path, a->attempt, "%s", msg));
}

void act_fail_oom(act_t *a) { act_fail(a, DSL_ERR_FAILED, "out_of_memory", "out of memory"); }

static void act_cancel_work(act_t *a)
{
    if (a->ops->cancel)
        a->ops->cancel(a);
}

static void act_reset(act_t *a)
{
    if (a->ops->reset)
        a->ops->reset(a);
}

static void timeout_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    act_t *a = ud;
    engine_job_t *job = a->job;
    a->timeout = NULL;
    job->busy++;
    a->timing_out = true; /* a provider counts the call it gives up on as a timeout */
    act_cancel_work(a);
    a->timing_out = false;
    act_attempt_done(a, NULL,
                     eerr_new(DSL_ERR_TIMEOUT, NULL, a->node->path, a->attempt,
                              "timed out after %llu ms", (unsigned long long)a->node->timeout_ms));
    job->busy--;
    job_pump(job);
}

void act_arm_timeout(act_t *a)
{
    if (a->node->timeout_ms && !a->timeout)
        a->timeout = reactor_timer_add(a->job->eng->r, a->node->timeout_ms * REACTOR_MSEC,
                                       timeout_fired, a);
}

static void begin_attempt(act_t *a)
{
    if (!a->ops->own_timeout)
        act_arm_timeout(a); /* a composite's timeout covers the whole node */
    a->ops->start(a);
}

void act_start(act_t *a)
{
    span_act_begin(a);
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
    act_cancel_work(a);
    span_act_cancel(a); /* if never finished: cancelled, timed out above, or abandoned */
    job_slot_release(a);
    act_reset(a);
    if (a->ops->fini)
        a->ops->fini(a);
    reactor_t *r = a->job->eng->r;
    if (a->timeout)
        reactor_timer_cancel(r, a->timeout);
    if (a->retry_timer) {
        reactor_timer_cancel(r, a->retry_timer);
        a->job->nretry--;
    }
    if (a->inq)
        list_del(&a->q);
    list_del(&a->sib);
    json_decref(a->input);
    json_decref(a->bind);
    json_decref(a->bind_index);
    json_decref(a->res);
    eerr_free(a->err);
    eerr_free(a->fb_err);
    frame_free(a->own_frame);
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
    span_act_end(a, err);
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
    job->nretry--;
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

/* Starts A's fallback in place of ERR (stolen when true is returned). */
static bool start_fallback(act_t *a, eerr *err)
{
    json_t *ej = engine_error_json(&err->pub);
    act_t *fb = ej ? act_new(a->job, a, a->node->fallback, a->input, ROLE_FALLBACK, 0) : NULL;
    if (!fb) {
        json_decref(ej);
        return false;
    }
    job_trace(a->job, a, ENGINE_TRACE_ERROR, err->pub.code);
    a->replayed = false; /* what finishes A now is the fallback's */
    fb->bind_kind = BIND_ERROR;
    fb->bind = ej;
    a->fb_err = err;
    act_start(fb);
    return true;
}

void act_attempt_done(act_t *a, json_t *res, eerr *err)
{
    if (a->timeout) {
        reactor_timer_cancel(a->job->eng->r, a->timeout);
        a->timeout = NULL;
    }
    job_slot_release(a);
    void (*settled)(act_t *, json_t *, const eerr *) = a->ops->settled;
    json_t *raw = settled ? json_incref(res) : NULL; /* what a checkpoint records */
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
        if (settled && raw)
            settled(a, raw, NULL);
        json_decref(raw);
        act_finish(a, res, NULL);
        return;
    }
    json_decref(raw);
    act_cancel_kids(a);
    act_cancel_work(a);
    act_reset(a);
    const dsl_retry *rt = a->ops->own_retry ? NULL : a->node->retry;
    dsl_error_class cls = err->pub.cls;
    /* a replayed failure is final: the attempts it took are behind it */
    if (!a->replayed && cls != DSL_ERR_CANCELLED && rt && a->attempt < rt->max_attempts &&
        (rt->on & (1u << cls))) {
        uint64_t ms = retry_delay_ms(a, err);
        job_trace(a->job, a, ENGINE_TRACE_ERROR, err->pub.code);
        a->retry_timer = reactor_timer_add(a->job->eng->r, ms * REACTOR_MSEC, retry_fired, a);
        if (a->retry_timer) {
            a->job->nretry++;
            eerr_free(err);
            return;
        }
    }
    /* recorded too: a fallback or a partial map may absorb it */
    if (settled && cls != DSL_ERR_CANCELLED)
        settled(a, NULL, err);
    if (cls != DSL_ERR_CANCELLED && a->node->fallback && start_fallback(a, err))
        return;
    act_finish(a, NULL, err);
}

/* ---- the in-flight cap on leaves */

static void slot_grant(act_t *a)
{
    engine_job_t *job = a->job;
    a->holds_slot = true;
    job->inflight++;
    act_arm_timeout(a);
    a->ops->run(a);
}

void job_slot_request(act_t *a)
{
    engine_job_t *job = a->job;
    /* While recorded steps wait to be replayed, a live leaf waits too: what
     * they decide may cancel it (a vote that had stopped early), and a call
     * cancelled before it starts costs nothing. */
    if (job->inflight - job->exempt < job->max_in_flight && list_empty(&job->waitq) &&
        !replay_pending(job)) {
        slot_grant(a);
        return;
    }
    list_add_tail(&job->waitq, &a->q);
    a->inq = Q_WAIT;
}

void job_slot_release(act_t *a)
{
    if (a->holds_slot) {
        a->holds_slot = false;
        a->job->inflight--;
    }
    if (a->slot_exempt) {
        a->slot_exempt = false;
        a->job->exempt--;
    }
}

void job_slot_exempt(act_t *a)
{
    if (a->holds_slot && !a->slot_exempt) {
        a->slot_exempt = true;
        a->job->exempt++;
    }
}

/* ---- the pump */

/* Hands K's outcome to its parent (or ends the job with it) and frees K. */
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
        act_finish(p, res, err); /* the fallback's outcome is the node's */
        return;
    }
    if (p->ops->child_done)
        p->ops->child_done(p, role, slot, res, err);
    else
        act_attempt_done(p, res, err);
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
        } else if (!list_empty(&job->waitq) &&
                   job->inflight - job->exempt < job->max_in_flight) {
            act_t *a = LIST_OWNER(job->waitq.next, act_t, q);
            list_del(&a->q);
            a->inq = Q_NONE;
            slot_grant(a);
        } else if (!list_empty(&job->parkq) && job_parkable(job)) {
            job_park(job); /* only waits are left: the run ends, the job waits */
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

void engine_set_call_observer(engine_t *e, engine_call_observer_fn fn, void *ud)
{
    e->call_obs = fn;
    e->call_obs_ud = ud;
}
