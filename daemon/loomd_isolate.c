/* loomd_isolate.c -- from plugins.isolate in the config to running helpers:
 * finds each isolated plugin's shared object, the loom-plugin-host program,
 * and hands both to daemon/isolate with the plugin's checked configuration
 * (plugins_config), which its helpers' init and, on SIGHUP, reload get. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/isolate/iso.h"
#include "daemon/loomd.h"

static void iso_log(void *ud, int level, json_t *data, const char *fmt, ...)
{
    loomd *d = ud;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(&d->log, level, data, "%s", line);
}

/* The shared object plugin NAME was loaded from, into PATH: the file that
 * holds the code of one of its lambdas. -1 when NAME has no lambda (not
 * loaded, or only providers), -2 when it is built into loomd. */
static int plugin_path(const loomd *d, const char *name, char *path, size_t len)
{
    size_t nl = strlen(name);
    const char *const *names = plugins_lambda_names(d->plugins);
    for (size_t i = 0; names && names[i]; i++) {
        if (strncmp(names[i], name, nl) != 0 || names[i][nl] != '.')
            continue;
        const plugins_lambda *lam = plugins_lambda_find(d->plugins, names[i]);
        Dl_info self, it;
        if (!lam || !dladdr((void *)lam->def->fn, &it) || !it.dli_fname)
            continue;
        if (dladdr((void *)loomd_isolate_start, &self) && self.dli_fbase == it.dli_fbase)
            return -2;
        snprintf(path, len, "%s", it.dli_fname);
        return 0;
    }
    return -1;
}

/* LOOM_PLUGIN_HOST when set (tests, unusual installs), else the program
 * beside loomd's own executable: both are installed in the same directory. */
static int host_path(char *out, size_t len)
{
    const char *env = getenv("LOOM_PLUGIN_HOST");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    if ((size_t)snprintf(out, len, "%s/%s", exe, ISO_HOST_PROGRAM) >= len)
        return -1;
    return 0;
}

int loomd_isolate_start(loomd *d, bool check)
{
    const config *c = d->cfg;
    char path[PATH_MAX], host[PATH_MAX];
    int rc = 0;
    if (c->nisolate == 0)
        return 0;
    for (size_t i = 0; i < c->nisolate; i++) {
        const config_isolate *e = &c->isolate[i];
        int r = plugin_path(d, e->plugin, path, sizeof path);
        if (r == 0)
            continue;
        log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "plugin", e->plugin),
                  "%s:%d:%d: error: plugins.isolate: %s", c->file ? c->file : "config", e->line,
                  e->col,
                  r == -2 ? "a plugin built into loomd cannot be isolated"
                          : "no plugin of that name with lambdas was loaded");
        rc = -1;
    }
    if (rc < 0 || check)
        return rc;
    if (host_path(host, sizeof host) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot find " ISO_HOST_PROGRAM);
        return -1;
    }
    if (access(host, X_OK) < 0) /* not fatal: each start is retried, and fails its calls */
        log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "path", host),
                  "cannot run %s: %s", host, strerror(errno));
    if (!(d->iso = iso_new(d->r, host, iso_log, d))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "isolate: out of memory");
        return -1;
    }
    for (size_t i = 0; i < c->nisolate; i++) {
        const config_isolate *e = &c->isolate[i];
        iso_limits lim = { .processes = e->processes, .memory_bytes = e->memory_bytes,
                           .cpu_seconds = e->cpu_seconds, .timeout_ms = e->timeout_ms };
        (void)plugin_path(d, e->plugin, path, sizeof path);
        int r = iso_add_plugin(d->iso, e->plugin, path, &lim, plugins_config(d->plugins, e->plugin));
        if (r < 0) {
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "plugin", e->plugin),
                      "cannot isolate plugin %s: %s", e->plugin, strerror(-r));
            return -1;
        }
        log_write(&d->log, LOOM_LOG_INFO,
                  json_pack("{s:s, s:s, s:i, s:I, s:I, s:I}", "plugin", e->plugin, "path", path,
                            "processes", e->processes, "memory", (json_int_t)e->memory_bytes,
                            "cpu_seconds", (json_int_t)e->cpu_seconds, "timeout_ms",
                            (json_int_t)e->timeout_ms),
                  "plugin %s is isolated: %d helper%s", e->plugin, e->processes,
                  e->processes == 1 ? "" : "s");
    }
    return 0;
}

void loomd_isolate_reload(loomd *d)
{
    /* the plugins isolated at start: the section is not re-read */
    const char *plugin;
    for (size_t i = 0; d->iso && (plugin = iso_nth_plugin(d->iso, i)); i++) {
        int r = iso_reload(d->iso, plugin, plugins_config(d->plugins, plugin));
        if (r < 0)
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "plugin", plugin),
                      "plugin %s: its helpers keep their configuration: %s", plugin, strerror(-r));
    }
}

void loomd_isolate_stop(loomd *d)
{
    iso_free(d->iso);
    d->iso = NULL;
}
