/* loomd_ops.c -- the socket protocol's ops (docs/protocol.md): each checks
 * its request's fields and answers, or hands over to loomd_jobs.c.
 *
 * Every request is checked against its op's table in ops_check.c (unknown
 * fields, types, ranges) before the op runs: a typo never half-submits. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/isolate/iso.h"
#include "daemon/loomd.h"
#include "daemon/ops_check.h"
#include "dsl/dsl.h"
#include "dsl/input_schema.h"
#include "dsl/suggest.h"

typedef void (*op_fn)(loomd *d, server_conn_t *conn, json_t *req, json_t *id);

/* FIELD of REQ must be absent or of TYPE ("string", "integer", "number",
 * "boolean", "object"); answers and returns false otherwise. */
static bool field_ok(server_conn_t *conn, json_t *req, json_t *id, const char *field,
                     const char *type, bool required)
{
    json_t *v = json_object_get(req, field);
    if (!v) {
        if (required)
            server_reply_error(conn, id, "invalid_request", "'%s' is required", field);
        return !required;
    }
    bool ok = strcmp(type, "string") == 0    ? json_is_string(v)
              : strcmp(type, "integer") == 0 ? json_is_integer(v)
              : strcmp(type, "number") == 0  ? json_is_number(v)
              : strcmp(type, "boolean") == 0 ? json_is_boolean(v)
              : strcmp(type, "object") == 0  ? json_is_object(v)
                                             : true;
    if (!ok)
        server_reply_error(conn, id, "invalid_request", "'%s' must be a %s", field, type);
    return ok;
}

/* The served workflows' names from the snapshot V (N entries), as a
 * NULL-terminated array borrowing V's strings (caller frees the array
 * only). NULL when out of memory. */
static const char **served_names(const wfdir_entry *v, size_t n)
{
    const char **names = calloc(n + 1, sizeof *names);
    if (!names)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].served && v[i].name)
            names[k++] = v[i].name;
    return names;
}

/* Answers unknown_workflow for NAME, with the served name nearest to it when
 * one is a plausible typo: the code stays stable, the message helps. */
static void reply_unknown_workflow(loomd *d, server_conn_t *conn, json_t *id, const char *name)
{
    wfdir_entry *v = NULL;
    size_t n = 0;
    const char **names = NULL;
    const char *near = NULL;
    if (wfdir_list(d->wf, &v, &n) == 0 && (names = served_names(v, n)))
        near = dsl_suggest(name, strlen(name), names, (size_t)-1);
    if (near)
        server_reply_error(conn, id, "unknown_workflow", "no workflow '%s' is loaded; did you mean '%s'?",
                           name, near);
    else
        server_reply_error(conn, id, "unknown_workflow", "no workflow '%s' is loaded", name);
    free(names);
    wfdir_list_free(v, n);
}

/* Checks G's `use` nodes against the served workflows, adding an error (with
 * "did you mean") to DIAGS for each name not served. The number of errors,
 * or 0 when the list could not be made (out of memory: not checked). */
static size_t check_uses_served(loomd *d, dsl_graph *g, dsl_diags *diags)
{
    if (!g->nuses)
        return 0;
    wfdir_entry *v = NULL;
    size_t n = 0, errors = 0;
    const char **names = NULL;
    if (wfdir_list(d->wf, &v, &n) == 0 && (names = served_names(v, n))) {
        dsl_registry reg = d->reg;
        reg.workflows = names;
        errors = dsl_check_uses(&g, NULL, 1, &reg, &diags);
    }
    free(names);
    wfdir_list_free(v, n);
    return errors;
}

/* Whether CONN already holds max_pending_per_connection replies and streams
 * owed (waits, subscriptions, submits not yet committed): then answers
 * too_many_pending, so one client cannot grow the daemon without bound. */
