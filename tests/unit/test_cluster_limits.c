/* test_cluster_limits.c -- one provider's limits shared by three daemons
 * through a real PostgreSQL (tests/unit/pgtest.h).
 *
 * Three cluster_limits_t (nodes n1, n2, n3) run on one reactor, each with
 * its own limiter for provider "p" configured with the same limits, each
 * with far more demand than the limit: every grant is logged with its time
 * and another call is asked for at once. The calls admitted, all nodes
 * together, must be what a provider enforcing the same limits as a GCRA
 * with one second of burst (tests/fake/README.md "--rpm/--tpm") answers
 * without a 429, and at least 97% of the configured rate.
 *
 * Figures: rpm 6,000 is 100 calls a second (T = 10 ms); the provider's
 * GCRA lets through at most 100 + 100 calls in any one second (a full
 * bucket of one second's burst, then the rate). The shared bucket's
 * tolerance is 1 s - 100 ms - the 250 ms window = 650 ms, so over a run of D
 * seconds the three nodes may be granted at most 100 D + 65 calls, and the
 * test asks for at least 97 D (97% of the rate: the burst is not counted,
 * the run being short).
 *
 * Nothing sleeps: the reactor runs under a deadline, and events (a pause
 * reaching the other nodes, the connection going and coming back) are
 * waited for by running it until they are seen. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/cluster/cluster_limits.h"
#include "tests/unit/pgtest.h"

#define NNODES 3
#define WINDOW_MS 250
#define MARGIN_MS 100

typedef struct node node;
typedef struct world world;

typedef struct call {
    node *n;
    rl_ticket *t;
    reactor_timer_t *tm;
} call;

struct node {
    world *w;
    int id;
    cluster_limits_t *cl;
    rl_t *rl;
    uint64_t *adm; /* admission times, us on CLOCK_MONOTONIC */
    size_t nadm, capadm;
    int64_t queued; /* asked, not yet granted */
    int64_t running;
};

