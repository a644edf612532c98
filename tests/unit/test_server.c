/* test_server.c -- the socket protocol's transport over real Unix sockets.
 *
 * The test thread is both sides: it drives the reactor with
 * reactor_run_once and talks through non-blocking client sockets, so there
 * are no threads to race. Every wait is bounded by a deadline (a failure,
 * not a hang), and nothing asserts how long anything took. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/core/reactor.h"
#include "daemon/server/server.h"

#define WAIT_SECONDS 20

/* ---- the test context: one server, a handler with a few ops */

typedef struct deferred {
    server_conn_t *conn;
    json_t *id;
} deferred;

typedef struct tctx {
    char dir[64];
    char path[128];
    reactor_t *r;
    server_t *s;
    server_options opt;
    int requests;
    int closes;
    int deferred_done;
    int last_reply_rc;
    server_conn_t *sub;     /* held by "subscribe" */
    server_conn_t *last;    /* the last conn closed (not referenced) */
    int logs;
    char last_log[512];
} tctx;

static tctx T;

/* jansson's type tests are macros, which criterion's cr_assert cannot take. */
static bool is_true(const json_t *j) { return json_is_true(j); }
static bool is_false(const json_t *j) { return json_is_false(j); }
static bool is_object(const json_t *j) { return json_is_object(j); }
static bool is_string(const json_t *j) { return json_is_string(j); }
static bool is_integer(const json_t *j) { return json_is_integer(j); }

static void on_deferred(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    deferred *d = ud;
    T.last_reply_rc = server_reply(d->conn, d->id, json_pack("{s:b}", "deferred", 1));
    T.deferred_done++;
    json_decref(d->id);
    server_conn_unref(d->conn);
    free(d);
}

static void handler(server_conn_t *conn, json_t *req, void *ud)
{
    (void)ud;
    T.requests++;
    const char *op = json_string_value(json_object_get(req, "op"));
    json_t *id = json_object_get(req, "id");
    if (strcmp(op, "echo") == 0) {
        server_reply(conn, id, json_pack("{s:O}", "request", req));
    } else if (strcmp(op, "defer") == 0) {
        deferred *d = calloc(1, sizeof *d);
        cr_assert(d != NULL);
        d->conn = server_conn_ref(conn);
        d->id = json_incref(id);
        json_int_t ms = json_integer_value(json_object_get(req, "ms"));
        cr_assert(reactor_timer_add(T.r, (uint64_t)ms * REACTOR_MSEC, on_deferred, d) != NULL);
    } else if (strcmp(op, "subscribe") == 0) {
        cr_assert(T.sub == NULL);
        T.sub = server_conn_ref(conn);
        server_reply(conn, id, json_object());
    } else if (strcmp(op, "big") == 0) {
        size_t n = (size_t)json_integer_value(json_object_get(req, "size"));
        char *blob = malloc(n + 1);
        cr_assert(blob != NULL);
        memset(blob, 'b', n);
        blob[n] = '\0';
        server_reply(conn, id, json_pack("{s:s}", "blob", blob));
        free(blob);
    } else if (strcmp(op, "measure") == 0) { /* a big request, a small reply */
        const char *pad = json_string_value(json_object_get(req, "pad"));
        server_reply(conn, id, json_pack("{s:I}", "bytes", (json_int_t)(pad ? strlen(pad) : 0)));
    } else if (strcmp(op, "peer") == 0) {
        const server_peer *p = server_conn_peer(conn);
        server_reply(conn, id, json_pack("{s:I,s:I,s:I}", "uid", (json_int_t)p->uid, "gid",
                                         (json_int_t)p->gid, "pid", (json_int_t)p->pid));
    } else if (strcmp(op, "own_ok") == 0) {
        server_reply(conn, id, json_pack("{s:b,s:s}", "ok", 0, "why", "mine"));
    } else if (strcmp(op, "null_body") == 0) {
        cr_assert(eq(int, server_reply(conn, id, NULL), -ENOMEM));
    } else if (strcmp(op, "fail") == 0) {
        server_reply_error(conn, id, "nope", "failed with %d", 42);
    } else if (strcmp(op, "close") == 0) {
        server_reply(conn, id, json_object());
        server_conn_close(conn);
        cr_assert(not(server_conn_is_open(conn)));
    } else {
        server_reply_error(conn, id, "unknown_op", "no op %s", op);
    }
}

