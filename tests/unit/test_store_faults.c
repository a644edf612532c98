/* test_store_faults.c -- the store under a failing disk: writes recording
 * finished work (start, checkpoint, finish) are held in order and retried
 * until they commit, the store says it is unavailable meanwhile, inserts
 * are refused at once, and a write refused for its own data is reported,
 * never retried.
 *
 * Faults come from the store's fault VFS (store_faults_t, through
 * store_open's options): the Nth write or sync from a chosen moment fails
 * with SQLITE_FULL, SQLITE_IOERR or SQLITE_READONLY until the test heals
 * it. When the tests run as root, one more test fills a real 2 MiB tmpfs.
 * Every wait drives the reactor by hand toward an event, with a deadline. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/store/store.h"

static char g_dir[64];
static reactor_t *g_r;
static store_faults_t *g_f;

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/loom-faults-XXXXXX");
    cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp: %s", strerror(errno));
    g_r = reactor_new();
    g_f = store_faults_new();
    cr_assert(g_r != NULL && g_f != NULL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    reactor_free(g_r);
    store_faults_free(g_f);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

TestSuite(store_faults, .init = setup, .fini = teardown, .timeout = 60);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The completions seen, in order: one letter per callback. */
typedef struct seen {
    char order[64];
    int calls, status[64];
    char error[256];
    char id[STORE_ID_SIZE];
} seen_t;

typedef struct tag {
    seen_t *seen;
    char letter;
} tag_t;

static void on_done(void *ud, const store_result_t *res)
{
    tag_t *t = ud;
    seen_t *s = t->seen;
    s->order[s->calls] = t->letter;
    s->status[s->calls++] = res->status;
    snprintf(s->error, sizeof s->error, "%s", res->error);
    snprintf(s->id, sizeof s->id, "%s", res->job_id ? res->job_id : "");
}

/* Health calls: how many said "unavailable", how many "available". */
typedef struct health {
    int down, up;
    char error[256];
} health_t;

static void on_health(void *ud, const store_health_t *h)
{
    health_t *t = ud;
    if (h->unavailable) {
        t->down++;
        snprintf(t->error, sizeof t->error, "%s", h->error);
    } else {
        t->up++;
    }
}

static void run_until_count(const int *counter, int n)
{
    double deadline = now_s() + 20;
    while (*counter < n && now_s() < deadline)
        cr_assert(reactor_run_once(g_r, 20) >= 0);
    cr_assert(ge(int, *counter, n), "timed out waiting for a health call");
}

static void run_until_calls(const seen_t *s, int n)
{
    double deadline = now_s() + 20;
    while (s->calls < n && now_s() < deadline)
        cr_assert(reactor_run_once(g_r, 20) >= 0);
    cr_assert(eq(int, s->calls, n), "timed out waiting for %d completions", n);
}

/* Drives the reactor until S holds at least N writes that failed at least
 * TRIES times; fails the test after 20 s. */
static void run_until_held(store_t *s, size_t n, uint64_t tries)
{
    store_stats_t st;
    double deadline = now_s() + 20;
    do {
        cr_assert(reactor_run_once(g_r, 20) >= 0);
        store_get_stats(s, &st);
    } while ((st.held < n || st.held_tries < tries) && now_s() < deadline);
    cr_assert(st.held >= n && st.held_tries >= tries, "held %zu after %llu tries", st.held,
              (unsigned long long)st.held_tries);
}

/* Holds the write lock from a connection of the test's own, so that writes
 * queued meanwhile reach the store thread as one batch. */
static sqlite3 *plug(void)
{
    char path[128];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/loom.db", g_dir);
    cr_assert(eq(int, sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK));
    sqlite3_busy_timeout(db, 5000);
    cr_assert(eq(int, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK));
    return db;
}

static void unplug(sqlite3 *db)
{
    cr_assert(eq(int, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK));
    sqlite3_close(db);
}

static store_t *open_faulty(const char *dir)
{
    char err[512] = "";
    store_options_t o = {.faults = g_f};
    store_t *s = store_open(dir, g_r, &o, err, sizeof err);
    cr_assert(s != NULL, "store_open: %s", err);
    return s;
}

static void insert_sync(store_t *s, char id[STORE_ID_SIZE])
{
    seen_t d = {0};
    tag_t t = {&d, 'i'};
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &t), 0));
    run_until_calls(&d, 1);
    cr_assert(eq(int, d.status[0], 0), "%s", d.error);
    memcpy(id, d.id, STORE_ID_SIZE);
}

static json_t *get_job(store_t *s, const char *id)
{
    json_t *job = NULL;
    char err[256] = "";
    cr_assert(eq(int, store_get_job(s, id, &job, err, sizeof err), 0), "%s", err);
    return job;
}

static char *state_of(store_t *s, const char *id, char *buf, size_t n)
{
    json_t *job = get_job(s, id);
    snprintf(buf, n, "%s", json_string_value(json_object_get(job, "state")));
    json_decref(job);
    return buf;
}

