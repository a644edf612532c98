/* http.c -- libcurl's multi_socket interface on the reactor.
 *
 * curl tells us which sockets to watch (socket callback) and when to wake it
 * (timer callback); the reactor tells curl which sockets are ready and when
 * the timer fired (curl_multi_socket_action). Finished transfers are then
 * collected with curl_multi_info_read, outside any curl callback, which is
 * where a done callback may safely start or cancel other calls.
 *
 * The first-byte timeout is ours, not curl's (curl has connect and total
 * only): a reactor timer per call, cancelled by the first header line.
 *
 * Easy handles are kept on an idle list and reset for reuse: creating one
 * costs more than the rest of a call's bookkeeping, and connections live in
 * the multi handle's cache anyway, not in the easy handle. */
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "common/containers.h"
#include "daemon/core/http.h"

#define HTTP_DEFAULT_MAX_BODY (64u << 20)
/* Idle easy handles kept for reuse (about 5.5 KiB each); beyond this they
 * are freed. Making one is a malloc of that size plus its setup, which at
 * thousands of calls a second is a tenth of a call's cost. */
#define HTTP_IDLE_MAX 1024
#define HTTP_RECV_BUFFER_MIN 1024L
#define HTTP_RECV_BUFFER_MAX (512L * 1024)
/* Multi handles per client. curl 7.88 looks for a reusable connection by
 * walking every connection to the host, in use or not, so with 10,000
 * connections in one multi handle each new transfer cost a 10,000-step
 * walk (a tenth of the calls per second). Shards are filled in order, a few
 * hundred calls each (see pick_shard): a few calls use only the first. */
#define HTTP_SHARDS 64
#define HTTP_SHARD_FILL 256
/* New transfers handed to curl per reactor pass; the rest wait in the
 * client's queue for the next pass. curl does a new transfer's first work
 * (resolve, connect or reuse, send the request) in its next timeout action,
 * all of a shard's at once: a map that starts thousands of calls in one
 * callback made that one action, and so one timer callback, tens of
 * milliseconds long, and every other timer of the daemon late by as much. */
#define HTTP_ADDS_PER_PASS 32

/* One curl multi handle and its share of the calls. */
typedef struct shard {
    http_client_t *c;
    CURLM *multi;
    reactor_timer_t *timer;    /* curl's wake-up, or NULL */
    size_t in_flight;
    size_t peak;               /* most in flight at once: about the connections
                                  its cache holds (curl keeps idle ones) */
} shard;

struct http_client {
    reactor_t *r;
    shard shards[HTTP_SHARDS];
    http_options opt;
    size_t in_flight;
    size_t bytes;              /* response bytes buffered, all calls */
    CURL **idle;
    size_t nidle;
    list_link calls;           /* every live call (curl 7.88 cannot list them) */
    list_link waiting;         /* http_call_t.wait_link: not yet given to curl */
    size_t nwaiting;
    reactor_post_t feed;       /* feed_curl, queued while calls wait */
    uint64_t pass_us;          /* the pass adds_in_pass counts for */
    size_t adds_in_pass;
};

struct http_call {
    http_client_t *c;
    shard *sh;
    list_link link;            /* in c->calls */
    CURL *easy;
    struct curl_slist *req_headers;
    char *method, *url, *body;
    size_t body_len;
    sbuf resp_body;            /* response body, capped at max_body */
    sbuf hbuf;                 /* response headers: name\0value\0 pairs, the
                                  names lower-case; one buffer, not one
                                  allocation per header */
    size_t nheaders;
    size_t held;               /* this call's share of c->bytes */
    bool first_byte, too_large, over_budget, added, waiting;
    /* streaming (http_call_opts.on_data) */
    http_data_fn on_data;
    void *data_ud;
    bool event_stream;         /* this response's content-type says so */
    bool body_seen;            /* its first body bytes came: `streamed` decided */
    bool streamed, aborted;
    size_t streamed_bytes;     /* against max_body */
    list_link wait_link;       /* in c->waiting while `waiting` */
    http_outcome failed;       /* set before posting an early failure */
    const char *failed_msg;    /* static: curl's words for it, or NULL */
    bool unusable;             /* curl kept the handle: never reuse it */
    /* curl's words for a failure, for https:// calls only (CURL_ERROR_SIZE
     * bytes, or NULL): its generic text for a certificate problem does not
     * say which one, and people need to know */
    char *errbuf;
    bool need_h2;              /* https:// with version 2: h2 or nothing */
    bool no_h2;                /* ... and the server did not offer it */
    reactor_timer_t *fb_timer;
    uint64_t start_us, first_us;
    http_done_fn done;
    void *ud;
    reactor_post_t post;       /* an early failure, reported on a later pass */
};

