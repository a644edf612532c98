/* emit_json.c -- a compiled graph as one JSON document, for `loomctl graph`.
 *
 * The document mirrors dsl_graph node for node, so a user (or a tool) can see
 * exactly what the compiler understood: defaults applied, durations in
 * milliseconds, templates shown as the source text they were parsed from.
 * Keys are added in a fixed order and jansson (>= 2.14) dumps objects in
 * insertion order, so the same graph always yields the same bytes.
 *
 * Every builder returns a new reference or NULL when out of memory, and
 * json_object_set_new / json_array_append_new steal their value even on
 * failure, so a NULL from a nested builder simply fails the set. */
#include "dsl/dsl.h"

/* Nesting is bounded by the YAML loader's depth limit (256 levels, and a node
 * takes at least two), so recursion over nodes is shallow by construction. */
static json_t *node_json(const dsl_node *n);

/* A string or JSON null for NULL. New reference. */
static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* Adds KEY: VALUE to O (VALUE stolen). Returns 0, or -1 on failure. */
static int put(json_t *o, const char *key, json_t *value)
{
    return json_object_set_new(o, key, value);
}

static json_t *template_json(const dsl_template *t)
{
    return t ? str_or_null(t->source) : json_null();
}

/* A template value: constants as their JSON (copied: the graph's values must
 * stay untouched whatever the caller does with the document), templates as
 * their source, arrays and objects structurally. */
static json_t *tvalue_json(const dsl_tvalue *tv)
{
    if (!tv)
        return json_null();
    switch (tv->kind) {
    case DSL_TV_CONST:
        return tv->constant ? json_deep_copy(tv->constant) : json_null();
    case DSL_TV_TEMPLATE:
        return template_json(tv->tpl);
    case DSL_TV_ARRAY: {
        json_t *a = json_array();
        if (!a)
            return NULL;
        for (size_t i = 0; i < tv->n; i++)
            if (json_array_append_new(a, tvalue_json(tv->items[i])) < 0)
                goto fail_array;
        return a;
    fail_array:
        json_decref(a);
        return NULL;
    }
    case DSL_TV_OBJECT: {
        json_t *o = json_object();
        if (!o)
            return NULL;
        for (size_t i = 0; i < tv->n; i++)
            if (put(o, tv->keys[i], tvalue_json(tv->items[i])) < 0)
                goto fail_object;
        return o;
    fail_object:
        json_decref(o);
        return NULL;
    }
    }
    return json_null();
}

static json_t *strings_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) < 0)
            goto fail;
    return a;
fail:
    json_decref(a);
    return NULL;
}

static json_t *retry_json(const dsl_retry *r)
{
    json_t *o = json_object();
    json_t *on = json_array();
    if (!o || !on)
        goto fail;
    for (int c = 0; c < DSL_ERR_CLASS_COUNT; c++)
        if ((r->on & (1u << c)) &&
            json_array_append_new(on, json_string(dsl_error_class_name((dsl_error_class)c))) < 0)
            goto fail;
    if (put(o, "max_attempts", json_integer(r->max_attempts)) < 0 ||
        put(o, "initial_delay_ms", json_integer((json_int_t)r->initial_delay_ms)) < 0 ||
        put(o, "multiplier", json_real(r->multiplier)) < 0 ||
        put(o, "max_delay_ms", json_integer((json_int_t)r->max_delay_ms)) < 0)
        goto fail;
    if (put(o, "on", on) < 0) {
        on = NULL;
        goto fail;
    }
    return o;
fail:
    json_decref(on);
    json_decref(o);
    return NULL;
}

static const char *on_error_name(dsl_on_error e)
{
    switch (e) {
    case DSL_ON_ERROR_FAIL: return "fail";
    case DSL_ON_ERROR_PARTIAL: return "partial";
    case DSL_ON_ERROR_TOLERATE: return "tolerate";
    }
    return "fail";
}

static const char *strategy_name(dsl_vote_strategy s)
{
    switch (s) {
    case DSL_VOTE_MAJORITY: return "majority";
    case DSL_VOTE_UNANIMOUS: return "unanimous";
    case DSL_VOTE_AT_LEAST: return "at_least";
    case DSL_VOTE_PLURALITY: return "plurality";
    case DSL_VOTE_JUDGE: return "judge";
    }
    return "majority";
}

/* A node or null. */
static json_t *node_or_null(const dsl_node *n)
{
    return n ? node_json(n) : json_null();
}

