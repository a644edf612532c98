/* engine.h -- runs compiled workflow graphs to their output on the reactor thread.
 *
 * Owns: jobs (one run of one graph over one input) and their tree of
 * activations (one per node run: retries, timeouts, fallbacks, `output:`,
 * `steps.ID`), the per-job in-flight cap on leaf calls, checkpoints and
 * replay of leaf steps, the `cache: true` memo, and the provider instances
 * added to it (their plugin state, and the upstream of an HTTP provider,
 * handed in ready-made).
 * May call: dsl/ (graphs, templates, filters: read only), daemon/core (the
 * reactor's timers, the worker pool), daemon/plugins (the registry of
 * lambdas and providers, the plugin API), daemon/upstream (an HTTP
 * provider's calls), common/.
 * Must never call: the daemon around it -- the config file, the HTTP client
 * (daemon/providers.c builds what needs them), the store, the server, the
 * workflow directory, the jobs module, loomd -- nor block: no I/O of its own,
 * no waiting. Everything it learns from outside comes through this header
 * (options, providers, the workflow lookup, callbacks).
 *
 * Every node run is driven by callbacks on the reactor thread: lambdas
 * complete from the worker pool (or inline when PURE|FAST), provider calls
 * complete through the host API of include/loom/plugin.h, timers fire for
 * timeouts and retry back-off. Job state is touched only on the reactor
 * thread, so there are no locks on it.
 *
 * Threads: every function here is for the reactor thread only.
 *
 * Ownership, in short: the engine borrows the reactor, the pool and the
 * plugin registry (they must outlive it); a job holds a reference to its
 * graph; results handed to callbacks are borrowed for the callback's
 * duration. A job is freed by the engine right after its done callback
 * returns, so the job pointer is valid from engine_submit until then. */
#ifndef LOOM_DAEMON_ENGINE_H
#define LOOM_DAEMON_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/plugins/plugins.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "daemon/trace/trace.h"
#include "daemon/upstream/upstream.h"
#include "dsl/graph.h"

typedef struct engine engine_t;
typedef struct engine_job engine_job_t;

/* Why a job (or a node) failed: the typed error users see. */
typedef struct engine_error {
    dsl_error_class cls;   /* the class (a custom `fail` code maps to DSL_ERR_FAILED) */
    const char *code;      /* the stable code: dsl_error_class_name(cls) or a `fail` node's code */
    const char *message;   /* human text */
    const char *node;      /* path of the node that failed ("do.chain[1]") */
    int attempts;          /* attempts made by that node */
} engine_error;

typedef enum {
    ENGINE_TRACE_START,
    ENGINE_TRACE_FINISH,
    ENGINE_TRACE_RETRY,
    ENGINE_TRACE_ERROR,
    ENGINE_TRACE_PROGRESS,     /* a map's item ended: `done` of `total` */
    ENGINE_TRACE_BATCHED       /* a call submitted its line to a provider's Batch API
                                  (`key` says which step) and waits for it */
} engine_trace_event;

/* One trace event; every pointer is borrowed for the callback's duration. */
typedef struct engine_trace {
    const engine_job_t *job;
    const char *node;      /* node path */
    dsl_kind kind;
    engine_trace_event event;
    uint64_t time_us;      /* reactor clock */
    int attempt;           /* 1-based */
    const char *provider;  /* provider instance for call/embed, else NULL */
    const char *code;      /* ERROR/RETRY: the error code, else NULL */
    bool cached;           /* FINISH (or ERROR from `output:`) of a leaf answered
                              from the engine's cache: no provider or lambda ran */
    size_t done, total;    /* PROGRESS: items of the map ended, and all of them */
    bool replayed;         /* FINISH or ERROR of a leaf answered from the job's
                              replay (a checkpoint of an earlier run): nothing ran */
    const char *key;       /* BATCHED: the step key of the call, else NULL */
} engine_trace;

typedef void (*engine_trace_fn)(void *ud, const engine_trace *t);

/* Called once when a job ends (success, failure or cancel). The job, its
 * output and error are valid only during the call; the engine frees the job
 * when it returns. */
typedef void (*engine_done_fn)(engine_job_t *job, void *ud);

/* `use`: the graph named NAME, or NULL when there is none. Returns a
 * borrowed graph; the engine takes its own reference. */
