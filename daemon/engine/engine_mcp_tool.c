/* engine_mcp_tool.c -- one call of an MCP server's tool, as a leaf of a
 * call with tools (engine_agent.c).
 *
 * The engine knows no MCP: the call goes through the hooks loomd set with
 * engine_set_mcp (engine.h). Like any leaf, the call holds an in-flight
 * slot, is checkpointed when it ends (its record's output is the server's
 * CallToolResult) and replayed instead of called again. A tool's own
 * failure is a result with isError, which the agent hands the model; a
 * server that could not answer (timeout, died, unknown tool) fails the
 * leaf with the code the hook gave. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

static void mcp_done(void *ud, json_t *result, const char *code, const char *message)
{
    act_t *a = ud;
    engine_job_t *job = a->job;
    a->k.leaf.call = NULL;
    a->k.leaf.call_kind = LEAF_NONE;
    job->busy++;
    char msg[512];
    if (result && output_check(result, msg, sizeof msg) < 0) {
        json_decref(result);
        result = NULL;
        code = "invalid_output";
        message = msg;
    }
    if (result) {
        act_attempt_done(a, result, NULL);
    } else {
        int cls = code ? dsl_error_class_find(code) : -1;
        act_attempt_done(a, NULL, eerr_new(cls >= 0 ? (dsl_error_class)cls : DSL_ERR_UPSTREAM,
                                           NULL, a->node->path, a->attempt, "mcp: %s",
                                           message && *message ? message : "failed"));
    }
    job->busy--;
    job_pump(job);
}

void mcp_tool_start(act_t *a)
{
    engine_t *e = a->job->eng;
    const char *server, *tool;
    json_t *args;
    char err[256] = "";
    if (!agent_tool_mcp(a, &server, &tool, &args)) {
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, "not an MCP tool call");
        return;
    }
    if (!e->mcp) {
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, "no MCP servers are configured");
        return;
    }
    json_t *in = json_is_object(args) ? json_incref(args) : json_object();
    void *h = in ? e->mcp->call(e->mcp_ud, server, tool, in, a->node->timeout_ms, mcp_done, a,
                                err, sizeof err)
                 : NULL;
    json_decref(in);
    if (!h) {
        char msg[400];
        snprintf(msg, sizeof msg, "mcp server '%.64s', tool '%.64s': %s", server, tool,
                 err[0] ? err : "the call could not start");
        act_fail(a, DSL_ERR_INVALID_REQUEST, NULL, msg);
        return;
    }
    a->k.leaf.call = h;
    a->k.leaf.call_kind = LEAF_MCP;
}

void mcp_tool_cancel(act_t *a)
{
    engine_t *e = a->job->eng;
    void *h = a->k.leaf.call;
    a->k.leaf.call = NULL;
    a->k.leaf.call_kind = LEAF_NONE;
    if (h && e->mcp)
        e->mcp->cancel(e->mcp_ud, h);
}
