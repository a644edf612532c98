/* config_file.c -- reading the daemon's configuration file.
 *
 * The file goes through the same YAML loader and the same key checks as a
 * workflow, so its errors look the same (FILE:LINE:COL, "did you mean"),
 * and every error of the file is reported before it is refused. */
#include "daemon/config_file.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsl/dsl.h"
#include "common/file.h"
#include "loom/plugin.h"

#define CONFIG_MAX_FILE ((size_t)16 << 20)

static const char *const top_keys[] = { "socket", "socket_mode", "workflows", "plugins", "state",
                                        "workers", "log", "providers", "retention",
                                        "shutdown_grace", "max_running_jobs", "max_connections",
                                        "max_output_bytes", "max_queued_jobs",
                                        "max_pending_per_connection", "idle_timeout",
                                        "max_connections_per_uid", "quarantine_after",
                                        "max_response_bytes_in_flight", "tenants", "access",
                                        "pid_file",
                                        "tracing", "prices", "metrics",
                                        "mcp", "cluster",
                                        NULL };
static const char *const log_keys[] = { "level", "format", "payloads", "file", NULL };
static const char *const limit_keys[] = { "rpm", "tpm", "input_tpm", "output_tpm", "concurrency",
                                          NULL };
static const char *const batch_keys[] = { "max_inputs", "max_tokens", "window", NULL };
static const char *const batch_api_keys[] = { "window", "deadline", "maps_over",
                                              "fallback_direct", "poll_min", "poll_max",
                                              "max_lines", "max_bytes", NULL };
static const char *const timeout_keys[] = { "connect", "first_byte", "total", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

config *config_default(void)
{
    config *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->socket = strdup("./loom.sock");
    c->socket_mode = 0660;
    c->retention_ms = 7ull * 24 * 3600 * 1000;
    c->shutdown_grace_ms = 30000;
    c->max_running_jobs = 1024;
    c->max_connections = 4096;
    c->max_output_bytes = CONFIG_DEFAULT_MAX_OUTPUT_BYTES;
    c->metrics.max_series = CONFIG_METRICS_MAX_SERIES;
    c->max_queued_jobs = 100000;
    c->max_pending_per_connection = 4096;
    c->idle_timeout_ms = 300000;
    c->max_connections_per_uid = 1024;
    c->quarantine_after = 2;
    c->max_response_bytes_in_flight = (int64_t)512 << 20;
    c->workflows = strdup("./workflows");
    c->plugin_dirs = calloc(1, sizeof *c->plugin_dirs);
    c->state = strdup("./loom-state");
    if (config_cluster_default(&c->cluster) < 0)
        goto fail;
    c->log_level = LOOM_LOG_INFO;
    c->providers = calloc(1, sizeof *c->providers);
    if (!c->socket || !c->workflows || !c->plugin_dirs || !c->state || !c->providers)
        goto fail;
    /* the offline default: workflows that name no provider run on the mock */
    config_provider *p = &c->providers[0];
    p->name = strdup("default");
    p->plugin = strdup("mock");
    p->options = json_pack("{s:s}", "latency", "20ms");
    if (!p->name || !p->plugin || !p->options)
        goto fail;
    c->nproviders = 1;
    return c;
fail:
    c->nproviders = c->providers ? 1 : 0; /* free what was set of the first entry too */
    config_free(c);
    return NULL;
}

void config_free(config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nproviders; i++) {
        free(c->providers[i].name);
        free(c->providers[i].plugin);
        free(c->providers[i].ca_file);
        free(c->providers[i].ca_path);
        json_decref(c->providers[i].options);
    }
    free(c->providers);
    strv_free(c->plugin_dirs);
    config_isolate_free(c->isolate, c->nisolate);
    config_plugins_free(&c->plugin_configs);
    config_tracing_free(&c->tracing);
    config_metrics_free(&c->metrics);
    config_cluster_free(&c->cluster);
    engine_prices_fini(&c->prices);
    config_access_free(&c->access);
    config_tenants_free(&c->tenants);
    config_mcp_free(&c->mcp);
    free(c->log_file.path);
    free(c->pid_file.path);
    free(c->file);
    free(c->socket);
    free(c->workflows);
    free(c->state);
    free(c);
}

