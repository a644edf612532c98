/* test_pool.c -- the worker pool: where work and completions run, order of
 * start, cancellation, and what pool_free does with unfinished work.
 *
 * Work items that must stay "running" wait on a gate the test opens, so no
 * test depends on how fast threads are scheduled. Worker threads only touch
 * atomics; assertions are made on the test's own thread. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "daemon/core/pool.h"

/* ---- helpers */

typedef struct counters {
    pthread_t reactor_thread;
    atomic_int work_ran;
    atomic_int work_on_reactor_thread;
    int done_ok, done_cancelled, done_other, done_off_reactor_thread;
} counters;

static void counters_init(counters *c)
{
    c->reactor_thread = pthread_self();
    atomic_init(&c->work_ran, 0);
    atomic_init(&c->work_on_reactor_thread, 0);
    c->done_ok = c->done_cancelled = c->done_other = c->done_off_reactor_thread = 0;
}

static int counters_done(const counters *c)
{
    return c->done_ok + c->done_cancelled + c->done_other;
}

static void count_work(void *ud)
{
    counters *c = ud;
    atomic_fetch_add(&c->work_ran, 1);
    if (pthread_equal(pthread_self(), c->reactor_thread))
        atomic_fetch_add(&c->work_on_reactor_thread, 1);
}

static void count_done(void *ud, int status)
{
    counters *c = ud;
    if (!pthread_equal(pthread_self(), c->reactor_thread))
        c->done_off_reactor_thread++;
    if (status == 0)
        c->done_ok++;
    else if (status == -ECANCELED)
        c->done_cancelled++;
    else
        c->done_other++;
}

/* Runs R until C has seen N completions (the test timeout is the guard). */
static void run_until_done(reactor_t *r, const counters *c, int n)
{
    while (counters_done(c) < n)
        cr_assert(reactor_run_once(r, 100) >= 0);
}

/* A gate a work item waits at until the test opens it. Its done fields
 * are only touched on the reactor thread. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered, open;
    int done_calls, done_status;
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->entered = g->open = false;
    g->done_calls = g->done_status = 0;
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static void gate_enter(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_work(void *ud)
{
    gate *g = ud;
    gate_enter(g);
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_done(void *ud, int status)
{
    gate *g = ud;
    g->done_calls++;
    g->done_status = status;
}

static void gate_wait_entered(gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* ---- where things run */

Test(pool, one_item_runs_off_and_completes_on_the_reactor_thread, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 2);
    cr_assert(p != NULL);
    counters c;
    counters_init(&c);
    cr_assert(eq(int, pool_submit(p, count_work, count_done, &c, NULL), 0));
    cr_assert(eq(int, counters_done(&c), 0), "done never runs inside pool_submit");
    run_until_done(r, &c, 1);
    cr_assert(eq(int, c.done_ok, 1));
    cr_assert(eq(int, atomic_load(&c.work_ran), 1));
    cr_assert(eq(int, atomic_load(&c.work_on_reactor_thread), 0));
    cr_assert(eq(int, c.done_off_reactor_thread, 0));
    pool_free(p);
    reactor_free(r);
}

Test(pool, hundred_thousand_items, .timeout = 30)
{
    enum { N = 100000 };
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 4);
    cr_assert(p != NULL);
    counters c;
    counters_init(&c);
    for (int i = 0; i < N; i++)
        cr_assert(eq(int, pool_submit(p, count_work, count_done, &c, NULL), 0));
    run_until_done(r, &c, N);
    cr_assert(eq(int, c.done_ok, N));
    cr_assert(eq(int, atomic_load(&c.work_ran), N));
    cr_assert(eq(int, atomic_load(&c.work_on_reactor_thread), 0));
    cr_assert(eq(int, c.done_off_reactor_thread, 0));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "nothing completes twice");
    pool_free(p);
    reactor_free(r);
}

Test(pool, two_pools_share_one_reactor, .timeout = 30)
{
    enum { N = 10000 };
    reactor_t *r = reactor_new();
    pool_t *a = pool_new(r, 2), *b = pool_new(r, 3);
    cr_assert(a != NULL && b != NULL);
    counters ca, cb;
    counters_init(&ca);
    counters_init(&cb);
    for (int i = 0; i < N; i++) {
        cr_assert(eq(int, pool_submit(a, count_work, count_done, &ca, NULL), 0));
        cr_assert(eq(int, pool_submit(b, count_work, count_done, &cb, NULL), 0));
    }
    run_until_done(r, &ca, N);
    run_until_done(r, &cb, N);
    cr_assert(eq(int, ca.done_ok + cb.done_ok, 2 * N));
    cr_assert(eq(int, ca.done_off_reactor_thread + cb.done_off_reactor_thread, 0));
    pool_free(b);
    pool_free(a);
    reactor_free(r);
}

