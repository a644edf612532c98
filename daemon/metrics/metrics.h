/* metrics.h -- counters, gauges and histograms, and their Prometheus text.
 *
 * Owns: a registry of metric families (name, help, type, label names, a
 * histogram's bucket bounds), each family's series (one per set of label
 * values), the values themselves, and rendering all of it in the Prometheus
 * text exposition format 0.0.4; the mapping of the daemon's `stats` JSON to
 * families (metrics_stats.c); the HTTP endpoint that serves the text
 * (metrics_http.c, libmicrohttpd).
 * May call: common/, daemon/core (the endpoint's post to the reactor),
 * jansson, libmicrohttpd.
 * Must never call: the engine, jobs, the store, the server or the daemon's
 * top: what they know comes in as label values, numbers and stats JSON.
 *
 * Cardinality is bounded by construction: a family holds at most the
 * registry's max_series series, and a label set beyond that is dropped
 * (metrics_series_get returns NULL, the recording functions accept NULL
 * and do nothing) and each such recording counted, rendered as
 * loom_metrics_series_dropped_total{family="..."}. Label values come from
 * the config and the loaded workflows (providers, models, workflows,
 * tenants, error classes, states), never from jobs.
 *
 * Threads: every function may be called from any thread. Finding or making
 * a series takes its family's mutex; recording on a series is a few relaxed
 * atomic operations, no lock and no allocation, so a caller on a hot path
 * looks its series up once and keeps the pointer (series live as long as
 * the registry). Rendering reads the atomics as it goes: a histogram's
 * buckets, _count and _sum may be one observation apart, never
 * inconsistent among the buckets themselves (_count is the sum of the
 * buckets read). */
#ifndef LOOM_DAEMON_METRICS_H
#define LOOM_DAEMON_METRICS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/containers.h"

typedef struct metrics metrics_t;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

typedef enum { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_kind;

/* Series per family when metrics_new is given 0. */
#define METRICS_DEFAULT_MAX_SERIES 1000
/* Label names per family, and bucket bounds per histogram, at most. */
#define METRICS_MAX_LABELS 8
#define METRICS_MAX_BUCKETS 32

/* A new empty registry whose families hold at most MAX_SERIES series each
 * (0: METRICS_DEFAULT_MAX_SERIES). NULL when out of memory. */
metrics_t *metrics_new(size_t max_series);
/* Frees M, its families and series. NULL is a no-op. */
void metrics_free(metrics_t *m);

/* A new family of M (which owns it) named NAME, documented by HELP, of
 * KIND, with the label names LABELS (NULL-terminated; NULL: none) and, for
 * a histogram, the finite strictly increasing upper bounds BOUNDS[NBOUNDS]
 * (the +Inf bucket is implicit). Everything is copied. Families render in
 * the order they were made. NULL with errno: EINVAL for a name or label
 * that Prometheus would refuse (or "le" on a histogram), bad bounds, a name
 * already in M, too many labels or bounds; ENOMEM. */
metrics_family *metrics_family_new(metrics_t *m, const char *name, const char *help,
                                   metrics_kind kind, const char *const *labels,
                                   const double *bounds, size_t nbounds);
/* The family of M named NAME, or NULL. */
metrics_family *metrics_find(const metrics_t *m, const char *name);

/* F's series for the label values VALUES (one per label name, in order;
 * NULL counts as ""; NULL VALUES for a family without labels), made on
 * first use. NULL when F is NULL, when F is full (the set is counted as
 * dropped) or out of memory. The series is F's and lives as long as M. */
metrics_series *metrics_series_get(metrics_family *f, const char *const *values);

/* Counter or gauge: adds V (a counter ignores V < 0 and NaN). */
void metrics_add(metrics_series *s, double v);
/* Gauge: sets it to V. (On a counter too: for values counted elsewhere
 * and read at scrape time.) */
void metrics_set(metrics_series *s, double v);
/* Histogram: counts V in its bucket and adds it to the sum. NaN is ignored. */
void metrics_observe(metrics_series *s, double v);

/* metrics_series_get then the recording, in one call. */
void metrics_family_add(metrics_family *f, const char *const *values, double v);
void metrics_family_set(metrics_family *f, const char *const *values, double v);
void metrics_family_observe(metrics_family *f, const char *const *values, double v);

/* Lookups of a new label set F refused for being at the cap. */
uint64_t metrics_dropped(const metrics_family *f);
/* A series' value (counter, gauge) or its observations' count
 * (histogram); for tests and the daemon's own checks. */
double metrics_value(const metrics_series *s);

/* Appends M's families to OUT in the text format 0.0.4: for each family a
 * `# HELP` and a `# TYPE` line then its series (a histogram's cumulative
 * `_bucket{le=...}` lines, `_sum` and `_count`), label values escaped (\\,
 * \" and \n), then the families with dropped series. A family without
 * series renders its HELP and TYPE only. 0, or -1 when OUT failed. */
int metrics_render(const metrics_t *m, sbuf *out);
/* The same of the N registries MS, in order, as one exposition (a single
 * dropped-series family at the end); their family names must differ. */
int metrics_render_all(const metrics_t *const *ms, size_t n, sbuf *out);

/* Bucket bounds for durations in seconds (5 ms to 5 min), for provider
 * calls' durations as OpenTelemetry's GenAI conventions advise (10 ms
 * doubling to 81.92 s) and for token counts (1 to 64M, by 4s), with their
 * counts. */
extern const double metrics_genai_seconds_buckets[];
extern const size_t metrics_genai_seconds_nbuckets;
extern const double metrics_seconds_buckets[];
extern const size_t metrics_seconds_nbuckets;
extern const double metrics_token_buckets[];
extern const size_t metrics_token_nbuckets;

/* ---- the daemon's `stats` (metrics_stats.c) */

/* Adds to M (a registry made for one scrape) the families read from
 * STATS, the reply of the `stats` op (docs/protocol.md): jobs by state,
 * the queue, providers' counters and gauges, connections, the store,
 * isolated plugins, spans exported and dropped, cost by workflow, provider
 * and tenant, tenants' jobs.
 * Members that are missing are skipped, so a reply of an older loomd
 * renders what it has. 0, or -1 when out of memory. */
int metrics_from_stats(metrics_t *m, const json_t *stats);

#endif
