/* dup_name.c -- a test plugin that takes the name of good.c's plugin. */
#include "loom/plugin.h"

static json_t *dup_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static const loom_lambda dup_lambdas[] = {
    { .name = "echo", .fn = dup_echo },
};

static const loom_plugin dup_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "good",
    .lambdas = dup_lambdas,
    .nlambdas = 1,
};

LOOM_PLUGIN_DEFINE(dup_name)
{
    return &dup_plugin;
}
