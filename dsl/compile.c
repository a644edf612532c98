/* compile.c -- a workflow file's top level, and the compiler's entry points.
 *
 * Order matters: `defaults` and `input` are read before `do`, so leaves get
 * their defaults as they are built and templates can be checked against the
 * declared input; template references are checked last, once every id in
 * the file is known (a forward reference is then a clear "runs after this
 * point", not an "unknown step"). */
#include "dsl/compile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const workflow_keys[] = { "loom", "name", "description", "input", "vars",
                                             "defaults", "timeout", "budget", "prompt_cache",
                                             "do", NULL };
static const char *const budget_keys[] = { "usd", NULL };
static const char *const defaults_keys[] = { "provider", "model", "timeout", "retry",
                                             "max_concurrency", "temperature", "max_tokens",
                                             "top_p", "stop", "seed", NULL };
static const char *const field_keys[] = { "type", "required", "default", "description", NULL };

#define DEFAULT_MAX_CONCURRENCY 16

static int json_has_type(const json_t *v, dsl_type t)
{
    switch (t) {
    case DSL_TYPE_ANY: return 1;
    case DSL_TYPE_STRING: return json_is_string(v);
    case DSL_TYPE_NUMBER: return json_is_number(v);
    case DSL_TYPE_INTEGER: return json_is_integer(v);
    case DSL_TYPE_BOOLEAN: return json_is_boolean(v);
    case DSL_TYPE_OBJECT: return json_is_object(v);
    case DSL_TYPE_ARRAY: return json_is_array(v);
    }
    return 0;
}

static int parse_type(dsl_cc *cc, const dsl_ynode *y, dsl_type *out)
{
    const char *s = cc_string(cc, y, "type");
    if (!s)
        return -1;
    int t = dsl_type_find(s);
    if (t < 0) {
        cc_error_suggest(cc, y->line, y->col, s, strlen(s), dsl_type_names(), (size_t)-1,
                         "unknown type '%.64s' (use string, number, integer, boolean, object, array or any)", s);
        return -1;
    }
    *out = (dsl_type)t;
    return 0;
}

static void compile_input(dsl_cc *cc, const dsl_ynode *y)
{
    dsl_graph *g = cc->g;
    cc->inputs_y = y;
    if (!cc_want_map(cc, y, "input"))
        return;
    g->inputs_declared = true;
    g->inputs = dsl_arena_alloc(cc->a, (y->u.map.n ? y->u.map.n : 1) * sizeof *g->inputs);
    if (!g->inputs) {
        cc_oom(cc);
        return;
    }
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key, *v = y->u.map.pairs[i].value, *x;
        dsl_input_field *f = &g->inputs[g->ninputs];
        if (!cc_is_ident(k->u.scalar.str, k->u.scalar.len)) {
            dsl_error(cc->d, k->line, k->col,
                      "'%.64s' is not a valid input field name (letters, digits, '_' and '-')",
                      k->u.scalar.str);
            continue;
        }
        f->name = dsl_arena_strndup(cc->a, k->u.scalar.str, k->u.scalar.len);
        f->required = true;
        /* A field whose type is wrong is still declared (as `any`), so its
         * uses are not reported a second time as unknown fields. */
        if (v->kind == DSL_Y_SCALAR) {
            if (parse_type(cc, v, &f->type) < 0)
                f->type = DSL_TYPE_ANY;
        } else if (cc_want_map(cc, v, f->name)) {
            cc_check_keys(cc, v, field_keys, "input field");
            int b;
            if (!(x = dsl_ymap_get(v, "type")))
                dsl_error(cc->d, v->line, v->col, "missing required key 'type' in input field '%s'", f->name);
            else if (parse_type(cc, x, &f->type) < 0)
                f->type = DSL_TYPE_ANY;
            if ((x = dsl_ymap_get(v, "description")))
                f->description = cc_string(cc, x, "description");
            if ((x = dsl_ymap_get(v, "default"))) {
                json_t *d = cc_json(cc, x);
                if (d && dsl_arena_own_json(cc->a, d) == 0) {
                    if (json_has_type(d, f->type)) {
                        f->default_value = d;
                        f->required = false;
                    } else {
                        dsl_error(cc->d, x->line, x->col, "default of '%s' must be of type %s",
                                  f->name, dsl_type_name(f->type));
                    }
                }
            }
            if ((x = dsl_ymap_get(v, "required")) && cc_bool(cc, x, "required", &b) == 0) {
                if (b && f->default_value)
                    dsl_error(cc->d, x->line, x->col,
                              "input field '%s' has a default, so it cannot be required", f->name);
                else
                    f->required = b;
            }
        }
        g->ninputs++;
    }
}

