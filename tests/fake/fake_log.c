/* fake_log.c -- see fake_log.h. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/fake/fake_log.h"

/* A long echo says nothing more than its first bytes do. */
#define ECHO_MAX 200

int fake_log_open(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int64_t fake_log_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* S[0..N) as a JSON string, bytes past ASCII shown as '?': JSON wants UTF-8,
 * and a cut echo (or a hostile header) may not be. */
static json_t *ascii_string(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)s[i] < 0x80 && s[i] ? s[i] : '?';
    copy[n] = '\0';
    json_t *j = json_stringn(copy, n);
    free(copy);
    return j;
}

int fake_log_write(int fd, const fake_log_entry *e)
{
    if (fd < 0)
        return 0;
    int rc = -1;
    char *line = NULL;
    json_t *j = json_pack("{s:I, s:I, s:i, s:b, s:s}", "answered_us", (json_int_t)e->answered_us,
                          "received_us", (json_int_t)e->received_us, "status", e->status,
                          "delivered", e->delivered, "path", e->path ? e->path : "");
    if (!j)
        goto out;
    if (e->key && json_object_set_new(j, "key", ascii_string(e->key, e->key_len)) < 0)
        goto out;
    if (e->echo) {
        size_t n = strlen(e->echo);
        if (json_object_set_new(j, "echo", ascii_string(e->echo, n < ECHO_MAX ? n : ECHO_MAX)) < 0)
            goto out;
    }
    /* a 200 cut short (malformed_json, stall_body) looks like a success by
     * its status alone */
    if (e->fault && json_object_set_new(j, "fault", json_string(e->fault)) < 0)
        goto out;
    if (e->tool_calls > 0 && json_object_set_new(j, "tool_calls", json_integer(e->tool_calls)) < 0)
        goto out;
    if (e->structured && json_object_set_new(j, "structured", json_true()) < 0)
        goto out;
    line = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!line)
        goto out;
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the NUL: the write below is by length */
    ssize_t w;
    do
        w = write(fd, line, n + 1);
    while (w < 0 && errno == EINTR);
    rc = w == (ssize_t)(n + 1) ? 0 : -1;
out:
    free(line);
    json_decref(j);
    return rc;
}
