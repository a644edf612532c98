/* reactor.h -- the event loop: file events, timers and cross-thread posts.
 *
 * Owns: the epoll instance and its wakeup eventfd, the timers, the post
 * queue, and nothing of its callers (descriptors and user data are
 * borrowed).
 * May call: libc, pthreads and common/ (containers.h) only.
 * Must never call: any other module of Loom; it is the bottom of the daemon
 * (docs/architecture.md) and everything above is built on it.
 *
 * One reactor runs on one thread (the "reactor thread") and everything it
 * calls back runs there, so state touched only from callbacks needs no locks.
 * The module knows nothing of jobs, sockets or HTTP; it is the small loop that
 * the engine, the HTTP client and the server are built on.
 *
 * Conventions:
 * - Functions returning int return 0 (or a count) on success and a negative
 *   errno on failure. Constructors return NULL and set errno.
 * - Every function is for the reactor thread only, except reactor_post,
 *   reactor_post_embedded, reactor_post_cancel and reactor_stop, which any
 *   thread may call while the reactor is alive.
 * - The reactor never owns the caller's file descriptors or user data:
 *   descriptors and `ud` pointers are borrowed and never closed or freed.
 * - Callbacks must not call reactor_free or reactor_run / reactor_run_once on
 *   the reactor that is calling them. Anything else is allowed, including
 *   deleting or changing any descriptor and cancelling any timer.
 * - Nothing scheduled from a callback runs before that callback returns: a
 *   zero-delay timer or a post made from a callback runs on a later pass. */
#ifndef LOOM_DAEMON_REACTOR_H
#define LOOM_DAEMON_REACTOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/containers.h"

typedef struct reactor reactor_t;
typedef struct reactor_timer reactor_timer_t;

/* Event bits for file events. REACTOR_ERROR is only ever reported (with
 * whichever of READ/WRITE are registered), never registered. */
enum {
    REACTOR_READ = 1,
    REACTOR_WRITE = 2,
    REACTOR_ERROR = 4
};

/* Microseconds in a millisecond and a second, for delays. */
#define REACTOR_MSEC UINT64_C(1000)
#define REACTOR_SEC UINT64_C(1000000)

typedef void (*reactor_fd_cb)(reactor_t *r, int fd, int events, void *ud);
typedef void (*reactor_timer_cb)(reactor_t *r, reactor_timer_t *t, void *ud);
typedef void (*reactor_post_cb)(reactor_t *r, void *ud);

/* A post queue entry a caller embeds in its own struct, so that handing a
 * result back can never fail for lack of memory. The fields are private; a
 * zeroed entry is ready for use. */
typedef struct reactor_post {
    list_link link;    /* in the reactor's queue while POST_QUEUED */
    reactor_post_cb cb;
    void *ud;
    unsigned flags;
} reactor_post_t;

/* ---- the loop */

/* A new reactor (free with reactor_free), or NULL with errno set. */
reactor_t *reactor_new(void);

/* Frees R: pending timers are dropped without being called, posts not yet run
 * are dropped (entries from reactor_post are freed, embedded ones are only
 * unlinked). Registered descriptors are not closed. No other thread may post
 * to R any more. NULL is a no-op. */
void reactor_free(reactor_t *r);

/* Runs the loop until reactor_stop. Returns 0 after a stop, or a negative
 * errno if waiting for events fails. A stop requested before the call makes
 * it return at once; the flag is cleared on return, so R can be run again. */
int reactor_run(reactor_t *r);

/* Waits at most TIMEOUT_MS (-1: until something happens, 0: not at all) for
 * events, then runs every ready file callback, post and due timer once.
 * Returns the number of callbacks run, or a negative errno. */
int reactor_run_once(reactor_t *r, int timeout_ms);

/* Asks reactor_run to return after the current pass. Any thread. */
void reactor_stop(reactor_t *r);

/* CLOCK_MONOTONIC in microseconds, read once per pass after waiting: cheap,
 * and the same for every callback of one pass. */
uint64_t reactor_now_us(const reactor_t *r);

/* ---- file events (level-triggered, as in select/poll) */

/* Calls CB whenever FD is ready for any of EVENTS (READ|WRITE). FD must not
 * be registered already (-EEXIST). EVENTS may be 0: registered but quiet. */
int reactor_add_fd(reactor_t *r, int fd, int events, reactor_fd_cb cb, void *ud);

/* Changes the events watched on a registered FD (-ENOENT if it is not). */
int reactor_mod_fd(reactor_t *r, int fd, int events);

/* Stops watching FD (-ENOENT if not registered). Events already collected
 * for FD in the current pass are dropped, even if FD is closed and its number
 * registered again from a callback. Call it before closing FD. */
int reactor_del_fd(reactor_t *r, int fd);

/* ---- timers (one-shot; a binary heap, O(log n) add and cancel) */

