/* test_loomd_cluster.c -- three loomd sharing one PostgreSQL store
 * (docs/scale-out.md): 3,000 jobs of a three-call chain against one fake
 * provider server, submitted over all three daemons; one daemon is killed
 * with SIGKILL twice at random moments (restarted after the first kill, once
 * the others took its jobs over) and PostgreSQL is restarted once, between
 * the kills, while jobs are submitted and run.
 *
 * What must hold at the end:
 * - every acknowledged submit is exactly one job (`list` shows 3,000 jobs,
 *   each acknowledged id among them), ended succeeded with the output the
 *   chain gives for its input, as a surviving daemon answers `wait` and
 *   `get` for it wherever it ran;
 * - a submit whose connection died unanswered is sent again, to another
 *   daemon, with the same idempotency key, and makes no second job;
 * - calls are re-sent only when a kill explains it. The fake server logs
 *   every request with its Loom-Step-Key header (the step's key in the job)
 *   and the prompt it echoes (which names the job), with the times it got
 *   the request and answered it on CLOCK_MONOTONIC, this process's clock
 *   too. A step (job, key) asked for more than once must have a kill K
 *   between two of its requests (the first came before the killed daemon
 *   was seen dead, the next after the kill was sent). A daemon runs at most
 *   MAX_RUNNING jobs and a chain has one call in flight per job, so at most
 *   MAX_RUNNING calls can be in flight on the killed daemon at a kill:
 *   re-sent keys <= MAX_RUNNING x kills. PostgreSQL's restart explains
 *   none: a daemon that keeps running keeps its leases through it;
 * - the survivors take over: the killed daemon's last heartbeat came at most
 *   lease / 3 before the kill, so its leases end at most LEASE_MS after it;
 *   a survivor claims at its next poll (every POLL_MS) with a free slot.
 *   From the kill to the first claim (a survivor's stats.cluster.claimed
 *   going up) must take at most LEASE_MS + 1 s, which leaves 1 s - POLL_MS
 *   for the claim's round trip and this test's probe. The first request of
 *   one of the dead daemon's jobs in the fake's log after the kill (a call
 *   of a job it was running or had queued, now made by a survivor) is
 *   reported beside it.
 *
 * Submits refused with store_unavailable while PostgreSQL restarts are sent
 * again after their retry_after_ms, and a wait, get or list answered
 * store_error (a read cut by the restart) is asked again a second later, as
 * a client would; both are counted in the figures.
 *
 * LOOM_CLUSTER_SEED=N replays the same plan (which daemon, the moments of
 * the kills and of the PostgreSQL restart); the timing of everything else
 * still varies. The test is one event loop over pipelined client
 * connections: no threads, every wait has a deadline. PostgreSQL comes from
 * tests/unit/pgtest.h (tests/pg/pg_cluster.sh), a cluster of the test's own
 * (it restarts it), stopped at the end; the test is skipped, saying why,
 * only when no PostgreSQL can be started. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"
#include "tests/unit/pgtest.h"

enum {
    NDAEMONS = 3,
    NJOBS = 3000,
    CALLS_PER_JOB = 3,
    NSTEPS = NJOBS * CALLS_PER_JOB,
    NCONNS = 2,             /* submit connections per daemon */
    WINDOW = 32,            /* submits outstanding per connection */
    LATENCY_MS = 100,       /* the fake server's answer delay */
    LEASE_MS = 2000,
    POLL_MS = 250,
    MAX_RUNNING = 32,       /* each daemon's max_running_jobs */
    CONCURRENCY = 128,      /* the provider's (shared): above what the daemons can run */
    NKILLS = 2,
    /* The first sends are paced over this long: 100 jobs a second, a third
     * of what three daemons run (MAX_RUNNING jobs of 3 x LATENCY_MS each at
     * once), so about ten jobs run on each daemon when it is killed, and
     * the survivors, at half of what they can run, have free slots to
     * claim its jobs with (a daemon claims only with no job queued of its
     * own). */
    SUBMIT_SPAN_MS = 30000,
    START_BOUND_MS = 30000, /* a restart resumes its jobs; under ASan too */
    PROBE_EVERY_MS = 20,    /* the takeover probe's period */
    ASK_WINDOW = 256,       /* waits and gets unanswered per connection at the end */
    TAKEOVER_BOUND_MS = LEASE_MS + 1000,
};

#define CLUSTER_WF                                                             \
    "loom: 1\nname: cluster\ndefaults: { provider: llm, model: m }\n"          \
    "do:\n  chain:\n"                                                          \
    "    - call: 'a {{ input.text }}'\n"                                       \
    "    - call: 'b {{ prev }}'\n"                                             \
    "    - call: 'c {{ prev }}'\n"

enum { K_NEW, K_SENT, K_ACKED };

typedef struct key_state {
    int state;
    int daemon, conn;      /* while K_SENT */
    int sends;
    int64_t not_before_ms; /* a store_unavailable reply's retry_after */
    int acked_by;          /* the daemon whose reply carried the job */
    bool existed;          /* that reply said the key was already taken */
    int64_t acked_us;
    char job[32];
} key_state;

typedef struct kill_rec {
    int64_t sent_us, dead_us;  /* around kill(SIGKILL) and its waitpid */
    int64_t life_start_us;     /* when the killed daemon had been started */
    int64_t restart_us;        /* when it was started again; 0: never */
    int64_t claim_us;          /* the first claim a survivor's stats showed; 0: none seen */
    int claim_node;            /* which survivor */
    long claim_base[NDAEMONS]; /* the survivors' claimed counts before the kill */
    long claimed;              /* jobs they claimed since, up to the restart or the end */
    int inflight_unread;       /* requests of the dead daemon answered after its death */
} kill_rec;