/* A string value into *OUT (replacing the default). 0 or -1 (reported). */
static int get_string(dsl_diags *d, const dsl_ynode *y, const char *key, char **out)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING || y->u.scalar.len == 0) {
        dsl_type_error(d, y, key, "a non-empty string");
        return -1;
    }
    char *s = strdup(y->u.scalar.str);
    if (!s) {
        dsl_error(d, y->line, y->col, "out of memory");
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

/* A path the daemon opens at start (log.file, pid_file), with the value's
 * position: whether it can be opened is known only then. */
static void get_path_key(dsl_diags *d, const dsl_ynode *y, const char *key, config_path_key *out)
{
    if (get_string(d, y, key, &out->path) == 0) {
        out->line = y->line;
        out->col = y->col;
    }
}

static int get_int(dsl_diags *d, const dsl_ynode *y, const char *key, int64_t min, int64_t max,
                   int64_t *out)
{
    int64_t v;
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_INT || dsl_yscalar_int(y, &v) < 0) {
        dsl_type_error(d, y, key, "an integer");
        return -1;
    }
    if (v < min || v > max) {
        dsl_error(d, y->line, y->col, "'%s' must be from %lld to %lld, got %lld", key,
                  (long long)min, (long long)max, (long long)v);
        return -1;
    }
    *out = v;
    return 0;
}

/* socket_mode is octal text ("0660"); a plain YAML number would be read as
 * decimal 660, a classic mistake, so it must be quoted. */
static void parse_mode(dsl_diags *d, const dsl_ynode *y, unsigned *out)
{
    char *end = NULL;
    unsigned long m = 0;
    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
        errno = 0;
        m = strtoul(y->u.scalar.str, &end, 8);
    }
    if (!end || end == y->u.scalar.str || *end || errno || m > 0777) {
        dsl_error(d, y->line, y->col, "'socket_mode' must be octal permissions in quotes, e.g. \"0660\"");
        return;
    }
    *out = (unsigned)m;
}

static void parse_log(dsl_diags *d, const dsl_ynode *y, config *c)
{
    const dsl_ynode *x;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "log", "a mapping");
        return;
    }
    dsl_check_keys(d, y, log_keys, "log");
    if ((x = dsl_ymap_get(y, "level"))) {
        int lvl = -1;
        for (int i = 0; level_names[i] && x->kind == DSL_Y_SCALAR; i++)
            if (strcmp(level_names[i], x->u.scalar.str) == 0)
                lvl = i;
        if (lvl < 0)
            dsl_error(d, x->line, x->col, "'level' must be error, warn, info or debug");
        else
            c->log_level = lvl;
    }
    if ((x = dsl_ymap_get(y, "format"))) {
        if (x->kind == DSL_Y_SCALAR && strcmp(x->u.scalar.str, "text") == 0)
            c->log_format = CONFIG_LOG_TEXT;
        else if (x->kind == DSL_Y_SCALAR && strcmp(x->u.scalar.str, "json") == 0)
            c->log_format = CONFIG_LOG_JSON;
        else
            dsl_error(d, x->line, x->col, "'format' must be text or json");
    }
    if ((x = dsl_ymap_get(y, "payloads"))) {
        int on;
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_bool(x, &on) < 0)
            dsl_error(d, x->line, x->col, "'payloads' must be true or false");
        else
            c->log_payloads = on;
    }
    if ((x = dsl_ymap_get(y, "file")))
        get_path_key(d, x, "file", &c->log_file);
}

/* `plugins: [DIR, ...]`, or the mapping `plugins: { dirs: [...], isolate:
 * {...}, config: {...} }` (config_isolate.c, config_plugins.c). */
