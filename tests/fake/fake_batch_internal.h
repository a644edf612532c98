/* fake_batch_internal.h -- what the batch files share: the store of files
 * and batches (fake_batch.c), OpenAI's endpoints (fake_batch_openai.c) and
 * Anthropic's (fake_batch_anthropic.c). */
#ifndef LOOM_TESTS_FAKE_BATCH_INTERNAL_H
#define LOOM_TESTS_FAKE_BATCH_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "tests/fake/fake_batch.h"

enum {
    FB_ID_MAX = 48,
    OPENAI_MAX_LINES = 50000,
    ANTHROPIC_MAX_LINES = 100000,
};

typedef struct fb_buf {
    char *p;
    size_t len, cap;
} fb_buf;

typedef struct fb_file {
    char id[FB_ID_MAX];
    char *filename, *purpose;
    time_t created_at;
    fb_buf data;
} fb_file;

typedef enum { FB_OPENAI, FB_ANTHROPIC } fb_api;

typedef enum {
    FB_RUNNING,         /* in_progress */
    FB_CANCELLING,      /* cancel asked: ends at the next tick */
    FB_COMPLETED,       /* Anthropic: ended */
    FB_FAILED,          /* OpenAI: its input did not validate */
    FB_EXPIRED,         /* Anthropic: ended, with expired lines */
    FB_CANCELLED,       /* Anthropic: ended, with canceled lines */
} fb_state;

typedef struct fb_line {
    char *custom_id;
    json_t *req;        /* the body (OpenAI) or params (Anthropic); dropped once answered */
} fb_line;

typedef struct fb_batch {
    char id[FB_ID_MAX];
    fb_api api;
    fake_batch_kind kind;
    fb_state state;
    bool expires;               /* --batch-expire-every picked it */
    double created_mono, due_mono;
    time_t created_at, ended_at, cancel_at;
    fb_line *lines;
    size_t nlines;
    size_t done_at_cancel;      /* lines answered before the cancel */
    /* counts once ended */
    size_t n_ok, n_err, n_expired, n_canceled;
    /* OpenAI */
    char input_file_id[FB_ID_MAX];
    json_t *metadata;           /* owned, or NULL */
    json_t *errors;             /* validation errors (owned), or NULL */
    char output_file_id[FB_ID_MAX], error_file_id[FB_ID_MAX];
    /* Anthropic: the results JSONL, once ended */
    fb_buf results;
} fb_batch;

struct fake_batch {
    fake_batch_opts o;
    int tfd;
    fb_file **files;            /* in creation order */
    size_t nfiles, capfiles;
    fb_batch **batches;         /* in creation order */
    size_t nbatches, capbatches;
    unsigned long ids;          /* for every id made */
    unsigned pid;               /* ids of one server never meet another's */
    long created;               /* batches created since the start or /reset */
    unsigned long fault_seq;
    long uploads, creates, lines, polls, results, cancels, lists, line_failures, expired, faults;
};

/* ---- fake_batch.c: the store and what both APIs use */

bool fb_buf_add(fb_buf *b, const void *s, size_t n);
/* Appends J's compact JSON text and a newline (J borrowed). */
bool fb_buf_add_line(fb_buf *b, const json_t *j);
void fb_buf_free(fb_buf *b);

double fb_now(void);                    /* CLOCK_MONOTONIC seconds */

/* A new id "PREFIX..." into OUT (FB_ID_MAX bytes). */
void fb_new_id(fake_batch *b, const char *prefix, char *out);

/* Adds a file (takes FILENAME, PURPOSE and DATA on success). NULL: out of memory. */
fb_file *fb_file_add(fake_batch *b, char *filename, char *purpose, fb_buf *data);
fb_file *fb_file_find(const fake_batch *b, const char *id);
/* Drops F (freed) from the store. */
void fb_file_remove(fake_batch *b, fb_file *f);

/* Adds a batch made by fb_batch_new (taken on success); sets its times,
 * its place in the expiry sequence and the timer. 0 or -1. */
int fb_batch_add(fake_batch *b, fb_batch *x);
/* A zeroed batch of API with N lines, or NULL. */
fb_batch *fb_batch_new(fb_api api, size_t n);
void fb_batch_destroy(fb_batch *x);
fb_batch *fb_batch_find(const fake_batch *b, fb_api api, const char *id);

/* Lines answered by now (of a batch still running: they grow linearly
 * from creation to its end). */
size_t fb_done_now(const fb_batch *x, double now);
/* Of the first DONE lines, how many --batch-fail-every fails. */
size_t fb_failing(const fake_batch *b, size_t done);

/* Index of the first line of X whose custom id an earlier line has, or
 * X->nlines when they all differ (a hash set: 100,000 lines stay quick).
 * *OOM is set when memory ran out. */
size_t fb_first_duplicate(const fb_batch *x, bool *oom);

/* Asks for the batch X to end at the next tick (a cancel). */
void fb_end_soon(fake_batch *b, fb_batch *x);

/* What happens to line I (0-based) of X as it ends. */
typedef enum { FB_LINE_ANSWER, FB_LINE_FAIL, FB_LINE_EXPIRED, FB_LINE_CANCELLED } fb_line_fate;
fb_line_fate fb_fate(fake_batch *b, const fb_batch *x, size_t i);

/* The value of KEY in a query "a=1&b=2" into OUT (N bytes); false when absent. */
bool fb_query(const char *query, const char *key, char *out, size_t n);
/* limit=N of QUERY, DEF when absent, clamped to [1, MAX]; -1 when not a number. */
long fb_query_limit(const char *query, long def, long max);

/* Answers with J (stolen) as JSON. -1 when J is NULL or memory ran out. */
int fb_reply_json(fake_batch_resp *rs, int status, json_t *j);
/* Answers STATUS with an error in API's envelope. 0 or -1. */
int fb_reply_error(fake_batch *b, fake_batch_resp *rs, fb_api api, int status, const char *type,
                   const char *code, const char *msg);
/* Answers raw bytes of CTYPE (static). 0 or -1. */
int fb_reply_bytes(fake_batch_resp *rs, int status, const char *ctype, const char *p, size_t n);

/* "2026-12-03T10:16:06Z" into OUT. */
void fb_rfc3339(time_t t, char *out, size_t n);

/* ---- the two APIs: route and answer, ending due batches */

/* 1 when RQ was answered into RS, 0 when it is not this API's path, -1 out of memory. */
int fb_openai_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs);
int fb_anthropic_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs);

/* Ends X now (its time has come, or a cancel): answers its lines and keeps
 * the results. 0 or -1 (out of memory: X is unchanged). */
int fb_openai_end(fake_batch *b, fb_batch *x, double now);
int fb_anthropic_end(fake_batch *b, fb_batch *x, double now);

#endif
