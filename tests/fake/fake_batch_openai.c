/* fake_batch_openai.c -- OpenAI's Files and Batch endpoints on the fake provider.
 *
 * A batch's input is a file of JSONL lines {custom_id, method, url, body}
 * uploaded as multipart/form-data. It is checked when the batch is created,
 * as OpenAI does while "validating": a bad file makes a batch that is
 * "failed" with the reasons in `errors`. When the batch ends, the answers
 * go to an output file (status 200) and an error file (every other line),
 * each line {id, custom_id, response: {status_code, request_id, body},
 * error}; lines of an expired batch past its first half are in the error
 * file with response null and error.code "batch_expired"; lines a cancel
 * stopped are in neither. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fake/fake_batch_internal.h"
#include "tests/fake/fake_multipart.h"

enum {
    MAX_ERRORS = 100,           /* validation errors reported per batch */
    MAX_METADATA = 16,          /* pairs, as OpenAI allows */
    DAY = 24 * 3600,
};

static const char *state_name(fb_state s)
{
    switch (s) {
    case FB_RUNNING: return "in_progress";
    case FB_CANCELLING: return "cancelling";
    case FB_COMPLETED: return "completed";
    case FB_FAILED: return "failed";
    case FB_EXPIRED: return "expired";
    case FB_CANCELLED: return "cancelled";
    }
    return "failed";
}

/* A time when SET, else null. */
static json_t *when(bool set, time_t t)
{
    return set ? json_integer((json_int_t)t) : json_null();
}

static json_t *id_or_null(const char *id)
{
    return id[0] ? json_string(id) : json_null();
}

static json_t *file_json(const fb_file *f)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "id", f->id, "object", "file", "bytes",
                     (json_int_t)f->data.len, "created_at", (json_int_t)f->created_at, "filename", f->filename,
                     "purpose", f->purpose, "status", "processed");
}

static json_t *batch_json(fake_batch *b, const fb_batch *x, double now)
{
    size_t done = fb_done_now(x, now), ok, failed;
    if (x->state == FB_RUNNING || x->state == FB_CANCELLING) {
        failed = fb_failing(b, done);
        ok = done - failed;
    } else {
        ok = x->n_ok;
        failed = x->n_err + x->n_expired;
    }
    bool ended = !(x->state == FB_RUNNING || x->state == FB_CANCELLING);
    time_t c = x->created_at;
    return json_pack("{s:s, s:s, s:s, s:O?, s:s, s:s, s:s, s:o, s:o, s:I, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:o,"
                     " s:{s:I, s:I, s:I}, s:O?}",
                     "id", x->id, "object", "batch", "endpoint",
                     x->kind == FAKE_BATCH_EMBEDDINGS ? "/v1/embeddings" : "/v1/chat/completions", "errors",
                     x->errors, "input_file_id", x->input_file_id, "completion_window", "24h", "status",
                     state_name(x->state), "output_file_id", id_or_null(x->output_file_id), "error_file_id",
                     id_or_null(x->error_file_id), "created_at", (json_int_t)c, "in_progress_at",
                     when(x->state != FB_FAILED, c), "expires_at", (json_int_t)(c + DAY), "finalizing_at",
                     when(ended && x->state == FB_COMPLETED, x->ended_at), "completed_at",
                     when(x->state == FB_COMPLETED, x->ended_at), "failed_at", when(x->state == FB_FAILED, c),
                     "expired_at", when(x->state == FB_EXPIRED, x->ended_at), "cancelling_at",
                     when(x->cancel_at != 0, x->cancel_at), "cancelled_at",
                     when(x->state == FB_CANCELLED, x->ended_at), "request_counts", "total",
                     (json_int_t)(x->state == FB_FAILED ? 0 : x->nlines), "completed", (json_int_t)ok, "failed",
                     (json_int_t)failed, "metadata", x->metadata);
}

/* ---- files */

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

static int upload(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    fake_part purpose, file;
    int hp = rq->content_type ? fake_multipart_find(rq->content_type, rq->content_type_len, rq->body,
                                                    rq->body_len, "purpose", &purpose)
                              : -1;
    int hf = hp < 0 ? -1 : fake_multipart_find(rq->content_type, rq->content_type_len, rq->body, rq->body_len,
                                               "file", &file);
    if (hp < 0 || hf < 0)
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", NULL,
                              "the body must be multipart/form-data with a boundary");
    if (hp == 0 || purpose.len == 0)
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", "missing_required_parameter",
                              "'purpose' is required");
    if (hf == 0 || !file.filename || file.filename_len == 0)
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", "missing_required_parameter",
                              "'file' is required, with a filename");
    fb_buf data = { 0 };
    char *name = dup_n(file.filename, file.filename_len), *purp = dup_n(purpose.data, purpose.len);
    fb_file *f = NULL;
    if (name && purp && fb_buf_add(&data, file.data, file.len))
        f = fb_file_add(b, name, purp, &data);
    if (!f) {
        free(name);
        free(purp);
        fb_buf_free(&data);
        return -1;
    }
    b->uploads++;
    return fb_reply_json(rs, 200, file_json(f));
}

