/* test_loomd_tenants.c -- tenants, access and fair shares in a real loomd.
 *
 * Access by credentials needs peers with credentials of their own. The
 * kernel takes a connection's credentials (SO_PEERCRED, SO_PEERGROUPS) at
 * connect(2), so a test running as root forks a child that drops to another
 * uid, gid and groups, connects, and hands the connected socket back over a
 * socketpair (SCM_RIGHTS): the parent then talks as that peer. Without root
 * that cannot be done, and those tests say so and skip; what a single uid
 * can show (a peer no rule matches, a read-only role) runs everywhere.
 *
 * The flood test does not need two uids: an admin acts for a tenant by
 * naming it on the request, which is what it exercises (the queues only see
 * a job's tenant, however it was set). */
#include <criterion/criterion.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

#define ONE_WF "loom: 1\nname: one\ndo: { call: 'hello {{ input.n }}' }\n"
#define LIMITED_WF                                                                                 \
    "loom: 1\nname: limited\ndefaults: { provider: limited }\ndo: { call: 'x {{ input.n }}' }\n"

static const char *code_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

/* The daemon with EXTRA (top-level YAML) added to its config. */
static void start_with(const char *extra, const char *providers)
{
    lh_setup(&D, providers, NULL);
    char *with = NULL;
    cr_assert(asprintf(&with, "shutdown_grace: 5s\n%s", extra) > 0);
    lh_config_replace(&D, "shutdown_grace: 5s\n", with);
    free(with);
    lh_workflow(&D, "one", ONE_WF);
    lh_workflow(&D, "limited", LIMITED_WF);
    lh_workflow(&D, "slow", "loom: 1\nname: slow\ndefaults: { provider: slow }\n"
                            "do: { call: 'slowly' }\n");
    lh_start(&D);
}

/* Sends REQ on FD and returns the reply to it (new reference; events on
 * the way are skipped). */
static json_t *call_on(int fd, const char *req)
{
    lh_send(fd, req);
    for (;;) {
        json_t *r = lh_recv(fd, 15000);
        cr_assert(r, "no reply to %s", req);
        if (json_object_get(r, "id") || json_object_get(r, "ok"))
            return r;
        json_decref(r);
    }
}

/* ---- peers with other credentials (root only) */

/* A connection to the daemon made by a process with UID, GID and the one
 * supplementary group SUP (0: none): a child drops to them, connects and
 * passes the socket back. -1 when it could not. */
