/* test_engine_replay.c -- checkpoints and replay: a job run again with the
 * records of an earlier run calls nothing it had finished and ends the same.
 *
 * Each case runs a workflow once collecting its checkpoints, then again
 * with all of them (no provider call, no lambda, no new checkpoint, the
 * same output byte for byte, key order included), then with a subset (only
 * the missing leaves run, and they report exactly the missing keys). The
 * provider answers by echoing the prompt unless a case scripts it, so a
 * live call gives the same answer in every run. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/engine_testlib.h"

TestSuite(replay, .init = et_setup, .fini = et_teardown);

#define HDR "loom: 1\nname: t\n"

/* One run: its result, its checkpoints and what it cost. */
typedef struct run {
    et_result r;
    json_t *recs;          /* KEY -> record, as reported */
    int nck;               /* checkpoint calls */
    bool dup;              /* a key reported twice */
    int replayed;          /* leaf FINISH/ERROR events flagged replayed */
    int replayed_cached;   /* ...also flagged cached (never) */
    int calls, lambdas;    /* provider calls and counted lambda runs during the run */
    int cancel_at;         /* cancel the job at this many replayed events (0: never) */
    engine_job_t *job;
} run_t;

static void on_checkpoint(void *ud, engine_job_t *job, const char *key, json_t *rec)
{
    run_t *rr = ud;
    cr_assert_eq(job, rr->job);
    if (json_object_get(rr->recs, key))
        rr->dup = true;
    json_object_set(rr->recs, key, rec);
    rr->nck++;
}

static bool is_leaf_kind(dsl_kind k) { return k == DSL_CALL || k == DSL_EMBED || k == DSL_LAMBDA; }

static void on_trace(void *ud, const engine_trace *t)
{
    run_t *rr = ud;
    if (!t->replayed)
        return;
    cr_assert(is_leaf_kind(t->kind), "replayed %s", t->node);
    cr_assert(t->event == ENGINE_TRACE_FINISH || t->event == ENGINE_TRACE_ERROR);
    rr->replayed++;
    if (t->cached)
        rr->replayed_cached++;
    if (rr->cancel_at && rr->replayed == rr->cancel_at)
        engine_cancel(rr->job);
}

/* Starts G over INPUT (JSON text) with REPLAY (borrowed, may be NULL). */
static void run_start(run_t *rr, dsl_graph *g, const char *input, json_t *replay)
{
    int cancel_at = rr->cancel_at;
    memset(rr, 0, sizeof *rr);
    rr->cancel_at = cancel_at;
    rr->recs = json_object();
    ET.prov.calls = ET.prov.served = ET.prov.cancelled = ET.prov.max_inflight = 0;
    ET.lambda_calls = 0;
    engine_job_options o = { .seed = 7, .trace = on_trace, .trace_ud = rr,
                             .checkpoint = on_checkpoint, .checkpoint_ud = rr, .replay = replay };
    json_t *in = input ? json_loads(input, JSON_DECODE_ANY, NULL) : NULL;
    rr->job = engine_submit(ET.eng, g, in, &o, et_done, &rr->r);
    cr_assert(rr->job);
    json_decref(in);
}

static void run_finish(run_t *rr)
{
    et_wait(&rr->r);
    rr->calls = ET.prov.calls;
    rr->lambdas = ET.lambda_calls;
    cr_assert(!rr->dup, "a key was reported twice in one run");
    cr_assert_eq((int)json_object_size(rr->recs), rr->nck);
}

static void run_wf(run_t *rr, dsl_graph *g, const char *input, json_t *replay)
{
    run_start(rr, g, input, replay);
    run_finish(rr);
}

static void run_free(run_t *rr)
{
    et_result_free(&rr->r);
    json_decref(rr->recs);
}

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(none)");
}

/* Same output, byte for byte (object key order included). */
static void same_output(const run_t *a, const run_t *b)
{
    cr_assert(a->r.output, "first run failed: %s", dump(a->r.error));
    char *x = dump(a->r.output), *y = dump(b->r.output);
    cr_assert_str_eq(x, y, "outputs differ (second error: %s)", dump(b->r.error));
    free(x);
    free(y);
}

static void same_keys(const json_t *a, const json_t *b)
{
    cr_assert_eq(json_object_size(a), json_object_size(b));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v) cr_assert(json_object_get(b, k), "key '%s' missing", k);
}

