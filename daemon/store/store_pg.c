/* store_pg.c -- the store's PostgreSQL backend: connections, migrations,
 * the store thread's side of a batch of writes, leases and fencing.
 *
 * The queue, the held writes and the hand-back are store.c's, as with
 * SQLite: only "apply these requests in one transaction" differs. A batch
 * runs in one BEGIN ... COMMIT on the store thread's connection. PostgreSQL
 * aborts a transaction at its first error, so a request refused for its
 * data rolls the batch back and each request is then run in a transaction
 * of its own (as store_db.c does when SQLite rolls back), so only that one
 * fails. A lost connection fails the batch with -EIO, a transient status:
 * held writes wait with store.c's backoff and the connection is reopened
 * before the next try.
 *
 * Fencing (store.h): every write about a queued or running job checks that
 * the job's row still names this node and the epoch this store got the job
 * with, and locks the row; the check and the write are in one transaction,
 * so a claim by another daemon is either before (the write is refused,
 * -ESTALE) or after (it waits for our commit). The frequent writes (start,
 * checkpoint, end) carry the check in their own WHERE, one statement; only
 * when it lets nothing through does a SELECT ... FOR UPDATE say why. The notifications of a transaction are sent in it, just before
 * its COMMIT, so they go out exactly when it commits. */
#include "daemon/store/store_pg.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* daemon/cluster/cluster_limits_schema.c: the shared limits' tables, one
 * step of these migrations. Declared here rather than by including
 * daemon/cluster/cluster_limits.h: the store may not depend on the cluster
 * module (tests/unit/layering.sh); only this string is shared. */
extern const char CLUSTER_LIMITS_SCHEMA[];

#define STORE_PG_DEFAULT_LEASE_MS 10000
/* store.h's default busy_timeout_ms */
#define STORE_PG_DEFAULT_LOCK_TIMEOUT_MS 5000
/* pg_advisory_lock key of the migrations: "LOOMSCHM" */
#define STORE_PG_MIGRATE_KEY "5499450467353560397"
/* How often a transaction that lost a serialization race or a deadlock is
 * run again before its requests fail with -EBUSY. */
#define STORE_PG_TX_TRIES 5
/* A notification's payload is shorter than this (PostgreSQL's limit). */
#define STORE_PG_NOTIFY_MAX 7999

/* ---- locations */

bool store_location_is_pg(const char *location)
{
    return location && (strncmp(location, "postgresql://", 13) == 0 ||
                        strncmp(location, "postgres://", 11) == 0);
}

/* Appends N bytes of S to OUT (cut at OUTLEN - 1). */
static void loc_put(char *out, size_t outlen, size_t *at, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *at + 1 < outlen; i++)
        out[(*at)++] = s[i];
}

void store_location_redact(const char *location, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    out[0] = '\0';
    if (!location)
        return;
    size_t at = 0;
    const char *p = location;
    const char *scheme = strstr(p, "://");
    if (scheme) {
        /* user:password@ in the authority (up to the first / ? or #) */
        const char *auth = scheme + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *atsign = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                atsign = auth + i;
        loc_put(out, outlen, &at, p, (size_t)(auth - p));
        p = auth;
        if (atsign) {
            const char *colon = memchr(auth, ':', (size_t)(atsign - auth));
            if (colon) {
                loc_put(out, outlen, &at, auth, (size_t)(colon + 1 - auth));
                loc_put(out, outlen, &at, "***", 3);
                p = atsign;
            }
        }
    }
    /* password=VALUE: a URI's query parameter or a keyword of a conninfo */
    while (*p) {
        const char *k = strstr(p, "password=");
        if (!k) {
            loc_put(out, outlen, &at, p, strlen(p));
            break;
        }
        bool word = k == location || !(isalnum((unsigned char)k[-1]) || k[-1] == '_');
        const char *v = k + 9;
        loc_put(out, outlen, &at, p, (size_t)(v - p));
        if (!word) {
            p = v;
            continue;
        }
        if (*v == '\'') {
            for (v++; *v && *v != '\''; v++)
                if (*v == '\\' && v[1])
                    v++;
            if (*v)
                v++;
        } else {
            v += strcspn(v, "& \t\n");
        }
        loc_put(out, outlen, &at, "***", 3);
        p = v;
    }
    out[at] = '\0';
}

bool store_shared(const store_t *s)
{
    return s && s->pg;
}

const char *store_node(const store_t *s)
{
    return s && s->pg ? s->pg->node : "";
}

int64_t store_lease_ms(const store_t *s)
{
    return s && s->pg ? s->pg->lease_ms : 0;
}

/* ---- results and errors */

static int64_t pg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

PGresult *store_pg_exec(store_pg_conn_t *c, const char *sql, bool prepare, int n,
                        const char *const *values, const int *lengths, int binary,
                        int result_format)
{
    int formats[32] = {0};
    if (binary >= 0 && binary < 32)
        formats[binary] = 1;
    const int *fmt = binary >= 0 ? formats : NULL;
    char name[16];
    int i = 0;
    while (prepare && i < c->nprepared && c->prepared[i] != sql)
        i++;
    if (prepare && i == c->nprepared && i < STORE_PG_PREPARED) {
        /* parsed and planned once per connection; a failure to prepare
         * (the connection went, an aborted transaction) is left to the
         * plain run below, which reports it */
        snprintf(name, sizeof name, "l%d", i);
        PGresult *p = PQprepare(c->conn, name, sql, n, NULL);
        if (PQresultStatus(p) == PGRES_COMMAND_OK)
            c->prepared[c->nprepared++] = sql;
        PQclear(p);
    }
    if (prepare && i < c->nprepared) {
        snprintf(name, sizeof name, "l%d", i);
        return PQexecPrepared(c->conn, name, n, values, lengths, fmt, result_format);
    }
    return PQexecParams(c->conn, sql, n, NULL, values, lengths, fmt, result_format);
}

bool store_pg_ok(const PGresult *r)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Whether the failure of R (or C's state) means the connection is gone. */
static bool pg_conn_lost(PGconn *c, const PGresult *r)
{
    if (!c || PQstatus(c) != CONNECTION_OK)
        return true;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return code && (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0);
}

int store_pg_errno(PGconn *c, const PGresult *r)
{
    if (pg_conn_lost(c, r))
        return -EIO;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!r)
        return -ENOMEM;
    if (!code)
        return -EIO;
    if (strcmp(code, "23505") == 0)
        return -EEXIST;
    if (strcmp(code, "23503") == 0)
        return -ENOENT;
    if (strncmp(code, "23", 2) == 0 || strncmp(code, "22", 2) == 0)
        return -EINVAL;
    if (strncmp(code, "54", 2) == 0)
        return -E2BIG;
    if (strcmp(code, "53100") == 0)
        return -ENOSPC;
    if (strcmp(code, "53200") == 0)
        return -ENOMEM;
    if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0)
        return -EAGAIN;
    if (strcmp(code, "55P03") == 0 || strcmp(code, "57014") == 0)
        return -EBUSY; /* lock_not_available, statement timeout */
    if (strncmp(code, "42", 2) == 0)
        return -EPROTO; /* the code's own SQL is wrong: retrying cannot help */
    if (strncmp(code, "25", 2) == 0 || strncmp(code, "53", 2) == 0 ||
        strncmp(code, "58", 2) == 0 || strncmp(code, "XX", 2) == 0)
        return -EIO;
    return -EIO;
}

const char *store_pg_message(PGconn *c, const PGresult *r, char *buf, size_t len)
{
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m || !*m)
        m = c ? PQerrorMessage(c) : "no connection";
    if (!m || !*m)
        m = r ? "unknown failure" : "out of memory";
    /* one line: libpq's messages end in a newline and may hold several,
     * indented with tabs; every run of white space becomes one space */
    size_t at = 0;
    bool space = false;
    for (const char *p = m; *p && at + 1 < len; p++) {
        if (isspace((unsigned char)*p)) {
            space = at > 0;
            continue;
        }
        if (space && at + 2 < len)
            buf[at++] = ' ';
        space = false;
        buf[at++] = *p;
    }
    if (len)
        buf[at < len ? at : len - 1] = '\0';
    return buf;
}

