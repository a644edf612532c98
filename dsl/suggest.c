/* suggest.c -- nearest known name for "did you mean" notes.
 *
 * Optimal string alignment distance with a band cut-off: candidate lists are
 * short (a node's keys, a few dozen filters), so the simple O(n*m) table is
 * fine, but a 10 MB key must not cost 10 MB x candidates, hence the early
 * exits on length difference and on the row minimum. */
#include "dsl/suggest.h"

#include <stdlib.h>
#include <string.h>

#define SUGGEST_MAX_LEN 64

static size_t min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

size_t dsl_edit_distance(const char *a, size_t alen, const char *b, size_t blen, size_t limit)
{
    if ((alen > blen ? alen - blen : blen - alen) > limit)
        return limit + 1;
    if (alen > SUGGEST_MAX_LEN || blen > SUGGEST_MAX_LEN)
        return limit + 1;
    size_t rows[3][SUGGEST_MAX_LEN + 1];
    size_t *pp = rows[0], *p = rows[1], *c = rows[2];
    for (size_t j = 0; j <= blen; j++)
        p[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        c[0] = i;
        size_t rowmin = c[0];
        for (size_t j = 1; j <= blen; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            c[j] = min3(p[j] + 1, c[j - 1] + 1, p[j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < c[j])
                c[j] = pp[j - 2] + 1;
            if (c[j] < rowmin)
                rowmin = c[j];
        }
        if (rowmin > limit)
            return limit + 1;
        size_t *t = pp;
        pp = p;
        p = c;
        c = t;
    }
    return p[blen] > limit ? limit + 1 : p[blen];
}

const char *dsl_suggest(const char *word, size_t len, const char *const *candidates, size_t n)
{
    size_t limit = len >= 9 ? 3 : len >= 5 ? 2 : 1;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; n == (size_t)-1 ? candidates[i] != NULL : i < n; i++) {
        const char *c = candidates[i];
        if (!c)
            continue;
        size_t d = dsl_edit_distance(word, len, c, strlen(c), limit);
        if (d < best_d && d > 0) {
            best = c;
            best_d = d;
        }
    }
    return best;
}
