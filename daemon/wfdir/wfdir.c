/* wfdir.c -- the workflows directory on disk: inotify events, the debounce,
 * scans, and reading and compiling one file. What is then served, and the
 * checks across files, are in wfdir_set.c; the rules are in wfdir.h.
 *
 * The flow: an event (or a scan) only marks a file READY, GONE or WRITING
 * and arms the debounce timer. When the timer fires, `flush` reads the
 * events still queued, reads and compiles every marked file into a waiting
 * ("pending") version, and hands over to wfdir_settle. Marking first and
 * acting later is what lets several events of one save compile once. */
#include "daemon/wfdir/wfdir_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/containers.h"
#include "common/file.h"

#define WFDIR_DEBOUNCE_US (30 * REACTOR_MSEC)
#define WFDIR_RETRY_US (500 * REACTOR_MSEC)
#define WFDIR_MAX_FILE ((size_t)64 << 20) /* the compiler's own default */

/* IN_CREATE only to learn that a file is being written (see on_event);
 * IN_MODIFY never: a write alone says nothing about the file being whole. */
#define WFDIR_WATCH_MASK                                                                   \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF | \
     IN_MOVE_SELF | IN_ONLYDIR)

/* ---- files */

/* Where BASE is, or would be inserted, in the sorted file array. */
static size_t file_pos(const wfdir *w, const char *base, bool *found)
{
    size_t lo = 0, hi = w->nfiles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->files[mid]->base, base);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* The entry of BASE, added when new. NULL when out of memory. */
static wfdir_file *file_get(wfdir *w, const char *base)
{
    bool found;
    size_t at = file_pos(w, base, &found);
    if (found)
        return w->files[at];
    wfdir_file *f = calloc(1, sizeof *f);
    if (!f || !(f->base = strdup(base)) || asprintf(&f->path, "%s/%s", w->dir, base) < 0) {
        if (f)
            f->path = NULL;
        goto fail;
    }
    /* the index of served files gets room for every file now, so that
     * rebuilding it after a swap cannot fail */
    if (vec_reserve(&w->files, w->nfiles, &w->capfiles, sizeof *w->files, 16) < 0 ||
        vec_reserve(&w->index, w->nfiles, &w->capindex, sizeof *w->index, 16) < 0)
        goto fail;
    memmove(w->files + at + 1, w->files + at, (w->nfiles - at) * sizeof *w->files);
    w->files[at] = f;
    w->nfiles++;
    return f;
fail:
    wfdir_file_free(f);
    return NULL;
}

void wfdir_file_free(wfdir_file *f)
{
    if (!f)
        return;
    dsl_graph_unref(f->graph);
    dsl_graph_unref(f->pending);
    free(f->base);
    free(f->path);
    free(f->declared);
    free(f->compile_error);
    free(f->pending_error);
    free(f->check_error);
    free(f);
}

static void replace_text(char **slot, char *text)
{
    free(*slot);
    *slot = text;
}

/* The latest content of F cannot be used: record why (TEXT, owned), drop
 * what was waiting, and say what stays in service. */
static void file_failed(wfdir *w, wfdir_file *f, char *text)
{
    if (!text)
        text = strdup("out of memory while recording the errors");
    wfdir_log_text(w, WFDIR_LOG_ERROR, text);
    replace_text(&f->compile_error, text);
    replace_text(&f->pending_error, NULL);
    dsl_graph_unref(f->pending);
    f->pending = NULL;
    if (f->graph)
        wfdir_logf(w, WFDIR_LOG_ERROR, "%s: note: not loaded; '%s' v%llu (%s) stays in service",
                   f->path, f->graph->name, (unsigned long long)f->version.load,
                   f->version.hash);
}

/* Applies RES, what reading and compiling F's latest content found (its
 * graph and texts are taken): a file that is gone is marked for the settle
 * to drop; otherwise new bytes become F->pending or their errors are
 * recorded. Never touches F->graph: the settle compares the served set
 * before and after. */