/* ---- connections */

/* Reads the first line of PATH into a new string in *OUT. */
static int pg_read_password(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        store_set_error(err, errlen, "cannot read the password file %s: %s", path, strerror(e));
        return -e;
    }
    char line[1024];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    *out = strdup(line);
    explicit_bzero(line, sizeof line);
    if (!*out) {
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Replaces every occurrence of SECRET in the string BUF (LEN bytes) by
 * "***". */
static void pg_cut_secret(char *buf, size_t len, const char *secret)
{
    size_t n = strlen(secret);
    char *at, *from = buf;
    if (n == 0)
        return;
    /* the search goes on after each "***" (a secret may hold stars) */
    while ((at = strstr(from, secret))) {
        size_t tail = strlen(at + n);
        if (n >= 3) {
            memcpy(at, "***", 3);
            memmove(at + 3, at + n, tail + 1);
            from = at + 3;
        } else if (at + 3 + tail < buf + len) {
            memmove(at + 3, at + n, tail + 1);
            memcpy(at, "***", 3);
            from = at + 3;
        } else {
            memmove(at, at + n, tail + 1); /* no room for the stars */
            from = at;
        }
    }
}

/* Percent-decodes S into OUT (OUTLEN bytes), as far as it is valid. */
static void pg_pct_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t at = 0;
    for (size_t i = 0; i < n && at + 1 < outlen; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && sscanf(s + i + 1, "%2x", &v) == 1) {
            out[at++] = (char)v;
            i += 2;
        } else {
            out[at++] = s[i];
        }
    }
    out[at] = '\0';
}

/* Removes from libpq's message MSG (a string in a buffer of LEN bytes)
 * whatever could show a password: libpq quotes tokens of a location it
 * cannot parse ('invalid percent-encoded token: "..."'), or the whole
 * location. Every password the location carries (user:password@,
 * password=..., raw and percent-decoded) and the file's are cut, and each
 * quoted span is redacted as a location. */
static void pg_scrub(const struct store_pg *pg, char *msg, size_t len)
{
    char one[512];
    const char *loc = pg->uri;
    const char *scheme = strstr(loc, "://");
    if (pg->password)
        pg_cut_secret(msg, len, pg->password);
    if (scheme) {
        const char *auth = scheme + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *atsign = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                atsign = auth + i;
        const char *colon = atsign ? memchr(auth, ':', (size_t)(atsign - auth)) : NULL;
        if (colon) {
            size_t n = (size_t)(atsign - colon - 1);
            snprintf(one, sizeof one, "%.*s", (int)n, colon + 1);
            pg_cut_secret(msg, len, one);
            pg_pct_decode(colon + 1, n, one, sizeof one);
            pg_cut_secret(msg, len, one);
        }
    }
    for (const char *k = strstr(loc, "password="); k; k = strstr(k + 9, "password=")) {
        const char *v = k + 9;
        size_t n = v[0] == '\'' ? strcspn(v + 1, "'") : strcspn(v, "& \t\n");
        if (v[0] == '\'')
            v++;
        snprintf(one, sizeof one, "%.*s", (int)n, v);
        pg_cut_secret(msg, len, one);
        pg_pct_decode(v, n, one, sizeof one);
        pg_cut_secret(msg, len, one);
    }
    /* quoted spans: a location (or a piece of one) is shown redacted */
    char out[600];
    size_t at = 0;
    for (const char *p = msg; *p && at + 1 < sizeof out;) {
        const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!end) {
            out[at++] = *p++;
            continue;
        }
        char span[512], red[512];
        snprintf(span, sizeof span, "%.*s", (int)(end - p - 1), p + 1);
        store_location_redact(span, red, sizeof red);
        at += (size_t)snprintf(out + at, sizeof out - at, "\"%s\"", red);
        if (at >= sizeof out)
            at = sizeof out - 1;
        p = end + 1;
    }
    out[at] = '\0';
    size_t n = at < len ? at : len - 1;
    memcpy(msg, out, n);
    msg[n] = '\0';
}

static void pg_no_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* (Re)opens C. 0 or -EIO with the reason in ERR. */
static int pg_connect(struct store_pg *pg, store_pg_conn_t *c, char *err, size_t errlen)
{
    /* application_name "loomd NODE": an operator sees which daemon a
     * backend serves (pg_stat_activity) */
    char app[64];
    snprintf(app, sizeof app, "loomd %s", pg->node);
    /* a server that vanishes without closing the connection (a network
     * cut) is noticed within seconds, not at TCP's retransmission timeout:
     * a read must not hold the reactor thread for minutes */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "password", NULL};
    const char *vals[] = {pg->uri, "2", app, "1", "5", "2", "3", "10000", pg->password, NULL};
    if (!pg->password)
        keys[8] = NULL;
    c->last_try_ms = pg_mono_ms();
    c->nprepared = 0;
    if (c->conn)
        PQfinish(c->conn);
    /* expand_dbname: the URI is parsed; the keywords after it win */
    c->conn = PQconnectdbParams(keys, vals, 1);
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK) {
        c->broken = false;
        if (c == &pg->w)
            atomic_fetch_add(&pg->writer_connects, 1);
        /* the store prints nothing (store.h): libpq would print the
         * server's notices and warnings on stderr */
        PQsetNoticeProcessor(c->conn, pg_no_notice, NULL);
        /* lock_timeout: a write behind a lock another program holds (a
         * psql session left open in a transaction) fails -EBUSY, a
         * transient status, and is held and retried like a write on a full
         * disk, instead of stopping the store thread for as long as the
         * lock is held */
        char set[160];
        snprintf(set, sizeof set, "SET synchronous_commit = on; SET client_min_messages = warning;"
                 " SET lock_timeout = %d", pg->lock_timeout_ms);
        PGresult *r = PQexec(c->conn, set);
        PQclear(r);
        return 0;
    }
    char why[300];
    store_pg_message(c->conn, NULL, why, sizeof why);
    pg_scrub(pg, why, sizeof why);
    store_set_error(err, errlen, "cannot connect to the state database %s: %s", pg->redacted,
                    why);
    c->broken = true;
    return c->conn ? -EIO : -ENOMEM;
}

PGconn *store_pg_reader(store_t *s, char *err, size_t errlen, int *status)
{
    struct store_pg *pg = s->pg;
    if (pg->r.conn && !pg->r.broken && PQstatus(pg->r.conn) == CONNECTION_OK)
        return pg->r.conn;
    pg->r.broken = true;
    uint64_t writer = atomic_load(&pg->writer_connects);
    bool back = writer != pg->read_seen_writer;
    if (!back && pg_mono_ms() - pg->r.last_try_ms < pg->read_retry_ms) {
        store_set_error(err, errlen, "the state database %s is unreachable", pg->redacted);
        *status = -EIO;
        return NULL;
    }
    pg->read_seen_writer = writer;
    atomic_fetch_add(&pg->read_reconnects, 1);
    if ((*status = pg_connect(pg, &pg->r, err, errlen)) < 0) {
        int64_t next = pg->read_retry_ms * 2;
        pg->read_retry_ms = next < 1000 ? 1000 : next > 30000 ? 30000 : next;
        return NULL;
    }
    pg->read_retry_ms = 1000; /* a loss found later: tried at once, then a second */
    return pg->r.conn;
}

uint64_t store_pg_read_reconnects(store_t *s)
{
    return s->pg ? atomic_load(&s->pg->read_reconnects) : 0;
}

