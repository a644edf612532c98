/* test_provider_stream.c -- the openai and anthropic stream hooks, fed the
 * way loomd feeds them: the body cut into chunks (here at every offset, so
 * events split anywhere), framed by daemon/upstream/sse.c, each event
 * decoded by the plugin, the texts joined and the last count of each kind
 * kept. A streamed answer must give what decode gives for the same answer
 * sent whole: the output and the usage; errors inside a stream must be
 * classed as decode classes them. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"
#include "daemon/upstream/sse.h"
#include "loom/plugin.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/openai/openai.h"

#define TEST_KEY "sk-test-0123456789SECRET"

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

static void *instance(const char *name)
{
    fake_ctx c = { .base.api = &fake_api };
    json_t *config = json_pack("{s:s}", "api_key_env", "LOOM_TEST_KEY");
    void *state = NULL;
    setenv("LOOM_TEST_KEY", TEST_KEY, 1);
    cr_assert(eq(int, provider(name)->init(&c.base, NULL, config, &state), 0), "%s", c.message);
    json_decref(config);
    return state;
}

/* A streamed answer as the host reads it. */
typedef struct streamed {
    const loom_provider *prov;
    void *state;
    loom_request *req;
    fake_ctx ctx;
    sbuf text;
    loom_usage usage;
    char finish[LOOM_FINISH_REASON_MAX]; /* the last reason an event gave */
    int done, failed, events;
} streamed;

static int on_event(void *ud, const char *name, const char *data, size_t len)
{
    streamed *s = ud;
    loom_sse_event ev = { .event = name, .data = data, .data_len = len };
    loom_stream_delta d;
    memset(&d, 0, sizeof d);
    memset(&d.usage, 0xff, sizeof d.usage);
    s->events++;
    if (s->done)
        return 0;
    if (s->prov->stream(&s->ctx.base, s->state, s->req, &ev, &d) < 0) {
        cr_assert(d.text == NULL, "no text from a failed event");
        s->failed = 1;
        return 1;
    }
    if (d.text) {
        cr_assert(eq(int, json_typeof(d.text), JSON_STRING));
        sbuf_add(&s->text, json_string_value(d.text), json_string_length(d.text));
        json_decref(d.text);
    }
    if (d.usage.input_tokens >= 0)
        s->usage.input_tokens = d.usage.input_tokens;
    if (d.usage.output_tokens >= 0)
        s->usage.output_tokens = d.usage.output_tokens;
    if (d.usage.cache_read_tokens >= 0)
        s->usage.cache_read_tokens = d.usage.cache_read_tokens;
    if (d.finish_reason[0])
        memcpy(s->finish, d.finish_reason, sizeof s->finish);
    s->done = d.done;
    return 0;
}

/* BODY streamed by provider NAME, cut once at CUT, into *S. */
static void stream_at(const char *name, void *state, const char *body, size_t cut, streamed *s)
{
    static loom_request req = { .kind = LOOM_CALL_CHAT, .stream = 1 };
    sse_parser p;
    memset(s, 0, sizeof *s);
    s->prov = provider(name);
    s->state = state;
    s->req = &req;
    s->ctx.base.api = &fake_api;
    sbuf_init(&s->text, 0);
    memset(&s->usage, 0xff, sizeof s->usage);
    sse_init(&p, 0);
    if (sse_feed(&p, body, cut, on_event, s) == 0)
        sse_feed(&p, body + cut, strlen(body) - cut, on_event, s);
    sse_fini(&p);
}

/* The whole answer WHOLE decoded by NAME: output, usage and finish reason
 * (into FINISH, LOOM_FINISH_REASON_MAX bytes). */
static json_t *decode_whole(const char *name, void *state, const char *whole, loom_usage *u,
                            char *finish)
{
    loom_request req = { .kind = LOOM_CALL_CHAT };
    loom_http_response resp = { .status = 200, .body = whole, .body_len = strlen(whole) };
    loom_result out = { 0 }; /* as the host zeroes it */
    fake_ctx c = { .base.api = &fake_api };
    cr_assert(eq(int, provider(name)->decode(&c.base, state, &req, &resp, &out), 0), "%s",
              c.message);
    *u = out.usage;
    memcpy(finish, out.finish_reason, LOOM_FINISH_REASON_MAX);
    return out.output;
}

