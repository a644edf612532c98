/* cluster.c -- the other daemons sharing this one's PostgreSQL store
 * (cluster.h): their notifications on channel STORE_NOTIFY_CHANNEL, ours
 * to them, and the poll that is the safety net for what a notification
 * missed (sent while the connection was down) plus the claim of jobs whose
 * owner is gone.
 *
 * A poll runs on a timer every poll_ms and, coalesced into one pending
 * run, when the connection comes back, on cluster_kick and on a `released`
 * notice (jobs a stopping daemon let go). Other notifications do not
 * poll: each says what changed, and its hook acts on it. A claim per
 * notification would cost the store a transaction for each job any daemon
 * starts or ends, while the jobs a claim looks for (a dead owner's) appear
 * only as leases expire, which no notification announces: the timer finds
 * them within poll_ms of their expiry. */
#include "daemon/cluster/cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cluster/pgconn.h"

/* PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; the header
 * promises a little less, so a node name never tips it over. */
#define CLUSTER_PAYLOAD_MAX 7900

/* A claim in flight: the store answers after the cluster may be gone, so
 * its callback holds this rather than the cluster itself. */
typedef struct cluster_claim {
    cluster_t *c;                /* NULL once the cluster is freed */
} cluster_claim;

struct cluster {
    reactor_t *r;
    log_sink *log;
    store_t *store;
    char *node;
    pgconn_t *pg;
    cluster_hooks h;
    uint64_t poll_us;
    reactor_timer_t *poll_timer;
    reactor_post_t kick;         /* a pending poll (at most one) */
    bool kick_pending;
    cluster_claim *claim;        /* in flight, or NULL */
    bool claim_again;            /* a poll came while it was: claim once more after */
    bool claim_unsupported;      /* the store cannot claim (-ENOTSUP) */
    cluster_stats stats;
};

static void cluster_run(cluster_t *c);

/* ---- the poll: the timer, kicks and claims */

static void cluster_poll_fire(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)t;
    cluster_t *c = ud;
    c->poll_timer = reactor_timer_add(r, c->poll_us, cluster_poll_fire, c);
    if (!c->poll_timer)
        log_write(c->log, LOOM_LOG_ERROR, NULL,
                  "cluster: no memory for the poll timer; polling on notifications only");
    cluster_run(c);
}

static void cluster_kick_run(reactor_t *r, void *ud)
{
    (void)r;
    cluster_t *c = ud;
    c->kick_pending = false;
    cluster_run(c);
}

void cluster_kick(cluster_t *c)
{
    if (!c || c->kick_pending)
        return;
    c->kick_pending = true;
    (void)reactor_post_embedded(c->r, &c->kick, cluster_kick_run, c); /* embedded: cannot fail */
}

static void cluster_claimed(void *ud, int status, const json_t *jobs)
{
    cluster_claim *cl = ud;
    cluster_t *c = cl->c;
    free(cl);
    if (!c)
        return; /* the cluster was freed meanwhile */
    c->claim = NULL;
    /* a job released (or a lease that ran out) after this claim was queued
     * would wait for the next timer otherwise */
    bool again = c->claim_again;
    c->claim_again = false;
    if (status < 0) {
        /* Transient (the store's connection down, say): the next poll tries
         * again; the store logs its own outages. */
        if (log_enabled(c->log, LOOM_LOG_DEBUG))
            log_write(c->log, LOOM_LOG_DEBUG, NULL, "cluster: claiming jobs failed: %s",
                      strerror(-status));
        return;
    }
    size_t n = json_is_array(jobs) ? json_array_size(jobs) : 0;
    if (n == 0) {
        if (again)
            cluster_kick(c);
        return;
    }
    c->stats.claimed += n;
    if (c->h.claimed)
        c->h.claimed(c->h.ud, jobs);
    /* There may be more orphans than one claim took: go on while there is
     * room (each round claims at least one job, so this ends). */
    if (c->h.capacity && c->h.capacity(c->h.ud) > 0)
        cluster_kick(c);
}