int store_pg_read_fail(store_t *s, PGresult *r, const char *what, char *err, size_t errlen)
{
    char why[300];
    PGconn *c = s->pg->r.conn;
    int e = store_pg_errno(c, r);
    store_set_error(err, errlen, "%s: %s", what, store_pg_message(c, r, why, sizeof why));
    if (pg_conn_lost(c, r))
        s->pg->r.broken = true;
    return e == -EAGAIN ? -EBUSY : e;
}

/* ---- the epoch map */

void store_pg_epoch_set(store_t *s, const char *job_id, int64_t epoch)
{
    pthread_mutex_lock(&s->lock);
    /* out of memory: the job is then fenced by node alone */
    json_object_set_new(s->pg->epochs, job_id, json_integer(epoch));
    pthread_mutex_unlock(&s->lock);
}

void store_pg_epoch_drop(store_t *s, const char *job_id)
{
    pthread_mutex_lock(&s->lock);
    json_object_del(s->pg->epochs, job_id);
    pthread_mutex_unlock(&s->lock);
}

int64_t store_pg_epoch_get(store_t *s, const char *job_id)
{
    pthread_mutex_lock(&s->lock);
    int64_t e = json_integer_value(json_object_get(s->pg->epochs, job_id));
    pthread_mutex_unlock(&s->lock);
    return e;
}

/* ---- the schema and its migrations */

/* Step 1: the tables of SQLite's schema v7 with PostgreSQL's types, the
 * lease columns of jobs, and the shared limits' tables. Identifiers and
 * keys compare as bytes (COLLATE "C"), as SQLite's do: ids sort in the
 * order they were made and the list cursor "~" sorts after every id. */
static const char pg_schema_v1[] =
    "CREATE TABLE jobs ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " workflow text NOT NULL,"
    " version text,"
    " input text NOT NULL,"
    " state text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',"
    "  'cancelled', 'waiting')),"
    " priority bigint NOT NULL DEFAULT 0,"
    " idempotency_key text UNIQUE,"
    " peer_uid bigint, peer_gid bigint, peer_pid bigint,"
    " created_ms bigint NOT NULL,"
    " started_ms bigint,"
    " finished_ms bigint,"
    " output text, error text, usage text,"
    " attempt bigint NOT NULL DEFAULT 1,"
    " crashes bigint NOT NULL DEFAULT 0,"
    " crash text,"
    " tenant text NOT NULL DEFAULT 'default',"
    " budget text, traceparent text, cost double precision,"
    " waits text,"
    " node text,"
    " epoch bigint NOT NULL DEFAULT 0,"
    " lease_until_ms bigint,"
    " CHECK ((state IN ('queued', 'running', 'waiting')) = (finished_ms IS NULL))"
    ");"
    "CREATE INDEX jobs_by_state ON jobs (state, id);"
    "CREATE INDEX jobs_by_workflow ON jobs (workflow, id);"
    "CREATE INDEX jobs_by_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;"
    "CREATE INDEX jobs_by_version ON jobs (version);"
    "CREATE INDEX jobs_by_tenant ON jobs (tenant, id);"
    "CREATE INDEX jobs_by_lease ON jobs (state, lease_until_ms);"
    "CREATE INDEX jobs_by_node ON jobs (node, state) WHERE node IS NOT NULL;"
    "CREATE TABLE steps ("
    " job_id text COLLATE \"C\" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    " key text COLLATE \"C\" NOT NULL,"
    " output text, error text,"
    " finished_ms bigint NOT NULL,"
    " PRIMARY KEY (job_id, key)"
    ");"
    "CREATE TABLE sources ("
    " hash text PRIMARY KEY,"
    " workflow text NOT NULL,"
    " source bytea NOT NULL,"
    " created_ms bigint NOT NULL"
    ");"
    "CREATE TABLE spend ("
    " tenant text NOT NULL,"
    " period text NOT NULL,"
    " usd double precision NOT NULL CHECK (usd >= 0),"
    " PRIMARY KEY (tenant, period)"
    ");"
    "CREATE TABLE batches ("
    " name text COLLATE \"C\" PRIMARY KEY,"
    " provider text NOT NULL,"
    " kind text NOT NULL CHECK (kind IN ('chat', 'embed')),"
    " model text NOT NULL,"
    " deadline_ms bigint NOT NULL,"
    " state text NOT NULL CHECK (state IN ('written', 'uploaded', 'created', 'done')),"
    " file_id text, remote_id text, remote_state text,"
    " created_ms bigint NOT NULL,"
    " CHECK (state = 'written' OR state = 'done' OR file_id IS NOT NULL"
    "        OR remote_id IS NOT NULL)"
    ");"
    "CREATE INDEX batches_by_state ON batches (state, name);"
    "CREATE TABLE batch_lines ("
    " batch text COLLATE \"C\" NOT NULL REFERENCES batches (name) ON DELETE CASCADE,"
    " seq bigint NOT NULL,"
    " custom_id text COLLATE \"C\" NOT NULL,"
    " job_id text COLLATE \"C\" NOT NULL,"
    " key text COLLATE \"C\" NOT NULL,"
    " node text,"
    " attempt bigint NOT NULL,"
    " line text,"
    " done boolean NOT NULL DEFAULT false,"
    " result text, code bigint, message text,"
    " PRIMARY KEY (batch, custom_id)"
    ");"
    "CREATE UNIQUE INDEX batch_lines_by_seq ON batch_lines (batch, seq);"
    "CREATE INDEX batch_lines_by_job ON batch_lines (job_id, key);";

/* Runs SQL (no parameters, any number of statements) on C; 0 or a negative
 * errno with "WHAT: why" in ERR. */
static int pg_run(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (!store_pg_ok(r)) {
        char why[300];
        rc = store_pg_errno(c, r);
        store_set_error(err, errlen, "%s: %s", what, store_pg_message(c, r, why, sizeof why));
    }
    PQclear(r);
    return rc;
}

/* Brings the schema up to STORE_PG_SCHEMA_VERSION under the advisory lock,
 * one step per transaction, or refuses a newer one (-ENOTSUP). */
