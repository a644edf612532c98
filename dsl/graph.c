/* graph.c -- lifetime of compiled graphs, and the names of their enums.
 *
 * A graph owns everything it points to through one arena (nodes, strings,
 * arrays) plus two side lists for objects with their own destructors (jansson
 * values and parsed templates). Freeing is therefore one walk over three lists,
 * however many nodes the workflow has. */
#include "dsl/compile.h"
#include "common/containers.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK 65536

struct dsl_arena {
    char *cur;          /* bump pointer into the newest chunk */
    size_t left;
    void **chunks;      /* every block allocated, freed at the end */
    size_t nchunks, capchunks;
    json_t **jsons;     /* references owned by the graph */
    size_t njsons, capjsons;
    dsl_template **tpls;
    size_t ntpls, captpls;
    dsl_schema **schemas;
    size_t nschemas, capschemas;
};

dsl_arena *dsl_arena_new(void)
{
    return calloc(1, sizeof(dsl_arena));
}

static int push_ptr(void ***v, size_t *n, size_t *cap, void *p)
{
    if (vec_reserve(v, *n, cap, sizeof **v, 16) < 0)
        return -1;
    (*v)[(*n)++] = p;
    return 0;
}

void *dsl_arena_alloc(dsl_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    if (size > ARENA_CHUNK / 4) {
        /* big objects get their own block so chunks stay densely used */
        void *p = calloc(1, size);
        if (!p || push_ptr(&a->chunks, &a->nchunks, &a->capchunks, p) < 0) {
            free(p);
            return NULL;
        }
        return p;
    }
    if (a->left < size) {
        char *c = calloc(1, ARENA_CHUNK);
        if (!c || push_ptr(&a->chunks, &a->nchunks, &a->capchunks, c) < 0) {
            free(c);
            return NULL;
        }
        a->cur = c;
        a->left = ARENA_CHUNK;
    }
    void *p = a->cur;
    a->cur += size;
    a->left -= size;
    return p;
}

char *dsl_arena_strndup(dsl_arena *a, const char *s, size_t len)
{
    char *p = dsl_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = 0;
    return p;
}

char *dsl_arena_strdup(dsl_arena *a, const char *s)
{
    return dsl_arena_strndup(a, s, strlen(s));
}

int dsl_arena_own_json(dsl_arena *a, json_t *v)
{
    if (!v)
        return -1;
    if (push_ptr((void ***)&a->jsons, &a->njsons, &a->capjsons, v) < 0) {
        json_decref(v);
        return -1;
    }
    return 0;
}

int dsl_arena_own_template(dsl_arena *a, dsl_template *t)
{
    if (!t)
        return -1;
    if (push_ptr((void ***)&a->tpls, &a->ntpls, &a->captpls, t) < 0) {
        dsl_template_free(t);
        return -1;
    }
    return 0;
}

int dsl_arena_own_schema(dsl_arena *a, dsl_schema *s)
{
    if (!s)
        return -1;
    if (push_ptr((void ***)&a->schemas, &a->nschemas, &a->capschemas, s) < 0) {
        dsl_schema_free(s);
        return -1;
    }
    return 0;
}

void dsl_arena_free(dsl_arena *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nschemas; i++)
        dsl_schema_free(a->schemas[i]);
    free(a->schemas);
    for (size_t i = 0; i < a->njsons; i++)
        json_decref(a->jsons[i]);
    for (size_t i = 0; i < a->ntpls; i++)
        dsl_template_free(a->tpls[i]);
    for (size_t i = 0; i < a->nchunks; i++)
        free(a->chunks[i]);
    free(a->jsons);
    free(a->tpls);
    free(a->chunks);
    free(a);
}

dsl_graph *dsl_graph_ref(dsl_graph *g)
{
    if (g)
        atomic_fetch_add_explicit((_Atomic int *)&g->refcount, 1, memory_order_relaxed);
    return g;
}

void dsl_graph_unref(dsl_graph *g)
{
    if (!g)
        return;
    if (atomic_fetch_sub_explicit((_Atomic int *)&g->refcount, 1, memory_order_acq_rel) != 1)
        return;
    free(g->nodes);
    dsl_arena_free(g->arena);
    /* the graph struct itself lives in its arena */
}

