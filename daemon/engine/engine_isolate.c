/* engine_isolate.c -- a lambda leaf whose plugin is isolated: the call goes
 * to a helper process (daemon/isolate) instead of the worker pool, and its
 * answer comes back on the reactor like a pool call's. A crashed helper is
 * the typed error plugin_crashed, a helper past the plugin's timeout is
 * timeout: both classes a step's retry policy can name. A step's timeout or
 * a cancelled job gives the call up (isolated_cancel): the lambda sees
 * loom_cancelled in its helper and has a grace to return.
 *
 * An invoke provider of an isolated plugin runs in the plugin's helpers
 * too: its upstream (limits, batching, 429s, as for every provider) sends
 * through engine_iso_transport, whose sends are iso_invoke calls. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"
#include "daemon/isolate/iso.h"

/* One isolated call: owned by the leaf (a->k.leaf.call) until it ends or is
 * cancelled; iso_cancel guarantees the done callback never runs after. */
typedef struct icall {
    act_t *act;
    iso_call_t *call;
    char *cache_key;           /* owned, or NULL */
} icall;

void engine_set_isolate(engine_t *e, struct iso *iso)
{
    e->iso = iso;
}

static eerr *result_error(const act_t *a, const iso_result *res)
{
    const char *fn = a->node->u.lambda.fn;
    switch (res->status) {
    case ISO_FAILED: {
        int cls = dsl_error_class_find(res->code);
        return eerr_new(cls >= 0 ? (dsl_error_class)cls : DSL_ERR_LAMBDA_FAILED, NULL, a->node->path,
                        a->attempt, "%s", res->message);
    }
    case ISO_CRASHED:
        return eerr_new(DSL_ERR_PLUGIN_CRASHED, NULL, a->node->path, a->attempt, "%s", res->message);
    case ISO_TIMEOUT:
        return eerr_new(DSL_ERR_TIMEOUT, NULL, a->node->path, a->attempt, "%s", res->message);
    default:
        return eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path, a->attempt,
                        "lambda '%s': %s", fn, res->message ? res->message : "out of memory");
    }
}

static void isolated_done(void *ud, iso_result *res)
{
    icall *ic = ud;
    act_t *a = ic->act;
    engine_job_t *job = a->job;
    char msg[512];
    a->k.leaf.call = NULL;
    job->busy++;
    json_t *r = res->status == ISO_OK ? res->output : NULL;
    res->output = NULL;
    if (!r) {
        act_attempt_done(a, NULL, result_error(a, res));
    } else if (output_check(r, msg, sizeof msg) < 0) {
        json_decref(r);
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_INVALID_OUTPUT, NULL, a->node->path,
                                           a->attempt, "lambda '%s': %s",
                                           a->node->u.lambda.fn, msg));
    } else {
        leaf_cache_store(a, ic->cache_key, r);
        act_attempt_done(a, r, NULL);
    }
    free(ic->cache_key);
    free(ic);
    job->busy--;
    job_pump(job);
}

bool isolated_start(act_t *a, const plugins_lambda *lam, json_t *args, char *key)
{
    engine_t *e = a->job->eng;
    if (!e->iso || !iso_isolated(e->iso, lam->plugin->name))
        return false;
    icall *ic = calloc(1, sizeof *ic);
    if (ic) {
        ic->act = a;
        ic->cache_key = key;
        /* the step's deadline, as a pool call's ctx has it (the helper
         * takes the earlier of it and the plugin's timeout) */
        uint64_t deadline = a->node->timeout_ms ? hctx_now_ms() + a->node->timeout_ms : 0;
        ic->call = iso_call(e->iso, lam->plugin->name, lam->name, a->input, args, deadline,
                            isolated_done, ic);
    }
    json_decref(args);
    if (!ic || !ic->call) {
        free(ic);
        free(key);
        act_attempt_done(a, NULL, eerr_new(DSL_ERR_LAMBDA_FAILED, NULL, a->node->path, a->attempt,
                                           "cannot queue the call"));
        return true;
    }
    a->k.leaf.call = ic;
    a->k.leaf.call_kind = LEAF_ISOLATED;
    return true;
}

