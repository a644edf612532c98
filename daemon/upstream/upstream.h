/* upstream.h -- one provider instance: the path of a call from the engine
 * to the provider and back, whatever the provider speaks.
 *
 *   upstream_call -> [coalesce embeddings into batches] -> rate limiter
 *   (FIFO, waits on timers) -> send -> limiter corrected (usage, 429 pause,
 *   rate-limit headers, overload) -> the caller's callback
 *
 * "Send" is where providers differ. An HTTP provider (encode/decode) is sent
 * by the upstream itself: plugin encode -> http (curl multi) -> plugin
 * decode. Any other provider is sent through a transport (below): an invoke
 * provider in this process (upstream_invoke.c, upstream_new_invoke), or one
 * whose instance lives elsewhere. Everything around the send -- limits,
 * batching, 429s, quota, usage, stats -- is the same for every kind, so a
 * provider's `limits` mean the same whatever it is.
 *
 * Why a module of its own: the engine decides *what* to call and when to
 * retry; this decides *how* a call reaches one provider without breaking its
 * limits, and the same path serves calls from every job, which is what makes
 * batching across jobs and one FIFO per provider possible.
 *
 * What the caller sees: one callback per call with either the output or a
 * typed error (LOOM_E_*) with the server's wait, if it gave one. Rate-limit
 * answers (429, or LOOM_E_RATE_LIMITED from a transport) are not errors at
 * this level: the provider is paused for as long as the answer said (1 s if
 * it said nothing) and the call waits in the queue again, up to
 * `max_rate_limit_waits` times before it fails with LOOM_E_RATE_LIMITED. A
 * quota answer disables the whole provider until it is built again (reload):
 * every queued call and every later one fails with LOOM_E_QUOTA at once.
 *
 * Threads: reactor thread only. Callbacks run on a later reactor pass, never
 * inside upstream_call or upstream_cancel. */
#ifndef LOOM_DAEMON_UPSTREAM_H
#define LOOM_DAEMON_UPSTREAM_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/core/http.h"
#include "daemon/upstream/ratelimit.h"
#include "daemon/core/reactor.h"
#include "loom/plugin.h"

typedef struct upstream upstream_t;
typedef struct upstream_call upstream_call_t;

/* A provider entry's `batch_api:` settings (docs/operations.md). Zeros
 * are the defaults, given in brackets. */
typedef struct upstream_batch_api {
    bool off;                     /* `batch_api: false`: calls in batch mode go direct */
    uint64_t window_ms;           /* collect lines this long before a batch is sent [60 s] */
    uint64_t deadline_ms;         /* the completion window asked for [24 h] */
    /* maps over at least this many items run their calls in batch mode
     * unless they say `mode: direct` (0: never by default) */
    int64_t maps_over;
    int fallback_direct;          /* failed lines retry directly: 1 yes, 0 [no] */
    uint64_t poll_min_ms;         /* the first poll after a submit [5 s] ... */
    uint64_t poll_max_ms;         /* ... doubling up to this [5 min] */
    int64_t max_lines;            /* lines per batch [the plugin's batch_max_lines] */
    int64_t max_bytes;            /* JSONL bytes per batch [the plugin's batch_max_bytes] */
} upstream_batch_api;

typedef struct upstream_options {
    http_call_opts timeouts;       /* per HTTP request (HTTP providers only) */
    /* Embedding inputs per request: 0 = the provider's max_batch (no
     * batching if it declares none), < 0 = no batching. Capped by the
     * provider's max_batch when it declares one. */
    int64_t batch_max_inputs;
    int64_t batch_max_tokens;     /* estimated tokens per batch (0: 300,000) */
    uint64_t batch_window_ms;     /* how long a batch waits to fill (0: 5 ms) */
    int max_rate_limit_waits;     /* 429s one call sits out before failing (0: 10) */
    /* The provider's Batch API (`batch_api:` of its entry; read by the
     * engine and daemon/batch/, not used here). */
    upstream_batch_api batch_api;
} upstream_options;

/* The outcome of one call, borrowed for the callback's duration except
 * OUTPUT, a new reference the callback takes (NULL on error). */
