/* test_loomd_trace.c -- traces from a real loomd: a workflow with a chain
 * and a map of provider calls (an OpenAI-shaped provider served by the
 * fake collector, tests/unit/fake_collector.c, which also takes the OTLP
 * posts), submitted with a traceparent. Checks the span tree the collector
 * receives (one job span under the submitter's span, node spans under it
 * following the graph, call spans under their nodes, one trace id
 * throughout, the GenAI attributes), the traceparent each provider request
 * carried, that a collector which is down costs only dropped spans, and
 * that a malformed traceparent is refused. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/fake_collector.h"
#include "tests/unit/loomd_harness.h"

static lh_daemon D;
static fake_collector *FC;

static void teardown(void)
{
    if (D.pid > 0)
        lh_stop(&D, SIGKILL);
    lh_teardown(&D);
    fc_stop(FC);
    FC = NULL;
}

#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT_ID "00f067aa0ba902b7"
#define TP "00-" TRACE_ID "-" PARENT_ID "-01"
#define ITEMS 3

#define TRACED_WF                                                                                  \
    "loom: 1\nname: traced\ndefaults: { provider: llm, model: m1 }\n"                              \
    "do:\n  chain:\n"                                                                              \
    "    - call: 'first {{ input.x }}'\n"                                                          \
    "    - map: { over: '{{ input.items }}', do: { call: 'item {{ item }}' } }\n"

/* A quick step, then one that takes 2 s (the harness's `slow` mock). */
#define RESUME_WF                                                                                  \
    "loom: 1\nname: resumable\n"                                                                   \
    "do:\n  chain:\n    - call: 'fast {{ input.x }}'\n"                                            \
    "    - call: { prompt: 'slowly {{ prev }}', provider: slow }\n"

/* Starts loomd with the llm provider on PROVIDER_PORT and tracing to
 * OTLP_PORT (0: no tracing). */
static void start(int provider_port, int otlp_port)
{
    char prov[512];
    int n = snprintf(prov, sizeof prov,
                     "  llm: { plugin: openai, base_url: \"http://127.0.0.1:%d/v1\" }\n",
                     provider_port);
    if (otlp_port)
        snprintf(prov + n, sizeof prov - (size_t)n,
                 "tracing: { otlp: \"http://127.0.0.1:%d\", service_name: loomd-test }\n",
                 otlp_port);
    lh_setup(&D, prov, NULL);
    lh_workflow(&D, "traced", TRACED_WF);
    lh_workflow(&D, "resumable", RESUME_WF);
    lh_start(&D);
}

static json_t *submit_wait(const char *extra)
{
    char req[1024];
    snprintf(req, sizeof req,
             "{\"id\":1,\"op\":\"submit\",\"workflow\":\"traced\",\"input\":{\"x\":\"a\","
             "\"items\":[1,2,3]},\"wait\":true%s}", extra);
    return lh_call(&D, req, 15000);
}

/* Member KEY of O as a string, "" when absent (so a comparison fails
 * instead of crashing). */
static const char *str_of(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Attribute KEY of span S as its OTLP value object, or NULL. */
static json_t *attr(json_t *s, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(s, "attributes"), i, a)
        if (strcmp(str_of(a, "key"), key) == 0)
            return json_object_get(a, "value");
    return NULL;
}

static const char *attr_str(json_t *s, const char *key)
{
    return str_of(attr(s, key), "stringValue");
}

/* The spans named with PREFIX in SPANS (a new array of borrowed ones). */
static json_t *named(json_t *spans, const char *prefix)
{
    json_t *out = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s)
        if (strncmp(str_of(s, "name"), prefix, strlen(prefix)) == 0)
            json_array_append(out, s);
    return out;
}

/* The first span named with PREFIX in SPANS (borrowed), or NULL. */
static json_t *first_named(json_t *spans, const char *prefix)
{
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s)
        if (strncmp(str_of(s, "name"), prefix, strlen(prefix)) == 0)
            return s;
    return NULL;
}

static json_t *by_id(json_t *spans, const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s)
        if (id && strcmp(str_of(s, "spanId"), id) == 0)
            return s;
    return NULL;
}

/* Waits up to BOUND_MS until the collector holds N spans; returns them. */
static json_t *wait_spans(size_t n, long bound_ms)
{
    long until = lh_now_ms() + bound_ms;
    for (;;) {
        json_t *spans = fc_spans(FC);
        if (json_array_size(spans) >= n || lh_now_ms() > until)
            return spans;
        json_decref(spans);
        struct timespec nap = { 0, 20 * 1000000L };
        nanosleep(&nap, NULL);
    }
}

