/* upstream_stream.c -- streamed answers: an HTTP provider's chat call asked
 * for as server-sent events while someone reads its tokens.
 *
 * The host frames the events (sse.c) as the body arrives and hands each to
 * the plugin's stream hook, which says what it means: text, usage counts,
 * the end, or a typed failure. The text is passed to the call's token
 * reader at once and kept, so that the call ends exactly as an unstreamed
 * one would: the whole output and the usage, delivered by xfer_answer,
 * which feeds the limiter and the stats the same way. What can only happen
 * to a stream is classed here: cut off (the connection dropped, or it ended
 * without its end event) is `upstream`, retryable; a timeout is `timeout`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/upstream/sse.h"
#include "daemon/upstream/upstream_internal.h"

typedef struct xstream {
    sse_parser sse;
    sbuf text;                 /* the answer so far */
    loom_usage usage;          /* the last count of each kind */
    bool done;                 /* the end event came */
    uctx ctx;                  /* the plugin's failure, when it reported one */
} xstream;

bool xfer_wants_stream(const xfer *x)
{
    const upstream_t *u = x->u;
    /* tool calls and structured outputs are asked for whole: a stream
     * hook hands the host text only (loom_stream_delta), never tool calls */
    if (!u->http || !u->def->stream || x->kind != LOOM_CALL_CHAT || x->nparts != 1 ||
        x->tools || x->schema)
        return false;
    const upstream_call_t *c = x->parts[0].call;
    return c && !c->finished && c->token;
}

void xfer_stream_free(xfer *x)
{
    xstream *s = x->stream;
    if (!s)
        return;
    sse_fini(&s->sse);
    sbuf_free(&s->text);
    free(s);
    x->stream = NULL;
}

/* Counts of D that are known replace those of S. */
static void usage_merge(loom_usage *s, const loom_usage *d)
{
    if (d->input_tokens >= 0)
        s->input_tokens = d->input_tokens;
    if (d->output_tokens >= 0)
        s->output_tokens = d->output_tokens;
    if (d->cache_read_tokens >= 0)
        s->cache_read_tokens = d->cache_read_tokens;
    if (d->cache_write_tokens >= 0)
        s->cache_write_tokens = d->cache_write_tokens;
}

/* One framed event: through the plugin, its text to the reader. Nonzero
 * stops the stream (the plugin failed it, or memory ran out). */
static int on_event(void *ud, const char *name, const char *data, size_t len)
{
    xfer *x = ud;
    xstream *s = x->stream;
    upstream_t *u = x->u;
    if (s->done)
        return 0; /* nothing after the end counts */
    loom_request req;
    loom_sse_event ev = { .event = name, .data = data, .data_len = len };
    loom_stream_delta d;
    memset(&d, 0, sizeof d);
    memset(&d.usage, 0xff, sizeof d.usage); /* every count -1: not given */
    uctx_init(&s->ctx, u);
    if (xfer_request(x, &req, false) < 0 || u->def->stream(&s->ctx.base, u->state, &req, &ev, &d) < 0) {
        json_decref(d.text);
        if (!s->ctx.failed) {
            s->ctx.failed = true;
            s->ctx.code = LOOM_E_UPSTREAM;
            snprintf(s->ctx.msg, sizeof s->ctx.msg, "a streamed event could not be read");
        }
        return 1;
    }
    usage_merge(&s->usage, &d.usage);
    s->done = d.done != 0;
    if (d.finish_reason[0]) {
        memcpy(x->finish_reason, d.finish_reason, sizeof x->finish_reason);
        x->finish_reason[sizeof x->finish_reason - 1] = '\0';
    }
    if (!json_is_string(d.text)) {
        json_decref(d.text);
        return 0;
    }
    const char *t = json_string_value(d.text);
    size_t n = json_string_length(d.text);
    int rc = n ? sbuf_add(&s->text, t, n) : 0;
    upstream_call_t *c = x->parts[0].call;
    if (rc == 0 && n && c && !c->finished && !c->first_token_us) {
        struct timespec ts; /* time to first token, for metrics */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        c->first_token_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    }
    if (rc == 0 && n && c && !c->finished && c->token)
        c->token(c->token_ud, t, n);
    json_decref(d.text);
    if (rc < 0) {
        s->ctx.failed = true;
        s->ctx.code = LOOM_E_NOMEM;
        snprintf(s->ctx.msg, sizeof s->ctx.msg, "out of memory reading a streamed answer");
        return 1;
    }
    return 0;
}

