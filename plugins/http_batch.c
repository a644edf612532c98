/* http_batch.c -- helpers shared by the HTTP providers' Batch API hooks.
 *
 * See http_batch.h. Ids coming back from a provider end up in the URLs of
 * later steps, so they are checked here once rather than escaped. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_batch.h"

static int id_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

int loom_hc_custom_id_ok(const char *id)
{
    size_t n = 0;

    if (!id)
        return 0;
    for (; id[n]; n++)
        if (!id_char(id[n]))
            return 0;
    return n >= 1 && n <= LOOM_HC_CUSTOM_ID_MAX;
}

int loom_hc_batch_line_ok(loom_ctx *ctx, const char *prov, const loom_request *req,
                          const char *custom_id)
{
    if (!loom_hc_custom_id_ok(custom_id)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: a batch line's custom_id must match [A-Za-z0-9_-]{1,64}", prov);
        return -1;
    }
    if (req->tools) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: a call with tools cannot be batched (each turn needs the answer to the "
                   "one before)", prov);
        return -1;
    }
    return 0;
}

int loom_hc_batch_id_ok(const char *id)
{
    size_t n = 0;

    if (!id || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 0;
    for (; id[n]; n++)
        if (!id_char(id[n]) && id[n] != '.')
            return 0;
    return n >= 1 && n < 128;
}

int loom_hc_set_request(loom_http_request *out, const char *method, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !(out->method = strdup(method)) || !(out->url = malloc((size_t)n + 1)))
        return -1;
    va_start(ap, fmt);
    vsnprintf(out->url, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return 0;
}

int loom_hc_batch_str(char *dst, size_t size, json_t *v)
{
    size_t n;

    dst[0] = '\0';
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || (n = json_string_length(v)) >= size ||
        memchr(json_string_value(v), '\0', n))
        return -1;
    memcpy(dst, json_string_value(v), n + 1);
    return 0;
}

int64_t loom_hc_count(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

int loom_hc_line_dump(loom_ctx *ctx, const char *prov, json_t *obj, char **line, size_t *len)
{
    /* compact: a string's newlines are escaped, so the line stays one line */
    char *text = json_dumps(obj, JSON_COMPACT);

    if (!text) {
        loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        return -1;
    }
    *line = text;
    *len = strlen(text);
    return 0;
}

json_t *loom_hc_line_parse(loom_ctx *ctx, const char *prov, const char *line, size_t len)
{
    json_t *v = line ? json_loadb(line, len, 0, NULL) : NULL;

    if (!json_is_object(v)) {
        json_decref(v);
        loom_error(ctx, LOOM_E_UPSTREAM, "%s: a batch result line that is not a JSON object",
                   prov);
        return NULL;
    }
    return v;
}

void loom_hc_result_empty(loom_result *out)
{
    out->output = NULL;
    out->tool_calls = NULL;
    out->usage = LOOM_USAGE_UNKNOWN;
    out->finish_reason[0] = '\0';
}
