/* store_batch.c -- the provider batches' tables (v7): writes queued like
 * every other write and applied by the store thread, and the reactor
 * thread's reads of them.
 *
 * A batch's lines are written with the batch in one request, so one
 * transaction holds a batch of any size and its mapping of custom_ids to
 * job steps; the results of a batch's lines are likewise written in one
 * request, so a job is told of its lines only once all of them are on
 * disk. */
#include "daemon/store/store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    SB_W_BATCH,
    SB_W_LINE,
    SB_W_SUPERSEDE,
    SB_W_UPDATE,
    SB_W_DROP_TEXT,
    SB_W_OUTCOME,
    SB_W_DROP_JOB,
    SB_W_DROP_FINISHED,
    SB_W_DROP_EMPTY,
    SB_W_DELETE,
};

static const char *const sb_wsql[STORE_BATCH_W_COUNT] = {
    [SB_W_BATCH] = "INSERT INTO batches (name, provider, kind, model, deadline_ms, state,"
                   " created_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'written', ?6)",
    [SB_W_LINE] = "INSERT INTO batch_lines (batch, seq, custom_id, job_id, key, node, attempt,"
                  " line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* a new line for a step replaces what an earlier attempt left */
    [SB_W_SUPERSEDE] = "DELETE FROM batch_lines WHERE job_id = ?1 AND key = ?2 AND batch <> ?3",
    [SB_W_UPDATE] = "UPDATE batches SET state = coalesce(?2, state), file_id = coalesce(?3,"
                    " file_id), remote_id = coalesce(?4, remote_id), remote_state ="
                    " coalesce(?5, remote_state) WHERE name = ?1",
    [SB_W_DROP_TEXT] = "UPDATE batch_lines SET line = NULL WHERE batch = ?1",
    [SB_W_OUTCOME] = "UPDATE batch_lines SET done = 1, result = ?3, code = ?4, message = ?5"
                     " WHERE batch = ?1 AND custom_id = ?2",
    [SB_W_DROP_JOB] = "DELETE FROM batch_lines WHERE job_id = ?1",
    [SB_W_DROP_FINISHED] = "DELETE FROM batch_lines WHERE job_id IN"
                           " (SELECT id FROM jobs WHERE finished_ms IS NOT NULL)",
    [SB_W_DROP_EMPTY] = "DELETE FROM batches WHERE (state = 'written' OR state = 'done')"
                        " AND NOT EXISTS (SELECT 1 FROM batch_lines WHERE batch = batches.name)",
    [SB_W_DELETE] = "DELETE FROM batches WHERE name = ?1",
};

enum { SB_R_BATCHES, SB_R_LINES, SB_R_TEXT, SB_R_RESULT };

static const char *const sb_rsql[STORE_BATCH_R_COUNT] = {
    [SB_R_BATCHES] = "SELECT name, provider, kind, model, deadline_ms, state, file_id, remote_id,"
                     " remote_state, created_ms FROM batches ORDER BY created_ms, name",
    [SB_R_LINES] = "SELECT batch, custom_id, job_id, key, node, attempt, done, code"
                   " FROM batch_lines WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id ="
                   " batch_lines.job_id AND jobs.finished_ms IS NOT NULL) ORDER BY batch, seq",
    [SB_R_TEXT] = "SELECT line FROM batch_lines WHERE batch = ?1 AND line IS NOT NULL"
                  " ORDER BY seq",
    [SB_R_RESULT] = "SELECT done, result, code, message FROM batch_lines"
                    " WHERE batch = ?1 AND custom_id = ?2",
};

void store_batch_req_free(struct store_batch_req *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->items[i].buf);
    free(b->items);
    free(b->name);
    free(b->provider);
    free(b->model);
    free(b->kind);
    free(b->state);
    free(b->file_id);
    free(b->remote_id);
    free(b->remote_state);
    free(b);
}

/* ---- the store thread's side */

