/* fake_provider.c -- a fake OpenAI / Anthropic server for tests, on 127.0.0.1 only.
 *
 *   fake_provider [--port N] [--latency MS] [--rpm N] [--tpm N]
 *                 [--fault MODE] [--fault-every K] [--max-seconds S] [--log FILE]
 *                 [--batch-delay MS] [--batch-fail-every K] [--batch-expire-every K]
 *                 [--batch-fault CODE] [--batch-fault-every K]
 *
 * POST /v1/chat/completions  echoes the last user message, usage ~ bytes / 4
 * POST /v1/embeddings        string or array input, deterministic 8-dim vectors
 * POST /v1/messages          Anthropic shape; needs x-api-key and anthropic-version
 * GET  /stats                JSON counters;  POST /reset zeroes them
 *
 * One thread, epoll, non-blocking sockets, HTTP/1.1 keep-alive with
 * Content-Length bodies. Answers wait `latency` in a timer heap driven by a
 * timerfd, so many requests can be in flight at once and max_in_flight shows
 * how much concurrency a client really produced. Rate limits are GCRA with one
 * second of burst, the way providers quantise their per-minute limits. Faults
 * (500, 503, 529, slow_first_byte, stall_body, drop, malformed_json,
 * huge_body, quota) hit every K-th admitted API request. Port 0 picks a free
 * port, printed on stdout's first line so a test can read it. --log FILE
 * records every API answer with its step key and times (fake_log.h).
 * Requests with tools, a structured output or a script ("fake-script:")
 * are answered by fake_tools.c: scripted tool calls, made-up structured
 * outputs, bad JSON on demand. The Batch APIs of both providers (files,
 * batches, results; --batch-* options) are in fake_batch.c, and answer
 * each line with the code that answers the direct endpoints here. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "tests/fake/fake_batch.h"
#include "tests/fake/fake_log.h"
#include "tests/fake/fake_tools.h"

enum {
    MAX_HEADER = 64 * 1024,          /* larger header blocks get 431 */
    MAX_BODY = 32 * 1024 * 1024,     /* larger bodies get 413 (Anthropic's limit) */
    MAX_FDS = 65536,                 /* connection table size, indexed by fd */
    HUGE_BODY = 20 * 1024 * 1024,    /* huge_body fault padding */
    READ_CHUNK = 64 * 1024,
    READS_PER_EVENT = 32,            /* level-triggered epoll brings us back */
    WRITES_PER_FLUSH = 4096,
    DRAIN_SECONDS = 5,               /* how long a closing socket may linger */
};

typedef enum {
    F_NONE, F_500, F_503, F_529, F_SLOW, F_STALL, F_DROP, F_MALFORMED, F_HUGE, F_QUOTA, F_STREAM_ERROR, F_STREAM_CUT
} fault_mode;

static const char *const fault_names[] = {
    "none", "500", "503", "529", "slow_first_byte", "stall_body", "drop", "malformed_json", "huge_body", "quota",
    "stream_error", "stream_cut",
};

typedef enum { API_OPENAI, API_ANTHROPIC } api_kind;

typedef struct {
    char *p;
    size_t len, cap;
} buf;

typedef struct {
    int fd;
    buf in, out;
    size_t off;         /* bytes of out already written */
    bool busy;          /* an answer is pending in the timer heap */
    bool stalled;       /* stall_body: half an answer sent, nothing more will come */
    bool close_after;   /* close once out is flushed */
    bool continued;     /* "100 Continue" sent for the request being read */
    bool draining;      /* write side shut; reading until the peer closes */
    double drain_until;
} conn;

/* ACT_PART: one piece of a streamed answer; the request goes on */
typedef enum { ACT_SEND, ACT_STALL, ACT_DROP, ACT_PART } action;

typedef struct {
    double due;
    int fd;
    unsigned gen;       /* conn generation: a reused fd must not get an old answer */
    action act;
    char *resp;         /* full HTTP response */
    size_t len, send_len;
    /* for the log */
    int status;
    const char *path;   /* static */
    char *key;          /* Loom-Step-Key, or NULL */
    size_t key_len;
    char *echo;         /* chat answer, or NULL */
    int tool_calls;     /* tool calls in the answer */
    bool structured;    /* the answer is a structured output */
    const char *fault;  /* static: the fault this answer carries, or NULL */
    int64_t received_us;
    bool close_conn;    /* the answer's end is the connection's (a stream) */
} pend;

/* GCRA: tat is the theoretical arrival time; T the emission interval per unit. */
typedef struct {
    double limit;       /* per minute; 0 = unlimited */
    double T, tat;
} gcra;

typedef struct {
    int lfd, ep, tfd;
    conn **conns;
    unsigned *gens;
    int max_fd;
    pend *heap;
    size_t hn, hcap;
    double latency;
    gcra rq, tk;
    fault_mode fault;
    long fault_every;
    unsigned long fault_seq;
    unsigned long ids;
    long requests, chat, embeddings, embedding_inputs, messages, r429, in_flight, max_in_flight;
    long connections;           /* accepted since start or the last reset */
    long streams;               /* answers sent as event streams */
    double stream_chunk;        /* --stream-chunk: bytes per write of a stream */
    double stream_gap;          /* --stream-gap: seconds between them */
    long tokens;                /* charged to admitted requests (prompt + answer) */
    double cache_read;          /* --cache-read: prompt tokens each answer says were cached */
    double cache_write;         /* --cache-write: ... written to the cache (messages API) */
    long cache_marked;          /* messages requests whose system prompt asks to be cached */
    long tool_calls;            /* tool calls answered (fake_tools.h) */
    long tool_failures;         /* tool results received that say the tool failed */
    long structured;            /* structured outputs answered */
    int log_fd;                 /* --log, or -1 */
    fake_batch *batch;          /* the Batch APIs (fake_batch.h) */
} server;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- growable byte buffers; every allocation checked, failure is reported to the caller */

static bool buf_reserve(buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra + 1) {
        if (nc > SIZE_MAX / 2)
            return false;
        nc *= 2;
    }
    char *p = realloc(b->p, nc);
    if (!p)
        return false;
    b->p = p;
    b->cap = nc;
    return true;
}

