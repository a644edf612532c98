/* iso_host.c -- loom-plugin-host, the helper process of an isolated plugin
 * (iso.h). loomd starts it with one end of a socketpair as fd 3; it locks
 * itself down, reads its init frame (the plugin's configuration), loads the
 * one plugin with loomd's own loader, says ready, and then runs the calls it
 * is sent, one at a time, until the socket closes.
 *
 * Two threads. A reader thread reads every frame as it arrives and queues
 * it for the main thread, which runs lambdas and hooks; a cancel frame also
 * sets the flag loom_cancelled reads, so a lambda that polls it sees loomd
 * give up while it runs. Frames go out from the main thread, and from
 * whatever thread a plugin logs on, under a lock.
 *
 * The main thread is also the "reactor" of the plugin's invoke providers:
 * it waits for the next frame or the next timer a provider set, whichever
 * comes first, so a provider finishes its calls from timer callbacks as it
 * would in loomd. Its instances are made and ended as loomd says.
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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
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

/* The reader thread's stack: room for jansson's parser on a deeply nested
 * frame (ASan's frames are several times larger). */
#ifdef ISO_ASAN
#define READER_STACK ((size_t)8 << 20)
#else
#define READER_STACK ((size_t)1 << 20)
#endif

typedef struct host {
    int fd;
    const char *name;          /* the plugin's (argv) */
    pthread_mutex_t wmu;       /* out: frames from the main thread and plugins' threads */
    iso_writer out;
    bool ready;                /* said ready: loader errors go to loomd's log */
    char last_error[512];      /* the loader's last error line, for "fatal" */
    uint64_t cpu_seconds;
    rlim_t cpu_hard;
    /* what the reader thread hands the main thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *inbox;             /* an array of messages, oldest first */
    bool eof;                  /* the socket ended */
    _Atomic uint64_t cancel_id; /* the newest call loomd gave up on (ids only grow) */
    /* the main thread's alone: invoke providers' instances, calls, timers */
    struct hinst *insts;
    struct pcall *calls;
    struct htimer *timers;
} host;

/* A provider instance, made by its init in this process. */
typedef struct hinst {
    struct hinst *next;
    uint64_t id;
    const plugins_provider *prov; /* NULL: no such invoke provider (why says) */
    void *state;
    bool ok;                   /* init succeeded: calls run, fini at the end */
    char why[512];
} hinst;

/* An invoke call in flight: the loom_call the provider finishes. */
typedef struct pcall {
    loom_call base;            /* first: what the provider holds */
    struct pcall *next;
    host *h;
    hinst *in;
    uint64_t id;
    bool in_invoke;            /* inside the provider's invoke: freed after it returns */
    bool finished;             /* answered (complete, fail) */
} pcall;

/* A timer a provider set: runs on the main thread at AT (CLOCK_MONOTONIC ms). */
typedef struct htimer {
    struct htimer *next;
    uint64_t at_ms;
    void (*cb)(void *ud);
    void *ud;
} htimer;

/* One call's context: what loom_error records, and the call's id and
 * deadline for loom_cancelled and loom_deadline_ms. */
typedef struct hctx {
    loom_ctx base;
    host *h;
    uint64_t id;
    uint64_t deadline_ms;      /* CLOCK_MONOTONIC ms; 0: none */
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
    [LOOM_E_TLS] = "tls",
};

/* Sends V (stolen) as one frame now. Blocking: the only reader is loomd,
 * and a loomd that is gone ends the helper. -1 when V cannot be encoded
 * (nothing was sent). */
static int send_json(host *h, json_t *v)
{
    int rc = -1;
    pthread_mutex_lock(&h->wmu);
    if (v && iso_writer_add_json(&h->out, v) == 0) {
        rc = 0;
        if (iso_writer_flush(&h->out, h->fd) != 0)
            _exit(0);
    }
    pthread_mutex_unlock(&h->wmu);
    json_decref(v);
    return rc;
}

