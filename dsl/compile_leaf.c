/* compile_leaf.c -- the leaves: `call`, `embed` and `lambda`.
 *
 * Leaves are where a workflow meets the outside world (providers and plugins),
 * so this is also where names are checked against the registry when one is
 * given, and where the workflow's defaults (provider, model, generation
 * parameters) are folded into each node so the engine never looks them up. */
#include "dsl/compile.h"

#include <stdlib.h>
#include <string.h>

static const char *const call_keys[] = { "provider", "model", "system", "prompt", "messages",
                                         "temperature", "max_tokens", "top_p", "stop", "seed",
                                         "json", "input", "prompt_cache", "tools",
                                         "max_tool_rounds", "max_tool_concurrency",
                                         "max_tokens_total", "on_tool_error", "schema",
                                         "mode", "batch_window", "deadline", "fallback_direct",
                                         NULL };
static const char *const embed_keys[] = { "provider", "model", "input", "mode", "batch_window",
                                          "deadline", "fallback_direct", NULL };
static const char *const lambda_keys[] = { "fn", "args", "input", NULL };
static const char *const message_keys[] = { "role", "content", NULL };

/* A leaf's provider: its own, else the workflow default, else "default";
 * checked against the registry at the key that chose it. */
static const char *leaf_provider(dsl_cc *cc, const dsl_ynode *spec, const dsl_ynode *node_y)
{
    const dsl_ynode *py = spec && spec->kind == DSL_Y_MAP ? dsl_ymap_get(spec, "provider") : NULL;
    const char *name;
    const dsl_ynode *at = py;
    if (py) {
        if (!(name = cc_string(cc, py, "provider")))
            return NULL;
    } else if (cc->g->defaults.provider) {
        name = cc->g->defaults.provider;
        at = NULL;
    } else {
        name = "default";
    }
    const dsl_registry *r = cc->opt ? cc->opt->registry : NULL;
    if (r && r->providers) {
        size_t i;
        for (i = 0; r->providers[i]; i++)
            if (strcmp(r->providers[i], name) == 0)
                break;
        if (!r->providers[i]) {
            if (!at && cc->defaults_provider_y)
                ; /* reported once at defaults.provider */
            else {
                const dsl_ynode *pos = at ? at : node_y;
                cc_error_suggest(cc, pos->line, pos->col, name, strlen(name), r->providers, (size_t)-1,
                                 at ? "unknown provider '%s'"
                                    : "no provider named here or in defaults, and '%s' is not configured",
                                 name);
            }
        }
    }
    return name;
}

int cc_build_call(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny)
{
    dsl_call *c = &n->u.call;
    int bad = 0;
    const dsl_ynode *y;
    c->provider = leaf_provider(cc, v, ny);
    c->model = cc->g->defaults.model;
    c->prompt_cache = cc->g->prompt_cache;
    if (v->kind == DSL_Y_SCALAR) {
        /* call: "prompt" */
        if (!(c->prompt = cc_shorthand(cc, v, "call", n)))
            return -1;
        goto params;
    }
    if (!cc_want_map(cc, v, "call"))
        return -1;
    cc_check_keys(cc, v, call_keys, "call");
    if ((y = dsl_ymap_get(v, "model")) && !(c->model = cc_string(cc, y, "model")))
        bad = 1;
    if ((y = dsl_ymap_get(v, "system")) && !(c->system = cc_text(cc, y, "system", n)))
        bad = 1;
    if ((y = dsl_ymap_get(v, "input")) && !(c->input = cc_tvalue(cc, y, n, CC_SITE_NODE)))
        bad = 1;
    const dsl_ynode *py = dsl_ymap_get(v, "prompt"), *my = dsl_ymap_get(v, "messages");
    if (py && my) {
        dsl_error(cc->d, my->line, my->col, "a call has either 'prompt' or 'messages', not both");
        bad = 1;
    } else if (!py && !my) {
        if (!cc_misspelt(v, "prompt") && !cc_misspelt(v, "messages"))
            dsl_error(cc->d, v->line, v->col, "missing required key 'prompt' (or 'messages') in call");
        bad = 1;
    }
    if (py && !(c->prompt = cc_text(cc, py, "prompt", n)))
        bad = 1;
    if (my && cc_want_seq(cc, my, "messages")) {
        if (my->u.seq.n == 0) {
            dsl_error(cc->d, my->line, my->col, "'messages' must not be empty");
            bad = 1;
        }
        c->messages = dsl_arena_alloc(cc->a, (my->u.seq.n + 1) * sizeof *c->messages);
        if (!c->messages) {
            cc_oom(cc);
            return -1;
        }
        for (size_t i = 0; i < my->u.seq.n; i++) {
            const dsl_ynode *m = my->u.seq.items[i], *r, *ct;
            if (!cc_want_map(cc, m, "messages item")) {
                bad = 1;
                continue;
            }
            cc_check_keys(cc, m, message_keys, "message");
            dsl_message *msg = &c->messages[c->nmessages++];
            if (!(r = dsl_ymap_get(m, "role"))) {
                cc_missing(cc, m, "role", "message");
                bad = 1;
            } else if ((msg->role = (char *)cc_string(cc, r, "role"))) {
                if (strcmp(msg->role, "system") && strcmp(msg->role, "user") &&
                    strcmp(msg->role, "assistant")) {
                    dsl_error(cc->d, r->line, r->col,
                              "unknown role '%.64s'; use system, user or assistant", msg->role);
                    bad = 1;
                }
            } else {
                bad = 1;
            }
            if (!(ct = dsl_ymap_get(m, "content"))) {
                cc_missing(cc, m, "content", "message");
                bad = 1;
            } else if (!(msg->content = cc_text(cc, ct, "content", n))) {
                bad = 1;
            }
        }
    } else if (my) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "json"))) {
        int b;
        if (cc_bool(cc, y, "json", &b) < 0)
            bad = 1;
        else
            c->json = b;
    }
    if ((y = dsl_ymap_get(v, "schema"))) {
        /* a schema's answer is JSON: `json: false` beside it contradicts it */
        const dsl_ynode *jy = dsl_ymap_get(v, "json");
        if (jy && !c->json) {
            dsl_error(cc->d, jy->line, jy->col, "a call with a 'schema' answers JSON; "
                      "drop 'json: false'");
            bad = 1;
        }
        if (!(c->schema = cc_schema(cc, y, "schema")))
            bad = 1;
        c->json = true;
    }
    if ((y = dsl_ymap_get(v, "prompt_cache"))) {
        int b;
        if (cc_bool(cc, y, "prompt_cache", &b) < 0)
            bad = 1;
        else
            c->prompt_cache = b;
    }
