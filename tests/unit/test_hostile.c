/* test_hostile.c -- the compiler against hostile input.
 *
 * Each test builds its input in memory (huge, deep, repetitive or malformed)
 * and checks that the compiler either compiles it or refuses it with a clear
 * error: never a crash, a hang, a flood of messages or an unbounded
 * allocation. `.timeout` only guards against hangs; nothing here asserts on
 * speed. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/testutil.h"

/* A growable text buffer; aborts when out of memory (a test, not a library). */
typedef struct sb {
    char *s;
    size_t n, cap;
} sb;

static void sb_reserve(sb *b, size_t more)
{
    if (b->n + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s)
        abort();
    b->s = s;
    b->cap = cap;
}

static void sb_add(sb *b, const char *s, size_t len)
{
    sb_reserve(b, len);
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = 0;
}

static void sb_puts(sb *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_repeat(sb *b, const char *s, size_t times)
{
    size_t len = strlen(s);
    sb_reserve(b, len * times);
    for (size_t i = 0; i < times; i++)
        sb_add(b, s, len);
}

static void sb_fill(sb *b, char c, size_t times)
{
    sb_reserve(b, times);
    memset(b->s + b->n, c, times);
    b->n += times;
    b->s[b->n] = 0;
}

static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        abort();
    sb_reserve(b, (size_t)len);
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
}

static tu_result *compile_sb(sb *b)
{
    tu_result *r = tu_compile_len(b->s, b->n, NULL);
    free(b->s);
    b->s = NULL;
    b->n = b->cap = 0;
    return r;
}

/* The first diagnostic line containing NEEDLE, or NULL. */
static const char *find_line(const tu_result *r, const char *needle)
{
    for (size_t i = 0; i < r->nlines; i++)
        if (strstr(r->lines[i], needle))
            return r->lines[i];
    return NULL;
}

/* Refused with a few short messages: not a flood, and no message that echoes
 * megabytes of the input back at the user. */
static void assert_clean_refusal(const tu_result *r)
{
    cr_assert_null(r->graph, "compiled, but should have been refused");
    cr_assert_geq(r->nerrors, 1);
    cr_assert_leq(r->nlines, 2 * DSL_DIAG_MAX_ERRORS + 2, "%zu diagnostic lines", r->nlines);
    for (size_t i = 0; i < r->nlines; i++)
        cr_assert_lt(strlen(r->lines[i]), 4096, "diagnostic %zu is %zu bytes long", i,
                     strlen(r->lines[i]));
}

static void assert_compiled(const tu_result *r)
{
    cr_assert_not_null(r->graph, "expected to compile:\n%s", tu_dump(r));
    cr_assert_eq(r->nerrors, 0);
}

/* The depth limit's message: said loosely, the exact text is the loader's. */
static void assert_depth_error(const tu_result *r)
{
    assert_clean_refusal(r);
    const char *line = find_line(r, "256");
    cr_assert_not_null(line, "no error about the depth limit:\n%s", tu_dump(r));
    cr_assert(strstr(line, "nest") || strstr(line, "deep") || strstr(line, "depth"),
              "not a depth error: %s", line);
}

#define HEADER "loom: 1\nname: hostile\n"

Test(hostile, chain_of_100000_nodes, .timeout = 60)
{
    const size_t n = 100000;
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  chain:\n");
    for (size_t i = 0; i + 1 < n; i++)
        sb_printf(&b, "    - { id: s%zu, lambda: std.const }\n", i);
    sb_printf(&b, "    - { id: s%zu, lambda: { fn: std.const, args: { first: \"{{ steps.s0.output }}\" } } }\n",
              n - 1);
    tu_result *r = compile_sb(&b);
    assert_compiled(r);
    const dsl_graph *g = r->graph;
    cr_assert_eq(g->nnodes, n + 1, "nnodes %zu", g->nnodes);
    cr_assert_eq(g->root->kind, DSL_CHAIN);
    cr_assert_eq(g->root->u.chain.n, n);
    const dsl_node *last = g->root->u.chain.steps[n - 1];
    cr_assert_eq(last->kind, DSL_LAMBDA);
    cr_assert_str_eq(last->id, "s99999");
    cr_assert_str_eq(g->root->u.chain.steps[0]->id, "s0");
    tu_result_free(r);
}