static void send_log(host *h, int level, const char *text)
{
    send_json(h, json_pack("{s:i, s:s}", "log", level, "message", text ? text : ""));
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

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- invoke providers' side of loom_call */

static void pcall_unlink_free(pcall *pc)
{
    for (pcall **pp = &pc->h->calls; *pp; pp = &(*pp)->next)
        if (*pp == pc) {
            *pp = pc->next;
            break;
        }
    free(pc);
}

/* PC is answered: it goes, unless the provider's invoke is still running
 * (then after it returns). */
static void pcall_finished(pcall *pc)
{
    pc->finished = true;
    if (!pc->in_invoke)
        pcall_unlink_free(pc);
}

static void send_invoke_error(host *h, uint64_t id, loom_errcode code, uint64_t retry_after_ms,
                              const char *message)
{
    const char *name = (unsigned)code < sizeof code_names / sizeof code_names[0] && code != LOOM_OK
                           ? code_names[code] : "upstream";
    send_json(h, json_pack("{s:I, s:{s:s, s:s, s:I}}", "invoke_id", (json_int_t)id, "error",
                           "code", name, "message", message ? message : "failed",
                           "retry_after_ms", (json_int_t)retry_after_ms));
}

static void h_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                             const loom_usage *usage)
{
    pcall *pc = (pcall *)call;
    if (pc->finished) { /* a second end: the first counts */
        json_decref(output);
        json_decref(tool_calls);
        return;
    }
    /* the cache counts only from a plugin whose loom_usage has them (2.2) */
    bool cache = usage && pc->in->prov->plugin->abi_minor >= 2;
    json_t *msg = json_pack("{s:I, s:o, s:{s:I, s:I, s:I, s:I}}", "invoke_id", (json_int_t)pc->id,
                            "output", output ? output : json_null(), "usage", "input_tokens",
                            (json_int_t)(usage ? usage->input_tokens : -1), "output_tokens",
                            (json_int_t)(usage ? usage->output_tokens : -1), "cache_read_tokens",
                            (json_int_t)(cache ? usage->cache_read_tokens : -1),
                            "cache_write_tokens",
                            (json_int_t)(cache ? usage->cache_write_tokens : -1));
    if (msg && tool_calls && json_object_set_new(msg, "tool_calls", tool_calls) < 0) {
        json_decref(msg);
        msg = NULL;
    } else if (!msg) {
        json_decref(tool_calls);
    }
    if (send_json(pc->h, msg) < 0)
        send_invoke_error(pc->h, pc->id, LOOM_E_INVALID_OUTPUT, 0,
                          "the output cannot be encoded as JSON");
    pcall_finished(pc);
}

static void h_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    h_complete_tools(call, output, NULL, usage);
}

static void h_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message)
{
    pcall *pc = (pcall *)call;
    if (pc->finished)
        return;
    send_invoke_error(pc->h, pc->id, code, ms, message);
    pcall_finished(pc);
}

static void h_fail(loom_call *call, loom_errcode code, const char *message)
{
    h_fail_after(call, code, 0, message);
}

static void *h_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    host *h = ((pcall *)call)->h;
    htimer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->at_ms = mono_ms() + delay_ms;
    t->cb = cb;
    t->ud = ud;
    t->next = h->timers;
    h->timers = t;
    return t;
}

static void h_timer_cancel(loom_call *call, void *timer)
{
    host *h = ((pcall *)call)->h;
    for (htimer **pp = &h->timers; *pp; pp = &(*pp)->next)
        if (*pp == timer) {
            *pp = ((htimer *)timer)->next;
            free(timer);
            return;
        }
}

static void h_call_vlog(loom_call *call, int level, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    send_log(((pcall *)call)->h, level, line);
}

/* The call's deadline from its frame (0 outside a call: init, reload). */
static uint64_t h_deadline_ms(loom_ctx *ctx)
{
    return ((hctx *)ctx)->deadline_ms;
}

/* loomd said it gave up on this call (its cancel frame came). Only that,
 * as in loomd: past the deadline the host's own timer decides, and a
 * lambda that returns a moment before it still has its answer taken. Any
 * thread. */
static int h_cancelled(loom_ctx *ctx)
{
    hctx *c = (hctx *)ctx;
    return c->id && atomic_load(&c->h->cancel_id) >= c->id;
}

