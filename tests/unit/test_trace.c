/* test_trace.c -- daemon/trace on its own: the W3C traceparent, ids and
 * sampling, the contexts of a job's span, the OTLP/HTTP JSON body, and the
 * tracer's buffer and exporter against a fake collector (tests/unit/
 * fake_collector.c): batches arrive, a 503 is retried, a collector that is
 * down costs dropped spans and nothing else, a full buffer drops and counts,
 * a stop flushes. Waits are for the counters themselves, with a deadline. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/trace/trace.h"
#include "tests/unit/fake_collector.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const char *str_of(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

Test(trace, parse_and_format_round_trip)
{
    trace_ctx c;
    const char *why = NULL;
    cr_assert(eq(int, trace_parse(TP, &c, &why), 0));
    cr_assert(eq(int, c.trace_id[0], 0x4b));
    cr_assert(eq(int, c.span_id[7], 0xb7));
    cr_assert(eq(int, c.flags, 1));
    char out[TRACE_PARENT_LEN + 1];
    trace_format(&c, out);
    cr_assert(eq(str, out, (char *)TP));
    c.flags = 0;
    trace_format(&c, out);
    cr_assert(eq(str, out + 53, (char *)"00"));
}

Test(trace, parse_refuses_what_the_specification_does)
{
    static const struct { const char *tp, *why; } bad[] = {
        { "", "00-<32 hex digits>" },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "00-<32 hex digits>" },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "00-<32 hex digits>" },
        { "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-<32 hex digits>" },
        { "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version 00" },
        { "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version 00" },
        { "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace id must be" },
        { "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all zeros" },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent id must not" },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9g2b7-01", "parent id must be" },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", "flags" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        trace_ctx c;
        const char *why = NULL;
        cr_assert(eq(int, trace_parse(bad[i].tp, &c, &why), -1), "accepted '%s'", bad[i].tp);
        cr_assert(why && strstr(why, bad[i].why), "'%s': %s", bad[i].tp, why ? why : "(none)");
    }
    const char *why;
    trace_ctx c;
    cr_assert(eq(int, trace_parse(NULL, &c, &why), -1));
}

Test(trace, new_ids_are_never_zero_and_differ)
{
    uint8_t a[TRACE_ID_SIZE], b[TRACE_ID_SIZE], s[TRACE_SPAN_ID_SIZE], t[TRACE_SPAN_ID_SIZE];
    trace_new_trace_id(a);
    trace_new_trace_id(b);
    trace_new_span_id(s);
    trace_new_span_id(t);
    static const uint8_t zero[TRACE_ID_SIZE];
    cr_assert(memcmp(a, zero, sizeof a) != 0);
    cr_assert(memcmp(s, zero, sizeof s) != 0);
    cr_assert(memcmp(a, b, sizeof a) != 0);
    cr_assert(memcmp(s, t, sizeof s) != 0);
}

Test(trace, ratio_sampling_depends_on_the_id_alone)
{
    enum { N = 4000 };
    int kept = 0;
    for (int i = 0; i < N; i++) {
        uint8_t id[TRACE_ID_SIZE];
        trace_new_trace_id(id);
        cr_assert(trace_ratio_sampled(id, 1.0));
        cr_assert(not(trace_ratio_sampled(id, 0.0)));
        bool k = trace_ratio_sampled(id, 0.25);
        cr_assert(eq(int, k, trace_ratio_sampled(id, 0.25))); /* the same decision again */
        kept += k;
    }
    /* binomial(N, 1/4): standard deviation sqrt(N * 3/16) ~ 27; six of them */
    cr_assert(kept > N / 4 - 165 && kept < N / 4 + 165, "kept %d of %d at 0.25", kept, N);
}

