/* test_engine_batch.c -- calls in batch mode (engine_batch.c) against an
 * in-memory batch manager (the engine_batch_ops below keep lines in a
 * table the test completes by hand) and a test HTTP provider with batch
 * hooks whose lines carry the prompt and whose results say the answer.
 * Nothing here is sent over HTTP: a call that went direct would fail to
 * connect, which the tests would see. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/core/http.h"
#include "daemon/engine/engine_cost.h"
#include "tests/unit/engine_testlib.h"

static bool truth(bool b) { return b; }

/* ---- the in-memory batch manager */

typedef struct fline {
    char job[64], key[512];
    engine_batch_state state;
    int attempt;
    json_t *result;       /* DONE: the provider's result object, or NULL */
    loom_errcode code;
    char prompt[256];     /* what the line asked (its request's last message) */
} fline;

static struct {
    fline v[2048];
    size_t n;
    int submits, lookups;
    uint64_t window_ms, deadline_ms; /* of the last submit */
} FB;

static fline *fb_find(const char *job, const char *key)
{
    for (size_t i = 0; i < FB.n; i++)
        if (strcmp(FB.v[i].job, job) == 0 && strcmp(FB.v[i].key, key) == 0)
            return &FB.v[i];
    return NULL;
}

static int fb_lookup(void *ud, const char *job, const char *key, engine_batch_line *out,
                     char *err, size_t errlen)
{
    FB.lookups++;
    fline *l = fb_find(job, key);
    if (!l)
        return 0;
    out->state = l->state;
    out->attempt = l->attempt;
    snprintf(out->batch, sizeof out->batch, "loom-testbatch");
    if (l->state == ENGINE_BATCH_DONE) {
        out->result = l->result ? json_incref(l->result) : NULL;
        out->code = l->code;
        snprintf(out->message, sizeof out->message, "the batch expired before this line ran");
    }
    return 0;
}

static int fb_submit(void *ud, const engine_batch_submit *s, loom_errcode *code, char *err,
                     size_t errlen)
{
    FB.submits++;
    FB.window_ms = s->window_ms;
    FB.deadline_ms = s->deadline_ms;
    cr_assert(upstream_has_batch_api(s->up));
    fline *l = fb_find(s->job, s->key);
    if (!l) {
        cr_assert(FB.n < sizeof FB.v / sizeof FB.v[0]);
        l = &FB.v[FB.n++];
        snprintf(l->job, sizeof l->job, "%s", s->job);
        snprintf(l->key, sizeof l->key, "%s", s->key);
    }
    json_decref(l->result);
    l->result = NULL;
    l->state = ENGINE_BATCH_PENDING;
    l->attempt = s->attempt;
    json_t *m = json_array_get(s->req->messages, json_array_size(s->req->messages) - 1);
    const char *text = s->req->kind == LOOM_CALL_EMBED
                           ? json_string_value(json_array_get(s->req->inputs, 0))
                           : json_string_value(json_object_get(m, "content"));
    snprintf(l->prompt, sizeof l->prompt, "%s", text ? text : "?");
    return 0;
}

static const engine_batch_ops fb_ops = { .lookup = fb_lookup, .submit = fb_submit };

/* Every pending line ends: with the answer "A:" + its prompt (10 input and
 * 20 output tokens), or, for the first FAIL of them, with no result. */
static void fb_finish_all(int fail)
{
    for (size_t i = 0; i < FB.n; i++) {
        fline *l = &FB.v[i];
        if (l->state != ENGINE_BATCH_PENDING)
            continue;
        l->state = ENGINE_BATCH_DONE;
        if (fail-- > 0) {
            l->code = LOOM_E_UPSTREAM;
            continue;
        }
        char ans[300];
        snprintf(ans, sizeof ans, "A:%s", l->prompt);
        l->result = json_pack("{s:s, s:i, s:i, s:[[f,f]]}", "answer", ans, "in", 10, "out", 20,
                              "vec", (double)strlen(l->prompt), 1.0);
    }
}

static void fb_reset(void)
{
    for (size_t i = 0; i < FB.n; i++)
        json_decref(FB.v[i].result);
    memset(&FB, 0, sizeof FB);
}

