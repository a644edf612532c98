/* loomd_batch.c -- the daemon's wiring of provider Batch APIs: the batch
 * manager (daemon/batch) made once the store is open, the engine's hooks
 * (engine_batch_ops) over it, and what the manager tells the daemon.
 *
 * The manager knows lines, not jobs' lives, and the engine knows calls,
 * not batches; the daemon joins them:
 *   - a provider's upstream is the current generation's (a reload's new
 *     settings apply to the next step of every batch);
 *   - lines done: a job in memory looks its lines up again
 *     (engine_job_batch_ready); a job parked on them is woken through
 *     jobs (jobs_wake_batch), as a signal wakes one;
 *   - a batch's progress becomes the job's `batch_progress` event;
 *   - a job's end on disk (of every kind, a waiting one's cancel too)
 *     drops its lines (batch_mgr_drop_job), which cancels a batch nobody
 *     wants any more;
 *   - at start, a job recorded waiting on a line the manager does not have
 *     (the daemon died while the line was collecting, before the store had
 *     it) or on one already done is woken: its run submits the line again,
 *     or takes its result.
 * Reactor thread only, like the manager. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/batch/batch.h"
#include "daemon/loomd.h"
#include "daemon/providers.h"

/* Which provider each batch is of, for the batch_progress events (the
 * manager's hook names the batch, not its provider): learnt as a line's
 * submit opens a batch (the manager says "collecting" from inside the
 * submit), and at start from the store. The last NAMES batches are known;
 * an older one still in progress has its provider said as null. */
#define NAMES 4096

typedef struct batch_name {
    char name[64];
    char provider[64];
} batch_name;

struct loomd_batch {
    batch_mgr_t *mgr;
    const char *submitting;    /* the provider of the submit under way, or NULL */
    batch_name *names;         /* a ring of NAMES */
    size_t next;
    size_t last;               /* the one found last: a batch's progress is told to
                                * each of its jobs in a row */
    reactor_post_t collect;    /* an old generation kept for a request: look again */
    bool collect_posted;
};

static void collect_later(reactor_t *r, void *ud)
{
    loomd *d = ud;
    (void)r;
    d->batch->collect_posted = false;
    gen_collect(d);
}

/* After an answer: an old generation kept only for a request of the
 * manager's (loomd_batch_holds) may go now; on the next pass, not inside
 * the answer's callback, which runs on that generation's HTTP client. */
static void collect_soon(loomd *d)
{
    if (!d->gens || !d->gens->next || d->batch->collect_posted)
        return;
    d->batch->collect_posted = true;
    (void)reactor_post_embedded(d->r, &d->batch->collect, collect_later, d);
}

bool loomd_batch_holds(loomd *d, const lgen *g)
{
    const http_client_t *c = providers_http_client(g->prov);
    return c && d->batch && d->batch->mgr && batch_mgr_calls_on(d->batch->mgr, c);
}

static void name_add(struct loomd_batch *b, const char *name, const char *provider)
{
    if (strcmp(b->names[b->last].name, name) == 0)
        return;
    for (size_t i = 0; i < NAMES; i++)
        if (strcmp(b->names[i].name, name) == 0) {
            b->last = i;
            return;
        }
    b->last = b->next++ % NAMES;
    batch_name *n = &b->names[b->last];
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->provider, sizeof n->provider, "%s", provider);
}

static const char *name_provider(struct loomd_batch *b, const char *name)
{
    if (strcmp(b->names[b->last].name, name) == 0)
        return b->names[b->last].provider;
    for (size_t i = 0; i < NAMES; i++)
        if (strcmp(b->names[i].name, name) == 0) {
            b->last = i;
            return b->names[i].provider;
        }
    return NULL;
}

/* ---- the engine's hooks */

static int ops_lookup(void *ud, const char *job, const char *key, engine_batch_line *out,
                      char *err, size_t errlen)
{
    loomd *d = ud;
    batch_line_info bi;
    memset(&bi, 0, sizeof bi);
    if (!d->batch || !d->batch->mgr) { /* not started (only before the first job runs) */
        out->state = ENGINE_BATCH_NONE;
        return 0;
    }
    if (batch_mgr_lookup(d->batch->mgr, job, key, &bi, err, errlen) < 0)
        return -1;
    out->state = bi.state == BATCH_LINE_DONE      ? ENGINE_BATCH_DONE
                 : bi.state == BATCH_LINE_PENDING ? ENGINE_BATCH_PENDING
                                                  : ENGINE_BATCH_NONE;
    out->attempt = bi.attempt;
    snprintf(out->batch, sizeof out->batch, "%s", bi.batch);
    out->result = bi.result; /* the reference passes on to the engine */
    out->code = bi.code;
    snprintf(out->message, sizeof out->message, "%s", bi.message);
    return 0;
}

static int ops_submit(void *ud, const engine_batch_submit *s, loom_errcode *code, char *err,
                      size_t errlen)
{
    loomd *d = ud;
    if (!d->batch || !d->batch->mgr) {
        *code = LOOM_E_UPSTREAM;
        snprintf(err, errlen, "the batch manager is not running");
        return -1;
    }
    batch_line_spec spec = {
        .job = s->job, .key = s->key, .node = s->node, .attempt = s->attempt,
        .provider = s->provider, .up = s->up, .req = s->req, .window_ms = s->window_ms,
        .deadline_ms = s->deadline_ms,
    };
    d->batch->submitting = s->provider;
    int rc = batch_mgr_submit(d->batch->mgr, &spec, code, err, errlen);
    d->batch->submitting = NULL;
    return rc;
}

static const engine_batch_ops ops = { .lookup = ops_lookup, .submit = ops_submit };

