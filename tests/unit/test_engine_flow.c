/* test_engine_flow.c -- the engine over time: retry and back-off, timeouts
 * (leaf, composite, job), fallback, cancel, vote early stop, `use`, tracing
 * and the cost per node of a long chain.
 *
 * Timing checks use lower bounds computed from the same seeded PRNG the job
 * uses; upper bounds are generous and only guard against hangs. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(engine_flow, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"

static json_int_t out_int(const et_result *r) { return json_integer_value(r->output); }

static void expect_json(const et_result *r, const char *want)
{
    cr_assert(r->output, "job failed: %s", r->error ? json_dumps(r->error, JSON_COMPACT) : "?");
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    cr_assert(w, "bad expectation");
    char *got = json_dumps(r->output, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    char *exp = json_dumps(w, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    cr_assert_str_eq(got, exp);
    free(got);
    free(exp);
    json_decref(w);
}

static const char *err_field(const et_result *r, const char *k)
{
    return r->error ? json_string_value(json_object_get(r->error, k)) : "";
}

/* ---- (4) retry, timeouts, fallback, cancel */

Test(engine_flow, retry_until_success)
{
    ET.prov.fail_first = 2;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    engine_job_options o = { .seed = 42 };
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 3, initial_delay: 20ms } }\n", "1", &o, &r);
    expect_json(&r, "\"x\"");
    cr_assert_eq(ET.prov.calls, 3);
    cr_assert_lt(r.elapsed_us, 2000000u); /* jittered delays at most 20 + 40 ms */
    et_result_free(&r);
}

/* A rate-limited call is first sat out by the provider's upstream (the
 * call queues again behind the pause, max_rate_limit_waits times: 10 by
 * default, upstream.h), then failed to the engine, which retries it: each
 * of the 4 attempts reaches the provider 1 + 10 times. */
Test(engine_flow, retry_exhausted_reports_attempts)
{
    ET.prov.fail_first = 100;
    ET.prov.fail_code = LOOM_E_RATE_LIMITED;
    ET.prov.retry_after_ms = 1;
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 4, initial_delay: 1ms } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "rate_limited");
    cr_assert_eq(json_integer_value(json_object_get(r.error, "attempts")), 4);
    cr_assert_eq(ET.prov.calls, 4 * (1 + 10));
    et_result_free(&r);
}

Test(engine_flow, retry_skips_classes_not_listed)
{
    ET.prov.fail_first = 100;
    ET.prov.fail_code = LOOM_E_INVALID_REQUEST;
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 4, initial_delay: 1ms } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_request");
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r);
}

Test(engine_flow, retry_after_wins_over_backoff)
{
    ET.prov.fail_first = 2;
    ET.prov.fail_code = LOOM_E_RATE_LIMITED;
    ET.prov.retry_after_ms = 60;
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 3, initial_delay: 1ms, max_delay: 1ms } }\n", "1", NULL, &r);
    expect_json(&r, "\"x\"");
    cr_assert_geq(r.elapsed_us, 120000u); /* two waits of 60 ms */
    et_result_free(&r);
}

/* Full jitter with a seeded PRNG: the waits are exactly what
 * engine_backoff_ms draws from the same seed, so the job takes at least
 * their sum; each is within [0, computed delay]. */
Test(engine_flow, retry_backoff_jitter_bounds)
{
    ET.prov.fail_first = 3;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    dsl_retry rt = { 4, 40, 2.0, 100, 0 };
    uint64_t rng = 7, lower = 0;
    uint64_t caps[3] = { 40, 80, 100 };
    for (int i = 1; i <= 3; i++) {
        uint64_t d = engine_backoff_ms(&rt, i, &rng);
        cr_assert_leq(d, caps[i - 1]);
        lower += d;
    }
    engine_job_options o = { .seed = 7 };
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 4, initial_delay: 40ms, multiplier: 2, max_delay: 100ms } }\n",
           "1", &o, &r);
    expect_json(&r, "\"x\"");
    cr_assert_geq(r.elapsed_us, lower * 1000u);
    cr_assert_lt(r.elapsed_us, 220000u + 2000000u); /* hang guard only */
    et_result_free(&r);
}

