/* plugins.h -- the plugin loader and the registry of lambdas and providers.
 *
 * Owns: the dlopen handles, every loaded plugin's state (from init until
 * fini) and the registry's arrays and names.
 * May call: the plugin ABI (include/loom), the plugins themselves, dsl/ (for
 * duration parsing and "did you mean" suggestions), common/ and libc.
 * Must never call: the engine, upstream, the store, the server, wfdir, jobs
 * or loomd: the engine looks lambdas and providers up here, not the other
 * way round.
 *
 * The registry holds every loaded plugin: the built-ins linked into the
 * program (std, mock) and every `*.so` found in the configured plugin
 * directories. Loading checks the ABI version first (major equal, minor not
 * newer than the host's) and the struct sizes the plugin was built with (no
 * smaller than 2.0's), then names: a plugin or a lambda/provider name
 * already taken is refused with a message naming both files, and loading goes
 * on with the others. Each plugin's init runs once, at load, with its config;
 * its reload (ABI 2.1) on plugins_reload.
 *
 * Normalised descriptors: the loader copies every descriptor of a plugin
 * (loom_plugin, each loom_lambda and loom_provider, their option arrays)
 * into structs of the host's size, walking the plugin's arrays with the
 * plugin's own strides and zero-filling every field newer than the plugin.
 * Every `def` and `plugin` pointer below is such a copy, owned by the
 * registry: the rest of the host indexes them as ordinary C arrays and reads
 * a field newer than a plugin as 0/NULL, and nothing outside this module
 * reads a plugin's memory layout.
 *
 * Logging: plugins_vlog is where every loom_log of every context ends (the
 * engine's calls, provider instances, upstream encode/decode, init and
 * reload): one line "PLUGIN: message" at the plugin's level through the
 * registry's log callback, from any thread, so that callback must be
 * thread-safe (loomd's log sink is: one write(2) per line).
 *
 * Lookups are by "plugin.lambda" for lambdas and by plugin-provider name
 * ("openai", "mock") for providers. Registry contents do not change after
 * loading, so lookups need no lock. */
#ifndef LOOM_DAEMON_PLUGINS_H
#define LOOM_DAEMON_PLUGINS_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/plugin.h"

typedef struct plugins plugins_t;

/* A lambda ready to call: its descriptor and its plugin's state. */
typedef struct plugins_lambda {
    const char *name;              /* "std.trim" (owned by the registry) */
    const loom_lambda *def;        /* the registry's normalised copy */
    void *state;                   /* the plugin's, from its init */
    const loom_plugin *plugin;     /* the registry's normalised copy */
} plugins_lambda;

typedef struct plugins_provider {
    const char *name;              /* "mock" */
    const loom_provider *def;      /* the registry's normalised copy */
    const loom_plugin *plugin;     /* the registry's normalised copy */
    void *plugin_state;            /* the plugin's, from its init: for def->init */
} plugins_provider;

/* A PURE|FAST lambda runs inline on the reactor thread; one that takes
 * longer than this holds every job up, and is logged. */
#define PLUGINS_INLINE_BUDGET_US 1000
/* ...at most once per lambda in this long. */
#define PLUGINS_SLOW_LOG_EVERY_MS 60000

/* Where the loader reports refusals and init failures: one line each,
 * "FILE: message"; plugins' own lines ("PLUGIN: message") come here too,
 * from any thread, except LOOM_LOG_DEBUG ones. UD is passed through. */
typedef void (*plugins_log_fn)(void *ud, const char *line);

/* The same lines with their level: LOOM_LOG_ERROR for a refusal or a failed
 * init (what plugins_errors counts), LOOM_LOG_WARN or LOOM_LOG_INFO for the
 * rest: "loading plugin FILE", said before a shared object's init runs so
 * a crash in it is named. A plugin's own lines (plugins_vlog) come through
 * the same callback at the level the plugin gave, from any thread, and are
 * never counted as errors. */
typedef void (*plugins_level_log_fn)(void *ud, int level, const char *line);

/* A new, empty registry (NULL when out of memory). */
plugins_t *plugins_new(plugins_log_fn log, void *ud);
/* Reports through LOG (with levels) instead of the plugins_new callback;
 * UD replaces that callback's. Before loading anything. */
