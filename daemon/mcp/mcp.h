/* mcp.h -- MCP servers as tools: loomd is an MCP client of the servers its
 * config names (docs/operations.md, "MCP servers").
 *
 * Owns: the servers' processes (stdio) or sessions (Streamable HTTP), the
 * JSON-RPC requests in flight to them, their tool lists, their timers.
 * May call: daemon/core (the reactor, the HTTP client, the log), common/
 * and libc.
 * Must never call: the engine, jobs, the store or loomd: loomd_mcp.c hands
 * the engine this module's calls through engine_mcp_ops.
 *
 * The protocol is MCP 2025-11-25 (older versions the server answers with
 * are accepted: 2025-06-18, 2025-03-26, 2024-11-05): JSON-RPC 2.0,
 * `initialize` then `notifications/initialized`, `tools/list` (every page)
 * at start and again on `notifications/tools/list_changed`, `tools/call`
 * with a timeout after which the server gets `notifications/cancelled`.
 * A server's `ping` is answered; any other request from it gets -32601.
 *
 * stdio: the command runs with loomd's environment plus the configured
 * variables, in its own process group; messages are single lines of
 * compact JSON on its stdin and stdout, its stderr goes to loomd's log. A
 * server that exits, closes its stdout or does not answer `initialize`
 * within its timeout is started again after a backoff (100 ms doubling to
 * 10 s, back to 100 ms after a minute of good health); the calls it had in
 * flight end with `upstream`, calls made while it restarts wait for it
 * (bounded by their own timeouts).
 *
 * Streamable HTTP: every message is a POST to the URL, answered with JSON
 * or an SSE stream; the session id of the initialize answer
 * (MCP-Session-Id) and the protocol version (MCP-Protocol-Version) go on
 * every later request, and a 404 on a session starts a new one.
 *
 * Threads: the reactor thread only. The caller must ignore SIGPIPE (loomd
 * does): a server that dies leaves a pipe nobody reads. */
#ifndef LOOM_DAEMON_MCP_H
#define LOOM_DAEMON_MCP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"

/* The protocol version asked for, and the default timeout of a server. */
#define MCP_PROTOCOL_VERSION "2025-11-25"
#define MCP_DEFAULT_TIMEOUT_MS 30000

typedef struct mcp mcp_t;
typedef struct mcp_req mcp_call_t;

/* One server (docs/operations.md). Exactly one of ARGV and URL. */
typedef struct mcp_server_opts {
    const char *name;
    const char *const *argv;    /* stdio: the command, NULL-terminated; argv[0]
                                   is looked up on PATH */
    const char *const *env;     /* "NAME=VALUE" added to loomd's environment
                                   (NULL-terminated; NULL: none) */
    const char *url;            /* Streamable HTTP: the endpoint */
    const char *const *headers; /* "Name: value" sent with every request
                                   (NULL-terminated; NULL: none) */
    uint64_t timeout_ms;        /* a call's and initialize's (0: the default) */
} mcp_server_opts;

/* Where the module logs (starts, crashes, restarts, the servers' stderr
 * lines): LEVEL is LOOM_LOG_*, DATA (a new reference, may be NULL) is
 * stolen. */
typedef void (*mcp_log_fn)(void *ud, int level, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A set of servers on R (borrowed; it must outlive it), logging through
 * LOG(LOG_UD, ...) (NULL: nowhere), introducing itself to the servers as
 * loom VERSION (copied). NULL with errno set. */
mcp_t *mcp_new(reactor_t *r, mcp_log_fn log, void *log_ud, const char *version);

/* Stops every server and frees everything: a stdio server's stdin is
 * closed, then it gets SIGTERM after MCP_EXIT_GRACE_MS and SIGKILL after as
 * long again (all servers at once, so the stop takes at most twice the
 * grace). Calls in flight are dropped without their callbacks, so the
 * engines must be gone first. NULL is a no-op. */
#define MCP_EXIT_GRACE_MS 1000
void mcp_free(mcp_t *m);

/* Adds server O (its strings copied) and starts it. 0, -EEXIST (the name is
 * taken), -EINVAL (neither or both of argv and url), -ENOMEM. */
int mcp_add_server(mcp_t *m, const mcp_server_opts *o);

/* The tools SERVER offers now: a new reference to an array of MCP tool
 * objects, or NULL with the reason in ERR (no such server, not listed
 * yet). */
json_t *mcp_tools(mcp_t *m, const char *server, char *err, size_t errlen);

/* The end of a call: RESULT (stolen) is the CallToolResult, or NULL with
 * CODE ("timeout", "upstream", "invalid_request") and MESSAGE (borrowed for
 * the call). */
typedef void (*mcp_done_fn)(void *ud, json_t *result, const char *code, const char *message);

/* Calls TOOL of SERVER with ARGS (borrowed object; NULL: {}) within
 * TIMEOUT_MS (0: the server's). DONE(UD, ...) ends it exactly once, on a
 * later reactor pass, unless it is cancelled first. Returns its handle
 * (valid until DONE starts or mcp_cancel), or NULL with the reason in ERR
 * (no such server, out of memory). A tool not in the server's list ends
 * with invalid_request. */
mcp_call_t *mcp_call(mcp_t *m, const char *server, const char *tool, json_t *args,
                     uint64_t timeout_ms, mcp_done_fn done, void *ud, char *err, size_t errlen);

/* Gives up on C: DONE never runs; a call the server has is cancelled there
 * (notifications/cancelled). */
void mcp_cancel(mcp_call_t *c);

/* {NAME: {"state": "starting"|"ready"|"restarting", "transport":
 * "stdio"|"http", "tools": N, "calls": N, "failed": N, "restarts": N}}: a
 * new object ({} for NULL M), or NULL when out of memory. `failed` counts
 * calls that got no result (timeouts, a server that died, JSON-RPC errors)
 * and results with isError. */
json_t *mcp_stats_json(const mcp_t *m);

/* How many servers are ready (initialized, tools listed). */
size_t mcp_ready_count(const mcp_t *m);

#endif
