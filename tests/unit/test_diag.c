/* test_diag.c -- diagnostics lists and "did you mean".
 *
 * The list is what every stage of the compiler reports into, so its rules are
 * user-visible: the exact line format, sorting by position with notes kept
 * under their error and whole-file messages last, and the cap that stops a
 * hostile file from producing unbounded output. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/diag.h"
#include "dsl/suggest.h"

/* Line I of D as dsl_diags_text gives it. Static buffer. */
static const char *line_of(const dsl_diags *d, size_t i)
{
    static char buf[1024];
    cr_assert(i < d->n, "only %zu diagnostics", d->n);
    char *s = dsl_diag_format(d, i);
    cr_assert(s != NULL);
    snprintf(buf, sizeof buf, "%s", s);
    free(s);
    return buf;
}

#define EXPECT_LINE(d, i, want) cr_expect(eq(str, (char *)line_of((d), (i)), (char *)(want)))

Test(diags, init_and_free)
{
    dsl_diags d;
    cr_assert(eq(int, dsl_diags_init(&d, "w.yaml"), 0));
    cr_expect(eq(str, d.file, "w.yaml"));
    cr_expect(d.n == 0 && d.nerrors == 0 && !d.truncated && !d.oom);
    dsl_diags_sort(&d); /* empty: nothing to do */
    dsl_diags_free(&d);
    cr_expect(d.file == NULL && d.v == NULL && d.n == 0);
    dsl_diags_free(&d); /* twice is harmless after the reset */
    dsl_diags_free(NULL);

    cr_assert(eq(int, dsl_diags_init(&d, NULL), 0));
    cr_expect(eq(str, d.file, "<input>"));
    dsl_diags_free(&d);
}

Test(diags, format_each_severity)
{
    dsl_diags d;
    dsl_diags_init(&d, "w.yaml");
    dsl_error(&d, 3, 7, "unknown key '%s' in %s", "promt", "call");
    dsl_note(&d, 2, 1, "the node starts here");
    dsl_diag_add(&d, DSL_SEV_WARNING, 9, 2, "%d things", 4);
    dsl_error(&d, 0, 0, "file is larger than the %d MiB limit", 64);
    cr_assert(eq(sz, d.n, 4));
    cr_expect(eq(sz, d.nerrors, 2), "notes and warnings are not errors");
    EXPECT_LINE(&d, 0, "w.yaml:3:7: error: unknown key 'promt' in call");
    EXPECT_LINE(&d, 1, "w.yaml:2:1: note: the node starts here");
    EXPECT_LINE(&d, 2, "w.yaml:9:2: warning: 4 things");
    EXPECT_LINE(&d, 3, "w.yaml: error: file is larger than the 64 MiB limit");
    cr_expect(eq(int, d.v[0].sev, DSL_SEV_ERROR));
    cr_expect(eq(int, d.v[0].line, 3));
    cr_expect(eq(int, d.v[0].col, 7));
    dsl_diags_free(&d);
}

Test(diags, text_holds_every_line)
{
    dsl_diags d;
    dsl_diags_init(&d, "p.yaml");
    dsl_error(&d, 2, 4, "second");
    dsl_error(&d, 1, 1, "first");
    dsl_note(&d, 1, 5, "about first");
    dsl_diags_sort(&d);
    size_t len = 0;
    char *buf = dsl_diags_text(&d, &len);
    cr_assert(buf != NULL);
    cr_expect(eq(str, buf, "p.yaml:1:1: error: first\np.yaml:1:5: note: about first\np.yaml:2:4: error: second\n"));
    cr_expect(eq(sz, len, strlen(buf)));
    free(buf);
    dsl_diags_free(&d);
}

Test(diags, sort_by_position_stable)
{
    dsl_diags d;
    dsl_diags_init(&d, "f");
    dsl_error(&d, 5, 1, "e51");
    dsl_error(&d, 2, 9, "e29");
    dsl_error(&d, 2, 3, "e23a");
    dsl_error(&d, 10, 1, "e101");
    dsl_error(&d, 2, 3, "e23b"); /* same position: keeps the order they came in */
    dsl_diags_sort(&d);
    cr_assert(eq(sz, d.n, 5));
    EXPECT_LINE(&d, 0, "f:2:3: error: e23a");
    EXPECT_LINE(&d, 1, "f:2:3: error: e23b");
    EXPECT_LINE(&d, 2, "f:2:9: error: e29");
    EXPECT_LINE(&d, 3, "f:5:1: error: e51");
    EXPECT_LINE(&d, 4, "f:10:1: error: e101");
    dsl_diags_free(&d);
}

