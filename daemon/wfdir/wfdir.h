/* wfdir.h -- the drop-in workflows directory: every workflow file of one
 * directory compiled, watched with inotify and swapped in when it changes.
 *
 * Owns: the inotify descriptor and its timers, one entry per workflow file,
 * and a reference to every graph it serves or holds waiting.
 * May call: dsl/ (compiling and checking), daemon/core (the reactor),
 * common/ and libc.
 * Must never call: the engine, the store, the server, jobs or loomd: what it
 * has to say goes out through its callbacks.
 *
 * A workflow is served under the `name:` its file declares (not the file
 * name). A lookup hands out a graph reference, so a job keeps the version it
 * started with however often the file changes afterwards.
 *
 * What is a workflow file: a regular file (or a symlink to one) directly in
 * the directory, named *.yaml or *.yml, not starting with '.' or '#'. That
 * leaves out editors' and tools' temporary files: foo.yaml~, .foo.yaml.swp,
 * foo.yaml.tmp, .#foo.yaml, #foo.yaml#, 4913.
 *
 * When a file is (re)compiled: on IN_CLOSE_WRITE or IN_MOVED_TO, never on a
 * write alone, so a file still being written is not read. Events are gathered
 * for a short debounce (default 30 ms) from the first one, so an editor's save
 * (rename, create, write, close) compiles once and shows within ~100 ms.
 * Unchanged bytes (same content hash) are not compiled again.
 *
 * What is served (the rules, in order):
 * - A file that fails to compile keeps its last good version in service; the
 *   error is logged (FILE:LINE:COL lines) and shown in wfdir_list until a
 *   later version compiles.
 * - A new version is swapped in only if it also passes the checks across the
 *   set: its name is not already served from another file, and its `use`s
 *   name served workflows (or registry workflows) with no cycle. Otherwise it
 *   waits beside the file, with the error shown, and is checked again after
 *   every later change, so dropping summarize.yaml after digest.yaml, or
 *   deleting the first of two files declaring one name, brings the waiting
 *   version in without touching its file. The served set therefore never has
 *   two files for one name, nor a cycle of `use`.
 * - Two files declaring one name: the one already serving it keeps it; among
 *   newcomers the first compiled wins (at start: file name order).
 * - A workflow whose dependency vanished (the file `use`d was deleted or now
 *   declares another name) stays in service with
 *   its current graph and shows "unknown workflow" as its error: it may only
 *   `use` it on a rare branch, and the engine resolves `use` by name when the
 *   node runs, failing that node cleanly. The error clears by itself when the
 *   dependency is served again.
 * - A deleted (or renamed-away) file removes its workflow. Running jobs hold
 *   references and are unaffected.
 * - The directory itself moved or deleted: its workflows stay in service
 *   (events that deleted files one by one, as `rm -r` makes, still removed
 *   them), the directory is looked for again every retry interval, and once
 *   it is back it is rescanned. So `mv new workflows` swaps a whole set.
 * - IN_Q_OVERFLOW (events lost) or wfdir_rescan (SIGHUP): the whole directory
 *   is read again and reconciled, compiling only what changed (by content
 *   hash, on the compile thread like any other change).
 *
 * A missing directory at start is an error unless wfdir_options.create is
 * set: a typo in a config must not give a daemon that silently serves
 * nothing. loomd may set `create` for its default ./workflows.
 *
 * Threads: everything here is for the reactor thread, including wfdir_get;
 * a graph obtained from it may be used from any thread (graphs are immutable,
 * their refcount atomic). A change inotify reports is read, hashed and
 * compiled on the wfdir's own compile thread (started with the first such
 * change, at a lower priority), so a workflow of tens of megabytes never
 * holds the reactor; the result is applied on the reactor thread, and only
 * if no newer change of that file was seen meanwhile. The settle waits for
 * the last compile of a burst, so a rename swaps at once. A rescan (SIGHUP,
 * an overflow) reads the directory's names on the reactor and hands every
 * file to that thread the same way. Only wfdir_new compiles on the calling
 * thread, before it returns: at start the daemon is not serving yet, and
 * its first answer must already see the workflows.
 *
 * Ownership: a wfdir owns one reference to each graph it serves or holds
 * waiting; wfdir_get returns a new reference (caller unrefs); every string
 * passed to a callback is borrowed for the duration of the call. Functions
 * returning int return 0 or a negative errno. */
