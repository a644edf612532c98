/* test_providers.c -- the openai and anthropic providers, encode and decode.
 *
 * Decode cases are data: every tests/data/providers/NAME.json holds a
 * response (status, headers, body as a raw string or as JSON) and what
 * decoding it must give, so adding a case is adding a file. The provider is
 * the part of NAME before the first '-'; a file's "request" gives the
 * call's tools and schema (ABI 2.3) when the answer is read by them, and
 * "expect.tool_calls" the calls it must give (none when absent). Encode is
 * checked field by field
 * here, as are the answers no file can hold (huge bodies, NULL bodies). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom/plugin.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/http_common.h"
#include "plugins/openai/openai.h"

#define TEST_KEY "sk-test-0123456789SECRET"

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

static const loom_provider *provider(const char *name)
{
    const loom_plugin *p = strcmp(name, "openai") == 0 ? loom_builtin_openai_entry()
                                                       : loom_builtin_anthropic_entry();
    cr_assert(eq(sz, p->nproviders, 1));
    return &p->providers[0];
}

/* An instance of provider NAME configured by CONFIG_TEXT (JSON), with the
 * test key in LOOM_TEST_KEY. */
static void *instance(const char *name, const char *config_text)
{
    fake_ctx c;
    json_t *config = json_loads(config_text ? config_text : "{}", 0, NULL);
    void *state = NULL;

    cr_assert(config != NULL);
    setenv("LOOM_TEST_KEY", TEST_KEY, 1);
    if (!json_object_get(config, "api_key_env"))
        json_object_set_new(config, "api_key_env", json_string("LOOM_TEST_KEY"));
    ctx_reset(&c);
    cr_assert(eq(int, provider(name)->init(&c.base, NULL, config, &state), 0), "%s", c.message);
    json_decref(config);
    return state;
}

static const char *const code_names[] = {
    [LOOM_OK] = "ok", [LOOM_E_TIMEOUT] = "timeout", [LOOM_E_RATE_LIMITED] = "rate_limited",
    [LOOM_E_UPSTREAM] = "upstream", [LOOM_E_INVALID_OUTPUT] = "invalid_output",
    [LOOM_E_LAMBDA_FAILED] = "lambda_failed", [LOOM_E_QUOTA] = "quota",
    [LOOM_E_INVALID_REQUEST] = "invalid_request", [LOOM_E_CONFIG] = "config",
    [LOOM_E_NOMEM] = "out_of_memory",
};

/* ---- decode: one test per data file */

typedef struct prov_case {
    char name[128];
} prov_case;

static void free_params(struct criterion_test_params *crp)
{
    cr_free(crp->params);
}

static const char *data_dir(char *buf, size_t size)
{
    const char *src = getenv("LOOM_SRCDIR");
    snprintf(buf, size, "%s/tests/data/providers", src ? src : ".");
    return buf;
}

static int cmp_cases(const void *a, const void *b)
{
    return strcmp(((const prov_case *)a)->name, ((const prov_case *)b)->name);
}

ParameterizedTestParameters(providers, decode_file)
{
    char dir[4096];
    DIR *d = opendir(data_dir(dir, sizeof dir));
    struct dirent *e;
    size_t n = 0, cap = 128;
    prov_case *v = cr_calloc(cap, sizeof *v);

    if (!v || !d)
        abort();
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap || len >= sizeof v[0].name)
            abort();             /* raise cap: the cases outgrew it */
        memcpy(v[n++].name, e->d_name, len + 1);
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmp_cases);
    return cr_make_param_array(prov_case, v, n, free_params);
}

