/* wfdir_internal.h -- what wfdir.c (the directory: events, scans, compiles)
 * and wfdir_set.c (the served set: checks, swaps, lookups) share. Not for
 * other modules: they use wfdir.h. */
#ifndef LOOM_DAEMON_WFDIR_INTERNAL_H
#define LOOM_DAEMON_WFDIR_INTERNAL_H

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
};

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
