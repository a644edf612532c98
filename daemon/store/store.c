/* store.c -- the store's write queue, its thread, and the hand-back of
 * completions to the reactor thread.
 *
 * Writers append to one FIFO under a mutex and signal the store thread,
 * which never holds the mutex while it talks to SQLite: it takes the whole
 * queue (or max_batch of it), applies it in one transaction (store_db.c),
 * then moves the finished requests to the done list of a reactor hand-back
 * (reactor.h), as pool.c does: a burst of commits costs one wakeup, and
 * handing results back never allocates, so it cannot fail. Lock order is
 * store, then the reactor's post lock.
 *
 * Held writes (store.h): when a start, checkpoint or finish fails for want
 * of the disk, it and every such write after it in its batch go back to the
 * head of the queue, in order, and the thread waits out a backoff before
 * it tries again; whatever was queued meanwhile joins the retry behind
 * them. Nothing recording finished work is reported until it commits. */
#include "daemon/store/store_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STORE_DEFAULT_BUSY_MS 5000
#define STORE_BACKOFF_FIRST_MS 50
#define STORE_BACKOFF_MAX_MS 5000

static const char *const store_state_names[] = {"queued", "running", "succeeded", "failed",
                                                "cancelled", "waiting"};

const char *store_state_name(store_state_t state)
{
    if ((unsigned)state >= sizeof store_state_names / sizeof *store_state_names)
        return NULL;
    return store_state_names[state];
}

