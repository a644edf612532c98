/* filters.c -- the filters of template pipelines (`{{ x | trim | lower }}`).
 *
 * One static const table, sorted by name so the parser finds a filter by
 * binary search. Each filter takes a borrowed input and borrowed literal
 * arguments (the parser checked their count, not their types) and returns a
 * new reference or NULL with an error. Every filter decides explicitly what
 * each JSON type means to it; a type it has no use for is an error naming the
 * type, never a silent guess. Strings are UTF-8 (jansson guarantees it), so
 * lengths, slices and truncation count code points and never cut one. */
#include "dsl/template.h"

#include "common/containers.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h> /* isfinite, a macro: no -lm */
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARG(i) json_array_get(args, (i))

static json_t *ferr(dsl_eval_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *ferr(dsl_eval_error *err, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return NULL;
}

static json_t *type_err(dsl_eval_error *err, const char *f, const char *want, const json_t *in)
{
    return ferr(err, "filter '%s' expects %s, got %s", f, want, dsl_value_type_name(in));
}

/* Checks a jansson result: NULL means out of memory. Steals V. */
static json_t *ok(json_t *v, dsl_eval_error *err)
{
    return v ? v : ferr(err, "out of memory");
}

/* ---- helpers: text buffer, UTF-8, numbers, comparison ---- */

/* The buffer as a new string value for filter F; frees the buffer. */
static json_t *text_finish(sbuf *b, int failed, const char *f, dsl_eval_error *err)
{
    json_t *v = failed || b->failed ? NULL : json_stringn(b->n ? b->p : "", b->n);
    bool too_big = b->too_big;
    sbuf_free(b);
    if (too_big)
        return ferr(err, "filter '%s': the result is longer than %u MiB", f, DSL_MAX_TEXT_BYTES >> 20);
    return ok(v, err);
}

/* IN as JSON text (a new string value), through the capped buffer. */
static json_t *dump_text(const char *f, const json_t *in, size_t flags, dsl_eval_error *err)
{
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    int bad = json_dump_callback(in, dsl_sbuf_dump_cb, &b, flags) < 0;
    return text_finish(&b, bad, f, err);
}

static size_t cp_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Byte offset of code point K of S (N bytes), or N if S has fewer. */
static size_t cp_offset(const char *s, size_t n, size_t k)
{
    size_t i = 0;
    while (i < n && k > 0) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        k--;
    }
    return i;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static void trim_span(const char **s, size_t *n)
{
    while (*n && is_blank(**s))
        (*s)++, (*n)--;
    while (*n && is_blank((*s)[*n - 1]))
        (*n)--;
}

/* Parses a JSON number (a leading '+' allowed) from trimmed text. New
 * reference, or NULL if S is not a number (or memory ran out: *OOM set). */
static json_t *parse_num(const char *s, size_t n, int *oom)
{
    trim_span(&s, &n);
    size_t i = 0;
    int is_int = 1;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    size_t d0 = i;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == d0)
        return NULL;
    if (i < n && s[i] == '.') {
        is_int = 0;
        size_t f0 = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == f0)
            return NULL;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t e0 = i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == e0)
            return NULL;
    }
    if (i != n)
        return NULL;
    char *c = strndup(s, n);
    json_t *v = NULL;
    if (!c) {
        *oom = 1;
        return NULL;
    }
    errno = 0;
    long long ll = is_int ? strtoll(c, NULL, 10) : 0;
    if (is_int && errno != ERANGE) {
        v = json_integer(ll);
    } else {
        double d = strtod(c, NULL);
        v = isfinite(d) ? json_real(d) : NULL;
        if (!isfinite(d)) {
            free(c);
            return NULL;
        }
    }
    free(c);
    if (!v)
        *oom = 1;
    return v;
}

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
        type_err(err, f, "an array", in);
        return -1;
    }
    size_t n = json_array_size(in);
    item *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        ferr(err, "out of memory");
        return -1;
    }
    int nums = n && json_is_number(json_array_get(in, 0));
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(in, i);
        if (nums ? !json_is_number(x) : !json_is_string(x)) {
            ferr(err, "filter '%s' needs all numbers or all strings, got %s at index %zu", f,
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

static int int_arg(const json_t *a, long long *out)
{
    if (!json_is_integer(a))
        return -1;
    *out = json_integer_value(a);
    return 0;
}

/* Python-style position: negative counts from the end, clamped to [0, n]. */
static size_t clamp_pos(long long i, size_t n)
{
    if (i < 0)
        return (unsigned long long)-(i + 1) < n ? n - 1 - (size_t)-(i + 1) : 0;
    return (unsigned long long)i < n ? (size_t)i : n;
}

int dsl_value_truthy(const json_t *v)
{
    if (!v)
        return 0;
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE: return 0;
    case JSON_TRUE: return 1;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0.0;
    case JSON_ARRAY: return json_array_size(v) != 0;
    case JSON_OBJECT: return json_object_size(v) != 0;
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        trim_span(&s, &n);
        static const char *const falsy[] = { "false", "no", "0", "off" };
        if (!n)
            return 0;
        for (size_t i = 0; i < sizeof falsy / sizeof *falsy; i++)
            if (strlen(falsy[i]) == n && !strncasecmp(s, falsy[i], n))
                return 0;
        return 1;
    }
    }
    return 1;
}

