/* test_compile.c -- the compiler on valid workflows.
 *
 * Every node kind is compiled from a small workflow and checked twice: in the
 * graph's C structs, field by field (kind, index, id, path, position, parent,
 * map depth, timeouts, retry policy, parameters, templates and what their
 * `steps.X` references resolve to), and in the JSON document dsl_emit_json
 * makes of the graph, which is what `loomctl graph` shows a user. Then come
 * the workflow-wide rules: defaults, durations, template roots and
 * visibility, node numbering, versions, reference counts, `use` across
 * files, and names checked against a registry.
 *
 * Workflows are written as C strings, one YAML line per string, with the
 * line number in a comment where a test asserts a position. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

#define BIT(c) (1u << (c))
#define DEFAULT_ON (BIT(DSL_ERR_TIMEOUT) | BIT(DSL_ERR_RATE_LIMITED) | BIT(DSL_ERR_UPSTREAM))

/* ---- helpers ---- */

/* A plain truth value, for conditions the assertion macros cannot take as
 * they are (negations, jansson's macros). */
static int yes(int x)
{
    return x != 0;
}

/* Compiles TEXT and requires a graph and no diagnostic at all. */
static tu_result *compile_ok_opt(const char *text, const dsl_options *opt)
{
    tu_result *r = tu_compile(text, opt);
    cr_assert(r->nlines == 0, "unexpected diagnostics:\n%s", tu_dump(r));
    cr_assert(r->graph != NULL, "no graph and no diagnostic");
    return r;
}

static tu_result *compile_ok(const char *text)
{
    return compile_ok_opt(text, NULL);
}

/* As compile_ok, but a failure does not end the test (the caller checks
 * r->graph), so the result is still freed. */
static tu_result *compile_expect_ok(const char *text)
{
    tu_result *r = tu_compile(text, NULL);
    cr_expect(r->nlines == 0 && r->graph != NULL, "unexpected diagnostics:\n%s", tu_dump(r));
    return r;
}

/* The node at PATH (as dsl_node.path spells it). */
static const dsl_node *at_path(const dsl_graph *g, const char *path)
{
    for (size_t i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i]->path, path) == 0)
            return g->nodes[i];
    cr_fatal("no node at path '%s'", path);
    return NULL;
}

/* The node whose id is ID. */
static const dsl_node *by_id(const dsl_graph *g, const char *id)
{
    for (size_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i]->id && strcmp(g->nodes[i]->id, id) == 0)
            return g->nodes[i];
    cr_fatal("no node with id '%s'", id);
    return NULL;
}

/* The template of a template value. */
static const dsl_template *tv_tpl(const dsl_tvalue *tv)
{
    cr_assert(tv != NULL, "template value missing");
    cr_assert(eq(int, tv->kind, DSL_TV_TEMPLATE), "value is not a template");
    cr_assert(tv->tpl != NULL);
    return tv->tpl;
}

/* The K-th expression (0-based, text parts skipped) of T. */
static const dsl_expr *expr_at(const dsl_template *t, size_t k)
{
    cr_assert(t != NULL);
    for (size_t i = 0; i < t->nparts; i++)
        if (t->parts[i].expr && k-- == 0)
            return t->parts[i].expr;
    cr_fatal("template '%s' has too few expressions", t->source);
    return NULL;
}

/* Parses the expected JSON, written with ' for " so the C strings stay readable. */
static json_t *jparse(const char *text)
{
    char *s = strdup(text);
    cr_assert(s != NULL);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &e);
    cr_assert(v != NULL, "bad expected JSON (%s): %s", e.text, s);
    free(s);
    return v;
}

static char *jdump(const json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
    return s ? s : strdup("(none)");
}

/* GOT must equal the JSON WANT exactly. */
static void json_is(const json_t *got, const char *want, const char *what)
{
    json_t *w = jparse(want);
    if (!got || !json_equal(got, w)) {
        char *g = jdump(got), *x = jdump(w);
        cr_fail("%s:\n  got  %s\n  want %s", what, g, x);
        free(g);
        free(x);
    }
    json_decref(w);
}

/* Every key of the JSON object WANT must be in GOT with an equal value. */
static void json_has(const json_t *got, const char *want, const char *what)
{
    json_t *w = jparse(want);
    const char *k;
    json_t *v;
    cr_assert(yes(json_is_object(got)), "%s: not an object", what);
    json_object_foreach(w, k, v) {
        json_t *gv = json_object_get(got, k);
        if (!gv || !json_equal(gv, v)) {
            char *g = jdump(gv), *x = jdump(v);
            cr_fail("%s, key '%s':\n  got  %s\n  want %s", what, k, g, x);
            free(g);
            free(x);
        }
    }
    json_decref(w);
}

/* The JSON object of the node numbered INDEX anywhere in DOC (borrowed). */
static json_t *find_index(json_t *v, json_int_t index)
{
    if (json_is_object(v)) {
        json_t *ix = json_object_get(v, "index");
        if (json_is_integer(ix) && json_object_get(v, "path") && json_integer_value(ix) == index)
            return v;
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) {
            json_t *f = find_index(c, index);
            if (f)
                return f;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) {
            json_t *f = find_index(c, index);
            if (f)
                return f;
        }
    }
    return NULL;
}

static json_t *jnode(json_t *doc, const dsl_node *n)
{
    json_t *o = find_index(json_object_get(doc, "root"), n->index);
    cr_assert(o != NULL, "node %u is not in the JSON document", n->index);
    return o;
}

static json_t *emit(const dsl_graph *g)
{
    json_t *doc = dsl_emit_json(g);
    cr_assert(doc != NULL, "dsl_emit_json failed");
    return doc;
}

static void expect_retry(const dsl_retry *r, int max, uint64_t initial, double mult,
                         uint64_t max_delay, uint32_t on)
{
    cr_assert(r != NULL, "no retry policy");
    cr_expect(eq(int, r->max_attempts, max));
    cr_expect(eq(u64, r->initial_delay_ms, initial));
    cr_expect(r->multiplier == mult, "multiplier %g, want %g", r->multiplier, mult);
    cr_expect(eq(u64, r->max_delay_ms, max_delay));
    cr_expect(eq(u32, r->on, on));
}

/* The common fields of a node. */
static void expect_node(const dsl_node *n, dsl_kind kind, const char *path, int line, int col,
                        const dsl_node *parent, uint32_t map_depth)
{
    cr_assert(n != NULL);
    cr_expect(eq(int, n->kind, kind), "kind of %s", path);
    cr_expect(eq(str, (char *)n->path, (char *)path));
    cr_expect(eq(int, n->line, line), "line of %s", path);
    cr_expect(eq(int, n->col, col), "col of %s", path);
    cr_expect(eq(ptr, (void *)n->parent, (void *)parent), "parent of %s", path);
    cr_expect(eq(u32, n->map_depth, map_depth), "map_depth of %s", path);
}

#define DEFAULT_RETRY_JSON                                                                  \
    "{'max_attempts': 1, 'initial_delay_ms': 500, 'multiplier': 2.0, 'max_delay_ms': 30000," \
    " 'on': ['timeout', 'rate_limited', 'upstream']}"

/* ---- call ---- */

Test(call, full_long_form)
{
    tu_result *r = compile_ok(
        "loom: 1\n"                                                   /* 1 */
        "name: t\n"                                                   /* 2 */
        "vars: { role: helper }\n"                                    /* 3 */
        "defaults: { provider: base, model: m0, timeout: 10s, temperature: 0.2, max_tokens: 50 }\n"
        "do:\n"                                                       /* 5 */
        "  id: ask\n"                                                 /* 6 */
        "  description: asks\n"                                       /* 7 */
        "  timeout: 2m\n"                                             /* 8 */
        "  retry: { max_attempts: 4, on: [timeout, quota] }\n"        /* 9 */
        "  cache: true\n"                                             /* 10 */
        "  output: { answer: \"{{ output }}\", n: 1 }\n"              /* 11 */
        "  call:\n"                                                   /* 12 */
        "    provider: openai\n"                                      /* 13 */
        "    model: gpt-x\n"                                          /* 14 */
        "    system: \"You are {{ vars.role }}.\"\n"                  /* 15 */
        "    prompt: \"{{ input.q }}\"\n"                             /* 16 */
        "    temperature: 0.7\n"                                      /* 17 */
        "    top_p: 0.9\n"                                            /* 18 */
        "    stop: END\n"                                             /* 19 */
        "    seed: 42\n"                                              /* 20 */
        "    json: true\n"                                            /* 21 */
        "    input: \"{{ input }}\"\n");                              /* 22 */
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    cr_assert(eq(sz, g->nnodes, 1));
    expect_node(n, DSL_CALL, "do", 6, 3, NULL, 0);
    cr_expect(eq(u32, n->index, 0));
    cr_expect(eq(str, (char *)n->id, "ask"));
    cr_expect(eq(str, (char *)n->description, "asks"));
    cr_expect(eq(u64, n->timeout_ms, 120000));
    cr_expect(n->cache);
    cr_expect(n->fallback == NULL);
    /* field-wise over the defaults: max_attempts and on from the node */
    cr_expect(n->retry != &g->defaults.retry);
    expect_retry(n->retry, 4, 500, 2.0, 30000, BIT(DSL_ERR_TIMEOUT) | BIT(DSL_ERR_QUOTA));

    const dsl_call *c = &n->u.call;
    cr_expect(eq(str, (char *)c->provider, "openai"));
    cr_expect(eq(str, (char *)c->model, "gpt-x"));
    cr_expect(c->json);
    cr_expect(c->messages == NULL && c->nmessages == 0);

    const dsl_template *sys = tv_tpl(c->system);
    cr_expect(eq(int, c->system->line, 15));
    cr_expect(eq(int, c->system->col, 13));
    cr_expect(eq(sz, sys->nparts, 3));
    cr_expect(not(sys->whole));
    cr_expect(eq(str, sys->parts[0].text, "You are "));
    cr_expect(eq(str, sys->parts[2].text, "."));
    const dsl_expr *e = expr_at(sys, 0);
    cr_expect(eq(str, e->root, "vars"));
    cr_expect(eq(int, e->root_kind, DSL_ROOT_VARS));
    cr_expect(eq(sz, e->nsegs, 1));
    cr_expect(eq(str, e->segs[0].name, "role"));

    const dsl_template *p = tv_tpl(c->prompt);
    cr_expect(p->whole);
    cr_expect(eq(sz, p->nparts, 1));
    cr_expect(eq(int, expr_at(p, 0)->root_kind, DSL_ROOT_INPUT));
    cr_expect(eq(str, p->source, "{{ input.q }}"));

    const dsl_template *in = tv_tpl(c->input);
    cr_expect(in->whole);
    cr_expect(eq(sz, expr_at(in, 0)->nsegs, 0));
    cr_expect(eq(int, expr_at(in, 0)->root_kind, DSL_ROOT_INPUT));

    /* node params over the default params */
    json_is(c->params,
            "{'temperature': 0.7, 'max_tokens': 50, 'top_p': 0.9, 'stop': ['END'], 'seed': 42}",
            "call params");

    /* output: an object with one template and one constant */
    cr_assert(n->output != NULL);
    cr_expect(eq(int, n->output->kind, DSL_TV_OBJECT));
    cr_assert(eq(sz, n->output->n, 2));
    cr_expect(eq(str, n->output->keys[0], "answer"));
    cr_expect(eq(int, expr_at(tv_tpl(n->output->items[0]), 0)->root_kind, DSL_ROOT_OUTPUT));
    cr_expect(eq(int, n->output->items[1]->kind, DSL_TV_CONST));
    json_is(n->output->items[1]->constant, "1", "output.n");

    json_t *doc = emit(g);
    json_is(jnode(doc, n),
            "{'index': 0, 'kind': 'call', 'id': 'ask', 'path': 'do', 'line': 6, 'col': 3,"
            " 'description': 'asks', 'timeout_ms': 120000,"
            " 'retry': {'max_attempts': 4, 'initial_delay_ms': 500, 'multiplier': 2.0,"
            "           'max_delay_ms': 30000, 'on': ['timeout', 'quota']},"
            " 'cache': true, 'output': {'answer': '{{ output }}', 'n': 1},"
            " 'provider': 'openai', 'model': 'gpt-x', 'system': 'You are {{ vars.role }}.',"
            " 'prompt': '{{ input.q }}',"
            " 'params': {'temperature': 0.7, 'max_tokens': 50, 'top_p': 0.9, 'stop': ['END'], 'seed': 42},"
            " 'json': true, 'input': '{{ input }}'}",
            "call node JSON");
    json_decref(doc);
    tu_result_free(r);
}