static void sb_bind(sqlite3_stmt *st, int i, const char *text)
{
    if (text)
        sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Steps ST (no rows wanted) and resets it; a failure's message goes into Q. */
static int sb_exec(store_t *s, sqlite3_stmt *st, store_req_t *q)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        rc = SQLITE_OK;
    else
        store_set_error(q->error_text, sizeof q->error_text, "record provider batch %s: %s",
                        q->batch->name ? q->batch->name : "", sqlite3_errmsg(s->wdb));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static sqlite3_stmt *sb_w(store_t *s, int idx, store_req_t *q, int *rc)
{
    sqlite3_stmt *st = store_db_stmt(s->wdb, s->bwstmt, idx, sb_wsql[idx], rc);
    if (!st)
        store_set_error(q->error_text, sizeof q->error_text, "record provider batch: %s",
                        sqlite3_errmsg(s->wdb));
    return st;
}

static int sb_insert(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    int rc;
    sqlite3_stmt *st = sb_w(s, SB_W_BATCH, q, &rc);
    if (!st)
        return rc;
    sb_bind(st, 1, b->name);
    sb_bind(st, 2, b->provider);
    sb_bind(st, 3, b->kind);
    sb_bind(st, 4, b->model);
    sqlite3_bind_int64(st, 5, b->deadline_ms);
    sqlite3_bind_int64(st, 6, q->time_ms);
    if ((rc = sb_exec(s, st, q)) != SQLITE_OK)
        return rc;
    sqlite3_stmt *sup = sb_w(s, SB_W_SUPERSEDE, q, &rc);
    if (!sup || !(st = sb_w(s, SB_W_LINE, q, &rc)))
        return rc;
    for (size_t i = 0; i < b->n; i++) {
        const sb_item *it = &b->items[i];
        sb_bind(sup, 1, it->job);
        sb_bind(sup, 2, it->key);
        sb_bind(sup, 3, b->name);
        if ((rc = sb_exec(s, sup, q)) != SQLITE_OK)
            return rc;
        sb_bind(st, 1, b->name);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sb_bind(st, 3, it->custom_id);
        sb_bind(st, 4, it->job);
        sb_bind(st, 5, it->key);
        sb_bind(st, 6, it->node);
        sqlite3_bind_int64(st, 7, it->attempt);
        sqlite3_bind_text(st, 8, it->text, (int)it->len, SQLITE_STATIC);
        if ((rc = sb_exec(s, st, q)) != SQLITE_OK)
            return rc;
    }
    /* an earlier batch whose last line this replaced may go */
    if (!(st = sb_w(s, SB_W_DROP_EMPTY, q, &rc)))
        return rc;
    return sb_exec(s, st, q);
}

static int sb_update(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    int rc;
    sqlite3_stmt *st = sb_w(s, SB_W_UPDATE, q, &rc);
    if (!st)
        return rc;
    sb_bind(st, 1, b->name);
    sb_bind(st, 2, b->state);
    sb_bind(st, 3, b->file_id);
    sb_bind(st, 4, b->remote_id);
    sb_bind(st, 5, b->remote_state);
    if ((rc = sb_exec(s, st, q)) != SQLITE_OK)
        return rc;
    if (sqlite3_changes(s->wdb) == 0) {
        q->status = -ENOENT;
        store_set_error(q->error_text, sizeof q->error_text, "no provider batch %s", b->name);
        return SQLITE_OK;
    }
    if (!b->drop_text)
        return SQLITE_OK;
    if (!(st = sb_w(s, SB_W_DROP_TEXT, q, &rc)))
        return rc;
    sb_bind(st, 1, b->name);
    return sb_exec(s, st, q);
}

static int sb_finish(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    int rc;
    sqlite3_stmt *st = sb_w(s, SB_W_OUTCOME, q, &rc);
    if (!st)
        return rc;
    for (size_t i = 0; i < b->n; i++) {
        const sb_item *it = &b->items[i];
        sb_bind(st, 1, b->name);
        sb_bind(st, 2, it->custom_id);
        if (it->text) {
            sqlite3_bind_text(st, 3, it->text, (int)it->len, SQLITE_STATIC);
        } else {
            sqlite3_bind_int(st, 4, it->code);
            sb_bind(st, 5, it->message);
        }
        if ((rc = sb_exec(s, st, q)) != SQLITE_OK)
            return rc;
    }
    free(b->state);
    if (!(b->state = strdup("done")))
        return SQLITE_NOMEM;
    b->drop_text = true;
    return sb_update(s, q);
}

static int sb_drop(store_t *s, store_req_t *q)
{
    struct store_batch_req *b = q->batch;
    int rc;
    sqlite3_stmt *st;
    if (b->what == SB_DELETE) {
        if (!(st = sb_w(s, SB_W_DELETE, q, &rc)))
            return rc;
        sb_bind(st, 1, b->name);
        return sb_exec(s, st, q);
    }
    if (!(st = sb_w(s, b->finished_jobs ? SB_W_DROP_FINISHED : SB_W_DROP_JOB, q, &rc)))
        return rc;
    if (!b->finished_jobs)
        sb_bind(st, 1, q->job_id);
    if ((rc = sb_exec(s, st, q)) != SQLITE_OK)
        return rc;
    if (!(st = sb_w(s, SB_W_DROP_EMPTY, q, &rc)))
        return rc;
    return sb_exec(s, st, q);
}

int store_batch_apply(store_t *s, store_req_t *q)
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

/* ---- queueing (any thread) */

static int sb_dup(const char *src, char **out)
{
    *out = NULL;
    if (!src)
        return 0;
    return (*out = strdup(src)) ? 0 : -ENOMEM;
}

/* A request with a batch part of kind WHAT for batch NAME (NULL: none). */
static store_req_t *sb_req(enum sb_what what, const char *name, store_done_cb cb, void *ud)
{
    store_req_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->op = STORE_OP_BATCH;
    q->cb = cb;
    q->ud = ud;
    if (!(q->batch = calloc(1, sizeof *q->batch)) || sb_dup(name, &q->batch->name) < 0) {
        store_batch_req_free(q->batch);
        free(q);
        return NULL;
    }
    q->batch->what = what;
    return q;
}

/* Queues Q, or frees it on a failure (RC < 0) to fill it. */
static int sb_queue(store_t *s, store_req_t *q, int rc)
{
    if (rc < 0) {
        store_batch_req_free(q->batch);
        free(q);
        return rc;
    }
    q->time_ms = store_now_ms();
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        store_batch_req_free(q->batch);
        free(q);
        return -ESHUTDOWN;
    }
    list_add_tail(&s->queue, &q->link);
    s->queued++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Copies the strings of one line into IT: N strings (NULL stays NULL),
 * then BODY (BODY_LEN bytes, may hold anything but is NUL-terminated). */
static int sb_item_fill(sb_item *it, const char *const *strs, const char **dst[], size_t n,
                        const char *body, size_t body_len, const char **body_dst)
{
    size_t total = body ? body_len + 1 : 0;
    for (size_t i = 0; i < n; i++)
        total += strs[i] ? strlen(strs[i]) + 1 : 0;
    if (!(it->buf = malloc(total ? total : 1)))
        return -ENOMEM;
    char *p = it->buf;
    for (size_t i = 0; i < n; i++) {
        *dst[i] = NULL;
        if (!strs[i])
            continue;
        size_t l = strlen(strs[i]) + 1;
        memcpy(p, strs[i], l);
        *dst[i] = p;
        p += l;
    }
    *body_dst = NULL;
    if (body) {
        memcpy(p, body, body_len);
        p[body_len] = '\0';
        *body_dst = p;
        it->len = body_len;
    }
    return 0;
}

int store_batch_insert(store_t *s, const store_batch_spec_t *spec, store_done_cb cb, void *ud)
{
    if (!s || !spec || !spec->name || !spec->provider || !spec->model || !spec->kind ||
        (spec->nlines && !spec->lines))
        return -EINVAL;
    for (size_t i = 0; i < spec->nlines; i++) {
        const store_batch_line_t *l = &spec->lines[i];
        if (!l->custom_id || !l->job_id || !l->key || !l->text || l->len > INT32_MAX)
            return -EINVAL;
    }
    store_req_t *q = sb_req(SB_INSERT, spec->name, cb, ud);
    if (!q)
        return -ENOMEM;
    struct store_batch_req *b = q->batch;
    int rc = 0;
    if (sb_dup(spec->provider, &b->provider) < 0 || sb_dup(spec->model, &b->model) < 0 ||
        sb_dup(spec->kind, &b->kind) < 0 ||
        (spec->nlines && !(b->items = calloc(spec->nlines, sizeof *b->items))))
        rc = -ENOMEM;
    b->deadline_ms = spec->deadline_ms;
    for (size_t i = 0; rc == 0 && i < spec->nlines; i++) {
        const store_batch_line_t *l = &spec->lines[i];
        sb_item *it = &b->items[i];
        const char *strs[] = { l->custom_id, l->job_id, l->key, l->node };
        const char **dst[] = { &it->custom_id, &it->job, &it->key, &it->node };
        it->attempt = l->attempt;
        rc = sb_item_fill(it, strs, dst, 4, l->text, l->len, &it->text);
        if (rc == 0)
            b->n++;
    }
    return sb_queue(s, q, rc);
}

int store_batch_update(store_t *s, const char *name, const store_batch_set_t *set,
                       store_done_cb cb, void *ud)
{
    if (!s || !name || !set)
        return -EINVAL;
    store_req_t *q = sb_req(SB_UPDATE, name, cb, ud);
    if (!q)
        return -ENOMEM;
    struct store_batch_req *b = q->batch;
    int rc = 0;
    if (sb_dup(set->state, &b->state) < 0 || sb_dup(set->file_id, &b->file_id) < 0 ||
        sb_dup(set->remote_id, &b->remote_id) < 0 ||
        sb_dup(set->remote_state, &b->remote_state) < 0)
        rc = -ENOMEM;
    b->drop_text = set->drop_text;
    return sb_queue(s, q, rc);
}

int store_batch_finish(store_t *s, const char *name, const char *remote_state,
                       const store_batch_outcome_t *outcomes, size_t n, store_done_cb cb,
                       void *ud)
{
    if (!s || !name || (n && !outcomes))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!outcomes[i].custom_id || outcomes[i].len > INT32_MAX)
            return -EINVAL;
    store_req_t *q = sb_req(SB_FINISH, name, cb, ud);
    if (!q)
        return -ENOMEM;
    struct store_batch_req *b = q->batch;
    int rc = sb_dup(remote_state, &b->remote_state);
    if (rc == 0 && n && !(b->items = calloc(n, sizeof *b->items)))
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const store_batch_outcome_t *o = &outcomes[i];
        sb_item *it = &b->items[i];
        const char *strs[] = { o->custom_id, o->result ? NULL : o->message };
        const char **dst[] = { &it->custom_id, &it->message };
        it->code = o->code;
        rc = sb_item_fill(it, strs, dst, 2, o->result, o->len, &it->text);
        if (rc == 0)
            b->n++;
    }
    return sb_queue(s, q, rc);
}

