/* iso.h -- isolated plugins: lambdas run in helper processes
 * (loom-plugin-host), one or more per plugin, watched from the reactor.
 *
 * Owns: the helper processes (their pids, sockets and pidfds), the calls
 * queued for them and in flight, their timers, and the frame buffers of the
 * protocol between loomd and a helper.
 * May call: daemon/core (the reactor), common/, the plugin ABI's types and
 * libc; the helper's main (iso_host.c) also uses daemon/plugins to load the
 * plugin the same way loomd does.
 * Must never call: the engine, jobs, the store, the server or loomd: the
 * engine hands calls down here and gets an iso_result back.
 *
 * The protocol: one SOCK_STREAM socketpair per helper, carrying frames of a
 * 4-byte little-endian length followed by that many bytes of JSON (at most
 * ISO_FRAME_MAX). A stream, not SOCK_SEQPACKET: a lambda's input or output
 * may be tens of MiB, far past what one packet carries, and a stream with a
 * length prefix handles every size with one code path, lets a reader take
 * several small frames in one read(2), and lets a non-blocking writer stop
 * and resume anywhere in a frame. Messages (docs/plugins.md):
 *   loomd -> helper  {"init": CONFIG} first, on every start: the plugin's
 *                    configuration (null for none) for its init
 *                    {"id": N, "lambda": "plugin.name", "input": V, "args": {..},
 *                     "deadline_ms": MS}
 *                    {"cancel": N}   loomd gave up on call N (a step's timeout,
 *                                    a cancelled job, the plugin's timeout)
 *                    {"reload": CONFIG}  SIGHUP: run the plugin's reload hook
 *                    {"instance": K, "provider": NAME, "config": CONFIG}
 *                                    make provider instance K (its init); sent
 *                                    after init to every start, so a restarted
 *                                    helper has every instance again
 *                    {"instance_end": K}  end instance K (its fini)
 *                    {"invoke_id": N, "instance": K, "request": REQ,
 *                     "deadline_ms": MS}  an invoke provider call (REQ:
 *                                    iso_request_to_json)
 *                    {"cancel_invoke": N}  loomd gave up on invoke N: the
 *                                    provider's cancel hook; no answer follows
 *   helper -> loomd  {"ready": {"plugin": NAME, "lambdas": N}} once, after init
 *                    {"fatal": TEXT} then exit, when the plugin cannot load
 *                    {"id": N, "output": V}
 *                    {"id": N, "error": {"code": CODE, "message": TEXT}}
 *                    {"log": LEVEL, "message": TEXT}
 *                    {"invoke_id": N, "output": V, "usage": {"input_tokens": I,
 *                     "output_tokens": O}, "tool_calls": [...]}  (tool_calls:
 *                                    only from complete_tools, ABI 2.3)
 *                    {"invoke_id": N, "error": {"code": CODE, "message": TEXT,
 *                     "retry_after_ms": MS}}
 * Invoke calls are not lambda calls: a helper holds any number of them at
 * once (a provider finishes them from its timers, which the helper's main
 * loop runs between frames), they share helpers with the lambda calls, and
 * an answer to an invoke loomd gave up on is dropped, not an error.
 * DEADLINE_MS is CLOCK_MONOTONIC milliseconds (both ends read the same
 * machine's clock): the earlier of the step's deadline and the plugin's
 * timeout. It is what loom_deadline_ms answers in the helper, and
 * loom_cancelled there turns true once a cancel for the call has arrived (a
 * thread of the helper reads the socket while the lambda runs).
 * A helper runs one call at a time and loomd sends it the next only after the
 * answer, so a crash costs exactly the call it was running. A call given up
 * on is answered at once (timeout, or not at all when cancelled) and its
 * helper gets ISO_CANCEL_GRACE_MS to return from it; one that does not is
 * killed and started again. A reload reaches a busy helper after its call
 * (frames are read in order); a helper that starts later gets the newest
 * configuration in its init frame.
 *
 * Everything here runs on the reactor thread. */
