/* test_fake_provider.c -- the fake provider server that other tests lean on.
 *
 * Each test starts its own tests/fake/fake_provider (from $LOOM_BUILDDIR) on
 * a port the server picks, reads that port from the server's first line of
 * output, and speaks plain HTTP/1.1 over a socket with the small client
 * below, so nothing here depends on the daemon's own HTTP code. Timing
 * asserts are lower bounds only: a slow machine may only make things later. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/fake_server.h"

/* ---- the server process */

static fake_server srv; /* one per test: Criterion runs each test in its own process */

static void start(const char *const *args)
{
    cr_assert(getenv("LOOM_BUILDDIR"), "LOOM_BUILDDIR must point at the build tree");
    cr_assert_eq(fake_server_start(&srv, args), 0, "the server did not start");
}

static void stop(void)
{
    fake_server_stop(&srv);
}

/* ---- a tiny HTTP client */

typedef struct {
    int status;     /* -1: closed before any status line */
    char *head;     /* status line and headers, NUL-terminated */
    char *body;     /* as much body as arrived, NUL-terminated */
    size_t blen, clen;
    bool closed;    /* peer closed */
    bool timed_out; /* stopped waiting before the body was complete */
} resp;

static void resp_free(resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may refuse early; the answer tells */
        p += w;
        n -= (size_t)w;
    }
}

static void send_req(int fd, const char *method, const char *path, const char *headers, const char *body)
{
    char h[1024];
    size_t bl = body ? strlen(body) : 0;
    int n = snprintf(h, sizeof h, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n%s\r\n", method, path,
                     bl, headers ? headers : "");
    send_all(fd, h, (size_t)n);
    if (bl)
        send_all(fd, body, bl);
}

/* Nanoseconds since T0, exactly. */
static int64_t ns_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000000000 + (t.tv_nsec - t0->tv_nsec);
}

/* Whole milliseconds since T0, rounded down: a lower bound on the time
 * that passed (splitting seconds and nanoseconds rounded a negative
 * nanosecond difference up). */
static long ms_since(const struct timespec *t0)
{
    return (long)(ns_since(t0) / 1000000);
}

/* Reads one response; gives up after timeout_ms without progress. */
static void read_resp(int fd, resp *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    r->status = -1;
    size_t cap = 1 << 16, len = 0, hl = 0;
    char *b = malloc(cap + 1);
    cr_assert(b);
    for (;;) {
        if (hl && len >= hl + r->clen)
            break;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, timeout_ms) <= 0) {
            r->timed_out = true;
            break;
        }
        if (cap - len < 65536) {
            cap *= 2;
            b = realloc(b, cap + 1);
            cr_assert(b);
        }
        ssize_t n = recv(fd, b + len, cap - len, 0);
        if (n <= 0) {
            r->closed = true;
            break;
        }
        len += (size_t)n;
        b[len] = 0;
        char *he;
        if (!hl && (he = strstr(b, "\r\n\r\n"))) {
            hl = (size_t)(he - b) + 4;
            r->head = strndup(b, hl);
            r->status = atoi(b + 9);
            char *cl = strcasestr(r->head, "\r\ncontent-length:");
            r->clen = cl ? strtoul(cl + 17, NULL, 10) : 0;
        }
    }
    if (hl) {
        r->blen = len - hl < r->clen ? len - hl : r->clen;
        r->body = strndup(b + hl, r->blen);
    }
    free(b);
}

/* Copies a header's value into dst; false when absent. */
static bool hdr(const resp *r, const char *name, char *dst, size_t n)
{
    char key[128];
    snprintf(key, sizeof key, "\r\n%s:", name);
    const char *p = r->head ? strcasestr(r->head, key) : NULL;
    if (!p)
        return false;
    p += strlen(key);
    while (*p == ' ')
        p++;
    size_t k = strcspn(p, "\r");
    if (k >= n)
        k = n - 1;
    memcpy(dst, p, k);
    dst[k] = 0;
    return true;
}

/* One request on a fresh connection. */
static void call(const char *method, const char *path, const char *headers, const char *body, resp *r)
{
    int fd = dial();
    send_req(fd, method, path, headers, body);
    read_resp(fd, r, 5000);
    close(fd);
}

static json_t *body_json(const resp *r)
{
    json_t *j = json_loadb(r->body ? r->body : "", r->blen, 0, NULL);
    cr_assert(j, "body is not JSON: %.200s", r->body ? r->body : "(none)");
    return j;
}

static const char *CHAT = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                          "{\"role\":\"user\",\"content\":\"first\"},{\"role\":\"assistant\",\"content\":\"ok\"},"
                          "{\"role\":\"user\",\"content\":\"hello there, echo me\"}]}";
static const char *MSG = "{\"model\":\"claude\",\"max_tokens\":10,"
                         "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi claude\"}]}]}";
static const char *ANTH = "x-api-key: k\r\nanthropic-version: 2023-06-01\r\n";

TestSuite(fake_provider, .fini = stop, .timeout = 30);

/* ---- the happy paths */

Test(fake_provider, chat_echoes_last_user_message_with_usage)
{
    start(NULL);
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "content")), "hello there, echo me");
    json_t *u = json_object_get(j, "usage");
    /* 8 + 5 + 2 + 20 content bytes -> 9 tokens; 20 answer bytes -> 5 */
    cr_assert_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 9);
    cr_assert_eq(json_integer_value(json_object_get(u, "completion_tokens")), 5);
    cr_assert_eq(json_integer_value(json_object_get(u, "total_tokens")), 14);
    json_decref(j);
    resp_free(&r);
}

Test(fake_provider, keep_alive_serves_several_requests_on_one_connection)
{
    start(NULL);
    int fd = dial();
    for (int i = 0; i < 3; i++) {
        resp r;
        send_req(fd, "POST", "/v1/chat/completions", NULL, CHAT);
        read_resp(fd, &r, 5000);
        cr_assert_eq(r.status, 200, "request %d", i);
        cr_assert_not(r.closed);
        resp_free(&r);
    }
    close(fd);
}

Test(fake_provider, embeddings_keep_input_order_and_are_deterministic)
{
    start(NULL);
    resp r, r2, r3;
    call("POST", "/v1/embeddings", NULL, "{\"model\":\"e\",\"input\":[\"alpha\",\"beta\",\"gamma\"]}", &r);
    call("POST", "/v1/embeddings", NULL, "{\"model\":\"e\",\"input\":[\"gamma\"]}", &r2);
    call("POST", "/v1/embeddings", NULL, "{\"model\":\"e\",\"input\":\"alpha\"}", &r3);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r), *j2 = body_json(&r2), *j3 = body_json(&r3);
    json_t *data = json_object_get(j, "data");
    cr_assert_eq(json_array_size(data), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *d = json_array_get(data, i);
        cr_assert_eq(json_integer_value(json_object_get(d, "index")), (json_int_t)i);
        cr_assert_eq(json_array_size(json_object_get(d, "embedding")), 8);
    }
    json_t *gamma = json_object_get(json_array_get(data, 2), "embedding");
    json_t *alpha = json_object_get(json_array_get(data, 0), "embedding");
    cr_assert(json_equal(gamma, json_object_get(json_array_get(json_object_get(j2, "data"), 0), "embedding")));
    cr_assert(json_equal(alpha, json_object_get(json_array_get(json_object_get(j3, "data"), 0), "embedding")));
    cr_assert_not(json_equal(alpha, gamma));
    json_decref(j);
    json_decref(j2);
    json_decref(j3);
    resp_free(&r);
    resp_free(&r2);
    resp_free(&r3);

    call("GET", "/stats", NULL, NULL, &r);
    j = body_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "embeddings")), 3);
    cr_assert_eq(json_integer_value(json_object_get(j, "embedding_inputs")), 5);
    json_decref(j);
    resp_free(&r);
}

Test(fake_provider, anthropic_messages_with_headers)
{
    start(NULL);
    resp r;
    call("POST", "/v1/messages", ANTH, MSG, &r);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "message");
    json_t *c0 = json_array_get(json_object_get(j, "content"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c0, "type")), "text");
    cr_assert_str_eq(json_string_value(json_object_get(c0, "text")), "hi claude");
    json_t *u = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(u, "input_tokens")), 3);
    cr_assert_eq(json_integer_value(json_object_get(u, "output_tokens")), 3);
    json_decref(j);
    resp_free(&r);
}

