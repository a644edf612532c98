/* test_provider_tools.c -- tool calling and structured outputs, the
 * openai and anthropic plugins against the fake provider server.
 *
 * Each conversation runs as loomd would run it, minus the daemon: the
 * plugin encodes the neutral request, the request goes over HTTP (libcurl)
 * to tests/fake/fake_provider, the plugin decodes the answer; the tool
 * calls it returns are "run" here and their results sent back in the
 * neutral form, until an answer calls no tool. So the plugins' encoding is
 * checked by a server that refuses what the real APIs refuse (a result
 * without its call, a call without its result), and the fake's scripts
 * are checked by the plugins that read them. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom/plugin.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/http_common.h"
#include "plugins/openai/openai.h"
#include "tests/unit/fake_server.h"

static fake_server srv; /* one per test: Criterion runs each test in its own process */

static void stop(void)
{
    fake_server_stop(&srv);
}

TestSuite(provider_tools, .fini = stop);

/* jansson's type macros, as a value Criterion's cr_assert can take */
static int truth(int x)
{
    return x;
}

/* ---- the host, as far as encode and decode need one */

typedef struct fake_ctx {
    loom_ctx base;
    loom_errcode code;
    char message[512];
} fake_ctx;

static void fake_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    fake_ctx *c = (fake_ctx *)ctx;
    c->code = code;
    vsnprintf(c->message, sizeof c->message, fmt, ap);
}

static void fake_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap) { }
static void fake_retry_after(loom_ctx *ctx, uint64_t ms) { }

static const loom_host_api fake_api = {
    .verror = fake_verror, .vlog = fake_vlog, .retry_after = fake_retry_after,
};

static const loom_provider *provider(const char *name)
{
    const loom_plugin *p = strcmp(name, "openai") == 0 ? loom_builtin_openai_entry()
                                                       : loom_builtin_anthropic_entry();
    return &p->providers[0];
}

/* Starts the fake server with the request log at LOG (NULL: none) and an
 * instance of provider NAME pointed at it. */
static void *start(const char *name, const char *log)
{
    const char *args[] = { "--log", log, NULL };
    char base[128];
    fake_ctx c = { .base.api = &fake_api };
    void *state = NULL;

    cr_assert(getenv("LOOM_BUILDDIR") != NULL, "LOOM_BUILDDIR must point at the build tree");
    cr_assert(eq(int, fake_server_start(&srv, log ? args : NULL), 0));
    json_t *config = json_pack("{s:s, s:s, s:s}", "base_url",
                               fake_server_base_url(&srv, base, sizeof base), "model", "fake-1",
                               "api_key_env", "LOOM_TEST_KEY");
    setenv("LOOM_TEST_KEY", "sk-test", 1);
    cr_assert(eq(int, provider(name)->init(&c.base, NULL, config, &state), 0), "%s", c.message);
    json_decref(config);
    return state;
}

/* ---- one call over HTTP */

typedef struct body_buf {
    char *p;
    size_t len;
} body_buf;

static size_t on_data(char *data, size_t size, size_t n, void *ud)
{
    body_buf *b = ud;
    char *g = realloc(b->p, b->len + size * n + 1);
    cr_assert(g != NULL);
    memcpy(g + b->len, data, size * n);
    b->p = g;
    b->len += size * n;
    b->p[b->len] = '\0';
    return size * n;
}

/* REQ through provider NAME and the fake: 0 with *RES filled, or -1 with
 * the failure in *C. */
static int round_trip(const char *name, void *state, const loom_request *req, loom_result *res,
                      fake_ctx *c)
{
    loom_http_request out = { 0 };
    struct curl_slist *hl = NULL;
    body_buf b = { 0 };
    long status = 0;
    CURL *h = curl_easy_init();
    int rc;

    memset(c, 0, sizeof *c);
    c->base.api = &fake_api;
    memset(res, 0, sizeof *res);
    cr_assert(h != NULL);
    cr_assert(eq(int, provider(name)->encode(&c->base, state, req, &out), 0), "%s", c->message);
    for (size_t i = 0; i < out.nheaders; i++) {
        char line[512];
        snprintf(line, sizeof line, "%s: %s", out.headers[i].name, out.headers[i].value);
        hl = curl_slist_append(hl, line);
    }
    curl_easy_setopt(h, CURLOPT_URL, out.url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, out.body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)out.body_len);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    cr_assert(eq(int, curl_easy_perform(h), CURLE_OK));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    loom_http_response resp = { .status = (int)status, .body = b.p, .body_len = b.len };
    rc = provider(name)->decode(&c->base, state, req, &resp, res);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    free(b.p);
    loom_hc_request_clear(&out);
    return rc;
}

