/* engine_agent.c -- a call with `tools:`: model turns and the tool calls
 * they ask for, until an answer calls no tool.
 *
 * The agent is a composite activation of the call's node. Its kids are
 * the model turns (leaves of the call's turn node: a provider call whose
 * request is the conversation so far and the tool definitions) and the
 * tool calls of each turn (a lambda leaf, a `use` of a workflow, or an MCP
 * leaf), so every turn and every tool call is a step with its own key and
 * checkpoint (engine_replay.c: `~tN` and `~tN.K` below the call): a
 * resumed job replays the turns and tool calls that had ended, in their
 * order, and pays for nothing twice.
 *
 * A turn's result (what its checkpoint records) is
 *   {"content": TEXT, "tool_calls": [{id, name, arguments}...], "usage":
 *    {"input_tokens": I, "output_tokens": O}}
 * (tool_calls only when the answer calls some). The tool calls of a turn
 * run at once, at most max_tool_concurrency at a time, and their results go
 * back to the model in the order of the calls; max_tool_rounds bounds the
 * tool calls of the whole conversation, max_tokens_total the tokens of its
 * turns. The call's retry and timeout apply to each turn (a failed turn
 * is retried alone, never the conversation before it); its `output:`,
 * fallback and `steps.ID` apply to the whole, whose output is the final
 * answer (parsed with `json: true`) and whose record also holds the
 * conversation as `transcript`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"
#include "dsl/input_schema.h"

/* One tool the model may call: which of the call's tool items runs it, and
 * (MCP) under which name its server knows it. */
typedef struct agent_tool {
    char *name;                /* what the model calls it (owned) */
    const dsl_tool *item;      /* borrowed from the graph */
    char *mcp_name;            /* MCP: the server's name of the tool (owned) */
} agent_tool;

/* One tool call of the current turn. */
typedef struct agent_call {
    json_t *call;              /* {id, name, arguments} (owned) */
    const agent_tool *tool;    /* NULL: the model named no tool of ours */
    json_t *message;           /* its "tool" message once it ended (owned) */
} agent_call;

struct agent {
    json_t *orig_input;        /* the input before `input:` (owned) */
    json_t *base;              /* the messages the call's templates render (owned) */
    json_t *convo;             /* the turns since: assistant and tool messages (owned) */
    json_t *defs;              /* the tool definitions of every request (owned) */
    agent_tool *tools;
    size_t ntools;
    size_t turn;               /* the turn running or last run, from 1 */
    int64_t tokens;            /* input + output tokens of the turns so far */
    size_t calls_made;         /* tool calls asked for so far */
    agent_call *calls;         /* the current turn's */
    size_t ncalls, next, running, ndone;
};

/* A tool call's slot: its turn and its place in the turn, from 1. */
#define SLOT_OF(turn, k) (((size_t)(turn) << 32) | (size_t)(k))
#define SLOT_TURN(s) ((size_t)(s) >> 32)
#define SLOT_CALL(s) ((size_t)(s) & 0xffffffffu)

static struct agent *agent_of(const act_t *a)
{
    return a->k.agent.ag;
}

static void calls_free(struct agent *ag)
{
    for (size_t i = 0; i < ag->ncalls; i++) {
        json_decref(ag->calls[i].call);
        json_decref(ag->calls[i].message);
    }
    free(ag->calls);
    ag->calls = NULL;
    ag->ncalls = ag->next = ag->running = ag->ndone = 0;
}

static void agent_free(struct agent *ag)
{
    if (!ag)
        return;
    calls_free(ag);
    json_decref(ag->base);
    json_decref(ag->convo);
    json_decref(ag->defs);
    for (size_t i = 0; i < ag->ntools; i++) {
        free(ag->tools[i].name);
        free(ag->tools[i].mcp_name);
    }
    free(ag->tools);
    json_decref(ag->orig_input);
    free(ag);
}

/* ---- tool definitions */

static const char *opt_type(loom_opt_type t)
{
    switch (t) {
    case LOOM_OPT_STRING: return "string";
    case LOOM_OPT_INT: return "integer";
    case LOOM_OPT_DOUBLE: return "number";
    case LOOM_OPT_BOOL: return "boolean";
    case LOOM_OPT_DURATION: return "string";
    case LOOM_OPT_JSON: return NULL;
    }
    return NULL;
}

