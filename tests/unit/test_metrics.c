/* test_metrics.c -- daemon/metrics: families and series, the text format
 * 0.0.4 (HELP and TYPE, escaping, cumulative buckets, _sum and _count),
 * the cardinality cap, recording from several threads, the listen address
 * parser, the mapping of a `stats` reply to families, the config's
 * `metrics` section, the endpoint (rendered on the reactor's thread, 404
 * elsewhere, 503 when the reactor does not answer, an address in use), and
 * the reactor's lag observer. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/metrics/metrics.h"
#include "daemon/metrics/metrics_http.h"

/* M rendered; free it */
static char *render(const metrics_t *m)
{
    sbuf b = SBUF_INIT;
    cr_assert_eq(metrics_render(m, &b), 0);
    char *s = sbuf_steal(&b, NULL);
    cr_assert_not_null(s);
    return s;
}

static void assert_has(const char *text, const char *line)
{
    cr_assert_not_null(strstr(text, line), "no \"%s\" in:\n%s", line, text);
}

Test(metrics, counter_and_gauge_lines)
{
    metrics_t *m = metrics_new(0);
    metrics_family *c = metrics_family_new(m, "loom_x_total", "Things.", METRICS_COUNTER,
                                           (const char *[]){ "provider", NULL }, NULL, 0);
    metrics_family *g = metrics_family_new(m, "loom_depth", "Depth.", METRICS_GAUGE, NULL,
                                           NULL, 0);
    cr_assert(c && g);
    metrics_family_add(c, (const char *[]){ "fast" }, 2);
    metrics_family_add(c, (const char *[]){ "fast" }, 0.5);
    metrics_family_add(c, (const char *[]){ "fast" }, -7); /* a counter never goes down */
    metrics_family_add(c, (const char *[]){ "slow" }, 1);
    metrics_family_set(g, NULL, 42);
    metrics_family_add(g, NULL, -2);
    char *t = render(m);
    cr_assert_str_eq(t, "# HELP loom_x_total Things.\n"
                        "# TYPE loom_x_total counter\n"
                        "loom_x_total{provider=\"fast\"} 2.5\n"
                        "loom_x_total{provider=\"slow\"} 1\n"
                        "# HELP loom_depth Depth.\n"
                        "# TYPE loom_depth gauge\n"
                        "loom_depth 40\n");
    free(t);
    metrics_free(m);
}

Test(metrics, escaping_of_label_values_and_help)
{
    metrics_t *m = metrics_new(0);
    metrics_family *f = metrics_family_new(m, "loom_e", "a \\ b\nc \"q\"", METRICS_GAUGE,
                                           (const char *[]){ "workflow", NULL }, NULL, 0);
    metrics_family_set(f, (const char *[]){ "a\"b\\c\nd" }, 1);
    char *t = render(m);
    assert_has(t, "# HELP loom_e a \\\\ b\\nc \"q\"\n");
    assert_has(t, "loom_e{workflow=\"a\\\"b\\\\c\\nd\"} 1\n");
    free(t);
    metrics_free(m);
}

Test(metrics, histogram_buckets_are_cumulative)
{
    metrics_t *m = metrics_new(0);
    const double bounds[] = { 0.1, 1, 10 };
    metrics_family *h = metrics_family_new(m, "loom_wait_seconds", "Wait.", METRICS_HISTOGRAM,
                                           (const char *[]){ "q", NULL }, bounds, 3);
    cr_assert_not_null(h);
    metrics_series *s = metrics_series_get(h, (const char *[]){ "a" });
    const double obs[] = { 0.05, 0.1, 0.5, 2, 20, 1e9 };
    double sum = 0;
    for (size_t i = 0; i < 6; i++) {
        metrics_observe(s, obs[i]);
        sum += obs[i];
    }
    char *t = render(m);
    /* le is inclusive: 0.1 falls in the 0.1 bucket */
    assert_has(t, "# TYPE loom_wait_seconds histogram\n"
                  "loom_wait_seconds_bucket{q=\"a\",le=\"0.1\"} 2\n"
                  "loom_wait_seconds_bucket{q=\"a\",le=\"1\"} 3\n"
                  "loom_wait_seconds_bucket{q=\"a\",le=\"10\"} 4\n"
                  "loom_wait_seconds_bucket{q=\"a\",le=\"+Inf\"} 6\n");
    char line[128];
    snprintf(line, sizeof line, "loom_wait_seconds_sum{q=\"a\"} %.17g\n", sum);
    char *sumline = strstr(t, "loom_wait_seconds_sum{q=\"a\"} ");
    cr_assert_not_null(sumline);
    cr_assert_eq(strtod(sumline + strlen("loom_wait_seconds_sum{q=\"a\"} "), NULL), sum);
    assert_has(t, "loom_wait_seconds_count{q=\"a\"} 6\n");
    cr_assert_eq(metrics_value(s), 6);
    free(t);
    metrics_free(m);
}