void wfdir_apply(wfdir *w, wfdir_file *f, wfdir_result *res)
{
    f->gone = false; /* marked gone by an earlier flush whose settle failed, and back */
    if (res->rc == -ENOENT || res->rc == -ENOTDIR) {
        f->gone = true;
    } else if (res->rc == -EISDIR || res->rc == -EINVAL) {
        wfdir_logf(w, WFDIR_LOG_WARNING, "%s: warning: not a regular file; ignored", f->path);
        f->gone = true;
    } else if (res->rc < 0) {
        /* the same bytes must be compiled once the file is readable again */
        char *text = NULL;
        f->hashed = false;
        if (asprintf(&text, "%s: error: cannot read: %s", f->path, strerror(-res->rc)) < 0)
            text = NULL;
        file_failed(w, f, text);
    } else if (!res->unchanged) {
        f->hash = res->hash;
        f->hashed = true;
        if (res->graph) {
            if (res->text) { /* warnings only: the file is good */
                wfdir_log_text(w, WFDIR_LOG_WARNING, res->text);
                free(res->text);
            }
            dsl_graph_unref(f->pending);
            f->pending = res->graph;
            f->pending_claim = ++w->seq;
            replace_text(&f->declared, strdup(res->graph->name));
            replace_text(&f->compile_error, NULL);
            replace_text(&f->pending_error, NULL);
        } else {
            replace_text(&f->declared, res->declared);
            res->declared = NULL;
            file_failed(w, f, res->text);
        }
        res->graph = NULL;
        res->text = NULL;
    }
    wfdir_result_clear(res);
}

/* Reads and compiles F here and now: the first scan, or when the compile
 * thread cannot take it. */
static void process_file(wfdir *w, wfdir_file *f)
{
    wfdir_result res;
    f->ev = WFDIR_EV_NONE;
    f->gen = ++w->gen_seq; /* a compile still out for F is older: dropped */
    wfdir_work(f->path, wfdir_max_file(w), &w->copt, f->hashed, f->hash, &res);
    wfdir_apply(w, f, &res);
}

/* ---- scans */

/* Marks every workflow file of the directory READY and every known file not
 * there any more GONE, for the flush to act on. Files being written are left
 * to their close. 0, or a negative errno when the directory cannot be read
 * (nothing is marked then: what is served stays). */
static int mark_dir(wfdir *w)
{
    DIR *d = opendir(w->dir);
    if (!d)
        return -errno;
    for (size_t i = 0; i < w->nfiles; i++)
        w->files[i]->seen = false;
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!dsl_is_workflow_file(e->d_name))
            continue;
        wfdir_file *f = file_get(w, e->d_name);
        if (!f) {
            rc = -ENOMEM;
            break;
        }
        f->seen = true;
        if (f->ev != WFDIR_EV_WRITING)
            f->ev = WFDIR_EV_READY;
    }
    if (rc == 0 && errno)
        rc = -errno;
    closedir(d);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < w->nfiles; i++)
        if (!w->files[i]->seen)
            w->files[i]->ev = WFDIR_EV_GONE;
    return 0;
}

/* ---- the watch */

static int rewatch(wfdir *w)
{
    int wd = inotify_add_watch(w->ifd, w->dir, WFDIR_WATCH_MASK);
    if (wd < 0) {
        int err = errno;
        if (!w->watch_lost_logged)
            wfdir_logf(w, WFDIR_LOG_WARNING,
                       "%s: cannot watch the workflows directory: %s; keeping the %zu loaded "
                       "workflow%s and looking for it again every %llu ms",
                       w->dir, strerror(err), w->nindex, w->nindex == 1 ? "" : "s",
                       (unsigned long long)(w->retry_us / REACTOR_MSEC));
        w->watch_lost_logged = true;
        return -err;
    }
    w->wd = wd;
    if (w->watch_lost_logged)
        wfdir_logf(w, WFDIR_LOG_INFO, "%s: the workflows directory is back; rescanning", w->dir);
    w->watch_lost_logged = false;
    return 0;
}

