/* engine_nodes.c -- what each node kind does when it starts and when a kid ends.
 *
 * Every kind is a small state machine over its activation: start the kids it
 * needs, collect their outcomes in nodes_child_done, and end the attempt with
 * act_attempt_done. Kids are never waited on synchronously; a kid that ends
 * at once is delivered by the job's pump, so nothing here recurses through a
 * long chain or a large map. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

#define DEFAULT_MAP_CONCURRENCY 16

static void fail_now(act_t *a, dsl_error_class cls, const char *code, const char *msg)
{
    act_attempt_done(a, NULL, eerr_new(cls, code, a->node->path, a->attempt, "%s", msg));
}

static void fail_oom(act_t *a) { fail_now(a, DSL_ERR_FAILED, "out_of_memory", "out of memory"); }

/* Starts a kid of A running NODE over INPUT (borrowed). Returns it, or NULL
 * after failing A. */
static act_t *spawn(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot)
{
    act_t *k = act_new(a->job, a, node, input, role, slot);
    if (!k)
        fail_oom(a);
    return k;
}

static bool spawn_start(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot)
{
    act_t *k = spawn(a, node, input, role, slot);
    if (!k)
        return false;
    act_start(k);
    return true;
}

/* {"error": {code, message}}: a failed slot in partial mode. */
static json_t *error_slot(const eerr *err)
{
    return json_pack("{s:{s:s, s:s}}", "error", "code", err->pub.code, "message",
                     err->pub.message);
}

void nodes_reset(act_t *a)
{
    json_decref(a->a);
    json_decref(a->b);
    json_decref(a->c);
    a->a = a->b = a->c = NULL;
    a->i = a->n = a->running = a->ndone = a->nfail = 0;
    a->phase = 0;
    if (a->own_scope) {
        scope_fini(a->own_scope);
        free(a->own_scope);
        a->own_scope = NULL;
    }
}

/* ---- fail */

static void fail_start(act_t *a)
{
    const dsl_fail *f = &a->node->u.fail;
    char msg[256];
    json_t *m = f->message ? eval_tvalue(a, f->message, NULL, msg, sizeof msg) : NULL;
    char *text = m ? dsl_value_to_text(m) : NULL;
    const char *code = f->code ? f->code : "failed";
    int cls = dsl_error_class_find(code);
    fail_now(a, cls >= 0 ? (dsl_error_class)cls : DSL_ERR_FAILED, code,
             text ? text : f->message ? msg : "failed");
    free(text);
    json_decref(m);
}

/* ---- route */

static void route_pick(act_t *a, json_t *value /* stolen */)
{
    const dsl_route *r = &a->node->u.route;
    char msg[256];
    value = eval_filters(value, r->normalize, r->nnormalize, msg, sizeof msg);
    if (!value) {
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    char *label = dsl_value_to_text(value);
    json_decref(value);
    if (!label) {
        fail_oom(a);
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
        fail_now(a, DSL_ERR_NO_ROUTE, NULL, m);
        return;
    }
    free(label);
    a->phase = 1;
    spawn_start(a, pick, a->input, ROLE_CASE, 0);
}

/* A route's `on` and a gate's `check` are a template or a node: a node runs
 * as a child (its finish comes back through the child's ROLE); a template is
 * evaluated now and its value handed to DECIDE (which steals it). */
static void start_value(act_t *a, const dsl_node *node, const dsl_template *tpl, int role,
                        void (*decide)(act_t *, json_t *))
{
    if (node) {
        spawn_start(a, node, a->input, role, 0);
        return;
    }
    char msg[256];
    json_t *v = eval_template(a, tpl, NULL, msg, sizeof msg);
    if (!v) {
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    decide(a, v);
}

static void route_start(act_t *a)
{
    const dsl_route *r = &a->node->u.route;
    start_value(a, r->on_node, r->on_tpl, ROLE_ON, route_pick);
}

/* ---- gate */

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
        a->phase = 1;
        spawn_start(a, g->fail_node, a->input, ROLE_FAILNODE, 0);
        return;
    }
    char msg[256];
    json_t *m = g->fail_message ? eval_tvalue(a, g->fail_message, NULL, msg, sizeof msg) : NULL;
    char *text = m ? dsl_value_to_text(m) : NULL;
    fail_now(a, DSL_ERR_GATE, NULL, text ? text : g->fail_message ? msg : "gate check failed");
    free(text);
    json_decref(m);
}

