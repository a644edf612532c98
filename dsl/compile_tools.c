/* compile_tools.c -- a call's `tools:` and the limits of its tool loop.
 *
 * A call with tools is an agent: the engine runs model turns and the tool
 * calls they ask for until an answer calls none. Each tool item names what
 * one call of it runs -- a lambda, a workflow (`use`), or every tool of an
 * MCP server -- and that is compiled here into a node of its own (owned by
 * the graph's arena like every node, but not one of the graph's indexed
 * nodes: it shares its call's index, which is what its step keys are built
 * from). The model turn gets a node too: the call without its tools, id,
 * `output:` or fallback, which belong to the whole agent.
 *
 * What the model sees of a tool (its JSON Schema) comes from the lambda's
 * declared arguments, the workflow's `input:` declaration or the MCP
 * server's list, all of which the engine reads when the job runs; here
 * only names are checked: the lambda exists (with "did you mean"), tool
 * names are valid and distinct. */
#include "dsl/compile.h"

#include <stdio.h>
#include <string.h>

static const char *const tool_keys[] = { "lambda", "use", "mcp", "name", "description", NULL };

/* The longest tool name providers accept. */
#define TOOL_NAME_MAX 64

static int tool_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > TOOL_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* TARGET with every character a tool name cannot hold made '_' (an arena
 * copy), or NULL when out of memory. */
