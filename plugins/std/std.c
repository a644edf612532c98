/* std.c -- the descriptor of the std plugin and its shared argument helpers.
 *
 * The lambdas themselves live in json.c, text.c and regex.c; this file only
 * declares them (names, flags, argument tables, summaries) and holds the
 * small helpers that keep their argument checking and messages uniform:
 * "std.split: input must be a string, got an array". */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/std/std.h"

const char *std_type_name(const json_t *v)
{
    if (!v)
        return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

json_t *std_bad_input(loom_ctx *ctx, const char *name, const char *want, const json_t *input)
{
    loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: input must be %s, got %s", name, want,
               std_type_name(input));
    return NULL;
}

json_t *std_nomem(loom_ctx *ctx, const char *name)
{
    loom_error(ctx, LOOM_E_NOMEM, "%s: out of memory", name);
    return NULL;
}

int std_args_check(loom_ctx *ctx, const char *name, json_t *args)
{
    if (!args || json_is_null(args) || json_is_object(args))
        return 0;
    loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args must be a mapping, got %s", name,
               std_type_name(args));
    return -1;
}

json_t *std_arg(json_t *args, const char *key)
{
    return json_is_object(args) ? json_object_get(args, key) : NULL;
}

int std_arg_string(loom_ctx *ctx, const char *name, json_t *args, const char *key,
                   const char *dflt, const char **out, size_t *len)
{
    json_t *v = std_arg(args, key);

    if (!v || json_is_null(v)) {
        if (!dflt) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.%s is required", name, key);
            return -1;
        }
        *out = dflt;
        if (len)
            *len = strlen(dflt);
        return 0;
    }
    if (!json_is_string(v)) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.%s must be a string, got %s", name,
                   key, std_type_name(v));
        return -1;
    }
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return 0;
}

int std_arg_bool(loom_ctx *ctx, const char *name, json_t *args, const char *key, int dflt,
                 int *out)
{
    json_t *v = std_arg(args, key);

    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    /* Args are templates, so a boolean may arrive rendered as text. */
    if (json_is_string(v) && (!strcmp(json_string_value(v), "true") ||
                              !strcmp(json_string_value(v), "false"))) {
        *out = !strcmp(json_string_value(v), "true");
        return 0;
    }
    loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.%s must be a boolean, got %s", name, key,
               std_type_name(v));
    return -1;
}

/* ---- argument tables ---- */

static const loom_option no_args[] = { { 0 } };

static const loom_option stringify_args[] = {
    { "pretty", LOOM_OPT_BOOL, "false", 0, "indent by two spaces instead of compact output" },
    { 0 }
};

static const loom_option pick_args[] = {
    { "keys", LOOM_OPT_JSON, NULL, 0, "list of top-level keys: returns an object of those present" },
    { "key", LOOM_OPT_STRING, NULL, 0, "one top-level key: returns its value" },
    { "path", LOOM_OPT_STRING, NULL, 0, "a dotted path such as \"a.b.0\": returns its value" },
    { "default", LOOM_OPT_JSON, "null", 0, "value for a missing key or path" },
    { 0 }
};

/* std.json_merge declares no args (NULL): its args are the object merged,
 * any keys at all, and a declaration would make the compiler refuse every
 * key but the ones it names. Its doc says what it reads (`objects`). */

static const loom_option template_args[] = {
    { "template", LOOM_OPT_STRING, NULL, 1,
      "text with {name} or {a.b} placeholders from the input; {{ and }} for braces" },
    { 0 }
};

static const loom_option split_args[] = {
    { "separator", LOOM_OPT_STRING, NULL, 0,
      "exact separator; absent: runs of whitespace; \"\": one item per character" },
    { 0 }
};

static const loom_option join_args[] = {
    { "separator", LOOM_OPT_STRING, "", 0, "put between items" },
    { 0 }
};

static const loom_option match_args[] = {
    { "pattern", LOOM_OPT_STRING, NULL, 1, "POSIX extended regular expression" },
    { "flags", LOOM_OPT_STRING, "", 0,
      "\"i\": ignore case; \"m\": ^ and $ match at line breaks too" },
    { 0 }
};

static const loom_option extract_args[] = {
    { "pattern", LOOM_OPT_STRING, NULL, 1, "POSIX extended regular expression" },
    { "flags", LOOM_OPT_STRING, "", 0,
      "\"i\": ignore case; \"m\": ^ and $ match at line breaks too" },
    { "group", LOOM_OPT_INT, NULL, 0,
      "capture group to return (0: whole match); absent: the match, or all groups if any" },
    { "all", LOOM_OPT_BOOL, "false", 0, "every match, as a list" },
    { 0 }
};

