/* test_template.c -- the template parser, evaluator and filters.
 *
 * Parse tests check shapes and every error with its exact byte offset (the
 * compiler turns offsets into line:col, so an off-by-one is a user-visible
 * bug). Evaluation tests run templates against one fixed set of roots. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsl/template.h"

static const char *ROOTS =
    "{\"input\": {\"name\": \"Ada\", \"text\": \"  Hello World \\n\", \"n\": 3, \"f\": 2.5,"
    " \"neg\": -4, \"tags\": [\"a\", \"b\", \"c\"], \"nums\": [3, 1, 2], \"mixed\": [1, \"x\"],"
    " \"obj\": {\"x\": 1, \"y\": [10, 20]}, \"empty\": \"\", \"nil\": null, \"t\": true,"
    " \"utf\": \"h\\u00e9llo\", \"emoji\": \"a\\ud83d\\ude00b\", \"a b\": 7, \"per-review\": \"ok\","
    " \"csv\": \"x,y,,z\", \"json\": \"{\\\"k\\\": [1, 2]}\", \"none\": [], \"nobj\": {}},"
    " \"vars\": {\"limit\": 10}, \"prev\": \"previous\"}";

static json_t *lookup(void *ud, const dsl_expr *e)
{
    return json_object_get(ud, e->root);
}

static dsl_template *parse_ok(const char *s)
{
    dsl_tpl_error err;
    dsl_template *t = dsl_template_parse(s, strlen(s), &err);
    cr_assert(t != NULL, "parse of '%s' failed at %zu: %s", s, err.offset, err.msg);
    return t;
}

static void parse_err(const char *s, size_t off, const char *msg, const char *hint)
{
    dsl_tpl_error err;
    dsl_template *t = dsl_template_parse(s, strlen(s), &err);
    cr_assert(t == NULL, "'%s' parsed but should not", s);
    cr_assert(eq(str, err.msg, (char *)msg), "for '%s'", s);
    cr_assert(eq(sz, err.offset, off), "offset for '%s' (%s)", s, msg);
    cr_assert(eq(str, err.hint, (char *)(hint ? hint : "")), "hint for '%s'", s);
}

/* Evaluates TPL against ROOTS; returns the result as compact JSON, or
 * "ERROR: msg". Caller frees. */
static char *run(const char *tpl)
{
    json_t *roots = json_loads(ROOTS, 0, NULL);
    cr_assert(roots != NULL);
    dsl_template *t = parse_ok(tpl);
    dsl_eval_error err;
    json_t *v = dsl_template_eval(t, lookup, roots, &err);
    char *out;
    if (v) {
        out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    } else {
        out = malloc(strlen(err.msg) + 8);
        strcpy(out, "ERROR: ");
        strcat(out, err.msg);
    }
    json_decref(v);
    json_decref(roots);
    dsl_template_free(t);
    return out;
}

#define EXPECT(tpl, want)                                                   \
    do {                                                                    \
        char *got_ = run(tpl);                                              \
        cr_expect(eq(str, got_, (char *)(want)), "template: %s", tpl);     \
        free(got_);                                                         \
    } while (0)

#define EXPECT_ERR(tpl, msg) EXPECT(tpl, "ERROR: " msg)

/* ---- parse shapes ---- */

Test(parse, empty_string)
{
    dsl_template *t = parse_ok("");
    cr_assert(eq(sz, t->nparts, 0));
    cr_assert(eq(int, t->whole, 0));
    cr_assert(eq(str, t->source, ""));
    dsl_template_free(t);
    EXPECT("", "\"\"");
}

Test(parse, text_only)
{
    dsl_template *t = parse_ok("hello } world {");
    cr_assert(eq(sz, t->nparts, 1));
    cr_assert(eq(int, t->whole, 0));
    cr_assert(eq(str, t->parts[0].text, "hello } world {"));
    cr_assert(eq(sz, t->parts[0].len, 15));
    cr_assert(t->parts[0].expr == NULL);
    cr_assert(eq(str, t->source, "hello } world {"));
    dsl_template_free(t);
}

Test(parse, whole_expression)
{
    dsl_template *t = parse_ok("{{ input.name }}");
    cr_assert(eq(int, t->whole, 1));
    cr_assert(eq(sz, t->nparts, 1));
    dsl_expr *e = t->parts[0].expr;
    cr_assert(eq(str, e->root, "input"));
    cr_assert(eq(sz, e->root_offset, 3));
    cr_assert(eq(sz, e->nsegs, 1));
    cr_assert(eq(int, e->segs[0].kind, DSL_SEG_FIELD));
    cr_assert(eq(str, e->segs[0].name, "name"));
    cr_assert(eq(sz, e->segs[0].offset, 9)); /* the name, not the '.' */
    cr_assert(eq(sz, e->nfilters, 0));
    cr_assert(eq(int, e->root_kind, 0));
    cr_assert(e->step == NULL);
    dsl_template_free(t);
    t = parse_ok("{{input}}");
    cr_assert(eq(int, t->whole, 1));
    dsl_template_free(t);
    t = parse_ok("{{\n  input\t}}");
    cr_assert(eq(int, t->whole, 1));
    dsl_template_free(t);
}

Test(parse, spaces_outside_braces_are_text)
{
    dsl_template *t = parse_ok(" {{ input }}");
    cr_assert(eq(int, t->whole, 0));
    cr_assert(eq(sz, t->nparts, 2));
    dsl_template_free(t);
    t = parse_ok("{{ input }} ");
    cr_assert(eq(int, t->whole, 0));
    dsl_template_free(t);
    t = parse_ok("{{ a }}{{ b }}");
    cr_assert(eq(int, t->whole, 0));
    cr_assert(eq(sz, t->nparts, 2));
    cr_assert(eq(sz, t->parts[1].offset, 7));
    dsl_template_free(t);
}

