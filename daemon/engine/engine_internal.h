/* engine_internal.h -- the engine's private structures, shared by engine*.c.
 *
 * A job owns a tree of activations, one per node run. The life of one
 * activation always goes the same way, and each step has one home:
 *
 *   act_new          (engine.c)  a kid of its parent, or the job's root
 *   act_start        (engine.c)  trace START, arm the node's timeout, then
 *     ops->start     (the kind)  start kids, ask for a slot, or end at once
 *   ops->run         (leaves)    the job granted an in-flight slot: call
 *   ops->child_done  (the kind)  a kid's outcome, delivered by the pump
 *   act_attempt_done (engine.c)  the attempt ended: `output:`, then retry
 *                                (ops->cancel, ops->reset, a timer, start
 *                                again), fallback (a ROLE_FALLBACK kid whose
 *                                outcome is A's) or finish
 *   act_finish       (engine.c)  `steps.ID` recorded, trace, queued on the
 *                                job's done queue for the parent
 *   act_free         (engine.c)  kids, ops->cancel, ops->reset, ops->fini
 *
 * Control only goes down: the generic lifecycle calls a kind through its
 * act_ops (kind_ops, engine.c), and a kind reports back only through
 * act_attempt_done (or by failing with act_fail). Completions never call up
 * into the parent directly: a finished activation is queued and the job's
 * pump (job_pump) delivers it, so a chain of 100,000 inline lambdas runs in
 * a loop instead of 100,000 nested calls. Only entry points from the reactor
 * (timers, pool completions, provider completions, the job's start) run the
 * pump. The pump also grants leaves their in-flight slots and releases
 * replayed leaves (engine_replay.c) in their recorded order.
 *
 * Files: engine.c (activations, the pump, slots, retry, timeouts),
 * engine_job.c (jobs and the engine object), engine_error.c, one file per
 * kind or family (engine_flow.c: chain, route, gate, fail; engine_parallel.c;
 * engine_map.c; engine_vote.c; engine_loop.c; engine_use.c; engine_leaf.c: call, embed,
 * lambda, with engine_lambda.c and engine_call.c doing the calls),
 * engine_eval.c (template roots, frames, scopes), engine_replay.c (step
 * keys, checkpoints, replay), engine_providers.c, engine_cache.c. */
#ifndef LOOM_DAEMON_ENGINE_INTERNAL_H
#define LOOM_DAEMON_ENGINE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/containers.h"
#include "daemon/engine/engine.h"
#include "daemon/engine/engine_cache.h"
#include "daemon/engine/engine_cost.h"

typedef struct act act_t;

/* The internal error: the public part plus what retry needs. */
typedef struct eerr {
    engine_error pub;
    bool has_retry_after;
    uint64_t retry_after_ms;
} eerr;

/* Step results visible as `steps.ID`: the top frame of a scope is indexed by
 * node index; a map item or vote sample gets a small child frame. */
typedef struct frame {
    struct frame *parent;
    json_t **slots;            /* top frame: nslots wrappers {ID: record} */
    size_t nslots;
    const dsl_node **enodes;   /* child frame: parallel arrays */
    json_t **erecs;
    size_t n, cap;
} frame_t;

/* What templates see as input and vars: one per graph run (the job's, and
 * each `use`). */
typedef struct scope {
    dsl_graph *g;              /* reference */
    json_t *input;             /* owned */
    json_t *vars;              /* owned object */
    frame_t top;
} scope_t;

/* Names a parent binds for a kid's templates (item, error, candidates). */
enum { BIND_NONE, BIND_ITEM, BIND_ERROR, BIND_CANDIDATES };
/* Why a parent started a kid: child_done tells its kids apart by it. */
enum { ROLE_MAIN, ROLE_FALLBACK, ROLE_ON, ROLE_CASE, ROLE_CHECK, ROLE_FAILNODE,
       ROLE_JUDGE, ROLE_UNTIL, ROLE_TURN, ROLE_TOOL };

/* ---- per-kind state of an activation: the member of act.k named after
 * the node's kind. Zero when an attempt starts; what it holds is owned by
 * the activation and dropped by the kind's reset (or fini). Route, gate and
 * fail keep nothing: what they decide is done at once. */