struct world {
    reactor_t *r;
    log_sink log;
    char *uri;
    rl_limits lim;
    node n[NNODES];
    /* how a granted call ends: 0: released at once; else after HOLD_US */
    uint64_t hold_us;
    /* what a call really used (NULL: its estimate, 10 + 10 tokens) */
    const rl_usage *usage;
    int64_t running, max_running; /* over the three nodes */
    int64_t depth;                /* calls each node keeps asked for */
    bool stop;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void ask(node *n);

static void end_call(reactor_t *r, reactor_timer_t *tm, void *ud)
{
    (void)r;
    (void)tm;
    call *c = ud;
    c->n->running--;
    c->n->w->running--;
    rl_release(c->t, c->n->w->usage);
    free(c);
}

static void granted(rl_ticket *t, void *ud)
{
    node *n = ud;
    world *w = n->w;
    if (n->nadm == n->capadm) {
        n->capadm = n->capadm ? 2 * n->capadm : 4096;
        n->adm = realloc(n->adm, n->capadm * sizeof *n->adm);
        cr_assert(n->adm);
    }
    n->adm[n->nadm++] = now_us();
    n->queued--;
    n->running++;
    if (++w->running > w->max_running)
        w->max_running = w->running;
    call *c = calloc(1, sizeof *c);
    cr_assert(c);
    c->n = n;
    c->t = t;
    if (w->hold_us) {
        c->tm = reactor_timer_add(w->r, w->hold_us, end_call, c);
        cr_assert(c->tm);
    } else {
        end_call(w->r, NULL, c);
    }
    if (!w->stop)
        ask(n);
}

/* Keeps N's queue DEPTH deep. */
static void ask(node *n)
{
    rl_cost cost = {.requests = 1, .est_input_tokens = 10, .est_output_tokens = 10};
    while (n->queued < n->w->depth) {
        cr_assert(rl_acquire(n->rl, &cost, granted, n));
        n->queued++;
    }
}

static void world_init(world *w, const rl_limits *lim, int64_t depth)
{
    memset(w, 0, sizeof *w);
    if (!pgtest_admin_uri())
        cr_skip_test("no PostgreSQL could be started (see above)");
    w->uri = pgtest_fresh_db("limits");
    cr_assert(w->uri);
    /* the limits' part of the store's schema (migration step 1) */
    cr_assert_eq(pgtest_exec(w->uri, CLUSTER_LIMITS_SCHEMA), 0);
    w->r = reactor_new();
    cr_assert(w->r);
    w->log = (log_sink){.level = LOOM_LOG_WARN, .fd = 2};
    w->lim = *lim;
    w->depth = depth;
    for (int i = 0; i < NNODES; i++) {
        node *n = &w->n[i];
        char name[16];
        snprintf(name, sizeof name, "n%d", i + 1);
        n->w = w;
        n->id = i;
        cluster_limits_options o = {.conninfo = w->uri, .node = name, .window_ms = WINDOW_MS};
        n->cl = cluster_limits_new(w->r, &w->log, &o);
        cr_assert(n->cl, "cluster_limits_new: %s", strerror(errno));
        n->rl = rl_new(w->r, lim);
        cr_assert(n->rl);
        cr_assert_eq(cluster_limits_attach(n->cl, "p", n->rl, lim), 0);
    }
}

static void world_free(world *w)
{
    w->stop = true;
    /* the calls still running end (each within hold_us) */
    uint64_t until = now_us() + 5000000;
    while (w->running > 0 && now_us() < until)
        reactor_run_once(w->r, 5);
    for (int i = 0; i < NNODES; i++) {
        node *n = &w->n[i];
        cluster_limits_free(n->cl);
        rl_free(n->rl);
        free(n->adm);
    }
    reactor_free(w->r);
    (void)pgtest_drop_db(w->uri);
    free(w->uri);
}

/* Runs the reactor until UNTIL (us) or until DONE(W) says so. */
static void run_until(world *w, uint64_t until, bool (*done)(world *))
{
    while (now_us() < until && !(done && done(w))) {
        uint64_t left = (until - now_us()) / 1000 + 1;
        reactor_run_once(w->r, left < 5 ? (int)left : 5);
    }
}

static bool all_connected(world *w)
{
    for (int i = 0; i < NNODES; i++) {
        cluster_limits_stats s;
        cluster_limits_get_stats(w->n[i].cl, &s);
        if (!s.connected)
            return false;
    }
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Every node's admissions, sorted, in *OUT (malloc'd); their count. */
static size_t merged(world *w, uint64_t **out)
{
    size_t k = 0;
    for (int i = 0; i < NNODES; i++)
        k += w->n[i].nadm;
    uint64_t *a = malloc((k ? k : 1) * sizeof *a);
    cr_assert(a);
    k = 0;
    for (int i = 0; i < NNODES; i++) {
        if (w->n[i].nadm)
            memcpy(a + k, w->n[i].adm, w->n[i].nadm * sizeof *a);
        k += w->n[i].nadm;
    }
    qsort(a, k, sizeof *a, cmp_u64);
    *out = a;
    return k;
}

/* The calls of A (N, sorted) a GCRA of PER_MIN a minute and a burst of
 * TOLERANCE_US would refuse (the fake's arithmetic, in integers). */
static size_t gcra_refusals(const uint64_t *a, size_t n, int64_t per_min, int64_t tolerance_us)
{
    double T = 60e6 / (double)per_min, tat = 0;
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        double t = (double)a[i], x = tat > t ? tat : t;
        if (x + T - t > (double)tolerance_us + 1e-3) {
            refused++;
            continue;
        }
        tat = x + T;
    }
    return refused;
}

/* The most calls of A (N, sorted) in any span of SPAN_US starting at a call. */
static size_t max_in_span(const uint64_t *a, size_t n, uint64_t span_us)
{
    size_t best = 0, j = 0;
    for (size_t i = 0; i < n; i++) {
        while (j < n && a[j] < a[i] + span_us)
            j++;
        if (j - i > best)
            best = j - i;
    }
    return best;
}

