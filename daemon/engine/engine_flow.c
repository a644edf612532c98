/* engine_flow.c -- the kinds that steer: chain, route, gate and fail.
 *
 * None keeps state beyond the chain's step: a route or gate decides once,
 * from a template evaluated now or from a kid's answer, and hands the
 * attempt to the one kid it picks (or ends it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

/* ---- chain: each step gets the one before's output */

static void chain_start(act_t *a)
{
    a->k.chain.step = 0;
    act_spawn_start(a, a->node->u.chain.steps[0], a->input, ROLE_MAIN, 0);
}

static void chain_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    struct act_chain *c = &a->k.chain;
    const dsl_chain *ch = &a->node->u.chain;
    if (err || c->step + 1 == ch->n) {
        act_attempt_done(a, res, err);
        return;
    }
    c->step++;
    act_spawn_start(a, ch->steps[c->step], res, ROLE_MAIN, c->step);
    json_decref(res);
}

const act_ops engine_chain_ops = { .start = chain_start, .child_done = chain_child_done };

/* ---- route and gate: decide on a value */

/* A route's `on` and a gate's `check` are a template or a node: a node runs
 * as a child (its answer comes back through child_done with ROLE); a
 * template is evaluated now and its value handed to DECIDE (which steals
 * it). */
static void start_value(act_t *a, const dsl_node *node, const dsl_template *tpl, int role,
                        void (*decide)(act_t *, json_t *))
{
    if (node) {
        act_spawn_start(a, node, a->input, role, 0);
        return;
    }
    char msg[256];
    json_t *v = eval_template(a, tpl, NULL, msg, sizeof msg);
    if (!v) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    decide(a, v);
}

static void route_pick(act_t *a, json_t *value /* stolen */)
{
    const dsl_route *r = &a->node->u.route;
    char msg[256];
    value = eval_filters(value, r->normalize, r->nnormalize, msg, sizeof msg);
    if (!value) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    char *label = dsl_value_to_text(value);
    json_decref(value);
    if (!label) {
        act_fail_oom(a);
        return;
    }
    const dsl_node *pick = r->default_case;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->labels[i], label) == 0) {
            pick = r->cases[i];
            break;
        }
    if (!pick) {
        char m[300];
        snprintf(m, sizeof m, "no case for '%.200s' and no default", label);
        free(label);
        act_fail(a, DSL_ERR_NO_ROUTE, NULL, m);
        return;
    }
    free(label);
    act_spawn_start(a, pick, a->input, ROLE_CASE, 0);
}

static void route_start(act_t *a)
{
    const dsl_route *r = &a->node->u.route;
    start_value(a, r->on_node, r->on_tpl, ROLE_ON, route_pick);
}

/* The `on` node's answer picks the case; the case's outcome is the route's. */
static void route_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    if (role == ROLE_ON && !err) {
        route_pick(a, res);
        return;
    }
    act_attempt_done(a, res, err);
}

const act_ops engine_route_ops = { .start = route_start, .child_done = route_child_done };

static void gate_decide(act_t *a, json_t *value /* stolen */)
{
    const dsl_gate *g = &a->node->u.gate;
    int ok = dsl_value_truthy(value);
    json_decref(value);
    if (ok) {
        act_attempt_done(a, json_incref(a->input), NULL);
        return;
    }
    if (g->fail_node) {
        act_spawn_start(a, g->fail_node, a->input, ROLE_FAILNODE, 0);
        return;
    }
    char msg[256];
    json_t *m = g->fail_message ? eval_tvalue(a, g->fail_message, NULL, msg, sizeof msg) : NULL;
    char *text = m ? dsl_value_to_text(m) : NULL;
    act_fail(a, DSL_ERR_GATE, NULL, text ? text : g->fail_message ? msg : "gate check failed");
    free(text);
    json_decref(m);
}

static void gate_start(act_t *a)
{
    const dsl_gate *g = &a->node->u.gate;
    start_value(a, g->check_node, g->check_tpl, ROLE_CHECK, gate_decide);
}

/* The `check` node's answer decides; a fail node's outcome is the gate's. */
static void gate_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    if (role == ROLE_CHECK && !err) {
        gate_decide(a, res);
        return;
    }
    act_attempt_done(a, res, err);
}

const act_ops engine_gate_ops = { .start = gate_start, .child_done = gate_child_done };

/* ---- fail: ends with the error it names */

static void fail_start(act_t *a)
{
    const dsl_fail *f = &a->node->u.fail;
    char msg[256];
    json_t *m = f->message ? eval_tvalue(a, f->message, NULL, msg, sizeof msg) : NULL;
    char *text = m ? dsl_value_to_text(m) : NULL;
    const char *code = f->code ? f->code : "failed";
    int cls = dsl_error_class_find(code);
    act_fail(a, cls >= 0 ? (dsl_error_class)cls : DSL_ERR_FAILED, code,
             text ? text : f->message ? msg : "failed");
    free(text);
    json_decref(m);
}

const act_ops engine_fail_ops = { .start = fail_start };