static bool buf_add(buf *b, const void *s, size_t n)
{
    if (!buf_reserve(b, n))
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

static bool buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

static void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- rate limiting */

static void gcra_init(gcra *g, double per_minute)
{
    g->limit = per_minute;
    g->T = per_minute > 0 ? 60.0 / per_minute : 0;
    g->tat = 0;
}

/* Seconds until `cost` units fit; 0 = now. The burst is one second of budget,
 * or one whole request when a single one costs more than that. */
static double gcra_wait(const gcra *g, double t, double cost)
{
    if (g->limit <= 0)
        return 0;
    double x = g->tat > t ? g->tat : t;
    double need = cost * g->T;
    double allow = need > 1.0 ? need : 1.0;
    /* differences first: t is seconds since boot, and x + need - t - allow
     * left a rounding residue that refused a request exactly one bucket big */
    double w = (x - t) + (need - allow);
    return w > 1e-9 ? w : 0;
}

static void gcra_take(gcra *g, double t, double cost)
{
    if (g->limit <= 0)
        return;
    double x = g->tat > t ? g->tat : t;
    g->tat = x + cost * g->T;
}

static long gcra_remaining(const gcra *g, double t)
{
    double x = g->tat > t ? g->tat : t;
    double r = floor((1.0 - (x - t)) / g->T + 1e-9);
    return r > 0 ? (long)r : 0;
}

static double gcra_reset(const gcra *g, double t)
{
    return g->tat > t ? g->tat - t : 0;
}

/* OpenAI writes resets as Go durations: "12ms", "1.2s", "6m0s". */
static void go_duration(double s, char *d, size_t n)
{
    if (s <= 0)
        snprintf(d, n, "0s");
    else if (s < 1.0)
        snprintf(d, n, "%ldms", (long)ceil(s * 1000));
    else if (s < 60)
        snprintf(d, n, "%gs", ceil(s * 1000) / 1000);
    else {
        long m = (long)(s / 60);
        snprintf(d, n, "%ldm%gs", m, ceil((s - (double)m * 60) * 1000) / 1000);
    }
}

static void rfc3339_after(double s, char *d, size_t n)
{
    time_t t = time(NULL) + (time_t)ceil(s);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(d, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool add_ratelimit_headers(const server *s, buf *h, api_kind api, double t)
{
    const gcra *gs[2] = { &s->rq, &s->tk };
    const char *names[2] = { "requests", "tokens" };
    for (int i = 0; i < 2; i++) {
        const gcra *g = gs[i];
        if (g->limit <= 0)
            continue;
        char reset[64];
        bool ok;
        if (api == API_OPENAI) {
            go_duration(gcra_reset(g, t), reset, sizeof reset);
            ok = buf_printf(h, "x-ratelimit-limit-%s: %.0f\r\nx-ratelimit-remaining-%s: %ld\r\n"
                               "x-ratelimit-reset-%s: %s\r\n",
                            names[i], g->limit, names[i], gcra_remaining(g, t), names[i], reset);
        } else {
            rfc3339_after(gcra_reset(g, t), reset, sizeof reset);
            ok = buf_printf(h, "anthropic-ratelimit-%s-limit: %.0f\r\nanthropic-ratelimit-%s-remaining: %ld\r\n"
                               "anthropic-ratelimit-%s-reset: %s\r\n",
                            names[i], g->limit, names[i], gcra_remaining(g, t), names[i], reset);
        }
        if (!ok)
            return false;
    }
    return true;
}

/* ---- HTTP responses */

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 529: return "Overloaded";
    default: return "Unknown";
    }
}

/* Writes a whole response into out. `declared` is the Content-Length, which
 * differs from blen only for the faults that lie about the body. */
static bool http_response_typed(buf *out, int code, const char *ctype, const char *extra, const char *body,
                                size_t blen, size_t declared, bool close)
{
    return buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", code,
                      reason(code), ctype, declared, extra ? extra : "", close ? "Connection: close\r\n" : "") &&
           buf_add(out, body, blen);
}

static bool http_response(buf *out, int code, const char *extra, const char *body, size_t blen, size_t declared,
                          bool close)
{
    return http_response_typed(out, code, "application/json", extra, body, blen, declared, close);
}

/* Error bodies in each provider's envelope. */
static char *error_body(api_kind api, const char *type, const char *code, const char *msg, unsigned long id)
{
    json_t *j;
    if (api == API_ANTHROPIC) {
        char rid[32];
        snprintf(rid, sizeof rid, "req_%lu", id);
        j = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type", type, "message", msg,
                      "request_id", rid);
    } else {
        j = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", msg, "type", type, "param", "code", code);
    }
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* ---- connections */

static void conn_close(server *s, int fd)
{
    conn *c = s->conns[fd];
    if (!c)
        return;
    epoll_ctl(s->ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    s->conns[fd] = NULL;
    s->gens[fd]++;
}

static void conn_events(server *s, conn *c)
{
    struct epoll_event e = { .events = EPOLLIN | (c->off < c->out.len ? EPOLLOUT : 0), .data.fd = c->fd };
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes what it can. Returns false when the connection is gone. */
static bool conn_flush(server *s, conn *c)
{
    for (int i = 0; i < WRITES_PER_FLUSH && c->off < c->out.len; i++) {
        ssize_t w = write(c->fd, c->out.p + c->off, c->out.len - c->off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            conn_close(s, c->fd);
            return false;
        }
        c->off += (size_t)w;
    }
    if (c->off == c->out.len) {
        c->off = c->out.len = 0;
        if (c->close_after && !c->draining) {
            /* Half-close and read until the peer closes: closing with unread
             * input would reset the connection and lose the answer. */
            shutdown(c->fd, SHUT_WR);
            c->draining = true;
            c->drain_until = now_s() + DRAIN_SECONDS;
        }
    }
    conn_events(s, c);
    return true;
}

/* ---- the timer heap of pending answers, ordered by due time */

static void heap_swap(pend *a, pend *b)
{
    pend t = *a;
    *a = *b;
    *b = t;
}

static bool heap_push(server *s, pend p)
{
    if (s->hn == s->hcap) {
        size_t nc = s->hcap ? s->hcap * 2 : 64;
        pend *h = realloc(s->heap, nc * sizeof *h);
        if (!h)
            return false;
        s->heap = h;
        s->hcap = nc;
    }
    size_t i = s->hn++;
    s->heap[i] = p;
    while (i > 0 && s->heap[(i - 1) / 2].due > s->heap[i].due) {
        heap_swap(&s->heap[(i - 1) / 2], &s->heap[i]);
        i = (i - 1) / 2;
    }
    return true;
}

static pend heap_pop(server *s)
{
    pend top = s->heap[0];
    s->heap[0] = s->heap[--s->hn];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->hn && s->heap[l].due < s->heap[m].due)
            m = l;
        if (r < s->hn && s->heap[r].due < s->heap[m].due)
            m = r;
        if (m == i)
            break;
        heap_swap(&s->heap[m], &s->heap[i]);
        i = m;
    }
    return top;
}

static void arm_timer(server *s)
{
    struct itimerspec its = { 0 };
    if (s->hn) {
        double d = s->heap[0].due - now_s();
        if (d < 1e-6)
            d = 1e-6; /* zero would disarm the timer */
        its.it_value.tv_sec = (time_t)d;
        its.it_value.tv_nsec = (long)((d - (double)(time_t)d) * 1e9);
    }
    timerfd_settime(s->tfd, 0, &its, NULL);
}

/* ---- request bodies */

/* The text of a message's content: a string, or the text blocks of an array. */
static bool content_text(json_t *content, buf *out)
{
    if (json_is_string(content))
        return buf_add(out, json_string_value(content), json_string_length(content));
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        if (json_is_string(text) && !buf_add(out, json_string_value(text), json_string_length(text)))
            return false;
    }
    return true;
}

static long tokens_of(size_t bytes, long floor_)
{
    long t = (long)((bytes + 3) / 4);
    return t < floor_ ? floor_ : t;
}

/* Last user message into answer; prompt bytes summed over all messages. */
static bool chat_answer(json_t *req, buf *answer, size_t *prompt_bytes)
{
    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return false;
    *prompt_bytes = 0;
    json_t *sys = json_object_get(req, "system");
    if (json_is_string(sys))
        *prompt_bytes += json_string_length(sys);
    json_t *last_user = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        buf t = { 0 };
        if (!content_text(json_object_get(m, "content"), &t)) {
            buf_free(&t);
            return false;
        }
        *prompt_bytes += t.len;
        buf_free(&t);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && !strcmp(role, "user"))
            last_user = m;
    }
    if (!last_user)
        return false;
    answer->len = 0;
    if (!buf_add(answer, "", 0))
        return false;
    return content_text(json_object_get(last_user, "content"), answer);
}

