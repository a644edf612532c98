/* engine_parallel.c -- parallel: every branch starts at once over the same
 * input; the result is {BRANCH: output} in file order, whatever order the
 * branches end in. on_error: fail cancels the rest at the first failure;
 * partial keeps going and puts {"error": ...} in the failed branch's slot. */
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

static void parallel_start(act_t *a)
{
    struct act_parallel *s = &a->k.parallel;
    const dsl_parallel *p = &a->node->u.parallel;
    /* slots in file order, filled as branches end */
    if (!(s->out = json_object()))
        goto oom;
    for (size_t i = 0; i < p->n; i++)
        if (json_object_set_new(s->out, p->names[i], json_null()) < 0)
            goto oom;
    for (size_t i = 0; i < p->n; i++)
        if (!act_spawn_start(a, p->branches[i], a->input, ROLE_MAIN, i))
            return;
    return;
oom:
    act_fail_oom(a);
}

static void parallel_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    struct act_parallel *s = &a->k.parallel;
    const dsl_parallel *p = &a->node->u.parallel;
    if (err) {
        if (p->on_error == DSL_ON_ERROR_FAIL) {
            act_attempt_done(a, NULL, err); /* cancels the running siblings */
            return;
        }
        res = eerr_slot_json(err);
        eerr_free(err);
        if (!res) {
            act_fail_oom(a);
            return;
        }
    }
    json_object_set_new(s->out, p->names[slot], res);
    if (++s->ndone == p->n) {
        json_t *out = s->out;
        s->out = NULL;
        act_attempt_done(a, out, NULL);
    }
}

static void parallel_reset(act_t *a)
{
    json_decref(a->k.parallel.out);
    a->k.parallel = (struct act_parallel){ 0 };
}

const act_ops engine_parallel_ops = {
    .start = parallel_start, .child_done = parallel_child_done, .reset = parallel_reset,
};
