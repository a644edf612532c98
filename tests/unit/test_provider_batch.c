/* test_provider_batch.c -- the openai and anthropic providers' Batch API
 * hooks (ABI 2.4) on canned requests and answers.
 *
 * Every step of both APIs is encoded and checked field by field, and its
 * answers decoded: the provider's documented shapes, and the error
 * answers a step can get (429 with a wait, 5xx, 400). The round trip
 * holds the contract together: a request written by batch_line, answered
 * in a result line that wraps the answer the direct endpoint gave, reads
 * back through batch_result exactly as decode reads the direct answer. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/http_common.h"
#include "plugins/openai/openai.h"

#define TEST_KEY "sk-test-0123456789SECRET"
#define BASE "http://fake.test:8080/v1"
#define NAME "loom-01JABCDEFGHJKMNPQRSTVWXYZ0"

/* ---- the fake host */

typedef struct fake_ctx {
    loom_ctx base;
    loom_errcode code;
    char message[512];
    int64_t retry_ms;            /* -1: retry_after not called */
} fake_ctx;

static void fake_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    fake_ctx *c = (fake_ctx *)ctx;

    c->code = code;
    vsnprintf(c->message, sizeof c->message, fmt, ap);
}

static void fake_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    char line[512];

    (void)ctx;
    (void)level;
    vsnprintf(line, sizeof line, fmt, ap);
    cr_assert(strstr(line, TEST_KEY) == NULL, "the key was logged");
}

static void fake_retry_after(loom_ctx *ctx, uint64_t ms)
{
    ((fake_ctx *)ctx)->retry_ms = (int64_t)ms;
}

static const loom_host_api fake_api = {
    .verror = fake_verror, .vlog = fake_vlog, .retry_after = fake_retry_after,
};

static void ctx_reset(fake_ctx *c)
{
    memset(c, 0, sizeof *c);
    c->base.api = &fake_api;
    c->retry_ms = -1;
}

static int truth(int x)
{
    return x != 0;
}

static const loom_provider *provider(const char *name)
{
    const loom_plugin *p = strcmp(name, "openai") == 0 ? loom_builtin_openai_entry()
                                                       : loom_builtin_anthropic_entry();
    cr_assert(eq(sz, p->nproviders, 1));
    return &p->providers[0];
}

/* An instance of provider NAME at BASE with the test key. */
static void *instance(const char *name)
{
    fake_ctx c;
    json_t *config = json_pack("{s:s, s:s, s:s}", "base_url", BASE, "api_key_env",
                               "LOOM_TEST_KEY", "model", "m1");
    void *state = NULL;

    cr_assert(config != NULL);
    setenv("LOOM_TEST_KEY", TEST_KEY, 1);
    ctx_reset(&c);
    cr_assert(eq(int, provider(name)->init(&c.base, NULL, config, &state), 0), "%s", c.message);
    json_decref(config);
    return state;
}

static const char *req_header(const loom_http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* R's body as JSON (a new reference; the test fails when it is not). */
static json_t *body_of(const loom_http_request *r)
{
    json_t *v = json_loadb(r->body, r->body_len, 0, NULL);

    cr_assert(v != NULL, "body is not JSON: %.*s", (int)r->body_len, r->body);
    return v;
}

/* The key is in header NAME and in no URL, body or other header. */
static void assert_key_only_in(const loom_http_request *r, const char *name)
{
    cr_assert(strstr(r->url, TEST_KEY) == NULL);
    cr_assert(truth(!r->body || !memmem(r->body, r->body_len, TEST_KEY, strlen(TEST_KEY))));
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) != 0)
            cr_assert(strstr(r->headers[i].value, TEST_KEY) == NULL);
    cr_assert(req_header(r, name) && strstr(req_header(r, name), TEST_KEY));
}

/* Encodes OP with provider PROV; asserts the result code WANT. */
static void encode(const char *prov, void *st, const loom_batch_op *op, int want,
                   loom_http_request *out, fake_ctx *c)
{
    int rc;

    memset(out, 0, sizeof *out);
    ctx_reset(c);
    rc = provider(prov)->batch_encode(&c->base, st, op, out);
    cr_assert(eq(int, rc, want), "step %d: %s", (int)op->step, c->message);
}

/* Decodes BODY (status STATUS, one optional header H: V) as the answer to
 * OP into *INFO (prepared as the host prepares it). Returns the hook's
 * result. */
static int decode(const char *prov, void *st, const loom_batch_op *op, int status,
                  const char *body, const char *h, const char *v, loom_batch_info *info,
                  fake_ctx *c)
{
    loom_header hdr = { h, v };
    loom_http_response resp = {
        .status = status, .headers = h ? &hdr : NULL, .nheaders = h ? 1 : 0,
        .body = body, .body_len = body ? strlen(body) : 0,
    };

    memset(info, 0, sizeof *info);
    info->total = info->done = info->failed = -1;
    ctx_reset(c);
    return provider(prov)->batch_decode(&c->base, st, op, &resp, info);
}

/* A chat request saying "hi" with a temperature, asking for JSON, and the
 * stream flag set (a batch line must drop it). */
typedef struct chat_req {
    loom_request req;
    json_t *messages, *params;
} chat_req;

static void chat_req_init(chat_req *r)
{
    r->messages = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content", "Be brief.",
                            "role", "user", "content", "hi\nthere");
    r->params = json_pack("{s:f, s:i}", "temperature", 0.5, "max_tokens", 40);
    cr_assert(r->messages && r->params);
    memset(&r->req, 0, sizeof r->req);
    r->req.kind = LOOM_CALL_CHAT;
    r->req.messages = r->messages;
    r->req.params = r->params;
    r->req.stream = 1;
}

static void chat_req_fini(chat_req *r)
{
    json_decref(r->messages);
    json_decref(r->params);
}

/* The body encode sends for REQ, without streaming: what a line carries. */
static json_t *direct_body(const char *prov, void *st, const loom_request *req)
{
    loom_request one = *req;
    loom_http_request out = { 0 };
    fake_ctx c;
    json_t *v;

    one.stream = 0;
    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->encode(&c.base, st, &one, &out), 0), "%s", c.message);
    v = body_of(&out);
    loom_hc_request_clear(&out);
    return v;
}

