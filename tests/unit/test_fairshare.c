/* test_fairshare.c -- tenants' fair shares: the job queue's deficit round
 * robin (daemon/jobs/jobs_queue.c) and the provider limiter's
 * (daemon/upstream/ratelimit.c).
 *
 * The bounds are DRR's own: with every flow backlogged, a flow's service
 * after any number of grants differs from its weighted share by at most one
 * turn's worth (its quantum, in units of what it is charged) plus one unit
 * of credit carried over; that is what each check allows, no more. The
 * limiter runs on an injected clock (as in test_ratelimit.c), so nothing
 * sleeps. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/upstream/ratelimit.h"

/* a plain condition for cr_assert (which wants a criterion or a call) */
static bool truth(bool b)
{
    return b;
}

/* ---- the job queue */

typedef struct qenv {
    jobs_t js;
    ljob *jobs[4096];
    size_t n;
} qenv;

static void qsetup(qenv *q)
{
    memset(q, 0, sizeof *q);
    list_init(&q->js.tenants);
    list_init(&q->js.active);
    list_init(&q->js.running);
}

static void qteardown(qenv *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->jobs[i]);
    jobs_tenants_free(&q->js);
}

static ljob *qpush(qenv *q, const char *tenant, int64_t priority)
{
    cr_assert(lt(sz, q->n, sizeof q->jobs / sizeof *q->jobs));
    ljob *j = calloc(1, sizeof *j);
    cr_assert(not(eq(ptr, j, NULL)));
    j->js = &q->js;
    snprintf(j->id, sizeof j->id, "%zu", q->n);
    j->tenant = jobs_tenant_get(&q->js, tenant);
    cr_assert(not(eq(ptr, j->tenant, NULL)));
    j->priority = priority;
    j->seq = q->js.seq++;
    cr_assert(eq(int, jobs_queue_push(&q->js, j), 0));
    q->jobs[q->n++] = j;
    return j;
}

/* Starts the next job as jobs_pump does (no job ends): its tenant's name,
 * or NULL when none may start. */
static ljob *qstart(qenv *q)
{
    ljob *j = jobs_queue_next(&q->js);
    if (!j)
        return NULL;
    jobs_queue_take(&q->js, j);
    j->state = LJ_RUNNING;
    j->tenant->nrunning++;
    return j;
}

static void qend(ljob *j)
{
    j->tenant->nrunning--;
}

Test(jobqueue, one_tenant_is_priority_then_fifo)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    ljob *a = qpush(q, NULL, 0), *b = qpush(q, NULL, 5), *c = qpush(q, NULL, 0),
         *d = qpush(q, NULL, 5);
    cr_assert(eq(ptr, qstart(q), b));
    cr_assert(eq(ptr, qstart(q), d));
    cr_assert(eq(ptr, qstart(q), a));
    cr_assert(eq(ptr, qstart(q), c));
    cr_assert(eq(ptr, qstart(q), NULL));
    cr_assert(eq(sz, q->js.nqueue, 0));
    qteardown(q);
    free(q);
}

Test(jobqueue, starts_follow_weights_under_contention)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    cr_assert(eq(int, jobs_tenant_set(&q->js, "a", 1, 0, 0), 0));
    cr_assert(eq(int, jobs_tenant_set(&q->js, "b", 3, 0, 0), 0));
    for (int i = 0; i < 1000; i++) {
        qpush(q, "a", 0);
        qpush(q, "b", 0);
    }
    /* a job is one unit of credit: a turn is `weight` starts, so after any
     * number of starts each tenant is within weight + 1 of its share */
    int got_a = 0, got_b = 0;
    for (int n = 1; n <= 1000; n++) {
        ljob *j = qstart(q);
        cr_assert(not(eq(ptr, j, NULL)));
        if (strcmp(j->tenant->name, "a") == 0)
            got_a++;
        else
            got_b++;
        double share_a = n * 1.0 / 4, share_b = n * 3.0 / 4;
        cr_assert(truth(got_a - share_a <= 2.0 && got_a - share_a >= -2.0),
                  "after %d starts a has %d, its share %.2f", n, got_a, share_a);
        cr_assert(truth(got_b - share_b <= 4.0 && got_b - share_b >= -4.0),
                  "after %d starts b has %d, its share %.2f", n, got_b, share_b);
    }
    qteardown(q);
    free(q);
}

