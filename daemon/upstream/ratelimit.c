/* ratelimit.c -- the per-provider rate limiter (see ratelimit.h).
 *
 * State per rate dimension is one GCRA timestamp (tat, the theoretical
 * arrival time, on the limiter's clock in microseconds). A cost C costs
 * C * T microseconds where T = 60 s / limit; the call fits at NOW when
 * max(tat, NOW) + C*T - tau <= NOW, tau being the burst tolerance. Everything
 * else (queue, timer, AIMD) is bookkeeping around that test.
 *
 * The queue is one FIFO per tenant (a "flow"), served by deficit round robin
 * (Shreedhar and Varghese): the flow at the front of the rotation gets
 * weight x RL_DRR_QUANTUM tokens more credit at the start of its turn, and its
 * head is the ticket to grant next while the credit covers it; one it
 * cannot cover ends the turn, the credit kept for the next. When a whole
 * round covers nobody's head, the rounds that would grant nothing are
 * skipped at once (each flow credited for them), so a pass costs at most two
 * rounds whatever the sizes. One flow alone is simply served in order. The
 * default flow lives in the limiter; other tenants' flows exist while they
 * have tickets queued. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm, strptime */
#endif

#include "common/containers.h"
#include "daemon/upstream/ratelimit.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Burst tolerance: one second of budget (see ratelimit.h for why), less a
 * margin for jitter: a server with the same one-second bucket sees our
 * requests after a variable delay, and two that travel closer together than
 * they were sent would find its bucket one short. 100 ms costs a tenth of
 * the first second's burst and nothing of the rate after it. */
#define RL_BURST_US ((int64_t)REACTOR_SEC - 100 * (int64_t)REACTOR_MSEC)
/* Larger costs are refused: no real call costs that much, and the
 * cost * 60e6 products below must not overflow. */
#define RL_MAX_COST INT64_C(100000000000)
#define RL_MINUTE_US INT64_C(60000000)
/* The furthest ahead of now a dimension's debt may run (about 35 years):
 * a bound that keeps every microsecond sum in range. */
#define RL_MAX_AHEAD_US (INT64_C(1) << 50)
/* The latency baseline is trusted only after this many samples. */
#define RL_BASELINE_MIN 5
#define RL_DECREASE_HOLDOFF_US ((int64_t)REACTOR_SEC)
/* A weight above this is taken as this: quantum x weight stays in range. */
#define RL_MAX_WEIGHT INT64_C(1000000)

enum { DIM_REQ, DIM_TOK, DIM_IN, DIM_OUT, DIM_N };

typedef struct rl_dim {
    int64_t limit; /* per minute; 0 = unlimited */
    int64_t tat;   /* theoretical arrival time, us */
} rl_dim;

typedef enum { T_QUEUED, T_GRANTED, T_DELIVERED } ticket_state;

typedef struct rl_flow rl_flow;

struct rl_ticket {
    rl_t *rl;
    list_link link;      /* in its flow's queue or rl->granted */
    rl_flow *flow;       /* while queued */
    ticket_state state;
    rl_cost cost;
    rl_grant_fn cb;
    void *ud;
    reactor_post_t post; /* announces the grant; embedded so it cannot fail */
    uint64_t gate_gen;   /* the gate that admitted it (rl->gate_gen then), 0: none */
};

typedef struct ticket_list {
    list_link h;
    int64_t n;
} ticket_list;

/* One tenant's waiting tickets and its place in the round robin. */
struct rl_flow {
    list_link turn;      /* in rl->active while it has tickets queued */
    char *tenant;        /* owned; NULL for the default flow */
    ticket_list queue;   /* FIFO */
    int64_t weight;
    int64_t deficit;     /* tokens of credit left */
    bool in_turn;        /* credited for the turn it is at the front for */
};

