/* submit_bench.c -- durable submits against a running loomd: how many per
 * second, and how long each waits for its acknowledgement.
 *
 *   submit_bench --socket PATH [--connections 16] [--window 8]
 *                [--count 50000 | --seconds S] [--rate R]
 *                [--workflow bench] [--keys] [--max-seconds 120]
 *
 * Each connection keeps up to WINDOW `submit` requests (without `wait`) in
 * flight, pipelined on one Unix socket; a request's latency runs from the
 * moment it is handed to the socket to the moment its reply (matched by id)
 * is read. A reply means the job is committed to disk (docs/protocol.md),
 * so this is the cost of a durable submit, group commit included. With
 * --rate the requests are paced at R per second in all (open loop, still
 * bounded by the windows) instead of as fast as the replies come back.
 *
 * One epoll loop, non-blocking sockets, no threads: on a small machine the
 * client should take as little CPU from the daemon as it can. The run is
 * bounded by --max-seconds whatever happens; requests left unanswered then
 * count as errors. Prints one JSON line, then a summary for people with the
 * targets (>= 5,000 submits/s, p99 < 20 ms). Exit status: 0 when every
 * submit was acknowledged, 1 when some were not, 2 on bad usage or setup. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench/bench_util.h"

#define TARGET_PER_S 5000.0
#define TARGET_P99_MS 20.0
#define DRAIN_SECONDS 10.0 /* after the last send, how long replies may take */

typedef struct conn {
    int fd;
    char *out;               /* requests not yet taken by the socket */
    size_t out_len, out_cap;
    char in[65536];          /* a partial reply line carried over */
    size_t in_len;
    int in_flight;
    bool want_out;           /* EPOLLOUT is armed */
} conn;

typedef struct run {
    const char *socket_path, *workflow;
    int connections, window;
    long count;              /* 0: until --seconds */
    double seconds, rate, max_seconds;
    bool keys;
    conn *conns;
    int ep;
    /* per request, indexed by its id */
    double *sent_us;         /* < 0 once answered */
    double *latency_ms;      /* of answered requests, in reply order */
    size_t cap;
    long sent, answered, ok, errors;
    char first_error[256];
    double t0_us, last_reply_us, stop_sending_us;
} run;

static void fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "submit_bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static void grow_requests(run *r)
{
    if ((size_t)r->sent < r->cap)
        return;
    size_t cap = r->cap ? r->cap * 2 : 65536;
    r->sent_us = realloc(r->sent_us, cap * sizeof *r->sent_us);
    r->latency_ms = realloc(r->latency_ms, cap * sizeof *r->latency_ms);
    if (!r->sent_us || !r->latency_ms)
        fail("%s", "out of memory");
    r->cap = cap;
}

static void out_add(conn *c, const char *s, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 16384;
        while (cap < c->out_len + n)
            cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out)
            fail("%s", "out of memory");
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void arm(run *r, conn *c, bool want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl: %s", strerror(errno));
    c->want_out = want_out;
}

/* Hands C's pending requests to the socket, as far as it takes them. */
static void flush(run *r, conn *c)
{
    int err = bench_flush(c->fd, c->out, &c->out_len, 0);
    if (err)
        fail("send: %s (did loomd stop?)", strerror(err));
    arm(r, c, c->out_len > 0);
}

/* How many more requests may go now: the count, the deadline and the pace. */
static long may_send(run *r, double now)
{
    if (now >= r->stop_sending_us)
        return 0;
    long left = r->count ? r->count - r->sent : 1L << 40;
    if (r->rate > 0) {
        long due = (long)((now - r->t0_us) / 1e6 * r->rate) + 1 - r->sent;
        if (due < left)
            left = due;
    }
    return left > 0 ? left : 0;
}

