/* trace_export.c -- the tracer: a bounded buffer of finished spans and the
 * thread that posts them to the collector (see trace.h).
 *
 * Why a thread of its own with a blocking curl easy handle, rather than the
 * reactor's curl multi: spans are a side channel. A collector that is slow,
 * down, or answering 503 must cost the jobs nothing, and the simplest way to
 * be sure is that no code on the reactor ever waits for it: the reactor only
 * links a span into a list under a mutex held for a few instructions.
 *
 * Batches: the thread wakes when a batch's worth of spans is buffered or the
 * oldest has waited batch_delay_ms, and posts up to batch_spans at once. A
 * post that fails in a way worth retrying (no connection, a timeout, 429,
 * 502, 503, 504: the OTLP specification's list) is tried again after a
 * doubling back-off (with jitter), at most max_retries times; then its spans
 * are dropped.
 * Any other answer (400: the collector will never take that body) drops
 * them at once. While posts fail, new spans pile up only to max_queued, and
 * the rest are dropped and counted: memory stays bounded whatever the
 * collector does. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/trace/trace.h"

#define DEFAULT_MAX_QUEUED 2048
#define DEFAULT_BATCH 512
#define DEFAULT_DELAY_MS 1000
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_RETRIES 3
#define DEFAULT_BACKOFF_MS 250

struct tracer {
    char *url;                     /* ENDPOINT/v1/traces */
    char *service;
    trace_options o;               /* defaults applied; its strings not used */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* a batch is full, or stop */
    /* under mu */
    trace_span *head, *tail;       /* buffered, oldest first */
    size_t nqueued;
    size_t nposting;               /* taken by the thread, not yet settled */
    uint64_t oldest_ms;            /* CLOCK_MONOTONIC ms the head was queued */
    bool stop;
    uint64_t stop_deadline_ms;     /* flush until then, once stopping */
    trace_stats_t st;
    /* the thread's own */
    CURL *curl;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* An absolute CLOCK_MONOTONIC time for pthread_cond_timedwait (the
 * condition variable is made with that clock). */
static struct timespec abs_ms(uint64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
    return ts;
}

static void free_list(trace_span *s)
{
    while (s) {
        trace_span *next = s->next;
        trace_span_free(s);
        s = next;
    }
}

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

enum { POST_OK, POST_RETRY, POST_GIVE_UP };

/* One POST of BODY, cut short at DEADLINE_MS when it is not 0. */
static int post_once(tracer_t *t, const char *body, uint64_t deadline_ms)
{
    uint64_t timeout = t->o.post_timeout_ms;
    if (deadline_ms) {
        uint64_t now = mono_ms();
        if (now >= deadline_ms)
            return POST_GIVE_UP;
        if (deadline_ms - now < timeout)
            timeout = deadline_ms - now;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h)
        return POST_RETRY;
    CURL *c = t->curl;
    curl_easy_setopt(c, CURLOPT_URL, t->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout ? timeout : 1));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout ? timeout : 1));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    if (rc != CURLE_OK)
        return POST_RETRY; /* no answer: connection refused, reset, timed out */
    if (status >= 200 && status < 300)
        return POST_OK; /* a partial success is not retried either */
    if (status == 429 || status == 502 || status == 503 || status == 504)
        return POST_RETRY;
    return POST_GIVE_UP;
}

/* Posts the N spans from FIRST (owned by the thread), with retries; settles
 * the counters and frees them. Called without the lock. */
static void post_batch(tracer_t *t, trace_span *first, size_t n)
{
    json_t *req = trace_otlp_request(first, n, t->service);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    bool ok = false;
    uint64_t backoff = t->o.retry_backoff_ms;
    for (int attempt = 0; body; attempt++) {
        pthread_mutex_lock(&t->mu);
        uint64_t deadline = t->stop ? t->stop_deadline_ms : 0;
        pthread_mutex_unlock(&t->mu);
        int r = post_once(t, body, deadline);
        if (r == POST_OK) {
            ok = true;
            break;
        }
        pthread_mutex_lock(&t->mu);
        t->st.failed_posts++;
        bool again = r == POST_RETRY && attempt < t->o.max_retries;
        if (again) {
            /* half the back-off, plus up to as much again at random, so
             * daemons that lost one collector do not all come back at once;
             * a stop cuts it short: the flush deadline decides */
            uint8_t rnd[TRACE_SPAN_ID_SIZE];
            uint64_t x = 0;
            trace_new_span_id(rnd);
            memcpy(&x, rnd, sizeof x);
            uint64_t until = mono_ms() + backoff / 2 + x % (backoff / 2 + 1);
            if (t->stop && until > t->stop_deadline_ms)
                again = false;
            struct timespec ts = abs_ms(until);
            while (again && !t->stop && mono_ms() < until)
                pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            backoff *= 2;
        }
        pthread_mutex_unlock(&t->mu);
        if (!again)
            break;
    }
    free(body);
    pthread_mutex_lock(&t->mu);
    if (ok)
        t->st.exported += n;
    else
        t->st.dropped += n;
    t->nposting -= n;
    pthread_mutex_unlock(&t->mu);
    free_list(first);
}

