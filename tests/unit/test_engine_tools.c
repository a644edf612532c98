/* test_engine_tools.c -- calls with tools: the turn and tool loop on the
 * mock provider (its tool_script plays the model), its limits, tool
 * errors, the transcript, workflows and MCP servers as tools, and resume
 * from checkpoints without calling a tool or paying for a turn twice.
 *
 * Tool work is the test plugin's t.slow (which counts its runs in
 * ET.lambda_calls) and t.fail; model turns are counted by the mock's own
 * counters. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/providers.h"
#include "dsl/dsl.h"
#include "dsl/input_schema.h"
#include "plugins/mock/mock.h"
#include "daemon/engine/engine_internal.h"
#include "tests/unit/engine_testlib.h"

static void tools_setup(void)
{
    et_setup();
    cr_assert_eq(plugins_add(ET.plugins, loom_builtin_mock_entry(), "built-in", NULL), 0);
}

TestSuite(engine_tools, .init = tools_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"

static void add_mock(const char *name, const char *text)
{
    char err[256];
    json_t *cfg = json_loads(text, 0, NULL);
    cr_assert(cfg, "bad config %s", text);
    cr_assert_eq(engine_add_provider(ET.eng, name, "mock", cfg, NULL, NULL, err, sizeof err), 0,
                 "%s", err);
    json_decref(cfg);
}

static mock_stats stats_of(const char *name)
{
    const plugins_lambda *l = plugins_lambda_find(ET.plugins, "mock.stats");
    mock_stats s;
    cr_assert(l != NULL);
    cr_assert_eq(mock_stats_get(l->state, name, &s), 0);
    return s;
}

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(none)");
}

/* A turn calling t.slow twice (inputs A and B), then the final answer
 * listing the tool results. */
#define TWO_CALLS                                                                      \
    "{\"latency\": \"1ms\", \"tool_script\": ["                                         \
    " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"a\", \"ms\": 1}},"             \
    "  {\"name\": \"t_slow\", \"arguments\": {\"input\": \"b\", \"ms\": 1}}],"            \
    " \"got {results}\"]}"

Test(engine_tools, turns_and_tool_calls_until_an_answer)
{
    add_mock("m", TWO_CALLS);
    et_result r;
    et_run(HDR "do:\n  chain:\n"
               "    - id: agent\n"
               "      call: { provider: m, prompt: 'find {{ input }}', tools: [ { lambda: t.slow } ] }\n"
               "    - lambda: { fn: t.noop, input: { answer: '{{ prev }}', transcript: '{{ steps.agent.transcript }}' } }\n",
           "\"x\"", NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    cr_assert_str_eq(json_string_value(json_object_get(r.output, "answer")), "got a\nb");
    cr_assert_eq(ET.lambda_calls, 2);
    cr_assert_eq(stats_of("m").calls, 2);
    /* user, assistant with two calls, two results, the answer */
    json_t *t = json_object_get(r.output, "transcript");
    cr_assert_eq(json_array_size(t), 5, "%s", dump(t));
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(t, 0), "content")), "find x");
    cr_assert_eq(json_array_size(json_object_get(json_array_get(t, 1), "tool_calls")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(t, 3), "content")), "b");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(t, 3), "tool_call_id")),
                     "call_1_2");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(t, 4), "role")), "assistant");
    /* both turns count in the job's usage */
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.usage, "m"), "calls")), 2);
    et_result_free(&r);
}

/* max_tool_rounds counts tool calls, not turns or graph steps. */
Test(engine_tools, max_tool_rounds_counts_tool_calls)
{
    add_mock("m", TWO_CALLS);
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ], max_tool_rounds: 1 } }\n",
           NULL, NULL, &r);
    cr_assert(!r.output);
    cr_assert_str_eq(et_code(&r), "max_tool_rounds");
    cr_assert_eq(ET.lambda_calls, 0);
    et_result_free(&r);
    /* two are enough for the same conversation */
    add_mock("m2", TWO_CALLS);
    et_run(HDR "do: { call: { provider: m2, prompt: go, tools: [ { lambda: t.slow } ], max_tool_rounds: 2 } }\n",
           NULL, NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    et_result_free(&r);
}

Test(engine_tools, max_tokens_total_stops_the_conversation)
{
    add_mock("m", TWO_CALLS);
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ], max_tokens_total: 1 } }\n",
           NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "max_tokens_total");
    cr_assert_eq(stats_of("m").calls, 1); /* the second turn is never asked for */
    et_result_free(&r);
}

