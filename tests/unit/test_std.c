/* test_std.c -- unit tests of the std plugin's lambdas, called through the
 * plugin's descriptor the way the host calls them: init once, then each
 * lambda with borrowed input and args, errors caught by a test context. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/std/std.h"

/* A context that records the last error instead of reporting it. */
typedef struct test_ctx {
    loom_ctx base;               /* first: the plugin sees a loom_ctx */
    loom_errcode code;
    char msg[1024];
    int nerrors;
} test_ctx;

static void t_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    test_ctx *t = (test_ctx *)ctx;

    t->code = code;
    t->nerrors++;
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
}

static void t_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
}

static const loom_host_api t_api = { .verror = t_verror, .vlog = t_vlog };

static const loom_plugin *plugin;
static void *state;
static test_ctx tc;

static void ctx_reset(test_ctx *t)
{
    memset(t, 0, sizeof *t);
    t->base.api = &t_api;
}

static void setup(void)
{
    ctx_reset(&tc);
    plugin = loom_builtin_std_entry();
    cr_assert_not_null(plugin);
    cr_assert_eq(plugin->init(&tc.base, NULL, &state), 0);
}

static void teardown(void)
{
    plugin->fini(state);
    state = NULL;
}

TestSuite(std, .init = setup, .fini = teardown);

static const loom_lambda *find(const char *name)
{
    for (size_t i = 0; i < plugin->nlambdas; i++)
        if (!strcmp(plugin->lambdas[i].name, name))
            return &plugin->lambdas[i];
    cr_assert_fail("no lambda std.%s", name);
    return NULL;
}

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v;

    if (!text)
        return NULL;
    v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    cr_assert_not_null(v, "bad test JSON %s: %s", text, err.text);
    return v;
}

/* Calls std.NAME with INPUT and ARGS given as JSON text (NULL: none) in the
 * context T. Returns the result (new reference) or NULL. */
static json_t *call_in(test_ctx *t, void *st, const char *name, const char *input,
                       const char *args)
{
    json_t *in = parse(input), *a = parse(args), *out;

    ctx_reset(t);
    out = find(name)->fn(&t->base, st, in, a);
    json_decref(in);
    json_decref(a);
    if (out)
        cr_assert_eq(t->nerrors, 0, "std.%s returned a value and an error: %s", name, t->msg);
    else
        cr_assert_gt(t->nerrors, 0, "std.%s returned NULL without an error", name);
    return out;
}

static json_t *call(const char *name, const char *input, const char *args)
{
    return call_in(&tc, state, name, input, args);
}

/* Asserts that std.NAME(INPUT, ARGS) yields the JSON value EXPECT. */
static void expect(const char *name, const char *input, const char *args, const char *expect)
{
    json_t *out = call(name, input, args), *want = parse(expect);

    cr_assert_not_null(out, "std.%s(%s, %s) failed: %s", name, input, args ? args : "-",
                       tc.msg);
    if (!json_equal(out, want)) {
        char *got = json_dumps(out, JSON_ENCODE_ANY);

        cr_assert_fail("std.%s(%s, %s): got %s, want %s", name, input, args ? args : "-",
                       got, expect);
        free(got);
    }
    json_decref(out);
    json_decref(want);
}

/* Asserts that std.NAME(INPUT, ARGS) fails with lambda_failed and a message
 * containing NEEDLE. */
static void expect_fail(const char *name, const char *input, const char *args,
                        const char *needle)
{
    json_t *out = call(name, input, args);

    cr_assert_null(out, "std.%s(%s, %s) should fail", name, input, args ? args : "-");
    json_decref(out);
    cr_assert_eq(tc.code, LOOM_E_LAMBDA_FAILED, "code %d: %s", tc.code, tc.msg);
    cr_assert(strstr(tc.msg, needle), "message \"%s\" lacks \"%s\"", tc.msg, needle);
}

/* ---- the descriptor ---- */

