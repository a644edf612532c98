/* test_engine_schema.c -- structured outputs in the engine: a call with a
 * `schema:` sends the schema with its name, parses the answer as JSON and
 * checks it; an answer that is not JSON or does not fit fails with
 * invalid_output naming the pointer and the rule, and `retry: { on:
 * [invalid_output] }` asks again. The test provider answers from a script. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"
#include "dsl/dsl.h"
#include "plugins/mock/mock.h"
#include "tests/unit/engine_testlib.h"

TestSuite(engine_schema, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"
#define SCHEMA                                                                             \
    "schema: { type: object, required: [n], additionalProperties: false,\n"              \
    "          properties: { n: { type: integer, maximum: 10 } } }\n"

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

static const char *error_message(const et_result *r)
{
    cr_assert(r->error, "the job did not fail");
    return json_string_value(json_object_get(r->error, "message"));
}

Test(engine_schema, a_fitting_answer_is_the_output_and_the_schema_is_sent)
{
    static const char *const script[] = { "{\"n\": 3}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do:\n  id: count\n  call:\n    prompt: how many\n    " SCHEMA, NULL, NULL, &r);
    expect_json(&r, "{\"n\": 3}");
    json_t *req = ET.prov.last_request;
    cr_assert(json_is_true(json_object_get(req, "json_mode")), "a schema asks for JSON");
    cr_assert_str_eq(json_string_value(json_object_get(req, "schema_name")), "count");
    json_t *want = json_loads("{\"type\": \"object\", \"required\": [\"n\"], "
                              "\"additionalProperties\": false, \"properties\": {\"n\": "
                              "{\"type\": \"integer\", \"maximum\": 10}}}",
                              0, NULL);
    cr_assert(json_equal(json_object_get(req, "schema"), want), "the schema document is sent");
    json_decref(want);
    et_result_free(&r);
}

Test(engine_schema, without_an_id_the_schema_is_named_output)
{
    static const char *const script[] = { "{\"n\": 1}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do:\n  call:\n    prompt: how many\n    " SCHEMA, NULL, NULL, &r);
    expect_json(&r, "{\"n\": 1}");
    cr_assert_str_eq(json_string_value(json_object_get(ET.prov.last_request, "schema_name")),
                     "output");
    et_result_free(&r);
}

Test(engine_schema, an_answer_that_does_not_fit_is_invalid_output)
{
    static const char *const script[] = { "{\"n\": 12}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do:\n  call:\n    prompt: how many\n    " SCHEMA, NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_output");
    cr_assert(strstr(error_message(&r), "at /n: 12 is above the maximum 10 (maximum)") != NULL,
              "%s", error_message(&r));
    cr_assert_eq(ET.prov.calls, 1, "invalid_output is not retried by default");
    et_result_free(&r);
}

Test(engine_schema, an_answer_that_is_not_json_is_invalid_output)
{
    static const char *const script[] = { "three", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do:\n  call:\n    prompt: how many\n    " SCHEMA, NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_output");
    cr_assert(strstr(error_message(&r), "not JSON") != NULL, "%s", error_message(&r));
    et_result_free(&r);
}

Test(engine_schema, retry_on_invalid_output_asks_again)
{
    static const char *const script[] = { "{\"n\": \"3\"}", "{\"n\": 3, \"extra\": 1}",
                                          "{\"n\": 4}", NULL };
    ET.prov.script = script;
    et_result r;
    et_run(HDR "do:\n  call:\n    prompt: how many\n    " SCHEMA
               "  retry: { max_attempts: 3, initial_delay: 1ms, on: [invalid_output] }\n",
           NULL, NULL, &r);
    expect_json(&r, "{\"n\": 4}");
    cr_assert_eq(ET.prov.calls, 3);
    et_result_free(&r);

    /* out of attempts: the last answer's reason is the error */
    ET.prov.calls = 0;
    static const char *const bad[] = { "{\"n\": \"3\"}", "{\"n\": 3, \"extra\": 1}", NULL };
    ET.prov.script = bad;
    et_run(HDR "do:\n  call:\n    prompt: how many\n    " SCHEMA
               "  retry: { max_attempts: 2, initial_delay: 1ms, on: [invalid_output] }\n",
           NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_output");
    cr_assert(strstr(error_message(&r),
                     "at /extra: the property \"extra\" is not allowed (additionalProperties)"),
              "%s", error_message(&r));
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r);
}

/* An agent (a call with tools) checks its final answer against the schema;
 * its turns, which may call tools, are not. The mock plays the model. */
static void agent_setup(void)
{
    et_setup();
    cr_assert_eq(plugins_add(ET.plugins, loom_builtin_mock_entry(), "built-in", NULL), 0);
}

TestSuite(engine_schema_agent, .init = agent_setup, .fini = et_teardown);

static void add_mock(const char *name, const char *text)
{
    char err[256];
    json_t *cfg = json_loads(text, 0, NULL);
    cr_assert(cfg, "bad config %s", text);
    cr_assert_eq(engine_add_provider(ET.eng, name, "mock", cfg, NULL, NULL, err, sizeof err), 0,
                 "%s", err);
    json_decref(cfg);
}

/* One turn calling t.slow, then a final answer made of its result. */
#define AGENT_MOCK(answer)                                                                 \
    "{\"latency\": \"1ms\", \"tool_script\": ["                                           \
    " [{\"name\": \"t_slow\", \"arguments\": {\"input\": \"7\", \"ms\": 1}}],"             \
    " \"" answer "\"]}"

Test(engine_schema_agent, the_final_answer_is_checked)
{
    add_mock("m", AGENT_MOCK("{\\\"n\\\": {results}}"));
    et_result r;
    et_run(HDR "do:\n  call:\n    provider: m\n    prompt: go\n    tools: [ { lambda: t.slow } ]\n"
               "    " SCHEMA, NULL, NULL, &r);
    expect_json(&r, "{\"n\": 7}");
    et_result_free(&r);

    add_mock("m2", AGENT_MOCK("{\\\"n\\\": 1{results}}"));
    et_run(HDR "do:\n  call:\n    provider: m2\n    prompt: go\n    tools: [ { lambda: t.slow } ]\n"
               "    " SCHEMA, NULL, NULL, &r);
    cr_assert_str_eq(et_code(&r), "invalid_output");
    cr_assert(strstr(error_message(&r), "at /n: 17 is above the maximum 10 (maximum)") != NULL,
              "%s", error_message(&r));
    et_result_free(&r);
}