/* GET /v1/files: newest first (order=asc for oldest first), purpose=P
 * filters, after=ID pages on, limit=N (default 10000). */
static int list_files(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    char purpose[64] = "", after[FB_ID_MAX] = "", order[8] = "desc";
    (void)fb_query(rq->query, "purpose", purpose, sizeof purpose);
    (void)fb_query(rq->query, "after", after, sizeof after);
    (void)fb_query(rq->query, "order", order, sizeof order);
    long limit = fb_query_limit(rq->query, 10000, 10000);
    if (limit < 0)
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", NULL, "limit must be a number");
    bool asc = !strcmp(order, "asc");
    json_t *data = json_array();
    bool skipping = after[0] != 0, more = false;
    for (size_t k = 0; data && k < b->nfiles; k++) {
        const fb_file *f = b->files[asc ? k : b->nfiles - 1 - k];
        if (skipping) {
            skipping = strcmp(f->id, after) != 0;
            continue;
        }
        if (purpose[0] && strcmp(f->purpose, purpose))
            continue;
        if ((long)json_array_size(data) == limit) {
            more = true;
            break;
        }
        if (json_array_append_new(data, file_json(f))) {
            json_decref(data);
            return -1;
        }
    }
    if (!data)
        return -1;
    size_t n = json_array_size(data);
    json_t *first = json_object_get(json_array_get(data, 0), "id");
    json_t *last = json_object_get(json_array_get(data, n ? n - 1 : 0), "id");
    b->lists++;
    return fb_reply_json(rs, 200, json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data,
                                            "first_id", first, "last_id", last, "has_more", more));
}

static int file_op(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs, const char *id, const char *rest)
{
    fb_file *f = fb_file_find(b, id);
    bool get = !strcmp(rq->method, "GET");
    if (!(get && (!*rest || !strcmp(rest, "/content"))) && !(!strcmp(rq->method, "DELETE") && !*rest))
        return 0;
    int r;
    if (!f) {
        char msg[128];
        snprintf(msg, sizeof msg, "No such File object: %s", id);
        r = fb_reply_error(b, rs, FB_OPENAI, 404, "invalid_request_error", NULL, msg);
    } else if (get && *rest) {
        b->results++;
        r = fb_reply_bytes(rs, 200, "application/octet-stream", f->data.p ? f->data.p : "", f->data.len);
    } else if (get) {
        r = fb_reply_json(rs, 200, file_json(f));
    } else {
        r = fb_reply_json(rs, 200, json_pack("{s:s, s:s, s:b}", "id", f->id, "object", "file", "deleted", 1));
        fb_file_remove(b, f);
    }
    return r < 0 ? -1 : 1;
}

/* ---- validation of an input file */

/* Adds a validation error for LINE (1-based; 0: the file) to ERRS. */
static bool add_error(json_t *errs, const char *code, const char *msg, size_t line)
{
    if (json_array_size(errs) >= MAX_ERRORS)
        return true;
    return json_array_append_new(errs, json_pack("{s:s, s:s, s:n, s:o}", "code", code, "message", msg, "param",
                                                 "line", line ? json_integer((json_int_t)line) : json_null())) == 0;
}

/* Reads the lines of F into X (made here, *XP), checking each as OpenAI
 * does: problems go to ERRS. -1 only when memory ran out. */