static bool conn_full(loomd *d, server_conn_t *conn, json_t *id)
{
    size_t held = server_conn_holds(conn);
    if ((int64_t)held < d->cfg->max_pending_per_connection)
        return false;
    server_reply_error(conn, id, "too_many_pending",
                       "this connection has %zu waits, subscriptions and submits pending, the "
                       "most allowed (max_pending_per_connection); wait for some to end",
                       held);
    return true;
}

static void op_submit(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (conn_full(d, conn, id))
        return;
    if (d->stopping) {
        server_reply_error(conn, id, "shutting_down", "the daemon is stopping and takes no new jobs");
        return;
    }
    const char *name = json_string_value(json_object_get(req, "workflow"));
    /* jobs_submit checks this too; the answer here names the near miss */
    if (!wfdir_engine_lookup(d->wf, name)) {
        reply_unknown_workflow(d, conn, id, name);
        return;
    }
    const char *tp = json_string_value(json_object_get(req, "traceparent"));
    trace_ctx parent;
    const char *why;
    if (tp && trace_parse(tp, &parent, &why) < 0) {
        server_reply_error(conn, id, "invalid_request",
                           "'traceparent' is not a W3C traceparent: %s (got '%.80s')", why, tp);
        return;
    }
    jobs_submit(&d->jobs, conn, req, loomd_access_tenant(d, conn, req));
}

/* What a reply may carry at most: the server cuts a connection off once
 * more than SERVER_DEFAULT_MAX_OUTPUT bytes wait to be sent, and a request
 * is only handled while little (read_pause) is waiting. */
#define OPS_REPLY_MAX (SERVER_DEFAULT_MAX_OUTPUT - ((size_t)1 << 20))

/* Makes the job object O (borrowed, changed in place) fit in a reply: a
 * member too large to send (a row stored before max_output_bytes existed)
 * is replaced by null and an explanation under "<member>_error", and the
 * operator log says so. Members are given up output first, then input. */
static void fit_job(loomd *d, json_t *o)
{
    static const char *const members[] = { "output", "input" };
    for (size_t i = 0; i < 2 && ops_json_size(o, OPS_REPLY_MAX) > OPS_REPLY_MAX; i++) {
        json_t *m = json_object_get(o, members[i]);
        if (!m || json_is_null(m))
            continue;
        size_t n = ops_json_size(m, SIZE_MAX - 1);
        char key[16];
        snprintf(key, sizeof key, "%s_error", members[i]);
        json_object_set_new(o, key, json_pack("{s:s, s:s+, s:I}", "code", "output_too_large",
                                              "message", "this is too large for a reply: ",
                                              members[i], "bytes", (json_int_t)n));
        json_object_set_new(o, members[i], json_null());
        log_write(&d->log, LOOM_LOG_WARN,
                  json_pack("{s:s?, s:s, s:I, s:I}", "job",
                            json_string_value(json_object_get(o, "id")), "member", members[i],
                            "bytes", (json_int_t)n, "limit", (json_int_t)OPS_REPLY_MAX),
                  "a stored job's %s is too large for a reply; sent without it", members[i]);
    }
}

/* The stored row of JOB, fitted to a reply (new reference); NULL once the
 * error was answered to CONN. A job outside SCOPE (NULL: any tenant) is
 * not_found. */
static json_t *stored_job(loomd *d, server_conn_t *conn, json_t *id, const char *job,
                          const char *scope)
{
    json_t *o = NULL;
    char err[256];
    int rc = store_get_job(d->store, job, &o, err, sizeof err);
    if (rc < 0) {
        server_reply_error(conn, id, rc == -ENOENT ? "not_found" : "store_error", "%s",
                           rc == -ENOENT ? "no such job" : err);
        return NULL;
    }
    if (!loomd_tenant_sees(scope, json_string_value(json_object_get(o, "tenant")))) {
        json_decref(o);
        server_reply_error(conn, id, "not_found", "no such job");
        return NULL;
    }
    fit_job(d, o);
    return o;
}

static void op_get(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    json_t *o = stored_job(d, conn, id, json_string_value(json_object_get(req, "job")),
                           loomd_access_scope(d, conn, req));
    if (o)
        server_reply(conn, id, json_pack("{s:o}", "job", o));
}

