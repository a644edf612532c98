/* jobs_quarantine.c -- poison jobs: a job whose plugin code takes the
 * daemon down with it at every start would otherwise crash it forever.
 *
 * At start, before the unfinished jobs resume, the record of plugin code in
 * flight that the previous process left (daemon/core/inflight.h) names the
 * jobs to blame:
 *   - it ended cleanly (or there is no record): nobody;
 *   - a crash handler noted a signal: the job in the crashing thread's slot
 *     (nobody when that thread ran no plugin code: a crash of Loom's own);
 *   - it died with no signal noted (kill -9, a watchdog, the OOM killer):
 *     every job that had plugin code in flight. A job waiting on HTTP or a
 *     timer runs no plugin code, so a kill then blames nobody.
 * A blamed job's count of crashes in a row goes up by one; an unfinished
 * job not blamed at this start gets its count reset. A job whose count
 * reaches quarantine_after is not resumed: it ends failed with the code
 * `crashed`, its message naming the step, the plugin function and the
 * signal. A job whose count changes resumes only once the new count is on
 * disk: resumed earlier, it could crash the daemon again before the count
 * was written, and never reach the limit.
 *
 * `retry` makes a failed job (quarantined or not) queued again as a new
 * attempt, with its checkpoints: steps that succeeded are not run again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

/* ---- blame at start */

/* A job held back until its new crash count is committed. */
typedef struct qheld {
    jobs_t *js;
    json_t *job;               /* reference: the store's job object */
} qheld;

static void resume_held(jobs_t *js, json_t *job)
{
    char err[512];
    /* a stop began meanwhile: the job stays unfinished and resumes at the
     * next start */
    if (js->stopping || js->hard_stop)
        return;
    if (jobs_load_stored(js, job, NULL, err, sizeof err) == -ENOMEM)
        log_write(js->log, LOOM_LOG_ERROR,
                  json_pack("{s:s?}", "job", json_string_value(json_object_get(job, "id"))),
                  "cannot resume a job: out of memory; it resumes at the next start");
    jobs_pump(js);
}

static void on_count_stored(void *ud, const store_result_t *res)
{
    qheld *h = ud;
    jobs_t *js = h->js;
    const char *id = json_string_value(json_object_get(h->job, "id"));
    js->held--;
    if (res->status == -EALREADY || res->status == -ENOENT) { /* ended or gone meanwhile */
        jobs_release_held_waits(js, id);
        json_decref(h->job);
        free(h);
        return;
    }
    if (res->status < 0)
        log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s?}", "job", res->job_id),
                  "a job's count of crashes was not stored (%s); it resumes anyway", res->error);
    resume_held(js, h->job);
    jobs_release_held_waits(js, id);
    json_decref(h->job);
    free(h);
}

/* Stores COUNT and CRASH (borrowed, may be NULL) for JOB (borrowed), then
 * resumes it unless END: 0, or -1 when nothing could be queued (then the
 * job resumes at once when it should resume). */
static int store_count(jobs_t *js, json_t *job, int64_t count, const json_t *crash, bool end)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    qheld *h = end ? NULL : calloc(1, sizeof *h);
    if (!end && !h)
        goto now;
    if (h) {
        h->js = js;
        h->job = json_incref(job);
    }
    int rc = store_set_crashes(js->store, id, count, crash, h ? on_count_stored : NULL, h);
    if (rc == 0) {
        js->held += h != NULL;
        return 0;
    }
    log_write(js->log, LOOM_LOG_WARN, json_pack("{s:s}", "job", id),
              "a job's count of crashes cannot be stored: %s", strerror(-rc));
    if (h) {
        json_decref(h->job);
        free(h);
    }
now:
    if (!end)
        resume_held(js, job);
    return -1;
}

/* The entry of P that blames job ID, or NULL: only the crashing thread's
 * when a signal was noted, else any. */
static const inflight_entry *blame_of(const inflight_prev *p, const char *id)
{
    if (!p || !p->found || p->clean)
        return NULL;
    if (p->signal) {
        const inflight_entry *e = inflight_prev_slot(p, p->crash_slot);
        return e && strcmp(e->job, id) == 0 ? e : NULL;
    }
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->entries[i].job, id) == 0)
            return &p->entries[i];
    return NULL;
}

