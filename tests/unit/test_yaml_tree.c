/* test_yaml_tree.c -- tests of dsl/yaml_tree.c: positions, scalar typing,
 * positions inside scalars, and every limit a hostile file can push on. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsl/yaml_tree.h"

static dsl_diags diags;
static dsl_ydoc *doc;

static void setup(void)
{
    dsl_diags_init(&diags, "t.yaml");
    doc = NULL;
}

static void teardown(void)
{
    dsl_ydoc_free(doc);
    dsl_diags_free(&diags);
}

TestSuite(yaml_tree, .init = setup, .fini = teardown);

/* Loads N bytes of S into the fixture's document; 1 if a document came back. */
static int load_n(const char *s, size_t n, const dsl_ylimits *lim)
{
    dsl_ydoc_free(doc);
    doc = dsl_yaml_load(s, n, lim, &diags);
    return doc != NULL;
}

static int load(const char *s)
{
    return load_n(s, strlen(s), NULL);
}

/* Asserts that diagnostic I prints as WANT. */
static void expect_diag(size_t i, const char *want)
{
    cr_assert(i < diags.n, "no diagnostic %zu (have %zu), wanted: %s", i, diags.n, want);
    char *got = dsl_diag_format(&diags, i);
    cr_assert(got != NULL);
    cr_expect(eq(str, got, (char *)want));
    free(got);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void expect_pos(const dsl_ynode *n, int line, int col)
{
    cr_assert(n != NULL);
    cr_expect(eq(int, n->line, line));
    cr_expect(eq(int, n->col, col));
}

static void expect_spos(const dsl_ynode *n, size_t off, int line, int col)
{
    int l = -1, c = -1;
    dsl_yscalar_pos(doc, n, off, &l, &c);
    cr_expect(eq(int, l, line), "offset %zu: line", off);
    cr_expect(eq(int, c, col), "offset %zu: col", off);
}

/* The value under KEY of the root mapping. */
static dsl_ynode *val(const char *key)
{
    cr_assert(doc && doc->root);
    dsl_ynode *v = dsl_ymap_get(doc->root, key);
    cr_assert(v != NULL, "no key %s", key);
    return v;
}

/* ---- tree shape and positions --------------------------------------------- */

Test(yaml_tree, block_positions)
{
    cr_assert(load("name: demo\nsteps:\n  - id: a\n    run:  b\n  - x\n"));
    cr_assert(eq(sz, diags.n, 0));
    dsl_ynode *r = doc->root;
    cr_assert(eq(int, r->kind, DSL_Y_MAP));
    cr_assert(eq(sz, r->u.map.n, 2));
    expect_pos(r, 1, 1);
    expect_pos(r->u.map.pairs[0].key, 1, 1);
    expect_pos(r->u.map.pairs[0].value, 1, 7);
    dsl_ynode *steps = val("steps");
    cr_assert(eq(int, steps->kind, DSL_Y_SEQ));
    cr_assert(eq(sz, steps->u.seq.n, 2));
    expect_pos(steps, 3, 3);
    dsl_ynode *item = steps->u.seq.items[0];
    expect_pos(item, 3, 5);
    expect_pos(item->u.map.pairs[0].key, 3, 5);
    expect_pos(item->u.map.pairs[0].value, 3, 9);
    expect_pos(item->u.map.pairs[1].key, 4, 5);
    expect_pos(item->u.map.pairs[1].value, 4, 11);
    expect_pos(steps->u.seq.items[1], 5, 5);
    cr_expect(eq(str, steps->u.seq.items[1]->u.scalar.str, "x"));
}

Test(yaml_tree, flow_positions_and_offsets)
{
    const char *src = "{a: [1, two], b: \"c\"}";
    cr_assert(load(src));
    dsl_ynode *a = val("a");
    expect_pos(a, 1, 5);
    expect_pos(a->u.seq.items[1], 1, 9);
    cr_expect(eq(sz, a->u.seq.items[1]->offset, 8));
    cr_expect(eq(sz, a->u.seq.items[1]->end_offset, 11));
    dsl_ynode *b = val("b");
    expect_pos(b, 1, 18);
    cr_expect(eq(sz, b->offset, 17));
    cr_expect(eq(sz, b->end_offset, 20));
    cr_expect(eq(sz, doc->root->end_offset, strlen(src)));
    cr_expect(eq(ptr, (void *)doc->src, (void *)src));
}

Test(yaml_tree, utf8_columns_are_characters_offsets_are_bytes)
{
    cr_assert(load("\xc3\xa9t\xc3\xa9: \xc3\xbc\nb: x\n"));
    dsl_ynode *k = doc->root->u.map.pairs[0].key, *v = doc->root->u.map.pairs[0].value;
    expect_pos(k, 1, 1);
    cr_expect(eq(sz, k->end_offset, 5));
    expect_pos(v, 1, 6);
    cr_expect(eq(sz, v->offset, 7));
    cr_expect(eq(sz, v->end_offset, 9));
    cr_expect(eq(sz, val("b")->offset, 13));
}

Test(yaml_tree, bom_and_crlf)
{
    cr_assert(load("\xef\xbb\xbf" "a: 1\r\nb: 2\r\n"));
    dsl_ynode *a = val("a"), *b = val("b");
    expect_pos(a, 1, 4);
    cr_expect(eq(sz, a->offset, 6));
    expect_pos(b, 2, 4);
    cr_expect(eq(sz, b->offset, 12));
    cr_expect(eq(sz, doc->root->u.map.pairs[0].key->offset, 3));
}

Test(yaml_tree, input_need_not_be_nul_terminated)
{
    const char buf[] = { 'a', ':', ' ', '1', '2', '3', '#', '!', '[' };
    cr_assert(load_n(buf, 5, NULL));
    cr_expect(eq(sz, diags.n, 0));
    cr_expect(eq(str, val("a")->u.scalar.str, "12"));
}

Test(yaml_tree, anchors_share_nodes)
{
    cr_assert(load("a: &x {k: v}\nb: *x\nc: &x 2\nd: *x\n"));
    cr_assert(eq(sz, diags.n, 0));
    cr_expect(eq(ptr, val("a"), val("b")));
    cr_expect(eq(int, val("b")->kind, DSL_Y_MAP));
    expect_pos(val("b"), 1, 4); /* an alias reports its anchor's position */
    cr_expect(eq(str, val("d")->u.scalar.str, "2")); /* a later anchor wins */
}

Test(yaml_tree, empty_inputs_have_no_root)
{
    const char *empties[] = { "", "# only a comment\n", "---\n", "--- \n...\n", "\n\n" };
    for (size_t i = 0; i < sizeof empties / sizeof *empties; i++) {
        cr_assert(load(empties[i]), "input %zu", i);
        cr_expect(zero(ptr, doc->root), "input %zu", i);
    }
    cr_expect(eq(sz, diags.n, 0));
    cr_assert(load("~\n"));
    cr_assert(doc->root != NULL);
    cr_expect(eq(int, dsl_yscalar_type(doc->root), DSL_YT_NULL));
    cr_assert(load("a:\n"));
    cr_expect(eq(int, dsl_yscalar_type(val("a")), DSL_YT_NULL));
    expect_pos(val("a"), 1, 3);
}

/* ---- scalar types and conversions ----------------------------------------- */

Test(yaml_tree, scalar_types)
{
    static const struct { const char *text; dsl_ytype t; } cases[] = {
        { "~", DSL_YT_NULL }, { "null", DSL_YT_NULL }, { "Null", DSL_YT_NULL },
        { "NULL", DSL_YT_NULL }, { "nULL", DSL_YT_STRING },
        { "true", DSL_YT_BOOL }, { "True", DSL_YT_BOOL }, { "FALSE", DSL_YT_BOOL },
        { "yes", DSL_YT_STRING }, { "on", DSL_YT_STRING }, { "tRue", DSL_YT_STRING },
        { "0", DSL_YT_INT }, { "-12", DSL_YT_INT }, { "+7", DSL_YT_INT },
        { "0x1F", DSL_YT_INT }, { "0o17", DSL_YT_INT }, { "0o18", DSL_YT_STRING },
        { "0x", DSL_YT_STRING }, { "0X1F", DSL_YT_STRING }, { "1_000", DSL_YT_STRING },
        { "9223372036854775807", DSL_YT_INT }, { "-9223372036854775808", DSL_YT_INT },
        { "9223372036854775808", DSL_YT_FLOAT }, { "0x8000000000000000", DSL_YT_STRING },
        { "1.5", DSL_YT_FLOAT }, { "-.5", DSL_YT_FLOAT }, { "1.", DSL_YT_FLOAT },
        { "1e3", DSL_YT_FLOAT }, { "2.5E-3", DSL_YT_FLOAT }, { ".inf", DSL_YT_FLOAT },
        { "-.Inf", DSL_YT_FLOAT }, { ".NaN", DSL_YT_FLOAT }, { "-.nan", DSL_YT_STRING },
        { ".", DSL_YT_STRING }, { "1e", DSL_YT_STRING }, { "e3", DSL_YT_STRING },
        { "1.2.3", DSL_YT_STRING }, { "hello", DSL_YT_STRING }, { "12 monkeys", DSL_YT_STRING },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "v: %s\n", cases[i].text);
        cr_assert(load(buf));
        cr_expect(eq(int, dsl_yscalar_type(val("v")), cases[i].t), "%s", cases[i].text);
    }
    cr_expect(eq(sz, diags.n, 0));
}

