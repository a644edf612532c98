/* schema.c -- compiling a JSON Schema document into schema_nodes.
 *
 * Each keyword has a small handler that checks its value and fills in the
 * node; a keyword without a handler is an error naming its JSON pointer,
 * because a schema whose rule is silently ignored lets answers through that
 * the author meant to refuse. `$ref` targets are looked up by document
 * object, so a recursive schema compiles each subschema once; a cycle that
 * never descends into the value (`{"$ref": "#"}` at the root, an anyOf that
 * names itself) would make validation loop forever and is refused here. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/schema_internal.h"
#include "dsl/suggest.h"

/* Deeper than this, a schema is refused: compiling, and validating along
 * chains of $ref/allOf/anyOf, recurse once per level. */
#define SCHEMA_MAX_DEPTH 256

typedef struct compile_ctx {
    dsl_schema *s;
    char *ptr;
    size_t ptrlen;
    char *msg;
    size_t msglen;
    bool failed;
} compile_ctx;

static void cfail(compile_ctx *c, const char *ptr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfail(compile_ctx *c, const char *ptr, const char *fmt, ...)
{
    if (c->failed)
        return; /* the first error is the one to fix first */
    c->failed = true;
    if (c->ptrlen)
        snprintf(c->ptr, c->ptrlen, "%s", ptr ? ptr : "");
    if (c->msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->msglen, fmt, ap);
        va_end(ap);
    }
}

/* BASE + "/" + SEG with `~` and `/` escaped (RFC 6901). New string, or NULL. */
static char *ptr_join(const char *base, const char *seg)
{
    size_t extra = 0;
    for (const char *p = seg; *p; p++)
        extra += (*p == '~' || *p == '/');
    size_t bl = strlen(base), sl = strlen(seg);
    char *out = malloc(bl + 1 + sl + extra + 1);
    if (!out)
        return NULL;
    memcpy(out, base, bl);
    char *w = out + bl;
    *w++ = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~') {
            *w++ = '~';
            *w++ = '0';
        } else if (*p == '/') {
            *w++ = '~';
            *w++ = '1';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return out;
}

static char *ptr_join_index(const char *base, size_t i)
{
    char seg[32];
    snprintf(seg, sizeof seg, "%zu", i);
    return ptr_join(base, seg);
}

/* ---- the document object -> node set ---------------------------------- */

static size_t hash_ptr(const json_t *p)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(x ^ (x >> 29));
}

static schema_node *set_find(const dsl_schema *s, const json_t *doc)
{
    if (!s->hcap)
        return NULL;
    for (size_t i = hash_ptr(doc) & (s->hcap - 1);; i = (i + 1) & (s->hcap - 1)) {
        if (!s->keys[i])
            return NULL;
        if (s->keys[i] == doc)
            return s->nodes[s->vals[i]];
    }
}

static int set_put(dsl_schema *s, const json_t *doc, size_t node)
{
    if ((s->nnodes + 1) * 2 > s->hcap) {
        size_t ncap = s->hcap ? s->hcap * 2 : 64;
        const json_t **nk = calloc(ncap, sizeof *nk);
        size_t *nv = calloc(ncap, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return -1;
        }
        for (size_t i = 0; i < s->hcap; i++) {
            if (!s->keys[i])
                continue;
            size_t j = hash_ptr(s->keys[i]) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = s->keys[i];
            nv[j] = s->vals[i];
        }
        free(s->keys);
        free(s->vals);
        s->keys = nk;
        s->vals = nv;
        s->hcap = ncap;
    }
    size_t i = hash_ptr(doc) & (s->hcap - 1);
    while (s->keys[i])
        i = (i + 1) & (s->hcap - 1);
    s->keys[i] = doc;
    s->vals[i] = node;
    return 0;
}

/* ---- keyword handlers -------------------------------------------------- */

static schema_node *compile_node(compile_ctx *c, const json_t *doc, const char *ptr, int depth);