static json_int_t seq_of(const json_t *rec) { return json_integer_value(json_object_get(rec, "seq")); }

/* The records of RECS whose seq is among the N lowest (new reference). */
static json_t *first_n(const json_t *recs, size_t n)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)recs, k, v) {
        size_t lower = 0;
        const char *k2;
        json_t *v2;
        json_object_foreach((json_t *)recs, k2, v2) lower += seq_of(v2) < seq_of(v);
        if (lower < n)
            json_object_set(out, k, v);
    }
    return out;
}

/* The records of RECS whose key contains NEEDLE, or (WITH false) does not
 * (new reference). */
static json_t *keys_with(const json_t *recs, const char *needle, bool with)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)recs, k, v) if ((strstr(k, needle) != NULL) == with)
        json_object_set(out, k, v);
    return out;
}

/* The run with SUBSET of FIRST's records: only the missing leaves ran (and
 * reported exactly the missing keys), CALLS of them provider calls. */
static void check_subset(dsl_graph *g, const char *input, const run_t *first, json_t *subset,
                         int calls)
{
    run_t r = { 0 };
    size_t nsub = json_object_size(subset);
    cr_assert(nsub > 0 && nsub < json_object_size(first->recs), "not a proper subset");
    run_wf(&r, g, input, subset);
    same_output(first, &r);
    cr_assert_eq(r.calls, calls);
    cr_assert_eq(r.replayed, (int)nsub);
    cr_assert_eq((size_t)r.nck, json_object_size(first->recs) - nsub);
    const char *k;
    json_t *v;
    json_int_t max = -1;
    json_object_foreach(subset, k, v) if (seq_of(v) > max) max = seq_of(v);
    json_object_foreach(r.recs, k, v) {
        cr_assert(json_object_get(first->recs, k), "new key '%s'", k);
        cr_assert(!json_object_get(subset, k), "replayed key '%s' reported again", k);
        cr_assert_gt(seq_of(v), max); /* after the replayed ones */
    }
    run_free(&r);
}

/* Runs G twice without replay (same keys, same output), then with every
 * record: nothing runs, nothing is reported, the output is the same.
 * FIRST (filled) is the first run. */
static void check_full(dsl_graph *g, const char *input, run_t *first)
{
    run_t again = { 0 }, re = { 0 };
    run_wf(first, g, input, NULL);
    cr_assert(first->r.output, "job failed: %s", dump(first->r.error));
    cr_assert_gt(first->nck, 0);
    run_wf(&again, g, input, NULL);
    same_output(first, &again);
    same_keys(first->recs, again.recs);
    run_free(&again);
    run_wf(&re, g, input, first->recs);
    same_output(first, &re);
    cr_assert_eq(re.calls, 0);
    cr_assert_eq(re.lambdas, 0);
    cr_assert_eq(re.nck, 0);
    cr_assert_eq(re.replayed, first->nck);
    cr_assert_eq(re.replayed_cached, 0);
    run_free(&re);
}

static dsl_graph *compile_uses(const char *text, const char *const *wfs)
{
    dsl_diags d;
    dsl_diags_init(&d, "t.yaml");
    dsl_registry reg = { .workflows = wfs };
    dsl_options opt = { .registry = &reg };
    dsl_graph *g = dsl_compile("t.yaml", text, strlen(text), &opt, &d);
    if (!g) {
        char *diag = dsl_diags_text(&d, NULL);
        fputs(diag ? diag : "out of memory\n", stderr);
        free(diag);
    }
    dsl_diags_free(&d);
    cr_assert(g);
    return g;
}

/* ---- workflows */

/* steps.X, `output:`, `input:` with `prev` in `output:`, `json: true`. */
static const char *const chain_wf = HDR
    "do:\n  chain:\n"
    "    - { id: a, call: 'first {{ input }}' }\n"
    "    - { id: b, call: 'second {{ prev }}', output: '{{ output }}!' }\n"
    "    - { lambda: { fn: t.echo, input: '{{ steps.a.output }}', args: { b: '{{ steps.b.output }}', n: '{{ steps.a.attempts }}' } },\n"
    "        output: { p: '{{ prev }}', o: '{{ output }}' } }\n"
    "    - { id: j, call: { prompt: '{\"v\": \"{{ prev.o.args.b }}\"}', json: true } }\n"
    "    - { call: 'last {{ steps.j.output.v }}' }\n";

