/* good.c -- a well-formed test plugin: one lambda, one invoke provider, an
 * init that counts how often it ran (the loader must run it exactly once). */
#include <stdlib.h>

#include "loom/plugin.h"

typedef struct good_state {
    int inits;                 /* init calls seen by this state */
    json_int_t greeting_len;   /* from the config's "greeting", or 0 */
} good_state;

static int init_calls;         /* across every load of this object */

static json_t *good_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static json_t *good_inits(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    const good_state *s = state;
    return json_pack("{s:i, s:i, s:I}", "state", s->inits, "object", init_calls,
                     "greeting_len", s->greeting_len);
}

static int good_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    call->api->complete(call, json_string("ok"), NULL);
    return 0;
}

static int good_init(loom_ctx *ctx, json_t *config, void **state)
{
    good_state *s = calloc(1, sizeof *s);
    json_t *g = config ? json_object_get(config, "greeting") : NULL;

    if (!s) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    s->inits = 1;
    s->greeting_len = json_is_string(g) ? (json_int_t)json_string_length(g) : 0;
    init_calls++;
    *state = s;
    return 0;
}

static void good_fini(void *state)
{
    free(state);
}

static const loom_lambda good_lambdas[] = {
    { .name = "echo", .fn = good_echo, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .summary = "returns its input" },
    { .name = "inits", .fn = good_inits, .summary = "how often init ran" },
};

static const loom_provider good_providers[] = {
    { .name = "good_local", .invoke = good_invoke, .summary = "answers \"ok\"" },
};

static const loom_plugin good_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "good",
    .version = "1.0",
    .lambdas = good_lambdas,
    .nlambdas = sizeof good_lambdas / sizeof good_lambdas[0],
    .providers = good_providers,
    .nproviders = 1,
    .init = good_init,
    .fini = good_fini,
};

LOOM_PLUGIN_DEFINE(good)
{
    return &good_plugin;
}
