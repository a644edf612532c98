/* engine_eval.c -- what templates see at run time: roots, frames, input checks.
 *
 * Templates were parsed and their roots resolved by the compiler; here each
 * root is answered from the running activation: `input` and `vars` from the
 * scope (the job's, or a `use`'s), `prev` from the activation's input,
 * `steps.X` by walking the step frames up from the activation (map items and
 * vote samples have their own frame, so each item sees its own steps), the
 * map's item/index, `error`, `candidates` and `loop` by walking up the
 * activations to the one that binds them. Values are borrowed references,
 * never copies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

typedef struct evalctx {
    act_t *act;      /* may be NULL (vars) */
    scope_t *scope;
    json_t *output;  /* the `output` root, or NULL */
    json_t *loop;    /* the `loop` root of a loop's own `until`, or NULL: walk up */
} evalctx;

/* ---- frames */

frame_t *frame_new(frame_t *parent)
{
    frame_t *f = calloc(1, sizeof *f);
    if (f)
        f->parent = parent;
    return f;
}

static void frame_clear(frame_t *f)
{
    for (size_t i = 0; i < f->nslots; i++)
        json_decref(f->slots[i]);
    free(f->slots);
    for (size_t i = 0; i < f->n; i++)
        json_decref(f->erecs[i]);
    free(f->enodes);
    free(f->erecs);
}

void frame_free(frame_t *f)
{
    if (!f)
        return;
    frame_clear(f);
    free(f);
}

/* Stores WRAP (stolen) as the record of NODE in F. */
static int frame_put(frame_t *f, const dsl_node *node, json_t *wrap)
{
    if (f->slots) {
        if (node->index >= f->nslots) {
            json_decref(wrap);
            return 0; /* not of this graph: cannot be referenced from here */
        }
        json_decref(f->slots[node->index]);
        f->slots[node->index] = wrap;
        return 0;
    }
    for (size_t i = 0; i < f->n; i++)
        if (f->enodes[i] == node) {
            json_decref(f->erecs[i]);
            f->erecs[i] = wrap;
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        const dsl_node **nn = realloc(f->enodes, cap * sizeof *nn);
        if (!nn)
            goto fail;
        f->enodes = nn;
        json_t **nr = realloc(f->erecs, cap * sizeof *nr);
        if (!nr)
            goto fail;
        f->erecs = nr;
        f->cap = cap;
    }
    f->enodes[f->n] = node;
    f->erecs[f->n++] = wrap;
    return 0;
fail:
    json_decref(wrap);
    return -1;
}

static json_t *frame_get(const frame_t *f, const dsl_node *node)
{
    for (; f; f = f->parent) {
        if (f->slots) {
            if (node->index < f->nslots && f->slots[node->index])
                return f->slots[node->index];
            continue;
        }
        for (size_t i = 0; i < f->n; i++)
            if (f->enodes[i] == node)
                return f->erecs[i];
    }
    return NULL;
}

int eval_record_step(act_t *a, json_t *out, const eerr *err)
{
    const dsl_node *n = a->node;
    if (!n->id)
        return 0;
    json_t *rec = json_pack("{s:O, s:i}", "output", out ? out : json_null(), "attempts",
                            a->attempt);
    if (!rec)
        return -1;
    if (err && json_object_set_new(rec, "error", engine_error_json(&err->pub)) < 0) {
        json_decref(rec);
        return -1;
    }
    json_t *transcript = agent_transcript(a); /* a call with tools: its conversation */
    if (transcript && json_object_set_new(rec, "transcript", transcript) < 0) {
        json_decref(rec);
        return -1;
    }
    /* `steps.ID...` walks from the root "steps" through ID, so the record
     * is stored wrapped as {ID: record}: built once, borrowed by every lookup. */
    json_t *wrap = json_object();
    if (!wrap || json_object_set_new(wrap, n->id, rec) < 0) {
        json_decref(wrap);
        json_decref(rec);
        return -1;
    }
    return frame_put(a->frame, n, wrap);
}

/* ---- roots */

