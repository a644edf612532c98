/* test_schema.c -- the JSON Schema compiler and validator (dsl/schema.h).
 *
 * What a workflow author sees: a mistake in a schema is named by its JSON
 * pointer (and "did you mean" for near misses), an unsupported keyword is
 * refused rather than ignored, and a value that does not fit is reported
 * with the pointer of the part that does not fit and the keyword it broke.
 * The official test suite's cases run separately (schema_suite.sh). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/schema.h"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert(v != NULL, "bad JSON in the test: %s: %s", text, err.text);
    return v;
}

static dsl_schema *compile_ok(const char *text)
{
    json_t *doc = parse(text);
    char ptr[256], msg[512];
    dsl_schema *s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    cr_assert(s != NULL, "%s did not compile: at '%s': %s", text, ptr, msg);
    json_decref(doc); /* the schema holds its own reference */
    return s;
}

/* Compiles TEXT, which must fail at WANT_PTR with a message containing WANT_MSG. */
static void compile_fails(const char *text, const char *want_ptr, const char *want_msg)
{
    json_t *doc = parse(text);
    char ptr[256], msg[512];
    dsl_schema *s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    json_decref(doc);
    cr_assert(s == NULL, "%s compiled", text);
    cr_expect(eq(str, ptr, (char *)want_ptr), "%s: %s", text, msg);
    cr_expect(strstr(msg, want_msg) != NULL, "%s: message '%s' lacks '%s'", text, msg, want_msg);
}

static bool fits(const dsl_schema *s, const char *value)
{
    json_t *v = parse(value);
    char msg[512];
    int rc = dsl_schema_validate(s, v, msg, sizeof msg);
    json_decref(v);
    return rc == 0;
}

static bool misfits(const dsl_schema *s, const char *value)
{
    return !fits(s, value);
}

/* The message for VALUE, which must not fit. Static buffer. */
static const char *why(const dsl_schema *s, const char *value)
{
    static char msg[512];
    json_t *v = parse(value);
    int rc = dsl_schema_validate(s, v, msg, sizeof msg);
    json_decref(v);
    cr_assert(rc == -1, "%s fits", value);
    return msg;
}

Test(schema, the_header_example_message)
{
    dsl_schema *s = compile_ok("{\"type\": \"object\", \"properties\": {\"items\": {\"type\": "
                               "\"array\", \"items\": {\"properties\": {\"price\": {\"maximum\": "
                               "10}}}}}}");
    cr_expect(fits(s, "{\"items\": [{\"price\": 1}, {\"price\": 10}]}"));
    cr_expect(eq(str, (char *)why(s, "{\"items\": [{}, {}, {\"price\": 12.5}]}"),
                 "at /items/2/price: 12.5 is above the maximum 10 (maximum)"));
    dsl_schema_free(s);
}

Test(schema, type_names_and_integers)
{
    dsl_schema *s = compile_ok("{\"type\": \"integer\"}");
    cr_expect(fits(s, "3"));
    cr_expect(fits(s, "2.0"), "a real without a fraction is an integer");
    cr_expect(misfits(s, "2.5"));
    cr_expect(eq(str, (char *)why(s, "\"3\""), "at the root: \"3\" is a string, not an integer (type)"));
    dsl_schema_free(s);

    s = compile_ok("{\"type\": [\"number\", \"null\"]}");
    cr_expect(fits(s, "3") && fits(s, "3.5") && fits(s, "null"));
    cr_expect(eq(str, (char *)why(s, "true"), "at the root: true is a boolean, not null or a number (type)"));
    dsl_schema_free(s);

    compile_fails("{\"type\": \"strin\"}", "/type", "did you mean \"string\"");
    compile_fails("{\"properties\": {\"a\": {\"type\": [\"string\", 3]}}}", "/properties/a/type/1",
                  "a type is a name");
    compile_fails("{\"type\": []}", "/type", "no type");
}

