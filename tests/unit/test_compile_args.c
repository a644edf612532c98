/* test_compile_args.c -- a lambda step's `args` checked against the
 * arguments the registry says the lambda declares: unknown keys (with "did
 * you mean"), literals of the wrong type, required ones left out, each at
 * the node at fault; templates, lambdas without a declaration and
 * registries without signatures left alone; and the registry's deep copy
 * that a compile on another thread uses.
 *
 * Workflows are written as C strings, one YAML line per string, with the
 * line number in a comment where a test asserts a position. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

static const dsl_arg FIND_ARGS[] = {
    { "pattern", DSL_ARG_STRING, true },
    { "group", DSL_ARG_INT, false },
    { "ratio", DSL_ARG_DOUBLE, false },
    { "all", DSL_ARG_BOOL, false },
    { "wait", DSL_ARG_DURATION, false },
    { "extra", DSL_ARG_JSON, false },
    { NULL, DSL_ARG_JSON, false },
};
static const dsl_arg NO_ARGS[] = { { NULL, DSL_ARG_JSON, false } };
static const dsl_lambda_sig SIGS[] = {
    { "t.find", FIND_ARGS },
    { "t.trim", NO_ARGS },   /* takes no arguments */
    { "t.any", NULL },       /* declares none: accepts anything */
    { NULL, NULL },
};
/* t.free is a known lambda without a signature: its args are not checked */
static const char *const LAMBDAS[] = { "t.find", "t.trim", "t.any", "t.free", NULL };
static const dsl_registry REG = { .lambdas = LAMBDAS, .lambda_sigs = SIGS };
static const dsl_options OPT = { .registry = &REG };

#define HDR "loom: 1\nname: t\ndo:\n  chain:\n"

static tu_result *compile_ok_opt(const char *text, const dsl_options *opt)
{
    tu_result *r = tu_compile(text, opt);
    cr_assert(r->nlines == 0, "unexpected diagnostics:\n%s", tu_dump(r));
    cr_assert(r->graph != NULL, "no graph and no diagnostic");
    return r;
}

/* Requires exactly the N lines in WANT (in any order) and no graph. */
static void expect_errors(tu_result *r, const char *const *want, size_t n)
{
    cr_expect(r->graph == NULL, "compiled despite errors");
    cr_expect(eq(sz, r->nlines, n), "%s", tu_dump(r));
    for (size_t i = 0; i < n; i++)
        cr_expect(tu_has(r, want[i]), "no line '%s' in:\n%s", want[i], tu_dump(r));
}

#define EXPECT_ERRORS(r, ...)                                                                 \
    do {                                                                                      \
        static const char *const want_[] = { __VA_ARGS__ };                                   \
        expect_errors((r), want_, sizeof want_ / sizeof *want_);                              \
    } while (0)

/* ---- unknown keys ---- */

Test(args, unknown_keys_with_did_you_mean)
{
    tu_result *r = tu_compile(HDR
        "    - lambda:\n"                                     /* 5 */
        "        fn: t.find\n"                                /* 6 */
        "        args:\n"                                     /* 7 */
        "          pattern: x\n"                              /* 8 */
        "          gruop: 2\n"                                /* 9 */
        "          zzz: 1\n"                                  /* 10 */
        "    - lambda:\n"                                     /* 11 */
        "        fn: t.trim\n"                                /* 12 */
        "        args:\n"                                     /* 13 */
        "          x: 1\n", &OPT);                            /* 14 */
    EXPECT_ERRORS(r,
        "9:11: error: unknown argument 'gruop' for lambda 't.find'; did you mean 'group'?",
        "10:11: error: unknown argument 'zzz' for lambda 't.find'",
        "14:11: error: unknown argument 'x' for lambda 't.trim', which takes no arguments");
    tu_result_free(r);
}

Test(args, a_template_value_still_has_its_key_checked)
{
    tu_result *r = tu_compile(HDR
        "    - lambda:\n"                                     /* 5 */
        "        fn: t.find\n"                                /* 6 */
        "        args:\n"                                     /* 7 */
        "          pattern: '{{ input }}'\n"                  /* 8 */
        "          al: '{{ input }}'\n", &OPT);               /* 9 */
    EXPECT_ERRORS(r, "9:11: error: unknown argument 'al' for lambda 't.find'; did you mean 'all'?");
    tu_result_free(r);
}