Test(engine_flow, backoff_is_deterministic_and_capped)
{
    dsl_retry rt = { 10, 500, 2.0, 30000, 0 };
    uint64_t a = 99, b = 99;
    for (int i = 1; i < 10; i++) {
        uint64_t x = engine_backoff_ms(&rt, i, &a);
        cr_assert_eq(x, engine_backoff_ms(&rt, i, &b));
        uint64_t cap = 500u << (i - 1);
        cr_assert_leq(x, cap < 30000 ? cap : 30000);
    }
}

Test(engine_flow, composite_retry_reruns_the_chain)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    et_result r;
    et_run(HDR "do: { chain: [ {lambda: t.inc}, {call: '{{ prev }}'} ], retry: { max_attempts: 2, initial_delay: 1ms } }\n",
           "1", NULL, &r);
    expect_json(&r, "\"2\"");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r);
}

Test(engine_flow, engine_free_cancels_live_jobs)
{
    ET.prov.latency_ms = 5000;
    dsl_graph *g = et_compile(HDR "do: { parallel: { a: { call: x }, b: { lambda: { fn: t.slow, args: { ms: 20 } } } } }\n");
    et_result r;
    memset(&r, 0, sizeof r);
    cr_assert(engine_submit(ET.eng, g, NULL, NULL, et_done, &r));
    dsl_graph_unref(g);
    for (int i = 0; i < 3; i++)
        reactor_run_once(ET.r, 5);
    engine_free(ET.eng);
    ET.eng = NULL;
    cr_assert(r.done);
    cr_assert_str_eq(et_code(&r), "cancelled");
    cr_assert_eq(ET.prov.inflight, 0);
    et_result_free(&r);
}

typedef struct tlog {
    int n, retries, errors;
    char provider[32];
} tlog;

static void log_trace(void *ud, const engine_trace *t)
{
    tlog *l = ud;
    l->n++;
    if (t->event == ENGINE_TRACE_RETRY)
        l->retries++;
    if (t->event == ENGINE_TRACE_ERROR)
        l->errors++;
    if (t->provider)
        snprintf(l->provider, sizeof l->provider, "%s", t->provider);
}

Test(engine_flow, trace_retry_and_provider)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    tlog l = { 0 };
    engine_job_options o = { .trace = log_trace, .trace_ud = &l };
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 2, initial_delay: 1ms } }\n", "1", &o, &r);
    cr_assert(r.output);
    cr_assert_eq(l.retries, 1);
    cr_assert_eq(l.errors, 1);
    cr_assert_str_eq(l.provider, "default");
    et_result_free(&r);
}

Test(engine_flow, cancel_before_start)
{
    dsl_graph *g = et_compile(HDR "do: { lambda: t.noop }\n");
    et_result r;
    memset(&r, 0, sizeof r);
    engine_job_t *job = engine_submit(ET.eng, g, NULL, NULL, et_done, &r);
    dsl_graph_unref(g);
    engine_cancel(job);
    cr_assert(r.done);
    cr_assert_str_eq(et_code(&r), "cancelled");
    et_result_free(&r);
}

Test(engine_flow, retried_leaf_reevaluates_input_override)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_TIMEOUT;
    et_result r;
    et_run(HDR "do: { call: { prompt: 'p {{ prev }}', input: 'o{{ prev }}' }, retry: { max_attempts: 2, initial_delay: 1ms } }\n",
           "1", NULL, &r);
    expect_json(&r, "\"p o1\"");
    et_result_free(&r);
}