#ifndef LOOM_DAEMON_ISO_H
#define LOOM_DAEMON_ISO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/reactor.h"
#include "loom/plugin.h"

/* ---- framing (iso_frame.c), shared by both ends */

/* The largest frame either end accepts: a 32 MiB output plus its escaping. */
#define ISO_FRAME_MAX ((size_t)96 << 20)
#define ISO_FRAME_HEADER 4

/* How long a helper has to return from a call loomd gave up on (it sees
 * loom_cancelled) before it is killed: long enough for a lambda that polls
 * the flag between steps of work, short enough that a stuck one does not
 * hold its helper. */
#define ISO_CANCEL_GRACE_MS 1000

/* Bytes read from a socket, cut into frames. Zeroed is ready. */
typedef struct iso_reader {
    char *buf;        /* owned */
    size_t off, len, cap; /* unread bytes are buf[off, len) */
} iso_reader;

/* Frames waiting to be written. Zeroed is ready. */
typedef struct iso_writer {
    char *buf;        /* owned */
    size_t off, len, cap; /* unwritten bytes are buf[off, len) */
} iso_writer;

void iso_reader_free(iso_reader *r);
/* Reads what FD has into R (one read(2) of at least 64 KiB of room).
 * Returns the bytes read, 0 at EOF, or a negative errno (-EAGAIN). */
ssize_t iso_reader_fill(iso_reader *r, int fd);
/* Appends LEN bytes of DATA as if read (for tests). 0 or -ENOMEM. */
int iso_reader_feed(iso_reader *r, const void *data, size_t len);
/* The next whole frame: 1 with *DATA (borrowed, valid until the next call on
 * R) and *LEN, 0 when none is complete yet, -EMSGSIZE when the header
 * announces more than ISO_FRAME_MAX (the stream is then unusable). */
int iso_reader_next(iso_reader *r, const char **data, size_t *len);

void iso_writer_free(iso_writer *w);
/* Queues DATA (LEN bytes, copied) as one frame. 0, -EMSGSIZE or -ENOMEM. */
int iso_writer_add(iso_writer *w, const void *data, size_t len);
/* Queues V (borrowed) as one frame of compact JSON. 0, -EINVAL (V cannot
 * be encoded: a NaN), -EMSGSIZE or -ENOMEM. */
int iso_writer_add_json(iso_writer *w, const json_t *v);
/* Writes what is queued to FD. 0 when all of it went, 1 when FD would block
 * with some left (non-blocking FD), or a negative errno. */
int iso_writer_flush(iso_writer *w, int fd);
/* Bytes queued and not yet written. */
static inline size_t iso_writer_pending(const iso_writer *w) { return w->len - w->off; }

/* The loom_request of an invoke call in a frame (both ends). A new object,
 * or NULL when out of memory. */
json_t *iso_request_to_json(const loom_request *req);
/* The other way: OUT's pointers borrow from V (valid while V is). 0, or -1
 * when V is not a request. */
int iso_request_from_json(json_t *v, loom_request *out);

/* ---- the daemon's side (iso.c) */

typedef struct iso iso_t;
typedef struct iso_call iso_call_t;

/* How one plugin's helpers run (docs/operations.md: plugins.isolate). */
typedef struct iso_limits {
    int processes;          /* helpers of the plugin (1..64) */
    uint64_t memory_bytes;  /* RLIMIT_AS of each helper; 0: none */
    uint64_t cpu_seconds;   /* RLIMIT_CPU of each call; 0: none */
    uint64_t timeout_ms;    /* a call running longer is answered timeout */
} iso_limits;

