/* test_loomd_metrics.c -- metrics from a real loomd: GET /metrics (IPv4 and
 * IPv6) while jobs run on the mock provider and after, the `metrics` op and
 * `loomctl metrics` (the real binary, $LOOM_BUILDDIR/loomctl), 404 and 405
 * for what is not a scrape, histograms whose +Inf bucket is their count,
 * streamed calls' time to first token and failed calls by error class
 * against the fake provider, and a bad `metrics.listen` refused at its line
 * and column. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

#define JOBS 4
#define ECHO_WF "loom: 1\nname: echo\ndo: { call: 'echo {{ input.text }}' }\n"

/* The port loomd logged for its endpoint ("... port=N"), once it did. */
static int metrics_port(void)
{
    lh_wait_log(&D, "serving GET /metrics", NULL, 1, 10000);
    char path[400];
    snprintf(path, sizeof path, "%s/loomd.log", D.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024];
    int port = -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "serving GET /metrics")) {
            char *p = strstr(line, "port=");
            cr_assert_not_null(p, "%s", line);
            port = atoi(p + 5);
        }
    fclose(f);
    cr_assert(port > 0 && port < 65536);
    return port;
}

/* METHOD PATH over HTTP/1.0 to HOST (an IPv4 or IPv6 literal) : PORT; the
 * whole answer (status line, headers, body) as a new string, read until
 * the server closes, within 10 s. */
static char *http(const char *host, int port, const char *method, const char *path)
{
    struct sockaddr_storage ss = { 0 };
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof *a4;
    } else {
        cr_assert_eq(inet_pton(AF_INET6, host, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof *a6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&ss, len), 0, "connect to %s:%d", host, port);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
    cr_assert(lh_send_all(fd, req, (size_t)n));
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    long deadline = lh_now_ms() + 10000;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        long left = deadline - lh_now_ms();
        cr_assert(left > 0 && poll(&p, 1, (int)left) == 1, "no answer from /metrics in time");
        if (cap - got < 4096)
            cr_assert_not_null(buf = realloc(buf, cap *= 2));
        ssize_t k = read(fd, buf + got, cap - got - 1);
        cr_assert(k >= 0);
        if (k == 0)
            break;
        got += (size_t)k;
    }
    buf[got] = '\0';
    close(fd);
    return buf;
}

/* The value of the sample line starting with PREFIX (name and labels), or
 * -1 when there is none. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

/* Every histogram series of TEXT has a +Inf bucket equal to its _count. */
static void assert_histograms_whole(const char *text)
{
    int seen = 0;
    for (const char *p = strstr(text, "le=\"+Inf\"} "); p; p = strstr(p + 1, "le=\"+Inf\"} ")) {
        const char *start = p;
        while (start > text && start[-1] != '\n')
            start--;
        const char *b = strstr(start, "_bucket{");
        cr_assert(b && b < p);
        /* NAME_count{LABELS without le} */
        char want[1024];
        int k = snprintf(want, sizeof want, "%.*s_count", (int)(b - start), start);
        const char *labels = b + strlen("_bucket");
        size_t ll = (size_t)(p - labels);
        if (ll > 1) /* "{a=...," -> "{a=...}" */
            snprintf(want + k, sizeof want - (size_t)k, "%.*s}", (int)(ll - 1), labels);
        cr_assert_eq(sample(text, want), strtod(p + strlen("le=\"+Inf\"} "), NULL), "%s", want);
        seen++;
    }
    cr_assert(seen > 0);
}

static void start(const char *listen)
{
    char extra[256];
    snprintf(extra, sizeof extra, "metrics: { listen: \"%s\" }\n", listen);
    lh_setup(&D, NULL, NULL);
    FILE *f = fopen(D.cfg, "a");
    cr_assert_not_null(f);
    fputs(extra, f);
    fclose(f);
    lh_workflow(&D, "echo", ECHO_WF);
    lh_start(&D);
}

static void run_jobs(int n)
{
    for (int i = 0; i < n; i++) {
        json_t *r = lh_call(&D, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"echo\","
                                "\"input\":{\"text\":\"hi\"},\"wait\":true}", 15000);
        cr_assert_not_null(r);
        cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
        json_decref(r);
    }
}

