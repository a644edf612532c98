/* isolate_bench.c -- what isolating a plugin costs per call.
 *
 * The same lambda (hostile.ok from the test plugins: its input back with the
 * process id) run four ways in one process, one after another:
 *
 *   direct      called in the caller's thread: the lambda's own cost
 *   pool        through the worker pool and back to the reactor: what a
 *               lambda that is not PURE|FAST costs in-process
 *   isolated    through one loom-plugin-host helper, one call at a time:
 *               the round trip (encode, socketpair, decode, both ways)
 *   isolated64  64 calls queued at once through the same helper: the
 *               throughput of one helper when loomd keeps it busy
 *   isolated2p  the same with `processes: 2`
 *
 * with a small input ({"text": "hello"}) and a 64 KiB one. Each figure is
 * the median of RUNS runs of N calls (N/50, at least 100, for 64 KiB), in µs per call and calls per second,
 * then one JSON line per figure. Targets (the Plugins 2.0 issue): an
 * isolated round trip within 20 µs of the in-process one, and 10,000 calls
 * per second through one helper. Figures are information: the exit status is
 * 0 unless a call fails.
 *
 *   bench/isolate_bench [N [RUNS [PLUGIN.so [HOST]]]]
 *     defaults: 20000 calls, 5 runs, tests/plugins/.libs/hostile.so,
 *     ./loom-plugin-host (run it from the top of a build directory) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "daemon/isolate/iso.h"
#include "daemon/plugins/plugins.h"

#define TARGET_EXTRA_US 20.0
#define TARGET_PER_SEC 10000.0

typedef struct run {
    reactor_t *r;
    pool_t *pool;
    iso_t *iso;
    const plugins_lambda *lam;
    json_t *input, *args;
    long left, in_flight, failed;
    json_t *pool_out;            /* the pool path's result slot (one call at a time) */
} run;

