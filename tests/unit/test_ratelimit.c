/* test_ratelimit.c -- the per-provider rate limiter.
 *
 * The limiter reads an injected clock that the tests move by hand, so every
 * GCRA figure is checked exactly and nothing sleeps. Its timers still come
 * from a real reactor: after moving the clock a test calls rl_kick and runs a
 * few non-blocking passes, which deliver the grant posts. No assertion depends
 * on how fast the machine is. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "daemon/upstream/ratelimit.h"

/* ---- fixture: a reactor, a limiter on a fake clock, a grant log */

#define MAXLOG 256

typedef struct env env;

typedef struct slot {
    env *e;
    int id;
} slot;

struct env {
    reactor_t *r;
    rl_t *rl;
    uint64_t now_us;
    int log[MAXLOG]; /* ids in grant order */
    int n;
    slot ids[MAXLOG];
    rl_ticket *t[MAXLOG];
};

static uint64_t fake_clock(void *ud)
{
    return ((env *)ud)->now_us;
}

static void on_grant(rl_ticket *t, void *ud)
{
    slot *sl = ud;
    (void)t;
    cr_assert(lt(int, sl->e->n, MAXLOG));
    sl->e->log[sl->e->n++] = sl->id;
}

static void on_grant_count(rl_ticket *t, void *ud)
{
    (void)t;
    ++*(int *)ud;
}

static void setup(env *e, rl_limits lim)
{
    memset(e, 0, sizeof *e);
    for (int i = 0; i < MAXLOG; i++) {
        e->ids[i].e = e;
        e->ids[i].id = i;
    }
    e->now_us = 1000 * REACTOR_SEC; /* far from 0, like a real monotonic clock */
    e->r = reactor_new();
    cr_assert(not(eq(ptr, e->r, NULL)));
    e->rl = rl_new(e->r, &lim);
    cr_assert(not(eq(ptr, e->rl, NULL)));
    rl_set_clock(e->rl, fake_clock, e);
}

static void teardown(env *e)
{
    rl_free(e->rl);
    reactor_free(e->r);
}

/* Runs passes that do not wait, so posted grants get delivered. */
static void drain(env *e)
{
    for (int i = 0; i < 4; i++)
        cr_assert(ge(int, reactor_run_once(e->r, 0), 0));
}

static void step_ms(env *e, uint64_t ms)
{
    e->now_us += ms * REACTOR_MSEC;
    rl_kick(e->rl);
    drain(e);
}

static rl_ticket *acq(env *e, int id, int64_t in, int64_t out)
{
    rl_cost c = {.requests = 1, .est_input_tokens = in, .est_output_tokens = out};
    rl_ticket *t = rl_acquire(e->rl, &c, on_grant, &e->ids[id]);
    cr_assert(not(eq(ptr, t, NULL)));
    e->t[id] = t;
    return t;
}

static rl_limits lim(int64_t rpm, int64_t tpm, int64_t in, int64_t out, int64_t conc)
{
    rl_limits l = {.rpm = rpm, .tpm = tpm, .input_tpm = in, .output_tpm = out,
                       .concurrency = conc};
    return l;
}

/* ---- requests per minute */

Test(ratelimit, rpm_burst_then_steady_rate)
{
    env e;
    setup(&e, lim(600, 0, 0, 0, 0));
    for (int i = 0; i < 40; i++)
        acq(&e, i, 0, 0);
    cr_assert(eq(int, e.n, 0), "a grant callback ran inside rl_acquire");
    drain(&e);
    cr_assert(eq(int, e.n, 9), "one second of budget, less the jitter margin, at once");
    step_ms(&e, 99);
    cr_assert(eq(int, e.n, 9));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 10));
    for (int i = 0; i < 9; i++) {
        step_ms(&e, 100);
        cr_assert(eq(int, e.n, 11 + i), "10 per second");
    }
    for (int i = 0; i < e.n; i++)
        cr_assert(eq(int, e.log[i], i), "FIFO");
    rl_stats_t st;
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.in_flight, 19));
    cr_assert(eq(i64, st.queued, 21));
    cr_assert(eq(u64, st.granted, 19));
    teardown(&e);
}

Test(ratelimit, idle_time_refills_only_one_burst)
{
    env e;
    setup(&e, lim(600, 0, 0, 0, 0));
    step_ms(&e, 60000); /* a long idle spell earns no more than the burst */
    for (int i = 0; i < 30; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 9));
    teardown(&e);
}

