/* loomctl_markdown.c -- the document of the `plugins` op (docs/protocol.md)
 * as a Markdown reference page: docs/lambdas.md for the built-in plugins
 * (generated at build time, so it cannot drift from their descriptors) and
 * `loomctl plugins --markdown` for anyone's plugins.
 *
 * Only the document is read, never a descriptor, so a page made from a
 * running loomd and one made offline are the same page. Everything is
 * rendered in the document's order (plugins by name, the rest as each
 * plugin declared it) and nothing depends on time or place, so the output
 * of the same plugins is byte for byte the same every time: the test that
 * compares docs/lambdas.md with a fresh rendering relies on it. */
#include "config.h"

#include "client/loomctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* S as the text of a table cell: a '|' would end the cell and a newline the
 * row. */
static void add_cell_text(sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            sbuf_adds(b, "\\|");
        else if (*s == '\n' || *s == '\r')
            sbuf_addc(b, ' ');
        else
            sbuf_addc(b, *s);
    }
}

/* S as inline code; a value holding a backtick gets a longer fence
 * (CommonMark), padded so a leading or trailing backtick is not taken for
 * part of it. */
static void add_code(sbuf *b, const char *s)
{
    const char *fence = strchr(s, '`') ? "``" : "`";
    bool pad = strchr(s, '`') != NULL;
    sbuf_adds(b, fence);
    if (pad)
        sbuf_addc(b, ' ');
    add_cell_text(b, s);
    if (pad)
        sbuf_addc(b, ' ');
    sbuf_adds(b, fence);
}

/* A paragraph of TEXT (may be NULL: nothing), ending in a blank line. */
static void add_para(sbuf *b, const char *text)
{
    if (!text || !*text)
        return;
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        n--;
    sbuf_add(b, text, n);
    sbuf_adds(b, "\n\n");
}

/* The GitHub anchor of a heading: lower case, punctuation other than '-'
 * and '_' dropped, spaces as '-'. Headings here are ASCII names. */
static void add_anchor(sbuf *b, const char *heading)
{
    for (const char *s = heading; *s; s++) {
        char c = *s;
        if (c >= 'A' && c <= 'Z')
            sbuf_addc(b, (char)(c - 'A' + 'a'));
        else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')
            sbuf_addc(b, c);
        else if (c == ' ')
            sbuf_addc(b, '-');
    }
}

/* OPTS (the document's option array) as a table whose first column is
 * called WHAT; NONE when there are none, UNDECLARED when OPTS is null. */
static void add_options(sbuf *b, const json_t *opts, const char *what, const char *none,
                        const char *undeclared)
{
    if (json_is_null(opts) && undeclared) {
        add_para(b, undeclared);
        return;
    }
    if (!json_array_size(opts)) {
        add_para(b, none);
        return;
    }
    sbuf_addf(b, "| %s | type | required | default | description |\n", what);
    sbuf_adds(b, "|---|---|---|---|---|\n");
    size_t i;
    const json_t *o;
    json_array_foreach(opts, i, o) {
        const char *dflt = str(o, "default");
        sbuf_adds(b, "| ");
        add_code(b, str(o, "name") ? str(o, "name") : "?");
        sbuf_addf(b, " | %s | %s | ", str(o, "type") ? str(o, "type") : "?",
                  json_is_true(json_object_get(o, "required")) ? "yes" : "no");
        if (dflt && *dflt)
            add_code(b, dflt);
        else if (dflt)
            sbuf_adds(b, "`\"\"`"); /* an empty default is not no default */
        sbuf_adds(b, " | ");
        add_cell_text(b, str(o, "description"));
        sbuf_adds(b, " |\n");
    }
    sbuf_addc(b, '\n');
}

/* TEXT in a fenced block of LANG, with a fence longer than any run of
 * backticks in it. */