static json_t *messages_json(const dsl_message *m, size_t n)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object();
        if (json_array_append_new(a, o) < 0 ||
            put(o, "role", str_or_null(m[i].role)) < 0 ||
            put(o, "content", tvalue_json(m[i].content)) < 0)
            goto fail;
    }
    return a;
fail:
    json_decref(a);
    return NULL;
}

/* Labelled children (parallel branches, route cases) as an object. */
static json_t *named_nodes_json(char *const *names, dsl_node *const *nodes, size_t n)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (put(o, names[i], node_json(nodes[i])) < 0)
            goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *params_json(const json_t *params)
{
    return params ? json_deep_copy(params) : json_object();
}

/* {items: [{lambda|use|mcp: TARGET, name, description}], max_tool_rounds,
 * max_tool_concurrency, max_tokens_total, on_tool_error} of agent C, or
 * NULL when out of memory. */
static json_t *tools_json(const dsl_call *c)
{
    static const char *const kinds[] = { "lambda", "use", "mcp" };
    json_t *items = json_array();
    for (size_t i = 0; items && i < c->ntools; i++) {
        const dsl_tool *t = &c->tools[i];
        json_t *one = json_pack("{s:s, s:o, s:o}", kinds[t->kind], t->target, "name",
                                str_or_null(t->name), "description", str_or_null(t->description));
        if (!one || json_array_append_new(items, one) < 0) {
            json_decref(items);
            return NULL;
        }
    }
    if (!items)
        return NULL;
    return json_pack("{s:o, s:i, s:i, s:I, s:s}", "items", items, "max_tool_rounds",
                     c->max_tool_rounds, "max_tool_concurrency", c->max_tool_concurrency,
                     "max_tokens_total", (json_int_t)c->max_tokens_total, "on_tool_error",
                     c->on_tool_error == DSL_TOOL_ERROR_FAIL ? "fail" : "report");
}

/* A call's, embed's or map's batch keys as {mode, batch_window_ms,
 * deadline_ms, fallback_direct} (unset ones null) into O under "batch",
 * only when one is set: a document without batches stays as it was. */
static int put_batch(json_t *o, const dsl_batch *b)
{
    if (b->mode == DSL_MODE_UNSET && !b->window_ms && !b->deadline_ms && !b->has_fallback_direct)
        return 0;
    json_t *j = json_pack("{s:o, s:o, s:o, s:o}", "mode",
                          b->mode == DSL_MODE_BATCH    ? json_string("batch")
                          : b->mode == DSL_MODE_DIRECT ? json_string("direct")
                                                       : json_null(),
                          "batch_window_ms",
                          b->window_ms ? json_integer((json_int_t)b->window_ms) : json_null(),
                          "deadline_ms",
                          b->deadline_ms ? json_integer((json_int_t)b->deadline_ms) : json_null(),
                          "fallback_direct",
                          b->has_fallback_direct ? json_boolean(b->fallback_direct) : json_null());
    return put(o, "batch", j);
}

