/* compile_args.c -- a lambda step's `args` against what its plugin declares.
 *
 * When the registry gives the lambda's signature, the mistakes a run would
 * only find when the step starts (a misspelt key the lambda silently
 * ignores, a string where it reads a number, a required argument left out)
 * are reported at compile time, at the node at fault. Only literals are
 * type-checked: a template string renders at run time to whatever its
 * expression gives, so only its key is checked; `args` given as one
 * template is not checked at all. */
#include "dsl/compile.h"

#include <string.h>

#include "dsl/suggest.h"
#include "dsl/template.h"

static const dsl_lambda_sig *find_sig(const dsl_registry *r, const char *fn)
{
    for (size_t i = 0; r && r->lambda_sigs && r->lambda_sigs[i].name; i++)
        if (strcmp(r->lambda_sigs[i].name, fn) == 0)
            return &r->lambda_sigs[i];
    return NULL;
}

static const dsl_arg *find_arg(const dsl_arg *args, const char *name)
{
    for (size_t i = 0; args[i].name; i++)
        if (strcmp(args[i].name, name) == 0)
            return &args[i];
    return NULL;
}

static const char *type_wanted(dsl_arg_type t)
{
    switch (t) {
    case DSL_ARG_STRING: return "a string";
    case DSL_ARG_INT: return "an integer";
    case DSL_ARG_DOUBLE: return "a number";
    case DSL_ARG_BOOL: return "true or false";
    case DSL_ARG_DURATION: return "a duration such as \"500ms\" or \"30s\", or milliseconds";
    case DSL_ARG_JSON: return "any value";
    }
    return "a value";
}

static const char *type_given(const dsl_ynode *y)
{
    if (y->kind == DSL_Y_MAP)
        return "a mapping";
    if (y->kind == DSL_Y_SEQ)
        return "a sequence";
    switch (dsl_yscalar_type(y)) {
    case DSL_YT_NULL: return "null";
    case DSL_YT_BOOL: return "a boolean";
    case DSL_YT_INT: return "an integer";
    case DSL_YT_FLOAT: return "a real number";
    case DSL_YT_STRING: return "a string";
    }
    return "a value";
}

/* 1 if Y is a string with template syntax: its value is known at run time. */
static int is_template(const dsl_ynode *y)
{
    return y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING &&
           !dsl_template_is_literal(y->u.scalar.str, y->u.scalar.len);
}

/* Checks the literal Y given for argument A of lambda FN. 0, or -1 after
 * reporting. */
static int check_value(dsl_cc *cc, const char *fn, const dsl_arg *a, const dsl_ynode *y)
{
    dsl_ytype t = y->kind == DSL_Y_SCALAR ? dsl_yscalar_type(y) : DSL_YT_NULL;
    int scalar = y->kind == DSL_Y_SCALAR;
    int ok = 0;
    switch (a->type) {
    case DSL_ARG_STRING: ok = scalar && t == DSL_YT_STRING; break;
    case DSL_ARG_INT: ok = scalar && t == DSL_YT_INT; break;
    case DSL_ARG_DOUBLE: ok = scalar && (t == DSL_YT_INT || t == DSL_YT_FLOAT); break;
    case DSL_ARG_BOOL: ok = scalar && t == DSL_YT_BOOL; break;
    case DSL_ARG_JSON: ok = 1; break;
    case DSL_ARG_DURATION: {
        int64_t i;
        uint64_t ms;
        const char *why;
        if (scalar && t == DSL_YT_INT) {
            ok = dsl_yscalar_int(y, &i) == 0 && i >= 0;
        } else if (scalar && t == DSL_YT_STRING) {
            if (dsl_parse_duration(y->u.scalar.str, y->u.scalar.len, &ms, &why) < 0) {
                dsl_error(cc->d, y->line, y->col,
                          "invalid duration '%.*s' for argument '%s' of lambda '%.*s': %s; "
                          "e.g. 500ms, 30s, 2m",
                          CC_NAME_SHOWN, y->u.scalar.str, a->name, CC_NAME_SHOWN, fn, why);
                return -1;
            }
            ok = 1;
        }
        break;
    }
    }
    if (ok)
        return 0;
    dsl_error(cc->d, y->line, y->col, "argument '%s' of lambda '%.*s' must be %s, got %s",
              a->name, CC_NAME_SHOWN, fn, type_wanted(a->type),
              a->type == DSL_ARG_DURATION && t == DSL_YT_INT ? "a negative integer" : type_given(y));
    return -1;
}

