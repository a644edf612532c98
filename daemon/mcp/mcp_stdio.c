/* mcp_stdio.c -- stdio MCP servers: the process (posix_spawnp, its own
 * process group, loomd's environment plus the configured variables), its
 * stdin and stdout carrying one JSON-RPC message per line, its stderr
 * logged line by line, its reaping by pid only (a pidfd, or a poll), and
 * the bounded stop: stdin closed, then SIGTERM, then SIGKILL. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/mcp/mcp_internal.h"

extern char **environ;

#define READ_CHUNK 65536
/* Bytes read from one server in one reactor pass: the others get their turn. */
#define READ_PER_PASS ((size_t)1 << 20)
#define STDERR_LINE_MAX 2000

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, len, "ended (status 0x%x)", (unsigned)status);
}

static void close_fd(mcp_server *s, int *fd)
{
    if (*fd < 0)
        return;
    reactor_del_fd(s->m->r, *fd);
    close(*fd);
    *fd = -1;
}

static void cancel_timer(mcp_server *s, reactor_timer_t **t)
{
    if (*t)
        reactor_timer_cancel(s->m->r, *t);
    *t = NULL;
}

void mcp_stdio_close(mcp_server *s)
{
    close_fd(s, &s->in_fd);
    close_fd(s, &s->out_fd);
    close_fd(s, &s->err_fd);
    close_fd(s, &s->pidfd);
    cancel_timer(s, &s->reap_poll);
    cancel_timer(s, &s->eof_kill);
    sbuf_free(&s->rd);
    sbuf_free(&s->wr);
    sbuf_free(&s->errline);
    s->wr_off = 0;
}

/* ---- stdout: messages */

/* Handles every whole line of s->rd. False when S went away meanwhile. */
static bool take_lines(mcp_server *s)
{
    size_t off = 0;
    for (;;) {
        char *nl = s->rd.p ? memchr(s->rd.p + off, '\n', s->rd.n - off) : NULL;
        if (!nl)
            break;
        size_t len = (size_t)(nl - (s->rd.p + off));
        if (len && s->rd.p[off + len - 1] == '\r')
            len--;
        if (len) {
            json_error_t e;
            json_t *msg = json_loadb(s->rd.p + off, len, 0, &e);
            off = (size_t)(nl - s->rd.p) + 1;
            if (msg) {
                mcp_session_message(s, msg);
                json_decref(msg);
            } else {
                MCP_LOG(s, LOOM_LOG_WARN, json_pack("{s:s, s:s}", "mcp", s->name, "error", e.text),
                        "MCP server %s wrote a line that is not JSON on its stdout: ignored",
                        s->name);
            }
            if (!s->rd.p) /* the server was closed meanwhile */
                return false;
        } else {
            off = (size_t)(nl - s->rd.p) + 1;
        }
    }
    if (off && s->rd.p) {
        memmove(s->rd.p, s->rd.p + off, s->rd.n - off);
        s->rd.n -= off;
        s->rd.p[s->rd.n] = '\0';
    }
    return true;
}

static void eof_kill_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    mcp_server *s = ud;
    s->eof_kill = NULL;
    mcp_stdio_kill(s, "it closed its stdout but did not exit");
}

/* Reads what the server wrote. Returns false at EOF or on an error. */
static bool read_out(mcp_server *s)
{
    size_t got = 0;
    while (s->out_fd >= 0 && got < READ_PER_PASS) {
        if (sbuf_grow(&s->rd, READ_CHUNK) < 0) {
            mcp_stdio_kill(s, "out of memory reading its answers");
            return false;
        }
        ssize_t n = read(s->out_fd, s->rd.p + s->rd.n, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0)
            return false;
        s->rd.n += (size_t)n;
        s->rd.p[s->rd.n] = '\0';
        got += (size_t)n;
        if (!take_lines(s))
            return true;
        if (s->rd.n > MCP_MAX_LINE) {
            mcp_stdio_kill(s, "it wrote a line longer than 10 MiB");
            return true;
        }
    }
    return true;
}

static void on_out(reactor_t *r, int fd, int events, void *ud)
{
    mcp_server *s = ud;
    if (read_out(s) || s->out_fd < 0 || s->exiting)
        return;
    /* its end of the conversation: it should be exiting; if it lingers, it
     * is killed after the grace */
    close_fd(s, &s->out_fd);
    if (!s->eof_kill)
        s->eof_kill = reactor_timer_add(r, MCP_EXIT_GRACE_MS * REACTOR_MSEC, eof_kill_fired, s);
}

/* ---- stderr: the log */

static void log_err_line(mcp_server *s, const char *line, size_t len)
{
    if (len > STDERR_LINE_MAX)
        len = STDERR_LINE_MAX;
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (!len)
        return;
    MCP_LOG(s, LOOM_LOG_INFO, json_pack("{s:s}", "mcp", s->name), "MCP server %s: %.*s", s->name,
            (int)len, line);
    /* the last words of a server that dies say why */
    snprintf(s->why, sizeof s->why, "%.*s", (int)len, line);
}

