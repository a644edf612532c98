/* metrics.c -- the registry: families, series and their values.
 *
 * Values are doubles kept as their bits in atomic 64-bit words, so a
 * counter can hold seconds or dollars and still be added to from two
 * threads without a lock (a compare-and-swap loop, which on the reactor
 * thread, uncontended, succeeds at once). A histogram keeps one count per
 * bucket (not cumulative: one atomic add per observation) and renders them
 * cumulative. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics/metrics_internal.h"

const double metrics_seconds_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                           2.5, 5, 10, 30, 60, 120, 300 };
const size_t metrics_seconds_nbuckets = sizeof metrics_seconds_buckets / sizeof(double);
/* OpenTelemetry's advice for gen_ai.client.operation.duration and
 * gen_ai.server.time_to_first_token: 10 ms doubling to 81.92 s */
const double metrics_genai_seconds_buckets[] = { 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64,
                                                 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92 };
const size_t metrics_genai_seconds_nbuckets =
    sizeof metrics_genai_seconds_buckets / sizeof(double);
/* OpenTelemetry's advice for gen_ai.client.token.usage */
const double metrics_token_buckets[] = { 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536,
                                         262144, 1048576, 4194304, 16777216, 67108864 };
const size_t metrics_token_nbuckets = sizeof metrics_token_buckets / sizeof(double);

