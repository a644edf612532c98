/* wfdir_set.c -- the served set of a workflows directory: which compiled
 * version of each file is served, the checks across files, lookups and the
 * listing, and the messages both files write. wfdir.c decides what to
 * compile; this file decides what to serve.
 *
 * A settle tries every waiting ("pending") version against the set in
 * rounds. Each round builds the set as it would be if the pendings still in
 * the running were swapped in; a pending that loses its name to another file
 * or whose `use`s do not check is taken out of the running (its file's
 * served version goes back in the set) and the round starts again. The first
 * round where no pending fails is the new served set. Taking a pending out
 * can only bring a served version back, so at most one round per pending
 * runs; then, since swapping some in may free a name or bring a `use` target
 * that another waiting pending needed, the whole settle repeats until
 * nothing more is swapped in. */
#include "daemon/wfdir/wfdir_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/containers.h"


/* One workflow of the set being checked. */
typedef struct member {
    wfdir_file *f;
    dsl_graph *g;     /* f->pending when PENDING, else f->graph */
    bool pending;
    bool holder;      /* g's name is the one f serves now: it keeps it against newcomers */
    uint64_t claim;
} member;

/* A served version as it was before the settle, to tell what changed. */
typedef struct before {
    dsl_graph *g;     /* one reference: keeps g->name and g->file alive */
    wfdir_version v;
} before;

static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Same name: the file serving it first, then the earliest newcomer. */
static int by_name(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = strcmp(x->g->name, y->g->name);
    if (c)
        return c;
    if (x->holder != y->holder)
        return x->holder ? -1 : 1;
    return x->claim < y->claim ? -1 : x->claim > y->claim;
}

/* dsl_check_uses reports a cycle in the file of its member that comes first
 * in the set: pendings first, so a cycle is blamed on the version that closed
 * it, which is then not swapped in, and the served set never has one. */
static int by_check_order(const void *a, const void *b)
{
    const member *x = a, *y = b;
    if (x->pending != y->pending)
        return x->pending ? -1 : 1;
    return x->claim < y->claim ? -1 : x->claim > y->claim;
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* F's pending does not check (TEXT, owned, says why): out of this settle,
 * waiting for the next one. Logged once per distinct reason. */
static void reject_pending(wfdir *w, wfdir_file *f, char *text)
{
    if (!text)
        text = strdup("out of memory while recording the errors");
    f->trying = false;
    if (same_text(f->pending_error, text)) {
        free(text);
        return;
    }
    wfdir_log_text(w, WFDIR_LOG_ERROR, text);
    if (f->graph)
        wfdir_logf(w, WFDIR_LOG_ERROR,
                   "%s: note: not loaded until this is resolved; '%s' v%llu (%s) stays in service",
                   f->path, f->graph->name, (unsigned long long)f->version.load,
                   f->version.hash);
    else
        wfdir_logf(w, WFDIR_LOG_ERROR, "%s: note: not loaded until this is resolved", f->path);
    free(f->pending_error);
    f->pending_error = text;
}

/* F's served graph now fails the checks (a `use` whose target went away),
 * or passes again (TEXT NULL). Served either way; logged when it changes. */
static void set_check_error(wfdir *w, wfdir_file *f, char *text)
{
    if (same_text(f->check_error, text)) {
        free(text);
        return;
    }
    if (text) {
        wfdir_log_text(w, WFDIR_LOG_ERROR, text);
        wfdir_logf(w, WFDIR_LOG_ERROR, "%s: note: '%s' v%llu stays in service", f->path,
                   f->graph->name, (unsigned long long)f->version.load);
    }
    free(f->check_error);
    f->check_error = text;
}

/* The next load number of NAME. The table is reserved before a settle, so
 * only copying the name can fail, and then the number is still right for
 * this once, just not remembered. */
static uint64_t next_load(wfdir *w, const char *name)
{
    size_t lo = 0, hi = w->nloads;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->loads[mid].name, name);
        if (c == 0)
            return ++w->loads[mid].n;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    char *copy = strdup(name);
    if (!copy || w->nloads == w->caploads) {
        free(copy);
        return 1;
    }
    memmove(w->loads + lo + 1, w->loads + lo, (w->nloads - lo) * sizeof *w->loads);
    w->loads[lo] = (wfdir_loads){ copy, 1 };
    w->nloads++;
    return 1;
}