static int connect_as(uid_t uid, gid_t gid, gid_t sup)
{
    int sp[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(sp[0]);
        gid_t groups[1] = { sup };
        if (setgroups(sup ? 1 : 0, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
            _exit(2);
        int fd = lh_connect(&D);
        if (fd < 0)
            _exit(3);
        char byte = 0;
        char ctl[CMSG_SPACE(sizeof(int))];
        struct iovec iov = { &byte, 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                            .msg_controllen = sizeof ctl };
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
        _exit(sendmsg(sp[1], &m, 0) == 1 ? 0 : 4);
    }
    close(sp[1]);
    char byte;
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl };
    int fd = -1;
    if (recvmsg(sp[0], &m, 0) == 1) {
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
    }
    close(sp[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child could not connect (%d)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return fd;
}

/* Other uids must reach the socket: its directory and the socket itself. */
static void open_socket_to_all(void)
{
    cr_assert_eq(chmod(D.dir, 0755), 0);
    cr_assert_eq(chmod(D.sock, 0666), 0);
}

#define UID_A 40001
#define UID_B 40002
#define UID_NOBODY 40003
#define GID_TEAM 40100

static json_t *submit_on(int fd, const char *extra)
{
    char req[512];
    snprintf(req, sizeof req,
             "{\"id\":1,\"op\":\"submit\",\"workflow\":\"one\",\"input\":{\"n\":1},"
             "\"wait\":true%s}", extra);
    return call_on(fd, req);
}

static const char *job_of(json_t *r)
{
    return json_string_value(json_object_get(r, "job"));
}

static bool list_has(int fd, const char *extra, const char *job)
{
    char req[256];
    snprintf(req, sizeof req, "{\"id\":2,\"op\":\"list\"%s}", extra);
    json_t *r = call_on(fd, req);
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    bool found = false;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(r, "jobs"), i, o)
        found |= strcmp(json_string_value(json_object_get(o, "id")), job) == 0;
    json_decref(r);
    return found;
}

Test(tenants, credentials_map_to_tenants_and_roles, .fini = teardown)
{
    if (geteuid() != 0)
        cr_skip_test("peers with other uids need root to make them (this test runs as uid %ld)",
                     (long)geteuid());
    char extra[512];
    snprintf(extra, sizeof extra,
             "tenants: { a: {}, b: {} }\n"
             "access:\n"
             "  - { uid: %d, tenant: a, role: submit }\n"
             "  - { group: root, role: admin }\n"
             "  - { gid: %d, tenant: b, role: read }\n",
             UID_A, GID_TEAM);
    start_with(extra, NULL);
    open_socket_to_all();
    int a = connect_as(UID_A, UID_A, 0);
    int b = connect_as(UID_B, UID_B, GID_TEAM); /* b by a supplementary group */
    int nobody = connect_as(UID_NOBODY, UID_NOBODY, 0);
    int admin = lh_connect(&D);
    cr_assert(a >= 0 && b >= 0 && nobody >= 0 && admin >= 0);

    json_t *r = call_on(nobody, "{\"id\":1,\"op\":\"stats\"}");
    cr_assert_str_eq(code_of(r), "access_denied", "%s", json_dumps(r, 0));
    json_decref(r);

    json_t *ja = submit_on(a, "");
    cr_assert(json_is_true(json_object_get(ja, "ok")), "%s", json_dumps(ja, 0));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ja, "result"), "tenant")),
                     "a", "the job belongs to its submitter's tenant");
    const char *job_a = job_of(ja);

    r = submit_on(b, "");
    cr_assert_str_eq(code_of(r), "forbidden", "read may not submit: %s", json_dumps(r, 0));
    json_decref(r);
    r = submit_on(a, ", \"tenant\": \"b\"");
    cr_assert_str_eq(code_of(r), "forbidden", "only admin acts for another tenant");
    json_decref(r);

    /* b cannot see a's job: not_found, as if it did not exist */
    char req[256];
    snprintf(req, sizeof req, "{\"id\":3,\"op\":\"get\",\"job\":\"%s\"}", job_a);
    r = call_on(b, req);
    cr_assert_str_eq(code_of(r), "not_found", "%s", json_dumps(r, 0));
    json_decref(r);
    snprintf(req, sizeof req, "{\"id\":3,\"op\":\"wait\",\"job\":\"%s\"}", job_a);
    r = call_on(b, req);
    cr_assert_str_eq(code_of(r), "not_found");
    json_decref(r);
    snprintf(req, sizeof req, "{\"id\":3,\"op\":\"events\",\"job\":\"%s\"}", job_a);
    r = call_on(b, req);
    cr_assert_str_eq(code_of(r), "not_found");
    json_decref(r);
    cr_assert(list_has(a, "", job_a));
    cr_assert(!list_has(b, "", job_a), "b's list holds only b's jobs");
    cr_assert(list_has(admin, "", job_a), "admin sees every tenant");
    cr_assert(!list_has(admin, ", \"tenant\": \"b\"", job_a), "admin may scope to one");

    /* admin acts for b; b then sees it, a does not, b may not cancel */
    json_t *jb = submit_on(admin, ", \"tenant\": \"b\"");
    cr_assert(json_is_true(json_object_get(jb, "ok")), "%s", json_dumps(jb, 0));
    const char *job_b = job_of(jb);
    snprintf(req, sizeof req, "{\"id\":3,\"op\":\"get\",\"job\":\"%s\"}", job_b);
    r = call_on(b, req);
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    json_decref(r);
    r = call_on(a, req);
    cr_assert_str_eq(code_of(r), "not_found");
    json_decref(r);
    snprintf(req, sizeof req, "{\"id\":3,\"op\":\"retry\",\"job\":\"%s\"}", job_b);
    r = call_on(b, req);
    cr_assert_str_eq(code_of(r), "forbidden", "read may not retry");
    json_decref(r);
    r = call_on(admin, "{\"id\":3,\"op\":\"get\",\"job\":\"x\",\"tenant\":\"c\"}");
    cr_assert_str_eq(code_of(r), "unknown_tenant");
    json_decref(r);

    /* a's stream of every job carries a's jobs only */
    r = call_on(a, "{\"id\":4,\"op\":\"events\"}");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    json_decref(r);
    json_t *jb2 = submit_on(admin, ", \"tenant\": \"b\"");
    json_t *ja2 = submit_on(admin, ", \"tenant\": \"a\"");
    cr_assert(json_is_true(json_object_get(ja2, "ok")));
    const char *job_a2 = job_of(ja2);
    for (;;) {
        json_t *ev = lh_recv(a, 15000);
        cr_assert(ev, "a's job's events never came");
        const char *j = json_string_value(json_object_get(ev, "job"));
        cr_assert(j && strcmp(j, job_a2) == 0, "a saw an event of another job: %s",
                  json_dumps(ev, 0));
        bool end = strcmp(json_string_value(json_object_get(ev, "event")), "job_finished") == 0;
        json_decref(ev);
        if (end)
            break;
    }

    /* stats: a sees its own tenant only; admin sees both */
    r = call_on(a, "{\"id\":5,\"op\":\"stats\"}");
    json_t *tn = json_object_get(r, "tenants");
    cr_assert(json_object_get(tn, "a") && !json_object_get(tn, "b"), "%s", json_dumps(r, 0));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r, "jobs"), "succeeded")), 2,
                 "a's own jobs: %s", json_dumps(r, 0));
    json_decref(r);
    r = call_on(admin, "{\"id\":5,\"op\":\"stats\"}");
    tn = json_object_get(r, "tenants");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(tn, "b"), "submitted")), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(tn, "a"), "submitted")), 2);
    json_decref(r);
    json_decref(ja);
    json_decref(jb);
    json_decref(jb2);
    json_decref(ja2);
    close(a);
    close(b);
    close(nobody);
    close(admin);
}

