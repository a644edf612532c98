/* yaml_tree.h -- YAML text to a positioned tree, the first stage of dsl/.
 *
 * libyaml's event stream becomes a tree of scalars, mappings and sequences,
 * each node knowing the line and column where it starts, so every later stage
 * can point a user at the offending key or value. The loader is iterative
 * (an explicit stack, never recursion) and bounded: nesting depth, total node
 * count after alias expansion, and input size all have limits, and exceeding
 * one is a normal diagnostic, never a crash, hang or unbounded allocation.
 *
 * Aliases (*name) resolve to the anchored node itself: the tree is a DAG that
 * shares the node, and its "expanded size" (what a walk that follows aliases
 * visits) is computed while loading and capped, which defeats "billion laughs".
 * The YAML merge key `<<` is not supported: a plain `<<` key is reported and
 * dropped (a quoted "<<" is an ordinary key).
 *
 * All nodes live in the document's arena and die with dsl_ydoc_free. */
#ifndef LOOM_DSL_YAML_TREE_H
#define LOOM_DSL_YAML_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "dsl/diag.h"

typedef enum {
    DSL_Y_SCALAR,
    DSL_Y_MAP,
    DSL_Y_SEQ
} dsl_ykind;

/* How a scalar was written. Only plain scalars can be null, booleans or
 * numbers; anything quoted or in block style is a string. */
typedef enum {
    DSL_YS_PLAIN,
    DSL_YS_SINGLE_QUOTED,
    DSL_YS_DOUBLE_QUOTED,
    DSL_YS_LITERAL, /* | */
    DSL_YS_FOLDED   /* > */
} dsl_ystyle;

/* The type a scalar's text denotes (YAML 1.2 core schema, as plain scalars). */
typedef enum {
    DSL_YT_NULL,   /* "", ~, null, Null, NULL */
    DSL_YT_BOOL,   /* true/false in the core schema's three spellings */
    DSL_YT_INT,    /* [-+]?[0-9]+, 0x.., 0o.. that fits int64 */
    DSL_YT_FLOAT,  /* decimal/exponent forms, .inf, .nan */
    DSL_YT_STRING
} dsl_ytype;

typedef struct dsl_ynode dsl_ynode;
typedef struct dsl_ypair {
    dsl_ynode *key;   /* always a scalar in Loom files; a non-scalar key is an error */
    dsl_ynode *value;
} dsl_ypair;

struct dsl_ynode {
    dsl_ykind kind;
    int line, col;          /* 1-based start of the node (for an alias: of the anchor's node) */
    size_t offset;          /* byte offset of the node's start in the source */
    size_t end_offset;      /* byte offset just past the node */
    union {
        struct {
            char *str;      /* NUL-terminated; may contain NULs before len */
            size_t len;
            dsl_ystyle style;
        } scalar;
        struct {
            dsl_ypair *pairs;
            size_t n;
        } map;
        struct {
            dsl_ynode **items;
            size_t n;
        } seq;
    } u;
};

typedef struct dsl_ylimits {
    size_t max_depth;       /* default 256: deeper nesting is an error */
    size_t max_nodes;       /* default 2,000,000: nodes after alias expansion */
    size_t max_input;       /* default 64 MiB: larger input is refused */
} dsl_ylimits;

/* Fills L with the defaults above. */
void dsl_ylimits_default(dsl_ylimits *l);

typedef struct dsl_ydoc {
    dsl_ynode *root;        /* NULL for an empty document */
    const char *src;        /* borrowed: the buffer given to dsl_yaml_load */
    size_t src_len;
    void *arena;            /* private */
} dsl_ydoc;

/* Parses BUF (LEN bytes, need not be NUL-terminated; borrowed and must outlive
 * the document) into a new document. Only the first YAML document of a stream
 * is used; a second one is an error. Syntax errors from libyaml, duplicate
 * keys in a mapping (with a note at the first one), non-scalar keys, unknown
 * aliases and exceeded limits are reported into DIAGS.
 *
 * Returns a new document (free with dsl_ydoc_free), or NULL when the text
 * could not be loaded at all (errors are then in DIAGS, or out of memory). A
 * document may be returned with errors recorded in DIAGS (e.g. a duplicate
 * key): callers check DIAGS->nerrors. LIMITS may be NULL for the defaults. */
dsl_ydoc *dsl_yaml_load(const char *buf, size_t len, const dsl_ylimits *limits,
                        dsl_diags *diags);
void dsl_ydoc_free(dsl_ydoc *doc);

/* The type the scalar denotes (see dsl_ytype). Quoted/block scalars are
 * always DSL_YT_STRING. */
dsl_ytype dsl_yscalar_type(const dsl_ynode *n);

/* Converters for scalars; return 0 on success, -1 if N is not of that type. */
int dsl_yscalar_bool(const dsl_ynode *n, int *out);
int dsl_yscalar_int(const dsl_ynode *n, int64_t *out);
int dsl_yscalar_double(const dsl_ynode *n, double *out); /* ints convert too */

/* The value of KEY in mapping MAP, or NULL (also when MAP is not a map). */
dsl_ynode *dsl_ymap_get(const dsl_ynode *map, const char *key);

/* Maps a byte OFFSET inside scalar N's value (its decoded text) to the source
 * line and column where that character was written, for errors inside
 * templates. Exact for plain, quoted and block scalars without escapes or
 * folding; otherwise the closest position it can tell, never outside the
 * scalar. */
void dsl_yscalar_pos(const dsl_ydoc *doc, const dsl_ynode *n, size_t offset,
                     int *line, int *col);

/* "string", "mapping", "sequence", "number", "boolean", "null" for messages. */
const char *dsl_ynode_describe(const dsl_ynode *n);

#endif
