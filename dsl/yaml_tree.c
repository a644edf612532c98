/* yaml_tree.c -- YAML text to a positioned dsl_ynode tree (see yaml_tree.h).
 *
 * libyaml's event API drives one loop over an explicit stack of open
 * collections, so hostile nesting costs heap, not C stack, and stops at the
 * depth limit. Children of every open collection pile up on one shared
 * scratch vector and are copied into the document's arena when their
 * collection ends; nodes, strings and arrays all live in that arena, so a
 * document is freed in one pass over a few big chunks (yaml_doc.c). */
#include "dsl/yaml_tree.h"
#include "dsl/yaml_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/containers.h"

/* ---- small helpers -------------------------------------------------------- */

static size_t sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static int mark_num(size_t zero_based)
{
    return zero_based >= (size_t)INT_MAX ? INT_MAX : (int)zero_based + 1;
}

/* Seeded by an address so that colliding key sets cannot be precomputed for
 * every run (ASLR), without any global state. */
static uint64_t hash_bytes(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

static int same_scalar(const dsl_ynode *a, const dsl_ynode *b)
{
    return a->u.scalar.len == b->u.scalar.len &&
           memcmp(a->u.scalar.str, b->u.scalar.str, a->u.scalar.len) == 0;
}

/* ---- builder state -------------------------------------------------------- */

/* Keys of mappings with more than this many keys go into a hash set;
 * below it a linear scan is cheaper. */
#define KEYSET_MIN 16

typedef struct {
    dsl_ynode *node;
    size_t base;          /* its first child in builder.kids */
    size_t size;          /* expanded size so far, itself included */
    size_t height;        /* deepest nesting among its children */
    size_t anchor;        /* 1 + index in builder.anchors, 0 if none */
    int want_value;       /* map: the next child is a value */
    int skip_value;       /* map: that value belongs to a rejected key */
    dsl_ynode **keyset;   /* map with many keys: open addressing, heap */
    size_t keyset_cap, keyset_n;
} frame;

typedef struct {
    const char *name;     /* in the arena */
    dsl_ynode *node;
    size_t size, height;  /* valid once done */
    int done;             /* 0 while the node is still being built */
} anchor_rec;

typedef struct {
    const unsigned char *base; /* what libyaml reads: the buffer after a BOM */
    size_t blen, skip;         /* skip: bytes of BOM before base */
    int ascii;                 /* marks' character indexes are byte offsets */
    size_t ci_start[2], ci_end[2]; /* {char index, byte} cursors for marks */
    dsl_ylimits lim;
    dsl_diags *diags;
    dsl_yarena *ar;
    uint64_t seed;
    frame *stack;
    size_t depth, stack_cap;
    dsl_ynode **kids;          /* children of all open collections */
    size_t nkids, kids_cap;
    anchor_rec *anchors;
    size_t nanchors, anchors_cap;
    size_t *anchor_slots;      /* 1 + index in anchors, 0 empty */
    size_t anchor_slots_cap;
    size_t total;              /* expanded nodes so far */
    dsl_ynode *root;
    int ndocs;
} builder;

static void yerr(builder *b, dsl_severity sev, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void yerr(builder *b, dsl_severity sev, int line, int col, const char *fmt, ...)
{
    if (!b->diags)
        return;
    va_list ap;
    va_start(ap, fmt);
    dsl_diag_vadd(b->diags, sev, line, col, fmt, ap);
    va_end(ap);
}

#define YERR_AT(b, m, ...) \
    yerr((b), DSL_SEV_ERROR, mark_num((m)->line), mark_num((m)->column), __VA_ARGS__)

static int oom(builder *b)
{
    yerr(b, DSL_SEV_ERROR, 0, 0, "out of memory while loading YAML");
    return -1;
}

/* libyaml's mark.index counts characters; nodes want byte offsets. CUR
 * ({index, byte}) moves from its last position, so in-order marks cost
 * linear time overall. */
static size_t mark_offset(const builder *b, size_t cur[2], size_t index)
{
    if (b->ascii)
        return b->skip + (index < b->blen ? index : b->blen);
    const unsigned char *s = b->base;
    while (cur[0] < index && cur[1] < b->blen) {
        cur[1]++;
        while (cur[1] < b->blen && (s[cur[1]] & 0xC0) == 0x80)
            cur[1]++;
        cur[0]++;
    }
    while (cur[0] > index && cur[1] > 0) {
        cur[1]--;
        while (cur[1] > 0 && (s[cur[1]] & 0xC0) == 0x80)
            cur[1]--;
        cur[0]--;
    }
    return b->skip + cur[1];
}

/* Counts N more nodes in the expansion; AT and ALIAS say where to blame. */
static int add_total(builder *b, size_t n, const yaml_mark_t *at, const char *alias)
{
    b->total = sat_add(b->total, n);
    if (b->total <= b->lim.max_nodes)
        return 0;
    if (alias)
        YERR_AT(b, at, "document expands to more than %zu nodes (through aliases)",
                b->lim.max_nodes);
    else
        YERR_AT(b, at, "document has more than %zu nodes", b->lim.max_nodes);
    return -1;
}

/* Returns 1 when TAG makes a plain scalar a string, 0 otherwise; an
 * unsupported tag is reported (not fatal: the node is still usable). */
static int check_tag(builder *b, const yaml_char_t *tag, const yaml_mark_t *at)
{
    static const char core[] = "tag:yaml.org,2002:";
    static const char *const known[] = { "str", "int", "bool", "float", "null", "map", "seq" };
    if (!tag)
        return 0;
    const char *t = (const char *)tag;
    if (strcmp(t, "!") == 0) /* the non-specific tag: "not plain", i.e. a string */
        return 1;
    if (strncmp(t, core, sizeof core - 1) == 0) {
        const char *rest = t + sizeof core - 1;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            if (strcmp(rest, known[i]) == 0)
                return i == 0;
        YERR_AT(b, at, "unsupported YAML tag '!!%.64s'", rest);
    } else if (t[0] == '!') {
        YERR_AT(b, at, "unsupported YAML tag '%.64s'", t);
    } else {
        YERR_AT(b, at, "unsupported YAML tag '!<%.64s>'", t);
    }
    return 0;
}

static dsl_ynode *new_node(builder *b, dsl_ykind kind, const yaml_event_t *ev)
{
    dsl_ynode *n = dsl_yarena_alloc(b->ar, sizeof *n, _Alignof(dsl_ynode));
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->line = mark_num(ev->start_mark.line);
    n->col = mark_num(ev->start_mark.column);
    n->offset = mark_offset(b, b->ci_start, ev->start_mark.index);
    n->end_offset = mark_offset(b, b->ci_end, ev->end_mark.index);
    return n;
}

/* ---- anchors -------------------------------------------------------------- */

/* The slot holding NAME, or the empty slot where it would go. */
static size_t *anchor_slot(builder *b, const char *name)
{
    size_t mask = b->anchor_slots_cap - 1;
    size_t i = (size_t)hash_bytes(name, strlen(name), b->seed) & mask;
    while (b->anchor_slots[i] && strcmp(b->anchors[b->anchor_slots[i] - 1].name, name) != 0)
        i = (i + 1) & mask;
    return &b->anchor_slots[i];
}

static anchor_rec *anchor_find(builder *b, const char *name)
{
    if (!b->anchor_slots_cap)
        return NULL;
    size_t *s = anchor_slot(b, name);
    return *s ? &b->anchors[*s - 1] : NULL;
}

/* Records NAME -> NODE, replacing an earlier anchor of that name (YAML says
 * later anchors win). Returns 1 + the record's index, or 0 when out of memory. */
static size_t anchor_define(builder *b, const char *name, dsl_ynode *node)
{
    if (vec_reserve(&b->anchors, b->nanchors, &b->anchors_cap, sizeof *b->anchors, 16) < 0)
        return 0;
    if ((b->nanchors + 1) * 2 > b->anchor_slots_cap) {
        size_t cap = b->anchor_slots_cap ? b->anchor_slots_cap * 2 : 64;
        size_t *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return 0;
        size_t *old = b->anchor_slots, oldcap = b->anchor_slots_cap;
        b->anchor_slots = slots;
        b->anchor_slots_cap = cap;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i])
                *anchor_slot(b, b->anchors[old[i] - 1].name) = old[i];
        free(old);
    }
    size_t nlen = strlen(name);
    char *copy = dsl_yarena_alloc(b->ar, nlen + 1, 1);
    if (!copy)
        return 0;
    memcpy(copy, name, nlen + 1);
    b->anchors[b->nanchors] = (anchor_rec){ copy, node, 1, 0, 0 };
    *anchor_slot(b, copy) = ++b->nanchors;
    return b->nanchors;
}