/* ---- a tool conversation, as the engine holds it */

static const char tools_text[] =
    "[{\"name\":\"add\",\"description\":\"a + b\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
    "\"required\":[\"a\",\"b\"]}},"
    "{\"name\":\"upper\",\"parameters\":{\"type\":\"object\",\"properties\":{\"s\":"
    "{\"type\":\"string\"}}}},"
    "{\"name\":\"fails\"}]";

/* The result of tool call CALL (borrowed) as a neutral tool turn: add
 * sums, upper says its argument in capitals, fails fails. */
static json_t *run_tool(json_t *call)
{
    const char *name = json_string_value(json_object_get(call, "name"));
    json_t *args = json_object_get(call, "arguments");
    char text[256];
    int err = 0;

    if (strcmp(name, "add") == 0) {
        snprintf(text, sizeof text, "%lld",
                 (long long)(json_integer_value(json_object_get(args, "a")) +
                             json_integer_value(json_object_get(args, "b"))));
    } else if (strcmp(name, "upper") == 0) {
        snprintf(text, sizeof text, "%s", json_string_value(json_object_get(args, "s")));
        for (char *p = text; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    } else {
        snprintf(text, sizeof text, "{\"code\":\"lambda_failed\"}");
        err = 1;
    }
    return json_pack("{s:s, s:O, s:O, s:s, s:b}", "role", "tool", "tool_call_id",
                     json_object_get(call, "id"), "name", json_object_get(call, "name"),
                     "content", text, "is_error", err);
}

/* Runs PROMPT with the tools through NAME until an answer calls no tool:
 * the final answer's text (a new string); *TURNS the model turns taken,
 * *CALLS the tool calls run. */
static char *converse(const char *name, void *state, const char *prompt, int *turns, int *calls)
{
    json_t *tools = json_loads(tools_text, 0, NULL);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", prompt);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .tools = tools };
    loom_result res;
    fake_ctx c;
    char *answer = NULL;

    *turns = *calls = 0;
    /* a bound, not a tuning: the scripts below take at most 3 turns */
    while (*turns < 10) {
        (*turns)++;
        cr_assert(eq(int, round_trip(name, state, &req, &res, &c), 0), "turn %d: %s", *turns,
                  c.message);
        cr_assert(truth(json_is_string(res.output)));
        if (!res.tool_calls) {
            answer = strdup(json_string_value(res.output));
            json_decref(res.output);
            break;
        }
        json_array_append_new(msgs, json_pack("{s:s, s:O, s:O}", "role", "assistant", "content",
                                              res.output, "tool_calls", res.tool_calls));
        json_t *call;
        size_t i;
        json_array_foreach(res.tool_calls, i, call) {
            json_array_append_new(msgs, run_tool(call));
            (*calls)++;
        }
        json_decref(res.output);
        json_decref(res.tool_calls);
    }
    cr_assert(answer != NULL, "the conversation ended");
    json_decref(msgs);
    json_decref(tools);
    return answer;
}

/* Two turns of calls (two calls at once, then one that fails), then the
 * results as the answer. */
static const char script[] =
    "compute fake-script: ["
    "{\"calls\":[{\"name\":\"add\",\"arguments\":{\"a\":2,\"b\":40}},"
    "{\"name\":\"upper\",\"arguments\":{\"s\":\"loom\"}}],\"text\":\"two at once\"},"
    "{\"calls\":[{\"name\":\"fails\"}]}]";

static void agent(const char *name)
{
    char log[256];
    snprintf(log, sizeof log, "%s/loom-tools-log-XXXXXX", P_tmpdir);
    int fd = mkstemp(log);
    cr_assert(fd >= 0);
    close(fd);
    void *state = start(name, log);
    int turns, calls;
    char *answer = converse(name, state, script, &turns, &calls);

    cr_assert(eq(int, turns, 3));
    cr_assert(eq(int, calls, 3));
    /* the last turn's results reached the model, the failure said as such
     * where the API has no flag for it */
    cr_assert(eq(str, answer, strcmp(name, "openai") == 0 ? "error: {\"code\":\"lambda_failed\"}"
                                                          : "{\"code\":\"lambda_failed\"}"),
              "%s", answer);
    free(answer);
    cr_assert(eq(i64, fake_server_stat(&srv, "tool_calls"), 3));

    /* the request log says which answers called tools */
    FILE *f = fopen(log, "r");
    char *line = NULL;
    size_t cap = 0;
    long seen[3] = { 0 };
    int n = 0;
    cr_assert(f != NULL);
    while (getline(&line, &cap, f) > 0 && n < 3) {
        json_t *j = json_loads(line, 0, NULL);
        seen[n++] = (long)json_integer_value(json_object_get(j, "tool_calls"));
        json_decref(j);
    }
    free(line);
    fclose(f);
    unlink(log);
    cr_assert(eq(int, n, 3));
    cr_assert(eq(long, seen[0], 2));
    cr_assert(eq(long, seen[1], 1));
    cr_assert(eq(long, seen[2], 0));
    provider(name)->fini(state);
}

Test(provider_tools, openai_agent_with_several_calls_per_turn)
{
    agent("openai");
}

Test(provider_tools, anthropic_agent_with_several_calls_per_turn)
{
    agent("anthropic");
}

/* The results of two calls of one turn, in the order of the calls. */
Test(provider_tools, results_of_several_calls_reach_the_model)
{
    static const char *const names[] = { "openai", "anthropic" };
    for (size_t i = 0; i < 2; i++) {
        void *state = start(names[i], NULL);
        int turns, calls;
        char *answer = converse(names[i], state,
                                "fake-script: [{\"calls\":[{\"name\":\"add\",\"arguments\":"
                                "{\"a\":2,\"b\":40}},{\"name\":\"upper\",\"arguments\":"
                                "{\"s\":\"loom\"}}]}]",
                                &turns, &calls);
        cr_assert(eq(int, turns, 2));
        cr_assert(eq(int, calls, 2));
        cr_assert(eq(str, answer, "42\nLOOM"), "%s", names[i]);
        free(answer);
        provider(names[i])->fini(state);
        fake_server_stop(&srv);
    }
}

/* Without a script, the tools offered and not called: the echo. */
Test(provider_tools, tools_offered_but_not_called)
{
    static const char *const names[] = { "openai", "anthropic" };
    for (size_t i = 0; i < 2; i++) {
        void *state = start(names[i], NULL);
        int turns, calls;
        char *answer = converse(names[i], state, "just say this", &turns, &calls);
        cr_assert(eq(int, turns, 1));
        cr_assert(eq(int, calls, 0));
        cr_assert(eq(str, answer, "just say this"));
        free(answer);
        provider(names[i])->fini(state);
        fake_server_stop(&srv);
    }
}

/* Arguments that are not JSON: invalid_output, for both formats. */
Test(provider_tools, bad_json_arguments_are_invalid_output)
{
    static const char *const names[] = { "openai", "anthropic" };
    for (size_t i = 0; i < 2; i++) {
        void *state = start(names[i], NULL);
        json_t *tools = json_loads(tools_text, 0, NULL);
        json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content",
                                 "fake-script: [{\"calls\":[{\"name\":\"add\","
                                 "\"arguments_text\":\"{\\\"a\\\": 2, \\\"b\"}]}]");
        loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .tools = tools };
        loom_result res;
        fake_ctx c;
        cr_assert(eq(int, round_trip(names[i], state, &req, &res, &c), -1));
        cr_assert(eq(int, c.code, LOOM_E_INVALID_OUTPUT), "%s", c.message);
        cr_assert(strstr(c.message, "tool add") != NULL, "%s", c.message);
        cr_assert(res.output == NULL && res.tool_calls == NULL);
        json_decref(msgs);
        json_decref(tools);
        provider(names[i])->fini(state);
        fake_server_stop(&srv);
    }
}