Test(ratelimit, slow_rpm_admits_one)
{
    env e;
    setup(&e, lim(6, 0, 0, 0, 0)); /* one every 10 s: the burst is one */
    acq(&e, 0, 0, 0);
    acq(&e, 1, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 9999);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 2));
    teardown(&e);
}

Test(ratelimit, unlimited_grants_everything)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 0));
    for (int i = 0; i < RL_DEFAULT_CEILING; i++)
        acq(&e, i, 1000000, 1000000);
    drain(&e);
    cr_assert(eq(int, e.n, RL_DEFAULT_CEILING));
    rl_stats_t st;
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.effective_concurrency, RL_DEFAULT_CEILING));
    acq(&e, RL_DEFAULT_CEILING, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, RL_DEFAULT_CEILING), "the default ceiling holds");
    teardown(&e);
}

/* ---- tokens */

Test(ratelimit, tpm_reservation_and_refund)
{
    env e;
    setup(&e, lim(0, 60000, 0, 0, 0)); /* 1 ms per token, burst 1000 */
    acq(&e, 0, 500, 500);
    acq(&e, 1, 500, 500);
    drain(&e);
    cr_assert(eq(int, e.n, 1), "the reservation fills the burst");
    rl_usage u = {.input_tokens = 100, .output_tokens = 100};
    rl_release(e.t[0], &u); /* 800 tokens come back: ticket 1 waits 200 ms */
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 199);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 2));
    teardown(&e);
}

Test(ratelimit, tpm_charges_underestimate)
{
    env e;
    setup(&e, lim(0, 60000, 0, 0, 0));
    acq(&e, 0, 100, 100);
    drain(&e);
    rl_usage u = {.input_tokens = 1000, .output_tokens = 1200}; /* +2000 */
    rl_release(e.t[0], &u);
    acq(&e, 1, 100, 0); /* tat is now 2.2 s ahead: 2.2 + 0.1 - 0.9 = 1.4 s to wait */
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1399);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 2));
    teardown(&e);
}

Test(ratelimit, input_and_output_tpm_apart)
{
    env e;
    setup(&e, lim(0, 0, 60000, 6000, 0)); /* output is the tight one */
    acq(&e, 0, 100, 100);
    acq(&e, 1, 100, 100);
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 999);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 2));
    teardown(&e);
}

Test(ratelimit, oversized_cost_goes_when_full_and_blocks_fifo)
{
    env e;
    setup(&e, lim(0, 6000, 0, 0, 0)); /* burst 90 tokens, 10 ms each */
    acq(&e, 0, 1000, 0);              /* ten bursts' worth: not starved */
    acq(&e, 1, 10, 0);
    acq(&e, 2, 0, 0); /* free, but behind ticket 1: no overtaking */
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 9199); /* 10 s of debt, + 0.1 s for its own cost, - 0.9 s burst */
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 3));
    cr_assert(eq(int, e.log[1], 1));
    cr_assert(eq(int, e.log[2], 2));
    teardown(&e);
}

/* ---- concurrency */

Test(ratelimit, concurrency_cap_fifo)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 2));
    for (int i = 0; i < 5; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 2));
    rl_release(e.t[1], NULL);
    drain(&e);
    cr_assert(eq(int, e.n, 3));
    rl_release(e.t[0], NULL);
    rl_release(e.t[2], NULL);
    drain(&e);
    cr_assert(eq(int, e.n, 5));
    for (int i = 0; i < 5; i++)
        cr_assert(eq(int, e.log[i], i));
    teardown(&e);
}

/* ---- feedback */

Test(ratelimit, pause_blocks_and_resumes)
{
    env e;
    setup(&e, lim(600, 0, 0, 0, 0));
    rl_pause(e.rl, 500);
    rl_pause(e.rl, 100); /* never shortens */
    acq(&e, 0, 0, 0);
    drain(&e);
    rl_stats_t st;
    rl_stats(e.rl, &st);
    cr_assert(eq(int, e.n, 0));
    cr_assert(eq(u64, st.paused_until_us, e.now_us + 500 * REACTOR_MSEC));
    step_ms(&e, 499);
    cr_assert(eq(int, e.n, 0));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 1));
    rl_stats(e.rl, &st);
    cr_assert(eq(u64, st.paused_until_us, 0));
    teardown(&e);
}