static void on_close(server_conn_t *conn, void *ud)
{
    (void)ud;
    T.closes++;
    T.last = conn;
    cr_assert(not(server_conn_is_open(conn)));
    if (conn == T.sub) {
        T.sub = NULL;
        server_conn_unref(conn);
    }
}

static void on_log(void *ud, int level, const char *line)
{
    (void)ud;
    (void)level;
    T.logs++;
    snprintf(T.last_log, sizeof T.last_log, "%s", line);
}

static void setup(void)
{
    memset(&T, 0, sizeof T);
    strcpy(T.dir, "/tmp/loom-server-XXXXXX");
    cr_assert(mkdtemp(T.dir) != NULL);
    snprintf(T.path, sizeof T.path, "%s/loomd.sock", T.dir);
    T.r = reactor_new();
    cr_assert(T.r != NULL);
    T.opt = (server_options){.path = T.path, .on_close = on_close, .log = on_log};
}

static void teardown(void)
{
    server_free(T.s);
    T.s = NULL;
    reactor_free(T.r);
    unlink(T.path);
    rmdir(T.dir);
}

static void start(void)
{
    char err[256];
    T.s = server_new(T.r, &T.opt, handler, NULL, err, sizeof err);
    cr_assert(T.s != NULL, "server_new: %s", err);
}

/* ---- clients */

typedef struct client {
    int fd;
    char *buf;
    size_t len, cap;
} client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_un addr_of(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert(lt(sz, strlen(path), sizeof a.sun_path));
    memcpy(a.sun_path, path, strlen(path) + 1);
    return a;
}

static void pump(int timeout_ms)
{
    cr_assert(ge(int, reactor_run_once(T.r, timeout_ms), 0));
}

static int connect_fd(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    cr_assert(ge(int, fd, 0));
    struct sockaddr_un a = addr_of(path);
    double deadline = now_s() + WAIT_SECONDS;
    /* A full backlog says EAGAIN: let the server accept, then retry. */
    while (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        cr_assert(eq(int, errno, EAGAIN), "connect: %s", strerror(errno));
        cr_assert(now_s() < deadline, "connect timed out");
        pump(1);
    }
    return fd;
}

static client *client_new(void)
{
    client *c = calloc(1, sizeof *c);
    cr_assert(c != NULL);
    c->fd = connect_fd(T.path);
    return c;
}

static void client_free(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
}

static void client_write(client *c, const char *data, size_t len)
{
    double deadline = now_s() + WAIT_SECONDS;
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            cr_assert(eq(int, errno, EAGAIN), "send: %s", strerror(errno));
            cr_assert(now_s() < deadline, "send timed out");
            pump(1);
            continue;
        }
        data += n;
        len -= (size_t)n;
    }
}

static void client_puts(client *c, const char *text)
{
    client_write(c, text, strlen(text));
}

/* Reads what is there: 1 if something came, 0 if nothing, -1 at EOF. */
static int client_fill(client *c)
{
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = realloc(c->buf, c->cap);
        cr_assert(c->buf != NULL);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0) {
        if (errno == EAGAIN)
            return 0;
        cr_assert(eq(int, errno, ECONNRESET), "recv: %s", strerror(errno));
        return -1;
    }
    if (n == 0)
        return -1;
    c->len += (size_t)n;
    return 1;
}

/* The next complete line, parsed (new), or NULL if there is none yet. */
static json_t *client_take(client *c)
{
    char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
    if (!nl)
        return NULL;
    size_t n = (size_t)(nl - c->buf);
    json_error_t je;
    json_t *j = json_loadb(c->buf, n, 0, &je);
    cr_assert(j != NULL, "the server sent bad JSON: %s", je.text);
    memmove(c->buf, nl + 1, c->len - n - 1);
    c->len -= n + 1;
    return j;
}

/* The next line from the server; fails the test on EOF or timeout. */
static json_t *client_recv(client *c)
{
    double deadline = now_s() + WAIT_SECONDS;
    for (;;) {
        json_t *j = client_take(c);
        if (j)
            return j;
        int got = client_fill(c);
        cr_assert(ne(int, got, -1), "EOF while waiting for a line");
        if (got == 0) {
            cr_assert(now_s() < deadline, "no reply in time");
            pump(5);
        }
    }
}

