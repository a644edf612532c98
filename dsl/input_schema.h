/* input_schema.h -- a workflow's `input:` declaration as a JSON Schema
 * object: what `loomctl mcp` gives MCP clients as a tool's inputSchema and
 * what a workflow offered as a tool to a model is described by.
 *
 * The schema says what the engine checks when a job starts (engine_eval.c's
 * input check), no more and no less: an object whose declared fields have
 * their types, the required ones present; fields not declared are accepted,
 * so additionalProperties is left open. */
#ifndef LOOM_DSL_INPUT_SCHEMA_H
#define LOOM_DSL_INPUT_SCHEMA_H

#include <jansson.h>

#include "dsl/graph.h"

/* G's input declaration (G borrowed) as a new JSON Schema object:
 * {"type":"object","properties":{NAME:{"type":T,"description":D,"default":V}},
 *  "required":[...]}, in declaration order; a field of type `any` has no
 * "type". A workflow without `input:` accepts any input, but a tool's
 * arguments are always an object, so it gives {"type":"object"}. NULL when
 * out of memory. */
json_t *dsl_input_schema(const dsl_graph *g);

#endif