struct act_chain {
    size_t step;               /* the step running; each gets the one before's output */
};

struct act_parallel {
    json_t *out;               /* {BRANCH: result or null} in file order, filled as
                                  branches end */
    size_t ndone;              /* branches ended */
};

struct act_map {
    json_t *items;             /* the array mapped over */
    json_t *out;               /* results by item index, null until the item ends */
    size_t n;                  /* items */
    size_t next;               /* the next item to start */
    size_t running;            /* items started and not yet ended */
    size_t ndone, nfail;       /* items ended; of them, failed (partial, tolerate) */
    bool unbounded;            /* its calls go to a batch: every item starts at once
                                  (engine_batch.c), max_concurrency aside */
};

struct act_vote {
    json_t *tally;             /* {TEXT: count}, in the order answers first came */
    json_t *first;             /* {TEXT: the first answer with that text} */
    size_t ndone;              /* samples counted */
};

struct act_loop {
    int iteration;             /* the iteration running (or just ended), from 1 */
    json_t *vars;              /* what `loop` names: {iteration, previous} */
    json_t *last;              /* the output of the latest iteration that ended */
    json_t *all;               /* collect: every iteration's output, in order */
};

/* A call with tools (engine_agent.c): its conversation, tools and the
 * current turn's calls, private to that file. */
struct agent;
struct act_agent {
    struct agent *ag;          /* made by the first attempt; NULL after a reset */
};

struct act_use {
    scope_t *scope;            /* the used workflow's input, vars and steps; set even
                                  half built, so reset frees it */
};

/* Leaves (call, embed, lambda). Unlike the others, some of it lasts across
 * attempts (the key, the input before `input:`), so leaves reset nothing and
 * free it in fini. */
struct act_leaf {
    void *call;                /* lcall or pcall in flight, owned by its file */
    int call_kind;             /* which of the two: LEAF_LAMBDA or LEAF_PROVIDER */
    json_t *orig_input;        /* the input before the `input:` override */
    char *key;                 /* the step key, made when first needed */
    json_t *rrec;              /* the replay record waiting to be released */
    uint64_t rseq;             /* its order (the record's seq) */
    size_t rheap;              /* 1 + its place in the job's replay heap; 0: not there */
    char *signal;              /* wait_for (engine_wait.c, which shares this struct):
                                  the signal's name, once evaluated */
    char *batch;               /* a call parked on its batch line (engine_batch.c):
                                  the batch's name ("" while collecting); NULL: not */
};

enum { LEAF_NONE, LEAF_LAMBDA, LEAF_PROVIDER, LEAF_ISOLATED, LEAF_MCP };

/* What a kind does at each step of the lifecycle (above). Only start is
 * required. */
typedef struct act_ops {
    /* Begins an attempt of A; ends it (now or later) through act_attempt_done. */
    void (*start)(act_t *a);
    /* Leaves: the job granted A an in-flight slot; make the call. */
    void (*run)(act_t *a);
    /* A kid (started with ROLE and SLOT, already freed) ended with RES or ERR
     * (both stolen). NULL: the kid's outcome is A's. */
    void (*child_done)(act_t *a, int role, size_t slot, json_t *res, eerr *err);
    /* Drops what the attempt has in flight besides kids (a leaf's call). */
    void (*cancel)(act_t *a);
    /* Drops the attempt's state: before a retry, and when A is freed. */
    void (*reset)(act_t *a);
    /* Drops what lasts across attempts, when A is freed. */
    void (*fini)(act_t *a);
    /* A's outcome is final: RAW (borrowed; before `output:`) or ERR, not a
     * cancel. Leaves record a checkpoint. */
    void (*settled)(act_t *a, json_t *raw, const eerr *err);
    /* Arms its own timeout (a leaf: once it holds a slot, so waiting for one
     * does not count); otherwise act_start arms it over the whole node. */
    bool own_timeout;
    /* Its node's retry applies to its parts, never to it (an agent's turns:
     * a failed turn is retried alone, not the conversation before it). */
    bool own_retry;
} act_ops;

extern const act_ops engine_chain_ops, engine_route_ops, engine_gate_ops, engine_fail_ops,
    engine_parallel_ops, engine_map_ops, engine_vote_ops, engine_loop_ops, engine_use_ops,
    engine_leaf_ops, engine_wait_ops, engine_agent_ops;