Test(metrics, histogram_without_labels_and_special_values)
{
    metrics_t *m = metrics_new(0);
    metrics_family *h = metrics_family_new(m, "loom_h", "H.", METRICS_HISTOGRAM, NULL,
                                           (const double[]){ 0.25 }, 1);
    metrics_family *g = metrics_family_new(m, "loom_g", "G.", METRICS_GAUGE,
                                           (const char *[]){ "k", NULL }, NULL, 0);
    metrics_family_observe(h, NULL, 0.125);
    metrics_family_observe(h, NULL, 0.0 / 0.0); /* NaN is not an observation */
    metrics_family_set(g, (const char *[]){ "inf" }, 1.0 / 0.0);
    metrics_family_set(g, (const char *[]){ "ninf" }, -1.0 / 0.0);
    metrics_family_set(g, (const char *[]){ "nan" }, 0.0 / 0.0);
    metrics_family_set(g, (const char *[]){ "third" }, 1.0 / 3);
    char *t = render(m);
    assert_has(t, "loom_h_bucket{le=\"0.25\"} 1\nloom_h_bucket{le=\"+Inf\"} 1\n"
                  "loom_h_sum 0.125\nloom_h_count 1\n");
    assert_has(t, "loom_g{k=\"inf\"} +Inf\n");
    assert_has(t, "loom_g{k=\"ninf\"} -Inf\n");
    assert_has(t, "loom_g{k=\"nan\"} NaN\n");
    /* the shortest text that reads back as the same double */
    assert_has(t, "loom_g{k=\"third\"} 0.3333333333333333\n");
    free(t);
    metrics_free(m);
}

Test(metrics, bad_families_are_refused)
{
    metrics_t *m = metrics_new(0);
    const double up[] = { 1, 2 }, down[] = { 2, 1 };
    cr_assert_null(metrics_family_new(m, "9lives", "", METRICS_GAUGE, NULL, NULL, 0));
    cr_assert_null(metrics_family_new(m, "a-b", "", METRICS_GAUGE, NULL, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_GAUGE,
                                      (const char *[]){ "a:b", NULL }, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_GAUGE,
                                      (const char *[]){ "__x", NULL }, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_GAUGE,
                                      (const char *[]){ "a", "a", NULL }, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_HISTOGRAM,
                                      (const char *[]){ "le", NULL }, up, 2));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_HISTOGRAM, NULL, down, 2));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_HISTOGRAM, NULL, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok", "", METRICS_GAUGE, NULL, up, 2));
    cr_assert_not_null(metrics_family_new(m, "ok:x", "", METRICS_GAUGE, NULL, NULL, 0));
    cr_assert_null(metrics_family_new(m, "ok:x", "", METRICS_GAUGE, NULL, NULL, 0));
    metrics_free(m);
}

Test(metrics, cardinality_cap_drops_and_counts)
{
    metrics_t *m = metrics_new(3);
    metrics_family *f = metrics_family_new(m, "loom_c_total", "C.", METRICS_COUNTER,
                                           (const char *[]){ "model", NULL }, NULL, 0);
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "m%d", i);
        metrics_family_add(f, (const char *[]){ name }, 1);
    }
    /* a set already in stays recordable when the family is full */
    metrics_family_add(f, (const char *[]){ "m0" }, 1);
    cr_assert_eq(metrics_dropped(f), 7);
    char *t = render(m);
    assert_has(t, "loom_c_total{model=\"m0\"} 2\n");
    assert_has(t, "loom_c_total{model=\"m2\"} 1\n");
    cr_assert_null(strstr(t, "model=\"m3\""));
    assert_has(t, "# TYPE loom_metrics_series_dropped_total counter\n"
                  "loom_metrics_series_dropped_total{family=\"loom_c_total\"} 7\n");
    free(t);
    metrics_free(m);
}