struct rl {
    reactor_t *r;
    rl_limits limits;
    rl_dim dim[DIM_N];
    rl_clock_fn clock;
    void *clock_ud;
    rl_flow deflt;       /* the default tenant's flow */
    list_link active;    /* rl_flow.turn: flows with tickets queued, in turn order */
    int64_t nqueued;     /* tickets waiting in every flow */
    ticket_list granted; /* granted or delivered, not yet released */
    reactor_timer_t *wake; /* serves the queue head; at most one */
    reactor_post_t kick;   /* fallback when a timer cannot be allocated */
    int64_t paused_until;
    uint64_t n_granted;
    /* the shared budget (rl_set_gate); GATE_GEN counts the gates set, so a
     * ticket admitted by a gate since replaced never reports to the new one */
    rl_gate gate;
    bool gated;
    uint64_t gate_gen;
    /* AIMD */
    int64_t cap, ceiling, successes;
    int64_t last_decrease;
    bool decreased;
    double baseline_ms;
    int64_t samples;
};

static void pump(rl_t *rl);

/* ---- small helpers */

static int64_t clamp_cost(int64_t v)
{
    return v < 0 ? 0 : v > RL_MAX_COST ? RL_MAX_COST : v;
}

static uint64_t default_clock(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * REACTOR_SEC + (uint64_t)ts.tv_nsec / 1000u;
}

static int64_t now_us(const rl_t *rl)
{
    return (int64_t)rl->clock(rl->clock_ud);
}

static void tlist_push(ticket_list *l, rl_ticket *t)
{
    list_add_tail(&l->h, &t->link);
    l->n++;
}

static void tlist_remove(ticket_list *l, rl_ticket *t)
{
    list_del(&t->link);
    l->n--;
}

/* The first ticket of L, or NULL. */
static rl_ticket *tlist_head(const ticket_list *l)
{
    list_link *f = list_first(&l->h);
    return f ? LIST_OWNER(f, rl_ticket, link) : NULL;
}

/* ---- the round robin between tenants' flows */

/* What a ticket costs a flow's credit: its estimated tokens, at least 1. */
static int64_t ticket_size(const rl_ticket *t)
{
    int64_t n = t->cost.est_input_tokens + t->cost.est_output_tokens;
    return n > 0 ? n : 1;
}

static int64_t flow_quantum(const rl_flow *f)
{
    return f->weight * RL_DRR_QUANTUM;
}

static rl_flow *flow_front(const rl_t *rl)
{
    return list_empty(&rl->active) ? NULL : LIST_OWNER(rl->active.next, rl_flow, turn);
}

/* The flow for TENANT ("default" and NULL: the limiter's own), made (and
 * put at the back of the rotation) when it has nothing queued. */
static rl_flow *flow_get(rl_t *rl, const char *tenant)
{
    if (!tenant || strcmp(tenant, "default") == 0)
        return &rl->deflt;
    for (list_link *l = rl->active.next; l != &rl->active; l = l->next) {
        rl_flow *f = LIST_OWNER(l, rl_flow, turn);
        if (f->tenant && strcmp(f->tenant, tenant) == 0)
            return f;
    }
    rl_flow *f = calloc(1, sizeof *f);
    if (!f || !(f->tenant = strdup(tenant))) {
        free(f);
        return NULL;
    }
    list_init(&f->turn);
    list_init(&f->queue.h);
    f->weight = 1;
    return f;
}

/* F has nothing queued any more: out of the rotation, its credit gone (a
 * flow that comes back starts afresh), and freed unless it is the default. */
static void flow_retire(rl_flow *f)
{
    list_del(&f->turn);
    f->deficit = 0;
    f->in_turn = false;
    if (f->tenant) {
        free(f->tenant);
        free(f);
    }
}