/* Concurrency: at most max_tool_concurrency tool calls of a turn at once. */
Test(engine_tools, tool_calls_of_a_turn_are_bounded)
{
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": [["
                  " {\"name\": \"t_slow\", \"arguments\": {\"input\": 1, \"ms\": 30}},"
                  " {\"name\": \"t_slow\", \"arguments\": {\"input\": 2, \"ms\": 30}},"
                  " {\"name\": \"t_slow\", \"arguments\": {\"input\": 3, \"ms\": 30}},"
                  " {\"name\": \"t_slow\", \"arguments\": {\"input\": 4, \"ms\": 30}}],"
                  " \"{results}\"]}");
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ], max_tool_concurrency: 2 } }\n",
           NULL, NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    /* results in the order of the calls, whatever order they ended in */
    cr_assert_str_eq(json_string_value(r.output), "1\n2\n3\n4");
    /* 4 calls of 30 ms two at a time take at least two rounds of 30 ms */
    cr_assert_geq(r.elapsed_us, 60000);
    cr_assert_eq(ET.lambda_calls, 4);
    et_result_free(&r);
}

Test(engine_tools, a_failing_tool_is_reported_or_fails_the_call)
{
    const char *script = "{\"latency\": \"1ms\", \"tool_script\": ["
                         " [{\"name\": \"oops\", \"arguments\": {\"why\": \"bad day\"}}],"
                         " \"saw {results}\"]}";
    add_mock("m", script);
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.fail, name: oops } ] } }\n",
           NULL, NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    cr_assert(strstr(json_string_value(r.output), "saw error: lambda_failed: boom: bad day"),
              "%s", json_string_value(r.output));
    et_result_free(&r);
    add_mock("m2", script);
    et_run(HDR "do: { call: { provider: m2, prompt: go, tools: [ { lambda: t.fail, name: oops } ],\n"
               "              on_tool_error: fail } }\n",
           NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "lambda_failed");
    cr_assert_eq(stats_of("m2").calls, 1);
    et_result_free(&r);
}

Test(engine_tools, an_unknown_tool_name_goes_back_to_the_model)
{
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": ["
                  " [{\"name\": \"nope\", \"arguments\": {}}], \"{results}\"]}");
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ] } }\n", NULL,
           NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    cr_assert_str_eq(json_string_value(r.output), "error: there is no tool named 'nope'");
    et_result_free(&r);
}

/* ---- the tools the model is offered */

/* The turn's request, as the mock's "messages" mode cannot show tools: a
 * call whose script ends at once still sends them; the definitions are
 * checked through the schema builders directly. */
Test(engine_tools, lambda_arguments_become_a_json_schema)
{
    static const loom_option args[] = {
        { "pattern", LOOM_OPT_STRING, NULL, 1, "the regex" },
        { "all", LOOM_OPT_BOOL, "false", 0, NULL },
        { "n", LOOM_OPT_INT, NULL, 0, NULL },
        { "x", LOOM_OPT_DOUBLE, NULL, 0, NULL },
        { "wait", LOOM_OPT_DURATION, NULL, 0, NULL },
        { "any", LOOM_OPT_JSON, NULL, 0, NULL },
        { NULL, 0, NULL, 0, NULL },
    };
    loom_lambda def = { .name = "f", .args = args };
    json_t *s = agent_lambda_schema(&def);
    cr_assert(s);
    json_t *p = json_object_get(s, "properties");
    cr_assert_str_eq(json_string_value(json_object_get(s, "type")), "object");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "pattern"), "type")), "string");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "all"), "type")), "boolean");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "n"), "type")), "integer");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "x"), "type")), "number");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "wait"), "type")), "string");
    cr_assert(json_object_get(json_object_get(p, "any"), "type") == NULL);
    cr_assert(json_object_get(p, "input") != NULL);
    char *req = dump(json_object_get(s, "required"));
    cr_assert_str_eq(req, "[\"pattern\"]");
    free(req);
    json_decref(s);

    dsl_graph *g = et_compile("loom: 1\nname: w\ndescription: adds\n"
                              "input: { n: integer, label: { type: string, default: x } }\n"
                              "do: { lambda: t.noop }\n");
    s = dsl_input_schema(g);
    p = json_object_get(s, "properties");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "n"), "type")), "integer");
    req = dump(json_object_get(s, "required"));
    cr_assert_str_eq(req, "[\"n\"]");
    free(req);
    json_decref(s);
    dsl_graph_unref(g);
}

/* ---- a workflow as a tool */

static dsl_graph *lookup_sub(void *ud, const char *name)
{
    return strcmp(name, "adder") == 0 ? ud : NULL;
}