Test(schema, unsupported_keywords_are_errors)
{
    compile_fails("{\"properties\": {\"name\": {\"type\": \"string\", \"maxLenght\": 3}}}",
                  "/properties/name/maxLenght", "did you mean \"maxLength\"");
    compile_fails("{\"format\": \"date-time\"}", "/format", "unsupported keyword \"format\"");
    compile_fails("{\"items\": {\"contains\": {}}}", "/items/contains", "unsupported keyword");
    /* the pointer escapes ~ and / in property names */
    compile_fails("{\"properties\": {\"a/b~c\": {\"x\": 1}}}", "/properties/a~1b~0c/x",
                  "unsupported keyword \"x\"");
    compile_fails("3", "", "a schema is a mapping");
    compile_fails("{\"minimum\": \"3\"}", "/minimum", "minimum is a number");
    compile_fails("{\"minLength\": -1}", "/minLength", "whole number");
    compile_fails("{\"maxItems\": 1.5}", "/maxItems", "whole number");
    compile_fails("{\"multipleOf\": 0}", "/multipleOf", "above 0");
    compile_fails("{\"enum\": []}", "/enum", "non-empty");
    compile_fails("{\"anyOf\": {}}", "/anyOf", "non-empty array");
    compile_fails("{\"required\": [\"a\", 1]}", "/required/1", "property names");
    compile_fails("{\"exclusiveMinimum\": true}", "/exclusiveMinimum", "needs minimum");
    compile_fails("{\"pattern\": \"a(\"}", "/pattern", "not a regular expression");
    /* glibc would expand these repetitions into gigabytes */
    compile_fails("{\"pattern\": \"(a{999}){999}\"}", "/pattern", "multiply past 10000");
    compile_fails("{\"patternProperties\": {\"(x{200,}){200}\": {}}}",
                  "/patternProperties/(x{200,}){200}", "multiply past");
}

Test(schema, annotations_are_accepted)
{
    dsl_schema *s = compile_ok("{\"$schema\": \"http://json-schema.org/draft-07/schema#\", "
                               "\"$id\": \"x\", \"title\": \"t\", \"description\": \"d\", "
                               "\"default\": 1, \"examples\": [1], \"$comment\": \"c\", "
                               "\"definitions\": {}, \"$defs\": {}}");
    cr_expect(fits(s, "\"anything\""));
    dsl_schema_free(s);
    /* definitions are schemas, checked even when nothing refers to them */
    compile_fails("{\"$defs\": {\"a\": {\"typ\": \"string\"}}}", "/$defs/a/typ",
                  "did you mean \"type\"");
}

Test(schema, objects)
{
    dsl_schema *s = compile_ok(
        "{\"type\": \"object\", \"required\": [\"name\"], \"properties\": {\"name\": {\"type\": "
        "\"string\"}, \"age\": {\"type\": \"integer\", \"minimum\": 0}}, "
        "\"additionalProperties\": false, \"minProperties\": 1, \"maxProperties\": 2}");
    cr_expect(fits(s, "{\"name\": \"a\"}"));
    cr_expect(fits(s, "{\"name\": \"a\", \"age\": 3}"));
    cr_expect(eq(str, (char *)why(s, "{}"), "at the root: the object has 0 properties, fewer than the minimum 1 (minProperties)"));
    cr_expect(eq(str, (char *)why(s, "{\"age\": 3}"), "at the root: the required property \"name\" is missing (required)"));
    cr_expect(eq(str, (char *)why(s, "{\"name\": \"a\", \"nick\": \"b\"}"), "at /nick: the property \"nick\" is not allowed (additionalProperties)"));
    cr_expect(eq(str, (char *)why(s, "{\"name\": \"a\", \"age\": -1}"), "at /age: -1 is below the minimum 0 (minimum)"));
    cr_expect(strstr(why(s, "{\"name\": 1, \"age\": 1, \"x\": 1}"), "(maxProperties)") != NULL);
    dsl_schema_free(s);

    s = compile_ok("{\"patternProperties\": {\"^x-\": {\"type\": \"string\"}}, "
                   "\"additionalProperties\": {\"type\": \"integer\"}}");
    cr_expect(fits(s, "{\"x-a\": \"s\", \"b\": 2}"));
    cr_expect(eq(str, (char *)why(s, "{\"x-a\": 1}"), "at /x-a: 1 is an integer, not a string (type)"));
    cr_expect(eq(str, (char *)why(s, "{\"b\": \"s\"}"), "at /b: \"s\" is a string, not an integer (type)"));
    dsl_schema_free(s);

    s = compile_ok("{\"dependencies\": {\"card\": [\"billing\"], \"x\": {\"required\": [\"y\"]}}}");
    cr_expect(fits(s, "{\"card\": 1, \"billing\": 2}") && fits(s, "{\"billing\": 2}"));
    cr_expect(eq(str, (char *)why(s, "{\"card\": 1}"), "at the root: \"card\" needs \"billing\" to be present too (dependencies)"));
    cr_expect(misfits(s, "{\"x\": 1}"));
    dsl_schema_free(s);

    /* the value's pointer escapes ~ and / too */
    s = compile_ok("{\"additionalProperties\": {\"type\": \"string\"}}");
    cr_expect(eq(str, (char *)why(s, "{\"a/b~c\": 1}"), "at /a~1b~0c: 1 is an integer, not a string (type)"));
    dsl_schema_free(s);
}

