/* skeleton.c -- the smallest useful Loom plugin: one lambda, skeleton.greet,
 * that answers "hello, NAME" for an input {"name": NAME}.
 *
 * Copy this directory, rename the plugin, and build it with `make`: it needs
 * only <loom/plugin.h> and jansson, found through pkg-config (loom-plugin).
 * The plugin declares its options (skeleton_options below); loomd checks the
 * configuration against them, fills in the defaults, and hands it to init,
 * and again, on SIGHUP, to reload:
 *
 *   plugins:
 *     dirs: [/usr/lib/loom/plugins]
 *     config:
 *       skeleton: { greeting: "good morning", shout: true }
 */
#define _POSIX_C_SOURCE 200809L /* strdup under -std=c11 */

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <loom/plugin.h>

typedef struct skeleton_state {
    char *greeting;            /* owned; freed by fini */
    bool shout;                /* answer in capitals */
} skeleton_state;

/* The configuration map: a misspelt or mistyped key is refused by loomd,
 * with its FILE:LINE:COL, before init runs. */
static const loom_option skeleton_options[] = {
    { .name = "greeting", .type = LOOM_OPT_STRING, .default_value = "hello",
      .description = "what greet says before the name" },
    { .name = "shout", .type = LOOM_OPT_BOOL, .default_value = "false",
      .description = "answer in capitals" },
    { .name = NULL },
};

/* INPUT is borrowed; the string returned is a new reference the host steals. */
static json_t *skeleton_greet(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    const skeleton_state *s = state;
    const char *name = json_string_value(json_object_get(input, "name"));

    if (!name) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "skeleton.greet needs an input {\"name\": \"...\"}");
        return NULL;
    }
    char *text = NULL;
    size_t len = strlen(s->greeting) + 2 + strlen(name) + 1;
    json_t *out = NULL;

    if ((text = malloc(len))) {
        strcpy(text, s->greeting);
        strcat(text, ", ");
        strcat(text, name);
        for (char *c = text; s->shout && *c; c++)
            *c = (char)toupper((unsigned char)*c);
        out = json_string(text);
    }
    free(text);
    if (!out)
        loom_error(ctx, LOOM_E_NOMEM, "out of memory (or the name is not UTF-8)");
    return out;
}

/* Reads CONFIG (borrowed; checked by loomd against skeleton_options, so
 * greeting is a string and shout a boolean, defaults filled in) into *S:
 * the greeting as a new string (the caller's to free). 0, or -1 after
 * loom_error. */
static int read_config(loom_ctx *ctx, json_t *config, skeleton_state *s)
{
    const char *g = json_string_value(json_object_get(config, "greeting"));

    if (!(s->greeting = strdup(g ? g : "hello"))) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    s->shout = json_is_true(json_object_get(config, "shout"));
    return 0;
}

/* Runs once, at load, with this plugin's configuration (borrowed). */
static int skeleton_init(loom_ctx *ctx, json_t *config, void **state)
{
    skeleton_state *s = calloc(1, sizeof *s);

    if (!s) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    if (read_config(ctx, config, s) < 0) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

/* On SIGHUP, with the new configuration (checked like init's). greet is
 * PURE|FAST, so it runs on the reactor thread, as reload does: no call can
 * be reading the old greeting while it is swapped. (A plugin whose lambdas
 * run on the pool would swap under a lock, or atomically.) -1 keeps the old
 * configuration. */
static int skeleton_reload(loom_ctx *ctx, void *state, json_t *config)
{
    skeleton_state *s = state, next = { 0 };

    if (read_config(ctx, config, &next) < 0)
        return -1;
    free(s->greeting);
    *s = next;
    loom_log(ctx, LOOM_LOG_INFO, "greeting is now \"%s\"%s", s->greeting,
             s->shout ? ", shouted" : "");
    return 0;
}

static void skeleton_fini(void *state)
{
    skeleton_state *s = state;
    if (s)
        free(s->greeting);
    free(s);
}

static const loom_lambda skeleton_lambdas[] = {
    {
        .name = "greet",
        .fn = skeleton_greet,
        /* Same input, same output, and quick: the engine may cache it and
         * run it on the reactor thread. */
        .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
        .summary = "\"hello, NAME\" for an input {\"name\": NAME}",
        .doc = "The greeting comes from the plugin's configuration (`greeting`, "
               "\"hello\" by default; `shout: true` answers in capitals) and is read "
               "again on SIGHUP.",
        .example = "lambda: skeleton.greet",
    },
};

static const loom_plugin skeleton_plugin = {
    LOOM_PLUGIN_HEADER,   /* the header's version and sizes: checked at load */
    .name = "skeleton",
    .version = "0.1.0",
    .description = "a starting point for out-of-tree plugins",
    .lambdas = skeleton_lambdas,
    .nlambdas = sizeof skeleton_lambdas / sizeof skeleton_lambdas[0],
    .init = skeleton_init,
    .fini = skeleton_fini,
    .reload = skeleton_reload,
    .options = skeleton_options,
};

LOOM_PLUGIN_DEFINE(skeleton)
{
    return &skeleton_plugin;
}