/* ---- conversions ---- */

static json_t *f_json(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return dump_text("json", in, DSL_TEXT_JSON_FLAGS, err);
}

static json_t *f_pretty(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return dump_text("pretty", in, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15), err);
}

static json_t *f_string(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_string(in))
        return json_incref(in);
    if (json_is_null(in))
        return ok(json_string(""), err);
    return dump_text("string", in, DSL_TEXT_JSON_FLAGS, err); /* as dsl_value_to_text, capped */
}

/* A number from a number or numeric string; NULL + ERR otherwise. */
static json_t *to_number(const char *f, json_t *in, dsl_eval_error *err)
{
    if (json_is_number(in))
        return json_incref(in);
    if (!json_is_string(in))
        return type_err(err, f, "a number or a numeric string", in);
    int oom = 0;
    json_t *v = parse_num(json_string_value(in), json_string_length(in), &oom);
    if (!v && !oom)
        return ferr(err, "filter '%s': '%.40s' is not a number", f, json_string_value(in));
    return ok(v, err);
}

static json_t *f_number(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return to_number("number", in, err);
}

static json_t *f_int(json_t *in, const json_t *args, dsl_eval_error *err)
{
    json_t *n = to_number("int", in, err);
    if (!n || json_is_integer(n))
        return n;
    double d = json_real_value(n);
    json_decref(n);
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return ferr(err, "filter 'int': %g is out of the integer range", d);
    return ok(json_integer((json_int_t)d), err); /* the cast truncates toward zero */
}

static json_t *f_bool(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(dsl_value_truthy(in));
}

static json_t *f_not(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(!dsl_value_truthy(in));
}

static json_t *f_type(json_t *in, const json_t *args, dsl_eval_error *err)
{
    static const char *const names[] = {
        [JSON_OBJECT] = "object", [JSON_ARRAY] = "array", [JSON_STRING] = "string",
        [JSON_INTEGER] = "number", [JSON_REAL] = "number", [JSON_TRUE] = "boolean",
        [JSON_FALSE] = "boolean", [JSON_NULL] = "null",
    };
    return ok(json_string(names[json_typeof(in)]), err);
}

static json_t *f_parse_json(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return type_err(err, "parse_json", "a string", in);
    json_error_t je;
    json_t *v = json_loadb(json_string_value(in), json_string_length(in),
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v && !je.text[0])
        return ferr(err, "out of memory");
    if (!v)
        return ferr(err, "filter 'parse_json': invalid JSON at char %d: %s", je.position, je.text);
    return v;
}

/* ---- strings ---- */

static json_t *f_trim(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return type_err(err, "trim", "a string", in);
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    trim_span(&s, &n);
    return ok(json_stringn(s, n), err);
}

