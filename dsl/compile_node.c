/* compile_node.c -- one builder per node kind.
 *
 * A node is a mapping with exactly one kind key plus common keys. Builders
 * report every problem they see and keep going, so one pass shows a user all
 * of a file's errors; a builder returns NULL only when the node cannot be
 * represented at all, and its parent carries on with its siblings. */
#include "dsl/compile.h"

#include <stdlib.h>
#include <string.h>

#include "dsl/suggest.h"
#include "common/containers.h"

/* indexed by dsl_kind */
const char *const cc_kind_keys[] = { "call", "embed", "lambda", "chain", "parallel", "route",
                                     "vote", "map", "gate", "use", "fail", "loop", "wait_for",
                                     NULL };

#define COMMON_KEYS "id", "description", "timeout", "retry", "fallback", "cache", "output"

static const char *const parallel_keys[] = { "branches", "on_error", NULL };
static const char *const route_keys[] = { "on", "cases", "default", "normalize", NULL };
static const char *const vote_keys[] = { "n", "do", "strategy", "normalize", "key", NULL };
static const char *const map_keys[] = { "over", "as", "index_as", "max_concurrency", "on_error",
                                        "do", "mode", "batch_window", "deadline",
                                        "fallback_direct", NULL };
static const char *const gate_keys[] = { "check", "fail", NULL };
static const char *const use_keys[] = { "workflow", "input", NULL };
static const char *const fail_keys[] = { "message", "code", NULL };

/* Names a template may not take as a map's `as`, since they are roots already. */
static const char *const reserved_roots[] = { "input", "vars", "steps", "prev", "error",
                                              "candidates", "output", NULL };

static int register_node(dsl_cc *cc, dsl_node *n)
{
    if (vec_reserve(&cc->nodes, cc->nnodes, &cc->capnodes, sizeof *cc->nodes, 64) < 0 ||
        vec_reserve(&cc->info, cc->nnodes, &cc->capinfo, sizeof *cc->info, 64) < 0)
        return -1;
    n->index = (uint32_t)cc->nnodes;
    cc->nodes[cc->nnodes] = n;
    cc->info[cc->nnodes] = (cc_node_info){ UINT32_MAX, NULL };
    cc->nnodes++;
    return 0;
}

static const char *join_path(dsl_cc *cc, const dsl_node *parent, const char *suffix)
{
    const char *base = parent ? parent->path : "";
    size_t bl = strlen(base), sl = strlen(suffix);
    char *p = dsl_arena_alloc(cc->a, bl + sl + 2);
    if (!p) {
        cc_oom(cc);
        return "";
    }
    memcpy(p, base, bl);
    size_t k = bl;
    if (bl && suffix[0] != '[')
        p[k++] = '.';
    memcpy(p + k, suffix, sl + 1);
    return p;
}

static int build_chain(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_seq(cc, v, "chain"))
        return -1;
    if (v->u.seq.n == 0) {
        dsl_error(cc->d, v->line, v->col, "a chain needs at least one step");
        return -1;
    }
    dsl_chain *c = &n->u.chain;
    c->steps = dsl_arena_alloc(cc->a, v->u.seq.n * sizeof *c->steps);
    if (!c->steps) {
        cc_oom(cc);
        return -1;
    }
    int bad = 0;
    char suffix[48];
    for (size_t i = 0; i < v->u.seq.n; i++) {
        snprintf(suffix, sizeof suffix, "chain[%zu]", i);
        dsl_node *s = cc_node(cc, v->u.seq.items[i], n, suffix);
        if (!s) {
            bad = 1;
            continue;
        }
        cc->info[s->index].chain_pos = (uint32_t)c->n;
        c->steps[c->n++] = s;
    }
    return bad ? -1 : 0;
}

