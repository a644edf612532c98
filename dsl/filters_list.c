/* filters_list.c -- filters of arrays and objects (most also take a string
 * as a sequence of characters): length, first, last, keys, values, join,
 * default, eq, contains, get, slice, reverse, sort, min, max, unique,
 * flatten. */
#include "dsl/filters_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

#define ARG(i) json_array_get(args, (i))

/* ---- helpers: comparison and positions ---- */

/* Numbers compare by value (1 equals 1.0); everything else as json_equal. */
static int values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    return json_equal(a, b);
}

typedef struct item {
    json_t *v;
    size_t i;
} item;

/* Orders numbers by value and strings by code point; ties keep input order. */
static int cmp_items(const void *pa, const void *pb)
{
    const item *a = pa, *b = pb;
    int c;
    if (json_is_number(a->v)) {
        double x = json_number_value(a->v), y = json_number_value(b->v);
        c = x < y ? -1 : x > y;
    } else {
        size_t na = json_string_length(a->v), nb = json_string_length(b->v);
        c = memcmp(json_string_value(a->v), json_string_value(b->v), na < nb ? na : nb);
        if (!c)
            c = na < nb ? -1 : na > nb;
    }
    return c ? c : a->i < b->i ? -1 : a->i > b->i;
}

/* An array's items sorted (stable) as items, for sort/min/max. NULL + ERR if
 * IN is not an array of all numbers or all strings. Caller frees *OUT. */
static int sorted_items(const char *f, json_t *in, item **out, dsl_eval_error *err)
{
    if (!json_is_array(in)) {
        dsl_flt_type_err(err, f, "an array", in);
        return -1;
    }
    size_t n = json_array_size(in);
    item *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        dsl_flt_err(err, "out of memory");
        return -1;
    }
    int nums = n && json_is_number(json_array_get(in, 0));
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(in, i);
        if (nums ? !json_is_number(x) : !json_is_string(x)) {
            dsl_flt_err(err, "filter '%s' needs all numbers or all strings, got %s at index %zu", f,
                 dsl_value_type_name(x), i);
            free(v);
            return -1;
        }
        v[i] = (item){ x, i };
    }
    qsort(v, n, sizeof *v, cmp_items);
    *out = v;
    return 0;
}

/* Python-style position: negative counts from the end, clamped to [0, n]. */
static size_t clamp_pos(long long i, size_t n)
{
    if (i < 0)
        return (unsigned long long)-(i + 1) < n ? n - 1 - (size_t)-(i + 1) : 0;
    return (unsigned long long)i < n ? (size_t)i : n;
}

/* ---- collections ---- */

json_t *dsl_flt_length(json_t *in, const json_t *args, dsl_eval_error *err)
{
    size_t n;
    if (json_is_string(in))
        n = dsl_flt_cp_count(json_string_value(in), json_string_length(in));
    else if (json_is_array(in))
        n = json_array_size(in);
    else if (json_is_object(in))
        n = json_object_size(in);
    else if (json_is_null(in))
        n = 0;
    else
        return dsl_flt_type_err(err, "length", "a string, an array or an object", in);
    return dsl_flt_ok(json_integer((json_int_t)n), err);
}

static json_t *end_item(const char *f, json_t *in, int last, dsl_eval_error *err)
{
    if (json_is_null(in))
        return json_null();
    if (json_is_array(in)) {
        size_t n = json_array_size(in);
        return n ? json_incref(json_array_get(in, last ? n - 1 : 0)) : json_null();
    }
    if (!json_is_string(in))
        return dsl_flt_type_err(err, f, "an array or a string", in);
    const char *s = json_string_value(in);
    size_t n = json_string_length(in), a = 0, b = dsl_flt_cp_offset(s, n, 1);
    if (last && n) {
        for (a = n - 1; a > 0 && ((unsigned char)s[a] & 0xC0) == 0x80; a--)
            ;
        b = n;
    }
    return dsl_flt_ok(json_stringn(s + a, b - a), err);
}

json_t *dsl_flt_first(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return end_item("first", in, 0, err);
}

json_t *dsl_flt_last(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return end_item("last", in, 1, err);
}

static json_t *object_list(const char *f, json_t *in, int want_keys, dsl_eval_error *err)
{
    if (!json_is_object(in))
        return dsl_flt_type_err(err, f, "an object", in);
    json_t *out = json_array(), *v;
    const char *k;
    if (!out)
        return dsl_flt_err(err, "out of memory");
    json_object_foreach(in, k, v) {
        if (json_array_append_new(out, want_keys ? json_string(k) : json_incref(v)) < 0) {
            json_decref(out);
            return dsl_flt_err(err, "out of memory");
        }
    }
    return out;
}