typedef int (*keyword_fn)(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                          int depth);

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", SCHEMA_T_NULL},       {"boolean", SCHEMA_T_BOOLEAN}, {"object", SCHEMA_T_OBJECT},
    {"array", SCHEMA_T_ARRAY},     {"number", SCHEMA_T_NUMBER},   {"integer", SCHEMA_T_INTEGER},
    {"string", SCHEMA_T_STRING},
};
#define NTYPES (sizeof type_names / sizeof type_names[0])

static int type_bit(compile_ctx *c, const json_t *v, const char *kp, unsigned *out)
{
    if (!json_is_string(v)) {
        cfail(c, kp, "a type is a name (string, number, integer, boolean, object, array, null)");
        return -1;
    }
    const char *name = json_string_value(v);
    const char *cands[NTYPES];
    for (size_t i = 0; i < NTYPES; i++) {
        cands[i] = type_names[i].name;
        if (strcmp(name, type_names[i].name) == 0) {
            *out = type_names[i].bit;
            return 0;
        }
    }
    const char *near = dsl_suggest(name, strlen(name), cands, NTYPES);
    if (near)
        cfail(c, kp, "unknown type \"%s\" (did you mean \"%s\"?)", name, near);
    else
        cfail(c, kp, "unknown type \"%s\" (string, number, integer, boolean, object, array, null)",
              name);
    return -1;
}

static int kw_type(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    unsigned bit;
    if (!json_is_array(v)) {
        if (type_bit(c, v, kp, &bit) < 0)
            return -1;
        n->types = bit;
        return 0;
    }
    if (json_array_size(v) == 0) {
        cfail(c, kp, "type lists no type, so no value could fit");
        return -1;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        char *ip = ptr_join_index(kp, i);
        if (!ip) {
            cfail(c, kp, "out of memory");
            return -1;
        }
        int rc = type_bit(c, t, ip, &bit);
        free(ip);
        if (rc < 0)
            return -1;
        n->types |= bit;
    }
    return 0;
}

static int kw_enum(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        cfail(c, kp, "enum is a non-empty array of the allowed values");
        return -1;
    }
    n->enum_values = v;
    return 0;
}

static int kw_const(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    n->const_value = v;
    return 0;
}

static int want_number(compile_ctx *c, const json_t *v, const char *kp, const char *kw)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        cfail(c, kp, "%s is a number", kw);
        return -1;
    }
    return 0;
}

static int kw_minimum(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (want_number(c, v, kp, "minimum") < 0)
        return -1;
    n->minimum = v;
    return 0;
}

static int kw_maximum(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (want_number(c, v, kp, "maximum") < 0)
        return -1;
    n->maximum = v;
    return 0;
}

/* Draft 4 wrote `exclusiveMinimum: true` beside `minimum`; draft 6 on, it is
 * a number of its own. Both are read, so schemas written for either fit. */
static int kw_exclusive_minimum(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                                int depth)
{
    if (json_is_boolean(v)) {
        n->exclusive_minimum = json_is_true(v);
        return 0;
    }
    if (want_number(c, v, kp, "exclusiveMinimum (or true/false beside minimum)") < 0)
        return -1;
    n->exclusive_min_value = v;
    return 0;
}

static int kw_exclusive_maximum(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                                int depth)
{
    if (json_is_boolean(v)) {
        n->exclusive_maximum = json_is_true(v);
        return 0;
    }
    if (want_number(c, v, kp, "exclusiveMaximum (or true/false beside maximum)") < 0)
        return -1;
    n->exclusive_max_value = v;
    return 0;
}

static int kw_multiple_of(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                          int depth)
{
    if (want_number(c, v, kp, "multipleOf") < 0)
        return -1;
    if (json_number_value(v) <= 0) {
        cfail(c, kp, "multipleOf is a number above 0");
        return -1;
    }
    n->multiple_of = v;
    return 0;
}

static int want_count(compile_ctx *c, const json_t *v, const char *kp, const char *kw,
                      long long *out)
{
    double d = json_is_number(v) ? json_number_value(v) : -1;
    if (d < 0 || d != floor(d) || d > 9.0e15) {
        cfail(c, kp, "%s is a whole number, 0 or more", kw);
        return -1;
    }
    *out = (long long)d;
    return 0;
}

