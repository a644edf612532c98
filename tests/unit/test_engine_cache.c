/* test_engine_cache.c -- `cache: true` on call, embed and lambda nodes.
 *
 * The cache lives in the engine and outlives jobs, so each test runs the
 * same workflow as several jobs on one engine and counts what the test
 * provider and the pool lambdas really did. The cache's own structure
 * (keys, LRU order, references) is checked directly as well. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_cache.h"
#include "daemon/engine/engine_internal.h"
#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(engine_cache, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    cr_assert(s);
    return s;
}

static void expect_output(const et_result *r, const char *want)
{
    cr_assert(r->output, "job failed: %s", r->error ? dump(r->error) : "?");
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    cr_assert(w, "bad expectation");
    char *got = dump(r->output), *exp = dump(w);
    cr_assert_str_eq(got, exp);
    free(got);
    free(exp);
    json_decref(w);
}

static size_t cache_count(void) { return engine_cache_count(ET.eng->cache); }

/* Counts cached FINISH events and START events. */
typedef struct hitlog {
    int hits, starts;
    int hit_attempt;
} hitlog;

static void log_trace(void *ud, const engine_trace *t)
{
    hitlog *l = ud;
    if (t->event == ENGINE_TRACE_START)
        l->starts++;
    if (t->event == ENGINE_TRACE_FINISH && t->cached) {
        l->hits++;
        l->hit_attempt = t->attempt;
    }
}

/* Replaces the test world's engine with one whose cache holds N entries. */
static void engine_with_bound(size_t n)
{
    engine_free(ET.eng);
    engine_options eo = { .cache_entries = n };
    ET.eng = engine_new(ET.r, ET.pool, ET.plugins, &eo);
    cr_assert(ET.eng);
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "default", "tprov", NULL, NULL, NULL, err, sizeof err), 0, "%s",
                 err);
}

#define CACHED_CALL HDR "do: { call: 'say {{ input }}', cache: true }\n"

Test(engine_cache, call_twice_calls_the_provider_once)
{
    et_result r1, r2;
    hitlog l = { 0 };
    engine_job_options o = { .trace = log_trace, .trace_ud = &l };
    et_run(CACHED_CALL, "\"hi\"", &o, &r1);
    expect_output(&r1, "\"say hi\"");
    cr_assert_eq(l.hits, 0);
    et_run(CACHED_CALL, "\"hi\"", &o, &r2);
    expect_output(&r2, "\"say hi\"");
    cr_assert(json_equal(r1.output, r2.output));
    cr_assert_eq(ET.prov.calls, 1, "the provider was called %d times", ET.prov.calls);
    cr_assert_eq(l.hits, 1, "the trace shows the hit");
    cr_assert_eq(l.hit_attempt, 1);
    cr_assert_eq(cache_count(), 1);
    et_result_free(&r1);
    et_result_free(&r2);
}

Test(engine_cache, hit_counts_as_one_attempt_and_still_reshapes)
{
    const char *y = HDR "do:\n  chain:\n"
                        "    - { id: c, call: 'q {{ input }}', cache: true, output: '<{{ output }}>' }\n"
                        "    - lambda: { fn: t.echo, args: { a: '{{ steps.c.attempts }}' } }\n";
    et_result r1, r2;
    et_run(y, "1", NULL, &r1);
    et_run(y, "1", NULL, &r2);
    expect_output(&r1, "{\"input\":\"<q 1>\",\"args\":{\"a\":1}}");
    expect_output(&r2, "{\"input\":\"<q 1>\",\"args\":{\"a\":1}}");
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r1);
    et_result_free(&r2);
}

Test(engine_cache, different_prompts_miss)
{
    et_result r1, r2, r3;
    et_run(CACHED_CALL, "\"a\"", NULL, &r1);
    et_run(CACHED_CALL, "\"b\"", NULL, &r2);
    expect_output(&r1, "\"say a\"");
    expect_output(&r2, "\"say b\"");
    cr_assert_eq(ET.prov.calls, 2);
    /* the same prompt with other params is another request */
    et_run(HDR "do: { call: { prompt: 'say {{ input }}', temperature: 0.5 }, cache: true }\n",
           "\"a\"", NULL, &r3);
    cr_assert_eq(ET.prov.calls, 3);
    cr_assert_eq(cache_count(), 3);
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
}

Test(engine_cache, a_failed_call_is_not_cached)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    et_result r1, r2, r3;
    et_run(CACHED_CALL, "\"x\"", NULL, &r1);
    cr_assert_str_eq(et_code(&r1), "upstream");
    cr_assert_eq(cache_count(), 0);
    et_run(CACHED_CALL, "\"x\"", NULL, &r2);
    expect_output(&r2, "\"say x\"");
    cr_assert_eq(ET.prov.calls, 2, "the failure was not remembered");
    et_run(CACHED_CALL, "\"x\"", NULL, &r3);
    cr_assert_eq(ET.prov.calls, 2, "the success was");
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
}