/* `budget: { usd: N }`: what each job of the workflow may spend on provider
 * calls (the engine enforces it with the submit's own budget, whichever is
 * tighter). */
static void compile_budget(dsl_cc *cc, const dsl_ynode *y)
{
    const dsl_ynode *u;
    double v;
    if (!cc_want_map(cc, y, "budget"))
        return;
    cc_check_keys(cc, y, budget_keys, "budget");
    if (!(u = dsl_ymap_get(y, "usd"))) {
        cc_missing(cc, y, "usd", "budget");
        return;
    }
    if (cc_number(cc, u, "usd", 0, 1e12, &v) == 0) {
        cc->g->has_budget = true;
        cc->g->budget_usd = v;
    }
}

static void compile_defaults(dsl_cc *cc, const dsl_ynode *y)
{
    dsl_defaults *d = &cc->g->defaults;
    const dsl_ynode *x;
    int64_t i;
    if (!cc_want_map(cc, y, "defaults"))
        return;
    cc_check_keys(cc, y, defaults_keys, "defaults");
    if ((x = dsl_ymap_get(y, "provider"))) {
        d->provider = cc_string(cc, x, "provider");
        cc->defaults_provider_y = x;
        const dsl_registry *r = cc->opt ? cc->opt->registry : NULL;
        if (d->provider && r && r->providers) {
            size_t k;
            for (k = 0; r->providers[k]; k++)
                if (strcmp(r->providers[k], d->provider) == 0)
                    break;
            if (!r->providers[k])
                cc_error_suggest(cc, x->line, x->col, d->provider, strlen(d->provider), r->providers,
                                 (size_t)-1, "unknown provider '%.64s'", d->provider);
        }
    }
    if ((x = dsl_ymap_get(y, "model")))
        d->model = cc_string(cc, x, "model");
    if ((x = dsl_ymap_get(y, "timeout")))
        cc_duration(cc, x, "timeout", &d->timeout_ms);
    if ((x = dsl_ymap_get(y, "retry"))) {
        dsl_retry base = d->retry;
        cc_retry(cc, x, &base, &d->retry);
    }
    if ((x = dsl_ymap_get(y, "max_concurrency")) && cc_int(cc, x, "max_concurrency", 1, 100000, &i) == 0)
        d->max_concurrency = (int)i;
    cc_gen_params(cc, y, d->params);
}

static void compile_vars(dsl_cc *cc, const dsl_ynode *y)
{
    cc->vars_y = y;
    if (!cc_want_map(cc, y, "vars"))
        return;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        if (!cc_is_ident(k->u.scalar.str, k->u.scalar.len))
            dsl_error(cc->d, k->line, k->col,
                      "'%.64s' is not a valid var name (letters, digits, '_' and '-', starting with a "
                      "letter or '_')", k->u.scalar.str);
    }
    cc->g->vars = cc_tvalue(cc, y, NULL, CC_SITE_VARS);
}

static void hash_version(dsl_graph *g, const char *buf, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
    snprintf(g->version, sizeof g->version, "%016llx", (unsigned long long)h);
}

/* Adds U's workflow to the graph's uses unless SEEN has it. */
static void add_use(dsl_cc *cc, cc_idmap *seen, const dsl_node *u)
{
    dsl_graph *g = cc->g;
    if (!u->u.use.workflow || cc_idmap_get(seen, u->u.use.workflow))
        return;
    if (cc_idmap_put(seen, u->u.use.workflow, (void *)u) < 0) {
        cc_oom(cc);
        return;
    }
    g->uses[g->nuses] = u->u.use.workflow;
    g->use_nodes[g->nuses++] = u;
}

