/* trace_context.c -- the W3C `traceparent` value, new ids, the sampling
 * decision, and the contexts of a job's span (see trace.h).
 *
 * Only version 00 is accepted: a later version may add fields this code
 * cannot read, and a submitter sending one expects them kept. Hex must be
 * lowercase, as the specification writes it, so a value read back from the
 * store is byte for byte what was sent. */
#include "daemon/trace/trace.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* N bytes from 2N lowercase hex digits at S. -1 on a bad digit. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

int trace_parse(const char *s, trace_ctx *out, const char **why)
{
    uint8_t version;
    trace_ctx c;
    if (!s || strlen(s) != TRACE_PARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-') {
        *why = "it must be 00-<32 hex digits>-<16 hex digits>-<2 hex digits>";
        return -1;
    }
    if (unhex(s, &version, 1) < 0 || version != 0) {
        *why = "only version 00 is supported";
        return -1;
    }
    if (unhex(s + 3, c.trace_id, TRACE_ID_SIZE) < 0) {
        *why = "the trace id must be 32 lowercase hex digits";
        return -1;
    }
    if (all_zero(c.trace_id, TRACE_ID_SIZE)) {
        *why = "the trace id must not be all zeros";
        return -1;
    }
    if (unhex(s + 36, c.span_id, TRACE_SPAN_ID_SIZE) < 0) {
        *why = "the parent id must be 16 lowercase hex digits";
        return -1;
    }
    if (all_zero(c.span_id, TRACE_SPAN_ID_SIZE)) {
        *why = "the parent id must not be all zeros";
        return -1;
    }
    if (unhex(s + 53, &c.flags, 1) < 0) {
        *why = "the flags must be 2 lowercase hex digits";
        return -1;
    }
    *out = c;
    return 0;
}

void trace_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_format(const trace_ctx *c, char out[TRACE_PARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    trace_hex(c->trace_id, TRACE_ID_SIZE, out + 3);
    out[35] = '-';
    trace_hex(c->span_id, TRACE_SPAN_ID_SIZE, out + 36);
    out[52] = '-';
    trace_hex(&c->flags, 1, out + 53);
}

/* splitmix64: spreads a counter into well-mixed bits */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15u;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

/* N random bytes, never all zero. getrandom does not fail for small reads
 * once the pool is ready; before that (early boot) the clocks and the
 * buffer's address stand in, since an id only has to be unique, not
 * secret. */
static void random_bytes(uint8_t *b, size_t n)
{
    ssize_t got = getrandom(b, n, GRND_NONBLOCK);
    if (got != (ssize_t)n) {
        struct timespec ts, mono;
        clock_gettime(CLOCK_REALTIME, &ts);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        uint64_t seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
                        mix64((uint64_t)mono.tv_nsec ^ (uint64_t)(uintptr_t)b);
        for (size_t i = 0; i < n; i += 8) {
            uint64_t x = mix64(seed + i);
            memcpy(b + i, &x, n - i < 8 ? n - i : 8);
        }
    }
    if (all_zero(b, n))
        b[n - 1] = 1;
}

void trace_new_trace_id(uint8_t id[TRACE_ID_SIZE])
{
    random_bytes(id, TRACE_ID_SIZE);
}

void trace_new_span_id(uint8_t id[TRACE_SPAN_ID_SIZE])
{
    random_bytes(id, TRACE_SPAN_ID_SIZE);
}

bool trace_ratio_sampled(const uint8_t trace_id[TRACE_ID_SIZE], double ratio)
{
    if (ratio >= 1.0)
        return true;
    if (!(ratio > 0.0))
        return false;
    uint64_t x = 0;
    for (int i = 8; i < TRACE_ID_SIZE; i++)
        x = x << 8 | trace_id[i];
    /* compared in 53-bit units: exact in a double */
    return (double)(x >> 11) < ratio * (double)(UINT64_C(1) << 53);
}

/* FNV-1a over a trace id, then a salt and text: a stable 64-bit span id,
 * never zero. */
static void derive_span_id(const uint8_t trace_id[TRACE_ID_SIZE], const char *salt,
                           const char *text, uint8_t out[TRACE_SPAN_ID_SIZE])
{
    uint64_t h = 0xcbf29ce484222325u;
    for (int i = 0; i < TRACE_ID_SIZE; i++)
        h = (h ^ trace_id[i]) * 0x100000001b3u;
    for (const char *p = salt; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3u;
    for (const char *p = text; p && *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3u;
    h = mix64(h);
    if (!h)
        h = 1;
    for (int i = 0; i < TRACE_SPAN_ID_SIZE; i++)
        out[i] = (uint8_t)(h >> (56 - 8 * i));
}

void trace_make_root(trace_ctx *out, double ratio)
{
    trace_new_trace_id(out->trace_id);
    derive_span_id(out->trace_id, "root", NULL, out->span_id);
    out->flags = trace_ratio_sampled(out->trace_id, ratio) ? TRACE_FLAG_SAMPLED : 0;
}

void trace_job_context(const trace_ctx *stored, const char *job_id, trace_ctx *job,
                       bool *has_parent, uint8_t parent_id[TRACE_SPAN_ID_SIZE])
{
    uint8_t marker[TRACE_SPAN_ID_SIZE];
    derive_span_id(stored->trace_id, "root", NULL, marker);
    *has_parent = memcmp(marker, stored->span_id, TRACE_SPAN_ID_SIZE) != 0;
    memcpy(parent_id, stored->span_id, TRACE_SPAN_ID_SIZE);
    memcpy(job->trace_id, stored->trace_id, TRACE_ID_SIZE);
    job->flags = stored->flags;
    derive_span_id(stored->trace_id, "job", job_id, job->span_id);
}