Test(schema, arrays)
{
    dsl_schema *s = compile_ok("{\"type\": \"array\", \"items\": {\"type\": \"string\"}, "
                               "\"minItems\": 1, \"maxItems\": 3, \"uniqueItems\": true}");
    cr_expect(fits(s, "[\"a\", \"b\"]"));
    cr_expect(eq(str, (char *)why(s, "[]"), "at the root: the array has 0 items, fewer than the minimum 1 (minItems)"));
    cr_expect(strstr(why(s, "[\"a\", \"b\", \"c\", \"d\"]"), "(maxItems)") != NULL);
    cr_expect(eq(str, (char *)why(s, "[\"a\", \"b\", \"a\"]"), "at the root: items 0 and 2 are equal (uniqueItems)"));
    cr_expect(eq(str, (char *)why(s, "[\"a\", 2]"), "at /1: 2 is an integer, not a string (type)"));
    dsl_schema_free(s);

    s = compile_ok("{\"items\": [{\"type\": \"integer\"}, {\"type\": \"string\"}], "
                   "\"additionalItems\": false}");
    cr_expect(fits(s, "[1, \"a\"]") && fits(s, "[1]"));
    cr_expect(eq(str, (char *)why(s, "[1, \"a\", null]"), "at /2: no item is allowed beyond the 2 that items lists (additionalItems)"));
    dsl_schema_free(s);

    /* uniqueItems compares numbers by value */
    s = compile_ok("{\"uniqueItems\": true}");
    cr_expect(misfits(s, "[1, 1.0]"));
    cr_expect(misfits(s, "[{\"a\": [1]}, {\"a\": [1.0]}]"));
    cr_expect(fits(s, "[{\"a\": 1}, {\"a\": 2}]"));
    dsl_schema_free(s);
}

Test(schema, strings)
{
    dsl_schema *s = compile_ok("{\"minLength\": 2, \"maxLength\": 3}");
    cr_expect(fits(s, "\"ab\""));
    cr_expect(fits(s, "\"\\u00e9\\u00e9\""), "two characters, four bytes");
    cr_expect(eq(str, (char *)why(s, "\"a\""), "at the root: the string has 1 characters, fewer than the minimum 2 (minLength)"));
    cr_expect(strstr(why(s, "\"abcd\""), "(maxLength)") != NULL);
    cr_expect(fits(s, "12"), "length applies to strings only");
    dsl_schema_free(s);

    s = compile_ok("{\"pattern\": \"^\\\\d{3}-\\\\w+$\"}");
    cr_expect(fits(s, "\"123-ab_c\""));
    cr_expect(eq(str, (char *)why(s, "\"12-a\""), "at the root: \"12-a\" does not match the pattern \"^\\d{3}-\\w+$\" (pattern)"));
    dsl_schema_free(s);

    s = compile_ok("{\"pattern\": \"[\\\\d.]+x\"}"); /* a class escape inside brackets */
    cr_expect(fits(s, "\"1.5x\"") && !fits(s, "\"ax\""));
    dsl_schema_free(s);
    s = compile_ok("{\"pattern\": \"b\"}"); /* not anchored */
    cr_expect(fits(s, "\"abc\""));
    dsl_schema_free(s);
}

