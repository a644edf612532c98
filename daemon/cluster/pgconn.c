/* pgconn.c -- one asynchronous libpq connection on the reactor (pgconn.h).
 *
 * The connection goes through four states:
 *   CONNECTING  PQconnectPoll steps, the socket watched for what it asks
 *   LISTENING   one "LISTEN a; LISTEN b" sent, its answers awaited
 *   UP          queries sent one at a time, in the order they were queued
 *   WAITING     no connection; a timer retries (100 ms doubling to 2 s)
 * and, apart from them, a flag DOWN: set by a failure (a connection lost or
 * an attempt that failed), cleared when LISTEN is in force again. While it
 * is set, queries fail at once (on the next reactor pass), even while a
 * reconnect attempt is under way: a caller must not wait out an outage.
 * Before the first failure (the first attempt) queries are queued and sent
 * once the connection is up, so a daemon may query right after starting.
 *
 * Callbacks (queries' and the owner's hooks) run from reactor callbacks
 * only: from this connection's socket, its timers or its post, never from
 * pgconn_query. They may call pgconn_query but not pgconn_free. */
#include "daemon/cluster/pgconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Retry delays after a failure, and how long one attempt (connect and
 * LISTEN) may take when the conninfo sets no connect_timeout: libpq leaves
 * the timeout of an asynchronous connection to its caller. */
#define PGCONN_RETRY_MIN_US (100 * REACTOR_MSEC)
#define PGCONN_RETRY_MAX_US (2 * REACTOR_SEC)
#define PGCONN_CONNECT_TIMEOUT_S 5

enum pgconn_state { PGCONN_WAITING, PGCONN_CONNECTING, PGCONN_LISTENING, PGCONN_UP };

typedef struct pgconn_query_item {
    struct pgconn_query_item *next;
    char *sql;
    int nparams;
    char **params;
    pgconn_result_fn cb;
    void *ud;
    bool sent;                   /* the head, sent and not yet answered */
} pgconn_query_item;

typedef struct pgconn_queue {
    pgconn_query_item *head, *tail;
} pgconn_queue;

struct pgconn {
    reactor_t *r;
    log_sink *log;
    char *conninfo;
    char *password;              /* from password_file, or NULL */
    char **listen;               /* NULL-terminated copies, or NULL */
    pgconn_notify_fn on_notify;
    pgconn_state_fn on_state;
    void *ud;
    char *name;

    PGconn *conn;
    int fd;                      /* registered with the reactor, or -1 */
    int fd_events;
    enum pgconn_state state;
    bool down;                   /* failed since the last time it was up */
    bool ever_up;
    bool closing;
    uint64_t retry_us;
    reactor_timer_t *retry_timer;
    reactor_timer_t *attempt_timer;
    PGresult *result;            /* the answer being collected for the head */

    pgconn_queue queue;          /* waiting or in flight, in order */
    pgconn_queue failed;         /* answered "down" on the next pass */
    char failed_err[256];
    char broken_err[256];        /* a send failed in pgconn_query: lost next pass */
    bool broken;
    reactor_post_t post;
};

static void pgconn_connect(pgconn_t *c);
static void pgconn_lost(pgconn_t *c, const char *err);
static void pgconn_send_next(pgconn_t *c);

/* ---- small helpers */

