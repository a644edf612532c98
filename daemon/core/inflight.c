/* inflight.c -- the file of plugin code in flight, and the crash handlers
 * that complete it (see inflight.h for why it is a mapped file). */
#include "daemon/core/inflight.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(inflight_header) == 64, "the header is 64 bytes");
_Static_assert(sizeof(inflight_slot) % 64 == 0, "slots fill whole cache lines");

#define ALTSTACK_SIZE ((size_t)64 << 10)

/* The crash handlers get no argument, so the mapping is found here (see
 * inflight.h). G_MAP is published with a release store after the file is
 * reset; G_GEN changes at each open and close so a thread takes a new slot. */
static inflight_header *g_map;
static size_t g_size;
static unsigned g_nslots;
static unsigned g_next;
static unsigned g_gen = 1;

/* The calling thread's slot (in the file, or its private one), the
 * generation it was taken in, and its index for the crash handler (-1:
 * none in the file). */
static _Thread_local inflight_slot *t_slot;
static _Thread_local unsigned t_gen;
static _Thread_local volatile sig_atomic_t t_index = -1;
static _Thread_local inflight_slot t_private;
/* Plugin calls the thread is inside: plugin code can make the engine run
 * more plugin code before it returns (a provider's timer completes its call
 * and the job's next lambda runs inline). The innermost call is recorded;
 * the slot is cleared when the outermost returns. */
static _Thread_local unsigned t_depth;

static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
#define NCRASH (sizeof crash_signals / sizeof crash_signals[0])

static inflight_slot *slots_of(inflight_header *h)
{
    return (inflight_slot *)(void *)(h + 1);
}

/* ---- the hot path */

/* The slow path of inflight_enter: the first call of a thread, or the
 * first after the file was opened or closed. */
static inflight_slot *take_slot(void)
{
    unsigned gen = __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE);
    inflight_header *m = __atomic_load_n(&g_map, __ATOMIC_ACQUIRE);
    inflight_slot *s = &t_private;
    int index = -1;
    if (m) {
        unsigned i = __atomic_fetch_add(&g_next, 1, __ATOMIC_RELAXED);
        if (i < g_nslots) {
            s = &slots_of(m)[i];
            s->tid = (int32_t)syscall(SYS_gettid);
            index = (int)i;
        }
    }
    t_slot = s;
    t_gen = gen;
    t_index = index;
    return s;
}

/* Copies SRC (NULL: "") into DST of CAP bytes, cut to fit: the length. */
static size_t put(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    return n;
}

inflight_slot *inflight_enter(const char *job, const char *step, const char *fn,
                              const char *fn_suffix)
{
    inflight_slot *s = t_slot;
    if (__builtin_expect(!s || t_gen != __atomic_load_n(&g_gen, __ATOMIC_RELAXED), 0))
        s = take_slot();
    t_depth++;
    uint32_t q = s->seq;
    __atomic_store_n(&s->seq, q + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the odd count before the text */
    put(s->job, sizeof s->job, job);
    put(s->step, sizeof s->step, step);
    size_t n = put(s->fn, sizeof s->fn, fn);
    if (fn_suffix && n + 1 < sizeof s->fn) {
        s->fn[n] = '.';
        put(s->fn + n + 1, sizeof s->fn - n - 1, fn_suffix);
    }
    __atomic_store_n(&s->seq, q + 2, __ATOMIC_RELEASE);
    return s;
}

void inflight_leave(inflight_slot *s)
{
    if (t_depth > 0 && --t_depth > 0)
        return;
    uint32_t q = s->seq;
    __atomic_store_n(&s->seq, q + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    s->job[0] = '\0';
    __atomic_store_n(&s->seq, q + 2, __ATOMIC_RELEASE);
}

/* ---- the previous process */

const inflight_entry *inflight_prev_slot(const inflight_prev *p, int slot)
{
    for (size_t i = 0; p && i < p->n; i++)
        if (p->entries[i].slot == slot)
            return &p->entries[i];
    return NULL;
}

void inflight_prev_free(inflight_prev *p)
{
    if (!p)
        return;
    free(p->entries);
    p->entries = NULL;
    p->n = 0;
}

const char *inflight_signal_name(int sig, char *buf, size_t len)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = { { SIGSEGV, "SIGSEGV" }, { SIGBUS, "SIGBUS" }, { SIGILL, "SIGILL" },
                  { SIGFPE, "SIGFPE" },   { SIGABRT, "SIGABRT" } };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].sig == sig) {
            snprintf(buf, len, "%s", names[i].name);
            return buf;
        }
    snprintf(buf, len, "signal %d", sig);
    return buf;
}

