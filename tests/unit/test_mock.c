/* test_mock.c -- the mock provider against a fake host with real timers.
 *
 * The fake host is a reactor: timer_add arms a reactor timer, complete and
 * fail record the outcome in the test's own call struct. Timing is only
 * checked from below (no answer before its latency); waits are bounded by a
 * generous hang guard, so a loaded machine cannot fail these tests. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/reactor.h"
#include "loom/plugin.h"
#include "plugins/mock/mock.h"

/* ---- the fake host */

typedef struct fake_host {
    reactor_t *r;
    size_t finished;             /* calls completed or failed */
    size_t timers_live;
} fake_host;

typedef struct fake_call {
    loom_call base;              /* first: what the plugin sees */
    fake_host *host;
    int state;                   /* 0 pending, 1 completed, 2 failed */
    json_t *output;
    json_t *tool_calls;          /* complete_tools's, or NULL */
    loom_usage usage;
    loom_errcode code;
    uint64_t delay_ms;           /* what the plugin asked timer_add for */
    uint64_t started_us, finished_us;
} fake_call;

typedef struct fake_timer {
    reactor_timer_t *t;
    void (*cb)(void *);
    void *ud;
    fake_host *host;
} fake_timer;

typedef struct fake_ctx {
    loom_ctx base;
    loom_errcode code;
    char message[256];
} fake_ctx;

static uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * REACTOR_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static void fake_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    fake_ctx *c = (fake_ctx *)ctx;
    c->code = code;
    vsnprintf(c->message, sizeof c->message, fmt, ap);
}

static void fake_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
}

static void fake_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    fake_call *c = (fake_call *)call;
    cr_assert(eq(int, c->state, 0), "a call finished twice");
    c->state = 1;
    c->output = output;
    if (usage)
        c->usage = *usage;
    c->finished_us = reactor_now_us(c->host->r);
    c->host->finished++;
}

static void fake_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                                const loom_usage *usage)
{
    ((fake_call *)call)->tool_calls = tool_calls;
    fake_complete(call, output, usage);
}

static void fake_fail(loom_call *call, loom_errcode code, const char *message)
{
    fake_call *c = (fake_call *)call;
    cr_assert(eq(int, c->state, 0), "a call finished twice");
    c->state = 2;
    c->code = code;
    c->finished_us = reactor_now_us(c->host->r);
    c->host->finished++;
}

static void fake_fire(reactor_t *r, reactor_timer_t *t, void *ud)
{
    fake_timer *ft = ud;
    ft->cb(ft->ud);
    ft->host->timers_live--;
    free(ft);
}

static void *fake_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *), void *ud)
{
    fake_call *c = (fake_call *)call;
    fake_timer *ft = calloc(1, sizeof *ft);
    if (!ft)
        return NULL;
    ft->cb = cb;
    ft->ud = ud;
    ft->host = c->host;
    ft->t = reactor_timer_add(c->host->r, delay_ms * REACTOR_MSEC, fake_fire, ft);
    if (!ft->t) {
        free(ft);
        return NULL;
    }
    c->delay_ms = delay_ms;
    c->host->timers_live++;
    return ft;
}

static void fake_timer_cancel(loom_call *call, void *timer)
{
    fake_timer *ft = timer;
    reactor_timer_cancel(ft->host->r, ft->t);
    ft->host->timers_live--;
    free(ft);
}

static const loom_host_api fake_api = {
    .verror = fake_verror,
    .vlog = fake_vlog,
    .complete = fake_complete,
    .fail = fake_fail,
    .timer_add = fake_timer_add,
    .timer_cancel = fake_timer_cancel,
    .complete_tools = fake_complete_tools,
};

static fake_host host;
static fake_ctx ctx;
static void *plugin_state; /* the mock plugin's own state, from its init */

static void setup(void)
{
    memset(&host, 0, sizeof host);
    host.r = reactor_new();
    cr_assert(host.r != NULL);
    memset(&ctx, 0, sizeof ctx);
    ctx.base.api = &fake_api;
    plugin_state = NULL;
    cr_assert(eq(int, loom_builtin_mock_entry()->init(&ctx.base, NULL, &plugin_state), 0));
}

static void teardown(void)
{
    loom_builtin_mock_entry()->fini(plugin_state);
    reactor_free(host.r);
}

