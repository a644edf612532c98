/* pool.c -- worker threads fed from one FIFO, completions handed back to the
 * reactor thread.
 *
 * One mutex guards both queues: the pending FIFO the workers take from, and
 * the done list of a reactor hand-back (reactor.h), which delivers finished
 * items in batches through one embedded post: a burst of finished items
 * costs one wakeup, and handing a result back never allocates, so it cannot
 * fail. Lock order is pool, then the reactor's post lock. Worker threads
 * block every signal so that signals reach the daemon's own thread, except
 * the synchronous crash signals, which the crash handlers must see
 * (inflight.h), on an alternate stack of their own. */
#include "daemon/core/pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/containers.h"
#include "daemon/core/inflight.h"

#define POOL_MAX_THREADS 1024

enum pool_state { POOL_PENDING, POOL_RUNNING, POOL_DONE };

struct pool_work {
    list_link link;       /* in PENDING, RUNNING or DONE */
    const char *label;    /* borrowed from ud, for pool_stop's report */
    pool_work_fn work;
    pool_done_fn done;
    void *ud;
    int status;
    enum pool_state state;
};

struct pool {
    pthread_t *threads;
    int nthreads;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* signalled when work arrives or the pool stops */
    list_link pending;    /* pool_work_t.link, in submission order */
    list_link running;    /* pool_work_t.link of items inside their work_fn */
    pthread_cond_t quit;  /* signalled as each worker leaves */
    int nquit;            /* workers that left their loop */
    bool joined;          /* every thread was joined */
    reactor_handback_t done;
    bool stopping;
};

/* Moves W to the done list, from which it reaches the reactor thread. Called
 * with the lock held. */
static void pool_finish_locked(pool_t *p, pool_work_t *w, int status)
{
    if (w->state == POOL_RUNNING)
        list_del(&w->link);
    w->status = status;
    w->state = POOL_DONE;
    reactor_handback_add_locked(&p->done, &w->link);
}

/* Calls the done_fn of every item in L, in order, and frees them. */
static void pool_deliver_list(list_link *l, void *ud)
{
    (void)ud;
    LIST_EACH_SAFE(it, nx, l) {
        pool_work_t *w = LIST_OWNER(it, pool_work_t, link);
        list_del(it);
        w->done(w->ud, w->status);
        free(w);
    }
}

static void *pool_worker(void *arg)
{
    pool_t *p = arg;
    /* work items run plugin code: a crash in one must reach the crash
     * handlers (inflight.h), which a blocked SIGSEGV never does */
    void *alt = inflight_thread_init();
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && list_empty(&p->pending))
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stopping)
            break;
        pool_work_t *w = LIST_OWNER(list_first(&p->pending), pool_work_t, link);
        list_del(&w->link);
        w->state = POOL_RUNNING;
        list_add_tail(&p->running, &w->link);
        pthread_mutex_unlock(&p->lock);
        w->work(w->ud);
        pthread_mutex_lock(&p->lock);
        pool_finish_locked(p, w, 0);
    }
    p->nquit++;
    pthread_cond_broadcast(&p->quit);
    pthread_mutex_unlock(&p->lock);
    inflight_thread_fini(alt);
    return NULL;
}

/* Tells the first N threads to stop and waits for them. */
static void pool_join(pool_t *p, int n)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);
}

pool_t *pool_new(reactor_t *r, int nthreads)
{
    int err = 0, started = 0;
    bool lock_ready = false, cond_ready = false, quit_ready = false;
    sigset_t all, old;
    if (!r || nthreads < 0 || nthreads > POOL_MAX_THREADS) {
        errno = EINVAL;
        return NULL;
    }
    if (nthreads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cores < 1 ? 1 : cores > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int)cores;
    }
    pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    list_init(&p->pending);
    list_init(&p->running);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) {
        err = ENOMEM;
        goto fail;
    }
    if ((err = pthread_mutex_init(&p->lock, NULL)))
        goto fail;
    lock_ready = true;
    reactor_handback_init(&p->done, r, &p->lock, pool_deliver_list, p);
    if ((err = pthread_cond_init(&p->wake, NULL)))
        goto fail;
    cond_ready = true;
    pthread_condattr_t ca;
    if ((err = pthread_condattr_init(&ca)))
        goto fail;
    err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!err)
        err = pthread_cond_init(&p->quit, &ca);
    pthread_condattr_destroy(&ca);
    if (err)
        goto fail;
    quit_ready = true;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; started < nthreads; started++) {
        if ((err = pthread_create(&p->threads[started], NULL, pool_worker, p)))
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        goto fail;
    p->nthreads = nthreads;
    return p;
fail:
    if (started > 0)
        pool_join(p, started);
    if (quit_ready)
        pthread_cond_destroy(&p->quit);
    if (cond_ready)
        pthread_cond_destroy(&p->wake);
    if (lock_ready)
        pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
    errno = err;
    return NULL;
}

int pool_stop(pool_t *p, int64_t timeout_ms, pool_report_fn report, void *ud)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (timeout_ms < 0)
        timeout_ms = 0;
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    while (p->nquit < p->nthreads)
        if (pthread_cond_timedwait(&p->quit, &p->lock, &until) == ETIMEDOUT)
            break;
    int stuck = p->nthreads - p->nquit;
    if (stuck > 0 && report)
        LIST_EACH_SAFE(l, nx, &p->running) {
            pool_work_t *w = LIST_OWNER(l, pool_work_t, link);
            (void)nx;
            report(ud, w->label);
        }
    pthread_mutex_unlock(&p->lock);
    if (stuck > 0)
        return stuck;
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->joined = true;
    return 0;
}

void pool_label(pool_t *p, pool_work_t *w, const char *label)
{
    pthread_mutex_lock(&p->lock);
    w->label = label;
    pthread_mutex_unlock(&p->lock);
}

void pool_free(pool_t *p)
{
    if (!p)
        return;
    if (!p->joined)
        pool_join(p, p->nthreads);
    /* No worker is left, so the lists are ours; the lock is still taken
     * because a done_fn below may call pool_submit, which must see STOPPING. */
    list_link batch;
    list_init(&batch);
    pthread_mutex_lock(&p->lock);
    reactor_handback_take_locked(&p->done, &batch);
    LIST_EACH_SAFE(l, nx, &p->pending) {
        pool_work_t *w = LIST_OWNER(l, pool_work_t, link);
        w->status = -ECANCELED;
        w->state = POOL_DONE;
    }
    list_splice_tail(&batch, &p->pending);
    pthread_mutex_unlock(&p->lock);
    pool_deliver_list(&batch, p);

    pthread_cond_destroy(&p->quit);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

int pool_submit(pool_t *p, pool_work_fn work, pool_done_fn done, void *ud, pool_work_t **handle)
{
    if (!p || !work || !done)
        return -EINVAL;
    pool_work_t *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->work = work;
    w->done = done;
    w->ud = ud;
    w->state = POOL_PENDING;
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        free(w);
        return -ESHUTDOWN;
    }
    list_add_tail(&p->pending, &w->link);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    if (handle)
        *handle = w;
    return 0;
}

int pool_cancel(pool_t *p, pool_work_t *w)
{
    if (!p || !w)
        return -EINVAL;
    int rc = -EBUSY;
    pthread_mutex_lock(&p->lock);
    if (w->state == POOL_PENDING) {
        list_del(&w->link);
        pool_finish_locked(p, w, -ECANCELED);
        rc = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int pool_nthreads(const pool_t *p)
{
    return p->nthreads;
}