typedef dsl_graph *(*engine_workflow_lookup_fn)(void *ud, const char *name);

/* Checkpoints: what a daemon stores so that a job cut short by a crash can
 * resume without paying again for the leaf steps (call, embed, lambda) that
 * had finished.
 *
 * Every leaf activation has a STEP KEY: a string that is the same for the
 * same step in two runs of the same workflow version over the same input,
 * and different for different steps of one run. Treat it as opaque (its
 * format is described in engine_replay.c, for people reading a store); it is
 * stable across runs and daemon restarts, but not across versions: it names
 * the workflow's version, so checkpoints of one version never replay into
 * another (nor into another version of a `use`d workflow). The attempts of
 * one leaf share its key; a step re-run because an enclosing node retried
 * gets a new key (it carries the enclosing attempt), so a run reports each
 * key at most once.
 *
 * When a leaf step ends for good (a success, or a failure it will not
 * retry) the job calls engine_checkpoint_fn with its key and a RECORD
 * (borrowed; keep a reference or a copy): a JSON object
 *     {"output": V, "attempts": N, "seq": S}     on success, or
 *     {"error": {code, message, node, attempts}, "attempts": N, "seq": S}
 * where V is what the leaf produced before its `output:` template (after
 * `json: true` parsing; cache hits included), N the attempts it took and S
 * the order of the step's end in the job. Failures are recorded too because
 * a fallback or a partial map may have absorbed them; S lets a replay hand
 * steps to order-sensitive nodes (vote tallies, ties, judges) in the order
 * they first arrived, whatever order the store returns them in.
 *
 * A later run of the same job passes every record it kept as `replay`
 * ({KEY: RECORD}). A leaf whose key is there ends with that record instead
 * of running: no provider call, no lambda, no in-flight or rate-limit slot,
 * no checkpoint again; its trace FINISH (or ERROR) says `replayed`. Recorded
 * steps end in their S order, each as soon as the run reaches it and before
 * any live leaf starts (a vote that had stopped early stops again before
 * sending the samples it had cancelled), so templates, `steps.ID` (attempts
 * included), `output:`, map slots, vote tallies and route choices see what
 * they saw the first time; the nodes above the leaves are simply
 * recomputed. Entries whose key the run never reaches, and values that are
 * not records, are ignored; each entry is used at most once. What replay
 * does not restore: usage (only live calls are counted) and time (timeouts
 * start afresh). */
typedef void (*engine_checkpoint_fn)(void *ud, engine_job_t *job, const char *key,
                                     json_t *record);

/* Plugin code that runs in the daemon's process (a lambda, not isolated;
 * cache hits run none) can crash it, and does so at the same step of the
 * job at every run. A paid step (a provider or MCP call, not a cache hit)
 * checkpointed just before such a lambda would then be paid again at every
 * restart if its checkpoint had not reached the disk when the lambda
 * crashed. So before a lambda runs after a paid step, the engine asks
 * engine_durable_fn whether every checkpoint the job handed over is
 * durable. When it answers false, the lambda waits (holding its in-flight
 * slot) until the host calls engine_job_durable, which the host must do
 * once they are: durable, or known never to be (a write that failed). */
typedef bool (*engine_durable_fn)(void *ud, engine_job_t *job);

typedef struct engine_options {
    size_t max_in_flight;      /* default per-job cap on leaf calls in flight (0: 1024) */
    engine_trace_fn trace;     /* optional, for every job */
    void *trace_ud;
    size_t cache_entries;      /* bound of the `cache: true` memo shared by all jobs,
                                  least recently used evicted first (0: 10,000) */
} engine_options;

