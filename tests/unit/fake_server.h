/* fake_server.h -- start and stop tests/fake/fake_provider from a test.
 *
 * The server binary is found through $LOOM_BUILDDIR (set by `make check`).
 * It prints its port first, then serves 127.0.0.1 only. Every function
 * returns -1 (and prints why on stderr) rather than asserting, so that the
 * benchmarks can use it too. */
#ifndef LOOM_TESTS_FAKE_SERVER_H
#define LOOM_TESTS_FAKE_SERVER_H

#include <jansson.h>
#include <sys/types.h>

typedef struct fake_server {
    pid_t pid;
    int port;
} fake_server;

/* Starts the server with ARGS (NULL-terminated extra arguments such as
 * "--latency", "50"; may be NULL). 0 or -1. */
int fake_server_start(fake_server *s, const char *const *args);

/* Stops it (SIGTERM, then waits). Safe on a stopped server. */
void fake_server_stop(fake_server *s);

/* GET /stats (or POST /reset when RESET) as a new JSON object, or NULL. */
json_t *fake_server_stats(const fake_server *s, int reset);

/* One counter of /stats, or -1. */
long fake_server_stat(const fake_server *s, const char *name);

/* "http://127.0.0.1:PORT/v1" into BUF. */
const char *fake_server_base_url(const fake_server *s, char *buf, size_t len);

#endif
