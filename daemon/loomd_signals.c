/* loomd_signals.c -- SIGTERM, SIGINT and SIGHUP on a thread of their own.
 *
 * The signals are blocked in every thread and taken here with sigwaitinfo;
 * each is handed to the reactor as a post (loomd.c: reload, begin_stop). A
 * thread rather than a signalfd on the reactor, because the reactor can be
 * stuck: a lambda flagged PURE|FAST that never returns runs on it, and then
 * nothing on the reactor ever reads a signal. This thread still does:
 *
 * - after the first SIGTERM/SIGINT, if the process has not exited within
 *   shutdown_grace plus LOOMD_STOP_MARGIN_MS (time to cancel, close the store
 *   and the socket), it logs that the reactor is stuck and exits;
 * - after a second one, it gives the reactor LOOMD_SECOND_SIGNAL_MS to act
 *   on it (which exits at once, abandoning running jobs), then exits itself.
 *
 * Exiting from here skips the store's close: SQLite's WAL makes that safe,
 * and the jobs that were running resume at the next start. The in-flight
 * record is not marked clean, so a job stuck in plugin code is counted
 * towards its quarantine, as it should be. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/loomd.h"

/* Beyond shutdown_grace: the 200 ms given to cancelled calls, closing the
 * store (a last commit) and the socket, on a loaded machine. */
#define LOOMD_STOP_MARGIN_MS 5000
#define LOOMD_SECOND_SIGNAL_MS 1000

struct loomd_signals {
    loomd *d;
    pthread_t thread;
    sigset_t set;
    atomic_uint_fast64_t grace_ms;
    pthread_mutex_t lock;  /* a post and the reactor's end never cross */
    bool detached;         /* the reactor is gone: post nothing */
};

/* Hands CB to the reactor unless it is going away. */
static void signals_post(struct loomd_signals *s, reactor_post_cb cb)
{
    pthread_mutex_lock(&s->lock);
    if (!s->detached)
        (void)reactor_post(s->d->r, cb, s->d);
    pthread_mutex_unlock(&s->lock);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_hup(reactor_t *r, void *ud)
{
    (void)r;
    loomd_reload(ud);
}

static void on_term(reactor_t *r, void *ud)
{
    (void)r;
    loomd_begin_stop(ud, "SIGTERM");
}

static void on_int(reactor_t *r, void *ud)
{
    (void)r;
    loomd_begin_stop(ud, "SIGINT");
}

static void *signals_main(void *arg)
{
    struct loomd_signals *s = arg;
    loomd *d = s->d;
    int stops = 0;
    int64_t deadline = 0; /* CLOCK_MONOTONIC ms; 0: none */
    for (;;) {
        siginfo_t si;
        int sig;
        if (deadline) {
            int64_t left = deadline - mono_ms();
            if (left < 0)
                left = 0;
            struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000 };
            sig = sigtimedwait(&s->set, &si, &ts);
        } else {
            sig = sigwaitinfo(&s->set, &si);
        }
        if (sig < 0 && errno == EAGAIN) {
            log_write(&d->log, LOOM_LOG_ERROR, NULL,
                      "the stop did not finish in time: the reactor is stuck (a PURE|FAST "
                      "lambda that never returns?); exiting now, running jobs resume at the "
                      "next start");
            _exit(1);
        }
        if (sig < 0)
            continue; /* EINTR */
        if (sig == SIGHUP) {
            signals_post(s, on_hup);
            continue;
        }
        signals_post(s, sig == SIGINT ? on_int : on_term);
        int64_t now = mono_ms();
        int64_t until = ++stops == 1
                            ? now + (int64_t)atomic_load(&s->grace_ms) + LOOMD_STOP_MARGIN_MS
                            : now + LOOMD_SECOND_SIGNAL_MS;
        if (!deadline || until < deadline)
            deadline = until;
    }
    return NULL;
}

int loomd_signals_block(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    return pthread_sigmask(SIG_BLOCK, set, NULL) == 0 ? 0 : -1;
}

struct loomd_signals *loomd_signals_start(loomd *d)
{
    struct loomd_signals *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->d = d;
    atomic_init(&s->grace_ms, d->cfg->shutdown_grace_ms);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    if (loomd_signals_block(&s->set) < 0 || pthread_create(&s->thread, NULL, signals_main, s)) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    pthread_detach(s->thread); /* it lives as long as the process */
    return s;
}

void loomd_signals_set_grace(struct loomd_signals *s, uint64_t grace_ms)
{
    if (s)
        atomic_store(&s->grace_ms, grace_ms);
}

void loomd_signals_detach(struct loomd_signals *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->detached = true;
    pthread_mutex_unlock(&s->lock);
}