/* The common story: with FAULT injected, a job's start, two checkpoints and
 * its end are held (none called back, the job still queued on disk), an
 * insert is refused at once with ENOSPC-like status, the store says it is
 * unavailable; after healing, all four commit in order, the job's steps
 * are on disk and the store is available again. */
static void held_then_healed(store_fault_on_t on, unsigned nth, int sqlite_rc, int want_status)
{
    store_t *s = open_faulty(g_dir);
    char id[STORE_ID_SIZE], buf[32];
    health_t h = {0};
    store_set_health_cb(s, on_health, &h);
    insert_sync(s, id);

    sqlite3 *p = plug(); /* one batch: which write fails does not depend on timing */
    store_faults_fail(g_f, on, nth, sqlite_rc);
    seen_t d = {0};
    tag_t tr = {&d, 'r'}, t1 = {&d, '1'}, t2 = {&d, '2'}, tf = {&d, 'f'};
    json_t *o1 = json_integer(1), *o2 = json_integer(2), *out = json_string("done");
    cr_assert(eq(int, store_set_running(s, id, 0, on_done, &tr), 0));
    cr_assert(eq(int, store_checkpoint_step(s, id, "a", o1, NULL, 0, on_done, &t1), 0));
    cr_assert(eq(int, store_checkpoint_step(s, id, "b", o2, NULL, 0, on_done, &t2), 0));
    store_outcome_t oc = {.state = STORE_SUCCEEDED, .output = out};
    cr_assert(eq(int, store_finish_job(s, id, &oc, on_done, &tf), 0));
    unplug(p);
    run_until_held(s, 4, 2); /* two failed tries: the backoff did run */
    cr_assert(eq(int, d.calls, 0), "a held write was called back: %s", d.error);
    run_until_count(&h.down, 1);
    cr_assert(strlen(h.error) > 0);

    int64_t retry = 0;
    char why[256] = "";
    cr_assert(store_unavailable(s, &retry, why, sizeof why));
    cr_assert(retry > 0);
    cr_assert(strlen(why) > 0);
    store_stats_t st;
    store_get_stats(s, &st);
    cr_assert(eq(int, st.held_status, want_status), "%d: %s", st.held_status, st.held_error);

    /* a new job is refused, not held: its submitter was never told yes */
    seen_t di = {0};
    tag_t ti = {&di, 'i'};
    store_job_spec_t spec = {.workflow = "wf"};
    cr_assert(eq(int, store_insert_job(s, &spec, on_done, &ti), 0));
    run_until_calls(&di, 1);
    cr_assert(eq(int, di.status[0], want_status), "%d: %s", di.status[0], di.error);
    cr_assert(eq(str, state_of(s, id, buf, sizeof buf), "queued"));

    store_faults_heal(g_f);
    run_until_calls(&d, 4);
    run_until_count(&h.up, 1);
    cr_assert(eq(int, h.down, 1), "one health call each way");
    cr_assert(eq(str, d.order, "r12f"));
    for (int i = 0; i < 4; i++)
        cr_assert(eq(int, d.status[i], 0));
    cr_assert(store_unavailable(s, NULL, NULL, 0) == false);
    cr_assert(eq(str, state_of(s, id, buf, sizeof buf), "succeeded"));
    json_t *steps = NULL;
    cr_assert(eq(int, store_load_steps(s, id, &steps, NULL, 0), 0));
    cr_assert(eq(sz, json_object_size(steps), 2));
    json_decref(steps);
    store_get_stats(s, &st);
    cr_assert(eq(sz, st.held, 0));
    cr_assert(eq(u64, st.failed, 1)); /* the refused insert, nothing else */
    insert_sync(s, id);               /* and new jobs are welcome again */
    json_decref(o1);
    json_decref(o2);
    json_decref(out);
    store_close(s);
}

Test(store_faults, full_disk_on_the_first_write_holds_then_commits)
{
    held_then_healed(STORE_FAULT_WRITE, 1, SQLITE_FULL, -ENOSPC);
}

Test(store_faults, full_disk_on_the_third_write_holds_then_commits)
{
    held_then_healed(STORE_FAULT_WRITE, 3, SQLITE_FULL, -ENOSPC);
}

Test(store_faults, write_io_error_holds_then_commits)
{
    held_then_healed(STORE_FAULT_WRITE, 1, SQLITE_IOERR_WRITE, -EIO);
}

Test(store_faults, fsync_io_error_holds_then_commits)
{
    held_then_healed(STORE_FAULT_SYNC, 1, SQLITE_IOERR_FSYNC, -EIO);
}

Test(store_faults, read_only_disk_holds_then_commits)
{
    held_then_healed(STORE_FAULT_WRITE, 1, SQLITE_READONLY, -EROFS);
}

