/* reactor.c -- the event loop: epoll for descriptors, a binary heap for
 * timers, an eventfd-signalled queue for posts from other threads.
 *
 * Built the way Redis's ae.c is: one small loop that knows nothing of what it
 * serves. Each pass waits once, then dispatches file events, then due timers;
 * a pass busy with descriptors for over REACTOR_SLICE_US fires the due timers
 * in between, so a timer is late by a slice of the pass, not all of it.
 *
 * - Descriptors live in a table indexed by fd. Each registration carries a
 *   generation number, stored next to the fd in the epoll event, so events a
 *   pass has already collected for a descriptor that a callback deleted (and
 *   perhaps closed and registered again under the same number) are dropped
 *   instead of reaching the wrong owner.
 * - Timers sit in a min-heap ordered by (deadline, insertion number), each
 *   timer knowing its slot, so add and cancel are O(log n) at any scale and
 *   equal deadlines fire in insertion order. A pass only fires timers that
 *   existed when it began, which is what keeps a zero-delay timer re-armed
 *   from its own callback from running forever inside one pass.
 * - The wait uses epoll_pwait2 (nanosecond timeout, so a timer is not up to a
 *   millisecond late) and falls back for good to epoll_wait with the timeout
 *   rounded up to the millisecond when the kernel (or valgrind) lacks it.
 * - Posts go through a mutex-protected list. The eventfd is written only when
 *   the queue goes from "nothing signalled" to "something to do", so a burst
 *   of posts costs one wakeup. Entries are popped one at a time so that a
 *   post cancelled by an earlier callback of the same drain never runs. */
#include "daemon/core/reactor.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#define REACTOR_HAVE_EPOLL_PWAIT2 1
#endif

/* Events collected per wait; more ready descriptors wait for the next pass,
 * which level triggering makes safe. */
#define REACTOR_MAX_EVENTS 256
/* A pass that has spent this long on descriptors fires the due timers before
 * it goes on with the rest: under load every pass finds hundreds of ready
 * descriptors (each one a response to read, decode and hand on), and a timer
 * that waited for all of them was late by the whole pass. The clock is read
 * every REACTOR_SLICE_EVENTS events, not after each one. */
#define REACTOR_SLICE_US 2000
#define REACTOR_SLICE_EVENTS 8
/* The epoll tag of the internal wakeup eventfd: no registration has it. */
#define REACTOR_WAKE_TAG UINT64_MAX
/* The index of a timer that is not in the heap (its callback is running). */
#define REACTOR_TIMER_FIRING SIZE_MAX

enum { POST_QUEUED = 1, POST_OWNED = 2 };

typedef struct reactor_fd_slot {
    reactor_fd_cb cb;
    void *ud;
    uint32_t gen;    /* bumped on delete; tags this registration's events */
    int mask;        /* REACTOR_READ|REACTOR_WRITE wanted */
    bool registered;
    bool in_epoll;   /* a quiet (mask 0) registration is kept out of epoll */
} reactor_fd_slot;

struct reactor_timer {
    uint64_t deadline_us;
    uint64_t seq;   /* insertion number: the tie-break for equal deadlines */
    size_t index;   /* slot in the heap, or REACTOR_TIMER_FIRING */
    reactor_timer_cb cb;
    void *ud;
};

struct reactor {
    int epfd;
    int wakefd;
    bool use_pwait2;
    bool in_pass;
    uint64_t now_us;
    atomic_bool stop;

    reactor_fd_slot *fds; /* indexed by fd */
    size_t nfds;

    void **heap;          /* reactor_timer_t *, a heap by timer_heap_ops */
    size_t heap_len, heap_cap;
    uint64_t timer_seq;
    reactor_timer_t *firing;
    /* the lateness of the last REACTOR_LAG_WINDOW timers, a ring */
    uint64_t lag_us[REACTOR_LAG_WINDOW];
    size_t lag_n, lag_next;
    uint64_t lag_count;
    reactor_lag_fn lag_obs;   /* reactor_set_lag_observer, or NULL */
    void *lag_obs_ud;

    pthread_mutex_t post_lock; /* guards the fields below */
    list_link posts;           /* reactor_post_t.link, in posting order */
    size_t post_count;
    bool wake_signalled;

    struct epoll_event events[REACTOR_MAX_EVENTS];
};

static uint64_t reactor_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * REACTOR_SEC + (uint64_t)ts.tv_nsec / 1000u;
}

