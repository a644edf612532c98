/* engine_cost.c -- prices, a call's cost, and the ledger of tenants'
 * budgets (engine_cost.h).
 *
 * Tenants are few (the config names them), so the ledger keeps them in a
 * list; the counters of `stats` are JSON objects keyed by workflow,
 * provider and tenant, names whose number the config and the workflow
 * directory bound. */
#include "daemon/engine/engine_cost.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- prices */

void engine_prices_fini(engine_prices *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].provider);
        free(p->v[i].model);
    }
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

int engine_prices_copy(engine_prices *dst, const engine_prices *src)
{
    memset(dst, 0, sizeof *dst);
    if (!src->n)
        return 0;
    if (!(dst->v = calloc(src->n, sizeof *dst->v)))
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        engine_price *p = &dst->v[dst->n];
        *p = src->v[i];
        p->provider = strdup(src->v[i].provider);
        p->model = strdup(src->v[i].model);
        dst->n++;
        if (!p->provider || !p->model) {
            engine_prices_fini(dst);
            return -1;
        }
    }
    return 0;
}

const engine_price *engine_price_find(const engine_prices *p, const char *provider,
                                      const char *model)
{
    const engine_price *any = NULL;
    if (!p || !provider)
        return NULL;
    for (size_t i = 0; i < p->n; i++) {
        const engine_price *e = &p->v[i];
        if (strcmp(e->provider, provider) != 0)
            continue;
        if (model && strcmp(e->model, model) == 0)
            return e;
        if (strcmp(e->model, "*") == 0)
            any = e;
    }
    return any;
}

double engine_price_cost(const engine_price *price, const loom_usage *u, bool chat)
{
    if (!price || !u || u->input_tokens < 0 || (chat && u->output_tokens < 0))
        return -1;
    double in = (double)u->input_tokens;
    double out = u->output_tokens > 0 ? (double)u->output_tokens : 0;
    double rd = u->cache_read_tokens > 0 ? (double)u->cache_read_tokens : 0;
    double wr = u->cache_write_tokens > 0 ? (double)u->cache_write_tokens : 0;
    /* cached tokens are part of the input count (loom_usage): a provider
     * that says more were cached than were sent is held to the input */
    if (rd > in)
        rd = in;
    if (wr > in - rd)
        wr = in - rd;
    double prd = price->cache_read >= 0 ? price->cache_read : price->input;
    double pwr = price->cache_write >= 0 ? price->cache_write : price->input;
    return ((in - rd - wr) * price->input + rd * prd + wr * pwr + out * price->output) / 1e6;
}

void engine_price_batch(const engine_price *price, engine_price *out)
{
    *out = *price;
    double f = price->batch_discount > 0 ? price->batch_discount : 0.5;
    out->input = price->batch_input >= 0 ? price->batch_input : price->input * f;
    out->output = price->batch_output >= 0 ? price->batch_output : price->output * f;
    /* a cache price follows the input's: what the batch takes off the
     * input it takes off cached input too */
    double fin = price->input > 0 ? out->input / price->input : f;
    if (price->cache_read >= 0)
        out->cache_read = price->cache_read * fin;
    if (price->cache_write >= 0)
        out->cache_write = price->cache_write * fin;
}

double engine_price_estimate(const engine_price *price, int64_t in, int64_t out)
{
    if (!price)
        return -1;
    return ((double)(in > 0 ? in : 0) * price->input + (double)(out > 0 ? out : 0) * price->output) /
           1e6;
}

/* ---- the ledger */

typedef struct tenant_acct {
    struct tenant_acct *next;
    char *name;                /* owned */
    double per_day, per_month; /* limits; < 0: none */
    char day[11], month[8];    /* the periods the spend below is of ("" before any) */
    double day_usd, month_usd;
    double reserved;           /* held by calls in flight (counts for both periods) */
} tenant_acct;

struct engine_ledger {
    tenant_acct *tenants;
    time_t (*now)(void *ud);
    void *now_ud;
    engine_spend_fn spend;
    void *spend_ud;
    double total;
    json_t *by_workflow, *by_provider, *by_tenant; /* {NAME: usd} */
};

engine_ledger *engine_ledger_new(void)
{
    engine_ledger *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->by_workflow = json_object();
    l->by_provider = json_object();
    l->by_tenant = json_object();
    if (!l->by_workflow || !l->by_provider || !l->by_tenant) {
        engine_ledger_free(l);
        return NULL;
    }
    return l;
}

void engine_ledger_free(engine_ledger *l)
{
    if (!l)
        return;
    for (tenant_acct *t = l->tenants, *nx; t; t = nx) {
        nx = t->next;
        free(t->name);
        free(t);
    }
    json_decref(l->by_workflow);
    json_decref(l->by_provider);
    json_decref(l->by_tenant);
    free(l);
}

void engine_ledger_set_clock(engine_ledger *l, time_t (*now)(void *ud), void *ud)
{
    l->now = now;
    l->now_ud = ud;
}

void engine_ledger_set_spend_hook(engine_ledger *l, engine_spend_fn fn, void *ud)
{
    l->spend = fn;
    l->spend_ud = ud;
}

/* The current UTC day and month of L's clock. */
static void periods(const engine_ledger *l, char day[11], char month[8])
{
    time_t t = l->now ? l->now(l->now_ud) : time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof tm);
    unsigned y = (unsigned)(tm.tm_year + 1900) % 10000u, m = (unsigned)(tm.tm_mon + 1) % 100u,
             dd = (unsigned)tm.tm_mday % 100u;
    snprintf(day, 11, "%04u-%02u-%02u", y, m, dd);
    snprintf(month, 8, "%04u-%02u", y, m);
}

/* TENANT's account with its periods brought to now (a new day starts at
 * 0), made when first named. NULL when out of memory. */
