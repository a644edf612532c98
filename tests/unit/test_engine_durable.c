/* test_engine_durable.c -- a lambda after a paid step waits until the host
 * says the job's checkpoints are durable (engine.h, engine_durable_fn), so a
 * lambda that crashes the daemon never costs that step again at each
 * restart; lambdas with no paid step before them never wait.
 *
 * The host here is the test: its durable hook answers what the test says and
 * counts the questions; engine_job_durable is called when the test decides.
 * Every wait turns the reactor until an event (a question, the job's end),
 * with et_wait's hang guard. */
#include <criterion/criterion.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(durable, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"

typedef struct host {
    bool settled;      /* what the hook answers */
    int asked;         /* questions */
    int checkpoints;
    engine_job_t *job;
    et_result r;
} host;

static bool on_durable(void *ud, engine_job_t *job)
{
    host *h = ud;
    cr_assert_eq(job, h->job);
    h->asked++;
    return h->settled;
}

static void on_checkpoint(void *ud, engine_job_t *job, const char *key, json_t *rec)
{
    host *h = ud;
    (void)job, (void)key, (void)rec;
    h->checkpoints++;
}

static void start(host *h, const char *yaml, const char *input)
{
    dsl_graph *g = et_compile(yaml);
    ET.lambda_calls = 0;
    ET.prov.calls = 0;
    engine_job_options o = { .seed = 7, .checkpoint = on_checkpoint, .checkpoint_ud = h,
                             .durable = on_durable, .durable_ud = h };
    json_t *in = input ? json_loads(input, JSON_DECODE_ANY, NULL) : NULL;
    h->job = engine_submit(ET.eng, g, in, &o, et_done, &h->r);
    cr_assert(h->job);
    json_decref(in);
    dsl_graph_unref(g);
}

/* Turns the reactor until the hook was asked N times (or the job ended). */
static void until_asked(host *h, int n)
{
    for (int i = 0; i < 100000 && h->asked < n && !h->r.done; i++)
        reactor_run_once(ET.r, 10);
    cr_assert_eq(h->asked, n, "the hook was asked %d times, not %d", h->asked, n);
}

/* A few reactor passes with nothing due: what was going to run has run. */
static void settle_passes(void)
{
    for (int i = 0; i < 20; i++)
        reactor_run_once(ET.r, 0);
}

static void lambdas_wait_for_a_paid_step(const char *lambda)
{
    host h = { 0 };
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             HDR "do: { chain: [ { call: 'x' }, { lambda: %s }, { lambda: %s } ] }\n", lambda,
             lambda);
    start(&h, yaml, "1");
    until_asked(&h, 1);
    settle_passes();
    /* a lambda that ran would have been checkpointed (t.inc runs inline,
     * t.slow on the pool) */
    cr_assert_eq(h.checkpoints, 1, "a lambda ran before the call's checkpoint was durable");
    cr_assert_eq(ET.lambda_calls, 0);
    cr_assert(!h.r.done);
    h.settled = true;
    engine_job_durable(h.job);
    et_wait(&h.r);
    cr_assert(h.r.output, "%s", et_code(&h.r));
    /* asked again when it was woken, and not for the second lambda: no paid
     * step between them */
    cr_assert_eq(h.asked, 2);
    cr_assert_eq(h.checkpoints, 3);
    et_result_free(&h.r);
}

Test(durable, an_inline_lambda_waits_for_the_call_before_it)
{
    lambdas_wait_for_a_paid_step("t.inc");
}

Test(durable, a_pool_lambda_waits_for_the_call_before_it)
{
    lambdas_wait_for_a_paid_step("{ fn: t.slow, args: { ms: 1 } }");
}

Test(durable, lambdas_alone_never_ask)
{
    host h = { 0 };
    start(&h, HDR "do: { chain: [ { lambda: t.inc }, { lambda: { fn: t.slow, args: { ms: 1 } } },"
                  " { lambda: t.inc } ] }\n", "1");
    et_wait(&h.r);
    cr_assert(h.r.output, "%s", et_code(&h.r));
    cr_assert_eq(h.asked, 0);
    cr_assert_eq(h.checkpoints, 3);
    cr_assert_eq(ET.lambda_calls, 1); /* t.slow counts its runs */
    et_result_free(&h.r);
}

Test(durable, a_settled_store_costs_one_question)
{
    host h = { .settled = true };
    start(&h, HDR "do: { chain: [ { call: 'x' }, { lambda: t.inc }, { call: 'y' },"
                  " { lambda: t.inc }, { lambda: t.inc } ] }\n", "1");
    et_wait(&h.r);
    cr_assert(h.r.output, "%s", et_code(&h.r));
    cr_assert_eq(h.asked, 2, "one question per lambda after a paid step");
    cr_assert_eq(h.checkpoints, 5);
    et_result_free(&h.r);
}

Test(durable, a_cache_hit_is_not_paid)
{
    const char *yaml = HDR "do: { chain: [ { call: 'x', cache: true }, { lambda: t.inc } ] }\n";
    host first = { .settled = true };
    start(&first, yaml, "1");
    et_wait(&first.r);
    cr_assert_eq(first.asked, 1);
    et_result_free(&first.r);
    host again = { 0 }; /* would wait for ever if asked */
    start(&again, yaml, "1");
    et_wait(&again.r);
    cr_assert(again.r.output, "%s", et_code(&again.r));
    cr_assert_eq(again.asked, 0);
    cr_assert_eq(ET.prov.calls, 0);
    et_result_free(&again.r);
}

Test(durable, a_job_cancelled_while_its_lambdas_wait_ends_clean)
{
    host h = { 0 };
    start(&h, HDR "do: { map: { over: '{{ input }}', do: { chain: [ { call: 'i {{ item }}' },"
                  " { lambda: { fn: t.slow, args: { ms: 1 } } } ] } } }\n", "[1,2,3,4]");
    /* every call ends, and every lambda after one asks and waits */
    until_asked(&h, 4);
    settle_passes();
    cr_assert_eq(h.checkpoints, 4);
    cr_assert_eq(ET.lambda_calls, 0);
    engine_cancel(h.job);
    et_wait(&h.r);
    cr_assert_str_eq(et_code(&h.r), "cancelled");
    cr_assert_eq(ET.lambda_calls, 0);
    cr_assert_eq(engine_job_count(ET.eng), 0);
    et_result_free(&h.r);
}

Test(durable, a_lambda_whose_timeout_passes_while_it_waits_times_out)
{
    host h = { 0 };
    start(&h, HDR "do: { chain: [ { call: 'x' }, { lambda: t.inc, timeout: 50ms } ] }\n", "1");
    until_asked(&h, 1);
    et_wait(&h.r); /* nobody says durable: the lambda's own timeout ends it */
    cr_assert_str_eq(et_code(&h.r), "timeout");
    cr_assert_eq(ET.lambda_calls, 0);
    cr_assert_eq(engine_job_count(ET.eng), 0);
    et_result_free(&h.r);
}