#define COUNT_KEYWORD(fn, field, name)                                                        \
    static int fn(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth) \
    {                                                                                         \
        return want_count(c, v, kp, name, &n->field);                                         \
    }
COUNT_KEYWORD(kw_min_length, min_length, "minLength")
COUNT_KEYWORD(kw_max_length, max_length, "maxLength")
COUNT_KEYWORD(kw_min_items, min_items, "minItems")
COUNT_KEYWORD(kw_max_items, max_items, "maxItems")
COUNT_KEYWORD(kw_min_props, min_props, "minProperties")
COUNT_KEYWORD(kw_max_props, max_props, "maxProperties")

/* ECMA-262 patterns are compiled as POSIX extended expressions, with the
 * class escapes \d \w \s (and their negations) that JSON Schemas use most
 * rewritten into bracket expressions POSIX understands. */
/* glibc expands counted repetitions when compiling, so `(a{999}){999}`
 * would take gigabytes: a pattern is refused when its bounds multiply past
 * SCHEMA_MAX_REPEAT (an over-estimate, which keeps the check simple), or
 * when it is longer than SCHEMA_MAX_PATTERN. */
#define SCHEMA_MAX_REPEAT 10000.0
#define SCHEMA_MAX_PATTERN 4096

static int regex_too_big(compile_ctx *c, const char *src, const char *kp)
{
    if (strlen(src) > SCHEMA_MAX_PATTERN) {
        cfail(c, kp, "a pattern longer than %d characters", SCHEMA_MAX_PATTERN);
        return -1;
    }
    double product = 1;
    for (const char *p = src; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p != '{')
            continue;
        double hi = 0, cur = 0;
        bool digits = false;
        for (const char *q = p + 1; *q && *q != '}'; q++) {
            if (*q >= '0' && *q <= '9') {
                cur = cur * 10 + (*q - '0');
                digits = true;
                if (cur > hi)
                    hi = cur;
            } else if (*q == ',') {
                cur = 0;
            } else {
                break;
            }
        }
        if (digits && hi > 1)
            product *= hi;
        if (product > SCHEMA_MAX_REPEAT) {
            cfail(c, kp, "the counted repetitions ({n,m}) of this pattern multiply past %.0f",
                  SCHEMA_MAX_REPEAT);
            return -1;
        }
    }
    return 0;
}

static int regex_compile(compile_ctx *c, schema_regex *r, const char *src, const char *kp)
{
    if (regex_too_big(c, src, kp) < 0)
        return -1;
    size_t len = strlen(src);
    char *buf = malloc(len * 16 + 1);
    if (!buf) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    char *w = buf;
    bool in_bracket = false;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '\\' && i + 1 < len) {
            char e = src[++i];
            const char *cls = NULL, *neg = NULL;
            switch (e) {
            case 'd': cls = "0-9"; break;
            case 'w': cls = "A-Za-z0-9_"; break;
            case 's': cls = "[:space:]"; break;
            case 'D': neg = "0-9"; break;
            case 'W': neg = "A-Za-z0-9_"; break;
            case 'S': neg = "[:space:]"; break;
            default: break;
            }
            if (cls && in_bracket) {
                w += sprintf(w, "%s", cls);
            } else if (cls) {
                w += sprintf(w, "[%s]", cls);
            } else if (neg && !in_bracket) {
                w += sprintf(w, "[^%s]", neg);
            } else if (neg) {
                free(buf);
                cfail(c, kp, "pattern: \\%c inside [...] is not supported", e);
                return -1;
            } else if (in_bracket) {
                *w++ = e; /* POSIX brackets take characters literally */
            } else {
                *w++ = '\\';
                *w++ = e;
            }
            continue;
        }
        if (ch == '[' && !in_bracket) {
            in_bracket = true;
            *w++ = ch;
            if (i + 1 < len && src[i + 1] == '^')
                *w++ = src[++i];
            if (i + 1 < len && src[i + 1] == ']')
                *w++ = src[++i];
            continue;
        }
        if (ch == ']' && in_bracket)
            in_bracket = false;
        *w++ = ch;
    }
    *w = '\0';
    int rc = regcomp(&r->re, buf, REG_EXTENDED | REG_NOSUB);
    free(buf);
    if (rc != 0) {
        char err[128];
        regerror(rc, &r->re, err, sizeof err);
        cfail(c, kp, "pattern \"%s\" is not a regular expression this validator supports: %s",
              src, err);
        return -1;
    }
    r->source = src;
    return 0;
}