reactor_t *reactor_new(void)
{
    int err;
    reactor_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->epfd = -1;
    r->wakefd = -1;
    atomic_init(&r->stop, false);
    list_init(&r->posts);
    err = pthread_mutex_init(&r->post_lock, NULL);
    if (err) {
        free(r);
        errno = err;
        return NULL;
    }
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0)
        goto fail;
    r->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wakefd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = REACTOR_WAKE_TAG};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wakefd, &ev) < 0)
        goto fail;
#ifdef REACTOR_HAVE_EPOLL_PWAIT2
    r->use_pwait2 = true;
#endif
    r->now_us = reactor_clock_us();
    return r;
fail:
    err = errno;
    reactor_free(r);
    errno = err;
    return NULL;
}

void reactor_free(reactor_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->heap_len; i++)
        free(r->heap[i]);
    free(r->heap);
    free(r->fds);
    LIST_EACH_SAFE(l, nx, &r->posts) {
        reactor_post_t *e = LIST_OWNER(l, reactor_post_t, link);
        list_del(l);
        if (e->flags & POST_OWNED)
            free(e);
        else
            e->flags = 0;
    }
    pthread_mutex_destroy(&r->post_lock);
    if (r->wakefd >= 0)
        close(r->wakefd);
    if (r->epfd >= 0)
        close(r->epfd);
    free(r);
}

uint64_t reactor_now_us(const reactor_t *r)
{
    return r->now_us;
}

/* Wakes the reactor thread. A failed write can only mean the counter is
 * saturated, which already guarantees a wakeup. */
static void reactor_wake(reactor_t *r)
{
    uint64_t one = 1;
    if (write(r->wakefd, &one, sizeof one) < 0) {
        /* nothing to do: see above */
    }
}

void reactor_stop(reactor_t *r)
{
    atomic_store(&r->stop, true);
    reactor_wake(r);
}

/* ---- file events */

/* Grows the table to hold FD; new slots are zero (not registered). */
static int reactor_fd_reserve(reactor_t *r, int fd)
{
    size_t old = r->nfds;
    if (vec_reserve(&r->fds, (size_t)fd, &r->nfds, sizeof *r->fds, 64) < 0)
        return -ENOMEM;
    memset(r->fds + old, 0, (r->nfds - old) * sizeof *r->fds);
    return 0;
}

/* Brings epoll in line with MASK for the registration in slot S. A quiet
 * registration leaves epoll altogether: epoll reports hangups whatever the
 * mask, and a level-triggered hangup nobody reads would spin the loop. */
