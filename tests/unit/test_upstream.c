/* test_upstream.c -- daemon/upstream*.c with the real openai and anthropic
 * plugins against the fake provider server over HTTP: answers and usage,
 * 429s pausing the provider, configured limits never exceeded, quota
 * disabling the provider, overload shrinking concurrency, malformed answers,
 * timeouts, coalescing of embedding calls, and withdrawing calls. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/upstream/upstream.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/openai/openai.h"
#include "tests/unit/fake_server.h"

static fake_server srv;
static reactor_t *r;
static http_client_t *hc;
static upstream_t *up;
static const loom_provider *def;
static void *pstate;
static http_options http_opt; /* for the next setup */

typedef struct got {
    int n;
    json_t *out;
    loom_errcode code;
    char msg[256];
    loom_usage usage;
    bool has_ra;
    uint64_t ra_ms;
} got;

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

/* A provider PLUGIN ("openai" or "anthropic") at the fake server started
 * with ARGS, limited by LIMITS, with OPT. */
static void setup(const char *plugin, const char *const *args, const rl_limits *limits,
                  const upstream_options *opt)
{
    cr_assert_eq(fake_server_start(&srv, args), 0);
    cr_assert(r = reactor_new());
    cr_assert(hc = http_client_new(r, &http_opt));
    const loom_plugin *p = strcmp(plugin, "openai") == 0 ? loom_builtin_openai_entry()
                                                         : loom_builtin_anthropic_entry();
    def = &p->providers[0];
    char url[64];
    setenv("LOOM_TEST_KEY", "sk-test-secret", 1);
    json_t *cfg = json_pack("{s:s, s:s, s:s}", "base_url", fake_server_base_url(&srv, url, sizeof url),
                            "api_key_env", "LOOM_TEST_KEY", "model", "m1");
    if (strcmp(plugin, "anthropic") == 0)
        json_object_set_new(cfg, "max_tokens", json_integer(64));
    tctx ctx = { .base.api = &t_api };
    cr_assert_eq(def->init(&ctx.base, NULL, cfg, &pstate), 0, "%s", ctx.msg);
    json_decref(cfg);
    cr_assert(up = upstream_new(r, hc, "fake", def, pstate, limits, opt));
}

static void teardown(void)
{
    upstream_free(up);
    if (def && def->fini)
        def->fini(pstate);
    http_client_free(hc);
    reactor_free(r);
    fake_server_stop(&srv);
}

static upstream_call_t *chat_key(const char *text, const char *key, got *g)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    json_t *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .params = params };
    upstream_call_t *c = upstream_call(up, &req, &(upstream_call_info){ .step_key = key }, on_done, g);
    json_decref(msgs);
    json_decref(params);
    cr_assert(c);
    return c;
}

static upstream_call_t *chat(const char *text, got *g)
{
    return chat_key(text, NULL, g);
}

static upstream_call_t *embed_key(json_t *inputs, const char *key, got *g)
{
    loom_request req = { .kind = LOOM_CALL_EMBED, .inputs = inputs };
    upstream_call_t *c = upstream_call(up, &req, &(upstream_call_info){ .step_key = key }, on_done, g);
    cr_assert(c);
    return c;
}

static upstream_call_t *embed(json_t *inputs, got *g)
{
    return embed_key(inputs, NULL, g);
}

static int count(const got *g, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += g[i].n;
    return k;
}

static void run_until_all(got *g, int n, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    while (count(g, n) < n && reactor_now_us(r) < end)
        reactor_run_once(r, 10);
    cr_assert_eq(count(g, n), n, "%d of %d calls finished", count(g, n), n);
}

/* Runs the reactor until the calls numbered in IDX (-1 ends the list) have
 * finished, failing after MS. */
static void run_until_these(const got *g, const int *idx, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    for (;;) {
        int left = 0;
        for (int i = 0; idx[i] >= 0; i++)
            left += g[idx[i]].n == 0;
        if (!left)
            return;
        cr_assert(reactor_now_us(r) < end, "%d calls still unfinished after %d ms", left, ms);
        reactor_run_once(r, 10);
    }
}