/* Reads the previous file's text BUF (LEN bytes) into P. A file of another
 * format or size says nothing: P stays "not found". 0 or -ENOMEM. */
static int read_prev(const char *buf, size_t len, inflight_prev *p)
{
    inflight_header h;
    if (len < sizeof h)
        return 0;
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, INFLIGHT_MAGIC, sizeof h.magic) != 0 || h.version != INFLIGHT_VERSION ||
        h.slot_size != sizeof(inflight_slot) || h.nslots > INFLIGHT_MAX_SLOTS ||
        len != sizeof h + (size_t)h.nslots * sizeof(inflight_slot))
        return 0;
    p->found = true;
    p->clean = h.clean == 1;
    p->signal = h.crash_signal;
    p->crash_slot = h.crash_slot >= 0 && (uint32_t)h.crash_slot < h.nslots ? h.crash_slot : -1;
    p->pid = h.pid;
    if (h.nslots && !(p->entries = calloc(h.nslots, sizeof *p->entries)))
        return -ENOMEM;
    for (uint32_t i = 0; i < h.nslots; i++) {
        inflight_slot s;
        memcpy(&s, buf + sizeof h + (size_t)i * sizeof s, sizeof s);
        if (s.seq & 1) { /* died mid-write: outside plugin code */
            p->torn++;
            continue;
        }
        s.job[sizeof s.job - 1] = s.step[sizeof s.step - 1] = s.fn[sizeof s.fn - 1] = '\0';
        if (!s.job[0])
            continue;
        inflight_entry *e = &p->entries[p->n++];
        e->slot = (int)i;
        memcpy(e->job, s.job, sizeof e->job);
        memcpy(e->step, s.step, sizeof e->step);
        memcpy(e->fn, s.fn, sizeof e->fn);
    }
    return 0;
}

/* The whole of FD (LEN bytes) into a new buffer, or NULL with errno. */
static char *read_all(int fd, size_t len)
{
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    size_t off = 0;
    while (off < len) {
        ssize_t r = pread(fd, buf + off, len - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            errno = e;
            return NULL;
        }
        off += (size_t)r;
    }
    return buf;
}

int inflight_open(const char *dir, unsigned nslots, inflight_prev *prev, char *err, size_t errlen)
{
    char path[4096];
    int fd = -1, rc = 0;
    char *buf = NULL;
    memset(prev, 0, sizeof *prev);
    prev->crash_slot = -1;
    if (!dir || nslots < 1 || nslots > INFLIGHT_MAX_SLOTS || g_map) {
        snprintf(err, errlen, "bad arguments (or the file is open already)");
        return -EINVAL;
    }
    if (snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_FILE) >= (int)sizeof path) {
        snprintf(err, errlen, "the state directory's path is too long");
        return -ENAMETOOLONG;
    }
    const char *what = "open";
    if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        goto fail_errno;
    struct stat st;
    what = "stat";
    if (fstat(fd, &st) < 0)
        goto fail_errno;
    /* the previous process's record first: resetting comes after */
    if (st.st_size > 0 && (size_t)st.st_size <= sizeof(inflight_header) +
                                                   (size_t)INFLIGHT_MAX_SLOTS * sizeof(inflight_slot)) {
        what = "read";
        if (!(buf = read_all(fd, (size_t)st.st_size)))
            goto fail_errno;
        if ((rc = read_prev(buf, (size_t)st.st_size, prev)) < 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto fail;
        }
    }
    size_t size = sizeof(inflight_header) + (size_t)nslots * sizeof(inflight_slot);
    /* blocks are allocated now: a page of a sparse file written through a
     * mapping on a full disk would kill the process with SIGBUS */
    what = "resize";
    if (ftruncate(fd, (off_t)size) < 0)
        goto fail_errno;
    what = "allocate";
    if ((rc = posix_fallocate(fd, 0, (off_t)size)) != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
        errno = rc;
        goto fail_errno;
    }
    what = "map";
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        goto fail_errno;
    close(fd);
    free(buf);
    memset(m, 0, size);
    inflight_header *h = m;
    memcpy(h->magic, INFLIGHT_MAGIC, sizeof h->magic);
    h->version = INFLIGHT_VERSION;
    h->nslots = nslots;
    h->slot_size = sizeof(inflight_slot);
    h->crash_slot = -1;
    h->pid = (int32_t)getpid();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->started_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    g_size = size;
    g_nslots = nslots;
    __atomic_store_n(&g_next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_map, h, __ATOMIC_RELEASE);
    __atomic_add_fetch(&g_gen, 1, __ATOMIC_RELEASE);
    return 0;