struct act {
    const dsl_node *node;
    const act_ops *ops;        /* node->kind's */
    act_t *parent;
    engine_job_t *job;
    list_link sib;             /* in parent's kids */
    list_link kids;            /* head */
    list_link q;               /* in the job's done queue or leaf wait queue */
    int inq;                   /* Q_NONE, Q_DONE or Q_WAIT */
    scope_t *scope;            /* borrowed (the job's or a `use` ancestor's) */
    frame_t *frame;            /* where steps of this node record */
    frame_t *own_frame;        /* created for this activation by its parent (owned) */
    json_t *input;             /* owned */
    int bind_kind;
    json_t *bind;              /* owned: item, error object or candidates */
    json_t *bind_index;        /* owned: map index */
    const dsl_node *bind_map;
    int role;
    size_t slot;
    int attempt;               /* 1-based */
    eerr *fb_err;              /* the error the fallback replaces (owned) */
    reactor_timer_t *timeout;
    reactor_timer_t *retry_timer;
    bool holds_slot;           /* counts toward the job's in-flight leaves */
    /* holds a slot that does not count against max_in_flight: its work
     * waits in a provider's coalescer (job_slot_exempt) */
    bool slot_exempt;
    bool cached;               /* this attempt was answered from the cache */
    bool replayed;             /* this attempt was answered from the job's replay */
    bool timing_out;           /* its timeout fired: the work cancelled now timed out */
    bool span_open;            /* a node span started and not yet handed over */
    uint8_t span_id[TRACE_SPAN_ID_SIZE];
    uint64_t span_start_ns;    /* unix ns */
    /* result waiting for delivery to the parent */
    json_t *res;               /* owned */
    eerr *err;                 /* owned */
    union {
        struct act_chain chain;
        struct act_parallel parallel;
        struct act_map map;
        struct act_vote vote;
        struct act_loop loop;
        struct act_use use;
        struct act_leaf leaf;
        struct act_agent agent;
    } k;                       /* per kind, by node->kind (above) */
};

/* Q_PARK: a pending wait_for, in parkq; Q_DURABLE: a lambda waiting for the
 * job's checkpoints to be durable, in durableq (engine_lambda.c) */
enum { Q_NONE, Q_DONE, Q_WAIT, Q_PARK, Q_DURABLE };

/* The scope A made for the workflow it runs (a `use`), or NULL. */
static inline scope_t *act_own_scope(const act_t *a)
{
    return a->node->kind == DSL_USE ? a->k.use.scope : NULL;
}

struct engine_job {
    engine_t *eng;
    char name[40];             /* engine_job_options.name, cut; "" when none */
    char *tenant;              /* owned: engine_job_options.tenant; NULL: "default" */
    int64_t tenant_weight;     /* its share of each provider's queue (>= 1) */
    tracer_t *tracer;          /* borrowed: where spans go, or NULL (engine_span.c) */
    trace_ctx span_ctx;        /* the job span's context, when has_trace */
    bool has_trace, recording; /* recording: a tracer and a sampled trace */
    list_link link;            /* in the engine's jobs */
    scope_t scope;
    act_t *root;
    list_link doneq, waitq;
    size_t inflight, max_in_flight;
    size_t exempt;             /* of INFLIGHT, the leaves job_slot_exempt set aside */
    uint64_t rng;
    engine_trace_fn trace;
    void *trace_ud;
    engine_done_fn done;
    void *ud;
    reactor_timer_t *start_timer, *job_timer;
    int busy;                  /* inside the job's callbacks or pump */
    bool cancel_req, ending, ended;
    json_t *output;            /* owned */
    json_t *usage;             /* owned: {provider: {calls, input_tokens, output_tokens}} */
    engine_token_fn token;     /* who reads its tokens (engine_tokens.c), or NULL */
    void *token_ud;
    /* cost and budgets (engine_call.c, engine_cost.h) */
    double budget_usd;         /* the job's cap: its submit's or workflow's, the
                                  tighter; < 0: none */
    double spent_usd;          /* the settled cost of its priced calls */
    double reserved_usd;       /* held by its calls in flight */
    bool has_cost;             /* at least one priced call settled */
    eerr *error;               /* owned */
    /* checkpoints and replay (engine_replay.c) */
    engine_checkpoint_fn checkpoint;
    void *checkpoint_ud;
    engine_durable_fn durable;
    void *durable_ud;
    bool paid_unsettled;       /* a paid step was checkpointed since the host last
                                  said the checkpoints were durable */
    list_link durableq;        /* lambdas waiting for that (engine_lambda.c) */
    reactor_timer_t *durable_timer; /* engine_job_durable's pass, or NULL */
    json_t *replay;            /* owned shallow copy {KEY: RECORD}; used entries removed */
    act_t **rheap;             /* started leaves whose record waits, min-heap on rseq */
    size_t nrheap, caprheap;
    uint64_t next_seq;         /* the seq of the next checkpoint */
    uint64_t rstarts;          /* tie-break of records without a seq: start order */
    /* waits (engine_wait.c) */
    list_link parkq;           /* wait_for activations waiting for their signal */
    size_t nretry;             /* retry timers armed: work still to come */
    json_t *waits;             /* owned: what the job parked on, once it parked */
    /* batch lines (engine_batch.c) */
    reactor_timer_t *batch_timer; /* engine_job_batch_ready's pass, or NULL */
    json_t *batch_direct;      /* owned {NODE: true}: nodes whose batch mode ran
                                  directly and said so once, or NULL */
};