ParameterizedTest(prov_case *pc, providers, decode_file)
{
    char path[4400], dir[4096], pname[32];
    json_error_t jerr;
    json_t *file, *hdrs, *body, *expect, *inputs, *want, *v;
    loom_header headers[32];
    loom_http_response resp = { 0 };
    loom_request req = { .kind = LOOM_CALL_CHAT };
    loom_result res = { 0 };
    const char *key;
    char *raw;
    fake_ctx c;
    void *state;
    int rc;

    snprintf(path, sizeof path, "%s/%s", data_dir(dir, sizeof dir), pc->name);
    file = json_load_file(path, 0, &jerr);
    cr_assert(file != NULL, "%s: %s", pc->name, jerr.text);
    snprintf(pname, sizeof pname, "%.*s", (int)strcspn(pc->name, "-"), pc->name);
    state = instance(pname, NULL);

    hdrs = json_object_get(file, "headers");
    json_object_foreach(hdrs, key, v) {
        cr_assert(resp.nheaders < 32);
        headers[resp.nheaders].name = key;
        headers[resp.nheaders++].value = json_string_value(v);
    }
    resp.headers = headers;
    resp.status = (int)json_integer_value(json_object_get(file, "status"));
    body = json_object_get(file, "body");
    raw = json_is_string(body) ? strdup(json_string_value(body)) : json_dumps(body, JSON_COMPACT);
    cr_assert(raw != NULL);
    resp.body = raw;
    resp.body_len = strlen(raw);
    inputs = json_object_get(file, "inputs");
    if (inputs) {
        req.kind = LOOM_CALL_EMBED;
        req.inputs = inputs;
    }
    /* what the call asked for, where the answer depends on it (ABI 2.3) */
    v = json_object_get(file, "request");
    req.tools = json_object_get(v, "tools");
    req.schema = json_object_get(v, "schema");
    req.schema_name = json_string_value(json_object_get(v, "schema_name"));

    ctx_reset(&c);
    rc = provider(pname)->decode(&c.base, state, &req, &resp, &res);
    expect = json_object_get(file, "expect");
    if ((want = json_object_get(expect, "error"))) {
        cr_assert(eq(int, rc, -1), "%s: decode succeeded", pc->name);
        cr_assert(res.output == NULL);
        cr_assert(eq(str, (char *)code_names[c.code], (char *)json_string_value(want)),
                  "%s: %s", pc->name, c.message);
        cr_assert(strncmp(c.message, pname, strlen(pname)) == 0, "%s", c.message);
        cr_assert(strstr(c.message, TEST_KEY) == NULL, "key in: %s", c.message);
        cr_assert(strlen(c.message) < 320, "message too long: %s", c.message);
        if ((v = json_object_get(expect, "message_contains")))
            cr_assert(strstr(c.message, json_string_value(v)) != NULL, "%s", c.message);
    } else {
        cr_assert(eq(int, rc, 0), "%s: %s", pc->name, c.message);
        cr_assert(json_equal(res.output, json_object_get(expect, "output")), "%s: got %s",
                  pc->name, json_dumps(res.output, JSON_ENCODE_ANY));
        /* absent from the file: the answer must call no tool */
        want = json_object_get(expect, "tool_calls");
        cr_assert(want ? json_equal(res.tool_calls, want) : res.tool_calls == NULL,
                  "%s: tool calls %s", pc->name,
                  res.tool_calls ? json_dumps(res.tool_calls, JSON_COMPACT) : "none");
    }
    if ((v = json_object_get(expect, "retry_after_ms")))
        cr_assert(eq(i64, c.retry_ms, json_integer_value(v)), "%s", pc->name);
    else
        cr_assert(eq(i64, c.retry_ms, -1), "%s: unexpected retry_after", pc->name);
    if ((v = json_object_get(expect, "finish_reason")))
        cr_assert(eq(str, res.finish_reason, (char *)json_string_value(v)), "%s", pc->name);
    if ((v = json_object_get(expect, "usage"))) {
        cr_assert(eq(i64, res.usage.input_tokens, json_integer_value(json_array_get(v, 0))));
        cr_assert(eq(i64, res.usage.output_tokens, json_integer_value(json_array_get(v, 1))));
    }
    json_decref(res.output);
    json_decref(res.tool_calls);
    free(raw);
    provider(pname)->fini(state);
    json_decref(file);
}

/* ---- encode */

static void free_request(loom_http_request *r)
{
    loom_hc_request_clear(r);
}

static const char *req_header(const loom_http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* The key appears in exactly the header NAME and nowhere else. */
static void assert_key_only_in(const loom_http_request *r, const char *name)
{
    cr_assert(strstr(r->url, TEST_KEY) == NULL);
    cr_assert(strstr(r->body, TEST_KEY) == NULL);
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) != 0)
            cr_assert(strstr(r->headers[i].value, TEST_KEY) == NULL);
    cr_assert(req_header(r, name) && strstr(req_header(r, name), TEST_KEY));
}

Test(providers, openai_encode_chat)
{
    void *st = instance("openai", "{\"base_url\": \"http://localhost:8000/v1/\","
                                  " \"model\": \"m0\", \"organization\": \"org-1\"}");
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *params = json_loads("{\"temperature\":0.5,\"max_tokens\":64,\"top_p\":0.9,"
                                "\"stop\":[\"\\n\"],\"seed\":7,\"unknown\":1}", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .params = params,
                         .json_mode = 1 };
    loom_http_request out = { 0 };
    fake_ctx c;
    json_t *body;

    ctx_reset(&c);
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), 0), "%s", c.message);
    cr_assert(eq(str, out.method, "POST"));
    cr_assert(eq(str, out.url, "http://localhost:8000/v1/chat/completions"));
    cr_assert(eq(str, (char *)req_header(&out, "authorization"), "Bearer " TEST_KEY));
    cr_assert(eq(str, (char *)req_header(&out, "content-type"), "application/json"));
    cr_assert(eq(str, (char *)req_header(&out, "openai-organization"), "org-1"));
    assert_key_only_in(&out, "authorization");
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(body != NULL);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "model")), "m0"));
    cr_assert(json_equal(json_object_get(body, "messages"), msgs));
    cr_assert(eq(dbl, json_real_value(json_object_get(body, "temperature")), 0.5));
    cr_assert(eq(dbl, json_real_value(json_object_get(body, "top_p")), 0.9));
    cr_assert(eq(i64, json_integer_value(json_object_get(body, "max_tokens")), 64));
    cr_assert(eq(i64, json_integer_value(json_object_get(body, "seed")), 7));
    cr_assert(json_equal(json_object_get(body, "stop"), json_object_get(params, "stop")));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(
                          json_object_get(body, "response_format"), "type")), "json_object"));
    cr_assert(json_object_get(body, "unknown") == NULL);
    json_decref(body);
    free_request(&out);

    /* the call's model wins over the option's */
    req.model = "m1";
    req.json_mode = 0;
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), 0));
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "model")), "m1"));
    cr_assert(json_object_get(body, "response_format") == NULL);
    json_decref(body);
    free_request(&out);

    /* a badly typed parameter is the caller's error, and leaves OUT empty */
    json_object_set_new(params, "temperature", json_string("hot"));
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
    cr_assert(out.url == NULL && out.body == NULL && out.headers == NULL);
    json_decref(msgs);
    json_decref(params);
    provider("openai")->fini(st);
}

