/* test_engine.c -- the engine: every node kind, roots, limits, retry, timeouts,
 * fallback, cancel, vote early stop, `use`.
 *
 * Workflows are compiled from YAML texts; leaf work is done by the test
 * plugin of engine_testlib.c, whose provider counts calls in flight and
 * served, which is how concurrency bounds and early stops are checked. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(engine, .init = et_setup, .fini = et_teardown);

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

/* ---- (1) lambdas, chain, fail, gate, route, roots */

Test(engine, chain_of_lambdas_passes_prev)
{
    et_result r;
    et_run(HDR "do: { chain: [ {lambda: t.inc}, {lambda: t.inc}, {lambda: t.inc} ] }\n", "4", NULL, &r);
    cr_assert_eq(out_int(&r), 7);
    et_result_free(&r);
}

Test(engine, roots_input_vars_steps_prev)
{
    et_result r;
    et_run(HDR "input: { n: integer, who: { type: string, default: bob } }\n"
               "vars: { greet: 'hi {{ input.who }}' }\n"
               "do:\n  chain:\n"
               "    - { id: first, lambda: { fn: t.noop, input: '{{ input.n }}' } }\n"
               "    - lambda: t.inc\n"
               "    - lambda: { fn: t.echo, args: { v: '{{ vars.greet }}', s: '{{ steps.first.output }}', p: '{{ prev }}', a: '{{ steps.first.attempts }}' } }\n",
           "{\"n\": 1}", NULL, &r);
    expect_json(&r, "{\"input\":2,\"args\":{\"v\":\"hi bob\",\"s\":1,\"p\":2,\"a\":1}}");
    et_result_free(&r);
}

