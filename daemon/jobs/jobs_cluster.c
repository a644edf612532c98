/* jobs_cluster.c -- jobs beside other daemons on a shared (PostgreSQL) store.
 *
 * The store decides who runs a job (store.h, "the shared backend"): the
 * daemon that accepted it, then whoever claims it once its owner's lease
 * has expired. This file is what a daemon does about jobs it does not run:
 * it takes over claimed ones (jobs_adopt), answers `wait` and `events` for
 * jobs run elsewhere when their ends and steps are announced (or found by
 * the poll), forwards a cancel to the daemon that runs the job, and stops
 * a job of its own whose lease it lost, leaving it unrecorded: every write
 * of a daemon that lost its lease is refused by the store (-ESTALE), so
 * giving up at the first refusal costs nothing that was not already lost.
 *
 * Why waits and subscriptions are kept by job id (jobs_bwait.c and the
 * list below) rather than on an ljob: the job may come here later (a
 * takeover), leave (a lost lease), or never; the id is all that holds. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

/* How long one `watch` holds the relay of a job's events: the watcher says
 * it again at each of its polls (at most a second apart by default), and
 * one that went away stops costing notices this long after. */
#define JOBS_WATCH_US (10 * REACTOR_SEC)

/* A connection's `events` subscription to a job another daemon runs. */
struct jobs_rsub {
    struct jobs_rsub *next;
    server_conn_t *conn;       /* reference */
    char job[STORE_ID_SIZE];
};

size_t jobs_capacity(const jobs_t *js)
{
    if (js->stopping || js->hard_stop)
        return 0;
    /* a dead daemon's jobs queue here even when this one is busy: waiting
     * in a live daemon's queue beats waiting for a daemon that is gone. At
     * most one set of slots' worth a claim, so the survivors share them. */
    int64_t room = (js->max_queued > 0 ? js->max_queued : INT64_MAX) - (int64_t)js->nqueue;
    int64_t per_claim = js->max_running > 0 ? js->max_running : 1;
    int64_t n = room < per_claim ? room : per_claim;
    return n > 0 ? (size_t)n : 0;
}

int jobs_rsub_add(jobs_t *js, server_conn_t *conn, const char *job)
{
    for (struct jobs_rsub *s = js->rsubs; s; s = s->next)
        if (s->conn == conn && strcmp(s->job, job) == 0)
            return 0;
    struct jobs_rsub *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->conn = server_conn_ref(conn);
    snprintf(s->job, sizeof s->job, "%s", job);
    s->next = js->rsubs;
    js->rsubs = s;
    if (js->hooks.publish)
        js->hooks.publish(js->hooks.ud, "watch", job);
    return 0;
}

/* Hands the remote subscriptions to JOB over to J, now live here. */
static void rsub_take(jobs_t *js, ljob *j)
{
    struct jobs_rsub **p = &js->rsubs;
    while (*p) {
        struct jobs_rsub *s = *p;
        if (strcmp(s->job, j->id) != 0) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        (void)jobs_subs_add(&j->subs, &j->nsubs, &j->subs_cap, s->conn);
        server_conn_unref(s->conn);
        free(s);
    }
}

/* Sends EV (stolen; "job" and "time_ms" are added) to every remote
 * subscriber of JOB; with DROP, their subscriptions end (the job is over). */
static void rsub_emit(jobs_t *js, const char *job, json_t *ev, bool drop)
{
    if (!ev)
        return;
    json_object_set_new(ev, "job", json_string(job));
    json_object_set_new(ev, "time_ms", json_integer(store_now_ms()));
    struct jobs_rsub **p = &js->rsubs;
    while (*p) {
        struct jobs_rsub *s = *p;
        if (strcmp(s->job, job) != 0) {
            p = &s->next;
            continue;
        }
        server_send(s->conn, json_incref(ev));
        if (drop) {
            *p = s->next;
            server_conn_unref(s->conn);
            free(s);
        } else {
            p = &s->next;
        }
    }
    json_decref(ev);
}

static bool rsub_wanted(const jobs_t *js, const char *job)
{
    for (const struct jobs_rsub *s = js->rsubs; s; s = s->next)
        if (strcmp(s->job, job) == 0)
            return true;
    return false;
}

void jobs_remote_watch(jobs_t *js, const char *node, const char *job)
{
    (void)node;
    ljob *j = jobs_find(js, job);
    if (j && !j->gone)
        j->relay_until_us = reactor_now_us(js->r) + JOBS_WATCH_US;
}

