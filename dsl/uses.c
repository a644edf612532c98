/* uses.c -- checks `use` across a set of workflows: targets exist, no cycles.
 *
 * A set can hold thousands of workflows, so names are looked up in a sorted
 * array (binary search) and cycles are found with one iterative depth-first
 * search over the whole set (white/grey/black colours, an explicit stack:
 * a chain of thousands of `use`s must not overflow the C stack). Each back
 * edge the search meets closes one cycle, reported once, in the file of the
 * cycle's member that comes first in the set (callers list the files they
 * care about first), at that member's `use` of the next member:
 *   workflow cycle: a -> b -> a */
#include "dsl/dsl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/suggest.h"

typedef struct uses_entry {
    const char *name;
    size_t index; /* into the set, or SIZE_MAX for a registry workflow */
} uses_entry;

static int entry_cmp(const void *a, const void *b)
{
    const uses_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index; /* first one wins */
}

/* The first entry named NAME in the sorted V, or NULL. */
static const uses_entry *entry_find(const uses_entry *v, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && strcmp(v[lo].name, name) == 0 ? &v[lo] : NULL;
}

/* One DFS frame: a workflow and the next of its uses to follow. */
typedef struct uses_frame {
    size_t vertex;
    size_t next;
} uses_frame;

typedef struct uses_ctx {
    dsl_graph *const *graphs;
    const char *const *names;
    size_t n;
    dsl_diags *const *diags;
    size_t *target;  /* per use, flattened: the set index it names, or SIZE_MAX */
    size_t *first;   /* per vertex: where its uses start in TARGET */
    size_t errors;
} uses_ctx;

static const char *vertex_name(const uses_ctx *c, size_t v)
{
    if (c->graphs[v] && c->graphs[v]->name)
        return c->graphs[v]->name;
    return c->names ? c->names[v] : NULL;
}

/* For messages: a vertex on the DFS stack always has a compiled graph, whose
 * name the compiler guarantees; "?" only guards against a broken caller. */
static const char *display_name(const uses_ctx *c, size_t v)
{
    const char *s = vertex_name(c, v);
    return s ? s : "?";
}