int store_batch_drop_job(store_t *s, const char *job_id, store_done_cb cb, void *ud)
{
    if (!s || (job_id && !store_id_valid(job_id)))
        return -EINVAL;
    store_req_t *q = sb_req(SB_DROP_JOB, NULL, cb, ud);
    if (!q)
        return -ENOMEM;
    if (job_id)
        memcpy(q->job_id, job_id, STORE_ID_SIZE);
    else
        q->batch->finished_jobs = true;
    return sb_queue(s, q, 0);
}

int store_batch_delete(store_t *s, const char *name, store_done_cb cb, void *ud)
{
    if (!s || !name)
        return -EINVAL;
    store_req_t *q = sb_req(SB_DELETE, name, cb, ud);
    return q ? sb_queue(s, q, 0) : -ENOMEM;
}

/* ---- reads (reactor thread) */

static sqlite3_stmt *sb_r(store_t *s, int idx, char *err, size_t errlen, int *status)
{
    int rc;
    sqlite3_stmt *st = store_db_stmt(s->rdb, s->brstmt, idx, sb_rsql[idx], &rc);
    if (!st) {
        store_set_error(err, errlen, "cannot prepare a query: %s", sqlite3_errmsg(s->rdb));
        *status = store_errno_of(rc) ? store_errno_of(rc) : -EIO;
    }
    return st;
}

