/* upstream_key.c -- the Loom-Step-Key header: which steps a request is for
 * (and the traceparent header: which trace, at the end).
 *
 * Every request carries the step keys of the calls it serves, so that an
 * operator reading a provider's logs (or a test counting what a fake server
 * was paid) can tell which step paid for which request. A chat request
 * serves one call; a batch of embeddings serves several, and lists their
 * keys in the order of its parts, separated by commas.
 *
 * Why the keys are escaped: a header value ends at a line break, so a key
 * holding a control character could end the header early or add one of its
 * own. Step keys are printable ASCII today, but they are built from workflow
 * paths, and the wire must not depend on that staying true. Bytes outside
 * printable ASCII, '%' and ',' (the list separator) are written as %XX, so
 * the list can always be split and each key decoded back exactly.
 *
 * Why a cap: servers refuse long header lines (8 KiB is a common limit), and
 * a batch of two thousand one-input calls would list two thousand keys.
 * Keys that do not fit are left out and counted in a last entry "+N". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/upstream/upstream_internal.h"

#define STEP_KEY_HEADER "Loom-Step-Key"
#define STEP_KEY_MAX 4096 /* bytes of the value, escapes included */

/* Appends KEY to B, escaped (see above). */
static void add_escaped(sbuf *b, const char *key)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%' || *p == ',') {
            char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            sbuf_add(b, e, 3);
        } else {
            sbuf_addc(b, (char)*p);
        }
    }
}

/* The header's value for X's live parts: a new string (free it), "" when no
 * part has a key, or NULL when out of memory. */
static char *step_keys_value(const xfer *x)
{
    sbuf b, one;
    sbuf_init(&b, 0);
    sbuf_init(&one, 0);
    size_t left_out = 0;
    bool first = true;
    for (size_t i = 0; i < x->nparts; i++) {
        const upstream_call_t *c = x->parts[i].call;
        if (!c || c->finished || !c->step_key)
            continue;
        if (left_out) {
            left_out++;
            continue;
        }
        sbuf_reset(&one);
        add_escaped(&one, c->step_key);
        if (one.failed)
            goto nomem;
        /* room is kept for the ",+N" that may follow */
        if (b.n + 1 + one.n + 24 > STEP_KEY_MAX) {
            left_out = 1;
            continue;
        }
        if (!first)
            sbuf_addc(&b, ',');
        sbuf_add(&b, one.p, one.n);
        first = false;
    }
    if (left_out)
        sbuf_addf(&b, "%s+%zu", first ? "" : ",", left_out);
    sbuf_free(&one);
    return sbuf_steal(&b, NULL);
nomem:
    sbuf_free(&one);
    sbuf_free(&b);
    return NULL;
}

/* Appends the header NAME: VALUE to ENC, taking VALUE (malloc'd) whatever
 * happens. 0 or -ENOMEM. */
static int add_header(loom_http_request *enc, const char *name, char *value)
{
    char *n = value ? strdup(name) : NULL;
    loom_header *h = n ? realloc(enc->headers, (enc->nheaders + 1) * sizeof *h) : NULL;
    if (!h) {
        free(n);
        free(value);
        return -ENOMEM;
    }
    enc->headers = h;
    h[enc->nheaders++] = (loom_header){ .name = n, .value = value };
    return 0;
}

int xfer_add_step_keys(const xfer *x, loom_http_request *enc)
{
    char *value = step_keys_value(x);
    if (!value)
        return -ENOMEM;
    if (!value[0]) {
        free(value);
        return 0;
    }
    return add_header(enc, STEP_KEY_HEADER, value);
}

/* The trace context goes with the request so that a provider (or a proxy
 * in front of it) that traces can hang its spans under the call's. A batch
 * serves several calls but is one request: the header names one parent,
 * the first live part's, as a request can have only one. */
int xfer_add_traceparent(const xfer *x, loom_http_request *enc)
{
    const char *tp = NULL;
    for (size_t i = 0; i < x->nparts && !tp; i++) {
        const upstream_call_t *c = x->parts[i].call;
        if (c && !c->finished && c->traceparent[0])
            tp = c->traceparent;
    }
    return tp ? add_header(enc, "traceparent", strdup(tp)) : 0;
}
