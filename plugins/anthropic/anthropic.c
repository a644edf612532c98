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
 * turn into a wait without a clock, so only retry-after(-ms) is used.
 *
 * Tools and structured outputs (ABI 2.3). Tools go as {name, description,
 * input_schema}. The neutral tool turns become content blocks: an
 * assistant turn's calls tool_use blocks (after its text), and tool
 * results tool_result blocks {tool_use_id, content, is_error}, the
 * results of consecutive tool turns merged into one user message, as the
 * API wants every result of a turn in the next message. An answer's
 * tool_use blocks come back as loom_result.tool_calls. A schema is asked
 * for with a forced tool named after it (tool_choice {type: tool}) whose
 * input_schema is the schema: the model answers by calling it, and that
 * call's input, as JSON text, is the output. With tools as well, the
 * choice is {type: any}: the model calls its tools until it answers
 * through the schema's tool. Calls with tools or a schema are never
 * streamed: the answer is in tool_use blocks, which the stream hook
 * cannot hand over.
 *
 * The Message Batches API (ABI 2.4) is in anthropic_batch.c: its lines
 * carry the body encode builds here and its results are read by the
 * decode here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"
#include "anthropic_internal.h"
#include "loom/plugin.h"
#include "plugins/http_common.h"
#include "plugins/http_tools.h"

#define PROV "anthropic"

/* What the model reads about the structured output's tool. */
#define ANTHROPIC_SCHEMA_TOOL_DOC \
    "Give your final answer by calling this tool: its input is the answer."

/* Read by init (loom_hc_conf_init follows these defaults) and shown by the
 * host. */
static const loom_option anthropic_options[] = {
    LOOM_HC_OPTIONS("https://api.anthropic.com/v1", "API root; /messages is appended",
                    "ANTHROPIC_API_KEY", "environment variable holding the API key"),
    { "version", LOOM_OPT_STRING, "2023-06-01", 0, "the anthropic-version header" },
    { "max_tokens", LOOM_OPT_INT, "1024", 0,
      "answer length limit when a call sets none (the API requires one)" },
    { "prompt_cache", LOOM_OPT_BOOL, "false", 0,
      "mark the system prompt cacheable on every call (as `prompt_cache: true` in a workflow)" },
    { 0 }
};

/* The chat parameters the Messages API knows. seed has no equivalent. */
static const loom_hc_param anthropic_params[] = {
    { "temperature", "temperature", LOOM_HC_NUMBER },
    { "top_p", "top_p", LOOM_HC_NUMBER },
    { "max_tokens", "max_tokens", LOOM_HC_POSITIVE },
    { "stop", "stop_sequences", LOOM_HC_STRING_LIST },
    { 0 }
};

static void anthropic_fini(void *state)
{
    anthropic_state *st = state;

    if (!st)
        return;
    loom_hc_conf_fini(&st->conf);
    free(st->version);
    json_decref(st->defaults);
    free(st);
}

static int anthropic_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    anthropic_state *st = calloc(1, sizeof *st);
    json_int_t max_tokens;

    if (!st)
        goto nomem;
    if (loom_hc_conf_init(ctx, PROV, anthropic_options, config, NULL, &st->conf) < 0 ||
        loom_hc_option_string(ctx, PROV, anthropic_options, config, "version",
                              &st->version) < 0 ||
        loom_hc_option_positive(ctx, PROV, anthropic_options, config, "max_tokens",
                                &max_tokens) < 0)
        goto fail;
    if (!(st->defaults = json_pack("{s:I}", "max_tokens", max_tokens)))
        goto nomem;
    st->prompt_cache = loom_hc_option_bool(anthropic_options, config, "prompt_cache");
    *state = st;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    anthropic_fini(st);
    return -1;
}

/* ---- encode */

/* Appends neutral assistant turn M (messages[AT], which calls tools) to
 * TURNS as content blocks: its text, then one tool_use block per call.
 * 0, or -1 after loom_error. */