static int kw_pattern(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (!json_is_string(v)) {
        cfail(c, kp, "pattern is a string (a regular expression)");
        return -1;
    }
    schema_regex *r = calloc(1, sizeof *r);
    if (!r) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    if (regex_compile(c, r, json_string_value(v), kp) < 0) {
        free(r);
        return -1;
    }
    n->pattern = r;
    return 0;
}

/* Compiles V at KP/KEY as a subschema into *OUT. */
static int sub(compile_ctx *c, const json_t *v, const char *kp, const char *key, int depth,
               schema_node **out)
{
    char *p = key ? ptr_join(kp, key) : strdup(kp);
    if (!p) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    *out = compile_node(c, v, p, depth + 1);
    free(p);
    return *out ? 0 : -1;
}

/* A non-empty array of subschemas (allOf, anyOf, oneOf, items as a tuple). */
static int sub_array(compile_ctx *c, const json_t *v, const char *kp, const char *kw, int depth,
                     schema_node ***out, size_t *nout)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        cfail(c, kp, "%s is a non-empty array of schemas", kw);
        return -1;
    }
    size_t n = json_array_size(v);
    *out = calloc(n, sizeof **out);
    if (!*out) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    *nout = n;
    for (size_t i = 0; i < n; i++) {
        char seg[32];
        snprintf(seg, sizeof seg, "%zu", i);
        if (sub(c, json_array_get(v, i), kp, seg, depth, &(*out)[i]) < 0)
            return -1;
    }
    return 0;
}

static int kw_items(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (json_is_array(v))
        return sub_array(c, v, kp, "items", depth, &n->tuple, &n->ntuple);
    return sub(c, v, kp, NULL, depth, &n->items);
}

static int kw_additional_items(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                               int depth)
{
    return sub(c, v, kp, NULL, depth, &n->additional_items);
}

static int kw_unique_items(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                           int depth)
{
    if (!json_is_boolean(v)) {
        cfail(c, kp, "uniqueItems is true or false");
        return -1;
    }
    n->unique_items = json_is_true(v);
    return 0;
}

static int kw_required(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (!json_is_array(v)) {
        cfail(c, kp, "required is an array of property names");
        return -1;
    }
    n->nrequired = json_array_size(v);
    n->required = calloc(n->nrequired ? n->nrequired : 1, sizeof *n->required);
    if (!n->required) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n->nrequired; i++) {
        const json_t *name = json_array_get(v, i);
        if (!json_is_string(name)) {
            char *ip = ptr_join_index(kp, i);
            cfail(c, ip ? ip : kp, "required is an array of property names");
            free(ip);
            return -1;
        }
        n->required[i] = json_string_value(name);
    }
    return 0;
}

static int kw_properties(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                         int depth)
{
    if (!json_is_object(v)) {
        cfail(c, kp, "properties is a mapping of property names to schemas");
        return -1;
    }
    size_t cnt = json_object_size(v);
    n->prop_names = calloc(cnt ? cnt : 1, sizeof *n->prop_names);
    n->prop_schemas = calloc(cnt ? cnt : 1, sizeof *n->prop_schemas);
    if (!n->prop_names || !n->prop_schemas) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    const char *key;
    const json_t *sv;
    json_object_foreach((json_t *)v, key, sv) {
        n->prop_names[n->nprops] = key;
        if (sub(c, sv, kp, key, depth, &n->prop_schemas[n->nprops]) < 0)
            return -1;
        n->nprops++;
    }
    return 0;
}

