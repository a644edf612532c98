/* engine_replay.c -- step keys, checkpoints and replay of leaf steps.
 *
 * A daemon that crashed resumes a job by running it again with the records
 * of the leaf steps that had ended (engine.h, "Checkpoints"). Only leaves
 * are recorded: everything above them is a pure function of the input and
 * of what the leaves answered, so recomputing it costs nothing and needs no
 * format of its own.
 *
 * Two things make a replayed run see what the first run saw. The key of a
 * step must name the same activation in both runs, so it is built from the
 * parts of the activation chain that tell repeated runs of one node apart
 * (below). And order-sensitive nodes (a vote's tally and ties, its judge's
 * candidates) must get the steps in the order they first arrived, which a
 * store keyed by step does not keep; so each record carries a sequence
 * number and a started replayed leaf waits in a min-heap on it: the pump
 * releases the lowest one whenever nothing else is queued, and live leaves
 * wait for the heap to empty (engine.c, job_slot_request). With the records
 * of a crashed run (a prefix of its ends, in seq order) this reproduces the
 * first run's order exactly; with any other subset it still ends every
 * recorded leaf at the first moment the run is otherwise idle. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

/* Records without a seq (written by hand, say) come after every recorded
 * one, in the order their leaves start. */
#define SEQ_NONE (UINT64_C(1) << 63)

/* ---- step keys
 *
 *   key = VERSION 1*("/" SEGMENT) " " PATH
 *
 * VERSION is the job's workflow version (checkpoints never cross versions),
 * PATH the leaf's node path (for people reading a store; the segments
 * already make the key unique). Within one workflow a node index names the
 * node, and the activation chain from the root follows the graph, so a leaf
 * activation is known by its node plus whatever tells apart repeated runs
 * of an ancestor. Those are the only segments written, root to leaf:
 *
 *   N#S       instance S of node N: a map item, a vote sample, a loop's
 *             body or until node in iteration S (from 1), so a resumed loop
 *             replays the iterations that ended and goes on live from the
 *             one it was in
 *   N~tT      model turn T (from 1) of call N, a call with tools
 *   N~tT.K    the K-th tool call (from 1) turn T asked for: a lambda or MCP
 *             leaf, or a `use` whose leaves' keys go on below it
 *   N@A       attempt A (> 1) of composite N, whose kids all run again
 *   N>W:V     `use` node N entering workflow W at version V (node indices
 *             restart there, and W may be reloaded while the job waits)
 *   N         the leaf itself (with #S when it is a map body or vote sample)
 *
 * Separators cannot occur in indices, workflow names or hex versions, so the
 * key is unambiguous even though paths may repeat (branch names are free
 * text, cut at 64 characters). A leaf's own attempts share its key; a
 * fallback runs once per activation, so its parent's attempt is left out. */

static bool is_instance(const act_t *x)
{
    if (!x->parent)
        return false;
    dsl_kind pk = x->parent->node->kind;
    if (pk == DSL_LOOP)
        return x->role == ROLE_MAIN || x->role == ROLE_UNTIL;
    return x->role == ROLE_MAIN && (pk == DSL_MAP || pk == DSL_VOTE);
}

