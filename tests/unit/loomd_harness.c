/* loomd_harness.c -- see loomd_harness.h. */
#include <criterion/criterion.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* Daemons set up and not yet torn down in this test process. */
static int lh_live;

/* A test process that leaves through exit() while a daemon is set up was
 * not ended by Criterion (which reports such a test as failed with no
 * assertion and nothing else): say so, and from where. */
static void lh_exit_trace(void)
{
    if (lh_live <= 0)
        return;
    static const char head[] = "loomd_harness: the test process called exit() in the middle of "
                               "the test, from:\n";
    (void)!write(2, head, sizeof head - 1);
    void *frames[32];
    backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
}

void lh_setup(lh_daemon *d, const char *providers, const char *const *fake_args)
{
    static bool traced;
    if (!traced)
        traced = atexit(lh_exit_trace) == 0;
    lh_live++;
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

void lh_spawn(lh_daemon *d)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char exe[400], log[400];
    snprintf(exe, sizeof exe, "%s/loomd", bd ? bd : ".");
    snprintf(log, sizeof log, "%s/loomd.log", d->dir);
    unlink(d->sock);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 }; /* tests crash loomd on purpose */
        setrlimit(RLIMIT_CORE, &no_core);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(exe, exe, "--foreground", "--config", d->cfg, (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
}

int lh_wait_listening(lh_daemon *d, long bound_ms)
{
    long until = lh_now_ms() + bound_ms;
    for (;;) {
        int fd = lh_connect(d);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            cr_assert(!WIFEXITED(st) || WEXITSTATUS(st) != 127, "cannot run loomd");
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        cr_assert(lh_now_ms() < until, "loomd did not listen within %ld ms; see %s/loomd.log",
                  bound_ms, d->dir);
        poll(NULL, 0, 10); /* the interval of a loop that tests the socket itself */
    }
}

void lh_start(lh_daemon *d)
{
    lh_spawn(d);
    int st = lh_wait_listening(d, 10000);
    cr_assert(st == 0, "loomd exited at start (status %d); see %s/loomd.log", st, d->dir);
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
    lh_live--;
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

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

int lh_log_count(const lh_daemon *d, const char *needle, const char *and_too)
{
    char path[400];
    snprintf(path, sizeof path, "%s/loomd.log", d->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, needle) && (!and_too || strstr(line, and_too));
    free(line);
    fclose(f);
    return n;
}

void lh_wait_log(const lh_daemon *d, const char *needle, const char *and_too, int n,
                 int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int got;
    while ((got = lh_log_count(d, needle, and_too)) < n) {
        cr_assert(ms_since(&t0) < timeout_ms, "%d of %d lines '%s'%s%s%s in %s/loomd.log after %d ms",
                  got, n, needle, and_too ? " with '" : "", and_too ? and_too : "",
                  and_too ? "'" : "", d->dir, timeout_ms);
        poll(NULL, 0, 10); /* the interval of a loop that tests the log itself */
    }
}

int lh_subscribe(lh_daemon *d)
{
    int fd = lh_connect(d);
    cr_assert(fd >= 0, "cannot connect to loomd");
    lh_send(fd, "{\"op\":\"events\"}");
    json_t *r = lh_recv(fd, 5000);
    cr_assert(r && json_is_true(json_object_get(r, "subscribed")), "the events op did not subscribe");
    json_decref(r);
    return fd;
}

json_t *lh_wait_event(int fd, const char *event, const char *job, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        long left = timeout_ms - ms_since(&t0);
        json_t *e = left > 0 ? lh_recv(fd, (int)left) : NULL;
        if (!e)
            return NULL;
        const char *name = json_string_value(json_object_get(e, "event"));
        const char *id = json_string_value(json_object_get(e, "job"));
        if (name && strcmp(name, event) == 0 && (!job || (id && strcmp(id, job) == 0)))
            return e;
        json_decref(e);
    }
}

long lh_store_steps(const lh_daemon *d, const char *job)
{
    char path[400];
    snprintf(path, sizeof path, "%s/loom.db", d->state);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 5000); /* the daemon may hold a write lock briefly */
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM steps WHERE job_id = ?1", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_bind_text(st, 1, job, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

void lh_config_replace(lh_daemon *d, const char *old, const char *new_text)
{
    char buf[8192];
    FILE *f = fopen(d->cfg, "r");
    cr_assert(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, old);
    cr_assert(at, "the config has no '%s'", old);
    char *text = NULL;
    cr_assert(asprintf(&text, "%.*s%s%s", (int)(at - buf), buf, new_text, at + strlen(old)) > 0);
    write_file(d->cfg, text);
    free(text);
}

int lh_check(lh_daemon *d, char *out, size_t outlen)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char exe[400], path[400];
    snprintf(exe, sizeof exe, "%s/loomd", bd ? bd : ".");
    snprintf(path, sizeof path, "%s/check.out", d->dir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(exe, exe, "--check", "--config", d->cfg, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(out, 1, outlen - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

long lh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lh_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t lh_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool lh_pipe_read(lh_pipe *p, void (*on_line)(void *ud, json_t *line), void *ud)
{
    for (;;) {
        if (p->cap - p->len < 65536) {
            p->cap = p->cap ? p->cap * 2 : 131072;
            p->buf = realloc(p->buf, p->cap);
            cr_assert(p->buf);
        }
        ssize_t n = recv(p->fd, p->buf + p->len, p->cap - p->len, MSG_DONTWAIT);
        if (n == 0)
            return false;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        p->len += (size_t)n;
        char *start = p->buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(p->buf + p->len - start)))) {
            json_error_t e;
            json_t *r = json_loadb(start, (size_t)(nl - start), 0, &e);
            cr_assert(r, "an unparsable reply line: %s", e.text);
            on_line(ud, r);
            json_decref(r);
            start = nl + 1;
        }
        p->len -= (size_t)(start - p->buf);
        memmove(p->buf, start, p->len);
    }
}

bool lh_send_all(int fd, const char *data, size_t n)
{
    while (n) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        data += w;
        n -= (size_t)w;
    }
    return true;
}

