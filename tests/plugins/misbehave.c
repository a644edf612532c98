/* misbehave.c -- a test plugin whose lambdas break their contract: one never
 * returns, the others hand back values no job may take. */
#include <unistd.h>

#include "loom/plugin.h"

static json_t *forever(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    for (;;) /* the pool's threads block every signal: nothing wakes this */
        pause();
    return NULL;
}

/* A string json_string would refuse: the _nocheck variant takes any bytes. */
static json_t *bad_utf8(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_pack("{s:o}", "text", json_stringn_nocheck("caf\xc3", 4));
}

static json_t *nothing(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return NULL;
}

static const loom_lambda misbehave_lambdas[] = {
    { .name = "forever", .fn = forever, .summary = "never returns" },
    { .name = "bad_utf8", .fn = bad_utf8, .summary = "returns invalid UTF-8" },
    { .name = "nothing", .fn = nothing, .summary = "returns NULL without an error" },
};

static const loom_plugin misbehave_plugin = {
    .abi_major = LOOM_ABI_MAJOR,
    .abi_minor = LOOM_ABI_MINOR,
    .name = "misbehave",
    .lambdas = misbehave_lambdas,
    .nlambdas = sizeof misbehave_lambdas / sizeof misbehave_lambdas[0],
};

LOOM_PLUGIN_DEFINE(misbehave)
{
    return &misbehave_plugin;
}