static void on_err(reactor_t *r, int fd, int events, void *ud)
{
    mcp_server *s = ud;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        if (s->errline.n)
            log_err_line(s, s->errline.p, s->errline.n);
        sbuf_reset(&s->errline);
        close_fd(s, &s->err_fd);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || s->errline.n >= STDERR_LINE_MAX) {
            log_err_line(s, s->errline.p ? s->errline.p : "", s->errline.n);
            sbuf_reset(&s->errline);
            if (buf[i] == '\n')
                continue;
        }
        sbuf_addc(&s->errline, buf[i]);
    }
}

/* ---- stdin */

static void flush_in(mcp_server *s)
{
    while (s->in_fd >= 0 && s->wr_off < s->wr.n) {
        ssize_t n = write(s->in_fd, s->wr.p + s->wr_off, s->wr.n - s->wr_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            reactor_mod_fd(s->m->r, s->in_fd, REACTOR_WRITE);
            return;
        }
        if (n < 0) {
            mcp_stdio_kill(s, "its stdin is closed");
            return;
        }
        s->wr_off += (size_t)n;
    }
    if (s->in_fd >= 0)
        reactor_mod_fd(s->m->r, s->in_fd, 0);
    sbuf_reset(&s->wr);
    s->wr_off = 0;
}

static void on_in(reactor_t *r, int fd, int events, void *ud)
{
    flush_in(ud);
}

int mcp_stdio_send(mcp_server *s, const char *line, size_t len)
{
    if (s->in_fd < 0 || s->exiting)
        return 0; /* on its way out: the reap fails what was in flight */
    if (sbuf_add(&s->wr, line, len) < 0 || sbuf_addc(&s->wr, '\n') < 0) {
        mcp_stdio_kill(s, "out of memory writing to it");
        return -1;
    }
    flush_in(s);
    return 0;
}

/* ---- the process */

static void reaped(mcp_server *s, int status)
{
    /* answers written just before the end still count */
    if (s->out_fd >= 0)
        (void)read_out(s);
    if (!s->killed) {
        char how[100], last[120];
        describe_status(status, how, sizeof how);
        snprintf(last, sizeof last, "%.119s", s->why);
        if (last[0])
            snprintf(s->why, sizeof s->why, "it %.100s (its last words: %.120s)", how, last);
        else
            snprintf(s->why, sizeof s->why, "it %s", how);
    }
    s->pid = 0;
    mcp_stdio_close(s);
    s->exiting = false;
    s->killed = false;
    mcp_session_lost(s, s->why);
}

static void try_reap(mcp_server *s)
{
    int status;
    pid_t p;
    do
        p = waitpid(s->pid, &status, WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == s->pid)
        reaped(s, status);
    else if (p < 0) /* reaped elsewhere: count it as killed */
        reaped(s, SIGKILL);
}

static void reap_poll_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    mcp_server *s = ud;
    s->reap_poll = NULL;
    try_reap(s);
    if (s->pid && !s->reap_poll)
        s->reap_poll = reactor_timer_add(r, MCP_REAP_POLL_US, reap_poll_fired, s);
}

static void on_pidfd(reactor_t *r, int fd, int events, void *ud)
{
    try_reap(ud);
}