static int pg_migrate(struct store_pg *pg, PGconn *c, char *err, size_t errlen)
{
    char what[200];
    snprintf(what, sizeof what, "cannot lock the schema of the state database %s",
             pg->redacted);
    /* a migration waits for what it must, however long: the other daemons'
     * migrations (the advisory lock) and their transactions (DDL) */
    int rc = pg_run(c, "SET lock_timeout = 0", what, err, errlen);
    if (rc == 0)
        rc = pg_run(c, "SELECT pg_advisory_lock(" STORE_PG_MIGRATE_KEY ")", what, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(what, sizeof what, "cannot read the schema version of the state database %s",
             pg->redacted);
    rc = pg_run(c, "CREATE TABLE IF NOT EXISTS loom_schema (version int NOT NULL)", what, err,
                errlen);
    PGresult *r = NULL;
    long version = 0;
    if (rc == 0) {
        r = PQexec(c, "SELECT coalesce(max(version), 0) FROM loom_schema");
        if (!store_pg_ok(r) || PQntuples(r) != 1) {
            char why[300];
            rc = store_pg_errno(c, r);
            store_set_error(err, errlen, "%s: %s", what, store_pg_message(c, r, why, sizeof why));
        } else {
            version = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        }
        PQclear(r);
    }
    if (rc == 0 && version > STORE_PG_SCHEMA_VERSION) {
        store_set_error(err, errlen, "state database %s has schema version %ld, newer than "
                        "the %d this loomd understands: it was written by a newer loomd; "
                        "upgrade loomd or use another database",
                        pg->redacted, version, STORE_PG_SCHEMA_VERSION);
        rc = -ENOTSUP;
    }
    if (rc == 0 && version == 0) {
        /* a database with tables of the same names that is not Loom's (no
         * loom_schema row) is refused rather than half-used */
        r = PQexec(c, "SELECT to_regclass('jobs') IS NOT NULL");
        if (store_pg_ok(r) && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't') {
            store_set_error(err, errlen, "%s is not a Loom state database (it has a table "
                            "\"jobs\" of another program); use another database",
                            pg->redacted);
            rc = -EINVAL;
        }
        PQclear(r);
    }
    for (long v = version + 1; rc == 0 && v <= STORE_PG_SCHEMA_VERSION; v++) {
        snprintf(what, sizeof what, "cannot migrate (to v%ld) the schema of the state "
                 "database %s", v, pg->redacted);
        if ((rc = pg_run(c, "BEGIN", what, err, errlen)) < 0)
            break;
        if (v == 1) {
            rc = pg_run(c, pg_schema_v1, what, err, errlen);
            if (rc == 0)
                rc = pg_run(c, CLUSTER_LIMITS_SCHEMA, what, err, errlen);
        }
        char mark[80];
        snprintf(mark, sizeof mark, "INSERT INTO loom_schema (version) VALUES (%ld)", v);
        if (rc == 0)
            rc = pg_run(c, mark, what, err, errlen);
        if (rc == 0)
            rc = pg_run(c, "COMMIT", what, err, errlen);
        if (rc < 0)
            PQclear(PQexec(c, "ROLLBACK"));
    }
    /* a failed unlock is harmless: closing the connection releases it */
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(" STORE_PG_MIGRATE_KEY ")"));
    char set[64];
    snprintf(set, sizeof set, "SET lock_timeout = %d", pg->lock_timeout_ms);
    PQclear(PQexec(c, set));
    return rc == -EAGAIN ? -EBUSY : rc;
}

int store_pg_open(store_t *s, const char *uri, const store_options_t *o, char *err,
                  size_t errlen)
{
    struct store_pg *pg = calloc(1, sizeof *pg);
    char host[256];
    int rc = -ENOMEM;
    if (!pg) {
        store_set_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->pg = pg;
    atomic_init(&pg->heartbeats, 0);
    atomic_init(&pg->writer_connects, 0);
    atomic_init(&pg->read_reconnects, 0);
    size_t rlen = strlen(uri) + 8;
    if (!(pg->uri = strdup(uri)) || !(pg->redacted = malloc(rlen)) ||
        !(pg->epochs = json_object()))
        goto oom;
    store_location_redact(uri, pg->redacted, rlen);
    if (o && o->node && *o->node) {
        pg->node = strdup(o->node);
    } else {
        if (gethostname(host, sizeof host) != 0 || !*host)
            snprintf(host, sizeof host, "loomd");
        host[sizeof host - 1] = '\0';
        pg->node = strdup(host);
    }
    if (!pg->node)
        goto oom;
    if (strchr(pg->node, ' ')) {
        /* the node is a word of the notifications' payloads */
        store_set_error(err, errlen, "node name \"%s\" has a space", pg->node);
        return -EINVAL;
    }
    pg->lease_ms = o && o->lease_ms > 0 ? o->lease_ms : STORE_PG_DEFAULT_LEASE_MS;
    pg->lock_timeout_ms = o && o->busy_timeout_ms > 0 ? o->busy_timeout_ms
                                                      : STORE_PG_DEFAULT_LOCK_TIMEOUT_MS;
    if (o && o->password_file &&
        (rc = pg_read_password(o->password_file, &pg->password, err, errlen)) < 0)
        return rc;
    if ((rc = pg_connect(pg, &pg->w, err, errlen)) < 0)
        return rc;
    if ((rc = pg_migrate(pg, pg->w.conn, err, errlen)) < 0)
        return rc;
    if ((rc = pg_connect(pg, &pg->r, err, errlen)) < 0)
        return rc;
    pg->next_heartbeat_ms = pg_mono_ms() + pg->lease_ms / 3;
    return 0;
oom:
    store_set_error(err, errlen, "out of memory");
    return -ENOMEM;
}

void store_pg_close(store_t *s)
{
    struct store_pg *pg = s->pg;
    if (!pg)
        return;
    if (pg->w.conn)
        PQfinish(pg->w.conn);
    if (pg->r.conn)
        PQfinish(pg->r.conn);
    if (pg->password) {
        explicit_bzero(pg->password, strlen(pg->password));
        free(pg->password);
    }
    json_decref(pg->epochs);
    free(pg->uri);
    free(pg->redacted);
    free(pg->node);
    free(pg);
    s->pg = NULL;
}

/* ---- the write requests (store thread) */


/* Runs SQL on the writer; on failure notes why in Q and returns NULL with
 * the errno in *RC (the result is cleared). */
static PGresult *pg_w(store_t *s, store_req_t *q, const char *sql, int n,
                      const char *const *values, int *rc)
{
    PGconn *c = s->pg->w.conn;
    PGresult *r = store_pg_exec(&s->pg->w, sql, true, n, values, NULL, -1, 0);
    if (store_pg_ok(r)) {
        *rc = 0;
        return r;
    }
    char why[300];
    *rc = store_pg_errno(c, r);
    if (pg_conn_lost(c, r))
        s->pg->w.broken = true;
    store_pg_message(c, r, why, sizeof why);
    if (pg_conn_lost(c, r))
        store_set_error(q->error_text, sizeof q->error_text, "%s %s: lost the state database: "
                        "%s", store_op_name(q->op), q->op == STORE_OP_SPEND ? q->tenant : q->job_id,
                        why);
    else
        store_set_error(q->error_text, sizeof q->error_text, "%s %s: %s", store_op_name(q->op),
                        q->op == STORE_OP_PURGE || q->op == STORE_OP_CLAIM ? ""
                        : q->op == STORE_OP_SPEND ? q->tenant : q->job_id, why);
    PQclear(r);
    return NULL;
}

/* Runs SQL that returns no rows wanted. */
static int pg_wdo(store_t *s, store_req_t *q, const char *sql, int n, const char *const *values)
{
    int rc;
    PGresult *r = pg_w(s, q, sql, n, values, &rc);
    PQclear(r);
    return rc;
}

typedef struct pg_num {
    char b[24];
} pg_num;

static const char *pg_i64(pg_num *n, int64_t v)
{
    snprintf(n->b, sizeof n->b, "%lld", (long long)v);
    return n->b;
}

static int64_t pg_col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool pg_unfinished(store_state_t st)
{
    return st == STORE_QUEUED || st == STORE_RUNNING;
}

/* The row of Q's job, locked: its state, owner, epoch and finished_ms. 1
 * when there is no such job (Q's status says so), 0 when there is, or a
 * negative errno. */
static int pg_lock_job(store_t *s, store_req_t *q, store_state_t *state, char *node,
                       size_t nodelen, int64_t *epoch, int64_t *finished_ms)
{
    int rc;
    const char *v[] = {q->job_id};
    PGresult *r = pg_w(s, q, "SELECT state, node, epoch, finished_ms FROM jobs WHERE id = $1"
                       " FOR UPDATE", 1, v, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        q->status = -ENOENT;
        store_set_error(q->error_text, sizeof q->error_text, "no job %s", q->job_id);
        return 1;
    }
    if (store_state_parse(PQgetvalue(r, 0, 0), state) < 0)
        *state = STORE_FAILED;
    snprintf(node, nodelen, "%s", PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1));
    *epoch = pg_col_i64(r, 0, 2);
    *finished_ms = pg_col_i64(r, 0, 3);
    PQclear(r);
    return 0;
}

/* Whether the row (STATE, NODE, EPOCH, FINISHED_MS) shows that Q, retried
 * after its COMMIT's answer was lost with the connection, did commit then:
 * its retry then succeeds rather than being refused by its own effect. */
static bool pg_own_effect(store_t *s, store_req_t *q, store_state_t state, const char *node,
                          int64_t epoch, int64_t finished_ms)
{
    if (!q->lost_commit)
        return false;
    if (q->op == STORE_OP_STEP)
        return true; /* the job ended after it, in the same lost COMMIT */
    if (q->op == STORE_OP_FINISH)
        return state == q->state && finished_ms == q->time_ms;
    if (q->op == STORE_OP_WAIT && q->state == STORE_WAITING)
        return state == STORE_WAITING;
    if (q->op == STORE_OP_WAIT && pg_unfinished(state) && strcmp(node, s->pg->node) == 0) {
        q->epoch = epoch; /* woken by this node */
        return true;
    }
    return false;
}

/* Whether this store may write to a queued or running job the row of
 * which names NODE and EPOCH; if not, Q is refused with -ESTALE. An epoch
 * this store does not hold (it never got the job through this store) is
 * fenced by the node alone. */
static bool pg_fence(store_t *s, store_req_t *q, const char *node, int64_t epoch)
{
    int64_t held = store_pg_epoch_get(s, q->job_id);
    if (*node && strcmp(node, s->pg->node) == 0 && (held == 0 || held == epoch))
        return true;
    q->status = -ESTALE;
    store_set_error(q->error_text, sizeof q->error_text, "lease lost: job %s is run by %s now",
                    q->job_id, *node ? node : "no daemon");
    return false;
}

/* Locks Q's job and checks it may be written: 1 when Q is refused (its
 * status set), 0 when the write may go on, or a negative errno. ACTIVE:
 * the states the write is allowed in, a bit per store_state_t. */
static int pg_check_job(store_t *s, store_req_t *q, unsigned active, bool fenced,
                        store_state_t *state_out)
{
    store_state_t state = STORE_FAILED;
    char node[256] = "";
    int64_t epoch = 0, finished_ms = 0;
    int rc = pg_lock_job(s, q, &state, node, sizeof node, &epoch, &finished_ms);
    if (rc != 0)
        return rc;
    if (state_out)
        *state_out = state;
    if (!(active & (1u << state))) {
        if (pg_own_effect(s, q, state, node, epoch, finished_ms))
            return 1; /* status 0: done already */
        if (q->op == STORE_OP_WAIT && q->state == STORE_QUEUED) {
            q->status = -EALREADY;
            store_set_error(q->error_text, sizeof q->error_text, "job %s is %s, not waiting",
                            q->job_id, store_state_name(state));
        } else if (q->op == STORE_OP_RETRY) {
            q->status = -EPERM;
            store_set_error(q->error_text, sizeof q->error_text, "job %s is %s, not failed",
                            q->job_id, store_state_name(state));
        } else {
            q->status = -EALREADY;
            store_set_error(q->error_text, sizeof q->error_text, "job %s is already %s",
                            q->job_id, store_state_name(state));
        }
        return 1;
    }
    if (fenced && pg_unfinished(state) && !pg_fence(s, q, node, epoch))
        return 1;
    return 0;
}

#define PG_BIT(st) (1u << (st))
#define PG_LIVE (PG_BIT(STORE_QUEUED) | PG_BIT(STORE_RUNNING))

/* The check of a write in its own WHERE, beside "id = $1": a queued or
 * running job must still name this node (NODE) and the epoch held (HELD, 0
 * when this store holds none), as pg_fence checks it; a waiting one may be
 * written when WAITING is true. A CASE, because no index can serve it: the
 * planner then always finds the row by its key. Written as plain
 * conditions, a table that grew since its last ANALYZE had the planner
 * scan jobs_by_node (every job of this node) for each write instead, and
 * the store ran at half its speed. */
#define PG_GUARD(waiting, node, held)                                          \
    "CASE WHEN state IN ('queued', 'running') THEN node = " node " AND ("    \
    held "::bigint = 0 OR epoch = " held "::bigint) WHEN state = 'waiting'"   \
    " THEN " waiting " ELSE false END"

/* The fast path of a fenced write: SQL checks the job's state and fence in
 * its WHERE and locks the row as it writes, so a write allowed (nearly
 * always) costs one statement rather than pg_check_job's SELECT ... FOR
 * UPDATE and the write. 1 when SQL wrote a row, 0 when its WHERE let
 * nothing through (the caller then asks pg_check_job why: the job may be
 * gone, ended, taken over, or ended by this very request before its
 * COMMIT's answer was lost), or a negative errno. */
static int pg_guarded(store_t *s, store_req_t *q, const char *sql, int n,
                      const char *const *values)
{
    int rc;
    PGresult *r = pg_w(s, q, sql, n, values, &rc);
    if (!r)
        return rc;
    const char *count = PQcmdTuples(r);
    bool wrote = *count && strcmp(count, "0") != 0;
    PQclear(r);
    return wrote ? 1 : 0;
}

static int pg_insert(store_t *s, store_req_t *q)
{
    struct store_pg *pg = s->pg;
    int rc;
    PGresult *r;
    if (q->idempotency_key) {
        const char *v[] = {q->idempotency_key};
        if (!(r = pg_w(s, q, "SELECT id FROM jobs WHERE idempotency_key = $1", 1, v, &rc)))
            return rc;
        if (PQntuples(r) > 0) {
            snprintf(q->result_id, sizeof q->result_id, "%s", PQgetvalue(r, 0, 0));
            q->existed = true;
        }
        PQclear(r);
        if (q->existed)
            return 0;
    }
    pg_num n[8];
    if (q->source) {
        const char *v[] = {q->version, q->workflow, q->source, pg_i64(&n[0], q->time_ms)};
        int len[] = {0, 0, (int)q->source_len, 0};
        r = store_pg_exec(&pg->w, "INSERT INTO sources (hash, workflow, source, created_ms)"
                          " VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING", true, 4, v,
                          len, 2, 0);
        if (!store_pg_ok(r)) {
            char why[300];
            rc = store_pg_errno(pg->w.conn, r);
            if (pg_conn_lost(pg->w.conn, r))
                pg->w.broken = true;
            store_set_error(q->error_text, sizeof q->error_text, "insert job %s: %s", q->job_id,
                            store_pg_message(pg->w.conn, r, why, sizeof why));
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    const char *v[] = {q->job_id, q->workflow, q->version, q->input, pg_i64(&n[0], q->priority),
                       q->idempotency_key,
                       q->has_peer ? pg_i64(&n[1], q->peer_uid) : NULL,
                       q->has_peer ? pg_i64(&n[2], q->peer_gid) : NULL,
                       q->has_peer ? pg_i64(&n[3], q->peer_pid) : NULL,
                       pg_i64(&n[4], q->time_ms), q->tenant, q->budget, q->traceparent,
                       pg->node, pg_i64(&n[5], pg->lease_ms)};
    r = pg_w(s, q, "INSERT INTO jobs (id, workflow, version, input, state, priority,"
             " idempotency_key, peer_uid, peer_gid, peer_pid, created_ms, tenant, budget,"
             " traceparent, node, epoch, lease_until_ms)"
             " VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10,"
             " coalesce($11, 'default'), $12, $13, $14, 1, " STORE_PG_NOW_MS " + $15)"
             " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id", 15, v, &rc);
    if (!r)
        return rc;
    bool inserted = PQntuples(r) > 0;
    PQclear(r);
    if (inserted) {
        memcpy(q->result_id, q->job_id, sizeof q->result_id);
        q->epoch = 1;
        return 0;
    }
    /* another daemon took the key meanwhile (it committed first) */
    const char *kv[] = {q->idempotency_key};
    if (!(r = pg_w(s, q, "SELECT id FROM jobs WHERE idempotency_key = $1", 1, kv, &rc)))
        return rc;
    if (PQntuples(r) > 0) {
        snprintf(q->result_id, sizeof q->result_id, "%s", PQgetvalue(r, 0, 0));
        q->existed = true;
    } else {
        rc = -EAGAIN; /* it went again: run the transaction anew */
        store_set_error(q->error_text, sizeof q->error_text, "insert job %s: idempotency key "
                        "raced", q->job_id);
    }
    PQclear(r);
    return rc;
}

static int pg_running(store_t *s, store_req_t *q)
{
    pg_num n[2];
    const char *v[] = {q->job_id, pg_i64(&n[0], q->time_ms), s->pg->node,
                       pg_i64(&n[1], store_pg_epoch_get(s, q->job_id))};
    int rc = pg_guarded(s, q, "UPDATE jobs SET state = 'running', started_ms ="
                        " coalesce(started_ms, $2) WHERE id = $1 AND "
                        PG_GUARD("false", "$3", "$4"), 4, v);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if ((rc = pg_check_job(s, q, PG_LIVE, true, NULL)) != 0)
        return rc < 0 ? rc : 0;
    return pg_wdo(s, q, "UPDATE jobs SET state = 'running', started_ms = coalesce(started_ms,"
                  " $2) WHERE id = $1", 2, v);
}

/* Unlike SQLite, a step of a finished job is refused (-EALREADY): with
 * several daemons, a job that ended is one another daemon (or a cancel)
 * ended, and its owner learns it at its next checkpoint (store.h). */
static int pg_step(store_t *s, store_req_t *q)
{
    pg_num n[2];
    const char *v[] = {q->job_id, q->step_key, q->output, q->error, pg_i64(&n[0], q->time_ms),
                       s->pg->node, pg_i64(&n[1], store_pg_epoch_get(s, q->job_id))};
    int rc = pg_guarded(s, q, "INSERT INTO steps (job_id, key, output, error, finished_ms)"
                        " SELECT $1, $2, $3, $4, $5::bigint FROM jobs WHERE id = $1 AND "
                        PG_GUARD("true", "$6", "$7") " FOR UPDATE"
                        " ON CONFLICT (job_id, key) DO UPDATE SET output = excluded.output,"
                        " error = excluded.error, finished_ms = excluded.finished_ms", 7, v);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if ((rc = pg_check_job(s, q, PG_LIVE | PG_BIT(STORE_WAITING), true, NULL)) != 0)
        return rc < 0 ? rc : 0;
    return pg_wdo(s, q, "INSERT INTO steps (job_id, key, output, error, finished_ms)"
                  " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, key) DO UPDATE SET"
                  " output = excluded.output, error = excluded.error,"
                  " finished_ms = excluded.finished_ms", 5, v);
}

static int pg_finish(store_t *s, store_req_t *q)
{
    /* a cancel is not fenced: any daemon may cancel any job (store.h) */
    bool fenced = q->state != STORE_CANCELLED;
    pg_num n[2];
    char cost[40];
    if (q->has_cost)
        snprintf(cost, sizeof cost, "%.17g", q->cost);
    const char *v[] = {q->job_id, store_state_name(q->state), q->output, q->error, q->usage,
                       pg_i64(&n[0], q->time_ms), q->has_cost ? cost : NULL, s->pg->node,
                       pg_i64(&n[1], store_pg_epoch_get(s, q->job_id))};
#define PG_FINISH_SET                                                          \
    "UPDATE jobs SET state = $2, output = $3, error = $4, usage = $5,"         \
    " finished_ms = $6, cost = $7, lease_until_ms = NULL WHERE id = $1"
    int rc = fenced ? pg_guarded(s, q, PG_FINISH_SET " AND " PG_GUARD("true", "$8", "$9"), 9, v)
                    : pg_guarded(s, q, PG_FINISH_SET " AND CASE WHEN state IN ('queued',"
                                 " 'running', 'waiting') THEN true ELSE false END", 7, v);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if ((rc = pg_check_job(s, q, PG_LIVE | PG_BIT(STORE_WAITING), fenced, NULL)) != 0)
        return rc < 0 ? rc : 0;
    return pg_wdo(s, q, PG_FINISH_SET, 7, v);
#undef PG_FINISH_SET
}

static int pg_crashes(store_t *s, store_req_t *q)
{
    int rc = pg_check_job(s, q, PG_LIVE, true, NULL);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    pg_num n;
    const char *v[] = {q->job_id, pg_i64(&n, q->crashes), q->crash};
    return pg_wdo(s, q, "UPDATE jobs SET crashes = $2, crash = $3 WHERE id = $1", 3, v);
}

/* A retry or a wake: the job becomes this node's, with a new epoch. */
static int pg_requeue(store_t *s, store_req_t *q, const char *sql)
{
    int rc;
    pg_num n;
    const char *v[] = {q->job_id, s->pg->node, pg_i64(&n, s->pg->lease_ms)};
    PGresult *r = pg_w(s, q, sql, 3, v, &rc);
    if (!r)
        return rc;
    q->epoch = PQntuples(r) > 0 ? pg_col_i64(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

static int pg_retry(store_t *s, store_req_t *q)
{
    int rc = pg_check_job(s, q, PG_BIT(STORE_FAILED), false, NULL);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    return pg_requeue(s, q, "UPDATE jobs SET state = 'queued', attempt = attempt + 1,"
                      " output = NULL, error = NULL, usage = NULL, finished_ms = NULL,"
                      " crashes = 0, crash = NULL, cost = NULL, node = $2, epoch = epoch + 1,"
                      " lease_until_ms = " STORE_PG_NOW_MS " + $3 WHERE id = $1"
                      " RETURNING epoch");
}

static int pg_wait(store_t *s, store_req_t *q)
{
    int rc;
    if (q->state == STORE_WAITING) {
        if ((rc = pg_check_job(s, q, PG_LIVE, true, NULL)) != 0)
            return rc < 0 ? rc : 0;
        const char *v[] = {q->job_id, q->output};
        /* a parked job has no owner: whoever wakes it runs it */
        return pg_wdo(s, q, "UPDATE jobs SET state = 'waiting', waits = $2, node = NULL,"
                      " lease_until_ms = NULL WHERE id = $1", 2, v);
    }
    if ((rc = pg_check_job(s, q, PG_BIT(STORE_WAITING), false, NULL)) != 0)
        return rc < 0 ? rc : 0;
    return pg_requeue(s, q, "UPDATE jobs SET state = 'queued', node = $2, epoch = epoch + 1,"
                      " lease_until_ms = " STORE_PG_NOW_MS " + $3 WHERE id = $1"
                      " RETURNING epoch");
}

static int pg_spend(store_t *s, store_req_t *q)
{
    char usd[40];
    snprintf(usd, sizeof usd, "%.17g", q->cost);
    const char *v[] = {q->tenant, q->day, q->month, usd};
    return pg_wdo(s, q, "INSERT INTO spend (tenant, period, usd) VALUES ($1, $2, $4),"
                  " ($1, $3, $4) ON CONFLICT (tenant, period) DO UPDATE SET"
                  " usd = spend.usd + excluded.usd", 4, v);
}

static int pg_purge(store_t *s, store_req_t *q)
{
    int rc;
    pg_num n;
    const char *v[] = {pg_i64(&n, q->time_ms)};
    PGresult *r = pg_w(s, q, "DELETE FROM jobs WHERE finished_ms IS NOT NULL AND"
                       " finished_ms < $1", 1, v, &rc);
    if (!r)
        return rc;
    q->count = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    if (q->count == 0)
        return 0; /* no job went, so no source lost its last job */
    return pg_wdo(s, q, "DELETE FROM sources WHERE NOT EXISTS (SELECT 1 FROM jobs"
                  " WHERE jobs.version = sources.hash)", 0, NULL);
}

/* Takes over jobs whose owner is gone. Never this node's own: those it
 * still runs (its heartbeat renews them once it can) or resumes at a
 * restart (store_unfinished_jobs); claiming them would run them twice. */
static int pg_claim(store_t *s, store_req_t *q)
{
    int rc;
    pg_num n[2];
    const char *v[] = {s->pg->node, pg_i64(&n[0], s->pg->lease_ms), pg_i64(&n[1], q->count)};
    PGresult *r = pg_w(s, q, "WITH c AS (UPDATE jobs SET node = $1, epoch = epoch + 1,"
                       " lease_until_ms = " STORE_PG_NOW_MS " + $2 WHERE id IN (SELECT id"
                       " FROM jobs WHERE state IN ('queued', 'running') AND (node IS NULL OR"
                       " (node <> $1 AND (lease_until_ms IS NULL OR"
                       " lease_until_ms < " STORE_PG_NOW_MS ")))"
                       " ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                       " RETURNING " STORE_PG_JOB_COLUMNS ")"
                       " SELECT * FROM c ORDER BY priority DESC, id", 3, v, &rc);
    if (!r)
        return rc;
    json_t *jobs = json_array();
    rc = jobs ? 0 : -ENOMEM;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        json_t *job = NULL;
        if ((rc = store_pg_row_job(r, i, &job, q->error_text, sizeof q->error_text)) == 0 &&
            json_array_append_new(jobs, job) != 0)
            rc = -ENOMEM;
    }
    PQclear(r);
    if (rc < 0) {
        /* a stored value that is not JSON: the claim cannot be handed over,
         * so it is undone (the leases expire again) */
        json_decref(jobs);
        if (rc == -ENOMEM)
            store_set_error(q->error_text, sizeof q->error_text, "claim jobs: out of memory");
        return rc == -EIO ? -EPROTO : rc;
    }
    json_decref(q->jobs);
    q->jobs = jobs;
    return 0;
}

static int pg_release(store_t *s, store_req_t *q)
{
    pg_num n;
    int64_t epoch = store_pg_epoch_get(s, q->job_id);
    const char *v[] = {q->job_id, s->pg->node, epoch ? pg_i64(&n, epoch) : NULL};
    /* no owner: the heartbeat no longer renews it, any daemon may claim it */
    return pg_wdo(s, q, "UPDATE jobs SET node = NULL, lease_until_ms = 0 WHERE id = $1"
                  " AND node = $2"
                  " AND ($3::bigint IS NULL OR epoch = $3) AND state IN ('queued', 'running')",
                  3, v);
}

/* Runs Q inside the open transaction and sets its result: 0 (Q's status
 * may still be a refusal that changed nothing, such as -EALREADY), or the
 * negative errno of a failed statement, which aborted the transaction. */
static int pg_run_request(store_t *s, store_req_t *q)
{
    q->status = 0;
    q->existed = false;
    q->count = q->op == STORE_OP_CLAIM ? q->count : 0;
    q->epoch = 0;
    q->result_id[0] = q->error_text[0] = '\0';
    int rc;
    switch (q->op) {
    case STORE_OP_INSERT: rc = pg_insert(s, q); break;
    case STORE_OP_RUNNING: rc = pg_running(s, q); break;
    case STORE_OP_STEP: rc = pg_step(s, q); break;
    case STORE_OP_FINISH: rc = pg_finish(s, q); break;
    case STORE_OP_CRASHES: rc = pg_crashes(s, q); break;
    case STORE_OP_RETRY: rc = pg_retry(s, q); break;
    case STORE_OP_SPEND: rc = pg_spend(s, q); break;
    case STORE_OP_WAIT: rc = pg_wait(s, q); break;
    case STORE_OP_BATCH: rc = store_pg_batch_apply(s, q); break;
    case STORE_OP_CLAIM: rc = pg_claim(s, q); break;
    case STORE_OP_RELEASE: rc = pg_release(s, q); break;
    default: rc = pg_purge(s, q); break;
    }
    if (rc < 0)
        q->status = rc;
    return rc;
}

/* ---- notifications */

/* Appends S to B as an element of a PostgreSQL array literal (after a
 * comma unless FIRST). */
static int pg_array_add(sbuf *b, const char *s, bool first)
{
    int rc = first ? 0 : sbuf_addc(b, ',');
    rc |= sbuf_addc(b, '"');
    for (; rc == 0 && *s; s++) {
        if (*s == '"' || *s == '\\')
            rc |= sbuf_addc(b, '\\');
        rc |= sbuf_addc(b, *s);
    }
    rc |= sbuf_addc(b, '"');
    return rc;
}

/* The payload of Q's notification (store.h) into OUT, or false when Q
 * announces nothing. */
static bool pg_payload(store_t *s, const store_req_t *q, sbuf *out)
{
    const char *node = s->pg->node;
    sbuf_reset(out);
    switch (q->op) {
    case STORE_OP_INSERT:
        return !q->existed && sbuf_addf(out, "new %s %s", node, q->job_id) == 0;
    case STORE_OP_RETRY:
        return sbuf_addf(out, "queued %s %s", node, q->job_id) == 0;
    case STORE_OP_WAIT:
        return sbuf_addf(out, "%s %s %s", q->state == STORE_WAITING ? "waiting" : "queued",
                         node, q->job_id) == 0;
    case STORE_OP_STEP:
        if (sbuf_addf(out, "step %s %s %s", node, q->job_id, q->step_key) < 0)
            return false;
        /* PostgreSQL refuses a payload of 8000 bytes or more, which would
         * fail the whole transaction: a step key that long is cut (at a
         * character's start), the job id before it still says whose */
        if (out->n >= STORE_PG_NOTIFY_MAX) {
            size_t n = STORE_PG_NOTIFY_MAX - 1;
            while (n > 0 && ((unsigned char)out->p[n] & 0xC0) == 0x80)
                n--;
            out->n = n;
            out->p[n] = '\0';
        }
        return true;
    case STORE_OP_FINISH:
        return sbuf_addf(out, "end %s %s %s", node, q->job_id, store_state_name(q->state)) == 0;
    case STORE_OP_RELEASE:
        return sbuf_addf(out, "released %s %s", node, q->job_id) == 0;
    default:
        return false;
    }
}

/* Sends the notifications of the requests from FIRST to STOP that
 * succeeded, inside the open transaction. */
static int pg_notify(store_t *s, list_link *first, list_link *stop, char *why, size_t whylen)
{
    sbuf arr, one;
    sbuf_init(&arr, 0);
    sbuf_init(&one, 0);
    int rc = 0;
    size_t n = 0;
    for (list_link *l = first; rc == 0 && l != stop; l = l->next) {
        store_req_t *q = LIST_OWNER(l, store_req_t, link);
        if (q->status != 0 || !pg_payload(s, q, &one))
            continue;
        if (n == 0 && sbuf_addc(&arr, '{') < 0)
            rc = -ENOMEM;
        else if (pg_array_add(&arr, one.p, n == 0) != 0)
            rc = -ENOMEM;
        n++;
    }
    if (rc == 0 && n > 0 && sbuf_addc(&arr, '}') < 0)
        rc = -ENOMEM;
    if (rc == 0 && n > 0) {
        const char *v[] = {arr.p};
        PGconn *c = s->pg->w.conn;
        PGresult *r = store_pg_exec(&s->pg->w, "SELECT pg_notify('" STORE_NOTIFY_CHANNEL
                                    "', p) FROM unnest($1::text[]) AS p", true, 1, v, NULL,
                                    -1, 0);
        if (!store_pg_ok(r)) {
            char m[300];
            rc = store_pg_errno(c, r);
            if (pg_conn_lost(c, r))
                s->pg->w.broken = true;
            snprintf(why, whylen, "notify: %s", store_pg_message(c, r, m, sizeof m));
        }
        PQclear(r);
    } else if (rc < 0) {
        snprintf(why, whylen, "notify: out of memory");
    }
    sbuf_free(&arr);
    sbuf_free(&one);
    return rc;
}

/* ---- transactions */

#define LOUT(l) LIST_OWNER((l), store_req_t, link)

static void pg_fail_all(list_link *first, list_link *stop, store_req_t *skip, int status,
                        const char *why)
{
    for (list_link *l = first; l != stop; l = l->next) {
        store_req_t *q = LOUT(l);
        if (q == skip)
            continue;
        q->status = status;
        q->existed = false;
        q->count = q->op == STORE_OP_CLAIM ? q->count : 0;
        json_decref(q->jobs);
        q->jobs = NULL;
        snprintf(q->error_text, sizeof q->error_text, "%s", why);
    }
}

/* A committed request's effect on the epoch map. */
static void pg_note_epochs(store_t *s, list_link *first, list_link *stop)
{
    for (list_link *l = first; l != stop; l = l->next) {
        store_req_t *q = LOUT(l);
        if (q->status != 0)
            continue;
        if (q->op == STORE_OP_INSERT && !q->existed && q->epoch)
            store_pg_epoch_set(s, q->job_id, q->epoch);
        else if ((q->op == STORE_OP_RETRY || q->op == STORE_OP_WAIT) && q->epoch)
            store_pg_epoch_set(s, q->job_id, q->epoch);
        else if (q->op == STORE_OP_FINISH || q->op == STORE_OP_RELEASE ||
                 (q->op == STORE_OP_WAIT && q->state == STORE_WAITING))
            store_pg_epoch_drop(s, q->job_id);
        else if (q->op == STORE_OP_CLAIM && q->jobs) {
            size_t i;
            json_t *job;
            json_array_foreach(q->jobs, i, job) {
                store_pg_epoch_set(s, json_string_value(json_object_get(job, "id")),
                                   json_integer_value(json_object_get(job, "epoch")));
            }
        }
    }
}

/* Makes sure the writer is connected; fails FIRST..STOP with -EIO if not. */
static bool pg_writer_ready(store_t *s, list_link *first, list_link *stop)
{
    struct store_pg *pg = s->pg;
    if (pg->w.conn && !pg->w.broken && PQstatus(pg->w.conn) == CONNECTION_OK)
        return true;
    char why[sizeof ((store_req_t *)0)->error_text];
    if (pg_connect(pg, &pg->w, why, sizeof why) == 0)
        return true;
    pg_fail_all(first, stop, NULL, -EIO, why);
    return false;
}

static void pg_rollback(store_t *s)
{
    PGconn *c = s->pg->w.conn;
    if (PQtransactionStatus(c) != PQTRANS_IDLE && PQtransactionStatus(c) != PQTRANS_UNKNOWN)
        PQclear(PQexec(c, "ROLLBACK"));
}

/* Runs the requests from FIRST up to STOP in one transaction. Returns false
 * when one request's data failed it, so that running them one by one may
 * save the others; every request has a result either way. */
static bool pg_transaction(store_t *s, list_link *first, list_link *stop)
{
    char why[sizeof ((store_req_t *)0)->error_text];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int attempt = 1;; attempt++) {
        if (!pg_writer_ready(s, first, stop))
            return true;
        PGconn *c = s->pg->w.conn;
        int rc = 0;
        PGresult *r = PQexec(c, "BEGIN");
        if (!store_pg_ok(r)) {
            char m[300];
            rc = store_pg_errno(c, r);
            if (pg_conn_lost(c, r))
                s->pg->w.broken = true;
            snprintf(why, sizeof why, "cannot begin a transaction: %s",
                     store_pg_message(c, r, m, sizeof m));
            PQclear(r);
            pg_fail_all(first, stop, NULL, rc == -EAGAIN ? -EBUSY : rc, why);
            return true;
        }
        PQclear(r);
        store_req_t *bad = NULL;
        for (list_link *l = first; l != stop; l = l->next) {
            if (pg_run_request(s, LOUT(l)) < 0) {
                bad = LOUT(l);
                break;
            }
        }
        if (!bad && (rc = pg_notify(s, first, stop, why, sizeof why)) == 0) {
            r = PQexec(c, "COMMIT");
            if (store_pg_ok(r)) {
                PQclear(r);
                atomic_fetch_add(&s->transactions, 1);
                pg_note_epochs(s, first, stop);
                store_commit_fn obs = atomic_load_explicit(&s->commit_obs,
                                                           memory_order_acquire);
                if (obs) {
                    struct timespec t1;
                    clock_gettime(CLOCK_MONOTONIC, &t1);
                    obs(atomic_load_explicit(&s->commit_obs_ud, memory_order_relaxed),
                        (double)(t1.tv_sec - t0.tv_sec) +
                            (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
                }
                return true;
            }
            char m[300];
            rc = store_pg_errno(c, r);
            if (pg_conn_lost(c, r))
                s->pg->w.broken = true;
            snprintf(why, sizeof why, "commit failed: %s", store_pg_message(c, r, m, sizeof m));
            if (pg_conn_lost(c, r))
                for (list_link *l = first; l != stop; l = l->next)
                    LOUT(l)->lost_commit = true;
            PQclear(r);
        } else if (bad) {
            rc = bad->status;
            snprintf(why, sizeof why, "%s", bad->error_text);
        }
        pg_rollback(s);
        if (rc == -EAGAIN && attempt < STORE_PG_TX_TRIES)
            continue; /* a serialization failure or deadlock: run it again */
        if (rc == -EAGAIN)
            rc = -EBUSY;
        if (!bad || store_status_transient(rc)) {
            pg_fail_all(first, stop, NULL, rc, why);
            return true;
        }
        char cut[sizeof why];
        snprintf(cut, sizeof cut, "rolled back with another request: %.160s", why);
        pg_fail_all(first, stop, bad, rc, cut);
        bad->status = rc;
        return first->next == stop; /* alone: nothing to split */
    }
}

void store_pg_apply(store_t *s, list_link *list)
{
    if (list_empty(list) || pg_transaction(s, list->next, list) || list->next->next == list)
        return;
    atomic_fetch_add(&s->batch_retries, 1);
    for (list_link *l = list->next; l != list; l = l->next) {
        pg_transaction(s, l, l->next);
        store_req_t *q = LOUT(l);
        if (store_status_transient(q->status) && l->next != list) {
            /* the database went meanwhile: what follows waits, untried, so
             * that nothing commits ahead of a request queued before it */
            pg_fail_all(l->next, list, NULL, q->status, q->error_text);
            return;
        }
    }
}

/* ---- the heartbeat */

int64_t store_pg_heartbeat(store_t *s, int64_t now_mono_ms)
{
    struct store_pg *pg = s->pg;
    int64_t every = pg->lease_ms / 3 > 0 ? pg->lease_ms / 3 : 1;
    if (now_mono_ms < pg->next_heartbeat_ms)
        return pg->next_heartbeat_ms;
    bool ready = pg->w.conn && !pg->w.broken && PQstatus(pg->w.conn) == CONNECTION_OK;
    if (!ready && now_mono_ms - pg->w.last_try_ms >= 1000) {
        char why[200];
        ready = pg_connect(pg, &pg->w, why, sizeof why) == 0;
    }
    if (ready) {
        pg_num n;
        const char *v[] = {pg->node, pg_i64(&n, pg->lease_ms)};
        PGresult *r = store_pg_exec(&pg->w, "UPDATE jobs SET lease_until_ms = "
                                    STORE_PG_NOW_MS " + $2 WHERE node = $1"
                                    " AND state IN ('queued', 'running')",
                                    true, 2, v, NULL, -1, 0);
        if (store_pg_ok(r))
            atomic_fetch_add(&pg->heartbeats, 1);
        else if (pg_conn_lost(pg->w.conn, r))
            pg->w.broken = true;
        PQclear(r);
    }
    /* disconnected: try again in a second rather than a whole period */
    pg->next_heartbeat_ms = now_mono_ms + (ready ? every : (every < 1000 ? every : 1000));
    return pg->next_heartbeat_ms;
}
