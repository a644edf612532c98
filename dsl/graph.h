/* graph.h -- the compiled workflow: an immutable, refcounted execution graph.
 *
 * dsl_compile turns a workflow file into a dsl_graph: one struct per node
 * kind, templates already parsed into ASTs, `steps.X` references resolved to
 * the node they name, durations in milliseconds, defaults applied. The engine
 * runs a graph without ever looking at YAML again, and a running job keeps the
 * version it started with by holding a reference (dsl_graph_ref) while a
 * reload swaps a new version in.
 *
 * Immutability: after dsl_compile returns, nothing in a graph changes except
 * its reference count (atomic), so any thread may read it without locks.
 *
 * Ownership: every pointer inside a graph is owned by the graph (its arena),
 * and lives until the last dsl_graph_unref. */
#ifndef LOOM_DSL_GRAPH_H
#define LOOM_DSL_GRAPH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsl/schema.h"
#include "dsl/template.h"

#define DSL_VERSION 1 /* the `loom:` value this compiler accepts */

typedef enum {
    DSL_CALL,
    DSL_EMBED,
    DSL_LAMBDA,
    DSL_CHAIN,
    DSL_PARALLEL,
    DSL_ROUTE,
    DSL_VOTE,
    DSL_MAP,
    DSL_GATE,
    DSL_USE,
    DSL_FAIL,
    DSL_LOOP,
    DSL_WAIT,                    /* `wait_for`: parks the job until a signal or its deadline */
    DSL_KIND_COUNT
} dsl_kind;

/* The names templates can start with (dsl_expr.root_kind). */
enum dsl_root {
    DSL_ROOT_UNKNOWN = 0,
    DSL_ROOT_INPUT,      /* the job's input */
    DSL_ROOT_VARS,       /* the workflow's vars */
    DSL_ROOT_STEPS,      /* steps.<id>.output / .error / .attempts */
    DSL_ROOT_PREV,       /* the value this node receives (previous step's output, map item, ...) */
    DSL_ROOT_ITEM,       /* the enclosing map's item (named by its `as`) */
    DSL_ROOT_INDEX,      /* the enclosing map's item position, 0-based (named by `index_as`) */
    DSL_ROOT_ERROR,      /* inside a fallback: the error that triggered it */
    DSL_ROOT_CANDIDATES, /* inside a vote judge: the distinct answers */
    DSL_ROOT_OUTPUT,     /* inside `output:`: the node's own raw result */
    DSL_ROOT_LOOP        /* inside a loop's do and until: {iteration, previous} */
};

/* Error classes, shared with the engine; a retry's `on` is a mask of these. */
typedef enum {
    DSL_ERR_TIMEOUT = 0,
    DSL_ERR_RATE_LIMITED,
    DSL_ERR_UPSTREAM,        /* transient provider/transport failure */
    DSL_ERR_INVALID_OUTPUT,  /* an answer that is not what was asked (e.g. bad JSON) */
    DSL_ERR_LAMBDA_FAILED,
    DSL_ERR_QUOTA,           /* quota exhausted: never retried by default */
    DSL_ERR_INVALID_REQUEST, /* 4xx other than 429: never retried by default */
    DSL_ERR_GATE,            /* a gate that did not hold */
    DSL_ERR_NO_ROUTE,        /* a route with no matching case and no default */
    DSL_ERR_FAILED,          /* a `fail` node, or a child's failure in `fail` mode */
    DSL_ERR_CANCELLED,
    DSL_ERR_PLUGIN_CRASHED,  /* an isolated plugin's helper died in the call */
    DSL_ERR_BUDGET_EXCEEDED, /* a call would pass a budget: never sent, never retried by default */
    DSL_ERR_LOOP_EXHAUSTED,  /* a loop ran max_iterations without its `until` holding */
    DSL_ERR_TLS,             /* the server's certificate or the TLS handshake was refused:
                              * never retried by default (only a fix of the CA or URL helps) */
    DSL_ERR_CLASS_COUNT
} dsl_error_class;

/* The stable code of CLASS ("timeout", "rate_limited", ...). */
const char *dsl_error_class_name(dsl_error_class c);
/* The class named NAME, or -1. */
int dsl_error_class_find(const char *name);

