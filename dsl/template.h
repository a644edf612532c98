/* template.h -- `{{ path | filter(args) }}` templates: parsed once, evaluated often.
 *
 * A template string is parsed at compile time into parts (literal text and
 * expressions); an expression is a root name, a path of fields and indexes,
 * and a pipeline of filters with literal arguments. Nothing re-parses text at
 * run time. A string that is exactly one expression (no other text, spaces
 * inside the braces allowed) is "whole": it evaluates to the JSON value
 * itself; otherwise the parts are rendered as text and concatenated.
 *
 * Grammar (whitespace allowed between tokens inside the braces):
 *   template := ( text | "{{" expr "}}" )*        text may hold "\{{" for a literal "{{"
 *   expr     := path ( "|" filter )*
 *   path     := IDENT ( "." IDENT | "." INT | "[" INT "]" | "[" STRING "]" )*
 *   filter   := IDENT [ "(" [ literal ( "," literal )* ] ")" ]
 *   literal  := STRING | NUMBER | "true" | "false" | "null"
 *   IDENT    := [A-Za-z_][A-Za-z0-9_-]*     STRING := '...' | "..." (backslash escapes)
 *
 * Roots are names; which roots exist where is the compiler's business
 * (compile.c checks them); the parser only records the name.
 *
 * Ownership: dsl_template_parse returns a new template, freed with
 * dsl_template_free; every string and json_t inside is owned by it. */
#ifndef LOOM_DSL_TEMPLATE_H
#define LOOM_DSL_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

typedef enum {
    DSL_SEG_FIELD, /* .name or ["name"] */
    DSL_SEG_INDEX  /* [3] or .3; negative counts from the end */
} dsl_seg_kind;

typedef struct dsl_path_seg {
    dsl_seg_kind kind;
    char *name;      /* FIELD */
    long index;      /* INDEX */
    size_t offset;   /* byte offset of the segment's name or index (after '.' or '[') */
} dsl_path_seg;

struct dsl_filter_def;

typedef struct dsl_filter_call {
    const struct dsl_filter_def *def; /* resolved at parse time; never NULL */
    json_t *args;    /* array of literal arguments (owned) */
    size_t offset;   /* byte offset of the filter name */
} dsl_filter_call;

/* What a reference to `steps.<id>` resolves to; filled by the compiler. */
struct dsl_node;

typedef struct dsl_expr {
    char *root;              /* "input", "steps", "vars", "prev", an item name, ... */
    size_t root_offset;
    int root_kind;           /* set by the compiler: enum dsl_root in graph.h */
    dsl_path_seg *segs;
    size_t nsegs;
    dsl_filter_call *filters;
    size_t nfilters;
    const struct dsl_node *step; /* for `steps.X...`: the step X (set by the compiler) */
} dsl_expr;

typedef struct dsl_tpl_part {
    char *text;      /* literal text (NULL for an expression part) */
    size_t len;
    dsl_expr *expr;  /* expression part (NULL for text) */
    size_t offset;   /* byte offset of the part in the template string */
} dsl_tpl_part;

typedef struct dsl_template {
    dsl_tpl_part *parts;
    size_t nparts;
    int whole;       /* exactly one expression and no text: yields a JSON value */
    char *source;    /* the original string (owned), for display */
} dsl_template;

/* A parse error: where (byte offset in the string) and what. */
typedef struct dsl_tpl_error {
    size_t offset;
    char msg[256];
    char hint[128];  /* "did you mean 'lower'?" or empty */
} dsl_tpl_error;

/* Parses S (LEN bytes). Returns a new template, or NULL with *ERR filled (or
 * ERR->msg empty when out of memory). A string with no "{{" parses into one
 * text part; callers that want to keep constants as plain JSON test
 * dsl_template_is_literal first. Unknown filters and wrong argument counts
 * are parse errors. */
dsl_template *dsl_template_parse(const char *s, size_t len, dsl_tpl_error *err);
void dsl_template_free(dsl_template *t);

/* 1 if S contains no template syntax (no "{{"), so it is plain text. */
int dsl_template_is_literal(const char *s, size_t len);

/* ---- evaluation ---- */

/* Looks up a root by the expression's root name/kind. Returns a borrowed
 * value, or NULL if the root has no value (an evaluation error). */
typedef json_t *(*dsl_root_lookup_fn)(void *ud, const dsl_expr *e);

typedef struct dsl_eval_error {
    char msg[256];
} dsl_eval_error;

/* Evaluates T. A whole template yields the expression's value; any other
 * yields a JSON string of the rendered parts (strings inserted as they are,
 * other values as compact JSON, null as ""). A missing field or index yields
 * null (so `default(...)` can replace it); a field of a non-object, an index
 * of a non-array, or a filter given the wrong type is an error.
 * Returns a new reference, or NULL with ERR filled. */
json_t *dsl_template_eval(const dsl_template *t, dsl_root_lookup_fn lookup, void *ud,
                          dsl_eval_error *err);

/* Evaluates one expression: root, path, then filters. New reference or NULL. */
json_t *dsl_expr_eval(const dsl_expr *e, dsl_root_lookup_fn lookup, void *ud,
                      dsl_eval_error *err);

/* How values become JSON text in templates: compact, and reals with 15
 * significant digits (DBL_DIG), so 0.85 shows as 0.85 rather than jansson's
 * round-trip 0.84999999999999998 -- this text is read by people and models. */
#define DSL_TEXT_JSON_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15))

/* What one evaluation step may build, so that no template can take the
 * daemon's memory (`x | split('') | join(LONG)` repeated grows exponentially):
 * a filter or a rendering that would pass a limit fails instead. */
#define DSL_MAX_TEXT_BYTES (64u << 20) /* one string */
#define DSL_MAX_ITEMS (1u << 20)       /* one array made by split or lines */

/* A json_dump_callback appending to the sbuf (common/containers.h) DATA;
 * the sbuf's max is what caps the text. */
int dsl_sbuf_dump_cb(const char *s, size_t n, void *data);

/* Renders V as template text would show it: strings raw, null as "", other
 * values as compact JSON (DSL_TEXT_JSON_FLAGS). Returns a new string (caller
 * frees) or NULL. */
char *dsl_value_to_text(const json_t *v);

/* "a string", "an array", "a number", "a boolean", "an object", "null": for
 * error messages. Returns a static string. */
const char *dsl_value_type_name(const json_t *v);

/* Truthiness as gates and the `bool` filter see it: false, null, 0, "", [],
 * {} and strings reading "false", "no", "0" or "off" (after trimming, in any
 * case) are false; everything else is true. V borrowed. */
int dsl_value_truthy(const json_t *v);

/* ---- filters (filters.c) ---- */

typedef json_t *(*dsl_filter_fn)(json_t *in, const json_t *args, dsl_eval_error *err);

typedef struct dsl_filter_def {
    const char *name;
    int min_args, max_args;
    dsl_filter_fn fn;          /* IN borrowed, ARGS borrowed; returns new ref or NULL+err */
    const char *summary;       /* one line for docs and `loomctl` help */
} dsl_filter_def;

/* The filter called NAME (LEN bytes), or NULL. */
const dsl_filter_def *dsl_filter_find(const char *name, size_t len);
/* All filters, NULL-terminated by a def with name == NULL. */
const dsl_filter_def *dsl_filter_all(void);

#endif