Test(call, shorthand)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  call: \"Summarise: {{ prev }}\"\n"); /* 4 */
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    expect_node(n, DSL_CALL, "do", 4, 3, NULL, 0);
    cr_expect(n->id == NULL && n->description == NULL && n->output == NULL);
    cr_expect(eq(u64, n->timeout_ms, 0));
    cr_expect(not(n->cache));
    /* a leaf without a policy of its own shares the workflow default */
    cr_expect(eq(ptr, (void *)n->retry, (void *)&g->defaults.retry));
    expect_retry(n->retry, 1, 500, 2.0, 30000, DEFAULT_ON);
    const dsl_call *c = &n->u.call;
    cr_expect(eq(str, (char *)c->provider, "default"));
    cr_expect(c->model == NULL && c->system == NULL && c->input == NULL && c->messages == NULL);
    cr_expect(not(c->json));
    const dsl_template *t = tv_tpl(c->prompt);
    cr_expect(eq(int, c->prompt->line, 4));
    cr_expect(eq(int, c->prompt->col, 9));
    cr_expect(not(t->whole));
    cr_expect(eq(sz, t->nparts, 2));
    cr_expect(eq(str, t->parts[0].text, "Summarise: "));
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_PREV));
    json_is(c->params, "{}", "params");

    json_t *doc = emit(g);
    json_is(jnode(doc, n),
            "{'index': 0, 'kind': 'call', 'path': 'do', 'line': 4, 'col': 3,"
            " 'retry': " DEFAULT_RETRY_JSON ","
            " 'provider': 'default', 'model': null, 'system': null,"
            " 'prompt': 'Summarise: {{ prev }}', 'params': {}, 'json': false, 'input': null}",
            "shorthand call JSON");
    json_decref(doc);
    tu_result_free(r);
}

Test(call, constant_prompt_is_a_constant)
{
    tu_result *r = compile_ok("loom: 1\nname: t\ndo:\n  call: { prompt: Say hi }\n");
    const dsl_call *c = &r->graph->root->u.call;
    cr_assert(c->prompt != NULL);
    cr_expect(eq(int, c->prompt->kind, DSL_TV_CONST));
    json_is(c->prompt->constant, "'Say hi'", "constant prompt");
    tu_result_free(r);
}

Test(call, messages)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  call:\n"                                             /* 4 */
        "    messages:\n"                                       /* 5 */
        "      - { role: system, content: \"Be brief.\" }\n"    /* 6 */
        "      - role: user\n"                                  /* 7 */
        "        content: \"Q: {{ input.q }}\"\n"               /* 8 */
        "      - { role: assistant, content: OK }\n"            /* 9 */
        "    stop: [a, b]\n"
        "    max_tokens: 5\n");
    const dsl_node *n = r->graph->root;
    const dsl_call *c = &n->u.call;
    cr_expect(c->prompt == NULL);
    cr_assert(eq(sz, c->nmessages, 3));
    cr_expect(eq(str, c->messages[0].role, "system"));
    cr_expect(eq(str, c->messages[1].role, "user"));
    cr_expect(eq(str, c->messages[2].role, "assistant"));
    cr_expect(eq(int, c->messages[0].content->kind, DSL_TV_CONST));
    json_is(c->messages[0].content->constant, "'Be brief.'", "message 0");
    const dsl_template *t = tv_tpl(c->messages[1].content);
    cr_expect(eq(int, c->messages[1].content->line, 8));
    cr_expect(eq(int, c->messages[1].content->col, 18));
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_INPUT));
    json_is(c->params, "{'stop': ['a', 'b'], 'max_tokens': 5}", "params");

    json_t *doc = emit(r->graph);
    json_t *o = jnode(doc, n);
    json_has(o,
             "{'messages': [{'role': 'system', 'content': 'Be brief.'},"
             "              {'role': 'user', 'content': 'Q: {{ input.q }}'},"
             "              {'role': 'assistant', 'content': 'OK'}],"
             " 'params': {'stop': ['a', 'b'], 'max_tokens': 5}, 'system': null}",
             "messages JSON");
    cr_expect(json_object_get(o, "prompt") == NULL, "a call with messages shows no prompt");
    json_decref(doc);
    tu_result_free(r);
}

/* ---- embed and lambda ---- */

Test(embed, long_short_and_empty)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "defaults: { provider: p0, model: m0, timeout: 3s }\n"
        "do:\n"
        "  chain:\n"
        "    - embed: { provider: emb, model: e5, input: \"{{ input.texts }}\" }\n" /* 6 */
        "    - embed: {}\n"                                                        /* 7 */
        "    - embed: \"{{ prev }}\"\n");                                          /* 8 */
    const dsl_graph *g = r->graph;
    const dsl_node *a = at_path(g, "do.chain[0]"), *b = at_path(g, "do.chain[1]"),
                   *c = at_path(g, "do.chain[2]");
    expect_node(a, DSL_EMBED, "do.chain[0]", 6, 7, g->root, 0);
    expect_node(b, DSL_EMBED, "do.chain[1]", 7, 7, g->root, 0);
    expect_node(c, DSL_EMBED, "do.chain[2]", 8, 7, g->root, 0);
    cr_expect(eq(str, (char *)a->u.embed.provider, "emb"));
    cr_expect(eq(str, (char *)a->u.embed.model, "e5"));
    cr_expect(tv_tpl(a->u.embed.input)->whole);
    cr_expect(eq(str, (char *)b->u.embed.provider, "p0"));
    cr_expect(eq(str, (char *)b->u.embed.model, "m0"));
    cr_expect(b->u.embed.input == NULL);
    cr_expect(eq(int, expr_at(tv_tpl(c->u.embed.input), 0)->root_kind, DSL_ROOT_PREV));
    for (size_t i = 1; i < 4; i++) {
        cr_expect(eq(u64, g->nodes[i]->timeout_ms, 3000));
        cr_expect(eq(ptr, (void *)g->nodes[i]->retry, (void *)&g->defaults.retry));
    }

    json_t *doc = emit(g);
    json_is(jnode(doc, a),
            "{'index': 1, 'kind': 'embed', 'path': 'do.chain[0]', 'line': 6, 'col': 7,"
            " 'timeout_ms': 3000, 'retry': " DEFAULT_RETRY_JSON ","
            " 'provider': 'emb', 'model': 'e5', 'input': '{{ input.texts }}'}",
            "embed JSON");
    json_has(jnode(doc, b), "{'provider': 'p0', 'model': 'm0', 'input': null}", "empty embed");
    json_has(jnode(doc, c), "{'input': '{{ prev }}'}", "short embed");
    json_decref(doc);
    tu_result_free(r);
}

Test(lambda, long_and_short_forms)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - lambda:\n"                                                      /* 5 */
        "        fn: text.clean\n"
        "        args: { mode: strict, limit: 3, who: \"{{ input.name }}\", tags: [a, b] }\n" /* 7 */
        "        input: \"{{ input.body }}\"\n"
        "    - lambda: std.trim\n"                                             /* 9 */
        "    - lambda: { fn: std.upper, args: { x: [1, 2] } }\n");             /* 10 */
    const dsl_graph *g = r->graph;
    const dsl_node *a = at_path(g, "do.chain[0]"), *b = at_path(g, "do.chain[1]"),
                   *c = at_path(g, "do.chain[2]");
    expect_node(a, DSL_LAMBDA, "do.chain[0]", 5, 7, g->root, 0);
    expect_node(b, DSL_LAMBDA, "do.chain[1]", 9, 7, g->root, 0);
    cr_expect(eq(str, (char *)a->u.lambda.fn, "text.clean"));
    const dsl_tvalue *args = a->u.lambda.args;
    cr_assert(args != NULL);
    cr_expect(eq(int, args->kind, DSL_TV_OBJECT));
    cr_expect(eq(int, args->line, 7));
    cr_expect(eq(int, args->col, 15));
    cr_assert(eq(sz, args->n, 4));
    cr_expect(eq(str, args->keys[0], "mode"));
    cr_expect(eq(str, args->keys[3], "tags"));
    cr_expect(eq(int, args->items[0]->kind, DSL_TV_CONST));
    cr_expect(eq(int, args->items[1]->kind, DSL_TV_CONST));
    json_is(args->items[1]->constant, "3", "limit");
    cr_expect(eq(int, args->items[2]->kind, DSL_TV_TEMPLATE));
    /* a list without templates is folded into one constant */
    cr_expect(eq(int, args->items[3]->kind, DSL_TV_CONST));
    json_is(args->items[3]->constant, "['a', 'b']", "tags");
    cr_expect(tv_tpl(a->u.lambda.input)->whole);

    cr_expect(eq(str, (char *)b->u.lambda.fn, "std.trim"));
    cr_expect(b->u.lambda.args == NULL && b->u.lambda.input == NULL);
    cr_expect(eq(ptr, (void *)b->retry, (void *)&g->defaults.retry));

    cr_expect(eq(int, c->u.lambda.args->kind, DSL_TV_CONST));
    json_is(c->u.lambda.args->constant, "{'x': [1, 2]}", "folded args");

    json_t *doc = emit(g);
    json_is(jnode(doc, a),
            "{'index': 1, 'kind': 'lambda', 'path': 'do.chain[0]', 'line': 5, 'col': 7,"
            " 'retry': " DEFAULT_RETRY_JSON ", 'fn': 'text.clean',"
            " 'args': {'mode': 'strict', 'limit': 3, 'who': '{{ input.name }}', 'tags': ['a', 'b']},"
            " 'input': '{{ input.body }}'}",
            "lambda JSON");
    json_has(jnode(doc, b), "{'fn': 'std.trim', 'args': null, 'input': null}", "short lambda");
    json_has(jnode(doc, c), "{'fn': 'std.upper', 'args': {'x': [1, 2]}}", "lambda with const args");
    json_decref(doc);
    tu_result_free(r);
}

/* ---- composites ---- */

Test(chain, steps_paths_and_references)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  id: main\n"                                           /* 4 */
        "  timeout: 1m\n"
        "  chain:\n"
        "    - id: first\n"                                      /* 7 */
        "      call: one\n"
        "    - call: \"two {{ steps.first.output }}\"\n"         /* 9 */
        "    - chain:\n"                                         /* 10 */
        "        - id: inner\n"                                  /* 11 */
        "          call: \"three {{ steps.first.error }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *root = g->root;
    expect_node(root, DSL_CHAIN, "do", 4, 3, NULL, 0);
    cr_expect(eq(str, (char *)root->id, "main"));
    cr_expect(eq(u64, root->timeout_ms, 60000));
    cr_expect(root->retry == NULL, "a composite has no retry policy unless it sets one");
    cr_assert(eq(sz, root->u.chain.n, 3));
    const dsl_node *first = root->u.chain.steps[0], *two = root->u.chain.steps[1],
                   *sub = root->u.chain.steps[2];
    expect_node(first, DSL_CALL, "do.chain[0]", 7, 7, root, 0);
    expect_node(two, DSL_CALL, "do.chain[1]", 9, 7, root, 0);
    expect_node(sub, DSL_CHAIN, "do.chain[2]", 10, 7, root, 0);
    cr_assert(eq(sz, sub->u.chain.n, 1));
    const dsl_node *inner = sub->u.chain.steps[0];
    expect_node(inner, DSL_CALL, "do.chain[2].chain[0]", 11, 11, sub, 0);
    cr_expect(eq(ptr, (void *)by_id(g, "inner"), (void *)inner));
    const dsl_expr *e = expr_at(tv_tpl(two->u.call.prompt), 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_STEPS));
    cr_expect(eq(ptr, (void *)e->step, (void *)first));
    e = expr_at(tv_tpl(inner->u.call.prompt), 0);
    cr_expect(eq(ptr, (void *)e->step, (void *)first));

    json_t *doc = emit(g);
    json_t *o = jnode(doc, root);
    json_has(o, "{'index': 0, 'kind': 'chain', 'id': 'main', 'path': 'do', 'line': 4, 'col': 3,"
                " 'timeout_ms': 60000}", "chain JSON");
    cr_expect(json_object_get(o, "retry") == NULL);
    json_t *steps = json_object_get(o, "steps");
    cr_assert(eq(sz, json_array_size(steps), 3));
    json_has(json_array_get(steps, 0), "{'index': 1, 'id': 'first', 'prompt': 'one'}", "step 0");
    json_has(json_array_get(steps, 1), "{'index': 2, 'prompt': 'two {{ steps.first.output }}'}", "step 1");
    json_has(json_array_get(steps, 2), "{'index': 3, 'kind': 'chain', 'path': 'do.chain[2]'}", "step 2");
    json_has(json_array_get(json_object_get(json_array_get(steps, 2), "steps"), 0),
             "{'index': 4, 'id': 'inner', 'path': 'do.chain[2].chain[0]', 'line': 11, 'col': 11}",
             "nested step");
    json_decref(doc);
    tu_result_free(r);
}

