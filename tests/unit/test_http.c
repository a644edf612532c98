/* test_http.c -- daemon/http.c against the fake provider server over real
 * TCP on 127.0.0.1: answers, headers, concurrency on one thread, connection
 * reuse, each timeout, transport failures, cancel and teardown. Timing
 * asserts are generous bounds: a loaded machine only makes things later. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/containers.h"
#include "daemon/core/http.h"
#include "tests/unit/fake_server.h"

static fake_server srv;
static reactor_t *r;
static http_client_t *hc;

typedef struct got {
    int n;
    http_outcome outcome;
    int status;
    char *body;
    char *ratelimit;           /* x-ratelimit-limit-requests, if sent */
    uint64_t total_us;
} got;

static void on_done(http_call_t *call, const http_response *resp, void *ud)
{
    got *g = ud;
    (void)call;
    g->n++;
    g->outcome = resp->outcome;
    g->status = resp->status;
    free(g->body);
    g->body = strndup(resp->body, resp->body_len);
    g->total_us = resp->total_us;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcmp(resp->headers[i].name, "x-ratelimit-limit-requests") == 0) {
            free(g->ratelimit);
            g->ratelimit = strdup(resp->headers[i].value);
        }
}

static void got_free(got *g)
{
    free(g->body);
    free(g->ratelimit);
}

static void setup_with(const char *const *args, const http_options *opt)
{
    cr_assert_eq(fake_server_start(&srv, args), 0);
    r = reactor_new();
    cr_assert(r);
    hc = http_client_new(r, opt);
    cr_assert(hc);
}

static void teardown(void)
{
    http_client_free(hc);
    reactor_free(r);
    fake_server_stop(&srv);
}

static void add_header(loom_http_request *q, const char *name, const char *value)
{
    q->headers = realloc(q->headers, (q->nheaders + 1) * sizeof *q->headers);
    cr_assert(q->headers);
    q->headers[q->nheaders].name = strdup(name);
    q->headers[q->nheaders].value = strdup(value);
    q->nheaders++;
}

/* A chat completion request to the fake server whose answer echoes TEXT. */
static void chat_request(loom_http_request *q, int port, const char *text)
{
    memset(q, 0, sizeof *q);
    q->method = strdup("POST");
    cr_assert(asprintf(&q->url, "http://127.0.0.1:%d/v1/chat/completions", port) > 0);
    add_header(q, "Content-Type", "application/json");
    add_header(q, "Authorization", "Bearer sk-test");
    cr_assert(asprintf(&q->body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                       text) > 0);
    q->body_len = strlen(q->body);
}

static http_call_t *start_chat(const char *text, const http_call_opts *t, got *g)
{
    loom_http_request q;
    chat_request(&q, srv.port, text);
    http_call_t *c = http_call(hc, &q, t, on_done, g);
    cr_assert(c, "http_call: %s", strerror(errno));
    cr_assert_null(q.url, "the request is stolen");
    return c;
}

/* Runs the reactor until *COUNT reaches WANT or MS pass. */
static void run_until(const int *count, int want, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    while (*count < want && reactor_now_us(r) < end)
        reactor_run_once(r, 10);
}

Test(http, answers_with_status_body_and_lower_case_headers, .fini = teardown)
{
    setup_with((const char *const[]){ "--rpm", "6000", NULL }, NULL);
    got g = { 0 };
    start_chat("hello there", NULL, &g);
    cr_assert_eq(g.n, 0, "never called back from inside http_call");
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.outcome, HTTP_OK);
    cr_assert_eq(g.status, 200);
    cr_assert(strstr(g.body, "hello there"), "%s", g.body);
    cr_assert_str_eq(g.ratelimit, "6000");
    cr_assert_eq(http_in_flight(hc), 0);
    got_free(&g);
}

Test(http, many_calls_in_flight_on_one_thread, .fini = teardown)
{
    setup_with((const char *const[]){ "--latency", "200", NULL }, NULL);
    enum { N = 300 };
    got g[N];
    int done = 0;
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        start_chat("x", NULL, &g[i]);
    cr_assert_eq(http_in_flight(hc), N);
    uint64_t t0 = reactor_now_us(r);
    while (done < N && reactor_now_us(r) - t0 < 20 * 1000000ull) {
        reactor_run_once(r, 10);
        done = 0;
        for (int i = 0; i < N; i++)
            done += g[i].n;
    }
    cr_assert_eq(done, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].status, 200);
        got_free(&g[i]);
    }
    long peak = fake_server_stat(&srv, "max_in_flight");
    cr_log_info("300 calls of 200 ms: %.0f ms, server peak in flight %ld",
                (reactor_now_us(r) - t0) / 1000.0, peak);
    cr_assert_gt(peak, N / 2, "calls overlap at the server (peak %ld)", peak);
}