static void parse_plugins(dsl_diags *d, const dsl_ynode *y, config *c)
{
    if (y->kind == DSL_Y_MAP) {
        static const char *const plugins_keys[] = { "dirs", "isolate", "config", NULL };
        const dsl_ynode *x;
        dsl_check_keys(d, y, plugins_keys, "plugins");
        if ((x = dsl_ymap_get(y, "isolate")))
            config_isolate_parse(d, x, &c->isolate, &c->nisolate);
        if ((x = dsl_ymap_get(y, "config")))
            config_plugins_parse(d, x, &c->plugin_configs);
        if (!(x = dsl_ymap_get(y, "dirs")))
            return;
        y = x;
    }
    if (y->kind != DSL_Y_SEQ) {
        dsl_type_error(d, y, "plugins", "a list of directories");
        return;
    }
    char **v = calloc(y->u.seq.n + 1, sizeof *v);
    if (!v) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    for (size_t i = 0; i < y->u.seq.n; i++)
        if (get_string(d, y->u.seq.items[i], "plugins", &v[i]) < 0)
            break;
    strv_free(c->plugin_dirs);
    c->plugin_dirs = v;
}

/* A YAML value as JSON for a plugin's options: scalars by their YAML type. */
static json_t *to_json(const dsl_ynode *y)
{
    json_t *v = NULL;
    int b;
    int64_t i;
    double f;
    switch (y->kind) {
    case DSL_Y_SCALAR:
        switch (dsl_yscalar_type(y)) {
        case DSL_YT_NULL: return json_null();
        case DSL_YT_BOOL: dsl_yscalar_bool(y, &b); return json_boolean(b);
        case DSL_YT_INT: dsl_yscalar_int(y, &i); return json_integer(i);
        case DSL_YT_FLOAT: dsl_yscalar_double(y, &f); return json_real(f);
        case DSL_YT_STRING: break;
        }
        return json_stringn_nocheck(y->u.scalar.str, y->u.scalar.len);
    case DSL_Y_SEQ:
        v = json_array();
        for (size_t k = 0; v && k < y->u.seq.n; k++)
            if (json_array_append_new(v, to_json(y->u.seq.items[k])) < 0) {
                json_decref(v);
                return NULL;
            }
        return v;
    case DSL_Y_MAP:
        v = json_object();
        for (size_t k = 0; v && k < y->u.map.n; k++)
            if (json_object_set_new(v, y->u.map.pairs[k].key->u.scalar.str,
                                    to_json(y->u.map.pairs[k].value)) < 0) {
                json_decref(v);
                return NULL;
            }
        return v;
    }
    return NULL;
}

json_t *config_yaml_json(const dsl_ynode *y)
{
    return to_json(y);
}

static void parse_limits(dsl_diags *d, const dsl_ynode *y, config_limits *l)
{
    static const struct { const char *key; size_t off; } fields[] = {
        { "rpm", offsetof(config_limits, rpm) },
        { "tpm", offsetof(config_limits, tpm) },
        { "input_tpm", offsetof(config_limits, input_tpm) },
        { "output_tpm", offsetof(config_limits, output_tpm) },
        { "concurrency", offsetof(config_limits, concurrency) },
    };
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "limits", "a mapping");
        return;
    }
    dsl_check_keys(d, y, limit_keys, "limits");
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const dsl_ynode *x = dsl_ymap_get(y, fields[i].key);
        if (x)
            get_int(d, x, fields[i].key, 1, 1000000000000LL, (int64_t *)((char *)l + fields[i].off));
    }
}

static void get_duration(dsl_diags *d, const dsl_ynode *y, const char *key, uint64_t *ms)
{
    const char *why;
    if (y->kind != DSL_Y_SCALAR || dsl_parse_duration(y->u.scalar.str, y->u.scalar.len, ms, &why) < 0)
        dsl_error(d, y->line, y->col, "'%s' must be a duration such as 5ms or 30s", key);
}

/* retention is counted in days, past the 7-day cap of workflow durations:
 * "30d", "12h", "90m"; at least a minute. */