const char *http_outcome_name(http_outcome o)
{
    static const char *const names[] = {
        [HTTP_OK] = "ok", [HTTP_E_CONNECT] = "connect",
        [HTTP_E_TIMEOUT_CONNECT] = "timeout_connect",
        [HTTP_E_TIMEOUT_FIRST_BYTE] = "timeout_first_byte",
        [HTTP_E_TIMEOUT_TOTAL] = "timeout_total", [HTTP_E_TRANSFER] = "transfer",
        [HTTP_E_TOO_LARGE] = "too_large", [HTTP_E_NOMEM] = "out_of_memory",
        [HTTP_E_BUDGET] = "response_budget", [HTTP_E_ABORTED] = "aborted",
        [HTTP_E_TLS] = "tls",
    };
    return (unsigned)o < sizeof names / sizeof *names ? names[o] : "unknown";
}

static const char *const version_names[] = {
    [HTTP_VERSION_AUTO] = "auto", [HTTP_VERSION_1_1] = "1.1", [HTTP_VERSION_2] = "2",
};

int http_version_parse(const char *text)
{
    for (size_t i = 0; text && i < sizeof version_names / sizeof *version_names; i++)
        if (strcmp(text, version_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *http_version_name(http_version v)
{
    return (unsigned)v < sizeof version_names / sizeof *version_names ? version_names[v] : "auto";
}

loom_errcode http_outcome_code(http_outcome o)
{
    switch (o) {
    case HTTP_E_TIMEOUT_CONNECT:
    case HTTP_E_TIMEOUT_FIRST_BYTE:
    case HTTP_E_TIMEOUT_TOTAL:
        return LOOM_E_TIMEOUT;
    case HTTP_E_TLS:
        return LOOM_E_TLS;
    default:
        return LOOM_E_UPSTREAM;
    }
}

long http_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return -errno;
    }
    return rl.rlim_cur == RLIM_INFINITY ? (long)1 << 30 : (long)rl.rlim_cur;
}

/* ---- curl's callbacks */

static void drain(shard *sh);

static void on_fd(reactor_t *r, int fd, int events, void *ud)
{
    shard *sh = ud;
    int flags = 0, running;
    (void)r;
    if (events & REACTOR_READ)
        flags |= CURL_CSELECT_IN;
    if (events & REACTOR_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & REACTOR_ERROR)
        flags |= CURL_CSELECT_ERR;
    curl_multi_socket_action(sh->multi, fd, flags, &running);
    drain(sh);
}

/* curl's socket callback: SOCKP is non-NULL once the reactor watches S. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    shard *sh = userp;
    reactor_t *r = sh->c->r;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sockp) {
            reactor_del_fd(r, s);
            curl_multi_assign(sh->multi, s, NULL);
        }
        return 0;
    }
    int ev = (what & CURL_POLL_IN ? REACTOR_READ : 0) | (what & CURL_POLL_OUT ? REACTOR_WRITE : 0);
    if (sockp)
        return reactor_mod_fd(r, s, ev) < 0 ? -1 : 0;
    int rc = reactor_add_fd(r, s, ev, on_fd, sh);
    if (rc == -EEXIST) {
        /* a descriptor curl closed without telling us, its number reused */
        reactor_del_fd(r, s);
        rc = reactor_add_fd(r, s, ev, on_fd, sh);
    }
    if (rc < 0)
        return -1;
    curl_multi_assign(sh->multi, s, sh);
    return 0;
}

static void on_timer(reactor_t *r, reactor_timer_t *t, void *ud)
{
    shard *sh = ud;
    int running;
    (void)r;
    (void)t;
    sh->timer = NULL;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain(sh);
}

/* curl's timer callback: wake curl in MS milliseconds (-1: never). */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
    shard *sh = userp;
    (void)multi;
    if (sh->timer) {
        reactor_timer_cancel(sh->c->r, sh->timer);
        sh->timer = NULL;
    }
    if (ms < 0)
        return 0;
    sh->timer = reactor_timer_add(sh->c->r, (uint64_t)ms * REACTOR_MSEC, on_timer, sh);
    return sh->timer ? 0 : -1;
}

