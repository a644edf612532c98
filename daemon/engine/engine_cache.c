/* engine_cache.c -- a bounded LRU memo of leaf results for `cache: true`.
 *
 * Why a hash table plus a list: a lookup happens for every cached leaf run
 * and must not scan, and eviction must find the least recently used entry
 * at once. Entries are chained in buckets by their FNV-1a hash and linked
 * in recency order (oldest first); the full key is kept and compared, so a
 * hash collision can never return someone else's result. */
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_cache.h"
#include "common/containers.h"

/* Beyond this the buckets stop growing with the bound and chains get longer
 * instead: a huge configured bound should not cost memory up front. */
#define MAX_BUCKETS ((size_t)1 << 20)

typedef struct centry {
    struct centry *hnext;      /* in its bucket */
    list_link lru;            /* in the cache's recency list, oldest first */
    uint64_t hash;
    json_t *value;             /* reference */
    size_t keylen;
    char key[];                /* NUL-terminated, in the same allocation */
} centry;

struct engine_cache {
    centry **buckets;          /* owned array of chains */
    size_t nbuckets;           /* a power of two */
    size_t count, max;
    list_link lru;            /* head: next is the oldest */
};

uint64_t engine_cache_hash(const char *s, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

char *engine_cache_key(const char *kind, const char *name, const char *model, json_t *request)
{
    json_t *k = json_pack("[s, s?, s?, O]", kind, name, model, request);
    if (!k)
        return NULL;
    char *s = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(k);
    return s;
}

engine_cache *engine_cache_new(size_t max_entries)
{
    engine_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max = max_entries ? max_entries : ENGINE_CACHE_DEFAULT_ENTRIES;
    c->nbuckets = 16;
    while (c->nbuckets < c->max && c->nbuckets < MAX_BUCKETS)
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets)
        goto fail;
    list_init(&c->lru);
    return c;
fail:
    free(c);
    return NULL;
}

/* Unlinks E from its bucket and the recency list and frees it. */
static void centry_drop(engine_cache *c, centry *e)
{
    centry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_del(&e->lru);
    json_decref(e->value);
    free(e);
    c->count--;
}

void engine_cache_free(engine_cache *c)
{
    if (!c)
        return;
    while (!list_empty(&c->lru))
        centry_drop(c, LIST_OWNER(c->lru.next, centry, lru));
    free(c->buckets);
    free(c);
}

static centry *find(const engine_cache *c, const char *key, size_t len, uint64_t h)
{
    for (centry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

json_t *engine_cache_get(engine_cache *c, const char *key)
{
    size_t len = strlen(key);
    centry *e = find(c, key, len, engine_cache_hash(key, len));
    if (!e)
        return NULL;
    list_del(&e->lru);
    list_add_tail(&c->lru, &e->lru);
    return e->value;
}

int engine_cache_put(engine_cache *c, const char *key, json_t *value)
{
    size_t len = strlen(key);
    uint64_t h = engine_cache_hash(key, len);
    centry *e = find(c, key, len, h);
    if (e) { /* two identical calls were in flight: the later answer wins */
        json_t *old = e->value;
        e->value = json_incref(value);
        json_decref(old);
        list_del(&e->lru);
        list_add_tail(&c->lru, &e->lru);
        return 0;
    }
    if (!(e = malloc(sizeof *e + len + 1)))
        return -1;
    memcpy(e->key, key, len + 1);
    e->keylen = len;
    e->hash = h;
    e->value = json_incref(value);
    list_init(&e->lru);
    if (c->count >= c->max)
        centry_drop(c, LIST_OWNER(c->lru.next, centry, lru));
    size_t b = h & (c->nbuckets - 1);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    list_add_tail(&c->lru, &e->lru);
    c->count++;
    return 0;
}

size_t engine_cache_count(const engine_cache *c) { return c->count; }