static void add_fenced(sbuf *b, const char *lang, const char *text)
{
    size_t run = 0, longest = 0;
    for (const char *s = text; *s; s++) {
        run = *s == '`' ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    size_t fence = longest < 3 ? 3 : longest + 1;
    for (size_t k = 0; k < fence; k++)
        sbuf_addc(b, '`');
    sbuf_addf(b, "%s\n", lang);
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n')
        n--;
    sbuf_add(b, text, n);
    sbuf_addc(b, '\n');
    for (size_t k = 0; k < fence; k++)
        sbuf_addc(b, '`');
    sbuf_adds(b, "\n\n");
}

static bool has_flag(const json_t *flags, const char *flag)
{
    size_t i;
    const json_t *f;
    json_array_foreach(flags, i, f)
        if (json_string_value(f) && strcmp(json_string_value(f), flag) == 0)
            return true;
    return false;
}

static void add_lambda(sbuf *b, const json_t *l)
{
    const char *name = str(l, "name") ? str(l, "name") : "?";
    const json_t *flags = json_object_get(l, "flags");
    bool pure = has_flag(flags, "pure"), fast = has_flag(flags, "fast");

    sbuf_addf(b, "### `%s`\n\n", name);
    add_para(b, str(l, "summary"));
    if (pure && fast)
        add_para(b, "Flags: pure, fast (runs inline on the daemon's event loop).");
    else if (pure)
        add_para(b, "Flags: pure (runs on the worker pool).");
    else if (fast)
        add_para(b, "Flags: fast (runs on the worker pool: only pure and fast lambdas run "
                    "inline).");
    else
        add_para(b, "Flags: none (runs on the worker pool).");
    add_options(b, json_object_get(l, "args"), "argument", "No arguments.",
                "Arguments: not declared; whatever `args` holds is passed on unchecked.");
    add_para(b, str(l, "doc"));
    if (str(l, "example") && *str(l, "example")) {
        sbuf_adds(b, "Example:\n\n");
        add_fenced(b, "yaml", str(l, "example"));
    }
}

static void add_provider(sbuf *b, const json_t *v)
{
    const char *name = str(v, "name") ? str(v, "name") : "?";
    const char *transport = str(v, "transport");
    json_int_t batch = json_integer_value(json_object_get(v, "max_batch"));
    const json_t *api = json_object_get(v, "batch_api");

    sbuf_addf(b, "### Provider `%s`\n\n", name);
    add_para(b, str(v, "summary"));
    if (transport && strcmp(transport, "invoke") == 0)
        sbuf_adds(b, "Transport: in process (invoke).");
    else
        sbuf_adds(b, "Transport: HTTP (the daemon sends the requests the plugin encodes).");
    if (batch > 0)
        sbuf_addf(b, " Embedding inputs per request: up to %lld.", (long long)batch);
    if (json_is_object(api))
        sbuf_addf(b, " Batch API (`mode: batch`): up to %lld lines and %lld bytes per batch.",
                  (long long)json_integer_value(json_object_get(api, "max_lines")),
                  (long long)json_integer_value(json_object_get(api, "max_bytes")));
    sbuf_adds(b, "\n\n");
    add_options(b, json_object_get(v, "options"), "option", "No options.", NULL);
    add_para(b, str(v, "doc"));
}

static void add_plugin(sbuf *b, const json_t *p)
{
    const char *name = str(p, "name") ? str(p, "name") : "?";
    const json_t *lambdas = json_object_get(p, "lambdas");
    const json_t *providers = json_object_get(p, "providers");
    size_t i;
    const json_t *e;

    sbuf_addf(b, "## %s\n\n", name);
    add_para(b, str(p, "description"));
    sbuf_addf(b, "Version %s, plugin ABI %s, ", str(p, "version") ? str(p, "version") : "unknown",
              str(p, "abi") ? str(p, "abi") : "?");
    if (json_is_true(json_object_get(p, "builtin"))) {
        sbuf_adds(b, "built into loomd");
    } else {
        sbuf_adds(b, "loaded from ");
        add_code(b, str(p, "file") ? str(p, "file") : "?");
    }
    if (json_is_true(json_object_get(p, "isolated")))
        sbuf_adds(b, ", isolated (runs in a helper process)");
    sbuf_adds(b, ".\n\n");
    if (json_array_size(lambdas)) {
        sbuf_adds(b, "Lambdas:");
        json_array_foreach(lambdas, i, e) {
            const char *ln = str(e, "name") ? str(e, "name") : "?";
            sbuf_addf(b, "%s [`%s`](#", i ? "," : "", ln);
            add_anchor(b, ln);
            sbuf_adds(b, ")");
        }
        sbuf_adds(b, ".\n\n");
    }
    if (json_array_size(json_object_get(p, "options"))) {
        sbuf_addf(b, "Configuration (`plugins: { config: { %s: {...} } }` in the daemon's "
                     "config):\n\n", name);
        add_options(b, json_object_get(p, "options"), "option", NULL, NULL);
    }
    json_array_foreach(lambdas, i, e)
        add_lambda(b, e);
    json_array_foreach(providers, i, e)
        add_provider(b, e);
}

char *loomctl_plugins_markdown(const json_t *doc, const char *title)
{
    sbuf b = SBUF_INIT;
    const json_t *plugins = json_object_get(doc, "plugins");
    size_t i;
    const json_t *p;

    sbuf_addf(&b, "# %s\n\n", title);
    sbuf_addf(&b,
              "Generated by `loomctl plugins --markdown` from the plugins' own descriptors "
              "(plugin ABI %s): the names, flags, arguments and texts below are what the "
              "plugins declare.\n\n",
              str(doc, "abi") ? str(doc, "abi") : "?");
    if (json_array_size(plugins)) {
        sbuf_adds(&b, "Plugins:");
        json_array_foreach(plugins, i, p) {
            const char *name = str(p, "name") ? str(p, "name") : "?";
            size_t nl = json_array_size(json_object_get(p, "lambdas"));
            size_t nv = json_array_size(json_object_get(p, "providers"));
            sbuf_addf(&b, "%s [%s](#", i ? "," : "", name);
            add_anchor(&b, name);
            sbuf_adds(&b, ")");
            if (nl && nv)
                sbuf_addf(&b, " (%zu lambda%s, %zu provider%s)", nl, nl == 1 ? "" : "s", nv,
                          nv == 1 ? "" : "s");
            else if (nl)
                sbuf_addf(&b, " (%zu lambda%s)", nl, nl == 1 ? "" : "s");
            else if (nv)
                sbuf_addf(&b, " (%zu provider%s)", nv, nv == 1 ? "" : "s");
        }
        sbuf_adds(&b, ".\n\n");
    } else {
        sbuf_adds(&b, "No plugins are loaded.\n\n");
    }
    json_array_foreach(plugins, i, p)
        add_plugin(&b, p);
    /* one newline at the end, not the blank line every block leaves */
    if (!b.failed && b.n >= 2 && b.p[b.n - 1] == '\n' && b.p[b.n - 2] == '\n')
        b.p[--b.n] = '\0';
    return sbuf_steal(&b, NULL);
}
