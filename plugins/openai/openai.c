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
 *   other 3xx/4xx               -> invalid_request (never retried)
 *
 * Tools and structured outputs (ABI 2.3). Tools go as
 * {"type": "function", "function": {name, description, parameters}}; the
 * neutral tool turns become the API's own: an assistant message with
 * "tool_calls" whose arguments are JSON text, and one {"role": "tool",
 * "tool_call_id", "content"} message per result (the API has no error flag,
 * so a failed tool's text is prefixed "error: " unless it starts with
 * "error" already). An answer's
 * message.tool_calls come back as loom_result.tool_calls; arguments that
 * are not a JSON object are the model's fault (invalid_output). A schema
 * is asked for as response_format json_schema, strict when it fits the
 * strict subset (every object closed with additionalProperties false and
 * every property required; no allOf, not, if/then/else...), else not
 * strict, since a strict request with another schema is refused and the
 * host checks the answer either way. A call with tools is never streamed:
 * a stream hook hands the host text, not tool calls.
 *
 * The Batch API (ABI 2.4) is in openai_batch.c: its lines carry the body
 * encode builds here and its results are read by the decode here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loom/plugin.h"
#include "openai.h"
#include "openai_internal.h"
#include "plugins/http_common.h"
#include "plugins/http_tools.h"

#define PROV "openai"

/* Nesting deeper than this is not checked for the strict subset: such a
 * schema is sent without strict. OpenAI itself allows 10 levels. */
#define OPENAI_STRICT_DEPTH 32

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

/* ---- tools and structured outputs */

/* The neutral tool turns of MESSAGES (borrowed) as the API's: a new array
 * (the other messages shared with MESSAGES), or NULL after loom_error. */
static json_t *wire_messages(loom_ctx *ctx, json_t *messages)
{
    json_t *wire = json_array(), *m, *one = NULL;
    size_t i;

    if (!wire)
        goto nomem;
    json_array_foreach(messages, i, m) {
        json_t *calls = loom_hc_turn_calls(m), *call;
        size_t k;

        if (loom_hc_is_tool_turn(m)) {
            loom_hc_result r;
            char *text;
            size_t n;

            if (loom_hc_result_get(ctx, PROV, m, i, &r) < 0)
                goto fail;
            n = strlen(r.content) + sizeof "error: ";
            if (!(text = malloc(n)))
                goto nomem;
            /* once: a host's text may say it already */
            snprintf(text, n, "%s%s",
                     r.is_error && strncasecmp(r.content, "error", 5) != 0 ? "error: " : "",
                     r.content);
            one = json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", r.tool_call_id,
                            "content", text);
            free(text);
        } else if (calls) {
            json_t *content = json_object_get(m, "content"), *list = json_array();

            /* null, not "": the API's own echo of a turn that only calls tools */
            one = list ? json_pack("{s:s, s:O, s:o}", "role", "assistant", "content",
                                   json_is_string(content) && json_string_length(content) > 0
                                       ? content : json_null(),
                                   "tool_calls", list)
                       : NULL;
            if (!one)
                goto nomem;
            json_array_foreach(calls, k, call) {
                loom_hc_call c;
                char *args;
                int bad;

                if (loom_hc_call_get(ctx, PROV, call, i, k, &c) < 0)
                    goto fail;
                args = c.arguments ? json_dumps(c.arguments, JSON_COMPACT) : strdup("{}");
                bad = !args || json_array_append_new(
                                   list, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c.id, "type",
                                                   "function", "function", "name", c.name,
                                                   "arguments", args)) < 0;
                free(args);
                if (bad)
                    goto nomem;
            }
        } else if (json_object_get(m, "tool_calls")) {
            /* an empty list of calls: the API refuses one, so none is sent */
            if ((one = json_copy(m)))
                json_object_del(one, "tool_calls");
        } else {
            one = json_incref(m);
        }
        if (!one || json_array_append_new(wire, one) < 0) {
            one = NULL;
            goto nomem;
        }
        one = NULL;
    }
    return wire;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    json_decref(one);
    json_decref(wire);
    return NULL;
}

/* TOOLS (borrowed, the neutral definitions) as the API's, into BODY. 0,
 * or -1 after loom_error. */