typedef struct {
    metrics_family *h, *c;
    int n;
} hammer;

static void *hammer_run(void *ud)
{
    hammer *x = ud;
    metrics_series *s = metrics_series_get(x->h, NULL);
    for (int i = 0; i < x->n; i++) {
        metrics_observe(s, (i % 4) * 0.5);
        metrics_family_add(x->c, (const char *[]){ i % 2 ? "odd" : "even" }, 1);
    }
    return NULL;
}

Test(metrics, recording_from_threads_loses_nothing)
{
    metrics_t *m = metrics_new(0);
    hammer x = { metrics_family_new(m, "loom_t", "T.", METRICS_HISTOGRAM, NULL,
                                    (const double[]){ 0.5, 1 }, 2),
                 metrics_family_new(m, "loom_n_total", "N.", METRICS_COUNTER,
                                    (const char *[]){ "k", NULL }, NULL, 0),
                 20000 };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer_run, &x);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *s = render(m);
    /* per thread: a quarter each of 0, 0.5, 1, 1.5 */
    assert_has(s, "loom_t_bucket{le=\"0.5\"} 40000\n");
    assert_has(s, "loom_t_bucket{le=\"1\"} 60000\n");
    assert_has(s, "loom_t_bucket{le=\"+Inf\"} 80000\n");
    assert_has(s, "loom_t_sum 60000\n");
    assert_has(s, "loom_n_total{k=\"odd\"} 40000\n");
    assert_has(s, "loom_n_total{k=\"even\"} 40000\n");
    free(s);
    metrics_free(m);
}

Test(metrics, listen_addresses)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[160];
    cr_assert_eq(metrics_http_parse_listen("127.0.0.1:9464", &ss, &len, err, sizeof err), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    cr_assert_eq(metrics_http_parse_listen("localhost:0", &ss, &len, err, sizeof err), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    cr_assert_eq(metrics_http_parse_listen("[::1]:9464", &ss, &len, err, sizeof err), 0);
    cr_assert_eq(ss.ss_family, AF_INET6);
    const char *bad[] = { "9464", ":9464", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "127.0.0.1:12x", "::1:9464", "[::1:9464", "[127.0.0.1]:1",
                          "example.com:9464", "[]:1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        cr_assert_eq(metrics_http_parse_listen(bad[i], &ss, &len, err, sizeof err), -1, "%s",
                     bad[i]);
        cr_assert(err[0], "no reason for %s", bad[i]);
    }
    cr_assert_eq(metrics_http_parse_listen("::1:9464", &ss, &len, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "[::1]:9464"), "%s", err);
}

/* A `stats` reply with every member the mapping reads, cost and tenants
 * included (docs/protocol.md). */
static const char *stats_json =
    "{\"uptime_s\": 12, \"jobs\": {\"queued\": 3, \"running\": 2, \"succeeded\": 10,"
    " \"failed\": 1, \"cancelled\": 4, \"submitted\": 20},"
    " \"providers\": {\"fast\": {\"plugin\": \"openai\", \"in_flight\": 1, \"queued\": 5,"
    "   \"requests\": 30, \"succeeded\": 27, \"failed\": 2, \"rate_limited\": 6,"
    "   \"batches\": 0, \"input_tokens\": 1000, \"output_tokens\": 200,"
    "   \"cache_read_tokens\": 50, \"latency_ms\": 250.0, \"concurrency\": 8,"
    "   \"disabled\": false, \"paused\": true, \"timeouts\": 3}},"
    " \"connections\": 4, \"workflows\": 2,"
    " \"store\": {\"transactions\": 99, \"queued\": 0, \"held\": 1, \"held_tries\": 7},"
    " \"isolate\": {\"hello\": {\"calls\": 5, \"invokes\": 0, \"crashes\": 1, \"timeouts\": 0,"
    "   \"cancels\": 0, \"grace_kills\": 0, \"restarts\": 1, \"helpers\": 2,"
    "   \"helpers_ready\": 2}},"
    " \"tracing\": {\"enabled\": true, \"exported\": 40, \"dropped\": 2, \"failed_posts\": 1,"
    "   \"queued\": 3},"
    " \"cost\": {\"usd\": 1.5, \"by_workflow\": {\"summarize\": 1.25, \"tag\": 0.25},"
    "   \"by_provider\": {\"fast\": 1.5}, \"by_tenant\": {\"team-a\": 1.0, \"default\": 0.5}},"
    " \"tenants\": {\"team-a\": {\"running\": 1, \"queued\": 2, \"weight\": 3,"
    "   \"submitted\": 9, \"rejected\": 1}}}";