static int reactor_fd_apply(reactor_t *r, int fd, reactor_fd_slot *s, int mask)
{
    if (mask == 0) {
        if (s->in_epoll && epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) < 0)
            return -errno;
        s->in_epoll = false;
        return 0;
    }
    struct epoll_event ev = {0};
    if (mask & REACTOR_READ)
        ev.events |= EPOLLIN;
    if (mask & REACTOR_WRITE)
        ev.events |= EPOLLOUT;
    ev.data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd;
    if (epoll_ctl(r->epfd, s->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    s->in_epoll = true;
    return 0;
}

int reactor_add_fd(reactor_t *r, int fd, int events, reactor_fd_cb cb, void *ud)
{
    if (fd < 0 || !cb || (events & ~(REACTOR_READ | REACTOR_WRITE)))
        return -EINVAL;
    int rc = reactor_fd_reserve(r, fd);
    if (rc < 0)
        return rc;
    reactor_fd_slot *s = &r->fds[fd];
    if (s->registered)
        return -EEXIST;
    rc = reactor_fd_apply(r, fd, s, events);
    if (rc < 0)
        return rc;
    s->cb = cb;
    s->ud = ud;
    s->mask = events;
    s->registered = true;
    return 0;
}

int reactor_mod_fd(reactor_t *r, int fd, int events)
{
    if (events & ~(REACTOR_READ | REACTOR_WRITE))
        return -EINVAL;
    if (fd < 0 || (size_t)fd >= r->nfds || !r->fds[fd].registered)
        return -ENOENT;
    reactor_fd_slot *s = &r->fds[fd];
    int rc = reactor_fd_apply(r, fd, s, events);
    if (rc < 0)
        return rc;
    s->mask = events;
    return 0;
}

int reactor_del_fd(reactor_t *r, int fd)
{
    if (fd < 0 || (size_t)fd >= r->nfds || !r->fds[fd].registered)
        return -ENOENT;
    reactor_fd_slot *s = &r->fds[fd];
    /* A descriptor closed before this call has already left epoll (EBADF or
     * ENOENT here); the registration is dropped all the same. */
    if (s->in_epoll)
        (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
    uint32_t gen = s->gen + 1;
    memset(s, 0, sizeof *s);
    s->gen = gen;
    return 0;
}

static int reactor_dispatch_fd(reactor_t *r, const struct epoll_event *ev)
{
    int fd = (int)(uint32_t)ev->data.u64;
    uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
    if ((size_t)fd >= r->nfds)
        return 0;
    reactor_fd_slot *s = &r->fds[fd];
    if (!s->registered || s->gen != gen)
        return 0; /* deleted earlier in this pass */
    int ready = 0;
    if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        ready |= REACTOR_READ;
    if (ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        ready |= REACTOR_WRITE;
    ready &= s->mask;
    if (!ready)
        return 0;
    if (ev->events & EPOLLERR)
        ready |= REACTOR_ERROR;
    /* S may move (the table can grow) during the call: nothing after it. */
    s->cb(r, fd, ready, s->ud);
    return 1;
}

/* ---- timers */

static bool reactor_timer_before(const void *va, const void *vb)
{
    const reactor_timer_t *a = va, *b = vb;
    return a->deadline_us < b->deadline_us || (a->deadline_us == b->deadline_us && a->seq < b->seq);
}

static void reactor_timer_moved(void *t, size_t slot)
{
    ((reactor_timer_t *)t)->index = slot;
}

static const heap_ops timer_heap_ops = {reactor_timer_before, reactor_timer_moved};

/* The timer due first (the heap must not be empty). */
static reactor_timer_t *reactor_timer_first(const reactor_t *r)
{
    return r->heap[0];
}

reactor_timer_t *reactor_timer_at(reactor_t *r, uint64_t deadline_us, reactor_timer_cb cb, void *ud)
{
    if (!cb) {
        errno = EINVAL;
        return NULL;
    }
    /* Never earlier than the pass time: a new timer then always sorts after
     * every timer already due, so the pass boundary rule holds. */
    if (deadline_us < r->now_us)
        deadline_us = r->now_us;
    reactor_timer_t *t = NULL;
    if (vec_reserve(&r->heap, r->heap_len, &r->heap_cap, sizeof *r->heap, 64) < 0 ||
        !(t = malloc(sizeof *t))) {
        errno = ENOMEM;
        return NULL;
    }
    t->deadline_us = deadline_us;
    t->seq = r->timer_seq++;
    t->cb = cb;
    t->ud = ud;
    r->heap[r->heap_len] = t;
    heap_sift_up(r->heap, r->heap_len++, &timer_heap_ops);
    return t;
}

reactor_timer_t *reactor_timer_add(reactor_t *r, uint64_t delay_us, reactor_timer_cb cb, void *ud)
{
    uint64_t now = reactor_clock_us();
    uint64_t deadline = delay_us > UINT64_MAX - now ? UINT64_MAX : now + delay_us;
    return reactor_timer_at(r, deadline, cb, ud);
}

void reactor_timer_cancel(reactor_t *r, reactor_timer_t *t)
{
    if (!t || t == r->firing)
        return;
    if (t->index >= r->heap_len || r->heap[t->index] != t)
        return; /* not a pending timer: a caller bug, but not worth a crash */
    heap_take(r->heap, &r->heap_len, t->index, &timer_heap_ops);
    free(t);
}

uint64_t reactor_timer_deadline_us(const reactor_timer_t *t)
{
    return t->deadline_us;
}

size_t reactor_timer_count(const reactor_t *r)
{
    return r->heap_len;
}

/* Fires the due timers added before the pass began (SEQ_LIMIT), one at a
 * time, so a callback may cancel any timer still waiting, due or not. */
static int reactor_fire_timers(reactor_t *r, uint64_t seq_limit)
{
    int ran = 0;
    while (r->heap_len > 0) {
        reactor_timer_t *t = reactor_timer_first(r);
        if (t->deadline_us > r->now_us || t->seq >= seq_limit)
            break;
        heap_take(r->heap, &r->heap_len, 0, &timer_heap_ops);
        /* read now, not the pass's time: callbacks run earlier in this
         * pass are part of what made this timer late */
        uint64_t now = reactor_clock_us();
        r->lag_us[r->lag_next] = now > t->deadline_us ? now - t->deadline_us : 0;
        r->lag_next = (r->lag_next + 1) % REACTOR_LAG_WINDOW;
        if (r->lag_n < REACTOR_LAG_WINDOW)
            r->lag_n++;
        r->lag_count++;
        if (r->lag_obs)
            r->lag_obs(r->lag_obs_ud, now > t->deadline_us ? now - t->deadline_us : 0);
        t->index = REACTOR_TIMER_FIRING;
        r->firing = t;
        t->cb(r, t, t->ud);
        r->firing = NULL;
        free(t);
        ran++;
    }
    return ran;
}

/* ---- posts */

static void reactor_post_unlink(reactor_t *r, reactor_post_t *e)
{
    list_del(&e->link);
    e->flags &= ~(unsigned)POST_QUEUED;
    r->post_count--;
}

int reactor_post_embedded(reactor_t *r, reactor_post_t *e, reactor_post_cb cb, void *ud)
{
    if (!e || !cb)
        return -EINVAL;
    pthread_mutex_lock(&r->post_lock);
    if (e->flags & POST_QUEUED) {
        pthread_mutex_unlock(&r->post_lock);
        return -EBUSY;
    }
    e->cb = cb;
    e->ud = ud;
    e->flags |= POST_QUEUED;
    list_add_tail(&r->posts, &e->link);
    r->post_count++;
    bool wake = !r->wake_signalled;
    r->wake_signalled = true;
    pthread_mutex_unlock(&r->post_lock);
    if (wake)
        reactor_wake(r);
    return 0;
}

int reactor_post(reactor_t *r, reactor_post_cb cb, void *ud)
{
    if (!cb)
        return -EINVAL;
    reactor_post_t *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->flags = POST_OWNED;
    return reactor_post_embedded(r, e, cb, ud); /* cannot fail: E is fresh */
}

bool reactor_post_cancel(reactor_t *r, reactor_post_t *e)
{
    pthread_mutex_lock(&r->post_lock);
    bool queued = (e->flags & POST_QUEUED) != 0;
    if (queued)
        reactor_post_unlink(r, e);
    pthread_mutex_unlock(&r->post_lock);
    if (queued && (e->flags & POST_OWNED))
        free(e);
    return queued;
}

/* Runs the posts queued when the wakeup was consumed; later ones signal the
 * eventfd again and run on the next pass, so posting from a post callback
 * cannot starve the loop. The eventfd is read before the flag is cleared:
 * a post that sees the flag still set is then already counted here. */
static int reactor_drain_posts(reactor_t *r)
{
    uint64_t value;
    if (read(r->wakefd, &value, sizeof value) < 0) {
        /* EAGAIN: a wakeup already consumed; the queue is what counts */
    }
    pthread_mutex_lock(&r->post_lock);
    r->wake_signalled = false;
    size_t n = r->post_count;
    pthread_mutex_unlock(&r->post_lock);

    int ran = 0;
    while (n-- > 0) {
        pthread_mutex_lock(&r->post_lock);
        list_link *l = list_first(&r->posts);
        if (!l) {
            pthread_mutex_unlock(&r->post_lock);
            break;
        }
        reactor_post_t *e = LIST_OWNER(l, reactor_post_t, link);
        reactor_post_unlink(r, e);
        reactor_post_cb cb = e->cb;
        void *ud = e->ud;
        bool owned = (e->flags & POST_OWNED) != 0;
        pthread_mutex_unlock(&r->post_lock);
        if (owned)
            free(e);
        cb(r, ud);
        ran++;
    }
    return ran;
}

/* ---- hand-backs */

/* The reactor-side half: takes the whole done list at once, so items that
 * finish meanwhile arm a fresh delivery instead of waiting on this one. */
static void reactor_handback_run(reactor_t *r, void *ud)
{
    reactor_handback_t *h = ud;
    list_link batch;
    (void)r;
    list_init(&batch);
    pthread_mutex_lock(h->lock);
    list_splice_tail(&batch, &h->done);
    h->posted = false;
    pthread_mutex_unlock(h->lock);
    h->deliver(&batch, h->ud);
}

void reactor_handback_init(reactor_handback_t *h, reactor_t *r, pthread_mutex_t *lock,
                           reactor_handback_fn deliver, void *ud)
{
    *h = (reactor_handback_t){.r = r, .lock = lock, .deliver = deliver, .ud = ud};
    list_init(&h->done);
}

void reactor_handback_add_locked(reactor_handback_t *h, list_link *item)
{
    list_add_tail(&h->done, item);
    if (!h->posted) {
        /* Posted under the owner's lock, so "posted" and "queued in the
         * reactor" never disagree and take_locked can cancel it. The entry
         * is embedded and not queued: this cannot fail. */
        h->posted = true;
        (void)reactor_post_embedded(h->r, &h->post, reactor_handback_run, h);
    }
}

void reactor_handback_take_locked(reactor_handback_t *h, list_link *batch)
{
    if (h->posted)
        reactor_post_cancel(h->r, &h->post);
    h->posted = false;
    list_splice_tail(batch, &h->done);
}

/* ---- the loop */

/* Waits up to WAIT_US microseconds (negative: no limit). */
static int reactor_wait(reactor_t *r, int64_t wait_us)
{
#ifdef REACTOR_HAVE_EPOLL_PWAIT2
    if (r->use_pwait2) {
        struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
        int n = epoll_pwait2(r->epfd, r->events, REACTOR_MAX_EVENTS, wait_us < 0 ? NULL : &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        r->use_pwait2 = false;
    }
#endif
    int ms = -1;
    if (wait_us >= 0)
        ms = wait_us / 1000 >= INT_MAX ? INT_MAX : (int)((wait_us + 999) / 1000);
    return epoll_wait(r->epfd, r->events, REACTOR_MAX_EVENTS, ms);
}

int reactor_run_once(reactor_t *r, int timeout_ms)
{
    if (r->in_pass)
        return -EDEADLK;
    uint64_t seq_limit = r->timer_seq;
    int64_t wait_us = timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000;
    if (r->heap_len > 0) {
        uint64_t now = reactor_clock_us();
        uint64_t deadline = reactor_timer_first(r)->deadline_us;
        uint64_t until = deadline > now ? deadline - now : 0;
        if (until > (uint64_t)INT64_MAX / 2)
            until = (uint64_t)INT64_MAX / 2;
        if (wait_us < 0 || (int64_t)until < wait_us)
            wait_us = (int64_t)until;
    }
    int n = reactor_wait(r, wait_us);
    if (n < 0 && errno != EINTR)
        return -errno;
    r->now_us = reactor_clock_us();
    r->in_pass = true;
    int ran = 0;
    uint64_t slice_start = r->now_us;
    for (int i = 0; i < n; i++) {
        if (r->events[i].data.u64 == REACTOR_WAKE_TAG)
            ran += reactor_drain_posts(r);
        else
            ran += reactor_dispatch_fd(r, &r->events[i]);
        if ((i + 1) % REACTOR_SLICE_EVENTS == 0 && i + 1 < n) {
            uint64_t now = reactor_clock_us();
            if (now - slice_start >= REACTOR_SLICE_US) {
                /* still only timers older than the pass: see above */
                r->now_us = now;
                ran += reactor_fire_timers(r, seq_limit);
                slice_start = reactor_clock_us();
            }
        }
    }
    r->now_us = reactor_clock_us();
    ran += reactor_fire_timers(r, seq_limit);
    r->in_pass = false;
    return ran;
}

int reactor_run(reactor_t *r)
{
    int rc = 0;
    while (!atomic_load(&r->stop)) {
        int n = reactor_run_once(r, -1);
        if (n < 0) {
            rc = n;
            break;
        }
    }
    atomic_store(&r->stop, false);
    return rc;
}

/* ---- lag */

static int reactor_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void reactor_set_lag_observer(reactor_t *r, reactor_lag_fn fn, void *ud)
{
    r->lag_obs = fn;
    r->lag_obs_ud = ud;
}

void reactor_lag(const reactor_t *r, reactor_lag_t *out)
{
    memset(out, 0, sizeof *out);
    out->samples = r->lag_n;
    out->timers_fired = r->lag_count;
    if (!r->lag_n)
        return;
    /* sorted on a copy: asked for now and then (stats), not per timer */
    uint64_t v[REACTOR_LAG_WINDOW];
    memcpy(v, r->lag_us, r->lag_n * sizeof *v);
    qsort(v, r->lag_n, sizeof *v, reactor_u64_cmp);
    out->p50_us = v[(r->lag_n - 1) / 2];
    out->p99_us = v[(r->lag_n - 1) * 99 / 100];
    out->max_us = v[r->lag_n - 1];
}