Test(ratelimit, pause_resumes_on_its_own_timer)
{
    /* The real clock and a real timer: only the order of events is checked. */
    rl_limits l = lim(0, 0, 0, 0, 0);
    reactor_t *r = reactor_new();
    cr_assert(not(eq(ptr, r, NULL)));
    rl_t *rl = rl_new(r, &l);
    cr_assert(not(eq(ptr, rl, NULL)));
    int granted = 0;
    rl_pause(rl, 20);
    rl_cost c = {.requests = 1};
    rl_ticket *t = rl_acquire(rl, &c, on_grant_count, &granted);
    cr_assert(not(eq(ptr, t, NULL)));
    cr_assert(ge(int, reactor_run_once(r, 0), 0));
    cr_assert(eq(int, granted, 0));
    while (!granted)
        cr_assert(ge(int, reactor_run_once(r, -1), 0));
    rl_release(t, NULL);
    rl_free(rl);
    reactor_free(r);
}

Test(ratelimit, sync_clamps_to_server_remaining)
{
    env e;
    setup(&e, lim(600, 0, 0, 0, 0));
    rl_sync(e.rl, 3, 1000, -1, -1);
    for (int i = 0; i < 10; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 3), "never more than the server says remain");
    step_ms(&e, 100);
    cr_assert(eq(int, e.n, 4));
    rl_sync(e.rl, 50, 1000, -1, -1); /* above the burst: no loosening */
    drain(&e);
    cr_assert(eq(int, e.n, 4));
    teardown(&e);
}

Test(ratelimit, sync_tokens_and_exhaustion)
{
    env e;
    setup(&e, lim(0, 60000, 0, 0, 0));
    rl_sync(e.rl, -1, -1, 300, 5000); /* 300 of a 900 burst remain */
    acq(&e, 0, 200, 100);
    acq(&e, 1, 1, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 2));
    /* exhausted, with the limit known: the bucket is empty, so 10 tokens
     * wait their own 10 ms, not the 2 s until the bucket is full again */
    rl_sync(e.rl, -1, -1, 0, 2000);
    acq(&e, 2, 10, 0);
    drain(&e);
    step_ms(&e, 9);
    cr_assert(eq(int, e.n, 2));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 3));
    teardown(&e);
}

Test(ratelimit, sync_exhaustion_without_a_limit_waits_for_the_reset)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 0));
    rl_sync(e.rl, 0, 2000, -1, -1); /* the server's only figure is the reset */
    acq(&e, 0, 0, 0);
    drain(&e);
    step_ms(&e, 1999);
    cr_assert(eq(int, e.n, 0));
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 1));
    teardown(&e);
}

Test(ratelimit, cancel_queued_never_granted)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 1));
    acq(&e, 0, 0, 0);
    acq(&e, 1, 0, 0);
    acq(&e, 2, 0, 0);
    drain(&e);
    rl_cancel(e.t[1]);
    rl_stats_t st;
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.queued, 1));
    rl_release(e.t[0], NULL);
    drain(&e);
    cr_assert(eq(int, e.n, 2));
    cr_assert(eq(int, e.log[1], 2));
    teardown(&e);
}

Test(ratelimit, cancel_granted_refunds_everything)
{
    env e;
    setup(&e, lim(60, 60000, 0, 0, 1)); /* burst: one request */
    acq(&e, 0, 1000, 0);
    rl_cancel(e.t[0]); /* granted, not yet announced: never announced */
    drain(&e);
    cr_assert(eq(int, e.n, 0));
    acq(&e, 1, 1000, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 1), "the request, the tokens and the slot came back");
    rl_cancel(e.t[1]); /* announced: the same */
    acq(&e, 2, 1000, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 2));
    teardown(&e);
}

Test(ratelimit, aimd_halves_and_recovers)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 8));
    rl_stats_t st;
    rl_observe(e.rl, RL_OVERLOADED, 100);
    rl_observe(e.rl, RL_OVERLOADED, 100); /* same burst: counted once */
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.effective_concurrency, 4));
    int64_t want[] = {2, 1, 1};
    for (int i = 0; i < 3; i++) {
        step_ms(&e, 2000);
        rl_observe(e.rl, RL_OVERLOADED, 100);
        rl_stats(e.rl, &st);
        cr_assert(eq(i64, st.effective_concurrency, want[i]));
    }
    for (int i = 0; i < 3; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 1), "the halved cap is enforced");
    rl_observe(e.rl, RL_OK, 100); /* 1 success at cap 1: cap 2 */
    drain(&e);
    cr_assert(eq(int, e.n, 2), "a raised cap serves the queue");
    rl_observe(e.rl, RL_OK, 100);
    rl_observe(e.rl, RL_OK, 100); /* 2 at cap 2: cap 3 */
    drain(&e);
    cr_assert(eq(int, e.n, 3));
    for (int i = 0; i < 100; i++)
        rl_observe(e.rl, RL_OK, 100);
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.effective_concurrency, 8), "up to the configured cap only");
    teardown(&e);
}