/* Deterministic: the same text always gives the same vector. */
static json_t *embed(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    json_t *v = json_array();
    if (!v)
        return NULL;
    for (int i = 0; i < 8; i++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        double x = (double)(h >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        if (json_array_append_new(v, json_real(round(x * 1e6) / 1e6))) {
            json_decref(v);
            return NULL;
        }
    }
    return v;
}

/* ---- request handling */

typedef enum { EP_CHAT, EP_EMB, EP_MSG } endpoint;

typedef struct {
    char method[16];
    char path[256];
    char query[256];            /* what followed '?' in the target, or "" */
    bool has_key, has_version, close;
    bool expect_continue;       /* Expect: 100-continue */
    bool https;                 /* X-Forwarded-Proto or Forwarded said https (a TLS proxy in front) */
    const char *host, *ctype;   /* Host and Content-Type, in the input buffer; or NULL */
    size_t host_len, ctype_len;
    size_t body_len;
    const char *step_key;       /* Loom-Step-Key, in the input buffer; or NULL */
    size_t step_key_len;
    int64_t received_us;
} req_head;

static const char *const ep_paths[] = { "/v1/chat/completions", "/v1/embeddings", "/v1/messages" };

static unsigned long next_id(server *s)
{
    return ++s->ids;
}

/* An immediate answer (not delayed): errors, 429s, stats. */
static bool reply_now(conn *c, int code, const char *extra, const char *body, bool close)
{
    if (close)
        c->close_after = true;
    return http_response(&c->out, code, extra, body, strlen(body), strlen(body), close);
}

static bool reply_error_now(server *s, conn *c, api_kind api, int code, const char *type, const char *ecode,
                            const char *msg, const char *extra, bool close)
{
    char *b = error_body(api, type, ecode, msg, next_id(s));
    if (!b)
        return false;
    bool ok = reply_now(c, code, extra, b, close);
    free(b);
    return ok;
}

/* Logs an API answer given at once (an error or a 429). */
static void log_now(server *s, endpoint ep, const req_head *h, int status)
{
    fake_log_entry e = { .received_us = h->received_us, .answered_us = fake_log_now_us(),
                         .status = status, .delivered = true, .path = ep_paths[ep],
                         .key = h->step_key, .key_len = h->step_key_len };
    (void)fake_log_write(s->log_fd, &e);
}

static bool handle_stats(server *s, conn *c, bool reset)
{
    if (reset) {
        /* The limiter and the fault sequence restart too, so each test
         * against a shared server sees the same first request. */
        s->requests = s->chat = s->embeddings = s->embedding_inputs = s->messages = s->r429 = 0;
        s->connections = 0;
        s->streams = 0;
        s->tokens = 0;
        s->cache_marked = 0;
        s->tool_calls = s->structured = s->tool_failures = 0;
        s->max_in_flight = s->in_flight;
        s->rq.tat = s->tk.tat = 0;
        s->fault_seq = 0;
        fake_batch_reset(s->batch);
    }
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "requests", (json_int_t)s->requests,
                          "chat", (json_int_t)s->chat, "embeddings", (json_int_t)s->embeddings, "embedding_inputs",
                          (json_int_t)s->embedding_inputs, "messages", (json_int_t)s->messages, "r429",
                          (json_int_t)s->r429, "max_in_flight", (json_int_t)s->max_in_flight, "in_flight",
                          (json_int_t)s->in_flight, "connections", (json_int_t)s->connections, "tokens", (json_int_t)s->tokens,
                          "fault", fault_names[s->fault], "streams", (json_int_t)s->streams);
    if (j)
        json_object_set_new(j, "cache_marked", json_integer(s->cache_marked));
    if (j)
        json_object_set_new(j, "tool_calls", json_integer(s->tool_calls));
    if (j)
        json_object_set_new(j, "structured", json_integer(s->structured));
    if (j)
        json_object_set_new(j, "tool_failures", json_integer(s->tool_failures));
    if (j && fake_batch_stats(s->batch, j)) {
        json_decref(j);
        j = NULL;
    }
    char *b = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!b)
        return false;
    bool ok = reply_now(c, 200, NULL, b, false);
    free(b);
    return ok;
}

/* The prompt-cache counts of --cache-read and --cache-write in a chat
 * answer RESP, each API's way, IN_TOK being the whole prompt: OpenAI's
 * prompt_tokens include the cached ones (prompt_tokens_details), Anthropic's
 * input_tokens do not (cache_read_input_tokens and
 * cache_creation_input_tokens beside them). A messages request whose system
 * prompt's last block carries cache_control is counted when COUNT (a
 * direct request, not a batch line). */
static void cache_usage(server *s, endpoint ep, json_t *req, json_t *resp, long in_tok, bool count)
{
    json_t *u = json_object_get(resp, "usage");
    long rd = (long)s->cache_read, wr = ep == EP_MSG ? (long)s->cache_write : 0;
    if (rd > in_tok)
        rd = in_tok;
    if (wr > in_tok - rd)
        wr = in_tok - rd;
    if (ep == EP_MSG) {
        json_t *sys = json_object_get(req, "system");
        if (count && json_is_array(sys) &&
            json_object_get(json_array_get(sys, json_array_size(sys) - 1), "cache_control"))
            s->cache_marked++;
        if (rd || wr) {
            json_object_set_new(u, "input_tokens", json_integer(in_tok - rd - wr));
            json_object_set_new(u, "cache_read_input_tokens", json_integer(rd));
            json_object_set_new(u, "cache_creation_input_tokens", json_integer(wr));
        }
    } else if (ep == EP_CHAT && rd) {
        json_object_set_new(u, "prompt_tokens_details", json_pack("{s:I}", "cached_tokens",
                                                                  (json_int_t)rd));
    }
}

/* Builds the success body for an admitted request. */
static json_t *success_body(server *s, endpoint ep, json_t *req, const buf *answer, long in_tok, long out_tok,
                            long *n_inputs)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    if (!model)
        model = "fake";
    char id[48];
    if (ep == EP_CHAT) {
        snprintf(id, sizeof id, "chatcmpl-%lu", next_id(s));
        return json_pack("{s:s, s:s, s:i, s:s, s:[{s:i, s:{s:s, s:s%}, s:s}], s:{s:I, s:I, s:I}}", "id", id, "object",
                         "chat.completion", "created", 0, "model", model, "choices", "index", 0, "message", "role",
                         "assistant", "content", answer->p ? answer->p : "", answer->len, "finish_reason", "stop",
                         "usage", "prompt_tokens", (json_int_t)in_tok, "completion_tokens", (json_int_t)out_tok,
                         "total_tokens", (json_int_t)(in_tok + out_tok));
    }
    if (ep == EP_MSG) {
        snprintf(id, sizeof id, "msg_%lu", next_id(s));
        return json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:s%}], s:s, s:n, s:{s:I, s:I}}", "id", id, "type", "message",
                         "role", "assistant", "model", model, "content", "type", "text", "text",
                         answer->p ? answer->p : "", answer->len, "stop_reason", "end_turn", "stop_sequence", "usage",
                         "input_tokens", (json_int_t)in_tok, "output_tokens", (json_int_t)out_tok);
    }
    json_t *input = json_object_get(req, "input");
    json_t *data = json_array();
    if (!data)
        return NULL;
    size_t bytes = 0;
    json_t *items = json_is_array(input) ? input : NULL;
    size_t n = items ? json_array_size(items) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *it = items ? json_array_get(items, i) : input;
        json_t *v;
        if (json_is_string(it)) {
            bytes += json_string_length(it);
            v = embed(json_string_value(it), json_string_length(it));
        } else {
            /* token ids or token arrays: hash their JSON text */
            char *t = json_dumps(it, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!t) {
                json_decref(data);
                return NULL;
            }
            bytes += strlen(t);
            v = embed(t, strlen(t));
            free(t);
        }
        json_t *o = v ? json_pack("{s:s, s:I, s:o}", "object", "embedding", "index", (json_int_t)i, "embedding", v)
                      : NULL;
        if (!o || json_array_append_new(data, o)) {
            json_decref(data);
            return NULL;
        }
    }
    *n_inputs = (long)n;
    long pt = tokens_of(bytes, 1);
    return json_pack("{s:s, s:s, s:o, s:{s:I, s:I}}", "object", "list", "model", model, "data", data, "usage",
                     "prompt_tokens", (json_int_t)pt, "total_tokens", (json_int_t)pt);
}

