/* upstream_batchapi.c -- a provider's Batch API hooks (ABI 2.4) called
 * with the host's context, for daemon/batch/ (which sends the requests)
 * and the engine (which reads a line's result as its call's answer).
 *
 * The plugin does no I/O here either: it writes lines and requests and
 * reads answers, exactly as encode and decode do, so the same context
 * (uctx) serves, and a line's result is classed the way a direct answer
 * would be. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/upstream/upstream_internal.h"

#define BATCH_DEFAULT_WINDOW_MS (60 * 1000ull)
#define BATCH_DEFAULT_DEADLINE_MS (24 * 3600 * 1000ull)
#define BATCH_DEFAULT_POLL_MIN_MS (5 * 1000ull)
#define BATCH_DEFAULT_POLL_MAX_MS (5 * 60 * 1000ull)
/* loom_provider's documented defaults for a plugin that gives none */
#define BATCH_PLUGIN_LINES 50000
#define BATCH_PLUGIN_BYTES ((int64_t)100 << 20)

void upstream_batch_api_defaults(upstream_batch_api *b, const loom_provider *def)
{
    int64_t lines = def->batch_max_lines ? (int64_t)def->batch_max_lines : BATCH_PLUGIN_LINES;
    int64_t bytes = def->batch_max_bytes ? (int64_t)def->batch_max_bytes : BATCH_PLUGIN_BYTES;
    if (!b->window_ms)
        b->window_ms = BATCH_DEFAULT_WINDOW_MS;
    if (!b->deadline_ms)
        b->deadline_ms = BATCH_DEFAULT_DEADLINE_MS;
    if (!b->poll_min_ms)
        b->poll_min_ms = BATCH_DEFAULT_POLL_MIN_MS;
    if (!b->poll_max_ms)
        b->poll_max_ms = BATCH_DEFAULT_POLL_MAX_MS;
    if (b->poll_max_ms < b->poll_min_ms)
        b->poll_max_ms = b->poll_min_ms;
    if (b->max_lines <= 0 || b->max_lines > lines)
        b->max_lines = lines;
    if (b->max_bytes <= 0 || b->max_bytes > bytes)
        b->max_bytes = bytes;
}

bool upstream_has_batch_api(const upstream_t *u)
{
    const loom_provider *d = u->def;
    return u->http && !u->opt.batch_api.off && d->batch_line && d->batch_encode &&
           d->batch_decode && d->batch_result;
}

const upstream_batch_api *upstream_batch_settings(const upstream_t *u)
{
    return &u->opt.batch_api;
}

http_client_t *upstream_http_client(const upstream_t *u)
{
    return u->http;
}

const http_call_opts *upstream_http_opts(const upstream_t *u)
{
    return &u->opt.timeouts;
}

/* Whether U may be asked for batch work at all; if not, says so in ERR. */
static bool batch_ok(const upstream_t *u, loom_errcode *code, char *err, size_t errlen)
{
    if (upstream_has_batch_api(u))
        return true;
    *code = LOOM_E_INVALID_REQUEST;
    snprintf(err, errlen, "provider '%s' has no Batch API", u->name);
    return false;
}

int upstream_batch_line(upstream_t *u, const loom_request *req, const char *custom_id,
                        char **line, size_t *len, loom_errcode *code, char *err, size_t errlen)
{
    *line = NULL;
    *len = 0;
    if (!batch_ok(u, code, err, errlen))
        return -1;
    uctx ctx;
    uctx_init(&ctx, u);
    if (u->def->batch_line(&ctx.base, u->state, req, custom_id, line, len) == 0 && *line)
        return 0;
    free(*line);
    *line = NULL;
    *code = ctx.failed ? ctx.code : LOOM_E_INVALID_REQUEST;
    snprintf(err, errlen, "%s", ctx.msg[0] ? ctx.msg : "the provider could not write the line");
    return -1;
}

int upstream_batch_encode(upstream_t *u, const loom_batch_op *op, loom_http_request *out,
                          loom_errcode *code, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!batch_ok(u, code, err, errlen))
        return -1;
    uctx ctx;
    uctx_init(&ctx, u);
    int rc = u->def->batch_encode(&ctx.base, u->state, op, out);
    if (rc == 0 || rc == 1) {
        if (rc == 1)
            http_request_free(out);
        return rc;
    }
    http_request_free(out);
    *code = ctx.failed ? ctx.code : LOOM_E_INVALID_REQUEST;
    snprintf(err, errlen, "%s",
             ctx.msg[0] ? ctx.msg : "the provider could not encode the batch request");
    return -1;
}

