/* providers.h -- provider instances built from the config file's entries
 * and handed to an engine ready to use.
 *
 * Why outside the engine: an entry of the config file carries what the
 * engine has no business knowing -- limits, batching, HTTP timeouts -- and
 * an HTTP provider needs things the engine must not make: the HTTP client
 * and a share of the process's open-file budget. This module turns an entry
 * into an instance the engine runs (engine_add_provider) and the upstream
 * its calls go through, whatever kind of provider it is (HTTP, or invoke in
 * this process). loomd (one set per engine generation) and `loomctl run`
 * use it alike.
 *
 * Owns: the HTTP client shared by the set's HTTP providers (made with the
 * first one), and the count of connections they may hold open.
 * May call: the engine's public API, the upstream, core (HTTP client,
 * reactor), the config file's types.
 * Threads: reactor thread only. */
#ifndef LOOM_DAEMON_PROVIDERS_H
#define LOOM_DAEMON_PROVIDERS_H

#include <stddef.h>

#include "daemon/core/reactor.h"
#include "daemon/engine/engine.h"

typedef struct providers providers_t;
struct config_provider; /* daemon/config_file.h */

/* An empty set over R (borrowed, must outlive it). NULL when out of memory. */
providers_t *providers_new(reactor_t *r);

/* Caps the response bytes the set's HTTP client buffers across all calls
 * (0: the client's default, HTTP_DEFAULT_BYTES_IN_FLIGHT); a call past it
 * fails as `upstream` with "response_budget" in its message. Before the
 * first providers_add. */
void providers_set_response_budget(providers_t *p, size_t bytes);

/* The set's HTTP client (borrowed), or NULL before its first HTTP provider. */
const http_client_t *providers_http_client(const providers_t *p);

/* Frees the set and its HTTP client. Free it after every engine it added
 * providers to: their upstreams send through the client. NULL is a no-op. */
void providers_free(providers_t *p);

/* Adds the instance of config entry CP (borrowed) to E: the plugin's
 * options checked and its init run by the engine, and an upstream with CP's
 * limits and batching (and, for an HTTP provider, its timeouts). The first
 * HTTP provider makes the HTTP client and raises the open-file limit; one
 * whose concurrency does not fit in what is left of it is refused. Invoke
 * providers hold no socket and count against neither. 0, or -1 with a
 * message in ERR (E is then unchanged). */
int providers_add(providers_t *p, engine_t *e, const struct config_provider *cp, char *err,
                  size_t errlen);

#endif