Test(fake_provider, anthropic_messages_without_headers_is_401)
{
    start(NULL);
    const char *variants[] = { NULL, "x-api-key: k\r\n", "anthropic-version: 2023-06-01\r\n" };
    for (size_t i = 0; i < 3; i++) {
        resp r;
        call("POST", "/v1/messages", variants[i], MSG, &r);
        cr_assert_eq(r.status, 401, "variant %zu", i);
        json_t *j = body_json(&r);
        cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "error");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                         "authentication_error");
        json_decref(j);
        resp_free(&r);
    }
}

Test(fake_provider, answers_wait_for_latency)
{
    start((const char *const[]){ "--latency", "200", NULL });
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_geq(ms_since(&t0), 190);
    resp_free(&r);
}

/* ---- rate limits */

Test(fake_provider, rpm_gives_429_with_retry_after_after_the_burst)
{
    /* 120 rpm = 2 per second of burst */
    start((const char *const[]){ "--rpm", "120", NULL });
    char v[64];
    resp r;
    for (int i = 0; i < 2; i++) {
        call("POST", "/v1/chat/completions", NULL, CHAT, &r);
        cr_assert_eq(r.status, 200, "request %d within the burst", i);
        cr_assert(hdr(&r, "x-ratelimit-limit-requests", v, sizeof v));
        cr_assert_str_eq(v, "120");
        cr_assert(hdr(&r, "x-ratelimit-remaining-requests", v, sizeof v));
        cr_assert(hdr(&r, "x-ratelimit-reset-requests", v, sizeof v));
        resp_free(&r);
    }
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 429);
    cr_assert(hdr(&r, "retry-after", v, sizeof v));
    cr_assert_geq(atoi(v), 1);
    cr_assert(hdr(&r, "retry-after-ms", v, sizeof v));
    cr_assert_gt(atoi(v), 0);
    cr_assert(hdr(&r, "x-ratelimit-remaining-requests", v, sizeof v));
    cr_assert_str_eq(v, "0");
    cr_assert(hdr(&r, "x-ratelimit-reset-requests", v, sizeof v));
    cr_assert(strchr(v, 's'), "Go duration: %s", v);
    json_t *j = body_json(&r);
    json_t *e = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "requests");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "rate_limit_exceeded");
    json_decref(j);
    resp_free(&r);

    /* Anthropic's names on /v1/messages */
    call("POST", "/v1/messages", ANTH, MSG, &r);
    cr_assert_eq(r.status, 429);
    cr_assert(hdr(&r, "anthropic-ratelimit-requests-remaining", v, sizeof v));
    cr_assert(hdr(&r, "anthropic-ratelimit-requests-reset", v, sizeof v));
    cr_assert(strchr(v, 'T') && strchr(v, 'Z'), "RFC 3339: %s", v);
    j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "rate_limit_error");
    json_decref(j);
    resp_free(&r);

    call("GET", "/stats", NULL, NULL, &r);
    j = body_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "r429")), 2);
    json_decref(j);
    resp_free(&r);
}

Test(fake_provider, tpm_limit_gives_429_of_type_tokens)
{
    /* 600 tpm = 10 tokens of burst; a request costs 14, allowed only on a full bucket */
    start((const char *const[]){ "--tpm", "600", NULL });
    resp r;
    char v[64];
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(hdr(&r, "x-ratelimit-limit-tokens", v, sizeof v));
    cr_assert_str_eq(v, "600");
    resp_free(&r);
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 429);
    cr_assert(hdr(&r, "retry-after", v, sizeof v));
    cr_assert_geq(atoi(v), 1);
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "tokens");
    json_decref(j);
    resp_free(&r);
}

/* ---- faults */

static void expect_error_fault(const char *mode, int status, const char *type)
{
    start((const char *const[]){ "--fault", mode, NULL });
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, status, "%s", mode);
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")), type, "%s", mode);
    json_decref(j);
    resp_free(&r);
}

Test(fake_provider, fault_500)
{
    expect_error_fault("500", 500, "server_error");
}

Test(fake_provider, fault_503)
{
    expect_error_fault("503", 503, "service_unavailable_error");
}

Test(fake_provider, fault_529_is_anthropic_overloaded)
{
    expect_error_fault("529", 529, "overloaded_error");
}

Test(fake_provider, fault_quota_is_429_insufficient_quota)
{
    expect_error_fault("quota", 429, "insufficient_quota");
}

static int64_t mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* The lines of the request log at PATH. */
static json_t *read_log(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "no log at %s", path);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "a bad log line: %s", line);
        json_array_append_new(all, j);
    }
    free(line);
    fclose(f);
    return all;
}

Test(fake_provider, the_log_has_each_answer_with_its_step_key_and_times)
{
    char path[256];
    snprintf(path, sizeof path, "%s/loom-fake-log-XXXXXX", P_tmpdir);
    int tmp = mkstemp(path);
    cr_assert(tmp >= 0);
    close(tmp);
    start((const char *const[]){ "--latency", "50", "--log", path, NULL });
    int64_t t0 = mono_us();
    resp r;
    call("POST", "/v1/chat/completions", "Loom-Step-Key: v1/0 do.call\r\n", CHAT, &r);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    int64_t t1 = mono_us();
    /* a client that leaves before its answer: the answer is read by nobody */
    int fd = dial();
    send_req(fd, "POST", "/v1/chat/completions", "Loom-Step-Key: gone\r\n", CHAT);
    for (int64_t until = mono_us() + 5000000; fake_server_stat(&srv, "in_flight") == 0;)
        cr_assert_lt(mono_us(), until, "the request never arrived");
    close(fd);
    for (int64_t until = mono_us() + 5000000; fake_server_stat(&srv, "in_flight") != 0;)
        cr_assert_lt(mono_us(), until, "the answer never fell due");
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    resp_free(&r);
    json_t *log = read_log(path);
    unlink(path);
    cr_assert_eq(json_array_size(log), 3, "one line per answer");
    json_t *a = json_array_get(log, 0), *b = json_array_get(log, 1), *c = json_array_get(log, 2);
    cr_assert_str_eq(json_string_value(json_object_get(a, "key")), "v1/0 do.call");
    cr_assert_eq(json_integer_value(json_object_get(a, "status")), 200);
    cr_assert(json_is_true(json_object_get(a, "delivered")));
    cr_assert_str_eq(json_string_value(json_object_get(a, "echo")), "hello there, echo me");
    int64_t rx = json_integer_value(json_object_get(a, "received_us"));
    int64_t ans = json_integer_value(json_object_get(a, "answered_us"));
    cr_assert(t0 <= rx && rx + 50000 <= ans && ans <= t1,
              "the times are this machine's monotonic clock: %lld <= %lld < %lld <= %lld",
              (long long)t0, (long long)rx, (long long)ans, (long long)t1);
    cr_assert_str_eq(json_string_value(json_object_get(b, "key")), "gone");
    cr_assert(json_is_false(json_object_get(b, "delivered")), "the client had gone");
    cr_assert_null(json_object_get(c, "key"), "no header, no key");
    json_decref(log);
}

Test(fake_provider, fault_drop_closes_without_answer)
{
    start((const char *const[]){ "--fault", "drop", NULL });
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, -1);
    cr_assert(r.closed);
    resp_free(&r);
}

Test(fake_provider, fault_stall_body_sends_half_then_nothing)
{
    start((const char *const[]){ "--fault", "stall_body", NULL });
    resp r;
    int fd = dial();
    send_req(fd, "POST", "/v1/chat/completions", NULL, CHAT);
    read_resp(fd, &r, 500);
    cr_assert_eq(r.status, 200);
    cr_assert(r.timed_out);
    cr_assert_not(r.closed);
    cr_assert_gt(r.blen, 0);
    cr_assert_lt(r.blen, r.clen);
    close(fd);
    resp_free(&r);
}

Test(fake_provider, fault_malformed_json_is_a_truncated_200)
{
    start((const char *const[]){ "--fault", "malformed_json", NULL });
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.blen, r.clen);
    cr_assert_gt(r.blen, 0);
    cr_assert_null(json_loadb(r.body, r.blen, 0, NULL));
    resp_free(&r);
}

Test(fake_provider, fault_huge_body_is_20_mb)
{
    start((const char *const[]){ "--fault", "huge_body", NULL });
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_geq(r.clen, (size_t)20 * 1024 * 1024);
    cr_assert_eq(r.blen, r.clen);
    resp_free(&r);
}

Test(fake_provider, fault_slow_first_byte_waits_ten_latencies)
{
    start((const char *const[]){ "--fault", "slow_first_byte", "--latency", "40", NULL });
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    resp r;
    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_geq(ms_since(&t0), 390);
    resp_free(&r);
}

