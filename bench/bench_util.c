/* bench_util.c -- helpers shared by the benchmarks (see bench_util.h). */
#include "bench/bench_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

void bench_add(bench_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        abort();
    if (t->n + (size_t)len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 65536;
        while (cap < t->n + (size_t)len + 1)
            cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            fprintf(stderr, "bench: out of memory\n");
            exit(1);
        }
        t->s = s;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    t->n += (size_t)len;
}

double bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
}

int bench_flush(int fd, char *buf, size_t *len, int flags)
{
    size_t off = 0;
    int err = 0;
    while (off < *len) {
        ssize_t w = send(fd, buf + off, *len - off, MSG_NOSIGNAL | flags);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            err = w < 0 ? errno : EPIPE;
            break;
        }
        off += (size_t)w;
    }
    memmove(buf, buf + off, *len - off);
    *len -= off;
    return err;
}