Test(store_faults, data_the_store_cannot_write_is_refused_not_held)
{
    store_t *s = open_faulty(g_dir);
    char id[STORE_ID_SIZE];
    insert_sync(s, id);
    /* jansson's unchecked constructor lets invalid UTF-8 in; it cannot be
     * written as JSON text, so the write is refused at once */
    json_t *bad = json_string_nocheck("\xff\xfe");
    store_outcome_t oc = {.state = STORE_SUCCEEDED, .output = bad};
    cr_assert(eq(int, store_finish_job(s, id, &oc, NULL, NULL), -EILSEQ));
    cr_assert(eq(int, store_checkpoint_step(s, id, "a", bad, NULL, 0, NULL, NULL), -EILSEQ));
    json_decref(bad);
    /* a finish the schema refuses (no such job) is reported, not held */
    seen_t d = {0};
    tag_t t = {&d, 'f'};
    oc.output = NULL;
    cr_assert(eq(int, store_finish_job(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &oc, on_done, &t), 0));
    run_until_calls(&d, 1);
    cr_assert(eq(int, d.status[0], -ENOENT), "%s", d.error);
    cr_assert(store_unavailable(s, NULL, NULL, 0) == false);
    store_close(s);
}

Test(store_faults, close_reports_writes_still_held)
{
    store_t *s = open_faulty(g_dir);
    char id[STORE_ID_SIZE], buf[32];
    insert_sync(s, id);
    store_faults_fail(g_f, STORE_FAULT_WRITE, 1, SQLITE_FULL);
    seen_t d = {0};
    tag_t tf = {&d, 'f'};
    store_outcome_t oc = {.state = STORE_FAILED};
    cr_assert(eq(int, store_finish_job(s, id, &oc, on_done, &tf), 0));
    run_until_held(s, 1, 1);
    store_close(s); /* one last try, then the failure is reported */
    cr_assert(eq(int, d.calls, 1));
    cr_assert(eq(int, d.status[0], -ENOSPC), "%s", d.error);
    store_faults_heal(g_f);
    s = open_faulty(g_dir);
    cr_assert(eq(str, state_of(s, id, buf, sizeof buf), "queued")); /* resumable */
    store_close(s);
}

/* ---- a real full disk (root only) */

/* Writes FILL until the file system is full; returns its descriptor. */
static int fill_up(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    static char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    cr_assert(eq(int, errno, ENOSPC), "%s", strerror(errno));
    return fd;
}

Test(store_faults, real_tmpfs_full_then_freed)
{
    if (geteuid() != 0) {
        printf("skipped: mounting a tmpfs needs root\n");
        cr_skip_test("mounting a tmpfs needs root");
    }
    char mnt[128], state[160], fill[160], id[STORE_ID_SIZE], buf[32];
    snprintf(mnt, sizeof mnt, "%s/mnt", g_dir);
    snprintf(state, sizeof state, "%s/state", mnt);
    snprintf(fill, sizeof fill, "%s/fill", mnt);
    cr_assert(eq(int, mkdir(mnt, 0700), 0));
    if (mount("loomtest", mnt, "tmpfs", 0, "size=2m,mode=0700") != 0) {
        printf("skipped: cannot mount a tmpfs: %s\n", strerror(errno));
        cr_skip_test("cannot mount a tmpfs");
    }
    char err[512] = "";
    store_t *s = store_open(state, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    insert_sync(s, id);
    int fd = fill_up(fill);

    /* outputs large enough that the WAL must grow past what is left */
    char *big = malloc(256 * 1024);
    cr_assert(big != NULL);
    memset(big, 'x', 256 * 1024 - 1);
    big[256 * 1024 - 1] = '\0';
    json_t *out = json_string(big);
    free(big);
    seen_t d = {0};
    tag_t t1 = {&d, '1'}, tf = {&d, 'f'};
    cr_assert(eq(int, store_checkpoint_step(s, id, "a", out, NULL, 0, on_done, &t1), 0));
    store_outcome_t oc = {.state = STORE_SUCCEEDED, .output = out};
    cr_assert(eq(int, store_finish_job(s, id, &oc, on_done, &tf), 0));
    run_until_held(s, 2, 1);
    cr_assert(eq(int, d.calls, 0));
    store_stats_t st;
    store_get_stats(s, &st);
    cr_assert(eq(int, st.held_status, -ENOSPC), "%d: %s", st.held_status, st.held_error);
    cr_assert(eq(str, state_of(s, id, buf, sizeof buf), "queued"));

    close(fd);
    cr_assert(eq(int, unlink(fill), 0));
    run_until_calls(&d, 2);
    cr_assert(eq(str, d.order, "1f"));
    cr_assert(d.status[0] == 0 && d.status[1] == 0, "%s", d.error);
    cr_assert(eq(str, state_of(s, id, buf, sizeof buf), "succeeded"));
    cr_assert(store_unavailable(s, NULL, NULL, 0) == false);
    json_decref(out);
    store_close(s);
    cr_assert(eq(int, umount2(mnt, MNT_DETACH), 0));
}