Test(ratelimit, aimd_slow_answers_count_as_overload)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 8));
    for (int i = 0; i < 5; i++)
        rl_observe(e.rl, RL_OK, 1000);
    rl_stats_t st;
    rl_observe(e.rl, RL_OK, 1900); /* under twice the baseline */
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.effective_concurrency, 8));
    rl_observe(e.rl, RL_OK, 5000);
    rl_stats(e.rl, &st);
    cr_assert(eq(i64, st.effective_concurrency, 4));
    teardown(&e);
}

/* ---- argument checks and teardown with tickets held */

Test(ratelimit, bad_arguments)
{
    env e;
    setup(&e, lim(0, 0, 0, 0, 0));
    rl_limits bad = lim(-1, 0, 0, 0, 0);
    errno = 0;
    cr_assert(eq(ptr, rl_new(e.r, &bad), NULL));
    cr_assert(eq(int, errno, EINVAL));
    rl_cost c = {.requests = 1, .est_input_tokens = -5};
    errno = 0;
    cr_assert(eq(ptr, rl_acquire(e.rl, &c, on_grant, &e.ids[0]), NULL));
    cr_assert(eq(int, errno, EINVAL));
    teardown(&e);
}

Test(ratelimit, free_with_tickets_held)
{
    env e;
    setup(&e, lim(60, 0, 0, 0, 0));
    acq(&e, 0, 0, 0); /* granted, announcement pending */
    acq(&e, 1, 0, 0); /* queued behind a timer */
    acq(&e, 2, 0, 0);
    teardown(&e); /* the sanitizer checks nothing leaks */
    cr_assert(eq(int, e.n, 0));
}

/* ---- header parsing */

Test(ratelimit, parse_duration)
{
    struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"6m0s", 360000}, {"12ms", 12},     {"1.5s", 1500}, {"30", 30000},
              {"2m59.56s", 179560}, {"1h", 3600000}, {"0s", 0},    {"1.0001s", 1001},
              {" 1s ", 1000},    {"250us", 1},      {"1h2m3s4ms", 3723004}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t ms = 99;
        cr_assert(eq(int, rl_parse_duration(ok[i].s, &ms), 0), "%s", ok[i].s);
        cr_assert(eq(u64, ms, ok[i].ms), "%s", ok[i].s);
    }
    const char *bad[] = {"", "  ", "s", "-1", "1x", "1m30", "abc", "1..5s", "1s garbage", "1e3s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 99;
        cr_assert(lt(int, rl_parse_duration(bad[i], &ms), 0), "'%s' accepted", bad[i]);
        cr_assert(eq(u64, ms, 99));
    }
}

