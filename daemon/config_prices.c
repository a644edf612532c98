/* config_prices.c -- the `prices` section (config_prices.h).
 *
 * Every number is checked where it is written: a price is a finite number
 * of USD per million tokens, at least 0; a batch discount is a factor in
 * (0, 1]. Input and output are required: a price that leaves one out would
 * make every cost a guess. */
#include "daemon/config_prices.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "dsl/suggest.h"

static const char *const price_keys[] = { "input", "output", "cache_read", "cache_write",
                                          "batch_discount", "batch_input", "batch_output",
                                          NULL };

/* *OUT from KEY of Y when present: 0 absent or set, -1 reported. */
static int get_number(dsl_diags *d, const dsl_ynode *y, const char *key, double min, double max,
                      bool min_open, double *out)
{
    const dsl_ynode *x = dsl_ymap_get(y, key);
    double v;
    if (!x)
        return 0;
    dsl_ytype t = x->kind == DSL_Y_SCALAR ? dsl_yscalar_type(x) : DSL_YT_STRING;
    if ((t != DSL_YT_INT && t != DSL_YT_FLOAT) || dsl_yscalar_double(x, &v) < 0 || !isfinite(v)) {
        dsl_type_error(d, x, key, "a number");
        return -1;
    }
    if (v < min || (min_open && v == min) || v > max) {
        dsl_error(d, x->line, x->col, "'%s' must be %s %g and at most %g, got %g", key,
                  min_open ? "over" : "at least", min, max, v);
        return -1;
    }
    *out = v;
    return 0;
}

static void parse_price(dsl_diags *d, const dsl_ynode *model, const dsl_ynode *y,
                        engine_price *p)
{
    p->line = y->line;
    p->col = y->col;
    p->cache_read = p->cache_write = -1;
    p->batch_input = p->batch_output = -1;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, model->u.scalar.str,
                       "a mapping of prices (input, output, cache_read, cache_write, "
                       "batch_discount, batch_input, batch_output)");
        return;
    }
    dsl_check_keys(d, y, price_keys, "price");
    for (int i = 0; i < 2; i++) {
        const char *key = i ? "output" : "input";
        if (!dsl_ymap_get(y, key))
            dsl_error(d, y->line, y->col, "missing required key '%s' in the price of '%s'", key,
                      model->u.scalar.str);
    }
    get_number(d, y, "input", 0, 1e9, false, &p->input);
    get_number(d, y, "output", 0, 1e9, false, &p->output);
    get_number(d, y, "cache_read", 0, 1e9, false, &p->cache_read);
    get_number(d, y, "cache_write", 0, 1e9, false, &p->cache_write);
    get_number(d, y, "batch_discount", 0, 1, true, &p->batch_discount);
    get_number(d, y, "batch_input", 0, 1e9, false, &p->batch_input);
    get_number(d, y, "batch_output", 0, 1e9, false, &p->batch_output);
}

void config_prices_parse(dsl_diags *d, const dsl_ynode *y, engine_prices *out)
{
    engine_prices_fini(out);
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "prices", "a mapping of provider names to their models' prices");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *models = y->u.map.pairs[i].value;
        if (models->kind != DSL_Y_MAP)
            dsl_type_error(d, models, y->u.map.pairs[i].key->u.scalar.str,
                           "a mapping of model names (or \"*\") to prices");
        else
            n += models->u.map.n;
    }
    if (!n)
        return;
    if (!(out->v = calloc(n, sizeof *out->v))) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *prov = y->u.map.pairs[i].key, *models = y->u.map.pairs[i].value;
        if (models->kind != DSL_Y_MAP)
            continue;
        for (size_t j = 0; j < models->u.map.n; j++) {
            const dsl_ynode *model = models->u.map.pairs[j].key;
            engine_price *p = &out->v[out->n];
            if (!(p->provider = strdup(prov->u.scalar.str)) ||
                !(p->model = strdup(model->u.scalar.str))) {
                free(p->provider);
                p->provider = NULL;
                dsl_error(d, model->line, model->col, "out of memory");
                return;
            }
            out->n++;
            parse_price(d, model, models->u.map.pairs[j].value, p);
            /* the entry's position is its provider key's, for the check below */
            p->line = prov->line;
            p->col = prov->col;
        }
    }
}

void config_prices_check(dsl_diags *d, const engine_prices *p, const char *const *providers)
{
    const char *last = NULL;
    for (size_t i = 0; i < p->n; i++) {
        const char *name = p->v[i].provider;
        if (last && strcmp(last, name) == 0)
            continue; /* one message per provider, not per model */
        last = name;
        size_t k;
        for (k = 0; providers && providers[k]; k++)
            if (strcmp(providers[k], name) == 0)
                break;
        if (providers && providers[k])
            continue;
        const char *near = providers ? dsl_suggest(name, strlen(name), providers, (size_t)-1)
                                     : NULL;
        if (near)
            dsl_error(d, p->v[i].line, p->v[i].col,
                      "prices for unknown provider '%s'; did you mean '%s'?", name, near);
        else
            dsl_error(d, p->v[i].line, p->v[i].col,
                      "prices for unknown provider '%s' (not in 'providers')", name);
    }
}