Test(loomd_trace, the_span_tree_of_a_chain_and_a_map, .fini = teardown)
{
    FC = fc_start();
    cr_assert(FC != NULL);
    start(fc_port(FC), fc_port(FC));
    json_t *r = submit_wait(",\"traceparent\":\"" TP "\"");
    json_t *res = json_object_get(r, "result");
    cr_assert(eq(str, (char *)str_of(res, "state"), (char *)"succeeded"), "%s", json_dumps(r, 0));
    const char *job_id = str_of(r, "job");
    cr_assert(eq(str, (char *)str_of(res, "traceparent"), (char *)TP)); /* stored with the job */
    /* job, chain, call, map, ITEMS calls in the map; a call span per call */
    size_t calls = 1 + ITEMS, want = 1 + 1 + 1 + 1 + ITEMS + calls;
    json_t *spans = wait_spans(want, 15000);
    cr_assert(eq(sz, json_array_size(spans), want), "%s", json_dumps(spans, JSON_INDENT(1)));
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s) /* one trace throughout: the submitter's */
        cr_assert(eq(str, (char *)str_of(s, "traceId"), (char *)TRACE_ID));

    json_t *jobs = named(spans, "invoke_workflow ");
    cr_assert(eq(sz, json_array_size(jobs), 1));
    json_t *job = json_array_get(jobs, 0);
    cr_assert(eq(str, (char *)str_of(job, "parentSpanId"), (char *)PARENT_ID));
    cr_assert(eq(str, (char *)attr_str(job, "loom.job.id"), (char *)job_id));
    cr_assert(eq(str, (char *)attr_str(job, "loom.workflow"), (char *)"traced"));
    cr_assert(eq(sz, strlen(attr_str(job, "loom.workflow.version")), 16));
    cr_assert(eq(str, (char *)attr_str(job, "loom.tenant"), (char *)"default"));
    cr_assert(eq(sz, json_object_size(json_object_get(job, "status")), 0)); /* succeeded */

    json_t *chain = first_named(spans, "chain ");
    cr_assert(chain != NULL);
    cr_assert(eq(str, (char *)str_of(chain, "parentSpanId"), (char *)str_of(job, "spanId")));
    json_t *map = first_named(spans, "map ");
    cr_assert(map != NULL);
    cr_assert(eq(str, (char *)str_of(map, "parentSpanId"), (char *)str_of(chain, "spanId")));
    json_t *call_nodes = named(spans, "call ");
    cr_assert(eq(sz, json_array_size(call_nodes), calls));
    size_t under_map = 0;
    json_array_foreach(call_nodes, i, s) {
        const char *parent = str_of(s, "parentSpanId");
        if (strcmp(parent, str_of(map, "spanId")) == 0)
            under_map++;
        else
            cr_assert(eq(str, (char *)parent, (char *)str_of(chain, "spanId")));
    }
    cr_assert(eq(sz, under_map, ITEMS));

    /* the provider calls: CLIENT spans under their call node, GenAI
     * attributes, and the header each request carried names one of them */
    json_t *chats = named(spans, "chat ");
    cr_assert(eq(sz, json_array_size(chats), calls));
    json_t *sent = fc_requests(FC, "/chat/completions");
    cr_assert(eq(sz, json_array_size(sent), calls));
    json_array_foreach(chats, i, s) {
        cr_assert(eq(str, (char *)str_of(s, "name"), (char *)"chat m1"));
        cr_assert(eq(int, (int)json_integer_value(json_object_get(s, "kind")), 3));
        json_t *node = by_id(call_nodes, str_of(s, "parentSpanId"));
        cr_assert(node != NULL, "a call span's parent is not a call node");
        cr_assert(eq(str, (char *)attr_str(s, "gen_ai.provider.name"), (char *)"openai"));
        cr_assert(eq(str, (char *)attr_str(s, "gen_ai.system"), (char *)"openai"));
        cr_assert(eq(str, (char *)attr_str(s, "gen_ai.operation.name"), (char *)"chat"));
        cr_assert(eq(str, (char *)attr_str(s, "gen_ai.request.model"), (char *)"m1"));
        cr_assert(eq(str, (char *)str_of(attr(s, "gen_ai.usage.input_tokens"), "intValue"),
                     (char *)"7"));
        cr_assert(eq(str, (char *)str_of(attr(s, "gen_ai.usage.output_tokens"), "intValue"),
                     (char *)"3"));
        json_t *reasons = json_object_get(json_object_get(attr(s, "gen_ai.response.finish_reasons"),
                                                          "arrayValue"), "values");
        cr_assert(eq(sz, json_array_size(reasons), 1), "the answer's finish reason");
        cr_assert(eq(str, (char *)str_of(json_array_get(reasons, 0), "stringValue"),
                     (char *)"stop"));
        char header[64];
        snprintf(header, sizeof header, "00-%s-%s-01", TRACE_ID, str_of(s, "spanId"));
        size_t k, found = 0;
        json_t *q;
        json_array_foreach(sent, k, q) found += strcmp(str_of(q, "traceparent"), header) == 0;
        cr_assert(eq(sz, found, 1), "no request carried %s", header);
    }
    json_decref(sent);
    json_decref(chats);
    json_decref(call_nodes);
    json_decref(jobs);
    json_decref(spans);

    json_t *st = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    json_t *tr = json_object_get(st, "tracing");
    cr_assert(eq(int, (int)json_integer_value(json_object_get(tr, "exported")), (int)want));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(tr, "dropped")), 0));
    json_decref(st);
    json_decref(r);
}