/* Distinct `use` targets, for the cross-file checks: `use` nodes, and the
 * `use:` tools of calls (their nodes are not among the indexed ones). */
static void collect_uses(dsl_cc *cc)
{
    dsl_graph *g = cc->g;
    size_t n = 0;
    for (size_t i = 0; i < cc->nnodes; i++) {
        const dsl_node *x = cc->nodes[i];
        n += x->kind == DSL_USE;
        for (size_t t = 0; x->kind == DSL_CALL && t < x->u.call.ntools; t++)
            n += x->u.call.tools[t].kind == DSL_TOOL_USE;
    }
    if (!n)
        return;
    g->uses = dsl_arena_alloc(cc->a, n * sizeof *g->uses);
    g->use_nodes = dsl_arena_alloc(cc->a, n * sizeof *g->use_nodes);
    if (!g->uses || !g->use_nodes) {
        cc_oom(cc);
        return;
    }
    cc_idmap seen = { 0 };
    for (size_t i = 0; i < cc->nnodes && !cc->oom; i++) {
        const dsl_node *x = cc->nodes[i];
        if (x->kind == DSL_USE)
            add_use(cc, &seen, x);
        for (size_t t = 0; x->kind == DSL_CALL && t < x->u.call.ntools; t++)
            if (x->u.call.tools[t].kind == DSL_TOOL_USE)
                add_use(cc, &seen, x->u.call.tools[t].node);
    }
    cc_idmap_free(&seen);
}

static void compile_workflow(dsl_cc *cc, const dsl_ynode *root)
{
    dsl_graph *g = cc->g;
    const dsl_ynode *y;
    if (root->kind != DSL_Y_MAP) {
        dsl_error(cc->d, root->line, root->col, "a workflow must be a mapping with keys loom, name and do, got a %s",
                  dsl_ynode_describe(root));
        return;
    }
    cc_check_keys(cc, root, workflow_keys, "workflow");
    if (!(y = dsl_ymap_get(root, "loom"))) {
        dsl_error(cc->d, root->line, root->col, "missing required key 'loom' (the language version: write 'loom: 1')");
    } else {
        int64_t v;
        if (y->kind != DSL_Y_SCALAR || dsl_yscalar_int(y, &v) < 0)
            dsl_error(cc->d, y->line, y->col, "'loom' must be the language version, an integer: write 'loom: 1'");
        else if (v != DSL_VERSION)
            dsl_error(cc->d, y->line, y->col, "unsupported language version %lld: this compiler reads 'loom: %d'",
                      (long long)v, DSL_VERSION);
    }
    if (!(y = dsl_ymap_get(root, "name"))) {
        dsl_error(cc->d, root->line, root->col, "missing required key 'name' in workflow");
        g->name = "";
    } else if ((g->name = cc_string(cc, y, "name"))) {
        cc_workflow_name_ok(cc, y, g->name);
    } else {
        g->name = "";
    }
    if ((y = dsl_ymap_get(root, "description")))
        g->description = cc_string(cc, y, "description");
    if ((y = dsl_ymap_get(root, "timeout")))
        cc_duration(cc, y, "timeout", &g->timeout_ms);
    if ((y = dsl_ymap_get(root, "budget")))
        compile_budget(cc, y);
    if ((y = dsl_ymap_get(root, "prompt_cache"))) {
        int b;
        if (cc_bool(cc, y, "prompt_cache", &b) == 0)
            g->prompt_cache = b;
    }
    if ((y = dsl_ymap_get(root, "input")))
        compile_input(cc, y);
    if ((y = dsl_ymap_get(root, "defaults")))
        compile_defaults(cc, y);
    if ((y = dsl_ymap_get(root, "vars")))
        compile_vars(cc, y);
    if (!(y = dsl_ymap_get(root, "do")))
        dsl_error(cc->d, root->line, root->col, "missing required key 'do' in workflow (the node to run)");
    else
        g->root = cc_node(cc, y, NULL, "do");
    if (cc->oom)
        return;
    cc_batch_inherit(cc);
    cc_check_templates(cc);
    collect_uses(cc);
}

