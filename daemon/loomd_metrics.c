/* loomd_metrics.c -- loomd's metrics: the histograms and counters recorded
 * as things happen, the rest read from `stats` at scrape time, and the
 * GET /metrics endpoint (config `metrics`).
 *
 * Recorded as they happen (one registry for the daemon's life): every
 * provider call attempt through the engine's call observer (tokens, its
 * duration, limiter wait, errors by class, time to first token when
 * known), jobs' queue wait and run time through the jobs' hooks, the
 * store's commit latency on the store thread, the reactor's timer lag.
 * Each of these is a series lookup (a short scan under the family's mutex)
 * and a few relaxed atomic adds: no allocation once a label set is known.
 *
 * Read at scrape time: everything `stats` reports, through
 * metrics_from_stats on the same JSON, rendered into a registry made for
 * that scrape. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/loomd.h"
#include "daemon/metrics/metrics.h"
#include "daemon/metrics/metrics_http.h"

struct loomd_metrics {
    metrics_t *m;
    metrics_http_t *http;
    metrics_family *tokens, *duration, *ttft, *calls, *errors, *wait, *cost;
    metrics_family *queue_wait, *job_run, *jobs_ended, *commit, *lag;
};

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static const char *or_default(const char *s)
{
    return s && *s ? s : "default";
}

/* ---- recorded as they happen */

/* The engine's call observer: reactor thread. */
void loomd_metrics_call(void *ud, const engine_call_report *r)
{
    struct loomd_metrics *lm = ((loomd *)ud)->metrics;
    if (!lm)
        return;
    const char *plugin = or_empty(r->plugin), *model = or_empty(r->model);
    const char *op = or_empty(r->operation);
    /* gen_ai_* labels as OpenTelemetry's GenAI conventions name them, and
     * the provider instance, which tells two keys of one plugin apart */
    static const struct { const char *type; size_t off; } types[] = {
        { "input", offsetof(engine_call_report, input_tokens) },
        { "output", offsetof(engine_call_report, output_tokens) },
        { "cache_read", offsetof(engine_call_report, cache_read_tokens) },
        { "cache_write", offsetof(engine_call_report, cache_write_tokens) },
    };
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        int64_t n = *(const int64_t *)(const void *)((const char *)r + types[i].off);
        if (n >= 0)
            metrics_family_observe(lm->tokens,
                                   (const char *[]){ op, plugin, model, types[i].type,
                                                     r->provider },
                                   (double)n);
    }
    metrics_family_observe(lm->duration,
                           (const char *[]){ op, plugin, model, r->ok ? "" : or_empty(r->error),
                                             r->provider },
                           r->duration_s);
    if (r->ttft_s >= 0)
        metrics_family_observe(lm->ttft, (const char *[]){ op, plugin, model, r->provider },
                               r->ttft_s);
    metrics_family_add(lm->calls,
                       (const char *[]){ r->provider, plugin, or_empty(r->workflow),
                                         or_default(r->tenant), r->ok ? "ok" : "error" },
                       1);
    if (!r->ok)
        metrics_family_add(lm->errors, (const char *[]){ r->provider, plugin, or_empty(r->error) },
                           1);
    if (r->wait_s >= 0)
        metrics_family_observe(lm->wait, (const char *[]){ r->provider }, r->wait_s);
}

static void on_job_started(void *ud, const ljob *j, double queued_s)
{
    loomd *d = ud;
    struct loomd_metrics *lm = d->metrics;
    if (lm)
        metrics_family_observe(lm->queue_wait,
                               (const char *[]){ j->workflow, or_default(j->tenant->name) },
                               queued_s);
}

static void on_job_ended(void *ud, const ljob *j, const char *state, double run_s)
{
    loomd *d = ud;
    struct loomd_metrics *lm = d->metrics;
    if (!lm)
        return;
    const char *const l[] = { j->workflow, or_default(j->tenant->name), state };
    metrics_family_add(lm->jobs_ended, l, 1);
    if (j->started_us)
        metrics_family_observe(lm->job_run, l, run_s);
}

void loomd_metrics_hooks(loomd *d, jobs_hooks *h)
{
    h->job_started = on_job_started;
    h->job_ended = on_job_ended;
}

/* store thread */
static void on_commit(void *ud, double seconds)
{
    metrics_observe((metrics_series *)ud, seconds);
}

/* reactor thread, per timer */
static void on_lag(void *ud, uint64_t lag_us)
{
    metrics_observe((metrics_series *)ud, (double)lag_us / 1e6);
}

/* ---- the text */

int loomd_metrics_text(loomd *d, sbuf *out)
{
    json_t *st = loomd_stats(d);
    metrics_t *scrape = metrics_new(d->cfg->metrics.max_series);
    int rc = -1;
    if (st && scrape && metrics_from_stats(scrape, st) == 0) {
        const metrics_t *all[] = { d->metrics->m, scrape };
        rc = metrics_render_all(all, 2, out);
    }
    metrics_free(scrape);
    json_decref(st);
    return rc;
}

static int render(void *ud, sbuf *out)
{
    return loomd_metrics_text(ud, out);
}

/* ---- life */

static metrics_family *hist(metrics_t *m, const char *name, const char *help,
                            const char *const *labels, const double *b, size_t nb)
{
    return metrics_family_new(m, name, help, METRICS_HISTOGRAM, labels, b, nb);
}

