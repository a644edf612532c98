/* compile_value.c -- the values a node holds, read from YAML: plain JSON,
 * templates and template values (each registered for the reference checks),
 * retry policies, filter lists and generation parameters. Errors are
 * reported at the YAML node at fault. */
#include "dsl/compile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

/* ---- values ---- */

json_t *cc_scalar_json(const dsl_ynode *y)
{
    int b;
    int64_t i;
    double d;
    switch (dsl_yscalar_type(y)) {
    case DSL_YT_NULL:
        return json_null();
    case DSL_YT_BOOL:
        dsl_yscalar_bool(y, &b);
        return json_boolean(b);
    case DSL_YT_INT:
        dsl_yscalar_int(y, &i);
        return json_integer(i);
    case DSL_YT_FLOAT:
        dsl_yscalar_double(y, &d);
        if (!isfinite(d))
            return json_stringn(y->u.scalar.str, y->u.scalar.len);
        return json_real(d);
    case DSL_YT_STRING:
        break;
    }
    return json_stringn_nocheck(y->u.scalar.str, y->u.scalar.len);
}

json_t *cc_json(dsl_cc *cc, const dsl_ynode *y)
{
    json_t *v = NULL;
    switch (y->kind) {
    case DSL_Y_SCALAR:
        v = cc_scalar_json(y);
        break;
    case DSL_Y_SEQ:
        v = json_array();
        for (size_t i = 0; v && i < y->u.seq.n; i++) {
            json_t *e = cc_json(cc, y->u.seq.items[i]);
            if (!e || json_array_append_new(v, e) < 0) {
                json_decref(v);
                return NULL;
            }
        }
        break;
    case DSL_Y_MAP:
        v = json_object();
        for (size_t i = 0; v && i < y->u.map.n; i++) {
            const dsl_ynode *k = y->u.map.pairs[i].key;
            json_t *e = cc_json(cc, y->u.map.pairs[i].value);
            if (!e || json_object_setn_new_nocheck(v, k->u.scalar.str, k->u.scalar.len, e) < 0) {
                json_decref(v);
                return NULL;
            }
        }
        break;
    }
    if (!v)
        cc_oom(cc);
    return v;
}

static int push_tpl(dsl_cc *cc, dsl_template *t, const dsl_ynode *y, dsl_node *node, cc_site site)
{
    if (vec_reserve(&cc->tpls, cc->ntpls, &cc->captpls, sizeof *cc->tpls, 64) < 0)
        return -1;
    cc->tpls[cc->ntpls++] = (cc_tpl_use){ t, y, node, site };
    return 0;
}

dsl_template *cc_template(dsl_cc *cc, const dsl_ynode *y, const char *key, dsl_node *node,
                          cc_site site)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING) {
        dsl_type_error(cc->d, y, key, "a template string");
        return NULL;
    }
    dsl_tpl_error err;
    memset(&err, 0, sizeof err);
    dsl_template *t = dsl_template_parse(y->u.scalar.str, y->u.scalar.len, &err);
    if (!t) {
        if (!err.msg[0]) {
            cc_oom(cc);
            return NULL;
        }
        int line, col;
        dsl_yscalar_pos(cc->doc, y, err.offset, &line, &col);
        if (err.hint[0])
            dsl_error(cc->d, line, col, "%s; %s", err.msg, err.hint);
        else
            dsl_error(cc->d, line, col, "%s", err.msg);
        return NULL;
    }
    if (dsl_arena_own_template(cc->a, t) < 0 || push_tpl(cc, t, y, node, site) < 0) {
        cc_oom(cc);
        return NULL;
    }
    return t;
}

static dsl_tvalue *tv_new(dsl_cc *cc, dsl_tvalue_kind kind, const dsl_ynode *y)
{
    dsl_tvalue *tv = dsl_arena_alloc(cc->a, sizeof *tv);
    if (!tv) {
        cc_oom(cc);
        return NULL;
    }
    tv->kind = kind;
    tv->line = y->line;
    tv->col = y->col;
    return tv;
}

/* Folds a container whose items are all constants into one constant. */
static dsl_tvalue *tv_fold(dsl_cc *cc, dsl_tvalue *tv, const dsl_ynode *y)
{
    for (size_t i = 0; i < tv->n; i++)
        if (tv->items[i]->kind != DSL_TV_CONST)
            return tv;
    json_t *v = tv->kind == DSL_TV_ARRAY ? json_array() : json_object();
    if (!v)
        goto oom;
    for (size_t i = 0; i < tv->n; i++) {
        int r = tv->kind == DSL_TV_ARRAY
                    ? json_array_append(v, tv->items[i]->constant)
                    : json_object_set_nocheck(v, tv->keys[i], tv->items[i]->constant);
        if (r < 0) {
            json_decref(v);
            goto oom;
        }
    }
    if (dsl_arena_own_json(cc->a, v) < 0)
        goto oom;
    tv->kind = DSL_TV_CONST;
    tv->constant = v;
    tv->n = 0;
    tv->items = NULL;
    tv->keys = NULL;
    (void)y;
    return tv;
oom:
    cc_oom(cc);
    return NULL;
}