Test(providers, openai_encode_embed)
{
    void *st = instance("openai", "{\"model\": \"text-embedding-3-small\"}");
    json_t *inputs = json_loads("[\"a\", \"b\"]", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_EMBED, .inputs = inputs };
    loom_http_request out = { 0 };
    fake_ctx c;
    json_t *body;

    cr_assert(eq(sz, provider("openai")->max_batch, 2048));
    ctx_reset(&c);
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), 0), "%s", c.message);
    cr_assert(eq(str, out.url, "https://api.openai.com/v1/embeddings"));
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(json_equal(json_object_get(body, "input"), inputs));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "model")),
                 "text-embedding-3-small"));
    assert_key_only_in(&out, "authorization");
    json_decref(body);
    free_request(&out);

    json_array_append_new(inputs, json_integer(3));
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
    json_decref(inputs);
    provider("openai")->fini(st);
}

Test(providers, openai_no_key_no_header)
{
    fake_ctx c;
    void *st = NULL;
    json_t *config = json_pack("{s:s,s:s}", "api_key_env", "LOOM_TEST_UNSET_KEY", "model", "m");
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs };
    loom_http_request out = { 0 };

    unsetenv("LOOM_TEST_UNSET_KEY");
    ctx_reset(&c);
    cr_assert(eq(int, provider("openai")->init(&c.base, NULL, config, &st), 0), "%s", c.message);
    cr_assert(eq(int, provider("openai")->encode(&c.base, st, &req, &out), 0));
    cr_assert(req_header(&out, "authorization") == NULL);
    free_request(&out);
    provider("openai")->fini(st);
    json_decref(config);
    json_decref(msgs);
}

Test(providers, key_file_and_bad_config)
{
    char path[] = "/tmp/loom_test_keyXXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fake_ctx c;
    void *st = NULL;
    json_t *config;
    loom_http_request out = { 0 };
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .model = "m" };

    cr_assert(f != NULL);
    fputs(TEST_KEY "\n", f);
    fclose(f);
    config = json_pack("{s:s,s:s}", "api_key_file", path, "api_key_env", "LOOM_TEST_UNSET_KEY");
    ctx_reset(&c);
    cr_assert(eq(int, provider("anthropic")->init(&c.base, NULL, config, &st), 0), "%s",
              c.message);
    cr_assert(eq(int, provider("anthropic")->encode(&c.base, st, &req, &out), 0));
    cr_assert(eq(str, (char *)req_header(&out, "x-api-key"), TEST_KEY));
    free_request(&out);
    provider("anthropic")->fini(st);
    json_decref(config);
    unlink(path);

    /* a missing key file, no key at all, a bad URL: config errors, key-free */
    config = json_pack("{s:s}", "api_key_file", path);
    cr_assert(eq(int, provider("openai")->init(&c.base, NULL, config, &st), -1));
    cr_assert(eq(int, c.code, LOOM_E_CONFIG));
    json_decref(config);
    config = json_pack("{s:s}", "api_key_env", "LOOM_TEST_UNSET_KEY");
    unsetenv("LOOM_TEST_UNSET_KEY");
    cr_assert(eq(int, provider("anthropic")->init(&c.base, NULL, config, &st), -1));
    cr_assert(eq(int, c.code, LOOM_E_CONFIG));
    json_decref(config);
    config = json_pack("{s:s}", "base_url", "ftp://example.com");
    cr_assert(eq(int, provider("openai")->init(&c.base, NULL, config, &st), -1));
    cr_assert(eq(int, c.code, LOOM_E_CONFIG));
    json_decref(config);
    setenv("LOOM_TEST_BAD_KEY", "sk-abc\r\nx-injected: 1", 1);
    config = json_pack("{s:s}", "api_key_env", "LOOM_TEST_BAD_KEY");
    cr_assert(eq(int, provider("openai")->init(&c.base, NULL, config, &st), -1));
    cr_assert(eq(int, c.code, LOOM_E_CONFIG));
    cr_assert(strstr(c.message, "sk-abc") == NULL);
    json_decref(config);
    json_decref(msgs);
}

