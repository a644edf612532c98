/* mcp_internal.h -- what the JSON-RPC session (mcp.c) and the two
 * transports (mcp_stdio.c, mcp_http.c) share. Not a public header: nothing
 * outside daemon/mcp includes it. */
#ifndef LOOM_DAEMON_MCP_INTERNAL_H
#define LOOM_DAEMON_MCP_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/containers.h"
#include "daemon/core/http.h"
#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/mcp/mcp.h"

#define MCP_BACKOFF_FIRST_MS 100
#define MCP_BACKOFF_MAX_MS 10000
#define MCP_HEALTHY_US (60 * REACTOR_SEC)
#define MCP_REAP_POLL_US (5 * REACTOR_MSEC)
/* The longest line a server may send (the TypeScript SDK's own limit). */
#define MCP_MAX_LINE ((size_t)10 << 20)

typedef struct mcp_server mcp_server;
typedef struct mcp_req mcp_req_t;
typedef struct mcp_post mcp_post;

enum mcp_state {
    MCP_STARTING,    /* started, initialize or the first tools/list on its way */
    MCP_READY,       /* initialized and listed */
    MCP_RESTARTING   /* gone: waiting out the backoff */
};

enum mcp_kind { REQ_INIT, REQ_LIST, REQ_CALL };

/* A request of ours (public as mcp_call_t for tools/call). */
struct mcp_req {
    list_link link;            /* in the server's pending (sent) or queue */
    mcp_server *srv;
    enum mcp_kind kind;
    json_int_t id;             /* 0 until sent */
    char *tool;                /* REQ_CALL: owned */
    json_t *params;            /* owned: what goes out when it is sent */
    reactor_timer_t *timer;    /* its timeout, or a failure handed over later */
    uint64_t timeout_ms;
    const char *late_code;     /* failed before it could start: told on a later pass */
    char *late_msg;
    mcp_post *post;            /* HTTP: its POST while in flight */
    mcp_done_fn done;
    void *ud;
};

struct mcp_server {
    list_link link;            /* in mcp->servers */
    mcp_t *m;
    char *name;                /* owned */
    bool http;
    char **argv, **env, **headers; /* owned, NULL-terminated (or NULL) */
    char *url;
    uint64_t timeout_ms;
    enum mcp_state state;
    bool initialized;          /* notifications/initialized sent: calls may go */
    bool has_tools;            /* the server declared the tools capability */
    json_t *tools;             /* the list in force (owned array), NULL before one */
    json_t *listing;           /* pages gathered by the list on its way, or NULL */
    bool relist;               /* listed again once the list on its way ends */
    char proto[32];            /* the version the server answered with */
    json_int_t next_id;
    list_link pending;         /* mcp_req sent, waiting for their answers */
    list_link queue;           /* calls waiting for the server to be initialized */
    uint64_t calls, failed, restarts;
    unsigned starts;
    uint64_t backoff_ms, started_us;
    reactor_timer_t *restart;
    char why[256];             /* what the last failure said */
    /* stdio */
    pid_t pid;                 /* 0: no process */
    int in_fd, out_fd, err_fd, pidfd; /* -1: none */
    sbuf rd, wr, errline;
    size_t wr_off;             /* bytes of wr already written */
    reactor_timer_t *reap_poll;
    reactor_timer_t *eof_kill; /* it closed its stdout: killed unless it exits */
    bool exiting;              /* killed or lost: reaping ends it */
    bool killed;               /* by loomd, for the reason in why */
    /* Streamable HTTP */
    char *session;             /* MCP-Session-Id, or NULL */
    list_link posts;           /* mcp_post in flight */
};

struct mcp {
    reactor_t *r;
    mcp_log_fn log;
    void *log_ud;
    list_link servers;
    http_client_t *http;       /* made for the first HTTP server */
    char *version;             /* ours, in clientInfo */
};

/* ---- mcp.c: the session, whatever carries it */
/* The transport is up: initialize goes out. */
void mcp_session_start(mcp_server *s);
/* One message from the server (borrowed). */
void mcp_session_message(mcp_server *s, json_t *msg);
/* The server is gone (WHY for people): its requests in flight fail with
 * upstream, and it is started again after the backoff. */
void mcp_session_lost(mcp_server *s, const char *why);
/* REQ's message could not be delivered or was refused (HTTP): it ends with
 * CODE and MESSAGE; a failed initialize loses the server. */
void mcp_req_failed(struct mcp_req *req, const char *code, const char *message);
/* The server's name for messages. */
#define MCP_LOG(s, lvl, data, ...) \
    ((s)->m->log ? (s)->m->log((s)->m->log_ud, lvl, data, __VA_ARGS__) : json_decref(data))

/* ---- mcp_stdio.c */
/* Starts S's process; then mcp_session_start. Failing to, S is lost. */
void mcp_stdio_spawn(mcp_server *s);
/* Queues LINE (LEN bytes, a newline is added) for S's stdin and writes what
 * it can. 0, or -1 (out of memory: S is killed). */
int mcp_stdio_send(mcp_server *s, const char *line, size_t len);
/* Ends S's process (SIGKILL to its group) and waits to reap it; the reap
 * loses the server with WHY (copied into s->why when not NULL). */
void mcp_stdio_kill(mcp_server *s, const char *why);
/* The bounded stop of every stdio server of M (mcp_free). */
void mcp_stdio_stop_all(mcp_t *m);
/* Frees S's descriptors and buffers (the process must be reaped). */
void mcp_stdio_close(mcp_server *s);

/* ---- mcp_http.c */
/* Starts a new session of S (its old one forgotten): mcp_session_start. */
void mcp_http_start(mcp_server *s);
/* POSTs MSG (borrowed) for S; REQ is the request it carries, NULL for a
 * notification or a reply. 0, or -1 (out of memory). */
int mcp_http_send(mcp_server *s, json_t *msg, struct mcp_req *req);
/* Abandons the POST of REQ, if one is in flight. */
void mcp_http_abandon(struct mcp_req *req);
/* Abandons every POST of S. */
void mcp_http_drop_all(mcp_server *s);

#endif
