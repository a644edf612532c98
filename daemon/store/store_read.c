/* store_read.c -- the reactor thread's synchronous reads.
 *
 * They run on the read-only connection, beside the store thread's writes
 * (WAL gives each statement a snapshot of what was committed when it
 * began). Statements are reset as soon as their rows are read, so no
 * snapshot is held between calls and the WAL can be checkpointed. Each list
 * filter has its own statement, so each can use its index. */
#include "daemon/store/store_pg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STORE_LIST_DEFAULT 100
#define STORE_LIST_MAX 1000

#define STORE_JOB_COLUMNS                                                                     \
    "id, workflow, version, input, state, priority, idempotency_key, peer_uid, peer_gid, "  \
    "peer_pid, created_ms, started_ms, finished_ms, output, error, usage, attempt, crashes, " \
    "crash, tenant, budget, traceparent, cost, waits"
#define STORE_SUMMARY_COLUMNS \
    "id, workflow, version, state, priority, created_ms, started_ms, finished_ms, tenant, cost"

static const char *const store_rsql[STORE_R_LIST] = {
    [STORE_R_GET] = "SELECT " STORE_JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [STORE_R_STEPS] = "SELECT key, output, error, finished_ms FROM steps WHERE job_id = ?1"
                      " ORDER BY key",
    [STORE_R_UNFINISHED] = "SELECT " STORE_JOB_COLUMNS " FROM jobs"
                           " WHERE state IN ('queued', 'running') ORDER BY id",
    [STORE_R_SOURCE] = "SELECT source, workflow FROM sources WHERE hash = ?1",
    [STORE_R_SPEND] = "SELECT tenant, period, usd FROM spend WHERE period IN (?1, ?2)",
    [STORE_R_WAITING] = "SELECT " STORE_JOB_COLUMNS " FROM jobs WHERE state = 'waiting' ORDER BY id",
};

/* A read failed: the message, and the errno for the caller. */
static int store_read_fail(store_t *s, int rc, const char *what, char *err, size_t errlen)
{
    store_set_error(err, errlen, "%s: %s", what, sqlite3_errmsg(s->rdb));
    int e = store_errno_of(rc);
    return e ? e : -EIO;
}

static sqlite3_stmt *store_read_stmt(store_t *s, int idx, const char *sql, char *err,
                                     size_t errlen, int *status)
{
    int rc;
    sqlite3_stmt *st = store_db_stmt(s->rdb, s->rstmt, idx, sql, &rc);
    if (!st)
        *status = store_read_fail(s, rc, "cannot prepare a query", err, errlen);
    return st;
}

/* ---- columns to JSON */

static json_t *store_col_text(sqlite3_stmt *st, int i)
{
    const char *text = (const char *)sqlite3_column_text(st, i);
    return text ? json_string(text) : json_null();
}

static json_t *store_col_real(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    return json_real(sqlite3_column_double(st, i));
}

static json_t *store_col_int(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    return json_integer(sqlite3_column_int64(st, i));
}

/* Parses a column that holds serialised JSON; a stored value that no longer
 * parses is reported, not passed on as a string. */
static int store_col_json(sqlite3_stmt *st, int i, json_t **out)
{
    const char *text = (const char *)sqlite3_column_text(st, i);
    *out = text ? json_loads(text, JSON_DECODE_ANY, NULL) : json_null();
    return *out ? 0 : text ? -EIO : -ENOMEM;
}

/* Sets KEY of OBJ to V (stolen); false if V is NULL or the set fails. */
static bool store_set(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0;
}