/* ---- building ------------------------------------------------------------- */

/* KEY for a message: printable, at most ~60 bytes, cut on a character boundary. */
static void key_text(const dsl_ynode *key, char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)key->u.scalar.str;
    size_t n = key->u.scalar.len, k = 0;
    for (; k < n && k < cap - 4; k++)
        out[k] = s[k] < 0x20 || s[k] == 0x7f ? '?' : (char)s[k];
    if (k < n) {
        while (k > 0 && (s[k] & 0xC0) == 0x80)
            k--;
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

static int keyset_insert(frame *f, dsl_ynode *key, uint64_t seed)
{
    if ((f->keyset_n + 1) * 2 > f->keyset_cap) {
        size_t cap = f->keyset_cap ? f->keyset_cap * 2 : 64;
        dsl_ynode **set = calloc(cap, sizeof *set);
        if (!set)
            return -1;
        for (size_t i = 0; i < f->keyset_cap; i++) {
            dsl_ynode *k = f->keyset[i];
            if (!k)
                continue;
            size_t j = (size_t)hash_bytes(k->u.scalar.str, k->u.scalar.len, seed) & (cap - 1);
            while (set[j])
                j = (j + 1) & (cap - 1);
            set[j] = k;
        }
        free(f->keyset);
        f->keyset = set;
        f->keyset_cap = cap;
    }
    size_t mask = f->keyset_cap - 1;
    size_t j = (size_t)hash_bytes(key->u.scalar.str, key->u.scalar.len, seed) & mask;
    while (f->keyset[j])
        j = (j + 1) & mask;
    f->keyset[j] = key;
    f->keyset_n++;
    return 0;
}

/* Sets *FIRST to an earlier key of F equal to KEY (or NULL) and remembers
 * KEY otherwise. Returns -1 only when out of memory. */
static int key_seen(builder *b, frame *f, dsl_ynode *key, dsl_ynode **first)
{
    size_t nkeys = (b->nkids - f->base) / 2;
    *first = NULL;
    if (f->keyset) {
        size_t mask = f->keyset_cap - 1;
        size_t j = (size_t)hash_bytes(key->u.scalar.str, key->u.scalar.len, b->seed) & mask;
        for (; f->keyset[j]; j = (j + 1) & mask)
            if (same_scalar(f->keyset[j], key)) {
                *first = f->keyset[j];
                return 0;
            }
        return keyset_insert(f, key, b->seed);
    }
    for (size_t i = 0; i < nkeys; i++) {
        dsl_ynode *k = b->kids[f->base + 2 * i];
        if (same_scalar(k, key)) {
            *first = k;
            return 0;
        }
    }
    if (nkeys + 1 > KEYSET_MIN) {
        for (size_t i = 0; i < nkeys; i++)
            if (keyset_insert(f, b->kids[f->base + 2 * i], b->seed) < 0)
                return -1;
        return keyset_insert(f, key, b->seed);
    }
    return 0;
}

static int push_kid(builder *b, dsl_ynode *n)
{
    if (vec_reserve(&b->kids, b->nkids, &b->kids_cap, sizeof *b->kids, 16) < 0)
        return oom(b);
    b->kids[b->nkids++] = n;
    return 0;
}

/* Gives a finished NODE (expanded SIZE, nesting HEIGHT) to the open
 * collection, or makes it the root. LINE:COL is where it was written (for an
 * alias the alias, not the anchored node). Returns -1 on a fatal error. */
static int add_child(builder *b, dsl_ynode *node, size_t size, size_t height,
                     int line, int col)
{
    if (b->depth == 0) {
        b->root = node;
        return 0;
    }
    frame *f = &b->stack[b->depth - 1];
    f->size = sat_add(f->size, size);
    if (height > f->height)
        f->height = height;
    if (f->node->kind == DSL_Y_SEQ)
        return push_kid(b, node);
    if (f->want_value) {
        f->want_value = 0;
        if (f->skip_value) {
            f->skip_value = 0;
            return 0;
        }
        return push_kid(b, node);
    }
    f->want_value = 1;
    if (node->kind != DSL_Y_SCALAR) {
        yerr(b, DSL_SEV_ERROR, line, col, "mapping keys must be plain strings");
        f->skip_value = 1;
        return 0;
    }
    if (node->u.scalar.style == DSL_YS_PLAIN && node->u.scalar.len == 2 &&
        memcmp(node->u.scalar.str, "<<", 2) == 0) {
        yerr(b, DSL_SEV_ERROR, line, col,
             "YAML merge keys ('<<') are not supported: write the keys out");
        f->skip_value = 1; /* dropped, so later stages do not call it unknown */
        return 0;
    }
    dsl_ynode *first;
    if (key_seen(b, f, node, &first) < 0)
        return oom(b);
    if (first) {
        char text[64];
        key_text(node, text, sizeof text);
        yerr(b, DSL_SEV_ERROR, line, col, "duplicate key '%s'", text);
        yerr(b, DSL_SEV_NOTE, first->line, first->col, "first defined here");
        f->skip_value = 1; /* the first definition stays the one in the tree */
        return 0;
    }
    return push_kid(b, node);
}

static int on_scalar(builder *b, const yaml_event_t *ev)
{
    if (add_total(b, 1, &ev->start_mark, NULL) < 0)
        return -1;
    int as_string = check_tag(b, ev->data.scalar.tag, &ev->start_mark);
    dsl_ynode *n = new_node(b, DSL_Y_SCALAR, ev);
    size_t len = ev->data.scalar.length;
    char *s = n && len < SIZE_MAX ? dsl_yarena_alloc(b->ar, len + 1, 1) : NULL;
    if (!s)
        return oom(b);
    memcpy(s, ev->data.scalar.value, len);
    s[len] = '\0';
    n->u.scalar.str = s;
    n->u.scalar.len = len;
    switch (ev->data.scalar.style) {
    case YAML_SINGLE_QUOTED_SCALAR_STYLE: n->u.scalar.style = DSL_YS_SINGLE_QUOTED; break;
    case YAML_DOUBLE_QUOTED_SCALAR_STYLE: n->u.scalar.style = DSL_YS_DOUBLE_QUOTED; break;
    case YAML_LITERAL_SCALAR_STYLE: n->u.scalar.style = DSL_YS_LITERAL; break;
    case YAML_FOLDED_SCALAR_STYLE: n->u.scalar.style = DSL_YS_FOLDED; break;
    default:
        /* `!!str 42` is the string "42": it reads as if quoted. The style
         * only decides typing; dsl_yscalar_pos looks at the source itself. */
        n->u.scalar.style = as_string ? DSL_YS_SINGLE_QUOTED : DSL_YS_PLAIN;
        break;
    }
    if (ev->data.scalar.anchor) {
        size_t a = anchor_define(b, (const char *)ev->data.scalar.anchor, n);
        if (!a)
            return oom(b);
        b->anchors[a - 1].done = 1;
    }
    return add_child(b, n, 1, 0, n->line, n->col);
}

static int on_start(builder *b, const yaml_event_t *ev, dsl_ykind kind)
{
    const yaml_char_t *anchor, *tag;
    if (kind == DSL_Y_MAP) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    } else {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    }
    if (b->depth >= b->lim.max_depth) {
        YERR_AT(b, &ev->start_mark, "nesting deeper than %zu levels", b->lim.max_depth);
        return -1;
    }
    if (add_total(b, 1, &ev->start_mark, NULL) < 0)
        return -1;
    check_tag(b, tag, &ev->start_mark);
    dsl_ynode *n = new_node(b, kind, ev);
    if (!n || vec_reserve(&b->stack, b->depth, &b->stack_cap, sizeof *b->stack, 16) < 0)
        return oom(b);
    frame *f = &b->stack[b->depth++];
    *f = (frame){ .node = n, .base = b->nkids, .size = 1 };
    if (anchor && !(f->anchor = anchor_define(b, (const char *)anchor, n)))
        return oom(b);
    return 0;
}