static tenant_acct *acct(engine_ledger *l, const char *tenant)
{
    tenant_acct *t;
    for (t = l->tenants; t; t = t->next)
        if (strcmp(t->name, tenant) == 0)
            break;
    if (!t) {
        if (!(t = calloc(1, sizeof *t)) || !(t->name = strdup(tenant))) {
            free(t);
            return NULL;
        }
        t->per_day = t->per_month = -1;
        t->next = l->tenants;
        l->tenants = t;
    }
    char day[11], month[8];
    periods(l, day, month);
    if (strcmp(t->day, day) != 0) {
        memcpy(t->day, day, sizeof day);
        t->day_usd = 0;
    }
    if (strcmp(t->month, month) != 0) {
        memcpy(t->month, month, sizeof month);
        t->month_usd = 0;
    }
    return t;
}

int engine_ledger_set_limits(engine_ledger *l, const char *tenant, double per_day,
                             double per_month)
{
    tenant_acct *t = acct(l, tenant);
    if (!t)
        return -1;
    t->per_day = per_day;
    t->per_month = per_month;
    return 0;
}

void engine_ledger_clear_limits(engine_ledger *l)
{
    for (tenant_acct *t = l->tenants; t; t = t->next)
        t->per_day = t->per_month = -1;
}

int engine_ledger_restore(engine_ledger *l, const char *tenant, const char *period, double usd)
{
    tenant_acct *t = acct(l, tenant);
    if (!t)
        return -1;
    if (!isfinite(usd) || usd <= 0)
        return 0;
    if (strcmp(period, t->day) == 0)
        t->day_usd += usd;
    else if (strcmp(period, t->month) == 0)
        t->month_usd += usd;
    return 0;
}

json_t *engine_ledger_tenant_json(engine_ledger *l, const char *tenant)
{
    tenant_acct *t = acct(l, tenant);
    if (!t)
        return NULL;
    return json_pack("{s:s, s:f, s:s, s:f, s:f, s:o, s:o}", "day", t->day, "day_usd", t->day_usd,
                     "month", t->month, "month_usd", t->month_usd, "reserved_usd", t->reserved,
                     "usd_per_day", t->per_day >= 0 ? json_real(t->per_day) : json_null(),
                     "usd_per_month", t->per_month >= 0 ? json_real(t->per_month) : json_null());
}

json_t *engine_ledger_budgets_json(engine_ledger *l)
{
    json_t *o = json_object();
    for (tenant_acct *t = l->tenants; o && t; t = t->next)
        if (json_object_set_new(o, t->name, engine_ledger_tenant_json(l, t->name)) < 0) {
            json_decref(o);
            return NULL;
        }
    return o;
}

static void count(json_t *by, const char *name, double usd)
{
    if (!name)
        return;
    json_t *v = json_object_get(by, name);
    json_object_set_new(by, name, json_real(json_number_value(v) + usd));
}

json_t *engine_ledger_stats(const engine_ledger *l)
{
    return json_pack("{s:f, s:O, s:O, s:O}", "usd", l->total, "by_workflow", l->by_workflow,
                     "by_provider", l->by_provider, "by_tenant", l->by_tenant);
}

int engine_ledger_reserve(engine_ledger *l, const char *tenant, double job_limit,
                          double job_spent, double *job_reserved, double est, engine_hold *h,
                          char *msg, size_t msglen)
{
    h->held = false;
    if (job_limit >= 0 && job_spent + *job_reserved + est > job_limit) {
        snprintf(msg, msglen,
                 "the job's budget of %.6g USD would be passed: %.6g spent, %.6g held by calls "
                 "in flight, this call is estimated at %.6g",
                 job_limit, job_spent, *job_reserved, est);
        return -1;
    }
    tenant_acct *t = l ? acct(l, tenant ? tenant : "default") : NULL;
    if (t && t->per_day >= 0 && t->day_usd + t->reserved + est > t->per_day) {
        snprintf(msg, msglen,
                 "tenant '%s' would pass its budget of %.6g USD for %s: %.6g spent, %.6g held "
                 "by calls in flight, this call is estimated at %.6g",
                 t->name, t->per_day, t->day, t->day_usd, t->reserved, est);
        return -1;
    }
    if (t && t->per_month >= 0 && t->month_usd + t->reserved + est > t->per_month) {
        snprintf(msg, msglen,
                 "tenant '%s' would pass its budget of %.6g USD for %s: %.6g spent, %.6g held "
                 "by calls in flight, this call is estimated at %.6g",
                 t->name, t->per_month, t->month, t->month_usd, t->reserved, est);
        return -1;
    }
    if (t)
        t->reserved += est;
    *job_reserved += est;
    h->est = est;
    h->job_reserved = job_reserved;
    h->held = true;
    return 0;
}

void engine_ledger_settle(engine_ledger *l, const char *tenant, const char *workflow,
                          const char *provider, engine_hold *h, double cost)
{
    tenant_acct *t = l ? acct(l, tenant ? tenant : "default") : NULL;
    if (h->held) {
        if (t)
            t->reserved = t->reserved > h->est ? t->reserved - h->est : 0;
        if (h->job_reserved)
            *h->job_reserved = *h->job_reserved > h->est ? *h->job_reserved - h->est : 0;
    }
    h->held = false;
    h->est = 0;
    if (!(cost > 0) || !isfinite(cost))
        return;
    if (!l)
        return;
    if (t) {
        t->day_usd += cost;
        t->month_usd += cost;
        if (l->spend)
            l->spend(l->spend_ud, t->name, t->day, t->month, cost);
    }
    l->total += cost;
    count(l->by_workflow, workflow, cost);
    count(l->by_provider, provider, cost);
    count(l->by_tenant, t ? t->name : tenant, cost);
}
