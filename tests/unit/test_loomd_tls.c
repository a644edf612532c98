/* test_loomd_tls.c -- a real loomd calling the fake provider through a real
 * TLS and HTTP/2 server: nghttpx (Debian's nghttp2-proxy) in front of the
 * fake, which it reaches over HTTP/1.1.
 *
 * A test CA and its certificates are made at test time (tls_certs.sh): one
 * for 127.0.0.1 and localhost, one for another name, an expired one. One
 * nghttpx per certificate, each writing an access log with the client's
 * port (one port: one connection) and the protocol ALPN chose. So the tests
 * see what the server saw: h2 with ca_file and with ca_path, h2c with
 * http_version "2", how many connections a burst of calls used, how many
 * streams were open on one connection at once; and that a refused
 * certificate fails the step with "tls" at its first attempt, the fake never
 * asked.
 *
 * Every wait is for the event (a reply, a log line, a listening port) with
 * a deadline. A test skips, saying why, only when nghttpx or openssl is not
 * installed (scripts/deps installs both). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

/* the fake's answer time: long enough that calls started together are all
 * in flight at once, so a connection's streams overlap */
#define LATENCY_MS "200"
/* calls in the bursts: fewer than nghttpx's default of 100 streams per
 * connection (so one connection can carry them all) and than the HTTP
 * client's calls per multi handle (256: each handle has its own
 * connections) */
#define BURST 40
/* the narrow server's max_concurrent_streams */
#define NARROW_STREAMS 4

enum { PX_GOOD, PX_NARROW, PX_WRONGHOST, PX_EXPIRED, PX_H1ONLY, PX_COUNT };

typedef struct proxy {
    pid_t pid;                 /* its process group too */
    int port;                  /* the TLS frontend */
    int h2c_port;              /* PX_GOOD's plain frontend, else 0 */
    char log[512];             /* its access log */
} proxy;

static lh_daemon D;
static proxy P[PX_COUNT];
static char certs[256];        /* the test CA's directory */

static void teardown(void)
{
    for (int i = 0; i < PX_COUNT; i++) {
        if (P[i].pid > 0) {
            kill(-P[i].pid, SIGTERM);
            waitpid(P[i].pid, NULL, 0);
        }
    }
    memset(P, 0, sizeof P);
    lh_teardown(&D);
    if (certs[0] && !getenv("LOOM_KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", certs);
        (void)system(cmd);
    }
    certs[0] = '\0';
}

/* Where PROG is on PATH or in the sbin directories (nghttpx is in
 * /usr/sbin, which a user's PATH may lack), into OUT; false if nowhere. */
static bool find_program(const char *prog, char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin", path ? path : "/usr/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, outlen, "%s/%s", d, prog);
        if (access(out, X_OK) == 0)
            return true;
    }
    return false;
}

/* A port on 127.0.0.1 nobody listens on, below the ephemeral range so that
 * no client socket takes it meanwhile; each call gives another. Each test
 * process starts a block of 8 of its own (a setup takes 6): Criterion runs
 * this program's tests side by side, with pids a few apart, and blocks 2
 * apart overlapped, so that a proxy of one test could fail to bind a port
 * another's had taken between the check and the bind, and the test then
 * talked to the other's proxy (a certificate it did not expect). */
static int free_port(void)
{
    static int next;
    if (!next)
        next = 20000 + (int)(getpid() % 1500) * 8;
    for (int tries = 0; tries < 2000; tries++) {
        int port = next++;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
        if (rc == 0)
            return port;
    }
    cr_assert_fail("no free port");
    return -1;
}

static bool listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts nghttpx NAME as proxy X (its ports set) in front of the fake, with
 * certificate CERT (CERT.pem, CERT.key) and EXTRA arguments
 * (NULL-terminated), and waits (10 s at most) until its frontends listen. */