static int read_lines(const fb_file *f, const char *endpoint, fb_batch **xp, json_t *errs)
{
    const char *p = f->data.p ? f->data.p : "", *end = p + f->data.len;
    size_t n = 0;
    for (const char *q = p; q < end;) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        const char *le = nl ? nl : end;
        for (const char *c = q; c < le; c++)
            if (*c != ' ' && *c != '\t' && *c != '\r') {
                n++;
                break;
            }
        q = le + 1;
    }
    if (n > OPENAI_MAX_LINES) {
        char msg[96];
        snprintf(msg, sizeof msg, "the file has %zu requests; at most %d are allowed", n, OPENAI_MAX_LINES);
        return add_error(errs, "too_many_requests", msg, 0) ? 0 : -1;
    }
    if (n == 0)
        return add_error(errs, "empty_file", "the input file has no requests", 0) ? 0 : -1;
    fb_batch *x = fb_batch_new(FB_OPENAI, n);
    if (!x)
        return -1;
    *xp = x;
    size_t k = 0, lineno = 0;
    for (const char *q = p; q < end && k < n; ) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        const char *le = nl ? nl : end;
        const char *line = q;
        q = le + 1;
        lineno++;
        const char *c = line;
        while (c < le && (*c == ' ' || *c == '\t' || *c == '\r'))
            c++;
        if (c == le)
            continue;
        json_t *j = json_loadb(line, (size_t)(le - line), 0, NULL);
        json_t *cid = json_object_get(j, "custom_id"), *body = json_object_get(j, "body");
        const char *method = json_string_value(json_object_get(j, "method"));
        const char *url = json_string_value(json_object_get(j, "url"));
        bool ok = true;
        if (!json_is_object(j))
            ok = add_error(errs, "invalid_json_line", "this line is not a JSON object", lineno);
        else if (!json_is_string(cid) || json_string_length(cid) == 0)
            ok = add_error(errs, "missing_required_parameter", "custom_id must be a non-empty string", lineno);
        else if (!method || strcmp(method, "POST"))
            ok = add_error(errs, "invalid_method", "method must be POST", lineno);
        else if (!url || strcmp(url, endpoint))
            ok = add_error(errs, "invalid_url", "url must be the batch's endpoint", lineno);
        else if (!json_is_object(body))
            ok = add_error(errs, "invalid_request", "body must be a JSON object", lineno);
        else if (!(x->lines[k].custom_id = strdup(json_string_value(cid))))
            ok = false;
        else
            x->lines[k++].req = json_incref(body);
        json_decref(j);
        if (!ok)
            return -1;
    }
    x->nlines = k; /* the lines that failed their check were not kept */
    if (json_array_size(errs) == 0) {
        bool oom = false;
        size_t d = fb_first_duplicate(x, &oom);
        if (oom)
            return -1;
        if (d < x->nlines) {
            char msg[128];
            snprintf(msg, sizeof msg, "custom_id '%.80s' is used more than once", x->lines[d].custom_id);
            if (!add_error(errs, "duplicate_custom_id", msg, 0))
                return -1;
        }
    }
    return 0;
}

/* ---- batches */

static int create(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    json_t *req = json_loadb(rq->body, rq->body_len, 0, NULL);
    const char *fid = json_string_value(json_object_get(req, "input_file_id"));
    const char *ep = json_string_value(json_object_get(req, "endpoint"));
    const char *win = json_string_value(json_object_get(req, "completion_window"));
    json_t *meta = json_object_get(req, "metadata");
    const char *bad = !json_is_object(req) ? "the body must be a JSON object"
                      : !fid ? "'input_file_id' is required"
                      : !ep || (strcmp(ep, "/v1/chat/completions") && strcmp(ep, "/v1/embeddings"))
                          ? "'endpoint' must be /v1/chat/completions or /v1/embeddings"
                      : !win || strcmp(win, "24h") ? "'completion_window' must be 24h"
                      : meta && !json_is_object(meta) && !json_is_null(meta) ? "'metadata' must be an object"
                                                                              : NULL;
    if (!bad && json_is_object(meta)) {
        const char *k;
        json_t *v;
        if (json_object_size(meta) > MAX_METADATA)
            bad = "'metadata' has at most 16 pairs";
        json_object_foreach(meta, k, v) {
            if (strlen(k) > 64 || !json_is_string(v) || json_string_length(v) > 512)
                bad = "'metadata' values are strings of at most 512 characters, keys at most 64";
        }
    }
    const fb_file *f = bad ? NULL : fb_file_find(b, fid);
    if (!bad && (!f || strcmp(f->purpose, "batch")))
        bad = f ? "the input file's purpose must be batch" : "no such input file";
    if (bad) {
        json_decref(req);
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", NULL, bad);
    }
    json_t *errs = json_array();
    fb_batch *x = NULL;
    if (!errs || read_lines(f, ep, &x, errs) < 0)
        goto oom;
    if (json_array_size(errs) > 0) {
        /* as OpenAI does once validation fails: a failed batch, no lines */
        fb_batch_destroy(x);
        if (!(x = fb_batch_new(FB_OPENAI, 0)))
            goto oom;
        x->state = FB_FAILED;
        if (!(x->errors = json_pack("{s:s, s:O}", "object", "list", "data", errs)))
            goto oom;
    }
    x->kind = !strcmp(ep, "/v1/embeddings") ? FAKE_BATCH_EMBEDDINGS : FAKE_BATCH_CHAT;
    snprintf(x->input_file_id, sizeof x->input_file_id, "%s", fid);
    if (json_is_object(meta))
        x->metadata = json_deep_copy(meta);
    if ((json_is_object(meta) && !x->metadata))
        goto oom;
    fb_new_id(b, "batch_", x->id);
    if (fb_batch_add(b, x) < 0)
        goto oom;
    json_decref(errs);
    json_decref(req);
    return fb_reply_json(rs, 200, batch_json(b, x, fb_now()));
oom:
    fb_batch_destroy(x);
    json_decref(errs);
    json_decref(req);
    return -1;
}