static void cluster_claim_start(cluster_t *c)
{
    if (c->claim) {
        c->claim_again = true;
        return;
    }
    if (c->claim_unsupported || !c->h.capacity)
        return;
    size_t cap = c->h.capacity(c->h.ud);
    if (cap == 0)
        return;
    cluster_claim *cl = calloc(1, sizeof *cl);
    if (!cl)
        return; /* the next poll tries again */
    cl->c = c;
    int rc = store_claim_jobs(c->store, cap, cluster_claimed, cl);
    if (rc < 0) {
        free(cl);
        if (rc == -ENOTSUP)
            c->claim_unsupported = true;
        return;
    }
    c->claim = cl;
    c->stats.claims++;
}

static void cluster_run(cluster_t *c)
{
    c->stats.polls++;
    if (c->h.poll)
        c->h.poll(c->h.ud);
    cluster_claim_start(c);
}

/* ---- notifications received */

/* Splits S at its first space: S keeps the word, the rest is returned
 * (NULL when there is no space). */
static char *cluster_split(char *s)
{
    char *sp = strchr(s, ' ');
    if (!sp)
        return NULL;
    *sp = '\0';
    return sp + 1;
}

/* Dispatches one payload "KIND NODE ARGS". Returns false when it is
 * malformed: an unknown kind, a missing or empty word, or words left over. */
static bool cluster_dispatch(cluster_t *c, char *p)
{
    char *kind = p;
    char *node = cluster_split(kind);
    if (!node || !*kind)
        return false;
    char *a1 = cluster_split(node);
    if (!a1 || !*node)
        return false;
    if (strcmp(node, c->node) == 0)
        return true; /* our own, echoed back: not news */
    char *a2 = cluster_split(a1);
    if (!*a1)
        return false;
    /* The kinds with two arguments take the rest of the payload as the
     * second (a step key is opaque and may hold spaces). */
    bool two = strcmp(kind, "step") == 0 || strcmp(kind, "end") == 0 ||
               strcmp(kind, "signal") == 0 || strcmp(kind, "workflow") == 0 ||
               strcmp(kind, "event") == 0;
    if (two ? !a2 || !*a2 : a2 != NULL)
        return false;
    if (two && strcmp(kind, "step") != 0 && strcmp(kind, "signal") != 0 &&
        strcmp(kind, "event") != 0 && strchr(a2, ' '))
        return false;
    const cluster_hooks *h = &c->h;
    if (strcmp(kind, "new") == 0) {
        if (h->job_new)
            h->job_new(h->ud, node, a1);
    } else if (strcmp(kind, "queued") == 0) {
        if (h->job_queued)
            h->job_queued(h->ud, node, a1);
    } else if (strcmp(kind, "waiting") == 0) {
        if (h->job_waiting)
            h->job_waiting(h->ud, node, a1);
    } else if (strcmp(kind, "cancel") == 0) {
        if (h->job_cancel)
            h->job_cancel(h->ud, node, a1);
    } else if (strcmp(kind, "step") == 0) {
        if (h->job_step)
            h->job_step(h->ud, node, a1, a2);
    } else if (strcmp(kind, "end") == 0) {
        if (h->job_end)
            h->job_end(h->ud, node, a1, a2);
    } else if (strcmp(kind, "signal") == 0) {
        if (h->job_signal)
            h->job_signal(h->ud, node, a1, a2);
    } else if (strcmp(kind, "workflow") == 0) {
        if (h->workflow)
            h->workflow(h->ud, node, a1, a2);
    } else if (strcmp(kind, "watch") == 0) {
        if (h->job_watch)
            h->job_watch(h->ud, node, a1);
    } else if (strcmp(kind, "event") == 0) {
        if (h->job_event)
            h->job_event(h->ud, node, a1, a2);
    } else if (strcmp(kind, "released") == 0) {
        /* a daemon stopping let the job go: claim it now (if there is
         * room), not at the next poll */
        cluster_kick(c);
    } else {
        return false;
    }
    c->stats.notifications++;
    return true;
}

static void cluster_on_notify(void *ud, const char *channel, const char *payload)
{
    cluster_t *c = ud;
    if (strcmp(channel, STORE_NOTIFY_CHANNEL) != 0)
        return;
    char buf[CLUSTER_PAYLOAD_MAX + 200];
    size_t len = strlen(payload);
    bool ok = len < sizeof buf;
    if (ok) {
        memcpy(buf, payload, len + 1);
        ok = cluster_dispatch(c, buf);
    }
    if (!ok) {
        /* Another version's kind, or garbage sent by hand: counted, logged
         * once in a while (the first, then every 1,000th). */
        if (c->stats.malformed++ % 1000 == 0)
            log_write(c->log, LOOM_LOG_WARN, NULL,
                      "cluster: ignored a malformed notification (%llu so far)",
                      (unsigned long long)c->stats.malformed);
    }
}

