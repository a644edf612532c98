/* store_id.c -- job ids: sortable, unique, ULID-like.
 *
 * 48 bits of milliseconds then 80 random bits, written big-endian in
 * Crockford base32 (10 + 16 characters), so text order is time order. Ids
 * made in the same millisecond (or after the clock stepped back) reuse the
 * last time and add one to the last random part: strictly increasing, and
 * still unguessable from outside since the starting point is random. */
#include "daemon/store/store.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define STORE_ID_MAX_MS ((UINT64_C(1) << 48) - 1)

static const char store_base32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int store_id_random(uint8_t out[10])
{
    size_t got = 0;
    while (got < 10) {
        ssize_t n = getrandom(out + got, 10 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Adds one to the 80-bit big-endian R; false when it wraps to zero. */
static bool store_id_increment(uint8_t r[10])
{
    for (int i = 9; i >= 0; i--) {
        if (++r[i] != 0)
            return true;
    }
    return false;
}

int store_id_next(store_id_gen_t *gen, uint64_t now_ms, char out[STORE_ID_SIZE])
{
    int rc;
    if (now_ms > STORE_ID_MAX_MS)
        return -EOVERFLOW;
    if (gen->used && now_ms <= gen->last_ms) {
        if (!store_id_increment(gen->last_random)) {
            /* 2^80 ids in one millisecond: borrow the next one. */
            if (gen->last_ms == STORE_ID_MAX_MS)
                return -EOVERFLOW;
            if ((rc = store_id_random(gen->last_random)) < 0)
                return rc;
            gen->last_ms++;
        }
    } else {
        if ((rc = store_id_random(gen->last_random)) < 0)
            return rc;
        gen->last_ms = now_ms;
        gen->used = true;
    }

    uint64_t t = gen->last_ms;
    for (int i = 9; i >= 0; i--, t >>= 5)
        out[i] = store_base32[t & 31];
    /* 80 bits are exactly 16 groups of 5, read from the most significant. */
    for (int i = 0; i < 16; i++) {
        int bit = i * 5, byte = bit / 8, shift = bit % 8;
        unsigned v = (unsigned)gen->last_random[byte] << 8;
        if (byte + 1 < 10)
            v |= gen->last_random[byte + 1];
        out[10 + i] = store_base32[(v >> (11 - shift)) & 31];
    }
    out[STORE_ID_LEN] = '\0';
    return 0;
}

bool store_id_valid(const char *id)
{
    if (!id || strlen(id) != STORE_ID_LEN || id[0] > '7')
        return false;
    for (int i = 0; i < STORE_ID_LEN; i++) {
        if (!id[i] || !strchr(store_base32, id[i]))
            return false;
    }
    return true;
}
