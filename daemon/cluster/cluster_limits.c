/* cluster_limits.c -- one set of provider limits for every daemon sharing a
 * PostgreSQL store (see cluster_limits.h).
 *
 * The bucket. PostgreSQL holds, per provider, the same GCRA the local
 * limiter keeps (ratelimit.h): one theoretical arrival time per rate
 * dimension, on the server's clock, so every daemon reads one clock. A lease
 * is one call of loom_rl_lease (cluster_limits_schema.c), one round trip: it
 * grants the most of what was asked that fits now and says when the rest
 * would. Its tolerance is one second of budget less 100 ms (the local
 * limiter's margin for jitter) less the window W: a lease granted at L is
 * spent at any moment of [L, L + W], so the calls a provider sees in any
 * span D come from leases granted in a span D + W, which the bucket holds
 * to (D + W) + (1 s - 100 ms - W) = D + 1 s - 100 ms worth of budget: within
 * what a provider with a one-second GCRA allows (D + 1 s), with the 100 ms
 * for the network.
 *
 * Leases. A daemon asks only when its limiter's queue head cannot be
 * admitted from what it holds, and for what its queue needs over one window
 * (the queued calls at the head's cost, at least one, at most the window's
 * share of every limit), with at most one round trip in flight per provider.
 * Each lease is spent until W after the query was sent (the server granted
 * it later than that, so the daemon never spends past L + W). When nothing
 * fits now but the whole ask would within two windows, it is granted as a
 * deferred lease: charged as if asked for at the moment it fits, and spent
 * from that moment for W. Its calls still fall within W of the time the
 * bucket charged them for, so the argument above holds; and daemons that
 * contend for the bucket queue up in it, one round trip per lease, instead
 * of asking again each time another took the budget first. Further ahead,
 * the answer says when the ask would fit and the daemon asks then; waiting
 * loses nothing, the bucket still being ahead of now. What a lease did not use goes
 * back at its window's end, and a call's tokens under (or over) its
 * estimate go back (or are charged) with the next statement: a refund is
 * floored as the schema explains, so it never gives back more than was
 * really held.
 *
 * Concurrency. The node's slots (loom_rl_slots) are set with every
 * statement to what it needs (calls in flight plus what it asks for), capped
 * so that every node's unexpired slots stay within the limit and, beyond its
 * calls in flight, to a fair share among the nodes that want slots; they expire at
 * the server W + SLACK after the statement, and are renewed a little before
 * each window ends while calls are in flight. A call is admitted only into a
 * slot held and still within its window here.
 *
 * Pauses. A 429 or a quota stop seen here (gate->paused) is written to the
 * bucket with NOTIFY loom_limits 'PROVIDER'; every daemon listens, reads the
 * pause at once and pauses its limiters (rl_pause_shared); every answer
 * carries the pause too.
 *
 * Failing closed. While the connection is down nothing new is leased:
 * calls spend what the leases already hold and then wait; a statement that
 * failed may or may not have run, so its returns are dropped (never given
 * back twice) while its extra charges and pause are sent again. Leasing
 * resumes when the connection comes back. */
#include "daemon/cluster/cluster_limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/containers.h"
#include "daemon/cluster/pgconn.h"

/* Iterates over the links of HEAD (none unlinked inside). */
#define CL_EACH(l, head) for (list_link *l = (head)->next; l != (head); l = l->next)

enum { D_REQ, D_TOK, D_IN, D_OUT, D_N };

#define CL_DEFAULT_WINDOW_MS 250
/* The window is at most this, so the bucket's tolerance (1 s - 100 ms - W)
 * still holds two windows' worth. */
#define CL_MAX_WINDOW_MS 400
#define CL_MIN_WINDOW_MS 20
#define CL_MARGIN_US 100000
#define CL_SECOND_US 1000000
/* Slots outlive their window at the server by this: a renewal may be late
 * (a slow round trip, a short outage) without another node taking slots
 * whose calls still run. */
#define CL_SLOT_SLACK_US 2000000
/* A deferred lease starts at most this many windows ahead: enough for three
 * daemons each with a lease being spent and one waiting to queue up in the
 * bucket (its tolerance plus this covers them) without being sent away. */
#define CL_DEFER_WINDOWS 2
/* A call's tokens under its estimate wait this many windows for a lease to
 * ride on before they go alone: one statement each would cost a round trip
 * per call, for budget that under load the refund floor mostly keeps
 * anyway (cluster_limits_schema.c). Unused leases go back within a window
 * (others may be waiting for them), extra charges too (a debt). */
