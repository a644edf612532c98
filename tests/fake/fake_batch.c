/* fake_batch.c -- the fake provider's store of files and batches, its
 * timer, its faults and counters; the endpoints are in fake_batch_openai.c
 * and fake_batch_anthropic.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "tests/fake/fake_batch_internal.h"

/* ---- buffers */

static bool fb_buf_reserve(fb_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t nc = b->cap ? b->cap : 1024;
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

bool fb_buf_add(fb_buf *b, const void *s, size_t n)
{
    if (!fb_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

/* jansson writes straight into the buffer: no text per line to free */
static int dump_cb(const char *s, size_t n, void *data)
{
    return fb_buf_add(data, s, n) ? 0 : -1;
}

bool fb_buf_add_line(fb_buf *b, const json_t *j)
{
    return json_dump_callback(j, dump_cb, b, JSON_COMPACT) == 0 && fb_buf_add(b, "\n", 1);
}

void fb_buf_free(fb_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- clocks and ids */

double fb_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void fb_rfc3339(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void fb_new_id(fake_batch *b, const char *prefix, char *out)
{
    snprintf(out, FB_ID_MAX, "%s%x%06lu", prefix, b->pid, ++b->ids);
}

/* ---- answers */

int fb_reply_bytes(fake_batch_resp *rs, int status, const char *ctype, const char *p, size_t n)
{
    char *body = malloc(n + 1);
    if (!body)
        return -1;
    if (n)
        memcpy(body, p, n);
    body[n] = 0;
    free(rs->body);
    rs->body = body;
    rs->len = n;
    rs->status = status;
    rs->content_type = ctype;
    return 0;
}

int fb_reply_json(fake_batch_resp *rs, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return -1;
    free(rs->body);
    rs->body = text;
    rs->len = strlen(text);
    rs->status = status;
    rs->content_type = "application/json";
    return 0;
}

int fb_reply_error(fake_batch *b, fake_batch_resp *rs, fb_api api, int status, const char *type,
                   const char *code, const char *msg)
{
    json_t *j;
    if (api == FB_ANTHROPIC) {
        char rid[FB_ID_MAX];
        fb_new_id(b, "req_", rid);
        j = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type", type, "message", msg,
                      "request_id", rid);
    } else {
        j = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", msg, "type", type, "param", "code", code);
    }
    return fb_reply_json(rs, status, j);
}

/* ---- queries */

bool fb_query(const char *query, const char *key, char *out, size_t n)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t pl = amp ? (size_t)(amp - p) : strlen(p);
        if (pl > kl && p[kl] == '=' && !strncmp(p, key, kl)) {
            size_t vl = pl - kl - 1;
            if (vl >= n)
                vl = n - 1;
            memcpy(out, p + kl + 1, vl);
            out[vl] = 0;
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

long fb_query_limit(const char *query, long def, long max)
{
    char v[32];
    if (!fb_query(query, "limit", v, sizeof v))
        return def;
    char *end;
    errno = 0;
    long l = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    return l < 1 ? 1 : l > max ? max : l;
}

/* ---- the store */

fb_file *fb_file_add(fake_batch *b, char *filename, char *purpose, fb_buf *data)
{
    if (b->nfiles == b->capfiles) {
        size_t nc = b->capfiles ? b->capfiles * 2 : 16;
        fb_file **f = realloc(b->files, nc * sizeof *f);
        if (!f)
            return NULL;
        b->files = f;
        b->capfiles = nc;
    }
    fb_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    fb_new_id(b, "file-", f->id);
    f->filename = filename;
    f->purpose = purpose;
    f->created_at = time(NULL);
    f->data = *data;
    *data = (fb_buf){ 0 };
    b->files[b->nfiles++] = f;
    return f;
}

fb_file *fb_file_find(const fake_batch *b, const char *id)
{
    for (size_t i = 0; i < b->nfiles; i++)
        if (!strcmp(b->files[i]->id, id))
            return b->files[i];
    return NULL;
}

static void file_destroy(fb_file *f)
{
    free(f->filename);
    free(f->purpose);
    fb_buf_free(&f->data);
    free(f);
}

void fb_file_remove(fake_batch *b, fb_file *f)
{
    for (size_t i = 0; i < b->nfiles; i++)
        if (b->files[i] == f) {
            memmove(&b->files[i], &b->files[i + 1], (b->nfiles - i - 1) * sizeof *b->files);
            b->nfiles--;
            break;
        }
    file_destroy(f);
}

fb_batch *fb_batch_new(fb_api api, size_t n)
{
    fb_batch *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->api = api;
    x->nlines = n;
    if (n && !(x->lines = calloc(n, sizeof *x->lines))) {
        free(x);
        return NULL;
    }
    return x;
}

void fb_batch_destroy(fb_batch *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->nlines; i++) {
        free(x->lines[i].custom_id);
        json_decref(x->lines[i].req);
    }
    free(x->lines);
    json_decref(x->metadata);
    json_decref(x->errors);
    fb_buf_free(&x->results);
    free(x);
}

fb_batch *fb_batch_find(const fake_batch *b, fb_api api, const char *id)
{
    for (size_t i = 0; i < b->nbatches; i++)
        if (b->batches[i]->api == api && !strcmp(b->batches[i]->id, id))
            return b->batches[i];
    return NULL;
}

static bool running(const fb_batch *x)
{
    return x->state == FB_RUNNING || x->state == FB_CANCELLING;
}

/* Sets the timer for the batch that ends first (or none). */
static void arm(fake_batch *b)
{
    double due = 0;
    for (size_t i = 0; i < b->nbatches; i++) {
        const fb_batch *x = b->batches[i];
        if (running(x) && (due == 0 || x->due_mono < due))
            due = x->due_mono;
    }
    struct itimerspec its = { 0 };
    if (due > 0) {
        double d = due - fb_now();
        if (d < 1e-6)
            d = 1e-6; /* zero would disarm it */
        its.it_value.tv_sec = (time_t)d;
        its.it_value.tv_nsec = (long)((d - (double)(time_t)d) * 1e9);
    }
    timerfd_settime(b->tfd, 0, &its, NULL);
}

int fb_batch_add(fake_batch *b, fb_batch *x)
{
    if (b->nbatches == b->capbatches) {
        size_t nc = b->capbatches ? b->capbatches * 2 : 16;
        fb_batch **v = realloc(b->batches, nc * sizeof *v);
        if (!v)
            return -1;
        b->batches = v;
        b->capbatches = nc;
    }
    double now = fb_now();
    x->created_mono = now;
    x->created_at = time(NULL);
    x->due_mono = now + b->o.delay_ms / 1000.0;
    b->created++;
    b->creates++;
    if (x->state == FB_RUNNING) {
        x->expires = b->o.expire_every > 0 && b->created % b->o.expire_every == 0;
        b->lines += (long)x->nlines;
    }
    b->batches[b->nbatches++] = x;
    arm(b);
    return 0;
}

size_t fb_done_now(const fb_batch *x, double now)
{
    if (x->state == FB_CANCELLING)
        return x->done_at_cancel;
    if (x->state != FB_RUNNING)
        return x->nlines;
    /* an expiring batch gets through half its lines before its window closes */
    size_t cap = x->expires ? x->nlines / 2 : x->nlines;
    double span = x->due_mono - x->created_mono;
    if (span <= 0)
        return cap;
    double f = (now - x->created_mono) / span;
    size_t d = f >= 1 ? x->nlines : f <= 0 ? 0 : (size_t)floor(f * (double)x->nlines);
    return d < cap ? d : cap;
}

size_t fb_failing(const fake_batch *b, size_t done)
{
    return b->o.fail_every > 0 ? done / (size_t)b->o.fail_every : 0;
}

void fb_end_soon(fake_batch *b, fb_batch *x)
{
    x->due_mono = fb_now();
    arm(b);
}

size_t fb_first_duplicate(const fb_batch *x, bool *oom)
{
    size_t cap = 64;
    while (cap < x->nlines * 2)
        cap *= 2;
    const char **set = calloc(cap, sizeof *set);
    if (!set) {
        *oom = true;
        return x->nlines;
    }
    size_t dup = x->nlines;
    for (size_t i = 0; i < x->nlines && dup == x->nlines; i++) {
        const char *id = x->lines[i].custom_id;
        size_t h = 1469598103934665603u;
        for (const char *p = id; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211u;
        for (size_t k = h & (cap - 1);; k = (k + 1) & (cap - 1)) {
            if (!set[k]) {
                set[k] = id;
                break;
            }
            if (!strcmp(set[k], id)) {
                dup = i;
                break;
            }
        }
    }
    free(set);
    return dup;
}

fb_line_fate fb_fate(fake_batch *b, const fb_batch *x, size_t i)
{
    if (x->state == FB_CANCELLING) {
        if (i >= x->done_at_cancel)
            return FB_LINE_CANCELLED;
    } else if (x->expires && i >= x->nlines / 2) {
        return FB_LINE_EXPIRED;
    }
    if (b->o.fail_every > 0 && (i + 1) % (size_t)b->o.fail_every == 0)
        return FB_LINE_FAIL;
    return FB_LINE_ANSWER;
}

/* Ends every batch whose time has come. 0, or -1 when memory ran out (that
 * batch is tried again 10 ms later). */
static int advance(fake_batch *b)
{
    double now = fb_now();
    int rc = 0;
    for (size_t i = 0; i < b->nbatches; i++) {
        fb_batch *x = b->batches[i];
        if (!running(x) || x->due_mono > now)
            continue;
        bool expiring = x->expires && x->state == FB_RUNNING;
        int r = x->api == FB_OPENAI ? fb_openai_end(b, x, now) : fb_anthropic_end(b, x, now);
        if (r < 0) {
            rc = -1;
            x->due_mono = now + 0.01; /* tried again soon, not in a busy loop */
        } else if (expiring)
            b->expired++;
    }
    return rc;
}

/* ---- the public face */

fake_batch *fake_batch_new(const fake_batch_opts *o)
{
    fake_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->o = *o;
    if (b->o.fault_every < 1)
        b->o.fault_every = 1;
    b->pid = (unsigned)getpid();
    b->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (b->tfd < 0) {
        free(b);
        return NULL;
    }
    return b;
}

void fake_batch_reset(fake_batch *b)
{
    for (size_t i = 0; i < b->nfiles; i++)
        file_destroy(b->files[i]);
    for (size_t i = 0; i < b->nbatches; i++)
        fb_batch_destroy(b->batches[i]);
    b->nfiles = b->nbatches = 0;
    b->created = 0;
    b->fault_seq = 0;
    b->uploads = b->creates = b->lines = b->polls = b->results = b->cancels = b->lists = 0;
    b->line_failures = b->expired = b->faults = 0;
    arm(b);
}

void fake_batch_free(fake_batch *b)
{
    if (!b)
        return;
    fake_batch_reset(b);
    free(b->files);
    free(b->batches);
    close(b->tfd);
    free(b);
}

static bool under(const char *path, const char *root)
{
    size_t n = strlen(root);
    return !strncmp(path, root, n) && (path[n] == 0 || path[n] == '/');
}

bool fake_batch_is_endpoint(const char *path)
{
    return under(path, "/v1/files") || under(path, "/v1/batches") || under(path, "/v1/messages/batches");
}

int fake_batch_fault_code(const char *s)
{
    return !strcmp(s, "429") ? 429 : !strcmp(s, "500") ? 500 : !strcmp(s, "503") ? 503 : 0;
}

/* --batch-fault: the error each API gives for CODE. */
static int reply_fault(fake_batch *b, fake_batch_resp *rs, fb_api api)
{
    int code = b->o.fault_code;
    b->faults++;
    rs->fault = "batch_fault";
    if (code == 429) {
        /* both: the fast hint for clients that read it, the standard one for the rest */
        snprintf(rs->extra, sizeof rs->extra, "retry-after-ms: 50\r\nretry-after: 1\r\n");
        return api == FB_ANTHROPIC
                   ? fb_reply_error(b, rs, api, 429, "rate_limit_error", NULL, "injected: rate limited")
                   : fb_reply_error(b, rs, api, 429, "requests", "rate_limit_exceeded", "injected: rate limited");
    }
    if (code == 503)
        return fb_reply_error(b, rs, api, 503, api == FB_ANTHROPIC ? "api_error" : "service_unavailable_error",
                              "server_is_overloaded", "injected: service unavailable");
    return fb_reply_error(b, rs, api, 500, api == FB_ANTHROPIC ? "api_error" : "server_error", NULL,
                          "injected server error");
}

int fake_batch_handle(fake_batch *b, const fake_batch_req *rq, fake_batch_resp *rs)
{
    fb_api api = under(rq->path, "/v1/messages/batches") ? FB_ANTHROPIC : FB_OPENAI;
    int r;
    if (b->o.fault_code && ++b->fault_seq % (unsigned long)b->o.fault_every == 0) {
        r = reply_fault(b, rs, api) < 0 ? -1 : 1;
    } else if (advance(b) < 0) {
        r = -1;
    } else {
        r = api == FB_ANTHROPIC ? fb_anthropic_handle(b, rq, rs) : fb_openai_handle(b, rq, rs);
        if (r == 0)
            r = fb_reply_error(b, rs, api, 404, api == FB_ANTHROPIC ? "not_found_error" : "invalid_request_error",
                               NULL, "unknown path or method") < 0 ? -1 : 1;
    }
    arm(b);
    if (r < 0) {
        free(rs->body);
        rs->body = NULL;
        return -1;
    }
    return 0;
}

int fake_batch_timer_fd(const fake_batch *b)
{
    return b->tfd;
}

int fake_batch_tick(fake_batch *b)
{
    uint64_t n;
    if (read(b->tfd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    int rc = advance(b);
    arm(b);
    return rc;
}

int fake_batch_stats(const fake_batch *b, json_t *stats)
{
    const struct {
        const char *name;
        long v;
    } c[] = {
        { "batch_uploads", b->uploads }, { "batch_creates", b->creates }, { "batch_lines", b->lines },
        { "batch_polls", b->polls }, { "batch_results", b->results }, { "batch_cancels", b->cancels },
        { "batch_lists", b->lists }, { "batch_line_failures", b->line_failures },
        { "batch_expired", b->expired }, { "batch_faults", b->faults },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        if (json_object_set_new(stats, c[i].name, json_integer(c[i].v)))
            return -1;
    return 0;
}