/* ---- the test provider: HTTP, with a Batch API */

static int tb_encode(loom_ctx *ctx, void *st, const loom_request *req, loom_http_request *out)
{
    loom_error(ctx, LOOM_E_UPSTREAM, "tbatch: a direct call");
    return -1;
}

static int tb_decode(loom_ctx *ctx, void *st, const loom_request *req,
                     const loom_http_response *resp, loom_result *out)
{
    loom_error(ctx, LOOM_E_UPSTREAM, "tbatch: a direct answer");
    return -1;
}

static int tb_line(loom_ctx *ctx, void *st, const loom_request *req, const char *custom_id,
                   char **line, size_t *len)
{
    json_t *o = json_pack("{s:s, s:O}", "custom_id", custom_id, "messages", req->messages);
    *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!*line)
        return -1;
    *len = strlen(*line);
    return 0;
}

static int tb_batch_encode(loom_ctx *ctx, void *st, const loom_batch_op *op,
                           loom_http_request *out)
{
    return 1;
}

static int tb_batch_decode(loom_ctx *ctx, void *st, const loom_batch_op *op,
                           const loom_http_response *resp, loom_batch_info *out)
{
    return 0;
}

static int tb_result(loom_ctx *ctx, void *st, const loom_request *req, const char *line,
                     size_t len, loom_result *out)
{
    json_t *o = json_loadb(line, len, 0, NULL);
    if (req->kind == LOOM_CALL_EMBED) { /* one vector per input, as decode gives */
        out->output = json_incref(json_object_get(o, "vec"));
        out->usage = (loom_usage){ json_integer_value(json_object_get(o, "in")), -1, -1, -1 };
        json_decref(o);
        return out->output ? 0 : -1;
    }
    const char *ans = json_string_value(json_object_get(o, "answer"));
    if (!ans) {
        json_decref(o);
        loom_error(ctx, LOOM_E_INVALID_OUTPUT, "tbatch: a result without an answer");
        return -1;
    }
    out->output = json_string(ans);
    out->usage.input_tokens = json_integer_value(json_object_get(o, "in"));
    out->usage.output_tokens = json_integer_value(json_object_get(o, "out"));
    out->usage.cache_read_tokens = out->usage.cache_write_tokens = -1;
    json_decref(o);
    return 0;
}

static const loom_provider tb_providers[] = {
    { .name = "tbatch", .encode = tb_encode, .decode = tb_decode, .batch_line = tb_line,
      .batch_encode = tb_batch_encode, .batch_decode = tb_batch_decode,
      .batch_result = tb_result, .summary = "a provider with a Batch API" },
};

static const loom_plugin tb_plugin = {
    LOOM_PLUGIN_HEADER, .name = "tb", .version = "1", .description = "batch tests",
    .providers = tb_providers, .nproviders = 1,
};

static http_client_t *HTTP;
static upstream_batch_api BAPI; /* the `batch_api:` of the next provider made */

static upstream_t *make_up(void *ud, const char *name, const loom_provider *def, void *state,
                           char *err, size_t errlen)
{
    upstream_options opt;
    memset(&opt, 0, sizeof opt);
    opt.batch_api = BAPI;
    upstream_t *u = upstream_new(ET.r, HTTP, name, def, state, NULL, &opt);
    if (!u)
        snprintf(err, errlen, "upstream_new failed");
    return u;
}

static engine_prices PRICES;
static engine_price PRICE = { .provider = "b", .model = "*", .input = 2, .output = 4,
                              .cache_read = -1, .cache_write = -1, .batch_input = -1,
                              .batch_output = -1 };

static void setup(void)
{
    et_setup();
    fb_reset();
    cr_assert_eq(plugins_add(ET.plugins, &tb_plugin, "tb", NULL), 0);
    HTTP = http_client_new(ET.r, NULL);
    cr_assert(HTTP);
    memset(&BAPI, 0, sizeof BAPI);
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "b", "tbatch", NULL, make_up, NULL, err, sizeof err),
                 0, "%s", err);
    PRICES.v = &PRICE;
    PRICES.n = 1;
    engine_set_prices(ET.eng, &PRICES);
    engine_set_batch(ET.eng, &fb_ops, NULL);
}

