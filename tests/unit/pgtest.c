/* pgtest.c -- PostgreSQL for the C tests (see pgtest.h): runs
 * tests/pg/pg_cluster.sh and creates databases through libpq.
 *
 * State is per process (Criterion runs each test in a process of its own;
 * the script's reuse of a running cluster is what makes them share one) and
 * is touched only from the test's own thread. */
#include "tests/unit/pgtest.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PGTEST_URI_MAX 1024

static char shared_uri[PGTEST_URI_MAX];   /* LOOM_TEST_PG or the started one */
static char private_uri[PGTEST_URI_MAX];
static char private_dir[PGTEST_URI_MAX];
static pid_t private_owner;                /* the process that started it */

/* The databases this process made, dropped when it exits: the clusters
 * outlive the tests (one database is some 8 MB). Past PGTEST_MAX_MADE they
 * are kept, as with LOOM_TEST_PG_KEEP. */
#define PGTEST_MAX_MADE 32
typedef struct made_db {
    char name[64];                /* "" once dropped */
    char admin[PGTEST_URI_MAX];   /* the cluster it is on */
    pid_t owner;
} made_db;
static made_db made[PGTEST_MAX_MADE];
static size_t nmade;

/* $LOOM_BUILDDIR (set by `make check`), or "." when a test runs by hand. */
static const char *builddir(void)
{
    const char *d = getenv("LOOM_BUILDDIR");
    return d != NULL && d[0] != '\0' ? d : ".";
}

static const char *srcdir(void)
{
    const char *d = getenv("LOOM_SRCDIR");
    return d != NULL && d[0] != '\0' ? d : ".";
}

/* Appends S to the shell command in BUF (size CAP) in single quotes. -1 when
 * it does not fit. */
static int append_quoted(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);
    if (n + 2 >= cap)
        return -1;
    buf[n++] = ' ';
    buf[n++] = '\'';
    for (; *s != '\0'; s++) {
        if (*s == '\'') {
            /* ' -> '\'' */
            if (n + 4 >= cap)
                return -1;
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            if (n + 1 >= cap)
                return -1;
            buf[n++] = *s;
        }
    }
    if (n + 2 > cap)
        return -1;
    buf[n++] = '\'';
    buf[n] = '\0';
    return 0;
}

/* Runs `pg_cluster.sh ACTION DIR` with no stdin; its stderr is the test's.
 * When OUT is not NULL, the first line of its stdout (the URI) goes there
 * without the newline. 0 when it exited with 0, else -1 (reason printed). */
static int run_script(const char *action, const char *dir, char *out, size_t outcap)
{
    char script[PGTEST_URI_MAX], cmd[3 * PGTEST_URI_MAX];
    char line[PGTEST_URI_MAX] = "";
    int written = snprintf(script, sizeof script, "%s/tests/pg/pg_cluster.sh", srcdir());
    if (written < 0 || (size_t)written >= sizeof script) {
        fprintf(stderr, "pgtest: the path of pg_cluster.sh is too long\n");
        return -1;
    }
    strcpy(cmd, "exec bash");
    if (append_quoted(cmd, sizeof cmd, script) < 0 || append_quoted(cmd, sizeof cmd, action) < 0 ||
        append_quoted(cmd, sizeof cmd, dir) < 0 ||
        strlen(cmd) + sizeof " </dev/null" > sizeof cmd) {
        fprintf(stderr, "pgtest: the command for pg_cluster.sh is too long\n");
        return -1;
    }
    strcat(cmd, " </dev/null");
    /* the child must not write out this process's buffered output twice */
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        fprintf(stderr, "pgtest: cannot run %s: %s\n", script, strerror(errno));
        return -1;
    }
    bool got = fgets(line, sizeof line, p) != NULL;
    /* read to the end so the script never blocks on a full pipe */
    char rest[256];
    while (fgets(rest, sizeof rest, p) != NULL)
        ;
    int status = pclose(p);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "pgtest: `%s %s %s` failed (status %d)\n", script, action, dir, status);
        return -1;
    }
    if (out != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!got || line[0] == '\0' || strlen(line) >= outcap) {
            fprintf(stderr, "pgtest: `%s %s %s` printed no URI\n", script, action, dir);
            return -1;
        }
        strcpy(out, line);
    }
    return 0;
}