static const loom_host_api host_api = {
    .verror = h_verror, .vlog = h_vlog, .retry_after = h_retry_after, .complete = h_complete,
    .fail = h_fail, .timer_add = h_timer_add, .timer_cancel = h_timer_cancel,
    .fail_after = h_fail_after, .deadline_ms = h_deadline_ms, .cancelled = h_cancelled,
    .call_vlog = h_call_vlog, .complete_tools = h_complete_tools,
};

/* The loader's lines: errors are kept for the fatal message, the rest go to
 * loomd's log through the socket. */
static void loader_log(void *ud, int level, const char *line)
{
    host *h = ud;
    if (level == LOOM_LOG_ERROR && !h->ready)
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

/* Runs the lambda call REQ (borrowed) and answers it. */
static void serve(host *h, plugins_t *p, json_t *req)
{
    json_t *id = json_object_get(req, "id");
    const char *fn = json_string_value(json_object_get(req, "lambda"));
    if (!json_is_integer(id) || !fn)
        _exit(3); /* loomd sent what it never sends: start again clean */
    json_t *reply;
    const plugins_lambda *lam = plugins_lambda_find(p, fn);
    if (!lam) {
        reply = json_pack("{s:O, s:{s:s, s:s}}", "id", id, "error", "code", "lambda_failed",
                          "message", "no such lambda in the isolated plugin");
    } else {
        hctx c = { .base.api = &host_api, .h = h, .id = (uint64_t)json_integer_value(id) };
        json_t *dl = json_object_get(req, "deadline_ms");
        if (json_is_integer(dl) && json_integer_value(dl) > 0)
            c.deadline_ms = (uint64_t)json_integer_value(dl);
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
    if (send_json(h, reply) < 0) {
        /* an output JSON cannot carry (a NaN, bytes that are not UTF-8) */
        reply = json_pack("{s:O, s:{s:s, s:s}}", "id", id, "error", "code", "invalid_output",
                          "message", "the output cannot be encoded as JSON");
        if (send_json(h, reply) < 0)
            _exit(4);
    }
}

/* SIGHUP in loomd: the plugin's reload hook with CONFIG (borrowed; JSON
 * null for none). A refusal is logged by the loader (to loomd's log). */
static void reload(host *h, plugins_t *p, json_t *config)
{
    json_t *configs = json_is_null(config) ? NULL : json_pack("{s:O}", h->name, config);
    if (!json_is_null(config) && !configs) {
        send_log(h, LOOM_LOG_ERROR, "out of memory: the reload was not run");
        return;
    }
    plugins_reload(p, configs);
    json_decref(configs);
}

/* The reader thread: every frame, parsed, into the inbox; a cancel also
 * sets cancel_id at once, for a lambda running meanwhile. A stream it cannot
 * read ends the process: loomd starts a clean one. */
static void *reader_main(void *ud)
{
    host *h = ud;
    iso_reader rd = { 0 };
    for (;;) {
        ssize_t n = iso_reader_fill(&rd, h->fd);
        if (n <= 0)
            break; /* loomd closed its end */
        const char *data;
        size_t len;
        int rc;
        while ((rc = iso_reader_next(&rd, &data, &len)) == 1) {
            json_error_t je;
            json_t *msg = json_loadb(data, len, JSON_ALLOW_NUL, &je);
            if (!json_is_object(msg))
                _exit(3);
            json_t *cancel = json_object_get(msg, "cancel");
            if (json_is_integer(cancel)) {
                uint64_t id = (uint64_t)json_integer_value(cancel);
                uint64_t cur = atomic_load(&h->cancel_id);
                while (cur < id && !atomic_compare_exchange_weak(&h->cancel_id, &cur, id))
                    ;
                json_decref(msg); /* nothing more to do with it: one call at a time */
                continue;
            }
            pthread_mutex_lock(&h->mu);
            if (json_array_append_new(h->inbox, msg) < 0)
                _exit(3);
            pthread_cond_signal(&h->cv);
            pthread_mutex_unlock(&h->mu);
        }
        if (rc < 0)
            _exit(3);
    }
    iso_reader_free(&rd);
    pthread_mutex_lock(&h->mu);
    h->eof = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* The next message (a new reference), waiting for it until UNTIL_MS
 * (CLOCK_MONOTONIC; 0: for ever); NULL when that time came first, or, with
 * *ENDED, once the socket has ended and every message before that was
 * taken. */
static json_t *next_message(host *h, uint64_t until_ms, bool *ended)
{
    pthread_mutex_lock(&h->mu);
    while (json_array_size(h->inbox) == 0 && !h->eof) {
        if (!until_ms) {
            pthread_cond_wait(&h->cv, &h->mu);
            continue;
        }
        struct timespec ts = { (time_t)(until_ms / 1000), (long)(until_ms % 1000) * 1000000 };
        if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) == ETIMEDOUT)
            break;
    }
    json_t *msg = json_incref(json_array_get(h->inbox, 0));
    if (msg)
        json_array_remove(h->inbox, 0);
    *ended = !msg && h->eof;
    pthread_mutex_unlock(&h->mu);
    return msg;
}

/* ---- invoke providers: instances, calls, timers */

static hinst *inst_find(host *h, uint64_t id)
{
    for (hinst *in = h->insts; in; in = in->next)
        if (in->id == id)
            return in;
    return NULL;
}

/* {"instance": K, "provider": NAME, "name": NAME, "config": C}: the
 * provider's init. A failure is logged and answers each call of it. */
static void inst_new(host *h, plugins_t *p, json_t *msg)
{
    hinst *in = calloc(1, sizeof *in);
    if (!in)
        _exit(3); /* loomd restarts a clean helper, which makes it again */
    in->id = (uint64_t)json_integer_value(json_object_get(msg, "instance"));
    const char *pname = json_string_value(json_object_get(msg, "provider"));
    const char *name = json_string_value(json_object_get(msg, "name"));
    json_t *cfg = json_object_get(msg, "config");
    in->next = h->insts;
    h->insts = in;
    in->prov = pname ? plugins_provider_find(p, pname) : NULL;
    if (!in->prov || !in->prov->def->invoke) {
        snprintf(in->why, sizeof in->why, "the isolated plugin has no invoke provider '%s'",
                 pname ? pname : "");
    } else if (in->prov->def->init) {
        hctx c = { .base.api = &host_api, .h = h };
        if (in->prov->def->init(&c.base, in->prov->plugin_state, json_is_null(cfg) ? NULL : cfg,
                                &in->state) < 0)
            snprintf(in->why, sizeof in->why, "provider instance %.64s: init failed: %.400s",
                     name ? name : pname, c.failed ? c.msg : "no reason given");
        else
            in->ok = true;
    } else {
        in->ok = true;
    }
    if (!in->ok)
        send_log(h, LOOM_LOG_ERROR, in->why);
}

static void inst_end(host *h, json_t *msg)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "instance_end"));
    for (hinst **pp = &h->insts; *pp; pp = &(*pp)->next) {
        hinst *in = *pp;
        if (in->id != id)
            continue;
        *pp = in->next;
        if (in->ok && in->prov->def->fini)
            in->prov->def->fini(in->state);
        free(in);
        return;
    }
}