dsl_tvalue *cc_tvalue(dsl_cc *cc, const dsl_ynode *y, dsl_node *node, cc_site site)
{
    dsl_tvalue *tv;
    int bad = 0;
    if (y->kind == DSL_Y_SCALAR) {
        if (dsl_yscalar_type(y) == DSL_YT_STRING &&
            !dsl_template_is_literal(y->u.scalar.str, y->u.scalar.len)) {
            dsl_template *t = cc_template(cc, y, "value", node, site);
            if (!t)
                return NULL;
            if (!(tv = tv_new(cc, DSL_TV_TEMPLATE, y)))
                return NULL;
            tv->tpl = t;
            return tv;
        }
        json_t *v = cc_scalar_json(y);
        if (!v || dsl_arena_own_json(cc->a, v) < 0) {
            cc_oom(cc);
            return NULL;
        }
        if (!(tv = tv_new(cc, DSL_TV_CONST, y)))
            return NULL;
        tv->constant = v;
        return tv;
    }
    size_t n = y->kind == DSL_Y_SEQ ? y->u.seq.n : y->u.map.n;
    if (!(tv = tv_new(cc, y->kind == DSL_Y_SEQ ? DSL_TV_ARRAY : DSL_TV_OBJECT, y)))
        return NULL;
    tv->n = n;
    tv->items = dsl_arena_alloc(cc->a, (n ? n : 1) * sizeof *tv->items);
    if (y->kind == DSL_Y_MAP)
        tv->keys = dsl_arena_alloc(cc->a, (n ? n : 1) * sizeof *tv->keys);
    if (!tv->items || (y->kind == DSL_Y_MAP && !tv->keys)) {
        cc_oom(cc);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const dsl_ynode *c;
        if (y->kind == DSL_Y_SEQ) {
            c = y->u.seq.items[i];
        } else {
            const dsl_ynode *k = y->u.map.pairs[i].key;
            c = y->u.map.pairs[i].value;
            if (!(tv->keys[i] = dsl_arena_strndup(cc->a, k->u.scalar.str, k->u.scalar.len))) {
                cc_oom(cc);
                return NULL;
            }
        }
        if (!(tv->items[i] = cc_tvalue(cc, c, node, site)))
            bad = 1;
    }
    if (bad)
        return NULL;
    return tv_fold(cc, tv, y);
}

/* ---- retry ---- */

int cc_retry(dsl_cc *cc, const dsl_ynode *y, const dsl_retry *base, dsl_retry *out)
{
    static const char *const keys[] = { "max_attempts", "initial_delay", "multiplier",
                                        "max_delay", "on", NULL };
    int64_t i;
    int bad = 0;
    *out = *base;
    if (y->kind == DSL_Y_SCALAR) {
        if (cc_int(cc, y, "retry", 1, 100, &i) < 0)
            return -1;
        out->max_attempts = (int)i;
        return 0;
    }
    if (!cc_want_map(cc, y, "retry"))
        return -1;
    cc_check_keys(cc, y, keys, "retry");
    const dsl_ynode *v;
    if ((v = dsl_ymap_get(y, "max_attempts"))) {
        if (cc_int(cc, v, "max_attempts", 1, 100, &i) < 0)
            bad = 1;
        else
            out->max_attempts = (int)i;
    }
    if ((v = dsl_ymap_get(y, "initial_delay")) && cc_duration(cc, v, "initial_delay", &out->initial_delay_ms) < 0)
        bad = 1;
    if ((v = dsl_ymap_get(y, "max_delay")) && cc_duration(cc, v, "max_delay", &out->max_delay_ms) < 0)
        bad = 1;
    if ((v = dsl_ymap_get(y, "multiplier")) && cc_number(cc, v, "multiplier", 1, 100, &out->multiplier) < 0)
        bad = 1;
    if ((v = dsl_ymap_get(y, "on"))) {
        if (!cc_want_seq(cc, v, "on")) {
            bad = 1;
        } else {
            out->on = 0;
            for (size_t k = 0; k < v->u.seq.n; k++) {
                const dsl_ynode *c = v->u.seq.items[k];
                const char *name = cc_string(cc, c, "on");
                if (!name) {
                    bad = 1;
                    continue;
                }
                int cls = dsl_error_class_find(name);
                if (cls < 0) {
                    cc_error_suggest(cc, c->line, c->col, name, strlen(name), dsl_error_class_names(),
                                     DSL_ERR_CLASS_COUNT, "unknown error class '%.*s'", CC_NAME_SHOWN, name);
                    bad = 1;
                    continue;
                }
                out->on |= 1u << cls;
            }
        }
    }
    if (!bad && out->max_delay_ms < out->initial_delay_ms) {
        const dsl_ynode *at = dsl_ymap_get(y, "max_delay") ? dsl_ymap_get(y, "max_delay") : y;
        dsl_error(cc->d, at->line, at->col, "'max_delay' must not be shorter than 'initial_delay'");
        bad = 1;
    }
    return bad ? -1 : 0;
}