Test(trace, a_job_span_continues_across_runs_under_its_parent)
{
    trace_ctx given, job1, job2, other;
    const char *why;
    uint8_t parent[TRACE_SPAN_ID_SIZE];
    bool has_parent = false;
    cr_assert(eq(int, trace_parse(TP, &given, &why), 0));
    trace_job_context(&given, "j1", &job1, &has_parent, parent);
    cr_assert(has_parent);
    cr_assert(memcmp(parent, given.span_id, sizeof parent) == 0);
    cr_assert(memcmp(job1.trace_id, given.trace_id, TRACE_ID_SIZE) == 0);
    cr_assert(memcmp(job1.span_id, given.span_id, TRACE_SPAN_ID_SIZE) != 0);
    cr_assert(eq(int, job1.flags, given.flags));
    /* a second run of the same job (after a restart) has the same job span */
    trace_job_context(&given, "j1", &job2, &has_parent, parent);
    cr_assert(memcmp(job1.span_id, job2.span_id, TRACE_SPAN_ID_SIZE) == 0);
    trace_job_context(&given, "j2", &other, &has_parent, parent);
    cr_assert(memcmp(job1.span_id, other.span_id, TRACE_SPAN_ID_SIZE) != 0);
    /* one made at submit names no parent, and round-trips as text */
    trace_ctx root, back;
    char text[TRACE_PARENT_LEN + 1];
    trace_make_root(&root, 1.0);
    cr_assert(root.flags & TRACE_FLAG_SAMPLED);
    trace_format(&root, text);
    cr_assert(eq(int, trace_parse(text, &back, &why), 0));
    trace_job_context(&back, "j1", &job1, &has_parent, parent);
    cr_assert(not(has_parent));
    cr_assert(memcmp(job1.trace_id, root.trace_id, TRACE_ID_SIZE) == 0);
    trace_make_root(&root, 0.0);
    cr_assert(eq(int, root.flags & TRACE_FLAG_SAMPLED, 0));
}

/* A span as the engine makes them: ids, a parent or none, attributes. */
static trace_span *make_span(const char *name, const trace_ctx *ctx, const uint8_t *parent)
{
    trace_span *s = trace_span_new(name, TRACE_KIND_CLIENT, ctx, parent, 1767225600000000000u);
    cr_assert(s != NULL);
    s->end_ns = 1767225601250000000u;
    return s;
}

Test(trace, the_otlp_json_body)
{
    trace_ctx c;
    const char *why;
    cr_assert(eq(int, trace_parse(TP, &c, &why), 0));
    trace_span *root = make_span("invoke_workflow w", &c, NULL);
    trace_ctx kid = c;
    trace_new_span_id(kid.span_id);
    trace_span *call = make_span("chat gpt-4o", &kid, c.span_id);
    trace_span_str(call, "gen_ai.request.model", "gpt-4o");
    trace_span_int(call, "gen_ai.usage.input_tokens", 812);
    trace_span_strs1(call, "gen_ai.response.finish_reasons", "stop");
    trace_span_double(call, "loom.cost_usd", 0.5);
    trace_span_fail(call, "timeout", "no answer in 30 s");
    root->next = call;
    json_t *req = trace_otlp_request(root, 2, "loomd-test");
    cr_assert(req != NULL);
    json_t *rs = json_array_get(json_object_get(req, "resourceSpans"), 0);
    json_t *attr = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    cr_assert(eq(str, (char *)str_of(attr, "key"), (char *)"service.name"));
    cr_assert(eq(str, (char *)str_of(json_object_get(attr, "value"), "stringValue"),
                 (char *)"loomd-test"));
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    cr_assert(eq(str, (char *)str_of(json_object_get(ss, "scope"), "name"), (char *)"loom"));
    json_t *spans = json_object_get(ss, "spans");
    cr_assert(eq(sz, json_array_size(spans), 2));
    json_t *a = json_array_get(spans, 0), *b = json_array_get(spans, 1);
    cr_assert(eq(str, (char *)str_of(a, "traceId"), (char *)"4bf92f3577b34da6a3ce929d0e0e4736"));
    cr_assert(eq(str, (char *)str_of(a, "spanId"), (char *)"00f067aa0ba902b7"));
    cr_assert(eq(ptr, json_object_get(a, "parentSpanId"), NULL)); /* a root has none */
    cr_assert(eq(str, (char *)str_of(b, "parentSpanId"), (char *)"00f067aa0ba902b7"));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(b, "kind")), 3));
    cr_assert(eq(str, (char *)str_of(a, "startTimeUnixNano"), (char *)"1767225600000000000"));
    cr_assert(eq(str, (char *)str_of(a, "endTimeUnixNano"), (char *)"1767225601250000000"));
    cr_assert(eq(sz, json_object_size(json_object_get(a, "status")), 0)); /* success: unset */
    json_t *st = json_object_get(b, "status");
    cr_assert(eq(int, (int)json_integer_value(json_object_get(st, "code")), 2));
    cr_assert(eq(str, (char *)str_of(st, "message"), (char *)"no answer in 30 s"));
    /* attributes in order, int64 as a string, arrays wrapped */
    json_t *at = json_object_get(b, "attributes");
    cr_assert(eq(str, (char *)str_of(json_array_get(at, 0), "key"), (char *)"gen_ai.request.model"));
    json_t *v = json_object_get(json_array_get(at, 1), "value");
    cr_assert(eq(str, (char *)str_of(v, "intValue"), (char *)"812"));
    v = json_object_get(json_array_get(at, 2), "value");
    cr_assert(eq(str,
                 (char *)str_of(json_array_get(json_object_get(json_object_get(v, "arrayValue"),
                                                               "values"), 0), "stringValue"),
                 (char *)"stop"));
    v = json_object_get(json_array_get(at, 3), "value");
    cr_assert(eq(dbl, json_real_value(json_object_get(v, "doubleValue")), 0.5));
    json_t *et = json_array_get(at, 4);
    cr_assert(eq(str, (char *)str_of(et, "key"), (char *)"error.type"));
    json_decref(req);
    trace_span_free(root);
    trace_span_free(call);
}

