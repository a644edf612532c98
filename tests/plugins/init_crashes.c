/* init_crashes.c -- a test plugin whose init dies of a signal. */
#include <signal.h>

#include "loom/plugin.h"

static json_t *crash_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static int crash_init(loom_ctx *ctx, json_t *config, void **state)
{
    loom_log(ctx, LOOM_LOG_INFO, "about to crash");
    raise(SIGSEGV);
    return 0;
}

static const loom_lambda crash_lambdas[] = {
    { .name = "echo", .fn = crash_echo },
};

static const loom_plugin crash_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "init_crashes",
    .lambdas = crash_lambdas,
    .nlambdas = 1,
    .init = crash_init,
};

LOOM_PLUGIN_DEFINE(init_crashes)
{
    return &crash_plugin;
}