static void start_proxy(int x, const char *name, const char *cert, const char *const *extra)
{
    proxy *p = &P[x];
    char exe[512], front[64], front2[64], back[64], key[512], pem[512], elog[512], acc[600];
    cr_assert(find_program("nghttpx", exe, sizeof exe));
    snprintf(front, sizeof front, "-f127.0.0.1,%d", p->port);
    if (p->h2c_port)
        snprintf(front2, sizeof front2, "-f127.0.0.1,%d;no-tls", p->h2c_port);
    snprintf(back, sizeof back, "-b127.0.0.1,%d", D.fake.port);
    snprintf(key, sizeof key, "%s/%s.key", certs, cert);
    snprintf(pem, sizeof pem, "%s/%s.pem", certs, cert);
    snprintf(p->log, sizeof p->log, "%s/%s.access", certs, name);
    snprintf(acc, sizeof acc, "--accesslog-file=%s", p->log);
    snprintf(elog, sizeof elog, "--errorlog-file=%s/%s.err", certs, name);
    const char *argv[32] = {
        exe, "--conf=/dev/null", "--single-thread", "--no-ocsp", front, back,
        /* the backend may take more than any frontend connection's streams,
         * so that the fake's view is the frontend's */
        "--backend-connections-per-host=256",
        "--accesslog-format=$remote_port $alpn $status $time_iso8601 $request_time", acc, elog,
    };
    int n = 10;
    if (p->h2c_port)
        argv[n++] = front2;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n++] = key;
    argv[n++] = pem;
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* it forks a worker: both end with the group */
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2); /* it says which config it reads before its error log opens */
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid);
    p->pid = pid;
    long t0 = lh_now_ms();
    while (!listening(p->port) || (p->h2c_port && !listening(p->h2c_port))) {
        int st;
        cr_assert(waitpid(pid, &st, WNOHANG) == 0, "nghttpx %s exited (see %s)", name, elog);
        cr_assert(lh_now_ms() - t0 < 10000, "nghttpx %s does not listen", name);
        poll(NULL, 0, 10);
    }
}

/* The test CA, loomd with one provider per case and the proxies. */
static void setup(void)
{
    char exe[512], cmd[1024];
    if (!find_program("nghttpx", exe, sizeof exe) || !find_program("openssl", exe, sizeof exe))
        cr_skip_test("nghttpx or openssl is not installed (scripts/deps installs "
                     "nghttp2-proxy and openssl)");
    snprintf(certs, sizeof certs, "/tmp/loom-tls-XXXXXX");
    cr_assert(mkdtemp(certs));
    const char *src = getenv("LOOM_SRCDIR");
    snprintf(cmd, sizeof cmd, "sh '%s/tests/unit/tls_certs.sh' '%s'", src ? src : ".", certs);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    cr_assert(setenv("LOOM_TEST_TLS_KEY", "sk-test-tls", 1) == 0);

    int good = free_port(), narrow = free_port(), wrong = free_port(), expired = free_port(),
        h1only = free_port(), h2c = free_port();
    char prov[4096];
    /* "@FAKE@" first: the harness starts the fake for it */
#define KEY "api_key_env: LOOM_TEST_TLS_KEY, model: gpt-test"
    snprintf(prov, sizeof prov,
             "  direct: { plugin: openai, base_url: \"@FAKE@\", " KEY " }\n"
             "  tls: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "         ca_file: %s/ca.pem, limits: { concurrency: 100 } }\n"
             "  tlsdir: { plugin: anthropic, base_url: \"https://localhost:%d/v1\",\n"
             "            api_key_env: LOOM_TEST_TLS_KEY, model: claude-test,\n"
             "            ca_path: %s/capath }\n"
             "  tls11: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "           ca_file: %s/ca.pem, http_version: \"1.1\" }\n"
             "  h2c: { plugin: openai, base_url: \"http://127.0.0.1:%d/v1\", " KEY ",\n"
             "         http_version: \"2\" }\n"
             "  narrow: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "            ca_file: %s/ca.pem, limits: { concurrency: 100 } }\n"
             "  unknownca: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "               ca_file: %s/other-ca.pem }\n"
             "  wronghost: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "               ca_file: %s/ca.pem }\n"
             "  expired: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "             ca_file: %s/ca.pem }\n"
             "  noh2: { plugin: openai, base_url: \"https://127.0.0.1:%d/v1\", " KEY ",\n"
             "          ca_file: %s/ca.pem, http_version: \"2\" }\n",
             good, certs, good, certs, good, certs, h2c, narrow, certs, good, certs, wrong, certs,
             expired, certs, h1only, certs);
