/* test_upstream_invoke.c -- invoke providers behind the upstream: the same
 * limiter, 429 pause, quota, usage and batching as HTTP providers, through
 * the in-process transport (daemon/upstream/upstream_invoke.c).
 *
 * Pacing is measured by the provider's own observations (the mock's most
 * calls in flight and the times its calls started, CLOCK_MONOTONIC), never
 * by tuning a wall-clock budget: each bound below is derived from the
 * limiter's algorithm (ratelimit.c) and the mock's latency, and reactor
 * timers never fire early. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "daemon/core/reactor.h"
#include "daemon/upstream/upstream.h"
#include "loom/plugin.h"
#include "plugins/mock/mock.h"

static reactor_t *r;
static upstream_t *up;
static const loom_provider *def;
static void *plugin_state; /* the mock plugin's registry */
static void *pstate;       /* the instance's */

typedef struct got {
    int n;
    json_t *out;
    loom_errcode code;
    char msg[256];
    loom_usage usage;
    bool has_ra;
    uint64_t ra_ms;
    uint64_t at_us;        /* when the callback ran */
} got;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void on_done(upstream_call_t *c, upstream_result *res, void *ud)
{
    got *g = ud;
    (void)c;
    g->n++;
    g->out = res->output;
    g->code = res->code;
    g->usage = res->usage;
    g->has_ra = res->has_retry_after;
    g->ra_ms = res->retry_after_ms;
    g->at_us = now_us();
    snprintf(g->msg, sizeof g->msg, "%s", res->message ? res->message : "");
}

typedef struct tctx {
    loom_ctx base;
    char msg[256];
} tctx;

static void t_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    (void)code;
    vsnprintf(((tctx *)ctx)->msg, sizeof ((tctx *)ctx)->msg, fmt, ap);
}
static void t_vlog(loom_ctx *ctx, int l, const char *fmt, va_list ap)
{
    (void)ctx, (void)l, (void)fmt, (void)ap;
}
static const loom_host_api t_api = { .verror = t_verror, .vlog = t_vlog };

/* A mock instance "m" configured by CONFIG (JSON text; durations in ms)
 * behind an upstream with LIMITS and OPT. */
static void setup_mock(const char *config, const rl_limits *limits, const upstream_options *opt)
{
    cr_assert(r = reactor_new());
    const loom_plugin *p = loom_builtin_mock_entry();
    tctx ctx = { .base.api = &t_api };
    cr_assert_eq(p->init(&ctx.base, NULL, &plugin_state), 0);
    def = &p->providers[0];
    json_t *cfg = json_loads(config, 0, NULL);
    cr_assert(cfg, "bad test config %s", config);
    json_object_set_new(cfg, "name", json_string("m"));
    cr_assert_eq(def->init(&ctx.base, plugin_state, cfg, &pstate), 0, "%s", ctx.msg);
    json_decref(cfg);
    cr_assert(up = upstream_new_invoke(r, "m", def, pstate, limits, opt));
}

static void teardown(void)
{
    upstream_free(up); /* before fini: it cancels what is in flight */
    up = NULL;
    if (def && def->fini)
        def->fini(pstate);
    if (plugin_state)
        loom_builtin_mock_entry()->fini(plugin_state);
    plugin_state = NULL;
    def = NULL;
    reactor_free(r);
}

TestSuite(upstream_invoke, .fini = teardown);

static mock_stats mstats(void)
{
    mock_stats s;
    cr_assert_eq(mock_stats_get(plugin_state, "m", &s), 0);
    return s;
}

static upstream_call_t *chat(const char *text, got *g)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs };
    upstream_call_t *c = upstream_call(up, &req, NULL, on_done, g);
    json_decref(msgs);
    cr_assert(c);
    return c;
}

/* Runs the reactor until *N reaches WANT (a deadline far above any bound
 * of these tests, so a hang fails instead of blocking). */
static void run_until(const int *n, int want)
{
    uint64_t end = now_us() + 30u * 1000000u;
    while (*n < want && now_us() < end)
        reactor_run_once(r, 10);
    cr_assert_eq(*n, want, "only %d of %d calls ended", *n, want);
}

static void run_until_mock(uint64_t calls)
{
    uint64_t end = now_us() + 30u * 1000000u;
    while (mstats().calls < calls && now_us() < end)
        reactor_run_once(r, 10);
    cr_assert_eq(mstats().calls, calls);
}

/* concurrency 1: the mock never sees two calls at once; each of N calls
 * starts after the one before ended, D ms after it started, so the last
 * starts (N-1)*D after the first and ends N*D after it. */