/* One line for people on how the previous process ended, at start. */
static void log_previous(jobs_t *js, const inflight_prev *p)
{
    char sig[32];
    if (!p || !p->found || p->clean)
        return;
    if (p->signal) {
        const inflight_entry *e = inflight_prev_slot(p, p->crash_slot);
        if (e)
            log_write(js->log, LOOM_LOG_WARN,
                      json_pack("{s:s, s:s, s:s, s:s, s:I}", "job", e->job, "step", e->step,
                                "function", e->fn, "signal",
                                inflight_signal_name(p->signal, sig, sizeof sig), "pid",
                                (json_int_t)p->pid),
                      "the previous run crashed (%s) in plugin code: %s, step %s of job %s",
                      sig, e->fn, e->step, e->job);
        else
            log_write(js->log, LOOM_LOG_WARN,
                      json_pack("{s:s, s:I}", "signal",
                                inflight_signal_name(p->signal, sig, sizeof sig), "pid",
                                (json_int_t)p->pid),
                      "the previous run crashed (%s) outside plugin code: no job is blamed", sig);
        return;
    }
    log_write(js->log, LOOM_LOG_WARN,
              json_pack("{s:I, s:I}", "calls", (json_int_t)p->n, "pid", (json_int_t)p->pid),
              "the previous run did not stop cleanly and noted no crash signal (killed?): "
              "%zu call%s of plugin code %s in flight%s", p->n, p->n == 1 ? "" : "s",
              p->n == 1 ? "was" : "were",
              p->n == 0 ? "" : p->n == 1 ? ", its job is blamed" : ", their jobs are blamed");
}

void jobs_quarantine(jobs_t *js, json_t *jobs)
{
    const inflight_prev *p = js->crashed;
    int64_t limit = js->quarantine_after > 0 ? js->quarantine_after : JOBS_QUARANTINE_DEFAULT;
    char sig[32];
    log_previous(js, p);
    for (size_t i = 0; i < json_array_size(jobs);) {
        json_t *o = json_array_get(jobs, i);
        const char *id = json_string_value(json_object_get(o, "id"));
        int64_t before = json_integer_value(json_object_get(o, "crashes"));
        const inflight_entry *e = id ? blame_of(p, id) : NULL;
        if (!e && before <= 0) {
            i++;
            continue;
        }
        json_incref(o); /* taken out of JOBS below */
        if (!e) { /* the streak is broken: resumes once the reset is on disk */
            json_array_remove(jobs, i);
            store_count(js, o, 0, NULL, false);
            json_decref(o);
            continue;
        }
        int64_t count = before + 1;
        const char *signame = p->signal ? inflight_signal_name(p->signal, sig, sizeof sig) : NULL;
        json_t *crash = json_pack("{s:s, s:s, s:s?}", "step", e->step, "function", e->fn,
                                  "signal", signame);
        json_array_remove(jobs, i);
        if (count < limit) {
            log_write(js->log, LOOM_LOG_WARN,
                      json_pack("{s:s, s:s, s:s, s:I, s:I}", "job", id, "step", e->step,
                                "function", e->fn, "crashes", (json_int_t)count, "limit",
                                (json_int_t)limit),
                      "job %s was running %s (step %s) when the daemon died: crash %lld of "
                      "%lld in a row before it is quarantined; it resumes", id, e->fn, e->step,
                      (long long)count, (long long)limit);
            store_count(js, o, count, crash, false);
            json_decref(crash);
            json_decref(o);
            continue;
        }
        char msg[768];
        snprintf(msg, sizeof msg,
                 "quarantined: the daemon died %lld time%s in a row while this job ran plugin "
                 "code, the last time (%s) in %s at step %s; `loomctl retry %s` runs it again",
                 (long long)count, count == 1 ? "" : "s",
                 signame ? signame : "killed, no crash signal", e->fn, e->step, id);
        json_t *err = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:I}", "code", "crashed", "message",
                                msg, "step", e->step, "function", e->fn, "signal", signame,
                                "crashes", (json_int_t)count);
        (void)store_count(js, o, count, crash, true);
        store_outcome_t end = { .state = STORE_FAILED, .error = err };
        int rc = err ? store_finish_job(js->store, id, &end, NULL, NULL) : -ENOMEM;
        log_write(js->log, LOOM_LOG_ERROR,
                  json_pack("{s:s, s:s, s:s, s:s?, s:I}", "job", id, "step", e->step, "function",
                            e->fn, "signal", signame, "crashes", (json_int_t)count),
                  "job %s quarantined: it was running %s (step %s) at %lld crashes of the daemon "
                  "in a row (the last: %s); it ends failed with code crashed%s", id, e->fn,
                  e->step, (long long)count, signame ? signame : "killed",
                  rc < 0 ? ", but its end could not be stored and it is not resumed this time"
                         : "");
        json_decref(err);
        json_decref(crash);
        json_decref(o);
    }
}

/* ---- retry */

/* Answers store_unavailable with a hint of when to try again, as a submit's
 * refusal does (docs/protocol.md). */
