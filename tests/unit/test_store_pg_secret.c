/* test_store_pg_secret.c -- a PostgreSQL store never shows its password:
 * store_location_redact hides it in every form a location can carry it
 * (user:password@, ?password=, a conninfo's password=, cut at any length),
 * and a store_open that fails -- no such database, nothing listening, a
 * location libpq cannot parse, a password file -- says why without it, in
 * its error and on stderr.
 *
 * The test cluster trusts local TCP, so a password is never checked: what
 * is tested is where the password could be echoed back (libpq quotes a
 * malformed URI token in its message), not authentication. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/store/store.h"
#include "tests/unit/pgtest.h"

#define SECRET "s3cret-pw"

static reactor_t *g_r;

static void setup(void)
{
    g_r = reactor_new();
    cr_assert(g_r != NULL);
}

static void teardown(void)
{
    reactor_free(g_r);
}

TestSuite(store_secret, .init = setup, .fini = teardown, .timeout = 60);

/* ---- store_location_redact */

typedef struct redact_case {
    const char *in, *want;
} redact_case;

Test(store_secret, redact_hides_every_form_of_password)
{
    static const redact_case cases[] = {
        {"postgresql://loom:" SECRET "@127.0.0.1:5432/db", "postgresql://loom:***@127.0.0.1:5432/db"},
        {"postgres://loom:" SECRET "@db.example/loom?sslmode=require",
         "postgres://loom:***@db.example/loom?sslmode=require"},
        {"postgresql://loom@127.0.0.1/db", "postgresql://loom@127.0.0.1/db"},
        {"postgresql://127.0.0.1/db", "postgresql://127.0.0.1/db"},
        /* an '@' in the password: the authority ends at its last '@' */
        {"postgresql://loom:" SECRET "@x@127.0.0.1/db", "postgresql://loom:***@127.0.0.1/db"},
        {"postgresql://loom:s3%40cret@127.0.0.1/db", "postgresql://loom:***@127.0.0.1/db"},
        {"postgresql://127.0.0.1/db?password=" SECRET, "postgresql://127.0.0.1/db?password=***"},
        {"postgresql://127.0.0.1/db?sslmode=disable&password=" SECRET "&connect_timeout=3",
         "postgresql://127.0.0.1/db?sslmode=disable&password=***&connect_timeout=3"},
        {"postgresql://loom:" SECRET "@h/db?password=" SECRET, "postgresql://loom:***@h/db?password=***"},
        {"host=h password=" SECRET " dbname=loom", "host=h password=*** dbname=loom"},
        {"host=h password='" SECRET " with space' dbname=loom", "host=h password=*** dbname=loom"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        store_location_redact(cases[i].in, out, sizeof out);
        cr_expect(eq(str, out, (char *)cases[i].want), "case %zu: %s", i, cases[i].in);
        cr_expect(strstr(out, "s3") == NULL || strstr(cases[i].want, "s3") != NULL,
                  "case %zu shows the password: %s", i, out);
    }
}

/* Cut short at any length, the result is still a prefix of the redacted
 * form: never a piece of the password. */
Test(store_secret, redact_cut_short_never_shows_a_piece_of_the_password)
{
    static const char *in[] = {
        "postgresql://loom:" SECRET "@127.0.0.1:5432/db?password=" SECRET "&x=1",
        "host=h password=" SECRET " dbname=loom",
    };
    char full[256], out[256];
    for (size_t k = 0; k < sizeof in / sizeof *in; k++) {
        store_location_redact(in[k], full, sizeof full);
        for (size_t len = 1; len <= strlen(full) + 1; len++) {
            memset(out, 'Z', sizeof out);
            store_location_redact(in[k], out, len);
            cr_assert(memchr(out, '\0', len) != NULL, "not terminated within %zu bytes", len);
            cr_assert(eq(int, strncmp(out, full, strlen(out)), 0), "%zu: '%s' is not a prefix of '%s'",
                      len, out, full);
            cr_assert(eq(sz, strlen(out), len - 1 < strlen(full) ? len - 1 : strlen(full)));
            cr_assert(out[len] == 'Z', "wrote beyond %zu bytes", len);
        }
    }
    store_location_redact(NULL, out, sizeof out);
    cr_assert(eq(str, out, ""));
    store_location_redact(in[0], out, 0); /* nothing written, no crash */
}

/* ---- store_open's errors */

/* The test cluster's host and port, from its admin URI. */
static void cluster_address(char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *admin = pgtest_admin_uri();
    cr_assert(admin != NULL, "no PostgreSQL for the tests (see stderr)");
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(admin, &msg);
    cr_assert(opts != NULL, "%s: %s", admin, msg ? msg : "out of memory");
    snprintf(host, hostlen, "127.0.0.1");
    snprintf(port, portlen, "5432");
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            snprintf(host, hostlen, "%s", o->val);
        else if (strcmp(o->keyword, "port") == 0)
            snprintf(port, portlen, "%s", o->val);
    }
    PQconninfoFree(opts);
}

