/* http_bench.c -- Loom's HTTP figures: throughput, memory per call in flight,
 * rate-limit accuracy and embedding coalescing, through the real engine and
 * the built-in openai provider against a fake server on 127.0.0.1.
 *
 *   http_bench throughput PORT INFLIGHT N [--url URL] [--ca FILE] [--http V]
 *                                              a map of N calls, INFLIGHT at once;
 *                                              PORT is the fake server's (its
 *                                              /stats), URL the base URL calls go
 *                                              to (default http://127.0.0.1:PORT/v1:
 *                                              another is a proxy in front of it,
 *                                              h2c or TLS), FILE the provider's
 *                                              ca_file, V its http_version
 *   http_bench ratelimit PORT rpm|tpm LIMIT S  as many calls as the limit lets
 *                                              through in S seconds
 *   http_bench coalesce PORT N JOBS            JOBS concurrent jobs embedding
 *                                              N inputs in all, one per call
 *   http_bench lag PORT INFLIGHT N RATE        the reactor's lag (how late a
 *                                              1 ms probe timer runs, p50 /
 *                                              p99 / max) while a map of N
 *                                              calls keeps INFLIGHT in flight
 *                                              and RATE one-call jobs a second
 *                                              are submitted beside it
 *
 * Each prints one JSON line. The server's counters come from its /stats.
 * Peak RSS is sampled every 10 ms on the reactor (VmRSS), the baseline just
 * before the job starts (engine, provider and input already built), so the
 * per-call figure is what calls in flight cost, not the program. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "daemon/config_file.h"
#include "daemon/providers.h"
#include "daemon/engine/engine.h"
#include "daemon/core/http.h"
#include "dsl/dsl.h"
#include "tests/unit/fake_server.h"

typedef struct world {
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    engine_t *eng;
    providers_t *prov;
    reactor_timer_t *sampler;
    long rss_peak_kib;
    int done;
} world;

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void sample(reactor_t *r, reactor_timer_t *t, void *ud)
{
    world *w = ud;
    long v = rss_kib();
    if (v > w->rss_peak_kib)
        w->rss_peak_kib = v;
    w->sampler = reactor_timer_add(r, 10 * REACTOR_MSEC, sample, w);
}

static void die(const char *what)
{
    fprintf(stderr, "http_bench: %s\n", what);
    exit(1);
}

/* Where the provider's calls go and how: every pointer borrowed, NULL for
 * the provider's defaults. */
typedef struct target {
    const char *url;           /* base URL; NULL: the fake server's own */
    const char *ca_file;
    const char *http_version;  /* "auto", "1.1" or "2" */
} target;

static void world_init(world *w, int port, const config_limits *lim, const target *to)
{
    memset(w, 0, sizeof *w);
    if (!(w->r = reactor_new()) || !(w->pool = pool_new(w->r, 2)) ||
        !(w->plugins = plugins_new(NULL, NULL)) || plugins_add_builtins(w->plugins) < 0)
        die("cannot start");
    engine_options eo = { .max_in_flight = 100000 };
    if (!(w->eng = engine_new(w->r, w->pool, w->plugins, &eo)))
        die("cannot start the engine");
    char url[512], err[512];
    if (to && to->url)
        snprintf(url, sizeof url, "%s", to->url);
    else
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", port);
    json_t *opts = json_pack("{s:s, s:s}", "base_url", url, "api_key_env", "LOOM_BENCH_KEY");
    if (!opts)
        die("out of memory");
    config_provider cp = { .name = "llm", .plugin = "openai", .options = opts, .limits = *lim };
    if (to) {
        cp.ca_file = (char *)to->ca_file; /* read by providers_add, not kept */
        if (to->http_version) {
            int v = http_version_parse(to->http_version);
            if (v < 0)
                die("--http: auto, 1.1 or 2");
            cp.http_version = (http_version)v;
        }
    }
    if (!(w->prov = providers_new(w->r)))
        die("cannot start the providers");
    if (providers_add(w->prov, w->eng, &cp, err, sizeof err) < 0) {
        fprintf(stderr, "http_bench: %s\n", err);
        exit(1);
    }
    json_decref(opts);
}

