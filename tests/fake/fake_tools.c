/* fake_tools.c -- the fake provider's tool calls and structured outputs:
 * see fake_tools.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fake/fake_tools.h"

#define SCRIPT_MARK "fake-script:"

/* Deeper schemas are answered with null: a made-up instance need not be
 * deep, and a $ref cycle must end. */
#define SCHEMA_DEPTH 16

static int refuse(fake_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(fake_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- reading the request */

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static bool is_role(json_t *m, const char *role)
{
    const char *r = str(m, "role");
    return r && strcmp(r, role) == 0;
}

/* The tool_use blocks of an Anthropic message, or the tool_calls of an
 * OpenAI one: how many. */
static size_t calls_in(bool anthropic, json_t *m)
{
    if (!is_role(m, "assistant"))
        return 0;
    if (!anthropic)
        return json_array_size(json_object_get(m, "tool_calls"));
    size_t i, n = 0;
    json_t *b;
    json_array_foreach(json_object_get(m, "content"), i, b) {
        const char *t = str(b, "type");
        n += t && strcmp(t, "tool_use") == 0;
    }
    return n;
}

/* The id of call K of assistant message M. */
static const char *call_id(bool anthropic, json_t *m, size_t k)
{
    if (!anthropic)
        return str(json_array_get(json_object_get(m, "tool_calls"), k), "id");
    size_t i, seen = 0;
    json_t *b;
    json_array_foreach(json_object_get(m, "content"), i, b) {
        const char *t = str(b, "type");
        if (t && strcmp(t, "tool_use") == 0 && seen++ == k)
            return str(b, "id");
    }
    return NULL;
}

/* Whether assistant message M has a call with ID. */
static bool has_call(bool anthropic, json_t *m, const char *id)
{
    for (size_t k = 0, n = calls_in(anthropic, m); id && k < n; k++) {
        const char *c = call_id(anthropic, m, k);
        if (c && strcmp(c, id) == 0)
            return true;
    }
    return false;
}

/* The tool_result blocks of Anthropic user message M. */
static size_t results_in(json_t *m)
{
    size_t i, n = 0;
    json_t *b;
    if (!is_role(m, "user"))
        return 0;
    json_array_foreach(json_object_get(m, "content"), i, b) {
        const char *t = str(b, "type");
        n += t && strcmp(t, "tool_result") == 0;
    }
    return n;
}

/* The text of a tool result's content: a string, or text blocks. */
static bool add_result_text(json_t *content, char **acc, size_t *len)
{
    json_t *parts = json_is_array(content) ? content : NULL, *p;
    size_t i, n = parts ? json_array_size(parts) : 1;
    for (i = 0; i < n; i++) {
        p = parts ? json_object_get(json_array_get(parts, i), "text") : content;
        if (!json_is_string(p))
            continue;
        size_t add = json_string_length(p);
        char *g = realloc(*acc, *len + add + 2);
        if (!g)
            return false;
        *acc = g;
        if (*len)
            g[(*len)++] = '\n';
        memcpy(g + *len, json_string_value(p), add);
        *len += add;
        g[*len] = '\0';
    }
    return true;
}

/* Checks the tool conversation in MSGS as the API would: every call
 * answered right after its turn, every result answering a call of the
 * turn before. Counts the turns with calls into *TURNS. 0 or -1. */
static int check_turns(bool anthropic, json_t *msgs, size_t *turns, fake_reply *r)
{
    size_t i, n = json_array_size(msgs);
    *turns = 0;
    for (i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        size_t calls = calls_in(anthropic, m);
        if (calls == 0)
            continue;
        (*turns)++;
        if (anthropic) {
            json_t *next = json_array_get(msgs, i + 1), *b;
            size_t k, seen = 0;
            for (k = 0; k < calls; k++) {
                const char *id = call_id(true, m, k);
                bool found = false;
                size_t j;
                json_array_foreach(json_object_get(next, "content"), j, b) {
                    const char *t = str(b, "type"), *u = str(b, "tool_use_id");
                    found = found || (t && strcmp(t, "tool_result") == 0 && u && id &&
                                      strcmp(u, id) == 0);
                }
                if (!found && next)
                    return refuse(r, "messages.%zu: tool_use ids were found without tool_result "
                                     "blocks immediately after: %s", i, id ? id : "?");
                seen += found;
            }
            if (next && results_in(next) != seen)
                return refuse(r, "messages.%zu: a tool_result answers no tool_use of the turn "
                                 "before", i + 1);
        } else {
            json_t *c;
            size_t k;
            json_array_foreach(json_object_get(m, "tool_calls"), k, c) {
                json_t *fn = json_object_get(c, "function");
                if (!str(c, "id") || !str(fn, "name") ||
                    !json_is_string(json_object_get(fn, "arguments")))
                    return refuse(r, "messages[%zu].tool_calls[%zu]: id, function.name and "
                                     "function.arguments (a string) are required", i, k);
            }
            for (k = 0; k < calls; k++) {
                json_t *t = json_array_get(msgs, i + 1 + k);
                if (!t && i + 1 + k == n)
                    break; /* the conversation may end on the calls */
                if (!is_role(t, "tool") || !has_call(false, m, str(t, "tool_call_id")))
                    return refuse(r, "An assistant message with 'tool_calls' must be followed by "
                                     "tool messages responding to each 'tool_call_id'. "
                                     "(messages[%zu])", i);
            }
        }
    }
    /* a result with no call before it */
    for (i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!anthropic && is_role(m, "tool")) {
            size_t j = i;
            while (j > 0 && is_role(json_array_get(msgs, j - 1), "tool"))
                j--;
            if (j == 0 || !has_call(false, json_array_get(msgs, j - 1), str(m, "tool_call_id")))
                return refuse(r, "messages[%zu]: a 'tool' message must answer a preceding "
                                 "'tool_calls' entry", i);
        } else if (anthropic && results_in(m) > 0 &&
                   (i == 0 || calls_in(true, json_array_get(msgs, i - 1)) == 0)) {
            return refuse(r, "messages.%zu: unexpected tool_result block: no tool_use before it",
                          i);
        }
    }
    return 0;
}

/* The results of the conversation's last turn that say the tool failed,
 * into R->nfailed. */
static void count_failed(bool anthropic, json_t *msgs, fake_reply *r)
{
    size_t i = json_array_size(msgs), k;
    json_t *b, *last = json_object_get(json_array_get(msgs, i - 1), "content");
    if (anthropic) {
        json_array_foreach(last, k, b)
            r->nfailed += str(b, "type") && !strcmp(str(b, "type"), "tool_result") &&
                          json_is_true(json_object_get(b, "is_error"));
        return;
    }
    for (; i > 0 && is_role(json_array_get(msgs, i - 1), "tool"); i--) {
        const char *t = str(json_array_get(msgs, i - 1), "content");
        r->nfailed += t && !strncmp(t, "error", 5);
    }
}

/* Checks the tool definitions have their API's shape. 0 or -1. */
static int check_tools(bool anthropic, json_t *tools, fake_reply *r)
{
    json_t *t;
    size_t i;
    if (tools && !json_is_array(tools))
        return refuse(r, "tools: must be a list");
    json_array_foreach(tools, i, t) {
        if (anthropic ? !str(t, "name") || !json_is_object(json_object_get(t, "input_schema"))
                      : !str(t, "type") || strcmp(str(t, "type"), "function") != 0 ||
                            !str(json_object_get(t, "function"), "name"))
            return refuse(r, anthropic ? "tools.%zu: name and input_schema are required"
                                       : "tools[%zu]: {type: function, function: {name}} expected",
                          i);
    }
    return 0;
}

/* The tool ANTHROPIC's request forces (tool_choice tool, or any: the
 * last), or NULL. */
static json_t *forced_tool(json_t *req)
{
    json_t *choice = json_object_get(req, "tool_choice"), *tools = json_object_get(req, "tools");
    const char *type = str(choice, "type"), *name = str(choice, "name");
    json_t *t;
    size_t i;
    if (type && strcmp(type, "any") == 0)
        return json_array_get(tools, json_array_size(tools) - 1);
    if (!type || strcmp(type, "tool") != 0 || !name)
        return NULL;
    json_array_foreach(tools, i, t) if (str(t, "name") && strcmp(str(t, "name"), name) == 0)
        return t;
    return NULL;
}

/* The script in the messages (or system prompt) of REQ: a new array, or
 * NULL without one. */
static json_t *find_script(json_t *req)
{
    json_t *msgs = json_object_get(req, "messages"), *m, *sys = json_object_get(req, "system");
    size_t i, n = json_array_size(msgs);
    for (i = 0; i <= n; i++) {
        json_t *content = i < n ? json_object_get(json_array_get(msgs, i), "content") : sys;
        json_t *parts = json_is_array(content) ? content : NULL;
        size_t k, np = parts ? json_array_size(parts) : 1;
        for (k = 0; k < np; k++) {
            m = parts ? json_object_get(json_array_get(parts, k), "text") : content;
            const char *t = json_string_value(m), *at = t ? strstr(t, SCRIPT_MARK) : NULL;
            if (!at)
                continue;
            json_t *s = json_loads(at + strlen(SCRIPT_MARK), JSON_DISABLE_EOF_CHECK, NULL);
            if (json_is_array(s))
                return s;
            json_decref(s);
        }
    }
    return NULL;
}

/* ---- a schema's made-up instance */

static json_t *instance(json_t *s, json_t *root, const char *echo, size_t echo_len, int depth);

/* The schema "#/a/b" points to in ROOT, or NULL. */
static json_t *resolve(json_t *root, const char *ref)
{
    if (strncmp(ref, "#/", 2) != 0)
        return strcmp(ref, "#") == 0 ? root : NULL;
    char *copy = strdup(ref + 2), *save = NULL;
    json_t *at = root;
    for (char *tok = copy ? strtok_r(copy, "/", &save) : NULL; tok && at;
         tok = strtok_r(NULL, "/", &save))
        at = json_object_get(at, tok);
    free(copy);
    return at;
}

static const char *first_type(json_t *s)
{
    json_t *type = json_object_get(s, "type"), *t;
    size_t i;
    if (json_is_string(type))
        return json_string_value(type);
    json_array_foreach(type, i, t) if (json_is_string(t) && strcmp(json_string_value(t), "null"))
        return json_string_value(t);
    if (json_object_get(s, "properties"))
        return "object";
    if (json_object_get(s, "items"))
        return "array";
    return json_array_size(type) ? "null" : "string";
}

static json_t *instance(json_t *s, json_t *root, const char *echo, size_t echo_len, int depth)
{
    json_t *v;
    if (!json_is_object(s) || depth > SCHEMA_DEPTH)
        return json_null();
    if (str(s, "$ref"))
        return instance(resolve(root, str(s, "$ref")), root, echo, echo_len, depth + 1);
    if ((v = json_object_get(s, "const")))
        return json_deep_copy(v);
    if ((v = json_array_get(json_object_get(s, "enum"), 0)))
        return json_deep_copy(v);
    if ((v = json_array_get(json_object_get(s, "anyOf"), 0)) ||
        (v = json_array_get(json_object_get(s, "oneOf"), 0)) ||
        (v = json_array_get(json_object_get(s, "allOf"), 0)))
        return instance(v, root, echo, echo_len, depth + 1);
    const char *type = first_type(s);
    json_t *lo = json_object_get(s, "minimum"), *hi = json_object_get(s, "maximum");
    if (!strcmp(type, "object")) {
        json_t *o = json_object(), *p;
        const char *key;
        json_object_foreach(json_object_get(s, "properties"), key, p) {
            if (!o || json_object_set_new(o, key, instance(p, root, echo, echo_len,
                                                           depth + 1)) < 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (!strcmp(type, "array")) {
        json_t *a = json_array();
        json_int_t n = json_integer_value(json_object_get(s, "minItems"));
        json_t *items = json_object_get(s, "items");
        if (n < 1)
            n = 1;
        if (json_object_get(s, "maxItems") && n > json_integer_value(json_object_get(s, "maxItems")))
            n = json_integer_value(json_object_get(s, "maxItems"));
        for (json_int_t i = 0; a && i < n; i++)
            if (json_array_append_new(a, instance(json_is_array(items) ? json_array_get(items, i)
                                                                       : items,
                                                  root, echo, echo_len, depth + 1)) < 0) {
                json_decref(a);
                return NULL;
            }
        return a;
    }
    if (!strcmp(type, "integer") || !strcmp(type, "number")) {
        double x = lo ? json_number_value(lo) : 1;
        if (hi && x > json_number_value(hi))
            x = json_number_value(hi);
        json_int_t i = (json_int_t)x;
        if ((double)i < x)
            i++;
        return !strcmp(type, "integer") || (double)i == x ? json_integer(i) : json_real(x);
    }
    if (!strcmp(type, "boolean"))
        return json_true();
    if (!strcmp(type, "null"))
        return json_null();
    /* a string: the echo, cut and padded to the lengths asked */
    json_int_t max = json_is_integer(json_object_get(s, "maxLength"))
                         ? json_integer_value(json_object_get(s, "maxLength")) : -1;
    json_int_t min = json_integer_value(json_object_get(s, "minLength"));
    size_t n = echo_len;
    while (max >= 0 && n > (size_t)max)
        n--;
    while (n > 0 && ((unsigned char)echo[n] & 0xC0) == 0x80 && n < echo_len)
        n--;
    char *t = malloc(n + (min > 0 ? (size_t)min : 0) + 1);
    if (!t)
        return NULL;
    memcpy(t, echo, n);
    while ((json_int_t)n < min)
        t[n++] = 'x';
    json_t *out = json_stringn(t, n);
    free(t);
    return out ? out : json_string("x");
}

/* ---- building the answer */

static bool set_text(fake_reply *r, const char *s, size_t n)
{
    free(r->text);
    r->text = strndup(s, n);
    return r->text != NULL;
}

/* The tool calls of script turn STEP as the API's answer. */
static int answer_calls(bool anthropic, json_t *step, size_t turn, fake_reply *r)
{
    json_t *calls = json_object_get(step, "calls"), *c, *list = json_array();
    const char *text = str(step, "text");
    size_t k;
    char names[256] = "[tool_calls";
    if (!list)
        return -1;
    if (anthropic && text && *text &&
        json_array_append_new(list, json_pack("{s:s, s:s}", "type", "text", "text", text)) < 0)
        goto nomem;
    json_array_foreach(calls, k, c) {
        char id[48];
        const char *name = str(c, "name");
        json_t *args = json_object_get(c, "arguments"), *one;
        const char *raw = str(c, "arguments_text");
        if (!name) {
            json_decref(list);
            return refuse(r, "fake-script: turn %zu call %zu names no tool", turn, k);
        }
        snprintf(id, sizeof id, anthropic ? "toolu_%zu_%zu" : "call_%zu_%zu", turn, k);
        if (anthropic) {
            one = json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", id, "name", name,
                            "input", raw ? json_string(raw)
                                         : args ? json_deep_copy(args) : json_object());
        } else {
            char *a = raw ? strdup(raw) : json_dumps(args ? args : json_object(), JSON_COMPACT);
            one = a ? json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function",
                                "function", "name", name, "arguments", a)
                    : NULL;
            free(a);
        }
        if (json_array_append_new(list, one) < 0)
            goto nomem;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, " %s", name);
        r->ncalls++;
    }
    strncat(names, "]", sizeof names - strlen(names) - 1);
    if (!set_text(r, text && *text ? text : names, strlen(text && *text ? text : names)))
        goto nomem;
    r->finish = anthropic ? "tool_use" : "tool_calls";
    r->whole = true;
    if (anthropic) {
        r->message = list;
        return 1;
    }
    r->message = json_pack("{s:s, s:s?, s:o}", "role", "assistant", "content",
                           text && *text ? text : NULL, "tool_calls", list);
    return r->message ? 1 : -1;
nomem:
    json_decref(list);
    return -1;
}

/* Whether SCHEMA is the wrapper Loom sends for a schema whose root is no
 * object: {type: object, properties: {value: S}, required: [value]}. */
static bool is_wrapper(json_t *schema)
{
    json_t *props = json_object_get(schema, "properties");
    json_t *req = json_object_get(schema, "required");
    return json_object_size(props) == 1 && json_object_get(props, "value") &&
           json_array_size(req) == 1 && str(schema, "type") &&
           !strcmp(str(schema, "type"), "object") &&
           json_string_value(json_array_get(req, 0)) &&
           !strcmp(json_string_value(json_array_get(req, 0)), "value");
}

/* A final answer: VALUE (a new reference; NULL: RAW is the text) as the
 * API gives it, through TOOL (Anthropic's forced tool) when given. */
static int answer_final(bool anthropic, json_t *value, const char *raw, json_t *tool,
                        bool structured, fake_reply *r)
{
    char *text;
    if (value && json_is_string(value) && !structured)
        text = strdup(json_string_value(value));
    else
        text = value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY) : strdup(raw);
    if (!text) {
        json_decref(value);
        return -1;
    }
    r->text = text;
    r->structured = structured;
    if (anthropic && tool) {
        r->whole = true;
        r->finish = "tool_use";
        r->message = json_pack("[{s:s, s:s, s:s, s:o}]", "type", "tool_use", "id", "toolu_answer",
                               "name", str(tool, "name"), "input",
                               value ? json_incref(value) : json_string(raw));
    } else if (anthropic) {
        r->finish = "end_turn";
        r->message = json_pack("[{s:s, s:s}]", "type", "text", "text", text);
    } else {
        r->finish = "stop";
        r->message = json_pack("{s:s, s:s}", "role", "assistant", "content", text);
    }
    json_decref(value);
    return r->message ? 1 : -1;
}

