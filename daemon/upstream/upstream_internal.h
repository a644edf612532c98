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
};

struct upstream_call {
    upstream_t *u;
    list_link link;            /* in u->calls */
    char *step_key;            /* owned, or NULL: sent in Loom-Step-Key */
    char *job, *step;          /* owned, or NULL: upstream_send_info */
    uint64_t deadline_ms;      /* 0: none */
    upstream_done_fn done;
    void *ud;
    bool finished;             /* the callback ran or the caller cancelled */
    loom_call_kind kind;
    json_t *inputs;            /* EMBED: reference to the caller's list */
    json_t *vectors;           /* EMBED over several parts: filled as they come */
    size_t pending;            /* parts not yet answered */
    loom_usage usage;
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
    rl_t *rl;
    upstream_options opt;
    list_link xfers;           /* every live xfer */
    list_link calls;           /* every live call */
    xfer *open_batch;          /* the batch now filling (one model at a time) */
    bool disabled;
    char disabled_msg[256];
    upstream_stats_t st;
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

/* upstream_key.c */
/* Adds the Loom-Step-Key header of X's live parts to ENC (whose headers
 * array is malloc'd, as encode leaves it). 0 or -ENOMEM. */
int xfer_add_step_keys(const xfer *x, loom_http_request *enc);

/* upstream_batch.c */
/* Puts CALL's inputs into open batches, flushing full ones. 0 or -ENOMEM. */
int batch_add(upstream_t *u, upstream_call_t *call, const char *model);
/* Closes the open batch and sends it. */
void batch_flush(upstream_t *u);
/* The estimated token cost of one input (bytes / 4, at least 1). */
int64_t batch_input_tokens(json_t *input);

#endif
