/* jobs.c -- jobs in the daemon: accepted durably, queued by priority,
 * run on the engine, checkpointed step by step, finished in the store, and
 * the replies owed to clients waiting for them.
 *
 * The order of things is what makes a job safe:
 *   submit -> store insert -> (committed) -> reply "queued", queue it
 *   start  -> store set running (async) -> engine, with every finished leaf
 *             checkpointed as it finishes
 *   end    -> store finish -> (committed) -> replies to waiters, then free
 * so a reply never claims more than the disk holds, and a crash at any point
 * leaves a job either unacknowledged or resumable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

#include "dsl/dsl.h"

/* ---- the life of a job */

static void job_free(jobs_t *js, ljob *j)
{
    while (j->waiters) {
        lwaiter *w = j->waiters;
        j->waiters = w->next;
        server_reply_error(w->conn, w->id, "shutting_down",
                           "the daemon stopped before the job ended; it resumes at the next start");
        jobs_waiter_free(w);
    }
    jobs_subs_drop(j->subs, &j->nsubs, NULL);
    free(j->subs);
    jobs_tokens_free(j);
    jobs_table_del(js, j);
    if (j->g)
        dsl_graph_unref(j->g);
    free(j->workflow);
    json_decref(j->input);
    json_decref(j->replay);
    json_decref(j->prev_waits);
    free(j->traceparent);
    free(j);
}

void jobs_forget(jobs_t *js, ljob *j) { job_free(js, j); }

/* A queued job of TENANT (NULL: "default"). */
static ljob *job_new(jobs_t *js, const char *id, dsl_graph *g, const char *workflow, json_t *input,
                     int64_t priority, const char *tenant)
{
    jobs_tenant *t = jobs_tenant_get(js, tenant);
    ljob *j = t ? calloc(1, sizeof *j) : NULL;
    if (!j || !(j->workflow = strdup(workflow))) {
        free(j);
        return NULL;
    }
    j->tenant = t;
    snprintf(j->id, sizeof j->id, "%s", id);
    j->js = js;
    j->g = g ? dsl_graph_ref(g) : NULL;
    j->input = json_incref(input);
    j->priority = priority;
    j->seq = js->seq++;
    j->state = LJ_QUEUED;
    j->queued_us = reactor_now_us(js->r);
    if (jobs_table_add(js, j) < 0 || jobs_queue_push(js, j) < 0) {
        jobs_table_del(js, j);
        if (j->g)
            dsl_graph_unref(j->g);
        json_decref(j->input);
        free(j->workflow);
        free(j);
        return NULL;
    }
    return j;
}

int jobs_load_stored(jobs_t *js, const json_t *o, ljob **out, char *err, size_t errlen)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *name = json_string_value(json_object_get(o, "workflow"));
    const char *state = json_string_value(json_object_get(o, "state"));
    wfdir_version ver;
    char why[512];
    if (out)
        *out = NULL;
    if (!id)
        return -EINVAL;
    dsl_graph *g = jobs_stored_graph(js, o, &ver, why, sizeof why);
    if (!g) {
        /* cannot run: end it with a reason rather than retry forever */
        json_t *e = json_pack("{s:s, s:s}", "code", "unknown_workflow", "message", why);
        store_outcome_t end = { .state = STORE_FAILED, .error = e };
        (void)store_finish_job(js->store, id, &end, NULL, NULL);
        json_decref(e);
        log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", id), "not resumed: %s", why);
        snprintf(err, errlen, "%s", why);
        return -ENOENT;
    }
    ljob *j = job_new(js, id, g, name ? name : "?", json_object_get(o, "input"),
                      json_integer_value(json_object_get(o, "priority")),
                      json_string_value(json_object_get(o, "tenant")));
    dsl_graph_unref(g);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    j->was_running = state && strcmp(state, "running") == 0;
    /* the same trace and job span as before the restart (jobs_trace.c) */
    (void)jobs_trace_set(j, json_string_value(json_object_get(o, "traceparent")),
                         json_integer_value(json_object_get(o, "created_ms")));
    jobs_budget_set(j, json_object_get(o, "budget"));
    json_t *steps = NULL;
    char serr[256];
    if (store_load_steps(js->store, id, &steps, serr, sizeof serr) == 0 && json_object_size(steps)) {
        j->replay = json_object();
        const char *key;
        json_t *st;
        json_object_foreach(steps, key, st) {
            json_t *v = json_object_get(st, "output");
            if (j->replay && v)
                json_object_set(j->replay, key, v);
        }
    }
    json_decref(steps);
    if (out)
        *out = j;
    return 0;
}

static void on_finished(void *ud, const store_result_t *res);

/* The store refused J's end because of its data (WHY): J ends failed with
 * store_rejected instead, an end that carries nothing of the refused data.
 * 0, or the negative errno of queuing it. */
