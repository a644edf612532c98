/* fake_batch_anthropic.c -- Anthropic's Message Batches endpoints on the fake provider.
 *
 * A batch carries its requests inline ({requests: [{custom_id, params}]}),
 * checked at creation as Anthropic does (custom ids of 1 to 64 characters
 * of [A-Za-z0-9_-], each once; params an object): a bad one refuses the
 * whole create with a 400. While it runs every request counts as
 * "processing"; once "ended", its results are a JSONL file at results_url,
 * one {custom_id, result} per request in creation order, result being
 * {type: succeeded, message}, {type: errored, error: {type: error, error:
 * {type, message}}}, {type: expired} or {type: canceled}. Every endpoint
 * wants x-api-key and anthropic-version, as /v1/messages does. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fake/fake_batch_internal.h"

enum { DAY = 24 * 3600, MAX_CUSTOM_ID = 64 };

static const char ROOT[] = "/v1/messages/batches";

static json_t *rfc_or_null(bool set, time_t t)
{
    char s[32];
    fb_rfc3339(t, s, sizeof s);
    return set ? json_string(s) : json_null();
}

static bool ended(const fb_batch *x)
{
    return x->state != FB_RUNNING && x->state != FB_CANCELLING;
}

/* The batch as the API shows it; results_url is absolute, made from the
 * Host the client used (and https when a TLS proxy said so), so a client
 * follows it to the server it talks to. */
static json_t *batch_json(const fb_batch *x, const fake_batch_req *rq)
{
    json_t *url = json_null();
    if (ended(x)) {
        char u[512];
        int hl = rq->host && rq->host_len < 256 ? (int)rq->host_len : 9;
        snprintf(u, sizeof u, "%s://%.*s%s/%s/results", rq->https ? "https" : "http", hl,
                 rq->host && rq->host_len < 256 ? rq->host : "127.0.0.1", ROOT, x->id);
        url = json_string(u);
    }
    bool end = ended(x);
    return json_pack("{s:s, s:s, s:s, s:{s:I, s:I, s:I, s:I, s:I}, s:o, s:o, s:o, s:n, s:o, s:o}", "id", x->id,
                     "type", "message_batch", "processing_status",
                     x->state == FB_RUNNING ? "in_progress" : x->state == FB_CANCELLING ? "canceling" : "ended",
                     "request_counts", "processing", (json_int_t)(end ? 0 : x->nlines), "succeeded",
                     (json_int_t)x->n_ok, "errored", (json_int_t)x->n_err, "canceled", (json_int_t)x->n_canceled,
                     "expired", (json_int_t)x->n_expired, "ended_at", rfc_or_null(end, x->ended_at), "created_at",
                     rfc_or_null(true, x->created_at), "expires_at", rfc_or_null(true, x->created_at + DAY),
                     "archived_at", "cancel_initiated_at", rfc_or_null(x->cancel_at != 0, x->cancel_at),
                     "results_url", url);
}