/* Queues the answer (normal or faulty) for an admitted API request. */
static bool queue_answer(server *s, conn *c, api_kind api, json_t *body, bool faulty, const req_head *h,
                         endpoint ep, const char *echo, const fake_reply *tr, double t)
{
    bool close = h->close;
    buf extra = { 0 };
    buf resp = { 0 };
    char *text = NULL;
    bool ok = false;
    char rid[48];
    unsigned long id = next_id(s);
    snprintf(rid, sizeof rid, "%s: req_%lu\r\n", api == API_ANTHROPIC ? "request-id" : "x-request-id", id);
    if (!buf_add(&extra, rid, strlen(rid)) || !add_ratelimit_headers(s, &extra, api, t))
        goto out;
    pend p = { .due = t + s->latency, .fd = c->fd, .gen = s->gens[c->fd], .act = ACT_SEND,
               .path = ep_paths[ep], .received_us = h->received_us };
    fault_mode f = faulty ? s->fault : F_NONE;
    int code = 200;
    const char *etype = NULL, *ecode = NULL, *emsg = NULL;
    switch (f) {
    case F_500:
        code = 500, etype = api == API_ANTHROPIC ? "api_error" : "server_error", emsg = "injected server error";
        break;
    case F_503:
        code = 503, etype = api == API_ANTHROPIC ? "api_error" : "service_unavailable_error",
        ecode = "server_is_overloaded", emsg = "injected: service unavailable";
        break;
    case F_529:
        code = 529, etype = "overloaded_error", emsg = "Overloaded", api = API_ANTHROPIC;
        break;
    case F_QUOTA:
        code = 429, etype = api == API_ANTHROPIC ? "rate_limit_error" : "insufficient_quota",
        ecode = "insufficient_quota", emsg = "You exceeded your current quota (injected)";
        break;
    case F_HUGE: {
        /* padding beside the normal fields keeps the answer valid JSON */
        char *pad = malloc(HUGE_BODY);
        if (!pad)
            goto out;
        memset(pad, 'x', HUGE_BODY);
        int r = json_object_set_new(body, "padding", json_stringn(pad, HUGE_BODY));
        free(pad);
        if (r)
            goto out;
        break;
    }
    case F_SLOW:
        p.due = t + s->latency * 10;
        break;
    case F_STALL:
        p.act = ACT_STALL;
        break;
    case F_DROP:
        p.act = ACT_DROP;
        break;
    default:
        break;
    }
    if (etype) {
        text = error_body(api, etype, ecode, emsg, id);
        if (f == F_529 && !buf_printf(&extra, "retry-after: 1\r\n"))
            goto out;
    } else {
        text = json_dumps(body, JSON_COMPACT);
    }
    if (!text)
        goto out;
    size_t blen = strlen(text), declared = blen;
    if (f == F_MALFORMED)
        blen = declared = blen / 2; /* cut mid-object: valid HTTP, broken JSON */
    if (!http_response(&resp, code, extra.p, text, blen, declared, close))
        goto out;
    p.len = resp.len;
    p.send_len = f == F_STALL ? resp.len - blen / 2 : resp.len;
    p.resp = resp.p;
    p.status = f == F_DROP ? 0 : code;
    p.fault = f != F_NONE ? fault_names[f] : NULL;
    if (s->log_fd >= 0) {
        if (h->step_key && !(p.key = strndup(h->step_key, h->step_key_len)))
            goto out;
        p.key_len = h->step_key_len;
        if (echo && !(p.echo = strdup(echo))) {
            free(p.key);
            goto out;
        }
        p.tool_calls = tr ? tr->ncalls : 0;
        p.structured = tr && tr->structured;
    }
    if (!heap_push(s, p)) {
        free(p.key);
        free(p.echo);
        goto out;
    }
    resp.p = NULL;
    c->busy = true;
    if (close)
        c->close_after = true;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    arm_timer(s);
    ok = true;
out:
    free(text);
    buf_free(&extra);
    buf_free(&resp);
    return ok;
}

/* ---- streamed answers (server-sent events) */

/* Appends one event: an `event:` line when NAME is set, then DATA's JSON
 * (stolen) as its data line. */
static bool sse_event(buf *b, const char *name, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (!text)
        return false;
    bool ok = (!name || buf_printf(b, "event: %s\n", name)) && buf_printf(b, "data: %s\n\n", text);
    free(text);
    return ok;
}

/* The end of the UTF-8 piece of at most N bytes from P (of LEN): never
 * inside a character. */
static size_t utf8_piece(const char *p, size_t len, size_t n)
{
    if (n >= len)
        return len;
    while (n > 1 && ((unsigned char)p[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* The whole event stream of an answer, as the provider would send it: its
 * text in pieces of 8 bytes, the usage in the last events. Faults: an
 * error event after the first piece (stream_error), or nothing after it
 * (stream_cut: the connection is then closed without the end event). */
static bool sse_body(server *s, api_kind api, json_t *req, const buf *answer, long in_tok, long out_tok,
                     fault_mode f, buf *b)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    bool usage = json_is_true(json_object_get(json_object_get(req, "stream_options"), "include_usage"));
    char id[48];
    snprintf(id, sizeof id, api == API_ANTHROPIC ? "msg_%lu" : "chatcmpl-%lu", next_id(s));
    model = model ? model : "fake";
    bool ok = api == API_ANTHROPIC
                  ? sse_event(b, "message_start",
                              json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:{s:I, s:I}}}", "type",
                                        "message_start", "message", "id", id, "type", "message", "role", "assistant",
                                        "model", model, "content", "stop_reason", "usage", "input_tokens",
                                        (json_int_t)in_tok, "output_tokens", (json_int_t)1)) &&
                        sse_event(b, "content_block_start",
                                  json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_start", "index", 0,
                                            "content_block", "type", "text", "text", "")) &&
                        buf_printf(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
                  : sse_event(b, NULL,
                              json_pack("{s:s, s:s, s:s, s:[{s:i, s:{s:s, s:s}, s:n}]}", "id", id, "object",
                                        "chat.completion.chunk", "model", model, "choices", "index", 0, "delta", "role",
                                        "assistant", "content", "", "finish_reason"));
    const char *p = answer->p ? answer->p : "";
    for (size_t off = 0, k; ok && off < answer->len; off += k) {
        k = utf8_piece(p + off, answer->len - off, 8);
        ok = api == API_ANTHROPIC
                 ? sse_event(b, "content_block_delta",
                             json_pack("{s:s, s:i, s:{s:s, s:s%}}", "type", "content_block_delta", "index", 0, "delta",
                                       "type", "text_delta", "text", p + off, k))
                 : sse_event(b, NULL,
                             json_pack("{s:s, s:s, s:[{s:i, s:{s:s%}, s:n}]}", "id", id, "object",
                                       "chat.completion.chunk", "choices", "index", 0, "delta", "content", p + off, k,
                                       "finish_reason"));
        if (ok && f == F_STREAM_CUT)
            return true;
        if (ok && f == F_STREAM_ERROR)
            return api == API_ANTHROPIC
                       ? sse_event(b, "error", json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                                                         "overloaded_error", "message", "Overloaded (injected)"))
                       : sse_event(b, NULL, json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message",
                                                      "injected error mid-stream", "type", "server_error", "param",
                                                      "code"));
    }
    if (!ok)
        return false;
    if (api == API_ANTHROPIC)
        return sse_event(b, "content_block_stop", json_pack("{s:s, s:i}", "type", "content_block_stop", "index", 0)) &&
               sse_event(b, "message_delta",
                         json_pack("{s:s, s:{s:s, s:n}, s:{s:I}}", "type", "message_delta", "delta", "stop_reason",
                                   "end_turn", "stop_sequence", "usage", "output_tokens", (json_int_t)out_tok)) &&
               sse_event(b, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    return sse_event(b, NULL,
                     json_pack("{s:s, s:s, s:[{s:i, s:{}, s:s}]}", "id", id, "object", "chat.completion.chunk",
                               "choices", "index", 0, "delta", "finish_reason", "stop")) &&
           (!usage || sse_event(b, NULL,
                                json_pack("{s:s, s:s, s:[], s:{s:I, s:I, s:I}}", "id", id, "object",
                                          "chat.completion.chunk", "choices", "usage", "prompt_tokens",
                                          (json_int_t)in_tok, "completion_tokens", (json_int_t)out_tok,
                                          "total_tokens", (json_int_t)(in_tok + out_tok)))) &&
           buf_printf(b, "data: [DONE]\n\n");
}