static int parse_on_error(dsl_cc *cc, const dsl_ynode *y, int allow_tolerate, dsl_on_error *out,
                          double *tolerate)
{
    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
        if (strcmp(y->u.scalar.str, "fail") == 0) {
            *out = DSL_ON_ERROR_FAIL;
            return 0;
        }
        if (strcmp(y->u.scalar.str, "partial") == 0) {
            *out = DSL_ON_ERROR_PARTIAL;
            return 0;
        }
    } else if (allow_tolerate && y->kind == DSL_Y_MAP && y->u.map.n == 1 &&
               strcmp(y->u.map.pairs[0].key->u.scalar.str, "tolerate") == 0) {
        const dsl_ynode *t = y->u.map.pairs[0].value;
        double pct = -1;
        if (t->kind == DSL_Y_SCALAR) {
            /* digits, an optional fraction, an optional '%': no spaces, hex, nan */
            const char *p = t->u.scalar.str;
            int digits = 0;
            for (; *p >= '0' && *p <= '9'; p++)
                digits++;
            if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                    digits++;
            if (*p == '%')
                p++;
            if (digits && !*p)
                pct = strtod(t->u.scalar.str, NULL);
        }
        if (pct < 0 || pct > 100) {
            dsl_error(cc->d, t->line, t->col, "'tolerate' must be a percentage from 0%% to 100%%, e.g. \"10%%\"");
            return -1;
        }
        *out = DSL_ON_ERROR_TOLERATE;
        *tolerate = pct / 100.0;
        return 0;
    }
    dsl_error(cc->d, y->line, y->col, "'on_error' must be fail or partial%s",
              allow_tolerate ? ", or { tolerate: \"P%\" }" : "");
    return -1;
}

static int build_parallel(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_map(cc, v, "parallel"))
        return -1;
    dsl_parallel *p = &n->u.parallel;
    const dsl_ynode *branches = v, *y;
    int bad = 0;
    if (dsl_ymap_get(v, "branches")) {
        cc_check_keys(cc, v, parallel_keys, "parallel");
        branches = dsl_ymap_get(v, "branches");
        if (!cc_want_map(cc, branches, "branches"))
            return -1;
        if ((y = dsl_ymap_get(v, "on_error")) && parse_on_error(cc, y, 0, &p->on_error, NULL) < 0)
            bad = 1;
    }
    if (branches->u.map.n == 0) {
        dsl_error(cc->d, branches->line, branches->col, "a parallel needs at least one branch");
        return -1;
    }
    size_t nb = branches->u.map.n;
    p->names = dsl_arena_alloc(cc->a, nb * sizeof *p->names);
    p->branches = dsl_arena_alloc(cc->a, nb * sizeof *p->branches);
    if (!p->names || !p->branches) {
        cc_oom(cc);
        return -1;
    }
    for (size_t i = 0; i < nb; i++) {
        const dsl_ynode *k = branches->u.map.pairs[i].key;
        char *suffix = NULL;
        if (branches == v && strcmp(k->u.scalar.str, "on_error") == 0) {
            dsl_error(cc->d, k->line, k->col, "'on_error' needs the long form: parallel: { branches: "
                      "{ NAME: NODE, ... }, on_error: partial }");
            bad = 1;
            continue;
        }
        if (asprintf(&suffix, "parallel.%.*s", 64, k->u.scalar.str) < 0) {
            cc_oom(cc);
            return -1;
        }
        dsl_node *b = cc_node(cc, branches->u.map.pairs[i].value, n, suffix);
        free(suffix);
        if (!b) {
            bad = 1;
            continue;
        }
        p->names[p->n] = dsl_arena_strndup(cc->a, k->u.scalar.str, k->u.scalar.len);
        p->branches[p->n++] = b;
    }
    return bad ? -1 : 0;
}

/* `on`, `check`: a template string, or a node whose output is the value. */
static int template_or_node(dsl_cc *cc, const dsl_ynode *y, const char *key, dsl_node *n,
                            dsl_template **tpl, dsl_node **node, const char *suffix)
{
    if (y->kind == DSL_Y_MAP) {
        *node = cc_node(cc, y, n, suffix);
        return *node ? 0 : -1;
    }
    *tpl = cc_template(cc, y, key, n, CC_SITE_NODE);
    return *tpl ? 0 : -1;
}

