/* openai.c -- the provider for OpenAI-compatible HTTP APIs.
 *
 * Speaks /chat/completions and /embeddings as OpenAI, vLLM, the llama.cpp
 * server and Ollama implement them. It only encodes and decodes: the host
 * does the I/O, so every function here is pure and any thread may call it.
 *
 * The API key is read once at init (from api_key_file, else the variable
 * named by api_key_env), kept in the instance state, and leaves it only as
 * the Authorization header value. Without a key no Authorization header is
 * sent, since local servers need none. Server error messages quoted in our
 * errors are cut to 200 characters and have the key redacted.
 *
 * How answers are classified (status, then error.type / error.code):
 *   2xx, well-formed            -> the output and usage (-1 when not given)
 *   2xx, finish_reason
 *        content_filter/refusal -> invalid_output: the model answered, not
 *                                  with what was asked; retrying rarely helps
 *   2xx, not JSON, no choices,
 *        wrong data count       -> upstream: the server (or a proxy in front
 *                                  of it) misbehaved on a request it accepted,
 *                                  which is transient as far as we can tell
 *   429 insufficient_quota and
 *        the spend-limit codes  -> quota (never retried)
 *   429 otherwise               -> rate_limited, with the server's wait
 *   402                         -> quota
 *   408, 409, 5xx               -> upstream (with the server's wait, if any)
 *   other 3xx/4xx               -> invalid_request (never retried) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "openai.h"
#include "plugins/http_common.h"

#define PROV "openai"

/* OpenAI documents at most 2048 inputs per embeddings request. */
#define OPENAI_MAX_BATCH 2048

typedef struct openai_state {
    char *base;                  /* owned; no trailing slash */
    char *model;                 /* owned; NULL: the request must name one */
    char *key;                   /* owned secret, or NULL */
    char *org;                   /* owned, or NULL */
} openai_state;

static void openai_fini(void *state)
{
    openai_state *st = state;

    if (!st)
        return;
    free(st->base);
    free(st->model);
    loom_hc_secret_free(st->key);
    free(st->org);
    free(st);
}

static int openai_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    openai_state *st = NULL;
    const char *base, *model, *env, *file, *org;

    if (config && !json_is_object(config)) {
        loom_error(ctx, LOOM_E_CONFIG, PROV ": the config must be a mapping");
        return -1;
    }
    if (loom_hc_config_string(ctx, PROV, config, "base_url", "https://api.openai.com/v1",
                              &base) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "model", NULL, &model) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "api_key_env", "OPENAI_API_KEY", &env) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "api_key_file", NULL, &file) < 0 ||
        loom_hc_config_string(ctx, PROV, config, "organization", NULL, &org) < 0)
        return -1;
    st = calloc(1, sizeof *st);
    if (!st)
        goto nomem;
    if (!(st->base = loom_hc_base_url(ctx, PROV, base)))
        goto fail;
    if ((model && !(st->model = strdup(model))) || (org && !(st->org = strdup(org))))
        goto nomem;
    if (loom_hc_read_key(ctx, PROV, env, file, &st->key) < 0)
        goto fail;
    if (!st->key)
        loom_log(ctx, LOOM_LOG_INFO, PROV ": no API key (%s unset): no Authorization header",
                 env ? env : "api_key_env");
    *state = st;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    openai_fini(st);
    return -1;
}

/* ---- encode */

/* Copies the chat parameters OpenAI knows from PARAMS into BODY, checking
 * their types. 0, -1 after loom_error. */
static int put_params(loom_ctx *ctx, json_t *params, json_t *body)
{
    json_t *v;

    if (params && !json_is_null(params) && !json_is_object(params)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": params must be a mapping");
        return -1;
    }
    if ((v = json_object_get(params, "temperature")) && !json_is_null(v)) {
        if (!json_is_number(v))
            goto bad_number;
        if (json_object_set(body, "temperature", v) < 0)
            goto nomem;
    }
    if ((v = json_object_get(params, "top_p")) && !json_is_null(v)) {
        if (!json_is_number(v))
            goto bad_number;
        if (json_object_set(body, "top_p", v) < 0)
            goto nomem;
    }
    if ((v = json_object_get(params, "max_tokens")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": max_tokens must be a positive integer");
            return -1;
        }
        if (json_object_set(body, "max_tokens", v) < 0)
            goto nomem;
    }
    if ((v = json_object_get(params, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": seed must be an integer");
            return -1;
        }
        if (json_object_set(body, "seed", v) < 0)
            goto nomem;
    }
    if ((v = json_object_get(params, "stop")) && !json_is_null(v)) {
        json_t *one;
        size_t i;
        int ok = json_is_string(v) || json_is_array(v);

        json_array_foreach(v, i, one) ok = ok && json_is_string(one);
        if (!ok) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": stop must be a string or strings");
            return -1;
        }
        if (json_object_set(body, "stop", v) < 0)
            goto nomem;
    }
    return 0;
bad_number:
    loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": temperature and top_p must be numbers");
    return -1;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