void isolated_cancel(act_t *a)
{
    icall *ic = a->k.leaf.call;
    iso_cancel(a->job->eng->iso, ic->call);
    free(ic->cache_key);
    free(ic);
    a->k.leaf.call = NULL;
}

/* ---- an isolated plugin's invoke provider: the upstream's transport */

typedef struct itransport {
    iso_instance_t *inst;      /* owned: ended with the transport */
} itransport;

bool engine_provider_isolated(const engine_t *e, const char *provider_name)
{
    const plugins_provider *pp = e->iso ? plugins_provider_find(e->plugins, provider_name) : NULL;
    return pp && pp->def->invoke && iso_isolated(e->iso, pp->plugin->name);
}

void *isolated_transport_new(engine_t *e, const plugins_provider *pp, const char *name,
                             json_t *cfg, char *err, size_t errlen)
{
    itransport *t = calloc(1, sizeof *t);
    if (!t || !(t->inst = iso_instance_new(e->iso, pp->plugin->name, pp->def->name, name, cfg))) {
        snprintf(err, errlen, "cannot make the instance in its plugin's helpers: %s",
                 strerror(t ? errno : ENOMEM));
        free(t);
        return NULL;
    }
    return t;
}

/* The stable code's name, as the helper sends it, back to its code. */
static loom_errcode errcode_of(const char *name)
{
    static const struct {
        const char *name;
        loom_errcode code;
    } codes[] = {
        { "timeout", LOOM_E_TIMEOUT },         { "rate_limited", LOOM_E_RATE_LIMITED },
        { "invalid_output", LOOM_E_INVALID_OUTPUT }, { "lambda_failed", LOOM_E_LAMBDA_FAILED },
        { "quota", LOOM_E_QUOTA },             { "invalid_request", LOOM_E_INVALID_REQUEST },
        { "config", LOOM_E_CONFIG },           { "out_of_memory", LOOM_E_NOMEM },
        { "tls", LOOM_E_TLS },
    };
    for (size_t i = 0; name && i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(codes[i].name, name) == 0)
            return codes[i].code;
    return LOOM_E_UPSTREAM;
}

static void it_done(void *ud, iso_invoke_result *r)
{
    upstream_result res = { .output = r->output, .usage = r->usage, .message = r->message,
                            .tool_calls = r->tool_calls };
    r->output = NULL;
    r->tool_calls = NULL;
    switch (r->status) {
    case ISO_OK:
        res.code = LOOM_OK;
        break;
    case ISO_FAILED:
        res.code = errcode_of(r->code);
        res.has_retry_after = r->retry_after_ms > 0;
        res.retry_after_ms = r->retry_after_ms;
        break;
    case ISO_CRASHED:
        res.code = ENGINE_E_PLUGIN_CRASHED;
        break;
    case ISO_TIMEOUT:
        res.code = LOOM_E_TIMEOUT;
        break;
    default:
        res.code = LOOM_E_NOMEM;
        break;
    }
    upstream_send_done(ud, &res);
}

static void it_start(void *ud, upstream_send_t *s, const loom_request *req,
                     const upstream_send_info *info)
{
    itransport *t = ud;
    iso_invoke_t *v = iso_invoke(t->inst, req, info ? info->deadline_ms : 0, it_done, s);
    if (!v) {
        upstream_result res = { .usage = { -1, -1, -1, -1 }, .code = LOOM_E_NOMEM,
                                .message = "out of memory sending the call to its helper" };
        upstream_send_done(s, &res);
        return;
    }
    upstream_send_set_data(s, v);
}

static void it_cancel(void *ud, upstream_send_t *s)
{
    iso_invoke_cancel(upstream_send_data(s));
}

static void it_free(void *ud)
{
    itransport *t = ud;
    iso_instance_free(t->inst);
    free(t);
}

const upstream_transport engine_iso_transport = {
    .start = it_start, .cancel = it_cancel, .free = it_free,
};
