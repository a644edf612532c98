/* diag.c -- collecting and formatting compiler diagnostics (printing them is
 * the caller's business: dsl/ does no I/O). */
#include "dsl/diag.h"

#include "common/containers.h"

#include <stdlib.h>
#include <string.h>

int dsl_diags_init(dsl_diags *d, const char *file)
{
    memset(d, 0, sizeof *d);
    d->file = strdup(file ? file : "<input>");
    if (!d->file) {
        d->oom = 1;
        return -1;
    }
    return 0;
}

void dsl_diags_free(dsl_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].msg);
    free(d->v);
    free(d->file);
    memset(d, 0, sizeof *d);
}

static int diag_push(dsl_diags *d, dsl_severity sev, int line, int col, char *msg)
{
    if (vec_reserve(&d->v, d->n, &d->cap, sizeof *d->v, 8) < 0)
        return -1;
    d->v[d->n++] = (dsl_diag){ sev, line, col, msg };
    return 0;
}

void dsl_diag_vadd(dsl_diags *d, dsl_severity sev, int line, int col,
                   const char *fmt, va_list ap)
{
    if (sev == DSL_SEV_ERROR) {
        d->nerrors++;
        if (d->truncated)
            return;
        if (d->nerrors > DSL_DIAG_MAX_ERRORS) {
            d->truncated = 1;
            char *m = strdup("too many errors; giving up on this file");
            if (!m || diag_push(d, DSL_SEV_ERROR, 0, 0, m) < 0) {
                free(m);
                d->oom = 1;
            }
            return;
        }
    } else if (d->truncated) {
        return;
    }
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) {
        d->oom = 1;
        return;
    }
    if (diag_push(d, sev, line, col, msg) < 0) {
        free(msg);
        d->oom = 1;
    }
}

void dsl_diag_add(dsl_diags *d, dsl_severity sev, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dsl_diag_vadd(d, sev, line, col, fmt, ap);
    va_end(ap);
}

/* A group is an error or warning with the notes that follow it. Sorting moves
 * groups as units, so notes stay under the error they explain. */
typedef struct {
    size_t start, len;
    int line, col;
    size_t seq;
} diag_group;

static int group_cmp(const void *a, const void *b)
{
    const diag_group *x = a, *y = b;
    /* Whole-file messages (line 0) sort last: they summarise. */
    long lx = x->line ? x->line : 0x7fffffffL, ly = y->line ? y->line : 0x7fffffffL;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void dsl_diags_sort(dsl_diags *d)
{
    if (d->n < 2)
        return;
    diag_group *g = calloc(d->n, sizeof *g);
    dsl_diag *out = calloc(d->n, sizeof *out);
    if (!g || !out)
        goto out; /* unsorted is still correct output */
    size_t ng = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i].sev == DSL_SEV_NOTE && ng > 0) {
            g[ng - 1].len++;
            continue;
        }
        g[ng] = (diag_group){ i, 1, d->v[i].line, d->v[i].col, ng };
        ng++;
    }
    qsort(g, ng, sizeof *g, group_cmp);
    size_t k = 0;
    for (size_t i = 0; i < ng; i++)
        for (size_t j = 0; j < g[i].len; j++)
            out[k++] = d->v[g[i].start + j];
    memcpy(d->v, out, d->n * sizeof *out);
out:
    free(g);
    free(out);
}

static const char *sev_name(dsl_severity s)
{
    switch (s) {
    case DSL_SEV_ERROR: return "error";
    case DSL_SEV_WARNING: return "warning";
    case DSL_SEV_NOTE: return "note";
    }
    return "error";
}

char *dsl_diag_format(const dsl_diags *d, size_t i)
{
    const dsl_diag *e = &d->v[i];
    char *s = NULL;
    int r;
    if (e->line > 0)
        r = asprintf(&s, "%s:%d:%d: %s: %s", d->file, e->line, e->col, sev_name(e->sev), e->msg);
    else
        r = asprintf(&s, "%s: %s: %s", d->file, sev_name(e->sev), e->msg);
    return r < 0 ? NULL : s;
}

char *dsl_diags_text(const dsl_diags *d, size_t *len)
{
    sbuf b = SBUF_INIT;
    for (size_t i = 0; i < d->n; i++) {
        char *s = dsl_diag_format(d, i);
        if (!s) {
            sbuf_free(&b);
            return NULL;
        }
        sbuf_adds(&b, s);
        sbuf_addc(&b, '\n');
        free(s);
    }
    if (d->oom)
        sbuf_addf(&b, "%s: error: out of memory while reporting errors\n", d->file);
    return sbuf_steal(&b, len);
}
