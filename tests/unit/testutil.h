/* testutil.h -- helpers shared by the compiler's tests. */
#ifndef LOOM_TESTS_TESTUTIL_H
#define LOOM_TESTS_TESTUTIL_H

#include <stddef.h>

#include "dsl/dsl.h"

/* The result of compiling one text: the graph (or NULL) and every diagnostic
 * formatted as "LINE:COL: error: message" (no file name). */
typedef struct tu_result {
    dsl_graph *graph;
    char **lines;
    size_t nlines;
    size_t nerrors;
} tu_result;

/* Compiles TEXT (NUL-terminated) as file "t.yaml" with optional options.
 * Never returns NULL; free with tu_result_free. */
tu_result *tu_compile(const char *text, const dsl_options *opt);
tu_result *tu_compile_len(const char *text, size_t len, const dsl_options *opt);
void tu_result_free(tu_result *r);

/* When R compiled, checks its `use` nodes as loomctl and loomd do, against
 * the workflow names in WORKFLOWS (NULL-terminated) and its own name: the
 * errors join R's lines and the graph is dropped when there are any. */
void tu_check_uses(tu_result *r, const char *const *workflows);

/* 1 if some diagnostic line equals WANT exactly. */
int tu_has(const tu_result *r, const char *want);

/* All diagnostic lines joined with "\n" (static buffer, for failure messages). */
const char *tu_dump(const tu_result *r);

/* Reads a whole file; returns a new NUL-terminated buffer (caller frees) or NULL. */
char *tu_read_file(const char *path, size_t *len);

/* $LOOM_SRCDIR (set by `make check`) or ".", joined with REL. Static buffer. */
const char *tu_srcpath(const char *rel);
/* $LOOM_BUILDDIR or ".", joined with REL. Static buffer. */
const char *tu_buildpath(const char *rel);

#endif
