/* provider_2_3.c -- two HTTP providers built against the frozen ABI 2.3
 * header (loom_plugin_2_3.h): encode, decode and stream, from before the
 * Batch API hooks. A 2.4 host loads them and reads no batch hook (their
 * descriptors end where 2.3's did), so calls in batch mode run directly;
 * and it walks the array with the plugin's stride, smaller than its own,
 * so the second provider reads as written. */
#include <stdlib.h>
#include <string.h>

#include "loom_plugin_2_3.h"

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

static int echo_stream(loom_ctx *ctx, void *state, const loom_request *req,
                       const loom_sse_event *ev, loom_stream_delta *out)
{
    (void)ctx;
    (void)state;
    (void)req;
    out->text = json_stringn(ev->data, ev->data_len);
    out->done = 1;
    return 0;
}

static const loom_provider providers[] = {
    {
        .name = "abi23_echo",
        .encode = echo_encode,
        .decode = echo_decode,
        .summary = "an HTTP provider of ABI 2.3",
        .doc = "Answers with the body it got.",
        .stream = echo_stream,
    },
    {
        .name = "abi23_second",
        .encode = echo_encode,
        .decode = echo_decode,
        .max_batch = 7,
        .summary = "the second provider of the array",
    },
};

static const loom_plugin plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "abi23",
    .version = "2.3.0",
    .description = "provider plugins built against ABI 2.3",
    .providers = providers,
    .nproviders = 2,
};

LOOM_PLUGIN_DEFINE(abi23)
{
    return &plugin;
}