/* Charges LEN more bytes of CALL to the client's budget: false (and the
 * call marked) when they do not fit. */
static bool charge(http_call_t *call, size_t len)
{
    http_client_t *c = call->c;
    if (len > c->opt.max_bytes_in_flight - c->bytes) {
        call->over_budget = true;
        return false;
    }
    c->bytes += len;
    call->held += len;
    return true;
}

static void uncharge(http_call_t *call, size_t len)
{
    call->c->bytes -= len;
    call->held -= len;
}

/* A streamed body's bytes: to on_data, counted against max_body. */
static size_t stream_body(http_call_t *call, const char *p, size_t len)
{
    if (len > call->c->opt.max_body - call->streamed_bytes) {
        call->too_large = true;
        return 0;
    }
    call->streamed_bytes += len;
    if (call->on_data(call->data_ud, p, len) != 0) {
        call->aborted = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_call_t *call = ud;
    size_t len = size * n;
    if (!call->body_seen) {
        call->body_seen = true;
        long status = 0;
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        call->streamed = call->on_data && call->event_stream && status >= 200 && status < 300;
    }
    if (call->streamed)
        return stream_body(call, p, len);
    if (!charge(call, len))
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    if (sbuf_add(&call->resp_body, p, len) < 0) {
        uncharge(call, len);
        call->too_large = call->resp_body.too_big;
        return 0;
    }
    return len;
}

/* One header line, "Name: value\r\n", or a status line (which starts a new
 * response: a 100 Continue's headers are not the answer's). */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_call_t *call = ud;
    size_t len = size * n;
    if (!call->first_byte) {
        call->first_byte = true;
        call->first_us = reactor_now_us(call->c->r) - call->start_us;
        if (call->fb_timer) {
            reactor_timer_cancel(call->c->r, call->fb_timer);
            call->fb_timer = NULL;
        }
    }
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        if (call->need_h2 && len >= 7 && memcmp(p, "HTTP/1.", 7) == 0) {
            call->no_h2 = true;
            return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
        }
        uncharge(call, call->held < call->hbuf.n ? call->held : call->hbuf.n);
        sbuf_reset(&call->hbuf);
        call->nheaders = 0;
        call->event_stream = false;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (nlen == 12 && strncasecmp(p, "content-type", 12) == 0)
        call->event_stream = vlen >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    if (!charge(call, nlen + vlen + 2))
        return 0;
    if (sbuf_grow(&call->hbuf, nlen + vlen + 2) < 0) {
        uncharge(call, nlen + vlen + 2);
        return 0;
    }
    char *blk = call->hbuf.p + call->hbuf.n;
    for (size_t i = 0; i < nlen; i++)
        blk[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
    blk[nlen] = '\0';
    memcpy(blk + nlen + 1, v, vlen);
    blk[nlen + 1 + vlen] = '\0';
    call->hbuf.n += nlen + vlen + 2;
    call->nheaders++;
    return len;
}

/* ---- calls */

static void call_free(http_call_t *call)
{
    http_client_t *c = call->c;
    list_del(&call->link);
    if (call->waiting) {
        list_del(&call->wait_link);
        c->nwaiting--;
    }
    uncharge(call, call->held);
    if (call->fb_timer)
        reactor_timer_cancel(c->r, call->fb_timer);
    if (call->easy) {
        /* a handle curl would not let go of must never be added again (its
         * next add would fail with CURLM_ADDED_ALREADY): it is not reused */
        bool reusable = !call->unusable &&
                        (!call->added ||
                         curl_multi_remove_handle(call->sh->multi, call->easy) == CURLM_OK);
        if (reusable && c->nidle < HTTP_IDLE_MAX) {
            curl_easy_reset(call->easy);
            c->idle[c->nidle++] = call->easy;
        } else {
            curl_easy_cleanup(call->easy);
        }
    }
    if (call->added) {
        c->in_flight--;
        call->sh->in_flight--;
    }
    curl_slist_free_all(call->req_headers);
    free(call->errbuf);
    sbuf_free(&call->hbuf);
    free(call->method);
    free(call->url);
    free(call->body);
    sbuf_free(&call->resp_body);
    free(call);
}

/* Whether a handshake failure was the network's (a reset or a close in the
 * middle of it: worth another try) rather than the peers disagreeing. */
static bool handshake_cut(http_call_t *call)
{
    long os_errno = 0;
    curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &os_errno);
    return os_errno != 0;
}

