/* metrics_http.c -- GET /metrics through libmicrohttpd.
 *
 * Why the reactor renders: most of what a scrape shows (jobs, providers'
 * upstreams, the store's and the server's counters, tenants, cost) lives in
 * structures only the reactor thread touches, without locks. The server's
 * thread therefore never reads them: it posts a render request to the
 * reactor (reactor_post_embedded, which cannot fail for memory) and waits
 * for the text on a condition variable, up to METRICS_HTTP_RENDER_WAIT_MS.
 * A snapshot the reactor refreshed on a timer would answer without waiting
 * but would be stale by up to its period, cost work when nobody scrapes,
 * and hide a blocked reactor behind old numbers; waiting shows a blocked
 * reactor as what it is: a scrape that fails (503). When the wait ends
 * unanswered the request withdraws its post (reactor_post_cancel); if the
 * render has already started, it waits for it to finish, which it does
 * promptly, since it is running. metrics_http_stop releases waiting
 * requests first, because the reactor thread is then busy stopping the
 * server and cannot render. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/metrics/metrics_http.h"

struct metrics_http {
    reactor_t *r;
    metrics_render_fn render;
    void *ud;
    struct MHD_Daemon *mhd;
    uint16_t port;
    pthread_mutex_t lock;      /* guards `stopping` and every request's `done` */
    pthread_cond_t cond;       /* a render finished, or stopping */
    bool stopping;
};

/* One scrape waiting for the reactor: on the server thread's stack. */
typedef struct scrape {
    metrics_http_t *h;
    reactor_post_t post;
    sbuf text;                 /* written on the reactor thread */
    int rc;
    bool done;
} scrape;

/* Reactor thread: the text for the scrape waiting in UD. */
static void on_render(reactor_t *r, void *ud)
{
    scrape *s = ud;
    (void)r;
    int rc = s->h->render(s->h->ud, &s->text);
    pthread_mutex_lock(&s->h->lock);
    s->rc = rc;
    s->done = true;
    pthread_cond_broadcast(&s->h->cond);
    pthread_mutex_unlock(&s->h->lock);
}

/* Server thread: the reactor's text into S, or -1 (timed out, stopping). */
static int render_wait(metrics_http_t *h, scrape *s)
{
    if (reactor_post_embedded(h->r, &s->post, on_render, s) < 0)
        return -1;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += METRICS_HTTP_RENDER_WAIT_MS / 1000;
    until.tv_nsec += (long)(METRICS_HTTP_RENDER_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    int w = 0;
    while (!s->done && !h->stopping && w != ETIMEDOUT)
        w = pthread_cond_timedwait(&h->cond, &h->lock, &until);
    if (!s->done) {
        pthread_mutex_unlock(&h->lock);
        if (reactor_post_cancel(h->r, &s->post))
            return -1;
        /* the render is running: it ends soon and must not outlive S */
        pthread_mutex_lock(&h->lock);
        while (!s->done)
            pthread_cond_wait(&h->cond, &h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return s->rc;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    metrics_http_t *h = cls;
    if (strcmp(url, "/metrics") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    scrape s = { .h = h, .text = SBUF_INIT };
    if (render_wait(h, &s) < 0 || s.text.failed) {
        sbuf_free(&s.text);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "loomd did not render its metrics in time\n");
    }
    size_t n;
    char *text = sbuf_steal(&s.text, &n);
    if (!text)
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; "
                                                                 "charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* A listening socket on LISTEN, so that a refused address is reported as the
 * system says it (in use, not available) rather than as libmicrohttpd's
 * NULL. -1 with why in ERR. */
static int listen_on(const char *addr, uint16_t *port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (metrics_http_parse_listen(addr, &ss, &len, err, errlen) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

metrics_http_t *metrics_http_start(reactor_t *r, const char *addr, metrics_render_fn render,
                                   void *ud, char *err, size_t errlen)
{
    metrics_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->r = r;
    h->render = render;
    h->ud = ud;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    int fd = listen_on(addr, &h->port, err, errlen);
    if (fd < 0)
        goto fail;
    /* one thread: scrapes come every few seconds, and each waits for the
     * one reactor anyway */
    h->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC, 0, NULL, NULL,
                              on_request, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->mhd) {
        close(fd);
        snprintf(err, errlen, "cannot start the HTTP server on %s", addr);
        goto fail;
    }
    return h;
fail:
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return NULL;
}

uint16_t metrics_http_port(const metrics_http_t *h)
{
    return h->port;
}

void metrics_http_stop(metrics_http_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stopping = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    /* MHD_OPTION_LISTEN_SOCKET: MHD_stop_daemon closes the socket */
    MHD_stop_daemon(h->mhd);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