/* Queues a streamed answer: the head, then the body in --stream-chunk
 * pieces --stream-gap apart (so events are split across reads anywhere),
 * the last piece ending the answer and the connection (no Content-Length:
 * the body ends where the connection does). */
static bool queue_stream(server *s, conn *c, api_kind api, json_t *req, const buf *answer, long in_tok,
                         long out_tok, bool faulty, const req_head *h, endpoint ep, double t)
{
    fault_mode f = faulty ? s->fault : F_NONE;
    buf body = { 0 }, head = { 0 };
    bool ok = false;
    char rid[48];
    snprintf(rid, sizeof rid, "%s: req_%lu\r\n", api == API_ANTHROPIC ? "request-id" : "x-request-id", next_id(s));
    if (!sse_body(s, api, req, answer, in_tok, out_tok, f, &body) ||
        !buf_printf(&head, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n%s",
                    rid) ||
        !add_ratelimit_headers(s, &head, api, t) || !buf_printf(&head, "Connection: close\r\n\r\n"))
        goto out;
    size_t chunk = s->stream_chunk >= 1 ? (size_t)s->stream_chunk : 7;
    double due = t + s->latency;
    /* the head alone first: the client has the status before any event */
    for (size_t off = 0, i = 0; off <= body.len; i++) {
        bool first = i == 0;
        size_t n = first ? head.len : body.len - off < chunk ? body.len - off : chunk;
        bool last = !first && off + n >= body.len;
        pend p = { .due = due, .fd = c->fd, .gen = s->gens[c->fd], .act = last ? ACT_SEND : ACT_PART,
                   .path = ep_paths[ep], .received_us = h->received_us, .status = 200, .close_conn = last,
                   .fault = last && f != F_NONE ? fault_names[f] : NULL };
        if (!(p.resp = malloc(n ? n : 1)))
            goto out;
        memcpy(p.resp, first ? head.p : body.p + off, n);
        p.len = p.send_len = n;
        if (last && s->log_fd >= 0) {
            p.key = h->step_key ? strndup(h->step_key, h->step_key_len) : NULL;
            p.key_len = h->step_key_len;
            p.echo = answer->p ? strndup(answer->p, answer->len) : NULL;
        }
        if (!heap_push(s, p)) {
            free(p.resp);
            free(p.key);
            free(p.echo);
            goto out;
        }
        if (!first)
            off += n;
        if (last)
            break;
        due += s->stream_gap > 0 ? s->stream_gap : 1e-6; /* in order, never at once */
    }
    s->streams++;
    c->busy = true;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    arm_timer(s);
    ok = true;
out:
    buf_free(&body);
    buf_free(&head);
    return ok;
}

/* What the endpoint EP answers to a request body: the success body and
 * what the rate limiter and the log need. */
typedef struct {
    json_t *resp;           /* the success body (owned) */
    buf answer;             /* chat and messages: the answer's text */
    long in_tok, out_tok, n_inputs;
    fake_reply tr;          /* what fake_tools answered (owned) */
    int scripted;           /* 1: tr is the answer */
    const char *refusal;    /* why EP refuses the body (a 400), or NULL; may point into tr */
} answer;

static void answer_free(answer *a)
{
    fake_reply_free(&a->tr);
    json_decref(a->resp);
    buf_free(&a->answer);
}

/* Answers REQ (borrowed) as the endpoint EP does, into *A (zeroed by the
 * caller, freed with answer_free). DIRECT: a request to the endpoint
 * itself, whose prompt-cache marks count; a batch line's do not. 1 when
 * answered, 0 when refused (A->refusal), -1 when memory ran out. No other
 * counter moves: the caller counts what it answers. */
static int answer_build(server *s, endpoint ep, json_t *req, bool direct, answer *a)
{
    if (ep == EP_EMB) {
        json_t *input = json_object_get(req, "input");
        if (!json_is_string(input) && !(json_is_array(input) && json_array_size(input) > 0)) {
            a->refusal = "input must be a string or array";
            return 0;
        }
        if (!(a->resp = success_body(s, ep, req, NULL, 0, 0, &a->n_inputs)))
            return -1;
        a->in_tok = (long)json_integer_value(json_object_get(json_object_get(a->resp, "usage"), "prompt_tokens"));
        return 1;
    }
    size_t prompt_bytes = 0;
    if (!chat_answer(req, &a->answer, &prompt_bytes)) {
        a->refusal = "messages must end with a user turn";
        return 0;
    }
    /* tools, a structured output or a script: answered by fake_tools */
    a->scripted = fake_tools_reply(ep == EP_MSG, req, a->answer.p, a->answer.len, &a->tr);
    if (a->scripted < 0) {
        if (!a->tr.error[0])
            return -1;
        a->refusal = a->tr.error;
        return 0;
    }
    if (a->scripted > 0) {
        a->answer.len = 0;
        if (!buf_add(&a->answer, a->tr.text, strlen(a->tr.text)))
            return -1;
    }
    a->in_tok = tokens_of(prompt_bytes, 1);
    a->out_tok = tokens_of(a->answer.len, 0);
    if (!(a->resp = success_body(s, ep, req, &a->answer, a->in_tok, a->out_tok, &a->n_inputs)))
        return -1;
    cache_usage(s, ep, req, a->resp, a->in_tok, direct);
    if (a->scripted > 0) {
        json_t *choice = json_array_get(json_object_get(a->resp, "choices"), 0);
        if (ep == EP_CHAT ? json_object_set(choice, "message", a->tr.message) < 0 ||
                                json_object_set_new(choice, "finish_reason", json_string(a->tr.finish)) < 0
                          : json_object_set(a->resp, "content", a->tr.message) < 0 ||
                                json_object_set_new(a->resp, "stop_reason", json_string(a->tr.finish)) < 0)
            return -1;
    }
    return 1;
}

/* fake_batch's way to answer a line: exactly as the direct endpoint would,
 * without counting it as a direct request (fake_batch_answer_fn). */
static int batch_answer(void *ctx, fake_batch_kind kind, json_t *req, json_t **body, char *err, size_t err_len)
{
    server *s = ctx;
    endpoint ep = kind == FAKE_BATCH_MESSAGES ? EP_MSG : kind == FAKE_BATCH_EMBEDDINGS ? EP_EMB : EP_CHAT;
    answer a = { 0 };
    int r = answer_build(s, ep, req, false, &a);
    if (r > 0)
        *body = json_incref(a.resp);
    else if (r == 0)
        snprintf(err, err_len, "%s", a.refusal);
    answer_free(&a);
    return r < 0 ? -1 : r > 0 ? 200 : 400;
}