static void fill(run *r, conn *c, double now)
{
    long n = may_send(r, now);
    char line[512];
    for (; n > 0 && c->in_flight < r->window; n--) {
        grow_requests(r);
        long id = r->sent++;
        int len = r->keys
                      ? snprintf(line, sizeof line,
                                 "{\"id\":%ld,\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"n\":%ld},"
                                 "\"idempotency_key\":\"bench-%.0f-%ld\"}\n",
                                 id, r->workflow, id, r->t0_us, id)
                      : snprintf(line, sizeof line,
                                 "{\"id\":%ld,\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"n\":%ld}}\n",
                                 id, r->workflow, id);
        out_add(c, line, (size_t)len);
        r->sent_us[id] = now;
        c->in_flight++;
    }
    if (c->out_len)
        flush(r, c);
}

/* One reply line: {"id":N,"ok":true,...} or {"id":N,"ok":false,"error":...}. */
static void on_reply(run *r, conn *c, const char *line, size_t len, double now)
{
    const char *p = memmem(line, len, "\"id\":", 5);
    char *end;
    long id = p ? strtol(p + 5, &end, 10) : -1;
    if (id < 0 || id >= r->sent || r->sent_us[id] < 0) {
        snprintf(r->first_error, sizeof r->first_error, "a reply to no request: %.*s",
                 (int)(len > 200 ? 200 : len), line);
        fail("%s", r->first_error);
    }
    r->latency_ms[r->answered++] = (now - r->sent_us[id]) / 1e3;
    r->sent_us[id] = -1;
    c->in_flight--;
    r->last_reply_us = now;
    if (memmem(line, len, "\"ok\":true", 9)) {
        r->ok++;
    } else {
        if (!r->errors)
            snprintf(r->first_error, sizeof r->first_error, "%.*s", (int)(len > 200 ? 200 : len), line);
        r->errors++;
    }
}

static void on_readable(run *r, conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            fail("%s", "loomd closed a connection");
        double now = bench_now_us();
        c->in_len += (size_t)n;
        char *start = c->in, *nl;
        while ((nl = memchr(start, '\n', (size_t)(c->in + c->in_len - start)))) {
            on_reply(r, c, start, (size_t)(nl - start), now);
            start = nl + 1;
        }
        c->in_len -= (size_t)(start - c->in);
        if (c->in_len == sizeof c->in)
            fail("%s", "a reply line longer than 64 KiB");
        memmove(c->in, start, c->in_len);
        fill(r, c, now);
    }
}

static void open_conns(run *r)
{
    r->conns = calloc((size_t)r->connections, sizeof *r->conns);
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!r->conns || r->ep < 0)
        fail("%s", "cannot set up the event loop");
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(r->socket_path) >= sizeof a.sun_path)
        fail("socket path too long: %s", r->socket_path);
    strcpy(a.sun_path, r->socket_path);
    for (int i = 0; i < r->connections; i++) {
        conn *c = &r->conns[i];
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
            fail("cannot connect to %s", r->socket_path);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
            fail("fcntl: %s", strerror(errno));
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            fail("epoll_ctl: %s", strerror(errno));
    }
}

static void loop(run *r)
{
    struct epoll_event evs[256];
    double hard_stop = r->t0_us + r->max_seconds * 1e6;
    for (;;) {
        double now = bench_now_us();
        bool more = now < r->stop_sending_us && (!r->count || r->sent < r->count);
        if ((!more && r->answered == r->sent) || now >= hard_stop)
            return;
        if (!more && r->stop_sending_us > now)
            r->stop_sending_us = now; /* all sent: the drain starts */
        if (!more && now > r->stop_sending_us + DRAIN_SECONDS * 1e6)
            return;
        /* paced: wake up for the next requests due; else for replies only */
        int n = epoll_wait(r->ep, evs, 256, r->rate > 0 && more ? 1 : 100);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(r, c);
            if (evs[i].events & EPOLLOUT)
                flush(r, c);
        }
        if (r->rate > 0 && more) {
            now = bench_now_us();
            for (int i = 0; i < r->connections; i++)
                fill(r, &r->conns[i], now);
        }
    }
}