static int put_tools(loom_ctx *ctx, json_t *tools, json_t *body)
{
    json_t *list = json_array();
    size_t i;

    if (!json_is_array(tools) || json_array_size(tools) == 0) {
        json_decref(list);
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": tools must be a non-empty list");
        return -1;
    }
    if (json_object_set_new(body, "tools", list) < 0)
        goto nomem;
    for (i = 0; i < json_array_size(tools); i++) {
        loom_hc_tool t;
        json_t *fn;

        if (loom_hc_tool_get(ctx, PROV, tools, i, &t) < 0)
            return -1;
        /* no parameters: a function of no arguments, said explicitly */
        fn = t.parameters ? json_pack("{s:s, s:O}", "name", t.name, "parameters", t.parameters)
                          : json_pack("{s:s, s:{s:s, s:{}}}", "name", t.name, "parameters",
                                      "type", "object", "properties");
        if (!fn || (t.description &&
                    json_object_set_new(fn, "description", json_string(t.description)) < 0) ||
            json_array_append_new(list, json_pack("{s:s, s:o}", "type", "function", "function",
                                                  fn)) < 0)
            goto nomem;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

static int strict_ok(json_t *s, int depth);

/* Every member schema of object MAP (borrowed) fits the strict subset. */
static int strict_map_ok(json_t *map, int depth)
{
    const char *key;
    json_t *v;

    json_object_foreach(map, key, v) if (!strict_ok(v, depth)) return 0;
    return 1;
}

/* Whether schema S fits OpenAI's strict subset as far as Loom can tell: no
 * keyword strict mode refuses, and every object closed (additionalProperties
 * false) with all its properties required, at every level. */
static int strict_ok(json_t *s, int depth)
{
    static const char *const refused[] = {
        "allOf", "not", "if", "then", "else", "oneOf", "dependencies", "dependentRequired",
        "dependentSchemas", "patternProperties", "minLength", "maxLength", "uniqueItems",
        "minProperties", "maxProperties", NULL,
    };
    json_t *props = json_object_get(s, "properties"), *type = json_object_get(s, "type");
    json_t *req = json_object_get(s, "required"), *items = json_object_get(s, "items"), *v;
    const char *key;
    size_t i;
    int object = json_object_get(s, "properties") != NULL;

    if (!json_is_object(s) || depth > OPENAI_STRICT_DEPTH)
        return 0;
    for (i = 0; refused[i]; i++)
        if (json_object_get(s, refused[i]))
            return 0;
    if (json_is_string(type))
        object = object || strcmp(json_string_value(type), "object") == 0;
    json_array_foreach(type, i, v) object = object || (json_is_string(v) &&
                                                       strcmp(json_string_value(v), "object") == 0);
    if (object) {
        if (!json_is_false(json_object_get(s, "additionalProperties")))
            return 0;
        json_object_foreach(props, key, v) {
            size_t k;
            json_t *r;
            int listed = 0;

            json_array_foreach(req, k, r) listed = listed || (json_is_string(r) &&
                                                              strcmp(json_string_value(r), key) == 0);
            if (!listed)
                return 0;
        }
    }
    if (!strict_map_ok(props, depth + 1) || !strict_map_ok(json_object_get(s, "definitions"),
                                                           depth + 1) ||
        !strict_map_ok(json_object_get(s, "$defs"), depth + 1))
        return 0;
    if (items && !(json_is_object(items) ? strict_ok(items, depth + 1) : 0))
        return 0;
    json_array_foreach(json_object_get(s, "anyOf"), i, v) if (!strict_ok(v, depth + 1)) return 0;
    return 1;
}

/* REQ's schema as response_format json_schema, into BODY. 0, or -1 after
 * loom_error. */
static int put_schema(loom_ctx *ctx, const loom_request *req, json_t *body)
{
    json_t *wire, *fmt;

    if (!json_is_object(req->schema) || !loom_hc_tool_name_ok(req->schema_name)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   PROV ": a structured output needs a schema object and a name matching "
                        "[A-Za-z0-9_-]{1,64}");
        return -1;
    }
    if (!(wire = loom_hc_schema_wire(req->schema)))
        goto nomem;
    fmt = json_pack("{s:s, s:{s:s, s:o, s:b}}", "type", "json_schema", "json_schema", "name",
                    req->schema_name, "schema", wire, "strict", strict_ok(wire, 0));
    if (!fmt || json_object_set_new(body, "response_format", fmt) < 0)
        goto nomem;
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
    return -1;
}

