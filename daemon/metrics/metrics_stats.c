/* metrics_stats.c -- the `stats` op's reply as metric families.
 *
 * Everything the daemon already counts (jobs, providers' upstreams, the
 * store, the server, isolated plugins, cost, tenants) is read at scrape
 * time from the same JSON `loomctl stats` shows, so a metric and the stats
 * figure it comes from can never disagree, and nothing is counted twice on
 * the hot paths. A family is made when its first value is found: a loomd
 * without prices shows no cost families rather than zeros that would read
 * as "free". */
#include <string.h>

#include "daemon/metrics/metrics.h"

typedef struct fdef {
    const char *name, *help;
    metrics_kind kind;
    const char *labels[4];     /* NULL-terminated */
} fdef;

static const fdef F_UPTIME = { "loom_uptime_seconds", "Seconds since loomd started.",
                               METRICS_GAUGE, { NULL } };
static const fdef F_JOBS = { "loom_jobs", "Jobs queued or running now, by state.",
                             METRICS_GAUGE, { "state", NULL } };
static const fdef F_QUEUE = { "loom_queue_depth", "Jobs accepted and waiting to start.",
                              METRICS_GAUGE, { NULL } };
static const fdef F_JOBS_ENDED = { "loom_jobs_finished_total",
                                   "Jobs that ended, by how (succeeded, failed, cancelled).",
                                   METRICS_COUNTER, { "state", NULL } };
static const fdef F_JOBS_SUBMITTED = { "loom_jobs_submitted_total", "Jobs accepted.",
                                       METRICS_COUNTER, { NULL } };
static const fdef F_CONNS = { "loom_connections", "Open connections to the socket.",
                              METRICS_GAUGE, { NULL } };
static const fdef F_WORKFLOWS = { "loom_workflows", "Workflows loaded.", METRICS_GAUGE,
                                  { NULL } };
#define PL { "provider", "plugin", NULL }
static const fdef F_P_INFLIGHT = { "loom_provider_in_flight",
                                   "Requests of a provider instance with the provider now.",
                                   METRICS_GAUGE, PL };
static const fdef F_P_QUEUED = { "loom_provider_queued",
                                 "Calls waiting in a provider instance's limiter.",
                                 METRICS_GAUGE, PL };
static const fdef F_P_REQUESTS = { "loom_provider_requests_total",
                                   "Requests sent to a provider (a batch is one).",
                                   METRICS_COUNTER, PL };
static const fdef F_P_CALLS = { "loom_provider_calls_total",
                                "Calls of a provider instance that ended, by outcome.",
                                METRICS_COUNTER, { "provider", "plugin", "outcome", NULL } };
static const fdef F_P_429 = { "loom_provider_rate_limited_total",
                              "Rate-limit answers (HTTP 429) from a provider; each pauses it.",
                              METRICS_COUNTER, PL };
static const fdef F_P_TIMEOUTS = { "loom_provider_timeouts_total",
                                   "Calls of a provider instance that timed out.",
                                   METRICS_COUNTER, PL };
static const fdef F_P_BATCHES = { "loom_provider_batches_total",
                                  "Embedding batches sent to a provider.", METRICS_COUNTER, PL };
static const fdef F_P_TOKENS = { "loom_provider_tokens_total",
                                 "Tokens a provider reported, by type.", METRICS_COUNTER,
                                 { "provider", "plugin", "type", NULL } };
static const fdef F_P_LATENCY = { "loom_provider_latency_seconds",
                                  "A provider's answer time, smoothed (EWMA of 8).",
                                  METRICS_GAUGE, PL };
static const fdef F_P_CONC = { "loom_provider_concurrency",
                               "A provider instance's concurrency cap now (AIMD).",
                               METRICS_GAUGE, PL };
static const fdef F_P_DISABLED = { "loom_provider_disabled",
                                   "1 when a quota answer disabled the provider until reload.",
                                   METRICS_GAUGE, PL };
static const fdef F_P_PAUSED = { "loom_provider_paused",
                                 "1 while a provider sits out a rate-limit pause.",
                                 METRICS_GAUGE, PL };
static const fdef F_STORE_TX = { "loom_store_transactions_total",
                                 "Transactions the job store committed.", METRICS_COUNTER,
                                 { NULL } };
static const fdef F_STORE_Q = { "loom_store_queued", "Writes waiting for the store thread.",
                                METRICS_GAUGE, { NULL } };
static const fdef F_STORE_HELD = { "loom_store_held_writes",
                                   "Writes held because the disk refuses them (0: healthy).",
                                   METRICS_GAUGE, { NULL } };
static const fdef F_STORE_TRIES = { "loom_store_held_tries_total",
                                    "Failed tries of held writes.", METRICS_COUNTER, { NULL } };
static const fdef F_ISO = { "loom_isolate_events_total",
                            "Isolated plugins' calls, crashes, timeouts and restarts, by event.",
                            METRICS_COUNTER, { "plugin", "event", NULL } };
