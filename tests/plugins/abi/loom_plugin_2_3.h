/* loom/plugin.h -- the plugin ABI of Loom: the only header a plugin includes.
 *
 * A plugin is a shared object exporting one function, LOOM_PLUGIN_ENTRY,
 * that returns a statically initialised descriptor: its ABI version and the
 * sizes of the structs it was built with (first, so they can be checked
 * before anything else is read), its name, and arrays of lambda and provider
 * descriptors. Start every descriptor with LOOM_PLUGIN_HEADER:
 *
 *   static const loom_plugin p = { LOOM_PLUGIN_HEADER, .name = "x", ... };
 *
 * Versioning. The host refuses a plugin whose major version differs from its
 * own, whose minor version is newer, or whose struct sizes are smaller than
 * its minor defines (so never smaller than 2.0's), with a message naming
 * the file; the rest of the plugin directory still loads. A plugin built
 * against an older minor loads in a newer host: the host walks the
 * plugin's arrays with the plugin's own sizes (never its own sizeof) and
 * copies every descriptor into structs of its own, where a field the
 * plugin's minor does not define reads as zero (NULL). So a field added by minor N is optional by construction: the host
 * treats 0/NULL as "not given". The host API table (loom_host_api) only
 * grows at its end, and a plugin is never newer than its host, so every
 * function of the plugin's minor is there to call.
 *
 * Ownership, in one rule (jansson's words): every json_t a plugin RECEIVES is
 * borrowed and must not be kept past the call without json_incref; every
 * json_t a plugin RETURNS is a new reference that the host steals. Strings in
 * descriptors are static. Errors never go to stderr or exit(): a plugin calls
 * loom_error(ctx, LOOM_E_..., "fmt", ...) and returns NULL or -1.
 *
 * Threads: lambdas run on the worker pool (several at once, so they must be
 * reentrant); a lambda flagged LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST runs on
 * the reactor thread and must then never block: the host times it and logs
 * one that takes over a millisecond. Providers' encode and decode are pure
 * functions (no I/O), so any thread may call them; an invoke provider runs
 * on the reactor thread. loom_log may be called from every context (init,
 * reload, calls, provider instances, worker threads; loom_call_log where
 * an invoke provider holds a call but no ctx): each line goes to loomd's
 * log at the level given, prefixed by the plugin's name.
 *
 * Lifecycle (the plugin's, then each provider instance's):
 *   init(ctx, config, &state)     once, at load, before any call: load
 *                                 tables, compile regexes, open models there,
 *                                 never per call.
 *   reload(ctx, state, config)    (2.1, optional) on SIGHUP, with the new
 *                                 configuration, on the reactor thread while
 *                                 lambdas of the plugin may be running on
 *                                 workers: swap what changes atomically or
 *                                 under the plugin's own lock. Without a
 *                                 reload hook nothing changes for the plugin.
 *                                 -1 (after loom_error) keeps the old state.
 *   fini(state)                   once, when loomd unloads plugins, after
 *                                 the last call (reverse load order).
 * A provider instance is made by the provider's init with its instance's
 * configuration and ended by its fini. Instances belong to one generation
 * of the daemon's configuration: a SIGHUP makes new instances from the new
 * configuration (init) and ends the old ones once their last job is over
 * (fini), so an instance never needs a reload; what should outlive a
 * reload (a loaded model) belongs in the plugin's state.
 *
 * ABI changelog (bump the minor for additions at the end of a struct or of
 * the host API, the major for anything else):
 *   1.0  first version: lambdas, providers (encode/decode, or invoke for
 *        transports that are not HTTP), plugin init/fini.
 *   2.0  descriptors carry the sizes they were built with
 *        (LOOM_PLUGIN_HEADER); host API: fail_after (an invoke provider's
 *        failure with a Retry-After), deadline_ms and cancelled (a call's
 *        deadline, and whether the host gave up on it); loom_log works from
 *        every context with its level.
 *   2.1  loom_lambda.doc and .example, loom_provider.doc (the longer text
 *        and an example for the generated reference); loom_plugin.reload
 *        and loom_plugin.options (the plugin's configuration map);
 *        host API call_vlog (loom_call_log: an invoke provider logs from a
 *        timer callback, where it has a call but no ctx).
 *   2.2  loom_request.stream and loom_provider.stream: streamed answers
 *        (server-sent events, framed by the host, decoded one event at a
 *        time by the plugin). loom_usage.cache_read_tokens and
 *        .cache_write_tokens (prompt-cache counts; read from complete only
 *        for plugins of 2.2 or newer), loom_request.prompt_cache.
 *        loom_result.finish_reason and loom_stream_delta.finish_reason
 *        (why the answer ended, as the provider says it: traces and
 *        metrics report it).
 *   2.3  tool calling and structured outputs: loom_request.tools and
 *        .schema / .schema_name, tool turns in loom_request.messages
 *        (below), loom_result.tool_calls; host API complete_tools (an
 *        invoke provider's answer with tool calls).
 */