json_t *openai_body(loom_ctx *ctx, const openai_state *st, const loom_request *req,
                    const char **path)
{
    json_t *body = loom_hc_body_new(ctx, PROV, &st->conf, req), *msgs;

    if (!body)
        return NULL;
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
        *path = "/embeddings";
    } else {
        if (json_array_size(req->messages) == 0) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": messages must be a non-empty list");
            goto fail;
        }
        if (!(msgs = wire_messages(ctx, req->messages)))
            goto fail;
        if (json_object_set_new(body, "messages", msgs) < 0)
            goto nomem;
        if (loom_hc_put_params(ctx, PROV, openai_params, req->params, NULL, body) < 0)
            goto fail;
        if (req->tools && put_tools(ctx, req->tools, body) < 0)
            goto fail;
        /* a schema says more than JSON mode: it wins */
        if (req->schema ? put_schema(ctx, req, body) < 0 : 0)
            goto fail;
        if (!req->schema && req->json_mode &&
            json_object_set_new(body, "response_format", json_pack("{s:s}", "type",
                                                                   "json_object")) < 0)
            goto nomem;
        /* include_usage: the last chunk carries the usage a whole answer
         * has, so a streamed call counts the same tokens. Never with
         * tools: tool calls do not stream through the hook. */
        if (req->stream && !req->tools &&
            (json_object_set_new(body, "stream", json_true()) < 0 ||
             json_object_set_new(body, "stream_options",
                                 json_pack("{s:b}", "include_usage", 1)) < 0))
            goto nomem;
        *path = "/chat/completions";
    }
    return body;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
fail:
    json_decref(body);
    return NULL;
}

int openai_auth_headers(const openai_state *st, loom_http_request *out)
{
    if ((st->conf.key && add_bearer(out, st->conf.key) < 0) ||
        (st->org && loom_hc_add_header(out, "openai-organization", st->org) < 0))
        return -1;
    return 0;
}