static json_t *lookup(void *ud, const dsl_expr *e)
{
    evalctx *c = ud;
    switch (e->root_kind) {
    case DSL_ROOT_INPUT:
        return c->scope->input;
    case DSL_ROOT_VARS:
        return c->scope->vars;
    case DSL_ROOT_PREV:
        return c->act ? c->act->input : NULL;
    case DSL_ROOT_OUTPUT:
        return c->output;
    case DSL_ROOT_STEPS:
        return c->act && e->step ? frame_get(c->act->frame, e->step) : NULL;
    case DSL_ROOT_LOOP:
        if (c->loop)
            return c->loop;
        break;
    default:
        break;
    }
    for (act_t *x = c->act; x; x = x->parent) {
        switch (e->root_kind) {
        case DSL_ROOT_ITEM:
            if (x->bind_kind == BIND_ITEM && strcmp(x->bind_map->u.map.as, e->root) == 0)
                return x->bind;
            break;
        case DSL_ROOT_INDEX:
            if (x->bind_kind == BIND_ITEM && x->bind_map->u.map.index_as &&
                strcmp(x->bind_map->u.map.index_as, e->root) == 0)
                return x->bind_index;
            break;
        case DSL_ROOT_ERROR:
            if (x->bind_kind == BIND_ERROR)
                return x->bind;
            break;
        case DSL_ROOT_CANDIDATES:
            if (x->bind_kind == BIND_CANDIDATES)
                return x->bind;
            break;
        case DSL_ROOT_LOOP:
            /* the nearest loop whose body or until node X is, as the
             * compiler resolved it (not one X is the fallback of) */
            if (x->parent && x->parent->node->kind == DSL_LOOP &&
                (x->role == ROLE_MAIN || x->role == ROLE_UNTIL))
                return x->parent->k.loop.vars;
            break;
        default:
            return NULL;
        }
        if (act_own_scope(x))
            break; /* a `use` boundary: the outer workflow's names end here */
    }
    return NULL;
}

