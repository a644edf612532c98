/* filters_text.c -- filters of strings: trim, lower, upper, truncate, replace,
 * starts_with, ends_with, split, lines. Lengths and cuts count code points. */
#include "dsl/filters_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

#define ARG(i) json_array_get(args, (i))

/* ---- strings ---- */

json_t *dsl_flt_trim(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "trim", "a string", in);
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    dsl_flt_trim_span(&s, &n);
    return dsl_flt_ok(json_stringn(s, n), err);
}

static json_t *change_case(const char *f, json_t *in, int upper, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return dsl_flt_type_err(err, f, "a string", in);
    size_t n = json_string_length(in);
    char *s = malloc(n + 1);
    if (!s)
        return dsl_flt_err(err, "out of memory");
    memcpy(s, json_string_value(in), n + 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x80)
            s[i] = (char)(upper ? toupper((unsigned char)s[i]) : tolower((unsigned char)s[i]));
    json_t *v = json_stringn(s, n);
    free(s);
    return dsl_flt_ok(v, err);
}

json_t *dsl_flt_lower(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return change_case("lower", in, 0, err);
}

json_t *dsl_flt_upper(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return change_case("upper", in, 1, err);
}

json_t *dsl_flt_truncate(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long k;
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "truncate", "a string", in);
    if (dsl_flt_int_arg(ARG(0), &k) < 0 || k < 0)
        return dsl_flt_err(err, "filter 'truncate': the length must be a non-negative integer");
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    return dsl_flt_ok(json_stringn(s, dsl_flt_cp_offset(s, n, (unsigned long long)k > n ? n : (size_t)k)), err);
}

json_t *dsl_flt_replace(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *from = ARG(0), *to = ARG(1);
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "replace", "a string", in);
    if (!json_is_string(from) || !json_is_string(to))
        return dsl_flt_err(err, "filter 'replace' takes two strings");
    size_t fn = json_string_length(from), tn = json_string_length(to), n = json_string_length(in);
    if (!fn)
        return dsl_flt_err(err, "filter 'replace': the text to replace is empty");
    const char *s = json_string_value(in), *end = s + n, *hit;
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    int bad = 0;
    while (!bad && (hit = memmem(s, (size_t)(end - s), json_string_value(from), fn))) {
        bad = sbuf_add(&b, s, (size_t)(hit - s)) < 0 || sbuf_add(&b, json_string_value(to), tn) < 0;
        s = hit + fn;
    }
    bad = bad || sbuf_add(&b, s, (size_t)(end - s)) < 0;
    return dsl_flt_text_finish(&b, bad, "replace", err);
}

static json_t *affix(const char *f, json_t *in, const json_t *args, int at_end, dsl_eval_error *err)
{
    const json_t *a = ARG(0);
    if (!json_is_string(in))
        return dsl_flt_type_err(err, f, "a string", in);
    if (!json_is_string(a))
        return dsl_flt_err(err, "filter '%s' takes a string, got %s", f, dsl_value_type_name(a));
    size_t n = json_string_length(in), k = json_string_length(a);
    const char *s = json_string_value(in) + (at_end && k <= n ? n - k : 0);
    return json_boolean(k <= n && !memcmp(s, json_string_value(a), k));
}

json_t *dsl_flt_starts_with(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return affix("starts_with", in, args, 0, err);
}

json_t *dsl_flt_ends_with(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return affix("ends_with", in, args, 1, err);
}

/* Appends a string to ARR: -1 when out of memory or, with *BIG set, when
 * ARR already holds DSL_MAX_ITEMS. */
static int push_str(json_t *arr, const char *s, size_t n, int *big)
{
    if (json_array_size(arr) >= DSL_MAX_ITEMS) {
        *big = 1;
        return -1;
    }
    return json_array_append_new(arr, json_stringn(s, n));
}

/* The end of split and lines: OUT, or the error that stopped it. */
static json_t *pieces_done(const char *f, json_t *out, int bad, int big, dsl_eval_error *err)
{
    if (!bad)
        return out;
    json_decref(out);
    if (big)
        return dsl_flt_err(err, "filter '%s': more than %u items", f, DSL_MAX_ITEMS);
    return dsl_flt_err(err, "out of memory");
}

json_t *dsl_flt_split(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *sep = ARG(0);
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "split", "a string", in);
    if (sep && !json_is_string(sep))
        return dsl_flt_err(err, "filter 'split': the separator must be a string");
    const char *s = json_string_value(in), *end = s + json_string_length(in);
    json_t *out = json_array();
    int bad = !out, big = 0;
    if (!sep) { /* runs of blanks, no empty items */
        while (!bad && s < end) {
            while (s < end && dsl_flt_is_blank(*s))
                s++;
            const char *w = s;
            while (s < end && !dsl_flt_is_blank(*s))
                s++;
            if (s > w)
                bad = push_str(out, w, (size_t)(s - w), &big) < 0;
        }
    } else if (!json_string_length(sep)) { /* code points */
        while (!bad && s < end) {
            size_t k = dsl_flt_cp_offset(s, (size_t)(end - s), 1);
            bad = push_str(out, s, k, &big) < 0;
            s += k;
        }
    } else {
        const char *p = json_string_value(sep), *hit;
        size_t pn = json_string_length(sep);
        while (!bad && (hit = memmem(s, (size_t)(end - s), p, pn))) {
            bad = push_str(out, s, (size_t)(hit - s), &big) < 0;
            s = hit + pn;
        }
        bad = bad || push_str(out, s, (size_t)(end - s), &big) < 0;
    }
    return pieces_done("split", out, bad, big, err);
}

json_t *dsl_flt_lines(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "lines", "a string", in);
    const char *s = json_string_value(in), *end = s + json_string_length(in);
    json_t *out = json_array();
    int bad = !out, big = 0;
    while (!bad && s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s)), *l = s;
        size_t n = (size_t)((nl ? nl : end) - s);
        s = nl ? nl + 1 : end;
        dsl_flt_trim_span(&l, &n);
        if (n)
            bad = push_str(out, l, n, &big) < 0;
    }
    return pieces_done("lines", out, bad, big, err);
}