Test(metrics, stats_reply_as_families)
{
    json_error_t je;
    json_t *st = json_loads(stats_json, 0, &je);
    cr_assert_not_null(st, "%s", je.text);
    metrics_t *m = metrics_new(0);
    cr_assert_eq(metrics_from_stats(m, st), 0);
    char *t = render(m);
    const char *lines[] = {
        "loom_uptime_seconds 12\n",
        "# TYPE loom_jobs gauge\nloom_jobs{state=\"queued\"} 3\nloom_jobs{state=\"running\"} 2\n",
        "loom_queue_depth 3\n",
        "# TYPE loom_jobs_finished_total counter\n",
        "loom_jobs_finished_total{state=\"cancelled\"} 4\n",
        "loom_jobs_submitted_total 20\n",
        "loom_connections 4\n",
        "loom_workflows 2\n",
        "loom_provider_in_flight{provider=\"fast\",plugin=\"openai\"} 1\n",
        "loom_provider_queued{provider=\"fast\",plugin=\"openai\"} 5\n",
        "loom_provider_requests_total{provider=\"fast\",plugin=\"openai\"} 30\n",
        "loom_provider_calls_total{provider=\"fast\",plugin=\"openai\",outcome=\"failed\"} 2\n",
        "loom_provider_rate_limited_total{provider=\"fast\",plugin=\"openai\"} 6\n",
        "loom_provider_timeouts_total{provider=\"fast\",plugin=\"openai\"} 3\n",
        "loom_provider_tokens_total{provider=\"fast\",plugin=\"openai\",type=\"input\"} 1000\n",
        "loom_provider_tokens_total{provider=\"fast\",plugin=\"openai\",type=\"cache_read\"} 50\n",
        "loom_provider_latency_seconds{provider=\"fast\",plugin=\"openai\"} 0.25\n",
        "loom_provider_concurrency{provider=\"fast\",plugin=\"openai\"} 8\n",
        "loom_provider_disabled{provider=\"fast\",plugin=\"openai\"} 0\n",
        "loom_provider_paused{provider=\"fast\",plugin=\"openai\"} 1\n",
        "loom_store_transactions_total 99\n",
        "loom_store_held_writes 1\n",
        "loom_store_held_tries_total 7\n",
        "loom_isolate_events_total{plugin=\"hello\",event=\"crashes\"} 1\n",
        "loom_isolate_helpers{plugin=\"hello\",state=\"ready\"} 2\n",
        "# TYPE loom_cost_usd_total counter\nloom_cost_usd_total 1.5\n",
        "loom_workflow_cost_usd_total{workflow=\"summarize\"} 1.25\n",
        "loom_provider_cost_usd_total{provider=\"fast\"} 1.5\n",
        "loom_tenant_cost_usd_total{tenant=\"team-a\"} 1\n",
        "loom_tenant_cost_usd_total{tenant=\"default\"} 0.5\n",
        "loom_tenant_jobs{tenant=\"team-a\",state=\"queued\"} 2\n",
        "loom_tenant_weight{tenant=\"team-a\"} 3\n",
        "loom_tenant_jobs_submitted_total{tenant=\"team-a\"} 9\n",
        "loom_tenant_jobs_rejected_total{tenant=\"team-a\"} 1\n",
        "loom_trace_spans_total{outcome=\"exported\"} 40\n",
        "loom_trace_spans_total{outcome=\"dropped\"} 2\n",
        "loom_trace_failed_posts_total 1\n",
        "loom_trace_spans_queued 3\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        assert_has(t, lines[i]);
    /* a member missing (no cache_write_tokens) makes no series */
    cr_assert_null(strstr(t, "cache_write"));
    free(t);
    metrics_free(m);
    json_decref(st);
}

Test(metrics, stats_without_cost_or_tenants_shows_neither)
{
    json_t *st = json_pack("{s:i, s:{s:i, s:i}}", "uptime_s", 1, "jobs", "queued", 0, "running",
                           0);
    metrics_t *m = metrics_new(0);
    cr_assert_eq(metrics_from_stats(m, st), 0);
    char *t = render(m);
    cr_assert_null(strstr(t, "cost"));
    cr_assert_null(strstr(t, "tenant"));
    cr_assert_null(strstr(t, "loom_trace"));
    assert_has(t, "loom_jobs{state=\"queued\"} 0\n");
    free(t);
    metrics_free(m);
    json_decref(st);
}

/* ---- the config's `metrics` section (daemon/config_metrics.c) */

/* TEXT's config and every diagnostic as "LINE:COL: error: ..." lines in OUT */
static config *parse_config(const char *text, char *out, size_t outlen)
{
    dsl_diags d;
    dsl_diags_init(&d, "c.yaml");
    config *c = config_parse(text, strlen(text), &d);
    char *all = dsl_diags_text(&d, NULL);
    snprintf(out, outlen, "%s", all ? all : "");
    free(all);
    dsl_diags_free(&d);
    return c;
}

Test(metrics_config, off_by_default_and_parsed)
{
    char diags[2048];
    config *c = parse_config("socket: /tmp/x.sock\n", diags, sizeof diags);
    cr_assert_not_null(c, "%s", diags);
    cr_assert_null(c->metrics.listen);
    cr_assert_eq(c->metrics.max_series, CONFIG_METRICS_MAX_SERIES);
    config_free(c);
    c = parse_config("metrics:\n  listen: \"[::1]:9464\"\n  max_series: 50\n", diags,
                     sizeof diags);
    cr_assert_not_null(c, "%s", diags);
    cr_assert_str_eq(c->metrics.listen, "[::1]:9464");
    cr_assert_eq(c->metrics.max_series, 50);
    config_free(c);
}

Test(metrics_config, errors_at_their_positions)
{
    char diags[2048];
    const struct { const char *text, *want; } cases[] = {
        { "metrics:\n  listen: \"localhost\"\n", "c.yaml:2:11: error: bad 'listen' address" },
        { "metrics:\n  listen: \"10.0.0.1:70000\"\n", "65535" },
        { "metrics:\n  listen: \"::1:9464\"\n", "brackets: \"[::1]:9464\"" },
        { "metrics:\n  listen: 9464\n", "c.yaml:2:11: error:" },
        { "metrics:\n  max_series: 0\n", "c.yaml:2:15: error: 'max_series' must be" },
        { "metrics:\n  lisen: \"127.0.0.1:1\"\n", "listen" },
        { "metrics: \"127.0.0.1:9464\"\n", "c.yaml:1:10: error:" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        config *c = parse_config(cases[i].text, diags, sizeof diags);
        cr_assert_null(c, "accepted: %s", cases[i].text);
        cr_assert_not_null(strstr(diags, cases[i].want), "want %s in:\n%s", cases[i].want, diags);
    }
}

/* ---- the endpoint (metrics_http.c) on a reactor of the test's */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/core/reactor.h"

typedef struct render_state {
    pthread_t reactor_thread;  /* the thread the render must run on */
    int renders;
    bool on_reactor;
} render_state;

static int render_fn(void *ud, sbuf *out)
{
    render_state *rs = ud;
    rs->renders++;
    rs->on_reactor = pthread_equal(pthread_self(), rs->reactor_thread);
    return sbuf_adds(out, "# TYPE loom_x gauge\nloom_x 1\n");
}

static void *run_reactor(void *r)
{
    reactor_run(r);
    return NULL;
}

/* GET PATH from 127.0.0.1:PORT, the whole answer (new string), within 20 s */
static char *get(uint16_t port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[128];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    sbuf b = SBUF_INIT;
    char buf[4096];
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 20000), 1, "no answer");
        ssize_t k = read(fd, buf, sizeof buf);
        cr_assert(k >= 0);
        if (k == 0)
            break;
        sbuf_add(&b, buf, (size_t)k);
    }
    close(fd);
    char *s = sbuf_steal(&b, NULL);
    cr_assert_not_null(s);
    return s;
}

