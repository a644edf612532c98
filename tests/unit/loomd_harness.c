/* loomd_harness.c -- see loomd_harness.h. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static void write_file(const char *path, const char *text)
{
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp~", path);
    FILE *f = fopen(tmp, "w");
    cr_assert(f, "cannot write %s: %s", tmp, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, path), 0);
}

void lh_setup(lh_daemon *d, const char *providers, const char *const *fake_args)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/loomd-test-XXXXXX");
    cr_assert(mkdtemp(d->dir));
    snprintf(d->sock, sizeof d->sock, "%s/loom.sock", d->dir);
    snprintf(d->cfg, sizeof d->cfg, "%s/loomd.yaml", d->dir);
    snprintf(d->wf, sizeof d->wf, "%s/workflows", d->dir);
    snprintf(d->state, sizeof d->state, "%s/state", d->dir);
    cr_assert_eq(mkdir(d->wf, 0755), 0);
    char *prov = strdup(providers ? providers : "");
    char *at = strstr(prov, "@FAKE@");
    if (at) {
        /* "@DIR@" at the start of an argument is the temporary directory,
         * which the caller cannot know before this call */
        const char *args[32] = { NULL };
        char *owned[32] = { NULL };
        for (int i = 0; fake_args && fake_args[i] && i < 31; i++) {
            args[i] = fake_args[i];
            if (strncmp(fake_args[i], "@DIR@", 5) == 0) {
                cr_assert(asprintf(&owned[i], "%s%s", d->dir, fake_args[i] + 5) > 0);
                args[i] = owned[i];
            }
        }
        int rc = fake_server_start(&d->fake, args);
        for (int i = 0; i < 32; i++)
            free(owned[i]);
        cr_assert_eq(rc, 0);
        char url[64], *full = NULL;
        fake_server_base_url(&d->fake, url, sizeof url);
        *at = '\0';
        cr_assert(asprintf(&full, "%s%s%s", prov, url, at + 6) > 0);
        free(prov);
        prov = full;
    }
    char *cfg = NULL;
    cr_assert(asprintf(&cfg,
                       "socket: %s\nworkflows: %s\nstate: %s\nshutdown_grace: 5s\n"
                       "log: { level: debug }\n"
                       "providers:\n"
                       "  default: { plugin: mock, latency: 5ms }\n"
                       "  slow: { plugin: mock, latency: 2s }\n%s",
                       d->sock, d->wf, d->state, prov) > 0);
    write_file(d->cfg, cfg);
    free(cfg);
    free(prov);
}

void lh_workflow(lh_daemon *d, const char *name, const char *text)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s.yaml", d->wf, name);
    write_file(path, text);
}

void lh_start(lh_daemon *d)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char exe[400], log[400];
    snprintf(exe, sizeof exe, "%s/loomd", bd ? bd : ".");
    snprintf(log, sizeof log, "%s/loomd.log", d->dir);
    unlink(d->sock);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(exe, exe, "--foreground", "--config", d->cfg, (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
    for (int i = 0; i < 1000; i++) {
        int fd = lh_connect(d);
        if (fd >= 0) {
            close(fd);
            return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            d->pid = 0;
            cr_assert_fail("loomd exited at start (status %d); see %s", st, log);
        }
        usleep(10000);
    }
    cr_assert_fail("loomd did not listen within 10 s; see %s", log);
}

int lh_stop(lh_daemon *d, int sig)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return -1;
}

void lh_teardown(lh_daemon *d)
{
    if (d->pid > 0)
        lh_stop(d, SIGKILL);
    fake_server_stop(&d->fake);
    char cmd[400];
    if (d->dir[0] && !getenv("LOOM_KEEP_TMP")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
        (void)!system(cmd);
    }
}

int lh_connect(lh_daemon *d)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(d->sock) >= sizeof a.sun_path) {
        close(fd);
        return -1;
    }
    memcpy(a.sun_path, d->sock, strlen(d->sock) + 1);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void lh_send(int fd, const char *line)
{
    size_t n = strlen(line);
    char *buf = malloc(n + 1);
    cr_assert(buf);
    memcpy(buf, line, n);
    buf[n] = '\n';
    for (size_t off = 0; off < n + 1;) {
        ssize_t w = send(fd, buf + off, n + 1 - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(buf);
}

/* Per-fd leftovers between lines would need a table; tests read one reply
 * per request or whole streams, so bytes are read one line at a time with
 * MSG_PEEK to never consume past a newline. */
json_t *lh_recv(int fd, int timeout_ms)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            break;
        if (len + 65536 > cap) {
            cap = (len + 65536) * 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = recv(fd, buf + len, 65536, MSG_PEEK);
        if (r <= 0)
            break;
        char *nl = memchr(buf + len, '\n', (size_t)r);
        size_t take = nl ? (size_t)(nl - (buf + len)) + 1 : (size_t)r;
        r = recv(fd, buf + len, take, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (nl) {
            json_t *j = json_loadb(buf, len, 0, NULL);
            free(buf);
            return j;
        }
    }
    free(buf);
    return NULL;
}

json_t *lh_call(lh_daemon *d, const char *req, int timeout_ms)
{
    int fd = lh_connect(d);
    if (fd < 0)
        return NULL;
    lh_send(fd, req);
    json_t *r = lh_recv(fd, timeout_ms);
    close(fd);
    return r;
}