static http_outcome outcome_of(http_call_t *call, CURLcode rc, const char **msg)
{
    *msg = curl_easy_strerror(rc);
    if (rc != CURLE_OK && call->errbuf && call->errbuf[0])
        *msg = call->errbuf;
    if (call->no_h2) {
        *msg = "http_version is \"2\" but the server did not offer h2 in the TLS handshake "
               "(ALPN) and answered over HTTP/1.1";
        return HTTP_E_TLS;
    }
    switch (rc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        /* curl has one code for both of its timeouts: no first byte and
         * not yet at the total limit means the connect limit hit */
        if (call->first_byte)
            return HTTP_E_TIMEOUT_TOTAL;
        {
            curl_off_t connect_us = 0;
            curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
            return connect_us == 0 ? HTTP_E_TIMEOUT_CONNECT : HTTP_E_TIMEOUT_TOTAL;
        }
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return HTTP_E_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
        return handshake_cut(call) ? HTTP_E_CONNECT : HTTP_E_TLS;
    /* the certificate or the trust store: only a change of the CA, the
     * URL or the server's certificate makes another try succeed */
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return HTTP_E_TLS;
    case CURLE_WRITE_ERROR:
        if (call->aborted) {
            *msg = "the streamed body was refused by its reader";
            return HTTP_E_ABORTED;
        }
        if (call->over_budget) {
            *msg = "the responses in flight passed max_response_bytes_in_flight";
            return HTTP_E_BUDGET;
        }
        if (call->too_large) {
            *msg = "the response body is larger than the limit";
            return HTTP_E_TOO_LARGE;
        }
        *msg = "out of memory while receiving";
        return HTTP_E_NOMEM;
    case CURLE_OUT_OF_MEMORY:
        return HTTP_E_NOMEM;
    default:
        return HTTP_E_TRANSFER;
    }
}

/* Ends CALL with OUTCOME: calls back, then frees it. */
static void call_end(http_call_t *call, http_outcome outcome, const char *msg)
{
    long status = 0;
    if (call->easy && call->added)
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    /* the header list points into hbuf, which is complete now */
    loom_header few[32], *hs = few;
    if (call->nheaders > 32 && !(hs = malloc(call->nheaders * sizeof *hs))) {
        hs = few;
        call->nheaders = 32;
    }
    const char *hp = call->hbuf.p;
    for (size_t i = 0; i < call->nheaders; i++) {
        hs[i].name = hp;
        hp += strlen(hp) + 1;
        hs[i].value = hp;
        hp += strlen(hp) + 1;
    }
    http_response resp = {
        .outcome = outcome,
        .error = outcome == HTTP_OK ? NULL : msg,
        .status = (int)status,
        .headers = hs,
        .nheaders = call->nheaders,
        .body = call->resp_body.p ? call->resp_body.p : "",
        .body_len = call->resp_body.n,
        .first_byte_us = call->first_byte ? call->first_us : 0,
        .total_us = reactor_now_us(call->c->r) - call->start_us,
        .streamed = call->streamed,
    };
    /* the transfer leaves the multi handle before the callback, so that the
     * callback may start new calls on a connection this one freed */
    if (call->easy && call->added) {
        if (curl_multi_remove_handle(call->sh->multi, call->easy) != CURLM_OK)
            call->unusable = true;
        call->added = false;
        call->c->in_flight--;
        call->sh->in_flight--;
    }
    call->done(call, &resp, call->ud);
    if (hs != few)
        free(hs);
    call_free(call);
}

static void drain(shard *sh)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(sh->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        http_call_t *call = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        if (!call)
            continue;
        const char *msg;
        http_outcome o = outcome_of(call, m->data.result, &msg);
        call_end(call, o, msg);
    }
}

static void on_first_byte_timeout(reactor_t *r, reactor_timer_t *t, void *ud)
{
    http_call_t *call = ud;
    (void)r;
    (void)t;
    call->fb_timer = NULL;
    call_end(call, HTTP_E_TIMEOUT_FIRST_BYTE, "no response before the first-byte timeout");
}

static void on_early_failure(reactor_t *r, void *ud)
{
    http_call_t *call = ud;
    (void)r;
    call_end(call, call->failed,
             call->failed_msg ? call->failed_msg : http_outcome_name(call->failed));
}

