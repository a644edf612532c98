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

/* ---- the config */

static const loom_option *option_find(const loom_option *opts, const char *name)
{
    for (; opts && opts->name; opts++)
        if (strcmp(opts->name, name) == 0)
            return opts;
    return NULL;
}

/* The value of string option NAME: CONFIG's (borrowed from it), else the
 * default in OPTS, else NULL. The type was checked by loom_hc_conf_init. */
static const char *option_value(const loom_option *opts, json_t *config, const char *name)
{
    const loom_option *o = option_find(opts, name);
    json_t *v = json_object_get(config, name);

    if (json_is_string(v))
        return json_string_value(v);
    return o ? o->default_value : NULL;
}

/* Every string option OPTS declares must be a string in CONFIG when set. */
static int check_strings(loom_ctx *ctx, const char *prov, const loom_option *opts,
                         json_t *config)
{
    if (config && !json_is_object(config)) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: the config must be a mapping", prov);
        return -1;
    }
    for (; opts && opts->name; opts++) {
        json_t *v = json_object_get(config, opts->name);

        if (opts->type == LOOM_OPT_STRING && v && !json_is_null(v) && !json_is_string(v)) {
            loom_error(ctx, LOOM_E_CONFIG, "%s: %s must be a string", prov, opts->name);
            return -1;
        }
    }
    return 0;
}

int loom_hc_conf_init(loom_ctx *ctx, const char *prov, const loom_option *opts, json_t *config,
                      const char *no_key, loom_hc_conf *conf)
{
    const char *env;

    if (check_strings(ctx, prov, opts, config) < 0)
        return -1;
    env = option_value(opts, config, "api_key_env");
    if (!(conf->base = loom_hc_base_url(ctx, prov, option_value(opts, config, "base_url"))))
        return -1;
    if (loom_hc_option_string(ctx, prov, opts, config, "model", &conf->model) < 0)
        return -1;
    if (loom_hc_read_key(ctx, prov, env, option_value(opts, config, "api_key_file"),
                         &conf->key) < 0)
        return -1;
    if (conf->key)
        return 0;
    if (!no_key) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: no API key (set %s or api_key_file)", prov,
                   env ? env : "api_key_env");
        return -1;
    }
    /* the host prefixes the plugin's name */
    loom_log(ctx, LOOM_LOG_INFO, "no API key (%s unset): %s", env ? env : "api_key_env", no_key);
    return 0;
}

void loom_hc_conf_fini(loom_hc_conf *conf)
{
    free(conf->base);
    free(conf->model);
    loom_hc_secret_free(conf->key);
    memset(conf, 0, sizeof *conf);
}

int loom_hc_option_string(loom_ctx *ctx, const char *prov, const loom_option *opts,
                          json_t *config, const char *name, char **out)
{
    const char *v = option_value(opts, config, name);

    *out = NULL;
    if (v && !(*out = strdup(v))) {
        loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        return -1;
    }
    return 0;
}

int loom_hc_option_positive(loom_ctx *ctx, const char *prov, const loom_option *opts,
                            json_t *config, const char *name, json_int_t *out)
{
    const loom_option *o = option_find(opts, name);
    json_t *v = json_object_get(config, name);
    char *end = NULL;

    if (v && !json_is_null(v)) {
        *out = json_is_integer(v) ? json_integer_value(v) : 0;
    } else {
        /* the default is written as in YAML: a decimal string */
        *out = o && o->default_value ? strtoll(o->default_value, &end, 10) : 0;
        if (end && *end)
            *out = 0;
    }
    if (*out <= 0) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: %s must be a positive integer", prov, name);
        return -1;
    }
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

/* Accepts *OUT, the key just copied from WHERE NAME (NULL: the copy failed),
 * or frees it. 0, or -1 after loom_error with *OUT NULL. */
static int key_accept(loom_ctx *ctx, const char *prov, const char *where, const char *name,
                      char **out)
{
    if (!*out) {
        loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        return -1;
    }
    if (key_clean(*out) < 0) {
        loom_error(ctx, LOOM_E_CONFIG, "%s: %s %s holds no usable key", prov, where, name);
        loom_hc_secret_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int loom_hc_read_key(loom_ctx *ctx, const char *prov, const char *env, const char *file,
                     char **out)
{
    char buf[4096];
    FILE *f;
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
        return key_accept(ctx, prov, "api_key_file", file, out);
    }
    v = env && *env ? getenv(env) : NULL;
    if (!v || !*v)
        return 0;
    *out = strdup(v);
    return key_accept(ctx, prov, "environment variable", env, out);
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

json_t *loom_hc_body_new(loom_ctx *ctx, const char *prov, const loom_hc_conf *conf,
                         const loom_request *req)
{
    const char *model = req->model && *req->model ? req->model : conf->model;
    json_t *body;

    if (!model) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, "%s: no model (set the provider's model)", prov);
        return NULL;
    }
    body = json_object();
    if (!body || json_object_set_new(body, "model", json_string(model)) < 0) {
        loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        json_decref(body);
        return NULL;
    }
    return body;
}