Test(parallel, short_form)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  parallel:\n"                                      /* 4 */
        "    summary: { call: \"sum {{ prev }}\" }\n"        /* 5 */
        "    tags:\n"
        "      lambda: std.tags\n");                         /* 7 */
    const dsl_graph *g = r->graph;
    const dsl_node *p = g->root;
    expect_node(p, DSL_PARALLEL, "do", 4, 3, NULL, 0);
    const dsl_parallel *pp = &p->u.parallel;
    cr_assert(eq(sz, pp->n, 2));
    cr_expect(eq(str, pp->names[0], "summary"));
    cr_expect(eq(str, pp->names[1], "tags"));
    cr_expect(eq(int, pp->on_error, DSL_ON_ERROR_FAIL));
    expect_node(pp->branches[0], DSL_CALL, "do.parallel.summary", 5, 14, p, 0);
    expect_node(pp->branches[1], DSL_LAMBDA, "do.parallel.tags", 7, 7, p, 0);

    json_t *doc = emit(g);
    json_t *o = jnode(doc, p);
    json_has(o, "{'kind': 'parallel', 'path': 'do', 'on_error': 'fail'}", "parallel JSON");
    json_t *br = json_object_get(o, "branches");
    cr_assert(eq(sz, json_object_size(br), 2));
    json_has(json_object_get(br, "summary"),
             "{'index': 1, 'kind': 'call', 'path': 'do.parallel.summary', 'prompt': 'sum {{ prev }}'}",
             "branch summary");
    json_has(json_object_get(br, "tags"),
             "{'index': 2, 'kind': 'lambda', 'path': 'do.parallel.tags', 'fn': 'std.tags'}",
             "branch tags");
    json_decref(doc);
    tu_result_free(r);
}

Test(parallel, long_form)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  parallel:\n"
        "    branches:\n"
        "      a: { call: a }\n"      /* 6 */
        "      b: { call: b }\n"
        "    on_error: partial\n");
    const dsl_node *p = r->graph->root;
    cr_assert(eq(sz, p->u.parallel.n, 2));
    cr_expect(eq(int, p->u.parallel.on_error, DSL_ON_ERROR_PARTIAL));
    cr_expect(eq(str, p->u.parallel.names[0], "a"));
    expect_node(p->u.parallel.branches[0], DSL_CALL, "do.parallel.a", 6, 10, p, 0);
    expect_node(p->u.parallel.branches[1], DSL_CALL, "do.parallel.b", 7, 10, p, 0);
    json_t *doc = emit(r->graph);
    json_t *o = jnode(doc, p);
    json_has(o, "{'on_error': 'partial'}", "long parallel JSON");
    json_has(json_object_get(json_object_get(o, "branches"), "b"),
             "{'path': 'do.parallel.b', 'prompt': 'b'}", "branch b");
    json_decref(doc);
    tu_result_free(r);

    r = compile_ok("loom: 1\nname: t\ndo:\n  parallel: { branches: { x: { call: x } }, on_error: fail }\n");
    cr_expect(eq(int, r->graph->root->u.parallel.on_error, DSL_ON_ERROR_FAIL));
    tu_result_free(r);
}

Test(route, template_on_with_default_and_normalize)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  route:\n"                                                   /* 4 */
        "    on: \"{{ input.kind | trim | lower }}\"\n"                /* 5 */
        "    normalize: [trim, lower]\n"
        "    cases:\n"
        "      billing: { call: bill }\n"                              /* 8 */
        "      bug: { fail: bug }\n"                                   /* 9 */
        "    default: { fail: { message: \"unknown {{ input.kind }}\", code: no_kind } }\n");
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    expect_node(n, DSL_ROUTE, "do", 4, 3, NULL, 0);
    const dsl_route *rt = &n->u.route;
    cr_expect(rt->on_node == NULL);
    cr_assert(rt->on_tpl != NULL);
    cr_expect(rt->on_tpl->whole);
    const dsl_expr *e = expr_at(rt->on_tpl, 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_INPUT));
    cr_assert(eq(sz, e->nfilters, 2));
    cr_expect(eq(str, (char *)e->filters[0].def->name, "trim"));
    cr_expect(eq(str, (char *)e->filters[1].def->name, "lower"));
    cr_assert(eq(sz, rt->nnormalize, 2));
    cr_expect(eq(str, rt->normalize[0], "trim"));
    cr_expect(eq(str, rt->normalize[1], "lower"));
    cr_assert(eq(sz, rt->n, 2));
    cr_expect(eq(str, rt->labels[0], "billing"));
    cr_expect(eq(str, rt->labels[1], "bug"));
    expect_node(rt->cases[0], DSL_CALL, "do.route.cases.billing", 8, 16, n, 0);
    expect_node(rt->cases[1], DSL_FAIL, "do.route.cases.bug", 9, 12, n, 0);
    expect_node(rt->default_case, DSL_FAIL, "do.route.default", 10, 14, n, 0);
    cr_expect(eq(str, (char *)rt->default_case->u.fail.code, "no_kind"));

    json_t *doc = emit(g);
    json_t *o = jnode(doc, n);
    json_has(o,
             "{'index': 0, 'kind': 'route', 'path': 'do', 'line': 4, 'col': 3,"
             " 'on': '{{ input.kind | trim | lower }}', 'normalize': ['trim', 'lower']}",
             "route JSON");
    json_t *cases = json_object_get(o, "cases");
    cr_assert(eq(sz, json_object_size(cases), 2));
    json_has(json_object_get(cases, "billing"), "{'index': 1, 'prompt': 'bill'}", "case billing");
    json_has(json_object_get(cases, "bug"), "{'index': 2, 'kind': 'fail', 'message': 'bug', 'code': 'failed'}",
             "case bug");
    json_is(json_object_get(o, "default"),
            "{'index': 3, 'kind': 'fail', 'path': 'do.route.default', 'line': 10, 'col': 14,"
            " 'message': 'unknown {{ input.kind }}', 'code': 'no_kind'}",
            "route default");
    json_decref(doc);
    tu_result_free(r);

    /* no default, no normalize */
    r = compile_ok("loom: 1\nname: t\ndo:\n  route: { on: \"{{ prev }}\", cases: { a: { call: a } } }\n");
    cr_expect(r->graph->root->u.route.default_case == NULL);
    cr_expect(eq(sz, r->graph->root->u.route.nnormalize, 0));
    doc = emit(r->graph);
    json_has(jnode(doc, r->graph->root), "{'default': null, 'normalize': []}", "bare route");
    json_decref(doc);
    tu_result_free(r);
}

Test(route, node_on_is_visible_from_cases_and_default)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - id: pre\n"
        "      call: pre\n"
        "    - route:\n"                                                        /* 7 */
        "        on:\n"
        "          id: cls\n"                                                   /* 9 */
        "          call: \"classify {{ steps.pre.output }}\"\n"
        "        cases:\n"
        "          a: { call: \"A {{ steps.cls.output }}\" }\n"                 /* 12 */
        "        default: { call: \"D {{ steps.cls.output }} {{ steps.pre.output }}\" }\n");
    const dsl_graph *g = r->graph;
    const dsl_node *route = at_path(g, "do.chain[1]"), *pre = by_id(g, "pre"), *cls = by_id(g, "cls");
    expect_node(route, DSL_ROUTE, "do.chain[1]", 7, 7, g->root, 0);
    cr_expect(route->u.route.on_tpl == NULL);
    cr_assert(eq(ptr, (void *)route->u.route.on_node, (void *)cls));
    expect_node(cls, DSL_CALL, "do.chain[1].route.on", 9, 11, route, 0);
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(cls->u.call.prompt), 0)->step, (void *)pre));
    const dsl_node *a = route->u.route.cases[0], *d = route->u.route.default_case;
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(a->u.call.prompt), 0)->step, (void *)cls));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(d->u.call.prompt), 0)->step, (void *)cls));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(d->u.call.prompt), 1)->step, (void *)pre));

    const dsl_node *kids[4];
    cr_assert(eq(sz, dsl_node_children(route, kids, 4), 3));
    cr_expect(kids[0] == cls && kids[1] == a && kids[2] == d);

    json_t *doc = emit(g);
    json_t *on = json_object_get(jnode(doc, route), "on");
    json_has(on, "{'index': 3, 'kind': 'call', 'id': 'cls', 'path': 'do.chain[1].route.on',"
                 " 'line': 9, 'col': 11, 'prompt': 'classify {{ steps.pre.output }}'}",
             "route on node JSON");
    json_decref(doc);
    tu_result_free(r);
}

Test(vote, majority_by_default_with_key_and_normalize)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  vote:\n"                                                                /* 4 */
        "    n: 5\n"
        "    do: { call: { prompt: \"Answer {{ prev }}\", json: true } }\n"        /* 6 */
        "    key: \"{{ output.answer }}\"\n"
        "    normalize: [trim, lower]\n");
    const dsl_node *n = r->graph->root;
    expect_node(n, DSL_VOTE, "do", 4, 3, NULL, 0);
    const dsl_vote *v = &n->u.vote;
    cr_expect(eq(int, v->n, 5));
    cr_expect(eq(int, v->strategy, DSL_VOTE_MAJORITY));
    cr_expect(v->judge == NULL);
    cr_assert(v->key != NULL);
    cr_expect(v->key->whole);
    const dsl_expr *e = expr_at(v->key, 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_OUTPUT));
    cr_expect(eq(str, e->segs[0].name, "answer"));
    cr_assert(eq(sz, v->nnormalize, 2));
    cr_expect(eq(str, v->normalize[0], "trim"));
    expect_node(v->body, DSL_CALL, "do.vote.do", 6, 9, n, 0);
    cr_expect(v->body->u.call.json);

    json_t *doc = emit(r->graph);
    json_t *o = jnode(doc, n);
    json_has(o, "{'kind': 'vote', 'n': 5, 'strategy': 'majority', 'normalize': ['trim', 'lower'],"
                " 'key': '{{ output.answer }}'}", "vote JSON");
    json_has(json_object_get(o, "do"), "{'index': 1, 'path': 'do.vote.do', 'json': true}", "vote body");
    cr_expect(json_object_get(o, "at_least") == NULL && json_object_get(o, "judge") == NULL);
    json_decref(doc);
    tu_result_free(r);
}

Test(vote, named_strategies)
{
    static const struct {
        const char *name;
        dsl_vote_strategy s;
    } cases[] = { { "majority", DSL_VOTE_MAJORITY },
                  { "unanimous", DSL_VOTE_UNANIMOUS },
                  { "plurality", DSL_VOTE_PLURALITY } };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "loom: 1\nname: t\ndo:\n  vote: { n: 3, strategy: %s, do: { call: x } }\n", cases[i].name);
        tu_result *r = compile_ok(text);
        const dsl_vote *v = &r->graph->root->u.vote;
        cr_expect(eq(int, v->strategy, cases[i].s), "strategy %s", cases[i].name);
        cr_expect(eq(int, v->n, 3));
        cr_expect(v->key == NULL && v->nnormalize == 0 && v->judge == NULL);
        json_t *doc = emit(r->graph);
        char want[128];
        snprintf(want, sizeof want, "{'strategy': '%s', 'n': 3, 'key': null, 'normalize': []}", cases[i].name);
        json_has(jnode(doc, r->graph->root), want, cases[i].name);
        json_decref(doc);
        tu_result_free(r);
    }
}

Test(vote, at_least)
{
    tu_result *r = compile_ok(
        "loom: 1\nname: t\ndo:\n  vote: { n: 5, strategy: { at_least: 3 }, do: { call: x } }\n");
    const dsl_vote *v = &r->graph->root->u.vote;
    cr_expect(eq(int, v->strategy, DSL_VOTE_AT_LEAST));
    cr_expect(eq(int, v->at_least, 3));
    json_t *doc = emit(r->graph);
    json_has(jnode(doc, r->graph->root), "{'strategy': 'at_least', 'at_least': 3, 'n': 5}", "at_least");
    json_decref(doc);
    tu_result_free(r);

    /* K may be n itself, and strategy may come before n */
    r = compile_ok("loom: 1\nname: t\ndo:\n  vote: { strategy: { at_least: 4 }, n: 4, do: { call: x } }\n");
    cr_expect(eq(int, r->graph->root->u.vote.at_least, 4));
    tu_result_free(r);
}

