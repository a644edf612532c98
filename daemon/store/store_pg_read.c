/* store_pg_read.c -- the reactor thread's reads from PostgreSQL.
 *
 * Short synchronous statements on the reader connection, each its own
 * snapshot (autocommit), answering with the same JSON as store_read.c. A
 * lost connection fails the read with -EIO; the next read reconnects (at
 * most once a second, store_pg_reader). */
#include "daemon/store/store_pg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STORE_LIST_DEFAULT 100
#define STORE_LIST_MAX 1000

#define STORE_PG_SUMMARY_COLUMNS \
    "id, workflow, version, state, priority, created_ms, started_ms, finished_ms, tenant, " \
    "cost, node"

/* ---- columns to JSON */

static json_t *pg_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *pg_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null()
                                    : json_integer(strtoll(PQgetvalue(r, row, col), NULL, 10));
}

static json_t *pg_real(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null()
                                    : json_real(strtod(PQgetvalue(r, row, col), NULL));
}

/* A column holding serialised JSON: -EIO when it no longer parses. */
static int pg_json(const PGresult *r, int row, int col, json_t **out)
{
    if (PQgetisnull(r, row, col)) {
        *out = json_null();
        return *out ? 0 : -ENOMEM;
    }
    *out = json_loads(PQgetvalue(r, row, col), JSON_DECODE_ANY, NULL);
    return *out ? 0 : -EIO;
}

static bool pg_set(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0;
}