static json_t *change_case(const char *f, json_t *in, int upper, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return type_err(err, f, "a string", in);
    size_t n = json_string_length(in);
    char *s = malloc(n + 1);
    if (!s)
        return ferr(err, "out of memory");
    memcpy(s, json_string_value(in), n + 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x80)
            s[i] = (char)(upper ? toupper((unsigned char)s[i]) : tolower((unsigned char)s[i]));
    json_t *v = json_stringn(s, n);
    free(s);
    return ok(v, err);
}

static json_t *f_lower(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return change_case("lower", in, 0, err);
}

static json_t *f_upper(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return change_case("upper", in, 1, err);
}

static json_t *f_truncate(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long k;
    if (!json_is_string(in))
        return type_err(err, "truncate", "a string", in);
    if (int_arg(ARG(0), &k) < 0 || k < 0)
        return ferr(err, "filter 'truncate': the length must be a non-negative integer");
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    return ok(json_stringn(s, cp_offset(s, n, (unsigned long long)k > n ? n : (size_t)k)), err);
}

static json_t *f_replace(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *from = ARG(0), *to = ARG(1);
    if (!json_is_string(in))
        return type_err(err, "replace", "a string", in);
    if (!json_is_string(from) || !json_is_string(to))
        return ferr(err, "filter 'replace' takes two strings");
    size_t fn = json_string_length(from), tn = json_string_length(to), n = json_string_length(in);
    if (!fn)
        return ferr(err, "filter 'replace': the text to replace is empty");
    const char *s = json_string_value(in), *end = s + n, *hit;
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    int bad = 0;
    while (!bad && (hit = memmem(s, (size_t)(end - s), json_string_value(from), fn))) {
        bad = sbuf_add(&b, s, (size_t)(hit - s)) < 0 || sbuf_add(&b, json_string_value(to), tn) < 0;
        s = hit + fn;
    }
    bad = bad || sbuf_add(&b, s, (size_t)(end - s)) < 0;
    return text_finish(&b, bad, "replace", err);
}

static json_t *affix(const char *f, json_t *in, const json_t *args, int at_end, dsl_eval_error *err)
{
    const json_t *a = ARG(0);
    if (!json_is_string(in))
        return type_err(err, f, "a string", in);
    if (!json_is_string(a))
        return ferr(err, "filter '%s' takes a string, got %s", f, dsl_value_type_name(a));
    size_t n = json_string_length(in), k = json_string_length(a);
    const char *s = json_string_value(in) + (at_end && k <= n ? n - k : 0);
    return json_boolean(k <= n && !memcmp(s, json_string_value(a), k));
}

static json_t *f_starts_with(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return affix("starts_with", in, args, 0, err);
}

static json_t *f_ends_with(json_t *in, const json_t *args, dsl_eval_error *err)
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
        return ferr(err, "filter '%s': more than %u items", f, DSL_MAX_ITEMS);
    return ferr(err, "out of memory");
}