const char *pgtest_admin_uri(void)
{
    if (private_uri[0] != '\0')
        return private_uri;
    if (shared_uri[0] != '\0')
        return shared_uri;
    const char *env = getenv("LOOM_TEST_PG");
    if (env != NULL && env[0] != '\0') {
        if (strlen(env) >= sizeof shared_uri) {
            fprintf(stderr, "pgtest: LOOM_TEST_PG is too long\n");
            return NULL;
        }
        strcpy(shared_uri, env);
        return shared_uri;
    }
    char dir[PGTEST_URI_MAX];
    int n = snprintf(dir, sizeof dir, "%s/pg-test", builddir());
    if (n < 0 || (size_t)n >= sizeof dir) {
        fprintf(stderr, "pgtest: LOOM_BUILDDIR is too long\n");
        return NULL;
    }
    if (run_script("start", dir, shared_uri, sizeof shared_uri) < 0) {
        shared_uri[0] = '\0';
        fprintf(stderr, "pgtest: PostgreSQL could not be started in %s\n", dir);
        return NULL;
    }
    return shared_uri;
}

/* Drops database NAME on the cluster of ADMIN, saying nothing: at exit the
 * cluster may be gone already, and the database with it. */
static void drop_quietly(const char *admin, const char *name)
{
    char sql[128];
    PGconn *conn = PQconnectdb(admin);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%.63s\" WITH (FORCE)", name);
        PQclear(PQexec(conn, sql));
    }
    PQfinish(conn);
}

/* At exit, a test's databases are dropped and its private cluster goes
 * down with it (no server is left behind per test), in that order; only in
 * the process that made them, not in a child it forked that exits
 * normally. */
static void cleanup_at_exit(void)
{
    const char *keep = getenv("LOOM_TEST_PG_KEEP");
    pid_t self = getpid();
    for (size_t i = 0; i < nmade; i++) {
        if (made[i].owner != self || made[i].name[0] == '\0')
            continue;
        if (keep == NULL || keep[0] == '\0')
            drop_quietly(made[i].admin, made[i].name);
        made[i].name[0] = '\0';
    }
    if (private_dir[0] != '\0' && private_owner == self)
        pgtest_stop_private();
}

static void register_cleanup(void)
{
    static bool registered;
    if (!registered && atexit(cleanup_at_exit) == 0)
        registered = true;
}

const char *pgtest_private_cluster(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > 64) {
        fprintf(stderr, "pgtest: a private cluster needs a name of 1 to 64 characters\n");
        return NULL;
    }
    for (const char *c = name; *c != '\0'; c++) {
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') {
            fprintf(stderr, "pgtest: bad cluster name '%s' (letters, digits, '_', '-')\n", name);
            return NULL;
        }
    }
    int n = snprintf(private_dir, sizeof private_dir, "%s/pg-%s", builddir(), name);
    if (n < 0 || (size_t)n >= sizeof private_dir) {
        fprintf(stderr, "pgtest: LOOM_BUILDDIR is too long\n");
        private_dir[0] = '\0';
        return NULL;
    }
    if (run_script("start", private_dir, private_uri, sizeof private_uri) < 0) {
        private_uri[0] = '\0';
        private_dir[0] = '\0';
        return NULL;
    }
    private_owner = getpid();
    register_cleanup();
    return private_uri;
}

/* The directory of the cluster pgtest_restart acts on, or NULL (printed). */
static const char *cluster_dir(char *buf, size_t cap)
{
    if (private_dir[0] != '\0')
        return private_dir;
    const char *env = getenv("LOOM_TEST_PG");
    if (env != NULL && env[0] != '\0') {
        const char *dir = getenv("LOOM_TEST_PG_DIR");
        if (dir == NULL || dir[0] == '\0') {
            fprintf(stderr, "pgtest: LOOM_TEST_PG is set without LOOM_TEST_PG_DIR: "
                            "the cluster cannot be restarted from here\n");
            return NULL;
        }
        return dir;
    }
    int n = snprintf(buf, cap, "%s/pg-test", builddir());
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "pgtest: LOOM_BUILDDIR is too long\n");
        return NULL;
    }
    return buf;
}

int pgtest_restart(void)
{
    char buf[PGTEST_URI_MAX];
    if (pgtest_admin_uri() == NULL)
        return -1;
    const char *dir = cluster_dir(buf, sizeof buf);
    if (dir == NULL)
        return -1;
    return run_script("restart", dir, NULL, 0);
}

int pgtest_stop_private(void)
{
    if (private_dir[0] == '\0') {
        fprintf(stderr, "pgtest: no private cluster to stop\n");
        return -1;
    }
    int rc = run_script("stop", private_dir, NULL, 0);
    private_dir[0] = '\0';
    private_uri[0] = '\0';
    return rc;
}