static int on_end(builder *b, const yaml_event_t *ev)
{
    frame *f = &b->stack[b->depth - 1];
    dsl_ynode *n = f->node;
    size_t k = b->nkids - f->base;
    dsl_ynode **kids = b->kids ? b->kids + f->base : NULL; /* no kids yet: NULL + 0 is UB */
    n->end_offset = mark_offset(b, b->ci_end, ev->end_mark.index);
    free(f->keyset);
    f->keyset = NULL;
    if (n->kind == DSL_Y_SEQ && k > 0) {
        n->u.seq.items = dsl_yarena_alloc(b->ar, k * sizeof *kids, _Alignof(dsl_ynode *));
        if (!n->u.seq.items)
            return oom(b);
        memcpy(n->u.seq.items, kids, k * sizeof *kids);
        n->u.seq.n = k;
    } else if (n->kind == DSL_Y_MAP && k > 0) {
        dsl_ypair *p = dsl_yarena_alloc(b->ar, k / 2 * sizeof *p, _Alignof(dsl_ypair));
        if (!p)
            return oom(b);
        for (size_t i = 0; i < k / 2; i++)
            p[i] = (dsl_ypair){ kids[2 * i], kids[2 * i + 1] };
        n->u.map.pairs = p;
        n->u.map.n = k / 2;
    }
    b->nkids = f->base;
    size_t size = f->size, height = f->height + 1;
    if (f->anchor) {
        anchor_rec *r = &b->anchors[f->anchor - 1];
        r->size = size;
        r->height = height;
        r->done = 1;
    }
    b->depth--;
    return add_child(b, n, size, height, n->line, n->col);
}

