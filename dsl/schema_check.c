/* schema_check.c -- checking a value against a compiled JSON Schema.
 *
 * The walk keeps the JSON pointer of the part of the value it is in, so the
 * first rule broken is reported where it is ("at /items/2/price: ..."), the
 * message a person (or a model asked again) can act on. Branches of anyOf,
 * oneOf and not are tried quietly: their messages are only formatted when
 * the whole keyword fails. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/schema_internal.h"

/* Enough for values nested as deep as jansson parses (2048) through
 * schemas nested as deep as the compiler allows. */
#define CHECK_MAX_DEPTH 4096

typedef struct check_ctx {
    char path[512];   /* JSON pointer of the current value */
    size_t plen;
    bool truncated;   /* the pointer did not fit: shown with "..." */
    int quiet;        /* > 0: inside a branch whose failure is not the message */
    char *msg;
    size_t msglen;
} check_ctx;

static int check(check_ctx *c, const schema_node *n, const json_t *v, int depth);

static void vfail(check_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void vfail(check_ctx *c, const char *fmt, ...)
{
    if (c->quiet || !c->msglen)
        return;
    int k;
    if (c->plen == 0 && !c->truncated)
        k = snprintf(c->msg, c->msglen, "at the root: ");
    else
        k = snprintf(c->msg, c->msglen, "at %s%s: ", c->path, c->truncated ? "..." : "");
    if (k < 0 || (size_t)k >= c->msglen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + k, c->msglen - (size_t)k, fmt, ap);
    va_end(ap);
}

/* Appends one escaped segment to the pointer; returns the length to restore. */
static size_t path_push(check_ctx *c, const char *seg)
{
    size_t old = c->plen;
    size_t need = 1;
    for (const char *p = seg; *p; p++)
        need += (*p == '~' || *p == '/') ? 2 : 1;
    if (c->truncated || c->plen + need >= sizeof c->path) {
        c->truncated = true;
        return old;
    }
    char *w = c->path + c->plen;
    *w++ = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~' || *p == '/') {
            *w++ = '~';
            *w++ = *p == '~' ? '0' : '1';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    c->plen = (size_t)(w - c->path);
    return old;
}

static size_t path_push_index(check_ctx *c, size_t i)
{
    char seg[32];
    snprintf(seg, sizeof seg, "%zu", i);
    return path_push(c, seg);
}

static void path_pop(check_ctx *c, size_t old)
{
    if (c->truncated && old == c->plen)
        return; /* this level never fitted: keep the mark until the outer levels pop */
    c->plen = old;
    c->path[old] = '\0';
    c->truncated = false;
}

/* A short rendering of V for messages (at most ~60 bytes). */
static void show(const json_t *v, char *buf, size_t len)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        snprintf(buf, len, "the value");
        return;
    }
    if (strlen(s) > 60)
        snprintf(buf, len, "%.57s...", s);
    else
        snprintf(buf, len, "%s", s);
    free(s);
}

unsigned dsl_schema_type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return SCHEMA_T_NULL;
    case JSON_TRUE:
    case JSON_FALSE: return SCHEMA_T_BOOLEAN;
    case JSON_OBJECT: return SCHEMA_T_OBJECT;
    case JSON_ARRAY: return SCHEMA_T_ARRAY;
    case JSON_STRING: return SCHEMA_T_STRING;
    case JSON_INTEGER: return SCHEMA_T_INTEGER;
    case JSON_REAL: {
        double d = json_real_value(v);
        return isfinite(d) && d == floor(d) ? SCHEMA_T_INTEGER : SCHEMA_T_NUMBER;
    }
    }
    return 0;
}

static const char *type_name(unsigned bit)
{
    switch (bit) {
    case SCHEMA_T_NULL: return "null";
    case SCHEMA_T_BOOLEAN: return "a boolean";
    case SCHEMA_T_OBJECT: return "an object";
    case SCHEMA_T_ARRAY: return "an array";
    case SCHEMA_T_NUMBER: return "a number";
    case SCHEMA_T_INTEGER: return "an integer";
    case SCHEMA_T_STRING: return "a string";
    }
    return "?";
}

/* -1, 0, 1 as A is below, equal to, above B; integers compared exactly. */
static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    double x = json_number_value(a), y = json_number_value(b);
    return (x > y) - (x < y);
}