Test(engine_tools, a_workflow_is_a_tool)
{
    dsl_graph *sub = et_compile("loom: 1\nname: adder\ninput: { n: integer }\n"
                                "do: { lambda: { fn: t.inc, input: '{{ input.n }}' } }\n");
    engine_set_workflow_lookup(ET.eng, lookup_sub, sub);
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": ["
                  " [{\"name\": \"add\", \"arguments\": {\"n\": 41}}], \"it is {results}\"]}");
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { use: adder, name: add } ] } }\n",
           NULL, NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    cr_assert_str_eq(json_string_value(r.output), "it is 42");
    et_result_free(&r);
    dsl_graph_unref(sub);
}

/* ---- MCP servers through engine_mcp_ops */

typedef struct fake_mcp {
    int calls, cancels;
    reactor_timer_t *t;
    engine_mcp_done_fn done;
    void *done_ud;
    json_t *args;
} fake_mcp;

static json_t *fm_tools(void *ud, const char *server, char *err, size_t len)
{
    if (strcmp(server, "calc") != 0) {
        snprintf(err, len, "no server '%s'", server);
        return NULL;
    }
    return json_loads("[{\"name\": \"sum\", \"description\": \"adds\", \"inputSchema\":"
                      " {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"}}}}]",
                      0, NULL);
}

static void fm_fire(reactor_t *r, reactor_timer_t *t, void *ud)
{
    fake_mcp *f = ud;
    f->t = NULL;
    json_int_t sum = json_integer_value(json_object_get(f->args, "a")) +
                     json_integer_value(json_object_get(f->args, "b"));
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)sum);
    json_decref(f->args);
    f->args = NULL;
    f->done(f->done_ud, json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", text),
            NULL, NULL);
}

static void *fm_call(void *ud, const char *server, const char *tool, json_t *args,
                     uint64_t timeout_ms, engine_mcp_done_fn done, void *done_ud, char *err,
                     size_t len)
{
    fake_mcp *f = ud;
    cr_assert_str_eq(server, "calc");
    cr_assert_str_eq(tool, "sum");
    f->calls++;
    f->done = done;
    f->done_ud = done_ud;
    f->args = json_incref(args);
    f->t = reactor_timer_add(ET.r, REACTOR_MSEC, fm_fire, f);
    return f;
}

static void fm_cancel(void *ud, void *h)
{
    fake_mcp *f = ud;
    f->cancels++;
    if (f->t)
        reactor_timer_cancel(ET.r, f->t);
    json_decref(f->args);
    f->args = NULL;
}

static const engine_mcp_ops fm_ops = { .tools = fm_tools, .call = fm_call, .cancel = fm_cancel };

Test(engine_tools, mcp_server_tools_through_the_hooks)
{
    fake_mcp f = { 0 };
    engine_set_mcp(ET.eng, &fm_ops, &f);
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": ["
                  " [{\"name\": \"c_sum\", \"arguments\": {\"a\": 2, \"b\": 3}}], \"= {results}\"]}");
    et_result r;
    et_run(HDR "do: { call: { provider: m, prompt: go, tools: [ { mcp: calc, name: c } ] } }\n",
           NULL, NULL, &r);
    cr_assert(r.output, "failed: %s", dump(r.error));
    cr_assert_str_eq(json_string_value(r.output), "= 5");
    cr_assert_eq(f.calls, 1);
    et_result_free(&r);
    /* an unknown server fails the call before any turn */
    add_mock("m2", "{\"latency\": \"1ms\"}");
    et_run(HDR "do: { call: { provider: m2, prompt: go, tools: [ { mcp: nothere } ] } }\n", NULL,
           NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_request");
    cr_assert(strstr(json_string_value(json_object_get(r.error, "message")), "no server 'nothere'"));
    cr_assert_eq(stats_of("m2").calls, 0);
    et_result_free(&r);
}

/* ---- resume */

typedef struct ck {
    json_t *recs;
} ck;

static void on_ck(void *ud, engine_job_t *job, const char *key, json_t *rec)
{
    json_object_set(((ck *)ud)->recs, key, rec);
}

/* Runs G with REPLAY, collecting checkpoints into C. */
static void run_ck(dsl_graph *g, json_t *replay, ck *c, et_result *r)
{
    memset(r, 0, sizeof *r);
    engine_job_options o = { .seed = 1, .checkpoint = on_ck, .checkpoint_ud = c,
                             .replay = replay };
    cr_assert(engine_submit(ET.eng, g, NULL, &o, et_done, r));
    et_wait(r);
}

