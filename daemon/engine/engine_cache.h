/* engine_cache.h -- the engine's memo of leaf results (`cache: true`), internal.
 *
 * One cache per engine, shared by all of its jobs and touched only on the
 * reactor thread, so it has no locks. It maps a canonical key string (what
 * was asked of whom: see engine_cache_key) to a successful result, holds at
 * most a fixed number of entries and evicts the least recently used one.
 * Results are shared, not copied: the engine never modifies a result in
 * place, so a reference is enough and a hit costs no copy. */
#ifndef LOOM_DAEMON_ENGINE_CACHE_H
#define LOOM_DAEMON_ENGINE_CACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The bound used when engine_options.cache_entries is 0. */
#define ENGINE_CACHE_DEFAULT_ENTRIES 10000

typedef struct engine_cache engine_cache;

/* A new empty cache holding at most MAX_ENTRIES (0: the default). NULL when
 * out of memory. */
engine_cache *engine_cache_new(size_t max_entries);
/* Drops every entry (and its reference to the result) and frees C. NULL is
 * a no-op. */
void engine_cache_free(engine_cache *c);

/* The key of a request: KIND ("call", "embed", "lambda"), NAME (provider
 * instance or lambda), MODEL (may be NULL) and REQUEST (borrowed), dumped as
 * one compact JSON array with sorted object keys, so equal requests give
 * equal strings whatever order their objects were built in. A new string
 * (free it), or NULL when out of memory. */
char *engine_cache_key(const char *kind, const char *name, const char *model, json_t *request);
/* FNV-1a, 64 bits, over N bytes of S. */
uint64_t engine_cache_hash(const char *s, size_t n);

/* The result stored under KEY (borrowed: incref it to keep it), or NULL.
 * A hit makes the entry the most recently used. */
json_t *engine_cache_get(engine_cache *c, const char *key);
/* Stores VALUE under KEY, taking a new reference to VALUE (the caller keeps
 * its own); replaces what KEY held, and evicts the least recently used entry
 * when full. 0, or -1 when out of memory (the cache is unchanged). */
int engine_cache_put(engine_cache *c, const char *key, json_t *value);
/* How many entries C holds. */
size_t engine_cache_count(const engine_cache *c);

#endif
