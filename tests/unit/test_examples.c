/* test_examples.c -- the example workflows under workflows/.
 *
 * Every `*.yaml` found there (the directory is scanned when the tests start,
 * so a new example is tested without touching this file) must compile with no
 * diagnostic at all, be named after its file, declare its input, and come with
 * a sample NAME.input.json that holds every required field with the declared
 * type. All examples together must also pass the cross-file `use` check. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

#define EXAMPLES_DIR "workflows"
#define YAML_SUFFIX ".yaml"
#define INPUT_SUFFIX ".input.json"
#define MAX_EXAMPLES 512

/* One example, named by its file's base name (without ".yaml"). */
typedef struct example {
    char *base;
} example;

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The base names of every file in workflows/ ending in SUFFIX, sorted, as a
 * malloc'd array of malloc'd strings; the count goes to *N. Hidden files are
 * skipped. Returns NULL (and *N = 0) when the directory cannot be read. */
static char **scan_examples(const char *suffix, size_t *n)
{
    *n = 0;
    DIR *dir = opendir(tu_srcpath(EXAMPLES_DIR));
    if (!dir)
        return NULL;
    char **names = calloc(MAX_EXAMPLES, sizeof *names);
    if (!names) {
        closedir(dir);
        return NULL;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && *n < MAX_EXAMPLES) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, suffix))
            continue;
        names[*n] = strndup(e->d_name, strlen(e->d_name) - strlen(suffix));
        if (names[*n])
            (*n)++;
    }
    closedir(dir);
    qsort(names, *n, sizeof *names, cmp_names);
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* workflows/BASE+SUFFIX under the source tree, in a new string. */
static char *example_path(const char *base, const char *suffix)
{
    char rel[1024];
    snprintf(rel, sizeof rel, "%s/%s%s", EXAMPLES_DIR, base, suffix);
    char *p = strdup(tu_srcpath(rel));
    cr_assert(p != NULL);
    return p;
}

/* Every diagnostic of D, one per line, for failure messages (static buffer). */
static const char *dump_diags(const dsl_diags *d)
{
    static char buf[16384];
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < d->n && off < sizeof buf - 1; i++) {
        char *s = dsl_diag_format(d, i);
        int k = snprintf(buf + off, sizeof buf - off, "\n  %s", s ? s : "(out of memory)");
        free(s);
        if (k < 0)
            break;
        off += (size_t)k;
    }
    return buf;
}

static int json_has_type(const json_t *v, dsl_type t)
{
    switch (t) {
    case DSL_TYPE_ANY:
        return 1;
    case DSL_TYPE_STRING:
        return json_is_string(v);
    case DSL_TYPE_NUMBER:
        return json_is_number(v);
    case DSL_TYPE_INTEGER:
        return json_is_integer(v);
    case DSL_TYPE_BOOLEAN:
        return json_is_boolean(v);
    case DSL_TYPE_OBJECT:
        return json_is_object(v);
    case DSL_TYPE_ARRAY:
        return json_is_array(v);
    }
    return 0;
}

/* ---- the parameter list: one entry per workflows/ *.yaml ---- */

static char *shared_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = cr_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void free_examples(struct criterion_test_params *p)
{
    example *v = p->params;
    for (size_t i = 0; i < p->length; i++)
        cr_free(v[i].base);
    cr_free(v);
}

ParameterizedTestParameters(examples, each)
{
    size_t n = 0;
    char **names = scan_examples(YAML_SUFFIX, &n);
    example *v = n ? cr_calloc(n, sizeof *v) : NULL;
    size_t k = 0;
    for (size_t i = 0; v && i < n; i++) {
        v[k].base = shared_strdup(names[i]);
        if (v[k].base)
            k++;
    }
    free_names(names, n);
    return cr_make_param_array(example, v, k, free_examples);
}

/* Reads and compiles the workflow at PATH, as loomctl would. */
static dsl_graph *compile_path(const char *path, dsl_diags *d)
{
    size_t len;
    char *buf = tu_read_file(path, &len);
    cr_assert(buf != NULL, "cannot read %s", path);
    dsl_graph *g = dsl_compile(path, buf, len, NULL, d);
    free(buf);
    return g;
}