Test(vote, judge_sees_candidates)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  vote:\n"
        "    n: 3\n"
        "    do: { call: draft }\n"                                               /* 6 */
        "    strategy:\n"
        "      judge:\n"
        "        id: pick\n"                                                      /* 9 */
        "        call: \"Pick the best of {{ candidates | json }} for {{ prev }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    const dsl_vote *v = &n->u.vote;
    cr_expect(eq(int, v->strategy, DSL_VOTE_JUDGE));
    cr_assert(v->judge != NULL);
    cr_expect(eq(ptr, (void *)v->judge, (void *)by_id(g, "pick")));
    expect_node(v->judge, DSL_CALL, "do.vote.judge", 9, 9, n, 0);
    expect_node(v->body, DSL_CALL, "do.vote.do", 6, 9, n, 0);
    const dsl_template *t = tv_tpl(v->judge->u.call.prompt);
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_CANDIDATES));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_PREV));
    const dsl_node *kids[2];
    cr_assert(eq(sz, dsl_node_children(n, kids, 2), 2));
    cr_expect(kids[0] == v->body && kids[1] == v->judge);

    json_t *doc = emit(g);
    json_t *o = jnode(doc, n);
    json_has(o, "{'strategy': 'judge'}", "judge vote");
    json_has(json_object_get(o, "judge"), "{'index': 2, 'id': 'pick', 'path': 'do.vote.judge'}", "judge node");
    json_decref(doc);
    tu_result_free(r);
}

Test(map, all_keys)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  map:\n"                                               /* 4 */
        "    over: \"{{ input.docs }}\"\n"
        "    as: doc\n"
        "    index_as: i\n"
        "    max_concurrency: 4\n"
        "    on_error: fail\n"
        "    do:\n"
        "      call: \"Doc {{ i }}: {{ doc.text }}\"\n");       /* 11 */
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    expect_node(n, DSL_MAP, "do", 4, 3, NULL, 0);
    const dsl_map *m = &n->u.map;
    cr_assert(m->over != NULL);
    cr_expect(m->over->whole);
    cr_expect(eq(int, expr_at(m->over, 0)->root_kind, DSL_ROOT_INPUT));
    cr_expect(eq(str, (char *)m->as, "doc"));
    cr_expect(eq(str, (char *)m->index_as, "i"));
    cr_expect(eq(int, m->max_concurrency, 4));
    cr_expect(eq(int, m->on_error, DSL_ON_ERROR_FAIL));
    expect_node(m->body, DSL_CALL, "do.map.do", 11, 7, n, 1);
    const dsl_template *t = tv_tpl(m->body->u.call.prompt);
    cr_assert(eq(sz, t->nparts, 4));
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_INDEX));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_ITEM));
    cr_expect(eq(str, expr_at(t, 1)->root, "doc"));

    json_t *doc = emit(g);
    json_t *o = jnode(doc, n);
    json_has(o, "{'kind': 'map', 'over': '{{ input.docs }}', 'as': 'doc', 'index_as': 'i',"
                " 'max_concurrency': 4, 'on_error': 'fail'}", "map JSON");
    cr_expect(json_object_get(o, "tolerate") == NULL);
    json_has(json_object_get(o, "do"), "{'index': 1, 'path': 'do.map.do', 'line': 11, 'col': 7}", "map body");
    json_decref(doc);
    tu_result_free(r);
}

Test(map, defaults_and_partial)
{
    tu_result *r = compile_ok(
        "loom: 1\nname: t\ndo:\n  map: { over: \"{{ prev }}\", on_error: partial, do: { call: \"{{ item }}\" } }\n");
    const dsl_map *m = &r->graph->root->u.map;
    cr_expect(eq(str, (char *)m->as, "item"));
    cr_expect(m->index_as == NULL);
    cr_expect(eq(int, m->max_concurrency, 16));
    cr_expect(eq(int, m->on_error, DSL_ON_ERROR_PARTIAL));
    cr_expect(eq(int, expr_at(tv_tpl(m->body->u.call.prompt), 0)->root_kind, DSL_ROOT_ITEM));
    json_t *doc = emit(r->graph);
    json_has(jnode(doc, r->graph->root),
             "{'as': 'item', 'index_as': null, 'max_concurrency': 16, 'on_error': 'partial'}", "map defaults");
    json_decref(doc);
    tu_result_free(r);
}

Test(map, tolerate)
{
    tu_result *r = compile_ok(
        "loom: 1\nname: t\ndo:\n  map: { over: \"{{ prev }}\", on_error: { tolerate: \"10%\" }, do: { call: x } }\n");
    const dsl_map *m = &r->graph->root->u.map;
    cr_expect(eq(int, m->on_error, DSL_ON_ERROR_TOLERATE));
    cr_expect(m->tolerate == 0.1, "tolerate %g", m->tolerate);
    json_t *doc = emit(r->graph);
    json_has(jnode(doc, r->graph->root), "{'on_error': 'tolerate', 'tolerate': 0.1}", "tolerate JSON");
    json_decref(doc);
    tu_result_free(r);

    r = compile_ok(
        "loom: 1\nname: t\ndo:\n  map: { over: \"{{ prev }}\", on_error: { tolerate: 100% }, do: { call: x } }\n");
    cr_expect(r->graph->root->u.map.tolerate == 1.0);
    tu_result_free(r);
}

Test(map, nesting_and_map_depth)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  map:\n"
        "    over: \"{{ input.groups }}\"\n"
        "    as: group\n"
        "    do:\n"
        "      map:\n"
        "        over: \"{{ group.members }}\"\n"
        "        do:\n"
        "          chain:\n"
        "            - call: \"{{ group.name }} {{ item }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *outer = g->root, *inner = at_path(g, "do.map.do"),
                   *ch = at_path(g, "do.map.do.map.do"), *leaf = at_path(g, "do.map.do.map.do.chain[0]");
    cr_expect(eq(u32, outer->map_depth, 0));
    cr_expect(eq(u32, inner->map_depth, 1));
    cr_expect(eq(u32, ch->map_depth, 2));
    cr_expect(eq(u32, leaf->map_depth, 2));
    cr_expect(eq(int, expr_at(inner->u.map.over, 0)->root_kind, DSL_ROOT_ITEM));
    const dsl_template *t = tv_tpl(leaf->u.call.prompt);
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_ITEM));
    cr_expect(eq(str, expr_at(t, 0)->root, "group"));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_ITEM));
    tu_result_free(r);
}

/* A map's fallback runs once, when the map as a whole has failed: it is not
 * inside the map's body, so it is not per item. */
Test(map, fallback_is_not_inside_the_body)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  map: { over: \"{{ prev }}\", do: { call: \"{{ item }}\" } }\n"
        "  fallback: { call: \"failed: {{ error.message }}\" }\n");
    const dsl_node *m = r->graph->root, *fb = m->fallback;
    cr_assert(fb != NULL);
    expect_node(fb, DSL_CALL, "do.fallback", 5, 13, m, 0);
    cr_expect(eq(u32, m->u.map.body->map_depth, 1));
    tu_result_free(r);
}

Test(gate, template_check_and_message)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  gate:\n"                                                  /* 4 */
        "    check: \"{{ prev | length }}\"\n"
        "    fail: \"too long: {{ prev | length }}\"\n");           /* 6 */
    const dsl_node *n = r->graph->root;
    expect_node(n, DSL_GATE, "do", 4, 3, NULL, 0);
    const dsl_gate *gt = &n->u.gate;
    cr_expect(gt->check_node == NULL && gt->fail_node == NULL);
    cr_assert(gt->check_tpl != NULL);
    cr_expect(gt->check_tpl->whole);
    const dsl_expr *e = expr_at(gt->check_tpl, 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_PREV));
    cr_assert(eq(sz, e->nfilters, 1));
    cr_expect(eq(str, (char *)e->filters[0].def->name, "length"));
    const dsl_template *t = tv_tpl(gt->fail_message);
    cr_expect(eq(int, gt->fail_message->line, 6));
    cr_expect(eq(int, gt->fail_message->col, 11));
    cr_expect(not(t->whole));
    json_t *doc = emit(r->graph);
    json_t *o = jnode(doc, n);
    json_has(o, "{'kind': 'gate', 'check': '{{ prev | length }}', 'fail_message': 'too long: {{ prev | length }}'}",
             "gate JSON");
    cr_expect(json_object_get(o, "fail") == NULL);
    json_decref(doc);
    tu_result_free(r);

    r = compile_ok("loom: 1\nname: t\ndo:\n  gate: { check: \"{{ prev }}\" }\n");
    cr_expect(r->graph->root->u.gate.fail_message == NULL);
    doc = emit(r->graph);
    json_has(jnode(doc, r->graph->root), "{'fail_message': null}", "gate without fail");
    json_decref(doc);
    tu_result_free(r);
}

Test(gate, node_check_visible_from_fail_node)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  gate:\n"
        "    check:\n"
        "      id: judge\n"                                      /* 6 */
        "      call: \"Is this fine? {{ prev }}\"\n"
        "    fail:\n"
        "      call: \"Fix: {{ steps.judge.output }}\"\n");     /* 9 */
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root, *judge = by_id(g, "judge");
    const dsl_gate *gt = &n->u.gate;
    cr_expect(gt->check_tpl == NULL && gt->fail_message == NULL);
    cr_expect(eq(ptr, (void *)gt->check_node, (void *)judge));
    expect_node(judge, DSL_CALL, "do.gate.check", 6, 7, n, 0);
    expect_node(gt->fail_node, DSL_CALL, "do.gate.fail", 9, 7, n, 0);
    const dsl_expr *e = expr_at(tv_tpl(gt->fail_node->u.call.prompt), 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_STEPS));
    cr_expect(eq(ptr, (void *)e->step, (void *)judge));
    json_t *doc = emit(g);
    json_t *o = jnode(doc, n);
    json_has(json_object_get(o, "check"), "{'index': 1, 'id': 'judge', 'path': 'do.gate.check'}", "check node");
    json_has(json_object_get(o, "fail"), "{'index': 2, 'path': 'do.gate.fail', 'prompt': 'Fix: {{ steps.judge.output }}'}",
             "fail node");
    cr_expect(json_object_get(o, "fail_message") == NULL);
    json_decref(doc);
    tu_result_free(r);
}

/* The fail message is evaluated after the check node has run, exactly as the
 * fail node is, so it may read the check's output too. */
Test(gate, fail_message_sees_check_node)
{
    tu_result *r = compile_expect_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  gate:\n"
        "    check: { id: chk, call: \"ok? {{ prev }}\" }\n"
        "    fail: \"rejected: {{ steps.chk.output }}\"\n");
    if (r->graph) {
        const dsl_node *chk = by_id(r->graph, "chk");
        const dsl_expr *e = expr_at(tv_tpl(r->graph->root->u.gate.fail_message), 0);
        cr_expect(eq(ptr, (void *)e->step, (void *)chk));
    }
    tu_result_free(r);
}

Test(use, short_and_long_forms)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - use: summarise\n"                                                       /* 5 */
        "    - use: { workflow: translate, input: { text: \"{{ prev }}\", lang: fr } }\n" /* 6 */
        "    - use: summarise\n");
    const dsl_graph *g = r->graph;
    const dsl_node *a = at_path(g, "do.chain[0]"), *b = at_path(g, "do.chain[1]"),
                   *c = at_path(g, "do.chain[2]");
    expect_node(a, DSL_USE, "do.chain[0]", 5, 7, g->root, 0);
    expect_node(b, DSL_USE, "do.chain[1]", 6, 7, g->root, 0);
    cr_expect(a->retry == NULL && a->timeout_ms == 0);
    cr_expect(eq(str, (char *)a->u.use.workflow, "summarise"));
    cr_expect(a->u.use.input == NULL);
    cr_expect(eq(str, (char *)b->u.use.workflow, "translate"));
    cr_assert(b->u.use.input != NULL);
    cr_expect(eq(int, b->u.use.input->kind, DSL_TV_OBJECT));
    cr_expect(eq(str, (char *)c->u.use.workflow, "summarise"));
    /* distinct targets, each with its first use */
    cr_assert(eq(sz, g->nuses, 2));
    cr_expect(eq(str, (char *)g->uses[0], "summarise"));
    cr_expect(eq(str, (char *)g->uses[1], "translate"));
    cr_expect(eq(ptr, (void *)g->use_nodes[0], (void *)a));
    cr_expect(eq(ptr, (void *)g->use_nodes[1], (void *)b));

    json_t *doc = emit(g);
    json_is(json_object_get(doc, "uses"), "['summarise', 'translate']", "uses");
    json_is(jnode(doc, b),
            "{'index': 2, 'kind': 'use', 'path': 'do.chain[1]', 'line': 6, 'col': 7,"
            " 'workflow': 'translate', 'input': {'text': '{{ prev }}', 'lang': 'fr'}}",
            "use JSON");
    json_has(jnode(doc, a), "{'workflow': 'summarise', 'input': null}", "short use");
    json_decref(doc);
    tu_result_free(r);

    r = compile_ok("loom: 1\nname: t\ndo:\n  call: x\n");
    cr_expect(eq(sz, r->graph->nuses, 0));
    tu_result_free(r);
}