static void world_fini(world *w)
{
    if (w->sampler)
        reactor_timer_cancel(w->r, w->sampler);
    engine_free(w->eng);
    providers_free(w->prov); /* after the engine: its upstreams use the client */
    pool_free(w->pool);
    plugins_free(w->plugins);
    reactor_free(w->r);
}

static dsl_graph *compile(const char *yaml)
{
    dsl_diags d;
    dsl_diags_init(&d, "bench.yaml");
    dsl_graph *g = dsl_compile("bench.yaml", yaml, strlen(yaml), NULL, &d);
    if (!g) {
        char *text = dsl_diags_text(&d, NULL);
        fputs(text ? text : "out of memory\n", stderr);
        free(text);
        die("the workflow does not compile");
    }
    dsl_diags_free(&d);
    return g;
}

typedef struct jobres {
    world *w;
    int ok, failed;
    char first_error[200];
} jobres;

static void on_done(engine_job_t *job, void *ud)
{
    jobres *jr = ud;
    const engine_error *e = engine_job_error(job);
    if (e) {
        jr->failed++;
        if (!jr->first_error[0])
            snprintf(jr->first_error, sizeof jr->first_error, "%s: %s", e->code, e->message);
    } else {
        jr->ok++;
    }
    jr->w->done++;
}

static json_t *numbers(long n, const char *prefix)
{
    json_t *a = json_array();
    char s[64];
    for (long i = 0; i < n && a; i++) {
        snprintf(s, sizeof s, "%s %ld", prefix, i);
        json_array_append_new(a, json_string(s));
    }
    return a;
}

static int server_stat(int port, const char *name)
{
    fake_server s = { .pid = 0, .port = port };
    return (int)fake_server_stat(&s, name);
}

/* throughput PORT INFLIGHT N: one job, a map of N calls, sent where TO says
 * (borrowed). */
static int throughput(int port, long inflight, long n, const target *to)
{
    world w;
    config_limits lim = { .concurrency = inflight };
    world_init(&w, port, &lim, to);
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "loom: 1\nname: bench\ndefaults: { provider: llm, model: fake }\n"
             "do: { map: { over: '{{ input }}', max_concurrency: %ld, do: { call: '{{ item }}' } } }\n",
             inflight);
    dsl_graph *g = compile(yaml);
    json_t *in = numbers(n, "item");
    int chat0 = server_stat(port, "chat");
    jobres jr = { .w = &w };
    engine_job_options jo = { .max_in_flight = (size_t)inflight };
    w.rss_peak_kib = rss_kib();
    long base = w.rss_peak_kib;
    w.sampler = reactor_timer_add(w.r, 10 * REACTOR_MSEC, sample, &w);
    double t0 = bench_now_us();
    if (!engine_submit(w.eng, g, in, &jo, on_done, &jr))
        die("submit failed");
    while (!w.done)
        reactor_run_once(w.r, 100);
    double s = (bench_now_us() - t0) / 1e6;
    int calls = server_stat(port, "chat") - chat0;
    printf("{\"peer\":\"loom\",\"mode\":\"throughput\",\"http\":\"%s\",\"tls\":%s,"
           "\"concurrency\":%ld,\"items\":%ld,\"calls\":%d,\"errors\":%d,\"seconds\":%.3f,"
           "\"calls_per_s\":%.1f,"
           "\"server_max_in_flight\":%d,\"rss_base_mib\":%.1f,\"rss_peak_mib\":%.1f,"
           "\"kib_per_in_flight\":%.2f%s%s%s}\n",
           to->http_version ? to->http_version : "auto",
           to->url && strncmp(to->url, "https:", 6) == 0 ? "true" : "false",
           inflight, n, calls, jr.failed, s, calls / s, server_stat(port, "max_in_flight"),
           base / 1024.0, w.rss_peak_kib / 1024.0,
           (double)(w.rss_peak_kib - base) / (double)(inflight < n ? inflight : n),
           jr.first_error[0] ? ",\"first_error\":\"" : "", jr.first_error[0] ? "see stderr" : "",
           jr.first_error[0] ? "\"" : "");
    if (jr.first_error[0])
        fprintf(stderr, "http_bench: first error: %s\n", jr.first_error);
    json_decref(in);
    dsl_graph_unref(g);
    world_fini(&w);
    return jr.failed ? 1 : 0;
}

