/* util.c -- the old name of vec_reserve, for callers not yet moved to it. */
#include "dsl/util.h"

#include "common/containers.h"

int dsl_vec_reserve(void *vp, size_t n, size_t *cap, size_t elem, size_t first)
{
    return vec_reserve(vp, n, cap, elem, first);
}