static size_t count_between(const uint64_t *a, size_t n, uint64_t from, uint64_t to)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += a[i] >= from && a[i] < to;
    return k;
}

/* The rate: three nodes saturating one bucket for RUN_S seconds. */
Test(cluster_limits, rate_holds_across_three_nodes, .timeout = 120)
{
    rl_limits lim = {.rpm = 6000};
    world w;
    world_init(&w, &lim, 50);
    uint64_t t0 = now_us();
    run_until(&w, t0 + 10000000, all_connected);
    cr_assert(all_connected(&w), "the three nodes did not connect within 10 s");
    const uint64_t RUN_US = 10000000;
    uint64_t start = now_us();
    for (int i = 0; i < NNODES; i++)
        ask(&w.n[i]);
    run_until(&w, start + RUN_US, NULL);
    uint64_t end = now_us();
    w.stop = true;
    uint64_t *a;
    size_t n = merged(&w, &a);
    double per_s = (double)lim.rpm / 60.0;
    double span_s = (double)(end - start) / 1e6;
    size_t refused = gcra_refusals(a, n, lim.rpm, 1000000);
    size_t refused_09 = gcra_refusals(a, n, lim.rpm, 1000000 - MARGIN_MS * 1000);
    size_t peak = max_in_span(a, n, 1000000);
    uint64_t leases = 0, returns = 0, denied = 0, calls = 0;
    for (int i = 0; i < NNODES; i++) {
        cluster_limits_stats s;
        cluster_limits_get_stats(w.n[i].cl, &s);
        leases += s.leases;
        returns += s.returns;
        denied += s.denied;
        calls += s.calls;
    }
    fprintf(stderr,
            "rate: %zu calls in %.2f s (%.1f/s, configured %.1f/s: %.1f%%; n1 %zu n2 %zu n3 "
            "%zu); peak in 1 s %zu (allowed %.0f); refused by a 1 s GCRA %zu, by a 0.9 s one "
            "%zu; %llu leases (%llu denied), %llu returns: %.3f round trips a call\n",
            n, span_s, (double)n / span_s, per_s, 100.0 * (double)n / (per_s * span_s),
            w.n[0].nadm, w.n[1].nadm, w.n[2].nadm, peak, 2 * per_s, refused, refused_09,
            (unsigned long long)leases, (unsigned long long)denied,
            (unsigned long long)returns, (double)(leases + returns) / (double)(calls ? calls : 1));
    cr_assert_eq(refused, 0, "%zu calls over what a 1 s GCRA at %.0f/s allows", refused, per_s);
    cr_assert(peak <= (size_t)(2 * per_s), "%zu calls in one second, over %.0f", peak, 2 * per_s);
    /* at most the rate plus the bucket's tolerance (650 ms of budget) */
    double most = per_s * span_s + per_s * (1000 - MARGIN_MS - WINDOW_MS) / 1000.0 + 1;
    cr_assert((double)n <= most, "%zu calls, more than %.0f", n, most);
    cr_assert((double)n >= 0.97 * per_s * span_s, "%zu calls, under 97%% of %.0f", n,
              per_s * span_s);
    for (int i = 0; i < NNODES; i++)
        cr_assert(w.n[i].nadm > 0, "n%d got nothing", i + 1);
    free(a);
    world_free(&w);
}

/* Tokens: tpm 60,000 is 1,000 tokens a second; a call is estimated at 20
 * (10 in, 10 out) and really uses 10 (5 + 5), which is what the provider
 * counts. Charged by the estimate, the three nodes make at most 50 calls a
 * second (plus a burst), the bucket giving back what the calls did not use
 * only as far as its floor allows (cluster_limits_schema.c); the provider
 * must never see more tokens than a 1 s GCRA at 1,000 a second allows, nor
 * more requests than rpm (6,000: never binding here), and the calls are at
 * least 97% of what the estimates allow. */