Test(engine, lambda_error_is_lambda_failed)
{
    et_result r;
    et_run(HDR "do: { chain: [ {lambda: t.noop}, {lambda: { fn: t.fail, args: { why: bad } } } ] }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "lambda_failed");
    cr_assert_str_eq(err_field(&r, "message"), "boom: bad");
    cr_assert_str_eq(err_field(&r, "node"), "do.chain[1]");
    cr_assert_eq(json_integer_value(json_object_get(r.error, "attempts")), 1);
    et_result_free(&r);
}

Test(engine, lambda_garbage_is_lambda_failed)
{
    et_result r;
    et_run(HDR "do: { lambda: t.garbage }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "lambda_failed");
    cr_assert_str_eq(err_field(&r, "message"), "returned no value");
    et_result_free(&r);
}

Test(engine, pool_lambda_runs)
{
    et_result r;
    et_run(HDR "do: { lambda: { fn: t.slow, args: { ms: 5 } } }\n", "\"x\"", NULL, &r);
    expect_json(&r, "\"x\"");
    et_result_free(&r);
}

Test(engine, fail_node_with_code)
{
    et_result r;
    et_run(HDR "do: { fail: { message: 'bad {{ input }}', code: quota } }\n", "3", NULL, &r);
    cr_assert_str_eq(et_code(&r), "quota");
    cr_assert_str_eq(err_field(&r, "message"), "bad 3");
    et_result_free(&r);
}

Test(engine, gate_holds_passes_input)
{
    et_result r;
    et_run(HDR "do: { gate: { check: '{{ input.ok }}' } }\n", "{\"ok\": \"yes\"}", NULL, &r);
    expect_json(&r, "{\"ok\":\"yes\"}");
    et_result_free(&r);
}

Test(engine, gate_fails_with_message)
{
    et_result r;
    et_run(HDR "do: { gate: { check: '{{ input.ok }}', fail: 'not ok: {{ input.ok }}' } }\n",
           "{\"ok\": \" Off \"}", NULL, &r);
    cr_assert_str_eq(et_code(&r), "gate");
    cr_assert_str_eq(err_field(&r, "message"), "not ok:  Off ");
    et_result_free(&r);
}

Test(engine, gate_fail_node_and_check_node)
{
    et_result r;
    et_run(HDR "do: { gate: { check: { lambda: { fn: t.noop, input: '{{ input.ok }}' } }, fail: { lambda: t.echo } } }\n",
           "{\"ok\": 0}", NULL, &r);
    expect_json(&r, "{\"input\":{\"ok\":0},\"args\":{}}");
    et_result_free(&r);
}

static const char *ROUTE = HDR
    "do:\n  route:\n    on: '{{ input.k }}'\n    normalize: [trim, lower]\n"
    "    cases:\n      a: { lambda: { fn: t.noop, input: A } }\n      b: { lambda: { fn: t.noop, input: B } }\n";

Test(engine, route_picks_case_after_normalize)
{
    et_result r;
    et_run(ROUTE, "{\"k\": \"  B \"}", NULL, &r);
    expect_json(&r, "\"B\"");
    et_result_free(&r);
}

Test(engine, route_no_case_no_default)
{
    et_result r;
    et_run(ROUTE, "{\"k\": \"c\"}", NULL, &r);
    cr_assert_str_eq(et_code(&r), "no_route");
    et_result_free(&r);
}

Test(engine, route_default_and_on_node)
{
    et_result r;
    et_run(HDR "do:\n  route:\n    on: { id: lab, lambda: { fn: t.noop, input: zz } }\n"
               "    cases: { a: { lambda: t.noop } }\n"
               "    default: { lambda: { fn: t.echo, args: { l: '{{ steps.lab.output }}' } } }\n",
           "1", NULL, &r);
    expect_json(&r, "{\"input\":1,\"args\":{\"l\":\"zz\"}}");
    et_result_free(&r);
}

Test(engine, output_reshapes_result)
{
    et_result r;
    et_run(HDR "do: { lambda: t.inc, output: { v: '{{ output }}', was: '{{ prev }}' } }\n", "1", NULL, &r);
    expect_json(&r, "{\"v\":2,\"was\":1}");
    et_result_free(&r);
}

Test(engine, invalid_input_missing_and_wrong_type)
{
    et_result r;
    et_run(HDR "input: { n: integer }\ndo: { lambda: t.noop }\n", "{}", NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_input");
    cr_assert(strstr(err_field(&r, "message"), "'n' is required"));
    et_result_free(&r);
    et_run(HDR "input: { n: integer }\ndo: { lambda: t.noop }\n", "{\"n\": \"x\"}", NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_input");
    et_result_free(&r);
}

/* ---- (2) parallel, map, limits */

Test(engine, parallel_object_in_branch_order)
{
    et_result r;
    et_run(HDR "do: { parallel: { x: { lambda: t.inc }, y: { call: 'p {{ input }}' } } }\n", "1", NULL, &r);
    expect_json(&r, "{\"x\":2,\"y\":\"p 1\"}");
    et_result_free(&r);
}

Test(engine, parallel_fail_cancels_siblings)
{
    ET.prov.latency_ms = 200;
    et_result r;
    et_run(HDR "do: { parallel: { a: { call: x }, b: { call: y }, c: { lambda: t.fail } } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "lambda_failed");
    cr_assert_eq(ET.prov.cancelled, 2);
    cr_assert_eq(ET.prov.served, 0);
    cr_assert_eq(ET.prov.inflight, 0);
    et_result_free(&r);
}

Test(engine, parallel_partial_keeps_error_slot)
{
    et_result r;
    et_run(HDR "do: { parallel: { branches: { a: { lambda: t.inc }, b: { lambda: t.garbage } }, on_error: partial } }\n",
           "1", NULL, &r);
    expect_json(&r, "{\"a\":2,\"b\":{\"error\":{\"code\":\"lambda_failed\",\"message\":\"returned no value\"}}}");
    et_result_free(&r);
}

Test(engine, map_keeps_order_with_reversed_latency)
{
    ET.prov.latency_ms = 50;
    ET.prov.latency_step = -10; /* later items answer first */
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', do: { call: 'n{{ item }}' } } }\n", "[1,2,3,4]", NULL, &r);
    expect_json(&r, "[\"n1\",\"n2\",\"n3\",\"n4\"]");
    et_result_free(&r);
}

Test(engine, map_max_concurrency_bound)
{
    ET.prov.latency_ms = 5;
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 3, do: { call: x } } }\n",
           "[1,2,3,4,5,6,7,8,9,10]", NULL, &r);
    cr_assert(r.output);
    cr_assert_eq(ET.prov.max_inflight, 3);
    cr_assert_eq(ET.prov.served, 10);
    et_result_free(&r);
}

Test(engine, map_times_parallel_bound)
{
    ET.prov.latency_ms = 5;
    char in[512] = "[0";
    for (int i = 1; i < 40; i++)
        sprintf(in + strlen(in), ",%d", i);
    strcat(in, "]");
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 10, do: { parallel: { a: { call: a }, b: { call: b }, c: { call: c } } } } }\n",
           in, NULL, &r);
    cr_assert(r.output);
    cr_assert_eq(ET.prov.max_inflight, 30);
    cr_assert_eq(ET.prov.served, 120);
    et_result_free(&r);
}