static bool handle_api(server *s, conn *c, endpoint ep, const req_head *h, const char *body)
{
    api_kind api = ep == EP_MSG ? API_ANTHROPIC : API_OPENAI;
    double t = now_s();
    s->requests++;
    if (ep == EP_MSG && (!h->has_key || !h->has_version)) {
        log_now(s, ep, h, 401);
        return reply_error_now(s, c, api, 401, "authentication_error", NULL,
                               !h->has_key ? "x-api-key header is required" : "anthropic-version header is required",
                               NULL, h->close);
    }
    json_error_t jerr;
    json_t *req = json_loadb(body, h->body_len, 0, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        log_now(s, ep, h, 400);
        return reply_error_now(s, c, api, 400, "invalid_request_error", NULL, "body is not a JSON object", NULL,
                               h->close);
    }
    bool ok = false;
    answer a = { 0 };
    if (ep == EP_EMB)
        s->embeddings++;
    else if (ep == EP_CHAT)
        s->chat++;
    else
        s->messages++;
    int built = answer_build(s, ep, req, true, &a);
    if (built < 0)
        goto out;
    if (built == 0) {
        log_now(s, ep, h, 400);
        ok = reply_error_now(s, c, api, 400, "invalid_request_error", NULL, a.refusal, NULL, h->close);
        goto out;
    }
    s->embedding_inputs += a.n_inputs * (ep == EP_EMB);
    /* The token cost is known up front because the answer is an echo. */
    double cost = (double)(a.in_tok + a.out_tok);
    double wr = gcra_wait(&s->rq, t, 1), wt = gcra_wait(&s->tk, t, cost);
    if (wr > 0 || wt > 0) {
        double w = wr > wt ? wr : wt;
        buf extra = { 0 };
        bool hok = buf_printf(&extra, "Retry-After: %ld\r\nretry-after-ms: %ld\r\n", (long)ceil(w),
                              (long)ceil(w * 1000)) &&
                   add_ratelimit_headers(s, &extra, api, t);
        s->r429++;
        log_now(s, ep, h, 429);
        if (hok)
            ok = reply_error_now(s, c, api, 429, api == API_ANTHROPIC ? "rate_limit_error" : wr > 0 ? "requests" : "tokens",
                                 api == API_ANTHROPIC ? NULL : "rate_limit_exceeded",
                                 wr > 0 ? "Rate limit reached for requests" : "Rate limit reached for tokens",
                                 extra.p, h->close);
        buf_free(&extra);
        goto out;
    }
    gcra_take(&s->rq, t, 1);
    gcra_take(&s->tk, t, cost);
    s->tokens += a.in_tok + a.out_tok;
    bool faulty = false;
    if (s->fault != F_NONE) {
        s->fault_seq++;
        faulty = s->fault_seq % (unsigned long)s->fault_every == 0;
    }
    /* a stream is asked for: the stream faults apply to it, the others
     * are answered as they always are */
    /* tool calls and a tool's input are answered whole: Loom never asks
     * for them as a stream (fake_tools.h) */
    if (a.scripted > 0) {
        s->tool_calls += a.tr.ncalls;
        s->tool_failures += a.tr.nfailed;
        s->structured += a.tr.structured;
    }
    if (ep != EP_EMB && json_is_true(json_object_get(req, "stream")) && !a.tr.whole &&
        (!faulty || s->fault == F_STREAM_ERROR || s->fault == F_STREAM_CUT))
        ok = queue_stream(s, c, api, req, &a.answer, a.in_tok, a.out_tok, faulty, h, ep, t);
    else
        ok = queue_answer(s, c, api, a.resp, faulty && s->fault != F_STREAM_ERROR && s->fault != F_STREAM_CUT, h,
                          ep, ep == EP_EMB ? NULL : a.answer.p, a.scripted > 0 ? &a.tr : NULL, t);
out:
    answer_free(&a);
    json_decref(req);
    return ok;
}

/* A request to one of the Batch APIs' endpoints: answered at once (no
 * --latency, no rate limit: neither API limits its batch endpoints the
 * way it limits calls) and logged with its own path. */
static bool handle_batch(server *s, conn *c, const req_head *h, const char *body)
{
    fake_batch_req rq = { .method = h->method, .path = h->path, .query = h->query, .host = h->host,
                          .host_len = h->host_len, .https = h->https, .content_type = h->ctype,
                          .content_type_len = h->ctype_len, .has_key = h->has_key,
                          .has_version = h->has_version, .body = body, .body_len = h->body_len };
    fake_batch_resp rs = { 0 };
    if (fake_batch_handle(s->batch, &rq, &rs) < 0)
        return false;
    if (h->close)
        c->close_after = true;
    bool ok = http_response_typed(&c->out, rs.status, rs.content_type, rs.extra, rs.body, rs.len, rs.len, h->close);
    fake_log_entry e = { .received_us = h->received_us, .answered_us = fake_log_now_us(), .status = rs.status,
                         .delivered = true, .path = h->path, .key = h->step_key, .key_len = h->step_key_len,
                         .fault = rs.fault };
    (void)fake_log_write(s->log_fd, &e);
    free(rs.body);
    return ok;
}

/* Parses the head in [p, p+hl). Returns an HTTP status to refuse with, or 0. */
static int parse_head(const char *p, size_t hl, req_head *h)
{
    memset(h, 0, sizeof *h);
    const char *end = p + hl;
    const char *eol = memmem(p, hl, "\r\n", 2);
    if (!eol)
        return 400;
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof h->method)
        return 400;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1 || (size_t)(sp2 - sp1 - 1) >= sizeof h->path)
        return 400;
    if (eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7))
        return 400;
    memcpy(h->method, p, (size_t)(sp1 - p));
    for (const char *m = h->method; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return 400;
    memcpy(h->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    char *q = strchr(h->path, '?');
    if (q) {
        snprintf(h->query, sizeof h->query, "%s", q + 1);
        *q = 0;
    }
    h->close = sp2[8] == '0'; /* HTTP/1.0 closes unless asked otherwise */
    bool have_len = false;
    /* Each pass consumes one header line, so the loop ends at the blank line. */
    for (const char *l = eol + 2; l < end - 2;) {
        const char *le = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!le || le == l)
            break;
        const char *colon = memchr(l, ':', (size_t)(le - l));
        if (!colon)
            return 400;
        size_t nl = (size_t)(colon - l);
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        size_t vl = (size_t)(le - v);
        if (nl == 14 && !strncasecmp(l, "content-length", 14)) {
            if (vl == 0 || vl > 12)
                return vl > 12 ? 413 : 400;
            size_t n = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 400;
                n = n * 10 + (size_t)(v[i] - '0');
            }
            if (have_len && n != h->body_len)
                return 400;
            h->body_len = n;
            have_len = true;
        } else if (nl == 17 && !strncasecmp(l, "transfer-encoding", 17)) {
            return 411; /* chunked bodies are not supported: ask for a length */
        } else if (nl == 13 && !strncasecmp(l, "loom-step-key", 13)) {
            h->step_key = v;
            h->step_key_len = vl;
        } else if (nl == 9 && !strncasecmp(l, "x-api-key", 9)) {
            h->has_key = vl > 0;
        } else if (nl == 17 && !strncasecmp(l, "anthropic-version", 17)) {
            h->has_version = vl > 0;
        } else if (nl == 4 && !strncasecmp(l, "host", 4)) {
            h->host = v;
            h->host_len = vl;
        } else if (nl == 12 && !strncasecmp(l, "content-type", 12)) {
            h->ctype = v;
            h->ctype_len = vl;
        } else if (nl == 6 && !strncasecmp(l, "expect", 6)) {
            h->expect_continue = vl == 12 && !strncasecmp(v, "100-continue", 12);
        } else if (nl == 17 && !strncasecmp(l, "x-forwarded-proto", 17)) {
            /* a proxy appends its own to any the client sent: the last counts */
            const char *last = v;
            for (const char *k = v; k < v + vl; k++)
                if (*k == ',')
                    last = k + 1;
            while (last < v + vl && *last == ' ')
                last++;
            h->https = v + vl - last == 5 && !strncasecmp(last, "https", 5);
        } else if (nl == 9 && !strncasecmp(l, "forwarded", 9)) {
            h->https = h->https || memmem(v, vl, "proto=https", 11) != NULL;
        } else if (nl == 10 && !strncasecmp(l, "connection", 10)) {
            if (vl == 5 && !strncasecmp(v, "close", 5))
                h->close = true;
            else if (vl == 10 && !strncasecmp(v, "keep-alive", 10))
                h->close = false;
        }
        l = le + 2;
    }
    if (h->body_len > MAX_BODY)
        return 413;
    return 0;
}