int loomd_metrics_start(loomd *d)
{
    struct loomd_metrics *lm = calloc(1, sizeof *lm);
    if (!lm || !(lm->m = metrics_new(d->cfg->metrics.max_series)))
        goto nomem;
    metrics_t *m = lm->m;
    const char *const gl[] = { "gen_ai_operation_name", "gen_ai_provider_name",
                               "gen_ai_request_model", "loom_provider", NULL };
    const char *const tl[] = { "gen_ai_operation_name", "gen_ai_provider_name",
                               "gen_ai_request_model", "gen_ai_token_type", "loom_provider",
                               NULL };
    const char *const dl[] = { "gen_ai_operation_name", "gen_ai_provider_name",
                               "gen_ai_request_model", "error_type", "loom_provider", NULL };
    const char *const jl[] = { "workflow", "tenant", "state", NULL };
    lm->tokens = hist(m, "gen_ai_client_token_usage",
                      "Tokens used per provider call, by type (input, output, cache_read, "
                      "cache_write).",
                      tl, metrics_token_buckets, metrics_token_nbuckets);
    lm->duration = hist(m, "gen_ai_client_operation_duration_seconds",
                        "Provider call attempts' duration, from sending to the answer.", dl,
                        metrics_genai_seconds_buckets, metrics_genai_seconds_nbuckets);
    lm->ttft = hist(m, "gen_ai_server_time_to_first_token_seconds",
                    "Time from sending a streamed call to its first token.", gl,
                    metrics_genai_seconds_buckets, metrics_genai_seconds_nbuckets);
    lm->calls = metrics_family_new(m, "loom_provider_call_attempts_total",
                                   "Provider call attempts, by workflow, tenant and outcome.",
                                   METRICS_COUNTER,
                                   (const char *[]){ "provider", "plugin", "workflow", "tenant",
                                                     "outcome", NULL },
                                   NULL, 0);
    lm->errors = metrics_family_new(m, "loom_provider_errors_total",
                                    "Failed provider call attempts, by error class.",
                                    METRICS_COUNTER,
                                    (const char *[]){ "provider", "plugin", "error", NULL }, NULL,
                                    0);
    lm->wait = hist(m, "loom_limiter_wait_seconds",
                    "Time calls waited for their provider's limits (rpm, tpm, concurrency, "
                    "429 pauses, batching) before being sent.",
                    (const char *[]){ "provider", NULL }, metrics_seconds_buckets,
                    metrics_seconds_nbuckets);
    lm->queue_wait = hist(m, "loom_queue_wait_seconds",
                          "Time jobs waited in the job queue before starting.",
                          (const char *[]){ "workflow", "tenant", NULL }, metrics_seconds_buckets,
                          metrics_seconds_nbuckets);
    lm->job_run = hist(m, "loom_job_duration_seconds",
                       "Jobs' run time, from start to their recorded end.", jl,
                       metrics_seconds_buckets, metrics_seconds_nbuckets);
    lm->jobs_ended = metrics_family_new(m, "loom_workflow_jobs_total",
                                        "Jobs that ended, by workflow, tenant and state.",
                                        METRICS_COUNTER, jl, NULL, 0);
    lm->commit = hist(m, "loom_store_commit_seconds",
                      "Job store transactions' time, from BEGIN to the end of COMMIT.", NULL,
                      metrics_seconds_buckets, metrics_seconds_nbuckets);
    lm->lag = hist(m, "loom_reactor_lag_seconds",
                   "How late the reactor thread ran its timers: work blocking it shows here.",
                   NULL, metrics_seconds_buckets, metrics_seconds_nbuckets);
    if (!lm->tokens || !lm->duration || !lm->ttft || !lm->calls || !lm->errors || !lm->wait ||
        !lm->queue_wait || !lm->job_run || !lm->jobs_ended || !lm->commit || !lm->lag)
        goto nomem;
    metrics_series *commit = metrics_series_get(lm->commit, NULL);
    metrics_series *lag = metrics_series_get(lm->lag, NULL);
    if (!commit || !lag)
        goto nomem;
    d->metrics = lm;
    store_set_commit_observer(d->store, on_commit, commit);
    reactor_set_lag_observer(d->r, on_lag, lag);
    return 0;
nomem:
    if (lm)
        metrics_free(lm->m);
    free(lm);
    log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start the metrics: out of memory");
    return -1;
}

int loomd_metrics_listen(loomd *d)
{
    const config_metrics *mc = &d->cfg->metrics;
    if (!mc->listen || !d->metrics)
        return 0;
    char err[256];
    if (!(d->metrics->http = metrics_http_start(d->r, mc->listen, render, d, err, sizeof err))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "metrics: %s", err);
        return -1;
    }
    log_write(&d->log, LOOM_LOG_INFO,
              json_pack("{s:s, s:i}", "listen", mc->listen, "port",
                        (int)metrics_http_port(d->metrics->http)),
              "metrics: serving GET /metrics on port %u",
              (unsigned)metrics_http_port(d->metrics->http));
    return 0;
}

void loomd_metrics_stop_http(loomd *d)
{
    if (!d->metrics)
        return;
    metrics_http_stop(d->metrics->http);
    d->metrics->http = NULL;
}

void loomd_metrics_free(loomd *d)
{
    if (!d->metrics)
        return;
    metrics_http_stop(d->metrics->http);
    reactor_set_lag_observer(d->r, NULL, NULL);
    metrics_free(d->metrics->m);
    free(d->metrics);
    d->metrics = NULL;
}