static int setup_easy(http_call_t *call, const http_call_opts *t)
{
    CURL *e = call->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_URL, call->url);
    SET(CURLOPT_PRIVATE, call);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, call);
    SET(CURLOPT_HTTPHEADER, call->req_headers);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    bool https = strncasecmp(call->url, "https://", 8) == 0;
    http_version v = t ? t->version : HTTP_VERSION_AUTO;
    SET(CURLOPT_HTTP_VERSION, v == HTTP_VERSION_1_1 ? (long)CURL_HTTP_VERSION_1_1
                              : v == HTTP_VERSION_2 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                    : (long)CURL_HTTP_VERSION_2TLS);
    if (https && v == HTTP_VERSION_2) {
        /* curl offers http/1.1 beside h2 in ALPN and falls back to it
         * silently; curl 7.88 tells which one it chose only with the
         * answer's status line (on_header) */
        call->need_h2 = true;
    }
    if (https && !call->errbuf && !(call->errbuf = calloc(1, CURL_ERROR_SIZE)))
        return -1;
    if (call->errbuf)
        SET(CURLOPT_ERRORBUFFER, call->errbuf);
    if (t && t->ca_file)
        SET(CURLOPT_CAINFO, t->ca_file);
    if (t && t->ca_path) {
        SET(CURLOPT_CAPATH, t->ca_path);
        /* a directory alone: the system's bundle must not vouch too */
        if (!t->ca_file)
            SET(CURLOPT_CAINFO, (char *)NULL);
    }
    if (t && t->ca_file && !t->ca_path)
        SET(CURLOPT_CAPATH, (char *)NULL);
    if (!https && v == HTTP_VERSION_2 &&
        curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        /* h2c with prior knowledge before curl 8.0 fails the second
         * request on a connection ("Error in the HTTP2 framing layer",
         * curl issue 10634): one request per connection there, which
         * works, unmultiplexed (docs/operations.md) */
        SET(CURLOPT_FORBID_REUSE, 1L);
    } else {
        /* wait for a stream on the connection being set up or already open
         * rather than opening one per call: HTTP/2 multiplexes them all */
        SET(CURLOPT_PIPEWAIT, 1L);
    }
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    long rb = t && t->recv_buffer ? (long)t->recv_buffer : HTTP_RECV_BUFFER_MIN;
    rb = rb < HTTP_RECV_BUFFER_MIN   ? HTTP_RECV_BUFFER_MIN
         : rb > HTTP_RECV_BUFFER_MAX ? HTTP_RECV_BUFFER_MAX
                                     : rb;
    if (rc == CURLE_OK) {
        /* curl 7.88 refuses to resize the receive buffer of a handle that
         * still holds one (a handle reset for reuse after an HTTP/2
         * transfer does) with CURLE_BAD_FUNCTION_ARGUMENT: the handle keeps
         * the buffer it has, which is no reason to fail the call */
        CURLcode brc = curl_easy_setopt(e, CURLOPT_BUFFERSIZE, rb);
        if (brc != CURLE_BAD_FUNCTION_ARGUMENT)
            rc = brc;
    }
    if (t && t->connect_ms)
        SET(CURLOPT_CONNECTTIMEOUT_MS, (long)t->connect_ms);
    if (t && t->total_ms)
        SET(CURLOPT_TIMEOUT_MS, (long)t->total_ms);
    if (strcmp(call->method, "POST") == 0) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        SET(CURLOPT_POSTFIELDS, call->body ? call->body : "");
    } else if (strcmp(call->method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, call->method);
        if (call->body) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
            SET(CURLOPT_POSTFIELDS, call->body);
        }
    }
#undef SET
    return rc == CURLE_OK ? 0 : -1;
}

void http_request_free(loom_http_request *req)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (req->headers[i].value) /* may be a key */
            explicit_bzero((char *)req->headers[i].value, strlen(req->headers[i].value));
        free((char *)req->headers[i].name);
        free((char *)req->headers[i].value);
    }
    free(req->headers);
    free(req->method);
    free(req->url);
    free(req->body);
    memset(req, 0, sizeof *req);
}