/* batch_line of REQ under ID: the line parsed (a new reference). */
static json_t *line_of(const char *prov, void *st, const loom_request *req, const char *id)
{
    char *line = NULL;
    size_t len = 0;
    fake_ctx c;
    json_t *v;

    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->batch_line(&c.base, st, req, id, &line, &len), 0), "%s",
              c.message);
    cr_assert(eq(sz, len, strlen(line)));
    cr_assert(memchr(line, '\n', len) == NULL, "a line holds a newline: %s", line);
    v = json_loadb(line, len, 0, NULL);
    cr_assert(v != NULL, "%s", line);
    free(line);
    return v;
}

/* batch_line of REQ fails with CODE. */
static void line_refused(const char *prov, void *st, const loom_request *req, const char *id,
                         loom_errcode code)
{
    char *line = NULL;
    size_t len = 0;
    fake_ctx c;

    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->batch_line(&c.base, st, req, id, &line, &len), -1));
    cr_assert(line == NULL);
    cr_assert(eq(int, (int)c.code, (int)code), "%s", c.message);
}

/* decode of the direct answer BODY (status 200) to REQ, and batch_result
 * of LINE (a result line wrapping the same answer) must agree in every
 * member: output, usage, finish reason, tool calls. */
static void same_as_direct(const char *prov, void *st, const loom_request *req,
                           const char *body, const char *line)
{
    loom_http_response resp = { .status = 200, .body = body, .body_len = strlen(body) };
    loom_result direct = { 0 }, batched;
    fake_ctx c;

    direct.usage = LOOM_USAGE_UNKNOWN;
    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->decode(&c.base, st, req, &resp, &direct), 0), "%s",
              c.message);
    /* garbage in every member: batch_result must set each */
    memset(&batched, 0x5a, sizeof batched);
    batched.output = batched.tool_calls = NULL;
    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->batch_result(&c.base, st, req, line, strlen(line),
                                                   &batched), 0), "%s", c.message);
    cr_assert(direct.output != NULL);
    cr_assert(truth(json_equal(direct.output, batched.output)), "direct %s, batched %s",
              json_dumps(direct.output, JSON_ENCODE_ANY),
              json_dumps(batched.output, JSON_ENCODE_ANY));
    cr_assert(eq(i64, batched.usage.input_tokens, direct.usage.input_tokens));
    cr_assert(eq(i64, batched.usage.output_tokens, direct.usage.output_tokens));
    cr_assert(eq(i64, batched.usage.cache_read_tokens, direct.usage.cache_read_tokens));
    cr_assert(eq(i64, batched.usage.cache_write_tokens, direct.usage.cache_write_tokens));
    cr_assert(eq(str, batched.finish_reason, direct.finish_reason));
    cr_assert(truth(direct.tool_calls ? json_equal(direct.tool_calls, batched.tool_calls)
                                      : batched.tool_calls == NULL));
    json_decref(direct.output);
    json_decref(direct.tool_calls);
    json_decref(batched.output);
    json_decref(batched.tool_calls);
}

/* batch_result of LINE fails with CODE and a message holding SAYS. */
static void result_fails(const char *prov, void *st, const loom_request *req, const char *line,
                         loom_errcode code, const char *says)
{
    loom_result res;
    fake_ctx c;

    memset(&res, 0, sizeof res);
    ctx_reset(&c);
    cr_assert(eq(int, provider(prov)->batch_result(&c.base, st, req, line, strlen(line), &res),
                 -1), "%s", line);
    cr_assert(res.output == NULL && res.tool_calls == NULL);
    cr_assert(eq(int, (int)c.code, (int)code), "%s: %s", line, c.message);
    cr_assert(strncmp(c.message, prov, strlen(prov)) == 0, "%s", c.message);
    cr_assert(strstr(c.message, says) != NULL, "%s lacks %s", c.message, says);
    cr_assert(strstr(c.message, TEST_KEY) == NULL);
}

/* ---- the descriptors */

Test(provider_batch, both_declare_the_hooks_and_limits)
{
    const loom_provider *o = provider("openai"), *a = provider("anthropic");

    cr_assert(o->batch_line && o->batch_encode && o->batch_decode && o->batch_result);
    cr_assert(a->batch_line && a->batch_encode && a->batch_decode && a->batch_result);
    cr_assert(eq(sz, o->batch_max_lines, 50000));
    cr_assert(eq(sz, o->batch_max_bytes, 200000000));
    cr_assert(eq(sz, a->batch_max_lines, 100000));
    cr_assert(eq(sz, a->batch_max_bytes, 256000000));
    cr_assert(eq(u32, loom_builtin_openai_entry()->abi_minor, 4));
}

/* ---- openai: lines */

Test(provider_batch, openai_line_is_the_direct_body)
{
    void *st = instance("openai");
    chat_req r;
    json_t *line, *want;

    chat_req_init(&r);
    r.req.json_mode = 1;
    line = line_of("openai", st, &r.req, "job1_n2-3");
    want = direct_body("openai", st, &r.req);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(line, "custom_id")),
                 "job1_n2-3"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(line, "method")), "POST"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(line, "url")),
                 "/v1/chat/completions"));
    cr_assert(truth(json_equal(json_object_get(line, "body"), want)), "%s vs %s",
              json_dumps(json_object_get(line, "body"), JSON_COMPACT),
              json_dumps(want, JSON_COMPACT));
    /* the stream flag is dropped: a batch's answers are files */
    cr_assert(json_object_get(json_object_get(line, "body"), "stream") == NULL);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(line, "body"),
                                                                "model")), "m1"));
    json_decref(line);
    json_decref(want);
    chat_req_fini(&r);
    provider("openai")->fini(st);
}

Test(provider_batch, openai_line_embed)
{
    void *st = instance("openai");
    json_t *inputs = json_pack("[s, s]", "a", "b"), *line;
    loom_request req = { .kind = LOOM_CALL_EMBED, .model = "emb-1", .inputs = inputs };

    line = line_of("openai", st, &req, "e1");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(line, "url")),
                 "/v1/embeddings"));
    cr_assert(truth(json_equal(json_object_get(json_object_get(line, "body"), "input"),
                               inputs)));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(line, "body"),
                                                                "model")), "emb-1"));
    json_decref(line);
    json_decref(inputs);
    provider("openai")->fini(st);
}