static void gate_start(act_t *a)
{
    const dsl_gate *g = &a->node->u.gate;
    start_value(a, g->check_node, g->check_tpl, ROLE_CHECK, gate_decide);
}

/* ---- parallel */

static void parallel_start(act_t *a)
{
    const dsl_parallel *p = &a->node->u.parallel;
    /* Slots in file order, filled as branches end. */
    if (!(a->a = json_object()))
        goto oom;
    for (size_t i = 0; i < p->n; i++)
        if (json_object_set_new(a->a, p->names[i], json_null()) < 0)
            goto oom;
    a->n = p->n;
    for (size_t i = 0; i < p->n; i++)
        if (!spawn_start(a, p->branches[i], a->input, ROLE_MAIN, i))
            return;
    return;
oom:
    fail_oom(a);
}

static void parallel_done(act_t *a, size_t slot, json_t *res, eerr *err)
{
    const dsl_parallel *p = &a->node->u.parallel;
    if (err) {
        if (p->on_error == DSL_ON_ERROR_FAIL) {
            act_attempt_done(a, NULL, err); /* cancels the running siblings */
            return;
        }
        res = error_slot(err);
        eerr_free(err);
        if (!res) {
            fail_oom(a);
            return;
        }
    }
    json_object_set_new(a->a, p->names[slot], res);
    if (++a->ndone == a->n) {
        json_t *out = a->a;
        a->a = NULL;
        act_attempt_done(a, out, NULL);
    }
}

/* ---- map */

static bool map_start_item(act_t *a, size_t idx)
{
    json_t *item = json_array_get(a->a, idx);
    act_t *k = spawn(a, a->node->u.map.body, item, ROLE_MAIN, idx);
    if (!k)
        return false;
    k->bind_kind = BIND_ITEM;
    k->bind = json_incref(item);
    k->bind_map = a->node;
    k->bind_index = json_integer((json_int_t)idx);
    k->own_frame = frame_new(a->frame);
    if (!k->bind_index || !k->own_frame) {
        act_free(k);
        fail_oom(a);
        return false;
    }
    k->frame = k->own_frame;
    a->running++;
    act_start(k);
    return true;
}

static size_t map_limit(const act_t *a)
{
    int mc = a->node->u.map.max_concurrency;
    return mc > 0 ? (size_t)mc : DEFAULT_MAP_CONCURRENCY;
}

static void map_start(act_t *a)
{
    const dsl_map *m = &a->node->u.map;
    char msg[256];
    json_t *items = eval_template(a, m->over, NULL, msg, sizeof msg);
    if (!items) {
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    if (!json_is_array(items)) {
        snprintf(msg, sizeof msg, "map over: expected an array, got %s",
                 dsl_value_type_name(items));
        json_decref(items);
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    a->a = items;
    a->n = json_array_size(items);
    if (!(a->b = json_array())) {
        fail_oom(a);
        return;
    }
    for (size_t i = 0; i < a->n; i++)
        if (json_array_append_new(a->b, json_null()) < 0) {
            fail_oom(a);
            return;
        }
    if (a->n == 0) {
        json_t *out = a->b;
        a->b = NULL;
        act_attempt_done(a, out, NULL);
        return;
    }
    size_t lim = map_limit(a);
    while (a->i < a->n && a->running < lim)
        if (!map_start_item(a, a->i++))
            return;
}

static void map_done(act_t *a, size_t slot, json_t *res, eerr *err)
{
    const dsl_map *m = &a->node->u.map;
    a->running--;
    a->ndone++;
    job_trace_progress(a->job, a, a->ndone, a->n);
    if (err) {
        if (m->on_error == DSL_ON_ERROR_FAIL) {
            act_attempt_done(a, NULL, err);
            return;
        }
        a->nfail++;
        if (m->on_error == DSL_ON_ERROR_TOLERATE && (double)a->nfail > m->tolerate * (double)a->n) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "%zu of %zu items failed, more than %g%% tolerated; last: %s: %.300s",
                     a->nfail, a->n, m->tolerate * 100.0, err->pub.code, err->pub.message);
            eerr_free(err);
            fail_now(a, DSL_ERR_FAILED, NULL, msg);
            return;
        }
        res = error_slot(err);
        eerr_free(err);
        if (!res) {
            fail_oom(a);
            return;
        }
    }
    json_array_set_new(a->b, slot, res);
    if (a->ndone == a->n) {
        json_t *out = a->b;
        a->b = NULL;
        act_attempt_done(a, out, NULL);
        return;
    }
    size_t lim = map_limit(a);
    while (a->i < a->n && a->running < lim)
        if (!map_start_item(a, a->i++))
            return;
}

