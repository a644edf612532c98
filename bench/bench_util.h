/* bench_util.h -- what every benchmark needs: a growing text buffer for
 * generating workflows, a monotonic clock, and sorting of samples. */
#ifndef LOOM_BENCH_UTIL_H
#define LOOM_BENCH_UTIL_H

#include <stddef.h>

typedef struct bench_text {
    char *s;              /* NUL-terminated; the caller frees it */
    size_t n, cap;
} bench_text;

/* Appends printf-style text to T; exits the benchmark when out of memory. */
void bench_add(bench_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic time in microseconds. */
double bench_now_us(void);

/* Sorts N samples in place, ascending (for min, median, max). */
void bench_sort(double *v, size_t n);

/* Sends as much of BUF's *LEN pending bytes to socket FD as it takes now
 * (FLAGS added to MSG_NOSIGNAL) and keeps the rest at the front of BUF.
 * 0, or the errno of a failed send (the peer is gone). */
int bench_flush(int fd, char *buf, size_t *len, int flags);

#endif