/* Runs the reactor until the limiter shows at least SENT requests sent and
 * QUEUED waiting, failing after MS. (At least: an open batch whose window
 * ends meanwhile joins the queue, which changes nothing the tests check.) */
static void run_until_sent(uint64_t sent, int64_t queued, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    upstream_stats_t st;
    for (upstream_stats(up, &st); st.requests < sent || st.limiter.queued < queued;
         upstream_stats(up, &st)) {
        cr_assert(reactor_now_us(r) < end, "%llu sent, %lld queued after %d ms",
                  (unsigned long long)st.requests, (long long)st.limiter.queued, ms);
        reactor_run_once(r, 10);
    }
}

static void free_all(got *g, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(g[i].out);
}

Test(upstream, openai_chat_answer_and_usage, .fini = teardown)
{
    setup("openai", NULL, NULL, NULL);
    got g = { 0 };
    chat("a quick brown fox", &g);
    cr_assert_eq(g.n, 0, "never called back from inside upstream_call");
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_OK, "%s", g.msg);
    cr_assert(json_is_string(g.out));
    cr_assert(strstr(json_string_value(g.out), "a quick brown fox"));
    cr_assert_gt(g.usage.input_tokens, 0);
    cr_assert_gt(g.usage.output_tokens, 0);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.requests, 1);
    cr_assert_eq(st.succeeded, 1);
    cr_assert_eq(st.limiter.in_flight, 0);
    free_all(&g, 1);
}

Test(upstream, anthropic_chat, .fini = teardown)
{
    setup("anthropic", NULL, NULL, NULL);
    got g = { 0 };
    chat("hello claude", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_OK, "%s", g.msg);
    cr_assert(strstr(json_string_value(g.out), "hello claude"));
    cr_assert_gt(g.usage.input_tokens, 0);
    cr_assert_eq(fake_server_stat(&srv, "messages"), 1);
    free_all(&g, 1);
}

Test(upstream, a_429_pauses_the_whole_provider, .fini = teardown)
{
    /* the server allows one request a second; the limiter knows nothing */
    setup("openai", (const char *const[]){ "--rpm", "60", NULL }, NULL, NULL);
    enum { N = 4 };
    got g[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        chat("x", &g[i]);
    run_until_all(g, N, 15000);
    for (int i = 0; i < N; i++)
        cr_assert_eq(g[i].code, LOOM_OK, "call %d: %s", i, g[i].msg);
    long r429 = fake_server_stat(&srv, "r429");
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_log_info("4 calls at 1 rpm/s: %ld 429s", r429);
    /* without the pause every waiting call would hammer the server; with
     * it, the first burst costs a few 429s and then calls are spaced */
    cr_assert_leq(r429, 2 * N, "%ld 429s", r429);
    cr_assert_eq(st.rate_limited, (uint64_t)r429);
    free_all(g, N);
}

Test(upstream, configured_limits_send_no_429, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--rpm", "600", NULL },
          &(rl_limits){ .rpm = 600 }, NULL);
    enum { N = 25 };
    got g[N];
    memset(g, 0, sizeof g);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        chat("x", &g[i]);
    run_until_all(g, N, 15000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert_eq(fake_server_stat(&srv, "r429"), 0);
    /* a burst of 10, then 10 per second: 25 calls need at least 1.4 s */
    cr_assert_geq(s, 1.3, "took %.2f s", s);
    free_all(g, N);
}

Test(upstream, concurrency_cap_holds, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--latency", "100", NULL },
          &(rl_limits){ .concurrency = 5 }, NULL);
    enum { N = 20 };
    got g[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        chat("x", &g[i]);
    run_until_all(g, N, 10000);
    long peak = fake_server_stat(&srv, "max_in_flight");
    cr_assert_leq(peak, 5, "peak %ld", peak);
    cr_assert_geq(peak, 4, "peak %ld", peak);
    free_all(g, N);
}

Test(upstream, quota_disables_the_provider, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "quota", NULL }, NULL, NULL);
    got g = { 0 }, h = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_QUOTA, "%s", g.msg);
    chat("y", &h);
    run_until_all(&h, 1, 5000);
    cr_assert_eq(h.code, LOOM_E_QUOTA);
    cr_assert(strstr(h.msg, "disabled until reload"), "%s", h.msg);
    cr_assert_eq(fake_server_stat(&srv, "requests"), 1, "the second call was never sent");
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert(st.disabled);
}

