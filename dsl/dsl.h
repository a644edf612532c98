/* dsl.h -- the workflow compiler's public interface.
 *
 * Owns: the language. Turning a workflow's text (a buffer the caller read)
 * into a checked, immutable, reference-counted dsl_graph; the diagnostics
 * of that text (dsl_diags, formatted as FILE:LINE:COL lines); templates and
 * their filters, which the engine evaluates through template.h; the `use`
 * check across files; a graph as JSON or DOT text.
 * May call: libc, libyaml, jansson, and common/containers.h (header-only).
 * Must never call: the daemon or the client (dsl/ knows nothing of them),
 * common/file.h or any other I/O -- no file, socket, stream or terminal;
 * reading files and printing diagnostics or emitted text are the callers'
 * business -- and no threads, locks, clocks or signals. A compiled graph is
 * immutable, so any number of threads may read it; everything else here is
 * used by one thread at a time.
 *
 * The pipeline, one stage a file (as jq splits lexer/parser/compile):
 *   yaml_tree.c   YAML text -> positioned tree (libyaml events; limits);
 *                 yaml_doc.c its memory, yaml_scalar.c scalar types
 *   template.c    "{{ ... }}" strings -> expression ASTs; template_eval.c
 *                 evaluates them, filters*.c are the filters by family
 *   compile*.c    tree -> checked, immutable dsl_graph (keys, types, references)
 *   uses.c        across files: `use` targets exist and form no cycle
 *   registry.c    deep copies of a registry, for a compile on another thread
 *   emit_*.c      a graph as JSON or Graphviz DOT text */
#ifndef LOOM_DSL_DSL_H
#define LOOM_DSL_DSL_H

#include <stdbool.h>
#include <stdio.h>

#include "dsl/diag.h"
#include "dsl/graph.h"
#include "dsl/yaml_tree.h"

/* The type a lambda declares for an argument, as the compiler checks a
 * literal given for it: STRING a string, INT an integer, DOUBLE an integer
 * or a real, BOOL a boolean, DURATION a duration text ("500ms") or integer
 * milliseconds, JSON anything. */
typedef enum dsl_arg_type {
    DSL_ARG_STRING,
    DSL_ARG_INT,
    DSL_ARG_DOUBLE,
    DSL_ARG_BOOL,
    DSL_ARG_DURATION,
    DSL_ARG_JSON
} dsl_arg_type;

/* One declared argument of a lambda. REQUIRED: the step must give it (an
 * argument with a default is not required here, whatever the plugin says). */
typedef struct dsl_arg {
    const char *name;
    dsl_arg_type type;
    bool required;
} dsl_arg;

/* What a lambda accepts as `args`. ARGS is NULL-name terminated: an empty
 * array means the lambda takes no arguments, while ARGS NULL means it
 * declares none and accepts anything. */
typedef struct dsl_lambda_sig {
    const char *name;               /* "plugin.name" */
    const dsl_arg *args;
} dsl_lambda_sig;

/* The names that exist where the workflow will run. When a list is given
 * (non-NULL), names missing from it are errors; a NULL list is not checked.
 * Lists are NULL-terminated arrays of borrowed strings.
 * LAMBDA_SIGS (NULL-name terminated, borrowed, may be NULL) gives the
 * declared arguments of the lambdas it names: a step calling one of them
 * has its `args` checked (unknown keys, literal types, required ones); a
 * lambda missing from it, or every lambda when it is NULL, is not checked.
 * It is independent of LAMBDAS, so arguments of known lambdas can be
 * checked while lambda names are not. */
typedef struct dsl_registry {
    const char *const *providers;
    const char *const *lambdas;     /* "plugin.name" */
    const char *const *workflows;   /* names `use` may refer to, beyond the files compiled together */
    const dsl_lambda_sig *lambda_sigs;
} dsl_registry;

/* A deep copy of REG in one allocation (free with free()): every list, every
 * signature and every string, so it can be read on another thread while the
 * original goes away. NULL when REG is NULL or out of memory. */
dsl_registry *dsl_registry_dup(const dsl_registry *reg);

/* A deep copy of SIGS (NULL-name terminated) in one allocation (free with
 * free()), or NULL when SIGS is NULL or out of memory. */
dsl_lambda_sig *dsl_lambda_sigs_dup(const dsl_lambda_sig *sigs);