static json_t *sb_col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? json_string(t) : json_null();
}

static json_t *sb_col_int(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                     : json_integer(sqlite3_column_int64(st, i));
}

/* Sets KEY of O to V (stolen); false when V is NULL or out of memory. */
static bool sb_set(json_t *o, const char *key, json_t *v)
{
    return v && json_object_set_new(o, key, v) == 0;
}

/* The batches, by name in BYNAME and in order in LIST. */
static int sb_load_batches(store_t *s, json_t *list, json_t *byname, char *err, size_t errlen)
{
    static const char *const cols[] = { "name", "provider", "kind", "model", "deadline_ms",
                                        "state", "file_id", "remote_id", "remote_state",
                                        "created_ms" };
    int rc = 0, step;
    sqlite3_stmt *st = sb_r(s, SB_R_BATCHES, err, errlen, &rc);
    if (!st)
        return rc;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *b = json_object();
        bool ok = b != NULL;
        for (int i = 0; ok && i < 10; i++)
            ok = sb_set(b, cols[i], i == 4 || i == 9 ? sb_col_int(st, i) : sb_col_text(st, i));
        ok = ok && sb_set(b, "lines", json_array()) &&
             json_object_set(byname, (const char *)sqlite3_column_text(st, 0), b) == 0 &&
             json_array_append(list, b) == 0;
        json_decref(b);
        if (!ok)
            rc = -ENOMEM;
    }
    if (rc == 0 && step != SQLITE_DONE) {
        store_set_error(err, errlen, "cannot read provider batches: %s", sqlite3_errmsg(s->rdb));
        rc = store_errno_of(step) ? store_errno_of(step) : -EIO;
    }
    sqlite3_reset(st);
    return rc;
}

