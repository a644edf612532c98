/* bmgr_collect.c -- the collectors: lines wait in an OPEN batch per
 * provider, model, kind and completion window until the earliest window of
 * its lines ends or it is full (the provider's lines or bytes per batch),
 * then the batch is written to the store and sent on.
 *
 * Nothing of a collecting line is on disk: a daemon that dies now loses
 * it, and its job, recorded as waiting on a line the manager does not
 * have, is woken at start to submit it again (batch_mgr_has_line). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/batch/batch_internal.h"

/* The OPEN batch for these lines, or NULL. */
static batch *find_open(batch_mgr_t *m, const char *provider, const char *model,
                        loom_call_kind kind, uint64_t deadline_ms)
{
    LIST_EACH_SAFE(l, nx, &m->batches) {
        batch *b = LIST_OWNER(l, batch, link);
        if (b->st == B_OPEN && b->kind == kind && b->deadline_ms == deadline_ms &&
            !strcmp(b->provider, provider) && !strcmp(b->model, model ? model : ""))
            return b;
    }
    return NULL;
}

static void on_window(reactor_t *r, reactor_timer_t *t, void *ud)
{
    batch *b = ud;
    (void)r, (void)t;
    b->timer = NULL;
    bmgr_flush(b);
}

/* Makes B's window end no later than WINDOW_MS from now. 0 or -ENOMEM. */
static int arm_window(batch *b, uint64_t window_ms)
{
    batch_mgr_t *m = b->m;
    uint64_t at = reactor_now_us(m->r) + window_ms * REACTOR_MSEC;
    if (b->timer && b->flush_at_us <= at)
        return 0;
    reactor_timer_t *t = reactor_timer_at(m->r, at, on_window, b);
    if (!t)
        return -ENOMEM;
    if (b->timer)
        reactor_timer_cancel(m->r, b->timer);
    b->timer = t;
    b->flush_at_us = at;
    return 0;
}

int bmgr_collect(batch_mgr_t *m, const batch_line_spec *s, loom_errcode *code, char *err,
                  size_t errlen)
{
    *code = LOOM_E_INVALID_REQUEST;
    if (!s || !s->job || !s->key || !s->provider || !s->up || !s->req) {
        snprintf(err, errlen, "a batch line needs a job, a step, a provider and a request");
        return -1;
    }
    if (!upstream_has_batch_api(s->up)) {
        snprintf(err, errlen, "provider '%s' has no Batch API", s->provider);
        return -1;
    }
    const upstream_batch_api *set = upstream_batch_settings(s->up);
    uint64_t deadline = s->deadline_ms ? s->deadline_ms : set->deadline_ms;
    uint64_t window = s->window_ms ? s->window_ms : set->window_ms;
    const char *model = s->req->model ? s->req->model : "";
    batch *b = find_open(m, s->provider, model, s->req->kind, deadline);
    bline *l = bmgr_line_new(s->job, s->key, s->node, s->attempt);
    if (!l)
        goto nomem;
    for (int round = 0; round < 2; round++) {
        if (!b && !(b = bmgr_new(m, NULL, s->provider, model, s->req->kind, deadline, B_OPEN)))
            goto nomem;
        char cid[24];
        snprintf(cid, sizeof cid, "l%zu", b->nlines);
        free(l->text);
        l->text = NULL;
        if (upstream_batch_line(s->up, s->req, cid, &l->text, &l->len, code, err, errlen) < 0)
            goto fail;
        if ((int64_t)l->len + 1 > set->max_bytes) {
            *code = LOOM_E_INVALID_REQUEST;
            snprintf(err, errlen, "the call's batch line (%zu bytes) is larger than a batch of "
                     "provider '%s' may be (%lld bytes)", l->len + 1, s->provider,
                     (long long)set->max_bytes);
            goto fail;
        }
        if ((int64_t)b->live < set->max_lines &&
            (int64_t)(b->bytes + l->len + 1) <= set->max_bytes)
            break;
        /* full: it goes as it is, and the line starts the next one */
        batch *full = b;
        b = NULL;
        if (full->live)
            bmgr_flush(full);
    }
    if (bmgr_line_attach(m, b, l, b->nlines) < 0)
        goto nomem;
    if (arm_window(b, window) < 0) {
        bmgr_line_drop(m, l);
        l = NULL;
        goto nomem;
    }
    if (strcmp(l->jr->told, b->name) != 0) {
        snprintf(l->jr->told, sizeof l->jr->told, "%s", b->name);
        if (m->hooks.progress)
            m->hooks.progress(m->hooks.ud, l->job, b->name, "", "collecting", 0, -1);
    }
    if ((int64_t)b->live >= set->max_lines)
        bmgr_flush(b);
    return 0;
nomem:
    *code = LOOM_E_NOMEM;
    snprintf(err, errlen, "out of memory");
fail:
    if (l) {
        free(l->text);
        l->text = NULL;
        /* never attached: nothing indexes it */
        free(l->stepkey);
        free(l->node);
        free(l);
    }
    if (b && b->st == B_OPEN && b->live == 0)
        bmgr_free(b);
    return -1;
}

void bmgr_flush(batch *b)
{
    batch_mgr_t *m = b->m;
    if (b->timer)
        reactor_timer_cancel(m->r, b->timer);
    b->timer = NULL;
    if (b->live == 0) {
        bmgr_free(b);
        return;
    }
    store_batch_line_t *sl = calloc(b->live, sizeof *sl);
    bwrite *w = sl ? bmgr_write_new(b, W_INSERT) : NULL;
    size_t n = 0;
    if (!w) {
        free(sl);
        bmgr_fail_lines(b, LOOM_E_NOMEM, "out of memory recording the batch");
        return;
    }
    for (size_t i = 0; i < b->nlines; i++) {
        bline *l = b->lines[i];
        if (!l)
            continue;
        sl[n++] = (store_batch_line_t){ .custom_id = l->custom_id, .job_id = l->job,
                                        .key = l->key, .node = l->node,
                                        .attempt = l->attempt, .text = l->text, .len = l->len };
    }
    store_batch_spec_t spec = { .name = b->name, .provider = b->provider, .model = b->model,
                                .kind = bmgr_kind_name(b->kind),
                                .deadline_ms = (int64_t)b->deadline_ms, .lines = sl,
                                .nlines = n };
    b->st = B_WRITING;
    bmgr_log(m, LOOM_LOG_DEBUG, "batch %s (%s, %s): %zu lines, %zu bytes", b->name,
              b->provider, b->model, n, b->bytes);
    int rc = store_batch_insert(m->st, &spec, bmgr_write_done, w);
    free(sl);
    if (rc < 0) {
        bmgr_write_abort(w);
        char msg[128];
        snprintf(msg, sizeof msg, "the batch could not be recorded: %s", strerror(-rc));
        bmgr_fail_lines(b, rc == -ENOMEM ? LOOM_E_NOMEM : LOOM_E_UPSTREAM, msg);
    }
}
