/* emit_dot.c -- a compiled graph as Graphviz DOT, for `loomctl graph --format dot`.
 *
 * Data flows left to right. Every node is drawn as a piece with one entry and
 * one exit, so a chain only has to connect each step's exit to the next
 * step's entry whatever the steps are:
 *   - leaves (call, embed, lambda, use, fail) and gates are one shape, which
 *     is both entry and exit;
 *   - parallel, vote and map are clusters with a small point as entry and one
 *     as exit, the body (or branches) between them;
 *   - a route is a diamond (entered through its `on` node when it has one)
 *     with a labelled edge to each case, the cases joining in a point;
 *   - a chain has no shape of its own (a cluster when it has an id);
 *   - a fallback hangs off its node's exit by a dashed edge, both joining in
 *     a point that becomes the exit.
 * Graphviz names: "n<index>" for a node's shape, "i<index>"/"o<index>" for
 * entry/exit points, "f<index>" for a fallback join, "cluster_<index>". */
#include "dsl/dsl.h"

#include "common/containers.h"

#include <stdbool.h>
#include <string.h>

#define SNIPPET_CHARS 30

typedef struct dot_ends {
    char entry[24], exit[24];
} dot_ends;

/* Writes S as the inside of a DOT double-quoted string: quotes and
 * backslashes escaped, line breaks as \n, other control characters as
 * spaces. With MAX > 0 it is a snippet: whitespace runs become one space (a
 * snippet stays one line) and it is cut after MAX characters (code points,
 * never inside a UTF-8 sequence) with "...". */
static void put_escaped(sbuf *out, const char *s, size_t max)
{
    size_t chars = 0;
    bool space = false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (max && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) {
            space = chars > 0;
            continue;
        }
        if (space) {
            if (chars == max) {
                sbuf_adds(out, "...");
                return;
            }
            sbuf_addc(out, ' ');
            chars++;
            space = false;
        }
        if ((*p & 0xC0) != 0x80) { /* the first byte of a character */
            if (max && chars == max) {
                sbuf_adds(out, "...");
                return;
            }
            chars++;
        }
        if (*p == '"' || *p == '\\') {
            sbuf_addc(out, '\\');
            sbuf_addc(out, *p);
        } else if (*p == '\n') {
            sbuf_adds(out, "\\n");
        } else if (*p < 0x20 || *p == 0x7F) {
            sbuf_addc(out, ' ');
        } else {
            sbuf_addc(out, *p);
        }
    }
}

static const char *tpl_src(const dsl_template *t)
{
    return t && t->source ? t->source : "";
}

/* A short text for a template value: the source of a template, a string
 * constant's text, "{...}" for anything structured. */
static const char *tvalue_text(const dsl_tvalue *tv)
{
    if (!tv)
        return "";
    if (tv->kind == DSL_TV_TEMPLATE)
        return tpl_src(tv->tpl);
    if (tv->kind == DSL_TV_CONST && json_is_string(tv->constant))
        return json_string_value(tv->constant);
    return "{...}";
}

/* The first line of every label: the kind and, when set, the id. */
static void put_head(sbuf *out, const dsl_node *n, const char *kind)
{
    put_escaped(out, kind, 0);
    if (n->id) {
        sbuf_addc(out, ' ');
        put_escaped(out, n->id, 0);
    }
}

static void leaf_label(sbuf *out, const dsl_node *n)
{
    put_head(out, n, dsl_kind_name(n->kind));
    switch (n->kind) {
    case DSL_CALL:
    case DSL_EMBED: {
        const char *provider = n->kind == DSL_CALL ? n->u.call.provider : n->u.embed.provider;
        const char *model = n->kind == DSL_CALL ? n->u.call.model : n->u.embed.model;
        sbuf_adds(out, "\\n");
        put_escaped(out, provider ? provider : "default", 0);
        if (model) {
            sbuf_addc(out, '/');
            put_escaped(out, model, 0);
        }
        if (n->kind == DSL_CALL) {
            sbuf_adds(out, "\\n");
            if (n->u.call.messages)
                sbuf_addf(out, "messages (%zu)", n->u.call.nmessages);
            else
                put_escaped(out, tvalue_text(n->u.call.prompt), SNIPPET_CHARS);
        }
        break;
    }
    case DSL_LAMBDA:
        sbuf_adds(out, "\\n");
        put_escaped(out, n->u.lambda.fn ? n->u.lambda.fn : "", 0);
        break;
    case DSL_USE:
        sbuf_adds(out, "\\n");
        put_escaped(out, n->u.use.workflow ? n->u.use.workflow : "", 0);
        break;
    case DSL_FAIL:
        sbuf_adds(out, "\\n");
        put_escaped(out, tvalue_text(n->u.fail.message), SNIPPET_CHARS);
        break;
    case DSL_WAIT:
        sbuf_adds(out, "\\n");
        put_escaped(out, tpl_src(n->u.wait.signal), SNIPPET_CHARS);
        break;
    default:
        break;
    }
}