typedef struct cluster_run {
    lh_daemon d[NDAEMONS];
    bool up[NDAEMONS];
    lh_pipe conns[NDAEMONS][NCONNS];
    lh_pipe ask[NDAEMONS];     /* the connections of ask_all */
    key_state keys[NJOBS];
    kill_rec kills[NKILLS];
    int nkills;
    int victim;
    int64_t pg_start_us, pg_end_us;
    int first_sent, acked, sends, resent, existed;
    int error_replies, unavailable_replies;
    int read_retries;          /* waits and gets asked again after a store_error */
    int64_t last_unavailable_us;
    char last_error[256];
    bool stats_cluster;        /* the daemons' stats have cluster.claimed */
    int64_t t0_ms;
    char *db_uri;
    bool private_pg;           /* this test's own PostgreSQL cluster runs */
} cluster_run;

static cluster_run R;

static void teardown(void)
{
    for (int i = 0; i < NDAEMONS; i++) {
        for (int c = 0; c < NCONNS; c++) {
            if (R.conns[i][c].fd >= 0)
                close(R.conns[i][c].fd);
            free(R.conns[i][c].buf);
        }
        if (R.ask[i].fd >= 0)
            close(R.ask[i].fd);
        free(R.ask[i].buf);
    }
    /* the daemons first, the fake server (daemon 0's) last */
    for (int i = NDAEMONS - 1; i >= 0; i--)
        lh_teardown(&R.d[i]);
    free(R.db_uri);
    if (R.private_pg)
        pgtest_stop_private();
}

/* A moment in [LO, HI] of the submit span, as monotonic ms. */
static int64_t plan_at(uint64_t *rng, double lo, double hi)
{
    int64_t a = (int64_t)(lo * SUBMIT_SPAN_MS), b = (int64_t)(hi * SUBMIT_SPAN_MS);
    return R.t0_ms + a + (int64_t)(lh_rng_next(rng) % (uint64_t)(b - a + 1));
}

/* ---- submitting */

/* The connection is gone: its unanswered submits are sent again later, to
 * a daemon that is up, with the same idempotency keys. */
static void conn_lost(int i, int c)
{
    lh_pipe *p = &R.conns[i][c];
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->len = 0;
    p->pending = 0;
    for (int k = 0; k < NJOBS; k++)
        if (R.keys[k].state == K_SENT && R.keys[k].daemon == i && R.keys[k].conn == c)
            R.keys[k].state = K_NEW;
}

typedef struct reply_ctx {
    int daemon, conn;
} reply_ctx;