Test(parse, mixed_parts_and_offsets)
{
    dsl_template *t = parse_ok("Hi {{ input.name }}, you are {{vars.limit}}!");
    cr_assert(eq(sz, t->nparts, 5));
    cr_assert(eq(str, t->parts[0].text, "Hi "));
    cr_assert(eq(sz, t->parts[0].offset, 0));
    cr_assert(eq(sz, t->parts[1].offset, 3));
    cr_assert(eq(str, t->parts[2].text, ", you are "));
    cr_assert(eq(sz, t->parts[2].offset, 19));
    cr_assert(eq(sz, t->parts[3].offset, 29));
    cr_assert(eq(str, t->parts[3].expr->root, "vars"));
    cr_assert(eq(sz, t->parts[3].expr->root_offset, 31));
    cr_assert(eq(str, t->parts[4].text, "!"));
    cr_assert(eq(sz, t->parts[4].offset, 43));
    dsl_template_free(t);
}

Test(parse, escaped_braces)
{
    dsl_template *t = parse_ok("a \\{{ b }} c");
    cr_assert(eq(str, t->source, "a \\{{ b }} c"));
    cr_assert(eq(sz, t->nparts, 1));
    cr_assert(eq(str, t->parts[0].text, "a {{ b }} c"));
    cr_assert(eq(sz, t->parts[0].len, 11));
    dsl_template_free(t);
    /* A backslash anywhere else is just a backslash. */
    t = parse_ok("\\{{x}} \\n \\{ \\");
    cr_assert(eq(str, t->parts[0].text, "{{x}} \\n \\{ \\"));
    dsl_template_free(t);
    t = parse_ok("\\{{{{ input.n }}");
    cr_assert(eq(sz, t->nparts, 2));
    cr_assert(eq(str, t->parts[0].text, "{{"));
    cr_assert(eq(sz, t->parts[1].offset, 3));
    dsl_template_free(t);
    EXPECT("\\{{ {{ input.n }} }}", "\"{{ 3 }}\"");
}

Test(parse, is_literal)
{
    cr_assert(eq(int, dsl_template_is_literal("plain text", 10), 1));
    cr_assert(eq(int, dsl_template_is_literal("", 0), 1));
    cr_assert(eq(int, dsl_template_is_literal("{ {", 3), 1));
    cr_assert(eq(int, dsl_template_is_literal("a {{ b }}", 9), 0));
    cr_assert(eq(int, dsl_template_is_literal("\\{{", 3), 0));
    /* Length-delimited: the "{{" past LEN does not count. */
    cr_assert(eq(int, dsl_template_is_literal("ab{{", 3), 1));
}

Test(parse, index_forms)
{
    dsl_template *t = parse_ok("{{ a.3[4][-1][ 2 ].x }}");
    dsl_expr *e = t->parts[0].expr;
    cr_assert(eq(sz, e->nsegs, 5));
    cr_assert(eq(int, e->segs[0].kind, DSL_SEG_INDEX));
    cr_assert(eq(long, e->segs[0].index, 3));
    cr_assert(eq(sz, e->segs[0].offset, 5));
    cr_assert(eq(long, e->segs[1].index, 4));
    cr_assert(eq(sz, e->segs[1].offset, 7));
    cr_assert(eq(long, e->segs[2].index, -1));
    cr_assert(eq(long, e->segs[3].index, 2));
    cr_assert(eq(sz, e->segs[3].offset, 15)); /* inside "[ 2 ]" */
    cr_assert(eq(int, e->segs[4].kind, DSL_SEG_FIELD));
    cr_assert(eq(str, e->segs[4].name, "x"));
    dsl_template_free(t);
}

Test(parse, quoted_keys_and_dashed_names)
{
    dsl_template *t = parse_ok("{{ a[\"b c\"]['d'][\"q\\\"\\u00e9\"].per-review.a-b }}");
    dsl_expr *e = t->parts[0].expr;
    cr_assert(eq(sz, e->nsegs, 5));
    cr_assert(eq(str, e->segs[0].name, "b c"));
    cr_assert(eq(str, e->segs[1].name, "d"));
    cr_assert(eq(str, e->segs[2].name, "q\"\xc3\xa9"));
    cr_assert(eq(str, e->segs[3].name, "per-review"));
    cr_assert(eq(str, e->segs[4].name, "a-b"));
    dsl_template_free(t);
    t = parse_ok("{{ a-b }}");
    cr_assert(eq(str, t->parts[0].expr->root, "a-b"));
    dsl_template_free(t);
}

Test(parse, filters_and_literal_args)
{
    dsl_template *t = parse_ok("{{ x | trim | join(\", \") | slice( -1 ,2 ) | lower() }}");
    dsl_expr *e = t->parts[0].expr;
    cr_assert(eq(sz, e->nfilters, 4));
    cr_assert(eq(str, (char *)e->filters[0].def->name, "trim"));
    cr_assert(eq(sz, e->filters[0].offset, 7));
    cr_assert(eq(sz, json_array_size(e->filters[0].args), 0));
    cr_assert(eq(str, (char *)e->filters[1].def->name, "join"));
    cr_assert(eq(sz, e->filters[1].offset, 14));
    cr_assert(eq(str, (char *)json_string_value(json_array_get(e->filters[1].args, 0)), ", "));
    cr_assert(eq(str, (char *)e->filters[2].def->name, "slice"));
    cr_assert(eq(int, json_integer_value(json_array_get(e->filters[2].args, 0)), -1));
    cr_assert(eq(int, json_integer_value(json_array_get(e->filters[2].args, 1)), 2));
    cr_assert(eq(sz, json_array_size(e->filters[3].args), 0));
    dsl_template_free(t);

    static const char *lits[] = { "3", "-1.5e2", "0.25", "true", "false", "null", "'a\\tb'",
                                  "\"\\ud83d\\ude00\"", "\"\"", "'say \"hi\"'" };
    static const char *want[] = { "3", "-150.0", "0.25", "true", "false", "null", "\"a\\tb\"",
                                  "\"\xf0\x9f\x98\x80\"", "\"\"", "\"say \\\"hi\\\"\"" };
    for (size_t i = 0; i < sizeof lits / sizeof *lits; i++) {
        char src[64];
        snprintf(src, sizeof src, "{{ x | default(%s) }}", lits[i]);
        t = parse_ok(src);
        json_t *a = t->parts[0].expr->filters[0].args;
        cr_assert(eq(sz, json_array_size(a), 1));
        char *d = json_dumps(json_array_get(a, 0), JSON_COMPACT | JSON_ENCODE_ANY);
        cr_expect(eq(str, d, (char *)want[i]), "literal %s", lits[i]);
        free(d);
        dsl_template_free(t);
    }
    t = parse_ok("{{ x | default(7) }}");
    cr_assert(eq(int, json_is_integer(json_array_get(t->parts[0].expr->filters[0].args, 0)), 1));
    dsl_template_free(t);
}