#define CL_REFUND_WINDOWS 8
/* After a failed statement, the next one waits this long (the connection
 * retries on its own; its coming back wakes us at once). */
#define CL_RETRY_US 100000

typedef struct cl_prov cl_prov;

/* One limiter under a provider's budget: the gate's UD. IN_FLIGHT is what
 * its gate admitted and has not heard the end of, taken off the provider's
 * count when the limiter is detached (its tickets end without a word). */
typedef struct cl_att {
    cl_prov *p;
    rl_t *rl;
    int64_t in_flight;
} cl_att;

/* A lease: budget to spend until EXPIRES. */
typedef struct cl_lease {
    list_link link;     /* in prov->leases, oldest first */
    int64_t left[D_N];  /* units not yet spent */
    int64_t c0[D_N];    /* the bucket's charged sums just after it */
    uint64_t starts;    /* local clock: spent from then (a deferred lease) */
    uint64_t expires;   /* local clock: until then */
    int64_t calls;      /* admitted from it and not done (see cl_done) */
} cl_lease;

/* One statement in flight. PROV is NULL once the provider is detached. */
typedef struct cl_stmt {
    cluster_limits_t *cl;
    cl_prov *prov;
    uint64_t sent;      /* local clock */
    int64_t want_n;
    int64_t cost[D_N];
    bool had_ret;
    int64_t extra[D_N]; /* sent: restored when the statement failed */
    uint64_t pause_ms;
} cl_stmt;

struct cl_prov {
    list_link link;
    cluster_limits_t *cl;
    char *name;
    rl_limits lim;
    cl_att **atts;          /* owned */
    size_t natts, capatts;
    list_link leases;
    int64_t in_flight;      /* admitted through the gates, not done */
    int64_t slots;          /* held at the server */
    int64_t fill;           /* of which calls may fill now (a fair share) */
    uint64_t slots_until;   /* local clock: admit into them until then */
    bool blocked;           /* the last admit said no */
    rl_cost want;           /* the head's cost then */
    uint64_t retry_at;      /* do not ask before (local clock) */
    int64_t ret[D_N], ret_c0[D_N];
    bool has_ret;
    uint64_t flush_at;      /* pending returns or extras go at the latest then */
    int64_t extra[D_N];
    uint64_t pause_ms;      /* to write */
    bool read;              /* a NOTIFY: read the bucket */
    cl_stmt *stmt;          /* in flight */
    reactor_timer_t *timer;
    uint64_t timer_at;
};

struct cluster_limits {
    reactor_t *r;
    log_sink *log;
    pgconn_t *pg;
    char *node;
    uint64_t window_us;
    list_link provs;
    cluster_limits_stats st;
    bool freeing;
};

static void cl_eval(cl_prov *p);

/* ---- small helpers */

static uint64_t cl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int64_t cl_limit(const cl_prov *p, int d)
{
    switch (d) {
    case D_REQ: return p->lim.rpm;
    case D_TOK: return p->lim.tpm;
    case D_IN: return p->lim.input_tpm;
    default: return p->lim.output_tpm;
    }
}

/* COST in each dimension; 0 where the dimension has no limit. */
static void cl_costs(const cl_prov *p, const rl_cost *c, int64_t out[D_N])
{
    out[D_REQ] = c->requests;
    out[D_TOK] = c->est_input_tokens + c->est_output_tokens;
    out[D_IN] = c->est_input_tokens;
    out[D_OUT] = c->est_output_tokens;
    for (int d = 0; d < D_N; d++)
        if (cl_limit(p, d) <= 0 || out[d] < 0)
            out[d] = 0;
}

static bool cl_rated(const cl_prov *p)
{
    for (int d = 0; d < D_N; d++)
        if (cl_limit(p, d) > 0)
            return true;
    return false;
}

/* Pending statements go by FLUSH_AT at the latest: at once when nothing
 * was pending (0), else at the earlier of the two. */
static void cl_flush_by(cl_prov *p, uint64_t at)
{
    if (!p->flush_at || at < p->flush_at)
        p->flush_at = at;
}

/* UNITS of dimension D go back to the bucket, from a lease whose charged
 * sums were C0, within WINDOWS windows (or with a lease before). */
static void cl_add_ret(cl_prov *p, int d, int64_t units, int64_t c0, uint64_t now,
                       uint64_t windows)
{
    if (units <= 0)
        return;
    cl_flush_by(p, now + windows * p->cl->window_us);
    if (p->ret[d] == 0 || c0 < p->ret_c0[d])
        p->ret_c0[d] = c0;
    p->ret[d] += units;
    p->has_ret = true;
}

