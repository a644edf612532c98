/* test_engine_loop.c -- the loop kind in the engine: `until` as a template
 * and as a node, `loop.iteration` and `loop.previous`, `collect`, running
 * out of iterations (loop_exhausted, or `on_exhausted: last`), a loop
 * without `until`, per-iteration steps, nested loops, a retried loop, a
 * cancelled one, and the longest loop the language allows.
 *
 * Most bodies are t.inc over `loop.previous`, so iteration I answers I and
 * the expected outputs follow from the iteration count alone. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(engine_loop, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"
/* iteration I answers I */
#define COUNT "{ lambda: { fn: t.inc, input: '{{ loop.previous }}' } }"

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

Test(engine_loop, until_template_stops_the_loop)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(3) }}', max_iterations: 10 } }\n",
           NULL, NULL, &r);
    expect_json(&r, "3");
    et_result_free(&r);
}

Test(engine_loop, until_holding_at_once_runs_one_iteration)
{
    et_result r;
    et_run(HDR "do: { loop: { do: { call: 'once' }, until: 'yes', max_iterations: 10 } }\n", NULL,
           NULL, &r);
    expect_json(&r, "\"once\"");
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r);
}

Test(engine_loop, collect_gives_every_iteration)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(4) }}', max_iterations: 10,\n"
               "  collect: true } }\n", NULL, NULL, &r);
    expect_json(&r, "[1,2,3,4]");
    et_result_free(&r);
}

Test(engine_loop, running_out_fails_with_loop_exhausted)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(100) }}', max_iterations: 4 } }\n",
           NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "loop_exhausted");
    cr_assert_str_eq(err_field(&r, "message"), "'until' did not hold after 4 iterations");
    cr_assert_str_eq(err_field(&r, "node"), "do");
    et_result_free(&r);
}

Test(engine_loop, on_exhausted_last_returns_the_last_output)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(100) }}', max_iterations: 4,\n"
               "  on_exhausted: last } }\n", NULL, NULL, &r);
    expect_json(&r, "4");
    et_result_free(&r);
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(100) }}', max_iterations: 3,\n"
               "  on_exhausted: last, collect: true } }\n", NULL, NULL, &r);
    expect_json(&r, "[1,2,3]");
    et_result_free(&r);
}

/* A fallback sees the exhausted loop's error like any other. */
Test(engine_loop, exhaustion_reaches_a_fallback)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(100) }}', max_iterations: 2 },\n"
               "  fallback: { lambda: { fn: t.noop, input: '{{ error.code }}' } } }\n",
           NULL, NULL, &r);
    expect_json(&r, "\"loop_exhausted\"");
    et_result_free(&r);
}

Test(engine_loop, without_until_runs_max_iterations)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", max_iterations: 5 } }\n", NULL, NULL, &r);
    expect_json(&r, "5");
    et_result_free(&r);
}

/* The body sees the loop's input as `prev` and `input` in every iteration,
 * and `loop` as {iteration, previous}. */
Test(engine_loop, body_sees_iteration_previous_and_input)
{
    et_result r;
    et_run(HDR "do: { chain: [ { lambda: t.inc },\n"
               "  { loop: { max_iterations: 3, collect: true,\n"
               "    do: { lambda: { fn: t.echo, args: { i: '{{ loop.iteration }}', p: '{{ loop.previous }}',\n"
               "      whole: '{{ loop }}', job: '{{ input }}' } },\n"
               "      output: { i: '{{ output.args.i }}', p: '{{ output.args.p.i }}', in: '{{ output.input }}',\n"
               "        same: '{{ output.args.whole.iteration }}', job: '{{ output.args.job }}' } } } } ] }\n",
           "41", NULL, &r);
    expect_json(&r, "[{\"i\":1,\"p\":null,\"in\":42,\"same\":1,\"job\":41},"
                    "{\"i\":2,\"p\":1,\"in\":42,\"same\":2,\"job\":41},"
                    "{\"i\":3,\"p\":2,\"in\":42,\"same\":3,\"job\":41}]");
    et_result_free(&r);
}

/* An until node gets the iteration's output as its input and sees `loop`;
 * its answer's truth decides. The loop's output is the body's, not the
 * until node's. */
Test(engine_loop, until_node_decides_on_the_iteration_output)
{
    et_result r;
    et_run(HDR "do: { loop: { max_iterations: 10, collect: true,\n"
               "  do: { lambda: { fn: t.noop, input: 'v{{ loop.iteration }}' } },\n"
               "  until: { lambda: t.noop, output: '{{ output | eq(\"v3\") }}' } } }\n",
           NULL, NULL, &r);
    expect_json(&r, "[\"v1\",\"v2\",\"v3\"]");
    et_result_free(&r);
    et_run(HDR "do: { loop: { max_iterations: 10, do: " COUNT ",\n"
               "  until: { lambda: { fn: t.echo, args: { it: '{{ loop.iteration }}', p: '{{ loop.previous }}' } },\n"
               "           output: '{{ output.args.it | eq(2) }}' } } }\n", NULL, NULL, &r);
    expect_json(&r, "2");
    et_result_free(&r);
    et_run(HDR "do: { loop: { max_iterations: 10, do: " COUNT ",\n"
               "  until: { lambda: t.noop, output: '{{ output | eq(6) }}' } } }\n", NULL, NULL, &r);
    expect_json(&r, "6");
    et_result_free(&r);
}