static bool refuse(server *s, conn *c, int code)
{
    const char *msg = code == 431 ? "request headers too large"
                      : code == 413 ? "request body too large"
                      : code == 411 ? "Content-Length required"
                                    : "malformed request";
    c->in.len = 0;
    return reply_error_now(s, c, API_OPENAI, code, "invalid_request_error", NULL, msg, NULL, true);
}

/* Answers every complete request in the input buffer that can be answered
 * now. Each pass consumes input or stops, so the loop is bounded by it. */
static void conn_process(server *s, conn *c)
{
    while (!c->busy && !c->stalled && !c->close_after && !c->draining) {
        char *he = c->in.len ? memmem(c->in.p, c->in.len, "\r\n\r\n", 4) : NULL;
        if (!he) {
            if (c->in.len > MAX_HEADER && !refuse(s, c, 431))
                goto fail;
            break;
        }
        size_t hl = (size_t)(he - c->in.p) + 4;
        if (hl > MAX_HEADER) {
            if (!refuse(s, c, 431))
                goto fail;
            break;
        }
        req_head h;
        int bad = parse_head(c->in.p, hl, &h);
        h.received_us = fake_log_now_us();
        if (bad) {
            if (!refuse(s, c, bad))
                goto fail;
            break;
        }
        if (c->in.len < hl + h.body_len) {
            /* curl holds a large body back for a second unless told to send it */
            if (h.expect_continue && !c->continued) {
                if (!buf_add(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25))
                    goto fail;
                c->continued = true;
            }
            break;
        }
        const char *body = c->in.p + hl;
        bool ok;
        bool is_get = !strcmp(h.method, "GET"), is_post = !strcmp(h.method, "POST");
        endpoint ep = EP_CHAT;
        bool api = true;
        if (!strcmp(h.path, "/v1/chat/completions"))
            ep = EP_CHAT;
        else if (!strcmp(h.path, "/v1/embeddings"))
            ep = EP_EMB;
        else if (!strcmp(h.path, "/v1/messages"))
            ep = EP_MSG;
        else
            api = false;
        if (!strcmp(h.path, "/stats") && is_get)
            ok = handle_stats(s, c, false);
        else if (!strcmp(h.path, "/reset") && is_post)
            ok = handle_stats(s, c, true);
        else if (api && is_post)
            ok = handle_api(s, c, ep, &h, body);
        else if (fake_batch_is_endpoint(h.path))
            ok = handle_batch(s, c, &h, body);
        else if (api || !strcmp(h.path, "/stats") || !strcmp(h.path, "/reset"))
            ok = reply_error_now(s, c, API_OPENAI, 405, "invalid_request_error", NULL, "method not allowed", NULL,
                                 h.close);
        else
            ok = reply_error_now(s, c, API_OPENAI, 404, "invalid_request_error", NULL, "unknown path", NULL, h.close);
        if (!ok)
            goto fail;
        memmove(c->in.p, c->in.p + hl + h.body_len, c->in.len - hl - h.body_len);
        c->in.len -= hl + h.body_len;
        c->continued = false;
    }
    conn_flush(s, c);
    return;
fail:
    /* out of memory: the one thing we cannot answer is better dropped than half-sent */
    conn_close(s, c->fd);
}

static void conn_read(server *s, conn *c)
{
    int fd = c->fd;
    for (int i = 0; i < READS_PER_EVENT; i++) {
        if (c->stalled || c->draining) {
            char sink[READ_CHUNK];
            ssize_t r = read(fd, sink, sizeof sink);
            if (r > 0)
                continue;
            if (r == 0 || (errno != EAGAIN && errno != EINTR))
                conn_close(s, fd);
            return;
        }
        if (!buf_reserve(&c->in, READ_CHUNK)) {
            conn_close(s, fd);
            return;
        }
        ssize_t r = read(fd, c->in.p + c->in.len, READ_CHUNK);
        if (r > 0) {
            c->in.len += (size_t)r;
            c->in.p[c->in.len] = 0;
            /* a client that keeps sending while an answer is pending */
            if (c->in.len > (size_t)MAX_HEADER + MAX_BODY + READ_CHUNK) {
                conn_close(s, fd);
                return;
            }
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            conn_close(s, fd);
            return;
        }
        break;
    }
    conn_process(s, c);
}

/* Logs P's answer, about to be written to C (NULL: its connection is gone).
 * The time is read before looking at the connection: when the client is
 * still there after it, the answer was written while the client lived, so
 * a test comparing it with the time it killed the client is never misled. */
static void log_answer(server *s, const pend *p, conn *c)
{
    if (s->log_fd < 0)
        return;
    fake_log_entry e = { .received_us = p->received_us, .answered_us = fake_log_now_us(),
                         .status = p->status, .path = p->path, .key = p->key,
                         .key_len = p->key_len, .echo = p->echo, .fault = p->fault,
                         .tool_calls = p->tool_calls, .structured = p->structured };
    if (c) {
        /* a peer that closed (or died) has sent its FIN by now: the answer
         * would be written into a socket nobody reads */
        struct pollfd pf = { .fd = c->fd, .events = POLLRDHUP };
        e.delivered = poll(&pf, 1, 0) == 0 || !(pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
    }
    (void)fake_log_write(s->log_fd, &e);
}

static void fire(server *s)
{
    double t = now_s();
    /* bounded by the heap size at entry: answers only ever leave it here */
    for (size_t n = s->hn; n > 0 && s->hn && s->heap[0].due <= t; n--) {
        pend p = heap_pop(s);
        conn *c = s->conns[p.fd];
        if (c && s->gens[p.fd] != p.gen)
            c = NULL;
        if (p.act == ACT_PART) {
            /* a piece of a stream: written now, the answer goes on */
            if (c && !(buf_add(&c->out, p.resp, p.send_len) && conn_flush(s, c)))
                c = NULL;
            free(p.resp);
            continue;
        }
        s->in_flight--;
        if (c && p.close_conn)
            c->close_after = true;
        log_answer(s, &p, c);
        free(p.key);
        free(p.echo);
        if (!c) {
            free(p.resp);
            continue;
        }
        if (p.act == ACT_DROP) {
            free(p.resp);
            conn_close(s, p.fd);
            continue;
        }
        bool ok = buf_add(&c->out, p.resp, p.send_len);
        free(p.resp);
        if (!ok) {
            conn_close(s, p.fd);
            continue;
        }
        if (p.act == ACT_STALL) {
            c->stalled = true; /* the rest never comes; the client must time out */
            conn_flush(s, c);
            continue;
        }
        c->busy = false;
        conn_process(s, c);
    }
    arm_timer(s);
}

static void accept_all(server *s)
{
    int one = 1;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (fd >= MAX_FDS) {
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s->connections++;
        c->fd = fd;
        s->conns[fd] = c;
        if (fd > s->max_fd)
            s->max_fd = fd;
        struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e))
            conn_close(s, fd);
    }
}

