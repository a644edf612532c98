/* configured.c -- a test plugin with a configuration map: its init and
 * reload keep what they were given, and its lambdas show it, so a test can
 * see a configuration reach the plugin, defaults added, and change on
 * SIGHUP.
 *
 *   configured.greet   input {"name": N} -> "GREETING, N" (shouted when shout)
 *   configured.config  the whole configuration the plugin last accepted
 *
 * Neither is PURE (the answer changes with the configuration), so they run
 * on the pool while reload runs on the reactor: the state is swapped under
 * a lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"

typedef struct configured_state {
    pthread_mutex_t lock;
    json_t *config;              /* owned: a copy of the accepted configuration */
} configured_state;

static const loom_option configured_options[] = {
    { .name = "greeting", .type = LOOM_OPT_STRING, .default_value = "Hello",
      .description = "what greet says before the name" },
    { .name = "shout", .type = LOOM_OPT_BOOL, .description = "answer in capitals" },
    { .name = "pause", .type = LOOM_OPT_DURATION, .default_value = "250ms",
      .description = "not used: shows a duration arriving as milliseconds" },
    { .name = NULL },
};

/* The current configuration: a new reference, taken under the lock. */
static json_t *current(configured_state *s)
{
    pthread_mutex_lock(&s->lock);
    json_t *c = json_incref(s->config);
    pthread_mutex_unlock(&s->lock);
    return c;
}

static json_t *configured_greet(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    json_t *c = current(state);
    const char *g = json_string_value(json_object_get(c, "greeting"));
    const char *name = json_string_value(json_object_get(input, "name"));
    json_t *out = json_sprintf("%s, %s", g ? g : "?", name ? name : "?");

    if (out && json_is_true(json_object_get(c, "shout"))) {
        char *up = strdup(json_string_value(out));
        for (char *p = up; up && *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        json_decref(out);
        out = up ? json_string(up) : NULL;
        free(up);
    }
    json_decref(c);
    if (!out)
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
    return out;
}

static json_t *configured_config(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    json_t *c = current(state);
    return c ? c : json_null();
}

/* Keeps a copy of CONFIG (borrowed; NULL is refused: a 2.1 host always
 * gives a plugin with options an object). */
static int keep(loom_ctx *ctx, configured_state *s, json_t *config)
{
    json_t *copy;
    if (!json_is_object(config)) {
        loom_error(ctx, LOOM_E_CONFIG, "no configuration object");
        return -1;
    }
    if (!(copy = json_deep_copy(config))) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    json_t *old = s->config;
    s->config = copy;
    pthread_mutex_unlock(&s->lock);
    json_decref(old);
    return 0;
}

static int configured_init(loom_ctx *ctx, json_t *config, void **state)
{
    configured_state *s = calloc(1, sizeof *s);
    if (!s || pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    if (keep(ctx, s, config) < 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return -1;
    }
    loom_log(ctx, LOOM_LOG_INFO, "init: greeting \"%s\"",
             json_string_value(json_object_get(config, "greeting")));
    *state = s;
    return 0;
}

static int configured_reload(loom_ctx *ctx, void *state, json_t *config)
{
    if (keep(ctx, state, config) < 0)
        return -1;
    loom_log(ctx, LOOM_LOG_INFO, "reload: greeting \"%s\"",
             json_string_value(json_object_get(config, "greeting")));
    return 0;
}

static void configured_fini(void *state)
{
    configured_state *s = state;
    if (!s)
        return;
    json_decref(s->config);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const loom_lambda configured_lambdas[] = {
    { .name = "greet", .fn = configured_greet },
    { .name = "config", .fn = configured_config },
};

static const loom_plugin configured_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "configured",
    .lambdas = configured_lambdas,
    .nlambdas = 2,
    .init = configured_init,
    .fini = configured_fini,
    .reload = configured_reload,
    .options = configured_options,
};

LOOM_PLUGIN_DEFINE(configured)
{
    return &configured_plugin;
}