static void log_cb(void *ud, int level, json_t *data, const char *fmt, ...)
{
    json_decref(data);
    if (level > LOOM_LOG_WARN)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void iso_next(run *R);

static void iso_done(void *ud, iso_result *res)
{
    run *R = ud;
    R->in_flight--;
    if (res->status != ISO_OK) {
        fprintf(stderr, "isolate_bench: a call failed: %s\n", res->message ? res->message : "?");
        R->failed++;
    }
    json_decref(res->output);
    iso_next(R);
}

static void iso_next(run *R)
{
    if (R->left > 0) {
        R->left--;
        R->in_flight++;
        if (!iso_call(R->iso, "hostile", "hostile.ok", R->input, R->args, 0, iso_done, R)) {
            fprintf(stderr, "isolate_bench: out of memory\n");
            exit(1);
        }
    } else if (R->in_flight == 0) {
        reactor_stop(R->r);
    }
}

static double time_isolated(run *R, long n, int depth)
{
    R->left = n;
    double t0 = bench_now_us();
    for (int i = 0; i < depth; i++)
        iso_next(R);
    reactor_run(R->r);
    return (bench_now_us() - t0) / (double)n;
}

static void pool_work(void *ud)
{
    run *R = ud;
    loom_ctx ctx = { 0 };
    R->pool_out = R->lam->def->fn(&ctx, R->lam->state, R->input, R->args);
}

static void pool_done(void *ud, int status)
{
    run *R = ud;
    if (status < 0 || !R->pool_out)
        R->failed++;
    json_decref(R->pool_out);
    R->pool_out = NULL;
    if (--R->left > 0)
        pool_submit(R->pool, pool_work, pool_done, R, NULL);
    else
        reactor_stop(R->r);
}

static double time_pool(run *R, long n)
{
    R->left = n;
    double t0 = bench_now_us();
    pool_submit(R->pool, pool_work, pool_done, R, NULL);
    reactor_run(R->r);
    return (bench_now_us() - t0) / (double)n;
}

static double time_direct(run *R, long n)
{
    loom_ctx ctx = { 0 };
    double t0 = bench_now_us();
    for (long i = 0; i < n; i++) {
        json_t *out = R->lam->def->fn(&ctx, R->lam->state, R->input, R->args);
        if (!out)
            R->failed++;
        json_decref(out);
    }
    return (bench_now_us() - t0) / (double)n;
}

static void wait_ready(run *R, size_t helpers)
{
    iso_stats st;
    double t0 = bench_now_us();
    do {
        reactor_run_once(R->r, 10);
        iso_get_stats(R->iso, &st);
        if (bench_now_us() - t0 > 10e6) {
            fprintf(stderr, "isolate_bench: the helpers were not ready within 10 s\n");
            exit(1);
        }
    } while (st.helpers_ready < helpers);
}

static void report(const char *shape, const char *input, double *us, int runs, double base_us)
{
    bench_sort(us, (size_t)runs);
    double med = us[runs / 2];
    printf("%-11s %-6s  min %8.2f  median %8.2f us/call  %9.0f calls/s", shape, input, us[0], med,
           1e6 / med);
    if (base_us > 0)
        printf("  (+%.2f us over pool)", med - base_us);
    printf("\n");
    fprintf(stderr, "{\"bench\":\"isolate\",\"shape\":\"%s\",\"input\":\"%s\",\"us_per_call\":%.3f,"
                    "\"calls_per_s\":%.0f}\n", shape, input, med, 1e6 / med);
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 20000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *so = argc > 3 ? argv[3] : "tests/plugins/.libs/hostile.so";
    const char *host = argc > 4 ? argv[4] : "./" ISO_HOST_PROGRAM;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (calls < 1 || runs < 1 || runs > 100)
        return fprintf(stderr, "usage: isolate_bench [N [RUNS [PLUGIN.so [HOST]]]]\n"), 2;
    run R = { 0 };
    plugins_t *p = plugins_new(NULL, NULL);
    if (!(R.r = reactor_new()) || !(R.pool = pool_new(R.r, 2)) || !p ||
        plugins_load_file(p, so, NULL) < 0 || !(R.lam = plugins_lambda_find(p, "hostile.ok"))) {
        fprintf(stderr, "isolate_bench: cannot load %s (build it: make tests/plugins/hostile.la)\n", so);
        return 1;
    }
    R.args = json_object();
    char *big = malloc(64 * 1024 + 1);
    memset(big, 'x', 64 * 1024);
    big[64 * 1024] = '\0';
    json_t *inputs[2] = { json_pack("{s:s}", "text", "hello"), json_pack("{s:s}", "text", big) };
    const char *names[2] = { "small", "64KiB" };
    free(big);
    printf("isolate_bench: %ld calls (64 KiB: %ld) x %d runs\n", calls,
           calls / 50 > 100 ? calls / 50 : 100, runs);
    double *us = calloc((size_t)runs, sizeof *us);
    for (int procs = 1; procs <= 2; procs++) {
        if (!(R.iso = iso_new(R.r, host, log_cb, NULL))) {
            fprintf(stderr, "isolate_bench: out of memory\n");
            return 1;
        }
        iso_limits lim = { .processes = procs, .timeout_ms = 30000 };
        if (iso_add_plugin(R.iso, "hostile", so, &lim, NULL) < 0)
            return fprintf(stderr, "isolate_bench: cannot isolate %s\n", so), 1;
        wait_ready(&R, (size_t)procs);
        for (int k = 0; k < 2; k++) {
            R.input = inputs[k];
            /* a 64 KiB value costs milliseconds of JSON work each way: fewer calls */
            long n = k == 0 ? calls : (calls / 50 > 100 ? calls / 50 : 100);
            double pool_med = 0;
            if (procs == 1) {
                for (int i = 0; i < runs; i++)
                    us[i] = time_direct(&R, n);
                report("direct", names[k], us, runs, 0);
                for (int i = 0; i < runs; i++)
                    us[i] = time_pool(&R, n);
                bench_sort(us, (size_t)runs);
                pool_med = us[runs / 2];
                report("pool", names[k], us, runs, 0);
                for (int i = 0; i < runs; i++)
                    us[i] = time_isolated(&R, n, 1);
                report("isolated", names[k], us, runs, pool_med);
                for (int i = 0; i < runs; i++)
                    us[i] = time_isolated(&R, n, 64);
                report("isolated64", names[k], us, runs, 0);
            } else {
                for (int i = 0; i < runs; i++)
                    us[i] = time_isolated(&R, n, 64);
                report("isolated2p", names[k], us, runs, 0);
            }
        }
        iso_stats st;
        iso_get_stats(R.iso, &st);
        if (st.crashes || st.timeouts)
            R.failed++;
        iso_free(R.iso);
    }
    printf("targets: isolated <= pool + %.0f us per call; >= %.0f calls/s through one helper\n",
           TARGET_EXTRA_US, TARGET_PER_SEC);
    free(us);
    json_decref(inputs[0]);
    json_decref(inputs[1]);
    json_decref(R.args);
    pool_free(R.pool);
    plugins_free(p);
    reactor_free(R.r);
    if (R.failed)
        fprintf(stderr, "isolate_bench: %ld calls failed\n", R.failed);
    return R.failed ? 1 : 0;
}
