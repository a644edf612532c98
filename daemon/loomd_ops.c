/* loomd_ops.c -- the socket protocol's ops (docs/protocol.md): each checks
 * its request's fields and answers, or hands over to loomd_jobs.c.
 *
 * A request with a field of the wrong type is refused as invalid_request
 * naming the field, before anything happens: a typo never half-submits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/loomd.h"
#include "dsl/dsl.h"
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

static void op_submit(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    json_t *wait = json_object_get(req, "wait");
    if (!field_ok(conn, req, id, "workflow", "string", true) ||
        !field_ok(conn, req, id, "idempotency_key", "string", false) ||
        !field_ok(conn, req, id, "priority", "integer", false))
        return;
    if (wait && !json_is_boolean(wait) && !(json_is_number(wait) && json_number_value(wait) >= 0)) {
        server_reply_error(conn, id, "invalid_request", "'wait' must be true, false or seconds");
        return;
    }
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
    jobs_submit(&d->jobs, conn, req);
}

static void op_get(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (!field_ok(conn, req, id, "job", "string", true))
        return;
    const char *job = json_string_value(json_object_get(req, "job"));
    json_t *o = NULL;
    char err[256];
    int rc = store_get_job(d->store, job, &o, err, sizeof err);
    if (rc < 0)
        server_reply_error(conn, id, rc == -ENOENT ? "not_found" : "store_error", "%s",
                           rc == -ENOENT ? "no such job" : err);
    else
        server_reply(conn, id, json_pack("{s:o}", "job", o));
}

static void op_wait(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (!field_ok(conn, req, id, "job", "string", true) ||
        !field_ok(conn, req, id, "timeout", "number", false))
        return;
    json_t *t = json_object_get(req, "timeout");
    jobs_wait(&d->jobs, conn, id, json_string_value(json_object_get(req, "job")),
              t ? json_number_value(t) : -1, false);
}

static void op_cancel(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (field_ok(conn, req, id, "job", "string", true))
        jobs_cancel(&d->jobs, conn, id, json_string_value(json_object_get(req, "job")));
}

static void op_list(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (!field_ok(conn, req, id, "state", "string", false) ||
        !field_ok(conn, req, id, "workflow", "string", false) ||
        !field_ok(conn, req, id, "after", "string", false) ||
        !field_ok(conn, req, id, "order", "string", false) ||
        !field_ok(conn, req, id, "limit", "integer", false))
        return;
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
        .limit = limit > 0 ? (size_t)limit : 0,
        .oldest_first = order && strcmp(order, "oldest") == 0,
    };
    json_t *jobs = NULL;
    char err[256];
    int rc = store_list_jobs(d->store, &q, &jobs, err, sizeof err);
    if (rc < 0) {
        server_reply_error(conn, id, rc == -EINVAL ? "invalid_request" : "store_error", "%s", err);
        return;
    }
    size_t n = json_array_size(jobs), want = q.limit ? (q.limit > 1000 ? 1000 : q.limit) : 100;
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
        json_array_append_new(a, o);
    }
    wfdir_list_free(v, n);
    server_reply(conn, id, json_pack("{s:o}", "workflows", a));
}

static void op_validate(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (!field_ok(conn, req, id, "yaml", "string", true) ||
        !field_ok(conn, req, id, "file", "string", false))
        return;
    json_t *y = json_object_get(req, "yaml");
    const char *file = json_string_value(json_object_get(req, "file"));
    if (!file)
        file = "<request>";
    dsl_diags diags;
    if (dsl_diags_init(&diags, file) < 0) {
        server_reply_error(conn, id, "internal", "out of memory");
        return;
    }
    dsl_options opt = { .registry = &d->reg };
    dsl_graph *g = dsl_compile(file, json_string_value(y), json_string_length(y), &opt, &diags);
    if (g && check_uses_served(d, g, &diags) > 0) {
        dsl_graph_unref(g);
        g = NULL;
    }
    json_t *lines = json_array();
    for (size_t i = 0; lines && i < diags.n; i++) {
        char *s = dsl_diag_format(&diags, i);
        if (s)
            json_array_append_new(lines, json_string(s));
        free(s);
    }
    server_reply(conn, id, json_pack("{s:b, s:s?, s:o}", "valid", g != NULL, "name",
                                     g ? g->name : NULL, "diagnostics", lines ? lines : json_array()));
    if (g)
        dsl_graph_unref(g);
    dsl_diags_free(&diags);
}

static void op_stats(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
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
    server_reply(conn, id, o);
}

static void op_events(loomd *d, server_conn_t *conn, json_t *req, json_t *id)
{
    if (field_ok(conn, req, id, "job", "string", false))
        jobs_subscribe(&d->jobs, conn, id, json_string_value(json_object_get(req, "job")));
}

static const struct {
    const char *name;
    op_fn fn;
} ops[] = {
    { "submit", op_submit }, { "get", op_get }, { "wait", op_wait }, { "cancel", op_cancel },
    { "list", op_list }, { "workflows", op_workflows }, { "validate", op_validate },
    { "stats", op_stats }, { "events", op_events },
};

void ops_handle(server_conn_t *conn, json_t *req, void *ud)
{
    loomd *d = ud;
    json_t *id = json_object_get(req, "id");
    const char *op = json_string_value(json_object_get(req, "op"));
    const char *names[sizeof ops / sizeof *ops + 1];
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        if (strcmp(op, ops[i].name) == 0) {
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
