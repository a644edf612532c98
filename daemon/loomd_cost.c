/* loomd_cost.c -- cost and budgets in the daemon: the ledger that outlives
 * engine generations, each generation's prices, tenants' budgets from the
 * config, and their spend kept in the store.
 *
 * Tenant spend survives a restart through the store's spend ledger (one row
 * per tenant and UTC day or month, schema v5), written as each call's cost
 * settles and read back at start. Deriving it instead from the jobs' stored
 * costs would miss what running jobs (and jobs cut short by a crash) had
 * spent, and would date a long job's spend by its end, not by its calls. */
#include <stdio.h>
#include <string.h>

#include "daemon/loomd.h"

static void on_spend_written(void *ud, const store_result_t *res)
{
    loomd *d = ud;
    if (res->status < 0)
        log_write(&d->log, LOOM_LOG_WARN, NULL,
                  "a call's cost was not recorded in the spend ledger: %s (a restart "
                  "forgets it)", res->error);
}

/* engine_spend_fn: persists one settled call's cost. */
static void on_spend(void *ud, const char *tenant, const char *day, const char *month,
                     double usd)
{
    loomd *d = ud;
    int rc = store_add_spend(d->store, tenant, day, month, usd, on_spend_written, d);
    if (rc < 0)
        log_write(&d->log, LOOM_LOG_WARN, NULL,
                  "a call's cost was not recorded in the spend ledger: %s", strerror(-rc));
}

int loomd_cost_gen(loomd *d, lgen *g, const config *cfg)
{
    if (!d->ledger && !(d->ledger = engine_ledger_new()))
        return -1;
    /* the generation's own copy: a reload frees the config it came from
     * while the generation's jobs still run */
    if (engine_prices_copy(&g->prices, &cfg->prices) < 0)
        return -1;
    engine_set_prices(g->eng, &g->prices);
    engine_set_ledger(g->eng, d->ledger);
    return 0;
}

void loomd_cost_limits(loomd *d)
{
    if (!d->ledger)
        return;
    engine_ledger_clear_limits(d->ledger);
    const config_tenants *t = &d->cfg->tenants;
    for (size_t i = 0; i < t->n; i++)
        if ((t->v[i].usd_per_day >= 0 || t->v[i].usd_per_month >= 0) &&
            engine_ledger_set_limits(d->ledger, t->v[i].name, t->v[i].usd_per_day,
                                     t->v[i].usd_per_month) < 0)
            log_write(&d->log, LOOM_LOG_ERROR, NULL,
                      "out of memory: tenant %s's budget is not enforced", t->v[i].name);
}

int loomd_cost_start(loomd *d)
{
    char err[256], day[11], month[8];
    json_t *spend = NULL, *periods, *v;
    const char *tenant, *period;
    if (!d->ledger && !(d->ledger = engine_ledger_new())) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start: out of memory");
        return -1;
    }
    /* the periods the ledger counts now: its own view of "today" */
    json_t *now = engine_ledger_tenant_json(d->ledger, CONFIG_TENANT_DEFAULT);
    const char *dv = json_string_value(json_object_get(now, "day"));
    const char *mv = json_string_value(json_object_get(now, "month"));
    snprintf(day, sizeof day, "%s", dv ? dv : "");
    snprintf(month, sizeof month, "%s", mv ? mv : "");
    json_decref(now);
    if (store_load_spend(d->store, day, month, &spend, err, sizeof err) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "state: the spend ledger: %s", err);
        return -1;
    }
    json_object_foreach(spend, tenant, periods) {
        json_object_foreach(periods, period, v) {
            if (engine_ledger_restore(d->ledger, tenant, period, json_number_value(v)) < 0) {
                json_decref(spend);
                log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start: out of memory");
                return -1;
            }
        }
    }
    json_decref(spend);
    engine_ledger_set_spend_hook(d->ledger, on_spend, d);
    loomd_cost_limits(d);
    return 0;
}

void loomd_cost_detach(loomd *d)
{
    if (d->ledger)
        engine_ledger_set_spend_hook(d->ledger, NULL, NULL);
}

void loomd_cost_free(loomd *d)
{
    engine_ledger_free(d->ledger);
    d->ledger = NULL;
}

json_t *loomd_cost_stats(loomd *d)
{
    if (!d->ledger)
        return json_pack("{s:f, s:{}, s:{}, s:{}, s:{}}", "usd", 0.0, "by_workflow",
                         "by_provider", "by_tenant", "budgets");
    json_t *o = engine_ledger_stats(d->ledger);
    /* each tenant's spend of today and this month against its budgets:
     * unlike the counters above, these survive a restart */
    if (o)
        json_object_set_new(o, "budgets", engine_ledger_budgets_json(d->ledger));
    return o;
}
