/* compile_loop.c -- the loop kind: `do` again until `until` holds.
 *
 *   loop: { do: NODE, until: TEMPLATE | NODE, max_iterations: N,
 *           collect: BOOL, on_exhausted: fail | last }
 *
 * max_iterations is required: an agent-style loop without a bound is the
 * one mistake a workflow file must not be able to make, and the bound is
 * what resume and budgets reason about. `until` is evaluated after each
 * iteration over its output (`output` in a template, the input of a node);
 * without one the body runs exactly max_iterations times. */
#include "dsl/compile.h"

#include <string.h>

static const char *const loop_keys[] = { "do", "until", "max_iterations", "collect",
                                         "on_exhausted", NULL };

static int parse_on_exhausted(dsl_cc *cc, const dsl_ynode *y, dsl_on_exhausted *out)
{
    static const char *const names[] = { "fail", "last", NULL };
    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
        if (strcmp(y->u.scalar.str, "fail") == 0) {
            *out = DSL_EXHAUSTED_FAIL;
            return 0;
        }
        if (strcmp(y->u.scalar.str, "last") == 0) {
            *out = DSL_EXHAUSTED_LAST;
            return 0;
        }
        cc_error_suggest(cc, y->line, y->col, y->u.scalar.str, y->u.scalar.len, names, (size_t)-1,
                         "'on_exhausted' must be fail or last, got '%.64s'", y->u.scalar.str);
        return -1;
    }
    dsl_error(cc->d, y->line, y->col, "'on_exhausted' must be fail or last, got a %s",
              dsl_ynode_describe(y));
    return -1;
}

int cc_build_loop(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_map(cc, v, "loop"))
        return -1;
    cc_check_keys(cc, v, loop_keys, "loop");
    dsl_loop *l = &n->u.loop;
    const dsl_ynode *y;
    int bad = 0, b;
    int64_t i;
    if (!(y = dsl_ymap_get(v, "max_iterations"))) {
        cc_missing(cc, v, "max_iterations", "loop");
        bad = 1;
    } else if (cc_int(cc, y, "max_iterations", 1, DSL_LOOP_MAX_ITERATIONS, &i) < 0) {
        bad = 1;
    } else {
        l->max_iterations = (int)i;
    }
    if (!(y = dsl_ymap_get(v, "do"))) {
        cc_missing(cc, v, "do", "loop");
        bad = 1;
    } else if (!(l->body = cc_node(cc, y, n, "loop.do"))) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "until"))) {
        if (y->kind == DSL_Y_MAP) {
            if (!(l->until_node = cc_node(cc, y, n, "loop.until")))
                bad = 1;
        } else if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
            if (!(l->until_tpl = cc_template(cc, y, "until", n, CC_SITE_UNTIL)))
                bad = 1;
        } else {
            dsl_error(cc->d, y->line, y->col,
                      "'until' must be a template such as \"{{ output.done }}\" or a node, got a %s",
                      dsl_ynode_describe(y));
            bad = 1;
        }
    }
    if ((y = dsl_ymap_get(v, "collect"))) {
        if (cc_bool(cc, y, "collect", &b) < 0)
            bad = 1;
        else
            l->collect = b;
    }
    if ((y = dsl_ymap_get(v, "on_exhausted")) && parse_on_exhausted(cc, y, &l->on_exhausted) < 0)
        bad = 1;
    return bad ? -1 : 0;
}