typedef struct engine_job_options {
    size_t max_in_flight;      /* 0: the engine's default */
    uint64_t seed;             /* PRNG seed for retry jitter (0: from the clock) */
    engine_trace_fn trace;     /* overrides the engine's when set */
    void *trace_ud;
    engine_checkpoint_fn checkpoint; /* optional: called on the reactor thread as
                                        each leaf step ends for good (above); it may
                                        cancel the job, not free the engine */
    void *checkpoint_ud;
    engine_durable_fn durable; /* optional (below): are the checkpoints durable? */
    void *durable_ud;
    const char *name;          /* optional: how logs name the job (copied) */
    json_t *replay;            /* optional {KEY: RECORD} of an earlier run (borrowed:
                                  the job keeps its own shallow copy, so it may be
                                  dropped after engine_submit); not an object: none */
    /* Traces (engine_span.c): JOB_SPAN is the context of the job's own span
     * (copied; NULL: none). With TRACER (borrowed; it must outlive the job)
     * and JOB_SPAN sampled, every node run gets a span under it and every
     * provider call attempt a span under its node's, and an HTTP provider
     * is sent the call span as its `traceparent`; without, JOB_SPAN itself
     * is sent, so a submitter's trace still reaches the provider. */
    tracer_t *tracer;
    const trace_ctx *job_span;
    const char *tenant;        /* who the job is for (copied); NULL: "default". Its
                                  provider calls wait in their tenant's share of each
                                  provider's queue (ratelimit.h) */
    int64_t tenant_weight;     /* that share's weight; 0: 1 */
    bool has_budget;           /* the submit's `budget: { usd }` (engine_cost.h): */
    double budget_usd;         /* the job's calls stop at it (with the workflow's) */
} engine_job_options;

/* A new engine over R, POOL and PLUGINS (all borrowed, must outlive it).
 * OPT may be NULL. NULL when out of memory. */
engine_t *engine_new(reactor_t *r, pool_t *pool, const plugins_t *plugins,
                     const engine_options *opt);
/* Cancels every live job (their done callbacks run with `cancelled`), frees
 * every provider instance (its upstream first, then its fini) and frees E.
 * NULL is a no-op. Pool work of cancelled lambdas that is still running
 * keeps only its own memory, which the pool's done callback frees; so free
 * the pool after the engine, and whatever the upstreams send through (the
 * HTTP client of daemon/providers.c) after it too. */
void engine_free(engine_t *e);

/* Builds the upstream of a new provider instance NAME of plugin provider
 * DEF, whose init made STATE (all borrowed; the engine frees the upstream
 * before it runs fini on STATE): upstream_new for an HTTP provider,
 * upstream_new_invoke for an invoke one (DEF->invoke set; it wins when a
 * provider has both). Returns an upstream the engine then owns, or NULL with
 * a message in ERR. */
typedef upstream_t *(*engine_upstream_fn)(void *ud, const char *name, const loom_provider *def,
                                          void *state, char *err, size_t errlen);

/* Adds provider instance INSTANCE_NAME using plugin provider PROVIDER_NAME
 * with CONFIG (borrowed; may be NULL = {}): checks the config against the
 * provider's options and runs its init, then calls MAKE_UPSTREAM once with
 * UD before this returns, to build the upstream every call of the instance
 * goes through (limits, batching, 429s; curl or the invoke transport:
 * daemon/providers.c makes them from the config file). MAKE_UPSTREAM may be
 * NULL: an invoke provider then gets an upstream without limits, an HTTP
 * provider (encode and decode, no invoke) is refused. 0, or -1 with a
 * message in ERR (nothing added). */
int engine_add_provider(engine_t *e, const char *instance_name, const char *provider_name,
                        json_t *config, engine_upstream_fn make_upstream, void *ud, char *err,
                        size_t errlen);

/* An invoke provider of an isolated plugin (engine_set_isolate) runs in the
 * plugin's helpers: engine_add_provider then makes its instance there (the
 * provider's init runs in each helper, never here) and calls MAKE_UPSTREAM
 * with STATE the transport's UD, for an upstream_new_transport through
 * engine_iso_transport (the upstream owns that UD from then on). Whether
 * provider plugin PROVIDER_NAME is such a provider: */
bool engine_provider_isolated(const engine_t *e, const char *provider_name);
extern const upstream_transport engine_iso_transport;
/* The code engine_iso_transport ends a send with when the helper died in
 * it: the step fails with plugin_crashed. Not an ABI code: plugins never
 * see it. */
#define ENGINE_E_PLUGIN_CRASHED ((loom_errcode)64)

/* Counters of every provider instance, of every kind, from its upstream:
 * {NAME: {plugin, in_flight, queued, requests, succeeded, failed,
 * rate_limited, batches, input_tokens, output_tokens, latency_ms,
 * concurrency, disabled}}. A new reference. */
