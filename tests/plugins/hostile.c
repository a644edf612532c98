/* hostile.c -- a test plugin that breaks the process it runs in, for
 * isolated plugins (daemon/isolate): each lambda ends its helper a different
 * way, and `ok` shows the helper came back. The rest show what a helper
 * gives a well-behaved plugin: `patient` waits for loom_cancelled, `deadline`
 * reports loom_deadline_ms, `setting` answers from the configuration its
 * init and reload were given. Its invoke provider `hostile_echo` does what
 * the request's model says: answers later from a timer (the default),
 * fails with a Retry-After ("limited"), never answers until cancelled
 * ("never"), reports its deadline ("deadline") or segfaults ("segv").
 * Never load it in-process. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for the host to give up on the call, polling as a long lambda
 * should, then returns (its answer is dropped). */
static json_t *patient(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    uint64_t start = now_ms();
    struct timespec tick = { 0, 1000000 };
    while (!loom_cancelled(ctx))
        nanosleep(&tick, NULL);
    return json_pack("{s:I}", "waited_ms", (json_int_t)(now_ms() - start));
}

/* The call's deadline and the clock now, both CLOCK_MONOTONIC ms. */
static json_t *deadline(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_pack("{s:I, s:I}", "deadline_ms", (json_int_t)loom_deadline_ms(ctx), "now_ms",
                     (json_int_t)now_ms());
}

/* The plugin's configuration: replaced whole by reload, read by setting. */
typedef struct hostile_state {
    pthread_mutex_t mu;
    json_t *config;            /* owned copy, or NULL */
} hostile_state;

static int h_init(loom_ctx *ctx, json_t *config, void **state)
{
    hostile_state *st = calloc(1, sizeof *st);
    if (!st || (config && !(st->config = json_deep_copy(config)))) {
        free(st);
        loom_error(ctx, LOOM_E_NOMEM, "hostile: out of memory");
        return -1;
    }
    pthread_mutex_init(&st->mu, NULL);
    *state = st;
    return 0;
}

static int h_reload(loom_ctx *ctx, void *state, json_t *config)
{
    hostile_state *st = state;
    json_t *copy = config ? json_deep_copy(config) : NULL;
    if (config && !copy) {
        loom_error(ctx, LOOM_E_NOMEM, "hostile: out of memory");
        return -1;
    }
    pthread_mutex_lock(&st->mu);
    json_t *old = st->config;
    st->config = copy;
    pthread_mutex_unlock(&st->mu);
    json_decref(old);
    return 0;
}

static void h_fini(void *state)
{
    hostile_state *st = state;
    json_decref(st->config);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* The configuration's "value" (null when it has none), with the pid. */
static json_t *setting(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    hostile_state *st = state;
    pthread_mutex_lock(&st->mu);
    json_t *v = json_object_get(st->config, "value");
    json_t *out = json_pack("{s:O, s:i}", "value", v ? v : json_null(), "pid", (int)getpid());
    pthread_mutex_unlock(&st->mu);
    return out;
}

/* ---- hostile_echo: an invoke provider */

/* A call waiting for its timer. */
typedef struct echo_pending {
    struct echo_pending *next;
    struct echo_state *st;
    loom_call *call;
    void *timer;
    char *text;                /* the answer */
} echo_pending;

typedef struct echo_state {
    char *prefix;
    echo_pending *pending;
} echo_state;

static const loom_option echo_options[] = {
    { .name = "prefix", .type = LOOM_OPT_STRING, .default_value = "", .description = "put before each answer" },
    { .name = NULL },
};

static int echo_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    echo_state *st = calloc(1, sizeof *st);
    const char *prefix = json_string_value(json_object_get(config, "prefix"));
    if (!st || !(st->prefix = strdup(prefix ? prefix : ""))) {
        free(st);
        loom_error(ctx, LOOM_E_NOMEM, "hostile_echo: out of memory");
        return -1;
    }
    *state = st;
    return 0;
}

