/* http_common.c -- helpers shared by the HTTP provider plugins.
 *
 * See http_common.h. The rules that matter for safety live here once: keys
 * are wiped when freed and redacted from any server text we quote, quoted
 * text is bounded and stripped of control characters, and response headers
 * are matched without case whatever the host delivers. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_common.h"

int loom_hc_config_string(loom_ctx *ctx, const char *prov, json_t *config, const char *key,
                          const char *def, const char **out)
{
    json_t *v = json_object_get(config, key);

    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: %s must be a string", prov, key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

void loom_hc_secret_free(char *s)
{
    if (!s)
        return;
    /* volatile: the compiler may not drop a store to memory about to be freed */
    for (volatile char *p = s; *p; p++)
        *p = '\0';
    free(s);
}

/* Checks and trims KEY in place: trailing whitespace goes (a key file ends
 * with a newline), control characters refuse it. 0 or -1. */
static int key_clean(char *key)
{
    size_t n = strlen(key);

    while (n > 0 && isspace((unsigned char)key[n - 1]))
        key[--n] = '\0';
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)key[i]) || key[i] == ' ')
            return -1;
    return 0;
}

int loom_hc_read_key(loom_ctx *ctx, const char *prov, const char *env, const char *file,
                     char **out)
{
    char buf[4096];
    FILE *f = NULL;
    size_t n;
    const char *v;

    *out = NULL;
    if (file && *file) {
        f = fopen(file, "r");
        if (!f) {
            loom_error(ctx, LOOM_E_CONFIG, "%s: cannot read api_key_file %s: %s", prov, file,
                       strerror(errno));
            return -1;
        }
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0'; /* the first line only */
        *out = strdup(buf);
        for (volatile char *p = buf; p < buf + sizeof buf; p++)
            *p = '\0';
        if (!*out)
            goto nomem;
        if (key_clean(*out) < 0) {
            loom_error(ctx, LOOM_E_CONFIG, "%s: api_key_file %s holds no usable key", prov,
                       file);
            goto fail;
        }
        return 0;
    }
    v = env && *env ? getenv(env) : NULL;
    if (!v || !*v)
        return 0;
    *out = strdup(v);
    if (!*out)
        goto nomem;
    if (key_clean(*out) < 0) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: environment variable %s holds no usable key", prov,
                   env);
        goto fail;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
fail:
    loom_hc_secret_free(*out);
    *out = NULL;
    return -1;
}