Test(fake_provider, fault_every_k_hits_only_every_kth_request)
{
    start((const char *const[]){ "--fault", "500", "--fault-every", "3", NULL });
    int expect[] = { 200, 200, 500, 200, 200, 500 };
    for (int i = 0; i < 6; i++) {
        resp r;
        call("POST", "/v1/embeddings", NULL, "{\"input\":\"x\"}", &r);
        cr_assert_eq(r.status, expect[i], "request %d", i + 1);
        resp_free(&r);
    }
}

/* ---- counters */

Test(fake_provider, stats_count_in_flight_and_reset)
{
    start((const char *const[]){ "--latency", "300", NULL });
    enum { N = 5 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = dial();
        send_req(fds[i], "POST", i % 2 ? "/v1/messages" : "/v1/chat/completions", i % 2 ? ANTH : NULL,
                 i % 2 ? MSG : CHAT);
    }
    for (int i = 0; i < N; i++) {
        resp r;
        read_resp(fds[i], &r, 5000);
        cr_assert_eq(r.status, 200);
        close(fds[i]);
        resp_free(&r);
    }
    resp r;
    call("GET", "/stats", NULL, NULL, &r);
    json_t *j = body_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "requests")), N);
    cr_assert_eq(json_integer_value(json_object_get(j, "chat")), 3);
    cr_assert_eq(json_integer_value(json_object_get(j, "messages")), 2);
    cr_assert_geq(json_integer_value(json_object_get(j, "max_in_flight")), 2);
    cr_assert_leq(json_integer_value(json_object_get(j, "max_in_flight")), N);
    cr_assert_eq(json_integer_value(json_object_get(j, "in_flight")), 0);
    json_decref(j);
    resp_free(&r);

    call("POST", "/reset", NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    call("GET", "/stats", NULL, NULL, &r);
    j = body_json(&r);
    cr_assert_eq(json_integer_value(json_object_get(j, "requests")), 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "chat")), 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_in_flight")), 0);
    json_decref(j);
    resp_free(&r);
}

/* ---- hostile requests */

static void raw(const char *data, size_t n, resp *r)
{
    int fd = dial();
    send_all(fd, data, n);
    read_resp(fd, r, 5000);
    close(fd);
}

Test(fake_provider, bad_requests_are_refused_and_the_server_survives)
{
    start(NULL);
    resp r;
    const char *bad = "GARBAGE\r\n\r\n";
    raw(bad, strlen(bad), &r);
    cr_assert_eq(r.status, 400);
    resp_free(&r);

    const char *chunked = "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    raw(chunked, strlen(chunked), &r);
    cr_assert(r.status == 411 || r.status == 400);
    resp_free(&r);

    const char *big = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 40000000\r\n\r\n";
    raw(big, strlen(big), &r);
    cr_assert_eq(r.status, 413);
    resp_free(&r);

    size_t n = 70 * 1024;
    char *huge = malloc(n + 64);
    cr_assert(huge);
    int k = snprintf(huge, 64, "GET /stats HTTP/1.1\r\nX-Pad: ");
    memset(huge + k, 'a', n - (size_t)k);
    raw(huge, n, &r);
    cr_assert_eq(r.status, 431);
    resp_free(&r);
    free(huge);

    call("POST", "/v1/chat/completions", NULL, "{not json", &r);
    cr_assert_eq(r.status, 400);
    resp_free(&r);
    call("GET", "/nowhere", NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    resp_free(&r);

    call("POST", "/v1/chat/completions", NULL, CHAT, &r);
    cr_assert_eq(r.status, 200, "still serving after bad requests");
    resp_free(&r);
    int st;
    cr_assert_eq(waitpid(srv.pid, &st, WNOHANG), 0, "server still running");
}

/* ---- the Batch APIs, driven with libcurl as the plugins drive them */

TestSuite(fake_batch, .fini = stop);

/* A plain truth value: jansson's json_is_* macros expand to expressions
 * the assertion macros cannot take as they are. */
static bool truth(bool b)
{
    return b;
}

typedef struct {
    int status;
    char *body, *head;
    size_t blen, hlen;
} cres;

static size_t cres_add(char **p, size_t *len, const char *d, size_t n)
{
    char *q = realloc(*p, *len + n + 1);
    cr_assert(q);
    memcpy(q + *len, d, n);
    *len += n;
    q[*len] = 0;
    *p = q;
    return n;
}

static size_t on_body(char *d, size_t sz, size_t n, void *ud)
{
    cres *r = ud;
    return cres_add(&r->body, &r->blen, d, sz * n);
}

static size_t on_head(char *d, size_t sz, size_t n, void *ud)
{
    cres *r = ud;
    return cres_add(&r->head, &r->hlen, d, sz * n);
}

static void cres_free(cres *r)
{
    free(r->body);
    free(r->head);
    memset(r, 0, sizeof *r);
}

static const char *const ANTH_H[] = { "x-api-key: k", "anthropic-version: 2023-06-01", NULL };

/* One request: PATH on the server (or a whole URL), BODY as JSON when set,
 * MIME as a form when set, HEADERS extra. */
static void creq(const char *method, const char *path, const char *const *headers, const char *body,
                 curl_mime *mime, cres *r)
{
    memset(r, 0, sizeof *r);
    CURL *e = curl_easy_init();
    cr_assert(e);
    char url[1024];
    if (!strncmp(path, "http", 4))
        snprintf(url, sizeof url, "%s", path);
    else
        snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    struct curl_slist *h = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    if (body) {
        h = curl_slist_append(h, "content-type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    if (mime)
        curl_easy_setopt(e, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_head);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(e);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    long st = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
    r->status = (int)st;
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
}

static json_t *cjson(const cres *r)
{
    json_t *j = json_loadb(r->body ? r->body : "", r->blen, 0, NULL);
    cr_assert(j, "not JSON (%d): %.300s", r->status, r->body ? r->body : "(none)");
    return j;
}

/* A request whose answer must be STATUS; its JSON (new). */
static json_t *cjreq(const char *method, const char *path, const char *const *headers, const char *body,
                     int status)
{
    cres r;
    creq(method, path, headers, body, NULL, &r);
    cr_assert_eq(r.status, status, "%s %s: %d %.300s", method, path, r.status, r.body ? r.body : "");
    json_t *j = cjson(&r);
    cres_free(&r);
    return j;
}

static const char *jstr(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k));
}

static json_int_t jint(json_t *j, const char *k)
{
    return json_integer_value(json_object_get(j, k));
}

/* The body of chat request I: one user turn that says which it is. */
static json_t *chat_body(int i)
{
    char text[64];
    snprintf(text, sizeof text, "batch item %d of the test", i);
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "model", "m", "messages", "role", "system", "content",
                     "be brief", "role", "user", "content", text);
}

/* An OpenAI input file of N lines for URL: chat bodies, or embeddings inputs. */
static char *jsonl(int n, const char *url)
{
    bool emb = !strcmp(url, "/v1/embeddings");
    size_t cap = 256 * (size_t)n + 1, len = 0;
    char *s = malloc(cap);
    cr_assert(s);
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        char id[32], in[32];
        snprintf(id, sizeof id, "c%05d", i);
        snprintf(in, sizeof in, "input %d", i);
        json_t *body = emb ? json_pack("{s:s, s:s}", "model", "e", "input", in) : chat_body(i);
        json_t *l = json_pack("{s:s, s:s, s:s, s:o}", "custom_id", id, "method", "POST", "url", url, "body", body);
        char *t = json_dumps(l, JSON_COMPACT);
        json_decref(l);
        size_t tl = strlen(t);
        if (len + tl + 2 > cap) {
            cap = (len + tl + 2) * 2;
            s = realloc(s, cap);
            cr_assert(s);
        }
        memcpy(s + len, t, tl);
        len += tl;
        s[len++] = '\n';
        s[len] = 0;
        free(t);
    }
    return s;
}

