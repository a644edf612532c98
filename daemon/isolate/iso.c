/* iso.c -- the daemon's side of isolated plugins: handing helpers calls one
 * at a time, their frames, deadlines, and what happens when one dies
 * (iso_spawn.c starts, kills and reaps the processes).
 *
 * A helper goes DOWN -> STARTING (spawned, plugin loading) -> READY (serving)
 * -> EXITING (killed or lost, waiting to be reaped) -> DOWN, and a restart
 * timer takes it back to STARTING. Its death is seen through a pidfd on the
 * reactor (the process has exited and can be reaped), so loomd's signal
 * handling needs no SIGCHLD and no other child of loomd is ever reaped by
 * mistake; without pidfds (kernels before 5.3) a 5 ms timer polls
 * waitpid(pid, WNOHANG) for the helpers that are exiting, and only them.
 *
 * Restarts after a crash wait 100 ms, doubling to 10 s, reset once a helper
 * has lived a healthy minute; a helper loomd killed itself (a call given up
 * on that did not return within the grace) restarts at once.
 *
 * A call given up on while it runs (the plugin's timeout, or iso_cancel for
 * a step's timeout or a cancelled job) stays the helper's, with no done
 * callback, until the helper answers it (the answer is dropped) or the
 * grace ends and the helper is killed: the helper is busy meanwhile, so it
 * is never handed a second call while the first still runs. */
#include <time.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/isolate/iso_internal.h"
#include "loom/plugin.h"

static void dispatch(iso_plugin *pl);

/* ---- calls */

static void call_free(iso_call_t *c)
{
    if (c->later)
        reactor_timer_cancel(c->iso->r, c->later);
    free(c->fn);
    json_decref(c->input);
    json_decref(c->args);
    free(c);
}

static void call_end(iso_call_t *c, iso_result *res)
{
    iso_done_fn done = c->done;
    void *ud = c->ud;
    call_free(c);
    done(ud, res);
}

static void call_fail(iso_call_t *c, iso_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_fail(iso_call_t *c, iso_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    iso_result res = { .status = st, .message = msg };
    call_end(c, &res);
}

/* CLOCK_MONOTONIC in ms: the clock of deadline_ms in the call frame (the
 * helper reads the same one). */
static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void later_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    iso_call_t *c = ud;
    c->later = NULL;
    call_fail(c, c->later_status, "plugin '%s' cannot run: %s", c->pl->name, c->pl->why);
}

/* ---- helpers */

bool iso_any_ready(const iso_plugin *pl)
{
    for (int i = 0; i < pl->lim.processes; i++)
        if (pl->h[i].state == H_READY)
            return true;
    return false;
}

static void fail_invoke_queue(iso_plugin *pl);

/* Calls queued for a plugin none of whose helpers can start fail now
 * instead of waiting for a start that keeps failing. */
void iso_fail_queue(iso_plugin *pl)
{
    while (!list_empty(&pl->queue)) {
        iso_call_t *c = LIST_OWNER(pl->queue.next, iso_call_t, link);
        list_del(&c->link);
        call_fail(c, ISO_CRASHED, "plugin '%s' cannot run: %s", pl->name, pl->why);
    }
    fail_invoke_queue(pl);
}

static void close_conn(helper *h)
{
    iso_t *iso = h->iso;
    if (h->fd >= 0) {
        reactor_del_fd(iso->r, h->fd);
        close(h->fd);
        h->fd = -1;
    }
    if (h->pidfd >= 0) {
        reactor_del_fd(iso->r, h->pidfd);
        close(h->pidfd);
        h->pidfd = -1;
    }
    if (h->deadline) {
        reactor_timer_cancel(iso->r, h->deadline);
        h->deadline = NULL;
    }
    if (h->reap_poll) {
        reactor_timer_cancel(iso->r, h->reap_poll);
        h->reap_poll = NULL;
    }
    iso_reader_free(&h->rd);
    iso_writer_free(&h->wr);
}

void iso_restart_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    helper *h = ud;
    h->restart = NULL;
    iso_spawn(h);
}

static void handle_frame(helper *h, const char *data, size_t len);

/* The process is gone (STATUS from waitpid): answers its call, then
 * schedules the restart. */