/* Waits for EOF, asserting no further line arrives. */
static void client_expect_eof(client *c)
{
    double deadline = now_s() + WAIT_SECONDS;
    for (;;) {
        int got = client_fill(c);
        if (got < 0)
            break;
        if (got == 0) {
            cr_assert(now_s() < deadline, "no EOF in time");
            pump(5);
        }
    }
    cr_assert(eq(sz, c->len, 0), "unexpected output before EOF: %.*s", (int)c->len, c->buf);
}

static void pump_until(const int *counter, int target)
{
    double deadline = now_s() + WAIT_SECONDS;
    while (*counter < target) {
        cr_assert(now_s() < deadline, "timed out waiting (%d of %d)", *counter, target);
        pump(5);
    }
}

static void wait_connections(size_t n)
{
    double deadline = now_s() + WAIT_SECONDS;
    server_stats_t st;
    for (server_stats(T.s, &st); st.connections != n; server_stats(T.s, &st)) {
        cr_assert(now_s() < deadline, "%zu connections, want %zu", st.connections, n);
        pump(5);
    }
}

static void assert_error(json_t *reply, const char *code)
{
    cr_assert(is_false(json_object_get(reply, "ok")));
    json_t *error = json_object_get(reply, "error");
    cr_assert(is_object(error));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(error, "code")), (char *)code));
    cr_assert(is_string(json_object_get(error, "message")));
}

static json_int_t reply_id(json_t *reply)
{
    json_t *id = json_object_get(reply, "id");
    cr_assert(is_integer(id));
    return json_integer_value(id);
}

/* One echo round trip with id ID. */
static void roundtrip(client *c, int id)
{
    char line[64];
    snprintf(line, sizeof line, "{\"id\":%d,\"op\":\"echo\"}\n", id);
    client_puts(c, line);
    json_t *reply = client_recv(c);
    cr_assert(is_true(json_object_get(reply, "ok")));
    cr_assert(eq(i64, reply_id(reply), id));
    json_decref(reply);
}

TestSuite(server, .init = setup, .fini = teardown, .timeout = 60);

/* ---- the socket file */

Test(server, socket_mode_default_0660)
{
    umask(0);
    start();
    struct stat st;
    cr_assert(eq(int, lstat(T.path, &st), 0));
    cr_assert(eq(u32, (unsigned)(st.st_mode & S_IFMT), (unsigned)S_IFSOCK));
    cr_assert(eq(u32, (unsigned)(st.st_mode & 07777), 0660u));
    cr_assert(eq(str, (char *)server_path(T.s), T.path));
}

Test(server, socket_mode_custom)
{
    T.opt.mode = 0600;
    umask(022);
    start();
    struct stat st;
    cr_assert(eq(int, lstat(T.path, &st), 0));
    cr_assert(eq(u32, (unsigned)(st.st_mode & 07777), 0600u));
    mode_t old = umask(022);
    umask(old);
    cr_assert(eq(u32, (unsigned)old, 022u), "the umask must be restored");
}

Test(server, stale_socket_replaced)
{
    umask(0);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = addr_of(T.path);
    cr_assert(eq(int, bind(fd, (struct sockaddr *)&a, sizeof a), 0));
    close(fd); /* a crashed daemon leaves its socket file behind */
    struct stat before, after;
    cr_assert(eq(int, lstat(T.path, &before), 0));
    start();
    cr_assert(eq(int, lstat(T.path, &after), 0));
    cr_assert(eq(u32, (unsigned)(before.st_mode & 0777), 0777u));
    cr_assert(eq(u32, (unsigned)(after.st_mode & 0777), 0660u), "a new socket, ours");
    client *c = client_new();
    roundtrip(c, 1);
    client_free(c);
}

Test(server, live_socket_refused)
{
    start();
    char err[256] = "";
    server_t *second = server_new(T.r, &T.opt, handler, NULL, err, sizeof err);
    cr_assert(second == NULL);
    cr_assert(eq(int, errno, EADDRINUSE));
    cr_assert(strstr(err, "another loomd is running") != NULL, "%s", err);
    client *c = client_new();
    roundtrip(c, 1);
    client_free(c);
}