static int openai_encode(loom_ctx *ctx, void *state, const loom_request *req,
                         loom_http_request *out)
{
    openai_state *st = state;
    const char *model = req->model && *req->model ? req->model : st->model;
    const char *path;
    json_t *body = json_object();
    char *auth = NULL;

    if (!body)
        goto nomem;
    if (!model) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": no model (set the provider's model)");
        goto fail;
    }
    if (json_object_set_new(body, "model", json_string(model)) < 0)
        goto nomem;
    if (req->kind == LOOM_CALL_EMBED) {
        json_t *one;
        size_t i;
        int ok = json_array_size(req->inputs) > 0;

        json_array_foreach(req->inputs, i, one) ok = ok && json_is_string(one);
        if (!ok) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": embedding inputs must be a non-empty list of strings");
            goto fail;
        }
        /* borrowed, and only read while the body is serialised below */
        if (json_object_set(body, "input", req->inputs) < 0)
            goto nomem;
        path = "/embeddings";
    } else {
        if (json_array_size(req->messages) == 0) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": messages must be a non-empty list");
            goto fail;
        }
        if (json_object_set(body, "messages", req->messages) < 0)
            goto nomem;
        if (put_params(ctx, req->params, body) < 0)
            goto fail;
        if (req->json_mode &&
            json_object_set_new(body, "response_format", json_pack("{s:s}", "type",
                                                                   "json_object")) < 0)
            goto nomem;
        path = "/chat/completions";
    }
    if (loom_hc_set_post(out, st->base, path, body) < 0 ||
        loom_hc_add_header(out, "content-type", "application/json") < 0)
        goto nomem;
    if (st->key) {
        size_t n = strlen(st->key) + sizeof "Bearer ";
        if (!(auth = malloc(n)))
            goto nomem;
        snprintf(auth, n, "Bearer %s", st->key);
        if (loom_hc_add_header(out, "authorization", auth) < 0)
            goto nomem;
    }
    if (st->org && loom_hc_add_header(out, "openai-organization", st->org) < 0)
        goto nomem;
    loom_hc_secret_free(auth);
    json_decref(body);
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    loom_hc_secret_free(auth);
    json_decref(body);
    loom_hc_request_clear(out);
    return -1;
}

/* ---- decode */

static int is_quota_signal(const char *s)
{
    static const char *const quota[] = {
        "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded", "organization_usage_limit_exceeded", "billing_error",
    };
    for (size_t i = 0; s && i < sizeof quota / sizeof quota[0]; i++)
        if (strcmp(s, quota[i]) == 0)
            return 1;
    return 0;
}

/* A failed status: classify, quote the server, pass on its wait. Always -1.
 * BODY (borrowed, may be NULL) is the parsed answer. Servers differ in
 * where they put the error: OpenAI {"error":{type,code,message}}, vLLM
 * {"object":"error",type,code,message}, Ollama {"error":"text"}. */
static int fail_status(loom_ctx *ctx, openai_state *st, const loom_http_response *resp,
                       json_t *body)
{
    json_t *err = json_object_get(body, "error");
    json_t *where = json_is_object(err) ? err : body;
    const char *type = json_string_value(json_object_get(where, "type"));
    const char *code = json_string_value(json_object_get(where, "code"));
    const char *msg = json_is_string(err) ? json_string_value(err)
                                          : json_string_value(json_object_get(where, "message"));
    const char *label = code ? code : type ? type : "-";
    int status = resp->status;
    int64_t wait = loom_hc_retry_after_ms(resp);
    loom_errcode ec;
    const char *what;
    char quoted[LOOM_HC_MSG_MAX + 1];

    if (!msg)
        msg = body ? "" : "(body is not JSON)";
    loom_hc_server_message(quoted, sizeof quoted, msg, st->key);
    if (status == 402 || (status == 429 && (is_quota_signal(type) || is_quota_signal(code)))) {
        ec = LOOM_E_QUOTA, what = "quota exhausted";
    } else if (status == 429) {
        ec = LOOM_E_RATE_LIMITED, what = "rate limited";
    } else if (status == 408 || status == 409 || status >= 500 || status < 100) {
        ec = LOOM_E_UPSTREAM, what = "server error";
    } else {
        ec = LOOM_E_INVALID_REQUEST, what = "request refused";
    }
    if (wait >= 0 && (ec == LOOM_E_RATE_LIMITED || ec == LOOM_E_UPSTREAM))
        ctx->api->retry_after(ctx, (uint64_t)wait);
    loom_error(ctx, ec, PROV ": %s (HTTP %d %s): %s", what, status, label, quoted);
    return -1;
}