int store_pg_row_job(const PGresult *r, int row, json_t **out, char *err, size_t errlen)
{
    static const struct {
        int col;
        const char *name;
    } json_cols[] = {{3, "input"}, {13, "output"}, {14, "error"}, {15, "usage"}, {18, "crash"},
                     {20, "budget"}, {23, "waits"}};
    json_t *job = json_object(), *peer = NULL;
    int rc = -ENOMEM;
    if (!job)
        goto fail;
    if (!pg_set(job, "id", pg_text(r, row, 0)) ||
        !pg_set(job, "workflow", pg_text(r, row, 1)) ||
        !pg_set(job, "version", pg_text(r, row, 2)) ||
        !pg_set(job, "state", pg_text(r, row, 4)) ||
        !pg_set(job, "priority", pg_int(r, row, 5)) ||
        !pg_set(job, "idempotency_key", pg_text(r, row, 6)) ||
        !pg_set(job, "created_ms", pg_int(r, row, 10)) ||
        !pg_set(job, "started_ms", pg_int(r, row, 11)) ||
        !pg_set(job, "finished_ms", pg_int(r, row, 12)) ||
        !pg_set(job, "attempt", pg_int(r, row, 16)) ||
        !pg_set(job, "crashes", pg_int(r, row, 17)) ||
        !pg_set(job, "tenant", pg_text(r, row, 19)) ||
        !pg_set(job, "traceparent", pg_text(r, row, 21)) ||
        !pg_set(job, "cost", pg_real(r, row, 22)) ||
        !pg_set(job, "node", pg_text(r, row, 24)) ||
        !pg_set(job, "epoch", pg_int(r, row, 25)))
        goto fail;
    if (PQgetisnull(r, row, 7))
        peer = json_null();
    else
        peer = json_pack("{s:I, s:I, s:I}", "uid",
                         (json_int_t)strtoll(PQgetvalue(r, row, 7), NULL, 10), "gid",
                         (json_int_t)strtoll(PQgetvalue(r, row, 8), NULL, 10), "pid",
                         (json_int_t)strtoll(PQgetvalue(r, row, 9), NULL, 10));
    if (!pg_set(job, "peer", peer))
        goto fail;
    for (size_t i = 0; i < sizeof json_cols / sizeof *json_cols; i++) {
        json_t *v;
        if ((rc = pg_json(r, row, json_cols[i].col, &v)) < 0) {
            if (rc == -EIO)
                store_set_error(err, errlen, "job %s: the stored %s is not valid JSON",
                                PQgetvalue(r, row, 0), json_cols[i].name);
            goto fail;
        }
        rc = -ENOMEM;
        if (!pg_set(job, json_cols[i].name, v))
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

static json_t *pg_row_summary(const PGresult *r, int row)
{
    static const char *const names[] = {"id",         "workflow",    "version", "state",
                                        "priority",   "created_ms",  "started_ms",
                                        "finished_ms", "tenant",     "cost",    "node"};
    json_t *job = json_object();
    for (int i = 0; job && i < 11; i++) {
        json_t *v = i == 9                        ? pg_real(r, row, i)
                    : i == 8 || i == 10 || i < 4 ? pg_text(r, row, i)
                                                  : pg_int(r, row, i);
        if (!pg_set(job, names[i], v)) {
            json_decref(job);
            return NULL;
        }
    }
    return job;
}

/* ---- the reads */

/* Runs SQL with N text parameters on the reader (PREPARE: SQL is a string
 * constant, see store_pg_exec); NULL with *STATUS set and the reason in ERR
 * ("WHAT: why"). A connection found dead by this read (PostgreSQL restarted
 * since the last one) is replaced and the read tried once more at once: the
 * server is most often back already, and a client's `get` or `wait` should
 * not fail for a connection nobody used while it was down. That one
 * reconnect is made whenever the last was; after it, reconnects are at
 * most once a second (store_pg_reader), so a server that stays down costs
 * the reactor one connect attempt a second at most. */
static PGresult *pg_read(store_t *s, const char *sql, bool prepare, int n,
                         const char *const *values, int result_format, const char *what,
                         char *err, size_t errlen, int *status)
{
    for (int attempt = 0;; attempt++) {
        PGconn *c = store_pg_reader(s, err, errlen, status);
        if (!c)
            return NULL;
        PGresult *r = store_pg_exec(&s->pg->r, sql, prepare, n, values, NULL, -1,
                                    result_format);
        if (store_pg_ok(r))
            return r;
        *status = store_pg_read_fail(s, r, what, err, errlen);
        PQclear(r);
        if (attempt > 0 || !s->pg->r.broken)
            return NULL;
        s->pg->r.last_try_ms = 0; /* found dead just now: reconnect at once */
    }
}

/* The rows of R as a new array of job objects (or summaries) in *OUT. */
static int pg_collect(const PGresult *r, bool summaries, json_t **out, char *err,
                      size_t errlen)
{
    json_t *jobs = json_array();
    int rc = jobs ? 0 : -ENOMEM;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        json_t *job = NULL;
        if (summaries)
            rc = (job = pg_row_summary(r, i)) ? 0 : -ENOMEM;
        else
            rc = store_pg_row_job(r, i, &job, err, errlen);
        if (rc == 0 && json_array_append_new(jobs, job) != 0)
            rc = -ENOMEM;
    }
    if (rc < 0) {
        if (rc == -ENOMEM)
            store_set_error(err, errlen, "out of memory");
        json_decref(jobs);
        return rc;
    }
    *out = jobs;
    return 0;
}

int store_pg_get_job(store_t *s, const char *job_id, json_t **job, char *err, size_t errlen)
{
    int rc = 0;
    const char *v[] = {job_id};
    PGresult *r = pg_read(s, "SELECT " STORE_PG_JOB_COLUMNS " FROM jobs WHERE id = $1", true,
                          1, v, 0, "cannot read a job", err, errlen, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0) {
        store_set_error(err, errlen, "no job %s", job_id);
        rc = -ENOENT;
    } else {
        rc = store_pg_row_job(r, 0, job, err, errlen);
    }
    PQclear(r);
    return rc;
}

int store_pg_list_jobs(store_t *s, const store_list_query_t *q, json_t **jobs, char *err,
                       size_t errlen)
{
    char sql[400];
    const char *v[5];
    char num[3][24];
    int n = 0, rc = 0;
    size_t at = 0;
    at += (size_t)snprintf(sql + at, sizeof sql - at,
                           "SELECT " STORE_PG_SUMMARY_COLUMNS " FROM jobs WHERE ");
    if (q->state) {
        v[n++] = q->state;
        at += (size_t)snprintf(sql + at, sizeof sql - at, "state = $%d AND ", n);
    }
    if (q->workflow) {
        v[n++] = q->workflow;
        at += (size_t)snprintf(sql + at, sizeof sql - at, "workflow = $%d AND ", n);
    }
    if (q->tenant) {
        v[n++] = q->tenant;
        at += (size_t)snprintf(sql + at, sizeof sql - at, "tenant = $%d AND ", n);
    }
    /* Without a cursor, compare against a bound below or above every id:
     * "" sorts first, and "~" after every base32 digit (ids are COLLATE "C"). */
    v[n++] = q->after ? q->after : q->oldest_first ? "" : "~";
    size_t limit = q->limit == 0 ? STORE_LIST_DEFAULT : q->limit;
    snprintf(num[0], sizeof num[0], "%zu", limit > STORE_LIST_MAX ? STORE_LIST_MAX : limit);
    v[n++] = num[0];
    snprintf(sql + at, sizeof sql - at, "id %s $%d ORDER BY id %s LIMIT $%d",
             q->oldest_first ? ">" : "<", n - 1, q->oldest_first ? "ASC" : "DESC", n);
    PGresult *r = pg_read(s, sql, false, n, v, 0, "cannot list jobs", err, errlen, &rc);
    if (!r)
        return rc;
    rc = pg_collect(r, true, jobs, err, errlen);
    PQclear(r);
    return rc;
}

int store_pg_unfinished_jobs(store_t *s, json_t **jobs, char *err, size_t errlen)
{
    int rc = 0;
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)s->pg->lease_ms);
    const char *v[] = {s->pg->node, lease};
    /* this node's own jobs, re-leased: a write of an earlier run of this
     * node (same name) still in flight is fenced by the new epoch */
    PGresult *r = pg_read(s, "WITH u AS (UPDATE jobs SET epoch = epoch + 1,"
                          " lease_until_ms = " STORE_PG_NOW_MS " + $2 WHERE node = $1"
                          " AND state IN ('queued',"
                          " 'running') RETURNING " STORE_PG_JOB_COLUMNS ")"
                          " SELECT * FROM u ORDER BY id", true, 2, v, 0,
                          "cannot read unfinished jobs", err, errlen, &rc);
    if (!r)
        return rc;
    rc = pg_collect(r, false, jobs, err, errlen);
    for (int i = 0; rc == 0 && i < PQntuples(r); i++)
        store_pg_epoch_set(s, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 25), NULL, 10));
    PQclear(r);
    return rc;
}