Test(replay, chain_with_steps)
{
    dsl_graph *g = et_compile(chain_wf);
    run_t first = { 0 };
    check_full(g, "1", &first);
    cr_assert_eq(first.calls, 4);
    cr_assert_eq(first.nck, 5);
    /* the first two steps recorded: the lambda and the two last calls run */
    json_t *sub = first_n(first.recs, 2);
    check_subset(g, "1", &first, sub, 2);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, record_shape)
{
    dsl_graph *g = et_compile(HDR "do: { chain: [ { call: 'x {{ input }}', output: '{{ output }}?' }, { lambda: t.garbage } ] }\n");
    run_t r = { 0 };
    run_wf(&r, g, "1", NULL);
    cr_assert_str_eq(et_code(&r.r), "lambda_failed");
    cr_assert_eq(r.nck, 2);
    const char *k;
    json_t *v;
    int outputs = 0, errors = 0;
    json_object_foreach(r.recs, k, v) {
        /* opaque, but it names the version and, for people, the node */
        cr_assert_eq(strncmp(k, g->version, strlen(g->version)), 0, "%s", k);
        cr_assert(strstr(k, json_object_get(v, "output") ? " do.chain[0]" : " do.chain[1]"), "%s", k);
        cr_assert_eq(json_integer_value(json_object_get(v, "attempts")), 1);
        if (json_object_get(v, "output")) {
            /* before `output:` */
            cr_assert_str_eq(json_string_value(json_object_get(v, "output")), "x 1");
            cr_assert_eq(seq_of(v), 0);
            outputs++;
        } else {
            json_t *e = json_object_get(v, "error");
            cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "lambda_failed");
            cr_assert_eq(seq_of(v), 1);
            errors++;
        }
    }
    cr_assert_eq(outputs, 1);
    cr_assert_eq(errors, 1);
    /* the replayed failure fails the job the same way, without running */
    run_t re = { 0 };
    run_wf(&re, g, "1", r.recs);
    cr_assert_str_eq(et_code(&re.r), "lambda_failed");
    cr_assert_eq(re.calls, 0);
    cr_assert_eq(re.replayed, 2);
    run_free(&re);
    run_free(&r);
    dsl_graph_unref(g);
}

