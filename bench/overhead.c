/* overhead.c -- what the engine itself costs per node, with the work taken away.
 *
 * Every step is a PURE|FAST no-op lambda (`bench.noop`, which hands its input
 * back), so the time measured is scheduling, activation bookkeeping and JSON
 * reference traffic: the engine's floor under any real workflow. Three shapes,
 * the same ones the LangChain.js peer measures (bench-peers, `overhead` mode):
 *
 *   chain      one job, a chain of N no-op steps             µs per step
 *   map        one job, a map over N items, max_concurrency  µs per item
 *              1000 (LangChain's batch maxConcurrency), body one no-op
 *   parallel3  10,000 jobs one after another, each a         µs per job
 *              parallel of 3 no-ops (the peer awaits each invoke in turn)
 *   loop       jobs one after another, each a loop of         µs per iteration
 *              min(N, 10,000) iterations (the language's
 *              bound) of one no-op, with an `until` template
 *              evaluated after each; N iterations in all
 *   tools      jobs one after another, each a call with one  µs per tool round
 *              tool (bench.noop) whose model, the mock with
 *              no latency, asks for it TOOL_ROUNDS times, one
 *              call a turn, then answers: a round is a model
 *              turn (request built from the conversation so
 *              far, the mock's answer, its checkpointable
 *              record) and the tool call it asked for;
 *              min(N, 10,000) rounds in all
 *
 * Each is timed from engine_submit to the done callback (compilation is timed
 * apart), repeated RUNS times, and printed as min and median, then as one JSON
 * line per figure for scripts. The figures are information: the exit status is
 * 0 unless a workflow fails to compile or a job fails.
 *
 *   bench/overhead [N [RUNS]]      N nodes for chain and map (default 100000), RUNS (default 5) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/engine/engine.h"
#include "bench/bench_util.h"
#include "dsl/dsl.h"
#include "loom/plugin.h"

#define TARGET_US 2.0    /* per-node overhead the engine is meant to stay under */
#define PAR_JOBS 10000   /* matches the peer's 10,000 RunnableParallel invokes */

#define LOOP_ITER_MAX 10000 /* DSL_LOOP_MAX_ITERATIONS: a loop job has at most this many */
#define TOOL_ROUNDS 20      /* tool rounds per job: max_tool_rounds' default */

/* ---- the bench plugin: one no-op lambda */

/* Calls made, checked after each job: a fast figure means nothing unless
 * every step really ran. Relaxed atomic, in case a lambda ever lands on the pool. */
static unsigned long noop_calls;

static json_t *l_noop(loom_ctx *ctx, void *st, json_t *in, json_t *args)
{
    (void)ctx;
    (void)st;
    (void)args;
    __atomic_add_fetch(&noop_calls, 1, __ATOMIC_RELAXED);
    return json_incref(in);
}

/* PURE|FAST so the engine runs it inline on the reactor thread: a pool
 * round trip per step would measure thread hand-off, not the engine. */
static const loom_lambda bench_lambdas[] = {
    { .name = "noop", .fn = l_noop, .flags = LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST,
      .summary = "input as is" },
};

static const loom_plugin bench_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "bench",
    .version = "1",
    .description = "overhead benchmark",
    .lambdas = bench_lambdas,
    .nlambdas = 1,
};

/* ---- YAML generation */


/* Compiles T and reports how long that took: compilation is a separate cost
 * (and has its own benchmark), so it is kept out of the per-node figures. */
static dsl_graph *compile(const char *name, const bench_text *t)
{
    dsl_diags d;
    dsl_diags_init(&d, "overhead.yaml");
    double t0 = bench_now_us();
    dsl_graph *g = dsl_compile("overhead.yaml", t->s, t->n, NULL, &d);
    double ms = (bench_now_us() - t0) / 1e3;
    if (!g) {
        fprintf(stderr, "overhead: the generated %s workflow does not compile:\n", name);
        char *text = dsl_diags_text(&d, NULL);
        fputs(text ? text : "out of memory\n", stderr);
        free(text);
    } else {
        printf("%-10s compiled: %zu nodes, %zu bytes of YAML, %.1f ms\n", name, g->nnodes, t->n, ms);
    }
    dsl_diags_free(&d);
    return g;
}

/* ---- running jobs */

typedef struct world {
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    engine_t *eng;
} world;

/* What a job must produce: output of EXPECT_SIZE items (an array or an
 * object; 0: equal to the input) after CALLS lambda calls. */
typedef struct expect {
    size_t size;
    unsigned long calls;
} expect;

typedef struct run {
    int done;
    int failed;
    double end_us;
    json_t *in;
    const expect *want;
} run;