Test(parse, closing_braces_inside_strings)
{
    EXPECT("{{ input.nil | default(\"}}\") }}", "\"}}\"");
    EXPECT("{{ input.nil | default('{{ x }}') }}", "\"{{ x }}\"");
}

Test(parse, free_null)
{
    dsl_template_free(NULL);
}

Test(parse, all_escapes)
{
    dsl_template *t = parse_ok("{{ x | default(\"\\n\\t\\r\\b\\f\\\\\\\"\\'\\/\\u0041\") }}");
    const char *v = json_string_value(json_array_get(t->parts[0].expr->filters[0].args, 0));
    cr_assert(eq(str, (char *)v, "\n\t\r\b\f\\\"'/A"));
    dsl_template_free(t);
    /* NUL is fine in a literal: jansson keeps the length. */
    t = parse_ok("{{ x | default(\"a\\u0000b\") }}");
    cr_assert(eq(sz, json_string_length(json_array_get(t->parts[0].expr->filters[0].args, 0)), 3));
    dsl_template_free(t);
}

Test(parse, big_integer_literal_becomes_real)
{
    dsl_template *t = parse_ok("{{ x | default(123456789012345678901234567890) }}");
    cr_assert(eq(int, json_is_real(json_array_get(t->parts[0].expr->filters[0].args, 0)), 1));
    dsl_template_free(t);
}

/* ---- parse errors ---- */

Test(parse_error, unclosed)
{
    parse_err("ab {{ x", 3, "unclosed '{{'", NULL);
    parse_err("{{", 0, "unclosed '{{'", NULL);
    parse_err("{{ x }", 0, "unclosed '{{'", NULL);
    parse_err("{{ x | join(\", \"", 0, "unclosed '{{'", NULL);
    parse_err("{{ x }} and {{ y.", 12, "unclosed '{{'", NULL);
    parse_err("{{ x[", 0, "unclosed '{{'", NULL);
}

Test(parse_error, empty_expression)
{
    parse_err("a {{ }}", 2, "empty expression", NULL);
    parse_err("{{}}", 0, "empty expression", NULL);
}

Test(parse_error, names)
{
    parse_err("{{ x. }}", 6, "expected a name after '.'", NULL);
    parse_err("{{ x.-1 }}", 5, "expected a name after '.'", NULL);
    parse_err("{{ 3 }}", 3, "expected a name after '{{'", NULL);
    parse_err("{{ | upper }}", 3, "expected a name after '{{'", NULL);
    parse_err("{{ x | }}", 7, "expected a filter name after '|'", NULL);
    parse_err("{{ x | 3 }}", 7, "expected a filter name after '|'", NULL);
}

Test(parse_error, unknown_filter_with_hint)
{
    parse_err("{{ x | lowr }}", 7, "unknown filter 'lowr'", "did you mean 'lower'?");
    parse_err("{{ x | trim | defualt('a') }}", 14, "unknown filter 'defualt'", "did you mean 'default'?");
    parse_err("{{ x | zzzzzzzz }}", 7, "unknown filter 'zzzzzzzz'", NULL);
}

Test(parse_error, argument_counts)
{
    parse_err("{{ x | trim(1) }}", 7, "filter 'trim' takes no arguments", NULL);
    parse_err("{{ x | default }}", 7, "filter 'default' takes 1 argument, got 0", NULL);
    parse_err("{{ x | default() }}", 7, "filter 'default' takes 1 argument, got 0", NULL);
    parse_err("{{ x | replace('a') }}", 7, "filter 'replace' takes 2 arguments, got 1", NULL);
    parse_err("{{ x | join(',', 'x') }}", 7, "filter 'join' takes 0 to 1 arguments, got 2", NULL);
    parse_err("{{ x | slice }}", 7, "filter 'slice' takes 1 to 2 arguments, got 0", NULL);
}

Test(parse_error, strings)
{
    parse_err("{{ x | default(\"abc }}", 15, "unterminated string", NULL);
    parse_err("{{ x['abc }}", 5, "unterminated string", NULL);
    parse_err("{{ x | default(\"a\\", 15, "unterminated string", NULL);
    parse_err("{{ x | default(\"a\\qb\") }}", 17, "unknown escape '\\q' in string", NULL);
    parse_err("{{ x | default(\"\\u12G4\") }}", 16, "invalid '\\u' escape: expected 4 hex digits", NULL);
    parse_err("{{ x | default(\"\\ud800x\") }}", 16,
              "invalid '\\u' escape: high surrogate without a low one", NULL);
    parse_err("{{ x | default(\"\\udc00\") }}", 16, "invalid '\\u' escape: lone low surrogate", NULL);
    parse_err("{{ x[\"a\\u0000\"] }}", 5, "a field name cannot contain '\\u0000'", NULL);
}

Test(parse_error, tokens)
{
    parse_err("{{ x y }}", 5, "expected '}}'", NULL);
    parse_err("{{ x } }}", 5, "expected '}}'", NULL);
    parse_err("{{ x | upper .a }}", 13, "expected '}}'", NULL);
    parse_err("{{ x[1 }}", 7, "expected ']'", NULL);
    parse_err("{{ x[a] }}", 5, "expected an index or a quoted name after '['", NULL);
    parse_err("{{ x[1.5] }}", 6, "expected ']'", NULL);
    parse_err("{{ x[-] }}", 5, "expected an integer index", NULL);
    parse_err("{{ x | default(foo) }}", 15, "expected a value (a string, number, true, false or null)", NULL);
    parse_err("{{ x | default(1 2) }}", 17, "expected ',' or ')'", NULL);
    parse_err("{{ x | default(1,) }}", 17, "expected a value (a string, number, true, false or null)", NULL);
}

