/* hostile.c -- a test plugin that breaks the process it runs in, for
 * isolated plugins (daemon/isolate): each lambda ends its helper a different
 * way, and `ok` shows the helper came back. Never load it in-process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom/plugin.h"

/* Sanitizer builds instrument this file too: UBSan would report the faults
 * below and exit 1 instead of letting them happen. */
#if defined(__GNUC__) && !defined(__clang__)
#define HOSTILE_RAW __attribute__((no_sanitize_undefined))
#else
#define HOSTILE_RAW __attribute__((no_sanitize("undefined")))
#endif

/* A real fault, not raise(): what a buggy plugin does. */
HOSTILE_RAW static json_t *segv(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    volatile int *volatile nowhere = NULL;
    *nowhere = 1;
    return NULL;
}

static json_t *spin(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return NULL;
}

/* Every block hog allocated, so the compiler cannot drop the allocations. */
static void *volatile hoard;

/* Allocates and touches memory without bound and never checks for NULL,
 * like code that assumes malloc cannot fail. */
HOSTILE_RAW static json_t *hog(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    for (;;) {
        size_t len = (size_t)64 << 20;
        char *p = malloc(len);
        memset(p, 1, len);
        *(void **)p = hoard;
        hoard = p;
    }
    return NULL;
}

/* Prints to stdout (buffered and raw) and answers normally: the bytes must
 * not reach the protocol's socket. */
static json_t *chatty(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    for (int i = 0; i < 100; i++)
        printf("{\"id\": 1, \"output\": \"chatter %d\"}\n", i);
    fflush(stdout);
    static const char raw[] = "\x10\0\0\0{\"id\":1,\"output\":0}";
    if (write(1, raw, sizeof raw - 1) < 0)
        return NULL;
    return json_pack("{s:s}", "said", "hello");
}

static json_t *bye(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    exit(3);
}

/* Its input back, with the helper's pid, so a test can see a restart. */
static json_t *ok(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_pack("{s:O, s:i}", "input", input, "pid", (int)getpid());
}

static json_t *fails(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    loom_error(ctx, LOOM_E_UPSTREAM, "hostile.fails: as asked");
    return NULL;
}

static const loom_lambda hostile_lambdas[] = {
    { .name = "segv", .fn = segv, .summary = "SIGSEGV" },
    { .name = "spin", .fn = spin, .summary = "loops forever" },
    { .name = "hog", .fn = hog, .summary = "allocates without bound" },
    { .name = "chatty", .fn = chatty, .summary = "writes to stdout, then answers" },
    { .name = "bye", .fn = bye, .summary = "exit(3)" },
    { .name = "ok", .fn = ok, .summary = "its input and the process id" },
    { .name = "fails", .fn = fails, .summary = "an upstream error" },
};

static const loom_plugin hostile_plugin = {
#ifdef LOOM_PLUGIN_HEADER
    LOOM_PLUGIN_HEADER,
#else
    .abi_major = LOOM_ABI_MAJOR,
    .abi_minor = LOOM_ABI_MINOR,
#endif
    .name = "hostile",
    .lambdas = hostile_lambdas,
    .nlambdas = sizeof hostile_lambdas / sizeof hostile_lambdas[0],
};

LOOM_PLUGIN_DEFINE(hostile)
{
    return &hostile_plugin;
}
