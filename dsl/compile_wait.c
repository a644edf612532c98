/* compile_wait.c -- `wait_for`: a step that waits for a person (or any
 * outside party) to send the job a signal.
 *
 *   wait_for: { signal: NAME-TEMPLATE, timeout: DURATION, schema: {...} }
 *   wait_for: NAME-TEMPLATE            (the short form: no timeout, no schema)
 *
 * The name is a template so that the waits of a map's items (or of a
 * parallel's branches) can each have their own. The schema (in place or in
 * a file, as a call's) is compiled now, its errors at the YAML they name;
 * the graph keeps its document, which travels with the job's record while
 * it waits, and the daemon checks a signal's data against it. */
#include "dsl/compile.h"

#include <string.h>

#include "dsl/schema.h"

static const char *const wait_keys[] = { "signal", "timeout", "schema", NULL };

int cc_build_wait(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny)
{
    dsl_wait *w = &n->u.wait;
    const dsl_ynode *y;
    int bad = 0;
    /* a node's own `timeout` would cut the wait short with no signal to
     * name: the deadline belongs inside, and a wait is never retried (its
     * outcome comes from outside, recorded once) */
    if ((y = dsl_ymap_get(ny, "timeout"))) {
        dsl_error(cc->d, y->line, y->col, "a wait_for node's timeout goes inside it: "
                  "wait_for: { signal: NAME, timeout: 1h }");
        bad = 1;
    }
    if ((y = dsl_ymap_get(ny, "retry"))) {
        dsl_error(cc->d, y->line, y->col, "a wait_for node is not retried: put 'retry' on an "
                  "enclosing node (it waits again), or give it a 'fallback'");
        bad = 1;
    }
    if (v->kind == DSL_Y_SCALAR) {
        if (!(w->signal = cc_template(cc, v, "wait_for", n, CC_SITE_NODE)))
            return -1;
        return bad ? -1 : 0;
    }
    if (!cc_want_map(cc, v, "wait_for"))
        return -1;
    cc_check_keys(cc, v, wait_keys, "wait_for");
    if (!(y = dsl_ymap_get(v, "signal"))) {
        cc_missing(cc, v, "signal", "wait_for");
        bad = 1;
    } else if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING) {
        dsl_error(cc->d, y->line, y->col, "'signal' must be a name (a string, may be a "
                  "template), got a %s", dsl_ynode_describe(y));
        bad = 1;
    } else if (!(w->signal = cc_template(cc, y, "signal", n, CC_SITE_NODE))) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "timeout")) && cc_duration(cc, y, "timeout", &w->timeout_ms) < 0)
        bad = 1;
    const dsl_schema *sc;
    if ((y = dsl_ymap_get(v, "schema")) && (!(sc = cc_schema(cc, y, "schema")) ||
                                            !(w->schema = dsl_schema_doc(sc))))
        bad = 1;
    return bad ? -1 : 0;
}
