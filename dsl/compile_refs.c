/* compile_refs.c -- what names a template may use where.
 *
 * Runs after every node is built, so a reference to a later step can be told
 * apart from a typo. Each expression's root is resolved against the node the
 * template belongs to: `input`, `vars`, `prev` everywhere; a map's item only
 * inside its body; `loop` only inside a loop's do and until; `error` only
 * inside a fallback; `candidates` only inside a vote's judge; `output` only
 * where a node's result exists. `steps.X` must
 * name a step that has certainly finished, exactly once, when the template is
 * evaluated: an earlier step of a chain enclosing the template (plus a few
 * orderings the engine guarantees, such as a route's `on` before its cases).
 * Everything else gets an error that says why, and where X is. */
#include "dsl/compile.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/suggest.h"

static void pos_of(dsl_cc *cc, const cc_tpl_use *u, size_t off, int *line, int *col)
{
    dsl_yscalar_pos(cc->doc, u->y, off, line, col);
}

/* A `.name` segment's offset is its dot; errors point at the name. */
static void seg_pos(dsl_cc *cc, const cc_tpl_use *u, const dsl_path_seg *sg, int *line, int *col)
{
    size_t off = sg->offset;
    if (u->tpl->source && u->tpl->source[off] == '.')
        off++;
    pos_of(cc, u, off, line, col);
}

static int is_chain_step(const dsl_cc *cc, const dsl_node *n)
{
    return cc->info[n->index].chain_pos != UINT32_MAX;
}

/* 1 if step S has certainly finished when templates of N (at SITE) run. */
static int visible(const dsl_cc *cc, const dsl_node *n, const dsl_node *s, cc_site site)
{
    if (site == CC_SITE_OUTPUT && n->kind == DSL_CHAIN && s->parent == n)
        return 1;
    /* a gate's fail message and a gate's or route's output are evaluated
     * after the check / `on` node ran */
    if (n->kind == DSL_GATE && s == n->u.gate.check_node)
        return 1;
    if (site == CC_SITE_OUTPUT && n->kind == DSL_ROUTE && s == n->u.route.on_node)
        return 1;
    for (const dsl_node *c = n; c && c->parent; c = c->parent) {
        const dsl_node *p = c->parent;
        if (c == s)
            return 0;
        if (p->kind == DSL_CHAIN && s->parent == p && is_chain_step(cc, c) &&
            cc->info[s->index].chain_pos < cc->info[c->index].chain_pos)
            return 1;
        /* a route's `on` node runs before the chosen case; a gate's check
         * before its fail node */
        if (p->kind == DSL_ROUTE && s == p->u.route.on_node && c != s && c != p->fallback)
            return 1;
        if (p->kind == DSL_GATE && s == p->u.gate.check_node && c == p->u.gate.fail_node)
            return 1;
    }
    return 0;
}

static size_t depth_of(const dsl_node *n)
{
    size_t d = 0;
    for (; n->parent; n = n->parent)
        d++;
    return d;
}