/* Uploads DATA as NAME with PURPOSE; the file's JSON (new). */
static json_t *upload(const char *name, const char *purpose, const char *data, int status)
{
    CURL *e = curl_easy_init();
    cr_assert(e);
    curl_mime *m = curl_mime_init(e);
    curl_mimepart *p = curl_mime_addpart(m);
    curl_mime_name(p, "purpose");
    curl_mime_data(p, purpose, CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(m);
    curl_mime_name(p, "file");
    curl_mime_data(p, data, strlen(data));
    if (name)
        curl_mime_filename(p, name);
    cres r;
    creq("POST", "/v1/files", NULL, NULL, m, &r);
    curl_mime_free(m);
    curl_easy_cleanup(e);
    cr_assert_eq(r.status, status, "upload: %d %.300s", r.status, r.body ? r.body : "");
    json_t *j = cjson(&r);
    cres_free(&r);
    return j;
}

/* Creates an OpenAI batch of FILE_ID for URL, with metadata loom_batch NAME. */
static json_t *create_openai(const char *file_id, const char *url, const char *name, int status)
{
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s}}", "input_file_id", file_id, "endpoint", url,
                            "completion_window", "24h", "metadata", "loom_batch", name);
    char *t = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *j = cjreq("POST", "/v1/batches", NULL, t, status);
    free(t);
    return j;
}

/* Retrieves batch ID (OpenAI, or Anthropic when ANTH) until its status is
 * WANT; that answer (new). The deadline is the batch's delay and a margin
 * for a loaded machine: a batch that never ends fails here. */
static json_t *wait_status(bool anth, const char *id, const char *want, long delay_ms)
{
    char path[256];
    snprintf(path, sizeof path, anth ? "/v1/messages/batches/%s" : "/v1/batches/%s", id);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        json_t *j = cjreq("GET", path, anth ? ANTH_H : NULL, NULL, 200);
        const char *st = jstr(j, anth ? "processing_status" : "status");
        if (st && !strcmp(st, want))
            return j;
        cr_assert(ms_since(&t0) < delay_ms + 20000, "batch %s is still %s, not %s", id, st, want);
        json_decref(j);
        struct timespec d = { 0, 10 * 1000000 };
        nanosleep(&d, NULL);
    }
}

/* The JSONL text BODY as an array of its lines (new). */
static json_t *lines_of(const char *body)
{
    json_t *a = json_array();
    for (const char *p = body; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n) {
            json_t *l = json_loadb(p, n, 0, NULL);
            cr_assert(l, "a result line is not JSON: %.*s", (int)n, p);
            json_array_append_new(a, l);
        }
        p = nl ? nl + 1 : NULL;
    }
    return a;
}