Test(engine_cache, a_retried_success_is_cached)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    const char *y = HDR "do: { call: p, cache: true, retry: { max_attempts: 2, initial_delay: 1ms } }\n";
    et_result r1, r2;
    et_run(y, NULL, NULL, &r1);
    expect_output(&r1, "\"p\"");
    cr_assert_eq(ET.prov.calls, 2);
    et_run(y, NULL, NULL, &r2);
    expect_output(&r2, "\"p\"");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r1);
    et_result_free(&r2);
}

Test(engine_cache, a_bad_json_answer_is_not_cached)
{
    static const char *const script[] = { "not json", "{\"k\": 1}", NULL };
    ET.prov.script = script;
    const char *y = HDR "do: { call: { prompt: p, json: true }, cache: true }\n";
    et_result r1, r2, r3;
    et_run(y, NULL, NULL, &r1);
    cr_assert_str_eq(et_code(&r1), "invalid_output");
    et_run(y, NULL, NULL, &r2);
    expect_output(&r2, "{\"k\":1}");
    et_run(y, NULL, NULL, &r3);
    expect_output(&r3, "{\"k\":1}");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
}

Test(engine_cache, cache_false_or_absent_never_caches)
{
    const char *ys[] = { HDR "do: { call: 'same' }\n", HDR "do: { call: 'same', cache: false }\n",
                         HDR "do: { lambda: { fn: t.slow, args: { ms: 0 } } }\n" };
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            et_result r;
            et_run(ys[i], "1", NULL, &r);
            cr_assert(r.output);
            et_result_free(&r);
        }
    cr_assert_eq(ET.prov.calls, 4);
    cr_assert_eq(ET.lambda_calls, 2);
    cr_assert_eq(cache_count(), 0);
}

Test(engine_cache, pool_lambda_runs_once)
{
    const char *y = HDR "do: { lambda: { fn: t.slow, args: { ms: 1 } }, cache: true }\n";
    et_result r1, r2, r3;
    et_run(y, "{\"v\": 7}", NULL, &r1);
    et_run(y, "{\"v\": 7}", NULL, &r2);
    expect_output(&r1, "{\"v\":7}");
    expect_output(&r2, "{\"v\":7}");
    cr_assert_eq(ET.lambda_calls, 1);
    et_run(y, "{\"v\": 8}", NULL, &r3); /* another input is another key */
    cr_assert_eq(ET.lambda_calls, 2);
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
}

Test(engine_cache, inline_lambda_hit_in_a_map)
{
    /* the second and third items hit inline inside one job's pump */
    hitlog l = { 0 };
    engine_job_options o = { .trace = log_trace, .trace_ud = &l };
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', do: { lambda: t.inc, cache: true } } }\n",
           "[1, 1, 1, 2]", &o, &r);
    expect_output(&r, "[2,2,2,3]");
    cr_assert_eq(l.hits, 2);
    cr_assert_eq(cache_count(), 2);
    et_result_free(&r);
}

Test(engine_cache, failing_lambda_is_not_cached)
{
    const char *y = HDR "do: { lambda: { fn: t.fail, args: { why: x } }, cache: true }\n";
    et_result r1, r2;
    et_run(y, "1", NULL, &r1);
    et_run(y, "1", NULL, &r2);
    cr_assert_str_eq(et_code(&r2), "lambda_failed");
    cr_assert_eq(ET.lambda_calls, 2);
    cr_assert_eq(cache_count(), 0);
    et_result_free(&r1);
    et_result_free(&r2);
}

Test(engine_cache, embed_single_and_list_are_distinct)
{
    const char *one = HDR "do: { embed: '{{ input }}', cache: true }\n";
    et_result r1, r2, r3;
    et_run(one, "\"w\"", NULL, &r1);
    et_run(one, "\"w\"", NULL, &r2);
    expect_output(&r1, "[0.0,1.0]");
    expect_output(&r2, "[0.0,1.0]");
    cr_assert_eq(ET.prov.calls, 1);
    et_run(one, "[\"w\"]", NULL, &r3);
    expect_output(&r3, "[[0.0,1.0]]");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
}

Test(engine_cache, lru_bound_evicts_the_oldest)
{
    engine_with_bound(2);
    const char *in[] = { "\"a\"", "\"b\"", "\"c\"", "\"c\"", "\"b\"", "\"a\"" };
    const int calls_after[] = { 1, 2, 3, 3, 3, 4 };
    for (int i = 0; i < 6; i++) {
        et_result r;
        et_run(CACHED_CALL, in[i], NULL, &r);
        cr_assert(r.output);
        cr_assert_eq(ET.prov.calls, calls_after[i], "run %d: %d calls", i, ET.prov.calls);
        cr_assert(cache_count() <= 2);
        et_result_free(&r);
    }
}