/* Explains why S is not visible from N. */
static void explain(dsl_cc *cc, const cc_tpl_use *u, const dsl_node *s, const char *id,
                    int line, int col)
{
    const dsl_node *n = u->node;
    const dsl_node *a = s, *b = n, *cs = NULL, *cn = NULL;
    size_t da = depth_of(a), db = depth_of(b);
    while (da > db) {
        cs = a;
        a = a->parent;
        da--;
    }
    while (db > da) {
        cn = b;
        b = b->parent;
        db--;
    }
    while (a != b) {
        cs = a;
        a = a->parent;
        cn = b;
        b = b->parent;
    }
    const dsl_node *lca = a;
    if (lca == s && s->fallback && cn == s->fallback) {
        dsl_error(cc->d, line, col, "step '%s' is the node this fallback replaces: read its failure as 'error'", id);
    } else if (lca == s) {
        if (s == n && u->site == CC_SITE_OUTPUT)
            dsl_error(cc->d, line, col, "step '%s' is this node: read its result as 'output'", id);
        else
            dsl_error(cc->d, line, col, "step '%s' has not finished here: this template is part of it", id);
    } else if (lca == n) {
        dsl_error(cc->d, line, col, "step '%s' is inside this node and has not run when this is evaluated", id);
    } else if (cn == lca->fallback) {
        dsl_error(cc->d, line, col,
                  "step '%s' is inside the node this fallback replaces, and may not have finished", id);
    } else if (lca->kind == DSL_CHAIN && is_chain_step(cc, cs) && is_chain_step(cc, cn)) {
        if (cc->info[cs->index].chain_pos > cc->info[cn->index].chain_pos) {
            dsl_error(cc->d, line, col, "step '%s' runs after this point", id);
        } else {
            const dsl_node *multi = NULL;
            for (const dsl_node *x = s->parent; x; x = x->parent) {
                if (x->kind == DSL_MAP || x->kind == DSL_VOTE || x->kind == DSL_LOOP)
                    multi = x;
                if (x == cs)
                    break;
            }
            if (multi)
                dsl_error(cc->d, line, col,
                          "step '%s' runs once per %s inside the %s at line %d; read that %s's output instead",
                          id, multi->kind == DSL_MAP ? "item" : multi->kind == DSL_VOTE ? "sample" : "iteration",
                          dsl_kind_name(multi->kind), multi->line, dsl_kind_name(multi->kind));
            else
                dsl_error(cc->d, line, col,
                          "step '%s' is nested inside an earlier step; only the steps of an enclosing "
                          "chain are visible: read %s%s%s instead",
                          id, cs->id ? "steps." : "the output of the step at line ",
                          cs->id ? cs->id : "", cs->id ? ".output" : "");
        }
    } else if (lca->kind == DSL_PARALLEL) {
        dsl_error(cc->d, line, col, "step '%s' is in another branch of this parallel; branches run at the same time", id);
    } else if (lca->kind == DSL_ROUTE) {
        dsl_error(cc->d, line, col, "step '%s' is in another case of this route; only one case runs", id);
    } else if (lca->kind == DSL_VOTE) {
        dsl_error(cc->d, line, col, "step '%s' runs once per sample inside this vote", id);
    } else if (lca->kind == DSL_LOOP && cs == lca->u.loop.body && cn == lca->u.loop.until_node) {
        dsl_error(cc->d, line, col,
                  "step '%s' is inside this loop's do, whose steps are not visible from its until; "
                  "the until node gets the iteration's output as 'prev'", id);
    } else if (lca->kind == DSL_LOOP && cs == lca->u.loop.until_node && cn == lca->u.loop.body) {
        dsl_error(cc->d, line, col,
                  "step '%s' is inside this loop's until, which runs after the do; the next "
                  "iteration sees this one's output as 'loop.previous'", id);
    } else {
        dsl_error(cc->d, line, col, "step '%s' is not visible here", id);
    }
    const dsl_ynode *iy = cc->info[s->index].id_y;
    if (iy)
        dsl_note(cc->d, iy->line, iy->col, "'%s' is defined here", id);
}

static const char **all_ids(dsl_cc *cc, size_t *n)
{
    const char **v = malloc((cc->ids.n + 1) * sizeof *v);
    *n = 0;
    if (!v)
        return NULL;
    for (size_t i = 0; i < cc->ids.cap; i++)
        if (cc->ids.keys[i])
            v[(*n)++] = cc->ids.keys[i];
    return v;
}

static void check_steps(dsl_cc *cc, const cc_tpl_use *u, dsl_expr *e)
{
    int line, col;
    if (u->site == CC_SITE_VARS) {
        pos_of(cc, u, e->root_offset, &line, &col);
        dsl_error(cc->d, line, col, "'vars' can only use 'input'; steps have not run when vars are set");
        return;
    }
    if (e->nsegs == 0 || e->segs[0].kind != DSL_SEG_FIELD) {
        pos_of(cc, u, e->root_offset, &line, &col);
        dsl_error(cc->d, line, col, "write steps.ID.output to read a step's output");
        return;
    }
    const char *id = e->segs[0].name;
    const dsl_node *s = cc_idmap_get(&cc->ids, id);
    if (!s) {
        seg_pos(cc, u, &e->segs[0], &line, &col);
        size_t n;
        const char **ids = all_ids(cc, &n);
        cc_error_suggest(cc, line, col, id, strlen(id), ids, ids ? n : 0, "unknown step '%.64s'", id);
        free(ids);
        return;
    }
    e->step = s;
    /* a call with tools also records its conversation */
    bool agent = s->kind == DSL_CALL && s->u.call.ntools > 0;
    if (e->nsegs < 2 || e->segs[1].kind != DSL_SEG_FIELD ||
        (strcmp(e->segs[1].name, "output") && strcmp(e->segs[1].name, "error") &&
         strcmp(e->segs[1].name, "attempts") &&
         (!agent || strcmp(e->segs[1].name, "transcript")))) {
        seg_pos(cc, u, &e->segs[e->nsegs >= 2 ? 1 : 0], &line, &col);
        dsl_error(cc->d, line, col, "after 'steps.%s' write .output, .error%s or .attempts", id,
                  agent ? ", .transcript" : "");
        return;
    }
    if (!visible(cc, u->node, s, u->site)) {
        seg_pos(cc, u, &e->segs[0], &line, &col);
        explain(cc, u, s, id, line, col);
    }
}