/* Calls started in one go beyond what one pass hands to curl wait in the
 * client's queue: they count as in flight, keep their order, and one
 * cancelled while it waits never calls back and never reaches the server. */
Test(http, calls_waiting_for_curl_can_be_cancelled, .fini = teardown)
{
    setup_with(NULL, NULL);
    enum { N = 200 };
    got g[N];
    http_call_t *c[N];
    int done = 0;
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        c[i] = start_chat("x", NULL, &g[i]);
    cr_assert_eq(http_in_flight(hc), N);
    /* the last ones started are the ones surely still waiting */
    http_cancel(c[N - 1]);
    http_cancel(c[N - 2]);
    cr_assert_eq(http_in_flight(hc), N - 2);
    uint64_t t0 = reactor_now_us(r);
    while (done < N - 2 && reactor_now_us(r) - t0 < 20 * 1000000ull) {
        reactor_run_once(r, 10);
        done = 0;
        for (int i = 0; i < N; i++)
            done += g[i].n;
    }
    cr_assert_eq(done, N - 2);
    cr_assert_eq(g[N - 1].n, 0);
    cr_assert_eq(g[N - 2].n, 0);
    cr_assert_eq(http_in_flight(hc), 0);
    for (int i = 0; i < N; i++)
        got_free(&g[i]);
    cr_assert_eq(fake_server_stat(&srv, "requests"), N - 2);
}

Test(http, connections_are_reused, .fini = teardown)
{
    setup_with(NULL, NULL);
    for (int i = 0; i < 50; i++) {
        got g = { 0 };
        start_chat("again", NULL, &g);
        run_until(&g.n, 1, 5000);
        cr_assert_eq(g.status, 200);
        got_free(&g);
    }
    long conns = fake_server_stat(&srv, "connections");
    cr_assert_leq(conns, 3, "50 sequential calls opened %ld connections", conns);
}

/* An https:// call to the fake (which speaks plain HTTP) under T: its
 * outcome, which must come without an answer. */
static http_outcome https_to_plain(const http_call_opts *t)
{
    loom_http_request q;
    chat_request(&q, srv.port, "x");
    free(q.url);
    cr_assert(asprintf(&q.url, "https://127.0.0.1:%d/v1/chat/completions", srv.port) > 0);
    got g = { 0 };
    cr_assert(http_call(hc, &q, t, on_done, &g));
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.status, 0);
    got_free(&g);
    return g.outcome;
}

/* (certificates themselves are refused in test_loomd_tls, through a real
 * TLS server) */
Test(http, an_unreadable_ca_file_is_tls, .fini = teardown)
{
    setup_with(NULL, NULL);
    /* curl reads the CA file before it says a word of TLS */
    http_call_opts t = { .ca_file = "/nonexistent/ca.pem" };
    http_outcome o = https_to_plain(&t);
    cr_assert_eq(o, HTTP_E_TLS, "%s", http_outcome_name(o));
    cr_assert_eq(http_outcome_code(HTTP_E_TLS), LOOM_E_TLS);
    cr_assert_eq(http_outcome_code(HTTP_E_TIMEOUT_FIRST_BYTE), LOOM_E_TIMEOUT);
    cr_assert_eq(http_outcome_code(HTTP_E_CONNECT), LOOM_E_UPSTREAM);
    cr_assert_str_eq(http_outcome_name(HTTP_E_TLS), "tls");
}

Test(http, versions_are_named_as_the_config_writes_them)
{
    static const char *const names[] = { "auto", "1.1", "2" };
    for (int v = HTTP_VERSION_AUTO; v <= HTTP_VERSION_2; v++) {
        cr_assert_str_eq(http_version_name((http_version)v), names[v]);
        cr_assert_eq(http_version_parse(names[v]), v);
    }
    cr_assert_eq(http_version_parse("2.0"), -1);
    cr_assert_eq(http_version_parse("h2"), -1);
    cr_assert_eq(http_version_parse(NULL), -1);
}

