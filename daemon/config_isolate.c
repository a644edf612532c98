/* config_isolate.c -- plugins.isolate in the config file:
 *
 *   plugins:
 *     dirs: [/usr/lib/loom/plugins]
 *     isolate:
 *       scraper: { processes: 2, memory: 512MiB, cpu_seconds: 60, timeout: 30s }
 *       other: {}            # every default
 *
 * or `isolate: [scraper, other]`. Errors are FILE:LINE:COL like the rest of
 * the file; a plugin named here that no directory provides is reported when
 * loomd starts (the config alone cannot know). */
#include "daemon/config_isolate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"

static const char *const entry_keys[] = { "processes", "memory", "cpu_seconds", "timeout", NULL };

/* "512MiB", "2GiB", "1048576" (bytes), or "unlimited" (0). */
static int parse_bytes(const dsl_ynode *y, uint64_t *out)
{
    int64_t i;
    if (y->kind != DSL_Y_SCALAR)
        return -1;
    if (dsl_yscalar_type(y) == DSL_YT_INT && dsl_yscalar_int(y, &i) == 0 && i >= 0) {
        *out = (uint64_t)i;
        return 0;
    }
    const char *s = y->u.scalar.str;
    if (strcmp(s, "unlimited") == 0) {
        *out = 0;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    static const struct { const char *suffix; unsigned shift; } units[] = {
        { "B", 0 }, { "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 }, { "TiB", 40 },
    };
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
        if (strcmp(end, units[k].suffix) == 0) {
            if (v > (UINT64_MAX >> units[k].shift))
                return -1;
            *out = (uint64_t)v << units[k].shift;
            return 0;
        }
    return -1;
}

static void parse_entry(dsl_diags *d, const dsl_ynode *key, const dsl_ynode *y, config_isolate *e)
{
    const dsl_ynode *x;
    int64_t v;
    if (y && y->kind == DSL_Y_SCALAR && y->u.scalar.len == 0)
        y = NULL; /* `name:` with nothing: every default */
    if (!y)
        return;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, key->u.scalar.str, "a mapping of processes, memory, cpu_seconds, timeout");
        return;
    }
    dsl_check_keys(d, y, entry_keys, "isolate entry");
    if ((x = dsl_ymap_get(y, "processes"))) {
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_INT || dsl_yscalar_int(x, &v) < 0)
            dsl_type_error(d, x, "processes", "an integer");
        else if (v < 1 || v > CONFIG_ISOLATE_MAX_PROCESSES)
            dsl_error(d, x->line, x->col, "'processes' must be from 1 to %d, got %lld",
                      CONFIG_ISOLATE_MAX_PROCESSES, (long long)v);
        else
            e->processes = (int)v;
    }
    if ((x = dsl_ymap_get(y, "memory"))) {
        uint64_t b;
        if (parse_bytes(x, &b) < 0)
            dsl_error(d, x->line, x->col,
                      "'memory' must be a size such as 512MiB or 2GiB, bytes, or unlimited");
        else if (b && b < CONFIG_ISOLATE_MIN_MEMORY)
            dsl_error(d, x->line, x->col, "'memory' must be at least 64MiB (a helper maps its "
                                          "libraries), or unlimited");
        else
            e->memory_bytes = b;
    }
    if ((x = dsl_ymap_get(y, "cpu_seconds"))) {
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_INT || dsl_yscalar_int(x, &v) < 0)
            dsl_type_error(d, x, "cpu_seconds", "an integer");
        else if (v < 0 || v > 86400)
            dsl_error(d, x->line, x->col, "'cpu_seconds' must be from 0 (none) to 86400, got %lld",
                      (long long)v);
        else
            e->cpu_seconds = (uint64_t)v;
    }
    if ((x = dsl_ymap_get(y, "timeout"))) {
        uint64_t ms;
        const char *why = NULL;
        if (x->kind != DSL_Y_SCALAR ||
            dsl_parse_duration(x->u.scalar.str, x->u.scalar.len, &ms, &why) < 0)
            dsl_error(d, x->line, x->col, "'timeout' must be a duration such as 30s%s%s",
                      why ? ": " : "", why ? why : "");
        else if (ms < 10 || ms > 24ull * 3600 * 1000)
            dsl_error(d, x->line, x->col, "'timeout' must be from 10ms to 24h");
        else
            e->timeout_ms = ms;
    }
}

static config_isolate *add(dsl_diags *d, const dsl_ynode *key, config_isolate **out, size_t *n)
{
    if (key->kind != DSL_Y_SCALAR || dsl_yscalar_type(key) != DSL_YT_STRING || !key->u.scalar.len) {
        dsl_type_error(d, key, "isolate", "plugin names");
        return NULL;
    }
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*out)[i].plugin, key->u.scalar.str) == 0) {
            dsl_error(d, key->line, key->col, "plugin '%s' is isolated twice", key->u.scalar.str);
            return NULL;
        }
    config_isolate *v = realloc(*out, (*n + 1) * sizeof *v);
    if (!v) {
        dsl_error(d, key->line, key->col, "out of memory");
        return NULL;
    }
    *out = v;
    config_isolate *e = &v[*n];
    memset(e, 0, sizeof *e);
    if (!(e->plugin = strdup(key->u.scalar.str))) {
        dsl_error(d, key->line, key->col, "out of memory");
        return NULL;
    }
    (*n)++;
    e->processes = CONFIG_ISOLATE_PROCESSES;
    e->memory_bytes = CONFIG_ISOLATE_MEMORY;
    e->cpu_seconds = CONFIG_ISOLATE_CPU_SECONDS;
    e->timeout_ms = CONFIG_ISOLATE_TIMEOUT_MS;
    e->line = key->line;
    e->col = key->col;
    return e;
}

void config_isolate_parse(dsl_diags *d, const dsl_ynode *y, config_isolate **out, size_t *n)
{
    if (y->kind == DSL_Y_SEQ) {
        for (size_t i = 0; i < y->u.seq.n; i++)
            add(d, y->u.seq.items[i], out, n);
        return;
    }
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "isolate", "a mapping of plugin names to limits, or a list of names");
        return;
    }
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ypair *p = &y->u.map.pairs[i];
        config_isolate *e = add(d, p->key, out, n);
        if (e)
            parse_entry(d, p->key, p->value, e);
    }
}

void config_isolate_free(config_isolate *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].plugin);
    free(v);
}