static void on_done(engine_job_t *job, void *ud)
{
    run *rn = ud;
    rn->done = 1;
    rn->end_us = bench_now_us(); /* here, not after the reactor pass, so the pass's tail is not counted */
    const engine_error *err = engine_job_error(job);
    if (err) {
        rn->failed = 1;
        fprintf(stderr, "overhead: job failed: %s: %s (%s)\n", err->code, err->message,
                err->node ? err->node : "?");
        return;
    }
    json_t *out = engine_job_output(job);
    size_t size = json_is_array(out) ? json_array_size(out) : json_object_size(out);
    if (rn->want->size ? size != rn->want->size : !json_equal(out, rn->in)) {
        rn->failed = 1;
        fprintf(stderr, "overhead: job output is not what the workflow should produce\n");
    }
}

/* Runs G over IN to the end; returns submit-to-done µs, or -1 when it failed
 * or did not do what WANT says. */
static double run_job(world *w, dsl_graph *g, json_t *in, const expect *want)
{
    run rn = { .in = in, .want = want };
    unsigned long calls0 = __atomic_load_n(&noop_calls, __ATOMIC_RELAXED);
    double t0 = bench_now_us();
    if (!engine_submit(w->eng, g, in, NULL, on_done, &rn)) {
        fprintf(stderr, "overhead: engine_submit failed\n");
        return -1;
    }
    /* Timeout 0: the no-op lambdas complete inline, so there is never a
     * reason to sleep in the poll; blocking would only add wake-up latency. */
    while (!rn.done)
        reactor_run_once(w->r, 0);
    unsigned long calls = __atomic_load_n(&noop_calls, __ATOMIC_RELAXED) - calls0;
    if (!rn.failed && calls != want->calls) {
        fprintf(stderr, "overhead: %lu lambda calls, expected %lu\n", calls, want->calls);
        rn.failed = 1;
    }
    return rn.failed ? -1 : rn.end_us - t0;
}

typedef struct figure {
    const char *shape;
    const char *unit;    /* "node" or "invoke": what the figure is per */
    size_t count;        /* nodes (or invokes) it is divided by */
    double min, median;  /* µs per unit */
} figure;

/* Sorts US (RUNS totals) and turns them into per-unit figures. */
static void summarise(figure *f, double *us, int runs)
{
    bench_sort(us, (size_t)runs);
    double median = runs % 2 ? us[runs / 2] : (us[runs / 2 - 1] + us[runs / 2]) / 2;
    f->min = us[0] / (double)f->count;
    f->median = median / (double)f->count;
    printf("%-10s %zu %ss x %d runs: min %.3f us/%s   median %.3f us/%s   (median total %.1f ms)\n",
           f->shape, f->count, f->unit, runs, f->min, f->unit, f->median, f->unit, median / 1e3);
}

/* One job over G per run: chain and map. */
static int bench_one_job(world *w, figure *f, dsl_graph *g, json_t *in, const expect *want, int runs)
{
    double *us = calloc((size_t)runs, sizeof *us);
    if (!us)
        abort();
    for (int i = 0; i < runs; i++) {
        us[i] = run_job(w, g, in, want);
        if (us[i] < 0) {
            free(us);
            return -1;
        }
    }
    summarise(f, us, runs);
    free(us);
    return 0;
}

/* PAR_JOBS jobs over G per run, each waited for before the next is submitted,
 * as the peer awaits each invoke: this is per-job latency, not throughput. */
static int bench_many_jobs(world *w, figure *f, dsl_graph *g, int runs)
{
    static const expect want = { 3, 3 };
    double *us = calloc((size_t)runs, sizeof *us);
    if (!us)
        abort();
    for (int i = 0; i < runs; i++) {
        double total = 0;
        for (int j = 0; j < PAR_JOBS; j++) {
            json_t *in = json_integer(j);
            double t = run_job(w, g, in, &want);
            json_decref(in);
            if (t < 0) {
                free(us);
                return -1;
            }
            total += t;
        }
        us[i] = total;
    }
    summarise(f, us, runs);
    free(us);
    return 0;
}

/* Loop jobs of ITERS iterations each, one after another, N iterations in
 * all per run: one loop job alone is too short to time. */