static char *make_key(const act_t *leaf)
{
    size_t depth = 0;
    for (const act_t *x = leaf; x; x = x->parent)
        depth++;
    const act_t **chain = malloc(depth * sizeof *chain);
    if (!chain)
        return NULL;
    size_t i = depth;
    for (const act_t *x = leaf; x; x = x->parent)
        chain[--i] = x;
    sbuf b = SBUF_INIT;
    sbuf_addf(&b, "%s", leaf->job->scope.g->version);
    for (i = 0; i < depth; i++) {
        const act_t *x = chain[i], *below = i + 1 < depth ? chain[i + 1] : NULL;
        const act_t *p = x->parent;
        if (p && p->node->kind == DSL_USE && x->role == ROLE_MAIN)
            sbuf_addf(&b, "/%" PRIu32 ">%s:%s", p->node->index, p->node->u.use.workflow,
                   x->scope->g->version);
        bool inst = is_instance(x);
        bool again = below && below->role != ROLE_FALLBACK && x->attempt > 1;
        /* a turn or tool call: its slot is turn << 32 | call (engine_agent.c) */
        bool part = x->role == ROLE_TURN || x->role == ROLE_TOOL;
        if (!below || inst || again || part) {
            sbuf_addf(&b, "/%" PRIu32, x->node->index);
            if (inst)
                sbuf_addf(&b, "#%zu", x->slot);
            if (part)
                sbuf_addf(&b, "~t%zu", x->slot >> 32);
            if (x->role == ROLE_TOOL)
                sbuf_addf(&b, ".%zu", x->slot & 0xffffffffu);
            if (again)
                sbuf_addf(&b, "@%d", x->attempt);
        }
    }
    sbuf_addf(&b, " %s", leaf->node->path);
    free(chain);
    return sbuf_steal(&b, NULL); /* NULL when an append failed */
}

const char *step_key(act_t *a)
{
    if (!a->k.leaf.key)
        a->k.leaf.key = make_key(a);
    return a->k.leaf.key;
}

/* ---- checkpoints */

void checkpoint_leaf(act_t *a, json_t *raw, const eerr *err)
{
    engine_job_t *job = a->job;
    if (!job->checkpoint || a->replayed)
        return;
    const char *key = step_key(a);
    if (!key)
        return; /* out of memory: the step just runs again after a crash */
    json_t *rec = err ? json_pack("{s:o, s:i, s:I}", "error", engine_error_json(&err->pub),
                                  "attempts", a->attempt, "seq", (json_int_t)job->next_seq)
                      : json_pack("{s:O, s:i, s:I}", "output", raw, "attempts", a->attempt,
                                  "seq", (json_int_t)job->next_seq);
    if (!rec)
        return;
    job->next_seq++;
    /* paid: a provider or MCP call that ran (engine.h, engine_durable_fn) */
    if (a->node->kind != DSL_LAMBDA && !a->cached)
        job->paid_unsettled = true;
    job->checkpoint(job->checkpoint_ud, job, key, rec);
    json_decref(rec);
}

/* ---- the job's replay */

/* The seq of REC, or SEQ_NONE when it has none that fits. */
static uint64_t rec_seq(const json_t *rec)
{
    json_t *s = json_object_get(rec, "seq");
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        return SEQ_NONE;
    uint64_t v = (uint64_t)json_integer_value(s);
    return v < SEQ_NONE ? v : SEQ_NONE;
}

static bool rec_valid(const json_t *rec)
{
    if (!json_is_object(rec))
        return false;
    json_t *e = json_object_get(rec, "error");
    if (e)
        return json_is_string(json_object_get(e, "code"));
    return json_object_get(rec, "output") != NULL;
}

int replay_job_init(engine_job_t *job, const engine_job_options *o)
{
    job->checkpoint = o ? o->checkpoint : NULL;
    job->checkpoint_ud = o ? o->checkpoint_ud : NULL;
    job->durable = o ? o->durable : NULL;
    job->durable_ud = o ? o->durable_ud : NULL;
    if (!o || !json_is_object(o->replay) || json_object_size(o->replay) == 0)
        return 0;
    /* shallow: the records are shared, never modified; the copy is ours to
     * remove entries from as they are used */
    if (!(job->replay = json_copy(o->replay)))
        return -1;
    const char *k;
    json_t *rec;
    json_object_foreach(job->replay, k, rec) {
        uint64_t s = rec_valid(rec) ? rec_seq(rec) : SEQ_NONE;
        if (s != SEQ_NONE && s >= job->next_seq)
            job->next_seq = s + 1; /* new records of this run come after */
    }
    return 0;
}

void replay_job_fini(engine_job_t *job)
{
    json_decref(job->replay);
    job->replay = NULL;
    free(job->rheap);
    job->rheap = NULL;
    job->nrheap = job->caprheap = 0;
}

