/* config_plugins.h -- the `config` key of the config's `plugins` section:
 * each plugin's own configuration (docs/operations.md, docs/plugins.md).
 *
 *   plugins:
 *     dirs: [/usr/lib/loom/plugins]
 *     config:
 *       skeleton: { greeting: "good morning", shout: true }
 *
 * The file alone cannot know a plugin's options: an entry is kept as JSON,
 * with the positions of its name and of each of its keys, and checked
 * against the options the plugin declares when it is loaded (plugins.h,
 * plugins_set_configs), so a misspelt key is reported as
 * FILE:LINE:COL: error: plugins.config.NAME: unknown option ... at the key. */
#ifndef LOOM_DAEMON_CONFIG_PLUGINS_H
#define LOOM_DAEMON_CONFIG_PLUGINS_H

#include <jansson.h>
#include <stddef.h>

#include "daemon/plugins/plugins.h"
#include "dsl/diag.h"

typedef struct config_plugin_key {
    char *key;                   /* owned */
    int line, col;
} config_plugin_key;

typedef struct config_plugin_entry {
    char *plugin;                /* owned: the plugin's name */
    int line, col;               /* of the name */
    config_plugin_key *keys;     /* the entry's own keys (owned array), nkeys */
    size_t nkeys;
} config_plugin_entry;

typedef struct config_plugins {
    json_t *configs;             /* NAME -> configuration (owned object), NULL for none */
    config_plugin_entry *entries;  /* owned array of n */
    size_t n;
} config_plugins;

struct config;
struct dsl_ynode;

/* Parses Y, the value of plugins.config: a mapping of plugin names to
 * mappings of options (or nothing). Adds to OUT, reporting every problem
 * in D at its position. */
void config_plugins_parse(dsl_diags *d, const struct dsl_ynode *y, config_plugins *out);

/* Frees what OUT holds (not OUT itself) and empties it. */
void config_plugins_free(config_plugins *out);

/* A plugins_config_where_fn over a config: UD is the `const config *` whose
 * entries are placed; "FILE:LINE:COL" of PLUGIN's KEY, or of its entry when
 * KEY is NULL or not among its keys, or "FILE" alone when PLUGIN has no
 * entry ("config" for a config read from no file). */
void config_plugins_where(void *ud, const char *plugin, const char *key, char *buf, size_t len);

/* Hands C's plugin configurations (C borrowed: it must outlive the loading)
 * to the registry P before loading, placed by config_plugins_where, and
 * marks the plugins C isolates as run elsewhere unless IN_PROCESS (their
 * helper runs their init). 0, or -1 when out of memory. */
int config_plugins_attach(const struct config *c, plugins_t *p, int in_process);

#endif