int store_state_parse(const char *name, store_state_t *out)
{
    for (size_t i = 0; name && i < sizeof store_state_names / sizeof *store_state_names; i++) {
        if (strcmp(name, store_state_names[i]) == 0) {
            *out = (store_state_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

void store_set_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- requests */

static void store_req_free(store_req_t *q)
{
    free(q->workflow);
    free(q->version);
    free(q->idempotency_key);
    free(q->step_key);
    free(q->input);
    free(q->output);
    free(q->error);
    free(q->usage);
    free(q->tenant);
    free(q->day);
    free(q->month);
    free(q->budget);
    free(q->traceparent);
    free(q->source);
    free(q->crash);
    store_batch_req_free(q->batch);
    json_decref(q->jobs);
    free(q);
}

/* Copies S (NULL stays NULL) into *OUT; false when out of memory. */
static bool store_copy(const char *s, char **out)
{
    *out = NULL;
    if (!s)
        return true;
    *out = strdup(s);
    return *out != NULL;
}

/* Serialises V (NULL stays NULL) into *OUT: 0, -EILSEQ when V cannot be
 * written as JSON text (a string that is not UTF-8: jansson's unchecked
 * constructors let one in), or -ENOMEM. */
static int store_dump(const json_t *v, char **out)
{
    *out = NULL;
    if (!v)
        return 0;
    *out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (*out)
        return 0;
    /* Measuring needs no buffer: if even that fails, the value is to blame. */
    return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY) == 0 ? -EILSEQ : -ENOMEM;
}

static store_req_t *store_req_new(enum store_op op, store_done_cb cb, void *ud)
{
    store_req_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->op = op;
    q->cb = cb;
    q->ud = ud;
    return q;
}

/* Queues Q, or frees it and refuses once closing has begun. */
static int store_enqueue(store_t *s, store_req_t *q)
{
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        store_req_free(q);
        return -ESHUTDOWN;
    }
    list_add_tail(&s->queue, &q->link);
    s->queued++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* ---- completions */

/* Runs S's health callback with the state of now. */
static void store_deliver_health(store_t *s)
{
    char why[sizeof s->held_error];
    pthread_mutex_lock(&s->lock);
    store_health_t h = {.unavailable = s->held > 0, .held = s->held,
                        .status = s->held ? s->held_status : 0, .error = why};
    snprintf(why, sizeof why, "%s", s->held ? s->held_error : "");
    pthread_mutex_unlock(&s->lock);
    if (s->health_cb)
        s->health_cb(s->health_ud, &h);
}

/* Runs the callback of every request of L, in order, and frees them. */
static void store_deliver_list(list_link *l, void *ud)
{
    store_t *s = ud;
    LIST_EACH_SAFE(it, nx, l) {
        list_del(it);
        if (it == &s->health) {
            store_deliver_health(s);
            continue;
        }
        store_req_t *q = LIST_OWNER(it, store_req_t, link);
        if (q->op == STORE_OP_CLAIM) {
            if (q->claim_cb)
                q->claim_cb(q->ud, q->status, q->status == 0 ? q->jobs : NULL);
        } else if (q->cb) {
            store_result_t res = {
                .status = q->status,
                .job_id = q->op == STORE_OP_PURGE || q->op == STORE_OP_SPEND ||
                                  q->op == STORE_OP_BATCH ? NULL
                          : q->op == STORE_OP_INSERT && q->status == 0 ? q->result_id
                                                                       : q->job_id,
                .existed = q->existed,
                .count = q->count,
                .error = q->status < 0 ? q->error_text : "",
            };
            q->cb(q->ud, &res);
        }
        store_req_free(q);
    }
}

/* ---- the store thread */

static int64_t store_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether Q records finished work and so must wait for the disk. */
static bool store_req_holds(const store_req_t *q)
{
    return (q->op == STORE_OP_RUNNING || q->op == STORE_OP_STEP || q->op == STORE_OP_FINISH ||
            q->op == STORE_OP_CRASHES || q->op == STORE_OP_SPEND || q->op == STORE_OP_WAIT ||
            q->op == STORE_OP_BATCH) &&
           store_status_transient(q->status);
}

/* Lock held: whether the source of workflow version HASH is known to be on
 * disk. */
static bool store_source_known_locked(const store_t *s, const char *hash)
{
    for (size_t i = 0; i < s->nknown_sources; i++)
        if (strcmp(s->known_sources[i], hash) == 0)
            return true;
    return false;
}

/* Store thread, lock held: Q committed; remember the source it stored. */
static void store_source_note_locked(store_t *s, const store_req_t *q)
{
    if (q->op != STORE_OP_INSERT || !q->source || q->status != 0 || !q->version ||
        strlen(q->version) >= sizeof s->known_sources[0] ||
        store_source_known_locked(s, q->version))
        return;
    size_t at = s->nknown_sources < STORE_KNOWN_SOURCES ? s->nknown_sources++ : s->next_known;
    s->next_known = (at + 1) % STORE_KNOWN_SOURCES;
    snprintf(s->known_sources[at], sizeof s->known_sources[at], "%s", q->version);
}

/* Store thread, lock held: moves the writes of BATCH that must be held back
 * to the head of the queue, in order, and sets the backoff; or, when none
 * is held, clears it. Closing: nothing is held any more. */
static void store_hold_batch_locked(store_t *s, list_link *batch)
{
    list_link held;
    list_init(&held);
    size_t n = 0;
    LIST_EACH_SAFE(it, nx, batch) {
        store_req_t *q = LIST_OWNER(it, store_req_t, link);
        if (s->closing || !store_req_holds(q))
            continue;
        if (n++ == 0) {
            s->held_status = q->status;
            snprintf(s->held_error, sizeof s->held_error, "%s", q->error_text);
        }
        list_del(it);
        list_add_tail(&held, it);
    }
    if (n == 0) {
        s->held = 0;
        s->backoff_ms = 0;
        return;
    }
    /* back in front of everything queued meanwhile */
    while (!list_empty(&held)) {
        list_link *l = held.prev;
        list_del(l);
        list_add_head(&s->queue, l);
    }
    s->held = n;
    s->queued += n;
    s->held_tries++;
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : STORE_BACKOFF_FIRST_MS;
    if (s->backoff_ms > STORE_BACKOFF_MAX_MS)
        s->backoff_ms = STORE_BACKOFF_MAX_MS;
    s->retry_at_ms = store_mono_ms() + s->backoff_ms;
}

/* The same, and a health call for the reactor thread when the store just
 * started or stopped holding writes. */
static void store_hold_locked(store_t *s, list_link *batch)
{
    bool was = s->held > 0;
    store_hold_batch_locked(s, batch);
    if (was != (s->held > 0) && !list_linked(&s->health))
        reactor_handback_add_locked(&s->done, &s->health);
}

/* Store thread, lock held: waits until the held writes may go again (or
 * closing begins, which gives them one last try). */
static void store_backoff_locked(store_t *s)
{
    while (s->held && !s->closing) {
        int64_t at = s->retry_at_ms;
        if (store_mono_ms() >= at)
            return;
        struct timespec ts = {.tv_sec = at / 1000, .tv_nsec = (at % 1000) * 1000000};
        pthread_cond_timedwait(&s->wake, &s->lock, &ts);
    }
}

static void *store_thread_main(void *arg)
{
    store_t *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (list_empty(&s->queue) && !s->closing) {
            if (!s->pg) {
                pthread_cond_wait(&s->wake, &s->lock);
                continue;
            }
            /* PostgreSQL: renew this node's leases every lease / 3 */
            int64_t at = s->pg->next_heartbeat_ms;
            if (store_mono_ms() >= at) {
                pthread_mutex_unlock(&s->lock);
                store_pg_heartbeat(s, store_mono_ms());
                pthread_mutex_lock(&s->lock);
                continue;
            }
            struct timespec ts = {.tv_sec = at / 1000, .tv_nsec = (at % 1000) * 1000000};
            pthread_cond_timedwait(&s->wake, &s->lock, &ts);
        }
        if (list_empty(&s->queue))
            break; /* closing, and everything queued is done */
        if (s->pg && !s->held && store_mono_ms() >= s->pg->next_heartbeat_ms) {
            /* busy: the leases are renewed between transactions */
            pthread_mutex_unlock(&s->lock);
            store_pg_heartbeat(s, store_mono_ms());
            pthread_mutex_lock(&s->lock);
        }
        store_backoff_locked(s);
        list_link batch;
        list_init(&batch);
        size_t n = 0;
        list_link *l;
        while ((l = list_first(&s->queue)) && (s->max_batch == 0 || n < s->max_batch)) {
            list_del(l);
            list_add_tail(&batch, l);
            n++;
        }
        s->queued -= n;
        pthread_mutex_unlock(&s->lock);

        if (s->pg)
            store_pg_apply(s, &batch);
        else
            store_db_apply(s, &batch);

        pthread_mutex_lock(&s->lock);
        store_hold_locked(s, &batch);
        LIST_EACH_SAFE(it, nx, &batch) {
            store_source_note_locked(s, LIST_OWNER(it, store_req_t, link));
            if (LIST_OWNER(it, store_req_t, link)->status == 0)
                s->completed++;
            else
                s->failed++;
            list_del(it);
            reactor_handback_add_locked(&s->done, it);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* What each request does, for the errors of both backends ("finish job
 * ID: why"). */
static const char *const store_op_names[] = {
    [STORE_OP_INSERT] = "insert job",
    [STORE_OP_RUNNING] = "start job",
    [STORE_OP_STEP] = "checkpoint step of job",
    [STORE_OP_FINISH] = "finish job",
    [STORE_OP_PURGE] = "purge jobs",
    [STORE_OP_CRASHES] = "record the crashes of job",
    [STORE_OP_RETRY] = "retry job",
    [STORE_OP_SPEND] = "record the spend of tenant",
    [STORE_OP_WAIT] = "park or wake job",
    [STORE_OP_BATCH] = "record provider batch",
    [STORE_OP_CLAIM] = "claim jobs",
    [STORE_OP_RELEASE] = "release job",
};

const char *store_op_name(enum store_op op)
{
    size_t i = (size_t)op;
    return i < sizeof store_op_names / sizeof *store_op_names && store_op_names[i]
               ? store_op_names[i]
               : "write";
}

/* ---- opening and closing */

static char *store_join_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

/* Creates DIR if needed and takes its lock file. */
static int store_prepare_dir(store_t *s, char *err, size_t errlen)
{
    struct stat st;
    char *lock_path = NULL;
    int rc = 0;
    if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        store_set_error(err, errlen, "cannot create state directory %s: %s", s->dir,
                        strerror(-rc));
        return rc;
    }
    if (stat(s->dir, &st) != 0) {
        rc = -errno;
        store_set_error(err, errlen, "cannot use state directory %s: %s", s->dir,
                        strerror(-rc));
        return rc;
    }
    if (!S_ISDIR(st.st_mode)) {
        store_set_error(err, errlen, "state directory %s is not a directory", s->dir);
        return -ENOTDIR;
    }
    lock_path = store_join_path(s->dir, "loom.lock");
    if (!lock_path) {
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0) {
        rc = -errno;
        store_set_error(err, errlen, "cannot open lock file %s: %s", lock_path, strerror(-rc));
        goto out;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        store_set_error(err, errlen, "state directory %s is in use by another store "
                        "(is another loomd running?)", s->dir);
        goto out;
    }
out:
    free(lock_path);
    return rc;
}

/* Frees what store_open built; the thread must not be running. */
static void store_destroy(store_t *s)
{
    store_db_finalize(s->wstmt, STORE_W_COUNT);
    store_db_finalize(s->rstmt, STORE_R_COUNT);
    store_db_finalize(s->bwstmt, STORE_BATCH_W_COUNT);
    store_db_finalize(s->brstmt, STORE_BATCH_R_COUNT);
    sqlite3_close(s->wdb);
    sqlite3_close(s->rdb);
    store_vfs_unregister(s->vfs); /* after its last connection */
    store_pg_close(s);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->db_path);
    free(s->dir);
    free(s);
}

store_t *store_open(const char *dir, reactor_t *r, const store_options_t *options,
                    char *err, size_t errlen)
{
    int rc = 0;
    bool lock_ready = false, cond_ready = false;
    sigset_t all, old;
    if (!dir || !*dir || !r) {
        store_set_error(err, errlen, "store_open: no directory or reactor");
        errno = EINVAL;
        return NULL;
    }
    store_t *s = calloc(1, sizeof *s);
    if (!s) {
        store_set_error(err, errlen, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    s->lock_fd = -1;
    list_init(&s->queue);
    list_init(&s->health);
    s->busy_timeout_ms = options && options->busy_timeout_ms > 0 ? options->busy_timeout_ms
                                                                 : STORE_DEFAULT_BUSY_MS;
    s->max_batch = options ? options->max_batch : 0;
    atomic_init(&s->transactions, 0);
    atomic_init(&s->batch_retries, 0);
    s->dir = strdup(dir);
    s->db_path = store_join_path(dir, "loom.db");
    if (!s->dir || !s->db_path) {
        rc = -ENOMEM;
        store_set_error(err, errlen, "out of memory");
        goto fail;
    }
    if (store_location_is_pg(dir)) {
        /* no directory, no lock file: several daemons share the database
         * (the faults' VFS is SQLite's: options->faults is ignored) */
        if ((rc = store_pg_open(s, dir, options, err, errlen)) < 0)
            goto fail;
    } else {
        if ((rc = store_prepare_dir(s, err, errlen)) < 0)
            goto fail;
        if (options && options->faults &&
            (rc = store_vfs_register(options->faults, &s->vfs, err, errlen)) < 0)
            goto fail;
        if ((rc = store_db_open_writer(s->db_path, store_vfs_name(s->vfs), s->busy_timeout_ms,
                                       &s->wdb, err, errlen)) < 0)
            goto fail;
        if ((rc = store_db_open_reader(s->db_path, store_vfs_name(s->vfs), s->busy_timeout_ms,
                                       &s->rdb, err, errlen)) < 0)
            goto fail;
    }

    if ((rc = -pthread_mutex_init(&s->lock, NULL)) < 0)
        goto fail_thread;
    lock_ready = true;
    reactor_handback_init(&s->done, r, &s->lock, store_deliver_list, s);
    pthread_condattr_t ca;
    if ((rc = -pthread_condattr_init(&ca)) < 0)
        goto fail_thread;
    /* the backoff must not stretch or shrink when the wall clock steps */
    rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = -pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (rc < 0)
        goto fail_thread;
    cond_ready = true;
    /* Signals are for the daemon's own thread, never the store's. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&s->thread, NULL, store_thread_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        goto fail_thread;
    return s;

fail_thread:
    store_set_error(err, errlen, "cannot start the store thread: %s", strerror(-rc));
fail:
    if (cond_ready)
        pthread_cond_destroy(&s->wake);
    if (lock_ready)
        pthread_mutex_destroy(&s->lock);
    store_destroy(s);
    errno = -rc;
    return NULL;
}

void store_close(store_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->closing = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);

    /* The thread drained the queue before it left; hand back what it did
     * here rather than through a post that would outlive S. */
    list_link batch;
    list_init(&batch);
    pthread_mutex_lock(&s->lock);
    reactor_handback_take_locked(&s->done, &batch);
    pthread_mutex_unlock(&s->lock);
    store_deliver_list(&batch, s); /* writes from these callbacks see CLOSING */

    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    store_destroy(s);
}

/* ---- writes */

/* Checks and copies a job id argument; false if it is malformed. */
static bool store_take_id(store_req_t *q, const char *job_id)
{
    if (!store_id_valid(job_id))
        return false;
    memcpy(q->job_id, job_id, STORE_ID_SIZE);
    return true;
}

static int64_t store_time_or_now(int64_t ms)
{
    return ms != 0 ? ms : store_now_ms();
}

/* A new request OP about the existing job JOB_ID, or NULL with *RC set:
 * -ENOMEM, or -EINVAL when JOB_ID is malformed. */
static store_req_t *store_job_req(enum store_op op, const char *job_id, store_done_cb cb,
                                  void *ud, int *rc)
{
    store_req_t *q = store_req_new(op, cb, ud);
    *rc = -ENOMEM;
    if (q && !store_take_id(q, job_id)) {
        store_req_free(q);
        q = NULL;
        *rc = -EINVAL;
    }
    return q;
}

/* Stamps Q (owned; freed on failure) with TIME_MS (0: now) and queues it,
 * unless FILLED (0 or a negative errno) says copying its arguments failed. */
static int store_submit(store_t *s, store_req_t *q, int filled, int64_t time_ms)
{
    if (filled < 0) {
        store_req_free(q);
        return filled;
    }
    q->time_ms = store_time_or_now(time_ms);
    return store_enqueue(s, q);
}

int store_insert_job(store_t *s, const store_job_spec_t *spec, store_done_cb cb, void *ud)
{
    if (!s || !spec || !spec->workflow || !*spec->workflow)
        return -EINVAL;
    store_req_t *q = store_req_new(STORE_OP_INSERT, cb, ud);
    if (!q)
        return -ENOMEM;
    int rc = -EINVAL;
    if (spec->id) {
        if (!store_take_id(q, spec->id))
            goto fail;
    } else if ((rc = store_new_job_id(s, q->job_id)) < 0) {
        goto fail;
    }
    rc = -ENOMEM;
    if (!store_copy(spec->workflow, &q->workflow) || !store_copy(spec->version, &q->version) ||
        !store_copy(spec->idempotency_key, &q->idempotency_key) ||
        !store_copy(spec->tenant, &q->tenant) || !store_copy(spec->traceparent, &q->traceparent))
        goto fail;
    if (spec->budget && (rc = store_dump(spec->budget, &q->budget)) < 0)
        goto fail;
    rc = -ENOMEM;
    if (spec->input ? (rc = store_dump(spec->input, &q->input)) < 0
                    : !store_copy("null", &q->input))
        goto fail;
    if (spec->source && spec->version) {
        pthread_mutex_lock(&s->lock);
        bool known = store_source_known_locked(s, spec->version);
        pthread_mutex_unlock(&s->lock);
        if (!known) {
            if (!(q->source = malloc(spec->source_len + 1)))
                goto fail;
            memcpy(q->source, spec->source, spec->source_len);
            q->source[spec->source_len] = '\0';
            q->source_len = spec->source_len;
        }
    }
    q->priority = spec->priority;
    q->has_peer = spec->has_peer;
    q->peer_uid = spec->peer_uid;
    q->peer_gid = spec->peer_gid;
    q->peer_pid = spec->peer_pid;
    q->time_ms = store_time_or_now(spec->created_ms);
    return store_enqueue(s, q);
fail:
    store_req_free(q);
    return rc;
}

int store_set_running(store_t *s, const char *job_id, int64_t started_ms,
                      store_done_cb cb, void *ud)
{
    int rc;
    if (!s)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_RUNNING, job_id, cb, ud, &rc);
    return q ? store_submit(s, q, 0, started_ms) : rc;
}

int store_checkpoint_step(store_t *s, const char *job_id, const char *key,
                          const json_t *output, const json_t *error,
                          int64_t finished_ms, store_done_cb cb, void *ud)
{
    int rc;
    if (!s || !key)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_STEP, job_id, cb, ud, &rc);
    if (!q)
        return rc;
    if (!store_copy(key, &q->step_key))
        rc = -ENOMEM;
    else if ((rc = store_dump(output, &q->output)) == 0)
        rc = store_dump(error, &q->error);
    return store_submit(s, q, rc, finished_ms);
}

int store_finish_job(store_t *s, const char *job_id, const store_outcome_t *outcome,
                     store_done_cb cb, void *ud)
{
    if (!s || !outcome ||
        (outcome->state != STORE_SUCCEEDED && outcome->state != STORE_FAILED &&
         outcome->state != STORE_CANCELLED))
        return -EINVAL;
    int rc;
    store_req_t *q = store_job_req(STORE_OP_FINISH, job_id, cb, ud, &rc);
    if (!q)
        return rc;
    q->state = outcome->state;
    if ((rc = store_dump(outcome->output, &q->output)) == 0 &&
        (rc = store_dump(outcome->error, &q->error)) == 0)
        rc = store_dump(outcome->usage, &q->usage);
    q->has_cost = outcome->has_cost;
    q->cost = outcome->cost;
    return store_submit(s, q, rc, outcome->finished_ms);
}

int store_cancel_job(store_t *s, const char *job_id, store_done_cb cb, void *ud)
{
    store_outcome_t outcome = {.state = STORE_CANCELLED};
    return store_finish_job(s, job_id, &outcome, cb, ud);
}

int store_purge_finished(store_t *s, int64_t finished_before_ms, store_done_cb cb, void *ud)
{
    if (!s)
        return -EINVAL;
    store_req_t *q = store_req_new(STORE_OP_PURGE, cb, ud);
    if (!q)
        return -ENOMEM;
    q->time_ms = finished_before_ms;
    /* the purge may delete sources: inserts queued after it store theirs
     * again (an insert queued before it made its source needed) */
    pthread_mutex_lock(&s->lock);
    s->nknown_sources = s->next_known = 0;
    pthread_mutex_unlock(&s->lock);
    return store_enqueue(s, q);
}

int store_set_crashes(store_t *s, const char *job_id, int64_t crashes, const json_t *crash,
                      store_done_cb cb, void *ud)
{
    int rc;
    if (!s || crashes < 0)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_CRASHES, job_id, cb, ud, &rc);
    if (!q)
        return rc;
    q->crashes = crashes;
    rc = crashes > 0 ? store_dump(crash, &q->crash) : 0;
    return store_submit(s, q, rc, 0);
}

int store_retry_job(store_t *s, const char *job_id, store_done_cb cb, void *ud)
{
    int rc;
    if (!s)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_RETRY, job_id, cb, ud, &rc);
    return q ? store_submit(s, q, 0, 0) : rc;
}

int store_set_waiting(store_t *s, const char *job_id, const json_t *waits, store_done_cb cb,
                      void *ud)
{
    int rc;
    if (!s || !waits)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_WAIT, job_id, cb, ud, &rc);
    if (!q)
        return rc;
    q->state = STORE_WAITING;
    rc = store_dump(waits, &q->output);
    return store_submit(s, q, rc, 0);
}

int store_wake_job(store_t *s, const char *job_id, store_done_cb cb, void *ud)
{
    int rc;
    if (!s)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_WAIT, job_id, cb, ud, &rc);
    if (!q)
        return rc;
    q->state = STORE_QUEUED;
    return store_submit(s, q, 0, 0);
}