/* Calls CB once, DELAY_US microseconds from now (measured at the call, not
 * from the cached pass time, so a long callback never makes a timer fire
 * early). Timers due at the same microsecond fire in the order they were
 * added. Returns a handle owned by the reactor: it stays valid until CB has
 * returned or the timer is cancelled, and is dangling after that. NULL with
 * errno ENOMEM on failure. */
reactor_timer_t *reactor_timer_add(reactor_t *r, uint64_t delay_us, reactor_timer_cb cb, void *ud);

/* Like reactor_timer_add, at the absolute time DEADLINE_US on the
 * reactor_now_us clock; a time in the past fires on the next pass. */
reactor_timer_t *reactor_timer_at(reactor_t *r, uint64_t deadline_us, reactor_timer_cb cb, void *ud);

/* Cancels T, which must be a valid handle (pending, or the timer whose
 * callback is running, for which this is a no-op). NULL is a no-op. */
void reactor_timer_cancel(reactor_t *r, reactor_timer_t *t);

/* T's deadline on the reactor_now_us clock. */
uint64_t reactor_timer_deadline_us(const reactor_timer_t *t);

/* How many timers are pending. */
size_t reactor_timer_count(const reactor_t *r);

/* ---- lag: how late timers run, the measure of a blocked reactor thread */

/* Timers whose lateness (from deadline to the start of the callback) the
 * window keeps. */
#define REACTOR_LAG_WINDOW 1024

typedef struct reactor_lag_t {
    uint64_t p50_us, p99_us, max_us; /* over the window */
    size_t samples;                  /* in the window (<= REACTOR_LAG_WINDOW) */
    uint64_t timers_fired;           /* since the reactor was made */
} reactor_lag_t;

/* The lag of the last REACTOR_LAG_WINDOW timers fired, into OUT. */
void reactor_lag(const reactor_t *r, reactor_lag_t *out);

/* FN(UD, lag_us) as each timer fires, before its callback, with its
 * lateness (for a histogram of it; FN must be cheap). NULL: none. Reactor
 * thread. */
typedef void (*reactor_lag_fn)(void *ud, uint64_t lag_us);
void reactor_set_lag_observer(reactor_t *r, reactor_lag_fn fn, void *ud);

/* ---- posts: handing work to the reactor thread from any thread */

/* Queues CB(R, UD) to run on the reactor thread. Posts run in the order they
 * were queued (so in per-thread order). Any thread; 0 or -ENOMEM. */
int reactor_post(reactor_t *r, reactor_post_cb cb, void *ud);

/* Like reactor_post with an entry E the caller provides (borrowed until CB
 * starts or the post is cancelled), so it cannot fail for lack of memory.
 * -EBUSY if E is already queued. Any thread. */
int reactor_post_embedded(reactor_t *r, reactor_post_t *e, reactor_post_cb cb, void *ud);

/* Takes E off the queue if its callback has not started yet. Returns whether
 * it did, in which case the callback will not run. Any thread. */
bool reactor_post_cancel(reactor_t *r, reactor_post_t *e);

/* ---- hand-backs: results made on other threads, delivered on this one */

/* Delivers BATCH (a list of the owner's items, in the order they were
 * added; the callee unlinks and frees them) on the reactor thread. */
typedef void (*reactor_handback_fn)(list_link *batch, void *ud);

/* A done list for a module whose own threads finish work (the pool's
 * workers, the store's writer): items are added under the owner's mutex and
 * reach the reactor thread in batches through one embedded post, armed at
 * most once at a time, so a burst costs one wakeup and handing back never
 * allocates. Lock order: the owner's mutex, then the reactor's post lock.
 * The fields are private. */
typedef struct reactor_handback {
    reactor_t *r;
    pthread_mutex_t *lock;         /* the owner's (borrowed): guards the rest */
    list_link done;
    bool posted;                   /* POST is queued in the reactor */
    reactor_post_t post;
    reactor_handback_fn deliver;
    void *ud;
} reactor_handback_t;

/* Sets H up to deliver through R (borrowed) with DELIVER(batch, UD); LOCK
 * (borrowed) is the mutex the owner holds around every other call. */
void reactor_handback_init(reactor_handback_t *h, reactor_t *r, pthread_mutex_t *lock,
                           reactor_handback_fn deliver, void *ud);

/* Appends ITEM (not in any list; the owner's until delivered) and arms the
 * delivery. Any thread, with the lock held. */
void reactor_handback_add_locked(reactor_handback_t *h, list_link *item);

/* Disarms the delivery and moves every item not yet delivered to the end of
 * BATCH, for an owner closing down (it then delivers BATCH itself, so no post
 * outlives it). Reactor thread, with the lock held. */
void reactor_handback_take_locked(reactor_handback_t *h, list_link *batch);

#endif