Test(engine, job_max_in_flight_caps_leaves)
{
    ET.prov.latency_ms = 2;
    engine_job_options o = { .max_in_flight = 4 };
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 50, do: { call: x } } }\n",
           "[1,2,3,4,5,6,7,8,9,10,11,12]", &o, &r);
    cr_assert(r.output);
    cr_assert_eq(ET.prov.max_inflight, 4);
    et_result_free(&r);
}

Test(engine, map_partial_and_index_root)
{
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', as: x, index_as: i, on_error: partial,\n"
               "  do: { route: { on: '{{ x }}', cases: { bad: { lambda: t.garbage } },\n"
               "        default: { lambda: { fn: t.noop, input: '{{ i }}:{{ x }}' } } } } } }\n",
           "[\"a\",\"bad\",\"c\"]", NULL, &r);
    expect_json(&r, "[\"0:a\",{\"error\":{\"code\":\"lambda_failed\",\"message\":\"returned no value\"}},\"2:c\"]");
    et_result_free(&r);
}

Test(engine, map_tolerate)
{
    const char *wf = HDR "do: { map: { over: '{{ input }}', on_error: { tolerate: '34%' },\n"
                         "  do: { gate: { check: '{{ item }}' } } } }\n";
    et_result r;
    et_run(wf, "[1,0,1]", NULL, &r); /* 1 of 3 fails: tolerated */
    cr_assert(r.output);
    et_result_free(&r);
    et_run(wf, "[1,0,0]", NULL, &r); /* 2 of 3: too many */
    cr_assert_str_eq(et_code(&r), "failed");
    et_result_free(&r);
}

Test(engine, map_fail_mode_fails_on_first_error)
{
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', do: { gate: { check: '{{ item }}' } } } }\n", "[1,0,1]", NULL, &r);
    cr_assert_str_eq(et_code(&r), "gate");
    et_result_free(&r);
}

Test(engine, map_empty_is_empty_array)
{
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', do: { lambda: t.noop } } }\n", "[]", NULL, &r);
    expect_json(&r, "[]");
    et_result_free(&r);
}

/* ---- (3) provider calls */

Test(engine, call_builds_request)
{
    et_result r;
    et_run(HDR "do: { call: { system: 'be {{ input.m }}', prompt: 'say {{ input.w }}', temperature: 0.5 } }\n",
           "{\"m\":\"kind\",\"w\":\"hi\"}", NULL, &r);
    expect_json(&r, "\"say hi\"");
    json_t *msgs = json_object_get(ET.prov.last_request, "messages");
    cr_assert_eq(json_array_size(msgs), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "be kind");
    cr_assert(json_object_get(json_object_get(ET.prov.last_request, "params"), "temperature"));
    et_result_free(&r);
}

Test(engine, call_json_parses_or_invalid_output)
{
    static const char *const script[] = { "{\"a\": 1}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do: { call: { prompt: x, json: true } }\n", "1", NULL, &r);
    expect_json(&r, "{\"a\":1}");
    et_result_free(&r);
    static const char *const bad[] = { "not json", NULL };
    ET.prov.script = bad;
    et_run(HDR "do: { call: { prompt: x, json: true } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_output");
    et_result_free(&r);
}

Test(engine, embed_single_string)
{
    et_result r;
    et_run(HDR "do: { embed: '{{ input }}' }\n", "\"abc\"", NULL, &r);
    expect_json(&r, "[0.0, 1.0]");
    et_result_free(&r);
}