Test(replay, map_of_20_with_max_concurrency)
{
    /* later calls faster: items end out of order */
    ET.prov.latency_ms = 40;
    ET.prov.latency_step = -2;
    dsl_graph *g = et_compile(HDR "do: { map: { over: '{{ input }}', max_concurrency: 4, index_as: i,\n"
                                  "  do: { chain: [ { call: 'item {{ item }}' }, { lambda: { fn: t.echo, args: { i: '{{ i }}' } } } ] } } }\n");
    const char *in = "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19]";
    run_t first = { 0 };
    check_full(g, in, &first);
    cr_assert_eq(first.calls, 20);
    cr_assert_eq(first.nck, 40);
    /* the records of items 0..9 (their chains are under "#0".."#9") */
    json_t *sub = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(first.recs, k, v) {
        json_t *o = json_object_get(v, "output");
        json_t *item = json_is_string(o) ? NULL : json_object_get(json_object_get(o, "args"), "i");
        const char *s = json_string_value(o);
        long n = item ? (long)json_integer_value(item) : s ? strtol(s + 5, NULL, 10) : -1;
        if (n >= 0 && n < 10)
            json_object_set(sub, k, v);
    }
    cr_assert_eq(json_object_size(sub), 20);
    check_subset(g, in, &first, sub, 10);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, parallel_branches)
{
    dsl_graph *g = et_compile(HDR "do: { parallel: { a: { call: 'a {{ input }}' },\n"
                                  "  b: { chain: [ { call: b }, { lambda: t.noop } ] }, c: { lambda: t.inc },\n"
                                  "  d: { embed: 'e {{ input }}' } } }\n");
    run_t first = { 0 };
    check_full(g, "1", &first);
    cr_assert_eq(first.calls, 3);
    cr_assert_eq(first.nck, 5);
    json_t *sub = keys_with(first.recs, "parallel.b", false); /* branch b runs again */
    check_subset(g, "1", &first, sub, 1);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

/* A plurality tie goes to the answer seen first. The samples end in the
 * reverse of their order, so only the records' seq tells a replay that B
 * came first; the replay is also handed its records in reverse seq order. */
Test(replay, vote_sees_first_arrival_order)
{
    static const char *const script[] = { "A", "B", "A", "B", "C", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 60;
    ET.prov.latency_step = -10;
    dsl_graph *g = et_compile(HDR "do: { vote: { n: 5, strategy: plurality, do: { call: q } } }\n");
    run_t first = { 0 };
    check_full(g, "1", &first);
    cr_assert_str_eq(json_string_value(json_object_get(first.r.output, "winner")), "B");
    char *s = dump(json_object_get(first.r.output, "tally"));
    cr_assert_str_eq(s, "{\"C\":1,\"B\":2,\"A\":2}");
    free(s);
    json_t *rev = json_object();
    for (json_int_t q = first.nck - 1; q >= 0; q--) {
        const char *k;
        json_t *v;
        json_object_foreach(first.recs, k, v) if (seq_of(v) == q) json_object_set(rev, k, v);
    }
    run_t re = { 0 };
    ET.prov.script = NULL; /* a call now would answer "q" */
    run_wf(&re, g, "1", rev);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    json_decref(rev);
    run_free(&first);
    dsl_graph_unref(g);
}

/* The samples still running when the first run's vote stopped were
 * cancelled, unrecorded: a replay decides before starting them. */
Test(replay, vote_early_stop_starts_nothing)
{
    static const char *const script[] = { "A", "A", "A", "B", "B", NULL };
    ET.prov.script = script;
    ET.prov.latency_ms = 10;
    ET.prov.latency_step = 10;
    dsl_graph *g = et_compile(HDR "do: { vote: { n: 5, do: { call: q } } }\n");
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    cr_assert_eq(json_integer_value(json_object_get(first.r.output, "votes")), 3);
    cr_assert_eq(first.nck, 3);
    cr_assert_eq(ET.prov.cancelled, 2);
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, vote_with_judge)
{
    static const char *const script[] = { "A", "B", "A", NULL };
    ET.prov.script = script;
    dsl_graph *g = et_compile(HDR "do: { vote: { n: 3, strategy: { judge: { lambda: { fn: t.noop, input: '{{ candidates[1] }}' } } }, do: { call: q } } }\n");
    run_t first = { 0 };
    check_full(g, "1", &first);
    cr_assert_str_eq(json_string_value(json_object_get(first.r.output, "winner")), "B");
    cr_assert_eq(first.nck, 4);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, route_on_a_call)
{
    static const char *const script[] = { "yes", "answer", NULL };
    static const char *const other[] = { "no", NULL };
    static const char *const second[] = { "answer", NULL };
    ET.prov.script = script;
    dsl_graph *g = et_compile(HDR "do: { route: { on: { call: pick }, cases: { yes: { call: 'y {{ input }}' }, no: { lambda: t.inc } } } }\n");
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    cr_assert_str_eq(json_string_value(first.r.output), "answer");
    cr_assert_eq(first.nck, 2);
    /* a live `on` would now pick "no": the recorded decision stands */
    ET.prov.script = other;
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    /* only `on` recorded: the case runs, the same one */
    ET.prov.script = second;
    json_t *sub = first_n(first.recs, 1);
    check_subset(g, "1", &first, sub, 1);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, retry_then_success_keeps_attempts)
{
    ET.prov.fail_first = 2;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    dsl_graph *g = et_compile(HDR "do: { chain: [ { id: x, call: q, retry: { max_attempts: 3, initial_delay: 1ms } },\n"
                                  "  { lambda: { fn: t.echo, args: { n: '{{ steps.x.attempts }}' } } } ] }\n");
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    cr_assert_eq(first.calls, 3);
    cr_assert_eq(first.nck, 2); /* the failed attempts are not recorded */
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(first.r.output, "args"), "n")), 3);
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, fallback_and_its_failure)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    dsl_graph *g = et_compile(HDR "do: { chain: [ { id: m, call: main, retry: { max_attempts: 1 },\n"
                                  "    fallback: { call: 'fb {{ error.code }}' } },\n"
                                  "  { lambda: { fn: t.echo, args: { m: '{{ steps.m.output }}', e: '{{ steps.m.error.code }}' } } },\n"
                                  "  { lambda: t.fail, fallback: { lambda: t.noop } } ] }\n");
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    cr_assert(first.r.output, "%s", dump(first.r.error));
    cr_assert_eq(first.calls, 2);
    cr_assert_eq(first.lambdas, 1);
    cr_assert_eq(first.nck, 5); /* main (failed), its fallback, echo, t.fail (failed), noop */
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    cr_assert_eq(re.lambdas, 0);
    cr_assert_eq(re.nck, 0);
    run_free(&re);
    /* only the main call's failure recorded: its fallback runs, not it */
    ET.prov.fail_first = 0;
    json_t *sub = first_n(first.recs, 1);
    cr_assert(json_object_get(json_object_iter_value(json_object_iter(sub)), "error"));
    check_subset(g, "1", &first, sub, 1);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