/* The contents of file ID as lines (new); null ID: no lines. */
static json_t *file_lines(json_t *id)
{
    if (json_is_null(id))
        return json_array();
    char path[128];
    snprintf(path, sizeof path, "/v1/files/%s/content", json_string_value(id));
    cres r;
    creq("GET", path, NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    json_t *a = lines_of(r.body);
    cres_free(&r);
    return a;
}

static long stat_of(const char *name)
{
    return fake_server_stat(&srv, name);
}

Test(fake_batch, openai_chat_batch_answers_each_line_as_the_direct_endpoint)
{
    start(NULL);
    char *data = jsonl(3, "/v1/chat/completions");
    json_t *f = upload("loom-abc.jsonl", "batch", data, 200);
    free(data);
    cr_assert_str_eq(jstr(f, "object"), "file");
    cr_assert_str_eq(jstr(f, "filename"), "loom-abc.jsonl");
    cr_assert_str_eq(jstr(f, "purpose"), "batch");
    cr_assert_gt(jint(f, "bytes"), 0);
    cr_assert_gt(jint(f, "created_at"), 0);

    json_t *files = cjreq("GET", "/v1/files?purpose=batch", NULL, NULL, 200);
    json_t *f0 = json_array_get(json_object_get(files, "data"), 0);
    cr_assert_eq(json_array_size(json_object_get(files, "data")), 1);
    cr_assert_str_eq(jstr(f0, "id"), jstr(f, "id"));
    cr_assert_str_eq(jstr(f0, "filename"), "loom-abc.jsonl");
    json_decref(files);
    json_t *one = cjreq("GET", "/v1/files/", NULL, NULL, 404);
    json_decref(one);
    char path[128];
    snprintf(path, sizeof path, "/v1/files/%s", jstr(f, "id"));
    one = cjreq("GET", path, NULL, NULL, 200);
    cr_assert_eq(jint(one, "bytes"), jint(f, "bytes"));
    json_decref(one);

    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-abc", 200);
    cr_assert_str_eq(jstr(b, "object"), "batch");
    cr_assert_str_eq(jstr(b, "status"), "in_progress");
    cr_assert_str_eq(jstr(b, "completion_window"), "24h");
    cr_assert_str_eq(jstr(b, "input_file_id"), jstr(f, "id"));
    cr_assert_str_eq(jstr(json_object_get(b, "metadata"), "loom_batch"), "loom-abc");
    cr_assert_eq(jint(json_object_get(b, "request_counts"), "total"), 3);

    json_t *list = cjreq("GET", "/v1/batches?limit=10", NULL, NULL, 200);
    json_t *l0 = json_array_get(json_object_get(list, "data"), 0);
    cr_assert_str_eq(jstr(l0, "id"), jstr(b, "id"));
    cr_assert_str_eq(jstr(json_object_get(l0, "metadata"), "loom_batch"), "loom-abc");
    json_decref(list);

    json_t *done = wait_status(false, jstr(b, "id"), "completed", 200);
    json_t *rc = json_object_get(done, "request_counts");
    cr_assert_eq(jint(rc, "completed"), 3);
    cr_assert_eq(jint(rc, "failed"), 0);
    cr_assert(truth(json_is_null(json_object_get(done, "error_file_id"))));
    cr_assert(truth(json_is_integer(json_object_get(done, "completed_at"))));
    json_t *out = file_lines(json_object_get(done, "output_file_id"));
    cr_assert_eq(json_array_size(out), 3);
    for (int i = 0; i < 3; i++) {
        json_t *l = json_array_get(out, (size_t)i);
        char id[32];
        snprintf(id, sizeof id, "c%05d", i);
        cr_assert_str_eq(jstr(l, "custom_id"), id);
        cr_assert(truth(json_is_null(json_object_get(l, "error"))));
        json_t *lr = json_object_get(l, "response");
        cr_assert_eq(jint(lr, "status_code"), 200);
        json_t *got = json_object_get(lr, "body");
        json_t *body = chat_body(i);
        char *t = json_dumps(body, JSON_COMPACT);
        json_t *direct = cjreq("POST", "/v1/chat/completions", NULL, t, 200);
        free(t);
        json_decref(body);
        json_t *gm = json_object_get(json_array_get(json_object_get(got, "choices"), 0), "message");
        json_t *dm = json_object_get(json_array_get(json_object_get(direct, "choices"), 0), "message");
        cr_assert(json_equal(gm, dm), "line %d: the direct endpoint's message", i);
        cr_assert(json_equal(json_object_get(got, "usage"), json_object_get(direct, "usage")),
                  "line %d: the direct endpoint's usage", i);
        json_decref(direct);
    }
    json_decref(out);

    /* the lines were no direct calls; the test's own three were */
    cr_assert_eq(stat_of("chat"), 3);
    cr_assert_eq(stat_of("batch_uploads"), 1);
    cr_assert_eq(stat_of("batch_creates"), 1);
    cr_assert_eq(stat_of("batch_lines"), 3);
    cr_assert_geq(stat_of("batch_polls"), 1);
    cr_assert_eq(stat_of("batch_results"), 1);
    cr_assert_eq(stat_of("batch_lists"), 2);
    cr_assert_eq(stat_of("batch_line_failures"), 0);
    json_decref(done);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_embeddings_batch_matches_the_direct_vectors)
{
    start((const char *const[]){ "--batch-delay", "0", NULL });
    char *data = jsonl(4, "/v1/embeddings");
    json_t *f = upload("e.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/embeddings", "loom-e", 200);
    json_t *done = wait_status(false, jstr(b, "id"), "completed", 0);
    cr_assert_str_eq(jstr(done, "endpoint"), "/v1/embeddings");
    json_t *out = file_lines(json_object_get(done, "output_file_id"));
    cr_assert_eq(json_array_size(out), 4);
    json_t *direct = cjreq("POST", "/v1/embeddings", NULL, "{\"model\":\"e\",\"input\":\"input 2\"}", 200);
    json_t *got = json_object_get(json_object_get(json_array_get(out, 2), "response"), "body");
    cr_assert(json_equal(json_object_get(got, "data"), json_object_get(direct, "data")));
    cr_assert(json_equal(json_object_get(got, "usage"), json_object_get(direct, "usage")));
    cr_assert_eq(stat_of("embeddings"), 1);
    json_decref(direct);
    json_decref(out);
    json_decref(done);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_completed_count_grows_with_time_until_the_end)
{
    const long delay = 1500, n = 300;
    start((const char *const[]){ "--batch-delay", "1500", NULL });
    char *data = jsonl((int)n, "/v1/chat/completions");
    json_t *f = upload("g.jsonl", "batch", data, 200);
    free(data);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-g", 200);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    char path[128];
    snprintf(path, sizeof path, "/v1/batches/%s", jstr(b, "id"));
    /* the server made the batch between t0 and t1 and read its clock for
     * each answer between our own readings around the request */
    json_int_t last = -1;
    for (;;) {
        int64_t lo_us = ns_since(&t1) / 1000; /* at most the server's time since creation */
        json_t *j = cjreq("GET", path, NULL, NULL, 200);
        int64_t hi_us = (ns_since(&t0) + 999) / 1000; /* at least the server's */
        json_int_t c = jint(json_object_get(j, "request_counts"), "completed");
        bool running = !strcmp(jstr(j, "status"), "in_progress");
        json_decref(j);
        if (!running) {
            cr_assert_geq(hi_us, delay * 1000, "ended before its delay");
            break;
        }
        int64_t lo = lo_us * n / (delay * 1000), hi = hi_us * n / (delay * 1000);
        cr_assert(c >= (lo < n ? lo : n) && c <= (hi < n ? hi : n),
                  "completed %lld outside [%lld, %lld] at %lld-%lld us", (long long)c, (long long)lo, (long long)hi,
                  (long long)lo_us, (long long)hi_us);
        cr_assert_geq(c, last, "the count never goes back");
        last = c;
        cr_assert_lt(lo_us, (delay + 20000) * 1000, "never ended");
        struct timespec d = { 0, 50 * 1000000 };
        nanosleep(&d, NULL);
    }
    json_decref(b);
    json_decref(f);
}

static void expect_failed_batch(const char *data, const char *code, json_int_t line)
{
    json_t *f = upload("bad.jsonl", "batch", data, 200);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-bad", 200);
    cr_assert_str_eq(jstr(b, "status"), "failed", "for %s", code);
    cr_assert(truth(json_is_integer(json_object_get(b, "failed_at"))));
    json_t *e0 = json_array_get(json_object_get(json_object_get(b, "errors"), "data"), 0);
    cr_assert_str_eq(jstr(e0, "code"), code);
    if (line)
        cr_assert_eq(jint(e0, "line"), line, "for %s", code);
    cr_assert_eq(jint(json_object_get(b, "request_counts"), "total"), 0);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_bad_input_files_make_failed_batches)
{
    start(NULL);
    const char *good = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","
                       "\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}\n";
    char buf[2048];
    snprintf(buf, sizeof buf, "%s{not json\n", good);
    expect_failed_batch(buf, "invalid_json_line", 2);
    snprintf(buf, sizeof buf, "%s%s", good, good);
    expect_failed_batch(buf, "duplicate_custom_id", 0);
    snprintf(buf, sizeof buf, "%s{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}\n",
             good);
    expect_failed_batch(buf, "invalid_url", 2);
    expect_failed_batch("{\"custom_id\":\"b\",\"method\":\"GET\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n",
                        "invalid_method", 1);
    expect_failed_batch("\n\n", "empty_file", 0);
    cr_assert_eq(stat_of("batch_creates"), 5);
    cr_assert_eq(stat_of("batch_lines"), 0);
}

Test(fake_batch, openai_refuses_bad_creates_and_uploads)
{
    start(NULL);
    json_t *j = upload(NULL, "batch", "x", 400);
    json_decref(j);
    j = upload("x.jsonl", "", "x", 400);
    json_decref(j);
    char *data = jsonl(1, "/v1/chat/completions");
    json_t *f = upload("ok.jsonl", "batch", data, 200);
    json_t *other = upload("o.jsonl", "fine-tune", data, 200);
    free(data);
    const char *fid = jstr(f, "id");
    char body[512];
    const char *bad[] = {
        "{\"input_file_id\":\"%s\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"1h\"}",
        "{\"input_file_id\":\"%s\",\"endpoint\":\"/v1/completions\",\"completion_window\":\"24h\"}",
        "{\"input_file_id\":\"%s\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\","
        "\"metadata\":{\"k\":1}}",
        "{\"input_file_id\":\"nope%s\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(body, sizeof body, bad[i], fid);
        j = cjreq("POST", "/v1/batches", NULL, body, 400);
        cr_assert_str_eq(jstr(json_object_get(j, "error"), "type"), "invalid_request_error", "case %zu", i);
        json_decref(j);
    }
    json_decref(create_openai(jstr(other, "id"), "/v1/chat/completions", "x", 400));
    j = cjreq("GET", "/v1/batches/batch_none", NULL, NULL, 404);
    json_decref(j);
    j = cjreq("POST", "/v1/batches/batch_none/cancel", NULL, "{}", 404);
    json_decref(j);
    j = cjreq("GET", "/v1/files/file-none/content", NULL, NULL, 404);
    json_decref(j);
    cr_assert_eq(stat_of("batch_creates"), 0);
    cr_assert_eq(stat_of("batch_uploads"), 2);
    json_decref(f);
    json_decref(other);
}

Test(fake_batch, openai_lists_page_newest_first)
{
    start(NULL);
    char *data = jsonl(1, "/v1/chat/completions");
    char ids[3][64];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d.jsonl", i);
        json_t *f = upload(name, "batch", data, 200);
        json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", name, 200);
        snprintf(ids[i], sizeof ids[i], "%s", jstr(b, "id"));
        json_decref(b);
        json_decref(f);
    }
    json_decref(upload("tune.jsonl", "fine-tune", data, 200));
    free(data);
    json_t *l = cjreq("GET", "/v1/batches?limit=2", NULL, NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(l, "data")), 2);
    cr_assert_str_eq(jstr(l, "first_id"), ids[2]);
    cr_assert_str_eq(jstr(l, "last_id"), ids[1]);
    cr_assert(truth(json_is_true(json_object_get(l, "has_more"))));
    char path[128];
    snprintf(path, sizeof path, "/v1/batches?limit=2&after=%s", jstr(l, "last_id"));
    json_decref(l);
    l = cjreq("GET", path, NULL, NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(l, "data")), 1);
    cr_assert_str_eq(jstr(l, "first_id"), ids[0]);
    cr_assert(truth(json_is_false(json_object_get(l, "has_more"))));
    json_decref(l);
    l = cjreq("GET", "/v1/files?purpose=batch", NULL, NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(l, "data")), 3);
    cr_assert_str_eq(jstr(json_array_get(json_object_get(l, "data"), 0), "filename"), "f2.jsonl");
    json_decref(l);
    l = cjreq("GET", "/v1/files", NULL, NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(l, "data")), 4);
    snprintf(path, sizeof path, "/v1/files/%s", jstr(json_array_get(json_object_get(l, "data"), 0), "id"));
    json_decref(l);
    l = cjreq("DELETE", path, NULL, NULL, 200);
    cr_assert(truth(json_is_true(json_object_get(l, "deleted"))));
    json_decref(l);
    l = cjreq("GET", path, NULL, NULL, 404);
    json_decref(l);
    cr_assert_eq(stat_of("batch_lists"), 4);
}

