/* loomctl_table.c -- the tables of `loomctl list`, `workflows` and `stats`:
 * columns as wide as their widest cell, printed once every row is in. */
#include "config.h"

#include "client/loomctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

void loomctl_table_row(loomctl_table *t, ...)
{
    /* a row of cells is one element, so the cells grow a row at a time */
    if (vec_reserve(&t->cells, t->nrows, &t->cap, t->ncols * sizeof *t->cells, 16) < 0 ||
        vec_reserve(&t->notes, t->nrows, &t->notes_cap, sizeof *t->notes, 16) < 0) {
        t->oom = true;
        return;
    }
    va_list ap;
    va_start(ap, t);
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        char *copy = strdup(s ? s : "");
        t->oom |= !copy;
        t->cells[t->nrows * t->ncols + i] = copy;
    }
    va_end(ap);
    t->notes[t->nrows++] = NULL;
}

void loomctl_table_note(loomctl_table *t, const char *text)
{
    if (t->nrows && !(t->notes[t->nrows - 1] = strdup(text)))
        t->oom = true;
}

void loomctl_table_print_free(loomctl_table *t)
{
    size_t width[LOOMCTL_TABLE_MAX_COLS] = { 0 };
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            if (s && strlen(s) > width[i])
                width[i] = strlen(s);
        }
    for (size_t r = 0; r < t->nrows && !t->oom; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            bool last = i + 1 == t->ncols;
            if (t->align[i] == 'r')
                printf("%*s", (int)width[i], s);
            else
                printf("%-*s", last ? 0 : (int)width[i], s);
            fputs(last ? "\n" : "  ", stdout);
        }
        if (t->notes[r])
            printf("%s\n", t->notes[r]);
    }
    if (t->oom)
        fprintf(stderr, "loomctl: out of memory\n");
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++)
            free(t->cells[r * t->ncols + i]);
        free(t->notes[r]);
    }
    free(t->cells);
    free(t->notes);
}