static int kw_pattern_properties(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                                 int depth)
{
    if (!json_is_object(v)) {
        cfail(c, kp, "patternProperties is a mapping of regular expressions to schemas");
        return -1;
    }
    size_t cnt = json_object_size(v);
    n->pattern_props = calloc(cnt ? cnt : 1, sizeof *n->pattern_props);
    n->pattern_schemas = calloc(cnt ? cnt : 1, sizeof *n->pattern_schemas);
    if (!n->pattern_props || !n->pattern_schemas) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    const char *key;
    const json_t *sv;
    json_object_foreach((json_t *)v, key, sv) {
        char *ep = ptr_join(kp, key);
        if (!ep) {
            cfail(c, kp, "out of memory");
            return -1;
        }
        int rc = regex_compile(c, &n->pattern_props[n->npattern_props], key, ep);
        free(ep);
        if (rc < 0)
            return -1;
        n->npattern_props++; /* counted once compiled, so free() knows what to regfree */
        if (sub(c, sv, kp, key, depth, &n->pattern_schemas[n->npattern_props - 1]) < 0)
            return -1;
    }
    return 0;
}

static int kw_additional_properties(compile_ctx *c, schema_node *n, const json_t *v,
                                    const char *kp, int depth)
{
    return sub(c, v, kp, NULL, depth, &n->additional_props);
}

static int kw_dependencies(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                           int depth)
{
    if (!json_is_object(v)) {
        cfail(c, kp, "dependencies is a mapping of property names to schemas or name lists");
        return -1;
    }
    size_t cnt = json_object_size(v);
    n->deps = calloc(cnt ? cnt : 1, sizeof *n->deps);
    if (!n->deps) {
        cfail(c, kp, "out of memory");
        return -1;
    }
    const char *key;
    const json_t *dv;
    json_object_foreach((json_t *)v, key, dv) {
        schema_dependency *d = &n->deps[n->ndeps++];
        d->key = key;
        if (!json_is_array(dv)) {
            if (sub(c, dv, kp, key, depth, &d->schema) < 0)
                return -1;
            continue;
        }
        d->nnames = json_array_size(dv);
        d->names = calloc(d->nnames ? d->nnames : 1, sizeof *d->names);
        if (!d->names) {
            cfail(c, kp, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < d->nnames; i++) {
            const json_t *name = json_array_get(dv, i);
            if (!json_is_string(name)) {
                char *dp = ptr_join(kp, key);
                cfail(c, dp ? dp : kp, "a dependency is a schema or an array of property names");
                free(dp);
                return -1;
            }
            d->names[i] = json_string_value(name);
        }
    }
    return 0;
}

static int kw_all_of(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    return sub_array(c, v, kp, "allOf", depth, &n->all_of, &n->nall_of);
}

static int kw_any_of(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    return sub_array(c, v, kp, "anyOf", depth, &n->any_of, &n->nany_of);
}

static int kw_one_of(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    return sub_array(c, v, kp, "oneOf", depth, &n->one_of, &n->none_of);
}

static int kw_not(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    return sub(c, v, kp, NULL, depth, &n->not_schema);
}

/* Subschemas kept for $ref to name (definitions, $defs): compiled so a
 * mistake in one is reported even when nothing refers to it. */
static int kw_definitions(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                          int depth)
{
    if (!json_is_object(v)) {
        cfail(c, kp, "definitions is a mapping of names to schemas");
        return -1;
    }
    const char *key;
    const json_t *sv;
    json_object_foreach((json_t *)v, key, sv) {
        schema_node *unused;
        if (sub(c, sv, kp, key, depth, &unused) < 0)
            return -1;
    }
    return 0;
}

static int kw_annotation(compile_ctx *c, schema_node *n, const json_t *v, const char *kp,
                         int depth)
{
    return 0;
}

/* Percent-decodes S[0..LEN) (a URI fragment) into a new string, or NULL. */
static char *percent_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1), *w = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned hi, lo;
        if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && sscanf(s + i + 1, "%1x%1x", &hi, &lo) == 2) {
            *w++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = '\0';
    return out;
}

