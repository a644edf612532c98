/* util.h -- the two chores every part of dsl/ (and its tools) needs:
 * growing an array, and reading a whole file with a size limit. */
#ifndef LOOM_DSL_UTIL_H
#define LOOM_DSL_UTIL_H

#include <stddef.h>

/* Makes room for element number N in the array *VP (ELEM bytes each, *CAP
 * allocated), doubling the allocation from FIRST elements. VP is the address
 * of any object pointer (T **). Returns 0, or -1 when out of memory or on
 * overflow (*VP and *CAP are then unchanged). */
int dsl_vec_reserve(void *vp, size_t n, size_t *cap, size_t elem, size_t first);

/* Reads all of PATH into a new buffer with a NUL after the last byte (the
 * caller frees it), storing the length in *LEN. Returns NULL with errno set
 * on failure; EFBIG when the file holds more than MAX bytes. */
char *dsl_read_file(const char *path, size_t max, size_t *len);

#endif