Test(std, descriptor)
{
    static const char *names[] = { "json_parse", "json_stringify", "json_pick", "json_merge",
                                   "text_template", "trim", "split", "join", "regex_match",
                                   "regex_extract", "const", "length" };

    cr_assert_eq(plugin->abi_major, LOOM_ABI_MAJOR);
    cr_assert_eq(plugin->abi_minor, LOOM_ABI_MINOR);
    cr_assert_str_eq(plugin->name, "std");
    cr_assert_not_null(plugin->version);
    cr_assert_eq(plugin->nlambdas, sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const loom_lambda *l = find(names[i]);

        cr_assert_not_null(l->fn);
        /* json_merge's args are the object it merges, any keys at all, so
         * it declares none: the compiler checks nothing there */
        if (strcmp(names[i], "json_merge") == 0)
            cr_assert_null(l->args);
        else
            cr_assert_not_null(l->args, "%s declares its args", names[i]);
        cr_assert_not_null(l->summary);
        cr_assert(l->flags & LOOM_LAMBDA_PURE, "%s should be pure", names[i]);
    }
    cr_assert(find("trim")->flags & LOOM_LAMBDA_FAST);
    cr_assert_eq(find("regex_match")->flags & LOOM_LAMBDA_FAST, 0u);
}

/* ---- json_parse / json_stringify ---- */

Test(std, json_parse_values)
{
    expect("json_parse", "\"{\\\"a\\\": [1, 2.5, null, true]}\"", NULL,
           "{\"a\": [1, 2.5, null, true]}");
    expect("json_parse", "\"42\"", NULL, "42");
    expect("json_parse", "\"\\\"h\\u00e9\\\"\"", NULL, "\"h\\u00e9\"");
    expect("json_parse", "\" [ ] \"", "{}", "[]");
}

Test(std, json_parse_invalid_reports_position)
{
    expect_fail("json_parse", "\"{\\\"a\\\": 1,\\n \\\"b\\\": }\"", NULL, "invalid JSON at line 2");
    cr_assert(strstr(tc.msg, "column"), "%s", tc.msg);
    expect_fail("json_parse", "\"\"", NULL, "invalid JSON");
}

Test(std, json_parse_wrong_input)
{
    expect_fail("json_parse", "[1]", NULL, "std.json_parse: input must be a string, got an array");
    expect_fail("json_parse", "\"1\"", "[1]", "args must be a mapping");
}

Test(std, json_stringify)
{
    expect("json_stringify", "{\"a\": [1, \"x\"]}", NULL, "\"{\\\"a\\\":[1,\\\"x\\\"]}\"");
    expect("json_stringify", "{\"a\": 1}", "{\"pretty\": true}", "\"{\\n  \\\"a\\\": 1\\n}\"");
    expect("json_stringify", "\"\\u00e9\"", NULL, "\"\\\"\\u00e9\\\"\"");
    expect("json_stringify", "null", "{\"pretty\": \"false\"}", "\"null\"");
    expect_fail("json_stringify", "1", "{\"pretty\": 3}", "args.pretty must be a boolean");
}

/* ---- json_pick ---- */

Test(std, json_pick_keys)
{
    /* As in parse-meeting-request: a missing field is left out. */
    expect("json_pick", "{\"name\": \"Ann\", \"company\": \"X\", \"urgency\": \"low\"}",
           "{\"keys\": [\"name\", \"company\", \"topic\"]}",
           "{\"name\": \"Ann\", \"company\": \"X\"}");
    expect("json_pick", "{\"a\": 1}", "{\"keys\": []}", "{}");
}

Test(std, json_pick_key_and_path)
{
    expect("json_pick", "{\"a\": {\"b\": [7, 8]}}", "{\"key\": \"a\"}", "{\"b\": [7, 8]}");
    expect("json_pick", "{\"a\": {\"b\": [7, 8]}}", "{\"path\": \"a.b.1\"}", "8");
    expect("json_pick", "[{\"x\": 1}]", "{\"path\": \"0.x\"}", "1");
    expect("json_pick", "{\"a\": 1}", "{\"key\": \"z\"}", "null");
    expect("json_pick", "{\"a\": 1}", "{\"path\": \"a.b\", \"default\": \"none\"}", "\"none\"");
    expect("json_pick", "{\"a\": [1]}", "{\"path\": \"a.-1\"}", "null");
    expect("json_pick", "{\"a.b\": 2}", "{\"key\": \"a.b\"}", "2");
}