Test(provider_batch, lines_refused)
{
    const char *provs[] = { "openai", "anthropic" };

    for (int i = 0; i < 2; i++) {
        void *st = instance(provs[i]);
        json_t *tools = json_pack("[{s:s, s:{s:s}}]", "name", "lookup", "parameters", "type",
                                  "object");
        chat_req r;
        char long_id[80];

        chat_req_init(&r);
        memset(long_id, 'a', 65);
        long_id[65] = '\0';
        line_refused(provs[i], st, &r.req, "bad id", LOOM_E_INVALID_REQUEST);
        line_refused(provs[i], st, &r.req, "", LOOM_E_INVALID_REQUEST);
        line_refused(provs[i], st, &r.req, long_id, LOOM_E_INVALID_REQUEST);
        long_id[64] = '\0';
        json_decref(line_of(provs[i], st, &r.req, long_id));
        /* a conversation with tools needs its answers one by one */
        r.req.tools = tools;
        line_refused(provs[i], st, &r.req, "x1", LOOM_E_INVALID_REQUEST);
        /* a request encode refuses is refused as a line too */
        r.req.tools = NULL;
        r.req.messages = NULL;
        line_refused(provs[i], st, &r.req, "x1", LOOM_E_INVALID_REQUEST);
        json_decref(tools);
        chat_req_fini(&r);
        provider(provs[i])->fini(st);
    }
}

/* ---- openai: the steps */

Test(provider_batch, openai_upload)
{
    void *st = instance("openai");
    static const char lines[] = "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b\"}\n";
    loom_batch_op op = { .step = LOOM_BATCH_UPLOAD, .kind = LOOM_CALL_CHAT, .model = "m1",
                         .name = NAME, .lines = lines, .lines_len = sizeof lines - 1 };
    loom_http_request out;
    loom_batch_info info;
    const char *type;
    char want[1024];
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, BASE "/files"));
    assert_key_only_in(&out, "authorization");
    type = req_header(&out, "content-type");
    cr_assert(type && strncmp(type, "multipart/form-data; boundary=", 30) == 0, "%s", type);
    /* the body, byte for byte: purpose, then the file, then the end */
    snprintf(want, sizeof want,
             "--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" NAME
             ".jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n%s\r\n--%s--\r\n",
             type + 30, type + 30, lines, type + 30);
    cr_assert(eq(sz, out.body_len, strlen(want)));
    cr_assert(memcmp(out.body, want, out.body_len) == 0, "%.*s", (int)out.body_len, out.body);
    loom_hc_request_clear(&out);

    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"id\":\"file-abc123\",\"object\":\"file\",\"bytes\":36,"
                             "\"filename\":\"" NAME ".jsonl\",\"purpose\":\"batch\"}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(str, info.id, "file-abc123"));
    /* an answer without an id cannot be created from */
    cr_assert(eq(int, decode("openai", st, &op, 200, "{\"object\":\"file\"}", NULL, NULL,
                             &info, &c), -1));
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM));
    provider("openai")->fini(st);
}

Test(provider_batch, openai_upload_boundary_not_in_the_lines)
{
    void *st = instance("openai");
    static const char lines[] =
        "{\"custom_id\":\"a\",\"body\":\"--loom-batch-boundary-0 and loom-batch-boundary-1\"}\n";
    loom_batch_op op = { .step = LOOM_BATCH_UPLOAD, .name = NAME, .lines = lines,
                         .lines_len = sizeof lines - 1 };
    loom_http_request out;
    const char *type, *b;
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    type = req_header(&out, "content-type");
    b = strstr(type, "boundary=") + 9;
    cr_assert(strstr(lines, b) == NULL, "boundary %s occurs in the lines", b);
    cr_assert(memmem(out.body, out.body_len, lines, sizeof lines - 1) != NULL);
    loom_hc_request_clear(&out);
    provider("openai")->fini(st);
}

Test(provider_batch, openai_find_upload)
{
    void *st = instance("openai");
    loom_batch_op op = { .step = LOOM_BATCH_FIND_UPLOAD, .name = NAME };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, BASE "/files?purpose=batch"));
    cr_assert(out.body == NULL);
    assert_key_only_in(&out, "authorization");
    loom_hc_request_clear(&out);

    /* the newest of the files of that name; others are not it */
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"object\":\"list\",\"data\":["
                             "{\"id\":\"file-other\",\"filename\":\"loom-x.jsonl\","
                             "\"purpose\":\"batch\",\"created_at\":300},"
                             "{\"id\":\"file-old\",\"filename\":\"" NAME ".jsonl\","
                             "\"purpose\":\"batch\",\"created_at\":100},"
                             "{\"id\":\"file-new\",\"filename\":\"" NAME ".jsonl\","
                             "\"purpose\":\"batch\",\"created_at\":200},"
                             "{\"id\":\"file-ft\",\"filename\":\"" NAME ".jsonl\","
                             "\"purpose\":\"fine-tune\",\"created_at\":400}]}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(str, info.id, "file-new"));
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"object\":\"list\",\"data\":[{\"id\":\"file-other\","
                             "\"filename\":\"x.jsonl\",\"purpose\":\"batch\"}]}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(str, info.id, ""));
    cr_assert(eq(int, decode("openai", st, &op, 200, "{\"data\":[]}", NULL, NULL, &info, &c),
                 0));
    cr_assert(eq(str, info.id, ""));
    provider("openai")->fini(st);
}

