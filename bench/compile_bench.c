/* compile_bench.c -- how long the workflow compiler takes on large files.
 *
 * Generates realistic workflows in memory (a chain of groups, each a map over
 * documents of a parallel of calls and a lambda, a vote over the result, and
 * a route with a gated chain, a fallback and templates that read earlier
 * steps), compiles each several times and prints min / median / max time per
 * compile, the size, and the time per node, next to the target (50 ms for a
 * 10,000-node workflow). The figures are information: the exit status is 0
 * unless a workflow fails to compile.
 *
 *   bench/compile_bench [RUNS]      RUNS compiles of the 10,000-node file (default 20) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "dsl/dsl.h"

#define TARGET_MS 50.0
#define TARGET_NODES 10000
#define NODES_PER_GROUP 14 /* see add_group */


/* One group of the top-level chain: NODES_PER_GROUP nodes. Group I maps over
 * the documents group I-1 produced (the first over the input). */
static void add_group(bench_text *t, size_t i)
{
    if (i == 0)
        bench_add(t, "    - id: g%zu_docs\n      map:\n        over: \"{{ input.docs }}\"\n", i);
    else
        bench_add(t, "    - id: g%zu_docs\n      map:\n        over: \"{{ steps.g%zu_docs.output }}\"\n", i, i - 1);
    bench_add(t,
        "        as: doc\n"
        "        index_as: k\n"
        "        max_concurrency: 8\n"
        "        on_error: partial\n"
        "        do:\n"
        "          parallel:\n"
        "            summary:\n"
        "              call:\n"
        "                prompt: \"Summarise document {{ k }} for {{ input.audience }}: {{ doc.text | trim }}\"\n"
        "                max_tokens: 200\n"
        "                temperature: 0.2\n"
        "            topics:\n"
        "              retry: { max_attempts: 4, initial_delay: 250ms, on: [timeout, rate_limited] }\n"
        "              call:\n"
        "                system: You list the topics of a text as a JSON array of strings.\n"
        "                prompt: \"Topics of: {{ doc.text }}\"\n"
        "                json: true\n"
        "            words: { lambda: { fn: std.const, args: { text: \"{{ doc.text | lower }}\", n: 3 } } }\n");
    bench_add(t,
        "    - id: g%zu_verdict\n"
        "      vote:\n"
        "        n: 5\n"
        "        strategy: majority\n"
        "        normalize: [trim, lower]\n"
        "        do: { call: { prompt: \"Positive or negative overall? {{ steps.g%zu_docs.output | json }}\", max_tokens: 3 } }\n",
        i, i);
    bench_add(t,
        "    - id: g%zu_route\n"
        "      timeout: 2m\n"
        "      fallback: { lambda: std.const }\n"
        "      route:\n"
        "        on: \"{{ steps.g%zu_verdict.output.winner }}\"\n"
        "        normalize: [trim, lower]\n"
        "        cases:\n"
        "          positive: { lambda: { fn: std.const, args: { value: ok } } }\n"
        "          negative:\n"
        "            chain:\n"
        "              - gate: { check: \"{{ steps.g%zu_docs.output | length }}\", fail: \"nothing to answer\" }\n"
        "              - call: { provider: smart, prompt: \"Draft an apology about {{ steps.g%zu_docs.output[0].summary }}\" }\n"
        "        default: { fail: \"unexpected verdict {{ steps.g%zu_verdict.output.winner }}\" }\n",
        i, i, i, i, i);
}

/* A workflow of about NODES nodes (the root chain and whole groups). */
static bench_text generate(size_t nodes)
{
    bench_text t = {0};
    bench_add(&t,
        "loom: 1\n"
        "name: bench-%zu\n"
        "description: A generated workflow for the compiler benchmark.\n"
        "input:\n"
        "  docs: array\n"
        "  audience: { type: string, required: false, default: everyone }\n"
        "defaults: { provider: fast, timeout: 30s, retry: { max_attempts: 3 }, max_concurrency: 8, temperature: 0.3 }\n"
        "do:\n"
        "  chain:\n",
        nodes);
    size_t groups = (nodes - 1 + NODES_PER_GROUP - 1) / NODES_PER_GROUP;
    for (size_t i = 0; i < groups; i++)
        add_group(&t, i);
    return t;
}

/* Compiles a NODES-node workflow RUNS times and prints the figures. Returns
 * the median in ms, or -1 when the workflow does not compile. */
static double bench(size_t nodes, int runs)
{
    bench_text t = generate(nodes);
    double *ms = calloc((size_t)runs, sizeof *ms);
    size_t nnodes = 0;
    if (!ms)
        abort();
    for (int r = 0; r < runs; r++) {
        dsl_diags diags;
        dsl_diags_init(&diags, "bench.yaml");
        double t0 = (bench_now_us() / 1e3);
        dsl_graph *g = dsl_compile("bench.yaml", t.s, t.n, NULL, &diags);
        ms[r] = (bench_now_us() / 1e3) - t0;
        if (!g) {
            fprintf(stderr, "compile_bench: the generated %zu-node workflow does not compile:\n", nodes);
            char *text = dsl_diags_text(&diags, NULL);
            fputs(text ? text : "out of memory\n", stderr);
            free(text);
            dsl_diags_free(&diags);
            free(ms);
            free(t.s);
            return -1;
        }
        nnodes = g->nnodes;
        dsl_graph_unref(g);
        dsl_diags_free(&diags);
    }
    bench_sort(ms, (size_t)runs);
    double median = runs % 2 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
    printf("%zu nodes, %zu bytes of YAML, %d compiles:\n", nnodes, t.n, runs);
    printf("  min %.2f ms   median %.2f ms   max %.2f ms   %.0f ns per node (median)\n",
           ms[0], median, ms[runs - 1], median * 1e6 / (double)nnodes);
    free(ms);
    free(t.s);
    return median;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 20;
    if (runs < 1)
        runs = 1;
    printf("compile_bench: dsl_compile on generated workflows (map x parallel, vote, route, gate)\n");
    double median = bench(TARGET_NODES, runs);
    if (median < 0)
        return 1;
    printf("  target: %.0f ms for %d nodes; median is %.1f%% of it (%.1fx headroom)\n", TARGET_MS,
           TARGET_NODES, median / TARGET_MS * 100, TARGET_MS / median);
    int big_runs = runs < 5 ? runs : 5;
    if (bench(10 * TARGET_NODES, big_runs) < 0)
        return 1;
    return 0;
}