/* ---- order */

/* With one worker, work starts (and so completes) in submission order. */
typedef struct order_item {
    atomic_int *next_start;
    int index, started_as;
    int *done_order;
    int *done_count;
} order_item;

static void order_work(void *ud)
{
    order_item *it = ud;
    it->started_as = atomic_fetch_add(it->next_start, 1);
}

static void order_done(void *ud, int status)
{
    order_item *it = ud;
    it->done_order[(*it->done_count)++] = it->index;
}

Test(pool, fifo_start_order, .timeout = 30)
{
    enum { N = 5000 };
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 1);
    cr_assert(p != NULL);
    atomic_int next_start;
    atomic_init(&next_start, 0);
    int done_count = 0;
    int *done_order = calloc(N, sizeof *done_order);
    order_item *items = calloc(N, sizeof *items);
    cr_assert(done_order != NULL && items != NULL);
    for (int i = 0; i < N; i++) {
        items[i] = (order_item){&next_start, i, -1, done_order, &done_count};
        cr_assert(eq(int, pool_submit(p, order_work, order_done, &items[i], NULL), 0));
    }
    while (done_count < N)
        reactor_run_once(r, 100);
    for (int i = 0; i < N; i++) {
        cr_assert(eq(int, items[i].started_as, i));
        cr_assert(eq(int, done_order[i], i));
    }
    pool_free(p);
    reactor_free(r);
    free(items);
    free(done_order);
}

/* ---- cancellation */

typedef struct cancel_item {
    atomic_bool ran;
    bool done;
    int status;
} cancel_item;

static void cancel_item_work(void *ud)
{
    atomic_store(&((cancel_item *)ud)->ran, true);
}

static void cancel_item_done(void *ud, int status)
{
    cancel_item *it = ud;
    it->done = true;
    it->status = status;
}

Test(pool, cancel_pending_item, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 1);
    cr_assert(p != NULL);
    gate g;
    gate_init(&g);
    pool_work_t *gh = NULL, *h[4];
    cancel_item items[4];
    cr_assert(eq(int, pool_submit(p, gate_work, gate_done, &g, &gh), 0));
    for (int i = 0; i < 4; i++) {
        atomic_init(&items[i].ran, false);
        items[i].done = false;
        items[i].status = 1;
        cr_assert(eq(int, pool_submit(p, cancel_item_work, cancel_item_done, &items[i], &h[i]), 0));
    }
    gate_wait_entered(&g);
    cr_assert(eq(int, pool_cancel(p, gh), -EBUSY), "running work cannot be cancelled");
    cr_assert(eq(int, pool_cancel(p, h[1]), 0));
    cr_assert(not(items[1].done), "done never runs inside pool_cancel");
    cr_assert(eq(int, pool_cancel(p, h[1]), -EBUSY), "already cancelled");
    cr_assert(eq(int, pool_cancel(p, h[3]), 0));
    /* Cancelled items complete while the only worker is still busy. */
    while (!items[1].done || !items[3].done)
        reactor_run_once(r, 100);
    cr_assert(eq(int, items[1].status, -ECANCELED));
    cr_assert(eq(int, items[3].status, -ECANCELED));
    cr_assert(not(items[0].done));
    cr_assert(not(items[2].done));
    gate_open(&g);
    while (!items[0].done || !items[2].done || g.done_calls == 0)
        reactor_run_once(r, 100);
    cr_assert(eq(int, g.done_status, 0));
    cr_assert(eq(int, items[0].status, 0));
    cr_assert(eq(int, items[2].status, 0));
    cr_assert(atomic_load(&items[0].ran) && atomic_load(&items[2].ran));
    cr_assert(not(atomic_load(&items[1].ran) || atomic_load(&items[3].ran)));
    pool_free(p);
    reactor_free(r);
    gate_destroy(&g);
}

/* ---- pool_free */

/* The first item holds the only worker until pool_free has begun, which it
 * sees as pool_submit being refused: so everything behind it is still
 * pending when the pool stops, whatever the scheduling. Items it manages to
 * submit before that are pending too and must be cancelled as well. */
