/* skeleton.c -- the smallest useful Loom plugin: one lambda, skeleton.greet,
 * that answers "hello, NAME" for an input {"name": NAME}.
 *
 * Copy this directory, rename the plugin, and build it with `make`: it needs
 * only <loom/plugin.h> and jansson, found through pkg-config (loom-plugin).
 * The greeting comes from the plugin's configuration, read once in init:
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

/* Runs once, at load. CONFIG (borrowed) is this plugin's section, or NULL. */
static int skeleton_init(loom_ctx *ctx, json_t *config, void **state)
{
    json_t *g = config ? json_object_get(config, "greeting") : NULL;
    skeleton_state *s;

    if (g && !json_is_string(g)) {
        loom_error(ctx, LOOM_E_CONFIG, "greeting must be a string");
        return -1;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->greeting = strdup(g ? json_string_value(g) : "hello"))) {
        free(s);
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    *state = s;
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
    },
};

static const loom_plugin skeleton_plugin = {
    .abi_major = LOOM_ABI_MAJOR,   /* the header's version: checked at load */
    .abi_minor = LOOM_ABI_MINOR,
    .name = "skeleton",
    .version = "0.1.0",
    .description = "a starting point for out-of-tree plugins",
    .lambdas = skeleton_lambdas,
    .nlambdas = sizeof skeleton_lambdas / sizeof skeleton_lambdas[0],
    .init = skeleton_init,
    .fini = skeleton_fini,
};

LOOM_PLUGIN_DEFINE(skeleton)
{
    return &skeleton_plugin;
}