static int put_calls_turn(loom_ctx *ctx, json_t *m, size_t at, json_t *turns)
{
    json_t *content = json_object_get(m, "content"), *blocks = json_array(), *call;
    size_t k;

    if (!blocks || json_array_append_new(turns, json_pack("{s:s, s:o}", "role", "assistant",
                                                          "content", blocks)) < 0)
        goto nomem;
    if (json_is_string(content) && json_string_length(content) > 0 &&
        json_array_append_new(blocks, json_pack("{s:s, s:O}", "type", "text", "text",
                                                content)) < 0)
        goto nomem;
    json_array_foreach(loom_hc_turn_calls(m), k, call) {
        loom_hc_call c;

        if (loom_hc_call_get(ctx, PROV, call, at, k, &c) < 0)
            return -1;
        if (json_array_append_new(blocks, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use",
                                                    "id", c.id, "name", c.name, "input",
                                                    c.arguments ? json_incref(c.arguments)
                                                                : json_object())) < 0)
            goto nomem;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

/* Appends tool turn M (messages[AT]) to TURNS as a tool_result block: to
 * the user message *OPEN (borrowed from TURNS) when the turn before was a
 * tool turn too, else to a new one that becomes *OPEN. 0, or -1 after
 * loom_error. */
static int put_result(loom_ctx *ctx, json_t *m, size_t at, json_t *turns, json_t **open)
{
    loom_hc_result r;
    json_t *block;

    if (loom_hc_result_get(ctx, PROV, m, at, &r) < 0)
        return -1;
    if (!*open) {
        json_t *blocks = json_array();

        if (!blocks || json_array_append_new(turns, json_pack("{s:s, s:o}", "role", "user",
                                                              "content", blocks)) < 0)
            goto nomem;
        *open = blocks;
    }
    block = json_pack("{s:s, s:s, s:s, s:b}", "type", "tool_result", "tool_use_id",
                      r.tool_call_id, "content", r.content, "is_error", r.is_error);
    if (json_array_append_new(*open, block) < 0)
        goto nomem;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

/* Splits MESSAGES into BODY's "system" (system texts joined by blank lines)
 * and "messages" (the user and assistant turns, content as given; the
 * neutral tool turns as content blocks, see put_calls_turn and
 * put_result). With
 * CACHE, the system prompt is one text block marked cacheable
 * (cache_control: ephemeral): the stable head of every call of a step, so
 * later calls read it from the cache at a fraction of the input price.
 * 0, -1 after loom_error. */
static int put_messages(loom_ctx *ctx, json_t *messages, json_t *body, int cache)
{
    json_t *turns = json_array(), *m, *open = NULL;
    loom_hc_text system = { 0 };
    size_t i;

    if (!turns)
        goto nomem;
    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");

        if (loom_hc_is_tool_turn(m)) {
            if (put_result(ctx, m, i, turns, &open) < 0)
                goto fail;
            continue;
        }
        open = NULL; /* the results of one turn end with the first other message */
        if (loom_hc_turn_calls(m)) {
            if (put_calls_turn(ctx, m, i, turns) < 0)
                goto fail;
        } else if (role && strcmp(role, "system") == 0) {
            int bad;
            char *text = loom_hc_content_text(content, &bad);

            if (!text && bad) {
                loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": messages[%zu]: bad content", i);
                goto fail;
            }
            if (!text || loom_hc_text_add(&system, "\n\n", text, strlen(text)) < 0) {
                free(text);
                goto nomem;
            }
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
    if (system.s &&
        json_object_set_new(body, "system",
                            cache ? json_pack("[{s:s, s:s, s:{s:s}}]", "type", "text", "text",
                                              system.s, "cache_control", "type", "ephemeral")
                                  : json_string(system.s)) < 0)
        goto nomem;
    free(system.s);
    system.s = NULL;
    if (json_object_set_new(body, "messages", turns) < 0) {
        turns = NULL; /* set_new consumed it even on failure */
        goto nomem;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    free(system.s);
    json_decref(turns);
    return -1;
}

/* REQ's tools, and the tool of its schema, into BODY with the tool_choice
 * they need; with CACHE, the last tool is marked cacheable (tools head the
 * prompt, before the system prompt). 0, or -1 after loom_error. */
static int put_tools(loom_ctx *ctx, const loom_request *req, json_t *body, int cache)
{
    json_t *list = json_array(), *wire = NULL, *choice;
    size_t i, n = json_array_size(req->tools);

    if (!list || json_object_set_new(body, "tools", list) < 0)
        goto nomem;
    if (req->tools && (!json_is_array(req->tools) || n == 0)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": tools must be a non-empty list");
        return -1;
    }
    for (i = 0; i < n; i++) {
        loom_hc_tool t;
        json_t *one;

        if (loom_hc_tool_get(ctx, PROV, req->tools, i, &t) < 0)
            return -1;
        if (req->schema && req->schema_name && strcmp(t.name, req->schema_name) == 0) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": tool %s has the name of the structured output", t.name);
            return -1;
        }
        one = t.parameters ? json_pack("{s:s, s:O}", "name", t.name, "input_schema",
                                       t.parameters)
                           : json_pack("{s:s, s:{s:s}}", "name", t.name, "input_schema", "type",
                                       "object");
        if (!one || (t.description &&
                     json_object_set_new(one, "description", json_string(t.description)) < 0) ||
            json_array_append_new(list, one) < 0)
            goto nomem;
    }
    if (req->schema) {
        if (!json_is_object(req->schema) || !loom_hc_tool_name_ok(req->schema_name)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": a structured output needs a schema object and a name matching "
                            "[A-Za-z0-9_-]{1,64}");
            return -1;
        }
        if (!(wire = loom_hc_schema_wire(req->schema)) ||
            json_array_append_new(list, json_pack("{s:s, s:s, s:o}", "name", req->schema_name,
                                                  "description", ANTHROPIC_SCHEMA_TOOL_DOC,
                                                  "input_schema", wire)) < 0)
            goto nomem;
        /* alone, the schema's tool is forced; beside tools, some tool is:
         * the model works with them until it answers through it */
        choice = n == 0 ? json_pack("{s:s, s:s}", "type", "tool", "name", req->schema_name)
                        : json_pack("{s:s}", "type", "any");
        if (!choice || json_object_set_new(body, "tool_choice", choice) < 0)
            goto nomem;
    }
    if (cache && json_object_set_new(json_array_get(list, json_array_size(list) - 1),
                                     "cache_control",
                                     json_pack("{s:s}", "type", "ephemeral")) < 0)
        goto nomem;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