static void cluster_on_state(void *ud, bool up)
{
    cluster_t *c = ud;
    c->stats.connected = up;
    /* Notifications sent while it was down are lost: look for ourselves. */
    if (up)
        cluster_kick(c);
}

/* ---- notifications sent */

static void cluster_published(void *ud, const PGresult *res, const char *err)
{
    cluster_t *c = ud;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        c->stats.published++;
        return;
    }
    /* Best effort: the poll of the other daemons is the safety net. */
    if (log_enabled(c->log, LOOM_LOG_DEBUG))
        log_write(c->log, LOOM_LOG_DEBUG, NULL, "cluster: a notification was not sent: %s",
                  err ? err : "unknown error");
}

int cluster_publish(cluster_t *c, const char *kind, const char *args)
{
    if (!c || !kind || !*kind || !args || strpbrk(kind, " \r\n") || strpbrk(args, "\r\n"))
        return -EINVAL;
    size_t len = strlen(kind) + 1 + strlen(c->node) + 1 + strlen(args);
    if (len > CLUSTER_PAYLOAD_MAX)
        return -EINVAL;
    char *payload = malloc(len + 1);
    if (!payload)
        return -ENOMEM;
    snprintf(payload, len + 1, "%s %s %s", kind, c->node, args);
    const char *params[2] = {STORE_NOTIFY_CHANNEL, payload};
    int rc = pgconn_query(c->pg, "SELECT pg_notify($1, $2)", 2, params, cluster_published, c);
    free(payload);
    return rc;
}

/* ---- life */

cluster_t *cluster_new(reactor_t *r, log_sink *log, store_t *store, const cluster_options *o,
                       const cluster_hooks *h)
{
    if (!r || !log || !store || !o || !o->conninfo || o->poll_ms < 0) {
        errno = EINVAL;
        return NULL;
    }
    if (!store_shared(store)) {
        errno = EINVAL;
        return NULL;
    }
    cluster_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->r = r;
    c->log = log;
    c->store = store;
    if (h)
        c->h = *h;
    int64_t poll_ms = o->poll_ms;
    if (poll_ms == 0) {
        int64_t lease = store_lease_ms(store);
        poll_ms = lease > 0 && lease / 2 < 1000 ? lease / 2 : 1000;
        if (poll_ms < 1)
            poll_ms = 1;
    }
    c->poll_us = (uint64_t)poll_ms * REACTOR_MSEC;
    if (!(c->node = strdup(store_node(store))))
        goto fail;
    static const char *const channels[] = {STORE_NOTIFY_CHANNEL, NULL};
    pgconn_options po = {
        .conninfo = o->conninfo,
        .password_file = o->password_file,
        .listen = channels,
        .on_notify = cluster_on_notify,
        .on_state = cluster_on_state,
        .ud = c,
        .name = "cluster",
    };
    if (!(c->pg = pgconn_new(r, log, &po)))
        goto fail;
    if (!(c->poll_timer = reactor_timer_add(r, c->poll_us, cluster_poll_fire, c)))
        goto fail;
    return c;
fail:;
    int e = errno ? errno : ENOMEM;
    cluster_free(c);
    errno = e;
    return NULL;
}

void cluster_get_stats(const cluster_t *c, cluster_stats *out)
{
    if (!out)
        return;
    if (!c) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = c->stats;
    out->connected = pgconn_up(c->pg);
}

void cluster_free(cluster_t *c)
{
    if (!c)
        return;
    /* First the connection: its callbacks (a publish answered "closing")
     * still see the cluster whole. */
    pgconn_free(c->pg);
    c->pg = NULL;
    if (c->poll_timer)
        reactor_timer_cancel(c->r, c->poll_timer);
    reactor_post_cancel(c->r, &c->kick);
    if (c->claim)
        c->claim->c = NULL; /* the store's answer frees it */
    free(c->node);
    free(c);
}