/* A job object from a row of STORE_JOB_COLUMNS. */
static int store_row_job(sqlite3_stmt *st, json_t **out, char *err, size_t errlen)
{
    static const struct {
        int col;
        const char *name;
    } json_cols[] = {{3, "input"}, {13, "output"}, {14, "error"}, {15, "usage"}, {18, "crash"},
                     {20, "budget"}, {23, "waits"}};
    json_t *job = json_object(), *peer = NULL;
    int rc = -ENOMEM;
    if (!job)
        return -ENOMEM;
    if (!store_set(job, "id", store_col_text(st, 0)) ||
        !store_set(job, "workflow", store_col_text(st, 1)) ||
        !store_set(job, "version", store_col_text(st, 2)) ||
        !store_set(job, "state", store_col_text(st, 4)) ||
        !store_set(job, "priority", store_col_int(st, 5)) ||
        !store_set(job, "idempotency_key", store_col_text(st, 6)) ||
        !store_set(job, "created_ms", store_col_int(st, 10)) ||
        !store_set(job, "started_ms", store_col_int(st, 11)) ||
        !store_set(job, "finished_ms", store_col_int(st, 12)) ||
        !store_set(job, "attempt", store_col_int(st, 16)) ||
        !store_set(job, "crashes", store_col_int(st, 17)) ||
        !store_set(job, "tenant", store_col_text(st, 19)) ||
        !store_set(job, "traceparent", store_col_text(st, 21)) ||
        !store_set(job, "cost", store_col_real(st, 22)))
        goto fail;
    if (sqlite3_column_type(st, 7) == SQLITE_NULL) {
        peer = json_null();
    } else {
        peer = json_pack("{s:I, s:I, s:I}", "uid", (json_int_t)sqlite3_column_int64(st, 7),
                         "gid", (json_int_t)sqlite3_column_int64(st, 8), "pid",
                         (json_int_t)sqlite3_column_int64(st, 9));
    }
    if (!store_set(job, "peer", peer))
        goto fail;
    for (size_t i = 0; i < sizeof json_cols / sizeof *json_cols; i++) {
        json_t *v;
        if ((rc = store_col_json(st, json_cols[i].col, &v)) < 0) {
            if (rc == -EIO)
                store_set_error(err, errlen, "job %s: the stored %s is not valid JSON",
                                (const char *)sqlite3_column_text(st, 0), json_cols[i].name);
            goto fail;
        }
        rc = -ENOMEM;
        if (!store_set(job, json_cols[i].name, v))
            goto fail;
    }
    *out = job;
    return 0;
fail:
    if (rc == -ENOMEM)
        store_set_error(err, errlen, "out of memory");
    json_decref(job);
    return rc;
}

/* A job summary from a row of STORE_SUMMARY_COLUMNS. */
static json_t *store_row_summary(sqlite3_stmt *st)
{
    static const char *const names[] = {"id",         "workflow",   "version",
                                        "state",      "priority",   "created_ms",
                                        "started_ms", "finished_ms", "tenant", "cost"};
    json_t *job = json_object();
    for (int i = 0; job && i < 10; i++) {
        json_t *v = i == 9 ? store_col_real(st, i)
                    : i == 8 || i < 4 ? store_col_text(st, i) : store_col_int(st, i);
        if (!store_set(job, names[i], v)) {
            json_decref(job);
            return NULL;
        }
    }
    return job;
}

/* ---- the reads */

/* Appends every job object ST returns to a new array in *OUT, then resets
 * ST; WHAT names the query in errors. */
static int store_collect_jobs(store_t *s, sqlite3_stmt *st, bool summaries, json_t **out,
                              const char *what, char *err, size_t errlen)
{
    json_t *jobs = json_array();
    int rc = jobs ? 0 : -ENOMEM, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *job = NULL;
        if (summaries)
            rc = (job = store_row_summary(st)) ? 0 : -ENOMEM;
        else
            rc = store_row_job(st, &job, err, errlen);
        if (rc == 0 && json_array_append_new(jobs, job) != 0)
            rc = -ENOMEM;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_read_fail(s, step, what, err, errlen);
    else if (rc == -ENOMEM)
        store_set_error(err, errlen, "out of memory");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc < 0) {
        json_decref(jobs);
        return rc;
    }
    *out = jobs;
    return 0;
}