/* Connects to URI: the connection (new, PQfinish it), or NULL (printed). */
static PGconn *connect_to(const char *uri)
{
    PGconn *conn = PQconnectdb(uri);
    if (conn == NULL) {
        fprintf(stderr, "pgtest: out of memory connecting to PostgreSQL\n");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        /* the message names the host and port, never a password */
        fprintf(stderr, "pgtest: cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

int pgtest_exec(const char *uri, const char *sql)
{
    PGconn *conn = connect_to(uri);
    if (conn == NULL)
        return -1;
    int rc = 0;
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgtest: `%s` failed: %s", sql, PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* URI with its database (the path after the authority, before any '?')
 * replaced by DB. New (caller frees), or NULL (printed). */
static char *uri_with_db(const char *uri, const char *db)
{
    const char *scheme_end = strstr(uri, "://");
    if (scheme_end == NULL) {
        fprintf(stderr, "pgtest: the admin URI is not a postgresql:// URI\n");
        return NULL;
    }
    const char *auth = scheme_end + 3;
    size_t auth_len = strcspn(auth, "/?");
    const char *rest = auth + auth_len;
    if (*rest == '/')
        rest += strcspn(rest, "?");
    size_t head = (size_t)(auth + auth_len - uri);
    size_t len = head + 1 + strlen(db) + strlen(rest) + 1;
    char *out = malloc(len);
    if (out == NULL) {
        fprintf(stderr, "pgtest: out of memory\n");
        return NULL;
    }
    snprintf(out, len, "%.*s/%s%s", (int)head, uri, db, rest);
    return out;
}

char *pgtest_fresh_db(const char *prefix)
{
    char name[64], sql[128];
    unsigned char rnd[8];
    PGconn *conn = NULL;
    char *out = NULL;

    if (prefix == NULL || prefix[0] == '\0' || strlen(prefix) > 40) {
        fprintf(stderr, "pgtest: a database prefix needs 1 to 40 characters\n");
        return NULL;
    }
    for (const char *c = prefix; *c != '\0'; c++) {
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_')) {
            fprintf(stderr, "pgtest: bad database prefix '%s' (a-z, 0-9, '_')\n", prefix);
            return NULL;
        }
    }
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        fprintf(stderr, "pgtest: getrandom: %s\n", strerror(errno));
        return NULL;
    }
    snprintf(name, sizeof name, "%s_%02x%02x%02x%02x%02x%02x%02x%02x", prefix, rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    const char *admin = pgtest_admin_uri();
    if (admin == NULL)
        return NULL;
    conn = connect_to(admin);
    if (conn == NULL)
        goto fail;
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    /* CREATE DATABASE copies template1 and fails while anyone else is
     * connected to it (another test's CREATE DATABASE is not, but a person
     * with psql may be): a few tries ride over that */
    for (int attempt = 0;; attempt++) {
        PGresult *res = PQexec(conn, sql);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool busy = state != NULL && strcmp(state, "55006") == 0; /* object_in_use */
        PQclear(res);
        if (ok)
            break;
        if (!busy || attempt == 20) {
            fprintf(stderr, "pgtest: %s failed: %s", sql, PQerrorMessage(conn));
            goto fail;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    out = uri_with_db(admin, name);
    if (out != NULL && nmade < PGTEST_MAX_MADE && strlen(admin) < sizeof made[0].admin) {
        made_db *m = &made[nmade++];
        snprintf(m->name, sizeof m->name, "%s", name);
        snprintf(m->admin, sizeof m->admin, "%s", admin);
        m->owner = getpid();
        register_cleanup();
    }
fail:
    if (conn != NULL)
        PQfinish(conn);
    return out;
}

int pgtest_drop_db(const char *uri)
{
    char sql[128];
    const char *scheme_end = uri != NULL ? strstr(uri, "://") : NULL;
    if (scheme_end == NULL) {
        fprintf(stderr, "pgtest: not a postgresql:// URI\n");
        return -1;
    }
    const char *path = strchr(scheme_end + 3, '/');
    size_t len = path != NULL ? strcspn(path + 1, "?") : 0;
    if (len == 0 || len > 63) {
        fprintf(stderr, "pgtest: the URI names no database\n");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = path[1 + i];
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '_')) {
            fprintf(stderr, "pgtest: %.*s is not a database pgtest made\n", (int)len, path + 1);
            return -1;
        }
    }
    /* on the cluster it was made on, which need not be the current one */
    const char *admin = NULL;
    for (size_t i = 0; i < nmade && admin == NULL; i++) {
        if (strlen(made[i].name) == len && strncmp(made[i].name, path + 1, len) == 0) {
            made[i].name[0] = '\0';
            admin = made[i].admin;
        }
    }
    if (admin == NULL && (admin = pgtest_admin_uri()) == NULL)
        return -1;
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%.*s\" WITH (FORCE)", (int)len, path + 1);
    return pgtest_exec(admin, sql);
}