Test(fake_batch, openai_cancel_stops_the_lines_not_yet_done)
{
    /* a line done every 100 ms: some are soon done, the batch is far from its end */
    start((const char *const[]){ "--batch-delay", "20000", NULL });
    char *data = jsonl(200, "/v1/chat/completions");
    json_t *f = upload("c.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-c", 200);
    char path[128];
    snprintf(path, sizeof path, "/v1/batches/%s", jstr(b, "id"));
    /* some lines are done, not all */
    json_t *j;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        j = cjreq("GET", path, NULL, NULL, 200);
        if (jint(json_object_get(j, "request_counts"), "completed") > 0)
            break;
        cr_assert_lt(ms_since(&t0), 20000);
        json_decref(j);
        struct timespec d = { 0, 10 * 1000000 };
        nanosleep(&d, NULL);
    }
    cr_assert_str_eq(jstr(j, "status"), "in_progress");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/batches/%s/cancel", jstr(b, "id"));
    json_t *c = cjreq("POST", path, NULL, "{}", 200);
    cr_assert_str_eq(jstr(c, "status"), "cancelling");
    cr_assert(truth(json_is_integer(json_object_get(c, "cancelling_at"))));
    json_int_t done = jint(json_object_get(c, "request_counts"), "completed");
    cr_assert_gt(done, 0);
    cr_assert_lt(done, 200);
    json_t *end = wait_status(false, jstr(b, "id"), "cancelled", 0);
    cr_assert(truth(json_is_integer(json_object_get(end, "cancelled_at"))));
    json_t *out = file_lines(json_object_get(end, "output_file_id"));
    cr_assert_eq((json_int_t)json_array_size(out), done, "the lines done at the cancel, no more");
    json_t *errs = file_lines(json_object_get(end, "error_file_id"));
    cr_assert_eq(json_array_size(errs), 0);
    /* cancelling again is harmless */
    json_t *again = cjreq("POST", path, NULL, "{}", 200);
    cr_assert_str_eq(jstr(again, "status"), "cancelled");
    cr_assert_eq(stat_of("batch_cancels"), 2);
    json_decref(again);
    json_decref(errs);
    json_decref(out);
    json_decref(end);
    json_decref(c);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_cancel_of_a_completed_batch_is_refused)
{
    start((const char *const[]){ "--batch-delay", "0", NULL });
    char *data = jsonl(2, "/v1/chat/completions");
    json_t *f = upload("d.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-d", 200);
    json_t *end = wait_status(false, jstr(b, "id"), "completed", 0);
    char path[128];
    snprintf(path, sizeof path, "/v1/batches/%s/cancel", jstr(b, "id"));
    json_t *j = cjreq("POST", path, NULL, "{}", 400);
    cr_assert_str_eq(jstr(json_object_get(j, "error"), "type"), "invalid_request_error");
    cr_assert_eq(stat_of("batch_cancels"), 0);
    json_decref(j);
    json_decref(end);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_fail_every_puts_server_errors_in_the_error_file)
{
    start((const char *const[]){ "--batch-delay", "0", "--batch-fail-every", "3", NULL });
    char *data = jsonl(7, "/v1/chat/completions");
    json_t *f = upload("f.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-f", 200);
    json_t *end = wait_status(false, jstr(b, "id"), "completed", 0);
    json_t *rc = json_object_get(end, "request_counts");
    cr_assert_eq(jint(rc, "completed"), 5);
    cr_assert_eq(jint(rc, "failed"), 2);
    json_t *out = file_lines(json_object_get(end, "output_file_id"));
    json_t *errs = file_lines(json_object_get(end, "error_file_id"));
    cr_assert_eq(json_array_size(out), 5);
    cr_assert_eq(json_array_size(errs), 2);
    const char *want[] = { "c00002", "c00005" };
    for (size_t i = 0; i < 2; i++) {
        json_t *l = json_array_get(errs, i);
        cr_assert_str_eq(jstr(l, "custom_id"), want[i]);
        json_t *lr = json_object_get(l, "response");
        cr_assert_eq(jint(lr, "status_code"), 500);
        cr_assert_str_eq(jstr(json_object_get(json_object_get(lr, "body"), "error"), "type"), "server_error");
    }
    cr_assert_eq(stat_of("batch_line_failures"), 2);
    json_decref(out);
    json_decref(errs);
    json_decref(end);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, openai_expire_every_expires_the_second_half)
{
    start((const char *const[]){ "--batch-delay", "0", "--batch-expire-every", "2", NULL });
    char *data = jsonl(5, "/v1/chat/completions");
    json_t *f = upload("x.jsonl", "batch", data, 200);
    free(data);
    json_t *b1 = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-1", 200);
    json_t *b2 = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-2", 200);
    json_t *e1 = wait_status(false, jstr(b1, "id"), "completed", 0);
    json_t *e2 = wait_status(false, jstr(b2, "id"), "expired", 0);
    cr_assert(truth(json_is_integer(json_object_get(e2, "expired_at"))));
    json_t *out = file_lines(json_object_get(e2, "output_file_id"));
    json_t *errs = file_lines(json_object_get(e2, "error_file_id"));
    cr_assert_eq(json_array_size(out), 2);
    cr_assert_eq(json_array_size(errs), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *l = json_array_get(errs, i);
        char id[16];
        snprintf(id, sizeof id, "c%05zu", i + 2);
        cr_assert_str_eq(jstr(l, "custom_id"), id);
        cr_assert(truth(json_is_null(json_object_get(l, "response"))));
        cr_assert_str_eq(jstr(json_object_get(l, "error"), "code"), "batch_expired");
    }
    cr_assert_eq(stat_of("batch_expired"), 1);
    json_decref(out);
    json_decref(errs);
    json_decref(e1);
    json_decref(e2);
    json_decref(b1);
    json_decref(b2);
    json_decref(f);
}

/* ---- Anthropic */