static void get_retention(dsl_diags *d, const dsl_ynode *y, uint64_t *ms)
{
    char *end = NULL;
    unsigned long long v = 0;
    if (y->kind == DSL_Y_SCALAR && y->u.scalar.str[0] >= '0' && y->u.scalar.str[0] <= '9') {
        errno = 0;
        v = strtoull(y->u.scalar.str, &end, 10);
    }
    uint64_t unit = !end || errno ? 0
                    : !strcmp(end, "d") ? 86400000ull
                    : !strcmp(end, "h") ? 3600000ull
                    : !strcmp(end, "m") ? 60000ull : 0;
    if (!unit || v == 0 || v > 36500)
        dsl_error(d, y->line, y->col, "'retention' must be a duration in days, hours or minutes "
                                      "such as 30d, 12h or 90m");
    else
        *ms = v * unit;
}

/* A duration of batch_api that must not be zero (zero means "the default"
 * in upstream_batch_api). */
static void get_batch_duration(dsl_diags *d, const dsl_ynode *y, const char *key, uint64_t *ms)
{
    uint64_t v = 0;
    const char *why;
    if (y->kind != DSL_Y_SCALAR || dsl_parse_duration(y->u.scalar.str, y->u.scalar.len, &v, &why) < 0)
        dsl_error(d, y->line, y->col, "'%s' must be a duration such as 5ms or 30s", key);
    else if (v == 0)
        dsl_error(d, y->line, y->col, "'%s' must be longer than 0", key);
    else
        *ms = v;
}

/* `batch_api: false | {window, deadline, maps_over, fallback_direct,
 * poll_min, poll_max, max_lines, max_bytes}` */
static void parse_batch_api(dsl_diags *d, const dsl_ynode *x, upstream_batch_api *b)
{
    static const struct { const char *key; size_t off; } durations[] = {
        { "window", offsetof(upstream_batch_api, window_ms) },
        { "deadline", offsetof(upstream_batch_api, deadline_ms) },
        { "poll_min", offsetof(upstream_batch_api, poll_min_ms) },
        { "poll_max", offsetof(upstream_batch_api, poll_max_ms) },
    };
    const dsl_ynode *v;
    int on;
    if (x->kind == DSL_Y_SCALAR && dsl_yscalar_bool(x, &on) == 0 && !on) {
        b->off = true;
        return;
    }
    if (x->kind != DSL_Y_MAP) {
        dsl_type_error(d, x, "batch_api", "a mapping or false");
        return;
    }
    dsl_check_keys(d, x, batch_api_keys, "batch_api");
    for (size_t i = 0; i < sizeof durations / sizeof *durations; i++)
        if ((v = dsl_ymap_get(x, durations[i].key)))
            get_batch_duration(d, v, durations[i].key,
                               (uint64_t *)((char *)b + durations[i].off));
    if ((v = dsl_ymap_get(x, "maps_over")))
        get_int(d, v, "maps_over", 0, 1000000000, &b->maps_over);
    if ((v = dsl_ymap_get(x, "max_lines")))
        get_int(d, v, "max_lines", 1, 100000000, &b->max_lines);
    if ((v = dsl_ymap_get(x, "max_bytes")))
        get_int(d, v, "max_bytes", 1, (int64_t)1 << 40, &b->max_bytes);
    if ((v = dsl_ymap_get(x, "fallback_direct"))) {
        if (v->kind != DSL_Y_SCALAR || dsl_yscalar_bool(v, &on) < 0)
            dsl_error(d, v->line, v->col, "'fallback_direct' must be true or false");
        else
            b->fallback_direct = on;
    }
    const dsl_ynode *lo = dsl_ymap_get(x, "poll_min"), *hi = dsl_ymap_get(x, "poll_max");
    if (lo && hi && b->poll_min_ms && b->poll_max_ms && b->poll_max_ms < b->poll_min_ms)
        dsl_error(d, hi->line, hi->col, "'poll_max' must not be shorter than 'poll_min'");
}