Test(std, json_pick_bad_args)
{
    expect_fail("json_pick", "{}", NULL, "exactly one of");
    expect_fail("json_pick", "{}", "{\"key\": \"a\", \"path\": \"a\"}", "exactly one of");
    expect_fail("json_pick", "{}", "{\"keys\": \"a\"}", "args.keys must be a list");
    expect_fail("json_pick", "{}", "{\"keys\": [\"a\", 1]}", "args.keys[1] must be a string");
    expect_fail("json_pick", "{}", "{\"key\": 3}", "args.key must be a string");
    expect_fail("json_pick", "\"s\"", "{\"keys\": [\"a\"]}",
                "std.json_pick: input must be an object, got a string");
    expect_fail("json_pick", "3", "{\"path\": \"a\"}", "input must be an object or an array");
}

/* ---- json_merge ---- */

Test(std, json_merge_args_win)
{
    /* The last step of parse-meeting-request. */
    expect("json_merge", "{\"name\": \"Ann\", \"sender\": \"old\"}",
           "{\"sender\": \"a@b.c\", \"dates\": \"2024-05-01\", \"word_count\": \"12\"}",
           "{\"name\": \"Ann\", \"sender\": \"a@b.c\", \"dates\": \"2024-05-01\", "
           "\"word_count\": \"12\"}");
    expect("json_merge", "null", "{\"a\": 1}", "{\"a\": 1}");
    expect("json_merge", "{\"a\": 1}", NULL, "{\"a\": 1}");
}

Test(std, json_merge_objects_list)
{
    expect("json_merge", "{\"a\": 1, \"b\": 1}",
           "{\"objects\": [{\"b\": 2, \"c\": 2}, {\"c\": 3}]}",
           "{\"a\": 1, \"b\": 2, \"c\": 3}");
    expect_fail("json_merge", "{}", "{\"objects\": [{}, 5]}", "args.objects[1] must be an object");
    expect_fail("json_merge", "{}", "{\"objects\": {}}", "args.objects must be a list");
    expect_fail("json_merge", "[1]", "{\"a\": 1}",
                "std.json_merge: input must be an object, got an array");
}

Test(std, json_merge_leaves_input_alone)
{
    json_t *in = parse("{\"a\": 1}"), *args = parse("{\"a\": 2, \"b\": 3}"), *out;

    ctx_reset(&tc);
    out = find("json_merge")->fn(&tc.base, state, in, args);
    cr_assert_not_null(out);
    cr_assert_eq(json_integer_value(json_object_get(in, "a")), 1);
    cr_assert_null(json_object_get(in, "b"));
    cr_assert_eq(json_integer_value(json_object_get(out, "a")), 2);
    cr_assert_eq(in->refcount, 1);
    cr_assert_eq(args->refcount, 1);
    json_decref(out);
    json_decref(in);
    json_decref(args);
}

/* ---- const / length ---- */

Test(std, const_value)
{
    /* As in resilient-answer and merge-safety-vote. */
    expect("const", "{\"ignored\": 1}", "{\"value\": \"no action\"}", "\"no action\"");
    expect("const", NULL, "{\"value\": {\"winner\": \"x\", \"votes\": 0, \"tally\": {}}}",
           "{\"winner\": \"x\", \"votes\": 0, \"tally\": {}}");
    expect("const", "1", "{\"value\": null}", "null");
    expect_fail("const", "1", NULL, "std.const: args.value is required");
    expect_fail("const", "1", "\"v\"", "args must be a mapping, got a string");
}

Test(std, length)
{
    expect("length", "\"h\\u00e9llo \\u20ac\\ud83d\\ude00\"", NULL, "8");
    expect("length", "\"\"", NULL, "0");
    expect("length", "[1, [2, 3], 4]", NULL, "3");
    expect("length", "{\"a\": 1, \"b\": 2}", NULL, "2");
    expect_fail("length", "12", NULL,
                "std.length: input must be a string, an array or an object, got an integer");
    expect_fail("length", "null", NULL, "got null");
}