/* GET /v1/batches: newest first, after=ID pages on, limit=N (default 20, at most 100). */
static int list_batches(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    char after[FB_ID_MAX] = "";
    (void)fb_query(rq->query, "after", after, sizeof after);
    long limit = fb_query_limit(rq->query, 20, 100);
    if (limit < 0)
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", NULL, "limit must be a number");
    double now = fb_now();
    json_t *data = json_array();
    bool skipping = after[0] != 0, more = false;
    for (size_t k = b->nbatches; data && k-- > 0;) {
        const fb_batch *x = b->batches[k];
        if (x->api != FB_OPENAI)
            continue;
        if (skipping) {
            skipping = strcmp(x->id, after) != 0;
            continue;
        }
        if ((long)json_array_size(data) == limit) {
            more = true;
            break;
        }
        if (json_array_append_new(data, batch_json(b, x, now))) {
            json_decref(data);
            return -1;
        }
    }
    if (!data)
        return -1;
    size_t n = json_array_size(data);
    json_t *first = json_object_get(json_array_get(data, 0), "id");
    json_t *last = json_object_get(json_array_get(data, n ? n - 1 : 0), "id");
    b->lists++;
    return fb_reply_json(rs, 200, json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data,
                                            "first_id", first, "last_id", last, "has_more", more));
}

static int cancel(fake_batch *b, fb_batch *x, fake_batch_resp *rs)
{
    double now = fb_now();
    if (x->state == FB_RUNNING) {
        x->done_at_cancel = fb_done_now(x, now);
        x->state = FB_CANCELLING;
        x->cancel_at = time(NULL);
        fb_end_soon(b, x);
    } else if (x->state != FB_CANCELLING && x->state != FB_CANCELLED) {
        char msg[96];
        snprintf(msg, sizeof msg, "Cannot cancel a batch with status '%s'.", state_name(x->state));
        return fb_reply_error(b, rs, FB_OPENAI, 400, "invalid_request_error", NULL, msg);
    }
    b->cancels++;
    return fb_reply_json(rs, 200, batch_json(b, x, now));
}

static int batch_op(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs, const char *id, const char *rest)
{
    bool get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    if (!(get && !*rest) && !(post && !strcmp(rest, "/cancel")))
        return 0;
    fb_batch *x = fb_batch_find(b, FB_OPENAI, id);
    int r;
    if (!x) {
        char msg[128];
        snprintf(msg, sizeof msg, "No batch found with id '%s'.", id);
        r = fb_reply_error(b, rs, FB_OPENAI, 404, "invalid_request_error", NULL, msg);
    } else if (post) {
        r = cancel(b, x, rs);
    } else {
        b->polls++;
        r = fb_reply_json(rs, 200, batch_json(b, x, fb_now()));
    }
    return r < 0 ? -1 : 1;
}

/* ---- ending a batch */

static json_t *error_body(const char *type, const char *msg)
{
    return json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", msg, "type", type, "param", "code");
}

/* One output line of X: the answer BODY (stolen) with STATUS; NULL BODY with
 * STATUS 0 is an expired line. */
static json_t *result_line(fake_batch *b, const char *custom_id, int status, json_t *body)
{
    char id[FB_ID_MAX], rid[FB_ID_MAX];
    fb_new_id(b, "batch_req_", id);
    fb_new_id(b, "req_", rid);
    if (status == 0)
        return json_pack("{s:s, s:s, s:n, s:{s:s, s:s}}", "id", id, "custom_id", custom_id, "response", "error",
                         "code", "batch_expired", "message",
                         "This request could not be executed before the completion window expired.");
    return json_pack("{s:s, s:s, s:{s:i, s:s, s:o}, s:n}", "id", id, "custom_id", custom_id, "response",
                     "status_code", status, "request_id", rid, "body", body, "error");
}

