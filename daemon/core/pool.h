/* pool.h -- a fixed set of worker threads for blocking or CPU-heavy work.
 *
 * Owns: its threads and the queued work items (not the items' user data).
 * May call: the reactor (to hand results back), libc and pthreads.
 * Must never call: anything above daemon/core (the engine, plugins, store,
 * server, wfdir, jobs, loomd); work and done functions are the callers'.
 *
 * Modelled on libuv's uv_queue_work: work_fn runs on a worker thread, then
 * done_fn runs on the reactor thread, where the rest of the daemon's state
 * lives, so results are handed back without locks on the caller's side.
 * Work starts in submission order. Each queued item costs one small fixed
 * allocation, whatever the queue length.
 *
 * Errors are negative errno values; pool_new returns NULL and sets errno. */
#ifndef LOOM_DAEMON_POOL_H
#define LOOM_DAEMON_POOL_H

#include <stdint.h>

#include "daemon/core/reactor.h"

typedef struct pool pool_t;
typedef struct pool_work pool_work_t;

/* Runs on a worker thread. It must not touch reactor-thread state. */
typedef void (*pool_work_fn)(void *ud);
/* Runs on the reactor thread once per submitted item: STATUS is 0 when
 * work_fn ran, -ECANCELED when it never started (pool_cancel, pool_free). */
typedef void (*pool_done_fn)(void *ud, int status);

/* A pool of NTHREADS workers (0: one per online core) that delivers
 * completions through R (borrowed; it must outlive the pool). Free with
 * pool_free. NULL with errno set (EINVAL for a negative or absurd count). */
pool_t *pool_new(reactor_t *r, int nthreads);

/* Stops the pool and frees it, on the reactor thread, never from inside one
 * of this pool's done_fn. Items running finish; items not started are not
 * run. Before it returns, every item whose done_fn has not run yet gets it:
 * finished ones with 0, the rest with -ECANCELED, in submission order of each
 * group. NULL is a no-op. */
void pool_free(pool_t *p);

/* Called by pool_stop for each item still inside its work_fn, with the
 * label pool_label gave it (NULL when none). */
typedef void (*pool_report_fn)(void *ud, const char *label);

/* Stops the pool within TIMEOUT_MS: takes no more items and waits for the
 * workers to finish what they run. Returns 0 when every worker quit (then
 * pool_free joins nothing and delivers the completions), or how many are
 * still inside a work_fn, each reported to REPORT(UD, label) first. Such
 * workers are abandoned: the pool and what they touch must then never be
 * freed, and the caller should end the process (a work_fn that never
 * returns cannot be taken back). Reactor thread, once. */
int pool_stop(pool_t *p, int64_t timeout_ms, pool_report_fn report, void *ud);

/* Names W (a handle from pool_submit whose DONE has not started) for
 * pool_stop's report. LABEL is borrowed and must live as long as the item's
 * user data: an abandoned item's is never freed. */
void pool_label(pool_t *p, pool_work_t *w, const char *label);

/* Queues WORK(UD) then DONE(UD, status). UD is borrowed until DONE. When
 * HANDLE is not NULL it receives the item's handle (owned by the pool, valid
 * until DONE starts) for pool_cancel. Any thread while the pool lives; 0,
 * -EINVAL, -ENOMEM, or -ESHUTDOWN once pool_free has begun. */
int pool_submit(pool_t *p, pool_work_fn work, pool_done_fn done, void *ud, pool_work_t **handle);

/* Cancels W if it has not started: its DONE then runs with -ECANCELED on a
 * later reactor pass (never from inside this call). -EBUSY if it is running
 * or finished. Reactor thread, with a handle whose DONE has not started. */
int pool_cancel(pool_t *p, pool_work_t *w);

/* How many worker threads P has. */
int pool_nthreads(const pool_t *p);

#endif
