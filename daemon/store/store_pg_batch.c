/* store_pg_batch.c -- the provider batches' tables in PostgreSQL: the
 * store thread's writes (inside the transaction store_pg.c opened) and the
 * reactor thread's reads, with the semantics of store_batch.c. */
#include "daemon/store/store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the store thread's side */

/* Runs SQL with N text parameters on the writer; a failure's errno, its
 * message in Q. *R (when not NULL) receives the result (PQclear it). */
static int sb_pg(store_t *s, store_req_t *q, const char *sql, int n, const char *const *values,
                 PGresult **out)
{
    PGconn *c = s->pg->w.conn;
    PGresult *r = store_pg_exec(&s->pg->w, sql, true, n, values, NULL, -1, 0);
    if (out)
        *out = NULL;
    if (store_pg_ok(r)) {
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }
    char why[300];
    int rc = store_pg_errno(c, r);
    if (PQstatus(c) != CONNECTION_OK)
        s->pg->w.broken = true;
    store_set_error(q->error_text, sizeof q->error_text, "record provider batch %s: %s",
                    q->batch->name ? q->batch->name : "",
                    store_pg_message(c, r, why, sizeof why));
    PQclear(r);
    return rc;
}

static const char *sb_num(char b[24], int64_t v)
{
    snprintf(b, 24, "%lld", (long long)v);
    return b;
}

static const char sb_drop_empty[] =
    "DELETE FROM batches WHERE (state = 'written' OR state = 'done')"
    " AND NOT EXISTS (SELECT 1 FROM batch_lines WHERE batch = batches.name)";

static int sb_insert(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    char n1[24], n2[24];
    const char *v[] = {b->name, b->provider, b->kind, b->model, sb_num(n1, b->deadline_ms),
                       sb_num(n2, q->time_ms)};
    int rc = sb_pg(s, q, "INSERT INTO batches (name, provider, kind, model, deadline_ms,"
                   " state, created_ms) VALUES ($1, $2, $3, $4, $5, 'written', $6)", 6, v, NULL);
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        const sb_item *it = &b->items[i];
        /* a new line for a step replaces what an earlier attempt left */
        const char *sv[] = {it->job, it->key, b->name};
        rc = sb_pg(s, q, "DELETE FROM batch_lines WHERE job_id = $1 AND key = $2"
                   " AND batch <> $3", 3, sv, NULL);
        if (rc < 0)
            break;
        const char *lv[] = {b->name, sb_num(n1, (int64_t)i), it->custom_id, it->job, it->key,
                            it->node, sb_num(n2, it->attempt), it->text};
        rc = sb_pg(s, q, "INSERT INTO batch_lines (batch, seq, custom_id, job_id, key, node,"
                   " attempt, line) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", 8, lv, NULL);
    }
    /* an earlier batch whose last line this replaced may go */
    return rc < 0 ? rc : sb_pg(s, q, sb_drop_empty, 0, NULL, NULL);
}

static int sb_update(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    const char *v[] = {b->name, b->state, b->file_id, b->remote_id, b->remote_state};
    PGresult *r;
    int rc = sb_pg(s, q, "UPDATE batches SET state = coalesce($2, state), file_id ="
                   " coalesce($3, file_id), remote_id = coalesce($4, remote_id), remote_state ="
                   " coalesce($5, remote_state) WHERE name = $1", 5, v, &r);
    if (rc < 0)
        return rc;
    bool changed = strtoll(PQcmdTuples(r), NULL, 10) > 0;
    PQclear(r);
    if (!changed) {
        q->status = -ENOENT;
        store_set_error(q->error_text, sizeof q->error_text, "no provider batch %s", b->name);
        return 0;
    }
    if (!b->drop_text)
        return 0;
    const char *dv[] = {b->name};
    return sb_pg(s, q, "UPDATE batch_lines SET line = NULL WHERE batch = $1", 1, dv, NULL);
}