/* A TCP port on 127.0.0.1 that refuses connections: bound and never
 * listened on, so no one else takes it while FD is open. */
static int closed_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s >= 0, "socket: %s", strerror(errno));
    cr_assert(eq(int, bind(s, (struct sockaddr *)&a, sizeof a), 0), "bind: %s", strerror(errno));
    cr_assert(eq(int, getsockname(s, (struct sockaddr *)&a, &alen), 0));
    *fd = s;
    return ntohs(a.sin_port);
}

/* stderr into a temporary file while a store opens. */
typedef struct capture {
    int saved;
    FILE *file;
} capture_t;

static void capture_begin(capture_t *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert(c->file != NULL, "tmpfile: %s", strerror(errno));
    c->saved = dup(STDERR_FILENO);
    cr_assert(c->saved >= 0);
    cr_assert(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns what was written meanwhile (new). */
static char *capture_end(capture_t *c)
{
    fflush(stderr);
    cr_assert(dup2(c->saved, STDERR_FILENO) >= 0);
    close(c->saved);
    long n = ftell(c->file);
    cr_assert(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    cr_assert(text != NULL);
    rewind(c->file);
    cr_assert(eq(sz, fread(text, 1, (size_t)n, c->file), (size_t)n));
    fclose(c->file);
    return text;
}

/* Opens LOCATION, which must fail; neither the error nor stderr may hold
 * the password (any piece of it from "s3cret"). libpq's own messages may
 * quote the location's tokens (a malformed one: 'invalid percent-encoded
 * token: "..."'), so a store must not pass them on as they are. */
static void open_fails_quietly(const char *location, const store_options_t *opts)
{
    char err[1024] = "";
    capture_t cap;
    capture_begin(&cap);
    store_t *s = store_open(location, g_r, opts, err, sizeof err);
    int e = errno;
    char *said = capture_end(&cap);
    char shown[512];
    store_location_redact(location, shown, sizeof shown);
    if (s != NULL)
        store_close(s);
    cr_assert(s == NULL, "%s opened", shown);
    cr_assert(e != 0);
    cr_assert(err[0] != '\0', "%s: no reason given", shown);
    cr_expect(strstr(err, "s3cret") == NULL, "%s: the error shows the password: %s", shown, err);
    cr_expect(strstr(said, "s3cret") == NULL, "%s: stderr shows the password: %s", shown, said);
    free(said);
}

Test(store_secret, failed_opens_never_show_the_password)
{
    char host[256], port[16], uri[512];
    cluster_address(host, sizeof host, port, sizeof port);
    int fd;
    int closed = closed_port(&fd);
    /* the server refuses: no such database */
    snprintf(uri, sizeof uri, "postgresql://loom:" SECRET "@%s:%s/nodb", host, port);
    open_fails_quietly(uri, NULL);
    snprintf(uri, sizeof uri, "postgresql://loom@%s:%s/nodb?password=" SECRET, host, port);
    open_fails_quietly(uri, NULL);
    /* nothing listens */
    snprintf(uri, sizeof uri, "postgresql://loom:" SECRET "@127.0.0.1:%d/postgres", closed);
    open_fails_quietly(uri, NULL);
    /* libpq cannot parse it: its messages quote the token they stopped at */
    snprintf(uri, sizeof uri, "postgresql://loom:" SECRET "%%zz@%s:%s/postgres", host, port);
    open_fails_quietly(uri, NULL);
    snprintf(uri, sizeof uri, "postgresql://loom@%s:%s/postgres?password=" SECRET "%%zz", host,
             port);
    open_fails_quietly(uri, NULL);
    snprintf(uri, sizeof uri, "postgresql://loom:" SECRET "@%s:notaport/postgres", host);
    open_fails_quietly(uri, NULL);
    snprintf(uri, sizeof uri, "postgresql://loom:" SECRET "@%s:%s/postgres?sslmode=bogus", host,
             port);
    open_fails_quietly(uri, NULL);
    close(fd);
}

Test(store_secret, a_password_file_is_never_shown)
{
    char host[256], port[16], uri[512], path[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/loom-pgpass-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    cluster_address(host, sizeof host, port, sizeof port);
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    cr_assert(eq(int, (int)write(fd, SECRET "\n", sizeof SECRET), (int)sizeof SECRET));
    close(fd);
    store_options_t opts = {.password_file = path};
    snprintf(uri, sizeof uri, "postgresql://loom@%s:%s/nodb", host, port);
    open_fails_quietly(uri, &opts);
    int closed = closed_port(&fd);
    snprintf(uri, sizeof uri, "postgresql://loom@127.0.0.1:%d/postgres", closed);
    open_fails_quietly(uri, &opts);
    close(fd);
    unlink(path);
    /* a missing file is named, of course, but has no content to show */
    opts.password_file = path;
    snprintf(uri, sizeof uri, "postgresql://loom@%s:%s/postgres", host, port);
    open_fails_quietly(uri, &opts);
}

/* A store opened with a password in its URI, whose server then goes away:
 * the reads that fail say so without the password. The server is a cluster
 * of the test's own, so no other test sees it stop. */
Test(store_secret, errors_once_the_server_is_gone_never_show_the_password)
{
    cr_assert(pgtest_private_cluster("store-secret") != NULL, "no private cluster");
    char *db = pgtest_fresh_db("secret");
    cr_assert(db != NULL);
    /* the same URI with a password (the cluster trusts, and ignores it) */
    const char *at = strstr(db, "@");
    const char *user = strstr(db, "://");
    cr_assert(at != NULL && user != NULL && strchr(user + 3, ':') > at, "%s", db);
    char uri[1024];
    snprintf(uri, sizeof uri, "%.*s:" SECRET "%s", (int)(at - db), db, at);
    free(db);

    char err[1024] = "";
    store_t *s = store_open(uri, g_r, NULL, err, sizeof err);
    cr_assert(s != NULL, "%s", err);
    char id[STORE_ID_SIZE];
    cr_assert(eq(int, store_new_job_id(s, id), 0));
    json_t *job = NULL;
    cr_assert(eq(int, store_get_job(s, id, &job, err, sizeof err), -ENOENT), "%s", err);
    cr_assert(strstr(err, "s3cret") == NULL, "%s", err);

    cr_assert(eq(int, pgtest_stop_private(), 0));
    capture_t cap;
    capture_begin(&cap);
    int rc = store_get_job(s, id, &job, err, sizeof err);
    char *said = capture_end(&cap);
    cr_assert(rc < 0 && rc != -ENOENT, "a read with the server gone gave %d", rc);
    cr_assert(err[0] != '\0');
    cr_expect(strstr(err, "s3cret") == NULL, "the error shows the password: %s", err);
    cr_expect(strstr(said, "s3cret") == NULL, "stderr shows the password: %s", said);
    free(said);
    store_close(s);
}
