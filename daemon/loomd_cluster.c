/* loomd_cluster.c -- the daemon beside others on a shared PostgreSQL store
 * (docs/scale-out.md): the store's cluster options from the config, the
 * cluster module's notifications turned into the jobs' calls, and what this
 * daemon tells the others (cancels, the workflow versions it loads).
 *
 * Nothing here runs with a SQLite state directory: d->cluster stays NULL
 * and every function is a no-op. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cluster/cluster.h"
#include "daemon/loomd.h"

bool loomd_shared(const loomd *d)
{
    /* once open, the store says: a reload's new `state` waits for a restart */
    return d->store ? store_shared(d->store) : store_location_is_pg(d->cfg->state);
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

bool loomd_cluster_same(const config_cluster *a, const config_cluster *b)
{
    return same_str(a->node, b->node) && a->lease_ms == b->lease_ms &&
           same_str(a->password_file, b->password_file) &&
           same_str(a->local_state, b->local_state) && a->poll_ms == b->poll_ms &&
           a->limits_window_ms == b->limits_window_ms;
}

const char *loomd_local_state(const loomd *d)
{
    return loomd_shared(d) ? d->cfg->cluster.local_state : d->cfg->state;
}

int loomd_local_state_prepare(loomd *d)
{
    if (!loomd_shared(d))
        return 0; /* the store made its directory */
    const char *dir = d->cfg->cluster.local_state;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cluster.local_state %s: %s", dir,
                  strerror(errno));
        return -1;
    }
    return 0;
}

void loomd_store_options(loomd *d, store_options_t *o)
{
    if (!loomd_shared(d))
        return;
    if (d->cfg->cluster.node) {
        snprintf(d->node, sizeof d->node, "%s", d->cfg->cluster.node);
    } else if (gethostname(d->node, sizeof d->node - 1) < 0 || !d->node[0]) {
        snprintf(d->node, sizeof d->node, "loomd");
    }
    d->node[sizeof d->node - 1] = '\0';
    /* a NOTIFY payload is split at spaces: a host name never has one, but
     * be sure */
    for (char *p = d->node; *p; p++)
        if (*p == ' ')
            *p = '_';
    o->node = d->node;
    o->lease_ms = (int64_t)d->cfg->cluster.lease_ms;
    o->password_file = d->cfg->cluster.password_file;
}

/* ---- what the others say */

static void h_job_new(void *ud, const char *node, const char *job)
{
    (void)ud, (void)node, (void)job; /* the poll claims when its owner is gone */
}

static void h_job_step(void *ud, const char *node, const char *job, const char *key)
{
    loomd *d = ud;
    jobs_remote_step(&d->jobs, node, job, key);
}

static void h_job_end(void *ud, const char *node, const char *job, const char *state)
{
    loomd *d = ud;
    (void)node, (void)state;
    jobs_remote_end(&d->jobs, job);
}

static void h_job_waiting(void *ud, const char *node, const char *job)
{
    loomd *d = ud;
    (void)node, (void)job;
    jobs_remote_parked(&d->jobs);
}

static void h_job_cancel(void *ud, const char *node, const char *job)
{
    loomd *d = ud;
    (void)node;
    jobs_remote_cancel(&d->jobs, job);
}

static void h_job_watch(void *ud, const char *node, const char *job)
{
    loomd *d = ud;
    jobs_remote_watch(&d->jobs, node, job);
}

static void h_job_event(void *ud, const char *node, const char *job, const char *event)
{
    loomd *d = ud;
    jobs_remote_event(&d->jobs, node, job, event);
}

static void h_workflow(void *ud, const char *node, const char *name, const char *version)
{
    loomd *d = ud;
    log_write(&d->log, LOOM_LOG_INFO,
              json_pack("{s:s, s:s, s:s}", "daemon", node, "workflow", name, "version", version),
              "another daemon loaded a workflow version (each runs its own files; a job runs "
              "the version it started with)");
}

static void h_poll(void *ud)
{
    loomd *d = ud;
    jobs_remote_poll(&d->jobs);
}

static size_t h_capacity(void *ud)
{
    loomd *d = ud;
    return d->stopping ? 0 : jobs_capacity(&d->jobs);
}

static void h_claimed(void *ud, const json_t *jobs)
{
    loomd *d = ud;
    jobs_adopt(&d->jobs, jobs);
}

/* jobs_hooks.publish */
static void publish(void *ud, const char *kind, const char *args)
{
    loomd *d = ud;
    if (d->cluster)
        (void)cluster_publish(d->cluster, kind, args);
}

void loomd_cluster_hooks(loomd *d, jobs_hooks *h)
{
    if (loomd_shared(d))
        h->publish = publish;
}

int loomd_cluster_start(loomd *d)
{
    if (!loomd_shared(d))
        return 0;
    cluster_hooks h = {
        .ud = d, .job_new = h_job_new, .job_step = h_job_step, .job_end = h_job_end,
        .job_waiting = h_job_waiting, .job_cancel = h_job_cancel, .workflow = h_workflow,
        .job_watch = h_job_watch, .job_event = h_job_event,
        .poll = h_poll, .capacity = h_capacity, .claimed = h_claimed,
    };
    cluster_options o = { .conninfo = d->cfg->state,
                          .password_file = d->cfg->cluster.password_file,
                          .poll_ms = (int64_t)d->cfg->cluster.poll_ms };
    if (!(d->cluster = cluster_new(d->r, &d->log, d->store, &o, &h))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start the cluster's notifications: %s",
                  strerror(errno));
        return -1;
    }
    log_write(&d->log, LOOM_LOG_INFO,
              json_pack("{s:s, s:I}", "node", store_node(d->store), "lease_ms",
                        (json_int_t)store_lease_ms(d->store)),
              "sharing jobs with the other daemons of this PostgreSQL store");
    return 0;
}

void loomd_cluster_workflow(loomd *d, const char *name, const char *version)
{
    if (!d->cluster || !name || !version)
        return;
    char args[600];
    if ((size_t)snprintf(args, sizeof args, "%s %s", name, version) < sizeof args)
        (void)cluster_publish(d->cluster, "workflow", args);
}

json_t *loomd_cluster_stats(loomd *d)
{
    if (!d->cluster)
        return json_null();
    cluster_stats s;
    cluster_get_stats(d->cluster, &s);
    return json_pack("{s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "node",
                     store_node(d->store), "lease_ms", (json_int_t)store_lease_ms(d->store),
                     "connected", s.connected, "notifications", (json_int_t)s.notifications,
                     "malformed", (json_int_t)s.malformed, "polls", (json_int_t)s.polls,
                     "claims", (json_int_t)s.claims, "claimed", (json_int_t)s.claimed,
                     "published", (json_int_t)s.published);
}

void loomd_cluster_stop(loomd *d)
{
    cluster_free(d->cluster);
    d->cluster = NULL;
}
