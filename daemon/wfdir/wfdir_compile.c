/* wfdir_compile.c -- reading and compiling workflow files, here or on the
 * wfdir's compile thread.
 *
 * Why a thread: a workflow of tens of megabytes takes a second or more to
 * hash and compile, and on the reactor thread that second would stall every
 * socket, timer and provider call of the daemon. The thread owns nothing of
 * the wfdir but its queue: a job carries copies of what it needs, and its
 * result goes back through a reactor handback, where wfdir_deliver applies
 * it only if it is still the file's latest (F->gen), so a newer save always
 * wins over an older compile that finishes later. */
#include "daemon/wfdir/wfdir_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WFDIR_MAX_FILE ((size_t)64 << 20) /* the compiler's own default */

static uint64_t fnv1a(const char *buf, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
    return h;
}


/* Reads PATH into a new NUL-terminated buffer. At most MAX + 1 bytes are
 * read, so the compiler sees the file is too large and says so in its own
 * words. O_NONBLOCK and the fstat keep a FIFO or device put there by mistake
 * from blocking the reactor: anything but a regular file is -EISDIR (a
 * directory) or -EINVAL. */
static int read_workflow(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc;
    struct stat st;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        goto fail;
    }
    /* room for the whole file at once: growing a 50 MB buffer by doubling
     * copies and remaps it a dozen times, and every remap takes the
     * process's memory map lock, which the reactor thread's own page
     * faults and allocations wait on */
    size_t want0 = (size_t)st.st_size < max ? (size_t)st.st_size + 4096 : max + 2;
    if (vec_reserve(&buf, want0, &cap, 1, 8192) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    for (;;) {
        if (cap - n < 4096 && vec_reserve(&buf, n + 4096, &cap, 1, 8192) < 0) {
            rc = -ENOMEM;
            goto fail;
        }
        size_t want = cap - n - 1;
        if (want > max + 1 - n)
            want = max + 1 - n;
        ssize_t k = want ? read(fd, buf + n, want) : 0;
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = -errno;
            goto fail;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    close(fd);
    return rc;
}


size_t wfdir_max_file(const wfdir *w)
{
    return w->copt.max_file_size ? w->copt.max_file_size : WFDIR_MAX_FILE;
}

void wfdir_result_clear(wfdir_result *res)
{
    dsl_graph_unref(res->graph);
    free(res->text);
    free(res->declared);
    memset(res, 0, sizeof *res);
}

void wfdir_work(const char *path, size_t max, const dsl_options *copt, bool hashed,
                uint64_t hash, wfdir_result *out)
{
    char *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    if ((out->rc = read_workflow(path, max, &buf, &len)) < 0)
        return;
    out->hash = fnv1a(buf, len);
    if (hashed && hash == out->hash) {
        /* a save that changed nothing, or a rescan: same bytes, same outcome */
        out->unchanged = true;
        free(buf);
        return;
    }
    dsl_diags d;
    if (dsl_diags_init(&d, path) == 0)
        out->graph = dsl_compile(path, buf, len, copt, &d);
    else
        dsl_error(&d, 0, 0, "out of memory");
    if (!out->graph)
        out->declared = dsl_declared_name(path, buf, len, &copt->limits);
    if (d.n)
        out->text = wfdir_diags_text(&d);
    dsl_diags_free(&d);
    free(buf);
}

dsl_registry *wfdir_registry_dup(const dsl_registry *reg)
{
    /* every list, lambda signature and string in one block, which keeps a
     * NULL (unchecked) list NULL */
    return dsl_registry_dup(reg);
}

static void job_free(wfdir_job *j)
{
    free((void *)j->copt.registry);
    wfdir_result_clear(&j->res);
    free(j->base);
    free(j->path);
    free(j);
}

static void *compile_thread(void *ud)
{
    wfdir *w = ud;
    /* below the reactor: when both want the CPU, sockets and timers win
     * (Linux's nice is per thread); failing to lower it changes nothing */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        list_link *l = NULL;
        while (!w->stopping && !(l = list_first(&w->queue)))
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->stopping)
            break;
        list_del(l);
        wfdir_job *j = LIST_OWNER(l, wfdir_job, link);
        pthread_mutex_unlock(&w->lock);
        wfdir_work(j->path, j->max_file, &j->copt, j->hashed, j->hash, &j->res);
        pthread_mutex_lock(&w->lock);
        reactor_handback_add_locked(&w->done, &j->link);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int wfdir_compiler_init(wfdir *w)
{
    int rc = pthread_mutex_init(&w->lock, NULL);
    if (rc)
        return -rc;
    if ((rc = pthread_cond_init(&w->cond, NULL))) {
        pthread_mutex_destroy(&w->lock);
        return -rc;
    }
    list_init(&w->queue);
    reactor_handback_init(&w->done, w->r, &w->lock, wfdir_deliver, w);
    return 0;
}

void wfdir_compiler_fini(wfdir *w)
{
    list_link left;
    list_init(&left);
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (w->thread_started)
        pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->lock);
    list_splice_tail(&left, &w->queue);
    reactor_handback_take_locked(&w->done, &left);
    pthread_mutex_unlock(&w->lock);
    LIST_EACH_SAFE(l, nx, &left) {
        list_del(l);
        job_free(LIST_OWNER(l, wfdir_job, link));
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

int wfdir_compile_later(wfdir *w, wfdir_file *f)
{
    wfdir_job *j = calloc(1, sizeof *j);
    if (!j || !(j->base = strdup(f->base)) || !(j->path = strdup(f->path))) {
        if (j)
            free(j->base);
        free(j);
        return -ENOMEM;
    }
    if (!w->thread_started) {
        int rc = pthread_create(&w->thread, NULL, compile_thread, w);
        if (rc) {
            job_free(j);
            return -rc;
        }
        w->thread_started = true;
    }
    j->gen = f->gen = ++w->gen_seq;
    j->hashed = f->hashed;
    j->hash = f->hash;
    j->copt = w->copt;
    /* the registry is the daemon's, rebuilt on a reload while this job may
     * still run: the thread gets its own copy */
    if (w->copt.registry && !(j->copt.registry = wfdir_registry_dup(w->copt.registry))) {
        j->copt.registry = NULL;
        job_free(j);
        return -ENOMEM;
    }
    j->max_file = wfdir_max_file(w);
    w->outstanding++;
    pthread_mutex_lock(&w->lock);
    list_add_tail(&w->queue, &j->link);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void wfdir_job_release(wfdir_job *j)
{
    job_free(j);
}