int store_add_spend(store_t *s, const char *tenant, const char *day, const char *month,
                    double usd, store_done_cb cb, void *ud)
{
    if (!s || !tenant || !day || !month || !(usd >= 0) || usd > 1e15)
        return -EINVAL;
    store_req_t *q = store_req_new(STORE_OP_SPEND, cb, ud);
    if (!q)
        return -ENOMEM;
    q->cost = usd;
    q->has_cost = true;
    int rc = (q->tenant = strdup(tenant)) && (q->day = strdup(day)) && (q->month = strdup(month))
                 ? 0 : -ENOMEM;
    return store_submit(s, q, rc, 0);
}

int store_claim_jobs(store_t *s, size_t max, store_claim_cb cb, void *ud)
{
    if (!s || max == 0 || max > INT32_MAX)
        return -EINVAL;
    if (!s->pg)
        return -ENOTSUP;
    store_req_t *q = store_req_new(STORE_OP_CLAIM, NULL, ud);
    if (!q)
        return -ENOMEM;
    q->claim_cb = cb;
    q->count = (int64_t)max;
    return store_submit(s, q, 0, 0);
}

int store_release_job(store_t *s, const char *job_id, store_done_cb cb, void *ud)
{
    int rc;
    if (!s)
        return -EINVAL;
    store_req_t *q = store_job_req(STORE_OP_RELEASE, job_id, cb, ud, &rc);
    return q ? store_submit(s, q, 0, 0) : rc;
}