json_t *anthropic_body(loom_ctx *ctx, const anthropic_state *st, const loom_request *req)
{
    json_t *body;

    if (req->kind != LOOM_CALL_CHAT) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": embeddings are not supported");
        return NULL;
    }
    if (!(body = loom_hc_body_new(ctx, PROV, &st->conf, req)))
        return NULL;
    if (put_messages(ctx, req->messages, body, st->prompt_cache || req->prompt_cache) < 0 ||
        loom_hc_put_params(ctx, PROV, anthropic_params, req->params, st->defaults, body) < 0)
        goto fail;
    if ((req->tools || req->schema) &&
        put_tools(ctx, req, body, st->prompt_cache || req->prompt_cache) < 0)
        goto fail;
    /* tool_use blocks do not stream through the hook (see the top) */
    if (req->stream && !req->tools && !req->schema &&
        json_object_set_new(body, "stream", json_true()) < 0) {
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        goto fail;
    }
    return body;
fail:
    json_decref(body);
    return NULL;
}

int anthropic_auth_headers(const anthropic_state *st, loom_http_request *out)
{
    if (loom_hc_add_header(out, "x-api-key", st->conf.key) < 0 ||
        loom_hc_add_header(out, "anthropic-version", st->version) < 0)
        return -1;
    return 0;
}