/* The ticket the round robin serves next (still queued), or NULL. */
static rl_ticket *drr_next(rl_t *rl)
{
    rl_flow *f = flow_front(rl);
    if (!f)
        return NULL;
    if (f->turn.next == &rl->active) {
        /* alone: nobody to share with, and no credit to keep */
        f->in_turn = false;
        f->deficit = 0;
        return tlist_head(&f->queue);
    }
    size_t nactive = 0, looked = 0;
    for (list_link *l = rl->active.next; l != &rl->active; l = l->next)
        nactive++;
    for (;;) {
        f = flow_front(rl);
        if (!f->in_turn) {
            f->deficit += flow_quantum(f);
            f->in_turn = true;
        }
        rl_ticket *t = tlist_head(&f->queue);
        if (ticket_size(t) <= f->deficit)
            return t;
        f->in_turn = false; /* credit kept for its next turn */
        list_del(&f->turn);
        list_add_tail(&rl->active, &f->turn);
        if (++looked < nactive)
            continue;
        /* a whole round covered nobody: skip the rounds that would not
         * either, crediting every flow for them, so that the next round
         * covers at least one head */
        int64_t skip = -1;
        for (list_link *l = rl->active.next; l != &rl->active; l = l->next) {
            rl_flow *g = LIST_OWNER(l, rl_flow, turn);
            int64_t q = flow_quantum(g), need = ticket_size(tlist_head(&g->queue)) - g->deficit;
            int64_t rounds = (need + q - 1) / q - 1; /* the last one comes with its turn */
            if (skip < 0 || rounds < skip)
                skip = rounds;
        }
        for (list_link *l = rl->active.next; skip > 0 && l != &rl->active; l = l->next) {
            rl_flow *g = LIST_OWNER(l, rl_flow, turn);
            g->deficit += skip * flow_quantum(g);
        }
        looked = 0;
    }
}

/* T, the ticket drr_next chose, leaves its flow to be granted. */
static void drr_take(rl_t *rl, rl_ticket *t)
{
    rl_flow *f = t->flow;
    tlist_remove(&f->queue, t);
    t->flow = NULL;
    rl->nqueued--;
    if (!f->queue.n) {
        flow_retire(f);
        return;
    }
    if (!f->in_turn)
        return;
    f->deficit -= ticket_size(t);
    if (ticket_size(tlist_head(&f->queue)) > f->deficit) {
        f->in_turn = false; /* its turn is over: to the back */
        list_del(&f->turn);
        list_add_tail(&rl->active, &f->turn);
    }
}

/* Microseconds of budget that COST units of a dimension with LIMIT per
 * minute use up; rounded up so rounding never admits more than the limit. */
static int64_t interval(int64_t limit, int64_t cost)
{
    /* split so no product overflows: limit <= RL_MAX_COST (rl_new) keeps
     * rem * RL_MINUTE_US below 2^63, and a huge cost saturates */
    int64_t q = cost / limit, rem = cost % limit;
    if (q >= RL_MAX_AHEAD_US / RL_MINUTE_US)
        return RL_MAX_AHEAD_US;
    int64_t v = q * RL_MINUTE_US + (rem * RL_MINUTE_US + limit - 1) / limit;
    return v < RL_MAX_AHEAD_US ? v : RL_MAX_AHEAD_US;
}

/* The cost of T in each dimension. */
static void dim_costs(const rl_cost *c, int64_t out[DIM_N])
{
    out[DIM_REQ] = c->requests;
    out[DIM_TOK] = c->est_input_tokens + c->est_output_tokens;
    out[DIM_IN] = c->est_input_tokens;
    out[DIM_OUT] = c->est_output_tokens;
}

/* How long from NOW until COST fits in D (0: it fits now). A cost above the
 * burst fits when the bucket is full, so no request waits forever. */
static int64_t dim_wait(const rl_dim *d, int64_t cost, int64_t now)
{
    if (d->limit == 0 || cost <= 0)
        return 0;
    int64_t inc = interval(d->limit, cost);
    int64_t tau = inc > RL_BURST_US ? inc : RL_BURST_US;
    int64_t tat = d->tat > now ? d->tat : now;
    int64_t w = tat + inc - tau - now;
    return w > 0 ? w : 0;
}