static int build_route(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_map(cc, v, "route"))
        return -1;
    cc_check_keys(cc, v, route_keys, "route");
    dsl_route *r = &n->u.route;
    const dsl_ynode *y;
    int bad = 0;
    if (!(y = dsl_ymap_get(v, "on"))) {
        cc_missing(cc, v, "on", "route");
        bad = 1;
    } else if (template_or_node(cc, y, "on", n, &r->on_tpl, &r->on_node, "route.on") < 0) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "normalize")) && !(r->normalize = cc_filter_list(cc, y, "normalize", &r->nnormalize)))
        bad = 1;
    const dsl_ynode *cases = dsl_ymap_get(v, "cases");
    if (!cases) {
        cc_missing(cc, v, "cases", "route");
        bad = 1;
    } else if (!cc_want_map(cc, cases, "cases")) {
        bad = 1;
    } else if (cases->u.map.n == 0) {
        dsl_error(cc->d, cases->line, cases->col, "a route needs at least one case");
        bad = 1;
    } else {
        size_t nc = cases->u.map.n;
        r->labels = dsl_arena_alloc(cc->a, nc * sizeof *r->labels);
        r->cases = dsl_arena_alloc(cc->a, nc * sizeof *r->cases);
        if (!r->labels || !r->cases) {
            cc_oom(cc);
            return -1;
        }
        for (size_t i = 0; i < nc; i++) {
            const dsl_ynode *k = cases->u.map.pairs[i].key;
            char *suffix = NULL;
            if (asprintf(&suffix, "route.cases.%.*s", 64, k->u.scalar.str) < 0) {
                cc_oom(cc);
                return -1;
            }
            dsl_node *c = cc_node(cc, cases->u.map.pairs[i].value, n, suffix);
            free(suffix);
            if (!c) {
                bad = 1;
                continue;
            }
            r->labels[r->n] = dsl_arena_strndup(cc->a, k->u.scalar.str, k->u.scalar.len);
            r->cases[r->n++] = c;
        }
    }
    if ((y = dsl_ymap_get(v, "default")) && !(r->default_case = cc_node(cc, y, n, "route.default")))
        bad = 1;
    return bad ? -1 : 0;
}

