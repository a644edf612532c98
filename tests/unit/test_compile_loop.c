/* test_compile_loop.c -- the compiler on valid loops: the struct a loop
 * compiles to, the JSON and DOT documents of it, and what the `loop` root
 * and `output` resolve to in its do, its until and around it. Invalid loops
 * are cases in tests/data/invalid (loop-*.yaml). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

#define HDR "loom: 1\nname: t\n"

static tu_result *ok(const char *text)
{
    tu_result *r = tu_compile(text, NULL);
    cr_assert(r->nlines == 0, "unexpected diagnostics:\n%s", tu_dump(r));
    cr_assert(r->graph != NULL);
    return r;
}

static const dsl_node *at_path(const dsl_graph *g, const char *path)
{
    for (size_t i = 0; i < g->nnodes; i++)
        if (strcmp(g->nodes[i]->path, path) == 0)
            return g->nodes[i];
    cr_assert_fail("no node at path '%s'", path);
    return NULL;
}

/* The root kind of the first expression of T. */
static int root0(const dsl_template *t)
{
    cr_assert(t && t->nparts > 0);
    for (size_t i = 0; i < t->nparts; i++)
        if (t->parts[i].expr)
            return t->parts[i].expr->root_kind;
    cr_assert_fail("no expression in '%s'", t->source);
    return -1;
}

static const dsl_template *tpl_of(const dsl_tvalue *tv)
{
    cr_assert(tv && tv->kind == DSL_TV_TEMPLATE);
    return tv->tpl;
}

Test(compile_loop, every_key)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  loop:\n"                                                   /* 4 */
        "    max_iterations: 7\n"
        "    collect: true\n"
        "    on_exhausted: last\n"
        "    until: \"{{ output.done }}\"\n"
        "    do:\n"
        "      call: \"draft {{ loop.iteration }} after {{ loop.previous }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *n = g->root;
    cr_expect_eq(n->kind, DSL_LOOP);
    cr_expect_str_eq(dsl_kind_name(n->kind), "loop");
    cr_expect_eq(n->line, 4);
    const dsl_loop *l = &n->u.loop;
    cr_expect_eq(l->max_iterations, 7);
    cr_expect(l->collect);
    cr_expect_eq(l->on_exhausted, DSL_EXHAUSTED_LAST);
    cr_assert(l->until_tpl && !l->until_node);
    cr_expect_eq(root0(l->until_tpl), DSL_ROOT_OUTPUT);
    cr_assert(l->body == at_path(g, "do.loop.do"));
    cr_expect(l->body->parent == n);
    cr_expect(l->body->retry != NULL, "the body is a leaf with the default retry");
    const dsl_template *p = tpl_of(l->body->u.call.prompt);
    int kinds = 0;
    for (size_t i = 0; i < p->nparts; i++)
        if (p->parts[i].expr) {
            cr_expect_eq(p->parts[i].expr->root_kind, DSL_ROOT_LOOP);
            kinds++;
        }
    cr_expect_eq(kinds, 2);
    const dsl_node *kids[4];
    cr_expect_eq(dsl_node_children(n, kids, 4), 1);
    cr_expect(kids[0] == l->body);

    json_t *doc = dsl_emit_json(g);
    cr_assert(doc != NULL);
    json_t *root = json_object_get(doc, "root");
    cr_expect_str_eq(json_string_value(json_object_get(root, "kind")), "loop");
    cr_expect_eq((int)json_integer_value(json_object_get(root, "max_iterations")), 7);
    cr_expect(json_is_true(json_object_get(root, "collect")) != 0);
    cr_expect_str_eq(json_string_value(json_object_get(root, "on_exhausted")), "last");
    cr_expect_str_eq(json_string_value(json_object_get(root, "until")), "{{ output.done }}");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(root, "do"), "kind")),
                     "call");
    json_decref(doc);

    char *dot = dsl_emit_dot(g, NULL);
    cr_assert(dot != NULL);
    cr_expect(strstr(dot, "loop \xE2\x89\xA4" "7 until {{ output.done }} (collect) (else last)") != NULL,
              "%s", dot);
    cr_expect(strstr(dot, "label=\"again\"") != NULL, "%s", dot);
    free(dot);
    tu_result_free(r);
}

