/* loomctl_client.c -- the client side of loomd's socket protocol: connect,
 * send one JSON line, read JSON lines back and match the reply by its id.
 *
 * The socket is non-blocking and every wait goes through poll with a
 * deadline, so no command can hang past the time it was given. Lines are read
 * into one buffer that grows as needed (a job's output can make a reply many
 * megabytes long) and is scanned for newlines only past what was already
 * scanned, so a long line costs one pass. Writes use MSG_NOSIGNAL: a daemon
 * that went away is an error message, not a SIGPIPE. */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dsl/suggest.h"

#define READ_CHUNK ((size_t)64 << 10)

struct loomctl_conn {
    int fd;
    char *path;          /* owned */
    json_int_t next_id;  /* the id of the next request */
    char *buf;           /* received bytes: [start, len) not yet consumed */
    size_t start, len, cap;
    size_t scanned;      /* [start, scanned) holds no newline */
    bool eof;
    char err[512];       /* why the last loomctl_read failed */
};

static void set_err(loomctl_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(loomctl_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

int64_t loomctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t loomctl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int loomctl_parse_seconds(const char *text, int64_t *ms)
{
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(s) || s < 0 || s > 1e9)
        return -1;
    *ms = (int64_t)(s * 1000.0 + 0.5);
    return 0;
}

void loomctl_print_json(const json_t *v, bool pretty)
{
    size_t flags = JSON_ENCODE_ANY | JSON_REAL_PRECISION(15);
    json_dumpf(v, stdout, flags | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
    fputc('\n', stdout);
}

const char *loomctl_socket_path(const char *option)
{
    if (option)
        return option;
    const char *env = getenv("LOOM_SOCKET");
    return env && *env ? env : LOOMCTL_DEFAULT_SOCKET;
}

const char *loomctl_conn_error(const loomctl_conn *c)
{
    return c->err;
}

int loomctl_conn_fd(const loomctl_conn *c)
{
    return c->fd;
}

/* Milliseconds left until DEADLINE for poll (-1: none), at least 0. */
static int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - loomctl_now_ms();
    if (left <= 0)
        return 0;
    return left > 1000000000 ? 1000000000 : (int)left;
}

static int64_t deadline_after(int64_t timeout_ms)
{
    return timeout_ms < 0 ? -1 : loomctl_now_ms() + timeout_ms;
}

/* Waits for EVENTS on C's socket until DEADLINE. 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, remaining(deadline));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static void connect_failed(const char *path, int err)
{
    fprintf(stderr, "loomctl: cannot connect to %s: %s%s\n", path, strerror(err),
            err == ENOENT || err == ECONNREFUSED ? " (is loomd running?)"
            : err == EACCES                      ? " (is this user in the socket's group?)"
                                                 : "");
}

loomctl_conn *loomctl_connect(const char *path, int64_t timeout_ms)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path) {
        connect_failed(path, ENAMETOOLONG);
        return NULL;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    loomctl_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        fprintf(stderr, "loomctl: out of memory\n");
        free(c);
        return NULL;
    }
    c->next_id = 1;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        connect_failed(path, errno);
        goto fail;
    }
    /* A Unix socket connects at once or fails, except when the listener's
     * backlog is full: then it says EAGAIN and we try again until the
     * deadline. */
    int64_t deadline = deadline_after(timeout_ms);
    for (;;) {
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            return c;
        if (errno == EINTR)
            continue;
        if (errno == EINPROGRESS) { /* not on Linux, but harmless to handle */
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (wait_fd(c->fd, POLLOUT, deadline) <= 0) {
                connect_failed(path, ETIMEDOUT);
                goto fail;
            }
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
                soerr = errno;
            if (soerr == 0)
                return c;
            connect_failed(path, soerr);
            goto fail;
        }
        int err = errno;
        if (err != EAGAIN || remaining(deadline) == 0) {
            connect_failed(path, err);
            goto fail;
        }
        struct timespec pause = { 0, 10 * 1000000 };
        nanosleep(&pause, NULL);
    }
fail:
    loomctl_close(c);
    return NULL;
}

void loomctl_close(loomctl_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->path);
    free(c->buf);
    free(c);
}

static void closed(loomctl_conn *c)
{
    set_err(c, "loomd closed the connection on %s before answering (did it stop?)", c->path);
}

/* Writes all of TEXT (LEN bytes) before DEADLINE. A LOOMCTL_* status; C->err
 * says why it failed. */
