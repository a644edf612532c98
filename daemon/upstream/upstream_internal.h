/* upstream_internal.h -- structures shared by upstream.c and upstream_batch.c.
 *
 * A call (what the engine asked for) travels in one or more transfers
 * ("xfers": one HTTP request, or one send through a transport, each; an xfer
 * is what upstream.h calls an upstream_send_t). A chat call, or an embedding call on a
 * provider without batching, is the only part of its own xfer. With
 * batching, an embedding call's inputs are cut into parts that join open
 * batch xfers, so one xfer carries parts of many calls and one call may span
 * several xfers. A call is freed when its caller is done with it (callback
 * ran, or cancelled) and no xfer still points at it. */
#ifndef LOOM_DAEMON_UPSTREAM_INTERNAL_H
#define LOOM_DAEMON_UPSTREAM_INTERNAL_H

#include "common/containers.h"
#include "daemon/upstream/upstream.h"

/* The host side of loom_ctx for a provider's encode, decode and stream. */
typedef struct uctx {
    loom_ctx base;             /* plugins see only this */
    const upstream_t *u;       /* for its log */
    bool failed, has_ra;
    loom_errcode code;
    uint64_t ra_ms;
    char msg[256];
} uctx;

struct xstream;

typedef struct upstream_send xfer;

typedef struct part {
    upstream_call_t *call;     /* NULL once the call was withdrawn */
    size_t call_off;           /* first input of the part in the call */
    size_t n;                  /* inputs (EMBED); 1 for CHAT */
    size_t batch_off;          /* first input of the part in the xfer */
} part;

/* Where one part of a call lives, so a cancel can detach it. */
typedef struct plink {
    xfer *x;                   /* NULL once that xfer is done with the call */
    size_t idx;                /* in x->parts */
} plink;

struct upstream_send {
    upstream_t *u;
    list_link link;            /* in u->xfers */
    loom_call_kind kind;
    char *model;               /* owned, or NULL */
    json_t *messages, *params; /* CHAT: references */
    int json_mode;
    int prompt_cache;          /* CHAT: loom_request.prompt_cache */
    json_t *tools, *schema;    /* CHAT (2.3): references, or NULL */
    char *schema_name;         /* CHAT (2.3): owned, or NULL */
    json_t *tool_calls;        /* CHAT (2.3): the answer's, owned, or NULL */
    json_t *inputs;            /* EMBED: reference (solo) or built at flush (batch) */
    part *parts;
    size_t nparts, pcap;
    size_t ninputs;            /* EMBED: inputs in live parts */
    int64_t est_tokens;        /* EMBED batch: estimate so far */
    bool batch, open;          /* a batch, still filling */
    bool busy;                 /* its parts are being answered */
    reactor_post_t post;       /* xfer_submit_later */
    reactor_timer_t *window;   /* the open batch's deadline */
    rl_ticket *ticket;
    http_call_t *http;
    loom_http_request enc;     /* encoded, not yet sent (owned) */
    bool sending;              /* started through the transport, not yet ended */
    void *tx;                  /* the transport's (upstream_send_set_data) */
    uint64_t sent_us;          /* when it was sent, CLOCK_MONOTONIC */
    int waits;                 /* 429s sat out */
    bool want_stream;          /* encoded asking for a stream (upstream_stream.c) */
    struct xstream *stream;    /* owned: the stream being read, or NULL */
    char finish_reason[LOOM_FINISH_REASON_MAX]; /* the answer's, or "" */
};

struct upstream_call {
    upstream_t *u;
    list_link link;            /* in u->calls */
    char *step_key;            /* owned, or NULL: sent in Loom-Step-Key */
    char traceparent[56];      /* sent as `traceparent` (W3C), or "" */
    char *job, *step;          /* owned, or NULL: upstream_send_info */
    char *tenant;              /* owned, or NULL ("default"): its limiter queue share */
    int64_t tenant_weight;
    uint64_t deadline_ms;      /* 0: none */
    upstream_token_fn token;   /* the streamed text's reader, or NULL */
    void *token_ud;
    upstream_done_fn done;
    void *ud;
    bool finished;             /* the callback ran or the caller cancelled */
    loom_call_kind kind;
    json_t *inputs;            /* EMBED: reference to the caller's list */
    json_t *vectors;           /* EMBED over several parts: filled as they come */
    size_t pending;            /* parts not yet answered */
    loom_usage usage;
    /* CLOCK_MONOTONIC us: accepted, first and last granted a send (0: never);
     * what upstream_result's wait_us and send_us are made of */
    uint64_t created_us, first_sent_us, sent_us;
    uint64_t first_token_us;   /* a stream's first text, same clock (0: none) */
    char finish_reason[LOOM_FINISH_REASON_MAX]; /* a chat answer's, or "" */
    json_t *tool_calls;        /* a chat answer's (2.3), owned, or NULL */
    plink *links;
    size_t nlinks, lcap;
    reactor_post_t post;       /* an early failure, on a later pass */
    loom_errcode early_code;
    char early_msg[256];
};