/* A chain retried as a whole runs its steps again: new keys, not the old. */
Test(replay, composite_retry_gets_new_keys)
{
    ET.prov.fail_first = 1;
    ET.prov.fail_code = LOOM_E_UPSTREAM;
    dsl_graph *g = et_compile(HDR "do: { chain: [ { lambda: t.inc }, { call: '{{ prev }}', retry: { max_attempts: 1 } } ],\n"
                                  "  retry: { max_attempts: 2, initial_delay: 1ms } }\n");
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    cr_assert_str_eq(json_string_value(first.r.output), "2");
    cr_assert_eq(first.calls, 2);
    cr_assert_eq(first.nck, 4); /* inc, call (failed), inc again, call */
    json_t *again = keys_with(first.recs, "@2", true);
    cr_assert_eq(json_object_size(again), 2);
    json_decref(again);
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    cr_assert_eq(re.nck, 0);
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
}

static dsl_graph *lookup_sub(void *ud, const char *name)
{
    return strcmp(name, "sub") == 0 ? ud : NULL;
}

Test(replay, use_of_another_workflow)
{
    dsl_graph *sub = et_compile("loom: 1\nname: sub\ninput: { n: integer }\n"
                                "do: { chain: [ { call: 's {{ input.n }}' }, { lambda: t.noop } ] }\n");
    engine_set_workflow_lookup(ET.eng, lookup_sub, sub);
    const char *const wfs[] = { "sub", NULL };
    dsl_graph *g = compile_uses(HDR "do: { chain: [ { use: { workflow: sub, input: { n: '{{ input }}' } } },\n"
                                    "  { use: { workflow: sub, input: { n: 7 } } }, { call: 'end {{ prev }}' } ] }\n", wfs);
    run_t first = { 0 };
    check_full(g, "1", &first);
    cr_assert_eq(first.nck, 5);
    json_t *inside = keys_with(first.recs, ">sub:", true);
    cr_assert_eq(json_object_size(inside), 4);
    json_decref(inside);
    /* the first `use` recorded: the second one and the last call run */
    json_t *subset = first_n(first.recs, 2);
    check_subset(g, "1", &first, subset, 2);
    json_decref(subset);
    /* a new version of `sub` does not replay the old one's steps */
    dsl_graph *sub2 = et_compile("loom: 1\nname: sub\ninput: { n: integer }\n"
                                 "do: { chain: [ { call: 's {{ input.n }}' }, { lambda: t.noop } ] }\n# v2\n");
    engine_set_workflow_lookup(ET.eng, lookup_sub, sub2);
    run_t re = { 0 };
    run_wf(&re, g, "1", first.recs);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 2);
    cr_assert_eq(re.replayed, 1);
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
    dsl_graph_unref(sub);
    dsl_graph_unref(sub2);
}