/* STREAM, cut at every offset, gives WHOLE's output and usage. */
static void same_as_whole(const char *name, const char *stream, const char *whole)
{
    void *state = instance(name);
    loom_usage want;
    char finish[LOOM_FINISH_REASON_MAX];
    json_t *out = decode_whole(name, state, whole, &want, finish);
    cr_assert(finish[0] != '\0', "the whole answer says why it ended");
    for (size_t cut = 0; cut <= strlen(stream); cut++) {
        streamed s;
        stream_at(name, state, stream, cut, &s);
        cr_assert(eq(int, s.failed, 0), "cut %zu: %s", cut, s.ctx.message);
        cr_assert(s.done, "cut %zu: the end event was seen", cut);
        cr_assert(eq(str, s.text.p ? s.text.p : "", (char *)json_string_value(out)), "cut %zu",
                  cut);
        cr_assert(eq(i64, s.usage.input_tokens, want.input_tokens), "cut %zu", cut);
        cr_assert(eq(i64, s.usage.output_tokens, want.output_tokens), "cut %zu", cut);
        cr_assert(eq(i64, s.usage.cache_read_tokens, want.cache_read_tokens), "cut %zu", cut);
        cr_assert(eq(str, s.finish, finish), "cut %zu: the same finish reason", cut);
        sbuf_free(&s.text);
    }
    json_decref(out);
    provider(name)->fini(state);
}

/* STREAM fails with CODE, its message holding WHAT. */
static void fails(const char *name, const char *stream, loom_errcode code, const char *what)
{
    void *state = instance(name);
    streamed s;
    stream_at(name, state, stream, strlen(stream) / 2, &s);
    cr_assert(s.failed, "the stream failed");
    cr_assert(eq(int, s.ctx.code, code), "%s", s.ctx.message);
    cr_assert(strstr(s.ctx.message, what) != NULL, "%s", s.ctx.message);
    cr_assert(strstr(s.ctx.message, TEST_KEY) == NULL);
    sbuf_free(&s.text);
    provider(name)->fini(state);
}

/* ---- openai */

static const char openai_stream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    ": a comment as keep-alive\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo, w\\u00f6rld\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
    "\"usage\":null}\r\n\r\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,"
    "\"total_tokens\":16,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n"
    "data: [DONE]\n\n";

static const char openai_whole[] =
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hello, w\\u00f6rld\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16,"
    "\"prompt_tokens_details\":{\"cached_tokens\":8}}}";

Test(openai_stream, same_output_and_usage_as_whole_with_usage_in_the_last_chunk)
{
    same_as_whole("openai", openai_stream, openai_whole);
}

Test(openai_stream, encode_asks_for_a_stream_with_usage_only_when_told)
{
    void *state = instance("openai");
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    for (int stream = 0; stream < 2; stream++) {
        loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m", .messages = msgs,
                             .stream = stream };
        loom_http_request out = { 0 };
        fake_ctx c = { .base.api = &fake_api };
        cr_assert(eq(int, provider("openai")->encode(&c.base, state, &req, &out), 0));
        json_t *body = json_loadb(out.body, out.body_len, 0, NULL);
        cr_assert(body != NULL);
        cr_assert(eq(int, json_is_true(json_object_get(body, "stream")), stream));
        cr_assert(eq(int, json_is_true(json_object_get(json_object_get(body, "stream_options"),
                                                       "include_usage")), stream));
        json_decref(body);
        free(out.method);
        free(out.url);
        free(out.body);
        for (size_t i = 0; i < out.nheaders; i++) {
            free((char *)out.headers[i].name);
            free((char *)out.headers[i].value);
        }
        free(out.headers);
    }
    json_decref(msgs);
    provider("openai")->fini(state);
}

Test(openai_stream, an_error_mid_stream_is_classed)
{
    fails("openai",
          "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"
          "data: {\"error\":{\"message\":\"The server had an error (key " TEST_KEY ")\","
          "\"type\":\"server_error\"}}\n\n",
          LOOM_E_UPSTREAM, "The server had an error");
    fails("openai",
          "data: {\"error\":{\"message\":\"You exceeded your quota\",\"type\":\"insufficient_quota\","
          "\"code\":\"insufficient_quota\"}}\n\n",
          LOOM_E_QUOTA, "exceeded your quota");
}

