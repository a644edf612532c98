/* openai_batch.c -- the openai provider's Batch API hooks (ABI 2.4).
 *
 * OpenAI's Batch API takes a file: the host's lines are uploaded to
 * POST /files (multipart, purpose "batch", file name NAME.jsonl), then
 * POST /batches starts a batch over it with metadata {loom_batch: NAME}
 * and completion_window "24h", the only window the API accepts (the
 * deadline the host asks for is therefore not sent). GET /batches/ID
 * tells its state; an ended batch names an output file (the answers) and
 * an error file (the lines that got none, or an error status), read with
 * GET /files/ID/content. After a crash the host finds what it made by
 * name: an upload by its file name in GET /files?purpose=batch, a batch by
 * its metadata in GET /batches?limit=100 (newest first: a batch made more
 * than a hundred batches ago is not found, which a crash between two steps
 * of one batch never is).
 *
 * Each line is {custom_id, method: "POST", url: "/v1/chat/completions" or
 * "/v1/embeddings", body}, the body the one encode sends for the call
 * (never streamed). A call with tools is refused: its conversation needs
 * each answer before the next turn. Each result line's response is read by
 * the same code as a direct answer (openai_decode_body), so output, usage,
 * finish reason and structured outputs are identical, and an error status
 * in a line is classed as decode classes it. Lines that never ran (the
 * batch expired or was cancelled) are upstream failures that say so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "openai_internal.h"
#include "plugins/http_batch.h"
#include "plugins/http_common.h"

#define PROV "openai"

/* The answer's file list and batch list: how far FIND looks back. */
#define OPENAI_FIND_LIMIT 100

/* ---- lines */