static int anthropic_encode(loom_ctx *ctx, void *state, const loom_request *req,
                            loom_http_request *out)
{
    anthropic_state *st = state;
    json_t *body = anthropic_body(ctx, st, req);

    if (!body)
        return -1;
    if (loom_hc_set_post(out, st->conf.base, "/messages", body) < 0 ||
        anthropic_auth_headers(st, out) < 0) {
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        json_decref(body);
        loom_hc_request_clear(out);
        return -1;
    }
    json_decref(body);
    return 0;
}

/* ---- decode */

/* Error types by what they mean; the status decides the others. */
static const char *const anthropic_quota_types[] = { "billing_error", NULL };
static const char *const anthropic_rate_types[] = { "rate_limit_error", NULL };
static const char *const anthropic_transient_types[] = {
    "overloaded_error", "api_error", "timeout_error", NULL,
};
static const char *const anthropic_refused_types[] = {
    "invalid_request_error", "authentication_error", "permission_error",
    "not_found_error", "request_too_large", NULL,
};

/* The class of a failure: 402 and the spend limit before any rate limit, a
 * rate limit before what the type says, LOOM_OK when the status decides. */
loom_errcode anthropic_classify(int status, const char *type, const char *detail)
{
    if (status == 402 || loom_hc_is_one_of(type, anthropic_quota_types) ||
        (detail && strcmp(detail, "enforced_spend_limit_reached") == 0))
        return LOOM_E_QUOTA;
    if (status == 429 || loom_hc_is_one_of(type, anthropic_rate_types))
        return LOOM_E_RATE_LIMITED;
    if (loom_hc_is_one_of(type, anthropic_transient_types))
        return LOOM_E_UPSTREAM;
    if (loom_hc_is_one_of(type, anthropic_refused_types))
        return LOOM_E_INVALID_REQUEST;
    return LOOM_OK;
}

/* A failed call: classify, quote the server, pass on its wait. Always -1.
 * BODY (borrowed) may be NULL: a proxy's HTML page, say. */
int anthropic_fail_error(loom_ctx *ctx, const anthropic_state *st,
                         const loom_http_response *resp, json_t *body)
{
    json_t *err = json_object_get(body, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *detail = json_string_value(
        json_object_get(json_object_get(err, "details"), "error_code"));
    loom_hc_error e = {
        .status = resp->status,
        .code = anthropic_classify(resp->status, type, detail),
        .label = type,
        .message = json_string_value(json_object_get(err, "message")),
        .parsed = body != NULL,
    };

    return loom_hc_fail(ctx, PROV, resp, &e, st->conf.key);
}

/* The tool_use blocks of CONTENT (borrowed): the calls of the request's
 * tools into *CALLS (a new array, NULL when there are none), the call of
 * the schema's tool (when REQ has a schema) into *ANSWER (a new reference,
 * or NULL). Without tools or a schema in REQ, tool_use blocks are not
 * read. 0, or -1 after loom_error. */
static int decode_tool_uses(loom_ctx *ctx, const loom_request *req, json_t *content,
                            json_t **calls, json_t **answer)
{
    json_t *block;
    size_t i;

    *calls = *answer = NULL;
    json_array_foreach(content, i, block) {
        const char *type = json_string_value(json_object_get(block, "type"));
        const char *name = json_string_value(json_object_get(block, "name"));
        json_t *input = json_object_get(block, "input"), *args;

        /* without tools or a schema the request offered none: a stray
         * block is not a call the host could run */
        if (!type || strcmp(type, "tool_use") != 0 || (!req->tools && !req->schema))
            continue;
        if (!name || !*name) {
            loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": content[%zu]: a tool_use without a name",
                       i);
            goto fail;
        }
        /* the API sends an object; JSON text from a proxy is read as it says */
        if (json_is_object(input))
            args = json_incref(input);
        else if (!input || json_is_null(input) || json_is_string(input))
            args = loom_hc_args_parse(ctx, PROV, name, json_string_value(input),
                                      json_string_length(input));
        else {
            loom_error(ctx, LOOM_E_INVALID_OUTPUT,
                       PROV ": the model called tool %s with input that is not a JSON object",
                       name);
            goto fail;
        }
        if (!args)
            goto fail;
        if (req->schema && req->schema_name && strcmp(name, req->schema_name) == 0) {
            /* a second answer is one too many: the first is kept */
            if (*answer)
                json_decref(args);
            else
                *answer = args;
            continue;
        }
        if ((!*calls && !(*calls = json_array())) ||
            loom_hc_calls_add(*calls, json_string_value(json_object_get(block, "id")), name,
                              args) < 0) {
            loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
            goto fail;
        }
    }
    return 0;
fail:
    json_decref(*calls);
    json_decref(*answer);
    *calls = *answer = NULL;
    return -1;
}