json_t *engine_provider_stats(engine_t *e);

/* The upstream of provider instance NAME (borrowed: E owns it until
 * engine_free), or NULL when E has none of that name. For the daemon's
 * batch manager, which sends a provider's batch requests through it. */
upstream_t *engine_provider_upstream(engine_t *e, const char *name);

/* One finished provider call attempt, for metrics and traces: the engine
 * hands it to the call observer on the reactor thread as the upstream
 * answers, before the step sees the answer. Every pointer is borrowed for
 * the observer's duration. Cache hits and replayed steps make no report
 * (nothing was called); a cancelled call makes none either. Members may be
 * added at the end. */
typedef struct engine_call_report {
    const char *provider;      /* the instance ("fast") */
    const char *plugin;        /* its plugin provider ("openai") */
    const char *model;         /* the request's model, or NULL */
    const char *operation;     /* "chat" or "embeddings" */
    const char *workflow;      /* the job's workflow (its root graph's name) */
    const char *tenant;        /* the job's tenant; NULL: "default" */
    bool ok;
    const char *error;         /* !ok: the error class (dsl_error_class_name) */
    double duration_s;         /* the provider's part: its last send to the answer
                                  (a call never sent: all of its time) */
    double wait_s;             /* before its first send: the limiter's queue, 429
                                  pauses and a batch's window */
    double ttft_s;             /* time to first token; -1 unknown */
    int64_t input_tokens, output_tokens;            /* -1 unknown */
    int64_t cache_read_tokens, cache_write_tokens;  /* -1 unknown */
    double cost_usd;           /* -1: unpriced */
    const char *finish_reason; /* or NULL */
    int attempt;               /* 1-based attempt of the step */
    const char *message;       /* !ok: the error's text for people, or NULL */
} engine_call_report;

typedef void (*engine_call_observer_fn)(void *ud, const engine_call_report *r);

/* FN(UD, report) after every provider call attempt of every job (NULL: none,
 * the default). FN must not cancel jobs or free the engine. */
void engine_set_call_observer(engine_t *e, engine_call_observer_fn fn, void *ud);

/* Prices of provider calls (daemon/engine/engine_cost.h; borrowed, must
 * outlive E; NULL: every call unpriced), and the ledger of tenants' budgets
 * and cost counters (borrowed, must outlive E; NULL: no tenant budgets).
 * Before the first job. */
struct engine_prices;
struct engine_ledger;
void engine_set_prices(engine_t *e, const struct engine_prices *p);
void engine_set_ledger(engine_t *e, struct engine_ledger *l);
/* Whether JOB made a priced call, and then *USD, what its calls cost so far. */
bool engine_job_cost(const engine_job_t *job, double *usd);

/* For `use` nodes. */
void engine_set_workflow_lookup(engine_t *e, engine_workflow_lookup_fn fn, void *ud);

/* ---- MCP servers as tools (a call's `tools: [{mcp: SERVER}]`)
 *
 * The engine knows no MCP: loomd hands it these hooks (daemon/mcp/ speaks
 * the protocol, supervises the servers and keeps their tool lists). All run
 * on the reactor thread. */

/* The end of one tool call: RESULT (stolen) is the MCP CallToolResult
 * ({content: [...], structuredContent?, isError?}; a tool's own failure is
 * a result with isError true, not an error), or NULL with CODE (a
 * dsl_error_class name: "timeout", "upstream" for a server that died or
 * answered a JSON-RPC error, "invalid_request" for an unknown server or
 * tool, "cancelled") and MESSAGE (for people; both borrowed for the
 * call). */
typedef void (*engine_mcp_done_fn)(void *done_ud, json_t *result, const char *code,
                                   const char *message);

typedef struct engine_mcp_ops {
    /* The tools server SERVER offers now: a new reference to an array of
     * MCP tool objects ({name, description?, inputSchema, ...}), or NULL
     * with a message in ERR (unknown server, not started yet, its list
     * failed). */
    json_t *(*tools)(void *ud, const char *server, char *err, size_t errlen);
    /* Calls TOOL of SERVER with ARGS (borrowed object), ending within
     * TIMEOUT_MS (0: the server's configured timeout) by DONE(DONE_UD, ...)
     * exactly once, never from inside this call. Returns a handle for
     * cancel, or NULL when it could not start (DONE is then not called;
     * the reason in ERR). */
    void *(*call)(void *ud, const char *server, const char *tool, json_t *args,
                  uint64_t timeout_ms, engine_mcp_done_fn done, void *done_ud, char *err,
                  size_t errlen);
    /* Gives up on call H: DONE is never called for it (the server is told
     * with notifications/cancelled). */
    void (*cancel)(void *ud, void *h);
} engine_mcp_ops;