#ifndef LOOM_DAEMON_WFDIR_H
#define LOOM_DAEMON_WFDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/core/reactor.h"
#include "dsl/dsl.h"

typedef struct wfdir wfdir;

/* A workflow version: the content hash identifies the bytes (stable across
 * restarts, what a job records); the load counter is for people ("v3"). */
typedef struct wfdir_version {
    char hash[17];  /* 16 hex digits of the file bytes' 64-bit FNV-1a: graph->version */
    uint64_t load;  /* 1 for the first version of this name this wfdir served, then
                       2, 3, ...; never reused, even after the name was removed */
} wfdir_version;

typedef enum {
    WFDIR_LOG_ERROR,   /* a file that does not compile or check; an I/O failure */
    WFDIR_LOG_WARNING, /* compiler warnings; the directory vanished; events were lost */
    WFDIR_LOG_INFO     /* the directory came back; a rescan */
} wfdir_log_level;

/* One change of the served set, after it has been applied (so wfdir_get in
 * the callback sees the new state). */
typedef struct wfdir_change {
    const char *name;
    const char *file;                  /* serving the new version; the old one's when removed */
    const wfdir_version *old_version;  /* NULL: the name is new */
    const wfdir_version *new_version;  /* NULL: the name was removed */
} wfdir_change;

/* Every member may be NULL. Callbacks run on the reactor thread, from
 * wfdir_new, wfdir_rescan or a reactor callback; they may call wfdir_get,
 * wfdir_list and wfdir_count, but not wfdir_rescan (-EBUSY) or wfdir_free. */
typedef struct wfdir_callbacks {
    /* One line, no newline: a diagnostic (FILE:LINE:COL: error: ...) or a
     * sentence about the directory. Set changes go to `changed` only. */
    void (*log)(void *ud, wfdir_log_level level, const char *msg);
    /* One call per name whose served version changed, in name order. */
    void (*changed)(void *ud, wfdir *w, const wfdir_change *c);
    void *ud;
} wfdir_callbacks;

typedef struct wfdir_options {
    uint64_t debounce_us;   /* 0: 30 ms. From the first event of a burst to the compile */
    uint64_t retry_us;      /* 0: 500 ms. How often a vanished directory is looked for */
    bool create;            /* create DIR (mode 0755, not its parents) when it is missing */
    dsl_ylimits limits;     /* for the compiler; zero fields take its defaults */
    size_t max_file_size;   /* 0: the compiler's default */
} wfdir_options;

/* A watcher of DIR (copied) on R (borrowed, must outlive it). REGISTRY
 * (borrowed, must outlive it; may be NULL: nothing checked) lists the
 * providers, lambdas and extra workflows that exist. OPT and CB (may be
 * NULL) are copied. Scans and compiles DIR before returning, on the calling
 * thread (synchronous by design: loomd calls it before it is ready, so no
 * client waits on that reactor yet; every later change compiles on the
 * compile thread); files that fail are logged and listed, they do not fail
 * the call. Returns a new wfdir (free with wfdir_free), or NULL with errno
 * set and a sentence in ERR (ERRLEN bytes; ERR may be NULL): ENOENT or
 * ENOTDIR for DIR (EINVAL: none given), EACCES when it cannot be read,
 * EMFILE/ENOSPC when no inotify instance or watch is left, ENOMEM. */
wfdir *wfdir_new(reactor_t *r, const char *dir, const dsl_registry *registry,
                 const wfdir_options *opt, const wfdir_callbacks *cb, char *err, size_t errlen);