/* A result without its call is refused by the fake, as by the APIs: the
 * plugins' encoding is checked by a server that would notice. */
Test(provider_tools, a_result_without_its_call_is_refused)
{
    static const char *const names[] = { "openai", "anthropic" };
    for (size_t i = 0; i < 2; i++) {
        void *state = start(names[i], NULL);
        json_t *tools = json_loads(tools_text, 0, NULL);
        json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"x\"},"
                                  "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
                                  "{\"id\":\"c1\",\"name\":\"add\",\"arguments\":{}}]},"
                                  "{\"role\":\"tool\",\"tool_call_id\":\"c9\",\"name\":\"add\","
                                  "\"content\":\"3\"}]", 0, NULL);
        loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .tools = tools };
        loom_result res;
        fake_ctx c;
        cr_assert(eq(int, round_trip(names[i], state, &req, &res, &c), -1));
        cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST), "%s", c.message);
        json_decref(msgs);
        json_decref(tools);
        provider(names[i])->fini(state);
        fake_server_stop(&srv);
    }
}

/* ---- structured outputs */

static const char plan_schema[] =
    "{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\",\"maxLength\":5},"
    "\"steps\":{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":3},"
    "\"minItems\":2},\"kind\":{\"enum\":[\"quick\",\"slow\"]},\"done\":{\"type\":\"boolean\"}},"
    "\"required\":[\"title\",\"steps\",\"kind\",\"done\"],\"additionalProperties\":false}";

