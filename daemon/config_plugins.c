/* config_plugins.c -- plugins.config in the config file: every plugin's own
 * configuration, as JSON for the plugin plus the positions messages need.
 *
 * Nothing here knows a plugin's options: the loader checks each entry
 * against what the plugin declares, and reports through
 * config_plugins_where, so its messages point into this file like every
 * other error of it. */
#include "daemon/config_plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "dsl/dsl.h"

void config_plugins_free(config_plugins *out)
{
    for (size_t i = 0; i < out->n; i++) {
        for (size_t k = 0; k < out->entries[i].nkeys; k++)
            free(out->entries[i].keys[k].key);
        free(out->entries[i].keys);
        free(out->entries[i].plugin);
    }
    free(out->entries);
    json_decref(out->configs);
    memset(out, 0, sizeof *out);
}

/* Records the positions of NAME's entry (KEY) and its keys (of Y, a
 * mapping or NULL) in E. 0, or -1 when out of memory (E then holds what was
 * made, for config_plugins_free). */
static int record(config_plugin_entry *e, const dsl_ynode *key, const dsl_ynode *y)
{
    e->line = key->line;
    e->col = key->col;
    if (!(e->plugin = strdup(key->u.scalar.str)))
        return -1;
    if (!y || !y->u.map.n)
        return 0;
    if (!(e->keys = calloc(y->u.map.n, sizeof *e->keys)))
        return -1;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key;
        if (!(e->keys[i].key = strdup(k->u.scalar.str)))
            return -1;
        e->keys[i].line = k->line;
        e->keys[i].col = k->col;
        e->nkeys++;
    }
    return 0;
}

void config_plugins_parse(dsl_diags *d, const dsl_ynode *y, config_plugins *out)
{
    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_NULL)
        return; /* `config:` with nothing */
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "config", "a mapping of plugin names to their options");
        return;
    }
    if (!out->configs && !(out->configs = json_object()))
        goto nomem;
    config_plugin_entry *v = realloc(out->entries, (out->n + y->u.map.n) * sizeof *v);
    if (!v && y->u.map.n)
        goto nomem;
    out->entries = v;
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *key = y->u.map.pairs[i].key, *val = y->u.map.pairs[i].value;
        if (key->kind != DSL_Y_SCALAR || !key->u.scalar.len) {
            dsl_type_error(d, key, "config", "plugin names");
            continue;
        }
        if (val->kind == DSL_Y_SCALAR && dsl_yscalar_type(val) == DSL_YT_NULL)
            val = NULL; /* `NAME:` with nothing: no options given */
        if (val && val->kind != DSL_Y_MAP) {
            dsl_type_error(d, val, key->u.scalar.str, "a mapping of the plugin's options");
            continue;
        }
        config_plugin_entry *e = &out->entries[out->n++];
        memset(e, 0, sizeof *e);
        json_t *conf = val ? config_yaml_json(val) : json_object();
        if (record(e, key, val) < 0 || !conf ||
            json_object_set_new(out->configs, key->u.scalar.str, conf) < 0)
            goto nomem;
    }
    return;
nomem:
    dsl_error(d, y->line, y->col, "out of memory");
}

void config_plugins_where(void *ud, const char *plugin, const char *key, char *buf, size_t len)
{
    const config *c = ud;
    const char *file = c && c->file ? c->file : "config";
    const config_plugins *cp = c ? &c->plugin_configs : NULL;

    for (size_t i = 0; cp && i < cp->n; i++) {
        const config_plugin_entry *e = &cp->entries[i];
        if (strcmp(e->plugin, plugin) != 0)
            continue;
        for (size_t k = 0; key && k < e->nkeys; k++)
            if (strcmp(e->keys[k].key, key) == 0) {
                snprintf(buf, len, "%s:%d:%d", file, e->keys[k].line, e->keys[k].col);
                return;
            }
        snprintf(buf, len, "%s:%d:%d", file, e->line, e->col);
        return;
    }
    snprintf(buf, len, "%s", file);
}

int config_plugins_attach(const config *c, plugins_t *p, int in_process)
{
    const char **names = calloc(c->nisolate + 1, sizeof *names);
    int rc = -1;

    if (!names)
        return -1;
    for (size_t i = 0; !in_process && i < c->nisolate; i++)
        names[i] = c->isolate[i].plugin;
    /* the config is not changed: the loader only reads it and takes a
     * reference */
    if (plugins_set_configs(p, c->plugin_configs.configs, config_plugins_where, (void *)c) == 0 &&
        plugins_set_init_elsewhere(p, names) == 0)
        rc = 0;
    free(names);
    return rc;
}
