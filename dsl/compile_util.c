/* compile_util.c -- the compiler's small tools for reading YAML: the id map,
 * messages (unknown and missing keys, with "did you mean"), typed scalars,
 * durations and identifiers. Each reports its own errors at the YAML node at
 * fault, so the builders read as lists of keys. (compile_value.c builds the
 * values: JSON, templates, retry, generation parameters.) */
#include "dsl/compile.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/suggest.h"
#include "common/containers.h"

void cc_oom(dsl_cc *cc)
{
    if (!cc->oom)
        dsl_error(cc->d, 0, 0, "out of memory");
    cc->oom = 1;
}

/* ---- id map ---- */

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void *cc_idmap_get(const cc_idmap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return NULL;
        if (strcmp(m->keys[i], key) == 0)
            return m->vals[i];
    }
}

int cc_idmap_put(cc_idmap *m, const char *key, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        const char **keys = calloc(cap, sizeof *keys);
        void **vals = calloc(cap, sizeof *vals);
        if (!keys || !vals) {
            free(keys);
            free(vals);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = hash_str(m->keys[i]) & (cap - 1);
            while (keys[j])
                j = (j + 1) & (cap - 1);
            keys[j] = m->keys[i];
            vals[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = cap;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], key) == 0) {
            m->vals[i] = val;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
    return 0;
}

void cc_idmap_free(cc_idmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- messages ---- */

static void verror_suggest(dsl_diags *d, int line, int col, const char *name, size_t len,
                           const char *const *cands, size_t ncands, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *s = cands ? dsl_suggest(name, len, cands, ncands) : NULL;
    if (s)
        dsl_error(d, line, col, "%s; did you mean '%s'?", msg, s);
    else
        dsl_error(d, line, col, "%s", msg);
}

void dsl_error_suggest(dsl_diags *d, int line, int col, const char *name, size_t len,
                       const char *const *cands, size_t ncands, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror_suggest(d, line, col, name, len, cands, ncands, fmt, ap);
    va_end(ap);
}

void cc_error_suggest(dsl_cc *cc, int line, int col, const char *name, size_t len,
                      const char *const *cands, size_t ncands, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror_suggest(cc->d, line, col, name, len, cands, ncands, fmt, ap);
    va_end(ap);
}


void cc_check_keys(dsl_cc *cc, const dsl_ynode *y, const char *const *allowed, const char *what)
{
    dsl_check_keys(cc->d, y, allowed, what);
}

void dsl_check_keys(dsl_diags *d, const dsl_ynode *y, const char *const *allowed, const char *what)
{
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        const char *name = k->u.scalar.str;
        int ok = 0;
        for (size_t j = 0; allowed[j]; j++)
            if (strcmp(allowed[j], name) == 0) {
                ok = 1;
                break;
            }
        if (!ok)
            dsl_error_suggest(d, k->line, k->col, name, k->u.scalar.len, allowed, (size_t)-1,
                              "unknown key '%.*s' in %s", CC_NAME_SHOWN, name, what);
    }
}

void dsl_type_error(dsl_diags *d, const dsl_ynode *y, const char *key, const char *want)
{
    dsl_error(d, y->line, y->col, "'%s' must be %s, got a %s", key, want, dsl_ynode_describe(y));
}

static void type_error(dsl_cc *cc, const dsl_ynode *y, const char *key, const char *want)
{
    dsl_type_error(cc->d, y, key, want);
}

int cc_want_map(dsl_cc *cc, const dsl_ynode *y, const char *key)
{
    if (y->kind == DSL_Y_MAP)
        return 1;
    type_error(cc, y, key, "a mapping");
    return 0;
}

int cc_want_seq(dsl_cc *cc, const dsl_ynode *y, const char *key)
{
    if (y->kind == DSL_Y_SEQ)
        return 1;
    type_error(cc, y, key, "a list");
    return 0;
}

const char *cc_string(dsl_cc *cc, const dsl_ynode *y, const char *key)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING) {
        type_error(cc, y, key, "a string");
        return NULL;
    }
    const char *s = dsl_arena_strndup(cc->a, y->u.scalar.str, y->u.scalar.len);
    if (!s)
        cc_oom(cc);
    return s;
}

