/* test_config_cluster.c -- `cluster` in the daemon's config file: its
 * defaults, every key, and every error at its FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"

Test(config_cluster, defaults)
{
    ct_parsed p = ct_parse("workers: 2\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(ptr, p.c->cluster.node, NULL)); /* the host name then */
    cr_assert(eq(u64, p.c->cluster.lease_ms, 10000));
    cr_assert(eq(u64, p.c->cluster.poll_ms, 1000));
    cr_assert(eq(u64, p.c->cluster.limits_window_ms, 250));
    cr_assert(eq(str, p.c->cluster.local_state, "./loom-local"));
    cr_assert(eq(ptr, p.c->cluster.password_file, NULL));
    ct_done(&p);
}

Test(config_cluster, every_key)
{
    ct_parsed p = ct_parse("state: \"postgresql://loom@127.0.0.1:5432/loom\"\n"
                           "cluster:\n  node: worker-1.east:2\n  lease: 2s\n"
                           "  password_file: /etc/loom/pgpass\n  local_state: /var/lib/loom\n"
                           "  poll: 500ms\n  limits_window: 100ms\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_assert(eq(str, p.c->state, "postgresql://loom@127.0.0.1:5432/loom"));
    cr_assert(eq(str, p.c->cluster.node, "worker-1.east:2"));
    cr_assert(eq(u64, p.c->cluster.lease_ms, 2000));
    cr_assert(eq(str, p.c->cluster.password_file, "/etc/loom/pgpass"));
    cr_assert(eq(str, p.c->cluster.local_state, "/var/lib/loom"));
    cr_assert(eq(u64, p.c->cluster.poll_ms, 500));
    cr_assert(eq(u64, p.c->cluster.limits_window_ms, 100));
    ct_done(&p);
}

Test(config_cluster, errors_at_their_position)
{
    ct_refused("cluster: yes\n", "c.yaml:1:10: error:");
    ct_refused("cluster:\n  nodes: a\n", "c.yaml:2:3: error:");
    ct_refused("cluster:\n  node: \"two words\"\n", "c.yaml:2:9: error: 'node' must be");
    ct_refused("cluster:\n  node: \"\"\n", "c.yaml:2:9: error:");
    /* a lease shorter than a PostgreSQL restart loses every job's lease */
    ct_refused("cluster:\n  lease: 500ms\n", "c.yaml:2:10: error: 'lease' must be from 1000ms");
    ct_refused("cluster:\n  lease: soon\n", "c.yaml:2:10: error: 'lease' must be a duration");
    ct_refused("cluster:\n  poll: 10ms\n", "c.yaml:2:9: error: 'poll' must be from 100ms");
    ct_refused("cluster:\n  limits_window: 10s\n", "c.yaml:2:18: error: 'limits_window' must be");
    ct_refused("cluster:\n  local_state: 3\n", "c.yaml:2:16: error:");
}