Test(ratelimit, parse_retry_after)
{
    const int64_t date = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    uint64_t ms = 0;
    cr_assert(eq(int, rl_parse_retry_after("120", 0, &ms), 0));
    cr_assert(eq(u64, ms, 120000));
    cr_assert(eq(int, rl_parse_retry_after(" 0 ", 0, &ms), 0));
    cr_assert(eq(u64, ms, 0));
    const char *dates[] = {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                           "Sun Nov  6 08:49:37 1994"};
    for (size_t i = 0; i < 3; i++) {
        ms = 0;
        cr_assert(eq(int, rl_parse_retry_after(dates[i], date - 90, &ms), 0), "%s", dates[i]);
        cr_assert(eq(u64, ms, 90000), "%s", dates[i]);
    }
    cr_assert(eq(int, rl_parse_retry_after(dates[0], date + 10, &ms), 0));
    cr_assert(eq(u64, ms, 0), "a past date means now");
    const char *bad[] = {"", "soon", "30s", "-5", "Sun, 06 Nov 1994 08:49:37 PST",
                         "Sun, 06 Nov 1994", "Sun, 06 Nov 1994 08:49:37 GMT junk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(lt(int, rl_parse_retry_after(bad[i], date, &ms), 0), "'%s' accepted", bad[i]);
}

/* ---- numbers at the edges */

Test(ratelimit, every_wait_is_capped_at_a_day)
{
    const uint64_t day = 24 * 3600 * UINT64_C(1000);
    cr_assert(eq(u64, RL_MAX_WAIT_MS, day));
    uint64_t ms = 0;
    cr_assert(eq(int, rl_parse_duration("1000000000000000h", &ms), 0));
    cr_assert(eq(u64, ms, day));
    cr_assert(eq(int, rl_parse_retry_after("1000000000000", 0, &ms), 0));
    cr_assert(eq(u64, ms, day), "10^12 s is honoured as one day");
    cr_assert(eq(int, rl_parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT", 0, &ms), 0));
    cr_assert(eq(u64, ms, day), "a date centuries away is one day");
    loom_header h[] = { { "retry-after", "7" }, { "retry-after-ms", "1000000000000000" } };
    cr_assert(eq(int, rl_parse_wait_headers(h, 2, 0, &ms), 0));
    cr_assert(eq(u64, ms, day), "retry-after-ms of 10^15 is one day");
    loom_header h2[] = { { "retry-after-ms", "1500.5" } };
    cr_assert(eq(int, rl_parse_wait_headers(h2, 1, 0, &ms), 0));
    cr_assert(eq(u64, ms, 1501), "rounded up, never short");
    loom_header h3[] = { { "retry-after-ms", "-4" }, { "retry-after", "7" } };
    cr_assert(eq(int, rl_parse_wait_headers(h3, 2, 0, &ms), 0));
    cr_assert(eq(u64, ms, 7000), "a bad retry-after-ms falls back to Retry-After");
    cr_assert(eq(int, rl_parse_wait_headers(h3, 1, 0, &ms), -ENOENT));
    cr_assert(eq(u64, rl_cap_wait_ms(UINT64_MAX), day));

    env e;
    setup(&e, lim(600, 0, 0, 0, 0));
    rl_pause(e.rl, UINT64_C(1000000000000000));
    rl_stats_t st;
    rl_stats(e.rl, &st);
    cr_assert(eq(u64, st.paused_until_us, e.now_us + day * REACTOR_MSEC));
    teardown(&e);
}

Test(ratelimit, absurd_token_counts_do_not_overflow)
{
    env e;
    /* one token a minute: the slowest dimension, the largest products;
     * tickets of no tokens are granted at once, then each reports an
     * absurd usage, so the debts pile up */
    setup(&e, lim(0, 1, 0, 0, 0));
    for (int i = 0; i < 8; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 8));
    rl_usage u = {.input_tokens = INT64_C(1) << 62, .output_tokens = INT64_MAX};
    for (int i = 0; i < 8; i++)
        rl_release(e.t[i], &u);
    acq(&e, 8, 1, 0);
    step_ms(&e, 1000);
    cr_assert(eq(int, e.n, 8), "a debt this large blocks the next call");
    cr_assert(eq(i64, rl_clamp_tokens(INT64_C(1) << 62), RL_MAX_TOKENS));
    cr_assert(eq(i64, rl_clamp_tokens(-7), -1));
    teardown(&e);

    /* a limit beyond any count still works as "nearly none" */
    setup(&e, lim(INT64_MAX, INT64_MAX, 0, 0, 0));
    acq(&e, 0, INT64_C(100000000000), 1);
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    teardown(&e);
}

/* ---- a gate: the budget shared with other daemons (rl_set_gate) */

typedef struct gate_log {
    int budget;             /* calls admit says yes to */
    int admits, refusals;
    int done_sent, done_unsent;
    int64_t done_in, done_out; /* the last done's actual usage (-1: none) */
    int paused;
    uint64_t paused_ms;
} gate_log;

static bool g_admit(void *ud, const rl_cost *cost)
{
    gate_log *g = ud;
    (void)cost;
    if (g->budget <= 0) {
        g->refusals++;
        return false;
    }
    g->budget--;
    g->admits++;
    return true;
}

static void g_done(void *ud, const rl_cost *cost, const rl_usage *actual, bool sent)
{
    gate_log *g = ud;
    (void)cost;
    if (sent)
        g->done_sent++;
    else
        g->done_unsent++;
    g->done_in = actual ? actual->input_tokens : -1;
    g->done_out = actual ? actual->output_tokens : -1;
}

static void g_paused(void *ud, uint64_t ms)
{
    gate_log *g = ud;
    g->paused++;
    g->paused_ms = ms;
}

Test(ratelimit, gate_admits_what_fits_locally_and_is_kicked_for_more)
{
    env e;
    gate_log g = {.budget = 2};
    setup(&e, lim(600, 0, 0, 0, 0));
    rl_gate gate = {.ud = &g, .admit = g_admit, .done = g_done, .paused = g_paused};
    rl_set_gate(e.rl, &gate);
    for (int i = 0; i < 5; i++)
        acq(&e, i, 10, 5);
    drain(&e);
    cr_assert(eq(int, e.n, 2), "the local burst allows 9, the gate 2");
    cr_assert(ge(int, g.refusals, 1), "the head was asked and refused");
    /* nothing moves without the gate's kick, however long it waits */
    step_ms(&e, 5000);
    cr_assert(eq(int, e.n, 2));
    g.budget = 2;
    rl_kick(e.rl);
    drain(&e);
    cr_assert(eq(int, e.n, 4), "a kick with more budget grants more");
    /* the local limits still hold: rpm 600 at most 9 at once, whatever the gate says */
    g.budget = 100;
    for (int i = 5; i < 20; i++)
        acq(&e, i, 0, 0);
    rl_kick(e.rl);
    drain(&e);
    /* the local bucket refilled in the 5 s: 9 at once from then, 2 of them
     * granted at the kick above */
    cr_assert(eq(int, e.n, 2 + 9), "the local burst still bounds what the gate admits");
    /* done: a release reports its usage, a cancel of a granted call reports unsent */
    rl_usage u = {.input_tokens = 7, .output_tokens = 3};
    rl_release(e.t[0], &u);
    cr_assert(eq(int, g.done_sent, 1));
    cr_assert(eq(i64, g.done_in, 7));
    cr_assert(eq(i64, g.done_out, 3));
    rl_release(e.t[1], NULL);
    cr_assert(eq(int, g.done_sent, 2));
    cr_assert(eq(i64, g.done_in, -1), "NULL usage: the estimate stands");
    rl_cancel(e.t[2]);
    cr_assert(eq(int, g.done_unsent, 1));
    /* a queued ticket cancelled was never admitted: no done */
    rl_cancel(e.t[19]);
    cr_assert(eq(int, g.done_sent + g.done_unsent, 3));
    teardown(&e);
}

Test(ratelimit, gate_pauses_shared_one_way)
{
    env e;
    gate_log g = {.budget = 100};
    setup(&e, lim(0, 0, 0, 0, 0));
    rl_gate gate = {.ud = &g, .admit = g_admit, .done = g_done, .paused = g_paused};
    rl_set_gate(e.rl, &gate);
    rl_pause(e.rl, 1500);
    cr_assert(eq(int, g.paused, 1), "a pause seen here is shared");
    cr_assert(eq(u64, g.paused_ms, 1500));
    rl_pause_shared(e.rl, 3000);
    cr_assert(eq(int, g.paused, 1), "a pause from the others is not sent back");
    acq(&e, 0, 0, 0);
    step_ms(&e, 2999);
    cr_assert(eq(int, e.n, 0), "rl_pause_shared pauses all the same");
    step_ms(&e, 1);
    cr_assert(eq(int, e.n, 1));
    teardown(&e);
}

Test(ratelimit, gate_taken_off)
{
    env e;
    gate_log g = {.budget = 1};
    setup(&e, lim(0, 0, 0, 0, 0));
    rl_gate gate = {.ud = &g, .admit = g_admit, .done = g_done, .paused = g_paused};
    rl_set_gate(e.rl, &gate);
    for (int i = 0; i < 3; i++)
        acq(&e, i, 0, 0);
    drain(&e);
    cr_assert(eq(int, e.n, 1));
    /* without the gate the queue goes on at once; what the gate admitted
     * no longer reports to it, nor to a gate set afterwards */
    rl_set_gate(e.rl, NULL);
    drain(&e);
    cr_assert(eq(int, e.n, 3));
    gate_log g2 = {.budget = 0};
    rl_gate gate2 = {.ud = &g2, .admit = g_admit, .done = g_done, .paused = g_paused};
    rl_set_gate(e.rl, &gate2);
    rl_release(e.t[0], NULL);
    rl_release(e.t[1], NULL);
    cr_assert(eq(int, g.done_sent + g2.done_sent, 0));
    rl_pause(e.rl, 10);
    cr_assert(eq(int, g.paused, 0));
    cr_assert(eq(int, g2.paused, 1));
    teardown(&e);
}
