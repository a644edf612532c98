/* server.c -- the listening socket: creating it safely, accepting, turning
 * away connections over the limit, pausing when out of descriptors, and the
 * reaper that closes condemned connections. A connection's own I/O is in
 * server_conn.c.
 *
 * The socket file is where a second daemon, a crashed first one and an
 * unrelated file can collide, so creating it is careful: a regular file is
 * never removed, a socket is removed only when connecting to it is refused
 * (nothing listens), and the new one is bound under a umask that keeps it no
 * more open than asked until the chmod. */
#include "daemon/server/server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/server/server_internal.h"
#include "loom/plugin.h"

/* The line sent to a connection beyond max_connections. */
static const char server_too_many[] =
    "{\"ok\":false,\"error\":{\"code\":\"too_many_connections\","
    "\"message\":\"the server has too many connections; try again later\"}}\n";

void server_log(server_t *s, int level, const char *fmt, ...)
{
    if (!s->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->log(s->log_ud, level, line);
}

static void server_set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void server_set_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int server_fill_addr(struct sockaddr_un *addr, const char *path)
{
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr->sun_path)
        return -ENAMETOOLONG;
    memcpy(addr->sun_path, path, len + 1);
    return 0;
}

/* Makes PATH free for bind: nothing there, or a stale socket (removed).
 * Connecting is the only reliable liveness test; a pid file would not say
 * whether the process holding it still serves. A full backlog (EAGAIN) is a
 * live server too. */
