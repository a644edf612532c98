/* anthropic.c -- the provider for Anthropic's Messages API.
 *
 * Encodes chat calls as POST {base}/messages and decodes the answer. Pure:
 * the host does the I/O, so any thread may call encode and decode.
 *
 * The API key is required (Anthropic accepts no anonymous calls), read once
 * at init and sent only as the x-api-key header. System messages become the
 * top-level "system" field, since the API accepts only user and assistant
 * turns in "messages". max_tokens is mandatory for the API, so the option's
 * default fills it in when the call gives none. There is no embeddings
 * endpoint: EMBED calls are refused at encode with invalid_request. seed
 * has no equivalent and is dropped; json_mode has no switch either (the
 * engine checks the answer).
 *
 * Errors are classified by error.type first, the status second:
 *   rate_limit_error (429)            -> rate_limited, with retry-after
 *   ... with details.error_code
 *       enforced_spend_limit_reached,
 *   billing_error (402)               -> quota (never retried)
 *   overloaded_error (529), api_error
 *       (500), 408, 409, other 5xx    -> upstream
 *   invalid_request_error, authentication_error, permission_error,
 *   not_found_error, request_too_large, other 4xx -> invalid_request
 * A 2xx that is not JSON or has no content[] is upstream (transient, as
 * far as we can tell); stop_reason "refusal" is invalid_output. The
 * anthropic-ratelimit-*-reset headers are timestamps, which decode cannot
 * turn into a wait without a clock, so only retry-after(-ms) is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"
#include "loom/plugin.h"
#include "plugins/http_common.h"

#define PROV "anthropic"

typedef struct anthropic_state {
    char *base;                  /* owned; no trailing slash */
    char *model;                 /* owned; NULL: the request must name one */
    char *key;                   /* owned secret */
    char *version;               /* owned: the anthropic-version header */
    json_int_t max_tokens;       /* used when the call gives none */
} anthropic_state;

static void anthropic_fini(void *state)
{
    anthropic_state *st = state;

    if (!st)
        return;
    free(st->base);
    free(st->model);
    loom_hc_secret_free(st->key);
    free(st->version);
    free(st);
}

static int anthropic_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    anthropic_state *st = NULL;
    const char *base, *model, *env, *file, *version;
    json_t *mt = json_object_get(config, "max_tokens");

    if (config && !json_is_object(config)) {
        loom_error(ctx, LOOM_E_CONFIG, PROV ": the config must be a mapping");
        return -1;
    }
    if (loom_hc_config_string(ctx, PROV, config, "base_url", "https://api.anthropic.com/v1",
                              &base) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "model", NULL, &model) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "api_key_env", "ANTHROPIC_API_KEY", &env) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "api_key_file", NULL, &file) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "version", "2023-06-01", &version) < 0)
        return -1;
    if (mt && !json_is_null(mt) && (!json_is_integer(mt) || json_integer_value(mt) <= 0)) {
        loom_error(ctx, LOOM_E_CONFIG, PROV ": max_tokens must be a positive integer");
        return -1;
    }
    st = calloc(1, sizeof *st);
    if (!st)
        goto nomem;
    st->max_tokens = json_is_integer(mt) ? json_integer_value(mt) : 1024;
    if (!(st->base = loom_hc_base_url(ctx, PROV, base)))
        goto fail;
    if ((model && !(st->model = strdup(model))) || !(st->version = strdup(version)))
        goto nomem;
    if (loom_hc_read_key(ctx, PROV, env, file, &st->key) < 0)
        goto fail;
    if (!st->key) {
        loom_error(ctx, LOOM_E_CONFIG, PROV ": no API key (set %s or api_key_file)",
                   env ? env : "api_key_env");
        goto fail;
    }
    *state = st;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    anthropic_fini(st);
    return -1;
}

/* ---- encode */

/* Splits MESSAGES into BODY's "system" (system texts joined by blank lines)
 * and "messages" (the user and assistant turns, content as given). 0, -1
 * after loom_error. */
