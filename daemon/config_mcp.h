/* config_mcp.h -- the `mcp` section of the config: the MCP servers whose
 * tools workflows may call (docs/operations.md, "MCP servers"). Parsed by
 * config_file.c, read by loomd_mcp.c. */
#ifndef LOOM_DAEMON_CONFIG_MCP_H
#define LOOM_DAEMON_CONFIG_MCP_H

#include <stddef.h>
#include <stdint.h>

#include "dsl/diag.h"

/* The bounds of a server's timeout. */
#define CONFIG_MCP_MIN_TIMEOUT_MS 10
#define CONFIG_MCP_MAX_TIMEOUT_MS (24ull * 3600 * 1000)

typedef struct config_mcp_server {
    char *name;              /* what `tools: [{mcp: NAME}]` names */
    char **command;          /* stdio: the program and its arguments (NULL-terminated), or NULL */
    char **env;              /* stdio: "NAME=VALUE" added to loomd's environment (NULL-terminated) */
    char *url;               /* Streamable HTTP: the endpoint, or NULL */
    char **headers;          /* HTTP: "Name: value" (NULL-terminated) */
    char **headers_env;      /* HTTP: "Name: VARIABLE", the value read from loomd's
                                environment at start (NULL-terminated), for secrets */
    uint64_t timeout_ms;     /* a call's and initialize's (0: the default, 30 s) */
    int line, col;           /* of the entry, for messages */
} config_mcp_server;

typedef struct config_mcp {
    config_mcp_server *v;
    size_t n;
} config_mcp;

struct dsl_ynode;

/* Parses Y, the value of `mcp:`, a mapping of server names to servers,
 * into M (appended), reporting every problem in D at its position. */
void config_mcp_parse(dsl_diags *d, const struct dsl_ynode *y, config_mcp *m);

/* Frees what M holds (not M). */
void config_mcp_free(config_mcp *m);

#endif