json_t *agent_lambda_schema(const loom_lambda *def)
{
    json_t *props = json_object(), *req = json_array();
    json_t *s = json_pack("{s:s, s:o, s:o}", "type", "object", "properties", props, "required",
                          req);
    if (!s)
        return NULL;
    /* what the lambda works on: its input, beside its arguments */
    if (json_object_set_new(props, "input",
                            json_pack("{s:s}", "description",
                                      "the value the function works on (its input)")) < 0)
        goto fail;
    for (const loom_option *o = def->args; o && o->name; o++) {
        json_t *p = json_object();
        const char *t = opt_type(o->type);
        if (!p || json_object_set_new(props, o->name, p) < 0 ||
            (t && json_object_set_new(p, "type", json_string(t)) < 0) ||
            (o->description && json_object_set_new(p, "description",
                                                   json_string(o->description)) < 0))
            goto fail;
        if (o->type == LOOM_OPT_DURATION &&
            json_object_set_new(p, "description",
                                json_string("a duration such as \"500ms\" or \"30s\"")) < 0)
            goto fail;
        if (o->required && !o->default_value && json_array_append_new(req, json_string(o->name)) < 0)
            goto fail;
    }
    return s;
fail:
    json_decref(s);
    return NULL;
}

/* Adds tool NAME (copied) of ITEM to the agent and its definition with
 * DESCRIPTION and PARAMETERS (stolen). -1 with why in MSG. */
static int add_tool(struct agent *ag, const dsl_tool *item, const char *name, const char *mcp_name,
                    const char *description, json_t *parameters, char *msg, size_t len)
{
    for (size_t i = 0; i < ag->ntools; i++)
        if (strcmp(ag->tools[i].name, name) == 0) {
            snprintf(msg, len, "two tools are named '%.64s'", name);
            json_decref(parameters);
            return -1;
        }
    agent_tool *t = realloc(ag->tools, (ag->ntools + 1) * sizeof *t);
    json_t *def = parameters ? json_pack("{s:s, s:s, s:o}", "name", name, "description",
                                         description ? description : "", "parameters",
                                         parameters)
                             : NULL;
    if (t)
        ag->tools = t;
    if (!t || !def || json_array_append_new(ag->defs, def) < 0) {
        if (!t || !def)
            json_decref(def);
        snprintf(msg, len, "out of memory");
        return -1;
    }
    t = &ag->tools[ag->ntools];
    memset(t, 0, sizeof *t);
    t->item = item;
    if (!(t->name = strdup(name)) || (mcp_name && !(t->mcp_name = strdup(mcp_name)))) {
        free(t->name);
        snprintf(msg, len, "out of memory");
        return -1;
    }
    ag->ntools++;
    return 0;
}

static int mcp_tools(act_t *a, struct agent *ag, const dsl_tool *item, char *msg, size_t len)
{
    engine_t *e = a->job->eng;
    char err[256] = "";
    json_t *list = e->mcp ? e->mcp->tools(e->mcp_ud, item->target, err, sizeof err) : NULL;
    if (!list) {
        snprintf(msg, len, "mcp server '%.64s': %s", item->target,
                 e->mcp ? (err[0] ? err : "no tools") : "no MCP servers are configured");
        return -1;
    }
    size_t i;
    json_t *t;
    int rc = 0;
    json_array_foreach(list, i, t) {
        const char *tn = json_string_value(json_object_get(t, "name"));
        json_t *schema = json_object_get(t, "inputSchema");
        const char *d = json_string_value(json_object_get(t, "description"));
        if (!tn)
            continue;
        char name[160], desc[2048];
        snprintf(name, sizeof name, "%s%s%s", item->name ? item->name : "",
                 item->name ? "_" : "", tn);
        if (item->description)
            snprintf(desc, sizeof desc, "%s: %s", item->description, d ? d : "");
        else
            snprintf(desc, sizeof desc, "%s", d ? d : "");
        json_t *params = json_is_object(schema) ? json_deep_copy(schema)
                                                : json_pack("{s:s}", "type", "object");
        if ((rc = add_tool(ag, item, name, tn, desc, params, msg, len)) < 0)
            break;
    }
    json_decref(list);
    return rc;
}

