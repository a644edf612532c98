/* jobs_reply.c -- what jobs owe the clients: the replies of `wait`,
 * `submit` with a wait and `cancel` (waiters, answered when the job's end is
 * committed or their timeout fires) and the `events` subscriptions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

/* ---- events */

/* Adds CONN to the subscribers V once: 1 when it was there already (a
 * repeated `events` must not double every event), 0 when added. */
int jobs_subs_add(server_conn_t ***v, size_t *n, size_t *cap, server_conn_t *conn)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i] == conn)
            return 1;
    if (vec_reserve(v, *n, cap, sizeof **v, 4) < 0)
        return -ENOMEM;
    (*v)[(*n)++] = server_conn_ref(conn);
    return 0;
}

void jobs_subs_drop(server_conn_t **v, size_t *n, server_conn_t *conn)
{
    for (size_t i = 0; i < *n;)
        if (!conn || v[i] == conn) {
            server_conn_unref(v[i]);
            v[i] = v[--*n];
        } else {
            i++;
        }
}

/* Sends EV (stolen) to J's subscribers and to those of every job. */
void jobs_emit(jobs_t *js, ljob *j, json_t *ev)
{
    if (!ev)
        return;
    jobs_tokens_flush(j); /* a step's tokens come before its next event */
    json_object_set_new(ev, "job", json_string(j->id));
    json_object_set_new(ev, "time_ms", json_integer(store_now_ms()));
    for (size_t i = 0; i < j->nsubs; i++)
        server_send(j->subs[i], json_incref(ev));
    for (size_t i = 0; i < js->nsubs; i++)
        server_send(js->subs[i], json_incref(ev));
    for (size_t i = 0; i < js->ntsubs; i++)
        if (strcmp(js->tsubs[i].tenant, j->tenant->name) == 0)
            server_send(js->tsubs[i].conn, json_incref(ev));
    if (j->relay_until_us)
        jobs_relay(js, j, ev);
    json_decref(ev);
}

bool jobs_watched(jobs_t *js, ljob *j)
{
    return j->nsubs || js->nsubs || js->ntsubs ||
           (j->relay_until_us && reactor_now_us(js->r) < j->relay_until_us);
}

void jobs_tsubs_drop(jobs_t *js, server_conn_t *conn)
{
    for (size_t i = 0; i < js->ntsubs;)
        if (!conn || js->tsubs[i].conn == conn) {
            server_conn_unref(js->tsubs[i].conn);
            free(js->tsubs[i].tenant);
            js->tsubs[i] = js->tsubs[--js->ntsubs];
        } else {
            i++;
        }
}