static void on_submit_reply(void *ud, json_t *r)
{
    const reply_ctx *ctx = ud;
    json_t *idv = json_object_get(r, "id");
    cr_assert(json_is_integer(idv), "a reply without our id: %s", json_dumps(r, 0));
    json_int_t k = json_integer_value(idv);
    cr_assert(k >= 0 && k < NJOBS && R.keys[k].state == K_SENT && R.keys[k].daemon == ctx->daemon &&
                  R.keys[k].conn == ctx->conn,
              "a reply to no pending submit: %s", json_dumps(r, 0));
    key_state *ks = &R.keys[k];
    R.conns[ctx->daemon][ctx->conn].pending--;
    if (json_is_true(json_object_get(r, "ok"))) {
        const char *job = json_string_value(json_object_get(r, "job"));
        cr_assert(job && strlen(job) == 26, "an ok submit without a job id: %s", json_dumps(r, 0));
        snprintf(ks->job, sizeof ks->job, "%s", job);
        ks->state = K_ACKED;
        ks->acked_by = ctx->daemon;
        ks->acked_us = lh_now_us();
        ks->existed = json_is_true(json_object_get(r, "existed"));
        R.existed += ks->existed;
        R.acked++;
        return;
    }
    json_t *err = json_object_get(r, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    ks->state = K_NEW;
    if (code && strcmp(code, "store_unavailable") == 0) {
        /* PostgreSQL restarting: the submit was not accepted; try again
         * after the hint, as a client should */
        json_int_t after = json_integer_value(json_object_get(err, "retry_after_ms"));
        ks->not_before_ms = lh_now_ms() + (after > 0 && after < 5000 ? after : 100);
        R.unavailable_replies++;
        R.last_unavailable_us = lh_now_us();
        return;
    }
    /* no other error is expected; count it, say what it was, and try again */
    char *s = json_dumps(r, JSON_COMPACT);
    snprintf(R.last_error, sizeof R.last_error, "daemon %d: %s", ctx->daemon, s ? s : "?");
    free(s);
    R.error_replies++;
    ks->not_before_ms = lh_now_ms() + 100;
}

/* The daemon key K goes to: its own (K mod 3) when up, else the next up. */
static int target_of(int k)
{
    for (int j = 0; j < NDAEMONS; j++) {
        int i = (k + j) % NDAEMONS;
        if (R.up[i])
            return i;
    }
    return -1;
}

/* Fills each live connection's window: retries first, then new keys as far
 * as the pace allows. */
static void fill_windows(void)
{
    int64_t t = lh_now_ms();
    int allowed = (int)((t - R.t0_ms) * NJOBS / SUBMIT_SPAN_MS) + 1;
    if (allowed > NJOBS)
        allowed = NJOBS;
    static char batch[NDAEMONS][NCONNS][WINDOW * 200];
    size_t blen[NDAEMONS][NCONNS] = { { 0 } };
    for (int k = 0; k < NJOBS; k++) {
        key_state *ks = &R.keys[k];
        if (ks->state != K_NEW || ks->not_before_ms > t)
            continue;
        if (ks->sends == 0 && R.first_sent >= allowed)
            break;
        int i = target_of(k);
        if (i < 0)
            return;
        int c = k / NDAEMONS % NCONNS;
        lh_pipe *p = &R.conns[i][c];
        if (p->fd < 0 || p->pending >= WINDOW)
            continue;
        blen[i][c] += (size_t)snprintf(batch[i][c] + blen[i][c], sizeof batch[i][c] - blen[i][c],
                                       "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"cluster\","
                                       "\"input\":{\"text\":\"k%04d\"},"
                                       "\"idempotency_key\":\"cluster-%04d\"}\n",
                                       k, k, k);
        ks->state = K_SENT;
        ks->daemon = i;
        ks->conn = c;
        R.first_sent += ks->sends == 0;
        R.resent += ks->sends > 0;
        ks->sends++;
        R.sends++;
        p->pending++;
    }
    for (int i = 0; i < NDAEMONS; i++)
        for (int c = 0; c < NCONNS; c++)
            if (blen[i][c] && !lh_send_all(R.conns[i][c].fd, batch[i][c], blen[i][c]))
                conn_lost(i, c); /* the daemon died under us: retried elsewhere */
}

/* One pass of the submit loop, waiting at most WAIT_MS for replies. */
static void pump_once(int wait_ms)
{
    for (int i = 0; i < NDAEMONS; i++)
        for (int c = 0; c < NCONNS; c++)
            if (R.up[i] && R.conns[i][c].fd < 0) {
                R.conns[i][c].fd = lh_connect(&R.d[i]);
                cr_assert(R.conns[i][c].fd >= 0, "cannot connect to daemon %d at %s", i,
                          R.d[i].sock);
                R.conns[i][c].len = 0;
                R.conns[i][c].pending = 0;
            }
    fill_windows();
    struct pollfd pf[NDAEMONS * NCONNS];
    for (int i = 0; i < NDAEMONS; i++)
        for (int c = 0; c < NCONNS; c++)
            pf[i * NCONNS + c] = (struct pollfd){ .fd = R.conns[i][c].fd, .events = POLLIN };
    int n = poll(pf, NDAEMONS * NCONNS, wait_ms);
    cr_assert(n >= 0 || errno == EINTR);
    for (int i = 0; i < NDAEMONS; i++)
        for (int c = 0; c < NCONNS; c++) {
            reply_ctx ctx = { i, c };
            if (R.conns[i][c].fd >= 0 && pf[i * NCONNS + c].revents &&
                !lh_pipe_read(&R.conns[i][c], on_submit_reply, &ctx))
                conn_lost(i, c);
        }
}

/* Runs the submit loop until UNTIL_MS (monotonic), or earlier once every
 * key is acknowledged when STOP_WHEN_ACKED. */
static void pump(int64_t until_ms, bool stop_when_acked)
{
    for (;;) {
        int64_t left = until_ms - lh_now_ms();
        if (left <= 0 || (stop_when_acked && R.acked == NJOBS))
            return;
        pump_once(left < 20 ? (int)left : 20);
    }
}

/* ---- the takeover probe: survivors' stats.cluster.claimed */

/* Daemon I's stats.cluster.claimed, or -1 (no reply, or no such member:
 * R.stats_cluster then turns false). */
static long claimed_of(int i)
{
    json_t *r = lh_call(&R.d[i], "{\"op\":\"stats\"}", 2000);
    json_t *v = json_object_get(json_object_get(r, "cluster"), "claimed");
    long n = json_is_integer(v) ? (long)json_integer_value(v) : -1;
    if (r && n < 0)
        R.stats_cluster = false;
    json_decref(r);
    return n;
}

/* Kills the victim with SIGKILL, reads what its sockets still held, then
 * pumps submits to the others while probing their claims every
 * PROBE_EVERY_MS, until one claimed or well past the bound (the test fails
 * later on a takeover not seen or late: the figures are printed first). */
static void kill_victim(void)
{
    cr_assert(R.nkills < NKILLS);
    kill_rec *kr = &R.kills[R.nkills++];
    int v = R.victim;
    for (int i = 0; i < NDAEMONS; i++)
        kr->claim_base[i] = i != v && R.up[i] ? claimed_of(i) : -1;
    kr->sent_us = lh_now_us();
    cr_assert_eq(lh_stop(&R.d[v], SIGKILL), 128 + SIGKILL, "daemon %d did not die of SIGKILL", v);
    kr->dead_us = lh_now_us();
    R.up[v] = false;
    /* replies already in the sockets did arrive: read them up to EOF */
    int64_t until = lh_now_ms() + 2000;
    for (int c = 0; c < NCONNS; c++) {
        while (R.conns[v][c].fd >= 0 && lh_now_ms() < until) {
            struct pollfd pf = { .fd = R.conns[v][c].fd, .events = POLLIN };
            reply_ctx ctx = { v, c };
            if (poll(&pf, 1, 100) <= 0 || !lh_pipe_read(&R.conns[v][c], on_submit_reply, &ctx))
                break;
        }
        conn_lost(v, c);
    }
    int64_t bound = kr->sent_us / 1000 + LEASE_MS + POLL_MS + 5000;
    while (R.stats_cluster && !kr->claim_us && lh_now_ms() < bound) {
        int64_t next = lh_now_ms() + PROBE_EVERY_MS;
        for (int i = 0; i < NDAEMONS && !kr->claim_us; i++) {
            if (i == v || !R.up[i] || kr->claim_base[i] < 0)
                continue;
            if (claimed_of(i) > kr->claim_base[i]) {
                kr->claim_us = lh_now_us();
                kr->claim_node = i;
            }
        }
        if (!kr->claim_us)
            pump(next, false);
    }
}

/* The jobs the survivors of the last kill claimed since it. */
static void count_claims(kill_rec *kr)
{
    kr->claimed = 0;
    for (int i = 0; i < NDAEMONS; i++) {
        long n = kr->claim_base[i] >= 0 && R.up[i] ? claimed_of(i) : -1;
        if (n > kr->claim_base[i])
            kr->claimed += n - kr->claim_base[i];
    }
}

/* ---- waiting for every job, from the survivors */

typedef struct ask_ctx {
    const char *op, *extra;
    json_t **out;              /* by key */
    int got;
    int64_t last_progress_ms;
    int64_t retry_at_ms[NJOBS]; /* a store_error to ask again: when (0: none) */
    int conn_of[NJOBS];
    int outstanding[NDAEMONS]; /* asked on each connection, not answered yet */
} ask_ctx;

static ask_ctx A;

static void on_job_reply(void *ud, json_t *r)
{
    (void)ud;
    json_int_t k = json_integer_value(json_object_get(r, "id"));
    cr_assert(k >= 0 && k < NJOBS && !A.out[k], "an unexpected reply: %s", json_dumps(r, 0));
    A.outstanding[A.conn_of[k]]--;
    const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
    if (code && strcmp(code, "store_error") == 0) {
        /* a read cut by PostgreSQL's restart fails once and reconnects at
         * the next call, at most once a second (store.h): ask again after
         * that second, as a client would */
        A.retry_at_ms[k] = lh_now_ms() + 1000;
        R.read_retries++;
        return;
    }
    A.out[k] = json_incref(r);
    A.got++;
    A.last_progress_ms = lh_now_ms();
}

static void ask_one(int k)
{
    char line[256];
    int n = snprintf(line, sizeof line, "{\"id\":%d,\"op\":\"%s\",\"job\":\"%s\"%s}\n", k, A.op,
                     R.keys[k].job, A.extra);
    cr_assert(n > 0 && (size_t)n < sizeof line);
    cr_assert(lh_send_all(R.ask[A.conn_of[k]].fd, line, (size_t)n), "cannot send to a daemon");
    A.outstanding[A.conn_of[k]]++;
}

/* What the daemons that are up say they hold, for a failure's message. */
static void describe_daemons(char *out, size_t len)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < NDAEMONS && at < len; i++) {
        if (!R.up[i])
            continue;
        json_t *r = lh_call(&R.d[i], "{\"op\":\"stats\"}", 5000);
        json_t *sel = json_pack("{s:O?, s:O?, s:O?}", "jobs", json_object_get(r, "jobs"),
                                "providers", json_object_get(r, "providers"), "cluster",
                                json_object_get(r, "cluster"));
        char *t = sel ? json_dumps(sel, JSON_COMPACT) : NULL;
        at += (size_t)snprintf(out + at, len - at, " daemon %d: %.600s;", i, t ? t : "no stats");
        free(t);
        json_decref(sel);
        json_decref(r);
    }
}