static int send_all(loomctl_conn *c, const char *text, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n >= 0) {
            off += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(c->fd, POLLOUT, deadline);
            if (w > 0)
                continue;
            if (w == 0) {
                set_err(c, "loomd on %s is not reading requests (timed out)", c->path);
                return LOOMCTL_TIMEOUT;
            }
        }
        if (errno == EPIPE || errno == ECONNRESET)
            closed(c);
        else
            set_err(c, "cannot send to loomd on %s: %s", c->path, strerror(errno));
        return LOOMCTL_UNREACHABLE;
    }
    return LOOMCTL_OK;
}

/* The next complete line in C's buffer, NUL-terminated in place (without
 * its "\n" or "\r\n") with its length in *LEN, or NULL when none is there yet. */
static char *take_line(loomctl_conn *c, size_t *len)
{
    char *nl = memchr(c->buf + c->scanned, '\n', c->len - c->scanned);
    if (!nl) {
        c->scanned = c->len;
        return NULL;
    }
    char *line = c->buf + c->start;
    size_t n = (size_t)(nl - line);
    *nl = 0;
    if (n > 0 && line[n - 1] == '\r')
        line[--n] = 0;
    c->start = c->scanned = (size_t)(nl - c->buf) + 1;
    *len = n;
    return line;
}

/* Makes room for at least READ_CHUNK more bytes after C->len, moving unread
 * bytes to the front first. -1 when the line would pass LOOMCTL_MAX_LINE or
 * memory runs out (C->err says which). */
static int make_room(loomctl_conn *c)
{
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->len - c->start);
        c->len -= c->start;
        c->scanned -= c->start;
        c->start = 0;
    }
    if (c->cap - c->len >= READ_CHUNK)
        return 0;
    if (c->len >= LOOMCTL_MAX_LINE) {
        set_err(c, "loomd on %s sent a line longer than %zu MiB", c->path, LOOMCTL_MAX_LINE >> 20);
        return -1;
    }
    size_t cap = c->cap ? c->cap * 2 : READ_CHUNK * 2;
    while (cap - c->len < READ_CHUNK)
        cap *= 2;
    char *b = realloc(c->buf, cap);
    if (!b) {
        set_err(c, "out of memory reading a %zu-byte line", c->len);
        return -1;
    }
    c->buf = b;
    c->cap = cap;
    return 0;
}

int loomctl_read(loomctl_conn *c, int64_t timeout_ms, json_t **msg)
{
    int64_t deadline = deadline_after(timeout_ms);
    *msg = NULL;
    for (;;) {
        size_t len;
        char *line = c->buf ? take_line(c, &len) : NULL;
        if (line) {
            if (len == 0)
                continue;
            json_error_t err;
            json_t *v = json_loadb(line, len, 0, &err);
            if (!v) {
                set_err(c, "loomd on %s sent a line that is not JSON: %s", c->path, err.text);
                return LOOMCTL_UNREACHABLE;
            }
            *msg = v;
            return LOOMCTL_OK;
        }
        if (c->eof) {
            if (c->len > c->start)
                set_err(c, "loomd on %s closed the connection in the middle of a line", c->path);
            else
                closed(c);
            return LOOMCTL_UNREACHABLE;
        }
        if (make_room(c) < 0)
            return LOOMCTL_UNREACHABLE;
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            c->eof = true;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(c->fd, POLLIN, deadline);
            if (w > 0)
                continue;
            if (w == 0) {
                set_err(c, "no answer from loomd on %s in time", c->path);
                return LOOMCTL_TIMEOUT;
            }
        }
        if (errno == ECONNRESET)
            closed(c);
        else
            set_err(c, "cannot read from loomd on %s: %s", c->path, strerror(errno));
        return LOOMCTL_UNREACHABLE;
    }
}

bool loomctl_is_reply(const json_t *msg, json_int_t id)
{
    /* An error reply without an id (too_many_connections, a line loomd could
     * not parse) can only be about the request just sent: one is sent at a
     * time. */
    const json_t *mid = json_object_get(msg, "id");
    if (json_is_integer(mid))
        return json_integer_value(mid) == id;
    return !mid && json_is_false(json_object_get(msg, "ok"));
}