static void teardown(void)
{
    engine_free(ET.eng);
    ET.eng = NULL;
    http_client_free(HTTP);
    et_teardown();
    fb_reset();
}

TestSuite(engine_batch, .init = setup, .fini = teardown);

/* ---- running a job until it ends or parks, with checkpoints kept */

typedef struct run {
    et_result res;
    json_t *records;      /* {KEY: RECORD} of every checkpoint so far */
    json_t *waits;        /* what the last run parked on, or NULL */
    int batched;          /* step_batched traces */
    engine_job_t *job;
} run_t;

static void on_checkpoint(void *ud, engine_job_t *job, const char *key, json_t *record)
{
    run_t *r = ud;
    json_object_set(r->records, key, record);
}

static void on_trace(void *ud, const engine_trace *t)
{
    run_t *r = ud;
    if (t->event == ENGINE_TRACE_BATCHED) {
        cr_assert(t->key && *t->key);
        cr_assert_str_eq(t->provider, "b");
        r->batched++;
    }
}

static void on_done(engine_job_t *job, void *ud)
{
    run_t *r = ud;
    json_decref(r->waits);
    json_t *w = engine_job_waits(job);
    r->waits = w ? json_incref(w) : NULL;
    et_done(job, &r->res);
}

/* One run of YAML over INPUT as job "job1", with the records kept so far
 * as its replay; returns once it ended or parked. */
static void run_once(run_t *r, dsl_graph *g, const char *input)
{
    et_result_free(&r->res);
    memset(&r->res, 0, sizeof r->res);
    if (!r->records)
        r->records = json_object();
    json_t *in = json_loads(input, JSON_DECODE_ANY, NULL);
    cr_assert(in);
    engine_job_options o = { .name = "job1", .checkpoint = on_checkpoint, .checkpoint_ud = r,
                             .replay = r->records, .trace = on_trace, .trace_ud = r,
                             .seed = 7 };
    r->job = engine_submit(ET.eng, g, in, &o, on_done, r);
    cr_assert(r->job);
    json_decref(in);
    et_wait(&r->res);
}

static void run_free(run_t *r)
{
    et_result_free(&r->res);
    json_decref(r->records);
    json_decref(r->waits);
}