typedef struct upstream_result {
    json_t *output;               /* CHAT: a string; EMBED: an array of vectors */
    loom_usage usage;             /* this call's share (batches: per input) */
    loom_errcode code;            /* LOOM_OK or the class of failure */
    const char *message;          /* for people; never holds a secret */
    bool has_retry_after;
    uint64_t retry_after_ms;
    /* Times of the call, for metrics (not set by transports): WAIT_US from
     * upstream_call to its first send (the limiter's queue and a batch's
     * window; to the end when it was never sent), SEND_US from its last send
     * to the answer (0 when never sent). */
    uint64_t wait_us, send_us;
    /* A streamed answer: from its last send to its first text (0: not
     * streamed, or no text). */
    uint64_t ttft_us;
    /* why the answer ended, as the provider said it (borrowed for the
     * callback), or NULL when it did not say */
    const char *finish_reason;
    /* CHAT (ABI 2.3): the tools the answer calls (loom_result.tool_calls),
     * or NULL. Borrowed for the callback (which takes a reference to keep
     * it); in upstream_send_done, stolen like OUTPUT. */
    json_t *tool_calls;
} upstream_result;

typedef void (*upstream_done_fn)(upstream_call_t *call, upstream_result *res, void *ud);

typedef struct upstream_stats_t {
    rl_stats_t limiter;
    uint64_t requests;            /* requests sent (HTTP, or started through a transport) */
    uint64_t calls;               /* calls accepted */
    uint64_t succeeded, failed;   /* calls */
    uint64_t rate_limited;        /* 429 answers */
    /* calls that timed out: ended with LOOM_E_TIMEOUT (also in failed), or
     * withdrawn because their step's timeout fired (upstream_cancel_timeout) */
    uint64_t timeouts;
    uint64_t batches, batched_inputs;
    int64_t input_tokens, output_tokens; /* from usage */
    uint64_t latency_ewma_us;     /* send to answer, smoothed */
    bool disabled;                /* after a quota answer */
} upstream_stats_t;

/* An HTTP provider instance NAME (copied) of plugin provider DEF
 * (borrowed; it has encode and decode) with its STATE (borrowed: the caller
 * runs fini after upstream_free), limited by LIMITS (copied; NULL: none),
 * sending through HTTP (borrowed). OPT may be NULL. R and HTTP must outlive
 * it. NULL with errno (ENOMEM, EINVAL). */
upstream_t *upstream_new(reactor_t *r, http_client_t *http, const char *name,
                         const loom_provider *def, void *state, const rl_limits *limits,
                         const upstream_options *opt);

/* ---- transports
 *
 * A transport sends what the limiter granted to a provider that is not
 * spoken to over HTTP. The upstream hands it one send at a time (a send is
 * one request: a chat call, an embedding call, or a batch of embedding
 * inputs from several calls, as max_batch and the batch options decide) and
 * the transport ends each send exactly once with upstream_send_done, unless
 * the upstream withdraws it first with cancel. Nothing else is the
 * transport's business: a LOOM_E_RATE_LIMITED answer pauses the provider and
 * queues the send again, LOOM_E_QUOTA disables the provider, usage corrects
 * the token budget, all here.
 *
 * An instance's latency is its own work, not a server's queue, so a
 * transport's answers do not move the concurrency cap by latency (HTTP's
 * do); an answer of LOOM_E_UPSTREAM whose message says "overload" halves it
 * as a 503 does.
 *
 * Every hook runs on the reactor thread. */

typedef struct upstream_send upstream_send_t;

/* Who asked, for a transport that records what it runs (crash attribution)
 * or passes a deadline on. Borrowed for the duration of start. */
typedef struct upstream_send_info {
    const char *job;               /* the job of the send's first call; "" if unknown */
    const char *step;              /* its step (node path); "" if unknown */
    uint64_t deadline_ms;          /* CLOCK_MONOTONIC ms: the earliest deadline of the
                                    * send's calls (loom_deadline_ms); 0: none */
} upstream_send_info;

typedef struct upstream_transport {
    /* Sends REQ (borrowed for the duration of start: copy or reference
     * what is kept) as S. The transport ends S with upstream_send_done once,
     * later or before start returns; a failure to start is such an end
     * (e.g. LOOM_E_NOMEM). UD is the transport's, from
     * upstream_new_transport. */
    void (*start)(void *ud, upstream_send_t *s, const loom_request *req,
                  const upstream_send_info *info);
    /* Withdraws S, started and not yet ended (a step's timeout, a cancelled
     * job, upstream_free): the transport drops it and never ends it. */
    void (*cancel)(void *ud, upstream_send_t *s);
    /* Frees UD, from upstream_free after every send was withdrawn, or when
     * upstream_new_transport fails. May be NULL. */
    void (*free)(void *ud);
} upstream_transport;