static int on_data(void *ud, const char *data, size_t len)
{
    xfer *x = ud;
    int rc = sse_feed(&x->stream->sse, data, len, on_event, x);
    if (rc < 0 && !x->stream->ctx.failed) {
        xstream *s = x->stream;
        s->ctx.failed = true;
        s->ctx.code = rc == -E2BIG ? LOOM_E_UPSTREAM : LOOM_E_NOMEM;
        snprintf(s->ctx.msg, sizeof s->ctx.msg, "%s",
                 rc == -E2BIG ? "a streamed event is larger than the body limit"
                              : "out of memory reading a streamed answer");
    }
    return rc != 0;
}

int xfer_stream_begin(xfer *x, http_call_opts *o)
{
    xfer_stream_free(x); /* a request sent again after a 429 starts afresh */
    x->finish_reason[0] = '\0';
    xstream *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    /* an event never outgrows the body it is part of */
    sse_init(&s->sse, 0);
    sbuf_init(&s->text, 0);
    memset(&s->usage, 0xff, sizeof s->usage); /* every count -1: unknown */
    x->stream = s;
    o->on_data = on_data;
    o->data_ud = x;
    return 0;
}

void xfer_stream_end(xfer *x, const http_response *resp, uint64_t latency_ms)
{
    xstream *s = x->stream;
    char msg[256];
    if (!s) { /* cannot happen: only a stream's call streams */
        xfer_answer(x, NULL, NULL, LOOM_E_UPSTREAM, "a stream without its reader", false, 0,
                    false, latency_ms);
        return;
    }
    if (s->ctx.failed) {
        /* msg lives in the stream, which outlives the answer's handling */
        xfer_answer(x, NULL, NULL, s->ctx.code, s->ctx.msg, s->ctx.has_ra, s->ctx.ra_ms, false,
                    latency_ms);
        return;
    }
    if (resp->outcome != HTTP_OK || !s->done) {
        if (resp->outcome != HTTP_OK)
            snprintf(msg, sizeof msg, "the stream was cut off: %s (%s)",
                     resp->error ? resp->error : "HTTP failed", http_outcome_name(resp->outcome));
        else
            snprintf(msg, sizeof msg, "the stream ended before its end event");
        xfer_answer(x, NULL, NULL,
                    resp->outcome != HTTP_OK ? http_outcome_code(resp->outcome) : LOOM_E_UPSTREAM,
                    msg, false, 0, false, latency_ms);
        return;
    }
    json_t *out = json_stringn(s->text.p ? s->text.p : "", s->text.n);
    if (!out) {
        /* json_stringn refuses invalid UTF-8 as well as failing to allocate */
        xfer_answer(x, NULL, NULL, LOOM_E_UPSTREAM, "the streamed text is not valid UTF-8",
                    false, 0, false, latency_ms);
        return;
    }
    loom_usage use = s->usage;
    xfer_answer(x, out, &use, LOOM_OK, NULL, false, 0, false, latency_ms);
}

/* Also for answers never asked for as streams (a provider that cannot
 * stream, a transport): a token reader always gets the whole text. */
void xfer_stream_whole(xfer *x, json_t *output)
{
    upstream_call_t *c = x->nparts == 1 ? x->parts[0].call : NULL;
    if (c && !c->finished && c->token && json_is_string(output) && json_string_length(output))
        c->token(c->token_ud, json_string_value(output), json_string_length(output));
}
