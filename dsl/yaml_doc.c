/* yaml_doc.c -- a loaded document's memory and lookups: the arena every node,
 * string and array of a document lives in (freed in one pass over a few big
 * chunks), the default limits, and finding a mapping's value by key. The
 * loader that fills a document is yaml_tree.c. */
#include "dsl/yaml_tree.h"
#include "dsl/yaml_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK ((size_t)64 * 1024)
#define ARENA_BIG (ARENA_CHUNK / 8) /* larger requests get their own block */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
} arena_blk;

#define BLK_HDR ((sizeof(arena_blk) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

struct dsl_yarena {
    arena_blk *cur; /* chunk being filled; older chunks follow it */
    arena_blk *big; /* separately allocated large objects */
};

void *dsl_yarena_alloc(dsl_yarena *a, size_t n, size_t align)
{
    if (n >= ARENA_BIG) {
        if (n > SIZE_MAX - BLK_HDR)
            return NULL;
        arena_blk *b = malloc(BLK_HDR + n);
        if (!b)
            return NULL;
        b->next = a->big;
        b->used = b->cap = n;
        a->big = b;
        return (char *)b + BLK_HDR;
    }
    if (a->cur) {
        size_t at = (a->cur->used + align - 1) & ~(align - 1);
        if (at <= a->cur->cap && n <= a->cur->cap - at) {
            a->cur->used = at + n;
            return (char *)a->cur + BLK_HDR + at;
        }
    }
    arena_blk *b = malloc(BLK_HDR + ARENA_CHUNK);
    if (!b)
        return NULL;
    b->next = a->cur;
    b->cap = ARENA_CHUNK;
    b->used = n;
    a->cur = b;
    return (char *)b + BLK_HDR;
}

static void arena_free(dsl_yarena *a)
{
    arena_blk *lists[2] = { a->cur, a->big };
    for (int i = 0; i < 2; i++)
        for (arena_blk *b = lists[i], *next; b; b = next) {
            next = b->next;
            free(b);
        }
    a->cur = a->big = NULL;
}

/* The document and its arena in one allocation: dsl_ydoc_free frees both. */
typedef struct {
    dsl_ydoc doc; /* first, so a dsl_ydoc * is the box */
    dsl_yarena arena;
} ydoc_box;

dsl_ydoc *dsl_ydoc_new(const char *src, size_t len)
{
    ydoc_box *box = calloc(1, sizeof *box);
    if (!box)
        return NULL;
    box->doc.src = src;
    box->doc.src_len = len;
    box->doc.arena = &box->arena;
    return &box->doc;
}

void dsl_ydoc_free(dsl_ydoc *doc)
{
    if (!doc)
        return;
    ydoc_box *box = (ydoc_box *)doc;
    arena_free(&box->arena);
    free(box);
}

void dsl_ylimits_default(dsl_ylimits *l)
{
    l->max_depth = 256;
    l->max_nodes = 2000000;
    l->max_input = (size_t)64 * 1024 * 1024;
}

dsl_ynode *dsl_ymap_get(const dsl_ynode *map, const char *key)
{
    if (!map || map->kind != DSL_Y_MAP || !key)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < map->u.map.n; i++) {
        const dsl_ynode *k = map->u.map.pairs[i].key;
        if (k->kind == DSL_Y_SCALAR && k->u.scalar.len == kl &&
            memcmp(k->u.scalar.str, key, kl) == 0)
            return map->u.map.pairs[i].value;
    }
    return NULL;
}