int store_get_job(store_t *s, const char *job_id, json_t **job, char *err, size_t errlen)
{
    int rc = 0;
    if (!s || !job_id || !job)
        return -EINVAL;
    if (s->pg)
        return store_pg_get_job(s, job_id, job, err, errlen);
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_GET, store_rsql[STORE_R_GET], err, errlen, &rc);
    if (!st)
        return rc;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        rc = store_row_job(st, job, err, errlen);
    } else if (step == SQLITE_DONE) {
        store_set_error(err, errlen, "no job %s", job_id);
        rc = -ENOENT;
    } else {
        rc = store_read_fail(s, step, "cannot read a job", err, errlen);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int store_list_jobs(store_t *s, const store_list_query_t *q, json_t **jobs, char *err,
                    size_t errlen)
{
    store_state_t state;
    int rc = 0;
    if (!s || !q || !jobs)
        return -EINVAL;
    if (q->state && store_state_parse(q->state, &state) < 0) {
        store_set_error(err, errlen, "unknown job state \"%s\"", q->state);
        return -EINVAL;
    }
    if (s->pg)
        return store_pg_list_jobs(s, q, jobs, err, errlen);
    int filter = (q->state ? 1 : 0) | (q->workflow ? 2 : 0) | (q->tenant ? 4 : 0);
    int idx = STORE_R_LIST + filter * 2 + (q->oldest_first ? 1 : 0);
    char sql[320];
    snprintf(sql, sizeof sql, "SELECT " STORE_SUMMARY_COLUMNS " FROM jobs WHERE %s%s%sid %s ?3"
             " ORDER BY id %s LIMIT ?4", q->state ? "state = ?1 AND " : "",
             q->workflow ? "workflow = ?2 AND " : "", q->tenant ? "tenant = ?5 AND " : "",
             q->oldest_first ? ">" : "<", q->oldest_first ? "ASC" : "DESC");
    sqlite3_stmt *st = store_read_stmt(s, idx, sql, err, errlen, &rc);
    if (!st)
        return rc;
    if (q->state)
        sqlite3_bind_text(st, 1, q->state, -1, SQLITE_STATIC);
    if (q->workflow)
        sqlite3_bind_text(st, 2, q->workflow, -1, SQLITE_STATIC);
    if (q->tenant)
        sqlite3_bind_text(st, 5, q->tenant, -1, SQLITE_STATIC);
    /* Without a cursor, compare against a bound below or above every id:
     * "" sorts first, and "~" after every base32 digit. */
    sqlite3_bind_text(st, 3, q->after ? q->after : q->oldest_first ? "" : "~", -1,
                      SQLITE_STATIC);
    size_t limit = q->limit == 0 ? STORE_LIST_DEFAULT : q->limit;
    sqlite3_bind_int64(st, 4, (sqlite3_int64)(limit > STORE_LIST_MAX ? STORE_LIST_MAX : limit));
    return store_collect_jobs(s, st, true, jobs, "cannot list jobs", err, errlen);
}

int store_unfinished_jobs(store_t *s, json_t **jobs, char *err, size_t errlen)
{
    int rc = 0;
    if (!s || !jobs)
        return -EINVAL;
    if (s->pg)
        return store_pg_unfinished_jobs(s, jobs, err, errlen);
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_UNFINISHED, store_rsql[STORE_R_UNFINISHED],
                                       err, errlen, &rc);
    if (!st)
        return rc;
    return store_collect_jobs(s, st, false, jobs, "cannot read unfinished jobs", err, errlen);
}

int store_waiting_jobs(store_t *s, json_t **jobs, char *err, size_t errlen)
{
    int rc = 0;
    if (!s || !jobs)
        return -EINVAL;
    if (s->pg)
        return store_pg_waiting_jobs(s, jobs, err, errlen);
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_WAITING, store_rsql[STORE_R_WAITING], err,
                                       errlen, &rc);
    if (!st)
        return rc;
    return store_collect_jobs(s, st, false, jobs, "cannot read waiting jobs", err, errlen);
}

