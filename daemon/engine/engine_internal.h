/* engine_internal.h -- the engine's private structures, shared by engine*.c.
 *
 * A job owns a tree of activations (one per node run). Completions never
 * call up into the parent directly: a finished activation is queued on the
 * job's done queue and the job's pump delivers it, so a chain of 100,000
 * inline lambdas runs in a loop instead of 100,000 nested calls. Only entry
 * points from the reactor (timers, pool completions, provider completions,
 * the job's start) run the pump. */
#ifndef LOOM_DAEMON_ENGINE_INTERNAL_H
#define LOOM_DAEMON_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/containers.h"
#include "daemon/engine/engine.h"
#include "daemon/engine/engine_cache.h"

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

enum { BIND_NONE, BIND_ITEM, BIND_ERROR, BIND_CANDIDATES };
enum { ROLE_MAIN, ROLE_FALLBACK, ROLE_ON, ROLE_CASE, ROLE_CHECK, ROLE_FAILNODE,
       ROLE_JUDGE };

struct act {
    const dsl_node *node;
    act_t *parent;
    engine_job_t *job;
    list_link sib;            /* in parent's kids */
    list_link kids;           /* head */
    list_link q;              /* in the job's done queue or leaf wait queue */
    int inq;                   /* 0, Q_DONE or Q_WAIT */
    scope_t *scope;            /* borrowed (the job's or a `use` ancestor's) */
    frame_t *frame;            /* where steps of this node record */
    frame_t *own_frame;        /* created by this activation (owned) */
    scope_t *own_scope;        /* `use`: owned */
    json_t *input;             /* owned */
    json_t *orig_input;        /* owned: a leaf's input before its `input:` override */
    int bind_kind;
    json_t *bind;              /* owned: item, error object or candidates */
    json_t *bind_index;        /* owned: map index */
    const dsl_node *bind_map;
    int role;
    size_t slot;
    int attempt;               /* 1-based */
    bool in_fallback;
    eerr *fb_err;              /* the error the fallback replaces (owned) */
    reactor_timer_t *timeout;
    reactor_timer_t *retry_timer;
    void *call;                /* lcall or pcall in flight */
    int call_kind;             /* which of the two */
    bool holds_slot;           /* counts toward the job's in-flight leaves */
    bool cached;               /* this attempt was answered from the cache */
    bool replayed;             /* this attempt was answered from the job's replay */
    char *key;                 /* owned: the step key of a leaf, made when first needed */
    json_t *rrec;              /* owned: the replay record waiting to be released */
    uint64_t rseq;             /* its order (the record's seq) */
    size_t rheap;              /* its place in the job's replay heap, or RHEAP_NONE */
    /* result waiting for delivery to the parent */
    json_t *res;               /* owned */
    eerr *err;                 /* owned */
    /* per-kind state */
    size_t i, n, running, ndone, nfail;
    int phase;
    json_t *a, *b, *c;         /* owned */
};

enum { Q_NONE, Q_DONE, Q_WAIT };
#define RHEAP_NONE ((size_t)-1)

struct engine_job {
    engine_t *eng;
    list_link link;           /* in the engine's jobs */
    scope_t scope;
    act_t *root;
    list_link doneq, waitq;
    size_t inflight, max_in_flight;
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
    eerr *error;               /* owned */
    /* checkpoints and replay (engine_replay.c) */
    engine_checkpoint_fn checkpoint;
    void *checkpoint_ud;
    json_t *replay;            /* owned shallow copy {KEY: RECORD}; used entries removed */
    act_t **rheap;             /* started leaves whose record waits, min-heap on rseq */
    size_t nrheap, caprheap;
    uint64_t next_seq;         /* the seq of the next checkpoint */
    uint64_t rstarts;          /* tie-break of records without a seq: start order */
};

typedef struct pinst pinst_t;

/* The host side of a loom_ctx: collects the error a plugin reports. */
typedef struct hctx {
    loom_ctx base;             /* first: plugins see only this */
    int magic;
    loom_errcode code;
    bool failed;
    bool has_ra;
    uint64_t ra_ms;
    char msg[512];
} hctx;

/* A host context ready for one plugin call (init, encode...). */
void hctx_init(hctx *h);

struct pinst {
    pinst_t *next;
    char *name;
    const plugins_provider *prov;
    void *state;
    upstream_t *up;            /* HTTP providers: owned, freed before fini */
    uint64_t succeeded, failed; /* calls ended, as the engine saw them */
};


/* The provider instance called NAME, or NULL. */
pinst_t *pinst_find(engine_t *e, const char *name);

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
};

/* ---- errors (engine.c) */
/* A new error for NODE (borrowed) with ATTEMPTS; code NULL = the class name. */
eerr *eerr_new(dsl_error_class cls, const char *code, const char *node, int attempts,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
eerr *eerr_dup(const eerr *e);
void eerr_free(eerr *e);

/* ---- activations (engine.c) */
/* A new child of PARENT (NULL for a job's root) running NODE over INPUT
 * (a new reference is taken). NULL when out of memory. */
act_t *act_new(engine_job_t *job, act_t *parent, const dsl_node *node, json_t *input, int role,
               size_t slot);
/* Starts A's first attempt (timers, trace). */
void act_start(act_t *a);
/* Ends the current attempt of A with RES (stolen) or ERR (stolen). */
void act_attempt_done(act_t *a, json_t *res, eerr *err);
/* Cancels everything under A (kids, timers, calls) without delivering. */
void act_cancel_kids(act_t *a);
/* Frees A and its subtree. */
void act_free(act_t *a);
/* Per-job pseudo-random numbers (xorshift64*). */
uint64_t job_rand(engine_job_t *job);
void job_trace(engine_job_t *job, const act_t *a, engine_trace_event ev, const char *code);
/* A map's progress: DONE of its TOTAL items have ended. */
void job_trace_progress(engine_job_t *job, const act_t *a, size_t done, size_t total);
/* Runs the job's queued completions until idle; may end (and free) the job.
 * Returns false when the job is gone. */
bool job_pump(engine_job_t *job);
/* Leaves: ask for an in-flight slot; the kind's call starts now or later. */
void leaf_request(act_t *a);
void leaf_release(act_t *a);

/* ---- per kind (engine_nodes.c) */
/* Starts an attempt of A's kind. Finishes through act_attempt_done. */
void nodes_start(act_t *a);
/* A kid of A (started with ROLE and SLOT, already freed) finished with RES
 * (stolen) or ERR (stolen). */
void nodes_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err);
/* Drops per-kind state between attempts. */
void nodes_reset(act_t *a);

/* ---- evaluation (engine_eval.c) */
/* Evaluates V for A, with OUTPUT (borrowed, may be NULL) as the `output`
 * root. New reference or NULL with MSG filled. */
json_t *eval_tvalue(act_t *a, const dsl_tvalue *v, json_t *output, char *msg, size_t msglen);
json_t *eval_template(act_t *a, const dsl_template *t, json_t *output, char *msg, size_t msglen);
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

/* ---- leaf calls (engine_call.c) */
/* Starts the call of leaf A (it holds a slot); finishes via act_attempt_done. */
void call_start(act_t *a);
/* Applies leaf A's `input:` override (each attempt, over what A received).
 * NULL, or the error that ends the attempt (new). */
eerr *call_apply_input(act_t *a);
/* Cancels A's call in flight, if any. */
void call_cancel(act_t *a);
void call_free_providers(engine_t *e);

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
