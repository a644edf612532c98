/* providers.c -- config entries made into the engine's provider instances,
 * each with its upstream and the entry's limits; HTTP providers also get a
 * share of the open-file budget. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/core/http.h"
#include "daemon/providers.h"
#include "daemon/upstream/upstream.h"

/* Sockets the process needs besides provider connections: clients, the
 * store, plugins' files. */
enum { FD_RESERVE = 256 };

struct providers {
    reactor_t *r;              /* borrowed */
    http_client_t *http;       /* owned: made with the first HTTP provider */
    long nofile;               /* the open-file limit then in force */
    int64_t http_conns;        /* sum of what the HTTP providers may hold open */
    size_t response_budget;    /* for the client; 0: its default */
    /* copies of the entries' CA paths, owned: the upstreams' call options
     * point at them, and a reload frees the config before the generation
     * whose upstreams use them ends */
    char **paths;
    size_t npaths;
};

providers_t *providers_new(reactor_t *r)
{
    providers_t *p = calloc(1, sizeof *p);
    if (p)
        p->r = r;
    return p;
}

void providers_set_response_budget(providers_t *p, size_t bytes)
{
    p->response_budget = bytes;
}

const http_client_t *providers_http_client(const providers_t *p)
{
    return p ? p->http : NULL;
}

void providers_free(providers_t *p)
{
    if (!p)
        return;
    http_client_free(p->http);
    for (size_t i = 0; i < p->npaths; i++)
        free(p->paths[i]);
    free(p->paths);
    free(p);
}

/* A copy of PATH (NULL: none) that lives as long as P, in *OUT. -1 when out
 * of memory. */
static int keep_path(providers_t *p, const char *path, const char **out)
{
    *out = NULL;
    if (!path)
        return 0;
    char **v = realloc(p->paths, (p->npaths + 1) * sizeof *v);
    if (!v)
        return -1;
    p->paths = v;
    if (!(v[p->npaths] = strdup(path)))
        return -1;
    *out = v[p->npaths++];
    return 0;
}

/* What the engine's upstream callback needs of one providers_add. */
typedef struct add_ctx {
    providers_t *p;
    engine_t *e;
    const config_provider *cp; /* borrowed */
} add_ctx;

/* The client shared by the set's HTTP providers, made on first use with
 * what the open-file limit leaves after FD_RESERVE. NULL with a message. */
static http_client_t *client(providers_t *p, char *err, size_t errlen)
{
    if (p->http)
        return p->http;
    p->nofile = http_raise_nofile();
    if (p->nofile < 0)
        p->nofile = 1024;
    http_options ho = { .max_connections = p->nofile > 2 * FD_RESERVE ? p->nofile - FD_RESERVE
                                                                      : p->nofile / 2,
                      .max_bytes_in_flight = p->response_budget };
    if (!(p->http = http_client_new(p->r, &ho)))
        snprintf(err, errlen, "cannot start the HTTP client: %s", strerror(errno));
    return p->http;
}

/* engine_upstream_fn: the upstream of provider NAME (DEF, STATE borrowed)
 * with its entry's limits and batching. An invoke provider's runs in this
 * process and holds no socket; an HTTP provider's is refused when its
 * concurrency does not fit in the open-file budget. Returns an upstream the
 * engine owns. */
static upstream_t *make_upstream(void *ud, const char *name, const loom_provider *def,
                                 void *state, char *err, size_t errlen)
{
    add_ctx *c = ud;
    providers_t *p = c->p;
    const config_provider *cp = c->cp;
    if (def->invoke) {
        upstream_options io = {
            .batch_max_inputs = cp->batch_max_inputs,
            .batch_max_tokens = cp->batch_max_tokens,
            .batch_window_ms = cp->batch_window_ms,
        };
        /* an isolated plugin's: STATE is the transport's, sending to its helpers */
        upstream_t *up = engine_provider_isolated(c->e, cp->plugin)
                             ? upstream_new_transport(p->r, name, def, NULL, &engine_iso_transport,
                                                      state, &cp->limits, &io)
                             : upstream_new_invoke(p->r, name, def, state, &cp->limits, &io);
        if (!up)
            snprintf(err, errlen, "%s", errno == EINVAL ? "negative limits" : "out of memory");
        return up;
    }
    if (!client(p, err, errlen))
        return NULL;
    int64_t conns = cp->limits.concurrency > 0 ? cp->limits.concurrency : RL_DEFAULT_CEILING;
    if (p->http_conns + conns + FD_RESERVE > p->nofile) {
        snprintf(err, errlen,
                 "limits.concurrency allows %lld calls in flight (%lld over all HTTP providers) "
                 "but the open-file limit is %ld, of which %d are kept for the daemon: raise "
                 "the limit (LimitNOFILE= in the unit, ulimit -n) or lower the concurrency",
                 (long long)conns, (long long)(p->http_conns + conns), p->nofile, FD_RESERVE);
        return NULL;
    }
    upstream_options uo = {
        .timeouts = { .connect_ms = cp->timeout_connect_ms ? cp->timeout_connect_ms : 10000,
                      .first_byte_ms = cp->timeout_first_byte_ms ? cp->timeout_first_byte_ms
                                                                 : 120000,
                      .total_ms = cp->timeout_total_ms ? cp->timeout_total_ms : 600000 },
        .batch_max_inputs = cp->batch_max_inputs,
        .batch_max_tokens = cp->batch_max_tokens,
        .batch_window_ms = cp->batch_window_ms,
        .batch_api = cp->batch_api,
    };
    uo.timeouts.version = cp->http_version;
    if (keep_path(p, cp->ca_file, &uo.timeouts.ca_file) < 0 ||
        keep_path(p, cp->ca_path, &uo.timeouts.ca_path) < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    upstream_t *up = upstream_new(p->r, p->http, name, def, state, &cp->limits, &uo);
    if (!up) {
        snprintf(err, errlen, "%s", errno == EINVAL ? "negative limits" : "out of memory");
        return NULL;
    }
    /* counted now: the engine adds the instance once this returns */
    p->http_conns += conns;
    return up;
}

int providers_add(providers_t *p, engine_t *e, const config_provider *cp, char *err,
                  size_t errlen)
{
    add_ctx c = { p, e, cp };
    return engine_add_provider(e, cp->name, cp->plugin, cp->options, make_upstream, &c, err,
                               errlen);
}
