/* config_tenants.c -- `tenants:` in the config file (config_tenants.h).
 * Errors are FILE:LINE:COL like the rest of the file. */
#include "daemon/config_tenants.h"

#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"

static const char *const tenant_keys[] = { "weight", "max_running_jobs", "max_queued_jobs",
                                           "budget", NULL };
static const char *const budget_keys[] = { "usd_per_day", "usd_per_month", NULL };

int config_tenant_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CONFIG_TENANT_MAX_NAME)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return 1;
}

static void get_count(dsl_diags *d, const dsl_ynode *x, const char *key, int64_t min,
                      int64_t max, int64_t *out)
{
    int64_t v;
    if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_INT || dsl_yscalar_int(x, &v) < 0)
        dsl_type_error(d, x, key, "an integer");
    else if (v < min || v > max)
        dsl_error(d, x->line, x->col, "'%s' must be from %lld to %lld, got %lld", key,
                  (long long)min, (long long)max, (long long)v);
    else
        *out = v;
}

static void get_usd(dsl_diags *d, const dsl_ynode *x, const char *key, double *out)
{
    double v;
    dsl_ytype t = x->kind == DSL_Y_SCALAR ? dsl_yscalar_type(x) : DSL_YT_NULL;
    if (x->kind != DSL_Y_SCALAR || (t != DSL_YT_INT && t != DSL_YT_FLOAT) ||
        dsl_yscalar_double(x, &v) < 0)
        dsl_type_error(d, x, key, "a number of US dollars");
    else if (!(v >= 0 && v <= 1e9)) /* also refuses .nan */
        dsl_error(d, x->line, x->col, "'%s' must be from 0 to 1000000000 US dollars", key);
    else
        *out = v;
}

static void parse_budget(dsl_diags *d, const dsl_ynode *y, config_tenant *t)
{
    const dsl_ynode *x;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "budget", "a mapping of usd_per_day, usd_per_month");
        return;
    }
    dsl_check_keys(d, y, budget_keys, "budget");
    if ((x = dsl_ymap_get(y, "usd_per_day")))
        get_usd(d, x, "usd_per_day", &t->usd_per_day);
    if ((x = dsl_ymap_get(y, "usd_per_month")))
        get_usd(d, x, "usd_per_month", &t->usd_per_month);
}

static void parse_tenant(dsl_diags *d, const dsl_ynode *key, const dsl_ynode *y, config_tenant *t)
{
    const dsl_ynode *x;
    if (y && y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_NULL)
        return; /* `name:` alone: every default */
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, key->u.scalar.str,
                       "a mapping of weight, max_running_jobs, max_queued_jobs, budget");
        return;
    }
    dsl_check_keys(d, y, tenant_keys, "tenant");
    if ((x = dsl_ymap_get(y, "weight")))
        get_count(d, x, "weight", 1, CONFIG_TENANT_MAX_WEIGHT, &t->weight);
    if ((x = dsl_ymap_get(y, "max_running_jobs")))
        get_count(d, x, "max_running_jobs", 1, 1000000, &t->max_running_jobs);
    if ((x = dsl_ymap_get(y, "max_queued_jobs")))
        get_count(d, x, "max_queued_jobs", 1, 10000000, &t->max_queued_jobs);
    if ((x = dsl_ymap_get(y, "budget")))
        parse_budget(d, x, t);
}

void config_tenants_parse(dsl_diags *d, const dsl_ynode *y, config_tenants *t)
{
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "tenants", "a mapping of tenant names to their limits");
        return;
    }
    config_tenant *v = calloc(y->u.map.n + 1, sizeof *v);
    if (!v) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    t->v = v;
    t->n = 0;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        const char *name = k->u.scalar.str;
        if (!config_tenant_name_ok(name)) {
            dsl_error(d, k->line, k->col,
                      "tenant name '%s' must be 1 to %d letters, digits, '_', '-' or '.'", name,
                      CONFIG_TENANT_MAX_NAME);
            continue;
        }
        config_tenant *e = &v[t->n];
        *e = (config_tenant){ .weight = 1, .usd_per_day = -1, .usd_per_month = -1,
                              .line = k->line, .col = k->col };
        if (!(e->name = strdup(name))) {
            dsl_error(d, k->line, k->col, "out of memory");
            return;
        }
        t->n++;
        parse_tenant(d, k, y->u.map.pairs[i].value, e);
    }
}

void config_tenants_free(config_tenants *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].name);
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

const config_tenant *config_tenant_find(const config_tenants *t, const char *name)
{
    for (size_t i = 0; name && i < t->n; i++)
        if (strcmp(t->v[i].name, name) == 0)
            return &t->v[i];
    return NULL;
}

int config_tenant_known(const config_tenants *t, const char *name)
{
    return name && (strcmp(name, CONFIG_TENANT_DEFAULT) == 0 || config_tenant_find(t, name));
}