static void report(uses_ctx *c, size_t v, const dsl_node *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(uses_ctx *c, size_t v, const dsl_node *at, const char *fmt, ...)
{
    c->errors++;
    if (c->diags && c->diags[v]) {
        va_list ap;
        va_start(ap, fmt);
        dsl_diag_vadd(c->diags[v], DSL_SEV_ERROR, at ? at->line : 0, at ? at->col : 0, fmt, ap);
        va_end(ap);
    }
}

/* Reports the cycle on STACK[FROM..TOP] closed by TOP's use number EDGE
 * (which leads back to STACK[FROM].vertex). */
static void report_cycle(uses_ctx *c, const uses_frame *stack, size_t from, size_t top,
                         size_t edge)
{
    /* Start at the member first in the set, so the error lands in the file
     * a caller is most likely to print. */
    size_t m = from;
    for (size_t i = from; i <= top; i++)
        if (stack[i].vertex < stack[m].vertex)
            m = i;
    size_t len = top - from + 1;
    size_t cap = 1;
    for (size_t k = 0; k <= len; k++)
        cap += strlen(display_name(c, stack[from + (m - from + k) % len].vertex)) + 4;
    char *msg = malloc(cap);
    if (msg) {
        char *p = msg;
        for (size_t k = 0; k <= len; k++) {
            const char *s = display_name(c, stack[from + (m - from + k) % len].vertex);
            size_t sl = strlen(s);
            if (k) {
                memcpy(p, " -> ", 4);
                p += 4;
            }
            memcpy(p, s, sl);
            p += sl;
        }
        *p = 0;
    }
    /* M's use that leads to its successor: the one being followed from the
     * frame (next - 1), or the closing edge when M is the top. */
    size_t mv = stack[m].vertex;
    size_t use = m == top ? edge : stack[m].next - 1;
    const dsl_node *at = c->graphs[mv]->use_nodes[use - c->first[mv]];
    report(c, mv, at, "workflow cycle: %s", msg ? msg : display_name(c, mv));
    free(msg);
}

/* The iterative DFS. Returns 0, or -1 when out of memory. */
static int find_cycles(uses_ctx *c)
{
    enum { WHITE, GREY, BLACK };
    unsigned char *colour = calloc(c->n ? c->n : 1, 1);
    size_t *pos = malloc((c->n ? c->n : 1) * sizeof *pos); /* stack position of a grey vertex */
    uses_frame *stack = malloc((c->n ? c->n : 1) * sizeof *stack);
    int rc = -1;
    if (!colour || !pos || !stack)
        goto out;
    for (size_t root = 0; root < c->n; root++) {
        if (colour[root] != WHITE || !c->graphs[root])
            continue;
        size_t top = 0;
        stack[0] = (uses_frame){ root, c->first[root] };
        colour[root] = GREY;
        pos[root] = 0;
        for (;;) {
            uses_frame *f = &stack[top];
            if (f->next == c->first[f->vertex + 1]) {
                colour[f->vertex] = BLACK;
                if (top == 0)
                    break;
                top--;
                continue;
            }
            size_t edge = f->next++;
            size_t w = c->target[edge];
            if (w == SIZE_MAX || !c->graphs[w] || colour[w] == BLACK)
                continue;
            if (colour[w] == GREY) {
                report_cycle(c, stack, pos[w], top, edge);
                continue;
            }
            /* a grey path never repeats a vertex, so the stack holds at most n */
            colour[w] = GREY;
            pos[w] = ++top;
            stack[top] = (uses_frame){ w, c->first[w] };
        }
    }
    rc = 0;
out:
    free(colour);
    free(pos);
    free(stack);
    return rc;
}

size_t dsl_check_uses(dsl_graph *const *graphs, const char *const *names, size_t n,
                      const dsl_registry *registry, dsl_diags *const *diags)
{
    uses_ctx c = { graphs, names, n, diags, NULL, NULL, 0 };
    uses_entry *known = NULL;
    const char **cands = NULL;
    size_t nknown = 0, nreg = 0, nedges = 0;
    const char *const *reg = registry ? registry->workflows : NULL;
    while (reg && reg[nreg])
        nreg++;
    for (size_t i = 0; i < n; i++)
        if (graphs[i])
            nedges += graphs[i]->nuses;

    known = malloc((n + nreg + 1) * sizeof *known);
    cands = malloc((n + nreg + 1) * sizeof *cands);
    c.first = malloc((n + 1) * sizeof *c.first);
    c.target = malloc((nedges ? nedges : 1) * sizeof *c.target);
    if (!known || !cands || !c.first || !c.target)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const char *name = vertex_name(&c, i);
        if (name)
            known[nknown++] = (uses_entry){ name, i };
    }
    for (size_t i = 0; i < nreg; i++)
        known[nknown++] = (uses_entry){ reg[i], SIZE_MAX };
    for (size_t i = 0; i < nknown; i++)
        cands[i] = known[i].name; /* before sorting: suggestions prefer the set's order */
    qsort(known, nknown, sizeof *known, entry_cmp);
    /* Two files of the set with one name: `use` and submit would silently
     * pick the first, so the later one is an error. */
    for (size_t i = 1; i < nknown; i++) {
        const uses_entry *a = &known[i - 1], *b = &known[i];
        if (strcmp(a->name, b->name) != 0 || b->index == SIZE_MAX || a->index == SIZE_MAX)
            continue;
        const char *other = graphs[a->index] ? graphs[a->index]->file : NULL;
        if (other)
            report(&c, b->index, NULL, "workflow name '%s' is already used by %s", b->name, other);
        else
            report(&c, b->index, NULL, "workflow name '%s' is already used by another file", b->name);
    }

    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        c.first[i] = e;
        const dsl_graph *g = graphs[i];
        for (size_t u = 0; g && u < g->nuses; u++, e++) {
            const uses_entry *t = entry_find(known, nknown, g->uses[u]);
            c.target[e] = t ? t->index : SIZE_MAX;
            if (t)
                continue;
            const dsl_node *at = g->use_nodes[u];
            /* "did you mean" inline, as every other compiler message has it */
            const char *hint = dsl_suggest(g->uses[u], strlen(g->uses[u]), cands, nknown);
            if (hint)
                report(&c, i, at, "unknown workflow '%s'; did you mean '%s'?", g->uses[u], hint);
            else
                report(&c, i, at, "unknown workflow '%s'", g->uses[u]);
        }
    }
    c.first[n] = e;
    if (find_cycles(&c) < 0)
        goto oom;
    goto out;
oom:
    /* Unchecked is not valid: say so in every file rather than pass it. */
    for (size_t i = 0; i < n; i++)
        if (diags && diags[i]) {
            dsl_error(diags[i], 0, 0, "out of memory while checking 'use' across workflows");
            c.errors++;
        }
out:
    for (size_t i = 0; diags && i < n; i++)
        if (diags[i])
            dsl_diags_sort(diags[i]);
    free(known);
    free(cands);
    free(c.first);
    free(c.target);
    return c.errors;
}

bool dsl_is_workflow_file(const char *name)
{
    size_t len = strlen(name);
    if (name[0] == '.' || name[0] == '#')
        return false;
    return (len > 5 && strcmp(name + len - 5, ".yaml") == 0) ||
           (len > 4 && strcmp(name + len - 4, ".yml") == 0);
}

char *dsl_declared_name(const char *file, const char *buf, size_t len, const dsl_ylimits *limits)
{
    dsl_diags d;
    char *name = NULL;
    if (dsl_diags_init(&d, file) < 0)
        return NULL;
    dsl_ydoc *doc = dsl_yaml_load(buf, len, limits, &d);
    const dsl_ynode *v = doc && doc->root ? dsl_ymap_get(doc->root, "name") : NULL;
    if (v && v->kind == DSL_Y_SCALAR && v->u.scalar.len > 0 &&
        strlen(v->u.scalar.str) == v->u.scalar.len)
        name = strdup(v->u.scalar.str);
    dsl_ydoc_free(doc);
    dsl_diags_free(&d);
    return name;
}
