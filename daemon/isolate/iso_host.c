/* iso_host.c -- loom-plugin-host, the helper process of an isolated plugin
 * (iso.h). loomd starts it with one end of a socketpair as fd 3; it locks
 * itself down, loads the one plugin with loomd's own loader, says ready, and
 * then runs the calls it is sent, one at a time, until the socket closes.
 *
 * It trusts nothing it loads: stdout goes to /dev/null (a plugin printing
 * cannot corrupt the frames on fd 3), every other descriptor is closed, no
 * new privileges can be gained (setuid programs do not elevate), core dumps
 * are off, the address space is capped, and each call gets a CPU-time
 * budget. It dies with loomd (PR_SET_PDEATHSIG). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon/isolate/iso.h"
#include "daemon/plugins/plugins.h"
#include "loom/plugin.h"

#if defined(__SANITIZE_ADDRESS__)
#define ISO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ISO_ASAN 1
#endif
#endif

typedef struct host {
    int fd;
    iso_writer out;
    char last_error[512];      /* the loader's last error line, for "fatal" */
    uint64_t cpu_seconds;
    rlim_t cpu_hard;
} host;

/* One call's context: what loom_error records. */
typedef struct hctx {
    loom_ctx base;
    host *h;
    bool failed;
    loom_errcode code;
    char msg[1024];
} hctx;

static const char *const code_names[] = {
    [LOOM_OK] = "lambda_failed",         [LOOM_E_TIMEOUT] = "timeout",
    [LOOM_E_RATE_LIMITED] = "rate_limited", [LOOM_E_UPSTREAM] = "upstream",
    [LOOM_E_INVALID_OUTPUT] = "invalid_output", [LOOM_E_LAMBDA_FAILED] = "lambda_failed",
    [LOOM_E_QUOTA] = "quota",            [LOOM_E_INVALID_REQUEST] = "invalid_request",
    [LOOM_E_CONFIG] = "config",          [LOOM_E_NOMEM] = "out_of_memory",
};

static void send_json(host *h, json_t *v)
{
    if (v)
        (void)iso_writer_add_json(&h->out, v);
    json_decref(v);
}

/* Blocking: the only reader is loomd, and there is nothing else to do. A
 * loomd that is gone ends the helper. */
static void flush_or_die(host *h)
{
    if (iso_writer_flush(&h->out, h->fd) != 0)
        _exit(0);
}

static void send_log(host *h, int level, const char *text)
{
    send_json(h, json_pack("{s:i, s:s}", "log", level, text));
}

static void h_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    hctx *c = (hctx *)ctx;
    c->failed = true;
    c->code = code;
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
}

static void h_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    hctx *c = (hctx *)ctx;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    send_log(c->h, level, line);
}

static void h_retry_after(loom_ctx *ctx, uint64_t ms) { }
/* invoke providers do not run in a helper (docs/plugins.md) */
static void h_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    json_decref(output);
}
static void h_fail(loom_call *call, loom_errcode code, const char *message) { }
static void *h_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    return NULL;
}
static void h_timer_cancel(loom_call *call, void *timer) { }
static void h_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message) { }
static void h_call_vlog(loom_call *call, int level, const char *fmt, va_list ap) { }
/* ABI 2.0: a helper knows no deadline, and a call given up on ends with
 * the helper's, so a lambda polling these here just runs to its end. */
static uint64_t h_deadline_ms(loom_ctx *ctx) { return 0; }
static int h_cancelled(loom_ctx *ctx) { return 0; }

static const loom_host_api host_api = {
    .verror = h_verror, .vlog = h_vlog, .retry_after = h_retry_after, .complete = h_complete,
    .fail = h_fail, .timer_add = h_timer_add, .timer_cancel = h_timer_cancel,
    .fail_after = h_fail_after, .deadline_ms = h_deadline_ms, .cancelled = h_cancelled,
    .call_vlog = h_call_vlog,
};

/* The loader's lines: errors are kept for the fatal message, the rest go to
 * loomd's log through the socket. */
static void loader_log(void *ud, int level, const char *line)
{
    host *h = ud;
    if (level == LOOM_LOG_ERROR)
        snprintf(h->last_error, sizeof h->last_error, "%s", line);
    else
        send_log(h, level, line);
}

static void close_other_fds(int keep)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3, keep - 1, 0) == 0 &&
        syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        for (int fd = 3; fd < 1024; fd++)
            if (fd != keep)
                close(fd);
        return;
    }
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != keep && fd != dfd)
            close(fd);
    }
    closedir(d);
}

static void lock_down(host *h, uint64_t memory)
{
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) /* loomd died before the line above */
        _exit(0);
    signal(SIGPIPE, SIG_IGN);
    close_other_fds(h->fd);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        if (null > 2 && null != h->fd)
            close(null);
    }
    /* no core dumps: RLIMIT_CORE alone does not stop a core_pattern pipe,
     * and dumping a helper that filled its address space takes seconds */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct rlimit rl = { 0, 0 };
    setrlimit(RLIMIT_CORE, &rl);
