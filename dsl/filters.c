/* filters.c -- the filters of template pipelines (`{{ x | trim | lower }}`):
 * the table and the helpers every family shares. The filters themselves are
 * in filters_value.c, filters_text.c and filters_list.c.
 *
 * One static const table, sorted by name so the parser finds a filter by
 * binary search. Each filter takes a borrowed input and borrowed literal
 * arguments (the parser checked their count, not their types) and returns a
 * new reference or NULL with an error. Every filter decides explicitly what
 * each JSON type means to it; a type it has no use for is an error naming the
 * type, never a silent guess. Strings are UTF-8 (jansson guarantees it), so
 * lengths, slices and truncation count code points and never cut one. */
#include "dsl/filters_internal.h"

#include "common/containers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

json_t *dsl_flt_err(dsl_eval_error *err, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return NULL;
}

json_t *dsl_flt_type_err(dsl_eval_error *err, const char *f, const char *want, const json_t *in)
{
    return dsl_flt_err(err, "filter '%s' expects %s, got %s", f, want, dsl_value_type_name(in));
}

/* Checks a jansson result: NULL means out of memory. Steals V. */
json_t *dsl_flt_ok(json_t *v, dsl_eval_error *err)
{
    return v ? v : dsl_flt_err(err, "out of memory");
}

/* ---- helpers: text buffer, UTF-8, truthiness ---- */

/* The buffer as a new string value for filter F; frees the buffer. */
json_t *dsl_flt_text_finish(sbuf *b, int failed, const char *f, dsl_eval_error *err)
{
    json_t *v = failed || b->failed ? NULL : json_stringn(b->n ? b->p : "", b->n);
    bool too_big = b->too_big;
    sbuf_free(b);
    if (too_big)
        return dsl_flt_err(err, "filter '%s': the result is longer than %u MiB", f, DSL_MAX_TEXT_BYTES >> 20);
    return dsl_flt_ok(v, err);
}

/* IN as JSON text (a new string value), through the capped buffer. */
json_t *dsl_flt_dump_text(const char *f, const json_t *in, size_t flags, dsl_eval_error *err)
{
    sbuf b;
    sbuf_init(&b, DSL_MAX_TEXT_BYTES);
    int bad = json_dump_callback(in, dsl_sbuf_dump_cb, &b, flags) < 0;
    return dsl_flt_text_finish(&b, bad, f, err);
}

size_t dsl_flt_cp_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Byte offset of code point K of S (N bytes), or N if S has fewer. */
size_t dsl_flt_cp_offset(const char *s, size_t n, size_t k)
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

int dsl_flt_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void dsl_flt_trim_span(const char **s, size_t *n)
{
    while (*n && dsl_flt_is_blank(**s))
        (*s)++, (*n)--;
    while (*n && dsl_flt_is_blank((*s)[*n - 1]))
        (*n)--;
}

