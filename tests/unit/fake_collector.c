/* fake_collector.c -- see fake_collector.h. */
#include "tests/unit/fake_collector.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD (64 * 1024)
#define MAX_BODY (64 * 1024 * 1024)
#define MAX_CONNS 256

struct fake_collector {
    int lfd, port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    bool stop;
    json_t *reqs;                  /* [{path, traceparent, body, accepted}] */
    int fail_status, fail_left;
    pthread_t conns[MAX_CONNS];
    int conn_fds[MAX_CONNS];
    size_t nconns;
};

typedef struct conn_arg {
    fake_collector *fc;
    int fd;
} conn_arg;

/* Reads into BUF until it holds a whole head (and returns its length, with
 * the blank line), or -1 on EOF, error or a timeout. *HAVE is what BUF has. */
static ssize_t read_head(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        buf[*have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end)
            return end + 4 - buf;
        if (*have >= cap - 1)
            return -1;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 10000) <= 0)
            return -1;
        ssize_t n = read(fd, buf + *have, cap - 1 - *have);
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

/* The value of header NAME in HEAD (a new string), or NULL. */
static char *header(const char *head, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            return strndup(v, e ? (size_t)(e - v) : strlen(v));
        }
    }
    return NULL;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool reply(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", status, strlen(body));
    return write_all(fd, head, (size_t)n) && write_all(fd, body, strlen(body));
}

/* The answer of a chat request BODY: an echo of nothing much, with usage,
 * in OpenAI's shape. */
static char *chat_answer(json_t *body)
{
    json_t *msgs = json_object_get(body, "messages");
    const char *last = json_string_value(
        json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "content"));
    json_t *a = json_pack("{s:s, s:[{s:i, s:{s:s, s:s}, s:s}], s:{s:i, s:i}}", "id", "fake",
                          "choices", "index", 0, "message", "role", "assistant", "content",
                          last ? last : "", "finish_reason", "stop", "usage", "prompt_tokens",
                          7, "completion_tokens", 3);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

static void *conn_main(void *ud)
{
    conn_arg *ca = ud;
    fake_collector *fc = ca->fc;
    int fd = ca->fd;
    free(ca);
    char *buf = malloc(MAX_HEAD);
    size_t have = 0;
    while (buf) {
        ssize_t hl = read_head(fd, buf, MAX_HEAD, &have);
        if (hl < 0)
            break;
        char path[512] = "";
        sscanf(buf, "%*s %511s", path);
        char *cl = header(buf, "Content-Length");
        char *tp = header(buf, "traceparent");
        size_t len = cl ? strtoul(cl, NULL, 10) : 0;
        free(cl);
        char *body = len <= MAX_BODY ? malloc(len + 1) : NULL;
        if (!body) {
            free(tp);
            break;
        }
        size_t got = have - (size_t)hl < len ? have - (size_t)hl : len;
        memcpy(body, buf + hl, got);
        size_t rest = have - (size_t)hl - got; /* a pipelined next request */
        memmove(buf, buf + hl + got, rest);
        have = rest;
        bool ok = true;
        while (got < len && ok) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            ssize_t n = poll(&p, 1, 10000) > 0 ? read(fd, body + got, len - got) : -1;
            ok = n > 0;
            if (ok)
                got += (size_t)n;
        }
        body[got] = '\0';
        if (!ok) {
            free(body);
            free(tp);
            break;
        }
        json_t *parsed = json_loads(body, 0, NULL);
        free(body);
        bool traces = strstr(path, "/v1/traces") != NULL;
        int status = 200;
        pthread_mutex_lock(&fc->mu);
        if (traces && fc->fail_left > 0) {
            fc->fail_left--;
            status = fc->fail_status;
        }
        json_array_append_new(fc->reqs, json_pack("{s:s, s:s?, s:O?, s:b}", "path", path,
                                                  "traceparent", tp, "body", parsed, "accepted",
                                                  status == 200));
        pthread_mutex_unlock(&fc->mu);
        char *answer = traces ? strdup("{}") : chat_answer(parsed);
        json_decref(parsed);
        free(tp);
        ok = answer && reply(fd, status, answer);
        free(answer);
        if (!ok)
            break;
    }
    free(buf);
    shutdown(fd, SHUT_RDWR); /* closed by fc_stop, so its number is not reused meanwhile */
    return NULL;
}