Test(http, refused_connection_is_a_connect_error, .fini = teardown)
{
    setup_with(NULL, NULL);
    /* a port nobody listens on: bind one, note it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    loom_http_request q;
    chat_request(&q, ntohs(a.sin_port), "x");
    got g = { 0 };
    cr_assert(http_call(hc, &q, NULL, on_done, &g));
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.outcome, HTTP_E_CONNECT, "%s", http_outcome_name(g.outcome));
    cr_assert_eq(g.status, 0);
    got_free(&g);
}

Test(http, connect_timeout, .fini = teardown)
{
    setup_with(NULL, NULL);
    /* a listener whose backlog is full drops further SYNs, so connecting
     * to it hangs until our connect timeout */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 0), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &al), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    /* the accept queue of a backlog-0 listener is full once one connection
     * is established (it is never accepted): wait for that, not for a time */
    bool full = false;
    for (int tries = 0; !full && tries < 500; tries++) {
        struct pollfd pf[4];
        for (int i = 0; i < 4; i++)
            pf[i] = (struct pollfd){ .fd = fill[i], .events = POLLOUT };
        cr_assert_geq(poll(pf, 4, 10), 0);
        for (int i = 0; i < 4; i++)
            full = full || ((pf[i].revents & POLLOUT) && !(pf[i].revents & (POLLERR | POLLHUP)));
    }
    cr_assert(full, "no connection to the listener was established within 5 s");
    loom_http_request q;
    chat_request(&q, ntohs(a.sin_port), "x");
    got g = { 0 };
    http_call_opts t = { .connect_ms = 300, .first_byte_ms = 5000, .total_ms = 10000 };
    cr_assert(http_call(hc, &q, &t, on_done, &g));
    run_until(&g.n, 1, 8000);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.outcome, HTTP_E_TIMEOUT_CONNECT, "%s", http_outcome_name(g.outcome));
    cr_assert_lt(g.total_us, 4000000);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(l);
    got_free(&g);
}

Test(http, first_byte_timeout, .fini = teardown)
{
    setup_with((const char *const[]){ "--latency", "100", "--fault", "slow_first_byte", NULL }, NULL);
    got g = { 0 };
    http_call_opts t = { .connect_ms = 2000, .first_byte_ms = 300, .total_ms = 10000 };
    start_chat("x", &t, &g);
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.outcome, HTTP_E_TIMEOUT_FIRST_BYTE, "%s", http_outcome_name(g.outcome));
    cr_assert_geq(g.total_us, 300000);
    cr_assert_lt(g.total_us, 900000, "the answer came at 1000 ms, the timeout must be first");
    got_free(&g);
}

Test(http, total_timeout_on_a_stalled_body, .fini = teardown)
{
    setup_with((const char *const[]){ "--fault", "stall_body", NULL }, NULL);
    got g = { 0 };
    http_call_opts t = { .connect_ms = 2000, .first_byte_ms = 2000, .total_ms = 400 };
    start_chat("x", &t, &g);
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.outcome, HTTP_E_TIMEOUT_TOTAL, "%s", http_outcome_name(g.outcome));
    cr_assert_geq(g.total_us, 400000);
    got_free(&g);
}

Test(http, dropped_connection_is_a_transfer_error, .fini = teardown)
{
    setup_with((const char *const[]){ "--fault", "drop", NULL }, NULL);
    got g = { 0 };
    start_chat("x", NULL, &g);
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.outcome, HTTP_E_TRANSFER, "%s", http_outcome_name(g.outcome));
    got_free(&g);
}

Test(http, body_over_the_limit, .fini = teardown)
{
    http_options o = { .max_body = 1 << 20 };
    setup_with((const char *const[]){ "--fault", "huge_body", NULL }, &o);
    got g = { 0 };
    start_chat("x", NULL, &g);
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.outcome, HTTP_E_TOO_LARGE, "%s", http_outcome_name(g.outcome));
    got_free(&g);
}

Test(http, error_statuses_are_answers, .fini = teardown)
{
    setup_with((const char *const[]){ "--fault", "503", NULL }, NULL);
    got g = { 0 };
    start_chat("x", NULL, &g);
    run_until(&g.n, 1, 5000);
    cr_assert_eq(g.outcome, HTTP_OK);
    cr_assert_eq(g.status, 503);
    cr_assert(strstr(g.body, "server_is_overloaded"), "%s", g.body);
    got_free(&g);
}