Test(schema, numbers)
{
    dsl_schema *s = compile_ok("{\"minimum\": 1, \"exclusiveMaximum\": 10, \"multipleOf\": 0.5}");
    cr_expect(fits(s, "1") && fits(s, "9.5"));
    cr_expect(eq(str, (char *)why(s, "10"), "at the root: 10 is not below the exclusive maximum 10 (exclusiveMaximum)"));
    cr_expect(eq(str, (char *)why(s, "1.25"), "at the root: 1.25 is not a multiple of 0.5 (multipleOf)"));
    cr_expect(fits(s, "\"x\""), "number rules apply to numbers only");
    dsl_schema_free(s);

    /* draft 4's boolean form */
    s = compile_ok("{\"minimum\": 0, \"exclusiveMinimum\": true}");
    cr_expect(misfits(s, "0") && fits(s, "0.1"));
    dsl_schema_free(s);

    /* decimal multiples are not exact in binary */
    s = compile_ok("{\"multipleOf\": 0.0001}");
    cr_expect(fits(s, "0.0075"));
    cr_expect(misfits(s, "0.00751"));
    dsl_schema_free(s);

    /* large integers compare exactly */
    s = compile_ok("{\"maximum\": 9007199254740993}");
    cr_expect(fits(s, "9007199254740993") && !fits(s, "9007199254740994"));
    dsl_schema_free(s);
}

Test(schema, enum_and_const)
{
    dsl_schema *s = compile_ok("{\"enum\": [\"red\", 1, {\"a\": null}]}");
    cr_expect(fits(s, "\"red\"") && fits(s, "1.0") && fits(s, "{\"a\": null}"));
    cr_expect(eq(str, (char *)why(s, "\"blue\""), "at the root: \"blue\" is not one of [\"red\",1,{\"a\":null}] (enum)"));
    dsl_schema_free(s);

    s = compile_ok("{\"properties\": {\"v\": {\"const\": false}}}");
    cr_expect(fits(s, "{\"v\": false}"));
    cr_expect(eq(str, (char *)why(s, "{\"v\": 0}"), "at /v: 0 is not the constant false (const)"));
    dsl_schema_free(s);
}

Test(schema, combinators)
{
    dsl_schema *s = compile_ok("{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 2}, "
                               "{\"type\": \"integer\"}]}");
    cr_expect(fits(s, "\"ab\"") && fits(s, "3"));
    cr_expect(eq(str, (char *)why(s, "\"abc\""),
                 "at the root: fits none of the 2 schemas of anyOf (anyOf); the first says: "
                 "at the root: the string has 3 characters, more than the maximum 2 (maxLength)"));
    dsl_schema_free(s);

    s = compile_ok("{\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 2}]}");
    cr_expect(fits(s, "1") && fits(s, "2.5"));
    cr_expect(eq(str, (char *)why(s, "3"), "at the root: fits schemas 0 and 1 of oneOf, and must fit exactly one (oneOf)"));
    dsl_schema_free(s);

    s = compile_ok("{\"allOf\": [{\"minimum\": 1}, {\"maximum\": 2}], \"not\": {\"const\": 1.5}}");
    cr_expect(fits(s, "1") && !fits(s, "3") && !fits(s, "0"));
    cr_expect(eq(str, (char *)why(s, "1.5"), "at the root: fits the schema under not, which it must not (not)"));
    dsl_schema_free(s);

    s = compile_ok("{\"properties\": {\"a\": true, \"b\": false}}");
    cr_expect(fits(s, "{\"a\": 1}"));
    cr_expect(eq(str, (char *)why(s, "{\"b\": 1}"), "at /b: no value is allowed here (false schema)"));
    dsl_schema_free(s);
}