fail_errno:
    rc = -errno;
    snprintf(err, errlen, "%s: cannot %s: %s", path, what, strerror(errno));
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    inflight_prev_free(prev);
    return rc;
}

void inflight_mark_clean(void)
{
    inflight_header *m = __atomic_load_n(&g_map, __ATOMIC_ACQUIRE);
    if (m)
        __atomic_store_n(&m->clean, 1, __ATOMIC_RELEASE);
}

void inflight_close(void)
{
    inflight_header *m = __atomic_exchange_n(&g_map, NULL, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&g_gen, 1, __ATOMIC_RELEASE);
    if (m)
        munmap(m, g_size);
}

/* ---- crashes */

/* Async-signal-safe: stores into the mapping, getpid, raise. Blames the
 * crashing thread only for a fault of its own (si_code > 0: the kernel
 * raised it for an instruction) or a signal it sent itself (abort): the
 * same signal sent by another process (kill -SEGV) may land on any thread
 * and names no plugin code. */
static void on_crash(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    inflight_header *m = __atomic_load_n(&g_map, __ATOMIC_ACQUIRE);
    if (m) {
        bool own = si && (si->si_code > 0 || ((si->si_code == SI_TKILL || si->si_code == SI_USER) &&
                                              si->si_pid == getpid()));
        int32_t zero = 0;
        if (__atomic_compare_exchange_n(&m->crash_signal, &zero, sig, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            __atomic_store_n(&m->crash_slot, own ? (int32_t)t_index : -1, __ATOMIC_RELEASE);
    }
    /* the disposition is back to the default (SA_RESETHAND): the signal,
     * pending until this returns, ends the process as it would have */
    raise(sig);
    errno = saved;
}

int inflight_install_crash_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NCRASH; i++)
        if (sigaction(crash_signals[i], &sa, NULL) < 0)
            return -errno;
    return 0;
}

typedef struct altstack {
    void *base;
    size_t size;
} altstack;

void *inflight_thread_init(void)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < NCRASH; i++)
        sigaddset(&set, crash_signals[i]);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    /* one the thread has already (the sanitizers give every thread one)
     * stays: whoever installed it also frees it */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return NULL;
    altstack *a = malloc(sizeof *a);
    if (!a)
        return NULL;
    a->size = ALTSTACK_SIZE;
    a->base = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                   -1, 0);
    stack_t ss = { .ss_sp = a->base, .ss_flags = 0, .ss_size = a->size };
    if (a->base == MAP_FAILED || sigaltstack(&ss, NULL) < 0) {
        if (a->base != MAP_FAILED)
            munmap(a->base, a->size);
        free(a);
        return NULL;
    }
    return a;
}

void inflight_thread_fini(void *t)
{
    altstack *a = t;
    if (!a)
        return;
    stack_t off = { .ss_sp = NULL, .ss_flags = SS_DISABLE, .ss_size = 0 };
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == a->base)
        (void)sigaltstack(&off, NULL);
    munmap(a->base, a->size);
    free(a);
}