static double percentile(const double *sorted, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static void usage(void)
{
    fprintf(stderr, "usage: submit_bench --socket PATH [--connections N] [--window N]\n"
                    "                    [--count N | --seconds S] [--rate R] [--workflow NAME]\n"
                    "                    [--keys] [--max-seconds S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    run r = { .workflow = "bench", .connections = 16, .window = 8, .max_seconds = 120 };
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },   { "connections", required_argument, NULL, 'c' },
        { "window", required_argument, NULL, 'w' },   { "count", required_argument, NULL, 'n' },
        { "seconds", required_argument, NULL, 't' },  { "rate", required_argument, NULL, 'r' },
        { "workflow", required_argument, NULL, 'f' }, { "keys", no_argument, NULL, 'k' },
        { "max-seconds", required_argument, NULL, 'm' }, { NULL, 0, NULL, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's': r.socket_path = optarg; break;
        case 'c': r.connections = atoi(optarg); break;
        case 'w': r.window = atoi(optarg); break;
        case 'n': r.count = atol(optarg); break;
        case 't': r.seconds = atof(optarg); break;
        case 'r': r.rate = atof(optarg); break;
        case 'f': r.workflow = optarg; break;
        case 'k': r.keys = true; break;
        case 'm': r.max_seconds = atof(optarg); break;
        default: usage();
        }
    }
    if (!r.socket_path || optind != argc || r.connections < 1 || r.connections > 10000 ||
        r.window < 1 || r.count < 0 || r.seconds < 0 || r.max_seconds <= 0 ||
        strlen(r.workflow) > 200 || strpbrk(r.workflow, "\"\\"))
        usage();
    if (!r.count && !r.seconds)
        r.count = 50000;
    if (r.seconds > 0 && r.max_seconds < r.seconds + DRAIN_SECONDS)
        r.max_seconds = r.seconds + DRAIN_SECONDS;

    open_conns(&r);
    r.t0_us = bench_now_us();
    r.stop_sending_us = r.seconds > 0 ? r.t0_us + r.seconds * 1e6 : r.t0_us + r.max_seconds * 1e6;
    for (int i = 0; i < r.connections; i++)
        fill(&r, &r.conns[i], r.t0_us);
    loop(&r);

    long unanswered = r.sent - r.answered;
    double secs = r.answered ? (r.last_reply_us - r.t0_us) / 1e6 : 0;
    bench_sort(r.latency_ms, (size_t)r.answered);
    double p50 = percentile(r.latency_ms, (size_t)r.answered, 0.50);
    double p99 = percentile(r.latency_ms, (size_t)r.answered, 0.99);
    double max = r.answered ? r.latency_ms[r.answered - 1] : 0;
    double per_s = secs > 0 ? (double)r.ok / secs : 0;
    long errors = r.errors + unanswered;
    printf("{\"bench\":\"submit\",\"submits\":%ld,\"seconds\":%.3f,\"submits_per_s\":%.0f,"
           "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"connections\":%d,\"window\":%d,"
           "\"rate\":%.0f,\"keys\":%s,\"errors\":%ld}\n",
           r.ok, secs, per_s, p50, p99, max, r.connections, r.window, r.rate,
           r.keys ? "true" : "false", errors);
    fflush(stdout);
    fprintf(stderr,
            "submit_bench: %ld durable submits acknowledged in %.2f s over %d connections"
            " (window %d each%s%s)\n"
            "  throughput  %.0f submits/s      target >= %.0f: %s%s\n"
            "  latency     p50 %.2f ms, p99 %.2f ms, max %.2f ms      target p99 < %.0f ms: %s\n"
            "  errors      %ld (%ld refused, %ld unanswered)%s%s\n",
            r.ok, secs, r.connections, r.window, r.rate > 0 ? ", paced" : "",
            r.keys ? ", with idempotency keys" : "", per_s, TARGET_PER_S,
            per_s >= TARGET_PER_S ? "met" : "MISSED",
            r.rate > 0 ? " (paced: the client offered no more than --rate)" : "", p50, p99, max, TARGET_P99_MS,
            r.answered && p99 < TARGET_P99_MS ? "met" : "MISSED", errors, r.errors, unanswered,
            r.errors ? "; first: " : "", r.errors ? r.first_error : "");
    return errors ? 1 : 0;
}