static void dim_charge(rl_dim *d, int64_t cost, int64_t now)
{
    if (d->limit == 0 || cost == 0)
        return;
    if (cost > 0) {
        int64_t tat = d->tat > now ? d->tat : now;
        int64_t inc = interval(d->limit, cost);
        /* the debt never runs further ahead than RL_MAX_AHEAD_US, however
         * many absurd costs are charged, so the sum cannot overflow */
        d->tat = inc > RL_MAX_AHEAD_US - (tat - now) ? now + RL_MAX_AHEAD_US : tat + inc;
    } else if (d->tat > now) {
        /* A refund: give budget back, but never more than a full bucket
         * (a tat in the past already means "full"). */
        int64_t back = interval(d->limit, -cost);
        d->tat = d->tat - back > now ? d->tat - back : now;
    }
}

/* ---- granting */

static void deliver(reactor_t *r, void *ud)
{
    (void)r;
    rl_ticket *t = ud;
    t->state = T_DELIVERED;
    t->cb(t, t->ud);
}

static void kick_cb(reactor_t *r, void *ud)
{
    (void)r;
    pump(ud);
}

static void wake_cb(reactor_t *r, reactor_timer_t *tm, void *ud)
{
    (void)r;
    (void)tm;
    rl_t *rl = ud;
    rl->wake = NULL;
    pump(rl);
}

static void arm(rl_t *rl, int64_t delay)
{
    if (delay < 1)
        delay = 1;
    rl->wake = reactor_timer_add(rl->r, (uint64_t)delay, wake_cb, rl);
    if (!rl->wake)
        /* No memory for a timer: look again on the next pass rather than
         * stall the queue. An embedded post cannot fail (-EBUSY means one
         * is already queued, which is as good). */
        (void)reactor_post_embedded(rl->r, &rl->kick, kick_cb, rl);
}

/* Grants queued tickets from the head while they fit, then arms the one
 * timer for the head's earliest fit. A head blocked only by concurrency needs
 * no timer: a release or a raised cap calls pump again. */
static void pump(rl_t *rl)
{
    if (rl->wake) {
        reactor_timer_cancel(rl->r, rl->wake);
        rl->wake = NULL;
    }
    while (rl->nqueued) {
        int64_t now = now_us(rl);
        if (now < rl->paused_until) {
            arm(rl, rl->paused_until - now);
            return;
        }
        if (rl->granted.n >= rl->cap)
            return;
        rl_ticket *t = drr_next(rl);
        int64_t c[DIM_N], wait = 0;
        dim_costs(&t->cost, c);
        for (int i = 0; i < DIM_N; i++) {
            int64_t w = dim_wait(&rl->dim[i], c[i], now);
            if (w > wait)
                wait = w;
        }
        if (wait > 0) {
            arm(rl, wait);
            return;
        }
        /* fits here: the shared budget has the last word. No timer when it
         * says no: the gate calls rl_kick when it has more to give. */
        if (rl->gated && !rl->gate.admit(rl->gate.ud, &t->cost))
            return;
        t->gate_gen = rl->gated ? rl->gate_gen : 0;
        for (int i = 0; i < DIM_N; i++)
            dim_charge(&rl->dim[i], c[i], now);
        drr_take(rl, t);
        tlist_push(&rl->granted, t);
        t->state = T_GRANTED;
        rl->n_granted++;
        /* Cannot fail: the entry is fresh (never queued before). */
        (void)reactor_post_embedded(rl->r, &t->post, deliver, t);
    }
}

/* ---- the public interface */