Test(yaml_tree, quoted_and_block_scalars_are_strings)
{
    cr_assert(load("a: '1'\nb: \"true\"\nc: |\n  2\nd: >\n  null\ne: ''\nf:\n"));
    const char *keys[] = { "a", "b", "c", "d", "e" };
    for (size_t i = 0; i < 5; i++) {
        cr_expect(eq(int, dsl_yscalar_type(val(keys[i])), DSL_YT_STRING), "%s", keys[i]);
        cr_expect(eq(str, (char *)dsl_ynode_describe(val(keys[i])), "string"));
    }
    cr_expect(eq(int, val("a")->u.scalar.style, DSL_YS_SINGLE_QUOTED));
    cr_expect(eq(int, val("b")->u.scalar.style, DSL_YS_DOUBLE_QUOTED));
    cr_expect(eq(int, val("c")->u.scalar.style, DSL_YS_LITERAL));
    cr_expect(eq(int, val("d")->u.scalar.style, DSL_YS_FOLDED));
    cr_expect(eq(str, val("c")->u.scalar.str, "2\n"));
    cr_expect(eq(int, dsl_yscalar_type(val("f")), DSL_YT_NULL));
}

Test(yaml_tree, int_conversions)
{
    cr_assert(load("a: 42\nb: -9223372036854775808\nc: 0x7fffffffffffffff\nd: 0o777\n"
                   "e: 1.5\nf: x\ng: 9223372036854775808\n"));
    int64_t v = 0;
    cr_expect(eq(int, dsl_yscalar_int(val("a"), &v), 0));
    cr_expect(eq(i64, v, 42));
    cr_expect(eq(int, dsl_yscalar_int(val("b"), &v), 0));
    cr_expect(eq(i64, v, INT64_MIN));
    cr_expect(eq(int, dsl_yscalar_int(val("c"), &v), 0));
    cr_expect(eq(i64, v, INT64_MAX));
    cr_expect(eq(int, dsl_yscalar_int(val("d"), &v), 0));
    cr_expect(eq(i64, v, 511));
    cr_expect(eq(int, dsl_yscalar_int(val("e"), &v), -1));
    cr_expect(eq(int, dsl_yscalar_int(val("f"), &v), -1));
    cr_expect(eq(int, dsl_yscalar_int(val("g"), &v), -1));
    cr_expect(eq(int, dsl_yscalar_int(doc->root, &v), -1));
}