typedef struct dsl_options {
    const dsl_registry *registry;   /* may be NULL */
    dsl_ylimits limits;             /* zero fields take the defaults */
    size_t max_file_size;           /* 0: DSL_DEFAULT_MAX_FILE bytes */
    /* Reads a file a workflow names (`schema: FILE`), its path already
     * resolved against the workflow file's folder: a new NUL-terminated
     * buffer (the compiler frees it) of *LEN bytes, at most MAX, or NULL
     * with errno set (file_read_all fits). NULL: naming a file is an error,
     * as for text that came without its folder. */
    char *(*read_file)(const char *path, size_t max, size_t *len);
} dsl_options;

#define DSL_DEFAULT_MAX_FILE ((size_t)64 << 20)

/* The longest text dsl_compile accepts with OPT (may be NULL): the limit a
 * caller reading the file should read up to. */
size_t dsl_max_file_size(const dsl_options *opt);

/* Reports, as the compiler words it, that the caller could not read the
 * file: ERRNUM is the errno of the read (EFBIG: over dsl_max_file_size). */
void dsl_error_unreadable(dsl_diags *diags, int errnum, const dsl_options *opt);

/* Compiles the workflow in BUF (LEN bytes; borrowed) named FILE in messages.
 * Every error found is added to DIAGS (sorted by position). Returns a new
 * graph (one reference, caller unrefs) when the file has no errors, else
 * NULL. OPT may be NULL. */
dsl_graph *dsl_compile(const char *file, const char *buf, size_t len,
                       const dsl_options *opt, dsl_diags *diags);

/* Checks `use` across a set of compiled workflows: every `use` names a graph
 * of the set (or a registry workflow), and no chain of uses leads back to its
 * start. GRAPHS[i] may be NULL (a file that failed; its name is then unknown,
 * unless NAMES[i] gives it). Errors go to DIAGS[i] of the graph whose `use`
 * node is at fault. Returns the number of errors added. */
size_t dsl_check_uses(dsl_graph *const *graphs, const char *const *names, size_t n,
                      const dsl_registry *registry, dsl_diags *const *diags);

/* The graph as a JSON document (new reference), for `loomctl graph`. */
json_t *dsl_emit_json(const dsl_graph *g);

/* The graph as Graphviz DOT text: chains left to right, parallel, vote and
 * map as clusters. Returns a new NUL-terminated string (caller frees; *LEN
 * gets its length, LEN may be NULL), or NULL when out of memory. */
char *dsl_emit_dot(const dsl_graph *g, size_t *len);

/* Checks of YAML shared by every file Loom reads (workflows, the daemon's
 * config): each reports at the node at fault, in the compiler's words. */
/* Every key of mapping Y not in ALLOWED (NULL-terminated) is an error,
 * "unknown key 'X' in WHAT", with a "did you mean" when one is near. */
void dsl_check_keys(dsl_diags *d, const dsl_ynode *y, const char *const *allowed, const char *what);
/* "'KEY' must be WANT, got a TYPE" at Y. */
void dsl_type_error(dsl_diags *d, const dsl_ynode *y, const char *key, const char *want);
/* An error whose message ends in "; did you mean 'C'?" when NAME (LEN bytes)
 * is near one of CANDS (NCANDS, or NULL-terminated when (size_t)-1). */
void dsl_error_suggest(dsl_diags *d, int line, int col, const char *name, size_t len,
                       const char *const *cands, size_t ncands, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Parses a duration ("500ms", "30s", "2m", "1h", "1m30s", "1.5s") into
 * milliseconds. Returns 0, or -1 with a reason in WHY (static string). */
int dsl_parse_duration(const char *s, size_t len, uint64_t *ms, const char **why);

/* Whether NAME (a file name, no directory) names a workflow file: *.yaml or
 * *.yml, neither hidden nor an editor's file. The suffix rule leaves out
 * foo.yaml~, foo.yaml.swp, foo.yaml.tmp, #foo.yaml# and vim's 4913; the first
 * character leaves out hidden files, .foo.yaml.swp and emacs's .#foo.yaml. */
bool dsl_is_workflow_file(const char *name);

/* The `name:` that the text BUF (LEN bytes, named FILE) declares, even when
 * it does not compile, so that a broken file can still be named (and a `use`
 * of it not reported as unknown). A new string, or NULL. LIMITS may be NULL. */
char *dsl_declared_name(const char *file, const char *buf, size_t len, const dsl_ylimits *limits);

#endif