/* {"invoke_id": N, "instance": K, "request": R, "deadline_ms": D}. */
static void invoke(host *h, json_t *msg)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "invoke_id"));
    hinst *in = inst_find(h, (uint64_t)json_integer_value(json_object_get(msg, "instance")));
    loom_request req;
    if (!in || !in->ok || iso_request_from_json(json_object_get(msg, "request"), &req) < 0) {
        send_invoke_error(h, id, LOOM_E_CONFIG, 0,
                          !in ? "no such provider instance in the helper"
                          : !in->ok ? in->why : "a request the helper cannot read");
        return;
    }
    pcall *pc = calloc(1, sizeof *pc);
    if (!pc) {
        send_invoke_error(h, id, LOOM_E_NOMEM, 0, "out of memory");
        return;
    }
    pc->base.api = &host_api;
    pc->h = h;
    pc->in = in;
    pc->id = id;
    pc->in_invoke = true;
    pc->next = h->calls;
    h->calls = pc;
    hctx c = { .base.api = &host_api, .h = h };
    json_t *dl = json_object_get(msg, "deadline_ms");
    if (json_is_integer(dl) && json_integer_value(dl) > 0)
        c.deadline_ms = (uint64_t)json_integer_value(dl);
    int rc = in->prov->def->invoke(&c.base, in->state, &req, &pc->base);
    pc->in_invoke = false;
    if (rc < 0 && !pc->finished) /* it could not start: the host finishes it */
        send_invoke_error(h, id, c.failed ? c.code : LOOM_E_UPSTREAM, 0,
                          c.failed ? c.msg : "the provider could not start the call");
    if (rc < 0 || pc->finished)
        pcall_unlink_free(pc);
}