static int sb_finish(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        const sb_item *it = &b->items[i];
        char code[24];
        const char *v[] = {b->name, it->custom_id, it->text,
                           it->text ? NULL : sb_num(code, it->code),
                           it->text ? NULL : it->message};
        rc = sb_pg(s, q, "UPDATE batch_lines SET done = true, result = $3, code = $4,"
                   " message = $5 WHERE batch = $1 AND custom_id = $2", 5, v, NULL);
    }
    if (rc < 0)
        return rc;
    free(b->state);
    if (!(b->state = strdup("done"))) {
        store_set_error(q->error_text, sizeof q->error_text, "out of memory");
        return -ENOMEM;
    }
    b->drop_text = true;
    return sb_update(s, q);
}

static int sb_drop(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    if (b->what == SB_DELETE) {
        const char *v[] = {b->name};
        return sb_pg(s, q, "DELETE FROM batches WHERE name = $1", 1, v, NULL);
    }
    int rc;
    if (b->finished_jobs) {
        rc = sb_pg(s, q, "DELETE FROM batch_lines WHERE job_id IN"
                   " (SELECT id FROM jobs WHERE finished_ms IS NOT NULL)", 0, NULL, NULL);
    } else {
        const char *v[] = {q->job_id};
        rc = sb_pg(s, q, "DELETE FROM batch_lines WHERE job_id = $1", 1, v, NULL);
    }
    return rc < 0 ? rc : sb_pg(s, q, sb_drop_empty, 0, NULL, NULL);
}

int store_pg_batch_apply(store_t *s, store_req_t *q)
{
    switch (q->batch->what) {
    case SB_INSERT:
        return sb_insert(s, q);
    case SB_UPDATE:
        return sb_update(s, q);
    case SB_FINISH:
        return sb_finish(s, q);
    default:
        return sb_drop(s, q);
    }
}

/* ---- reads (reactor thread) */

static PGresult *sb_read(store_t *s, const char *sql, int n, const char *const *values,
                         const char *what, char *err, size_t errlen, int *status)
{
    PGconn *c = store_pg_reader(s, err, errlen, status);
    if (!c)
        return NULL;
    PGresult *r = store_pg_exec(&s->pg->r, sql, true, n, values, NULL, -1, 0);
    if (store_pg_ok(r))
        return r;
    *status = store_pg_read_fail(s, r, what, err, errlen);
    PQclear(r);
    return NULL;
}

static json_t *sb_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *sb_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null()
                                    : json_integer(strtoll(PQgetvalue(r, row, col), NULL, 10));
}

static bool sb_set(json_t *o, const char *key, json_t *v)
{
    return v && json_object_set_new(o, key, v) == 0;
}

int store_pg_batch_load(store_t *s, json_t **batches, char *err, size_t errlen)
{
    static const char *const cols[] = {"name", "provider", "kind", "model", "deadline_ms",
                                       "state", "file_id", "remote_id", "remote_state",
                                       "created_ms"};
    int rc = 0;
    json_t *list = json_array(), *byname = json_object();
    PGresult *r = NULL;
    if (!list || !byname) {
        rc = -ENOMEM;
        goto out;
    }
    r = sb_read(s, "SELECT name, provider, kind, model, deadline_ms, state, file_id, remote_id,"
                " remote_state, created_ms FROM batches ORDER BY created_ms, name", 0, NULL,
                "cannot read provider batches", err, errlen, &rc);
    if (!r)
        goto out;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        json_t *b = json_object();
        bool ok = b != NULL;
        for (int k = 0; ok && k < 10; k++)
            ok = sb_set(b, cols[k], k == 4 || k == 9 ? sb_int(r, i, k) : sb_text(r, i, k));
        ok = ok && sb_set(b, "lines", json_array()) &&
             json_object_set(byname, PQgetvalue(r, i, 0), b) == 0 &&
             json_array_append(list, b) == 0;
        json_decref(b);
        if (!ok)
            rc = -ENOMEM;
    }
    PQclear(r);
    r = NULL;
    if (rc < 0)
        goto out;
    r = sb_read(s, "SELECT batch, custom_id, job_id, key, node, attempt, done, code"
                " FROM batch_lines WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id ="
                " batch_lines.job_id AND jobs.finished_ms IS NOT NULL) ORDER BY batch, seq",
                0, NULL, "cannot read provider batch lines", err, errlen, &rc);
    if (!r)
        goto out;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        json_t *b = json_object_get(byname, PQgetvalue(r, i, 0));
        if (!b)
            continue; /* its batch came after the first read */
        json_t *l = json_object();
        bool ok = l && sb_set(l, "custom_id", sb_text(r, i, 1)) &&
                  sb_set(l, "job", sb_text(r, i, 2)) && sb_set(l, "key", sb_text(r, i, 3)) &&
                  sb_set(l, "node", sb_text(r, i, 4)) && sb_set(l, "attempt", sb_int(r, i, 5)) &&
                  sb_set(l, "done", json_boolean(PQgetvalue(r, i, 6)[0] == 't')) &&
                  sb_set(l, "code", sb_int(r, i, 7)) &&
                  json_array_append(json_object_get(b, "lines"), l) == 0;
        json_decref(l);
        if (!ok)
            rc = -ENOMEM;
    }