/* How a call ended. */
typedef enum iso_status {
    ISO_OK = 0,
    ISO_FAILED,             /* the plugin reported an error (code and message) */
    ISO_CRASHED,            /* the helper died or cannot start: plugin_crashed */
    ISO_TIMEOUT,            /* past the plugin's timeout: the helper was killed */
    ISO_NOMEM               /* the call could not be encoded or queued */
} iso_status;

typedef struct iso_result {
    iso_status status;
    json_t *output;          /* ISO_OK: a new reference the callee steals */
    const char *code;        /* ISO_FAILED: the plugin's code ("lambda_failed", ...) */
    const char *message;     /* why, for the error message (borrowed) */
} iso_result;

/* The end of a call, on the reactor thread, exactly once unless the call
 * was cancelled first. RES and its strings are borrowed for the call. */
typedef void (*iso_done_fn)(void *ud, iso_result *res);

/* Where the module logs: helper starts, crashes, restarts, and the lines a
 * plugin logs in its helper. DATA (a new reference, may be NULL) is stolen. */
typedef void (*iso_log_fn)(void *ud, int level, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A new set of isolated plugins over R (borrowed; must outlive it) running
 * HOST (the loom-plugin-host program, copied). NULL with errno set. */
iso_t *iso_new(reactor_t *r, const char *host, iso_log_fn log, void *ud);

/* Kills every helper (SIGKILL, then reaps it) and frees everything. Calls
 * still queued or in flight are dropped without their done callback, so the
 * engines must be gone first. NULL is a no-op. */
void iso_free(iso_t *iso);

/* Isolates plugin NAME, loaded from the shared object PATH, with LIMITS; its
 * helpers start now, and each start's init gets CONFIG (the plugin's
 * configuration, borrowed and copied; NULL for none). NAME and PATH are
 * copied. 0, or a negative errno (-EEXIST when NAME is isolated already,
 * -EINVAL for bad limits). */
int iso_add_plugin(iso_t *iso, const char *name, const char *path, const iso_limits *limits,
                   json_t *config);

/* SIGHUP: plugin NAME's configuration is now CONFIG (borrowed and copied;
 * NULL for none). Every running helper of it runs the plugin's reload hook
 * with it (a busy one after its call), and helpers started from now on get
 * it in their init. 0, -ENOENT when NAME is not isolated, -ENOMEM. */
int iso_reload(iso_t *iso, const char *name, json_t *config);

/* The name of the Ith isolated plugin (borrowed, valid until iso_free), or
 * NULL past the last. */
const char *iso_nth_plugin(const iso_t *iso, size_t i);

/* Whether calls of plugin NAME go to helpers. */
bool iso_isolated(const iso_t *iso, const char *name);

/* Starts a call of lambda FN ("plugin.name") of PLUGIN with INPUT and ARGS
 * (borrowed; encoded at once). DEADLINE_MS (CLOCK_MONOTONIC ms, 0 for none)
 * is the step's: the lambda sees the earlier of it and the plugin's timeout
 * as loom_deadline_ms. DONE(UD, result) ends it later, never from inside
 * this call. Returns the call's handle (owned by the module, valid until
 * DONE starts or iso_cancel), or NULL when out of memory. */
iso_call_t *iso_call(iso_t *iso, const char *plugin, const char *fn, json_t *input, json_t *args,
                     uint64_t deadline_ms, iso_done_fn done, void *ud);

/* Gives up on CALL: its DONE never runs. A call queued is dropped; a call
 * running in a helper is sent a cancel (loom_cancelled turns true there)
 * and the helper is killed and started again only when the lambda has not
 * returned within ISO_CANCEL_GRACE_MS. */
void iso_cancel(iso_t *iso, iso_call_t *call);

/* ---- invoke providers in helpers
 *
 * A provider with an invoke hook (an in-process model, say) of an isolated
 * plugin runs its instances in the plugin's helpers: each helper makes
 * every instance (the provider's init with the instance's configuration)
 * and runs the calls it is given; a crash fails the calls in flight in that
 * helper with plugin_crashed, as for lambdas. */
typedef struct iso_instance iso_instance_t;
typedef struct iso_invoke iso_invoke_t;

typedef struct iso_invoke_result {
    iso_status status;       /* ISO_OK, ISO_FAILED (the provider's code), ISO_CRASHED,
                                ISO_TIMEOUT (past the plugin's timeout), ISO_NOMEM */
    json_t *output;          /* ISO_OK: a new reference the callee steals */
    json_t *tool_calls;      /* ISO_OK (2.3): the answer's tool calls, a new reference
                                the callee steals, or NULL */
    loom_usage usage;        /* -1 for what the provider did not say */
    const char *code;        /* ISO_FAILED: "rate_limited", "upstream", ... (borrowed) */
    const char *message;     /* why (borrowed) */
    uint64_t retry_after_ms; /* ISO_FAILED: the wait the provider asked for; 0: none */
} iso_invoke_result;

/* The end of an invoke call, on the reactor thread, exactly once unless it
 * was cancelled first. RES is borrowed for the call. */
typedef void (*iso_invoke_done_fn)(void *ud, iso_invoke_result *res);

/* Instance NAME (copied; for messages) of provider PROVIDER (copied) of
 * isolated plugin PLUGIN, with CONFIG (borrowed and copied; NULL for none):
 * every helper of the plugin makes it now, or as it starts. NULL with errno
 * (ENOENT: PLUGIN is not isolated, ENOMEM). */
iso_instance_t *iso_instance_new(iso_t *iso, const char *plugin, const char *provider,
                                 const char *name, json_t *config);
/* Ends INST in every helper (the provider's fini). Its calls must have
 * ended or been cancelled. NULL is a no-op. */
void iso_instance_free(iso_instance_t *inst);

/* Starts REQ (borrowed; encoded at once) on INST. DEADLINE_MS
 * (CLOCK_MONOTONIC ms, 0: none) is the caller's, for loom_deadline_ms; the
 * plugin's timeout also ends the call (ISO_TIMEOUT). DONE(UD, result) ends
 * it later, never from inside this call. The handle is the module's, valid
 * until DONE starts or iso_invoke_cancel; NULL when out of memory. */
iso_invoke_t *iso_invoke(iso_instance_t *inst, const loom_request *req, uint64_t deadline_ms,
                         iso_invoke_done_fn done, void *ud);
/* Gives up on INV: DONE never runs; the helper running it calls the
 * provider's cancel hook. */
void iso_invoke_cancel(iso_invoke_t *inv);

/* Counts for `stats` and the bench: calls sent to helpers, helpers that
 * died on their own (crashes), calls past the plugin's timeout, calls given
 * up on while running (cancels: timeouts included), helpers killed because
 * a call given up on did not return within the grace, restarts, and helpers
 * serving now. */
typedef struct iso_stats {
    uint64_t calls, crashes, timeouts, cancels, grace_kills, restarts;
    uint64_t invokes;         /* invoke provider calls sent to helpers */
    size_t helpers_ready;
} iso_stats;
/* The sums over every isolated plugin. */
void iso_get_stats(const iso_t *iso, iso_stats *out);
/* Each isolated plugin's counts: {NAME: {"calls": N, "invokes": N, "crashes": N,
 * "timeouts": N, "cancels": N, "grace_kills": N, "restarts": N,
 * "helpers": N, "helpers_ready": N}}, a new object ({} for a NULL ISO), or
 * NULL when out of memory. */
json_t *iso_stats_json(const iso_t *iso);

/* ---- the helper's environment */

/* The helper's command line (what iso.c passes and iso_host.c reads):
 *   loom-plugin-host --fd N --plugin NAME --path FILE
 *                    [--memory BYTES] [--cpu SECONDS]
 * (the configuration comes in the init frame, not on the command line,
 * where every user of the machine could read it) */
#define ISO_HOST_PROGRAM "loom-plugin-host"

#endif