void jobs_relay(jobs_t *js, ljob *j, const json_t *ev)
{
    if (!js->hooks.publish || reactor_now_us(js->r) >= j->relay_until_us)
        return;
    const char *name = json_string_value(json_object_get(ev, "event"));
    /* the end reaches the watchers as the store's own `end` notice */
    if (!name || strcmp(name, "job_finished") == 0)
        return;
    char *text = json_dumps(ev, JSON_COMPACT);
    char *args = NULL;
    if (text && asprintf(&args, "%s %s", j->id, text) > 0)
        js->hooks.publish(js->hooks.ud, "event", args); /* too long: dropped, best effort */
    free(args);
    free(text);
}

void jobs_remote_event(jobs_t *js, const char *node, const char *job, const char *event)
{
    if (jobs_find(js, job) || !rsub_wanted(js, job))
        return; /* runs here (its events are its own), or nobody here wants it */
    json_t *ev = json_loads(event, 0, NULL);
    const char *name = json_string_value(json_object_get(ev, "event"));
    if (!json_is_object(ev) || !name || strcmp(name, "job_finished") == 0) {
        json_decref(ev);
        return;
    }
    json_object_set_new(ev, "daemon", json_string(node));
    rsub_emit(js, job, ev, false);
}

void jobs_rsub_drop(jobs_t *js, server_conn_t *conn)
{
    struct jobs_rsub **p = &js->rsubs;
    while (*p) {
        struct jobs_rsub *s = *p;
        if (conn && s->conn != conn) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        server_conn_unref(s->conn);
        free(s);
    }
}

void jobs_remote_step(jobs_t *js, const char *node, const char *job, const char *key)
{
    if (jobs_find(js, job))
        return; /* its own events come from its run here */
    if (!rsub_wanted(js, job) && js->nsubs == 0)
        return;
    json_t *ev = json_pack("{s:s, s:s, s:s}", "event", "step_checkpointed", "key", key, "daemon",
                           node);
    /* the every-job subscribers of this daemon see only what runs here,
     * and this: the steps of jobs run elsewhere, as they are recorded */
    for (size_t i = 0; ev && i < js->nsubs; i++) {
        json_t *c = json_deep_copy(ev);
        if (c) {
            json_object_set_new(c, "job", json_string(job));
            json_object_set_new(c, "time_ms", json_integer(store_now_ms()));
            server_send(js->subs[i], c);
        }
    }
    rsub_emit(js, job, ev, false);
}

void jobs_remote_end(jobs_t *js, const char *job)
{
    if (jobs_find(js, job))
        return;
    jobs_bwait_end(js, job);
    if (!rsub_wanted(js, job))
        return;
    json_t *obj = jobs_job_object(js, job);
    const char *st = json_string_value(json_object_get(obj, "state"));
    if (st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
               strcmp(st, "cancelled") == 0)) {
        json_t *ev = json_pack("{s:s, s:s}", "event", "job_finished", "state", st);
        if (ev && json_is_object(json_object_get(obj, "error")))
            json_object_set(ev, "error", json_object_get(obj, "error"));
        rsub_emit(js, job, ev, true);
    }
    json_decref(obj);
}

void jobs_remote_poll(jobs_t *js)
{
    jobs_bwait_poll(js);
    /* subscriptions: each job checked once; rsub_emit may free entries, so
     * collect the ids first */
    char ids[64][STORE_ID_SIZE];
    size_t n = 0;
    for (struct jobs_rsub *s = js->rsubs; s && n < 64; s = s->next) {
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(ids[i], s->job) == 0;
        if (!dup)
            snprintf(ids[n++], STORE_ID_SIZE, "%s", s->job);
    }
    for (size_t i = 0; i < n; i++) {
        /* the owner may have changed (a takeover): it hears the watch anew */
        if (js->hooks.publish)
            js->hooks.publish(js->hooks.ud, "watch", ids[i]);
        jobs_remote_end(js, ids[i]);
    }
}

void jobs_hand_off(jobs_t *js, ljob *j)
{
    uint64_t now = reactor_now_us(js->r);
    while (j->waiters) {
        lwaiter *w = j->waiters;
        j->waiters = w->next;
        uint64_t deadline = 0;
        if (w->timer) {
            uint64_t at = reactor_timer_deadline_us(w->timer);
            deadline = at > now ? at : now;
        }
        if (jobs_bwait_add(js, w->conn, w->id, j->id, w->kind, deadline) < 0)
            server_reply_error(w->conn, w->id, "internal", "out of memory");
        jobs_waiter_free(w);
    }
    for (size_t i = 0; i < j->nsubs; i++)
        (void)jobs_rsub_add(js, j->subs[i], j->id);
}