/* UNITS of dimension D spent beyond an estimate: a debt charged within a
 * window, so the others see it soon. */
static void cl_add_extra(cl_prov *p, int d, int64_t units, uint64_t now)
{
    if (units <= 0)
        return;
    cl_flush_by(p, now + p->cl->window_us);
    p->extra[d] += units;
}

/* Whether a deferred lease waits for its start: no other is asked for
 * meanwhile (it is what the queue asked for). */
static bool cl_deferred(const cl_prov *p, uint64_t now)
{
    CL_EACH(l, &p->leases) {
        if (LIST_OWNER(l, cl_lease, link)->starts > now)
            return true;
    }
    return false;
}

/* Whether what P holds now (leases started, a slot) covers the head that
 * was refused: then the limiter is to look again, nothing to ask for. */
static bool cl_covered(const cl_prov *p, uint64_t now)
{
    if (p->lim.concurrency > 0 && (p->in_flight >= p->fill || now >= p->slots_until))
        return false;
    int64_t c[D_N];
    cl_costs(p, &p->want, c);
    for (int d = 0; d < D_N; d++) {
        int64_t have = 0;
        CL_EACH(l, &p->leases) {
            const cl_lease *ls = LIST_OWNER(l, cl_lease, link);
            if (ls->starts <= now && ls->expires > now)
                have += ls->left[d];
        }
        if (have < c[d])
            return false;
    }
    return true;
}

static bool cl_pending(const cl_prov *p)
{
    return p->has_ret || p->extra[D_REQ] || p->extra[D_TOK] || p->extra[D_IN] ||
           p->extra[D_OUT];
}

/* Leases whose window ended give back what they hold; a lease is kept
 * while calls admitted from it run, for the refund floor of their tokens. */
static void cl_prune(cl_prov *p, uint64_t now)
{
    LIST_EACH_SAFE(l, nx, &p->leases) {
        cl_lease *ls = LIST_OWNER(l, cl_lease, link);
        if (ls->expires > now)
            continue;
        for (int d = 0; d < D_N; d++) {
            cl_add_ret(p, d, ls->left[d], ls->c0[d], now, 1);
            ls->left[d] = 0;
        }
        if (ls->calls <= 0) {
            list_del(&ls->link);
            free(ls);
        }
    }
}

static void cl_kick_all(cl_prov *p)
{
    for (size_t i = 0; i < p->natts; i++)
        rl_kick(p->atts[i]->rl);
}

static int64_t cl_queued(const cl_prov *p)
{
    int64_t n = 0;
    for (size_t i = 0; i < p->natts; i++) {
        rl_stats_t s;
        rl_stats(p->atts[i]->rl, &s);
        n += s.queued;
    }
    return n;
}

/* ---- the gate (rl_gate hooks; never call back into the limiter here) */

static bool cl_admit(void *ud, const rl_cost *cost)
{
    cl_att *a = ud;
    cl_prov *p = a->p;
    uint64_t now = cl_now();
    cl_prune(p, now);
    bool ok = true;
    if (p->lim.concurrency > 0 && (p->in_flight >= p->fill || now >= p->slots_until))
        ok = false;
    int64_t c[D_N];
    cl_costs(p, cost, c);
    for (int d = 0; ok && d < D_N; d++) {
        int64_t have = 0;
        CL_EACH(l, &p->leases) {
            cl_lease *ls = LIST_OWNER(l, cl_lease, link);
            if (ls->starts <= now)
                have += ls->left[d];
        }
        if (have < c[d])
            ok = false;
    }
    if (!ok) {
        p->blocked = true;
        p->want = *cost;
        cl_eval(p); /* asks (a query: answered on a later pass) or arms */
        return false;
    }
    /* spent oldest first; the call is counted on the oldest lease it drew
     * from, whose charged sums are the smallest: the safe floor for a
     * refund of its tokens */
    cl_lease *first = NULL;
    for (int d = 0; d < D_N; d++) {
        int64_t need = c[d];
        CL_EACH(l, &p->leases) {
            if (need <= 0)
                break;
            cl_lease *ls = LIST_OWNER(l, cl_lease, link);
            if (ls->starts > now)
                continue;
            int64_t take = ls->left[d] < need ? ls->left[d] : need;
            if (take > 0 && !first)
                first = ls;
            ls->left[d] -= take;
            need -= take;
        }
    }
    if (!first) {
        CL_EACH(l, &p->leases) {
            cl_lease *ls = LIST_OWNER(l, cl_lease, link);
            if (ls->starts <= now) {
                first = ls;
                break;
            }
        }
    }
    if (first)
        first->calls++;
    p->in_flight++;
    a->in_flight++;
    p->blocked = false;
    p->cl->st.calls++;
    return true;
}