bool dsl_schema_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!dsl_schema_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        const json_t *av;
        json_object_foreach((json_t *)a, k, av) {
            const json_t *bv = json_object_get(b, k);
            if (!bv || !dsl_schema_equal(av, bv))
                return false;
        }
        return true;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static int check_number(check_ctx *c, const schema_node *n, const json_t *v)
{
    char a[80], b[80];
    if (n->minimum) {
        int cmp = num_cmp(v, n->minimum);
        if (cmp < 0 || (cmp == 0 && n->exclusive_minimum)) {
            show(v, a, sizeof a);
            show(n->minimum, b, sizeof b);
            if (n->exclusive_minimum)
                vfail(c, "%s is not above the exclusive minimum %s (exclusiveMinimum)", a, b);
            else
                vfail(c, "%s is below the minimum %s (minimum)", a, b);
            return -1;
        }
    }
    if (n->maximum) {
        int cmp = num_cmp(v, n->maximum);
        if (cmp > 0 || (cmp == 0 && n->exclusive_maximum)) {
            show(v, a, sizeof a);
            show(n->maximum, b, sizeof b);
            if (n->exclusive_maximum)
                vfail(c, "%s is not below the exclusive maximum %s (exclusiveMaximum)", a, b);
            else
                vfail(c, "%s is above the maximum %s (maximum)", a, b);
            return -1;
        }
    }
    if (n->exclusive_min_value && num_cmp(v, n->exclusive_min_value) <= 0) {
        show(v, a, sizeof a);
        show(n->exclusive_min_value, b, sizeof b);
        vfail(c, "%s is not above the exclusive minimum %s (exclusiveMinimum)", a, b);
        return -1;
    }
    if (n->exclusive_max_value && num_cmp(v, n->exclusive_max_value) >= 0) {
        show(v, a, sizeof a);
        show(n->exclusive_max_value, b, sizeof b);
        vfail(c, "%s is not below the exclusive maximum %s (exclusiveMaximum)", a, b);
        return -1;
    }
    if (n->multiple_of) {
        bool ok;
        if (json_is_integer(v) && json_is_integer(n->multiple_of)) {
            json_int_t m = json_integer_value(n->multiple_of);
            ok = json_integer_value(v) % m == 0;
        } else {
            /* Decimal multiples are not exact in binary (0.0075 / 0.0001 is
             * 74.99999999999999), so the quotient need only be within a
             * relative hair of a whole number. */
            double q = json_number_value(v) / json_number_value(n->multiple_of);
            ok = isfinite(q) && fabs(q - nearbyint(q)) <= 1e-9 * fmax(1.0, fabs(q));
        }
        if (!ok) {
            show(v, a, sizeof a);
            show(n->multiple_of, b, sizeof b);
            vfail(c, "%s is not a multiple of %s (multipleOf)", a, b);
            return -1;
        }
    }
    return 0;
}