Test(fail, short_and_long_forms)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  parallel:\n"
        "    a: { fail: \"bad {{ prev }}\" }\n"                            /* 5 */
        "    b:\n"
        "      fail: { message: plain, code: out_of_scope }\n");          /* 7 */
    const dsl_graph *g = r->graph;
    const dsl_node *a = at_path(g, "do.parallel.a"), *b = at_path(g, "do.parallel.b");
    expect_node(a, DSL_FAIL, "do.parallel.a", 5, 8, g->root, 0);
    expect_node(b, DSL_FAIL, "do.parallel.b", 7, 7, g->root, 0);
    cr_expect(eq(str, (char *)a->u.fail.code, "failed"));
    cr_expect(eq(int, expr_at(tv_tpl(a->u.fail.message), 0)->root_kind, DSL_ROOT_PREV));
    cr_expect(eq(str, (char *)b->u.fail.code, "out_of_scope"));
    cr_expect(eq(int, b->u.fail.message->kind, DSL_TV_CONST));
    cr_expect(a->retry == NULL);
    json_t *doc = emit(g);
    json_is(jnode(doc, a),
            "{'index': 1, 'kind': 'fail', 'path': 'do.parallel.a', 'line': 5, 'col': 8,"
            " 'message': 'bad {{ prev }}', 'code': 'failed'}", "short fail");
    json_has(jnode(doc, b), "{'message': 'plain', 'code': 'out_of_scope'}", "long fail");
    json_decref(doc);
    tu_result_free(r);
}

/* ---- the workflow's top level ---- */

Test(workflow, top_level_and_input)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: my.flow-1\n"
        "description: does things\n"
        "timeout: 1h\n"
        "input:\n"
        "  text: string\n"
        "  n: { type: integer, required: false, description: how many }\n"
        "  lang: { type: string, default: en }\n"
        "  opts: { type: object, default: { a: 1 } }\n"
        "  blob: any\n"
        "vars: { greeting: \"hi {{ input.text }}\", fixed: 3 }\n"
        "do:\n"
        "  call: \"{{ vars.greeting }} {{ input.lang }}\"\n");
    const dsl_graph *g = r->graph;
    cr_expect(eq(str, (char *)g->file, "t.yaml"));
    cr_expect(eq(str, (char *)g->name, "my.flow-1"));
    cr_expect(eq(str, (char *)g->description, "does things"));
    cr_expect(eq(u64, g->timeout_ms, 3600000));
    cr_expect(g->inputs_declared);
    cr_assert(eq(sz, g->ninputs, 5));
    cr_expect(eq(str, (char *)g->inputs[0].name, "text"));
    cr_expect(eq(int, g->inputs[0].type, DSL_TYPE_STRING));
    cr_expect(g->inputs[0].required && g->inputs[0].default_value == NULL);
    cr_expect(eq(int, g->inputs[1].type, DSL_TYPE_INTEGER));
    cr_expect(not(g->inputs[1].required));
    cr_expect(eq(str, (char *)g->inputs[1].description, "how many"));
    cr_expect(not(g->inputs[2].required));
    json_is(g->inputs[2].default_value, "'en'", "lang default");
    json_is(g->inputs[3].default_value, "{'a': 1}", "opts default");
    cr_expect(eq(int, g->inputs[4].type, DSL_TYPE_ANY));
    cr_assert(g->vars != NULL);
    cr_expect(eq(int, g->vars->kind, DSL_TV_OBJECT));
    cr_expect(eq(int, expr_at(tv_tpl(g->vars->items[0]), 0)->root_kind, DSL_ROOT_INPUT));

    json_t *doc = emit(g);
    json_has(doc, "{'name': 'my.flow-1', 'file': 't.yaml', 'description': 'does things',"
                  " 'timeout_ms': 3600000, 'nodes': 1, 'uses': [],"
                  " 'vars': {'greeting': 'hi {{ input.text }}', 'fixed': 3}}", "top level");
    json_is(json_object_get(doc, "input"),
            "[{'name': 'text', 'type': 'string', 'required': true},"
            " {'name': 'n', 'type': 'integer', 'required': false, 'description': 'how many'},"
            " {'name': 'lang', 'type': 'string', 'required': false, 'default': 'en'},"
            " {'name': 'opts', 'type': 'object', 'required': false, 'default': {'a': 1}},"
            " {'name': 'blob', 'type': 'any', 'required': true}]",
            "input JSON");
    json_decref(doc);
    tu_result_free(r);

    /* no input: not declared, shown as null; an empty one is declared */
    r = compile_ok("loom: 1\nname: t\ndo:\n  call: \"{{ input.anything }}\"\n");
    cr_expect(yes(!r->graph->inputs_declared) && r->graph->ninputs == 0 && r->graph->vars == NULL);
    doc = emit(r->graph);
    json_has(doc, "{'input': null, 'vars': null, 'description': null, 'timeout_ms': 0}", "bare workflow");
    json_decref(doc);
    tu_result_free(r);
    r = compile_ok("loom: 1\nname: t\ninput: {}\ndo:\n  call: x\n");
    cr_expect(r->graph->inputs_declared && r->graph->ninputs == 0);
    doc = emit(r->graph);
    json_is(json_object_get(doc, "input"), "[]", "empty input");
    json_decref(doc);
    tu_result_free(r);
}

/* ---- defaults ---- */

Test(defaults, applied_to_leaves_and_maps)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "defaults:\n"
        "  provider: p0\n"
        "  model: m0\n"
        "  timeout: 45s\n"
        "  retry: { max_attempts: 3, initial_delay: 1s, on: [timeout] }\n"
        "  max_concurrency: 8\n"
        "  temperature: 0.5\n"
        "  max_tokens: 100\n"
        "  top_p: 1\n"
        "  stop: [x, y]\n"
        "  seed: 7\n"
        "do:\n"
        "  chain:\n"
        "    - call: a\n"
        "    - embed: {}\n"
        "    - lambda: std.trim\n"
        "    - map: { over: \"{{ prev }}\", do: { call: b } }\n"
        "    - parallel: { x: { call: c } }\n");
    const dsl_graph *g = r->graph;
    const dsl_defaults *d = &g->defaults;
    cr_expect(eq(str, (char *)d->provider, "p0"));
    cr_expect(eq(str, (char *)d->model, "m0"));
    cr_expect(eq(u64, d->timeout_ms, 45000));
    expect_retry(&d->retry, 3, 1000, 2.0, 30000, BIT(DSL_ERR_TIMEOUT));
    cr_expect(eq(int, d->max_concurrency, 8));
    const char *params = "{'temperature': 0.5, 'max_tokens': 100, 'top_p': 1.0, 'stop': ['x', 'y'], 'seed': 7}";
    json_is(d->params, params, "default params");

    const dsl_node *call = at_path(g, "do.chain[0]"), *emb = at_path(g, "do.chain[1]"),
                   *lam = at_path(g, "do.chain[2]"), *map = at_path(g, "do.chain[3]"),
                   *body = at_path(g, "do.chain[3].map.do"), *par = at_path(g, "do.chain[4]"),
                   *branch = at_path(g, "do.chain[4].parallel.x");
    const dsl_node *leaves[] = { call, emb, lam, body, branch };
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
        cr_expect(eq(u64, leaves[i]->timeout_ms, 45000), "timeout of %s", leaves[i]->path);
        cr_expect(eq(ptr, (void *)leaves[i]->retry, (void *)&d->retry), "retry of %s", leaves[i]->path);
    }
    cr_expect(eq(str, (char *)call->u.call.provider, "p0"));
    cr_expect(eq(str, (char *)call->u.call.model, "m0"));
    json_is(call->u.call.params, params, "call params");
    cr_expect(call->u.call.params != d->params, "each call owns a copy of the default params");
    cr_expect(eq(str, (char *)emb->u.embed.provider, "p0"));
    cr_expect(eq(str, (char *)emb->u.embed.model, "m0"));
    cr_expect(eq(int, map->u.map.max_concurrency, 8));
    const dsl_node *composites[] = { g->root, map, par };
    for (size_t i = 0; i < 3; i++) {
        cr_expect(eq(u64, composites[i]->timeout_ms, 0), "timeout of %s", composites[i]->path);
        cr_expect(composites[i]->retry == NULL, "retry of %s", composites[i]->path);
    }

    json_t *doc = emit(g);
    json_is(json_object_get(doc, "defaults"),
            "{'provider': 'p0', 'model': 'm0', 'timeout_ms': 45000,"
            " 'retry': {'max_attempts': 3, 'initial_delay_ms': 1000, 'multiplier': 2.0,"
            "           'max_delay_ms': 30000, 'on': ['timeout']},"
            " 'max_concurrency': 8,"
            " 'params': {'temperature': 0.5, 'max_tokens': 100, 'top_p': 1.0, 'stop': ['x', 'y'], 'seed': 7}}",
            "defaults JSON");
    json_has(jnode(doc, call), "{'provider': 'p0', 'model': 'm0', 'timeout_ms': 45000,"
                               " 'params': {'temperature': 0.5, 'max_tokens': 100, 'top_p': 1.0,"
                               "            'stop': ['x', 'y'], 'seed': 7}}", "call with defaults");
    json_has(jnode(doc, map), "{'max_concurrency': 8}", "map with defaults");
    json_decref(doc);
    tu_result_free(r);
}

Test(defaults, none_given)
{
    tu_result *r = compile_ok("loom: 1\nname: t\ndo:\n  call: x\n");
    const dsl_defaults *d = &r->graph->defaults;
    cr_expect(d->provider == NULL && d->model == NULL);
    cr_expect(eq(u64, d->timeout_ms, 0));
    expect_retry(&d->retry, 1, 500, 2.0, 30000, DEFAULT_ON);
    cr_expect(eq(int, d->max_concurrency, 16));
    json_is(d->params, "{}", "params");
    json_t *doc = emit(r->graph);
    json_is(json_object_get(doc, "defaults"),
            "{'provider': null, 'model': null, 'timeout_ms': 0, 'retry': " DEFAULT_RETRY_JSON ","
            " 'max_concurrency': 16, 'params': {}}", "no defaults");
    json_decref(doc);
    tu_result_free(r);
}

Test(defaults, node_values_override)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "defaults:\n"
        "  provider: p0\n"
        "  model: m0\n"
        "  timeout: 45s\n"
        "  temperature: 0.5\n"
        "  max_tokens: 100\n"
        "  max_concurrency: 8\n"
        "  retry: { max_attempts: 3, initial_delay: 1s, max_delay: 20s, multiplier: 3, on: [timeout] }\n"
        "do:\n"
        "  chain:\n"
        "    - call: { provider: p1, model: m1, prompt: a, temperature: 0.9, stop: s }\n"
        "      timeout: 5s\n"
        "      retry: { max_delay: 10s }\n"
        "    - embed: { model: m2 }\n"
        "      retry: 6\n"
        "    - map: { over: \"{{ prev }}\", max_concurrency: 2, do: { lambda: std.trim, timeout: 500ms } }\n"
        "      timeout: 10m\n"
        "      retry: 2\n"
        "    - lambda: std.x\n"
        "      retry: { on: [] }\n");
    const dsl_graph *g = r->graph;
    const dsl_node *call = at_path(g, "do.chain[0]"), *emb = at_path(g, "do.chain[1]"),
                   *map = at_path(g, "do.chain[2]"), *body = at_path(g, "do.chain[2].map.do"),
                   *lam = at_path(g, "do.chain[3]");
    cr_expect(eq(str, (char *)call->u.call.provider, "p1"));
    cr_expect(eq(str, (char *)call->u.call.model, "m1"));
    cr_expect(eq(u64, call->timeout_ms, 5000));
    /* field-wise: only max_delay is the node's */
    expect_retry(call->retry, 3, 1000, 3.0, 10000, BIT(DSL_ERR_TIMEOUT));
    json_is(call->u.call.params, "{'temperature': 0.9, 'max_tokens': 100, 'stop': ['s']}", "overridden params");
    cr_expect(eq(str, (char *)emb->u.embed.provider, "p0"));
    cr_expect(eq(str, (char *)emb->u.embed.model, "m2"));
    cr_expect(eq(u64, emb->timeout_ms, 45000));
    /* the short form sets max_attempts over the defaults */
    expect_retry(emb->retry, 6, 1000, 3.0, 20000, BIT(DSL_ERR_TIMEOUT));
    cr_expect(eq(int, map->u.map.max_concurrency, 2));
    cr_expect(eq(u64, map->timeout_ms, 600000));
    expect_retry(map->retry, 2, 1000, 3.0, 20000, BIT(DSL_ERR_TIMEOUT));
    cr_expect(eq(u64, body->timeout_ms, 500));
    cr_expect(eq(ptr, (void *)body->retry, (void *)&g->defaults.retry));
    expect_retry(lam->retry, 3, 1000, 3.0, 20000, 0);
    /* the defaults themselves are untouched */
    expect_retry(&g->defaults.retry, 3, 1000, 3.0, 20000, BIT(DSL_ERR_TIMEOUT));
    json_is(g->defaults.params, "{'temperature': 0.5, 'max_tokens': 100}", "default params untouched");

    json_t *doc = emit(g);
    json_has(jnode(doc, call),
             "{'timeout_ms': 5000, 'provider': 'p1', 'model': 'm1',"
             " 'retry': {'max_attempts': 3, 'initial_delay_ms': 1000, 'multiplier': 3.0,"
             "           'max_delay_ms': 10000, 'on': ['timeout']}}", "call overrides");
    json_has(jnode(doc, map), "{'timeout_ms': 600000, 'max_concurrency': 2,"
                              " 'retry': {'max_attempts': 2, 'initial_delay_ms': 1000, 'multiplier': 3.0,"
                              "           'max_delay_ms': 20000, 'on': ['timeout']}}", "map overrides");
    json_has(jnode(doc, lam), "{'retry': {'max_attempts': 3, 'initial_delay_ms': 1000, 'multiplier': 3.0,"
                              " 'max_delay_ms': 20000, 'on': []}}", "empty retry classes");
    json_decref(doc);
    tu_result_free(r);
}

