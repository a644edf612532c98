/* loomd_limits.c -- the providers' limits shared with the other daemons of a
 * PostgreSQL store (daemon/cluster/cluster_limits.h): the cluster_limits_t
 * made once the store is open, every engine generation's provider limiters
 * put under it (a reload's new generation beside the old one, which keeps
 * serving its jobs, both drawing on one budget), each taken off when its
 * generation is freed, and stats.cluster.limits.
 *
 * With a SQLite state directory nothing here runs: d->limits stays NULL and
 * every function is a no-op. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cluster/cluster_limits.h"
#include "daemon/loomd.h"

/* Which generation each attached limiter belongs to, so that freeing a
 * generation takes exactly its limiters off (a limiter is attached only once
 * its record is made: none is ever left dangling). */
typedef struct limits_rec {
    lgen *g;
    rl_t *rl;
} limits_rec;

struct loomd_limits {
    cluster_limits_t *cl;
    limits_rec *v;
    size_t n, cap;
};

/* Puts every provider of G (built from CFG, whose entries give the limits)
 * under the shared budget. A provider that cannot be attached (no memory)
 * keeps only its own limits: logged, never fatal. */
static void attach_gen(loomd *d, lgen *g, const config *cfg)
{
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const config_provider *cp = &cfg->providers[i];
        upstream_t *u = engine_provider_upstream(g->eng, cp->name);
        rl_t *rl = u ? upstream_limiter(u) : NULL;
        if (!rl)
            continue;
        struct loomd_limits *L = d->limits;
        int rc = -ENOMEM;
        if (L->n == L->cap) {
            size_t nc = L->cap ? 2 * L->cap : 8;
            limits_rec *nv = realloc(L->v, nc * sizeof *nv);
            if (nv) {
                L->v = nv;
                L->cap = nc;
            }
        }
        if (L->n < L->cap && (rc = cluster_limits_attach(L->cl, cp->name, rl, &cp->limits)) == 0)
            L->v[L->n++] = (limits_rec){g, rl};
        if (rc < 0)
            log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "provider", cp->name),
                      "provider '%s' keeps only this daemon's limits: %s", cp->name,
                      strerror(-rc));
    }
}

int loomd_limits_start(loomd *d)
{
    if (!loomd_shared(d) || d->limits)
        return 0;
    cluster_limits_options o = {
        .conninfo = d->cfg->state,
        .password_file = d->cfg->cluster.password_file,
        .node = store_node(d->store),
        .window_ms = (int64_t)d->cfg->cluster.limits_window_ms,
    };
    if (!(d->limits = calloc(1, sizeof *d->limits)))
        errno = ENOMEM;
    else if (!(d->limits->cl = cluster_limits_new(d->r, &d->log, &o))) {
        int e = errno;
        free(d->limits);
        d->limits = NULL;
        errno = e;
    }
    if (!d->limits) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start the shared provider limits: %s",
                  strerror(errno));
        return -1;
    }
    /* the generations made before the store was open: only the first, from
     * the config in force */
    for (lgen *g = d->gens; g; g = g->next)
        attach_gen(d, g, d->cfg);
    return 0;
}

void loomd_limits_gen(loomd *d, lgen *g, const config *cfg)
{
    if (d->limits)
        attach_gen(d, g, cfg);
}

void loomd_limits_gen_gone(loomd *d, lgen *g)
{
    struct loomd_limits *L = d->limits;
    if (!L)
        return;
    for (size_t i = 0; i < L->n;) {
        if (L->v[i].g != g) {
            i++;
            continue;
        }
        cluster_limits_detach_limiter(L->cl, L->v[i].rl);
        L->v[i] = L->v[--L->n];
    }
}

void loomd_limits_stop(loomd *d)
{
    if (!d->limits)
        return;
    cluster_limits_free(d->limits->cl);
    free(d->limits->v);
    free(d->limits);
    d->limits = NULL;
}

json_t *loomd_limits_stats(loomd *d)
{
    if (!d->limits)
        return json_null();
    cluster_limits_stats s;
    cluster_limits_get_stats(d->limits->cl, &s);
    return json_pack("{s:b, s:I, s:I, s:I, s:I}", "connected", s.connected, "leases",
                     (json_int_t)s.leases, "returns", (json_int_t)s.returns, "denied",
                     (json_int_t)s.denied, "calls", (json_int_t)s.calls);
}
