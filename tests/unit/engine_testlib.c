/* engine_testlib.c -- the test plugin and runner behind the engine tests.
 *
 * Lambdas: noop, echo {input, args}, inc (input + 1), fail (loom_error),
 * garbage (NULL without an error), slow (sleeps args.ms on the pool).
 * Provider "tprov": invoke-based, answers after reactor timers. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dsl/dsl.h"
#include "daemon/providers.h"
#include "tests/unit/engine_testlib.h"

et_world ET;

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- lambdas */

static json_t *l_noop(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    return json_incref(in);
}

static json_t *l_echo(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    return json_pack("{s:O, s:O}", "input", in, "args", args);
}

static json_t *l_inc(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    return json_integer(json_integer_value(in) + 1);
}

static json_t *l_fail(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    __atomic_add_fetch(&ET.lambda_calls, 1, __ATOMIC_SEQ_CST);
    const char *why = json_string_value(json_object_get(args, "why"));
    loom_error(ctx, LOOM_E_LAMBDA_FAILED, "boom: %s", why ? why : "no reason");
    return NULL;
}

static json_t *l_garbage(loom_ctx *ctx, void *st, json_t *in, json_t *args) { return NULL; }

static json_t *l_slow(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    usleep((useconds_t)(json_integer_value(json_object_get(args, "ms")) * 1000));
    __atomic_add_fetch(&ET.lambda_calls, 1, __ATOMIC_SEQ_CST);
    return json_incref(in);
}

json_t *et_bad_value(const char *kind)
{
    if (!strcmp(kind, "utf8")) /* what json_string would refuse: a stray byte */
        return json_pack("{s:[i, o]}", "a", 1, json_stringn_nocheck("ok\xff", 3));
    if (!strcmp(kind, "key")) {
        json_t *o = json_object();
        json_object_set_new_nocheck(o, "k\xfe", json_true());
        return o;
    }
    if (!strcmp(kind, "nan")) /* jansson refuses NaN, so this is NULL */
        return json_real(NAN);
    if (!strcmp(kind, "deep")) {
        json_t *v = json_integer(0);
        for (int i = 0; i < 1000; i++)
            v = json_pack("[o]", v);
        return v;
    }
    if (!strcmp(kind, "bigint"))
        return json_integer((json_int_t)1 << 60);
    if (!strcmp(kind, "huge")) { /* 65 MiB as JSON from one shared 1 MiB string */
        char *buf = malloc((size_t)1 << 20);
        memset(buf, 'x', (size_t)1 << 20);
        json_t *str = json_stringn(buf, (size_t)1 << 20), *arr = json_array();
        free(buf);
        for (int i = 0; i < 65; i++)
            json_array_append(arr, str);
        json_decref(str);
        return arr;
    }
    return json_null();
}

static json_t *l_bad(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    if (!strcmp(json_string_value(json_object_get(args, "kind")), "errbytes")) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "bad \xff byte");
        return NULL;
    }
    return et_bad_value(json_string_value(json_object_get(args, "kind")));
}

#define PF (LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST)
static const loom_lambda lambdas[] = {
    { .name = "bad", .fn = l_bad, .flags = 0, .summary = "a bad value of args.kind" },
    { .name = "bad_inline", .fn = l_bad, .flags = PF, .summary = "the same, inline" },
    { .name = "noop", .fn = l_noop, .flags = PF, .summary = "input as is" },
    { .name = "echo", .fn = l_echo, .flags = PF, .summary = "input and args" },
    { .name = "inc", .fn = l_inc, .flags = PF, .summary = "input + 1" },
    { .name = "fail", .fn = l_fail, .flags = 0, .summary = "fails" },
    { .name = "garbage", .fn = l_garbage, .flags = 0, .summary = "returns nothing" },
    { .name = "slow", .fn = l_slow, .flags = 0, .summary = "sleeps" },
};

/* ---- provider */

/* The cancel hook finds a call's pending answer here. */
#define MAXCALLS 4096
typedef struct tcall tcall;
static struct { loom_call *call; tcall *tc; } calltab[MAXCALLS];

static void calltab_put(loom_call *call, tcall *tc)
{
    for (int i = 0; i < MAXCALLS; i++)
        if (!calltab[i].call) {
            calltab[i].call = call;
            calltab[i].tc = tc;
            return;
        }
}

static tcall *calltab_take(loom_call *call)
{
    for (int i = 0; i < MAXCALLS; i++)
        if (calltab[i].call == call) {
            calltab[i].call = NULL;
            return calltab[i].tc;
        }
    return NULL;
}

struct tcall {
    loom_call *call;
    void *timer;
    json_t *answer;
    int fail;
};

static void tcall_fire(void *ud)
{
    tcall *tc = ud;
    et_provider_state *s = &ET.prov;
    loom_call *call = tc->call;
    calltab_take(call);
    s->inflight--;
    if (tc->fail) {
        json_decref(tc->answer);
        free(tc);
        loom_fail_after(call, s->fail_code, s->retry_after_ms, "injected failure");
        return;
    }
    s->served++;
    json_t *ans = tc->answer;
    free(tc);
    call->api->complete(call, ans, NULL);
}