Test(engine, http_provider_refused)
{
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "h", "thttp", NULL, err, sizeof err), -1);
    cr_assert_str_eq(err, "provider h needs HTTP, not available yet");
    json_t *cfg = json_pack("{s:i}", "nope", 1);
    cr_assert_eq(engine_add_provider(ET.eng, "p2", "tprov", cfg, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown option 'nope'"));
    json_decref(cfg);
}

/* ---- (4) retry, timeouts, fallback, cancel */

Test(engine, retry_until_success)
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

Test(engine, retry_exhausted_reports_attempts)
{
    ET.prov.fail_first = 100;
    ET.prov.fail_code = LOOM_E_RATE_LIMITED;
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 4, initial_delay: 1ms } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "rate_limited");
    cr_assert_eq(json_integer_value(json_object_get(r.error, "attempts")), 4);
    cr_assert_eq(ET.prov.calls, 4);
    et_result_free(&r);
}

Test(engine, retry_skips_classes_not_listed)
{
    ET.prov.fail_first = 100;
    ET.prov.fail_code = LOOM_E_INVALID_REQUEST;
    et_result r;
    et_run(HDR "do: { call: x, retry: { max_attempts: 4, initial_delay: 1ms } }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_request");
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r);
}

Test(engine, retry_after_wins_over_backoff)
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
Test(engine, retry_backoff_jitter_bounds)
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

Test(engine, backoff_is_deterministic_and_capped)
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

Test(engine, composite_retry_reruns_the_chain)
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

Test(engine, engine_free_cancels_live_jobs)
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

Test(engine, trace_retry_and_provider)
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

Test(engine, cancel_before_start)
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

Test(engine, retried_leaf_reevaluates_input_override)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_TIMEOUT;
    et_result r;
    et_run(HDR "do: { call: { prompt: 'p {{ prev }}', input: 'o{{ prev }}' }, retry: { max_attempts: 2, initial_delay: 1ms } }\n",
           "1", NULL, &r);
    expect_json(&r, "\"p o1\"");
    et_result_free(&r);
}

Test(engine, leaf_timeout_per_attempt)
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

Test(engine, composite_timeout)
{
    ET.prov.latency_ms = 40;
    et_result r;
    et_run(HDR "do: { chain: [ {call: a}, {call: b}, {call: c}, {call: d} ], timeout: 100ms }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_str_eq(err_field(&r, "node"), "do");
    cr_assert_eq(ET.prov.inflight, 0);
    et_result_free(&r);
}

Test(engine, job_timeout)
{
    ET.prov.latency_ms = 2000;
    et_result r;
    et_run(HDR "timeout: 60ms\ndo: { call: x }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_lt(r.elapsed_us, 1500000u);
    et_result_free(&r);
}

Test(engine, fallback_sees_error)
{
    et_result r;
    et_run(HDR "do: { lambda: t.garbage, fallback: { lambda: { fn: t.echo, args: { c: '{{ error.code }}', m: '{{ error.message }}' } } } }\n",
           "5", NULL, &r);
    expect_json(&r, "{\"input\":5,\"args\":{\"c\":\"lambda_failed\",\"m\":\"returned no value\"}}");
    et_result_free(&r);
}

static void cancel_cb(reactor_t *rr, reactor_timer_t *t, void *ud) { engine_cancel(ud); }

Test(engine, cancel_reaches_everything)
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

Test(engine, vote_majority_stops_early)
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

Test(engine, vote_unanimous_fails_on_second_answer)
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

Test(engine, vote_at_least_stops_at_k)
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

Test(engine, vote_at_least_fails_when_unreachable)
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

Test(engine, vote_plurality_and_key)
{
    static const char *const script[] = { "{\"v\":\"x\"}", "{\"v\":\"y\"}", "{\"v\":\"y\"}", "{\"v\":\"x\"}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do: { vote: { n: 4, strategy: plurality, key: '{{ output.v }}', do: { call: { prompt: q, json: true } } } }\n",
           "1", NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "winner")), "x"); /* tie: first seen */
    et_result_free(&r);
}

Test(engine, vote_judge_sees_candidates)
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

Test(engine, use_runs_other_workflow)
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

Test(engine, trace_events)
{
    int n = 0;
    engine_job_options o = { .trace = count_trace, .trace_ud = &n };
    et_result r;
    et_run(HDR "do: { chain: [ {lambda: t.noop}, {lambda: t.noop} ] }\n", "1", &o, &r);
    cr_assert_eq(n, 6); /* start + finish for the chain and each step */
    et_result_free(&r);
}

Test(engine, long_chain_of_inline_lambdas, .timeout = 60)
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