static int job_end_rejected(jobs_t *js, ljob *j, const char *why)
{
    char msg[400];
    snprintf(msg, sizeof msg, "the job's end could not be stored as it was: %s", why);
    json_t *e = json_pack("{s:s, s:s}", "code", "store_rejected", "message", msg);
    if (!e)
        return -ENOMEM;
    store_outcome_t out = { .state = STORE_FAILED, .error = e };
    j->end_rejected = true;
    j->end_state = STORE_FAILED;
    int rc = store_finish_job(js->store, j->id, &out, on_finished, j);
    json_decref(e);
    return rc;
}

/* The store has J's end on disk, or cannot take it at all: answer everyone
 * and forget J. The store holds an end it cannot write for want of the disk
 * and retries it, so this runs once the disk has it; the job counters of
 * `stats` count here, what was committed. */
static void on_finished(void *ud, const store_result_t *res)
{
    ljob *j = ud;
    jobs_t *js = j->js;
    if (res->status == -ESTALE) { /* another daemon runs it now: its end comes from there */
        if (!j->gone)
            log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", j->id),
                      "the end of a job was not recorded: %s", res->error);
        j->gone = true;
        jobs_hand_off(js, j);
        job_free(js, j);
        js->hooks.settled(js->hooks.ud);
        return;
    }
    if ((res->status == -E2BIG || res->status == -EINVAL) && !j->end_rejected) {
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:s}", "job", j->id),
                  "the store refused the end of a job because of its data (%s): the job ends "
                  "failed with store_rejected instead", res->error);
        if (job_end_rejected(js, j, res->error) == 0)
            return;
    }
    bool recorded = res->status == 0 || res->status == -EALREADY;
    if (!recorded)
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:s}", "job", j->id),
                  "the end of a job was not recorded (%s): the store still says it is "
                  "running, and it resumes at the next start", res->error);
    if (res->status == 0) {
        if (j->end_state == STORE_SUCCEEDED) {
            js->counts.succeeded++;
            j->tenant->succeeded++;
        } else if (j->end_state == STORE_CANCELLED) {
            js->counts.cancelled++;
            j->tenant->cancelled++;
        } else {
            js->counts.failed++;
            j->tenant->failed++;
        }
        if (js->hooks.job_ended)
            js->hooks.job_ended(js->hooks.ud, j,
                                j->end_state == STORE_SUCCEEDED   ? "succeeded"
                                : j->end_state == STORE_CANCELLED ? "cancelled"
                                                                  : "failed",
                                j->started_us ? (double)(reactor_now_us(js->r) - j->started_us) / 1e6
                                              : 0);
    }
    if (recorded && js->hooks.job_closed)
        js->hooks.job_closed(js->hooks.ud, j->id);
    json_t *obj = recorded ? jobs_job_object(js, j->id) : NULL;
    const char *state = json_string_value(json_object_get(obj, "state"));
    if (recorded) {
        json_t *ev = json_pack("{s:s, s:s}", "event", "job_finished", "state",
                               state ? state : "unknown");
        /* a failed job's error as get gives it: a watcher shows why at once */
        json_t *err = json_object_get(obj, "error");
        if (ev && json_is_object(err))
            json_object_set(ev, "error", err);
        jobs_emit(js, j, ev);
    }
    while (j->waiters) {
        lwaiter *w = j->waiters;
        j->waiters = w->next;
        if (recorded) {
            jobs_waiter_answer(w, obj, false);
            continue;
        }
        server_reply_error(w->conn, w->id,
                           js->stopping || js->hard_stop ? "shutting_down" : "store_error",
                           "the end of job %s could not be recorded (%s); it resumes at the "
                           "next start", j->id, res->error);
        jobs_waiter_free(w);
    }
    json_decref(obj);
    job_free(js, j);
    /* here, not in the engine's callback, which must not free the engine */
    js->hooks.settled(js->hooks.ud);
}

/* Records J's end in the store; replies follow from on_finished, once the
 * end is on disk. */
static void job_end(jobs_t *js, ljob *j, const store_outcome_t *out)
{
    j->state = LJ_ENDING;
    j->end_state = out->state;
    int rc = store_finish_job(js->store, j->id, out, on_finished, j);
    if (rc == -EILSEQ) {
        const char *why = "its output or error is not valid JSON text (a string that is not "
                          "UTF-8)";
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:s}", "job", j->id),
                  "the end of a job cannot be stored: %s; the job ends failed with "
                  "store_rejected instead", why);
        rc = job_end_rejected(js, j, why);
    }
    if (rc < 0) {
        store_result_t res = { .status = rc, .job_id = j->id,
                               .error = rc == -ESHUTDOWN ? "the store is closed" : strerror(-rc) };
        on_finished(j, &res);
    }
}

/* ---- running */

static const char *trace_event_name(engine_trace_event ev)
{
    switch (ev) {
    case ENGINE_TRACE_START: return "step_started";
    case ENGINE_TRACE_FINISH: return "step_finished";
    case ENGINE_TRACE_RETRY: return "step_retry";
    case ENGINE_TRACE_PROGRESS: return "map_progress";
    case ENGINE_TRACE_BATCHED: return "step_batched";
    default: return "step_failed";
    }
}