static json_t *f_split(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *sep = ARG(0);
    if (!json_is_string(in))
        return type_err(err, "split", "a string", in);
    if (sep && !json_is_string(sep))
        return ferr(err, "filter 'split': the separator must be a string");
    const char *s = json_string_value(in), *end = s + json_string_length(in);
    json_t *out = json_array();
    int bad = !out, big = 0;
    if (!sep) { /* runs of blanks, no empty items */
        while (!bad && s < end) {
            while (s < end && is_blank(*s))
                s++;
            const char *w = s;
            while (s < end && !is_blank(*s))
                s++;
            if (s > w)
                bad = push_str(out, w, (size_t)(s - w), &big) < 0;
        }
    } else if (!json_string_length(sep)) { /* code points */
        while (!bad && s < end) {
            size_t k = cp_offset(s, (size_t)(end - s), 1);
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

static json_t *f_lines(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return type_err(err, "lines", "a string", in);
    const char *s = json_string_value(in), *end = s + json_string_length(in);
    json_t *out = json_array();
    int bad = !out, big = 0;
    while (!bad && s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s)), *l = s;
        size_t n = (size_t)((nl ? nl : end) - s);
        s = nl ? nl + 1 : end;
        trim_span(&l, &n);
        if (n)
            bad = push_str(out, l, n, &big) < 0;
    }
    return pieces_done("lines", out, bad, big, err);
}

/* ---- collections ---- */

static json_t *f_length(json_t *in, const json_t *args, dsl_eval_error *err)
{
    size_t n;
    if (json_is_string(in))
        n = cp_count(json_string_value(in), json_string_length(in));
    else if (json_is_array(in))
        n = json_array_size(in);
    else if (json_is_object(in))
        n = json_object_size(in);
    else if (json_is_null(in))
        n = 0;
    else
        return type_err(err, "length", "a string, an array or an object", in);
    return ok(json_integer((json_int_t)n), err);
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
        return type_err(err, f, "an array or a string", in);
    const char *s = json_string_value(in);
    size_t n = json_string_length(in), a = 0, b = cp_offset(s, n, 1);
    if (last && n) {
        for (a = n - 1; a > 0 && ((unsigned char)s[a] & 0xC0) == 0x80; a--)
            ;
        b = n;
    }
    return ok(json_stringn(s + a, b - a), err);
}

static json_t *f_first(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return end_item("first", in, 0, err);
}

static json_t *f_last(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return end_item("last", in, 1, err);
}

static json_t *object_list(const char *f, json_t *in, int want_keys, dsl_eval_error *err)
{
    if (!json_is_object(in))
        return type_err(err, f, "an object", in);
    json_t *out = json_array(), *v;
    const char *k;
    if (!out)
        return ferr(err, "out of memory");
    json_object_foreach(in, k, v) {
        if (json_array_append_new(out, want_keys ? json_string(k) : json_incref(v)) < 0) {
            json_decref(out);
            return ferr(err, "out of memory");
        }
    }
    return out;
}

static json_t *f_keys(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return object_list("keys", in, 1, err);
}

static json_t *f_values(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return object_list("values", in, 0, err);
}

static json_t *f_join(json_t *in, const json_t *args, dsl_eval_error *err)
{
    const json_t *sep = ARG(0);
    if (json_is_null(in))
        return ok(json_string(""), err);
    if (!json_is_array(in))
        return type_err(err, "join", "an array", in);
    if (sep && !json_is_string(sep))
        return ferr(err, "filter 'join': the separator must be a string");
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
    return text_finish(&b, bad, "join", err);
}

static json_t *f_default(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_null(in) || (json_is_string(in) && !json_string_length(in)))
        return ok(json_deep_copy(ARG(0)), err); /* a copy: the template's literal is shared */
    return json_incref(in);
}

static json_t *f_eq(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(values_equal(in, ARG(0)));
}

static json_t *f_contains(json_t *in, const json_t *args, dsl_eval_error *err)
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
        return type_err(err, "contains", "a string, an array or an object", in);
    if (!json_is_string(x))
        return ferr(err, "filter 'contains' on %s takes a string, got %s", dsl_value_type_name(in),
                    dsl_value_type_name(x));
    if (json_is_object(in))
        return json_boolean(json_object_get(in, json_string_value(x)) != NULL);
    return json_boolean(memmem(json_string_value(in), json_string_length(in), json_string_value(x),
                               json_string_length(x)) != NULL);
}

static json_t *f_get(json_t *in, const json_t *args, dsl_eval_error *err)
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
            return ferr(err, "filter 'get' on an object takes a string key, got %s", dsl_value_type_name(k));
        v = json_object_get(in, json_is_string(k) ? json_string_value(k) : num);
    } else if (json_is_array(in)) {
        if (int_arg(k, &i) < 0)
            return ferr(err, "filter 'get' on an array takes an integer index, got %s", dsl_value_type_name(k));
        size_t n = json_array_size(in), p = clamp_pos(i, n);
        if (i >= -(long long)n && p < n)
            v = json_array_get(in, p);
    } else {
        return type_err(err, "get", "an object or an array", in);
    }
    return v ? json_incref(v) : json_null();
}