TestSuite(mock, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers */

static const loom_provider *provider(void)
{
    const loom_plugin *p = loom_builtin_mock_entry();
    cr_assert(eq(sz, p->nproviders, (size_t)1));
    return &p->providers[0];
}

/* A new instance from CONFIG (a JSON text, or NULL); fails the test if
 * init refuses it. */
static void *instance(const char *config)
{
    json_t *cfg = config ? json_loads(config, 0, NULL) : NULL;
    void *state = NULL;
    cr_assert(config == NULL || cfg != NULL, "bad test config %s", config);
    cr_assert(eq(int, provider()->init(&ctx.base, plugin_state, cfg, &state), 0), "init: %s", ctx.message);
    json_decref(cfg);
    return state;
}

/* Init with CONFIG must be refused with LOOM_E_CONFIG. */
static void refused(const char *config)
{
    json_t *cfg = json_loads(config, 0, NULL);
    void *state = NULL;
    cr_assert(cfg != NULL);
    ctx.code = LOOM_OK;
    cr_expect(eq(int, provider()->init(&ctx.base, plugin_state, cfg, &state), -1), "accepted %s", config);
    cr_expect(eq(int, (int)ctx.code, (int)LOOM_E_CONFIG), "%s", config);
    cr_expect(ctx.message[0] != '\0');
    json_decref(cfg);
}

static void call_init(fake_call *c)
{
    memset(c, 0, sizeof *c);
    c->base.api = &fake_api;
    c->host = &host;
}

/* Starts a chat call on STATE with one user message PROMPT. */
static void chat(void *state, fake_call *c, const char *prompt)
{
    json_t *messages = json_pack("[{ss ss}]", "role", "user", "content", prompt);
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m", .messages = messages };
    call_init(c);
    c->started_us = monotonic_us();
    cr_assert(eq(int, provider()->invoke(&ctx.base, state, &req, &c->base), 0), "%s",
              ctx.message);
    json_decref(messages);          /* the plugin must have copied what it keeps */
}

/* Runs the reactor until N calls in all have finished. */
static void run_until(size_t n)
{
    uint64_t guard = monotonic_us() + 20 * REACTOR_SEC;
    while (host.finished < n) {
        cr_assert(reactor_run_once(host.r, 50) >= 0);
        cr_assert(monotonic_us() < guard, "hang: %zu of %zu finished", host.finished, n);
    }
}

/* Runs the reactor for at least MS milliseconds. */
static void run_for(uint64_t ms)
{
    uint64_t end = monotonic_us() + ms * REACTOR_MSEC;
    while (monotonic_us() < end)
        reactor_run_once(host.r, 5);
}

static void expect_answer(fake_call *c, const char *text)
{
    cr_assert(eq(int, c->state, 1), "call failed with %d", (int)c->code);
    cr_assert(eq(int, json_is_string(c->output) ? 1 : 0, 1));
    cr_expect(eq(str, (char *)json_string_value(c->output), (char *)text));
    json_decref(c->output);
    c->output = NULL;
}

static mock_stats stats(const char *name)
{
    mock_stats s;
    cr_assert(eq(int, mock_stats_get(plugin_state, name, &s), 0), "no instance %s", name);
    return s;
}

/* ---- tests */

Test(mock, descriptor)
{
    const loom_plugin *p = loom_builtin_mock_entry();
    const loom_provider *pr = provider();
    int latency_found = 0;

    cr_expect(eq(u32, p->abi_major, (uint32_t)LOOM_ABI_MAJOR));
    cr_expect(eq(str, (char *)p->name, "mock"));
    cr_expect(eq(str, (char *)pr->name, "mock"));
    cr_expect(pr->invoke != NULL && pr->cancel != NULL);
    cr_expect(pr->encode == NULL && pr->decode == NULL);
    for (const loom_option *o = pr->options; o->name; o++)
        if (strcmp(o->name, "latency") == 0) {
            latency_found = 1;
            cr_expect(eq(int, (int)o->type, (int)LOOM_OPT_DURATION));
            cr_expect(eq(str, (char *)o->default_value, "20ms"));
        }
    cr_expect(latency_found);
    cr_assert(eq(sz, p->nlambdas, (size_t)1));
    cr_expect(eq(str, (char *)p->lambdas[0].name, "stats"));
}

Test(mock, echo_is_the_last_user_message)
{
    void *st = instance("{\"latency\": 1}");
    json_t *messages = json_loads(
        "[{\"role\":\"system\",\"content\":\"be brief\"},"
        " {\"role\":\"user\",\"content\":\"first\"},"
        " {\"role\":\"assistant\",\"content\":\"ok\"},"
        " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello, \"},"
        "                                {\"type\":\"text\",\"text\":\"world\"}]}]", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = messages };
    fake_call c;

    call_init(&c);
    cr_assert(eq(int, provider()->invoke(&ctx.base, st, &req, &c.base), 0));
    json_decref(messages);
    run_until(1);
    /* 8 + 5 + 2 + 12 bytes of content in, 12 out: about a quarter each. */
    cr_expect(eq(i64, c.usage.input_tokens, (int64_t)7));
    cr_expect(eq(i64, c.usage.output_tokens, (int64_t)3));
    expect_answer(&c, "Hello, world");
    provider()->fini(st);
}

Test(mock, echo_is_exact)
{
    void *st = instance(NULL);
    fake_call c;
    chat(st, &c, "  Summarise: {\"a\": 1}\n");
    run_until(1);
    expect_answer(&c, "  Summarise: {\"a\": 1}\n");
    provider()->fini(st);
}

Test(mock, messages_mode)
{
    void *st = instance("{\"mode\": \"messages\", \"latency\": 1}");
    fake_call c;
    chat(st, &c, "hi");
    run_until(1);
    expect_answer(&c, "[{\"role\":\"user\",\"content\":\"hi\"}]");
    provider()->fini(st);
}

Test(mock, answers_by_substring)
{
    void *st = instance("{\"latency\": 1, \"answers\": ["
                        "{\"match\": \"refund\", \"answer\": \"negative\"},"
                        "{\"match\": \"great\", \"answer\": \"positive\"}]}");
    fake_call c[3];
    chat(st, &c[0], "this is great, but I want a refund");
    chat(st, &c[1], "great product");
    chat(st, &c[2], "nothing matches");
    run_until(3);
    expect_answer(&c[0], "negative");        /* first match wins */
    expect_answer(&c[1], "positive");
    expect_answer(&c[2], "nothing matches"); /* else echo */
    provider()->fini(st);
}

Test(mock, answers_by_regex)
{
    void *st = instance("{\"latency\": 1, \"answers\": ["
                        "{\"match\": \"/^[0-9]+$/\", \"answer\": \"number\"},"
                        "{\"match\": \"/^YES|^no/i\", \"answer\": \"vote\"},"
                        "{\"match\": \"/x/\", \"answer\": \"has x\"}]}");
    fake_call c[5];
    chat(st, &c[0], "12345");
    chat(st, &c[1], "123a");
    chat(st, &c[2], "yes please");
    chat(st, &c[3], "No way");
    chat(st, &c[4], "plain");
    run_until(5);
    expect_answer(&c[0], "number");
    expect_answer(&c[1], "123a");
    expect_answer(&c[2], "vote");
    expect_answer(&c[3], "vote");
    expect_answer(&c[4], "plain");
    provider()->fini(st);
}

Test(mock, script_in_sequence_and_cycles)
{
    void *st = instance("{\"latency\": 1, \"script\": [\"yes\", \"yes\", \"no\"],"
                        " \"answers\": [{\"match\": \"ping\", \"answer\": \"pong\"}]}");
    const char *want[] = { "yes", "yes", "no", "yes", "yes", "no", "yes" };
    fake_call c[7], p;

    for (int i = 0; i < 7; i++) {
        chat(st, &c[i], "vote?");
        if (i == 3)
            chat(st, &p, "ping");    /* answers come first and take no script entry */
    }
    run_until(8);
    for (int i = 0; i < 7; i++)
        expect_answer(&c[i], want[i]);
    expect_answer(&p, "pong");
    provider()->fini(st);
}

Test(mock, latency_is_honoured)
{
    void *st = instance("{\"latency\": 60}");
    fake_call c[3];

    for (int i = 0; i < 3; i++)
        chat(st, &c[i], "slow");
    run_until(3);
    for (int i = 0; i < 3; i++) {
        cr_expect(eq(u64, c[i].delay_ms, (uint64_t)60));
        cr_expect(c[i].finished_us >= c[i].started_us + 60 * REACTOR_MSEC,
                  "answered after %llu us", (unsigned long long)(c[i].finished_us - c[i].started_us));
        json_decref(c[i].output);
    }
    provider()->fini(st);
}

Test(mock, default_latency_is_20ms)
{
    void *st = instance("{}");
    fake_call c;
    chat(st, &c, "x");
    cr_expect(eq(u64, c.delay_ms, (uint64_t)20));
    run_until(1);
    cr_expect(c.finished_us >= c.started_us + 20 * REACTOR_MSEC);
    json_decref(c.output);
    provider()->fini(st);
}

Test(mock, jitter_is_deterministic)
{
    void *a = instance("{\"name\": \"a\", \"latency\": 5, \"jitter\": 40, \"seed\": 7}");
    void *b = instance("{\"name\": \"b\", \"latency\": 5, \"jitter\": 40, \"seed\": 7}");
    fake_call ca[20], cb[20];
    int varied = 0;

    for (int i = 0; i < 20; i++) {
        char prompt[32];
        snprintf(prompt, sizeof prompt, "item %d", i);
        chat(a, &ca[i], prompt);
        chat(b, &cb[i], prompt);
        cr_expect(ca[i].delay_ms >= 5 && ca[i].delay_ms <= 45);
        cr_expect(eq(u64, ca[i].delay_ms, cb[i].delay_ms));
        varied |= ca[i].delay_ms != ca[0].delay_ms;
    }
    cr_expect(varied, "jitter never varied");
    run_until(40);
    for (int i = 0; i < 20; i++) {
        json_decref(ca[i].output);
        json_decref(cb[i].output);
    }
    provider()->fini(a);
    provider()->fini(b);
}

Test(mock, thousand_concurrent_calls)
{
    enum { N = 1000 };
    void *st = instance("{\"latency\": 20}");
    fake_call *c = calloc(N, sizeof *c);
    mock_stats s;

    cr_assert(c != NULL);
    for (int i = 0; i < N; i++)
        chat(st, &c[i], "fan out");
    cr_expect(eq(u64, stats("mock").in_flight, (uint64_t)N));
    run_until(N);
    for (int i = 0; i < N; i++) {
        cr_expect(eq(int, c[i].state, 1));
        cr_expect(c[i].finished_us >= c[i].started_us + 20 * REACTOR_MSEC);
        json_decref(c[i].output);
    }
    s = stats("mock");
    cr_expect(eq(u64, s.calls, (uint64_t)N));
    cr_expect(eq(u64, s.completed, (uint64_t)N));
    cr_expect(eq(u64, s.max_in_flight, (uint64_t)N));
    cr_expect(eq(u64, s.in_flight, (uint64_t)0));
    cr_expect(eq(sz, host.timers_live, (size_t)0));
    free(c);
    provider()->fini(st);
}

Test(mock, cancel_before_completion)
{
    void *st = instance("{\"latency\": 20}");
    fake_call keep, drop;
    mock_stats s;

    chat(st, &drop, "dropped");
    chat(st, &keep, "kept");
    provider()->cancel(st, &drop.base);
    cr_expect(eq(sz, host.timers_live, (size_t)1));
    run_until(1);
    run_for(60);                     /* well past drop's latency */
    cr_expect(eq(int, drop.state, 0), "a cancelled call finished");
    expect_answer(&keep, "kept");
    s = stats("mock");
    cr_expect(eq(u64, s.calls, (uint64_t)2));
    cr_expect(eq(u64, s.completed, (uint64_t)1));
    cr_expect(eq(u64, s.cancelled, (uint64_t)1));
    cr_expect(eq(u64, s.in_flight, (uint64_t)0));
    cr_expect(eq(sz, host.timers_live, (size_t)0));
    provider()->fini(st);
}

Test(mock, cancel_of_a_finished_call_is_a_no_op)
{
    void *st = instance("{\"latency\": 1}");
    fake_call c;
    chat(st, &c, "done");
    run_until(1);
    provider()->cancel(st, &c.base);
    cr_expect(eq(u64, stats("mock").cancelled, (uint64_t)0));
    expect_answer(&c, "done");
    provider()->fini(st);
}

Test(mock, fini_drops_calls_in_flight)
{
    void *st = instance("{\"latency\": 50}");
    fake_call c;
    chat(st, &c, "orphan");
    provider()->fini(st);
    cr_expect(eq(sz, host.timers_live, (size_t)0));
    run_for(80);
    cr_expect(eq(int, c.state, 0));
}

/* Which of N calls fail on a fresh instance with CONFIG, as a bit string. */
static void failing_indexes(const char *config, char *out, int n, loom_errcode code)
{
    void *st = instance(config);
    fake_call *c = calloc((size_t)n, sizeof *c);
    cr_assert(c != NULL);
    host.finished = 0;
    for (int i = 0; i < n; i++)
        chat(st, &c[i], "same prompt");
    run_until((size_t)n);
    for (int i = 0; i < n; i++) {
        out[i] = c[i].state == 2 ? '1' : '0';
        if (c[i].state == 2)
            cr_expect(eq(int, (int)c[i].code, (int)code));
        json_decref(c[i].output);
    }
    out[n] = '\0';
    free(c);
    provider()->fini(st);
}

Test(mock, failure_injection_is_deterministic)
{
    char a[101], b[101], other[101];
    const char *cfg = "{\"latency\": 1, \"fail_rate\": 0.3, \"fail_code\": \"rate_limited\","
                      " \"seed\": 42}";
    int fails = 0;

    failing_indexes(cfg, a, 100, LOOM_E_RATE_LIMITED);
    failing_indexes(cfg, b, 100, LOOM_E_RATE_LIMITED);
    failing_indexes("{\"latency\": 1, \"fail_rate\": 0.3, \"fail_code\": \"rate_limited\","
                    " \"seed\": 43}", other, 100, LOOM_E_RATE_LIMITED);
    cr_expect(eq(str, a, b));
    cr_expect(ne(str, a, other), "another seed gave the same failures");
    for (int i = 0; i < 100; i++)
        fails += a[i] == '1';
    cr_expect(fails > 10 && fails < 60, "%d of 100 failed at rate 0.3", fails);
}

Test(mock, every_fail_code)
{
    static const struct { const char *name; loom_errcode code; } codes[] = {
        { "upstream", LOOM_E_UPSTREAM }, { "rate_limited", LOOM_E_RATE_LIMITED },
        { "timeout", LOOM_E_TIMEOUT }, { "quota", LOOM_E_QUOTA },
        { "invalid_request", LOOM_E_INVALID_REQUEST },
        { "invalid_output", LOOM_E_INVALID_OUTPUT },
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        char cfg[128], bits[4];
        snprintf(cfg, sizeof cfg, "{\"latency\": 1, \"fail_rate\": 1, \"fail_code\": \"%s\"}",
                 codes[i].name);
        failing_indexes(cfg, bits, 3, codes[i].code);
        cr_expect(eq(str, bits, "111"), "%s", codes[i].name);
    }
    {
        char bits[4];
        failing_indexes("{\"latency\": 1, \"fail_rate\": 0}", bits, 3, LOOM_OK);
        cr_expect(eq(str, bits, "000"));
    }
}

/* Embeds INPUTS (a JSON array text) on STATE and returns the output. */
static json_t *embed(void *state, const char *inputs, fake_call *c)
{
    json_t *in = json_loads(inputs, 0, NULL);
    loom_request req = { .kind = LOOM_CALL_EMBED, .inputs = in };
    call_init(c);
    host.finished = 0;
    cr_assert(eq(int, provider()->invoke(&ctx.base, state, &req, &c->base), 0));
    json_decref(in);
    run_until(1);
    cr_assert(eq(int, c->state, 1));
    return c->output;
}

static double norm_of(json_t *v)
{
    double n = 0;
    for (size_t i = 0; i < json_array_size(v); i++)
        n += json_real_value(json_array_get(v, i)) * json_real_value(json_array_get(v, i));
    return sqrt(n);
}

Test(mock, embeddings_are_deterministic_unit_vectors)
{
    void *a = instance("{\"name\": \"a\", \"latency\": 1, \"embed_dims\": 16}");
    void *b = instance("{\"name\": \"b\", \"latency\": 1, \"embed_dims\": 16, \"seed\": 9}");
    void *d = instance("{\"name\": \"d\", \"latency\": 1}");
    fake_call ca, cb, cd;
    json_t *va = embed(a, "[\"alpha\", \"beta\", \"alpha\"]", &ca);
    json_t *vb = embed(b, "[\"alpha\", \"beta\", \"alpha\"]", &cb);
    json_t *vd = embed(d, "[\"alpha\"]", &cd);

    cr_assert(eq(sz, json_array_size(va), (size_t)3));
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_array_get(va, i);
        cr_expect(eq(sz, json_array_size(v), (size_t)16));
        cr_expect(fabs(norm_of(v) - 1.0) < 1e-9);
    }
    cr_expect(json_equal(json_array_get(va, 0), json_array_get(va, 2)));
    cr_expect(eq(int, json_equal(json_array_get(va, 0), json_array_get(va, 1)), 0));
    cr_expect(json_equal(va, vb), "embeddings depend on the input only");
    cr_expect(eq(sz, json_array_size(json_array_get(vd, 0)), (size_t)8));
    cr_expect(ca.usage.input_tokens > 0);
    json_decref(va);
    json_decref(vb);
    json_decref(vd);
    provider()->fini(a);
    provider()->fini(b);
    provider()->fini(d);
}