Test(compile_loop, defaults_and_until_node)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  loop:\n"
        "    max_iterations: 10000\n"
        "    do: { call: x }\n"
        "    until: { call: \"is {{ prev }} good after {{ loop.iteration }}?\" }\n");
    const dsl_graph *g = r->graph;
    const dsl_loop *l = &g->root->u.loop;
    cr_expect_eq(l->max_iterations, 10000);
    cr_expect(!l->collect);
    cr_expect_eq(l->on_exhausted, DSL_EXHAUSTED_FAIL);
    cr_assert(!l->until_tpl && l->until_node == at_path(g, "do.loop.until"));
    const dsl_template *p = tpl_of(l->until_node->u.call.prompt);
    cr_expect_eq(p->parts[1].expr->root_kind, DSL_ROOT_PREV);
    cr_expect_eq(p->parts[3].expr->root_kind, DSL_ROOT_LOOP);
    const dsl_node *kids[4];
    cr_expect_eq(dsl_node_children(g->root, kids, 4), 2);
    cr_expect(kids[0] == l->body && kids[1] == l->until_node);

    json_t *doc = dsl_emit_json(g);
    json_t *root = json_object_get(doc, "root");
    cr_expect(json_is_false(json_object_get(root, "collect")) != 0);
    cr_expect_str_eq(json_string_value(json_object_get(root, "on_exhausted")), "fail");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(root, "until"), "path")),
                     "do.loop.until");
    json_decref(doc);
    tu_result_free(r);

    r = ok(HDR "do: { loop: { max_iterations: 1, do: { call: x } } }\n");
    cr_expect(r->graph->root->u.loop.until_tpl == NULL && r->graph->root->u.loop.until_node == NULL);
    tu_result_free(r);
}

/* `loop` is the nearest loop whose do or until holds the template; a map
 * item named `loop` inside shadows it, like any nearer binding. */
Test(compile_loop, loop_root_resolution)
{
    tu_result *r = ok(HDR
        "do:\n"
        "  loop:\n"
        "    max_iterations: 3\n"
        "    do:\n"
        "      chain:\n"
        "        - id: a\n"
        "          loop:\n"
        "            max_iterations: 2\n"
        "            until: \"{{ loop.previous }}\"\n"
        "            do: { call: \"inner {{ loop.iteration }}\" }\n"
        "          output: \"{{ loop.iteration }}\"\n"
        "        - map: { over: \"{{ prev }}\", as: loop, do: { call: \"{{ loop }}\" } }\n"
        "        - call: \"{{ steps.a.output }} {{ loop.iteration }}\"\n");
    const dsl_graph *g = r->graph;
    const dsl_node *inner = at_path(g, "do.loop.do.chain[0]");
    cr_expect_eq(root0(inner->u.loop.until_tpl), DSL_ROOT_LOOP);
    cr_expect_eq(root0(tpl_of(inner->output)), DSL_ROOT_LOOP);
    cr_expect_eq(root0(tpl_of(at_path(g, "do.loop.do.chain[1].map.do")->u.call.prompt)),
                 DSL_ROOT_ITEM);
    const dsl_template *last = tpl_of(at_path(g, "do.loop.do.chain[2]")->u.call.prompt);
    cr_expect_eq(last->parts[0].expr->root_kind, DSL_ROOT_STEPS);
    cr_expect_eq(last->parts[2].expr->root_kind, DSL_ROOT_LOOP);
    tu_result_free(r);
}

/* A step after a loop reads the loop's output; a step inside the loop is
 * not visible after it, with a message that says why. */
Test(compile_loop, steps_inside_are_per_iteration)
{
    tu_result *r = tu_compile(HDR
        "do:\n"
        "  chain:\n"
        "    - id: l\n"
        "      loop:\n"
        "        max_iterations: 3\n"
        "        do: { id: d, call: x }\n"
        "    - call: \"{{ steps.l.output }} {{ steps.d.output }}\"\n", NULL);
    cr_expect(tu_has(r, "9:44: error: step 'd' runs once per iteration inside the loop at line 5; "
                        "read that loop's output instead"), "%s", tu_dump(r));
    cr_expect_eq(r->nerrors, 1, "%s", tu_dump(r));
    tu_result_free(r);
}