/* The until template sees the iteration just ended as loop.iteration and
 * the one before it as loop.previous. */
Test(engine_loop, until_template_sees_loop)
{
    et_result r;
    et_run(HDR "do: { loop: { do: { lambda: { fn: t.noop, input: 'x{{ loop.iteration }}' } },\n"
               "  until: '{{ loop.previous | eq(\"x2\") }}', max_iterations: 9 } }\n",
           NULL, NULL, &r);
    expect_json(&r, "\"x3\"");
    et_result_free(&r);
    et_run(HDR "do: { loop: { do: { call: 'c{{ loop.iteration }}' },\n"
               "  until: '{{ loop.iteration | eq(2) }}', max_iterations: 9 } }\n",
           NULL, NULL, &r);
    expect_json(&r, "\"c2\"");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r);
}

/* Steps inside the body are the iteration's own: a later step of the
 * body's chain reads this iteration's value, never an earlier one's. */
Test(engine_loop, steps_are_per_iteration)
{
    et_result r;
    et_run(HDR "do: { loop: { max_iterations: 3, collect: true, do: { chain: [\n"
               "  { id: a, lambda: { fn: t.inc, input: '{{ loop.iteration }}' } },\n"
               "  { lambda: { fn: t.noop, input: '{{ steps.a.output }}-{{ loop.iteration }}' } } ] } } }\n",
           NULL, NULL, &r);
    expect_json(&r, "[\"2-1\",\"3-2\",\"4-3\"]");
    et_result_free(&r);
}

/* `loop` names the nearest loop whose do or until holds the template: the
 * inner loop's body and until see the inner loop, the inner loop node's own
 * `output:` (which is part of the outer body) sees the outer one. */
Test(engine_loop, nested_loops_name_their_own)
{
    et_result r;
    et_run(HDR "do: { loop: { max_iterations: 2, collect: true, do: {\n"
               "  loop: { max_iterations: 5, collect: true, until: '{{ loop.iteration | eq(2) }}',\n"
               "    do: { lambda: { fn: t.noop, input: '{{ loop.iteration }}' } } },\n"
               "  output: { outer: '{{ loop.iteration }}', inner: '{{ output }}' } } } }\n",
           NULL, NULL, &r);
    expect_json(&r, "[{\"outer\":1,\"inner\":[1,2]},{\"outer\":2,\"inner\":[1,2]}]");
    et_result_free(&r);
}

/* A failing iteration fails the loop with its error; a retry of the loop
 * starts again from iteration 1. */
Test(engine_loop, body_failure_and_loop_retry)
{
    et_result r;
    et_run(HDR "do: { loop: { max_iterations: 3, do: { lambda: { fn: t.fail, args: { why: 'it {{ loop.iteration }}' } } } } }\n",
           NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "lambda_failed");
    cr_assert(strstr(err_field(&r, "message"), "boom: it 1"), "%s", err_field(&r, "message"));
    cr_assert_eq(ET.lambda_calls, 1);
    et_result_free(&r);

    ET.prov.fail_first = 2; /* the first call of each of the first two attempts */
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    ET.prov.script = (const char *const[]){ "a", "b", "c", "d", "e", NULL };
    et_run(HDR "do: { loop: { max_iterations: 3, collect: true,\n"
               "  do: { call: x, retry: { max_attempts: 1 } } },\n"
               "  retry: { max_attempts: 3, initial_delay: 1ms } }\n", NULL, NULL, &r);
    /* attempt 1 fails at its first call, attempt 2 at its first too (the
     * first two calls fail), attempt 3 runs the three iterations */
    cr_assert(r.output, "%s", r.error ? json_dumps(r.error, 0) : "?");
    cr_assert_eq(json_array_size(r.output), 3);
    cr_assert_eq(ET.prov.calls, 5);
    et_result_free(&r);
}

/* A loop waiting on a slow iteration is cancelled cleanly (nothing leaks,
 * no iteration starts after the cancel). */
Test(engine_loop, cancel_mid_loop)
{
    ET.prov.latency_ms = 5000;
    dsl_graph *g = et_compile(HDR "do: { loop: { max_iterations: 100, do: { call: 'c{{ loop.iteration }}' } } }\n");
    et_result r;
    memset(&r, 0, sizeof r);
    engine_job_t *job = engine_submit(ET.eng, g, NULL, NULL, et_done, &r);
    cr_assert(job);
    dsl_graph_unref(g);
    for (int i = 0; i < 200 && ET.prov.inflight == 0; i++)
        reactor_run_once(ET.r, 5);
    cr_assert_eq(ET.prov.inflight, 1, "the first iteration's call did not start");
    engine_cancel(job);
    et_wait(&r);
    cr_assert_str_eq(et_code(&r), "cancelled");
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r);
}

/* The longest loop the language allows, with inline lambdas: iterations
 * follow one another through the job's pump, not through nested calls. */
Test(engine_loop, ten_thousand_iterations)
{
    et_result r;
    et_run(HDR "do: { loop: { do: " COUNT ", max_iterations: 10000 } }\n", NULL, NULL, &r);
    expect_json(&r, "10000");
    et_result_free(&r);
    et_run(HDR "do: { loop: { do: " COUNT ", until: '{{ output | eq(10000) }}', max_iterations: 10000,\n"
               "  collect: true }, output: '{{ output | length }}' }\n", NULL, NULL, &r);
    expect_json(&r, "10000");
    et_result_free(&r);
}
