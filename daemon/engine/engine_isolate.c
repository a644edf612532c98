/* engine_isolate.c -- a lambda leaf whose plugin is isolated: the call goes
 * to a helper process (daemon/isolate) instead of the worker pool, and its
 * answer comes back on the reactor like a pool call's. A crashed helper is
 * the typed error plugin_crashed, a helper past the plugin's timeout is
 * timeout: both classes a step's retry policy can name. A step's timeout or
 * a cancelled job gives the call up (isolated_cancel): the lambda sees
 * loom_cancelled in its helper and has a grace to return. */
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