static void check_input_field(dsl_cc *cc, const cc_tpl_use *u, const dsl_expr *e)
{
    const dsl_graph *g = cc->g;
    if (!g->inputs_declared || e->nsegs == 0 || e->segs[0].kind != DSL_SEG_FIELD)
        return;
    const char *f = e->segs[0].name;
    const char *names[512];
    size_t nn = 0;
    for (size_t i = 0; i < g->ninputs; i++) {
        if (strcmp(g->inputs[i].name, f) == 0)
            return;
        if (nn < 512)
            names[nn++] = g->inputs[i].name;
    }
    int line, col;
    seg_pos(cc, u, &e->segs[0], &line, &col);
    cc_error_suggest(cc, line, col, f, strlen(f), names, nn,
                     "input has no field '%.64s'", f);
    if (cc->inputs_y)
        dsl_note(cc->d, cc->inputs_y->line, cc->inputs_y->col, "the input is declared here");
}

static void check_var(dsl_cc *cc, const cc_tpl_use *u, const dsl_expr *e)
{
    int line, col;
    if (u->site == CC_SITE_VARS) {
        pos_of(cc, u, e->root_offset, &line, &col);
        dsl_error(cc->d, line, col, "'vars' can only use 'input', not other vars");
        return;
    }
    if (e->nsegs == 0 || e->segs[0].kind != DSL_SEG_FIELD)
        return;
    const dsl_ynode *vy = cc->vars_y;
    const char *f = e->segs[0].name;
    const char *names[512];
    size_t nn = 0;
    if (vy && vy->kind == DSL_Y_MAP)
        for (size_t i = 0; i < vy->u.map.n; i++) {
            const char *k = vy->u.map.pairs[i].key->u.scalar.str;
            if (strcmp(k, f) == 0)
                return;
            if (nn < 512)
                names[nn++] = k;
        }
    seg_pos(cc, u, &e->segs[0], &line, &col);
    cc_error_suggest(cc, line, col, f, strlen(f), names, nn, "unknown var '%.64s'", f);
}

/* `loop.iteration` and `loop.previous` are all a loop binds. */
static void check_loop_field(dsl_cc *cc, const cc_tpl_use *u, const dsl_expr *e)
{
    static const char *const fields[] = { "iteration", "previous", NULL };
    if (e->nsegs == 0)
        return;
    const char *f = e->segs[0].kind == DSL_SEG_FIELD ? e->segs[0].name : NULL;
    if (f && (strcmp(f, "iteration") == 0 || strcmp(f, "previous") == 0))
        return;
    int line, col;
    seg_pos(cc, u, &e->segs[0], &line, &col);
    if (!f)
        dsl_error(cc->d, line, col, "write loop.iteration or loop.previous");
    else
        cc_error_suggest(cc, line, col, f, strlen(f), fields, (size_t)-1,
                         "'loop' has no '%.64s', only iteration and previous", f);
}

/* The kind of a name bound by an enclosing map, loop, fallback or judge, or 0. */
static int scoped_root(const dsl_node *n, const char *name)
{
    for (const dsl_node *c = n; c && c->parent; c = c->parent) {
        const dsl_node *p = c->parent;
        if (p->kind == DSL_MAP && p->u.map.body == c) {
            if (strcmp(p->u.map.as, name) == 0)
                return DSL_ROOT_ITEM;
            if (p->u.map.index_as && strcmp(p->u.map.index_as, name) == 0)
                return DSL_ROOT_INDEX;
        }
        if (p->kind == DSL_LOOP && (p->u.loop.body == c || p->u.loop.until_node == c) &&
            strcmp(name, "loop") == 0)
            return DSL_ROOT_LOOP;
        if (p->fallback == c && strcmp(name, "error") == 0)
            return DSL_ROOT_ERROR;
        if (p->kind == DSL_VOTE && p->u.vote.judge == c && strcmp(name, "candidates") == 0)
            return DSL_ROOT_CANDIDATES;
    }
    return 0;
}

/* The names usable at a template, for "did you mean". */
static size_t names_in_scope(const cc_tpl_use *u, const char **out, size_t max)
{
    size_t k = 0;
    out[k++] = "input";
    if (u->site == CC_SITE_VARS)
        return k;
    out[k++] = "vars";
    out[k++] = "steps";
    out[k++] = "prev";
    if (u->site == CC_SITE_OUTPUT || u->site == CC_SITE_VOTE_KEY || u->site == CC_SITE_UNTIL)
        out[k++] = "output";
    if (u->site == CC_SITE_UNTIL)
        out[k++] = "loop";
    for (const dsl_node *c = u->node; c && c->parent && k + 3 < max; c = c->parent) {
        const dsl_node *p = c->parent;
        if (p->kind == DSL_MAP && p->u.map.body == c) {
            out[k++] = p->u.map.as;
            if (p->u.map.index_as)
                out[k++] = p->u.map.index_as;
        }
        if (p->kind == DSL_LOOP && (p->u.loop.body == c || p->u.loop.until_node == c))
            out[k++] = "loop";
        if (p->fallback == c)
            out[k++] = "error";
        if (p->kind == DSL_VOTE && p->u.vote.judge == c)
            out[k++] = "candidates";
    }
    return k;
}