/* A trace event of J's engine job: to subscribers, and to the debug log. */
static void on_trace(void *ud, const engine_trace *t)
{
    ljob *j = ud;
    jobs_t *js = j->js;
    bool dbg = log_enabled(js->log, LOOM_LOG_DEBUG);
    if (!jobs_watched(js, j) && !dbg)
        return;
    if (t->event == ENGINE_TRACE_PROGRESS) {
        if (jobs_watched(js, j))
            jobs_emit(js, j, json_pack("{s:s, s:s, s:I, s:I}", "event", "map_progress", "node", t->node,
                                 "done", (json_int_t)t->done, "total", (json_int_t)t->total));
        return;
    }
    json_t *ev = json_pack("{s:s, s:s, s:s, s:i}", "event", trace_event_name(t->event), "node",
                           t->node, "kind", dsl_kind_name(t->kind), "attempt", t->attempt);
    if (!ev)
        return;
    if (t->provider)
        json_object_set_new(ev, "provider", json_string(t->provider));
    if (t->code)
        json_object_set_new(ev, "code", json_string(t->code));
    if (t->key)
        json_object_set_new(ev, "key", json_string(t->key));
    if (t->event == ENGINE_TRACE_FINISH) {
        json_object_set_new(ev, "cached", json_boolean(t->cached));
        json_object_set_new(ev, "replayed", json_boolean(t->replayed));
    }
    if (dbg)
        log_write(js->log, LOOM_LOG_DEBUG, json_pack("{s:s, s:s, s:s}", "job", j->id, "node", t->node,
                                                     "event", trace_event_name(t->event)),
                  "step");
    if (jobs_watched(js, j))
        jobs_emit(js, j, ev);
    else
        json_decref(ev);
}

/* A checkpoint's write came back. The store holds one it cannot write for
 * want of the disk (ahead of its job's end) until it commits, so a failure
 * here is a refusal of the data itself, or a store that closed first. */
static void on_checkpointed(void *ud, const store_result_t *res)
{
    jobs_t *js = ud;
    ljob *j = res->job_id ? jobs_find(js, res->job_id) : NULL;
    if (j && j->unsettled > 0 && --j->unsettled == 0 && j->durable_wanted) {
        /* committed, or refused for good: a lambda waiting on it goes on */
        j->durable_wanted = false;
        engine_job_durable(j->ej);
    }
    if ((res->status == -ESTALE || res->status == -EALREADY) && j) {
        /* a shared store: another daemon took the job over, or ended it */
        char id[STORE_ID_SIZE];
        snprintf(id, sizeof id, "%s", j->id);
        jobs_lease_lost(js, j, res->error);
        if (res->status == -EALREADY)
            jobs_bwait_end(js, id);
        return;
    }
    if (res->status < 0)
        log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", res->job_id ? res->job_id : "?"),
                  "a checkpoint was not stored, so its step runs again if the job resumes: %s",
                  res->error);
}

static void on_checkpoint(void *ud, engine_job_t *ej, const char *key, json_t *output)
{
    ljob *j = ud;
    (void)ej;
    int rc = store_checkpoint_step(j->js->store, j->id, key, output, NULL, 0, on_checkpointed,
                                   j->js);
    if (rc == 0)
        j->unsettled++;
    if (rc < 0)
        log_write(j->js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", j->id),
                  "a checkpoint was not stored, so its step runs again if the job resumes: %s",
                  rc == -EILSEQ ? "its output is not valid JSON text (a string that is not UTF-8)"
                  : rc == -ESHUTDOWN ? "the store is closed" : strerror(-rc));
}

static void on_pump(reactor_t *r, reactor_timer_t *t, void *ud)
{
    jobs_t *js = ud;
    (void)r;
    (void)t;
    js->pump_timer = NULL;
    jobs_pump(js);
}

/* Takes J off the running list and gives its engine back. The slot it held
 * goes to the next queued job on the next reactor pass: whatever ended J
 * (success, failure, cancel, timeout), the queue moves without waiting for
 * a later submit, and not from inside the engine's callback. */
static void running_del(jobs_t *js, ljob *j)
{
    list_del(&j->run);
    js->nrunning--;
    j->tenant->nrunning--;
    js->hooks.engine_release(js->hooks.ud, j->gen);
    j->gen = NULL;
    if (js->nqueue && !js->pump_timer && !js->hard_stop)
        js->pump_timer = reactor_timer_add(js->r, 0, on_pump, js);
}

/* json_dump_callback's counter for output_over: bytes so far against a cap
 * (it stops the dump once past it, so a huge output is not walked whole). */
typedef struct jobs_size_count {
    size_t n, cap;
} jobs_size_count;

static int jobs_count_cb(const char *buf, size_t size, void *data)
{
    (void)buf;
    jobs_size_count *c = data;
    c->n += size;
    return c->n > c->cap ? -1 : 0;
}

