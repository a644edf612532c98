/* compile_batch.c -- the batch keys of calls, embeds and maps:
 *
 *   mode: batch | direct       how the call is sent (docs/dsl.md, "Batch mode")
 *   batch_window: DURATION     how long lines are collected before a batch goes
 *   deadline: DURATION         the completion window asked of the provider
 *   fallback_direct: BOOL      whether a failed line's retry goes direct
 *
 * A map's keys are defaults for the call and embed leaves of its body (to
 * any depth in the same file) that do not say their own, key by key; the
 * nearest map wins. They are folded into each leaf once the whole tree is
 * built, so the engine reads one struct per leaf and never walks up. */
#include "dsl/compile.h"

#include <string.h>

static const char *const mode_names[] = { "batch", "direct", NULL };

int cc_build_batch(dsl_cc *cc, const dsl_ynode *v, dsl_batch *b, const char *what)
{
    const dsl_ynode *y;
    int bad = 0;
    if (!v || v->kind != DSL_Y_MAP)
        return 0;
    if ((y = dsl_ymap_get(v, "mode"))) {
        const char *s = cc_string(cc, y, "mode");
        if (!s) {
            bad = 1;
        } else if (strcmp(s, "batch") == 0) {
            b->mode = DSL_MODE_BATCH;
        } else if (strcmp(s, "direct") == 0) {
            b->mode = DSL_MODE_DIRECT;
        } else {
            cc_error_suggest(cc, y->line, y->col, s, strlen(s), mode_names, (size_t)-1,
                             "unknown mode '%.64s' (use batch or direct)", s);
            bad = 1;
        }
    }
    static const char *const durations[] = { "batch_window", "deadline" };
    for (int i = 0; i < 2; i++) {
        uint64_t *ms = i ? &b->deadline_ms : &b->window_ms;
        if (!(y = dsl_ymap_get(v, durations[i])))
            continue;
        if (cc_duration(cc, y, durations[i], ms) < 0) {
            bad = 1;
        } else if (*ms == 0) {
            /* 0 is how a leaf says "the provider's": an explicit 0 would be
             * read as that, which is not what was written */
            dsl_error(cc->d, y->line, y->col,
                      "'%s' must be longer than 0 (leave it out for the provider's)",
                      durations[i]);
            bad = 1;
        }
    }
    if ((y = dsl_ymap_get(v, "fallback_direct"))) {
        int f;
        if (cc_bool(cc, y, "fallback_direct", &f) < 0) {
            bad = 1;
        } else {
            b->has_fallback_direct = true;
            b->fallback_direct = f;
        }
    }
    if (b->mode == DSL_MODE_DIRECT) {
        /* keys that only mean something for batches would be silently
         * ignored: say so where they are written */
        static const char *const only_batch[] = { "batch_window", "deadline",
                                                  "fallback_direct" };
        for (int i = 0; i < 3; i++)
            if ((y = dsl_ymap_get(v, only_batch[i]))) {
                dsl_error(cc->d, y->line, y->col,
                          "'%s' has no effect on a %s with 'mode: direct'; drop one of them",
                          only_batch[i], what);
                bad = 1;
            }
    }
    return bad ? -1 : 0;
}

/* Fills the keys B leaves unset from FROM. */
static void inherit(dsl_batch *b, const dsl_batch *from)
{
    if (b->mode == DSL_MODE_UNSET)
        b->mode = from->mode;
    if (!b->window_ms)
        b->window_ms = from->window_ms;
    if (!b->deadline_ms)
        b->deadline_ms = from->deadline_ms;
    if (!b->has_fallback_direct && from->has_fallback_direct) {
        b->has_fallback_direct = true;
        b->fallback_direct = from->fallback_direct;
    }
}

void cc_batch_inherit(dsl_cc *cc)
{
    for (size_t i = 0; i < cc->nnodes; i++) {
        dsl_node *n = cc->nodes[i];
        dsl_batch *b = n->kind == DSL_CALL ? &n->u.call.batch
                       : n->kind == DSL_EMBED ? &n->u.embed.batch : NULL;
        if (!b)
            continue;
        /* the nearest map first: what it says wins over what maps around
         * it say */
        for (const dsl_node *p = n->parent; p; p = p->parent)
            if (p->kind == DSL_MAP)
                inherit(b, &p->u.map.batch);
    }
}