void jobs_lease_lost(jobs_t *js, ljob *j, const char *why)
{
    if (j->gone)
        return;
    j->gone = true;
    log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", j->id),
              "this daemon no longer runs a job: %s", why);
    jobs_hand_off(js, j);
    if (j->state == LJ_QUEUED) {
        jobs_queue_remove(js, j);
        jobs_forget(js, j);
        js->hooks.settled(js->hooks.ud);
    } else if (j->state == LJ_RUNNING && j->ej) {
        engine_cancel(j->ej); /* on_job_done sees GONE and frees it unrecorded */
    } /* LJ_ENDING: on_finished frees it */
}

void jobs_remote_cancel(jobs_t *js, const char *job)
{
    ljob *j = jobs_find(js, job);
    if (!j || j->gone)
        return;
    /* the store has its end already (cancelled elsewhere): nothing of this
     * run can be recorded any more, so it stops and its waiters get that end */
    jobs_lease_lost(js, j, "it was cancelled through another daemon");
    jobs_bwait_end(js, job);
}

static void on_rearm(reactor_t *r, reactor_timer_t *t, void *ud)
{
    jobs_t *js = ud;
    (void)r;
    (void)t;
    js->rearm_timer = NULL;
    jobs_waits_arm(js);
}

void jobs_remote_parked(jobs_t *js)
{
    /* jobs_waits_arm reads every waiting job: at most once a second */
    if (!js->rearm_timer && !js->hard_stop)
        js->rearm_timer = reactor_timer_add(js->r, 1000 * REACTOR_MSEC, on_rearm, js);
}

void jobs_adopt(jobs_t *js, const json_t *jobs)
{
    size_t i, n = 0;
    json_t *o;
    json_array_foreach(jobs, i, o) {
        const char *id = json_string_value(json_object_get(o, "id"));
        if (!id || jobs_find(js, id))
            continue; /* cannot be: the store gave it a new epoch for us */
        char why[512];
        ljob *j = NULL;
        if (jobs_load_stored(js, o, &j, why, sizeof why) < 0 || !j)
            continue; /* ended with the reason logged, or out of memory */
        jobs_bwait_take(js, j);
        rsub_take(js, j);
        n++;
    }
    jobs_pinned_clear(js);
    if (n)
        log_write(js->log, LOOM_LOG_INFO, json_pack("{s:I}", "jobs", (json_int_t)n),
                  "took over jobs whose daemon stopped renewing their leases; they resume "
                  "from their checkpoints");
    jobs_pump(js);
}

/* ---- cancelling a job another daemon runs */

typedef struct pcancel_remote {
    jobs_t *js;
    server_conn_t *conn; /* reference */
    json_t *id;          /* reference */
} pcancel_remote;

static void on_cancelled_elsewhere(void *ud, const store_result_t *res)
{
    pcancel_remote *p = ud;
    jobs_t *js = p->js;
    if (res->status == 0) {
        if (js->hooks.publish)
            js->hooks.publish(js->hooks.ud, "cancel", res->job_id);
        if (js->hooks.job_closed)
            js->hooks.job_closed(js->hooks.ud, res->job_id);
    }
    if (res->status == 0 || res->status == -EALREADY) {
        json_t *obj = jobs_job_object(js, res->job_id);
        server_reply(p->conn, p->id, json_pack("{s:s, s:O}", "job", res->job_id, "state",
                                               json_object_get(obj, "state")));
        json_decref(obj);
        if (res->status == 0) /* waits and subscriptions kept here for it */
            jobs_remote_end(js, res->job_id);
    } else {
        server_reply_error(p->conn, p->id, "store_error", "the cancel was not recorded: %s",
                           res->error);
    }
    server_conn_unref(p->conn);
    json_decref(p->id);
    free(p);
}

void jobs_cancel_elsewhere(jobs_t *js, server_conn_t *conn, json_t *id, const char *job)
{
    pcancel_remote *p = calloc(1, sizeof *p);
    int rc = p ? 0 : -ENOMEM;
    if (rc == 0) {
        *p = (pcancel_remote){ js, server_conn_ref(conn), json_incref(id) };
        rc = store_cancel_job(js->store, job, on_cancelled_elsewhere, p);
    }
    if (rc < 0) {
        if (p) {
            server_conn_unref(p->conn);
            json_decref(p->id);
            free(p);
        }
        server_reply_error(conn, id, rc == -ESHUTDOWN ? "shutting_down" : "store_error",
                           "the cancel was not recorded: %s", strerror(-rc));
    }
}
