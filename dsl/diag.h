/* diag.h -- diagnostics of the workflow compiler.
 *
 * Every stage of dsl/ (YAML loading, template parsing, checks) reports what is
 * wrong with a file into one dsl_diags list, so a user sees all of a file's
 * errors in one pass, each as `FILE:LINE:COL: error: message`, with `note:`
 * lines after the error they explain. Lines and columns are 1-based; 0 means
 * "the whole file" and is printed as `FILE: error: ...`. */
#ifndef LOOM_DSL_DIAG_H
#define LOOM_DSL_DIAG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    DSL_SEV_ERROR,
    DSL_SEV_WARNING,
    DSL_SEV_NOTE
} dsl_severity;

typedef struct dsl_diag {
    dsl_severity sev;
    int line, col;
    char *msg; /* owned by the list */
} dsl_diag;

/* Past this many errors a file gets one last "too many errors" line and the
 * rest are dropped, so a hostile file cannot flood memory or a terminal. */
#define DSL_DIAG_MAX_ERRORS 200

typedef struct dsl_diags {
    char *file;       /* owned copy of the file name used in messages */
    dsl_diag *v;
    size_t n, cap;
    size_t nerrors;   /* errors added, including dropped ones */
    int truncated;    /* 1 once DSL_DIAG_MAX_ERRORS was reached */
    int oom;          /* 1 if a diagnostic could not be recorded */
} dsl_diags;

/* Initialises an empty list for FILE (copied). Returns 0, or -1 when out of
 * memory (the list is then still safe to use and to free). */
int dsl_diags_init(dsl_diags *d, const char *file);
void dsl_diags_free(dsl_diags *d);

/* Appends one diagnostic. Notes attach to the error before them; a note after
 * a dropped error is dropped too. Never fails visibly: out of memory sets
 * d->oom, which dsl_diags_text reports. */
void dsl_diag_add(dsl_diags *d, dsl_severity sev, int line, int col,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void dsl_diag_vadd(dsl_diags *d, dsl_severity sev, int line, int col,
                   const char *fmt, va_list ap);

#define dsl_error(d, line, col, ...) dsl_diag_add((d), DSL_SEV_ERROR, (line), (col), __VA_ARGS__)
#define dsl_note(d, line, col, ...)  dsl_diag_add((d), DSL_SEV_NOTE, (line), (col), __VA_ARGS__)

/* Sorts errors (each with its notes) by position, keeping the order of
 * errors at the same position. Stages report in their own order; the user
 * reads top to bottom. */
void dsl_diags_sort(dsl_diags *d);

/* Every diagnostic as text, one line each ending in a newline, then a line
 * saying so when some could not be recorded (d->oom). Returns a new string
 * ("" when there is nothing to say; caller frees, *LEN gets its length, LEN
 * may be NULL), or NULL when out of memory. */
char *dsl_diags_text(const dsl_diags *d, size_t *len);

/* Formats one diagnostic as its line in dsl_diags_text, without the newline.
 * Returns a new string (caller frees) or NULL when out of memory. */
char *dsl_diag_format(const dsl_diags *d, size_t i);

#endif