#define TOKENS_IN                                                                                  \
    "gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name="         \
    "\"mock\",gen_ai_request_model=\"\",gen_ai_token_type=\"input\",loom_provider=\"default\"}"
#define DURATION                                                                                   \
    "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\","              \
    "gen_ai_provider_name=\"mock\",gen_ai_request_model=\"\",error_type=\"\","                     \
    "loom_provider=\"default\"}"
#define WF_JOBS "loom_workflow_jobs_total{workflow=\"echo\",tenant=\"default\",state=\"succeeded\"}"

Test(loomd_metrics, scrape_counts_the_jobs_and_calls, .fini = teardown)
{
    start("127.0.0.1:0");
    int port = metrics_port();
    /* before any job: the families are there, with no call series yet */
    char *t = http("127.0.0.1", port, "GET", "/metrics");
    cr_assert(strncmp(t, "HTTP/1.0 200", 12) == 0 || strncmp(t, "HTTP/1.1 200", 12) == 0, "%s", t);
    cr_assert_not_null(strstr(t, "Content-Type: text/plain; version=0.0.4"), "%s", t);
    cr_assert_not_null(strstr(t, "# TYPE gen_ai_client_token_usage histogram\n"));
    cr_assert_eq(sample(t, TOKENS_IN), -1);
    free(t);
    run_jobs(JOBS);
    t = http("127.0.0.1", port, "GET", "/metrics");
    /* each job made one call: one observation per token type and duration */
    cr_assert_eq(sample(t, TOKENS_IN), JOBS, "%s", t);
    cr_assert_eq(sample(t, DURATION), JOBS, "%s", t);
    cr_assert_eq(sample(t, WF_JOBS), JOBS);
    cr_assert_eq(sample(t, "loom_jobs_finished_total{state=\"succeeded\"}"), JOBS);
    cr_assert_eq(sample(t, "loom_jobs_submitted_total"), JOBS);
    cr_assert_eq(sample(t, "loom_queue_wait_seconds_count{workflow=\"echo\",tenant=\"default\"}"),
                 JOBS);
    cr_assert_eq(sample(t, "loom_provider_requests_total{provider=\"default\",plugin=\"mock\"}"),
                 JOBS);
    cr_assert_eq(sample(t, "loom_limiter_wait_seconds_count{provider=\"default\"}"), JOBS);
    /* each job's acceptance and end were committed: at least two each */
    cr_assert(sample(t, "loom_store_commit_seconds_count") >= 2 * JOBS, "%s", t);
    /* the mock's latency is 5 ms: the durations' sum is at least that much each */
    char *sum = strstr(t, "gen_ai_client_operation_duration_seconds_sum{");
    cr_assert_not_null(sum);
    cr_assert(strtod(strchr(sum, '}') + 2, NULL) >= JOBS * 0.005, "%s", sum);
    assert_histograms_whole(t);
    free(t);
    /* what is not a scrape */
    t = http("127.0.0.1", port, "GET", "/");
    cr_assert_not_null(strstr(t, " 404 "), "%s", t);
    free(t);
    t = http("127.0.0.1", port, "GET", "/metrics/x");
    cr_assert_not_null(strstr(t, " 404 "), "%s", t);
    free(t);
    t = http("127.0.0.1", port, "POST", "/metrics");
    cr_assert_not_null(strstr(t, " 405 "), "%s", t);
    free(t);
}