Test(providers, anthropic_encode)
{
    void *st = instance("anthropic", "{\"model\": \"claude-x\", \"max_tokens\": 333}");
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"rule one\"},"
                              "{\"role\":\"user\",\"content\":\"hi\"},"
                              "{\"role\":\"assistant\",\"content\":\"hello\"},"
                              "{\"role\":\"system\",\"content\":[{\"type\":\"text\","
                              "\"text\":\"rule two\"}]},"
                              "{\"role\":\"user\",\"content\":\"again\"}]", 0, NULL);
    json_t *params = json_loads("{\"temperature\":1,\"top_p\":0.5,\"stop\":\"END\",\"seed\":3}",
                                0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .params = params };
    loom_http_request out = { 0 };
    fake_ctx c;
    json_t *body, *turns;

    cr_assert(eq(sz, provider("anthropic")->max_batch, 0));
    ctx_reset(&c);
    cr_assert(eq(int, provider("anthropic")->encode(&c.base, st, &req, &out), 0), "%s",
              c.message);
    cr_assert(eq(str, out.url, "https://api.anthropic.com/v1/messages"));
    cr_assert(eq(str, (char *)req_header(&out, "anthropic-version"), "2023-06-01"));
    cr_assert(eq(str, (char *)req_header(&out, "content-type"), "application/json"));
    assert_key_only_in(&out, "x-api-key");
    cr_assert(req_header(&out, "authorization") == NULL);
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(body != NULL);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "model")), "claude-x"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(body, "system")),
                 "rule one\n\nrule two"));
    turns = json_object_get(body, "messages");
    cr_assert(eq(sz, json_array_size(turns), 3));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(turns, 1),
                                                                "role")), "assistant"));
    cr_assert(eq(i64, json_integer_value(json_object_get(body, "max_tokens")), 333));
    cr_assert(eq(i64, json_integer_value(json_object_get(body, "temperature")), 1));
    cr_assert(eq(dbl, json_real_value(json_object_get(body, "top_p")), 0.5));
    cr_assert(eq(str, (char *)json_string_value(json_array_get(
                          json_object_get(body, "stop_sequences"), 0)), "END"));
    cr_assert(json_object_get(body, "seed") == NULL);
    cr_assert(json_object_get(body, "stop") == NULL);
    json_decref(body);
    free_request(&out);

    /* the call's max_tokens wins */
    json_object_set_new(params, "max_tokens", json_integer(5));
    cr_assert(eq(int, provider("anthropic")->encode(&c.base, st, &req, &out), 0));
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(eq(i64, json_integer_value(json_object_get(body, "max_tokens")), 5));
    json_decref(body);
    free_request(&out);

    /* embeddings and unknown roles are refused */
    req.kind = LOOM_CALL_EMBED;
    cr_assert(eq(int, provider("anthropic")->encode(&c.base, st, &req, &out), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
    req.kind = LOOM_CALL_CHAT;
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "tool", "content", "x"));
    cr_assert(eq(int, provider("anthropic")->encode(&c.base, st, &req, &out), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
    cr_assert(out.body == NULL);
    json_decref(msgs);
    json_decref(params);
    provider("anthropic")->fini(st);
}

/* ---- hostile answers no data file can hold */

static void decode_raw(const char *pname, int status, const char *body, size_t len,
                       loom_errcode want)
{
    void *st = instance(pname, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT };
    loom_http_response resp = { .status = status, .body = body, .body_len = len };
    loom_result res = { 0 };
    fake_ctx c;

    ctx_reset(&c);
    cr_assert(eq(int, provider(pname)->decode(&c.base, st, &req, &resp, &res), -1));
    cr_assert(eq(int, c.code, want), "%s %d: %s", pname, status, c.message);
    cr_assert(res.output == NULL);
    provider(pname)->fini(st);
}

Test(providers, hostile_bodies)
{
    size_t n = 16u << 20;
    char *huge = malloc(n);
    static const char *const names[] = { "openai", "anthropic" };

    cr_assert(huge != NULL);
    memset(huge, '[', n);        /* deeper than any parser should follow */
    for (size_t i = 0; i < 2; i++) {
        decode_raw(names[i], 200, NULL, 0, LOOM_E_UPSTREAM);
        decode_raw(names[i], 200, huge, n, LOOM_E_UPSTREAM);
        decode_raw(names[i], 500, huge, n, LOOM_E_UPSTREAM);
        decode_raw(names[i], 429, huge, n, LOOM_E_RATE_LIMITED);
        decode_raw(names[i], 200, "{\"a\":\"\\ud800\"", 13, LOOM_E_UPSTREAM);
        decode_raw(names[i], 200, "\0\0\0", 3, LOOM_E_UPSTREAM);
        decode_raw(names[i], 302, "", 0, LOOM_E_INVALID_REQUEST);
    }
    free(huge);
}

Test(providers, key_redacted_from_server_message)
{
    void *st = instance("openai", NULL);
    const char *body = "{\"error\":{\"message\":\"bad key " TEST_KEY " given\","
                       "\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}";
    loom_request req = { .kind = LOOM_CALL_CHAT };
    loom_http_response resp = { .status = 401, .body = body, .body_len = strlen(body) };
    loom_result res = { 0 };
    fake_ctx c;

    ctx_reset(&c);
    cr_assert(eq(int, provider("openai")->decode(&c.base, st, &req, &resp, &res), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
    cr_assert(strstr(c.message, TEST_KEY) == NULL, "%s", c.message);
    cr_assert(strstr(c.message, "[redacted]") != NULL, "%s", c.message);
    provider("openai")->fini(st);
}

Test(providers, durations_and_waits)
{
    loom_header h[] = { { "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT" },
                        { "x-ratelimit-reset-requests", "1s" },
                        { "x-ratelimit-reset-tokens", "1m30s" } };
    loom_http_response resp = { .status = 429, .headers = h, .nheaders = 3 };
    char buf[LOOM_HC_MSG_MAX + 1];

    cr_assert(eq(i64, loom_hc_parse_duration("1s"), 1000));
    cr_assert(eq(i64, loom_hc_parse_duration("12ms"), 12));
    cr_assert(eq(i64, loom_hc_parse_duration("6m0s"), 360000));
    cr_assert(eq(i64, loom_hc_parse_duration("2m59.56s"), 179560));
    cr_assert(eq(i64, loom_hc_parse_duration("1h"), 3600000));
    cr_assert(eq(i64, loom_hc_parse_duration("0.5ms"), 1));
    cr_assert(eq(i64, loom_hc_parse_duration(""), -1));
    cr_assert(eq(i64, loom_hc_parse_duration("-1s"), -1));
    cr_assert(eq(i64, loom_hc_parse_duration("5"), -1));
    cr_assert(eq(i64, loom_hc_parse_duration("5x"), -1));
    /* an HTTP date is skipped; no bucket says it is empty: the smallest reset */
    cr_assert(eq(i64, loom_hc_retry_after_ms(&resp), 1000));
    h[0].value = "1.5";
    cr_assert(eq(i64, loom_hc_retry_after_ms(&resp), 1500));

    /* cutting never splits a UTF-8 sequence */
    char msg[400];
    for (size_t i = 0; i + 2 < sizeof msg; i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[sizeof msg - 2] = '\0';
    loom_hc_server_message(buf, sizeof buf, msg, NULL);
    cr_assert(strlen(buf) <= LOOM_HC_MSG_MAX);
    json_t *valid = json_string(buf);
    cr_assert(valid != NULL, "not valid UTF-8 after the cut");
    json_decref(valid);
    loom_hc_server_message(buf, sizeof buf, "a\nb\x01" "c", NULL);
    cr_assert(eq(str, buf, "a b c"));
}

/* ---- the shared pieces, as an out-of-tree provider would use them */

static const loom_option test_options[] = {
    LOOM_HC_OPTIONS("https://example.com/v1/", "root", "LOOM_TEST_KEY", "key variable"),
    { "limit", LOOM_OPT_INT, "7", 0, "a positive count" },
    { "label", LOOM_OPT_STRING, "plain", 0, "a string with a default" },
    { 0 }
};

Test(providers, conf_follows_the_option_table)
{
    fake_ctx c;
    loom_hc_conf conf = { 0 };
    json_t *config = json_object();
    json_int_t limit = 0;
    char *label = NULL;

    setenv("LOOM_TEST_KEY", TEST_KEY, 1);
    ctx_reset(&c);
    cr_assert(eq(int, loom_hc_conf_init(&c.base, "t", test_options, config, NULL, &conf), 0),
              "%s", c.message);
    cr_assert(eq(str, conf.base, "https://example.com/v1"));
    cr_assert(conf.model == NULL);
    cr_assert(eq(str, conf.key, TEST_KEY));
    cr_assert(eq(int, loom_hc_option_string(&c.base, "t", test_options, config, "label",
                                            &label), 0));
    cr_assert(eq(str, label, "plain"));
    free(label);
    cr_assert(eq(int, loom_hc_option_positive(&c.base, "t", test_options, config, "limit",
                                              &limit), 0));
    cr_assert(eq(i64, limit, 7));
    loom_hc_conf_fini(&conf);
    cr_assert(conf.base == NULL && conf.key == NULL);

    /* a declared string option of another type, wherever it is in the table */
    json_object_set_new(config, "label", json_integer(1));
    cr_assert(eq(int, loom_hc_conf_init(&c.base, "t", test_options, config, NULL, &conf), -1));
    cr_assert(eq(int, c.code, LOOM_E_CONFIG));
    cr_assert(eq(str, c.message, "t: label must be a string"));
    loom_hc_conf_fini(&conf);
    json_object_set_new(config, "label", json_null());
    json_object_set_new(config, "limit", json_integer(0));
    cr_assert(eq(int, loom_hc_option_positive(&c.base, "t", test_options, config, "limit",
                                              &limit), -1));
    cr_assert(eq(str, c.message, "t: limit must be a positive integer"));

    /* without a key: an error when it is required, a note when it is not */
    json_object_set_new(config, "api_key_env", json_string("LOOM_TEST_UNSET_KEY"));
    unsetenv("LOOM_TEST_UNSET_KEY");
    cr_assert(eq(int, loom_hc_conf_init(&c.base, "t", test_options, config, NULL, &conf), -1));
    cr_assert(eq(str, c.message, "t: no API key (set LOOM_TEST_UNSET_KEY or api_key_file)"));
    loom_hc_conf_fini(&conf);
    ctx_reset(&c);
    cr_assert(eq(int, loom_hc_conf_init(&c.base, "t", test_options, config, "sent bare", &conf),
                 0));
    cr_assert(conf.key == NULL);
    loom_hc_conf_fini(&conf);
    json_decref(config);
}

Test(providers, params_follow_the_param_table)
{
    static const loom_hc_param table[] = {
        { "temperature", "temperature", LOOM_HC_NUMBER },
        { "max_tokens", "max_tokens", LOOM_HC_POSITIVE },
        { "seed", "seed", LOOM_HC_INTEGER },
        { "stop", "stop_sequences", LOOM_HC_STRING_LIST },
        { "tags", "tags", LOOM_HC_STRINGS },
        { 0 }
    };
    static const struct { const char *params, *message; } bad[] = {
        { "[1]", "t: params must be a mapping" },
        { "{\"temperature\":\"hot\"}", "t: temperature must be a number" },
        { "{\"max_tokens\":0}", "t: max_tokens must be a positive integer" },
        { "{\"seed\":1.5}", "t: seed must be an integer" },
        { "{\"stop\":[\"a\",2]}", "t: stop must be a string or strings" },
        { "{\"tags\":{}}", "t: tags must be a string or strings" },
    };
    json_t *params = json_loads("{\"temperature\":0.5,\"max_tokens\":null,\"stop\":\"END\","
                                "\"tags\":\"x\",\"other\":1}", 0, NULL);
    json_t *fallback = json_loads("{\"max_tokens\":9,\"seed\":4}", 0, NULL);
    json_t *body = json_object(), *want;
    fake_ctx c;

    ctx_reset(&c);
    cr_assert(eq(int, loom_hc_put_params(&c.base, "t", table, params, fallback, body), 0), "%s",
              c.message);
    want = json_loads("{\"temperature\":0.5,\"max_tokens\":9,\"seed\":4,"
                      "\"stop_sequences\":[\"END\"],\"tags\":\"x\"}", 0, NULL);
    cr_assert(json_equal(body, want), "got %s", json_dumps(body, JSON_COMPACT));
    json_decref(want);
    json_decref(params);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        params = json_loads(bad[i].params, 0, NULL);
        ctx_reset(&c);
        cr_assert(eq(int, loom_hc_put_params(&c.base, "t", table, params, NULL, body), -1));
        cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST));
        cr_assert(eq(str, c.message, (char *)bad[i].message));
        json_decref(params);
    }
    json_decref(fallback);
    json_decref(body);
}

Test(providers, failures_classified_by_status)
{
    static const struct { int status; loom_errcode code; } cases[] = {
        { 402, LOOM_E_QUOTA }, { 429, LOOM_E_RATE_LIMITED }, { 408, LOOM_E_UPSTREAM },
        { 409, LOOM_E_UPSTREAM }, { 503, LOOM_E_UPSTREAM }, { 200, LOOM_E_UPSTREAM },
        { 0, LOOM_E_UPSTREAM }, { 302, LOOM_E_INVALID_REQUEST }, { 404, LOOM_E_INVALID_REQUEST },
    };
    loom_header h[] = { { "retry-after", "2" } };
    loom_http_response resp = { .headers = h, .nheaders = 1 };
    loom_hc_error e = { 0 };
    fake_ctx c;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        e.status = cases[i].status;
        ctx_reset(&c);
        cr_assert(eq(int, loom_hc_fail(&c.base, "t", &resp, &e, NULL), -1));
        cr_assert(eq(int, c.code, cases[i].code), "HTTP %d: %s", e.status, c.message);
        /* the wait only where trying again may help */
        cr_assert(eq(i64, c.retry_ms, c.code == LOOM_E_RATE_LIMITED ||
                                      c.code == LOOM_E_UPSTREAM ? 2000 : -1));
    }
    cr_assert(eq(str, c.message, "t: request refused (HTTP 404 -): (body is not JSON)"));

    /* the body's class wins; the message is quoted with the key redacted */
    e = (loom_hc_error){ .status = 400, .code = LOOM_E_QUOTA, .label = "billing",
                         .message = "key " TEST_KEY, .parsed = 1 };
    ctx_reset(&c);
    loom_hc_fail(&c.base, "t", &resp, &e, TEST_KEY);
    cr_assert(eq(int, c.code, LOOM_E_QUOTA));
    cr_assert(eq(str, c.message, "t: quota exhausted (HTTP 400 billing): key [redacted]"));
}

