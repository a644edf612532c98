/* test_iso_invoke.c -- an isolated plugin's invoke provider, at the level of
 * daemon/isolate: a reactor, the real loom-plugin-host, and the hostile test
 * plugin's provider hostile_echo, whose instance lives in the helper. Calls
 * answer with output and usage from the provider's timers, several at once;
 * a Retry-After comes back; a cancelled call reaches the provider's cancel
 * hook and costs no restart; a call past the plugin's timeout is answered
 * timeout and cancelled in the helper; a segfault fails every call in
 * flight in that helper with plugin_crashed and the restarted helper has
 * the instance again.
 *
 * Every wait has a deadline and waits for the event (an answer, a log line,
 * a counter). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/reactor.h"
#include "daemon/isolate/iso.h"

#define MAX_ANSWERS 16

typedef struct answer {
    bool done;
    iso_status status;
    json_t *output;
    loom_usage usage;
    char code[64], message[512];
    uint64_t retry_after_ms;
} answer;

typedef struct fixture {
    reactor_t *r;
    iso_t *iso;
    iso_instance_t *inst;
    char log[16384];           /* every line the module logged, one per line */
    size_t loglen;
    answer a[MAX_ANSWERS];
} fixture;

static fixture F;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void log_cb(void *ud, int level, json_t *data, const char *fmt, ...)
{
    fixture *f = ud;
    va_list ap;
    va_start(ap, fmt);
    if (f->loglen < sizeof f->log - 1) {
        int n = vsnprintf(f->log + f->loglen, sizeof f->log - f->loglen - 1, fmt, ap);
        if (n > 0)
            f->loglen += (size_t)n < sizeof f->log - f->loglen - 1 ? (size_t)n
                                                                  : sizeof f->log - f->loglen - 1;
        f->log[f->loglen++] = '\n';
        f->log[f->loglen] = '\0';
    }
    va_end(ap);
    json_decref(data);
}

static void on_done(void *ud, iso_invoke_result *res)
{
    answer *a = ud;
    cr_assert(!a->done, "answered twice");
    a->done = true;
    a->status = res->status;
    a->output = res->output;
    res->output = NULL;
    a->usage = res->usage;
    snprintf(a->code, sizeof a->code, "%s", res->code ? res->code : "");
    snprintf(a->message, sizeof a->message, "%s", res->message ? res->message : "");
    a->retry_after_ms = res->retry_after_ms;
}

/* Runs the reactor until COND(ud) holds; fails past BOUND_MS. */
static void run_until(bool (*cond)(void *), void *ud, long bound_ms, const char *what)
{
    long until = now_ms() + bound_ms;
    while (!cond(ud)) {
        cr_assert_lt(now_ms(), until, "waited %ld ms for %s; log:\n%s", bound_ms, what, F.log);
        reactor_run_once(F.r, 10);
    }
}

static bool is_done(void *ud)
{
    return ((answer *)ud)->done;
}

static bool is_ready(void *ud)
{
    iso_stats st;
    iso_get_stats(F.iso, &st);
    return st.helpers_ready >= 1;
}

static const char *log_needle;
static bool logged(void *ud)
{
    return strstr(F.log, log_needle) != NULL;
}

static void wait_log(const char *needle, long bound_ms)
{
    log_needle = needle;
    run_until(logged, NULL, bound_ms, needle);
}

/* The hostile plugin isolated with TIMEOUT_MS and one instance of
 * hostile_echo with prefix "P:". */
static void setup_with(uint64_t timeout_ms)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char host[PATH_MAX], rel[PATH_MAX], so[PATH_MAX];
    snprintf(host, sizeof host, "%s/loom-plugin-host", bd ? bd : ".");
    snprintf(rel, sizeof rel, "%s/tests/plugins/.libs/hostile.so", bd ? bd : ".");
    cr_assert(realpath(rel, so) != NULL, "build the test plugin first: %s", rel);
    cr_assert((F.r = reactor_new()) != NULL);
    cr_assert((F.iso = iso_new(F.r, host, log_cb, &F)) != NULL);
    iso_limits lim = { .processes = 1, .timeout_ms = timeout_ms };
    cr_assert_eq(iso_add_plugin(F.iso, "hostile", so, &lim, NULL), 0);
    json_t *cfg = json_pack("{s:s}", "prefix", "P:");
    F.inst = iso_instance_new(F.iso, "hostile", "hostile_echo", "echo", cfg);
    json_decref(cfg);
    cr_assert(F.inst != NULL);
    run_until(is_ready, NULL, 10000, "a ready helper");
}

static void setup(void)
{
    setup_with(5000);
}

static void teardown(void)
{
    iso_instance_free(F.inst);
    iso_free(F.iso);
    reactor_free(F.r);
    for (int i = 0; i < MAX_ANSWERS; i++)
        json_decref(F.a[i].output);
    memset(&F, 0, sizeof F);
}

/* Starts a chat call of MODEL saying TEXT into F.a[I]. */
static iso_invoke_t *start(int i, const char *model, const char *text, uint64_t deadline_ms)
{
    json_t *messages = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = model, .messages = messages };
    iso_invoke_t *v = iso_invoke(F.inst, &req, deadline_ms, on_done, &F.a[i]);
    json_decref(messages);
    cr_assert(v != NULL);
    return v;
}