int openai_batch_line(loom_ctx *ctx, void *state, const loom_request *req, const char *custom_id,
                      char **line, size_t *len)
{
    const openai_state *st = state;
    loom_request one = *req;
    const char *path = NULL;
    json_t *body, *obj;
    int rc;

    if (loom_hc_batch_line_ok(ctx, PROV, req, custom_id) < 0)
        return -1;
    /* a batch's answers are files, never streams */
    one.stream = 0;
    if (!(body = openai_body(ctx, st, &one, &path)))
        return -1;
    obj = json_pack("{s:s, s:s, s:s, s:o}", "custom_id", custom_id, "method", "POST", "url",
                    one.kind == LOOM_CALL_EMBED ? "/v1/embeddings" : "/v1/chat/completions",
                    "body", body);
    if (!obj) {
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    rc = loom_hc_line_dump(ctx, PROV, obj, line, len);
    json_decref(obj);
    return rc;
}

/* ---- encode */

/* The multipart body of an upload: the purpose field, then the lines as
 * file NAME.jsonl. The boundary is chosen not to occur in the lines
 * (which hold people's text), trying the next number until it does not;
 * no randomness, so the same lines always give the same body. 0, or -1
 * when out of memory. */
static int put_upload(const loom_batch_op *op, const openai_state *st, loom_http_request *out)
{
    char boundary[64], head[512], type[128];
    static const char tail_fmt[] = "\r\n--%s--\r\n";
    size_t hn, tn, total;
    unsigned k = 0;
    int n;

    do {
        snprintf(boundary, sizeof boundary, "loom-batch-boundary-%u", k++);
    } while (op->lines_len && memmem(op->lines, op->lines_len, boundary, strlen(boundary)));
    n = snprintf(head, sizeof head,
                 "--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
                 "filename=\"%s.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n",
                 boundary, boundary, op->name);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    hn = (size_t)n;
    tn = strlen(boundary) + sizeof tail_fmt - 3; /* "%s" out, the NUL in the snprintf below */
    total = hn + op->lines_len + tn;
    if (!(out->body = malloc(total + 1)))
        return -1;
    memcpy(out->body, head, hn);
    if (op->lines_len)
        memcpy(out->body + hn, op->lines, op->lines_len);
    snprintf(out->body + hn + op->lines_len, tn + 1, tail_fmt, boundary);
    out->body_len = total;
    snprintf(type, sizeof type, "multipart/form-data; boundary=%s", boundary);
    if (loom_hc_set_request(out, "POST", "%s/files", st->conf.base) < 0 ||
        loom_hc_add_header(out, "content-type", type) < 0)
        return -1;
    return 0;
}

/* CREATE: the batch over the uploaded file. 0, or -1 when out of memory. */
static int put_create(const loom_batch_op *op, const openai_state *st, loom_http_request *out)
{
    json_t *body = json_pack("{s:s, s:s, s:s, s:{s:s}}", "input_file_id", op->file_id,
                             "endpoint",
                             op->kind == LOOM_CALL_EMBED ? "/v1/embeddings"
                                                         : "/v1/chat/completions",
                             "completion_window", "24h", "metadata", "loom_batch", op->name);
    int rc;

    if (!body)
        return -1;
    rc = loom_hc_set_post(out, st->conf.base, "/batches", body);
    json_decref(body);
    return rc;
}

/* The ids STEP puts in its URL or body: present and safe there. */
static const char *bad_op(const loom_batch_op *op)
{
    switch (op->step) {
    case LOOM_BATCH_UPLOAD:
        return !loom_hc_batch_id_ok(op->name) ? "name" : !op->lines && op->lines_len ? "lines"
                                                                                       : NULL;
    case LOOM_BATCH_FIND_UPLOAD:
    case LOOM_BATCH_FIND:
        return loom_hc_batch_id_ok(op->name) ? NULL : "name";
    case LOOM_BATCH_CREATE:
        return !loom_hc_batch_id_ok(op->name)      ? "name"
               : !loom_hc_batch_id_ok(op->file_id) ? "file id"
                                                   : NULL;
    case LOOM_BATCH_RETRIEVE:
    case LOOM_BATCH_CANCEL:
        return loom_hc_batch_id_ok(op->batch_id) ? NULL : "batch id";
    case LOOM_BATCH_RESULTS:
        return loom_hc_batch_id_ok(op->url) ? NULL : "results file id";
    }
    return "step";
}

int openai_batch_encode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                        loom_http_request *out)
{
    const openai_state *st = state;
    const char *base = st->conf.base, *bad = bad_op(op);
    int rc = -1;

    if (bad) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, PROV ": batch step %d: a missing or malformed %s",
                   (int)op->step, bad);
        return -1;
    }
    switch (op->step) {
    case LOOM_BATCH_UPLOAD:
        rc = put_upload(op, st, out);
        break;
    case LOOM_BATCH_FIND_UPLOAD:
        rc = loom_hc_set_request(out, "GET", "%s/files?purpose=batch", base);
        break;
    case LOOM_BATCH_CREATE:
        rc = put_create(op, st, out);
        break;
    case LOOM_BATCH_FIND:
        rc = loom_hc_set_request(out, "GET", "%s/batches?limit=%d", base, OPENAI_FIND_LIMIT);
        break;
    case LOOM_BATCH_RETRIEVE:
        rc = loom_hc_set_request(out, "GET", "%s/batches/%s", base, op->batch_id);
        break;
    case LOOM_BATCH_RESULTS:
        rc = loom_hc_set_request(out, "GET", "%s/files/%s/content", base, op->url);
        break;
    case LOOM_BATCH_CANCEL:
        rc = loom_hc_set_request(out, "POST", "%s/batches/%s/cancel", base, op->batch_id);
        break;
    }
    if (rc < 0 || openai_auth_headers(st, out) < 0) {
        loom_hc_request_clear(out);
        loom_error(ctx, LOOM_E_NOMEM, PROV ": out of memory");
        return -1;
    }
    return 0;
}

/* ---- decode */

/* OpenAI's batch statuses as the host's states; NULL-terminated rows. */
static const struct {
    const char *status;
    loom_batch_state state;
} openai_states[] = {
    { "validating", LOOM_BATCH_RUNNING }, { "in_progress", LOOM_BATCH_RUNNING },
    { "finalizing", LOOM_BATCH_RUNNING }, { "cancelling", LOOM_BATCH_RUNNING },
    { "completed", LOOM_BATCH_ENDED },    { "expired", LOOM_BATCH_EXPIRED },
    { "cancelled", LOOM_BATCH_CANCELLED }, { "failed", LOOM_BATCH_FAILED },
    { NULL, LOOM_BATCH_RUNNING },
};