/* ---- vote: a = tally {TEXT: count}, b = first answer per TEXT */

static void vote_result(act_t *a, json_t *winner /* borrowed */, json_int_t count)
{
    act_cancel_kids(a); /* outstanding samples: the outcome cannot change */
    double agreement = a->ndone ? (double)count / (double)a->ndone : 0.0;
    json_t *out = json_pack("{s:O, s:I, s:O, s:f}", "winner", winner, "votes",
                            (json_int_t)a->ndone, "tally", a->a, "agreement", agreement);
    if (!out) {
        fail_oom(a);
        return;
    }
    act_attempt_done(a, out, NULL);
}

static void vote_decide(act_t *a)
{
    const dsl_vote *v = &a->node->u.vote;
    size_t n = (size_t)v->n, rem = n - a->ndone;
    const char *lead = NULL;
    json_int_t max = 0, second = 0;
    const char *k;
    json_t *c;
    json_object_foreach(a->a, k, c) {
        json_int_t x = json_integer_value(c);
        if (x > max) { /* strictly greater: ties stay with the first seen */
            second = max;
            max = x;
            lead = k;
        } else if (x > second) {
            second = x;
        }
    }
    size_t distinct = json_object_size(a->a);
    char msg[128];
    switch (v->strategy) {
    case DSL_VOTE_MAJORITY:
        if ((size_t)max * 2 > n)
            goto win;
        if (((size_t)max + rem) * 2 <= n) {
            fail_now(a, DSL_ERR_FAILED, NULL, "no majority");
            return;
        }
        break;
    case DSL_VOTE_UNANIMOUS:
        if (distinct > 1) {
            fail_now(a, DSL_ERR_FAILED, NULL, "no unanimous answer");
            return;
        }
        if (rem == 0)
            goto win;
        break;
    case DSL_VOTE_AT_LEAST:
        if (max >= v->at_least)
            goto win;
        /* Every remaining sample could join the leader: no answer can reach K. */
        if ((size_t)max + rem < (size_t)v->at_least) {
            snprintf(msg, sizeof msg, "no answer reached %d votes", v->at_least);
            fail_now(a, DSL_ERR_FAILED, NULL, msg);
            return;
        }
        break;
    case DSL_VOTE_PLURALITY:
        if (rem == 0 || (size_t)(max - second) > rem)
            goto win;
        break;
    case DSL_VOTE_JUDGE:
        if (rem == 0) {
            json_t *cands = json_array();
            json_t *val;
            if (!cands)
                goto oom;
            json_object_foreach(a->b, k, val)
                json_array_append(cands, val);
            act_t *jk = spawn(a, v->judge, a->input, ROLE_JUDGE, 0);
            if (!jk) {
                json_decref(cands);
                return;
            }
            jk->bind_kind = BIND_CANDIDATES;
            jk->bind = cands;
            a->phase = 1;
            act_start(jk);
        }
        break;
    }
    return;
win:
    vote_result(a, json_object_get(a->b, lead), max);
    return;
oom:
    fail_oom(a);
}

static void vote_start(act_t *a)
{
    const dsl_vote *v = &a->node->u.vote;
    if (!(a->a = json_object()) || !(a->b = json_object())) {
        fail_oom(a);
        return;
    }
    a->n = (size_t)v->n;
    for (size_t i = 0; i < a->n; i++) {
        act_t *k = spawn(a, v->body, a->input, ROLE_MAIN, i);
        if (!k)
            return;
        if (!(k->own_frame = frame_new(a->frame))) {
            act_free(k);
            fail_oom(a);
            return;
        }
        k->frame = k->own_frame;
        act_start(k);
    }
}