Test(upstream, server_errors_are_typed, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "500", NULL }, NULL, NULL);
    got g = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_UPSTREAM, "%s", g.msg);
    cr_assert_null(g.out);
    cr_assert_null(strstr(g.msg, "sk-test-secret"));
}

Test(upstream, overload_halves_concurrency, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "503", NULL },
          &(rl_limits){ .concurrency = 16 }, NULL);
    got g = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_UPSTREAM, "%s", g.msg);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.limiter.effective_concurrency, 8);
}

Test(upstream, malformed_answer_is_a_typed_error, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "malformed_json", NULL }, NULL, NULL);
    got g = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_UPSTREAM, "%s", g.msg);
}

Test(upstream, dropped_connection_is_upstream, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "drop", NULL }, NULL, NULL);
    got g = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_UPSTREAM, "%s", g.msg);
}

Test(upstream, first_byte_timeout_is_a_timeout, .fini = teardown)
{
    upstream_options o = { .timeouts = { .connect_ms = 1000, .first_byte_ms = 200, .total_ms = 5000 } };
    setup("openai", (const char *const[]){ "--latency", "100", "--fault", "slow_first_byte", NULL },
          NULL, &o);
    got g = { 0 };
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_TIMEOUT, "%s", g.msg);
    cr_assert(strstr(g.msg, "first_byte"), "%s", g.msg);
}

/* The fake server's vector for one input, fetched alone. */
static json_t *solo_vector(const char *text)
{
    json_t *in = json_pack("[s]", text);
    got g = { 0 };
    embed(in, &g);
    json_decref(in);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_OK, "%s", g.msg);
    json_t *v = json_incref(json_array_get(g.out, 0));
    json_decref(g.out);
    return v;
}

Test(upstream, embeddings_are_coalesced, .fini = teardown)
{
    upstream_options o = { .batch_max_inputs = 64, .batch_window_ms = 20 };
    setup("openai", NULL, NULL, &o);
    enum { N = 100, K = 10 };
    got g[N];
    json_t *in[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++) {
        in[i] = json_array();
        for (int k = 0; k < K; k++) {
            char s[32];
            snprintf(s, sizeof s, "input %d.%d", i, k);
            json_array_append_new(in[i], json_string(s));
        }
        embed(in[i], &g[i]);
    }
    run_until_all(g, N, 10000);
    long reqs = fake_server_stat(&srv, "embeddings");
    cr_assert_eq(reqs, (N * K + 63) / 64, "%ld requests for %d inputs", reqs, N * K);
    cr_assert_eq(fake_server_stat(&srv, "embedding_inputs"), N * K);
    json_t *want = solo_vector("input 37.4");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].code, LOOM_OK, "%s", g[i].msg);
        cr_assert_eq(json_array_size(g[i].out), K);
    }
    cr_assert(json_equal(json_array_get(g[37].out, 4), want), "each caller gets its own vectors");
    json_decref(want);
    for (int i = 0; i < N; i++)
        json_decref(in[i]);
    free_all(g, N);
}