static const char *const kind_names[DSL_KIND_COUNT] = {
    [DSL_CALL] = "call",     [DSL_EMBED] = "embed", [DSL_LAMBDA] = "lambda",
    [DSL_CHAIN] = "chain",   [DSL_PARALLEL] = "parallel", [DSL_ROUTE] = "route",
    [DSL_VOTE] = "vote",     [DSL_MAP] = "map",     [DSL_GATE] = "gate",
    [DSL_USE] = "use",       [DSL_FAIL] = "fail",
    [DSL_LOOP] = "loop",     [DSL_WAIT] = "wait_for",
};

const char *dsl_kind_name(dsl_kind k)
{
    return (unsigned)k < DSL_KIND_COUNT ? kind_names[k] : "?";
}

static const char *const class_names[DSL_ERR_CLASS_COUNT] = {
    [DSL_ERR_TIMEOUT] = "timeout",
    [DSL_ERR_RATE_LIMITED] = "rate_limited",
    [DSL_ERR_UPSTREAM] = "upstream",
    [DSL_ERR_INVALID_OUTPUT] = "invalid_output",
    [DSL_ERR_LAMBDA_FAILED] = "lambda_failed",
    [DSL_ERR_QUOTA] = "quota",
    [DSL_ERR_INVALID_REQUEST] = "invalid_request",
    [DSL_ERR_GATE] = "gate",
    [DSL_ERR_NO_ROUTE] = "no_route",
    [DSL_ERR_FAILED] = "failed",
    [DSL_ERR_CANCELLED] = "cancelled",
    [DSL_ERR_PLUGIN_CRASHED] = "plugin_crashed",
    [DSL_ERR_BUDGET_EXCEEDED] = "budget_exceeded",
    [DSL_ERR_LOOP_EXHAUSTED] = "loop_exhausted",
    [DSL_ERR_TLS] = "tls",
};

const char *const *dsl_error_class_names(void)
{
    return class_names;
}

const char *dsl_error_class_name(dsl_error_class c)
{
    return (unsigned)c < DSL_ERR_CLASS_COUNT ? class_names[c] : "unknown";
}

int dsl_error_class_find(const char *name)
{
    for (int i = 0; i < DSL_ERR_CLASS_COUNT; i++)
        if (strcmp(class_names[i], name) == 0)
            return i;
    return -1;
}

static const char *const type_names[] = {
    [DSL_TYPE_ANY] = "any",         [DSL_TYPE_STRING] = "string",
    [DSL_TYPE_NUMBER] = "number",   [DSL_TYPE_INTEGER] = "integer",
    [DSL_TYPE_BOOLEAN] = "boolean", [DSL_TYPE_OBJECT] = "object",
    [DSL_TYPE_ARRAY] = "array",
};

const char *dsl_type_name(dsl_type t)
{
    return (unsigned)t <= DSL_TYPE_ARRAY ? type_names[t] : "?";
}

int dsl_type_find(const char *name)
{
    for (int i = 0; i <= DSL_TYPE_ARRAY; i++)
        if (strcmp(type_names[i], name) == 0)
            return i;
    return -1;
}

const char *const *dsl_type_names(void)
{
    static const char *const names[] = { "any", "string", "number", "integer",
                                         "boolean", "object", "array", NULL };
    return names;
}

size_t dsl_node_children(const dsl_node *n, const dsl_node **out, size_t max)
{
    size_t k = 0;
#define ADD(x)                      \
    do {                            \
        const dsl_node *c_ = (x);   \
        if (c_) {                   \
            if (k < max)            \
                out[k] = c_;        \
            k++;                    \
        }                           \
    } while (0)
    switch (n->kind) {
    case DSL_CHAIN:
        for (size_t i = 0; i < n->u.chain.n; i++)
            ADD(n->u.chain.steps[i]);
        break;
    case DSL_PARALLEL:
        for (size_t i = 0; i < n->u.parallel.n; i++)
            ADD(n->u.parallel.branches[i]);
        break;
    case DSL_ROUTE:
        ADD(n->u.route.on_node);
        for (size_t i = 0; i < n->u.route.n; i++)
            ADD(n->u.route.cases[i]);
        ADD(n->u.route.default_case);
        break;
    case DSL_VOTE:
        ADD(n->u.vote.body);
        ADD(n->u.vote.judge);
        break;
    case DSL_MAP:
        ADD(n->u.map.body);
        break;
    case DSL_GATE:
        ADD(n->u.gate.check_node);
        ADD(n->u.gate.fail_node);
        break;
    case DSL_LOOP:
        ADD(n->u.loop.body);
        ADD(n->u.loop.until_node);
        break;
    default:
        break;
    }
#undef ADD
    return k;
}