static void accept_pending(wfdir *w, wfdir_file *f)
{
    dsl_graph *g = f->pending;
    bool renamed = !f->graph || strcmp(f->graph->name, g->name) != 0;
    dsl_graph_unref(f->graph);
    f->graph = g;
    f->pending = NULL;
    f->trying = false;
    memcpy(f->version.hash, g->version, sizeof f->version.hash);
    f->version.hash[sizeof f->version.hash - 1] = 0;
    f->version.load = next_load(w, g->name);
    f->loaded_us = realtime_us();
    if (renamed)
        f->claim = f->pending_claim;
    free(f->pending_error);
    f->pending_error = NULL;
    free(f->check_error);
    f->check_error = NULL;
}

/* Checks `use` over the M members of MV (in check order). Returns 1 when a
 * pending was rejected (another round is needed), 0 when the set stands (its
 * pendings are then swapped in, setting *ACCEPTED), -ENOMEM. */
static int check_uses(wfdir *w, member *mv, size_t m, bool *accepted)
{
    dsl_graph **gv = calloc(m + 1, sizeof *gv);
    dsl_diags *dv = calloc(m + 1, sizeof *dv);
    dsl_diags **dp = calloc(m + 1, sizeof *dp);
    size_t ninit = 0;
    int rc = -ENOMEM;
    if (!gv || !dv || !dp)
        goto out;
    for (; ninit < m; ninit++) {
        if (dsl_diags_init(&dv[ninit], mv[ninit].f->path) < 0) {
            ninit++; /* still safe to free */
            goto out;
        }
        gv[ninit] = mv[ninit].g;
        dp[ninit] = &dv[ninit];
    }
    dsl_check_uses(gv, NULL, m, w->registry, dp);
    rc = 0;
    for (size_t i = 0; i < m; i++)
        if (mv[i].pending && (dv[i].nerrors || dv[i].oom)) {
            reject_pending(w, mv[i].f, wfdir_diags_text(&dv[i]));
            rc = 1;
        }
    if (rc)
        goto out;
    for (size_t i = 0; i < m; i++) {
        if (mv[i].pending) {
            accept_pending(w, mv[i].f);
            *accepted = true;
        } else {
            bool bad = dv[i].nerrors || dv[i].oom;
            set_check_error(w, mv[i].f, bad ? wfdir_diags_text(&dv[i]) : NULL);
        }
    }
out:
    for (size_t i = 0; dv && i < ninit; i++)
        dsl_diags_free(&dv[i]);
    free(gv);
    free(dv);
    free(dp);
    return rc;
}

/* One settle pass: rounds until the set stands. MV has room for every file. */
static int settle_pass(wfdir *w, member *mv, bool *accepted)
{
    for (;;) {
        size_t m = 0;
        for (size_t i = 0; i < w->nfiles; i++) {
            wfdir_file *f = w->files[i];
            dsl_graph *g = f->trying ? f->pending : f->graph;
            if (!g)
                continue;
            mv[m++] = (member){
                .f = f,
                .g = g,
                .pending = f->trying,
                .holder = !f->trying || (f->graph && strcmp(f->graph->name, g->name) == 0),
                .claim = f->trying ? f->pending_claim : f->claim,
            };
        }
        if (m > 1)
            qsort(mv, m, sizeof *mv, by_name);
        /* Names first: dsl_check_uses would blame the later of two files in
         * set order, but here the holder of a name keeps it. */
        bool rejected = false;
        for (size_t i = 1, owner = 0; i < m; i++) {
            if (strcmp(mv[i].g->name, mv[owner].g->name) != 0) {
                owner = i;
                continue;
            }
            if (!mv[i].pending)
                continue; /* two served files with one name: never happens */
            char *text = NULL;
            if (asprintf(&text, "%s: error: workflow name '%s' is already used by %s",
                         mv[i].f->path, mv[i].g->name, mv[owner].f->path) < 0)
                text = NULL;
            reject_pending(w, mv[i].f, text);
            rejected = true;
        }
        if (rejected)
            continue;
        if (m > 1)
            qsort(mv, m, sizeof *mv, by_check_order);
        int rc = check_uses(w, mv, m, accepted);
        if (rc <= 0)
            return rc;
    }
}

