/* wfdir_internal.h -- what wfdir.c (the directory: events, scans, compiles)
 * and wfdir_set.c (the served set: checks, swaps, lookups) share. Not for
 * other modules: they use wfdir.h. */
#ifndef LOOM_DAEMON_WFDIR_INTERNAL_H
#define LOOM_DAEMON_WFDIR_INTERNAL_H

#include <pthread.h>

#include "common/containers.h"
#include "daemon/wfdir/wfdir.h"

/* What the last inotify event (or a rescan) said about a file, until the
 * next flush acts on it. WRITING is a file created and not yet closed: it is
 * left alone until its close, even by a rescan. */
typedef enum {
    WFDIR_EV_NONE,
    WFDIR_EV_READY,   /* closed after writing, moved in, or found by a rescan: read it */
    WFDIR_EV_GONE,    /* deleted or moved away: look whether it is still there */
    WFDIR_EV_WRITING
} wfdir_ev;

/* One file of the directory. An entry exists from its first event or scan
 * until it is gone; one that was never read yet (WRITING) is not listed. */
typedef struct wfdir_file {
    char *base;             /* file name in the directory (owned) */
    char *path;             /* DIR/BASE, the name in messages (owned) */
    wfdir_ev ev;
    bool gone;              /* no longer a workflow file: dropped by the next settle */
    bool seen;              /* scratch for a rescan */
    bool hashed;            /* HASH is of the bytes last read (compiled or failed) */
    uint64_t gen;           /* of the latest read asked for: an older one's result is
                               stale (unique across files, from wfdir.gen_seq) */
    uint64_t hash;

    dsl_graph *graph;       /* the served version (one reference), or NULL */
    wfdir_version version;  /* of GRAPH */
    int64_t loaded_us;      /* CLOCK_REALTIME when GRAPH was swapped in */
    uint64_t claim;         /* when GRAPH's name was claimed: orders checks */

    dsl_graph *pending;     /* compiled, waiting for the checks across the set (one
                               reference), or NULL */
    uint64_t pending_claim; /* when PENDING was compiled: the first newcomer wins a name */
    bool trying;            /* scratch for a settle: PENDING is in the set being checked */

    char *declared;         /* the name the latest content declares, if known (owned) */
    char *compile_error;    /* the latest content does not compile (owned text) */
    char *pending_error;    /* PENDING does not check against the set (owned text) */
    char *check_error;      /* GRAPH does not check against the set any more (owned text) */
} wfdir_file;

/* name -> how many versions of it were served, so load counters never repeat. */
typedef struct wfdir_loads {
    char *name;
    uint64_t n;
} wfdir_loads;

struct wfdir {
    reactor_t *r;
    char *dir;
    const dsl_registry *registry;   /* borrowed */
    dsl_options copt;               /* compiler options; registry borrowed */
    wfdir_callbacks cb;
    uint64_t debounce_us, retry_us;

    int ifd;                        /* inotify instance, or -1 */
    int wd;                         /* watch of DIR, or -1 while the directory is lost */
    bool watch_lost_logged;
    bool rescan_wanted;             /* overflow, lost watch, wfdir_rescan */
    bool busy;                      /* in a flush: callbacks must not reenter */
    reactor_timer_t *timer;         /* the next flush, or NULL */

    wfdir_file **files;             /* sorted by base */
    size_t nfiles, capfiles;
    wfdir_file **index;             /* the served files, sorted by graph name */
    size_t nindex, capindex;
    wfdir_loads *loads;             /* sorted by name */
    size_t nloads, caploads;
    uint64_t seq;                   /* claim counter */
    uint64_t gen_seq;               /* wfdir_file.gen counter */

    /* The compile thread: reads, hashes and compiles the files a flush
     * marked, so a 50 MB workflow never holds the reactor. Started with
     * the first such file. LOCK guards QUEUE, STOPPING and DONE. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool thread_started, stopping;
    list_link queue;                /* wfdir_job.link, oldest first */
    reactor_handback_t done;        /* finished jobs, to wfdir_deliver */
    size_t outstanding;             /* jobs queued and not yet delivered (reactor thread) */
    bool unsettled;                 /* results applied, the settle not yet run: it
                                       waits for the last job of the burst, so that a
                                       rename (one file gone, one new) swaps at once */
};

/* What reading and compiling one file found. Every pointer owned. */
typedef struct wfdir_result {
    int rc;                 /* 0, or read_workflow's negative errno */
    bool unchanged;         /* same hash as before: nothing to do */
    uint64_t hash;
    dsl_graph *graph;       /* compiled, or NULL */
    char *text;             /* warnings (GRAPH) or errors (no GRAPH), or NULL */
    char *declared;         /* no GRAPH: the name the bytes declare, if readable */
} wfdir_result;

/* One file for the compile thread. */
typedef struct wfdir_job {
    list_link link;         /* in wfdir.queue, then in the handback */
    char *base, *path;      /* owned copies: the file may go meanwhile */
    uint64_t gen;
    bool hashed;
    uint64_t hash;
    dsl_options copt;       /* a copy, with its own copy of the registry (owned) */
    size_t max_file;
    wfdir_result res;
} wfdir_job;

/* ---- wfdir_compile.c */

/* Reads PATH (at most MAX + 1 bytes) and, unless its hash is HASH (when
 * HASHED), compiles it with COPT into OUT. Any thread: touches no wfdir. */
void wfdir_work(const char *path, size_t max, const dsl_options *copt, bool hashed,
                uint64_t hash, wfdir_result *out);
/* Frees what RES still holds and zeroes it. */
void wfdir_result_clear(wfdir_result *res);
/* The most bytes a workflow file may have. */
size_t wfdir_max_file(const wfdir *w);
/* Sets up W's lock, queue and handback (the thread starts later). 0 or
 * -errno. */
int wfdir_compiler_init(wfdir *w);
/* Stops and joins the thread, then frees every job not yet delivered. */
void wfdir_compiler_fini(wfdir *w);
/* Queues F's latest content for the thread (F->gen is bumped: a result
 * for an older gen is dropped). 0 or -ENOMEM / -errno (the caller then
 * compiles here). */
int wfdir_compile_later(wfdir *w, wfdir_file *f);
/* Frees J (handed back, out of every list) and what it holds. */
void wfdir_job_release(wfdir_job *j);

/* ---- wfdir.c */

/* Takes RES into F (see process_file). Reactor thread. */
void wfdir_apply(wfdir *w, wfdir_file *f, wfdir_result *res);
/* The handback: applies each finished job that is still F's latest, then
 * settles. */
void wfdir_deliver(list_link *batch, void *ud);

/* ---- wfdir_set.c */

/* Applies what the flush found: drops gone files, swaps in every waiting
 * version that checks against the set, records the errors of the others,
 * rebuilds the index and calls `changed`. 0 or -ENOMEM (then nothing waiting
 * was swapped in; the next flush tries again). */
int wfdir_settle(wfdir *w);

/* Frees F and the references it holds. */
void wfdir_file_free(wfdir_file *f);

/* ---- wfdir.c: messages */

void wfdir_logf(wfdir *w, wfdir_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs TEXT (lines joined by '\n') one line at a time. */
void wfdir_log_text(wfdir *w, wfdir_log_level level, const char *text);
/* D's diagnostics as lines joined by '\n': a new string, or NULL when out of
 * memory or when D is empty. */
char *wfdir_diags_text(const dsl_diags *d);

#endif