static int bench_loop(world *w, figure *f, dsl_graph *g, long iters, long n, int runs)
{
    const expect want = { 0, (unsigned long)iters };
    long jobs = (n + iters - 1) / iters;
    f->count = (size_t)(jobs * iters);
    double *us = calloc((size_t)runs, sizeof *us);
    json_t *in = json_integer(1);
    if (!us || !in)
        abort();
    for (int i = 0; i < runs; i++) {
        double total = 0;
        for (long j = 0; j < jobs; j++) {
            double t = run_job(w, g, in, &want);
            if (t < 0) {
                free(us);
                json_decref(in);
                return -1;
            }
            total += t;
        }
        us[i] = total;
    }
    summarise(f, us, runs);
    free(us);
    json_decref(in);
    return 0;
}

/* A mock provider instance "model" whose tool_script calls bench.noop
 * once a turn for TOOL_ROUNDS turns, then answers "done". 0 or -1. */
static int add_tool_model(world *w)
{
    json_t *script = json_array(), *cfg = NULL;
    for (int i = 0; script && i < TOOL_ROUNDS; i++)
        json_array_append_new(script, json_pack("[{s:s, s:{s:i}}]", "name", "bench_noop",
                                                "arguments", "input", i));
    if (script)
        json_array_append_new(script, json_string("done"));
    cfg = script ? json_pack("{s:s, s:o}", "latency", "0ms", "tool_script", script) : NULL;
    char err[256] = "";
    int rc = cfg ? engine_add_provider(w->eng, "model", "mock", cfg, NULL, NULL, err, sizeof err)
                 : -1;
    if (rc < 0)
        fprintf(stderr, "overhead: cannot add the mock model: %s\n", err);
    json_decref(cfg);
    return rc;
}

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Jobs of TOOL_ROUNDS tool rounds each, one after another, about N rounds
 * in all per run (at least one job). The mock answers from a timer, whose
 * granularity the wall-clock figure includes; the CPU time per round, also
 * printed, is the engine's (and the mock's) own work. */