Test(mock, json_mode_answer_is_as_is)
{
    void *st = instance("{\"latency\": 1, \"script\": [\"not json\"]}");
    json_t *messages = json_pack("[{ss ss}]", "role", "user", "content", "give json");
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = messages, .json_mode = 1 };
    fake_call c;
    call_init(&c);
    cr_assert(eq(int, provider()->invoke(&ctx.base, st, &req, &c.base), 0));
    json_decref(messages);
    run_until(1);
    expect_answer(&c, "not json");
    provider()->fini(st);
}

Test(mock, stats_lambda)
{
    const loom_lambda *fn = &loom_builtin_mock_entry()->lambdas[0];
    void *st = instance("{\"name\": \"fast\", \"latency\": 1, \"fail_rate\": 1}");
    void *other = instance("{\"latency\": 1}");
    json_t *args = json_pack("{ss}", "provider", "fast");
    json_t *out, *want;
    fake_call c[3];

    chat(st, &c[0], "a");
    chat(st, &c[1], "b");
    chat(st, &c[2], "c");
    provider()->cancel(st, &c[2].base);
    run_until(2);
    out = fn->fn(&ctx.base, plugin_state, json_null(), args);
    want = json_pack("{sisisisisisi}", "calls", 3, "completed", 0, "failed", 2, "cancelled", 1,
                     "in_flight", 0, "max_in_flight", 3);
    cr_assert(out != NULL, "%s", ctx.message);
    cr_expect(json_equal(out, want), "got %s", json_dumps(out, JSON_COMPACT));
    json_decref(out);
    json_decref(want);
    json_decref(args);

    /* Without args: the instance called "mock". */
    out = fn->fn(&ctx.base, plugin_state, json_null(), NULL);
    cr_assert(out != NULL);
    cr_expect(eq(i64, (int64_t)json_integer_value(json_object_get(out, "calls")), (int64_t)0));
    json_decref(out);

    /* After fini the name is gone. */
    provider()->fini(st);
    args = json_pack("{ss}", "provider", "fast");
    ctx.code = LOOM_OK;
    cr_expect(fn->fn(&ctx.base, plugin_state, json_null(), args) == NULL);
    cr_expect(eq(int, (int)ctx.code, (int)LOOM_E_LAMBDA_FAILED));
    json_decref(args);
    provider()->fini(other);
}

