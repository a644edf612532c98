/* suggest.h -- "did you mean ...?" for near misses of known names. */
#ifndef LOOM_DSL_SUGGEST_H
#define LOOM_DSL_SUGGEST_H

#include <stddef.h>

/* Edit distance (insert, delete, substitute, swap of neighbours) between A and
 * B, giving up early and returning LIMIT + 1 once it must exceed LIMIT. */
size_t dsl_edit_distance(const char *a, size_t alen, const char *b, size_t blen, size_t limit);

/* The candidate closest to WORD (LEN bytes) that is near enough to be a
 * plausible typo (distance at most 1 for short words, 2 from 5 characters on,
 * 3 from 9), or NULL. CANDIDATES is NULL-terminated when N is (size_t)-1.
 * Returns a borrowed pointer into CANDIDATES. */
const char *dsl_suggest(const char *word, size_t len, const char *const *candidates, size_t n);

#endif
