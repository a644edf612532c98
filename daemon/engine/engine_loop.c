/* engine_loop.c -- loop: the body again and again over the loop's input,
 * one iteration at a time, until `until` holds or max_iterations ran.
 *
 * Iteration I's body (and its until node) is an instance of the loop
 * (slot I, a frame of its own: each iteration's steps are its own), which
 * makes it a segment `N#I` of its leaves' step keys (engine_replay.c): a
 * resumed job replays the iterations that ended and goes on live from the
 * one it was in. What the body sees as `loop` -- {iteration, previous} --
 * lives here, one object per iteration, borrowed by the kids' templates
 * (engine_eval.c). The output is the last iteration's, or every one's with
 * `collect`; running out of iterations fails with loop_exhausted unless
 * `on_exhausted: last`. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

/* A kid of A for iteration it: the body or the until node, in a frame of
 * its own. */
static bool start_kid(act_t *a, const dsl_node *node, json_t *input, int role)
{
    act_t *k = act_spawn(a, node, input, role, (size_t)a->k.loop.iteration);
    if (!k)
        return false;
    if (!(k->own_frame = frame_new(a->frame))) {
        act_free(k);
        act_fail_oom(a);
        return false;
    }
    k->frame = k->own_frame;
    act_start(k);
    return true;
}

static void start_iteration(act_t *a)
{
    struct act_loop *l = &a->k.loop;
    l->iteration++;
    json_t *vars = json_pack("{s:i, s:O}", "iteration", l->iteration, "previous",
                             l->last ? l->last : json_null());
    if (!vars) {
        act_fail_oom(a);
        return;
    }
    json_decref(l->vars);
    l->vars = vars;
    start_kid(a, a->node->u.loop.body, a->input, ROLE_MAIN);
}

/* The loop's result: the last output, or all of them. */
static void loop_result(act_t *a)
{
    struct act_loop *l = &a->k.loop;
    json_t *out = a->node->u.loop.collect ? l->all : l->last;
    if (a->node->u.loop.collect)
        l->all = NULL;
    else
        l->last = NULL;
    act_attempt_done(a, out, NULL);
}

/* The iteration ended and `until` said DONE: end, go on, or run out. */
static void decide(act_t *a, bool done)
{
    struct act_loop *l = &a->k.loop;
    const dsl_loop *d = &a->node->u.loop;
    if (!done && l->iteration < d->max_iterations) {
        start_iteration(a);
        return;
    }
    /* without an `until`, max_iterations is simply how many times it runs */
    bool counted = !d->until_tpl && !d->until_node;
    if (done || counted || d->on_exhausted == DSL_EXHAUSTED_LAST) {
        loop_result(a);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "'until' did not hold after %d iteration%s", l->iteration,
             l->iteration == 1 ? "" : "s");
    act_fail(a, DSL_ERR_LOOP_EXHAUSTED, NULL, msg);
}

static void loop_start(act_t *a)
{
    if (a->node->u.loop.collect && !(a->k.loop.all = json_array())) {
        act_fail_oom(a);
        return;
    }
    start_iteration(a);
}

/* The body's output RES (stolen) of the current iteration. */
static void body_done(act_t *a, json_t *res)
{
    struct act_loop *l = &a->k.loop;
    const dsl_loop *d = &a->node->u.loop;
    if (l->all && json_array_append(l->all, res) < 0) {
        json_decref(res);
        act_fail_oom(a);
        return;
    }
    json_decref(l->last);
    l->last = res;
    if (d->until_node) {
        start_kid(a, d->until_node, res, ROLE_UNTIL);
        return;
    }
    if (!d->until_tpl) {
        decide(a, false);
        return;
    }
    char msg[256];
    json_t *v = eval_template_loop(a, d->until_tpl, res, l->vars, msg, sizeof msg);
    if (!v) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    bool done = dsl_value_truthy(v);
    json_decref(v);
    decide(a, done);
}

static void loop_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    (void)slot;
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    if (role == ROLE_UNTIL) {
        bool done = dsl_value_truthy(res);
        json_decref(res);
        decide(a, done);
        return;
    }
    body_done(a, res);
}

static void loop_reset(act_t *a)
{
    json_decref(a->k.loop.vars);
    json_decref(a->k.loop.last);
    json_decref(a->k.loop.all);
    a->k.loop = (struct act_loop){ 0 };
}

const act_ops engine_loop_ops = {
    .start = loop_start, .child_done = loop_child_done, .reset = loop_reset,
};
