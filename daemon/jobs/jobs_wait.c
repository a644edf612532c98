/* jobs_wait.c -- jobs parked on `wait_for` nodes and on provider batch
 * lines: recorded waiting, woken by a signal, a deadline, or their batch
 * lines being done (the daemon's batch wiring calls jobs_wake_batch).
 *
 * A waiting job holds no worker and no memory: only its row (state
 * waiting, its waits: step key, signal name, node, deadline, the seq its
 * record takes, the schema of its data). What wakes it writes the wait's
 * checkpoint record under its step key, in the format the engine writes
 * (engine.h, engine_job_waits), makes it queued in the store and loads it
 * as a resumed job: its run replays every finished step, nothing is called
 * again, and the wait ends with the record (the signal's data as its
 * output, or a `timeout` error that its fallback or an enclosing retry may
 * take). One timer covers every deadline: the earliest of the store's
 * waiting jobs, read again whenever a job parks or wakes, and at start, so
 * deadlines hold across restarts.
 *
 * Several pending waits of one job may share a name (the waits of a map's
 * items with a constant name, say): a signal delivers its data to every
 * one of them.
 *
 * A batch wait ({key, node, batch, seq}: engine.h) has no signal and no
 * deadline, so neither a signal nor the deadline timer ever ends it; its
 * wake writes no record: the run it resumes looks its line up again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"
#include "dsl/schema.h"

/* ---- parking */

/* The deadline (unix ms) of wait W, or 0 for none: kept from PREV (the
 * waits the job had before it woke) when the same step waits again, so a
 * wait's deadline does not move because another wait of its job was
 * signalled. */
static int64_t wait_deadline(const json_t *w, const json_t *prev, int64_t now)
{
    json_int_t t = json_integer_value(json_object_get(w, "timeout_ms"));
    if (t <= 0)
        return 0;
    const char *key = json_string_value(json_object_get(w, "key"));
    size_t i;
    json_t *p;
    json_array_foreach(prev, i, p) {
        json_t *d = json_object_get(p, "deadline_ms");
        const char *pk = json_string_value(json_object_get(p, "key"));
        if (key && pk && json_is_integer(d) && strcmp(key, pk) == 0)
            return json_integer_value(d);
    }
    return now + t;
}

#define only_batch_waits jobs_only_batch_waits

static void on_parked(void *ud, const store_result_t *res)
{
    ljob *j = ud;
    jobs_t *js = j->js;
    char id[STORE_ID_SIZE];
    snprintf(id, sizeof id, "%s", j->id); /* for the parked hook, after J is gone */
    json_t *obj = res->status == 0 ? jobs_job_object(js, j->id) : NULL;
    if (res->status < 0)
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:s}", "job", j->id),
                  "a waiting job was not recorded as waiting (%s): it resumes at the next start "
                  "and waits again", res->error);
    else {
        /* once on disk: from here a signal finds it waiting */
        log_write(js->log, LOOM_LOG_INFO,
                  json_pack("{s:s, s:s, s:I}", "job", j->id, "workflow", j->workflow, "waits",
                            (json_int_t)json_array_size(json_object_get(obj, "waits"))),
                  only_batch_waits(json_object_get(obj, "waits")) ? "job waiting for its batch lines"
                                                                  : "job waiting for a signal");
        jobs_emit(js, j, json_pack("{s:s, s:O}", "event", "job_waiting", "waits",
                                   json_object_get(obj, "waits")));
    }
    bool goes_on = obj && only_batch_waits(json_object_get(obj, "waits"));
    while (j->waiters) {
        lwaiter *w = j->waiters;
        j->waiters = w->next;
        /* parked on its batch lines, it goes on by itself: a wait for its
         * end is kept for it (jobs_bwait.c), with the time it has left */
        if (goes_on && w->kind != W_CANCEL &&
            jobs_bwait_add(js, w->conn, w->id, j->id, w->kind,
                           w->timer ? reactor_timer_deadline_us(w->timer) : 0) == 0) {
            jobs_waiter_free(w);
            continue;
        }
        if (obj) {
            jobs_waiter_answer(w, obj, false);
            continue;
        }
        server_reply_error(w->conn, w->id, "store_error",
                           "job %s waits for a signal but could not be recorded so (%s); it "
                           "resumes at the next start", j->id, res->error);
        jobs_waiter_free(w);
    }
    jobs_forget(js, j);
    /* a line may have ended while the job was on its way to the disk */
    if (obj && js->hooks.parked)
        js->hooks.parked(js->hooks.ud, id, json_object_get(obj, "waits"));
    json_decref(obj);
    js->hooks.settled(js->hooks.ud);
    jobs_waits_arm(js);
}