Test(yaml_tree, double_and_bool_conversions)
{
    cr_assert(load("a: 1.5\nb: -.25e2\nc: .inf\nd: -.INF\ne: .nan\nf: 3\ng: '1.5'\n"
                   "h: 9223372036854775808\nt: True\nu: false\nv: yes\n"));
    double d = 0;
    cr_expect(eq(int, dsl_yscalar_double(val("a"), &d), 0));
    cr_expect(eq(dbl, d, 1.5));
    cr_expect(eq(int, dsl_yscalar_double(val("b"), &d), 0));
    cr_expect(eq(dbl, d, -25.0));
    cr_expect(eq(int, dsl_yscalar_double(val("c"), &d), 0));
    cr_expect(isinf(d) && d > 0);
    cr_expect(eq(int, dsl_yscalar_double(val("d"), &d), 0));
    cr_expect(isinf(d) && d < 0);
    cr_expect(eq(int, dsl_yscalar_double(val("e"), &d), 0));
    cr_expect(isnan(d));
    cr_expect(eq(int, dsl_yscalar_double(val("f"), &d), 0));
    cr_expect(eq(dbl, d, 3.0));
    cr_expect(eq(int, dsl_yscalar_double(val("g"), &d), -1));
    cr_expect(eq(int, dsl_yscalar_double(val("h"), &d), 0));
    cr_expect(eq(dbl, d, 9223372036854775808.0));
    int b = -1;
    cr_expect(eq(int, dsl_yscalar_bool(val("t"), &b), 0));
    cr_expect(eq(int, b, 1));
    cr_expect(eq(int, dsl_yscalar_bool(val("u"), &b), 0));
    cr_expect(eq(int, b, 0));
    cr_expect(eq(int, dsl_yscalar_bool(val("v"), &b), -1));
    cr_expect(eq(int, dsl_yscalar_bool(val("f"), &b), -1));
}