void loomd_batch_attach(loomd *d, engine_t *e)
{
    if (loomd_shared(d)) /* no batch manager: calls in batch mode go direct */
        return;
    engine_set_batch(e, &ops, d);
}

/* ---- waking jobs */

/* Whether waiting job JOB's WAITS (its stored waits, borrowed) hold a batch
 * line that no longer holds it back: done, or unknown to the manager. */
static bool lines_settled(loomd *d, const char *job, const json_t *waits)
{
    size_t i;
    json_t *w;
    json_array_foreach(waits, i, w) {
        const char *key = json_string_value(json_object_get(w, "key"));
        if (!key || !json_is_string(json_object_get(w, "batch")))
            continue;
        batch_line_info bi;
        char err[256];
        memset(&bi, 0, sizeof bi);
        if (batch_mgr_lookup(d->batch->mgr, job, key, &bi, err, sizeof err) < 0) {
            /* it resumes when its lines are ready, or at the next start */
            log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:s, s:s}", "job", job, "key", key),
                      "cannot read a waiting job's batch line: %s", err);
            continue;
        }
        json_decref(bi.result);
        if (bi.state != BATCH_LINE_PENDING)
            return true;
    }
    return false;
}

static void wake_if_settled(loomd *d, const char *job, const json_t *waits)
{
    if (d->batch && d->batch->mgr && lines_settled(d, job, waits))
        (void)jobs_wake_batch(&d->jobs, job); /* logged there */
}

static void on_parked(void *ud, const char *job, const json_t *waits)
{
    wake_if_settled(ud, job, waits);
}

static void on_job_closed(void *ud, const char *job)
{
    loomd *d = ud;
    if (d->batch && d->batch->mgr)
        batch_mgr_drop_job(d->batch->mgr, job);
}

void loomd_batch_hooks(loomd *d, jobs_hooks *h)
{
    (void)d;
    h->job_closed = on_job_closed;
    h->parked = on_parked;
}

/* ---- the manager's hooks */

static upstream_t *mgr_upstream(void *ud, const char *name)
{
    loomd *d = ud;
    return d->gens ? engine_provider_upstream(d->gens->eng, name) : NULL;
}

static void mgr_ready(void *ud, const char *job)
{
    loomd *d = ud;
    collect_soon(d);
    ljob *j = jobs_find(&d->jobs, job);
    if (!j) {
        (void)jobs_wake_batch(&d->jobs, job);
        return;
    }
    /* queued: its run looks its lines up; ending: if it is parking, the
     * parked hook looks once it is on disk */
    if (j->state == LJ_RUNNING && j->ej)
        engine_job_batch_ready(j->ej);
}

static void mgr_progress(void *ud, const char *job, const char *batch, const char *remote,
                         const char *state, int64_t done, int64_t total)
{
    loomd *d = ud;
    collect_soon(d);
    if (d->batch->submitting)
        name_add(d->batch, batch, d->batch->submitting);
    const char *provider = name_provider(d->batch, batch);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s?, s:s}", "event", "batch_progress", "batch",
                           batch, "remote", remote ? remote : "", "provider", provider, "state",
                           state);
    if (!ev)
        return;
    json_object_set_new(ev, "done", done >= 0 ? json_integer(done) : json_null());
    json_object_set_new(ev, "total", total >= 0 ? json_integer(total) : json_null());
    jobs_event(&d->jobs, job, ev);
}

/* ---- life */

/* The providers of the batches the store holds (they resume polling). */
static void names_load(loomd *d)
{
    json_t *all = NULL;
    char err[256];
    if (store_batch_load(d->store, &all, err, sizeof err) < 0) {
        log_write(&d->log, LOOM_LOG_WARN, NULL, "batch_progress events name no provider for "
                  "the batches of before the start: %s", err);
        return;
    }
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b) {
        const char *name = json_string_value(json_object_get(b, "name"));
        const char *prov = json_string_value(json_object_get(b, "provider"));
        if (name && prov)
            name_add(d->batch, name, prov);
    }
    json_decref(all);
}

int loomd_batch_start(loomd *d)
{
    char err[512];
    batch_mgr_hooks h = { .upstream = mgr_upstream, .ready = mgr_ready,
                          .progress = mgr_progress, .ud = d };
    if (!(d->batch = calloc(1, sizeof *d->batch)) ||
        !(d->batch->names = calloc(NAMES, sizeof *d->batch->names)) ||
        !(d->batch->mgr = batch_mgr_new(d->r, d->store, &d->log, &h))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start the batch manager: out of memory");
        return -1; /* loomd_batch_stop frees what was made */
    }
    names_load(d);
    if (batch_mgr_start(d->batch->mgr, err, sizeof err) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot resume provider batches: %s", err);
        return -1;
    }
    return 0;
}

int loomd_batch_resume(loomd *d)
{
    json_t *jobs = NULL;
    char err[256];
    if (!d->batch || !d->batch->mgr)
        return 0;
    if (store_waiting_jobs(d->store, &jobs, err, sizeof err) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot read waiting jobs: %s", err);
        return -1;
    }
    size_t i;
    json_t *o;
    json_array_foreach(jobs, i, o) {
        const char *job = json_string_value(json_object_get(o, "id"));
        if (job)
            wake_if_settled(d, job, json_object_get(o, "waits"));
    }
    json_decref(jobs);
    return 0;
}

json_t *loomd_batch_stats(loomd *d)
{
    return d->batch && d->batch->mgr ? batch_mgr_stats(d->batch->mgr) : json_null();
}

void loomd_batch_stop(loomd *d)
{
    if (!d->batch)
        return;
    if (d->batch->collect_posted)
        (void)reactor_post_cancel(d->r, &d->batch->collect);
    batch_mgr_free(d->batch->mgr);
    free(d->batch->names);
    free(d->batch);
    d->batch = NULL;
}