void jobs_park(jobs_t *js, ljob *j, json_t *waits)
{
    int64_t now = store_now_ms();
    json_t *stored = json_array();
    size_t i;
    json_t *w;
    json_array_foreach(waits, i, w) {
        json_t *c = json_deep_copy(w);
        int64_t d = wait_deadline(w, j->prev_waits, now);
        if (!c || json_object_set_new(c, "deadline_ms", d ? json_integer(d) : json_null()) < 0 ||
            json_array_append_new(stored, c) < 0) {
            json_decref(c);
            json_decref(stored);
            stored = NULL;
            break;
        }
    }
    j->state = LJ_ENDING;
    int rc = stored ? store_set_waiting(js->store, j->id, stored, on_parked, j) : -ENOMEM;
    json_decref(stored);
    if (rc < 0) {
        store_result_t res = { .status = rc, .job_id = j->id, .error = strerror(-rc) };
        on_parked(j, &res);
    }
}

/* ---- waking */

/* A wake on its way to the disk: the reply owed when it gets there. */
typedef struct pwake {
    jobs_t *js;
    server_conn_t *conn;       /* reference, or NULL: a deadline woke it */
    json_t *id;                /* reference */
    json_t *reply;             /* owned: the answer once committed */
    bool batch;                /* its batch lines woke it */
    char job[STORE_ID_SIZE];
} pwake;

static void pwake_free(pwake *p)
{
    if (p->conn)
        server_conn_unref(p->conn);
    json_decref(p->id);
    json_decref(p->reply);
    free(p);
}

static void on_woken(void *ud, const store_result_t *res)
{
    pwake *p = ud;
    jobs_t *js = p->js;
    if (res->status < 0) {
        /* the job ended meanwhile (a cancel got there first): drop the copy
         * loaded to run, if it has not started */
        ljob *j = jobs_find(js, p->job);
        if (j && j->state == LJ_QUEUED && res->status == -EALREADY) {
            jobs_queue_remove(js, j);
            jobs_forget(js, j);
        }
        log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", p->job),
                  "a waiting job was not woken: %s", res->error);
        if (p->conn)
            server_reply_error(p->conn, p->id, res->status == -EALREADY ? "not_waiting"
                               : "store_error", "%s", res->error);
    } else if (p->conn) {
        server_reply(p->conn, p->id, json_incref(p->reply));
    }
    pwake_free(p);
    jobs_pump(js);
}

/* Wakes waiting job OBJ (a stored job object, borrowed; not live) with
 * RECORDS ({KEY: RECORD}, borrowed): each is checkpointed, the job made
 * queued, and loaded to run at once with them in its replay (the store's
 * writes are applied in order, so its start is recorded after both). P
 * (owned) is answered once the wake is on disk. 0 or -1 (P answered). */