void iso_reaped(helper *h, int status)
{
    iso_t *iso = h->iso;
    iso_plugin *pl = h->pl;
    char how[128];
    bool was_starting = !h->was_ready;
    h->state = H_EXITING; /* calls the answers' callbacks start go elsewhere */
    /* an answer written just before the end still counts */
    if (h->fd >= 0) {
        const char *data;
        size_t len;
        while (iso_reader_fill(&h->rd, h->fd) > 0)
            ;
        while (h->fd >= 0 && iso_reader_next(&h->rd, &data, &len) == 1)
            handle_frame(h, data, len);
    }
    close_conn(h);
    h->pid = 0;
    h->state = H_DOWN;
    iso_describe_status(status, how, sizeof how);
    uint64_t now = reactor_now_us(iso->r);
    uint64_t delay_ms = 0;
    if (!h->killed_for) {
        pl->st.crashes++;
        h->backoff_ms = now - h->started_us >= HEALTHY_US || !h->backoff_ms
                            ? BACKOFF_FIRST_MS
                            : (h->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : h->backoff_ms * 2);
        delay_ms = h->backoff_ms;
        if (was_starting && !pl->why[0])
            snprintf(pl->why, sizeof pl->why, "its helper %s before it was ready", how);
        else if (!was_starting)
            snprintf(pl->why, sizeof pl->why, "its helper %s", how);
    }
    if (h->call) {
        iso_call_t *c = h->call;
        h->call = NULL;
        if (c->given_up)
            call_free(c); /* answered (or dropped) when it was given up on */
        else
            call_fail(c, ISO_CRASHED, "plugin '%s' crashed in %s: its helper %s", pl->name, c->fn,
                      how);
    }
    iso_fail_invokes(h, how);
    if (h->killed_for)
        LOG(iso, LOOM_LOG_INFO,
            json_pack("{s:s, s:i, s:s}", "plugin", pl->name, "helper", h->index, "reason", h->killed_for),
            "plugin %s helper %d stopped (%s): restarting it", pl->name, h->index, h->killed_for);
    else
        LOG(iso, LOOM_LOG_ERROR,
            json_pack("{s:s, s:i, s:s, s:I}", "plugin", pl->name, "helper", h->index, "status", how,
                      "restart_ms", (json_int_t)delay_ms),
            "plugin %s helper %d %s%s: restarting it in %llu ms", pl->name, h->index, how,
            was_starting ? " before it was ready" : "", (unsigned long long)delay_ms);
    h->killed_for = NULL;
    if (was_starting) {
        pl->start_failed = true;
        if (!iso_any_ready(pl))
            iso_fail_queue(pl);
    }
    iso_dispatch_invokes(pl);
    if (!(h->restart = reactor_timer_add(iso->r, delay_ms * REACTOR_MSEC, iso_restart_fired, h)))
        LOG(iso, LOOM_LOG_ERROR, NULL, "plugin %s helper %d: out of memory: not restarted",
            pl->name, h->index);
    dispatch(pl);
}

/* Queues MSG (stolen) for H. 0, or a negative errno (nothing queued). */
static int queue_frame(helper *h, json_t *msg)
{
    int rc = msg ? iso_writer_add_json(&h->wr, msg) : -ENOMEM;
    json_decref(msg);
    return rc;
}

/* Writes what H has queued, as far as its socket takes it now; the rest
 * goes when it is writable. A broken socket kills the helper (its call
 * then fails as a crash once it is reaped). */
static void flush_out(helper *h)
{
    if (h->fd < 0 || h->state == H_EXITING)
        return;
    int rc = iso_writer_flush(&h->wr, h->fd);
    if (rc == 1)
        reactor_mod_fd(h->iso->r, h->fd, REACTOR_READ | REACTOR_WRITE);
    else if (rc < 0)
        iso_helper_kill(h, NULL);
}

/* Drops C's done callback and tells H to stop running it; H stays busy
 * with it until it answers or ISO_CANCEL_GRACE_MS ends (then it is killed,
 * for WHY, static text). */
static void give_up(helper *h, iso_call_t *c, const char *why)
{
    iso_t *iso = h->iso;
    c->given_up = why;
    c->done = NULL;
    c->ud = NULL;
    c->given_up_us = reactor_now_us(iso->r);
    h->pl->st.cancels++;
    if (h->state == H_EXITING || h->fd < 0)
        return; /* already on its way out: reaping frees C */
    if (h->deadline)
        reactor_timer_cancel(iso->r, h->deadline);
    h->deadline = reactor_timer_add(iso->r, (uint64_t)ISO_CANCEL_GRACE_MS * REACTOR_MSEC,
                                    iso_deadline_fired, h);
    if (queue_frame(h, json_pack("{s:I}", "cancel", (json_int_t)c->id)) < 0 || !h->deadline)
        iso_helper_kill(h, why); /* it cannot be told, or cannot be timed */
    else
        flush_out(h);
}

void iso_send_init(helper *h)
{
    json_t *cfg = h->pl->config ? json_incref(h->pl->config) : json_null();
    if (queue_frame(h, json_pack("{s:o}", "init", cfg)) < 0) {
        snprintf(h->pl->why, sizeof h->pl->why, "out of memory sending its configuration");
        iso_helper_kill(h, NULL);
        return;
    }
    iso_send_instances(h);
}

