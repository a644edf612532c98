/* test_fake_provider.c -- the fake provider server that other tests lean on.
 *
 * Each test starts its own tests/fake/fake_provider (from $LOOM_BUILDDIR) on
 * a port the server picks, reads that port from the server's first line of
 * output, and speaks plain HTTP/1.1 over a socket with the small client
 * below, so nothing here depends on the daemon's own HTTP code. Timing
 * asserts are lower bounds only: a slow machine may only make things later. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
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

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
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