Test(cluster_limits, tokens_hold_across_three_nodes, .timeout = 120)
{
    rl_limits lim = {.rpm = 6000, .tpm = 60000};
    static const rl_usage used = {.input_tokens = 5, .output_tokens = 5};
    world w;
    world_init(&w, &lim, 50);
    w.usage = &used;
    uint64_t t0 = now_us();
    run_until(&w, t0 + 10000000, all_connected);
    cr_assert(all_connected(&w));
    const uint64_t RUN_US = 10000000;
    uint64_t start = now_us();
    for (int i = 0; i < NNODES; i++)
        ask(&w.n[i]);
    run_until(&w, start + RUN_US, NULL);
    uint64_t end = now_us();
    w.stop = true;
    uint64_t *a;
    size_t n = merged(&w, &a);
    double span_s = (double)(end - start) / 1e6;
    double est_per_s = (double)lim.tpm / 60.0 / 20.0, real_per_s = (double)lim.tpm / 60.0 / 10.0;
    /* 10 real tokens a call: the token GCRA is one of calls at tpm / 10 */
    size_t refused_tok = gcra_refusals(a, n, lim.tpm / 10, 1000000);
    size_t refused_req = gcra_refusals(a, n, lim.rpm, 1000000);
    fprintf(stderr, "tokens: %zu calls in %.2f s (%.1f/s; %.0f/s by the estimates, %.0f/s by "
            "the real use); refused by the provider's token GCRA %zu, request GCRA %zu\n",
            n, span_s, (double)n / span_s, est_per_s, real_per_s, refused_tok, refused_req);
    cr_assert_eq(refused_tok, 0, "%zu calls over the tokens a 1 s GCRA allows", refused_tok);
    cr_assert_eq(refused_req, 0, "%zu calls over the requests a 1 s GCRA allows", refused_req);
    cr_assert((double)n >= 0.97 * est_per_s * span_s, "%zu calls, under 97%% of %.0f", n,
              est_per_s * span_s);
    free(a);
    world_free(&w);
}

/* Concurrency: at most LIMIT calls in flight over the three nodes. */
Test(cluster_limits, concurrency_holds_across_three_nodes, .timeout = 120)
{
    rl_limits lim = {.concurrency = 4};
    world w;
    world_init(&w, &lim, 10);
    w.hold_us = 20000; /* each call lasts 20 ms */
    uint64_t t0 = now_us();
    run_until(&w, t0 + 10000000, all_connected);
    cr_assert(all_connected(&w));
    uint64_t start = now_us();
    for (int i = 0; i < NNODES; i++)
        ask(&w.n[i]);
    run_until(&w, start + 3000000, NULL);
    w.stop = true;
    uint64_t *a;
    size_t n = merged(&w, &a);
    fprintf(stderr, "concurrency: %zu calls of 20 ms in 3 s (n1 %zu n2 %zu n3 %zu), at most %lld "
            "at once (limit %lld; at most %.0f calls could end in 3 s)\n",
            n, w.n[0].nadm, w.n[1].nadm, w.n[2].nadm, (long long)w.max_running,
            (long long)lim.concurrency, 3.0 / 0.020 * (double)lim.concurrency);
    cr_assert(w.max_running <= lim.concurrency, "%lld in flight, over %lld",
              (long long)w.max_running, (long long)lim.concurrency);
    /* a node holding slots lets go of those over its share while another
     * has none: every node gets calls through */
    for (int i = 0; i < NNODES; i++)
        cr_assert(w.n[i].nadm > 0, "n%d never got a slot", i + 1);
    /* the slots go round: at least a quarter of what the limit allows */
    cr_assert(n >= (size_t)(3.0 / 0.020 * (double)lim.concurrency / 4), "only %zu calls", n);
    free(a);
    world_free(&w);
}

static bool paused_everywhere(world *w)
{
    for (int i = 1; i < NNODES; i++) {
        rl_stats_t s;
        rl_stats(w->n[i].rl, &s);
        if (!s.paused_until_us)
            return false;
    }
    return true;
}