Test(replay, lambdas_on_the_pool_and_inline)
{
    dsl_graph *g = et_compile(HDR "do: { map: { over: '{{ input }}', do: { chain: [ { lambda: t.inc },\n"
                                  "  { lambda: { fn: t.slow, args: { ms: 1 } } }, { lambda: t.inc, cache: true } ] } } }\n");
    run_t first = { 0 };
    check_full(g, "[1,2,3]", &first);
    cr_assert_eq(first.lambdas, 3);
    cr_assert_eq(first.nck, 9);
    json_t *sub = keys_with(first.recs, "[1]", false); /* every t.slow runs again */
    check_subset(g, "[1,2,3]", &first, sub, 0);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

/* ---- keys and odd replays */

Test(replay, unknown_keys_and_bad_records_are_ignored)
{
    dsl_graph *g = et_compile(chain_wf);
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    json_t *rp = json_deep_copy(first.recs);
    json_object_set_new(rp, "no such step", json_pack("{s:s, s:i}", "output", "junk", "seq", 0));
    json_object_set_new(rp, "", json_pack("{s:i}", "output", 1));
    /* a value that is not a record: that step runs */
    const char *k;
    json_t *v;
    json_object_foreach(first.recs, k, v) if (seq_of(v) == 0) json_object_set_new(rp, k, json_string("x"));
    run_wf(&re, g, "1", rp);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 1);
    cr_assert_eq(re.nck, 1);
    run_free(&re);
    /* records without seq still replay, in their leaves' start order */
    json_t *noseq = json_object();
    json_object_foreach(first.recs, k, v) {
        json_t *c = json_copy(v);
        json_object_del(c, "seq");
        json_object_set_new(noseq, k, c);
    }
    run_wf(&re, g, "1", noseq);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    /* not an object: no replay */
    json_t *arr = json_array();
    run_wf(&re, g, "1", arr);
    cr_assert_eq(re.calls, 4);
    run_free(&re);
    json_decref(arr);
    json_decref(noseq);
    json_decref(rp);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, seq_continues_after_replayed_records)
{
    dsl_graph *g = et_compile(chain_wf);
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    json_t *sub = first_n(first.recs, 3);
    run_wf(&re, g, "1", sub);
    const char *k;
    json_t *v;
    json_object_foreach(re.recs, k, v) cr_assert_geq(seq_of(v), 3);
    run_free(&re);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, caller_may_drop_replay_after_submit)
{
    dsl_graph *g = et_compile(chain_wf);
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    json_t *rp = json_deep_copy(first.recs);
    run_start(&re, g, "1", rp);
    json_decref(rp);
    run_finish(&re);
    same_output(&first, &re);
    cr_assert_eq(re.calls, 0);
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
}

/* ---- cancel */

Test(replay, cancel_inside_replay_is_clean)
{
    ET.prov.latency_ms = 5;
    dsl_graph *g = et_compile(HDR "do: { map: { over: '{{ input }}', max_concurrency: 8, do: { chain: [ { call: 'i {{ item }}' }, { lambda: { fn: t.slow, args: { ms: 1 } } } ] } } }\n");
    const char *in = "[0,1,2,3,4,5,6,7,8,9,10,11]";
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, in, NULL);
    cr_assert(first.r.output);
    /* every step recorded: cancelled from a replayed step's trace event */
    re.cancel_at = 5;
    run_wf(&re, g, in, first.recs);
    cr_assert_str_eq(et_code(&re.r), "cancelled");
    cr_assert_eq(re.calls, 0);
    cr_assert_eq(re.replayed, 5);
    cr_assert_eq(engine_job_count(ET.eng), 0);
    run_free(&re);
    /* half recorded: cancelled from outside while live calls are in flight
     * and recorded steps of later items are still to come */
    json_t *half = first_n(first.recs, 12);
    re.cancel_at = 0;
    ET.prov.latency_ms = 5000;
    run_start(&re, g, in, half);
    while (ET.prov.inflight == 0 && !re.r.done)
        reactor_run_once(ET.r, 5);
    engine_cancel(re.job);
    run_finish(&re);
    cr_assert_str_eq(et_code(&re.r), "cancelled");
    cr_assert_eq(ET.prov.inflight, 0);
    cr_assert_gt(ET.prov.cancelled, 0);
    cr_assert_eq(engine_job_count(ET.eng), 0);
    run_free(&re);
    json_decref(half);
    run_free(&first);
    dsl_graph_unref(g);
}

Test(replay, engine_free_before_a_replayed_job_starts)
{
    dsl_graph *g = et_compile(chain_wf);
    run_t first = { 0 }, re = { 0 };
    run_wf(&first, g, "1", NULL);
    run_start(&re, g, "1", first.recs);
    engine_free(ET.eng); /* before the job's first pass */
    ET.eng = NULL;
    cr_assert(re.r.done);
    cr_assert_str_eq(et_code(&re.r), "cancelled");
    run_free(&re);
    run_free(&first);
    dsl_graph_unref(g);
}

/* ---- loops: iteration I's leaves are keyed `N#I` below the loop */