static int wake(jobs_t *js, const json_t *obj, json_t *records, pwake *p)
{
    const char *job = json_string_value(json_object_get(obj, "id"));
    char why[512];
    const char *key;
    json_t *rec;
    json_object_foreach(records, key, rec) {
        int rc = store_checkpoint_step(js->store, job, key, rec, NULL, 0, NULL, NULL);
        if (rc < 0) {
            snprintf(why, sizeof why, "its record could not be stored: %s", strerror(-rc));
            goto fail;
        }
    }
    ljob *j = NULL;
    if (jobs_load_stored(js, obj, &j, why, sizeof why) < 0)
        goto fail;
    if (!j->replay)
        j->replay = json_object();
    jobs_bwait_take(js, j); /* who waits for its end waits for it live again */
    if (!j->replay || json_object_update(j->replay, records) < 0 ||
        !(j->prev_waits = json_incref(json_object_get(obj, "waits")))) {
        snprintf(why, sizeof why, "out of memory");
        goto drop;
    }
    int rc = store_wake_job(js->store, job, on_woken, p);
    if (rc < 0) {
        snprintf(why, sizeof why, "%s", strerror(-rc));
        goto drop;
    }
    log_write(js->log, LOOM_LOG_INFO, json_pack("{s:s, s:I}", "job", job, "steps",
                                                (json_int_t)json_object_size(records)),
              p->conn    ? "job woken by a signal"
              : p->batch ? "job woken for its batch lines"
                         : "job woken by a wait's deadline");
    return 0;
drop:
    jobs_queue_remove(js, j);
    jobs_forget(js, j);
fail:
    log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", job), "a waiting job was not "
              "woken: %s", why);
    if (p->conn)
        server_reply_error(p->conn, p->id, "store_error", "job %s was not woken: %s", job, why);
    pwake_free(p);
    return -1;
}

/* The checkpoint record of wait W: OUTPUT (borrowed) or ERR (stolen). */
static json_t *wait_record(const json_t *w, json_t *output, json_t *err)
{
    json_int_t seq = json_integer_value(json_object_get(w, "seq"));
    if (err)
        return json_pack("{s:o, s:i, s:I}", "error", err, "attempts", 1, "seq", seq);
    return json_pack("{s:O, s:i, s:I}", "output", output, "attempts", 1, "seq", seq);
}

/* ---- signals */

/* Pending signal names of WAITS, for messages: "a, b". */
static void wait_names(const json_t *waits, char *out, size_t n)
{
    size_t i, k = 0;
    json_t *w;
    out[0] = '\0';
    json_array_foreach(waits, i, w) {
        const char *s = json_string_value(json_object_get(w, "signal"));
        if (s && k < n)
            k += (size_t)snprintf(out + k, n - k, "%s%s", k ? ", " : "", s);
    }
}

void jobs_signal(jobs_t *js, server_conn_t *conn, json_t *id, const char *job,
                 const char *signal, json_t *data)
{
    json_t *obj = NULL, *records = NULL;
    char msg[512];
    if (jobs_find(js, job)) {
        server_reply_error(conn, id, "not_waiting", "job %s is queued or running, not waiting: "
                           "signal it once it waits (get shows its state)", job);
        return;
    }
    if (!(obj = jobs_job_object(js, job))) {
        server_reply_error(conn, id, "not_found", "no job %s", job);
        return;
    }
    const char *state = json_string_value(json_object_get(obj, "state"));
    json_t *waits = json_object_get(obj, "waits");
    if (!state || strcmp(state, "waiting") != 0) {
        server_reply_error(conn, id, "not_waiting", "job %s is %s, not waiting", job,
                           state ? state : "in an unknown state");
        goto out;
    }
    if (!data)
        data = json_null();
    if (!(records = json_object()))
        goto oom;
    json_t *nodes = json_array();
    size_t i;
    json_t *w;
    json_array_foreach(waits, i, w) {
        const char *s = json_string_value(json_object_get(w, "signal"));
        const char *key = json_string_value(json_object_get(w, "key"));
        if (!s || !key || strcmp(s, signal) != 0)
            continue;
        json_t *doc = json_object_get(w, "schema");
        if (json_is_object(doc)) {
            char ptr[128], why[300];
            dsl_schema *sc = dsl_schema_compile(doc, ptr, sizeof ptr, why, sizeof why);
            int bad = !sc ? -1 : dsl_schema_validate(sc, data, why, sizeof why);
            dsl_schema_free(sc);
            if (bad) {
                const char *node = json_string_value(json_object_get(w, "node"));
                server_reply_error(conn, id, "invalid_signal", "the data of signal '%s' does not "
                                   "fit the schema of %s: %s", signal, node ? node : "its wait",
                                   why);
                json_decref(nodes);
                goto out;
            }
        }
        json_t *rec = wait_record(w, data, NULL);
        if (!rec || json_object_set_new(records, key, rec) < 0 || !nodes ||
            json_array_append(nodes, json_object_get(w, "node")) < 0) {
            json_decref(nodes);
            goto oom;
        }
    }
    if (json_object_size(records) == 0) {
        wait_names(waits, msg, sizeof msg);
        server_reply_error(conn, id, "unknown_signal", "job %s does not wait for '%s'; it waits "
                           "for: %s", job, signal, *msg ? msg : "nothing");
        json_decref(nodes);
        goto out;
    }
    pwake *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(nodes);
        goto oom;
    }
    p->js = js;
    p->conn = server_conn_ref(conn);
    p->id = json_incref(id);
    snprintf(p->job, sizeof p->job, "%s", job);
    p->reply = json_pack("{s:s, s:s, s:s, s:o}", "job", job, "state", "queued", "signal",
                         signal, "nodes", nodes);
    (void)wake(js, obj, records, p);
    goto out;