static char *items_input(int n)
{
    json_t *xs = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(xs, json_sprintf("x%d", i));
    json_t *o = json_pack("{s:o}", "xs", xs);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

#define MAP_YAML(extra)                                                                  \
    "loom: 1\nname: t\n"                                                                 \
    "do:\n"                                                                              \
    "  map:\n"                                                                           \
    "    over: \"{{ input.xs }}\"\n"                                                     \
    "    max_concurrency: 2\n" extra                                                     \
    "    do:\n"                                                                          \
    "      call: { provider: b, prompt: \"{{ item }}\" }\n"

/* A map of 1,500 items in batch mode submits every line though its
 * max_concurrency is 2 and the job's in-flight cap 1,024, parks with one
 * wait per line, and once the lines are done a second run answers every
 * item from its line, in order, at the batch price, submitting nothing. */
Test(engine_batch, map_submits_all_parks_and_resumes)
{
    const int n = 1500;
    dsl_graph *g = et_compile(MAP_YAML("    mode: batch\n    batch_window: 2s\n"
                                       "    deadline: 1h\n"));
    char *input = items_input(n);
    run_t r = { 0 };
    run_once(&r, g, input);
    cr_assert_null(r.res.output);
    cr_assert_null(r.res.error, "%s", json_dumps(r.res.error, 0));
    cr_assert_eq(FB.submits, n);
    cr_assert_eq(r.batched, n);
    cr_assert_eq(FB.window_ms, 2000u);
    cr_assert_eq(FB.deadline_ms, 3600000u);
    cr_assert(truth(json_is_array(r.waits)));
    cr_assert_eq(json_array_size(r.waits), (size_t)n);
    json_t *w0 = json_array_get(r.waits, 0);
    cr_assert_str_eq(json_string_value(json_object_get(w0, "batch")), "loom-testbatch");
    cr_assert_str_eq(json_string_value(json_object_get(w0, "node")), "do.map.do");
    cr_assert(json_string_value(json_object_get(w0, "key")));
    cr_assert(truth(json_is_integer(json_object_get(w0, "seq"))));
    cr_assert_null(json_object_get(w0, "signal"));
    cr_assert_null(json_object_get(w0, "timeout_ms"));
    /* woken before anything is done: it parks again, submitting nothing */
    run_once(&r, g, input);
    cr_assert_null(r.res.output);
    cr_assert_eq(FB.submits, n);
    cr_assert_eq(json_array_size(r.waits), (size_t)n);
    fb_finish_all(0);
    run_once(&r, g, input);
    cr_assert_null(r.res.error, "%s", json_dumps(r.res.error, 0));
    cr_assert_eq(json_array_size(r.res.output), (size_t)n);
    for (int i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "A:x%d", i);
        cr_assert_str_eq(json_string_value(json_array_get(r.res.output, (size_t)i)), want);
    }
    cr_assert_eq(FB.submits, n);
    json_t *u = json_object_get(r.res.usage, "b");
    cr_assert_eq(json_integer_value(json_object_get(u, "calls")), n);
    cr_assert_eq(json_integer_value(json_object_get(u, "input_tokens")), 10 * n);
    /* half of 2 and 4 USD per million: (10 * 1 + 20 * 2) / 1e6 per line */
    double want = n * (10.0 * 1 + 20.0 * 2) / 1e6;
    double got = json_number_value(json_object_get(u, "cost_usd"));
    cr_assert(fabs(got - want) < 1e-9, "cost %g, want %g", got, want);
    /* every line is checkpointed: a later run replays, nothing is looked up */
    cr_assert_eq(json_object_size(r.records), (size_t)n);
    int lookups = FB.lookups;
    run_once(&r, g, input);
    cr_assert_eq(json_array_size(r.res.output), (size_t)n);
    cr_assert_eq(FB.lookups, lookups);
    free(input);
    run_free(&r);
    dsl_graph_unref(g);
}

/* A running job whose lines end is told so: its parked call looks again
 * and the job ends without parking. */
Test(engine_batch, ready_wakes_a_running_job)
{
    ET.prov.latency_ms = 300;
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do:\n"
                              "  parallel:\n"
                              "    a: { call: { provider: b, prompt: one, mode: batch } }\n"
                              "    b: { call: { provider: default, prompt: two } }\n");
    run_t r = { 0 };
    r.records = json_object();
    engine_job_options o = { .name = "job1", .checkpoint = on_checkpoint, .checkpoint_ud = &r,
                             .trace = on_trace, .trace_ud = &r };
    json_t *in = json_object();
    r.job = engine_submit(ET.eng, g, in, &o, on_done, &r);
    json_decref(in);
    while (FB.submits == 0) /* the line is queued on the job's first pass */
        reactor_run_once(ET.r, 5);
    cr_assert_eq(ET.prov.served, 0, "the direct call is still out");
    fb_finish_all(0);
    engine_job_batch_ready(r.job);
    et_wait(&r.res);
    cr_assert_null(r.waits);
    cr_assert_null(r.res.error, "%s", json_dumps(r.res.error, 0));
    cr_assert_str_eq(json_string_value(json_object_get(r.res.output, "a")), "A:one");
    cr_assert_str_eq(json_string_value(json_object_get(r.res.output, "b")), "two");
    cr_assert_eq(FB.submits, 1);
    run_free(&r);
    dsl_graph_unref(g);
}

/* An embed of one string in batch mode answers its vector, as direct. */
Test(engine_batch, embed)
{
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do: { embed: { provider: b, input: abc, mode: batch } }\n");
    run_t r = { 0 };
    run_once(&r, g, "{}");
    cr_assert_eq(FB.submits, 1);
    fb_finish_all(0);
    run_once(&r, g, "{}");
    cr_assert_null(r.res.error, "%s", json_dumps(r.res.error, 0));
    cr_assert(truth(json_is_array(r.res.output)));
    cr_assert_float_eq(json_number_value(json_array_get(r.res.output, 0)), 3.0, 1e-9);
    run_free(&r);
    dsl_graph_unref(g);
}