static void echo_drop(echo_pending *pd)
{
    for (echo_pending **pp = &pd->st->pending; *pp; pp = &(*pp)->next)
        if (*pp == pd) {
            *pp = pd->next;
            break;
        }
    free(pd->text);
    free(pd);
}

static void echo_fini(void *state)
{
    echo_state *st = state;
    while (st->pending)
        echo_drop(st->pending);
    free(st->prefix);
    free(st);
}

static void echo_fire(void *ud)
{
    echo_pending *pd = ud;
    loom_usage usage = { 3, 5, -1, -1 };
    loom_complete(pd->call, json_string(pd->text), &usage);
    echo_drop(pd);
}

HOSTILE_RAW static int echo_invoke(loom_ctx *ctx, void *state, const loom_request *req,
                                   loom_call *call)
{
    echo_state *st = state;
    const char *model = req->model ? req->model : "";
    if (!strcmp(model, "segv")) {
        volatile int *volatile nowhere = NULL;
        *nowhere = 1;
    }
    if (!strcmp(model, "limited")) {
        loom_fail_after(call, LOOM_E_RATE_LIMITED, 1500, "hostile_echo: slow down");
        return 0;
    }
    echo_pending *pd = calloc(1, sizeof *pd);
    json_t *last = json_array_get(req->messages, json_array_size(req->messages) - 1);
    const char *content = json_string_value(json_object_get(last, "content"));
    char text[512];
    if (!strcmp(model, "deadline"))
        snprintf(text, sizeof text, "%lld",
                 (long long)loom_deadline_ms(ctx) - (long long)now_ms());
    else
        snprintf(text, sizeof text, "%s%s", st->prefix, content ? content : "");
    if (!pd || !(pd->text = strdup(text))) {
        free(pd);
        loom_error(ctx, LOOM_E_NOMEM, "hostile_echo: out of memory");
        return -1;
    }
    pd->st = st;
    pd->call = call;
    pd->next = st->pending;
    st->pending = pd;
    /* "never" waits an hour: only a cancel ends it */
    if (!(pd->timer = call->api->timer_add(call, !strcmp(model, "never") ? 3600000 : 20,
                                           echo_fire, pd))) {
        echo_drop(pd);
        loom_error(ctx, LOOM_E_NOMEM, "hostile_echo: out of memory");
        return -1;
    }
    return 0;
}

static void echo_cancel(void *state, loom_call *call)
{
    echo_state *st = state;
    for (echo_pending *pd = st->pending; pd; pd = pd->next)
        if (pd->call == call) {
            call->api->timer_cancel(call, pd->timer);
            loom_call_log(call, LOOM_LOG_INFO, "hostile_echo: call cancelled");
            echo_drop(pd);
            return;
        }
}

static const loom_provider hostile_providers[] = {
    { .name = "hostile_echo", .options = echo_options, .init = echo_init, .fini = echo_fini,
      .invoke = echo_invoke, .cancel = echo_cancel, .summary = "answers as its model says" },
};

static const loom_lambda hostile_lambdas[] = {
    { .name = "segv", .fn = segv, .summary = "SIGSEGV" },
    { .name = "spin", .fn = spin, .summary = "loops forever" },
    { .name = "hog", .fn = hog, .summary = "allocates without bound" },
    { .name = "chatty", .fn = chatty, .summary = "writes to stdout, then answers" },
    { .name = "bye", .fn = bye, .summary = "exit(3)" },
    { .name = "ok", .fn = ok, .summary = "its input and the process id" },
    { .name = "fails", .fn = fails, .summary = "an upstream error" },
    { .name = "patient", .fn = patient, .summary = "returns once loom_cancelled says so" },
    { .name = "deadline", .fn = deadline, .summary = "loom_deadline_ms and the clock" },
    { .name = "setting", .fn = setting, .summary = "the configuration's value, and the pid" },
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
    .providers = hostile_providers,
    .nproviders = sizeof hostile_providers / sizeof hostile_providers[0],
    .init = h_init,
    .fini = h_fini,
    .reload = h_reload,
};

LOOM_PLUGIN_DEFINE(hostile)
{
    return &hostile_plugin;
}