Test(upstream, a_withdrawn_call_leaves_its_batch, .fini = teardown)
{
    upstream_options o = { .batch_max_inputs = 100, .batch_window_ms = 20 };
    setup("openai", NULL, NULL, &o);
    got g[3];
    memset(g, 0, sizeof g);
    json_t *a = json_pack("[s,s]", "a1", "a2"), *b = json_pack("[s]", "b1"),
           *c = json_pack("[s,s,s]", "c1", "c2", "c3");
    embed(a, &g[0]);
    upstream_call_t *cb = embed(b, &g[1]);
    embed(c, &g[2]);
    upstream_cancel(cb);
    run_until_these(g, (const int[]){ 0, 2, -1 }, 5000);
    /* the batch that held b1 was answered and freed: nothing is left that
     * could still call it back */
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.limiter.in_flight + st.limiter.queued, 0);
    cr_assert_eq(g[0].n, 1);
    cr_assert_eq(g[1].n, 0);
    cr_assert_eq(g[2].n, 1);
    cr_assert_eq(json_array_size(g[2].out), 3);
    cr_assert_eq(fake_server_stat(&srv, "embedding_inputs"), 5);
    json_t *want = solo_vector("c3");
    cr_assert(json_equal(json_array_get(g[2].out, 2), want));
    json_decref(want);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(g[0].out);
    json_decref(g[2].out);
}

/* The fake server's log (--log) as an array of its lines. */
static json_t *read_log(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "no log at %s", path);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "a bad log line: %s", line);
        json_array_append_new(all, j);
    }
    free(line);
    fclose(f);
    return all;
}

Test(upstream, step_keys_ride_in_a_header, .fini = teardown)
{
    char path[256];
    snprintf(path, sizeof path, "%s/loom-upstream-log-XXXXXX", P_tmpdir);
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    upstream_options o = { .batch_max_inputs = 100, .batch_window_ms = 20 };
    setup("openai", (const char *const[]){ "--log", path, NULL }, NULL, &o);
    got g[5];
    memset(g, 0, sizeof g);
    chat_key("plain", "v1/0 do.call", &g[0]);
    /* a key that would end the header and add one of its own */
    chat_key("hostile", "k\r\nX-Injected: 1", &g[1]);
    json_t *a = json_pack("[s]", "a"), *b = json_pack("[s,s]", "b1", "b2");
    embed_key(a, "e1", &g[2]);
    embed_key(b, "e,2%", &g[3]);
    chat("no key", &g[4]);
    run_until_all(g, 5, 5000);
    json_t *log = read_log(path);
    unlink(path);
    cr_assert_eq(json_array_size(log), 4, "two chats, one batch, one chat without a key");
    int seen = 0;
    size_t i;
    json_t *e;
    json_array_foreach(log, i, e) {
        const char *key = json_string_value(json_object_get(e, "key"));
        const char *echo = json_string_value(json_object_get(e, "echo"));
        const char *p = json_string_value(json_object_get(e, "path"));
        if (strcmp(p, "/v1/embeddings") == 0) {
            cr_assert_str_eq(key, "e1,e%2C2%25", "the batch lists both callers' keys, escaped");
            seen |= 1;
        } else if (strcmp(echo, "plain") == 0) {
            cr_assert_str_eq(key, "v1/0 do.call");
            seen |= 2;
        } else if (strcmp(echo, "hostile") == 0) {
            cr_assert_str_eq(key, "k%0D%0AX-Injected: 1");
            seen |= 4;
        } else {
            cr_assert_null(key, "a call without a key sends no header");
            seen |= 8;
        }
    }
    cr_assert_eq(seen, 15);
    json_decref(log);
    json_decref(a);
    json_decref(b);
    free_all(g, 5);
}