Test(jobqueue, a_late_tenant_starts_within_one_turn)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    cr_assert(eq(int, jobs_tenant_set(&q->js, "a", 4, 0, 0), 0));
    for (int i = 0; i < 2000; i++)
        qpush(q, "a", 1000); /* high priority does not cross tenants */
    for (int i = 0; i < 37; i++) /* in the middle of a's turn */
        cr_assert(eq(str, qstart(q)->tenant->name, "a"));
    ljob *b = qpush(q, "b", -5);
    /* b waits for the rest of a's turn at most: 4 starts */
    int before = 0;
    ljob *j;
    while ((j = qstart(q)) != b) {
        cr_assert(not(eq(ptr, j, NULL)));
        before++;
    }
    cr_assert(le(int, before, 4), "%d of a's jobs started before b's", before);
    qteardown(q);
    free(q);
}

Test(jobqueue, a_tenant_alone_takes_every_start)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    cr_assert(eq(int, jobs_tenant_set(&q->js, "a", 1, 0, 0), 0));
    cr_assert(eq(int, jobs_tenant_set(&q->js, "b", 9, 0, 0), 0));
    for (int i = 0; i < 100; i++)
        qpush(q, "a", 0);
    for (int i = 0; i < 100; i++) /* b's weight holds nothing back while b is quiet */
        cr_assert(eq(str, qstart(q)->tenant->name, "a"));
    cr_assert(eq(ptr, qstart(q), NULL));
    qteardown(q);
    free(q);
}

Test(jobqueue, max_running_per_tenant)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    cr_assert(eq(int, jobs_tenant_set(&q->js, "a", 5, 2, 0), 0));
    for (int i = 0; i < 10; i++)
        qpush(q, "a", 0);
    for (int i = 0; i < 3; i++)
        qpush(q, "b", 0);
    ljob *a1 = NULL;
    int a = 0, b = 0;
    for (ljob *j; (j = qstart(q));) {
        if (strcmp(j->tenant->name, "a") == 0) {
            a1 = a1 ? a1 : j;
            a++;
        } else {
            b++;
        }
    }
    cr_assert(eq(int, a, 2), "a is held at its max_running");
    cr_assert(eq(int, b, 3), "b is not held back by a's limit");
    qend(a1); /* one of a's jobs ends: one more may start */
    ljob *j = qstart(q);
    cr_assert(not(eq(ptr, j, NULL)));
    cr_assert(eq(str, j->tenant->name, "a"));
    cr_assert(eq(ptr, qstart(q), NULL));
    qteardown(q);
    free(q);
}

Test(jobqueue, cancel_leaves_the_rotation_consistent)
{
    qenv *q = malloc(sizeof *q);
    qsetup(q);
    ljob *a = qpush(q, "a", 0);
    ljob *b1 = qpush(q, "b", 0), *b2 = qpush(q, "b", 0);
    jobs_queue_remove(&q->js, a); /* a's only job: a leaves the rotation */
    cr_assert(eq(ptr, qstart(q), b1));
    jobs_queue_remove(&q->js, b2);
    cr_assert(eq(ptr, qstart(q), NULL));
    cr_assert(truth(list_empty(&q->js.active)));
    json_t *st = jobs_tenants_json(&q->js, NULL);
    cr_assert(eq(int, (int)json_integer_value(json_object_get(json_object_get(st, "b"),
                                                              "running")), 1));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(json_object_get(st, "a"),
                                                              "queued")), 0));
    json_decref(st);
    qteardown(q);
    free(q);
}

/* ---- the provider limiter */

/* How far DRR lets a flow of WEIGHT with calls of SIZE tokens run ahead of
 * (or behind) its share, in calls: a turn's credit plus a call of credit
 * carried over, rounded up, and the call being granted. */
static int drr_slack(int64_t weight, int64_t size)
{
    return (int)((RL_DRR_QUANTUM * weight + size + size - 1) / size) + 1;
}

#define MAXT 4096

typedef struct lenv lenv;
typedef struct ltk {
    lenv *e;
    int flow;                  /* 0: a, 1: b */
    int64_t size;
    rl_ticket *t;
    bool granted;
} ltk;

struct lenv {
    reactor_t *r;
    rl_t *rl;
    uint64_t now_us;
    ltk tk[MAXT];
    int n;
    int order[MAXT], norder;   /* ticket indexes in grant order */
};

static uint64_t lclock(void *ud)
{
    return ((lenv *)ud)->now_us;
}

static void lgrant(rl_ticket *t, void *ud)
{
    ltk *k = ud;
    (void)t;
    k->granted = true;
    k->e->order[k->e->norder++] = (int)(k - k->e->tk);
}