/* A job cut short after some of its tool calls calls none of them again:
 * three turns (two calls, then one, then the answer); the records of the
 * first turn, its two calls and the second turn are kept, as a crash after
 * them would leave them. */
Test(engine_tools, resume_calls_no_tool_twice)
{
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": ["
                  " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"a\", \"ms\": 1}},"
                  "  {\"name\": \"t_slow\", \"arguments\": {\"input\": \"b\", \"ms\": 1}}],"
                  " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"c\", \"ms\": 1}}],"
                  " \"{results}\"]}");
    dsl_graph *g = et_compile(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ] } }\n");
    ck first = { json_object() };
    et_result r1;
    run_ck(g, NULL, &first, &r1);
    cr_assert(r1.output, "failed: %s", dump(r1.error));
    cr_assert_str_eq(json_string_value(r1.output), "a\nb\nc");
    cr_assert_eq(ET.lambda_calls, 3);
    cr_assert_eq(stats_of("m").calls, 3);
    /* three turns and three tool calls, each under its own key */
    cr_assert_eq(json_object_size(first.recs), 6, "%s", dump(first.recs));
    json_t *kept = json_object();
    const char *k;
    json_t *v;
    int turns = 0, calls = 0;
    json_object_foreach(first.recs, k, v) {
        const char *seg = strstr(k, "~t");
        cr_assert(seg, "key without a turn: %s", k);
        bool is_call = strchr(seg, '.') && strchr(seg, '.') < strchr(seg, ' ');
        turns += !is_call;
        calls += is_call;
        if (strncmp(seg, "~t1", 3) == 0 || strncmp(seg, "~t2 ", 4) == 0)
            json_object_set(kept, k, v);
    }
    cr_assert_eq(turns, 3);
    cr_assert_eq(calls, 3);
    cr_assert_eq(json_object_size(kept), 4, "%s", dump(kept));
    /* the resumed run: only the third call and the last turn are live */
    ET.lambda_calls = 0;
    ck second = { json_object() };
    et_result r2;
    run_ck(g, kept, &second, &r2);
    cr_assert(r2.output, "failed: %s", dump(r2.error));
    cr_assert_str_eq(json_string_value(r2.output), "a\nb\nc");
    cr_assert_eq(ET.lambda_calls, 1);
    cr_assert_eq(stats_of("m").calls, 4); /* one more turn */
    cr_assert_eq(json_object_size(second.recs), 2, "%s", dump(second.recs));
    /* everything recorded: nothing runs */
    ET.lambda_calls = 0;
    ck third = { json_object() };
    et_result r3;
    run_ck(g, first.recs, &third, &r3);
    cr_assert_str_eq(json_string_value(r3.output), "a\nb\nc");
    cr_assert_eq(ET.lambda_calls, 0);
    cr_assert_eq(stats_of("m").calls, 4);
    cr_assert_eq(json_object_size(third.recs), 0);
    et_result_free(&r1);
    et_result_free(&r2);
    et_result_free(&r3);
    json_decref(first.recs);
    json_decref(second.recs);
    json_decref(third.recs);
    json_decref(kept);
    dsl_graph_unref(g);
}

/* A crash may come after any checkpoint: for every prefix of the first
 * run's records (in the order they were written), a run resumed from it
 * calls only the tools and pays only for the turns the prefix lacks, and
 * answers the same. */