rl_t *rl_new(reactor_t *r, const rl_limits *limits)
{
    if (!r || !limits || limits->rpm < 0 || limits->tpm < 0 || limits->input_tpm < 0 ||
        limits->output_tpm < 0 || limits->concurrency < 0) {
        errno = EINVAL;
        return NULL;
    }
    rl_t *rl = calloc(1, sizeof *rl);
    if (!rl) {
        errno = ENOMEM;
        return NULL;
    }
    rl->r = r;
    list_init(&rl->active);
    list_init(&rl->deflt.turn);
    list_init(&rl->deflt.queue.h);
    rl->deflt.weight = 1;
    list_init(&rl->granted.h);
    rl->limits = *limits;
    /* above 10^11 a minute a limit is as good as none, and capping it
     * keeps interval()'s products in range */
    rl->dim[DIM_REQ].limit = clamp_cost(limits->rpm);
    rl->dim[DIM_TOK].limit = clamp_cost(limits->tpm);
    rl->dim[DIM_IN].limit = clamp_cost(limits->input_tpm);
    rl->dim[DIM_OUT].limit = clamp_cost(limits->output_tpm);
    rl->clock = default_clock;
    rl->ceiling = limits->concurrency > 0 ? limits->concurrency : RL_DEFAULT_CEILING;
    rl->cap = rl->ceiling;
    return rl;
}

static void free_list(rl_t *rl, ticket_list *l)
{
    rl_ticket *t;
    while ((t = tlist_head(l))) {
        tlist_remove(l, t);
        if (t->state == T_GRANTED)
            reactor_post_cancel(rl->r, &t->post);
        free(t);
    }
}

void rl_free(rl_t *rl)
{
    if (!rl)
        return;
    if (rl->wake)
        reactor_timer_cancel(rl->r, rl->wake);
    reactor_post_cancel(rl->r, &rl->kick);
    rl_flow *f;
    while ((f = flow_front(rl))) {
        free_list(rl, &f->queue);
        flow_retire(f);
    }
    free_list(rl, &rl->granted);
    free(rl);
}

void rl_set_clock(rl_t *rl, rl_clock_fn fn, void *ud)
{
    rl->clock = fn ? fn : default_clock;
    rl->clock_ud = fn ? ud : NULL;
}

void rl_kick(rl_t *rl)
{
    pump(rl);
}

rl_ticket *rl_acquire(rl_t *rl, const rl_cost *cost, rl_grant_fn cb, void *ud)
{
    return rl_acquire_for(rl, cost, NULL, 1, cb, ud);
}