/* ---- types ---- */

Test(args, literals_of_the_wrong_type)
{
    tu_result *r = tu_compile(HDR
        "    - lambda:\n"                                     /* 5 */
        "        fn: t.find\n"                                /* 6 */
        "        args:\n"                                     /* 7 */
        "          pattern: 5\n"                              /* 8 */
        "          group: \"2\"\n"                            /* 9 */
        "          ratio: yes\n"                              /* 10 */
        "          all: 1\n"                                  /* 11 */
        "          wait: \"30\"\n"                            /* 12 */
        "    - lambda:\n"                                     /* 13 */
        "        fn: t.find\n"                                /* 14 */
        "        args:\n"                                     /* 15 */
        "          pattern: [a]\n"                            /* 16 */
        "          group: 1.5\n"                              /* 17 */
        "          wait: -3\n"                                /* 18 */
        "          all: { x: 1 }\n"                           /* 19 */
        "          ratio: null\n", &OPT);                     /* 20 */
    EXPECT_ERRORS(r,
        "8:20: error: argument 'pattern' of lambda 't.find' must be a string, got an integer",
        "9:18: error: argument 'group' of lambda 't.find' must be an integer, got a string",
        "10:18: error: argument 'ratio' of lambda 't.find' must be a number, got a string",
        "11:16: error: argument 'all' of lambda 't.find' must be true or false, got an integer",
        "12:17: error: invalid duration '30' for argument 'wait' of lambda 't.find': "
        "a duration needs a unit (ms, s, m or h); e.g. 500ms, 30s, 2m",
        "16:20: error: argument 'pattern' of lambda 't.find' must be a string, got a sequence",
        "17:18: error: argument 'group' of lambda 't.find' must be an integer, got a real number",
        "18:17: error: argument 'wait' of lambda 't.find' must be a duration such as \"500ms\" "
        "or \"30s\", or milliseconds, got a negative integer",
        "19:16: error: argument 'all' of lambda 't.find' must be true or false, got a mapping",
        "20:18: error: argument 'ratio' of lambda 't.find' must be a number, got null");
    tu_result_free(r);
}

Test(args, literals_of_the_right_type)
{
    tu_result *r = compile_ok_opt(HDR
        "    - lambda: { fn: t.find, args: { pattern: 'a', group: 0, ratio: 2, all: false,\n"
        "                                    wait: 1m30s, extra: { a: [1, null] } } }\n"
        "    - lambda: { fn: t.find, args: { pattern: a, ratio: 0.5, wait: 250, extra: null } }\n"
        "    - lambda: { fn: t.find, args: { pattern: a, extra: [x], wait: '500ms' } }\n"
        "    - lambda: { fn: t.trim, args: {} }\n"
        "    - lambda: t.trim\n", &OPT);
    tu_result_free(r);
}

Test(args, template_values_are_not_type_checked)
{
    /* a template renders to whatever its expression gives, at run time */
    tu_result *r = compile_ok_opt(HDR
        "    - lambda:\n"
        "        fn: t.find\n"
        "        args:\n"
        "          pattern: '{{ input.p }}'\n"
        "          group: '{{ input.n }}'\n"
        "          ratio: 'r={{ input.r }}'\n"
        "          all: '{{ input.all }}'\n"
        "          wait: '{{ input.w }}'\n"
        "    - lambda: { fn: t.find, args: '{{ input }}' }\n", &OPT);
    tu_result_free(r);
}

Test(args, args_that_are_not_a_mapping)
{
    tu_result *r = tu_compile(HDR
        "    - lambda:\n"                                     /* 5 */
        "        fn: t.find\n"                                /* 6 */
        "        args: 5\n"                                   /* 7 */
        "    - lambda:\n"                                     /* 8 */
        "        fn: t.trim\n"                                /* 9 */
        "        args: [a]\n"                                 /* 10 */
        "    - lambda:\n"                                     /* 11 */
        "        fn: t.any\n"                                 /* 12 */
        "        args: [a]\n", &OPT);                         /* 13 */
    EXPECT_ERRORS(r,
        "7:15: error: 'args' of lambda 't.find' must be a mapping, got an integer",
        "10:15: error: 'args' of lambda 't.trim' must be a mapping, got a sequence");
    tu_result_free(r);
}