Test(providers, text_joins_with_separators)
{
    loom_hc_text t = { 0 };
    json_t *parts = json_loads("[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"thinking\","
                               "\"text\":\"no\"},{\"text\":\"b\"},{\"type\":\"text\"}]", 0, NULL);
    char *s;
    size_t len;

    cr_assert(eq(int, loom_hc_text_add(&t, "\n\n", "", 0), 0));
    cr_assert(eq(str, t.s, ""));
    cr_assert(eq(int, loom_hc_text_add(&t, "\n\n", "one", 3), 0));
    cr_assert(eq(int, loom_hc_text_add(&t, "\n\n", "two", 3), 0));
    cr_assert(eq(str, t.s, "one\n\ntwo"));
    cr_assert(eq(sz, t.len, 8));
    free(t.s);
    s = loom_hc_parts_text(parts, "text", &len);
    cr_assert(eq(str, s, "a"));
    free(s);
    s = loom_hc_parts_text(parts, NULL, &len);
    cr_assert(eq(str, s, "anob"));
    cr_assert(eq(sz, len, 4));
    free(s);
    json_decref(parts);
}

/* ---- tools and structured outputs (ABI 2.3) */

/* jansson's type macros, as a value Criterion's cr_assert can take */
static int truth(int x)
{
    return x;
}