Test(server, regular_file_refused)
{
    FILE *f = fopen(T.path, "w");
    cr_assert(f != NULL);
    fputs("precious", f);
    fclose(f);
    char err[256] = "";
    cr_assert(server_new(T.r, &T.opt, handler, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EEXIST));
    cr_assert(strstr(err, "not a socket") != NULL, "%s", err);
    struct stat st;
    cr_assert(eq(int, lstat(T.path, &st), 0));
    cr_assert(eq(u32, (unsigned)(st.st_mode & S_IFMT), (unsigned)S_IFREG));
    cr_assert(eq(i64, (int64_t)st.st_size, 8));
}

Test(server, bad_options_refused)
{
    char err[256];
    server_options o = {.path = ""};
    cr_assert(server_new(T.r, &o, handler, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, EINVAL));
    char longpath[200];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    o.path = longpath;
    cr_assert(server_new(T.r, &o, handler, NULL, err, sizeof err) == NULL);
    cr_assert(eq(int, errno, ENAMETOOLONG));
}

Test(server, free_unlinks_only_its_own_socket)
{
    start();
    server_free(T.s);
    T.s = NULL;
    struct stat st;
    cr_assert(eq(int, lstat(T.path, &st), -1));
    cr_assert(eq(int, errno, ENOENT));

    start();
    cr_assert(eq(int, unlink(T.path), 0));
    FILE *f = fopen(T.path, "w"); /* someone else's file now */
    cr_assert(f != NULL);
    fclose(f);
    server_free(T.s);
    T.s = NULL;
    cr_assert(eq(int, lstat(T.path, &st), 0));
    cr_assert(eq(u32, (unsigned)(st.st_mode & S_IFMT), (unsigned)S_IFREG));
}

/* ---- framing */

Test(server, echo_id_echoed)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":\"abc\",\"op\":\"echo\"}\n");
    json_t *r = client_recv(c);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(r, "id")), "abc"));
    cr_assert(is_true(json_object_get(r, "ok")));
    cr_assert(is_object(json_object_get(r, "request")));
    json_decref(r);

    client_puts(c, "{\"id\":{\"a\":[1,2]},\"op\":\"echo\"}\n");
    r = client_recv(c);
    json_t *want = json_pack("{s:[i,i]}", "a", 1, 2);
    cr_assert(json_equal(json_object_get(r, "id"), want));
    json_decref(want);
    json_decref(r);

    client_puts(c, "{\"op\":\"echo\"}\n");
    r = client_recv(c);
    cr_assert(json_object_get(r, "id") == NULL, "no id, none echoed");
    json_decref(r);

    client_puts(c, "{\"id\":9,\"op\":\"fail\"}\n");
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 9));
    assert_error(r, "nope");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(r, "error"),
                                                                 "message")),
                 "failed with 42"));
    json_decref(r);
    client_free(c);
}

Test(server, reply_body_shapes)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"own_ok\"}\n");
    json_t *r = client_recv(c);
    cr_assert(is_false(json_object_get(r, "ok")), "the body's own ok is kept");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(r, "why")), "mine"));
    cr_assert(eq(i64, reply_id(r), 1));
    json_decref(r);
    client_puts(c, "{\"id\":2,\"op\":\"null_body\"}\n");
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 2));
    assert_error(r, "internal");
    json_decref(r);
    client_free(c);
}

Test(server, pipelined_100_in_order)
{
    start();
    client *c = client_new();
    char *all = malloc(100 * 64);
    cr_assert(all != NULL);
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(all + len, "{\"id\":%d,\"op\":\"echo\"}\n", i);
    client_write(c, all, len);
    free(all);
    for (int i = 0; i < 100; i++) {
        json_t *r = client_recv(c);
        cr_assert(eq(i64, reply_id(r), i));
        json_decref(r);
    }
    cr_assert(eq(int, T.requests, 100));
    client_free(c);
}

Test(server, one_byte_at_a_time)
{
    start();
    client *c = client_new();
    const char *line = "{\"id\":77,\"op\":\"echo\",\"pad\":\"split across many reads\"}\n";
    for (const char *p = line; *p; p++) {
        client_write(c, p, 1);
        pump(0);
        pump(0);
    }
    json_t *r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 77));
    json_decref(r);
    cr_assert(eq(int, T.requests, 1));
    client_free(c);
}