Test(loomd_metrics, op_and_loomctl_print_the_same_text, .fini = teardown)
{
    start("[::1]:0"); /* and the endpoint on IPv6 */
    int port = metrics_port();
    run_jobs(2);
    json_t *r = lh_call(&D, "{\"id\":7,\"op\":\"metrics\"}", 10000);
    cr_assert_not_null(r);
    cr_assert(json_is_true(json_object_get(r, "ok")));
    const char *op_text = json_string_value(json_object_get(r, "text"));
    cr_assert_not_null(op_text);
    cr_assert_eq(sample(op_text, TOKENS_IN), 2, "%s", op_text);
    char *args = NULL, *out = NULL;
    cr_assert(asprintf(&args, "metrics --socket '%s'", D.sock) > 0);
    cr_assert_eq(lh_loomctl(args, &out), 0);
    char *web = http("::1", port, "GET", "/metrics");
    /* the same families, series and counts whichever way it is read */
    const char *same[] = { TOKENS_IN, DURATION, WF_JOBS,
                           "loom_jobs_finished_total{state=\"succeeded\"}" };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        cr_assert_eq(sample(out, same[i]), 2, "%s in:\n%s", same[i], out);
        cr_assert_eq(sample(web, same[i]), 2, "%s in:\n%s", same[i], web);
    }
    assert_histograms_whole(out);
    free(web);
    free(out);
    /* extra arguments are a usage error */
    free(args);
    cr_assert(asprintf(&args, "metrics --socket '%s' extra 2>/dev/null", D.sock) > 0);
    cr_assert_eq(lh_loomctl(args, &out), 2);
    free(out);
    free(args);
    json_decref(r);
}

Test(loomd_metrics, bad_listen_is_refused_at_its_position, .fini = teardown)
{
    lh_setup(&D, NULL, NULL);
    FILE *f = fopen(D.cfg, "a");
    cr_assert_not_null(f);
    fputs("metrics:\n  listen: \"127.0.0.1:99999\"\n", f);
    fclose(f);
    /* the line of `listen` in the file: the lines before it, plus one */
    char *text = NULL;
    size_t n = 0;
    f = fopen(D.cfg, "r");
    cr_assert_not_null(f);
    cr_assert(getdelim(&text, &n, '\0', f) > 0);
    fclose(f);
    int line = 1;
    for (char *p = text; p < strstr(text, "  listen:"); p++)
        line += *p == '\n';
    free(text);
    char out[4096], want[600];
    cr_assert_neq(lh_check(&D, out, sizeof out), 0, "%s", out);
    snprintf(want, sizeof want, "%s:%d:11: error: bad 'listen' address '127.0.0.1:99999'", D.cfg,
             line);
    cr_assert_not_null(strstr(out, want), "want %s in:\n%s", want, out);
    cr_assert_not_null(strstr(out, "65535"), "%s", out);
}

Test(loomd_metrics, an_address_in_use_stops_the_start, .fini = teardown)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, len), 0);
    cr_assert_eq(listen(fd, 1), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char extra[128];
    snprintf(extra, sizeof extra, "metrics: { listen: \"127.0.0.1:%d\" }\n", ntohs(a.sin_port));
    lh_setup(&D, NULL, NULL);
    FILE *f = fopen(D.cfg, "a");
    cr_assert_not_null(f);
    fputs(extra, f);
    fclose(f);
    lh_spawn(&D);
    int rc = lh_wait_listening(&D, 10000);
    cr_assert_neq(rc, 0, "loomd started on a port another socket holds");
    cr_assert_eq(lh_log_count(&D, "metrics: cannot listen on", "Address already in use"), 1);
    close(fd);
}

/* The first sample value whose line starts with PREFIX, whatever labels
 * follow it; -1 when none. */
static double sample_prefix(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0) {
            const char *sp = strchr(p, ' ');
            return sp ? strtod(sp + 1, NULL) : -1;
        }
    return -1;
}

static char *submit_id(const char *wf)
{
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"text\":"
                              "\"tell me something long enough\"}}", wf);
    json_t *r = lh_call(&D, req, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "submit %s", wf);
    char *id = strdup(json_string_value(json_object_get(r, "job")));
    json_decref(r);
    return id;
}

/* A job of WF run while someone reads its tokens, so that its calls
 * stream: it waits behind a slow job (max_running_jobs: 1) until the
 * subscription is in, then the slow one is cancelled. Returns once it
 * succeeded. */
