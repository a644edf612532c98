/* cluster_limits_schema.c -- the tables of the shared provider limits, a
 * step of the PostgreSQL store's migrations (daemon/store). Kept apart from
 * cluster_limits.c so the store links it without the limits' code. */
#include "daemon/cluster/cluster_limits.h"

/* One bucket per provider name: a GCRA per rate dimension (the theoretical
 * arrival time, microseconds since the Unix epoch, as the local limiter
 * keeps it), the shared pause, and the concurrency slots leased per node
 * (expiring with their window). */
const char CLUSTER_LIMITS_SCHEMA[] =
    "CREATE TABLE loom_rl_bucket ("
    " provider text PRIMARY KEY,"
    " tat_req_us bigint NOT NULL DEFAULT 0,"
    " tat_tok_us bigint NOT NULL DEFAULT 0,"
    " tat_in_us bigint NOT NULL DEFAULT 0,"
    " tat_out_us bigint NOT NULL DEFAULT 0,"
    " paused_until_ms bigint NOT NULL DEFAULT 0,"
    " pause_why text);"
    "CREATE TABLE loom_rl_slots ("
    " provider text NOT NULL,"
    " node text NOT NULL,"
    " slots bigint NOT NULL,"
    " expires_ms bigint NOT NULL,"
    " PRIMARY KEY (provider, node));";
