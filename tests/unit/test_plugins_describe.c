/* test_plugins_describe.c -- plugins_describe, the document behind the
 * `plugins` op, `loomctl plugins` and docs/lambdas.md: the built-ins with
 * their filled-in texts, a shared object declaring every field (its file,
 * arguments in declaration order, defaults, flags, its provider), a plugin
 * of ABI 2.0 (fields it cannot have read as null), the order of plugins
 * and the isolation callback. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/plugins/plugins.h"
#include "loom/plugin.h"

/* The host's ABI as "MAJOR.MINOR": what the document and plugins built
 * with the current header say. */
#define ABI_STR2(x) #x
#define ABI_STR(x) ABI_STR2(x)
#define HOST_ABI ABI_STR(LOOM_ABI_MAJOR) "." ABI_STR(LOOM_ABI_MINOR)

static const char *plugin_path(const char *rel)
{
    static char buf[PATH_MAX];
    const char *b = getenv("LOOM_BUILDDIR");
    snprintf(buf, sizeof buf, "%s/tests/plugins/%s", b ? b : ".", rel);
    return buf;
}

static void fail_on_log(void *ud, const char *line)
{
    cr_assert_fail("the loader said: %s", line);
}

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* The member of array ARR whose "name" is NAME, or NULL. */
static json_t *named(const json_t *arr, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
        if (str(e, "name") && strcmp(str(e, "name"), name) == 0)
            return e;
    return NULL;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_SORT_KEYS);
}

typedef struct iso_calls {
    int n;
    const char *only;     /* the plugin said to be isolated */
} iso_calls;

static bool isolated_one(void *ud, const char *name)
{
    iso_calls *c = ud;
    c->n++;
    return strcmp(name, c->only) == 0;
}

Test(describe, builtins)
{
    plugins_t *p = plugins_new(fail_on_log, NULL);
    cr_assert(p);
    cr_assert_eq(plugins_add_builtins(p), 0);
    json_t *doc = plugins_describe(p, NULL, NULL);
    cr_assert(doc);
    cr_assert_str_eq(str(doc, "abi"), HOST_ABI);
    const json_t *list = json_object_get(doc, "plugins");
    /* by name, not in load order (std is loaded first) */
    const char *want[] = { "anthropic", "mock", "openai", "std" };
    cr_assert_eq(json_array_size(list), 4, "%s", dump(doc));
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(str(json_array_get(list, i), "name"), want[i]);

    const json_t *std = named(list, "std");
    cr_assert(json_is_true(json_object_get(std, "builtin")));
    cr_assert(json_is_null(json_object_get(std, "file")), "a built-in has no file");
    cr_assert(json_is_false(json_object_get(std, "isolated")));
    cr_assert_str_eq(str(std, "abi"), HOST_ABI);
    cr_assert(str(std, "version") && str(std, "description"));
    cr_assert_eq(json_array_size(json_object_get(std, "providers")), 0);

    /* lambdas in declaration order, named plugin.lambda */
    const json_t *lambdas = json_object_get(std, "lambdas");
    cr_assert_str_eq(str(json_array_get(lambdas, 0), "name"), "std.json_parse");
    const json_t *trim = named(lambdas, "std.trim");
    cr_assert(trim, "%s", dump(lambdas));
    char *flags = dump(json_object_get(trim, "flags"));
    cr_assert_str_eq(flags, "[\"pure\", \"fast\"]");
    free(flags);
    cr_assert(json_is_array(json_object_get(trim, "args")), "declared, empty");
    cr_assert_eq(json_array_size(json_object_get(trim, "args")), 0);
    char *rflags = dump(json_object_get(named(lambdas, "std.regex_match"), "flags"));
    cr_assert_str_eq(rflags, "[\"pure\"]");
    free(rflags);

    /* every built-in lambda documents itself: the reference is generated
     * from these fields */
    size_t i;
    const json_t *l;
    json_array_foreach(lambdas, i, l) {
        cr_assert(str(l, "summary") && *str(l, "summary"), "%s has no summary", str(l, "name"));
        cr_assert(str(l, "doc") && *str(l, "doc"), "%s has no doc", str(l, "name"));
        cr_assert(str(l, "example") && strstr(str(l, "example"), str(l, "name")),
                  "%s has no example calling it", str(l, "name"));
    }

    /* arguments as declared: type names, required, defaults as written */
    const json_t *args = json_object_get(named(lambdas, "std.regex_extract"), "args");
    const json_t *pattern = named(args, "pattern"), *all = named(args, "all");
    cr_assert_str_eq(str(pattern, "type"), "string");
    cr_assert(json_is_true(json_object_get(pattern, "required")));
    cr_assert(json_is_null(json_object_get(pattern, "default")));
    cr_assert(str(pattern, "description"));
    cr_assert_str_eq(str(all, "type"), "bool");
    cr_assert(json_is_false(json_object_get(all, "required")));
    cr_assert_str_eq(str(all, "default"), "false");

    const json_t *mock = named(list, "mock");
    const json_t *mprov = json_array_get(json_object_get(mock, "providers"), 0);
    cr_assert_str_eq(str(mprov, "transport"), "invoke");
    const json_t *oprov = named(json_object_get(named(list, "openai"), "providers"), "openai");
    cr_assert(oprov, "%s", dump(list));
    cr_assert_str_eq(str(oprov, "transport"), "http");
    cr_assert(json_is_integer(json_object_get(oprov, "max_batch")));
    cr_assert(json_array_size(json_object_get(oprov, "options")) > 0);
    /* the Batch API (2.4): the provider's limits, null for one without it */
    const json_t *api = json_object_get(oprov, "batch_api");
    cr_assert_eq(json_integer_value(json_object_get(api, "max_lines")), 50000, "%s", dump(list));
    cr_assert_eq(json_integer_value(json_object_get(api, "max_bytes")), 200000000);
    cr_assert(json_is_null(json_object_get(mprov, "batch_api")), "%s", dump(list));
    json_decref(doc);
    plugins_free(p);
}