Test(upstream, a_long_list_of_step_keys_is_capped, .fini = teardown)
{
    char path[256];
    snprintf(path, sizeof path, "%s/loom-upstream-log-XXXXXX", P_tmpdir);
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    upstream_options o = { .batch_max_inputs = 256, .batch_window_ms = 20 };
    setup("openai", (const char *const[]){ "--log", path, NULL }, NULL, &o);
    enum { N = 200 };
    got g[N];
    json_t *in[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++) {
        char key[64];
        snprintf(key, sizeof key, "v1/%03d a rather long path of a step.do.call[3]", i);
        in[i] = json_pack("[s]", "x");
        embed_key(in[i], key, &g[i]);
    }
    run_until_all(g, N, 10000);
    json_t *log = read_log(path);
    unlink(path);
    cr_assert_eq(json_array_size(log), 1, "one batch");
    const char *v = json_string_value(json_object_get(json_array_get(log, 0), "key"));
    cr_assert(v);
    cr_assert_leq(strlen(v), 4096, "the header stays short enough for any server");
    /* the keys that fit, in order, then "+N" for the rest */
    int listed = 0;
    const char *p = v, *comma;
    for (; (comma = strchr(p, ',')); p = comma + 1, listed++) {
        char want[64];
        snprintf(want, sizeof want, "v1/%03d ", listed);
        cr_assert(strncmp(p, want, strlen(want)) == 0, "key %d in order: %.40s", listed, p);
    }
    cr_assert_eq(p[0], '+', "the last entry counts the keys left out: %s", p);
    cr_assert_eq(listed + atoi(p + 1), N);
    cr_assert_gt(listed, 0);
    json_decref(log);
    for (int i = 0; i < N; i++)
        json_decref(in[i]);
    free_all(g, N);
}

Test(upstream, withdrawn_calls_never_call_back, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--latency", "100", NULL },
          &(rl_limits){ .concurrency = 2 }, NULL);
    enum { N = 6 };
    got g[N];
    upstream_call_t *c[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        c[i] = chat("x", &g[i]);
    run_until_sent(2, 4, 5000); /* two on the wire, four queued */
    upstream_cancel(c[0]); /* sent */
    upstream_cancel(c[4]); /* queued */
    run_until_these(g, (const int[]){ 1, 2, 3, 5, -1 }, 5000);
    /* the limiter is empty (asserted below): no request is left that could
     * answer the two withdrawn calls */
    for (int i = 0; i < N; i++)
        cr_assert_eq(g[i].n, i == 0 || i == 4 ? 0 : 1, "call %d", i);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.limiter.in_flight, 0);
    cr_assert_eq(st.limiter.queued, 0);
    free_all(g, N);
}

Test(upstream, free_with_calls_everywhere, .fini = teardown)
{
    upstream_options o = { .batch_max_inputs = 10, .batch_window_ms = 50 };
    setup("openai", (const char *const[]){ "--latency", "200", NULL },
          &(rl_limits){ .concurrency = 1 }, &o);
    got g[3];
    memset(g, 0, sizeof g);
    chat("x", &g[0]);
    chat("y", &g[1]);
    json_t *in = json_pack("[s]", "z");
    embed(in, &g[2]);
    json_decref(in);
    run_until_sent(1, 1, 5000); /* one on the wire, one queued, one in the open batch */
    upstream_free(up);
    up = NULL;
    /* the one answer that could come is the request on the wire: once the
     * server holds no answer, it was written (or dropped); then the reactor
     * is run until it has nothing left to do */
    for (uint64_t end = reactor_now_us(r) + 5000000; fake_server_stat(&srv, "in_flight") != 0;) {
        cr_assert(reactor_now_us(r) < end, "the fake server still holds the answer after 5 s");
        reactor_run_once(r, 10);
    }
    for (int i = 0; i < 100 && reactor_run_once(r, 10) > 0; i++)
        ;
    cr_assert_eq(count(g, 3), 0);
}

Test(upstream_sync, headers_pause_an_exhausted_provider)
{
    reactor_t *rr = reactor_new();
    rl_t *rl = rl_new(rr, &(rl_limits){ 0 }); /* no limit of our own: the reset is all we know */
    loom_header h[] = { { "x-ratelimit-remaining-requests", "0" },
                        { "x-ratelimit-reset-requests", "2s" } };
    upstream_sync_headers(rl, h, 2, (int64_t)time(NULL));
    rl_stats_t st;
    rl_stats(rl, &st);
    cr_assert_gt(st.paused_until_us, reactor_now_us(rr) + 1500000);
    rl_free(rl);
    reactor_free(rr);
}