/* Closes half-closed sockets whose peers never closed theirs. */
static void sweep(server *s, double t)
{
    for (int fd = 0; fd <= s->max_fd; fd++) {
        conn *c = s->conns[fd];
        if (c && c->draining && t > c->drain_until)
            conn_close(s, fd);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: fake_provider [--port N] [--latency MS] [--rpm N] [--tpm N] [--fault MODE]\n"
                    "                     [--fault-every K] [--max-seconds S] [--log FILE]\n"
                    "                     [--stream-chunk BYTES] [--stream-gap MS]\n"
                    "                     [--cache-read TOKENS] [--cache-write TOKENS]\n"
                    "                     [--batch-delay MS] [--batch-fail-every K] [--batch-expire-every K]\n"
                    "                     [--batch-fault 429|500|503] [--batch-fault-every K]\n"
                    "faults: 500 503 529 slow_first_byte stall_body drop malformed_json huge_body quota\n"
                    "        stream_error stream_cut\n");
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    static server S; /* the one server this process is */
    server *s = &S;
    double port = 0, latency_ms = 0, rpm = 0, tpm = 0, every = 1, max_s = 300;
    double b_fail = 0, b_expire = 0, b_fault_every = 1;
    fake_batch_opts bo = { .delay_ms = 200, .answer = batch_answer, .answer_ctx = s };
    s->log_fd = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (ok && !strcmp(a, "--port"))
            ok = parse_num(v, 0, 65535, &port);
        else if (ok && !strcmp(a, "--latency"))
            ok = parse_num(v, 0, 3600e3, &latency_ms);
        else if (ok && !strcmp(a, "--rpm"))
            ok = parse_num(v, 0, 1e9, &rpm);
        else if (ok && !strcmp(a, "--tpm"))
            ok = parse_num(v, 0, 1e12, &tpm);
        else if (ok && !strcmp(a, "--cache-read"))
            ok = parse_num(v, 0, 1e12, &s->cache_read);
        else if (ok && !strcmp(a, "--cache-write"))
            ok = parse_num(v, 0, 1e12, &s->cache_write);
        else if (ok && !strcmp(a, "--stream-chunk"))
            ok = parse_num(v, 1, 1e9, &s->stream_chunk);
        else if (ok && !strcmp(a, "--stream-gap")) {
            ok = parse_num(v, 0, 60e3, &s->stream_gap);
            s->stream_gap /= 1000.0;
        } else if (ok && !strcmp(a, "--fault-every"))
            ok = parse_num(v, 1, 1e9, &every);
        else if (ok && !strcmp(a, "--batch-delay"))
            ok = parse_num(v, 0, 86400e3, &bo.delay_ms);
        else if (ok && !strcmp(a, "--batch-fail-every"))
            ok = parse_num(v, 0, 1e9, &b_fail);
        else if (ok && !strcmp(a, "--batch-expire-every"))
            ok = parse_num(v, 0, 1e9, &b_expire);
        else if (ok && !strcmp(a, "--batch-fault"))
            ok = (bo.fault_code = fake_batch_fault_code(v)) != 0;
        else if (ok && !strcmp(a, "--batch-fault-every"))
            ok = parse_num(v, 1, 1e9, &b_fault_every);
        else if (ok && !strcmp(a, "--log")) {
            if (s->log_fd >= 0)
                close(s->log_fd);
            s->log_fd = fake_log_open(v);
            if (s->log_fd < 0) {
                fprintf(stderr, "fake_provider: cannot open %s: %s\n", v, strerror(errno));
                return 1;
            }
        } else if (ok && !strcmp(a, "--max-seconds"))
            ok = parse_num(v, 0.001, 86400 * 7, &max_s);
        else if (ok && !strcmp(a, "--fault")) {
            ok = false;
            for (size_t f = 1; f < sizeof fault_names / sizeof *fault_names; f++)
                if (!strcmp(v, fault_names[f])) {
                    s->fault = (fault_mode)f;
                    ok = true;
                }
        } else
            ok = false;
        if (!ok) {
            usage();
            return 2;
        }
        i++;
    }
    s->latency = latency_ms / 1000.0;
    bo.fail_every = (long)b_fail;
    bo.expire_every = (long)b_expire;
    bo.fault_every = (long)b_fault_every;
    if (!(s->batch = fake_batch_new(&bo))) {
        perror("fake_provider: batches");
        return 1;
    }
    s->fault_every = (long)every;
    gcra_init(&s->rq, rpm);
    gcra_init(&s->tk, tpm);
    signal(SIGPIPE, SIG_IGN);
    /* benchmarks hold 10,000 connections open */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }

    s->conns = calloc(MAX_FDS, sizeof *s->conns);
    s->gens = calloc(MAX_FDS, sizeof *s->gens);
    if (!s->conns || !s->gens) {
        perror("fake_provider: calloc");
        return 1;
    }
    int one = 1;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) {
        perror("fake_provider: socket");
        return 1;
    }
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* never reachable from elsewhere */
    if (bind(s->lfd, (struct sockaddr *)&addr, sizeof addr) || listen(s->lfd, 1024)) {
        perror("fake_provider: bind/listen");
        return 1;
    }
    socklen_t al = sizeof addr;
    if (getsockname(s->lfd, (struct sockaddr *)&addr, &al)) {
        perror("fake_provider: getsockname");
        return 1;
    }
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->ep < 0 || s->tfd < 0) {
        perror("fake_provider: epoll/timerfd");
        return 1;
    }
    struct epoll_event e = { .events = EPOLLIN, .data.fd = s->lfd };
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &e);
    e.data.fd = s->tfd;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->tfd, &e);
    int btfd = fake_batch_timer_fd(s->batch);
    e.data.fd = btfd;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, btfd, &e);

    double t_end = now_s() + max_s, last_sweep = now_s();
    struct epoll_event ev[256];
    for (double t = now_s(); t < t_end; t = now_s()) {
        double left = t_end - t;
        int wait_ms = left < 1.0 ? (int)ceil(left * 1000) : 1000;
        int n = epoll_wait(s->ep, ev, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == s->lfd) {
                accept_all(s);
            } else if (fd == s->tfd) {
                uint64_t x;
                if (read(s->tfd, &x, sizeof x) < 0 && errno != EAGAIN) {
                    perror("fake_provider: timerfd");
                    return 1;
                }
                fire(s);
            } else if (fd == btfd) {
                if (fake_batch_tick(s->batch) < 0)
                    fprintf(stderr, "fake_provider: a batch could not end yet (out of memory)\n");
            } else if (fd >= 0 && fd < MAX_FDS && s->conns[fd]) {
                conn *c = s->conns[fd];
                if ((ev[i].events & EPOLLOUT) && !conn_flush(s, c))
                    continue;
                if (s->conns[fd] && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    conn_read(s, c);
            }
        }
        if (now_s() - last_sweep >= 1.0) {
            last_sweep = now_s();
            sweep(s, last_sweep);
        }
    }
    fake_batch_free(s->batch);
    return 0;
}
