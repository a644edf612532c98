/* engine_job.c -- jobs from submit to their done callback, and the engine
 * object that holds them.
 *
 * A job starts on a later reactor pass (so DONE never runs inside
 * engine_submit), runs its root activation (engine.c) and ends once, by its
 * root's outcome, its timeout or a cancel; the pump then calls DONE and
 * frees it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/engine/engine_internal.h"

#define DEFAULT_MAX_IN_FLIGHT 1024

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
    json_decref(job->waits);
    json_decref(job->usage);
    eerr_free(job->error);
    replay_job_fini(job);
    batch_job_fini(job);
    lambda_job_fini(job);
    scope_fini(&job->scope);
    free(job->tenant);
    free(job);
}

void job_end(engine_job_t *job, json_t *res, eerr *err)
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

void job_finalize(engine_job_t *job)
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

void job_pass_arm(engine_job_t *job, reactor_timer_t **slot, reactor_timer_cb fn)
{
    if (job->ended || job->ending || *slot)
        return;
    *slot = reactor_timer_add(job->eng->r, 0, fn, job);
}

void job_pass_cancel(engine_job_t *job, reactor_timer_t **slot)
{
    if (*slot) {
        reactor_timer_cancel(job->eng->r, *slot);
        *slot = NULL;
    }
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
    list_init(&job->parkq);
    list_init(&job->durableq);
    job->max_in_flight = o && o->max_in_flight ? o->max_in_flight : e->opt.max_in_flight;
    job->trace = o && o->trace ? o->trace : e->opt.trace;
    job->trace_ud = o && o->trace ? o->trace_ud : e->opt.trace_ud;
    uint64_t seed = o && o->seed ? o->seed : (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)job;
    job->rng = seed ? seed : 0x9E3779B97F4A7C15u;
    if (o && o->name)
        snprintf(job->name, sizeof job->name, "%s", o->name);
    job->tenant_weight = o && o->tenant_weight > 0 ? o->tenant_weight : 1;
    if (o && o->job_span) {
        job->span_ctx = *o->job_span;
        job->has_trace = true;
        job->tracer = o->tracer;
        job->recording = o->tracer && (o->job_span->flags & TRACE_FLAG_SAMPLED);
    }
    if (o && o->tenant && !(job->tenant = strdup(o->tenant)))
        goto fail;
    /* the submit's budget and the workflow's both hold: the tighter counts */
    job->budget_usd = o && o->has_budget && o->budget_usd >= 0 ? o->budget_usd : -1;
    if (g->has_budget && (job->budget_usd < 0 || g->budget_usd < job->budget_usd))
        job->budget_usd = g->budget_usd;
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
    free(job->tenant);
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

bool engine_job_cost(const engine_job_t *job, double *usd)
{
    *usd = job->has_cost ? job->spent_usd : 0;
    return job->has_cost;
}

void engine_set_prices(engine_t *e, const engine_prices *p) { e->prices = p; }

void engine_set_ledger(engine_t *e, engine_ledger *l) { e->ledger = l; }

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

void engine_set_mcp(engine_t *e, const engine_mcp_ops *ops, void *ud)
{
    e->mcp = ops;
    e->mcp_ud = ud;
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
    pinst_free_all(e);
    engine_cache_free(e->cache); /* after the jobs: none can store into it now */
    free(e);
}
