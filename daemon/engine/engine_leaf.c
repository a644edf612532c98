/* engine_leaf.c -- the leaves: call, embed and lambda.
 *
 * A leaf's attempt goes: start (a step an earlier run finished ends with
 * its record, taking no slot; otherwise ask the job for an in-flight slot),
 * run (the slot is granted: apply `input:`, then the lambda or provider
 * call, engine_lambda.c and engine_call.c), and ends through
 * act_attempt_done. When its outcome is final it is checkpointed.
 *
 * `cache: true`: once the request is rendered, its key is looked up in the
 * engine's cache (engine_cache.h). A hit ends the attempt inline, the way a
 * PURE|FAST lambda does, without calling anything. */
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

/* ---- the cache */

char *leaf_cache_key(const act_t *a, const char *name, const char *model, json_t *request)
{
    if (!a->node->cache || !request)
        return NULL;
    return engine_cache_key(dsl_kind_name(a->node->kind), name, model, request);
}

/* Inline: run only where an inline completion is allowed (inside the job's
 * pump or a callback), which is where a leaf's run is. */
bool leaf_cache_hit(act_t *a, const char *key)
{
    json_t *hit = key ? engine_cache_get(a->job->eng->cache, key) : NULL;
    if (!hit)
        return false;
    a->cached = true;
    act_attempt_done(a, json_incref(hit), NULL);
    return true;
}

/* A failed store only costs a later miss. */
void leaf_cache_store(const act_t *a, const char *key, json_t *res)
{
    if (key && res)
        (void)engine_cache_put(a->job->eng->cache, key, res);
}

/* ---- input */

eerr *leaf_apply_input(act_t *a)
{
    const dsl_node *n = a->node;
    struct act_leaf *l = &a->k.leaf;
    /* `input:` overrides what the node receives, `prev` included. */
    const dsl_tvalue *over = n->kind == DSL_LAMBDA ? n->u.lambda.input
                             : n->kind == DSL_CALL ? n->u.call.input : NULL;
    if (!over)
        return NULL;
    char msg[256];
    /* every attempt evaluates the override over what the node received */
    if (!l->orig_input)
        l->orig_input = json_incref(a->input);
    json_decref(a->input);
    a->input = json_incref(l->orig_input);
    json_t *in = eval_tvalue(a, over, NULL, msg, sizeof msg);
    if (!in)
        return eerr_new(DSL_ERR_INVALID_REQUEST, NULL, n->path, a->attempt, "input: %s", msg);
    json_decref(a->input);
    a->input = in;
    return NULL;
}

/* ---- the lifecycle */

static void leaf_start(act_t *a)
{
    a->replayed = false;
    if (!replay_take(a))
        job_slot_request(a);
}

static void leaf_run(act_t *a)
{
    a->cached = false;
    eerr *err = leaf_apply_input(a);
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    const char *server, *tool;
    json_t *args;
    if (a->role == ROLE_TOOL && agent_tool_mcp(a, &server, &tool, &args))
        mcp_tool_start(a);
    else if (a->node->kind == DSL_LAMBDA)
        lambda_start(a);
    else
        provider_start(a);
}

static void leaf_cancel(act_t *a)
{
    if (a->inq == Q_DURABLE) {
        /* a lambda waiting for its job's checkpoints (engine_lambda.c) */
        list_del(&a->q);
        list_init(&a->q);
        a->inq = Q_NONE;
    }
    if (!a->k.leaf.call)
        return;
    if (a->k.leaf.call_kind == LEAF_LAMBDA)
        lambda_cancel(a);
    else if (a->k.leaf.call_kind == LEAF_ISOLATED)
        isolated_cancel(a);
    else if (a->k.leaf.call_kind == LEAF_MCP)
        mcp_tool_cancel(a);
    else
        provider_cancel(a);
}

static void leaf_fini(act_t *a)
{
    struct act_leaf *l = &a->k.leaf;
    replay_forget(a);
    json_decref(l->orig_input);
    json_decref(l->rrec);
    free(l->key);
    free(l->batch);
}

const act_ops engine_leaf_ops = {
    .start = leaf_start, .run = leaf_run, .cancel = leaf_cancel, .fini = leaf_fini,
    .settled = checkpoint_leaf, .own_timeout = true,
};