Test(parse_error, numbers)
{
    parse_err("{{ x[99999999999999999999] }}", 5, "integer index out of range", NULL);
    parse_err("{{ x.99999999999999999999 }}", 5, "integer index out of range", NULL);
    parse_err("{{ x | default(1.) }}", 15, "invalid number '1.'", NULL);
    parse_err("{{ x | default(01) }}", 15, "invalid number '01'", NULL);
    parse_err("{{ x | default(-) }}", 15, "invalid number '-'", NULL);
    parse_err("{{ x | default(1e) }}", 15, "invalid number '1e'", NULL);
    parse_err("{{ x | default(1e999) }}", 15, "number out of range", NULL);
}

Test(parse_error, invalid_utf8)
{
    parse_err("ok \xff {{ x }}", 3, "invalid UTF-8", NULL);
    parse_err("\xc3", 0, "invalid UTF-8", NULL);
    parse_err("a\xed\xa0\x80", 1, "invalid UTF-8", NULL); /* a surrogate */
}

Test(parse_error, late_error_frees_earlier_parts)
{
    parse_err("a {{ x | trim }} b {{ y.z | nope }}", 28, "unknown filter 'nope'", NULL);
    parse_err("{{ x | default('a') | join(1, 2) }}", 22, "filter 'join' takes 0 to 1 arguments, got 2", NULL);
}

Test(parse_error, null_err_pointer)
{
    cr_assert(dsl_template_parse("{{", 2, NULL) == NULL);
}

/* ---- evaluation ---- */

Test(eval, paths)
{
    EXPECT("{{ input.name }}", "\"Ada\"");
    EXPECT("{{ input.obj }}", "{\"x\":1,\"y\":[10,20]}");
    EXPECT("{{ input.obj.y[1] }}", "20");
    EXPECT("{{ input.obj.y.0 }}", "10");
    EXPECT("{{ input.tags[-1] }}", "\"c\"");
    EXPECT("{{ input.tags[-3] }}", "\"a\"");
    EXPECT("{{ input[\"a b\"] }}", "7");
    EXPECT("{{ input.per-review }}", "\"ok\"");
    EXPECT("{{ prev }}", "\"previous\"");
}

Test(eval, missing_is_null)
{
    EXPECT("{{ input.nope }}", "null");
    EXPECT("{{ input.nope.deeper[3].x }}", "null");
    EXPECT("{{ input.tags[3] }}", "null");
    EXPECT("{{ input.tags[-4] }}", "null");
    EXPECT("{{ input.nil.x }}", "null");
    EXPECT("{{ input.nope.x | default('fallback') }}", "\"fallback\"");
}

Test(eval, path_type_errors)
{
    EXPECT_ERR("{{ input.name.first }}", "cannot take field 'first' of a string");
    EXPECT_ERR("{{ input.tags.x }}", "cannot take field 'x' of an array");
    EXPECT_ERR("{{ input.n.x }}", "cannot take field 'x' of a number");
    EXPECT_ERR("{{ input.obj[0] }}", "cannot take index 0 of an object");
    EXPECT_ERR("{{ input.t.1 }}", "cannot take index 1 of a boolean");
    EXPECT_ERR("{{ nope.x }}", "'nope' has no value here");
    EXPECT_ERR("text {{ nope }} more", "'nope' has no value here");
}

Test(eval, rendering_mixed)
{
    EXPECT("Hi {{ input.name }}!", "\"Hi Ada!\"");
    EXPECT("n={{ input.n }} f={{ input.f }} t={{ input.t }} nil=[{{ input.nil }}]",
           "\"n=3 f=2.5 t=true nil=[]\"");
    EXPECT("o={{ input.obj }} a={{ input.tags }}",
           "\"o={\\\"x\\\":1,\\\"y\\\":[10,20]} a=[\\\"a\\\",\\\"b\\\",\\\"c\\\"]\"");
    EXPECT(" {{ input.n }}", "\" 3\"");
    EXPECT("{{ input.n }}{{ input.n }}", "\"33\"");
    /* Reals as people write them, not jansson's 17 digits. */
    EXPECT("{{ input.nil | default('[0.85, 0.1]') | parse_json }} {{ input.nil | default(2.35) }}",
           "\"[0.85,0.1] 2.35\"");
    EXPECT("{{ input.nil | default(3.0) | json }}", "\"3.0\"");
    EXPECT("{{ input.utf }} {{ input.emoji }}", "\"h\xc3\xa9llo a\xf0\x9f\x98\x80" "b\"");
}

Test(eval, whole_keeps_type_and_null_err_pointer)
{
    json_t *roots = json_loads(ROOTS, 0, NULL);
    dsl_template *t = parse_ok("{{ input.obj.y }}");
    json_t *v = dsl_template_eval(t, lookup, roots, NULL);
    cr_assert(eq(int, json_is_array(v), 1));
    cr_assert(v == json_object_get(json_object_get(json_object_get(roots, "input"), "obj"), "y"));
    json_decref(v);
    dsl_template_free(t);
    t = parse_ok("{{ input.tags | upper }}");
    cr_assert(dsl_template_eval(t, lookup, roots, NULL) == NULL);
    cr_assert(dsl_expr_eval(t->parts[0].expr, lookup, roots, NULL) == NULL);
    dsl_template_free(t);
    json_decref(roots);
}

Test(eval, value_to_text)
{
    json_t *v = json_pack("{s:i}", "a", 1);
    char *s = dsl_value_to_text(v);
    cr_assert(eq(str, s, "{\"a\":1}"));
    free(s);
    json_decref(v);
    s = dsl_value_to_text(json_null());
    cr_assert(eq(str, s, ""));
    free(s);
    v = json_string("raw \"text\"");
    s = dsl_value_to_text(v);
    cr_assert(eq(str, s, "raw \"text\""));
    free(s);
    json_decref(v);
    v = json_integer(3);
    s = dsl_value_to_text(v);
    cr_assert(eq(str, s, "3"));
    free(s);
    json_decref(v);
    cr_assert(eq(str, (char *)dsl_value_type_name(json_true()), "a boolean"));
}

