/* batch.c -- the batch manager: its indexes of lines, start (resuming what
 * the store holds), lookups, dropping a job's lines, stats.
 *
 * What is in memory: every batch not yet forgotten and its lines (job,
 * step key, custom_id, attempt), and a line's JSONL only until its batch
 * is created. A result is read from the store when its step looks it up,
 * so a 10,000-line batch's answers are never all held at once. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/batch/batch_internal.h"

/* ---- the hash table */

uint64_t bhash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

bhnode *bhash_get(const bhash *h, const char *key)
{
    if (!h->nslots)
        return NULL;
    uint64_t hv = bhash_str(key);
    for (bhnode *n = h->slots[hv % h->nslots]; n; n = n->next)
        if (n->hash == hv && strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static int bhash_grow(bhash *h)
{
    size_t ns = h->nslots ? h->nslots * 2 : 64;
    bhnode **slots = calloc(ns, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < h->nslots; i++) {
        for (bhnode *n = h->slots[i], *nx; n; n = nx) {
            nx = n->next;
            n->next = slots[n->hash % ns];
            slots[n->hash % ns] = n;
        }
    }
    free(h->slots);
    h->slots = slots;
    h->nslots = ns;
    return 0;
}

int bhash_put(bhash *h, bhnode *n)
{
    if (h->n >= h->nslots && bhash_grow(h) < 0)
        return -ENOMEM;
    n->hash = bhash_str(n->key);
    n->next = h->slots[n->hash % h->nslots];
    h->slots[n->hash % h->nslots] = n;
    h->n++;
    return 0;
}

void bhash_del(bhash *h, bhnode *n)
{
    for (bhnode **p = &h->slots[n->hash % h->nslots]; *p; p = &(*p)->next) {
        if (*p == n) {
            *p = n->next;
            h->n--;
            return;
        }
    }
}

void bhash_free(bhash *h)
{
    free(h->slots);
    memset(h, 0, sizeof *h);
}

/* ---- jobs and lines */

void bmgr_log(batch_mgr_t *m, int level, const char *fmt, ...)
{
    if (!m->log || !log_enabled(m->log, level))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write(m->log, level, NULL, "%s", msg);
}

const char *bmgr_kind_name(loom_call_kind k)
{
    return k == LOOM_CALL_EMBED ? "embed" : "chat";
}

jobrec *bmgr_jobrec(batch_mgr_t *m, const char *job, bool make)
{
    bhnode *n = bhash_get(&m->jobs, job);
    if (n)
        return LIST_OWNER(n, jobrec, node);
    if (!make)
        return NULL;
    jobrec *jr = calloc(1, sizeof *jr);
    if (!jr || !(jr->job = strdup(job)))
        goto fail;
    list_init(&jr->lines);
    jr->node.key = jr->job;
    if (bhash_put(&m->jobs, &jr->node) < 0)
        goto fail;
    return jr;
fail:
    if (jr)
        free(jr->job);
    free(jr);
    return NULL;
}

static void jobrec_maybe_free(batch_mgr_t *m, jobrec *jr)
{
    if (!list_empty(&jr->lines))
        return;
    bhash_del(&m->jobs, &jr->node);
    free(jr->job);
    free(jr);
}

bline *bmgr_line_new(const char *job, const char *key, const char *node, int attempt)
{
    size_t lj = strlen(job), lk = strlen(key);
    /* one buffer: "JOB\x1fKEY" (the index's key), then JOB and KEY */
    size_t n = 2 * (lj + lk + 2);
    bline *l = calloc(1, sizeof *l);
    if (!l || !(l->stepkey = malloc(n)) || (node && !(l->node = strdup(node)))) {
        if (l)
            free(l->stepkey);
        free(l);
        return NULL;
    }
    memcpy(l->stepkey, job, lj);
    l->stepkey[lj] = '\x1f';
    memcpy(l->stepkey + lj + 1, key, lk + 1);
    char *p = l->stepkey + lj + lk + 2;
    memcpy(p, job, lj + 1);
    memcpy(p + lj + 1, key, lk + 1);
    l->job = p;
    l->key = p + lj + 1;
    l->by_step.key = l->stepkey;
    l->attempt = attempt;
    list_init(&l->job_link);
    return l;
}

static void bline_free(bline *l)
{
    free(l->stepkey);
    free(l->node);
    free(l->text);
    free(l->message);
    free(l);
}

static bline *find_line(const batch_mgr_t *m, const char *job, const char *key)
{
    char buf[256];
    size_t lj = strlen(job), lk = strlen(key), n = lj + lk + 2;
    char *k = n <= sizeof buf ? buf : malloc(n);
    if (!k)
        return NULL;
    memcpy(k, job, lj);
    k[lj] = '\x1f';
    memcpy(k + lj + 1, key, lk + 1);
    bhnode *hn = bhash_get(&m->lines, k);
    if (k != buf)
        free(k);
    return hn ? LIST_OWNER(hn, bline, by_step) : NULL;
}

int bmgr_line_attach(batch_mgr_t *m, batch *b, bline *l, size_t idx)
{
    bline *old = find_line(m, l->job, l->key);
    if (old) {
        /* a later attempt's line replaces the earlier one's */
        batch *ob = old->b;
        bmgr_line_drop(m, old);
        if (ob && ob != b && ob->live == 0)
            bmgr_abandon(ob);
    }
    if (idx >= b->nlines) {
        if (vec_reserve(&b->lines, b->nlines, &b->cap, sizeof *b->lines, idx + 1 - b->nlines) < 0)
            return -ENOMEM;
        memset(b->lines + b->nlines, 0, (idx + 1 - b->nlines) * sizeof *b->lines);
        b->nlines = idx + 1;
    }
    if (b->lines[idx])
        return -EEXIST;
    jobrec *jr = bmgr_jobrec(m, l->job, true);
    if (!jr)
        return -ENOMEM;
    if (bhash_put(&m->lines, &l->by_step) < 0) {
        jobrec_maybe_free(m, jr);
        return -ENOMEM;
    }
    l->jr = jr;
    list_add_tail(&jr->lines, &l->job_link);
    l->b = b;
    l->idx = idx;
    snprintf(l->custom_id, sizeof l->custom_id, "l%zu", idx);
    b->lines[idx] = l;
    b->live++;
    b->bytes += l->len + 1;
    return 0;
}

void bmgr_line_drop(batch_mgr_t *m, bline *l)
{
    batch *b = l->b;
    if (l->jr) {
        bhash_del(&m->lines, &l->by_step);
        list_del(&l->job_link);
        jobrec_maybe_free(m, l->jr);
    }
    if (b && b->lines[l->idx] == l) {
        b->lines[l->idx] = NULL;
        b->live--;
        b->bytes -= l->len + 1;
    }
    bline_free(l);
}

/* ---- batches */

batch *bmgr_new(batch_mgr_t *m, const char *name, const char *provider, const char *model,
                 loom_call_kind kind, uint64_t deadline_ms, bstate st)
{
    batch *b = calloc(1, sizeof *b);
    if (!b || !(b->provider = strdup(provider)) || !(b->model = strdup(model ? model : "")))
        goto fail;
    if (name) {
        snprintf(b->name, sizeof b->name, "%s", name);
    } else {
        char id[STORE_ID_SIZE];
        if (store_new_job_id(m->st, id) < 0)
            goto fail;
        snprintf(b->name, sizeof b->name, "loom-%s", id);
    }
    b->m = m;
    b->kind = kind;
    b->deadline_ms = deadline_ms;
    b->st = st;
    b->done = b->total = -1;
    list_add_tail(&m->batches, &b->link);
    return b;
fail:
    if (b) {
        free(b->provider);
        free(b->model);
    }
    free(b);
    return NULL;
}

void bmgr_free_outcomes(batch *b)
{
    for (size_t i = 0; b->outcomes && i < b->nlines; i++)
        free(b->outcomes[i]);
    free(b->outcomes);
    free(b->outcome_len);
    b->outcomes = NULL;
    b->outcome_len = NULL;
}

void bmgr_release(batch *b)
{
    bmgr_free_outcomes(b);
    free(b->lines);
    free(b->provider);
    free(b->model);
    free(b);
}

void bmgr_free(batch *b)
{
    batch_mgr_t *m = b->m;
    if (b->dead)
        return;
    b->dead = true;
    list_del(&b->link);
    if (b->timer)
        reactor_timer_cancel(m->r, b->timer);
    b->timer = NULL;
    if (b->http)
        http_cancel(b->http);
    b->http = NULL;
    for (size_t i = 0; i < b->nlines; i++)
        if (b->lines[i])
            bmgr_line_drop(m, b->lines[i]);
    if (b->writes == 0)
        bmgr_release(b);
}

bool bmgr_first_of_job(batch_mgr_t *m, bline *l)
{
    if (l->jr->mark == m->mark)
        return false;
    l->jr->mark = m->mark;
    return true;
}

void bmgr_progress(batch *b, const char *state)
{
    batch_mgr_t *m = b->m;
    if (!m->hooks.progress)
        return;
    int64_t done = b->st == B_OPEN ? 0 : b->done, total = b->total;
    if (b->st == B_OPEN || total < 0)
        total = (int64_t)b->live;
    m->mark++;
    for (size_t i = 0; i < b->nlines; i++) {
        bline *l = b->lines[i];
        if (l && bmgr_first_of_job(m, l))
            m->hooks.progress(m->hooks.ud, l->job, b->name, b->remote_id, state, done, total);
    }
}

/* ---- the manager */

batch_mgr_t *batch_mgr_new(reactor_t *r, store_t *st, const log_sink *log,
                           const batch_mgr_hooks *hooks)
{
    if (!r || !st || !hooks || !hooks->upstream) {
        errno = EINVAL;
        return NULL;
    }
    batch_mgr_t *m = calloc(1, sizeof *m);
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    m->r = r;
    m->st = st;
    m->log = log;
    m->hooks = *hooks;
    list_init(&m->batches);
    list_init(&m->writes);
    return m;
}

static void on_start_ready(reactor_t *r, void *ud)
{
    batch_mgr_t *m = ud;
    (void)r;
    json_t *jobs = m->ready_jobs;
    m->ready_jobs = NULL;
    const char *job;
    json_t *v;
    json_object_foreach(jobs, job, v) {
        (void)v;
        if (m->hooks.ready)
            m->hooks.ready(m->hooks.ud, job);
    }
    json_decref(jobs);
}

/* One stored line of batch B into the indexes. */
static int start_line(batch_mgr_t *m, batch *b, json_t *jl)
{
    const char *cid = json_string_value(json_object_get(jl, "custom_id"));
    const char *job = json_string_value(json_object_get(jl, "job"));
    const char *key = json_string_value(json_object_get(jl, "key"));
    char *end;
    if (!cid || !job || !key || cid[0] != 'l')
        return 0; /* not one of ours: nothing will ask for it */
    size_t idx = strtoul(cid + 1, &end, 10);
    if (*end || idx > (size_t)1 << 30)
        return 0;
    bline *l = bmgr_line_new(job, key, json_string_value(json_object_get(jl, "node")),
                              (int)json_integer_value(json_object_get(jl, "attempt")));
    if (!l)
        return -ENOMEM;
    l->done = json_is_true(json_object_get(jl, "done"));
    int rc = bmgr_line_attach(m, b, l, idx);
    if (rc < 0) {
        bline_free(l);
        return rc == -EEXIST ? 0 : rc;
    }
    if (l->done && m->ready_jobs)
        json_object_set_new(m->ready_jobs, job, json_true());
    return 0;
}

static bstate start_state(const char *s)
{
    return !s ? B_WRITTEN
           : !strcmp(s, "uploaded") ? B_UPLOADED
           : !strcmp(s, "created") ? B_CREATED
           : !strcmp(s, "done") ? B_DONE : B_WRITTEN;
}

int batch_mgr_start(batch_mgr_t *m, char *err, size_t errlen)
{
    json_t *all = NULL, *jb;
    size_t i;
    /* lines of jobs that ended while the daemon was down (or just before
     * it died) are not wanted */
    store_batch_drop_job(m->st, NULL, NULL, NULL);
    if (store_batch_load(m->st, &all, err, errlen) < 0)
        return -1;
    m->ready_jobs = json_object();
    json_array_foreach(all, i, jb) {
        const char *name = json_string_value(json_object_get(jb, "name"));
        const char *kind = json_string_value(json_object_get(jb, "kind"));
        batch *b = bmgr_new(m, name, json_string_value(json_object_get(jb, "provider")),
                             json_string_value(json_object_get(jb, "model")),
                             kind && !strcmp(kind, "embed") ? LOOM_CALL_EMBED : LOOM_CALL_CHAT,
                             (uint64_t)json_integer_value(json_object_get(jb, "deadline_ms")),
                             start_state(json_string_value(json_object_get(jb, "state"))));
        if (!b)
            goto nomem;
        const char *f = json_string_value(json_object_get(jb, "file_id"));
        const char *rid = json_string_value(json_object_get(jb, "remote_id"));
        const char *rs = json_string_value(json_object_get(jb, "remote_state"));
        snprintf(b->file_id, sizeof b->file_id, "%s", f ? f : "");
        snprintf(b->remote_id, sizeof b->remote_id, "%s", rid ? rid : "");
        snprintf(b->remote_state, sizeof b->remote_state, "%s", rs ? rs : "");
        b->resumed = true;
        size_t k;
        json_t *jl;
        json_array_foreach(json_object_get(jb, "lines"), k, jl) {
            if (start_line(m, b, jl) < 0)
                goto nomem;
        }
        b->bytes = 0;
        if (b->st == B_DONE && b->live == 0)
            bmgr_free(b); /* the store deletes it with its last line */
    }
    json_decref(all);
    all = NULL;
    LIST_EACH_SAFE(l, nx, &m->batches) {
        batch *b = LIST_OWNER(l, batch, link);
        if (b->st == B_DONE)
            continue;
        bmgr_log(m, LOOM_LOG_INFO, "batch %s (%s, %zu lines): resumed, %s", b->name,
                  b->provider, b->live,
                  b->st == B_CREATED ? "polling" : "looking for what was sent before");
        bmgr_run(b);
    }
    if (json_object_size(m->ready_jobs))
        reactor_post_embedded(m->r, &m->post, on_start_ready, m);
    else
        json_decref(m->ready_jobs), m->ready_jobs = NULL;
    return 0;
nomem:
    json_decref(all);
    snprintf(err, errlen, "out of memory loading provider batches");
    return -1;
}

int batch_mgr_lookup(batch_mgr_t *m, const char *job, const char *key, batch_line_info *out,
                     char *err, size_t errlen)
{
    bline *l = find_line(m, job, key);
    if (!l) {
        out->state = BATCH_LINE_NONE;
        return 0;
    }
    out->attempt = l->attempt;
    snprintf(out->batch, sizeof out->batch, "%s", l->b->st == B_OPEN ? "" : l->b->name);
    if (!l->done) {
        out->state = BATCH_LINE_PENDING;
        return 0;
    }
    out->state = BATCH_LINE_DONE;
    out->result = NULL;
    if (l->mem_outcome) {
        out->code = l->code;
        snprintf(out->message, sizeof out->message, "%s", l->message ? l->message : "");
        return 0;
    }
    int code = 0;
    int rc = store_batch_result(m->st, l->b->name, l->custom_id, &out->result, &code,
                                out->message, sizeof out->message, err, errlen);
    if (rc < 0)
        return -1;
    out->code = out->result ? LOOM_OK : (loom_errcode)code;
    if (!out->result && out->code == LOOM_OK)
        out->code = LOOM_E_UPSTREAM;
    return 0;
}

bool batch_mgr_has_line(batch_mgr_t *m, const char *job, const char *key)
{
    return find_line(m, job, key) != NULL;
}

int batch_mgr_submit(batch_mgr_t *m, const batch_line_spec *s, loom_errcode *code, char *err,
                     size_t errlen)
{
    return bmgr_collect(m, s, code, err, errlen);
}

void batch_mgr_drop_job(batch_mgr_t *m, const char *job)
{
    bool stored = false;
    jobrec *jr;
    /* the record goes with its last line */
    while ((jr = bmgr_jobrec(m, job, false))) {
        bline *l = LIST_OWNER(list_first(&jr->lines), bline, job_link);
        batch *b = l->b;
        stored = stored || b->st != B_OPEN;
        bmgr_line_drop(m, l);
        if (b->live == 0)
            bmgr_abandon(b);
    }
    if (stored)
        store_batch_drop_job(m->st, job, NULL, NULL);
}

bool batch_mgr_calls_on(const batch_mgr_t *m, const http_client_t *client)
{
    LIST_EACH_SAFE(l, nx, &m->batches) {
        const batch *b = LIST_OWNER(l, batch, link);
        if (b->http && b->http_client == client)
            return true;
    }
    return false;
}

json_t *batch_mgr_stats(const batch_mgr_t *m)
{
    int64_t open = 0, submitted = 0, ended = 0, collecting = 0, pending = 0, done = 0;
    LIST_EACH_SAFE(l, nx, &m->batches) {
        const batch *b = LIST_OWNER(l, batch, link);
        if (b->st == B_OPEN)
            open++;
        else if (b->st == B_DONE)
            ended++;
        else
            submitted++;
        for (size_t i = 0; i < b->nlines; i++) {
            const bline *ln = b->lines[i];
            if (!ln)
                continue;
            if (b->st == B_OPEN)
                collecting++;
            else if (ln->done)
                done++;
            else
                pending++;
        }
    }
    return json_pack("{s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I}, s:I, s:I, s:I}", "batches",
                     "open", (json_int_t)open, "submitted", (json_int_t)submitted, "ended",
                     (json_int_t)ended, "failed", (json_int_t)m->failed, "lines", "collecting",
                     (json_int_t)collecting, "pending", (json_int_t)pending, "done",
                     (json_int_t)done, "uploads", (json_int_t)m->uploads, "polls",
                     (json_int_t)m->polls, "errors", (json_int_t)m->errors);
}

void batch_mgr_free(batch_mgr_t *m)
{
    if (!m)
        return;
    reactor_post_cancel(m->r, &m->post);
    json_decref(m->ready_jobs);
    /* writes still in the store's queue complete later, into nothing */
    LIST_EACH_SAFE(l, nx, &m->writes) {
        bwrite *w = LIST_OWNER(l, bwrite, link);
        list_del(&w->link);
        list_init(&w->link);
        w->m = NULL;
        w->b = NULL;
    }
    while (!list_empty(&m->batches)) {
        batch *b = LIST_OWNER(list_first(&m->batches), batch, link);
        b->writes = 0;
        bmgr_free(b);
    }
    bhash_free(&m->lines);
    bhash_free(&m->jobs);
    free(m);
}
