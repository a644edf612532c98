/* fake_batch.h -- the fake provider's Batch APIs (OpenAI and Anthropic).
 *
 * OpenAI: files (POST /v1/files as multipart/form-data, GET /v1/files,
 * GET /v1/files/ID, GET /v1/files/ID/content) and batches (POST
 * /v1/batches, GET /v1/batches/ID, GET /v1/batches, POST
 * /v1/batches/ID/cancel). Anthropic: POST /v1/messages/batches, GET
 * /v1/messages/batches/ID, GET /v1/messages/batches, GET
 * /v1/messages/batches/ID/results, POST /v1/messages/batches/ID/cancel.
 *
 * A batch ends `delay` after it was created, on a timer of its own (a
 * timerfd the server's epoll loop watches), never by sleeping; every
 * request first brings the batches whose time has come to their end, so
 * what a client sees never depends on which of the two came first. Each
 * line is answered through the ANSWER callback, which is the direct
 * endpoint's own code: a line's output and usage are the ones a direct
 * call with the same body gets. Faults (failed lines, expired batches,
 * error answers on the endpoints) come every K-th, so tests know in
 * advance which ones they get.
 *
 * Single-threaded, like the server it belongs to. */
#ifndef LOOM_TESTS_FAKE_BATCH_H
#define LOOM_TESTS_FAKE_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct fake_batch fake_batch;

/* The direct endpoint a line goes to. */
typedef enum { FAKE_BATCH_CHAT, FAKE_BATCH_EMBEDDINGS, FAKE_BATCH_MESSAGES } fake_batch_kind;

/* Answers REQ (borrowed) as the direct endpoint KIND would: 200 with *BODY
 * the answer (new reference), 400 with ERR (ERR_LEN bytes) saying why the
 * endpoint refuses it, or -1 when memory ran out. */
typedef int (*fake_batch_answer_fn)(void *ctx, fake_batch_kind kind, json_t *req, json_t **body, char *err,
                                    size_t err_len);

typedef struct fake_batch_opts {
    double delay_ms;              /* --batch-delay: creation to end */
    long fail_every;              /* --batch-fail-every: 0 none */
    long expire_every;            /* --batch-expire-every: 0 none */
    int fault_code;               /* --batch-fault: 0 none, 429, 500 or 503 */
    long fault_every;             /* --batch-fault-every (at least 1) */
    fake_batch_answer_fn answer;
    void *answer_ctx;             /* borrowed, given back to ANSWER */
} fake_batch_opts;

/* One request to a batch endpoint, as the server read it. Every pointer
 * is borrowed for the call; the *_len strings need not end in NUL. */
typedef struct fake_batch_req {
    const char *method;           /* "GET", "POST", ... */
    const char *path;             /* without the query */
    const char *query;            /* what followed '?', "" without one */
    const char *host;             /* the Host header, or NULL */
    size_t host_len;
    bool https;                   /* X-Forwarded-Proto / Forwarded said https */
    const char *content_type;     /* or NULL */
    size_t content_type_len;
    bool has_key, has_version;    /* x-api-key, anthropic-version */
    const char *body;
    size_t body_len;
} fake_batch_req;

/* The answer to send at once. */
typedef struct fake_batch_resp {
    int status;
    const char *content_type;     /* static */
    char extra[192];              /* more header lines, each ending in CRLF */
    char *body;                   /* owned by the caller once returned: free() */
    size_t len;
    const char *fault;            /* static: "batch_fault" when --batch-fault answered */
} fake_batch_resp;

/* A new set of (no) files and batches with options O (copied), or NULL
 * when the timer or memory could not be had. Free with fake_batch_free. */
fake_batch *fake_batch_new(const fake_batch_opts *o);

void fake_batch_free(fake_batch *b);

/* Whether PATH (without query) is one of the batch endpoints' paths. */
bool fake_batch_is_endpoint(const char *path);

/* Answers RQ into *RS (zeroed by the caller). 0, or -1 when memory ran
 * out (nothing in *RS to free then). */
int fake_batch_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs);

/* The timer's descriptor: readable when a batch's time has come; then call
 * fake_batch_tick. */
int fake_batch_timer_fd(const fake_batch *b);

/* Ends the batches whose time has come and sets the timer for the next.
 * 0, or -1 when memory ran out (that batch is tried again 10 ms later). */
int fake_batch_tick(fake_batch *b);

/* Adds the batch counters (batch_uploads, batch_creates, ...) to STATS
 * (borrowed). 0 or -1. */
int fake_batch_stats(const fake_batch *b, json_t *stats);

/* Zeroes the counters and the fault sequences and drops every batch and
 * file. */
void fake_batch_reset(fake_batch *b);

/* Parses an HTTP status for --batch-fault: 429, 500 or 503, else 0. */
int fake_batch_fault_code(const char *s);

#endif
