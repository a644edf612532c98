/* server_conn.c -- one client connection: reading and framing requests,
 * buffering replies and writing them as the socket drains.
 *
 * One event callback does everything for a connection: one read per call
 * (so a flooding client gets its turn like the others), then the complete
 * lines, then a write. Replies made from the handler are only queued and go
 * out in one write after the batch; replies made later are written at once.
 *
 * Requests are handled only while the connection's unsent output is under
 * read_pause. Lines past that point stay buffered ("backlog") and nothing
 * more is read, so the client's own writes block: a pipelining client that
 * reads slowly is slowed down, never cut off, and its buffers stay bounded.
 *
 * When the client is gone (a write fails, or it hung up completely), what it
 * already sent is still handled, for the side effects it asked for, but the
 * output is thrown away; the connection closes at end of input. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/server/server_internal.h"
#include "loom/plugin.h"

/* Free room ensured before each read: one read takes at most this much. */
#define CONN_READ_CHUNK ((size_t)64 << 10)
/* Idle buffers larger than this are released, so that one big request or
 * reply does not pin memory on a connection that then sits idle. */
#define CONN_KEEP_BUFFER ((size_t)256 << 10)

static size_t conn_pending(const server_conn_t *c)
{
    return c->out_len - c->out_head;
}

static bool conn_writable(const server_conn_t *c)
{
    return c && !c->doomed && !c->closed && !c->peer_gone;
}

/* Nobody will read: drop the output, keep handling input until its end. */
static void conn_lose_peer(server_conn_t *c)
{
    c->peer_gone = true;
    free(c->out);
    c->out = NULL;
    c->out_head = c->out_len = c->out_cap = 0;
}

/* After a read of 0 bytes: did the client shut down only its write side
 * (it may still read our answers) or close altogether (poll says HUP)? */