static int bench_tools(world *w, figure *f, dsl_graph *g, long n, int runs)
{
    const expect want = { 0, TOOL_ROUNDS };
    long jobs = (n + TOOL_ROUNDS - 1) / TOOL_ROUNDS;
    f->count = (size_t)(jobs * TOOL_ROUNDS);
    double *us = calloc((size_t)runs, sizeof *us);
    json_t *in = json_string("done"); /* the answer: the output equals the input */
    if (!us || !in)
        abort();
    double cpu0 = cpu_us();
    for (int i = 0; i < runs; i++) {
        double total = 0;
        for (long j = 0; j < jobs; j++) {
            double t = run_job(w, g, in, &want);
            if (t < 0) {
                free(us);
                json_decref(in);
                return -1;
            }
            total += t;
        }
        us[i] = total;
    }
    summarise(f, us, runs);
    printf("%-10s cpu %.3f us/round (all runs' process CPU time over their rounds)\n", f->shape,
           (cpu_us() - cpu0) / ((double)f->count * runs));
    free(us);
    json_decref(in);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (n < 1)
        n = 1;
    if (runs < 1)
        runs = 1;

    world w = {0};
    w.r = reactor_new();
    /* The pool is idle here (every lambda is inline) but the engine needs one. */
    w.pool = w.r ? pool_new(w.r, 1) : NULL;
    w.plugins = plugins_new(NULL, NULL);
    if (!w.r || !w.pool || !w.plugins || plugins_add_builtins(w.plugins) != 0 ||
        plugins_add(w.plugins, &bench_plugin, "bench", NULL) != 0) {
        fprintf(stderr, "overhead: cannot set up the reactor, pool or plugins\n");
        return 1;
    }
    w.eng = engine_new(w.r, w.pool, w.plugins, NULL);
    if (!w.eng) {
        fprintf(stderr, "overhead: engine_new failed\n");
        return 1;
    }

    printf("overhead: engine cost per node with PURE|FAST no-op lambdas (submit to done)\n");

    bench_text chain = {0}, map = {0}, par = {0}, loop = {0};
    bench_add(&chain, "loom: 1\nname: overhead-chain\ndo:\n  chain:\n");
    for (long i = 0; i < n; i++)
        bench_add(&chain, "    - lambda: bench.noop\n");
    bench_add(&map, "loom: 1\nname: overhead-map\n"
              "do: { map: { over: '{{ input }}', max_concurrency: 1000, do: { lambda: bench.noop } } }\n");
    bench_add(&par, "loom: 1\nname: overhead-parallel3\n"
              "do: { parallel: { a: { lambda: bench.noop }, b: { lambda: bench.noop }, c: { lambda: bench.noop } } }\n");

    long iters = n < LOOP_ITER_MAX ? n : LOOP_ITER_MAX;
    char loop_yaml[256];
    snprintf(loop_yaml, sizeof loop_yaml,
             "loom: 1\nname: overhead-loop\ndo: { loop: { max_iterations: %ld,\n"
             "  until: '{{ loop.iteration | eq(%ld) }}', do: { lambda: bench.noop } } }\n",
             iters, iters);
    bench_add(&loop, loop_yaml);
    bench_text tools = {0};
    bench_add(&tools, "loom: 1\nname: overhead-tools\n"
              "do: { call: { provider: model, prompt: go, tools: [ { lambda: bench.noop } ] } }\n");

    dsl_graph *gc = compile("chain", &chain);
    dsl_graph *gm = compile("map", &map);
    dsl_graph *gp = compile("parallel3", &par);
    dsl_graph *gl = compile("loop", &loop);
    dsl_graph *gt = compile("tools", &tools);
    int rc = gc && gm && gp && gl && gt && add_tool_model(&w) == 0 ? 0 : 1;

    enum { NFIGS = 5 };
    figure figs[NFIGS] = {
        { "chain", "node", (size_t)n, 0, 0 },
        { "map", "node", (size_t)n, 0, 0 },
        { "parallel3", "invoke", PAR_JOBS, 0, 0 },
        { "loop", "iteration", 0, 0, 0 }, /* count set by bench_loop */
        { "tools", "round", 0, 0, 0 },    /* count set by bench_tools */
    };
    json_t *one = json_integer(1);
    json_t *items = json_array();
    for (long i = 0; i < n && items; i++)
        json_array_append_new(items, json_integer(i));
    if (!rc && (!one || !items))
        rc = 1;
    if (!rc)
        rc = bench_one_job(&w, &figs[0], gc, one, &(expect){ 0, (unsigned long)n }, runs) ? 1 : 0;
    if (!rc)
        rc = bench_one_job(&w, &figs[1], gm, items, &(expect){ (size_t)n, (unsigned long)n }, runs) ? 1 : 0;
    if (!rc)
        rc = bench_many_jobs(&w, &figs[2], gp, runs) ? 1 : 0;
    if (!rc)
        rc = bench_loop(&w, &figs[3], gl, iters, n, runs) ? 1 : 0;
    if (!rc)
        rc = bench_tools(&w, &figs[4], gt, n < LOOP_ITER_MAX ? n : LOOP_ITER_MAX, runs) ? 1 : 0;

    if (!rc) {
        printf("  target: %.1f us per node; chain median is %.1f%% of it, map %.1f%%\n", TARGET_US,
               figs[0].median / TARGET_US * 100, figs[1].median / TARGET_US * 100);
        for (int i = 0; i < NFIGS; i++) {
            if (strcmp(figs[i].unit, "round") == 0)
                printf("{\"peer\":\"loom\",\"shape\":\"%s\",\"rounds\":%zu,\"us_per_round\":%.4f,"
                       "\"us_per_round_min\":%.4f,\"runs\":%d}\n",
                       figs[i].shape, figs[i].count, figs[i].median, figs[i].min, runs);
            else if (strcmp(figs[i].unit, "iteration") == 0)
                printf("{\"peer\":\"loom\",\"shape\":\"%s\",\"iterations\":%zu,\"us_per_iteration\":%.4f,"
                       "\"us_per_iteration_min\":%.4f,\"runs\":%d}\n",
                       figs[i].shape, figs[i].count, figs[i].median, figs[i].min, runs);
            else if (figs[i].unit[0] == 'n')
                printf("{\"peer\":\"loom\",\"shape\":\"%s\",\"nodes\":%zu,\"us_per_node\":%.4f,"
                       "\"us_per_node_min\":%.4f,\"runs\":%d}\n",
                       figs[i].shape, figs[i].count, figs[i].median, figs[i].min, runs);
            else
                printf("{\"peer\":\"loom\",\"shape\":\"%s\",\"invokes\":%zu,\"us_per_invoke\":%.4f,"
                       "\"us_per_invoke_min\":%.4f,\"runs\":%d}\n",
                       figs[i].shape, figs[i].count, figs[i].median, figs[i].min, runs);
        }
    }

    json_decref(one);
    json_decref(items);
    if (gc)
        dsl_graph_unref(gc);
    if (gm)
        dsl_graph_unref(gm);
    if (gp)
        dsl_graph_unref(gp);
    if (gl)
        dsl_graph_unref(gl);
    if (gt)
        dsl_graph_unref(gt);
    free(tools.s);
    free(chain.s);
    free(map.s);
    free(par.s);
    free(loop.s);
    engine_free(w.eng);
    pool_free(w.pool); /* after the engine, as engine.h asks */
    plugins_free(w.plugins);
    reactor_free(w.r);
    return rc;
}