static int build_vote(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_map(cc, v, "vote"))
        return -1;
    cc_check_keys(cc, v, vote_keys, "vote");
    dsl_vote *vt = &n->u.vote;
    const dsl_ynode *y, *ny = dsl_ymap_get(v, "n");
    int bad = 0;
    int64_t i;
    vt->strategy = DSL_VOTE_MAJORITY;
    if (!ny) {
        cc_missing(cc, v, "n", "vote");
        bad = 1;
    } else if (cc_int(cc, ny, "n", 1, 1000, &i) < 0) {
        bad = 1;
    } else {
        vt->n = (int)i;
    }
    if (!(y = dsl_ymap_get(v, "do"))) {
        cc_missing(cc, v, "do", "vote");
        bad = 1;
    } else if (!(vt->body = cc_node(cc, y, n, "vote.do"))) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "normalize")) && !(vt->normalize = cc_filter_list(cc, y, "normalize", &vt->nnormalize)))
        bad = 1;
    if ((y = dsl_ymap_get(v, "key")) && !(vt->key = cc_template(cc, y, "key", n, CC_SITE_VOTE_KEY)))
        bad = 1;
    if ((y = dsl_ymap_get(v, "strategy"))) {
        static const char *const names[] = { "majority", "unanimous", "plurality", "at_least",
                                             "judge", NULL };
        if (y->kind == DSL_Y_SCALAR) {
            const char *s = y->u.scalar.str;
            if (strcmp(s, "majority") == 0)
                vt->strategy = DSL_VOTE_MAJORITY;
            else if (strcmp(s, "unanimous") == 0)
                vt->strategy = DSL_VOTE_UNANIMOUS;
            else if (strcmp(s, "plurality") == 0)
                vt->strategy = DSL_VOTE_PLURALITY;
            else if (strcmp(s, "at_least") == 0 || strcmp(s, "judge") == 0) {
                dsl_error(cc->d, y->line, y->col, "strategy '%s' needs a value: { %s: %s }", s, s,
                          s[0] == 'a' ? "K" : "NODE");
                bad = 1;
            } else {
                cc_error_suggest(cc, y->line, y->col, s, y->u.scalar.len, names, (size_t)-1,
                                 "unknown vote strategy '%.64s'", s);
                bad = 1;
            }
        } else if (y->kind == DSL_Y_MAP && y->u.map.n == 1) {
            const dsl_ynode *k = y->u.map.pairs[0].key, *val = y->u.map.pairs[0].value;
            if (strcmp(k->u.scalar.str, "at_least") == 0) {
                vt->strategy = DSL_VOTE_AT_LEAST;
                if (cc_int(cc, val, "at_least", 1, 1000, &i) < 0) {
                    bad = 1;
                } else if (vt->n > 0 && i > vt->n) {
                    dsl_error(cc->d, val->line, val->col,
                              "'at_least' is %lld but the vote has only n = %d samples",
                              (long long)i, vt->n);
                    bad = 1;
                } else {
                    vt->at_least = (int)i;
                }
            } else if (strcmp(k->u.scalar.str, "judge") == 0) {
                vt->strategy = DSL_VOTE_JUDGE;
                if (!(vt->judge = cc_node(cc, val, n, "vote.judge")))
                    bad = 1;
            } else if (!strcmp(k->u.scalar.str, "majority") || !strcmp(k->u.scalar.str, "unanimous") ||
                       !strcmp(k->u.scalar.str, "plurality")) {
                dsl_error(cc->d, k->line, k->col, "strategy '%s' takes no value: write 'strategy: %s'",
                          k->u.scalar.str, k->u.scalar.str);
                bad = 1;
            } else {
                cc_error_suggest(cc, k->line, k->col, k->u.scalar.str, k->u.scalar.len, names,
                                 (size_t)-1, "unknown vote strategy '%.64s'", k->u.scalar.str);
                bad = 1;
            }
        } else {
            dsl_error(cc->d, y->line, y->col,
                      "'strategy' must be majority, unanimous, plurality, { at_least: K } or { judge: NODE }");
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

static int name_ok(dsl_cc *cc, const dsl_ynode *y, const char *key, const char **out)
{
    const char *s = cc_string(cc, y, key);
    if (!s)
        return -1;
    if (!cc_is_ident(s, strlen(s))) {
        dsl_error(cc->d, y->line, y->col, "'%s' must be a name (letters, digits, _ and -), got '%.64s'",
                  key, s);
        return -1;
    }
    for (size_t i = 0; reserved_roots[i]; i++)
        if (strcmp(reserved_roots[i], s) == 0) {
            dsl_error(cc->d, y->line, y->col, "'%s' cannot be '%s': that name is taken by templates",
                      key, s);
            return -1;
        }
    *out = s;
    return 0;
}

static int build_map(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    dsl_map *m = &n->u.map;
    /* defaults first: a map node stands even when its value is malformed,
     * and later checks read its item name */
    m->as = "item";
    m->max_concurrency = cc->g->defaults.max_concurrency;
    if (!cc_want_map(cc, v, "map"))
        return -1;
    cc_check_keys(cc, v, map_keys, "map");
    const dsl_ynode *y;
    int bad = 0;
    int64_t i;
    if ((y = dsl_ymap_get(v, "as")) && name_ok(cc, y, "as", &m->as) < 0)
        bad = 1;
    if ((y = dsl_ymap_get(v, "index_as")) && name_ok(cc, y, "index_as", &m->index_as) < 0)
        bad = 1;
    if (m->index_as && strcmp(m->index_as, m->as) == 0) {
        y = dsl_ymap_get(v, "index_as");
        dsl_error(cc->d, y->line, y->col, "'index_as' and 'as' must differ");
        bad = 1;
    }
    if (!(y = dsl_ymap_get(v, "over"))) {
        cc_missing(cc, v, "over", "map");
        bad = 1;
    } else if (!(m->over = cc_template(cc, y, "over", n, CC_SITE_NODE))) {
        bad = 1;
    } else if (m->over->nparts == 0 || !m->over->parts[0].expr || !m->over->whole) {
        dsl_error(cc->d, y->line, y->col,
                  "'over' must be one template that yields a list, e.g. \"{{ input.items }}\"");
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "max_concurrency"))) {
        if (cc_int(cc, y, "max_concurrency", 1, 100000, &i) < 0)
            bad = 1;
        else
            m->max_concurrency = (int)i;
    }
    if ((y = dsl_ymap_get(v, "on_error")) && parse_on_error(cc, y, 1, &m->on_error, &m->tolerate) < 0)
        bad = 1;
    if (cc_build_batch(cc, v, &m->batch, "map") < 0)
        bad = 1;
    if (!(y = dsl_ymap_get(v, "do"))) {
        cc_missing(cc, v, "do", "map");
        bad = 1;
    } else if (!(m->body = cc_node(cc, y, n, "map.do"))) {
        bad = 1;
    }
    return bad ? -1 : 0;
}