/* Adds the keys of N's kind to O. Returns 0 or -1. */
static int put_kind(json_t *o, const dsl_node *n)
{
    switch (n->kind) {
    case DSL_CALL: {
        const dsl_call *c = &n->u.call;
        if (put(o, "provider", str_or_null(c->provider)) < 0 ||
            put(o, "model", str_or_null(c->model)) < 0 ||
            put(o, "system", tvalue_json(c->system)) < 0)
            return -1;
        if (c->messages) {
            if (put(o, "messages", messages_json(c->messages, c->nmessages)) < 0)
                return -1;
        } else if (put(o, "prompt", tvalue_json(c->prompt)) < 0) {
            return -1;
        }
        /* shown only when asked for, like `cache` */
        if (c->prompt_cache && put(o, "prompt_cache", json_true()) < 0)
            return -1;
        if (c->schema && put(o, "schema", json_incref(dsl_schema_doc(c->schema))) < 0)
            return -1;
        if (c->ntools && put(o, "tools", tools_json(c)) < 0)
            return -1;
        if (put_batch(o, &c->batch) < 0)
            return -1;
        return put(o, "params", params_json(c->params)) < 0 ||
               put(o, "json", json_boolean(c->json)) < 0 ||
               put(o, "input", tvalue_json(c->input)) < 0 ? -1 : 0;
    }
    case DSL_EMBED:
        return put_batch(o, &n->u.embed.batch) < 0 ||
               put(o, "provider", str_or_null(n->u.embed.provider)) < 0 ||
               put(o, "model", str_or_null(n->u.embed.model)) < 0 ||
               put(o, "input", tvalue_json(n->u.embed.input)) < 0 ? -1 : 0;
    case DSL_LAMBDA:
        return put(o, "fn", str_or_null(n->u.lambda.fn)) < 0 ||
               put(o, "args", tvalue_json(n->u.lambda.args)) < 0 ||
               put(o, "input", tvalue_json(n->u.lambda.input)) < 0 ? -1 : 0;
    case DSL_CHAIN: {
        json_t *steps = json_array();
        if (put(o, "steps", steps) < 0)
            return -1;
        for (size_t i = 0; i < n->u.chain.n; i++)
            if (json_array_append_new(steps, node_json(n->u.chain.steps[i])) < 0)
                return -1;
        return 0;
    }
    case DSL_PARALLEL: {
        const dsl_parallel *p = &n->u.parallel;
        return put(o, "branches", named_nodes_json(p->names, p->branches, p->n)) < 0 ||
               put(o, "on_error", json_string(on_error_name(p->on_error))) < 0 ? -1 : 0;
    }
    case DSL_ROUTE: {
        const dsl_route *r = &n->u.route;
        json_t *on = r->on_node ? node_json(r->on_node) : template_json(r->on_tpl);
        return put(o, "on", on) < 0 ||
               put(o, "cases", named_nodes_json(r->labels, r->cases, r->n)) < 0 ||
               put(o, "default", node_or_null(r->default_case)) < 0 ||
               put(o, "normalize", strings_json(r->normalize, r->nnormalize)) < 0 ? -1 : 0;
    }
    case DSL_VOTE: {
        const dsl_vote *v = &n->u.vote;
        if (put(o, "n", json_integer(v->n)) < 0 ||
            put(o, "strategy", json_string(strategy_name(v->strategy))) < 0)
            return -1;
        if (v->strategy == DSL_VOTE_AT_LEAST && put(o, "at_least", json_integer(v->at_least)) < 0)
            return -1;
        if (v->strategy == DSL_VOTE_JUDGE && put(o, "judge", node_or_null(v->judge)) < 0)
            return -1;
        return put(o, "normalize", strings_json(v->normalize, v->nnormalize)) < 0 ||
               put(o, "key", template_json(v->key)) < 0 ||
               put(o, "do", node_or_null(v->body)) < 0 ? -1 : 0;
    }
    case DSL_MAP: {
        const dsl_map *m = &n->u.map;
        if (put(o, "over", template_json(m->over)) < 0 ||
            put(o, "as", str_or_null(m->as)) < 0 ||
            put(o, "index_as", str_or_null(m->index_as)) < 0 ||
            put(o, "max_concurrency", json_integer(m->max_concurrency)) < 0 ||
            put(o, "on_error", json_string(on_error_name(m->on_error))) < 0)
            return -1;
        if (m->on_error == DSL_ON_ERROR_TOLERATE && put(o, "tolerate", json_real(m->tolerate)) < 0)
            return -1;
        if (put_batch(o, &m->batch) < 0)
            return -1;
        return put(o, "do", node_or_null(m->body)) < 0 ? -1 : 0;
    }
    case DSL_GATE: {
        const dsl_gate *g = &n->u.gate;
        json_t *check = g->check_node ? node_json(g->check_node) : template_json(g->check_tpl);
        if (put(o, "check", check) < 0)
            return -1;
        if (g->fail_node)
            return put(o, "fail", node_json(g->fail_node));
        return put(o, "fail_message", tvalue_json(g->fail_message));
    }
    case DSL_USE:
        return put(o, "workflow", str_or_null(n->u.use.workflow)) < 0 ||
               put(o, "input", tvalue_json(n->u.use.input)) < 0 ? -1 : 0;
    case DSL_FAIL:
        return put(o, "message", tvalue_json(n->u.fail.message)) < 0 ||
               put(o, "code", str_or_null(n->u.fail.code)) < 0 ? -1 : 0;
    case DSL_LOOP: {
        const dsl_loop *l = &n->u.loop;
        json_t *until = l->until_node ? node_json(l->until_node) : template_json(l->until_tpl);
        return put(o, "max_iterations", json_integer(l->max_iterations)) < 0 ||
               put(o, "until", until) < 0 ||
               put(o, "collect", json_boolean(l->collect)) < 0 ||
               put(o, "on_exhausted",
                   json_string(l->on_exhausted == DSL_EXHAUSTED_LAST ? "last" : "fail")) < 0 ||
               put(o, "do", node_or_null(l->body)) < 0 ? -1 : 0;
    }
    case DSL_WAIT: {
        const dsl_wait *w = &n->u.wait;
        return put(o, "signal", template_json(w->signal)) < 0 ||
               put(o, "timeout_ms", json_integer((json_int_t)w->timeout_ms)) < 0 ||
               put(o, "schema", w->schema ? json_incref(w->schema) : json_null()) < 0 ? -1 : 0;
    }
    case DSL_KIND_COUNT:
        break;
    }
    return 0;
}