static void edge(sbuf *out, const char *from, const char *to, const char *label, const char *style)
{
    sbuf_addf(out, "  \"%s\" -> \"%s\"", from, to);
    if (label || style) {
        sbuf_adds(out, " [");
        if (label) {
            sbuf_adds(out, "label=\"");
            put_escaped(out, label, SNIPPET_CHARS);
            sbuf_addc(out, '"');
        }
        if (style)
            sbuf_addf(out, "%s%s", label ? ", " : "", style);
        sbuf_addc(out, ']');
    }
    sbuf_addc(out, '\n');
}

static void point(sbuf *out, const char *name)
{
    sbuf_addf(out, "  \"%s\" [shape=point, width=0.08]\n", name);
}

static void cluster_begin(sbuf *out, const dsl_node *n)
{
    sbuf_addf(out, "  subgraph \"cluster_%u\" {\n  label=\"", (unsigned)n->index);
}

static void set_ends(dot_ends *e, char entry, char exit, uint32_t index)
{
    snprintf(e->entry, sizeof e->entry, "%c%u", entry, (unsigned)index);
    snprintf(e->exit, sizeof e->exit, "%c%u", exit, (unsigned)index);
}

/* Nesting is bounded by the YAML loader's depth limit, so recursion is shallow. */
static dot_ends emit_node(sbuf *out, const dsl_node *n);

/* Draws a node inside a cluster between entry and exit points: map and vote. */
static dot_ends emit_boxed_body(sbuf *out, const dsl_node *n, const dsl_node *body,
                                const dsl_node *judge)
{
    dot_ends e;
    set_ends(&e, 'i', 'o', n->index);
    point(out, e.entry);
    point(out, e.exit);
    const char *last = e.entry;
    char last_buf[24];
    if (body) {
        dot_ends b = emit_node(out, body);
        edge(out, e.entry, b.entry, NULL, NULL);
        memcpy(last_buf, b.exit, sizeof last_buf);
        last = last_buf;
    }
    if (judge) {
        dot_ends j = emit_node(out, judge);
        edge(out, last, j.entry, "judge", NULL);
        memcpy(last_buf, j.exit, sizeof last_buf);
        last = last_buf;
    }
    edge(out, last, e.exit, NULL, NULL);
    return e;
}

static dot_ends emit_route(sbuf *out, const dsl_node *n)
{
    const dsl_route *r = &n->u.route;
    dot_ends e;
    set_ends(&e, 'n', 'o', n->index);
    sbuf_addf(out, "  \"%s\" [shape=diamond, label=\"", e.entry);
    put_head(out, n, "route");
    if (!r->on_node) {
        sbuf_adds(out, "\\n");
        put_escaped(out, tpl_src(r->on_tpl), SNIPPET_CHARS);
    }
    sbuf_adds(out, "\"]\n");
    point(out, e.exit);
    if (r->on_node) {
        /* the `on` node sees the route's input first, the diamond its value */
        dot_ends on = emit_node(out, r->on_node);
        edge(out, on.exit, e.entry, "on", NULL);
        memcpy(e.entry, on.entry, sizeof e.entry);
    }
    char diamond[24];
    snprintf(diamond, sizeof diamond, "n%u", (unsigned)n->index);
    for (size_t i = 0; i < r->n; i++) {
        dot_ends c = emit_node(out, r->cases[i]);
        edge(out, diamond, c.entry, r->labels[i], NULL);
        edge(out, c.exit, e.exit, NULL, NULL);
    }
    if (r->default_case) {
        dot_ends c = emit_node(out, r->default_case);
        edge(out, diamond, c.entry, "default", "style=dashed");
        edge(out, c.exit, e.exit, NULL, NULL);
    }
    return e;
}