#ifndef LOOM_PLUGIN_H
#define LOOM_PLUGIN_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_ABI_MAJOR 2
#define LOOM_ABI_MINOR 3

/* The symbol the loader looks up in every shared object. */
#define LOOM_PLUGIN_ENTRY loom_plugin_entry
#define LOOM_PLUGIN_ENTRY_NAME "loom_plugin_entry"

/* Error codes: the stable codes users see ("timeout", "rate_limited", ...). */
typedef enum loom_errcode {
    LOOM_OK = 0,
    LOOM_E_TIMEOUT,          /* "timeout" */
    LOOM_E_RATE_LIMITED,     /* "rate_limited": wait and retry (retry_after_ms if known) */
    LOOM_E_UPSTREAM,         /* "upstream": transient; retried */
    LOOM_E_INVALID_OUTPUT,   /* "invalid_output": an answer that is not what was asked */
    LOOM_E_LAMBDA_FAILED,    /* "lambda_failed" */
    LOOM_E_QUOTA,            /* "quota": never retried; disables the provider until reload */
    LOOM_E_INVALID_REQUEST,  /* "invalid_request": 4xx other than 429; never retried */
    LOOM_E_CONFIG,           /* "config": a plugin's configuration is wrong (at init) */
    LOOM_E_NOMEM             /* "out_of_memory" */
} loom_errcode;

/* The host's side of one call, one init or one reload: where errors and
 * logs go. Opaque to plugins; valid only during the call it was passed to
 * (for a lambda on the pool: until it returns, on its worker thread). */
typedef struct loom_ctx loom_ctx;

/* One provider call in flight, for providers with an `invoke` hook: the
 * handle the plugin finishes it with, later, on the reactor thread. Valid
 * from invoke until the plugin calls complete or fail, or the host calls the
 * provider's cancel hook, whichever comes first. */
typedef struct loom_call loom_call;

/* Token counts of one answer. INPUT_TOKENS counts every input token,
 * cached ones included (OpenAI's prompt_tokens; Anthropic's input_tokens
 * plus its two cache counts), so limits see the whole prompt; the cache
 * counts say how many of them were read from or written to the provider's
 * prompt cache, which prices them differently. */
typedef struct loom_usage {
    int64_t input_tokens;        /* -1 when the answer did not say */
    int64_t output_tokens;
    /* ---- 2.2 */
    /* The host sets both to -1 before a decode and reads them from an
     * invoke provider's complete only when the plugin is 2.2 or newer. */
    int64_t cache_read_tokens;   /* input tokens read from the prompt cache; -1 unknown */
    int64_t cache_write_tokens;  /* input tokens written to it; -1 unknown */
} loom_usage;

/* A loom_usage that knows nothing (2.2): every count -1. */
#define LOOM_USAGE_UNKNOWN ((loom_usage){ -1, -1, -1, -1 })

/* What the host offers plugins. A table, not exported symbols, so a plugin
 * links against nothing but jansson and the host can be statically linked.
 * It only grows at its end (a minor bump); call it through the inline
 * wrappers below. Every entry may be called from every context: one that
 * has no meaning there (fail_after at init) does nothing. */