Test(defaults, retry_short_and_full_forms)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - call: a\n"
        "      retry: 3\n"
        "    - call: b\n"
        "      retry:\n"
        "        max_attempts: 5\n"
        "        initial_delay: 250ms\n"
        "        multiplier: 1.5\n"
        "        max_delay: 1m\n"
        "        on: [rate_limited, upstream, invalid_output, cancelled]\n");
    const dsl_graph *g = r->graph;
    expect_retry(at_path(g, "do.chain[0]")->retry, 3, 500, 2.0, 30000, DEFAULT_ON);
    expect_retry(at_path(g, "do.chain[1]")->retry, 5, 250, 1.5, 60000,
                 BIT(DSL_ERR_RATE_LIMITED) | BIT(DSL_ERR_UPSTREAM) | BIT(DSL_ERR_INVALID_OUTPUT) |
                     BIT(DSL_ERR_CANCELLED));
    json_t *doc = emit(g);
    json_is(json_object_get(jnode(doc, at_path(g, "do.chain[1]")), "retry"),
            "{'max_attempts': 5, 'initial_delay_ms': 250, 'multiplier': 1.5, 'max_delay_ms': 60000,"
            " 'on': ['rate_limited', 'upstream', 'invalid_output', 'cancelled']}", "full retry");
    json_decref(doc);
    tu_result_free(r);

    /* retry: N in defaults */
    r = compile_ok("loom: 1\nname: t\ndefaults: { retry: 4 }\ndo:\n  call: a\n");
    expect_retry(r->graph->root->retry, 4, 500, 2.0, 30000, DEFAULT_ON);
    tu_result_free(r);
}

Test(defaults, fallback_leaf_gets_defaults)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "defaults: { timeout: 9s, provider: p0 }\n"
        "do:\n"
        "  chain: [ { call: a } ]\n"
        "  fallback: { call: b }\n");
    const dsl_node *fb = r->graph->root->fallback;
    cr_assert(fb != NULL);
    expect_node(fb, DSL_CALL, "do.fallback", 6, 13, r->graph->root, 0);
    cr_expect(eq(u64, fb->timeout_ms, 9000));
    cr_expect(eq(str, (char *)fb->u.call.provider, "p0"));
    json_t *doc = emit(r->graph);
    json_t *o = jnode(doc, r->graph->root);
    json_has(json_object_get(o, "fallback"), "{'index': 2, 'path': 'do.fallback', 'timeout_ms': 9000}",
             "fallback JSON");
    /* the fallback comes last among the node's keys */
    const char *k, *last = NULL;
    json_t *v;
    json_object_foreach(o, k, v) last = k;
    cr_expect(eq(str, (char *)last, "fallback"));
    json_decref(doc);
    tu_result_free(r);
}

/* ---- durations ---- */

Test(duration, valid)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {
        { "500ms", 500 },      { "30s", 30000 },     { "2m", 120000 },     { "1h", 3600000 },
        { "1m30s", 90000 },    { "1.5s", 1500 },     { "0s", 0 },          { "0ms", 0 },
        { "1h2m3s4ms", 3723004 }, { "168h", 604800000 }, { "0.5ms", 1 }, { "2.25m", 135000 },
        /* accepted as the parser stands, though the documented forms do not
         * include them: a dot with no digits after it or none before it,
         * units out of order or repeated */
        { "1.s", 1000 },       { ".5s", 500 },       { "30s1m", 90000 },   { "1s1s", 2000 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint64_t ms = 12345;
        const char *why = NULL;
        int rc = dsl_parse_duration(ok[i].s, strlen(ok[i].s), &ms, &why);
        cr_expect(eq(int, rc, 0), "'%s' rejected: %s", ok[i].s, why ? why : "?");
        if (rc == 0)
            cr_expect(eq(u64, ms, ok[i].ms), "'%s'", ok[i].s);
    }
}

Test(duration, invalid)
{
    static const struct {
        const char *s;
        const char *why;
    } bad[] = {
        { "5", "a duration needs a unit (ms, s, m or h)" },
        { "5x", "unknown unit (use ms, s, m or h)" },
        { "", "empty duration" },
        { "8d", "unknown unit (use ms, s, m or h)" },
        { "ms", "expected a number" },
        { "s", "expected a number" },
        { ".s", "expected a number" },
        { "-5s", "a duration cannot be negative" },
        { " 5s", "expected a number" },
        { "5 s", "unknown unit (use ms, s, m or h)" },
        { "5S", "unknown unit (use ms, s, m or h)" },
        { "1m30", "a duration needs a unit (ms, s, m or h)" },
        { "169h", "longer than 7 days" },
        { "7d", "unknown unit (use ms, s, m or h)" },
        { "99999999999h", "longer than 7 days" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t ms = 12345;
        const char *why = NULL;
        int rc = dsl_parse_duration(bad[i].s, strlen(bad[i].s), &ms, &why);
        cr_expect(eq(int, rc, -1), "'%s' accepted as %llu ms", bad[i].s, (unsigned long long)ms);
        if (rc == -1)
            cr_expect(eq(str, (char *)why, (char *)bad[i].why), "reason for '%s'", bad[i].s);
    }
    /* the length bounds the text: "30s" cut to "3" has no unit */
    uint64_t ms;
    const char *why = NULL;
    cr_expect(eq(int, dsl_parse_duration("30s", 1, &ms, &why), -1));
}

Test(duration, in_workflows)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "timeout: 1m30s\n"
        "do:\n"
        "  chain:\n"
        "    - call: a\n"
        "      timeout: 1.5s\n"
        "      retry: { initial_delay: 250ms, max_delay: 2h }\n"
        "  timeout: \"168h\"\n");
    cr_expect(eq(u64, r->graph->timeout_ms, 90000));
    cr_expect(eq(u64, r->graph->root->timeout_ms, 604800000));
    const dsl_node *c = at_path(r->graph, "do.chain[0]");
    cr_expect(eq(u64, c->timeout_ms, 1500));
    expect_retry(c->retry, 1, 250, 2.0, 7200000, DEFAULT_ON);
    tu_result_free(r);
}

/* ---- templates in the graph ---- */

Test(templates, whole_and_mixed)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "vars: { v: 1 }\n"
        "do:\n"
        "  lambda:\n"
        "    fn: std.x\n"
        "    args:\n"
        "      a: \"{{ input }}\"\n"
        "      b: \"x {{ input }}\"\n"
        "      c: \" {{ input }}\"\n"
        "      d: \"{{ input }}{{ vars.v }}\"\n"
        "      e: \"{{input.x|upper}}\"\n"
        "      f: '\\{{ literal }}'\n"
        "      g: \"{{   input[0]   }}\"\n"
        "      h: plain\n");
    const dsl_tvalue *args = r->graph->root->u.lambda.args;
    cr_assert(eq(int, args->kind, DSL_TV_OBJECT));
    cr_assert(eq(sz, args->n, 8));
    static const struct {
        int whole;
        size_t nparts;
    } want[] = { { 1, 1 }, { 0, 2 }, { 0, 2 }, { 0, 2 }, { 1, 1 }, { 0, 1 }, { 1, 1 } };
    for (size_t i = 0; i < 7; i++) {
        const dsl_template *t = tv_tpl(args->items[i]);
        cr_expect(eq(int, t->whole, want[i].whole), "whole of %s: '%s'", args->keys[i], t->source);
        cr_expect(eq(sz, t->nparts, want[i].nparts), "parts of %s: '%s'", args->keys[i], t->source);
    }
    /* an escaped brace is text only */
    const dsl_template *f = tv_tpl(args->items[5]);
    cr_expect(f->parts[0].expr == NULL);
    cr_expect(eq(str, f->parts[0].text, "{{ literal }}"));
    const dsl_expr *g = expr_at(tv_tpl(args->items[6]), 0);
    cr_expect(eq(int, g->segs[0].kind, DSL_SEG_INDEX));
    cr_expect(eq(i64, g->segs[0].index, 0));
    cr_expect(eq(int, args->items[7]->kind, DSL_TV_CONST));
    json_t *doc = emit(r->graph);
    json_has(json_object_get(jnode(doc, r->graph->root), "args"),
             "{'a': '{{ input }}', 'c': ' {{ input }}', 'f': '\\\\{{ literal }}', 'h': 'plain'}",
             "templates shown as their source");
    json_decref(doc);
    tu_result_free(r);
}

Test(templates, root_kinds)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "vars: { greet: \"hi {{ input.name }}\" }\n"
        "do:\n"
        "  chain:\n"
        "    - id: s0\n"
        "      call: \"{{ vars.greet }} {{ prev }}\"\n"
        "      fallback:\n"
        "        chain:\n"
        "          - call: \"oops {{ error.message }}\"\n"
        "      output: \"{{ output | trim }}\"\n"
        "    - map:\n"
        "        over: \"{{ steps.s0.output }}\"\n"
        "        as: doc\n"
        "        index_as: k\n"
        "        do: { call: \"{{ doc }} {{ k }}\", output: \"{{ output }} {{ doc }}\" }\n"
        "    - vote:\n"
        "        n: 3\n"
        "        do: { call: x }\n"
        "        key: \"{{ output.k }}\"\n"
        "        strategy: { judge: { call: \"pick {{ candidates }}\" } }\n"
        "      output: \"{{ output.winner }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *s0 = by_id(g, "s0");
    cr_expect(eq(int, expr_at(tv_tpl(g->vars->items[0]), 0)->root_kind, DSL_ROOT_INPUT));
    const dsl_template *t = tv_tpl(s0->u.call.prompt);
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_VARS));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_PREV));
    cr_expect(eq(int, expr_at(tv_tpl(s0->output), 0)->root_kind, DSL_ROOT_OUTPUT));
    const dsl_node *oops = at_path(g, "do.chain[0].fallback.chain[0]");
    cr_expect(eq(int, expr_at(tv_tpl(oops->u.call.prompt), 0)->root_kind, DSL_ROOT_ERROR));
    const dsl_node *map = at_path(g, "do.chain[1]"), *body = at_path(g, "do.chain[1].map.do");
    const dsl_expr *over = expr_at(map->u.map.over, 0);
    cr_expect(eq(int, over->root_kind, DSL_ROOT_STEPS));
    cr_expect(eq(ptr, (void *)over->step, (void *)s0));
    t = tv_tpl(body->u.call.prompt);
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_ITEM));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_INDEX));
    t = tv_tpl(body->output);
    cr_expect(eq(int, expr_at(t, 0)->root_kind, DSL_ROOT_OUTPUT));
    cr_expect(eq(int, expr_at(t, 1)->root_kind, DSL_ROOT_ITEM));
    const dsl_node *vote = at_path(g, "do.chain[2]");
    cr_expect(eq(int, expr_at(vote->u.vote.key, 0)->root_kind, DSL_ROOT_OUTPUT));
    cr_expect(eq(int, expr_at(tv_tpl(vote->u.vote.judge->u.call.prompt), 0)->root_kind, DSL_ROOT_CANDIDATES));
    cr_expect(eq(int, expr_at(tv_tpl(vote->output), 0)->root_kind, DSL_ROOT_OUTPUT));
    tu_result_free(r);
}