/* A tool conversation in the neutral form: a question, a turn calling two
 * tools, their results (the second failed), a user's follow-up. */
static const char neutral_conversation[] =
    "[{\"role\":\"system\",\"content\":\"use tools\"},"
    "{\"role\":\"user\",\"content\":\"weather and time?\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
    "{\"id\":\"c1\",\"name\":\"search\",\"arguments\":{\"q\":\"weather\"}},"
    "{\"id\":\"c2\",\"name\":\"get_time\",\"arguments\":{}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"name\":\"search\",\"content\":\"sunny\","
    "\"is_error\":false},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"name\":\"get_time\","
    "\"content\":\"{\\\"code\\\":\\\"timeout\\\"}\",\"is_error\":true},"
    "{\"role\":\"user\",\"content\":\"and tomorrow?\"}]";

static const char neutral_tools[] =
    "[{\"name\":\"search\",\"description\":\"look up\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}},"
    "{\"name\":\"get_time\"}]";

/* REQ encoded by provider NAME (instance ST): the body, parsed. */
static json_t *encoded_body(const char *name, void *st, const loom_request *req)
{
    loom_http_request out = { 0 };
    fake_ctx c;
    json_t *body;

    ctx_reset(&c);
    cr_assert(eq(int, provider(name)->encode(&c.base, st, req, &out), 0), "%s", c.message);
    body = json_loadb(out.body, out.body_len, 0, NULL);
    cr_assert(body != NULL);
    free_request(&out);
    return body;
}

/* REQ refused by provider NAME's encode with invalid_request, saying WHAT. */
static void encode_refused(const char *name, void *st, const loom_request *req, const char *what)
{
    loom_http_request out = { 0 };
    fake_ctx c;

    ctx_reset(&c);
    cr_assert(eq(int, provider(name)->encode(&c.base, st, req, &out), -1));
    cr_assert(eq(int, c.code, LOOM_E_INVALID_REQUEST), "%s", c.message);
    cr_assert(strstr(c.message, what) != NULL, "%s", c.message);
    cr_assert(out.body == NULL && out.headers == NULL);
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);

    cr_assert(want != NULL, "bad expected JSON: %s", want_text);
    cr_assert(json_equal(got, want), "got %s\nwant %s", json_dumps(got, JSON_COMPACT),
              want_text);
    json_decref(want);
}