/* ---- the heap of leaves waiting to end with their record */

static void rheap_set(engine_job_t *job, size_t i, act_t *a)
{
    job->rheap[i] = a;
    a->k.leaf.rheap = i + 1;
}

static void rheap_up(engine_job_t *job, size_t i)
{
    act_t *a = job->rheap[i];
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (job->rheap[up]->k.leaf.rseq <= a->k.leaf.rseq)
            break;
        rheap_set(job, i, job->rheap[up]);
        i = up;
    }
    rheap_set(job, i, a);
}

static void rheap_down(engine_job_t *job, size_t i)
{
    act_t *a = job->rheap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = l + 1, min = l;
        if (l >= job->nrheap)
            break;
        if (m < job->nrheap && job->rheap[m]->k.leaf.rseq < job->rheap[l]->k.leaf.rseq)
            min = m;
        if (a->k.leaf.rseq <= job->rheap[min]->k.leaf.rseq)
            break;
        rheap_set(job, i, job->rheap[min]);
        i = min;
    }
    rheap_set(job, i, a);
}

static int rheap_push(engine_job_t *job, act_t *a)
{
    if (vec_reserve(&job->rheap, job->nrheap, &job->caprheap, sizeof *job->rheap, 16) < 0)
        return -1;
    rheap_set(job, job->nrheap++, a);
    rheap_up(job, job->nrheap - 1);
    return 0;
}

static void rheap_remove(engine_job_t *job, act_t *a)
{
    size_t i = a->k.leaf.rheap - 1;
    a->k.leaf.rheap = 0;
    act_t *last = job->rheap[--job->nrheap];
    if (last == a)
        return;
    rheap_set(job, i, last);
    rheap_up(job, i);
    rheap_down(job, last->k.leaf.rheap - 1);
}

bool replay_take(act_t *a)
{
    engine_job_t *job = a->job;
    if (!job->replay || json_object_size(job->replay) == 0)
        return false;
    const char *key = step_key(a);
    json_t *rec = key ? json_object_get(job->replay, key) : NULL;
    if (!rec || !rec_valid(rec))
        return false;
    uint64_t seq = rec_seq(rec);
    a->k.leaf.rseq = seq != SEQ_NONE ? seq : SEQ_NONE + job->rstarts++;
    if (rheap_push(job, a) < 0)
        return false; /* out of memory: run it */
    a->k.leaf.rrec = json_incref(rec);
    /* used once: if an enclosing retry runs this step again, it runs live */
    json_object_del(job->replay, key);
    return true;
}

bool replay_pending(const engine_job_t *job) { return job->nrheap > 0; }

void replay_forget(act_t *a)
{
    if (a->k.leaf.rheap)
        rheap_remove(a->job, a);
}

/* The failure recorded in E (an engine_error_json object) for leaf A. */
static eerr *rec_error(const act_t *a, const json_t *e)
{
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *node = json_string_value(json_object_get(e, "node"));
    int cls = dsl_error_class_find(code);
    return eerr_new(cls >= 0 ? (dsl_error_class)cls : DSL_ERR_FAILED, code,
                    node ? node : a->node->path, a->attempt, "%s", msg ? msg : "failed");
}

void replay_release(engine_job_t *job)
{
    act_t *a = job->rheap[0];
    rheap_remove(job, a);
    json_t *rec = a->k.leaf.rrec;
    a->k.leaf.rrec = NULL;
    a->replayed = true;
    json_int_t n = json_integer_value(json_object_get(rec, "attempts"));
    a->attempt = n > 0 && n < INT32_MAX ? (int)n : 1; /* steps.ID.attempts as it was */
    /* `prev` in `output:` is the overridden input, as when the leaf ran */
    eerr *err = leaf_apply_input(a);
    json_t *res = NULL, *e = json_object_get(rec, "error");
    if (!err) {
        if (e)
            err = rec_error(a, e);
        else
            res = json_incref(json_object_get(rec, "output"));
    }
    json_decref(rec);
    act_attempt_done(a, res, err);
}