typedef struct pinst pinst_t;

/* The host side of a loom_ctx: collects the error a plugin reports, and
 * knows where its log lines go and the call's deadline and cancel flag.
 * Only ever a loom_ctx: a loom_call is the upstream's (an invoke
 * provider's transport), with a table of its own, so neither is mistaken
 * for the other. */
typedef struct hctx {
    loom_ctx base;             /* plugins see only this */
    const plugins_t *plugins;  /* where loom_log goes (borrowed; may be NULL) */
    const char *plugin;        /* the plugin's name: its lines' prefix (borrowed) */
    uint64_t deadline_ms;      /* CLOCK_MONOTONIC ms, 0 = none */
    const atomic_bool *cancelled; /* set by the reactor when the host gives up; NULL = never */
    loom_errcode code;
    bool failed;
    bool has_ra;
    uint64_t ra_ms;
    char msg[512];
} hctx;

struct pinst {
    pinst_t *next;
    char *name;
    const plugins_provider *prov;
    const plugins_t *plugins;  /* the engine's: where the instance's loom_log goes */
    void *state;
    upstream_t *up;            /* owned, freed before fini: every call goes through it */
    bool isolated;             /* its instance lives in helpers: no init or fini here */
};

struct engine {
    reactor_t *r;
    pool_t *pool;
    const plugins_t *plugins;
    engine_options opt;
    list_link jobs;
    size_t njobs;
    pinst_t *providers;        /* singly linked */
    engine_workflow_lookup_fn wf_lookup;
    void *wf_ud;
    engine_cache *cache;       /* owned: results of `cache: true` leaves */
    struct iso *iso;           /* borrowed: isolated plugins, or NULL */
    engine_call_observer_fn call_obs; /* engine_set_call_observer, or NULL */
    void *call_obs_ud;
    const engine_prices *prices; /* borrowed (engine_set_prices), or NULL: none */
    engine_ledger *ledger;     /* borrowed (engine_set_ledger), or NULL: no tenant budgets */
    const engine_mcp_ops *mcp; /* borrowed (engine_set_mcp), or NULL: no MCP servers */
    void *mcp_ud;
    const engine_batch_ops *batch; /* borrowed (engine_set_batch), or NULL: calls in
                                      batch mode run directly */
    void *batch_ud;
};

