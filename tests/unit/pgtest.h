/* pgtest.h -- PostgreSQL for the C tests: a throwaway cluster started by
 * tests/pg/pg_cluster.sh and a fresh database per test.
 *
 * The cluster is shared: LOOM_TEST_PG (scripts/test starts one and exports
 * its admin URI, and LOOM_TEST_PG_DIR, its directory), or else one under
 * $LOOM_BUILDDIR/pg-test that the first test starts and the others reuse
 * (pg_cluster.sh reuses a cluster that answers). That one stays up after
 * `make check` for the next run; `make clean` stops and removes it (and the
 * private ones).
 *
 * A test that restarts PostgreSQL takes a cluster of its own first
 * (pgtest_private_cluster), so the tests running beside it on the shared
 * one see no outage.
 *
 * Errors are printed to stderr with their reason; nothing here asserts, so
 * the caller says what the failure means for its test. */
#ifndef LOOM_TESTS_PGTEST_H
#define LOOM_TESTS_PGTEST_H

/* The admin URI (postgresql://loom@127.0.0.1:PORT/postgres, a superuser,
 * trust auth): the private cluster when this process took one, else
 * LOOM_TEST_PG, else the shared cluster under $LOOM_BUILDDIR/pg-test,
 * started on the first call. Borrowed (lives as long as the process). NULL
 * with the reason on stderr only when PostgreSQL cannot be started. */
const char *pgtest_admin_uri(void);

/* Creates the database PREFIX_<16 random hex digits> (PREFIX: lower-case
 * letters, digits and '_', at most 40 characters) and returns its URI: the
 * admin URI with the database changed. New (the caller frees it); NULL with
 * the reason on stderr. The database is dropped when this process exits
 * normally (a Criterion test's process: after its fini), unless
 * LOOM_TEST_PG_KEEP is set (to look at it after a failure). */
char *pgtest_fresh_db(const char *prefix);

/* Drops the database of URI (one pgtest_fresh_db made) now, cutting any
 * session still on it (a test's killed child's). 0, or -1 with the reason
 * on stderr. */
int pgtest_drop_db(const char *uri);

/* Runs SQL (one or more statements) on the database at URI. 0, or -1 with
 * the server's message on stderr. */
int pgtest_exec(const char *uri, const char *sql);

/* Starts (or reuses) a cluster of this process's own in
 * $LOOM_BUILDDIR/pg-NAME (NAME: letters, digits, '_', '-'; one per test
 * that restarts, since Criterion runs a program's tests side by side and
 * the same NAME is the same cluster); from then on pgtest_admin_uri,
 * pgtest_fresh_db and pgtest_restart use it. It is stopped when this
 * process exits (normally), or by pgtest_stop_private. Returns its admin
 * URI (borrowed), or NULL with the reason on stderr. */
const char *pgtest_private_cluster(const char *name);

/* Restarts the cluster (pg_ctl restart -m fast, same port) and returns once
 * it answers again: every open connection is cut. The private cluster when
 * there is one, else the shared one (its directory: LOOM_TEST_PG_DIR when
 * LOOM_TEST_PG is set). 0, or -1 with the reason on stderr. */
int pgtest_restart(void);

/* Stops the private cluster (for a test that wants it down, or at its end).
 * 0, or -1 with the reason on stderr; -1 when there is none. */
int pgtest_stop_private(void);

#endif
