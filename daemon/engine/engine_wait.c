/* engine_wait.c -- `wait_for`: a step whose outcome comes from outside.
 *
 * A wait is leaf-like: it has a step key (engine_replay.c) and ends with the
 * record stored under it. But no run ever writes that record: the daemon
 * does, when a signal or the deadline comes (engine.h, engine_job_waits).
 * So a wait whose record is in the replay ends with it like any replayed
 * leaf, and one without evaluates its signal's name and parks in the job's
 * parkq. Once nothing else is left to do -- no leaf running or queued, no
 * retry pending -- the pump calls job_park: the run ends with the list of
 * its pending waits instead of an outcome, so a waiting job holds no
 * worker, no timer and no memory here. It shares struct act_leaf with the
 * leaves for its key and replay state. */
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

static void wait_start(act_t *a)
{
    a->replayed = false;
    if (replay_take(a))
        return;
    char msg[256];
    json_t *v = eval_template(a, a->node->u.wait.signal, NULL, msg, sizeof msg);
    if (!v) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    char *name = dsl_value_to_text(v);
    json_decref(v);
    if (!name) {
        act_fail_oom(a);
        return;
    }
    if (!*name || strlen(name) > 256) {
        free(name);
        act_fail(a, DSL_ERR_FAILED, NULL, "the signal's name is empty or longer than 256 bytes");
        return;
    }
    free(a->k.leaf.signal);
    a->k.leaf.signal = name;
    list_add_tail(&a->job->parkq, &a->q);
    a->inq = Q_PARK;
}

static void wait_fini(act_t *a)
{
    struct act_leaf *l = &a->k.leaf;
    replay_forget(a);
    json_decref(l->rrec);
    free(l->key);
    free(l->signal);
}

const act_ops engine_wait_ops = {
    .start = wait_start, .fini = wait_fini, .own_timeout = true,
};

bool job_parkable(const engine_job_t *job)
{
    return job->inflight == 0 && list_empty(&job->waitq) && list_empty(&job->doneq) &&
           !replay_pending(job) && job->nretry == 0 && !job->cancel_req;
}

/* {key, signal, node, timeout_ms, seq, schema?} of pending wait A. */
static json_t *wait_json(act_t *a, uint64_t seq)
{
    const char *key = step_key(a);
    const dsl_wait *w = &a->node->u.wait;
    json_t *o = key ? json_pack("{s:s, s:s, s:s, s:I, s:I}", "key", key, "signal",
                                a->k.leaf.signal, "node", a->node->path, "timeout_ms",
                                (json_int_t)w->timeout_ms, "seq", (json_int_t)seq)
                    : NULL;
    if (o && w->schema && json_object_set(o, "schema", w->schema) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void job_park(engine_job_t *job)
{
    json_t *waits = json_array();
    uint64_t seq = job->next_seq;
    LIST_EACH_SAFE(it, nx, &job->parkq) {
        act_t *a = LIST_OWNER(it, act_t, q);
        /* a call parked on its batch line (engine_batch.c) waits too */
        json_t *w = !waits ? NULL
                    : a->node->kind == DSL_WAIT ? wait_json(a, seq++)
                                                : batch_wait_json(a, seq++);
        if (!w || json_array_append_new(waits, w) < 0) {
            json_decref(waits);
            job_end(job, NULL, eerr_oom(NULL));
            return;
        }
    }
    job_end(job, NULL, NULL);
    job->waits = waits;
}

json_t *engine_job_waits(const engine_job_t *job) { return job->ended ? job->waits : NULL; }
