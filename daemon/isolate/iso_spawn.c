/* iso_spawn.c -- the processes behind isolated plugins: starting a helper
 * (posix_spawn, with a clean signal mask, its own process group, its socket
 * as fd 3 and, under ASan, ASan's limits), killing one, and reaping it by
 * pid only (a pidfd on the reactor, or a 5 ms poll without pidfds), so no
 * other child of loomd is ever reaped here. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/isolate/iso_internal.h"
#include "loom/plugin.h"

extern char **environ;

void iso_describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, len, "ended (status 0x%x)", (unsigned)status);
}

static void try_reap(helper *h)
{
    int status;
    pid_t p;
    do
        p = waitpid(h->pid, &status, WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == h->pid)
        iso_reaped(h, status);
    else if (p < 0) /* not our child any more (reaped elsewhere): count it as killed */
        iso_reaped(h, SIGKILL);
}

static void reap_poll_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    helper *h = ud;
    h->reap_poll = NULL;
    try_reap(h);
    if (h->pid && !h->reap_poll)
        h->reap_poll = reactor_timer_add(r, REAP_POLL_US, reap_poll_fired, h);
}

static void on_pidfd(reactor_t *r, int fd, int events, void *ud)
{
    try_reap(ud);
}

/* The connection is lost or the helper misbehaved: make sure the process
 * ends (it may only have closed its socket) and wait to reap it. */
void iso_helper_kill(helper *h, const char *why)
{
    iso_t *iso = h->iso;
    if (h->state == H_EXITING || !h->pid)
        return;
    if (why && !h->killed_for)
        h->killed_for = why;
    h->state = H_EXITING;
    kill(h->pid, SIGKILL);
    if (h->deadline) {
        reactor_timer_cancel(iso->r, h->deadline);
        h->deadline = NULL;
    }
    if (h->fd >= 0)
        reactor_mod_fd(iso->r, h->fd, 0);
    if (h->pidfd < 0 && !h->reap_poll)
        h->reap_poll = reactor_timer_add(iso->r, 0, reap_poll_fired, h);
}

#if defined(__SANITIZE_ADDRESS__)
#define ISO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ISO_ASAN 1
#endif
#endif

/* The helper's environment: loomd's, and under ASan (where the helper sets no
 * RLIMIT_AS: the shadow memory needs terabytes of address space) ASan's own
 * memory limit instead, with crashes left to the kernel (a helper that
 * segfaults dies of SIGSEGV, as without ASan, rather than exiting 1 after a
 * report) and no leak check at a plugin's exit() (it would change the exit
 * status). A new array of borrowed strings but for *EXTRA. */
static char **helper_env(const iso_plugin *pl, char **extra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    *extra = NULL;
#ifdef ISO_ASAN
    const char *old = getenv("ASAN_OPTIONS");
    char rss[48] = "";
    if (pl->lim.memory_bytes)
        snprintf(rss, sizeof rss, ":hard_rss_limit_mb=%llu",
                 (unsigned long long)(pl->lim.memory_bytes >> 20));
    if (asprintf(extra, "ASAN_OPTIONS=%s%shandle_segv=0:detect_leaks=0%s", old ? old : "",
                 old ? ":" : "", rss) < 0)
        *extra = NULL;
#endif
    for (size_t i = 0; i < n; i++)
        if (!*extra || strncmp(environ[i], "ASAN_OPTIONS=", 13) != 0)
            env[k++] = environ[i];
    if (*extra)
        env[k++] = *extra;
    env[k] = NULL;
    return env;
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

/* Starts H's process. Failing to, H waits out a backoff as after a crash. */
void iso_spawn(helper *h)
{
    iso_t *iso = h->iso;
    iso_plugin *pl = h->pl;
    int sv[2] = { -1, -1 }, err = 0;
    char fdarg[16], mem[32], cpu[32], *extra = NULL, **env = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_ok = false, at_ok = false;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        err = errno;
        goto fail;
    }
    if (sv[1] == HELPER_FD) { /* dup2 onto itself would keep FD_CLOEXEC */
        int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, HELPER_FD + 1);
        if (moved < 0) {
            err = errno;
            goto fail;
        }
        close(sv[1]);
        sv[1] = moved;
    }
    snprintf(fdarg, sizeof fdarg, "%d", HELPER_FD);
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)pl->lim.memory_bytes);
    snprintf(cpu, sizeof cpu, "%llu", (unsigned long long)pl->lim.cpu_seconds);
    char *argv[] = { ISO_HOST_PROGRAM, "--fd", fdarg, "--plugin", pl->name, "--path", pl->path,
                     "--memory", mem, "--cpu", cpu, NULL };
    if ((err = posix_spawn_file_actions_init(&fa)))
        goto fail;
    fa_ok = true;
    if ((err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (err = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) ||
        (err = posix_spawn_file_actions_adddup2(&fa, sv[1], HELPER_FD)))
        goto fail;
    if ((err = posix_spawnattr_init(&at)))
        goto fail;
    at_ok = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* loomd blocks the signals its signalfd reads and ignores SIGPIPE; the
     * helper starts clean, in its own process group so a terminal's ^C
     * reaches loomd alone and loomd decides what happens to helpers */
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    if (!(env = helper_env(pl, &extra))) {
        err = ENOMEM;
        goto fail;
    }
    pid_t pid;
    if ((err = posix_spawn(&pid, iso->host, &fa, &at, argv, env)))
        goto fail;
    close(sv[1]);
    sv[1] = -1;
    h->pid = pid;
    h->fd = sv[0];
    h->state = H_STARTING;
    h->was_ready = false;
    h->started_us = reactor_now_us(iso->r);
    if (h->starts++ > 0)
        pl->st.restarts++;
    fcntl(h->fd, F_SETFL, fcntl(h->fd, F_GETFL) | O_NONBLOCK);
    h->pidfd = pidfd_open_(pid);
    if (reactor_add_fd(iso->r, h->fd, REACTOR_READ, iso_on_fd, h) < 0 ||
        (h->pidfd >= 0 && reactor_add_fd(iso->r, h->pidfd, REACTOR_READ, on_pidfd, h) < 0)) {
        if (h->pidfd >= 0) {
            close(h->pidfd);
            h->pidfd = -1;
        }
        iso_helper_kill(h, NULL);
    } else {
        h->deadline = reactor_timer_add(iso->r, pl->lim.timeout_ms * REACTOR_MSEC, iso_deadline_fired, h);
        iso_send_init(h);
    }
    goto out;
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    snprintf(pl->why, sizeof pl->why, "cannot start %s: %s", iso->host, strerror(err));
    LOG(iso, LOOM_LOG_ERROR, json_pack("{s:s, s:i}", "plugin", pl->name, "helper", h->index),
        "plugin %s helper %d: %s", pl->name, h->index, pl->why);
    pl->start_failed = true;
    if (!iso_any_ready(pl))
        iso_fail_queue(pl);
    h->backoff_ms = h->backoff_ms ? (h->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                        : h->backoff_ms * 2)
                                  : BACKOFF_FIRST_MS;
    h->restart = reactor_timer_add(iso->r, h->backoff_ms * REACTOR_MSEC, iso_restart_fired, h);
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    free(env);
    free(extra);
}
