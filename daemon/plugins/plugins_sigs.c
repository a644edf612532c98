/* plugins_sigs.c -- loom_option declarations as dsl_arg signatures. */
#include "daemon/plugins/plugins_sigs.h"

#include <stdlib.h>

static dsl_arg_type arg_type(loom_opt_type t)
{
    switch (t) {
    case LOOM_OPT_STRING: return DSL_ARG_STRING;
    case LOOM_OPT_INT: return DSL_ARG_INT;
    case LOOM_OPT_DOUBLE: return DSL_ARG_DOUBLE;
    case LOOM_OPT_BOOL: return DSL_ARG_BOOL;
    case LOOM_OPT_DURATION: return DSL_ARG_DURATION;
    case LOOM_OPT_JSON: return DSL_ARG_JSON;
    }
    /* a type newer than this host: whatever it holds, do not refuse it */
    return DSL_ARG_JSON;
}

dsl_lambda_sig *plugins_lambda_sigs(const plugins_t *p)
{
    const char *const *names = plugins_lambda_names(p);
    size_t n = 0, nopts = 0;
    for (; names && names[n]; n++) {
        const loom_option *o = plugins_lambda_find(p, names[n])->def->args;
        for (; o && o->name; o++)
            nopts++;
        nopts++; /* its terminator */
    }
    /* a view that borrows P's strings, then one copy that owns them all */
    dsl_lambda_sig *view = calloc(n + 1, sizeof *view);
    dsl_arg *args = calloc(nopts + 1, sizeof *args);
    dsl_lambda_sig *out = NULL;
    if (!view || !args)
        goto out;
    dsl_arg *at = args;
    for (size_t i = 0; i < n; i++) {
        const loom_option *o = plugins_lambda_find(p, names[i])->def->args;
        view[i].name = names[i];
        if (!o)
            continue;
        view[i].args = at;
        for (; o->name; o++)
            *at++ = (dsl_arg){ .name = o->name, .type = arg_type(o->type),
                               .required = o->required && !o->default_value };
        *at++ = (dsl_arg){ 0 };
    }
    out = dsl_lambda_sigs_dup(view);
out:
    free(view);
    free(args);
    return out;
}
