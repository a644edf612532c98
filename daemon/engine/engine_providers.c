/* engine_providers.c -- provider instances: each made from its plugin
 * (options checked, init run), with the upstream its calls go through
 * handed in ready-made by the caller (daemon/providers.c builds it from the
 * config file, with its limits); their counters for stats. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"
#include "daemon/upstream/upstream.h"

pinst_t *pinst_find(engine_t *e, const char *name)
{
    for (pinst_t *p = e->providers; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* ---- provider instances */

/* upstream_log_fn: loom_log from the instance's encode and decode, or its
 * invoke, timers and cancel. */
static void pinst_vlog(void *ud, int level, const char *fmt, va_list ap)
{
    const pinst_t *pi = ud;
    plugins_vlog(pi->plugins, pi->prov->plugin->name, level, fmt, ap);
}

int engine_add_provider(engine_t *e, const char *instance_name, const char *provider_name,
                        json_t *config, engine_upstream_fn make_upstream, void *ud, char *err,
                        size_t errlen)
{
    const plugins_provider *pp = plugins_provider_find(e->plugins, provider_name);
    json_t *cfg = NULL;
    pinst_t *pi = NULL;
    bool inited = false;
    if (!pp) {
        snprintf(err, errlen, "no provider plugin '%s'", provider_name);
        return -1;
    }
    if (pinst_find(e, instance_name)) {
        snprintf(err, errlen, "provider '%s' is defined twice", instance_name);
        return -1;
    }
    if (!pp->def->invoke && (!pp->def->encode || !pp->def->decode)) {
        snprintf(err, errlen, "provider plugin '%s' has neither invoke nor encode and decode",
                 provider_name);
        return -1;
    }
    /* a deep copy: the check adds defaults and normalises durations in place */
    cfg = config ? json_deep_copy(config) : json_object();
    if (!cfg || !json_is_object(cfg)) {
        snprintf(err, errlen, cfg ? "the config of '%s' must be a mapping" : "out of memory",
                 instance_name);
        goto fail;
    }
    /* A provider that declares `name` learns its instance name (the mock
     * registers its counters under it). */
    for (const loom_option *o = pp->def->options; o && o->name; o++)
        if (strcmp(o->name, "name") == 0 && !json_object_get(cfg, "name")) {
            if (json_object_set_new(cfg, "name", json_string(instance_name)) < 0) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            break;
        }
    if (plugins_check_options(pp->def->options, cfg, err, errlen) < 0)
        goto fail;
    pi = calloc(1, sizeof *pi);
    if (!pi || !(pi->name = strdup(instance_name))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    pi->prov = pp;
    pi->plugins = e->plugins;
    pi->isolated = engine_provider_isolated(e, provider_name);
    if (pi->isolated) {
        /* its instance lives in the plugin's helpers; the upstream (its
         * limits) is here, sending through them */
        void *tud = isolated_transport_new(e, pp, pi->name, cfg, err, errlen);
        if (!tud)
            goto fail;
        if (!make_upstream) {
            engine_iso_transport.free(tud);
            snprintf(err, errlen, "an isolated provider needs an upstream");
            goto fail;
        }
        if (!(pi->up = make_upstream(ud, pi->name, pp->def, tud, err, errlen)))
            goto fail;
        upstream_set_log(pi->up, pinst_vlog, pi);
        json_decref(cfg);
        pi->next = e->providers;
        e->providers = pi;
        return 0;
    }
    if (pp->def->init) {
        hctx h;
        hctx_init(&h, e->plugins, pp->plugin);
        if (pp->def->init(&h.base, pp->plugin_state, cfg, &pi->state) < 0) {
            snprintf(err, errlen, "%s", h.msg[0] ? h.msg : "init failed");
            goto fail;
        }
    }
    inited = true;
    /* last: nothing after it can fail, so the upstream is never dropped
     * half counted by whoever made it */
    if (make_upstream) {
        if (!(pi->up = make_upstream(ud, pi->name, pp->def, pi->state, err, errlen)))
            goto fail;
    } else if (!pp->def->invoke) {
        snprintf(err, errlen, "provider plugin '%s' speaks HTTP: it needs an upstream",
                 provider_name);
        goto fail;
    } else if (!(pi->up = upstream_new_invoke(e->r, pi->name, pp->def, pi->state, NULL, NULL))) {
        /* no maker: an invoke provider without limits (tests, embedders) */
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    upstream_set_log(pi->up, pinst_vlog, pi);
    upstream_set_plugin_abi(pi->up, pp->plugin->abi_minor);
    json_decref(cfg);
    pi->next = e->providers;
    e->providers = pi;
    return 0;
fail:
    if (inited && pp->def->fini)
        pp->def->fini(pi->state);
    if (pi)
        free(pi->name);
    free(pi);
    json_decref(cfg);
    return -1;
}

void pinst_free_all(engine_t *e)
{
    while (e->providers) {
        pinst_t *pi = e->providers;
        e->providers = pi->next;
        upstream_free(pi->up); /* before fini: its calls use the state */
        if (pi->prov->def->fini && !pi->isolated)
            pi->prov->def->fini(pi->state);
        free(pi->name);
        free(pi);
    }
}

upstream_t *engine_provider_upstream(engine_t *e, const char *name)
{
    pinst_t *pi = pinst_find(e, name);
    return pi ? pi->up : NULL;
}

json_t *engine_provider_stats(engine_t *e)
{
    json_t *all = json_object();
    for (pinst_t *pi = e->providers; all && pi; pi = pi->next) {
        upstream_stats_t st;
        upstream_stats(pi->up, &st);
        json_t *o = json_pack(
            "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:b}", "plugin",
            pi->prov->def->name, "in_flight", (json_int_t)st.limiter.in_flight, "queued",
            (json_int_t)st.limiter.queued, "requests", (json_int_t)st.requests, "succeeded",
            (json_int_t)st.succeeded, "failed", (json_int_t)st.failed, "rate_limited",
            (json_int_t)st.rate_limited, "batches", (json_int_t)st.batches, "input_tokens",
            (json_int_t)st.input_tokens, "output_tokens", (json_int_t)st.output_tokens,
            "latency_ms", st.latency_ewma_us / 1000.0, "concurrency",
            (json_int_t)st.limiter.effective_concurrency, "disabled", st.disabled);
        if (o)
            json_object_set_new(o, "timeouts", json_integer((json_int_t)st.timeouts));
        /* sitting out a 429's wait now (metrics: loom_provider_paused) */
        if (o)
            json_object_set_new(o, "paused", json_boolean(st.limiter.paused_until_us != 0));
        json_object_set_new(all, pi->name, o);
    }
    return all;
}