rl_ticket *rl_acquire_for(rl_t *rl, const rl_cost *cost, const char *tenant, int64_t weight,
                          rl_grant_fn cb, void *ud)
{
    if (!rl || !cost || !cb || cost->requests < 0 || cost->est_input_tokens < 0 ||
        cost->est_output_tokens < 0 || cost->requests > RL_MAX_COST ||
        cost->est_input_tokens > RL_MAX_COST || cost->est_output_tokens > RL_MAX_COST) {
        errno = EINVAL;
        return NULL;
    }
    rl_ticket *t = calloc(1, sizeof *t);
    rl_flow *f = t ? flow_get(rl, tenant) : NULL;
    if (!f) {
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    t->rl = rl;
    t->cost = *cost;
    t->cb = cb;
    t->ud = ud;
    t->state = T_QUEUED;
    t->flow = f;
    f->weight = weight > 0 ? (weight < RL_MAX_WEIGHT ? weight : RL_MAX_WEIGHT) : 1;
    bool was_idle = rl->nqueued == 0;
    if (!f->queue.n)
        list_add_tail(&rl->active, &f->turn);
    tlist_push(&f->queue, t);
    rl->nqueued++;
    /* The ticket served next is the front flow's, whose choice a flow
     * joining at the back does not change: only a ticket that finds the
     * queue empty needs a look; pump grants it (announced on a later
     * pass) or arms. */
    if (was_idle)
        pump(rl);
    return t;
}

static uint64_t rl_gate_gen(const rl_t *rl)
{
    return rl->gated ? rl->gate_gen : 0;
}

/* Gives back T's slot and corrects its charges by DELTA per dimension. */
static void settle(rl_ticket *t, const int64_t delta[DIM_N])
{
    rl_t *rl = t->rl;
    int64_t now = now_us(rl);
    if (t->state == T_GRANTED)
        reactor_post_cancel(rl->r, &t->post);
    for (int i = 0; i < DIM_N; i++)
        dim_charge(&rl->dim[i], delta[i], now);
    tlist_remove(&rl->granted, t);
    free(t);
    pump(rl);
}

void rl_release(rl_ticket *t, const rl_usage *actual)
{
    if (!t)
        return;
    if (t->state == T_QUEUED) {
        rl_cancel(t);
        return;
    }
    int64_t delta[DIM_N] = {0};
    if (actual) {
        int64_t in = clamp_cost(actual->input_tokens);
        int64_t out = clamp_cost(actual->output_tokens);
        delta[DIM_TOK] = in + out - (t->cost.est_input_tokens + t->cost.est_output_tokens);
        delta[DIM_IN] = in - t->cost.est_input_tokens;
        delta[DIM_OUT] = out - t->cost.est_output_tokens;
    }
    if (t->gate_gen && t->gate_gen == rl_gate_gen(t->rl))
        t->rl->gate.done(t->rl->gate.ud, &t->cost, actual, true);
    settle(t, delta);
}

void rl_cancel(rl_ticket *t)
{
    if (!t)
        return;
    rl_t *rl = t->rl;
    if (t->state == T_QUEUED) {
        rl_flow *f = t->flow;
        bool was_head = tlist_head(&f->queue) == t;
        tlist_remove(&f->queue, t);
        rl->nqueued--;
        if (!f->queue.n)
            flow_retire(f);
        free(t);
        /* the ticket served next may have been it */
        if (was_head)
            pump(rl);
        return;
    }
    int64_t c[DIM_N];
    dim_costs(&t->cost, c);
    for (int i = 0; i < DIM_N; i++)
        c[i] = -c[i];
    if (t->gate_gen && t->gate_gen == rl_gate_gen(rl))
        rl->gate.done(rl->gate.ud, &t->cost, NULL, false);
    settle(t, c);
}

uint64_t rl_cap_wait_ms(uint64_t ms)
{
    return ms > RL_MAX_WAIT_MS ? RL_MAX_WAIT_MS : ms;
}

int64_t rl_clamp_tokens(int64_t v)
{
    return v < 0 ? -1 : v > RL_MAX_TOKENS ? RL_MAX_TOKENS : v;
}

void rl_pause_shared(rl_t *rl, uint64_t ms)
{
    ms = rl_cap_wait_ms(ms);
    int64_t until = now_us(rl) + (int64_t)ms * (int64_t)REACTOR_MSEC;
    if (until > rl->paused_until)
        rl->paused_until = until;
    pump(rl);
}

void rl_pause(rl_t *rl, uint64_t ms)
{
    ms = rl_cap_wait_ms(ms);
    /* told first, with the limiter whole: the gate only records it */
    if (rl->gated && rl->gate.paused)
        rl->gate.paused(rl->gate.ud, ms);
    rl_pause_shared(rl, ms);
}

void rl_set_gate(rl_t *rl, const rl_gate *gate)
{
    rl->gated = gate != NULL;
    if (gate)
        rl->gate = *gate;
    else
        memset(&rl->gate, 0, sizeof rl->gate);
    /* a new generation even for the same gate set twice: what the old one
     * admitted is not the new one's to settle */
    rl->gate_gen++;
    /* without the gate, tickets it held back may fit now; with a new one,
     * the head asks it (it never answers inside this call: its kicks are
     * its own) */
    pump(rl);
}

/* Makes D grant at once no more than REMAINING units: its bucket then holds
 * at most REMAINING, i.e. tat >= now + tau - REMAINING * T. */
static void dim_clamp(rl_dim *d, int64_t remaining, int64_t now)
{
    if (d->limit == 0)
        return;
    /* A minute's worth is more than a burst holds: nothing to clamp (and
     * the product below stays in range). */
    if (remaining >= d->limit || remaining > RL_MAX_COST)
        return;
    int64_t floor_tat = now + RL_BURST_US - interval(d->limit, remaining);
    if (d->tat < floor_tat)
        d->tat = floor_tat;
}

void rl_sync(rl_t *rl, int64_t remaining_requests, int64_t reset_requests_ms,
             int64_t remaining_tokens, int64_t reset_tokens_ms)
{
    int64_t now = now_us(rl);
    /* "reset" is when the bucket is full again, far longer than the wait
     * for the next request: with a known limit, an empty bucket is the
     * exact state (the next grant waits one interval); without one, wait
     * for the reset, the only figure there is. */
    bool tok_known = rl->dim[DIM_TOK].limit || rl->dim[DIM_IN].limit || rl->dim[DIM_OUT].limit;
    if (remaining_requests == 0 && reset_requests_ms > 0 && !rl->dim[DIM_REQ].limit)
        rl_pause(rl, (uint64_t)reset_requests_ms);
    if (remaining_tokens == 0 && reset_tokens_ms > 0 && !tok_known)
        rl_pause(rl, (uint64_t)reset_tokens_ms);
    if (remaining_requests >= 0)
        dim_clamp(&rl->dim[DIM_REQ], remaining_requests, now);
    if (remaining_tokens >= 0)
        for (int i = DIM_TOK; i <= DIM_OUT; i++)
            dim_clamp(&rl->dim[i], remaining_tokens, now);
    pump(rl);
}

void rl_observe(rl_t *rl, rl_outcome outcome, uint64_t latency_ms)
{
    int64_t now = now_us(rl);
    bool slow = rl->samples >= RL_BASELINE_MIN && (double)latency_ms > 2.0 * rl->baseline_ms;
    if (outcome == RL_OK) {
        /* Every answer moves the baseline (slowly), so a lasting change in
         * latency becomes the new normal instead of halving forever. */
        rl->baseline_ms = rl->samples == 0
                              ? (double)latency_ms
                              : rl->baseline_ms + ((double)latency_ms - rl->baseline_ms) / 8.0;
        rl->samples++;
    }
    if (outcome == RL_OVERLOADED || slow) {
        int64_t hold = RL_DECREASE_HOLDOFF_US;
        int64_t base = (int64_t)(rl->baseline_ms * (double)REACTOR_MSEC);
        if (base > hold)
            hold = base;
        rl->successes = 0;
        /* One burst of failures reports one overload, not one per call. */
        if (rl->decreased && now - rl->last_decrease < hold)
            return;
        rl->cap = rl->cap / 2 > 1 ? rl->cap / 2 : 1;
        rl->decreased = true;
        rl->last_decrease = now;
        return;
    }
    if (++rl->successes >= rl->cap && rl->cap < rl->ceiling) {
        rl->cap++;
        rl->successes = 0;
        pump(rl);
    }
}

void rl_stats(const rl_t *rl, rl_stats_t *out)
{
    int64_t now = now_us(rl);
    out->in_flight = rl->granted.n;
    out->queued = rl->nqueued;
    out->granted = rl->n_granted;
    out->paused_until_us = rl->paused_until > now ? (uint64_t)rl->paused_until : 0;
    out->effective_concurrency = rl->cap;
}

/* ---- header parsing */

/* A decimal number at *P (digits, optional fraction), advanced past it. */
static bool parse_number(const char **p, double *v)
{
    const char *s = *p;
    double x = 0;
    int digits = 0;
    while (isdigit((unsigned char)*s)) {
        x = x * 10 + (*s++ - '0');
        digits++;
    }
    if (*s == '.') {
        double scale = 0.1;
        s++;
        while (isdigit((unsigned char)*s)) {
            x += (*s++ - '0') * scale;
            scale /= 10;
            digits++;
        }
    }
    if (digits == 0)
        return false;
    *p = s;
    *v = x;
    return true;
}

int rl_parse_duration(const char *s, uint64_t *ms)
{
    /* Parsed by hand: strtod would follow the locale's decimal point. */
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ns", 1e-6},
                 {"h", 3600e3}, {"m", 60e3}, {"s", 1e3}};
    if (!s || !ms)
        return -EINVAL;
    while (isspace((unsigned char)*s))
        s++;
    double total = 0;
    bool any = false;
    while (*s && !isspace((unsigned char)*s)) {
        double v;
        if (!parse_number(&s, &v))
            return -EINVAL;
        if (!*s || isspace((unsigned char)*s)) {
            if (any)
                return -EINVAL; /* "1m30": a unit is missing */
            total = v * 1e3;    /* a bare number is seconds */
            any = true;
            break;
        }
        size_t k = 0, n = sizeof units / sizeof units[0];
        for (; k < n; k++) {
            size_t len = strlen(units[k].unit);
            if (strncmp(s, units[k].unit, len) == 0) {
                s += len;
                break;
            }
        }
        if (k == n)
            return -EINVAL;
        total += v * units[k].ms;
        any = true;
    }
    while (isspace((unsigned char)*s))
        s++;
    if (!any || *s)
        return -EINVAL;
    if (total > (double)RL_MAX_WAIT_MS) {
        *ms = RL_MAX_WAIT_MS;
        return 0;
    }
    /* Up to whole ms, but forgive the binary fuzz of "0.1s"-style input. */
    uint64_t whole = (uint64_t)total;
    *ms = total - (double)whole > 1e-6 ? whole + 1 : whole;
    return 0;
}