/* Whether OUT (borrowed) as compact JSON is over CAP bytes (0: no cap). */
static bool output_over(const json_t *out, int64_t cap)
{
    if (!out || cap <= 0)
        return false;
    jobs_size_count c = { 0, (size_t)cap };
    return json_dump_callback(out, jobs_count_cb, &c, JSON_COMPACT | JSON_ENCODE_ANY) < 0;
}

static void on_job_done(engine_job_t *ej, void *ud)
{
    ljob *j = ud;
    jobs_t *js = j->js;
    running_del(js, j);
    j->ej = NULL;
    if (js->hard_stop || j->gone) {
        /* abandoned at shutdown: the store still says running, so it
         * resumes from its checkpoints at the next start (or, with a
         * shared store, at once on another daemon); or GONE: another
         * daemon runs it now (jobs_cluster.c) */
        if (js->hard_stop && !j->gone && store_shared(js->store))
            (void)store_release_job(js->store, j->id, NULL, NULL);
        job_free(js, j);
        js->hooks.settled(js->hooks.ud);
        return;
    }
    json_t *waits = engine_job_waits(ej);
    if (waits) { /* only waits are left: it leaves memory (jobs_wait.c) */
        jobs_park(js, j, waits);
        return;
    }
    const engine_error *err = engine_job_error(ej);
    json_t *errj = engine_error_json(err);
    store_outcome_t out = {
        .state = !err ? STORE_SUCCEEDED
                 : strcmp(err->code, "cancelled") == 0 ? STORE_CANCELLED : STORE_FAILED,
        .output = engine_job_output(ej), .error = errj, .usage = engine_job_usage(ej),
    };
    out.has_cost = engine_job_cost(ej, &out.cost);
    /* stored only if every reply can carry it (docs/operations.md) */
    if (out.output && output_over(out.output, js->max_output_bytes)) {
        json_decref(errj);
        errj = json_pack("{s:s, s:s, s:I}", "code", "output_too_large", "message",
                         "the job's output is over max_output_bytes and was not stored",
                         "max_output_bytes", (json_int_t)js->max_output_bytes);
        out.state = STORE_FAILED;
        out.output = NULL;
        out.error = errj;
        err = NULL; /* the warning just below says why it failed */
        log_write(js->log, LOOM_LOG_WARN,
                  json_pack("{s:s, s:I}", "job", j->id, "limit", (json_int_t)js->max_output_bytes),
                  "a job's output is over max_output_bytes: the job fails with output_too_large");
    }
    json_t *fields = json_pack("{s:s, s:s, s:s}", "job", j->id, "workflow", j->workflow, "state",
                               store_state_name(out.state));
    if (fields && js->log_payloads) { /* asked for: inputs and outputs hold user data */
        json_object_set(fields, "input", j->input);
        if (out.output)
            json_object_set(fields, "output", (json_t *)out.output);
    }
    log_write(js->log, LOOM_LOG_INFO, fields, "job finished%s%s", err ? ": " : "",
              err ? err->code : "");
    jobs_trace_end(js, j, &out);
    job_end(js, j, &out);
    json_decref(errj);
}

/* The engine asks, before a lambda runs in this process after a paid step,
 * whether J's checkpoints are committed (engine.h): a lambda that crashes
 * the daemon then never costs its job that step again at each restart. */
static bool on_durable(void *ud, engine_job_t *ej)
{
    ljob *j = ud;
    (void)ej;
    if (j->unsettled == 0)
        return true;
    j->durable_wanted = true;
    return false;
}

/* Starts J (just taken off the queue) on ENG, acquired as GEN. */
static void job_start(jobs_t *js, ljob *j, engine_t *eng, void *gen)
{
    engine_job_options jo = {
        .trace = on_trace, .trace_ud = j,
        .checkpoint = on_checkpoint, .checkpoint_ud = j,
        .durable = on_durable, .durable_ud = j,
        .replay = j->replay, .name = j->id,
        .tracer = js->tracer,
        .tenant = j->tenant->name, .tenant_weight = j->tenant->weight,
        .has_budget = j->has_budget, .budget_usd = j->budget_usd,
    };
    trace_ctx span;
    if (jobs_trace_context(js, j, &span))
        jo.job_span = &span;
    if (!j->was_running) /* a resumed job's row says so already: no write to wait behind */
        (void)store_set_running(js->store, j->id, 0, NULL, NULL);
    j->state = LJ_RUNNING;
    j->gen = gen;
    list_add_tail(&js->running, &j->run);
    js->nrunning++;
    j->tenant->nrunning++;
    jobs_emit(js, j, json_pack("{s:s, s:s}", "event", "job_started", "workflow", j->workflow));
    j->started_us = reactor_now_us(js->r);
    if (js->hooks.job_started)
        js->hooks.job_started(js->hooks.ud, j, (double)(j->started_us - j->queued_us) / 1e6);
    j->ej = engine_submit(eng, j->g, j->input, &jo, on_job_done, j);
    if (j->ej)
        jobs_tokens_started(j);
    if (!j->ej) {
        running_del(js, j);
        json_t *e = json_pack("{s:s, s:s}", "code", "internal", "message", "out of memory");
        store_outcome_t out = { .state = STORE_FAILED, .error = e };
        job_end(js, j, &out);
        json_decref(e);
    }
}

