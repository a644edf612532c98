/* test_engine_mock.c -- the engine against the real built-in plugins: the mock
 * provider (invoke, host timers, cancel) and std lambdas.
 *
 * These check that what the test plugin proves also holds with the provider
 * users run offline: concurrency bounds seen by the mock's own counters, and
 * outstanding vote samples cancelled through its cancel hook. */
#include <criterion/criterion.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/providers.h"
#include "dsl/dsl.h"
#include "plugins/mock/mock.h"
#include "tests/unit/engine_testlib.h"

static void mock_setup(void)
{
    et_setup();
    cr_assert_eq(plugins_add(ET.plugins, loom_builtin_mock_entry(), "built-in", NULL), 0);
}

TestSuite(engine_mock, .init = mock_setup, .fini = et_teardown);

/* The mock plugin's state, where its instances' counters are. */
static void *mock_state(void)
{
    const plugins_lambda *l = plugins_lambda_find(ET.plugins, "mock.stats");
    cr_assert(l != NULL);
    return l->state;
}

static void add_mock(const char *name, const char *text)
{
    char err[256];
    json_t *cfg = json_loads(text, 0, NULL);
    cr_assert(cfg);
    cr_assert_eq(engine_add_provider(ET.eng, name, "mock", cfg, NULL, NULL, err, sizeof err), 0, "%s", err);
    json_decref(cfg);
}

Test(engine_mock, echo_call)
{
    add_mock("m1", "{\"latency\": \"1ms\"}");
    et_result r;
    et_run("loom: 1\nname: t\ndo: { call: { provider: m1, prompt: 'hello {{ input }}' } }\n", "\"you\"",
           NULL, &r);
    cr_assert_str_eq(json_string_value(r.output), "hello you");
    et_result_free(&r);
}

Test(engine_mock, map_bound_seen_by_mock)
{
    add_mock("m2", "{\"latency\": \"3ms\"}");
    et_result r;
    et_run("loom: 1\nname: t\ndo: { map: { over: '{{ input }}', max_concurrency: 4, do: { call: { provider: m2, prompt: '{{ item }}' } } } }\n",
           "[1,2,3,4,5,6,7,8,9,10,11,12]", NULL, &r);
    cr_assert(r.output);
    mock_stats s;
    cr_assert_eq(mock_stats_get(mock_state(), "m2", &s), 0);
    cr_assert_eq(s.max_in_flight, 4);
    cr_assert_eq(s.completed, 12);
    et_result_free(&r);
}

Test(engine_mock, vote_cancels_outstanding_samples)
{
    add_mock("m3", "{\"latency\": \"5ms\", \"jitter\": \"20ms\", \"script\": [\"yes\"]}");
    et_result r;
    et_run("loom: 1\nname: t\ndo: { vote: { n: 9, do: { call: { provider: m3, prompt: q } } } }\n", "1",
           NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "winner")), "yes");
    mock_stats s;
    cr_assert_eq(mock_stats_get(mock_state(), "m3", &s), 0);
    cr_assert_eq(s.completed, 5); /* 5 of 9 is a majority */
    cr_assert_eq(s.cancelled, 4);
    cr_assert_eq(s.in_flight, 0);
    et_result_free(&r);
}

/* A config entry's limits hold for an invoke provider as for an HTTP one:
 * at `concurrency: 1` the mock never sees two of the map's calls at once,
 * though the map would run 6; `stats` shows the limiter's counters. */
Test(engine_mock, config_limits_bound_the_mock)
{
    char err[256];
    json_t *opts = json_pack("{s:s}", "latency", "5ms");
    config_provider cp = { .name = "m4", .plugin = "mock", .options = opts,
                           .limits = { .concurrency = 1 } };
    cr_assert_eq(providers_add(ET.providers, ET.eng, &cp, err, sizeof err), 0, "%s", err);
    json_decref(opts);
    et_result r;
    et_run("loom: 1\nname: t\ndo: { map: { over: '{{ input }}', max_concurrency: 6, do: { call: { provider: m4, prompt: '{{ item }}' } } } }\n",
           "[1,2,3,4,5,6]", NULL, &r);
    cr_assert(r.output);
    et_result_free(&r);
    mock_stats s;
    cr_assert_eq(mock_stats_get(mock_state(), "m4", &s), 0);
    cr_assert_eq(s.max_in_flight, 1);
    cr_assert_eq(s.completed, 6);
    json_t *all = engine_provider_stats(ET.eng);
    json_t *st = json_object_get(all, "m4");
    cr_assert_eq(json_integer_value(json_object_get(st, "requests")), 6);
    cr_assert_eq(json_integer_value(json_object_get(st, "succeeded")), 6);
    cr_assert_eq(json_integer_value(json_object_get(st, "concurrency")), 1);
    cr_assert_eq(json_integer_value(json_object_get(st, "in_flight")), 0);
    cr_assert_gt(json_integer_value(json_object_get(st, "input_tokens")), 0);
    json_decref(all);
}
