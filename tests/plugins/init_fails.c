/* init_fails.c -- a test plugin whose init refuses its configuration. */
#include "loom/plugin.h"

static json_t *fails_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static int fails_init(loom_ctx *ctx, json_t *config, void **state)
{
    loom_log(ctx, LOOM_LOG_INFO, "checking the model file");
    loom_error(ctx, LOOM_E_CONFIG, "model file %s not found", "model.bin");
    return -1;
}

static const loom_lambda fails_lambdas[] = {
    { .name = "echo", .fn = fails_echo },
};

static const loom_plugin fails_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "init_fails",
    .lambdas = fails_lambdas,
    .nlambdas = 1,
    .init = fails_init,
};

LOOM_PLUGIN_DEFINE(init_fails)
{
    return &fails_plugin;
}