Test(yaml_tree, describe_and_map_get)
{
    cr_assert(load("s: x\nn: 1.5\ni: 2\nb: true\nz: ~\nm: {}\nq: []\n"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("s")), "string"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("n")), "number"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("i")), "number"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("b")), "boolean"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("z")), "null"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("m")), "mapping"));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("q")), "sequence"));
    cr_expect(eq(sz, val("m")->u.map.n, 0));
    cr_expect(eq(sz, val("q")->u.seq.n, 0));
    cr_expect(zero(ptr, dsl_ymap_get(doc->root, "missing")));
    cr_expect(zero(ptr, dsl_ymap_get(val("s"), "x")));
    cr_expect(zero(ptr, dsl_ymap_get(NULL, "x")));
}

/* ---- positions inside scalars ----------------------------------------------- */

Test(yaml_tree, scalar_pos_plain)
{
    cr_assert(load("key: say {{x}} now\nu: \xc3\xa9\xc3\xa9{{y}}\n"));
    dsl_ynode *v = val("key");
    expect_spos(v, 0, 1, 6);
    expect_spos(v, 4, 1, 10);
    expect_spos(v, 100, 1, 18); /* past the end: the last character */
    expect_spos(val("u"), 2, 2, 5); /* both bytes of the second é */
    expect_spos(val("u"), 3, 2, 5);
    expect_spos(val("u"), 4, 2, 6);
}