/* Sends OP for every acknowledged job to the daemons that are up (job K to
 * the (K + SHIFT)-th of them in turn, whatever daemon runs it) and collects
 * the replies by key into OUT. Fails the test when no reply comes for
 * STALL_MS, or past DEADLINE_MS (monotonic). */
static void ask_all(const char *op, const char *extra, json_t **out, int shift, int64_t stall_ms,
                    int64_t deadline_ms)
{
    int live[NDAEMONS], nlive = 0;
    for (int i = 0; i < NDAEMONS; i++)
        if (R.up[i])
            live[nlive++] = i;
    cr_assert(nlive > 0);
    memset(&A, 0, sizeof A);
    A.op = op;
    A.extra = extra;
    A.out = out;
    for (int j = 0; j < nlive; j++) {
        R.ask[j].fd = lh_connect(&R.d[live[j]]);
        R.ask[j].len = 0;
        cr_assert(R.ask[j].fd >= 0, "cannot connect to daemon %d", live[j]);
    }
    for (int k = 0; k < NJOBS; k++)
        A.conn_of[k] = (k + shift) % nlive;
    /* at most ASK_WINDOW requests unanswered per connection: sending is
     * blocking, so a daemon whose replies this loop is not reading must
     * never be left unable to take the rest */
    int next = 0;
    A.last_progress_ms = lh_now_ms();
    while (A.got < NJOBS) {
        for (; next < NJOBS && A.outstanding[A.conn_of[next]] < ASK_WINDOW; next++)
            ask_one(next);
        int64_t t = lh_now_ms();
        if (t - A.last_progress_ms >= stall_ms || t >= deadline_ms) {
            char what[4096];
            describe_daemons(what, sizeof what);
            cr_assert_fail("%s: %d of %d replies; none for %" PRId64 " ms (bound %" PRId64
                           " ms), %" PRId64 " ms past the deadline;%s",
                           op, A.got, NJOBS, t - A.last_progress_ms, stall_ms,
                           t > deadline_ms ? t - deadline_ms : 0, what);
        }
        for (int k = 0; k < NJOBS; k++)
            if (A.retry_at_ms[k] && A.retry_at_ms[k] <= t) {
                A.retry_at_ms[k] = 0;
                ask_one(k);
            }
        struct pollfd pf[NDAEMONS];
        for (int j = 0; j < nlive; j++)
            pf[j] = (struct pollfd){ .fd = R.ask[j].fd, .events = POLLIN };
        int n = poll(pf, (nfds_t)nlive, 100);
        cr_assert(n >= 0 || errno == EINTR);
        for (int j = 0; j < nlive; j++)
            if (pf[j].revents)
                cr_assert(lh_pipe_read(&R.ask[j], on_job_reply, NULL),
                          "daemon %d closed the connection after %d of %d replies", live[j], A.got,
                          NJOBS);
    }
    for (int j = 0; j < nlive; j++) {
        close(R.ask[j].fd);
        R.ask[j].fd = -1;
    }
}

/* ---- the fake server's log */