#undef KEY
    static const char *const fake_args[] = { "--latency", LATENCY_MS, NULL };
    lh_setup(&D, prov, fake_args);

    /* the ports were chosen above: start_proxy takes them in this order */
    int ports[] = { good, narrow, wrong, expired, h1only };
    static const char *const narrow_args[] = {
        "--frontend-http2-max-concurrent-streams=" "4", NULL };
    _Static_assert(NARROW_STREAMS == 4, "narrow_args says 4");
    static const char *const h1_args[] = { "--npn-list=http/1.1", NULL };
    struct { const char *name, *cert; const char *const *extra; } px[PX_COUNT] = {
        [PX_GOOD] = { "good", "good", NULL },
        [PX_NARROW] = { "narrow", "good", narrow_args },
        [PX_WRONGHOST] = { "wronghost", "wronghost", NULL },
        [PX_EXPIRED] = { "expired", "expired", NULL },
        [PX_H1ONLY] = { "h1only", "good", h1_args },
    };
    for (int i = 0; i < PX_COUNT; i++) {
        P[i].port = ports[i];
        if (i == PX_GOOD)
            P[i].h2c_port = h2c;
    }
    for (int i = 0; i < PX_COUNT; i++)
        start_proxy(i, px[i].name, px[i].cert, px[i].extra);

    static const char *const names[] = { "direct", "tls", "tlsdir", "tls11", "h2c", "narrow",
                                         "unknownca", "wronghost", "expired", "noh2" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char name[64], wf[1024];
        snprintf(name, sizeof name, "one-%s", names[i]);
        /* retried on every class retried by default: a tls failure must not be */
        snprintf(wf, sizeof wf,
                 "loom: 1\nname: %s\ninput: { text: string }\n"
                 "do: { call: { provider: %s, prompt: '{{ input.text }}' },\n"
                 "      retry: { max_attempts: 3, initial_delay: 10ms } }\n",
                 name, names[i]);
        lh_workflow(&D, name, wf);
        snprintf(name, sizeof name, "many-%s", names[i]);
        snprintf(wf, sizeof wf,
                 "loom: 1\nname: %s\ninput: { items: array }\n"
                 "do:\n  map:\n    over: '{{ input.items }}'\n    max_concurrency: 100\n"
                 "    do: { call: { provider: %s, prompt: 'item {{ item }}' } }\n",
                 name, names[i]);
        lh_workflow(&D, name, wf);
    }
    lh_start(&D);
}

/* ---- running jobs */

/* Runs WORKFLOW over INPUT (JSON text) to its end: the job (new reference). */
static json_t *run(const char *workflow, const char *input)
{
    char req[1024];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":%s,\"wait\":true}",
             workflow, input);
    json_t *r = lh_call(&D, req, 30000);
    cr_assert(r != NULL, "no reply to %s", req);
    json_t *job = json_incref(json_object_get(r, "result"));
    char *text = json_dumps(r, 0);
    cr_assert(job != NULL, "%s", text);
    free(text);
    json_decref(r);
    return job;
}

static const char *str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* Runs one-P and asserts that it succeeded with the fake's echo of TEXT. */
static void call_succeeds(const char *p, const char *text)
{
    char wf[64], input[256];
    snprintf(wf, sizeof wf, "one-%s", p);
    snprintf(input, sizeof input, "{\"text\":\"%s\"}", text);
    json_t *job = run(wf, input);
    char *dump = json_dumps(job, 0);
    cr_assert_str_eq(str(job, "state"), "succeeded", "%s", dump);
    cr_assert(strstr(str(job, "output"), text), "the answer echoes the prompt: %s", dump);
    free(dump);
    json_decref(job);
}

/* ---- the server's view: its access log, one line per request:
 * "CLIENT_PORT ALPN STATUS START_ISO8601 SECONDS" */

typedef struct req_line {
    int port;
    char alpn[16];
    int status;
    long start_ms, end_ms;     /* since the minute's start: a burst spans less */
} req_line;

/* Reads proxy X's access log into V (at most MAX lines): how many. */
static int read_log(int x, req_line *v, int max)
{
    FILE *f = fopen(P[x].log, "r");
    if (!f)
        return 0;
    char line[256];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        int min, sec, ms;
        double secs;
        req_line *r = &v[n];
        if (sscanf(line, "%d %15s %d %*d-%*d-%*dT%*d:%d:%d.%d%*s %lf", &r->port, r->alpn, &r->status,
                   &min, &sec, &ms, &secs) == 7) {
            r->start_ms = (long)min * 60000 + sec * 1000 + ms;
            r->end_ms = r->start_ms + (long)(secs * 1000 + 0.5);
            n++;
        }
    }
    fclose(f);
    return n;
}