/* ratelimit PORT rpm|tpm LIMIT SECONDS: a job with more calls than the limit
 * allows, cancelled after SECONDS; the calls answered are the rate. */
static int ratelimit(int port, const char *dim, long limit, double seconds)
{
    world w;
    bool tpm = strcmp(dim, "tpm") == 0;
    config_limits lim = { .concurrency = 1000 };
    if (tpm)
        lim.tpm = limit;
    else
        lim.rpm = limit;
    world_init(&w, port, &lim, NULL);
    /* tpm: each call costs ~100 prompt tokens + its echo: text of 400 bytes */
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "loom: 1\nname: bench\ndefaults: { provider: llm, model: fake }\n"
             "do: { map: { over: '{{ input }}', max_concurrency: 1000, "
             "do: { call: { prompt: '{{ item }}', max_tokens: %d } }, on_error: partial } }\n",
             tpm ? 104 : 16);
    dsl_graph *g = compile(yaml);
    long n = tpm ? (long)(limit / 150.0 * seconds / 60.0 * 1.5) + 100
                 : (long)(limit * seconds / 60.0 * 1.5) + 100;
    json_t *in = json_array();
    char text[512];
    for (long i = 0; i < n; i++) {
        if (tpm) {
            int k = snprintf(text, sizeof text, "item %ld ", i);
            memset(text + k, 'x', 400 - (size_t)k);
            text[400] = '\0';
        } else {
            snprintf(text, sizeof text, "item %ld", i);
        }
        json_array_append_new(in, json_string(text));
    }
    fake_server s = { .pid = 0, .port = port };
    json_decref(fake_server_stats(&s, 1));
    jobres jr = { .w = &w };
    engine_job_options jo = { .max_in_flight = 1000 };
    double t0 = bench_now_us();
    engine_job_t *job = engine_submit(w.eng, g, in, &jo, on_done, &jr);
    if (!job)
        die("submit failed");
    while (!w.done && bench_now_us() - t0 < seconds * 1e6)
        reactor_run_once(w.r, 10);
    double el = (bench_now_us() - t0) / 1e6;
    json_t *st = fake_server_stats(&s, 0);
    if (!w.done)
        engine_cancel(job);
    long answered = (long)json_integer_value(json_object_get(st, "chat")) -
                    (long)json_integer_value(json_object_get(st, "r429"));
    long r429 = (long)json_integer_value(json_object_get(st, "r429"));
    long tokens = (long)json_integer_value(json_object_get(st, "tokens"));
    /* what the server's GCRA admits in EL seconds from a full bucket */
    double allowed = limit * el / 60.0 + limit / 60.0;
    double got = tpm ? (double)tokens : (double)answered;
    printf("{\"peer\":\"loom\",\"mode\":\"ratelimit\",\"dimension\":\"%s\",\"limit_per_min\":%ld,"
           "\"seconds\":%.2f,\"answered\":%ld,\"r429\":%ld,\"%s\":%.0f,\"allowed\":%.0f,"
           "\"achieved_pct\":%.2f}\n",
           dim, limit, el, answered, r429, tpm ? "tokens" : "requests", got, allowed,
           100.0 * got / allowed);
    json_decref(st);
    json_decref(in);
    dsl_graph_unref(g);
    world_fini(&w);
    return 0;
}

/* coalesce PORT N JOBS: JOBS jobs at once, each a map of N/JOBS embed calls
 * of one input each. */