json_t *dsl_flt_keys(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return object_list("keys", in, 1, err);
}

json_t *dsl_flt_values(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return object_list("values", in, 0, err);
}

json_t *dsl_flt_join(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *sep = ARG(0);
    if (json_is_null(in))
        return dsl_flt_ok(json_string(""), err);
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "join", "an array", in);
    if (sep && !json_is_string(sep))
        return dsl_flt_err(err, "filter 'join': the separator must be a string");
    const char *sp = sep ? json_string_value(sep) : ", ";
    size_t sn = sep ? json_string_length(sep) : 2, i;
    json_t *v;
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    int bad = 0;
    json_array_foreach(in, i, v) {
        if (i)
            bad = bad || sbuf_add(&b, sp, sn) < 0;
        if (json_is_string(v))
            bad = bad || sbuf_add(&b, json_string_value(v), json_string_length(v)) < 0;
        else if (!json_is_null(v))
            bad = bad || json_dump_callback(v, dsl_sbuf_dump_cb, &b, DSL_TEXT_JSON_FLAGS) < 0;
    }
    return dsl_flt_text_finish(&b, bad, "join", err);
}

json_t *dsl_flt_default(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_null(in) || (json_is_string(in) && !json_string_length(in)))
        return dsl_flt_ok(json_deep_copy(ARG(0)), err); /* a copy: the template's literal is shared */
    return json_incref(in);
}

json_t *dsl_flt_eq(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(values_equal(in, ARG(0)));
}

json_t *dsl_flt_contains(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *x = ARG(0), *v;
    size_t i;
    if (json_is_null(in))
        return json_false();
    if (json_is_array(in)) {
        json_array_foreach(in, i, v)
            if (values_equal(v, x))
                return json_true();
        return json_false();
    }
    if (!json_is_string(in) && !json_is_object(in))
        return dsl_flt_type_err(err, "contains", "a string, an array or an object", in);
    if (!json_is_string(x))
        return dsl_flt_err(err, "filter 'contains' on %s takes a string, got %s", dsl_value_type_name(in),
                    dsl_value_type_name(x));
    if (json_is_object(in))
        return json_boolean(json_object_get(in, json_string_value(x)) != NULL);
    return json_boolean(memmem(json_string_value(in), json_string_length(in), json_string_value(x),
                               json_string_length(x)) != NULL);
}

json_t *dsl_flt_get(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *k = ARG(0);
    json_t *v = NULL;
    long long i;
    if (json_is_null(in))
        return json_null();
    if (json_is_object(in)) {
        char num[32];
        if (json_is_integer(k))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(k));
        else if (!json_is_string(k))
            return dsl_flt_err(err, "filter 'get' on an object takes a string key, got %s", dsl_value_type_name(k));
        v = json_object_get(in, json_is_string(k) ? json_string_value(k) : num);
    } else if (json_is_array(in)) {
        if (dsl_flt_int_arg(k, &i) < 0)
            return dsl_flt_err(err, "filter 'get' on an array takes an integer index, got %s", dsl_value_type_name(k));
        size_t n = json_array_size(in), p = clamp_pos(i, n);
        if (i >= -(long long)n && p < n)
            v = json_array_get(in, p);
    } else {
        return dsl_flt_type_err(err, "get", "an object or an array", in);
    }
    return v ? json_incref(v) : json_null();
}

json_t *dsl_flt_slice(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long a, b = LLONG_MAX;
    if (dsl_flt_int_arg(ARG(0), &a) < 0 || (ARG(1) && !json_is_null(ARG(1)) && dsl_flt_int_arg(ARG(1), &b) < 0))
        return dsl_flt_err(err, "filter 'slice' takes integer positions");
    if (json_is_string(in)) {
        const char *s = json_string_value(in);
        size_t n = json_string_length(in), cps = dsl_flt_cp_count(s, n);
        size_t from = clamp_pos(a, cps), to = clamp_pos(b, cps);
        if (to < from)
            to = from;
        size_t x = dsl_flt_cp_offset(s, n, from), y = x + dsl_flt_cp_offset(s + x, n - x, to - from);
        return dsl_flt_ok(json_stringn(s + x, y - x), err);
    }
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "slice", "an array or a string", in);
    size_t n = json_array_size(in), from = clamp_pos(a, n), to = clamp_pos(b, n);
    json_t *out = json_array();
    if (!out)
        return dsl_flt_err(err, "out of memory");
    for (size_t i = from; i < to; i++) {
        if (json_array_append(out, json_array_get(in, i)) < 0) {
            json_decref(out);
            return dsl_flt_err(err, "out of memory");
        }
    }
    return out;
}