char **cc_filter_list(dsl_cc *cc, const dsl_ynode *y, const char *key, size_t *n)
{
    *n = 0;
    if (!cc_want_seq(cc, y, key))
        return NULL;
    char **v = dsl_arena_alloc(cc->a, (y->u.seq.n ? y->u.seq.n : 1) * sizeof *v);
    if (!v) {
        cc_oom(cc);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < y->u.seq.n; i++) {
        const dsl_ynode *c = y->u.seq.items[i];
        const char *name = cc_string(cc, c, key);
        if (!name) {
            bad = 1;
            continue;
        }
        const dsl_filter_def *f = dsl_filter_find(name, strlen(name));
        if (!f) {
            const dsl_filter_def *all = dsl_filter_all();
            const char *cands[128];
            size_t nc = 0;
            for (; all[nc].name && nc < 127; nc++)
                cands[nc] = all[nc].name;
            cc_error_suggest(cc, c->line, c->col, name, strlen(name), cands, nc,
                             "unknown filter '%.*s'", CC_NAME_SHOWN, name);
            bad = 1;
            continue;
        }
        if (f->min_args > 0) {
            dsl_error(cc->d, c->line, c->col, "filter '%s' needs arguments and cannot be used in '%s'",
                      name, key);
            bad = 1;
            continue;
        }
        v[(*n)++] = (char *)name;
    }
    return bad ? NULL : v;
}

dsl_tvalue *cc_text(dsl_cc *cc, const dsl_ynode *y, const char *key, dsl_node *node)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING) {
        dsl_type_error(cc->d, y, key, "a string");
        return NULL;
    }
    return cc_tvalue(cc, y, node, CC_SITE_NODE);
}

dsl_tvalue *cc_shorthand(dsl_cc *cc, const dsl_ynode *v, const char *kind, dsl_node *node)
{
    if (dsl_yscalar_type(v) != DSL_YT_STRING) {
        dsl_error(cc->d, v->line, v->col, "'%s' must be a string or a mapping, got a %s", kind,
                  dsl_ynode_describe(v));
        return NULL;
    }
    return cc_tvalue(cc, v, node, CC_SITE_NODE);
}

/* Generation parameters are read the same way in a call and in `defaults`,
 * so a value means the same wherever it is written. */
typedef struct gen_param {
    const char *key;
    int integer;
    double dmin, dmax;
    int64_t imin, imax;
} gen_param;

static const gen_param numeric_params[] = {
    { "temperature", 0, 0, 2, 0, 0 },
    { "top_p", 0, 0, 1, 0, 0 },
    { "max_tokens", 1, 0, 0, 1, 10000000 },
    { "seed", 1, 0, 0, INT64_MIN, INT64_MAX },
};

int cc_gen_params(dsl_cc *cc, const dsl_ynode *y, json_t *params)
{
    const dsl_ynode *x;
    double d;
    int64_t i;
    int bad = 0;
    json_t *v;
    for (size_t k = 0; k < sizeof numeric_params / sizeof *numeric_params; k++) {
        const gen_param *p = &numeric_params[k];
        if (!(x = dsl_ymap_get(y, p->key)))
            continue;
        if (p->integer ? cc_int(cc, x, p->key, p->imin, p->imax, &i) < 0
                       : cc_number(cc, x, p->key, p->dmin, p->dmax, &d) < 0)
            bad = 1;
        else if (json_object_set_new(params, p->key, p->integer ? json_integer(i) : json_real(d)) < 0)
            goto oom;
    }
    if ((x = dsl_ymap_get(y, "stop"))) {
        if (x->kind == DSL_Y_SCALAR) {
            if (!cc_string(cc, x, "stop"))
                return -1;
            v = json_pack("[s#]", x->u.scalar.str, (int)x->u.scalar.len);
            if (!v || json_object_set_new(params, "stop", v) < 0)
                goto oom;
        } else if (x->kind == DSL_Y_SEQ && x->u.seq.n >= 1 && x->u.seq.n <= 4) {
            for (size_t k = 0; k < x->u.seq.n; k++)
                if (!cc_string(cc, x->u.seq.items[k], "stop"))
                    return -1;
            if (!(v = cc_json(cc, x)) || json_object_set_new(params, "stop", v) < 0)
                goto oom;
        } else if (x->kind == DSL_Y_SEQ) {
            dsl_error(cc->d, x->line, x->col, "'stop' takes 1 to 4 strings, got %zu", x->u.seq.n);
            bad = 1;
        } else {
            dsl_error(cc->d, x->line, x->col, "'stop' must be a string or a list of strings, got a %s",
                      dsl_ynode_describe(x));
            bad = 1;
        }
    }
    return bad ? -1 : 0;
oom:
    cc_oom(cc);
    return -1;
}