static const char *tool_name_from(dsl_cc *cc, const char *target)
{
    char *s = dsl_arena_strdup(cc->a, target);
    if (!s) {
        cc_oom(cc);
        return NULL;
    }
    for (char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            *p = '_';
    return s;
}

/* A node of CALL's that is not one of the graph's indexed nodes: a tool's
 * step or the model turn. KIND, at Y, named PATH (arena-owned). */
static dsl_node *side_node(dsl_cc *cc, dsl_node *call, dsl_kind kind, const dsl_ynode *y,
                           const char *path)
{
    dsl_node *t = dsl_arena_alloc(cc->a, sizeof *t);
    if (!t) {
        cc_oom(cc);
        return NULL;
    }
    t->kind = kind;
    t->index = call->index;
    t->path = path;
    t->line = y->line;
    t->col = y->col;
    t->parent = call;
    t->map_depth = call->map_depth;
    return t;
}

/* Tool item I (Y) of call N into *T. 0, or -1 after reporting. */
static int build_tool(dsl_cc *cc, dsl_node *n, size_t i, const dsl_ynode *y, dsl_tool *t)
{
    static const char *const kinds[] = { "lambda", "use", "mcp" };
    const dsl_ynode *ky = NULL, *k;
    int bad = 0;
    if (!cc_want_map(cc, y, "tools item"))
        return -1;
    cc_check_keys(cc, y, tool_keys, "tool");
    t->line = y->line;
    t->col = y->col;
    for (int j = 0; j < 3; j++) {
        if (!(k = dsl_ymap_get(y, kinds[j])))
            continue;
        if (ky) {
            dsl_error(cc->d, k->line, k->col,
                      "a tool is one of lambda, use or mcp, not both '%s' and '%s'",
                      kinds[t->kind], kinds[j]);
            return -1;
        }
        ky = k;
        t->kind = (dsl_tool_kind)j;
    }
    if (!ky) {
        if (!cc_misspelt(y, "lambda") && !cc_misspelt(y, "use") && !cc_misspelt(y, "mcp"))
            dsl_error(cc->d, y->line, y->col,
                      "a tool needs one of 'lambda: PLUGIN.FN', 'use: WORKFLOW' or 'mcp: SERVER'");
        return -1;
    }
    if (!(t->target = cc_string(cc, ky, kinds[t->kind])))
        return -1;
    if ((k = dsl_ymap_get(y, "name"))) {
        if (!(t->name = cc_string(cc, k, "name"))) {
            bad = 1;
        } else if (!tool_name_ok(t->name)) {
            dsl_error(cc->d, k->line, k->col,
                      "'%.64s' is not a tool name: use letters, digits, '_' and '-', up to %d",
                      t->name, TOOL_NAME_MAX);
            bad = 1;
        }
    }
    if ((k = dsl_ymap_get(y, "description")) && !(t->description = cc_string(cc, k, "description")))
        bad = 1;
    char suffix[48];
    snprintf(suffix, sizeof suffix, ".tools[%zu]", i);
    size_t pl = strlen(n->path);
    char *path = dsl_arena_alloc(cc->a, pl + strlen(suffix) + 1);
    if (!path) {
        cc_oom(cc);
        return -1;
    }
    memcpy(path, n->path, pl);
    strcpy(path + pl, pl ? suffix : suffix + 1);
    switch (t->kind) {
    case DSL_TOOL_LAMBDA:
        if (cc_check_lambda_name(cc, ky, t->target) < 0)
            return -1;
        if (!(t->node = side_node(cc, n, DSL_LAMBDA, ky, path)))
            return -1;
        t->node->u.lambda.fn = t->target;
        t->node->retry = &cc->g->defaults.retry;
        t->node->timeout_ms = cc->g->defaults.timeout_ms;
        break;
    case DSL_TOOL_USE:
        if (cc_workflow_name_ok(cc, ky, t->target) < 0)
            return -1;
        if (!(t->node = side_node(cc, n, DSL_USE, ky, path)))
            return -1;
        t->node->u.use.workflow = t->target;
        break;
    case DSL_TOOL_MCP:
        if (!tool_name_ok(t->target)) {
            dsl_error(cc->d, ky->line, ky->col,
                      "'%.64s' is not an MCP server name: use letters, digits, '_' and '-'",
                      t->target);
            return -1;
        }
        if (t->name && strlen(t->name) > TOOL_NAME_MAX / 2) {
            k = dsl_ymap_get(y, "name");
            dsl_error(cc->d, k->line, k->col,
                      "the name of an mcp tool item is a prefix of its tools' names: at most "
                      "%d characters", TOOL_NAME_MAX / 2);
            bad = 1;
        }
        /* a lambda-like leaf with no lambda: the engine calls the server */
        if (!(t->node = side_node(cc, n, DSL_LAMBDA, ky, path)))
            return -1;
        t->node->u.lambda.fn = t->target;
        t->node->retry = &cc->g->defaults.retry;
        break;
    }
    if (!t->name && t->kind != DSL_TOOL_MCP) {
        if (!(t->name = tool_name_from(cc, t->target)))
            return -1;
        if (!tool_name_ok(t->name)) {
            dsl_error(cc->d, ky->line, ky->col,
                      "'%.64s' is too long for a tool name (%d at most): give the tool a 'name'",
                      t->target, TOOL_NAME_MAX);
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

/* The model turn's node: the call's provider, model and parameters, its
 * timeout and retry (which apply to each turn), nothing of the rest. */
static int build_turn(dsl_cc *cc, dsl_node *n)
{
    dsl_call *c = &n->u.call;
    dsl_node *t = dsl_arena_alloc(cc->a, sizeof *t);
    if (!t) {
        cc_oom(cc);
        return -1;
    }
    t->kind = DSL_CALL;
    t->index = n->index;
    t->path = n->path;
    t->line = n->line;
    t->col = n->col;
    t->parent = n;
    t->map_depth = n->map_depth;
    t->timeout_ms = n->timeout_ms;
    t->retry = n->retry;
    t->u.call.provider = c->provider;
    t->u.call.model = c->model;
    t->u.call.params = c->params;
    t->u.call.prompt_cache = c->prompt_cache;
    /* each turn asks for the schema natively (OpenAI's response_format
     * beside the tools; Anthropic's answer tool among them, any tool
     * required): a turn that calls tools is not checked, the final answer
     * is (engine_agent.c) */
    t->u.call.schema = c->schema;
    c->turn = t;
    return 0;
}

int cc_build_tools(dsl_cc *cc, dsl_node *n, const dsl_ynode *v)
{
    dsl_call *c = &n->u.call;
    const dsl_ynode *ty = dsl_ymap_get(v, "tools"), *y;
    static const char *const limits[] = { "max_tool_rounds", "max_tool_concurrency",
                                          "max_tokens_total", "on_tool_error", NULL };
    int bad = 0;
    c->max_tool_rounds = DSL_MAX_TOOL_ROUNDS_DEFAULT;
    c->max_tool_concurrency = DSL_MAX_TOOL_CONCURRENCY_DEFAULT;
    c->on_tool_error = DSL_TOOL_ERROR_REPORT;
    if (!ty) {
        for (size_t i = 0; limits[i]; i++)
            if ((y = dsl_ymap_get(v, limits[i]))) {
                dsl_error(cc->d, y->line, y->col, "'%s' applies to a call with 'tools'",
                          limits[i]);
                bad = 1;
            }
        return bad ? -1 : 0;
    }
    if (!cc_want_seq(cc, ty, "tools"))
        return -1;
    if (ty->u.seq.n == 0) {
        dsl_error(cc->d, ty->line, ty->col, "'tools' must not be empty");
        return -1;
    }
    c->tools = dsl_arena_alloc(cc->a, ty->u.seq.n * sizeof *c->tools);
    if (!c->tools) {
        cc_oom(cc);
        return -1;
    }
    for (size_t i = 0; i < ty->u.seq.n; i++) {
        dsl_tool *t = &c->tools[c->ntools];
        if (build_tool(cc, n, i, ty->u.seq.items[i], t) < 0) {
            bad = 1;
            continue;
        }
        c->ntools++;
        /* names the model tells apart; MCP tools are named by their server,
         * which the engine checks when it lists them */
        for (size_t j = 0; t->kind != DSL_TOOL_MCP && j + 1 < c->ntools; j++) {
            if (c->tools[j].kind == DSL_TOOL_MCP || strcmp(c->tools[j].name, t->name) != 0)
                continue;
            dsl_error(cc->d, t->line, t->col,
                      "two tools are named '%s': give one of them another 'name'", t->name);
            dsl_note(cc->d, c->tools[j].line, c->tools[j].col, "the first '%s' is here",
                     t->name);
            bad = 1;
            break;
        }
    }
    int64_t iv;
    if ((y = dsl_ymap_get(v, "max_tool_rounds"))) {
        if (cc_int(cc, y, "max_tool_rounds", 1, 10000, &iv) < 0)
            bad = 1;
        else
            c->max_tool_rounds = (int)iv;
    }
    if ((y = dsl_ymap_get(v, "max_tool_concurrency"))) {
        if (cc_int(cc, y, "max_tool_concurrency", 1, 1024, &iv) < 0)
            bad = 1;
        else
            c->max_tool_concurrency = (int)iv;
    }
    if ((y = dsl_ymap_get(v, "max_tokens_total"))) {
        if (cc_int(cc, y, "max_tokens_total", 1, INT64_C(1) << 40, &iv) < 0)
            bad = 1;
        else
            c->max_tokens_total = iv;
    }
    if ((y = dsl_ymap_get(v, "on_tool_error"))) {
        const char *s = cc_string(cc, y, "on_tool_error");
        if (!s) {
            bad = 1;
        } else if (strcmp(s, "report") == 0) {
            c->on_tool_error = DSL_TOOL_ERROR_REPORT;
        } else if (strcmp(s, "fail") == 0) {
            c->on_tool_error = DSL_TOOL_ERROR_FAIL;
        } else {
            static const char *const modes[] = { "report", "fail", NULL };
            cc_error_suggest(cc, y->line, y->col, s, strlen(s), modes, (size_t)-1,
                             "unknown on_tool_error '%.64s'; use report or fail", s);
            bad = 1;
        }
    }
    if (build_turn(cc, n) < 0)
        return -1;
    return bad ? -1 : 0;
}