typedef struct probe {
    pool_t *p;
    counters *c;
    gate g;
    atomic_int extra;
    atomic_bool gave_up;       /* pool_free never began within the deadline */
} probe;

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void probe_work(void *ud)
{
    probe *pr = ud;
    gate_enter(&pr->g);
    /* polls for the refusal itself; the pause between tries only keeps the
     * number of extra items small */
    for (int64_t until = mono_ms() + 10000;;) {
        int rc = pool_submit(pr->p, count_work, count_done, pr->c, NULL);
        if (rc == -ESHUTDOWN)
            break;
        if (rc == 0)
            atomic_fetch_add(&pr->extra, 1);
        if (mono_ms() > until) {
            atomic_store(&pr->gave_up, true);
            break;
        }
        usleep(200);
    }
}

static void probe_done(void *ud, int status)
{
    gate_done(&((probe *)ud)->g, status);
}

Test(pool, free_cancels_pending_items, .timeout = 30)
{
    enum { N = 1000 };
    reactor_t *r = reactor_new();
    counters c;
    counters_init(&c);
    probe pr = {.p = pool_new(r, 1), .c = &c};
    cr_assert(pr.p != NULL);
    gate_init(&pr.g);
    atomic_init(&pr.extra, 0);
    atomic_init(&pr.gave_up, false);
    cr_assert(eq(int, pool_submit(pr.p, probe_work, probe_done, &pr, NULL), 0));
    for (int i = 0; i < N; i++)
        cr_assert(eq(int, pool_submit(pr.p, count_work, count_done, &c, NULL), 0));
    gate_wait_entered(&pr.g);
    pool_free(pr.p);
    cr_assert(eq(int, atomic_load(&pr.gave_up) ? 1 : 0, 0), "pool_free did not refuse submits within 10 s");
    int extra = atomic_load(&pr.extra);
    cr_assert(eq(int, pr.g.done_calls, 1));
    cr_assert(eq(int, pr.g.done_status, 0), "the running item finished");
    cr_assert(eq(int, c.done_cancelled, N + extra));
    cr_assert(eq(int, c.done_ok + c.done_other, 0));
    cr_assert(eq(int, atomic_load(&c.work_ran), 0));
    cr_assert(eq(int, c.done_off_reactor_thread, 0));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "nothing left behind in the reactor");
    reactor_free(r);
    gate_destroy(&pr.g);
}

/* Finished items whose done has not been delivered yet get it from
 * pool_free, with status 0; a done_fn that submits more work then is
 * refused. */
typedef struct resubmit {
    pool_t *p;
    counters *c;
    int refused, other;
} resubmit;

static void resubmit_done(void *ud, int status)
{
    resubmit *rs = ud;
    count_done(rs->c, status);
    int rc = pool_submit(rs->p, count_work, count_done, rs->c, NULL);
    if (rc == -ESHUTDOWN)
        rs->refused++;
    else
        rs->other++;
}

static void resubmit_work(void *ud)
{
    count_work(((resubmit *)ud)->c);
}

Test(pool, free_delivers_finished_items, .timeout = 30)
{
    enum { N = 100 };
    reactor_t *r = reactor_new();
    counters c;
    counters_init(&c);
    resubmit rs = {.p = pool_new(r, 2), .c = &c};
    cr_assert(rs.p != NULL);
    for (int i = 0; i < N; i++)
        cr_assert(eq(int, pool_submit(rs.p, resubmit_work, resubmit_done, &rs, NULL), 0));
    /* waits for the work itself; nothing can be delivered meanwhile, however
     * long it takes, since deliveries run only inside reactor_run*, which
     * this test has not called */
    for (int64_t until = mono_ms() + 10000; atomic_load(&c.work_ran) < N;) {
        cr_assert(lt(i64, mono_ms(), until), "%d of %d items ran within 10 s", atomic_load(&c.work_ran), N);
        usleep(1000);
    }
    cr_assert(eq(int, counters_done(&c), 0));
    pool_free(rs.p);
    cr_assert(eq(int, c.done_ok, N));
    cr_assert(eq(int, rs.refused, N));
    cr_assert(eq(int, rs.other, 0));
    cr_assert(eq(int, c.done_off_reactor_thread, 0));
    /* The pool's delivery post was queued; it must be gone with the pool. */
    cr_assert(eq(int, reactor_run_once(r, 0), 0));
    reactor_free(r);
}

Test(pool, free_idle_and_null, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 3);
    cr_assert(p != NULL);
    pool_free(p);
    pool_free(NULL);
    reactor_free(r);
}

/* ---- submitting from work and done callbacks */

typedef struct chain {
    pool_t *p;
    counters *c;
    int remaining;
    atomic_int nested_failures;
} chain;

/* Each work item submits one plain item from the worker thread; each done
 * submits the next link from the reactor thread. */