int upstream_batch_decode(upstream_t *u, const loom_batch_op *op, const http_response *resp,
                          loom_batch_info *out, upstream_result *res)
{
    memset(out, 0, sizeof *out);
    out->total = out->done = out->failed = -1;
    memset(res, 0, sizeof *res);
    res->usage = (loom_usage){ -1, -1, -1, -1 };
    res->message = u->batch_msg;
    u->batch_msg[0] = '\0';
    if (!upstream_has_batch_api(u)) {
        res->code = LOOM_E_INVALID_REQUEST;
        snprintf(u->batch_msg, sizeof u->batch_msg, "provider '%s' has no Batch API", u->name);
        return -1;
    }
    if (resp->outcome != HTTP_OK) {
        /* as a direct call's: timeouts, tls (never retried), else upstream */
        res->code = http_outcome_code(resp->outcome);
        snprintf(u->batch_msg, sizeof u->batch_msg, "%s (%s)",
                 resp->error ? resp->error : "HTTP failed", http_outcome_name(resp->outcome));
        return -1;
    }
    uctx ctx;
    uctx_init(&ctx, u);
    loom_http_response hr = { .status = resp->status, .headers = resp->headers,
                              .nheaders = resp->nheaders, .body = resp->body,
                              .body_len = resp->body_len };
    if (u->def->batch_decode(&ctx.base, u->state, op, &hr, out) == 0)
        return 0;
    res->code = ctx.failed ? ctx.code : LOOM_E_UPSTREAM;
    snprintf(u->batch_msg, sizeof u->batch_msg, "%s",
             ctx.msg[0] ? ctx.msg : "the provider's answer could not be read");
    /* the plugin may not read HTTP dates; the limiter's parser does */
    if (!ctx.has_ra)
        ctx.has_ra = rl_parse_wait_headers(resp->headers, resp->nheaders, (int64_t)time(NULL),
                                           &ctx.ra_ms) == 0;
    res->has_retry_after = ctx.has_ra;
    res->retry_after_ms = ctx.has_ra ? rl_cap_wait_ms(ctx.ra_ms) : 0;
    return -1;
}

/* Adds V (if positive) to the running total *SUM, saturating. */
static void stat_add(int64_t *sum, int64_t v)
{
    if (v > 0)
        *sum = *sum > INT64_MAX - v ? INT64_MAX : *sum + v;
}

int upstream_batch_result(upstream_t *u, const loom_request *req, const char *line, size_t len,
                          upstream_result *res)
{
    memset(res, 0, sizeof *res);
    res->usage = (loom_usage){ -1, -1, -1, -1 };
    res->message = u->batch_msg;
    u->batch_msg[0] = '\0';
    if (!upstream_has_batch_api(u)) {
        res->code = LOOM_E_INVALID_REQUEST;
        snprintf(u->batch_msg, sizeof u->batch_msg, "provider '%s' has no Batch API", u->name);
        u->st.failed++;
        return -1;
    }
    uctx ctx;
    uctx_init(&ctx, u);
    loom_result out = { .output = NULL, .usage = { -1, -1, -1, -1 } };
    if (u->def->batch_result(&ctx.base, u->state, req, line, len, &out) == 0 && out.output) {
        res->output = out.output;
        res->tool_calls = out.tool_calls;
        for (int k = 0; k < 4; k++) {
            int64_t *v = k == 0 ? &out.usage.input_tokens : k == 1 ? &out.usage.output_tokens
                       : k == 2 ? &out.usage.cache_read_tokens : &out.usage.cache_write_tokens;
            *v = rl_clamp_tokens(*v);
        }
        res->usage = out.usage;
        /* a plugin's reason is not trusted to be terminated */
        memcpy(u->batch_finish, out.finish_reason, sizeof u->batch_finish);
        u->batch_finish[sizeof u->batch_finish - 1] = '\0';
        res->finish_reason = u->batch_finish[0] ? u->batch_finish : NULL;
        res->code = LOOM_OK;
        u->st.succeeded++;
        stat_add(&u->st.input_tokens, out.usage.input_tokens);
        stat_add(&u->st.output_tokens, out.usage.output_tokens);
        return 0;
    }
    json_decref(out.output);
    json_decref(out.tool_calls);
    res->code = ctx.failed ? ctx.code : LOOM_E_INVALID_OUTPUT;
    snprintf(u->batch_msg, sizeof u->batch_msg, "%s",
             ctx.msg[0] ? ctx.msg : "the batch's result line could not be read");
    res->has_retry_after = ctx.has_ra;
    res->retry_after_ms = ctx.has_ra ? rl_cap_wait_ms(ctx.ra_ms) : 0;
    u->st.failed++;
    return -1;
}