/* ---- filters ---- */

Test(filters, table_sorted_and_documented)
{
    const dsl_filter_def *f = dsl_filter_all();
    size_t n = 0;
    for (; f[n].name; n++) {
        cr_assert(f[n].summary && f[n].summary[0], "%s has no summary", f[n].name);
        cr_assert(strncmp(f[n].summary, f[n].name, strlen(f[n].name)) == 0, "%s", f[n].summary);
        cr_assert(f[n].min_args <= f[n].max_args);
        if (n)
            cr_assert(strcmp(f[n - 1].name, f[n].name) < 0, "%s before %s", f[n - 1].name, f[n].name);
        cr_assert(dsl_filter_find(f[n].name, strlen(f[n].name)) == &f[n]);
    }
    cr_assert(n >= 35);
    cr_assert(dsl_filter_find("lowerXYZ", 5) == dsl_filter_find("lower", 5));
    cr_assert(dsl_filter_find("lowe", 4) == NULL);
    cr_assert(dsl_filter_find("", 0) == NULL);
    cr_assert(dsl_filter_find("zzz", 3) == NULL);
}

Test(filters, json_and_pretty)
{
    EXPECT("{{ input.obj | json }}", "\"{\\\"x\\\":1,\\\"y\\\":[10,20]}\"");
    EXPECT("{{ input.name | json }}", "\"\\\"Ada\\\"\"");
    EXPECT("{{ input.nil | json }}", "\"null\"");
    EXPECT("{{ input.obj | pretty }}", "\"{\\n  \\\"x\\\": 1,\\n  \\\"y\\\": [\\n    10,\\n    20\\n  ]\\n}\"");
    EXPECT("{{ input.n | pretty }}", "\"3\"");
}

Test(filters, string_number_int)
{
    EXPECT("{{ input.n | string }}", "\"3\"");
    EXPECT("{{ input.nil | string }}", "\"\"");
    EXPECT("{{ input.tags | string }}", "\"[\\\"a\\\",\\\"b\\\",\\\"c\\\"]\"");
    EXPECT("{{ input.name | string }}", "\"Ada\"");
    EXPECT("{{ input.f | number }}", "2.5");
    EXPECT("{{ input.nil | default(' 42 ') | number }}", "42");
    EXPECT("{{ input.nil | default('-1.5e1') | number }}", "-15.0");
    EXPECT_ERR("{{ input.name | number }}", "filter 'number': 'Ada' is not a number");
    EXPECT_ERR("{{ input.nil | default('inf') | number }}", "filter 'number': 'inf' is not a number");
    EXPECT_ERR("{{ input.t | number }}", "filter 'number' expects a number or a numeric string, got a boolean");
    EXPECT("{{ input.f | int }}", "2");
    EXPECT("{{ input.nil | default(-2.9) | int }}", "-2");
    EXPECT("{{ input.nil | default('7.9') | int }}", "7");
    EXPECT("{{ input.n | int }}", "3");
    EXPECT_ERR("{{ input.nil | default(1e300) | int }}", "filter 'int': 1e+300 is out of the integer range");
    EXPECT_ERR("{{ input.tags | int }}", "filter 'int' expects a number or a numeric string, got an array");
}

Test(filters, bool_and_not)
{
    static const char *falsy[] = { "false", "null", "0", "0.0", "''", "' Off '", "'NO'", "'false'", "'0'" };
    static const char *truthy[] = { "true", "1", "-1", "'x'", "'yes'", "'0.0'", "' '" };
    char buf[128];
    for (size_t i = 0; i < sizeof falsy / sizeof *falsy; i++) {
        snprintf(buf, sizeof buf, "{{ input.nope | default(%s) | bool }}", falsy[i]);
        /* default() replaces null and "" only, so feed falsy values through eq-free paths */
        char *got = run(buf);
        if (strcmp(falsy[i], "null") && strcmp(falsy[i], "''"))
            cr_expect(eq(str, got, "false"), "%s", falsy[i]);
        free(got);
    }
    for (size_t i = 0; i < sizeof truthy / sizeof *truthy; i++) {
        snprintf(buf, sizeof buf, "{{ input.nope | default(%s) | bool }}", truthy[i]);
        char *got = run(buf);
        /* ' ' trims to "" and is false; everything else here is true */
        cr_expect(eq(str, got, (char *)(strcmp(truthy[i], "' '") ? "true" : "false")), "%s", truthy[i]);
        free(got);
    }
    EXPECT("{{ input.nil | bool }}", "false");
    EXPECT("{{ input.empty | bool }}", "false");
    EXPECT("{{ input.none | bool }}", "false");
    EXPECT("{{ input.nobj | bool }}", "false");
    EXPECT("{{ input.tags | bool }}", "true");
    EXPECT("{{ input.obj | bool }}", "true");
    EXPECT("{{ input.nil | not }}", "true");
    EXPECT("{{ input.n | not }}", "false");
}

Test(filters, truthy_function)
{
    json_t *s = json_string(" FaLsE\n");
    cr_assert(eq(int, dsl_value_truthy(s), 0));
    json_decref(s);
    s = json_string("falsey");
    cr_assert(eq(int, dsl_value_truthy(s), 1));
    json_decref(s);
    s = json_real(0.0);
    cr_assert(eq(int, dsl_value_truthy(s), 0));
    json_decref(s);
}

Test(filters, trim_lower_upper)
{
    EXPECT("{{ input.text | trim }}", "\"Hello World\"");
    EXPECT("{{ input.text | trim | lower }}", "\"hello world\"");
    EXPECT("{{ input.text | trim | upper }}", "\"HELLO WORLD\"");
    EXPECT("{{ input.utf | upper }}", "\"H\xc3\xa9LLO\"");
    EXPECT_ERR("{{ input.tags | upper }}", "filter 'upper' expects a string, got an array");
    EXPECT_ERR("{{ input.nil | lower }}", "filter 'lower' expects a string, got null");
    EXPECT_ERR("{{ input.n | trim }}", "filter 'trim' expects a string, got a number");
}