void jobs_pump(jobs_t *js)
{
    while (!js->stopping && js->nqueue && (int64_t)js->nrunning < js->max_running) {
        ljob *j = jobs_queue_next(js);
        if (!j) /* every tenant with queued jobs is at its own max_running */
            return;
        void *gen = NULL;
        engine_t *eng = js->hooks.engine_acquire(js->hooks.ud, &gen);
        if (!eng)
            return;
        jobs_queue_take(js, j);
        job_start(js, j, eng, gen);
    }
}

/* ---- submit */

typedef struct psubmit {
    jobs_t *js;
    server_conn_t *conn;       /* reference */
    json_t *id;                /* reference */
    dsl_graph *g;              /* reference */
    char *workflow;
    json_t *input;             /* reference */
    char *traceparent;         /* owned: stored with the job (jobs_trace.c), or NULL */
    double budget_usd;         /* the submit's budget; < 0: none */
    int64_t priority;
    jobs_tenant *tenant;       /* borrowed (js's) */
    bool wait;
    double wait_s;             /* < 0: no limit */
} psubmit;

static void psubmit_free(psubmit *p)
{
    server_conn_unref(p->conn);
    json_decref(p->id);
    dsl_graph_unref(p->g);
    free(p->workflow);
    json_decref(p->input);
    free(p->traceparent);
    free(p);
}

/* The store started holding writes, or committed them all: say so once
 * each way, since nothing else tells the operator while nobody submits. */
static void on_store_health(void *ud, const store_health_t *h)
{
    jobs_t *js = ud;
    if (h->unavailable && !js->store_down) {
        js->store_down = true;
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:I}", "held", (json_int_t)h->held),
                  "the job store cannot write (%s): job starts, checkpoints and ends are kept "
                  "in memory, in order, and retried until they commit; new submits are "
                  "refused with store_unavailable", h->error);
    } else if (!h->unavailable && js->store_down) {
        js->store_down = false;
        log_write(js->log, LOOM_LOG_INFO, NULL,
                  "the job store writes again: every held write is committed, submits are "
                  "accepted");
    }
}

/* Refuses a submit while the store cannot write (WHY: what failed, or
 * NULL for the store's own account): a stable code and a hint of when to
 * try again (docs/protocol.md). */
static void reply_store_unavailable(jobs_t *js, server_conn_t *conn, json_t *id, const char *why)
{
    int64_t after = 0;
    char held[200] = "", msg[400];
    if (!store_unavailable(js->store, &after, held, sizeof held))
        after = 1000; /* the insert itself failed: nothing is being retried to time it by */
    snprintf(msg, sizeof msg, "the job store cannot write (disk full?); retry later: %s",
             why && *why ? why : held);
    server_reply(conn, id, json_pack("{s:b, s:{s:s, s:s, s:I}}", "ok", 0, "error", "code",
                                     "store_unavailable", "message", msg, "retry_after_ms",
                                     (json_int_t)after));
}

/* Whether the job ID an idempotency key found (J when it is live)
 * belongs to TENANT. */
static bool existing_is_tenants(jobs_t *js, const ljob *j, const char *id, const char *tenant)
{
    if (j)
        return strcmp(j->tenant->name, tenant) == 0;
    json_t *o = jobs_job_object(js, id);
    const char *t = json_string_value(json_object_get(o, "tenant"));
    bool mine = strcmp(t ? t : "default", tenant) == 0;
    json_decref(o);
    return mine;
}