/* A pause one node saw (a 429) reaches the others at once (NOTIFY). */
Test(cluster_limits, pause_reaches_every_node, .timeout = 120)
{
    rl_limits lim = {.rpm = 6000};
    world w;
    world_init(&w, &lim, 20);
    uint64_t t0 = now_us();
    run_until(&w, t0 + 10000000, all_connected);
    cr_assert(all_connected(&w));
    for (int i = 0; i < NNODES; i++)
        ask(&w.n[i]);
    run_until(&w, now_us() + 500000, NULL);
    const uint64_t PAUSE_MS = 2000;
    uint64_t paused_at = now_us();
    rl_pause(w.n[0].rl, PAUSE_MS);
    run_until(&w, paused_at + 1000000, paused_everywhere);
    uint64_t seen = now_us();
    cr_assert(paused_everywhere(&w), "the pause did not reach n2 and n3 within 1 s");
    fprintf(stderr, "pause: n2 and n3 paused %.1f ms after n1 saw it\n",
            (double)(seen - paused_at) / 1000.0);
    size_t before[NNODES];
    for (int i = 0; i < NNODES; i++)
        before[i] = w.n[i].nadm;
    /* from now on until the pause ends nobody is admitted: the leases held
     * are not spent either (the limiter is paused) */
    uint64_t quiet_until = paused_at + PAUSE_MS * 1000 - 50000;
    run_until(&w, quiet_until, NULL);
    for (int i = 0; i < NNODES; i++)
        cr_assert_eq(w.n[i].nadm, before[i], "n%d admitted %zu calls while paused", i + 1,
                     w.n[i].nadm - before[i]);
    /* and it resumes */
    run_until(&w, paused_at + PAUSE_MS * 1000 + 1000000, NULL);
    size_t after = 0;
    for (int i = 0; i < NNODES; i++)
        after += w.n[i].nadm - before[i];
    cr_assert(after > 0, "nothing admitted after the pause");
    world_free(&w);
}

/* The outage runs on threads (the calls block until pg_ctl is done) while
 * the reactor goes on. */
typedef struct outage {
    int rc;
    const char *uri; /* after the start: the admin URI, which must not change */
} outage;

static void *stop_thread(void *arg)
{
    ((outage *)arg)->rc = pgtest_stop_private();
    return NULL;
}

static void *start_thread(void *arg)
{
    outage *o = arg;
    o->uri = pgtest_private_cluster("limits");
    o->rc = o->uri ? 0 : -1;
    return NULL;
}

typedef struct conn_watch {
    uint64_t down[NNODES], up[NNODES];
    int ndown, nup;
} conn_watch;

/* One reactor pass (at most 1 ms) and a look at every node's connection. */
static void watch_pass(world *w, conn_watch *cw)
{
    reactor_run_once(w->r, 1);
    uint64_t t = now_us();
    for (int i = 0; i < NNODES; i++) {
        cluster_limits_stats s;
        cluster_limits_get_stats(w->n[i].cl, &s);
        if (!s.connected && !cw->down[i]) {
            cw->down[i] = t;
            cw->ndown++;
        }
        if (s.connected && cw->down[i] && !cw->up[i]) {
            cw->up[i] = t;
            cw->nup++;
        }
    }
}

/* PostgreSQL goes away under load for OUTAGE_US: while a node's connection
 * is down it spends only the leases it holds, and it resumes when the
 * connection is back. A lease asked for before the drop is spent at the
 * latest (1 + 2) windows after it was asked for (a deferred lease starts
 * up to two windows ahead, cluster_limits.c), so from the drop seen + 3
 * windows until the connection is seen back nothing may be admitted. The
 * outage is longer than the bucket can run ahead of now (its tolerance,
 * 650 ms, plus two windows), so the bucket is full when it ends: from the
 * first call after it, the rate is back at once. */