static void op_wait(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    json_t *t = json_object_get(req, "timeout");
    const char *job = json_string_value(json_object_get(req, "job"));
    const char *scope = loomd_access_scope(d, conn, req);
    ljob *live = jobs_find(&d->jobs, job);
    if (live && !loomd_tenant_sees(scope, live->tenant->name)) {
        server_reply_error(conn, id, "not_found", "no such job");
        return;
    }
    if (jobs_find(&d->jobs, job) && conn_full(d, conn, id))
        return;
    if (!jobs_find(&d->jobs, job)) {
        json_t *o = stored_job(d, conn, id, job, scope);
        if (!o)
            return;
        const char *state = json_string_value(json_object_get(o, "state"));
        /* a job parked on its batch lines goes on by itself: jobs_wait
         * keeps the wait until its end */
        bool goes_on = state && strcmp(state, "waiting") == 0 &&
                       jobs_only_batch_waits(json_object_get(o, "waits"));
        if (state && strcmp(state, "queued") != 0 && strcmp(state, "running") != 0 &&
            !goes_on) {
            /* already over: the answer is the stored row */
            server_reply(conn, id, json_pack("{s:o, s:b}", "job", o, "timed_out", 0));
            return;
        }
        /* unfinished yet not live: one about to resume (jobs_wait holds the
         * wait until it is), or one nothing here will end (an error) */
        json_decref(o);
    }
    jobs_wait(&d->jobs, conn, id, job, t ? json_number_value(t) : -1, false);
}

static void op_cancel(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    const char *job = json_string_value(json_object_get(req, "job"));
    if (!loomd_job_visible(d, conn, id, job, loomd_access_scope(d, conn, req)))
        return;
    if (jobs_find(&d->jobs, job) && conn_full(d, conn, id))
        return;
    jobs_cancel(&d->jobs, conn, id, job);
}

static void op_retry(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (conn_full(d, conn, id))
        return;
    if (d->stopping) {
        server_reply_error(conn, id, "shutting_down", "the daemon is stopping and takes no new jobs");
        return;
    }
    const char *job = json_string_value(json_object_get(req, "job"));
    if (!loomd_job_visible(d, conn, id, job, loomd_access_scope(d, conn, req)))
        return;
    jobs_retry(&d->jobs, conn, id, job);
}

/* A waiting job goes on with the data as its wait's output (jobs_wait.c). */
static void op_signal(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    const char *job = json_string_value(json_object_get(req, "job"));
    if (!loomd_job_visible(d, conn, id, job, loomd_access_scope(d, conn, req)))
        return;
    if (d->stopping) {
        server_reply_error(conn, id, "shutting_down", "the daemon is stopping; signal the job "
                           "after it starts again");
        return;
    }
    jobs_signal(&d->jobs, conn, id, job, json_string_value(json_object_get(req, "signal")),
                json_object_get(req, "data"));
}

static void op_list(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    const char *order = json_string_value(json_object_get(req, "order"));
    if (order && strcmp(order, "newest") && strcmp(order, "oldest")) {
        server_reply_error(conn, id, "invalid_request", "'order' must be newest or oldest");
        return;
    }
    json_int_t limit = json_integer_value(json_object_get(req, "limit"));
    store_list_query_t q = {
        .state = json_string_value(json_object_get(req, "state")),
        .workflow = json_string_value(json_object_get(req, "workflow")),
        .after = json_string_value(json_object_get(req, "after")),
        .limit = (size_t)limit, /* 0 (absent): the store's default */
        .oldest_first = order && strcmp(order, "oldest") == 0,
        .tenant = loomd_access_scope(d, conn, req), /* NULL: an admin sees every tenant */
    };
    json_t *jobs = NULL;
    char err[256];
    int rc = store_list_jobs(d->store, &q, &jobs, err, sizeof err);
    if (rc < 0) {
        server_reply_error(conn, id, rc == -EINVAL ? "invalid_request" : "store_error", "%s", err);
        return;
    }
    size_t n = json_array_size(jobs), want = q.limit ? q.limit : 100;
    json_t *last = n ? json_object_get(json_array_get(jobs, n - 1), "id") : NULL;
    server_reply(conn, id, json_pack("{s:o, s:O}", "jobs", jobs, "next",
                                     n == want && last ? last : json_null()));
}

