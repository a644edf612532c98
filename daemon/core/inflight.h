/* inflight.h -- which plugin code each thread is running, kept in a small
 * file that outlives the process: what a crash leaves behind for the next
 * start to read.
 *
 * Owns: the file DIR/inflight, mapped MAP_SHARED for the life of the
 * process; one slot in it per thread that runs plugin code (the reactor
 * thread, each worker of the pool); the crash handlers (SIGSEGV, SIGBUS,
 * SIGILL, SIGFPE, SIGABRT), which note the signal and the crashing
 * thread's slot in the file's header before the process dies.
 * May call: libc only.
 * Must never call: anything of Loom's above daemon/core: it records
 * strings it is given (a job id, a step, a function) and knows nothing of
 * jobs or the store.
 *
 * Why a mapped file and not a store write per step: a write into a shared
 * mapping is a few stores into memory, with no system call and no fsync on
 * the path of every plugin call, yet the kernel keeps the page when the
 * process dies, however it dies (SIGSEGV, kill -9, abort): the next process
 * reads what was in flight at that moment. Only what is running plugin code
 * is recorded, so a daemon killed while its jobs wait on HTTP blames none
 * of them. (A power cut of the whole machine may leave an older page: the
 * file says what the last process did, not what the last boot did.)
 *
 * Slots. A thread gets its slot the first time it enters plugin code: the
 * next free index, taken with an atomic increment and kept in a
 * _Thread_local, so the hot path is a thread-local read, a few stores and
 * two counter increments. Threads beyond the file's slots (more threads
 * than inflight_open was told of), and every thread while no file is open
 * (tests, `loomctl run`), write into a private slot of their own that
 * nobody reads, at the same cost.
 *
 * Torn writes. Each slot has a sequence counter, odd while the slot is
 * being written. A slot left odd belongs to a thread that died between its
 * two increments: outside plugin code (the call had not started, or had
 * returned), so it is read as nothing in flight.
 *
 * Global state: the mapping, its size and the slot counter are the
 * module's own static variables, because the crash handlers (which get no
 * argument) must find them; the handlers only store into the mapping. */
#ifndef LOOM_DAEMON_INFLIGHT_H
#define LOOM_DAEMON_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the file's format (version 1), for readers and tests.
 * Native byte order: it is read back by the next process on the same
 * machine, never shipped elsewhere. A file of another version or size is
 * ignored (and rewritten) at open. */

#define INFLIGHT_FILE "inflight"
#define INFLIGHT_MAGIC "LOOMINFL" /* 8 bytes, no NUL */
#define INFLIGHT_VERSION 1
#define INFLIGHT_JOB_MAX 32    /* each string is cut to fit, NUL-terminated */
#define INFLIGHT_STEP_MAX 224
#define INFLIGHT_FN_MAX 120
#define INFLIGHT_MAX_SLOTS 4096

typedef struct inflight_header {
    char magic[8];             /* INFLIGHT_MAGIC */
    uint32_t version;          /* INFLIGHT_VERSION */
    uint32_t nslots;           /* slots after the header */
    uint32_t slot_size;        /* sizeof (inflight_slot) */
    int32_t clean;             /* 1: the process ended through its clean exit */
    int32_t crash_signal;      /* set by a crash handler: the signal; 0: none */
    int32_t crash_slot;        /* the crashing thread's slot; -1: none (no slot) */
    int32_t pid;               /* the process that wrote it */
    int32_t reserved;
    int64_t started_ms;        /* when it opened the file (CLOCK_REALTIME) */
    char pad[16];              /* to 64 bytes */
} inflight_header;

typedef struct inflight_slot {
    uint32_t seq;              /* even: stable; odd: being written */
    int32_t tid;               /* the thread that took the slot */
    char job[INFLIGHT_JOB_MAX];    /* "": no plugin code in flight */
    char step[INFLIGHT_STEP_MAX];  /* the node path */
    char fn[INFLIGHT_FN_MAX];      /* "plugin.fn" of a lambda, "provider.invoke" */
} inflight_slot;