oom:
    server_reply_error(conn, id, "internal", "out of memory");
out:
    json_decref(records);
    json_decref(obj);
}

/* ---- batch lines */

int jobs_wake_batch(jobs_t *js, const char *job)
{
    if (jobs_find(js, job))
        return 1;
    json_t *obj = jobs_job_object(js, job);
    const char *state = json_string_value(json_object_get(obj, "state"));
    if (!state || strcmp(state, "waiting") != 0) {
        json_decref(obj);
        return 1;
    }
    json_t *records = json_object();
    pwake *p = records ? calloc(1, sizeof *p) : NULL;
    int rc = -1;
    if (!p) {
        log_write(js->log, LOOM_LOG_ERROR, json_pack("{s:s}", "job", job),
                  "a job whose batch lines are done was not woken: out of memory");
        goto out;
    }
    p->js = js;
    p->batch = true;
    snprintf(p->job, sizeof p->job, "%s", job);
    rc = wake(js, obj, records, p); /* P is its from here */
out:
    json_decref(records);
    json_decref(obj);
    return rc < 0 ? -1 : 0;
}

void jobs_event(jobs_t *js, const char *job, json_t *ev)
{
    if (!ev)
        return;
    ljob *j = jobs_find(js, job);
    if (j) {
        jobs_emit(js, j, ev);
        return;
    }
    json_t *obj = js->ntsubs ? jobs_job_object(js, job) : NULL;
    const char *tenant = json_string_value(json_object_get(obj, "tenant"));
    json_object_set_new(ev, "job", json_string(job));
    json_object_set_new(ev, "time_ms", json_integer(store_now_ms()));
    for (size_t i = 0; i < js->nsubs; i++)
        server_send(js->subs[i], json_incref(ev));
    for (size_t i = 0; obj && i < js->ntsubs; i++)
        if (strcmp(js->tsubs[i].tenant, tenant ? tenant : "default") == 0)
            server_send(js->tsubs[i].conn, json_incref(ev));
    json_decref(obj);
    json_decref(ev);
}

/* ---- cancel */

typedef struct pcancel {
    server_conn_t *conn;
    json_t *id;
    jobs_t *js;
} pcancel;

static void on_cancelled(void *ud, const store_result_t *res)
{
    pcancel *p = ud;
    if (res->status == 0 && p->js->hooks.job_closed)
        p->js->hooks.job_closed(p->js->hooks.ud, res->job_id);
    if (res->status == 0 || res->status == -EALREADY) {
        json_t *obj = jobs_job_object(p->js, res->job_id);
        server_reply(p->conn, p->id, json_pack("{s:s, s:O}", "job", res->job_id, "state",
                                               json_object_get(obj, "state")));
        json_decref(obj);
    } else {
        server_reply_error(p->conn, p->id, "store_error", "the cancel was not recorded: %s",
                           res->error);
    }
    server_conn_unref(p->conn);
    json_decref(p->id);
    jobs_waits_arm(p->js);
    free(p);
}