void iso_deadline_fired(reactor_t *r, reactor_timer_t *t, void *ud)
{
    helper *h = ud;
    iso_t *iso = h->iso;
    h->deadline = NULL;
    if (h->state == H_STARTING) {
        snprintf(h->pl->why, sizeof h->pl->why, "its helper was not ready within %llu ms",
                 (unsigned long long)h->pl->lim.timeout_ms);
        iso_helper_kill(h, NULL); /* a failed start: backoff */
        return;
    }
    iso_call_t *c = h->call;
    if (!c)
        return;
    if (c->given_up) { /* the grace is over */
        h->pl->st.grace_kills++;
        LOG(iso, LOOM_LOG_WARN,
            json_pack("{s:s, s:s, s:s, s:i}", "plugin", h->pl->name, "lambda", c->fn, "reason",
                      c->given_up, "grace_ms", ISO_CANCEL_GRACE_MS),
            "plugin %s: %s did not return within %d ms of being given up on (%s): killing its "
            "helper %d", h->pl->name, c->fn, ISO_CANCEL_GRACE_MS, c->given_up, h->index);
        iso_helper_kill(h, c->given_up);
        return;
    }
    h->pl->st.timeouts++;
    LOG(iso, LOOM_LOG_WARN,
        json_pack("{s:s, s:s, s:I}", "plugin", h->pl->name, "lambda", c->fn, "timeout_ms",
                  (json_int_t)h->pl->lim.timeout_ms),
        "plugin %s: %s ran past its timeout of %llu ms: cancelling it in its helper %d", h->pl->name,
        c->fn, (unsigned long long)h->pl->lim.timeout_ms, h->index);
    iso_done_fn done = c->done;
    void *done_ud = c->ud;
    char msg[256];
    snprintf(msg, sizeof msg, "%s ran past the isolated plugin's timeout of %llu ms", c->fn,
             (unsigned long long)h->pl->lim.timeout_ms);
    give_up(h, c, "timeout");
    iso_result res = { .status = ISO_TIMEOUT, .message = msg };
    done(done_ud, &res);
}

static void on_ready(helper *h)
{
    if (h->state != H_STARTING)
        return;
    h->state = H_READY;
    h->was_ready = true;
    h->pl->start_failed = false;
    h->pl->why[0] = '\0';
    if (h->deadline) {
        reactor_timer_cancel(h->iso->r, h->deadline);
        h->deadline = NULL;
    }
    LOG(h->iso, LOOM_LOG_INFO,
        json_pack("{s:s, s:i, s:i}", "plugin", h->pl->name, "helper", h->index, "pid", (int)h->pid),
        "plugin %s helper %d ready (pid %d)", h->pl->name, h->index, (int)h->pid);
    dispatch(h->pl);
    iso_dispatch_invokes(h->pl);
}

static void on_answer(helper *h, json_t *msg)
{
    iso_call_t *c = h->call;
    json_t *id = json_object_get(msg, "id");
    if (h->state == H_EXITING && !c)
        return; /* the answer of a call given up on */
    if (!c || !json_is_integer(id) || (uint64_t)json_integer_value(id) != c->id) {
        iso_helper_kill(h, NULL);
        snprintf(h->pl->why, sizeof h->pl->why, "its helper answered a call it was not given");
        return;
    }
    h->call = NULL;
    if (h->deadline) {
        reactor_timer_cancel(h->iso->r, h->deadline);
        h->deadline = NULL;
    }
    iso_plugin *pl = h->pl;
    if (c->given_up) {
        LOG(h->iso, LOOM_LOG_INFO,
            json_pack("{s:s, s:s, s:s, s:i}", "plugin", pl->name, "lambda", c->fn, "reason",
                      c->given_up, "helper", h->index),
            "plugin %s: %s returned %llu ms after it was given up on (%s): helper %d kept",
            pl->name, c->fn,
            (unsigned long long)((reactor_now_us(h->iso->r) - c->given_up_us) / REACTOR_MSEC),
            c->given_up, h->index);
        call_free(c);
        dispatch(pl);
        return;
    }
    json_t *out = json_object_get(msg, "output");
    iso_result res = { .status = ISO_OK };
    if (out) {
        res.output = json_incref(out);
    } else {
        json_t *err = json_object_get(msg, "error");
        res.status = ISO_FAILED;
        res.code = json_string_value(json_object_get(err, "code"));
        res.message = json_string_value(json_object_get(err, "message"));
        if (!res.code)
            res.code = "lambda_failed";
        if (!res.message)
            res.message = "failed";
    }
    call_end(c, &res);
    dispatch(pl); /* the callback may have queued or dispatched already */
}