static int sb_load_lines(store_t *s, json_t *byname, char *err, size_t errlen)
{
    int rc = 0, step;
    sqlite3_stmt *st = sb_r(s, SB_R_LINES, err, errlen, &rc);
    if (!st)
        return rc;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *b = json_object_get(byname, (const char *)sqlite3_column_text(st, 0));
        if (!b)
            continue; /* a line is never without its batch (a foreign key) */
        json_t *l = json_object();
        bool ok = l && sb_set(l, "custom_id", sb_col_text(st, 1)) &&
                  sb_set(l, "job", sb_col_text(st, 2)) && sb_set(l, "key", sb_col_text(st, 3)) &&
                  sb_set(l, "node", sb_col_text(st, 4)) &&
                  sb_set(l, "attempt", sb_col_int(st, 5)) &&
                  sb_set(l, "done", json_boolean(sqlite3_column_int(st, 6))) &&
                  sb_set(l, "code", sb_col_int(st, 7)) &&
                  json_array_append(json_object_get(b, "lines"), l) == 0;
        json_decref(l);
        if (!ok)
            rc = -ENOMEM;
    }
    if (rc == 0 && step != SQLITE_DONE) {
        store_set_error(err, errlen, "cannot read provider batch lines: %s",
                        sqlite3_errmsg(s->rdb));
        rc = store_errno_of(step) ? store_errno_of(step) : -EIO;
    }
    sqlite3_reset(st);
    return rc;
}