/* One node with its common keys, then its kind's keys. New reference or NULL. */
static json_t *node_json(const dsl_node *n)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (put(o, "index", json_integer(n->index)) < 0 ||
        put(o, "kind", json_string(dsl_kind_name(n->kind))) < 0)
        goto fail;
    if (n->id && put(o, "id", json_string(n->id)) < 0)
        goto fail;
    if (put(o, "path", str_or_null(n->path)) < 0 ||
        put(o, "line", json_integer(n->line)) < 0 ||
        put(o, "col", json_integer(n->col)) < 0)
        goto fail;
    if (n->description && put(o, "description", json_string(n->description)) < 0)
        goto fail;
    if (n->timeout_ms && put(o, "timeout_ms", json_integer((json_int_t)n->timeout_ms)) < 0)
        goto fail;
    if (n->retry && put(o, "retry", retry_json(n->retry)) < 0)
        goto fail;
    if (n->cache && put(o, "cache", json_true()) < 0)
        goto fail;
    if (n->output && put(o, "output", tvalue_json(n->output)) < 0)
        goto fail;
    if (put_kind(o, n) < 0)
        goto fail;
    /* Last, so the node's own shape reads before what runs when it fails. */
    if (n->fallback && put(o, "fallback", node_json(n->fallback)) < 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *inputs_json(const dsl_graph *g)
{
    if (!g->inputs_declared)
        return json_null(); /* any input is accepted */
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < g->ninputs; i++) {
        const dsl_input_field *f = &g->inputs[i];
        json_t *o = json_object();
        if (json_array_append_new(a, o) < 0 ||
            put(o, "name", json_string(f->name)) < 0 ||
            put(o, "type", json_string(dsl_type_name(f->type))) < 0 ||
            put(o, "required", json_boolean(f->required)) < 0)
            goto fail;
        /* absent, not null: null is a legitimate default */
        if (f->default_value && put(o, "default", json_deep_copy(f->default_value)) < 0)
            goto fail;
        if (f->description && put(o, "description", json_string(f->description)) < 0)
            goto fail;
    }
    return a;
fail:
    json_decref(a);
    return NULL;
}

static json_t *defaults_json(const dsl_defaults *d)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (put(o, "provider", str_or_null(d->provider)) < 0 ||
        put(o, "model", str_or_null(d->model)) < 0 ||
        put(o, "timeout_ms", json_integer((json_int_t)d->timeout_ms)) < 0 ||
        put(o, "retry", retry_json(&d->retry)) < 0 ||
        put(o, "max_concurrency", json_integer(d->max_concurrency)) < 0 ||
        put(o, "params", params_json(d->params)) < 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

json_t *dsl_emit_json(const dsl_graph *g)
{
    json_t *o = json_object();
    json_t *uses = json_array();
    if (!o || !uses)
        goto fail;
    for (size_t i = 0; i < g->nuses; i++)
        if (json_array_append_new(uses, json_string(g->uses[i])) < 0)
            goto fail;
    if (put(o, "name", str_or_null(g->name)) < 0 ||
        put(o, "version", json_string(g->version)) < 0 ||
        put(o, "file", str_or_null(g->file)) < 0 ||
        put(o, "description", str_or_null(g->description)) < 0 ||
        put(o, "timeout_ms", json_integer((json_int_t)g->timeout_ms)) < 0 ||
        put(o, "input", inputs_json(g)) < 0 ||
        put(o, "vars", tvalue_json(g->vars)) < 0 ||
        put(o, "defaults", defaults_json(&g->defaults)) < 0 ||
        put(o, "nodes", json_integer((json_int_t)g->nnodes)) < 0)
        goto fail;
    if ((g->has_budget && put(o, "budget", json_pack("{s:f}", "usd", g->budget_usd)) < 0) ||
        (g->prompt_cache && put(o, "prompt_cache", json_true()) < 0))
        goto fail;
    if (put(o, "uses", uses) < 0) {
        uses = NULL;
        goto fail;
    }
    uses = NULL;
    if (put(o, "root", node_or_null(g->root)) < 0)
        goto fail;
    return o;
fail:
    json_decref(uses);
    json_decref(o);
    return NULL;
}