typedef struct dsl_retry {
    int max_attempts;        /* total attempts including the first; 1 = no retry */
    uint64_t initial_delay_ms;
    double multiplier;
    uint64_t max_delay_ms;
    uint32_t on;             /* bit (1u << dsl_error_class) per class retried */
} dsl_retry;

/* A JSON value some of whose strings are templates (call params, lambda args,
 * `output:`). A subtree without templates is folded into one constant. */
typedef enum {
    DSL_TV_CONST,
    DSL_TV_TEMPLATE,
    DSL_TV_ARRAY,
    DSL_TV_OBJECT
} dsl_tvalue_kind;

typedef struct dsl_tvalue {
    dsl_tvalue_kind kind;
    json_t *constant;            /* CONST (owned reference) */
    dsl_template *tpl;           /* TEMPLATE */
    size_t n;                    /* ARRAY/OBJECT */
    char **keys;                 /* OBJECT */
    struct dsl_tvalue **items;   /* ARRAY/OBJECT */
    int line, col;
} dsl_tvalue;

typedef struct dsl_node dsl_node;

typedef struct dsl_message {
    char *role;                  /* system | user | assistant */
    dsl_tvalue *content;
} dsl_message;

/* One item of a call's `tools:` (docs/dsl.md, "Tools"). */
typedef enum { DSL_TOOL_LAMBDA, DSL_TOOL_USE, DSL_TOOL_MCP } dsl_tool_kind;

typedef struct dsl_tool {
    dsl_tool_kind kind;
    const char *target;          /* LAMBDA "plugin.fn", USE the workflow, MCP the server */
    const char *name;            /* what the model calls it, or NULL: LAMBDA "plugin_fn",
                                    USE the workflow's name, MCP each tool's own */
    const char *description;     /* or NULL: the lambda's summary, the workflow's
                                    description, the MCP tool's */
    dsl_node *node;              /* the step one call of the tool runs: a lambda, a
                                    `use`, or (MCP) a lambda node with no fn of its own */
    int line, col;
} dsl_tool;

typedef enum { DSL_TOOL_ERROR_REPORT, DSL_TOOL_ERROR_FAIL } dsl_tool_error;

#define DSL_MAX_TOOL_ROUNDS_DEFAULT 20
#define DSL_MAX_TOOL_CONCURRENCY_DEFAULT 4

/* `mode:` of a call, an embed or a map (docs/dsl.md, "Batch mode"). */
typedef enum {
    DSL_MODE_UNSET = 0,          /* nothing said here or on an enclosing map: direct,
                                    unless the provider batches maps of this size
                                    (its batch_api.maps_over) */
    DSL_MODE_DIRECT,
    DSL_MODE_BATCH               /* through the provider's Batch API, when it has one */
} dsl_call_mode;

/* The batch keys of a call, an embed or a map. A leaf's hold what it says,
 * else what the nearest enclosing map of its graph says, key by key. */
typedef struct dsl_batch {
    dsl_call_mode mode;
    uint64_t window_ms;          /* `batch_window`: collect this long; 0: the provider's */
    uint64_t deadline_ms;        /* `deadline`: the completion window; 0: the provider's */
    bool has_fallback_direct;    /* `fallback_direct` given (else the provider's) ... */
    bool fallback_direct;        /* ... and its value: failed lines retry directly */
} dsl_batch;

typedef struct dsl_call {
    const char *provider;        /* resolved: node's, else defaults.provider, else "default" */
    const char *model;           /* NULL: the provider's default */
    dsl_tvalue *system;          /* may be NULL */
    dsl_tvalue *prompt;          /* exactly one of prompt and messages */
    dsl_message *messages;
    size_t nmessages;
    json_t *params;              /* object: temperature, max_tokens, top_p, stop, seed (owned) */
    bool json;                   /* parse the answer as JSON (invalid -> invalid_output) */
    bool prompt_cache;           /* mark the prompt's head cacheable (the call's key,
                                    else the workflow's) */
    dsl_tvalue *input;           /* override of the node's input, or NULL */
    /* `tools:` (none: ntools 0). With tools the call is an agent: model turns
     * (each run as TURN, a call node without tools, id, output or fallback)
     * and the tool calls they ask for, until an answer calls none. */
    dsl_tool *tools;
    size_t ntools;
    int max_tool_rounds;         /* tool calls allowed in all */
    int max_tool_concurrency;    /* tool calls of one turn running at once */
    int64_t max_tokens_total;    /* input + output tokens of every turn; 0: no bound */
    dsl_tool_error on_tool_error;
    dsl_node *turn;              /* with tools */
    const dsl_schema *schema;    /* `schema:`: the answer is JSON that must fit it, or NULL */
    dsl_batch batch;             /* mode, batch_window, deadline, fallback_direct */
} dsl_call;