static json_int_t stat_of(const char *key)
{
    json_t *o = iso_stats_json(F.iso);
    json_t *v = json_object_get(json_object_get(o, "hostile"), key);
    cr_assert(json_is_integer(v), "%s", json_dumps(o, 0));
    json_int_t n = json_integer_value(v);
    json_decref(o);
    return n;
}

Test(iso_invoke, calls_answer_with_output_and_usage_several_at_once, .init = setup,
     .fini = teardown)
{
    char text[8][16];
    for (int i = 0; i < 8; i++) {
        snprintf(text[i], sizeof text[i], "call %d", i);
        start(i, "m", text[i], 0);
    }
    for (int i = 0; i < 8; i++) {
        run_until(is_done, &F.a[i], 10000, "an answer");
        cr_assert_eq(F.a[i].status, ISO_OK, "%d: %s", i, F.a[i].message);
        char want[32];
        snprintf(want, sizeof want, "P:%s", text[i]);
        cr_assert_str_eq(json_string_value(F.a[i].output), want);
        cr_assert_eq(F.a[i].usage.input_tokens, 3);
        cr_assert_eq(F.a[i].usage.output_tokens, 5);
    }
    cr_assert_eq(stat_of("invokes"), 8);
    cr_assert_eq(stat_of("restarts"), 0);
}

Test(iso_invoke, the_provider_sees_the_deadline_and_a_retry_after_comes_back, .init = setup,
     .fini = teardown)
{
    /* the caller's deadline when it is earlier than the plugin's timeout */
    start(0, "deadline", "", (uint64_t)now_ms() + 1000);
    run_until(is_done, &F.a[0], 10000, "an answer");
    cr_assert_eq(F.a[0].status, ISO_OK, "%s", F.a[0].message);
    long left = atol(json_string_value(F.a[0].output));
    cr_assert(left > 0 && left <= 1000, "%ld ms left", left);
    start(1, "limited", "", 0);
    run_until(is_done, &F.a[1], 10000, "an answer");
    cr_assert_eq(F.a[1].status, ISO_FAILED);
    cr_assert_str_eq(F.a[1].code, "rate_limited");
    cr_assert_eq(F.a[1].retry_after_ms, 1500);
    cr_assert(strstr(F.a[1].message, "slow down"), "%s", F.a[1].message);
}

Test(iso_invoke, a_cancelled_call_reaches_the_providers_cancel_hook, .init = setup,
     .fini = teardown)
{
    iso_invoke_t *v = start(0, "never", "x", 0);
    /* sent once the helper holds it */
    long until = now_ms() + 10000;
    while (stat_of("invokes") < 1 && now_ms() < until)
        reactor_run_once(F.r, 10);
    iso_invoke_cancel(v);
    wait_log("hostile_echo: call cancelled", 10000);
    cr_assert(!F.a[0].done);
    start(1, "m", "after", 0);
    run_until(is_done, &F.a[1], 10000, "an answer");
    cr_assert_str_eq(json_string_value(F.a[1].output), "P:after");
    cr_assert_eq(stat_of("cancels"), 1);
    cr_assert_eq(stat_of("restarts"), 0);
}

static void setup_short(void)
{
    setup_with(300);
}

Test(iso_invoke, a_call_past_the_timeout_is_answered_and_cancelled_in_its_helper,
     .init = setup_short, .fini = teardown)
{
    long t0 = now_ms();
    start(0, "never", "x", 0);
    run_until(is_done, &F.a[0], 10000, "the timeout");
    cr_assert_eq(F.a[0].status, ISO_TIMEOUT, "%s", F.a[0].message);
    cr_assert_geq(now_ms() - t0, 300);
    wait_log("hostile_echo: call cancelled", 10000);
    start(1, "m", "still", 0);
    run_until(is_done, &F.a[1], 10000, "an answer");
    cr_assert_eq(F.a[1].status, ISO_OK, "%s", F.a[1].message);
    cr_assert_eq(stat_of("timeouts"), 1);
    cr_assert_eq(stat_of("restarts"), 0);
}

Test(iso_invoke, a_segfault_fails_the_calls_in_flight_and_the_new_helper_has_the_instance,
     .init = setup, .fini = teardown)
{
    start(0, "never", "x", 0);
    start(1, "segv", "x", 0);
    run_until(is_done, &F.a[0], 10000, "the crash");
    run_until(is_done, &F.a[1], 10000, "the crash");
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(F.a[i].status, ISO_CRASHED, "%d: %s", i, F.a[i].message);
        cr_assert(strstr(F.a[i].message, "signal 11"), "%s", F.a[i].message);
    }
    cr_assert_eq(stat_of("crashes"), 1);
    /* queued until the restarted helper is ready, which made the instance
     * again (with its configuration: the prefix) */
    start(2, "m", "again", 0);
    run_until(is_done, &F.a[2], 10000, "an answer after the restart");
    cr_assert_eq(F.a[2].status, ISO_OK, "%s", F.a[2].message);
    cr_assert_str_eq(json_string_value(F.a[2].output), "P:again");
    cr_assert_eq(stat_of("restarts"), 1);
}