static uint64_t bits_of(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

double metrics_double_of(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, bits_of(metrics_double_of(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

metrics_t *metrics_new(size_t max_series)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->max_series = max_series ? max_series : METRICS_DEFAULT_MAX_SERIES;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void series_free(metrics_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

static void family_free(metrics_family *f)
{
    for (size_t i = 0; i < f->nseries; i++)
        series_free(f->series[i], f->nlabels);
    free(f->series);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void metrics_free(metrics_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfamilies; i++)
        family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for a metric, without ':' for a label */
static bool name_ok(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (colon && c == ':');
        if (!alpha && (p == s || c < '0' || c > '9'))
            return false;
    }
    return true;
}

metrics_family *metrics_find(const metrics_t *m, const char *name)
{
    metrics_t *mm = (metrics_t *)m;
    pthread_mutex_lock(&mm->lock);
    metrics_family *found = NULL;
    for (size_t i = 0; i < m->nfamilies && !found; i++)
        if (strcmp(m->families[i]->name, name) == 0)
            found = m->families[i];
    pthread_mutex_unlock(&mm->lock);
    return found;
}

static int family_check(const char *name, metrics_kind kind, const char *const *labels,
                        size_t *nlabels, const double *bounds, size_t nbounds)
{
    if (!name_ok(name, true))
        return -1;
    size_t n = 0;
    for (; labels && labels[n]; n++) {
        if (n == METRICS_MAX_LABELS || !name_ok(labels[n], false) ||
            strncmp(labels[n], "__", 2) == 0 || (kind == METRICS_HISTOGRAM &&
                                                 strcmp(labels[n], "le") == 0))
            return -1;
        for (size_t j = 0; j < n; j++)
            if (strcmp(labels[j], labels[n]) == 0)
                return -1;
    }
    *nlabels = n;
    if (kind != METRICS_HISTOGRAM)
        return nbounds ? -1 : 0;
    if (nbounds == 0 || nbounds > METRICS_MAX_BUCKETS)
        return -1;
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            return -1;
    return 0;
}

metrics_family *metrics_family_new(metrics_t *m, const char *name, const char *help,
                                   metrics_kind kind, const char *const *labels,
                                   const double *bounds, size_t nbounds)
{
    size_t nlabels = 0;
    if (!m || family_check(name, kind, labels, &nlabels, bounds, nbounds) < 0 ||
        metrics_find(m, name)) {
        errno = EINVAL;
        return NULL;
    }
    metrics_family *f = calloc(1, sizeof *f);
    if (!f)
        goto nomem;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        goto nomem;
    }
    f->kind = kind;
    f->max_series = m->max_series;
    if (!(f->name = strdup(name)) || !(f->help = strdup(help ? help : "")))
        goto fail;
    for (size_t i = 0; i < nlabels; i++, f->nlabels++)
        if (!(f->labels[i] = strdup(labels[i])))
            goto fail;
    if (nbounds) {
        if (!(f->bounds = malloc(nbounds * sizeof *f->bounds)))
            goto fail;
        memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
        f->nbounds = nbounds;
    }
    pthread_mutex_lock(&m->lock);
    int rc = vec_reserve(&m->families, m->nfamilies, &m->capfamilies, sizeof *m->families, 16);
    if (rc == 0)
        m->families[m->nfamilies++] = f;
    pthread_mutex_unlock(&m->lock);
    if (rc < 0)
        goto fail;
    return f;
fail:
    family_free(f);
nomem:
    errno = ENOMEM;
    return NULL;
}

static bool series_is(const metrics_series *s, const metrics_family *f,
                      const char *const *values)
{
    for (size_t i = 0; i < f->nlabels; i++)
        if (strcmp(s->values[i], values && values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

static metrics_series *series_new(const metrics_family *f, const char *const *values)
{
    metrics_series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (f->nlabels && !(s->values = calloc(f->nlabels, sizeof *s->values)))
        goto fail;
    for (size_t i = 0; i < f->nlabels; i++)
        if (!(s->values[i] = strdup(values && values[i] ? values[i] : "")))
            goto fail;
    if (f->kind == METRICS_HISTOGRAM &&
        !(s->buckets = calloc(f->nbounds + 1, sizeof *s->buckets)))
        goto fail;
    s->family = f;
    return s;
fail:
    series_free(s, f->nlabels);
    return NULL;
}

metrics_series *metrics_series_get(metrics_family *f, const char *const *values)
{
    if (!f)
        return NULL;
    pthread_mutex_lock(&f->lock);
    metrics_series *s = NULL;
    for (size_t i = 0; i < f->nseries && !s; i++)
        if (series_is(f->series[i], f, values))
            s = f->series[i];
    if (!s && f->nseries >= f->max_series) {
        atomic_fetch_add_explicit(&f->dropped, 1, memory_order_relaxed);
    } else if (!s && (s = series_new(f, values))) {
        if (vec_reserve(&f->series, f->nseries, &f->capseries, sizeof *f->series, 8) < 0) {
            series_free(s, f->nlabels);
            s = NULL;
        } else {
            f->series[f->nseries++] = s;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return s;
}

void metrics_add(metrics_series *s, double v)
{
    if (!s || isnan(v) || (s->family->kind == METRICS_COUNTER && v < 0))
        return;
    atomic_add_double(&s->value, v);
}

void metrics_set(metrics_series *s, double v)
{
    if (s)
        atomic_store_explicit(&s->value, bits_of(v), memory_order_relaxed);
}

void metrics_observe(metrics_series *s, double v)
{
    if (!s || s->family->kind != METRICS_HISTOGRAM || isnan(v))
        return;
    const metrics_family *f = s->family;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&s->value, v);
}

void metrics_family_add(metrics_family *f, const char *const *values, double v)
{
    metrics_add(metrics_series_get(f, values), v);
}

void metrics_family_set(metrics_family *f, const char *const *values, double v)
{
    metrics_set(metrics_series_get(f, values), v);
}

void metrics_family_observe(metrics_family *f, const char *const *values, double v)
{
    metrics_observe(metrics_series_get(f, values), v);
}

uint64_t metrics_dropped(const metrics_family *f)
{
    return f ? atomic_load_explicit(&f->dropped, memory_order_relaxed) : 0;
}

double metrics_value(const metrics_series *s)
{
    if (!s)
        return 0;
    if (s->family->kind != METRICS_HISTOGRAM)
        return metrics_double_of(atomic_load_explicit(&s->value, memory_order_relaxed));
    uint64_t n = 0;
    for (size_t i = 0; i <= s->family->nbounds; i++)
        n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return (double)n;
}