Test(templates, steps_visible_at_several_depths)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - id: a\n"
        "      call: a\n"
        "    - parallel:\n"
        "        x:\n"
        "          chain:\n"
        "            - id: b\n"
        "              call: \"{{ steps.a.output }}\"\n"
        "            - map:\n"
        "                over: \"{{ steps.b.output }}\"\n"
        "                do:\n"
        "                  route:\n"
        "                    on: \"{{ steps.a.output }} {{ steps.b.attempts }}\"\n"
        "                    cases:\n"
        "                      k:\n"
        "                        gate:\n"
        "                          check: \"{{ steps.a.error }}\"\n"
        "                          fail: { call: \"{{ steps.b.output }}\" }\n"
        "        y: { call: \"{{ steps.a.output.topics[0] | upper }}\" }\n"
        "    - id: c\n"
        "      call: \"{{ steps.a.output }}\"\n"
        "      fallback: { call: \"{{ steps.a.output }} {{ error }}\" }\n"
        "    - call: \"{{ steps.c.output }} {{ steps.a.output }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *a = by_id(g, "a"), *b = by_id(g, "b"), *c = by_id(g, "c");
    const char *base = "do.chain[1].parallel.x.chain[1]";
    char path[256];
    const dsl_node *map = at_path(g, base);
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(b->u.call.prompt), 0)->step, (void *)a));
    cr_expect(eq(ptr, (void *)expr_at(map->u.map.over, 0)->step, (void *)b));
    snprintf(path, sizeof path, "%s.map.do", base);
    const dsl_node *route = at_path(g, path);
    cr_expect(eq(u32, route->map_depth, 1));
    const dsl_expr *e0 = expr_at(route->u.route.on_tpl, 0), *e1 = expr_at(route->u.route.on_tpl, 1);
    cr_expect(eq(ptr, (void *)e0->step, (void *)a));
    cr_expect(eq(ptr, (void *)e1->step, (void *)b));
    cr_expect(eq(str, e1->segs[1].name, "attempts"));
    snprintf(path, sizeof path, "%s.map.do.route.cases.k", base);
    const dsl_node *gate = at_path(g, path);
    const dsl_expr *ge = expr_at(gate->u.gate.check_tpl, 0);
    cr_expect(eq(ptr, (void *)ge->step, (void *)a));
    cr_expect(eq(str, ge->segs[1].name, "error"));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(gate->u.gate.fail_node->u.call.prompt), 0)->step, (void *)b));
    const dsl_node *y = at_path(g, "do.chain[1].parallel.y");
    const dsl_expr *ye = expr_at(tv_tpl(y->u.call.prompt), 0);
    cr_expect(eq(ptr, (void *)ye->step, (void *)a));
    cr_expect(eq(sz, ye->nsegs, 4));
    cr_expect(eq(sz, ye->nfilters, 1));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(c->fallback->u.call.prompt), 0)->step, (void *)a));
    cr_expect(eq(int, expr_at(tv_tpl(c->fallback->u.call.prompt), 1)->root_kind, DSL_ROOT_ERROR));
    const dsl_node *last = at_path(g, "do.chain[3]");
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(last->u.call.prompt), 0)->step, (void *)c));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(last->u.call.prompt), 1)->step, (void *)a));
    tu_result_free(r);
}

Test(templates, chain_output_sees_its_own_steps)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - id: first\n"
        "      call: a\n"
        "    - id: second\n"
        "      call: b\n"
        "  output: { first: \"{{ steps.first.output }}\", last: \"{{ output }}\", both: \"{{ steps.second.output }}\" }\n");
    const dsl_graph *g = r->graph;
    const dsl_tvalue *o = g->root->output;
    cr_assert(o != NULL);
    cr_assert(eq(int, o->kind, DSL_TV_OBJECT));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(o->items[0]), 0)->step, (void *)by_id(g, "first")));
    cr_expect(eq(int, expr_at(tv_tpl(o->items[1]), 0)->root_kind, DSL_ROOT_OUTPUT));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(o->items[2]), 0)->step, (void *)by_id(g, "second")));
    json_t *doc = emit(g);
    json_is(json_object_get(jnode(doc, g->root), "output"),
            "{'first': '{{ steps.first.output }}', 'last': '{{ output }}', 'both': '{{ steps.second.output }}'}",
            "chain output JSON");
    json_decref(doc);
    tu_result_free(r);
}

/* A route's `output:` is evaluated once the route has finished, so its `on`
 * node has run, as a chain's own steps have for the chain's `output:`. */
Test(templates, route_output_sees_its_on_node)
{
    tu_result *r = compile_expect_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  route:\n"
        "    on: { id: o, call: c }\n"
        "    cases: { a: { call: a } }\n"
        "  output: \"{{ steps.o.output }}: {{ output }}\"\n");
    if (r->graph)
        cr_expect(eq(ptr, (void *)expr_at(tv_tpl(r->graph->root->output), 0)->step,
                     (void *)by_id(r->graph, "o")));
    tu_result_free(r);
}

Test(templates, names_with_dashes_and_block_scalars)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "input:\n"
        "  per-item: string\n"
        "vars:\n"
        "  my-var: \"{{ input.per-item }}\"\n"
        "do:\n"
        "  chain:\n"
        "    - id: first-step\n"
        "      call:\n"
        "        prompt: |\n"                                             /* 11 */
        "          Hello {{ input.per-item }}\n"
        "          Bye {{ vars.my-var }}\n"
        "    - id: _second\n"
        "      map:\n"
        "        over: \"{{ steps.first-step.output }}\"\n"
        "        as: my-doc\n"
        "        do: { call: \"{{ my-doc }} {{ steps.first-step.output }}\" }\n"
        "    - route:\n"
        "        on: \"{{ prev }}\"\n"
        "        cases:\n"
        "          needs review: { call: \"{{ steps._second.output }}\" }\n"
        "          1: { call: one }\n");
    const dsl_graph *g = r->graph;
    const dsl_node *first = by_id(g, "first-step"), *second = by_id(g, "_second");
    const dsl_template *t = tv_tpl(first->u.call.prompt);
    cr_expect(eq(str, t->source, "Hello {{ input.per-item }}\nBye {{ vars.my-var }}\n"));
    cr_expect(eq(sz, t->nparts, 5));
    cr_expect(eq(str, expr_at(t, 0)->segs[0].name, "per-item"));
    cr_expect(eq(str, expr_at(t, 1)->segs[0].name, "my-var"));
    cr_expect(eq(int, first->u.call.prompt->line, 11));
    cr_expect(eq(ptr, (void *)expr_at(second->u.map.over, 0)->step, (void *)first));
    cr_expect(eq(str, (char *)second->u.map.as, "my-doc"));
    const dsl_expr *e = expr_at(tv_tpl(second->u.map.body->u.call.prompt), 0);
    cr_expect(eq(int, e->root_kind, DSL_ROOT_ITEM));
    cr_expect(eq(str, e->root, "my-doc"));
    const dsl_node *route = at_path(g, "do.chain[2]");
    cr_assert(eq(sz, route->u.route.n, 2));
    cr_expect(eq(str, route->u.route.labels[0], "needs review"));
    cr_expect(eq(str, route->u.route.labels[1], "1"));
    cr_expect(eq(str, (char *)route->u.route.cases[0]->path, "do.chain[2].route.cases.needs review"));
    cr_expect(eq(ptr, (void *)expr_at(tv_tpl(route->u.route.cases[0]->u.call.prompt), 0)->step, (void *)second));
    json_t *doc = emit(g);
    json_has(jnode(doc, first), "{'prompt': 'Hello {{ input.per-item }}\\nBye {{ vars.my-var }}\\n'}",
             "block scalar prompt");
    json_decref(doc);
    tu_result_free(r);
}

/* The example that opens the language reference compiles as it stands. */
Test(templates, reference_example)
{
    char *md = tu_read_file(tu_srcpath("docs/dsl.md"), NULL);
    cr_assert(md != NULL, "cannot read docs/dsl.md (set LOOM_SRCDIR)");
    char *start = strstr(md, "```yaml\n");
    cr_assert(start != NULL);
    start += strlen("```yaml\n");
    char *end = strstr(start, "```");
    cr_assert(end != NULL);
    *end = 0;
    tu_result *r = compile_ok(start);
    const dsl_graph *g = r->graph;
    cr_expect(eq(str, (char *)g->name, "support-triage"));
    cr_expect(eq(sz, g->ninputs, 2));
    cr_expect(not(g->inputs[1].required));
    const dsl_node *kind = by_id(g, "kind");
    cr_expect(eq(u64, kind->timeout_ms, 30000));
    expect_retry(kind->retry, 3, 500, 2.0, 30000, DEFAULT_ON);
    json_is(kind->u.call.params, "{'max_tokens': 3}", "params");
    const dsl_node *route = at_path(g, "do.chain[1]");
    cr_expect(eq(ptr, (void *)expr_at(route->u.route.on_tpl, 0)->step, (void *)kind));
    cr_expect(eq(int, route->u.route.default_case->kind, DSL_FAIL));
    tu_result_free(r);
    free(md);
}

/* ---- the graph as a whole ---- */

/* Preorder over dsl_node_children plus the fallback, checking parents. */
static void walk(const dsl_node *n, const dsl_node *parent, uint32_t *next, size_t *seen)
{
    cr_expect(eq(u32, n->index, *next), "node %s is numbered %u, preorder says %u", n->path, n->index, *next);
    cr_expect(eq(ptr, (void *)n->parent, (void *)parent), "parent of %s", n->path);
    (*next)++;
    (*seen)++;
    const dsl_node *kids[64];
    size_t k = dsl_node_children(n, kids, 64);
    cr_assert(k <= 64);
    for (size_t i = 0; i < k; i++)
        walk(kids[i], n, next, seen);
    if (n->fallback)
        walk(n->fallback, n, next, seen);
}

Test(graph, indexes_dense_in_preorder)
{
    tu_result *r = compile_ok(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - call: a\n"
        "      fallback: { chain: [ { call: f1 }, { call: f2 } ] }\n"
        "    - parallel:\n"
        "        p: { map: { over: \"{{ prev }}\", do: { vote: { n: 3, do: { call: v },"
        " strategy: { judge: { call: j } } } } } }\n"
        "        q: { gate: { check: { call: chk }, fail: { fail: no } } }\n"
        "    - route:\n"
        "        on: { lambda: std.cls }\n"
        "        cases: { x: { use: other }, y: { embed: {} } }\n"
        "        default: { call: d }\n"
        "  fallback: { fail: root }\n");
    const dsl_graph *g = r->graph;
    cr_assert(eq(sz, g->nnodes, 19));
    for (size_t i = 0; i < g->nnodes; i++) {
        cr_assert(g->nodes[i] != NULL);
        cr_expect(eq(u32, g->nodes[i]->index, (uint32_t)i));
    }
    cr_expect(eq(ptr, (void *)g->nodes[0], (void *)g->root));
    uint32_t next = 0;
    size_t seen = 0;
    walk(g->root, NULL, &next, &seen);
    cr_expect(eq(sz, seen, g->nnodes), "every node is reachable from the root");
    json_t *doc = emit(g);
    cr_expect(eq(i64, json_integer_value(json_object_get(doc, "nodes")), 19));
    for (size_t i = 0; i < g->nnodes; i++)
        cr_expect(find_index(json_object_get(doc, "root"), (json_int_t)i) != NULL, "node %zu in JSON", i);
    json_decref(doc);
    tu_result_free(r);
}

Test(graph, version_hashes_the_text)
{
    const char *a = "loom: 1\nname: t\ndo:\n  call: a\n";
    const char *b = "loom: 1\nname: t\ndo:\n  call: b\n";
    const char *c = "loom: 1\nname: t\ndo:\n  call: a\n\n"; /* same graph, other text */
    tu_result *ra = compile_ok(a), *ra2 = compile_ok(a), *rb = compile_ok(b), *rc = compile_ok(c);
    const char *v = ra->graph->version;
    cr_assert(eq(sz, strlen(v), 16));
    for (size_t i = 0; i < 16; i++)
        cr_expect(yes(strchr("0123456789abcdef", v[i]) != NULL), "version '%s' is not lower-case hex", v);
    cr_expect(eq(str, (char *)v, (char *)ra2->graph->version));
    cr_expect(ne(str, (char *)v, (char *)rb->graph->version));
    cr_expect(ne(str, (char *)v, (char *)rc->graph->version));
    json_t *doc = emit(ra->graph);
    cr_expect(eq(str, (char *)json_string_value(json_object_get(doc, "version")), (char *)v));
    json_decref(doc);
    tu_result_free(ra);
    tu_result_free(ra2);
    tu_result_free(rb);
    tu_result_free(rc);
}