/* The directory was moved, deleted or unmounted: the watch no longer says
 * anything about DIR. A moved directory is still watched where it went, so
 * the watch is removed (an error only means the kernel removed it already). */
static void lose_watch(wfdir *w)
{
    if (w->wd < 0)
        return;
    inotify_rm_watch(w->ifd, w->wd);
    w->wd = -1;
}

static void on_timer(reactor_t *r, reactor_timer_t *t, void *ud);

/* Makes the next flush happen within DELAY_US: a burst of events gets one
 * flush from its first event, never one pushed back by every new event. */
static void schedule(wfdir *w, uint64_t delay_us)
{
    if (w->timer) {
        if (reactor_timer_deadline_us(w->timer) <= reactor_now_us(w->r) + delay_us)
            return;
        reactor_timer_cancel(w->r, w->timer);
    }
    if (!(w->timer = reactor_timer_add(w->r, delay_us, on_timer, w)))
        wfdir_logf(w, WFDIR_LOG_ERROR,
                   "%s: out of memory arming a timer; changes wait for the next event", w->dir);
}

static void on_event(wfdir *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        /* events were lost, so every mark may be wrong, WRITING ones too */
        for (size_t i = 0; i < w->nfiles; i++)
            w->files[i]->ev = WFDIR_EV_NONE;
        wfdir_logf(w, WFDIR_LOG_WARNING,
                   "%s: inotify events were lost (queue overflow); rescanning the directory",
                   w->dir);
        w->rescan_wanted = true;
        schedule(w, w->debounce_us);
        return;
    }
    if (ev->wd != w->wd || w->wd < 0)
        return; /* a watch removed before: its last events are stale */
    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
        lose_watch(w);
        schedule(w, w->debounce_us);
        return;
    }
    if (!ev->len || (ev->mask & IN_ISDIR) || !dsl_is_workflow_file(ev->name))
        return;
    wfdir_ev state;
    if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
        state = WFDIR_EV_READY;
    } else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
        state = WFDIR_EV_GONE;
    } else if (ev->mask & IN_CREATE) {
        /* A new file is whole only once closed, except a symlink or a hard
         * link (ln), which appear whole and are never closed. */
        char *path = NULL;
        struct stat st;
        state = WFDIR_EV_WRITING;
        if (asprintf(&path, "%s/%s", w->dir, ev->name) >= 0 && lstat(path, &st) == 0 &&
            (S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1)))
            state = WFDIR_EV_READY;
        free(path);
    } else {
        return;
    }
    wfdir_file *f = file_get(w, ev->name);
    if (!f) {
        w->rescan_wanted = true; /* the scan will find it */
        schedule(w, w->debounce_us);
        return;
    }
    f->ev = state;
    if (state != WFDIR_EV_WRITING)
        schedule(w, w->debounce_us);
}

/* Reads every queued event. */
static void drain(wfdir *w)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->ifd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN) {
                wfdir_logf(w, WFDIR_LOG_ERROR, "%s: reading inotify events: %s; rescanning",
                           w->dir, strerror(errno));
                w->rescan_wanted = true;
                schedule(w, w->retry_us);
            }
            return;
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            on_event(w, ev);
            p += sizeof *ev + ev->len;
        }
    }
}

static void on_inotify(reactor_t *r, int fd, int events, void *ud)
{
    (void)r;
    (void)fd;
    (void)events;
    drain(ud);
}

/* Acts on every mark: first the events still queued (so a file created since
 * the timer was armed is known to be WRITING before it is looked at), then
 * the watch, a rescan when one is due, each marked file, and the settle.
 * Returns 0, or the error of a rescan that could not read the directory. */