static char *anth_requests(int n, int bad_at)
{
    json_t *reqs = json_array();
    for (int i = 0; i < n; i++) {
        char id[32], text[64];
        snprintf(id, sizeof id, "m-%04d", i);
        snprintf(text, sizeof text, "message item %d", i);
        json_t *params = json_pack("{s:s, s:i, s:[{s:s, s:s}]}", "model", "claude", "max_tokens", 20, "messages",
                                   "role", i == bad_at ? "assistant" : "user", "content", text);
        json_array_append_new(reqs, json_pack("{s:s, s:o}", "custom_id", id, "params", params));
    }
    json_t *o = json_pack("{s:o}", "requests", reqs);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

/* GET the results of an ended batch J through its results_url: lines (new). */
static json_t *anth_results(json_t *j)
{
    const char *url = jstr(j, "results_url");
    cr_assert(url, "an ended batch has a results_url");
    char want[256];
    snprintf(want, sizeof want, "http://127.0.0.1:%d/v1/messages/batches/%s/results", srv.port, jstr(j, "id"));
    cr_assert_str_eq(url, want);
    cres r;
    creq("GET", url, ANTH_H, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    json_t *a = lines_of(r.body);
    cres_free(&r);
    return a;
}

Test(fake_batch, anthropic_batch_answers_each_request_as_messages_does)
{
    start(NULL);
    char *body = anth_requests(3, 1);
    json_t *j = cjreq("POST", "/v1/messages/batches", NULL, body, 401);
    cr_assert_str_eq(jstr(json_object_get(j, "error"), "type"), "authentication_error");
    json_decref(j);
    const char *only_key[] = { "x-api-key: k", NULL };
    json_decref(cjreq("POST", "/v1/messages/batches", only_key, body, 401));
    json_t *b = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    free(body);
    cr_assert_str_eq(jstr(b, "type"), "message_batch");
    cr_assert_str_eq(jstr(b, "processing_status"), "in_progress");
    cr_assert_eq(jint(json_object_get(b, "request_counts"), "processing"), 3);
    cr_assert(truth(json_is_null(json_object_get(b, "results_url"))));
    char path[128];
    snprintf(path, sizeof path, "/v1/messages/batches/%s/results", jstr(b, "id"));
    json_decref(cjreq("GET", path, ANTH_H, NULL, 400));
    json_t *list = cjreq("GET", "/v1/messages/batches", ANTH_H, NULL, 200);
    cr_assert_str_eq(jstr(json_array_get(json_object_get(list, "data"), 0), "id"), jstr(b, "id"));
    json_decref(list);

    json_t *end = wait_status(true, jstr(b, "id"), "ended", 200);
    json_t *rc = json_object_get(end, "request_counts");
    cr_assert_eq(jint(rc, "processing"), 0);
    cr_assert_eq(jint(rc, "succeeded"), 2);
    cr_assert_eq(jint(rc, "errored"), 1);
    cr_assert(truth(json_is_string(json_object_get(end, "ended_at"))));
    json_t *res = anth_results(end);
    cr_assert_eq(json_array_size(res), 3);
    for (int i = 0; i < 3; i++) {
        json_t *l = json_array_get(res, (size_t)i), *r = json_object_get(l, "result");
        char id[16];
        snprintf(id, sizeof id, "m-%04d", i);
        cr_assert_str_eq(jstr(l, "custom_id"), id);
        if (i == 1) {
            /* the direct endpoint refuses a conversation that ends with the assistant */
            cr_assert_str_eq(jstr(r, "type"), "errored");
            json_t *e = json_object_get(json_object_get(r, "error"), "error");
            cr_assert_str_eq(jstr(e, "type"), "invalid_request_error");
            continue;
        }
        cr_assert_str_eq(jstr(r, "type"), "succeeded");
        char direct_body[256];
        snprintf(direct_body, sizeof direct_body,
                 "{\"model\":\"claude\",\"max_tokens\":20,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"message item %d\"}]}", i);
        json_t *d = cjreq("POST", "/v1/messages", ANTH_H, direct_body, 200);
        json_t *m = json_object_get(r, "message");
        cr_assert(json_equal(json_object_get(m, "content"), json_object_get(d, "content")), "request %d", i);
        cr_assert(json_equal(json_object_get(m, "usage"), json_object_get(d, "usage")), "request %d", i);
        cr_assert_str_eq(jstr(m, "stop_reason"), jstr(d, "stop_reason"));
        json_decref(d);
    }
    cr_assert_eq(stat_of("messages"), 2);
    cr_assert_eq(stat_of("batch_creates"), 1);
    cr_assert_eq(stat_of("batch_lines"), 3);
    cr_assert_eq(stat_of("batch_results"), 1);
    cr_assert_eq(stat_of("batch_lists"), 1);
    cr_assert_eq(stat_of("batch_line_failures"), 0, "a refused request is no injected failure");
    json_decref(res);
    json_decref(end);
    json_decref(b);
}

Test(fake_batch, anthropic_results_url_follows_a_tls_proxy)
{
    start((const char *const[]){ "--batch-delay", "0", NULL });
    char *body = anth_requests(1, -1);
    json_t *b = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    free(body);
    char path[128];
    snprintf(path, sizeof path, "/v1/messages/batches/%s", jstr(b, "id"));
    /* a proxy appends its own X-Forwarded-Proto to any the client sent */
    const char *proto[] = { "X-Forwarded-Proto: https", "X-Forwarded-Proto: http, https",
                            "Forwarded: for=1.2.3.4;proto=https", "X-Forwarded-Proto: https, http" };
    const char *scheme[] = { "https", "https", "https", "http" };
    for (size_t i = 0; i < 4; i++) {
        const char *h[] = { "x-api-key: k", "anthropic-version: 2023-06-01", "Host: api.example:8443", proto[i],
                            NULL };
        json_t *j = cjreq("GET", path, h, NULL, 200);
        char want[256];
        snprintf(want, sizeof want, "%s://api.example:8443/v1/messages/batches/%s/results", scheme[i],
                 jstr(b, "id"));
        cr_assert_str_eq(jstr(j, "results_url"), want, "with %s", proto[i]);
        json_decref(j);
    }
    json_decref(b);
}

Test(fake_batch, anthropic_refuses_bad_requests_at_creation)
{
    start(NULL);
    const char *bad[] = {
        "{\"requests\":[]}",
        "{\"requests\":[{\"custom_id\":\"has space\",\"params\":{}}]}",
        "{\"requests\":[{\"custom_id\":\"\",\"params\":{}}]}",
        "{\"requests\":[{\"custom_id\":\"a\",\"params\":{}},{\"custom_id\":\"a\",\"params\":{}}]}",
        "{\"requests\":[{\"custom_id\":\"a\",\"params\":3}]}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = cjreq("POST", "/v1/messages/batches", ANTH_H, bad[i], 400);
        cr_assert_str_eq(jstr(j, "type"), "error");
        cr_assert_str_eq(jstr(json_object_get(j, "error"), "type"), "invalid_request_error", "case %zu", i);
        json_decref(j);
    }
    json_decref(cjreq("GET", "/v1/messages/batches/msgbatch_none", ANTH_H, NULL, 404));
    cr_assert_eq(stat_of("batch_creates"), 0);
}

Test(fake_batch, anthropic_failures_expiry_and_cancel)
{
    start((const char *const[]){ "--batch-delay", "0", "--batch-fail-every", "2", "--batch-expire-every", "2",
                                 NULL });
    char *body = anth_requests(4, -1);
    json_t *b1 = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    json_t *b2 = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    free(body);
    json_t *e1 = wait_status(true, jstr(b1, "id"), "ended", 0);
    json_t *e2 = wait_status(true, jstr(b2, "id"), "ended", 0);
    json_t *r1 = anth_results(e1), *r2 = anth_results(e2);
    const char *want1[] = { "succeeded", "errored", "succeeded", "errored" };
    const char *want2[] = { "succeeded", "errored", "expired", "expired" };
    for (size_t i = 0; i < 4; i++) {
        json_t *a = json_object_get(json_array_get(r1, i), "result");
        json_t *c = json_object_get(json_array_get(r2, i), "result");
        cr_assert_str_eq(jstr(a, "type"), want1[i], "first batch, request %zu", i);
        cr_assert_str_eq(jstr(c, "type"), want2[i], "second batch, request %zu", i);
        if (!strcmp(want1[i], "errored"))
            cr_assert_str_eq(jstr(json_object_get(json_object_get(a, "error"), "error"), "type"), "api_error");
    }
    json_t *rc = json_object_get(e2, "request_counts");
    cr_assert_eq(jint(rc, "succeeded"), 1);
    cr_assert_eq(jint(rc, "errored"), 1);
    cr_assert_eq(jint(rc, "expired"), 2);
    cr_assert_eq(stat_of("batch_line_failures"), 3);
    cr_assert_eq(stat_of("batch_expired"), 1);
    char path[128];
    snprintf(path, sizeof path, "/v1/messages/batches/%s/cancel", jstr(b1, "id"));
    json_decref(cjreq("POST", path, ANTH_H, "{}", 400));
    snprintf(path, sizeof path, "/v1/messages/batches/%s", jstr(b1, "id"));
    json_t *d = cjreq("DELETE", path, ANTH_H, NULL, 200);
    cr_assert_str_eq(jstr(d, "type"), "message_batch_deleted");
    json_decref(d);
    json_decref(cjreq("GET", path, ANTH_H, NULL, 404));
    json_decref(r1);
    json_decref(r2);
    json_decref(e1);
    json_decref(e2);
    json_decref(b1);
    json_decref(b2);
}

Test(fake_batch, anthropic_cancel_cancels_the_requests_not_yet_done)
{
    start((const char *const[]){ "--batch-delay", "600000", NULL });
    char *body = anth_requests(5, -1);
    json_t *b = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    free(body);
    char path[128];
    snprintf(path, sizeof path, "/v1/messages/batches/%s/cancel", jstr(b, "id"));
    json_t *c = cjreq("POST", path, ANTH_H, "{}", 200);
    cr_assert_str_eq(jstr(c, "processing_status"), "canceling");
    cr_assert(truth(json_is_string(json_object_get(c, "cancel_initiated_at"))));
    json_t *end = wait_status(true, jstr(b, "id"), "ended", 0);
    cr_assert_eq(jint(json_object_get(end, "request_counts"), "canceled"), 5);
    json_t *res = anth_results(end);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(jstr(json_object_get(json_array_get(res, i), "result"), "type"), "canceled");
    cr_assert_eq(stat_of("batch_cancels"), 1);
    json_decref(res);
    json_decref(end);
    json_decref(c);
    json_decref(b);
}

/* ---- faults, the log, reset, size */

static void expect_fault(const char *code, bool anth, const char *type)
{
    char *data = jsonl(1, "/v1/chat/completions");
    char path[64] = "/v1/files";
    for (int i = 0; i < 4; i++) {
        cres r;
        if (anth) {
            creq("GET", "/v1/messages/batches", ANTH_H, NULL, NULL, &r);
        } else {
            curl_mime *m = curl_mime_init(NULL);
            curl_mimepart *p = curl_mime_addpart(m);
            curl_mime_name(p, "purpose");
            curl_mime_data(p, "batch", CURL_ZERO_TERMINATED);
            p = curl_mime_addpart(m);
            curl_mime_name(p, "file");
            curl_mime_data(p, data, CURL_ZERO_TERMINATED);
            curl_mime_filename(p, "u.jsonl");
            creq("POST", path, NULL, NULL, m, &r);
            curl_mime_free(m);
        }
        /* every second request is the fault */
        if (i % 2 == 0) {
            cr_assert_eq(r.status, 200, "request %d", i);
        } else {
            cr_assert_eq(r.status, atoi(code), "request %d", i);
            json_t *j = cjson(&r);
            json_t *e = json_object_get(j, "error");
            cr_assert_str_eq(jstr(e, "type"), type);
            if (anth)
                cr_assert_str_eq(jstr(j, "type"), "error");
            if (atoi(code) == 429) {
                cr_assert(strcasestr(r.head, "\r\nretry-after-ms: 50\r\n"), "%s", r.head);
                cr_assert(strcasestr(r.head, "\r\nretry-after: 1\r\n"), "%s", r.head);
            }
            json_decref(j);
        }
        cres_free(&r);
    }
    free(data);
    cr_assert_eq(stat_of("batch_faults"), 2);
    cr_assert_eq(stat_of(anth ? "batch_lists" : "batch_uploads"), 2, "a faulted request did nothing");
}

Test(fake_batch, fault_429_in_each_api_shape)
{
    start((const char *const[]){ "--batch-fault", "429", "--batch-fault-every", "2", NULL });
    expect_fault("429", false, "requests");
    json_decref(fake_server_stats(&srv, 1));
    expect_fault("429", true, "rate_limit_error");
}

Test(fake_batch, fault_500_and_503)
{
    start((const char *const[]){ "--batch-fault", "500", "--batch-fault-every", "2", NULL });
    expect_fault("500", false, "server_error");
    json_decref(fake_server_stats(&srv, 1));
    expect_fault("500", true, "api_error");
    stop();
    start((const char *const[]){ "--batch-fault", "503", "--batch-fault-every", "2", NULL });
    expect_fault("503", false, "service_unavailable_error");
}

Test(fake_batch, bad_batch_flags_are_refused)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    cr_assert(bd);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fake/fake_provider", bd);
    const char *bad[][2] = { { "--batch-fault", "404" }, { "--batch-delay", "-1" }, { "--batch-fail-every", "x" } };
    for (size_t i = 0; i < 3; i++) {
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);
            dup2(nul, 1);
            dup2(nul, 2);
            execl(path, path, bad[i][0], bad[i][1], "--max-seconds", "5", (char *)NULL);
            _exit(127);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s %s: status %d", bad[i][0], bad[i][1], st);
    }
}