/* The first line of MSG, without its newline, into OUT. */
static void pgconn_first_line(const char *msg, char *out, size_t outlen)
{
    if (!msg || !*msg)
        msg = "unknown error";
    size_t n = strcspn(msg, "\r\n");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

static void pgconn_item_free(pgconn_query_item *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

static void pgconn_queue_push(pgconn_queue *qu, pgconn_query_item *q)
{
    q->next = NULL;
    if (qu->tail)
        qu->tail->next = q;
    else
        qu->head = q;
    qu->tail = q;
}

static pgconn_query_item *pgconn_queue_pop(pgconn_queue *qu)
{
    pgconn_query_item *q = qu->head;
    if (q) {
        qu->head = q->next;
        if (!qu->head)
            qu->tail = NULL;
        q->next = NULL;
    }
    return q;
}

/* Answers every query of QU with RES NULL and ERR, in order. A callback may
 * queue more: those go where pgconn_query puts them, not into QU, unless
 * QU is the failed list while closing, which this drains to the end. */
static void pgconn_fail_all(pgconn_queue *qu, const char *err)
{
    pgconn_query_item *q;
    while ((q = pgconn_queue_pop(qu))) {
        if (q->cb)
            q->cb(q->ud, NULL, err);
        pgconn_item_free(q);
    }
}

/* Watches the socket for EVENTS (READ|WRITE), registering it if needed. */
static int pgconn_watch(pgconn_t *c, int events)
{
    if (c->fd >= 0 && c->fd_events == events)
        return 0;
    int rc = c->fd >= 0 ? reactor_mod_fd(c->r, c->fd, events) : -ENOENT;
    if (rc == -ENOENT)
        return -EBADF; /* the caller registers first */
    if (rc == 0)
        c->fd_events = events;
    return rc;
}

static void pgconn_unwatch(pgconn_t *c)
{
    if (c->fd >= 0)
        (void)reactor_del_fd(c->r, c->fd);
    c->fd = -1;
    c->fd_events = 0;
}

static void pgconn_drop_conn(pgconn_t *c)
{
    pgconn_unwatch(c);
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    if (c->attempt_timer) {
        reactor_timer_cancel(c->r, c->attempt_timer);
        c->attempt_timer = NULL;
    }
}

/* Notices (a LISTEN repeated, say) go to the debug log, not to stderr,
 * where libpq would print them. */
static void pgconn_notice(void *arg, const PGresult *res)
{
    pgconn_t *c = arg;
    if (!log_enabled(c->log, LOOM_LOG_DEBUG))
        return;
    char line[256];
    pgconn_first_line(PQresultErrorMessage(res), line, sizeof line);
    log_write(c->log, LOOM_LOG_DEBUG, NULL, "%s PostgreSQL notice: %s", c->name, line);
}

/* ---- the post: deferred failures, outside of pgconn_query */

static void pgconn_post_run(reactor_t *r, void *ud)
{
    (void)r;
    pgconn_t *c = ud;
    if (c->broken) {
        c->broken = false;
        if (c->conn)
            pgconn_lost(c, c->broken_err);
    }
    /* The error is copied: a callback may fail another query meanwhile. */
    char err[sizeof c->failed_err];
    memcpy(err, c->failed_err, sizeof err);
    pgconn_queue batch = c->failed;
    c->failed.head = c->failed.tail = NULL;
    pgconn_fail_all(&batch, err);
}

static void pgconn_arm_post(pgconn_t *c)
{
    /* -EBUSY: already queued, which is all this needs. */
    (void)reactor_post_embedded(c->r, &c->post, pgconn_post_run, c);
}

/* ---- losing the connection and getting it back */

static void pgconn_retry_fire(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    pgconn_t *c = ud;
    c->retry_timer = NULL;
    pgconn_connect(c);
}

/* The connection (or an attempt) failed with ERR: every query waiting is
 * answered with RES NULL, and a retry is timed. */
static void pgconn_lost(pgconn_t *c, const char *err)
{
    char line[256];
    pgconn_first_line(err, line, sizeof line);
    bool was_down = c->down;
    pgconn_drop_conn(c);
    c->state = PGCONN_WAITING;
    c->down = true;
    c->broken = false;
    if (!c->retry_timer) {
        c->retry_timer = reactor_timer_add(c->r, c->retry_us, pgconn_retry_fire, c);
        /* Without memory for a timer the connection could never come back;
         * the next query's post is no place to retry from either, so say it. */
        if (!c->retry_timer)
            log_write(c->log, LOOM_LOG_ERROR, NULL,
                      "%s connection to PostgreSQL: no memory to schedule a reconnect", c->name);
    }
    c->retry_us *= 2;
    if (c->retry_us > PGCONN_RETRY_MAX_US)
        c->retry_us = PGCONN_RETRY_MAX_US;
    if (!was_down) {
        /* libpq never puts the password in its messages; the conninfo,
         * which may hold one, is never logged. */
        log_write(c->log, LOOM_LOG_WARN, NULL, "%s connection to PostgreSQL %s: %s", c->name,
                  c->ever_up ? "lost" : "failed", line);
    }
    pgconn_queue batch = c->queue;
    c->queue.head = c->queue.tail = NULL;
    pgconn_fail_all(&batch, line);
    if (!was_down && c->on_state)
        c->on_state(c->ud, false);
}

static void pgconn_attempt_timeout(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    pgconn_t *c = ud;
    c->attempt_timer = NULL;
    pgconn_lost(c, "timeout expired while connecting");
}

static void pgconn_became_up(pgconn_t *c)
{
    if (c->attempt_timer) {
        reactor_timer_cancel(c->r, c->attempt_timer);
        c->attempt_timer = NULL;
    }
    bool changed = c->down || !c->ever_up;
    c->state = PGCONN_UP;
    c->down = false;
    c->ever_up = true;
    c->retry_us = PGCONN_RETRY_MIN_US;
    if (changed)
        log_write(c->log, LOOM_LOG_INFO, NULL, "%s connection to PostgreSQL up", c->name);
    if (c->on_state)
        c->on_state(c->ud, true);
    if (c->state == PGCONN_UP)
        pgconn_send_next(c);
}

/* ---- reading answers and notifications */

static void pgconn_deliver_notifies(pgconn_t *c)
{
    PGnotify *n;
    while (c->conn && (n = PQnotifies(c->conn))) {
        if (c->on_notify)
            c->on_notify(c->ud, n->relname, n->extra ? n->extra : "");
        PQfreemem(n);
    }
}

/* Keeps the answer that matters of a command's results: the first error,
 * else the last one. */
static void pgconn_keep_result(pgconn_t *c, PGresult *res)
{
    if (!c->result) {
        c->result = res;
        return;
    }
    ExecStatusType old = PQresultStatus(c->result);
    bool old_ok = old == PGRES_TUPLES_OK || old == PGRES_COMMAND_OK || old == PGRES_EMPTY_QUERY;
    if (old_ok) {
        PQclear(c->result);
        c->result = res;
    } else {
        PQclear(res);
    }
}

/* The command in flight has all its results (PQgetResult gave NULL). */
static void pgconn_command_done(pgconn_t *c)
{
    PGresult *res = c->result;
    c->result = NULL;
    if (c->state == PGCONN_LISTENING) {
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        char err[256];
        pgconn_first_line(res ? PQresultErrorMessage(res) : "LISTEN gave no answer", err,
                          sizeof err);
        PQclear(res);
        if (st != PGRES_COMMAND_OK) {
            pgconn_lost(c, err);
            return;
        }
        pgconn_became_up(c);
        return;
    }
    pgconn_query_item *q = pgconn_queue_pop(&c->queue);
    if (q && q->cb) {
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        char err[256] = "";
        if (res && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            pgconn_first_line(PQresultErrorMessage(res), err, sizeof err);
        else if (!res)
            snprintf(err, sizeof err, "no answer");
        q->cb(q->ud, res, err[0] ? err : NULL);
    }
    pgconn_item_free(q);
    PQclear(res);
}

static bool pgconn_in_flight(const pgconn_t *c)
{
    return c->state == PGCONN_LISTENING ||
           (c->state == PGCONN_UP && c->queue.head && c->queue.head->sent);
}

static void pgconn_readable(pgconn_t *c)
{
    if (!PQconsumeInput(c->conn)) {
        pgconn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    pgconn_deliver_notifies(c);
    while (c->conn && pgconn_in_flight(c) && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);
        if (res) {
            pgconn_keep_result(c, res);
            continue;
        }
        /* An answer cut short by the connection's end is no answer. */
        if (PQstatus(c->conn) == CONNECTION_BAD) {
            pgconn_lost(c, PQerrorMessage(c->conn));
            return;
        }
        pgconn_command_done(c);
        if (c->conn && c->state == PGCONN_UP)
            pgconn_send_next(c);
    }
    pgconn_deliver_notifies(c);
    if (c->conn && PQstatus(c->conn) == CONNECTION_BAD)
        pgconn_lost(c, PQerrorMessage(c->conn));
}

static void pgconn_flush(pgconn_t *c)
{
    int rc = PQflush(c->conn);
    if (rc < 0) {
        pgconn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    if (pgconn_watch(c, rc > 0 ? REACTOR_READ | REACTOR_WRITE : REACTOR_READ) < 0)
        pgconn_lost(c, "cannot watch the connection's socket");
}

/* Sends the head of the queue if nothing is in flight. A failure to send
 * is handled on the next pass (this may run inside pgconn_query). */
static void pgconn_send_next(pgconn_t *c)
{
    if (c->state != PGCONN_UP || c->broken || !c->queue.head || c->queue.head->sent)
        return;
    pgconn_query_item *q = c->queue.head;
    if (!PQsendQueryParams(c->conn, q->sql, q->nparams, NULL, (const char *const *)q->params,
                           NULL, NULL, 0)) {
        pgconn_first_line(PQerrorMessage(c->conn), c->broken_err, sizeof c->broken_err);
        c->broken = true;
        pgconn_arm_post(c);
        return;
    }
    q->sent = true;
    int rc = PQflush(c->conn);
    int events = rc > 0 ? REACTOR_READ | REACTOR_WRITE : REACTOR_READ;
    if (rc < 0 || pgconn_watch(c, events) < 0) {
        pgconn_first_line(rc < 0 ? PQerrorMessage(c->conn) : "cannot watch the socket",
                          c->broken_err, sizeof c->broken_err);
        c->broken = true;
        pgconn_arm_post(c);
    }
}

/* ---- connecting */

/* Sends the LISTEN commands, or is up at once when there are none. */
static void pgconn_start_listen(pgconn_t *c)
{
    if (!c->listen || !c->listen[0]) {
        pgconn_became_up(c);
        return;
    }
    size_t len = 1, n = 0;
    char *ids[64];
    for (; c->listen[n] && n < sizeof ids / sizeof ids[0]; n++) {
        ids[n] = PQescapeIdentifier(c->conn, c->listen[n], strlen(c->listen[n]));
        if (!ids[n]) {
            for (size_t i = 0; i < n; i++)
                PQfreemem(ids[i]);
            pgconn_lost(c, PQerrorMessage(c->conn));
            return;
        }
        len += strlen(ids[n]) + sizeof "LISTEN ; ";
    }
    char *sql = malloc(len);
    if (sql) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++)
            off += (size_t)snprintf(sql + off, len - off, "LISTEN %s; ", ids[i]);
    }
    for (size_t i = 0; i < n; i++)
        PQfreemem(ids[i]);
    if (!sql) {
        pgconn_lost(c, "out of memory");
        return;
    }
    c->state = PGCONN_LISTENING;
    int ok = PQsendQuery(c->conn, sql);
    free(sql);
    if (!ok) {
        pgconn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    pgconn_flush(c);
}

/* Registers the socket libpq uses now for EVENTS. During a connection it
 * may change (another address, a retry without SSL), and a closed number
 * may be reused at once, so it is registered afresh at each step. */
static int pgconn_rewatch(pgconn_t *c, int events, reactor_fd_cb cb)
{
    pgconn_unwatch(c);
    int fd = PQsocket(c->conn);
    if (fd < 0)
        return -EBADF;
    int rc = reactor_add_fd(c->r, fd, events, cb, c);
    if (rc < 0)
        return rc;
    c->fd = fd;
    c->fd_events = events;
    return 0;
}

static void pgconn_io(reactor_t *r, int fd, int events, void *ud);

static void pgconn_connect_step(pgconn_t *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    switch (st) {
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (pgconn_rewatch(c, st == PGRES_POLLING_READING ? REACTOR_READ : REACTOR_WRITE,
                           pgconn_io) < 0)
            pgconn_lost(c, "cannot watch the connection's socket");
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->conn, 1) != 0) {
            pgconn_lost(c, PQerrorMessage(c->conn));
            return;
        }
        if (pgconn_rewatch(c, REACTOR_READ, pgconn_io) < 0) {
            pgconn_lost(c, "cannot watch the connection's socket");
            return;
        }
        pgconn_start_listen(c);
        return;
    default:
        pgconn_lost(c, PQerrorMessage(c->conn));
        return;
    }
}

static void pgconn_io(reactor_t *r, int fd, int events, void *ud)
{
    (void)r;
    (void)fd;
    pgconn_t *c = ud;
    if (!c->conn)
        return;
    if (c->state == PGCONN_CONNECTING) {
        pgconn_connect_step(c);
        return;
    }
    if (events & REACTOR_WRITE) {
        pgconn_flush(c);
        if (!c->conn)
            return;
    }
    if (events & (REACTOR_READ | REACTOR_ERROR))
        pgconn_readable(c);
}

/* The attempt's deadline: the conninfo's connect_timeout, else a default. */
static uint64_t pgconn_attempt_us(PGconn *conn)
{
    long secs = PGCONN_CONNECT_TIMEOUT_S;
    PQconninfoOption *opts = PQconninfo(conn);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && *o->val) {
                long v = strtol(o->val, NULL, 10);
                if (v > 0)
                    secs = v < 2 ? 2 : v; /* as libpq: less than 2 s is 2 s */
            }
        }
        PQconninfoFree(opts);
    }
    return (uint64_t)secs * REACTOR_SEC;
}