int store_batch_load(store_t *s, json_t **batches, char *err, size_t errlen)
{
    if (!s || !batches)
        return -EINVAL;
    if (s->pg)
        return store_pg_batch_load(s, batches, err, errlen);
    json_t *list = json_array(), *byname = json_object();
    int rc = list && byname ? 0 : -ENOMEM;
    if (rc == 0)
        rc = sb_load_batches(s, list, byname, err, errlen);
    if (rc == 0)
        rc = sb_load_lines(s, byname, err, errlen);
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

int store_batch_text(store_t *s, const char *name, char **text, size_t *len, char *err,
                     size_t errlen)
{
    if (!s || !name || !text || !len)
        return -EINVAL;
    if (s->pg)
        return store_pg_batch_text(s, name, text, len, err, errlen);
    int rc = 0, step;
    sqlite3_stmt *st = sb_r(s, SB_R_TEXT, err, errlen, &rc);
    if (!st)
        return rc;
    sbuf b;
    sbuf_init(&b, 0);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *l = (const char *)sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (!l || sbuf_add(&b, l, n) < 0 || sbuf_addc(&b, '\n') < 0)
            rc = -ENOMEM;
    }
    if (rc == 0 && step != SQLITE_DONE) {
        store_set_error(err, errlen, "cannot read provider batch %s: %s", name,
                        sqlite3_errmsg(s->rdb));
        rc = store_errno_of(step) ? store_errno_of(step) : -EIO;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == 0 && sbuf_grow(&b, 1) < 0)
        rc = -ENOMEM;
    if (rc < 0) {
        if (rc == -ENOMEM)
            store_set_error(err, errlen, "out of memory");
        sbuf_free(&b);
        return rc;
    }
    *text = sbuf_steal(&b, len);
    return 0;
}

int store_batch_result(store_t *s, const char *name, const char *custom_id, json_t **result,
                       int *code, char *message, size_t msglen, char *err, size_t errlen)
{
    if (!s || !name || !custom_id || !result || !code)
        return -EINVAL;
    *result = NULL;
    *code = 0;
    if (message && msglen)
        message[0] = '\0';
    if (s->pg)
        return store_pg_batch_result(s, name, custom_id, result, code, message, msglen, err,
                                     errlen);
    int rc = 0;
    sqlite3_stmt *st = sb_r(s, SB_R_RESULT, err, errlen, &rc);
    if (!st)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, custom_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        store_set_error(err, errlen, "no line %s in provider batch %s", custom_id, name);
        rc = -ENOENT;
    } else if (step != SQLITE_ROW) {
        store_set_error(err, errlen, "cannot read provider batch %s: %s", name,
                        sqlite3_errmsg(s->rdb));
        rc = store_errno_of(step) ? store_errno_of(step) : -EIO;
    } else if (!sqlite3_column_int(st, 0)) {
        store_set_error(err, errlen, "line %s of provider batch %s has no result yet",
                        custom_id, name);
        rc = -EAGAIN;
    } else if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
        const char *t = (const char *)sqlite3_column_text(st, 1);
        if (!t || !(*result = json_loads(t, JSON_DECODE_ANY, NULL))) {
            store_set_error(err, errlen, "line %s of provider batch %s: the stored result is "
                            "not valid JSON", custom_id, name);
            rc = -EIO;
        }
    } else {
        const char *m = (const char *)sqlite3_column_text(st, 3);
        *code = sqlite3_column_int(st, 2);
        if (message && msglen)
            snprintf(message, msglen, "%s", m ? m : "");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}