int fake_tools_reply(bool anthropic, json_t *req, const char *echo, size_t echo_len,
                     fake_reply *r)
{
    json_t *msgs = json_object_get(req, "messages"), *tools = json_object_get(req, "tools");
    json_t *fmt = json_object_get(req, "response_format"), *schema = NULL, *tool = NULL;
    json_t *script = NULL, *step, *value = NULL;
    size_t turns = 0;
    int rc = -1;

    if (check_tools(anthropic, tools, r) < 0 || check_turns(anthropic, msgs, &turns, r) < 0)
        return -1;
    count_failed(anthropic, msgs, r);
    if (anthropic) {
        tool = forced_tool(req);
        if (json_object_get(req, "tool_choice") && !tool)
            return refuse(r, "tool_choice: names no tool of the request");
        schema = json_object_get(tool, "input_schema");
    } else if (str(fmt, "type") && !strcmp(str(fmt, "type"), "json_schema")) {
        schema = json_object_get(json_object_get(fmt, "json_schema"), "schema");
        if (!json_is_object(schema))
            return refuse(r, "response_format.json_schema.schema: an object is required");
    }
    script = find_script(req);
    if (!tools && !schema && !script && turns == 0)
        return 0;
    step = json_array_get(script, turns);
    if (json_object_get(step, "calls")) {
        rc = answer_calls(anthropic, step, turns, r);
    } else if (str(step, "answer_text")) {
        rc = answer_final(anthropic, NULL, str(step, "answer_text"), tool, schema != NULL, r);
    } else if ((value = json_object_get(step, "answer"))) {
        value = json_deep_copy(value);
        /* the script says the output; the wrapper is Loom's business */
        if (value && schema && is_wrapper(schema) &&
            !(json_is_object(value) && json_object_get(value, "value")))
            value = json_pack("{s:o}", "value", value);
        rc = value ? answer_final(anthropic, value, NULL, tool, schema != NULL, r) : -1;
    } else if (schema) {
        value = instance(schema, schema, echo, echo_len, 0);
        rc = value ? answer_final(anthropic, value, NULL, tool, true, r) : -1;
    } else {
        /* after tool results: what they said; else the echo */
        char *acc = NULL;
        size_t len = 0, i;
        json_t *last = json_array_get(msgs, json_array_size(msgs) - 1), *b;
        bool ok = true;
        if (!anthropic) {
            for (i = json_array_size(msgs); ok && i > 0 && is_role(json_array_get(msgs, i - 1),
                                                                   "tool"); i--)
                ;
            for (; ok && i < json_array_size(msgs); i++)
                ok = add_result_text(json_object_get(json_array_get(msgs, i), "content"), &acc,
                                     &len);
        } else {
            json_array_foreach(json_object_get(last, "content"), i, b) if (
                ok && str(b, "type") && !strcmp(str(b, "type"), "tool_result"))
                ok = add_result_text(json_object_get(b, "content"), &acc, &len);
        }
        if (ok) {
            bool results = acc != NULL || (anthropic ? results_in(last) > 0 : is_role(last, "tool"));
            json_t *text = results ? json_stringn(acc ? acc : "", len)
                                   : json_stringn(echo ? echo : "", echo_len);
            rc = text ? answer_final(anthropic, text, NULL, NULL, false, r) : -1;
        }
        free(acc);
    }
    json_decref(script);
    return rc;
}

void fake_reply_free(fake_reply *r)
{
    json_decref(r->message);
    free(r->text);
    r->message = NULL;
    r->text = NULL;
}