static json_t *f_slice(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long a, b = LLONG_MAX;
    if (int_arg(ARG(0), &a) < 0 || (ARG(1) && !json_is_null(ARG(1)) && int_arg(ARG(1), &b) < 0))
        return ferr(err, "filter 'slice' takes integer positions");
    if (json_is_string(in)) {
        const char *s = json_string_value(in);
        size_t n = json_string_length(in), cps = cp_count(s, n);
        size_t from = clamp_pos(a, cps), to = clamp_pos(b, cps);
        if (to < from)
            to = from;
        size_t x = cp_offset(s, n, from), y = x + cp_offset(s + x, n - x, to - from);
        return ok(json_stringn(s + x, y - x), err);
    }
    if (!json_is_array(in))
        return type_err(err, "slice", "an array or a string", in);
    size_t n = json_array_size(in), from = clamp_pos(a, n), to = clamp_pos(b, n);
    json_t *out = json_array();
    if (!out)
        return ferr(err, "out of memory");
    for (size_t i = from; i < to; i++) {
        if (json_array_append(out, json_array_get(in, i)) < 0) {
            json_decref(out);
            return ferr(err, "out of memory");
        }
    }
    return out;
}

static json_t *f_reverse(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_string(in)) {
        const char *s = json_string_value(in);
        size_t n = json_string_length(in), i = 0;
        char *r = malloc(n + 1);
        if (!r)
            return ferr(err, "out of memory");
        while (i < n) {
            size_t k = cp_offset(s + i, n - i, 1);
            memcpy(r + n - i - k, s + i, k);
            i += k;
        }
        json_t *v = json_stringn(r, n);
        free(r);
        return ok(v, err);
    }
    if (!json_is_array(in))
        return type_err(err, "reverse", "an array or a string", in);
    json_t *out = json_array();
    for (size_t i = json_array_size(in); out && i > 0; i--)
        if (json_array_append(out, json_array_get(in, i - 1)) < 0) {
            json_decref(out);
            out = NULL;
        }
    return ok(out, err);
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
    return ok(out, err);
}

static json_t *f_sort(json_t *in, const json_t *args, dsl_eval_error *err)
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

static json_t *f_min(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return extreme("min", in, 0, err);
}

static json_t *f_max(json_t *in, const json_t *args, dsl_eval_error *err)
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
static json_t *f_unique(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return type_err(err, "unique", "an array", in);
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
    ferr(err, "out of memory");
done:
    for (size_t i = 0; k && i < done; i++)
        free(k[i].key);
    free(k);
    free(keep);
    return out;
}

static json_t *f_flatten(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return type_err(err, "flatten", "an array", in);
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
        return ferr(err, "out of memory");
    }
    return out;
}

/* ---- numbers ---- */

static json_t *f_sum(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return type_err(err, "sum", "an array of numbers", in);
    long long is = 0;
    double ds = 0;
    int real = 0;
    size_t i;
    json_t *v;
    json_array_foreach(in, i, v) {
        if (!json_is_number(v))
            return ferr(err, "filter 'sum' expects an array of numbers, got %s at index %zu",
                        dsl_value_type_name(v), i);
        long long next;
        if (!real && json_is_integer(v) && !__builtin_add_overflow(is, json_integer_value(v), &next)) {
            is = next;
            continue;
        }
        if (!real)
            ds = (double)is, real = 1;
        ds += json_number_value(v);
    }
    return ok(real ? json_real(ds) : json_integer(is), err);
}

/* Rounds half away from zero without libm (the library links no -lm). */
static double round_half_away(double x)
{
    if (!(x > -4503599627370496.0 && x < 4503599627370496.0))
        return x; /* |x| >= 2^52: already integral */
    double t = (double)(long long)x, d = x - t; /* both exact below 2^52 */
    return d >= 0.5 ? t + 1 : d <= -0.5 ? t - 1 : t;
}