Test(hostile, prompt_of_10_mib, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  call:\n    prompt: |\n");
    const size_t lines = 10 * 1024 * 1024 / 100;
    for (size_t i = 0; i < lines; i++) {
        sb_puts(&b, "      ");
        sb_fill(&b, 'a' + (char)(i % 26), 93);
        sb_puts(&b, "\n");
    }
    tu_result *r = compile_sb(&b);
    assert_compiled(r);
    cr_assert_eq(r->graph->root->kind, DSL_CALL);
    tu_result_free(r);
}

Test(hostile, string_of_10_mib_with_100000_templates, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  chain:\n    - { id: first, lambda: std.const }\n"
                "    - call:\n        prompt: \"");
    static const char *const exprs[] = {
        "{{ input.topic }}", "{{ steps.first.output | trim }}", "{{ prev }}",
        "{{ input.items[0].name | upper }}", "{{ steps.first.output.list[-1] }}",
    };
    for (size_t i = 0; i < 100000; i++) {
        sb_puts(&b, exprs[i % (sizeof exprs / sizeof exprs[0])]);
        sb_puts(&b, " ");
        sb_fill(&b, 'x', 70);
        sb_puts(&b, " ");
    }
    sb_puts(&b, "\"\n");
    cr_assert_gt(b.n, 9u * 1024 * 1024);
    tu_result *r = compile_sb(&b);
    assert_compiled(r);
    tu_result_free(r);
}

Test(hostile, flow_nesting_10000_levels, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do: ");
    sb_fill(&b, '[', 10000);
    sb_fill(&b, ']', 10000);
    sb_puts(&b, "\n");
    tu_result *r = compile_sb(&b);
    assert_depth_error(r);
    tu_result_free(r);
}

Test(hostile, flow_mapping_nesting_10000_levels, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do: ");
    sb_repeat(&b, "{a: ", 10000);
    sb_puts(&b, "x");
    sb_fill(&b, '}', 10000);
    sb_puts(&b, "\n");
    tu_result *r = compile_sb(&b);
    assert_depth_error(r);
    tu_result_free(r);
}

Test(hostile, block_sequence_nesting_10000_levels, .timeout = 60)
{
    /* "- - - x": each "- " opens a sequence inside the previous one */
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  ");
    sb_repeat(&b, "- ", 10000);
    sb_puts(&b, "x\n");
    tu_result *r = compile_sb(&b);
    assert_depth_error(r);
    tu_result_free(r);
}

Test(hostile, block_mapping_nesting_1000_levels, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do:\n");
    for (size_t i = 1; i <= 1000; i++) {
        sb_fill(&b, ' ', i);
        sb_printf(&b, "k%zu:\n", i);
    }
    sb_fill(&b, ' ', 1001);
    sb_puts(&b, "x\n");
    tu_result *r = compile_sb(&b);
    assert_depth_error(r);
    tu_result_free(r);
}

Test(hostile, nested_chains_10000_levels, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do: ");
    sb_repeat(&b, "{chain: [", 10000);
    sb_puts(&b, "{lambda: std.const}");
    sb_repeat(&b, "]}", 10000);
    sb_puts(&b, "\n");
    tu_result *r = compile_sb(&b);
    assert_depth_error(r);
    tu_result_free(r);
}

Test(hostile, nested_chains_within_the_limit, .timeout = 60)
{
    /* 80 chains are 240 YAML levels plus the document's own: under 256 */
    sb b = {0};
    sb_puts(&b, HEADER "do: ");
    sb_repeat(&b, "{chain: [", 80);
    sb_puts(&b, "{lambda: std.const}");
    sb_repeat(&b, "]}", 80);
    sb_puts(&b, "\n");
    tu_result *r = compile_sb(&b);
    assert_compiled(r);
    cr_assert_eq(r->graph->nnodes, 81);
    tu_result_free(r);
}