static int build_gate(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    if (!cc_want_map(cc, v, "gate"))
        return -1;
    cc_check_keys(cc, v, gate_keys, "gate");
    dsl_gate *g = &n->u.gate;
    const dsl_ynode *y;
    int bad = 0;
    if (!(y = dsl_ymap_get(v, "check"))) {
        cc_missing(cc, v, "check", "gate");
        bad = 1;
    } else if (template_or_node(cc, y, "check", n, &g->check_tpl, &g->check_node, "gate.check") < 0) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "fail"))) {
        if (y->kind == DSL_Y_MAP) {
            if (!(g->fail_node = cc_node(cc, y, n, "gate.fail")))
                bad = 1;
        } else if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
            if (!(g->fail_message = cc_tvalue(cc, y, n, CC_SITE_NODE)))
                bad = 1;
        } else {
            dsl_error(cc->d, y->line, y->col, "'fail' must be a message or a node, got a %s",
                      dsl_ynode_describe(y));
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

int cc_workflow_name_ok(dsl_cc *cc, const dsl_ynode *y, const char *s)
{
    size_t len = strlen(s);
    if (len > 128) {
        dsl_error(cc->d, y->line, y->col, "workflow name is %zu characters long; the limit is 128", len);
        return -1;
    }
    int ok = len >= 1 && len <= 128 &&
             ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9'));
    for (size_t i = 0; ok && i < len; i++) {
        char c = s[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || c == '.';
    }
    if (!ok)
        dsl_error(cc->d, y->line, y->col,
                  "'%.64s' is not a workflow name (letters, digits, '-', '_', '.', starting with a "
                  "letter or digit; up to 128)", s);
    return ok ? 0 : -1;
}

static int build_use(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    dsl_use *u = &n->u.use;
    const dsl_ynode *y, *wy = v;
    int bad = 0;
    if (v->kind == DSL_Y_MAP) {
        cc_check_keys(cc, v, use_keys, "use");
        if (!(wy = dsl_ymap_get(v, "workflow"))) {
            cc_missing(cc, v, "workflow", "use");
            return -1;
        }
        if ((y = dsl_ymap_get(v, "input")) && !(u->input = cc_tvalue(cc, y, n, CC_SITE_NODE)))
            bad = 1;
    }
    if (!(u->workflow = cc_string(cc, wy, "use")) || cc_workflow_name_ok(cc, wy, u->workflow) < 0)
        return -1;
    return bad ? -1 : 0;
}

static int build_fail(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    dsl_fail *f = &n->u.fail;
    const dsl_ynode *y;
    f->code = "failed";
    if (v->kind == DSL_Y_SCALAR) {
        f->message = cc_shorthand(cc, v, "fail", n);
        return f->message ? 0 : -1;
    }
    if (!cc_want_map(cc, v, "fail"))
        return -1;
    cc_check_keys(cc, v, fail_keys, "fail");
    int bad = 0;
    if (!(y = dsl_ymap_get(v, "message"))) {
        cc_missing(cc, v, "message", "fail");
        bad = 1;
    } else if (!(f->message = cc_tvalue(cc, y, n, CC_SITE_NODE))) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "code"))) {
        const char *c = cc_string(cc, y, "code");
        if (!c || !cc_is_ident(c, strlen(c))) {
            if (c)
                dsl_error(cc->d, y->line, y->col, "'code' must be a name such as out_of_scope");
            bad = 1;
        } else {
            f->code = c;
        }
    }
    return bad ? -1 : 0;
}