static void cl_done(void *ud, const rl_cost *cost, const rl_usage *actual, bool sent)
{
    cl_att *a = ud;
    cl_prov *p = a->p;
    uint64_t now = cl_now();
    if (a->in_flight > 0) {
        a->in_flight--;
        p->in_flight--;
    }
    /* The floor of a refund is the charged sums of the lease the call came
     * from; which one it was is not known here, so take the oldest lease
     * with calls running (its sums are the smallest: the floor is higher,
     * never lower), and count the call off the newest one, so the oldest
     * stays counted as long as any of its calls may still run. */
    int64_t c0[D_N] = {0};
    cl_lease *oldest = NULL, *newest = NULL;
    CL_EACH(l, &p->leases) {
        cl_lease *ls = LIST_OWNER(l, cl_lease, link);
        if (ls->calls <= 0)
            continue;
        if (!oldest)
            oldest = ls;
        newest = ls;
    }
    if (oldest)
        memcpy(c0, oldest->c0, sizeof c0);
    if (newest && --newest->calls <= 0 && newest->expires <= now) {
        for (int d = 0; d < D_N; d++)
            cl_add_ret(p, d, newest->left[d], newest->c0[d], now, 1);
        list_del(&newest->link);
        free(newest);
    }
    if (!oldest) {
        /* no lease record (the call was admitted by concurrency alone):
         * nothing to give back to */
        return;
    }
    int64_t c[D_N];
    cl_costs(p, cost, c);
    if (!sent) {
        for (int d = 0; d < D_N; d++)
            cl_add_ret(p, d, c[d], c0[d], now, 1);
    } else if (actual) {
        int64_t in = rl_clamp_tokens(actual->input_tokens);
        int64_t out = rl_clamp_tokens(actual->output_tokens);
        in = in < 0 ? 0 : in;
        out = out < 0 ? 0 : out;
        int64_t used[D_N] = {0, in + out, in, out};
        for (int d = D_TOK; d < D_N; d++) {
            if (cl_limit(p, d) <= 0)
                continue;
            int64_t delta = c[d] - used[d];
            if (delta > 0)
                cl_add_ret(p, d, delta, c0[d], now, CL_REFUND_WINDOWS);
            else
                cl_add_extra(p, d, -delta, now);
        }
    }
    cl_eval(p); /* the flush timer */
}

static void cl_paused(void *ud, uint64_t ms)
{
    cl_prov *p = ((cl_att *)ud)->p;
    if (ms > p->pause_ms)
        p->pause_ms = ms;
    cl_eval(p);
}

/* ---- statements */

static void cl_timer_cb(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    cl_prov *p = ud;
    p->timer = NULL;
    p->timer_at = 0;
    /* a deferred lease may have started: the queue looks first (cheap when
     * not), so that what it admits is not asked for again */
    if (p->blocked)
        cl_kick_all(p);
    cl_eval(p);
}

static void cl_arm(cl_prov *p, uint64_t at, uint64_t now)
{
    if (p->timer && p->timer_at <= at)
        return;
    if (p->timer)
        reactor_timer_cancel(p->cl->r, p->timer);
    p->timer = reactor_timer_add(p->cl->r, at > now ? at - now : 0, cl_timer_cb, p);
    p->timer_at = p->timer ? at : 0;
}

static void cl_result(void *ud, const PGresult *res, const char *err);

static const char CL_SQL[] =
    "SELECT granted, c0[1], c0[2], c0[3], c0[4], wait_us, paused_until_ms, slots, fill, now_us,"
    " start_us"
    " FROM loom_rl_lease($1, $2, $3::bigint[], $4, $5::bigint[], $6::bigint[], $7::bigint[],"
    " $8::bigint[], $9, $10, $11, $12, $13, $14, $15, $16)";

static void cl_arr(char *buf, size_t n, const int64_t *v, int k)
{
    size_t o = (size_t)snprintf(buf, n, "{");
    for (int i = 0; i < k && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? "," : "", v[i]);
    if (o < n)
        snprintf(buf + o, n - o, "}");
}