static lenv *lsetup(rl_limits lim)
{
    lenv *e = calloc(1, sizeof *e);
    cr_assert(not(eq(ptr, e, NULL)));
    e->now_us = 1000 * REACTOR_SEC;
    e->r = reactor_new();
    e->rl = rl_new(e->r, &lim);
    cr_assert(not(eq(ptr, e->rl, NULL)));
    rl_set_clock(e->rl, lclock, e);
    return e;
}

static void lteardown(lenv *e)
{
    rl_free(e->rl);
    reactor_free(e->r);
    free(e);
}

/* Delivers grants, and ends each granted call at once (its slot back), so
 * that only the rates limit what is granted. */
static void ldrain(lenv *e)
{
    for (int i = 0; i < 4; i++)
        cr_assert(ge(int, reactor_run_once(e->r, 0), 0));
    for (int i = 0; i < e->n; i++)
        if (e->tk[i].granted && e->tk[i].t) {
            rl_release(e->tk[i].t, NULL);
            e->tk[i].t = NULL;
        }
    for (int i = 0; i < 4; i++)
        cr_assert(ge(int, reactor_run_once(e->r, 0), 0));
}

static void lstep(lenv *e, uint64_t ms)
{
    e->now_us += ms * REACTOR_MSEC;
    rl_kick(e->rl);
    ldrain(e);
}

static ltk *lacq(lenv *e, int flow, int64_t weight, int64_t tokens)
{
    cr_assert(lt(int, e->n, MAXT));
    ltk *k = &e->tk[e->n++];
    k->e = e;
    k->flow = flow;
    k->size = tokens;
    rl_cost c = { .requests = 1, .est_input_tokens = tokens };
    k->t = rl_acquire_for(e->rl, &c, flow ? "b" : "a", weight, lgrant, k);
    cr_assert(not(eq(ptr, k->t, NULL)));
    return k;
}

/* Grants so far per flow: COUNT[flow] and TOKENS[flow]. */
static void ltally(const lenv *e, int upto, int count[2], int64_t tokens[2])
{
    count[0] = count[1] = 0;
    tokens[0] = tokens[1] = 0;
    for (int i = 0; i < upto && i < e->norder; i++) {
        const ltk *k = &e->tk[e->order[i]];
        count[k->flow]++;
        tokens[k->flow] += k->size;
    }
}

Test(limiter_drr, rpm_shared_by_weight_under_contention)
{
    lenv *e = lsetup((rl_limits){ .rpm = 600 });
    for (int i = 0; i < 600; i++) {
        lacq(e, 0, 1, 100);
        lacq(e, 1, 3, 100);
    }
    ldrain(e);
    for (int s = 0; s < 100 && e->norder < 800; s++)
        lstep(e, 1000);
    cr_assert(ge(int, e->norder, 800));
    /* the rate is the provider's, whoever gets it: 9 at once, then 10/s */
    int count[2];
    int64_t tokens[2];
    for (int n = 1; n <= 800; n++) {
        ltally(e, n, count, tokens);
        cr_assert(le(int, abs(count[0] - n / 4), drr_slack(1, 100)), "after %d grants a has %d",
                  n, count[0]);
        cr_assert(le(int, abs(count[1] - 3 * n / 4), drr_slack(3, 100)),
                  "after %d grants b has %d", n, count[1]);
    }
    lteardown(e);
}

Test(limiter_drr, the_rate_is_the_providers_whoever_asks)
{
    lenv *e = lsetup((rl_limits){ .rpm = 600 });
    for (int i = 0; i < 300; i++) {
        lacq(e, 0, 1, 100);
        lacq(e, 1, 1, 100);
    }
    ldrain(e);
    cr_assert(eq(int, e->norder, 9), "the burst, shared: not one per tenant");
    lstep(e, 10000);
    /* 10 s at 10/s after the burst, and the tenants took turns */
    cr_assert(le(int, e->norder, 9 + 100 + 1));
    lteardown(e);
}