static dsl_graph *graph_new(dsl_cc *cc, const char *file)
{
    dsl_arena *a = dsl_arena_new();
    if (!a)
        return NULL;
    dsl_graph *g = dsl_arena_alloc(a, sizeof *g);
    if (!g)
        goto fail;
    g->arena = a;
    g->refcount = 1;
    if (!(g->file = dsl_arena_strdup(a, file)))
        goto fail;
    g->defaults.retry = (dsl_retry){
        .max_attempts = 1,
        .initial_delay_ms = 500,
        .multiplier = 2.0,
        .max_delay_ms = 30000,
        .on = (1u << DSL_ERR_TIMEOUT) | (1u << DSL_ERR_RATE_LIMITED) | (1u << DSL_ERR_UPSTREAM),
    };
    g->defaults.max_concurrency = DEFAULT_MAX_CONCURRENCY;
    g->defaults.params = json_object();
    if (!g->defaults.params || dsl_arena_own_json(a, g->defaults.params) < 0)
        goto fail;
    cc->a = a;
    cc->g = g;
    return g;
fail:
    dsl_arena_free(a);
    return NULL;
}

size_t dsl_max_file_size(const dsl_options *opt)
{
    return opt && opt->max_file_size ? opt->max_file_size : DSL_DEFAULT_MAX_FILE;
}

void dsl_error_unreadable(dsl_diags *diags, int errnum, const dsl_options *opt)
{
    if (errnum == EFBIG)
        dsl_error(diags, 0, 0, "file is larger than the %zu MiB limit", dsl_max_file_size(opt) >> 20);
    else
        dsl_error(diags, 0, 0, "cannot read: %s", strerror(errnum));
}

dsl_graph *dsl_compile(const char *file, const char *buf, size_t len, const dsl_options *opt,
                       dsl_diags *diags)
{
    dsl_cc cc = { .opt = opt, .d = diags };
    dsl_ydoc *doc = NULL;
    size_t errors_before = diags->nerrors;
    size_t max_file = dsl_max_file_size(opt);
    if (len > max_file) {
        dsl_error(diags, 0, 0, "file is larger than the %zu MiB limit", max_file >> 20);
        return NULL;
    }
    if (!graph_new(&cc, file ? file : "<input>")) {
        dsl_error(diags, 0, 0, "out of memory");
        return NULL;
    }
    doc = dsl_yaml_load(buf, len, opt ? &opt->limits : NULL, diags);
    if (!doc) {
        if (diags->nerrors == errors_before)
            dsl_error(diags, 0, 0, "out of memory");
        goto fail;
    }
    cc.doc = doc;
    if (!doc->root) {
        dsl_error(diags, 0, 0, "empty workflow: expected a mapping with keys loom, name and do");
        goto fail;
    }
    /* YAML-level errors that still gave a tree (a duplicate key, say) do not
     * stop the checks: the user sees every error in one pass */
    compile_workflow(&cc, doc->root);
    if (diags->nerrors != errors_before || cc.oom)
        goto fail;
    hash_version(cc.g, buf, len);
    /* the text the version names: a job's record keeps it, so the job can be
     * compiled again as it was after its file changed */
    if (!(cc.g->source = dsl_arena_alloc(cc.a, len + 1))) {
        dsl_error(diags, 0, 0, "out of memory");
        goto fail;
    }
    if (len)
        memcpy(cc.g->source, buf, len);
    cc.g->source[len] = '\0';
    cc.g->source_len = len;
    cc.g->nodes = cc.nodes;
    cc.g->nnodes = cc.nnodes;
    cc.nodes = NULL;
    dsl_diags_sort(diags);
    free(cc.info);
    free(cc.tpls);
    cc_idmap_free(&cc.ids);
    dsl_ydoc_free(doc);
    return cc.g;
fail:
    dsl_diags_sort(diags);
    free(cc.nodes);
    free(cc.info);
    free(cc.tpls);
    cc_idmap_free(&cc.ids);
    dsl_ydoc_free(doc);
    dsl_graph_unref(cc.g);
    return NULL;
}
