/* metrics_http.h -- the HTTP endpoint that serves GET /metrics.
 *
 * libmicrohttpd answers on a thread of its own; the text is rendered on the
 * reactor thread (see metrics_http.c for why), so the render callback may
 * read everything the reactor owns without locks.
 *
 * Threads: metrics_http_start and metrics_http_stop on the reactor thread
 * (stop waits for the server's thread, which may be waiting for the
 * reactor: stop releases it first). */
#ifndef LOOM_DAEMON_METRICS_HTTP_H
#define LOOM_DAEMON_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/containers.h"
#include "daemon/core/reactor.h"

typedef struct metrics_http metrics_http_t;

/* Appends the exposition text to OUT, on the reactor thread. 0 or -1. */
typedef int (*metrics_render_fn)(void *ud, sbuf *out);

/* How long a scrape waits for the reactor to render before it is answered
 * 503: a reactor blocked that long is what the scrape should report. */
#define METRICS_HTTP_RENDER_WAIT_MS 5000

/* LISTEN ("HOST:PORT", "[V6]:PORT"; HOST an IPv4 or IPv6 literal or
 * "localhost"; PORT 0-65535) as a socket address. 0, or -1 with why in ERR. */
int metrics_http_parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                              char *err, size_t errlen);

/* Listens on LISTEN and serves GET /metrics with RENDER(UD, ...) run on R's
 * thread (R, RENDER and UD borrowed; they must outlive the endpoint). Other
 * paths are answered 404, other methods 405. NULL with why in ERR. */
metrics_http_t *metrics_http_start(reactor_t *r, const char *listen, metrics_render_fn render,
                                   void *ud, char *err, size_t errlen);
/* The port it listens on (the one the system chose for port 0). */
uint16_t metrics_http_port(const metrics_http_t *h);
/* Stops serving, waits for the server's thread and frees H. NULL is a no-op. */
void metrics_http_stop(metrics_http_t *h);

#endif
