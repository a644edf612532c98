/* sse.c -- server-sent events framing (see sse.h). */
#include <errno.h>
#include <string.h>

#include "daemon/upstream/sse.h"

#define SSE_DEFAULT_MAX ((size_t)16 << 20)

void sse_init(sse_parser *p, size_t max)
{
    memset(p, 0, sizeof *p);
    p->max = max ? max : SSE_DEFAULT_MAX;
    sbuf_init(&p->line, p->max);
    sbuf_init(&p->data, p->max + 1); /* each data line carries its LF */
    sbuf_init(&p->event, p->max);
}

void sse_fini(sse_parser *p)
{
    sbuf_free(&p->line);
    sbuf_free(&p->data);
    sbuf_free(&p->event);
}

static int sbuf_err(const sbuf *b)
{
    return b->too_big ? -E2BIG : -ENOMEM;
}

/* The empty line: dispatches the event if it had data, then starts anew. */
static int dispatch(sse_parser *p, sse_event_fn fn, void *ud)
{
    int rc = 0;
    if (p->has_data) {
        size_t n = p->data.n;
        if (n > 0 && p->data.p[n - 1] == '\n')
            p->data.p[--n] = '\0'; /* the LF after the last data line is not data */
        p->events++;
        rc = fn(ud, p->event.p ? p->event.p : "", p->data.p ? p->data.p : "", n);
    }
    sbuf_reset(&p->data);
    sbuf_reset(&p->event);
    p->has_data = false;
    return rc;
}

/* One complete line (without its end) in p->line. */
static int take_line(sse_parser *p, sse_event_fn fn, void *ud)
{
    const char *s = p->line.p ? p->line.p : "";
    size_t n = p->line.n;
    if (n == 0)
        return dispatch(p, fn, ud);
    if (s[0] == ':')
        return 0; /* a comment: keep-alives are sent as these */
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen > 0 && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        if (sbuf_add(&p->data, v, vlen) < 0 || sbuf_addc(&p->data, '\n') < 0)
            return sbuf_err(&p->data);
        p->has_data = true;
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        sbuf_reset(&p->event);
        if (sbuf_add(&p->event, v, vlen) < 0)
            return sbuf_err(&p->event);
    }
    return 0; /* id, retry and unknown fields mean nothing to a provider call */
}

int sse_feed(sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *ud)
{
    size_t i = 0;
    while (i < len) {
        if (p->skip_lf) {
            p->skip_lf = false;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        /* the rest of the line in this chunk, at once */
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j > i && sbuf_add(&p->line, buf + i, j - i) < 0)
            return sbuf_err(&p->line);
        if (j == len)
            break; /* the line goes on in the next chunk */
        p->skip_lf = buf[j] == '\r';
        i = j + 1;
        int rc = take_line(p, fn, ud);
        sbuf_reset(&p->line);
        if (rc != 0)
            return rc;
    }
    return 0;
}