/* ---- the tracer */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Submits N spans of one trace. */
static void submit_spans(tracer_t *t, int n)
{
    trace_ctx c;
    trace_new_trace_id(c.trace_id);
    c.flags = 1;
    for (int i = 0; i < n; i++) {
        trace_new_span_id(c.span_id);
        trace_submit(t, trace_span_new("s", TRACE_KIND_INTERNAL, &c, NULL, trace_now_ns()));
    }
}

/* Waits up to BOUND_MS for T's counters to reach EXPORTED and DROPPED
 * (-1: any), returning them. */
static trace_stats_t wait_stats(tracer_t *t, long exported, long dropped, long bound_ms)
{
    trace_stats_t st;
    long until = now_ms() + bound_ms;
    for (;;) {
        trace_get_stats(t, &st);
        bool done = (exported < 0 || (long)st.exported >= exported) &&
                    (dropped < 0 || (long)st.dropped >= dropped);
        if (done || now_ms() > until)
            return st;
        struct timespec nap = { 0, 5 * 1000000L };
        nanosleep(&nap, NULL);
    }
}

static char *url_of(int port)
{
    static __thread char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    return url;
}

Test(trace, a_full_buffer_drops_and_counts)
{
    /* nothing is ever posted: a batch bigger than the buffer, a long delay */
    trace_options o = { .endpoint = "http://127.0.0.1:9", .service_name = "t", .sample = 1,
                        .max_queued = 10, .batch_spans = 100, .batch_delay_ms = 600000 };
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    submit_spans(t, 25);
    trace_stats_t st;
    trace_get_stats(t, &st);
    cr_assert(eq(u64, st.queued, 10));
    cr_assert(eq(u64, st.dropped, 15));
    cr_assert(eq(u64, st.exported, 0));
    trace_stop(t, 0); /* no time to flush: the ten are dropped too (not leaked: ASan) */
}

Test(trace, batches_reach_the_collector)
{
    fake_collector *fc = fc_start();
    cr_assert(fc != NULL);
    trace_options o = { .endpoint = url_of(fc_port(fc)), .service_name = "t", .sample = 1,
                        .batch_spans = 4, .batch_delay_ms = 20 };
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    submit_spans(t, 10);
    trace_stats_t st = wait_stats(t, 10, -1, 10000);
    cr_assert(eq(u64, st.exported, 10));
    cr_assert(eq(u64, st.dropped, 0));
    cr_assert(eq(u64, st.failed_posts, 0));
    json_t *posts = fc_requests(fc, "/v1/traces");
    cr_assert(ge(sz, json_array_size(posts), 3)); /* at most 4 spans a post */
    size_t i;
    json_t *p;
    json_array_foreach(posts, i, p) {
        cr_assert(eq(str, (char *)str_of(p, "path"), (char *)"/v1/traces"));
        json_t *spans = json_object_get(json_array_get(json_object_get(json_array_get(
            json_object_get(json_object_get(p, "body"), "resourceSpans"), 0), "scopeSpans"), 0),
            "spans");
        cr_assert(le(sz, json_array_size(spans), 4));
    }
    json_t *all = fc_spans(fc);
    cr_assert(eq(sz, json_array_size(all), 10));
    json_decref(all);
    json_decref(posts);
    trace_stop(t, 1000);
    fc_stop(fc);
}