static void op_workflows(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    wfdir_entry *v = NULL;
    size_t n = 0;
    json_t *a = json_array();
    if (!a || wfdir_list(d->wf, &v, &n) < 0) {
        json_decref(a);
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s?, s:s, s:b, s:s?, s:I, s:I, s:s?}", "name", v[i].name, "file",
                              v[i].file, "served", v[i].served, "version",
                              v[i].served ? v[i].version.hash : NULL, "load",
                              (json_int_t)v[i].version.load, "loaded_ms",
                              (json_int_t)(v[i].loaded_us / 1000), "error", v[i].error);
        /* what a client needs to offer the workflow as a tool (loomctl mcp) */
        dsl_graph *g = v[i].served && v[i].name ? wfdir_get(d->wf, v[i].name, NULL) : NULL;
        if (o) {
            json_object_set_new(o, "description",
                                g && g->description ? json_string(g->description) : json_null());
            json_object_set_new(o, "input_schema", g ? dsl_input_schema(g) : json_null());
        }
        dsl_graph_unref(g);
        json_array_append_new(a, o);
    }
    wfdir_list_free(v, n);
    server_reply(conn, id, json_pack("{s:o}", "workflows", a));
}

/* A `validate` compiled on the worker pool: a 16 MiB text takes seconds,
 * which on the reactor thread would stall every client and call. */
typedef struct validate_job {
    loomd *d;
    server_conn_t *conn;       /* a reference */
    json_t *id, *yaml;         /* references */
    char *file;                /* owned */
    dsl_registry *reg;         /* owned copy: a reload may rebuild d->reg */
    dsl_diags diags;
    dsl_graph *g;              /* compiled, or NULL */
} validate_job;

static void validate_work(void *ud)
{
    validate_job *v = ud;
    dsl_options opt = { .registry = v->reg };
    v->g = dsl_compile(v->file, json_string_value(v->yaml), json_string_length(v->yaml), &opt,
                       &v->diags);
}

/* Replies on the reactor thread. STATUS < 0: never compiled (the pool is
 * stopping, or the item could not be queued). */
static void validate_done(void *ud, int status)
{
    validate_job *v = ud;
    /* a closed connection needs no answer, and at shutdown the workflows
     * directory may be gone already */
    if (status == -ECANCELED || status == -ESHUTDOWN) {
        server_reply_error(v->conn, v->id, "shutting_down", "the daemon is stopping");
    } else if (status < 0) {
        server_reply_error(v->conn, v->id, "internal", "cannot queue the compile: %s",
                           strerror(-status));
    } else if (server_conn_is_open(v->conn)) {
        if (v->g && check_uses_served(v->d, v->g, &v->diags) > 0) {
            dsl_graph_unref(v->g);
            v->g = NULL;
        }
        json_t *lines = json_array();
        for (size_t i = 0; lines && i < v->diags.n; i++) {
            char *s = dsl_diag_format(&v->diags, i);
            if (s)
                json_array_append_new(lines, json_string(s));
            free(s);
        }
        server_reply(v->conn, v->id,
                     json_pack("{s:b, s:s?, s:o}", "valid", v->g != NULL, "name",
                               v->g ? v->g->name : NULL, "diagnostics",
                               lines ? lines : json_array()));
    }
    if (v->g)
        dsl_graph_unref(v->g);
    dsl_diags_free(&v->diags);
    server_conn_unref(v->conn);
    json_decref(v->id);
    json_decref(v->yaml);
    free(v->reg);
    free(v->file);
    free(v);
}