void jobs_subscribe_tenant(jobs_t *js, server_conn_t *conn, json_t *id, const char *tenant)
{
    for (size_t i = 0; i < js->ntsubs; i++)
        if (js->tsubs[i].conn == conn && strcmp(js->tsubs[i].tenant, tenant) == 0) {
            server_reply(conn, id, json_pack("{s:b}", "subscribed", 1)); /* once is enough */
            return;
        }
    char *t = strdup(tenant);
    if (!t || vec_reserve(&js->tsubs, js->ntsubs, &js->tsubs_cap, sizeof *js->tsubs, 4) < 0) {
        free(t);
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    js->tsubs[js->ntsubs++] = (struct jobs_tenant_sub){ server_conn_ref(conn), t };
    server_reply(conn, id, json_pack("{s:b}", "subscribed", 1));
}

/* ---- replies */

/* J's job object from the store (new reference), or NULL. */
json_t *jobs_job_object(jobs_t *js, const char *id)
{
    json_t *o = NULL;
    char err[256];
    if (store_get_job(js->store, id, &o, err, sizeof err) < 0)
        return NULL;
    return o;
}

void jobs_waiter_free(lwaiter *w)
{
    if (w->timer)
        reactor_timer_cancel(w->js->r, w->timer);
    server_conn_unref(w->conn);
    json_decref(w->id);
    free(w);
}

/* Answers W (taken off its job by the caller) now, from OBJ (borrowed: the
 * job object, or NULL when it could not be read). */
void jobs_waiter_answer(lwaiter *w, json_t *obj, bool timed_out)
{
    const char *state = json_string_value(json_object_get(obj, "state"));
    json_t *body;
    if (!obj) {
        server_reply_error(w->conn, w->id, "store_error", "the job could not be read back");
        jobs_waiter_free(w);
        return;
    }
    /* an answer that is not a time-out is the job's end: never an earlier state */
    if (!timed_out && state && (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0)) {
        server_reply_error(w->conn, w->id, "store_error",
                           "job %s ended but its end is not recorded (the store says %s); "
                           "it resumes at the next start", w->job->id, state);
        jobs_waiter_free(w);
        return;
    }
    if (w->kind == W_CANCEL)
        body = json_pack("{s:s, s:s}", "job", w->job->id, "state", state ? state : "cancelled");
    else if (w->kind == W_SUBMIT)
        body = timed_out ? json_pack("{s:s, s:s, s:b}", "job", w->job->id, "state", state,
                                     "timed_out", 1)
                         : json_pack("{s:s, s:s, s:O, s:b}", "job", w->job->id, "state", state,
                                     "result", obj, "timed_out", 0);
    else
        body = json_pack("{s:O, s:b}", "job", obj, "timed_out", timed_out);
    server_reply(w->conn, w->id, body);
    jobs_waiter_free(w);
}

static void on_wait_timeout(reactor_t *r, reactor_timer_t *t, void *ud)
{
    lwaiter *w = ud;
    (void)r;
    (void)t;
    w->timer = NULL;
    lwaiter **p = &w->job->waiters;
    while (*p && *p != w)
        p = &(*p)->next;
    if (*p)
        *p = w->next;
    json_t *obj = jobs_job_object(w->js, w->job->id);
    jobs_waiter_answer(w, obj, true);
    json_decref(obj);
}

int jobs_add_waiter(jobs_t *js, ljob *j, server_conn_t *conn, json_t *id, int kind, double timeout_s)
{
    lwaiter *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->js = js;
    w->job = j;
    w->conn = server_conn_ref(conn);
    w->id = json_incref(id);
    w->kind = kind;
    if (timeout_s >= 0) {
        w->timer = reactor_timer_add(js->r, (uint64_t)(timeout_s * 1e6), on_wait_timeout, w);
        if (!w->timer) {
            jobs_waiter_free(w);
            return -ENOMEM;
        }
    }
    w->next = j->waiters;
    j->waiters = w;
    return 0;
}

void jobs_wait(jobs_t *js, server_conn_t *conn, json_t *id, const char *job, double timeout_s,
               bool as_submit)
{
    ljob *j = jobs_find(js, job);
    if (j) {
        if (jobs_add_waiter(js, j, conn, id, as_submit ? W_SUBMIT : W_WAIT, timeout_s) < 0)
            server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    json_t *obj = jobs_job_object(js, job);
    if (!obj) {
        server_reply_error(conn, id, "not_found", "no job %s", job);
        return;
    }
    const char *state = json_string_value(json_object_get(obj, "state"));
    bool unfinished = state && (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0);
    if (unfinished && js->held && !as_submit) {
        /* perhaps one whose resume waits for its crash count: asked again
         * when the held resumes are done (jobs_release_held_waits) */
        struct jobs_held_wait *hw = calloc(1, sizeof *hw);
        if (!hw) {
            server_reply_error(conn, id, "internal", "out of memory");
        } else {
            hw->conn = server_conn_ref(conn);
            hw->id = json_incref(id);
            snprintf(hw->job, sizeof hw->job, "%s", job);
            hw->timeout_s = timeout_s;
            hw->next = js->held_waits;
            js->held_waits = hw;
        }
        json_decref(obj);
        return;
    }
    /* parked on its batch lines: it goes on by itself, so its end is waited for */
    if (!as_submit && state && strcmp(state, "waiting") == 0 &&
        jobs_only_batch_waits(json_object_get(obj, "waits"))) {
        uint64_t deadline = timeout_s >= 0
                                ? reactor_now_us(js->r) + (uint64_t)(timeout_s * 1e6)
                                : 0;
        if (jobs_bwait_add(js, conn, id, job, W_WAIT, deadline) < 0)
            server_reply_error(conn, id, "internal", "out of memory");
        json_decref(obj);
        return;
    }
    /* run by another daemon on a shared store: its end is announced */
    if (unfinished && store_shared(js->store)) {
        uint64_t deadline = timeout_s >= 0
                                ? reactor_now_us(js->r) + (uint64_t)(timeout_s * 1e6)
                                : 0;
        if (jobs_bwait_add(js, conn, id, job, as_submit ? W_SUBMIT : W_WAIT, deadline) < 0)
            server_reply_error(conn, id, "internal", "out of memory");
        json_decref(obj);
        return;
    }
    /* not live here yet not over: nothing in this daemon will end it */
    if (unfinished) {
        server_reply_error(conn, id, "store_error",
                           "job %s is %s in the store but this daemon does not hold it (its "
                           "end could not be recorded); it resumes at the next start", job, state);
        json_decref(obj);
        return;
    }
    server_reply(conn, id, json_pack("{s:o, s:b}", "job", obj, "timed_out", 0));
}

void jobs_release_held_waits(jobs_t *js, const char *job)
{
    /* taken off first: jobs_wait may hold a wait again */
    struct jobs_held_wait *hw = js->held_waits, *next;
    js->held_waits = NULL;
    for (; hw; hw = next) {
        next = hw->next;
        /* once nothing is held, a wait left over is for a job that will not
         * be resumed: jobs_wait answers it from the store */
        if (job && strcmp(hw->job, job) != 0 && js->held) {
            hw->next = js->held_waits;
            js->held_waits = hw;
            continue;
        }
        if (job)
            jobs_wait(js, hw->conn, hw->id, hw->job, hw->timeout_s, false);
        else
            server_reply_error(hw->conn, hw->id, "shutting_down",
                               "the daemon stopped before job %s resumed", hw->job);
        server_conn_unref(hw->conn);
        json_decref(hw->id);
        free(hw);
    }
}

void jobs_subscribe(jobs_t *js, server_conn_t *conn, json_t *id, const char *job)
{
    int rc;
    if (job) {
        ljob *j = jobs_find(js, job);
        if (!j) {
            json_t *obj = jobs_job_object(js, job);
            if (!obj) {
                server_reply_error(conn, id, "not_found", "no job %s", job);
                return;
            }
            const char *st = json_string_value(json_object_get(obj, "state"));
            if (store_shared(js->store) && st &&
                (strcmp(st, "queued") == 0 || strcmp(st, "running") == 0 ||
                 strcmp(st, "waiting") == 0)) {
                /* run (or parked) elsewhere: its steps and end come as announced */
                json_decref(obj);
                if (jobs_rsub_add(js, conn, job) < 0)
                    server_reply_error(conn, id, "internal", "out of memory");
                else
                    server_reply(conn, id, json_pack("{s:b, s:b}", "subscribed", 1, "remote", 1));
                return;
            }
            /* already over: say so, as the stream would have */
            server_reply(conn, id, json_pack("{s:b}", "subscribed", 1));
            json_t *ev = json_pack("{s:s, s:s, s:O, s:I}", "event", "job_finished", "job", job,
                                   "state", json_object_get(obj, "state"), "time_ms",
                                   (json_int_t)store_now_ms());
            if (ev && json_is_object(json_object_get(obj, "error")))
                json_object_set(ev, "error", json_object_get(obj, "error"));
            server_send(conn, ev);
            json_decref(obj);
            return;
        }
        rc = jobs_subs_add(&j->subs, &j->nsubs, &j->subs_cap, conn);
    } else {
        rc = jobs_subs_add(&js->subs, &js->nsubs, &js->subs_cap, conn);
    }
    if (rc < 0)
        server_reply_error(conn, id, "internal", "out of memory");
    else
        server_reply(conn, id, json_pack("{s:b}", "subscribed", 1));
}

void jobs_conn_closed(jobs_t *js, server_conn_t *conn)
{
    jobs_subs_drop(js->subs, &js->nsubs, conn);
    jobs_tsubs_drop(js, conn);
    jobs_bwait_drop(js, conn);
    jobs_rsub_drop(js, conn);
    for (size_t i = 0; i < js->table_size; i++)
        for (ljob *j = js->table[i]; j; j = j->hnext) {
            jobs_subs_drop(j->subs, &j->nsubs, conn);
            jobs_tokens_drop(j, conn);
            for (lwaiter **p = &j->waiters; *p;) {
                lwaiter *w = *p;
                if (w->conn == conn) {
                    *p = w->next;
                    jobs_waiter_free(w);
                } else {
                    p = &w->next;
                }
            }
        }
}