/* ---- text_template ---- */

Test(std, text_template_fills)
{
    expect("text_template", "{\"name\": \"Zo\\u00eb\", \"n\": 3, \"o\": {\"k\": [1, true]}}",
           "{\"template\": \"Hi {name}, {n} new; {o.k.0}/{o} {{literal}} }\"}",
           "\"Hi Zo\\u00eb, 3 new; 1/{\\\"k\\\":[1,true]} {literal} }\"");
    expect("text_template", "7", "{\"template\": \"no placeholders\"}", "\"no placeholders\"");
}

Test(std, text_template_errors)
{
    expect_fail("text_template", "{}", NULL, "args.template is required");
    expect_fail("text_template", "{}", "{\"template\": \"{x}\"}", "placeholder {x} is not in the input");
    expect_fail("text_template", "{\"x\": 1}", "{\"template\": \"a {x\"}", "unclosed {");
    expect_fail("text_template", "{}", "{\"template\": \"a {} b\"}", "empty placeholder");
    expect_fail("text_template", "\"s\"", "{\"template\": \"{x}\"}", "input must be an object");
    expect_fail("text_template", "{}", "{\"template\": [\"x\"]}", "args.template must be a string");
}

/* ---- trim ---- */

Test(std, trim_ascii_and_unicode)
{
    expect("trim", "\"  \\t hello  world \\r\\n\"", NULL, "\"hello  world\"");
    /* No-break space, ideographic space, BOM, em space. */
    expect("trim", "\"\\u00a0\\ufeff\\u3000caf\\u00e9\\u2003\\u00a0\"", NULL, "\"caf\\u00e9\"");
    expect("trim", "\" \\u00e9 \"", NULL, "\"\\u00e9\"");
    expect("trim", "\"\\u4e2d\\u6587\"", NULL, "\"\\u4e2d\\u6587\"");
    expect("trim", "\" \\n\\u00a0 \"", NULL, "\"\"");
    expect("trim", "\"\"", NULL, "\"\"");
}

Test(std, trim_wrong_input)
{
    expect_fail("trim", "[\" a \"]", NULL, "std.trim: input must be a string, got an array");
    expect_fail("trim", "null", NULL, "got null");
    expect_fail("trim", NULL, NULL, "got nothing");
}

/* ---- split / join ---- */

Test(std, split_whitespace_runs)
{
    expect("split", "\"  a\\tb\\n\\n c\\u00a0d  \"", NULL, "[\"a\", \"b\", \"c\", \"d\"]");
    expect("split", "\"   \"", NULL, "[]");
    expect("split", "\"\\u00e9t\\u00e9 \\u4e2d\"", "{\"separator\": null}",
           "[\"\\u00e9t\\u00e9\", \"\\u4e2d\"]");
}

Test(std, split_separator)
{
    /* As in parse-meeting-request. */
    expect("split", "\"let us meet\"", "{\"separator\": \" \"}", "[\"let\", \"us\", \"meet\"]");
    expect("split", "\"a,,b,\"", "{\"separator\": \",\"}", "[\"a\", \"\", \"b\", \"\"]");
    expect("split", "\"a::b:c\"", "{\"separator\": \"::\"}", "[\"a\", \"b:c\"]");
    expect("split", "\"\"", "{\"separator\": \",\"}", "[\"\"]");
    expect("split", "\"x\\u2192y\\u2192z\"", "{\"separator\": \"\\u2192\"}", "[\"x\", \"y\", \"z\"]");
}

Test(std, split_characters)
{
    expect("split", "\"a\\u00e9\\ud83d\\ude00\"", "{\"separator\": \"\"}",
           "[\"a\", \"\\u00e9\", \"\\ud83d\\ude00\"]");
}

Test(std, split_errors)
{
    expect_fail("split", "[1]", NULL, "std.split: input must be a string, got an array");
    expect_fail("split", "\"a\"", "{\"separator\": 1}", "args.separator must be a string");
}

