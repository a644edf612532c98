/* store_vfs.c -- a fault-injecting SQLite VFS, for tests.
 *
 * It wraps the default VFS and fails writes and syncs as a store_faults_t
 * says, the way SQLite tests itself: the disk filling up or failing at a
 * chosen moment, then healing, deterministically and without root. Each
 * store opened with a schedule registers a VFS of its own, named after its
 * address, and unregisters it when it closes, so no state is shared
 * between stores. In loomd (no schedule) none of this is used. */
#include "daemon/store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store_faults {
    pthread_mutex_t lock;
    unsigned countdown[2]; /* per store_fault_on_t: the fault arms when it reaches 0 */
    bool armed[2];         /* counting down */
    bool failing[2];       /* every call fails until healed */
    int rc[2];
    uint64_t injected;
};

store_faults_t *store_faults_new(void)
{
    store_faults_t *f = calloc(1, sizeof *f);
    if (f && pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        return NULL;
    }
    return f;
}

void store_faults_free(store_faults_t *f)
{
    if (!f)
        return;
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void store_faults_fail(store_faults_t *f, store_fault_on_t on, unsigned nth, int sqlite_rc)
{
    pthread_mutex_lock(&f->lock);
    f->rc[on] = sqlite_rc;
    f->failing[on] = nth <= 1;
    f->armed[on] = nth > 1;
    f->countdown[on] = nth > 1 ? nth - 1 : 0;
    pthread_mutex_unlock(&f->lock);
}

void store_faults_heal(store_faults_t *f)
{
    pthread_mutex_lock(&f->lock);
    memset(f->armed, 0, sizeof f->armed);
    memset(f->failing, 0, sizeof f->failing);
    pthread_mutex_unlock(&f->lock);
}

uint64_t store_faults_injected(store_faults_t *f)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->injected;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* The code this call (a write or a sync) must fail with, or SQLITE_OK. */
static int store_faults_next(store_faults_t *f, store_fault_on_t on)
{
    int rc = SQLITE_OK;
    pthread_mutex_lock(&f->lock);
    if (f->armed[on] && --f->countdown[on] == 0) {
        f->armed[on] = false;
        f->failing[on] = true;
    } else if (f->armed[on]) {
        pthread_mutex_unlock(&f->lock);
        return SQLITE_OK;
    }
    if (f->failing[on]) {
        rc = f->rc[on];
        f->injected++;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* ---- the VFS: every call goes to the real one, writes and syncs first
 * through the schedule */

struct store_vfs {
    sqlite3_vfs base;
    sqlite3_vfs *real;
    store_faults_t *faults;
    char name[48];
};

typedef struct vfile {
    sqlite3_file base;
    store_faults_t *faults;
    sqlite3_file *real; /* right after this struct, szOsFile of the real VFS */
} vfile;

#define REAL(f) (((vfile *)(f))->real)

static int vf_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int vf_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int vf_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    int rc = store_faults_next(((vfile *)f)->faults, STORE_FAULT_WRITE);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int vf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int vf_sync(sqlite3_file *f, int flags)
{
    int rc = store_faults_next(((vfile *)f)->faults, STORE_FAULT_SYNC);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int vf_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int vf_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int vf_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int vf_check_lock(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int vf_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int vf_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int vf_device_chars(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int vf_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, p);
}

static int vf_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void vf_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int vf_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

/* Version 2: no memory-mapped I/O, so every page write goes through xWrite. */
static const sqlite3_io_methods vf_methods = {
    .iVersion = 2,
    .xClose = vf_close,
    .xRead = vf_read,
    .xWrite = vf_write,
    .xTruncate = vf_truncate,
    .xSync = vf_sync,
    .xFileSize = vf_file_size,
    .xLock = vf_lock,
    .xUnlock = vf_unlock,
    .xCheckReservedLock = vf_check_lock,
    .xFileControl = vf_file_control,
    .xSectorSize = vf_sector_size,
    .xDeviceCharacteristics = vf_device_chars,
    .xShmMap = vf_shm_map,
    .xShmLock = vf_shm_lock,
    .xShmBarrier = vf_shm_barrier,
    .xShmUnmap = vf_shm_unmap,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct store_vfs *v = (struct store_vfs *)vfs;
    vfile *vf = (vfile *)f;
    vf->faults = v->faults;
    vf->real = (sqlite3_file *)(vf + 1);
    int rc = v->real->xOpen(v->real, name, vf->real, flags, out_flags);
    vf->base.pMethods = vf->real->pMethods ? &vf_methods : NULL;
    return rc;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xDelete(real, name, sync);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xAccess(real, name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xFullPathname(real, name, n, out);
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xRandomness(real, n, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int us)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xSleep(real, us);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xCurrentTime(real, out);
}

static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xGetLastError ? real->xGetLastError(real, n, out) : 0;
}

static int vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    sqlite3_vfs *real = ((struct store_vfs *)vfs)->real;
    return real->xCurrentTimeInt64(real, out);
}

int store_vfs_register(store_faults_t *faults, struct store_vfs **out, char *err, size_t errlen)
{
    *out = NULL;
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    if (!real || real->iVersion < 2) {
        store_set_error(err, errlen, "no default SQLite VFS to wrap");
        return -ENOTSUP;
    }
    struct store_vfs *v = calloc(1, sizeof *v);
    if (!v) {
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(v->name, sizeof v->name, "loom-faults-%p", (void *)v);
    v->real = real;
    v->faults = faults;
    v->base = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(vfile) + real->szOsFile,
        .mxPathname = real->mxPathname,
        .zName = v->name,
        .xOpen = vfs_open,
        .xDelete = vfs_delete,
        .xAccess = vfs_access,
        .xFullPathname = vfs_full_pathname,
        .xRandomness = vfs_randomness,
        .xSleep = vfs_sleep,
        .xCurrentTime = vfs_current_time,
        .xGetLastError = vfs_last_error,
        .xCurrentTimeInt64 = vfs_current_time64,
    };
    int rc = sqlite3_vfs_register(&v->base, 0);
    if (rc != SQLITE_OK) {
        store_set_error(err, errlen, "cannot register the fault VFS: %s", sqlite3_errstr(rc));
        free(v);
        return -EIO;
    }
    *out = v;
    return 0;
}

const char *store_vfs_name(const struct store_vfs *v)
{
    return v ? v->name : NULL;
}

void store_vfs_unregister(struct store_vfs *v)
{
    if (!v)
        return;
    sqlite3_vfs_unregister(&v->base);
    free(v);
}