void lh_plugin_dir(lh_daemon *d, const char *const *names, char *out, size_t outlen)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char link[600], target[PATH_MAX];
    snprintf(out, outlen, "%s/plugins", d->dir);
    cr_assert_eq(mkdir(out, 0755), 0);
    for (int i = 0; names && names[i]; i++) {
        snprintf(link, sizeof link, "%s/%s.so", out, names[i]);
        snprintf(target, sizeof target, "%s/tests/plugins/.libs/%s.so", bd ? bd : ".", names[i]);
        char *abs = realpath(target, NULL);
        cr_assert(abs, "no %s", target);
        cr_assert_eq(symlink(abs, link), 0);
        free(abs);
    }
}

int lh_loomctl(const char *args, char **out)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "'%s/loomctl' %s", bd ? bd : ".", args) > 0);
    FILE *f = popen(cmd, "r");
    cr_assert(f, "cannot run %s", cmd);
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    cr_assert(buf);
    for (size_t k; (k = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += k;
        if (cap - n < 2) {
            buf = realloc(buf, cap *= 2);
            cr_assert(buf);
        }
    }
    buf[n] = '\0';
    int st = pclose(f);
    free(cmd);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

void lh_use_pg(lh_daemon *d, const char *db_uri, const char *node, const char *cluster_fields,
               const char *extra)
{
    char old[400], *repl = NULL;
    snprintf(old, sizeof old, "state: %s\n", d->state);
    cr_assert(asprintf(&repl, "state: \"%s\"\ncluster: { node: %s, local_state: \"%s/local\"%s%s }\n%s",
                       db_uri, node, d->dir, *cluster_fields ? ", " : "", cluster_fields,
                       extra) > 0);
    lh_config_replace(d, old, repl);
    free(repl);
}

static int lh_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void lh_list_count(lh_daemon *d, const char *workflow, int page, const char *const *want, int n,
                   lh_listed *out)
{
    *out = (lh_listed){ 0 };
    int cap = 2 * n + 1;
    char **ids = calloc((size_t)cap, sizeof *ids);
    cr_assert(ids);
    char after[64] = "";
    for (int pages = 0; pages < 1000; pages++) {
        char req[384];
        snprintf(req, sizeof req, "{\"op\":\"list\",\"workflow\":\"%s\",\"order\":\"oldest\","
                                  "\"limit\":%d%s%s%s}",
                 workflow, page, after[0] ? ",\"after\":\"" : "", after, after[0] ? "\"" : "");
        json_t *r = lh_call(d, req, 10000);
        for (int tries = 1; tries < 5 && r && !json_is_true(json_object_get(r, "ok")); tries++) {
            const char *code =
                json_string_value(json_object_get(json_object_get(r, "error"), "code"));
            if (!code || strcmp(code, "store_error") != 0)
                break;
            /* the store reconnects at most once a second (store.h) */
            json_decref(r);
            out->retries++;
            poll(NULL, 0, 1000);
            r = lh_call(d, req, 10000);
        }
        cr_assert(r && json_is_true(json_object_get(r, "ok")), "list failed: %s",
                  r ? json_dumps(r, 0) : "no reply");
        size_t i;
        json_t *job;
        json_array_foreach(json_object_get(r, "jobs"), i, job) {
            cr_assert(out->listed < cap - 1, "far more jobs than the %d expected", n);
            ids[out->listed] = strdup(json_string_value(json_object_get(job, "id")));
            cr_assert(ids[out->listed]);
            out->listed++;
        }
        json_t *next = json_object_get(r, "next");
        bool more = json_is_string(next);
        if (more)
            snprintf(after, sizeof after, "%s", json_string_value(next));
        json_decref(r);
        if (!more)
            break;
    }
    qsort(ids, (size_t)out->listed, sizeof *ids, lh_cmp_str);
    for (int i = 0; i < out->listed; i++)
        out->distinct += i == 0 || strcmp(ids[i], ids[i - 1]) != 0;
    for (int k = 0; k < n; k++)
        out->found += bsearch(&want[k], ids, (size_t)out->listed, sizeof *ids, lh_cmp_str) != NULL;
    for (int i = 0; i < out->listed; i++)
        free(ids[i]);
    free(ids);
}
