/* schema_internal.h -- the compiled form of a JSON Schema, shared by the
 * compiler (schema.c) and the validator (schema_check.c).
 *
 * Every subschema of the document becomes one schema_node; nodes point at
 * each other for subschemas and for `$ref` targets, so a recursive schema is
 * a graph with cycles. The dsl_schema owns every node (its `nodes` list) and
 * frees them together. */
#ifndef LOOM_DSL_SCHEMA_INTERNAL_H
#define LOOM_DSL_SCHEMA_INTERNAL_H

#include <jansson.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "dsl/schema.h"

/* Bits of schema_node.types. */
enum {
    SCHEMA_T_NULL = 1u << 0,
    SCHEMA_T_BOOLEAN = 1u << 1,
    SCHEMA_T_OBJECT = 1u << 2,
    SCHEMA_T_ARRAY = 1u << 3,
    SCHEMA_T_NUMBER = 1u << 4,
    SCHEMA_T_INTEGER = 1u << 5, /* a number with no fractional part */
    SCHEMA_T_STRING = 1u << 6
};

typedef struct schema_node schema_node;

/* `pattern` or one `patternProperties` entry: the source and its compiled form. */
typedef struct schema_regex {
    const char *source; /* borrowed from the document */
    regex_t re;
} schema_regex;

/* One `dependencies` entry: the names that must be present too, or a
 * schema the whole object must fit, when KEY is present. */
typedef struct schema_dependency {
    const char *key;        /* borrowed from the document */
    const char **names;     /* owned array of borrowed strings, or NULL */
    size_t nnames;
    schema_node *schema;    /* or this */
} schema_dependency;

/* A count limit (minLength, maxItems, ...); SCHEMA_NO_LIMIT when absent. */
#define SCHEMA_NO_LIMIT ((long long)-1)

struct schema_node {
    const json_t *doc;          /* this subschema in the document (borrowed) */
    char *ptr;                  /* its JSON pointer in the document (owned) */
    size_t index;               /* in dsl_schema.nodes */
    bool always;                /* `true` / `{}`-like boolean schema: fits anything */
    bool never;                 /* `false`: fits nothing */

    schema_node *ref;           /* `$ref`: validate against this only (draft 4..7
                                   rule: siblings of $ref are not applied) */

    unsigned types;             /* 0: any type */
    const json_t *enum_values;  /* array, borrowed; NULL when absent */
    const json_t *const_value;  /* borrowed; NULL when absent */

    const json_t *minimum, *maximum;        /* numbers, borrowed, or NULL */
    bool exclusive_minimum, exclusive_maximum; /* draft 4's boolean form: the
                                               minimum/maximum itself is excluded */
    const json_t *exclusive_min_value;      /* draft 6's number form, or NULL */
    const json_t *exclusive_max_value;
    const json_t *multiple_of;              /* number > 0, borrowed, or NULL */

    long long min_length, max_length;       /* in characters (code points) */
    schema_regex *pattern;                  /* owned, or NULL */

    schema_node *items;         /* one schema for every item, or NULL */
    schema_node **tuple;        /* `items` as an array: one schema per position */
    size_t ntuple;
    schema_node *additional_items; /* beyond the tuple; NULL: anything */
    long long min_items, max_items;
    bool unique_items;

    const char **prop_names;    /* `properties`: borrowed names, owned array */
    schema_node **prop_schemas;
    size_t nprops;
    schema_regex *pattern_props; /* `patternProperties` (owned array) */
    schema_node **pattern_schemas;
    size_t npattern_props;
    schema_node *additional_props; /* NULL: anything */
    const char **required;      /* borrowed names, owned array */
    size_t nrequired;
    long long min_props, max_props;
    schema_dependency *deps;    /* owned array */
    size_t ndeps;

    schema_node **all_of, **any_of, **one_of; /* owned arrays */
    size_t nall_of, nany_of, none_of;
    schema_node *not_schema;
};

struct dsl_schema {
    json_t *doc;                /* one reference, held for the nodes' borrowed pointers */
    schema_node *root;
    schema_node **nodes;        /* every node, for freeing (owned) */
    size_t nnodes, cap;
    const json_t **keys;        /* open-addressed set: document object -> node index */
    size_t *vals;
    size_t hcap;
};

/* Type bit of V (SCHEMA_T_INTEGER also for a real with no fractional part). */
unsigned dsl_schema_type_of(const json_t *v);

/* JSON Schema equality: numbers by value (1 equals 1.0), the rest as JSON. */
bool dsl_schema_equal(const json_t *a, const json_t *b);

#endif
