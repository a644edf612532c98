/* test_loomd_plugins.c -- `loomctl plugins` (the real binary) against a
 * real loomd whose plugin directory holds a test plugin, isolated by the
 * config: the `plugins` op's document, the list for people, the Markdown
 * page; and the offline forms (--builtin, --config) that need no daemon,
 * which give the same document.
 *
 * loomctl is $LOOM_BUILDDIR/loomctl; each run is bounded by its own
 * --timeout (loomd answers the op at once). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "loom/plugin.h"
#include "tests/unit/loomd_harness.h"

#define ABI_STR2(x) #x
#define ABI_STR(x) ABI_STR2(x)
#define HOST_ABI ABI_STR(LOOM_ABI_MAJOR) "." ABI_STR(LOOM_ABI_MINOR)

static lh_daemon D;
static char plugin_dir[400];

static void teardown(void)
{
    lh_teardown(&D);
}

/* A loomd with DIR/plugins/described.so, isolated in a helper. */
static void start(void)
{
    lh_setup(&D, NULL, NULL);
    char repl[1024];
    lh_plugin_dir(&D, (const char *const[]){ "described", NULL }, plugin_dir, sizeof plugin_dir);
    snprintf(repl, sizeof repl,
             "shutdown_grace: 5s\n"
             "plugins:\n"
             "  dirs: [%s]\n"
             "  isolate: [described]\n",
             plugin_dir);
    lh_config_replace(&D, "shutdown_grace: 5s\n", repl);
    lh_start(&D);
}

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static json_t *named(const json_t *arr, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
        if (str(e, "name") && strcmp(str(e, "name"), name) == 0)
            return e;
    return NULL;
}

/* The checks every document of this loomd's plugins passes (from the op,
 * from loomctl, offline from its config); TEXT is shown on failure. */
static void check_document(const json_t *doc, const char *text)
{
    cr_assert_str_eq(str(doc, "abi"), HOST_ABI, "%s", text);
    const json_t *list = json_object_get(doc, "plugins");
    const json_t *std = named(list, "std");
    cr_assert(std, "%s", text);
    cr_assert(json_is_true(json_object_get(std, "builtin")));
    const json_t *trim = named(json_object_get(std, "lambdas"), "std.trim");
    cr_assert(trim, "%s", text);
    cr_assert_str_eq(str(trim, "summary"), "strip leading and trailing (Unicode) whitespace");
    const json_t *split = named(json_object_get(std, "lambdas"), "std.split");
    const json_t *sep = named(json_object_get(split, "args"), "separator");
    cr_assert_str_eq(str(sep, "type"), "string", "%s", text);
    cr_assert(json_is_false(json_object_get(sep, "required")));

    const json_t *d = named(list, "described");
    cr_assert(d, "%s", text);
    char want[600];
    snprintf(want, sizeof want, "%s/described.so", plugin_dir);
    cr_assert_str_eq(str(d, "file"), want);
    cr_assert(json_is_true(json_object_get(d, "isolated")), "%s", text);
    cr_assert(json_is_false(json_object_get(std, "isolated")));
    const json_t *shout = named(json_object_get(d, "lambdas"), "described.shout");
    const json_t *voice = named(json_object_get(shout, "args"), "voice");
    cr_assert(json_is_true(json_object_get(voice, "required")), "%s", text);
}

/* Every member name of every object in V (but the reply's own "id" and
 * "ok") must appear in SECTION, docs/protocol.md's text of the op, as
 * `NAME` or as the last part of a path (`plugins[].NAME`): the document is
 * a public interface, so a member added without a word fails here. */
static void check_documented(const json_t *v, const char *section)
{
    size_t i;
    const char *key;
    json_t *e;
    if (json_is_array(v))
        json_array_foreach((json_t *)v, i, e)
            check_documented(e, section);
    if (!json_is_object(v))
        return;
    json_object_foreach((json_t *)v, key, e) {
        char plain[128], path[128];
        snprintf(plain, sizeof plain, "`%s`", key);
        snprintf(path, sizeof path, ".%s`", key);
        if (strcmp(key, "id") && strcmp(key, "ok"))
            cr_assert(strstr(section, plain) || strstr(section, path),
                      "docs/protocol.md does not describe the member %s of the plugins op", key);
        check_documented(e, section);
    }
}