int store_pg_waiting_jobs(store_t *s, json_t **jobs, char *err, size_t errlen)
{
    int rc = 0;
    PGresult *r = pg_read(s, "SELECT " STORE_PG_JOB_COLUMNS " FROM jobs WHERE state ="
                          " 'waiting' ORDER BY id", true, 0, NULL, 0,
                          "cannot read waiting jobs", err, errlen, &rc);
    if (!r)
        return rc;
    rc = pg_collect(r, false, jobs, err, errlen);
    PQclear(r);
    return rc;
}

int store_pg_load_steps(store_t *s, const char *job_id, json_t **steps, char *err,
                        size_t errlen)
{
    int rc = 0;
    const char *v[] = {job_id};
    PGresult *r = pg_read(s, "SELECT key, output, error, finished_ms FROM steps"
                          " WHERE job_id = $1 ORDER BY key", true, 1, v, 0,
                          "cannot read steps", err, errlen, &rc);
    if (!r)
        return rc;
    json_t *all = json_object();
    if (!all)
        rc = -ENOMEM;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        json_t *output = NULL, *error = NULL, *rec = json_object();
        if (!rec) {
            rc = -ENOMEM;
        } else if ((rc = pg_json(r, i, 1, &output)) == 0 && (rc = pg_json(r, i, 2, &error)) == 0) {
            if (!pg_set(rec, "output", json_incref(output)) ||
                !pg_set(rec, "error", json_incref(error)) ||
                !pg_set(rec, "finished_ms", pg_int(r, i, 3)) ||
                json_object_set(all, PQgetvalue(r, i, 0), rec) != 0)
                rc = -ENOMEM;
        } else if (rc == -EIO) {
            store_set_error(err, errlen, "job %s, step %s: the stored result is not valid JSON",
                            job_id, PQgetvalue(r, i, 0));
        }
        json_decref(rec);
        json_decref(output);
        json_decref(error);
    }
    PQclear(r);
    if (rc < 0) {
        if (rc == -ENOMEM)
            store_set_error(err, errlen, "out of memory");
        json_decref(all);
        return rc;
    }
    *steps = all;
    return 0;
}

int store_pg_get_source(store_t *s, const char *version, char **text, size_t *len,
                        char **workflow, char *err, size_t errlen)
{
    int rc = 0;
    const char *v[] = {version};
    /* binary results: the source's bytes as they are, the name's text as is */
    PGresult *r = pg_read(s, "SELECT source, workflow FROM sources WHERE hash = $1", true, 1,
                          v, 1, "cannot read a workflow source", err, errlen, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0) {
        store_set_error(err, errlen, "no stored source for workflow version %s", version);
        PQclear(r);
        return -ENOENT;
    }
    size_t n = (size_t)PQgetlength(r, 0, 0);
    size_t wn = (size_t)PQgetlength(r, 0, 1);
    char *t = malloc(n + 1);
    char *w = workflow && !PQgetisnull(r, 0, 1) ? malloc(wn + 1) : NULL;
    if (!t || (workflow && !PQgetisnull(r, 0, 1) && !w)) {
        free(t);
        free(w);
        PQclear(r);
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (n)
        memcpy(t, PQgetvalue(r, 0, 0), n);
    t[n] = '\0';
    if (w) {
        memcpy(w, PQgetvalue(r, 0, 1), wn);
        w[wn] = '\0';
    }
    *text = t;
    *len = n;
    if (workflow)
        *workflow = w;
    PQclear(r);
    return 0;
}

int store_pg_load_spend(store_t *s, const char *day, const char *month, json_t **spend,
                        char *err, size_t errlen)
{
    int rc = 0;
    const char *v[] = {day, month};
    PGresult *r = pg_read(s, "SELECT tenant, period, usd FROM spend WHERE period IN ($1, $2)",
                          true, 2, v, 0, "cannot read the spend ledger", err, errlen, &rc);
    if (!r)
        return rc;
    if (!(*spend = json_object()))
        rc = -ENOMEM;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        const char *tenant = PQgetvalue(r, i, 0), *period = PQgetvalue(r, i, 1);
        json_t *t = json_object_get(*spend, tenant);
        if (!t && json_object_set_new(*spend, tenant, t = json_object()) < 0)
            t = NULL;
        if (!t || json_object_set_new(t, period, json_real(strtod(PQgetvalue(r, i, 2), NULL))) < 0)
            rc = -ENOMEM;
    }
    PQclear(r);
    if (rc < 0) {
        store_set_error(err, errlen, "out of memory");
        json_decref(*spend);
        *spend = NULL;
    }
    return rc;
}