Test(filters, length_counts_code_points)
{
    EXPECT("{{ input.utf | length }}", "5");
    EXPECT("{{ input.emoji | length }}", "3");
    EXPECT("{{ input.tags | length }}", "3");
    EXPECT("{{ input.obj | length }}", "2");
    EXPECT("{{ input.nil | length }}", "0");
    EXPECT("{{ input.empty | length }}", "0");
    EXPECT_ERR("{{ input.n | length }}", "filter 'length' expects a string, an array or an object, got a number");
}

Test(filters, first_last)
{
    EXPECT("{{ input.tags | first }}", "\"a\"");
    EXPECT("{{ input.tags | last }}", "\"c\"");
    EXPECT("{{ input.none | first }}", "null");
    EXPECT("{{ input.nil | last }}", "null");
    EXPECT("{{ input.emoji | last }}", "\"b\"");
    EXPECT("{{ input.emoji | slice(1, 2) | first }}", "\"\xf0\x9f\x98\x80\"");
    EXPECT("{{ input.nil | default('\\u00e9x') | first }}", "\"\xc3\xa9\"");
    EXPECT("{{ input.nil | default('x\\u00e9') | last }}", "\"\xc3\xa9\"");
    EXPECT("{{ input.empty | first }}", "\"\"");
    EXPECT_ERR("{{ input.obj | first }}", "filter 'first' expects an array or a string, got an object");
}

Test(filters, keys_values)
{
    EXPECT("{{ input.obj | keys }}", "[\"x\",\"y\"]");
    EXPECT("{{ input.obj | values }}", "[1,[10,20]]");
    EXPECT("{{ input.nobj | keys }}", "[]");
    EXPECT_ERR("{{ input.tags | keys }}", "filter 'keys' expects an object, got an array");
}

Test(filters, join)
{
    EXPECT("{{ input.tags | join }}", "\"a, b, c\"");
    EXPECT("{{ input.tags | join('') }}", "\"abc\"");
    EXPECT("{{ input.tags | join(' | ') }}", "\"a | b | c\"");
    EXPECT("{{ input.obj.y | join('+') }}", "\"10+20\"");
    EXPECT("{{ input.obj | values | join(';') }}", "\"1;[10,20]\"");
    EXPECT("{{ input.none | join }}", "\"\"");
    EXPECT("{{ input.nil | join }}", "\"\"");
    EXPECT_ERR("{{ input.tags | join(1) }}", "filter 'join': the separator must be a string");
    EXPECT_ERR("{{ input.name | join }}", "filter 'join' expects an array, got a string");
}

Test(filters, split_and_lines)
{
    EXPECT("{{ input.csv | split(',') }}", "[\"x\",\"y\",\"\",\"z\"]");
    EXPECT("{{ input.text | split }}", "[\"Hello\",\"World\"]");
    EXPECT("{{ input.utf | split('') }}", "[\"h\",\"\xc3\xa9\",\"l\",\"l\",\"o\"]");
    EXPECT("{{ input.empty | split(',') }}", "[\"\"]");
    EXPECT("{{ input.nil | default(' a \\r\\n\\n  b\\n') | lines }}", "[\"a\",\"b\"]");
    EXPECT_ERR("{{ input.tags | split(',') }}", "filter 'split' expects a string, got an array");
}

Test(filters, default_filter)
{
    EXPECT("{{ input.nil | default('x') }}", "\"x\"");
    EXPECT("{{ input.empty | default(0) }}", "0");
    EXPECT("{{ input.name | default('x') }}", "\"Ada\"");
    EXPECT("{{ input.n | default('x') }}", "3");
    EXPECT("{{ input.none | default('x') }}", "[]");
}

Test(filters, truncate_keeps_characters_whole)
{
    EXPECT("{{ input.utf | truncate(2) }}", "\"h\xc3\xa9\"");
    EXPECT("{{ input.emoji | truncate(2) }}", "\"a\xf0\x9f\x98\x80\"");
    EXPECT("{{ input.utf | truncate(0) }}", "\"\"");
    EXPECT("{{ input.utf | truncate(99) }}", "\"h\xc3\xa9llo\"");
    EXPECT_ERR("{{ input.utf | truncate(-1) }}", "filter 'truncate': the length must be a non-negative integer");
    EXPECT_ERR("{{ input.tags | truncate(1) }}", "filter 'truncate' expects a string, got an array");
}

Test(filters, replace)
{
    EXPECT("{{ input.csv | replace(',', ' - ') }}", "\"x - y -  - z\"");
    EXPECT("{{ input.name | replace('zz', 'y') }}", "\"Ada\"");
    EXPECT("{{ input.name | replace('a', '') }}", "\"Ad\"");
    EXPECT_ERR("{{ input.name | replace('', 'x') }}", "filter 'replace': the text to replace is empty");
    EXPECT_ERR("{{ input.name | replace(1, 'x') }}", "filter 'replace' takes two strings");
}

Test(filters, contains_and_eq)
{
    EXPECT("{{ input.text | contains('World') }}", "true");
    EXPECT("{{ input.text | contains('world') }}", "false");
    EXPECT("{{ input.tags | contains('b') }}", "true");
    EXPECT("{{ input.nums | contains(2.0) }}", "true");
    EXPECT("{{ input.obj | contains('y') }}", "true");
    EXPECT("{{ input.obj | contains('z') }}", "false");
    EXPECT("{{ input.nil | contains('z') }}", "false");
    EXPECT_ERR("{{ input.n | contains(1) }}", "filter 'contains' expects a string, an array or an object, got a number");
    EXPECT_ERR("{{ input.obj | contains(1) }}", "filter 'contains' on an object takes a string, got a number");
    EXPECT("{{ input.n | eq(3) }}", "true");
    EXPECT("{{ input.n | eq(3.0) }}", "true");
    EXPECT("{{ input.n | eq('3') }}", "false");
    EXPECT("{{ input.name | eq('Ada') }}", "true");
    EXPECT("{{ input.nil | eq(null) }}", "true");
}