Test(schema, refs_within_the_document)
{
    /* a recursive tree: each node's children are nodes */
    dsl_schema *s = compile_ok(
        "{\"$ref\": \"#/definitions/node\", \"definitions\": {\"node\": {\"type\": \"object\", "
        "\"required\": [\"v\"], \"properties\": {\"v\": {\"type\": \"integer\"}, \"kids\": "
        "{\"type\": \"array\", \"items\": {\"$ref\": \"#/definitions/node\"}}}}}}");
    cr_expect(fits(s, "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": [{\"v\": 3}]}]}"));
    cr_expect(eq(str, (char *)why(s, "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": [{\"v\": \"x\"}]}]}"),
                 "at /kids/0/kids/0/v: \"x\" is a string, not an integer (type)"));
    dsl_schema_free(s);

    /* escaped and percent-encoded pointers */
    s = compile_ok("{\"$defs\": {\"a/b\": {\"type\": \"string\"}, \"c d\": {\"type\": \"null\"}}, "
                   "\"properties\": {\"x\": {\"$ref\": \"#/$defs/a~1b\"}, \"y\": {\"$ref\": "
                   "\"#/$defs/c%20d\"}, \"z\": {\"$ref\": \"#/properties/x\"}}}");
    cr_expect(fits(s, "{\"x\": \"s\", \"y\": null, \"z\": \"t\"}"));
    cr_expect(misfits(s, "{\"y\": 1}") && !fits(s, "{\"z\": 1}"));
    dsl_schema_free(s);

    /* a root ref descending into properties is fine */
    s = compile_ok("{\"properties\": {\"next\": {\"$ref\": \"#\"}}, \"additionalProperties\": false}");
    cr_expect(fits(s, "{\"next\": {\"next\": {}}}"));
    cr_expect(misfits(s, "{\"next\": {\"other\": 1}}"));
    dsl_schema_free(s);

    compile_fails("{\"$ref\": \"#/definitions/none\", \"definitions\": {\"one\": {}}}", "/$ref",
                  "nothing at /definitions/none");
    compile_fails("{\"$ref\": \"other.json#/a\"}", "/$ref", "only references within the document");
    compile_fails("{\"$ref\": 3}", "/$ref", "$ref is a string");
    /* cycles that never descend into the value would never end */
    compile_fails("{\"properties\": {\"a\": {\"$ref\": \"#/properties/a\"}}}", "/properties/a",
                  "refers back to itself");
    compile_fails("{\"anyOf\": [{\"$ref\": \"#\"}, {\"type\": \"null\"}]}", "", "refers back to itself");
    compile_fails("{\"definitions\": {\"a\": {\"$ref\": \"#/definitions/b\"}, \"b\": {\"not\": "
                  "{\"$ref\": \"#/definitions/a\"}}}}",
                  "/definitions/a", "refers back to itself");
}

/* A hostile schema must be refused, not crash the compiler or a later check. */
Test(schema, depth_limits)
{
    enum { DEEP = 400 };
    char *text = malloc(DEEP * 16 + 16), *w = text;
    cr_assert(text != NULL);
    for (int i = 0; i < DEEP; i++)
        w += sprintf(w, "{\"not\":");
    w += sprintf(w, "{}");
    for (int i = 0; i < DEEP; i++)
        *w++ = '}';
    *w = '\0';
    json_t *doc = parse(text);
    char ptr[8192], msg[512];
    dsl_schema *s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    cr_expect(s == NULL);
    cr_expect(strstr(msg, "deeper than") != NULL, "%s", msg);
    dsl_schema_free(s);
    json_decref(doc);

    /* a long chain of $refs through definitions */
    w = text = realloc(text, DEEP * 64 + 64);
    cr_assert(text != NULL);
    w += sprintf(w, "{\"$ref\": \"#/definitions/d0\", \"definitions\": {");
    for (int i = 0; i < DEEP; i++)
        w += sprintf(w, "\"d%d\": {\"$ref\": \"#/definitions/d%d\"},", i, i + 1);
    w += sprintf(w, "\"d%d\": {\"type\": \"null\"}}}", DEEP);
    doc = parse(text);
    s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    cr_expect(s == NULL);
    cr_expect(strstr(msg, "longer than") != NULL || strstr(msg, "deeper than") != NULL, "%s", msg);
    dsl_schema_free(s);
    json_decref(doc);
    free(text);
}

Test(schema, values_nested_deeper_than_the_pointer_buffer)
{
    dsl_schema *s = compile_ok("{\"$ref\": \"#/definitions/n\", \"definitions\": {\"n\": "
                               "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"array\", "
                               "\"items\": {\"$ref\": \"#/definitions/n\"}}]}}}");
    enum { DEPTH = 1000 };
    json_t *v = json_integer(1);
    for (int i = 0; i < DEPTH; i++) {
        json_t *a = json_array();
        cr_assert(a && json_array_append_new(a, v) == 0);
        v = a;
    }
    char msg[512];
    cr_expect(eq(int, dsl_schema_validate(s, v, msg, sizeof msg), 0), "%s", msg);
    json_t *leaf = v;
    while (json_array_size(leaf) && json_is_array(json_array_get(leaf, 0)))
        leaf = json_array_get(leaf, 0);
    json_array_set_new(leaf, 0, json_string("x"));
    cr_expect(eq(int, dsl_schema_validate(s, v, msg, sizeof msg), -1));
    cr_expect(strstr(msg, "(anyOf)") != NULL, "%s", msg);
    json_decref(v);
    dsl_schema_free(s);
}

Test(schema, doc_and_free)
{
    json_t *doc = parse("{\"type\": \"string\"}");
    char ptr[8], msg[8]; /* short buffers are cut, not overrun */
    dsl_schema *s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    cr_assert(s != NULL);
    cr_expect(dsl_schema_doc(s) == doc);
    cr_expect(doc->refcount == 2, "the schema keeps one reference");
    json_t *v = json_integer(1);
    cr_expect(eq(int, dsl_schema_validate(s, v, msg, sizeof msg), -1));
    cr_expect(eq(sz, strlen(msg), sizeof msg - 1));
    json_decref(v);
    dsl_schema_free(s);
    cr_expect(doc->refcount == 1);
    json_decref(doc);
    dsl_schema_free(NULL);
    cr_expect(dsl_schema_doc(NULL) == NULL);
    cr_expect(dsl_schema_compile(NULL, ptr, sizeof ptr, msg, sizeof msg) == NULL);
}

/* ---- `schema:` on a call, compiled with the workflow ---- */

#include <unistd.h>

#include "common/file.h"
#include "dsl/dsl.h"

/* Compiles workflow YAML named FILE with OPT; returns the diagnostics as
 * text (new string; "" when it compiled) and the graph in *G (may be NULL). */
static char *compile_workflow(const char *file, const char *yaml, const dsl_options *opt,
                              dsl_graph **g)
{
    dsl_diags d;
    cr_assert(eq(int, dsl_diags_init(&d, file), 0));
    dsl_graph *got = dsl_compile(file, yaml, strlen(yaml), opt, &d);
    char *text = dsl_diags_text(&d, NULL);
    cr_assert(text != NULL);
    dsl_diags_free(&d);
    if (g)
        *g = got;
    else
        dsl_graph_unref(got);
    return text;
}

#define WF "loom: 1\nname: t\ndo:\n  id: pick\n  call:\n    prompt: hi\n"

Test(schema_call, inline_schema_is_compiled_into_the_graph)
{
    dsl_graph *g;
    char *err = compile_workflow("w.yaml", WF "    schema:\n      type: object\n"
                                              "      properties: { a: { type: string } }\n",
                                 NULL, &g);
    cr_assert(g != NULL, "%s", err);
    const dsl_call *c = &g->root->u.call;
    cr_assert(c->schema != NULL);
    cr_expect(c->json, "a schema makes the call answer JSON");
    cr_expect(dsl_schema_doc(c->schema) != NULL && json_typeof(dsl_schema_doc(c->schema)) == JSON_OBJECT);
    char msg[256];
    json_t *v = json_pack("{s:i}", "a", 1);
    cr_expect(eq(int, dsl_schema_validate(c->schema, v, msg, sizeof msg), -1));
    cr_expect(eq(str, msg, "at /a: 1 is an integer, not a string (type)"));
    json_decref(v);
    free(err);
    dsl_graph_unref(g);
}

Test(schema_call, errors_point_at_the_yaml_of_the_offending_part)
{
    char *err = compile_workflow("w.yaml", WF "    schema:\n      type: object\n"
                                              "      properties:\n"
                                              "        name: { type: string, maxLenght: 3 }\n",
                                 NULL, NULL);
    cr_expect(eq(str, err, "w.yaml:10:31: error: schema at /properties/name/maxLenght: "
                           "unsupported keyword \"maxLenght\" (did you mean \"maxLength\"?)\n"));
    free(err);

    err = compile_workflow("w.yaml", WF "    schema:\n      type: [object, strin]\n", NULL, NULL);
    cr_expect(eq(str, err, "w.yaml:8:22: error: schema at /type/1: unknown type \"strin\" "
                           "(did you mean \"string\"?)\n"));
    free(err);

    err = compile_workflow("w.yaml", WF "    schema: [1]\n", NULL, NULL);
    cr_expect(strstr(err, "w.yaml:7:13: error: 'schema' must be a JSON Schema") == err, "%s", err);
    free(err);

    err = compile_workflow("w.yaml", WF "    json: false\n    schema: { type: object }\n", NULL,
                           NULL);
    cr_expect(strstr(err, "w.yaml:7:11: error: a call with a 'schema' answers JSON") == err, "%s",
              err);
    free(err);

    err = compile_workflow("w.yaml", WF "    scheme: { type: object }\n", NULL, NULL);
    cr_expect(strstr(err, "did you mean 'schema'") != NULL, "%s", err);
    free(err);
}

/* A schema file beside the workflow: JSON or YAML, its errors named by the
 * file's own line and column. */
Test(schema_call, schema_files_beside_the_workflow)
{
    const char *build = getenv("LOOM_BUILDDIR");
    char dir[200];
    snprintf(dir, sizeof dir, "%s/schema-files-XXXXXX", build ? build : ".");
    cr_assert(mkdtemp(dir) != NULL);
    char wf[256], js[256], ys[256], bad[256];
    snprintf(wf, sizeof wf, "%s/w.yaml", dir);
    snprintf(js, sizeof js, "%s/out.json", dir);
    snprintf(ys, sizeof ys, "%s/out.yaml", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    FILE *f = fopen(js, "w");
    cr_assert(f != NULL);
    cr_assert(fputs("{\"type\": \"object\", \"required\": [\"x\"]}\n", f) >= 0);
    cr_assert(fclose(f) == 0);
    f = fopen(ys, "w");
    cr_assert(f != NULL);
    cr_assert(fputs("type: array\nitems: { type: integer }\n", f) >= 0);
    cr_assert(fclose(f) == 0);
    f = fopen(bad, "w");
    cr_assert(f != NULL);
    cr_assert(fputs("{\n  \"type\": \"object\",\n  \"propertys\": {}\n}\n", f) >= 0);
    cr_assert(fclose(f) == 0);
    dsl_options opt = { .read_file = file_read_all };

    dsl_graph *g;
    char *err = compile_workflow(wf, WF "    schema: out.json\n", &opt, &g);
    cr_assert(g != NULL, "%s", err);
    json_t *v = json_object();
    char msg[256];
    cr_expect(eq(int, dsl_schema_validate(g->root->u.call.schema, v, msg, sizeof msg), -1));
    cr_expect(strstr(msg, "\"x\" is missing") != NULL, "%s", msg);
    json_decref(v);
    dsl_graph_unref(g);
    free(err);

    err = compile_workflow(wf, WF "    schema: out.yaml\n", &opt, &g);
    cr_assert(g != NULL, "%s", err);
    v = json_pack("[i,s]", 1, "two");
    cr_expect(eq(int, dsl_schema_validate(g->root->u.call.schema, v, msg, sizeof msg), -1));
    cr_expect(eq(str, msg, "at /1: \"two\" is a string, not an integer (type)"));
    json_decref(v);
    dsl_graph_unref(g);
    free(err);

    char want[1024];
    err = compile_workflow(wf, WF "    schema: bad.json\n", &opt, NULL);
    snprintf(want, sizeof want,
             "%s:7:13: error: in the schema file, %s:3:3 (/propertys): unsupported keyword "
             "\"propertys\" (did you mean \"properties\"?)\n",
             wf, bad);
    cr_expect(eq(str, err, want));
    free(err);

    err = compile_workflow(wf, WF "    schema: none.json\n", &opt, NULL);
    cr_expect(strstr(err, "cannot read the schema file") != NULL, "%s", err);
    cr_expect(strstr(err, "none.json': No such file or directory") != NULL, "%s", err);
    free(err);

    /* text compiled without a folder (no read_file) cannot name files */
    err = compile_workflow(wf, WF "    schema: out.json\n", NULL, NULL);
    cr_expect(strstr(err, "names a file, which cannot be read here") != NULL, "%s", err);
    free(err);

    unlink(js);
    unlink(ys);
    unlink(bad);
    rmdir(dir);
}

Test(schema_call, the_graph_document_shows_the_schema)
{
    dsl_graph *g;
    char *err = compile_workflow("w.yaml", WF "    schema: { type: string, maxLength: 2 }\n", NULL,
                                 &g);
    cr_assert(g != NULL, "%s", err);
    json_t *doc = dsl_emit_json(g);
    cr_assert(doc != NULL);
    json_t *want = json_pack("{s:s, s:i}", "type", "string", "maxLength", 2);
    json_t *got = json_object_get(json_object_get(doc, "root"), "schema");
    cr_expect(json_equal(got, want) == 1, "%s", json_dumps(doc, JSON_COMPACT));
    json_decref(want);
    json_decref(doc);
    free(err);
    dsl_graph_unref(g);
}
