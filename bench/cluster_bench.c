/* cluster_bench.c -- durable submits and whole jobs per second over one or
 * more loomd (several sharing one PostgreSQL store, or one on SQLite).
 *
 *   cluster_bench --socket PATH [--socket PATH ...] [--count 20000]
 *                 [--connections 4] [--window 16] [--workflow bench]
 *                 [--max-seconds 300]
 *
 * CONNECTIONS connections to each daemon (so the load grows with the
 * daemons, as it does when clients spread over them), each keeping up to
 * WINDOW `submit` requests in flight, pipelined; COUNT jobs in all. A reply
 * means the job is committed (docs/protocol.md), so submits/s is durable
 * submits: COUNT over the time from the first send to the last reply.
 * As soon as a submit is acknowledged, a `wait` for its job goes on the same
 * connection, to the daemon that took the job and runs it; jobs/s is COUNT
 * over the time from the first send to the last job's end (the last wait's
 * reply), every job checked to have succeeded. The jobs run while the
 * submits arrive, as they would in service.
 *
 * One poll loop, no threads. Bounded by --max-seconds whatever happens.
 * Prints one JSON line, with what the daemons' `stats` say after the run
 * summed over them (store transactions, claim round trips, the shared
 * limits' lease and return round trips, provider requests; 0 where a daemon
 * has no such counter, as one on SQLite has no cluster). Exit status: 0 when every job was acknowledged and
 * succeeded, 1 otherwise, 2 on bad usage or setup. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench/bench_util.h"

#define MAX_SOCKETS 16

typedef struct conn {
    int fd;
    char *out;               /* requests not yet taken by the socket */
    size_t out_len, out_cap;
    char *in;                /* a partial reply line carried over */
    size_t in_len, in_cap;
    int submits;             /* submits in flight */
    int waits;               /* waits in flight */
} conn;

typedef struct run {
    const char *sockets[MAX_SOCKETS];
    int nsockets, connections, window;
    long count;
    double max_seconds;
    const char *workflow;
    conn *conns;
    int nconns;
    long sent, acked, refused, ended, succeeded, failed;
    char first_error[256];
    double t0_us, last_ack_us, last_end_us;
} run;

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "cluster_bench: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static void out_add(conn *c, const char *s, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 16384;
        while (cap < c->out_len + n)
            cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out)
            die("out of memory", NULL);
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void flush(conn *c)
{
    int err = bench_flush(c->fd, c->out, &c->out_len, MSG_DONTWAIT);
    if (err)
        die("send failed (did a loomd stop?)", strerror(err));
}

/* Submits on C while its window and the count allow; the id is the job's
 * number, its sign tells submits (>= 0) from waits (< 0) apart. */
static void fill(run *r, conn *c)
{
    char line[512];
    while (c->submits < r->window && r->sent < r->count) {
        long id = r->sent++;
        int n = snprintf(line, sizeof line,
                         "{\"id\":%ld,\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"n\":%ld}}\n",
                         id, r->workflow, id);
        out_add(c, line, (size_t)n);
        c->submits++;
    }
}

static void note_error(run *r, const char *line, size_t len)
{
    if (!r->first_error[0])
        snprintf(r->first_error, sizeof r->first_error, "%.*s", (int)(len > 200 ? 200 : len), line);
}

