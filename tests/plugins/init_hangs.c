/* init_hangs.c -- a test plugin whose init never returns: `loomd --check`
 * must still end, refusing it once its trial init is past the deadline. */
#include <poll.h>

#include "loom/plugin.h"

static json_t *hang_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static int hang_init(loom_ctx *ctx, json_t *config, void **state)
{
    loom_log(ctx, LOOM_LOG_INFO, "waiting for nothing");
    for (;;)
        (void)poll(NULL, 0, -1);
    return 0;
}

static const loom_lambda hang_lambdas[] = {
    { .name = "echo", .fn = hang_echo },
};

static const loom_plugin hang_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "init_hangs",
    .lambdas = hang_lambdas,
    .nlambdas = 1,
    .init = hang_init,
};

LOOM_PLUGIN_DEFINE(init_hangs)
{
    return &hang_plugin;
}