/* Why PATH (ca_file, or ca_path when DIR) cannot serve, or NULL. */
static const char *ca_unusable(const char *path, bool dir)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return strerror(errno);
    if (dir && !S_ISDIR(st.st_mode))
        return "not a directory (ca_file takes a file)";
    if (!dir && !S_ISREG(st.st_mode))
        return "not a file (ca_path takes a directory)";
    if (access(path, dir ? R_OK | X_OK : R_OK) < 0)
        return strerror(errno);
    return NULL;
}

/* ca_file, ca_path and http_version of provider entry Y into P. The CA
 * files are looked at now: a path that cannot be read would otherwise fail
 * every call of the provider with "tls", far from the line that caused it. */
static void parse_tls(dsl_diags *d, const dsl_ynode *y, config_provider *p)
{
    const dsl_ynode *x;
    const char *why;
    if ((x = dsl_ymap_get(y, "ca_file")) && get_string(d, x, "ca_file", &p->ca_file) == 0 &&
        (why = ca_unusable(p->ca_file, false)))
        dsl_error(d, x->line, x->col, "'ca_file' %s cannot be used: %s", p->ca_file, why);
    if ((x = dsl_ymap_get(y, "ca_path")) && get_string(d, x, "ca_path", &p->ca_path) == 0 &&
        (why = ca_unusable(p->ca_path, true)))
        dsl_error(d, x->line, x->col, "'ca_path' %s cannot be used: %s", p->ca_path, why);
    if ((x = dsl_ymap_get(y, "http_version"))) {
        int v = x->kind == DSL_Y_SCALAR ? http_version_parse(x->u.scalar.str) : -1;
        if (v < 0)
            dsl_error(d, x->line, x->col, "'http_version' must be auto, \"1.1\" or \"2\"");
        else
            p->http_version = (http_version)v;
    }
}

static void parse_provider(dsl_diags *d, const dsl_ynode *k, const dsl_ynode *y, config_provider *p)
{
    const dsl_ynode *x;
    p->line = y->line;
    p->col = y->col;
    if (!(p->name = strdup(k->u.scalar.str)))
        return;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, p->name, "a mapping with at least 'plugin'");
        return;
    }
    if (!(x = dsl_ymap_get(y, "plugin")))
        dsl_error(d, y->line, y->col, "missing required key 'plugin' in provider '%s'", p->name);
    else
        get_string(d, x, "plugin", &p->plugin);
    if ((x = dsl_ymap_get(y, "limits")))
        parse_limits(d, x, &p->limits);
    if ((x = dsl_ymap_get(y, "batch"))) {
        int on;
        if (x->kind == DSL_Y_SCALAR && dsl_yscalar_bool(x, &on) == 0 && !on) {
            p->batch_max_inputs = -1; /* batch: false */
        } else if (x->kind != DSL_Y_MAP) {
            dsl_type_error(d, x, "batch", "a mapping or false");
        } else {
            const dsl_ynode *b;
            dsl_check_keys(d, x, batch_keys, "batch");
            if ((b = dsl_ymap_get(x, "max_inputs")))
                get_int(d, b, "max_inputs", 1, 1000000, &p->batch_max_inputs);
            if ((b = dsl_ymap_get(x, "max_tokens")))
                get_int(d, b, "max_tokens", 1, 1000000000, &p->batch_max_tokens);
            if ((b = dsl_ymap_get(x, "window")))
                get_duration(d, b, "window", &p->batch_window_ms);
        }
    }
    if ((x = dsl_ymap_get(y, "batch_api")))
        parse_batch_api(d, x, &p->batch_api);
    parse_tls(d, y, p);
    if ((x = dsl_ymap_get(y, "timeouts"))) {
        if (x->kind != DSL_Y_MAP) {
            dsl_type_error(d, x, "timeouts", "a mapping");
        } else {
            const dsl_ynode *b;
            dsl_check_keys(d, x, timeout_keys, "timeouts");
            if ((b = dsl_ymap_get(x, "connect")))
                get_duration(d, b, "connect", &p->timeout_connect_ms);
            if ((b = dsl_ymap_get(x, "first_byte")))
                get_duration(d, b, "first_byte", &p->timeout_first_byte_ms);
            if ((b = dsl_ymap_get(x, "total")))
                get_duration(d, b, "total", &p->timeout_total_ms);
        }
    }
    /* everything else is the plugin's, checked against its option table
     * when the provider is instantiated */
    p->options = json_object();
    for (size_t i = 0; p->options && i < y->u.map.n; i++) {
        const char *key = y->u.map.pairs[i].key->u.scalar.str;
        if (!strcmp(key, "plugin") || !strcmp(key, "limits") || !strcmp(key, "batch") ||
            !strcmp(key, "batch_api") || !strcmp(key, "timeouts") || !strcmp(key, "ca_file") ||
            !strcmp(key, "ca_path") || !strcmp(key, "http_version"))
            continue;
        if (!strcmp(key, "api_key")) {
            const dsl_ynode *ak = y->u.map.pairs[i].key;
            dsl_error(d, ak->line, ak->col,
                      "an API key does not belong in the config: use api_key_env or api_key_file");
            continue;
        }
        json_object_set_new(p->options, key, to_json(y->u.map.pairs[i].value));
    }
}