Test(mock, bad_config_is_refused)
{
    refused("{\"mode\": \"shout\"}");
    refused("{\"fail_rate\": 2}");
    refused("{\"fail_rate\": -0.1}");
    refused("{\"fail_rate\": \"half\"}");
    refused("{\"fail_code\": \"teapot\"}");
    refused("{\"latency\": \"20ms\"}");
    refused("{\"latency\": -1}");
    refused("{\"embed_dims\": 0}");
    refused("{\"answers\": {\"match\": \"a\", \"answer\": \"b\"}}");
    refused("{\"answers\": [{\"match\": \"a\"}]}");
    refused("{\"answers\": [{\"match\": \"a\", \"answer\": \"b\", \"extra\": 1}]}");
    refused("{\"answers\": [{\"match\": \"ok\", \"answer\": \"b\"},"
            " {\"match\": \"/([a-z/\", \"answer\": \"b\"}]}");
    refused("{\"script\": [\"yes\", 3]}");
    refused("[1, 2]");
    cr_expect(ne(int, mock_stats_get(plugin_state, "mock", &(mock_stats){ 0 }), 0),
              "a refused instance stayed registered");
}

Test(mock, invalid_request_is_refused_at_invoke)
{
    void *st = instance("{\"latency\": 1}");
    json_t *not_array = json_string("hello");
    json_t *bad_inputs = json_loads("[\"a\", 1]", 0, NULL);
    loom_request chat_req = { .kind = LOOM_CALL_CHAT, .messages = not_array };
    loom_request embed_req = { .kind = LOOM_CALL_EMBED, .inputs = bad_inputs };
    fake_call c;

    call_init(&c);
    cr_expect(eq(int, provider()->invoke(&ctx.base, st, &chat_req, &c.base), -1));
    cr_expect(eq(int, (int)ctx.code, (int)LOOM_E_INVALID_REQUEST));
    ctx.code = LOOM_OK;
    cr_expect(eq(int, provider()->invoke(&ctx.base, st, &embed_req, &c.base), -1));
    cr_expect(eq(int, (int)ctx.code, (int)LOOM_E_INVALID_REQUEST));
    cr_expect(eq(u64, stats("mock").calls, (uint64_t)0));
    cr_expect(eq(sz, host.timers_live, (size_t)0));
    json_decref(not_array);
    json_decref(bad_inputs);
    provider()->fini(st);
}