static bool conn_peer_hung_up(const server_conn_t *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* Registers the events C needs now, or condemns C once it has nothing left
 * to do: input ended, output flushed, and nobody holds it for a deferred
 * reply (or nobody could read that reply anyway). */
static void conn_settle(server_conn_t *c)
{
    if (c->doomed || c->closed || c->dispatching)
        return;
    server_t *s = c->server;
    size_t pending = conn_pending(c);
    if (c->read_eof && !c->backlog && !c->need_parse && !c->parsing && pending == 0 &&
        (c->peer_gone || c->refs <= 1)) {
        server_conn_condemn(c);
        return;
    }
    int want = 0;
    if (!c->read_eof && !c->backlog && !c->parsing && pending < s->read_pause)
        want |= REACTOR_READ;
    if (pending > 0 || c->backlog)
        want |= REACTOR_WRITE;
    if (want == c->interest)
        return;
    int rc = reactor_mod_fd(s->r, c->fd, want);
    if (rc < 0) {
        server_log(s, LOOM_LOG_ERROR, "server: connection %llu: cannot watch it: %s",
                   (unsigned long long)c->id, strerror(-rc));
        server_conn_condemn(c);
        return;
    }
    c->interest = want;
}

static void conn_read(server_conn_t *c)
{
    server_t *s = c->server;
    /* room for a whole chunk: index in_len + CHUNK - 1 */
    if (vec_reserve(&c->in, c->in_len + CONN_READ_CHUNK - 1, &c->in_cap, 1, CONN_READ_CHUNK) < 0) {
        server_log(s, LOOM_LOG_ERROR, "server: connection %llu: out of memory",
                   (unsigned long long)c->id);
        server_conn_condemn(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            server_conn_condemn(c); /* ECONNRESET and friends */
        return;
    }
    c->need_parse = true;
    if (n == 0) {
        c->read_eof = true;
        if (!c->peer_gone && conn_peer_hung_up(c))
            conn_lose_peer(c);
        return;
    }
    c->in_len += (size_t)n;
    s->stats.bytes_in += (uint64_t)n;
}

static void conn_flush(server_conn_t *c)
{
    while (c->out_head < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_head, c->out_len - c->out_head,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_lose_peer(c); /* EPIPE, ECONNRESET */
            return;
        }
        c->out_head += (size_t)n;
        c->server->stats.bytes_out += (uint64_t)n;
    }
    c->out_head = c->out_len = 0;
    if (c->out_cap > CONN_KEEP_BUFFER) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* Room for EXTRA more output bytes. The sent prefix is reclaimed only when it
 * is at least as big as what is left to send, so a large backlog drained a
 * little at a time is not moved on every append. */
static int conn_reserve(server_conn_t *c, size_t extra)
{
    if (c->out_cap - c->out_len >= extra)
        return 0;
    size_t pending = conn_pending(c);
    if (c->out_head >= pending && c->out_head > 0) {
        memmove(c->out, c->out + c->out_head, pending);
        c->out_head = 0;
        c->out_len = pending;
        if (c->out_cap - c->out_len >= extra)
            return 0;
    }
    if (extra > SIZE_MAX / 2 - c->out_len)
        return -ENOMEM;
    /* EXTRA > 0 here: the check at the top lets nothing smaller through */
    return vec_reserve(&c->out, c->out_len + extra - 1, &c->out_cap, 1, 4096) < 0 ? -ENOMEM : 0;
}

static int conn_dump_cb(const char *buf, size_t size, void *data)
{
    server_conn_t *c = data;
    if (conn_reserve(c, size) < 0)
        return -1;
    memcpy(c->out + c->out_len, buf, size);
    c->out_len += size;
    return 0;
}

/* Appends MSG (borrowed) as one line, then cuts C off if that puts it over
 * max_output, or else writes it now unless the handler loop will. */
static int conn_queue(server_conn_t *c, const json_t *msg)
{
    server_t *s = c->server;
    size_t before = conn_pending(c);
    if (json_dump_callback(msg, conn_dump_cb, c, JSON_COMPACT | JSON_ENCODE_ANY) < 0 ||
        conn_dump_cb("\n", 1, c) < 0) {
        c->out_len = c->out_head + before;
        return -ENOMEM;
    }
    if (conn_pending(c) > s->max_output) {
        s->stats.dropped_slow++;
        server_log(s, LOOM_LOG_WARN,
                   "server: connection %llu (pid %ld) is not reading: %zu bytes unsent, over "
                   "the limit of %zu; cutting it off",
                   (unsigned long long)c->id, (long)c->peer.pid, conn_pending(c),
                   s->max_output);
        server_conn_condemn(c);
        return 0;
    }
    if (!c->dispatching) {
        conn_flush(c);
        conn_settle(c);
    }
    return 0;
}

/* Replaces what is not valid UTF-8 with '?': jansson refuses such strings,
 * and error messages may quote a client's bytes. */
static void conn_utf8_sanitize(char *text)
{
    unsigned char *p = (unsigned char *)text;
    while (*p) {
        size_t n;
        uint32_t cp;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xE0) == 0xC0) {
            n = 2, cp = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            n = 3, cp = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            n = 4, cp = *p & 0x07;
        } else {
            *p++ = '?';
            continue;
        }
        size_t i = 1;
        for (; i < n && (p[i] & 0xC0) == 0x80; i++) /* stops at the NUL */
            cp = (cp << 6) | (p[i] & 0x3F);
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (i < n || cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

static void conn_too_long(server_conn_t *c)
{
    server_reply_error(c, NULL, "line_too_long",
                       "request line longer than %zu bytes; discarded up to its end",
                       c->server->max_line);
}

/* One line, without its "\n": answered here when it is not a request. */
static void conn_line(server_conn_t *c, const char *line, size_t len)
{
    server_t *s = c->server;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    size_t blank = 0;
    while (blank < len && (line[blank] == ' ' || line[blank] == '\t' || line[blank] == '\r'))
        blank++;
    if (blank == len)
        return;
    if (len > s->max_line) {
        conn_too_long(c);
        return;
    }
    if (len >= SERVER_PARSE_OFFLOAD && server_parse_offload(c, line, len) == 0)
        return;
    json_error_t je;
    json_t *req = json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    server_conn_dispatch(c, req, &je);
    json_decref(req);
}

void server_conn_dispatch(server_conn_t *c, json_t *req, const json_error_t *je)
{
    server_t *s = c->server;
    if (!req) {
        server_reply_error(c, NULL, "invalid_json", "invalid JSON at byte %d: %s", je->position,
                           je->text);
        return;
    }
    c->active_us = reactor_now_us(s->r);
    if (!json_is_object(req))
        server_reply_error(c, NULL, "invalid_request", "a request must be a JSON object");
    else if (!json_is_string(json_object_get(req, "op")))
        server_reply_error(c, json_object_get(req, "id"), "invalid_request",
                           "a request needs an \"op\" string");
    else
        s->handler(c, req, s->ud);
}

/* Handles the complete lines in the input buffer, in order, until output
 * reaches read_pause; then drops what was handled from the buffer. */
static void conn_parse(server_conn_t *c)
{
    server_t *s = c->server;
    size_t start = 0, scan = c->in_scan;
    if (c->parsing)
        return; /* the rest waits for the line on the parse thread */
    c->need_parse = false;
    c->backlog = false;
    c->dispatching = true;
    while (!c->doomed && !c->parsing && scan < c->in_len) {
        const char *nl = memchr(c->in + scan, '\n', c->in_len - scan);
        if (!nl) {
            scan = c->in_len;
            break;
        }
        if (!c->discarding && conn_pending(c) >= s->read_pause) {
            c->backlog = true;
            break;
        }
        size_t end = (size_t)(nl - c->in);
        if (c->discarding)
            c->discarding = false; /* the end of an over-long line */
        else
            conn_line(c, c->in + start, end - start);
        start = scan = end + 1;
    }
    size_t rest = c->in_len - start;
    if (!c->doomed && !c->backlog && !c->parsing && rest > 0) {
        size_t limit = s->max_line + (c->in[c->in_len - 1] == '\r');
        if (c->discarding) {
            start = c->in_len;
        } else if (rest > limit) {
            conn_too_long(c);
            c->discarding = true;
            start = c->in_len;
        } else if (c->read_eof) {
            conn_line(c, c->in + start, rest); /* a last line without "\n" */
            start = c->in_len;
        }
    }
    c->dispatching = false;
    if (c->doomed)
        return;
    if (start > 0) {
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
    }
    c->in_scan = scan > start ? scan - start : 0;
    if (c->in_len == 0 && c->in_cap > CONN_KEEP_BUFFER) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void conn_on_event(reactor_t *r, int fd, int events, void *ud)
{
    (void)r;
    (void)fd;
    server_conn_t *c = ud;
    if (c->doomed)
        return;
    if ((events & REACTOR_READ) && !c->read_eof)
        conn_read(c);
    /* Handle, write, and handle more while writing keeps output under the
     * pause mark; each round handles at least one line, so this ends. */
    for (;;) {
        if (c->doomed)
            return;
        if (c->need_parse || (c->backlog && conn_pending(c) < c->server->read_pause))
            conn_parse(c);
        if (c->doomed)
            return;
        conn_flush(c);
        if (!c->backlog || conn_pending(c) >= c->server->read_pause)
            break;
    }
    conn_settle(c);
}

void server_conn_resume(server_conn_t *c)
{
    c->need_parse = true;
    conn_on_event(c->server->r, c->fd, 0, c);
}

/* The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13) into C, as
 * many as there are. None when the kernel cannot say: rules on groups then
 * match the primary group only. */
static void conn_read_groups(server_conn_t *c, int fd)
{
#ifdef SO_PEERGROUPS
    socklen_t len = 32 * sizeof(gid_t);
    for (int tries = 0; tries < 3; tries++) {
        gid_t *g = malloc(len);
        if (!g)
            return;
        socklen_t got = len;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &got) == 0) {
            c->groups = g;
            c->peer.groups = g;
            c->peer.ngroups = got / sizeof(gid_t);
            return;
        }
        free(g);
        if (errno != ERANGE || got <= len)
            return;
        len = got; /* the kernel says how much it needs */
    }
#else
    (void)c;
    (void)fd;
#endif
}

int server_conn_open(server_t *s, int fd)
{
    int rc;
    server_conn_t *c = NULL;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        rc = -errno;
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        rc = -ENOMEM;
        goto fail;
    }
    c->server = s;
    c->fd = fd;
    c->refs = 1;
    c->id = ++s->next_conn_id;
    c->peer = (server_peer){.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
    conn_read_groups(c, fd);
    c->active_us = reactor_now_us(s->r);
    rc = reactor_add_fd(s->r, fd, REACTOR_READ, conn_on_event, c);
    if (rc < 0)
        goto fail;
    c->interest = REACTOR_READ;
    list_add_head(&s->conns, &c->link);
    s->stats.connections++;
    s->stats.accepted++;
    return 0;

fail:
    if (c)
        free(c->groups);
    free(c);
    close(fd);
    return rc;
}

void server_conn_close_now(server_conn_t *c)
{
    if (c->closed)
        return;
    server_t *s = c->server;
    c->closed = true;
    c->doomed = true;
    (void)reactor_del_fd(s->r, c->fd);
    close(c->fd);
    c->fd = -1;
    list_del(&c->link);
    s->stats.connections--;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_head = c->out_len = c->out_cap = 0;
    if (s->on_close)
        s->on_close(c, s->ud);
    c->server = NULL;
    server_conn_unref(c);
}

/* ---- the public side */

server_conn_t *server_conn_ref(server_conn_t *conn)
{
    conn->refs++;
    return conn;
}

void server_conn_unref(server_conn_t *conn)
{
    if (!conn)
        return;
    if (--conn->refs == 0) {
        free(conn->in);
        free(conn->out);
        free(conn->groups);
        free(conn);
        return;
    }
    /* The last deferred reply of a half-closed client may just have gone;
     * and an idle connection's time counts from its last answer. */
    if (conn->refs == 1) {
        if (conn->server)
            conn->active_us = reactor_now_us(conn->server->r);
        conn_settle(conn);
    }
}

bool server_conn_is_open(const server_conn_t *conn)
{
    return conn_writable(conn);
}

void server_conn_close(server_conn_t *conn)
{
    if (conn && !conn->closed)
        server_conn_condemn(conn);
}

const server_peer *server_conn_peer(const server_conn_t *conn)
{
    return &conn->peer;
}

size_t server_conn_unsent(const server_conn_t *conn)
{
    return conn->out_len - conn->out_head;
}

size_t server_conn_holds(const server_conn_t *conn)
{
    return conn->refs > 1 ? (size_t)conn->refs - 1 : 0;
}

static void conn_on_sweep(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    server_t *s = ud;
    s->idle_timer = NULL;
    server_sweep_idle(s);
}

void server_sweep_idle(server_t *s)
{
    uint64_t now = reactor_now_us(s->r);
    list_link *l, *next;
    for (l = s->conns.next; l != &s->conns; l = next) {
        next = l->next;
        server_conn_t *c = LIST_OWNER(l, server_conn_t, link);
        /* waiting for a reply or streaming events is not idle */
        if (c->doomed || c->refs > 1 || c->backlog || conn_pending(c) > 0 ||
            now - c->active_us < s->idle_timeout_us)
            continue;
        s->stats.closed_idle++;
        server_log(s, LOOM_LOG_INFO,
                   "server: connection %llu (pid %ld, uid %ld) idle for %llu s; closing it",
                   (unsigned long long)c->id, (long)c->peer.pid, (long)c->peer.uid,
                   (unsigned long long)((now - c->active_us) / REACTOR_SEC));
        server_conn_condemn(c);
    }
    /* a quarter of the timeout between sweeps: closed within 1.25 times it */
    uint64_t every = s->idle_timeout_us / 4 ? s->idle_timeout_us / 4 : 1;
    s->idle_timer = reactor_timer_add(s->r, every, conn_on_sweep, s);
    if (!s->idle_timer)
        server_log(s, LOOM_LOG_ERROR, "server: out of memory: idle connections stay open");
}

uint64_t server_conn_id(const server_conn_t *conn)
{
    return conn->id;
}

void server_conn_set_data(server_conn_t *conn, void *data)
{
    conn->data = data;
}

void *server_conn_data(const server_conn_t *conn)
{
    return conn->data;
}

int server_reply(server_conn_t *conn, json_t *id, json_t *body)
{
    if (!json_is_object(body)) {
        int rc = body ? -EINVAL : -ENOMEM;
        json_decref(body);
        server_reply_error(conn, id, "internal", "the server could not build its reply");
        return rc;
    }
    if (!conn_writable(conn)) {
        json_decref(body);
        return 0;
    }
    int rc = -ENOMEM;
    json_t *line = json_object();
    if (!line || (id && json_object_set(line, "id", id) < 0))
        goto out;
    if (!json_object_get(body, "ok") && json_object_set_new(line, "ok", json_true()) < 0)
        goto out;
    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach(body, key, key_len, value) {
        if (id && key_len == 2 && memcmp(key, "id", 2) == 0)
            continue; /* the request's id wins */
        if (json_object_setn(line, key, key_len, value) < 0)
            goto out;
    }
    rc = conn_queue(conn, line);
out:
    json_decref(line);
    json_decref(body);
    return rc;
}

int server_reply_error(server_conn_t *conn, json_t *id, const char *code, const char *fmt, ...)
{
    if (!conn_writable(conn))
        return 0;
    char message[1024];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
    } else {
        snprintf(message, sizeof message, "%s", code ? code : "internal");
    }
    conn_utf8_sanitize(message);
    int rc = -ENOMEM;
    json_t *line = json_object();
    if (!line || (id && json_object_set(line, "id", id) < 0) ||
        json_object_set_new(line, "ok", json_false()) < 0)
        goto out;
    json_t *error = json_pack("{s:s,s:s}", "code", code ? code : "internal", "message", message);
    if (!error) {
        rc = -EINVAL; /* CODE is not UTF-8 */
        goto out;
    }
    if (json_object_set_new(line, "error", error) < 0)
        goto out;
    rc = conn_queue(conn, line);
out:
    json_decref(line);
    return rc;
}

int server_send(server_conn_t *conn, json_t *msg)
{
    if (!msg)
        return -EINVAL;
    int rc = conn_writable(conn) ? conn_queue(conn, msg) : 0;
    json_decref(msg);
    return rc;
}