static void vote_sample_done(act_t *a, json_t *res, eerr *err)
{
    const dsl_vote *v = &a->node->u.vote;
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    char msg[256];
    json_t *ans = res;
    if (v->key) {
        ans = eval_template(a, v->key, res, msg, sizeof msg);
        json_decref(res);
    }
    if (ans)
        ans = eval_filters(ans, v->normalize, v->nnormalize, msg, sizeof msg);
    if (!ans) {
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    char *text = dsl_value_to_text(ans);
    if (!text) {
        json_decref(ans);
        fail_oom(a);
        return;
    }
    json_t *c = json_object_get(a->a, text);
    int rc = c ? json_integer_set(c, json_integer_value(c) + 1)
               : json_object_set_new(a->a, text, json_integer(1)) |
                 json_object_set(a->b, text, ans);
    free(text);
    json_decref(ans);
    if (rc < 0) {
        fail_oom(a);
        return;
    }
    a->ndone++;
    vote_decide(a);
}

static void vote_judged(act_t *a, json_t *res, eerr *err)
{
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    char *text = dsl_value_to_text(res);
    json_t *c = text ? json_object_get(a->a, text) : NULL;
    free(text);
    vote_result(a, res, c ? json_integer_value(c) : 0);
    json_decref(res);
}

/* ---- use */

static void use_start(act_t *a)
{
    const dsl_use *u = &a->node->u.use;
    engine_t *e = a->job->eng;
    char msg[512];
    dsl_graph *g = e->wf_lookup ? e->wf_lookup(e->wf_ud, u->workflow) : NULL;
    if (!g) {
        snprintf(msg, sizeof msg, "workflow '%s' is not available", u->workflow);
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    json_t *in = u->input ? eval_tvalue(a, u->input, NULL, msg, sizeof msg) : json_incref(a->input);
    if (!in) {
        fail_now(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    scope_t *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(in);
        fail_oom(a);
        return;
    }
    dsl_error_class cls;
    int rc = scope_init(s, g, in, msg, sizeof msg, &cls);
    json_decref(in);
    a->own_scope = s; /* freed with the activation or on retry, even half built */
    if (rc < 0) {
        fail_now(a, DSL_ERR_FAILED, cls == DSL_ERR_CLASS_COUNT ? "out_of_memory" : "invalid_input",
                 msg);
        return;
    }
    act_t *k = spawn(a, g->root, s->input, ROLE_MAIN, 0);
    if (!k)
        return;
    k->scope = s;
    k->frame = &s->top;
    act_start(k);
}

/* ---- dispatch */

void nodes_start(act_t *a)
{
    const dsl_node *n = a->node;
    switch (n->kind) {
    case DSL_CALL:
    case DSL_EMBED:
    case DSL_LAMBDA:
        a->replayed = false;
        /* a step an earlier run finished ends with its record, taking no slot */
        if (!replay_take(a))
            leaf_request(a);
        return;
    case DSL_CHAIN:
        a->i = 0;
        spawn_start(a, n->u.chain.steps[0], a->input, ROLE_MAIN, 0);
        return;
    case DSL_PARALLEL: parallel_start(a); return;
    case DSL_ROUTE: route_start(a); return;
    case DSL_VOTE: vote_start(a); return;
    case DSL_MAP: map_start(a); return;
    case DSL_GATE: gate_start(a); return;
    case DSL_USE: use_start(a); return;
    case DSL_FAIL: fail_start(a); return;
    case DSL_KIND_COUNT: break;
    }
    fail_now(a, DSL_ERR_FAILED, NULL, "unknown node kind");
}

void nodes_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    const dsl_node *n = a->node;
    switch (n->kind) {
    case DSL_CHAIN:
        if (err || a->i + 1 == n->u.chain.n) {
            act_attempt_done(a, res, err);
            return;
        }
        a->i++;
        spawn_start(a, n->u.chain.steps[a->i], res, ROLE_MAIN, a->i);
        json_decref(res);
        return;
    case DSL_PARALLEL: parallel_done(a, slot, res, err); return;
    case DSL_MAP: map_done(a, slot, res, err); return;
    case DSL_ROUTE:
        if (role == ROLE_ON && !err) {
            route_pick(a, res);
            return;
        }
        act_attempt_done(a, res, err);
        return;
    case DSL_GATE:
        if (role == ROLE_CHECK && !err) {
            gate_decide(a, res);
            return;
        }
        act_attempt_done(a, res, err);
        return;
    case DSL_VOTE:
        if (role == ROLE_JUDGE)
            vote_judged(a, res, err);
        else
            vote_sample_done(a, res, err);
        return;
    default:
        act_attempt_done(a, res, err);
        return;
    }
}