Test(server, crlf_and_empty_lines)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"echo\"}\r\n\r\n\n   \n{\"id\":2,\"op\":\"echo\"}\r\n");
    client_puts(c, "{\"id\":3,\"op\":\"echo\"}\n");
    for (int i = 1; i <= 3; i++) {
        json_t *r = client_recv(c);
        cr_assert(eq(i64, reply_id(r), i), "empty lines get no reply");
        json_decref(r);
    }
    client_free(c);
}

Test(server, line_too_long_then_served)
{
    T.opt.max_line = 100;
    start();
    client *c = client_new();
    /* Over the limit, sent in pieces so the discard spans reads. */
    char big[301];
    memset(big, 'x', 300);
    big[300] = '\0';
    client_puts(c, "{\"id\":1,\"op\":\"echo\",\"pad\":\"");
    pump(0);
    client_puts(c, big);
    pump(0);
    client_puts(c, big);
    pump(0);
    client_puts(c, "\"}\n{\"id\":2,\"op\":\"echo\"}\n");
    json_t *r = client_recv(c);
    assert_error(r, "line_too_long");
    cr_assert(json_object_get(r, "id") == NULL);
    json_decref(r);
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 2));
    cr_assert(is_true(json_object_get(r, "ok")));
    json_decref(r);

    /* Over the limit in one write, complete, followed by a request. */
    char line[400];
    snprintf(line, sizeof line, "{\"op\":\"echo\",\"pad\":\"%.200s\"}\n{\"id\":3,\"op\":\"echo\"}\n",
             big);
    client_puts(c, line);
    r = client_recv(c);
    assert_error(r, "line_too_long");
    json_decref(r);
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 3));
    json_decref(r);

    /* Exactly at the limit (100 bytes before "\r\n") is fine. */
    char exact[128];
    int head = snprintf(exact, sizeof exact, "{\"id\":4,\"op\":\"echo\",\"pad\":\"");
    int pad = 100 - head - 2;
    memset(exact + head, 'y', (size_t)pad);
    strcpy(exact + head + pad, "\"}\r\n");
    cr_assert(eq(sz, strlen(exact), 102));
    client_puts(c, exact);
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 4));
    cr_assert(is_true(json_object_get(r, "ok")));
    json_decref(r);
    cr_assert(eq(int, T.requests, 3));
    client_free(c);
}

Test(server, invalid_json_and_invalid_request)
{
    start();
    client *c = client_new();
    client_puts(c, "{oops\n");
    json_t *r = client_recv(c);
    assert_error(r, "invalid_json");
    json_decref(r);
    client_puts(c, "{\"op\":\"\xff\xfe\"}\n"); /* not UTF-8: the message must stay valid */
    r = client_recv(c);
    assert_error(r, "invalid_json");
    json_decref(r);
    client_puts(c, "{\"op\":\"a\",\"op\":\"b\"}\n");
    r = client_recv(c);
    assert_error(r, "invalid_json");
    json_decref(r);
    client_puts(c, "[1,2]\n42\n\"op\"\n");
    for (int i = 0; i < 3; i++) {
        r = client_recv(c);
        assert_error(r, "invalid_request");
        json_decref(r);
    }
    client_puts(c, "{\"id\":5}\n{\"id\":6,\"op\":3}\n");
    for (int i = 5; i <= 6; i++) {
        r = client_recv(c);
        assert_error(r, "invalid_request");
        cr_assert(eq(i64, reply_id(r), i));
        json_decref(r);
    }
    cr_assert(eq(int, T.requests, 0));
    roundtrip(c, 7);
    client_free(c);
}

Test(server, last_line_without_newline_at_eof)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"echo\"}");
    cr_assert(eq(int, shutdown(c->fd, SHUT_WR), 0));
    json_t *r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 1));
    json_decref(r);
    client_expect_eof(c);
    client_free(c);
}

/* ---- deferred replies and closing */