Test(loomd_trace, a_job_without_a_traceparent_starts_a_trace, .fini = teardown)
{
    FC = fc_start();
    cr_assert(FC != NULL);
    start(fc_port(FC), fc_port(FC));
    json_t *r = submit_wait("");
    json_t *res = json_object_get(r, "result");
    cr_assert(eq(str, (char *)str_of(res, "state"), (char *)"succeeded"), "%s", json_dumps(r, 0));
    const char *tp = str_of(res, "traceparent"); /* made at submit and stored */
    cr_assert(strlen(tp) == 55, "%s", json_dumps(res, 0));
    json_t *spans = wait_spans(1 + 3 + ITEMS + 1 + ITEMS, 15000);
    json_t *job = first_named(spans, "invoke_workflow ");
    cr_assert(job != NULL);
    cr_assert(eq(ptr, json_object_get(job, "parentSpanId"), NULL)); /* a root */
    char trace_id[33];
    snprintf(trace_id, sizeof trace_id, "%.32s", tp + 3);
    cr_assert(eq(str, (char *)str_of(job, "traceId"), trace_id));
    json_decref(spans);
    json_decref(r);
}

Test(loomd_trace, a_malformed_traceparent_is_refused, .fini = teardown)
{
    FC = fc_start();
    cr_assert(FC != NULL);
    start(fc_port(FC), fc_port(FC));
    json_t *r = submit_wait(",\"traceparent\":\"00-" TRACE_ID "-0000000000000000-01\"");
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "error"), "code"),
                 (char *)"invalid_request"), "%s", json_dumps(r, 0));
    cr_assert(strstr(str_of(json_object_get(r, "error"), "message"), "traceparent") != NULL);
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"traced\",\"traceparent\":7}", 5000);
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "error"), "code"),
                 (char *)"invalid_request"), "%s", json_dumps(r, 0));
    json_decref(r);
}

Test(loomd_trace, jobs_finish_while_the_collector_is_down, .fini = teardown)
{
    FC = fc_start(); /* the provider only */
    cr_assert(FC != NULL);
    fake_collector *gone = fc_start(); /* a port that was just given up */
    cr_assert(gone != NULL);
    int dead_port = fc_port(gone);
    fc_stop(gone);
    start(fc_port(FC), dead_port);
    for (int i = 0; i < 3; i++) {
        json_t *r = submit_wait(",\"traceparent\":\"" TP "\"");
        cr_assert(eq(str, (char *)str_of(json_object_get(r, "result"), "state"),
                     (char *)"succeeded"), "%s", json_dumps(r, 0));
        json_decref(r);
    }
    /* every span of the three jobs is given up once its posts failed */
    long want = 3 * (1 + 3 + ITEMS + 1 + ITEMS), until = lh_now_ms() + 30000;
    json_t *tr = NULL, *st = NULL;
    for (;;) {
        json_decref(st);
        st = lh_call(&D, "{\"op\":\"stats\"}", 5000);
        tr = json_object_get(st, "tracing");
        if (json_integer_value(json_object_get(tr, "dropped")) >= want || lh_now_ms() > until)
            break;
        struct timespec nap = { 0, 50 * 1000000L };
        nanosleep(&nap, NULL);
    }
    cr_assert(eq(int, (int)json_integer_value(json_object_get(tr, "dropped")), (int)want),
              "%s", json_dumps(tr, 0));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(tr, "exported")), 0));
    cr_assert(ge(int, (int)json_integer_value(json_object_get(tr, "failed_posts")), 1));
    json_decref(st);
    cr_assert(eq(sz, fc_count(FC, "/v1/traces"), 0));
}