/* A batch object B (borrowed) into OUT. 0, or -1 after loom_error. */
static int read_batch(loom_ctx *ctx, json_t *b, loom_batch_info *out)
{
    const char *status = json_string_value(json_object_get(b, "status"));
    json_t *counts = json_object_get(b, "request_counts");
    json_t *err = json_array_get(json_object_get(json_object_get(b, "errors"), "data"), 0);
    int64_t completed = loom_hc_count(counts, "completed");
    size_t i;

    if (loom_hc_batch_str(out->id, sizeof out->id, json_object_get(b, "id")) < 0 ||
        !loom_hc_batch_id_ok(out->id) || !status) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": a batch without a usable id or status");
        return -1;
    }
    for (i = 0; openai_states[i].status && strcmp(openai_states[i].status, status) != 0; i++)
        ;
    /* a status added after this was written is taken for one still
     * running: polling on is safer than calling lines lost */
    if (!openai_states[i].status)
        loom_log(ctx, LOOM_LOG_WARN, "batch %s has unknown status %s, taken as running", out->id,
                 status);
    out->state = openai_states[i].state;
    out->total = loom_hc_count(counts, "total");
    out->failed = loom_hc_count(counts, "failed");
    /* done counts every line that has its answer, failures included */
    out->done = completed < 0 ? -1 : completed + (out->failed > 0 ? out->failed : 0);
    if (loom_hc_batch_str(out->results, sizeof out->results,
                          json_object_get(b, "output_file_id")) < 0 ||
        loom_hc_batch_str(out->errors, sizeof out->errors,
                          json_object_get(b, "error_file_id")) < 0) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": batch %s names a malformed result file",
                   out->id);
        return -1;
    }
    if (out->state == LOOM_BATCH_FAILED) {
        const char *msg = json_string_value(json_object_get(err, "message"));
        const char *code = json_string_value(json_object_get(err, "code"));
        char quoted[LOOM_HC_MSG_MAX + 1];

        loom_hc_server_message(quoted, sizeof quoted, msg ? msg : "no reason given", NULL);
        snprintf(out->message, sizeof out->message, "%s%s%s", code ? code : "",
                 code ? ": " : "", quoted);
    }
    return 0;
}

/* The newest file of LIST (borrowed, a file list) named NAME.jsonl for
 * purpose batch, into OUT->id ("" when none). 0, or -1 after loom_error. */
static int find_upload(loom_ctx *ctx, const loom_batch_op *op, json_t *list,
                       loom_batch_info *out)
{
    json_t *f, *best = NULL;
    char want[160];
    size_t i;

    snprintf(want, sizeof want, "%s.jsonl", op->name);
    json_array_foreach(json_object_get(list, "data"), i, f) {
        const char *name = json_string_value(json_object_get(f, "filename"));
        const char *purpose = json_string_value(json_object_get(f, "purpose"));
        const char *status = json_string_value(json_object_get(f, "status"));

        if (!name || strcmp(name, want) != 0 || (purpose && strcmp(purpose, "batch") != 0) ||
            (status && strcmp(status, "error") == 0))
            continue;
        if (!best || loom_hc_count(f, "created_at") > loom_hc_count(best, "created_at"))
            best = f;
    }
    if (best && (loom_hc_batch_str(out->id, sizeof out->id, json_object_get(best, "id")) < 0 ||
                 !loom_hc_batch_id_ok(out->id))) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": file %s has a malformed id", want);
        return -1;
    }
    return 0;
}

/* The batch of LIST (borrowed, newest first) whose metadata.loom_batch is
 * NAME, into OUT (id "" when none). 0, or -1 after loom_error. */