static int put_messages(loom_ctx *ctx, json_t *messages, json_t *body)
{
    json_t *turns = json_array(), *m;
    char *system = NULL;
    size_t len = 0, i;

    if (!turns)
        goto nomem;
    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (role && strcmp(role, "system") == 0) {
            int bad;
            char *text = loom_hc_content_text(content, &bad), *grown;
            size_t n;

            if (!text) {
                if (!bad)
                    goto nomem;
                loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": messages[%zu]: bad content", i);
                goto fail;
            }
            n = strlen(text);
            grown = realloc(system, len + n + 3);
            if (!grown) {
                free(text);
                goto nomem;
            }
            system = grown;
            if (len > 0) {
                memcpy(system + len, "\n\n", 2);
                len += 2;
            }
            memcpy(system + len, text, n + 1);
            len += n;
            free(text);
        } else if (role && (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0) &&
                   (json_is_string(content) || json_is_array(content))) {
            if (json_array_append_new(turns, json_pack("{s:s,s:O}", "role", role, "content",
                                                       content)) < 0)
                goto nomem;
        } else {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": messages[%zu]: role must be system, user or assistant, with "
                            "content", i);
            goto fail;
        }
    }
    if (json_array_size(turns) == 0) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": no user or assistant message");
        goto fail;
    }
    if (system && json_object_set_new(body, "system", json_string(system)) < 0)
        goto nomem;
    if (json_object_set_new(body, "messages", turns) < 0) {
        turns = NULL; /* set_new consumed it even on failure */
        goto nomem;
    }
    free(system);
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    free(system);
    json_decref(turns);
    return -1;
}

/* The chat parameters the Messages API knows, type-checked. 0 or -1. */
static int put_params(loom_ctx *ctx, anthropic_state *st, json_t *params, json_t *body)
{
    static const char *const numbers[] = { "temperature", "top_p" };
    json_t *v;

    if (params && !json_is_null(params) && !json_is_object(params)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": params must be a mapping");
        return -1;
    }
    for (size_t i = 0; i < 2; i++) {
        if (!(v = json_object_get(params, numbers[i])) || json_is_null(v))
            continue;
        if (!json_is_number(v)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": %s must be a number", numbers[i]);
            return -1;
        }
        if (json_object_set(body, numbers[i], v) < 0)
            goto nomem;
    }
    v = json_object_get(params, "max_tokens");
    if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) <= 0)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": max_tokens must be a positive integer");
        return -1;
    }
    if (json_object_set_new(body, "max_tokens",
                            json_integer(json_is_integer(v) ? json_integer_value(v)
                                                            : st->max_tokens)) < 0)
        goto nomem;
    if ((v = json_object_get(params, "stop")) && !json_is_null(v)) {
        json_t *one, *list = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
        size_t i;
        int ok = json_is_array(list);

        json_array_foreach(list, i, one) ok = ok && json_is_string(one);
        if (!ok) {
            json_decref(list);
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": stop must be a string or strings");
            return -1;
        }
        if (json_object_set_new(body, "stop_sequences", list) < 0)
            goto nomem;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

static int anthropic_encode(loom_ctx *ctx, void *state, const loom_request *req,
                            loom_http_request *out)
{
    anthropic_state *st = state;
    const char *model = req->model && *req->model ? req->model : st->model;
    json_t *body = NULL;

    if (req->kind != LOOM_CALL_CHAT) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": embeddings are not supported");
        return -1;
    }
    if (!model) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": no model (set the provider's model)");
        return -1;
    }
    if (!(body = json_object()) || json_object_set_new(body, "model", json_string(model)) < 0)
        goto nomem;
    if (put_messages(ctx, req->messages, body) < 0 || put_params(ctx, st, req->params, body) < 0)
        goto fail;
    if (loom_hc_set_post(out, st->base, "/messages", body) < 0 ||
        loom_hc_add_header(out, "content-type", "application/json") < 0 ||
        loom_hc_add_header(out, "x-api-key", st->key) < 0 ||
        loom_hc_add_header(out, "anthropic-version", st->version) < 0)
        goto nomem;
    json_decref(body);
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    json_decref(body);
    loom_hc_request_clear(out);
    return -1;
}

/* ---- decode */

static int type_is(const char *type, const char *const *set, size_t n)
{
    for (size_t i = 0; type && i < n; i++)
        if (strcmp(type, set[i]) == 0)
            return 1;
    return 0;
}

/* A failed call: classify, quote the server, pass on its wait. Always -1.
 * BODY (borrowed) may be NULL: a proxy's HTML page, say. */
