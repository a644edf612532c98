/* described.c -- a test plugin that declares everything a reference page
 * shows: a configuration map, lambdas with typed arguments (required ones,
 * defaults, an empty default), flags, docs and examples, and an HTTP
 * provider with options and batching. Its lambdas work, so a workflow can
 * call them; what `loomctl plugins` and plugins_describe say about it is
 * what the tests check. */
#include "loom/plugin.h"

static json_t *described_shout(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static json_t *described_wait(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_null();
}

static int described_encode(loom_ctx *ctx, void *state, const loom_request *req,
                            loom_http_request *out)
{
    loom_error(ctx, LOOM_E_INVALID_REQUEST, "described: this provider sends nothing");
    return -1;
}

static int described_decode(loom_ctx *ctx, void *state, const loom_request *req,
                            const loom_http_response *resp, loom_result *out)
{
    loom_error(ctx, LOOM_E_UPSTREAM, "described: this provider reads nothing");
    return -1;
}

static const loom_option shout_args[] = {
    { "times", LOOM_OPT_INT, "1", 0, "how often to repeat | the text" },
    { "suffix", LOOM_OPT_STRING, "", 0, "put after the text" },
    { "voice", LOOM_OPT_STRING, NULL, 1, "who shouts" },
    { NULL, LOOM_OPT_STRING, NULL, 0, NULL },
};

static const loom_option wait_args[] = {
    { "for", LOOM_OPT_DURATION, "250ms", 0, "how long" },
    { NULL, LOOM_OPT_STRING, NULL, 0, NULL },
};

static const loom_option plugin_options[] = {
    { "volume", LOOM_OPT_DOUBLE, "0.5", 0, "from 0 to 1" },
    { "table", LOOM_OPT_JSON, NULL, 0, "the words to shout" },
    { NULL, LOOM_OPT_STRING, NULL, 0, NULL },
};

static const loom_option provider_options[] = {
    { "base_url", LOOM_OPT_STRING, NULL, 1, "where to send requests" },
    { "verbose", LOOM_OPT_BOOL, "false", 0, "log every request" },
    { NULL, LOOM_OPT_STRING, NULL, 0, NULL },
};

static const loom_lambda described_lambdas[] = {
    { .name = "shout", .fn = described_shout, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .args = shout_args, .summary = "return the input, louder",
      .doc = "Repeats the input `times` times.",
      .example = "- lambda: { fn: described.shout, args: { voice: bob } }\n" },
    { .name = "wait", .fn = described_wait, .args = wait_args,
      .summary = "wait a while, then return null" },
    /* no .args: not declared, so any args are passed on */
    { .name = "anything", .fn = described_shout, .summary = "takes any args" },
};

static const loom_provider described_providers[] = {
    { .name = "described_http", .options = provider_options, .encode = described_encode,
      .decode = described_decode, .max_batch = 16, .summary = "an HTTP provider that sends nothing",
      .doc = "Only here to be described." },
};

static const loom_plugin described_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "described",
    .version = "0.3.1",
    .description = "a plugin that declares every field of the reference",
    .lambdas = described_lambdas,
    .nlambdas = sizeof described_lambdas / sizeof described_lambdas[0],
    .providers = described_providers,
    .nproviders = 1,
    .options = plugin_options,
};

LOOM_PLUGIN_DEFINE(described)
{
    return &described_plugin;
}