Test(filters, slice)
{
    EXPECT("{{ input.tags | slice(1) }}", "[\"b\",\"c\"]");
    EXPECT("{{ input.tags | slice(0, 2) }}", "[\"a\",\"b\"]");
    EXPECT("{{ input.tags | slice(-2) }}", "[\"b\",\"c\"]");
    EXPECT("{{ input.tags | slice(-99, -1) }}", "[\"a\",\"b\"]");
    EXPECT("{{ input.tags | slice(2, 1) }}", "[]");
    EXPECT("{{ input.utf | slice(1, 3) }}", "\"\xc3\xa9l\"");
    EXPECT("{{ input.utf | slice(-3) }}", "\"llo\"");
    EXPECT("{{ input.emoji | slice(1, null) }}", "\"\xf0\x9f\x98\x80" "b\"");
    EXPECT_ERR("{{ input.tags | slice('a') }}", "filter 'slice' takes integer positions");
    EXPECT_ERR("{{ input.obj | slice(1) }}", "filter 'slice' expects an array or a string, got an object");
}

Test(filters, sort_unique_flatten_reverse)
{
    EXPECT("{{ input.nums | sort }}", "[1,2,3]");
    EXPECT("{{ input.nil | default('b,a,\\u00e9,A') | split(',') | sort }}", "[\"A\",\"a\",\"b\",\"\xc3\xa9\"]");
    EXPECT("{{ input.none | sort }}", "[]");
    EXPECT_ERR("{{ input.mixed | sort }}", "filter 'sort' needs all numbers or all strings, got a string at index 1");
    EXPECT_ERR("{{ input.obj | sort }}", "filter 'sort' expects an array, got an object");
    EXPECT("{{ input.nil | default('b,a,b,c,a') | split(',') | unique }}", "[\"b\",\"a\",\"c\"]");
    EXPECT("{{ input.nil | default('[{\"a\":1,\"b\":2},1,{\"b\":2,\"a\":1},[1],1,[1]]') | parse_json | unique }}",
           "[{\"a\":1,\"b\":2},1,[1]]");
    EXPECT("{{ input.nil | default('[2, 1, 2.0, \"1\", 1.0]') | parse_json | unique }}", "[2,1,\"1\"]");
    EXPECT_ERR("{{ input.name | unique }}", "filter 'unique' expects an array, got a string");
    EXPECT("{{ input.nil | default('[1,[2,[3]],[],4]') | parse_json | flatten }}", "[1,2,[3],4]");
    EXPECT("{{ input.tags | reverse }}", "[\"c\",\"b\",\"a\"]");
    EXPECT("{{ input.emoji | reverse }}", "\"b\xf0\x9f\x98\x80" "a\"");
}

Test(filters, parse_json)
{
    EXPECT("{{ input.json | parse_json }}", "{\"k\":[1,2]}");
    EXPECT("{{ input.json | parse_json | get('k') | last }}", "2");
    EXPECT("{{ input.nil | default('42') | parse_json }}", "42");
    EXPECT_ERR("{{ input.nil | default('{\"a\":') | parse_json }}",
               "filter 'parse_json': invalid JSON at char 5: unexpected token near end of file");
    EXPECT_ERR("{{ input.n | parse_json }}", "filter 'parse_json' expects a string, got a number");
}

Test(filters, sum_min_max)
{
    EXPECT("{{ input.nums | sum }}", "6");
    EXPECT("{{ input.none | sum }}", "0");
    EXPECT("{{ input.nil | default('[1, 2.5]') | parse_json | sum }}", "3.5");
    EXPECT("{{ input.nil | default('[9223372036854775807, 1]') | parse_json | sum }}", "9.2233720368547758e18");
    EXPECT_ERR("{{ input.mixed | sum }}", "filter 'sum' expects an array of numbers, got a string at index 1");
    EXPECT("{{ input.nums | min }}", "1");
    EXPECT("{{ input.nums | max }}", "3");
    EXPECT("{{ input.tags | max }}", "\"c\"");
    EXPECT("{{ input.none | max }}", "null");
    EXPECT_ERR("{{ input.n | min }}", "filter 'min' expects an array, got a number");
}

Test(filters, round_abs)
{
    EXPECT("{{ input.f | round }}", "3");
    EXPECT("{{ input.nil | default(-2.5) | round }}", "-3");
    EXPECT("{{ input.nil | default(0.49999999999999994) | round }}", "0");
    EXPECT("{{ input.nil | default(-0.4) | round }}", "0");
    EXPECT("{{ input.nil | default(1e300) | round | string }}", "\"1e300\"");
    EXPECT("{{ input.nil | default(1.5e300) | round(2) | string }}", "\"1.5e300\"");
    EXPECT("{{ input.nil | default(2.345) | round(2) | string }}", "\"2.35\"");
    EXPECT("{{ input.nil | default(2.345) | round(1) }}", "2.2999999999999998"); /* the value is exact */
    EXPECT("{{ input.nil | default(1234) | round(-2) }}", "1200");
    EXPECT("{{ input.n | round(2) }}", "3");
    EXPECT_ERR("{{ input.name | round }}", "filter 'round' expects a number, got a string");
    EXPECT_ERR("{{ input.f | round('x') }}", "filter 'round': the number of digits must be an integer");
    EXPECT("{{ input.neg | abs }}", "4");
    EXPECT("{{ input.nil | default(-2.5) | abs }}", "2.5");
    EXPECT_ERR("{{ input.t | abs }}", "filter 'abs' expects a number, got a boolean");
}

Test(filters, get)
{
    EXPECT("{{ input.obj | get('x') }}", "1");
    EXPECT("{{ input.obj | get('zz') }}", "null");
    EXPECT("{{ input.tags | get(-1) }}", "\"c\"");
    EXPECT("{{ input.tags | get(5) }}", "null");
    EXPECT("{{ input.tags | get(-4) }}", "null");
    EXPECT("{{ input.nil | get('x') }}", "null");
    EXPECT_ERR("{{ input.tags | get('x') }}", "filter 'get' on an array takes an integer index, got a string");
    EXPECT_ERR("{{ input.name | get(0) }}", "filter 'get' expects an object or an array, got a string");
}