char *loom_hc_base_url(loom_ctx *ctx, const char *prov, const char *url)
{
    char *s;
    size_t n;

    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: base_url must start with http:// or https://", prov);
        return NULL;
    }
    s = strdup(url);
    if (!s) {
        loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        return NULL;
    }
    n = strlen(s);
    while (n > 8 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* ---- requests */

int loom_hc_add_header(loom_http_request *out, const char *name, const char *value)
{
    loom_header *grown = realloc(out->headers, (out->nheaders + 1) * sizeof *grown);
    char *n, *v;

    if (!grown)
        return -1;
    out->headers = grown;
    n = strdup(name);
    v = strdup(value);
    if (!n || !v) {
        free(n);
        loom_hc_secret_free(v); /* values may be keys */
        return -1;
    }
    grown[out->nheaders].name = n;
    grown[out->nheaders].value = v;
    out->nheaders++;
    return 0;
}

int loom_hc_set_post(loom_http_request *out, const char *base, const char *path, json_t *body)
{
    size_t nb = strlen(base), np = strlen(path);

    out->method = strdup("POST");
    out->url = malloc(nb + np + 1);
    out->body = json_dumps(body, JSON_COMPACT);
    if (!out->method || !out->url || !out->body)
        return -1;
    memcpy(out->url, base, nb);
    memcpy(out->url + nb, path, np + 1);
    out->body_len = strlen(out->body);
    return 0;
}

void loom_hc_request_clear(loom_http_request *out)
{
    free(out->method);
    free(out->url);
    free(out->body);
    for (size_t i = 0; i < out->nheaders; i++) {
        /* the header array is typed const char *: it is ours until handed over */
        free((char *)out->headers[i].name);
        loom_hc_secret_free((char *)out->headers[i].value);
    }
    free(out->headers);
    memset(out, 0, sizeof *out);
}

/* ---- responses */

const char *loom_hc_header(const loom_http_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (resp->headers[i].name && strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

json_t *loom_hc_parse_body(const loom_http_response *resp)
{
    json_error_t err;

    if (!resp->body || resp->body_len == 0)
        return NULL;
    return json_loadb(resp->body, resp->body_len, 0, &err);
}

/* V (non-negative, finite) rounded up: no libm needed for that. */
static int64_t round_up(double v)
{
    int64_t i = (int64_t)v;
    return (double)i < v ? i + 1 : i;
}

int64_t loom_hc_parse_duration(const char *s)
{
    double total = 0;
    int parts = 0;

    if (!s)
        return -1;
    while (*s == ' ')
        s++;
    while (*s) {
        char *end;
        double v, unit;

        if (!isdigit((unsigned char)*s) && *s != '.')
            return -1;
        errno = 0;
        v = strtod(s, &end);
        if (end == s || errno != 0 || !(v >= 0 && v < 1e12))
            return -1;
        s = end;
        if (strncmp(s, "ms", 2) == 0) {
            unit = 1, s += 2;
        } else if (*s == 'h') {
            unit = 3600000, s++;
        } else if (*s == 'm') {
            unit = 60000, s++;
        } else if (*s == 's') {
            unit = 1000, s++;
        } else {
            return -1;
        }
        total += v * unit;
        parts++;
    }
    /* a year is plenty: anything larger is noise, not a wait */
    if (parts == 0 || total > 365.0 * 86400000.0)
        return -1;
    return round_up(total);
}

/* A non-negative decimal number (fractions allowed) times SCALE, rounded
 * up, or -1. */
static int64_t parse_number(const char *s, double scale)
{
    char *end;
    double v;

    if (!s)
        return -1;
    while (*s == ' ')
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (*end || errno != 0 || !(v >= 0 && v < 1e12) || v * scale > 365.0 * 86400000.0)
        return -1;
    return round_up(v * scale);
}

int64_t loom_hc_retry_after_ms(const loom_http_response *resp)
{
    static const char *const buckets[] = { "requests", "tokens" };
    int64_t v, exhausted = -1, smallest = -1;
    char name[64];

    if ((v = parse_number(loom_hc_header(resp, "retry-after-ms"), 1)) >= 0)
        return v;
    if ((v = parse_number(loom_hc_header(resp, "retry-after"), 1000)) >= 0)
        return v;
    /* "reset" is the time until the bucket is full again, which is longer
     * than the wait for one call, but the only figure the server gives. */
    for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
        const char *remaining;

        snprintf(name, sizeof name, "x-ratelimit-reset-%s", buckets[i]);
        v = loom_hc_parse_duration(loom_hc_header(resp, name));
        if (v < 0)
            continue;
        snprintf(name, sizeof name, "x-ratelimit-remaining-%s", buckets[i]);
        remaining = loom_hc_header(resp, name);
        if (remaining && strcmp(remaining, "0") == 0 && v > exhausted)
            exhausted = v;
        if (smallest < 0 || v < smallest)
            smallest = v;
    }
    return exhausted >= 0 ? exhausted : smallest;
}

void loom_hc_server_message(char *buf, size_t size, const char *msg, const char *secret)
{
    static const char redacted[] = "[redacted]";
    size_t cap = size - 1 < LOOM_HC_MSG_MAX ? size - 1 : LOOM_HC_MSG_MAX;
    size_t slen = secret ? strlen(secret) : 0, o = 0;
    const char *p = msg ? msg : "";

    if (size == 0)
        return;
    while (*p && o < cap) {
        if (slen > 0 && strncmp(p, secret, slen) == 0) {
            for (size_t k = 0; redacted[k] && o < cap; k++)
                buf[o++] = redacted[k];
            p += slen;
            continue;
        }
        buf[o++] = iscntrl((unsigned char)*p) ? ' ' : *p;
        p++;
    }
    if (*p && cap >= 3) {
        /* cut: step back off any UTF-8 continuation bytes, then mark it */
        o = cap - 3;
        while (o > 0 && ((unsigned char)buf[o] & 0xC0) == 0x80)
            o--;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

int64_t loom_hc_usage_field(json_t *usage, const char *key)
{
    json_t *v = json_object_get(usage, key);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return json_integer_value(v);
}

char *loom_hc_content_text(json_t *content, int *bad)
{
    char *buf;
    size_t len = 0;
    json_t *part;
    size_t i;

    *bad = 0;
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        *bad = 1;
        return NULL;
    }
    buf = calloc(1, 1);
    if (!buf)
        return NULL;
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        size_t n;
        char *grown;

        if (!json_is_string(t))
            continue;
        n = json_string_length(t);
        grown = realloc(buf, len + n + 1);
        if (!grown) {
            free(buf);
            return NULL;
        }
        buf = grown;
        memcpy(buf + len, json_string_value(t), n);
        len += n;
        buf[len] = '\0';
    }
    return buf;
}