Test(describe, shared_object_with_every_field)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", plugin_path(".libs/described.so"));
    plugins_t *p = plugins_new(fail_on_log, NULL);
    cr_assert(p);
    cr_assert_eq(plugins_add_builtins(p), 0);
    cr_assert_eq(plugins_load_file(p, path, NULL), 0);
    iso_calls calls = { .only = "described" };
    json_t *doc = plugins_describe(p, isolated_one, &calls);
    cr_assert(doc);
    cr_assert_eq(calls.n, 5, "asked once per plugin, with UD passed through");
    const json_t *list = json_object_get(doc, "plugins");
    cr_assert_str_eq(str(json_array_get(list, 1), "name"), "described", "sorted by name");
    const json_t *d = named(list, "described");
    cr_assert_str_eq(str(d, "file"), path);
    cr_assert(json_is_false(json_object_get(d, "builtin")));
    cr_assert(json_is_true(json_object_get(d, "isolated")));
    cr_assert(json_is_false(json_object_get(named(list, "std"), "isolated")));
    cr_assert_str_eq(str(d, "version"), "0.3.1");
    cr_assert_str_eq(str(d, "abi"), HOST_ABI);

    /* the plugin's own configuration map */
    const json_t *opts = json_object_get(d, "options");
    cr_assert_eq(json_array_size(opts), 2);
    cr_assert_str_eq(str(named(opts, "volume"), "type"), "double");
    cr_assert_str_eq(str(named(opts, "volume"), "default"), "0.5");
    cr_assert_str_eq(str(named(opts, "table"), "type"), "json");

    const json_t *lambdas = json_object_get(d, "lambdas");
    cr_assert_eq(json_array_size(lambdas), 3);
    const json_t *shout = json_array_get(lambdas, 0), *wait = json_array_get(lambdas, 1);
    cr_assert_str_eq(str(shout, "name"), "described.shout");
    cr_assert_str_eq(str(shout, "summary"), "return the input, louder");
    cr_assert_str_eq(str(shout, "doc"), "Repeats the input `times` times.");
    cr_assert(strstr(str(shout, "example"), "described.shout"));
    const json_t *args = json_object_get(shout, "args");
    cr_assert_eq(json_array_size(args), 3);
    const char *order[] = { "times", "suffix", "voice" };
    for (size_t i = 0; i < 3; i++)
        cr_assert_str_eq(str(json_array_get(args, i), "name"), order[i], "declaration order");
    const json_t *times = json_array_get(args, 0), *suffix = json_array_get(args, 1),
                 *voice = json_array_get(args, 2);
    cr_assert_str_eq(str(times, "type"), "int");
    cr_assert_str_eq(str(times, "default"), "1");
    cr_assert_str_eq(str(times, "description"), "how often to repeat | the text");
    cr_assert_str_eq(str(suffix, "default"), "", "an empty default is kept, not dropped");
    cr_assert(json_is_true(json_object_get(voice, "required")));
    cr_assert(json_is_null(json_object_get(voice, "default")));

    cr_assert_eq(json_array_size(json_object_get(wait, "flags")), 0);
    cr_assert(json_is_null(json_object_get(wait, "doc")));
    cr_assert(json_is_null(json_object_get(wait, "example")));
    cr_assert_str_eq(str(json_array_get(json_object_get(wait, "args"), 0), "type"), "duration");
    const json_t *anything = json_array_get(lambdas, 2);
    cr_assert_str_eq(str(anything, "name"), "described.anything");
    cr_assert(json_is_null(json_object_get(anything, "args")),
              "undeclared args are null, not an empty list");

    const json_t *prov = json_array_get(json_object_get(d, "providers"), 0);
    cr_assert_str_eq(str(prov, "name"), "described_http");
    cr_assert_str_eq(str(prov, "transport"), "http");
    cr_assert_eq(json_integer_value(json_object_get(prov, "max_batch")), 16);
    cr_assert_str_eq(str(prov, "doc"), "Only here to be described.");
    const json_t *popts = json_object_get(prov, "options");
    cr_assert(json_is_true(json_object_get(named(popts, "base_url"), "required")));
    cr_assert_str_eq(str(named(popts, "verbose"), "type"), "bool");
    json_decref(doc);
    plugins_free(p);
}