Test(provider_batch, openai_create)
{
    void *st = instance("openai");
    loom_batch_op op = { .step = LOOM_BATCH_CREATE, .kind = LOOM_CALL_CHAT, .model = "m1",
                         .name = NAME, .file_id = "file-abc123", .deadline_ms = 3600000 };
    loom_http_request out;
    loom_batch_info info;
    json_t *body;
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, BASE "/batches"));
    cr_assert(eq(str, (char *)req_header(&out, "content-type"), "application/json"));
    assert_key_only_in(&out, "authorization");
    body = body_of(&out);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "input_file_id")),
                 "file-abc123"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "endpoint")),
                 "/v1/chat/completions"));
    /* the only window the API accepts, whatever was asked */
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "completion_window")),
                 "24h"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(
                          json_object_get(body, "metadata"), "loom_batch")), NAME));
    json_decref(body);
    loom_hc_request_clear(&out);

    op.kind = LOOM_CALL_EMBED;
    encode("openai", st, &op, 0, &out, &c);
    body = body_of(&out);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "endpoint")),
                 "/v1/embeddings"));
    json_decref(body);
    loom_hc_request_clear(&out);

    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"id\":\"batch_abc\",\"object\":\"batch\",\"status\":\"validating\","
                             "\"input_file_id\":\"file-abc123\",\"output_file_id\":null,"
                             "\"error_file_id\":null,\"request_counts\":{\"total\":0,"
                             "\"completed\":0,\"failed\":0},\"metadata\":{\"loom_batch\":\"" NAME
                             "\"}}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(str, info.id, "batch_abc"));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cr_assert(eq(str, info.results, ""));
    cr_assert(eq(str, info.errors, ""));

    /* a file id that is not one cannot be put in a request */
    op.file_id = "../files";
    encode("openai", st, &op, -1, &out, &c);
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST));
    op.file_id = NULL;
    encode("openai", st, &op, -1, &out, &c);
    provider("openai")->fini(st);
}

Test(provider_batch, openai_find)
{
    void *st = instance("openai");
    loom_batch_op op = { .step = LOOM_BATCH_FIND, .name = NAME };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, BASE "/batches?limit=100"));
    assert_key_only_in(&out, "authorization");
    loom_hc_request_clear(&out);

    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"object\":\"list\",\"data\":["
                             "{\"id\":\"batch_2\",\"status\":\"in_progress\","
                             "\"metadata\":{\"loom_batch\":\"loom-other\"}},"
                             "{\"id\":\"batch_3\",\"status\":\"completed\",\"metadata\":null},"
                             "{\"id\":\"batch_1\",\"status\":\"in_progress\","
                             "\"request_counts\":{\"total\":4,\"completed\":1,\"failed\":0},"
                             "\"metadata\":{\"loom_batch\":\"" NAME "\"}}],\"has_more\":false}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(str, info.id, "batch_1"));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cr_assert(eq(i64, info.total, 4));
    cr_assert(eq(i64, info.done, 1));
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"object\":\"list\",\"data\":[{\"id\":\"batch_2\",\"status\":"
                             "\"completed\",\"metadata\":{\"loom_batch\":\"loom-other\"}}]}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(str, info.id, ""));
    provider("openai")->fini(st);
}

Test(provider_batch, openai_retrieve_states)
{
    void *st = instance("openai");
    loom_batch_op op = { .step = LOOM_BATCH_RETRIEVE, .batch_id = "batch_abc" };
    static const struct {
        const char *status;
        loom_batch_state state;
    } rows[] = {
        { "validating", LOOM_BATCH_RUNNING }, { "in_progress", LOOM_BATCH_RUNNING },
        { "finalizing", LOOM_BATCH_RUNNING }, { "cancelling", LOOM_BATCH_RUNNING },
        { "completed", LOOM_BATCH_ENDED },    { "expired", LOOM_BATCH_EXPIRED },
        { "cancelled", LOOM_BATCH_CANCELLED }, { "failed", LOOM_BATCH_FAILED },
        { "some_new_status", LOOM_BATCH_RUNNING },
    };
    loom_http_request out;
    loom_batch_info info;
    char body[512];
    fake_ctx c;

    encode("openai", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, BASE "/batches/batch_abc"));
    assert_key_only_in(&out, "authorization");
    loom_hc_request_clear(&out);

    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(body, sizeof body,
                 "{\"id\":\"batch_abc\",\"status\":\"%s\",\"output_file_id\":\"file-out\","
                 "\"error_file_id\":\"file-err\",\"request_counts\":{\"total\":10,"
                 "\"completed\":6,\"failed\":2}}", rows[i].status);
        cr_assert(eq(int, decode("openai", st, &op, 200, body, NULL, NULL, &info, &c), 0),
                  "%s: %s", rows[i].status, c.message);
        cr_assert(eq(int, (int)info.state, (int)rows[i].state), "%s", rows[i].status);
        cr_assert(eq(i64, info.total, 10));
        cr_assert(eq(i64, info.done, 8));
        cr_assert(eq(i64, info.failed, 2));
        cr_assert(eq(str, info.results, "file-out"));
        cr_assert(eq(str, info.errors, "file-err"));
    }
    /* a failed batch says why */
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"id\":\"batch_abc\",\"status\":\"failed\",\"errors\":{\"object\":"
                             "\"list\",\"data\":[{\"code\":\"invalid_json_line\",\"message\":"
                             "\"Line 3 is not valid JSON.\",\"line\":3}]}}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_FAILED));
    cr_assert(strstr(info.message, "invalid_json_line") != NULL, "%s", info.message);
    cr_assert(strstr(info.message, "Line 3 is not valid JSON.") != NULL, "%s", info.message);
    /* counts not given stay unknown */
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"id\":\"batch_abc\",\"status\":\"in_progress\"}", NULL, NULL,
                             &info, &c), 0));
    cr_assert(eq(i64, info.total, -1));
    cr_assert(eq(i64, info.done, -1));
    /* an id that could not be sent back, or no status: the server's fault */
    cr_assert(eq(int, decode("openai", st, &op, 200,
                             "{\"id\":\"../../x\",\"status\":\"completed\"}", NULL, NULL, &info,
                             &c), -1));
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM));
    cr_assert(eq(int, decode("openai", st, &op, 200, "{\"id\":\"batch_abc\"}", NULL, NULL,
                             &info, &c), -1));
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM));
    cr_assert(eq(int, decode("openai", st, &op, 200, "<html>", NULL, NULL, &info, &c), -1));
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM));
    provider("openai")->fini(st);
}

