/* http_tools.c -- tool calling and structured outputs for the HTTP
 * providers: see http_tools.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_tools.h"

int loom_hc_tool_name_ok(const char *name)
{
    size_t n = 0;

    if (!name)
        return 0;
    for (; name[n]; n++) {
        char ch = name[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return n >= 1 && n <= LOOM_HC_TOOL_NAME_MAX;
}

int loom_hc_tool_get(loom_ctx *ctx, const char *prov, json_t *tools, size_t i,
                     loom_hc_tool *out)
{
    json_t *t = json_array_get(tools, i), *desc, *params;

    if (!json_is_object(t)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, "%s: tools[%zu] is not an object", prov, i);
        return -1;
    }
    out->name = json_string_value(json_object_get(t, "name"));
    desc = json_object_get(t, "description");
    params = json_object_get(t, "parameters");
    if (!loom_hc_tool_name_ok(out->name)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: tools[%zu]: the name must match [A-Za-z0-9_-]{1,64}", prov, i);
        return -1;
    }
    if (desc && !json_is_null(desc) && !json_is_string(desc)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, "%s: tool %s: the description must be text",
                   prov, out->name);
        return -1;
    }
    if (params && !json_is_null(params) && !json_is_object(params)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: tool %s: the parameters must be a JSON Schema object", prov, out->name);
        return -1;
    }
    out->description = json_string_value(desc);
    out->parameters = json_is_object(params) ? params : NULL;
    return 0;
}

int loom_hc_call_get(loom_ctx *ctx, const char *prov, json_t *call, size_t at, size_t i,
                     loom_hc_call *out)
{
    json_t *args = json_object_get(call, "arguments");

    out->id = json_string_value(json_object_get(call, "id"));
    out->name = json_string_value(json_object_get(call, "name"));
    if (!out->id || !*out->id || !loom_hc_tool_name_ok(out->name) ||
        (args && !json_is_null(args) && !json_is_object(args))) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: messages[%zu].tool_calls[%zu] needs an id, a tool name and arguments "
                   "as an object", prov, at, i);
        return -1;
    }
    out->arguments = json_is_object(args) ? args : NULL;
    return 0;
}

int loom_hc_is_tool_turn(json_t *message)
{
    const char *role = json_string_value(json_object_get(message, "role"));

    return role && strcmp(role, "tool") == 0;
}

json_t *loom_hc_turn_calls(json_t *message)
{
    const char *role = json_string_value(json_object_get(message, "role"));
    json_t *calls = json_object_get(message, "tool_calls");

    if (!role || strcmp(role, "assistant") != 0 || json_array_size(calls) == 0)
        return NULL;
    return calls;
}

int loom_hc_result_get(loom_ctx *ctx, const char *prov, json_t *message, size_t at,
                       loom_hc_result *out)
{
    json_t *content = json_object_get(message, "content");

    out->tool_call_id = json_string_value(json_object_get(message, "tool_call_id"));
    out->is_error = json_is_true(json_object_get(message, "is_error"));
    out->content = json_is_string(content) ? json_string_value(content)
                   : !content || json_is_null(content) ? ""
                                                       : NULL;
    if (!out->tool_call_id || !*out->tool_call_id || !out->content) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST,
                   "%s: messages[%zu]: a tool turn needs a tool_call_id and text content", prov,
                   at);
        return -1;
    }
    return 0;
}

json_t *loom_hc_args_parse(loom_ctx *ctx, const char *prov, const char *name, const char *text,
                           size_t len)
{
    json_error_t err;
    json_t *args;
    size_t i = 0;

    while (text && i < len && strchr(" \t\r\n", text[i]))
        i++;
    if (!text || i == len) {
        if (!(args = json_object()))
            loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", prov);
        return args;
    }
    args = json_loadb(text, len, 0, &err);
    if (!json_is_object(args)) {
        /* jansson's reason, which names at most the token it stopped at */
        loom_error(ctx, LOOM_E_INVALID_OUTPUT,
                   "%s: the model called tool %s with arguments that are not a JSON object%s%s",
                   prov, name ? name : "?", args ? "" : ": ", args ? "" : err.text);
        json_decref(args);
        return NULL;
    }
    return args;
}

int loom_hc_calls_add(json_t *calls, const char *id, const char *name, json_t *args)
{
    char made[32];
    json_t *one;

    if (!id || !*id) {
        snprintf(made, sizeof made, "call_%zu", json_array_size(calls));
        id = made;
    }
    one = args ? json_pack("{s:s, s:s, s:o}", "id", id, "name", name, "arguments", args) : NULL;
    return one ? json_array_append_new(calls, one) : -1;
}

int loom_hc_schema_needs_wrap(json_t *schema)
{
    const char *type = json_string_value(json_object_get(schema, "type"));

    return !type || strcmp(type, "object") != 0;
}

json_t *loom_hc_schema_wire(json_t *schema)
{
    static const char *const lifted[] = { "definitions", "$defs" };
    json_t *wrap;

    if (!loom_hc_schema_needs_wrap(schema))
        return json_incref(schema);
    wrap = json_pack("{s:s, s:{s:O}, s:[s], s:b}", "type", "object", "properties",
                     LOOM_HC_WRAP_KEY, schema, "required", LOOM_HC_WRAP_KEY,
                     "additionalProperties", 0);
    for (size_t i = 0; wrap && i < sizeof lifted / sizeof lifted[0]; i++) {
        json_t *defs = json_object_get(schema, lifted[i]);
        if (defs && json_object_set(wrap, lifted[i], defs) < 0) {
            json_decref(wrap);
            wrap = NULL;
        }
    }
    return wrap;
}

char *loom_hc_schema_answer(json_t *schema, json_t *answer)
{
    json_t *v = answer;

    if (loom_hc_schema_needs_wrap(schema) && json_object_get(answer, LOOM_HC_WRAP_KEY))
        v = json_object_get(answer, LOOM_HC_WRAP_KEY);
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}