/* ---- errors (engine_error.c) */
/* A new error for NODE (borrowed) with ATTEMPTS; code NULL = the class name. */
eerr *eerr_new(dsl_error_class cls, const char *code, const char *node, int attempts,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void eerr_free(eerr *e);
/* The fallback of last resort when memory runs out while failing; A may
 * be NULL. */
eerr *eerr_oom(const act_t *a);
/* {"error": {code, message}}: a failed slot of a partial parallel or map.
 * A new reference, or NULL. */
json_t *eerr_slot_json(const eerr *err);

/* ---- activations (engine.c) */
/* A new child of PARENT (NULL for a job's root) running NODE over INPUT
 * (a new reference is taken). NULL when out of memory. */
act_t *act_new(engine_job_t *job, act_t *parent, const dsl_node *node, json_t *input, int role,
               size_t slot);
/* Starts A's first attempt (timers, trace). */
void act_start(act_t *a);
/* A new kid of A running NODE over INPUT (borrowed), not yet started.
 * NULL after failing A (out of memory). */
act_t *act_spawn(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot);
/* act_spawn, then act_start. False when A failed instead. */
bool act_spawn_start(act_t *a, const dsl_node *node, json_t *input, int role, size_t slot);
/* Ends the current attempt of A with RES (stolen) or ERR (stolen). */
void act_attempt_done(act_t *a, json_t *res, eerr *err);
/* act_attempt_done with a new error of A's node. */
void act_fail(act_t *a, dsl_error_class cls, const char *code, const char *msg);
void act_fail_oom(act_t *a);
/* Cancels everything under A (kids, timers, calls) without delivering. */
void act_cancel_kids(act_t *a);
/* Frees A and its subtree. */
void act_free(act_t *a);
/* Leaves: arm the node's timeout (see act_ops.own_timeout). */
void act_arm_timeout(act_t *a);
/* The job's trace of A's event EV (CODE: the error's, or NULL). */
void job_trace(engine_job_t *job, const act_t *a, engine_trace_event ev, const char *code);
/* A map's progress: DONE of its TOTAL items have ended. */
void job_trace_progress(engine_job_t *job, const act_t *a, size_t done, size_t total);
/* Runs the job's queued completions until idle; may end (and free) the job.
 * Returns false when the job is gone. */
bool job_pump(engine_job_t *job);
/* Leaves: ask for an in-flight slot; ops->run runs now or from the pump. */
void job_slot_request(act_t *a);
/* Gives A's slot back, if it holds one. */
void job_slot_release(act_t *a);
/* A's call went to a provider that coalesces it with others into one
 * request (embeddings): it keeps its slot, so the job still counts it as
 * in flight (it cannot park), but no longer against max_in_flight -- a
 * cap of 1,024 leaves must not cut a map of 5,000 embeddings into batches
 * of 1,024 inputs when the provider takes 2,048 per request. */
void job_slot_exempt(act_t *a);

/* ---- jobs (engine_job.c) */
/* Ends JOB now with RES or ERR (stolen), dropping whatever still runs. */
void job_end(engine_job_t *job, json_t *res, eerr *err);
/* Runs the done callback and frees the job. */
void job_finalize(engine_job_t *job);

/* ---- evaluation (engine_eval.c) */
/* Evaluates V for A, with OUTPUT (borrowed, may be NULL) as the `output`
 * root. New reference or NULL with MSG filled. */
json_t *eval_tvalue(act_t *a, const dsl_tvalue *v, json_t *output, char *msg, size_t msglen);
json_t *eval_template(act_t *a, const dsl_template *t, json_t *output, char *msg, size_t msglen);
/* eval_template for a loop's `until` at the loop A itself: LOOP (borrowed)
 * is what the `loop` root names there. */
json_t *eval_template_loop(act_t *a, const dsl_template *t, json_t *output, json_t *loop,
                           char *msg, size_t msglen);
/* Records A's outcome as `steps.ID` in A's frame (only for nodes with an id). */
int eval_record_step(act_t *a, json_t *out, const eerr *err);
frame_t *frame_new(frame_t *parent);
void frame_free(frame_t *f);
/* Scope setup: applies input defaults and checks types; evaluates vars. */
int scope_init(scope_t *s, dsl_graph *g, json_t *input, char *msg, size_t msglen,
               dsl_error_class *cls);
void scope_fini(scope_t *s);
/* Applies the filters named in NAMES to V (stolen). New reference or NULL. */
json_t *eval_filters(json_t *v, char *const *names, size_t n, char *msg, size_t msglen);

/* ---- leaves (engine_leaf.c), their calls (engine_lambda.c, engine_call.c) */
/* Applies leaf A's `input:` override (each attempt, over what A received).
 * NULL, or the error that ends the attempt (new). */
eerr *leaf_apply_input(act_t *a);
/* The cache key of A's rendered REQUEST (borrowed) when A's node caches,
 * else NULL (also when out of memory: the call then just runs uncached).
 * The caller frees it. */
char *leaf_cache_key(const act_t *a, const char *name, const char *model, json_t *request);
/* Ends A's attempt with the result cached under KEY (may be NULL), if there
 * is one: inline, like a PURE|FAST lambda. */
bool leaf_cache_hit(act_t *a, const char *key);
/* Remembers RES (borrowed) under KEY (may be NULL). */
void leaf_cache_store(const act_t *a, const char *key, json_t *res);
/* Start leaf A's call (it holds a slot); they end via act_attempt_done. */
/* engine_output.c: 0 when V (borrowed, may be NULL) may enter a job: valid
 * UTF-8, finite reals, bounded depth and size; else -1 with what is wrong and
 * its JSON path in MSG. */
int output_check(const json_t *v, char *msg, size_t msglen);
/* Replaces each byte of S (a C string) that is not part of well-formed UTF-8
 * with '?': plugins' messages and messages cut at a buffer's end. */
void output_text_fix(char *s);

void lambda_start(act_t *a);
void provider_start(act_t *a);
/* engine_isolate.c: when LAM's plugin is isolated, starts the call in a
 * helper, stealing ARGS and KEY, and returns true; false touches nothing. */
bool isolated_start(act_t *a, const plugins_lambda *lam, json_t *args, char *key);
void isolated_cancel(act_t *a);
/* The transport UD of instance NAME of PP (an invoke provider of an isolated
 * plugin) with its checked CFG (borrowed): the instance is made in the
 * plugin's helpers. NULL with a message in ERR. */
void *isolated_transport_new(engine_t *e, const plugins_provider *pp, const char *name,
                             json_t *cfg, char *err, size_t errlen);
/* Drop A's call in flight (A->k.leaf.call is then NULL). */
void lambda_cancel(act_t *a);
void provider_cancel(act_t *a);
/* engine_tokens.c: INFO's token reader for leaf A's provider call, when
 * someone reads A's job's tokens. */
void tokens_call_info(act_t *a, upstream_call_info *info);
/* A host context ready for one call into plugin PLUGIN (its normalised
 * descriptor, borrowed: for the name its log lines carry) of registry
 * PLUGINS (borrowed). No deadline, never cancelled: callers set those. */
void hctx_init(hctx *h, const plugins_t *plugins, const loom_plugin *plugin);
/* CLOCK_MONOTONIC milliseconds. */
uint64_t hctx_now_ms(void);
/* The error a plugin reported in H for leaf A (DFLT when it gave no text). */
eerr *hctx_error(const act_t *a, const hctx *h, dsl_error_class cls, const char *dflt);

/* engine_call.c: renders call C's messages (system first, then `messages`
 * or the prompt) for A into OUT (an array). -1 with why in MSG. */
int call_messages(act_t *a, const dsl_call *c, json_t *out, char *msg, size_t len);

/* ---- calls with tools (engine_agent.c, engine_mcp_tool.c) */
/* The request of model turn TURN (a kid of its agent): the conversation
 * so far and the tool definitions (borrowed from the agent). -1 with MSG. */
int agent_turn_request(act_t *turn, loom_request *req, char *msg, size_t len);
/* A turn's result as recorded: {content, tool_calls?, usage} from the
 * answer OUTPUT (a string) and TOOL_CALLS (both borrowed). New, or NULL. */
json_t *agent_turn_result(json_t *output, json_t *tool_calls, const loom_usage *u);
/* The `args` of lambda tool call K (a kid of its agent): the model's
 * arguments but `input`. New, or NULL. */
json_t *agent_tool_args(const act_t *k);
/* Whether K is an MCP tool call, and then its server, tool and arguments
 * (all borrowed from the agent). */
bool agent_tool_mcp(const act_t *k, const char **server, const char **tool, json_t **args);
/* The conversation of agent A (new), or NULL when A is none or has none. */
json_t *agent_transcript(const act_t *a);
/* The JSON Schema of a lambda's arguments (with `input`): new, or NULL. A
 * workflow's is dsl_input_schema's (dsl/input_schema.h). */
json_t *agent_lambda_schema(const loom_lambda *def);
/* An MCP tool call of leaf A; its cancel. */
void mcp_tool_start(act_t *a);
void mcp_tool_cancel(act_t *a);

/* ---- provider instances (engine_providers.c) */
/* The provider instance called NAME, or NULL. */
pinst_t *pinst_find(engine_t *e, const char *name);
void pinst_free_all(engine_t *e);

/* ---- traces (engine_span.c) */
/* A's node span starts (act_start) and ends with its outcome: ERR, or NULL
 * for success (act_finish); act_free ends one still open as cancelled. */
void span_act_begin(act_t *a);
void span_act_end(act_t *a, const eerr *err);
void span_act_cancel(act_t *a);
/* A call span for leaf A's call of instance INST (a new span, or NULL when
 * the job records none), and the traceparent to send with it into TP (""
 * for none). MODEL may be NULL. */
trace_span *span_call_begin(act_t *a, const pinst_t *inst, const char *model,
                            char tp[TRACE_PARENT_LEN + 1]);
/* Ends *S (set to NULL) with report R, or as cancelled when R is NULL. */
struct engine_call_report;
void span_call_end(engine_job_t *job, trace_span **s, const struct engine_call_report *r);

/* ---- provider Batch APIs (engine_batch.c) */
typedef enum {
    BATCH_DIRECT,              /* call the provider directly */
    BATCH_HANDLED,             /* the leaf parked on its line, or its attempt ended */
    BATCH_SUBMIT,              /* a new line is wanted: batch_submit, once the
                                  budgets allow the call */
    BATCH_ANSWER               /* the line's answer is in RES: end as a direct
                                  answer would (output, tool_calls the caller's) */
} batch_route_t;
/* How leaf A's call REQ (of instance PI) goes: see batch_route_t. */
batch_route_t batch_route(act_t *a, pinst_t *pi, const loom_request *req,
                          upstream_result *res);
/* Queues REQ as A's line and parks A on it, or ends A's attempt. */
void batch_submit(act_t *a, pinst_t *pi, const loom_request *req);
/* Whether map A, with its items known, submits every item at once (calls
 * of its body go to a batch): max_concurrency does not hold them back. */
bool batch_map_unbounded(act_t *a);
/* {key, node, batch, seq} of A, parked on its line. New, or NULL. */
json_t *batch_wait_json(act_t *a, uint64_t seq);
/* JOB is freed: its pass and bookkeeping go. */
void batch_job_fini(engine_job_t *job);
/* engine_lambda.c: cancels engine_job_durable's pass. */
void lambda_job_fini(engine_job_t *job);
/* engine_job.c: a job's "look again on a later reactor pass" (the host said
 * something changed): arms *SLOT to run FN with JOB unless it is armed
 * already or the job is ending; job_pass_cancel disarms it (at the job's
 * end). */
void job_pass_arm(engine_job_t *job, reactor_timer_t **slot, reactor_timer_cb fn);
void job_pass_cancel(engine_job_t *job, reactor_timer_t **slot);

/* ---- waits (engine_wait.c) */
/* Whether JOB has only pending waits left (nothing running, queued or
 * about to retry): then job_park ends its run as parked. */
bool job_parkable(const engine_job_t *job);
void job_park(engine_job_t *job);

/* ---- checkpoints and replay (engine_replay.c) */
/* Sets up JOB's checkpoint callback and its copy of O's replay. -1 when out
 * of memory. */
int replay_job_init(engine_job_t *job, const engine_job_options *o);
void replay_job_fini(engine_job_t *job);
/* Leaf A is starting: when its key has a record, A is queued to end with it
 * (replay_release) and true is returned; false: run it. */
bool replay_take(act_t *a);
/* Whether a replayed leaf waits to be released. */
bool replay_pending(const engine_job_t *job);
/* Ends the waiting replayed leaf with the lowest seq with its record. */
void replay_release(engine_job_t *job);
/* Drops A from the replay queue (A is being freed). */
void replay_forget(act_t *a);
/* Leaf A ended for good: with RAW (borrowed; before `output:`) or ERR. */
void checkpoint_leaf(act_t *a, json_t *raw, const eerr *err);
/* The step key of leaf A (borrowed: A owns it), or NULL when out of memory. */
const char *step_key(act_t *a);

#endif