/* Every tool of the call, resolved now: lambdas in the registry, workflows
 * through the lookup, MCP servers' lists. -1 with why in MSG. */
static int resolve_tools(act_t *a, struct agent *ag, char *msg, size_t len)
{
    const dsl_call *c = &a->node->u.call;
    engine_t *e = a->job->eng;
    if (!(ag->defs = json_array()))
        return -1;
    for (size_t i = 0; i < c->ntools; i++) {
        const dsl_tool *item = &c->tools[i];
        if (item->kind == DSL_TOOL_LAMBDA) {
            const plugins_lambda *lam = plugins_lambda_find(e->plugins, item->target);
            if (!lam) {
                snprintf(msg, len, "tool '%.64s': no lambda '%.64s'", item->name, item->target);
                return -1;
            }
            if (add_tool(ag, item, item->name, NULL,
                         item->description ? item->description : lam->def->summary,
                         agent_lambda_schema(lam->def), msg, len) < 0)
                return -1;
        } else if (item->kind == DSL_TOOL_USE) {
            dsl_graph *g = e->wf_lookup ? e->wf_lookup(e->wf_ud, item->target) : NULL;
            if (!g) {
                snprintf(msg, len, "tool '%.64s': workflow '%.64s' is not available",
                         item->name, item->target);
                return -1;
            }
            if (add_tool(ag, item, item->name, NULL,
                         item->description ? item->description : g->description,
                         dsl_input_schema(g), msg, len) < 0)
                return -1;
        } else if (mcp_tools(a, ag, item, msg, len) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- the conversation */

json_t *agent_transcript(const act_t *a)
{
    const struct agent *ag = a->node->kind == DSL_CALL && a->node->u.call.ntools
                                 ? agent_of(a) : NULL;
    if (!ag || !ag->base)
        return NULL;
    json_t *t = json_copy(ag->base);
    if (t && json_array_extend(t, ag->convo) < 0) {
        json_decref(t);
        return NULL;
    }
    return t;
}

int agent_turn_request(act_t *turn, loom_request *req, char *msg, size_t len)
{
    const act_t *a = turn->parent;
    const struct agent *ag = agent_of(a);
    const dsl_call *c = &a->node->u.call;
    memset(req, 0, sizeof *req);
    req->kind = LOOM_CALL_CHAT;
    req->model = c->model ? c->model : a->scope->g->defaults.model;
    req->json_mode = c->json;
    req->prompt_cache = c->prompt_cache;
    req->messages = json_copy(ag->base);
    req->params = json_is_object(c->params) ? json_copy(c->params) : json_object();
    req->tools = ag->defs; /* borrowed: the turn ends before the agent does */
    if (!req->messages || !req->params || json_array_extend(req->messages, ag->convo) < 0) {
        snprintf(msg, len, "out of memory");
        return -1;
    }
    return 0;
}

json_t *agent_turn_result(json_t *output, json_t *tool_calls, const loom_usage *u)
{
    json_t *r = json_pack("{s:O, s:{s:I, s:I}}", "content", output, "usage", "input_tokens",
                          (json_int_t)(u && u->input_tokens > 0 ? u->input_tokens : 0),
                          "output_tokens",
                          (json_int_t)(u && u->output_tokens > 0 ? u->output_tokens : 0));
    if (r && json_array_size(tool_calls) > 0 &&
        json_object_set(r, "tool_calls", tool_calls) < 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}

/* ---- tool calls */

static const agent_tool *tool_named(const struct agent *ag, const char *name)
{
    for (size_t i = 0; name && i < ag->ntools; i++)
        if (strcmp(ag->tools[i].name, name) == 0)
            return &ag->tools[i];
    return NULL;
}

/* The text a tool's result goes back to the model as. */
static char *result_text(const agent_tool *t, json_t *res, bool *is_error)
{
    *is_error = false;
    if (t->item->kind == DSL_TOOL_MCP && json_is_object(res)) {
        /* a CallToolResult: its text items, else its structured content */
        sbuf b = SBUF_INIT;
        size_t i;
        json_t *item;
        *is_error = json_is_true(json_object_get(res, "isError"));
        sbuf_add(&b, "", 0);
        json_array_foreach(json_object_get(res, "content"), i, item) {
            const char *s = json_string_value(json_object_get(item, "text"));
            if (s) {
                if (b.n)
                    sbuf_addc(&b, '\n');
                sbuf_adds(&b, s);
            }
        }
        json_t *sc = json_object_get(res, "structuredContent");
        if (b.n == 0 && sc) {
            char *s = json_dumps(sc, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s)
                sbuf_adds(&b, s);
            free(s);
        }
        return sbuf_steal(&b, NULL);
    }
    if (json_is_string(res))
        return strdup(json_string_value(res));
    return json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
}

static json_t *tool_message(const agent_call *k, const char *text, bool is_error)
{
    json_t *id = json_object_get(k->call, "id"), *name = json_object_get(k->call, "name");
    return json_pack("{s:s, s:O, s:O, s:s, s:b}", "role", "tool", "tool_call_id", id, "name",
                     name, "content", text, "is_error", is_error);
}

json_t *agent_tool_args(const act_t *k)
{
    const struct agent *ag = agent_of(k->parent);
    size_t i = SLOT_CALL(k->slot) - 1;
    json_t *args = i < ag->ncalls ? json_object_get(ag->calls[i].call, "arguments") : NULL;
    json_t *copy = json_is_object(args) ? json_copy(args) : json_object();
    if (copy && ag->calls[i].tool && ag->calls[i].tool->item->kind == DSL_TOOL_LAMBDA)
        json_object_del(copy, "input"); /* that is the lambda's input */
    return copy;
}

bool agent_tool_mcp(const act_t *k, const char **server, const char **tool, json_t **args)
{
    if (!k->parent || k->role != ROLE_TOOL)
        return false;
    const struct agent *ag = agent_of(k->parent);
    size_t i = SLOT_CALL(k->slot) - 1;
    if (!ag || i >= ag->ncalls || !ag->calls[i].tool ||
        ag->calls[i].tool->item->kind != DSL_TOOL_MCP)
        return false;
    *server = ag->calls[i].tool->item->target;
    *tool = ag->calls[i].tool->mcp_name;
    *args = json_object_get(ag->calls[i].call, "arguments");
    return true;
}

static void next_turn(act_t *a);

/* The call K of the turn ended with MESSAGE (stolen); the turn goes on
 * when every call has. */
static void call_ended(act_t *a, size_t k, json_t *message);

/* Starts the turn's calls up to the concurrency bound. */
static void launch(act_t *a)
{
    struct agent *ag = agent_of(a);
    const dsl_call *c = &a->node->u.call;
    while (ag->next < ag->ncalls && ag->running < (size_t)c->max_tool_concurrency) {
        size_t k = ag->next++;
        agent_call *kc = &ag->calls[k];
        if (!kc->tool) {
            const char *name = json_string_value(json_object_get(kc->call, "name"));
            char text[256];
            snprintf(text, sizeof text, "error: there is no tool named '%.64s'",
                     name ? name : "");
            call_ended(a, k, tool_message(kc, text, true));
            if (!agent_of(a) || agent_of(a)->turn != ag->turn)
                return; /* the turn is over (the next one started, or A ended) */
            continue;
        }
        json_t *args = json_object_get(kc->call, "arguments");
        json_t *in = kc->tool->item->kind == DSL_TOOL_LAMBDA ? json_object_get(args, "input")
                                                              : args;
        ag->running++;
        if (!act_spawn_start(a, kc->tool->item->node, in ? in : json_null(), ROLE_TOOL,
                             SLOT_OF(ag->turn, k + 1)))
            return;
    }
}

static void call_ended(act_t *a, size_t k, json_t *message)
{
    struct agent *ag = agent_of(a);
    if (!message) {
        act_fail_oom(a);
        return;
    }
    ag->calls[k].message = message;
    ag->ndone++;
    if (ag->ndone < ag->ncalls)
        return;
    for (size_t i = 0; i < ag->ncalls; i++)
        if (json_array_append(ag->convo, ag->calls[i].message) < 0) {
            act_fail_oom(a);
            return;
        }
    calls_free(ag);
    next_turn(a);
}

/* ---- turns */

static void next_turn(act_t *a)
{
    struct agent *ag = agent_of(a);
    const dsl_call *c = &a->node->u.call;
    if (c->max_tokens_total && ag->tokens >= c->max_tokens_total) {
        char m[160];
        snprintf(m, sizeof m, "the conversation used %lld tokens, max_tokens_total is %lld",
                 (long long)ag->tokens, (long long)c->max_tokens_total);
        act_fail(a, DSL_ERR_FAILED, "max_tokens_total", m);
        return;
    }
    ag->turn++;
    act_spawn_start(a, c->turn, a->input, ROLE_TURN, SLOT_OF(ag->turn, 0));
}

static int64_t usage_of(json_t *res, const char *key)
{
    json_t *v = json_object_get(json_object_get(res, "usage"), key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

/* The final answer: the call's output. */
static void answer(act_t *a, json_t *content)
{
    const dsl_call *c = &a->node->u.call;
    if (!c->json) {
        act_attempt_done(a, json_incref(content), NULL);
        return;
    }
    json_error_t je;
    json_t *v = json_loadb(json_string_value(content), json_string_length(content),
                           JSON_DECODE_ANY, &je);
    if (!v) {
        act_fail(a, DSL_ERR_INVALID_OUTPUT, NULL, "the answer is not JSON");
        return;
    }
    /* the turns ask for the schema, but only the final answer must fit it:
     * checked here, whatever the provider promised */
    char why[512], msg[600];
    if (c->schema && dsl_schema_validate(c->schema, v, why, sizeof why) < 0) {
        json_decref(v);
        snprintf(msg, sizeof msg, "the answer does not fit the schema: %s", why);
        act_fail(a, DSL_ERR_INVALID_OUTPUT, NULL, msg);
        return;
    }
    act_attempt_done(a, v, NULL);
}

/* A turn's well-formed tool calls, or why not in MSG. */
static bool calls_valid(json_t *tc, char *msg, size_t len)
{
    size_t i;
    json_t *k;
    json_array_foreach(tc, i, k) {
        if (!json_is_string(json_object_get(k, "id")) ||
            !json_is_string(json_object_get(k, "name")) ||
            !json_is_object(json_object_get(k, "arguments"))) {
            snprintf(msg, len, "tool call %zu of the answer is not {id, name, arguments}", i + 1);
            return false;
        }
    }
    return true;
}

static void turn_done(act_t *a, json_t *res)
{
    struct agent *ag = agent_of(a);
    const dsl_call *c = &a->node->u.call;
    json_t *content = json_object_get(res, "content");
    json_t *tc = json_object_get(res, "tool_calls");
    char msg[256];
    if (!json_is_string(content) || (tc && !json_is_array(tc))) {
        act_fail(a, DSL_ERR_INVALID_OUTPUT, NULL, "a model turn's answer is not text");
        return;
    }
    ag->tokens += usage_of(res, "input_tokens") + usage_of(res, "output_tokens");
    json_t *m = json_pack("{s:s, s:O}", "role", "assistant", "content", content);
    if (!m || (json_array_size(tc) && json_object_set(m, "tool_calls", tc) < 0) ||
        json_array_append_new(ag->convo, m) < 0) {
        act_fail_oom(a);
        return;
    }
    if (json_array_size(tc) == 0) {
        answer(a, content);
        return;
    }
    if (!calls_valid(tc, msg, sizeof msg)) {
        act_fail(a, DSL_ERR_INVALID_OUTPUT, NULL, msg);
        return;
    }
    size_t n = json_array_size(tc);
    if (ag->calls_made + n > (size_t)c->max_tool_rounds) {
        snprintf(msg, sizeof msg,
                 "the model asked for %zu more tool calls after %zu; max_tool_rounds is %d", n,
                 ag->calls_made, c->max_tool_rounds);
        act_fail(a, DSL_ERR_FAILED, "max_tool_rounds", msg);
        return;
    }
    ag->calls_made += n;
    if (!(ag->calls = calloc(n, sizeof *ag->calls))) {
        act_fail_oom(a);
        return;
    }
    ag->ncalls = n;
    for (size_t i = 0; i < n; i++) {
        ag->calls[i].call = json_incref(json_array_get(tc, i));
        ag->calls[i].tool = tool_named(ag, json_string_value(json_object_get(ag->calls[i].call,
                                                                              "name")));
    }
    launch(a);
}

static void tool_done(act_t *a, size_t slot, json_t *res, eerr *err)
{
    struct agent *ag = agent_of(a);
    size_t k = SLOT_CALL(slot) - 1;
    if (SLOT_TURN(slot) != ag->turn || k >= ag->ncalls) { /* cannot happen: kids of a turn
                                                             end before the next starts */
        json_decref(res);
        eerr_free(err);
        return;
    }
    ag->running--;
    agent_call *kc = &ag->calls[k];
    json_t *m;
    if (err) {
        if (a->node->u.call.on_tool_error == DSL_TOOL_ERROR_FAIL) {
            act_attempt_done(a, NULL, err);
            return;
        }
        char text[700];
        snprintf(text, sizeof text, "error: %s: %s", err->pub.code, err->pub.message);
        output_text_fix(text);
        m = tool_message(kc, text, true);
        eerr_free(err);
    } else {
        bool is_error;
        char *text = result_text(kc->tool, res, &is_error);
        m = text ? tool_message(kc, text, is_error) : NULL;
        free(text);
        json_decref(res);
        if (m && is_error && a->node->u.call.on_tool_error == DSL_TOOL_ERROR_FAIL) {
            json_decref(m);
            act_fail(a, DSL_ERR_FAILED, "tool_failed", "an MCP tool reported an error");
            return;
        }
    }
    size_t turn = ag->turn;
    call_ended(a, k, m);
    if (agent_of(a) && agent_of(a)->turn == turn && agent_of(a)->ncalls)
        launch(a);
}

/* ---- the lifecycle */

static void agent_start(act_t *a)
{
    const dsl_node *n = a->node;
    const dsl_call *c = &n->u.call;
    engine_t *e = a->job->eng;
    char msg[512] = "out of memory";
    struct agent *ag = a->k.agent.ag;
    if (!ag && !(ag = a->k.agent.ag = calloc(1, sizeof *ag))) {
        act_fail_oom(a);
        return;
    }
    /* `input:` is evaluated each attempt over what the node received */
    if (c->input) {
        if (!ag->orig_input)
            ag->orig_input = json_incref(a->input);
        json_decref(a->input);
        a->input = json_incref(ag->orig_input);
        json_t *in = eval_tvalue(a, c->input, NULL, msg, sizeof msg);
        if (!in) {
            act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, msg);
            return;
        }
        json_decref(a->input);
        a->input = in;
    }
    pinst_t *pi = pinst_find(e, c->provider);
    if (!pi) {
        snprintf(msg, sizeof msg, "no provider '%s'", c->provider);
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, msg);
        return;
    }
    if (pi->prov && pi->prov->plugin->abi_minor < 3) {
        snprintf(msg, sizeof msg, "provider '%s' (plugin %s, ABI 2.%u) cannot call tools: that "
                 "needs ABI 2.3", c->provider, pi->prov->plugin->name,
                 (unsigned)pi->prov->plugin->abi_minor);
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, msg);
        return;
    }
    if (!(ag->base = json_array()) || !(ag->convo = json_array())) {
        act_fail_oom(a);
        return;
    }
    if (call_messages(a, c, ag->base, msg, sizeof msg) < 0 ||
        resolve_tools(a, ag, msg, sizeof msg) < 0) {
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, msg);
        return;
    }
    next_turn(a);
}

static void agent_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    if (role == ROLE_TOOL) {
        tool_done(a, slot, res, err);
        return;
    }
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    turn_done(a, res);
    json_decref(res);
}

/* A retry starts the conversation again (under keys of its own attempt);
 * the input as received is kept for it. */
static void agent_reset(act_t *a)
{
    struct agent *ag = a->k.agent.ag;
    if (!ag)
        return;
    json_t *orig = ag->orig_input;
    ag->orig_input = NULL;
    agent_free(ag);
    a->k.agent.ag = NULL;
    if (orig) {
        json_decref(a->input);
        a->input = orig;
    }
}

const act_ops engine_agent_ops = {
    .start = agent_start, .child_done = agent_child_done, .reset = agent_reset,
    .own_timeout = true, .own_retry = true,
};