Test(std, join)
{
    expect("join", "[\"a\", \"b\", \"c\"]", NULL, "\"abc\"");
    expect("join", "[\"a\", \"b\"]", "{\"separator\": \", \"}", "\"a, b\"");
    expect("join", "[\"\\u00e9\", 1, 2.5, true]", "{\"separator\": \"\\u2013\"}",
           "\"\\u00e9\\u20131\\u20132.5\\u2013true\"");
    expect("join", "[]", "{\"separator\": \"-\"}", "\"\"");
}

Test(std, join_errors)
{
    expect_fail("join", "\"abc\"", NULL, "std.join: input must be a list, got a string");
    expect_fail("join", "[\"a\", {}]", NULL, "input[1] must be a string, a number or a boolean");
    expect_fail("join", "[\"a\", null]", NULL, "got null");
    expect_fail("join", "[]", "{\"separator\": []}", "args.separator must be a string");
}

/* ---- regex_match ---- */

Test(std, regex_match)
{
    /* The gate of parse-meeting-request. */
    expect("regex_match", "\"Can we schedule a call?\"",
           "{\"pattern\": \"[Mm]eet|[Cc]all|[Ss]chedul\"}", "true");
    expect("regex_match", "\"Invoice attached\"",
           "{\"pattern\": \"[Mm]eet|[Cc]all|[Ss]chedul\"}", "false");
    expect("regex_match", "\"abc\"", "{\"pattern\": \"^a(b|x)+c$\"}", "true");
    expect("regex_match", "\"\"", "{\"pattern\": \"^$\"}", "true");
}

Test(std, regex_match_flags)
{
    expect("regex_match", "\"HELLO\"", "{\"pattern\": \"hello\"}", "false");
    expect("regex_match", "\"HELLO\"", "{\"pattern\": \"hello\", \"flags\": \"i\"}", "true");
    expect("regex_match", "\"a\\nb\"", "{\"pattern\": \"^b$\"}", "false");
    expect("regex_match", "\"a\\nb\"", "{\"pattern\": \"^b$\", \"flags\": \"m\"}", "true");
    expect_fail("regex_match", "\"x\"", "{\"pattern\": \"x\", \"flags\": \"g\"}", "unknown flag 'g'");
}

Test(std, regex_invalid_pattern)
{
    expect_fail("regex_match", "\"x\"", "{\"pattern\": \"(ab\"}", "std.regex_match: invalid pattern \"(ab\"");
    expect_fail("regex_extract", "\"x\"", "{\"pattern\": \"a{2,1}\"}", "invalid pattern");
    expect_fail("regex_match", "\"x\"", "{\"pattern\": \"[z-a]\"}", "invalid pattern");
    /* A failed compilation is not cached; the next call fails the same way. */
    expect_fail("regex_match", "\"x\"", "{\"pattern\": \"(ab\"}", "invalid pattern");
}

Test(std, regex_bad_args_and_input)
{
    expect_fail("regex_match", "\"x\"", NULL, "std.regex_match: args.pattern is required");
    expect_fail("regex_match", "\"x\"", "{\"pattern\": 5}", "args.pattern must be a string");
    expect_fail("regex_match", "\"x\"", "{\"pattern\": \"a\\u0000b\"}", "NUL");
    expect_fail("regex_match", "{\"a\": 1}", "{\"pattern\": \"a\"}",
                "std.regex_match: input must be a string, got an object");
    expect_fail("regex_extract", "3", "{\"pattern\": \"a\"}", "input must be a string, got an integer");
    expect_fail("regex_extract", "\"a\"", "{\"pattern\": \"a\", \"all\": 2}", "args.all must be a boolean");
}

Test(std, regex_utf8)
{
    /* One `.` per character, not per byte. */
    expect("regex_match", "\"\\u00e9\\u20ac\"", "{\"pattern\": \"^.{2}$\"}", "true");
    expect("regex_match", "\"\\u00c9T\\u00c9\"", "{\"pattern\": \"\\u00e9t\\u00e9\", \"flags\": \"i\"}",
           "true");
    expect("regex_extract", "\"h\\u00e9llo w\\u00f6rld\"", "{\"pattern\": \"[^ ]+\", \"all\": true}",
           "[\"h\\u00e9llo\", \"w\\u00f6rld\"]");
    expect("regex_extract", "\"\\u4e2d\\u6587abc\"", "{\"pattern\": \"^..\"}", "\"\\u4e2d\\u6587\"");
}