typedef struct request {
    char step[64];             /* "kNNNN\tKEY" */
    int k;                     /* the job's key index */
    int64_t rx_us, tx_us;      /* received, answered */
    bool delivered;
    int status;
} request;

static int cmp_request(const void *a, const void *b)
{
    const request *x = a, *y = b;
    int c = strcmp(x->step, y->step);
    if (c)
        return c;
    return (x->rx_us > y->rx_us) - (x->rx_us < y->rx_us);
}

/* Every chat request of the log at PATH, sorted by step then arrival, into
 * *OUT (owned); returns their number. Every request must carry a step key
 * and echo a job's input ("c b a kNNNN" ends with it). */
static size_t read_requests(const char *path, request **out)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "no fake server log at %s", path);
    request *a = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "an unparsable fake log line: %s", line);
        const char *key = json_string_value(json_object_get(j, "key"));
        const char *echo = json_string_value(json_object_get(j, "echo"));
        cr_assert(key && echo, "a request without a Loom-Step-Key: %s", line);
        size_t el = strlen(echo);
        int k = el >= 5 && echo[el - 5] == 'k' ? atoi(echo + el - 4) : -1;
        cr_assert(k >= 0 && k < NJOBS, "a request for no job: %s", line);
        if (n == cap) {
            cap = cap ? cap * 2 : 16384;
            a = realloc(a, cap * sizeof *a);
            cr_assert(a);
        }
        a[n] = (request){ .k = k,
                          .rx_us = json_integer_value(json_object_get(j, "received_us")),
                          .tx_us = json_integer_value(json_object_get(j, "answered_us")),
                          .delivered = json_is_true(json_object_get(j, "delivered")),
                          .status = (int)json_integer_value(json_object_get(j, "status")) };
        cr_assert((size_t)snprintf(a[n].step, sizeof a[n].step, "k%04d\t%s", k, key) <
                      sizeof a[n].step, "a step key too long: %s", key);
        n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    qsort(a, n, sizeof *a, cmp_request);
    *out = a;
    return n;
}

/* What the log says. */
typedef struct log_figures {
    size_t requests;
    int steps;                 /* distinct (job, key) */
    int not_ok;                /* answers other than 200 */
    int resent_keys;           /* steps asked for more than once */
    int extra_requests;        /* requests past each step's first */
    int resent_at[NKILLS];     /* re-sent keys explained by each kill */
    int unread_at[NKILLS];     /* ... whose first answer nobody read */
    int unjustified;           /* re-sent with no kill between */
    int unjustified_pg;        /* ... of which around PostgreSQL's restart (a lease lost?) */
    char first_bad[256];
    int undelivered_unexplained; /* answers nobody read, with no kill then */
    int64_t first_takeover_us[NKILLS]; /* first request of a dead daemon's job after the kill */
} log_figures;

/* The kill between two requests of a step (PREV before the death, NEXT
 * after the kill was sent), or -1. */
static int kill_between(const request *prev, const request *next)
{
    for (int k = 0; k < R.nkills; k++)
        if (prev->rx_us < R.kills[k].dead_us && next->rx_us > R.kills[k].sent_us)
            return k;
    return -1;
}

/* Whether K (a key index) was the victim's job at kill KI: acknowledged by
 * it as a new job during the life the kill ended. */
static bool victims_job(int k, int ki)
{
    const key_state *ks = &R.keys[k];
    const kill_rec *kr = &R.kills[ki];
    return ks->acked_by == R.victim && !ks->existed && ks->acked_us >= kr->life_start_us &&
           ks->acked_us <= kr->sent_us;
}

static void count_log(const request *a, size_t n, log_figures *f)
{
    memset(f, 0, sizeof *f);
    f->requests = n;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(a[j].step, a[i].step) == 0)
            j++;
        f->steps++;
        if (j - i > 1) {
            f->resent_keys++;
            f->extra_requests += (int)(j - i - 1);
            bool counted[NKILLS] = { false };
            for (size_t m = i + 1; m < j; m++) {
                int k = kill_between(&a[m - 1], &a[m]);
                if (k < 0) {
                    f->unjustified_pg += a[m - 1].rx_us < R.pg_end_us + LEASE_MS * 1000 &&
                                         a[m].rx_us > R.pg_start_us;
                    if (!f->unjustified++)
                        snprintf(f->first_bad, sizeof f->first_bad,
                                 "step '%s' asked at %" PRId64 " us and again at %" PRId64
                                 " us with no kill between",
                                 a[i].step, a[m - 1].rx_us, a[m].rx_us);
                } else if (!counted[k]) {
                    counted[k] = true;
                    f->resent_at[k]++;
                    f->unread_at[k] += !a[m - 1].delivered;
                }
            }
        }
        i = j;
    }
    for (int k = 0; k < R.nkills; k++)
        f->first_takeover_us[k] = 0;
    for (size_t i = 0; i < n; i++) {
        f->not_ok += a[i].status != 200;
        if (!a[i].delivered) {
            bool explained = false;
            for (int k = 0; k < R.nkills && !explained; k++)
                if (a[i].rx_us < R.kills[k].dead_us && a[i].tx_us >= R.kills[k].sent_us) {
                    explained = true;
                    R.kills[k].inflight_unread++;
                }
            f->undelivered_unexplained += !explained;
        }
        for (int k = 0; k < R.nkills; k++) {
            const kill_rec *kr = &R.kills[k];
            if (a[i].rx_us > kr->dead_us && (!kr->restart_us || a[i].rx_us < kr->restart_us) &&
                victims_job(a[i].k, k) &&
                (!f->first_takeover_us[k] || a[i].rx_us < f->first_takeover_us[k]))
                f->first_takeover_us[k] = a[i].rx_us;
        }
    }
}

/* ---- the test */

/* Sets daemon I up on the shared database, its own directory, socket and
 * workflows; PROVIDERS names the shared fake server (daemon 0 starts it). */