static int p_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    et_provider_state *s = &ET.prov;
    tcall *tc = calloc(1, sizeof *tc);
    if (!tc)
        return -1;
    int idx = s->calls++;
    json_decref(s->last_request);
    s->last_request = json_pack("{s:s?, s:O?, s:O?, s:b, s:O?, s:O?, s:s?}", "model", req->model,
                                "messages", req->messages, "params", req->params, "json_mode",
                                req->json_mode, "inputs", req->inputs, "schema", req->schema,
                                "schema_name", req->schema_name);
    tc->call = call;
    tc->fail = idx < s->fail_first;
    if (req->kind == LOOM_CALL_EMBED) {
        tc->answer = json_array();
        for (size_t i = 0; i < json_array_size(req->inputs); i++)
            json_array_append_new(tc->answer, json_pack("[f,f]", (double)i, 1.0));
    } else if (s->bad_kind) {
        tc->answer = et_bad_value(s->bad_kind);
    } else if (s->script) {
        size_t n = 0;
        while (s->script[n])
            n++;
        tc->answer = json_string(s->script[(size_t)idx % n]);
    } else {
        json_t *last = json_array_get(req->messages, json_array_size(req->messages) - 1);
        tc->answer = json_incref(json_object_get(last, "content"));
    }
    int lat = s->latency_ms + s->latency_step * idx;
    if (lat < 0)
        lat = 0;
    s->inflight++;
    if (s->inflight > s->max_inflight)
        s->max_inflight = s->inflight;
    tc->timer = call->api->timer_add(call, (uint64_t)lat, tcall_fire, tc);
    calltab_put(call, tc);
    return 0;
}

static void p_cancel(void *state, loom_call *call);

static const loom_option p_opts[] = {
    { "flavour", LOOM_OPT_STRING, NULL, 0, "ignored" },
    { NULL, 0, NULL, 0, NULL },
};

static int p_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    *state = NULL;
    return 0;
}

static int h_encode(loom_ctx *ctx, void *st, const loom_request *req, loom_http_request *out)
{
    return -1;
}

static int h_decode(loom_ctx *ctx, void *st, const loom_request *req,
                    const loom_http_response *resp, loom_result *out)
{
    return -1;
}

static const loom_provider providers[] = {
    { .name = "tprov", .options = p_opts, .init = p_init, .invoke = p_invoke, .cancel = p_cancel,
      .summary = "test provider" },
    { .name = "thttp", .options = p_opts, .encode = h_encode, .decode = h_decode, .summary = "an HTTP provider" },
};

static const loom_plugin tplugin = {
    LOOM_PLUGIN_HEADER, .name = "t", .version = "1", .description = "engine tests",
    .lambdas = lambdas, .nlambdas = sizeof lambdas / sizeof lambdas[0],
    .providers = providers, .nproviders = 2,
};

static void p_cancel(void *state, loom_call *call)
{
    tcall *tc = calltab_take(call);
    if (!tc)
        return;
    call->api->timer_cancel(call, tc->timer);
    json_decref(tc->answer);
    free(tc);
    ET.prov.inflight--;
    ET.prov.cancelled++;
}

/* ---- world */

void et_setup(void)
{
    memset(&ET, 0, sizeof ET);
    memset(calltab, 0, sizeof calltab);
    ET.r = reactor_new();
    cr_assert(ET.r);
    ET.pool = pool_new(ET.r, 4);
    cr_assert(ET.pool);
    ET.plugins = plugins_new(NULL, NULL);
    cr_assert(ET.plugins);
    cr_assert_eq(plugins_add(ET.plugins, &tplugin, "test", NULL), 0);
    ET.eng = engine_new(ET.r, ET.pool, ET.plugins, NULL);
    cr_assert(ET.eng);
    ET.providers = providers_new(ET.r);
    cr_assert(ET.providers);
    char err[256];
    cr_assert_eq(engine_add_provider(ET.eng, "default", "tprov", NULL, NULL, NULL, err, sizeof err), 0, "%s", err);
}

void et_teardown(void)
{
    engine_free(ET.eng); /* NULL when a test freed it */
    providers_free(ET.providers); /* after the engine: its upstreams use the client */
    pool_free(ET.pool);
    plugins_free(ET.plugins);
    reactor_free(ET.r);
    json_decref(ET.prov.last_request);
}

dsl_graph *et_compile(const char *yaml)
{
    dsl_diags d;
    dsl_diags_init(&d, "t.yaml");
    dsl_graph *g = dsl_compile("t.yaml", yaml, strlen(yaml), NULL, &d);
    if (!g) {
        char *text = dsl_diags_text(&d, NULL);
        fputs(text ? text : "out of memory\n", stderr);
        free(text);
    }
    dsl_diags_free(&d);
    cr_assert(g, "workflow does not compile");
    return g;
}

static uint64_t t_start;

void et_done(engine_job_t *job, void *ud)
{
    et_result *res = ud;
    res->done = 1;
    res->elapsed_us = mono_us() - t_start;
    json_t *o = engine_job_output(job);
    res->output = o ? json_incref(o) : NULL;
    res->error = engine_error_json(engine_job_error(job));
    json_t *u = engine_job_usage(job);
    res->usage = u ? json_deep_copy(u) : NULL;
}

void et_wait(et_result *res)
{
    uint64_t t0 = mono_us();
    while (!res->done) {
        reactor_run_once(ET.r, 5);
        cr_assert(mono_us() - t0 < 20u * 1000000u, "hang guard: the job did not end");
    }
}

void et_run(const char *yaml, const char *input, const engine_job_options *o, et_result *res)
{
    memset(res, 0, sizeof *res);
    dsl_graph *g = et_compile(yaml);
    json_t *in = input ? json_loads(input, JSON_DECODE_ANY, NULL) : NULL;
    cr_assert(!input || in, "bad test input");
    t_start = mono_us();
    engine_job_t *job = engine_submit(ET.eng, g, in, o, et_done, res);
    cr_assert(job);
    json_decref(in);
    dsl_graph_unref(g);
    et_wait(res);
}

void et_result_free(et_result *res)
{
    json_decref(res->output);
    json_decref(res->error);
    json_decref(res->usage);
}

const char *et_code(const et_result *res)
{
    return res->error ? json_string_value(json_object_get(res->error, "code")) : "";
}