Test(server, deferred_reply_after_half_close)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":7,\"op\":\"defer\",\"ms\":100}\n{\"id\":8,\"op\":\"echo\"}\n");
    cr_assert(eq(int, shutdown(c->fd, SHUT_WR), 0));
    json_t *r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 8), "the immediate reply first");
    json_decref(r);
    cr_assert(eq(int, T.deferred_done, 0));
    cr_assert(eq(int, T.closes, 0), "still open while a reply is owed");
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 7));
    cr_assert(is_true(json_object_get(r, "deferred")));
    json_decref(r);
    client_expect_eof(c);
    cr_assert(eq(int, T.closes, 1));
    wait_connections(0);
    client_free(c);
}

Test(server, deferred_reply_after_close_dropped)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"defer\",\"ms\":50}\n");
    pump_until(&T.requests, 1);
    close(c->fd);
    c->fd = -1;
    pump_until(&T.closes, 1);
    cr_assert(eq(int, T.deferred_done, 0), "closed before the reply was due");
    pump_until(&T.deferred_done, 1);
    cr_assert(eq(int, T.last_reply_rc, 0), "dropped silently");
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(sz, st.connections, 0));
    client_free(c);
}

Test(server, requests_sent_before_close_still_run)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"op\":\"echo\"}\n{\"op\":\"echo\"}\n{\"op\":\"echo\"}\n");
    close(c->fd);
    c->fd = -1;
    pump_until(&T.closes, 1);
    cr_assert(eq(int, T.requests, 3));
    client_free(c);
}

Test(server, close_from_handler)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"close\"}\n{\"id\":2,\"op\":\"echo\"}\n");
    client_expect_eof(c);
    cr_assert(eq(int, T.requests, 1), "nothing after the close is handled");
    cr_assert(eq(int, T.closes, 1));
    client_free(c);
}

Test(server, reference_outlives_server)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"subscribe\"}\n");
    json_t *r = client_recv(c);
    json_decref(r);
    server_conn_t *held = server_conn_ref(T.sub);
    server_free(T.s);
    T.s = NULL;
    cr_assert(eq(int, T.closes, 1));
    cr_assert(T.sub == NULL, "on_close dropped the subscription");
    cr_assert(not(server_conn_is_open(held)));
    cr_assert(eq(int, server_send(held, json_pack("{s:i}", "late", 1)), 0));
    cr_assert(eq(int, server_reply(held, NULL, json_object()), 0));
    server_conn_unref(held);
    client_expect_eof(c);
    client_free(c);
}

Test(server, stream_messages)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"subscribe\"}\n");
    json_t *r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 1));
    json_decref(r);
    for (int i = 0; i < 3; i++)
        cr_assert(eq(int, server_send(T.sub, json_pack("{s:s,s:i}", "event", "step", "n", i)), 0));
    for (int i = 0; i < 3; i++) {
        r = client_recv(c);
        cr_assert(eq(i64, json_integer_value(json_object_get(r, "n")), i));
        cr_assert(json_object_get(r, "ok") == NULL, "stream messages are sent as is");
        json_decref(r);
    }
    cr_assert(eq(int, server_send(T.sub, NULL), -EINVAL));
    client_free(c);
    pump_until(&T.closes, 1);
}

/* ---- scale, back-pressure, credentials, limits */

Test(server, thousand_concurrent_clients)
{
    enum { N = 1000 };
    struct rlimit rl;
    cr_assert(eq(int, getrlimit(RLIMIT_NOFILE, &rl), 0));
    if (rl.rlim_cur < 2 * N + 64) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 2 * N + 64)
            cr_skip_test("RLIMIT_NOFILE hard limit %lu is too low", (unsigned long)rl.rlim_max);
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 4 * N : rl.rlim_max;
        cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &rl), 0));
    }
    start();
    client **cs = calloc(N, sizeof *cs);
    cr_assert(cs != NULL);
    for (int i = 0; i < N; i++) {
        cs[i] = client_new();
        char line[64];
        snprintf(line, sizeof line, "{\"id\":%d,\"op\":\"echo\"}\n", i);
        client_puts(cs[i], line);
    }
    int done = 0;
    bool *got = calloc(N, sizeof *got);
    cr_assert(got != NULL);
    double deadline = now_s() + WAIT_SECONDS * 2;
    while (done < N) {
        cr_assert(now_s() < deadline, "only %d of %d replies", done, N);
        pump(5);
        for (int i = 0; i < N; i++) {
            if (got[i])
                continue;
            cr_assert(ne(int, client_fill(cs[i]), -1));
            json_t *r = client_take(cs[i]);
            if (!r)
                continue;
            cr_assert(eq(i64, reply_id(r), i));
            json_decref(r);
            got[i] = true;
            done++;
        }
    }
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(sz, st.connections, N));
    cr_assert(eq(u64, st.accepted, N));
    for (int i = 0; i < N; i++)
        client_free(cs[i]);
    wait_connections(0);
    free(cs);
    free(got);
}