int fb_openai_end(fake_batch *b, fb_batch *x, double now)
{
    (void)now;
    fb_buf out = { 0 }, err = { 0 };
    size_t n_ok = 0, n_err = 0, n_exp = 0, n_failed = 0;
    char *out_name = NULL, *err_name = NULL, *out_purp = NULL, *err_purp = NULL;
    for (size_t i = 0; i < x->nlines; i++) {
        fb_line *l = &x->lines[i];
        fb_line_fate fate = fb_fate(b, x, i);
        if (fate == FB_LINE_CANCELLED)
            continue; /* never run: in neither file */
        json_t *line;
        bool ok = false;
        if (fate == FB_LINE_EXPIRED) {
            line = result_line(b, l->custom_id, 0, NULL);
            n_exp++;
        } else if (fate == FB_LINE_FAIL) {
            line = result_line(b, l->custom_id, 500, error_body("server_error", "injected batch line failure"));
            n_err++;
            n_failed++;
        } else {
            json_t *body = NULL;
            char msg[256] = "";
            int st = b->o.answer(b->o.answer_ctx, x->kind, l->req, &body, msg, sizeof msg);
            if (st < 0)
                goto oom;
            ok = st == 200;
            line = result_line(b, l->custom_id, st,
                               ok ? body : error_body("invalid_request_error", msg[0] ? msg : "invalid request"));
            if (ok)
                n_ok++;
            else
                n_err++;
        }
        if (!line || !fb_buf_add_line(ok ? &out : &err, line)) {
            json_decref(line);
            goto oom;
        }
        json_decref(line);
    }
    char name[2 * FB_ID_MAX];
    if (out.len) {
        snprintf(name, sizeof name, "%s_output.jsonl", x->id);
        fb_file *f = (out_name = strdup(name)) && (out_purp = strdup("batch_output"))
                         ? fb_file_add(b, out_name, out_purp, &out)
                         : NULL;
        if (!f)
            goto oom;
        out_name = out_purp = NULL;
        snprintf(x->output_file_id, sizeof x->output_file_id, "%s", f->id);
    }
    if (err.len) {
        snprintf(name, sizeof name, "%s_error.jsonl", x->id);
        fb_file *f = (err_name = strdup(name)) && (err_purp = strdup("batch_output"))
                         ? fb_file_add(b, err_name, err_purp, &err)
                         : NULL;
        if (!f) {
            /* the batch runs on: its output file is made again next time */
            fb_file *o = x->output_file_id[0] ? fb_file_find(b, x->output_file_id) : NULL;
            if (o)
                fb_file_remove(b, o);
            x->output_file_id[0] = 0;
            goto oom;
        }
        err_name = err_purp = NULL;
        snprintf(x->error_file_id, sizeof x->error_file_id, "%s", f->id);
    }
    x->n_ok = n_ok;
    x->n_err = n_err;
    x->n_expired = n_exp;
    b->line_failures += (long)n_failed;
    x->state = x->state == FB_CANCELLING ? FB_CANCELLED : x->expires ? FB_EXPIRED : FB_COMPLETED;
    x->ended_at = time(NULL);
    for (size_t i = 0; i < x->nlines; i++) {
        json_decref(x->lines[i].req);
        x->lines[i].req = NULL;
    }
    return 0;
oom:
    free(out_name);
    free(out_purp);
    free(err_name);
    free(err_purp);
    fb_buf_free(&out);
    fb_buf_free(&err);
    return -1;
}

/* ---- routing */

/* The id after ROOT + '/' in PATH into ID, and what follows it. */
static bool split(const char *path, const char *root, char *id, const char **rest)
{
    size_t rl = strlen(root);
    if (strncmp(path, root, rl) || path[rl] != '/')
        return false;
    const char *s = path + rl + 1, *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || n >= FB_ID_MAX)
        return false;
    memcpy(id, s, n);
    id[n] = 0;
    *rest = s + n;
    return true;
}

int fb_openai_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    bool get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    char id[FB_ID_MAX];
    const char *rest;
    int r = 0;
    if (!strcmp(rq->path, "/v1/files"))
        r = post ? (upload(b, rq, rs) < 0 ? -1 : 1) : get ? (list_files(b, rq, rs) < 0 ? -1 : 1) : 0;
    else if (!strcmp(rq->path, "/v1/batches"))
        r = post ? (create(b, rq, rs) < 0 ? -1 : 1) : get ? (list_batches(b, rq, rs) < 0 ? -1 : 1) : 0;
    else if (split(rq->path, "/v1/files", id, &rest))
        r = file_op(b, rq, rs, id, rest);
    else if (split(rq->path, "/v1/batches", id, &rest))
        r = batch_op(b, rq, rs, id, rest);
    return r < 0 ? -1 : r > 0 ? 1 : 0;
}