/* What one uid can show: no rule matching it, then (after a reload) a rule
 * that lets it read only. */
Test(tenants, a_peer_no_rule_matches_is_refused, .fini = teardown)
{
    char extra[512];
    snprintf(extra, sizeof extra, "access:\n  - { uid: %ld, role: admin }\n",
             (long)geteuid() + 1);
    start_with(extra, NULL);
    json_t *r = lh_call(&D, "{\"id\":1,\"op\":\"list\"}", 15000);
    cr_assert_str_eq(code_of(r), "access_denied", "%s", json_dumps(r, 0));
    json_decref(r);
    r = lh_call(&D, "{\"id\":1,\"op\":\"nosuchop\"}", 15000);
    cr_assert_str_eq(code_of(r), "unknown_op", "an unknown op is unknown before access");
    json_decref(r);
    char rule[128];
    snprintf(rule, sizeof rule, "  - { uid: %ld, role: read }\n  - { uid: %ld, role: admin }\n",
             (long)geteuid(), (long)geteuid() + 1);
    lh_config_replace(&D, extra + strlen("access:\n"), rule);
    cr_assert_eq(kill(D.pid, SIGHUP), 0);
    /* the reload runs whole in one turn of the reactor: a request sent once
     * its first line is logged is handled after it */
    lh_wait_log(&D, "reloading", NULL, 1, 15000);
    r = lh_call(&D, "{\"id\":1,\"op\":\"list\"}", 15000);
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    json_decref(r);
    r = lh_call(&D, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"one\"}", 15000);
    cr_assert_str_eq(code_of(r), "forbidden", "%s", json_dumps(r, 0));
    json_decref(r);
}

/* ---- the flood: fair shares of the job queue and of a provider's rate */

/* Reads FD until the reply with id ID, counting what comes on the way:
 * job_started and job_finished events of A's and B's jobs (B's are the
 * ids in BJOBS, NB of them). */
typedef struct flood {
    int fd;
    char bjobs[10][40];
    int nb;
    int a_started, a_finished, b_started, b_finished;
    int a_started_before_b;    /* a's starts after b's first queued, before its first start */
    bool b_queued;             /* b's first submit has been answered */
} flood;

static bool is_b(const flood *f, const char *job)
{
    for (int i = 0; i < f->nb; i++)
        if (strcmp(f->bjobs[i], job) == 0)
            return true;
    return false;
}