/* ---- tool calls (ABI 2.3) */

/* Starts a chat call offering one tool, over MESSAGES (a JSON text). */
static void tool_chat(void *state, fake_call *c, const char *messages)
{
    json_t *m = json_loads(messages, 0, NULL);
    json_t *tools = json_pack("[{s:s, s:s, s:{s:s}}]", "name", "lookup", "description", "d",
                              "parameters", "type", "object");
    cr_assert(m && tools);
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m", .messages = m, .tools = tools };
    call_init(c);
    cr_assert(eq(int, provider()->invoke(&ctx.base, state, &req, &c->base), 0), "%s",
              ctx.message);
    json_decref(m);
    json_decref(tools);
}

Test(mock, tool_script_answers_each_turn_of_a_conversation)
{
    void *st = instance("{\"latency\": 1, \"tool_script\": ["
                        " [{\"name\": \"lookup\", \"arguments\": {\"q\": \"a\"}},"
                        "  {\"name\": \"lookup\", \"arguments\": {\"q\": \"b\"}}],"
                        " \"found: {results}\"]}");
    fake_call c1, c2, c3;

    /* turn 1: no tool turn yet in the conversation: two calls */
    tool_chat(st, &c1, "[{\"role\": \"user\", \"content\": \"go\"}]");
    run_until(1);
    cr_assert(eq(int, c1.state, 1));
    cr_assert(eq(sz, json_array_size(c1.tool_calls), (size_t)2));
    json_t *k = json_array_get(c1.tool_calls, 1);
    cr_expect(eq(str, (char *)json_string_value(json_object_get(k, "id")), "call_1_2"));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(k, "name")), "lookup"));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(json_object_get(k, "arguments"), "q")),
                 "b"));
    cr_expect(eq(str, (char *)json_string_value(c1.output), ""));
    cr_expect(c1.usage.output_tokens > 0);
    json_decref(c1.output);
    json_decref(c1.tool_calls);

    /* turn 2: one tool turn and its results: the final text with them */
    tool_chat(st, &c2,
              "[{\"role\": \"user\", \"content\": \"go\"},"
              " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": ["
              "   {\"id\": \"call_1_1\", \"name\": \"lookup\", \"arguments\": {}}]},"
              " {\"role\": \"tool\", \"tool_call_id\": \"call_1_1\", \"name\": \"lookup\","
              "  \"content\": \"A\", \"is_error\": false},"
              " {\"role\": \"tool\", \"tool_call_id\": \"call_1_2\", \"name\": \"lookup\","
              "  \"content\": \"B\", \"is_error\": false}]");
    run_until(2);
    cr_expect(c2.tool_calls == NULL);
    expect_answer(&c2, "found: A\nB");

    /* without tools offered the script does not apply: echo */
    chat(st, &c3, "plain");
    run_until(3);
    cr_expect(c3.tool_calls == NULL);
    expect_answer(&c3, "plain");
    provider()->fini(st);
}

Test(mock, bad_tool_script_is_refused)
{
    refused("{\"tool_script\": {}}");
    refused("{\"tool_script\": [[]]}");
    refused("{\"tool_script\": [[{\"arguments\": {}}]]}");
    refused("{\"tool_script\": [[{\"name\": \"x\", \"arguments\": 3}]]}");
    refused("{\"tool_script\": [7]}");
}
