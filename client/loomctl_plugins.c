/* loomctl_plugins.c -- `loomctl plugins`: what plugins are installed, with
 * their lambdas, arguments, flags and providers.
 *
 * Asks a running loomd (the `plugins` op), or with --builtin / --config
 * loads the plugins in this process as `loomctl run` does, with no daemon:
 * that is how the build generates docs/lambdas.md. Either way the answer
 * is the same document (plugins_describe), printed as a list for people,
 * as JSON, or as a Markdown reference page (loomctl_markdown.c). */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"
#include "daemon/config_file.h"
#include "daemon/config_plugins.h"
#include "daemon/plugins/plugins.h"

#define BUILTIN_TITLE "Built-in lambdas and providers"
#define TITLE "Plugin reference"

static void log_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "loomctl plugins: %s\n", line);
}

/* Whether CFG (a config, as UD) runs plugin NAME in a helper process. */
static bool config_isolates(void *ud, const char *name)
{
    const config *cfg = ud;
    for (size_t i = 0; i < cfg->nisolate; i++)
        if (cfg->isolate[i].plugin && strcmp(cfg->isolate[i].plugin, name) == 0)
            return true;
    return false;
}

/* The document of the plugins loomd would load with the config at
 * CONFIG_PATH (NULL: the built-ins only), into *DOC (new reference). A
 * plugin that is refused is reported on stderr and makes the status
 * LOOMCTL_FAILED, though the others are still described. */
static int describe_offline(const char *config_path, json_t **doc)
{
    config *cfg = NULL;
    plugins_t *plugins = NULL;
    int rc = LOOMCTL_FAILED;

    *doc = NULL;
    if (config_path) {
        dsl_diags d;
        dsl_diags_init(&d, config_path);
        cfg = config_load(config_path, &d);
        loomctl_print_diags(&d);
        dsl_diags_free(&d);
        if (!cfg)
            return LOOMCTL_FAILED;
    }
    if (!(plugins = plugins_new(log_line, NULL)))
        goto oom;
    /* as loomd loads them: each with its entry of plugins.config, and an
     * isolated one's init left to its helper (there is none here) */
    if (cfg && config_plugins_attach(cfg, plugins, 0) < 0)
        goto oom;
    plugins_add_builtins(plugins); /* a refusal is counted and said already */
    for (size_t i = 0; cfg && cfg->plugin_dirs && cfg->plugin_dirs[i]; i++)
        plugins_load_dir(plugins, cfg->plugin_dirs[i]);
    if (!(*doc = plugins_describe(plugins, cfg ? config_isolates : NULL, cfg)))
        goto oom;
    rc = plugins_errors(plugins) ? LOOMCTL_FAILED : LOOMCTL_OK;
    goto out;
oom:
    fprintf(stderr, "loomctl plugins: out of memory\n");
out:
    plugins_free(plugins);
    config_free(cfg);
    return rc;
}

/* Asks loomd on SOCKET for the document: *REPLY is its reply (new
 * reference) when one came, ok or not. */
static int describe_daemon(const char *socket, int64_t timeout_ms, json_t **reply)
{
    json_t *req = json_pack("{ss}", "op", "plugins");
    int rc = LOOMCTL_UNREACHABLE;

    *reply = NULL;
    if (!req) {
        fprintf(stderr, "loomctl: out of memory\n");
        return LOOMCTL_FAILED;
    }
    loomctl_conn *c = loomctl_connect(loomctl_socket_path(socket), timeout_ms);
    if (c)
        rc = loomctl_request(c, req, timeout_ms, NULL, NULL, reply);
    loomctl_close(c);
    json_decref(req);
    return rc;
}