Test(provider_batch, openai_results_and_cancel)
{
    void *st = instance("openai");
    loom_batch_op res = { .step = LOOM_BATCH_RESULTS, .url = "file-out" };
    loom_batch_op cancel = { .step = LOOM_BATCH_CANCEL, .batch_id = "batch_abc" };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    encode("openai", st, &res, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, BASE "/files/file-out/content"));
    assert_key_only_in(&out, "authorization");
    loom_hc_request_clear(&out);
    /* JSONL, not one JSON value: the host reads it */
    cr_assert(eq(int, decode("openai", st, &res, 200, "{\"custom_id\":\"a\"}\n{\"custom_id\":"
                             "\"b\"}\n", NULL, NULL, &info, &c), 0), "%s", c.message);
    res.url = "https://elsewhere.test/x";
    encode("openai", st, &res, -1, &out, &c);
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST));

    encode("openai", st, &cancel, 0, &out, &c);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, BASE "/batches/batch_abc/cancel"));
    cr_assert(out.body == NULL);
    assert_key_only_in(&out, "authorization");
    loom_hc_request_clear(&out);
    cr_assert(eq(int, decode("openai", st, &cancel, 200,
                             "{\"id\":\"batch_abc\",\"status\":\"cancelling\"}", NULL, NULL,
                             &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cancel.batch_id = "";
    encode("openai", st, &cancel, -1, &out, &c);
    provider("openai")->fini(st);
}

/* Every step's error answers, classed as decode classes a direct call's. */
Test(provider_batch, openai_step_errors)
{
    void *st = instance("openai");
    loom_batch_op ops[] = {
        { .step = LOOM_BATCH_UPLOAD, .name = NAME, .lines = "{}\n", .lines_len = 3 },
        { .step = LOOM_BATCH_FIND_UPLOAD, .name = NAME },
        { .step = LOOM_BATCH_CREATE, .name = NAME, .file_id = "file-1" },
        { .step = LOOM_BATCH_FIND, .name = NAME },
        { .step = LOOM_BATCH_RETRIEVE, .batch_id = "batch_1" },
        { .step = LOOM_BATCH_RESULTS, .url = "file-1" },
        { .step = LOOM_BATCH_CANCEL, .batch_id = "batch_1" },
    };
    loom_batch_info info;
    fake_ctx c;

    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const loom_batch_op *op = &ops[i];

        cr_assert(eq(int, decode("openai", st, op, 429,
                                 "{\"error\":{\"message\":\"Rate limit reached\",\"type\":"
                                 "\"requests\",\"code\":\"rate_limit_exceeded\"}}",
                                 "retry-after-ms", "50", &info, &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_RATE_LIMITED), "%zu: %s", i, c.message);
        cr_assert(eq(i64, c.retry_ms, 50));
        cr_assert(eq(int, decode("openai", st, op, 429, "{\"error\":{\"message\":\"x\","
                                 "\"type\":\"insufficient_quota\"}}", NULL, NULL, &info, &c),
                     -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_QUOTA), "%zu: %s", i, c.message);
        cr_assert(eq(int, decode("openai", st, op, 500,
                                 "{\"error\":{\"message\":\"The server had an error\","
                                 "\"type\":\"server_error\"}}", "retry-after", "2", &info, &c),
                     -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM), "%zu: %s", i, c.message);
        cr_assert(eq(i64, c.retry_ms, 2000));
        cr_assert(eq(int, decode("openai", st, op, 503, "Service Unavailable", NULL, NULL, &info,
                                 &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM), "%zu: %s", i, c.message);
        cr_assert(eq(int, decode("openai", st, op, 400,
                                 "{\"error\":{\"message\":\"Invalid file format\",\"type\":"
                                 "\"invalid_request_error\",\"code\":null}}", NULL, NULL, &info,
                                 &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST), "%zu: %s", i, c.message);
        cr_assert(strstr(c.message, "Invalid file format") != NULL, "%s", c.message);
        cr_assert(eq(i64, c.retry_ms, -1));
    }
    provider("openai")->fini(st);
}

/* ---- openai: results */

/* A result line of OpenAI's output file wrapping the answer BODY. */
static char *openai_result_line(const char *id, int status, const char *body)
{
    char *line = NULL;

    cr_assert(asprintf(&line,
                       "{\"id\":\"batch_req_1\",\"custom_id\":\"%s\",\"response\":{"
                       "\"status_code\":%d,\"request_id\":\"req_1\",\"body\":%s},\"error\":null}",
                       id, status, body) > 0);
    return line;
}

Test(provider_batch, openai_round_trip_chat)
{
    void *st = instance("openai");
    static const char answer[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"m1\",\"choices\":[{"
        "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello there.\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
        "\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":4}}}";
    chat_req r;
    json_t *line;
    char *result;

    chat_req_init(&r);
    line = line_of("openai", st, &r.req, "k1");
    result = openai_result_line(json_string_value(json_object_get(line, "custom_id")), 200,
                                answer);
    same_as_direct("openai", st, &r.req, answer, result);
    free(result);
    json_decref(line);
    chat_req_fini(&r);
    provider("openai")->fini(st);
}

Test(provider_batch, openai_round_trip_schema_and_embed)
{
    void *st = instance("openai");
    static const char answer[] =
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"{\\\"label\\\":\\\"spam\\\"}\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5}}";
    static const char vectors[] =
        "{\"object\":\"list\",\"data\":[{\"index\":1,\"embedding\":[0.5,0.25]},"
        "{\"index\":0,\"embedding\":[1.0,2.0]}],\"usage\":{\"prompt_tokens\":4,"
        "\"total_tokens\":4}}";
    json_t *schema = json_pack("{s:s, s:{s:{s:s}}, s:[s], s:b}", "type", "object", "properties",
                               "label", "type", "string", "required", "label",
                               "additionalProperties", 0);
    json_t *inputs = json_pack("[s, s]", "one", "two"), *line, *body;
    loom_request embed = { .kind = LOOM_CALL_EMBED, .inputs = inputs };
    chat_req r;
    char *result;

    chat_req_init(&r);
    r.req.schema = schema;
    r.req.schema_name = "classify";
    line = line_of("openai", st, &r.req, "k2");
    body = json_object_get(line, "body");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(
                          json_object_get(body, "response_format"), "type")), "json_schema"));
    result = openai_result_line("k2", 200, answer);
    same_as_direct("openai", st, &r.req, answer, result);
    free(result);
    json_decref(line);

    result = openai_result_line("k3", 200, vectors);
    same_as_direct("openai", st, &embed, vectors, result);
    free(result);
    json_decref(schema);
    json_decref(inputs);
    chat_req_fini(&r);
    provider("openai")->fini(st);
}