/* SCHEMA_TEXT asked for through NAME with PROMPT: the output. */
static char *structured(const char *name, const char *schema_text, const char *prompt,
                        loom_errcode *code)
{
    void *state = start(name, NULL);
    json_t *schema = json_loads(schema_text, 0, NULL);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", prompt);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .schema = schema,
                         .schema_name = "plan" };
    loom_result res;
    fake_ctx c;
    char *out = NULL;

    *code = round_trip(name, state, &req, &res, &c) == 0 ? LOOM_OK : c.code;
    if (*code == LOOM_OK) {
        cr_assert(res.tool_calls == NULL);
        out = strdup(json_string_value(res.output));
        json_decref(res.output);
        cr_assert(eq(i64, fake_server_stat(&srv, "structured"), 1));
    }
    json_decref(msgs);
    json_decref(schema);
    provider(name)->fini(state);
    fake_server_stop(&srv);
    return out;
}

Test(provider_tools, structured_outputs_fit_the_schema)
{
    static const char *const names[] = { "openai", "anthropic" };
    loom_errcode code;
    for (size_t i = 0; i < 2; i++) {
        /* made up from the schema by the fake: its strings say the echo */
        char *out = structured(names[i], plan_schema, "hello world", &code);
        cr_assert(eq(int, code, LOOM_OK));
        cr_assert(eq(str, out, "{\"title\":\"hello\",\"steps\":[3,3],\"kind\":\"quick\","
                               "\"done\":true}"), "%s: %s", names[i], out);
        free(out);
        /* a root that is not an object goes wrapped and comes back bare */
        out = structured(names[i], "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}",
                         "fake-script: [{\"answer\": [\"a\", \"b\"]}]", &code);
        cr_assert(eq(int, code, LOOM_OK));
        cr_assert(eq(str, out, "[\"a\",\"b\"]"), "%s: %s", names[i], out);
        free(out);
    }
}

Test(provider_tools, structured_outputs_that_are_not_json)
{
    loom_errcode code;
    /* OpenAI's text goes to the host, whose check says it is not JSON */
    char *out = structured("openai", plan_schema, "fake-script: [{\"answer_text\": \"{oops\"}]",
                           &code);
    cr_assert(eq(int, code, LOOM_OK));
    cr_assert(eq(str, out, "{oops"));
    free(out);
    /* Anthropic's tool input as text that is not JSON: the plugin says so */
    out = structured("anthropic", plan_schema, "fake-script: [{\"answer_text\": \"{oops\"}]",
                     &code);
    cr_assert(eq(int, code, LOOM_E_INVALID_OUTPUT));
    cr_assert(out == NULL);
}