static int flush(wfdir *w, bool async)
{
    int rc = 0, watch_rc = 0;
    w->busy = true;
    drain(w);
    if (w->wd < 0) {
        if ((watch_rc = rewatch(w)) == 0)
            w->rescan_wanted = true;
        else
            schedule(w, w->retry_us);
    }
    if (w->rescan_wanted) {
        rc = w->wd >= 0 ? mark_dir(w) : watch_rc;
        if (rc == 0)
            w->rescan_wanted = false;
        else if (w->wd >= 0)
            wfdir_logf(w, WFDIR_LOG_ERROR, "%s: cannot read the workflows directory: %s",
                       w->dir, strerror(-rc));
    }
    /* in file name order: at start, the first file of two with one name wins */
    for (size_t i = 0; i < w->nfiles; i++) {
        wfdir_file *f = w->files[i];
        if (f->ev != WFDIR_EV_READY && f->ev != WFDIR_EV_GONE)
            continue;
        f->ev = WFDIR_EV_NONE;
        /* a change seen by inotify or a rescan compiles on the compile
         * thread (the settle then runs when the last one is delivered); the
         * first scan, whose caller expects the set settled on return,
         * compiles here */
        if (!async || wfdir_compile_later(w, f) < 0)
            process_file(w, f);
    }
    /* With reads still out, the delivery of the last one settles: what a
     * burst or a rescan changed is swapped in at once, in one round of
     * `changed` in name order, and never from inside wfdir_rescan. */
    if (w->outstanding) {
        w->unsettled = true;
    } else if (wfdir_settle(w) < 0) {
        wfdir_logf(w, WFDIR_LOG_ERROR, "%s: out of memory checking workflows; retrying", w->dir);
        schedule(w, w->retry_us);
    }
    w->busy = false;
    return rc;
}

static void on_timer(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    wfdir *w = ud;
    w->timer = NULL;
    flush(w, true);
}

void wfdir_deliver(list_link *batch, void *ud)
{
    wfdir *w = ud;
    w->busy = true;
    LIST_EACH_SAFE(l, nx, batch) {
        list_del(l);
        wfdir_job *j = LIST_OWNER(l, wfdir_job, link);
        bool found;
        size_t i = file_pos(w, j->base, &found);
        /* only the latest read of a file that is still known counts */
        if (found && w->files[i]->gen == j->gen) {
            wfdir_apply(w, w->files[i], &j->res);
            w->unsettled = true;
        }
        w->outstanding--;
        wfdir_job_release(j);
    }
    if (!w->unsettled || w->outstanding)
        goto out;
    w->unsettled = false;
    if (wfdir_settle(w) < 0) {
        wfdir_logf(w, WFDIR_LOG_ERROR, "%s: out of memory checking workflows; retrying", w->dir);
        schedule(w, w->retry_us);
    }
out:
    w->busy = false;
}

/* Only the directory is read here (names, no contents): every file goes to
 * the compile thread, which hashes it and compiles it only when its bytes
 * changed, so a SIGHUP over a directory holding a 50 MB workflow costs the
 * reactor a readdir, never the compile. */
int wfdir_rescan(wfdir *w)
{
    if (w->busy)
        return -EBUSY;
    w->rescan_wanted = true;
    return flush(w, true);
}

size_t wfdir_compiling(const wfdir *w)
{
    return w->outstanding;
}

/* ---- life */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* DIR must be a directory; created when missing if CREATE. 0 or -errno. */
static int check_dir(const char *dir, bool create, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) < 0 && errno == ENOENT && create) {
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            int e = errno;
            set_err(err, errlen, "cannot create the workflows directory %s: %s", dir, strerror(e));
            return -e;
        }
    }
    if (stat(dir, &st) < 0) {
        int e = errno;
        if (e == ENOENT)
            set_err(err, errlen,
                    "the workflows directory %s does not exist (create it, or set 'workflows:' "
                    "in the config)", dir);
        else
            set_err(err, errlen, "the workflows directory %s: %s", dir, strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "the workflows directory %s is not a directory", dir);
        return -ENOTDIR;
    }
    return 0;
}