static int server_clear_path(const char *path, const struct sockaddr_un *addr, char *err,
                             size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        server_set_error(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (!S_ISSOCK(st.st_mode)) {
        server_set_error(err, errlen, "%s exists and is not a socket; not touching it", path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int rc = -errno;
        server_set_error(err, errlen, "socket: %s", strerror(-rc));
        return rc;
    }
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 ? 0 : -errno;
    close(fd);
    if (rc == 0 || rc == -EAGAIN || rc == -EINPROGRESS) {
        server_set_error(err, errlen, "another loomd is running on %s", path);
        return -EADDRINUSE;
    }
    if (rc != -ECONNREFUSED) {
        server_set_error(err, errlen, "cannot tell whether %s is in use: %s", path, strerror(-rc));
        return rc;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        rc = -errno;
        server_set_error(err, errlen, "cannot remove the stale socket %s: %s", path,
                         strerror(-rc));
        return rc;
    }
    return 0;
}

static void server_on_listen(reactor_t *r, int fd, int events, void *ud);

static void server_resume_accept(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)t;
    server_t *s = ud;
    s->accept_timer = NULL;
    if (reactor_mod_fd(r, s->listen_fd, REACTOR_READ) < 0)
        server_log(s, LOOM_LOG_ERROR, "server: cannot resume accepting connections");
}

/* Out of descriptors (or kernel memory): the pending connection stays in the
 * backlog and would make the level-triggered listener fire at once, forever.
 * So stop listening for a while; connections closing meanwhile free room. */
static void server_pause_accept(server_t *s, int error)
{
    if (s->accept_timer)
        return;
    s->accept_timer = reactor_timer_add(s->r, s->accept_pause_us, server_resume_accept, s);
    if (!s->accept_timer)
        return; /* better to spin than to stop accepting for good */
    (void)reactor_mod_fd(s->r, s->listen_fd, 0);
    server_log(s, LOOM_LOG_WARN, "server: accept: %s; pausing accepts for %llu ms",
               strerror(error), (unsigned long long)(s->accept_pause_us / REACTOR_MSEC));
}

static void server_reject(server_t *s, int fd)
{
    /* Best effort: a fresh socket's buffer always has room for one line. */
    (void)!send(fd, server_too_many, sizeof server_too_many - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
    s->stats.rejected++;
    /* Logged at 1, 2, 4, 8... so a flood cannot flood the log too. */
    if ((s->stats.rejected & (s->stats.rejected - 1)) == 0)
        server_log(s, LOOM_LOG_WARN,
                   "server: %zu connections open; turned away %llu so far",
                   s->stats.connections, (unsigned long long)s->stats.rejected);
}

/* The line sent to a connection beyond max_per_uid. */
static const char server_too_many_uid[] =
    "{\"ok\":false,\"error\":{\"code\":\"too_many_connections\","
    "\"message\":\"this user has too many connections open; close some or try again later\"}}\n";

/* Whether FD's peer already has max_per_uid connections open. A scan: the
 * list is bounded by max_connections and this runs once per accept. */
static bool server_uid_full(server_t *s, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (!s->max_per_uid || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false; /* server_conn_open reports a failing getsockopt */
    size_t n = 0;
    for (list_link *l = s->conns.next; l != &s->conns; l = l->next) {
        const server_conn_t *c = LIST_OWNER(l, server_conn_t, link);
        if (!c->doomed && c->peer.uid == cred.uid && ++n >= s->max_per_uid) {
            (void)!send(fd, server_too_many_uid, sizeof server_too_many_uid - 1,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            s->stats.rejected_uid++;
            if ((s->stats.rejected_uid & (s->stats.rejected_uid - 1)) == 0)
                server_log(s, LOOM_LOG_WARN,
                           "server: uid %ld has %zu connections open, the most allowed; "
                           "turned away %llu so far",
                           (long)cred.uid, n, (unsigned long long)s->stats.rejected_uid);
            return true;
        }
    }
    return false;
}

static void server_on_listen(reactor_t *r, int fd, int events, void *ud)
{
    (void)r;
    (void)events;
    server_t *s = ud;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            server_pause_accept(s, e);
            return;
        }
        if (s->stats.connections >= s->max_connections) {
            server_reject(s, cfd);
            continue;
        }
        if (server_uid_full(s, cfd))
            continue;
        int rc = server_conn_open(s, cfd);
        if (rc < 0)
            server_log(s, LOOM_LOG_WARN, "server: dropping a new connection: %s",
                       strerror(-rc));
    }
}

/* The reaper: closes every condemned connection, including any that an
 * on_close callback condemns while it runs. */
static void server_reap(reactor_t *r, void *ud)
{
    (void)r;
    server_t *s = ud;
    s->reaping = true;
    while (s->reap_head) {
        server_conn_t *c = s->reap_head;
        s->reap_head = c->reap_next;
        c->reap_next = NULL;
        server_conn_close_now(c);
    }
    s->reaping = false;
}

void server_conn_condemn(server_conn_t *c)
{
    if (c->doomed || c->closed)
        return;
    server_t *s = c->server;
    c->doomed = true;
    if (c->interest != 0 && reactor_mod_fd(s->r, c->fd, 0) == 0)
        c->interest = 0;
    free(c->out);
    c->out = NULL;
    c->out_head = c->out_len = c->out_cap = 0;
    c->reap_next = s->reap_head;
    s->reap_head = c;
    /* An embedded post cannot fail, so a condemned connection is always
     * closed; -EBUSY only means the reaper is already queued. */
    if (!s->reaping && !s->freeing)
        (void)reactor_post_embedded(s->r, &s->reap_post, server_reap, s);
}

static int server_listen(server_t *s, const struct sockaddr_un *addr, char *err, size_t errlen)
{
    int rc;
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0) {
        rc = -errno;
        server_set_error(err, errlen, "socket: %s", strerror(-rc));
        return rc;
    }
    /* Only the owner bits of the mode, at most, until the chmod. */
    mode_t old = umask(0777 & ~(s->mode & 0700));
    rc = bind(s->listen_fd, (const struct sockaddr *)addr, sizeof *addr) == 0 ? 0 : -errno;
    umask(old);
    if (rc < 0) {
        server_set_error(err, errlen, "bind %s: %s", s->path,
                         rc == -EADDRINUSE ? "something else created it meanwhile"
                                           : strerror(-rc));
        return rc;
    }
    s->created = true;
    struct stat st;
    if (chmod(s->path, s->mode) < 0 || lstat(s->path, &st) < 0) {
        rc = -errno;
        server_set_error(err, errlen, "chmod %s: %s", s->path, strerror(-rc));
        return rc;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    if (listen(s->listen_fd, SOMAXCONN) < 0) {
        rc = -errno;
        server_set_error(err, errlen, "listen %s: %s", s->path, strerror(-rc));
        return rc;
    }
    rc = reactor_add_fd(s->r, s->listen_fd, REACTOR_READ, server_on_listen, s);
    if (rc < 0)
        server_set_error(err, errlen, "cannot watch %s: %s", s->path, strerror(-rc));
    return rc;
}

/* Removes the socket file only if it is still the one bound here: a second
 * daemon that replaced it after we were declared stale keeps its own. */
static void server_unlink(server_t *s)
{
    struct stat st;
    if (!s->created || lstat(s->path, &st) < 0)
        return;
    if (S_ISSOCK(st.st_mode) && st.st_dev == s->dev && st.st_ino == s->ino)
        (void)unlink(s->path);
}

static void server_close_listener(server_t *s)
{
    if (s->listen_fd < 0)
        return;
    (void)reactor_del_fd(s->r, s->listen_fd);
    close(s->listen_fd);
    s->listen_fd = -1;
}

server_t *server_new(reactor_t *r, const server_options *opt, server_request_fn handler, void *ud,
                     char *err, size_t errlen)
{
    int rc = -EINVAL;
    server_set_error(err, errlen, "invalid server options");
    if (!r || !opt || !handler || !opt->path || !opt->path[0] || (opt->mode & ~0777u) ||
        opt->max_line > SIZE_MAX / 4) {
        errno = EINVAL;
        return NULL;
    }
    struct sockaddr_un addr;
    if (server_fill_addr(&addr, opt->path) < 0) {
        server_set_error(err, errlen, "socket path too long (at most %zu bytes): %s",
                         sizeof addr.sun_path - 1, opt->path);
        errno = ENAMETOOLONG;
        return NULL;
    }
    server_t *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(opt->path))) {
        rc = -ENOMEM;
        server_set_error(err, errlen, "out of memory");
        goto fail;
    }
    s->r = r;
    list_init(&s->conns);
    s->handler = handler;
    s->ud = ud;
    s->on_close = opt->on_close;
    s->log = opt->log;
    s->log_ud = opt->log_ud;
    s->listen_fd = -1;
    s->mode = opt->mode ? opt->mode : SERVER_DEFAULT_MODE;
    s->max_line = opt->max_line ? opt->max_line : SERVER_DEFAULT_MAX_LINE;
    s->max_output = opt->max_output ? opt->max_output : SERVER_DEFAULT_MAX_OUTPUT;
    s->max_connections =
        opt->max_connections ? opt->max_connections : SERVER_DEFAULT_MAX_CONNECTIONS;
    s->accept_pause_us = opt->accept_pause_us ? opt->accept_pause_us
                                              : SERVER_DEFAULT_ACCEPT_PAUSE_US;
    /* Stop handling a client's requests while this much of its output is
     * unsent, so a pipelining client that reads slowly is slowed down (its
     * writes block) instead of cut off: only streams and single huge replies
     * can reach max_output. */
    s->read_pause = s->max_output / 2 < ((size_t)256 << 10) ? s->max_output / 2
                                                             : (size_t)256 << 10;
    if (s->read_pause == 0)
        s->read_pause = 1;
    s->idle_timeout_us = opt->idle_timeout_us;
    s->max_per_uid = opt->max_per_uid;

    rc = server_clear_path(s->path, &addr, err, errlen);
    if (rc < 0)
        goto fail;
    rc = server_listen(s, &addr, err, errlen);
    if (rc < 0)
        goto fail;
    if (s->idle_timeout_us)
        server_sweep_idle(s); /* nothing to close yet: schedules the first sweep */
    if (err && errlen)
        err[0] = '\0';
    return s;

fail:
    if (s) {
        server_close_listener(s);
        server_unlink(s);
        free(s->path);
        free(s);
    }
    errno = -rc;
    return NULL;
}