static dot_ends emit_gate(sbuf *out, const dsl_node *n)
{
    const dsl_gate *g = &n->u.gate;
    dot_ends e;
    set_ends(&e, 'n', 'n', n->index);
    sbuf_addf(out, "  \"%s\" [shape=hexagon, label=\"", e.entry);
    put_head(out, n, "gate");
    if (!g->check_node) {
        sbuf_adds(out, "\\n");
        put_escaped(out, tpl_src(g->check_tpl), SNIPPET_CHARS);
    }
    sbuf_adds(out, "\"]\n");
    if (g->check_node) {
        dot_ends c = emit_node(out, g->check_node);
        edge(out, e.entry, c.entry, "check", "style=dotted, arrowhead=none");
    }
    if (g->fail_node) {
        dot_ends f = emit_node(out, g->fail_node);
        edge(out, e.entry, f.entry, "fail", "color=red, style=dotted");
    } else if (g->fail_message) {
        sbuf_addf(out, "  \"x%u\" [shape=note, color=red, fontsize=10, label=\"",
                (unsigned)n->index);
        put_escaped(out, tvalue_text(g->fail_message), SNIPPET_CHARS);
        sbuf_adds(out, "\"]\n");
        char note[24];
        snprintf(note, sizeof note, "x%u", (unsigned)n->index);
        edge(out, e.entry, note, "fail", "color=red, style=dotted");
    }
    return e;
}

/* A loop: its body, then its until node, inside a cluster, with an edge
 * back to the body for the next iteration. */
static dot_ends emit_loop(sbuf *out, const dsl_node *n)
{
    const dsl_loop *l = &n->u.loop;
    cluster_begin(out, n);
    put_head(out, n, "loop");
    sbuf_addf(out, " \xE2\x89\xA4%d", l->max_iterations); /* U+2264 LESS-THAN OR EQUAL TO */
    if (l->until_tpl) {
        sbuf_adds(out, " until ");
        put_escaped(out, tpl_src(l->until_tpl), SNIPPET_CHARS);
    }
    if (l->collect)
        sbuf_adds(out, " (collect)");
    if (l->on_exhausted == DSL_EXHAUSTED_LAST)
        sbuf_adds(out, " (else last)");
    sbuf_adds(out, "\"\n");
    dot_ends e;
    set_ends(&e, 'i', 'o', n->index);
    point(out, e.entry);
    point(out, e.exit);
    char last[24], first[24];
    memcpy(last, e.entry, sizeof last);
    first[0] = 0;
    if (l->body) {
        dot_ends b = emit_node(out, l->body);
        edge(out, e.entry, b.entry, NULL, NULL);
        memcpy(first, b.entry, sizeof first);
        memcpy(last, b.exit, sizeof last);
    }
    if (l->until_node) {
        dot_ends u = emit_node(out, l->until_node);
        edge(out, last, u.entry, "until", NULL);
        memcpy(last, u.exit, sizeof last);
    }
    edge(out, last, e.exit, NULL, NULL);
    if (first[0])
        edge(out, last, first, "again", "style=dashed, constraint=false");
    sbuf_adds(out, "  }\n");
    return e;
}