typedef struct dsl_embed {
    const char *provider;
    const char *model;
    dsl_tvalue *input;           /* string or array of strings; NULL: the node's input */
    dsl_batch batch;
} dsl_embed;

typedef struct dsl_lambda {
    const char *fn;              /* "plugin.name" */
    dsl_tvalue *args;            /* may be NULL (= {}) */
    dsl_tvalue *input;           /* override of the node's input, or NULL */
} dsl_lambda;

typedef struct dsl_chain {
    dsl_node **steps;
    size_t n;
} dsl_chain;

typedef enum { DSL_ON_ERROR_FAIL, DSL_ON_ERROR_PARTIAL, DSL_ON_ERROR_TOLERATE } dsl_on_error;

typedef struct dsl_parallel {
    char **names;                /* branch names, in file order */
    dsl_node **branches;
    size_t n;
    dsl_on_error on_error;       /* FAIL or PARTIAL */
} dsl_parallel;

typedef struct dsl_route {
    dsl_template *on_tpl;        /* exactly one of on_tpl and on_node */
    dsl_node *on_node;
    char **labels;               /* case labels, in file order */
    dsl_node **cases;
    size_t n;
    dsl_node *default_case;      /* may be NULL */
    char **normalize;            /* applied to the label value before matching */
    size_t nnormalize;
} dsl_route;

typedef enum {
    DSL_VOTE_MAJORITY,           /* more than half of n */
    DSL_VOTE_UNANIMOUS,
    DSL_VOTE_AT_LEAST,           /* at_least K */
    DSL_VOTE_PLURALITY,          /* most votes after all samples; ties -> first seen */
    DSL_VOTE_JUDGE               /* a node picks among the distinct answers */
} dsl_vote_strategy;

typedef struct dsl_vote {
    int n;
    dsl_vote_strategy strategy;
    int at_least;                /* AT_LEAST */
    dsl_node *judge;             /* JUDGE */
    char **normalize;            /* filter names applied to each answer before tallying */
    size_t nnormalize;
    dsl_template *key;           /* optional: what to vote on in each sample (default: the output) */
    dsl_node *body;
} dsl_vote;

typedef struct dsl_map {
    dsl_template *over;
    const char *as;              /* item name, default "item" */
    const char *index_as;        /* index name, default NULL (no index root) */
    int max_concurrency;
    dsl_on_error on_error;
    double tolerate;             /* TOLERATE: the fraction (0..1) of items allowed to fail */
    dsl_node *body;
    dsl_batch batch;             /* for the calls and embeds of its body that say none */
} dsl_map;

typedef struct dsl_gate {
    dsl_template *check_tpl;     /* exactly one of check_tpl and check_node */
    dsl_node *check_node;
    dsl_tvalue *fail_message;    /* when the check does not hold: fail with this message... */
    dsl_node *fail_node;         /* ...or run this node instead */
} dsl_gate;

typedef struct dsl_use {
    const char *workflow;        /* resolved at run time by name */
    dsl_tvalue *input;           /* NULL: the node's input */
} dsl_use;

typedef struct dsl_fail {
    dsl_tvalue *message;
    const char *code;            /* default "failed" */
} dsl_fail;

typedef enum { DSL_EXHAUSTED_FAIL, DSL_EXHAUSTED_LAST } dsl_on_exhausted;

typedef struct dsl_loop {
    dsl_node *body;              /* runs once per iteration over the loop's input */
    dsl_template *until_tpl;     /* at most one of until_tpl and until_node; */
    dsl_node *until_node;        /* neither: exactly max_iterations iterations */
    int max_iterations;          /* 1..DSL_LOOP_MAX_ITERATIONS */
    bool collect;                /* output every iteration's result, not the last */
    dsl_on_exhausted on_exhausted;
} dsl_loop;

#define DSL_LOOP_MAX_ITERATIONS 10000

/* `wait_for`: the job waits, holding nothing but its record, until the
 * signal SIGNAL names is sent to it (its data is the node's output) or
 * TIMEOUT_MS passes (a `timeout` error). */
