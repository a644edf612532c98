/* metrics_render.c -- the Prometheus text exposition format, version 0.0.4.
 *
 * One `# HELP` and one `# TYPE` line per family, then a line per series
 * (`name{label="value",...} number`), a histogram as cumulative
 * `name_bucket{...,le="bound"}` lines ending with le="+Inf", then
 * `name_sum` and `name_count`. Label values escape backslash, double quote
 * and newline; HELP text escapes backslash and newline. Numbers are written
 * in the shortest form that reads back as the same double, and +Inf, -Inf
 * and NaN as Prometheus spells them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics/metrics_internal.h"

static void add_number(sbuf *out, double v)
{
    if (isnan(v)) {
        sbuf_adds(out, "NaN");
        return;
    }
    if (isinf(v)) {
        sbuf_adds(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char buf[40];
    /* counts as integers: "40", not the "4e+01" %g finds shortest */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(buf, sizeof buf, "%.0f", v);
        sbuf_adds(out, buf);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    sbuf_adds(out, buf);
}

/* S escaped for a label value (HELP: quotes stay as they are) */
static void add_escaped(sbuf *out, const char *s, bool help)
{
    for (; *s; s++) {
        if (*s == '\\')
            sbuf_adds(out, "\\\\");
        else if (*s == '\n')
            sbuf_adds(out, "\\n");
        else if (*s == '"' && !help)
            sbuf_adds(out, "\\\"");
        else
            sbuf_addc(out, *s);
    }
}

/* {a="x",b="y"} (with le="LE" last when LE is set); nothing when empty */
static void add_labels(sbuf *out, const metrics_family *f, const metrics_series *s,
                       const char *le)
{
    if (!f->nlabels && !le)
        return;
    sbuf_addc(out, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        sbuf_addf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        add_escaped(out, s->values[i], false);
        sbuf_addc(out, '"');
    }
    if (le)
        sbuf_addf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    sbuf_addc(out, '}');
}

static void add_sample(sbuf *out, const metrics_family *f, const metrics_series *s,
                       const char *suffix, const char *le, double v)
{
    sbuf_adds(out, f->name);
    sbuf_adds(out, suffix);
    add_labels(out, f, s, le);
    sbuf_addc(out, ' ');
    add_number(out, v);
    sbuf_addc(out, '\n');
}

static void render_histogram(sbuf *out, const metrics_family *f, const metrics_series *s)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        /* read each bucket once: the cumulative counts and _count then
         * agree with each other whatever is recorded meanwhile */
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        sbuf le = SBUF_INIT;
        if (i < f->nbounds)
            add_number(&le, f->bounds[i]);
        else
            sbuf_adds(&le, "+Inf");
        add_sample(out, f, s, "_bucket", le.failed ? "" : le.p, (double)cum);
        if (le.failed)
            out->failed = true;
        sbuf_free(&le);
    }
    add_sample(out, f, s, "_sum", NULL,
               metrics_double_of(atomic_load_explicit(&s->value, memory_order_relaxed)));
    add_sample(out, f, s, "_count", NULL, (double)cum);
}

static void render_family(sbuf *out, metrics_family *f)
{
    static const char *const types[] = { "counter", "gauge", "histogram" };
    sbuf_addf(out, "# HELP %s ", f->name);
    add_escaped(out, f->help, true);
    sbuf_addf(out, "\n# TYPE %s %s\n", f->name, types[f->kind]);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->nseries; i++) {
        const metrics_series *s = f->series[i];
        if (f->kind == METRICS_HISTOGRAM)
            render_histogram(out, f, s);
        else
            add_sample(out, f, s, "", NULL,
                       metrics_double_of(atomic_load_explicit(&s->value, memory_order_relaxed)));
    }
    pthread_mutex_unlock(&f->lock);
}

int metrics_render_all(const metrics_t *const *ms, size_t n, sbuf *out)
{
    bool any_dropped = false;
    for (size_t k = 0; k < n; k++) {
        metrics_t *m = (metrics_t *)ms[k];
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->nfamilies; i++) {
            render_family(out, m->families[i]);
            any_dropped |= metrics_dropped(m->families[i]) > 0;
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (any_dropped)
        sbuf_adds(out, "# HELP loom_metrics_series_dropped_total Values not recorded because "
                       "their label set was new to a family at its series cap.\n"
                       "# TYPE loom_metrics_series_dropped_total counter\n");
    for (size_t k = 0; k < n && any_dropped; k++) {
        metrics_t *m = (metrics_t *)ms[k];
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->nfamilies; i++) {
            uint64_t d = metrics_dropped(m->families[i]);
            if (d)
                sbuf_addf(out, "loom_metrics_series_dropped_total{family=\"%s\"} %llu\n",
                          m->families[i]->name, (unsigned long long)d);
        }
        pthread_mutex_unlock(&m->lock);
    }
    return out->failed ? -1 : 0;
}

int metrics_render(const metrics_t *m, sbuf *out)
{
    return metrics_render_all(&m, 1, out);
}
