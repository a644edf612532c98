/* engine_providers.c -- provider instances: each configured provider made
 * from its plugin (options checked, init run) and, for HTTP providers, its
 * upstream (limiter, batching, curl) and the open-file budget it needs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/engine/engine_internal.h"
#include "daemon/core/http.h"
#include "daemon/upstream/upstream.h"

pinst_t *pinst_find(engine_t *e, const char *name)
{
    for (pinst_t *p = e->providers; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* ---- provider instances */

/* The HTTP side of a new instance PI of CP: the client (made with the first
 * HTTP provider), the open-file check and the upstream. */
static int add_upstream(engine_t *e, pinst_t *pi, const config_provider *cp, char *err,
                        size_t errlen)
{
    /* sockets the daemon needs besides provider connections: clients,
     * the store, plugins' files */
    enum { FD_RESERVE = 256 };
    if (!e->http) {
        e->nofile = http_raise_nofile();
        if (e->nofile < 0)
            e->nofile = 1024;
        http_options ho = { .max_connections = e->nofile > 2 * FD_RESERVE
                                                   ? e->nofile - FD_RESERVE : e->nofile / 2 };
        if (!(e->http = http_client_new(e->r, &ho))) {
            snprintf(err, errlen, "cannot start the HTTP client: %s", strerror(errno));
            return -1;
        }
    }
    int64_t conns = cp->limits.concurrency > 0 ? cp->limits.concurrency : RL_DEFAULT_CEILING;
    if (e->http_conns + conns + FD_RESERVE > e->nofile) {
        snprintf(err, errlen,
                 "limits.concurrency allows %lld calls in flight (%lld over all HTTP providers) "
                 "but the open-file limit is %ld, of which %d are kept for the daemon: raise "
                 "the limit (LimitNOFILE= in the unit, ulimit -n) or lower the concurrency",
                 (long long)conns, (long long)(e->http_conns + conns), e->nofile, FD_RESERVE);
        return -1;
    }
    upstream_options uo = {
        .timeouts = { .connect_ms = cp->timeout_connect_ms ? cp->timeout_connect_ms : 10000,
                      .first_byte_ms = cp->timeout_first_byte_ms ? cp->timeout_first_byte_ms
                                                                 : 120000,
                      .total_ms = cp->timeout_total_ms ? cp->timeout_total_ms : 600000 },
        .batch_max_inputs = cp->batch_max_inputs,
        .batch_max_tokens = cp->batch_max_tokens,
        .batch_window_ms = cp->batch_window_ms,
    };
    if (!(pi->up = upstream_new(e->r, e->http, pi->name, pi->prov->def, pi->state, &cp->limits,
                                &uo))) {
        snprintf(err, errlen, "%s", errno == EINVAL ? "negative limits" : "out of memory");
        return -1;
    }
    pi->max_conns = conns;
    e->http_conns += conns;
    return 0;
}

int engine_add_configured_provider(engine_t *e, const config_provider *cp, char *err,
                                   size_t errlen)
{
    const char *instance_name = cp->name;
    const plugins_provider *pp = plugins_provider_find(e->plugins, cp->plugin);
    json_t *cfg = NULL;
    pinst_t *pi = NULL;
    if (!pp) {
        snprintf(err, errlen, "no provider plugin '%s'", cp->plugin);
        return -1;
    }
    if (pinst_find(e, instance_name)) {
        snprintf(err, errlen, "provider '%s' is defined twice", instance_name);
        return -1;
    }
    if (!pp->def->invoke && (!pp->def->encode || !pp->def->decode)) {
        snprintf(err, errlen, "provider plugin '%s' has neither invoke nor encode and decode",
                 cp->plugin);
        return -1;
    }
    /* a deep copy: the check adds defaults and normalises durations in place */
    cfg = cp->options ? json_deep_copy(cp->options) : json_object();
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
    if (pp->def->init) {
        hctx h;
        hctx_init(&h);
        if (pp->def->init(&h.base, pp->plugin_state, cfg, &pi->state) < 0) {
            snprintf(err, errlen, "%s", h.msg[0] ? h.msg : "init failed");
            goto fail;
        }
    }
    if (!pp->def->invoke && add_upstream(e, pi, cp, err, errlen) < 0) {
        if (pp->def->fini)
            pp->def->fini(pi->state);
        goto fail;
    }
    json_decref(cfg);
    pi->next = e->providers;
    e->providers = pi;
    return 0;
fail:
    if (pi)
        free(pi->name);
    free(pi);
    json_decref(cfg);
    return -1;
}

int engine_add_provider(engine_t *e, const char *instance_name, const char *provider_name,
                        json_t *options, char *err, size_t errlen)
{
    config_provider cp = { .name = (char *)instance_name, .plugin = (char *)provider_name,
                           .options = options };
    return engine_add_configured_provider(e, &cp, err, errlen);
}

void call_free_providers(engine_t *e)
{
    while (e->providers) {
        pinst_t *pi = e->providers;
        e->providers = pi->next;
        upstream_free(pi->up); /* before fini: its calls use the state */
        if (pi->prov->def->fini)
            pi->prov->def->fini(pi->state);
        free(pi->name);
        free(pi);
    }
}

json_t *engine_provider_stats(engine_t *e)
{
    json_t *all = json_object();
    for (pinst_t *pi = e->providers; all && pi; pi = pi->next) {
        json_t *o;
        if (pi->up) {
            upstream_stats_t st;
            upstream_stats(pi->up, &st);
            o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:b}",
                          "plugin", pi->prov->def->name,
                          "in_flight", (json_int_t)st.limiter.in_flight,
                          "queued", (json_int_t)st.limiter.queued,
                          "requests", (json_int_t)st.requests,
                          "succeeded", (json_int_t)st.succeeded,
                          "failed", (json_int_t)st.failed,
                          "rate_limited", (json_int_t)st.rate_limited,
                          "batches", (json_int_t)st.batches,
                          "input_tokens", (json_int_t)st.input_tokens,
                          "output_tokens", (json_int_t)st.output_tokens,
                          "latency_ms", st.latency_ewma_us / 1000.0,
                          "concurrency", (json_int_t)st.limiter.effective_concurrency,
                          "disabled", st.disabled);
        } else {
            /* an invoke provider (the mock, an in-process model) has no
             * limiter or HTTP counters: what the engine saw */
            o = json_pack("{s:s, s:I, s:I, s:I}", "plugin", pi->prov->def->name, "requests",
                          (json_int_t)(pi->succeeded + pi->failed), "succeeded",
                          (json_int_t)pi->succeeded, "failed", (json_int_t)pi->failed);
        }
        json_object_set_new(all, pi->name, o);
    }
    return all;
}