/* One line of FD: counts it; returns it (new reference) or NULL. */
static json_t *flood_line(flood *f, int timeout_ms)
{
    json_t *l = lh_recv(f->fd, timeout_ms);
    if (!l)
        return NULL;
    const char *ev = json_string_value(json_object_get(l, "event"));
    const char *job = json_string_value(json_object_get(l, "job"));
    if (ev && job) {
        bool b = is_b(f, job);
        if (strcmp(ev, "job_started") == 0) {
            if (b)
                f->b_started++;
            else
                f->a_started++;
            if (!b && f->b_queued && !f->b_started)
                f->a_started_before_b++;
        } else if (strcmp(ev, "job_finished") == 0) {
            if (b)
                f->b_finished++;
            else
                f->a_finished++;
        }
    }
    return l;
}

Test(tenants, a_flood_does_not_starve_a_small_tenant, .fini = teardown)
{
    /* rpm 600: 10 calls a second (after a burst of 9), one call a job */
    start_with("max_running_jobs: 50\nmax_pending_per_connection: 20000\n"
               "tenants: { a: { weight: 1 }, b: { weight: 1 } }\n",
               "  limited: { plugin: mock, latency: 1ms, limits: { rpm: 600 } }\n");
    enum { FLOOD = 10000, SMALL = 10, WA = 1, WB = 1 };
    /* a floods on one connection, pipelined a thousand at a time: the
     * daemon stops reading a connection whose unread replies pass 256 KiB */
    int fa = lh_connect(&D);
    cr_assert(fa >= 0);
    enum { CHUNK = 1000 };
    char *buf = malloc((size_t)CHUNK * 160);
    cr_assert(buf);
    for (int c = 0; c < FLOOD; c += CHUNK) {
        size_t len = 0;
        for (int i = c; i < c + CHUNK; i++)
            len += (size_t)snprintf(buf + len, (size_t)CHUNK * 160 - len,
                                    "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"limited\","
                                    "\"input\":{\"n\":%d},\"tenant\":\"a\"}\n", i, i);
        cr_assert(lh_send_all(fa, buf, len));
        for (int got = 0; got < CHUNK; got++) {
            json_t *r = lh_recv(fa, 60000);
            cr_assert(r, "a's submit %d was not answered", c + got);
            cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
            json_decref(r);
        }
    }
    free(buf);
    /* b's connection watches every job, then waits until a holds the
     * provider at its rate (a second of it: ten of a's jobs end) */
    flood f = { .fd = lh_connect(&D) };
    cr_assert(f.fd >= 0);
    json_t *r = call_on(f.fd, "{\"id\":-1,\"op\":\"events\"}");
    json_decref(r);
    while (f.a_finished < 10) {
        json_t *l = flood_line(&f, 30000);
        cr_assert(l, "a's jobs do not end");
        json_decref(l);
    }
    /* b submits 10 on the same connection, so that each submit's answer
     * (sent as the job is queued) is ordered with the events */
    for (int i = 0; i < SMALL; i++) {
        char req[200];
        snprintf(req, sizeof req,
                 "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"limited\",\"input\":{\"n\":%d},"
                 "\"tenant\":\"b\"}", 100 + i, i);
        lh_send(f.fd, req);
    }
    int a_finished_at_b = -1;
    long b_from = 0, b_to = 0;
    while (f.b_finished < SMALL) {
        json_t *l = flood_line(&f, 30000);
        cr_assert(l, "b's jobs do not end (%d of %d)", f.b_finished, SMALL);
        json_int_t id = json_integer_value(json_object_get(l, "id"));
        if (id >= 100 && id < 100 + SMALL) {
            cr_assert(json_is_true(json_object_get(l, "ok")), "%s", json_dumps(l, 0));
            snprintf(f.bjobs[f.nb++], sizeof f.bjobs[0], "%s",
                     json_string_value(json_object_get(l, "job")));
            if (!f.b_queued) {
                f.b_queued = true;
                a_finished_at_b = f.a_finished;
                b_from = lh_now_ms();
            }
        }
        json_decref(l);
    }
    b_to = lh_now_ms();
    /* b's jobs start within one turn of the queue: at most WA of a's start
     * between b's first being queued and its start */
    cr_assert(f.a_started_before_b <= WA, "%d of a's jobs started before b's first",
              f.a_started_before_b);
    /* b got at least its share of the provider while it had calls: a's
     * calls granted meanwhile are at most WA/WB of b's, give or take a turn
     * of the job queue (WA starts) and of the limiter (one call of credit
     * each side: calls of a few tokens, far below a turn of 16 per weight,
     * plus the one in flight) */
    int a_meanwhile = f.a_finished - a_finished_at_b;
    int slack = WA + 2 + 1;
    cr_assert(a_meanwhile <= SMALL * WA / WB + slack,
              "while b had jobs (%ld ms), a had %d calls and b %d", b_to - b_from, a_meanwhile,
              SMALL);
    /* b quiet again: a gets the whole rate, not its half of it. 30 of a's
     * calls at 10/s take 2.9 s; held to its share (5/s) they would take
     * 5.8 s at least */
    int from = f.a_finished;
    long t0 = lh_now_ms();
    while (f.a_finished < from + 31) {
        json_t *l = flood_line(&f, 30000);
        cr_assert(l);
        json_decref(l);
    }
    long took = lh_now_ms() - t0;
    cr_assert(took < 5800, "30 of a's calls took %ld ms: a did not get b's share", took);
    r = call_on(f.fd, "{\"id\":-2,\"op\":\"stats\"}");
    json_t *tn = json_object_get(r, "tenants");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(tn, "a"), "submitted")), FLOOD);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(tn, "b"), "submitted")), SMALL);
    json_decref(r);
    close(f.fd);
    close(fa);
}