static int find_batch(loom_ctx *ctx, const loom_batch_op *op, json_t *list,
                      loom_batch_info *out)
{
    json_t *b;
    size_t i;

    json_array_foreach(json_object_get(list, "data"), i, b) {
        const char *name = json_string_value(
            json_object_get(json_object_get(b, "metadata"), "loom_batch"));

        if (name && strcmp(name, op->name) == 0)
            return read_batch(ctx, b, out);
    }
    out->id[0] = '\0';
    return 0;
}

int openai_batch_decode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                        const loom_http_response *resp, loom_batch_info *out)
{
    const openai_state *st = state;
    json_t *body;
    int rc = -1;

    /* the results are the host's to read, line by line: not parsed here */
    if (op->step == LOOM_BATCH_RESULTS && resp->status >= 200 && resp->status <= 299)
        return 0;
    body = loom_hc_parse_body(resp);
    if (resp->status < 200 || resp->status > 299) {
        openai_fail_status(ctx, st, resp, resp->status, body);
    } else if (!json_is_object(body)) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": HTTP %d with a body that is not a JSON object",
                   resp->status);
    } else if (json_object_get(body, "error") && !json_object_get(body, "id") &&
               !json_object_get(body, "data")) {
        /* an error with a success status: the bad gateway it is */
        openai_fail_status(ctx, st, resp, 502, body);
    } else {
        switch (op->step) {
        case LOOM_BATCH_UPLOAD:
            if (loom_hc_batch_str(out->id, sizeof out->id, json_object_get(body, "id")) < 0 ||
                !loom_hc_batch_id_ok(out->id)) {
                loom_error(ctx, LOOM_E_UPSTREAM, PROV ": an upload answered without a file id");
                break;
            }
            rc = 0;
            break;
        case LOOM_BATCH_FIND_UPLOAD:
            rc = find_upload(ctx, op, body, out);
            break;
        case LOOM_BATCH_FIND:
            rc = find_batch(ctx, op, body, out);
            break;
        case LOOM_BATCH_CREATE:
        case LOOM_BATCH_RETRIEVE:
        case LOOM_BATCH_CANCEL:
            rc = read_batch(ctx, body, out);
            break;
        case LOOM_BATCH_RESULTS:
            rc = 0;
            break;
        }
    }
    json_decref(body);
    return rc;
}

/* ---- results */

/* A line that got no response: why, as an upstream failure (the step's
 * retry policy runs it again, in a later batch or directly). Always -1. */
static int line_error(loom_ctx *ctx, json_t *err)
{
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    char quoted[LOOM_HC_MSG_MAX + 1];

    if (code && strcmp(code, "batch_expired") == 0)
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": the batch expired before this line ran");
    else if (code && strcmp(code, "batch_cancelled") == 0)
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": the batch was cancelled before this line ran");
    else {
        loom_hc_server_message(quoted, sizeof quoted, msg ? msg : "", NULL);
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": the batch line failed (%s): %s",
                   code ? code : "-", quoted);
    }
    return -1;
}

int openai_batch_result(loom_ctx *ctx, void *state, const loom_request *req, const char *line,
                        size_t len, loom_result *out)
{
    const openai_state *st = state;
    json_t *v, *response, *body;
    loom_http_response resp = { 0 };
    int rc = -1;

    loom_hc_result_empty(out);
    if (!(v = loom_hc_line_parse(ctx, PROV, line, len)))
        return -1;
    response = json_object_get(v, "response");
    if (!json_is_object(response)) {
        line_error(ctx, json_object_get(v, "error"));
        goto done;
    }
    if (!json_is_integer(json_object_get(response, "status_code"))) {
        loom_error(ctx, LOOM_E_UPSTREAM, PROV ": a batch result line without a status_code");
        goto done;
    }
    resp.status = (int)json_integer_value(json_object_get(response, "status_code"));
    body = json_object_get(response, "body");
    /* the answer as decode would have had it; no headers, so no wait */
    rc = openai_decode_body(ctx, st, req, &resp, json_is_object(body) ? body : NULL, out);
done:
    json_decref(v);
    return rc;
}