void mcp_stdio_kill(mcp_server *s, const char *why)
{
    if (!s->pid || s->exiting)
        return;
    if (why) {
        snprintf(s->why, sizeof s->why, "%s", why);
        s->killed = true;
    }
    s->exiting = true;
    kill(-s->pid, SIGKILL); /* the group: npx and the node it started */
    kill(s->pid, SIGKILL);
    if (s->in_fd >= 0)
        reactor_mod_fd(s->m->r, s->in_fd, 0);
    cancel_timer(s, &s->eof_kill);
    if (s->pidfd < 0 && !s->reap_poll)
        s->reap_poll = reactor_timer_add(s->m->r, 0, reap_poll_fired, s);
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Moves *FD above stderr, so dup2 onto 0..2 never meets itself. 0 or -1. */
static int hoist(int *fd)
{
    if (*fd > 2)
        return 0;
    int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
        return -1;
    close(*fd);
    *fd = moved;
    return 0;
}

/* loomd's environment with S's variables in place of any of the same
 * name: a new array of borrowed strings. */
static char **child_env(const mcp_server *s)
{
    size_t n = 0, k = 0, extra = 0;
    while (environ[n])
        n++;
    while (s->env && s->env[extra])
        extra++;
    char **env = calloc(n + extra + 1, sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < extra && !replaced; j++) {
            size_t nl = strcspn(s->env[j], "=");
            replaced = strncmp(environ[i], s->env[j], nl + 1) == 0;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < extra; j++)
        env[k++] = s->env[j];
    env[k] = NULL;
    return env;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void mcp_stdio_spawn(mcp_server *s)
{
    reactor_t *r = s->m->r;
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, e = 0;
    char **env = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_ok = false, at_ok = false;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        hoist(&in[0]) < 0 || hoist(&out[1]) < 0 || hoist(&err[1]) < 0) {
        e = errno;
        goto fail;
    }
    if ((e = posix_spawn_file_actions_init(&fa)))
        goto fail;
    fa_ok = true;
    if ((e = posix_spawn_file_actions_adddup2(&fa, in[0], 0)) ||
        (e = posix_spawn_file_actions_adddup2(&fa, out[1], 1)) ||
        (e = posix_spawn_file_actions_adddup2(&fa, err[1], 2)))
        goto fail;
    if ((e = posix_spawnattr_init(&at)))
        goto fail;
    at_ok = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* loomd blocks the signals its signal thread reads and ignores SIGPIPE:
     * the server starts clean, in a group of its own that loomd signals as
     * a whole (npx runs the server as its child) */
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    if (!(env = child_env(s))) {
        e = ENOMEM;
        goto fail;
    }
    pid_t pid;
    if ((e = posix_spawnp(&pid, s->argv[0], &fa, &at, s->argv, env)))
        goto fail;
    close(in[0]);
    close(out[1]);
    close(err[1]);
    s->pid = pid;
    s->in_fd = in[1];
    s->out_fd = out[0];
    s->err_fd = err[0];
    s->exiting = s->killed = false;
    s->why[0] = '\0';
    set_nonblock(s->in_fd);
    set_nonblock(s->out_fd);
    set_nonblock(s->err_fd);
    s->pidfd = pidfd_open_(pid);
    if (reactor_add_fd(r, s->in_fd, 0, on_in, s) < 0 ||
        reactor_add_fd(r, s->out_fd, REACTOR_READ, on_out, s) < 0 ||
        reactor_add_fd(r, s->err_fd, REACTOR_READ, on_err, s) < 0 ||
        (s->pidfd >= 0 && reactor_add_fd(r, s->pidfd, REACTOR_READ, on_pidfd, s) < 0)) {
        if (s->pidfd >= 0) {
            close(s->pidfd);
            s->pidfd = -1;
        }
        mcp_stdio_kill(s, "out of memory watching it");
    } else {
        MCP_LOG(s, LOOM_LOG_INFO, json_pack("{s:s, s:s, s:i}", "mcp", s->name, "command",
                                            s->argv[0], "pid", (int)pid),
                "MCP server %s started (%s, pid %d)", s->name, s->argv[0], (int)pid);
        mcp_session_start(s);
    }
    goto out;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    {
        char why[256];
        snprintf(why, sizeof why, "cannot run %s: %s", s->argv[0], strerror(e));
        s->started_us = reactor_now_us(r);
        mcp_session_lost(s, why);
    }
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    free(env);
}

/* ---- the stop */

/* Waits up to MS for every server of M with a process to exit; the ones
 * that did are reaped (pid 0). */
static void wait_exits(mcp_t *m, unsigned ms)
{
    struct timespec tick = { 0, 10 * 1000 * 1000 };
    for (unsigned waited = 0;; waited += 10) {
        bool left = false;
        for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
            mcp_server *s = LIST_OWNER(l, mcp_server, link);
            if (s->http || !s->pid)
                continue;
            int status;
            pid_t p = waitpid(s->pid, &status, WNOHANG);
            if (p == s->pid || (p < 0 && errno != EINTR))
                s->pid = 0;
            else
                left = true;
        }
        if (!left || waited >= ms)
            return;
        nanosleep(&tick, NULL);
    }
}

static void signal_all(mcp_t *m, int sig)
{
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
        mcp_server *s = LIST_OWNER(l, mcp_server, link);
        if (!s->http && s->pid) {
            kill(-s->pid, sig);
            kill(s->pid, sig);
        }
    }
}

void mcp_stdio_stop_all(mcp_t *m)
{
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
        mcp_server *s = LIST_OWNER(l, mcp_server, link);
        if (!s->http)
            close_fd(s, &s->in_fd); /* the spec's way to ask a stdio server to end */
    }
    wait_exits(m, MCP_EXIT_GRACE_MS);
    signal_all(m, SIGTERM);
    wait_exits(m, MCP_EXIT_GRACE_MS);
    signal_all(m, SIGKILL);
    for (list_link *l = m->servers.next; l != &m->servers; l = l->next) {
        mcp_server *s = LIST_OWNER(l, mcp_server, link);
        if (!s->http && s->pid) {
            while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            s->pid = 0;
        }
    }
}