void server_free(server_t *s)
{
    if (!s)
        return;
    s->freeing = true;
    (void)reactor_post_cancel(s->r, &s->reap_post);
    if (s->accept_timer)
        reactor_timer_cancel(s->r, s->accept_timer);
    s->accept_timer = NULL;
    if (s->idle_timer)
        reactor_timer_cancel(s->r, s->idle_timer);
    s->idle_timer = NULL;
    server_close_listener(s);
    server_parse_stop(s); /* before the connections: its lines hold references to them */
    /* on_close callbacks may condemn others: they are still on the list. */
    while (!list_empty(&s->conns))
        server_conn_close_now(LIST_OWNER(list_first(&s->conns), server_conn_t, link));
    s->reap_head = NULL;
    server_unlink(s);
    free(s->path);
    free(s);
}

void server_set_limits(server_t *s, size_t max_connections, uint64_t idle_timeout_us,
                       size_t max_per_uid)
{
    s->max_connections = max_connections ? max_connections : SERVER_DEFAULT_MAX_CONNECTIONS;
    s->max_per_uid = max_per_uid;
    if (idle_timeout_us == s->idle_timeout_us)
        return;
    /* the pending sweep was timed for the old timeout */
    if (s->idle_timer)
        reactor_timer_cancel(s->r, s->idle_timer);
    s->idle_timer = NULL;
    s->idle_timeout_us = idle_timeout_us;
    if (idle_timeout_us)
        server_sweep_idle(s);
}

void server_stats(const server_t *s, server_stats_t *out)
{
    *out = s->stats;
}

const char *server_path(const server_t *s)
{
    return s->path;
}
