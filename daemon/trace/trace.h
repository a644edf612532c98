/* trace.h -- distributed traces: W3C trace context, spans, and their export
 * to an OpenTelemetry collector over OTLP/HTTP with JSON bodies.
 *
 * Owns: the `traceparent` text (parse, validate, format), new trace and span
 * ids (getrandom), spans (name, kind, ids, times, status, attributes), the
 * bounded buffer of finished spans, and the exporter thread that posts them
 * in batches with its own curl handle, retries a failed batch a bounded
 * number of times, and drops (and counts) what it cannot deliver.
 * May call: common/, libc, libcurl, jansson.
 * Must never call: any other module of Loom. The engine, the jobs and the
 * daemon's top make spans and hand them here; nothing here knows a job.
 *
 * Threads: a tracer is made and freed on one thread (loomd's main). Spans
 * are built by one thread at a time and handed over with trace_submit from
 * any thread: the hand-over takes a short lock and never waits for the
 * network, so a collector that is slow or down never slows a job. The
 * exporter thread is the only one that talks to the collector.
 *
 * Ownership: a span is new from trace_span_new; trace_submit steals it (the
 * tracer frees it once exported or dropped); trace_span_free drops one that
 * is not submitted. Strings given to setters are copied. */
#ifndef LOOM_DAEMON_TRACE_H
#define LOOM_DAEMON_TRACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- W3C trace context (trace_context.c) */

#define TRACE_ID_SIZE 16
#define TRACE_SPAN_ID_SIZE 8
/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_PARENT_LEN 55
#define TRACE_FLAG_SAMPLED 0x01

typedef struct trace_ctx {
    uint8_t trace_id[TRACE_ID_SIZE];
    uint8_t span_id[TRACE_SPAN_ID_SIZE];
    uint8_t flags;                 /* bit 0: sampled */
} trace_ctx;

/* Parses S, a `traceparent` header value: version 00, a trace id of 32
 * lowercase hex digits that are not all zero, a span id of 16 that are not
 * all zero, and 2 hex digits of flags. 0, or -1 with what is wrong in *WHY
 * (a static string). */
int trace_parse(const char *s, trace_ctx *out, const char **why);
/* C as a traceparent into OUT (TRACE_PARENT_LEN + 1 bytes). */
void trace_format(const trace_ctx *c, char out[TRACE_PARENT_LEN + 1]);
/* N bytes of B as lowercase hex into OUT (2N + 1 bytes). */
void trace_hex(const uint8_t *b, size_t n, char *out);
/* A new random trace id, or span id, never all zero (getrandom; a clock
 * and counter mix if it fails, so ids are always made). */
void trace_new_trace_id(uint8_t id[TRACE_ID_SIZE]);
void trace_new_span_id(uint8_t id[TRACE_SPAN_ID_SIZE]);
/* Whether a new trace with TRACE_ID is kept at RATIO (0..1): the decision
 * depends on the id only (its last 8 bytes against RATIO * 2^64), so every
 * process deciding on one trace decides alike. */
bool trace_ratio_sampled(const uint8_t trace_id[TRACE_ID_SIZE], double ratio);

/* Jobs: a job's stored traceparent names the span its job span is a child
 * of -- the submitter's -- or, when it came with none, a traceparent made at
 * submit whose span id is trace_root_marker of its trace id: "no parent".
 * Either way the job span's own id is derived from the trace id and the
 * job's id, so a job resumed after a restart continues the same trace with
 * the same job span, whichever process ends it. */

/* A traceparent for a job submitted without one: a new trace, the marker
 * as span id, sampled at RATIO. */
void trace_make_root(trace_ctx *out, double ratio);
/* The context of JOB_ID's job span under STORED (a parsed stored
 * traceparent): same trace and flags, the derived span id. *HAS_PARENT
 * says whether STORED's span is a real parent (PARENT_ID gets its id). */
void trace_job_context(const trace_ctx *stored, const char *job_id, trace_ctx *job,
                       bool *has_parent, uint8_t parent_id[TRACE_SPAN_ID_SIZE]);

/* ---- spans (trace_span.c) */

/* OTLP's SpanKind values. */
typedef enum {
    TRACE_KIND_INTERNAL = 1,
    TRACE_KIND_SERVER = 2,
    TRACE_KIND_CLIENT = 3,
} trace_kind;