Test(diags, notes_stay_with_their_error)
{
    dsl_diags d;
    dsl_diags_init(&d, "f");
    dsl_error(&d, 8, 3, "duplicate id 'x'");
    dsl_note(&d, 2, 3, "'x' is first used here");   /* earlier than every error */
    dsl_error(&d, 4, 1, "other");
    dsl_error(&d, 6, 2, "with two notes");
    dsl_note(&d, 12, 1, "n1");
    dsl_note(&d, 1, 1, "n2");
    dsl_diags_sort(&d);
    cr_assert(eq(sz, d.n, 6));
    EXPECT_LINE(&d, 0, "f:4:1: error: other");
    EXPECT_LINE(&d, 1, "f:6:2: error: with two notes");
    EXPECT_LINE(&d, 2, "f:12:1: note: n1");
    EXPECT_LINE(&d, 3, "f:1:1: note: n2");
    EXPECT_LINE(&d, 4, "f:8:3: error: duplicate id 'x'");
    EXPECT_LINE(&d, 5, "f:2:3: note: 'x' is first used here");
    dsl_diags_free(&d);
}

Test(diags, whole_file_messages_last)
{
    dsl_diags d;
    dsl_diags_init(&d, "f");
    dsl_error(&d, 0, 0, "out of memory");
    dsl_note(&d, 3, 3, "while reading this");
    dsl_error(&d, 900, 1, "late");
    dsl_error(&d, 1, 1, "early");
    dsl_error(&d, 0, 0, "summary");
    dsl_diags_sort(&d);
    cr_assert(eq(sz, d.n, 5));
    EXPECT_LINE(&d, 0, "f:1:1: error: early");
    EXPECT_LINE(&d, 1, "f:900:1: error: late");
    EXPECT_LINE(&d, 2, "f: error: out of memory");
    EXPECT_LINE(&d, 3, "f:3:3: note: while reading this");
    EXPECT_LINE(&d, 4, "f: error: summary");
    dsl_diags_free(&d);
}

Test(diags, cap_at_max_errors)
{
    dsl_diags d;
    dsl_diags_init(&d, "big.yaml");
    for (int i = 1; i <= DSL_DIAG_MAX_ERRORS; i++)
        dsl_error(&d, i, 1, "error %d", i);
    cr_expect(not(d.truncated));
    cr_expect(eq(sz, d.n, DSL_DIAG_MAX_ERRORS));
    dsl_note(&d, 1, 1, "a note on the last kept error is kept");
    cr_expect(eq(sz, d.n, DSL_DIAG_MAX_ERRORS + 1));
    for (int i = 0; i < 50; i++) {
        dsl_error(&d, 5, 5, "dropped %d", i);
        dsl_note(&d, 5, 6, "dropped note");
        dsl_diag_add(&d, DSL_SEV_WARNING, 5, 7, "dropped warning");
    }
    cr_expect(d.truncated);
    cr_expect(eq(sz, d.nerrors, DSL_DIAG_MAX_ERRORS + 50), "every error is counted");
    cr_assert(eq(sz, d.n, DSL_DIAG_MAX_ERRORS + 2), "the kept errors, one note and the cap line");
    EXPECT_LINE(&d, d.n - 1, "big.yaml: error: too many errors; giving up on this file");
    dsl_diags_sort(&d);
    EXPECT_LINE(&d, 0, "big.yaml:1:1: error: error 1");
    EXPECT_LINE(&d, d.n - 1, "big.yaml: error: too many errors; giving up on this file");
    EXPECT_LINE(&d, d.n - 2, "big.yaml:1:1: note: a note on the last kept error is kept");
    EXPECT_LINE(&d, d.n - 3, "big.yaml:200:1: error: error 200");
    for (size_t i = 0; i < d.n; i++)
        cr_expect(eq(ptr, strstr(d.v[i].msg, "dropped"), NULL));
    dsl_diags_free(&d);
}

Test(diags, long_messages_are_kept_whole)
{
    dsl_diags d;
    dsl_diags_init(&d, "f");
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    dsl_error(&d, 1, 2, "%s", big);
    cr_assert(eq(sz, d.n, 1));
    cr_expect(eq(sz, strlen(d.v[0].msg), sizeof big - 1));
    char *s = dsl_diag_format(&d, 0);
    cr_expect(eq(sz, strlen(s), strlen("f:1:2: error: ") + sizeof big - 1));
    free(s);
    dsl_diags_free(&d);
}

/* ---- suggestions ---- */

