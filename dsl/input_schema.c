/* input_schema.c -- a workflow's `input:` declaration as a JSON Schema
 * object (see input_schema.h). */
#include "dsl/input_schema.h"

/* The JSON Schema type name of T, or NULL for `any` (no constraint). */
static const char *schema_type(dsl_type t)
{
    switch (t) {
    case DSL_TYPE_ANY: return NULL;
    case DSL_TYPE_STRING: return "string";
    case DSL_TYPE_NUMBER: return "number";
    case DSL_TYPE_INTEGER: return "integer";
    case DSL_TYPE_BOOLEAN: return "boolean";
    case DSL_TYPE_OBJECT: return "object";
    case DSL_TYPE_ARRAY: return "array";
    }
    return NULL;
}

/* The schema of field F: a new object, or NULL when out of memory. */
static json_t *field_schema(const dsl_input_field *f)
{
    json_t *p = json_object();
    if (!p)
        return NULL;
    const char *type = schema_type(f->type);
    if (type && json_object_set_new(p, "type", json_string(type)) < 0)
        goto fail;
    if (f->description && json_object_set_new(p, "description", json_string(f->description)) < 0)
        goto fail;
    /* copied: the graph is immutable and shared between threads */
    if (f->default_value && json_object_set_new(p, "default", json_deep_copy(f->default_value)) < 0)
        goto fail;
    return p;
fail:
    json_decref(p);
    return NULL;
}

json_t *dsl_input_schema(const dsl_graph *g)
{
    json_t *s = json_pack("{s:s}", "type", "object");
    if (!s || !g->inputs_declared)
        return s;
    json_t *props = json_object(), *required = json_array();
    if (!props || !required) {
        json_decref(props);
        json_decref(required);
        goto fail;
    }
    if (json_object_set_new(s, "properties", props) < 0) {
        json_decref(required);
        goto fail;
    }
    for (size_t i = 0; i < g->ninputs; i++) {
        const dsl_input_field *f = &g->inputs[i];
        if (json_object_set_new(props, f->name, field_schema(f)) < 0)
            goto fail_required;
        /* a field with a default is filled in when missing: never required */
        if (f->required && !f->default_value &&
            json_array_append_new(required, json_string(f->name)) < 0)
            goto fail_required;
    }
    /* absent rather than empty: draft 4 wants at least one name in it */
    if (json_array_size(required) == 0)
        json_decref(required);
    else if (json_object_set_new(s, "required", required) < 0)
        goto fail;
    return s;
fail_required:
    json_decref(required);
fail:
    json_decref(s);
    return NULL;
}