static int coalesce(int port, long n, long jobs)
{
    world w;
    config_limits lim = { .concurrency = 64 };
    world_init(&w, port, &lim, NULL);
    dsl_graph *g = compile("loom: 1\nname: bench\ndefaults: { provider: llm, model: fake-embed }\n"
                           "do: { map: { over: '{{ input }}', max_concurrency: 1000, "
                           "do: { embed: { input: '{{ item }}' } } } }\n");
    fake_server s = { .pid = 0, .port = port };
    long emb0 = fake_server_stat(&s, "embeddings");
    long in0 = fake_server_stat(&s, "embedding_inputs");
    jobres jr = { .w = &w };
    json_t **in = calloc((size_t)jobs, sizeof *in);
    for (long j = 0; j < jobs; j++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "job %ld text", j);
        in[j] = numbers(n / jobs, prefix);
    }
    double t0 = bench_now_us();
    for (long j = 0; j < jobs; j++)
        if (!engine_submit(w.eng, g, in[j], NULL, on_done, &jr))
            die("submit failed");
    while (w.done < jobs)
        reactor_run_once(w.r, 100);
    double el = (bench_now_us() - t0) / 1e6;
    long reqs = fake_server_stat(&s, "embeddings") - emb0;
    long inputs = fake_server_stat(&s, "embedding_inputs") - in0;
    long ideal = (inputs + 2047) / 2048;
    printf("{\"peer\":\"loom\",\"mode\":\"coalesce\",\"inputs\":%ld,\"jobs\":%ld,\"failed_jobs\":%d,"
           "\"http_requests\":%ld,\"ideal\":%ld,\"ratio\":%.3f,\"seconds\":%.2f}\n",
           inputs, jobs, jr.failed, reqs, ideal, (double)reqs / (double)ideal, el);
    for (long j = 0; j < jobs; j++)
        json_decref(in[j]);
    free(in);
    dsl_graph_unref(g);
    world_fini(&w);
    return jr.failed ? 1 : 0;
}

/* lag PORT INFLIGHT N RATE: see the top. */
typedef struct lagprobe {
    world *w;
    double *v;                 /* every probe's lateness, ms */
    size_t n, cap;
    dsl_graph *one;            /* the one-call job */
    json_t *one_in;
    jobres *extra;
    uint64_t rate_us;          /* between submits */
    double t0_us;              /* when submitting began */
    long submitted;
    bool stop;
} lagprobe;

static void probe(reactor_t *r, reactor_timer_t *t, void *ud)
{
    lagprobe *p = ud;
    double late = (bench_now_us() - (double)reactor_timer_deadline_us(t)) / 1e3;
    if (p->n < p->cap)
        p->v[p->n++] = late > 0 ? late : 0;
    if (!p->stop && !reactor_timer_add(r, REACTOR_MSEC, probe, p))
        die("out of memory");
}