/* Unregisters from the reactor, drops every graph reference it holds (jobs'
 * references stay valid) and frees W. Not from a wfdir callback. NULL is a
 * no-op. */
void wfdir_free(wfdir *w);

/* The graph served as NAME: a new reference (caller unrefs), or NULL. Its
 * version goes to *VERSION when VERSION is non-NULL (zeroed when NULL is
 * returned). */
dsl_graph *wfdir_get(const wfdir *w, const char *name, wfdir_version *version);

/* The graph served as NAME, borrowed: valid until control returns to the
 * reactor (take a reference to keep it). Exactly an engine_workflow_lookup_fn
 * with UD the wfdir, for engine_set_workflow_lookup. */
dsl_graph *wfdir_engine_lookup(void *ud, const char *name);

/* How many workflows are served. */
size_t wfdir_count(const wfdir *w);

/* One workflow file, as wfdir_list shows it. */
typedef struct wfdir_entry {
    char *name;             /* the name served from this file; when none, the one its
                               latest content declares if that can be read, else NULL */
    char *file;             /* DIR/FILE, as in messages */
    bool served;            /* wfdir_get(name) returns this file's graph */
    wfdir_version version;  /* of the served graph; zeroed when !served */
    int64_t loaded_us;      /* CLOCK_REALTIME microseconds when that version was
                               swapped in; 0 when !served */
    char *error;            /* why the latest content is not what is served, or why the
                               served graph is unsound now: diagnostics as
                               FILE:LINE:COL: error: ... lines joined by '\n'; NULL: none */
} wfdir_entry;

/* A snapshot of every workflow file known (compiled, waiting or failed),
 * sorted by file name, as a new array of *N entries in *OUT (free with
 * wfdir_list_free). A file that was never read (still being written) is not
 * listed. 0 or -ENOMEM. */
int wfdir_list(const wfdir *w, wfdir_entry **out, size_t *n);
void wfdir_list_free(wfdir_entry *v, size_t n);

/* Reads the whole directory again, as after an inotify overflow: new files
 * are compiled, changed ones recompiled (by content hash), vanished ones
 * removed, with no debounce. For SIGHUP, or for what inotify cannot see (the
 * target of a symlink changed, a network file system). If the watch was lost
 * it is set up again first. Asynchronous: only the directory's names are
 * read before it returns; the files are read, hashed and compiled on the
 * compile thread, and what changed is applied on the reactor thread once the
 * last of them is done, with one round of `changed` in name order (the same
 * set checks as a drop-in). Until then the set served is the one before the
 * rescan; wfdir_compiling says when it is over. A file created and not yet
 * closed is still left to its close. Only when the compile thread cannot be
 * used (no memory, no thread) does it compile here, and then `changed` runs
 * before it returns. Returns 0; -ENOENT etc. when DIR cannot be read (what
 * is served is left alone); -EBUSY from a wfdir callback. */
int wfdir_rescan(wfdir *w);

/* How many files are being read or compiled off the reactor thread, their
 * result not yet applied: 0 once every change seen so far (a rescan's too)
 * is applied and its `changed` calls have run. */
size_t wfdir_compiling(const wfdir *w);

/* Compiles BUF (LEN bytes, borrowed), named FILE in messages, with W's
 * registry and limits, on the calling thread: for a job whose version is no
 * longer served (its text comes from the job store). A new graph, or NULL
 * with the first error in ERR (ERRLEN bytes). The graph is not served. */
dsl_graph *wfdir_compile_text(const wfdir *w, const char *file, const char *buf, size_t len,
                              char *err, size_t errlen);

/* A copy of REG in one allocation (free with free()), for a compile on
 * another thread while the original may be rebuilt: dsl_registry_dup, so
 * every list, lambda signature and string is copied and the compile never
 * reads the daemon's or a plugin's memory. NULL when REG is NULL or out of
 * memory. */
dsl_registry *wfdir_registry_dup(const dsl_registry *reg);

#endif