static void chain_work(void *ud)
{
    chain *ch = ud;
    if (pool_submit(ch->p, count_work, count_done, ch->c, NULL) != 0)
        atomic_fetch_add(&ch->nested_failures, 1);
}

static void chain_done(void *ud, int status)
{
    chain *ch = ud;
    count_done(ch->c, status);
    if (--ch->remaining > 0)
        cr_assert(eq(int, pool_submit(ch->p, chain_work, chain_done, ch, NULL), 0));
}

Test(pool, submit_from_work_and_from_done, .timeout = 30)
{
    enum { LINKS = 200 };
    reactor_t *r = reactor_new();
    counters c;
    counters_init(&c);
    chain ch = {.p = pool_new(r, 2), .c = &c, .remaining = LINKS};
    cr_assert(ch.p != NULL);
    atomic_init(&ch.nested_failures, 0);
    cr_assert(eq(int, pool_submit(ch.p, chain_work, chain_done, &ch, NULL), 0));
    run_until_done(r, &c, 2 * LINKS);
    cr_assert(eq(int, ch.remaining, 0));
    cr_assert(eq(int, c.done_ok, 2 * LINKS));
    cr_assert(eq(int, atomic_load(&c.work_ran), LINKS));
    cr_assert(eq(int, atomic_load(&ch.nested_failures), 0));
    pool_free(ch.p);
    reactor_free(r);
}

/* ---- construction */

Test(pool, zero_threads_means_one_per_core, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 0);
    cr_assert(p != NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert(eq(int, pool_nthreads(p), cores < 1 ? 1 : (int)cores));
    counters c;
    counters_init(&c);
    for (int i = 0; i < 1000; i++)
        cr_assert(eq(int, pool_submit(p, count_work, count_done, &c, NULL), 0));
    run_until_done(r, &c, 1000);
    pool_free(p);
    reactor_free(r);
}

Test(pool, bad_arguments, .timeout = 30)
{
    reactor_t *r = reactor_new();
    errno = 0;
    cr_assert(pool_new(r, -1) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    errno = 0;
    cr_assert(pool_new(NULL, 1) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    cr_assert(pool_new(r, 1 << 20) == NULL);
    pool_t *p = pool_new(r, 1);
    counters c;
    counters_init(&c);
    cr_assert(eq(int, pool_submit(p, NULL, count_done, &c, NULL), -EINVAL));
    cr_assert(eq(int, pool_submit(p, count_work, NULL, &c, NULL), -EINVAL));
    cr_assert(eq(int, pool_submit(NULL, count_work, count_done, &c, NULL), -EINVAL));
    cr_assert(eq(int, pool_cancel(p, NULL), -EINVAL));
    pool_free(p);
    reactor_free(r);
}

/* ---- pool_stop */

static void collect_label(void *ud, const char *label)
{
    char *out = ud;
    snprintf(out, 64, "%s", label ? label : "(none)");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A worker stuck in its work_fn is reported by label and abandoned once the
 * timeout has passed, and pool_stop returns then, not when the work ends. */
Test(pool, stop_abandons_a_stuck_worker_after_the_timeout, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 1);
    cr_assert(p != NULL);
    gate g;
    gate_init(&g);
    pool_work_t *h;
    cr_assert(eq(int, pool_submit(p, gate_work, gate_done, &g, &h), 0));
    pool_label(p, h, "stuck item");
    gate_wait_entered(&g);
    char label[64] = "";
    int64_t t0 = now_ms();
    cr_assert(eq(int, pool_stop(p, 100, collect_label, label), 1));
    int64_t waited = now_ms() - t0;
    cr_assert(waited >= 100, "returned after %lld ms", (long long)waited);
    cr_assert(eq(str, label, "stuck item"));
    cr_assert(eq(int, pool_submit(p, gate_work, gate_done, &g, NULL), -ESHUTDOWN));
    /* the test can take the worker back; loomd could not */
    gate_open(&g);
    pool_free(p);
    cr_assert(eq(int, g.done_calls, 1));
    gate_destroy(&g);
    reactor_free(r);
}

/* Idle workers quit at once: pool_stop returns 0, and pool_free after it
 * still cancels what never started. */
Test(pool, stop_of_idle_workers_returns_zero, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pool_t *p = pool_new(r, 3);
    cr_assert(p != NULL);
    char label[64] = "";
    cr_assert(eq(int, pool_stop(p, 10000, collect_label, label), 0));
    cr_assert(eq(str, label, ""));
    pool_free(p);
    reactor_free(r);
}