Test(std, regex_nul_in_input)
{
    expect("regex_match", "\"a\\u0000b\"", "{\"pattern\": \"b$\"}", "true");
    expect("regex_extract", "\"x\\u0000yz\"", "{\"pattern\": \"y.\"}", "\"yz\"");
}

/* ---- regex_extract ---- */

Test(std, regex_extract_whole_match)
{
    /* The `dates` step of parse-meeting-request. */
    expect("regex_extract", "\"Meet on 2024-05-01 or 2024-05-02?\"",
           "{\"pattern\": \"[0-9]{4}-[0-9]{2}-[0-9]{2}\"}", "\"2024-05-01\"");
    expect("regex_extract", "\"no date\"", "{\"pattern\": \"[0-9]{4}-[0-9]{2}-[0-9]{2}\"}", "null");
}

Test(std, regex_extract_groups)
{
    const char *in = "\"k1=v1; k2=v2\"";

    expect("regex_extract", in, "{\"pattern\": \"([a-z0-9]+)=([a-z0-9]+)\"}", "[\"k1\", \"v1\"]");
    expect("regex_extract", in, "{\"pattern\": \"([a-z0-9]+)=([a-z0-9]+)\", \"group\": 2}", "\"v1\"");
    expect("regex_extract", in, "{\"pattern\": \"([a-z0-9]+)=([a-z0-9]+)\", \"group\": \"0\"}",
           "\"k1=v1\"");
    expect("regex_extract", "\"ac\"", "{\"pattern\": \"a(b)?c\"}", "[null]");
    expect_fail("regex_extract", in, "{\"pattern\": \"(a)\", \"group\": 2}",
                "args.group must be between 0 and 1");
    expect_fail("regex_extract", in, "{\"pattern\": \"(a)\", \"group\": -1}", "args.group");
    expect_fail("regex_extract", in, "{\"pattern\": \"(a)\", \"group\": true}",
                "args.group must be an integer");
}

Test(std, regex_extract_all)
{
    const char *in = "\"k1=v1; k2=v2\"";

    expect("regex_extract", in, "{\"pattern\": \"([a-z0-9]+)=([a-z0-9]+)\", \"all\": true}",
           "[[\"k1\", \"v1\"], [\"k2\", \"v2\"]]");
    expect("regex_extract", in, "{\"pattern\": \"([a-z0-9]+)=\", \"all\": true, \"group\": 1}",
           "[\"k1\", \"k2\"]");
    expect("regex_extract", in, "{\"pattern\": \"zz\", \"all\": true}", "[]");
    /* Empty matches must not loop forever. */
    expect("regex_extract", "\"ab\"", "{\"pattern\": \"x*\", \"all\": true}", "[\"\", \"\", \"\"]");
    expect("regex_extract", "\"\\u00e9\\u00e9\"", "{\"pattern\": \"x*\", \"all\": true}",
           "[\"\", \"\", \"\"]");
    expect("regex_extract", "\"aab\"", "{\"pattern\": \"a*\", \"all\": true}", "[\"aa\", \"\", \"\"]");
}

/* ---- the regex cache ---- */

Test(std, regex_cache_reused_across_calls)
{
    unsigned long compiles, hits;

    for (int i = 0; i < 5; i++)
        expect("regex_match", "\"abc\"", "{\"pattern\": \"b+\"}", "true");
    expect("regex_extract", "\"abc\"", "{\"pattern\": \"b+\"}", "\"b\"");
    std_regex_stats(state, &compiles, &hits);
    cr_assert_eq(compiles, 1);
    cr_assert_eq(hits, 5);
    /* Flags are part of the key. */
    expect("regex_match", "\"ABC\"", "{\"pattern\": \"b+\", \"flags\": \"i\"}", "true");
    std_regex_stats(state, &compiles, &hits);
    cr_assert_eq(compiles, 2);
}