Test(upstream_sync, anthropic_reset_times)
{
    reactor_t *rr = reactor_new();
    rl_t *rl = rl_new(rr, &(rl_limits){ 0 });
    char reset[64];
    time_t at = time(NULL) + 3;
    strftime(reset, sizeof reset, "%Y-%m-%dT%H:%M:%SZ", gmtime(&at));
    loom_header h[] = { { "anthropic-ratelimit-input-tokens-remaining", "0" },
                        { "anthropic-ratelimit-input-tokens-reset", reset } };
    upstream_sync_headers(rl, h, 2, (int64_t)time(NULL));
    rl_stats_t st;
    rl_stats(rl, &st);
    cr_assert_gt(st.paused_until_us, reactor_now_us(rr) + 1500000);
    rl_free(rl);
    reactor_free(rr);
}

Test(upstream_sync, rfc3339)
{
    int64_t ms;
    cr_assert_eq(upstream_parse_rfc3339("1970-01-01T00:00:01Z", &ms), 0);
    cr_assert_eq(ms, 1000);
    cr_assert_eq(upstream_parse_rfc3339("2026-11-23T07:50:00.25+01:00", &ms), 0);
    cr_assert_eq(upstream_parse_rfc3339("2026-11-23T06:50:00.25Z", &ms), 0);
    int64_t z = ms;
    cr_assert_eq(upstream_parse_rfc3339("2026-11-23T07:50:00.25+01:00", &ms), 0);
    cr_assert_eq(ms, z);
    cr_assert_lt(upstream_parse_rfc3339("2026-11-23 07:50", &ms), 0);
    cr_assert_lt(upstream_parse_rfc3339("yesterday", &ms), 0);
    cr_assert_lt(upstream_parse_rfc3339("2026-13-01T00:00:00Z", &ms), 0);
    cr_assert_lt(upstream_parse_rfc3339("2026-01-01T00:00:00", &ms), 0);
}

/* ---- numbers at the edges: what a provider says is clamped */

static loom_provider wrapped;
static int wrapped_mode; /* 0: usage of 2^62 tokens, 1: a 429 asking for 10^15 ms */

static int huge_decode(loom_ctx *ctx, void *state, const loom_request *req,
                       const loom_http_response *resp, loom_result *out)
{
    if (wrapped_mode == 1) {
        ctx->api->retry_after(ctx, UINT64_C(1000000000000000));
        loom_error(ctx, LOOM_E_RATE_LIMITED, "slow down");
        return -1;
    }
    int rc = def->decode(ctx, state, req, resp, out);
    out->usage.input_tokens = out->usage.output_tokens = INT64_C(1) << 62;
    return rc;
}

/* The openai provider at the fake server, its decode wrapped in MODE. */
static void setup_wrapped(int mode, const upstream_options *opt)
{
    setup("openai", NULL, NULL, NULL);
    upstream_free(up);
    wrapped = *def;
    wrapped.decode = huge_decode;
    wrapped_mode = mode;
    cr_assert(up = upstream_new(r, hc, "fake", &wrapped, pstate, &(rl_limits){ .tpm = 1000000 },
                                opt));
}