typedef struct loom_host_api {
    void (*verror)(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap);
    /* Any thread; the line goes to loomd's log at LEVEL (LOOM_LOG_*). */
    void (*vlog)(loom_ctx *ctx, int level, const char *fmt, va_list ap);
    /* Provider decode only: the server asked to wait this long before retrying. */
    void (*retry_after)(loom_ctx *ctx, uint64_t ms);

    /* For invoke providers, on the reactor thread only. complete steals
     * OUTPUT (a string for chat, an array of vectors for embeddings); USAGE
     * may be NULL. Exactly one of complete, fail and fail_after ends a call. */
    void (*complete)(loom_call *call, json_t *output, const loom_usage *usage);
    void (*fail)(loom_call *call, loom_errcode code, const char *message);
    /* Runs CB(UD) after DELAY_MS on the reactor thread: the way an in-process
     * provider waits, never by sleeping. Returns a timer handle (NULL when out
     * of memory) that stays valid until CB runs or timer_cancel is called. */
    void *(*timer_add)(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud);
    void (*timer_cancel)(loom_call *call, void *timer);

    /* ---- 2.0 */
    /* fail, with the wait the back end asked for before the next call
     * (RETRY_AFTER_MS; 0 = none said): a retry of the step waits that long
     * instead of its back-off. MESSAGE is copied. */
    void (*fail_after)(loom_call *call, loom_errcode code, uint64_t retry_after_ms,
                       const char *message);
    /* When the call must end: CLOCK_MONOTONIC milliseconds (the step's
     * timeout), or 0 when it has none. 0 outside lambda and invoke calls. */
    uint64_t (*deadline_ms)(loom_ctx *ctx);
    /* Nonzero once the host gave up on the call (a cancelled job, a
     * timeout): a long lambda on the pool polls it and returns early (its
     * result is dropped). Any thread. */
    int (*cancelled)(loom_ctx *ctx);

    /* ---- 2.1 */
    /* loom_log for an invoke provider's code that holds a call but no ctx
     * (a timer callback, before it finishes the call): the line is the
     * call's plugin's, at LEVEL. */
    void (*call_vlog)(loom_call *call, int level, const char *fmt, va_list ap);

    /* ---- 2.3 */
    /* complete, for an answer that asks for tools: TOOL_CALLS (stolen; an
     * array as in loom_result.tool_calls, or NULL for none) beside OUTPUT
     * (stolen; the answer's text, "" when it has none). */
    void (*complete_tools)(loom_call *call, json_t *output, json_t *tool_calls,
                           const loom_usage *usage);
} loom_host_api;

struct loom_ctx {
    const loom_host_api *api; /* first member: the only field a plugin may read */
};

struct loom_call {
    const loom_host_api *api; /* first member: the only field a plugin may read */
};

