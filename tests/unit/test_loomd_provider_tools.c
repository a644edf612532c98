/* test_loomd_provider_tools.c -- structured outputs and tool calls through a
 * real loomd, its openai and anthropic providers and the fake provider
 * server, in both wire formats.
 *
 * The fake makes up a structured answer from the schema it is sent (its
 * strings say the prompt) or answers a "fake-script:" in the prompt
 * (tests/fake/README.md), and refuses a tool conversation the real APIs
 * would refuse; so a job that succeeds here went through each provider's
 * encoding and decoding both ways. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

static const char *const providers[] = { "oa", "an" };

/* loomd with both providers pointed at the fake, and WORKFLOW as TEXT for
 * each (its "@P@" replaced by the provider's name, the workflow named
 * WORKFLOW-P). */
static void start(const char *workflow, const char *text)
{
    cr_assert(setenv("LOOM_TEST_TOOLS_KEY", "sk-test-tools", 1) == 0);
    lh_setup(&D,
             "  oa: { plugin: openai, base_url: &fake \"@FAKE@\", model: gpt-test,\n"
             "        api_key_env: LOOM_TEST_TOOLS_KEY }\n"
             "  an: { plugin: anthropic, base_url: *fake, model: claude-test,\n"
             "        api_key_env: LOOM_TEST_TOOLS_KEY }\n",
             NULL);
    for (size_t i = 0; i < 2; i++) {
        char name[64], wf[4096];
        const char *at = strstr(text, "@P@");
        snprintf(name, sizeof name, "%s-%s", workflow, providers[i]);
        cr_assert(at != NULL);
        snprintf(wf, sizeof wf, "loom: 1\nname: %s\n%.*s%s%s", name, (int)(at - text), text,
                 providers[i], at + 3);
        lh_workflow(&D, name, wf);
    }
    lh_start(&D);
}

/* Submits WORKFLOW-P over INPUT (JSON) and waits: the job object. */
static json_t *run(const char *workflow, const char *p, const char *input)
{
    char req[2048];
    snprintf(req, sizeof req,
             "{\"op\":\"submit\",\"workflow\":\"%s-%s\",\"input\":%s,\"wait\":true}", workflow, p,
             input);
    json_t *r = lh_call(&D, req, 30000);
    cr_assert(r != NULL, "no reply to %s", req);
    json_t *job = json_incref(json_object_get(r, "result"));
    char *s = json_dumps(r, 0);
    cr_assert(job != NULL, "%s", s);
    free(s);
    json_decref(r);
    return job;
}

static void assert_state(json_t *job, const char *state)
{
    char *s = json_dumps(job, 0);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), state, "%s", s);
    free(s);
}

/* ---- structured outputs */

#define PLAN_WF                                                                        \
    "do:\n"                                                                            \
    "  id: plan\n"                                                                     \
    "  call:\n"                                                                        \
    "    provider: @P@\n"                                                              \
    "    prompt: '{{ input.text }}'\n"                                                 \
    "    schema:\n"                                                                    \
    "      type: object\n"                                                             \
    "      properties:\n"                                                              \
    "        title: { type: string, maxLength: 5 }\n"                                  \
    "        steps: { type: array, items: { type: integer, minimum: 3 }, minItems: 2 }\n" \
    "      required: [title, steps]\n"                                                 \
    "      additionalProperties: false\n"

Test(loomd_provider_tools, structured_outputs_in_both_formats, .fini = teardown)
{
    start("plan", PLAN_WF);
    for (size_t i = 0; i < 2; i++) {
        json_t *job = run("plan", providers[i], "{\"text\":\"hello world\"}");
        assert_state(job, "succeeded");
        json_t *want = json_loads("{\"title\":\"hello\",\"steps\":[3,3]}", 0, NULL);
        char *got = json_dumps(json_object_get(job, "output"), JSON_COMPACT);
        cr_assert(json_equal(json_object_get(job, "output"), want), "%s: %s", providers[i], got);
        free(got);
        json_decref(want);
        json_decref(job);
        cr_assert_eq(fake_server_stat(&D.fake, "structured"), (long)i + 1);
    }
}

Test(loomd_provider_tools, a_structured_answer_that_does_not_fit_is_invalid_output,
     .fini = teardown)
{
    start("plan", PLAN_WF);
    for (size_t i = 0; i < 2; i++) {
        json_t *job = run("plan", providers[i],
                          "{\"text\":\"fake-script: [{\\\"answer\\\": {\\\"title\\\": "
                          "\\\"far too long\\\", \\\"steps\\\": [3, 4]}}]\"}");
        assert_state(job, "failed");
        json_t *err = json_object_get(job, "error");
        char *s = json_dumps(err, 0);
        cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "invalid_output", "%s",
                         s);
        cr_assert(strstr(json_string_value(json_object_get(err, "message")), "/title") != NULL,
                  "the message names where: %s", s);
        free(s);
        json_decref(job);
    }
}