Test(cluster_limits, postgresql_outage_fails_closed, .timeout = 180)
{
    rl_limits lim = {.rpm = 6000};
    const uint64_t OUTAGE_US = 2000000, LEASE_SPAN_US = 3 * WINDOW_MS * 1000;
    world w;
    /* a cluster of its own: the tests beside it see no outage */
    const char *admin = pgtest_private_cluster("limits");
    if (!admin)
        cr_skip_test("no private PostgreSQL cluster could be started (see above)");
    char admin0[512];
    snprintf(admin0, sizeof admin0, "%s", admin);
    world_init(&w, &lim, 50);
    uint64_t t0 = now_us();
    run_until(&w, t0 + 10000000, all_connected);
    cr_assert(all_connected(&w));
    uint64_t start = now_us();
    for (int i = 0; i < NNODES; i++)
        ask(&w.n[i]);
    run_until(&w, start + 2000000, NULL);
    conn_watch cw;
    memset(&cw, 0, sizeof cw);
    pthread_t th;
    outage o = {.rc = -1};
    cr_assert_eq(pthread_create(&th, NULL, stop_thread, &o), 0);
    uint64_t deadline = now_us() + 60000000;
    while (cw.ndown < NNODES && now_us() < deadline)
        watch_pass(&w, &cw);
    pthread_join(th, NULL);
    cr_assert_eq(o.rc, 0, "pgtest_stop_private failed");
    cr_assert_eq(cw.ndown, NNODES, "not every node saw PostgreSQL go");
    uint64_t last_down = 0;
    for (int i = 0; i < NNODES; i++)
        last_down = cw.down[i] > last_down ? cw.down[i] : last_down;
    while (now_us() < last_down + OUTAGE_US)
        watch_pass(&w, &cw);
    cr_assert_eq(pthread_create(&th, NULL, start_thread, &o), 0);
    deadline = now_us() + 90000000;
    while (cw.nup < NNODES && now_us() < deadline)
        watch_pass(&w, &cw);
    pthread_join(th, NULL);
    cr_assert_eq(o.rc, 0, "the private cluster did not start again");
    cr_assert_str_eq(o.uri, admin0, "PostgreSQL came back elsewhere");
    cr_assert_eq(cw.nup, NNODES, "not every node reconnected");
    uint64_t all_up = 0;
    for (int i = 0; i < NNODES; i++) {
        node *n = &w.n[i];
        /* a reactor pass of slack either side */
        uint64_t from = cw.down[i] + LEASE_SPAN_US + 20000, to = cw.up[i] - 20000;
        cr_assert(to > from + OUTAGE_US - LEASE_SPAN_US - 40000, "n%d: no outage to check", i + 1);
        size_t during = to > from ? count_between(n->adm, n->nadm, from, to) : 0;
        fprintf(stderr, "outage: n%d down %.0f ms (from %.3f s), %zu admitted past its leases\n",
                i + 1, (double)(cw.up[i] - cw.down[i]) / 1000.0,
                (double)(cw.down[i] - start) / 1e6, during);
        cr_assert_eq(during, 0, "n%d admitted %zu calls with no lease while down", i + 1, during);
        if (cw.up[i] > all_up)
            all_up = cw.up[i];
    }
    /* resumes: the first lease is asked for as the connection comes back
     * (a round trip to a server just started: 1 s is plenty), and from the
     * first call admitted the rate is back: 97% of it over the next 2 s */
    uint64_t *a;
    run_until(&w, all_up + 3000000, NULL);
    w.stop = true;
    size_t n = merged(&w, &a);
    double per_s = (double)lim.rpm / 60.0;
    uint64_t first = 0;
    for (size_t i = 0; i < n && !first; i++)
        if (a[i] >= all_up)
            first = a[i];
    cr_assert(first, "nothing admitted after the outage");
    size_t after = count_between(a, n, first, first + 2000000);
    fprintf(stderr, "outage: first call %.1f ms after every node was back, then %zu in 2 s "
            "(rate %.0f/s)\n", (double)(first - all_up) / 1000.0, after, per_s);
    cr_assert(first - all_up <= 1000000, "resumed only %.1f ms after the connections were back",
              (double)(first - all_up) / 1000.0);
    cr_assert(after >= (size_t)(0.97 * per_s * 2), "only %zu calls in the 2 s after", after);
    cr_assert_eq(gcra_refusals(a, n, lim.rpm, 1000000), 0, "over the limit across the outage");
    free(a);
    world_free(&w);
    (void)pgtest_stop_private();
}