/* ---- required arguments ---- */

Test(args, missing_required_arguments)
{
    tu_result *r = tu_compile(HDR
        "    - lambda: t.find\n"                              /* 5 */
        "    - lambda: { fn: t.find }\n"                      /* 6 */
        "    - lambda:\n"                                     /* 7 */
        "        fn: t.find\n"                                /* 8 */
        "        args:\n"                                     /* 9 */
        "          group: 1\n"                                /* 10 */
        "    - lambda:\n"                                     /* 11 */
        "        fn: t.find\n"                                /* 12 */
        "        args: null\n", &OPT);                        /* 13 */
    EXPECT_ERRORS(r,
        "5:15: error: missing required argument 'pattern' for lambda 't.find'",
        "6:15: error: missing required argument 'pattern' for lambda 't.find'",
        "10:11: error: missing required argument 'pattern' for lambda 't.find'",
        "13:15: error: missing required argument 'pattern' for lambda 't.find'");
    tu_result_free(r);
}

Test(args, a_misspelt_required_argument_is_reported_once)
{
    tu_result *r = tu_compile(HDR
        "    - lambda:\n"                                     /* 5 */
        "        fn: t.find\n"                                /* 6 */
        "        args:\n"                                     /* 7 */
        "          patern: x\n", &OPT);                       /* 8 */
    EXPECT_ERRORS(r,
        "8:11: error: unknown argument 'patern' for lambda 't.find'; did you mean 'pattern'?");
    tu_result_free(r);
}

/* ---- what is not checked ---- */

Test(args, lambdas_without_a_declaration_accept_anything)
{
    tu_result *r = compile_ok_opt(HDR
        "    - lambda: { fn: t.any, args: { whatever: 1, nested: { a: b } } }\n"
        "    - lambda: { fn: t.any, args: 5 }\n"
        "    - lambda: { fn: t.free, args: { x: y } }\n", &OPT);
    tu_result_free(r);
}

Test(args, registry_without_signatures_checks_nothing)
{
    const char *text = HDR
        "    - lambda: { fn: t.find, args: { bogus: 1, group: x } }\n"
        "    - lambda: t.find\n"
        "    - lambda: { fn: t.trim, args: { x: 1 } }\n";
    dsl_registry names_only = { .lambdas = LAMBDAS };
    dsl_options opt = { .registry = &names_only };
    tu_result_free(compile_ok_opt(text, &opt));
    tu_result_free(compile_ok_opt(text, NULL));
    /* signatures without names: a lambda's args are checked, its name not */
    dsl_registry sigs_only = { .lambda_sigs = SIGS };
    opt.registry = &sigs_only;
    tu_result *r = tu_compile(HDR "    - lambda: { fn: t.find, args: { pattern: a, bogus: 1 } }\n"
                                  "    - lambda: { fn: other.fn, args: { bogus: 1 } }\n", &opt);
    EXPECT_ERRORS(r, "5:49: error: unknown argument 'bogus' for lambda 't.find'");
    tu_result_free(r);
}

Test(args, an_unknown_lambda_has_no_args_to_check)
{
    tu_result *r = tu_compile(HDR "    - lambda: { fn: t.fnid, args: { bogus: 1 } }\n", &OPT);
    EXPECT_ERRORS(r, "5:21: error: unknown lambda 't.fnid'; did you mean 't.find'?");
    tu_result_free(r);
}

/* ---- the registry's copy ---- */

static char *dup_or_die(const char *s)
{
    char *d = strdup(s);
    cr_assert(d != NULL);
    return d;
}