static void parse_providers(dsl_diags *d, const dsl_ynode *y, config *c)
{
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "providers", "a mapping of names to providers");
        return;
    }
    config_provider *v = calloc(y->u.map.n + 1, sizeof *v);
    if (!v) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    for (size_t i = 0; i < c->nproviders; i++) {
        free(c->providers[i].name);
        free(c->providers[i].plugin);
        free(c->providers[i].ca_file);
        free(c->providers[i].ca_path);
        json_decref(c->providers[i].options);
    }
    free(c->providers);
    c->providers = v;
    c->nproviders = y->u.map.n;
    for (size_t i = 0; i < y->u.map.n; i++)
        parse_provider(d, y->u.map.pairs[i].key, y->u.map.pairs[i].value, &v[i]);
}

config *config_parse(const char *buf, size_t len, dsl_diags *diags)
{
    size_t before = diags->nerrors;
    config *c = config_default();
    dsl_ydoc *doc = NULL;
    const dsl_ynode *y;
    if (!c) {
        dsl_error(diags, 0, 0, "out of memory");
        return NULL;
    }
    if (!(doc = dsl_yaml_load(buf, len, NULL, diags)))
        goto fail;
    const dsl_ynode *root = doc->root;
    if (!root) /* an empty file: the defaults */
        goto out;
    if (root->kind != DSL_Y_MAP) {
        dsl_error(diags, root->line, root->col, "a config must be a mapping, got a %s",
                  dsl_ynode_describe(root));
        goto fail;
    }
    dsl_check_keys(diags, root, top_keys, "config");
    if ((y = dsl_ymap_get(root, "socket")))
        get_string(diags, y, "socket", &c->socket);
    if ((y = dsl_ymap_get(root, "socket_mode")))
        parse_mode(diags, y, &c->socket_mode);
    if ((y = dsl_ymap_get(root, "workflows")))
        get_string(diags, y, "workflows", &c->workflows);
    if ((y = dsl_ymap_get(root, "state")))
        get_string(diags, y, "state", &c->state);
    if ((y = dsl_ymap_get(root, "plugins")))
        parse_plugins(diags, y, c);
    if ((y = dsl_ymap_get(root, "workers"))) {
        int64_t w;
        if (get_int(diags, y, "workers", 0, 1024, &w) == 0)
            c->workers = (int)w;
    }
    if ((y = dsl_ymap_get(root, "log")))
        parse_log(diags, y, c);
    if ((y = dsl_ymap_get(root, "pid_file")))
        get_path_key(diags, y, "pid_file", &c->pid_file);
    if ((y = dsl_ymap_get(root, "retention")))
        get_retention(diags, y, &c->retention_ms);
    if ((y = dsl_ymap_get(root, "shutdown_grace")))
        get_duration(diags, y, "shutdown_grace", &c->shutdown_grace_ms);
    if ((y = dsl_ymap_get(root, "max_running_jobs")))
        get_int(diags, y, "max_running_jobs", 1, 1000000, &c->max_running_jobs);
    if ((y = dsl_ymap_get(root, "max_connections")))
        get_int(diags, y, "max_connections", 1, 1000000, &c->max_connections);
    if ((y = dsl_ymap_get(root, "max_output_bytes")))
        get_int(diags, y, "max_output_bytes", 1024, CONFIG_MAX_OUTPUT_BYTES, &c->max_output_bytes);
    if ((y = dsl_ymap_get(root, "max_queued_jobs")))
        get_int(diags, y, "max_queued_jobs", 1, 10000000, &c->max_queued_jobs);
    if ((y = dsl_ymap_get(root, "max_pending_per_connection")))
        get_int(diags, y, "max_pending_per_connection", 1, 1000000,
                &c->max_pending_per_connection);
    if ((y = dsl_ymap_get(root, "idle_timeout")))
        get_duration(diags, y, "idle_timeout", &c->idle_timeout_ms);
    if ((y = dsl_ymap_get(root, "max_connections_per_uid")))
        get_int(diags, y, "max_connections_per_uid", 1, 1000000, &c->max_connections_per_uid);
    if ((y = dsl_ymap_get(root, "quarantine_after")))
        get_int(diags, y, "quarantine_after", 1, 1000, &c->quarantine_after);
    if ((y = dsl_ymap_get(root, "max_response_bytes_in_flight")))
        get_int(diags, y, "max_response_bytes_in_flight", (int64_t)1 << 20, (int64_t)1 << 40,
                &c->max_response_bytes_in_flight);
    if ((y = dsl_ymap_get(root, "providers")))
        parse_providers(diags, y, c);
    /* after providers: prices name them */
    if ((y = dsl_ymap_get(root, "prices"))) {
        const char **names = config_provider_names(c);
        config_prices_parse(diags, y, &c->prices);
        config_prices_check(diags, &c->prices, names);
        free(names);
    }
    if ((y = dsl_ymap_get(root, "tracing")))
        config_tracing_parse(diags, y, &c->tracing);
    if ((y = dsl_ymap_get(root, "metrics")))
        config_metrics_parse(diags, y, &c->metrics);
    if ((y = dsl_ymap_get(root, "cluster")))
        config_cluster_parse(diags, y, &c->cluster);
    /* tenants first: access rules name them */
    if ((y = dsl_ymap_get(root, "tenants")))
        config_tenants_parse(diags, y, &c->tenants);
    if ((y = dsl_ymap_get(root, "access")))
        config_access_parse(diags, y, &c->tenants, &c->access);
    if ((y = dsl_ymap_get(root, "mcp")))
        config_mcp_parse(diags, y, &c->mcp);
out:
    if (diags->nerrors != before)
        goto fail;
    dsl_ydoc_free(doc);
    return c;
fail:
    dsl_diags_sort(diags);
    dsl_ydoc_free(doc);
    config_free(c);
    return NULL;
}

config *config_load(const char *path, dsl_diags *diags)
{
    size_t len;
    char *buf = file_read_all(path, CONFIG_MAX_FILE, &len);
    if (!buf) {
        dsl_error(diags, 0, 0, "cannot read: %s", errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
        return NULL;
    }
    config *c = config_parse(buf, len, diags);
    free(buf);
    if (c && !(c->file = strdup(path))) {
        config_free(c);
        dsl_error(diags, 0, 0, "out of memory");
        return NULL;
    }
    return c;
}

const config_provider *config_find_provider(const config *c, const char *name)
{
    for (size_t i = 0; i < c->nproviders; i++)
        if (c->providers[i].name && strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

const char **config_provider_names(const config *c)
{
    const char **v = calloc(c->nproviders + 1, sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0, k = 0; i < c->nproviders; i++)
        if (c->providers[i].name)
            v[k++] = c->providers[i].name;
    return v;
}