Test(yaml_tree, scalar_pos_plain_multiline)
{
    cr_assert(load("k: one\n  two {{x}}\n   three\nz: 1\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "one two {{x}} three"));
    expect_spos(v, 2, 1, 6);
    expect_spos(v, 4, 2, 3);
    expect_spos(v, 8, 2, 7);
    expect_spos(v, 14, 3, 4);
}

Test(yaml_tree, scalar_pos_single_quoted)
{
    cr_assert(load("k: 'it''s {{x}}'\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "it's {{x}}"));
    expect_spos(v, 0, 1, 5);
    expect_spos(v, 2, 1, 7);
    expect_spos(v, 3, 1, 9);
    expect_spos(v, 5, 1, 11);
}

Test(yaml_tree, scalar_pos_double_quoted_escapes)
{
    cr_assert(load("k: \"a\\tb\\u00e9{{x}}\\\"\"\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "a\tb\xc3\xa9{{x}}\""));
    expect_spos(v, 0, 1, 5);
    expect_spos(v, 1, 1, 6);
    expect_spos(v, 2, 1, 8);
    expect_spos(v, 3, 1, 9);
    expect_spos(v, 4, 1, 9);
    expect_spos(v, 5, 1, 15);
    expect_spos(v, 10, 1, 20);
}

Test(yaml_tree, scalar_pos_double_quoted_multiline)
{
    cr_assert(load("k: \"ab\n    cd \\\n  ef\"\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "ab cd ef"));
    expect_spos(v, 1, 1, 6);
    expect_spos(v, 3, 2, 5);
    expect_spos(v, 6, 3, 3);
}

Test(yaml_tree, scalar_pos_literal)
{
    cr_assert(load("k: |\n  line one\n    {{x}}\n\n  end\nz: |2\n    in\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "line one\n  {{x}}\n\nend\n"));
    expect_spos(v, 0, 2, 3);
    expect_spos(v, 5, 2, 8);
    expect_spos(v, 9, 3, 3);
    expect_spos(v, 11, 3, 5);
    expect_spos(v, 18, 5, 3);
    dsl_ynode *z = val("z");
    cr_assert(eq(str, z->u.scalar.str, "  in\n"));
    expect_spos(z, 2, 7, 5);
}

Test(yaml_tree, scalar_pos_folded)
{
    cr_assert(load("k: >-\n  one\n  two {{x}}\n"));
    dsl_ynode *v = val("k");
    cr_assert(eq(str, v->u.scalar.str, "one two {{x}}"));
    expect_spos(v, 1, 2, 4);
    expect_spos(v, 4, 3, 3);
    expect_spos(v, 8, 3, 7);
}

Test(yaml_tree, scalar_pos_after_anchor_and_tag)
{
    cr_assert(load("k: &a !!str \"x{{y}}\"\nb: !!str |\n  {{z}}\n"));
    expect_spos(val("k"), 1, 1, 15);
    expect_spos(val("b"), 0, 3, 3);
    cr_expect(eq(int, val("b")->u.scalar.style, DSL_YS_LITERAL));
}

Test(yaml_tree, scalar_pos_stays_inside_node)
{
    cr_assert(load("a: \"\"\nb: 'xy'\nc: |\n  q\nd: 1\n"));
    expect_spos(val("a"), 5, 1, 4);
    expect_spos(val("b"), 9, 2, 6);
    expect_spos(val("c"), 9, 4, 4); /* the final newline, just after q */
}

/* ---- errors ------------------------------------------------------------------ */

Test(yaml_tree, duplicate_key)
{
    cr_assert(load("a: 1\nb: 2\na: 3\n"));
    cr_expect(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:3:1: error: duplicate key 'a'");
    expect_diag(1, "t.yaml:1:1: note: first defined here");
    cr_expect(eq(sz, doc->root->u.map.n, 2)); /* the first one stays */
    cr_expect(eq(str, val("a")->u.scalar.str, "1"));
}

Test(yaml_tree, duplicate_key_in_huge_mapping)
{
    size_t n = 100000, cap = n * 24 + 64, len = 0;
    char *src = malloc(cap);
    cr_assert(src != NULL);

    /* Baseline: a sequence of the same size needs no key checks. Comparing
     * with it keeps the test meaningful under valgrind and on slow hosts. */
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(src + len, cap - len, "- key%zu %zu\n", i, i);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert(load_n(src, len, NULL));
    double base_ms = ms_since(&t0);

    len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(src + len, cap - len, "key%zu: %zu\n", i, i);
    len += (size_t)snprintf(src + len, cap - len, "key77: again\n");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert(load_n(src, len, NULL));
    double ms = ms_since(&t0);
    cr_expect(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:100001:1: error: duplicate key 'key77'");
    expect_diag(1, "t.yaml:78:1: note: first defined here");
    cr_expect(eq(sz, doc->root->u.map.n, n));
    /* twice the nodes of the baseline; a quadratic check would be ~1000x */
    cr_expect(ms < 10 * base_ms + 100, "took %.1f ms, baseline %.1f ms", ms, base_ms);
    free(src);
}

Test(yaml_tree, duplicate_long_key_is_shortened)
{
    char src[256];
    char key[101];
    memset(key, 'k', 100);
    key[100] = '\0';
    snprintf(src, sizeof src, "%s: 1\n%s: 2\n", key, key);
    cr_assert(load(src));
    cr_expect(eq(sz, diags.nerrors, 1));
    char want[128];
    snprintf(want, sizeof want, "t.yaml:2:1: error: duplicate key '%.60s...'", key);
    expect_diag(0, want);
}

Test(yaml_tree, non_scalar_keys)
{
    cr_assert(load("? [a]\n: b\n{x: 1}: y\nok: 1\n"));
    cr_expect(eq(sz, diags.nerrors, 2));
    expect_diag(0, "t.yaml:1:3: error: mapping keys must be plain strings");
    expect_diag(1, "t.yaml:3:1: error: mapping keys must be plain strings");
    cr_expect(eq(sz, doc->root->u.map.n, 1));
}

Test(yaml_tree, syntax_error)
{
    cr_expect(eq(int, load("a: b: c\n"), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:1:5: error: mapping values are not allowed in this context");
}

Test(yaml_tree, syntax_error_with_context)
{
    cr_expect(eq(int, load("a: 1\nb: [x\n"), 0));
    cr_assert(eq(sz, diags.n, 2));
    expect_diag(0, "t.yaml:3:1: error: did not find expected ',' or ']'");
    expect_diag(1, "t.yaml:2:4: note: while parsing a flow sequence");
}

Test(yaml_tree, bad_indentation)
{
    cr_expect(eq(int, load("a:\n  b: 1\n c: 2\n"), 0));
    cr_assert(diags.nerrors >= 1);
    expect_diag(0, "t.yaml:3:2: error: did not find expected key");
}

Test(yaml_tree, nul_byte_and_bad_utf8)
{
    static const char nul[] = "a: b\nc: d\0e\n";
    cr_expect(eq(int, load_n(nul, sizeof nul - 1, NULL), 0));
    cr_assert(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:2:5: error: control characters are not allowed (U+0000)");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load("a: \xc3\xa9\xff\n"), 0));
    expect_diag(0, "t.yaml:1:5: error: invalid UTF-8 sequence starting with byte 0xFF "
                   "(the file must be UTF-8)");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load_n("\0", 1, NULL), 0));
    cr_expect(eq(sz, diags.nerrors, 1));
}

Test(yaml_tree, invalid_utf8_points_at_the_sequence)
{
    /* libyaml trips on the byte after the lead; the message names the lead. */
    cr_expect(eq(int, load("a: 1\nb: \"Caf\xe9 au lait\"\n"), 0));
    cr_assert(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:2:8: error: invalid UTF-8 sequence starting with byte 0xE9 "
                   "(the file must be UTF-8)");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load("\xc3\xa9: \xe2\x82\n"), 0)); /* truncated after a good one */
    expect_diag(0, "t.yaml:1:4: error: invalid UTF-8 sequence starting with byte 0xE2 "
                   "(the file must be UTF-8)");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load("a: \xed\xa0\x80\n"), 0)); /* a surrogate */
    expect_diag(0, "t.yaml:1:4: error: invalid UTF-8 sequence starting with byte 0xED "
                   "(the file must be UTF-8)");
}

Test(yaml_tree, tab_indentation)
{
    cr_expect(eq(int, load("a:\n\tb: 1\n"), 0));
    cr_assert(eq(sz, diags.n, 1)); /* no note about scanning for a token */
    expect_diag(0, "t.yaml:2:1: error: tab character in indentation: YAML indents with spaces only");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load("a:\n  \tb: 1\n"), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:2:3: error: tab character in indentation: YAML indents with spaces only");
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_expect(eq(int, load("a: `b`\n"), 0)); /* other stray characters keep libyaml's words */
    expect_diag(0, "t.yaml:1:4: error: found character that cannot start any token");
}

Test(yaml_tree, merge_key_is_reported_and_dropped)
{
    cr_assert(load("base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n"));
    cr_assert(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:3:3: error: YAML merge keys ('<<') are not supported: write the keys out");
    const dsl_ynode *m = dsl_ymap_get(doc->root, "m");
    cr_assert(m != NULL && m->kind == DSL_Y_MAP);
    cr_expect(eq(sz, m->u.map.n, 1));
    cr_expect(dsl_ymap_get(m, "<<") == NULL);
    cr_expect(dsl_ymap_get(m, "y") != NULL);
    /* Quoted, it is an ordinary key. */
    dsl_diags_free(&diags);
    dsl_diags_init(&diags, "t.yaml");
    cr_assert(load("\"<<\": 1\n"));
    cr_expect(eq(sz, diags.n, 0));
    cr_expect(dsl_ymap_get(doc->root, "<<") != NULL);
}

Test(yaml_tree, second_document)
{
    cr_assert(load("a: 1\n---\nb: [\n"));
    cr_expect(eq(sz, diags.nerrors, 1));
    expect_diag(0, "t.yaml:2:1: error: only one YAML document per file is allowed");
    cr_expect(eq(str, val("a")->u.scalar.str, "1"));
}

Test(yaml_tree, tags)
{
    cr_assert(load("a: !!str 42\nb: !!int 5\nc: !!map {}\nd: !!seq []\ne: !!bool true\n"
                   "f: !!float 1.5\ng: !!null ~\nh: ! 7\n"));
    cr_expect(eq(sz, diags.n, 0));
    cr_expect(eq(int, dsl_yscalar_type(val("a")), DSL_YT_STRING));
    cr_expect(eq(str, (char *)dsl_ynode_describe(val("a")), "string"));
    cr_expect(eq(int, dsl_yscalar_type(val("b")), DSL_YT_INT));
    cr_expect(eq(int, dsl_yscalar_type(val("h")), DSL_YT_STRING));
    expect_spos(val("a"), 1, 1, 11);
    cr_assert(load("a: !foo x\nb: !!binary aGk=\nc: !<tag:x> [1]\n"));
    cr_expect(eq(sz, diags.nerrors, 3));
    expect_diag(0, "t.yaml:1:4: error: unsupported YAML tag '!foo'");
    expect_diag(1, "t.yaml:2:4: error: unsupported YAML tag '!!binary'");
    expect_diag(2, "t.yaml:3:4: error: unsupported YAML tag '!<tag:x>'");
}

Test(yaml_tree, unknown_alias)
{
    cr_expect(eq(int, load("a: 1\nb: [*nope]\n"), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:2:5: error: unknown alias '*nope'");
}

Test(yaml_tree, alias_cycle)
{
    cr_expect(eq(int, load("a: &a [1, {k: *a}]\n"), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:1:15: error: alias '*a' refers to a node that contains it");
}

/* ---- limits ------------------------------------------------------------------ */

Test(yaml_tree, billion_laughs)
{
    const char *src =
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
        "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
        "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    /* The first load pays for lazy binding (and valgrind's translation);
     * the second shows the refusal itself is immediate. */
    cr_expect(eq(int, load(src), 0));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect(eq(int, load(src), 0));
    double ms = ms_since(&t0);
    cr_assert(eq(sz, diags.n, 2));
    expect_diag(1, "t.yaml:7:8: error: document expands to more than 2000000 nodes (through aliases)");
    cr_expect(ms < 100, "took %.1f ms", ms);
}

static char *repeat(const char *unit, size_t n, const char *tail)
{
    size_t u = strlen(unit), t = strlen(tail);
    char *s = malloc(u * n + t + 1);
    cr_assert(s != NULL);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * u, unit, u);
    memcpy(s + u * n, tail, t + 1);
    return s;
}

Test(yaml_tree, deep_flow_nesting)
{
    char *src = repeat("[", 10000, "");
    cr_expect(eq(int, load(src), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:1:257: error: nesting deeper than 256 levels");
    free(src);
    src = repeat("{a: ", 10000, "1");
    cr_expect(eq(int, load(src), 0));
    expect_diag(1, "t.yaml:1:1025: error: nesting deeper than 256 levels");
    free(src);
}

Test(yaml_tree, deep_block_nesting)
{
    char *src = repeat("- ", 10000, "x\n");
    cr_expect(eq(int, load(src), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:1:513: error: nesting deeper than 256 levels");
    free(src);

    /* mappings, one level of indentation per line */
    size_t levels = 300, cap = levels * (levels + 8), len = 0;
    src = malloc(cap);
    cr_assert(src != NULL);
    for (size_t i = 0; i < levels; i++)
        len += (size_t)snprintf(src + len, cap - len, "%*sk%zu:\n", (int)i, "", i);
    cr_expect(eq(int, load_n(src, len, NULL), 0));
    expect_diag(1, "t.yaml:257:257: error: nesting deeper than 256 levels");
    free(src);

    /* exactly at the limit is fine */
    src = repeat("[", 256, "");
    char *full = malloc(513);
    cr_assert(full != NULL);
    memcpy(full, src, 256);
    memset(full + 256, ']', 256);
    full[512] = '\0';
    cr_assert(load(full));
    cr_expect(eq(sz, diags.nerrors, 2));
    free(src);
    free(full);
}

Test(yaml_tree, nesting_through_aliases)
{
    char *inner = repeat("[", 200, "x");
    char *close = repeat("]", 200, "");
    char *outer = repeat("[", 100, "*a");
    char *close2 = repeat("]", 100, "\n");
    size_t n = strlen(inner) + strlen(close) + strlen(outer) + strlen(close2) + 32;
    char *src = malloc(n);
    cr_assert(src != NULL);
    snprintf(src, n, "a: &a %s%s\nb: %s%s", inner, close, outer, close2);
    cr_expect(eq(int, load(src), 0));
    cr_assert(eq(sz, diags.n, 1));
    expect_diag(0, "t.yaml:2:104: error: nesting deeper than 256 levels (through alias '*a')");
    free(inner);
    free(close);
    free(outer);
    free(close2);
    free(src);
}

Test(yaml_tree, custom_limits)
{
    dsl_ylimits lim = { .max_depth = 2, .max_nodes = 6 };
    cr_assert(load_n("a: [1]\n", 7, &lim));
    cr_expect(eq(sz, diags.n, 0));
    cr_expect(eq(int, load_n("a: [[1]]\n", 9, &lim), 0));
    expect_diag(0, "t.yaml:1:5: error: nesting deeper than 2 levels");
    cr_expect(eq(int, load_n("a: 1\nb: 2\nc: 3\nd: 4\n", 20, &lim), 0));
    expect_diag(1, "t.yaml:3:4: error: document has more than 6 nodes");
    cr_expect(eq(int, load_n("a: &x [1, 2]\nb: *x\n", 19, &lim), 0));
    expect_diag(2, "t.yaml:2:4: error: document expands to more than 6 nodes (through aliases)");

    dsl_ylimits small = { .max_input = 10 };
    cr_expect(eq(int, load_n("a: 12345678\n", 12, &small), 0));
    expect_diag(3, "t.yaml: error: file is larger than the 10 byte limit");
    cr_assert(load_n("a: 1234567", 10, &small));

    dsl_ylimits mib = { .max_input = 1024 * 1024 };
    char *big = repeat(" ", 1024 * 1024 + 1, "");
    cr_expect(eq(int, load_n(big, 1024 * 1024 + 1, &mib), 0));
    expect_diag(4, "t.yaml: error: file is larger than the 1 MiB limit");
    free(big);

    dsl_ylimits def;
    dsl_ylimits_default(&def);
    cr_expect(eq(sz, def.max_depth, 256));
    cr_expect(eq(sz, def.max_nodes, 2000000));
    cr_expect(eq(sz, def.max_input, 64 * 1024 * 1024));
}

Test(yaml_tree, ten_megabyte_scalar)
{
    size_t n = 10 * 1000 * 1000;
    char *src = malloc(n + 16);
    cr_assert(src != NULL);
    memcpy(src, "k: \"", 4);
    memset(src + 4, 'x', n);
    memcpy(src + 4 + n, "\"\n", 3);
    cr_assert(load_n(src, n + 6, NULL));
    dsl_ynode *v = val("k");
    cr_expect(eq(sz, v->u.scalar.len, n));
    cr_expect(eq(int, v->u.scalar.str[n - 1], 'x'));
    cr_expect(eq(int, v->u.scalar.str[n], '\0'));
    expect_spos(v, n - 1, 1, (int)n + 4);
    free(src);
}

Test(yaml_tree, many_nodes)
{
    size_t n = 10000, cap = n * 40, len = 0;
    char *src = malloc(cap);
    cr_assert(src != NULL);
    len += (size_t)snprintf(src + len, cap - len, "steps:\n");
    for (size_t i = 0; i < n / 4; i++)
        len += (size_t)snprintf(src + len, cap - len, "  - id: s%zu\n    n: %zu\n", i, i);
    cr_assert(load_n(src, len, NULL));
    dsl_ynode *steps = val("steps");
    cr_assert(eq(sz, steps->u.seq.n, n / 4));
    dsl_ynode *last = steps->u.seq.items[n / 4 - 1];
    expect_pos(dsl_ymap_get(last, "n"), (int)(n / 2) + 1, 8);
    free(src);
}