static int on_alias(builder *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    anchor_rec *r = anchor_find(b, name);
    if (!r) {
        YERR_AT(b, &ev->start_mark, "unknown alias '*%.64s'", name);
        return -1;
    }
    if (!r->done) {
        YERR_AT(b, &ev->start_mark, "alias '*%.64s' refers to a node that contains it", name);
        return -1;
    }
    /* A walk that follows aliases goes this deep; bound it like real nesting. */
    if (r->height > b->lim.max_depth - b->depth) {
        YERR_AT(b, &ev->start_mark, "nesting deeper than %zu levels (through alias '*%.64s')",
                b->lim.max_depth, name);
        return -1;
    }
    if (add_total(b, r->size, &ev->start_mark, name) < 0)
        return -1;
    return add_child(b, r->node, r->size, r->height, mark_num(ev->start_mark.line),
                     mark_num(ev->start_mark.column));
}

/* Reports a libyaml failure. Reader errors (bad UTF-8, control characters)
 * carry a byte offset instead of a mark. */
static void parser_error(builder *b, const yaml_parser_t *p)
{
    const char *what = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR) {
        oom(b);
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        int line, col;
        size_t off = p->problem_offset;
        /* libyaml names the octet it choked on; the user needs the sequence. */
        size_t bad = strstr(what, "UTF-8") || strstr(what, "invalid Unicode")
                   ? dsl_yutf8_invalid(b->base, b->blen) : b->blen;
        if (bad < b->blen) {
            dsl_ysrc_linecol(b->base, b->blen, bad, &line, &col);
            yerr(b, DSL_SEV_ERROR, line, col,
                 "invalid UTF-8 sequence starting with byte 0x%02X (the file must be UTF-8)",
                 (unsigned)b->base[bad]);
            return;
        }
        dsl_ysrc_linecol(b->base, b->blen, off, &line, &col);
        if (p->problem_value < 0)
            yerr(b, DSL_SEV_ERROR, line, col, "%s", what);
        else if (strstr(what, "octet"))
            yerr(b, DSL_SEV_ERROR, line, col, "%s (byte 0x%02X)", what, (unsigned)p->problem_value);
        else
            yerr(b, DSL_SEV_ERROR, line, col, "%s (U+%04X)", what, (unsigned)p->problem_value);
        return;
    }
    if (p->error == YAML_SCANNER_ERROR && strstr(what, "cannot start any token")) {
        /* A tab where indentation goes: say so instead of libyaml's riddle. */
        size_t cur[2] = { 0, 0 };
        size_t at = mark_offset(b, cur, p->problem_mark.index) - b->skip, j = at;
        while (j > 0 && (b->base[j - 1] == ' ' || b->base[j - 1] == '\t'))
            j--;
        if (at < b->blen && b->base[at] == '\t' &&
            (j == 0 || b->base[j - 1] == '\n' || b->base[j - 1] == '\r')) {
            YERR_AT(b, &p->problem_mark,
                    "tab character in indentation: YAML indents with spaces only");
            return;
        }
    }
    YERR_AT(b, &p->problem_mark, "%s", what);
    if (p->context)
        yerr(b, DSL_SEV_NOTE, mark_num(p->context_mark.line), mark_num(p->context_mark.column),
             "%s", p->context);
}

