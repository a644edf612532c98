/* test_compile_batch.c -- the batch keys of calls, embeds and maps: what
 * they compile to, how a map's keys reach the leaves of its body, what the
 * JSON document shows, and the errors of each key written wrong. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

#define HDR "loom: 1\nname: t\n"

/* jansson's is-macros expand to expressions Criterion cannot print */
static bool truth(bool b) { return b; }

static tu_result *ok(const char *text)
{
    tu_result *r = tu_compile(text, NULL);
    cr_assert(r->nlines == 0, "unexpected diagnostics:\n%s", tu_dump(r));
    cr_assert(r->graph != NULL);
    return r;
}

static void bad(const char *text, const char *want)
{
    tu_result *r = tu_compile(text, NULL);
    cr_assert(r->graph == NULL, "compiled although it should not have");
    cr_assert(tu_has(r, want), "want '%s', got:\n%s", want, tu_dump(r));
    tu_result_free(r);
}

static const dsl_node *at_path(const dsl_graph *g, const char *path)
{
    for (size_t i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i]->path, path) == 0)
            return g->nodes[i];
    cr_assert_fail("no node at path '%s'", path);
    return NULL;
}

Test(compile_batch, call_keys)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  call:\n"
        "    prompt: hi\n"
        "    mode: batch\n"
        "    batch_window: 2m\n"
        "    deadline: 24h\n"
        "    fallback_direct: true\n");
    const dsl_batch *b = &r->graph->root->u.call.batch;
    cr_assert_eq(b->mode, DSL_MODE_BATCH);
    cr_assert_eq(b->window_ms, 120000u);
    cr_assert_eq(b->deadline_ms, 24u * 3600 * 1000);
    cr_assert(b->has_fallback_direct && b->fallback_direct);
    tu_result_free(r);
}

Test(compile_batch, unset_by_default)
{
    tu_result *r = ok(HDR "do:\n  call: hi\n");
    const dsl_batch *b = &r->graph->root->u.call.batch;
    cr_assert_eq(b->mode, DSL_MODE_UNSET);
    cr_assert_eq(b->window_ms, 0u);
    cr_assert_eq(b->deadline_ms, 0u);
    cr_assert(!b->has_fallback_direct);
    json_t *doc = dsl_emit_json(r->graph);
    cr_assert(doc);
    /* a workflow that says nothing of batches has the document it had */
    cr_assert(json_object_get(doc, "root"));
    cr_assert_null(json_object_get(json_object_get(doc, "root"), "batch"));
    json_decref(doc);
    tu_result_free(r);
}

Test(compile_batch, embed_keys)
{
    tu_result *r = ok(HDR "do:\n  embed: { input: hi, mode: direct }\n");
    cr_assert_eq(r->graph->root->u.embed.batch.mode, DSL_MODE_DIRECT);
    tu_result_free(r);
}

/* The nearest map wins key by key; a leaf's own key wins over every map. */
Test(compile_batch, map_keys_reach_the_leaves)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  map:\n"
        "    over: \"{{ input.groups }}\"\n"
        "    mode: batch\n"
        "    batch_window: 10s\n"
        "    fallback_direct: true\n"
        "    do:\n"
        "      map:\n"
        "        over: \"{{ item }}\"\n"
        "        batch_window: 3s\n"
        "        do:\n"
        "          chain:\n"
        "            - call: \"a {{ item }}\"\n"
        "            - call: { prompt: b, mode: direct }\n"
        "            - embed: { input: c, deadline: 1h, fallback_direct: false }\n");
    const dsl_graph *g = r->graph;
    const dsl_batch *a = &at_path(g, "do.map.do.map.do.chain[0]")->u.call.batch;
    cr_assert_eq(a->mode, DSL_MODE_BATCH);
    cr_assert_eq(a->window_ms, 3000u, "the inner map's window, not the outer's");
    cr_assert_eq(a->deadline_ms, 0u);
    cr_assert(a->has_fallback_direct && a->fallback_direct);
    const dsl_batch *b = &at_path(g, "do.map.do.map.do.chain[1]")->u.call.batch;
    cr_assert_eq(b->mode, DSL_MODE_DIRECT);
    const dsl_batch *c = &at_path(g, "do.map.do.map.do.chain[2]")->u.embed.batch;
    cr_assert_eq(c->mode, DSL_MODE_BATCH);
    cr_assert_eq(c->deadline_ms, 3600000u);
    cr_assert(c->has_fallback_direct && !c->fallback_direct);
    /* the maps keep what they said themselves */
    const dsl_batch *inner = &at_path(g, "do.map.do")->u.map.batch;
    cr_assert_eq(inner->mode, DSL_MODE_UNSET);
    cr_assert_eq(inner->window_ms, 3000u);
    tu_result_free(r);
}