static const loom_option const_args[] = {
    { "value", LOOM_OPT_JSON, NULL, 1, "the value returned" },
    { 0 }
};

#define PF (LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST)
/* Designated, so a field a later minor adds starts NULL. */
#define LAMBDA(n, f, fl, a, s, d, e) \
    { .name = (n), .fn = (f), .flags = (fl), .args = (a), .summary = (s), .doc = (d), \
      .example = (e) }

/* ---- the reference texts (docs/lambdas.md is generated from them) ---- */

static const char json_parse_doc[] =
    "The input must be a string holding one JSON text: any value, not only an object or an "
    "array; whitespace around it is ignored. Text that is not JSON fails the step with "
    "`lambda_failed`, naming the line and column. (For a model's answer, `json: true` on the "
    "`call` parses it and fails with `invalid_output`, which `retry` can retry.)";
static const char json_parse_example[] =
    "- id: settings\n"
    "  lambda: { fn: std.json_parse, input: \"{{ input.settings_text }}\" }\n";

static const char json_stringify_doc[] =
    "Any value becomes its JSON text, compact by default. Characters outside ASCII are kept "
    "as they are (UTF-8), not escaped.";
static const char json_stringify_example[] =
    "- lambda: { fn: std.json_stringify, args: { pretty: true } }\n";

static const char json_pick_doc[] =
    "Give exactly one of `keys`, `key` and `path`. `keys` returns an object of the listed keys "
    "the input has (missing ones are left out); `key` returns the value of one top-level key "
    "(which may contain dots); `path` walks objects and arrays along a dotted path, array "
    "positions written as plain decimal indices (`items.0.title`). A missing key or path gives "
    "`default`. The input must be an object (an array too, for `path`).";
static const char json_pick_example[] =
    "- lambda: { fn: std.json_pick, args: { keys: [name, company, topic] } }\n"
    "- lambda: { fn: std.json_pick, args: { path: choices.0.text, default: \"\" } }\n";

static const char json_merge_doc[] =
    "A shallow merge into a copy of the input object (null counts as `{}`): the members of "
    "`args` (or of each object of `args.objects`, in order) are set over it, so later values "
    "win and a nested object is replaced, not merged. The input itself is never changed. "
    "Values in `args` may be templates, which is how a step adds fields computed earlier.";
static const char json_merge_example[] =
    "- lambda:\n"
    "    fn: std.json_merge\n"
    "    args: { sender: \"{{ input.from }}\", word_count: \"{{ steps.words.output | length }}\" }\n";

static const char text_template_doc[] =
    "Each `{name}` in `template` is replaced by the input's member of that name, `{a.b.0}` by "
    "the value at a dotted path; strings go in as they are, other values as compact JSON. "
    "`{{` and `}}` write literal braces. A placeholder the input lacks fails the step, so a "
    "typo never turns into an empty string. Unlike the workflow's own `{{ }}` templates, the "
    "template is applied when the step runs, to the step's input, so it can come from data.";
static const char text_template_example[] =
    "- lambda:\n"
    "    fn: std.text_template\n"
    "    args: { template: \"Dear {name}, your order {order.id} has shipped.\" }\n";

static const char trim_doc[] =
    "Whitespace is Unicode's White_Space set (no-break, ideographic and other spaces, line "
    "breaks) plus the byte order mark, which text pasted from mail and documents often "
    "carries. Whitespace inside the string is kept. The input must be a string.";
static const char trim_example[] = "- lambda: std.trim\n";

static const char split_doc[] =
    "Without `separator`, splits on runs of whitespace (as `std.trim` counts it) and drops "
    "empty pieces: `\"  a  b \"` gives `[\"a\", \"b\"]`. With a separator, splits at each "
    "exact occurrence and keeps empty pieces: `\"a,,b\"` with `\",\"` gives "
    "`[\"a\", \"\", \"b\"]`. With `separator: \"\"`, one item per character.";
static const char split_example[] =
    "- id: words\n"
    "  lambda: { fn: std.split, input: \"{{ steps.body.output }}\" }\n"
    "- lambda: { fn: std.split, args: { separator: \",\" } }\n";

