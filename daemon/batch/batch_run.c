/* bmgr_run.c -- one batch's way through the provider's steps, on the
 * reactor: upload -> create -> poll (backoff) -> results -> done, each an
 * HTTP request the plugin encodes and decodes (upstream_batch_*).
 *
 * Durability: every step that changes what the provider holds is followed
 * by a store write, and the next step starts only from that write's
 * completion, so the record never lags more than one request behind the
 * provider; a batch resumed from the store first looks up by name what
 * that request may have made (FIND, FIND_UPLOAD) before making it again.
 *
 * Failures: 429, 5xx, timeouts and broken connections are retried with a
 * backoff (poll_min doubling to poll_max, or the server's Retry-After);
 * any other answer ends every line of the batch with that error, for the
 * step's retry policy to take over. One timer per batch, no thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/batch/batch_internal.h"

#define BATCH_FIRST_BACKOFF_MS 1000

static const char *const step_names[] = {
    [LOOM_BATCH_UPLOAD] = "upload", [LOOM_BATCH_FIND_UPLOAD] = "find upload",
    [LOOM_BATCH_CREATE] = "create", [LOOM_BATCH_FIND] = "find",
    [LOOM_BATCH_RETRIEVE] = "poll", [LOOM_BATCH_RESULTS] = "results",
    [LOOM_BATCH_CANCEL] = "cancel",
};

static const char *const remote_names[] = {
    [LOOM_BATCH_RUNNING] = "running", [LOOM_BATCH_ENDED] = "ended",
    [LOOM_BATCH_EXPIRED] = "expired", [LOOM_BATCH_CANCELLED] = "cancelled",
    [LOOM_BATCH_FAILED] = "failed",
};

static void step(batch *b, loom_batch_step s);
static void finish(batch *b);

/* ---- store writes */

bwrite *bmgr_write_new(batch *b, int what)
{
    bwrite *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->m = b->m;
    w->b = b;
    w->what = what;
    list_add_tail(&b->m->writes, &w->link);
    b->writes++;
    return w;
}

void bmgr_write_abort(bwrite *w)
{
    list_del(&w->link);
    w->b->writes--;
    free(w);
}

/* Queues the update SET of B, continued by bmgr_write_done(WHAT). On a
 * refusal, B's lines fail. */
static void write_update(batch *b, int what, const store_batch_set_t *set)
{
    bwrite *w = bmgr_write_new(b, what);
    int rc = w ? store_batch_update(b->m->st, b->name, set, bmgr_write_done, w) : -ENOMEM;
    if (rc < 0) {
        if (w)
            bmgr_write_abort(w);
        char msg[160];
        snprintf(msg, sizeof msg, "batch %s could not be recorded: %s", b->name, strerror(-rc));
        bmgr_fail_lines(b, LOOM_E_UPSTREAM, msg);
    }
}

static void write_delete(batch *b)
{
    bwrite *w = bmgr_write_new(b, W_DELETE);
    if (!w || store_batch_delete(b->m->st, b->name, bmgr_write_done, w) < 0) {
        /* the record stays; the next start finds a batch without lines
         * and tries again */
        if (w)
            bmgr_write_abort(w);
        bmgr_free(b);
    }
}

/* ---- jobs told */

/* The distinct jobs of B's lines (a new array of copies), NULL-terminated;
 * NULL when out of memory. Told after B's state is settled, since a hook
 * may submit or drop lines (and so change or free B). */