/* 1 if mapping Y has an undeclared key close enough to NAME to have been
 * reported with "did you mean 'NAME'" already. */
static int misspelt(const dsl_ynode *y, const dsl_arg *args, const char *name)
{
    const char *cand[1] = { name };
    for (size_t i = 0; y && i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        if (!find_arg(args, k->u.scalar.str) &&
            dsl_suggest(k->u.scalar.str, k->u.scalar.len, cand, 1))
            return 1;
    }
    return 0;
}

int cc_check_lambda_args(dsl_cc *cc, const char *fn, const dsl_ynode *args_y, const dsl_ynode *at)
{
    const dsl_lambda_sig *sig = find_sig(cc->opt ? cc->opt->registry : NULL, fn);
    if (!sig || !sig->args)
        return 0;
    const dsl_arg *args = sig->args;
    const dsl_ynode *map = NULL;
    int bad = 0;
    if (args_y && is_template(args_y))
        return 0; /* known at run time only */
    if (args_y && args_y->kind == DSL_Y_MAP) {
        map = args_y;
    } else if (args_y && !(args_y->kind == DSL_Y_SCALAR && dsl_yscalar_type(args_y) == DSL_YT_NULL)) {
        /* null counts as no arguments, as it does for the lambda */
        dsl_error(cc->d, args_y->line, args_y->col, "'args' of lambda '%.*s' must be a mapping, got %s",
                  CC_NAME_SHOWN, fn, type_given(args_y));
        return -1;
    }
    size_t nargs = 0;
    while (args[nargs].name)
        nargs++;
    const char **names = NULL; /* the declared names, for suggestions: made when needed */
    for (size_t i = 0; map && i < map->u.map.n; i++) {
        const dsl_ynode *k = map->u.map.pairs[i].key, *v = map->u.map.pairs[i].value;
        const dsl_arg *a = find_arg(args, k->u.scalar.str);
        if (!a && nargs == 0) {
            dsl_error(cc->d, k->line, k->col,
                      "unknown argument '%.*s' for lambda '%.*s', which takes no arguments",
                      CC_NAME_SHOWN, k->u.scalar.str, CC_NAME_SHOWN, fn);
            bad = 1;
        } else if (!a) {
            if (!names && !(names = dsl_arena_alloc(cc->a, nargs * sizeof *names))) {
                cc_oom(cc);
                return -1;
            }
            for (size_t j = 0; j < nargs; j++)
                names[j] = args[j].name;
            cc_error_suggest(cc, k->line, k->col, k->u.scalar.str, k->u.scalar.len, names, nargs,
                             "unknown argument '%.*s' for lambda '%.*s'", CC_NAME_SHOWN,
                             k->u.scalar.str, CC_NAME_SHOWN, fn);
            bad = 1;
        } else if (!is_template(v) && check_value(cc, fn, a, v) < 0) {
            bad = 1;
        }
    }
    const dsl_ynode *pos = map ? map : args_y ? args_y : at;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i].required || (map && dsl_ymap_get(map, args[i].name)))
            continue;
        bad = 1;
        if (!misspelt(map, args, args[i].name))
            dsl_error(cc->d, pos->line, pos->col, "missing required argument '%s' for lambda '%.*s'",
                      args[i].name, CC_NAME_SHOWN, fn);
    }
    return bad ? -1 : 0;
}