static void op_validate(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (!field_ok(conn, req, id, "yaml", "string", true) ||
        !field_ok(conn, req, id, "file", "string", false))
        return;
    const char *file = json_string_value(json_object_get(req, "file"));
    validate_job *v = calloc(1, sizeof *v);
    if (!v || !(v->file = strdup(file ? file : "<request>")) ||
        !(v->reg = wfdir_registry_dup(&d->reg)) || dsl_diags_init(&v->diags, v->file) < 0) {
        if (v) {
            free(v->reg);
            free(v->file);
        }
        free(v);
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    v->d = d;
    v->conn = server_conn_ref(conn);
    v->id = json_incref(id);
    /* the string is only read by the worker; its count changes here only */
    v->yaml = json_incref(json_object_get(req, "yaml"));
    int rc = pool_submit(d->pool, validate_work, validate_done, v, NULL);
    if (rc < 0)
        validate_done(v, rc);
}

json_t *loomd_stats(loomd *d)
{
    server_stats_t ss;
    server_stats(d->srv, &ss);
    jobs_counts jc;
    jobs_counts_get(&d->jobs, &jc);
    json_t *o = json_pack(
        "{s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:o, s:I, s:I}",
        "uptime_s", (json_int_t)((store_now_ms() - d->started_ms) / 1000),
        "jobs", "queued", (json_int_t)jc.queued, "running", (json_int_t)jc.running,
        "succeeded", (json_int_t)jc.succeeded, "failed", (json_int_t)jc.failed,
        "cancelled", (json_int_t)jc.cancelled, "submitted", (json_int_t)jc.submitted,
        "providers", gen_provider_stats(d),
        "connections", (json_int_t)ss.connections, "workflows", (json_int_t)wfdir_count(d->wf));
    /* how late the reactor ran its last timers: the one figure that shows
     * work blocking the thread every socket and call waits on */
    reactor_lag_t lag;
    reactor_lag(d->r, &lag);
    if (o)
        json_object_set_new(o, "reactor",
                            json_pack("{s:f, s:f, s:f, s:I}", "lag_ms_p50", (double)lag.p50_us / 1e3,
                                      "lag_ms_p99", (double)lag.p99_us / 1e3, "lag_ms_max",
                                      (double)lag.max_us / 1e3, "timers",
                                      (json_int_t)lag.samples));
    /* a disk that fails shows here before anyone is refused */
    store_stats_t st;
    store_get_stats(d->store, &st);
    if (o)
        json_object_set_new(o, "store",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "transactions",
                                      (json_int_t)st.transactions, "queued", (json_int_t)st.queued,
                                      "held", (json_int_t)st.held, "held_tries",
                                      (json_int_t)st.held_tries, "read_reconnects",
                                      (json_int_t)st.read_reconnects));
    /* isolated plugins: crashes (plugin_crashed), timeouts and restarts of
     * their helpers, by plugin ({} when none is isolated) */
    if (o)
        json_object_set_new(o, "isolate", iso_stats_json(d->iso));
    /* MCP servers: state, tools, calls, failed calls and restarts, by name */
    if (o)
        json_object_set_new(o, "mcp", loomd_mcp_stats(d));
    /* spans exported, dropped (buffer full, collector down), failed posts */
    if (o)
        json_object_set_new(o, "tracing", loomd_trace_stats(d));
    /* by tenant: {T: {running, queued, weight, submitted, rejected}} */
    if (o)
        json_object_set_new(o, "tenants", jobs_tenants_json(&d->jobs, NULL));
    /* what priced calls cost since the start: {usd, by_workflow, by_provider, by_tenant} */
    if (o)
        json_object_set_new(o, "cost", loomd_cost_stats(d));
    /* provider batches: {batches, lines, uploads, polls, errors} (daemon/batch) */
    if (o)
        json_object_set_new(o, "batch", loomd_batch_stats(d));
    /* a shared store: {node, lease_ms, connected, notifications, polls, claims, ...} */
    if (o)
        json_object_set_new(o, "cluster", loomd_cluster_stats(d));
    /* ... and its shared provider limits: {connected, leases, returns, denied, calls} */
    json_t *cs = o ? json_object_get(o, "cluster") : NULL;
    if (json_is_object(cs))
        json_object_set_new(cs, "limits", loomd_limits_stats(d));
    return o;
}