static char **jobs_of(batch *b)
{
    batch_mgr_t *m = b->m;
    char **v = calloc(b->live + 1, sizeof *v);
    size_t n = 0;
    if (!v)
        return NULL;
    m->mark++;
    for (size_t i = 0; i < b->nlines; i++) {
        bline *l = b->lines[i];
        if (l && bmgr_first_of_job(m, l) && !(v[n++] = strdup(l->job))) {
            for (size_t k = 0; k + 1 < n; k++)
                free(v[k]);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void tell_ready(batch_mgr_t *m, char **jobs)
{
    for (size_t i = 0; jobs && jobs[i]; i++) {
        if (m->hooks.ready)
            m->hooks.ready(m->hooks.ud, jobs[i]);
        free(jobs[i]);
    }
    free(jobs);
}

/* Every live line of B is done with the outcome in memory (CODE, MSG),
 * since the store could not take it; B is done. */
static void fail_in_memory(batch *b, loom_errcode code, const char *msg)
{
    batch_mgr_t *m = b->m;
    for (size_t i = 0; i < b->nlines; i++) {
        bline *l = b->lines[i];
        if (!l || l->done)
            continue;
        l->done = l->mem_outcome = true;
        l->code = code;
        free(l->message);
        l->message = strdup(msg);
    }
    if (b->timer)
        reactor_timer_cancel(m->r, b->timer);
    b->timer = NULL;
    b->st = B_DONE;
    m->failed++;
    bmgr_log(m, LOOM_LOG_WARN, "batch %s (%s): every line failed: %s", b->name, b->provider,
              msg);
    snprintf(b->remote_state, sizeof b->remote_state, "failed");
    bmgr_progress(b, "failed");
    tell_ready(m, jobs_of(b));
}

void bmgr_fail_lines(batch *b, loom_errcode code, const char *msg)
{
    if (b->st == B_OPEN || b->st == B_WRITING || b->st == B_DONE) {
        fail_in_memory(b, code, msg);
        return;
    }
    /* on disk: the failure is recorded like results, so a restart keeps it */
    b->st = B_ENDING;
    b->fail_code = code;
    snprintf(b->fail_msg, sizeof b->fail_msg, "%s", msg);
    snprintf(b->remote_state, sizeof b->remote_state, "failed");
    b->got_results = b->got_errors = true;
    b->cancelling = false;
    finish(b);
}

/* ---- timers and backoff */

static void on_timer(reactor_t *r, reactor_timer_t *t, void *ud)
{
    batch *b = ud;
    (void)r, (void)t;
    b->timer = NULL;
    bmgr_run(b);
}

static void stop(batch *b);

static void after(batch *b, uint64_t ms)
{
    if (b->live == 0 && !b->cancelling && b->st != B_DONE) {
        stop(b); /* nobody waits for what the timer would do */
        return;
    }
    if (b->timer)
        reactor_timer_cancel(b->m->r, b->timer);
    b->timer = reactor_timer_add(b->m->r, ms * REACTOR_MSEC, on_timer, b);
    if (!b->timer)
        bmgr_fail_lines(b, LOOM_E_NOMEM, "out of memory");
}

/* B's provider's settings now, or NULL when it is gone (a reload). */
static const upstream_batch_api *settings(batch *b, upstream_t **up)
{
    batch_mgr_t *m = b->m;
    *up = m->hooks.upstream(m->hooks.ud, b->provider);
    return *up ? upstream_batch_settings(*up) : NULL;
}

/* The wait before a provider that is gone is asked again for. */
#define BATCH_NO_PROVIDER_MS (60 * 1000)

static bool retryable(loom_errcode code)
{
    return code == LOOM_E_RATE_LIMITED || code == LOOM_E_UPSTREAM || code == LOOM_E_TIMEOUT ||
           code == LOOM_E_NOMEM;
}

/* The step in B->step failed with CODE, MSG: again after a backoff, or
 * every line fails. */
static void step_failed(batch *b, loom_errcode code, const char *msg, bool has_ra, uint64_t ra_ms)
{
    batch_mgr_t *m = b->m;
    upstream_t *up;
    const upstream_batch_api *set = settings(b, &up);
    m->errors++;
    if (!retryable(code)) {
        bmgr_log(m, LOOM_LOG_WARN, "batch %s (%s): %s refused: %s", b->name, b->provider,
                  step_names[b->step], msg);
        if (b->step == LOOM_BATCH_CANCEL)
            write_delete(b); /* nobody wants it: forget it */
        else
            bmgr_fail_lines(b, code, msg);
        return;
    }
    uint64_t lo = set ? set->poll_min_ms : BATCH_FIRST_BACKOFF_MS;
    uint64_t hi = set ? set->poll_max_ms : BATCH_NO_PROVIDER_MS;
    if (lo > BATCH_FIRST_BACKOFF_MS)
        lo = BATCH_FIRST_BACKOFF_MS;
    b->err_ms = b->err_ms ? b->err_ms * 2 : lo;
    if (b->err_ms > hi)
        b->err_ms = hi;
    uint64_t wait = has_ra ? (ra_ms ? ra_ms : 1) : b->err_ms;
    bmgr_log(m, LOOM_LOG_INFO, "batch %s (%s): %s failed (%s); again in %llu ms", b->name,
              b->provider, step_names[b->step], msg, (unsigned long long)wait);
    after(b, wait);
}

/* ---- the steps */

/* B's JSONL (a new allocation): from memory while its lines have their
 * text, else from the store (a resumed batch). */
static char *jsonl(batch *b, size_t *len, char *err, size_t errlen)
{
    bool all = true;
    size_t n = 0;
    for (size_t i = 0; i < b->nlines; i++) {
        if (!b->lines[i])
            continue;
        all = all && b->lines[i]->text;
        n += b->lines[i]->len + 1;
    }
    if (!all) {
        char *text = NULL;
        return store_batch_text(b->m->st, b->name, &text, len, err, errlen) < 0 ? NULL : text;
    }
    char *t = malloc(n + 1), *p = t;
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < b->nlines; i++) {
        const bline *l = b->lines[i];
        if (!l)
            continue;
        memcpy(p, l->text, l->len);
        p += l->len;
        *p++ = '\n';
    }
    *p = '\0';
    *len = n;
    return t;
}

static void on_http(http_call_t *call, const http_response *resp, void *ud);

static loom_batch_op op_of(const batch *b, loom_batch_step s)
{
    return (loom_batch_op){ .step = s, .kind = b->kind, .model = b->model, .name = b->name,
                            .file_id = b->file_id[0] ? b->file_id : NULL,
                            .batch_id = b->remote_id[0] ? b->remote_id : NULL, .url = b->url,
                            .deadline_ms = b->deadline_ms };
}

static void step(batch *b, loom_batch_step s)
{
    batch_mgr_t *m = b->m;
    upstream_t *up;
    b->step = s;
    if (!settings(b, &up) || !upstream_http_client(up)) {
        bmgr_log(m, LOOM_LOG_WARN, "batch %s: provider '%s' is not configured (now); "
                  "asking again in %d s", b->name, b->provider, BATCH_NO_PROVIDER_MS / 1000);
        after(b, BATCH_NO_PROVIDER_MS);
        return;
    }
    loom_batch_op op = op_of(b, s);
    char err[256] = "";
    char *lines = NULL;
    size_t len = 0;
    if (s == LOOM_BATCH_UPLOAD || (s == LOOM_BATCH_CREATE && b->no_upload)) {
        if (!(lines = jsonl(b, &len, err, sizeof err))) {
            step_failed(b, LOOM_E_NOMEM, err, false, 0);
            return;
        }
        op.lines = lines;
        op.lines_len = len;
    }
    loom_http_request req;
    loom_errcode code = LOOM_OK;
    int rc = upstream_batch_encode(up, &op, &req, &code, err, sizeof err);
    free(lines);
    if (rc == 1) {
        /* the provider's API has no such step */
        switch (s) {
        case LOOM_BATCH_FIND:
            b->tried_find = true;
            break;
        case LOOM_BATCH_FIND_UPLOAD:
            b->tried_find_upload = true;
            break;
        case LOOM_BATCH_UPLOAD:
            b->no_upload = true;
            break;
        case LOOM_BATCH_CANCEL:
            write_delete(b);
            return;
        default:
            bmgr_fail_lines(b, LOOM_E_INVALID_REQUEST, "the provider's Batch API has no such "
                             "step");
            return;
        }
        bmgr_run(b);
        return;
    }
    if (rc < 0) {
        step_failed(b, code, err, false, 0);
        return;
    }
    b->http_client = upstream_http_client(up);
    b->http = http_call(upstream_http_client(up), &req, upstream_http_opts(up), on_http, b);
    if (!b->http)
        step_failed(b, LOOM_E_NOMEM, "the request could not be started", false, 0);
}

/* Every line dropped while nothing of B is in flight: cancel what runs at
 * the provider, and forget B. */
static void stop(batch *b)
{
    if (b->st == B_CREATED) {
        b->cancelling = true;
        step(b, LOOM_BATCH_CANCEL);
        return;
    }
    write_delete(b);
}

void bmgr_abandon(batch *b)
{
    if (b->st == B_OPEN || (b->st == B_DONE && b->writes == 0)) {
        bmgr_free(b);
        return;
    }
    if (b->http || b->writes)
        return; /* its end sees that no line is left */
    if (b->timer)
        reactor_timer_cancel(b->m->r, b->timer);
    b->timer = NULL;
    stop(b);
}

void bmgr_run(batch *b)
{
    if (b->dead || b->http || b->writes || b->timer)
        return;
    if (b->live == 0 && b->st != B_OPEN && b->st != B_DONE) {
        stop(b);
        return;
    }
    switch (b->st) {
    case B_WRITTEN:
        if (b->resumed && !b->tried_find)
            step(b, LOOM_BATCH_FIND);
        else if (b->resumed && !b->tried_find_upload && !b->no_upload)
            step(b, LOOM_BATCH_FIND_UPLOAD);
        else if (!b->no_upload)
            step(b, LOOM_BATCH_UPLOAD);
        else
            step(b, LOOM_BATCH_CREATE);
        break;
    case B_UPLOADED:
        step(b, b->resumed && !b->tried_find ? LOOM_BATCH_FIND : LOOM_BATCH_CREATE);
        break;
    case B_CREATED:
        step(b, LOOM_BATCH_RETRIEVE);
        break;
    case B_ENDING:
        if (!b->got_results && b->results[0]) {
            b->url = b->results;
            step(b, LOOM_BATCH_RESULTS);
        } else if (!b->got_errors && b->errors[0]) {
            b->url = b->errors;
            step(b, LOOM_BATCH_RESULTS);
        } else {
            finish(b);
        }
        break;
    default:
        break;
    }
}

/* ---- answers */

/* Keeps each line of the JSONL BODY that names one of B's lines. */
static void take_results(batch *b, const char *body, size_t len)
{
    if (!b->outcomes) {
        b->outcomes = calloc(b->nlines ? b->nlines : 1, sizeof *b->outcomes);
        b->outcome_len = calloc(b->nlines ? b->nlines : 1, sizeof *b->outcome_len);
        if (!b->outcomes || !b->outcome_len) {
            free(b->outcomes);
            free(b->outcome_len);
            b->outcomes = NULL;
            b->outcome_len = NULL;
            return; /* every line then ends without a result, retried by its step */
        }
    }
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        json_t *j = n ? json_loadb(p, n, 0, NULL) : NULL;
        const char *cid = json_string_value(json_object_get(j, "custom_id"));
        char *e;
        size_t idx = cid && cid[0] == 'l' ? strtoul(cid + 1, &e, 10) : (size_t)-1;
        if (cid && cid[0] == 'l' && !*e && idx < b->nlines && b->lines[idx] &&
            !b->outcomes[idx] && (b->outcomes[idx] = malloc(n + 1))) {
            memcpy(b->outcomes[idx], p, n);
            b->outcomes[idx][n] = '\0';
            b->outcome_len[idx] = n;
        }
        json_decref(j);
        p = le + 1;
    }
}

/* Why a line of B has no result. */
static const char *no_result_why(const batch *b, loom_errcode *code)
{
    *code = LOOM_E_UPSTREAM;
    if (!strcmp(b->remote_state, "failed")) {
        *code = b->fail_code ? b->fail_code : LOOM_E_UPSTREAM;
        return b->fail_msg;
    }
    if (!strcmp(b->remote_state, "expired"))
        return "the batch expired before this line ran";
    if (!strcmp(b->remote_state, "cancelled"))
        return "the batch was cancelled before this line ran";
    return "the batch ended without a result for this line";
}

/* Commits every line's outcome (results read, or why none), then tells. */
static void finish(batch *b)
{
    batch_mgr_t *m = b->m;
    store_batch_outcome_t *o = calloc(b->live ? b->live : 1, sizeof *o);
    bwrite *w = o ? bmgr_write_new(b, W_FINISH) : NULL;
    if (!w) {
        free(o);
        fail_in_memory(b, LOOM_E_NOMEM, "out of memory storing the batch's results");
        return;
    }
    loom_errcode code;
    const char *why = no_result_why(b, &code);
    size_t n = 0;
    for (size_t i = 0; i < b->nlines; i++) {
        const bline *l = b->lines[i];
        if (!l)
            continue;
        const char *res = b->outcomes ? b->outcomes[i] : NULL;
        o[n++] = (store_batch_outcome_t){ .custom_id = l->custom_id, .result = res,
                                          .len = res ? b->outcome_len[i] : 0, .code = code,
                                          .message = why };
    }
    int rc = store_batch_finish(m->st, b->name, b->remote_state, o, n, bmgr_write_done, w);
    free(o);
    if (rc < 0) {
        bmgr_write_abort(w);
        char msg[160];
        snprintf(msg, sizeof msg, "the batch's results could not be recorded: %s",
                 strerror(-rc));
        fail_in_memory(b, LOOM_E_UPSTREAM, msg);
    }
}

static void on_answer(batch *b, const loom_batch_info *info)
{
    batch_mgr_t *m = b->m;
    upstream_t *up;
    const upstream_batch_api *set = settings(b, &up);
    switch (b->step) {
    case LOOM_BATCH_FIND:
    case LOOM_BATCH_CREATE:
        if (!info->id[0] && b->step == LOOM_BATCH_FIND) {
            b->tried_find = true;
            bmgr_run(b);
            return;
        }
        if (!info->id[0]) {
            step_failed(b, LOOM_E_UPSTREAM, "the provider gave no batch id", false, 0);
            return;
        }
        if (b->step == LOOM_BATCH_CREATE)
            m->creates++;
        else
            bmgr_log(m, LOOM_LOG_INFO, "batch %s: found as %s, made before a restart",
                      b->name, info->id);
        snprintf(b->remote_id, sizeof b->remote_id, "%s", info->id);
        snprintf(b->remote_state, sizeof b->remote_state, "running");
        write_update(b, W_CREATED, &(store_batch_set_t){ .state = "created",
                                                         .remote_id = b->remote_id,
                                                         .remote_state = "running",
                                                         .drop_text = true });
        return;
    case LOOM_BATCH_FIND_UPLOAD:
    case LOOM_BATCH_UPLOAD:
        if (!info->id[0] && b->step == LOOM_BATCH_FIND_UPLOAD) {
            b->tried_find_upload = true;
            bmgr_run(b);
            return;
        }
        if (!info->id[0]) {
            step_failed(b, LOOM_E_UPSTREAM, "the provider gave no file id", false, 0);
            return;
        }
        if (b->step == LOOM_BATCH_UPLOAD)
            m->uploads++;
        snprintf(b->file_id, sizeof b->file_id, "%s", info->id);
        write_update(b, W_UPLOADED, &(store_batch_set_t){ .state = "uploaded",
                                                          .file_id = b->file_id });
        return;
    case LOOM_BATCH_RETRIEVE:
        m->polls++;
        b->done = info->done;
        b->total = info->total;
        if (info->state == LOOM_BATCH_RUNNING) {
            bmgr_progress(b, "running");
            uint64_t lo = set ? set->poll_min_ms : BATCH_NO_PROVIDER_MS;
            uint64_t hi = set ? set->poll_max_ms : BATCH_NO_PROVIDER_MS;
            b->poll_ms = b->poll_ms ? b->poll_ms * 2 : lo;
            if (b->poll_ms > hi)
                b->poll_ms = hi;
            after(b, b->poll_ms);
            return;
        }
        snprintf(b->remote_state, sizeof b->remote_state, "%s",
                 (unsigned)info->state <= LOOM_BATCH_FAILED ? remote_names[info->state]
                                                            : "failed");
        snprintf(b->results, sizeof b->results, "%s", info->results);
        snprintf(b->errors, sizeof b->errors, "%s", info->errors);
        b->st = B_ENDING;
        if (info->state == LOOM_BATCH_FAILED) {
            b->fail_code = LOOM_E_UPSTREAM;
            snprintf(b->fail_msg, sizeof b->fail_msg, "batch %s failed at the provider: %.180s",
                     b->name, info->message[0] ? info->message : "no reason given");
            b->got_results = b->got_errors = true;
        }
        bmgr_run(b);
        return;
    case LOOM_BATCH_RESULTS:
        if (b->url == b->results)
            b->got_results = true;
        else
            b->got_errors = true;
        bmgr_run(b);
        return;
    case LOOM_BATCH_CANCEL:
        m->cancels++;
        bmgr_log(m, LOOM_LOG_INFO, "batch %s (%s): cancelled, no line of it is wanted",
                  b->name, b->remote_id);
        write_delete(b);
        return;
    }
}

static void on_http(http_call_t *call, const http_response *resp, void *ud)
{
    batch *b = ud;
    (void)call;
    b->http = NULL;
    /* even when no line is wanted any more, the answer is taken: a batch
     * it made must be recorded to be cancelled (after() and bmgr_run stop
     * it next) */
    upstream_t *up;
    if (!settings(b, &up)) {
        step_failed(b, LOOM_E_UPSTREAM, "the provider is not configured", false, 0);
        return;
    }
    loom_batch_op op = op_of(b, b->step);
    loom_batch_info info;
    upstream_result res;
    if (upstream_batch_decode(up, &op, resp, &info, &res) < 0) {
        step_failed(b, res.code, res.message, res.has_retry_after, res.retry_after_ms);
        return;
    }
    b->err_ms = 0;
    if (b->step == LOOM_BATCH_RESULTS)
        take_results(b, resp->body, resp->body_len);
    on_answer(b, &info);
}

/* ---- store completions */

static void free_texts(batch *b)
{
    for (size_t i = 0; i < b->nlines; i++) {
        bline *l = b->lines[i];
        if (l && l->text) {
            free(l->text);
            l->text = NULL;
        }
    }
}

void bmgr_write_done(void *ud, const store_result_t *res)
{
    bwrite *w = ud;
    batch_mgr_t *m = w->m;
    batch *b = w->b;
    int what = w->what;
    if (!m) {
        free(w); /* the manager is gone */
        return;
    }
    list_del(&w->link);
    free(w);
    b->writes--;
    if (b->dead) {
        if (b->writes == 0)
            bmgr_release(b);
        return;
    }
    if (what == W_DELETE) {
        bmgr_free(b);
        return;
    }
    if (res->status < 0 && what != W_FINISH) {
        char msg[256];
        snprintf(msg, sizeof msg, "batch %s could not be recorded: %.180s", b->name, res->error);
        if (what == W_INSERT)
            b->st = B_WRITING;
        bmgr_fail_lines(b, LOOM_E_UPSTREAM, msg);
        return;
    }
    switch (what) {
    case W_INSERT:
        b->st = B_WRITTEN;
        break;
    case W_UPLOADED:
        b->st = B_UPLOADED;
        break;
    case W_CREATED: {
        upstream_t *up;
        const upstream_batch_api *set = settings(b, &up);
        b->st = B_CREATED;
        free_texts(b);
        bmgr_log(m, LOOM_LOG_INFO, "batch %s (%s, %zu lines): submitted as %s", b->name,
                  b->provider, b->live, b->remote_id);
        bmgr_progress(b, "submitted");
        if (b->live == 0)
            break;
        b->poll_ms = 0;
        after(b, set ? set->poll_min_ms : BATCH_NO_PROVIDER_MS);
        return;
    }
    case W_FINISH: {
        if (res->status < 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "the batch's results could not be recorded: %.200s",
                     res->error);
            b->st = B_DONE;
            fail_in_memory(b, LOOM_E_UPSTREAM, msg);
            return;
        }
        for (size_t i = 0; i < b->nlines; i++)
            if (b->lines[i])
                b->lines[i]->done = true;
        b->st = B_DONE;
        if (!strcmp(b->remote_state, "failed"))
            m->failed++;
        bmgr_free_outcomes(b);
        bmgr_log(m, LOOM_LOG_INFO, "batch %s (%s): %s, %zu lines' outcomes recorded", b->name,
                  b->remote_id, b->remote_state, b->live);
        if (b->live == 0) {
            write_delete(b);
            return;
        }
        bmgr_progress(b, b->remote_state);
        tell_ready(m, jobs_of(b));
        return;
    }
    default:
        break;
    }
    bmgr_run(b);
}