static int decode_chat(loom_ctx *ctx, openai_state *st, json_t *body, loom_result *out)
{
    json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
    json_t *message = json_object_get(choice, "message");
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    const char *refusal = json_string_value(json_object_get(message, "refusal"));
    char quoted[LOOM_HC_MSG_MAX + 1];
    char *text;
    int bad;

    if (!json_is_object(message)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": answer without choices[0].message");
        return -1;
    }
    if (refusal) {
        loom_hc_server_message(quoted, sizeof quoted, refusal, st->key);
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": the model refused: %s", quoted);
        return -1;
    }
    if (finish && strcmp(finish, "content_filter") == 0) {
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": answer withheld by the content filter");
        return -1;
    }
    text = loom_hc_content_text(json_object_get(message, "content"), &bad);
    if (!text) {
        if (bad)
            loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": answer without text content");
        else
            loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    out->output = json_string(text);
    free(text);
    if (!out->output) {
        /* json_string refuses invalid UTF-8 as well as failing to allocate */
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": answer text is not valid UTF-8");
        return -1;
    }
    return 0;
}

/* data[] placed by its index; every input must get exactly one vector. */
static int decode_embed(loom_ctx *ctx, const loom_request *req, json_t *body, loom_result *out)
{
    json_t *data = json_object_get(body, "data");
    size_t n = json_array_size(req->inputs), i;
    json_t *one, *vecs = NULL, **slot = NULL;

    if (!json_is_array(data) || json_array_size(data) != n) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": %zu embeddings for %zu inputs",
                   json_array_size(data), n);
        return -1;
    }
    slot = calloc(n ? n : 1, sizeof *slot);
    vecs = json_array();
    if (!slot || !vecs)
        goto nomem;
    json_array_foreach(data, i, one) {
        json_t *index = json_object_get(one, "index");
        json_t *vec = json_object_get(one, "embedding");
        json_int_t at = index ? (json_is_integer(index) ? json_integer_value(index) : -1)
                              : (json_int_t)i;
        json_t *x;
        size_t k;
        int ok = json_array_size(vec) > 0;

        json_array_foreach(vec, k, x) ok = ok && json_is_number(x);
        if (at < 0 || (size_t)at >= n || slot[at] || !ok) {
            loom_error(ctx, LOOM_E_UPSTREAM, PROV ": malformed embedding at data[%zu]", i);
            goto fail;
        }
        slot[at] = vec;
    }
    for (i = 0; i < n; i++)
        if (json_array_append(vecs, slot[i]) < 0)
            goto nomem;
    free(slot);
    out->output = vecs;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    free(slot);
    json_decref(vecs);
    return -1;
}

static int openai_decode(loom_ctx *ctx, void *state, const loom_request *req,
                         const loom_http_response *resp, loom_result *out)
{
    openai_state *st = state;
    json_t *body = loom_hc_parse_body(resp);
    json_t *usage;
    int rc;

    out->output = NULL;
    out->usage.input_tokens = out->usage.output_tokens = -1;
    if (resp->status < 200 || resp->status > 299) {
        fail_status(ctx, st, resp, body);
        json_decref(body);
        return -1;
    }
    if (!json_is_object(body)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d with a body that is not a JSON object",
                   resp->status);
        json_decref(body);
        return -1;
    }
    if (json_object_get(body, "error") && !json_object_get(body, "choices") &&
        !json_object_get(body, "data")) {
        /* an error reported with a success status, as some proxies do */
        loom_http_response as_error = *resp;
        as_error.status = 502;
        fail_status(ctx, st, &as_error, body);
        json_decref(body);
        return -1;
    }
    rc = req->kind == LOOM_CALL_EMBED ? decode_embed(ctx, req, body, out)
                                      : decode_chat(ctx, st, body, out);
    if (rc == 0) {
        usage = json_object_get(body, "usage");
        out->usage.input_tokens = loom_hc_usage_field(usage, "prompt_tokens");
        out->usage.output_tokens = loom_hc_usage_field(usage, "completion_tokens");
    }
    json_decref(body);
    return rc;
}

/* ---- the descriptor */

static const loom_option openai_options[] = {
    { "base_url", LOOM_OPT_STRING, "https://api.openai.com/v1", 0,
      "API root; /chat/completions and /embeddings are appended" },
    { "model", LOOM_OPT_STRING, NULL, 0, "model used when a call names none" },
    { "api_key_env", LOOM_OPT_STRING, "OPENAI_API_KEY", 0,
      "environment variable holding the API key (unset: no Authorization header)" },
    { "api_key_file", LOOM_OPT_STRING, NULL, 0, "file whose first line is the API key" },
    { "organization", LOOM_OPT_STRING, NULL, 0, "sent as the OpenAI-Organization header" },
    { 0 }
};

static const loom_provider openai_providers[] = { {
    .name = "openai",
    .options = openai_options,
    .init = openai_init,
    .fini = openai_fini,
    .encode = openai_encode,
    .decode = openai_decode,
    .max_batch = OPENAI_MAX_BATCH,
    .summary = "OpenAI-compatible chat completions and embeddings over HTTP",
} };

static const loom_plugin openai_plugin = {
    .abi_major = LOOM_ABI_MAJOR,
    .abi_minor = LOOM_ABI_MINOR,
    .name = "openai",
    .version = "1.0.0",
    .description = "provider for OpenAI-compatible APIs (OpenAI, vLLM, llama.cpp, Ollama)",
    .providers = openai_providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(openai)
{
    return &openai_plugin;
}