/* ---- agents: a call with tools */

#define AGENT_WF                                        \
    "do:\n"                                             \
    "  id: agent\n"                                     \
    "  call:\n"                                         \
    "    provider: @P@\n"                               \
    "    prompt: '{{ input.text }}'\n"                  \
    "    tools:\n"                                      \
    "      - { lambda: std.length, name: length }\n"    \
    "      - { lambda: std.trim, name: tidy, description: strips blanks }\n"

/* Two calls at once, then the fake answers with their results. */
#define TWO_CALLS                                                                              \
    "{\"text\":\"fake-script: [{\\\"calls\\\": ["                                              \
    "{\\\"name\\\": \\\"length\\\", \\\"arguments\\\": {\\\"input\\\": \\\"hello\\\"}},"       \
    "{\\\"name\\\": \\\"tidy\\\", \\\"arguments\\\": {\\\"input\\\": \\\"  x  \\\"}}]}]\"}"

/* A call the lambda fails (std.length of a number). */
#define FAILING_CALL                                                                           \
    "{\"text\":\"fake-script: [{\\\"calls\\\": ["                                              \
    "{\\\"name\\\": \\\"length\\\", \\\"arguments\\\": {\\\"input\\\": 7}}]}]\"}"

Test(loomd_provider_tools, an_agent_runs_its_tools_in_both_formats, .fini = teardown)
{
    start("agent", AGENT_WF);
    for (size_t i = 0; i < 2; i++) {
        long before = fake_server_stat(&D.fake, "requests");
        json_t *job = run("agent", providers[i], TWO_CALLS);
        assert_state(job, "succeeded");
        /* the model's last turn saw both results, in the order of the calls */
        cr_assert_str_eq(json_string_value(json_object_get(job, "output")), "5\nx", "%s",
                         providers[i]);
        json_decref(job);
        cr_assert_eq(fake_server_stat(&D.fake, "requests") - before, 2, "two model turns");
        cr_assert_eq(fake_server_stat(&D.fake, "tool_calls"), 2 * ((long)i + 1));
    }
}

Test(loomd_provider_tools, a_failing_tool_is_reported_to_the_model, .fini = teardown)
{
    start("agent", AGENT_WF);
    for (size_t i = 0; i < 2; i++) {
        json_t *job = run("agent", providers[i], FAILING_CALL);
        assert_state(job, "succeeded");
        const char *out = json_string_value(json_object_get(job, "output"));
        /* the model's last turn saw the failure, said once (OpenAI has no
         * error flag: the text says it; Anthropic's result has is_error) */
        cr_assert(out && strstr(out, "lambda_failed") && strstr(out, "std.length"), "%s", out);
        cr_assert(strstr(out, "error: error") == NULL, "%s", out);
        cr_assert_eq(fake_server_stat(&D.fake, "tool_failures"), (long)i + 1, "%s",
                     providers[i]);
        json_decref(job);
    }
}

/* ---- both: an agent whose answer is a structured output */

#define SHAPED_WF                                       \
    "do:\n"                                             \
    "  id: shaped\n"                                    \
    "  call:\n"                                         \
    "    provider: @P@\n"                               \
    "    prompt: '{{ input.text }}'\n"                  \
    "    tools:\n"                                      \
    "      - { lambda: std.length, name: length }\n"    \
    "    schema:\n"                                     \
    "      type: object\n"                              \
    "      properties: { n: { type: integer } }\n"      \
    "      required: [n]\n"

/* A tool call, then the answer as JSON, which must fit the call's schema.
 * (The fake answers a request that asks for a structured output -- OpenAI
 * response_format, Anthropic the schema's tool under tool_choice any -- in
 * kind, and one that does not with the same JSON as text.) */
#define CALL_THEN_ANSWER                                                                       \
    "{\"text\":\"fake-script: [{\\\"calls\\\": [{\\\"name\\\": \\\"length\\\", "               \
    "\\\"arguments\\\": {\\\"input\\\": \\\"four\\\"}}]}, {\\\"answer\\\": {\\\"n\\\": 4}}]\"}"

Test(loomd_provider_tools, an_agent_answers_with_a_structured_output, .fini = teardown)
{
    start("shaped", SHAPED_WF);
    for (size_t i = 0; i < 2; i++) {
        json_t *job = run("shaped", providers[i], CALL_THEN_ANSWER);
        assert_state(job, "succeeded");
        json_t *want = json_pack("{s:i}", "n", 4);
        char *got = json_dumps(json_object_get(job, "output"), JSON_COMPACT);
        cr_assert(json_equal(json_object_get(job, "output"), want), "%s: %s", providers[i], got);
        free(got);
        json_decref(want);
        json_decref(job);
        cr_assert_eq(fake_server_stat(&D.fake, "tool_calls"), (long)i + 1);
    }
}
