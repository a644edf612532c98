/* test_sse.c -- server-sent events framing (daemon/upstream/sse.c): every
 * case is fed whole, byte by byte, and cut at every offset, and must give
 * the same events each way. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/upstream/sse.h"

/* What the parser dispatched, as "name|data\n" lines. */
typedef struct seen {
    sbuf out;
    int stop_after;            /* > 0: the callback stops after this many */
    int n;
} seen;

static int on_event(void *ud, const char *name, const char *data, size_t len)
{
    seen *s = ud;
    cr_assert(eq(sz, strlen(data), len), "data is NUL-terminated at its length");
    sbuf_addf(&s->out, "%s|", name);
    sbuf_add(&s->out, data, len);
    sbuf_addc(&s->out, '\n');
    s->n++;
    return s->stop_after > 0 && s->n >= s->stop_after ? 7 : 0;
}

/* IN fed in pieces: the first CUT bytes, then the rest one byte at a time
 * when BYTEWISE, else at once. The events as a new string (free it). */
static char *run(const char *in, size_t cut, bool bytewise)
{
    sse_parser p;
    seen s = { .out = SBUF_INIT };
    size_t n = strlen(in);
    sse_init(&p, 0);
    cr_assert(eq(int, sse_feed(&p, in, cut, on_event, &s), 0));
    if (bytewise) {
        for (size_t i = cut; i < n; i++)
            cr_assert(eq(int, sse_feed(&p, in + i, 1, on_event, &s), 0));
    } else {
        cr_assert(eq(int, sse_feed(&p, in + cut, n - cut, on_event, &s), 0));
    }
    sse_fini(&p);
    return sbuf_steal(&s.out, NULL);
}

/* IN gives WANT however it is cut. */
static void check(const char *in, const char *want)
{
    size_t n = strlen(in);
    char *whole = run(in, n, false);
    cr_assert(eq(str, whole, (char *)want), "whole: %s", in);
    free(whole);
    char *bytes = run(in, 0, true);
    cr_assert(eq(str, bytes, (char *)want), "byte by byte: %s", in);
    free(bytes);
    for (size_t cut = 0; cut <= n; cut++) {
        char *got = run(in, cut, false);
        cr_assert(eq(str, got, (char *)want), "cut at %zu: %s", cut, in);
        free(got);
    }
}

Test(sse, data_lines)
{
    check("data: one\n\ndata: two\n\n", "|one\n|two\n");
}

Test(sse, multi_line_data_joined_by_lf)
{
    check("data: a\ndata: b\ndata:\ndata: c\n\n", "|a\nb\n\nc\n");
}

Test(sse, event_names_and_their_reset)
{
    check("event: message_start\ndata: {}\n\ndata: x\n\n", "message_start|{}\n|x\n");
}

Test(sse, comments_and_other_fields_are_ignored)
{
    check(": keep-alive\nid: 7\nretry: 100\nfoo: bar\ndata: x\n\n:ping\n\n", "|x\n");
}

Test(sse, crlf_and_lone_cr_end_lines)
{
    check("event: e\r\ndata: a\r\n\r\ndata: b\r\rdata: c\n\n", "e|a\n|b\n|c\n");
}

Test(sse, one_space_after_the_colon_is_dropped)
{
    check("data:x\n\ndata:  two spaces\n\ndata\n\n", "|x\n| two spaces\n|\n");
}

Test(sse, an_event_without_data_is_not_dispatched)
{
    check("event: lonely\n\ndata: after\n\n", "|after\n");
}

Test(sse, json_with_colons_and_the_openai_end)
{
    check("data: {\"a\":\"b: c\"}\n\ndata: [DONE]\n\n", "|{\"a\":\"b: c\"}\n|[DONE]\n");
}

Test(sse, an_unfinished_event_at_the_end_is_not_an_event)
{
    check("data: whole\n\ndata: cut", "|whole\n");
    check("data: whole\n\ndata: cut\n", "|whole\n");
}

Test(sse, the_callback_stops_the_feed)
{
    sse_parser p;
    seen s = { .out = SBUF_INIT, .stop_after = 1 };
    const char *in = "data: 1\n\ndata: 2\n\n";
    sse_init(&p, 0);
    cr_assert(eq(int, sse_feed(&p, in, strlen(in), on_event, &s), 7));
    cr_assert(eq(int, s.n, 1));
    sse_fini(&p);
    sbuf_free(&s.out);
}

Test(sse, a_line_past_the_cap_is_refused)
{
    sse_parser p;
    seen s = { .out = SBUF_INIT };
    char line[64];
    memset(line, 'x', sizeof line);
    sse_init(&p, 16);
    cr_assert(eq(int, sse_feed(&p, "data: ", 6, on_event, &s), 0));
    cr_assert(eq(int, sse_feed(&p, line, sizeof line, on_event, &s), -E2BIG));
    cr_assert(eq(int, s.n, 0));
    sse_fini(&p);
    sbuf_free(&s.out);
}

Test(sse, event_data_past_the_cap_is_refused)
{
    sse_parser p;
    seen s = { .out = SBUF_INIT };
    const char *in = "data: 0123456789\ndata: 0123456789\n\n";
    sse_init(&p, 16); /* each line fits, both together do not */
    cr_assert(eq(int, sse_feed(&p, in, strlen(in), on_event, &s), -E2BIG));
    cr_assert(eq(int, s.n, 0));
    sse_fini(&p);
    sbuf_free(&s.out);
}