static void on_reply(run *r, conn *c, const char *line, size_t len)
{
    json_t *j = json_loadb(line, len, 0, NULL);
    json_t *idv = json_object_get(j, "id");
    if (!json_is_integer(idv))
        die("a reply without our id", NULL);
    long id = (long)json_integer_value(idv);
    double now = bench_now_us();
    bool ok = json_is_true(json_object_get(j, "ok"));
    if (id >= 0) { /* a submit's reply: wait for its job on the same daemon */
        c->submits--;
        const char *job = json_string_value(json_object_get(j, "job"));
        if (!ok || !job || strlen(job) > 64) {
            r->refused++;
            note_error(r, line, len);
            json_decref(j);
            return;
        }
        r->acked++;
        r->last_ack_us = now;
        char w[160];
        int n = snprintf(w, sizeof w, "{\"id\":%ld,\"op\":\"wait\",\"job\":\"%s\"}\n", -1 - id, job);
        out_add(c, w, (size_t)n);
        c->waits++;
        json_decref(j);
        return;
    }
    c->waits--;
    r->ended++;
    r->last_end_us = now;
    const char *state = json_string_value(json_object_get(json_object_get(j, "job"), "state"));
    if (ok && state && strcmp(state, "succeeded") == 0) {
        r->succeeded++;
    } else {
        r->failed++;
        note_error(r, line, len);
    }
    json_decref(j);
}

static void on_readable(run *r, conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 262144;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in)
                die("out of memory", NULL);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            die("loomd closed a connection", NULL);
        c->in_len += (size_t)n;
        char *start = c->in, *nl;
        while ((nl = memchr(start, '\n', (size_t)(c->in + c->in_len - start)))) {
            on_reply(r, c, start, (size_t)(nl - start));
            start = nl + 1;
        }
        c->in_len -= (size_t)(start - c->in);
        memmove(c->in, start, c->in_len);
    }
}

static int connect_to(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path)
        die("socket path too long", path);
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("cannot connect", path);
    return fd;
}

/* A counter at PATH (members separated by '.') of J, or 0. */
static double counter(json_t *j, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *m = strtok_r(buf, ".", &save); m; m = strtok_r(NULL, ".", &save))
        j = json_object_get(j, m);
    return json_is_number(j) ? json_number_value(j) : 0;
}

/* What the daemons' `stats` say after the run, summed over them: the
 * store's transactions, the cluster's claim round trips and polls, the
 * shared limits' lease and return round trips and the calls they admitted,
 * and the requests sent to providers (docs/protocol.md, stats). */
typedef struct totals {
    double transactions, polls, claims, leases, returns, limit_calls, requests;
} totals;