static void *accept_main(void *ud)
{
    fake_collector *fc = ud;
    for (;;) {
        struct pollfd p = { .fd = fc->lfd, .events = POLLIN };
        int r = poll(&p, 1, 50);
        pthread_mutex_lock(&fc->mu);
        bool stop = fc->stop;
        pthread_mutex_unlock(&fc->mu);
        if (stop)
            break;
        if (r <= 0)
            continue;
        int fd = accept(fc->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_arg *ca = malloc(sizeof *ca);
        pthread_mutex_lock(&fc->mu);
        bool room = ca && fc->nconns < MAX_CONNS;
        if (room) {
            ca->fc = fc;
            ca->fd = fd;
            fc->conn_fds[fc->nconns] = fd;
            if (pthread_create(&fc->conns[fc->nconns], NULL, conn_main, ca) == 0)
                fc->nconns++;
            else
                room = false;
        }
        pthread_mutex_unlock(&fc->mu);
        if (!room) {
            free(ca);
            close(fd);
        }
    }
    return NULL;
}

fake_collector *fc_start(void)
{
    fake_collector *fc = calloc(1, sizeof *fc);
    if (!fc || !(fc->reqs = json_array())) {
        free(fc);
        return NULL;
    }
    pthread_mutex_init(&fc->mu, NULL);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    fc->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fc->lfd < 0 || bind(fc->lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fc->lfd, 64) < 0 || getsockname(fc->lfd, (struct sockaddr *)&a, &al) < 0 ||
        pthread_create(&fc->acceptor, NULL, accept_main, fc) != 0) {
        fprintf(stderr, "fake_collector: %s\n", strerror(errno));
        if (fc->lfd >= 0)
            close(fc->lfd);
        json_decref(fc->reqs);
        free(fc);
        return NULL;
    }
    fc->port = ntohs(a.sin_port);
    return fc;
}

int fc_port(const fake_collector *fc)
{
    return fc->port;
}

void fc_stop(fake_collector *fc)
{
    if (!fc)
        return;
    pthread_mutex_lock(&fc->mu);
    fc->stop = true;
    pthread_mutex_unlock(&fc->mu);
    pthread_join(fc->acceptor, NULL);
    close(fc->lfd);
    /* wakes every connection thread out of its read */
    for (size_t i = 0; i < fc->nconns; i++)
        shutdown(fc->conn_fds[i], SHUT_RDWR);
    for (size_t i = 0; i < fc->nconns; i++) {
        pthread_join(fc->conns[i], NULL);
        close(fc->conn_fds[i]);
    }
    json_decref(fc->reqs);
    pthread_mutex_destroy(&fc->mu);
    free(fc);
}

void fc_fail_traces(fake_collector *fc, int status, int count)
{
    pthread_mutex_lock(&fc->mu);
    fc->fail_status = status;
    fc->fail_left = count;
    pthread_mutex_unlock(&fc->mu);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

json_t *fc_requests(fake_collector *fc, const char *suffix)
{
    json_t *out = json_array();
    pthread_mutex_lock(&fc->mu);
    size_t i;
    json_t *r;
    json_array_foreach(fc->reqs, i, r) {
        if (ends_with(json_string_value(json_object_get(r, "path")), suffix))
            json_array_append(out, r);
    }
    pthread_mutex_unlock(&fc->mu);
    return out;
}

size_t fc_count(fake_collector *fc, const char *suffix)
{
    json_t *v = fc_requests(fc, suffix);
    size_t n = json_array_size(v);
    json_decref(v);
    return n;
}

json_t *fc_spans(fake_collector *fc)
{
    json_t *out = json_array(), *reqs = fc_requests(fc, "/v1/traces");
    size_t i, j, k;
    json_t *r, *rs, *ss;
    json_array_foreach(reqs, i, r) {
        if (!json_is_true(json_object_get(r, "accepted")))
            continue;
        json_array_foreach(json_object_get(json_object_get(r, "body"), "resourceSpans"), j, rs)
            json_array_foreach(json_object_get(rs, "scopeSpans"), k, ss)
                json_array_extend(out, json_object_get(ss, "spans"));
    }
    json_decref(reqs);
    return out;
}