static void stop_reactor(reactor_t *r, void *ud)
{
    reactor_stop(r);
}

Test(metrics_http, the_reactor_renders_what_is_served)
{
    reactor_t *r = reactor_new();
    cr_assert_not_null(r);
    render_state rs = { 0 };
    cr_assert_eq(pthread_create(&rs.reactor_thread, NULL, run_reactor, r), 0);
    char err[256];
    metrics_http_t *h = metrics_http_start(r, "127.0.0.1:0", render_fn, &rs, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    char *t = get(metrics_http_port(h), "/metrics");
    cr_assert_not_null(strstr(t, "HTTP/1.0 200") ? t : strstr(t, "HTTP/1.1 200"), "%s", t);
    cr_assert_not_null(strstr(t, "Content-Type: text/plain; version=0.0.4"), "%s", t);
    cr_assert_not_null(strstr(t, "\r\n\r\n# TYPE loom_x gauge\nloom_x 1\n"), "%s", t);
    free(t);
    t = get(metrics_http_port(h), "/nope");
    cr_assert_not_null(strstr(t, " 404 "), "%s", t);
    free(t);
    cr_assert_eq(rs.renders, 1);
    cr_assert(rs.on_reactor);
    reactor_post(r, stop_reactor, NULL);
    pthread_join(rs.reactor_thread, NULL);
    metrics_http_stop(h);
    reactor_free(r);
}

Test(metrics_http, a_reactor_that_does_not_answer_is_a_503)
{
    reactor_t *r = reactor_new(); /* never run: the render post is never taken */
    cr_assert_not_null(r);
    render_state rs = { 0 };
    char err[256];
    metrics_http_t *h = metrics_http_start(r, "127.0.0.1:0", render_fn, &rs, err, sizeof err);
    cr_assert_not_null(h, "%s", err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *t = get(metrics_http_port(h), "/metrics");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_not_null(strstr(t, " 503 "), "%s", t);
    free(t);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert(ms >= METRICS_HTTP_RENDER_WAIT_MS, "answered after %ld ms", ms);
    cr_assert_eq(rs.renders, 0);
    /* the withdrawn post left nothing queued: running the reactor renders nothing */
    reactor_run_once(r, 0);
    cr_assert_eq(rs.renders, 0);
    metrics_http_stop(h);
    reactor_free(r);
}

Test(metrics_http, an_address_in_use_is_reported)
{
    reactor_t *r = reactor_new();
    render_state rs = { 0 };
    char err[256];
    metrics_http_t *a = metrics_http_start(r, "127.0.0.1:0", render_fn, &rs, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)metrics_http_port(a));
    metrics_http_t *b = metrics_http_start(r, addr, render_fn, &rs, err, sizeof err);
    cr_assert_null(b);
    cr_assert_not_null(strstr(err, "Address already in use"), "%s", err);
    metrics_http_stop(a);
    reactor_free(r);
}

/* ---- the reactor's lag observer, which feeds loom_reactor_lag_seconds */

typedef struct lag_seen {
    int n;
    uint64_t max_us;
} lag_seen;

static void on_lag(void *ud, uint64_t lag_us)
{
    lag_seen *s = ud;
    s->n++;
    if (lag_us > s->max_us)
        s->max_us = lag_us;
}

static void busy_timer(reactor_t *r, reactor_timer_t *t, void *ud)
{
    /* holds the thread 30 ms: the next timer, due meanwhile, runs late */
    struct timespec ts = { 0, 30 * 1000000L };
    nanosleep(&ts, NULL);
}

static void noop_timer(reactor_t *r, reactor_timer_t *t, void *ud) { }

Test(metrics_lag, each_timer_reports_its_lateness)
{
    reactor_t *r = reactor_new();
    cr_assert_not_null(r);
    lag_seen s = { 0 };
    reactor_set_lag_observer(r, on_lag, &s);
    reactor_timer_add(r, 0, busy_timer, NULL);
    reactor_timer_add(r, 1000, noop_timer, NULL); /* due 1 ms in, run after the 30 ms */
    while (s.n < 2)
        cr_assert(reactor_run_once(r, 1000) >= 0);
    cr_assert_eq(s.n, 2);
    /* at least the busy timer's hold less the second timer's delay */
    cr_assert(s.max_us >= 30000 - 1000, "max lag %llu us", (unsigned long long)s.max_us);
    reactor_set_lag_observer(r, NULL, NULL);
    reactor_timer_add(r, 0, noop_timer, NULL);
    while (reactor_timer_count(r) > 0)
        cr_assert(reactor_run_once(r, 1000) >= 0);
    cr_assert_eq(s.n, 2);
    reactor_free(r);
}