/* {"cancel_invoke": N}: the provider's cancel hook; no answer. */
static void cancel_invoke(host *h, json_t *msg)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "cancel_invoke"));
    for (pcall *pc = h->calls; pc; pc = pc->next)
        if (pc->id == id) {
            if (pc->in->prov->def->cancel)
                pc->in->prov->def->cancel(pc->in->state, &pc->base);
            pcall_unlink_free(pc);
            return;
        }
}

/* When the next provider timer is due (0: none). */
static uint64_t timers_next(const host *h)
{
    uint64_t next = 0;
    for (const htimer *t = h->timers; t; t = t->next)
        if (!next || t->at_ms < next)
            next = t->at_ms ? t->at_ms : 1;
    return next;
}

/* Runs every provider timer that is due, one at a time (a callback may add
 * or cancel others). */
static void timers_run(host *h)
{
    for (;;) {
        uint64_t now = mono_ms();
        htimer **due = NULL;
        for (htimer **pp = &h->timers; *pp; pp = &(*pp)->next)
            if ((*pp)->at_ms <= now && (!due || (*pp)->at_ms < (*due)->at_ms))
                due = pp;
        if (!due)
            return;
        htimer *t = *due;
        *due = t->next;
        void (*cb)(void *) = t->cb;
        void *ud = t->ud;
        free(t);
        cb(ud);
    }
}

static int start_reader(host *h)
{
    pthread_attr_t at;
    pthread_t t;
    if (pthread_attr_init(&at))
        return -1;
    pthread_attr_setstacksize(&at, READER_STACK);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, reader_main, h);
    pthread_attr_destroy(&at);
    return rc ? -1 : 0;
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
    h.name = name;
    lock_down(&h, memory);
    pthread_mutex_init(&h.wmu, NULL);
    pthread_mutex_init(&h.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the providers' timers' clock */
    pthread_cond_init(&h.cv, &ca);
    pthread_condattr_destroy(&ca);
    plugins_t *p = NULL;
    if (!(h.inbox = json_array()) || start_reader(&h) < 0 || !(p = plugins_new(NULL, NULL))) {
        send_json(&h, json_pack("{s:s}", "fatal", "out of memory"));
        return 2;
    }
    /* loomd's first frame: the plugin's configuration, for its init */
    bool ended;
    json_t *first = next_message(&h, 0, &ended);
    json_t *init = json_object_get(first, "init");
    if (!init)
        _exit(3);
    plugins_set_level_log(p, loader_log, &h);
    if (plugins_load_file(p, path, json_is_null(init) ? NULL : init) < 0) {
        send_json(&h, json_pack("{s:s}", "fatal", h.last_error[0] ? h.last_error : "cannot load"));
        return 2;
    }
    json_decref(first);
    h.ready = true;
    send_json(&h, json_pack("{s:{s:s, s:i}}", "ready", "plugin", name, "pid", (int)getpid()));
    for (;;) {
        json_t *msg = next_message(&h, timers_next(&h), &ended), *v;
        if (ended)
            break;
        if (!msg) /* a timer is due */
            ;
        else if (json_object_get(msg, "id"))
            serve(&h, p, msg);
        else if (json_object_get(msg, "invoke_id"))
            invoke(&h, msg);
        else if (json_object_get(msg, "cancel_invoke"))
            cancel_invoke(&h, msg);
        else if (json_object_get(msg, "instance"))
            inst_new(&h, p, msg);
        else if (json_object_get(msg, "instance_end"))
            inst_end(&h, msg);
        else if ((v = json_object_get(msg, "reload")))
            reload(&h, p, v);
        else
            _exit(3); /* loomd sent what it never sends */
        json_decref(msg);
        timers_run(&h);
    }
    /* no fini, no frees: the process ends and a plugin's fini is not worth
     * trusting with the last word */
    _exit(0);
}