Test(upstream, token_counts_of_2_62_are_clamped, .fini = teardown)
{
    setup_wrapped(0, NULL);
    enum { N = 4 };
    got g[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        chat("x", &g[i]);
    /* the first answer's usage puts the limiter years in debt, so only
     * calls granted before it returns can finish: wait for the first */
    run_until_these(g, (const int[]){ 0, -1 }, 5000);
    cr_assert_eq(g[0].code, LOOM_OK, "%s", g[0].msg);
    cr_assert_eq(g[0].usage.input_tokens, RL_MAX_TOKENS);
    cr_assert_eq(g[0].usage.output_tokens, RL_MAX_TOKENS);
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_geq(st.input_tokens, RL_MAX_TOKENS);
    cr_assert_leq(st.input_tokens, N * RL_MAX_TOKENS);
    free_all(g, N);
}

Test(upstream, a_plugin_retry_after_of_10_15_ms_is_one_day, .fini = teardown)
{
    setup_wrapped(1, &(upstream_options){ .max_rate_limit_waits = -1 });
    got g;
    memset(&g, 0, sizeof g);
    chat("x", &g);
    run_until_all(&g, 1, 5000);
    cr_assert_eq(g.code, LOOM_E_RATE_LIMITED);
    cr_assert(g.has_ra);
    cr_assert_eq(g.ra_ms, RL_MAX_WAIT_MS);
    upstream_stats_t st;
    upstream_stats(up, &st);
    uint64_t now = reactor_now_us(r);
    cr_assert_gt(st.limiter.paused_until_us, now);
    cr_assert_leq(st.limiter.paused_until_us, now + RL_MAX_WAIT_MS * REACTOR_MSEC + REACTOR_SEC);
}

Test(upstream_sync, reset_times_are_capped_at_a_day)
{
    reactor_t *rr = reactor_new();
    rl_t *rl = rl_new(rr, &(rl_limits){ 0 });
    loom_header h[] = { { "x-ratelimit-remaining-requests", "0" },
                        { "x-ratelimit-reset-requests", "1000000000000000ms" },
                        { "anthropic-ratelimit-tokens-remaining", "0" },
                        { "anthropic-ratelimit-tokens-reset", "9999-01-01T00:00:00Z" } };
    upstream_sync_headers(rl, h, 4, (int64_t)time(NULL));
    rl_stats_t st;
    rl_stats(rl, &st);
    uint64_t now = reactor_now_us(rr);
    cr_assert_gt(st.paused_until_us, now + (RL_MAX_WAIT_MS - 1000) * REACTOR_MSEC);
    cr_assert_leq(st.paused_until_us, now + RL_MAX_WAIT_MS * REACTOR_MSEC + REACTOR_SEC);
    rl_free(rl);
    reactor_free(rr);
}

Test(upstream, an_answer_past_the_response_budget_is_a_retryable_upstream_error, .fini = teardown)
{
    /* the fake server pads its answer to 20 MiB; the client holds 1 MiB */
    http_opt = (http_options){ .max_bytes_in_flight = (size_t)1 << 20 };
    setup("openai", (const char *const[]){ "--fault", "huge_body", NULL }, NULL, NULL);
    http_opt = (http_options){ 0 };
    got g;
    memset(&g, 0, sizeof g);
    chat("x", &g);
    run_until_all(&g, 1, 10000);
    cr_assert_eq(g.code, LOOM_E_UPSTREAM, "%s", g.msg);
    cr_assert(strstr(g.msg, "response_budget"), "%s", g.msg);
    cr_assert_eq(http_bytes_in_flight(hc), 0);
}

/* ---- streamed answers: a call with a token reader */

typedef struct tokens {
    char text[512];
    size_t len;
    int n;
} tokens;

static void on_token(void *ud, const char *text, size_t len)
{
    tokens *t = ud;
    cr_assert_lt(t->len + len, sizeof t->text);
    memcpy(t->text + t->len, text, len);
    t->len += len;
    t->text[t->len] = '\0';
    t->n++;
}

static upstream_call_t *chat_streamed(const char *text, tokens *t, got *g)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    json_t *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .params = params };
    upstream_call_info info = { .token = on_token, .token_ud = t };
    upstream_call_t *c = upstream_call(up, &req, &info, on_done, g);
    json_decref(msgs);
    json_decref(params);
    cr_assert(c);
    return c;
}

#define STREAM_TEXT "a streamed answer, long enough for several pieces"

/* PLUGIN's streamed call: tokens joined are the output, and the output
 * and usage are those of the same call unstreamed. */
