/* util.h -- dsl_vec_reserve, the name vec_reserve (common/containers.h) had
 * before it moved there; kept while code outside dsl/ still calls it. */
#ifndef LOOM_DSL_UTIL_H
#define LOOM_DSL_UTIL_H

#include <stddef.h>

/* Makes room for element number N in the array *VP (ELEM bytes each, *CAP
 * allocated), doubling the allocation from FIRST elements. VP is the address
 * of any object pointer (T **). Returns 0, or -1 when out of memory or on
 * overflow (*VP and *CAP are then unchanged). */
int dsl_vec_reserve(void *vp, size_t n, size_t *cap, size_t elem, size_t first);

#endif
