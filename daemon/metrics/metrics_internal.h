/* metrics_internal.h -- the registry's structures, shared by its files. */
#ifndef LOOM_DAEMON_METRICS_INTERNAL_H
#define LOOM_DAEMON_METRICS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "daemon/metrics/metrics.h"

struct metrics_series {
    const metrics_family *family;
    char **values;             /* owned: one per label name */
    _Atomic uint64_t value;    /* the bits of a double: counter, gauge, histogram sum */
    _Atomic uint64_t *buckets; /* owned, histogram: nbounds + 1 counts (last: +Inf),
                                  not cumulative */
};

struct metrics_family {
    char *name, *help;         /* owned */
    metrics_kind kind;
    char *labels[METRICS_MAX_LABELS]; /* owned */
    size_t nlabels;
    double *bounds;            /* owned, histogram */
    size_t nbounds;
    pthread_mutex_t lock;      /* guards series, nseries, capseries */
    metrics_series **series;   /* owned; never removed before the registry goes */
    size_t nseries, capseries, max_series;
    _Atomic uint64_t dropped;  /* label sets refused for the cap */
};

struct metrics {
    pthread_mutex_t lock;      /* guards families, nfamilies, capfamilies */
    metrics_family **families; /* owned */
    size_t nfamilies, capfamilies, max_series;
};

/* The double whose bits are B. */
double metrics_double_of(uint64_t b);

#endif
