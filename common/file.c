/* file.c -- reading a whole file, written once (see file.h). */
#include "common/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

char *file_read_all(const char *path, size_t max, size_t *len)
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
