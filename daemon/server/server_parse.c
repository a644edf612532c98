/* server_parse.c -- big request lines are parsed off the reactor thread.
 *
 * Parsing JSON costs about 5 ms per MiB, so one 16 MiB `validate` or
 * `submit` parsed inline would hold every other client and timer for
 * ~100 ms. A line of at least SERVER_PARSE_OFFLOAD bytes is copied and
 * parsed on the server's parse thread instead (started with the first such
 * line); its connection handles nothing else and reads nothing more until the
 * parsed request comes back on the reactor through a handback, so requests
 * are still handled in the order they were sent and the connection's
 * buffers stay bounded. One thread is enough: it only parses, and a
 * connection has at most one line with it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/server/server_internal.h"

/* One line being parsed: owned by the queue, the thread, then the handback. */
typedef struct parse_job {
    list_link link;
    server_conn_t *conn;   /* a reference, dropped at delivery */
    char *line;            /* owned until parsed */
    size_t len;
    json_t *req;           /* the result, or NULL with JE */
    json_error_t je;
} parse_job;

static void parse_job_free(parse_job *j)
{
    free(j->line);
    json_decref(j->req);
    server_conn_unref(j->conn);
    free(j);
}

static void *parse_main(void *arg)
{
    server_t *s = arg;
    pthread_mutex_lock(&s->parse_lock);
    for (;;) {
        while (list_empty(&s->parse_queue) && !s->parse_stop)
            pthread_cond_wait(&s->parse_wake, &s->parse_lock);
        if (s->parse_stop)
            break;
        parse_job *j = LIST_OWNER(list_first(&s->parse_queue), parse_job, link);
        list_del(&j->link);
        pthread_mutex_unlock(&s->parse_lock);
        j->req = json_loadb(j->line, j->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &j->je);
        free(j->line);
        j->line = NULL;
        pthread_mutex_lock(&s->parse_lock);
        reactor_handback_add_locked(&s->parse_done, &j->link);
    }
    pthread_mutex_unlock(&s->parse_lock);
    return NULL;
}

/* Reactor thread: parsed lines come back, in the order they were parsed. */
static void parse_deliver(list_link *batch, void *ud)
{
    (void)ud;
    LIST_EACH_SAFE(it, nx, batch) {
        parse_job *j = LIST_OWNER(it, parse_job, link);
        list_del(it);
        server_conn_t *c = j->conn;
        if (!c->closed && !c->doomed) {
            c->parsing = false;
            server_conn_dispatch(c, j->req, &j->je);
            server_conn_resume(c);
        }
        parse_job_free(j);
    }
}

int server_parse_offload(server_conn_t *c, const char *line, size_t len)
{
    server_t *s = c->server;
    if (!s->parse_started) {
        if (pthread_mutex_init(&s->parse_lock, NULL) != 0)
            return -ENOMEM;
        if (pthread_cond_init(&s->parse_wake, NULL) != 0) {
            pthread_mutex_destroy(&s->parse_lock);
            return -ENOMEM;
        }
        list_init(&s->parse_queue);
        reactor_handback_init(&s->parse_done, s->r, &s->parse_lock, parse_deliver, s);
        s->parse_stop = false;
        int rc = pthread_create(&s->parse_thread, NULL, parse_main, s);
        if (rc != 0) {
            pthread_cond_destroy(&s->parse_wake);
            pthread_mutex_destroy(&s->parse_lock);
            return -rc;
        }
        s->parse_started = true;
    }
    parse_job *j = calloc(1, sizeof *j);
    if (!j || !(j->line = malloc(len))) {
        free(j);
        return -ENOMEM;
    }
    memcpy(j->line, line, len);
    j->len = len;
    j->conn = server_conn_ref(c);
    c->parsing = true;
    pthread_mutex_lock(&s->parse_lock);
    list_add_tail(&s->parse_queue, &j->link);
    pthread_cond_signal(&s->parse_wake);
    pthread_mutex_unlock(&s->parse_lock);
    return 0;
}

void server_parse_stop(server_t *s)
{
    if (!s->parse_started)
        return;
    pthread_mutex_lock(&s->parse_lock);
    s->parse_stop = true;
    pthread_cond_signal(&s->parse_wake);
    pthread_mutex_unlock(&s->parse_lock);
    pthread_join(s->parse_thread, NULL);
    /* nothing runs beside us now: drop what was queued or parsed */
    list_link rest;
    list_init(&rest);
    pthread_mutex_lock(&s->parse_lock);
    reactor_handback_take_locked(&s->parse_done, &rest);
    while (!list_empty(&s->parse_queue)) {
        list_link *l = list_first(&s->parse_queue);
        list_del(l);
        list_add_tail(&rest, l);
    }
    pthread_mutex_unlock(&s->parse_lock);
    LIST_EACH_SAFE(it, nx, &rest) {
        list_del(it);
        parse_job_free(LIST_OWNER(it, parse_job, link));
    }
    pthread_cond_destroy(&s->parse_wake);
    pthread_mutex_destroy(&s->parse_lock);
    s->parse_started = false;
}