Test(providers, openai_encode_tools_and_tool_turns)
{
    void *st = instance("openai", "{\"model\": \"m\"}");
    json_t *msgs = json_loads(neutral_conversation, 0, NULL);
    json_t *tools = json_loads(neutral_tools, 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .tools = tools,
                         .stream = 1 };
    json_t *body = encoded_body("openai", st, &req), *wire = json_object_get(body, "messages");

    assert_json(json_object_get(body, "tools"),
                "[{\"type\":\"function\",\"function\":{\"name\":\"search\","
                "\"description\":\"look up\",\"parameters\":{\"type\":\"object\","
                "\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}}},"
                "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":"
                "{\"type\":\"object\",\"properties\":{}}}}]");
    cr_assert(eq(sz, json_array_size(wire), 6));
    cr_assert(json_equal(json_array_get(wire, 0), json_array_get(msgs, 0)));
    /* arguments as JSON text, content null for a turn that only calls */
    assert_json(json_array_get(wire, 2),
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"search\","
                "\"arguments\":\"{\\\"q\\\":\\\"weather\\\"}\"}},"
                "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
                "\"arguments\":\"{}\"}}]}");
    assert_json(json_array_get(wire, 3),
                "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"}");
    /* no error flag in the API: the failure is said in the text */
    assert_json(json_array_get(wire, 4), "{\"role\":\"tool\",\"tool_call_id\":\"c2\","
                                         "\"content\":\"error: {\\\"code\\\":\\\"timeout\\\"}\"}");
    cr_assert(json_equal(json_array_get(wire, 5), json_array_get(msgs, 5)));
    /* tool calls cannot come through the stream hook: asked for whole */
    cr_assert(json_object_get(body, "stream") == NULL);
    json_decref(body);
    /* an assistant turn with an empty list of calls goes without one */
    req.messages = json_loads("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
                              "\"assistant\",\"content\":\"ok\",\"tool_calls\":[]},"
                              "{\"role\":\"user\",\"content\":\"y\"}]", 0, NULL);
    body = encoded_body("openai", st, &req);
    assert_json(json_array_get(json_object_get(body, "messages"), 1),
                "{\"role\":\"assistant\",\"content\":\"ok\"}");
    json_decref((json_t *)req.messages);
    req.messages = msgs;
    /* a text that says it failed already is not told twice */
    json_decref(body);
    json_object_set_new(json_array_get(msgs, 4), "content", json_string("Error: boom"));
    body = encoded_body("openai", st, &req);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(
                          json_array_get(json_object_get(body, "messages"), 4), "content")),
                 "Error: boom"));
    cr_assert(json_object_get(body, "stream") == NULL);
    cr_assert(json_object_get(body, "stream_options") == NULL);
    json_decref(body);

    /* a turn's text goes with its calls */
    json_object_set_new(json_array_get(msgs, 2), "content", json_string("checking"));
    body = encoded_body("openai", st, &req);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(
                          json_array_get(json_object_get(body, "messages"), 2), "content")),
                 "checking"));
    json_decref(body);

    /* the neutral form, broken, is the caller's error */
    json_object_set_new(json_array_get(tools, 1), "name", json_string("get time"));
    encode_refused("openai", st, &req, "tools[1]");
    json_object_set_new(json_array_get(tools, 1), "name", json_string("get_time"));
    json_object_del(json_array_get(json_object_get(json_array_get(msgs, 2), "tool_calls"), 0),
                    "id");
    encode_refused("openai", st, &req, "messages[2].tool_calls[0]");
    json_decref(msgs);
    msgs = json_loads("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"content\":"
                      "\"r\"}]", 0, NULL);
    req.messages = msgs;
    encode_refused("openai", st, &req, "tool_call_id");
    json_decref(msgs);
    json_decref(tools);
    provider("openai")->fini(st);
}

Test(providers, openai_encode_schema)
{
    void *st = instance("openai", "{\"model\": \"m\"}");
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"x\"}]", 0, NULL);
    json_t *closed = json_loads("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\","
                                "\"properties\":{\"b\":{\"type\":\"string\"}},\"required\":[\"b\"],"
                                "\"additionalProperties\":false}},\"required\":[\"a\"],"
                                "\"additionalProperties\":false}", 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .schema = closed,
                         .schema_name = "extract", .json_mode = 1, .stream = 1 };
    json_t *body = encoded_body("openai", st, &req), *fmt;

    /* the schema wins over JSON mode; strict, since it fits the subset */
    fmt = json_object_get(body, "response_format");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(fmt, "type")), "json_schema"));
    fmt = json_object_get(fmt, "json_schema");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(fmt, "name")), "extract"));
    cr_assert(json_equal(json_object_get(fmt, "schema"), closed));
    cr_assert(truth(json_is_true(json_object_get(fmt, "strict"))));
    /* text answers still stream */
    cr_assert(truth(json_is_true(json_object_get(body, "stream"))));
    json_decref(body);

    /* an inner object left open: strict would be refused, so not strict */
    json_object_del(json_object_get(json_object_get(closed, "properties"), "a"),
                    "additionalProperties");
    body = encoded_body("openai", st, &req);
    fmt = json_object_get(json_object_get(body, "response_format"), "json_schema");
    cr_assert(truth(json_is_false(json_object_get(fmt, "strict"))));
    json_decref(body);
    /* an optional property: not strict either */
    json_object_set_new(json_object_get(json_object_get(closed, "properties"), "a"),
                        "additionalProperties", json_false());
    json_object_set_new(json_object_get(closed, "properties"), "c", json_pack("{s:s}", "type",
                                                                              "integer"));
    body = encoded_body("openai", st, &req);
    fmt = json_object_get(json_object_get(body, "response_format"), "json_schema");
    cr_assert(truth(json_is_false(json_object_get(fmt, "strict"))));
    json_decref(body);
    json_decref(closed);

    /* a root that is not an object goes wrapped, its definitions lifted */
    req.schema = json_loads("{\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/t\"},"
                            "\"definitions\":{\"t\":{\"type\":\"string\"}}}", 0, NULL);
    body = encoded_body("openai", st, &req);
    fmt = json_object_get(json_object_get(body, "response_format"), "json_schema");
    assert_json(json_object_get(fmt, "schema"),
                "{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"array\","
                "\"items\":{\"$ref\":\"#/definitions/t\"},\"definitions\":{\"t\":{\"type\":"
                "\"string\"}}}},\"required\":[\"value\"],\"additionalProperties\":false,"
                "\"definitions\":{\"t\":{\"type\":\"string\"}}}");
    cr_assert(truth(json_is_true(json_object_get(fmt, "strict"))));
    json_decref(body);

    req.schema_name = "bad name";
    encode_refused("openai", st, &req, "structured output");
    json_decref((json_t *)req.schema);
    json_decref(msgs);
    provider("openai")->fini(st);
}