typedef struct trace_span {
    struct trace_span *next;       /* in the tracer's buffer */
    char *name;
    trace_kind kind;
    uint8_t trace_id[TRACE_ID_SIZE];
    uint8_t span_id[TRACE_SPAN_ID_SIZE];
    uint8_t parent_id[TRACE_SPAN_ID_SIZE];
    bool has_parent;
    uint64_t start_ns, end_ns;     /* unix nanoseconds */
    bool error;                    /* status ERROR (else unset: OTel's advice) */
    char *message;                 /* the error's, or NULL */
    json_t *attrs;                 /* OTLP KeyValue objects, in order */
} trace_span;

/* The wall clock in unix nanoseconds. */
uint64_t trace_now_ns(void);
/* A new span NAME (copied) of KIND with CTX's trace id and span id, a
 * child of PARENT_ID (NULL: a root), started at START_NS. NULL when out of
 * memory. */
trace_span *trace_span_new(const char *name, trace_kind kind, const trace_ctx *ctx,
                           const uint8_t *parent_id, uint64_t start_ns);
void trace_span_free(trace_span *s);
/* Attributes; a NULL span or value is a no-op (so a span that could not
 * be made costs nothing more). A failed allocation drops the attribute. */
void trace_span_str(trace_span *s, const char *key, const char *value);
void trace_span_int(trace_span *s, const char *key, int64_t value);
void trace_span_double(trace_span *s, const char *key, double value);
void trace_span_bool(trace_span *s, const char *key, bool value);
/* A string array of one value (gen_ai.response.finish_reasons). */
void trace_span_strs1(trace_span *s, const char *key, const char *value);
/* Status ERROR with MESSAGE (copied; may be NULL), and `error.type` TYPE
 * (may be NULL). */
void trace_span_fail(trace_span *s, const char *type, const char *message);

/* ---- the OTLP/HTTP JSON body (trace_otlp.c) */

/* An ExportTraceServiceRequest of the N spans of the list starting at
 * FIRST (borrowed) for SERVICE: {resourceSpans: [{resource, scopeSpans:
 * [{scope, spans}]}]}, ids in hex, times as decimal strings. A new
 * reference, or NULL when out of memory. */
json_t *trace_otlp_request(const trace_span *first, size_t n, const char *service);

/* ---- the tracer (trace_export.c) */

typedef struct tracer tracer_t;

typedef struct trace_options {
    const char *endpoint;          /* the collector's base URL ("http://127.0.0.1:4318") */
    const char *service_name;      /* service.name of every span ("loomd") */
    double sample;                 /* ratio of new traces kept (0..1) */
    size_t max_queued;             /* spans buffered; more are dropped (0: 2048) */
    size_t batch_spans;            /* spans per post (0: 512) */
    uint64_t batch_delay_ms;       /* how long a span may wait for its batch (0: 1000) */
    uint64_t post_timeout_ms;      /* one post, connecting included (0: 5000) */
    int max_retries;               /* posts of one batch after the first (0: 3; < 0: none) */
    uint64_t retry_backoff_ms;     /* before the first retry, doubling; each wait drawn
                                    * from its half to its whole (0: 250) */
} trace_options;

typedef struct trace_stats_t {
    uint64_t exported;             /* spans the collector accepted */
    uint64_t dropped;              /* spans given up: buffer full, batch failed, stop */
    uint64_t failed_posts;         /* posts that failed (each retry counts) */
    uint64_t queued;               /* spans buffered or being posted now */
} trace_stats_t;

/* Starts a tracer for O (strings copied) and its exporter thread. NULL
 * with the reason in ERR. */
tracer_t *trace_start(const trace_options *o, char *err, size_t errlen);
/* Stops T: the exporter posts what is buffered for at most FLUSH_MS (each
 * post cut short to fit), then gives up on the rest (dropped), and the
 * thread is joined; T is freed. NULL is a no-op. */
void trace_stop(tracer_t *t, uint64_t flush_ms);
/* Hands S over (stolen; NULL is a no-op): queued for export, or dropped
 * and counted when the buffer is full. Never blocks on the network. */
void trace_submit(tracer_t *t, trace_span *s);
/* The sample ratio of new traces. */
double trace_sample_ratio(const tracer_t *t);
void trace_get_stats(tracer_t *t, trace_stats_t *out);

#endif
