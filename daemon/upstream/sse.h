/* sse.h -- the framing of server-sent events (text/event-stream), as the
 * WHATWG HTML standard defines it, for streamed provider answers.
 *
 * Bytes go in as they arrive, cut anywhere (inside a line, between the CR
 * and LF of a line end); whole events come out. Lines end with LF, CRLF or
 * a lone CR; a line starting with ':' is a comment; `event:` names the
 * event, `data:` lines are joined with LF, `id:`, `retry:` and unknown
 * fields are ignored; one space after the colon is dropped; an empty line
 * ends the event, and one without data is not dispatched. What is left
 * when the stream ends without an empty line is not an event (the standard
 * drops it too), so a cut answer never yields half an event.
 *
 * Why the host frames and plugins only decode: the framing is the same for
 * every provider, and its edge cases (chunk boundaries, CRLF, comments used
 * as keep-alives) are easier to get right once, with tests, than in each
 * plugin.
 *
 * Threads: a parser is used by one thread at a time. */
#ifndef LOOM_DAEMON_SSE_H
#define LOOM_DAEMON_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/containers.h"

typedef struct sse_parser {
    sbuf line;                 /* the line being read */
    sbuf data;                 /* the event's data lines, each followed by LF */
    sbuf event;                /* the event's name */
    bool has_data;             /* a data line came (data may still be empty) */
    bool skip_lf;              /* the last byte was a CR: an LF next is its pair */
    size_t max;                /* longest line and longest event data */
    size_t events;             /* dispatched so far */
} sse_parser;

/* One event: NAME ("" when it had none) and DATA (DATA_LEN bytes,
 * NUL-terminated), both borrowed for the call. Nonzero stops the feed,
 * which returns that value. */
typedef int (*sse_event_fn)(void *ud, const char *name, const char *data, size_t data_len);

/* An empty parser whose lines and event data are at most MAX bytes each
 * (0: 16 MiB). */
void sse_init(sse_parser *p, size_t max);

/* Frees what P holds; P may be initialised again. */
void sse_fini(sse_parser *p);

/* Reads LEN bytes of BUF, calling FN(UD, ...) for each event they complete,
 * in order. 0; the first nonzero value FN returned; -E2BIG when a line or an
 * event's data passes the cap; -ENOMEM. After a nonzero return P must not
 * be fed again. */
int sse_feed(sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *ud);

#endif