/* Records why the call failed. The call then returns NULL (or -1). */
static inline void loom_error(loom_ctx *ctx, loom_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void loom_error(loom_ctx *ctx, loom_errcode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctx->api->verror(ctx, code, fmt, ap);
    va_end(ap);
}

enum { LOOM_LOG_ERROR = 0, LOOM_LOG_WARN, LOOM_LOG_INFO, LOOM_LOG_DEBUG };

/* A log line attributed to the plugin (the host prefixes its name), at
 * LEVEL, from any context and any thread. Never log secrets or payloads. */
static inline void loom_log(loom_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void loom_log(loom_ctx *ctx, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctx->api->vlog(ctx, level, fmt, ap);
    va_end(ap);
}

/* loom_log with a call instead of a ctx (2.1): an invoke provider's timer
 * callback has only its loom_call. */
static inline void loom_call_log(loom_call *call, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void loom_call_log(loom_call *call, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    call->api->call_vlog(call, level, fmt, ap);
    va_end(ap);
}

/* Provider decode: the server said to wait MS before the next request. */
static inline void loom_retry_after(loom_ctx *ctx, uint64_t ms)
{
    ctx->api->retry_after(ctx, ms);
}

/* The call's deadline in CLOCK_MONOTONIC milliseconds, 0 for none. */
static inline uint64_t loom_deadline_ms(loom_ctx *ctx)
{
    return ctx->api->deadline_ms(ctx);
}

/* Nonzero once the host gave up on the call: stop and return NULL. */
static inline int loom_cancelled(loom_ctx *ctx)
{
    return ctx->api->cancelled(ctx);
}

/* Invoke providers: ends CALL with OUTPUT (stolen), or with a failure. */
static inline void loom_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    call->api->complete(call, output, usage);
}

/* 2.3: an invoke provider's answer that calls tools (see complete_tools). */
static inline void loom_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                                       const loom_usage *usage)
{
    call->api->complete_tools(call, output, tool_calls, usage);
}

static inline void loom_fail(loom_call *call, loom_errcode code, const char *message)
{
    call->api->fail(call, code, message);
}

/* A failure with the back end's Retry-After (LOOM_E_RATE_LIMITED, or
 * LOOM_E_UPSTREAM for a 503 that said when): the retry waits RETRY_AFTER_MS. */
static inline void loom_fail_after(loom_call *call, loom_errcode code, uint64_t retry_after_ms,
                                   const char *message)
{
    call->api->fail_after(call, code, retry_after_ms, message);
}

/* ---- configuration maps (Fluent Bit's idea): options declared as data ---- */

typedef enum loom_opt_type {
    LOOM_OPT_STRING,
    LOOM_OPT_INT,
    LOOM_OPT_DOUBLE,
    LOOM_OPT_BOOL,
    LOOM_OPT_DURATION,   /* "500ms", "30s": given to the plugin as milliseconds (integer) */
    LOOM_OPT_JSON        /* any value */
} loom_opt_type;

/* Arrays of options end with an entry whose name is NULL; the host walks
 * them with the plugin's sizeof(loom_option). */
typedef struct loom_option {
    const char *name;
    loom_opt_type type;
    const char *default_value;  /* as written in YAML, or NULL: no default */
    int required;
    const char *description;
} loom_option;

/* ---- lambdas ---- */

enum {
    LOOM_LAMBDA_PURE = 1u << 0, /* same input and args -> same output; no side effects */
    LOOM_LAMBDA_FAST = 1u << 1  /* microseconds; with PURE, runs on the reactor
                                   (over 1 ms is logged as a warning) */
};

/* INPUT and ARGS are borrowed; STATE is the plugin's (from init). Returns a
 * new reference, or NULL after loom_error(ctx, LOOM_E_LAMBDA_FAILED, ...).
 * A long lambda checks loom_cancelled(ctx) now and then, and may plan with
 * loom_deadline_ms(ctx). */
typedef json_t *(*loom_lambda_fn)(loom_ctx *ctx, void *state, json_t *input, json_t *args);

typedef struct loom_lambda {
    const char *name;            /* called as PLUGIN.NAME in workflows */
    loom_lambda_fn fn;
    unsigned flags;
    const loom_option *args;     /* declared arguments (NULL-name terminated), or NULL */
    const char *summary;         /* one line */
    /* ---- 2.1 */
    const char *doc;             /* longer text for the lambda reference, or NULL */
    const char *example;         /* a workflow step using it (YAML), or NULL */
} loom_lambda;

/* ---- providers: encode a normalised call into HTTP, decode the answer ---- */

typedef enum loom_call_kind { LOOM_CALL_CHAT, LOOM_CALL_EMBED } loom_call_kind;

/* A normalised call. Everything borrowed, valid during encode/decode. */
typedef struct loom_request {
    loom_call_kind kind;
    const char *model;
    json_t *messages;            /* CHAT: [{ "role": ..., "content": ... }] */
    json_t *params;              /* CHAT: { temperature, max_tokens, top_p, stop, seed } */
    int json_mode;               /* CHAT: ask for a JSON answer */
    json_t *inputs;              /* EMBED: array of strings (a batch) */
    /* ---- 2.2 */
    /* CHAT: ask for the answer as a stream of server-sent events. Set only
     * for a provider with a stream hook, and only while someone watches the
     * job's tokens; decode still gets any answer that is not a stream (an
     * error status, a server that answered whole). */
    int stream;
    /* CHAT: the workflow or provider asked for prompt caching
     * (`prompt_cache: true`): a provider that caches on request marks the
     * stable head of the prompt (system prompt, tools) as cacheable. */
    int prompt_cache;
    /* ---- 2.3 */
    /* CHAT: the tools the model may call, or NULL: an array of
     *   {"name": N, "description": D, "parameters": JSON-SCHEMA-OBJECT}
     * (names match [A-Za-z0-9_-]{1,64}). With tools, MESSAGES may hold the
     * turns of a tool conversation, in a provider-neutral form the plugin
     * translates into its own:
     *   {"role": "assistant", "content": TEXT-OR-"",
     *    "tool_calls": [{"id": ID, "name": N, "arguments": {...}}, ...]}
     *   {"role": "tool", "tool_call_id": ID, "name": N, "content": TEXT,
     *    "is_error": true|false}
     * (one "tool" message per call, in the order of the calls). */
    json_t *tools;
    /* CHAT: the answer must be JSON fitting this JSON Schema object (a
     * structured output), or NULL. A provider that supports it natively
     * asks for it (OpenAI response_format json_schema, strict; Anthropic a
     * forced tool whose input is the answer) and returns the JSON text as
     * the output string; the host checks it against the schema either way.
     * SCHEMA_NAME names it ([A-Za-z0-9_-], from the node's id), never NULL
     * when SCHEMA is set. */
    json_t *schema;
    const char *schema_name;
} loom_request;

typedef struct loom_header {
    const char *name;
    const char *value;
} loom_header;

/* What encode fills in. Strings and the body are new allocations (malloc)
 * that the host frees; headers is a malloc'd array of malloc'd strings. */
typedef struct loom_http_request {
    char *method;                /* "POST" */
    char *url;
    loom_header *headers;
    size_t nheaders;
    char *body;
    size_t body_len;
} loom_http_request;

/* A response as received; everything borrowed. Header names are lower-case. */
typedef struct loom_http_response {
    int status;
    const loom_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
} loom_http_response;

/* The room for a finish reason, with its NUL: longer ones are cut. */
#define LOOM_FINISH_REASON_MAX 32

/* What decode fills in: the answer (new reference: a string for chat, an
 * array of vectors for embeddings, in input order) and the usage. The host
 * zeroes it before decode, so a plugin that says nothing of a member
 * leaves it empty. */
typedef struct loom_result {
    json_t *output;
    loom_usage usage;
    /* ---- 2.2 */
    /* why the answer ended, in the provider's own word ("stop", "length",
     * "end_turn", "tool_calls"...), or "" when it did not say */
    char finish_reason[LOOM_FINISH_REASON_MAX];
    /* ---- 2.3 */
    /* The tools the answer calls, or NULL (a new reference the host steals;
     * read only from plugins of 2.3 or newer): an array of
     *   {"id": ID, "name": N, "arguments": {...}}
     * in the answer's order (ID is the provider's, or "call_K" when it gives
     * none; arguments an object, {} when the model sent none or bad JSON is
     * reported as invalid_output). OUTPUT is then the text that came with
     * them, "" when none. */
    json_t *tool_calls;
} loom_result;

/* One server-sent event of a streamed answer, framed by the host (the
 * `event:` and `data:` lines, comments dropped). Borrowed for the call. */
typedef struct loom_sse_event {
    const char *event;           /* its `event:` name, "" when it gave none */
    const char *data;            /* its `data:` lines joined by \n, NUL-terminated */
    size_t data_len;
} loom_sse_event;

/* What a provider's stream hook makes of one event. The host sets TEXT to
 * NULL, DONE to 0, FINISH_REASON to "" and every count of USAGE to -1
 * before each call. */
typedef struct loom_stream_delta {
    json_t *text;                /* the answer's next text (a string; a new
                                    reference the host steals), or NULL */
    loom_usage usage;            /* counts this event gives; a count >= 0
                                    replaces the one an earlier event gave */
    int done;                    /* the event that ends the answer */
    /* the event that says why the answer ended: its reason, as in
     * loom_result (a later one replaces an earlier one); else "" */
    char finish_reason[LOOM_FINISH_REASON_MAX];
} loom_stream_delta;

typedef struct loom_provider {
    const char *name;            /* the `plugin:` value in the config: "openai" */
    const loom_option *options;  /* its config map (NULL-name terminated) */
    /* Reads CONFIG (borrowed; validated against options) once per provider
     * instance; *STATE is owned by the plugin until fini. PLUGIN_STATE is
     * what the plugin's own init made (NULL without one): state shared by
     * every instance of the plugin lives there, never in a global. 0 or -1. */
    int (*init)(loom_ctx *ctx, void *plugin_state, json_t *config, void **state);
    void (*fini)(void *state);
    /* 0, or -1 after loom_error (e.g. LOOM_E_INVALID_REQUEST). */
    int (*encode)(loom_ctx *ctx, void *state, const loom_request *req, loom_http_request *out);
    /* 0 with OUT filled, or -1 after loom_error with the class of failure
     * (and loom_ctx retry_after when the server said). */
    int (*decode)(loom_ctx *ctx, void *state, const loom_request *req,
                  const loom_http_response *resp, loom_result *out);
    size_t max_batch;            /* EMBED inputs per request; 0 = no batching */
    const char *summary;
    /* Optional, instead of encode/decode, for transports that are not HTTP
     * (an in-process model, the offline mock): starts REQ (borrowed, valid
     * during this call only: copy what you keep) and later finishes CALL
     * with loom_complete, loom_fail or loom_fail_after (never a cast of CALL
     * to a loom_ctx). Returns 0, or -1 after loom_error when the call cannot
     * start (CALL is then finished by the host). */
    int (*invoke)(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call);
    /* With invoke: the host gives up on CALL (timeout, cancel). The plugin
     * must drop it (cancel its timers) and never finish it. */
    void (*cancel)(void *state, loom_call *call);
    /* ---- 2.1 */
    const char *doc;             /* longer text for the provider reference, or NULL */
    /* ---- 2.2 */
    /* Optional, with encode/decode: the provider can stream. encode then
     * honours req->stream, and the host, which reads the HTTP body and
     * frames its events, hands each event EV of a 2xx text/event-stream
     * answer here, in order. The texts of every delta, joined, are the
     * answer (the output decode would give for the same answer, after the
     * same checks), the last count of each kind its usage, and the event
     * with DONE set its end: an answer cut off before it is an `upstream`
     * failure. 0, or -1 after loom_error: an error event, or a refusal,
     * classed as decode would class it; the rest of the stream is
     * dropped. Pure, like decode. */
    int (*stream)(loom_ctx *ctx, void *state, const loom_request *req, const loom_sse_event *ev,
                  loom_stream_delta *out);
} loom_provider;

/* ---- the plugin ---- */

typedef struct loom_plugin {
    /* These six first, in this order, in every major: set them with
     * LOOM_PLUGIN_HEADER. The sizes are the plugin's sizeof of each struct,
     * which is the stride the host walks its arrays with. */
    uint32_t abi_major;          /* LOOM_ABI_MAJOR */
    uint32_t abi_minor;          /* LOOM_ABI_MINOR */
    uint32_t plugin_size;        /* sizeof(loom_plugin) */
    uint32_t lambda_size;        /* sizeof(loom_lambda) */
    uint32_t provider_size;      /* sizeof(loom_provider) */
    uint32_t option_size;        /* sizeof(loom_option) */
    const char *name;            /* unique among loaded plugins */
    const char *version;
    const char *description;
    const loom_lambda *lambdas;  /* array of nlambdas */
    size_t nlambdas;
    const loom_provider *providers;
    size_t nproviders;
    /* Optional: once at load, with the plugin's section of the config
     * (borrowed; may be NULL). *STATE goes to every lambda call. 0 or -1. */
    int (*init)(loom_ctx *ctx, json_t *config, void **state);
    void (*fini)(void *state);
    /* ---- 2.1 */
    /* Optional: on SIGHUP, with the new section of the config (borrowed;
     * may be NULL). STATE is init's; the plugin updates it in place (lambdas
     * may be running: see the lifecycle above). 0, or -1 after loom_error to
     * keep the old configuration (the line is logged). */
    int (*reload)(loom_ctx *ctx, void *state, json_t *config);
    /* The plugin's own configuration map (NULL-name terminated), or NULL:
     * the daemon config's `plugins: { config: { NAME: {...} } }` entry is
     * checked against it (unknown keys, types, required ones, defaults
     * added) before init and reload see it. A plugin that declares none
     * gets its entry unchecked. */
    const loom_option *options;
} loom_plugin;

/* The first members of every descriptor: the version and sizes this
 * plugin was compiled with. */
#define LOOM_PLUGIN_HEADER                                         \
    .abi_major = LOOM_ABI_MAJOR, .abi_minor = LOOM_ABI_MINOR,      \
    .plugin_size = (uint32_t)sizeof(loom_plugin),                  \
    .lambda_size = (uint32_t)sizeof(loom_lambda),                  \
    .provider_size = (uint32_t)sizeof(loom_provider),              \
    .option_size = (uint32_t)sizeof(loom_option)

/* Every plugin defines this, returning a pointer to a static descriptor. */
const loom_plugin *LOOM_PLUGIN_ENTRY(void);

/* Define the entry with LOOM_PLUGIN_DEFINE(NAME) { return &descriptor; }.
 * Loom's built-in plugins are linked into the host, where they cannot all be
 * called loom_plugin_entry: built with LOOM_BUILTIN_PLUGIN defined, the same
 * source defines loom_builtin_NAME_entry instead. */
#ifdef LOOM_BUILTIN_PLUGIN
#define LOOM_PLUGIN_DEFINE(name) const loom_plugin *loom_builtin_##name##_entry(void)
#else
#define LOOM_PLUGIN_DEFINE(name) const loom_plugin *LOOM_PLUGIN_ENTRY(void)
#endif

#ifdef __cplusplus
}
#endif

#endif