/* V as parameter TYPE: a new reference to what the body gets, or NULL with
 * *WANT naming the type V should have had (else out of memory). */
static json_t *param_value(json_t *v, loom_hc_param_type type, const char **want)
{
    json_t *one;
    size_t i;
    int ok;

    switch (type) {
    case LOOM_HC_NUMBER:
        *want = "a number";
        return json_is_number(v) ? json_incref(v) : NULL;
    case LOOM_HC_INTEGER:
        *want = "an integer";
        return json_is_integer(v) ? json_incref(v) : NULL;
    case LOOM_HC_POSITIVE:
        *want = "a positive integer";
        return json_is_integer(v) && json_integer_value(v) > 0 ? json_incref(v) : NULL;
    case LOOM_HC_STRINGS:
    case LOOM_HC_STRING_LIST:
        *want = "a string or strings";
        ok = json_is_string(v) || json_is_array(v);
        json_array_foreach(v, i, one) ok = ok && json_is_string(one);
        if (!ok)
            return NULL;
        *want = NULL;
        if (type == LOOM_HC_STRING_LIST && json_is_string(v))
            return json_pack("[O]", v);
        return json_incref(v);
    }
    *want = "known to this provider";
    return NULL;
}

int loom_hc_put_params(loom_ctx *ctx, const char *prov, const loom_hc_param *table,
                       json_t *params, json_t *fallback, json_t *body)
{
    if (params && !json_is_null(params) && !json_is_object(params)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, "%s: params must be a mapping", prov);
        return -1;
    }
    for (; table->name; table++) {
        json_t *v = json_object_get(params, table->name), *put;
        const char *want = NULL;

        if (!v || json_is_null(v))
            v = json_object_get(fallback, table->name);
        if (!v || json_is_null(v))
            continue;
        put = param_value(v, table->type, &want);
        if (!put && want) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, "%s: %s must be %s", prov, table->name, want);
            return -1;
        }
        /* set_new consumes PUT even when it fails */
        if (!put || json_object_set_new(body, table->field, put) < 0) {
            loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
            return -1;
        }
    }
    return 0;
}

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
    return loom_hc_add_header(out, "content-type", "application/json");
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

json_t *loom_hc_decode_start(const loom_http_response *resp, loom_result *out)
{
    out->output = NULL;
    out->tool_calls = NULL;
    out->usage.input_tokens = out->usage.output_tokens = -1;
    return loom_hc_parse_body(resp);
}

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

int loom_hc_is_one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (strcmp(s, *set) == 0)
            return 1;
    return 0;
}

/* The class a failed status stands for when the body named none. */
static loom_errcode status_class(int status)
{
    if (status == 402)
        return LOOM_E_QUOTA;
    if (status == 429)
        return LOOM_E_RATE_LIMITED;
    if (status == 408 || status == 409 || status >= 500 || status < 300)
        return LOOM_E_UPSTREAM;
    return LOOM_E_INVALID_REQUEST;
}

int loom_hc_fail(loom_ctx *ctx, const char *prov, const loom_http_response *resp,
                 const loom_hc_error *e, const char *secret)
{
    loom_errcode ec = e->code != LOOM_OK ? e->code : status_class(e->status);
    int64_t wait = loom_hc_retry_after_ms(resp);
    const char *msg = e->message ? e->message : e->parsed ? "" : "(body is not JSON)";
    char quoted[LOOM_HC_MSG_MAX + 1];
    const char *what;

    loom_hc_server_message(quoted, sizeof quoted, msg, secret);
    switch (ec) {
    case LOOM_E_QUOTA:
        what = "quota exhausted";
        break;
    case LOOM_E_RATE_LIMITED:
        what = "rate limited";
        break;
    case LOOM_E_UPSTREAM:
        what = "server error";
        break;
    default:
        what = "request refused";
        break;
    }
    if (wait >= 0 && (ec == LOOM_E_RATE_LIMITED || ec == LOOM_E_UPSTREAM))
        loom_retry_after(ctx, (uint64_t)wait);
    loom_error(ctx, ec, "%s: %s (HTTP %d %s): %s", prov, what, e->status,
               e->label ? e->label : "-", quoted);
    return -1;
}