/* The shape of N itself, without its fallback. */
static dot_ends emit_body(sbuf *out, const dsl_node *n)
{
    dot_ends e;
    switch (n->kind) {
    case DSL_CALL:
    case DSL_EMBED:
    case DSL_LAMBDA:
    case DSL_USE:
    case DSL_FAIL:
    case DSL_WAIT:
        set_ends(&e, 'n', 'n', n->index);
        sbuf_addf(out, "  \"%s\" [shape=box%s, label=\"", e.entry,
                n->kind == DSL_WAIT ? ", style=dashed"
                : n->kind == DSL_USE ? ", peripheries=2"
                : n->kind == DSL_FAIL ? ", color=red, fontcolor=red"
                : n->kind == DSL_LAMBDA ? ", style=rounded" : "");
        leaf_label(out, n);
        sbuf_adds(out, "\"]\n");
        return e;
    case DSL_GATE:
        return emit_gate(out, n);
    case DSL_ROUTE:
        return emit_route(out, n);
    case DSL_CHAIN: {
        const dsl_chain *c = &n->u.chain;
        if (n->id) {
            cluster_begin(out, n);
            put_head(out, n, "chain");
            sbuf_adds(out, "\"\n  style=dotted\n");
        }
        dot_ends prev = { "", "" };
        for (size_t i = 0; i < c->n; i++) {
            dot_ends s = emit_node(out, c->steps[i]);
            if (i == 0)
                memcpy(e.entry, s.entry, sizeof e.entry);
            else
                edge(out, prev.exit, s.entry, NULL, NULL);
            prev = s;
        }
        memcpy(e.exit, prev.exit, sizeof e.exit);
        if (n->id)
            sbuf_adds(out, "  }\n");
        if (c->n == 0) { /* rejected by the compiler; drawn anyway as a point */
            set_ends(&e, 'i', 'i', n->index);
            point(out, e.entry);
        }
        return e;
    }
    case DSL_PARALLEL: {
        const dsl_parallel *p = &n->u.parallel;
        cluster_begin(out, n);
        put_head(out, n, "parallel");
        sbuf_addf(out, "%s\"\n", p->on_error == DSL_ON_ERROR_PARTIAL ? " (partial)" : "");
        set_ends(&e, 'i', 'o', n->index);
        point(out, e.entry);
        point(out, e.exit);
        for (size_t i = 0; i < p->n; i++) {
            dot_ends b = emit_node(out, p->branches[i]);
            edge(out, e.entry, b.entry, p->names[i], NULL);
            edge(out, b.exit, e.exit, NULL, NULL);
        }
        sbuf_adds(out, "  }\n");
        return e;
    }
    case DSL_VOTE: {
        const dsl_vote *v = &n->u.vote;
        static const char *const names[] = {
            [DSL_VOTE_MAJORITY] = "majority", [DSL_VOTE_UNANIMOUS] = "unanimous",
            [DSL_VOTE_AT_LEAST] = "at_least", [DSL_VOTE_PLURALITY] = "plurality",
            [DSL_VOTE_JUDGE] = "judge",
        };
        cluster_begin(out, n);
        put_head(out, n, "vote");
        sbuf_addf(out, " n=%d %s", v->n,
                (unsigned)v->strategy <= DSL_VOTE_JUDGE ? names[v->strategy] : "?");
        if (v->strategy == DSL_VOTE_AT_LEAST)
            sbuf_addf(out, " %d", v->at_least);
        sbuf_adds(out, "\"\n");
        e = emit_boxed_body(out, n, v->body,
                            v->strategy == DSL_VOTE_JUDGE ? v->judge : NULL);
        sbuf_adds(out, "  }\n");
        return e;
    }
    case DSL_MAP: {
        const dsl_map *m = &n->u.map;
        cluster_begin(out, n);
        put_head(out, n, "map");
        sbuf_adds(out, " over ");
        put_escaped(out, tpl_src(m->over), SNIPPET_CHARS);
        sbuf_addf(out, " \xC3\x97%d", m->max_concurrency); /* U+00D7 MULTIPLICATION SIGN */
        if (m->on_error == DSL_ON_ERROR_PARTIAL)
            sbuf_adds(out, " (partial)");
        else if (m->on_error == DSL_ON_ERROR_TOLERATE)
            sbuf_addf(out, " (tolerate %g%%)", m->tolerate * 100.0);
        sbuf_adds(out, "\"\n");
        e = emit_boxed_body(out, n, m->body, NULL);
        sbuf_adds(out, "  }\n");
        return e;
    }
    case DSL_LOOP:
        return emit_loop(out, n);
    case DSL_KIND_COUNT:
        break;
    }
    set_ends(&e, 'n', 'n', n->index);
    sbuf_addf(out, "  \"%s\" [label=\"?\"]\n", e.entry);
    return e;
}

static dot_ends emit_node(sbuf *out, const dsl_node *n)
{
    dot_ends e = emit_body(out, n);
    if (!n->fallback)
        return e;
    /* Whichever of the node and its fallback finishes feeds what comes next. */
    dot_ends f = emit_node(out, n->fallback);
    char join[24];
    snprintf(join, sizeof join, "f%u", (unsigned)n->index);
    point(out, join);
    edge(out, e.exit, f.entry, "fallback", "style=dashed");
    edge(out, e.exit, join, NULL, NULL);
    edge(out, f.exit, join, NULL, "style=dashed");
    memcpy(e.exit, join, sizeof e.exit);
    return e;
}

char *dsl_emit_dot(const dsl_graph *g, size_t *len)
{
    sbuf b = SBUF_INIT, *out = &b;
    sbuf_adds(out, "digraph \"");
    put_escaped(out, g->name ? g->name : "workflow", 0);
    sbuf_adds(out, "\" {\n"
                   "  rankdir=LR\n"
                   "  labelloc=t\n"
                   "  fontname=\"Helvetica\"\n"
                   "  node [fontname=\"Helvetica\", fontsize=11]\n"
                   "  edge [fontname=\"Helvetica\", fontsize=9]\n"
                   "  label=\"");
    put_escaped(out, g->name ? g->name : "workflow", 0);
    sbuf_adds(out, "\"\n");
    sbuf_adds(out, "  \"input\" [shape=circle, label=\"in\", width=0.3, fixedsize=true]\n"
                   "  \"output\" [shape=doublecircle, label=\"out\", width=0.3, fixedsize=true]\n");
    if (g->root) {
        dot_ends e = emit_node(out, g->root);
        edge(out, "input", e.entry, NULL, NULL);
        edge(out, e.exit, "output", NULL, NULL);
    }
    sbuf_adds(out, "}\n");
    /* the buffer's failure is sticky: one check covers every append */
    return sbuf_steal(out, len);
}
