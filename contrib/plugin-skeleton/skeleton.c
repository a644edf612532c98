/* skeleton.c -- the smallest useful Loom plugin: one lambda, skeleton.greet,
 * that answers "hello, NAME" for an input {"name": NAME}.
 *
 * Copy this directory, rename the plugin, and build it with `make`: it needs
 * only <loom/plugin.h> and jansson, found through pkg-config (loom-plugin).
 * The greeting comes from the plugin's configuration, read in init and
 * again, on SIGHUP, in reload:
 *
 *   plugins:
 *     skeleton:
 *       greeting: "good morning"
 */
#define _POSIX_C_SOURCE 200809L /* strdup under -std=c11 */

#include <stdlib.h>
#include <string.h>

#include <loom/plugin.h>

typedef struct skeleton_state {
    char *greeting;            /* owned; freed by fini */
} skeleton_state;

/* INPUT is borrowed; the string returned is a new reference the host steals. */
static json_t *skeleton_greet(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    const skeleton_state *s = state;
    const char *name = json_string_value(json_object_get(input, "name"));

    if (!name) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "skeleton.greet needs an input {\"name\": \"...\"}");
        return NULL;
    }
    json_t *out = json_sprintf("%s, %s", s->greeting, name);
    if (!out)
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
    return out;
}

/* The greeting CONFIG (borrowed, may be NULL) asks for, as a new string in
 * *OUT (the caller's to free). 0, or -1 after loom_error. */
static int read_greeting(loom_ctx *ctx, json_t *config, char **out)
{
    json_t *g = config ? json_object_get(config, "greeting") : NULL;

    if (g && !json_is_string(g)) {
        loom_error(ctx, LOOM_E_CONFIG, "greeting must be a string");
        return -1;
    }
    if (!(*out = strdup(g ? json_string_value(g) : "hello"))) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* Runs once, at load. CONFIG (borrowed) is this plugin's section, or NULL. */
static int skeleton_init(loom_ctx *ctx, json_t *config, void **state)
{
    skeleton_state *s = calloc(1, sizeof *s);

    if (!s) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    if (read_greeting(ctx, config, &s->greeting) < 0) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

/* On SIGHUP, with the new section. greet is PURE|FAST, so it runs on the
 * reactor thread, as reload does: no call can be reading the old greeting
 * while it is swapped. (A plugin whose lambdas run on the pool would swap
 * under a lock, or atomically.) -1 keeps the old greeting. */
static int skeleton_reload(loom_ctx *ctx, void *state, json_t *config)
{
    skeleton_state *s = state;
    char *greeting;

    if (read_greeting(ctx, config, &greeting) < 0)
        return -1;
    free(s->greeting);
    s->greeting = greeting;
    loom_log(ctx, LOOM_LOG_INFO, "greeting is now \"%s\"", greeting);
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
               "\"hello\" by default) and is read again on SIGHUP.",
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
};

LOOM_PLUGIN_DEFINE(skeleton)
{
    return &skeleton_plugin;
}