/* A provider instance NAME (copied) of plugin provider DEF (borrowed) with
 * STATE (borrowed: the caller runs fini after upstream_free), limited by
 * LIMITS (copied; NULL: none), sending through TP (borrowed; it must
 * outlive the upstream) with TP_UD, which the upstream owns from here on,
 * even when this fails. OPT may be NULL; its timeouts are not used. NULL
 * with errno (ENOMEM, EINVAL). */
upstream_t *upstream_new_transport(reactor_t *r, const char *name, const loom_provider *def,
                                   void *state, const upstream_transport *tp, void *tp_ud,
                                   const rl_limits *limits, const upstream_options *opt);

/* The transport's own pointer for S (NULL until set): where it keeps what
 * it needs to finish or cancel S. */
void upstream_send_set_data(upstream_send_t *s, void *data);
void *upstream_send_data(const upstream_send_t *s);

/* Ends S with RES: OUTPUT (stolen; NULL on failure; for EMBED a list with
 * one vector per input of the request), USAGE ({-1, -1}: unknown), CODE,
 * MESSAGE (borrowed for this call), and Retry-After. S is gone when this
 * returns, and the callbacks of its calls may have run inside it. */
void upstream_send_done(upstream_send_t *s, upstream_result *res);

/* loom_log from the transport's provider, through the upstream's log. */
void upstream_send_vlog(upstream_send_t *s, int level, const char *fmt, va_list ap);

/* The in-process transport of an invoke provider (upstream_invoke.c): DEF's
 * invoke and cancel hooks (DEF has invoke), run on the reactor with the
 * host side of loom_call (complete, fail, fail_after, timers, call_vlog),
 * each entry into plugin code recorded for crash attribution (inflight_enter
 * with "invoke", "timer" and "cancel"). An upstream as upstream_new_transport
 * makes it; NULL with errno. */
upstream_t *upstream_new_invoke(reactor_t *r, const char *name, const loom_provider *def,
                                void *state, const rl_limits *limits,
                                const upstream_options *opt);

/* The ABI minor the provider's plugin was built with (default: this
 * host's): a transport reads the prompt-cache counts of an invoke
 * provider's loom_usage only from a plugin of 2.2 or newer, whose struct
 * has them. Before the first call. */
void upstream_set_plugin_abi(upstream_t *u, uint32_t minor);
/* That minor, for the transport sending S. */
uint32_t upstream_send_abi_minor(const upstream_send_t *s);

/* Where the plugin's loom_log lines go (from encode and decode, or from a
 * transport's provider): LOG(UD, level, fmt, ap), on the reactor thread.
 * Without one they are dropped. */
typedef void (*upstream_log_fn)(void *ud, int level, const char *fmt, va_list ap);
void upstream_set_log(upstream_t *u, upstream_log_fn log, void *ud);

/* Drops every call without calling back and frees U. NULL is a no-op. */
void upstream_free(upstream_t *u);

/* A streamed answer's next LEN bytes of text (borrowed for the call), on
 * the reactor thread while the answer arrives. It runs inside the HTTP
 * client's callbacks: it must not cancel the call nor free the upstream. */
typedef void (*upstream_token_fn)(void *ud, const char *text, size_t len);

/* Who a call is for. Every field may be NULL (or 0); strings are copied. */
typedef struct upstream_call_info {
    /* HTTP: sent in a `Loom-Step-Key` header so that an operator (or a test)
     * can tell which step paid for which request. A batch of embeddings
     * lists the keys of all its calls, comma-separated, in the order of its
     * inputs; bytes that could break the header or the list are %XX-escaped,
     * and a list too long for a header ends with "+N" for the keys left out
     * (upstream_key.c). */
    const char *step_key;
    const char *job, *step;        /* transports: upstream_send_info */
    uint64_t deadline_ms;          /* CLOCK_MONOTONIC ms; 0: none */
    /* HTTP: sent as the W3C `traceparent` header (the caller's span of
     * this call); a batch of embeddings sends its first call's. NULL: none. */
    const char *traceparent;
    /* A chat call on an HTTP provider that can stream (loom_provider.stream)
     * is asked for as a stream of server-sent events when TOKEN is set, and
     * TOKEN(TOKEN_UD, ...) gets its text as it arrives; the call still ends
     * with DONE and the whole output, the same as unstreamed. An answer
     * the server sent whole is handed to TOKEN as one piece. */
    upstream_token_fn token;
    void *token_ud;
    /* Whose share of the limiter's queue the call waits in (rl_acquire_for):
     * NULL is "default"; a weight of 0 is 1. A batch of embeddings waits
     * in the share of its first call's tenant. */
    const char *tenant;
    int64_t tenant_weight;
} upstream_call_info;