params:
    c->params = json_deep_copy(cc->g->defaults.params);
    if (!c->params || dsl_arena_own_json(cc->a, c->params) < 0) {
        cc_oom(cc);
        return -1;
    }
    if (v->kind == DSL_Y_MAP && cc_gen_params(cc, v, c->params) < 0)
        bad = 1;
    /* last: the model turn of an agent copies the call's parameters */
    if (v->kind == DSL_Y_MAP && cc_build_tools(cc, n, v) < 0)
        bad = 1;
    if (v->kind == DSL_Y_MAP && cc_build_batch(cc, v, &c->batch, "call") < 0)
        bad = 1;
    if (c->ntools && c->batch.mode == DSL_MODE_BATCH) {
        /* each turn of a conversation needs the answer of the one before */
        y = dsl_ymap_get(v, "mode");
        dsl_error(cc->d, y->line, y->col, "a call with tools cannot run in batch mode: each "
                  "turn needs the answer to the one before");
        bad = 1;
    }
    return bad ? -1 : 0;
}

int cc_build_embed(dsl_cc *cc, dsl_node *n, const dsl_ynode *v, const dsl_ynode *ny)
{
    dsl_embed *e = &n->u.embed;
    const dsl_ynode *y;
    int bad = 0;
    e->provider = leaf_provider(cc, v, ny);
    e->model = cc->g->defaults.model;
    if (v->kind == DSL_Y_SCALAR) {
        e->input = cc_shorthand(cc, v, "embed", n);
        return e->input ? 0 : -1;
    }
    if (!cc_want_map(cc, v, "embed"))
        return -1;
    cc_check_keys(cc, v, embed_keys, "embed");
    if ((y = dsl_ymap_get(v, "model")) && !(e->model = cc_string(cc, y, "model")))
        bad = 1;
    if ((y = dsl_ymap_get(v, "input")) && !(e->input = cc_tvalue(cc, y, n, CC_SITE_NODE)))
        bad = 1;
    if (cc_build_batch(cc, v, &e->batch, "embed") < 0)
        bad = 1;
    return bad ? -1 : 0;
}

int cc_check_lambda_name(dsl_cc *cc, const dsl_ynode *y, const char *fn)
{
    const char *dot = strchr(fn, '.');
    if (!dot || dot == fn || !dot[1] || !cc_is_ident(fn, (size_t)(dot - fn))) {
        dsl_error(cc->d, y->line, y->col,
                  "lambda name '%.64s' must be PLUGIN.FUNCTION, e.g. std.trim", fn);
        return -1;
    }
    const dsl_registry *r = cc->opt ? cc->opt->registry : NULL;
    if (r && r->lambdas) {
        for (size_t i = 0; r->lambdas[i]; i++)
            if (strcmp(r->lambdas[i], fn) == 0)
                return 0;
        cc_error_suggest(cc, y->line, y->col, fn, strlen(fn), r->lambdas, (size_t)-1,
                         "unknown lambda '%.64s'", fn);
        return -1;
    }
    return 0;
}

int cc_build_lambda(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    dsl_lambda *l = &n->u.lambda;
    const dsl_ynode *y;
    int bad = 0;
    if (v->kind == DSL_Y_SCALAR) {
        if (!(l->fn = cc_string(cc, v, "lambda")) || cc_check_lambda_name(cc, v, l->fn) < 0)
            return -1;
        return cc_check_lambda_args(cc, l->fn, NULL, v);
    }
    if (!cc_want_map(cc, v, "lambda"))
        return -1;
    cc_check_keys(cc, v, lambda_keys, "lambda");
    if (!(y = dsl_ymap_get(v, "fn"))) {
        cc_missing(cc, v, "fn", "lambda");
        bad = 1;
    } else if (!(l->fn = cc_string(cc, y, "fn")) || cc_check_lambda_name(cc, y, l->fn) < 0) {
        bad = 1;
    }
    if ((y = dsl_ymap_get(v, "args")) && !(l->args = cc_tvalue(cc, y, n, CC_SITE_NODE)))
        bad = 1;
    /* a name already reported leaves nothing to check the args against */
    if (l->fn && !bad && cc_check_lambda_args(cc, l->fn, y, v) < 0)
        bad = 1;
    if ((y = dsl_ymap_get(v, "input")) && !(l->input = cc_tvalue(cc, y, n, CC_SITE_NODE)))
        bad = 1;
    return bad ? -1 : 0;
}