json_t *dsl_flt_reverse(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_string(in)) {
        const char *s = json_string_value(in);
        size_t n = json_string_length(in), i = 0;
        char *r = malloc(n + 1);
        if (!r)
            return dsl_flt_err(err, "out of memory");
        while (i < n) {
            size_t k = dsl_flt_cp_offset(s + i, n - i, 1);
            memcpy(r + n - i - k, s + i, k);
            i += k;
        }
        json_t *v = json_stringn(r, n);
        free(r);
        return dsl_flt_ok(v, err);
    }
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "reverse", "an array or a string", in);
    json_t *out = json_array();
    for (size_t i = json_array_size(in); out && i > 0; i--)
        if (json_array_append(out, json_array_get(in, i - 1)) < 0) {
            json_decref(out);
            out = NULL;
        }
    return dsl_flt_ok(out, err);
}

/* A new array of the values of V[0..N) (borrowed). */
static json_t *items_array(const item *v, size_t n, dsl_eval_error *err)
{
    json_t *out = json_array();
    for (size_t i = 0; out && i < n; i++)
        if (v[i].v && json_array_append(out, v[i].v) < 0) {
            json_decref(out);
            out = NULL;
        }
    return dsl_flt_ok(out, err);
}

json_t *dsl_flt_sort(json_t *in, const json_t *args, dsl_eval_error *err)
{
    item *v;
    if (sorted_items("sort", in, &v, err) < 0)
        return NULL;
    json_t *out = items_array(v, json_array_size(in), err);
    free(v);
    return out;
}

static json_t *extreme(const char *f, json_t *in, int want_max, dsl_eval_error *err)
{
    item *v;
    if (sorted_items(f, in, &v, err) < 0)
        return NULL;
    size_t n = json_array_size(in);
    json_t *r = n ? json_incref(v[want_max ? n - 1 : 0].v) : json_null();
    free(v);
    return r;
}

json_t *dsl_flt_min(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return extreme("min", in, 0, err);
}

json_t *dsl_flt_max(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return extreme("max", in, 1, err);
}

typedef struct keyed {
    char *key;
    size_t i;
} keyed;

static int cmp_keyed(const void *pa, const void *pb)
{
    const keyed *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    return c ? c : a->i < b->i ? -1 : a->i > b->i;
}

/* The text unique() compares: numbers by value (1 and 1.0 are one, as in
 * eq), anything else as JSON with sorted keys (json_equal's equality). */
static char *unique_key(const json_t *v)
{
    if (!json_is_number(v))
        return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    char *k = malloc(32);
    if (k)
        snprintf(k, 32, "n:%.17g", json_number_value(v));
    return k;
}

/* Stable: the first of equal items stays. Keys are sorted rather than
 * compared pairwise, so a long list costs n log n, not n^2. */
json_t *dsl_flt_unique(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "unique", "an array", in);
    size_t n = json_array_size(in), done = 0;
    keyed *k = calloc(n ? n : 1, sizeof *k);
    item *keep = calloc(n ? n : 1, sizeof *keep);
    json_t *out = NULL;
    if (!k || !keep)
        goto fail;
    for (; done < n; done++) {
        k[done].i = done;
        k[done].key = unique_key(json_array_get(in, done));
        if (!k[done].key)
            goto fail;
    }
    qsort(k, n, sizeof *k, cmp_keyed);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(k[i].key, k[i - 1].key))
            keep[k[i].i].v = json_array_get(in, k[i].i);
    out = items_array(keep, n, err);
    goto done;
fail:
    dsl_flt_err(err, "out of memory");
done:
    for (size_t i = 0; k && i < done; i++)
        free(k[i].key);
    free(k);
    free(keep);
    return out;
}

json_t *dsl_flt_flatten(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "flatten", "an array", in);
    json_t *out = json_array(), *v;
    size_t i;
    int bad = !out;
    json_array_foreach(in, i, v) {
        if (bad)
            break;
        if (json_is_array(v))
            bad = json_array_extend(out, v) < 0;
        else
            bad = json_array_append(out, v) < 0;
    }
    if (bad) {
        json_decref(out);
        return dsl_flt_err(err, "out of memory");
    }
    return out;
}