out:
    PQclear(r);
    json_decref(byname);
    if (rc < 0) {
        if (rc == -ENOMEM)
            store_set_error(err, errlen, "out of memory");
        json_decref(list);
        return rc;
    }
    *batches = list;
    return 0;
}

int store_pg_batch_text(store_t *s, const char *name, char **text, size_t *len, char *err,
                        size_t errlen)
{
    int rc = 0;
    const char *v[] = {name};
    char what[200];
    snprintf(what, sizeof what, "cannot read provider batch %s", name);
    PGresult *r = sb_read(s, "SELECT line FROM batch_lines WHERE batch = $1 AND line IS NOT NULL"
                          " ORDER BY seq", 1, v, what, err, errlen, &rc);
    if (!r)
        return rc;
    sbuf b;
    sbuf_init(&b, 0);
    for (int i = 0; rc == 0 && i < PQntuples(r); i++)
        if (sbuf_add(&b, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0)) < 0 ||
            sbuf_addc(&b, '\n') < 0)
            rc = -ENOMEM;
    PQclear(r);
    if (rc == 0 && sbuf_grow(&b, 1) < 0)
        rc = -ENOMEM;
    if (rc < 0) {
        store_set_error(err, errlen, "out of memory");
        sbuf_free(&b);
        return rc;
    }
    *text = sbuf_steal(&b, len);
    return 0;
}

int store_pg_batch_result(store_t *s, const char *name, const char *custom_id,
                          json_t **result, int *code, char *message, size_t msglen, char *err,
                          size_t errlen)
{
    int rc = 0;
    const char *v[] = {name, custom_id};
    char what[200];
    snprintf(what, sizeof what, "cannot read provider batch %s", name);
    PGresult *r = sb_read(s, "SELECT done, result, code, message FROM batch_lines"
                          " WHERE batch = $1 AND custom_id = $2", 2, v, what, err, errlen, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0) {
        store_set_error(err, errlen, "no line %s in provider batch %s", custom_id, name);
        rc = -ENOENT;
    } else if (PQgetvalue(r, 0, 0)[0] != 't') {
        store_set_error(err, errlen, "line %s of provider batch %s has no result yet",
                        custom_id, name);
        rc = -EAGAIN;
    } else if (!PQgetisnull(r, 0, 1)) {
        if (!(*result = json_loads(PQgetvalue(r, 0, 1), JSON_DECODE_ANY, NULL))) {
            store_set_error(err, errlen, "line %s of provider batch %s: the stored result is "
                            "not valid JSON", custom_id, name);
            rc = -EIO;
        }
    } else {
        *code = PQgetisnull(r, 0, 2) ? 0 : (int)strtol(PQgetvalue(r, 0, 2), NULL, 10);
        if (message && msglen)
            snprintf(message, msglen, "%s", PQgetisnull(r, 0, 3) ? "" : PQgetvalue(r, 0, 3));
    }
    PQclear(r);
    return rc;
}