Test(registry_dup, a_deep_copy_that_outlives_the_original)
{
    /* the original's strings live in memory freed before the copy is used */
    char *names[] = { dup_or_die("t.find"), dup_or_die("t.trim"), dup_or_die("t.any") };
    char *argn[] = { dup_or_die("pattern"), dup_or_die("group") };
    char *prov = dup_or_die("mock");
    dsl_arg *args = calloc(3, sizeof *args);
    dsl_arg *none = calloc(1, sizeof *none);
    dsl_lambda_sig *sigs = calloc(4, sizeof *sigs);
    const char **lambdas = calloc(4, sizeof *lambdas);
    const char **providers = calloc(2, sizeof *providers);
    cr_assert(args && none && sigs && lambdas && providers);
    args[0] = (dsl_arg){ argn[0], DSL_ARG_STRING, true };
    args[1] = (dsl_arg){ argn[1], DSL_ARG_INT, false };
    sigs[0] = (dsl_lambda_sig){ names[0], args };
    sigs[1] = (dsl_lambda_sig){ names[1], none };
    sigs[2] = (dsl_lambda_sig){ names[2], NULL };
    for (size_t i = 0; i < 3; i++)
        lambdas[i] = names[i];
    providers[0] = prov;
    dsl_registry orig = { .providers = providers, .lambdas = lambdas, .lambda_sigs = sigs };

    dsl_registry *copy = dsl_registry_dup(&orig);
    cr_assert(copy != NULL);
    for (size_t i = 0; i < 3; i++)
        free(names[i]);
    free(argn[0]);
    free(argn[1]);
    free(prov);
    free(args);
    free(none);
    free(sigs);
    free(lambdas);
    free(providers);

    cr_expect(copy->workflows == NULL, "a NULL list stays NULL (unchecked)");
    cr_expect(eq(str, (char *)copy->providers[0], "mock"));
    cr_expect(copy->providers[1] == NULL);
    cr_expect(eq(str, (char *)copy->lambdas[2], "t.any"));
    cr_expect(copy->lambdas[3] == NULL);
    cr_expect(eq(str, (char *)copy->lambda_sigs[0].name, "t.find"));
    cr_expect(eq(str, (char *)copy->lambda_sigs[0].args[1].name, "group"));
    cr_expect(eq(int, copy->lambda_sigs[0].args[1].type, DSL_ARG_INT));
    cr_expect(copy->lambda_sigs[0].args[0].required);
    cr_expect(copy->lambda_sigs[0].args[2].name == NULL);
    cr_expect(copy->lambda_sigs[1].args != NULL && copy->lambda_sigs[1].args[0].name == NULL,
              "takes none stays an empty array");
    cr_expect(copy->lambda_sigs[2].args == NULL, "accepts anything stays NULL");
    cr_expect(copy->lambda_sigs[3].name == NULL);

    /* and it compiles as the original would have */
    dsl_options opt = { .registry = copy };
    tu_result *r = tu_compile(HDR
        "    - lambda: { fn: t.find, args: { pattern: a, gruop: 1 } }\n"
        "    - lambda: { fn: t.trim, args: { a: 1 } }\n"
        "    - lambda: { fn: t.any, args: { a: 1 } }\n", &opt);
    EXPECT_ERRORS(r,
        "5:49: error: unknown argument 'gruop' for lambda 't.find'; did you mean 'group'?",
        "6:37: error: unknown argument 'a' for lambda 't.trim', which takes no arguments");
    tu_result_free(r);
    free(copy);
}

Test(registry_dup, signatures_alone)
{
    dsl_lambda_sig *copy = dsl_lambda_sigs_dup(SIGS);
    cr_assert(copy != NULL);
    cr_expect(copy[0].name != SIGS[0].name, "the strings are copied");
    cr_expect(eq(str, (char *)copy[0].args[4].name, "wait"));
    cr_expect(eq(int, copy[0].args[4].type, DSL_ARG_DURATION));
    cr_expect(copy[1].args && !copy[1].args[0].name);
    cr_expect(copy[2].args == NULL);
    cr_expect(copy[3].name == NULL);
    free(copy);
    cr_expect(dsl_lambda_sigs_dup(NULL) == NULL);
    cr_expect(dsl_registry_dup(NULL) == NULL);
}