static const char *str_or(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

/* "a, b" from an array of strings (new; NULL when out of memory). */
static char *joined(const json_t *arr, const char *sep)
{
    sbuf b = SBUF_INIT;
    size_t i;
    const json_t *s;
    sbuf_adds(&b, "");
    json_array_foreach(arr, i, s)
        sbuf_addf(&b, "%s%s", i ? sep : "", json_string_value(s) ? json_string_value(s) : "?");
    return sbuf_steal(&b, NULL);
}

/* OPTS as "name*:type=default, ...", a required one marked with '*'. */
static char *options_line(const json_t *opts)
{
    sbuf b = SBUF_INIT;
    size_t i;
    const json_t *o;
    sbuf_adds(&b, "");
    json_array_foreach(opts, i, o) {
        const char *dflt = json_string_value(json_object_get(o, "default"));
        sbuf_addf(&b, "%s%s%s:%s", i ? ", " : "", str_or(o, "name", "?"),
                  json_is_true(json_object_get(o, "required")) ? "*" : "",
                  str_or(o, "type", "?"));
        if (dflt)
            sbuf_addf(&b, "=%s", *dflt ? dflt : "\"\"");
    }
    return sbuf_steal(&b, NULL);
}

/* "    WHAT: LINE" under the last row of T, when LINE says anything. */
static void note(loomctl_table *t, const char *what, const char *line)
{
    char *text = NULL;
    if (!line || !*line)
        return;
    if (asprintf(&text, "      %s: %s", what, line) < 0) {
        t->oom = true;
        return;
    }
    loomctl_table_note(t, text);
    free(text);
}

/* The document for people: per plugin a line saying what and where it is,
 * then its lambdas and providers as a table. */
static int print_human(const json_t *doc)
{
    const json_t *plugins = json_object_get(doc, "plugins");
    size_t i;
    const json_t *p;
    bool oom = false;

    if (!json_array_size(plugins))
        fprintf(stderr, "loomctl: no plugins loaded\n");
    json_array_foreach(plugins, i, p) {
        const char *file = str_or(p, "file", NULL);
        printf("%s%s %s  (ABI %s, %s%s)\n", i ? "\n" : "", str_or(p, "name", "?"),
               str_or(p, "version", "-"), str_or(p, "abi", "?"), file ? file : "built-in",
               json_is_true(json_object_get(p, "isolated")) ? ", isolated" : "");
        if (str_or(p, "description", NULL))
            printf("  %s\n", str_or(p, "description", ""));
        char *conf = options_line(json_object_get(p, "options"));
        oom |= !conf;
        if (conf && *conf)
            printf("  config: %s\n", conf);
        free(conf);
        loomctl_table t = { .ncols = 4, .align = "llll" };
        const json_t *lambdas = json_object_get(p, "lambdas");
        const json_t *providers = json_object_get(p, "providers");
        if (json_array_size(lambdas) || json_array_size(providers))
            loomctl_table_row(&t, "  NAME", "KIND", "FLAGS", "SUMMARY");
        size_t k;
        const json_t *e;
        json_array_foreach(lambdas, k, e) {
            char name[600], *flags = joined(json_object_get(e, "flags"), ",");
            char *args = options_line(json_object_get(e, "args"));
            snprintf(name, sizeof name, "  %s", str_or(e, "name", "?"));
            loomctl_table_row(&t, name, "lambda", flags && *flags ? flags : "-",
                              str_or(e, "summary", ""));
            bool undeclared = json_is_null(json_object_get(e, "args"));
            note(&t, "args", undeclared ? "(not declared: any)" : args);
            oom |= !flags || !args;
            free(flags);
            free(args);
        }
        json_array_foreach(providers, k, e) {
            char name[600], *opts = options_line(json_object_get(e, "options"));
            snprintf(name, sizeof name, "  %s", str_or(e, "name", "?"));
            loomctl_table_row(&t, name, "provider", str_or(e, "transport", "?"),
                              str_or(e, "summary", ""));
            note(&t, "options", opts);
            oom |= !opts;
            free(opts);
        }
        loomctl_table_print_free(&t);
    }
    if (json_array_size(plugins))
        printf("\n(* required argument or option; =default)\n");
    if (oom) {
        fprintf(stderr, "loomctl: out of memory\n");
        return LOOMCTL_FAILED;
    }
    return LOOMCTL_OK;
}

int loomctl_cmd_plugins(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("plugins");
    const char *socket = NULL, *timeout = NULL, *config_path = NULL;
    bool json = false, markdown = false, builtin = false;
    const loomctl_option opts[] = {
        { "socket", 0, &socket, NULL },
        { "timeout", 0, &timeout, NULL },
        { "json", 0, NULL, &json },
        { "markdown", 0, NULL, &markdown },
        { "config", 'c', &config_path, NULL },
        { "builtin", 0, NULL, &builtin },
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop)
        return loomctl_usage_error(self, "unexpected argument '%s'", argv[1]);
    if (json && markdown)
        return loomctl_usage_error(self, "--json and --markdown exclude each other");
    if (builtin && config_path)
        return loomctl_usage_error(self, "--builtin and --config exclude each other");
    bool offline = builtin || config_path;
    if (offline && (socket || timeout))
        return loomctl_usage_error(self, "--%s asks loomd: not with --builtin or --config",
                                   socket ? "socket" : "timeout");
    int64_t timeout_ms = LOOMCTL_REPLY_TIMEOUT_MS;
    if (timeout && loomctl_parse_seconds(timeout, &timeout_ms) < 0)
        return loomctl_usage_error(self, "--timeout takes a number of seconds");

    json_t *doc = NULL;
    rc = offline ? describe_offline(config_path, &doc) : describe_daemon(socket, timeout_ms, &doc);
    if (!doc)
        return rc;
    if (json && !offline) {
        loomctl_print_json(doc, false); /* loomd's reply line, ok or not */
    } else if (rc != LOOMCTL_OK && !offline) {
        /* refused: loomctl_request has said why */
    } else if (json) {
        loomctl_print_json(doc, false);
    } else if (markdown) {
        char *md = loomctl_plugins_markdown(doc, builtin ? BUILTIN_TITLE : TITLE);
        if (md)
            fputs(md, stdout);
        else
            fprintf(stderr, "loomctl: out of memory\n");
        if (!md && rc == LOOMCTL_OK)
            rc = LOOMCTL_FAILED;
        free(md);
    } else {
        int prc = print_human(doc);
        if (rc == LOOMCTL_OK)
            rc = prc;
    }
    json_decref(doc);
    return rc;
}