void plugins_set_level_log(plugins_t *p, plugins_level_log_fn log, void *ud);
/* When ON, each shared object's init first runs in a forked child (for checking a
 * config): one that dies there is refused as "plugin FILE crashed in init
 * (signal N)" instead of ending the caller, and one whose init has not
 * returned after PLUGINS_TRIAL_INIT_TIMEOUT_MS is killed and refused as
 * "init did not return within N s" (a check must end). */
void plugins_set_trial_init(plugins_t *p, bool on);
/* A real init may take its time (loading a model); a trial one that takes
 * longer than this is taken for hung. */
#define PLUGINS_TRIAL_INIT_TIMEOUT_MS 10000
/* How many LOOM_LOG_ERROR lines the loader reported so far. */
size_t plugins_errors(const plugins_t *p);

/* Runs every plugin's fini, unloads the shared objects, frees everything. */
void plugins_free(plugins_t *p);

/* Registers a plugin linked into the program. ORIGIN names it in messages
 * ("built-in"). CONFIG (borrowed, may be NULL: its plugins_set_configs
 * entry, if any) goes to its init, checked like an entry.
 * Returns 0, or -1 when it was refused (reported through the log). */
int plugins_add(plugins_t *p, const loom_plugin *desc, const char *origin, json_t *config);

/* Registers the built-in plugins (std, mock, openai, anthropic). 0, or -1. */
int plugins_add_builtins(plugins_t *p);

/* Loads one shared object. 0, or -1 when refused (reported). */
int plugins_load_file(plugins_t *p, const char *path, json_t *config);

/* Loads every `*.so` in DIR in name order; refusals are reported and skipped.
 * Returns how many were loaded, or -1 when DIR cannot be read. */
int plugins_load_dir(plugins_t *p, const char *dir);

/* Where in the config file PLUGIN's entry (KEY NULL or "") or one of its
 * keys is: "FILE:LINE:COL" into BUF (LEN bytes, always terminated). UD is
 * the caller's. */
typedef void (*plugins_config_where_fn)(void *ud, const char *plugin, const char *key, char *buf,
                                        size_t len);

/* On SIGHUP, on the reactor thread: CONFIGS' member of each plugin's name
 * (CONFIGS borrowed: an object {NAME: config}, or NULL for none) is checked
 * against the plugin's options, then handed to its reload hook (ABI 2.1).
 * An entry that fails the check, or a hook that refuses (-1), is logged as
 * an error naming the plugin, which keeps its old configuration; a plugin
 * without a hook keeps its state, and a change to its entry is logged as a
 * warning that it needs a restart. An entry naming no loaded plugin is an
 * error. plugins_config then answers with what was applied. WHERE and UD
 * (may be NULL) place messages as for plugins_set_configs. Returns how many
 * plugins kept their old configuration because of an error. */
int plugins_reload_at(plugins_t *p, json_t *configs, plugins_config_where_fn where, void *ud);
/* plugins_reload_at without positions. */
int plugins_reload(plugins_t *p, json_t *configs);

/* A plugin's log line: "PLUGIN: message" (PLUGIN borrowed; may be NULL)
 * at LEVEL (clamped to LOOM_LOG_ERROR..LOOM_LOG_DEBUG) through the log
 * callback; never counted by plugins_errors. Any thread. P may be NULL
 * (nothing is said). */
void plugins_vlog(const plugins_t *p, const char *plugin, int level, const char *fmt,
                  va_list ap) __attribute__((format(printf, 4, 0)));

/* Says, at LOOM_LOG_WARN and at most once per PLUGINS_SLOW_LOG_EVERY_MS for
 * each lambda, that L (a lookup result of P) took ELAPSED_US inline on the
 * reactor thread, over PLUGINS_INLINE_BUDGET_US. The caller times it. */
void plugins_lambda_overran(const plugins_t *p, const plugins_lambda *l, uint64_t elapsed_us);

/* Lookups: borrowed pointers valid until plugins_free, or NULL. */
const plugins_lambda *plugins_lambda_find(const plugins_t *p, const char *name);
const plugins_provider *plugins_provider_find(const plugins_t *p, const char *name);

/* NULL-terminated arrays of every lambda ("plugin.name") and provider name,
 * for the compiler's registry (dsl_registry) and `loomctl plugins`. Owned by
 * the registry. */