static const char join_doc[] =
    "Items may be strings, numbers or booleans (numbers and booleans written as in JSON); "
    "null, lists and objects fail the step. An empty list gives `\"\"`.";
static const char join_example[] = "- lambda: { fn: std.join, args: { separator: \", \" } }\n";

static const char regex_match_doc[] =
    "Patterns are POSIX extended regular expressions, matched on UTF-8 text (`.` is one "
    "character, not one byte). `flags` may hold `i` (ignore case) and `m` (`^` and `$` match "
    "at line breaks too). Compiled patterns are cached by the plugin, so a pattern every job "
    "uses is compiled once. Returns `true` or `false`: a cheap gate before a model call.";
static const char regex_match_example[] =
    "- id: is_meeting\n"
    "  lambda:\n"
    "    fn: std.regex_match\n"
    "    args: { pattern: \"[Mm]eet|[Cc]all|[Ss]chedul\" }\n";

static const char regex_extract_doc[] =
    "Returns the first match as a string; when the pattern has capture groups, the list of "
    "its groups instead (null for a group that took no part); with `group: N`, that group "
    "alone (0: the whole match). With `all: true`, a list of one such result per match, in "
    "order. No match gives null (with `all`, an empty list). Patterns and `flags` are as for "
    "`std.regex_match`.";
static const char regex_extract_example[] =
    "- id: dates\n"
    "  lambda:\n"
    "    fn: std.regex_extract\n"
    "    args: { pattern: \"[0-9]{4}-[0-9]{2}-[0-9]{2}\", all: true }\n";

static const char const_doc[] =
    "Returns `value` (any value; the strings in it are templates) whatever the input: a "
    "fallback answer in `on_error`, or a fixed result for a route's default case.";
static const char const_example[] =
    "default: { lambda: { fn: std.const, args: { value: \"no action\" } } }\n";

static const char length_doc[] =
    "Counts the characters (Unicode code points, not bytes) of a string, the items of an "
    "array or the members of an object; any other input fails the step.";
static const char length_example[] = "- lambda: std.length\n";

/* Regex lambdas are PURE but not FAST: they take the cache mutex and a
 * pattern's cost is not bounded, so they stay off the reactor thread. */
static const loom_lambda std_lambdas[] = {
    LAMBDA("json_parse", std_json_parse, PF, no_args, "parse a JSON string into a value",
           json_parse_doc, json_parse_example),
    LAMBDA("json_stringify", std_json_stringify, PF, stringify_args, "encode a value as JSON text",
           json_stringify_doc, json_stringify_example),
    LAMBDA("json_pick", std_json_pick, PF, pick_args, "pick keys or one path out of the input",
           json_pick_doc, json_pick_example),
    LAMBDA("json_merge", std_json_merge, PF, NULL,
      "shallow-merge args (or args.objects) over the input object; later wins",
      json_merge_doc, json_merge_example),
    LAMBDA("text_template", std_text_template, PF, template_args,
      "fill {name} placeholders of args.template from the input", text_template_doc,
      text_template_example),
    LAMBDA("trim", std_trim, PF, no_args, "strip leading and trailing (Unicode) whitespace",
           trim_doc, trim_example),
    LAMBDA("split", std_split, PF, split_args, "split a string into a list of strings",
           split_doc, split_example),
    LAMBDA("join", std_join, PF, join_args, "join a list of strings (or numbers) into one",
           join_doc, join_example),
    LAMBDA("regex_match", std_regex_match, LOOM_LAMBDA_PURE, match_args,
      "whether the input string matches a POSIX ERE", regex_match_doc, regex_match_example),
    LAMBDA("regex_extract", std_regex_extract, LOOM_LAMBDA_PURE, extract_args,
      "the first (or every) match or capture groups of a POSIX ERE, or null",
      regex_extract_doc, regex_extract_example),
    LAMBDA("const", std_const, PF, const_args, "return args.value, ignoring the input",
           const_doc, const_example),
    LAMBDA("length", std_length, PF, no_args,
           "characters of a string, items of an array or object", length_doc, length_example),
};

static const loom_plugin std_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "std",
    .version = "1.0.0",
    .description = "Loom's standard lambdas: JSON shaping, text and POSIX regexes",
    .lambdas = std_lambdas,
    .nlambdas = sizeof std_lambdas / sizeof std_lambdas[0],
    .providers = NULL,
    .nproviders = 0,
    .init = std_init,
    .fini = std_fini,
};

LOOM_PLUGIN_DEFINE(std)
{
    return &std_plugin;
}