Test(fake_batch, the_log_has_every_batch_request_and_reset_drops_everything)
{
    char log[] = "/tmp/fake_batch_log_XXXXXX";
    int lfd = mkstemp(log);
    cr_assert(lfd >= 0);
    close(lfd);
    start((const char *const[]){ "--log", log, "--batch-delay", "0", "--batch-fault", "500", "--batch-fault-every",
                                 "3", NULL });
    char *data = jsonl(2, "/v1/chat/completions");
    json_t *f = upload("l.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-l", 200);
    char path[128];
    snprintf(path, sizeof path, "/v1/batches/%s", jstr(b, "id"));
    cres r;
    creq("GET", path, NULL, NULL, NULL, &r); /* the third: a fault */
    cr_assert_eq(r.status, 500);
    cres_free(&r);
    json_t *got = read_log(log);
    cr_assert_eq(json_array_size(got), 3);
    const char *paths[] = { "/v1/files", "/v1/batches", path };
    int statuses[] = { 200, 200, 500 };
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(got, i);
        cr_assert_str_eq(jstr(e, "path"), paths[i]);
        cr_assert_eq(jint(e, "status"), statuses[i]);
    }
    cr_assert_str_eq(jstr(json_array_get(got, 2), "fault"), "batch_fault");
    json_decref(got);
    unlink(log);

    json_t *s = fake_server_stats(&srv, 1);
    json_decref(s);
    const char *zero[] = { "batch_uploads", "batch_creates", "batch_lines", "batch_polls", "batch_results",
                           "batch_cancels", "batch_lists", "batch_line_failures", "batch_expired", "batch_faults" };
    for (size_t i = 0; i < sizeof zero / sizeof *zero; i++)
        cr_assert_eq(stat_of(zero[i]), 0, "%s after /reset", zero[i]);
    /* the fault sequence restarted too: the next two requests are answered */
    json_decref(cjreq("GET", path, NULL, NULL, 404));
    json_t *l = cjreq("GET", "/v1/files", NULL, NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(l, "data")), 0);
    json_decref(l);
    json_decref(b);
    json_decref(f);
}

Test(fake_batch, a_large_body_gets_100_continue_before_it_is_sent)
{
    start(NULL);
    int fd = dial();
    const char *head = "POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n"
                       "anthropic-version: 2023-06-01\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    send_all(fd, head, strlen(head));
    char b[64] = { 0 };
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    cr_assert_eq(poll(&pf, 1, 5000), 1, "no interim answer");
    ssize_t n = recv(fd, b, sizeof b - 1, 0);
    cr_assert_gt(n, 0);
    cr_assert(!strncmp(b, "HTTP/1.1 100 Continue\r\n\r\n", 25), "got %s", b);
    send_all(fd, "{}", 2);
    resp r;
    read_resp(fd, &r, 5000);
    cr_assert_eq(r.status, 400, "the body came and was read");
    resp_free(&r);
    close(fd);
}

Test(fake_batch, ten_thousand_lines_through_each_api)
{
    start((const char *const[]){ "--batch-delay", "0", NULL });
    const int n = 10000;
    char *data = jsonl(n, "/v1/chat/completions");
    cr_assert_gt(strlen(data), (size_t)1000000, "a few megabytes");
    json_t *f = upload("big.jsonl", "batch", data, 200);
    free(data);
    json_t *b = create_openai(jstr(f, "id"), "/v1/chat/completions", "loom-big", 200);
    json_t *end = wait_status(false, jstr(b, "id"), "completed", 0);
    json_t *out = file_lines(json_object_get(end, "output_file_id"));
    cr_assert_eq(json_array_size(out), (size_t)n);
    for (int i = 0; i < n; i += 997) {
        json_t *l = json_array_get(out, (size_t)i);
        char id[16], text[64];
        snprintf(id, sizeof id, "c%05d", i);
        snprintf(text, sizeof text, "batch item %d of the test", i);
        cr_assert_str_eq(jstr(l, "custom_id"), id);
        json_t *m = json_object_get(json_array_get(json_object_get(json_object_get(json_object_get(l, "response"),
                                                                                   "body"),
                                                                   "choices"),
                                                   0),
                                    "message");
        cr_assert_str_eq(jstr(m, "content"), text);
    }
    json_decref(out);
    json_decref(end);
    json_decref(b);
    json_decref(f);

    char *body = anth_requests(n, -1);
    json_t *a = cjreq("POST", "/v1/messages/batches", ANTH_H, body, 200);
    free(body);
    json_t *ae = wait_status(true, jstr(a, "id"), "ended", 0);
    cr_assert_eq(jint(json_object_get(ae, "request_counts"), "succeeded"), n);
    json_t *res = anth_results(ae);
    cr_assert_eq(json_array_size(res), (size_t)n);
    cr_assert_str_eq(jstr(json_array_get(res, (size_t)n - 1), "custom_id"), "m-9999");
    cr_assert_eq(stat_of("batch_lines"), 2 * n);
    json_decref(res);
    json_decref(ae);
    json_decref(a);
}

Test(fake_batch, multipart_forms_as_other_clients_write_them)
{
    start(NULL);
    /* a quoted boundary with a space, a preamble, a part without headers,
     * a filename with a ';' and "name=" inside its quotes, a "--" line in
     * the file that is not the boundary, the file before the purpose, a
     * header name in lower case and an unquoted name */
    const char *f2 = "preamble to skip\r\n"
                     "--b x\r\n"
                     "\r\n"
                     "a part without headers\r\n"
                     "--b x\r\n"
                     "Content-Disposition: form-data; name=\"file\"; filename=\"a;name=b.jsonl\"\r\n"
                     "Content-Type: application/jsonl\r\n"
                     "\r\n"
                     "line one\n--b not the boundary\n"
                     "\r\n--b x\r\n"
                     "content-disposition: form-data; name=purpose\r\n"
                     "\r\n"
                     "batch\r\n"
                     "--b x--\r\n";
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=\"b x\"\r\n"
                     "Content-Length: %zu\r\n\r\n", strlen(f2));
    size_t total = (size_t)n + strlen(f2);
    char *req = malloc(total + 1);
    cr_assert(req);
    memcpy(req, head, (size_t)n);
    memcpy(req + n, f2, strlen(f2) + 1);
    resp r;
    raw(req, total, &r);
    free(req);
    cr_assert_eq(r.status, 200, "%s", r.body ? r.body : "");
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "filename")), "a;name=b.jsonl");
    cr_assert_str_eq(json_string_value(json_object_get(j, "purpose")), "batch");
    cr_assert_eq(json_integer_value(json_object_get(j, "bytes")),
                 (json_int_t)strlen("line one\n--b not the boundary\n"));
    json_decref(j);
    resp_free(&r);

    /* a form that never closes, and a body that is no form */
    const char *bad[] = { "Content-Type: multipart/form-data; boundary=zz\r\n", "Content-Type: text/plain\r\n" };
    for (size_t i = 0; i < 2; i++) {
        const char *body = "--zz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch";
        n = snprintf(head, sizeof head, "POST /v1/files HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n%s",
                     bad[i], strlen(body), body);
        raw(head, (size_t)n, &r);
        cr_assert_eq(r.status, 400, "case %zu", i);
        resp_free(&r);
    }
    cr_assert_eq(fake_server_stat(&srv, "batch_uploads"), 1);
}