Test(http, cancelled_calls_never_call_back, .fini = teardown)
{
    setup_with((const char *const[]){ "--latency", "100", NULL }, NULL);
    got g[10];
    http_call_t *c[10];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 10; i++)
        c[i] = start_chat("x", NULL, &g[i]);
    for (int i = 0; i < 10; i += 2)
        http_cancel(c[i]);
    cr_assert_eq(http_in_flight(hc), 5);
    int total = 0;
    uint64_t t0 = reactor_now_us(r);
    while (reactor_now_us(r) - t0 < 1500000) {
        reactor_run_once(r, 10);
        total = 0;
        for (int i = 0; i < 10; i++)
            total += g[i].n;
        if (total == 5 && http_in_flight(hc) == 0)
            break;
    }
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(g[i].n, i % 2, "call %d", i);
        got_free(&g[i]);
    }
}

Test(http, freeing_the_client_with_calls_in_flight, .fini = teardown)
{
    setup_with((const char *const[]){ "--latency", "500", NULL }, NULL);
    got g[20];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 20; i++)
        start_chat("x", NULL, &g[i]);
    for (int i = 0; i < 5; i++)
        reactor_run_once(r, 10); /* connected and sent */
    http_client_free(hc);
    hc = NULL;
    for (int i = 0; i < 20; i++) {
        reactor_run_once(r, 10);
        cr_assert_eq(g[i].n, 0);
    }
}

Test(http, request_without_url_is_refused, .fini = teardown)
{
    setup_with(NULL, NULL);
    loom_http_request q = { .method = strdup("POST") };
    got g = { 0 };
    errno = 0;
    cr_assert_null(http_call(hc, &q, NULL, on_done, &g));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(q.method, "stolen even when refused");
}

Test(http, raises_the_open_file_limit)
{
    long n = http_raise_nofile();
    cr_assert_gt(n, 0);
}

/* The budget of response bytes across calls: HUGE answers of 20 MiB each
 * (the fake server's huge_body) three at a time against a budget of one
 * and a half of them. A call whose bytes would pass it ends with
 * response_budget and gives its bytes back, so the last one standing
 * always fits: at least one answer arrives whole, the client never holds
 * more than the budget, and nothing stays charged at the end. */
Test(http, response_bytes_in_flight_are_bounded, .fini = teardown)
{
    const size_t huge = 20u << 20, budget = huge + huge / 2;
    http_options o = { .max_bytes_in_flight = budget };
    setup_with((const char *const[]){ "--fault", "huge_body", NULL }, &o);
    enum { N = 3 };
    got g[N];
    memset(g, 0, sizeof g);
    for (int i = 0; i < N; i++)
        start_chat("x", NULL, &g[i]);
    size_t peak = 0;
    uint64_t end = reactor_now_us(r) + 20 * REACTOR_SEC;
    for (int done = 0; done < N && reactor_now_us(r) < end;) {
        reactor_run_once(r, 10);
        size_t b = http_bytes_in_flight(hc);
        peak = b > peak ? b : peak;
        done = 0;
        for (int i = 0; i < N; i++)
            done += g[i].n;
    }
    int whole = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].n, 1, "call %d did not finish", i);
        whole += g[i].outcome == HTTP_OK;
        refused += g[i].outcome == HTTP_E_BUDGET;
        cr_assert(g[i].outcome == HTTP_OK || g[i].outcome == HTTP_E_BUDGET, "call %d: %s", i,
                  http_outcome_name(g[i].outcome));
        got_free(&g[i]);
    }
    cr_log_info("%d whole, %d over the budget, peak %zu of %zu bytes", whole, refused, peak,
                budget);
    cr_assert_geq(whole, 1);
    cr_assert_leq(peak, budget);
    cr_assert_eq(http_bytes_in_flight(hc), 0);
    cr_assert_str_eq(http_outcome_name(HTTP_E_BUDGET), "response_budget");
}

/* ---- streamed bodies (http_call_opts.on_data) */

typedef struct streamed {
    sbuf body;                 /* what on_data got */
    int chunks;
    int done_before;           /* chunks seen before the call ended */
    int refuse_after;          /* > 0: refuse the chunk after this many */
} streamed;

static int on_data(void *ud, const char *data, size_t len)
{
    streamed *s = ud;
    if (s->refuse_after > 0 && s->chunks >= s->refuse_after)
        return 1;
    s->chunks++;
    cr_assert_eq(sbuf_add(&s->body, data, len), 0);
    return 0;
}

