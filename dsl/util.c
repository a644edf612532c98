/* util.c -- growing arrays and reading files, written once. */
#include "dsl/util.h"

#include "common/containers.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dsl_vec_reserve(void *vp, size_t n, size_t *cap, size_t elem, size_t first)
{
    return vec_reserve(vp, n, cap, elem, first);
}

char *dsl_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    for (;;) {
        if (cap - n < 4096) {
            size_t nc = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                err = ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = nc;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (n > max) {
            err = EFBIG;
            goto fail;
        }
        if (k == 0)
            break;
    }
    if (ferror(f)) {
        err = errno ? errno : EIO;
        goto fail;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    errno = err;
    return NULL;
}