/* Characters (code points) of a UTF-8 string: jansson strings are valid UTF-8. */
static long long utf8_length(const char *s, size_t bytes)
{
    long long n = 0;
    for (size_t i = 0; i < bytes; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static int check_string(check_ctx *c, const schema_node *n, const json_t *v)
{
    const char *s = json_string_value(v);
    if (n->min_length != SCHEMA_NO_LIMIT || n->max_length != SCHEMA_NO_LIMIT) {
        long long len = utf8_length(s, json_string_length(v));
        if (n->min_length != SCHEMA_NO_LIMIT && len < n->min_length) {
            vfail(c, "the string has %lld characters, fewer than the minimum %lld (minLength)",
                  len, n->min_length);
            return -1;
        }
        if (n->max_length != SCHEMA_NO_LIMIT && len > n->max_length) {
            vfail(c, "the string has %lld characters, more than the maximum %lld (maxLength)",
                  len, n->max_length);
            return -1;
        }
    }
    if (n->pattern && regexec(&n->pattern->re, s, 0, NULL, 0) != 0) {
        char a[80];
        show(v, a, sizeof a);
        vfail(c, "%s does not match the pattern \"%s\" (pattern)", a, n->pattern->source);
        return -1;
    }
    return 0;
}

static int check_array(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    size_t len = json_array_size(v);
    if (n->min_items != SCHEMA_NO_LIMIT && (long long)len < n->min_items) {
        vfail(c, "the array has %zu items, fewer than the minimum %lld (minItems)", len,
              n->min_items);
        return -1;
    }
    if (n->max_items != SCHEMA_NO_LIMIT && (long long)len > n->max_items) {
        vfail(c, "the array has %zu items, more than the maximum %lld (maxItems)", len,
              n->max_items);
        return -1;
    }
    if (n->unique_items) {
        for (size_t i = 0; i < len; i++)
            for (size_t j = i + 1; j < len; j++)
                if (dsl_schema_equal(json_array_get(v, i), json_array_get(v, j))) {
                    vfail(c, "items %zu and %zu are equal (uniqueItems)", i, j);
                    return -1;
                }
    }
    for (size_t i = 0; i < len; i++) {
        const schema_node *is = n->items;
        if (n->tuple)
            is = i < n->ntuple ? n->tuple[i] : n->additional_items;
        if (!is)
            continue;
        size_t old = path_push_index(c, i);
        int rc;
        if (is->never && n->tuple && i >= n->ntuple) {
            vfail(c, "no item is allowed beyond the %zu that items lists (additionalItems)",
                  n->ntuple);
            rc = -1;
        } else {
            rc = check(c, is, json_array_get(v, i), depth + 1);
        }
        path_pop(c, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int check_object(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    size_t cnt = json_object_size(v);
    if (n->min_props != SCHEMA_NO_LIMIT && (long long)cnt < n->min_props) {
        vfail(c, "the object has %zu properties, fewer than the minimum %lld (minProperties)",
              cnt, n->min_props);
        return -1;
    }
    if (n->max_props != SCHEMA_NO_LIMIT && (long long)cnt > n->max_props) {
        vfail(c, "the object has %zu properties, more than the maximum %lld (maxProperties)",
              cnt, n->max_props);
        return -1;
    }
    for (size_t i = 0; i < n->nrequired; i++) {
        if (!json_object_get(v, n->required[i])) {
            vfail(c, "the required property \"%s\" is missing (required)", n->required[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < n->ndeps; i++) {
        const schema_dependency *d = &n->deps[i];
        if (!json_object_get(v, d->key))
            continue;
        for (size_t k = 0; k < d->nnames; k++) {
            if (!json_object_get(v, d->names[k])) {
                vfail(c, "\"%s\" needs \"%s\" to be present too (dependencies)", d->key,
                      d->names[k]);
                return -1;
            }
        }
        if (d->schema && check(c, d->schema, v, depth + 1) < 0)
            return -1;
    }
    const char *key;
    const json_t *pv;
    json_object_foreach((json_t *)v, key, pv) {
        size_t old = path_push(c, key);
        bool matched = false;
        int rc = 0;
        for (size_t i = 0; i < n->nprops && rc == 0; i++) {
            if (strcmp(n->prop_names[i], key) == 0) {
                matched = true;
                rc = check(c, n->prop_schemas[i], pv, depth + 1);
            }
        }
        for (size_t i = 0; i < n->npattern_props && rc == 0; i++) {
            if (regexec(&n->pattern_props[i].re, key, 0, NULL, 0) == 0) {
                matched = true;
                rc = check(c, n->pattern_schemas[i], pv, depth + 1);
            }
        }
        if (rc == 0 && !matched && n->additional_props) {
            if (n->additional_props->never) {
                vfail(c, "the property \"%s\" is not allowed (additionalProperties)", key);
                rc = -1;
            } else {
                rc = check(c, n->additional_props, pv, depth + 1);
            }
        }
        path_pop(c, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Runs N over V quietly: 0 if V fits. */
static int try_branch(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    c->quiet++;
    int rc = check(c, n, v, depth + 1);
    c->quiet--;
    return rc;
}

/* After a failed anyOf/oneOf: what the first branch says, appended to the
 * message, so the nearest miss is named rather than only "none fitted". */
static void first_branch_reason(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    if (c->quiet || !c->msglen)
        return;
    size_t used = strlen(c->msg);
    if (used + 16 >= c->msglen)
        return;
    char *saved = strdup(c->msg);
    if (!saved)
        return;
    check(c, n, v, depth + 1);
    char *reason = strdup(c->msg);
    snprintf(c->msg, c->msglen, "%s; the first says: %s", saved, reason ? reason : "");
    free(saved);
    free(reason);
}

static int check_combinators(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    for (size_t i = 0; i < n->nall_of; i++)
        if (check(c, n->all_of[i], v, depth + 1) < 0)
            return -1;
    if (n->nany_of) {
        bool any = false;
        for (size_t i = 0; i < n->nany_of && !any; i++)
            any = try_branch(c, n->any_of[i], v, depth) == 0;
        if (!any) {
            vfail(c, "fits none of the %zu schemas of anyOf (anyOf)", n->nany_of);
            first_branch_reason(c, n->any_of[0], v, depth);
            return -1;
        }
    }
    if (n->none_of) {
        size_t fits = 0, first = 0, second = 0;
        for (size_t i = 0; i < n->none_of && fits < 2; i++) {
            if (try_branch(c, n->one_of[i], v, depth) == 0) {
                if (fits == 0)
                    first = i;
                else
                    second = i;
                fits++;
            }
        }
        if (fits == 0) {
            vfail(c, "fits none of the %zu schemas of oneOf (oneOf)", n->none_of);
            first_branch_reason(c, n->one_of[0], v, depth);
            return -1;
        }
        if (fits > 1) {
            vfail(c, "fits schemas %zu and %zu of oneOf, and must fit exactly one (oneOf)", first,
                  second);
            return -1;
        }
    }
    if (n->not_schema && try_branch(c, n->not_schema, v, depth) == 0) {
        vfail(c, "fits the schema under not, which it must not (not)");
        return -1;
    }
    return 0;
}

static int check(check_ctx *c, const schema_node *n, const json_t *v, int depth)
{
    if (depth > CHECK_MAX_DEPTH) {
        vfail(c, "the value is nested too deeply to check");
        return -1;
    }
    if (n->always)
        return 0;
    if (n->never) {
        vfail(c, "no value is allowed here (false schema)");
        return -1;
    }
    if (n->ref)
        return check(c, n->ref, v, depth + 1);
    unsigned t = dsl_schema_type_of(v);
    if (n->types && !(n->types & t) &&
        !(t == SCHEMA_T_INTEGER && (n->types & SCHEMA_T_NUMBER))) {
        char a[80], want[160] = "";
        show(v, a, sizeof a);
        for (unsigned bit = 1; bit <= SCHEMA_T_STRING; bit <<= 1) {
            if (!(n->types & bit))
                continue;
            size_t wl = strlen(want);
            snprintf(want + wl, sizeof want - wl, "%s%s", wl ? " or " : "", type_name(bit));
        }
        vfail(c, "%s is %s, not %s (type)", a, type_name(t), want);
        return -1;
    }
    if (n->const_value && !dsl_schema_equal(v, n->const_value)) {
        char a[80], b[80];
        show(v, a, sizeof a);
        show(n->const_value, b, sizeof b);
        vfail(c, "%s is not the constant %s (const)", a, b);
        return -1;
    }
    if (n->enum_values) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(n->enum_values) && !found; i++)
            found = dsl_schema_equal(v, json_array_get(n->enum_values, i));
        if (!found) {
            char a[80], b[80];
            show(v, a, sizeof a);
            show(n->enum_values, b, sizeof b);
            vfail(c, "%s is not one of %s (enum)", a, b);
            return -1;
        }
    }
    int rc = 0;
    if (t == SCHEMA_T_INTEGER || t == SCHEMA_T_NUMBER)
        rc = check_number(c, n, v);
    else if (t == SCHEMA_T_STRING)
        rc = check_string(c, n, v);
    else if (t == SCHEMA_T_ARRAY)
        rc = check_array(c, n, v, depth);
    else if (t == SCHEMA_T_OBJECT)
        rc = check_object(c, n, v, depth);
    if (rc < 0)
        return -1;
    return check_combinators(c, n, v, depth);
}

int dsl_schema_validate(const dsl_schema *s, const json_t *v, char *msg, size_t msglen)
{
    check_ctx c = {.msg = msg, .msglen = msglen};
    if (msglen)
        msg[0] = '\0';
    if (!s || !v) {
        if (msglen)
            snprintf(msg, msglen, "no value to check");
        return -1;
    }
    return check(&c, s->root, v, 0);
}