/* How many calls at the head's cost to ask for: what is queued, at least
 * one, at most the window's share of every limit (at least one call). */
static int64_t cl_want_n(const cl_prov *p, const int64_t cost[D_N])
{
    int64_t n = cl_queued(p);
    if (n < 1)
        n = 1;
    for (int d = 0; d < D_N; d++) {
        if (cost[d] <= 0)
            continue;
        int64_t share = (int64_t)((double)cl_limit(p, d) * (double)p->cl->window_us / 60e6 /
                                  (double)cost[d]);
        if (share < 1)
            share = 1;
        if (n > share)
            n = share;
    }
    return n;
}

/* Sends one statement for P: a lease when the head waits, with whatever
 * returns, extra charges, slots and pause are pending. */
static void cl_send(cl_prov *p, uint64_t now)
{
    cluster_limits_t *cl = p->cl;
    cl_stmt *s = calloc(1, sizeof *s);
    if (!s) {
        p->retry_at = now + CL_RETRY_US;
        return;
    }
    s->cl = cl;
    s->prov = p;
    s->sent = now;
    bool ask = p->blocked && now >= p->retry_at && cl_queued(p) > 0 && !cl_deferred(p, now);
    if (ask && cl_rated(p)) {
        cl_costs(p, &p->want, s->cost);
        /* the rate is asked for only when the leases held do not cover the
         * head (it may be waiting for a slot alone) */
        bool short_ = false;
        for (int d = 0; d < D_N; d++) {
            int64_t have = 0;
            CL_EACH(l, &p->leases) {
                have += LIST_OWNER(l, cl_lease, link)->left[d];
            }
            short_ = short_ || (s->cost[d] > 0 && have < s->cost[d]);
        }
        s->want_n = short_ ? cl_want_n(p, s->cost) : 0;
        if (!short_)
            memset(s->cost, 0, sizeof s->cost);
    }
    int64_t slots = 0;
    if (p->lim.concurrency > 0) {
        slots = p->in_flight + (ask ? (s->want_n > 0 ? s->want_n : 1) : 0);
        if (slots > p->lim.concurrency)
            slots = p->lim.concurrency;
    }
    int64_t limits[5] = {p->lim.rpm, p->lim.tpm, p->lim.input_tpm, p->lim.output_tpm,
                         p->lim.concurrency};
    int64_t zero[D_N] = {0};
    char a_lim[160], a_cost[120], a_ret[120], a_c0[120], a_extra[120];
    char n_want[24], n_slots[24], n_infl[24], n_pause[24], n_win[24], n_slack[24], n_allow[24];
    char n_defer[24];
    cl_arr(a_lim, sizeof a_lim, limits, 5);
    cl_arr(a_cost, sizeof a_cost, s->cost, D_N);
    cl_arr(a_ret, sizeof a_ret, p->has_ret ? p->ret : zero, D_N);
    cl_arr(a_c0, sizeof a_c0, p->has_ret ? p->ret_c0 : zero, D_N);
    cl_arr(a_extra, sizeof a_extra, p->extra, D_N);
    snprintf(n_want, sizeof n_want, "%" PRId64, s->want_n);
    snprintf(n_slots, sizeof n_slots, "%" PRId64, slots);
    snprintf(n_infl, sizeof n_infl, "%" PRId64, p->in_flight);
    snprintf(n_pause, sizeof n_pause, "%" PRIu64, p->pause_ms);
    snprintf(n_win, sizeof n_win, "%" PRIu64, cl->window_us);
    snprintf(n_slack, sizeof n_slack, "%d", CL_SLOT_SLACK_US);
    snprintf(n_allow, sizeof n_allow, "%" PRIu64,
             (uint64_t)(CL_SECOND_US - CL_MARGIN_US) - cl->window_us);
    snprintf(n_defer, sizeof n_defer, "%" PRIu64, CL_DEFER_WINDOWS * cl->window_us);
    const char *params[16] = {p->name, cl->node, a_lim, n_want, a_cost, a_ret, a_c0, a_extra,
                              n_slots, n_infl, n_pause, p->pause_ms ? "429" : NULL, n_win, n_slack,
                              n_allow, n_defer};
    s->had_ret = p->has_ret;
    memcpy(s->extra, p->extra, sizeof s->extra);
    s->pause_ms = p->pause_ms;
    if (pgconn_query(cl->pg, CL_SQL, 16, params, cl_result, s) < 0) {
        free(s);
        p->retry_at = now + CL_RETRY_US;
        return;
    }
    /* handed over: a failure gives the extras and the pause back to P */
    memset(p->ret, 0, sizeof p->ret);
    memset(p->ret_c0, 0, sizeof p->ret_c0);
    p->has_ret = false;
    memset(p->extra, 0, sizeof p->extra);
    p->pause_ms = 0;
    p->read = false;
    p->flush_at = 0;
    p->stmt = s;
    if (s->want_n > 0 || (ask && !cl_rated(p)))
        cl->st.leases++;
    else
        cl->st.returns++;
}