Test(graph, refcount)
{
    tu_result *r = compile_ok("loom: 1\nname: t\ndo:\n  chain: [ { call: a }, { call: \"{{ prev }}\" } ]\n");
    dsl_graph *g = r->graph;
    cr_expect(eq(int, g->refcount, 1));
    cr_expect(eq(ptr, (void *)dsl_graph_ref(g), (void *)g));
    cr_expect(eq(ptr, (void *)dsl_graph_ref(g), (void *)g));
    cr_expect(eq(int, g->refcount, 3));
    dsl_graph_unref(g);
    dsl_graph_unref(g);
    cr_expect(eq(int, g->refcount, 1));
    /* still whole: a use after free here would be caught by ASan */
    cr_expect(eq(str, (char *)g->nodes[1]->path, "do.chain[0]"));
    json_t *doc = emit(g);
    tu_result_free(r); /* the last reference */
    /* the document owns its data */
    json_has(json_object_get(doc, "root"), "{'kind': 'chain', 'path': 'do'}", "JSON after unref");
    json_decref(doc);
    dsl_graph_unref(NULL);
    cr_expect(dsl_graph_ref(NULL) == NULL);
}

Test(graph, emit_is_deterministic_and_ordered)
{
    tu_result *r = compile_ok("loom: 1\nname: t\ndo:\n  id: x\n  call: { prompt: hi, model: m }\n");
    json_t *d1 = emit(r->graph), *d2 = emit(r->graph);
    char *s1 = json_dumps(d1, JSON_COMPACT), *s2 = json_dumps(d2, JSON_COMPACT);
    cr_expect(eq(str, s1, s2));
    static const char *const top[] = { "name", "version", "file", "description", "timeout_ms", "input",
                                       "vars", "defaults", "nodes", "uses", "root", NULL };
    static const char *const node[] = { "index", "kind", "id", "path", "line", "col", "retry", "provider",
                                        "model", "system", "prompt", "params", "json", "input", NULL };
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(d1, k, v) {
        cr_expect(top[i] != NULL && strcmp(k, top[i]) == 0, "top-level key %zu is '%s'", i, k);
        if (top[i])
            i++;
    }
    cr_expect(top[i] == NULL, "top-level keys missing");
    i = 0;
    json_object_foreach(json_object_get(d1, "root"), k, v) {
        cr_expect(node[i] != NULL && strcmp(k, node[i]) == 0, "node key %zu is '%s'", i, k);
        if (node[i])
            i++;
    }
    cr_expect(node[i] == NULL, "node keys missing");
    free(s1);
    free(s2);
    json_decref(d1);
    json_decref(d2);
    tu_result_free(r);
}

Test(graph, cache_on_leaves)
{
    tu_result *r = compile_ok(
        "loom: 1\nname: t\ndo:\n  chain:\n    - { call: a, cache: true }\n    - { lambda: s.x, cache: true }\n"
        "    - { embed: {}, cache: false }\n  cache: false\n");
    const dsl_graph *g = r->graph;
    cr_expect(at_path(g, "do.chain[0]")->cache);
    cr_expect(at_path(g, "do.chain[1]")->cache);
    cr_expect(not(at_path(g, "do.chain[2]")->cache));
    cr_expect(not(g->root->cache));
    json_t *doc = emit(g);
    json_has(jnode(doc, at_path(g, "do.chain[1]")), "{'cache': true}", "cache JSON");
    cr_expect(json_object_get(jnode(doc, at_path(g, "do.chain[2]")), "cache") == NULL);
    json_decref(doc);
    tu_result_free(r);
}

/* ---- use across graphs ---- */

typedef struct uses_set {
    tu_result *r[4];
    dsl_graph *g[4];
    dsl_diags d[4];
    dsl_diags *dp[4];
    size_t n;
} uses_set;

static void set_add(uses_set *s, const char *name, const char *body)
{
    char text[512];
    snprintf(text, sizeof text, "loom: 1\nname: %s\ndo:\n%s", name, body);
    size_t i = s->n++;
    s->r[i] = compile_ok(text);
    s->g[i] = s->r[i]->graph;
    dsl_diags_init(&s->d[i], name);
    s->dp[i] = &s->d[i];
}

static void set_free(uses_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        tu_result_free(s->r[i]);
        dsl_diags_free(&s->d[i]);
    }
}

/* Diagnostic J of graph I, formatted. Static buffer. */
static const char *set_line(uses_set *s, size_t i, size_t j)
{
    static char buf[512];
    cr_assert(j < s->d[i].n, "graph %zu has only %zu diagnostics", i, s->d[i].n);
    char *f = dsl_diag_format(&s->d[i], j);
    snprintf(buf, sizeof buf, "%s", f);
    free(f);
    return buf;
}

Test(uses, known_workflows_pass)
{
    uses_set s = { 0 };
    set_add(&s, "a", "  chain: [ { use: b }, { use: { workflow: c } } ]\n");
    set_add(&s, "b", "  use: c\n");
    set_add(&s, "c", "  call: x\n");
    cr_expect(eq(sz, dsl_check_uses(s.g, NULL, s.n, NULL, s.dp), 0));
    for (size_t i = 0; i < s.n; i++)
        cr_expect(eq(sz, s.d[i].n, 0));
    set_free(&s);
}

Test(uses, unknown_workflow)
{
    uses_set s = { 0 };
    set_add(&s, "main", "  chain:\n    - call: x\n    - use: summarize\n");
    set_add(&s, "summarise", "  call: x\n");
    cr_expect(eq(sz, dsl_check_uses(s.g, NULL, s.n, NULL, s.dp), 1));
    cr_assert(eq(sz, s.d[0].n, 1));
    cr_expect(eq(sz, s.d[0].nerrors, 1));
    cr_expect(eq(str, (char *)set_line(&s, 0, 0),
                 "main:6:7: error: unknown workflow 'summarize'; did you mean 'summarise'?"));
    cr_expect(eq(sz, s.d[1].n, 0));
    set_free(&s);
}

Test(uses, cycle)
{
    uses_set s = { 0 };
    set_add(&s, "a", "  chain:\n    - call: x\n    - use: b\n");
    set_add(&s, "b", "  use: a\n");
    cr_expect(eq(sz, dsl_check_uses(s.g, NULL, s.n, NULL, s.dp), 1));
    cr_assert(eq(sz, s.d[0].n, 1));
    cr_expect(eq(str, (char *)set_line(&s, 0, 0), "a:6:7: error: workflow cycle: a -> b -> a"));
    cr_expect(eq(sz, s.d[1].n, 0), "a cycle is reported once");
    set_free(&s);
}

Test(uses, self_use)
{
    uses_set s = { 0 };
    set_add(&s, "loop", "  use: loop\n");
    cr_expect(eq(sz, dsl_check_uses(s.g, NULL, s.n, NULL, s.dp), 1));
    cr_assert(eq(sz, s.d[0].n, 1));
    cr_expect(eq(str, (char *)set_line(&s, 0, 0), "loop:4:3: error: workflow cycle: loop -> loop"));
    set_free(&s);
}

Test(uses, registry_and_named_failures)
{
    static const char *const wf[] = { "shared.summarise", NULL };
    dsl_registry reg = { .workflows = wf };
    uses_set s = { 0 };
    set_add(&s, "a", "  chain: [ { use: shared.summarise }, { use: broken } ]\n");
    set_add(&s, "placeholder", "  call: x\n");
    /* the second file failed to compile, but its name is known */
    dsl_graph *graphs[2] = { s.g[0], NULL };
    const char *names[2] = { NULL, "broken" };
    cr_expect(eq(sz, dsl_check_uses(graphs, names, 2, &reg, s.dp), 0), "%s",
              s.d[0].n ? set_line(&s, 0, 0) : "");
    cr_expect(eq(sz, s.d[0].n, 0));
    /* without the registry the shared workflow is unknown */
    cr_expect(eq(sz, dsl_check_uses(graphs, names, 2, NULL, s.dp), 1));
    cr_expect(eq(str, (char *)set_line(&s, 0, 0), "a:4:12: error: unknown workflow 'shared.summarise'"));
    set_free(&s);
}

/* ---- names checked against a registry ---- */

static const char *const PROVIDERS[] = { "openai", "local", "default", NULL };
static const char *const LAMBDAS[] = { "std.trim", "std.upper", "text.clean", NULL };

Test(registry, known_names_pass)
{
    dsl_registry reg = { .providers = PROVIDERS, .lambdas = LAMBDAS };
    dsl_options opt = { .registry = &reg };
    tu_result *r = compile_ok_opt(
        "loom: 1\nname: t\ndefaults: { provider: local }\ndo:\n  chain:\n"
        "    - call: a\n    - call: { provider: openai, prompt: b }\n    - embed: { provider: default }\n"
        "    - lambda: std.trim\n    - lambda: { fn: text.clean }\n", &opt);
    cr_expect(eq(str, (char *)at_path(r->graph, "do.chain[0]")->u.call.provider, "local"));
    tu_result_free(r);
}

Test(registry, unknown_provider_and_lambda)
{
    dsl_registry reg = { .providers = PROVIDERS, .lambdas = LAMBDAS };
    dsl_options opt = { .registry = &reg };
    tu_result *r = tu_compile(
        "loom: 1\n"
        "name: t\n"
        "do:\n"
        "  chain:\n"
        "    - call: { provider: opneai, prompt: a }\n"       /* 5 */
        "    - embed: { provider: locl }\n"                    /* 6 */
        "    - lambda: std.trmi\n"                             /* 7 */
        "    - lambda: { fn: text.cleen }\n"                   /* 8 */
        "    - lambda: other.fn\n", &opt);                     /* 9 */
    cr_expect(r->graph == NULL);
    cr_expect(eq(sz, r->nerrors, 5), "%s", tu_dump(r));
    cr_expect(tu_has(r, "5:25: error: unknown provider 'opneai'; did you mean 'openai'?"), "%s", tu_dump(r));
    cr_expect(tu_has(r, "6:26: error: unknown provider 'locl'; did you mean 'local'?"), "%s", tu_dump(r));
    cr_expect(tu_has(r, "7:15: error: unknown lambda 'std.trmi'; did you mean 'std.trim'?"), "%s", tu_dump(r));
    cr_expect(tu_has(r, "8:21: error: unknown lambda 'text.cleen'; did you mean 'text.clean'?"), "%s", tu_dump(r));
    cr_expect(tu_has(r, "9:15: error: unknown lambda 'other.fn'"), "%s", tu_dump(r));
    tu_result_free(r);
}

Test(registry, defaults_provider_checked_once)
{
    static const char *const providers[] = { "openai", NULL };
    dsl_registry reg = { .providers = providers };
    dsl_options opt = { .registry = &reg };
    tu_result *r = tu_compile(
        "loom: 1\n"
        "name: t\n"
        "defaults: { provider: opnai }\n"                     /* 3 */
        "do:\n"
        "  chain:\n"
        "    - call: a\n"
        "    - call: b\n"
        "    - embed: {}\n"
        "    - call: { provider: openai, prompt: c }\n", &opt);
    cr_expect(r->graph == NULL);
    cr_expect(eq(sz, r->nlines, 1), "%s", tu_dump(r));
    cr_expect(tu_has(r, "3:23: error: unknown provider 'opnai'; did you mean 'openai'?"), "%s", tu_dump(r));
    tu_result_free(r);
}

Test(registry, implicit_default_provider)
{
    /* no provider named anywhere: each leaf asks for "default", reported at the node */
    static const char *const providers[] = { "openai", NULL };
    dsl_registry reg = { .providers = providers };
    dsl_options opt = { .registry = &reg };
    tu_result *r = tu_compile("loom: 1\nname: t\ndo:\n  chain:\n    - call: a\n    - lambda: std.x\n", &opt);
    cr_expect(eq(sz, r->nlines, 1), "%s", tu_dump(r));
    cr_expect(tu_has(r, "5:7: error: no provider named here or in defaults, and 'default' is not configured"),
              "%s", tu_dump(r));
    tu_result_free(r);

    /* lists left NULL are not checked */
    dsl_registry none = { 0 };
    opt.registry = &none;
    r = compile_ok_opt("loom: 1\nname: t\ndo:\n  chain: [ { call: { provider: any, prompt: x } }, { lambda: a.b } ]\n",
                       &opt);
    tu_result_free(r);
}