Test(compile_batch, document_shows_them)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  map:\n"
        "    over: \"{{ input.xs }}\"\n"
        "    mode: batch\n"
        "    deadline: 24h\n"
        "    do:\n"
        "      call: \"{{ item }}\"\n");
    json_t *doc = dsl_emit_json(r->graph);
    cr_assert(doc);
    json_t *map = json_object_get(doc, "root");
    json_t *mb = json_object_get(map, "batch");
    cr_assert_str_eq(json_string_value(json_object_get(mb, "mode")), "batch");
    cr_assert_eq(json_integer_value(json_object_get(mb, "deadline_ms")), 86400000);
    cr_assert(truth(json_is_null(json_object_get(mb, "batch_window_ms"))));
    cr_assert(truth(json_is_null(json_object_get(mb, "fallback_direct"))));
    json_t *cb = json_object_get(json_object_get(map, "do"), "batch");
    cr_assert_str_eq(json_string_value(json_object_get(cb, "mode")), "batch",
                     "the leaf shows what it runs with: %s", json_dumps(map, 0));
    cr_assert_eq(json_integer_value(json_object_get(cb, "deadline_ms")), 86400000);
    json_decref(doc);
    tu_result_free(r);
}

Test(compile_batch, errors)
{
    bad(HDR "do:\n  call: { prompt: hi, mode: bach }\n",
        "4:29: error: unknown mode 'bach' (use batch or direct); did you mean 'batch'?");
    bad(HDR "do:\n  call: { prompt: hi, mode: 3 }\n",
        "4:29: error: 'mode' must be a string, got a number");
    bad(HDR "do:\n  call: { prompt: hi, batch_window: soon }\n",
        "4:37: error: invalid duration 'soon' for 'batch_window': expected a number; e.g. 500ms, 30s, 2m");
    bad(HDR "do:\n  call: { prompt: hi, deadline: 0s }\n",
        "4:33: error: 'deadline' must be longer than 0 (leave it out for the provider's)");
    bad(HDR "do:\n  embed: { input: hi, fallback_direct: maybe }\n",
        "4:40: error: 'fallback_direct' must be true or false, got a string");
    bad(HDR "do:\n  call: { prompt: hi, mode: direct, batch_window: 1m }\n",
        "4:51: error: 'batch_window' has no effect on a call with 'mode: direct'; drop one of "
        "them");
    bad(HDR "do:\n  map: { over: \"{{ input }}\", mode: direct, deadline: 1h, do: { call: x } }\n",
        "4:55: error: 'deadline' has no effect on a map with 'mode: direct'; drop one of them");
    bad(HDR "do:\n  call: { prompt: hi, mde: batch }\n",
        "4:23: error: unknown key 'mde' in call; did you mean 'mode'?");
    bad(HDR
        "do:\n"
        "  call:\n"
        "    prompt: hi\n"
        "    mode: batch\n"
        "    tools: [{ lambda: std.trim }]\n",
        "6:11: error: a call with tools cannot run in batch mode: each turn needs the answer to "
        "the one before");
}
