/* batch.h -- provider Batch APIs: calls collected from every job into
 * batches, submitted, polled and delivered back, surviving restarts.
 *
 * Owns: the collectors (one per provider, model, call kind and completion
 * window), every batch's state machine (write -> upload -> create -> poll
 * -> results -> done), their HTTP requests, and the index of lines by job
 * and step key.
 * May call: daemon/core (reactor, http, log), daemon/upstream (the
 * plugin's batch hooks through upstream_batch_*), daemon/store (the
 * batches and lines tables), common/, loom/.
 * Must never call: the engine, jobs, the server: what a line's result
 * means to its job is the engine's business; waking a job is loomd's,
 * through the hooks below.
 *
 * Durability: a batch and the mapping of its lines' custom_ids to job
 * steps are committed to the store before anything of it is sent; the
 * uploaded file's id and the provider's batch id are committed as soon as
 * they are known; the results of every line are committed before any job
 * is told. A restart resumes each batch where its record says: an upload
 * or a batch made just before a crash is found again by name
 * (LOOM_BATCH_FIND_UPLOAD, LOOM_BATCH_FIND) rather than made twice.
 *
 * Threads: reactor thread only. */
#ifndef LOOM_DAEMON_BATCH_H
#define LOOM_DAEMON_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/store/store.h"
#include "daemon/upstream/upstream.h"
#include "loom/plugin.h"

typedef struct batch_mgr batch_mgr_t;

typedef enum batch_line_state {
    BATCH_LINE_NONE = 0,          /* no line for the step */
    BATCH_LINE_PENDING,           /* collecting, or in a batch that has not ended */
    BATCH_LINE_DONE               /* its batch ended: RESULT, or CODE */
} batch_line_state;

/* A line as batch_mgr_lookup reports it. */
typedef struct batch_line_info {
    batch_line_state state;
    int attempt;
    char batch[64];               /* the batch's name ("" while collecting) */
    json_t *result;               /* DONE: the provider's result object (new
                                   * reference, the caller's), or NULL ... */
    loom_errcode code;            /* ... and then why */
    char message[256];
} batch_line_info;

/* A line to queue; everything borrowed for the call. */
typedef struct batch_line_spec {
    const char *job, *key, *node;
    int attempt;
    const char *provider;         /* the provider instance's name */
    upstream_t *up;               /* its upstream now (upstream_has_batch_api) */
    const loom_request *req;
    uint64_t window_ms;           /* 0: the provider's batch_api window */
    uint64_t deadline_ms;         /* 0: the provider's batch_api deadline */
} batch_line_spec;

typedef struct batch_mgr_hooks {
    /* The provider instance NAME as configured now, or NULL when there is
     * none (a reload removed it: its batches wait, polled no more, until it
     * is back). Looked up at each step, never kept across reactor passes. */
    upstream_t *(*upstream)(void *ud, const char *name);
    /* Lines of JOB reached DONE and are on disk: wake it (once per job per
     * batch end). */
    void (*ready)(void *ud, const char *job);
    /* Batch NAME (the provider's id REMOTE, "" before it has one) holding
     * lines of JOB is STATE ("collecting", "submitted", "running",
     * "ended", "expired", "cancelled", "failed"), DONE of TOTAL lines
     * finished (-1: not said): for the job's events. */
    void (*progress)(void *ud, const char *job, const char *batch, const char *remote,
                     const char *state, int64_t done, int64_t total);
    void *ud;
} batch_mgr_hooks;

/* A manager on R writing to ST (both borrowed, outliving it), logging to
 * LOG (borrowed), with HOOKS (copied). NULL with errno. */
batch_mgr_t *batch_mgr_new(reactor_t *r, store_t *st, const log_sink *log, const batch_mgr_hooks *hooks);

/* Loads every batch the store holds that is not done and resumes it (an
 * upload or create that was under way is looked up first; polling goes
 * on). 0, or -1 with a message in ERR. */
int batch_mgr_start(batch_mgr_t *m, char *err, size_t errlen);

/* The line of JOB's step KEY into OUT (zeroed by the caller). 0, or -1
 * with ERR. */
int batch_mgr_lookup(batch_mgr_t *m, const char *job, const char *key, batch_line_info *out,
                     char *err, size_t errlen);

/* Whether JOB has a line for step KEY in any state but NONE: loomd wakes
 * at start a job recorded waiting on a line the store never got (the
 * daemon died while it was collecting). */
bool batch_mgr_has_line(batch_mgr_t *m, const char *job, const char *key);

/* Queues a line (see engine_batch_ops.submit). 0, or -1 with *CODE, ERR. */
int batch_mgr_submit(batch_mgr_t *m, const batch_line_spec *s, loom_errcode *code, char *err,
                     size_t errlen);

/* JOB ended (finished, failed or cancelled): its lines are dropped (a
 * collecting line never sent; a sent one's result is not wanted), and a
 * batch none of whose lines is wanted any more is cancelled at the
 * provider. */
void batch_mgr_drop_job(batch_mgr_t *m, const char *job);

/* Whether a request of M is in flight on CLIENT. A client freed under it
 * would drop the request without an answer (http_client_free), leaving its
 * batch waiting for ever: the daemon keeps an engine generation whose
 * providers' client this is until it is not (a reload while a poll runs). */
bool batch_mgr_calls_on(const batch_mgr_t *m, const http_client_t *client);

/* {batches: {open, submitted, ended, failed}, lines: {collecting, pending,
 * done}, uploads, polls, errors} (a new reference), for `stats`. */
json_t *batch_mgr_stats(const batch_mgr_t *m);

/* Stops every timer and HTTP request (nothing is lost: the store has it)
 * and frees M. NULL is a no-op. */
void batch_mgr_free(batch_mgr_t *m);

#endif
