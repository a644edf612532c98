/* engine_batch.c -- calls in batch mode: which go to a provider's Batch
 * API, and what their lines' answers mean to the step.
 *
 * A call or embed leaf runs in batch mode when its node says so (`mode:
 * batch`, its own or its map's), or says nothing and sits in a map of at
 * least its provider's batch_api.maps_over items. Then, when the engine has
 * batch ops (engine_set_batch), the provider a Batch API and the call is
 * no model turn of a call with tools, each attempt looks its step's line
 * up instead of calling:
 *
 *   NONE                    submit a line for this attempt and park
 *   PENDING                 park (the daemon wakes the job when it is DONE)
 *   DONE, this attempt      its result is decoded as the direct answer
 *                           would be, and the step ends through the same
 *                           path (output checks, cost at the batch price,
 *                           checkpoint, events, retry policy)
 *   DONE, an earlier one    that attempt failed: a new line, or with
 *                           fallback_direct the call is made directly
 *
 * A parked leaf holds no in-flight slot and no timer (its time is the
 * batch's deadline): it sits in the job's parkq beside the wait_for nodes,
 * so a job with nothing else to do parks as a whole and costs nothing
 * but its record until its lines end. Attempts are the line's: a run that
 * resumes finds attempt 3's line and goes on as attempt 3. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

void engine_set_batch(engine_t *e, const engine_batch_ops *ops, void *ud)
{
    e->batch = ops;
    e->batch_ud = ud;
}

static const dsl_batch *node_batch(const dsl_node *n)
{
    return n->kind == DSL_CALL ? &n->u.call.batch : n->kind == DSL_EMBED ? &n->u.embed.batch
                                                                         : NULL;
}

static const char *node_provider(const dsl_node *n)
{
    return n->kind == DSL_CALL ? n->u.call.provider : n->u.embed.provider;
}

/* Whether a map of N items makes the provider of U batch the calls of its
 * body that say nothing. */
static bool maps_over(upstream_t *u, size_t n)
{
    const upstream_batch_api *s = upstream_batch_settings(u);
    return s && s->maps_over > 0 && (int64_t)n >= s->maps_over;
}

/* Whether the node's settings ask leaf A to go to a batch (whether it can
 * is batch_route's question). */
static bool wants_batch(const act_t *a, upstream_t *u)
{
    const dsl_batch *b = node_batch(a->node);
    if (!b || b->mode == DSL_MODE_DIRECT)
        return false;
    if (b->mode == DSL_MODE_BATCH)
        return true;
    for (const act_t *x = a->parent; x; x = x->parent)
        if (x->node->kind == DSL_MAP && maps_over(u, x->k.map.n))
            return true;
    return false;
}