/* Decides what P needs now: a statement, or a timer for the next moment one
 * is due. At most one statement is in flight per provider. */
static void cl_eval(cl_prov *p)
{
    cluster_limits_t *cl = p->cl;
    if (cl->freeing)
        return;
    uint64_t now = cl_now();
    cl_prune(p, now);
    if (p->stmt)
        return; /* its answer looks again */
    uint64_t next = UINT64_MAX;
    bool up = pgconn_up(cl->pg);
    bool ask = p->blocked && cl_queued(p) > 0;
    if (!ask)
        p->blocked = false;
    ask = ask && !cl_deferred(p, now) && !cl_covered(p, now);
    bool due = false;
    if (p->pause_ms || p->read)
        due = true;
    if (ask) {
        if (now >= p->retry_at)
            due = true;
        else if (p->retry_at < next)
            next = p->retry_at;
    }
    if (cl_pending(p)) {
        if (now >= p->flush_at)
            due = true;
        else if (p->flush_at < next)
            next = p->flush_at;
    }
    if (p->lim.concurrency > 0 && p->slots > 0) {
        /* renew a little before the window ends while calls run; give the
         * slots back when none do */
        uint64_t renew = p->slots_until - cl->window_us / 4;
        if (now >= renew)
            due = true;
        else if (renew < next)
            next = renew;
    }
    /* a lease's start (the queue is served then) and end (its unused
     * budget goes back) */
    CL_EACH(l, &p->leases) {
        cl_lease *ls = LIST_OWNER(l, cl_lease, link);
        if (ls->starts > now && ls->starts < next)
            next = ls->starts;
        if (ls->expires > now && ls->expires < next)
            next = ls->expires;
    }
    if (due && !up) {
        /* fail closed: nothing new until the connection is back (cl_state) */
        due = false;
        if (now + CL_RETRY_US < next)
            next = now + CL_RETRY_US;
    }
    if (due) {
        cl_send(p, now);
        if (p->stmt)
            return;
        if (p->retry_at < next)
            next = p->retry_at;
    }
    if (next != UINT64_MAX)
        cl_arm(p, next, now);
}