static void handle_frame(helper *h, const char *data, size_t len)
{
    iso_t *iso = h->iso;
    json_error_t je;
    json_t *msg = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    json_t *v;
    if (!json_is_object(msg)) {
        snprintf(h->pl->why, sizeof h->pl->why, "its helper sent a malformed message");
        iso_helper_kill(h, NULL);
    } else if (json_object_get(msg, "invoke_id")) {
        iso_on_invoke_answer(h, msg);
    } else if (json_object_get(msg, "id")) {
        on_answer(h, msg);
    } else if ((v = json_object_get(msg, "log"))) {
        json_int_t lvl = json_integer_value(v);
        if (lvl < LOOM_LOG_WARN) /* a plugin's line is never an error of loomd's */
            lvl = LOOM_LOG_WARN;
        if (lvl > LOOM_LOG_DEBUG)
            lvl = LOOM_LOG_DEBUG;
        const char *text = json_string_value(json_object_get(msg, "message"));
        LOG(iso, (int)lvl, json_pack("{s:s, s:i}", "plugin", h->pl->name, "helper", h->index),
            "plugin %s: %s", h->pl->name, text ? text : "");
    } else if (json_object_get(msg, "ready")) {
        on_ready(h);
    } else if ((v = json_object_get(msg, "fatal"))) {
        snprintf(h->pl->why, sizeof h->pl->why, "%s", json_string_value(v) ?: "cannot load");
        LOG(iso, LOOM_LOG_ERROR, json_pack("{s:s, s:s}", "plugin", h->pl->name, "path", h->pl->path),
            "plugin %s helper %d cannot start: %s", h->pl->name, h->index, h->pl->why);
    }
    json_decref(msg);
}

void iso_on_fd(reactor_t *r, int fd, int events, void *ud)
{
    helper *h = ud;
    if (events & REACTOR_WRITE) {
        int rc = iso_writer_flush(&h->wr, h->fd);
        if (rc == 0)
            reactor_mod_fd(r, h->fd, REACTOR_READ);
        else if (rc < 0) {
            iso_helper_kill(h, NULL);
            return;
        }
    }
    if (!(events & (REACTOR_READ | REACTOR_ERROR)))
        return;
    ssize_t n = iso_reader_fill(&h->rd, h->fd);
    if (n == -EAGAIN)
        return;
    const char *data;
    size_t len;
    int rc;
    while (h->fd >= 0 && h->state != H_EXITING && (rc = iso_reader_next(&h->rd, &data, &len)) == 1)
        handle_frame(h, data, len);
    if (n <= 0 || rc < 0) { /* EOF, an error, or a frame too large */
        if (rc < 0)
            snprintf(h->pl->why, sizeof h->pl->why, "its helper sent a frame too large");
        iso_helper_kill(h, NULL);
    }
}

/* Sends C to idle helper H. */
static void send_call(helper *h, iso_call_t *c)
{
    iso_t *iso = h->iso;
    uint64_t deadline = mono_ms() + h->pl->lim.timeout_ms;
    if (c->deadline_ms && c->deadline_ms < deadline)
        deadline = c->deadline_ms;
    int rc = queue_frame(h, json_pack("{s:I, s:s, s:O, s:O, s:I}", "id", (json_int_t)c->id,
                                      "lambda", c->fn, "input", c->input, "args", c->args,
                                      "deadline_ms", (json_int_t)deadline));
    if (rc < 0) {
        call_fail(c, ISO_NOMEM, "cannot send %s to its helper: %s", c->fn, strerror(-rc));
        return;
    }
    h->call = c;
    c->h = h;
    h->pl->st.calls++;
    h->deadline = reactor_timer_add(iso->r, h->pl->lim.timeout_ms * REACTOR_MSEC, iso_deadline_fired, h);
    flush_out(h);
}

static void dispatch(iso_plugin *pl)
{
    for (int i = 0; i < pl->lim.processes && !list_empty(&pl->queue); i++) {
        helper *h = &pl->h[i];
        if (h->state != H_READY || h->call)
            continue;
        iso_call_t *c = LIST_OWNER(pl->queue.next, iso_call_t, link);
        list_del(&c->link);
        send_call(h, c);
    }
}

/* ---- the module */

iso_t *iso_new(reactor_t *r, const char *host, iso_log_fn log, void *ud)
{
    iso_t *iso = calloc(1, sizeof *iso);
    if (!iso)
        return NULL;
    if (!(iso->host = strdup(host))) {
        free(iso);
        errno = ENOMEM;
        return NULL;
    }
    iso->r = r;
    iso->log = log;
    iso->log_ud = ud;
    iso->next_id = 1;
    list_init(&iso->plugins);
    return iso;
}

static iso_plugin *find(const iso_t *iso, const char *name)
{
    for (list_link *l = iso->plugins.next; l != &iso->plugins; l = l->next) {
        iso_plugin *pl = LIST_OWNER(l, iso_plugin, link);
        if (strcmp(pl->name, name) == 0)
            return pl;
    }
    return NULL;
}