/* ---- ids and counters */

int store_new_job_id(store_t *s, char out[STORE_ID_SIZE])
{
    pthread_mutex_lock(&s->lock);
    int rc = store_id_next(&s->ids, (uint64_t)store_now_ms(), out);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void store_set_commit_observer(store_t *s, store_commit_fn fn, void *ud)
{
    atomic_store_explicit(&s->commit_obs_ud, ud, memory_order_relaxed);
    atomic_store_explicit(&s->commit_obs, fn, memory_order_release);
}

void store_get_stats(store_t *s, store_stats_t *out)
{
    pthread_mutex_lock(&s->lock);
    out->completed = s->completed;
    out->failed = s->failed;
    out->queued = s->queued;
    out->held = s->held;
    out->held_tries = s->held_tries;
    out->held_status = s->held ? s->held_status : 0;
    out->retry_ms = s->held ? s->backoff_ms : 0;
    snprintf(out->held_error, sizeof out->held_error, "%s", s->held ? s->held_error : "");
    pthread_mutex_unlock(&s->lock);
    out->transactions = atomic_load(&s->transactions);
    out->batch_retries = atomic_load(&s->batch_retries);
    out->read_reconnects = s->pg ? store_pg_read_reconnects(s) : 0;
}

bool store_unavailable(store_t *s, int64_t *retry_after_ms, char *why, size_t whylen)
{
    pthread_mutex_lock(&s->lock);
    bool held = s->held > 0;
    if (held && retry_after_ms) {
        int64_t left = s->retry_at_ms - store_mono_ms();
        /* a hint: at least the next try, and never "now" */
        *retry_after_ms = left > STORE_BACKOFF_FIRST_MS ? left : STORE_BACKOFF_FIRST_MS;
    }
    if (held)
        store_set_error(why, whylen, "%s", s->held_error);
    pthread_mutex_unlock(&s->lock);
    return held;
}

void store_set_health_cb(store_t *s, store_health_cb cb, void *ud)
{
    s->health_cb = cb;
    s->health_ud = ud;
}