Test(std, regex_cache_eviction)
{
    unsigned long compiles, hits;
    char args[64], in[32];

    /* More patterns than the cache holds, twice: all stay correct. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 300; i++) {
            snprintf(args, sizeof args, "{\"pattern\": \"^x%dy$\"}", i);
            snprintf(in, sizeof in, "\"x%dy\"", i);
            expect("regex_match", in, args, "true");
        }
    }
    std_regex_stats(state, &compiles, &hits);
    cr_assert_eq(compiles, 600, "LRU eviction over a cyclic scan recompiles: %lu", compiles);
    expect("regex_match", "\"x299y\"", "{\"pattern\": \"^x299y$\"}", "true");
    std_regex_stats(state, &compiles, &hits);
    cr_assert_eq(hits, 1);
}

Test(std, regex_without_state)
{
    /* A host that skipped init: still correct, just uncached. */
    test_ctx t;
    json_t *out = call_in(&t, NULL, "regex_extract", "\"a1b22\"", "{\"pattern\": \"[0-9]+\", \"all\": true}");

    cr_assert_not_null(out);
    cr_assert_eq(json_array_size(out), 2);
    json_decref(out);
    out = call_in(&t, NULL, "regex_match", "\"x\"", "{\"pattern\": \"(\"}");
    cr_assert_null(out);
}

typedef struct worker {
    int id;
    int shared;                  /* all on one pattern, or each its own */
    int failures;
} worker;

static void *work(void *ud)
{
    worker *w = ud;
    test_ctx t;
    char args[96], in[64];

    for (int i = 0; i < 400; i++) {
        json_t *out;
        int n = w->shared ? 7 : (w->id * 1000 + i) % 300;

        snprintf(args, sizeof args, "{\"pattern\": \"^id-%d-([0-9]+)$\", \"group\": 1}", n);
        snprintf(in, sizeof in, "\"id-%d-%d\"", n, i);
        out = call_in(&t, state, "regex_extract", in, args);
        if (!out || !json_is_string(out) || atoi(json_string_value(out)) != i)
            w->failures++;
        json_decref(out);
    }
    return NULL;
}

static void run_workers(int shared)
{
    pthread_t th[4];
    worker w[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (worker){ .id = i, .shared = shared };
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failures, 0, "thread %d: %d failures", i, w[i].failures);
    }
}

Test(std, regex_concurrent_one_pattern)
{
    unsigned long compiles, hits;

    run_workers(1);
    std_regex_stats(state, &compiles, &hits);
    /* Racing first calls may compile twice, but only one entry is kept. */
    cr_assert_eq(compiles, 1);
    cr_assert_eq(compiles + hits >= 1600 - 3, 1);
}

Test(std, regex_concurrent_with_eviction)
{
    /* 4 threads over 300 patterns: entries are evicted while others use them. */
    run_workers(0);
}

/* ---- hostile inputs: never crash, always a value or an error ---- */

Test(std, every_lambda_every_type)
{
    static const char *inputs[] = { NULL, "null", "true", "0", "-1.5", "\"\"", "\"a b\"",
                                    "\"\\u0000\"", "[]", "[null, {}]", "{}",
                                    "{\"a\": {\"b\": [1]}}" };
    static const char *argsets[] = { NULL, "null", "1", "\"x\"", "[]", "{}",
                                     "{\"pattern\": \"a\", \"keys\": [\"a\"], \"value\": 1, \"template\": \"{a}\"}",
                                     "{\"pattern\": 1, \"flags\": [], \"group\": {}, \"all\": \"x\", \"separator\": {}, \"pretty\": []}",
                                     "{\"path\": \"a..b.\", \"objects\": [[]], \"template\": \"{\"}",
                                     "{\"key\": \"\", \"group\": 99999999999, \"pattern\": \"\"}" };

    for (size_t l = 0; l < plugin->nlambdas; l++)
        for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
            for (size_t a = 0; a < sizeof argsets / sizeof argsets[0]; a++)
                json_decref(call(plugin->lambdas[l].name, inputs[i], argsets[a]));
}