/* Takes up to batch_spans from the head (under the lock). */
static trace_span *take_batch(tracer_t *t, size_t *n)
{
    trace_span *first = t->head, *last = NULL, *s = first;
    size_t k = 0;
    while (s && k < t->o.batch_spans) {
        last = s;
        s = s->next;
        k++;
    }
    if (last)
        last->next = NULL;
    t->head = s;
    if (!s)
        t->tail = NULL;
    t->nqueued -= k;
    t->nposting += k;
    t->oldest_ms = mono_ms(); /* what is left waits from now for the next batch */
    *n = k;
    return first;
}

static void *export_main(void *ud)
{
    tracer_t *t = ud;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->stop) {
            if (!t->head || mono_ms() >= t->stop_deadline_ms)
                break;
        } else if (t->nqueued < t->o.batch_spans) {
            uint64_t due = t->head ? t->oldest_ms + t->o.batch_delay_ms : mono_ms() + 60000;
            if (mono_ms() < due) {
                struct timespec ts = abs_ms(due);
                pthread_cond_timedwait(&t->cv, &t->mu, &ts);
                continue;
            }
            if (!t->head)
                continue;
        }
        size_t n;
        trace_span *batch = take_batch(t, &n);
        pthread_mutex_unlock(&t->mu);
        post_batch(t, batch, n);
        pthread_mutex_lock(&t->mu);
    }
    /* past the flush deadline: what is left is given up */
    t->st.dropped += t->nqueued;
    free_list(t->head);
    t->head = t->tail = NULL;
    t->nqueued = 0;
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void tracer_free(tracer_t *t)
{
    if (!t)
        return;
    if (t->curl)
        curl_easy_cleanup(t->curl);
    free_list(t->head);
    free(t->url);
    free(t->service);
    free(t);
}

tracer_t *trace_start(const trace_options *o, char *err, size_t errlen)
{
    tracer_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->o = *o;
    if (!t->o.max_queued)
        t->o.max_queued = DEFAULT_MAX_QUEUED;
    if (!t->o.batch_spans)
        t->o.batch_spans = DEFAULT_BATCH;
    if (!t->o.batch_delay_ms)
        t->o.batch_delay_ms = DEFAULT_DELAY_MS;
    if (!t->o.post_timeout_ms)
        t->o.post_timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!t->o.max_retries)
        t->o.max_retries = DEFAULT_RETRIES;
    else if (t->o.max_retries < 0)
        t->o.max_retries = 0;
    if (!t->o.retry_backoff_ms)
        t->o.retry_backoff_ms = DEFAULT_BACKOFF_MS;
    const char *ep = o->endpoint ? o->endpoint : "";
    size_t len = strlen(ep);
    while (len && ep[len - 1] == '/')
        len--;
    size_t cap = len + sizeof "/v1/traces";
    t->url = malloc(cap);
    t->service = strdup(o->service_name ? o->service_name : "loomd");
    if (!t->url || !t->service) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(t->url, cap, "%.*s/v1/traces", (int)len, ep);
    if (!(t->curl = curl_easy_init())) {
        snprintf(err, errlen, "cannot make a curl handle");
        goto fail;
    }
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        snprintf(err, errlen, "%s", strerror(rc));
        goto fail;
    }
    pthread_mutex_init(&t->mu, NULL);
    if ((rc = pthread_create(&t->thread, NULL, export_main, t)) != 0) {
        snprintf(err, errlen, "cannot start the exporter thread: %s", strerror(rc));
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        goto fail;
    }
    return t;
fail:
    tracer_free(t);
    return NULL;
}

void trace_stop(tracer_t *t, uint64_t flush_ms)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->stop_deadline_ms = mono_ms() + flush_ms;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    tracer_free(t);
}

void trace_submit(tracer_t *t, trace_span *s)
{
    if (!s)
        return;
    if (!t) {
        trace_span_free(s);
        return;
    }
    if (!s->end_ns)
        s->end_ns = trace_now_ns();
    s->next = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->stop || t->nqueued >= t->o.max_queued) {
        t->st.dropped++;
        pthread_mutex_unlock(&t->mu);
        trace_span_free(s);
        return;
    }
    bool first = !t->tail;
    if (first) {
        t->head = s;
        t->oldest_ms = mono_ms();
    } else {
        t->tail->next = s;
    }
    t->tail = s;
    /* the first span starts the batch's delay, which the thread times;
     * a full batch goes at once */
    if (++t->nqueued == t->o.batch_spans || first)
        pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

double trace_sample_ratio(const tracer_t *t)
{
    return t->o.sample;
}

void trace_get_stats(tracer_t *t, trace_stats_t *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->st;
    out->queued = t->nqueued + t->nposting;
    pthread_mutex_unlock(&t->mu);
}