static void gather_stats(const run *r, totals *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < r->nsockets; i++) {
        int fd = connect_to(r->sockets[i]);
        const char *req = "{\"id\":0,\"op\":\"stats\"}\n";
        if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
            die("cannot ask for stats", r->sockets[i]);
        char *buf = NULL;
        size_t len = 0, cap = 0;
        double until = bench_now_us() + 10e6;
        while (!memchr(buf ? buf : "", '\n', len) && bench_now_us() < until) {
            if (cap - len < 65536 && !(buf = realloc(buf, cap = cap * 2 + 65536)))
                die("out of memory", NULL);
            struct pollfd pf = { .fd = fd, .events = POLLIN };
            if (poll(&pf, 1, 1000) <= 0)
                continue;
            ssize_t n = recv(fd, buf + len, cap - len, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        json_t *j = buf ? json_loadb(buf, len, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
        if (!j)
            die("no stats from", r->sockets[i]);
        t->transactions += counter(j, "store.transactions");
        t->polls += counter(j, "cluster.polls");
        t->claims += counter(j, "cluster.claims");
        t->leases += counter(j, "cluster.limits.leases");
        t->returns += counter(j, "cluster.limits.returns");
        t->limit_calls += counter(j, "cluster.limits.calls");
        const char *name;
        json_t *p;
        json_object_foreach(json_object_get(j, "providers"), name, p)
            t->requests += counter(p, "requests");
        json_decref(j);
        free(buf);
        close(fd);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: cluster_bench --socket PATH [--socket PATH ...] [--count N]\n"
                    "                     [--connections N] [--window N] [--workflow NAME]\n"
                    "                     [--max-seconds S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static run r = { .connections = 4, .window = 16, .count = 20000, .max_seconds = 300,
                     .workflow = "bench" };
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },      { "count", required_argument, NULL, 'n' },
        { "connections", required_argument, NULL, 'c' }, { "window", required_argument, NULL, 'w' },
        { "workflow", required_argument, NULL, 'f' },    { "max-seconds", required_argument, NULL, 'm' },
        { NULL, 0, NULL, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            if (r.nsockets == MAX_SOCKETS)
                usage();
            r.sockets[r.nsockets++] = optarg;
            break;
        case 'n': r.count = atol(optarg); break;
        case 'c': r.connections = atoi(optarg); break;
        case 'w': r.window = atoi(optarg); break;
        case 'f': r.workflow = optarg; break;
        case 'm': r.max_seconds = atof(optarg); break;
        default: usage();
        }
    }
    if (!r.nsockets || optind != argc || r.count < 1 || r.connections < 1 ||
        r.connections > 1000 || r.window < 1 || r.max_seconds <= 0 ||
        strlen(r.workflow) > 200 || strpbrk(r.workflow, "\"\\"))
        usage();

    r.nconns = r.nsockets * r.connections;
    r.conns = calloc((size_t)r.nconns, sizeof *r.conns);
    struct pollfd *pf = calloc((size_t)r.nconns, sizeof *pf);
    if (!r.conns || !pf)
        die("out of memory", NULL);
    for (int i = 0; i < r.nconns; i++)
        r.conns[i].fd = connect_to(r.sockets[i % r.nsockets]);

    r.t0_us = bench_now_us();
    double hard_stop = r.t0_us + r.max_seconds * 1e6;
    while (r.ended + r.refused < r.count && bench_now_us() < hard_stop) {
        for (int i = 0; i < r.nconns; i++) {
            fill(&r, &r.conns[i]);
            if (r.conns[i].out_len)
                flush(&r.conns[i]);
            pf[i] = (struct pollfd){ .fd = r.conns[i].fd,
                                     .events = POLLIN | (r.conns[i].out_len ? POLLOUT : 0) };
        }
        int n = poll(pf, (nfds_t)r.nconns, 100);
        if (n < 0 && errno != EINTR)
            die("poll", strerror(errno));
        for (int i = 0; i < r.nconns; i++)
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR))
                on_readable(&r, &r.conns[i]);
    }

    double submit_s = r.acked ? (r.last_ack_us - r.t0_us) / 1e6 : 0;
    double job_s = r.ended ? (r.last_end_us - r.t0_us) / 1e6 : 0;
    long missing = r.count - r.ended - r.refused;
    totals t;
    gather_stats(&r, &t);
    printf("{\"bench\":\"cluster\",\"daemons\":%d,\"connections\":%d,\"window\":%d,\"jobs\":%ld,"
           "\"acknowledged\":%ld,\"refused\":%ld,\"succeeded\":%ld,\"failed\":%ld,\"unfinished\":%ld,"
           "\"submit_seconds\":%.3f,\"submits_per_s\":%.0f,\"job_seconds\":%.3f,\"jobs_per_s\":%.0f,"
           "\"store_transactions\":%.0f,\"cluster_polls\":%.0f,\"claim_round_trips\":%.0f,"
           "\"limit_leases\":%.0f,\"limit_returns\":%.0f,\"limit_calls\":%.0f,"
           "\"provider_requests\":%.0f}\n",
           r.nsockets, r.connections, r.window, r.count, r.acked, r.refused, r.succeeded, r.failed,
           missing, submit_s, submit_s > 0 ? (double)r.acked / submit_s : 0, job_s,
           job_s > 0 ? (double)r.succeeded / job_s : 0, t.transactions, t.polls, t.claims, t.leases,
           t.returns, t.limit_calls, t.requests);
    if (r.first_error[0])
        fprintf(stderr, "cluster_bench: first error: %s\n", r.first_error);
    for (int i = 0; i < r.nconns; i++) {
        close(r.conns[i].fd);
        free(r.conns[i].out);
        free(r.conns[i].in);
    }
    free(r.conns);
    free(pf);
    return r.succeeded == r.count ? 0 : 1;
}