int rl_parse_retry_after(const char *value, int64_t now_unix, uint64_t *ms)
{
    if (!value || !ms)
        return -EINVAL;
    const char *p = value;
    while (isspace((unsigned char)*p))
        p++;
    if (isdigit((unsigned char)*p)) {
        /* delay-seconds; only digits and a point, so "30s" is refused here
         * (it is not Retry-After syntax). */
        const char *q = p;
        while (isdigit((unsigned char)*q) || *q == '.')
            q++;
        while (isspace((unsigned char)*q))
            q++;
        if (*q)
            return -EINVAL;
        return rl_parse_duration(p, ms);
    }
    /* HTTP-date: IMF-fixdate, then the obsolete RFC 850 and asctime forms
     * that RFC 9110 says a recipient must accept. Always GMT. */
    static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT",
                                       "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(p, fmts[i], &tm);
        if (!end)
            continue;
        while (isspace((unsigned char)*end))
            end++;
        if (*end)
            continue;
        time_t when = timegm(&tm);
        if (when == (time_t)-1)
            return -EINVAL;
        int64_t d = (int64_t)when - now_unix;
        *ms = d <= 0 ? 0 : d > (int64_t)(RL_MAX_WAIT_MS / 1000) ? RL_MAX_WAIT_MS
                                                                 : (uint64_t)d * 1000u;
        return 0;
    }
    return -EINVAL;
}

int rl_parse_wait_headers(const loom_header *h, size_t n, int64_t now_unix, uint64_t *ms)
{
    const char *ra = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(h[i].name, "retry-after-ms") == 0) {
            /* whole or fractional milliseconds; rl_parse_duration reads
             * a bare number as seconds, so give it the unit */
            char buf[64];
            if (snprintf(buf, sizeof buf, "%sms", h[i].value) < (int)sizeof buf &&
                isdigit((unsigned char)h[i].value[0]) && rl_parse_duration(buf, ms) == 0)
                return 0;
        } else if (strcmp(h[i].name, "retry-after") == 0) {
            ra = h[i].value;
        }
    }
    return ra && rl_parse_retry_after(ra, now_unix, ms) == 0 ? 0 : -ENOENT;
}