/* ---- loading -------------------------------------------------------------- */

static void builder_free(builder *b)
{
    for (size_t i = 0; i < b->depth; i++)
        free(b->stack[i].keyset);
    free(b->stack);
    free(b->kids);
    free(b->anchors);
    free(b->anchor_slots);
}

/* Handles one event; sets *DONE at the end of the stream or of the only
 * document. Returns -1 on a fatal error (already reported). */
static int on_event(builder *b, const yaml_event_t *ev, int *done)
{
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        *done = 1;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (b->ndocs++ > 0) {
            /* The first document is complete and still worth checking. */
            YERR_AT(b, &ev->start_mark, "only one YAML document per file is allowed");
            *done = 1;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, ev, DSL_Y_SEQ);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, ev, DSL_Y_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return on_end(b, ev);
    default:
        return 0;
    }
}

dsl_ydoc *dsl_yaml_load(const char *buf, size_t len, const dsl_ylimits *limits,
                        dsl_diags *diags)
{
    builder b = { .diags = diags };
    yaml_parser_t p;
    int have_parser = 0;
    dsl_ydoc *doc = NULL;

    dsl_ylimits_default(&b.lim);
    if (limits) {
        if (limits->max_depth)
            b.lim.max_depth = limits->max_depth;
        if (limits->max_nodes)
            b.lim.max_nodes = limits->max_nodes;
        if (limits->max_input)
            b.lim.max_input = limits->max_input;
    }
    if (!buf) {
        buf = "";
        len = 0;
    }
    if (len > b.lim.max_input) {
        size_t mib = (size_t)1024 * 1024;
        if (b.lim.max_input % mib == 0)
            yerr(&b, DSL_SEV_ERROR, 0, 0, "file is larger than the %zu MiB limit",
                 b.lim.max_input / mib);
        else
            yerr(&b, DSL_SEV_ERROR, 0, 0, "file is larger than the %zu byte limit",
                 b.lim.max_input);
        return NULL;
    }
    doc = dsl_ydoc_new(buf, len);
    if (!doc) {
        oom(&b);
        return NULL;
    }
    b.ar = doc->arena;
    b.seed = (uint64_t)(uintptr_t)doc;

    /* libyaml does not count a BOM in its marks: hide it and add it back to
     * offsets. Forcing UTF-8 keeps marks and bytes comparable. */
    b.base = (const unsigned char *)buf;
    b.blen = len;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
        b.base += 3;
        b.blen -= 3;
        b.skip = 3;
    }
    unsigned char acc = 0;
    for (size_t i = 0; i < b.blen; i++)
        acc |= b.base[i];
    b.ascii = !(acc & 0x80);

    if (!yaml_parser_initialize(&p)) {
        oom(&b);
        goto fail;
    }
    have_parser = 1;
    yaml_parser_set_input_string(&p, b.base, b.blen);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    for (int done = 0; !done;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            parser_error(&b, &p);
            goto fail;
        }
        int r = on_event(&b, &ev, &done);
        yaml_event_delete(&ev);
        if (r < 0)
            goto fail;
    }

    /* An empty document (`---` alone) has an empty plain scalar as its root:
     * that is "no document", not a null workflow. */
    dsl_ynode *root = b.root;
    if (root && root->kind == DSL_Y_SCALAR && root->u.scalar.style == DSL_YS_PLAIN &&
        root->u.scalar.len == 0 && root->offset == root->end_offset)
        root = NULL;
    doc->root = root;
    yaml_parser_delete(&p);
    builder_free(&b);
    return doc;

fail:
    if (have_parser)
        yaml_parser_delete(&p);
    builder_free(&b);
    dsl_ydoc_free(doc);
    return NULL;
}