static json_t *tv_eval(evalctx *c, const dsl_tvalue *v, char *msg, size_t msglen)
{
    switch (v->kind) {
    case DSL_TV_CONST:
        return json_incref(v->constant);
    case DSL_TV_TEMPLATE: {
        dsl_eval_error err;
        json_t *r = dsl_template_eval(v->tpl, lookup, c, &err);
        if (!r)
            snprintf(msg, msglen, "%s: %s", v->tpl->source, err.msg[0] ? err.msg : "out of memory");
        return r;
    }
    case DSL_TV_ARRAY: {
        json_t *arr = json_array();
        if (!arr)
            goto oom;
        for (size_t i = 0; i < v->n; i++) {
            json_t *x = tv_eval(c, v->items[i], msg, msglen);
            if (!x || json_array_append_new(arr, x) < 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case DSL_TV_OBJECT: {
        json_t *obj = json_object();
        if (!obj)
            goto oom;
        for (size_t i = 0; i < v->n; i++) {
            json_t *x = tv_eval(c, v->items[i], msg, msglen);
            if (!x || json_object_set_new(obj, v->keys[i], x) < 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
oom:
    snprintf(msg, msglen, "out of memory");
    return NULL;
}

json_t *eval_tvalue(act_t *a, const dsl_tvalue *v, json_t *output, char *msg, size_t msglen)
{
    evalctx c = { a, a->scope, output, NULL };
    return tv_eval(&c, v, msg, msglen);
}

static json_t *eval_in(evalctx *c, const dsl_template *t, char *msg, size_t msglen)
{
    dsl_eval_error err;
    json_t *r = dsl_template_eval(t, lookup, c, &err);
    if (!r)
        snprintf(msg, msglen, "%s: %s", t->source, err.msg[0] ? err.msg : "out of memory");
    return r;
}

json_t *eval_template(act_t *a, const dsl_template *t, json_t *output, char *msg, size_t msglen)
{
    evalctx c = { a, a->scope, output, NULL };
    return eval_in(&c, t, msg, msglen);
}

json_t *eval_template_loop(act_t *a, const dsl_template *t, json_t *output, json_t *loop,
                           char *msg, size_t msglen)
{
    evalctx c = { a, a->scope, output, loop };
    return eval_in(&c, t, msg, msglen);
}

json_t *eval_filters(json_t *v, char *const *names, size_t n, char *msg, size_t msglen)
{
    if (!n)
        return v;
    json_t *noargs = json_array();
    if (!noargs) {
        json_decref(v);
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n && v; i++) {
        const dsl_filter_def *f = dsl_filter_find(names[i], strlen(names[i]));
        dsl_eval_error err = { { 0 } };
        json_t *next = f ? f->fn(v, noargs, &err) : NULL;
        if (!next)
            snprintf(msg, msglen, "filter '%s': %s", names[i],
                     !f ? "unknown" : err.msg[0] ? err.msg : "out of memory");
        json_decref(v);
        v = next;
    }
    json_decref(noargs);
    return v;
}

/* ---- scopes: input checks, defaults and vars */

static bool type_ok(dsl_type t, const json_t *v)
{
    switch (t) {
    case DSL_TYPE_ANY: return true;
    case DSL_TYPE_STRING: return json_is_string(v);
    case DSL_TYPE_NUMBER: return json_is_number(v);
    case DSL_TYPE_INTEGER: return json_is_integer(v);
    case DSL_TYPE_BOOLEAN: return json_is_boolean(v);
    case DSL_TYPE_OBJECT: return json_is_object(v);
    case DSL_TYPE_ARRAY: return json_is_array(v);
    }
    return false;
}

int scope_init(scope_t *s, dsl_graph *g, json_t *input, char *msg, size_t msglen,
               dsl_error_class *cls)
{
    memset(s, 0, sizeof *s);
    s->g = dsl_graph_ref(g);
    *cls = DSL_ERR_CLASS_COUNT; /* "out of memory" unless an input check says otherwise */
    if (!input)
        input = json_null();
    if (g->inputs_declared) {
        if (json_is_null(input) && g->ninputs == 0) {
            s->input = json_object();
        } else if (!json_is_object(input)) {
            *cls = DSL_ERR_FAILED;
            snprintf(msg, msglen, "the input must be an object, not %s",
                     dsl_value_type_name(input));
            goto fail;
        } else {
            s->input = json_copy(input); /* shallow: defaults are added to the copy only */
        }
        if (!s->input)
            goto oom;
        for (size_t i = 0; i < g->ninputs; i++) {
            const dsl_input_field *f = &g->inputs[i];
            json_t *v = json_object_get(s->input, f->name);
            if (!v) {
                if (f->default_value) {
                    if (json_object_set(s->input, f->name, f->default_value) < 0)
                        goto oom;
                    continue;
                }
                if (!f->required)
                    continue;
                *cls = DSL_ERR_FAILED;
                snprintf(msg, msglen, "input field '%s' is required", f->name);
                goto fail;
            }
            if (!type_ok(f->type, v)) {
                *cls = DSL_ERR_FAILED;
                snprintf(msg, msglen, "input field '%s' must be %s, not %s", f->name,
                         dsl_type_name(f->type), dsl_value_type_name(v));
                goto fail;
            }
        }
    } else {
        s->input = json_incref(input);
    }
    s->top.nslots = g->nnodes;
    s->top.slots = calloc(g->nnodes ? g->nnodes : 1, sizeof *s->top.slots);
    if (!s->top.slots)
        goto oom;
    if (g->vars) {
        evalctx c = { NULL, s, NULL, NULL };
        s->vars = tv_eval(&c, g->vars, msg, msglen);
        if (!s->vars) {
            *cls = DSL_ERR_FAILED;
            goto fail;
        }
    } else if (!(s->vars = json_object())) {
        goto oom;
    }
    return 0;
oom:
    snprintf(msg, msglen, "out of memory");
fail:
    return -1;
}

void scope_fini(scope_t *s)
{
    if (!s->g)
        return;
    frame_clear(&s->top);
    json_decref(s->input);
    json_decref(s->vars);
    dsl_graph_unref(s->g);
    memset(s, 0, sizeof *s);
}