Test(provider_batch, openai_result_errors)
{
    void *st = instance("openai");
    chat_req r;
    char *line;

    chat_req_init(&r);
    /* an error status in the line, as the fake's --batch-fail-every gives */
    line = openai_result_line("k1", 500, "{\"error\":{\"message\":\"The server had an error "
                                         "while processing your request.\",\"type\":"
                                         "\"server_error\"}}");
    result_fails("openai", st, &r.req, line, LOOM_E_UPSTREAM, "server_error");
    free(line);
    line = openai_result_line("k1", 400, "{\"error\":{\"message\":\"max_tokens is too large\","
                                         "\"type\":\"invalid_request_error\"}}");
    result_fails("openai", st, &r.req, line, LOOM_E_INVALID_REQUEST, "max_tokens is too large");
    free(line);
    line = openai_result_line("k1", 429, "{\"error\":{\"message\":\"slow down\",\"type\":"
                                         "\"rate_limit_exceeded\"}}");
    result_fails("openai", st, &r.req, line, LOOM_E_RATE_LIMITED, "slow down");
    free(line);
    /* a 200 whose answer decode would refuse is refused the same way */
    line = openai_result_line("k1", 200, "{\"choices\":[{\"message\":{\"role\":\"assistant\","
                                         "\"content\":null,\"refusal\":\"I can't.\"}}]}");
    result_fails("openai", st, &r.req, line, LOOM_E_INVALID_OUTPUT, "refused");
    free(line);
    result_fails("openai", st, &r.req,
                 "{\"id\":\"batch_req_2\",\"custom_id\":\"k1\",\"response\":null,\"error\":"
                 "{\"code\":\"batch_expired\",\"message\":\"This request could not be executed "
                 "before the completion window expired.\"}}",
                 LOOM_E_UPSTREAM, "expired");
    result_fails("openai", st, &r.req,
                 "{\"custom_id\":\"k1\",\"response\":null,\"error\":{\"code\":"
                 "\"batch_cancelled\",\"message\":\"cancelled\"}}",
                 LOOM_E_UPSTREAM, "cancelled before this line ran");
    result_fails("openai", st, &r.req,
                 "{\"custom_id\":\"k1\",\"response\":null,\"error\":{\"code\":\"weird\","
                 "\"message\":\"odd\"}}", LOOM_E_UPSTREAM, "odd");
    result_fails("openai", st, &r.req, "{\"custom_id\":\"k1\",\"response\":{\"body\":{}}}",
                 LOOM_E_UPSTREAM, "status_code");
    result_fails("openai", st, &r.req, "not json", LOOM_E_UPSTREAM, "not a JSON object");
    chat_req_fini(&r);
    provider("openai")->fini(st);
}

/* ---- anthropic: lines */

Test(provider_batch, anthropic_line_is_the_direct_body)
{
    void *st = instance("anthropic");
    json_t *inputs = json_pack("[s]", "a"), *line, *want;
    loom_request embed = { .kind = LOOM_CALL_EMBED, .inputs = inputs };
    chat_req r;

    chat_req_init(&r);
    line = line_of("anthropic", st, &r.req, "job_7-n1");
    want = direct_body("anthropic", st, &r.req);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(line, "custom_id")),
                 "job_7-n1"));
    cr_assert(truth(json_equal(json_object_get(line, "params"), want)), "%s vs %s",
              json_dumps(json_object_get(line, "params"), JSON_COMPACT),
              json_dumps(want, JSON_COMPACT));
    cr_assert(json_object_get(json_object_get(line, "params"), "stream") == NULL);
    cr_assert(eq(sz, json_object_size(line), 2));
    json_decref(line);
    json_decref(want);
    /* no embeddings on this API */
    line_refused("anthropic", st, &embed, "e1", LOOM_E_INVALID_REQUEST);
    json_decref(inputs);
    chat_req_fini(&r);
    provider("anthropic")->fini(st);
}

/* ---- anthropic: the steps */

Test(provider_batch, anthropic_steps_it_does_not_have)
{
    void *st = instance("anthropic");
    loom_batch_step steps[] = { LOOM_BATCH_UPLOAD, LOOM_BATCH_FIND_UPLOAD, LOOM_BATCH_FIND };
    loom_http_request out;
    fake_ctx c;

    for (size_t i = 0; i < 3; i++) {
        loom_batch_op op = { .step = steps[i], .name = NAME, .lines = "{}\n", .lines_len = 3 };

        encode("anthropic", st, &op, 1, &out, &c);
        cr_assert(out.method == NULL && out.url == NULL && out.nheaders == 0);
    }
    provider("anthropic")->fini(st);
}

Test(provider_batch, anthropic_create_inline)
{
    void *st = instance("anthropic");
    chat_req r;
    json_t *l1, *l2, *body, *want;
    char *s1, *s2, *lines;
    loom_batch_op op = { .step = LOOM_BATCH_CREATE, .kind = LOOM_CALL_CHAT, .model = "m1",
                         .name = NAME, .deadline_ms = 3600000 };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    chat_req_init(&r);
    l1 = line_of("anthropic", st, &r.req, "a1");
    l2 = line_of("anthropic", st, &r.req, "a2");
    s1 = json_dumps(l1, JSON_COMPACT);
    s2 = json_dumps(l2, JSON_COMPACT);
    /* CRLF and a blank line are tolerated, as JSONL readers do */
    cr_assert(asprintf(&lines, "%s\r\n\n%s\n", s1, s2) > 0);
    op.lines = lines;
    op.lines_len = strlen(lines);
    encode("anthropic", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, BASE "/messages/batches"));
    cr_assert(eq(str, (char *)req_header(&out, "content-type"), "application/json"));
    cr_assert(eq(str, (char *)req_header(&out, "anthropic-version"), "2023-06-01"));
    assert_key_only_in(&out, "x-api-key");
    body = body_of(&out);
    want = json_pack("{s:[O, O]}", "requests", l1, l2);
    cr_assert(truth(json_equal(body, want)), "%.*s", (int)out.body_len, out.body);
    cr_assert(eq(sz, out.body_len, strlen(out.body)));
    json_decref(body);
    json_decref(want);
    loom_hc_request_clear(&out);

    cr_assert(eq(int, decode("anthropic", st, &op, 200,
                             "{\"id\":\"msgbatch_01\",\"type\":\"message_batch\","
                             "\"processing_status\":\"in_progress\",\"request_counts\":{"
                             "\"processing\":2,\"succeeded\":0,\"errored\":0,\"canceled\":0,"
                             "\"expired\":0},\"ended_at\":null,\"cancel_initiated_at\":null,"
                             "\"results_url\":null}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(str, info.id, "msgbatch_01"));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cr_assert(eq(i64, info.total, 2));
    cr_assert(eq(i64, info.done, 0));
    cr_assert(eq(str, info.results, ""));

    /* lines that are not one object each, or none at all */
    op.lines = "{\"custom_id\":\"a\"}\n[1]\n";
    op.lines_len = strlen(op.lines);
    encode("anthropic", st, &op, -1, &out, &c);
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST));
    cr_assert(out.body == NULL);
    op.lines = "\n\n";
    op.lines_len = 2;
    encode("anthropic", st, &op, -1, &out, &c);
    free(lines);
    free(s1);
    free(s2);
    json_decref(l1);
    json_decref(l2);
    chat_req_fini(&r);
    provider("anthropic")->fini(st);
}