/* ---- what the previous process left */

typedef struct inflight_entry {
    int slot;
    char job[INFLIGHT_JOB_MAX];
    char step[INFLIGHT_STEP_MAX];
    char fn[INFLIGHT_FN_MAX];
} inflight_entry;

typedef struct inflight_prev {
    bool found;                /* a file of this format was there */
    bool clean;                /* it ended through its clean exit */
    int signal;                /* the crash signal its handler noted; 0: none */
    int crash_slot;            /* the crashing thread's slot; -1: none */
    int64_t pid;               /* the process that wrote it */
    inflight_entry *entries;   /* owned: the slots with plugin code in flight */
    size_t n;
    size_t torn;               /* slots left mid-write (read as nothing in flight) */
} inflight_prev;

/* The entry of slot SLOT in P, or NULL when that slot had nothing in
 * flight. Borrowed from P. */
const inflight_entry *inflight_prev_slot(const inflight_prev *p, int slot);

/* Frees what P holds (not P). */
void inflight_prev_free(inflight_prev *p);

/* "SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", else "signal N" in
 * BUF (which is returned). */
const char *inflight_signal_name(int sig, char *buf, size_t len);

/* ---- opening and closing: the daemon's main thread, once */

/* Opens (creating it 0600) DIR/inflight with NSLOTS slots (1 ..
 * INFLIGHT_MAX_SLOTS): first reads what the previous process left into
 * *PREV (zeroed when there was nothing of this format; free it with
 * inflight_prev_free), then resets the file for this process and maps it.
 * Call it while holding the state directory's lock (the store's), so two
 * processes never share the file. 0, or a negative errno with one line for
 * people in ERR. */
int inflight_open(const char *dir, unsigned nslots, inflight_prev *prev, char *err, size_t errlen);

/* Notes in the file that this process is ending cleanly: the next start
 * blames nobody. Any thread; a no-op when no file is open. */
void inflight_mark_clean(void);

/* Unmaps the file. Only once no thread can enter plugin code any more
 * (the pool joined); then writes go to private slots again. */
void inflight_close(void);

/* ---- the hot path: any thread */

/* Records that the calling thread is about to run plugin code FN (with
 * FN_SUFFIX appended after a dot, unless NULL: "mock" + "invoke" gives
 * "mock.invoke") for step STEP of job JOB. Strings are copied (cut to
 * fit); NULL is "". Returns the slot to hand to inflight_leave. No system
 * call; never fails. */
inflight_slot *inflight_enter(const char *job, const char *step, const char *fn,
                              const char *fn_suffix);

/* The plugin code recorded in S returned. Calls nest (plugin code can make
 * the engine run more plugin code before it returns: a provider's timer
 * completes its call and the next lambda runs inline): the innermost is
 * recorded, and the slot is cleared when the outermost returns. */
void inflight_leave(inflight_slot *s);

/* ---- crashes */

/* Installs the crash handlers (sigaction, SA_ONSTACK | SA_RESETHAND | SA_SIGINFO) for
 * SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT. Each notes the signal and
 * the crashing thread's slot in the file's header, then raises the signal
 * again with its default action, so the process still dies of it (a
 * supervisor sees the crash, a core is dumped). The handlers do not chain
 * to a handler installed before them (under AddressSanitizer, its SEGV
 * report): run with ASAN_OPTIONS=handle_segv=0 to keep ours in every case.
 * 0 or a negative errno. */
int inflight_install_crash_handlers(void);

/* Prepares the calling thread to run plugin code: unblocks the crash
 * signals (a synchronous SIGSEGV on a thread that blocks it kills the
 * process without running any handler) and gives the thread an alternate
 * signal stack when it has none (a stack overflow must still reach the
 * handler). Returns what inflight_thread_fini frees (NULL: nothing). */
void *inflight_thread_init(void);

/* Before the thread prepared by inflight_thread_init exits: removes and
 * frees the stack it installed (T), if any. */
void inflight_thread_fini(void *t);

#endif
