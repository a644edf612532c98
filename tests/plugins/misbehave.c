/* misbehave.c -- a test plugin whose lambdas break their contract: one never
 * returns, one kills the process on a chosen input, the others hand back
 * values no job may take. */
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

/* A poison job: crashes the whole process (SIGSEGV) when its input has
 * "crash": true, and answers its input otherwise. A real fault, not raise():
 * the pool's threads block every signal, and a blocked raise() would wait.
 * Not instrumented by UBSan, which would end the process with its own
 * report (exit status 1) before the fault: the crash must be the same
 * under --enable-sanitizers. */
__attribute__((no_sanitize("undefined")))
static json_t *crash_on(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    if (json_is_true(json_object_get(input, "crash"))) {
        volatile int *volatile nowhere = NULL;
        *nowhere = 1;
    }
    return json_incref(input);
}

/* Flagged PURE|FAST, so it runs on the reactor thread, and never returns:
 * a daemon whose loop is stuck (the reactor blocks every signal). */
static json_t *spin_inline(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    for (;;)
        pause();
    return NULL;
}

static const loom_lambda misbehave_lambdas[] = {
    { .name = "forever", .fn = forever, .summary = "never returns" },
    { .name = "bad_utf8", .fn = bad_utf8, .summary = "returns invalid UTF-8" },
    { .name = "nothing", .fn = nothing, .summary = "returns NULL without an error" },
    { .name = "spin_inline", .fn = spin_inline, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .summary = "claims to be pure and fast, and never returns (on the reactor)" },
    { .name = "crash_on", .fn = crash_on,
      .summary = "SIGSEGV when the input has \"crash\": true, else its input" },
};

static const loom_plugin misbehave_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "misbehave",
    .lambdas = misbehave_lambdas,
    .nlambdas = sizeof misbehave_lambdas / sizeof misbehave_lambdas[0],
};

LOOM_PLUGIN_DEFINE(misbehave)
{
    return &misbehave_plugin;
}
