/* compile.h -- internals shared by the compiler's files (not installed).
 *
 *   compile.c        the workflow's top level: keys, input, vars, defaults
 *   compile_node.c   nodes: common keys and the composite kinds
 *   compile_leaf.c   the leaves: call, embed, lambda
 *   compile_loop.c   loop: a body run again until a condition holds
 *   compile_tools.c  a call's `tools:` (lambdas, workflows, MCP servers) and limits
 *   compile_args.c   a lambda step's args against the lambda's declared arguments
 *   compile_schema.c a `schema:` (in place or in a file) compiled, errors at their YAML
 *   compile_refs.c   template names and `steps.X` visibility, once every id is known
 *   compile_util.c   key tables, messages, typed scalars, durations, the id map
 *   compile_value.c  JSON and template values, retry, filter lists, generation parameters
 *   graph.c          the arena that owns a graph, and enum names */
#ifndef LOOM_DSL_COMPILE_H
#define LOOM_DSL_COMPILE_H

#include "dsl/dsl.h"

/* ---- the arena (graph.c) ---- */
typedef struct dsl_arena dsl_arena;
dsl_arena *dsl_arena_new(void);
void dsl_arena_free(dsl_arena *a);
/* Zeroed memory owned by the arena, or NULL. */
void *dsl_arena_alloc(dsl_arena *a, size_t size);
char *dsl_arena_strndup(dsl_arena *a, const char *s, size_t len);
char *dsl_arena_strdup(dsl_arena *a, const char *s);
/* The arena takes ownership of V / T (steals; freed with the arena, or at once on failure). */
int dsl_arena_own_json(dsl_arena *a, json_t *v);
int dsl_arena_own_template(dsl_arena *a, dsl_template *t);
int dsl_arena_own_schema(dsl_arena *a, dsl_schema *s);

const char *const *dsl_error_class_names(void);
int dsl_type_find(const char *name);
const char *const *dsl_type_names(void);

/* ---- the id map (compile_util.c): open addressing, string -> node ---- */
typedef struct cc_idmap {
    const char **keys;
    void **vals;
    size_t cap, n;
} cc_idmap;
void *cc_idmap_get(const cc_idmap *m, const char *key);
int cc_idmap_put(cc_idmap *m, const char *key, void *val);
void cc_idmap_free(cc_idmap *m);

/* Where a template is evaluated, which decides the names it may use. */
typedef enum {
    CC_SITE_NODE,      /* a node's own fields: evaluated when the node starts */
    CC_SITE_OUTPUT,    /* a node's `output:`: after it finished; sees `output` */
    CC_SITE_VOTE_KEY,  /* a vote's `key`: per sample; sees `output` */
    CC_SITE_UNTIL,     /* a loop's `until`: per iteration; sees `output` and `loop` */
    CC_SITE_VARS       /* the workflow's `vars`: sees `input` only */
} cc_site;

typedef struct cc_tpl_use {
    dsl_template *tpl;
    const dsl_ynode *y;    /* the scalar it came from, for positions */
    dsl_node *node;        /* the node it belongs to (NULL for vars) */
    cc_site site;
} cc_tpl_use;

/* Per node, known while compiling and not kept in the graph. */
typedef struct cc_node_info {
    uint32_t chain_pos;        /* position in its parent chain, or UINT32_MAX */
    const dsl_ynode *id_y;     /* its `id` value, or NULL */
} cc_node_info;

/* Compiler state for one file. */
typedef struct dsl_cc {
    const dsl_options *opt;
    const dsl_ydoc *doc;
    dsl_diags *d;
    dsl_graph *g;
    dsl_arena *a;
    int oom;

    dsl_node **nodes;          /* every node, by index */
    size_t nnodes, capnodes;
    cc_node_info *info;        /* per node index: what only the compiler needs */
    size_t capinfo;

    cc_idmap ids;              /* id -> dsl_node */
    cc_tpl_use *tpls;          /* every template, checked once all ids are known */
    size_t ntpls, captpls;

    const dsl_ynode *defaults_provider_y; /* for messages about defaults.provider */
    const dsl_ynode *inputs_y;
    const dsl_ynode *vars_y;
} dsl_cc;

/* ---- compile_util.c, compile_value.c ---- */

/* Names longer than this are cut in messages: a 1 MB key must not make a
 * 1 MB error line. */
#define CC_NAME_SHOWN 64

void cc_oom(dsl_cc *cc);
/* Reports every key of map Y not in ALLOWED (NULL-terminated) as unknown,
 * with a "did you mean" from ALLOWED. WHAT names the construct ("call"). */
void cc_check_keys(dsl_cc *cc, const dsl_ynode *y, const char *const *allowed, const char *what);
/* 1 if Y is a mapping; else reports "'KEY' must be a mapping, got a X" and returns 0. */
int cc_want_map(dsl_cc *cc, const dsl_ynode *y, const char *key);
int cc_want_seq(dsl_cc *cc, const dsl_ynode *y, const char *key);
/* A string scalar's text (arena copy), or NULL with an error. */
const char *cc_string(dsl_cc *cc, const dsl_ynode *y, const char *key);
int cc_int(dsl_cc *cc, const dsl_ynode *y, const char *key, int64_t min, int64_t max, int64_t *out);
int cc_number(dsl_cc *cc, const dsl_ynode *y, const char *key, double min, double max, double *out);
int cc_bool(dsl_cc *cc, const dsl_ynode *y, const char *key, int *out);
int cc_duration(dsl_cc *cc, const dsl_ynode *y, const char *key, uint64_t *ms);
/* 1 if S is a valid identifier ([A-Za-z_][A-Za-z0-9_-]*, at most 128 bytes). */
int cc_is_ident(const char *s, size_t len);
/* The scalar as JSON (new reference) by its YAML type; NULL for non-scalars. */
json_t *cc_scalar_json(const dsl_ynode *y);
/* Y (any YAML) as plain JSON, templates not allowed. New reference or NULL (error reported). */
json_t *cc_json(dsl_cc *cc, const dsl_ynode *y);
/* Parses a template string value; registers it for reference checks.
 * Returns an arena-owned template or NULL with an error. */
