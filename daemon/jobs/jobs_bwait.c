/* jobs_bwait.c -- `wait` (and a submit that waits) on a job parked on its
 * batch lines.
 *
 * A job whose only waits are provider batch lines parks and leaves memory
 * like one waiting for a signal, but nobody has to do anything for it to
 * go on: its batches end and loomd wakes it. So a client waiting for its
 * end is not answered at the park (as it is for a signal, which needs a
 * person) but kept here, by job id, with its deadline, and handed back to
 * the job as an ordinary waiter when it is woken; a park again (a later
 * batch) brings it back here. A wait whose time runs out while the job is
 * parked is answered from the store, as a timed-out wait is.
 *
 * With a shared store the same keeps waits (and cancels) for jobs another
 * daemon runs (jobs_cluster.c): they are answered when its end is
 * announced or found by the poll, or handed to the job if it comes here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

struct jobs_bwait {
    struct jobs_bwait *next;
    jobs_t *js;
    server_conn_t *conn;       /* reference */
    json_t *id;                /* the request's id (reference) or NULL */
    int kind;                  /* W_WAIT, W_SUBMIT or W_CANCEL */
    uint64_t deadline_us;      /* reactor clock; 0: none */
    reactor_timer_t *timer;
    char job[STORE_ID_SIZE];
};

static void bwait_unlink(jobs_t *js, struct jobs_bwait *b)
{
    struct jobs_bwait **p = &js->bwaits;
    while (*p && *p != b)
        p = &(*p)->next;
    if (*p)
        *p = b->next;
}

static void bwait_free(struct jobs_bwait *b)
{
    if (b->timer)
        reactor_timer_cancel(b->js->r, b->timer);
    server_conn_unref(b->conn);
    json_decref(b->id);
    free(b);
}

/* Answers B (unlinked) from OBJ (borrowed; NULL: unreadable) and frees
 * it: the same bodies as jobs_waiter_answer. */
static void bwait_answer(struct jobs_bwait *b, json_t *obj, bool timed_out)
{
    json_t *state = json_object_get(obj, "state");
    if (!obj)
        server_reply_error(b->conn, b->id, "store_error", "the job could not be read back");
    else if (b->kind == W_CANCEL)
        server_reply(b->conn, b->id, json_pack("{s:s, s:O}", "job", b->job, "state", state));
    else if (b->kind == W_SUBMIT && timed_out)
        server_reply(b->conn, b->id,
                     json_pack("{s:s, s:O, s:b}", "job", b->job, "state", state, "timed_out", 1));
    else if (b->kind == W_SUBMIT)
        server_reply(b->conn, b->id, json_pack("{s:s, s:O, s:O, s:b}", "job", b->job, "state",
                                               state, "result", obj, "timed_out", 0));
    else
        server_reply(b->conn, b->id, json_pack("{s:O, s:b}", "job", obj, "timed_out", timed_out));
    bwait_free(b);
}

static void on_bwait_timeout(reactor_t *r, reactor_timer_t *t, void *ud)
{
    struct jobs_bwait *b = ud;
    (void)r;
    (void)t;
    b->timer = NULL;
    bwait_unlink(b->js, b);
    json_t *obj = jobs_job_object(b->js, b->job);
    bwait_answer(b, obj, true);
    json_decref(obj);
}

static bool bwait_state_over(const json_t *obj)
{
    const char *st = json_string_value(json_object_get(obj, "state"));
    return st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                  strcmp(st, "cancelled") == 0);
}

void jobs_bwait_end(jobs_t *js, const char *job)
{
    struct jobs_bwait **p = &js->bwaits;
    json_t *obj = NULL;
    bool read = false;
    while (*p) {
        struct jobs_bwait *b = *p;
        if (strcmp(b->job, job) != 0) {
            p = &b->next;
            continue;
        }
        if (!read) { /* once per job, and only when someone waits for it */
            obj = jobs_job_object(js, job);
            read = true;
            if (obj && !bwait_state_over(obj))
                break; /* not over (the notice was older than a retry): keep them */
        }
        *p = b->next;
        bwait_answer(b, obj, false);
    }
    json_decref(obj);
}

void jobs_bwait_poll(jobs_t *js)
{
    /* each job once per pass: answered ones leave the list, so restart
     * from the head after each, skipping jobs already checked */
    char seen[64][STORE_ID_SIZE];
    size_t nseen = 0;
    for (struct jobs_bwait *b = js->bwaits; b;) {
        bool done = false;
        for (size_t i = 0; i < nseen && !done; i++)
            done = strcmp(seen[i], b->job) == 0;
        if (done || jobs_find(js, b->job)) {
            b = b->next;
            continue;
        }
        if (nseen == sizeof seen / sizeof seen[0])
            break; /* the rest at the next poll */
        snprintf(seen[nseen++], STORE_ID_SIZE, "%s", b->job);
        char job[STORE_ID_SIZE];
        snprintf(job, sizeof job, "%s", b->job);
        jobs_bwait_end(js, job);
        b = js->bwaits;
    }
}

bool jobs_only_batch_waits(const json_t *waits)
{
    size_t i;
    json_t *w;
    json_array_foreach(waits, i, w)
        if (!json_is_string(json_object_get(w, "batch")))
            return false;
    return json_array_size(waits) > 0;
}

int jobs_bwait_add(jobs_t *js, server_conn_t *conn, json_t *id, const char *job, int kind,
                   uint64_t deadline_us)
{
    struct jobs_bwait *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->js = js;
    b->kind = kind;
    b->deadline_us = deadline_us;
    snprintf(b->job, sizeof b->job, "%s", job);
    if (deadline_us) {
        b->timer = reactor_timer_at(js->r, deadline_us, on_bwait_timeout, b);
        if (!b->timer) {
            free(b);
            return -ENOMEM;
        }
    }
    b->conn = server_conn_ref(conn);
    b->id = json_incref(id);
    b->next = js->bwaits;
    js->bwaits = b;
    return 0;
}

void jobs_bwait_take(jobs_t *js, ljob *j)
{
    struct jobs_bwait **p = &js->bwaits;
    while (*p) {
        struct jobs_bwait *b = *p;
        if (strcmp(b->job, j->id) != 0) {
            p = &b->next;
            continue;
        }
        *p = b->next;
        double left = -1;
        if (b->deadline_us) {
            uint64_t now = reactor_now_us(js->r);
            left = b->deadline_us > now ? (double)(b->deadline_us - now) / 1e6 : 0;
        }
        if (jobs_add_waiter(js, j, b->conn, b->id, b->kind, left) < 0)
            server_reply_error(b->conn, b->id, "internal", "out of memory");
        bwait_free(b);
    }
}

void jobs_bwait_drop(jobs_t *js, server_conn_t *conn)
{
    struct jobs_bwait **p = &js->bwaits;
    while (*p) {
        struct jobs_bwait *b = *p;
        if (conn && b->conn != conn) {
            p = &b->next;
            continue;
        }
        *p = b->next;
        if (!conn)
            server_reply_error(b->conn, b->id, "shutting_down",
                               "the daemon stopped while job %s waited for its batches", b->job);
        bwait_free(b);
    }
}