static int fail_error(loom_ctx *ctx, anthropic_state *st, const loom_http_response *resp,
                      json_t *body)
{
    static const char *const transient[] = { "overloaded_error", "api_error", "timeout_error" };
    static const char *const refused[] = {
        "invalid_request_error", "authentication_error", "permission_error",
        "not_found_error", "request_too_large",
    };
    json_t *err = json_object_get(body, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *detail = json_string_value(
        json_object_get(json_object_get(err, "details"), "error_code"));
    int status = resp->status;
    int64_t wait = loom_hc_retry_after_ms(resp);
    char quoted[LOOM_HC_MSG_MAX + 1];
    loom_errcode ec;
    const char *what;

    if (!msg)
        msg = body ? "" : "(body is not JSON)";
    loom_hc_server_message(quoted, sizeof quoted, msg, st->key);
    if (status == 402 || (type && strcmp(type, "billing_error") == 0) ||
        (detail && strcmp(detail, "enforced_spend_limit_reached") == 0)) {
        ec = LOOM_E_QUOTA, what = "quota exhausted";
    } else if ((type && strcmp(type, "rate_limit_error") == 0) || status == 429) {
        ec = LOOM_E_RATE_LIMITED, what = "rate limited";
    } else if (type_is(type, transient, 3)) {
        ec = LOOM_E_UPSTREAM, what = "server error";
    } else if (type_is(type, refused, 5)) {
        ec = LOOM_E_INVALID_REQUEST, what = "request refused";
    } else if (status == 408 || status == 409 || status >= 500 || status < 300) {
        /* < 300: an error body with a success status is the server's fault */
        ec = LOOM_E_UPSTREAM, what = "server error";
    } else {
        ec = LOOM_E_INVALID_REQUEST, what = "request refused";
    }
    if (wait >= 0 && (ec == LOOM_E_RATE_LIMITED || ec == LOOM_E_UPSTREAM))
        ctx->api->retry_after(ctx, (uint64_t)wait);
    loom_error(ctx, ec, PROV ": %s (HTTP %d %s): %s", what, status, type ? type : "-", quoted);
    return -1;
}

static int anthropic_decode(loom_ctx *ctx, void *state, const loom_request *req,
                            const loom_http_response *resp, loom_result *out)
{
    anthropic_state *st = state;
    json_t *body = loom_hc_parse_body(resp), *content, *usage, *block;
    const char *stop;
    char *text = NULL;
    size_t len = 0, i;

    out->output = NULL;
    out->usage.input_tokens = out->usage.output_tokens = -1;
    if (resp->status < 200 || resp->status > 299 ||
        (json_is_object(body) && json_object_get(body, "error"))) {
        fail_error(ctx, st, resp, body);
        goto fail;
    }
    content = json_object_get(body, "content");
    if (!json_is_array(content)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d without a content list%s", resp->status,
                   body ? "" : " (body is not JSON)");
        goto fail;
    }
    stop = json_string_value(json_object_get(body, "stop_reason"));
    if (stop && strcmp(stop, "refusal") == 0) {
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": the model refused to answer");
        goto fail;
    }
    if (!(text = calloc(1, 1)))
        goto nomem;
    /* text blocks only: thinking and tool blocks are not the answer */
    json_array_foreach(content, i, block) {
        json_t *t = json_object_get(block, "text");
        const char *type = json_string_value(json_object_get(block, "type"));
        size_t n;
        char *grown;

        if (!type || strcmp(type, "text") != 0 || !json_is_string(t))
            continue;
        n = json_string_length(t);
        if (!(grown = realloc(text, len + n + 1)))
            goto nomem;
        text = grown;
        memcpy(text + len, json_string_value(t), n);
        len += n;
        text[len] = '\0';
    }
    if (!(out->output = json_stringn(text, len))) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": answer text is not valid UTF-8");
        goto fail;
    }
    usage = json_object_get(body, "usage");
    out->usage.input_tokens = loom_hc_usage_field(usage, "input_tokens");
    out->usage.output_tokens = loom_hc_usage_field(usage, "output_tokens");
    free(text);
    json_decref(body);
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    free(text);
    json_decref(body);
    return -1;
}

/* ---- the descriptor */

static const loom_option anthropic_options[] = {
    { "base_url", LOOM_OPT_STRING, "https://api.anthropic.com/v1", 0,
      "API root; /messages is appended" },
    { "model", LOOM_OPT_STRING, NULL, 0, "model used when a call names none" },
    { "api_key_env", LOOM_OPT_STRING, "ANTHROPIC_API_KEY", 0,
      "environment variable holding the API key" },
    { "api_key_file", LOOM_OPT_STRING, NULL, 0, "file whose first line is the API key" },
    { "version", LOOM_OPT_STRING, "2023-06-01", 0, "the anthropic-version header" },
    { "max_tokens", LOOM_OPT_INT, "1024", 0,
      "answer length limit when a call sets none (the API requires one)" },
    { 0 }
};

static const loom_provider anthropic_providers[] = { {
    .name = "anthropic",
    .options = anthropic_options,
    .init = anthropic_init,
    .fini = anthropic_fini,
    .encode = anthropic_encode,
    .decode = anthropic_decode,
    .max_batch = 0,
    .summary = "Anthropic Messages API (chat only) over HTTP",
} };

static const loom_plugin anthropic_plugin = {
    .abi_major = LOOM_ABI_MAJOR,
    .abi_minor = LOOM_ABI_MINOR,
    .name = "anthropic",
    .version = "1.0.0",
    .description = "provider for Anthropic's Messages API",
    .providers = anthropic_providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(anthropic)
{
    return &anthropic_plugin;
}