/* Resolves REF ("#" or "#/a/b~1c") in the whole document. The target
 * object, with its canonical pointer in *TPTR (new), or NULL. */
static const json_t *resolve_ref(compile_ctx *c, const char *ref, const char *kp, char **tptr)
{
    *tptr = NULL;
    if (ref[0] != '#' || (ref[1] != '\0' && ref[1] != '/')) {
        cfail(c, kp,
              "$ref \"%s\" is not supported: only references within the document "
              "(\"#\", \"#/definitions/NAME\") are",
              ref);
        return NULL;
    }
    char *path = percent_decode(ref + 1, strlen(ref + 1));
    char *cur = strdup("");
    if (!path || !cur)
        goto oom;
    const json_t *t = c->s->doc;
    char *p = path;
    while (*p == '/') {
        p++;
        size_t sl = strcspn(p, "/");
        char *seg = malloc(sl + 1), *w = seg;
        if (!seg)
            goto oom;
        for (size_t i = 0; i < sl; i++) {
            if (p[i] == '~' && i + 1 < sl && (p[i + 1] == '0' || p[i + 1] == '1')) {
                *w++ = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                *w++ = p[i];
            }
        }
        *w = '\0';
        const json_t *next = NULL;
        if (json_is_object(t)) {
            next = json_object_get(t, seg);
        } else if (json_is_array(t)) {
            char *end;
            unsigned long long idx = strtoull(seg, &end, 10);
            if (*seg >= '0' && *seg <= '9' && *end == '\0')
                next = json_array_get(t, (size_t)idx);
        }
        char *np = ptr_join(cur, seg);
        free(seg);
        if (!np)
            goto oom;
        free(cur);
        cur = np;
        if (!next) {
            cfail(c, kp, "$ref \"%s\": nothing at %s in this document", ref, cur);
            goto fail;
        }
        t = next;
        p += sl;
    }
    free(path);
    *tptr = cur;
    return t;
oom:
    cfail(c, kp, "out of memory");
fail:
    free(path);
    free(cur);
    return NULL;
}

static int kw_ref(compile_ctx *c, schema_node *n, const json_t *v, const char *kp, int depth)
{
    if (!json_is_string(v)) {
        cfail(c, kp, "$ref is a string (\"#/definitions/NAME\")");
        return -1;
    }
    char *tptr;
    const json_t *t = resolve_ref(c, json_string_value(v), kp, &tptr);
    if (!t)
        return -1;
    n->ref = compile_node(c, t, tptr, depth + 1);
    free(tptr);
    return n->ref ? 0 : -1;
}

static const struct keyword {
    const char *name;
    keyword_fn fn;
} keywords[] = {
    {"type", kw_type},
    {"enum", kw_enum},
    {"const", kw_const},
    {"minimum", kw_minimum},
    {"maximum", kw_maximum},
    {"exclusiveMinimum", kw_exclusive_minimum},
    {"exclusiveMaximum", kw_exclusive_maximum},
    {"multipleOf", kw_multiple_of},
    {"minLength", kw_min_length},
    {"maxLength", kw_max_length},
    {"pattern", kw_pattern},
    {"items", kw_items},
    {"additionalItems", kw_additional_items},
    {"minItems", kw_min_items},
    {"maxItems", kw_max_items},
    {"uniqueItems", kw_unique_items},
    {"required", kw_required},
    {"properties", kw_properties},
    {"patternProperties", kw_pattern_properties},
    {"additionalProperties", kw_additional_properties},
    {"minProperties", kw_min_props},
    {"maxProperties", kw_max_props},
    {"dependencies", kw_dependencies},
    {"allOf", kw_all_of},
    {"anyOf", kw_any_of},
    {"oneOf", kw_one_of},
    {"not", kw_not},
    {"$ref", kw_ref},
    {"definitions", kw_definitions},
    {"$defs", kw_definitions},
    {"title", kw_annotation},
    {"description", kw_annotation},
    {"default", kw_annotation},
    {"examples", kw_annotation},
    {"$comment", kw_annotation},
    {"$schema", kw_annotation},
    {"$id", kw_annotation},
    {"id", kw_annotation},
};
#define NKEYWORDS (sizeof keywords / sizeof keywords[0])

