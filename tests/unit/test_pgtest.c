/* test_pgtest.c -- the tests' PostgreSQL: the shared cluster answers, fresh
 * databases are distinct and usable, and a private cluster survives a
 * restart on the same URI (what the outage tests rely on). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/pgtest.h"

/* The first row's first column of SQL on URI, as a new string. */
static char *query_one(const char *uri, const char *sql)
{
    PGconn *conn = PQconnectdb(uri);
    cr_assert(conn != NULL && PQstatus(conn) == CONNECTION_OK, "connect %s: %s", uri,
              conn != NULL ? PQerrorMessage(conn) : "out of memory");
    PGresult *res = PQexec(conn, sql);
    cr_assert(eq(int, PQresultStatus(res), PGRES_TUPLES_OK), "%s: %s", sql, PQerrorMessage(conn));
    char *v = strdup(PQgetvalue(res, 0, 0));
    cr_assert(v != NULL);
    PQclear(res);
    PQfinish(conn);
    return v;
}

/* a first start runs initdb; a per-test timeout would leak in Criterion
 * 2.4's runner (LeakSanitizer), so the suite has it */
TestSuite(pgtest, .timeout = 120);

Test(pgtest, shared_cluster_and_fresh_databases)
{
    const char *admin = pgtest_admin_uri();
    cr_assert(admin != NULL, "no PostgreSQL for the tests (see the reason above)");
    cr_assert(strncmp(admin, "postgresql://", 13) == 0, "%s", admin);
    /* the durability the cluster tests claim needs fsync */
    char *fsync = query_one(admin, "SHOW fsync");
    cr_assert(eq(str, fsync, "on"));
    free(fsync);

    char *a = pgtest_fresh_db("pgtest");
    char *b = pgtest_fresh_db("pgtest");
    cr_assert(a != NULL && b != NULL);
    cr_assert(strcmp(a, b) != 0, "two fresh databases share a URI: %s", a);
    cr_assert(eq(int, pgtest_exec(a, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)"), 0));
    char *x = query_one(a, "SELECT x FROM t");
    cr_assert(eq(str, x, "7"));
    free(x);
    /* B is another database: it has no table t */
    cr_assert(eq(int, pgtest_exec(b, "SELECT x FROM t"), -1));
    char *db = query_one(b, "SELECT current_database()");
    cr_assert(strncmp(db, "pgtest_", 7) == 0 && strlen(db) == 7 + 16, "%s", db);
    free(db);
    cr_assert(eq(int, pgtest_drop_db(a), 0));
    cr_assert(eq(int, pgtest_exec(a, "SELECT 1"), -1), "the dropped database still answers");
    cr_assert(eq(int, pgtest_drop_db(b), 0));
    free(a);
    free(b);
}

Test(pgtest, bad_arguments_are_refused)
{
    cr_assert(pgtest_fresh_db("Bad-Prefix") == NULL);
    cr_assert(pgtest_fresh_db("") == NULL);
    cr_assert(pgtest_private_cluster("../x") == NULL);
    cr_assert(eq(int, pgtest_stop_private(), -1));
}

/* A committed row survives pg_ctl restart -m fast, and the URI stays. */
Test(pgtest, private_cluster_restarts_on_the_same_uri)
{
    const char *admin = pgtest_private_cluster("selftest");
    cr_assert(admin != NULL);
    char *before = strdup(admin);
    cr_assert(before != NULL);
    char *uri = pgtest_fresh_db("restart");
    cr_assert(uri != NULL);
    cr_assert(eq(int, pgtest_exec(uri, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"), 0));
    char *pid1 = query_one(admin, "SELECT pg_postmaster_start_time()::text");
    cr_assert(eq(int, pgtest_restart(), 0));
    cr_assert(eq(str, (char *)pgtest_admin_uri(), before));
    char *pid2 = query_one(admin, "SELECT pg_postmaster_start_time()::text");
    cr_assert(strcmp(pid1, pid2) != 0, "the server did not restart (started at %s)", pid1);
    char *x = query_one(uri, "SELECT x FROM t");
    cr_assert(eq(str, x, "42"));
    cr_assert(eq(int, pgtest_stop_private(), 0));
    free(x);
    free(pid1);
    free(pid2);
    free(uri);
    free(before);
}