/* Waits (10 s at most: the jobs have ended, nghttpx logs as it answers)
 * until proxy X's log has N lines, and reads them into V. */
static void wait_log(int x, req_line *v, int n)
{
    long t0 = lh_now_ms();
    int got;
    while ((got = read_log(x, v, n)) < n) {
        cr_assert(lh_now_ms() - t0 < 10000, "%s has %d lines, not %d", P[x].log, got, n);
        poll(NULL, 0, 10);
    }
}

static int distinct_ports(const req_line *v, int n)
{
    int d = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < i && v[j].port != v[i].port)
            j++;
        d += j == i;
    }
    return d;
}

/* The most requests of connection PORT in flight at once. The log's times
 * are rounded to the millisecond, start and duration each, so an interval
 * is taken 2 ms short at its end: a stream that ended as the next one began
 * on the same millisecond is not counted as overlapping it. */
static int most_at_once(const req_line *v, int n, int port)
{
    int most = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].port != port)
            continue;
        int at = 0; /* requests of PORT open when request i started */
        for (int j = 0; j < n; j++)
            if (v[j].port == port && v[j].start_ms <= v[i].start_ms &&
                v[i].start_ms < v[j].end_ms - 2)
                at++;
        if (at > most)
            most = at;
    }
    return most;
}

static char *items_json(int n)
{
    char *s = malloc(16 + (size_t)n * 8);
    cr_assert(s);
    int k = sprintf(s, "{\"items\":[");
    for (int i = 0; i < n; i++)
        k += sprintf(s + k, "%s%d", i ? "," : "", i);
    sprintf(s + k, "]}");
    return s;
}

/* Runs many-P over BURST items; it must succeed with every item's answer. */
static void burst_succeeds(const char *p)
{
    char wf[64];
    snprintf(wf, sizeof wf, "many-%s", p);
    char *input = items_json(BURST);
    json_t *job = run(wf, input);
    free(input);
    char *dump = json_dumps(job, 0);
    cr_assert_str_eq(str(job, "state"), "succeeded", "%.2000s", dump);
    json_t *out = json_object_get(job, "output");
    cr_assert_eq(json_array_size(out), BURST, "%.2000s", dump);
    for (int i = 0; i < BURST; i++) {
        char want[32];
        snprintf(want, sizeof want, "item %d", i);
        cr_assert(strstr(json_string_value(json_array_get(out, (size_t)i)), want), "%.2000s", dump);
    }
    free(dump);
    json_decref(job);
}

/* ---- the tests */

Test(loomd_tls, h2_over_tls_with_ca_file_and_with_ca_path, .init = setup, .fini = teardown)
{
    call_succeeds("tls", "over a CA file");
    call_succeeds("tlsdir", "over a CA directory by name");
    call_succeeds("tls11", "over TLS and HTTP/1.1");
    req_line v[3];
    wait_log(PX_GOOD, v, 3);
    cr_assert_str_eq(v[0].alpn, "h2");
    cr_assert_str_eq(v[1].alpn, "h2");
    cr_assert_str_eq(v[2].alpn, "http/1.1", "http_version \"1.1\" does not offer h2");
    /* the plain HTTP/1.1 path to the fake still works beside them */
    call_succeeds("direct", "straight to the fake");
}

Test(loomd_tls, h2c_with_prior_knowledge, .init = setup, .fini = teardown)
{
    call_succeeds("h2c", "cleartext h2");
    req_line v[1];
    wait_log(PX_GOOD, v, 1);
    cr_assert_str_eq(v[0].alpn, "h2c");
}

/* Many h2c calls at once, each answered: before curl 8.0 the second
 * request on an h2c connection failed (curl issue 10634), so there each
 * call has a connection of its own; from 8.0 they are multiplexed. */
Test(loomd_tls, a_burst_of_h2c_calls_all_succeed, .init = setup, .fini = teardown)
{
    burst_succeeds("h2c");
    call_succeeds("h2c", "cleartext h2, after the burst");
    call_succeeds("h2c", "cleartext h2, once more");
    burst_succeeds("h2c");
    req_line v[2 * BURST + 2];
    wait_log(PX_GOOD, v, 2 * BURST + 2);
    for (int i = 0; i < 2 * BURST + 2; i++)
        cr_assert_str_eq(v[i].alpn, "h2c");
}