wfdir *wfdir_new(reactor_t *r, const char *dir, const dsl_registry *registry,
                 const wfdir_options *opt, const wfdir_callbacks *cb, char *err, size_t errlen)
{
    wfdir_options o = opt ? *opt : (wfdir_options){ 0 };
    wfdir *w = NULL;
    int rc = -EINVAL;
    if (!r || !dir || !*dir) {
        set_err(err, errlen, "no workflows directory given");
        goto fail;
    }
    rc = -ENOMEM;
    set_err(err, errlen, "out of memory");
    if (!(w = calloc(1, sizeof *w)) || !(w->dir = strdup(dir)))
        goto fail;
    /* "dir/" would give "dir//x.yaml" in every message */
    for (size_t n = strlen(w->dir); n > 1 && w->dir[n - 1] == '/'; n--)
        w->dir[n - 1] = 0;
    w->r = r;
    w->ifd = w->wd = -1;
    if ((rc = wfdir_compiler_init(w)) < 0) {
        set_err(err, errlen, "cannot start the workflow compiler: %s", strerror(-rc));
        free(w->dir);
        free(w);
        w = NULL;
        goto fail;
    }
    w->registry = registry;
    w->copt = (dsl_options){ .registry = registry, .limits = o.limits,
                             .max_file_size = o.max_file_size, .read_file = file_read_all };
    if (cb)
        w->cb = *cb;
    w->debounce_us = o.debounce_us ? o.debounce_us : WFDIR_DEBOUNCE_US;
    w->retry_us = o.retry_us ? o.retry_us : WFDIR_RETRY_US;
    if ((rc = check_dir(w->dir, o.create, err, errlen)) < 0)
        goto fail;
    /* Watch before scanning, so nothing changed between the two is missed:
     * an event for a file already scanned only costs a hash. */
    if ((w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0 ||
        (w->wd = inotify_add_watch(w->ifd, w->dir, WFDIR_WATCH_MASK)) < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot watch the workflows directory %s: %s%s", w->dir,
                strerror(-rc),
                rc == -ENOSPC || rc == -EMFILE
                    ? " (raise fs.inotify.max_user_watches / max_user_instances)"
                    : "");
        goto fail;
    }
    if ((rc = reactor_add_fd(r, w->ifd, REACTOR_READ, on_inotify, w)) < 0) {
        set_err(err, errlen, "cannot watch the workflows directory %s: %s", w->dir,
                strerror(-rc));
        goto fail;
    }
    w->rescan_wanted = true;
    if ((rc = flush(w, false)) < 0) {
        set_err(err, errlen, "cannot read the workflows directory %s: %s", w->dir,
                strerror(-rc));
        goto fail;
    }
    return w;
fail:
    wfdir_free(w);
    errno = -rc;
    return NULL;
}

void wfdir_free(wfdir *w)
{
    if (!w)
        return;
    if (w->r) /* its compiler was set up */
        wfdir_compiler_fini(w);
    if (w->timer)
        reactor_timer_cancel(w->r, w->timer);
    if (w->ifd >= 0) {
        reactor_del_fd(w->r, w->ifd); /* -ENOENT when wfdir_new failed before adding it */
        close(w->ifd);
    }
    for (size_t i = 0; i < w->nfiles; i++)
        wfdir_file_free(w->files[i]);
    for (size_t i = 0; i < w->nloads; i++)
        free(w->loads[i].name);
    free(w->files);
    free(w->index);
    free(w->loads);
    free(w->dir);
    free(w);
}

dsl_graph *wfdir_compile_text(const wfdir *w, const char *file, const char *buf, size_t len,
                              char *err, size_t errlen)
{
    dsl_diags d;
    if (dsl_diags_init(&d, file) < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    dsl_graph *g = dsl_compile(file, buf, len, &w->copt, &d);
    if (!g) {
        char *text = dsl_diags_text(&d, NULL);
        size_t n = text ? strcspn(text, "\n") : 0; /* the first error says enough */
        snprintf(err, errlen, "%.*s", (int)n, text ? text : "out of memory");
        free(text);
    }
    dsl_diags_free(&d);
    return g;
}