static void on_inserted(void *ud, const store_result_t *res)
{
    psubmit *p = ud;
    jobs_t *js = p->js;
    if (res->status < 0) {
        if (store_status_transient(res->status)) {
            log_write(js->log, LOOM_LOG_WARN, NULL,
                      "a submit was refused: the job store cannot write: %s", res->error);
            reply_store_unavailable(js, p->conn, p->id, res->error);
        } else {
            server_reply_error(p->conn, p->id, "store_error", "the job was not accepted: %s",
                               res->error);
        }
        psubmit_free(p);
        return;
    }
    ljob *j = jobs_find(js, res->job_id);
    if (res->existed && !existing_is_tenants(js, j, res->job_id, p->tenant->name)) {
        /* keys are shared by the store: never hand one tenant another's job */
        server_reply_error(p->conn, p->id, "idempotency_conflict",
                           "this idempotency_key was used by a submit of another tenant; "
                           "nothing was submitted: use another key");
        psubmit_free(p);
        return;
    }
    if (!j && !res->existed) {
        j = job_new(js, res->job_id, p->g, p->workflow, p->input, p->priority, p->tenant->name);
        if (!j) {
            /* committed but not queued: it runs at the next start */
            server_reply_error(p->conn, p->id, "internal",
                               "out of memory; job %s is stored and runs at the next start",
                               res->job_id);
            psubmit_free(p);
            return;
        }
        (void)jobs_trace_set(j, p->traceparent, 0);
        j->has_budget = p->budget_usd >= 0;
        j->budget_usd = j->has_budget ? p->budget_usd : 0;
        js->counts.submitted++;
        j->tenant->submitted++;
        log_write(js->log, LOOM_LOG_INFO,
                  json_pack("{s:s, s:s}", "job", j->id, "workflow", j->workflow), "job queued");
    }
    if (p->wait && j && jobs_add_waiter(js, j, p->conn, p->id, W_SUBMIT, p->wait_s) == 0) {
        jobs_pump(js);
        psubmit_free(p);
        return;
    }
    json_t *obj = j ? NULL : jobs_job_object(js, res->job_id);
    const char *state = j ? (j->state == LJ_QUEUED ? "queued" : "running")
                          : json_string_value(json_object_get(obj, "state"));
    if (p->wait && !j && obj && state && store_shared(js->store) &&
        (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0)) {
        /* the key's job runs on another daemon: its end is waited for here */
        uint64_t deadline = p->wait_s >= 0
                                ? reactor_now_us(js->r) + (uint64_t)(p->wait_s * 1e6)
                                : 0;
        if (jobs_bwait_add(js, p->conn, p->id, res->job_id, W_SUBMIT, deadline) < 0)
            server_reply_error(p->conn, p->id, "internal", "out of memory");
        json_decref(obj);
        psubmit_free(p);
        return;
    }
    if (p->wait && !j && obj)
        server_reply(p->conn, p->id, json_pack("{s:s, s:s, s:b, s:O, s:b}", "job", res->job_id,
                                               "state", state, "existed", res->existed, "result",
                                               obj, "timed_out", 0));
    else
        server_reply(p->conn, p->id, json_pack("{s:s, s:s, s:b}", "job", res->job_id, "state",
                                               state ? state : "unknown", "existed", res->existed));
    json_decref(obj);
    jobs_pump(js);
    psubmit_free(p);
}

bool jobs_queue_refuses(jobs_t *js, jobs_tenant *t, server_conn_t *conn, json_t *id)
{
    /* each queued job holds its input in memory: the queue is bounded */
    if (js->max_queued > 0 && js->nqueue >= (size_t)js->max_queued) {
        if (t)
            t->rejected++;
        server_reply_error(conn, id, "queue_full",
                           "%zu jobs are queued, the most allowed (max_queued_jobs); "
                           "try again when some have started", js->nqueue);
        return true;
    }
    /* and per tenant, so that one tenant's flood leaves room for the others */
    if (t && t->max_queued > 0 && t->nqueue >= (size_t)t->max_queued) {
        t->rejected++;
        server_reply_error(conn, id, "queue_full",
                           "tenant %s has %zu jobs queued, the most it may (its "
                           "max_queued_jobs); try again when some have started", t->name,
                           t->nqueue);
        return true;
    }
    return false;
}

