/* fake_log.h -- the fake provider's request log (--log FILE).
 *
 * One JSON object per line for every API request the server answers, so a
 * test can tell which step paid for which request and when:
 *   {"answered_us":N, "received_us":N, "status":200, "delivered":true,
 *    "path":"/v1/chat/completions", "key":"...", "echo":"...", "fault":"...",
 *    "tool_calls":2, "structured":true}
 * Times are CLOCK_MONOTONIC in microseconds, the clock every process on the
 * machine shares, so they compare with times a test takes itself. Each line
 * is one write(2) on an O_APPEND file: a reader sees whole lines, in the
 * order they were answered, as soon as they are answered. */
#ifndef LOOM_TESTS_FAKE_LOG_H
#define LOOM_TESTS_FAKE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one answered request was. Strings are borrowed; KEY (the
 * Loom-Step-Key header, KEY_LEN bytes, may be NULL) need not end in NUL. */
typedef struct fake_log_entry {
    int64_t received_us, answered_us;
    int status;                /* HTTP status; 0 when the connection was dropped */
    bool delivered;            /* false: the client had closed before the answer */
    const char *path;
    const char *key;
    size_t key_len;
    const char *echo;          /* the chat answer (an echo of the prompt), or NULL */
    const char *fault;         /* the --fault mode this answer carries, or NULL */
    int tool_calls;            /* tool calls in the answer (logged when above 0) */
    bool structured;           /* the answer is a structured output (logged when true) */
} fake_log_entry;

/* Opens PATH for appending. The descriptor, or -1 with errno. */
int fake_log_open(const char *path);

/* Appends E to FD (-1: no log, a no-op). 0, or -1 when the line could not
 * be built or written (the server goes on: a log is not worth an answer). */
int fake_log_write(int fd, const fake_log_entry *e);

/* CLOCK_MONOTONIC in microseconds. */
int64_t fake_log_now_us(void);

#endif