static void setup_daemon(int i, const char *providers, const char *const *fake_args)
{
    lh_daemon *d = &R.d[i];
    lh_setup(d, providers, fake_args);
    lh_workflow(d, "cluster", CLUSTER_WF);
    char node[16], fields[64], extra[64];
    snprintf(node, sizeof node, "n%d", i);
    snprintf(fields, sizeof fields, "lease: %dms, poll: %dms", LEASE_MS, POLL_MS);
    snprintf(extra, sizeof extra, "max_running_jobs: %d\n", MAX_RUNNING);
    lh_use_pg(d, R.db_uri, node, fields, extra);
    /* 3,000 jobs' debug lines cost the daemons CPU the test needs */
    lh_config_replace(d, "log: { level: debug }", "log: { level: info }");
}

static void start_daemon(int i)
{
    lh_spawn(&R.d[i]);
    int st = lh_wait_listening(&R.d[i], START_BOUND_MS);
    cr_assert(st == 0, "daemon %d exited at start (status %d); see %s/loomd.log", i, st, R.d[i].dir);
    R.up[i] = true;
}

Test(cluster, three_daemons_kills_and_a_postgresql_restart, .fini = teardown, .timeout = 400)
{
    for (int i = 0; i < NDAEMONS; i++) {
        for (int c = 0; c < NCONNS; c++)
            R.conns[i][c].fd = -1;
        R.ask[i].fd = -1;
    }
    R.stats_cluster = true;
    if (!pgtest_admin_uri())
        cr_skip_test("no PostgreSQL for the cluster test (see the reason above)");
    /* a cluster of its own: the restart below must not cut the tests
     * running beside this one on the shared cluster */
    cr_assert(pgtest_private_cluster("loomd-cluster"), "no PostgreSQL cluster of this test's own");
    R.private_pg = true;
    R.db_uri = pgtest_fresh_db("loomd_cluster");
    cr_assert(R.db_uri, "cannot create a database for the cluster test");

    const char *env = getenv("LOOM_CLUSTER_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0)
                        : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint64_t rng = seed;
    fprintf(stderr, "test_loomd_cluster: seed %" PRIu64 " (LOOM_CLUSTER_SEED=%" PRIu64
                    " to reuse it)\n", seed, seed);
    cr_log_info("test_loomd_cluster: seed %" PRIu64, seed);

    /* ---- one fake provider, three daemons */
    char lat[16], prov[512], url[64];
    snprintf(lat, sizeof lat, "%d", LATENCY_MS);
    snprintf(prov, sizeof prov,
             "  llm: { plugin: openai, base_url: \"@FAKE@\", limits: { concurrency: %d } }\n",
             CONCURRENCY);
    setup_daemon(0, prov, (const char *const[]){ "--latency", lat, "--log", "@DIR@/fake.log",
                                                 "--max-seconds", "600", NULL });
    fake_server_base_url(&R.d[0].fake, url, sizeof url);
    snprintf(prov, sizeof prov,
             "  llm: { plugin: openai, base_url: \"%s\", limits: { concurrency: %d } }\n", url,
             CONCURRENCY);
    for (int i = 1; i < NDAEMONS; i++)
        setup_daemon(i, prov, NULL);
    int64_t t_start = lh_now_ms();
    /* the first alone: it runs the schema's migrations */
    for (int i = 0; i < NDAEMONS; i++)
        start_daemon(i);

    /* ---- the plan, from the seed */
    R.victim = (int)(lh_rng_next(&rng) % NDAEMONS);
    R.t0_ms = lh_now_ms();
    int64_t t_kill1 = plan_at(&rng, 0.15, 0.35);
    int64_t t_pg = plan_at(&rng, 0.45, 0.60);
    int64_t t_kill2 = plan_at(&rng, 0.70, 0.90);
    char plan[256];
    snprintf(plan, sizeof plan,
             "plan: kill daemon %d at %.1f s, restart PostgreSQL at %.1f s, kill daemon %d again"
             " at %.1f s (of a %d s submit span)",
             R.victim, (double)(t_kill1 - R.t0_ms) / 1000, (double)(t_pg - R.t0_ms) / 1000,
             R.victim, (double)(t_kill2 - R.t0_ms) / 1000, SUBMIT_SPAN_MS / 1000);
    fprintf(stderr, "test_loomd_cluster: %s\n", plan);
    cr_log_info("%s", plan);
    R.kills[0].life_start_us = lh_now_us();

    /* ---- submit, kill, take over, restart; PostgreSQL; kill again */
    pump(t_kill1, false);
    kill_victim();
    /* a poll more for the others to claim the rest, then it comes back and
     * resumes what is still its own */
    pump(lh_now_ms() + POLL_MS, false);
    count_claims(&R.kills[0]);
    R.kills[0].restart_us = lh_now_us();
    start_daemon(R.victim);
    R.kills[1].life_start_us = lh_now_us();

    pump(t_pg, false);
    R.pg_start_us = lh_now_us();
    int pg_rc = pgtest_restart();
    R.pg_end_us = lh_now_us();
    cr_assert_eq(pg_rc, 0, "PostgreSQL did not restart");

    pump(t_kill2, false);
    kill_victim();

    /* ---- every key acknowledged (by the survivors) */
    pump(R.t0_ms + SUBMIT_SPAN_MS + 60000, true);
    cr_assert_eq(R.acked, NJOBS, "%d of %d submits acknowledged within 60 s after the span"
                                 " (%d error replies, last: %s)",
                 R.acked, NJOBS, R.error_replies, R.last_error);
    for (int i = 0; i < NDAEMONS; i++)
        for (int c = 0; c < NCONNS; c++)
            conn_lost(i, c);
    int64_t t_acked = lh_now_ms();
    count_claims(&R.kills[1]);

    /* ---- every job's end, from the survivors. The deadline follows from
     * the work left at the rate the cluster ran so far: the calls the fake
     * answered per second since the start, two daemons of three left (x
     * 1.5), twice that for the machine's noise, plus a lease and a poll for
     * jobs of the dead daemon not claimed yet; no reply at all for a lease,
     * a poll and the slowest job's three calls' worth of seconds means
     * something is stuck. */
    long chat = fake_server_stat(&R.d[0].fake, "chat");
    double secs = (double)(lh_now_ms() - R.t0_ms) / 1000;
    double rate = chat > 0 && secs > 0 ? (double)chat / secs : 1;
    double left = (double)(NSTEPS - (chat < NSTEPS ? chat : NSTEPS));
    int64_t wait_deadline =
        lh_now_ms() + (int64_t)(left / rate * 1.5 * 2 * 1000) + LEASE_MS + POLL_MS + 10000;
    int64_t stall = LEASE_MS + POLL_MS + 10000;
    static json_t *waits[NJOBS], *gets[NJOBS];
    ask_all("wait", ",\"timeout\":300", waits, 0, stall, wait_deadline);
    int64_t t_done = lh_now_ms();
    /* each job's get from another survivor than its wait's */
    ask_all("get", "", gets, 1, stall, lh_now_ms() + 60000);

    int succeeded = 0, wrong_output = 0, got_differs = 0, moved = 0, epoch_max = 0;
    int by_node[NDAEMONS] = { 0 };
    char first_bad[512] = "";
    for (int k = 0; k < NJOBS; k++) {
        json_t *wj = json_object_get(waits[k], "job"), *gj = json_object_get(gets[k], "job");
        const char *state = json_string_value(json_object_get(wj, "state"));
        const char *out = json_string_value(json_object_get(wj, "output"));
        const char *gstate = json_string_value(json_object_get(gj, "state"));
        const char *gout = json_string_value(json_object_get(gj, "output"));
        char want[64];
        snprintf(want, sizeof want, "c b a k%04d", k);
        bool ok = json_is_true(json_object_get(waits[k], "ok")) &&
                  !json_is_true(json_object_get(waits[k], "timed_out")) && state &&
                  strcmp(state, "succeeded") == 0;
        succeeded += ok;
        if (ok && (!out || strcmp(out, want) != 0))
            wrong_output++;
        bool same = json_is_true(json_object_get(gets[k], "ok")) && gstate && state &&
                    strcmp(gstate, state) == 0 && gout && out && strcmp(gout, out) == 0;
        got_differs += !same;
        if ((!ok || !out || strcmp(out, want) != 0 || !same) && !first_bad[0]) {
            char *s = json_dumps(waits[k], JSON_COMPACT), *g = json_dumps(gets[k], JSON_COMPACT);
            snprintf(first_bad, sizeof first_bad, "key %d (want \"%s\"): wait %.200s get %.200s", k,
                     want, s ? s : "?", g ? g : "?");
            free(s);
            free(g);
        }
        const char *node = json_string_value(json_object_get(gj, "node"));
        if (node && node[0] == 'n' && node[1] >= '0' && node[1] < '0' + NDAEMONS) {
            by_node[node[1] - '0']++;
            moved += node[1] - '0' != R.keys[k].acked_by;
        }
        json_t *ep = json_object_get(gj, "epoch");
        if (json_is_integer(ep) && json_integer_value(ep) > epoch_max)
            epoch_max = (int)json_integer_value(ep);
        json_decref(waits[k]);
        json_decref(gets[k]);
    }

    /* ---- distinct jobs in the store, paging through `list` on a survivor */
    int asker = R.up[0] ? 0 : 1;
    static const char *acked_ids[NJOBS];
    for (int k = 0; k < NJOBS; k++)
        acked_ids[k] = R.keys[k].job;
    lh_listed ls;
    lh_list_count(&R.d[asker], "cluster", 1000, acked_ids, NJOBS, &ls);
    int nlisted = ls.listed, distinct = ls.distinct, acked_listed = ls.found;
    R.read_retries += ls.retries;

    /* ---- what the provider was asked, step by step: the fake holds no
     * answer any more once its in_flight is 0, so its log is complete */
    int64_t idle_until = lh_now_ms() + 10000;
    long inflight;
    while ((inflight = fake_server_stat(&R.d[0].fake, "in_flight")) != 0) {
        cr_assert(lh_now_ms() < idle_until, "the fake server still holds %ld answers after 10 s",
                  inflight);
        poll(NULL, 0, 10); /* the interval of a loop that tests the state itself */
    }
    chat = fake_server_stat(&R.d[0].fake, "chat");
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/fake.log", R.d[0].dir);
    request *reqs = NULL;
    size_t nreq = read_requests(log_path, &reqs);
    log_figures lf;
    count_log(reqs, nreq, &lf);
    free(reqs);

    /* ---- the figures */
    double elapsed = (double)(lh_now_ms() - t_start) / 1000.0;
    char per_kill[NKILLS * 200] = "";
    size_t pk = 0;
    int bound_resent = MAX_RUNNING * R.nkills;
    for (int k = 0; k < R.nkills; k++) {
        const kill_rec *kr = &R.kills[k];
        double claim_ms = kr->claim_us ? (double)(kr->claim_us - kr->sent_us) / 1000 : -1;
        double call_ms = lf.first_takeover_us[k]
                             ? (double)(lf.first_takeover_us[k] - kr->sent_us) / 1000 : -1;
        pk += (size_t)snprintf(per_kill + pk, sizeof per_kill - pk,
                               "\n    kill %d at %.1f s: first claim %.0f ms after it (by daemon %d; %ld"
                               " jobs claimed in all), first call of its jobs by another %.0f ms"
                               " after; %d keys re-sent (%d never read), %d requests in flight"
                               " unread",
                               k + 1, (double)(kr->sent_us / 1000 - R.t0_ms) / 1000, claim_ms,
                               kr->claim_node, kr->claimed, call_ms, lf.resent_at[k],
                               lf.unread_at[k], kr->inflight_unread);
    }
    char unavailable[96] = "";
    if (R.unavailable_replies)
        snprintf(unavailable, sizeof unavailable, ", the last %.1f s after PostgreSQL's restart began",
                 (double)(R.last_unavailable_us - R.pg_start_us) / 1e6);
    char block[4096];
    snprintf(block, sizeof block,
             "test_loomd_cluster figures:\n"
             "  jobs acknowledged    %d (%d submits sent, %d of them again with the same key after a"
             " kill or a store_unavailable;"
             " %d answered \"existed\"; %d store_unavailable replies%s)\n"
             "  succeeded            %d of %d (%d with a wrong output, %d where get and wait differ;"
             " %d reads asked again after a store_error)\n"
             "  distinct jobs        %d listed for %d idempotency keys (%d acknowledged ids among them)\n"
             "  owners at the end    n0 %d, n1 %d, n2 %d; %d jobs ended on another daemon than the"
             " one that took them; highest epoch %d\n"
             "  calls                %ld received (%d expected), %d distinct steps, %d answers not 200\n"
             "  re-sent keys         %d (bound %d = max_running %d x %d kills), %d extra requests,"
             " %d unjustified (%d around PostgreSQL's restart)%s%s; %d answers nobody read with"
             " no kill then\n"
             "  takeover             bound %d ms (lease %d ms + 1 s; poll %d ms)%s%s\n"
             "  PostgreSQL restart   at %.1f s, took %.0f ms\n"
             "  seed                 %" PRIu64 " (LOOM_CLUSTER_SEED); victim daemon %d\n"
             "  elapsed              %.1f s (all acknowledged at %.1f s, all done at %.1f s)\n"
             "  logs                 %s/loomd.log, %s/fake.log ... (kept with LOOM_KEEP_TMP=1)\n",
             R.acked, R.sends, R.resent, R.existed, R.unavailable_replies, unavailable,
             succeeded, NJOBS, wrong_output, got_differs, R.read_retries, distinct, NJOBS, acked_listed, by_node[0],
             by_node[1], by_node[2], moved, epoch_max, chat, NSTEPS, lf.steps, lf.not_ok,
             lf.resent_keys, bound_resent, MAX_RUNNING, R.nkills, lf.extra_requests, lf.unjustified,
             lf.unjustified_pg, lf.unjustified ? ": " : "", lf.first_bad, lf.undelivered_unexplained, TAKEOVER_BOUND_MS,
             LEASE_MS, POLL_MS, R.stats_cluster ? "" : " (no stats.cluster: measured by the fake's log)",
             per_kill, (double)(R.pg_start_us / 1000 - R.t0_ms) / 1000,
             (double)(R.pg_end_us - R.pg_start_us) / 1000, seed, R.victim, elapsed,
             (double)(t_acked - t_start) / 1000.0, (double)(t_done - t_start) / 1000.0, R.d[0].dir,
             R.d[0].dir);
    fputs(block, stderr);
    cr_log_info("%s", block);

    cr_assert_eq(R.error_replies, 0, "%d submits were refused; the last: %s", R.error_replies,
                 R.last_error);
    cr_assert_eq(R.nkills, NKILLS);
    cr_assert_eq(succeeded, NJOBS, "%d jobs did not succeed; first: %s", NJOBS - succeeded,
                 first_bad);
    cr_assert_eq(wrong_output, 0, "%d jobs have a wrong output; first: %s", wrong_output, first_bad);
    cr_assert_eq(got_differs, 0, "%d jobs' get differs from their wait; first: %s", got_differs,
                 first_bad);
    cr_assert_eq(distinct, nlisted, "the list shows a job twice");
    cr_assert_eq(acked_listed, NJOBS, "acknowledged jobs missing from the list");
    cr_assert_eq(distinct, NJOBS, "%d jobs in the store for %d idempotency keys", distinct, NJOBS);
    cr_assert_eq((long)lf.requests, chat, "the log holds %zu requests, the fake counted %ld",
                 lf.requests, chat);
    cr_assert_eq(lf.steps, NSTEPS, "%d distinct steps asked for, %d expected", lf.steps, NSTEPS);
    cr_assert_eq(lf.not_ok, 0, "%d answers were not 200", lf.not_ok);
    cr_assert_eq(lf.unjustified, 0, "%d steps were asked for again with no kill between; first: %s",
                 lf.unjustified, lf.first_bad);
    cr_assert_eq(lf.undelivered_unexplained, 0, "%d answers nobody read with no kill to explain it",
                 lf.undelivered_unexplained);
    cr_assert_leq(lf.resent_keys, bound_resent, "%d keys re-sent, more than %d in flight at %d kills",
                  lf.resent_keys, bound_resent, R.nkills);
    for (int k = 0; k < R.nkills; k++) {
        const kill_rec *kr = &R.kills[k];
        int64_t seen = R.stats_cluster ? kr->claim_us : lf.first_takeover_us[k];
        cr_assert(seen > 0, "kill %d: no takeover seen (%s)", k + 1,
                  R.stats_cluster ? "no survivor's claimed count went up" : "no call of its jobs");
        cr_assert_leq((seen - kr->sent_us) / 1000, TAKEOVER_BOUND_MS,
                      "kill %d: the first claim came %" PRId64 " ms after it, over %d ms", k + 1,
                      (seen - kr->sent_us) / 1000, TAKEOVER_BOUND_MS);
    }
}