Test(engine_cache, cancel_during_a_miss_leaves_no_entry)
{
    ET.prov.latency_ms = 10000;
    dsl_graph *g = et_compile(CACHED_CALL);
    json_t *in = json_string("z");
    et_result r;
    memset(&r, 0, sizeof r);
    engine_job_t *job = engine_submit(ET.eng, g, in, NULL, et_done, &r);
    cr_assert(job);
    for (int i = 0; i < 1000 && ET.prov.inflight == 0; i++)
        reactor_run_once(ET.r, 5);
    cr_assert_eq(ET.prov.inflight, 1);
    engine_cancel(job);
    cr_assert(r.done);
    cr_assert_str_eq(et_code(&r), "cancelled");
    cr_assert_eq(cache_count(), 0);
    et_result_free(&r);

    ET.prov.latency_ms = 0;
    et_result r2;
    et_run(CACHED_CALL, "\"z\"", NULL, &r2);
    expect_output(&r2, "\"say z\"");
    cr_assert_eq(ET.prov.calls, 2, "the cancelled call was not remembered");
    et_result_free(&r2);
    json_decref(in);
    dsl_graph_unref(g);
}

Test(engine_cache, timeout_during_a_miss_leaves_no_entry)
{
    ET.prov.latency_ms = 10000;
    const char *y = HDR "do: { call: 'say {{ input }}', cache: true, timeout: 20ms }\n";
    et_result r;
    et_run(y, "\"t\"", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_eq(cache_count(), 0);
    et_result_free(&r);
}

Test(engine_cache, identical_calls_in_flight_both_miss)
{
    ET.prov.latency_ms = 20;
    dsl_graph *g = et_compile(CACHED_CALL);
    json_t *in = json_string("same");
    et_result r1, r2;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    cr_assert(engine_submit(ET.eng, g, in, NULL, et_done, &r1));
    cr_assert(engine_submit(ET.eng, g, in, NULL, et_done, &r2));
    et_wait(&r1);
    et_wait(&r2);
    expect_output(&r1, "\"say same\"");
    expect_output(&r2, "\"say same\"");
    cr_assert_eq(ET.prov.calls, 2);
    cr_assert_eq(cache_count(), 1);
    et_result_free(&r1);
    et_result_free(&r2);
    json_decref(in);
    dsl_graph_unref(g);
}

/* ---- the structure itself */

Test(engine_cache, keys_are_canonical)
{
    json_t *a = json_pack("{s:i, s:s}", "x", 1, "y", "z");
    json_t *b = json_pack("{s:s, s:i}", "y", "z", "x", 1);
    char *ka = engine_cache_key("call", "p", "m", a);
    char *kb = engine_cache_key("call", "p", "m", b);
    char *kc = engine_cache_key("embed", "p", "m", a);
    char *kd = engine_cache_key("call", "p", NULL, a);
    cr_assert(ka && kb && kc && kd);
    cr_assert_str_eq(ka, kb);
    cr_assert_str_neq(ka, kc);
    cr_assert_str_neq(ka, kd);
    cr_assert_str_eq(ka, "[\"call\",\"p\",\"m\",{\"x\":1,\"y\":\"z\"}]");
    /* FNV-1a 64 reference values */
    cr_assert_eq(engine_cache_hash("", 0), UINT64_C(0xcbf29ce484222325));
    cr_assert_eq(engine_cache_hash("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
    free(ka);
    free(kb);
    free(kc);
    free(kd);
    json_decref(a);
    json_decref(b);
}

Test(engine_cache, lru_order_follows_use_and_holds_references)
{
    engine_cache *c = engine_cache_new(2);
    cr_assert(c);
    json_t *va = json_string("A"), *vb = json_string("B"), *vc = json_string("C");
    cr_assert_eq(engine_cache_put(c, "a", va), 0);
    cr_assert_eq(engine_cache_put(c, "b", vb), 0);
    cr_assert_eq(engine_cache_get(c, "a"), va); /* a is now the most recent */
    cr_assert_eq(engine_cache_put(c, "c", vc), 0);
    cr_assert_eq(engine_cache_count(c), 2);
    cr_assert_null(engine_cache_get(c, "b"));
    cr_assert_eq(engine_cache_get(c, "a"), va);
    cr_assert_eq(engine_cache_get(c, "c"), vc);
    cr_assert_eq(va->refcount, 2);
    cr_assert_eq(vb->refcount, 1, "the evicted entry dropped its reference");
    cr_assert_eq(engine_cache_put(c, "a", vb), 0); /* replace */
    cr_assert_eq(engine_cache_get(c, "a"), vb);
    cr_assert_eq(va->refcount, 1);
    cr_assert_eq(engine_cache_count(c), 2);
    engine_cache_free(c);
    cr_assert_eq(vb->refcount, 1);
    cr_assert_eq(vc->refcount, 1);
    json_decref(va);
    json_decref(vb);
    json_decref(vc);
}

Test(engine_cache, default_bound_and_many_entries)
{
    engine_cache *c = engine_cache_new(0);
    cr_assert(c);
    json_t *v = json_true();
    char key[32];
    for (int i = 0; i < ENGINE_CACHE_DEFAULT_ENTRIES + 5; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(engine_cache_put(c, key, v), 0);
    }
    cr_assert_eq(engine_cache_count(c), ENGINE_CACHE_DEFAULT_ENTRIES);
    cr_assert_null(engine_cache_get(c, "k4"));
    cr_assert(engine_cache_get(c, "k5"));
    engine_cache_free(c);
}
