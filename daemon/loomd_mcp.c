/* loomd_mcp.c -- from the config's `mcp` section to running MCP servers
 * (daemon/mcp), and the engine's hooks (engine_mcp_ops) that list and call
 * their tools for a call's `tools: [{mcp: SERVER}]`. The section is read at
 * start: a reload (SIGHUP) keeps the servers running as they are. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/loomd.h"
#include "daemon/mcp/mcp.h"

static void mcp_log(void *ud, int level, json_t *data, const char *fmt, ...)
{
    loomd *d = ud;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(&d->log, level, data, "%s", line);
}

static json_t *ops_tools(void *ud, const char *server, char *err, size_t errlen)
{
    loomd *d = ud;
    return mcp_tools(d->mcp, server, err, errlen);
}

static void *ops_call(void *ud, const char *server, const char *tool, json_t *args,
                      uint64_t timeout_ms, engine_mcp_done_fn done, void *done_ud, char *err,
                      size_t errlen)
{
    loomd *d = ud;
    return mcp_call(d->mcp, server, tool, args, timeout_ms, done, done_ud, err, errlen);
}

static void ops_cancel(void *ud, void *h)
{
    mcp_cancel(h);
}

static const engine_mcp_ops ops = { .tools = ops_tools, .call = ops_call, .cancel = ops_cancel };

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* E's headers and its headers_env read from the environment, as one
 * NULL-terminated array of "Name: value" (new strings), into *OUT. 0, or
 * -1 with every variable that is not set logged. */
static int resolve_headers(loomd *d, const config_mcp_server *e, char ***out)
{
    size_t n = 0, k = 0;
    int rc = 0;
    for (size_t i = 0; e->headers && e->headers[i]; i++)
        n++;
    for (size_t i = 0; e->headers_env && e->headers_env[i]; i++)
        n++;
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; e->headers && e->headers[i]; i++)
        if (!(v[k++] = strdup(e->headers[i])))
            rc = -1;
    for (size_t i = 0; rc == 0 && e->headers_env && e->headers_env[i]; i++) {
        const char *h = e->headers_env[i], *sep = strstr(h, ": ");
        const char *val = sep ? getenv(sep + 2) : NULL;
        if (!val) {
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "mcp", e->name),
                      "%s:%d:%d: error: MCP server '%s': headers_env: the environment variable "
                      "%s is not set", d->cfg->file ? d->cfg->file : "config", e->line, e->col,
                      e->name, sep ? sep + 2 : h);
            rc = -1;
            continue;
        }
        if (asprintf(&v[k], "%.*s: %s", (int)(sep - h), h, val) < 0) {
            v[k] = NULL;
            rc = -1;
        }
        k++;
    }
    if (rc < 0) {
        strv_free(v);
        return -1;
    }
    *out = v;
    return 0;
}

int loomd_mcp_start(loomd *d, bool check)
{
    const config_mcp *c = &d->cfg->mcp;
    int rc = 0;
    if (c->n == 0)
        return 0;
    if (!check && !(d->mcp = mcp_new(d->r, mcp_log, d, PACKAGE_VERSION))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "mcp: out of memory");
        return -1;
    }
    for (size_t i = 0; i < c->n; i++) {
        const config_mcp_server *e = &c->v[i];
        char **headers = NULL;
        if (resolve_headers(d, e, &headers) < 0) {
            rc = -1;
            continue;
        }
        mcp_server_opts o = { .name = e->name, .argv = (const char *const *)e->command,
                              .env = (const char *const *)e->env, .url = e->url,
                              .headers = (const char *const *)headers, .timeout_ms = e->timeout_ms };
        int r = check ? 0 : mcp_add_server(d->mcp, &o);
        strv_free(headers);
        if (r < 0) {
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "mcp", e->name),
                      "cannot start MCP server %s: %s", e->name, strerror(-r));
            rc = -1;
        }
    }
    return rc;
}

void loomd_mcp_attach(loomd *d, engine_t *e)
{
    if (d->mcp)
        engine_set_mcp(e, &ops, d);
}

json_t *loomd_mcp_stats(loomd *d)
{
    return mcp_stats_json(d->mcp);
}

void loomd_mcp_stop(loomd *d)
{
    mcp_free(d->mcp);
    d->mcp = NULL;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_strv(char **a, char **b)
{
    size_t i = 0;
    for (; a && b && a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return !(a && a[i]) && !(b && b[i]);
}

bool loomd_mcp_same(const config_mcp *a, const config_mcp *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const config_mcp_server *x = &a->v[i], *y = &b->v[i];
        if (!same_str(x->name, y->name) || !same_strv(x->command, y->command) ||
            !same_strv(x->env, y->env) || !same_str(x->url, y->url) ||
            !same_strv(x->headers, y->headers) || !same_strv(x->headers_env, y->headers_env) ||
            x->timeout_ms != y->timeout_ms)
            return false;
    }
    return true;
}