static const fdef F_ISO_HELPERS = { "loom_isolate_helpers",
                                    "An isolated plugin's helper processes, by state.",
                                    METRICS_GAUGE, { "plugin", "state", NULL } };
static const fdef F_COST = { "loom_cost_usd_total", "What priced provider calls cost, in USD.",
                             METRICS_COUNTER, { NULL } };
static const fdef F_COST_WF = { "loom_workflow_cost_usd_total",
                                "What a workflow's provider calls cost, in USD.",
                                METRICS_COUNTER, { "workflow", NULL } };
static const fdef F_COST_P = { "loom_provider_cost_usd_total",
                               "What a provider instance's calls cost, in USD.",
                               METRICS_COUNTER, { "provider", NULL } };
static const fdef F_COST_T = { "loom_tenant_cost_usd_total",
                               "What a tenant's provider calls cost, in USD.", METRICS_COUNTER,
                               { "tenant", NULL } };
static const fdef F_T_JOBS = { "loom_tenant_jobs", "A tenant's jobs queued or running now.",
                               METRICS_GAUGE, { "tenant", "state", NULL } };
static const fdef F_T_WEIGHT = { "loom_tenant_weight", "A tenant's weight in fair queueing.",
                                 METRICS_GAUGE, { "tenant", NULL } };
static const fdef F_T_SUB = { "loom_tenant_jobs_submitted_total", "Jobs a tenant submitted.",
                              METRICS_COUNTER, { "tenant", NULL } };
static const fdef F_T_REJ = { "loom_tenant_jobs_rejected_total",
                              "Submits refused for a tenant's limits.", METRICS_COUNTER,
                              { "tenant", NULL } };

static const fdef F_SPANS = { "loom_trace_spans_total",
                              "Spans exported to the collector, or dropped (buffer full, "
                              "collector down).",
                              METRICS_COUNTER, { "outcome", NULL } };
static const fdef F_SPAN_POSTS = { "loom_trace_failed_posts_total",
                                   "Posts of span batches the collector did not take.",
                                   METRICS_COUNTER, { NULL } };
static const fdef F_SPAN_Q = { "loom_trace_spans_queued", "Spans waiting to be exported.",
                               METRICS_GAUGE, { NULL } };

/* The value V of D's series VALUES, making D's family on first use. -1
 * when out of memory (a full family is not an error: it counts drops). */
static int put(metrics_t *m, const fdef *d, const char *const *values, double v)
{
    metrics_family *f = metrics_find(m, d->name);
    if (!f && !(f = metrics_family_new(m, d->name, d->help, d->kind, d->labels, NULL, 0)))
        return -1;
    metrics_family_set(f, values, v);
    return 0;
}

/* The number at KEY of O, when there is one. */
static bool num(const json_t *o, const char *key, double *v)
{
    const json_t *x = json_object_get(o, key);
    if (json_is_boolean(x)) {
        *v = json_is_true(x) ? 1 : 0;
        return true;
    }
    if (!json_is_number(x))
        return false;
    *v = json_number_value(x);
    return true;
}

/* put() when O has a number at KEY (scaled by MUL) */
static int put_num(metrics_t *m, const fdef *d, const char *const *values, const json_t *o,
                   const char *key, double mul)
{
    double v;
    return num(o, key, &v) ? put(m, d, values, v * mul) : 0;
}

static int jobs(metrics_t *m, const json_t *j)
{
    int rc = 0;
    static const char *const gauges[] = { "queued", "running" };
    static const char *const ends[] = { "succeeded", "failed", "cancelled" };
    for (size_t i = 0; i < 2; i++)
        rc |= put_num(m, &F_JOBS, (const char *[]){ gauges[i] }, j, gauges[i], 1);
    for (size_t i = 0; i < 3; i++)
        rc |= put_num(m, &F_JOBS_ENDED, (const char *[]){ ends[i] }, j, ends[i], 1);
    rc |= put_num(m, &F_JOBS_SUBMITTED, NULL, j, "submitted", 1);
    rc |= put_num(m, &F_QUEUE, NULL, j, "queued", 1);
    return rc;
}

static int provider(metrics_t *m, const char *name, const json_t *p)
{
    const char *plugin = json_string_value(json_object_get(p, "plugin"));
    const char *const l[] = { name, plugin ? plugin : "" };
    int rc = 0;
    rc |= put_num(m, &F_P_INFLIGHT, l, p, "in_flight", 1);
    rc |= put_num(m, &F_P_QUEUED, l, p, "queued", 1);
    rc |= put_num(m, &F_P_REQUESTS, l, p, "requests", 1);
    rc |= put_num(m, &F_P_CALLS, (const char *[]){ l[0], l[1], "succeeded" }, p, "succeeded", 1);
    rc |= put_num(m, &F_P_CALLS, (const char *[]){ l[0], l[1], "failed" }, p, "failed", 1);
    rc |= put_num(m, &F_P_429, l, p, "rate_limited", 1);
    rc |= put_num(m, &F_P_TIMEOUTS, l, p, "timeouts", 1);
    rc |= put_num(m, &F_P_BATCHES, l, p, "batches", 1);
    static const char *const tok[][2] = { { "input_tokens", "input" },
                                          { "output_tokens", "output" },
                                          { "cache_read_tokens", "cache_read" },
                                          { "cache_write_tokens", "cache_write" } };
    for (size_t i = 0; i < sizeof tok / sizeof *tok; i++)
        rc |= put_num(m, &F_P_TOKENS, (const char *[]){ l[0], l[1], tok[i][1] }, p, tok[i][0], 1);
    rc |= put_num(m, &F_P_LATENCY, l, p, "latency_ms", 1e-3);
    rc |= put_num(m, &F_P_CONC, l, p, "concurrency", 1);
    rc |= put_num(m, &F_P_DISABLED, l, p, "disabled", 1);
    rc |= put_num(m, &F_P_PAUSED, l, p, "paused", 1);
    return rc;
}

