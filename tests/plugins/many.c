/* many.c -- a test plugin far bigger than any first allocation of the
 * registry: 1,000 lambdas and 100 providers, so every array the loader grows
 * must grow by more than its capacity in one step.
 *
 * A descriptor holds pointers to arrays and static names, so the tables are
 * static and filled by the entry function (the same values every time it
 * runs): writing out 1,100 entries would say nothing more. */
#include <stdio.h>

#include "loom/plugin.h"

#define MANY_LAMBDAS 1000
#define MANY_PROVIDERS 100

static char lambda_names[MANY_LAMBDAS][8];      /* "l0" .. "l999" */
static char provider_names[MANY_PROVIDERS][16]; /* "many_p0" .. "many_p99" */
static loom_lambda lambdas[MANY_LAMBDAS];
static loom_provider providers[MANY_PROVIDERS];

static json_t *many_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static int many_encode(loom_ctx *ctx, void *state, const loom_request *req,
                       loom_http_request *out)
{
    loom_error(ctx, LOOM_E_INVALID_REQUEST, "many: a provider for counting, not calling");
    return -1;
}

static int many_decode(loom_ctx *ctx, void *state, const loom_request *req,
                       const loom_http_response *resp, loom_result *out)
{
    loom_error(ctx, LOOM_E_UPSTREAM, "many: a provider for counting, not calling");
    return -1;
}

static const loom_plugin many_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "many",
    .version = "1.0",
    .description = "1,000 lambdas and 100 providers",
    .lambdas = lambdas,
    .nlambdas = MANY_LAMBDAS,
    .providers = providers,
    .nproviders = MANY_PROVIDERS,
};

LOOM_PLUGIN_DEFINE(many)
{
    for (int i = 0; i < MANY_LAMBDAS; i++) {
        snprintf(lambda_names[i], sizeof lambda_names[i], "l%d", i);
        lambdas[i] = (loom_lambda){ .name = lambda_names[i], .fn = many_echo,
                                    .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST };
    }
    for (int i = 0; i < MANY_PROVIDERS; i++) {
        snprintf(provider_names[i], sizeof provider_names[i], "many_p%d", i);
        providers[i] = (loom_provider){ .name = provider_names[i], .encode = many_encode,
                                        .decode = many_decode };
    }
    return &many_plugin;
}
