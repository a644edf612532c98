/* config_cluster.c -- `cluster` in the config file:
 *
 *   state: "postgresql://loom@db.internal/loom"
 *   cluster:
 *     node: worker-1               # unique per daemon, stable across restarts
 *     lease: 10s                   # a job's lease; heartbeats every third
 *     password_file: /etc/loom/pgpass
 *     local_state: /var/lib/loom   # this machine's own files
 *     limits_window: 250ms         # a shared limit lease's window
 *     poll: 1s                     # the safety net beside LISTEN/NOTIFY
 *
 * The lease bounds how long a dead daemon's jobs wait before another takes
 * them over; it must outlast a PostgreSQL restart or failover, or every
 * daemon loses its jobs' leases at once (they are then taken over, which
 * is safe, only wasteful): hence 1 s at least. */
#include "daemon/config_cluster.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"

static const char *const cluster_keys[] = { "node",        "lease",         "password_file",
                                             "local_state", "limits_window", "poll",
                                             NULL };

int config_cluster_default(config_cluster *c)
{
    memset(c, 0, sizeof *c);
    c->lease_ms = 10000;
    c->limits_window_ms = 250;
    c->poll_ms = 1000;
    c->local_state = strdup("./loom-local");
    return c->local_state ? 0 : -ENOMEM;
}

static void cluster_string(dsl_diags *d, const dsl_ynode *x, const char *key, char **out)
{
    if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_STRING || x->u.scalar.len == 0 ||
        memchr(x->u.scalar.str, '\0', x->u.scalar.len)) {
        dsl_type_error(d, x, key, "a non-empty string");
        return;
    }
    char *s = strdup(x->u.scalar.str);
    if (!s) {
        dsl_error(d, x->line, x->col, "out of memory");
        return;
    }
    free(*out);
    *out = s;
}

static void cluster_duration(dsl_diags *d, const dsl_ynode *x, const char *key, uint64_t min_ms,
                             uint64_t max_ms, uint64_t *out)
{
    const char *why;
    uint64_t ms;
    if (x->kind != DSL_Y_SCALAR || dsl_parse_duration(x->u.scalar.str, x->u.scalar.len, &ms, &why) < 0)
        dsl_error(d, x->line, x->col, "'%s' must be a duration such as 250ms or 10s", key);
    else if (ms < min_ms || ms > max_ms)
        dsl_error(d, x->line, x->col, "'%s' must be from %llums to %llums", key,
                  (unsigned long long)min_ms, (unsigned long long)max_ms);
    else
        *out = ms;
}

/* A node name goes into NOTIFY payloads, which are split at spaces. */
static bool cluster_node_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("-_.:", *s)))
            return false;
    return true;
}

void config_cluster_parse(dsl_diags *d, const dsl_ynode *y, config_cluster *c)
{
    const dsl_ynode *x;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "cluster", "a mapping such as { node: worker-1, lease: 10s }");
        return;
    }
    dsl_check_keys(d, y, cluster_keys, "cluster");
    if ((x = dsl_ymap_get(y, "node"))) {
        char *node = NULL;
        cluster_string(d, x, "node", &node);
        if (node && !cluster_node_ok(node)) {
            dsl_error(d, x->line, x->col,
                      "'node' must be 1 to 63 letters, digits, '-', '_', '.' or ':'");
            free(node);
        } else if (node) {
            free(c->node);
            c->node = node;
        }
    }
    if ((x = dsl_ymap_get(y, "lease")))
        cluster_duration(d, x, "lease", 1000, 3600000, &c->lease_ms);
    if ((x = dsl_ymap_get(y, "password_file")))
        cluster_string(d, x, "password_file", &c->password_file);
    if ((x = dsl_ymap_get(y, "local_state")))
        cluster_string(d, x, "local_state", &c->local_state);
    if ((x = dsl_ymap_get(y, "limits_window")))
        cluster_duration(d, x, "limits_window", 50, 5000, &c->limits_window_ms);
    if ((x = dsl_ymap_get(y, "poll")))
        cluster_duration(d, x, "poll", 100, 60000, &c->poll_ms);
}

void config_cluster_free(config_cluster *c)
{
    free(c->node);
    free(c->password_file);
    free(c->local_state);
    memset(c, 0, sizeof *c);
}