static void submit_one(reactor_t *r, reactor_timer_t *t, void *ud)
{
    lagprobe *p = ud;
    (void)t;
    if (p->stop)
        return;
    /* every job due by now: a reactor lap longer than RATE_US must not
     * lower the rate the run claims (the timer fires once per lap) */
    long due = (long)((bench_now_us() - p->t0_us) / (double)p->rate_us) + 1;
    while (p->submitted < due && engine_submit(p->w->eng, p->one, p->one_in, NULL, on_done,
                                               p->extra))
        p->submitted++;
    if (!reactor_timer_add(r, p->rate_us, submit_one, p))
        die("out of memory");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int lag(int port, long inflight, long n, long rate)
{
    world w;
    config_limits lim = { .concurrency = inflight };
    world_init(&w, port, &lim, NULL);
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "loom: 1\nname: bench\ndefaults: { provider: llm, model: fake }\n"
             "do: { map: { over: '{{ input }}', max_concurrency: %ld, do: { call: '{{ item }}' } } }\n",
             inflight);
    dsl_graph *g = compile(yaml);
    json_t *in = numbers(n, "item");
    jobres jr = { .w = &w }, extra = { .w = &w };
    lagprobe p = { .w = &w, .cap = 1 << 22, .extra = &extra,
                   .rate_us = rate > 0 ? (uint64_t)(1e6 / (double)rate) : 0 };
    if (!(p.v = malloc(p.cap * sizeof *p.v)))
        die("out of memory");
    p.one = compile("loom: 1\nname: one\ndefaults: { provider: llm, model: fake }\n"
                    "do: { call: 'one {{ input }}' }\n");
    p.one_in = json_string("x");
    engine_job_options jo = { .max_in_flight = (size_t)inflight };
    double t0 = bench_now_us();
    if (!engine_submit(w.eng, g, in, &jo, on_done, &jr))
        die("submit failed");
    reactor_timer_add(w.r, REACTOR_MSEC, probe, &p);
    p.t0_us = bench_now_us();
    if (p.rate_us)
        reactor_timer_add(w.r, p.rate_us, submit_one, &p);
    /* the map's job is the first to end; the one-call jobs then drain */
    while (jr.ok + jr.failed == 0)
        reactor_run_once(w.r, 100);
    p.stop = true;
    while (w.done < 1 + p.submitted)
        reactor_run_once(w.r, 100);
    double s = (bench_now_us() - t0) / 1e6;
    reactor_lag_t rl;
    reactor_lag(w.r, &rl);
    qsort(p.v, p.n, sizeof *p.v, cmp_double);
    double p50 = p.n ? p.v[(p.n - 1) / 2] : 0, p99 = p.n ? p.v[(p.n - 1) * 99 / 100] : 0,
           mx = p.n ? p.v[p.n - 1] : 0;
    printf("{\"peer\":\"loom\",\"mode\":\"lag\",\"concurrency\":%ld,\"items\":%ld,"
           "\"jobs_per_s\":%ld,\"jobs_submitted\":%ld,\"errors\":%d,\"seconds\":%.3f,"
           "\"server_max_in_flight\":%d,\"probes\":%zu,\"lag_ms_p50\":%.3f,"
           "\"lag_ms_p99\":%.3f,\"lag_ms_max\":%.3f,\"reactor_window_ms_p99\":%.3f}\n",
           inflight, n, rate, p.submitted, jr.failed + extra.failed, s,
           server_stat(port, "max_in_flight"), p.n, p50, p99, mx, (double)rl.p99_us / 1e3);
    if (jr.first_error[0] || extra.first_error[0])
        fprintf(stderr, "http_bench: first error: %s\n",
                jr.first_error[0] ? jr.first_error : extra.first_error);
    free(p.v);
    json_decref(p.one_in);
    dsl_graph_unref(p.one);
    json_decref(in);
    dsl_graph_unref(g);
    world_fini(&w);
    return jr.failed + extra.failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "throughput") == 0) {
        target to = { 0 };
        for (int i = 5; i < argc; i += 2) {
            if (i + 1 >= argc)
                die("an option without its value");
            if (strcmp(argv[i], "--url") == 0)
                to.url = argv[i + 1];
            else if (strcmp(argv[i], "--ca") == 0)
                to.ca_file = argv[i + 1];
            else if (strcmp(argv[i], "--http") == 0)
                to.http_version = argv[i + 1];
            else
                die("unknown option (--url URL, --ca FILE, --http auto|1.1|2)");
        }
        return throughput(atoi(argv[2]), atol(argv[3]), atol(argv[4]), &to);
    }
    if (argc >= 6 && strcmp(argv[1], "ratelimit") == 0)
        return ratelimit(atoi(argv[2]), argv[3], atol(argv[4]), atof(argv[5]));
    if (argc >= 5 && strcmp(argv[1], "coalesce") == 0)
        return coalesce(atoi(argv[2]), atol(argv[3]), atol(argv[4]));
    if (argc >= 6 && strcmp(argv[1], "lag") == 0)
        return lag(atoi(argv[2]), atol(argv[3]), atol(argv[4]), atol(argv[5]));
    fprintf(stderr, "usage: http_bench throughput PORT INFLIGHT N [--url URL] [--ca FILE] "
                    "[--http auto|1.1|2]\n"
                    "       http_bench ratelimit PORT rpm|tpm LIMIT SECONDS\n"
                    "       http_bench coalesce PORT N JOBS\n"
                    "       http_bench lag PORT INFLIGHT N RATE\n");
    return 2;
}