/* The suggestion for the first LEN bytes of W, or "(none)". */
static char *sg(const char *w, size_t len, const char *const *c, size_t n)
{
    const char *s = dsl_suggest(w, len, c, n);
    return (char *)(s ? s : "(none)");
}

static size_t dist(const char *a, const char *b, size_t limit)
{
    return dsl_edit_distance(a, strlen(a), b, strlen(b), limit);
}

Test(suggest, edit_distance)
{
    cr_expect(eq(sz, dist("prompt", "prompt", 3), 0));
    cr_expect(eq(sz, dist("", "", 3), 0));
    cr_expect(eq(sz, dist("promt", "prompt", 3), 1));    /* insertion */
    cr_expect(eq(sz, dist("prompts", "prompt", 3), 1));  /* deletion */
    cr_expect(eq(sz, dist("prampt", "prompt", 3), 1));   /* substitution */
    cr_expect(eq(sz, dist("pormpt", "prompt", 3), 1));  /* swap of neighbours */
    cr_expect(eq(sz, dist("ab", "ba", 3), 1));
    cr_expect(eq(sz, dist("kitten", "sitting", 5), 3));
    cr_expect(eq(sz, dist("", "abc", 5), 3));
    cr_expect(eq(sz, dist("abc", "", 5), 3));
    /* past the limit the answer is LIMIT + 1 */
    cr_expect(eq(sz, dist("kitten", "sitting", 2), 3));
    cr_expect(eq(sz, dist("a", "abcdefgh", 2), 3));       /* by length alone */
    cr_expect(eq(sz, dist("abcd", "wxyz", 1), 2));
    /* symmetric */
    cr_expect(eq(sz, dist("sitting", "kitten", 5), 3));
    /* words past 64 characters are never near anything */
    char longa[80], longb[80];
    memset(longa, 'a', 79);
    longa[79] = 0;
    memcpy(longb, longa, sizeof longb);
    cr_expect(eq(sz, dsl_edit_distance(longa, 79, longb, 79, 3), 4));
}

Test(suggest, thresholds_by_length)
{
    static const char *const c[] = { "id", "map", "call", "model", "timeout", "max_concurrency", NULL };
    /* under 5 characters: one edit */
    cr_expect(eq(str, sg("mpa", 3, c, (size_t)-1), "map"));
    cr_expect(eq(str, sg("cal", 3, c, (size_t)-1), "call"));
    cr_expect(eq(str, sg("cl", 2, c, (size_t)-1), "(none)"));
    /* 5 to 8: two */
    cr_expect(eq(str, sg("mdoel", 5, c, (size_t)-1), "model"));
    cr_expect(eq(str, sg("timout", 6, c, (size_t)-1), "timeout"));
    cr_expect(eq(str, sg("tmieout", 7, c, (size_t)-1), "timeout"));
    cr_expect(eq(str, sg("tmeot", 5, c, (size_t)-1), "timeout"));
    cr_expect(eq(str, sg("xxxxx", 5, c, (size_t)-1), "(none)"));
    /* 9 and more: three */
    cr_expect(eq(str, sg("max_concurency", 14, c, (size_t)-1), "max_concurrency"));
    cr_expect(eq(str, sg("maxconcurenc", 12, c, (size_t)-1), "max_concurrency"));
    cr_expect(eq(str, sg("mx_cncrrncy", 11, c, (size_t)-1), "(none)"));
}

Test(suggest, candidates_and_ties)
{
    static const char *const c[] = { "lower", "upper", "lowest", NULL };
    /* the nearest wins; on a tie the first listed */
    cr_expect(eq(str, sg("lowe", 4, c, (size_t)-1), "lower"));
    cr_expect(eq(str, sg("uper", 4, c, (size_t)-1), "upper"));
    static const char *const tie[] = { "abcx", "abcy", NULL };
    cr_expect(eq(str, sg("abcz", 4, tie, (size_t)-1), "abcx"));
    /* an exact match is not a suggestion */
    static const char *const one[] = { "trim", NULL };
    cr_expect(eq(str, sg("trim", 4, one, (size_t)-1), "(none)"));
    /* a counted list may hold NULLs, and stops at N */
    const char *counted[] = { NULL, "sort", "split" };
    cr_expect(eq(str, sg("sotr", 4, counted, 3), "sort"));
    cr_expect(eq(str, sg("splt", 4, counted, 2), "(none)"));
    cr_expect(eq(str, sg("splt", 4, counted, 3), "split"));
    cr_expect(eq(str, sg("x", 1, counted, 0), "(none)"));
    /* WORD is LEN bytes, not NUL-terminated */
    cr_expect(eq(str, sg("sotrXYZ", 4, counted, 3), "sort"));
}
