/* config_file.h -- the daemon's configuration file (read by loomd and by
 * `loomctl run --config`).
 *
 * YAML, checked like a workflow: unknown keys (with "did you mean"), wrong
 * types and bad values are reported as FILE:LINE:COL, all in one pass, and a
 * file with errors is refused as a whole. With no file, the defaults make
 * Loom run out of the box: ./loom.sock, ./workflows, ./loom-state, the
 * built-in plugins, and the offline mock provider named `default`.
 *
 * Provider options other than `plugin`, `limits` and `batch` belong to the
 * provider plugin; they are kept as JSON and checked against the plugin's
 * option table when the provider is instantiated (with this entry's position
 * for messages). Secrets are never values here: a provider names an
 * environment variable (api_key_env) or a file (api_key_file). */
#ifndef LOOM_DAEMON_CONFIG_H
#define LOOM_DAEMON_CONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "daemon/config_cluster.h"
#include "daemon/config_isolate.h"
#include "daemon/config_mcp.h"
#include "daemon/config_plugins.h"
#include "daemon/config_prices.h"
#include "daemon/config_tracing.h"
#include "daemon/config_metrics.h"
#include "daemon/config_access.h"
#include "daemon/config_tenants.h"
#include "daemon/upstream/ratelimit.h"
#include "daemon/upstream/upstream.h"
#include "dsl/diag.h"

/* max_output_bytes: the default, and the most it may be, so that a job's
 * output and its input (a request line, 16 MiB at most) fit in one reply
 * under the server's 64 MiB output limit. */
#define CONFIG_DEFAULT_MAX_OUTPUT_BYTES ((int64_t)16 << 20)
#define CONFIG_MAX_OUTPUT_BYTES ((int64_t)32 << 20)

/* A provider's limits are the limiter's own structure (daemon/upstream). */
typedef rl_limits config_limits;

typedef struct config_provider {
    char *name;          /* the instance name workflows use */
    char *plugin;        /* the provider plugin: "mock", "openai", ... */
    json_t *options;     /* the plugin's options (owned object) */
    config_limits limits;
    /* native batching: 0 = the plugin's max_batch (none if it declares
     * none), -1 = off (`batch: false`) */
    int64_t batch_max_inputs;
    int64_t batch_max_tokens;    /* 0 = the default (300,000) */
    uint64_t batch_window_ms;    /* 0 = the default (5 ms) */
    /* HTTP timeouts; 0 = the defaults (10 s, 120 s, 600 s) */
    uint64_t timeout_connect_ms, timeout_first_byte_ms, timeout_total_ms;
    /* `batch_api:`, the provider's Batch API (zeros: the defaults upstream.h
     * gives; `batch_api: false` sets off) */
    upstream_batch_api batch_api;
    /* TLS trust for an HTTP provider (owned; NULL: the system's CA store)
     * and the HTTP version it speaks (`http_version:`, default auto) */
    char *ca_file, *ca_path;
    http_version http_version;
    int line, col;       /* of the entry, for messages about its options */
} config_provider;

typedef enum { CONFIG_LOG_TEXT, CONFIG_LOG_JSON } config_log_format;

/* A file the daemon writes itself (log.file, pid_file): its path (owned,
 * NULL: not set) and where the config named it, for an error at start. */
typedef struct config_path_key {
    char *path;
    int line, col;
} config_path_key;

typedef struct config {
    char *file;          /* where it came from, or NULL for the defaults */
    char *socket;
    unsigned socket_mode;
    char *workflows;
    char **plugin_dirs;  /* NULL-terminated */
    config_isolate *isolate; /* plugins.isolate: plugins run in helpers */
    size_t nisolate;
    config_plugins plugin_configs; /* plugins.config: each plugin's own (config_plugins.h) */
    char *state;
    int workers;         /* 0 = online cores */
    int log_level;       /* LOOM_LOG_* of include/loom/plugin.h */
    config_log_format log_format;
    int log_payloads;    /* log prompts and outputs (off: never) */
    config_path_key log_file; /* log.file: the log goes there, not to stderr */
    config_path_key pid_file; /* pid_file: loomd's pid, locked while it runs */
    uint64_t retention_ms;      /* finished jobs kept this long (default 7 days) */
    uint64_t shutdown_grace_ms; /* SIGTERM: how long running calls may finish (30 s) */
    int64_t max_running_jobs;   /* jobs running at once; more wait, by priority (1024) */
    int64_t max_connections;    /* socket clients at once (4096) */
    /* What one client can make the daemon hold (docs/operations.md) */
    int64_t max_output_bytes;   /* a job's output as JSON; over it the job fails (16 MiB) */
    int64_t max_queued_jobs;    /* jobs waiting to start; more are refused (100,000) */
    int64_t max_pending_per_connection; /* waits, subscriptions, submits in flight (4096) */
    uint64_t idle_timeout_ms;   /* a connection with nothing pending closes (300 s; 0: never) */
    int64_t max_connections_per_uid; /* socket clients of one uid at once (1024) */
    int64_t quarantine_after;   /* crashes in a row that end a job (2; docs/operations.md) */
    /* provider answers buffered across all calls at once (512 MiB) */
    int64_t max_response_bytes_in_flight;
    config_provider *providers;
    size_t nproviders;
    config_tracing tracing;     /* tracing: spans to a collector (config_tracing.h) */
    config_metrics metrics;     /* metrics: the GET /metrics endpoint (config_metrics.h) */
    engine_prices prices;       /* prices: cost per provider and model (config_prices.h) */
    config_tenants tenants;     /* tenants: weights and limits (config_tenants.h) */
    config_access access;       /* access: peers to tenants and roles (config_access.h) */
    config_mcp mcp;             /* mcp: MCP servers whose tools calls use (config_mcp.h) */
    config_cluster cluster;     /* cluster: this daemon beside others on PostgreSQL (config_cluster.h) */
} config;

/* The defaults (new; free with config_free), or NULL when out of memory. */
config *config_default(void);

/* Reads PATH. Returns a new config, or NULL with every error in DIAGS (whose
 * file name should be PATH). */
config *config_load(const char *path, dsl_diags *diags);

/* Parses BUF (LEN bytes, borrowed) as if read from a file. */
config *config_parse(const char *buf, size_t len, dsl_diags *diags);

void config_free(config *c);

/* A YAML value as JSON, scalars by their YAML type (a new reference, or
 * NULL when out of memory): what plugins get of the config. */
json_t *config_yaml_json(const struct dsl_ynode *y);

/* The provider instance called NAME, or NULL (borrowed). */
const config_provider *config_find_provider(const config *c, const char *name);

/* NULL-terminated array of the provider names (new array of borrowed
 * strings; free the array only), for the compiler's registry. */
const char **config_provider_names(const config *c);

#endif