int anthropic_decode_body(loom_ctx *ctx, const anthropic_state *st, const loom_request *req,
                          const loom_http_response *resp, json_t *body, loom_result *out)
{
    json_t *content, *calls = NULL, *answer = NULL;
    const char *stop;
    char *text = NULL;
    size_t len;

    if (resp->status < 200 || resp->status > 299 ||
        (json_is_object(body) && json_object_get(body, "error"))) {
        anthropic_fail_error(ctx, st, resp, body);
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
    if (decode_tool_uses(ctx, req, content, &calls, &answer) < 0)
        goto fail;
    if (req->schema && !answer && !calls) {
        loom_error(ctx, LOOM_E_INVALID_OUTPUT,
                   PROV ": the answer did not call tool %s, the structured output (stop_reason "
                        "%s)", req->schema_name ? req->schema_name : "?", stop ? stop : "none");
        goto fail;
    }
    if (answer && !calls) {
        /* the structured output: the schema tool's input, as JSON text */
        if (!(text = loom_hc_schema_answer(req->schema, answer))) {
            loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
            goto fail;
        }
        len = strlen(text);
    } else if (!(text = loom_hc_parts_text(content, "text", &len))) {
        /* text blocks only: thinking and tool blocks are not the answer */
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        goto fail;
    }
    if (!(out->output = json_stringn(text, len))) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": answer text is not valid UTF-8");
        goto fail;
    }
    out->tool_calls = calls;
    calls = NULL;
    json_decref(answer);
    loom_hc_usage(body, "input_tokens", "output_tokens", &out->usage);
    loom_hc_usage_cache_anthropic(json_object_get(body, "usage"), &out->usage);
    if (stop)
        snprintf(out->finish_reason, sizeof out->finish_reason, "%s", stop);
    free(text);
    return 0;
fail:
    free(text);
    json_decref(calls);
    json_decref(answer);
    return -1;
}

static int anthropic_decode(loom_ctx *ctx, void *state, const loom_request *req,
                            const loom_http_response *resp, loom_result *out)
{
    json_t *body = loom_hc_decode_start(resp, out);
    int rc = anthropic_decode_body(ctx, state, req, resp, body, out);

    json_decref(body);
    return rc;
}

/* ---- streaming
 *
 * The events, by the "type" of their data (which repeats the event name):
 *   message_start        message.usage: the input tokens (and a first
 *                        output count, replaced by message_delta's)
 *   content_block_delta  delta.type text_delta: the next text; other
 *                        deltas (thinking) are not the answer, as decode
 *                        reads only text blocks for it
 *   message_delta        usage.output_tokens (the total so far) and
 *                        delta.stop_reason ("refusal" fails as in decode)
 *   message_stop         the end
 *   error                error.type and message, classed as in decode
 *   content_block_start of a tool_use: a failure (upstream): calls with
 *                        tools are not streamed, and decode would return it
 *   ping, content_block_start/stop, unknown types: nothing */