typedef struct dsl_wait {
    dsl_template *signal;        /* the signal's name: a template (per map item...) */
    uint64_t timeout_ms;         /* 0: none */
    json_t *schema;              /* the JSON Schema document the data must fit (the
                                    compiled schema's, which the graph owns), or NULL */
} dsl_wait;

struct dsl_node {
    dsl_kind kind;
    uint32_t index;              /* dense 0..graph->nnodes-1, in file (pre-)order */
    const char *id;              /* the user's id, or NULL */
    const char *path;            /* where it is: "do.chain[1].map.do", for messages and traces */
    int line, col;               /* of the node's mapping */
    const dsl_node *parent;      /* NULL for the root */
    uint32_t map_depth;          /* number of enclosing map bodies */
    const char *description;     /* may be NULL */

    uint64_t timeout_ms;         /* 0: none */
    const dsl_retry *retry;      /* never NULL for leaves: defaults applied; NULL otherwise unless set */
    dsl_node *fallback;          /* may be NULL */
    bool cache;
    dsl_tvalue *output;          /* may be NULL: reshapes the node's result */

    union {
        dsl_call call;
        dsl_embed embed;
        dsl_lambda lambda;
        dsl_chain chain;
        dsl_parallel parallel;
        dsl_route route;
        dsl_vote vote;
        dsl_map map;
        dsl_gate gate;
        dsl_use use;
        dsl_fail fail;
        dsl_loop loop;
        dsl_wait wait;
    } u;
};

typedef enum {
    DSL_TYPE_ANY,
    DSL_TYPE_STRING,
    DSL_TYPE_NUMBER,
    DSL_TYPE_INTEGER,
    DSL_TYPE_BOOLEAN,
    DSL_TYPE_OBJECT,
    DSL_TYPE_ARRAY
} dsl_type;

/* "any", "string", ... */
const char *dsl_type_name(dsl_type t);

typedef struct dsl_input_field {
    const char *name;
    dsl_type type;
    bool required;
    json_t *default_value;       /* may be NULL (owned) */
    const char *description;
} dsl_input_field;

typedef struct dsl_defaults {
    const char *provider;
    const char *model;
    uint64_t timeout_ms;
    dsl_retry retry;
    int max_concurrency;         /* default for map.max_concurrency */
    json_t *params;              /* default generation params (owned object) */
} dsl_defaults;

typedef struct dsl_graph {
    int refcount;                /* atomic: use dsl_graph_ref/unref */
    const char *file;
    const char *name;
    const char *description;
    char version[17];            /* 16 hex digits: a hash of the source text */
    char *source;                /* that source text (NUL-terminated), kept so a job's
                                    record can hold the version it runs */
    size_t source_len;
    uint64_t timeout_ms;         /* whole-job timeout, 0 = none */
    bool has_budget;             /* `budget: { usd: N }`: each job of the workflow */
    double budget_usd;           /* spends at most this on provider calls */
    bool prompt_cache;           /* `prompt_cache: true`: calls mark their prompt cacheable */
    dsl_input_field *inputs;     /* declared input fields; NULL/0 = input not declared */
    size_t ninputs;
    bool inputs_declared;
    dsl_tvalue *vars;            /* object of templates over input; may be NULL */
    dsl_defaults defaults;
    dsl_node *root;
    dsl_node **nodes;            /* every node by index */
    size_t nnodes;
    const char **uses;           /* distinct workflows named by `use` nodes */
    const dsl_node **use_nodes;  /* the first `use` node for each (for messages) */
    size_t nuses;
    void *arena;                 /* private */
} dsl_graph;

/* A new reference to G (returns G). */
dsl_graph *dsl_graph_ref(dsl_graph *g);
/* Drops a reference; frees G with the last one. NULL is allowed. */
void dsl_graph_unref(dsl_graph *g);

/* "call", "chain", ... */
const char *dsl_kind_name(dsl_kind k);

/* The children of N in execution-relevant order (chain steps, branches, cases
 * then default, vote body then judge, map body, gate check/fail nodes, loop
 * body then until node, route
 * `on` node), not including N's fallback. Writes up to MAX pointers to OUT and
 * returns how many there are in all. */
size_t dsl_node_children(const dsl_node *n, const dsl_node **out, size_t max);

#endif
