/* loomd_engine.c -- engine generations (see loomd.h) and the compiler's
 * registry of what exists where workflows run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/loomd.h"
#include "daemon/plugins/plugins_sigs.h"
#include "daemon/providers.h"

static void gen_free(lgen *g)
{
    engine_free(g->eng);
    providers_free(g->prov); /* after the engine: its upstreams use the client */
    engine_prices_fini(&g->prices); /* after the engine, which read them */
    free(g);
}

int gen_start(loomd *d, const config *cfg)
{
    char err[512];
    lgen *g = calloc(1, sizeof *g);
    if (!g) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "out of memory");
        return -1;
    }
    if (!(g->eng = engine_new(d->r, d->pool, d->plugins, NULL)) ||
        !(g->prov = providers_new(d->r)) || loomd_cost_gen(d, g, cfg) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start the engine: out of memory");
        gen_free(g);
        return -1;
    }
    providers_set_response_budget(g->prov, (size_t)cfg->max_response_bytes_in_flight);
    /* before the providers: an isolated plugin's invoke provider runs in its helpers */
    engine_set_isolate(g->eng, d->iso);
    loomd_mcp_attach(d, g->eng);
    loomd_batch_attach(d, g->eng);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const config_provider *p = &cfg->providers[i];
        if (providers_add(g->prov, g->eng, p, err, sizeof err) == 0)
            continue;
        if (cfg->file)
            log_write(&d->log, LOOM_LOG_ERROR, NULL, "%s:%d:%d: error: provider '%s': %s", cfg->file,
                      p->line, p->col, p->name, err);
        else
            log_write(&d->log, LOOM_LOG_ERROR, NULL, "provider '%s': %s", p->name, err);
        gen_free(g);
        return -1;
    }
    engine_set_workflow_lookup(g->eng, wfdir_engine_lookup, d->wf);
    engine_set_call_observer(g->eng, loomd_metrics_call, d);
    g->next = d->gens;
    d->gens = g;
    loomd_limits_gen(d, g, cfg);
    return 0;
}

void gen_collect(loomd *d)
{
    if (!d->gens)
        return;
    for (lgen **p = &d->gens->next; *p;) {
        lgen *g = *p;
        /* a request of the batch manager in flight on its HTTP client would
         * be dropped unanswered with it (loomd_batch_holds) */
        if (g->jobs == 0 && !loomd_batch_holds(d, g)) {
            *p = g->next;
            loomd_limits_gen_gone(d, g);
            gen_free(g);
        } else {
            p = &g->next;
        }
    }
}

void gen_free_all(loomd *d)
{
    while (d->gens) {
        lgen *g = d->gens;
        d->gens = g->next;
        loomd_limits_gen_gone(d, g);
        gen_free(g);
    }
}

json_t *gen_provider_stats(loomd *d)
{
    return d->gens ? engine_provider_stats(d->gens->eng) : json_object();
}

int gen_registry(loomd *d)
{
    const char **names = config_provider_names(d->cfg);
    /* a copy that owns its strings: the compile threads copy it again */
    dsl_lambda_sig *sigs = plugins_lambda_sigs(d->plugins);
    if (!names || !sigs) {
        free(names);
        free(sigs);
        return -1;
    }
    free(d->provider_names);
    free(d->lambda_sigs);
    d->provider_names = names;
    d->lambda_sigs = sigs;
    d->reg.providers = names;
    d->reg.lambdas = plugins_lambda_names(d->plugins);
    d->reg.workflows = NULL;
    d->reg.lambda_sigs = sigs;
    return 0;
}