static json_t *f_round(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long digits = 0;
    if (!json_is_number(in))
        return type_err(err, "round", "a number", in);
    if (ARG(0) && int_arg(ARG(0), &digits) < 0)
        return ferr(err, "filter 'round': the number of digits must be an integer");
    if (json_is_integer(in) && digits >= 0)
        return json_incref(in);
    if (digits > 15)
        return json_incref(in); /* past a double's precision: nothing to round */
    if (digits < -18)
        digits = -18;
    double x = json_number_value(in), scale = 1;
    for (long long k = digits < 0 ? -digits : digits; k > 0; k--)
        scale *= 10; /* exact up to 1e22 */
    double r = digits < 0 ? round_half_away(x / scale) * scale : round_half_away(x * scale) / scale;
    if (digits <= 0 && r >= -9223372036854775808.0 && r < 9223372036854775808.0)
        return ok(json_integer((json_int_t)r), err);
    return ok(json_real(r), err);
}

static json_t *f_abs(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_integer(in)) {
        json_int_t i = json_integer_value(in);
        if (i >= 0)
            return json_incref(in);
        return ok(i == LLONG_MIN ? json_real(-(double)i) : json_integer(-i), err);
    }
    if (!json_is_real(in))
        return type_err(err, "abs", "a number", in);
    double x = json_real_value(in);
    return ok(json_real(x < 0 ? -x : x), err);
}

