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
#include "daemon/config_file.h"
#include "daemon/providers.h"
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

/* Runs lambda FN with args {kind: KIND} and expects CODE with WHAT in the message. */
static void expect_bad(const char *fn, const char *kind, const char *code, const char *what)
{
    char yaml[256];
    et_result r;
    snprintf(yaml, sizeof yaml, HDR "do: { lambda: { fn: %s, args: { kind: %s } } }\n", fn, kind);
    et_run(yaml, "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), code, "%s %s", fn, kind);
    cr_assert(strstr(err_field(&r, "message"), what), "%s %s: %s", fn, kind,
              err_field(&r, "message"));
    et_result_free(&r);
}

Test(engine, bad_lambda_output_is_invalid_output)
{
    const char *fns[] = { "t.bad", "t.bad_inline" };
    for (int i = 0; i < 2; i++) {
        expect_bad(fns[i], "utf8", "invalid_output", "at $.a[1]: a string that is not valid UTF-8");
        expect_bad(fns[i], "key", "invalid_output", "a key that is not valid UTF-8");
        expect_bad(fns[i], "deep", "invalid_output", "nested deeper than");
        expect_bad(fns[i], "huge", "invalid_output", "more than 64 MiB");
        expect_bad(fns[i], "nan", "lambda_failed", "returned no value");
        expect_bad(fns[i], "errbytes", "lambda_failed", "bad ? byte");
    }
    et_result r;
    et_run(HDR "do: { lambda: { fn: t.bad, args: { kind: bigint } } }\n", "1", NULL, &r);
    cr_assert_eq(out_int(&r), (json_int_t)1 << 60);
    et_result_free(&r);
}

Test(engine, bad_provider_output_is_invalid_output)
{
    const char *kinds[] = { "utf8", "nan", "deep" };
    const char *what[] = { "not valid UTF-8", "no value", "nested deeper" };
    for (int i = 0; i < 3; i++) {
        ET.prov.bad_kind = kinds[i];
        et_result r;
        et_run(HDR "do: { call: hi }\n", NULL, NULL, &r);
        cr_assert_str_eq(et_code(&r), "invalid_output", "%s", kinds[i]);
        cr_assert(strstr(err_field(&r, "message"), what[i]), "%s", err_field(&r, "message"));
        cr_assert(strstr(err_field(&r, "message"), "provider 'default'"));
        et_result_free(&r);
    }
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
    /* each sibling call was withdrawn: from the provider's queue, or from
     * the provider itself through its cancel hook */
    cr_assert_eq(ET.prov.cancelled, ET.prov.calls);
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

Test(engine, map_items_see_their_own_steps)
{
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', do: { chain: [ { id: d, lambda: t.inc }, { lambda: t.inc },\n"
               "  { lambda: { fn: t.noop, input: '{{ steps.d.output }}/{{ prev }}/{{ item }}' } } ] } } }\n",
           "[1,10,100]", NULL, &r);
    expect_json(&r, "[\"2/3/1\",\"11/12/10\",\"101/102/100\"]");
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

Test(engine, http_provider_concurrency_must_fit_the_open_file_limit)
{
    char err[512];
    config_provider h = { .name = "h", .plugin = "thttp" };
    cr_assert_eq(providers_add(ET.providers, ET.eng, &h, err, sizeof err), 0, "%s", err);
    config_provider big = { .name = "h2", .plugin = "thttp",
                            .limits = { .concurrency = 100000000 } };
    cr_assert_eq(providers_add(ET.providers, ET.eng, &big, err, sizeof err), -1);
    cr_assert(strstr(err, "open-file limit"), "%s", err);
    cr_assert_eq(providers_add(ET.providers, ET.eng, &h, err, sizeof err), -1);
    cr_assert_str_eq(err, "provider 'h' is defined twice");
    /* the engine alone cannot reach an HTTP provider: it needs an upstream */
    cr_assert_eq(engine_add_provider(ET.eng, "h3", "thttp", NULL, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "needs an upstream"), "%s", err);
    json_t *cfg = json_pack("{s:i}", "nope", 1);
    cr_assert_eq(engine_add_provider(ET.eng, "p2", "tprov", cfg, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown option 'nope'"));
    json_decref(cfg);
}


Test(engine, config_entries_of_invoke_providers_need_no_http)
{
    char err[512];
    json_t *opts = json_pack("{}");
    config_provider p = { .name = "p2", .plugin = "tprov", .options = opts };
    cr_assert_eq(providers_add(ET.providers, ET.eng, &p, err, sizeof err), 0, "%s", err);
    config_provider none = { .name = "p3", .plugin = "nope" };
    cr_assert_eq(providers_add(ET.providers, ET.eng, &none, err, sizeof err), -1);
    cr_assert_str_eq(err, "no provider plugin 'nope'");
    json_t *stats = engine_provider_stats(ET.eng);
    cr_assert(json_object_get(stats, "p2"));
    cr_assert_null(json_object_get(stats, "p3"));
    json_decref(stats);
    json_decref(opts);
}
