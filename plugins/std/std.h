/* std.h -- private declarations shared by the files of the std plugin.
 *
 * The std plugin is Loom's built-in toolbox of small deterministic lambdas
 * (JSON shaping, text, POSIX regexes). Only plugin.h is public; everything
 * here is internal to plugins/std/. Non-static names carry the std_ prefix so
 * they cannot collide with the host when the plugin is linked in. */
#ifndef LOOM_PLUGIN_STD_H
#define LOOM_PLUGIN_STD_H

#include <stddef.h>

#include "loom/plugin.h"

/* The plugin state created by init: the compiled-regex cache. Opaque outside
 * regex.c. Lambdas must also work with a NULL state (a host that skipped
 * init); they then compile per call. */
typedef struct std_state std_state;

#ifdef LOOM_BUILTIN_PLUGIN
/* The descriptor's entry when linked into the host (see LOOM_PLUGIN_DEFINE). */
const loom_plugin *loom_builtin_std_entry(void);
#endif

int std_init(loom_ctx *ctx, json_t *config, void **state);
void std_fini(void *state);

/* ---- argument helpers (std.c) ----
 * ARGS may be NULL or JSON null (no args given); any other non-object is an
 * error. Each getter returns 0 when the value was found or defaulted, -1
 * after loom_error. NAME is the lambda's full name for messages. */
int std_args_check(loom_ctx *ctx, const char *name, json_t *args);
/* The member KEY of ARGS, borrowed, or NULL when absent (or args empty). */
json_t *std_arg(json_t *args, const char *key);
int std_arg_string(loom_ctx *ctx, const char *name, json_t *args, const char *key,
                   const char *dflt, const char **out, size_t *len);
int std_arg_bool(loom_ctx *ctx, const char *name, json_t *args, const char *key,
                 int dflt, int *out);
/* "a string", "an array", ... for messages. */
const char *std_type_name(const json_t *v);
/* Reports that INPUT is not of the WANT type ("a string"). Returns NULL so a
 * lambda can `return std_bad_input(...)`. */
json_t *std_bad_input(loom_ctx *ctx, const char *name, const char *want, const json_t *input);
/* Reports allocation failure (jansson or malloc). Returns NULL. */
json_t *std_nomem(loom_ctx *ctx, const char *name);

/* ---- json.c ---- */
json_t *std_json_parse(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_json_stringify(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_json_pick(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_json_merge(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_const(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_length(loom_ctx *ctx, void *state, json_t *input, json_t *args);
/* Follows a dotted path ("a.b.0") through objects and arrays. *OUT is the
 * borrowed value, or NULL when some step is missing. -1 when out of memory. */
int std_json_path(json_t *root, const char *path, json_t **out);

/* ---- text.c ---- */
json_t *std_text_template(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_trim(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_split(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_join(loom_ctx *ctx, void *state, json_t *input, json_t *args);

/* ---- regex.c ---- */
json_t *std_regex_match(loom_ctx *ctx, void *state, json_t *input, json_t *args);
json_t *std_regex_extract(loom_ctx *ctx, void *state, json_t *input, json_t *args);
/* For tests and diagnostics: compilations done and cache hits so far. */
void std_regex_stats(void *state, unsigned long *compiles, unsigned long *hits);

#endif