/* Moves REQ's allocations into CALL (stolen whatever happens). */
static int take_request(http_call_t *call, loom_http_request *req)
{
    int rc = 0;
    call->method = req->method;
    call->url = req->url;
    call->body = req->body;
    req->method = req->url = req->body = NULL;
    call->body_len = req->body_len;
    for (size_t i = 0; i < req->nheaders && rc == 0; i++) {
        const loom_header *h = &req->headers[i];
        char *line = NULL;
        if (!h->name || !h->value || asprintf(&line, "%s: %s", h->name, h->value) < 0) {
            rc = -1;
            break;
        }
        struct curl_slist *l = curl_slist_append(call->req_headers, line);
        if (l)
            call->req_headers = l;
        else
            rc = -1;
        /* the line may hold an API key: wipe it before freeing */
        explicit_bzero(line, strlen(line));
        free(line);
    }
    http_request_free(req);
    if (rc == 0) {
        /* curl would wait for a 100 Continue before sending a large body */
        struct curl_slist *l = curl_slist_append(call->req_headers, "Expect:");
        if (!l)
            return -1;
        call->req_headers = l;
    }
    return rc;
}

/* Where a new call goes: shards are filled in order up to HTTP_SHARD_FILL
 * calls each, preferring one that likely has an idle connection to reuse
 * (fewer in flight than it once had), so a shard's load, and so its set
 * of connections, stays steady; past that, the least loaded. */
static shard *pick_shard(http_client_t *c)
{
    shard *least = &c->shards[0], *open = NULL;
    for (size_t i = 0; i < HTTP_SHARDS; i++) {
        shard *sh = &c->shards[i];
        if (sh->in_flight < HTTP_SHARD_FILL) {
            if (sh->in_flight < sh->peak)
                return sh;
            if (!open)
                open = sh;
        }
        if (sh->in_flight < least->in_flight)
            least = sh;
    }
    return open ? open : least;
}

/* Fails CALL with OUTCOME on a later pass, as promised (MSG static, or
 * NULL). The call's memory is in hand, so this cannot fail. */
static void fail_early(http_call_t *call, http_outcome outcome, const char *msg)
{
    call->failed = outcome;
    call->failed_msg = msg;
    (void)reactor_post_embedded(call->c->r, &call->post, on_early_failure, call);
}

/* Adds CALL's transfer to a shard's multi handle, or fails it. */
static void hand_to_curl(http_call_t *call)
{
    http_client_t *c = call->c;
    call->sh = pick_shard(c);
    CURLMcode mrc = curl_multi_add_handle(call->sh->multi, call->easy);
    if (mrc == CURLM_OK) {
        call->added = true;
        c->in_flight++;
        if (++call->sh->in_flight > call->sh->peak)
            call->sh->peak = call->sh->in_flight;
        return;
    }
    /* a refusal that is not about memory is curl's, and says so */
    fail_early(call, mrc == CURLM_OUT_OF_MEMORY ? HTTP_E_NOMEM : HTTP_E_TRANSFER,
               mrc == CURLM_OUT_OF_MEMORY ? NULL : curl_multi_strerror(mrc));
}

/* A post, once per pass while calls wait: hands the next
 * HTTP_ADDS_PER_PASS of them to curl, in the order they came. */
static void feed_curl(reactor_t *r, void *ud)
{
    http_client_t *c = ud;
    c->pass_us = reactor_now_us(r);
    c->adds_in_pass = 0;
    while (c->nwaiting > 0 && c->adds_in_pass < HTTP_ADDS_PER_PASS) {
        http_call_t *call = LIST_OWNER(list_first(&c->waiting), http_call_t, wait_link);
        list_del(&call->wait_link);
        call->waiting = false;
        c->nwaiting--;
        c->adds_in_pass++;
        hand_to_curl(call);
    }
    if (c->nwaiting > 0)
        (void)reactor_post_embedded(r, &c->feed, feed_curl, c);
}