static void unknown_keyword(compile_ctx *c, const char *key, const char *kp)
{
    const char *names[NKEYWORDS];
    for (size_t i = 0; i < NKEYWORDS; i++)
        names[i] = keywords[i].name;
    const char *near = dsl_suggest(key, strlen(key), names, NKEYWORDS);
    if (near)
        cfail(c, kp, "unsupported keyword \"%s\" (did you mean \"%s\"?)", key, near);
    else
        cfail(c, kp, "unsupported keyword \"%s\" (docs/dsl.md lists the supported ones)", key);
}

static void node_free(schema_node *n)
{
    if (!n)
        return;
    free(n->ptr);
    if (n->pattern) {
        regfree(&n->pattern->re);
        free(n->pattern);
    }
    free(n->tuple);
    free(n->prop_names);
    free(n->prop_schemas);
    for (size_t i = 0; i < n->npattern_props; i++)
        regfree(&n->pattern_props[i].re);
    free(n->pattern_props);
    free(n->pattern_schemas);
    free(n->required);
    for (size_t i = 0; i < n->ndeps; i++)
        free(n->deps[i].names);
    free(n->deps);
    free(n->all_of);
    free(n->any_of);
    free(n->one_of);
    free(n);
}

/* The node for subschema DOC at PTR: the one already compiled for it, or a
 * new one (registered before its keywords compile, so a $ref back to it
 * finds it). NULL on error (reported in C). */
static schema_node *compile_node(compile_ctx *c, const json_t *doc, const char *ptr, int depth)
{
    schema_node *n = set_find(c->s, doc);
    if (n)
        return n;
    if (depth > SCHEMA_MAX_DEPTH) {
        cfail(c, ptr, "schema nested deeper than %d levels", SCHEMA_MAX_DEPTH);
        return NULL;
    }
    if (!json_is_object(doc) && !json_is_boolean(doc)) {
        cfail(c, ptr, "a schema is a mapping (or true/false)");
        return NULL;
    }
    dsl_schema *s = c->s;
    if (s->nnodes == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        schema_node **nn = realloc(s->nodes, ncap * sizeof *nn);
        if (!nn)
            goto oom;
        s->nodes = nn;
        s->cap = ncap;
    }
    n = calloc(1, sizeof *n);
    if (!n)
        goto oom;
    n->doc = doc;
    n->index = s->nnodes;
    n->ptr = strdup(ptr);
    n->min_length = n->max_length = SCHEMA_NO_LIMIT;
    n->min_items = n->max_items = SCHEMA_NO_LIMIT;
    n->min_props = n->max_props = SCHEMA_NO_LIMIT;
    if (!n->ptr || set_put(s, doc, s->nnodes) < 0) {
        node_free(n);
        goto oom;
    }
    s->nodes[s->nnodes++] = n;

    if (json_is_boolean(doc)) {
        n->always = json_is_true(doc);
        n->never = !n->always;
        return n;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)doc, key, v) {
        char *kp = ptr_join(ptr, key);
        if (!kp)
            goto oom;
        const struct keyword *kw = NULL;
        for (size_t i = 0; i < NKEYWORDS && !kw; i++)
            if (strcmp(keywords[i].name, key) == 0)
                kw = &keywords[i];
        int rc = -1;
        if (kw)
            rc = kw->fn(c, n, v, kp, depth);
        else
            unknown_keyword(c, key, kp);
        free(kp);
        if (rc < 0)
            return NULL;
    }
    if ((n->exclusive_minimum && !n->minimum) || (n->exclusive_maximum && !n->maximum)) {
        char *kp = ptr_join(ptr, n->exclusive_minimum && !n->minimum ? "exclusiveMinimum"
                                                                      : "exclusiveMaximum");
        cfail(c, kp ? kp : ptr, "exclusiveMinimum/exclusiveMaximum true needs minimum/maximum");
        free(kp);
        return NULL;
    }
    return n;
