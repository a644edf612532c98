/* engine_lambda.c -- a lambda leaf's call: inline or on the worker pool.
 *
 * A lambda flagged PURE|FAST runs inline on the reactor; any other goes to
 * the worker pool, and its completion comes back on the reactor. A cancelled
 * pool call is orphaned, not freed: the pool's done callback owns and frees
 * it, so a lambda still running on a worker never writes into freed memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/inflight.h"
#include "daemon/engine/engine_internal.h"

/* One lambda call on the pool: owned by the leaf until a cancel orphans it,
 * then by the pool's done callback. */
typedef struct lcall {
    act_t *act;                /* NULL once orphaned by a cancel */
    const plugins_lambda *lam;
    json_t *input, *args;      /* owned */
    json_t *result;            /* owned, set by the worker */
    char *cache_key;           /* owned: store the result under it, or NULL */
    hctx ctx;
    atomic_bool cancelled;     /* set by lambda_cancel; the ctx points here */
    pool_work_t *handle;
    char label[256];           /* job, step and lambda, for a report at shutdown */
    /* for the record of plugin code in flight (inflight.h): copies, since
     * the job and its graph may go while an orphaned call still runs */
    char job[INFLIGHT_JOB_MAX], step[INFLIGHT_STEP_MAX];
} lcall;

/* Ends the attempt with R (owned, may be NULL), stored under KEY (borrowed,
 * may be NULL) only once it passed the output check. */
static void lambda_finish(act_t *a, json_t *r, const hctx *h, const char *key)
{
    char msg[512];
    if (!r) {
        act_attempt_done(a, NULL, hctx_error(a, h, DSL_ERR_LAMBDA_FAILED,
                                             h->failed ? "failed" : "returned no value"));
        return;
    }
    if (output_check(r, msg, sizeof msg) < 0) {
        json_decref(r);
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path,
                                           a->attempt, "lambda '%s': %s",
                                           a->node->u.lambda.fn, msg));
        return;
    }
    leaf_cache_store(a, key, r);
    act_attempt_done(a, r, NULL);
}

static void lambda_work(void *ud)
{
    lcall *lc = ud;
    inflight_slot *fl = inflight_enter(lc->job, lc->step, lc->lam->name, NULL);
    lc->result = lc->lam->def->fn(&lc->ctx.base, lc->lam->state, lc->input, lc->args);
    inflight_leave(fl);
}

static void lcall_free(lcall *lc)
{
    free(lc->cache_key);
    json_decref(lc->input);
    json_decref(lc->args);
    json_decref(lc->result);
    free(lc);
}

static void lambda_done(void *ud, int status)
{
    lcall *lc = ud;
    act_t *a = lc->act;
    if (!a) { /* orphaned by a cancel: nobody waits for it */
        lcall_free(lc);
        return;
    }
    engine_job_t *job = a->job;
    a->k.leaf.call = NULL;
    job->busy++;
    if (status < 0) {
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path,
                                           a->attempt, "the worker pool refused the call"));
    } else {
        json_t *r = lc->result;
        lc->result = NULL;
        lambda_finish(a, r, &lc->ctx, lc->cache_key);
    }
    lcall_free(lc);
    job->busy--;
    job_pump(job);
}

/* Whether A may run plugin code now (engine.h, engine_durable_fn); if not,
 * it waits in the job's durableq, holding its slot, so that the job is
 * neither parkable nor done meanwhile. */
static bool lambda_durable(act_t *a)
{
    engine_job_t *job = a->job;
    if (!job->paid_unsettled || !job->durable)
        return true;
    if (job->durable(job->durable_ud, job)) {
        job->paid_unsettled = false;
        return true;
    }
    list_add_tail(&job->durableq, &a->q);
    a->inq = Q_DURABLE;
    return false;
}

/* engine_job_durable's pass: the waiting lambdas start again, from the top
 * (their arguments are evaluated anew: nothing ran). One may wait again if
 * a paid step was checkpointed since. */
static void durable_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    engine_job_t *job = ud;
    (void)r;
    (void)t;
    job->durable_timer = NULL;
    list_link again;
    list_init(&again);
    LIST_EACH_SAFE(it, nx, &job->durableq) {
        list_del(it);
        list_add_tail(&again, it);
    }
    job->busy++;
    while (!list_empty(&again)) {
        act_t *a = LIST_OWNER(again.next, act_t, q);
        list_del(&a->q);
        list_init(&a->q);
        a->inq = Q_NONE;
        lambda_start(a);
    }
    job->busy--;
    job_pump(job);
}