int dsl_flt_int_arg(const json_t *a, long long *out)
{
    if (!json_is_integer(a))
        return -1;
    *out = json_integer_value(a);
    return 0;
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
        dsl_flt_trim_span(&s, &n);
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


/* Sorted by name (strcmp order): dsl_filter_find searches it. */
static const dsl_filter_def filters[] = {
    { .name = "abs", .min_args = 0, .max_args = 0, .fn = dsl_flt_abs,
      .summary = "abs: a number's absolute value" },
    { .name = "bool", .min_args = 0, .max_args = 0, .fn = dsl_flt_bool,
      .summary = "bool: truthiness (false, null, 0, \"\", [], {}, \"false\", \"no\", \"0\", \"off\" are false)" },
    { .name = "contains", .min_args = 1, .max_args = 1, .fn = dsl_flt_contains,
      .summary = "contains(x): true if a string holds x, an array has an item equal to x, or an object has key x" },
    { .name = "default", .min_args = 1, .max_args = 1, .fn = dsl_flt_default,
      .summary = "default(value): value when the input is null or \"\", else the input" },
    { .name = "ends_with", .min_args = 1, .max_args = 1, .fn = dsl_flt_ends_with,
      .summary = "ends_with(s): true if a string ends with s" },
    { .name = "eq", .min_args = 1, .max_args = 1, .fn = dsl_flt_eq,
      .summary = "eq(x): true if the input equals x (numbers by value)" },
    { .name = "first", .min_args = 0, .max_args = 0, .fn = dsl_flt_first,
      .summary = "first: an array's first item (null if empty) or a string's first character" },
    { .name = "flatten", .min_args = 0, .max_args = 0, .fn = dsl_flt_flatten,
      .summary = "flatten: an array with nested arrays spliced in, one level deep" },
    { .name = "get", .min_args = 1, .max_args = 1, .fn = dsl_flt_get,
      .summary = "get(key): an object's field or an array's item (negative from the end); null if missing" },
    { .name = "int", .min_args = 0, .max_args = 0, .fn = dsl_flt_int,
      .summary = "int: a number or numeric string as an integer, truncated toward zero" },
    { .name = "join", .min_args = 0, .max_args = 1, .fn = dsl_flt_join,
      .summary = "join(sep=\", \"): an array's items as text, separated by sep" },
    { .name = "json", .min_args = 0, .max_args = 0, .fn = dsl_flt_json,
      .summary = "json: the value as compact JSON text" },
    { .name = "keys", .min_args = 0, .max_args = 0, .fn = dsl_flt_keys,
      .summary = "keys: an object's keys, in order" },
    { .name = "last", .min_args = 0, .max_args = 0, .fn = dsl_flt_last,
      .summary = "last: an array's last item (null if empty) or a string's last character" },
    { .name = "length", .min_args = 0, .max_args = 0, .fn = dsl_flt_length,
      .summary = "length: characters of a string, items of an array or object; 0 for null" },
    { .name = "lines", .min_args = 0, .max_args = 0, .fn = dsl_flt_lines,
      .summary = "lines: a string's non-blank lines, trimmed" },
    { .name = "lower", .min_args = 0, .max_args = 0, .fn = dsl_flt_lower,
      .summary = "lower: a string in lower case (ASCII letters)" },
    { .name = "max", .min_args = 0, .max_args = 0, .fn = dsl_flt_max,
      .summary = "max: the largest item of an array of numbers or of strings (null if empty)" },
    { .name = "min", .min_args = 0, .max_args = 0, .fn = dsl_flt_min,
      .summary = "min: the smallest item of an array of numbers or of strings (null if empty)" },
    { .name = "not", .min_args = 0, .max_args = 0, .fn = dsl_flt_not,
      .summary = "not: the negation of the input's truthiness (see bool)" },
    { .name = "number", .min_args = 0, .max_args = 0, .fn = dsl_flt_number,
      .summary = "number: a numeric string as a number; numbers pass through" },
    { .name = "parse_json", .min_args = 0, .max_args = 0, .fn = dsl_flt_parse_json,
      .summary = "parse_json: the value a JSON text holds" },
    { .name = "pretty", .min_args = 0, .max_args = 0, .fn = dsl_flt_pretty,
      .summary = "pretty: the value as JSON text indented by 2 spaces" },
    { .name = "replace", .min_args = 2, .max_args = 2, .fn = dsl_flt_replace,
      .summary = "replace(old, new): a string with every old replaced by new" },
    { .name = "reverse", .min_args = 0, .max_args = 0, .fn = dsl_flt_reverse,
      .summary = "reverse: an array's items or a string's characters in reverse order" },
    { .name = "round", .min_args = 0, .max_args = 1, .fn = dsl_flt_round,
      .summary = "round(digits=0): a number rounded to digits decimals (an integer when digits <= 0)" },
    { .name = "slice", .min_args = 1, .max_args = 2, .fn = dsl_flt_slice,
      .summary = "slice(start, end=null): part of an array or string; negative positions count from the end" },
    { .name = "sort", .min_args = 0, .max_args = 0, .fn = dsl_flt_sort,
      .summary = "sort: an array of numbers or of strings in ascending order (stable)" },
    { .name = "split", .min_args = 0, .max_args = 1, .fn = dsl_flt_split,
      .summary = "split(sep): a string cut at each sep (\"\": into characters; none: at runs of blanks)" },
    { .name = "starts_with", .min_args = 1, .max_args = 1, .fn = dsl_flt_starts_with,
      .summary = "starts_with(s): true if a string starts with s" },
    { .name = "string", .min_args = 0, .max_args = 0, .fn = dsl_flt_string,
      .summary = "string: the value as template text (strings as they are, null as \"\", others as JSON)" },
    { .name = "sum", .min_args = 0, .max_args = 0, .fn = dsl_flt_sum,
      .summary = "sum: the sum of an array of numbers" },
    { .name = "trim", .min_args = 0, .max_args = 0, .fn = dsl_flt_trim,
      .summary = "trim: a string without leading and trailing whitespace" },
    { .name = "truncate", .min_args = 1, .max_args = 1, .fn = dsl_flt_truncate,
      .summary = "truncate(n): a string cut to at most n characters" },
    { .name = "type", .min_args = 0, .max_args = 0, .fn = dsl_flt_type,
      .summary = "type: \"string\", \"number\", \"boolean\", \"array\", \"object\" or \"null\"" },
    { .name = "unique", .min_args = 0, .max_args = 0, .fn = dsl_flt_unique,
      .summary = "unique: an array without repeated items, first occurrences kept in order" },
    { .name = "upper", .min_args = 0, .max_args = 0, .fn = dsl_flt_upper,
      .summary = "upper: a string in upper case (ASCII letters)" },
    { .name = "values", .min_args = 0, .max_args = 0, .fn = dsl_flt_values,
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