Test(openai_stream, refusal_and_content_filter_fail_as_in_decode)
{
    fails("openai",
          "data: {\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't\"}}]}\n\n",
          LOOM_E_INVALID_OUTPUT, "refused");
    fails("openai",
          "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\n",
          LOOM_E_INVALID_OUTPUT, "content filter");
}

Test(openai_stream, an_event_that_is_not_json_is_upstream)
{
    fails("openai", "data: {\"choices\":[\n\n", LOOM_E_UPSTREAM, "not a JSON object");
}

Test(openai_stream, a_stream_without_its_end_is_not_done)
{
    void *state = instance("openai");
    streamed s;
    const char *cut = strstr(openai_stream, "data: [DONE]");
    char *body = strndup(openai_stream, (size_t)(cut - openai_stream));
    stream_at("openai", state, body, 10, &s);
    cr_assert(eq(int, s.failed, 0));
    cr_assert(eq(int, s.done, 0), "no [DONE]: the host fails it as upstream");
    free(body);
    sbuf_free(&s.text);
    provider("openai")->fini(state);
}

/* ---- anthropic */

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,"
    "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\", world\"}}\r\n\r\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static const char anthropic_whole[] =
    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
    "\"text\":\"Hello, world\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":25,"
    "\"cache_read_input_tokens\":100,\"output_tokens\":15}}";

Test(anthropic_stream, same_output_and_usage_as_whole)
{
    same_as_whole("anthropic", anthropic_stream, anthropic_whole);
}

Test(anthropic_stream, an_error_event_is_classed_as_decode_classes_it)
{
    fails("anthropic",
          "event: content_block_delta\n"
          "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
          "\"text\":\"Hel\"}}\n\n"
          "event: error\n"
          "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
          "\"Overloaded\"}}\n\n",
          LOOM_E_UPSTREAM, "Overloaded");
    fails("anthropic",
          "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
          "\"message\":\"bad\"}}\n\n",
          LOOM_E_INVALID_REQUEST, "bad");
}

Test(anthropic_stream, a_refusal_fails_as_in_decode)
{
    fails("anthropic",
          "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
          "\"refusal\"},\"usage\":{\"output_tokens\":2}}\n\n",
          LOOM_E_INVALID_OUTPUT, "refused");
}

Test(anthropic_stream, thinking_deltas_are_not_the_answer)
{
    void *state = instance("anthropic");
    streamed s;
    stream_at("anthropic", state,
              "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
              "\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n"
              "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,"
              "\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n"
              "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
              5, &s);
    cr_assert(eq(int, s.failed, 0));
    cr_assert(eq(int, s.done, 1));
    cr_assert(eq(str, s.text.p, "42"));
    sbuf_free(&s.text);
    provider("anthropic")->fini(state);
}

Test(anthropic_stream, encode_asks_for_a_stream_only_when_told)
{
    void *state = instance("anthropic");
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    for (int stream = 0; stream < 2; stream++) {
        loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m", .messages = msgs,
                             .stream = stream };
        loom_http_request out = { 0 };
        fake_ctx c = { .base.api = &fake_api };
        cr_assert(eq(int, provider("anthropic")->encode(&c.base, state, &req, &out), 0));
        json_t *body = json_loadb(out.body, out.body_len, 0, NULL);
        cr_assert(eq(int, json_is_true(json_object_get(body, "stream")), stream));
        json_decref(body);
        free(out.method);
        free(out.url);
        free(out.body);
        for (size_t i = 0; i < out.nheaders; i++) {
            free((char *)out.headers[i].name);
            free((char *)out.headers[i].value);
        }
        free(out.headers);
    }
    json_decref(msgs);
    provider("anthropic")->fini(state);
}

/* ---- tool calls (ABI 2.3): a call with tools is asked for whole, so tool
 * calls in a stream come from a server that streamed regardless; read as
 * text they would be lost, so the stream fails instead */

Test(openai_stream, tool_calls_in_a_stream_fail)
{
    fails("openai",
          "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n"
          "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\","
          "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
          LOOM_E_UPSTREAM, "tool calls");
}

Test(anthropic_stream, a_tool_use_in_a_stream_fails)
{
    fails("anthropic",
          "event: content_block_start\n"
          "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
          "\"text\",\"text\":\"\"}}\n\n"
          "event: content_block_start\n"
          "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
          "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
          LOOM_E_UPSTREAM, "tool call");
}