void jobs_submit(jobs_t *js, server_conn_t *conn, json_t *req, const char *tenant)
{
    json_t *id = json_object_get(req, "id");
    const char *name = json_string_value(json_object_get(req, "workflow"));
    json_t *input = json_object_get(req, "input");
    json_t *wait = json_object_get(req, "wait");
    jobs_tenant *t = jobs_tenant_get(js, tenant);
    if (!t) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    if (jobs_queue_refuses(js, t, conn, id))
        return;
    double budget;
    char why[160];
    if (jobs_budget_parse(json_object_get(req, "budget"), &budget, why, sizeof why) < 0) {
        server_reply_error(conn, id, "invalid_request", "%s", why);
        return;
    }
    wfdir_version ver;
    dsl_graph *g = wfdir_get(js->wf, name, &ver);
    if (!g) {
        server_reply_error(conn, id, "unknown_workflow", "no workflow '%s' is loaded", name);
        return;
    }
    /* held ends and checkpoints come first: no new work while they wait */
    if (store_unavailable(js->store, NULL, NULL, 0)) {
        dsl_graph_unref(g);
        reply_store_unavailable(js, conn, id, NULL);
        return;
    }
    psubmit *p = calloc(1, sizeof *p);
    if (!p || !(p->workflow = strdup(name))) {
        free(p);
        dsl_graph_unref(g);
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    p->js = js;
    p->conn = server_conn_ref(conn);
    p->id = json_incref(id);
    p->g = g;
    p->input = input ? json_incref(input) : json_object();
    p->priority = json_integer_value(json_object_get(req, "priority"));
    p->traceparent = jobs_trace_parent_for(js, json_string_value(json_object_get(req, "traceparent")));
    p->tenant = t;
    p->budget_usd = budget;
    p->wait = json_is_true(wait) || json_is_number(wait);
    p->wait_s = json_is_number(wait) ? json_number_value(wait) : -1;
    const server_peer *peer = server_conn_peer(conn);
    store_job_spec_t spec = {
        .workflow = name, .version = ver.hash, .input = p->input, .priority = p->priority,
        .source = g->source, .source_len = g->source_len,
        .idempotency_key = json_string_value(json_object_get(req, "idempotency_key")),
        .has_peer = peer != NULL,
        .peer_uid = peer ? peer->uid : 0, .peer_gid = peer ? peer->gid : 0,
        .peer_pid = peer ? peer->pid : 0,
        .tenant = t->name,
    };
    spec.traceparent = p->traceparent;
    spec.budget = budget >= 0 ? json_object_get(req, "budget") : NULL;
    int rc = store_insert_job(js->store, &spec, on_inserted, p);
    if (rc < 0) {
        server_reply_error(conn, id, rc == -ESHUTDOWN ? "shutting_down" : "store_error",
                           "the job was not accepted: %s", strerror(-rc));
        psubmit_free(p);
    }
}

/* ---- cancel */

void jobs_cancel(jobs_t *js, server_conn_t *conn, json_t *id, const char *job)
{
    ljob *j = jobs_find(js, job);
    if (!j) {
        json_t *obj = jobs_job_object(js, job);
        const char *st = json_string_value(json_object_get(obj, "state"));
        if (!obj)
            server_reply_error(conn, id, "not_found", "no job %s", job);
        else if (st && strcmp(st, "waiting") == 0)
            jobs_cancel_waiting(js, conn, id, obj);
        else if (st && store_shared(js->store) &&
                 (strcmp(st, "queued") == 0 || strcmp(st, "running") == 0))
            jobs_cancel_elsewhere(js, conn, id, job); /* another daemon runs it */
        else
            server_reply(conn, id, json_pack("{s:s, s:O}", "job", job, "state",
                                             json_object_get(obj, "state")));
        json_decref(obj);
        return;
    }
    if (jobs_add_waiter(js, j, conn, id, W_CANCEL, -1) < 0) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    if (j->state == LJ_QUEUED) {
        jobs_queue_remove(js, j);
        json_t *e = json_pack("{s:s, s:s}", "code", "cancelled", "message", "cancelled before it started");
        store_outcome_t out = { .state = STORE_CANCELLED, .error = e };
        job_end(js, j, &out);
        json_decref(e);
    } else if (j->state == LJ_RUNNING) {
        engine_cancel(j->ej); /* on_job_done runs from inside */
    } /* LJ_ENDING: the reply comes with the end already on its way */
}

/* ---- start and stop */

void jobs_pinned_clear(jobs_t *js)
{
    for (size_t i = 0; i < js->npinned; i++)
        dsl_graph_unref(js->pinned[i]);
    free(js->pinned);
    js->pinned = NULL;
    js->npinned = 0;
    js->resuming = false;
}

/* Keeps a reference to G (an old version compiled for a resumed job) while
 * jobs_resume runs, so its other jobs do not compile it again. */
static void jobs_pinned_add(jobs_t *js, dsl_graph *g)
{
    if (!js->resuming)
        return;
    dsl_graph **v = realloc(js->pinned, (js->npinned + 1) * sizeof *v);
    if (!v)
        return; /* only a cache */
    js->pinned = v;
    v[js->npinned++] = dsl_graph_ref(g);
}

dsl_graph *jobs_stored_graph(jobs_t *js, const json_t *stored_job, wfdir_version *ver, char *err,
                             size_t errlen)
{
    const char *name = json_string_value(json_object_get(stored_job, "workflow"));
    const char *want = json_string_value(json_object_get(stored_job, "version"));
    memset(ver, 0, sizeof *ver);
    if (!name) {
        snprintf(err, errlen, "its record names no workflow");
        return NULL;
    }
    dsl_graph *g = wfdir_get(js->wf, name, ver);
    if (g && (!want || strcmp(ver->hash, want) == 0))
        return g;
    dsl_graph_unref(g);
    memset(ver, 0, sizeof *ver);
    if (!want) { /* a record from before versions were kept */
        snprintf(err, errlen, "its workflow %s is no longer loaded", name);
        return NULL;
    }
    for (size_t i = 0; i < js->npinned; i++)
        if (strcmp(js->pinned[i]->version, want) == 0) {
            snprintf(ver->hash, sizeof ver->hash, "%s", want);
            return dsl_graph_ref(js->pinned[i]);
        }
    /* the file changed or went: compile the text the job started with */
    char *text = NULL, label[300], why[400];
    size_t len = 0;
    if (store_get_source(js->store, want, &text, &len, NULL, why, sizeof why) < 0) {
        snprintf(err, errlen, "version %s of workflow %s is not loaded and the store does not "
                 "have its text (%s)", want, name, why);
        return NULL;
    }
    snprintf(label, sizeof label, "%s@%s", name, want);
    g = wfdir_compile_text(js->wf, label, text, len, why, sizeof why);
    free(text);
    if (!g) {
        snprintf(err, errlen, "version %s of workflow %s no longer compiles: %s", want, name,
                 why);
        return NULL;
    }
    if (strcmp(g->version, want) != 0) { /* cannot happen unless the store was edited */
        snprintf(err, errlen, "the stored text of workflow %s version %s hashes to %s", name,
                 want, g->version);
        dsl_graph_unref(g);
        return NULL;
    }
    snprintf(ver->hash, sizeof ver->hash, "%s", want);
    jobs_pinned_add(js, g);
    log_write(js->log, LOOM_LOG_INFO, json_pack("{s:s, s:s}", "workflow", name, "version", want),
              "compiled the stored version of a workflow for a job that started on it");
    return g;
}

int jobs_resume(jobs_t *js)
{
    json_t *jobs = NULL;
    char err[256];
    store_set_health_cb(js->store, on_store_health, js);
    if (store_unfinished_jobs(js->store, &jobs, err, sizeof err) < 0) {
        log_write(js->log, LOOM_LOG_ERROR, NULL, "cannot read unfinished jobs: %s", err);
        return -1;
    }
    jobs_quarantine(js, jobs); /* poison jobs end here; blamed ones resume once counted */
    size_t i, resumed = 0;
    json_t *o;
    js->resuming = true;
    json_array_foreach(jobs, i, o) {
        char why[512];
        int rc = jobs_load_stored(js, o, NULL, why, sizeof why);
        if (rc == -ENOMEM) {
            log_write(js->log, LOOM_LOG_ERROR, NULL, "cannot resume jobs: %s", why);
            jobs_pinned_clear(js);
            json_decref(jobs);
            return -1;
        }
        resumed += rc == 0; /* else it was ended, with the reason logged */
    }
    jobs_pinned_clear(js);
    json_decref(jobs);
    jobs_waits_arm(js);
    if (resumed)
        log_write(js->log, LOOM_LOG_INFO, json_pack("{s:I}", "jobs", (json_int_t)resumed),
                  "resuming unfinished jobs from their checkpoints");
    jobs_pump(js);
    return 0;
}

void jobs_abandon(jobs_t *js)
{
    if (js->pump_timer) {
        reactor_timer_cancel(js->r, js->pump_timer);
        js->pump_timer = NULL;
    }
    if (js->wait_timer) {
        reactor_timer_cancel(js->r, js->wait_timer);
        js->wait_timer = NULL;
    }
    js->hard_stop = true;
    while (!list_empty(&js->running)) /* on_job_done frees it, unrecorded */
        engine_cancel(LIST_OWNER(js->running.next, ljob, run)->ej);
    while (!list_empty(&js->active)) {
        jobs_tenant *t = LIST_OWNER(js->active.next, jobs_tenant, turn);
        ljob *j = t->queue[0];
        jobs_queue_remove(js, j);
        if (store_shared(js->store)) /* another daemon may run it now */
            (void)store_release_job(js->store, j->id, NULL, NULL);
        job_free(js, j);
    }
    if (js->rearm_timer) {
        reactor_timer_cancel(js->r, js->rearm_timer);
        js->rearm_timer = NULL;
    }
}

int jobs_init(jobs_t *js, reactor_t *r, store_t *store, wfdir *wf, log_sink *log,
              const jobs_hooks *hooks)
{
    *js = (jobs_t){ .r = r, .store = store, .wf = wf, .log = log, .hooks = *hooks,
                    .max_running = 1 };
    list_init(&js->running);
    list_init(&js->tenants);
    list_init(&js->active);
    return jobs_table_grow(js);
}

void jobs_set_limits(jobs_t *js, int64_t max_running, bool log_payloads)
{
    js->max_running = max_running;
    js->log_payloads = log_payloads;
}

void jobs_stop_starting(jobs_t *js)
{
    js->stopping = true;
}

bool jobs_idle(const jobs_t *js)
{
    return js->nrunning == 0 && js->njobs == js->nqueue;
}

void jobs_counts_get(const jobs_t *js, jobs_counts *out)
{
    *out = js->counts;
    out->queued = js->nqueue;
    out->running = js->nrunning;
}

void jobs_fini(jobs_t *js)
{
    jobs_abandon(js);
    jobs_release_held_waits(js, NULL);
    jobs_bwait_drop(js, NULL);
    jobs_rsub_drop(js, NULL);
    for (size_t i = 0; i < js->table_size; i++)
        while (js->table[i])
            job_free(js, js->table[i]); /* ending jobs whose store write never came back */
    jobs_pinned_clear(js);
    jobs_subs_drop(js->subs, &js->nsubs, NULL);
    free(js->subs);
    jobs_tsubs_drop(js, NULL);
    free(js->tsubs);
    free(js->table);
    jobs_tenants_free(js);
    js->table = NULL;
}