oom:
    cfail(c, ptr, "out of memory");
    return NULL;
}

/* ---- cycles that never descend ----------------------------------------- */

/* $ref, allOf, anyOf, oneOf, not and schema dependencies apply to the same
 * value as their node; a cycle of them would recurse forever, and a long
 * chain of them as deep as it is long. The I-th such edge of N, or NULL. */
static const schema_node *same_value_edge(const schema_node *n, size_t i)
{
    if (n->ref)
        return i == 0 ? n->ref : NULL; /* siblings of $ref are not applied */
    if (i < n->nall_of)
        return n->all_of[i];
    i -= n->nall_of;
    if (i < n->nany_of)
        return n->any_of[i];
    i -= n->nany_of;
    if (i < n->none_of)
        return n->one_of[i];
    i -= n->none_of;
    if (n->not_schema) {
        if (i == 0)
            return n->not_schema;
        i--;
    }
    for (size_t d = 0; d < n->ndeps; d++) {
        if (!n->deps[d].schema)
            continue;
        if (i == 0)
            return n->deps[d].schema;
        i--;
    }
    return NULL;
}

/* Depth-first over the same-value edges, MARK[index] 1 while on the path, 2
 * when done. */
static int check_cycles_from(compile_ctx *c, const schema_node *n, unsigned char *mark,
                             int depth)
{
    if (mark[n->index] == 2)
        return 0;
    if (mark[n->index] == 1) {
        cfail(c, n->ptr,
              "this schema refers back to itself (through $ref, allOf, anyOf, oneOf or not) "
              "without descending into the value, so checking a value would never end");
        return -1;
    }
    if (depth > SCHEMA_MAX_DEPTH) {
        cfail(c, n->ptr, "a chain of $ref/allOf/anyOf/oneOf/not longer than %d schemas",
              SCHEMA_MAX_DEPTH);
        return -1;
    }
    mark[n->index] = 1;
    const schema_node *e;
    for (size_t i = 0; (e = same_value_edge(n, i)) != NULL; i++)
        if (check_cycles_from(c, e, mark, depth + 1) < 0)
            return -1;
    mark[n->index] = 2;
    return 0;
}

/* ---- public API -------------------------------------------------------- */

dsl_schema *dsl_schema_compile(json_t *doc, char *ptr, size_t ptrlen, char *msg, size_t msglen)
{
    compile_ctx c = {.ptr = ptr, .ptrlen = ptrlen, .msg = msg, .msglen = msglen};
    if (ptrlen)
        ptr[0] = '\0';
    if (msglen)
        msg[0] = '\0';
    if (!doc) {
        cfail(&c, "", "no schema");
        return NULL;
    }
    dsl_schema *s = calloc(1, sizeof *s);
    if (!s) {
        cfail(&c, "", "out of memory");
        return NULL;
    }
    s->doc = json_incref(doc);
    c.s = s;
    unsigned char *mark = NULL;
    s->root = compile_node(&c, doc, "", 0);
    if (!s->root)
        goto fail;
    mark = calloc(s->nnodes, 1);
    if (!mark) {
        cfail(&c, "", "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->nnodes; i++)
        if (check_cycles_from(&c, s->nodes[i], mark, 0) < 0)
            goto fail;
    free(mark);
    return s;
fail:
    free(mark);
    dsl_schema_free(s);
    return NULL;
}

void dsl_schema_free(dsl_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nnodes; i++)
        node_free(s->nodes[i]);
    free(s->nodes);
    free(s->keys);
    free(s->vals);
    json_decref(s->doc);
    free(s);
}

json_t *dsl_schema_doc(const dsl_schema *s)
{
    return s ? s->doc : NULL;
}