/* The MCP servers (OPS borrowed and must outlive E, UD passed to each
 * hook; NULL: none, the default, and a tool naming a server fails with
 * invalid_request). Before the first job. */
void engine_set_mcp(engine_t *e, const engine_mcp_ops *ops, void *ud);

/* ---- provider Batch APIs (`mode: batch`)
 *
 * The engine decides which calls go to a batch and what their answers
 * mean; loomd (daemon/batch/) collects the lines of every job per
 * provider, model and completion window, submits them, polls, keeps each
 * line's result on disk, and wakes the job. A call in batch mode submits a
 * line under its step key and parks like a wait (engine_job_waits lists it
 * as {key, node, batch, seq}, with no signal); when its line is DONE, the
 * call decodes the result with upstream_batch_result and ends as if its
 * answer had come directly (the same output checks, usage at the batch
 * price, typed errors and retry policy: a failed line is retried in a
 * later batch, or directly with `fallback_direct`). All hooks run on the
 * reactor thread. */

typedef enum engine_batch_state {
    ENGINE_BATCH_NONE = 0,         /* no line for the step */
    ENGINE_BATCH_PENDING,          /* collecting, or in a batch that has not ended */
    ENGINE_BATCH_DONE              /* its batch ended: RESULT, or CODE */
} engine_batch_state;

typedef struct engine_batch_line {
    engine_batch_state state;
    int attempt;                   /* the attempt the line is (1-based) */
    char batch[64];                /* PENDING, DONE: the batch's name ("" while collecting) */
    /* DONE: the line's result, the JSON object the provider gave (a new
     * reference the caller takes; for upstream_batch_result), or NULL when
     * the line has none (its batch expired, was cancelled or failed) ... */
    json_t *result;
    loom_errcode code;             /* ... and then why: LOOM_E_UPSTREAM, or the
                                    * class of the batch's own failure */
    char message[256];
} engine_batch_line;

typedef struct engine_batch_submit {
    const char *job;               /* the job's id */
    const char *key;               /* the call's step key */
    const char *node;              /* its node path */
    int attempt;                   /* 1-based */
    const char *provider;          /* the provider instance's name */
    upstream_t *up;                /* its upstream (upstream_has_batch_api) */
    const loom_request *req;       /* the call (borrowed for the hook) */
    uint64_t window_ms;            /* the node's batch_window; 0: the provider's */
    uint64_t deadline_ms;          /* the node's deadline; 0: the provider's */
} engine_batch_submit;

typedef struct engine_batch_ops {
    /* The line of JOB's step KEY into OUT (zeroed by the caller). 0, or -1
     * with a message in ERR (the store could not be read). */
    int (*lookup)(void *ud, const char *job, const char *key, engine_batch_line *out,
                  char *err, size_t errlen);
    /* Queues S's line, replacing a DONE line of an earlier attempt of the
     * same step. 0: the line is PENDING from now on (it is on disk before
     * anything of it is sent); -1 with *CODE and ERR: the call fails with
     * them. */
    int (*submit)(void *ud, const engine_batch_submit *s, loom_errcode *code, char *err,
                  size_t errlen);
} engine_batch_ops;

/* The batch manager (OPS borrowed and must outlive E; NULL: none, the
 * default: calls in batch mode run directly). Before the first job. */
void engine_set_batch(engine_t *e, const engine_batch_ops *ops, void *ud);

/* Lines of JOB, which is running (a parked job is woken by the daemon
 * instead), are DONE: its calls parked on batch lines look them up again
 * on a later reactor pass. */
void engine_job_batch_ready(engine_job_t *job);

/* The checkpoints JOB handed over so far are settled (engine_durable_fn):
 * its lambdas waiting for them run on a later reactor pass. NULL, an ended
 * job or one with no waiting lambda: nothing. */