Test(loomd_plugins, op_and_json, .fini = teardown)
{
    start();
    /* the op itself, over the socket */
    json_t *r = lh_call(&D, "{\"id\":3,\"op\":\"plugins\"}", 5000);
    cr_assert(r, "no reply");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(r, "id")), 3);
    check_document(r, "the op's reply");

    /* documented, member by member */
    const char *src = getenv("LOOM_SRCDIR");
    char path[600];
    snprintf(path, sizeof path, "%s/docs/protocol.md", src ? src : ".");
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    static char text[1 << 18];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *section = strstr(text, "\n### plugins\n");
    cr_assert(section, "docs/protocol.md has no section for the plugins op");
    char *next = strstr(section + 1, "\n### ");
    if (next)
        *next = '\0';
    check_documented(r, section);
    json_decref(r);
    /* it takes no fields */
    r = lh_call(&D, "{\"op\":\"plugins\",\"verbose\":true}", 5000);
    cr_assert_str_eq(str(json_object_get(r, "error"), "code"), "unknown_field", "%s",
                     json_dumps(r, 0));
    json_decref(r);

    char *out, args[600];
    snprintf(args, sizeof args, "plugins --json --timeout 10 --socket '%s'", D.sock);
    cr_assert_eq(lh_loomctl(args, &out), 0, "%s", out);
    json_error_t err;
    json_t *doc = json_loads(out, 0, &err);
    cr_assert(doc, "not one JSON line: %s: %s", err.text, out);
    check_document(doc, out);
    json_decref(doc);
    free(out);

    /* offline, from the same config: the same plugins, no daemon asked */
    snprintf(args, sizeof args, "plugins --json --config '%s'", D.cfg);
    cr_assert_eq(lh_loomctl(args, &out), 0, "%s", out);
    doc = json_loads(out, 0, &err);
    cr_assert(doc, "not JSON: %s: %s", err.text, out);
    check_document(doc, out);
    json_decref(doc);
    free(out);
}

Test(loomd_plugins, list_and_markdown, .fini = teardown)
{
    start();
    char *out, args[600];
    snprintf(args, sizeof args, "plugins --timeout 10 --socket '%s'", D.sock);
    cr_assert_eq(lh_loomctl(args, &out), 0, "%s", out);
    cr_assert(strstr(out, "described 0.3.1  (ABI " HOST_ABI ", "), "%s", out);
    cr_assert(strstr(out, "/described.so, isolated)\n"), "%s", out);
    cr_assert(strstr(out, "std.trim"), "%s", out);
    cr_assert(strstr(out, "times:int=1, suffix:string=\"\", voice*:string"), "%s", out);
    cr_assert(strstr(out, "described_http"), "%s", out);
    free(out);

    snprintf(args, sizeof args, "plugins --markdown --timeout 10 --socket '%s'", D.sock);
    cr_assert_eq(lh_loomctl(args, &out), 0, "%s", out);
    const char *headings[] = {
        "# Plugin reference\n", "\n## described\n", "\n## std\n", "\n## mock\n",
        "\n### `described.shout`\n", "\n### `std.trim`\n", "\n### Provider `described_http`\n",
        "\n### Provider `mock`\n",
    };
    for (size_t i = 0; i < sizeof headings / sizeof *headings; i++)
        cr_assert(strstr(out, headings[i]), "no heading %s in:\n%s", headings[i], out);
    /* the args table, a '|' in a description escaped, the example as YAML */
    cr_assert(strstr(out, "| argument | type | required | default | description |\n"), "%s", out);
    cr_assert(strstr(out, "| `times` | int | no | `1` | how often to repeat \\| the text |\n"),
              "%s", out);
    cr_assert(strstr(out, "| `voice` | string | yes |  | who shouts |\n"), "%s", out);
    cr_assert(strstr(out, "```yaml\n- lambda: { fn: described.shout, args: { voice: bob } }\n"
                          "```\n"),
              "%s", out);
    cr_assert(strstr(out, "isolated (runs in a helper process)"), "%s", out);
    cr_assert(strstr(out, "### `described.anything`\n\ntakes any args\n\nFlags: none (runs on the "
                          "worker pool).\n\nArguments: not declared;"),
              "%s", out);
    /* plugins by name: described before mock before std */
    cr_assert(strstr(out, "\n## described\n") < strstr(out, "\n## mock\n"));
    cr_assert(strstr(out, "\n## mock\n") < strstr(out, "\n## std\n"));
    free(out);
}

Test(loomd_plugins, builtin_needs_no_daemon_and_usage_errors)
{
    char *out;
    cr_assert_eq(lh_loomctl("plugins --builtin --markdown", &out), 0, "%s", out);
    cr_assert(strncmp(out, "# Built-in lambdas and providers\n", 33) == 0, "%s", out);
    cr_assert(strstr(out, "\n### `std.regex_extract`\n"), "%s", out);
    cr_assert(!strstr(out, "described"), "only the built-ins");
    free(out);
    cr_assert_eq(lh_loomctl("plugins --builtin --json --markdown 2>/dev/null", &out), 2);
    free(out);
    cr_assert_eq(lh_loomctl("plugins --builtin --config x.yaml 2>/dev/null", &out), 2);
    free(out);
    cr_assert_eq(lh_loomctl("plugins --builtin extra 2>/dev/null", &out), 2);
    free(out);
    /* no daemon on this socket */
    cr_assert_eq(lh_loomctl("plugins --socket /nonexistent/loom.sock 2>/dev/null", &out), 3);
    free(out);
}