/* Cancelling a job with calls parked on lines ends it at once. */
Test(engine_batch, cancel_with_parked_lines)
{
    ET.prov.latency_ms = 5000;
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do:\n"
                              "  parallel:\n"
                              "    a: { map: { over: \"{{ input.xs }}\", mode: batch, "
                              "do: { call: { provider: b, prompt: \"{{ item }}\" } } } }\n"
                              "    b: { call: { provider: default, prompt: two } }\n");
    run_t r = { 0 };
    engine_job_options o = { .name = "job1", .trace = on_trace, .trace_ud = &r };
    json_t *in = json_pack("{s:[s,s,s]}", "xs", "p", "q", "r");
    r.job = engine_submit(ET.eng, g, in, &o, on_done, &r);
    json_decref(in);
    while (FB.submits < 3)
        reactor_run_once(ET.r, 5);
    engine_job_batch_ready(r.job); /* a pass pending when the cancel comes */
    engine_cancel(r.job);
    cr_assert(r.res.done);
    cr_assert_str_eq(et_code(&r.res), "cancelled");
    cr_assert_null(r.waits);
    cr_assert_eq(ET.prov.served, 0, "the direct call was withdrawn");
    run_free(&r);
    dsl_graph_unref(g);
}

/* A line without a result fails its attempt with the line's error; the
 * retry submits a new line as attempt 2, which answers. */
Test(engine_batch, failed_line_is_retried_in_a_new_line)
{
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do:\n"
                              "  call: { provider: b, prompt: p, mode: batch }\n"
                              "  retry: { max_attempts: 2, initial_delay: 1ms }\n");
    run_t r = { 0 };
    run_once(&r, g, "{}");
    cr_assert_eq(FB.submits, 1);
    fb_finish_all(1);
    run_once(&r, g, "{}");
    cr_assert_null(r.res.output);
    cr_assert_eq(FB.submits, 2, "the retry is a new line");
    cr_assert_eq(FB.v[0].attempt, 2);
    cr_assert_eq(json_array_size(r.waits), 1u);
    fb_finish_all(0);
    run_once(&r, g, "{}");
    cr_assert_str_eq(json_string_value(r.res.output), "A:p");
    run_free(&r);
    dsl_graph_unref(g);
}

/* Out of attempts: the line's error is the step's, typed. */
Test(engine_batch, failed_line_fails_the_step)
{
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do:\n"
                              "  call: { provider: b, prompt: p, mode: batch }\n"
                              "  retry: { max_attempts: 1 }\n");
    run_t r = { 0 };
    run_once(&r, g, "{}");
    fb_finish_all(1);
    run_once(&r, g, "{}");
    cr_assert_str_eq(et_code(&r.res), "upstream");
    cr_assert(strstr(json_string_value(json_object_get(r.res.error, "message")), "expired"));
    run_free(&r);
    dsl_graph_unref(g);
}

/* fallback_direct: the retry of a failed line is a direct call (which the
 * test provider refuses, saying so). */
Test(engine_batch, fallback_direct_retries_directly)
{
    dsl_graph *g = et_compile("loom: 1\nname: t\n"
                              "do:\n"
                              "  call: { provider: b, prompt: p, mode: batch, "
                              "fallback_direct: true }\n"
                              "  retry: { max_attempts: 2, initial_delay: 1ms }\n");
    run_t r = { 0 };
    run_once(&r, g, "{}");
    fb_finish_all(1);
    run_once(&r, g, "{}");
    cr_assert_eq(FB.submits, 1, "no second line");
    cr_assert_null(r.res.output);
    cr_assert(strstr(json_string_value(json_object_get(r.res.error, "message")),
                     "tbatch: a direct call"), "%s", json_dumps(r.res.error, 0));
    cr_assert_eq(json_integer_value(json_object_get(r.res.error, "attempts")), 2);
    run_free(&r);
    dsl_graph_unref(g);
}

/* A map that says nothing goes to a batch when the provider's maps_over is
 * reached, and directly below it. */