void engine_job_durable(engine_job_t *job)
{
    if (job && !list_empty(&job->durableq))
        job_pass_arm(job, &job->durable_timer, durable_fired);
}

void lambda_job_fini(engine_job_t *job)
{
    job_pass_cancel(job, &job->durable_timer);
}

void lambda_start(act_t *a)
{
    const dsl_lambda *l = &a->node->u.lambda;
    engine_t *e = a->job->eng;
    char msg[256];
    const plugins_lambda *lam = plugins_lambda_find(e->plugins, l->fn);
    if (!lam) {
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path, a->attempt,
                                           "no lambda '%s'", l->fn));
        return;
    }
    /* a tool call's arguments are the model's */
    json_t *args = l->args                ? eval_tvalue(a, l->args, NULL, msg, sizeof msg)
                   : a->role == ROLE_TOOL ? agent_tool_args(a)
                                          : json_object();
    if (!args) {
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path, a->attempt,
                                           "args: %s", msg));
        return;
    }
    char *key = NULL;
    if (a->node->cache) {
        json_t *req = json_pack("{s:O, s:O}", "input", a->input, "args", args);
        key = leaf_cache_key(a, l->fn, NULL, req);
        json_decref(req);
        if (leaf_cache_hit(a, key)) {
            free(key);
            json_decref(args);
            return;
        }
    }
    if (isolated_start(a, lam, args, key))
        return;
    if (!lambda_durable(a)) {
        free(key);
        json_decref(args);
        return;
    }
    unsigned inline_flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST;
    if ((lam->def->flags & inline_flags) == inline_flags) {
        hctx h;
        hctx_init(&h, e->plugins, lam->plugin);
        h.deadline_ms = a->node->timeout_ms ? hctx_now_ms() + a->node->timeout_ms : 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        inflight_slot *fl = inflight_enter(a->job->name, a->node->path, lam->name, NULL);
        json_t *r = lam->def->fn(&h.base, lam->state, a->input, args);
        inflight_leave(fl);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        /* on the reactor, every job waited for it: say which lambda */
        int64_t us = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
        if (us > PLUGINS_INLINE_BUDGET_US)
            plugins_lambda_overran(e->plugins, lam, (uint64_t)us);
        json_decref(args);
        lambda_finish(a, r, &h, key);
        free(key);
        return;
    }
    lcall *lc = calloc(1, sizeof *lc);
    if (!lc)
        goto oom;
    lc->act = a;
    lc->lam = lam;
    lc->input = json_incref(a->input);
    lc->args = args;
    lc->cache_key = key; /* from here on the lcall owns it */
    key = NULL;
    hctx_init(&lc->ctx, e->plugins, lam->plugin);
    atomic_init(&lc->cancelled, false);
    lc->ctx.cancelled = &lc->cancelled;
    lc->ctx.deadline_ms = a->node->timeout_ms ? hctx_now_ms() + a->node->timeout_ms : 0;
    snprintf(lc->job, sizeof lc->job, "%.*s", (int)sizeof lc->job - 1, a->job->name);
    snprintf(lc->step, sizeof lc->step, "%.*s", (int)sizeof lc->step - 1, a->node->path);
    int rc = pool_submit(e->pool, lambda_work, lambda_done, lc, &lc->handle);
    if (rc < 0) {
        lc->args = NULL;
        lcall_free(lc);
        goto oom;
    }
    snprintf(lc->label, sizeof lc->label, "job %s, step %s, lambda %s",
             a->job->name[0] ? a->job->name : "(unnamed)", a->node->path, l->fn);
    pool_label(e->pool, lc->handle, lc->label);
    a->k.leaf.call = lc;
    a->k.leaf.call_kind = LEAF_LAMBDA;
    return;
oom:
    free(key);
    json_decref(args);
    act_attempt_done(a, NULL, eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path, a->attempt,
                                       "cannot queue the call"));
}

void lambda_cancel(act_t *a)
{
    lcall *lc = a->k.leaf.call;
    lc->act = NULL; /* the pool's done callback frees it */
    atomic_store(&lc->cancelled, true); /* a lambda still running may stop early */
    pool_cancel(a->job->eng->pool, lc->handle);
    a->k.leaf.call = NULL;
}