dsl_template *cc_template(dsl_cc *cc, const dsl_ynode *y, const char *key,
                          dsl_node *node, cc_site site);
/* Any YAML value whose strings may be templates. NULL with an error. */
dsl_tvalue *cc_tvalue(dsl_cc *cc, const dsl_ynode *y, dsl_node *node, cc_site site);
/* The retry policy in Y, starting from BASE. 0 or -1. */
int cc_retry(dsl_cc *cc, const dsl_ynode *y, const dsl_retry *base, dsl_retry *out);
/* Looks up a filter name given as a string scalar in a `normalize` list. */
char **cc_filter_list(dsl_cc *cc, const dsl_ynode *y, const char *key, size_t *n);
/* Reports unknown-name errors with an optional suggestion. */
void cc_error_suggest(dsl_cc *cc, int line, int col, const char *name, size_t len,
                      const char *const *cands, size_t ncands, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* 1 if mapping Y has a key that looks like a misspelling of KEY (and so was
 * reported as an unknown key with a suggestion already). */
int cc_misspelt(const dsl_ynode *y, const char *key);
/* The shorthand `KIND: "text"` (call, embed, fail) of scalar V: a string as
 * a template value; any other scalar is an error. */
dsl_tvalue *cc_shorthand(dsl_cc *cc, const dsl_ynode *v, const char *kind, dsl_node *node);
/* A text template (prompt, system, content): a string, else an error. */
dsl_tvalue *cc_text(dsl_cc *cc, const dsl_ynode *y, const char *key, dsl_node *node);
/* Reports "missing required key 'KEY' in WHAT" at Y, unless a misspelling of
 * KEY in Y explains it already. */
void cc_missing(dsl_cc *cc, const dsl_ynode *y, const char *key, const char *what);
/* Reads temperature, top_p, max_tokens, seed and stop from mapping Y into
 * PARAMS (borrowed). 0, or -1 after reporting errors. */
int cc_gen_params(dsl_cc *cc, const dsl_ynode *y, json_t *params);

/* ---- compile_leaf.c: call, embed, lambda (V is the kind key's value, NY the node) ---- */
int cc_build_call(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny);
int cc_build_embed(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny);
int cc_build_lambda(dsl_cc *cc, dsl_node *n, const dsl_ynode *v);
/* Checks lambda name FN (given at Y): PLUGIN.FUNCTION, and known to the
 * registry when it lists lambdas ("did you mean"). 0 or -1 after reporting. */
int cc_check_lambda_name(dsl_cc *cc, const dsl_ynode *y, const char *fn);

/* ---- compile_tools.c ---- */
/* A call's `tools:` and its tool loop's limits, from mapping V (the call's
 * value), into N (a call whose parameters are read already). 0 or -1. */
int cc_build_tools(dsl_cc *cc, dsl_node *n, const dsl_ynode *v);

/* ---- compile_batch.c ---- */
/* The batch keys (mode, batch_window, deadline, fallback_direct) of mapping
 * V, the value of a WHAT ("call", "embed", "map"), into B. 0, or -1 after
 * reporting. */
int cc_build_batch(dsl_cc *cc, const dsl_ynode *v, dsl_batch *b, const char *what);
/* Folds each map's batch keys into the calls and embeds of its body that
 * do not say their own. Once every node is built. */
void cc_batch_inherit(dsl_cc *cc);

/* ---- compile_wait.c ---- */
/* NY is the node's mapping (its common keys are checked against a wait). */
int cc_build_wait(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny);

/* ---- compile_loop.c ---- */
int cc_build_loop(dsl_cc *cc, dsl_node *n, const dsl_ynode *v);

/* ---- compile_schema.c ---- */
/* The JSON Schema in Y, the value of KEY: a mapping written in place, or a
 * string naming a JSON or YAML file relative to the workflow's folder.
 * Compiled (arena-owned, freed with the graph), or NULL after reporting the
 * error at the YAML node the schema's JSON pointer names. */
const dsl_schema *cc_schema(dsl_cc *cc, const dsl_ynode *y, const char *key);

/* ---- compile_args.c ---- */
/* Checks the `args` of a step calling lambda FN against the signature the
 * registry gives for FN (none: nothing is checked). ARGS_Y is the `args`
 * value, or NULL when the step has none; a missing required argument is
 * reported at ARGS_Y, else at AT (the lambda's node). 0, or -1 after
 * reporting every problem. */
int cc_check_lambda_args(dsl_cc *cc, const char *fn, const dsl_ynode *args_y, const dsl_ynode *at);

/* ---- compile_node.c ---- */
/* Builds the node in Y (any YAML; errors if not a node) under PARENT, whose
 * path is extended by SUFFIX. Returns an arena-owned node or NULL. */
dsl_node *cc_node(dsl_cc *cc, const dsl_ynode *y, dsl_node *parent, const char *suffix);
extern const char *const cc_kind_keys[];
/* Checks a workflow name (for `name:` and `use:`); 0 or -1 with an error. */
int cc_workflow_name_ok(dsl_cc *cc, const dsl_ynode *y, const char *s);

/* ---- compile_refs.c ---- */
void cc_check_templates(dsl_cc *cc);

#endif