Test(upstream_invoke, concurrency_one_serialises_calls)
{
    enum { N = 8, D = 10 };
    setup_mock("{\"latency\": 10}", &(rl_limits){ .concurrency = 1 }, NULL);
    got g[N] = { 0 };
    int done = 0;
    uint64_t t0 = now_us();
    for (int i = 0; i < N; i++)
        chat("hello", &g[i]);
    uint64_t end = now_us() + 30u * 1000000u;
    while (done < N && now_us() < end) {
        reactor_run_once(r, 10);
        done = 0;
        for (int i = 0; i < N; i++)
            done += g[i].n;
    }
    cr_assert_eq(done, N);
    mock_stats s = mstats();
    cr_assert_eq(s.max_in_flight, 1);
    cr_assert_eq(s.completed, N);
    cr_assert_geq(s.last_start_us - s.first_start_us, (uint64_t)(N - 1) * D * 1000);
    uint64_t last_end = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].code, LOOM_OK, "%s", g[i].msg);
        cr_assert_str_eq(json_string_value(g[i].out), "hello");
        cr_assert_gt(g[i].usage.input_tokens, 0);
        json_decref(g[i].out);
        if (g[i].at_us > last_end)
            last_end = g[i].at_us;
    }
    cr_assert_geq(last_end - t0, (uint64_t)N * D * 1000);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.requests, N);
    cr_assert_eq(st.succeeded, N);
    cr_assert_eq(st.limiter.effective_concurrency, 1);
    cr_assert_gt(st.input_tokens, 0);
}

/* rpm R: the limiter is a GCRA with T = 60 s / R per request and a burst
 * tolerance tau = max(T, 900 ms) (ratelimit.c). Call k (from 0) of a
 * backlog that arrived at t0 is granted no earlier than t0 + (k+1)*T - tau:
 * at rpm 600 (T = 100 ms) the first 9 go at once and the 12th waits until
 * t0 + 300 ms. Without the limiter all 12 start at once. */
Test(upstream_invoke, rpm_paces_call_starts)
{
    enum { N = 12, RPM = 600 };
    const uint64_t T_us = 60000000u / RPM, tau_us = 900000u;
    setup_mock("{\"latency\": 0}", &(rl_limits){ .rpm = RPM }, NULL);
    got g[N] = { 0 };
    uint64_t t0 = now_us();
    for (int i = 0; i < N; i++)
        chat("x", &g[i]);
    run_until_mock(N);
    mock_stats s = mstats();
    cr_assert_geq(s.last_start_us - t0, N * T_us - tau_us);
    for (int i = 0; i < N; i++)
        run_until(&g[i].n, 1);
    for (int i = 0; i < N; i++)
        json_decref(g[i].out);
}

/* A LOOM_E_RATE_LIMITED failure with a Retry-After of P ms pauses the
 * provider: the call waits in the queue again and the retry starts no
 * earlier than the failure (which came L ms after the first start) + P. */
Test(upstream_invoke, rate_limited_pauses_and_requeues)
{
    enum { L = 5, P = 200 };
    setup_mock("{\"latency\": 5, \"fail_every\": 2, \"fail_code\": \"rate_limited\", "
               "\"retry_after\": 200}",
               NULL, NULL);
    got g = { 0 };
    uint64_t t0 = now_us();
    chat("again", &g);
    run_until(&g.n, 1);
    cr_assert_eq(g.code, LOOM_OK, "%s", g.msg);
    cr_assert_str_eq(json_string_value(g.out), "again");
    json_decref(g.out);
    mock_stats s = mstats();
    cr_assert_eq(s.calls, 2);
    cr_assert_eq(s.failed, 1);
    cr_assert_eq(s.completed, 1);
    cr_assert_geq(s.last_start_us - t0, (uint64_t)(L + P) * 1000);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.rate_limited, 1);
    cr_assert_eq(st.requests, 2);
    cr_assert_eq(st.succeeded, 1);
    cr_assert_eq(st.failed, 0);
}

/* Past max_rate_limit_waits the call fails as rate_limited, with the
 * provider's Retry-After for the engine's retry policy. */
Test(upstream_invoke, rate_limited_past_the_waits_fails)
{
    setup_mock("{\"latency\": 1, \"fail_every\": 1, \"fail_code\": \"rate_limited\", "
               "\"retry_after\": 30}",
               NULL, &(upstream_options){ .max_rate_limit_waits = 1 });
    got g = { 0 };
    chat("no", &g);
    run_until(&g.n, 1);
    cr_assert_eq(g.code, LOOM_E_RATE_LIMITED);
    cr_assert(g.has_ra);
    cr_assert_eq(g.ra_ms, 30);
    cr_assert_eq(mstats().calls, 2);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.rate_limited, 2);
    cr_assert_eq(st.failed, 1);
}

/* quota disables the provider: the next call fails without reaching it. */
Test(upstream_invoke, quota_disables_the_provider)
{
    setup_mock("{\"latency\": 1, \"fail_every\": 1, \"fail_code\": \"quota\"}", NULL, NULL);
    got a = { 0 }, b = { 0 };
    chat("one", &a);
    run_until(&a.n, 1);
    cr_assert_eq(a.code, LOOM_E_QUOTA);
    chat("two", &b);
    run_until(&b.n, 1);
    cr_assert_eq(b.code, LOOM_E_QUOTA);
    cr_assert(strstr(b.msg, "disabled"), "%s", b.msg);
    cr_assert_eq(mstats().calls, 1);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert(st.disabled);
}

/* Cancelling a running call reaches the plugin's cancel (and frees the
 * concurrency slot); cancelling a queued one never reaches the plugin.
 * Neither is ever called back. */
