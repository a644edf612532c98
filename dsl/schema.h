/* schema.h -- JSON Schema for structured outputs, tool arguments and
 * signals: compiled once when a workflow compiles, checked against values
 * at run time.
 *
 * The supported keywords are those docs/dsl.md lists (type, properties,
 * required, additionalProperties, patternProperties, dependencies,
 * minProperties, maxProperties, items (a schema or a tuple),
 * additionalItems, minItems, maxItems, uniqueItems, enum, const, minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum (draft 4's booleans or later
 * drafts' numbers), multipleOf, minLength, maxLength, pattern, allOf,
 * anyOf, oneOf, not, $ref within the document, true/false schemas, and the
 * annotations title, description, default, examples, $comment, $schema,
 * $id, id, definitions, $defs); any other keyword is a compile error,
 * never silently ignored. As in drafts 4 to 7, the siblings of $ref are
 * not applied.
 *
 * Immutability: a compiled schema never changes, so any thread may
 * validate with it at once. */
#ifndef LOOM_DSL_SCHEMA_H
#define LOOM_DSL_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

typedef struct dsl_schema dsl_schema;

/* Compiles DOC (borrowed; the schema object, kept by reference). NULL on
 * error, with the JSON pointer of the offending part of DOC in PTR ("" for
 * the root, "/properties/name/type") and what is wrong in MSG. */
dsl_schema *dsl_schema_compile(json_t *doc, char *ptr, size_t ptrlen, char *msg, size_t msglen);

/* NULL is allowed. */
void dsl_schema_free(dsl_schema *s);

/* 0 when V (borrowed) fits S; else -1 with a message in MSG that names the
 * JSON pointer of the part of V that does not fit and the keyword it
 * breaks: "at /items/2/price: 12.5 is above the maximum 10 (maximum)". */
int dsl_schema_validate(const dsl_schema *s, const json_t *v, char *msg, size_t msglen);

/* The schema document (borrowed, for the provider's native request). */
json_t *dsl_schema_doc(const dsl_schema *s);

#endif
