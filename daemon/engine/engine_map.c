/* engine_map.c -- map: the body once per item of an array, at most
 * max_concurrency items at a time, results in item order. Each item runs in
 * a frame of its own (its steps are its own) with `item` and `index` bound.
 * on_error: fail ends at the first failure; partial and tolerate put
 * {"error": ...} in a failed item's slot, tolerate only up to its share. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

#define DEFAULT_MAP_CONCURRENCY 16

static bool start_item(act_t *a, size_t idx)
{
    struct act_map *m = &a->k.map;
    json_t *item = json_array_get(m->items, idx);
    act_t *k = act_spawn(a, a->node->u.map.body, item, ROLE_MAIN, idx);
    if (!k)
        return false;
    k->bind_kind = BIND_ITEM;
    k->bind = json_incref(item);
    k->bind_map = a->node;
    k->bind_index = json_integer((json_int_t)idx);
    k->own_frame = frame_new(a->frame);
    if (!k->bind_index || !k->own_frame) {
        act_free(k);
        act_fail_oom(a);
        return false;
    }
    k->frame = k->own_frame;
    m->running++;
    act_start(k);
    return true;
}

/* Starts items until max_concurrency run or none is left. */
static void fill(act_t *a)
{
    struct act_map *m = &a->k.map;
    int mc = a->node->u.map.max_concurrency;
    /* in batch mode an item holds nothing while its line waits: holding the
     * others back would only send them in later, smaller batches (the
     * job's in-flight cap still bounds the leaves running at once) */
    size_t lim = m->unbounded ? m->n : mc > 0 ? (size_t)mc : DEFAULT_MAP_CONCURRENCY;
    while (m->next < m->n && m->running < lim)
        if (!start_item(a, m->next++))
            return;
}

static void map_start(act_t *a)
{
    struct act_map *m = &a->k.map;
    char msg[256];
    json_t *items = eval_template(a, a->node->u.map.over, NULL, msg, sizeof msg);
    if (!items) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    if (!json_is_array(items)) {
        snprintf(msg, sizeof msg, "map over: expected an array, got %s",
                 dsl_value_type_name(items));
        json_decref(items);
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    m->items = items;
    m->n = json_array_size(items);
    if (!(m->out = json_array())) {
        act_fail_oom(a);
        return;
    }
    for (size_t i = 0; i < m->n; i++)
        if (json_array_append_new(m->out, json_null()) < 0) {
            act_fail_oom(a);
            return;
        }
    if (m->n == 0) {
        json_t *out = m->out;
        m->out = NULL;
        act_attempt_done(a, out, NULL);
        return;
    }
    m->unbounded = batch_map_unbounded(a);
    fill(a);
}

static void map_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    struct act_map *m = &a->k.map;
    const dsl_map *d = &a->node->u.map;
    m->running--;
    m->ndone++;
    job_trace_progress(a->job, a, m->ndone, m->n);
    if (err) {
        if (d->on_error == DSL_ON_ERROR_FAIL) {
            act_attempt_done(a, NULL, err);
            return;
        }
        m->nfail++;
        if (d->on_error == DSL_ON_ERROR_TOLERATE && (double)m->nfail > d->tolerate * (double)m->n) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "%zu of %zu items failed, more than %g%% tolerated; last: %s: %.300s",
                     m->nfail, m->n, d->tolerate * 100.0, err->pub.code, err->pub.message);
            eerr_free(err);
            act_fail(a, DSL_ERR_FAILED, NULL, msg);
            return;
        }
        res = eerr_slot_json(err);
        eerr_free(err);
        if (!res) {
            act_fail_oom(a);
            return;
        }
    }
    json_array_set_new(m->out, slot, res);
    if (m->ndone == m->n) {
        json_t *out = m->out;
        m->out = NULL;
        act_attempt_done(a, out, NULL);
        return;
    }
    fill(a);
}

static void map_reset(act_t *a)
{
    json_decref(a->k.map.items);
    json_decref(a->k.map.out);
    a->k.map = (struct act_map){ 0 };
}

const act_ops engine_map_ops = {
    .start = map_start, .child_done = map_child_done, .reset = map_reset,
};