int cc_int(dsl_cc *cc, const dsl_ynode *y, const char *key, int64_t min, int64_t max, int64_t *out)
{
    int64_t v;
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_INT || dsl_yscalar_int(y, &v) < 0) {
        type_error(cc, y, key, "an integer");
        return -1;
    }
    if (v < min) {
        dsl_error(cc->d, y->line, y->col, "'%s' must be at least %lld, got %lld", key,
                  (long long)min, (long long)v);
        return -1;
    }
    if (v > max) {
        dsl_error(cc->d, y->line, y->col, "'%s' must be at most %lld, got %lld", key,
                  (long long)max, (long long)v);
        return -1;
    }
    *out = v;
    return 0;
}

int cc_number(dsl_cc *cc, const dsl_ynode *y, const char *key, double min, double max, double *out)
{
    double v;
    dsl_ytype t = y->kind == DSL_Y_SCALAR ? dsl_yscalar_type(y) : DSL_YT_STRING;
    if ((t != DSL_YT_INT && t != DSL_YT_FLOAT) || dsl_yscalar_double(y, &v) < 0 || !isfinite(v)) {
        type_error(cc, y, key, "a number");
        return -1;
    }
    if (v < min || v > max) {
        dsl_error(cc->d, y->line, y->col, "'%s' must be between %g and %g, got %g", key, min, max, v);
        return -1;
    }
    *out = v;
    return 0;
}

int cc_bool(dsl_cc *cc, const dsl_ynode *y, const char *key, int *out)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_bool(y, out) < 0) {
        type_error(cc, y, key, "true or false");
        return -1;
    }
    return 0;
}

/* ---- durations ---- */

#define DURATION_MAX_MS (7ULL * 24 * 3600 * 1000)

int dsl_parse_duration(const char *s, size_t len, uint64_t *ms, const char **why)
{
    const char *p = s, *end = s + len;
    double total = 0;
    int parts = 0;
    if (len == 0) {
        *why = "empty duration";
        return -1;
    }
    if (s[0] == '-') {
        *why = "a duration cannot be negative";
        return -1;
    }
    while (p < end) {
        const char *num = p;
        double v = 0, scale = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (p < end && *p == '.') {
            p++;
            double f = 0.1;
            while (p < end && *p >= '0' && *p <= '9') {
                v += (*p++ - '0') * f;
                f /= 10;
                digits++;
            }
        }
        if (!digits || p == num) {
            *why = "expected a number";
            return -1;
        }
        if (p == end) {
            *why = "a duration needs a unit (ms, s, m or h)";
            return -1;
        }
        if (end - p >= 2 && p[0] == 'm' && p[1] == 's') {
            scale = 1;
            p += 2;
        } else if (*p == 's') {
            scale = 1000;
            p++;
        } else if (*p == 'm') {
            scale = 60000;
            p++;
        } else if (*p == 'h') {
            scale = 3600000;
            p++;
        } else {
            *why = "unknown unit (use ms, s, m or h)";
            return -1;
        }
        total += v * scale;
        parts++;
        if (total > (double)DURATION_MAX_MS) {
            *why = "longer than 7 days";
            return -1;
        }
    }
    *ms = (uint64_t)llround(total);
    return 0;
}

int cc_duration(dsl_cc *cc, const dsl_ynode *y, const char *key, uint64_t *ms)
{
    const char *why;
    if (y->kind != DSL_Y_SCALAR) {
        type_error(cc, y, key, "a duration such as 30s");
        return -1;
    }
    if (dsl_parse_duration(y->u.scalar.str, y->u.scalar.len, ms, &why) < 0) {
        dsl_error(cc->d, y->line, y->col, "invalid duration '%.*s' for '%s': %s; e.g. 500ms, 30s, 2m",
                  CC_NAME_SHOWN, y->u.scalar.str, key, why);
        return -1;
    }
    return 0;
}

int cc_is_ident(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int cc_misspelt(const dsl_ynode *y, const char *key)
{
    const char *cand[1] = { key };
    if (y->kind != DSL_Y_MAP)
        return 0;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        if (strcmp(k->u.scalar.str, key) != 0 && dsl_suggest(k->u.scalar.str, k->u.scalar.len, cand, 1))
            return 1;
    }
    return 0;
}

void cc_missing(dsl_cc *cc, const dsl_ynode *y, const char *key, const char *what)
{
    /* "unknown key 'promt'; did you mean 'prompt'?" already says it */
    if (cc_misspelt(y, key))
        return;
    dsl_error(cc->d, y->line, y->col, "missing required key '%s' in %s", key, what);
}