Test(loomd_tls, a_burst_of_calls_rides_one_connection, .init = setup, .fini = teardown)
{
    json_decref(fake_server_stats(&D.fake, 1));
    burst_succeeds("tls");
    req_line v[BURST];
    wait_log(PX_GOOD, v, BURST);
    for (int i = 0; i < BURST; i++)
        cr_assert_str_eq(v[i].alpn, "h2");
    cr_assert_eq(distinct_ports(v, BURST), 1, "one connection carries every call");
    /* multiplexed, not one after another on it */
    int most = most_at_once(v, BURST, v[0].port);
    cr_assert_gt(most, 1, "%d streams at once", most);
    cr_assert_gt(fake_server_stat(&D.fake, "max_in_flight"), 1);
}

Test(loomd_tls, max_concurrent_streams_is_never_exceeded, .init = setup, .fini = teardown)
{
    json_decref(fake_server_stats(&D.fake, 1));
    burst_succeeds("narrow");
    req_line v[BURST];
    wait_log(PX_NARROW, v, BURST);
    int busiest = 0;
    for (int i = 0; i < BURST; i++) {
        int m = most_at_once(v, BURST, v[i].port);
        cr_assert_leq(m, NARROW_STREAMS, "connection %d had %d streams at once", v[i].port, m);
        if (m > busiest)
            busiest = m;
    }
    /* the limit held because it was reached, not because nothing overlapped:
     * BURST calls start together and each takes LATENCY_MS, so the first
     * connection fills up to the limit */
    cr_assert_eq(busiest, NARROW_STREAMS, "the busiest connection carried %d streams at once",
                 busiest);
}

/* Runs one-P: it must fail with code tls at its first attempt, with MSG in
 * its message, the fake asked SENT times (0: refused in the handshake). */
static void tls_fails(const char *p, const char *msg, long sent)
{
    json_decref(fake_server_stats(&D.fake, 1));
    char wf[64];
    snprintf(wf, sizeof wf, "one-%s", p);
    json_t *job = run(wf, "{\"text\":\"refused\"}");
    char *dump = json_dumps(job, 0);
    cr_assert_str_eq(str(job, "state"), "failed", "%s", dump);
    json_t *err = json_object_get(job, "error");
    cr_assert_str_eq(str(err, "code"), "tls", "%s", dump);
    cr_assert_eq(json_integer_value(json_object_get(err, "attempts")), 1, "not retried: %s", dump);
    cr_assert(strstr(str(err, "message"), msg), "%s", dump);
    free(dump);
    json_decref(job);
    cr_assert_eq(fake_server_stat(&D.fake, "requests"), sent);
}

Test(loomd_tls, refused_certificates_fail_with_tls_and_are_not_retried, .init = setup,
     .fini = teardown)
{
    tls_fails("unknownca", "unable to get local issuer certificate", 0);
    tls_fails("wronghost", "127.0.0.1", 0);
    tls_fails("expired", "expired", 0);
    /* ALPN chose HTTP/1.1: curl says so only with the answer, so the
     * request went once; once only */
    tls_fails("noh2", "did not offer h2", 1);
    /* the good ones still work on the same daemon */
    call_succeeds("tls", "after the refusals");
}

Test(loomd_tls, unusable_ca_paths_and_versions_are_config_errors, .fini = teardown)
{
    lh_setup(&D,
             "  a: { plugin: openai, base_url: \"https://127.0.0.1:1/v1\", model: m,\n"
             "       ca_file: /nonexistent/ca.pem, ca_path: /dev/null, http_version: 3 }\n",
             NULL);
    char out[4096];
    cr_assert_neq(lh_check(&D, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "error: 'ca_file' /nonexistent/ca.pem cannot be used: No such file"),
              "%s", out);
    cr_assert(strstr(out, "error: 'ca_path' /dev/null cannot be used: not a directory"), "%s",
              out);
    cr_assert(strstr(out, "error: 'http_version' must be auto, \"1.1\" or \"2\""), "%s", out);
    /* each at its place in the file */
    char where[400];
    snprintf(where, sizeof where, "%s:", D.cfg);
    cr_assert(strstr(out, where), "%s", out);
}
