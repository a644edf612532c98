/* registry.c -- deep copies of a dsl_registry and of lambda signatures.
 *
 * A compile on another thread gets its own copy, because the original may
 * be rebuilt on a reload meanwhile, and its strings may belong to plugins
 * that are unloaded then. A copy is one allocation, freed with free(), and
 * nothing in it points outside it. It is built in two passes over the same
 * code: the first only measures, the second fills the block it measured. */
#include "dsl/dsl.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

/* A bump allocator over one block; with BASE NULL it only counts. */
typedef struct reg_block {
    char *base;
    size_t used;
} reg_block;

/* SIZE bytes at ALIGN (a power of two) in B: a pointer into B's block, or
 * NULL while measuring. */
static void *take(reg_block *b, size_t size, size_t align)
{
    b->used = (b->used + align - 1) & ~(align - 1);
    void *p = b->base ? b->base + b->used : NULL;
    b->used += size;
    return p;
}

static const char *copy_str(reg_block *b, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = take(b, n, 1);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* A copy of the NULL-terminated list V (NULL stays NULL: unchecked). */
static const char *const *copy_names(reg_block *b, const char *const *v)
{
    if (!v)
        return NULL;
    size_t n = 0;
    while (v[n])
        n++;
    const char **out = take(b, (n + 1) * sizeof *out, alignof(const char *));
    for (size_t i = 0; i < n; i++) {
        const char *s = copy_str(b, v[i]);
        if (out)
            out[i] = s;
    }
    if (out)
        out[n] = NULL;
    return out;
}

/* A copy of the NULL-name terminated ARGS; NULL (accepts anything) stays
 * NULL, and an empty array (takes none) stays an empty array. */
static const dsl_arg *copy_args(reg_block *b, const dsl_arg *args)
{
    if (!args)
        return NULL;
    size_t n = 0;
    while (args[n].name)
        n++;
    dsl_arg *out = take(b, (n + 1) * sizeof *out, alignof(dsl_arg));
    for (size_t i = 0; i < n; i++) {
        const char *name = copy_str(b, args[i].name);
        if (out)
            out[i] = (dsl_arg){ .name = name, .type = args[i].type, .required = args[i].required };
    }
    if (out)
        out[n] = (dsl_arg){ 0 };
    return out;
}

static dsl_lambda_sig *copy_sigs(reg_block *b, const dsl_lambda_sig *sigs)
{
    if (!sigs)
        return NULL;
    size_t n = 0;
    while (sigs[n].name)
        n++;
    dsl_lambda_sig *out = take(b, (n + 1) * sizeof *out, alignof(dsl_lambda_sig));
    for (size_t i = 0; i < n; i++) {
        const char *name = copy_str(b, sigs[i].name);
        const dsl_arg *args = copy_args(b, sigs[i].args);
        if (out)
            out[i] = (dsl_lambda_sig){ .name = name, .args = args };
    }
    if (out)
        out[n] = (dsl_lambda_sig){ 0 };
    return out;
}

static dsl_registry *copy_registry(reg_block *b, const dsl_registry *reg)
{
    dsl_registry *out = take(b, sizeof *out, alignof(dsl_registry));
    const char *const *providers = copy_names(b, reg->providers);
    const char *const *lambdas = copy_names(b, reg->lambdas);
    const char *const *workflows = copy_names(b, reg->workflows);
    const dsl_lambda_sig *sigs = copy_sigs(b, reg->lambda_sigs);
    if (out)
        *out = (dsl_registry){ .providers = providers, .lambdas = lambdas,
                               .workflows = workflows, .lambda_sigs = sigs };
    return out;
}

dsl_registry *dsl_registry_dup(const dsl_registry *reg)
{
    if (!reg)
        return NULL;
    reg_block b = { 0 };
    copy_registry(&b, reg);
    if (!(b.base = malloc(b.used)))
        return NULL;
    b.used = 0;
    return copy_registry(&b, reg);
}

dsl_lambda_sig *dsl_lambda_sigs_dup(const dsl_lambda_sig *sigs)
{
    if (!sigs)
        return NULL;
    reg_block b = { 0 };
    copy_sigs(&b, sigs);
    if (!(b.base = malloc(b.used)))
        return NULL;
    b.used = 0;
    return copy_sigs(&b, sigs);
}