/* A plugin built against ABI 2.0 has no doc or example fields: they read
 * as null, and its own version is reported, not the host's. */
Test(describe, older_minor)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", plugin_path("abi/.libs/lambda_2_0.so"));
    plugins_t *p = plugins_new(NULL, NULL); /* its init logs at every level */
    cr_assert(p);
    cr_assert_eq(plugins_load_file(p, path, NULL), 0);
    json_t *doc = plugins_describe(p, NULL, NULL);
    cr_assert(doc);
    const json_t *pl = json_array_get(json_object_get(doc, "plugins"), 0);
    cr_assert_str_eq(str(pl, "abi"), "2.0", "%s", dump(pl));
    cr_assert_str_eq(str(doc, "abi"), HOST_ABI);
    size_t i;
    const json_t *l;
    json_array_foreach(json_object_get(pl, "lambdas"), i, l) {
        cr_assert(json_is_null(json_object_get(l, "doc")));
        cr_assert(json_is_null(json_object_get(l, "example")));
    }
    cr_assert(json_array_size(json_object_get(pl, "options")) == 0);
    json_decref(doc);
    plugins_free(p);
}

Test(describe, empty_registry)
{
    plugins_t *p = plugins_new(fail_on_log, NULL);
    cr_assert(p);
    json_t *doc = plugins_describe(p, NULL, NULL);
    cr_assert(doc);
    char *s = dump(doc);
    cr_assert_str_eq(s, "{\"abi\": \"" HOST_ABI "\", \"plugins\": []}");
    free(s);
    json_decref(doc);
    plugins_free(p);
}