Test(provider_batch, anthropic_retrieve_states)
{
    void *st = instance("anthropic");
    loom_batch_op op = { .step = LOOM_BATCH_RETRIEVE, .batch_id = "msgbatch_01" };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    encode("anthropic", st, &op, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, BASE "/messages/batches/msgbatch_01"));
    cr_assert(out.body == NULL);
    assert_key_only_in(&out, "x-api-key");
    cr_assert(req_header(&out, "anthropic-version") != NULL);
    loom_hc_request_clear(&out);

    cr_assert(eq(int, decode("anthropic", st, &op, 200,
                             "{\"id\":\"msgbatch_01\",\"processing_status\":\"ended\","
                             "\"request_counts\":{\"processing\":0,\"succeeded\":7,\"errored\":2,"
                             "\"canceled\":0,\"expired\":0},\"cancel_initiated_at\":null,"
                             "\"results_url\":\"" BASE "/messages/batches/msgbatch_01/results\"}",
                             NULL, NULL, &info, &c), 0), "%s", c.message);
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_ENDED));
    cr_assert(eq(i64, info.total, 9));
    cr_assert(eq(i64, info.done, 9));
    cr_assert(eq(i64, info.failed, 2));
    cr_assert(eq(str, info.results, BASE "/messages/batches/msgbatch_01/results"));
    cr_assert(eq(str, info.errors, ""));

    cr_assert(eq(int, decode("anthropic", st, &op, 200,
                             "{\"id\":\"msgbatch_01\",\"processing_status\":\"ended\","
                             "\"request_counts\":{\"processing\":0,\"succeeded\":5,\"errored\":0,"
                             "\"canceled\":0,\"expired\":5},\"cancel_initiated_at\":null,"
                             "\"results_url\":\"" BASE "/r\"}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_EXPIRED));
    cr_assert(eq(i64, info.failed, 5));

    cr_assert(eq(int, decode("anthropic", st, &op, 200,
                             "{\"id\":\"msgbatch_01\",\"processing_status\":\"ended\","
                             "\"request_counts\":{\"processing\":0,\"succeeded\":1,\"errored\":0,"
                             "\"canceled\":3,\"expired\":0},"
                             "\"cancel_initiated_at\":\"2026-12-03T10:00:00Z\","
                             "\"results_url\":\"" BASE "/r\"}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_CANCELLED));

    cr_assert(eq(int, decode("anthropic", st, &op, 200,
                             "{\"id\":\"msgbatch_01\",\"processing_status\":\"canceling\","
                             "\"request_counts\":{\"processing\":3,\"succeeded\":1,\"errored\":0,"
                             "\"canceled\":0,\"expired\":0},"
                             "\"cancel_initiated_at\":\"2026-12-03T10:00:00Z\"}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cr_assert(eq(i64, info.done, 1));

    cr_assert(eq(int, decode("anthropic", st, &op, 200, "{\"type\":\"message_batch\"}", NULL,
                             NULL, &info, &c), -1));
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM));
    op.batch_id = "msgbatch 01";
    encode("anthropic", st, &op, -1, &out, &c);
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST));
    provider("anthropic")->fini(st);
}

Test(provider_batch, anthropic_results_and_cancel)
{
    void *st = instance("anthropic");
    loom_batch_op res = { .step = LOOM_BATCH_RESULTS,
                          .url = "https://api.example.test/v1/messages/batches/msgbatch_01/"
                                 "results" };
    loom_batch_op cancel = { .step = LOOM_BATCH_CANCEL, .batch_id = "msgbatch_01" };
    loom_http_request out;
    loom_batch_info info;
    fake_ctx c;

    encode("anthropic", st, &res, 0, &out, &c);
    cr_assert(eq(str, out.method, "GET"));
    cr_assert(eq(str, out.url, (char *)res.url));
    assert_key_only_in(&out, "x-api-key");
    loom_hc_request_clear(&out);
    cr_assert(eq(int, decode("anthropic", st, &res, 200, "{\"custom_id\":\"a\"}\n", NULL, NULL,
                             &info, &c), 0));
    res.url = "/v1/messages/batches/msgbatch_01/results";
    encode("anthropic", st, &res, -1, &out, &c);
    cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST));
    res.url = "https://api.example.test/a b";
    encode("anthropic", st, &res, -1, &out, &c);

    encode("anthropic", st, &cancel, 0, &out, &c);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, BASE "/messages/batches/msgbatch_01/cancel"));
    assert_key_only_in(&out, "x-api-key");
    loom_hc_request_clear(&out);
    cr_assert(eq(int, decode("anthropic", st, &cancel, 200,
                             "{\"id\":\"msgbatch_01\",\"processing_status\":\"canceling\"}",
                             NULL, NULL, &info, &c), 0));
    cr_assert(eq(int, (int)info.state, (int)LOOM_BATCH_RUNNING));
    cr_assert(eq(i64, info.total, -1));
    provider("anthropic")->fini(st);
}