static void reply_unavailable(jobs_t *js, server_conn_t *conn, json_t *id, const char *why)
{
    int64_t after = 0;
    char held[200] = "";
    if (!store_unavailable(js->store, &after, held, sizeof held))
        after = 1000;
    server_reply(conn, id, json_pack("{s:b, s:{s:s, s:s+, s:I}}", "ok", 0, "error", "code",
                                     "store_unavailable", "message",
                                     "the job store cannot write (disk full?); retry later: ",
                                     why && *why ? why : held, "retry_after_ms",
                                     (json_int_t)after));
}

typedef struct pretry {
    jobs_t *js;
    server_conn_t *conn;       /* reference */
    json_t *id;                /* reference */
    char job[STORE_ID_SIZE];
} pretry;

static void pretry_free(pretry *p)
{
    server_conn_unref(p->conn);
    json_decref(p->id);
    free(p);
}

static void on_retried(void *ud, const store_result_t *res)
{
    pretry *p = ud;
    jobs_t *js = p->js;
    char err[512];
    if (res->status == -ENOENT) {
        server_reply_error(p->conn, p->id, "not_found", "no job %s", p->job);
        goto out;
    }
    if (res->status == -EPERM) {
        server_reply_error(p->conn, p->id, "not_retryable", "%s", res->error);
        goto out;
    }
    if (res->status < 0) {
        if (store_status_transient(res->status))
            reply_unavailable(js, p->conn, p->id, res->error);
        else
            server_reply_error(p->conn, p->id, "store_error", "job %s was not retried: %s",
                               p->job, res->error);
        goto out;
    }
    json_t *o = NULL;
    if (store_get_job(js->store, p->job, &o, err, sizeof err) < 0) {
        server_reply_error(p->conn, p->id, "store_error",
                           "job %s is queued again but cannot be read (%s); it runs at the next "
                           "start", p->job, err);
        goto out;
    }
    json_int_t attempt = json_integer_value(json_object_get(o, "attempt"));
    int rc = 0;
    /* a stop began meanwhile: it is queued on disk and runs at the next start */
    if (!js->stopping && !js->hard_stop && !jobs_find(js, p->job))
        rc = jobs_load_stored(js, o, NULL, err, sizeof err);
    json_decref(o);
    if (rc == -ENOENT) {
        server_reply_error(p->conn, p->id, "unknown_workflow", "job %s cannot run again: %s",
                           p->job, err);
        goto out;
    }
    if (rc < 0) {
        server_reply_error(p->conn, p->id, "internal",
                           "out of memory; job %s is queued again and runs at the next start",
                           p->job);
        goto out;
    }
    log_write(js->log, LOOM_LOG_INFO, json_pack("{s:s, s:I}", "job", p->job, "attempt", attempt),
              "job retried: queued again as attempt %lld, with its checkpoints",
              (long long)attempt);
    server_reply(p->conn, p->id, json_pack("{s:s, s:s, s:I}", "job", p->job, "state", "queued",
                                           "attempt", attempt));
    jobs_pump(js);
out:
    pretry_free(p);
}

void jobs_retry(jobs_t *js, server_conn_t *conn, json_t *id, const char *job)
{
    ljob *j = jobs_find(js, job);
    if (j) {
        server_reply_error(conn, id, "not_retryable",
                           "job %s is %s; only a failed job can be retried", job,
                           j->state == LJ_QUEUED ? "queued" : "running");
        return;
    }
    json_t *o = NULL;
    char err[256];
    int rc = store_get_job(js->store, job, &o, err, sizeof err);
    if (rc == -ENOENT) {
        server_reply_error(conn, id, "not_found", "no job %s", job);
        return;
    }
    if (rc < 0) {
        server_reply_error(conn, id, "store_error", "%s", err);
        return;
    }
    const char *state = json_string_value(json_object_get(o, "state"));
    if (!state || strcmp(state, "failed") != 0) {
        server_reply_error(conn, id, "not_retryable",
                           "job %s is %s; only a failed job can be retried", job,
                           state ? state : "in an unknown state");
        json_decref(o);
        return;
    }
    /* the attempt queues in its tenant's share: that tenant's limit too */
    jobs_tenant *t = jobs_tenant_get(js, json_string_value(json_object_get(o, "tenant")));
    json_decref(o);
    if (jobs_queue_refuses(js, t, conn, id))
        return;
    if (store_unavailable(js->store, NULL, NULL, 0)) {
        reply_unavailable(js, conn, id, NULL);
        return;
    }
    pretry *p = calloc(1, sizeof *p);
    if (!p) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    p->js = js;
    p->conn = server_conn_ref(conn);
    p->id = json_incref(id);
    snprintf(p->job, sizeof p->job, "%s", job);
    rc = store_retry_job(js->store, job, on_retried, p);
    if (rc < 0) {
        server_reply_error(conn, id, rc == -ESHUTDOWN ? "shutting_down" : "store_error",
                           "job %s was not retried: %s", job, strerror(-rc));
        pretry_free(p);
    }
}