Test(upstream_invoke, cancel_running_and_queued)
{
    setup_mock("{\"latency\": 60000}", &(rl_limits){ .concurrency = 1 }, NULL);
    got a = { 0 }, b = { 0 }, c = { 0 };
    upstream_call_t *ca = chat("a", &a);
    upstream_call_t *cb = chat("b", &b);
    run_until_mock(1);
    upstream_cancel(cb); /* queued behind A */
    upstream_cancel(ca); /* running */
    mock_stats s = mstats();
    cr_assert_eq(s.cancelled, 1);
    cr_assert_eq(s.in_flight, 0);
    chat("c", &c); /* the slot is free again */
    run_until_mock(2);
    for (int i = 0; i < 5; i++)
        reactor_run_once(r, 1);
    cr_assert_eq(a.n + b.n + c.n, 0);
    cr_assert_eq(mstats().calls, 2); /* A and C: B never started */
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.limiter.in_flight, 1);
}

/* ---- a provider of the test's own: an end inside invoke, the deadline,
 * usage, batching */

typedef struct sync_state {
    int invokes;
    uint64_t deadline_ms;
    size_t inputs[8];          /* inputs per invoke */
} sync_state;

static int sync_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    sync_state *s = state;
    s->deadline_ms = loom_deadline_ms(ctx);
    if (req->kind == LOOM_CALL_EMBED) {
        size_t n = json_array_size(req->inputs);
        if (s->invokes < 8)
            s->inputs[s->invokes] = n;
        s->invokes++;
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++) /* the vector of an input: [its length] */
            json_array_append_new(out, json_pack("[i]", (int)json_string_length(
                                                           json_array_get(req->inputs, i))));
        loom_complete(call, out, &(loom_usage){ (int64_t)n * 2, 0, -1, -1 });
        return 0;
    }
    s->invokes++;
    loom_complete(call, json_string("now"), &(loom_usage){ 10, 2, -1, -1 });
    return 0;
}

static const loom_provider sync_def = { .name = "sync", .invoke = sync_invoke, .max_batch = 4 };

static void setup_sync(sync_state *s)
{
    cr_assert(r = reactor_new());
    memset(s, 0, sizeof *s);
    pstate = s;
    cr_assert(up = upstream_new_invoke(r, "s", &sync_def, s, &(rl_limits){ .tpm = 100000 },
                                       NULL));
}

/* An answer given inside invoke is delivered after it returns, with its
 * usage; the call's deadline reaches loom_deadline_ms. */
Test(upstream_invoke, end_inside_invoke_with_usage_and_deadline)
{
    sync_state s;
    setup_sync(&s);
    got g = { 0 };
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs };
    upstream_call_info info = { .job = "J1", .step = "do.call", .deadline_ms = 123456789 };
    cr_assert(upstream_call(up, &req, &info, on_done, &g));
    json_decref(msgs);
    cr_assert_eq(g.n, 0); /* never inside upstream_call */
    run_until(&g.n, 1);
    cr_assert_eq(g.code, LOOM_OK, "%s", g.msg);
    cr_assert_str_eq(json_string_value(g.out), "now");
    json_decref(g.out);
    cr_assert_eq(g.usage.input_tokens, 10);
    cr_assert_eq(g.usage.output_tokens, 2);
    cr_assert_eq(s.deadline_ms, 123456789);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.input_tokens, 10);
    cr_assert_eq(st.output_tokens, 2);
}

/* max_batch 4: three calls of 3 inputs each, made in one pass, go out as
 * batches of 4, 4 and 1, and each call gets its own vectors in order. */
Test(upstream_invoke, embeddings_batched_by_max_batch)
{
    sync_state s;
    setup_sync(&s);
    got g[3] = { 0 };
    const char *words[3][3] = { { "a", "bb", "ccc" }, { "dddd", "e", "ff" }, { "g", "hh", "i" } };
    for (int i = 0; i < 3; i++) {
        json_t *in = json_pack("[s, s, s]", words[i][0], words[i][1], words[i][2]);
        loom_request req = { .kind = LOOM_CALL_EMBED, .inputs = in };
        cr_assert(upstream_call(up, &req, NULL, on_done, &g[i]));
        json_decref(in);
    }
    for (int i = 0; i < 3; i++)
        run_until(&g[i].n, 1);
    cr_assert_eq(s.invokes, 3);
    cr_assert_eq(s.inputs[0], 4);
    cr_assert_eq(s.inputs[1], 4);
    cr_assert_eq(s.inputs[2], 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(g[i].code, LOOM_OK, "%s", g[i].msg);
        cr_assert_eq(json_array_size(g[i].out), 3);
        for (int j = 0; j < 3; j++)
            cr_assert_eq(json_integer_value(json_array_get(json_array_get(g[i].out, j), 0)),
                         (json_int_t)strlen(words[i][j]));
        json_decref(g[i].out);
    }
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.batches, 3);
    cr_assert_eq(st.requests, 3);
    cr_assert_eq(st.input_tokens, 18); /* 2 per input, shared out by inputs */
}
