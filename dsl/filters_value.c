/* filters_value.c -- filters that convert a value or compute with numbers:
 * json, pretty, string, number, int, bool, not, type, parse_json; sum,
 * round, abs. (The table that names them is in filters.c.) */
#include "dsl/filters_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h> /* isfinite, a macro: no -lm */
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

#define ARG(i) json_array_get(args, (i))

/* Parses a JSON number (a leading '+' allowed) from trimmed text. New
 * reference, or NULL if S is not a number (or memory ran out: *OOM set). */
static json_t *parse_num(const char *s, size_t n, int *oom)
{
    dsl_flt_trim_span(&s, &n);
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

/* ---- conversions ---- */

json_t *dsl_flt_json(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return dsl_flt_dump_text("json", in, DSL_TEXT_JSON_FLAGS, err);
}

json_t *dsl_flt_pretty(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return dsl_flt_dump_text("pretty", in, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15), err);
}

json_t *dsl_flt_string(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_string(in))
        return json_incref(in);
    if (json_is_null(in))
        return dsl_flt_ok(json_string(""), err);
    return dsl_flt_dump_text("string", in, DSL_TEXT_JSON_FLAGS, err); /* as dsl_value_to_text, capped */
}

/* A number from a number or numeric string; NULL + ERR otherwise. */
static json_t *to_number(const char *f, json_t *in, dsl_eval_error *err)
{
    if (json_is_number(in))
        return json_incref(in);
    if (!json_is_string(in))
        return dsl_flt_type_err(err, f, "a number or a numeric string", in);
    int oom = 0;
    json_t *v = parse_num(json_string_value(in), json_string_length(in), &oom);
    if (!v && !oom)
        return dsl_flt_err(err, "filter '%s': '%.40s' is not a number", f, json_string_value(in));
    return dsl_flt_ok(v, err);
}

json_t *dsl_flt_number(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return to_number("number", in, err);
}

json_t *dsl_flt_int(json_t *in, const json_t *args, dsl_eval_error *err)
{
    json_t *n = to_number("int", in, err);
    if (!n || json_is_integer(n))
        return n;
    double d = json_real_value(n);
    json_decref(n);
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return dsl_flt_err(err, "filter 'int': %g is out of the integer range", d);
    return dsl_flt_ok(json_integer((json_int_t)d), err); /* the cast truncates toward zero */
}

json_t *dsl_flt_bool(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(dsl_value_truthy(in));
}

json_t *dsl_flt_not(json_t *in, const json_t *args, dsl_eval_error *err)
{
    return json_boolean(!dsl_value_truthy(in));
}

json_t *dsl_flt_type(json_t *in, const json_t *args, dsl_eval_error *err)
{
    static const char *const names[] = {
        [JSON_OBJECT] = "object", [JSON_ARRAY] = "array", [JSON_STRING] = "string",
        [JSON_INTEGER] = "number", [JSON_REAL] = "number", [JSON_TRUE] = "boolean",
        [JSON_FALSE] = "boolean", [JSON_NULL] = "null",
    };
    return dsl_flt_ok(json_string(names[json_typeof(in)]), err);
}

json_t *dsl_flt_parse_json(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_string(in))
        return dsl_flt_type_err(err, "parse_json", "a string", in);
    json_error_t je;
    json_t *v = json_loadb(json_string_value(in), json_string_length(in),
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v && !je.text[0])
        return dsl_flt_err(err, "out of memory");
    if (!v)
        return dsl_flt_err(err, "filter 'parse_json': invalid JSON at char %d: %s", je.position, je.text);
    return v;
}

/* ---- numbers ---- */

json_t *dsl_flt_sum(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (!json_is_array(in))
        return dsl_flt_type_err(err, "sum", "an array of numbers", in);
    long long is = 0;
    double ds = 0;
    int real = 0;
    size_t i;
    json_t *v;
    json_array_foreach(in, i, v) {
        if (!json_is_number(v))
            return dsl_flt_err(err, "filter 'sum' expects an array of numbers, got %s at index %zu",
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
    return dsl_flt_ok(real ? json_real(ds) : json_integer(is), err);
}

/* Rounds half away from zero without libm (the library links no -lm). */
static double round_half_away(double x)
{
    if (!(x > -4503599627370496.0 && x < 4503599627370496.0))
        return x; /* |x| >= 2^52: already integral */
    double t = (double)(long long)x, d = x - t; /* both exact below 2^52 */
    return d >= 0.5 ? t + 1 : d <= -0.5 ? t - 1 : t;
}

json_t *dsl_flt_round(json_t *in, const json_t *args, dsl_eval_error *err)
{
    long long digits = 0;
    if (!json_is_number(in))
        return dsl_flt_type_err(err, "round", "a number", in);
    if (ARG(0) && dsl_flt_int_arg(ARG(0), &digits) < 0)
        return dsl_flt_err(err, "filter 'round': the number of digits must be an integer");
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
        return dsl_flt_ok(json_integer((json_int_t)r), err);
    return dsl_flt_ok(json_real(r), err);
}

json_t *dsl_flt_abs(json_t *in, const json_t *args, dsl_eval_error *err)
{
    if (json_is_integer(in)) {
        json_int_t i = json_integer_value(in);
        if (i >= 0)
            return json_incref(in);
        return dsl_flt_ok(i == LLONG_MIN ? json_real(-(double)i) : json_integer(-i), err);
    }
    if (!json_is_real(in))
        return dsl_flt_type_err(err, "abs", "a number", in);
    double x = json_real_value(in);
    return dsl_flt_ok(json_real(x < 0 ? -x : x), err);
}