static void op_stats(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    json_t *o = loomd_stats(d);
    const char *scope = loomd_access_scope(d, conn, req);
    if (o && scope)
        loomd_stats_scope(d, o, scope); /* last: after every member is in */
    server_reply(conn, id, o);
}

/* The text GET /metrics serves (loomd_metrics.c), for `loomctl metrics`:
 * the daemon's whole, like the endpoint, so only admin may ask when
 * `access:` is in force. */
static void op_metrics(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    sbuf b = SBUF_INIT;
    if (loomd_metrics_text(d, &b) < 0) {
        sbuf_free(&b);
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    size_t n;
    char *text = sbuf_steal(&b, &n);
    json_t *o = text ? json_pack("{s:s%}", "text", text, n) : NULL;
    free(text);
    if (!o) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    server_reply(conn, id, o);
}

static bool plugin_isolated(void *ud, const char *name)
{
    return iso_isolated(((loomd *)ud)->iso, name);
}

/* Read-only and a few kilobytes: built on the reactor thread from the
 * registry, which does not change after loading. */
static void op_plugins(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    json_t *doc = plugins_describe(d->plugins, plugin_isolated, d);
    if (!doc) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    server_reply(conn, id, doc);
}

static void op_events(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (conn_full(d, conn, id))
        return;
    const char *job = json_string_value(json_object_get(req, "job"));
    json_t *tokens = json_object_get(req, "tokens");
    if (tokens && !json_is_boolean(tokens)) {
        server_reply_error(conn, id, "invalid_request", "'tokens' must be true or false");
        return;
    }
    /* tokens make a job's calls stream: one job's, never every job's */
    if (json_is_true(tokens) && !job) {
        server_reply_error(conn, id, "invalid_request", "'tokens' needs a 'job'");
        return;
    }
    const char *scope = loomd_access_scope(d, conn, req);
    if (job && !loomd_job_visible(d, conn, id, job, scope))
        return;
    if (!job && scope) /* every job of one tenant */
        jobs_subscribe_tenant(&d->jobs, conn, id, scope);
    else
        jobs_subscribe(&d->jobs, conn, id, job);
    if (json_is_true(tokens))
        jobs_tokens_add(&d->jobs, conn, job);
}

static const struct {
    const char *name;
    op_fn fn;
} ops[] = {
    { "submit", op_submit }, { "get", op_get }, { "wait", op_wait }, { "cancel", op_cancel },
    { "list", op_list }, { "workflows", op_workflows }, { "validate", op_validate },
    { "stats", op_stats }, { "events", op_events }, { "retry", op_retry },
    { "signal", op_signal },
    { "plugins", op_plugins }, { "metrics", op_metrics },
};

void ops_handle(server_conn_t *conn, json_t *req, void *ud)
{
    loomd *d = ud;
    json_t *id = json_object_get(req, "id");
    const char *op = json_string_value(json_object_get(req, "op"));
    const char *names[sizeof ops / sizeof *ops + 1];
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        if (strcmp(op, ops[i].name) == 0) {
            const ops_field *fields = ops_fields(op);
            if (fields && !ops_check(conn, req, id, fields))
                return;
            if (!loomd_access_gate(d, conn, req, id, op))
                return;
            ops[i].fn(d, conn, req, id);
            return;
        }
        names[i] = ops[i].name;
    }
    names[sizeof ops / sizeof *ops] = NULL;
    const char *near = dsl_suggest(op, strlen(op), names, (size_t)-1);
    server_reply_error(conn, id, "unknown_op", "no op '%s'%s%s%s", op, near ? " (did you mean '" : "",
                       near ? near : "", near ? "'?)" : "");
}

void ops_conn_closed(server_conn_t *conn, void *ud)
{
    jobs_conn_closed(&((loomd *)ud)->jobs, conn);
}