/* The kind key of Y, with errors for none or several. Returns -1 if none. */
static int find_kind(dsl_cc *cc, const dsl_ynode *y, const dsl_ynode **val)
{
    int kind = -1;
    const dsl_ynode *first = NULL;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        for (int j = 0; cc_kind_keys[j]; j++) {
            if (strcmp(cc_kind_keys[j], k->u.scalar.str) != 0)
                continue;
            if (kind < 0) {
                kind = j;
                first = k;
                *val = y->u.map.pairs[i].value;
            } else {
                dsl_error(cc->d, k->line, k->col,
                          "a node has exactly one kind, but this one has both '%s' and '%s'",
                          cc_kind_keys[kind], cc_kind_keys[j]);
                dsl_note(cc->d, first->line, first->col, "'%s' is here", cc_kind_keys[kind]);
            }
        }
    }
    return kind;
}

static void check_node_keys(dsl_cc *cc, const dsl_ynode *y, int kind)
{
    static const char *const common[] = { COMMON_KEYS, "call", "embed", "lambda", "chain",
                                          "parallel", "route", "vote", "map", "gate", "use",
                                          "fail", "loop", "wait_for", NULL };
    char what[64];
    snprintf(what, sizeof what, kind >= 0 ? "%s node" : "node", kind >= 0 ? cc_kind_keys[kind] : "");
    cc_check_keys(cc, y, common, what);
}

/* Unknown keys that are near misses of a kind key already explain a
 * missing kind; say "no kind" only when nothing else did. */
static int near_kind(const dsl_ynode *y)
{
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        if (dsl_suggest(k->u.scalar.str, k->u.scalar.len, cc_kind_keys, (size_t)-1))
            return 1;
    }
    return 0;
}

