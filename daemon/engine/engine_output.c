/* engine_output.c -- what a lambda or a provider hands back is checked before
 * it enters a job.
 *
 * Plugins build values with jansson, whose *_nocheck calls take any bytes
 * and whose reals take NaN; such a value cannot be serialized, so the store
 * could not record the step and the job would never end. Checking here turns
 * it into a typed step error (invalid_output) that names the JSON path.
 * Integers beyond 2^53 pass: jansson keeps them exact (json_int_t) and the
 * store writes them as digits, so nothing is lost on our side. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

/* Deep enough for any real document, and bounds the recursion (a cycle a
 * plugin made with json_array_append(a, a) ends here too). */
#define OUTPUT_MAX_DEPTH 512
/* The most an HTTP answer may be (daemon/core/http.c): a lambda gets the same. */
#define OUTPUT_MAX_BYTES ((size_t)64 << 20)

typedef struct ocheck {
    char path[256];
    size_t plen;
    char *msg;
    size_t msglen;
} ocheck;

/* The length of the well-formed UTF-8 sequence at S (N bytes left), or 0
 * (no overlongs, surrogates or code points past U+10FFFF, no NUL: jansson's
 * own rule for strings). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp, min;
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq(s + i, n - i)))
            return false;
    return true;
}

void output_text_fix(char *s)
{
    unsigned char *u = (unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq(u + i, n - i))) {
            u[i] = '?';
            k = 1;
        }
}

static int fail_at(ocheck *c, const char *what)
{
    snprintf(c->msg, c->msglen, "invalid output at %s: %s", c->plen ? c->path : "$", what);
    return -1;
}

/* Appends one path step; a path too long to show is cut with "...". */
static size_t path_push(ocheck *c, const char *fmt, const char *key, size_t idx)
{
    size_t old = c->plen;
    if (c->plen == 0)
        c->path[c->plen++] = '$', c->path[c->plen] = 0;
    size_t room = sizeof c->path - c->plen;
    int n = key ? snprintf(c->path + c->plen, room, fmt, key)
                : snprintf(c->path + c->plen, room, fmt, idx);
    if (n < 0 || (size_t)n >= room) {
        memcpy(c->path + sizeof c->path - 4, "...", 4);
        c->plen = sizeof c->path - 1;
    } else {
        c->plen += (size_t)n;
    }
    return old;
}

static void path_pop(ocheck *c, size_t old)
{
    c->plen = old;
    c->path[old] = 0;
}

static int check_value(ocheck *c, const json_t *v, int depth)
{
    if (depth > OUTPUT_MAX_DEPTH)
        return fail_at(c, "nested deeper than 512 levels");
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (!utf8_valid((const unsigned char *)json_string_value(v), json_string_length(v)))
            return fail_at(c, "a string that is not valid UTF-8");
        return 0;
    case JSON_REAL:
        if (!isfinite(json_real_value(v)))
            return fail_at(c, "a number that is NaN or infinite");
        return 0;
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *x = json_array_get(v, i);
            size_t old = path_push(c, "[%zu]", NULL, i);
            if (!x)
                return fail_at(c, "a missing value");
            if (check_value(c, x, depth + 1) < 0)
                return -1;
            path_pop(c, old);
        }
        return 0;
    case JSON_OBJECT: {
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            if (!utf8_valid((const unsigned char *)k, strlen(k)))
                return fail_at(c, "a key that is not valid UTF-8");
            size_t old = path_push(c, ".%s", k, 0);
            if (check_value(c, x, depth + 1) < 0)
                return -1;
            path_pop(c, old);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int count_bytes(const char *buf, size_t n, void *ud)
{
    (void)buf;
    size_t *total = ud;
    *total += n;
    return *total > OUTPUT_MAX_BYTES ? -1 : 0;
}

int output_check(const json_t *v, char *msg, size_t msglen)
{
    ocheck c = { .msg = msg, .msglen = msglen };
    if (!v)
        return fail_at(&c, "no value");
    if (check_value(&c, v, 0) < 0)
        return -1;
    size_t total = 0;
    if (json_dump_callback(v, count_bytes, &total, JSON_COMPACT | JSON_ENCODE_ANY) < 0) {
        if (total > OUTPUT_MAX_BYTES)
            snprintf(msg, msglen, "invalid output: more than %zu MiB as JSON",
                     OUTPUT_MAX_BYTES >> 20);
        else
            snprintf(msg, msglen, "invalid output: it cannot be written as JSON");
        return -1;
    }
    return 0;
}
