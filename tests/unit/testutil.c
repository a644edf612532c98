/* testutil.c -- compiling snippets and reading diagnostics in tests. */
#include "tests/unit/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds D's diagnostics to R's lines. */
static void add_lines(tu_result *r, const dsl_diags *d)
{
    char **lines = realloc(r->lines, (r->nlines + d->n + 1) * sizeof *lines);
    if (!lines)
        abort();
    r->lines = lines;
    r->nerrors += d->nerrors;
    for (size_t i = 0; i < d->n; i++) {
        char *s = dsl_diag_format(d, i);
        if (!s)
            abort();
        /* drop the "t.yaml:" prefix (or "t.yaml: " for whole-file messages) */
        const char *p = s + strlen("t.yaml:");
        if (*p == ' ')
            p++;
        r->lines[r->nlines++] = strdup(p);
        free(s);
    }
    r->lines[r->nlines] = NULL;
}

tu_result *tu_compile_len(const char *text, size_t len, const dsl_options *opt)
{
    tu_result *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    dsl_diags d;
    dsl_diags_init(&d, "t.yaml");
    r->graph = dsl_compile("t.yaml", text, len, opt, &d);
    add_lines(r, &d);
    dsl_diags_free(&d);
    return r;
}

void tu_check_uses(tu_result *r, const char *const *workflows)
{
    if (!r->graph)
        return;
    dsl_registry reg = { .workflows = workflows };
    dsl_diags d, *dp = &d;
    dsl_diags_init(&d, "t.yaml");
    dsl_graph *g = r->graph;
    if (dsl_check_uses(&g, NULL, 1, &reg, &dp) > 0) {
        dsl_graph_unref(r->graph);
        r->graph = NULL;
    }
    add_lines(r, &d);
    dsl_diags_free(&d);
}

tu_result *tu_compile(const char *text, const dsl_options *opt)
{
    return tu_compile_len(text, strlen(text), opt);
}

void tu_result_free(tu_result *r)
{
    if (!r)
        return;
    dsl_graph_unref(r->graph);
    for (size_t i = 0; i < r->nlines; i++)
        free(r->lines[i]);
    free(r->lines);
    free(r);
}

int tu_has(const tu_result *r, const char *want)
{
    for (size_t i = 0; i < r->nlines; i++)
        if (strcmp(r->lines[i], want) == 0)
            return 1;
    return 0;
}

const char *tu_dump(const tu_result *r)
{
    static char buf[16384];
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < r->nlines && off < sizeof buf - 1; i++) {
        int n = snprintf(buf + off, sizeof buf - off, "%s%s", i ? "\n" : "", r->lines[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    return buf;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

static const char *join(const char *env, const char *rel)
{
    static char buf[4096];
    const char *base = getenv(env);
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : ".", rel);
    return buf;
}

const char *tu_srcpath(const char *rel) { return join("LOOM_SRCDIR", rel); }
const char *tu_buildpath(const char *rel) { return join("LOOM_BUILDDIR", rel); }