/* Each iteration: a call and a lambda in the body, a call as the until
 * node (the echo says "true" once the iteration is the sixth). A replay
 * with the records of the first iterations -- whole, or ending inside an
 * iteration -- runs only what comes after them, and each iteration's
 * prompt still sees the previous iteration's output. */
Test(replay, loop_resumes_at_the_iteration_it_was_in)
{
    dsl_graph *g = et_compile(HDR "do: { loop: { max_iterations: 10,\n"
                                  "  do: { chain: [ { call: 'rev {{ loop.iteration }} <- {{ loop.previous }}' },\n"
                                  "    { lambda: { fn: t.echo, args: { i: '{{ loop.iteration }}' } }, output: '{{ output.input }}' } ] },\n"
                                  "  until: { call: '{{ loop.iteration | eq(6) }}' } } }\n");
    run_t first = { 0 };
    check_full(g, NULL, &first);
    cr_assert_eq(first.calls, 12);
    cr_assert_eq(first.nck, 18);
    cr_assert(strstr(json_string_value(first.r.output), "rev 6 <- rev 5 <- rev 4"), "%s",
              json_string_value(first.r.output));
    /* node 1 is the body's chain, 2 its call, 4 the until node */
    const char *k;
    json_t *v;
    int body5 = 0, until6 = 0;
    json_object_foreach(first.recs, k, v) {
        body5 += strstr(k, "/1#5/2 do.loop.do.chain[0]") != NULL;
        until6 += strstr(k, "/4#6 do.loop.until") != NULL;
    }
    cr_assert_eq(body5, 1, "no key for iteration 5's call");
    cr_assert_eq(until6, 1, "no key for iteration 6's until node");
    /* four whole iterations recorded: iterations 5 and 6 run (4 calls) */
    json_t *sub = first_n(first.recs, 3 * 4);
    check_subset(g, NULL, &first, sub, 4);
    json_decref(sub);
    /* killed inside iteration 5, after its call: its until node and
     * iteration 6 run (3 calls) */
    sub = first_n(first.recs, 3 * 4 + 1);
    check_subset(g, NULL, &first, sub, 3);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}

/* A crash may come after any checkpoint of a loop: from every proper
 * prefix of the first run's records, the resumed run makes only the calls
 * the prefix lacks and answers the same. Each iteration writes its call,
 * its lambda and its until node's call, in that order. */
Test(replay, loop_resumes_after_every_checkpoint)
{
    dsl_graph *g = et_compile(HDR "do: { loop: { max_iterations: 10,\n"
                                  "  do: { chain: [ { call: 'rev {{ loop.iteration }} <- {{ loop.previous }}' },\n"
                                  "    { lambda: { fn: t.echo, args: { i: '{{ loop.iteration }}' } }, output: '{{ output.input }}' } ] },\n"
                                  "  until: { call: '{{ loop.iteration | eq(4) }}' } } }\n");
    run_t first = { 0 };
    check_full(g, NULL, &first);
    cr_assert_eq(first.calls, 8);
    cr_assert_eq(first.nck, 12);
    for (int k = 1; k < first.nck; k++) {
        json_t *sub = first_n(first.recs, (size_t)k);
        int calls_kept = 2 * (k / 3) + (k % 3 > 0);
        check_subset(g, NULL, &first, sub, first.calls - calls_kept);
        json_decref(sub);
    }
    run_free(&first);
    dsl_graph_unref(g);
}

/* A loop inside a map item: the key holds both instances (the item, then
 * the iteration), so items' iterations never share a record. */
Test(replay, loop_inside_a_map)
{
    dsl_graph *g = et_compile(HDR "do: { map: { over: '{{ input }}', max_concurrency: 2, do: {\n"
                                  "  loop: { max_iterations: 3, collect: true,\n"
                                  "    do: { call: 'item {{ item }} round {{ loop.iteration }}' } } } } }\n");
    run_t first = { 0 };
    check_full(g, "[1,2]", &first);
    cr_assert_eq(first.calls, 6);
    cr_assert_eq(first.nck, 6);
    json_t *sub = keys_with(first.recs, "/1#1/", true); /* item 1 (the second): all its rounds */
    cr_assert_eq(json_object_size(sub), 3);
    check_subset(g, "[1,2]", &first, sub, 3);
    json_decref(sub);
    run_free(&first);
    dsl_graph_unref(g);
}