Test(engine_tools, resume_at_every_step)
{
    add_mock("m", "{\"latency\": \"1ms\", \"tool_script\": ["
                  " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"a\", \"ms\": 1}},"
                  "  {\"name\": \"t_slow\", \"arguments\": {\"input\": \"b\", \"ms\": 1}}],"
                  " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"c\", \"ms\": 1}}],"
                  " \"{results}\"]}");
    dsl_graph *g = et_compile(HDR "do: { call: { provider: m, prompt: go, tools: [ { lambda: t.slow } ] } }\n");
    ck first = { json_object() };
    et_result r1;
    run_ck(g, NULL, &first, &r1);
    cr_assert(r1.output, "failed: %s", dump(r1.error));
    size_t n = json_object_size(first.recs);
    cr_assert_eq(n, 6, "%s", dump(first.recs));
    for (size_t k = 0; k <= n; k++) {
        /* the records with seq < k: what a crash after the k-th write left */
        json_t *kept = json_object();
        size_t turns_kept = 0, calls_kept = 0;
        const char *key;
        json_t *rec;
        json_object_foreach(first.recs, key, rec) {
            json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
            cr_assert(seq >= 0 && (size_t)seq < n, "seq %lld in %s", (long long)seq, key);
            if ((size_t)seq >= k)
                continue;
            json_object_set(kept, key, rec);
            const char *seg = strstr(key, "~t");
            cr_assert(seg);
            bool is_call = strchr(seg, '.') && strchr(seg, '.') < strchr(seg, ' ');
            calls_kept += is_call;
            turns_kept += !is_call;
        }
        cr_assert_eq(json_object_size(kept), k);
        ET.lambda_calls = 0;
        uint64_t before = stats_of("m").calls;
        ck again = { json_object() };
        et_result r2;
        run_ck(g, kept, &again, &r2);
        cr_assert(r2.output, "prefix %zu failed: %s", k, dump(r2.error));
        cr_assert_str_eq(json_string_value(r2.output), "a\nb\nc", "prefix %zu", k);
        cr_assert_eq(ET.lambda_calls, (int)(3 - calls_kept), "prefix %zu: %d tool runs", k,
                     ET.lambda_calls);
        cr_assert_eq(stats_of("m").calls - before, 3 - turns_kept, "prefix %zu", k);
        cr_assert_eq(json_object_size(again.recs), n - k, "prefix %zu: %s", k, dump(again.recs));
        et_result_free(&r2);
        json_decref(again.recs);
        json_decref(kept);
    }
    et_result_free(&r1);
    json_decref(first.recs);
    dsl_graph_unref(g);
}

/* ---- compile errors */

static void expect_compile_error(const char *yaml, const char *needle)
{
    static const char *const lambdas[] = { "t.slow", "t.fail", NULL };
    dsl_registry reg = { .lambdas = lambdas };
    dsl_options opt = { .registry = &reg };
    dsl_diags d;
    cr_assert_eq(dsl_diags_init(&d, "w.yaml"), 0);
    dsl_graph *g = dsl_compile("w.yaml", yaml, strlen(yaml), &opt, &d);
    cr_assert_null(g, "compiled: %s", yaml);
    char *text = dsl_diags_text(&d, NULL);
    cr_assert(text && strstr(text, needle), "wanted '%s' in:\n%s", needle, text ? text : "");
    free(text);
    dsl_diags_free(&d);
}

Test(engine_tools, compile_errors_name_the_place)
{
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slwo } ] } }\n",
                         "w.yaml:3:46: error: unknown lambda 't.slwo'; did you mean 't.slow'?");
    expect_compile_error(HDR "do: { call: { prompt: go, max_tool_rounds: 3 } }\n",
                         "'max_tool_rounds' applies to a call with 'tools'");
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slow }, { lambda: t.slow } ] } }\n",
                         "two tools are named 't_slow'");
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slow, use: x } ] } }\n",
                         "a tool is one of lambda, use or mcp");
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slow } ], on_tool_error: fial } }\n",
                         "did you mean 'fail'?");
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slow, name: 'a b' } ] } }\n",
                         "'a b' is not a tool name");
    expect_compile_error(HDR "do: { call: { prompt: go, tools: [ { lambda: t.slow } ], max_tool_rounds: 0 } }\n",
                         "max_tool_rounds");
    expect_compile_error(HDR "do: { chain: [ { id: a, call: { prompt: go } }, { lambda: { fn: t.slow, input: '{{ steps.a.transcript }}' } } ] }\n",
                         "write .output, .error or .attempts");
}

/* `loomctl graph` shows an agent's tools and limits. */
Test(engine_tools, the_graph_document_shows_the_tools)
{
    dsl_graph *g = et_compile(HDR "do: { call: { prompt: go, max_tool_rounds: 7, tools: [\n"
                                  "  { lambda: t.slow, name: wait_a_bit }, { mcp: srv } ] } }\n");
    json_t *doc = dsl_emit_json(g);
    cr_assert(doc != NULL);
    json_t *tools = json_object_get(json_object_get(doc, "root"), "tools");
    json_t *items = json_object_get(tools, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "lambda")),
                     "t.slow");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "name")),
                     "wait_a_bit");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 1), "mcp")), "srv");
    cr_assert_eq(json_integer_value(json_object_get(tools, "max_tool_rounds")), 7);
    cr_assert_eq(json_integer_value(json_object_get(tools, "max_tool_concurrency")),
                 DSL_MAX_TOOL_CONCURRENCY_DEFAULT);
    cr_assert_str_eq(json_string_value(json_object_get(tools, "on_tool_error")), "report");
    json_decref(doc);
    dsl_graph_unref(g);
}