static int openai_encode(loom_ctx *ctx, void *state, const loom_request *req,
                         loom_http_request *out)
{
    openai_state *st = state;
    const char *path = NULL;
    json_t *body = openai_body(ctx, st, req, &path);

    if (!body)
        return -1;
    if (loom_hc_set_post(out, st->conf.base, path, body) < 0 || openai_auth_headers(st, out) < 0) {
        json_decref(body);
        loom_hc_request_clear(out);
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    json_decref(body);
    return 0;
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
int openai_fail_status(loom_ctx *ctx, const openai_state *st, const loom_http_response *resp,
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

/* message.tool_calls (borrowed) as loom_result.tool_calls in *OUT: a new
 * array, NULL when the answer calls no tool. 0, or -1 after loom_error. */
static int decode_calls(loom_ctx *ctx, json_t *calls, json_t **out)
{
    json_t *list, *call;
    size_t i;

    *out = NULL;
    if (!calls || json_is_null(calls) || json_array_size(calls) == 0)
        return 0;
    if (!json_is_array(calls) || !(list = json_array())) {
        loom_error(ctx, json_is_array(calls) ? LOOM_E_NOMEM : LOOM_E_INVALID_OUTPUT,
                   json_is_array(calls) ? PROV ": out of memory"
                                        : PROV ": tool_calls in the answer is not a list");
        return -1;
    }
    json_array_foreach(calls, i, call) {
        json_t *fn = json_object_get(call, "function"), *args;
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *text = json_object_get(fn, "arguments");

        if (!name || !*name) {
            loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": tool_calls[%zu] names no function", i);
            goto fail;
        }
        /* arguments are JSON text; a server that sends the object itself
         * (some OpenAI-compatible ones do) is taken at its word */
        if (json_is_object(text))
            args = json_incref(text);
        else if (!text || json_is_null(text) || json_is_string(text))
            args = loom_hc_args_parse(ctx, PROV, name, json_string_value(text),
                                      json_string_length(text));
        else {
            loom_error(ctx, LOOM_E_INVALID_OUTPUT,
                       PROV ": the model called tool %s with arguments that are not a JSON "
                            "object", name);
            goto fail;
        }
        if (!args)
            goto fail;
        if (loom_hc_calls_add(list, json_string_value(json_object_get(call, "id")), name,
                              args) < 0) {
            loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
            goto fail;
        }
    }
    *out = list;
    return 0;
fail:
    json_decref(list);
    return -1;
}

/* With a schema that was sent wrapped (http_tools.h), the answer's text
 * TEXT (owned) unwrapped into a new allocation; TEXT itself otherwise, and
 * when it is not the wrapper's JSON (the host's check says what it is). */
static char *unwrap_answer(const loom_request *req, char *text)
{
    json_t *v;
    char *inner;

    if (!req->schema || !loom_hc_schema_needs_wrap(req->schema))
        return text;
    v = json_loads(text, 0, NULL);
    if (!json_is_object(v) || !json_object_get(v, LOOM_HC_WRAP_KEY)) {
        json_decref(v);
        return text;
    }
    inner = loom_hc_schema_answer(req->schema, v);
    json_decref(v);
    if (!inner)
        return text;
    free(text);
    return inner;
}

static int decode_chat(loom_ctx *ctx, const openai_state *st, const loom_request *req, json_t *body,
                       loom_result *out)
{
    json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
    json_t *message = json_object_get(choice, "message");
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    const char *refusal = json_string_value(json_object_get(message, "refusal"));
    json_t *content = json_object_get(message, "content"), *calls = NULL;
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
    /* a request without tools has no calls to read (as before 2.3) */
    if (req->tools && decode_calls(ctx, json_object_get(message, "tool_calls"), &calls) < 0)
        return -1;
    /* an answer that calls tools may say nothing besides */
    text = calls && (!content || json_is_null(content)) ? strdup("")
                                                        : loom_hc_content_text(content, &bad);
    if (!text) {
        if (!calls && bad)
            loom_error(ctx, LOOM_E_INVALID_OUTPUT, PROV ": answer without text content");
        else
            loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        json_decref(calls);
        return -1;
    }
    if (!calls)
        text = unwrap_answer(req, text);
    out->output = json_string(text);
    free(text);
    if (!out->output) {
        /* json_string refuses invalid UTF-8 as well as failing to allocate */
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": answer text is not valid UTF-8");
        json_decref(calls);
        return -1;
    }
    out->tool_calls = calls;
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

int openai_decode_body(loom_ctx *ctx, const openai_state *st, const loom_request *req,
                       const loom_http_response *resp, json_t *body, loom_result *out)
{
    int rc = -1;

    if (resp->status < 200 || resp->status > 299) {
        openai_fail_status(ctx, st, resp, resp->status, body);
    } else if (!json_is_object(body)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d with a body that is not a JSON object",
                   resp->status);
    } else if (json_object_get(body, "error") && !json_object_get(body, "choices") &&
               !json_object_get(body, "data")) {
        /* an error reported with a success status, as some proxies do:
         * reported as the bad gateway it is */
        openai_fail_status(ctx, st, resp, 502, body);
    } else {
        rc = req->kind == LOOM_CALL_EMBED ? decode_embed(ctx, req, body, out)
                                          : decode_chat(ctx, st, req, body, out);
        if (rc == 0) {
            loom_hc_usage(body, "prompt_tokens", "completion_tokens", &out->usage);
            loom_hc_usage_cache_openai(json_object_get(body, "usage"), &out->usage);
        }
    }
    return rc;
}

static int openai_decode(loom_ctx *ctx, void *state, const loom_request *req,
                         const loom_http_response *resp, loom_result *out)
{
    json_t *body = loom_hc_decode_start(resp, out);
    int rc = openai_decode_body(ctx, state, req, resp, body, out);

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
        openai_fail_status(ctx, st, NULL, 502, chunk);
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
    /* calls with tools are never streamed (encode), so tool calls here come
     * from a server that streamed what was not asked for: read as text
     * they would be lost, and the answer would look whole */
    if (json_array_size(json_object_get(delta, "tool_calls")) > 0) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": tool calls in a streamed answer");
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
    .batch_line = openai_batch_line,
    .batch_encode = openai_batch_encode,
    .batch_decode = openai_batch_decode,
    .batch_result = openai_batch_result,
    .batch_max_lines = OPENAI_BATCH_MAX_LINES,
    .batch_max_bytes = OPENAI_BATCH_MAX_BYTES,
} };

static const loom_plugin openai_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "openai",
    .version = "1.1.0",
    .description = "provider for OpenAI-compatible APIs (OpenAI, vLLM, llama.cpp, Ollama)",
    .providers = openai_providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(openai)
{
    return &openai_plugin;
}
