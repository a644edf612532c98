/* provider_2_0.c -- an invoke provider built against the frozen ABI 2.0
 * header (loom_plugin_2_0.h). Each instance fails its first `fail_first`
 * calls as rate limited with a Retry-After of `retry_after` through
 * loom_fail_after, then answers "ok after N". It logs from its instance's
 * init and from each invoke, so the host's routing of both is tested. */
#include <stdlib.h>

#include "loom_plugin_2_0.h"

typedef struct inst {
    json_int_t fail_first, retry_after_ms, calls;
} inst;

static const loom_option limited_options[] = {
    { .name = "fail_first", .type = LOOM_OPT_INT, .default_value = "1" },
    { .name = "retry_after", .type = LOOM_OPT_DURATION, .default_value = "1500ms" },
    { 0 },
};

static int limited_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    inst *in = calloc(1, sizeof *in);
    if (!in) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    in->fail_first = json_integer_value(json_object_get(config, "fail_first"));
    in->retry_after_ms = json_integer_value(json_object_get(config, "retry_after"));
    loom_log(ctx, LOOM_LOG_WARN, "instance up: fail_first=%lld retry_after=%lld",
             (long long)in->fail_first, (long long)in->retry_after_ms);
    *state = in;
    return 0;
}

static void limited_fini(void *state)
{
    free(state);
}

/* Finishes at once, inside invoke (the host allows it). */
static int limited_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    inst *in = state;
    in->calls++;
    loom_log(ctx, LOOM_LOG_INFO, "invoke #%lld", (long long)in->calls);
    if (in->calls <= in->fail_first) {
        loom_fail_after(call, LOOM_E_RATE_LIMITED, (uint64_t)in->retry_after_ms, "slow down");
        return 0;
    }
    json_t *out = json_sprintf("ok after %lld", (long long)in->calls);
    if (!out) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    loom_complete(call, out, NULL);
    return 0;
}

static void limited_cancel(void *state, loom_call *call)
{
    /* nothing pending: every call ends inside invoke */
}

static const loom_provider abi20p_providers[] = {
    { .name = "abi20_limited", .options = limited_options, .init = limited_init,
      .fini = limited_fini, .invoke = limited_invoke, .cancel = limited_cancel,
      .summary = "rate limited at first" },
};

static const loom_plugin abi20p_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "abi20p",
    .version = "2.0.0",
    .providers = abi20p_providers,
    .nproviders = 1,
};

LOOM_PLUGIN_DEFINE(abi20p)
{
    return &abi20p_plugin;
}
