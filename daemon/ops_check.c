/* ops_check.c -- every op's fields, types and ranges in one table, checked
 * in one place (see ops_check.h). */
#include "daemon/ops_check.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dsl/suggest.h"

#define SECONDS(n, req) { n, OPS_SECONDS, req, 0, OPS_MAX_WAIT_S }

static const ops_field f_submit[] = {
    { "workflow", OPS_STRING, true, 0, 0 },
    { "input", OPS_ANY, false, 0, 0 },
    { "idempotency_key", OPS_STRING, false, 0, 0 },
    { "traceparent", OPS_STRING, false, 0, 0 },
    { "priority", OPS_INTEGER, false, OPS_PRIORITY_MIN, OPS_PRIORITY_MAX },
    { "wait", OPS_BOOL_SECONDS, false, 0, OPS_MAX_WAIT_S },
    { "tenant", OPS_STRING, false, 0, 0 },
    { "budget", OPS_ANY, false, 0, 0 }, /* {usd: N}: jobs_submit checks it */
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_job[] = {
    { "job", OPS_STRING, true, 0, 0 },
    { "tenant", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_wait[] = {
    { "job", OPS_STRING, true, 0, 0 },
    SECONDS("timeout", false),
    { "tenant", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_signal[] = {
    { "job", OPS_STRING, true, 0, 0 },
    { "signal", OPS_STRING, true, 0, 0 },
    { "data", OPS_ANY, false, 0, 0 },
    { "tenant", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_list[] = {
    { "state", OPS_STRING, false, 0, 0 },
    { "workflow", OPS_STRING, false, 0, 0 },
    { "after", OPS_STRING, false, 0, 0 },
    { "order", OPS_STRING, false, 0, 0 },
    { "limit", OPS_INTEGER, false, OPS_LIST_LIMIT_MIN, OPS_LIST_LIMIT_MAX },
    { "tenant", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_validate[] = {
    { "yaml", OPS_STRING, true, 0, 0 },
    { "file", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_events[] = {
    { "job", OPS_STRING, false, 0, 0 },
    { "tenant", OPS_STRING, false, 0, 0 },
    { "tokens", OPS_ANY, false, 0, 0 }, /* a boolean: op_events checks it */
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_none[] = {
    { NULL, OPS_ANY, false, 0, 0 },
};
static const ops_field f_stats[] = {
    { "tenant", OPS_STRING, false, 0, 0 },
    { NULL, OPS_ANY, false, 0, 0 },
};

static const struct {
    const char *op;
    const ops_field *fields;
} tables[] = {
    { "submit", f_submit }, { "get", f_job }, { "wait", f_wait }, { "cancel", f_job },
    { "list", f_list }, { "workflows", f_none }, { "validate", f_validate },
    { "stats", f_stats }, { "events", f_events }, { "retry", f_job }, { "signal", f_signal },
    { "plugins", f_none }, { "metrics", f_none },
};

const ops_field *ops_fields(const char *op)
{
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++)
        if (strcmp(tables[i].op, op) == 0)
            return tables[i].fields;
    return NULL;
}

static bool is_common(const char *key)
{
    return strcmp(key, "op") == 0 || strcmp(key, "id") == 0;
}

static const ops_field *find(const ops_field *fields, const char *key)
{
    for (const ops_field *f = fields; f->name; f++)
        if (strcmp(f->name, key) == 0)
            return f;
    return NULL;
}

static void reply_unknown(server_conn_t *conn, json_t *id, json_t *req, const char *key,
                          const ops_field *fields)
{
    const char *names[16];
    size_t n = 0;
    for (const ops_field *f = fields; f->name && n < sizeof names / sizeof *names - 1; f++)
        names[n++] = f->name;
    names[n] = NULL;
    const char *near = dsl_suggest(key, strlen(key), names, (size_t)-1);
    const char *op = json_string_value(json_object_get(req, "op"));
    if (near)
        server_reply_error(conn, id, "unknown_field", "'%s' takes no field '%s'; did you mean '%s'?",
                           op, key, near);
    else
        server_reply_error(conn, id, "unknown_field", "'%s' takes no field '%s'", op, key);
}

/* Prints a bound the way a person writes it: integral values without a
 * fraction. */
static void fmt_bound(char *buf, size_t len, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%g", v);
}

static bool range_error(server_conn_t *conn, json_t *id, const ops_field *f, const char *what)
{
    char lo[32], hi[32];
    fmt_bound(lo, sizeof lo, f->min);
    fmt_bound(hi, sizeof hi, f->max);
    server_reply_error(conn, id, "invalid_request", "'%s' must be %s from %s to %s", f->name, what,
                       lo, hi);
    return false;
}

static bool check_one(server_conn_t *conn, json_t *id, const ops_field *f, json_t *v)
{
    switch (f->type) {
    case OPS_STRING:
        if (json_is_string(v))
            return true;
        server_reply_error(conn, id, "invalid_request", "'%s' must be a string", f->name);
        return false;
    case OPS_INTEGER:
        /* jansson reads integers past int64 as reals: refused here too */
        if (!json_is_integer(v) || (double)json_integer_value(v) < f->min ||
            (double)json_integer_value(v) > f->max)
            return range_error(conn, id, f, "an integer");
        return true;
    case OPS_BOOL_SECONDS:
        if (json_is_boolean(v))
            return true;
        if (!json_is_number(v)) {
            char hi[32];
            fmt_bound(hi, sizeof hi, f->max);
            server_reply_error(conn, id, "invalid_request",
                               "'%s' must be true, false or seconds from 0 to %s", f->name, hi);
            return false;
        }
        /* fall through */
    case OPS_SECONDS: {
        double s = json_number_value(v);
        if (!json_is_number(v) || !isfinite(s) || s < f->min || s > f->max)
            return range_error(conn, id, f, "seconds");
        return true;
    }
    case OPS_ANY:
        return true;
    }
    return true;
}

bool ops_check(server_conn_t *conn, json_t *req, json_t *id, const ops_field *fields)
{
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        if (is_common(key))
            continue;
        const ops_field *f = find(fields, key);
        if (!f) {
            reply_unknown(conn, id, req, key, fields);
            return false;
        }
        if (!check_one(conn, id, f, v))
            return false;
    }
    for (const ops_field *f = fields; f->name; f++)
        if (f->required && !json_object_get(req, f->name)) {
            server_reply_error(conn, id, "invalid_request", "'%s' is required", f->name);
            return false;
        }
    return true;
}

typedef struct counter {
    size_t n, cap;
} counter;

static int count_cb(const char *buf, size_t size, void *data)
{
    (void)buf;
    counter *c = data;
    c->n += size;
    return c->n > c->cap ? -1 : 0;
}

size_t ops_json_size(const json_t *v, size_t cap)
{
    counter c = { 0, cap };
    if (json_dump_callback(v, count_cb, &c, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
        return cap + 1;
    return c.n + 1 > cap ? cap + 1 : c.n + 1; /* and its newline */
}
