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

/* Read by init (loom_hc_conf_init follows these defaults) and shown by the
 * host. */
static const loom_option openai_options[] = {
    LOOM_HC_OPTIONS("https://api.openai.com/v1",
                    "API root; /chat/completions and /embeddings are appended",
                    "OPENAI_API_KEY",
                    "environment variable holding the API key (unset: no Authorization header)"),
    { "organization", LOOM_OPT_STRING, NULL, 0, "sent as the OpenAI-Organization header" },
    { 0 }
};

/* The chat parameters OpenAI knows, under their own names. */
static const loom_hc_param openai_params[] = {
    { "temperature", "temperature", LOOM_HC_NUMBER },
    { "top_p", "top_p", LOOM_HC_NUMBER },
    { "max_tokens", "max_tokens", LOOM_HC_POSITIVE },
    { "seed", "seed", LOOM_HC_INTEGER },
    { "stop", "stop", LOOM_HC_STRINGS },
    { 0 }
};

typedef struct openai_state {
    loom_hc_conf conf;           /* owned; the key may be NULL: local servers need none */
    char *org;                   /* owned, or NULL */
} openai_state;

static void openai_fini(void *state)
{
    openai_state *st = state;

    if (!st)
        return;
    loom_hc_conf_fini(&st->conf);
    free(st->org);
    free(st);
}

static int openai_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    openai_state *st = calloc(1, sizeof *st);

    if (!st) {
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    if (loom_hc_conf_init(ctx, PROV, openai_options, config, "no Authorization header",
                          &st->conf) < 0 ||
        loom_hc_option_string(ctx, PROV, openai_options, config, "organization", &st->org) < 0) {
        openai_fini(st);
        return -1;
    }
    *state = st;
    return 0;
}

/* ---- encode */

/* Adds "authorization: Bearer KEY" (KEY borrowed) to OUT; the copy made is
 * wiped. 0, or -1 when out of memory. */
static int add_bearer(loom_http_request *out, const char *key)
{
    size_t n = strlen(key) + sizeof "Bearer ";
    char *auth = malloc(n);
    int rc;

    if (!auth)
        return -1;
    snprintf(auth, n, "Bearer %s", key);
    rc = loom_hc_add_header(out, "authorization", auth);
    loom_hc_secret_free(auth);
    return rc;
}

static int openai_encode(loom_ctx *ctx, void *state, const loom_request *req,
                         loom_http_request *out)
{
    openai_state *st = state;
    const char *path;
    json_t *body = loom_hc_body_new(ctx, PROV, &st->conf, req);

    if (!body)
        return -1;
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
        if (loom_hc_put_params(ctx, PROV, openai_params, req->params, NULL, body) < 0)
            goto fail;
        if (req->json_mode &&
            json_object_set_new(body, "response_format", json_pack("{s:s}", "type",
                                                                   "json_object")) < 0)
            goto nomem;
        /* include_usage: the last chunk carries the usage a whole answer
         * has, so a streamed call counts the same tokens */
        if (req->stream &&
            (json_object_set_new(body, "stream", json_true()) < 0 ||
             json_object_set_new(body, "stream_options",
                                 json_pack("{s:b}", "include_usage", 1)) < 0))
            goto nomem;
        path = "/chat/completions";
    }
    if (loom_hc_set_post(out, st->conf.base, path, body) < 0 ||
        (st->conf.key && add_bearer(out, st->conf.key) < 0) ||
        (st->org && loom_hc_add_header(out, "openai-organization", st->org) < 0))
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

/* The error codes that mean the money ran out, not the rate. */
static const char *const openai_quota_codes[] = {
    "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded", "organization_usage_limit_exceeded", "billing_error", NULL,
};

/* A failed call reported with STATUS: classify, quote the server, pass on
 * its wait. Always -1. BODY (borrowed, may be NULL) is the parsed answer.
 * RESP is NULL for an error inside a stream. Servers differ in where they
 * put the error: OpenAI
 * {"error":{type,code,message}}, vLLM {"object":"error",type,code,message},
 * Ollama {"error":"text"}. */
static int fail_status(loom_ctx *ctx, openai_state *st, const loom_http_response *resp,
                       int status, json_t *body)
{
    json_t *err = json_object_get(body, "error");
    json_t *where = json_is_object(err) ? err : body;
    const char *type = json_string_value(json_object_get(where, "type"));
    const char *code = json_string_value(json_object_get(where, "code"));
    loom_hc_error e = {
        .status = status,
        .label = code ? code : type,
        .message = json_is_string(err) ? json_string_value(err)
                                       : json_string_value(json_object_get(where, "message")),
        .parsed = body != NULL,
    };

    /* the money ran out: said with a 429, or inside a stream */
    if ((status == 429 || !resp) && (loom_hc_is_one_of(type, openai_quota_codes) ||
                          loom_hc_is_one_of(code, openai_quota_codes)))
        e.code = LOOM_E_QUOTA;
    /* RESP NULL: an error inside a stream, with no headers of its own */
    return resp ? loom_hc_fail(ctx, PROV, resp, &e, st->conf.key)
                : loom_hc_stream_fail(ctx, PROV, &e, st->conf.key);
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
        loom_hc_server_message(quoted, sizeof quoted, refusal, st->conf.key);
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
    if (finish)
        snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);
    return 0;
}