Test(loomd_trace, a_resumed_job_continues_its_trace, .fini = teardown)
{
    FC = fc_start();
    cr_assert(FC != NULL);
    start(fc_port(FC), fc_port(FC));
    int ev = lh_subscribe(&D);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"resumable\",\"input\":{\"x\":1},"
                            "\"traceparent\":\"" TP "\"}", 5000);
    const char *job = str_of(r, "job");
    cr_assert(job[0] != 0, "%s", json_dumps(r, 0));
    char id[64];
    snprintf(id, sizeof id, "%s", job);
    json_decref(r);
    /* killed while the slow step runs: no job span yet, and none lost later */
    json_t *e = lh_wait_event(ev, "step_started", id, 5000);
    while (e && strcmp(str_of(e, "node"), "do.chain[1]") != 0) {
        json_decref(e);
        e = lh_wait_event(ev, "step_started", id, 5000);
    }
    cr_assert(e != NULL, "the slow step never started");
    json_decref(e);
    lh_stop(&D, SIGKILL);
    lh_start(&D);
    char wait[256];
    snprintf(wait, sizeof wait, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":15}", id);
    r = lh_call(&D, wait, 20000);
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "job"), "state"), (char *)"succeeded"),
              "%s", json_dumps(r, 0));
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "job"), "traceparent"), (char *)TP));
    json_decref(r);
    /* the second run's spans: the job span once, under the submitter's span,
     * in the submitter's trace, and the run's root node under it */
    long until = lh_now_ms() + 15000;
    json_t *spans = NULL, *jobs = NULL;
    for (;;) {
        json_decref(spans);
        json_decref(jobs);
        spans = fc_spans(FC);
        jobs = named(spans, "invoke_workflow ");
        if (json_array_size(jobs) > 0 || lh_now_ms() > until)
            break;
        struct timespec nap = { 0, 20 * 1000000L };
        nanosleep(&nap, NULL);
    }
    cr_assert(eq(sz, json_array_size(jobs), 1), "%s", json_dumps(spans, 0));
    json_t *js = json_array_get(jobs, 0);
    cr_assert(eq(str, (char *)str_of(js, "parentSpanId"), (char *)PARENT_ID));
    cr_assert(eq(str, (char *)attr_str(js, "loom.job.id"), id));
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s)
        cr_assert(eq(str, (char *)str_of(s, "traceId"), (char *)TRACE_ID));
    json_t *chains = named(spans, "chain ");
    cr_assert(ge(sz, json_array_size(chains), 1));
    json_array_foreach(chains, i, s)
        cr_assert(eq(str, (char *)str_of(s, "parentSpanId"), (char *)str_of(js, "spanId")));
    json_decref(chains);
    json_decref(jobs);
    json_decref(spans);
    close(ev);
}

Test(loomd_trace, without_tracing_a_submitted_traceparent_still_reaches_providers,
     .fini = teardown)
{
    FC = fc_start();
    cr_assert(FC != NULL);
    start(fc_port(FC), 0);
    json_t *r = submit_wait(",\"traceparent\":\"" TP "\"");
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "result"), "state"), (char *)"succeeded"),
              "%s", json_dumps(r, 0));
    json_decref(r);
    json_t *sent = fc_requests(FC, "/chat/completions");
    cr_assert(eq(sz, json_array_size(sent), 1 + ITEMS));
    size_t i;
    json_t *q;
    json_array_foreach(sent, i, q) /* passed on as it came: no span of loomd's in between */
        cr_assert(eq(str, (char *)str_of(q, "traceparent"), (char *)TP));
    json_decref(sent);
    /* and a job that came without one sends none */
    r = submit_wait("");
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "result"), "state"), (char *)"succeeded"));
    cr_assert(eq(str, (char *)str_of(json_object_get(r, "result"), "traceparent"), (char *)""));
    json_decref(r);
    sent = fc_requests(FC, "/chat/completions");
    cr_assert(eq(sz, json_array_size(sent), 2 * (1 + ITEMS)));
    for (i = 1 + ITEMS; i < json_array_size(sent); i++)
        cr_assert(eq(str, (char *)str_of(json_array_get(sent, i), "traceparent"), (char *)""));
    json_decref(sent);
    r = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert(eq(int, json_is_false(json_object_get(json_object_get(r, "tracing"), "enabled")), 1));
    json_decref(r);
    cr_assert(eq(sz, fc_count(FC, "/v1/traces"), 0));
}
