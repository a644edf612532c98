/* provider_2_1.c -- an HTTP provider built against the frozen ABI 2.1
 * header (loom_plugin_2_1.h): encode and decode only, from before providers
 * could stream. A 2.2 host loads it and reads no stream hook from it (its
 * descriptor ends where 2.1's did), so its calls are never streamed. */
#include <stdlib.h>
#include <string.h>

#include "loom_plugin_2_1.h"

static int echo_encode(loom_ctx *ctx, void *state, const loom_request *req,
                       loom_http_request *out)
{
    (void)state;
    out->method = strdup("POST");
    out->url = strdup("http://127.0.0.1:9/echo");
    out->body = json_dumps(req->messages, JSON_COMPACT);
    out->body_len = out->body ? strlen(out->body) : 0;
    if (!out->method || !out->url || !out->body) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

static int echo_decode(loom_ctx *ctx, void *state, const loom_request *req,
                       const loom_http_response *resp, loom_result *out)
{
    (void)state;
    (void)req;
    if (resp->status != 200) {
        loom_error(ctx, LOOM_E_UPSTREAM, "HTTP %d", resp->status);
        return -1;
    }
    out->output = json_stringn(resp->body, resp->body_len);
    out->usage.input_tokens = out->usage.output_tokens = -1;
    return out->output ? 0 : -1;
}

static const loom_provider providers[] = { {
    .name = "abi21_echo",
    .encode = echo_encode,
    .decode = echo_decode,
    .summary = "an HTTP provider of ABI 2.1",
    .doc = "Answers with the body it got.",
} };

static const loom_plugin plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "abi21",
    .version = "2.1.0",
    .description = "a provider plugin built against ABI 2.1",
    .providers = providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(abi21)
{
    return &plugin;
}