/* data[] placed by its index; every input must get exactly one vector. The
 * answer starts as N nulls, so a null left over is an index given twice. */
static int decode_embed(loom_ctx *ctx, const loom_request *req, json_t *body, loom_result *out)
{
    json_t *data = json_object_get(body, "data");
    size_t n = json_array_size(req->inputs), i;
    json_t *one, *vecs = NULL;

    if (!json_is_array(data) || json_array_size(data) != n) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": %zu embeddings for %zu inputs",
                   json_array_size(data), n);
        return -1;
    }
    if (!(vecs = json_array()))
        goto nomem;
    for (i = 0; i < n; i++)
        if (json_array_append_new(vecs, json_null()) < 0)
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
        if (at < 0 || (size_t)at >= n || !json_is_null(json_array_get(vecs, at)) || !ok) {
            loom_error(ctx, LOOM_E_UPSTREAM, PROV ": malformed embedding at data[%zu]", i);
            goto fail;
        }
        if (json_array_set(vecs, at, vec) < 0)
            goto nomem;
    }
    out->output = vecs;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    json_decref(vecs);
    return -1;
}

static int openai_decode(loom_ctx *ctx, void *state, const loom_request *req,
                         const loom_http_response *resp, loom_result *out)
{
    openai_state *st = state;
    json_t *body = loom_hc_decode_start(resp, out);
    int rc = -1;

    if (resp->status < 200 || resp->status > 299) {
        fail_status(ctx, st, resp, resp->status, body);
    } else if (!json_is_object(body)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d with a body that is not a JSON object",
                   resp->status);
    } else if (json_object_get(body, "error") && !json_object_get(body, "choices") &&
               !json_object_get(body, "data")) {
        /* an error reported with a success status, as some proxies do:
         * reported as the bad gateway it is */
        fail_status(ctx, st, resp, 502, body);
    } else {
        rc = req->kind == LOOM_CALL_EMBED ? decode_embed(ctx, req, body, out)
                                          : decode_chat(ctx, st, body, out);
        if (rc == 0) {
            loom_hc_usage(body, "prompt_tokens", "completion_tokens", &out->usage);
            loom_hc_usage_cache_openai(json_object_get(body, "usage"), &out->usage);
        }
    }
    json_decref(body);
    return rc;
}

/* ---- streaming
 *
 * Each event's data is a chat.completion.chunk: choices[0].delta.content is
 * the next text, choices[0].finish_reason comes with the last choice chunk,
 * and with stream_options.include_usage one more chunk with no choices
 * carries the usage; "[DONE]" ends the stream. An error mid-stream comes as
 * {"error": {...}} in place of a chunk. The checks of decode_chat apply to
 * each chunk: a refusal or the content filter fails the call. */
static int openai_stream(loom_ctx *ctx, void *state, const loom_request *req,
                         const loom_sse_event *ev, loom_stream_delta *out)
{
    openai_state *st = state;
    json_t *chunk, *choice, *delta, *content;
    const char *finish, *refusal;
    char quoted[LOOM_HC_MSG_MAX + 1];
    int rc = -1;

    (void)req;
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        out->done = 1;
        return 0;
    }
    if (!(chunk = loom_hc_stream_json(ctx, PROV, ev)))
        return -1;
    if (json_object_get(chunk, "error") && !json_object_get(chunk, "choices")) {
        /* classed as the bad gateway an error after a 200 is */
        fail_status(ctx, st, NULL, 502, chunk);
        goto done;
    }
    choice = json_array_get(json_object_get(chunk, "choices"), 0);
    delta = json_object_get(choice, "delta");
    finish = json_string_value(json_object_get(choice, "finish_reason"));
    refusal = json_string_value(json_object_get(delta, "refusal"));
    content = json_object_get(delta, "content");
    if (refusal) {
        loom_hc_server_message(quoted, sizeof quoted, refusal, st->conf.key);
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": the model refused: %s", quoted);
        goto done;
    }
    if (finish && strcmp(finish, "content_filter") == 0) {
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": answer withheld by the content filter");
        goto done;
    }
    if (json_is_string(content) && json_string_length(content) > 0)
        out->text = json_incref(content);
    if (finish)
        snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);
    if (json_is_object(json_object_get(chunk, "usage"))) {
        loom_hc_usage(chunk, "prompt_tokens", "completion_tokens", &out->usage);
        loom_hc_usage_cache_openai(json_object_get(chunk, "usage"), &out->usage);
    }
    rc = 0;
done:
    json_decref(chunk);
    return rc;
}

/* ---- the descriptor */

static const loom_provider openai_providers[] = { {
    .name = "openai",
    .options = openai_options,
    .init = openai_init,
    .fini = openai_fini,
    .encode = openai_encode,
    .decode = openai_decode,
    .max_batch = OPENAI_MAX_BATCH,
    .summary = "OpenAI-compatible chat completions and embeddings over HTTP",
    .stream = openai_stream,
} };

static const loom_plugin openai_plugin = {
    LOOM_PLUGIN_HEADER,
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