Test(tenants, a_tenants_own_limits, .fini = teardown)
{
    start_with("tenants: { c: { max_running_jobs: 1, max_queued_jobs: 1 } }\n", NULL);
    int fd = lh_connect(&D);
    cr_assert(fd >= 0);
    const char *sub = "{\"id\":1,\"op\":\"submit\",\"workflow\":\"slow\",\"tenant\":\"c\"}";
    json_t *r1 = call_on(fd, sub), *r2 = call_on(fd, sub), *r3 = call_on(fd, sub);
    cr_assert(json_is_true(json_object_get(r1, "ok")), "%s", json_dumps(r1, 0));
    cr_assert(json_is_true(json_object_get(r2, "ok")), "%s", json_dumps(r2, 0));
    cr_assert_str_eq(code_of(r3), "queue_full", "%s", json_dumps(r3, 0));
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r3, "error"), "message")),
                     "tenant c"));
    /* the default tenant is not held by c's limits */
    json_t *r4 = call_on(fd, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"one\",\"wait\":true}");
    cr_assert(json_is_true(json_object_get(r4, "ok")), "%s", json_dumps(r4, 0));
    json_t *s = call_on(fd, "{\"id\":2,\"op\":\"stats\"}");
    json_t *c = json_object_get(json_object_get(s, "tenants"), "c");
    cr_assert_eq(json_integer_value(json_object_get(c, "running")), 1, "%s", json_dumps(s, 0));
    cr_assert_eq(json_integer_value(json_object_get(c, "queued")), 1);
    cr_assert_eq(json_integer_value(json_object_get(c, "rejected")), 1);
    cr_assert_eq(json_integer_value(json_object_get(c, "weight")), 1);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    json_decref(r4);
    json_decref(s);
    close(fd);
}

Test(tenants, an_idempotency_key_never_crosses_tenants, .fini = teardown)
{
    start_with("tenants: { a: {}, b: {} }\n", NULL);
    const char *sa = "{\"id\":1,\"op\":\"submit\",\"workflow\":\"one\",\"tenant\":\"a\","
                     "\"idempotency_key\":\"k1\",\"wait\":true}";
    json_t *r1 = lh_call(&D, sa, 15000);
    cr_assert(json_is_true(json_object_get(r1, "ok")), "%s", json_dumps(r1, 0));
    json_t *r2 = lh_call(&D, sa, 15000); /* a again: its own job, existed */
    cr_assert(json_is_true(json_object_get(r2, "existed")), "%s", json_dumps(r2, 0));
    cr_assert_str_eq(json_string_value(json_object_get(r2, "job")),
                     json_string_value(json_object_get(r1, "job")));
    json_t *r3 = lh_call(&D, "{\"id\":1,\"op\":\"submit\",\"workflow\":\"one\",\"tenant\":\"b\","
                             "\"idempotency_key\":\"k1\"}", 15000);
    cr_assert_str_eq(code_of(r3), "idempotency_conflict", "%s", json_dumps(r3, 0));
    char *text = json_dumps(r3, 0);
    cr_assert(text && !strstr(text, json_string_value(json_object_get(r1, "job"))),
              "b must not learn a's job id");
    free(text);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
}