void jobs_cancel_waiting(jobs_t *js, server_conn_t *conn, json_t *id, const json_t *obj)
{
    const char *job = json_string_value(json_object_get(obj, "id"));
    pcancel *p = calloc(1, sizeof *p);
    json_t *e = json_pack("{s:s, s:s}", "code", "cancelled", "message",
                          only_batch_waits(json_object_get(obj, "waits"))
                              ? "cancelled while it waited for its batch lines"
                              : "cancelled while it waited for a signal");
    store_outcome_t out = { .state = STORE_CANCELLED, .error = e };
    int rc = p && e ? 0 : -ENOMEM;
    if (rc == 0) {
        *p = (pcancel){ server_conn_ref(conn), json_incref(id), js };
        rc = store_finish_job(js->store, job, &out, on_cancelled, p);
    }
    json_decref(e);
    if (rc < 0) {
        if (p && p->conn) {
            server_conn_unref(p->conn);
            json_decref(p->id);
        }
        free(p);
        server_reply_error(conn, id, "store_error", "the cancel was not recorded: %s",
                           strerror(-rc));
    }
}

/* ---- deadlines */

static void on_deadline(reactor_t *r, reactor_timer_t *t, void *ud)
{
    jobs_t *js = ud;
    (void)r;
    (void)t;
    js->wait_timer = NULL;
    json_t *jobs = NULL;
    char err[256];
    if (store_waiting_jobs(js->store, &jobs, err, sizeof err) < 0) {
        log_write(js->log, LOOM_LOG_ERROR, NULL, "cannot read waiting jobs: %s", err);
        return;
    }
    int64_t now = store_now_ms();
    size_t i;
    json_t *o;
    json_array_foreach(jobs, i, o) {
        const char *job = json_string_value(json_object_get(o, "id"));
        if (!job || jobs_find(js, job))
            continue;
        json_t *records = json_object(), *w;
        size_t k;
        json_array_foreach(json_object_get(o, "waits"), k, w) {
            json_t *d = json_object_get(w, "deadline_ms");
            const char *key = json_string_value(json_object_get(w, "key"));
            if (!records || !key || !json_is_integer(d) || json_integer_value(d) > now)
                continue;
            char m[400];
            const char *sig = json_string_value(json_object_get(w, "signal"));
            snprintf(m, sizeof m, "no signal '%s' came within %lld ms", sig ? sig : "?",
                     (long long)json_integer_value(json_object_get(w, "timeout_ms")));
            json_t *e = json_pack("{s:s, s:s, s:O, s:i}", "code", "timeout", "message", m, "node",
                                  json_object_get(w, "node"), "attempts", 1);
            json_t *rec = e ? wait_record(w, NULL, e) : NULL;
            if (rec)
                json_object_set_new(records, key, rec);
        }
        pwake *p = json_object_size(records) ? calloc(1, sizeof *p) : NULL;
        if (p) {
            p->js = js;
            snprintf(p->job, sizeof p->job, "%s", job);
            (void)wake(js, o, records, p);
        }
        json_decref(records);
    }
    json_decref(jobs);
    jobs_waits_arm(js);
    jobs_pump(js);
}

void jobs_waits_arm(jobs_t *js)
{
    if (js->wait_timer) {
        reactor_timer_cancel(js->r, js->wait_timer);
        js->wait_timer = NULL;
    }
    if (js->hard_stop || !js->store)
        return;
    json_t *jobs = NULL;
    char err[256];
    if (store_waiting_jobs(js->store, &jobs, err, sizeof err) < 0) {
        log_write(js->log, LOOM_LOG_ERROR, NULL, "cannot read waiting jobs, so their deadlines "
                  "are not watched until one parks or wakes: %s", err);
        return;
    }
    int64_t next = INT64_MAX;
    size_t i, k;
    json_t *o, *w;
    json_array_foreach(jobs, i, o) {
        const char *job = json_string_value(json_object_get(o, "id"));
        if (!job || jobs_find(js, job)) /* being woken already */
            continue;
        json_array_foreach(json_object_get(o, "waits"), k, w) {
            json_t *d = json_object_get(w, "deadline_ms");
            if (json_is_integer(d) && json_integer_value(d) < next)
                next = json_integer_value(d);
        }
    }
    json_decref(jobs);
    if (next == INT64_MAX)
        return;
    int64_t delay = next - store_now_ms();
    js->wait_timer = reactor_timer_add(js->r, (uint64_t)(delay > 0 ? delay : 0) * REACTOR_MSEC,
                                       on_deadline, js);
}