static void pgconn_connect(pgconn_t *c)
{
    const char *keys[8], *vals[8];
    int n = 0;
    keys[n] = "dbname";
    vals[n++] = c->conninfo;
    /* As the store's connections: a server cut off without closing the
     * connection (a network cut) is noticed within seconds by the kernel,
     * whether the connection idles in LISTEN (keepalives) or waits for the
     * answer of a query (tcp_user_timeout), instead of at TCP's
     * retransmission timeout: until then no notice arrives and the limits'
     * leases wait. */
    static const char *const tcp[][2] = {
        {"keepalives", "1"}, {"keepalives_idle", "5"}, {"keepalives_interval", "2"},
        {"keepalives_count", "3"}, {"tcp_user_timeout", "10000"},
    };
    for (size_t i = 0; i < sizeof tcp / sizeof tcp[0]; i++) {
        keys[n] = tcp[i][0];
        vals[n++] = tcp[i][1];
    }
    /* After dbname: a password file given in the configuration wins over a
     * password in the URI. */
    if (c->password) {
        keys[n] = "password";
        vals[n++] = c->password;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    c->state = PGCONN_CONNECTING;
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn) {
        pgconn_lost(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        pgconn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    PQsetNoticeReceiver(c->conn, pgconn_notice, c);
    c->attempt_timer = reactor_timer_add(c->r, pgconn_attempt_us(c->conn),
                                         pgconn_attempt_timeout, c);
    if (!c->attempt_timer) {
        pgconn_lost(c, "out of memory");
        return;
    }
    /* As libpq asks: start as if PQconnectPoll had said "writing". */
    if (pgconn_rewatch(c, REACTOR_WRITE, pgconn_io) < 0)
        pgconn_lost(c, "cannot watch the connection's socket");
}

/* ---- the interface */

/* The first line of PATH (a password file), new, or NULL with errno. */
static char *pgconn_read_password(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char buf[1024];
    char *pw = NULL;
    if (!fgets(buf, sizeof buf, f)) {
        errno = ferror(f) ? EIO : EINVAL;
        goto out;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    pw = strdup(buf);
out:
    explicit_bzero(buf, sizeof buf);
    fclose(f);
    return pw;
}

pgconn_t *pgconn_new(reactor_t *r, log_sink *log, const pgconn_options *o)
{
    if (!r || !log || !o || !o->conninfo) {
        errno = EINVAL;
        return NULL;
    }
    pgconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->r = r;
    c->log = log;
    c->fd = -1;
    c->retry_us = PGCONN_RETRY_MIN_US;
    c->on_notify = o->on_notify;
    c->on_state = o->on_state;
    c->ud = o->ud;
    c->conninfo = strdup(o->conninfo);
    c->name = strdup(o->name ? o->name : "pgconn");
    if (!c->conninfo || !c->name)
        goto fail;
    if (o->password_file && !(c->password = pgconn_read_password(o->password_file)))
        goto fail;
    if (o->listen) {
        size_t n = 0;
        while (o->listen[n])
            n++;
        if (n > 64) {
            errno = EINVAL;
            goto fail;
        }
        c->listen = calloc(n + 1, sizeof *c->listen);
        if (!c->listen)
            goto fail;
        for (size_t i = 0; i < n; i++)
            if (!(c->listen[i] = strdup(o->listen[i])))
                goto fail;
    }
    pgconn_connect(c);
    return c;
fail:;
    int e = errno ? errno : ENOMEM;
    pgconn_free(c);
    errno = e;
    return NULL;
}

int pgconn_query(pgconn_t *c, const char *sql, int nparams, const char *const *params,
                 pgconn_result_fn cb, void *ud)
{
    if (!c || !sql || nparams < 0 || (nparams > 0 && !params))
        return -EINVAL;
    pgconn_query_item *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->cb = cb;
    q->ud = ud;
    if (!(q->sql = strdup(sql)))
        goto fail;
    if (nparams > 0) {
        if (!(q->params = calloc((size_t)nparams, sizeof *q->params)))
            goto fail;
        q->nparams = nparams;
        for (int i = 0; i < nparams; i++)
            if (params[i] && !(q->params[i] = strdup(params[i])))
                goto fail;
    }
    if (c->closing || c->down) {
        if (!c->closing) {
            snprintf(c->failed_err, sizeof c->failed_err, "%s connection to PostgreSQL is down",
                     c->name);
            pgconn_arm_post(c);
        }
        pgconn_queue_push(&c->failed, q);
        return 0;
    }
    pgconn_queue_push(&c->queue, q);
    pgconn_send_next(c);
    return 0;
fail:
    pgconn_item_free(q);
    return -ENOMEM;
}

bool pgconn_up(const pgconn_t *c)
{
    return c && c->state == PGCONN_UP && !c->down;
}

void pgconn_free(pgconn_t *c)
{
    if (!c)
        return;
    c->closing = true;
    reactor_post_cancel(c->r, &c->post);
    if (c->retry_timer)
        reactor_timer_cancel(c->r, c->retry_timer);
    c->retry_timer = NULL;
    pgconn_drop_conn(c);
    pgconn_fail_all(&c->queue, "closing");
    /* Queries queued by those callbacks land in the failed list (closing). */
    pgconn_fail_all(&c->failed, "closing");
    if (c->password) {
        explicit_bzero(c->password, strlen(c->password));
        free(c->password);
    }
    if (c->listen) {
        for (size_t i = 0; c->listen[i]; i++)
            free(c->listen[i]);
        free(c->listen);
    }
    free(c->conninfo);
    free(c->name);
    free(c);
}