static int64_t cl_int(const PGresult *res, int col)
{
    if (PQgetisnull(res, 0, col))
        return 0;
    return strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

static void cl_result(void *ud, const PGresult *res, const char *err)
{
    cl_stmt *s = ud;
    cl_prov *p = s->prov;
    cluster_limits_t *cl = s->cl;
    bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
              PQnfields(res) == 11;
    if (!p) {
        free(s);
        return;
    }
    p->stmt = NULL;
    uint64_t now = cl_now();
    if (!ok) {
        /* it may have run: returns are dropped (never given twice), extra
         * charges and the pause go again (charging twice errs safe) */
        const char *why = err ? err : res ? PQresultErrorMessage(res) : "no answer";
        if (res)
            log_write(cl->log, LOOM_LOG_WARN, json_pack("{s:s}", "provider", p->name),
                      "shared limits: lease failed: %s", why);
        for (int d = 0; d < D_N; d++)
            p->extra[d] += s->extra[d];
        if (s->pause_ms > p->pause_ms)
            p->pause_ms = s->pause_ms;
        p->retry_at = now + CL_RETRY_US;
        if (cl_pending(p))
            cl_flush_by(p, now + CL_RETRY_US);
        free(s);
        if (!cl->freeing)
            cl_eval(p);
        return;
    }
    int64_t granted = cl_int(res, 0);
    int64_t wait_us = cl_int(res, 5);
    int64_t paused_until_ms = cl_int(res, 6);
    int64_t slots = cl_int(res, 7);
    int64_t fill = cl_int(res, 8);
    int64_t server_now_us = cl_int(res, 9);
    int64_t start_us = cl_int(res, 10);
    if (start_us < 0)
        start_us = 0;
    bool more = false;
    if (granted > 0) {
        cl_lease *ls = calloc(1, sizeof *ls);
        if (ls) {
            for (int d = 0; d < D_N; d++) {
                ls->left[d] = granted * s->cost[d];
                ls->c0[d] = cl_int(res, 1 + d);
            }
            /* spent within [server's start, its start + W]: from the answer
             * on (after the server's now) until W after the query went out
             * (before it) */
            ls->starts = now + (uint64_t)start_us;
            ls->expires = s->sent + (uint64_t)start_us + cl->window_us;
            list_add_tail(&p->leases, &ls->link);
            more = true;
        }
        /* without memory the grant is simply not used: the bucket stays
         * charged, which errs safe */
        p->retry_at = 0;
    } else if (s->want_n > 0) {
        cl->st.denied++;
        p->retry_at = now + (uint64_t)(wait_us > 1000 ? wait_us : 1000);
    }
    if (p->lim.concurrency > 0) {
        bool ask = s->want_n > 0 || p->blocked;
        if (fill > p->fill)
            more = true;
        p->slots = slots;
        p->fill = fill;
        p->slots_until = s->sent + cl->window_us;
        /* denied slots: look again in a quarter window (others' calls end) */
        if (ask && fill <= p->in_flight && p->retry_at < now + cl->window_us / 4)
            p->retry_at = now + cl->window_us / 4;
    }
    int64_t pause_left_ms = paused_until_ms - server_now_us / 1000;
    if (pause_left_ms > 0) {
        for (size_t i = 0; i < p->natts; i++)
            rl_pause_shared(p->atts[i]->rl, (uint64_t)pause_left_ms);
        uint64_t until = now + (uint64_t)pause_left_ms * 1000u;
        if (p->retry_at < until)
            p->retry_at = until;
    }
    free(s);
    if (more)
        cl_kick_all(p); /* may admit (and call cl_admit) */
    cl_eval(p);
}

static void cl_notify(void *ud, const char *channel, const char *payload)
{
    cluster_limits_t *cl = ud;
    (void)channel;
    CL_EACH(l, &cl->provs) {
        cl_prov *p = LIST_OWNER(l, cl_prov, link);
        if (strcmp(p->name, payload) == 0) {
            p->read = true;
            cl_eval(p);
        }
    }
}

static void cl_state(void *ud, bool up)
{
    cluster_limits_t *cl = ud;
    cl->st.connected = up;
    if (!up)
        return;
    /* pauses may have been missed while down: read them with the next
     * statement of each provider */
    CL_EACH(l, &cl->provs) {
        cl_prov *p = LIST_OWNER(l, cl_prov, link);
        p->read = true;
        p->retry_at = 0;
        cl_eval(p);
    }
}

/* ---- the public side */

cluster_limits_t *cluster_limits_new(reactor_t *r, log_sink *log,
                                     const cluster_limits_options *o)
{
    if (!r || !o || !o->conninfo || !o->node) {
        errno = EINVAL;
        return NULL;
    }
    cluster_limits_t *cl = calloc(1, sizeof *cl);
    if (!cl || !(cl->node = strdup(o->node)))
        goto nomem;
    cl->r = r;
    cl->log = log;
    int64_t w = o->window_ms > 0 ? o->window_ms : CL_DEFAULT_WINDOW_MS;
    if (w > CL_MAX_WINDOW_MS)
        w = CL_MAX_WINDOW_MS;
    if (w < CL_MIN_WINDOW_MS)
        w = CL_MIN_WINDOW_MS;
    cl->window_us = (uint64_t)w * 1000u;
    list_init(&cl->provs);
    static const char *const channels[] = {"loom_limits", NULL};
    pgconn_options po = {
        .conninfo = o->conninfo, .password_file = o->password_file, .listen = channels,
        .on_notify = cl_notify, .on_state = cl_state, .ud = cl, .name = "limits",
    };
    if (!(cl->pg = pgconn_new(r, log, &po))) {
        int e = errno;
        free(cl->node);
        free(cl);
        errno = e;
        return NULL;
    }
    return cl;
nomem:
    if (cl)
        free(cl->node);
    free(cl);
    errno = ENOMEM;
    return NULL;
}

static cl_prov *cl_find(cluster_limits_t *cl, const char *name)
{
    CL_EACH(l, &cl->provs) {
        cl_prov *p = LIST_OWNER(l, cl_prov, link);
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

int cluster_limits_attach(cluster_limits_t *cl, const char *provider, rl_t *rl,
                          const rl_limits *limits)
{
    cl_prov *p = cl_find(cl, provider);
    bool fresh = !p;
    if (fresh) {
        if (!(p = calloc(1, sizeof *p)) || !(p->name = strdup(provider))) {
            free(p);
            return -ENOMEM;
        }
        p->cl = cl;
        list_init(&p->leases);
    }
    size_t i = 0;
    while (i < p->natts && p->atts[i]->rl != rl)
        i++;
    if (i == p->natts) {
        cl_att *a = calloc(1, sizeof *a);
        if (a && p->natts == p->capatts) {
            size_t nc = p->capatts ? 2 * p->capatts : 2;
            cl_att **n = realloc(p->atts, nc * sizeof *n);
            if (n) {
                p->atts = n;
                p->capatts = nc;
            }
        }
        if (!a || p->natts == p->capatts) {
            free(a);
            if (fresh) {
                free(p->atts);
                free(p->name);
                free(p);
            }
            return -ENOMEM;
        }
        a->p = p;
        a->rl = rl;
        p->atts[p->natts++] = a;
    }
    p->lim = *limits;
    if (fresh)
        list_add_tail(&cl->provs, &p->link);
    /* the gate is set again even when RL was attached already: what the
     * former one admitted no longer reports, so its count starts afresh */
    p->in_flight -= p->atts[i]->in_flight;
    p->atts[i]->in_flight = 0;
    rl_gate g = {.ud = p->atts[i], .admit = cl_admit, .done = cl_done, .paused = cl_paused};
    rl_set_gate(rl, &g);
    return 0;
}

/* Takes P out: what its leases hold goes back with a last statement (best
 * effort), the gates come off, and P is freed. */
static void cl_prov_free(cl_prov *p)
{
    cluster_limits_t *cl = p->cl;
    uint64_t now = cl_now();
    for (size_t i = 0; i < p->natts; i++) {
        rl_set_gate(p->atts[i]->rl, NULL);
        free(p->atts[i]);
    }
    p->natts = 0;
    if (p->stmt)
        p->stmt->prov = NULL;
    p->stmt = NULL;
    if (p->timer)
        reactor_timer_cancel(cl->r, p->timer);
    p->timer = NULL;
    list_del(&p->link);
    /* every lease ends now: its unused budget back, slots released */
    LIST_EACH_SAFE(l, nx, &p->leases) {
        cl_lease *ls = LIST_OWNER(l, cl_lease, link);
        for (int d = 0; d < D_N; d++)
            cl_add_ret(p, d, ls->left[d], ls->c0[d], now, 1);
        list_del(&ls->link);
        free(ls);
    }
    if (!cl->freeing && pgconn_up(cl->pg) && (cl_pending(p) || p->slots > 0 || p->pause_ms)) {
        /* a statement with no provider to come back to */
        p->blocked = false;
        p->in_flight = 0;
        cl_send(p, now);
        if (p->stmt)
            p->stmt->prov = NULL;
    }
    free(p->atts);
    free(p->name);
    free(p);
}

void cluster_limits_detach(cluster_limits_t *cl, const char *provider)
{
    cl_prov *p = cl ? cl_find(cl, provider) : NULL;
    if (p)
        cl_prov_free(p);
}

void cluster_limits_detach_limiter(cluster_limits_t *cl, rl_t *rl)
{
    if (!cl)
        return;
    LIST_EACH_SAFE(l, nx, &cl->provs) {
        cl_prov *p = LIST_OWNER(l, cl_prov, link);
        for (size_t i = 0; i < p->natts; i++) {
            cl_att *a = p->atts[i];
            if (a->rl != rl)
                continue;
            rl_set_gate(rl, NULL);
            p->in_flight -= a->in_flight;
            p->atts[i] = p->atts[--p->natts];
            free(a);
            if (p->natts == 0)
                cl_prov_free(p);
            else
                cl_eval(p);
            return;
        }
    }
}

void cluster_limits_get_stats(const cluster_limits_t *cl, cluster_limits_stats *out)
{
    *out = cl->st;
    out->connected = pgconn_up(cl->pg);
}

void cluster_limits_free(cluster_limits_t *cl)
{
    if (!cl)
        return;
    /* the unused leases end with their window and the slots expire at the
     * server: a statement now could not be waited for */
    cl->freeing = true;
    while (!list_empty(&cl->provs))
        cl_prov_free(LIST_OWNER(list_first(&cl->provs), cl_prov, link));
    pgconn_free(cl->pg); /* runs the callbacks of statements still queued */
    free(cl->node);
    free(cl);
}