/* Starts REQ (borrowed: what is needed is copied or referenced) for INFO
 * (may be NULL). DONE(call, result, UD) runs once, later, unless
 * upstream_cancel comes first. NULL with errno ENOMEM. */
upstream_call_t *upstream_call(upstream_t *u, const loom_request *req,
                               const upstream_call_info *info, upstream_done_fn done, void *ud);

/* Withdraws CALL: DONE never runs. Not yet sent: its place in the queue and
 * its reservation are given back (or its inputs leave the batch). Already
 * sent: the HTTP request is abandoned (a transport's send cancelled) when
 * CALL was alone in it, and the limiter keeps the estimate as the charge
 * (the server counted it too). */
void upstream_cancel(upstream_call_t *call);

/* upstream_cancel for a call given up on because its time ran out (its
 * step's timeout): counted in the provider's timeouts. */
void upstream_cancel_timeout(upstream_call_t *call);

void upstream_stats(const upstream_t *u, upstream_stats_t *out);
/* Whether calls of KIND to U wait to be coalesced with others into one
 * request (embeddings on a provider with native batching). */
bool upstream_coalesces(const upstream_t *u, loom_call_kind kind);
const char *upstream_name(const upstream_t *u);
/* U's rate limiter (borrowed: U owns it), for a gate shared with other
 * daemons (daemon/cluster/cluster_limits.h). */
rl_t *upstream_limiter(upstream_t *u);

/* The server's rate-limit headers (OpenAI x-ratelimit-*, Anthropic
 * anthropic-ratelimit-*) applied to RL through rl_sync. NOW_UNIX is the
 * wall clock, for Anthropic's RFC 3339 reset times. Exposed for tests. */
void upstream_sync_headers(rl_t *rl, const loom_header *h, size_t n, int64_t now_unix);

/* ---- provider Batch APIs (upstream_batchapi.c)
 *
 * The plugin's batch hooks (loom_provider, ABI 2.4) called with a host
 * context, for daemon/batch/ (which sends the requests) and the engine
 * (which decodes a line's result as its call's answer). Reactor thread. */

/* Whether U's plugin has a Batch API and its entry did not turn it off. */
bool upstream_has_batch_api(const upstream_t *u);
/* U's `batch_api:` settings with the defaults filled in (limits capped by
 * the plugin's). Borrowed, valid while U lives. */
const upstream_batch_api *upstream_batch_settings(const upstream_t *u);
/* The HTTP client and per-request timeouts U sends through (NULL for a
 * transport provider), for the batch steps' requests. */
http_client_t *upstream_http_client(const upstream_t *u);
const http_call_opts *upstream_http_opts(const upstream_t *u);

/* batch_line: REQ (borrowed) as a JSONL line under CUSTOM_ID. 0 with *LINE
 * (malloc'd, the caller frees; no newline) and *LEN, or -1 with *CODE and
 * a message in ERR. */
int upstream_batch_line(upstream_t *u, const loom_request *req, const char *custom_id,
                        char **line, size_t *len, loom_errcode *code, char *err, size_t errlen);
/* batch_encode: 0 with OUT filled (free with http_request_free), 1 when the
 * API has no such step, -1 with *CODE and ERR. */
int upstream_batch_encode(upstream_t *u, const loom_batch_op *op, loom_http_request *out,
                          loom_errcode *code, char *err, size_t errlen);
/* batch_decode of RESP (a finished HTTP call) to OP: 0 with OUT, or -1
 * with RES's code, message (valid until the next call on U) and
 * Retry-After filled in; a transfer failure (no response) is classed as a
 * direct call's is (timeouts: timeout; connection: upstream; TLS: tls). */
int upstream_batch_decode(upstream_t *u, const loom_batch_op *op, const http_response *resp,
                          loom_batch_info *out, upstream_result *res);
/* batch_result: one result line of call REQ into RES as a direct call's
 * answer would be (output and tool_calls new references the caller takes;
 * usage; finish reason; or code and message, valid until the next call on
 * U). 0 for an answer, -1 for a failure (RES->code set). Counted in U's
 * stats as a call that succeeded or failed. */
int upstream_batch_result(upstream_t *u, const loom_request *req, const char *line, size_t len,
                          upstream_result *res);

/* Parses an RFC 3339 time ("2026-11-23T07:50:00Z", fractions and offsets
 * allowed) into milliseconds since the epoch. 0 or -EINVAL. */
int upstream_parse_rfc3339(const char *s, int64_t *ms);

#endif