Test(filters, type_and_affixes)
{
    EXPECT("{{ input.n | type }}", "\"number\"");
    EXPECT("{{ input.nil | type }}", "\"null\"");
    EXPECT("{{ input.tags | type }}", "\"array\"");
    EXPECT("{{ input.name | starts_with('Ad') }}", "true");
    EXPECT("{{ input.name | ends_with('da') }}", "true");
    EXPECT("{{ input.name | ends_with('Adam') }}", "false");
    EXPECT_ERR("{{ input.name | starts_with(1) }}", "filter 'starts_with' takes a string, got a number");
}

Test(filters, filter_chains_in_text)
{
    EXPECT("Tags: {{ input.tags | join(', ') | upper }} ({{ input.tags | length }})", "\"Tags: A, B, C (3)\"");
}

/* ---- size and speed ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: immune to a loaded machine */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parses the first LEN bytes of S; returns the seconds taken. */
static double time_parse(const char *s, size_t len, size_t want_parts)
{
    dsl_tpl_error err;
    double t0 = now();
    dsl_template *t = dsl_template_parse(s, len, &err);
    double dt = now() - t0;
    cr_assert(t != NULL, "%s", err.msg);
    size_t nparts = t->nparts;
    dsl_template_free(t);
    cr_assert(eq(sz, nparts, want_parts));
    return dt;
}

/* Linear time, checked by ratio rather than a wall-clock limit so that it
 * holds under valgrind too: 8x the input must cost well under 64x the time
 * (quadratic); linear is ~8x. */
static void expect_linear(double small, double big)
{
    cr_expect(big < 24 * small + 0.5, "8x the input took %.3fs vs %.3fs", big, small);
}

Test(scale, ten_megabytes_of_text)
{
    size_t n = 10u << 20;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++)
        s[i] = "ab{ }\\x\n"[i % 8];
    double small = time_parse(s, n / 8, 1), big = time_parse(s, n, 1);
    dsl_template *t = dsl_template_parse(s, n, NULL);
    cr_assert(eq(sz, t->parts[0].len, n));
    dsl_template_free(t);
    free(s);
    expect_linear(small, big);
}

Test(scale, ten_megabytes_with_many_expressions)
{
    const char *unit = "some text {{ input.tags[1] | upper }} ";
    size_t ul = strlen(unit), reps = (10u << 20) / ul, n = ul * reps;
    reps -= reps % 8;
    n = ul * reps;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(s + i * ul, unit, ul);
    s[n] = '\0';
    /* 2 parts a unit, plus the trailing " " */
    double small = time_parse(s, n / 8, 2 * (reps / 8) + 1), big = time_parse(s, n, 2 * reps + 1);
    dsl_template *t = dsl_template_parse(s, n, NULL);
    cr_assert(eq(sz, t->parts[2 * reps - 1].offset, n - ul + 10));
    dsl_template_free(t);
    free(s);
    expect_linear(small, big);
}

Test(scale, ten_thousand_expressions)
{
    size_t k = 10000, n = k * 16;
    char *s = malloc(n + 1), *p = s;
    for (size_t i = 0; i < k; i++)
        p += sprintf(p, "{{ input.n }},");
    dsl_template *t = parse_ok(s);
    cr_assert(eq(sz, t->nparts, 2 * k));
    json_t *roots = json_loads(ROOTS, 0, NULL);
    dsl_eval_error err;
    json_t *v = dsl_template_eval(t, lookup, roots, &err);
    cr_assert(v != NULL, "%s", err.msg);
    cr_assert(eq(sz, json_string_length(v), 2 * k));
    cr_assert(eq(int, strncmp(json_string_value(v), "3,3,3,", 6), 0));
    json_decref(v);
    json_decref(roots);
    dsl_template_free(t);
    free(s);
}

/* "{{ input.nil | default('ab') | split('') | join('xxx...') ...}}" with
 * separators of SEPLEN bytes, then TAIL. */
static char *growth_template(size_t seplen, int rounds, const char *tail)
{
    char *s = malloc((size_t)rounds * (seplen + 32) + 64 + strlen(tail)), *p = s;
    p += sprintf(p, "{{ input.nil | default('ab')");
    for (int r = 0; r < rounds; r++) {
        p += sprintf(p, " | split('') | join('");
        memset(p, 'x', seplen);
        p += seplen;
        p += sprintf(p, "')");
    }
    sprintf(p, "%s }}", tail);
    return s;
}

Test(limits, strings_cannot_grow_without_bound)
{
    char *s = growth_template(10000, 2, "");
    EXPECT_ERR(s, "filter 'join': the result is longer than 64 MiB");
    free(s);
}

Test(limits, split_item_count)
{
    char *s = growth_template(2000, 2, " | split('')");
    EXPECT_ERR(s, "filter 'split': more than 1048576 items");
    free(s);
}

Test(limits, rendered_text)
{
    size_t n = 33u << 20; /* twice is just over the limit; half of it escaped twice too */
    char *big = malloc(n);
    memset(big, 'y', n);
    json_t *roots = json_pack("{s:s%}", "big", big, n);
    memset(big, '"', n / 2);
    cr_assert(json_object_set_new(roots, "quotes", json_stringn(big, n / 2)) == 0);
    free(big);
    dsl_template *t = parse_ok("{{ big }}{{ big }}");
    dsl_eval_error err;
    cr_assert(dsl_template_eval(t, lookup, roots, &err) == NULL);
    cr_assert(eq(str, err.msg, "the rendered text is longer than 64 MiB"));
    dsl_template_free(t);
    t = parse_ok("{{ quotes | json | json }}"); /* escaping doubles it each time */
    cr_assert(dsl_template_eval(t, lookup, roots, &err) == NULL);
    cr_assert(eq(str, err.msg, "filter 'json': the result is longer than 64 MiB"));
    dsl_template_free(t);
    json_decref(roots);
}

Test(scale, deep_path_and_long_pipeline)
{
    size_t k = 5000;
    char *s = malloc(k * 8 + 64), *p = s;
    p += sprintf(p, "{{ input.n");
    for (size_t i = 0; i < k; i++)
        p += sprintf(p, " | abs");
    sprintf(p, " }}");
    EXPECT(s, "3");
    free(s);
}