http_call_t *http_call(http_client_t *c, loom_http_request *req, const http_call_opts *t,
                       http_done_fn done, void *ud)
{
    http_call_t *call = calloc(1, sizeof *call);
    if (!call) {
        http_request_free(req);
        errno = ENOMEM;
        return NULL;
    }
    call->c = c;
    sbuf_init(&call->resp_body, c->opt.max_body);
    sbuf_init(&call->hbuf, 0);
    list_add_head(&c->calls, &call->link);
    call->done = done;
    call->ud = ud;
    call->on_data = t ? t->on_data : NULL;
    call->data_ud = t ? t->data_ud : NULL;
    call->start_us = reactor_now_us(c->r);
    bool ok = take_request(call, req) == 0;
    if (ok && (!call->method || !call->url)) {
        call_free(call);
        errno = EINVAL;
        return NULL;
    }
    if (ok)
        call->easy = c->nidle ? c->idle[--c->nidle] : curl_easy_init();
    ok = ok && call->easy && setup_easy(call, t) == 0;
    if (ok && t && t->first_byte_ms) {
        call->fb_timer = reactor_timer_add(c->r, t->first_byte_ms * REACTOR_MSEC,
                                           on_first_byte_timeout, call);
        ok = call->fb_timer != NULL;
    }
    if (!ok) {
        fail_early(call, HTTP_E_NOMEM, NULL);
        return call;
    }
    /* this pass's share first; past it (or behind calls already waiting,
     * to keep their order) the call waits for feed_curl */
    uint64_t now = reactor_now_us(c->r);
    if (now != c->pass_us) {
        c->pass_us = now;
        c->adds_in_pass = 0;
    }
    if (c->nwaiting == 0 && c->adds_in_pass < HTTP_ADDS_PER_PASS) {
        c->adds_in_pass++;
        hand_to_curl(call);
        return call;
    }
    list_add_tail(&c->waiting, &call->wait_link);
    call->waiting = true;
    c->nwaiting++;
    (void)reactor_post_embedded(c->r, &c->feed, feed_curl, c); /* -EBUSY: queued already */
    return call;
}

void http_cancel(http_call_t *call)
{
    if (!call)
        return;
    reactor_post_cancel(call->c->r, &call->post);
    call_free(call);
}

size_t http_in_flight(const http_client_t *c)
{
    return c->in_flight + c->nwaiting;
}

size_t http_bytes_in_flight(const http_client_t *c)
{
    return c->bytes;
}

/* ---- the client */

/* Closes every shard's connections and multi handle. */
static void shards_cleanup(http_client_t *c)
{
    for (size_t i = 0; i < HTTP_SHARDS; i++) {
        shard *sh = &c->shards[i];
        if (!sh->multi)
            continue;
        /* curl may still ask for timers while closing connections */
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, NULL);
        if (sh->timer)
            reactor_timer_cancel(c->r, sh->timer);
        sh->timer = NULL;
        curl_multi_cleanup(sh->multi);
        sh->multi = NULL;
    }
}

http_client_t *http_client_new(reactor_t *r, const http_options *opt)
{
    http_client_t *c = calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->r = r;
    list_init(&c->calls);
    list_init(&c->waiting);
    if (opt)
        c->opt = *opt;
    if (!c->opt.max_body)
        c->opt.max_body = HTTP_DEFAULT_MAX_BODY;
    if (!c->opt.max_bytes_in_flight)
        c->opt.max_bytes_in_flight = HTTP_DEFAULT_BYTES_IN_FLIGHT;
    if (!(c->idle = calloc(HTTP_IDLE_MAX, sizeof *c->idle)))
        goto nomem;
    /* reference counted by curl; a no-op after the first call */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto io;
    /* each shard may hold its share of the connections */
    long per_shard = c->opt.max_connections > 0
                         ? (c->opt.max_connections + HTTP_SHARDS - 1) / HTTP_SHARDS : 0;
    for (size_t i = 0; i < HTTP_SHARDS; i++) {
        shard *sh = &c->shards[i];
        sh->c = c;
        if (!(sh->multi = curl_multi_init())) {
            shards_cleanup(c);
            curl_global_cleanup();
            goto io;
        }
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
        if (per_shard > 0)
            curl_multi_setopt(sh->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, per_shard);
        /* keep what a full shard uses: curl's default (4 x the transfers
         * now in the handle) closes idle connections when a load dips */
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS,
                          per_shard > 0 ? per_shard : (long)(4 * HTTP_SHARD_FILL));
    }
    return c;
io:
    free(c->idle);
    free(c);
    errno = EIO;
    return NULL;
nomem:
    if (c)
        free(c->idle);
    free(c);
    errno = ENOMEM;
    return NULL;
}

void http_client_free(http_client_t *c)
{
    if (!c)
        return;
    reactor_post_cancel(c->r, &c->feed);
    LIST_EACH_SAFE(l, nx, &c->calls) {
        http_call_t *call = LIST_OWNER(l, http_call_t, link);
        reactor_post_cancel(c->r, &call->post);
        call_free(call);
    }
    shards_cleanup(c);
    for (size_t i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    free(c->idle);
    free(c);
    curl_global_cleanup();
}
