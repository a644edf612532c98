/* upstream.h -- one provider instance reached over HTTP: the path of a call
 * from the engine to the wire and back.
 *
 *   upstream_call -> [coalesce embeddings into batches] -> rate limiter
 *   (FIFO, waits on timers) -> plugin encode -> http (curl multi) -> plugin
 *   decode -> limiter corrected (usage, 429 pause, rate-limit headers,
 *   overload) -> the caller's callback
 *
 * Why a module of its own: the engine decides *what* to call and when to
 * retry; this decides *how* a call reaches one provider without breaking its
 * limits, and the same path serves calls from every job, which is what makes
 * batching across jobs and one FIFO per provider possible.
 *
 * What the caller sees: one callback per call with either the output or a
 * typed error (LOOM_E_*) with the server's wait, if it gave one. Rate-limit
 * answers (429) are not errors at this level: the provider is paused for as
 * long as the server said and the call waits in the queue again, up to
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

typedef struct upstream_options {
    http_call_opts timeouts;       /* per HTTP request */
    /* Embedding inputs per request: 0 = the provider's max_batch (no
     * batching if it declares none), < 0 = no batching. Capped by the
     * provider's max_batch when it declares one. */
    int64_t batch_max_inputs;
    int64_t batch_max_tokens;     /* estimated tokens per batch (0: 300,000) */
    uint64_t batch_window_ms;     /* how long a batch waits to fill (0: 5 ms) */
    int max_rate_limit_waits;     /* 429s one call sits out before failing (0: 10) */
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
} upstream_result;

typedef void (*upstream_done_fn)(upstream_call_t *call, upstream_result *res, void *ud);

typedef struct upstream_stats_t {
    rl_stats_t limiter;
    uint64_t requests;            /* HTTP requests sent */
    uint64_t calls;               /* calls accepted */
    uint64_t succeeded, failed;   /* calls */
    uint64_t rate_limited;        /* 429 answers */
    uint64_t batches, batched_inputs;
    int64_t input_tokens, output_tokens; /* from usage */
    uint64_t latency_ewma_us;     /* HTTP round trip, smoothed */
    bool disabled;                /* after a quota answer */
} upstream_stats_t;

/* A provider instance NAME (copied) of plugin provider DEF (borrowed) with
 * its STATE (borrowed: the caller runs fini after upstream_free), limited by
 * LIMITS (copied), sending through HTTP (borrowed). OPT may be NULL. R and
 * HTTP must outlive it. NULL with errno (ENOMEM, EINVAL). */
upstream_t *upstream_new(reactor_t *r, http_client_t *http, const char *name,
                         const loom_provider *def, void *state, const rl_limits *limits,
                         const upstream_options *opt);

/* Where the plugin's loom_log lines from encode and decode go: LOG(UD,
 * level, fmt, ap), on the reactor thread. Without one they are dropped. */
typedef void (*upstream_log_fn)(void *ud, int level, const char *fmt, va_list ap);
void upstream_set_log(upstream_t *u, upstream_log_fn log, void *ud);

/* Drops every call without calling back and frees U. NULL is a no-op. */
void upstream_free(upstream_t *u);

/* Starts REQ (borrowed: what is needed is copied or referenced) for the
 * step STEP_KEY (copied; may be NULL), which the request carries in a
 * `Loom-Step-Key` header so that an operator (or a test) can tell which step
 * paid for which request. A batch of embeddings lists the keys of all its
 * calls, comma-separated, in the order of its inputs; bytes that could break
 * the header or the list are %XX-escaped, and a list too long for a header
 * ends with "+N" for the keys left out (upstream_key.c). DONE(call,
 * result, UD) runs once, later, unless upstream_cancel comes first. NULL with errno ENOMEM. */
upstream_call_t *upstream_call(upstream_t *u, const loom_request *req, const char *step_key,
                               upstream_done_fn done, void *ud);

/* Withdraws CALL: DONE never runs. Not yet sent: its place in the queue and
 * its reservation are given back (or its inputs leave the batch). Already
 * sent: the HTTP request is abandoned when CALL was alone in it, and the
 * limiter keeps the estimate as the charge (the server counted it too). */
void upstream_cancel(upstream_call_t *call);

void upstream_stats(const upstream_t *u, upstream_stats_t *out);
const char *upstream_name(const upstream_t *u);

/* The server's rate-limit headers (OpenAI x-ratelimit-*, Anthropic
 * anthropic-ratelimit-*) applied to RL through rl_sync. NOW_UNIX is the
 * wall clock, for Anthropic's RFC 3339 reset times. Exposed for tests. */
void upstream_sync_headers(rl_t *rl, const loom_header *h, size_t n, int64_t now_unix);

/* Parses an RFC 3339 time ("2026-11-23T07:50:00Z", fractions and offsets
 * allowed) into milliseconds since the epoch. 0 or -EINVAL. */
int upstream_parse_rfc3339(const char *s, int64_t *ms);

#endif
