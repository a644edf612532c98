/* test_engine_observer.c -- the engine's call observer (engine.h,
 * engine_set_call_observer): one report per provider call attempt, with
 * its instance, plugin, model, operation, workflow, outcome and error
 * class, attempt, and times (duration at least the provider's latency);
 * none for answers from the `cache: true` memo. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/engine_testlib.h"

TestSuite(observer, .init = et_setup, .fini = et_teardown);

#define MAXR 16

typedef struct report {
    char provider[32], plugin[32], model[32], operation[16], workflow[32], error[32];
    bool ok, tenant_null;
    int attempt;
    double duration_s, wait_s, ttft_s;
} report;

typedef struct seen {
    int n;
    report r[MAXR];
} seen;

static void observe(void *ud, const engine_call_report *r)
{
    seen *s = ud;
    if (s->n >= MAXR)
        return;
    report *o = &s->r[s->n++];
    snprintf(o->provider, sizeof o->provider, "%s", r->provider ? r->provider : "(null)");
    snprintf(o->plugin, sizeof o->plugin, "%s", r->plugin ? r->plugin : "(null)");
    snprintf(o->model, sizeof o->model, "%s", r->model ? r->model : "(null)");
    snprintf(o->operation, sizeof o->operation, "%s", r->operation ? r->operation : "(null)");
    snprintf(o->workflow, sizeof o->workflow, "%s", r->workflow ? r->workflow : "(null)");
    snprintf(o->error, sizeof o->error, "%s", r->error ? r->error : "");
    o->ok = r->ok;
    o->tenant_null = r->tenant == NULL;
    o->attempt = r->attempt;
    o->duration_s = r->duration_s;
    o->wait_s = r->wait_s;
    o->ttft_s = r->ttft_s;
}

Test(observer, one_report_per_attempt)
{
    seen s = { 0 };
    engine_set_call_observer(ET.eng, observe, &s);
    ET.prov.latency_ms = 20;
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    et_result r;
    et_run("loom: 1\nname: obs\ndefaults: { model: m7 }\n"
           "do: { call: hi, retry: { max_attempts: 2, initial_delay: 1ms } }\n",
           NULL, NULL, &r);
    cr_assert_not_null(r.output, "%s", r.error ? json_dumps(r.error, 0) : "?");
    cr_assert_eq(s.n, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_str_eq(s.r[i].provider, "default");
        cr_assert_str_eq(s.r[i].plugin, "tprov");
        cr_assert_str_eq(s.r[i].model, "m7");
        cr_assert_str_eq(s.r[i].operation, "chat");
        cr_assert_str_eq(s.r[i].workflow, "obs");
        cr_assert(s.r[i].tenant_null); /* a job submitted without one */
        cr_assert_eq(s.r[i].attempt, i + 1);
        /* the provider's latency is part of each attempt's duration */
        cr_assert(s.r[i].duration_s >= 0.020, "%g", s.r[i].duration_s);
        cr_assert(s.r[i].wait_s >= 0 && s.r[i].wait_s <= s.r[i].duration_s + 1);
        cr_assert_eq(s.r[i].ttft_s, -1); /* not streamed */
    }
    cr_assert(!s.r[0].ok);
    cr_assert_str_eq(s.r[0].error, "upstream");
    cr_assert(s.r[1].ok);
    cr_assert_str_eq(s.r[1].error, "");
    et_result_free(&r);
}

Test(observer, embeddings_and_cache_hits)
{
    seen s = { 0 };
    engine_set_call_observer(ET.eng, observe, &s);
    et_result r;
    et_run("loom: 1\nname: emb\n"
           "do:\n  chain:\n"
           "    - { embed: { input: [a, b] } }\n"
           "    - { call: { prompt: same }, cache: true }\n"
           "    - { call: { prompt: same }, cache: true }\n",
           NULL, NULL, &r);
    cr_assert_not_null(r.output, "%s", r.error ? json_dumps(r.error, 0) : "?");
    /* the embed and the first call; the second call came from the memo */
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.r[0].operation, "embeddings");
    cr_assert_str_eq(s.r[1].operation, "chat");
    cr_assert_eq(ET.prov.calls, 2);
    et_result_free(&r);
}

Test(observer, none_without_an_observer)
{
    seen s = { 0 };
    engine_set_call_observer(ET.eng, observe, &s);
    engine_set_call_observer(ET.eng, NULL, NULL);
    et_result r;
    et_run("loom: 1\nname: quiet\ndo: { call: hi }\n", NULL, NULL, &r);
    cr_assert_not_null(r.output);
    cr_assert_eq(s.n, 0);
    cr_assert_eq(ET.prov.calls, 1);
    et_result_free(&r);
}