Test(engine_batch, maps_over)
{
    engine_free(ET.eng);
    ET.eng = engine_new(ET.r, ET.pool, ET.plugins, NULL);
    BAPI.maps_over = 5;
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "b", "tbatch", NULL, make_up, NULL, err, sizeof err),
                 0, "%s", err);
    engine_set_batch(ET.eng, &fb_ops, NULL);
    dsl_graph *g = et_compile(MAP_YAML(""));
    char *small = items_input(4), *big = items_input(5);
    run_t r = { 0 };
    run_once(&r, g, small);
    cr_assert_eq(FB.submits, 0);
    cr_assert_str_eq(et_code(&r.res), "upstream", "4 items: direct");
    run_t r2 = { 0 }; /* a job of its own: r's records hold the failures */
    run_once(&r2, g, big);
    cr_assert_eq(FB.submits, 5);
    cr_assert_eq(json_array_size(r2.waits), 5u);
    free(small);
    free(big);
    run_free(&r);
    run_free(&r2);
    dsl_graph_unref(g);
}

/* `mode: direct` on the map wins over the provider's maps_over. */
Test(engine_batch, mode_direct_wins)
{
    engine_free(ET.eng);
    ET.eng = engine_new(ET.r, ET.pool, ET.plugins, NULL);
    BAPI.maps_over = 1;
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "b", "tbatch", NULL, make_up, NULL, err, sizeof err),
                 0, "%s", err);
    engine_set_batch(ET.eng, &fb_ops, NULL);
    dsl_graph *g = et_compile(MAP_YAML("    mode: direct\n"));
    char *input = items_input(3);
    run_t r = { 0 };
    run_once(&r, g, input);
    cr_assert_eq(FB.submits, 0);
    cr_assert_str_eq(et_code(&r.res), "upstream");
    free(input);
    run_free(&r);
    dsl_graph_unref(g);
}

/* A provider without a Batch API (the test's invoke provider) and an
 * engine without batch ops run calls in batch mode directly. */
Test(engine_batch, no_batch_api_runs_directly)
{
    et_result res;
    et_run("loom: 1\nname: t\n"
           "do:\n"
           "  map:\n"
           "    over: \"{{ input.xs }}\"\n"
           "    mode: batch\n"
           "    do: { call: \"{{ item }}\" }\n",
           "{\"xs\": [\"a\", \"b\", \"c\"]}", NULL, &res);
    cr_assert_null(res.error, "%s", json_dumps(res.error, 0));
    cr_assert_str_eq(json_string_value(json_array_get(res.output, 2)), "c");
    cr_assert_eq(ET.prov.calls, 3);
    cr_assert_eq(FB.submits, 0);
    et_result_free(&res);
    engine_set_batch(ET.eng, NULL, NULL);
    et_run("loom: 1\nname: t\n"
           "do: { call: { provider: b, prompt: x, mode: batch } }\n", NULL, NULL, &res);
    cr_assert_eq(FB.submits, 0);
    cr_assert(strstr(json_string_value(json_object_get(res.error, "message")),
                     "tbatch: a direct call"), "%s", json_dumps(res.error, 0));
    et_result_free(&res);
}

/* The batch price: half, the discount, or the batch prices given. */
Test(engine_batch, price_of_a_batch_line)
{
    engine_price p = { .input = 2, .output = 4, .cache_read = 0.2, .cache_write = -1,
                       .batch_input = -1, .batch_output = -1 }, b;
    engine_price_batch(&p, &b);
    cr_assert_float_eq(b.input, 1, 1e-12);
    cr_assert_float_eq(b.output, 2, 1e-12);
    cr_assert_float_eq(b.cache_read, 0.1, 1e-12);
    cr_assert_lt(b.cache_write, 0);
    p.batch_discount = 0.25;
    engine_price_batch(&p, &b);
    cr_assert_float_eq(b.input, 0.5, 1e-12);
    p.batch_input = 1.5;
    p.batch_output = 3;
    engine_price_batch(&p, &b);
    cr_assert_float_eq(b.input, 1.5, 1e-12);
    cr_assert_float_eq(b.output, 3, 1e-12);
}
