/* template_eval.c -- evaluates parsed templates against run-time values.
 *
 * Evaluation never parses: it walks the AST built by template.c. Values from
 * the lookup callback are borrowed and never modified; what is returned is a
 * new reference (possibly to a value inside a root, as jansson shares
 * subtrees). A template is immutable once parsed, so any number of threads
 * may evaluate the same one at once. */
#include "dsl/template.h"

#include "common/containers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void set_err(dsl_eval_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(dsl_eval_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

const char *dsl_value_type_name(const json_t *v)
{
    if (!v)
        return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* Walks E's path from ROOT (borrowed). Returns a borrowed pointer into ROOT,
 * json_null() for a missing member, or NULL with ERR set. */
static json_t *walk(const dsl_expr *e, json_t *root, dsl_eval_error *err)
{
    json_t *cur = root;
    for (size_t i = 0; i < e->nsegs; i++) {
        const dsl_path_seg *s = &e->segs[i];
        if (json_is_null(cur))
            return cur;
        if (s->kind == DSL_SEG_FIELD) {
            if (!json_is_object(cur)) {
                set_err(err, "cannot take field '%s' of %s", s->name, dsl_value_type_name(cur));
                return NULL;
            }
            cur = json_object_get(cur, s->name);
        } else {
            if (!json_is_array(cur)) {
                set_err(err, "cannot take index %ld of %s", s->index, dsl_value_type_name(cur));
                return NULL;
            }
            size_t n = json_array_size(cur);
            long idx = s->index;
            /* Compare in size_t so a huge index cannot wrap a long. */
            if (idx < 0)
                cur = (size_t)-(idx + 1) < n ? json_array_get(cur, n - 1 - (size_t)-(idx + 1)) : NULL;
            else
                cur = (size_t)idx < n ? json_array_get(cur, (size_t)idx) : NULL;
        }
        if (!cur)
            cur = json_null();
    }
    return cur;
}

json_t *dsl_expr_eval(const dsl_expr *e, dsl_root_lookup_fn lookup, void *ud, dsl_eval_error *err)
{
    dsl_eval_error dummy;
    if (!err)
        err = &dummy; /* filters write their errors unconditionally */
    err->msg[0] = '\0';
    json_t *root = lookup(ud, e);
    if (!root) {
        set_err(err, "'%s' has no value here", e->root);
        return NULL;
    }
    json_t *cur = walk(e, root, err);
    if (!cur)
        return NULL;
    json_incref(cur);
    for (size_t i = 0; i < e->nfilters; i++) {
        const dsl_filter_call *f = &e->filters[i];
        json_t *next = f->def->fn(cur, f->args, err);
        json_decref(cur);
        if (!next) {
            if (!err->msg[0])
                set_err(err, "filter '%s': out of memory", f->def->name);
            return NULL;
        }
        cur = next;
    }
    return cur;
}

int dsl_sbuf_dump_cb(const char *s, size_t n, void *b)
{
    return sbuf_add(b, s, n);
}

/* Appends V as template text: strings raw, null as nothing, others compact JSON. */
static int render(sbuf *b, const json_t *v)
{
    if (json_is_string(v))
        return sbuf_add(b, json_string_value(v), json_string_length(v));
    if (json_is_null(v))
        return 0;
    return json_dump_callback(v, dsl_sbuf_dump_cb, b, DSL_TEXT_JSON_FLAGS);
}

json_t *dsl_template_eval(const dsl_template *t, dsl_root_lookup_fn lookup, void *ud,
                          dsl_eval_error *err)
{
    if (err)
        err->msg[0] = '\0';
    if (t->whole)
        return dsl_expr_eval(t->parts[0].expr, lookup, ud, err);
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    json_t *out = NULL;
    for (size_t i = 0; i < t->nparts; i++) {
        const dsl_tpl_part *part = &t->parts[i];
        if (part->text) {
            if (sbuf_add(&b, part->text, part->len) < 0)
                goto oom;
            continue;
        }
        json_t *v = dsl_expr_eval(part->expr, lookup, ud, err);
        if (!v)
            goto fail;
        int rc = render(&b, v);
        json_decref(v);
        if (rc < 0)
            goto oom;
    }
    /* The parser checked the text is UTF-8 and jansson values are, so only
     * memory can fail here. */
    out = json_stringn(b.n ? b.p : "", b.n);
    if (!out)
        goto oom;
    sbuf_free(&b);
    return out;
oom:
    if (b.too_big)
        set_err(err, "the rendered text is longer than %u MiB", DSL_MAX_TEXT_BYTES >> 20);
    else
        set_err(err, "out of memory rendering a template");
fail:
    sbuf_free(&b);
    return NULL;
}

char *dsl_value_to_text(const json_t *v)
{
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        char *s = malloc(n + 1);
        if (!s)
            return NULL;
        memcpy(s, json_string_value(v), n);
        s[n] = '\0';
        return s;
    }
    if (!v || json_is_null(v))
        return strdup("");
    return json_dumps(v, DSL_TEXT_JSON_FLAGS);
}