static int by_served_name(const void *a, const void *b)
{
    const wfdir_file *x = *(wfdir_file *const *)a, *y = *(wfdir_file *const *)b;
    return strcmp(x->graph->name, y->graph->name);
}

/* The index has room for every file (file_get keeps it so): never fails. */
static void rebuild_index(wfdir *w)
{
    w->nindex = 0;
    for (size_t i = 0; i < w->nfiles; i++)
        if (w->files[i]->graph)
            w->index[w->nindex++] = w->files[i];
    if (w->nindex > 1)
        qsort(w->index, w->nindex, sizeof *w->index, by_served_name);
}

/* Calls `changed` for every name whose served graph differs between OLD
 * (NOLD, sorted by name) and the index. */
static void notify(wfdir *w, const before *old, size_t nold)
{
    size_t i = 0, j = 0;
    while (w->cb.changed && (i < nold || j < w->nindex)) {
        const before *o = i < nold ? &old[i] : NULL;
        const wfdir_file *f = j < w->nindex ? w->index[j] : NULL;
        int c = !o ? 1 : !f ? -1 : strcmp(o->g->name, f->graph->name);
        wfdir_change ch = { 0 };
        if (c < 0) {
            ch = (wfdir_change){ o->g->name, o->g->file, &o->v, NULL };
            i++;
        } else if (c > 0) {
            ch = (wfdir_change){ f->graph->name, f->path, NULL, &f->version };
            j++;
        } else {
            i++;
            j++;
            if (o->g == f->graph)
                continue;
            ch = (wfdir_change){ f->graph->name, f->path, &o->v, &f->version };
        }
        w->cb.changed(w->cb.ud, w, &ch);
    }
}

int wfdir_settle(wfdir *w)
{
    size_t nold = w->nindex, npending = 0;
    before *old = calloc(nold + 1, sizeof *old);
    member *mv = calloc(w->nfiles + 1, sizeof *mv);
    int rc = -ENOMEM;
    for (size_t i = 0; i < w->nfiles; i++)
        npending += w->files[i]->pending != NULL;
    if (!old || !mv)
        goto out;
    /* room for every pending file's load now: recording them below cannot fail */
    if (npending && vec_reserve(&w->loads, w->nloads + npending - 1, &w->caploads,
                                sizeof *w->loads, 8) < 0)
        goto out;
    for (size_t i = 0; i < nold; i++)
        old[i] = (before){ dsl_graph_ref(w->index[i]->graph), w->index[i]->version };

    size_t kept = 0;
    for (size_t i = 0; i < w->nfiles; i++) {
        if (w->files[i]->gone)
            wfdir_file_free(w->files[i]);
        else
            w->files[kept++] = w->files[i];
    }
    w->nfiles = kept;

    /* always one pass, so served files learn that a `use` target went away */
    for (bool first = true;; first = false) {
        bool accepted = false, waiting = false;
        for (size_t i = 0; i < w->nfiles; i++)
            waiting |= (w->files[i]->trying = w->files[i]->pending != NULL);
        if (!first && !waiting)
            break;
        if ((rc = settle_pass(w, mv, &accepted)) < 0 || !accepted)
            break;
    }
    for (size_t i = 0; i < w->nfiles; i++)
        if (!w->files[i]->graph) {
            free(w->files[i]->check_error);
            w->files[i]->check_error = NULL;
        }
    rebuild_index(w);
    notify(w, old, nold);
out:
    for (size_t i = 0; old && i < nold; i++)
        dsl_graph_unref(old[i].g);
    free(old);
    free(mv);
    return rc;
}