static int anthropic_stream(loom_ctx *ctx, void *state, const loom_request *req,
                            const loom_sse_event *ev, loom_stream_delta *out)
{
    anthropic_state *st = state;
    json_t *data = loom_hc_stream_json(ctx, PROV, ev), *delta;
    const char *type, *stop;
    loom_usage use;
    int rc = 0;

    (void)req;
    if (!data)
        return -1;
    type = json_string_value(json_object_get(data, "type"));
    if (!type)
        type = ev->event;
    if (strcmp(type, "message_start") == 0) {
        json_t *msg = json_object_get(data, "message");

        loom_hc_usage(msg, "input_tokens", "output_tokens", &out->usage);
        loom_hc_usage_cache_anthropic(json_object_get(msg, "usage"), &out->usage);
    } else if (strcmp(type, "content_block_delta") == 0) {
        const char *dtype;

        delta = json_object_get(data, "delta");
        dtype = json_string_value(json_object_get(delta, "type"));
        if (dtype && strcmp(dtype, "text_delta") == 0 &&
            json_is_string(json_object_get(delta, "text")))
            out->text = json_incref(json_object_get(delta, "text"));
    } else if (strcmp(type, "content_block_start") == 0 &&
               json_is_string(json_object_get(json_object_get(data, "content_block"), "type")) &&
               strcmp(json_string_value(json_object_get(json_object_get(data, "content_block"),
                                                        "type")), "tool_use") == 0) {
        /* calls with tools are never streamed (encode): a tool_use here
         * would be lost as text, and decode would have returned it */
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": a tool call in a streamed answer");
        rc = -1;
    } else if (strcmp(type, "message_delta") == 0) {
        stop = json_string_value(json_object_get(json_object_get(data, "delta"), "stop_reason"));
        if (stop && strcmp(stop, "refusal") == 0) {
            loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": the model refused to answer");
            rc = -1;
        } else if (stop) {
            snprintf(out->finish_reason, sizeof out->finish_reason, "%s", stop);
        }
        /* only the output count: this event's input count, when a server
         * sends one, is not always the whole prompt's */
        loom_hc_usage(data, "input_tokens", "output_tokens", &use);
        out->usage.output_tokens = use.output_tokens;
    } else if (strcmp(type, "message_stop") == 0) {
        out->done = 1;
    } else if (strcmp(type, "error") == 0) {
        json_t *err = json_object_get(data, "error");
        const char *etype = json_string_value(json_object_get(err, "type"));
        loom_hc_error e = {
            .status = 200,
            .code = anthropic_classify(0, etype, NULL),
            .label = etype,
            .message = json_string_value(json_object_get(err, "message")),
            .parsed = 1,
        };

        /* an unknown type after a 200: the server's fault (upstream) */
        rc = loom_hc_stream_fail(ctx, PROV, &e, st->conf.key);
    }
    json_decref(data);
    return rc;
}

/* ---- the descriptor */

static const loom_provider anthropic_providers[] = { {
    .name = "anthropic",
    .options = anthropic_options,
    .init = anthropic_init,
    .fini = anthropic_fini,
    .encode = anthropic_encode,
    .decode = anthropic_decode,
    .max_batch = 0,
    .summary = "Anthropic Messages API (chat only) over HTTP",
    .stream = anthropic_stream,
    .batch_line = anthropic_batch_line,
    .batch_encode = anthropic_batch_encode,
    .batch_decode = anthropic_batch_decode,
    .batch_result = anthropic_batch_result,
    .batch_max_lines = ANTHROPIC_BATCH_MAX_LINES,
    .batch_max_bytes = ANTHROPIC_BATCH_MAX_BYTES,
} };

static const loom_plugin anthropic_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "anthropic",
    .version = "1.1.0",
    .description = "provider for Anthropic's Messages API",
    .providers = anthropic_providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(anthropic)
{
    return &anthropic_plugin;
}
