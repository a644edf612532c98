/* test_invalid.c -- the compiler against invalid workflows, one file a case.
 *
 * Every file in tests/data/invalid is a workflow with one problem (or one
 * closely related group of problems). It opens with comment lines that give
 * the compiler's exact diagnostics, in order, without the file name:
 *
 *     # expect: 7:15: error: unknown key 'promt' in call; did you mean 'prompt'?
 *     # expect: 9:11: note: 'a' is first used here
 *
 * The test compiles the file and asserts that no graph is returned and that
 * the diagnostics are exactly those lines: every error and note, nothing
 * more, so each case pins a file's whole output in one pass. Adding a case
 * is adding a file.
 *
 * A file that compiles then has its `use` nodes checked as loomctl and
 * loomd check them, against the names in `served` below (as if a workflows
 * directory served them), so an unknown workflow is a case too. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/testutil.h"

#define CASES_DIR "tests/data/invalid"
#define MIN_CASES 70
#define EXPECT_PREFIX "# expect: "

/* The workflows a case's `use` may name besides itself. */
static const char *const served[] = { "summarize", "translate", "classify-ticket", NULL };

/* One parameter: Criterion runs each in a child process, so the name lives
 * inside the struct rather than behind a pointer. */
typedef struct inv_case {
    char name[256];
} inv_case;

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.yaml files of the cases directory, sorted by name (malloc'd array of
 * malloc'd strings; free with free_names). Returns the count; an unreadable
 * directory has none. */
static size_t list_cases(char ***out)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(tu_srcpath(CASES_DIR));
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' || !ends_with(e->d_name, ".yaml"))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                char **nv = realloc(v, cap * sizeof *nv);
                if (!nv)
                    abort();
                v = nv;
            }
            if (!(v[n++] = strdup(e->d_name)))
                abort();
        }
        closedir(d);
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_names);
    *out = v;
    return n;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_params(struct criterion_test_params *crp)
{
    cr_free(crp->params);
}

ParameterizedTestParameters(invalid, file)
{
    char **names;
    size_t n = list_cases(&names);
    inv_case *v = cr_calloc(n ? n : 1, sizeof *v);
    if (!v)
        abort();
    for (size_t i = 0; i < n; i++)
        snprintf(v[i].name, sizeof v[i].name, "%s", names[i]);
    free_names(names, n);
    return cr_make_param_array(inv_case, v, n, free_params);
}

/* The expected lines: the "# expect: " lines of the leading comment block,
 * as pointers into TEXT (which is modified: line ends become NULs). */
static size_t read_expectations(char *text, const char ***out)
{
    const char **v = NULL;
    size_t n = 0, cap = 0;
    char *p = text;
    while (*p == '#') {
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol) {
            *eol = '\0';
            if (eol > p && eol[-1] == '\r')
                eol[-1] = '\0';
        }
        if (strncmp(p, EXPECT_PREFIX, strlen(EXPECT_PREFIX)) == 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                const char **nv = realloc(v, cap * sizeof *nv);
                if (!nv)
                    abort();
                v = nv;
            }
            v[n++] = p + strlen(EXPECT_PREFIX);
        }
        p = next;
    }
    *out = v;
    return n;
}

/* LINES joined with "\n" (static buffer, cut when long), for failure messages. */
static const char *join_lines(const char *const *lines, size_t n)
{
    static char buf[16384];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < sizeof buf - 1; i++) {
        int k = snprintf(buf + off, sizeof buf - off, "%s%s", i ? "\n" : "", lines[i]);
        if (k < 0)
            break;
        off += (size_t)k;
    }
    return buf;
}

ParameterizedTest(inv_case *c, invalid, file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tu_srcpath(CASES_DIR), c->name);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert(text, "%s: cannot read the file", c->name);

    /* compile the untouched text; reading the expectations edits a copy */
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, text, len + 1);
    const char **want;
    size_t nwant = read_expectations(copy, &want);
    tu_result *r = tu_compile_len(text, len, NULL);
    tu_check_uses(r, served);

    /* decide and describe, then free, then assert: a failed assertion leaves
     * the test at once, and must not leave leaks behind to report */
    static char actual[16384];
    snprintf(actual, sizeof actual, "%s", tu_dump(r));
    int compiled = r->graph != NULL;
    size_t nactual = r->nlines;
    int same = nactual == nwant;
    for (size_t i = 0; same && i < nwant; i++)
        same = strcmp(r->lines[i], want[i]) == 0;
    static char expected[16384];
    snprintf(expected, sizeof expected, "%s", join_lines(want, nwant));
    tu_result_free(r);
    free(want);
    free(copy);
    free(text);

    cr_assert(nwant > 0, "%s: no '" EXPECT_PREFIX "' lines at the top of the file", c->name);
    cr_assert(!compiled, "%s: compiled without errors; expected:\n%s", c->name, expected);
    cr_assert(same, "%s: diagnostics differ\n--- expected (%zu)\n%s\n--- actual (%zu)\n%s",
              c->name, nwant, expected, nactual, actual);
}

Test(invalid, enough_cases)
{
    size_t n = 0;
    DIR *d = opendir(tu_srcpath(CASES_DIR));
    cr_assert(d, "cannot open %s (is LOOM_SRCDIR set?)", tu_srcpath(CASES_DIR));
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.' && ends_with(e->d_name, ".yaml");
    closedir(d);
    cr_assert_geq(n, MIN_CASES, "%s holds %zu cases, expected at least %d", CASES_DIR, n, MIN_CASES);
}