static void batch_log(engine_t *e, const pinst_t *pi, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void batch_log(engine_t *e, const pinst_t *pi, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    plugins_vlog(e->plugins, pi->prov ? pi->prov->plugin->name : NULL, LOOM_LOG_INFO, fmt, ap);
    va_end(ap);
}

/* A call in batch mode that runs directly says why, once per job and node,
 * rather than once per item of a 10,000-item map. */
static void say_direct(act_t *a, const pinst_t *pi, const char *why)
{
    engine_job_t *job = a->job;
    if (!job->batch_direct && !(job->batch_direct = json_object()))
        return;
    if (json_object_get(job->batch_direct, a->node->path))
        return;
    json_object_set_new(job->batch_direct, a->node->path, json_true());
    batch_log(job->eng, pi, "job %s, %s: batch mode, but %s: its calls run directly",
              job->name[0] ? job->name : "?", a->node->path, why);
}

static bool fallback_direct(const act_t *a, upstream_t *u)
{
    const dsl_batch *b = node_batch(a->node);
    if (b && b->has_fallback_direct)
        return b->fallback_direct;
    const upstream_batch_api *s = upstream_batch_settings(u);
    return s && s->fallback_direct == 1;
}

/* Leaf A waits for its line in BATCH: no slot, no timer, in the parkq. */
static void park(act_t *a, const char *batch)
{
    char *name = strdup(batch);
    if (!name) {
        act_fail_oom(a);
        return;
    }
    free(a->k.leaf.batch);
    a->k.leaf.batch = name;
    job_slot_release(a);
    if (a->timeout) {
        reactor_timer_cancel(a->job->eng->r, a->timeout);
        a->timeout = NULL;
    }
    list_add_tail(&a->job->parkq, &a->q);
    a->inq = Q_PARK;
}

static void fail_code(act_t *a, loom_errcode code, const char *msg)
{
    dsl_error_class cls = code == LOOM_E_INVALID_REQUEST || code == LOOM_E_CONFIG
                              ? DSL_ERR_INVALID_REQUEST
                          : code == LOOM_E_QUOTA ? DSL_ERR_QUOTA
                          : code == LOOM_E_TIMEOUT ? DSL_ERR_TIMEOUT
                          : code == LOOM_E_RATE_LIMITED ? DSL_ERR_RATE_LIMITED
                                                        : DSL_ERR_UPSTREAM;
    act_attempt_done(a, NULL, eerr_new(cls, NULL, a->node->path, a->attempt, "%s", msg));
}

batch_route_t batch_route(act_t *a, pinst_t *pi, const loom_request *req, upstream_result *res)
{
    engine_job_t *job = a->job;
    engine_t *e = job->eng;
    memset(res, 0, sizeof *res);
    /* a line without a result says nothing of tokens: unknown, not 0 */
    res->usage = (loom_usage){ .input_tokens = -1, .output_tokens = -1,
                               .cache_read_tokens = -1, .cache_write_tokens = -1 };
    /* a model turn needs the answer to the turn before: never batched */
    if (a->role == ROLE_TURN || !wants_batch(a, pi->up))
        return BATCH_DIRECT;
    if (!e->batch) {
        say_direct(a, pi, "this daemon has no batch manager");
        return BATCH_DIRECT;
    }
    if (!upstream_has_batch_api(pi->up)) {
        say_direct(a, pi, "its provider has no Batch API (or its batch_api is false)");
        return BATCH_DIRECT;
    }
    const char *key = step_key(a);
    if (!key) {
        act_fail_oom(a);
        return BATCH_HANDLED;
    }
    engine_batch_line line;
    memset(&line, 0, sizeof line);
    char err[256] = "";
    if (e->batch->lookup(e->batch_ud, job->name, key, &line, err, sizeof err) < 0) {
        act_fail(a, DSL_ERR_UPSTREAM, NULL, err[0] ? err : "the batch line could not be read");
        return BATCH_HANDLED;
    }
    /* the hooks' strings are not trusted to end where they should */
    line.batch[sizeof line.batch - 1] = '\0';
    line.message[sizeof line.message - 1] = '\0';
    /* the line says which attempt the step is at: a resumed run goes on
     * from there rather than from 1 */
    if (line.state != ENGINE_BATCH_NONE && line.attempt > a->attempt)
        a->attempt = line.attempt;
    switch (line.state) {
    case ENGINE_BATCH_NONE:
        return BATCH_SUBMIT;
    case ENGINE_BATCH_PENDING:
        if (line.attempt < a->attempt) /* an earlier attempt's, still out: replaced */
            return BATCH_SUBMIT;
        park(a, line.batch);
        return BATCH_HANDLED;
    case ENGINE_BATCH_DONE:
        break;
    }
    if (line.attempt < a->attempt) {
        /* the line of an attempt that failed: this one is new */
        json_decref(line.result);
        return fallback_direct(a, pi->up) ? BATCH_DIRECT : BATCH_SUBMIT;
    }
    if (!line.result) {
        res->code = line.code != LOOM_OK ? line.code : LOOM_E_UPSTREAM;
        output_text_fix(line.message);
        /* the message must outlive this frame: kept on the job's error */
        char *m = strdup(line.message[0] ? line.message : "the batch line has no result");
        if (!m) {
            act_fail_oom(a);
            return BATCH_HANDLED;
        }
        res->message = m;
        return BATCH_ANSWER;
    }
    char *text = json_dumps(line.result, JSON_COMPACT);
    json_decref(line.result);
    if (!text) {
        act_fail_oom(a);
        return BATCH_HANDLED;
    }
    if (upstream_batch_result(pi->up, req, text, strlen(text), res) < 0) {
        res->output = NULL;
        if (res->code == LOOM_OK)
            res->code = LOOM_E_UPSTREAM;
    }
    free(text);
    char *m = res->output ? NULL : strdup(res->message ? res->message : "failed");
    if (!res->output && !m) {
        json_decref(res->tool_calls);
        act_fail_oom(a);
        return BATCH_HANDLED;
    }
    res->message = m; /* the upstream's is valid only until its next call */
    return BATCH_ANSWER;
}

/* The step_batched event of leaf A, whose step key is KEY. */
static void trace_batched(act_t *a, const char *key)
{
    engine_job_t *job = a->job;
    if (!job->trace)
        return;
    engine_trace t = {
        .job = job, .node = a->node->path, .kind = a->node->kind,
        .event = ENGINE_TRACE_BATCHED, .time_us = reactor_now_us(job->eng->r),
        .attempt = a->attempt, .provider = node_provider(a->node), .key = key,
    };
    job->trace(job->trace_ud, &t);
}

void batch_submit(act_t *a, pinst_t *pi, const loom_request *req)
{
    engine_job_t *job = a->job;
    engine_t *e = job->eng;
    const char *key = step_key(a);
    if (!key) {
        act_fail_oom(a);
        return;
    }
    const dsl_batch *b = node_batch(a->node);
    engine_batch_submit s = {
        .job = job->name, .key = key, .node = a->node->path, .attempt = a->attempt,
        .provider = pi->name, .up = pi->up, .req = req,
        .window_ms = b ? b->window_ms : 0, .deadline_ms = b ? b->deadline_ms : 0,
    };
    loom_errcode code = LOOM_E_UPSTREAM;
    char err[256] = "";
    if (e->batch->submit(e->batch_ud, &s, &code, err, sizeof err) < 0) {
        output_text_fix(err);
        fail_code(a, code, err[0] ? err : "the batch line could not be queued");
        return;
    }
    /* the line is on disk from here on: its batch's name, when it has one
     * already, is what the job's waits show */
    engine_batch_line line;
    memset(&line, 0, sizeof line);
    char lerr[256];
    if (e->batch->lookup(e->batch_ud, job->name, key, &line, lerr, sizeof lerr) < 0)
        line.batch[0] = '\0';
    json_decref(line.result);
    line.batch[sizeof line.batch - 1] = '\0';
    trace_batched(a, key);
    park(a, line.batch);
}

bool batch_map_unbounded(act_t *a)
{
    engine_t *e = a->job->eng;
    if (!e->batch)
        return false;
    const dsl_graph *g = a->scope->g;
    const dsl_node *map = a->node;
    for (size_t i = 0; i < g->nnodes; i++) {
        const dsl_node *n = g->nodes[i];
        const dsl_batch *b = node_batch(n);
        if (!b || b->mode == DSL_MODE_DIRECT || (n->kind == DSL_CALL && n->u.call.ntools))
            continue;
        const dsl_node *p = n->parent;
        while (p && p != map)
            p = p->parent;
        if (!p)
            continue;
        pinst_t *pi = pinst_find(e, node_provider(n));
        if (!pi || !upstream_has_batch_api(pi->up))
            continue;
        if (b->mode == DSL_MODE_BATCH || maps_over(pi->up, a->k.map.n))
            return true;
        /* a map between N and this one may be the large one: its own
         * start decides for its items */
    }
    return false;
}

json_t *batch_wait_json(act_t *a, uint64_t seq)
{
    const char *key = step_key(a);
    return key ? json_pack("{s:s, s:s, s:s, s:I}", "key", key, "node", a->node->path, "batch",
                           a->k.leaf.batch ? a->k.leaf.batch : "", "seq", (json_int_t)seq)
               : NULL;
}

/* engine_job_batch_ready's pass: every call parked on a line looks again. */
static void ready_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    engine_job_t *job = ud;
    job->batch_timer = NULL;
    list_link again;
    list_init(&again);
    LIST_EACH_SAFE(it, nx, &job->parkq) {
        act_t *a = LIST_OWNER(it, act_t, q);
        if (a->node->kind == DSL_WAIT || !a->k.leaf.batch)
            continue;
        list_del(&a->q);
        list_add_tail(&again, &a->q);
    }
    job->busy++;
    /* each is taken off AGAIN before it runs: one that parks again goes
     * back to the job's parkq */
    while (!list_empty(&again)) {
        act_t *a = LIST_OWNER(again.next, act_t, q);
        list_del(&a->q);
        list_init(&a->q);
        a->inq = Q_NONE;
        free(a->k.leaf.batch);
        a->k.leaf.batch = NULL;
        job_slot_request(a);
    }
    job->busy--;
    job_pump(job);
}

void engine_job_batch_ready(engine_job_t *job)
{
    if (job)
        job_pass_arm(job, &job->batch_timer, ready_fired);
}

void batch_job_fini(engine_job_t *job)
{
    job_pass_cancel(job, &job->batch_timer);
    json_decref(job->batch_direct);
    job->batch_direct = NULL;
}