Test(engine_flow, leaf_timeout_per_attempt)
{
    ET.prov.latency_ms = 2000;
    et_result r;
    et_run(HDR "do: { call: x, timeout: 50ms }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_geq(r.elapsed_us, 50000u);
    cr_assert_lt(r.elapsed_us, 1500000u);
    cr_assert_eq(ET.prov.cancelled, 1);
    et_result_free(&r);
}

Test(engine_flow, composite_timeout)
{
    ET.prov.latency_ms = 40;
    et_result r;
    et_run(HDR "do: { chain: [ {call: a}, {call: b}, {call: c}, {call: d} ], timeout: 100ms }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_str_eq(err_field(&r, "node"), "do");
    cr_assert_eq(ET.prov.inflight, 0);
    et_result_free(&r);
}

Test(engine_flow, job_timeout)
{
    ET.prov.latency_ms = 2000;
    et_result r;
    et_run(HDR "timeout: 60ms\ndo: { call: x }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_lt(r.elapsed_us, 1500000u);
    et_result_free(&r);
}

Test(engine_flow, fallback_sees_error)
{
    et_result r;
    et_run(HDR "do: { lambda: t.garbage, fallback: { lambda: { fn: t.echo, args: { c: '{{ error.code }}', m: '{{ error.message }}' } } } }\n",
           "5", NULL, &r);
    expect_json(&r, "{\"input\":5,\"args\":{\"c\":\"lambda_failed\",\"m\":\"returned no value\"}}");
    et_result_free(&r);
}

static void cancel_cb(reactor_t *rr, reactor_timer_t *t, void *ud) { engine_cancel(ud); }

Test(engine_flow, cancel_reaches_everything)
{
    ET.prov.latency_ms = 5000;
    dsl_graph *g = et_compile(HDR "do: { parallel: { a: { map: { over: '{{ input }}', do: { call: x } } },\n"
                                  "  b: { lambda: { fn: t.slow, args: { ms: 30 } } }, c: { call: y, retry: 3 } } }\n");
    json_t *in = json_loads("[1,2,3,4]", 0, NULL);
    et_result r;
    memset(&r, 0, sizeof r);
    engine_job_t *job = engine_submit(ET.eng, g, in, NULL, et_done, &r);
    reactor_timer_add(ET.r, 20 * REACTOR_MSEC, cancel_cb, job);
    et_wait(&r);
    cr_assert_str_eq(et_code(&r), "cancelled");
    cr_assert_eq(ET.prov.inflight, 0);
    cr_assert_eq(ET.prov.cancelled, 5);
    cr_assert_eq(engine_job_count(ET.eng), 0);
    json_decref(in);
    dsl_graph_unref(g);
    et_result_free(&r);
}

/* ---- (5) vote */

Test(engine_flow, vote_majority_stops_early)
{
    static const char *const script[] = { "A", "a ", "A", "B", "B", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 10;
    ET.prov.latency_step = 10;
    et_result r;
    et_run(HDR "do: { vote: { n: 5, normalize: [trim, lower], do: { call: q } } }\n", "1", NULL, &r);
    expect_json(&r, "{\"winner\":\"a\",\"votes\":3,\"tally\":{\"a\":3},\"agreement\":1.0}");
    cr_assert_eq(ET.prov.served, 3);
    cr_assert_eq(ET.prov.cancelled, 2);
    et_result_free(&r);
}

Test(engine_flow, vote_unanimous_fails_on_second_answer)
{
    static const char *const script[] = { "A", "B", "A", "A", "A", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 10;
    ET.prov.latency_step = 10;
    et_result r;
    et_run(HDR "do: { vote: { n: 5, strategy: unanimous, do: { call: q } } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "failed");
    cr_assert_str_eq(err_field(&r, "message"), "no unanimous answer");
    cr_assert_eq(ET.prov.served, 2);
    et_result_free(&r);
}

Test(engine_flow, vote_at_least_stops_at_k)
{
    static const char *const script[] = { "A", "B", "A", "C", "C", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 10;
    ET.prov.latency_step = 10;
    et_result r;
    et_run(HDR "do: { vote: { n: 5, strategy: { at_least: 2 }, do: { call: q } } }\n", "1", NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "winner")), "A");
    cr_assert_eq(ET.prov.served, 3);
    et_result_free(&r);
}

Test(engine_flow, vote_at_least_fails_when_unreachable)
{
    static const char *const script[] = { "A", "B", "C", "D", "A", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 10;
    ET.prov.latency_step = 10;
    et_result r;
    et_run(HDR "do: { vote: { n: 5, strategy: { at_least: 3 }, do: { call: q } } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "failed");
    cr_assert_eq(ET.prov.served, 4); /* after A,B,C,D: max 1 + 1 left < 3 */
    et_result_free(&r);
}

Test(engine_flow, vote_plurality_and_key)
{
    static const char *const script[] = { "{\"v\":\"x\"}", "{\"v\":\"y\"}", "{\"v\":\"y\"}", "{\"v\":\"x\"}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do: { vote: { n: 4, strategy: plurality, key: '{{ output.v }}', do: { call: { prompt: q, json: true } } } }\n",
           "1", NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "winner")), "x"); /* tie: first seen */
    et_result_free(&r);
}

Test(engine_flow, vote_judge_sees_candidates)
{
    static const char *const script[] = { "A", "B", "A", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do: { vote: { n: 3, strategy: { judge: { lambda: { fn: t.noop, input: '{{ candidates[1] }}' } } }, do: { call: q } } }\n",
           "1", NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "winner")), "B");
    et_result_free(&r);
}

/* ---- (6) use */

static dsl_graph *lookup_sub(void *ud, const char *name)
{
    return strcmp(name, "sub") == 0 ? ud : NULL;
}

Test(engine_flow, use_runs_other_workflow)
{
    dsl_graph *sub = et_compile("loom: 1\nname: sub\ninput: { n: integer }\ndo: { lambda: { fn: t.inc, input: '{{ input.n }}' } }\n");
    engine_set_workflow_lookup(ET.eng, lookup_sub, sub);
    et_result r;
    dsl_diags d;
    dsl_diags_init(&d, "t.yaml");
    const char *text = HDR "do: { use: { workflow: sub, input: { n: '{{ input }}' } } }\n";
    const char *const wfs[] = { "sub", NULL };
    dsl_registry reg = { .workflows = wfs };
    dsl_options opt = { .registry = &reg };
    dsl_graph *g = dsl_compile("t.yaml", text, strlen(text), &opt, &d);
    dsl_diags_free(&d);
    cr_assert(g);
    memset(&r, 0, sizeof r);
    json_t *in = json_integer(41);
    engine_submit(ET.eng, g, in, NULL, et_done, &r);
    et_wait(&r);
    cr_assert_eq(out_int(&r), 42);
    json_decref(in);
    dsl_graph_unref(g);
    dsl_graph_unref(sub);
    et_result_free(&r);
}

/* ---- tracing and speed */

static void count_trace(void *ud, const engine_trace *t) { (*(int *)ud)++; }

Test(engine_flow, trace_events)
{
    int n = 0;
    engine_job_options o = { .trace = count_trace, .trace_ud = &n };
    et_result r;
    et_run(HDR "do: { chain: [ {lambda: t.noop}, {lambda: t.noop} ] }\n", "1", &o, &r);
    cr_assert_eq(n, 6); /* start + finish for the chain and each step */
    et_result_free(&r);
}

Test(engine_flow, long_chain_of_inline_lambdas, .timeout = 60)
{
    /* LOOM_CHAIN_N=100000 for the full-size measurement (an -O2 build) */
    const char *env = getenv("LOOM_CHAIN_N");
    size_t n = env ? (size_t)strtoul(env, NULL, 10) : 20000;
    size_t cap = 64 + n * 20;
    char *y = malloc(cap);
    strcpy(y, HDR "do:\n  chain:\n");
    size_t len = strlen(y);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(y + len, "    - lambda: t.inc\n");
    et_result r;
    et_run(y, "0", NULL, &r);
    cr_assert_eq(out_int(&r), (json_int_t)n);
    fprintf(stderr, "chain of %zu inline lambdas: %.3f us/node (incl. start pass)\n", n,
            (double)r.elapsed_us / (double)n);
    et_result_free(&r);
    free(y);
}