/* Usage field KEY of USAGE as a count, or -1 when absent or not one. */
static int64_t usage_field(json_t *usage, const char *key)
{
    json_t *v = json_object_get(usage, key);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return json_integer_value(v);
}

void loom_hc_usage(json_t *body, const char *in_key, const char *out_key, loom_usage *usage)
{
    json_t *u = json_object_get(body, "usage");

    usage->input_tokens = usage_field(u, in_key);
    usage->output_tokens = usage_field(u, out_key);
}

void loom_hc_usage_cache_openai(json_t *u, loom_usage *usage)
{
    int64_t cached = usage_field(json_object_get(u, "prompt_tokens_details"), "cached_tokens");

    if (cached >= 0)
        usage->cache_read_tokens = cached;
    else if (usage->input_tokens >= 0)
        usage->cache_read_tokens = 0;
    if (usage->input_tokens >= 0)
        usage->cache_write_tokens = 0; /* OpenAI caches for free, without a write charge */
}

void loom_hc_usage_cache_anthropic(json_t *u, loom_usage *usage)
{
    int64_t rd = usage_field(u, "cache_read_input_tokens");
    int64_t wr = usage_field(u, "cache_creation_input_tokens");
    int64_t max = (int64_t)1 << 40; /* sums of sane counts never overflow */

    if (usage->input_tokens >= 0) {
        if (rd < 0)
            rd = 0;
        if (wr < 0)
            wr = 0;
        if (rd <= max && wr <= max && usage->input_tokens <= max)
            usage->input_tokens += rd + wr;
    }
    if (rd >= 0)
        usage->cache_read_tokens = rd;
    if (wr >= 0)
        usage->cache_write_tokens = wr;
}

int loom_hc_option_bool(const loom_option *opts, json_t *config, const char *name)
{
    json_t *v = json_object_get(config, name);
    const loom_option *o;

    if (json_is_boolean(v))
        return json_is_true(v);
    o = option_find(opts, name);
    return o && o->default_value && strcmp(o->default_value, "true") == 0;
}

/* ---- text */

int loom_hc_text_add(loom_hc_text *t, const char *sep, const char *s, size_t n)
{
    size_t ns = t->len > 0 && sep ? strlen(sep) : 0;
    char *grown = realloc(t->s, t->len + ns + n + 1);

    if (!grown)
        return -1;
    t->s = grown;
    if (ns > 0)
        memcpy(t->s + t->len, sep, ns);
    memcpy(t->s + t->len + ns, s, n);
    t->len += ns + n;
    t->s[t->len] = '\0';
    return 0;
}

char *loom_hc_parts_text(json_t *parts, const char *type, size_t *len)
{
    loom_hc_text t = { calloc(1, 1), 0 };
    json_t *part;
    size_t i;

    if (!t.s)
        return NULL;
    json_array_foreach(parts, i, part) {
        json_t *text = json_object_get(part, "text");
        const char *ptype = json_string_value(json_object_get(part, "type"));

        if (!json_is_string(text) || (type && (!ptype || strcmp(ptype, type) != 0)))
            continue;
        if (loom_hc_text_add(&t, NULL, json_string_value(text), json_string_length(text)) < 0) {
            free(t.s);
            return NULL;
        }
    }
    *len = t.len;
    return t.s;
}

char *loom_hc_content_text(json_t *content, int *bad)
{
    size_t len;

    *bad = 0;
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        *bad = 1;
        return NULL;
    }
    return loom_hc_parts_text(content, NULL, &len);
}

/* ---- streamed answers */

json_t *loom_hc_stream_json(loom_ctx *ctx, const char *prov, const loom_sse_event *ev)
{
    json_t *v = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, NULL);

    if (!json_is_object(v)) {
        json_decref(v);
        loom_error(ctx, LOOM_E_UPSTREAM, "%s: a streamed event that is not a JSON object", prov);
        return NULL;
    }
    return v;
}

int loom_hc_stream_fail(loom_ctx *ctx, const char *prov, const loom_hc_error *e,
                        const char *secret)
{
    const loom_http_response none = { .status = e->status };

    return loom_hc_fail(ctx, prov, &none, e, secret);
}