Test(trace, a_503_is_retried_and_a_400_is_not)
{
    fake_collector *fc = fc_start();
    cr_assert(fc != NULL);
    fc_fail_traces(fc, 503, 2);
    /* only a full batch goes (the delay is ten minutes): one post per five */
    trace_options o = { .endpoint = url_of(fc_port(fc)), .service_name = "t", .sample = 1,
                        .batch_spans = 5, .batch_delay_ms = 600000, .retry_backoff_ms = 10 };
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    submit_spans(t, 5);
    trace_stats_t st = wait_stats(t, 5, -1, 10000);
    cr_assert(eq(u64, st.exported, 5));
    cr_assert(eq(u64, st.failed_posts, 2));
    cr_assert(eq(sz, fc_count(fc, "/v1/traces"), 3));
    /* a refusal of the body itself is final: one post, its spans dropped */
    fc_fail_traces(fc, 400, 1);
    submit_spans(t, 5);
    st = wait_stats(t, -1, 5, 10000);
    cr_assert(eq(u64, st.dropped, 5));
    cr_assert(eq(u64, st.failed_posts, 3));
    cr_assert(eq(sz, fc_count(fc, "/v1/traces"), 4));
    trace_stop(t, 1000);
    fc_stop(fc);
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert(eq(int, bind(fd, (struct sockaddr *)&a, sizeof a), 0));
    cr_assert(eq(int, getsockname(fd, (struct sockaddr *)&a, &al), 0));
    close(fd);
    return ntohs(a.sin_port);
}

Test(trace, a_collector_that_is_down_costs_dropped_spans_only)
{
    trace_options o = { .endpoint = url_of(closed_port()), .service_name = "t", .sample = 1,
                        .batch_spans = 8, .batch_delay_ms = 600000, .max_retries = 2,
                        .retry_backoff_ms = 5 }; /* one batch of 8, sent when full */
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    /* handing spans over does not wait for the network */
    long t0 = now_ms();
    submit_spans(t, 8);
    cr_assert(lt(long, now_ms() - t0, 1000));
    trace_stats_t st = wait_stats(t, -1, 8, 10000);
    cr_assert(eq(u64, st.dropped, 8));
    cr_assert(eq(u64, st.exported, 0));
    cr_assert(eq(u64, st.failed_posts, 3)); /* the first post and max_retries more */
    trace_stop(t, 1000);
}

Test(trace, a_stop_flushes_what_is_buffered)
{
    fake_collector *fc = fc_start();
    cr_assert(fc != NULL);
    /* the delay would hold the spans for ten minutes: only the stop sends them */
    trace_options o = { .endpoint = url_of(fc_port(fc)), .service_name = "t", .sample = 1,
                        .batch_spans = 100, .batch_delay_ms = 600000 };
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    submit_spans(t, 7);
    trace_stop(t, 5000);
    json_t *all = fc_spans(fc);
    cr_assert(eq(sz, json_array_size(all), 7));
    json_decref(all);
    fc_stop(fc);
}

Test(trace, a_lone_span_goes_after_the_delay)
{
    fake_collector *fc = fc_start();
    cr_assert(fc != NULL);
    trace_options o = { .endpoint = url_of(fc_port(fc)), .service_name = "t", .sample = 1,
                        .batch_delay_ms = 50 }; /* batches of the default 512 */
    char err[128];
    tracer_t *t = trace_start(&o, err, sizeof err);
    cr_assert(t != NULL, "%s", err);
    /* the thread was asleep with nothing to wait for: the first span wakes it */
    submit_spans(t, 1);
    trace_stats_t st = wait_stats(t, 1, -1, 10000);
    cr_assert(eq(u64, st.exported, 1));
    cr_assert(eq(u64, st.queued, 0));
    trace_stop(t, 1000);
    fc_stop(fc);
}