struct upstream {
    reactor_t *r;
    http_client_t *http;       /* HTTP providers; NULL with a transport */
    const upstream_transport *tp; /* other providers; NULL for HTTP */
    void *tp_ud;               /* owned: freed with tp->free */
    char *name;
    const loom_provider *def;
    void *state;
    upstream_log_fn log;       /* the plugin's loom_log lines, or NULL */
    void *log_ud;
    uint32_t abi_minor;        /* the plugin's: which loom_usage members it has */
    rl_t *rl;
    upstream_options opt;
    list_link xfers;           /* every live xfer */
    list_link calls;           /* every live call */
    xfer *open_batch;          /* the batch now filling (one model at a time) */
    bool disabled;
    char disabled_msg[256];
    upstream_stats_t st;
    /* upstream_batch_decode's and _result's message and finish reason,
     * valid until the next of those calls (upstream_batchapi.c) */
    char batch_msg[256];
    char batch_finish[LOOM_FINISH_REASON_MAX];
};

/* upstream.c */
xfer *xfer_new(upstream_t *u, loom_call_kind kind, const char *model);
void xfer_free(xfer *x);
/* Adds a part of CALL to X. 0 or -ENOMEM. */
int xfer_add_part(xfer *x, upstream_call_t *call, size_t call_off, size_t n);
/* Encodes X and asks the limiter; failures end X's parts. */
void xfer_submit(xfer *x);
/* The same on a later pass: from upstream_call, whose caller must never be
 * called back before it returns. */
void xfer_submit_later(xfer *x);
/* Ends C on a later pass with CODE (LOOM_OK: an empty list of vectors). */
void call_end_later(upstream_call_t *c, loom_errcode code, const char *msg);
/* X's request, into REQ (see upstream.c). 0 or -ENOMEM. */
int xfer_request(xfer *x, loom_request *req, bool rebuild);
/* A context for one plugin call of U's provider. */
void uctx_init(uctx *c, const upstream_t *u);
/* What X's answer does (see upstream.c); X is gone when this returns. */
void xfer_answer(xfer *x, json_t *output, const loom_usage *usage, loom_errcode code,
                 const char *msg, bool has_ra, uint64_t ra_ms, bool overloaded,
                 uint64_t latency_ms);

/* upstream_batchapi.c */
/* Fills in the defaults of B (a provider entry's `batch_api:`), capped by
 * DEF's batch limits. */
void upstream_batch_api_defaults(upstream_batch_api *b, const loom_provider *def);

/* upstream_stream.c: streamed answers */
/* Whether X is to be asked for as a stream: a chat call alone in its
 * request, on an HTTP provider with a stream hook, whose caller reads
 * tokens. */
bool xfer_wants_stream(const xfer *x);
/* Sets up X's stream and points O's on_data at it. 0 or -ENOMEM. */
int xfer_stream_begin(xfer *x, http_call_opts *o);
/* X's streamed answer ended with RESP (LATENCY_MS): delivered or failed. */
void xfer_stream_end(xfer *x, const http_response *resp, uint64_t latency_ms);
/* X's call reads tokens and got OUTPUT whole: its text is one token. */
void xfer_stream_whole(xfer *x, json_t *output);
/* Frees X's stream, if any. */
void xfer_stream_free(xfer *x);

/* upstream_key.c */
/* Adds the Loom-Step-Key header of X's live parts to ENC (whose headers
 * array is malloc'd, as encode leaves it). 0 or -ENOMEM. */
int xfer_add_step_keys(const xfer *x, loom_http_request *enc);
/* Adds a `traceparent` header to ENC: the first live part's, if it has
 * one. 0 or -ENOMEM. */
int xfer_add_traceparent(const xfer *x, loom_http_request *enc);

/* upstream_batch.c */
/* Puts CALL's inputs into open batches, flushing full ones. 0 or -ENOMEM. */
int batch_add(upstream_t *u, upstream_call_t *call, const char *model);
/* Closes the open batch and sends it. */
void batch_flush(upstream_t *u);
/* The estimated token cost of one input (bytes / 4, at least 1). */
int64_t batch_input_tokens(json_t *input);

#endif
