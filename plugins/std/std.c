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

static const loom_option merge_args[] = {
    { "objects", LOOM_OPT_JSON, NULL, 0,
      "list of objects merged over the input in order; without it, args itself is merged" },
    { 0 }
};

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
    { "flags", LOOM_OPT_STRING, "", 0, "\"i\": ignore case" },
    { 0 }
};

static const loom_option extract_args[] = {
    { "pattern", LOOM_OPT_STRING, NULL, 1, "POSIX extended regular expression" },
    { "flags", LOOM_OPT_STRING, "", 0, "\"i\": ignore case" },
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
/* Designated, so the fields later minors add (doc, example) start NULL. */
#define LAMBDA(n, f, fl, a, s) \
    { .name = (n), .fn = (f), .flags = (fl), .args = (a), .summary = (s) }

/* Regex lambdas are PURE but not FAST: they take the cache mutex and a
 * pattern's cost is not bounded, so they stay off the reactor thread. */
static const loom_lambda std_lambdas[] = {
    LAMBDA("json_parse", std_json_parse, PF, no_args, "parse a JSON string into a value"),
    LAMBDA("json_stringify", std_json_stringify, PF, stringify_args, "encode a value as JSON text"),
    LAMBDA("json_pick", std_json_pick, PF, pick_args, "pick keys or one path out of the input"),
    LAMBDA("json_merge", std_json_merge, PF, merge_args,
      "shallow-merge args (or args.objects) over the input object; later wins"),
    LAMBDA("text_template", std_text_template, PF, template_args,
      "fill {name} placeholders of args.template from the input"),
    LAMBDA("trim", std_trim, PF, no_args, "strip leading and trailing (Unicode) whitespace"),
    LAMBDA("split", std_split, PF, split_args, "split a string into a list of strings"),
    LAMBDA("join", std_join, PF, join_args, "join a list of strings (or numbers) into one"),
    LAMBDA("regex_match", std_regex_match, LOOM_LAMBDA_PURE, match_args,
      "whether the input string matches a POSIX ERE"),
    LAMBDA("regex_extract", std_regex_extract, LOOM_LAMBDA_PURE, extract_args,
      "the first (or every) match or capture groups of a POSIX ERE, or null"),
    LAMBDA("const", std_const, PF, const_args, "return args.value, ignoring the input"),
    LAMBDA("length", std_length, PF, no_args,
           "characters of a string, items of an array or object"),
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
