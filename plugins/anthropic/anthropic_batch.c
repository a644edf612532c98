/* anthropic_batch.c -- the anthropic provider's Message Batches hooks
 * (ABI 2.4).
 *
 * The API takes the calls inline: POST /messages/batches with
 * {"requests": [{custom_id, params}, ...]}, so there is no upload step
 * (batch_encode answers 1 for UPLOAD and FIND_UPLOAD). It has no names
 * either -- a batch carries no metadata -- so FIND answers 1 as well: a
 * crash after the create was sent and before its answer was recorded can
 * leave one batch the host does not know of. It runs and is billed, and
 * its lines are submitted again in a new batch; nothing is lost, but they
 * are paid twice. The completion window is fixed (24 hours): the deadline
 * the host asks for is not sent. GET /messages/batches/ID tells the state
 * (in_progress, canceling, ended) and, once ended, results_url, an
 * absolute URL whose JSONL has one result per line, every line included:
 * succeeded (the message, as /messages answers it), errored, canceled or
 * expired.
 *
 * Each line is {custom_id, params} with params the body encode sends for
 * the call (never streamed). A call with tools is refused: each turn needs
 * the answer before. A structured output (the schema's forced tool) is
 * fine: it is one turn. A succeeded result is read by the same code as a
 * direct answer (anthropic_decode_body); an errored one is classed by its
 * error type as decode classes it; canceled and expired lines are upstream
 * failures that say so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic_internal.h"
#include "loom/plugin.h"
#include "plugins/http_batch.h"
#include "plugins/http_common.h"

#define PROV "anthropic"

/* ---- lines */

int anthropic_batch_line(loom_ctx *ctx, void *state, const loom_request *req,
                         const char *custom_id, char **line, size_t *len)
{
    const anthropic_state *st = state;
    loom_request one = *req;
    json_t *body, *obj;
    int rc;

    if (loom_hc_batch_line_ok(ctx, PROV, req, custom_id) < 0)
        return -1;
    one.stream = 0;
    if (!(body = anthropic_body(ctx, st, &one)))
        return -1;
    if (!(obj = json_pack("{s:s, s:o}", "custom_id", custom_id, "params", body))) {
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    rc = loom_hc_line_dump(ctx, PROV, obj, line, len);
    json_decref(obj);
    return rc;
}

/* ---- encode */

/* The bytes of LINE that are not blank at either end: *AT and *N. */
static void trim(const char *line, size_t len, size_t *at, size_t *n)
{
    size_t a = 0;

    while (a < len && (line[a] == ' ' || line[a] == '\t' || line[a] == '\r'))
        a++;
    while (len > a && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    *at = a;
    *n = len - a;
}

/* CREATE's body: the JSONL lines of OP (each a {custom_id, params} object
 * batch_line wrote) joined into {"requests": [...]} as they are, without
 * parsing a few hundred megabytes only to print them again. A line that
 * is not an object's text is refused. 0; 1 when a line is malformed or
 * there is none; -1 when out of memory. */
static int put_requests(const loom_batch_op *op, loom_http_request *out)
{
    static const char head[] = "{\"requests\":[", tail[] = "]}";
    const char *p = op->lines, *end = op->lines + op->lines_len;
    size_t n = 0;
    char *w;

    if (!(out->body = malloc(sizeof head + op->lines_len + sizeof tail)))
        return -1;
    w = out->body;
    memcpy(w, head, sizeof head - 1);
    w += sizeof head - 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p), at, k;

        trim(p, len, &at, &k);
        if (k > 0) {
            if (p[at] != '{' || p[at + k - 1] != '}')
                return 1;
            if (n++)
                *w++ = ',';
            memcpy(w, p + at, k);
            w += k;
        }
        p += len + (nl ? 1 : 0);
    }
    if (n == 0)
        return 1;
    memcpy(w, tail, sizeof tail);
    out->body_len = (size_t)(w - out->body) + sizeof tail - 1;
    return 0;
}

/* A results URL from the API is absolute; anything else, or one with
 * bytes a URL cannot hold, is refused rather than sent the key. */
static int results_url_ok(const char *url)
{
    if (!url || (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0))
        return 0;
    for (; *url; url++)
        if ((unsigned char)*url <= ' ' || *url == 0x7f)
            return 0;
    return 1;
}

int anthropic_batch_encode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                           loom_http_request *out)
{
    const anthropic_state *st = state;
    const char *base = st->conf.base;
    int rc = -1;

    switch (op->step) {
    case LOOM_BATCH_UPLOAD:
    case LOOM_BATCH_FIND_UPLOAD:
    case LOOM_BATCH_FIND:
        /* the lines go inline, and a batch has no name to be found by */
        return 1;
    case LOOM_BATCH_CREATE:
        if (!op->lines || op->kind != LOOM_CALL_CHAT) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": a message batch needs chat lines (embeddings are not supported)");
            return -1;
        }
        rc = put_requests(op, out);
        if (rc == 1) {
            loom_hc_request_clear(out);
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": the batch's lines are not one JSON object per line");
            return -1;
        }
        rc = rc < 0 || loom_hc_set_request(out, "POST", "%s/messages/batches", base) < 0 ||
                     loom_hc_add_header(out, "content-type", "application/json") < 0
                 ? -1 : 0;
        break;
    case LOOM_BATCH_RETRIEVE:
    case LOOM_BATCH_CANCEL:
        if (!loom_hc_batch_id_ok(op->batch_id)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": a missing or malformed batch id");
            return -1;
        }
        rc = op->step == LOOM_BATCH_RETRIEVE
                 ? loom_hc_set_request(out, "GET", "%s/messages/batches/%s", base, op->batch_id)
                 : loom_hc_set_request(out, "POST", "%s/messages/batches/%s/cancel", base,
                                       op->batch_id);
        break;
    case LOOM_BATCH_RESULTS:
        if (!results_url_ok(op->url)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST,
                       PROV ": a batch's results_url must be an absolute http(s) URL");
            return -1;
        }
        rc = loom_hc_set_request(out, "GET", "%s", op->url);
        break;
    default:
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": unknown batch step %d", (int)op->step);
        return -1;
    }
    if (rc < 0 || anthropic_auth_headers(st, out) < 0) {
        loom_hc_request_clear(out);
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    return 0;
}