Test(limiter_drr, a_quiet_tenants_share_is_borrowed)
{
    lenv *e = lsetup((rl_limits){ .rpm = 600 });
    for (int i = 0; i < 400; i++)
        lacq(e, 0, 1, 100); /* a alone, weight 1; b (weight 9) says nothing */
    ldrain(e);
    for (int s = 0; s < 200; s++)
        lstep(e, 100);
    /* exactly what one FIFO would grant: the burst, then 10 a second */
    cr_assert(eq(int, e->norder, 9 + 200));
    /* b wakes up: from its first ticket on, it gets 9 of every 10 */
    int before = e->norder;
    for (int i = 0; i < 200; i++)
        lacq(e, 1, 9, 100);
    for (int s = 0; s < 200; s++)
        lstep(e, 100);
    int count[2];
    int64_t tokens[2], base[2];
    int basec[2];
    ltally(e, before, basec, base);
    ltally(e, e->norder, count, tokens);
    int got_b = count[1] - basec[1], all = e->norder - before;
    cr_assert(ge(int, all, 199));
    cr_assert(ge(int, got_b, all * 9 / 10 - drr_slack(9, 100)), "b got %d of %d", got_b, all);
    lteardown(e);
}

Test(limiter_drr, calls_are_weighted_by_tokens)
{
    /* a's calls are 25 times b's: equal weights share tokens, not calls */
    lenv *e = lsetup((rl_limits){ .tpm = 600000 });
    rl_pause(e->rl, 1); /* nothing granted until both are queued */
    for (int i = 0; i < 200; i++)
        lacq(e, 0, 1, 2500);
    for (int i = 0; i < 2000; i++)
        lacq(e, 1, 1, 100);
    ldrain(e);
    /* 20 s at 10,000 tokens/s: both stay backlogged (500,000 and 200,000) */
    for (int s = 0; s < 200; s++)
        lstep(e, 100);
    int count[2];
    int64_t tokens[2];
    ltally(e, e->norder, count, tokens);
    cr_assert(lt(int, count[1], 2000), "b ran out: the window is too long to compare");
    cr_assert(gt(int, count[0], 0));
    cr_assert(gt(int, count[1], 0));
    /* over the window each has within a turn's credit plus the largest
     * call (a's, 2500 tokens) of the other */
    int64_t diff = tokens[0] - tokens[1];
    cr_assert(le(i64, diff < 0 ? -diff : diff, RL_DRR_QUANTUM + 2500),
              "a got %lld tokens, b %lld", (long long)tokens[0], (long long)tokens[1]);
    lteardown(e);
}

Test(limiter_drr, calls_larger_than_a_turn_still_share_tokens)
{
    /* every call is far bigger than a turn's credit: the rounds that grant
     * nothing are skipped at once */
    lenv *e = lsetup((rl_limits){ .tpm = 600000 });
    rl_pause(e->rl, 1); /* nothing granted until both are queued */
    for (int i = 0; i < 100; i++) {
        lacq(e, 0, 1, 7000);
        lacq(e, 1, 2, 5000);
    }
    ldrain(e);
    for (int s = 0; s < 200; s++)
        lstep(e, 100);
    int count[2];
    int64_t tokens[2];
    ltally(e, e->norder, count, tokens);
    cr_assert(lt(int, count[0], 100));
    cr_assert(lt(int, count[1], 100), "both stay backlogged over the window");
    /* b's tokens are twice a's, within a turn and the larger call, both
     * counted at b's weight */
    int64_t diff = tokens[1] - 2 * tokens[0];
    cr_assert(le(i64, diff < 0 ? -diff : diff, 2 * (RL_DRR_QUANTUM + 7000)),
              "a got %lld tokens, b %lld", (long long)tokens[0], (long long)tokens[1]);
    lteardown(e);
}

Test(limiter_drr, a_pause_stops_every_tenant)
{
    lenv *e = lsetup((rl_limits){ .rpm = 600 });
    rl_pause(e->rl, 2000);
    for (int i = 0; i < 10; i++) {
        lacq(e, 0, 1, 100);
        lacq(e, 1, 5, 100);
    }
    ldrain(e);
    lstep(e, 1999);
    cr_assert(eq(int, e->norder, 0));
    lstep(e, 1);
    cr_assert(gt(int, e->norder, 0));
    lteardown(e);
}

Test(limiter_drr, cancelling_the_next_ticket_serves_the_one_after)
{
    lenv *e = lsetup((rl_limits){ .rpm = 60 }); /* a burst of 0.9 s: one call */
    ltk *first = lacq(e, 0, 1, 100);
    ldrain(e);
    cr_assert(truth(first->granted));
    ltk *a = lacq(e, 0, 1, 100), *b = lacq(e, 1, 1, 100);
    ldrain(e);
    cr_assert(truth(!a->granted));
    rl_cancel(a->t); /* the one waiting for the bucket */
    a->t = NULL;
    lstep(e, 1000);
    cr_assert(truth(b->granted));
    rl_stats_t st;
    rl_stats(e->rl, &st);
    cr_assert(eq(i64, st.queued, 0));
    lteardown(e);
}