static void streamed_same_as_whole(const char *plugin)
{
    setup(plugin, (const char *const[]){ "--stream-chunk", "9", NULL }, NULL, NULL);
    got g[2] = { 0 };
    tokens t = { .n = 0 };
    chat_streamed(STREAM_TEXT, &t, &g[0]);
    run_until_all(g, 1, 10000);
    chat(STREAM_TEXT, &g[1]);
    run_until_all(g, 2, 10000);
    cr_assert_eq(g[0].code, LOOM_OK, "%s", g[0].msg);
    cr_assert_eq(g[1].code, LOOM_OK, "%s", g[1].msg);
    cr_assert_str_eq(json_string_value(g[0].out), STREAM_TEXT);
    cr_assert_str_eq(t.text, STREAM_TEXT, "the tokens joined are the output");
    cr_assert_gt(t.n, 1, "in pieces");
    cr_assert_str_eq(json_string_value(g[1].out), STREAM_TEXT);
    cr_assert_gt(g[0].usage.input_tokens, 0);
    cr_assert_eq(g[0].usage.input_tokens, g[1].usage.input_tokens);
    cr_assert_eq(g[0].usage.output_tokens, g[1].usage.output_tokens);
    cr_assert_eq(fake_server_stat(&srv, "streams"), 1, "only the call with a reader streamed");
    upstream_stats_t st;
    upstream_stats(up, &st);
    cr_assert_eq(st.output_tokens, g[0].usage.output_tokens + g[1].usage.output_tokens);
    json_decref(g[0].out);
    json_decref(g[1].out);
}

Test(upstream, openai_streamed_call_ends_as_an_unstreamed_one, .fini = teardown)
{
    streamed_same_as_whole("openai");
}

Test(upstream, anthropic_streamed_call_ends_as_an_unstreamed_one, .fini = teardown)
{
    streamed_same_as_whole("anthropic");
}

/* PLUGIN's streamed call under FAULT fails with CODE, its message holding
 * WHAT, after the first piece of text reached the reader. */
static void stream_fails(const char *plugin, const char *fault, loom_errcode code,
                         const char *what)
{
    setup(plugin, (const char *const[]){ "--fault", fault, NULL }, NULL, NULL);
    got g = { 0 };
    tokens t = { .n = 0 };
    chat_streamed(STREAM_TEXT, &t, &g);
    run_until_all(&g, 1, 10000);
    cr_assert_eq(g.code, code, "%s", g.msg);
    cr_assert_null(g.out);
    cr_assert(strstr(g.msg, what) != NULL, "%s", g.msg);
    cr_assert_eq(t.n, 1, "the text before the failure was read");
}

Test(upstream, openai_stream_cut_before_its_end_is_upstream, .fini = teardown)
{
    stream_fails("openai", "stream_cut", LOOM_E_UPSTREAM, "before its end event");
}

Test(upstream, anthropic_stream_cut_before_its_end_is_upstream, .fini = teardown)
{
    stream_fails("anthropic", "stream_cut", LOOM_E_UPSTREAM, "before its end event");
}

Test(upstream, openai_error_mid_stream_is_classed, .fini = teardown)
{
    stream_fails("openai", "stream_error", LOOM_E_UPSTREAM, "injected error mid-stream");
}

Test(upstream, anthropic_error_event_is_classed, .fini = teardown)
{
    stream_fails("anthropic", "stream_error", LOOM_E_UPSTREAM, "Overloaded");
}

Test(upstream, a_stream_request_answered_with_an_error_status_is_decoded, .fini = teardown)
{
    setup("openai", (const char *const[]){ "--fault", "quota", NULL }, NULL, NULL);
    got g = { 0 };
    tokens t = { .n = 0 };
    chat_streamed(STREAM_TEXT, &t, &g);
    run_until_all(&g, 1, 10000);
    cr_assert_eq(g.code, LOOM_E_QUOTA, "%s", g.msg);
    cr_assert_eq(t.n, 0);
}