ParameterizedTest(example *ex, examples, each)
{
    char *path = example_path(ex->base, YAML_SUFFIX);
    dsl_diags d;
    dsl_diags_init(&d, path);
    dsl_graph *g = compile_path(path, &d);

    cr_assert(eq(sz, d.n, 0), "%s" YAML_SUFFIX ": expected no diagnostics, got:%s",
              ex->base, dump_diags(&d));
    cr_assert(g != NULL, "%s" YAML_SUFFIX ": no graph", ex->base);
    cr_assert(g->name != NULL && strcmp(g->name, ex->base) == 0,
              "%s" YAML_SUFFIX ": `name` is \"%s\", expected the file's base name",
              ex->base, g->name ? g->name : "(null)");
    cr_assert(g->description != NULL && g->description[0] != '\0',
              "%s" YAML_SUFFIX ": no description", ex->base);
    cr_assert(g->inputs_declared, "%s" YAML_SUFFIX ": no `input:` schema", ex->base);

    /* the sample input */
    char *ipath = example_path(ex->base, INPUT_SUFFIX);
    json_error_t jerr;
    json_t *input = json_load_file(ipath, 0, &jerr);
    char where[32] = "";
    if (!input && jerr.line > 0)
        snprintf(where, sizeof where, ":%d", jerr.line);
    cr_assert(input != NULL, "%s" INPUT_SUFFIX "%s: %s", ex->base, where, jerr.text);
    int is_object = json_is_object(input);
    cr_assert(is_object, "%s" INPUT_SUFFIX ": not a JSON object", ex->base);

    for (size_t i = 0; i < g->ninputs; i++) {
        const dsl_input_field *f = &g->inputs[i];
        json_t *v = json_object_get(input, f->name);
        if (!v) {
            cr_assert(not(f->required), "%s" INPUT_SUFFIX ": required field \"%s\" is missing",
                      ex->base, f->name);
            continue;
        }
        int typed = json_has_type(v, f->type);
        cr_assert(typed,
                  "%s" INPUT_SUFFIX ": field \"%s\" should be of type %s", ex->base,
                  f->name, dsl_type_name(f->type));
    }

    /* and nothing the schema does not declare */
    const char *key;
    json_t *value;
    json_object_foreach(input, key, value) {
        (void)value;
        int declared = 0;
        for (size_t i = 0; i < g->ninputs && !declared; i++)
            declared = strcmp(g->inputs[i].name, key) == 0;
        cr_assert(declared, "%s" INPUT_SUFFIX ": field \"%s\" is not declared in `input:`",
                  ex->base, key);
    }

    /* the graph can be shown, as `loomctl graph` would */
    json_t *gj = dsl_emit_json(g);
    cr_assert(gj != NULL, "%s" YAML_SUFFIX ": dsl_emit_json failed", ex->base);
    json_decref(gj);
    size_t dotlen = 0;
    char *dot = dsl_emit_dot(g, &dotlen);
    cr_assert(dot != NULL, "%s" YAML_SUFFIX ": dsl_emit_dot failed", ex->base);
    cr_assert(eq(sz, dotlen, strlen(dot)));
    cr_assert(strstr(dot, "digraph") != NULL,
              "%s" YAML_SUFFIX ": DOT output has no digraph", ex->base);

    free(dot);
    json_decref(input);
    free(ipath);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
    free(path);
}

/* ---- the directory as a whole ---- */

Test(examples, present)
{
    size_t n = 0;
    char **names = scan_examples(YAML_SUFFIX, &n);
    cr_assert(names != NULL, "cannot read %s", tu_srcpath(EXAMPLES_DIR));
    /* one per pattern at least: chain+gate, route, parallel, vote, map,
     * matrix, embed, use, lambda, retry/fallback */
    cr_assert(ge(sz, n, 10), "only %zu example workflows", n);
    free_names(names, n);
}

Test(examples, no_orphan_inputs)
{
    size_t n = 0;
    char **names = scan_examples(INPUT_SUFFIX, &n);
    cr_assert(names != NULL, "cannot read %s", tu_srcpath(EXAMPLES_DIR));
    for (size_t i = 0; i < n; i++) {
        char *p = example_path(names[i], YAML_SUFFIX);
        FILE *f = fopen(p, "r");
        cr_assert(f != NULL, "%s" INPUT_SUFFIX " has no %s" YAML_SUFFIX, names[i], names[i]);
        fclose(f);
        free(p);
    }
    free_names(names, n);
}

Test(examples, uses_resolve)
{
    size_t n = 0;
    char **names = scan_examples(YAML_SUFFIX, &n);
    cr_assert(names != NULL && n > 0, "no example workflows found");

    dsl_graph **graphs = calloc(n, sizeof *graphs);
    dsl_diags *diags = calloc(n, sizeof *diags);
    dsl_diags **dp = calloc(n, sizeof *dp);
    cr_assert(graphs && diags && dp);
    size_t uses = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = example_path(names[i], YAML_SUFFIX);
        dsl_diags_init(&diags[i], path);
        dp[i] = &diags[i];
        graphs[i] = compile_path(path, &diags[i]);
        cr_assert(graphs[i] != NULL, "%s" YAML_SUFFIX " does not compile:%s", names[i],
                  dump_diags(&diags[i]));
        uses += graphs[i]->nuses;
        free(path);
    }
    cr_assert(gt(sz, uses, 0), "no example shows `use`");

    size_t errors = dsl_check_uses(graphs, (const char *const *)names, n, NULL, dp);
    for (size_t i = 0; i < n; i++)
        cr_expect(eq(sz, diags[i].n, 0), "%s" YAML_SUFFIX ":%s", names[i],
                  dump_diags(&diags[i]));
    cr_assert(eq(sz, errors, 0));

    for (size_t i = 0; i < n; i++) {
        dsl_graph_unref(graphs[i]);
        dsl_diags_free(&diags[i]);
    }
    free(dp);
    free(diags);
    free(graphs);
    free_names(names, n);
}