Test(providers, anthropic_encode_tools_and_tool_turns)
{
    void *st = instance("anthropic", "{\"model\": \"c\"}");
    json_t *msgs = json_loads(neutral_conversation, 0, NULL);
    json_t *tools = json_loads(neutral_tools, 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .tools = tools,
                         .stream = 1, .prompt_cache = 1 };
    json_t *body = encoded_body("anthropic", st, &req), *wire = json_object_get(body, "messages");

    assert_json(json_object_get(body, "tools"),
                "[{\"name\":\"search\",\"description\":\"look up\",\"input_schema\":{\"type\":"
                "\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}},"
                "{\"name\":\"get_time\",\"input_schema\":{\"type\":\"object\"},"
                "\"cache_control\":{\"type\":\"ephemeral\"}}]");
    cr_assert(json_object_get(body, "tool_choice") == NULL, "the model chooses");
    /* system lifted out; the two results merged into one user message */
    cr_assert(eq(sz, json_array_size(wire), 4));
    assert_json(json_array_get(wire, 1),
                "{\"role\":\"assistant\",\"content\":["
                "{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"search\",\"input\":{\"q\":"
                "\"weather\"}},{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"get_time\","
                "\"input\":{}}]}");
    assert_json(json_array_get(wire, 2),
                "{\"role\":\"user\",\"content\":["
                "{\"type\":\"tool_result\",\"tool_use_id\":\"c1\",\"content\":\"sunny\","
                "\"is_error\":false},"
                "{\"type\":\"tool_result\",\"tool_use_id\":\"c2\",\"content\":"
                "\"{\\\"code\\\":\\\"timeout\\\"}\",\"is_error\":true}]}");
    assert_json(json_array_get(wire, 3), "{\"role\":\"user\",\"content\":\"and tomorrow?\"}");
    cr_assert(json_object_get(body, "stream") == NULL, "tool calls are asked for whole");
    json_decref(body);

    /* a turn's text comes before its calls */
    json_object_set_new(json_array_get(msgs, 2), "content", json_string("checking"));
    body = encoded_body("anthropic", st, &req);
    assert_json(json_array_get(json_object_get(json_array_get(json_object_get(body, "messages"),
                                                               1), "content"), 0),
                "{\"type\":\"text\",\"text\":\"checking\"}");
    json_decref(body);

    json_object_set_new(json_array_get(tools, 0), "parameters", json_string("{}"));
    encode_refused("anthropic", st, &req, "tool search");
    json_decref(msgs);
    json_decref(tools);
    provider("anthropic")->fini(st);
}

Test(providers, anthropic_encode_schema_as_a_forced_tool)
{
    void *st = instance("anthropic", "{\"model\": \"c\"}");
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"x\"}]", 0, NULL);
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
                                "\"string\"}}}", 0, NULL);
    json_t *tools = json_loads(neutral_tools, 0, NULL);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = msgs, .schema = schema,
                         .schema_name = "extract", .stream = 1 };
    json_t *body = encoded_body("anthropic", st, &req), *list;

    list = json_object_get(body, "tools");
    cr_assert(eq(sz, json_array_size(list), 1));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(list, 0), "name")),
                 "extract"));
    cr_assert(json_equal(json_object_get(json_array_get(list, 0), "input_schema"), schema));
    assert_json(json_object_get(body, "tool_choice"), "{\"type\":\"tool\",\"name\":\"extract\"}");
    cr_assert(json_object_get(body, "stream") == NULL, "the answer is a tool's input");
    json_decref(body);

    /* beside tools: any tool, the schema's last */
    req.tools = tools;
    body = encoded_body("anthropic", st, &req);
    list = json_object_get(body, "tools");
    cr_assert(eq(sz, json_array_size(list), 3));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(list, 2), "name")),
                 "extract"));
    assert_json(json_object_get(body, "tool_choice"), "{\"type\":\"any\"}");
    json_decref(body);

    /* a root that is not an object is wrapped */
    req.tools = NULL;
    req.schema = json_loads("{\"type\":\"array\"}", 0, NULL);
    body = encoded_body("anthropic", st, &req);
    assert_json(json_object_get(json_array_get(json_object_get(body, "tools"), 0), "input_schema"),
                "{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"array\"}},"
                "\"required\":[\"value\"],\"additionalProperties\":false}");
    json_decref(body);
    json_decref((json_t *)req.schema);

    /* a tool named like the structured output would make it ambiguous */
    req.schema = schema;
    req.tools = tools;
    req.schema_name = "search";
    encode_refused("anthropic", st, &req, "name of the structured output");
    json_decref(schema);
    json_decref(tools);
    json_decref(msgs);
    provider("anthropic")->fini(st);
}