const char *const *plugins_lambda_names(const plugins_t *p);
const char *const *plugins_provider_names(const plugins_t *p);

/* How many plugins are loaded, and the Ith in load order (NULL past the
 * end): its normalised descriptor (borrowed, valid until plugins_free),
 * with *ORIGIN (may be NULL) its file or "built-in" and *BUILTIN (may be
 * NULL) whether it is linked into the program rather than a shared object. */
size_t plugins_count(const plugins_t *p);
const loom_plugin *plugins_nth(const plugins_t *p, size_t i, const char **origin, bool *builtin);

/* (plugins_describe.c) Every loaded plugin as the JSON document of the
 * `plugins` op (docs/protocol.md): {"abi": "2.1", "plugins": [...]}, the
 * plugins by name, their lambdas and providers in declaration order.
 * ISOLATED (may be NULL: none is) says whether the plugin of that name runs
 * in a helper process; UD is passed through. A new reference, or NULL when
 * out of memory. */
typedef bool (*plugins_isolated_fn)(void *ud, const char *plugin);
json_t *plugins_describe(const plugins_t *p, plugins_isolated_fn isolated, void *ud);

/* Checks CONFIG (a JSON object, modified in place; NULL counts as empty and
 * then gets no defaults) against the config map OPTS (NULL-name terminated,
 * may be NULL): every key must be declared (an unknown one is named with a
 * "did you mean" when one is close), every required option present, every
 * value of its declared type. DURATION values given as text ("500ms") are
 * replaced by integer milliseconds, DOUBLE values given as integers by reals,
 * and options with a default that CONFIG lacks are added. Returns 0, or -1
 * with the first problem written to ERR (ERRLEN bytes, always terminated). */
int plugins_check_options(const loom_option *opts, json_t *config, char *err, size_t errlen);
/* The same, also naming in BAD_KEY (KEYLEN bytes, always terminated) the
 * key of CONFIG the problem is about, or "" when it is about the whole
 * configuration (not a mapping, a required option missing). */
int plugins_check_options_at(const loom_option *opts, json_t *config, char *err, size_t errlen,
                             char *bad_key, size_t keylen);

/* ---- per-plugin configuration (the config's `plugins: { config: {...} }`)
 *
 * A plugin's entry is checked against the options it declares
 * (loom_plugin.options, with plugins_check_options) before its init or
 * reload sees it: a plugin that declares options always gets an object,
 * with the defaults added (an empty one when it has no entry); one that
 * declares none gets its entry as it is, or NULL. A plugin whose entry fails
 * the check is refused at load (an error like every refusal) and keeps its
 * old configuration at reload. */

/* Before loading: CONFIGS (an object NAME -> configuration; a reference is
 * taken; NULL for none) gives each plugin loaded from now on its entry
 * (plugins_add and plugins_load_file use it when they are given no config
 * of their own). WHERE (may be NULL) and UD (borrowed, kept until the last
 * plugin is loaded) place messages about an entry: "FILE:LINE:COL: error:
 * plugins.config.NAME: ...". 0, or -1 when out of memory. */
int plugins_set_configs(plugins_t *p, json_t *configs, plugins_config_where_fn where, void *ud);

/* After loading: reports (as errors) every entry of the plugins_set_configs
 * configs that names no plugin that was offered for loading, with a "did
 * you mean" over the loaded plugins' names. Returns how many. */
int plugins_check_unused_configs(plugins_t *p);

/* PLUGIN's checked configuration (borrowed, valid until the next reload or
 * plugins_free), or NULL when it has none or is not loaded. */
json_t *plugins_config(const plugins_t *p, const char *plugin);

/* Before loading: the plugins named in NAMES (NULL-terminated, copied; NULL
 * for none) run somewhere else (their isolation helper): they are
 * registered here (descriptors, lambdas, providers, configuration checked)
 * but their init, reload and fini never run in this process. 0, or -1 when
 * out of memory. */
int plugins_set_init_elsewhere(plugins_t *p, const char *const *names);
/* When ON, every plugin is registered that way: nothing of a plugin's code
 * but its entry runs (checking a config offline: loomctl validate). */
void plugins_set_no_init(plugins_t *p, bool on);

#endif