int iso_add_plugin(iso_t *iso, const char *name, const char *path, const iso_limits *limits,
                   json_t *config)
{
    if (find(iso, name))
        return -EEXIST;
    if (limits->processes < 1 || limits->processes > 64 || limits->timeout_ms == 0)
        return -EINVAL;
    iso_plugin *pl = calloc(1, sizeof *pl);
    if (!pl)
        return -ENOMEM;
    pl->name = strdup(name);
    pl->path = strdup(path);
    pl->h = calloc((size_t)limits->processes, sizeof *pl->h);
    pl->config = config ? json_deep_copy(config) : NULL;
    if (!pl->name || !pl->path || !pl->h || (config && !pl->config)) {
        json_decref(pl->config);
        free(pl->name);
        free(pl->path);
        free(pl->h);
        free(pl);
        return -ENOMEM;
    }
    pl->lim = *limits;
    list_init(&pl->queue);
    list_init(&pl->invoke_queue);
    list_init(&pl->instances);
    list_add_tail(&iso->plugins, &pl->link);
    for (int i = 0; i < limits->processes; i++) {
        helper *h = &pl->h[i];
        h->iso = iso;
        h->pl = pl;
        h->index = i;
        h->fd = h->pidfd = -1;
        list_init(&h->invokes);
        iso_spawn(h);
    }
    return 0;
}

int iso_reload(iso_t *iso, const char *name, json_t *config)
{
    iso_plugin *pl = find(iso, name);
    if (!pl)
        return -ENOENT;
    json_t *copy = config ? json_deep_copy(config) : NULL;
    if (config && !copy)
        return -ENOMEM;
    json_decref(pl->config);
    pl->config = copy;
    for (int i = 0; i < pl->lim.processes; i++) {
        helper *h = &pl->h[i];
        /* a helper that is down or exiting starts again with the new init */
        if (h->fd < 0 || (h->state != H_STARTING && h->state != H_READY))
            continue;
        json_t *cfg = copy ? json_incref(copy) : json_null();
        if (queue_frame(h, json_pack("{s:o}", "reload", cfg)) < 0) {
            /* it would keep the old configuration: a restart gives it the new */
            snprintf(pl->why, sizeof pl->why, "out of memory sending its new configuration");
            iso_helper_kill(h, "reload");
            continue;
        }
        flush_out(h);
    }
    return 0;
}

const char *iso_nth_plugin(const iso_t *iso, size_t i)
{
    for (list_link *l = iso->plugins.next; l != &iso->plugins; l = l->next)
        if (i-- == 0)
            return LIST_OWNER(l, iso_plugin, link)->name;
    return NULL;
}

bool iso_isolated(const iso_t *iso, const char *name)
{
    return iso && find(iso, name) != NULL;
}

iso_call_t *iso_call(iso_t *iso, const char *plugin, const char *fn, json_t *input, json_t *args,
                     uint64_t deadline_ms, iso_done_fn done, void *ud)
{
    iso_plugin *pl = find(iso, plugin);
    iso_call_t *c = calloc(1, sizeof *c);
    if (!pl || !c || !(c->fn = strdup(fn))) {
        free(c);
        return NULL;
    }
    c->iso = iso;
    c->pl = pl;
    c->id = iso->next_id++;
    c->input = json_incref(input);
    c->args = json_incref(args);
    c->deadline_ms = deadline_ms;
    c->done = done;
    c->ud = ud;
    list_init(&c->link);
    if (pl->start_failed && !iso_any_ready(pl)) {
        c->later_status = ISO_CRASHED;
        if (!(c->later = reactor_timer_add(iso->r, 0, later_fired, c))) {
            call_free(c);
            return NULL;
        }
        return c;
    }
    list_add_tail(&pl->queue, &c->link);
    dispatch(pl);
    return c;
}

void iso_cancel(iso_t *iso, iso_call_t *c)
{
    if (c->h) {
        if (!c->given_up)
            give_up(c->h, c, "cancelled call");
        return; /* the helper holds it until it answers or is killed */
    }
    list_del(&c->link);
    call_free(c);
}

static void sum_stats(iso_stats *to, const iso_stats *from)
{
    to->calls += from->calls;
    to->crashes += from->crashes;
    to->timeouts += from->timeouts;
    to->cancels += from->cancels;
    to->grace_kills += from->grace_kills;
    to->restarts += from->restarts;
    to->invokes += from->invokes;
}

static size_t ready_count(const iso_plugin *pl)
{
    size_t n = 0;
    for (int i = 0; i < pl->lim.processes; i++)
        n += pl->h[i].state == H_READY;
    return n;
}

void iso_get_stats(const iso_t *iso, iso_stats *out)
{
    memset(out, 0, sizeof *out);
    for (list_link *l = iso->plugins.next; l != &iso->plugins; l = l->next) {
        iso_plugin *pl = LIST_OWNER(l, iso_plugin, link);
        sum_stats(out, &pl->st);
        out->helpers_ready += ready_count(pl);
    }
}

