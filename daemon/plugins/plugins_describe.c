/* plugins_describe.c -- every loaded plugin as one JSON document: what
 * `loomctl plugins` prints and docs/lambdas.md is generated from.
 *
 * The document is a stable public interface (the `plugins` op in
 * docs/protocol.md): keys are only ever added. It is built from the
 * registry's normalised descriptors, so a field newer than a plugin's minor
 * reads as absent (null) here too. Plugins come sorted by name, so the
 * output does not depend on the order plugin directories were read in;
 * lambdas, providers and options keep the order their plugin declared them
 * in, which is the order its author chose to present them. */
#include "daemon/plugins/plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *opt_type_name(loom_opt_type t)
{
    switch (t) {
    case LOOM_OPT_STRING: return "string";
    case LOOM_OPT_INT: return "int";
    case LOOM_OPT_DOUBLE: return "double";
    case LOOM_OPT_BOOL: return "bool";
    case LOOM_OPT_DURATION: return "duration";
    case LOOM_OPT_JSON: return "json";
    }
    return "unknown";
}

/* OPTS (NULL-name terminated, may be NULL) as an array (new), or NULL when
 * out of memory. */
static json_t *describe_options(const loom_option *opts)
{
    json_t *a = json_array();

    for (const loom_option *o = opts; a && o && o->name; o++) {
        json_t *e = json_pack("{s:s, s:s, s:b, s:s?, s:s?}", "name", o->name, "type",
                              opt_type_name(o->type), "required", o->required != 0, "default",
                              o->default_value, "description", o->description);
        if (!e || json_array_append_new(a, e) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* A map that may be left undeclared (a lambda's args, a plugin's own
 * options: then anything is accepted and passed on unchecked) is null
 * then, which is not the same as declared empty ([]: nothing accepted). */
static json_t *describe_declared(const loom_option *opts)
{
    return opts ? describe_options(opts) : json_null();
}

static json_t *describe_lambda(const loom_plugin *d, const loom_lambda *l)
{
    char name[512];
    json_t *flags = json_array(), *args = describe_declared(l->args);

    snprintf(name, sizeof name, "%s.%s", d->name, l->name);
    if (!flags || !args)
        goto fail;
    if ((l->flags & LOOM_LAMBDA_PURE) && json_array_append_new(flags, json_string("pure")) < 0)
        goto fail;
    if ((l->flags & LOOM_LAMBDA_FAST) && json_array_append_new(flags, json_string("fast")) < 0)
        goto fail;
    /* "o" steals flags and args, also when the pack fails */
    return json_pack("{s:s, s:s?, s:s?, s:s?, s:o, s:o}", "name", name, "summary", l->summary,
                     "doc", l->doc, "example", l->example, "flags", flags, "args", args);
fail:
    json_decref(flags);
    json_decref(args);
    return NULL;
}

/* V's Batch API (ABI 2.4): its limits per batch, the defaults plugin.h
 * gives filled in; JSON null when it lacks any of the four hooks (so the
 * daemon runs its calls in batch mode directly). NULL when out of memory. */
static json_t *describe_batch_api(const loom_provider *v)
{
    if (!v->batch_line || !v->batch_encode || !v->batch_decode || !v->batch_result)
        return json_null();
    return json_pack("{s:I, s:I}", "max_lines",
                     (json_int_t)(v->batch_max_lines ? v->batch_max_lines : 50000), "max_bytes",
                     (json_int_t)(v->batch_max_bytes ? v->batch_max_bytes : 100 << 20));
}

static json_t *describe_provider(const loom_provider *v)
{
    json_t *opts = describe_options(v->options), *batch = describe_batch_api(v);

    if (!opts || !batch) {
        json_decref(opts);
        json_decref(batch);
        return NULL;
    }
    return json_pack("{s:s, s:s?, s:s?, s:s, s:I, s:o, s:o}", "name", v->name, "summary",
                     v->summary, "doc", v->doc, "transport", v->invoke ? "invoke" : "http",
                     "max_batch", (json_int_t)v->max_batch, "batch_api", batch, "options", opts);
}

static json_t *describe_plugin(const loom_plugin *d, const char *origin, bool builtin,
                               bool isolated)
{
    char abi[32];
    json_t *lambdas = json_array(), *providers = json_array();
    json_t *opts = describe_declared(d->options);

    if (!lambdas || !providers || !opts)
        goto fail;
    for (size_t i = 0; i < d->nlambdas; i++)
        if (json_array_append_new(lambdas, describe_lambda(d, &d->lambdas[i])) < 0)
            goto fail;
    for (size_t i = 0; i < d->nproviders; i++)
        if (json_array_append_new(providers, describe_provider(&d->providers[i])) < 0)
            goto fail;
    snprintf(abi, sizeof abi, "%u.%u", (unsigned)d->abi_major, (unsigned)d->abi_minor);
    return json_pack("{s:s, s:s?, s:s?, s:s?, s:s, s:b, s:b, s:o, s:o, s:o}", "name", d->name,
                     "version", d->version, "description", d->description, "file",
                     builtin ? NULL : origin, "abi", abi, "builtin", builtin, "isolated",
                     isolated, "options", opts, "lambdas", lambdas, "providers", providers);
fail:
    json_decref(lambdas);
    json_decref(providers);
    json_decref(opts);
    return NULL;
}

/* One plugin as the registry lists it, for sorting. */
typedef struct entry {
    const loom_plugin *desc;
    const char *origin;
    bool builtin;
} entry;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->desc->name, ((const entry *)b)->desc->name);
}

json_t *plugins_describe(const plugins_t *p, plugins_isolated_fn isolated, void *ud)
{
    size_t n = plugins_count(p);
    entry *sorted = calloc(n ? n : 1, sizeof *sorted);
    json_t *list = json_array();
    char abi[32];

    if (!sorted || !list)
        goto fail;
    for (size_t i = 0; i < n; i++)
        sorted[i].desc = plugins_nth(p, i, &sorted[i].origin, &sorted[i].builtin);
    if (n > 1)
        qsort(sorted, n, sizeof *sorted, by_name);
    for (size_t i = 0; i < n; i++) {
        const entry *e = &sorted[i];
        bool iso = isolated && isolated(ud, e->desc->name);
        if (json_array_append_new(list, describe_plugin(e->desc, e->origin, e->builtin, iso)) < 0)
            goto fail;
    }
    free(sorted);
    snprintf(abi, sizeof abi, "%d.%d", LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    return json_pack("{s:s, s:o}", "abi", abi, "plugins", list);
fail:
    free(sorted);
    json_decref(list);
    return NULL;
}
