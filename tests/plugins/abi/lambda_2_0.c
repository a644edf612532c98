/* lambda_2_0.c -- a lambda plugin built against the frozen ABI 2.0 header
 * (loom_plugin_2_0.h), never against the current one: the loader must read
 * it with its 2.0 sizes, and the host must not read the fields 2.1 added
 * (its lambdas have no doc or example, the plugin no reload).
 *
 * It also exercises the 2.0 host API from the contexts a lambda plugin
 * has: loom_log from init (one line per level) and from a worker thread,
 * loom_deadline_ms and loom_cancelled in a long call, and an inline
 * (PURE|FAST) lambda that overruns its budget on the reactor. */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "loom_plugin_2_0.h"

static pthread_t init_thread;  /* the loading (reactor) thread */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static json_t *abi20_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_pack("{s:O, s:O}", "input", input, "args", args ? args : json_null());
}

/* One line per level, from whatever thread runs it (a worker: flags 0). */
static json_t *abi20_levels(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    int worker = !pthread_equal(pthread_self(), init_thread);
    loom_log(ctx, LOOM_LOG_ERROR, "call at error worker=%d", worker);
    loom_log(ctx, LOOM_LOG_WARN, "call at warn worker=%d", worker);
    loom_log(ctx, LOOM_LOG_INFO, "call at info worker=%d", worker);
    loom_log(ctx, LOOM_LOG_DEBUG, "call at debug worker=%d", worker);
    return json_incref(input);
}

/* A long computation that stops when the host gives up on it: says, in a
 * log line, how long after its start the deadline was and when it saw the
 * cancellation. Bounded at 10 s, so a host that never cancels fails the
 * test instead of hanging it. */
static json_t *abi20_watch(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    uint64_t start = now_ms(), deadline = loom_deadline_ms(ctx);
    volatile uint64_t work = 0;

    while (now_ms() - start < 10000) {
        for (int i = 0; i < 100000; i++)
            work += (uint64_t)i;
        if (loom_cancelled(ctx)) {
            loom_log(ctx, LOOM_LOG_INFO, "watch: deadline +%lld ms, cancelled at +%llu ms",
                     deadline ? (long long)(deadline - start) : -1LL,
                     (unsigned long long)(now_ms() - start));
            return NULL;
        }
    }
    loom_log(ctx, LOOM_LOG_ERROR, "watch: never cancelled");
    loom_error(ctx, LOOM_E_LAMBDA_FAILED, "never cancelled");
    return NULL;
}

/* PURE|FAST, yet takes 5 ms: the host must name it in a warning. */
static json_t *abi20_spin(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    uint64_t start = now_ms();
    volatile uint64_t work = 0;
    while (now_ms() - start < 5)
        work++;
    return json_incref(input);
}

static int abi20_init(loom_ctx *ctx, json_t *config, void **state)
{
    init_thread = pthread_self();
    loom_log(ctx, LOOM_LOG_ERROR, "init at error");
    loom_log(ctx, LOOM_LOG_WARN, "init at warn");
    loom_log(ctx, LOOM_LOG_INFO, "init at info");
    loom_log(ctx, LOOM_LOG_DEBUG, "init at debug");
    *state = NULL;
    return 0;
}

static const loom_option echo_args[] = {
    { .name = "x", .type = LOOM_OPT_INT, .description = "any number" },
    { .name = "y", .type = LOOM_OPT_STRING, .default_value = "why" },
    { 0 },
};

static const loom_lambda abi20_lambdas[] = {
    { .name = "echo", .fn = abi20_echo, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .args = echo_args, .summary = "input and args" },
    { .name = "levels", .fn = abi20_levels, .summary = "logs at every level" },
    { .name = "watch", .fn = abi20_watch, .summary = "runs until cancelled" },
    { .name = "spin", .fn = abi20_spin, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .summary = "too slow for its flags" },
};

static const loom_plugin abi20_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "abi20",
    .version = "2.0.0",
    .description = "built against plugin ABI 2.0",
    .lambdas = abi20_lambdas,
    .nlambdas = sizeof abi20_lambdas / sizeof abi20_lambdas[0],
    .init = abi20_init,
};

LOOM_PLUGIN_DEFINE(abi20)
{
    return &abi20_plugin;
}