void loomctl_print_error_reply(const json_t *reply)
{
    const json_t *e = json_object_get(reply, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    fprintf(stderr, "loomctl: %s: %s\n", code ? code : "error", msg ? msg : "(no message)");
}

json_int_t loomctl_send(loomctl_conn *c, json_t *request, int64_t timeout_ms, json_t **reply)
{
    json_int_t id = c->next_id++;
    *reply = NULL;
    if (json_object_set_new(request, "id", json_integer(id)) < 0) {
        fprintf(stderr, "loomctl: out of memory\n");
        return -LOOMCTL_UNREACHABLE;
    }
    char *text = json_dumps(request, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!text) {
        fprintf(stderr, "loomctl: out of memory\n");
        return -LOOMCTL_UNREACHABLE;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* the NUL's place: json_dumps allocated len + 1 bytes */
    int rc = send_all(c, text, len + 1, deadline_after(timeout_ms));
    free(text);
    if (rc == LOOMCTL_OK)
        return id;
    if (rc == LOOMCTL_UNREACHABLE) {
        /* loomd may have said why before it hung up (too_many_connections):
         * that answer is worth more than "connection closed" */
        char why[sizeof c->err];
        json_t *msg;
        memcpy(why, c->err, sizeof why);
        while (loomctl_read(c, 0, &msg) == LOOMCTL_OK) {
            if (loomctl_is_reply(msg, id)) {
                loomctl_print_error_reply(msg);
                *reply = msg;
                return -LOOMCTL_REFUSED;
            }
            json_decref(msg);
        }
        memcpy(c->err, why, sizeof why);
    }
    fprintf(stderr, "loomctl: %s\n", c->err);
    return -rc;
}

int loomctl_request(loomctl_conn *c, json_t *request, int64_t timeout_ms, loomctl_message_fn other,
                    void *ud, json_t **reply)
{
    int64_t deadline = deadline_after(timeout_ms);
    json_int_t id = loomctl_send(c, request, timeout_ms, reply);
    if (id < 0)
        return (int)-id;
    for (;;) {
        json_t *msg;
        int rc = loomctl_read(c, deadline < 0 ? -1 : remaining(deadline), &msg);
        if (rc == LOOMCTL_TIMEOUT) {
            fprintf(stderr, "loomctl: no answer from loomd on %s within %.1f s\n", c->path,
                    (double)timeout_ms / 1000.0);
            return rc;
        }
        if (rc != LOOMCTL_OK) {
            fprintf(stderr, "loomctl: %s\n", c->err);
            return rc;
        }
        if (loomctl_is_reply(msg, id)) {
            *reply = msg;
            if (json_is_true(json_object_get(msg, "ok")))
                return LOOMCTL_OK;
            loomctl_print_error_reply(msg);
            return LOOMCTL_REFUSED;
        }
        if (other)
            other(msg, ud);
        json_decref(msg);
    }
}

void loomctl_hint_workflow(loomctl_conn *c, const json_t *req, const json_t *reply)
{
    const json_t *e = json_object_get(reply, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *name = json_string_value(json_object_get(req, "workflow"));
    if (!code || strcmp(code, "unknown_workflow") != 0 || !name ||
        (msg && strstr(msg, "did you mean")))
        return;
    json_t *list = json_pack("{ss}", "op", "workflows"), *ans = NULL;
    json_int_t id = list ? loomctl_send(c, list, LOOMCTL_REPLY_TIMEOUT_MS, &ans) : -1;
    json_decref(ans);
    ans = NULL;
    if (id < 0)
        goto out;
    int64_t deadline = loomctl_now_ms() + LOOMCTL_REPLY_TIMEOUT_MS;
    while (!ans) {
        int64_t left = deadline - loomctl_now_ms();
        json_t *m;
        if (left <= 0 || loomctl_read(c, left, &m) != LOOMCTL_OK)
            goto out;
        if (loomctl_is_reply(m, id))
            ans = m;
        else
            json_decref(m);
    }
    const json_t *ws = json_object_get(ans, "workflows");
    size_t n = json_array_size(ws), k = 0;
    const char **names = calloc(n + 1, sizeof *names);
    if (!names)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const json_t *w = json_array_get(ws, i);
        const char *wn = json_string_value(json_object_get(w, "name"));
        if (wn && json_is_true(json_object_get(w, "served")))
            names[k++] = wn;
    }
    const char *near = dsl_suggest(name, strlen(name), names, k);
    if (near)
        fprintf(stderr, "loomctl: did you mean '%s'?\n", near);
    free(names);
out:
    json_decref(list);
    json_decref(ans);
}
