/* http_tools.h -- tool calling and structured outputs, shared by the HTTP
 * provider plugins (ABI 2.3).
 *
 * The host speaks one provider-neutral form (include/loom/plugin.h): tool
 * definitions {name, description, parameters}, assistant turns with
 * "tool_calls" [{id, name, arguments}], "tool" turns {tool_call_id, name,
 * content, is_error}, and answers whose tool calls are [{id, name,
 * arguments}]. Each plugin translates that form into its API's own; what
 * every translation needs (checking the neutral form, reading the
 * arguments a model sent, wrapping a schema an API cannot take as it is)
 * lives here once. Pure functions, like the rest of http_common. */
#ifndef LOOM_PLUGINS_HTTP_TOOLS_H
#define LOOM_PLUGINS_HTTP_TOOLS_H

#include <stddef.h>

#include "loom/plugin.h"

/* The longest tool (and schema) name both APIs accept. */
#define LOOM_HC_TOOL_NAME_MAX 64

/* 1 when NAME (may be NULL) matches [A-Za-z0-9_-]{1,64}, the names both
 * APIs accept for functions, tools and response formats; else 0. */
int loom_hc_tool_name_ok(const char *name);

/* One tool definition of loom_request.tools, read. Borrowed from it. */
typedef struct loom_hc_tool {
    const char *name;
    const char *description;     /* NULL when not given */
    json_t *parameters;          /* a JSON Schema object, or NULL: no arguments */
} loom_hc_tool;

/* Reads TOOLS[I] (borrowed; TOOLS an array) into *OUT. 0, or -1 after
 * loom_error(invalid_request) naming the entry: not an object, a bad name,
 * a description that is not a string, parameters that are not an object. */
int loom_hc_tool_get(loom_ctx *ctx, const char *prov, json_t *tools, size_t i,
                     loom_hc_tool *out);

/* One call of a neutral assistant turn's "tool_calls", read. Borrowed. */
typedef struct loom_hc_call {
    const char *id;
    const char *name;
    json_t *arguments;           /* an object, or NULL when the turn gave none */
} loom_hc_call;

/* Reads CALL (borrowed: messages[AT].tool_calls[I]) into *OUT. 0, or -1
 * after loom_error(invalid_request): an id or a name missing or bad,
 * arguments that are not an object. */
int loom_hc_call_get(loom_ctx *ctx, const char *prov, json_t *call, size_t at, size_t i,
                     loom_hc_call *out);

/* Whether MESSAGE (borrowed) is a neutral tool turn: role "tool". */
int loom_hc_is_tool_turn(json_t *message);

/* The neutral "tool_calls" of MESSAGE when it is an assistant turn with
 * at least one, else NULL. Borrowed. */
json_t *loom_hc_turn_calls(json_t *message);

/* A tool turn (role "tool") read: the call it answers, its text, whether
 * the tool failed. Borrowed from the message. */
typedef struct loom_hc_result {
    const char *tool_call_id;
    const char *content;         /* never NULL: "" when none */
    int is_error;
} loom_hc_result;

/* Reads tool turn MESSAGE (messages[AT]) into *OUT. 0, or -1 after
 * loom_error(invalid_request): no tool_call_id, content that is not text. */
int loom_hc_result_get(loom_ctx *ctx, const char *prov, json_t *message, size_t at,
                       loom_hc_result *out);

/* The arguments a model sent for tool NAME as JSON text TEXT (LEN bytes;
 * NULL or only blanks: none), as a new object: {} for none. Anything else
 * than a JSON object is the model's fault: NULL after
 * loom_error(invalid_output) naming the tool, or out of memory. */
json_t *loom_hc_args_parse(loom_ctx *ctx, const char *prov, const char *name, const char *text,
                           size_t len);

/* Appends {"id": ID, "name": NAME, "arguments": ARGS} to CALLS, stealing
 * ARGS; ID NULL or "" gives "call_K", K being the call's position (from
 * 0). 0, or -1 when out of memory (ARGS released either way). */
int loom_hc_calls_add(json_t *calls, const char *id, const char *name, json_t *args);

/* Structured outputs: a schema whose root is not an object (an array, a
 * string, anyOf...) cannot be a tool's input (Anthropic) nor a strict
 * response format (OpenAI). Such a schema is sent wrapped, as the one
 * required property "value" of an object, its "definitions" and "$defs"
 * lifted to the wrapper's root so that "#/definitions/..." references
 * still resolve; the answer is unwrapped on the way back. */
#define LOOM_HC_WRAP_KEY "value"

/* 1 when SCHEMA (borrowed) must be wrapped: its "type" is not "object". */
int loom_hc_schema_needs_wrap(json_t *schema);

/* SCHEMA as sent: a new reference to SCHEMA itself, or the wrapper (a new
 * object) when it needs one. NULL when out of memory. */
json_t *loom_hc_schema_wire(json_t *schema);

/* The structured answer ANSWER (borrowed: the JSON the model gave for the
 * wire schema) as the output text for SCHEMA: ANSWER's "value" when the
 * schema was wrapped (ANSWER as it is when it lacks one: the host's check
 * then says what is wrong), serialised compactly. A new allocation, or NULL
 * when out of memory. */
char *loom_hc_schema_answer(json_t *schema, json_t *answer);

#endif