Test(provider_batch, anthropic_step_errors)
{
    void *st = instance("anthropic");
    loom_batch_op ops[] = {
        { .step = LOOM_BATCH_CREATE, .kind = LOOM_CALL_CHAT, .name = NAME, .lines = "{}\n",
          .lines_len = 3 },
        { .step = LOOM_BATCH_RETRIEVE, .batch_id = "msgbatch_01" },
        { .step = LOOM_BATCH_RESULTS, .url = BASE "/r" },
        { .step = LOOM_BATCH_CANCEL, .batch_id = "msgbatch_01" },
    };
    loom_batch_info info;
    fake_ctx c;

    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const loom_batch_op *op = &ops[i];

        cr_assert(eq(int, decode("anthropic", st, op, 429,
                                 "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                                 "\"message\":\"Number of requests has exceeded your rate "
                                 "limit\"}}", "retry-after", "1", &info, &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_RATE_LIMITED), "%zu: %s", i, c.message);
        cr_assert(eq(i64, c.retry_ms, 1000));
        cr_assert(eq(int, decode("anthropic", st, op, 500,
                                 "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                                 "\"message\":\"Internal server error\"}}", NULL, NULL, &info,
                                 &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM), "%zu: %s", i, c.message);
        cr_assert(eq(int, decode("anthropic", st, op, 529,
                                 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                                 "\"message\":\"Overloaded\"}}", "retry-after-ms", "75", &info,
                                 &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_UPSTREAM), "%zu: %s", i, c.message);
        cr_assert(eq(i64, c.retry_ms, 75));
        cr_assert(eq(int, decode("anthropic", st, op, 400,
                                 "{\"type\":\"error\",\"error\":{\"type\":"
                                 "\"invalid_request_error\",\"message\":\"requests: too many\"}}",
                                 NULL, NULL, &info, &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST), "%zu: %s", i, c.message);
        cr_assert(strstr(c.message, "requests: too many") != NULL, "%s", c.message);
        cr_assert(eq(int, decode("anthropic", st, op, 404,
                                 "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\","
                                 "\"message\":\"no such batch\"}}", NULL, NULL, &info, &c), -1));
        cr_assert(eq(int, (int)c.code, (int)LOOM_E_INVALID_REQUEST), "%zu: %s", i, c.message);
    }
    provider("anthropic")->fini(st);
}

/* ---- anthropic: results */

static char *anthropic_result_line(const char *id, const char *result)
{
    char *line = NULL;

    cr_assert(asprintf(&line, "{\"custom_id\":\"%s\",\"result\":%s}", id, result) > 0);
    return line;
}

Test(provider_batch, anthropic_round_trip)
{
    void *st = instance("anthropic");
    static const char answer[] =
        "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m1\","
        "\"content\":[{\"type\":\"text\",\"text\":\"Hello\"},{\"type\":\"text\",\"text\":"
        "\" there.\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":4,\"cache_read_input_tokens\":6,\"cache_creation_input_tokens\":2}}";
    static const char schema_answer[] =
        "{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"classify\",\"input\":{\"label\":\"spam\"}}],"
        "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":30,\"output_tokens\":9}}";
    json_t *schema = json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties",
                               "label", "type", "string", "required", "label");
    chat_req r;
    char *result, *wrapped;

    chat_req_init(&r);
    json_decref(line_of("anthropic", st, &r.req, "k1"));
    cr_assert(asprintf(&wrapped, "{\"type\":\"succeeded\",\"message\":%s}", answer) > 0);
    result = anthropic_result_line("k1", wrapped);
    same_as_direct("anthropic", st, &r.req, answer, result);
    free(result);
    free(wrapped);

    /* a structured output is one turn: batched, and read the same */
    r.req.schema = schema;
    r.req.schema_name = "classify";
    json_decref(line_of("anthropic", st, &r.req, "k2"));
    cr_assert(asprintf(&wrapped, "{\"type\":\"succeeded\",\"message\":%s}", schema_answer) > 0);
    result = anthropic_result_line("k2", wrapped);
    same_as_direct("anthropic", st, &r.req, schema_answer, result);
    free(result);
    free(wrapped);
    json_decref(schema);
    chat_req_fini(&r);
    provider("anthropic")->fini(st);
}

Test(provider_batch, anthropic_result_errors)
{
    void *st = instance("anthropic");
    chat_req r;

    chat_req_init(&r);
    /* as the fake's --batch-fail-every gives it */
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"errored\",\"error\":{\"type\":"
                 "\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server "
                 "error\"}}}}", LOOM_E_UPSTREAM, "Internal server error");
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"errored\",\"error\":{\"type\":"
                 "\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
                 "\"max_tokens: too large\"}}}}", LOOM_E_INVALID_REQUEST, "max_tokens: too large");
    /* the inner error alone, as some write it */
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"errored\",\"error\":{\"type\":"
                 "\"overloaded_error\",\"message\":\"busy\"}}}", LOOM_E_UPSTREAM, "busy");
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"errored\",\"error\":{\"type\":"
                 "\"error\",\"error\":{\"type\":\"something_new\",\"message\":\"hm\"}}}}",
                 LOOM_E_UPSTREAM, "something_new");
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"expired\"}}", LOOM_E_UPSTREAM,
                 "expired before this line ran");
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"canceled\"}}", LOOM_E_UPSTREAM,
                 "cancelled before this line ran");
    /* a success decode would refuse is refused the same way */
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"succeeded\",\"message\":{"
                 "\"content\":[],\"stop_reason\":\"refusal\"}}}", LOOM_E_INVALID_OUTPUT,
                 "refused");
    result_fails("anthropic", st, &r.req,
                 "{\"custom_id\":\"k1\",\"result\":{\"type\":\"succeeded\"}}", LOOM_E_UPSTREAM,
                 "content");
    result_fails("anthropic", st, &r.req, "{\"custom_id\":\"k1\"}", LOOM_E_UPSTREAM,
                 "result.type");
    result_fails("anthropic", st, &r.req, "[", LOOM_E_UPSTREAM, "not a JSON object");
    chat_req_fini(&r);
    provider("anthropic")->fini(st);
}