static const dsl_node *map_naming(const dsl_cc *cc, const char *name)
{
    for (size_t i = 0; i < cc->nnodes; i++) {
        const dsl_node *m = cc->nodes[i];
        if (m->kind == DSL_MAP && (strcmp(m->u.map.as, name) == 0 ||
                                   (m->u.map.index_as && strcmp(m->u.map.index_as, name) == 0)))
            return m;
    }
    return NULL;
}

/* Positions cost a walk over the scalar, so only errors compute them: a
 * 10 MB prompt with 100,000 expressions must not pay 100,000 walks. */
static void root_error(dsl_cc *cc, const cc_tpl_use *u, const dsl_expr *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void root_error(dsl_cc *cc, const cc_tpl_use *u, const dsl_expr *e, const char *fmt, ...)
{
    int line, col;
    va_list ap;
    pos_of(cc, u, e->root_offset, &line, &col);
    va_start(ap, fmt);
    dsl_diag_vadd(cc->d, DSL_SEV_ERROR, line, col, fmt, ap);
    va_end(ap);
}

static void check_expr(dsl_cc *cc, const cc_tpl_use *u, dsl_expr *e)
{
    const char *r = e->root;
    int line, col;
    if (strcmp(r, "input") == 0) {
        e->root_kind = DSL_ROOT_INPUT;
        check_input_field(cc, u, e);
        return;
    }
    if (strcmp(r, "vars") == 0) {
        e->root_kind = DSL_ROOT_VARS;
        check_var(cc, u, e);
        return;
    }
    if (strcmp(r, "steps") == 0) {
        e->root_kind = DSL_ROOT_STEPS;
        check_steps(cc, u, e);
        return;
    }
    if (u->site == CC_SITE_VARS) {
        root_error(cc, u, e, "'vars' can only use 'input', not '%.64s'", r);
        return;
    }
    if (strcmp(r, "prev") == 0) {
        e->root_kind = DSL_ROOT_PREV;
        return;
    }
    if (strcmp(r, "output") == 0) {
        if (u->site == CC_SITE_OUTPUT || u->site == CC_SITE_VOTE_KEY || u->site == CC_SITE_UNTIL)
            e->root_kind = DSL_ROOT_OUTPUT;
        else
            root_error(cc, u, e, "'output' is only defined in a node's 'output:', a vote's 'key' "
                       "and a loop's 'until'");
        return;
    }
    /* a loop's own `until` names that loop, not an enclosing one */
    int k = u->site == CC_SITE_UNTIL && strcmp(r, "loop") == 0 ? DSL_ROOT_LOOP
                                                                : scoped_root(u->node, r);
    if (k) {
        e->root_kind = k;
        if (k == DSL_ROOT_LOOP)
            check_loop_field(cc, u, e);
        return;
    }
    if (strcmp(r, "loop") == 0) {
        root_error(cc, u, e, "'loop' is only defined inside a loop's 'do' and 'until'");
        return;
    }
    if (strcmp(r, "error") == 0) {
        root_error(cc, u, e, "'error' is only defined inside a fallback");
        return;
    }
    if (strcmp(r, "candidates") == 0) {
        root_error(cc, u, e, "'candidates' is only defined inside a vote's judge");
        return;
    }
    const dsl_node *m = map_naming(cc, r);
    if (m) {
        root_error(cc, u, e, "'%.64s' is only defined inside the map that names it", r);
        dsl_note(cc->d, m->line, m->col, "that map is here");
        return;
    }
    const char *names[64];
    size_t nn = names_in_scope(u, names, 64);
    pos_of(cc, u, e->root_offset, &line, &col);
    cc_error_suggest(cc, line, col, r, strlen(r), names, nn, "unknown name '%.64s' in template", r);
}

void cc_check_templates(dsl_cc *cc)
{
    for (size_t i = 0; i < cc->ntpls; i++) {
        const cc_tpl_use *u = &cc->tpls[i];
        for (size_t j = 0; j < u->tpl->nparts; j++)
            if (u->tpl->parts[j].expr)
                check_expr(cc, u, u->tpl->parts[j].expr);
    }
}
