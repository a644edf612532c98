/* upstream_sync.c -- pulling the limiter toward what the server says.
 *
 * OpenAI (and vLLM, LiteLLM and others that copy it) send
 * x-ratelimit-remaining-{requests,tokens} with x-ratelimit-reset-* as Go
 * durations ("6m0s", "12ms"). Anthropic sends
 * anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining
 * with -reset as an RFC 3339 time. Both are reduced to rl_sync's four
 * figures; for Anthropic the smallest remaining of the token buckets is used,
 * which is what rl_sync expects ("most restrictive"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "daemon/upstream/upstream.h"

static const char *header(const loom_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].name, name) == 0)
            return h[i].value;
    return NULL;
}

static int64_t number(const char *s)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ')
        end++;
    return errno || *end || v < 0 ? -1 : (int64_t)v;
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int upstream_parse_rfc3339(const char *s, int64_t *ms)
{
    struct tm tm = { 0 };
    int y, mo, d, h, mi, se, frac_ms = 0;
    const char *p = s;
    if (!s || digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 || *p++ != '-' ||
        digits(&p, 2, &d) < 0 || (*p != 'T' && *p != 't' && *p != ' ') || !*p++ ||
        digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0 || *p++ != ':' ||
        digits(&p, 2, &se) < 0)
        return -EINVAL;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (!nd)
            return -EINVAL;
        for (; nd < 3; nd++)
            frac_ms *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0)
            return -EINVAL;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ms = ((int64_t)t - offset_s) * 1000 + frac_ms;
    return 0;
}

/* A Go duration or an RFC 3339 time, as milliseconds from now (-1: none). */
static int64_t reset_ms(const char *v, int64_t now_unix)
{
    uint64_t d;
    int64_t at;
    if (!v)
        return -1;
    if (rl_parse_duration(v, &d) == 0)
        return (int64_t)d;
    if (upstream_parse_rfc3339(v, &at) == 0) {
        int64_t left = at - now_unix * 1000;
        return left > 0 ? (int64_t)rl_cap_wait_ms((uint64_t)left) : 0;
    }
    return -1;
}

void upstream_sync_headers(rl_t *rl, const loom_header *h, size_t n, int64_t now_unix)
{
    int64_t rem_req = number(header(h, n, "x-ratelimit-remaining-requests"));
    int64_t reset_req = reset_ms(header(h, n, "x-ratelimit-reset-requests"), now_unix);
    int64_t rem_tok = number(header(h, n, "x-ratelimit-remaining-tokens"));
    int64_t reset_tok = reset_ms(header(h, n, "x-ratelimit-reset-tokens"), now_unix);

    if (rem_req < 0) {
        rem_req = number(header(h, n, "anthropic-ratelimit-requests-remaining"));
        reset_req = reset_ms(header(h, n, "anthropic-ratelimit-requests-reset"), now_unix);
    }
    if (rem_tok < 0) {
        static const char *const buckets[] = { "tokens", "input-tokens", "output-tokens" };
        char name[64];
        for (size_t i = 0; i < sizeof buckets / sizeof *buckets; i++) {
            snprintf(name, sizeof name, "anthropic-ratelimit-%s-remaining", buckets[i]);
            int64_t r = number(header(h, n, name));
            if (r < 0 || (rem_tok >= 0 && r >= rem_tok))
                continue;
            rem_tok = r;
            snprintf(name, sizeof name, "anthropic-ratelimit-%s-reset", buckets[i]);
            reset_tok = reset_ms(header(h, n, name), now_unix);
        }
    }
    if (rem_req >= 0 || rem_tok >= 0)
        rl_sync(rl, rem_req, reset_req, rem_tok, reset_tok);
}