static int isolate(metrics_t *m, const char *plugin, const json_t *o)
{
    static const char *const events[] = { "calls", "invokes", "crashes", "timeouts",
                                          "cancels", "grace_kills", "restarts" };
    int rc = 0;
    for (size_t i = 0; i < sizeof events / sizeof *events; i++)
        rc |= put_num(m, &F_ISO, (const char *[]){ plugin, events[i] }, o, events[i], 1);
    rc |= put_num(m, &F_ISO_HELPERS, (const char *[]){ plugin, "configured" }, o, "helpers", 1);
    rc |= put_num(m, &F_ISO_HELPERS, (const char *[]){ plugin, "ready" }, o, "helpers_ready", 1);
    return rc;
}

/* {NAME: usd} of COST at KEY as D{label=NAME} */
static int cost_by(metrics_t *m, const fdef *d, const json_t *cost, const char *key)
{
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach((json_t *)json_object_get(cost, key), name, v)
        if (json_is_number(v))
            rc |= put(m, d, (const char *[]){ name }, json_number_value(v));
    return rc;
}

static int tenant(metrics_t *m, const char *name, const json_t *t)
{
    int rc = 0;
    rc |= put_num(m, &F_T_JOBS, (const char *[]){ name, "running" }, t, "running", 1);
    rc |= put_num(m, &F_T_JOBS, (const char *[]){ name, "queued" }, t, "queued", 1);
    rc |= put_num(m, &F_T_WEIGHT, (const char *[]){ name }, t, "weight", 1);
    rc |= put_num(m, &F_T_SUB, (const char *[]){ name }, t, "submitted", 1);
    rc |= put_num(m, &F_T_REJ, (const char *[]){ name }, t, "rejected", 1);
    return rc;
}

int metrics_from_stats(metrics_t *m, const json_t *stats)
{
    json_t *st = (json_t *)stats;
    int rc = 0;
    const char *name;
    json_t *v;
    rc |= put_num(m, &F_UPTIME, NULL, st, "uptime_s", 1);
    if (json_is_object(json_object_get(st, "jobs")))
        rc |= jobs(m, json_object_get(st, "jobs"));
    rc |= put_num(m, &F_CONNS, NULL, st, "connections", 1);
    rc |= put_num(m, &F_WORKFLOWS, NULL, st, "workflows", 1);
    json_object_foreach(json_object_get(st, "providers"), name, v)
        if (json_is_object(v))
            rc |= provider(m, name, v);
    const json_t *store = json_object_get(st, "store");
    rc |= put_num(m, &F_STORE_TX, NULL, store, "transactions", 1);
    rc |= put_num(m, &F_STORE_Q, NULL, store, "queued", 1);
    rc |= put_num(m, &F_STORE_HELD, NULL, store, "held", 1);
    rc |= put_num(m, &F_STORE_TRIES, NULL, store, "held_tries", 1);
    json_object_foreach(json_object_get(st, "isolate"), name, v)
        if (json_is_object(v))
            rc |= isolate(m, name, v);
    const json_t *tr = json_object_get(st, "tracing");
    if (json_is_true(json_object_get(tr, "enabled"))) {
        rc |= put_num(m, &F_SPANS, (const char *[]){ "exported" }, tr, "exported", 1);
        rc |= put_num(m, &F_SPANS, (const char *[]){ "dropped" }, tr, "dropped", 1);
        rc |= put_num(m, &F_SPAN_POSTS, NULL, tr, "failed_posts", 1);
        rc |= put_num(m, &F_SPAN_Q, NULL, tr, "queued", 1);
    }
    const json_t *cost = json_object_get(st, "cost");
    rc |= put_num(m, &F_COST, NULL, cost, "usd", 1);
    rc |= cost_by(m, &F_COST_WF, cost, "by_workflow");
    rc |= cost_by(m, &F_COST_P, cost, "by_provider");
    rc |= cost_by(m, &F_COST_T, cost, "by_tenant");
    json_object_foreach(json_object_get(st, "tenants"), name, v)
        if (json_is_object(v))
            rc |= tenant(m, name, v);
    return rc ? -1 : 0;
}