#ifndef ISO_ASAN
    if (memory) {
        rl.rlim_cur = rl.rlim_max = (rlim_t)memory;
        setrlimit(RLIMIT_AS, &rl);
    }
#else
    (void)memory; /* ASan's shadow needs the address space: loomd set hard_rss_limit_mb */
#endif
    if (getrlimit(RLIMIT_CPU, &rl) == 0)
        h->cpu_hard = rl.rlim_max;
}

/* Each call may use cpu_seconds of CPU time from its start: the soft limit
 * moves ahead of what the helper has used so far (SIGXCPU ends it past it). */
static void cpu_budget(host *h)
{
    if (!h->cpu_seconds)
        return;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return;
    rlim_t used = (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1;
    struct rlimit rl = { used + (rlim_t)h->cpu_seconds, h->cpu_hard };
    if (h->cpu_hard != RLIM_INFINITY && rl.rlim_cur > h->cpu_hard)
        rl.rlim_cur = h->cpu_hard;
    setrlimit(RLIMIT_CPU, &rl);
}

static void serve(host *h, plugins_t *p, const char *data, size_t len)
{
    json_error_t je;
    json_t *req = json_loadb(data, len, JSON_ALLOW_NUL, &je);
    json_t *id = json_object_get(req, "id");
    const char *fn = json_string_value(json_object_get(req, "lambda"));
    if (!json_is_integer(id) || !fn) {
        json_decref(req);
        _exit(3); /* loomd sent what it never sends: start again clean */
    }
    json_t *reply;
    const plugins_lambda *lam = plugins_lambda_find(p, fn);
    if (!lam) {
        reply = json_pack("{s:O, s:{s:s, s:s}}", "id", id, "error", "code", "lambda_failed",
                          "message", "no such lambda in the isolated plugin");
    } else {
        hctx c = { .base.api = &host_api, .h = h };
        json_t *args = json_object_get(req, "args");
        json_t *own_args = args ? NULL : json_object();
        cpu_budget(h);
        json_t *out = lam->def->fn(&c.base, lam->state, json_object_get(req, "input"),
                                   args ? args : own_args);
        json_decref(own_args);
        if (out) {
            reply = json_pack("{s:O, s:o}", "id", id, "output", out);
        } else {
            const char *code = (unsigned)c.code < sizeof code_names / sizeof code_names[0]
                                   ? code_names[c.code] : "lambda_failed";
            reply = json_pack("{s:O, s:{s:s, s:s}}", "id", id, "error", "code",
                              c.failed ? code : "lambda_failed", "message",
                              c.failed ? c.msg : "returned no value");
        }
    }
    if (!reply || iso_writer_add_json(&h->out, reply) < 0) {
        /* an output JSON cannot carry (a NaN, bytes that are not UTF-8) */
        json_decref(reply);
        reply = json_pack("{s:O, s:{s:s, s:s}}", "id", id, "error", "code", "invalid_output",
                          "message", "the output cannot be encoded as JSON");
        if (!reply || iso_writer_add_json(&h->out, reply) < 0)
            _exit(4);
    }
    json_decref(reply);
    json_decref(req);
    flush_or_die(h);
}

static int usage(void)
{
    fprintf(stderr, "usage: " ISO_HOST_PROGRAM " --fd N --plugin NAME --path FILE "
                    "[--memory BYTES] [--cpu SECONDS]\n(started by loomd, not by hand)\n");
    return 2;
}

int main(int argc, char **argv)
{
    host h = { .fd = -1 };
    const char *name = NULL, *path = NULL;
    uint64_t memory = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--fd"))
            h.fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--plugin"))
            name = argv[i + 1];
        else if (!strcmp(argv[i], "--path"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--memory"))
            memory = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--cpu"))
            h.cpu_seconds = strtoull(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (h.fd < 3 || !name || !path || fcntl(h.fd, F_GETFD) < 0)
        return usage();
    lock_down(&h, memory);
    plugins_t *p = plugins_new(NULL, NULL);
    if (!p) {
        send_json(&h, json_pack("{s:s}", "fatal", "out of memory"));
        flush_or_die(&h);
        return 2;
    }
    plugins_set_level_log(p, loader_log, &h);
    if (plugins_load_file(p, path, NULL) < 0) {
        send_json(&h, json_pack("{s:s}", "fatal", h.last_error[0] ? h.last_error : "cannot load"));
        flush_or_die(&h);
        return 2;
    }
    send_json(&h, json_pack("{s:{s:s, s:i}}", "ready", "plugin", name, "pid", (int)getpid()));
    flush_or_die(&h);
    iso_reader in = { 0 };
    for (;;) {
        ssize_t n = iso_reader_fill(&in, h.fd);
        if (n == 0 || (n < 0 && n != -EINTR))
            break; /* loomd closed its end */
        const char *data;
        size_t len;
        int rc;
        while ((rc = iso_reader_next(&in, &data, &len)) == 1)
            serve(&h, p, data, len);
        if (rc < 0)
            _exit(3);
    }
    /* no fini, no frees: the process ends and a plugin's fini is not worth
     * trusting with the last word */
    _exit(0);
}
