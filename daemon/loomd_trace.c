/* loomd_trace.c -- the tracer's life in loomd: started with the daemon when
 * the config has `tracing` (config_tracing.h), handed to the jobs (and
 * through them to each job's run on the engine), stopped last, after every
 * engine, so the spans of jobs abandoned at shutdown are flushed too, within
 * LOOMD_TRACE_FLUSH_MS. `tracing` is read at start only: a reload that
 * changes it says so (warn_restart_keys). */
#include <stdio.h>
#include <string.h>

#include "daemon/loomd.h"

/* How long a stop may spend posting the spans still buffered: the rest
 * are dropped, so a collector that is down cannot hold the exit up. */
#define LOOMD_TRACE_FLUSH_MS 5000

int loomd_trace_start(loomd *d)
{
    const config_tracing *c = &d->cfg->tracing;
    if (!c->otlp)
        return 0;
    trace_options o = {
        .endpoint = c->otlp,
        .service_name = c->service_name ? c->service_name : CONFIG_TRACING_SERVICE,
        .sample = c->sample,
    };
    char err[256];
    if (!(d->tracer = trace_start(&o, err, sizeof err))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "tracing: %s", err);
        return -1;
    }
    d->jobs.tracer = d->tracer;
    log_write(&d->log, LOOM_LOG_INFO, json_pack("{s:s, s:f}", "otlp", c->otlp, "sample", c->sample),
              "tracing: spans go to the collector");
    return 0;
}

void loomd_trace_stop(loomd *d)
{
    d->jobs.tracer = NULL;
    trace_stop(d->tracer, LOOMD_TRACE_FLUSH_MS);
    d->tracer = NULL;
}

json_t *loomd_trace_stats(loomd *d)
{
    if (!d->tracer)
        return json_pack("{s:b}", "enabled", 0);
    trace_stats_t st;
    trace_get_stats(d->tracer, &st);
    return json_pack("{s:b, s:I, s:I, s:I, s:I}", "enabled", 1, "exported",
                     (json_int_t)st.exported, "dropped", (json_int_t)st.dropped, "failed_posts",
                     (json_int_t)st.failed_posts, "queued", (json_int_t)st.queued);
}

bool loomd_trace_same(const config_tracing *a, const config_tracing *b)
{
    bool same_otlp = a->otlp == b->otlp || (a->otlp && b->otlp && !strcmp(a->otlp, b->otlp));
    bool same_name = a->service_name == b->service_name ||
                     (a->service_name && b->service_name && !strcmp(a->service_name, b->service_name));
    return same_otlp && same_name && (!a->otlp || a->sample == b->sample);
}