static void watched_job(const char *wf)
{
    char *slow = submit_id("slow"), *job = submit_id(wf);
    int fd = lh_connect(&D);
    char req[256];
    snprintf(req, sizeof req, "{\"id\":1,\"op\":\"events\",\"job\":\"%s\",\"tokens\":true}", job);
    lh_send(fd, req);
    json_t *r = lh_recv(fd, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "subscribed")), "subscribed");
    json_decref(r);
    snprintf(req, sizeof req, "{\"op\":\"cancel\",\"job\":\"%s\"}", slow);
    json_decref(lh_call(&D, req, 10000));
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":20}", job);
    r = lh_call(&D, req, 25000);
    cr_assert_not_null(r);
    const char *state = json_string_value(json_object_get(json_object_get(r, "job"), "state"));
    cr_assert(state && strcmp(state, "succeeded") == 0, "%s", json_dumps(r, 0));
    json_decref(r);
    close(fd);
    free(slow);
    free(job);
}

Test(loomd_metrics, streamed_calls_and_errors_from_the_fake_provider, .fini = teardown)
{
    /* every other request answers 500; the others stream in 5-byte pieces */
    lh_setup(&D,
             "  p: { plugin: openai, base_url: \"@FAKE@\", api_key_env: LOOM_TEST_METRICS_KEY }\n"
             "metrics: { listen: \"127.0.0.1:0\" }\nmax_running_jobs: 1\n",
             (const char *const[]){ "--fault", "500", "--fault-every", "2", "--stream-chunk", "5",
                                    "--stream-gap", "1", NULL });
    setenv("LOOM_TEST_METRICS_KEY", "sk-test-metrics", 1);
    lh_workflow(&D, "ask",
                "loom: 1\nname: ask\ndefaults: { provider: p, model: m }\n"
                "do: { call: '{{ input.text }}', retry: { max_attempts: 4, initial_delay: 10ms } }\n");
    lh_workflow(&D, "slow", "loom: 1\nname: slow\ndefaults: { provider: slow }\n"
                            "do: { call: 'slowly' }\n");
    lh_start(&D);
    int port = metrics_port();
    for (int i = 0; i < 2; i++)
        watched_job("ask");

    char *t = http("127.0.0.1", port, "GET", "/metrics");
    const char *g = "{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\","
                    "gen_ai_request_model=\"m\"";
    char key[512];
    /* two jobs succeeded; every other request answered 500 */
    snprintf(key, sizeof key, "gen_ai_client_operation_duration_seconds_count%s,error_type=\"\","
                              "loom_provider=\"p\"}", g);
    cr_assert_eq(sample(t, key), 2, "%s in:\n%s", key, t);
    snprintf(key, sizeof key, "gen_ai_client_operation_duration_seconds_count%s,"
                              "error_type=\"upstream\",loom_provider=\"p\"}", g);
    double failed = sample(t, key);
    cr_assert(failed >= 1, "%s in:\n%s", key, t);
    cr_assert_eq(sample(t, "loom_provider_errors_total{provider=\"p\",plugin=\"openai\","
                           "error=\"upstream\"}"), failed);
    /* every request sent is one of those attempts */
    cr_assert_eq(sample(t, "loom_provider_requests_total{provider=\"p\",plugin=\"openai\"}"),
                 2 + failed);
    /* the streamed answers' first tokens came before their ends */
    snprintf(key, sizeof key, "gen_ai_server_time_to_first_token_seconds_count%s,"
                              "loom_provider=\"p\"}", g);
    cr_assert_eq(sample(t, key), 2, "%s in:\n%s", key, t);
    double ttft = sample_prefix(t, "gen_ai_server_time_to_first_token_seconds_sum{");
    double dur = -1;
    snprintf(key, sizeof key, "gen_ai_client_operation_duration_seconds_sum%s,error_type=\"\","
                              "loom_provider=\"p\"}", g);
    dur = sample(t, key);
    cr_assert(ttft > 0 && ttft <= dur, "ttft %g, duration %g", ttft, dur);
    /* the fake reports usage: input and output tokens were observed */
    snprintf(key, sizeof key, "gen_ai_client_token_usage_count%s,gen_ai_token_type=\"output\","
                              "loom_provider=\"p\"}", g);
    cr_assert_eq(sample(t, key), 2, "%s in:\n%s", key, t);
    free(t);
}