/* A streamed chat request of TEXT (with "stream": true when STREAM). */
static void stream_request(loom_http_request *q, const char *text, bool stream)
{
    chat_request(q, srv.port, text);
    free(q->body);
    cr_assert(asprintf(&q->body, "{\"model\":\"m\",\"stream\":%s,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"%s\"}]}", stream ? "true" : "false", text) > 0);
    q->body_len = strlen(q->body);
}

Test(http, an_event_stream_goes_to_on_data_as_it_arrives, .fini = teardown)
{
    setup_with((const char *const[]){ "--stream-chunk", "16", "--stream-gap", "5", NULL }, NULL);
    streamed s = { .body = SBUF_INIT };
    http_call_opts o = { .on_data = on_data, .data_ud = &s };
    got g = { 0 };
    loom_http_request q;
    stream_request(&q, "the answer comes in many pieces, each its own write", true);
    cr_assert(http_call(hc, &q, &o, on_done, &g));
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.outcome, HTTP_OK, "%s", http_outcome_name(g.outcome));
    cr_assert_eq(g.status, 200);
    cr_assert_str_eq(g.body, "", "a streamed body is not kept");
    /* 16-byte writes 5 ms apart arrive as more than one read */
    cr_assert_gt(s.chunks, 1, "the body came in %d chunk(s)", s.chunks);
    cr_assert(strstr(s.body.p, "data: [DONE]") != NULL, "%s", s.body.p);
    cr_assert_eq(http_bytes_in_flight(hc), 0);
    sbuf_free(&s.body);
    got_free(&g);
}

Test(http, an_answer_that_is_not_a_stream_is_kept_whole, .fini = teardown)
{
    setup_with((const char *const[]){ "--fault", "500", NULL }, NULL);
    streamed s = { .body = SBUF_INIT };
    http_call_opts o = { .on_data = on_data, .data_ud = &s };
    got g = { 0 };
    loom_http_request q;
    stream_request(&q, "an error status", true); /* the 500 is JSON, not a stream */
    cr_assert(http_call(hc, &q, &o, on_done, &g));
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.status, 500);
    cr_assert_eq(s.chunks, 0, "an error body is not streamed");
    cr_assert(strstr(g.body, "server_error") != NULL, "%s", g.body);
    got_free(&g);
}

Test(http, a_whole_json_answer_is_kept_even_with_on_data, .fini = teardown)
{
    setup_with(NULL, NULL);
    streamed s = { .body = SBUF_INIT };
    http_call_opts o = { .on_data = on_data, .data_ud = &s };
    got g = { 0 };
    loom_http_request q;
    stream_request(&q, "whole", false);
    cr_assert(http_call(hc, &q, &o, on_done, &g));
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.status, 200);
    cr_assert_eq(s.chunks, 0);
    cr_assert(strstr(g.body, "\"whole\"") != NULL, "%s", g.body);
    got_free(&g);
}

Test(http, on_data_refusing_ends_the_call_aborted, .fini = teardown)
{
    setup_with((const char *const[]){ "--stream-chunk", "16", "--stream-gap", "5", NULL }, NULL);
    streamed s = { .body = SBUF_INIT, .refuse_after = 1 };
    http_call_opts o = { .on_data = on_data, .data_ud = &s };
    got g = { 0 };
    loom_http_request q;
    stream_request(&q, "refused after the first chunk", true);
    cr_assert(http_call(hc, &q, &o, on_done, &g));
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.outcome, HTTP_E_ABORTED, "%s", http_outcome_name(g.outcome));
    cr_assert_eq(s.chunks, 1);
    sbuf_free(&s.body);
    got_free(&g);
}

Test(http, a_stream_past_max_body_is_too_large, .fini = teardown)
{
    http_options opt = { .max_body = 256 };
    setup_with((const char *const[]){ "--stream-chunk", "64", NULL }, &opt);
    streamed s = { .body = SBUF_INIT };
    http_call_opts o = { .on_data = on_data, .data_ud = &s };
    got g = { 0 };
    loom_http_request q;
    stream_request(&q, "a stream whose events together pass the body cap of 256 bytes", true);
    cr_assert(http_call(hc, &q, &o, on_done, &g));
    run_until(&g.n, 1, 10000);
    cr_assert_eq(g.outcome, HTTP_E_TOO_LARGE, "%s", http_outcome_name(g.outcome));
    cr_assert_leq(s.body.n, 256);
    sbuf_free(&s.body);
    got_free(&g);
}