/* ---- decode */

/* A message batch object B (borrowed) into OUT. 0, or -1 after loom_error. */
static int read_batch(loom_ctx *ctx, json_t *b, loom_batch_info *out)
{
    const char *status = json_string_value(json_object_get(b, "processing_status"));
    json_t *counts = json_object_get(b, "request_counts"), *cancel;
    static const char *const kinds[] = { "processing", "succeeded", "errored", "canceled",
                                         "expired" };
    int64_t c[5];
    size_t i;

    if (loom_hc_batch_str(out->id, sizeof out->id, json_object_get(b, "id")) < 0 ||
        !loom_hc_batch_id_ok(out->id) || !status) {
        loom_error(ctx, LOOM_E_UPSTREAM,
                   PROV ": a message batch without a usable id or processing_status");
        return -1;
    }
    for (i = 0; i < 5; i++)
        c[i] = loom_hc_count(counts, kinds[i]);
    if (json_is_object(counts) && c[0] >= 0 && c[1] >= 0 && c[2] >= 0 && c[3] >= 0 && c[4] >= 0) {
        out->total = c[0] + c[1] + c[2] + c[3] + c[4];
        out->done = c[1] + c[2] + c[3] + c[4];
        out->failed = c[2] + c[3] + c[4];
    }
    cancel = json_object_get(b, "cancel_initiated_at");
    if (strcmp(status, "ended") != 0) {
        /* in_progress, canceling, and any status added later: poll on */
        out->state = LOOM_BATCH_RUNNING;
    } else if (cancel && !json_is_null(cancel)) {
        out->state = LOOM_BATCH_CANCELLED;
    } else if (c[4] > 0) {
        out->state = LOOM_BATCH_EXPIRED;
    } else {
        out->state = LOOM_BATCH_ENDED;
    }
    if (loom_hc_batch_str(out->results, sizeof out->results,
                          json_object_get(b, "results_url")) < 0) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": message batch %s has a malformed results_url",
                   out->id);
        return -1;
    }
    return 0;
}

int anthropic_batch_decode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                           const loom_http_response *resp, loom_batch_info *out)
{
    const anthropic_state *st = state;
    int ok = resp->status >= 200 && resp->status <= 299;
    json_t *body;
    int rc = -1;

    /* the results are the host's to read, line by line: not parsed here */
    if (op->step == LOOM_BATCH_RESULTS && ok)
        return 0;
    body = loom_hc_parse_body(resp);
    if (!ok || (json_is_object(body) && json_object_get(body, "error"))) {
        anthropic_fail_error(ctx, st, resp, body);
    } else if (!json_is_object(body)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d with a body that is not a JSON object",
                   resp->status);
    } else if (op->step == LOOM_BATCH_CREATE || op->step == LOOM_BATCH_RETRIEVE ||
               op->step == LOOM_BATCH_CANCEL) {
        rc = read_batch(ctx, body, out);
    } else {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": batch step %d is not one of this API's",
                   (int)op->step);
    }
    json_decref(body);
    return rc;
}

/* ---- results */

/* An errored line's error ({"type": "error", "error": {type, message}} as
 * the API nests it, or the inner object alone), classed as decode classes
 * the same error. Always -1. */
static int line_error(loom_ctx *ctx, const anthropic_state *st, json_t *err)
{
    json_t *inner = json_object_get(err, "error");
    json_t *e = json_is_object(inner) ? inner : err;
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    loom_errcode code = anthropic_classify(0, type, NULL);
    char quoted[LOOM_HC_MSG_MAX + 1];

    loom_hc_server_message(quoted, sizeof quoted, msg ? msg : "", st->conf.key);
    /* a type decode does not know: the server's fault, as after a 200 */
    loom_error(ctx, code == LOOM_OK ? LOOM_E_UPSTREAM : code,
               PROV ": the batch line failed (%s): %s", type ? type : "-", quoted);
    return -1;
}

int anthropic_batch_result(loom_ctx *ctx, void *state, const loom_request *req,
                           const char *line, size_t len, loom_result *out)
{
    const anthropic_state *st = state;
    json_t *v, *result;
    const char *type;
    loom_http_response resp = { .status = 200 };
    int rc = -1;

    loom_hc_result_empty(out);
    if (!(v = loom_hc_line_parse(ctx, PROV, line, len)))
        return -1;
    result = json_object_get(v, "result");
    type = json_string_value(json_object_get(result, "type"));
    if (!type) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": a batch result line without result.type");
    } else if (strcmp(type, "succeeded") == 0) {
        json_t *msg = json_object_get(result, "message");

        /* the message as /messages would have answered it, without headers */
        rc = anthropic_decode_body(ctx, st, req, &resp, json_is_object(msg) ? msg : NULL, out);
    } else if (strcmp(type, "errored") == 0) {
        line_error(ctx, st, json_object_get(result, "error"));
    } else if (strcmp(type, "expired") == 0) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": the batch expired before this line ran");
    } else if (strcmp(type, "canceled") == 0) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": the batch was cancelled before this line ran");
    } else {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": a batch result of unknown type %.40s", type);
    }
    json_decref(v);
    return rc;
}