static bool good_custom_id(const char *s, size_t n)
{
    if (n == 0 || n > MAX_CUSTOM_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int create(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    json_t *req = json_loadb(rq->body, rq->body_len, 0, NULL);
    json_t *reqs = json_object_get(req, "requests");
    fb_batch *x = NULL;
    char msg[160] = "";
    size_t n = json_array_size(reqs);
    if (!json_is_array(reqs) || n == 0)
        snprintf(msg, sizeof msg, "requests: must be a non-empty array");
    else if (n > ANTHROPIC_MAX_LINES)
        snprintf(msg, sizeof msg, "requests: at most %d requests per batch", ANTHROPIC_MAX_LINES);
    else if (!(x = fb_batch_new(FB_ANTHROPIC, n)))
        goto oom;
    for (size_t i = 0; x && !msg[0] && i < n; i++) {
        json_t *r = json_array_get(reqs, i), *cid = json_object_get(r, "custom_id");
        json_t *params = json_object_get(r, "params");
        if (!json_is_string(cid) || !good_custom_id(json_string_value(cid), json_string_length(cid)))
            snprintf(msg, sizeof msg, "requests.%zu.custom_id: 1 to 64 characters of a-z, A-Z, 0-9, _ and -", i);
        else if (!json_is_object(params))
            snprintf(msg, sizeof msg, "requests.%zu.params: must be an object", i);
        else if (!(x->lines[i].custom_id = strdup(json_string_value(cid))))
            goto oom;
        else
            x->lines[i].req = json_incref(params);
    }
    if (!msg[0]) {
        bool oom = false;
        size_t d = fb_first_duplicate(x, &oom);
        if (oom)
            goto oom;
        if (d < n)
            snprintf(msg, sizeof msg, "requests.%zu.custom_id: '%s' is used more than once", d,
                     x->lines[d].custom_id);
    }
    if (msg[0]) {
        fb_batch_destroy(x);
        json_decref(req);
        return fb_reply_error(b, rs, FB_ANTHROPIC, 400, "invalid_request_error", NULL, msg);
    }
    x->kind = FAKE_BATCH_MESSAGES;
    fb_new_id(b, "msgbatch_", x->id);
    if (fb_batch_add(b, x) < 0)
        goto oom;
    json_decref(req);
    return fb_reply_json(rs, 200, batch_json(x, rq));
oom:
    fb_batch_destroy(x);
    json_decref(req);
    return -1;
}

/* GET: newest first; after_id=ID pages to older ones, before_id=ID to newer
 * ones; limit=N (default 20, at most 1000). */
static int list(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    char after[FB_ID_MAX] = "", before[FB_ID_MAX] = "";
    (void)fb_query(rq->query, "after_id", after, sizeof after);
    (void)fb_query(rq->query, "before_id", before, sizeof before);
    long limit = fb_query_limit(rq->query, 20, 1000);
    if (limit < 0)
        return fb_reply_error(b, rs, FB_ANTHROPIC, 400, "invalid_request_error", NULL, "limit: must be a number");
    /* the newest-first sequence, cut after AFTER and before BEFORE */
    size_t lo = 0, hi = b->nbatches; /* indexes in creation order: [lo, hi) */
    for (size_t i = 0; i < b->nbatches; i++) {
        if (after[0] && !strcmp(b->batches[i]->id, after))
            hi = i;
        if (before[0] && !strcmp(b->batches[i]->id, before))
            lo = i + 1;
    }
    json_t *data = json_array();
    bool more = false;
    for (size_t k = hi; data && k-- > lo;) {
        const fb_batch *x = b->batches[k];
        if (x->api != FB_ANTHROPIC)
            continue;
        if ((long)json_array_size(data) == limit) {
            more = true;
            break;
        }
        if (json_array_append_new(data, batch_json(x, rq))) {
            json_decref(data);
            return -1;
        }
    }
    if (!data)
        return -1;
    size_t cnt = json_array_size(data);
    json_t *first = json_object_get(json_array_get(data, 0), "id");
    json_t *last = json_object_get(json_array_get(data, cnt ? cnt - 1 : 0), "id");
    b->lists++;
    return fb_reply_json(rs, 200, json_pack("{s:o, s:b, s:O?, s:O?}", "data", data, "has_more", more,
                                            "first_id", first, "last_id", last));
}

static int cancel(fake_batch *b, fb_batch *x, const fake_batch_req *rq, fake_batch_resp *rs)
{
    if (x->state == FB_RUNNING) {
        x->done_at_cancel = fb_done_now(x, fb_now());
        x->state = FB_CANCELLING;
        x->cancel_at = time(NULL);
        fb_end_soon(b, x);
    } else if (x->cancel_at == 0) {
        return fb_reply_error(b, rs, FB_ANTHROPIC, 400, "invalid_request_error", NULL,
                              "this batch has ended: it can no longer be canceled");
    }
    b->cancels++;
    return fb_reply_json(rs, 200, batch_json(x, rq));
}

static int batch_op(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs, const char *id, const char *rest)
{
    bool get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    bool del = !strcmp(rq->method, "DELETE");
    if (!(get && (!*rest || !strcmp(rest, "/results"))) && !(post && !strcmp(rest, "/cancel")) && !(del && !*rest))
        return 0;
    fb_batch *x = fb_batch_find(b, FB_ANTHROPIC, id);
    int r;
    if (!x) {
        r = fb_reply_error(b, rs, FB_ANTHROPIC, 404, "not_found_error", NULL, "no such message batch");
    } else if (post) {
        r = cancel(b, x, rq, rs);
    } else if (del) {
        if (!ended(x)) {
            r = fb_reply_error(b, rs, FB_ANTHROPIC, 400, "invalid_request_error", NULL,
                               "a batch must end (or be canceled) before it is deleted");
        } else {
            r = fb_reply_json(rs, 200, json_pack("{s:s, s:s}", "id", x->id, "type", "message_batch_deleted"));
            for (size_t i = 0; i < b->nbatches; i++)
                if (b->batches[i] == x) {
                    memmove(&b->batches[i], &b->batches[i + 1], (b->nbatches - i - 1) * sizeof *b->batches);
                    b->nbatches--;
                    break;
                }
            fb_batch_destroy(x);
        }
    } else if (*rest) {
        if (!ended(x)) {
            r = fb_reply_error(b, rs, FB_ANTHROPIC, 400, "invalid_request_error", NULL,
                               "this batch is still processing: its results are not ready");
        } else {
            b->results++;
            r = fb_reply_bytes(rs, 200, "application/x-jsonl", x->results.p ? x->results.p : "", x->results.len);
        }
    } else {
        b->polls++;
        r = fb_reply_json(rs, 200, batch_json(x, rq));
    }
    return r < 0 ? -1 : 1;
}

/* ---- ending a batch */

static json_t *errored(const char *type, const char *msg)
{
    return json_pack("{s:s, s:{s:s, s:{s:s, s:s}}}", "type", "errored", "error", "type", "error", "error", "type",
                     type, "message", msg);
}

int fb_anthropic_end(fake_batch *b, fb_batch *x, double now)
{
    (void)now;
    fb_buf out = { 0 };
    size_t n_ok = 0, n_err = 0, n_exp = 0, n_can = 0, n_failed = 0;
    for (size_t i = 0; i < x->nlines; i++) {
        fb_line *l = &x->lines[i];
        json_t *result;
        switch (fb_fate(b, x, i)) {
        case FB_LINE_CANCELLED:
            result = json_pack("{s:s}", "type", "canceled");
            n_can++;
            break;
        case FB_LINE_EXPIRED:
            result = json_pack("{s:s}", "type", "expired");
            n_exp++;
            break;
        case FB_LINE_FAIL:
            result = errored("api_error", "injected batch line failure");
            n_err++;
            n_failed++;
            break;
        default: {
            json_t *body = NULL;
            char msg[256] = "";
            int st = b->o.answer(b->o.answer_ctx, x->kind, l->req, &body, msg, sizeof msg);
            if (st < 0)
                goto oom;
            if (st == 200) {
                result = json_pack("{s:s, s:o}", "type", "succeeded", "message", body);
                n_ok++;
            } else {
                result = errored("invalid_request_error", msg[0] ? msg : "invalid request");
                n_err++;
            }
            break;
        }
        }
        json_t *line = result ? json_pack("{s:s, s:o}", "custom_id", l->custom_id, "result", result) : NULL;
        bool ok = line && fb_buf_add_line(&out, line);
        json_decref(line);
        if (!ok)
            goto oom;
    }
    fb_buf_free(&x->results);
    x->results = out;
    x->n_ok = n_ok;
    x->n_err = n_err;
    x->n_expired = n_exp;
    x->n_canceled = n_can;
    b->line_failures += (long)n_failed;
    x->state = x->state == FB_CANCELLING ? FB_CANCELLED : x->expires ? FB_EXPIRED : FB_COMPLETED;
    x->ended_at = time(NULL);
    for (size_t i = 0; i < x->nlines; i++) {
        json_decref(x->lines[i].req);
        x->lines[i].req = NULL;
    }
    return 0;
oom:
    fb_buf_free(&out);
    return -1;
}

/* ---- routing */

int fb_anthropic_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    size_t rl = sizeof ROOT - 1;
    if (strncmp(rq->path, ROOT, rl) || (rq->path[rl] != 0 && rq->path[rl] != '/'))
        return 0;
    if (!rq->has_key || !rq->has_version) {
        const char *m = !rq->has_key ? "x-api-key header is required" : "anthropic-version header is required";
        return fb_reply_error(b, rs, FB_ANTHROPIC, 401, "authentication_error", NULL, m) < 0 ? -1 : 1;
    }
    bool get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    if (rq->path[rl] == 0) {
        int r = post ? create(b, rq, rs) : get ? list(b, rq, rs) : 0;
        return !post && !get ? 0 : r < 0 ? -1 : 1;
    }
    const char *s = rq->path + rl + 1, *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || n >= FB_ID_MAX)
        return 0;
    char id[FB_ID_MAX];
    memcpy(id, s, n);
    id[n] = 0;
    return batch_op(b, rq, rs, id, s + n);
}