int store_load_steps(store_t *s, const char *job_id, json_t **steps, char *err, size_t errlen)
{
    int rc = 0, step;
    if (!s || !job_id || !steps)
        return -EINVAL;
    if (s->pg)
        return store_pg_load_steps(s, job_id, steps, err, errlen);
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_STEPS, store_rsql[STORE_R_STEPS], err, errlen,
                                       &rc);
    if (!st)
        return rc;
    json_t *all = json_object();
    if (!all)
        rc = -ENOMEM;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *output = NULL, *error = NULL, *rec = json_object();
        if (!rec) {
            rc = -ENOMEM;
        } else if ((rc = store_col_json(st, 1, &output)) == 0 &&
                   (rc = store_col_json(st, 2, &error)) == 0) {
            if (!store_set(rec, "output", json_incref(output)) ||
                !store_set(rec, "error", json_incref(error)) ||
                !store_set(rec, "finished_ms", store_col_int(st, 3)) ||
                json_object_set(all, (const char *)sqlite3_column_text(st, 0), rec) != 0)
                rc = -ENOMEM;
        } else if (rc == -EIO) {
            store_set_error(err, errlen, "job %s, step %s: the stored result is not valid JSON",
                            job_id, (const char *)sqlite3_column_text(st, 0));
        }
        json_decref(rec);
        json_decref(output);
        json_decref(error);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_read_fail(s, step, "cannot read steps", err, errlen);
    else if (rc == -ENOMEM)
        store_set_error(err, errlen, "out of memory");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc < 0) {
        json_decref(all);
        return rc;
    }
    *steps = all;
    return 0;
}

int store_get_source(store_t *s, const char *version, char **text, size_t *len,
                     char **workflow, char *err, size_t errlen)
{
    int rc = 0, step;
    if (!s || !version || !text || !len)
        return -EINVAL;
    *text = NULL;
    *len = 0;
    if (workflow)
        *workflow = NULL;
    if (s->pg)
        return store_pg_get_source(s, version, text, len, workflow, err, errlen);
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_SOURCE, store_rsql[STORE_R_SOURCE], err,
                                       errlen, &rc);
    if (!st)
        return rc;
    sqlite3_bind_text(st, 1, version, -1, SQLITE_STATIC);
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        char *t = malloc(n + 1);
        char *w = workflow && name ? strdup(name) : NULL;
        if (!t || (workflow && name && !w)) {
            free(t);
            free(w);
            store_set_error(err, errlen, "out of memory");
            rc = -ENOMEM;
        } else {
            if (n)
                memcpy(t, blob, n);
            t[n] = '\0';
            *text = t;
            *len = n;
            if (workflow)
                *workflow = w;
        }
    } else if (step == SQLITE_DONE) {
        store_set_error(err, errlen, "no stored source for workflow version %s", version);
        rc = -ENOENT;
    } else {
        rc = store_read_fail(s, step, "cannot read a workflow source", err, errlen);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int store_load_spend(store_t *s, const char *day, const char *month, json_t **spend, char *err,
                     size_t errlen)
{
    int rc = 0, step;
    if (!s || !day || !month || !spend)
        return -EINVAL;
    if (s->pg)
        return store_pg_load_spend(s, day, month, spend, err, errlen);
    if (!(*spend = json_object())) {
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    sqlite3_stmt *st = store_read_stmt(s, STORE_R_SPEND, store_rsql[STORE_R_SPEND], err, errlen,
                                       &rc);
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, day, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, month, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *tenant = (const char *)sqlite3_column_text(st, 0);
        const char *period = (const char *)sqlite3_column_text(st, 1);
        json_t *t = tenant ? json_object_get(*spend, tenant) : NULL;
        if (!tenant || !period)
            continue;
        if (!t && json_object_set_new(*spend, tenant, t = json_object()) < 0)
            t = NULL;
        if (!t || json_object_set_new(t, period, json_real(sqlite3_column_double(st, 2))) < 0) {
            store_set_error(err, errlen, "out of memory");
            rc = -ENOMEM;
            break;
        }
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_read_fail(s, step, "cannot read the spend ledger", err, errlen);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == 0)
        return 0;
fail:
    json_decref(*spend);
    *spend = NULL;
    return rc;
}