dsl_node *cc_node(dsl_cc *cc, const dsl_ynode *y, dsl_node *parent, const char *suffix)
{
    if (cc->oom)
        return NULL;
    if (y->kind != DSL_Y_MAP) {
        dsl_error(cc->d, y->line, y->col,
                  "expected a node (a mapping with one of call, embed, lambda, chain, parallel, "
                  "route, vote, map, gate, use, fail, loop, wait_for), got a %s", dsl_ynode_describe(y));
        return NULL;
    }
    const dsl_ynode *val = NULL, *k;
    int kind = find_kind(cc, y, &val);
    check_node_keys(cc, y, kind);
    if (kind < 0) {
        if (!near_kind(y))
            dsl_error(cc->d, y->line, y->col,
                      "node has no kind: add one of call, embed, lambda, chain, parallel, route, "
                      "vote, map, gate, use, fail, loop, wait_for");
        return NULL;
    }
    dsl_node *n = dsl_arena_alloc(cc->a, sizeof *n);
    if (!n || register_node(cc, n) < 0) {
        cc_oom(cc);
        return NULL;
    }
    n->kind = (dsl_kind)kind;
    n->line = y->line;
    n->col = y->col;
    n->parent = parent;
    /* only a map's body runs per item; its fallback runs once */
    n->map_depth = parent ? parent->map_depth + (parent->kind == DSL_MAP && strcmp(suffix, "map.do") == 0) : 0;
    n->path = join_path(cc, parent, suffix);
    int bad = 0;

    if ((k = dsl_ymap_get(y, "id"))) {
        const char *id = cc_string(cc, k, "id");
        if (!id) {
            bad = 1;
        } else if (strlen(id) > 128) {
            dsl_error(cc->d, k->line, k->col, "id is %zu characters long; the limit is 128", strlen(id));
            bad = 1;
        } else if (!cc_is_ident(id, strlen(id))) {
            dsl_error(cc->d, k->line, k->col,
                      "'%.64s' is not a valid id: use letters, digits, '_' and '-', starting with a letter or '_'",
                      id);
            bad = 1;
        } else {
            dsl_node *prev = cc_idmap_get(&cc->ids, id);
            if (prev) {
                const dsl_ynode *py = cc->info[prev->index].id_y;
                dsl_error(cc->d, k->line, k->col, "duplicate id '%s'", id);
                dsl_note(cc->d, py->line, py->col, "'%s' is first used here", id);
                bad = 1;
            } else if (cc_idmap_put(&cc->ids, id, n) < 0) {
                cc_oom(cc);
                return NULL;
            }
            n->id = id;
            cc->info[n->index].id_y = k;
        }
    }
    if ((k = dsl_ymap_get(y, "description")) && !(n->description = cc_string(cc, k, "description")))
        bad = 1;
    int leaf = kind == DSL_CALL || kind == DSL_EMBED || kind == DSL_LAMBDA;
    n->timeout_ms = leaf ? cc->g->defaults.timeout_ms : 0;
    if ((k = dsl_ymap_get(y, "timeout")) && cc_duration(cc, k, "timeout", &n->timeout_ms) < 0)
        bad = 1;
    if (leaf)
        n->retry = &cc->g->defaults.retry;
    if ((k = dsl_ymap_get(y, "retry"))) {
        dsl_retry *r = dsl_arena_alloc(cc->a, sizeof *r);
        if (!r) {
            cc_oom(cc);
            return NULL;
        }
        if (cc_retry(cc, k, &cc->g->defaults.retry, r) < 0)
            bad = 1;
        n->retry = r;
    }
    if ((k = dsl_ymap_get(y, "cache"))) {
        int b;
        if (cc_bool(cc, k, "cache", &b) < 0) {
            bad = 1;
        } else if (b && !leaf) {
            dsl_error(cc->d, k->line, k->col, "'cache' applies to call, embed and lambda nodes, not to %s",
                      cc_kind_keys[kind]);
            bad = 1;
        } else {
            n->cache = b;
        }
    }

    int r = 0;
    switch (n->kind) {
    case DSL_CALL: r = cc_build_call(cc, n, val, y); break;
    case DSL_EMBED: r = cc_build_embed(cc, n, val, y); break;
    case DSL_LAMBDA: r = cc_build_lambda(cc, n, val); break;
    case DSL_CHAIN: r = build_chain(cc, n, val); break;
    case DSL_PARALLEL: r = build_parallel(cc, n, val); break;
    case DSL_ROUTE: r = build_route(cc, n, val); break;
    case DSL_VOTE: r = build_vote(cc, n, val); break;
    case DSL_MAP: r = build_map(cc, n, val); break;
    case DSL_GATE: r = build_gate(cc, n, val); break;
    case DSL_USE: r = build_use(cc, n, val); break;
    case DSL_FAIL: r = build_fail(cc, n, val); break;
    case DSL_LOOP: r = cc_build_loop(cc, n, val); break;
    case DSL_WAIT: r = cc_build_wait(cc, n, val, y); break;
    default: break;
    }
    if (r < 0)
        bad = 1;
    /* after the body, so the output template sees a finished node */
    if ((k = dsl_ymap_get(y, "output")) && !(n->output = cc_tvalue(cc, k, n, CC_SITE_OUTPUT)))
        bad = 1;
    if ((k = dsl_ymap_get(y, "fallback")) && !(n->fallback = cc_node(cc, k, n, "fallback")))
        bad = 1;
    (void)bad; /* errors are in the diagnostics; the node still stands for later checks */
    return n;
}