json_t *iso_stats_json(const iso_t *iso)
{
    json_t *o = json_object();
    if (!o || !iso)
        return o;
    for (list_link *l = iso->plugins.next; l != &iso->plugins; l = l->next) {
        iso_plugin *pl = LIST_OWNER(l, iso_plugin, link);
        json_t *p = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I}", "calls",
                              (json_int_t)pl->st.calls, "invokes", (json_int_t)pl->st.invokes,
                              "crashes", (json_int_t)pl->st.crashes,
                              "timeouts", (json_int_t)pl->st.timeouts, "cancels",
                              (json_int_t)pl->st.cancels, "grace_kills",
                              (json_int_t)pl->st.grace_kills, "restarts",
                              (json_int_t)pl->st.restarts, "helpers", pl->lim.processes,
                              "helpers_ready", (json_int_t)ready_count(pl));
        if (!p || json_object_set_new(o, pl->name, p) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

void iso_free(iso_t *iso)
{
    if (!iso)
        return;
    while (!list_empty(&iso->plugins)) {
        iso_plugin *pl = LIST_OWNER(iso->plugins.next, iso_plugin, link);
        list_del(&pl->link);
        for (int i = 0; i < pl->lim.processes; i++) {
            helper *h = &pl->h[i];
            if (h->pid) {
                kill(h->pid, SIGKILL);
                while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
                    ;
            }
            close_conn(h);
            if (h->restart)
                reactor_timer_cancel(iso->r, h->restart);
            if (h->call)
                call_free(h->call);
        }
        while (!list_empty(&pl->queue)) {
            iso_call_t *c = LIST_OWNER(pl->queue.next, iso_call_t, link);
            list_del(&c->link);
            call_free(c);
        }
        iso_invokes_free(pl);
        json_decref(pl->config);
        free(pl->h);
        free(pl->name);
        free(pl->path);
        free(pl);
    }
    free(iso->host);
    free(iso);
}

/* ---- invoke providers' calls */

static void inv_free(iso_invoke_t *v)
{
    if (v->timer)
        reactor_timer_cancel(v->inst->iso->r, v->timer);
    json_decref(v->req);
    free(v);
}

static void inv_end(iso_invoke_t *v, iso_invoke_result *res)
{
    iso_invoke_done_fn done = v->done;
    void *ud = v->ud;
    inv_free(v);
    done(ud, res);
}

static void inv_fail(iso_invoke_t *v, iso_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void inv_fail(iso_invoke_t *v, iso_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    iso_invoke_result res = { .status = st, .usage = { -1, -1, -1, -1 }, .message = msg };
    inv_end(v, &res);
}

/* Takes V, in flight, off its helper. */
static void inv_unlink(iso_invoke_t *v)
{
    list_del(&v->link);
    list_init(&v->link);
    v->h->ninvokes--;
    v->h = NULL;
}

/* Tells H to drop invoke ID (the provider's cancel hook). */
static void send_cancel_invoke(helper *h, uint64_t id)
{
    if (h->fd < 0 || h->state == H_EXITING)
        return;
    if (queue_frame(h, json_pack("{s:I}", "cancel_invoke", (json_int_t)id)) < 0)
        iso_helper_kill(h, "cancelled call"); /* it would finish a call no one waits for */
    else
        flush_out(h);
}

static int send_instance(helper *h, const iso_instance_t *in)
{
    json_t *cfg = in->config ? json_incref(in->config) : json_null();
    return queue_frame(h, json_pack("{s:I, s:s, s:s, s:o}", "instance", (json_int_t)in->id,
                                    "provider", in->provider, "name", in->name, "config", cfg));
}

void iso_send_instances(helper *h)
{
    for (list_link *l = h->pl->instances.next; l != &h->pl->instances; l = l->next)
        if (send_instance(h, LIST_OWNER(l, iso_instance_t, link)) < 0) {
            snprintf(h->pl->why, sizeof h->pl->why, "out of memory sending its provider instances");
            iso_helper_kill(h, NULL);
            return;
        }
    flush_out(h);
}

/* Whether H has read its init and can be sent more (a frame for a helper
 * that is down or exiting is never sent: its next start gets everything). */
static bool reachable(const helper *h)
{
    return h->fd >= 0 && (h->state == H_STARTING || h->state == H_READY);
}

iso_instance_t *iso_instance_new(iso_t *iso, const char *plugin, const char *provider,
                                 const char *name, json_t *config)
{
    iso_plugin *pl = find(iso, plugin);
    if (!pl) {
        errno = ENOENT;
        return NULL;
    }
    iso_instance_t *in = calloc(1, sizeof *in);
    if (!in || !(in->provider = strdup(provider)) || !(in->name = strdup(name)) ||
        (config && !(in->config = json_deep_copy(config)))) {
        if (in) {
            free(in->provider);
            free(in->name);
        }
        free(in);
        errno = ENOMEM;
        return NULL;
    }
    in->iso = iso;
    in->pl = pl;
    in->id = iso->next_id++;
    list_add_tail(&pl->instances, &in->link);
    for (int i = 0; i < pl->lim.processes; i++) {
        helper *h = &pl->h[i];
        if (!reachable(h))
            continue;
        if (send_instance(h, in) < 0)
            iso_helper_kill(h, "instance"); /* its restart makes it */
        else
            flush_out(h);
    }
    return in;
}

void iso_instance_free(iso_instance_t *in)
{
    if (!in)
        return;
    iso_plugin *pl = in->pl;
    for (int i = 0; i < pl->lim.processes; i++) {
        helper *h = &pl->h[i];
        if (!reachable(h))
            continue;
        if (queue_frame(h, json_pack("{s:I}", "instance_end", (json_int_t)in->id)) < 0)
            iso_helper_kill(h, "instance"); /* it would keep an instance no one uses */
        else
            flush_out(h);
    }
    list_del(&in->link);
    json_decref(in->config);
    free(in->provider);
    free(in->name);
    free(in);
}

static void inv_timeout(reactor_t *r, reactor_timer_t *t, void *ud)
{
    iso_invoke_t *v = ud;
    helper *h = v->h;
    iso_plugin *pl = v->inst->pl;
    v->timer = NULL;
    inv_unlink(v);
    pl->st.timeouts++;
    pl->st.cancels++;
    send_cancel_invoke(h, v->id);
    LOG(v->inst->iso, LOOM_LOG_WARN,
        json_pack("{s:s, s:s, s:I}", "plugin", pl->name, "provider", v->inst->name, "timeout_ms",
                  (json_int_t)pl->lim.timeout_ms),
        "plugin %s: a call of provider %s ran past its timeout of %llu ms: cancelled in its "
        "helper %d", pl->name, v->inst->name, (unsigned long long)pl->lim.timeout_ms, h->index);
    inv_fail(v, ISO_TIMEOUT, "provider %s ran past the isolated plugin's timeout of %llu ms",
             v->inst->name, (unsigned long long)pl->lim.timeout_ms);
}

static void inv_later(reactor_t *r, reactor_timer_t *t, void *ud)
{
    iso_invoke_t *v = ud;
    v->timer = NULL;
    inv_fail(v, ISO_CRASHED, "plugin '%s' cannot run: %s", v->inst->pl->name, v->inst->pl->why);
}

static void send_invoke(helper *h, iso_invoke_t *v)
{
    iso_plugin *pl = h->pl;
    uint64_t deadline = mono_ms() + pl->lim.timeout_ms;
    if (v->deadline_ms && v->deadline_ms < deadline)
        deadline = v->deadline_ms;
    int rc = queue_frame(h, json_pack("{s:I, s:I, s:O, s:I}", "invoke_id", (json_int_t)v->id,
                                      "instance", (json_int_t)v->inst->id, "request", v->req,
                                      "deadline_ms", (json_int_t)deadline));
    if (rc < 0) {
        inv_fail(v, ISO_NOMEM, "cannot send a call of %s to its helper: %s", v->inst->name,
                 strerror(-rc));
        return;
    }
    v->h = h;
    list_add_tail(&h->invokes, &v->link);
    h->ninvokes++;
    pl->st.invokes++;
    v->timer = reactor_timer_add(h->iso->r, pl->lim.timeout_ms * REACTOR_MSEC, inv_timeout, v);
    flush_out(h);
}

/* To the ready helper with the least work: its invoke calls, and its
 * lambda call, which holds its main loop. */
void iso_dispatch_invokes(iso_plugin *pl)
{
    while (!list_empty(&pl->invoke_queue)) {
        helper *best = NULL;
        size_t best_load = 0;
        for (int i = 0; i < pl->lim.processes; i++) {
            helper *h = &pl->h[i];
            size_t load = h->ninvokes + (h->call ? 1 : 0);
            if (h->state == H_READY && (!best || load < best_load)) {
                best = h;
                best_load = load;
            }
        }
        if (!best)
            return;
        iso_invoke_t *v = LIST_OWNER(pl->invoke_queue.next, iso_invoke_t, link);
        list_del(&v->link);
        list_init(&v->link);
        send_invoke(best, v);
    }
}

static void fail_invoke_queue(iso_plugin *pl)
{
    while (!list_empty(&pl->invoke_queue)) {
        iso_invoke_t *v = LIST_OWNER(pl->invoke_queue.next, iso_invoke_t, link);
        list_del(&v->link);
        inv_fail(v, ISO_CRASHED, "plugin '%s' cannot run: %s", pl->name, pl->why);
    }
}

void iso_fail_invokes(helper *h, const char *how)
{
    while (!list_empty(&h->invokes)) {
        iso_invoke_t *v = LIST_OWNER(h->invokes.next, iso_invoke_t, link);
        inv_unlink(v);
        inv_fail(v, ISO_CRASHED, "plugin '%s' crashed in provider %s: its helper %s",
                 v->inst->pl->name, v->inst->name, how);
    }
}

void iso_on_invoke_answer(helper *h, json_t *msg)
{
    json_t *idv = json_object_get(msg, "invoke_id");
    uint64_t id = json_is_integer(idv) ? (uint64_t)json_integer_value(idv) : 0;
    iso_invoke_t *v = NULL;
    for (list_link *l = h->invokes.next; l != &h->invokes; l = l->next)
        if (LIST_OWNER(l, iso_invoke_t, link)->id == id) {
            v = LIST_OWNER(l, iso_invoke_t, link);
            break;
        }
    if (!v)
        return; /* given up on (timeout, cancel) before its answer came */
    inv_unlink(v);
    iso_invoke_result res = { .status = ISO_OK, .usage = { -1, -1, -1, -1 } };
    json_t *out = json_object_get(msg, "output");
    if (out) {
        json_t *u = json_object_get(msg, "usage");
        res.output = json_incref(out);
        json_t *tc = json_object_get(msg, "tool_calls");
        res.tool_calls = json_is_array(tc) ? json_incref(tc) : NULL;
        if (json_is_integer(json_object_get(u, "input_tokens")))
            res.usage.input_tokens = json_integer_value(json_object_get(u, "input_tokens"));
        if (json_is_integer(json_object_get(u, "output_tokens")))
            res.usage.output_tokens = json_integer_value(json_object_get(u, "output_tokens"));
        if (json_is_integer(json_object_get(u, "cache_read_tokens")))
            res.usage.cache_read_tokens = json_integer_value(json_object_get(u, "cache_read_tokens"));
        if (json_is_integer(json_object_get(u, "cache_write_tokens")))
            res.usage.cache_write_tokens =
                json_integer_value(json_object_get(u, "cache_write_tokens"));
    } else {
        json_t *err = json_object_get(msg, "error");
        json_t *ra = json_object_get(err, "retry_after_ms");
        res.status = ISO_FAILED;
        res.code = json_string_value(json_object_get(err, "code"));
        res.message = json_string_value(json_object_get(err, "message"));
        res.retry_after_ms = json_is_integer(ra) && json_integer_value(ra) > 0
                                 ? (uint64_t)json_integer_value(ra) : 0;
        if (!res.code)
            res.code = "upstream";
        if (!res.message)
            res.message = "failed";
    }
    inv_end(v, &res);
}

iso_invoke_t *iso_invoke(iso_instance_t *in, const loom_request *req, uint64_t deadline_ms,
                         iso_invoke_done_fn done, void *ud)
{
    iso_plugin *pl = in->pl;
    iso_invoke_t *v = calloc(1, sizeof *v);
    if (!v || !(v->req = iso_request_to_json(req))) {
        free(v);
        return NULL;
    }
    v->inst = in;
    v->id = in->iso->next_id++;
    v->deadline_ms = deadline_ms;
    v->done = done;
    v->ud = ud;
    list_init(&v->link);
    if (pl->start_failed && !iso_any_ready(pl)) {
        if (!(v->timer = reactor_timer_add(in->iso->r, 0, inv_later, v))) {
            inv_free(v);
            return NULL;
        }
        return v;
    }
    list_add_tail(&pl->invoke_queue, &v->link);
    iso_dispatch_invokes(pl);
    return v;
}

void iso_invoke_cancel(iso_invoke_t *v)
{
    if (v->h) {
        helper *h = v->h;
        inv_unlink(v);
        v->inst->pl->st.cancels++;
        send_cancel_invoke(h, v->id);
    } else {
        list_del(&v->link); /* queued, or an answer on a later pass: its timer goes below */
    }
    inv_free(v);
}

void iso_invokes_free(iso_plugin *pl)
{
    for (int i = 0; i < pl->lim.processes; i++)
        while (!list_empty(&pl->h[i].invokes)) {
            iso_invoke_t *v = LIST_OWNER(pl->h[i].invokes.next, iso_invoke_t, link);
            list_del(&v->link);
            inv_free(v);
        }
    while (!list_empty(&pl->invoke_queue)) {
        iso_invoke_t *v = LIST_OWNER(pl->invoke_queue.next, iso_invoke_t, link);
        list_del(&v->link);
        inv_free(v);
    }
    while (!list_empty(&pl->instances)) {
        iso_instance_t *in = LIST_OWNER(pl->instances.next, iso_instance_t, link);
        list_del(&in->link);
        json_decref(in->config);
        free(in->provider);
        free(in->name);
        free(in);
    }
}