/* Sorted by name (strcmp order): dsl_filter_find searches it. */
static const dsl_filter_def filters[] = {
    { .name = "abs", .min_args = 0, .max_args = 0, .fn = f_abs,
      .summary = "abs: a number's absolute value" },
    { .name = "bool", .min_args = 0, .max_args = 0, .fn = f_bool,
      .summary = "bool: truthiness (false, null, 0, \"\", [], {}, \"false\", \"no\", \"0\", \"off\" are false)" },
    { .name = "contains", .min_args = 1, .max_args = 1, .fn = f_contains,
      .summary = "contains(x): true if a string holds x, an array has an item equal to x, or an object has key x" },
    { .name = "default", .min_args = 1, .max_args = 1, .fn = f_default,
      .summary = "default(value): value when the input is null or \"\", else the input" },
    { .name = "ends_with", .min_args = 1, .max_args = 1, .fn = f_ends_with,
      .summary = "ends_with(s): true if a string ends with s" },
    { .name = "eq", .min_args = 1, .max_args = 1, .fn = f_eq,
      .summary = "eq(x): true if the input equals x (numbers by value)" },
    { .name = "first", .min_args = 0, .max_args = 0, .fn = f_first,
      .summary = "first: an array's first item (null if empty) or a string's first character" },
    { .name = "flatten", .min_args = 0, .max_args = 0, .fn = f_flatten,
      .summary = "flatten: an array with nested arrays spliced in, one level deep" },
    { .name = "get", .min_args = 1, .max_args = 1, .fn = f_get,
      .summary = "get(key): an object's field or an array's item (negative from the end); null if missing" },
    { .name = "int", .min_args = 0, .max_args = 0, .fn = f_int,
      .summary = "int: a number or numeric string as an integer, truncated toward zero" },
    { .name = "join", .min_args = 0, .max_args = 1, .fn = f_join,
      .summary = "join(sep=\", \"): an array's items as text, separated by sep" },
    { .name = "json", .min_args = 0, .max_args = 0, .fn = f_json,
      .summary = "json: the value as compact JSON text" },
    { .name = "keys", .min_args = 0, .max_args = 0, .fn = f_keys,
      .summary = "keys: an object's keys, in order" },
    { .name = "last", .min_args = 0, .max_args = 0, .fn = f_last,
      .summary = "last: an array's last item (null if empty) or a string's last character" },
    { .name = "length", .min_args = 0, .max_args = 0, .fn = f_length,
      .summary = "length: characters of a string, items of an array or object; 0 for null" },
    { .name = "lines", .min_args = 0, .max_args = 0, .fn = f_lines,
      .summary = "lines: a string's non-blank lines, trimmed" },
    { .name = "lower", .min_args = 0, .max_args = 0, .fn = f_lower,
      .summary = "lower: a string in lower case (ASCII letters)" },
    { .name = "max", .min_args = 0, .max_args = 0, .fn = f_max,
      .summary = "max: the largest item of an array of numbers or of strings (null if empty)" },
    { .name = "min", .min_args = 0, .max_args = 0, .fn = f_min,
      .summary = "min: the smallest item of an array of numbers or of strings (null if empty)" },
    { .name = "not", .min_args = 0, .max_args = 0, .fn = f_not,
      .summary = "not: the negation of the input's truthiness (see bool)" },
    { .name = "number", .min_args = 0, .max_args = 0, .fn = f_number,
      .summary = "number: a numeric string as a number; numbers pass through" },
    { .name = "parse_json", .min_args = 0, .max_args = 0, .fn = f_parse_json,
      .summary = "parse_json: the value a JSON text holds" },
    { .name = "pretty", .min_args = 0, .max_args = 0, .fn = f_pretty,
      .summary = "pretty: the value as JSON text indented by 2 spaces" },
    { .name = "replace", .min_args = 2, .max_args = 2, .fn = f_replace,
      .summary = "replace(old, new): a string with every old replaced by new" },
    { .name = "reverse", .min_args = 0, .max_args = 0, .fn = f_reverse,
      .summary = "reverse: an array's items or a string's characters in reverse order" },
    { .name = "round", .min_args = 0, .max_args = 1, .fn = f_round,
      .summary = "round(digits=0): a number rounded to digits decimals (an integer when digits <= 0)" },
    { .name = "slice", .min_args = 1, .max_args = 2, .fn = f_slice,
      .summary = "slice(start, end=null): part of an array or string; negative positions count from the end" },
    { .name = "sort", .min_args = 0, .max_args = 0, .fn = f_sort,
      .summary = "sort: an array of numbers or of strings in ascending order (stable)" },
    { .name = "split", .min_args = 0, .max_args = 1, .fn = f_split,
      .summary = "split(sep): a string cut at each sep (\"\": into characters; none: at runs of blanks)" },
    { .name = "starts_with", .min_args = 1, .max_args = 1, .fn = f_starts_with,
      .summary = "starts_with(s): true if a string starts with s" },
    { .name = "string", .min_args = 0, .max_args = 0, .fn = f_string,
      .summary = "string: the value as template text (strings as they are, null as \"\", others as JSON)" },
    { .name = "sum", .min_args = 0, .max_args = 0, .fn = f_sum,
      .summary = "sum: the sum of an array of numbers" },
    { .name = "trim", .min_args = 0, .max_args = 0, .fn = f_trim,
      .summary = "trim: a string without leading and trailing whitespace" },
    { .name = "truncate", .min_args = 1, .max_args = 1, .fn = f_truncate,
      .summary = "truncate(n): a string cut to at most n characters" },
    { .name = "type", .min_args = 0, .max_args = 0, .fn = f_type,
      .summary = "type: \"string\", \"number\", \"boolean\", \"array\", \"object\" or \"null\"" },
    { .name = "unique", .min_args = 0, .max_args = 0, .fn = f_unique,
      .summary = "unique: an array without repeated items, first occurrences kept in order" },
    { .name = "upper", .min_args = 0, .max_args = 0, .fn = f_upper,
      .summary = "upper: a string in upper case (ASCII letters)" },
    { .name = "values", .min_args = 0, .max_args = 0, .fn = f_values,
      .summary = "values: an object's values, in order" },
    { .name = NULL },
};

#define NFILTERS (sizeof filters / sizeof *filters - 1)

const dsl_filter_def *dsl_filter_find(const char *name, size_t len)
{
    size_t lo = 0, hi = NFILTERS;
    if (!name)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = filters[mid].name;
        size_t mlen = strlen(m);
        int c = memcmp(name, m, len < mlen ? len : mlen);
        if (!c)
            c = len < mlen ? -1 : len > mlen;
        if (!c)
            return &filters[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const dsl_filter_def *dsl_filter_all(void)
{
    return filters;
}