Test(hostile, billion_laughs, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "vars:\n  l0: &a0 \"lol\"\n");
    for (int level = 1; level <= 9; level++) {
        sb_printf(&b, "  l%d: &a%d [", level, level);
        for (int i = 0; i < 10; i++)
            sb_printf(&b, "%s*a%d", i ? ", " : "", level - 1);
        sb_puts(&b, "]\n");
    }
    sb_puts(&b, "do: { lambda: { fn: std.const, args: { v: \"{{ vars.l9 }}\" } } }\n");
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    cr_assert(find_line(r, "expand") || find_line(r, "alias"),
              "no error about alias expansion:\n%s", tu_dump(r));
    tu_result_free(r);
}

Test(hostile, input_over_64_mib, .timeout = 60)
{
    const size_t size = (size_t)64 * 1024 * 1024 + 1;
    sb b = {0};
    sb_puts(&b, HEADER "do: { lambda: std.const }\n# ");
    sb_fill(&b, 'x', size - b.n - 1);
    sb_puts(&b, "\n");
    cr_assert_eq(b.n, size);
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    cr_assert(find_line(r, "64") || find_line(r, "large") || find_line(r, "big"),
              "no error about the size limit:\n%s", tu_dump(r));
    tu_result_free(r);
}

Test(hostile, input_of_64_mib_exactly_is_read, .timeout = 60)
{
    /* the limit itself is allowed: a comment pads a valid file to 64 MiB */
    const size_t size = (size_t)64 * 1024 * 1024;
    sb b = {0};
    sb_puts(&b, HEADER "do: { lambda: std.const }\n# ");
    sb_fill(&b, 'x', size - b.n - 1);
    sb_puts(&b, "\n");
    cr_assert_eq(b.n, size);
    tu_result *r = compile_sb(&b);
    assert_compiled(r);
    tu_result_free(r);
}

Test(hostile, nul_bytes, .timeout = 60)
{
    char *buf = calloc(1, 1 << 20);
    cr_assert_not_null(buf);
    tu_result *r = tu_compile_len(buf, 1 << 20, NULL);
    free(buf);
    assert_clean_refusal(r);
    tu_result_free(r);
}

Test(hostile, nul_byte_inside_a_file, .timeout = 60)
{
    static const char text[] = HEADER "do: { call: \"a\0b\" }\n";
    tu_result *r = tu_compile_len(text, sizeof text - 1, NULL);
    assert_clean_refusal(r);
    tu_result_free(r);
}

Test(hostile, invalid_utf8, .timeout = 60)
{
    static const char *const texts[] = {
        "loom: 1\nname: \xff\xfe\ndo: { lambda: std.const }\n",
        HEADER "do: { call: \"caf\xc3\" }\n",                  /* truncated sequence */
        HEADER "do: { call: \"\xc0\xaf overlong\" }\n",        /* overlong encoding */
        HEADER "do: { call: \"\xed\xa0\x80 surrogate\" }\n",   /* UTF-16 surrogate */
        HEADER "do:\n  call: |\n    \x80\x81\x82\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        tu_result *r = tu_compile(texts[i], NULL);
        cr_assert_null(r->graph, "text %zu compiled", i);
        cr_assert_geq(r->nerrors, 1, "text %zu", i);
        cr_assert_leq(r->nlines, 10, "text %zu: %s", i, tu_dump(r));
        tu_result_free(r);
    }
}

Test(hostile, key_of_1000000_characters, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do: { lambda: std.const }\n");
    sb_fill(&b, 'k', 1000000);
    sb_puts(&b, ": 1\n");
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    tu_result_free(r);
}

Test(hostile, node_key_of_1000000_characters, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  call: hi\n  ");
    sb_fill(&b, 'c', 1000000);
    sb_puts(&b, ": 1\n");
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    tu_result_free(r);
}

Test(hostile, duplicate_keys_100000, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do: { lambda: std.const }\nvars:\n");
    sb_repeat(&b, "  a: 1\n", 100000);
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    cr_assert_not_null(find_line(r, "duplicate"), "no duplicate-key error:\n%s", tu_dump(r));
    tu_result_free(r);
}

Test(hostile, duplicate_ids_10000, .timeout = 60)
{
    sb b = {0};
    sb_puts(&b, HEADER "do:\n  chain:\n");
    sb_repeat(&b, "    - { id: same, lambda: std.const }\n", 10000);
    tu_result *r = compile_sb(&b);
    assert_clean_refusal(r);
    tu_result_free(r);
}