void engine_job_durable(engine_job_t *job);

/* Lambdas of the plugins ISO isolates (borrowed; NULL: none, the default)
 * run in its helper processes instead of the worker pool
 * (engine_isolate.c). Before the first job. */
struct iso;
void engine_set_isolate(engine_t *e, struct iso *iso);

/* Starts a job running G (a reference is taken) over INPUT (borrowed; the job
 * keeps its own reference after defaults are applied). The job starts on a
 * later reactor pass, so DONE never runs from inside engine_submit. Input
 * that does not match G's declared inputs ends the job with `invalid_input`.
 * O may be NULL. NULL when out of memory. */
engine_job_t *engine_submit(engine_t *e, dsl_graph *g, json_t *input,
                            const engine_job_options *o, engine_done_fn done, void *ud);

/* Cancels JOB: every timer, provider call and queued lambda is dropped and
 * the job ends with `cancelled` (its done callback runs from inside this
 * call). A no-op once the job is ending. */
void engine_cancel(engine_job_t *job);

/* The job's output (borrowed), or NULL when it failed, parked or has not ended. */
json_t *engine_job_output(const engine_job_t *job);
/* Waits (`wait_for`). A run that has nothing left to do but wait PARKS: it
 * ends (the done callback runs) with neither output nor error, and this
 * returns what it waits for (borrowed; NULL for a job that did not park):
 * an array of {key, signal, node, timeout_ms, seq, schema?}, one per
 * pending wait_for, where KEY is the wait's step key, SIGNAL the name its
 * template gave, TIMEOUT_MS its timeout (0: none), SCHEMA the document its
 * data must fit, and SEQ the seq its record must carry (above every seq the
 * job has, distinct per wait). The job goes on as a new run of the same job
 * whose replay holds, under a wait's key, a checkpoint record the daemon
 * wrote: {"output": DATA, "attempts": 1, "seq": SEQ} for a signal (DATA is
 * the node's output), or {"error": {code: "timeout", ...}, ...} at its
 * deadline. Every other finished leaf replays, so nothing is run twice. */
json_t *engine_job_waits(const engine_job_t *job);
/* Provider usage of the job so far, {NAME: {calls, input_tokens,
 * output_tokens}} (borrowed), or NULL when it made no provider call. */
json_t *engine_job_usage(const engine_job_t *job);
/* The job's error (borrowed), or NULL when it succeeded or has not ended. */
const engine_error *engine_job_error(const engine_job_t *job);
/* The job's error as {code, message, node, attempts}: a new reference, or NULL. */
json_t *engine_error_json(const engine_error *err);
/* The wait before retrying after attempt ATTEMPT (1-based) under RT: full
 * jitter, uniform in [0, min(initial * multiplier^(ATTEMPT-1), max)] ms,
 * drawn from the xorshift64* state *RNG (a job's is seeded with its seed).
 * A provider's Retry-After replaces it. */
uint64_t engine_backoff_ms(const dsl_retry *rt, int attempt, uint64_t *rng);
/* How many jobs are alive in E. */
size_t engine_job_count(const engine_t *e);

/* Token streams: one piece of a chat call's answer as the provider streams
 * it. Every pointer is borrowed for the callback's duration. */
typedef struct engine_token {
    const char *node;          /* the call's node path */
    const char *key;           /* its step key (items of a map share a path, not
                                  a key); NULL when out of memory */
    int attempt;               /* 1-based, as in the trace's events */
    const char *text;          /* LEN bytes of UTF-8, not NUL-terminated */
    size_t len;
} engine_token;

/* Runs on the reactor thread while a call's answer arrives, inside the HTTP
 * client's callbacks: it must not cancel the job or free the engine. */
typedef void (*engine_token_fn)(void *ud, const engine_token *t);

/* Somebody reads JOB's tokens (FN non-NULL), or nobody any more (NULL).
 * Chat calls that start from now on, on providers that can stream, are
 * asked for as streams and hand FN(UD, ...) their text as it arrives;
 * while nobody reads, calls are not streamed (the same answer, the same
 * usage, either way). Calls already on their way keep what they asked
 * for, but their tokens stop when FN is cleared. */
void engine_job_set_tokens(engine_job_t *job, engine_token_fn fn, void *ud);

#endif