/* ---- lookups */

static wfdir_file *find_served(const wfdir *w, const char *name)
{
    size_t lo = 0, hi = w->nindex;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->index[mid]->graph->name, name);
        if (c == 0)
            return w->index[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

dsl_graph *wfdir_get(const wfdir *w, const char *name, wfdir_version *version)
{
    wfdir_file *f = name ? find_served(w, name) : NULL;
    if (version)
        *version = f ? f->version : (wfdir_version){ { 0 }, 0 };
    return f ? dsl_graph_ref(f->graph) : NULL;
}

dsl_graph *wfdir_engine_lookup(void *ud, const char *name)
{
    wfdir_file *f = name ? find_served(ud, name) : NULL;
    return f ? f->graph : NULL;
}

size_t wfdir_count(const wfdir *w)
{
    return w->nindex;
}

/* The errors of F joined: a new string, NULL when there are none; sets *OOM
 * when they could not be copied. */
static char *file_error(const wfdir_file *f, bool *oom)
{
    const char *parts[3] = { f->compile_error, f->pending_error, f->graph ? f->check_error : NULL };
    size_t len = 0;
    for (size_t i = 0; i < 3; i++)
        len += parts[i] ? strlen(parts[i]) + 1 : 0;
    if (!len)
        return NULL;
    char *s = malloc(len), *p = s;
    if (!s) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!parts[i])
            continue;
        if (p != s)
            *p++ = '\n';
        size_t l = strlen(parts[i]);
        memcpy(p, parts[i], l);
        p += l;
    }
    *p = 0;
    return s;
}

int wfdir_list(const wfdir *w, wfdir_entry **out, size_t *n)
{
    wfdir_entry *v = calloc(w->nfiles + 1, sizeof *v);
    size_t k = 0;
    bool oom = !v;
    *out = NULL;
    *n = 0;
    for (size_t i = 0; !oom && i < w->nfiles; i++) {
        const wfdir_file *f = w->files[i];
        if (!f->graph && !f->pending && !f->compile_error)
            continue; /* never read: still being written */
        wfdir_entry *e = &v[k++];
        const char *name = f->graph ? f->graph->name : f->declared;
        e->served = f->graph != NULL;
        if (e->served) {
            e->version = f->version;
            e->loaded_us = f->loaded_us;
        }
        if ((name && !(e->name = strdup(name))) || !(e->file = strdup(f->path)))
            oom = true;
        e->error = file_error(f, &oom);
    }
    if (oom) {
        wfdir_list_free(v, k);
        return -ENOMEM;
    }
    *out = v;
    *n = k;
    return 0;
}

void wfdir_list_free(wfdir_entry *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].name);
        free(v[i].file);
        free(v[i].error);
    }
    free(v);
}

/* ---- messages */

void wfdir_logf(wfdir *w, wfdir_log_level level, const char *fmt, ...)
{
    if (!w->cb.log)
        return;
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    /* out of memory: the format itself still says what happened */
    w->cb.log(w->cb.ud, level, n >= 0 ? msg : fmt);
    if (n >= 0)
        free(msg);
}

void wfdir_log_text(wfdir *w, wfdir_log_level level, const char *text)
{
    while (text && *text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);
        wfdir_logf(w, level, "%.*s", len, text);
        text = nl ? nl + 1 : NULL;
    }
}

char *wfdir_diags_text(const dsl_diags *d)
{
    size_t len;
    char *text = dsl_diags_text(d, &len);
    if (text && len == 0) {
        free(text);
        return NULL;
    }
    /* dsl ends every line; ours are joined, the last one unterminated */
    if (text && text[len - 1] == '\n')
        text[len - 1] = '\0';
    return text;
}