Test(server, slow_reader_cut_off_others_served)
{
    T.opt.max_output = 1 << 20;
    start();
    client *slow = client_new();
    client *fast = client_new();
    client_puts(slow, "{\"id\":1,\"op\":\"subscribe\"}\n");
    double deadline = now_s() + WAIT_SECONDS;
    while (!T.sub) {
        cr_assert(now_s() < deadline);
        pump(5);
    }
    size_t blob_len = 64 << 10;
    char *blob = malloc(blob_len + 1);
    cr_assert(blob != NULL);
    memset(blob, 'e', blob_len);
    blob[blob_len] = '\0';
    server_conn_t *watched = server_conn_ref(T.sub);
    int sent = 0;
    while (server_conn_is_open(watched)) {
        cr_assert(lt(int, sent, 1000), "never cut off");
        cr_assert(eq(int, server_send(watched, json_pack("{s:s}", "event", blob)), 0));
        sent++;
        pump(0);
        if (sent % 4 == 0)
            roundtrip(fast, sent); /* served while the slow one backs up */
    }
    server_conn_unref(watched);
    free(blob);
    cr_assert(ge(int, sent, 16), "the limit is 1 MiB of 64 KiB messages");
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(u64, st.dropped_slow, 1));
    pump_until(&T.closes, 1);
    roundtrip(fast, 99999);
    /* The slow client finds some events, then the end. */
    double end = now_s() + WAIT_SECONDS;
    while (client_fill(slow) >= 0) {
        cr_assert(now_s() < end);
        slow->len = 0;
        pump(1);
    }
    client_free(slow);
    client_free(fast);
}

Test(server, pipelining_slow_reader_is_paused_not_cut_off)
{
    T.opt.max_output = 1 << 20;
    start();
    client *c = client_new();
    enum { N = 200 };
    char line[96];
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "{\"id\":%d,\"op\":\"big\",\"size\":65536}\n", i);
        client_puts(c, line);
    }
    for (int i = 0; i < 200; i++)
        pump(1);
    cr_assert(lt(int, T.requests, N), "requests wait while replies pile up");
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(u64, st.dropped_slow, 0));
    for (int i = 0; i < N; i++) {
        json_t *r = client_recv(c);
        cr_assert(eq(i64, reply_id(r), i));
        cr_assert(eq(sz, strlen(json_string_value(json_object_get(r, "blob"))), 65536));
        json_decref(r);
    }
    server_stats(T.s, &st);
    cr_assert(eq(u64, st.dropped_slow, 0));
    cr_assert(eq(sz, st.connections, 1));
    client_free(c);
}

Test(server, peer_credentials)
{
    start();
    client *c = client_new();
    client_puts(c, "{\"id\":1,\"op\":\"peer\"}\n");
    json_t *r = client_recv(c);
    cr_assert(eq(i64, json_integer_value(json_object_get(r, "uid")), (int64_t)getuid()));
    cr_assert(eq(i64, json_integer_value(json_object_get(r, "gid")), (int64_t)getgid()));
    cr_assert(eq(i64, json_integer_value(json_object_get(r, "pid")), (int64_t)getpid()));
    json_decref(r);
    client_free(c);
}

Test(server, max_connections)
{
    T.opt.max_connections = 2;
    start();
    client *a = client_new();
    client *b = client_new();
    wait_connections(2);
    client *extra = client_new();
    json_t *r = client_recv(extra);
    assert_error(r, "too_many_connections");
    json_decref(r);
    client_expect_eof(extra);
    client_free(extra);
    roundtrip(a, 1);
    roundtrip(b, 2);
    client_free(a);
    wait_connections(1);
    client *d = client_new();
    roundtrip(d, 3);
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(u64, st.rejected, 1));
    cr_assert(eq(u64, st.accepted, 3));
    cr_assert(eq(sz, st.connections, 2));
    client_free(b);
    client_free(d);
}

