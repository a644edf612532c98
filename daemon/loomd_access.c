/* loomd_access.c -- who may do what (docs/operations.md, "Tenants and
 * access"): each request's peer is matched against the config's `access`
 * rules for its tenant and role, before its op runs.
 *
 * Rules are matched per request, not per connection: a reload that changes
 * them applies to the next request of every connection already open. Roles:
 * read (get, list, wait, events, stats; workflows, validate, plugins),
 * submit (and submit, cancel, retry), admin (every op, any tenant). An op
 * not named below needs admin, so an op added later is closed until it is
 * given a role here. A job of another tenant is answered `not_found`, as a
 * job that does not exist, so that job ids do not leak between tenants. */
#include <string.h>

#include "daemon/loomd.h"

static const struct {
    const char *op;
    config_role role;
} op_roles[] = {
    { "get", CONFIG_ROLE_READ }, { "list", CONFIG_ROLE_READ }, { "wait", CONFIG_ROLE_READ },
    { "events", CONFIG_ROLE_READ }, { "stats", CONFIG_ROLE_READ },
    { "workflows", CONFIG_ROLE_READ }, { "validate", CONFIG_ROLE_READ },
    { "plugins", CONFIG_ROLE_READ },
    { "submit", CONFIG_ROLE_SUBMIT }, { "cancel", CONFIG_ROLE_SUBMIT },
    { "retry", CONFIG_ROLE_SUBMIT }, { "signal", CONFIG_ROLE_SUBMIT },
};

static config_role op_role(const char *op)
{
    for (size_t i = 0; i < sizeof op_roles / sizeof *op_roles; i++)
        if (strcmp(op_roles[i].op, op) == 0)
            return op_roles[i].role;
    return CONFIG_ROLE_ADMIN;
}

bool loomd_access_of(const loomd *d, server_conn_t *conn, loomd_access *out)
{
    const config_access *a = &d->cfg->access;
    if (!a->set) { /* as before tenants: everyone may do everything */
        *out = (loomd_access){ .tenant = CONFIG_TENANT_DEFAULT, .role = CONFIG_ROLE_ADMIN };
        return true;
    }
    const server_peer *p = server_conn_peer(conn);
    const config_access_rule *r =
        p ? config_access_match(a, p->uid, p->gid, p->groups, p->ngroups) : NULL;
    if (!r)
        return false;
    *out = (loomd_access){ .tenant = r->tenant, .role = r->role };
    return true;
}

bool loomd_access_gate(loomd *d, server_conn_t *conn, json_t *req, json_t *id, const char *op)
{
    loomd_access acc;
    if (!loomd_access_of(d, conn, &acc)) {
        const server_peer *p = server_conn_peer(conn);
        server_reply_error(conn, id, "access_denied",
                           "no access rule of the daemon's config matches this client (uid "
                           "%ld, gid %ld)", p ? (long)p->uid : -1L, p ? (long)p->gid : -1L);
        return false;
    }
    config_role need = op_role(op);
    if (acc.role < need) {
        server_reply_error(conn, id, "forbidden", "'%s' needs the role %s; this client has %s",
                           op, config_role_name(need), config_role_name(acc.role));
        return false;
    }
    const char *t = json_string_value(json_object_get(req, "tenant"));
    if (!t)
        return true;
    if (acc.role < CONFIG_ROLE_ADMIN && strcmp(t, acc.tenant) != 0) {
        server_reply_error(conn, id, "forbidden",
                           "only admin may act for another tenant; this client is tenant %s",
                           acc.tenant);
        return false;
    }
    if (!config_tenant_known(&d->cfg->tenants, t)) {
        server_reply_error(conn, id, "unknown_tenant", "no tenant '%s' in the daemon's config",
                           t);
        return false;
    }
    return true;
}

const char *loomd_access_scope(const loomd *d, server_conn_t *conn, json_t *req)
{
    loomd_access acc;
    const char *t = json_string_value(json_object_get(req, "tenant"));
    if (t)
        return t; /* the gate let it through */
    if (!loomd_access_of(d, conn, &acc) || acc.role == CONFIG_ROLE_ADMIN)
        return NULL;
    return acc.tenant;
}

const char *loomd_access_tenant(const loomd *d, server_conn_t *conn, json_t *req)
{
    loomd_access acc;
    const char *t = json_string_value(json_object_get(req, "tenant"));
    if (t)
        return t;
    return loomd_access_of(d, conn, &acc) ? acc.tenant : CONFIG_TENANT_DEFAULT;
}

bool loomd_tenant_sees(const char *scope, const char *tenant)
{
    return !scope || strcmp(scope, tenant ? tenant : CONFIG_TENANT_DEFAULT) == 0;
}

bool loomd_job_visible(loomd *d, server_conn_t *conn, json_t *id, const char *job,
                       const char *scope)
{
    if (!scope)
        return true;
    ljob *j = jobs_find(&d->jobs, job);
    bool seen;
    if (j) {
        seen = loomd_tenant_sees(scope, j->tenant->name);
    } else {
        json_t *o = NULL;
        char err[256];
        if (store_get_job(d->store, job, &o, err, sizeof err) < 0)
            return true; /* the op answers not_found (or the store's error) itself */
        seen = loomd_tenant_sees(scope, json_string_value(json_object_get(o, "tenant")));
        json_decref(o);
    }
    if (!seen)
        server_reply_error(conn, id, "not_found", "no such job");
    return seen;
}

void loomd_stats_scope(loomd *d, json_t *stats, const char *scope)
{
    jobs_tenant *t = jobs_tenant_get(&d->jobs, scope);
    if (t)
        json_object_set_new(stats, "jobs",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "queued",
                                      (json_int_t)t->nqueue, "running", (json_int_t)t->nrunning,
                                      "succeeded", (json_int_t)t->succeeded, "failed",
                                      (json_int_t)t->failed, "cancelled",
                                      (json_int_t)t->cancelled, "submitted",
                                      (json_int_t)t->submitted));
    json_object_set_new(stats, "tenants", jobs_tenants_json(&d->jobs, scope));
    /* spending: only the tenant's own; the totals by workflow and provider
     * mix every tenant's */
    json_t *cost = json_object_get(stats, "cost");
    if (json_is_object(cost)) {
        json_t *mine = json_object_get(json_object_get(cost, "by_tenant"), scope);
        json_t *zero = json_real(0);
        json_t *v = mine ? mine : zero;
        json_t *own = v ? json_pack("{s:O, s:{s:O}}", "usd", v, "by_tenant", scope, v) : NULL;
        json_decref(zero);
        json_object_set_new(stats, "cost", own ? own : json_object());
    }
}

void loomd_tenants_apply(loomd *d)
{
    const config_tenants *ts = &d->cfg->tenants;
    jobs_tenants_reset(&d->jobs);
    for (size_t i = 0; i < ts->n; i++)
        if (jobs_tenant_set(&d->jobs, ts->v[i].name, ts->v[i].weight, ts->v[i].max_running_jobs,
                            ts->v[i].max_queued_jobs) < 0)
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "tenant", ts->v[i].name),
                      "out of memory: a tenant keeps weight 1 and no limits of its own");
    /* a higher max_running may let a tenant's queued jobs start now */
    jobs_pump(&d->jobs);
}
