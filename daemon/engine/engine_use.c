/* engine_use.c -- use: runs another workflow (found through the engine's
 * workflow lookup) as a step, in a scope of its own: its input checked and
 * defaulted, its vars, its steps. Its outcome is the node's. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

static void use_start(act_t *a)
{
    const dsl_use *u = &a->node->u.use;
    engine_t *e = a->job->eng;
    char msg[512];
    dsl_graph *g = e->wf_lookup ? e->wf_lookup(e->wf_ud, u->workflow) : NULL;
    if (!g) {
        snprintf(msg, sizeof msg, "workflow '%s' is not available", u->workflow);
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    json_t *in = u->input ? eval_tvalue(a, u->input, NULL, msg, sizeof msg) : json_incref(a->input);
    if (!in) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    scope_t *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(in);
        act_fail_oom(a);
        return;
    }
    dsl_error_class cls;
    int rc = scope_init(s, g, in, msg, sizeof msg, &cls);
    json_decref(in);
    a->k.use.scope = s; /* freed with the activation or on retry, even half built */
    if (rc < 0) {
        act_fail(a, DSL_ERR_FAILED, cls == DSL_ERR_CLASS_COUNT ? "out_of_memory" : "invalid_input",
                 msg);
        return;
    }
    act_t *k = act_spawn(a, g->root, s->input, ROLE_MAIN, 0);
    if (!k)
        return;
    k->scope = s;
    k->frame = &s->top;
    act_start(k);
}

static void use_reset(act_t *a)
{
    if (a->k.use.scope) {
        scope_fini(a->k.use.scope);
        free(a->k.use.scope);
        a->k.use.scope = NULL;
    }
}

/* no child_done: the used workflow's outcome is the node's */
const act_ops engine_use_ops = { .start = use_start, .reset = use_reset };