Test(server, out_of_descriptors_pauses_accepting)
{
    T.opt.accept_pause_us = 300 * REACTOR_MSEC;
    start();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(ge(int, fd, 0));
    int lowest_free = dup(0);
    cr_assert(ge(int, lowest_free, 0));
    close(lowest_free);
    struct rlimit saved, tight;
    cr_assert(eq(int, getrlimit(RLIMIT_NOFILE, &saved), 0));
    tight = saved;
    tight.rlim_cur = (rlim_t)lowest_free; /* not one descriptor more */
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &tight), 0));
    struct sockaddr_un a = addr_of(T.path);
    cr_assert(eq(int, connect(fd, (struct sockaddr *)&a, sizeof a), 0));
    pump_until(&T.logs, 1);
    cr_assert(strstr(T.last_log, "pausing") != NULL, "%s", T.last_log);
    cr_assert(eq(int, reactor_run_once(T.r, 0), 0), "the listener is quiet, not spinning");
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &saved), 0));
    /* The kernel keeps the refused connection queued, but valgrind's accept
     * wrapper consumes it: a new client shows that accepting resumed. */
    close(fd);
    client *c = client_new();
    roundtrip(c, 1);
    client_free(c);
    cr_assert(eq(int, T.logs, 1), "one pause, one line");
}

Test(server, stats_count_bytes)
{
    start();
    client *c = client_new();
    const char *req = "{\"id\":1,\"op\":\"echo\"}\n";
    client_puts(c, req);
    json_t *r = client_recv(c);
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    server_stats_t st;
    server_stats(T.s, &st);
    cr_assert(eq(u64, st.bytes_in, strlen(req)));
    cr_assert(eq(u64, st.bytes_out, strlen(text) + 1));
    cr_assert(eq(u64, st.accepted, 1));
    cr_assert(eq(sz, st.connections, 1));
    free(text);
    client_free(c);
}

/* ---- big lines are parsed off the reactor thread (server_parse.c) */

/* A line of LEN bytes: a measure request with id ID padded to that length,
 * or, when BROKEN, JSON cut short. Caller frees. */
static char *big_line(int id, size_t len, bool broken)
{
    char *s = malloc(len + 1);
    cr_assert(s != NULL);
    int head = snprintf(s, len, "{\"id\":%d,\"op\":\"measure\",\"pad\":\"", id);
    memset(s + head, 'p', len - (size_t)head - 3);
    memcpy(s + len - 3, broken ? "p,\n" : "\"}\n", 3);
    s[len] = '\0';
    return s;
}

Test(server, big_lines_keep_their_order_among_small_ones)
{
    start();
    client *c = client_new();
    size_t len = (size_t)1 << 20;
    char *one = big_line(1, len, false), *three = big_line(3, (size_t)300 << 10, true);
    client_puts(c, one);
    client_puts(c, "{\"id\":2,\"op\":\"echo\"}\n");
    client_puts(c, three);
    client_puts(c, "{\"id\":4,\"op\":\"echo\"}\n");
    json_t *r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 1));
    cr_assert(eq(i64, json_integer_value(json_object_get(r, "bytes")),
                 (json_int_t)(len - strlen("{\"id\":1,\"op\":\"measure\",\"pad\":\"") - 3)));
    json_decref(r);
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 2));
    json_decref(r);
    r = client_recv(c);
    assert_error(r, "invalid_json");
    json_decref(r);
    r = client_recv(c);
    cr_assert(eq(i64, reply_id(r), 4));
    json_decref(r);
    /* another client is served as before */
    client *d = client_new();
    roundtrip(d, 5);
    client_free(d);
    client_free(c);
    free(one);
    free(three);
}

Test(server, a_client_gone_while_its_big_line_parses_is_no_harm)
{
    start();
    for (int i = 0; i < 3; i++) {
        client *c = client_new();
        char *line = big_line(i, (size_t)4 << 20, false);
        client_puts(c, line);
        free(line);
        client_free(c); /* gone before (or while) the line is parsed */
    }
    client *d = client_new();
    roundtrip(d, 9);
    client_free(d);
    /* the teardown frees the server, perhaps with a line still parsing */
}
