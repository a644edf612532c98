/* test_loomctl_client.c -- loomctl's daemon commands (submit, get, wait,
 * cancel, list, workflows, stats, watch) run as the real binary against a
 * fake loomd.
 *
 * The fake is a thread of the test process listening on a Unix socket in a
 * fresh temporary directory. Each test gives it a table of cases, one per op:
 * the reply lines to send (a line with "ok" and no "id" gets the request's
 * id; a line starting "raw:" is sent as is), a delay before each line, and
 * whether to hang up after them. Several cases for one op answer in turn,
 * the last one for good. The op "(accept)" is answered as soon as a
 * connection is accepted, before any request. Every request it receives is
 * kept, so a test can check what loomctl sent.
 *
 * loomctl is $LOOMCTL, else $LOOM_BUILDDIR/loomctl, else ./loomctl. It runs
 * in the temporary directory, so the default socket ./loom.sock is the
 * fake's. Every run is bounded: a child still running after RUN_LIMIT_S
 * seconds is killed and the test fails. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_LIMIT_S 20

/* ---- the fake daemon ---- */

typedef struct fake_case {
    const char *op;     /* the op this case answers; NULL ends a table */
    const char *lines;  /* reply lines ('\n'-separated JSON), or NULL: no reply */
    int delay_ms;       /* before each line */
    bool hang_up;       /* close the connection after the lines */
} fake_case;

/* Table entries: a reply; one sent DELAY_MS late (before each line); one
 * after which the connection is closed; the end of a table. */
#define REPLY(op, lines) { op, lines, 0, false }
#define DELAYED(op, lines, delay_ms) { op, lines, delay_ms, false }
#define HANG_UP(op, lines, delay_ms) { op, lines, delay_ms, true }
#define END { NULL, NULL, 0, false }

typedef struct fake {
    char path[PATH_MAX + 64];
    int listen_fd;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    const fake_case *cases;
    bool used[32];      /* cases[i] has answered once */
    pthread_mutex_t mu;
    json_t *requests;   /* every request received, in order */
} fake;

static char tmpdir[PATH_MAX];
static fake daemon_fake = { .listen_fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER };

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends the case's lines for REQUEST (NULL: a new connection). -1 when the
 * connection should close. */
static int answer(fake *f, int fd, const json_t *request)
{
    const char *op = request ? json_string_value(json_object_get(request, "op")) : "(accept)";
    /* the first unused case for OP, else the last one for it */
    const fake_case *c = NULL, *end = f->cases;
    while (end->op)
        end++;
    for (const fake_case *k = f->cases; k < end; k++)
        if (op && strcmp(k->op, op) == 0 && (!c || f->used[c - f->cases]))
            c = k;
    if (!c)
        c = end;
    else
        f->used[c - f->cases] = true;
    if (!c->op && !request)
        return 0;
    if (!c->op) {
        json_t *r = json_pack("{sOsbs{ssss}}", "id", json_object_get(request, "id"), "ok", 0,
                              "error", "code", "unknown_op", "message", "no such op in this test");
        char *s = json_dumps(r, JSON_COMPACT);
        int rc = send_all(fd, s, strlen(s)) || send_all(fd, "\n", 1) ? -1 : 0;
        free(s);
        json_decref(r);
        return rc;
    }
    for (const char *p = c->lines; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *next = nl ? nl + 1 : p + len;
        if (len == 0) {
            p = next;
            continue;
        }
        if (c->delay_ms)
            sleep_ms(c->delay_ms);
        json_t *v = strncmp(p, "raw:", 4) == 0 ? NULL : json_loadb(p, len, 0, NULL);
        if (!v) { /* sent as is: a line that is not JSON, or one marked raw: */
            if (strncmp(p, "raw:", 4) == 0)
                p += 4, len -= 4;
            if (send_all(fd, p, len) || send_all(fd, "\n", 1))
                return -1;
            p = next;
            continue;
        }
        if (json_object_get(v, "ok") && !json_object_get(v, "id") && request &&
            json_object_get(request, "id"))
            json_object_set(v, "id", json_object_get(request, "id"));
        char *s = json_dumps(v, JSON_COMPACT);
        json_decref(v);
        int bad = !s || send_all(fd, s, strlen(s)) || send_all(fd, "\n", 1);
        free(s);
        if (bad)
            return -1;
        p = next;
    }
    return c->hang_up ? -1 : 0;
}

/* Reads requests from FD and answers them until the client leaves. */
static void serve(fake *f, int fd)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (answer(f, fd, NULL) < 0) {
        close(fd);
        return;
    }
    while (!atomic_load(&f->stop)) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        char *nl;
        bool hung_up = false;
        while (!hung_up && (nl = memchr(buf, '\n', len))) {
            json_t *req = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
            memmove(buf, nl + 1, len - (size_t)(nl - buf) - 1);
            len -= (size_t)(nl - buf) + 1;
            if (!req)
                continue;
            pthread_mutex_lock(&f->mu);
            json_array_append(f->requests, req);
            pthread_mutex_unlock(&f->mu);
            hung_up = answer(f, fd, req) < 0;
            json_decref(req);
        }
        if (hung_up)
            break;
    }
    free(buf);
    close(fd);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = { .fd = f->listen_fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd >= 0)
            serve(f, fd);
    }
    return NULL;
}

/* Starts the fake on tmpdir/NAME answering with CASES (borrowed: static). */
static void fake_start_at(const char *name, const fake_case *cases)
{
    fake *f = &daemon_fake;
    snprintf(f->path, sizeof f->path, "%s/%s", tmpdir, name);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    cr_assert(strlen(f->path) < sizeof addr.sun_path, "tmpdir too long for a socket path");
    strcpy(addr.sun_path, f->path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(f->listen_fd >= 0);
    cr_assert(bind(f->listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0, "bind: %s",
              strerror(errno));
    cr_assert(listen(f->listen_fd, 16) == 0);
    size_t n = 0;
    while (cases[n].op)
        n++;
    cr_assert(n <= sizeof f->used / sizeof f->used[0], "too many cases");
    f->cases = cases;
    f->requests = json_array();
    atomic_store(&f->stop, false);
    cr_assert(pthread_create(&f->thread, NULL, fake_main, f) == 0);
    f->running = true;
}

static void fake_start(const fake_case *cases)
{
    fake_start_at("loom.sock", cases);
}

/* Request I the fake received (borrowed), or NULL. */
static json_t *fake_request(size_t i)
{
    pthread_mutex_lock(&daemon_fake.mu);
    json_t *r = json_array_get(daemon_fake.requests, i);
    pthread_mutex_unlock(&daemon_fake.mu);
    return r;
}

/* Member KEY of request I as a string, or NULL. */
static char *req_str(size_t i, const char *key)
{
    return (char *)json_string_value(json_object_get(fake_request(i), key));
}

static size_t fake_nrequests(void)
{
    pthread_mutex_lock(&daemon_fake.mu);
    size_t n = json_array_size(daemon_fake.requests);
    pthread_mutex_unlock(&daemon_fake.mu);
    return n;
}

/* ---- fixtures ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/loomctl-client-XXXXXX", base && *base ? base : "/tmp");
    cr_assert(mkdtemp(tmpdir) != NULL, "mkdtemp: %s", strerror(errno));
    unsetenv("LOOM_SOCKET");
}

static void teardown(void)
{
    fake *f = &daemon_fake;
    if (f->running) {
        atomic_store(&f->stop, true);
        pthread_join(f->thread, NULL);
        close(f->listen_fd);
        json_decref(f->requests);
        f->running = false;
    }
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(client, .init = setup, .fini = teardown, .timeout = 60);

/* ---- running loomctl ---- */

typedef struct run_result {
    int status; /* exit status, or -1 if it did not exit normally */
    char *out, *err;
    size_t out_len;
    double seconds;
} run_result;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "cannot open %s", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
            cr_assert(buf != NULL);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

static const char *loomctl_path(void)
{
    static char exe[PATH_MAX];
    const char *env = getenv("LOOMCTL");
    char guess[PATH_MAX];
    if (!env || !*env) {
        const char *build = getenv("LOOM_BUILDDIR");
        snprintf(guess, sizeof guess, "%s/loomctl", build && *build ? build : ".");
        env = guess;
    }
    cr_assert(realpath(env, exe) != NULL, "no loomctl binary at %s (set LOOMCTL)", env);
    return exe;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for PID at most RUN_LIMIT_S seconds (then kills it and fails). */
static int wait_bounded(pid_t pid)
{
    double t0 = now_s();
    int st;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        cr_assert(w >= 0);
        if (w == pid)
            return st;
        if (now_s() - t0 > RUN_LIMIT_S) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_fatal("loomctl still running after %d s", RUN_LIMIT_S);
        }
        sleep_ms(10);
    }
}

/* Runs loomctl ARGS (NULL-terminated, without argv[0]) in tmpdir with STDIN
 * (NULL: /dev/null) as its input; stdout and stderr are captured. */
static run_result run_with(const char *stdin_text, const char *const *args)
{
    const char *exe = loomctl_path();
    char *argv[64];
    size_t n = 0;
    argv[n++] = (char *)exe;
    for (size_t i = 0; args[i]; i++) {
        cr_assert(n < 63);
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    char outp[PATH_MAX + 16], errp[PATH_MAX + 16], inp[PATH_MAX + 16];
    snprintf(outp, sizeof outp, "%s/.stdout", tmpdir);
    snprintf(errp, sizeof errp, "%s/.stderr", tmpdir);
    snprintf(inp, sizeof inp, "%s/.stdin", tmpdir);
    FILE *in = fopen(inp, "w");
    cr_assert(in && fputs(stdin_text ? stdin_text : "", in) >= 0 && fclose(in) == 0);
    fflush(NULL);
    double t0 = now_s();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int i = open(inp, O_RDONLY);
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (i < 0 || o < 0 || e < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 ||
            chdir(tmpdir) < 0)
            _exit(127);
        execv(exe, argv);
        _exit(127);
    }
    int st = wait_bounded(pid);
    run_result r = { WIFEXITED(st) ? WEXITSTATUS(st) : -1, NULL, NULL, 0, now_s() - t0 };
    r.out = slurp(outp, &r.out_len);
    r.err = slurp(errp, NULL);
    return r;
}

#define RUN(...) run_with(NULL, (const char *const[]){ __VA_ARGS__, NULL })
#define RUN_STDIN(text, ...) run_with(text, (const char *const[]){ __VA_ARGS__, NULL })

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

static bool has(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---- canned replies ---- */

#define ID "01JDQ5Y6Z7XK3V8J0F4M2N9C1B"

#define JOB_OK                                                                                 \
    "{\"id\":\"" ID "\",\"workflow\":\"summarize\",\"version\":\"3f2a9c01d4e5b6a7\","           \
    "\"state\":\"succeeded\",\"input\":{\"text\":\"hi\"},\"output\":{\"summary\":\"short\"},"  \
    "\"error\":null,\"usage\":{\"default\":{\"calls\":6,\"input_tokens\":812,"                 \
    "\"output_tokens\":240}},\"priority\":0,\"idempotency_key\":null,"                         \
    "\"created_ms\":1795000000000,\"started_ms\":1795000000004,\"finished_ms\":1795000000132}"

#define JOB_FAILED                                                                             \
    "{\"id\":\"" ID "\",\"workflow\":\"summarize\",\"version\":\"3f2a9c01d4e5b6a7\","           \
    "\"state\":\"failed\",\"output\":null,\"error\":{\"code\":\"timeout\","                    \
    "\"message\":\"no answer in 30 s\",\"node\":\"do.chain[1]\",\"attempts\":3},"              \
    "\"usage\":{},\"created_ms\":1795000000000,\"started_ms\":1795000000004,"                  \
    "\"finished_ms\":1795000090000}"

#define JOB_RUNNING                                                                            \
    "{\"id\":\"" ID "\",\"workflow\":\"summarize\",\"version\":\"3f2a9c01d4e5b6a7\","           \
    "\"state\":\"running\",\"output\":null,\"error\":null,\"usage\":{},"                       \
    "\"created_ms\":1795000000000,\"started_ms\":1795000000004,\"finished_ms\":null}"

#define NOT_FOUND                                                                              \
    "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no job " ID "\"}}"

/* ---- submit ---- */

Test(client, submit_prints_the_id_alone)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"queued\",\"existed\":false}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "summarize");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ID "\n"));
    cr_expect(eq(str, r.err, ""));
    json_t *req = fake_request(0);
    cr_assert(req != NULL);
    cr_expect(eq(str, req_str(0, "op"), "submit"));
    cr_expect(eq(str, req_str(0, "workflow"), "summarize"));
    cr_expect(0 != json_is_object(json_object_get(req, "input")));
    cr_expect(eq(sz, json_object_size(json_object_get(req, "input")), 0));
    cr_expect(json_object_get(req, "wait") == NULL);
    cr_expect(0 != json_is_integer(json_object_get(req, "id")));
    run_free(&r);
}

#define WORKFLOWS_SERVED                                                                       \
    "{\"ok\":true,\"workflows\":["                                                          \
    "{\"name\":\"summarize\",\"file\":\"workflows/summarize.yaml\",\"version\":\"3f2a9c01d4e5b6a7\"," \
    "\"load\":1,\"loaded_ms\":1795000000000,\"served\":true,\"error\":null},"                    \
    "{\"name\":\"summary\",\"file\":\"workflows/summary.yaml\",\"version\":null,"              \
    "\"load\":0,\"loaded_ms\":0,\"served\":false,\"error\":\"x\"}]}"

#define UNKNOWN_WORKFLOW(name)                                                                 \
    "{\"ok\":false,\"error\":{\"code\":\"unknown_workflow\",\"message\":\"no workflow '" name \
    "' is loaded\"}}"

/* A daemon that names no near miss itself: loomctl asks for the served
 * workflows and suggests the nearest. */
Test(client, submit_unknown_workflow_suggests_the_nearest)
{
    static const fake_case cases[] = {
        REPLY("submit", UNKNOWN_WORKFLOW("sumarize")),
        REPLY("workflows", WORKFLOWS_SERVED),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "sumarize");
    cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ""));
    cr_expect(eq(str, r.err, "loomctl: unknown_workflow: no workflow 'sumarize' is loaded\n"
                             "loomctl: did you mean 'summarize'?\n"));
    cr_expect(eq(str, req_str(1, "op"), "workflows"));
    run_free(&r);
}

/* Only served workflows are suggested, and nothing when none is near. */
Test(client, submit_unknown_workflow_without_a_near_one)
{
    static const fake_case cases[] = {
        REPLY("submit", UNKNOWN_WORKFLOW("summry")),
        REPLY("workflows", WORKFLOWS_SERVED),
        END };
    fake_start(cases);
    /* 'summary' is one edit away but not served */
    run_result r = RUN("submit", "summry");
    cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
    cr_expect(eq(str, r.err, "loomctl: unknown_workflow: no workflow 'summry' is loaded\n"));
    cr_expect(eq(sz, fake_nrequests(), 2));
    run_free(&r);
}

/* A daemon whose message has the suggestion already is not asked again. */
Test(client, submit_unknown_workflow_suggested_by_the_daemon)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":false,\"error\":{\"code\":\"unknown_workflow\",\"message\":"
                        "\"no workflow 'sumarize' is loaded; did you mean 'summarize'?\"}}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "sumarize");
    cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
    cr_expect(eq(str, r.err, "loomctl: unknown_workflow: no workflow 'sumarize' is loaded; "
                             "did you mean 'summarize'?\n"));
    cr_expect(fake_request(1) == NULL);
    run_free(&r);
}

Test(client, submit_sends_input_key_and_priority)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"running\",\"existed\":true}"),
        END };
    fake_start(cases);
    run_result r = RUN_STDIN("{\"text\": \"hello\"}", "submit", "--input", "-", "--key", "order-1",
                             "--priority", "-3", "summarize");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ID "\n"));
    cr_expect(has(r.err, "submitted before"), "stderr: %s", r.err);
    json_t *req = fake_request(0);
    cr_assert(req != NULL);
    json_t *text = json_object_get(json_object_get(req, "input"), "text");
    cr_expect(eq(str, (char *)json_string_value(text), "hello"));
    cr_expect(eq(str, req_str(0, "idempotency_key"), "order-1"));
    cr_expect(eq(i64, json_integer_value(json_object_get(req, "priority")), -3));
    run_free(&r);
}

Test(client, submit_bad_input_is_a_usage_error)
{
    run_result r = RUN_STDIN("{not json", "submit", "--input", "-", "summarize");
    cr_expect(eq(int, r.status, 2), "stderr: %s", r.err);
    cr_expect(has(r.err, "invalid JSON input"), "stderr: %s", r.err);
    run_result u = RUN("submit");
    cr_expect(eq(int, u.status, 2));
    cr_expect(has(u.err, "no workflow given"), "stderr: %s", u.err);
    run_result p = RUN("submit", "--priority", "high", "x");
    cr_expect(eq(int, p.status, 2));
    run_free(&r);
    run_free(&u);
    run_free(&p);
}

Test(client, submit_wait_success_prints_output)
{
    static const fake_case cases[] = {
        DELAYED("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"succeeded\","
                          "\"existed\":false,\"result\":" JOB_OK "}", 200),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "summarize", "--wait");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, "{\n  \"summary\": \"short\"\n}\n"));
    cr_expect(0 != json_is_true(json_object_get(fake_request(0), "wait")));
    run_free(&r);
}

Test(client, submit_wait_seconds_is_sent)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"succeeded\",\"existed\":false,"
                    "\"result\":" JOB_OK "}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "--wait", "10", "summarize");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(i64, json_integer_value(json_object_get(fake_request(0), "wait")), 10));
    run_result r2 = RUN("submit", "--wait=2.5", "summarize");
    cr_expect(eq(int, r2.status, 0), "stderr: %s", r2.err);
    cr_expect(json_real_value(json_object_get(fake_request(1), "wait")) == 2.5);
    run_free(&r);
    run_free(&r2);
}

Test(client, submit_wait_failure_exits_1_with_typed_error)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"failed\",\"existed\":false,"
                    "\"result\":" JOB_FAILED "}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "--wait", "summarize");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.out, ""));
    cr_expect(eq(str, r.err, "loomctl: job " ID " failed: timeout at do.chain[1] after 3 attempts: "
                             "no answer in 30 s\n"));
    run_free(&r);
}

Test(client, submit_wait_timed_out_exits_5)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"running\",\"existed\":false,"
                    "\"timed_out\":true}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "--wait", "1", "summarize");
    cr_expect(eq(int, r.status, 5), "stderr: %s", r.err);
    cr_expect(has(r.err, "timed out"), "stderr: %s", r.err);
    run_free(&r);
}

Test(client, submit_json_prints_the_reply)
{
    static const fake_case cases[] = {
        REPLY("submit", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"queued\",\"existed\":false}"),
        END };
    fake_start(cases);
    run_result r = RUN("submit", "--json", "summarize");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    json_t *got = json_loads(r.out, 0, NULL);
    json_t *want = json_pack("{sOsbsssssb}", "id", json_object_get(fake_request(0), "id"), "ok", 1,
                             "job", ID, "state", "queued", "existed", 0);
    cr_expect(json_equal(got, want), "stdout: %s", r.out);
    cr_expect(strchr(r.out, '\n') == r.out + strlen(r.out) - 1, "one line: %s", r.out);
    json_decref(got);
    json_decref(want);
    run_free(&r);
}

/* ---- get, cancel ---- */

Test(client, get_prints_summary_and_output)
{
    static const fake_case cases[] = { REPLY("get", "{\"ok\":true,\"job\":" JOB_OK "}"), END };
    fake_start(cases);
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "job:       " ID "\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "state:     succeeded\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "workflow:  summarize\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "version:   3f2a9c01d4e5b6a7\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "(queued 4 ms)"), "stdout: %s", r.out);
    cr_expect(has(r.out, "(ran 128 ms)"), "stdout: %s", r.out);
    cr_expect(has(r.out, "usage:     default: 6 calls, 812 input + 240 output tokens\n"),
              "stdout: %s", r.out);
    cr_expect(has(r.out, "output:\n{\n  \"summary\": \"short\"\n}\n"), "stdout: %s", r.out);
    cr_expect(eq(str, req_str(0, "job"), ID));
    run_free(&r);
}

Test(client, get_failed_job_shows_its_error)
{
    static const fake_case cases[] = { REPLY("get", "{\"ok\":true,\"job\":" JOB_FAILED "}"), END };
    fake_start(cases);
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "error:     timeout at do.chain[1] after 3 attempts: no answer in 30 s\n"),
              "stdout: %s", r.out);
    run_free(&r);
}

Test(client, get_json_is_the_reply)
{
    static const fake_case cases[] = { REPLY("get", "{\"ok\":true,\"job\":" JOB_OK "}"), END };
    fake_start(cases);
    run_result r = RUN("get", "--json", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    json_t *got = json_loads(r.out, 0, NULL);
    json_t *want = json_loads("{\"ok\":true,\"job\":" JOB_OK "}", 0, NULL);
    json_object_set(want, "id", json_object_get(fake_request(0), "id"));
    cr_expect(json_equal(got, want), "stdout: %s", r.out);
    json_decref(got);
    json_decref(want);
    run_free(&r);
}

Test(client, error_reply_exits_4_with_code)
{
    static const fake_case cases[] = { REPLY("get", NOT_FOUND), END };
    fake_start(cases);
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 4));
    cr_expect(eq(str, r.out, ""));
    cr_expect(eq(str, r.err, "loomctl: not_found: no job " ID "\n"));
    run_result j = RUN("get", "--json", ID);
    cr_expect(eq(int, j.status, 4));
    cr_expect(has(j.out, "\"not_found\""), "stdout: %s", j.out);
    run_free(&r);
    run_free(&j);
}

Test(client, error_without_id_is_ours)
{
    /* as loomd sends it: no id, then it hangs up */
    static const fake_case cases[] = {
        HANG_UP("stats", "raw:{\"ok\":false,\"error\":{\"code\":\"too_many_connections\","
                        "\"message\":\"4096 connections are open\"}}", 0),
        END };
    fake_start(cases);
    run_result r = RUN("stats");
    cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
    cr_expect(has(r.err, "loomctl: too_many_connections: "), "stderr: %s", r.err);
    run_free(&r);
}

Test(client, turned_away_on_accept_exits_4)
{
    /* as loomd does at its connection limit: one error line, then it hangs up */
    static const fake_case cases[] = {
        HANG_UP("(accept)", "{\"ok\":false,\"error\":{\"code\":\"too_many_connections\","
                            "\"message\":\"4096 connections are open\"}}", 0),
        END };
    fake_start(cases);
    for (int i = 0; i < 5; i++) { /* the hang-up races the request: either way, the same answer */
        run_result r = RUN("get", ID);
        cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
        cr_expect(eq(str, r.err, "loomctl: too_many_connections: 4096 connections are open\n"));
        run_free(&r);
    }
}

Test(client, replies_are_matched_by_id)
{
    /* a stray reply with another id comes first: it must be skipped */
    static const fake_case cases[] = {
        REPLY("get", "{\"id\":999,\"ok\":true,\"job\":" JOB_FAILED "}\n"
                     "{\"ok\":true,\"job\":" JOB_OK "}"),
        END };
    fake_start(cases);
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "state:     succeeded\n"), "stdout: %s", r.out);
    run_free(&r);
}

Test(client, cancel_prints_the_state)
{
    static const fake_case cases[] = {
        REPLY("cancel", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"cancelled\"}"), END };
    fake_start(cases);
    run_result r = RUN("cancel", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ID " cancelled\n"));
    cr_expect(eq(str, req_str(0, "op"), "cancel"));
    run_free(&r);
}

Test(client, cancel_of_an_ended_job_says_so)
{
    static const fake_case cases[] = {
        REPLY("cancel", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"succeeded\"}"), END };
    fake_start(cases);
    run_result r = RUN("cancel", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ID " succeeded (it had already ended)\n"));
    run_free(&r);
}

/* ---- wait ---- */

Test(client, wait_late_reply)
{
    static const fake_case cases[] = {
        DELAYED("wait", "{\"ok\":true,\"timed_out\":false,\"job\":" JOB_OK "}", 700), END };
    fake_start(cases);
    run_result r = RUN("wait", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(r.seconds >= 0.6, "took %.3f s", r.seconds);
    cr_expect(has(r.out, "state:     succeeded\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "\"summary\": \"short\""), "stdout: %s", r.out);
    cr_expect(json_object_get(fake_request(0), "timeout") == NULL);
    run_free(&r);
}

Test(client, wait_failed_job_exits_1)
{
    static const fake_case cases[] = {
        REPLY("wait", "{\"ok\":true,\"timed_out\":false,\"job\":" JOB_FAILED "}"), END };
    fake_start(cases);
    run_result r = RUN("wait", "--timeout", "30", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    cr_expect(has(r.out, "state:     failed\n"), "stdout: %s", r.out);
    cr_expect(eq(i64, json_integer_value(json_object_get(fake_request(0), "timeout")), 30));
    run_free(&r);
}

Test(client, wait_timed_out_exits_5)
{
    static const fake_case cases[] = {
        REPLY("wait", "{\"ok\":true,\"timed_out\":true,\"job\":" JOB_RUNNING "}"), END };
    fake_start(cases);
    run_result r = RUN("wait", "--timeout", "1", ID);
    cr_expect(eq(int, r.status, 5), "stderr: %s", r.err);
    cr_expect(has(r.err, "still running"), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ""));
    run_free(&r);
}

Test(client, connection_closed_mid_wait_exits_3)
{
    static const fake_case cases[] = { HANG_UP("wait", NULL, 300), END };
    fake_start(cases);
    run_result r = RUN("wait", ID);
    cr_expect(eq(int, r.status, 3), "stderr: %s", r.err);
    cr_expect(has(r.err, "closed the connection"), "stderr: %s", r.err);
    run_free(&r);
}

Test(client, silent_daemon_times_out)
{
    static const fake_case cases[] = { REPLY("get", NULL), END };
    fake_start(cases);
    run_result r = RUN("get", "--timeout", "0.5", ID);
    cr_expect(eq(int, r.status, 5), "stderr: %s", r.err);
    cr_expect(has(r.err, "no answer from loomd"), "stderr: %s", r.err);
    cr_expect(r.seconds < 5, "took %.3f s", r.seconds);
    run_free(&r);
}

Test(client, line_that_is_not_json_exits_3)
{
    static const fake_case cases[] = { REPLY("get", "this is not json"), END };
    fake_start(cases);
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 3), "stderr: %s", r.err);
    cr_expect(has(r.err, "not JSON"), "stderr: %s", r.err);
    run_free(&r);
}

/* ---- reaching the daemon ---- */

Test(client, no_daemon_exits_3)
{
    run_result r = RUN("get", ID);
    cr_expect(eq(int, r.status, 3));
    cr_expect(eq(str, r.err, "loomctl: cannot connect to ./loom.sock: No such file or directory "
                             "(is loomd running?)\n"));
    run_result s = RUN("stats", "--socket", "/nonexistent/x.sock");
    cr_expect(eq(int, s.status, 3));
    cr_expect(has(s.err, "cannot connect to /nonexistent/x.sock"), "stderr: %s", s.err);
    run_free(&r);
    run_free(&s);
}

Test(client, socket_from_environment_and_option)
{
    static const fake_case cases[] = {
        REPLY("cancel", "{\"ok\":true,\"job\":\"" ID "\",\"state\":\"cancelled\"}"), END };
    fake_start_at("other.sock", cases);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/other.sock", tmpdir);
    run_result o = RUN("cancel", "--socket", path, ID);
    cr_expect(eq(int, o.status, 0), "stderr: %s", o.err);
    setenv("LOOM_SOCKET", path, 1);
    run_result e = RUN("cancel", ID);
    cr_expect(eq(int, e.status, 0), "stderr: %s", e.err);
    cr_expect(eq(sz, fake_nrequests(), 2));
    run_free(&o);
    run_free(&e);
}

Test(client, huge_reply)
{
    /* a 20 MiB output string: more than any fixed buffer would hold */
    size_t n = (size_t)20 << 20;
    char *lines = malloc(n + 256);
    cr_assert(lines != NULL);
    /* raw (the id of the first request on a connection is 1): no parsing in the fake */
    int head = sprintf(lines, "raw:{\"id\":1,\"ok\":true,\"job\":{\"id\":\"" ID "\","
                              "\"state\":\"succeeded\",\"workflow\":\"w\",\"output\":{\"text\":\"");
    memset(lines + head, 'x', n);
    strcpy(lines + head + n, "\"}}}");
    fake_case *cases = calloc(2, sizeof *cases);
    cases[0] = (fake_case)REPLY("get", lines);
    fake_start(cases);
    run_result r = RUN("get", "--json", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(r.out_len > n, "stdout is %zu bytes", r.out_len);
    json_t *got = json_loads(r.out, 0, NULL);
    json_t *output = json_object_get(json_object_get(got, "job"), "output");
    const char *text = json_string_value(json_object_get(output, "text"));
    cr_expect(text && strlen(text) == n);
    json_decref(got);
    run_free(&r);
    run_result h = RUN("get", ID);
    cr_expect(eq(int, h.status, 0), "stderr: %s", h.err);
    cr_expect(h.out_len > n);
    run_free(&h);
    atomic_store(&daemon_fake.stop, true); /* before the cases go */
    pthread_join(daemon_fake.thread, NULL);
    close(daemon_fake.listen_fd);
    json_decref(daemon_fake.requests);
    daemon_fake.running = false;
    free(cases);
    free(lines);
}

/* ---- list, workflows, stats ---- */

Test(client, list_table_and_next_cursor)
{
    static const fake_case cases[] = {
        REPLY("list", "{\"ok\":true,\"next\":\"01JC0000000000000000000000\",\"jobs\":["
                  "{\"id\":\"" ID "\",\"workflow\":\"summarize\",\"version\":\"3f2a\","
                  "\"state\":\"succeeded\",\"priority\":0,\"created_ms\":1795000000000,"
                  "\"started_ms\":1795000000004,\"finished_ms\":1795000000132},"
                  "{\"id\":\"01JD00000000000000000000QQ\",\"workflow\":\"review-analysis\","
                  "\"version\":\"3f2a\",\"state\":\"queued\",\"priority\":0,"
                  "\"created_ms\":1795000000000,\"started_ms\":null,\"finished_ms\":null}]}"),
        END };
    fake_start(cases);
    run_result r = RUN("list", "--state", "failed", "--workflow", "summarize", "--limit", "2",
                       "--oldest", "--after", "01JE");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    const char *header = "ID                          STATE      WORKFLOW         CREATED";
    cr_expect(strncmp(r.out, header, strlen(header)) == 0, "stdout: %s", r.out);
    cr_expect(has(r.out, ID "  succeeded  summarize        "), "stdout: %s", r.out);
    cr_expect(has(r.out, "  128 ms\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "01JD00000000000000000000QQ  queued     review-analysis  "),
              "stdout: %s", r.out);
    cr_expect(has(r.err, "--after 01JC0000000000000000000000"), "stderr: %s", r.err);
    json_t *req = fake_request(0);
    cr_expect(eq(str, req_str(0, "state"), "failed"));
    cr_expect(eq(str, req_str(0, "workflow"), "summarize"));
    cr_expect(eq(i64, json_integer_value(json_object_get(req, "limit")), 2));
    cr_expect(eq(str, req_str(0, "order"), "oldest"));
    cr_expect(eq(str, req_str(0, "after"), "01JE"));
    run_free(&r);
}

Test(client, list_usage_errors)
{
    run_result s = RUN("list", "--state", "sleeping");
    cr_expect(eq(int, s.status, 2));
    run_result l = RUN("list", "--limit", "0");
    cr_expect(eq(int, l.status, 2));
    run_result x = RUN("list", "extra");
    cr_expect(eq(int, x.status, 2));
    run_free(&s);
    run_free(&l);
    run_free(&x);
}

Test(client, workflows_with_an_error)
{
    static const fake_case cases[] = {
        REPLY("workflows", "{\"ok\":true,\"workflows\":["
                       "{\"name\":\"summarize\",\"file\":\"workflows/summarize.yaml\","
                       "\"version\":\"3f2a9c01d4e5b6a7\",\"load\":2,\"loaded_ms\":1795000000000,"
                       "\"served\":true,\"error\":null},"
                       "{\"name\":\"broken\",\"file\":\"workflows/broken.yaml\","
                       "\"version\":\"0123456789abcdef\",\"load\":1,\"served\":true,"
                       "\"error\":\"workflows/broken.yaml:4:3: error: unknown key 'calll'\\n"
                       "workflows/broken.yaml:9:1: error: unknown workflow 'nope'\"}]}"),
        END };
    fake_start(cases);
    run_result r = RUN("workflows");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out,
                 "NAME       LOAD  VERSION           FILE\n"
                 "summarize     2  3f2a9c01d4e5b6a7  workflows/summarize.yaml\n"
                 "broken        1  0123456789abcdef  workflows/broken.yaml\n"
                 "    workflows/broken.yaml:4:3: error: unknown key 'calll'\n"
                 "    workflows/broken.yaml:9:1: error: unknown workflow 'nope'\n"));
    run_free(&r);
}

Test(client, stats_table)
{
    static const fake_case cases[] = {
        REPLY("stats", "{\"ok\":true,\"uptime_s\":3600,\"jobs\":{\"queued\":3,\"running\":12,"
                   "\"succeeded\":1042,\"failed\":7,\"cancelled\":1},\"providers\":{\"default\":"
                   "{\"in_flight\":40,\"queued\":2,\"requests\":5120,\"succeeded\":5100,"
                   "\"failed\":20,\"rate_limited\":3,\"timeouts\":4,\"input_tokens\":812000,"
                   "\"output_tokens\":240000,\"latency_ms\":48.2,\"concurrency\":64,"
                   "\"paused_ms\":0,\"disabled\":false,\"plugin\":\"openai\"},"
                   "\"offline\":{\"plugin\":\"mock\"}},\"connections\":5,\"workflows\":14}"),
        END };
    fake_start(cases);
    run_result r = RUN("stats");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "uptime:       1h 00m\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "jobs:         3 queued, 12 running, 1042 succeeded, 7 failed, "
                         "1 cancelled\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "PROVIDER  PLUGIN  IN FLIGHT  QUEUED  REQUESTS  ERRORS  429S  TIMEOUTS  "
                         "INPUT TOKENS"), "stdout: %s", r.out);
    cr_expect(has(r.out, "default   openai      40/64       2      5120      20     3         4  "
                         "      812000"), "stdout: %s", r.out);
    cr_expect(has(r.out, "48.2 ms  ok\n"), "stdout: %s", r.out);
    /* a provider without counters (an older loomd's offline mock) */
    cr_expect(has(r.out, "offline   mock            -       -         -       -     -         -  "
                         "           -"), "stdout: %s", r.out);
    run_free(&r);
}

/* ---- watch ---- */

#define EVENTS                                                                                 \
    "{\"ok\":true,\"subscribed\":true}\n"                                                      \
    "{\"event\":\"step_started\",\"job\":\"" ID "\",\"node\":\"do.map\",\"kind\":\"map\","      \
    "\"time_ms\":1795000000010}\n"                                                             \
    "{\"event\":\"step_started\",\"job\":\"" ID "\",\"node\":\"do.map[0].call\","              \
    "\"kind\":\"call\",\"time_ms\":1795000000011}\n"                                           \
    "{\"event\":\"map_progress\",\"job\":\"" ID "\",\"node\":\"do.map\",\"done\":40,"           \
    "\"total\":100,\"time_ms\":1795000000120}\n"                                               \
    "{\"event\":\"step_finished\",\"job\":\"" ID "\",\"node\":\"do.map[0].call\","             \
    "\"kind\":\"call\",\"attempt\":2,\"cached\":false,\"time_ms\":1795000000130}\n"

#define EVENTS_OK EVENTS                                                                       \
    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"succeeded\","                  \
    "\"time_ms\":1795000001004}\n"

static const fake_case watch_ok_cases[] = {
    REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
    DELAYED("events", EVENTS_OK, 50),
    END };

Test(client, watch_prints_a_line_per_event)
{
    fake_start(watch_ok_cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "    0.006s  step_started   do.map (map)\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "    0.116s  map_progress   do.map 40/100\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "step_finished  do.map[0].call (call) attempt 2\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "    1.000s  job_finished   succeeded\n"), "stdout: %s", r.out);
    cr_expect(eq(str, req_str(1, "op"), "events"));
    cr_expect(eq(str, req_str(1, "job"), ID));
    run_free(&r);
}

Test(client, watch_json_prints_the_events)
{
    fake_start(watch_ok_cases);
    run_result r = RUN("watch", "--json", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    size_t lines = 0;
    for (char *p = r.out; (p = strchr(p, '\n')); p++)
        lines++;
    cr_expect(eq(sz, lines, 5), "stdout: %s", r.out);
    cr_expect(has(r.out, "{\"event\":\"job_finished\""), "stdout: %s", r.out);
    run_free(&r);
}

/* A call that went to a provider's batch, and the batch's progress: from
 * collecting to submitted to its end. */
#define BATCH_EVENTS                                                                           \
    "{\"ok\":true,\"subscribed\":true}\n"                                                      \
    "{\"event\":\"step_started\",\"job\":\"" ID "\",\"node\":\"do.map.do\","               \
    "\"kind\":\"call\",\"attempt\":1,\"provider\":\"fast\",\"time_ms\":1795000000010}\n"      \
    "{\"event\":\"step_batched\",\"job\":\"" ID "\",\"node\":\"do.map.do\","               \
    "\"kind\":\"call\",\"key\":\"k1\",\"attempt\":1,\"provider\":\"fast\","                 \
    "\"time_ms\":1795000000012}\n"                                                            \
    "{\"event\":\"batch_progress\",\"job\":\"" ID "\",\"batch\":\"loom-b1\",\"remote\":\"\","  \
    "\"provider\":\"fast\",\"state\":\"collecting\",\"done\":0,\"total\":1,"                  \
    "\"time_ms\":1795000000020}\n"                                                            \
    "{\"event\":\"batch_progress\",\"job\":\"" ID "\",\"batch\":\"loom-b1\","               \
    "\"remote\":\"batch_abc\",\"provider\":\"fast\",\"state\":\"running\",\"done\":4000,"     \
    "\"total\":10000,\"time_ms\":1795000000500}\n"                                           \
    "{\"event\":\"batch_progress\",\"job\":\"" ID "\",\"batch\":\"loom-b1\","               \
    "\"remote\":\"batch_abc\",\"provider\":\"fast\",\"state\":\"expired\",\"done\":null,"    \
    "\"total\":10000,\"time_ms\":1795000000600}\n"                                           \
    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"succeeded\","                 \
    "\"time_ms\":1795000001004}\n"

static const fake_case watch_batch_cases[] = {
    REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
    DELAYED("events", BATCH_EVENTS, 50),
    END };

Test(client, watch_shows_batches)
{
    fake_start(watch_batch_cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, "step_batched   do.map.do (call) to a batch of fast\n"), "stdout: %s",
              r.out);
    cr_expect(has(r.out, "batch_progress batch loom-b1: collecting, 0 of 1 lines done at fast\n"),
              "stdout: %s", r.out);
    cr_expect(has(r.out, "batch_progress batch loom-b1 (batch_abc): submitted to batch "
                         "batch_abc, 4000 of 10000 lines done at fast\n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "batch_progress batch loom-b1 (batch_abc): submitted to batch "
                         "batch_abc, 10000 lines (expired) at fast\n"), "stdout: %s", r.out);
    run_free(&r);
}

#define TOKEN(attempt, text)                                                                   \
    "{\"event\":\"token\",\"job\":\"" ID "\",\"node\":\"do\",\"key\":\"k1\",\"attempt\":" #attempt  \
    ",\"text\":\"" text "\",\"time_ms\":1795000000020}\n"

static const fake_case watch_tokens_cases[] = {
    REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
    DELAYED("events",
            "{\"ok\":true,\"subscribed\":true}\n"
            "{\"event\":\"step_started\",\"job\":\"" ID "\",\"node\":\"do\",\"kind\":\"call\","
            "\"time_ms\":1795000000010}\n"
            TOKEN(1, "Hel") TOKEN(1, "lo, ")
            "{\"event\":\"step_retry\",\"job\":\"" ID "\",\"node\":\"do\",\"kind\":\"call\","
            "\"attempt\":2,\"time_ms\":1795000000030}\n"
            TOKEN(2, "Hello, ") TOKEN(2, "world")
            "{\"event\":\"step_finished\",\"job\":\"" ID "\",\"node\":\"do\",\"kind\":\"call\","
            "\"attempt\":2,\"time_ms\":1795000000130}\n"
            "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"succeeded\","
            "\"time_ms\":1795000001004}\n",
            50),
    END };

Test(client, watch_tokens_prints_the_text_as_it_streams)
{
    fake_start(watch_tokens_cases);
    run_result r = RUN("watch", "--tokens", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(0 != json_is_true(json_object_get(fake_request(1), "tokens")),
              "the subscription asks for tokens");
    cr_expect(has(r.out, "--- do ---\nHello, \n"), "stdout: %s", r.out);
    cr_expect(has(r.out, "step_retry     do (call) attempt 2\n"
                         "(the text of do's earlier attempt above is discarded)\n"
                         "--- do (attempt 2) ---\nHello, world\n"),
              "stdout: %s", r.out);
    cr_expect(has(r.out, "job_finished   succeeded\n"), "stdout: %s", r.out);
    run_free(&r);
}

Test(client, watch_without_tokens_asks_for_none)
{
    fake_start(watch_ok_cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(ptr, json_object_get(fake_request(1), "tokens"), NULL));
    run_free(&r);
}

Test(client, watch_of_a_job_that_ends_while_subscribing)
{
    /* running at the first look, ended at the second: no job_finished comes */
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("get", "{\"ok\":true,\"job\":" JOB_OK "}"),
        REPLY("events", "{\"ok\":true,\"subscribed\":true}"),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(has(r.out, ID " succeeded after 0.1s"), "stdout: %s", r.out);
    cr_expect(r.seconds < 5, "took %.3f s", r.seconds);
    cr_expect(eq(sz, fake_nrequests(), 3));
    run_free(&r);
}

Test(client, watch_failed_job_exits_1)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("events", EVENTS
                    "{\"event\":\"step_failed\",\"job\":\"" ID "\",\"node\":\"do.x\","
                    "\"code\":\"timeout\",\"attempt\":3,\"time_ms\":1795000000200}\n"
                    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"failed\","
                    "\"time_ms\":1795000000300}"),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    cr_expect(has(r.out, "step_failed    do.x code timeout attempt 3\n"), "stdout: %s", r.out);
    cr_expect(has(r.err, "last failed step: timeout at do.x"), "stderr: %s", r.err);
    run_free(&r);
}

/* job_finished carries the job's error: it is what the last line says */
Test(client, watch_failed_job_ends_with_its_error)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("events", EVENTS
                    "{\"event\":\"step_failed\",\"job\":\"" ID "\",\"node\":\"do.x\","
                    "\"code\":\"upstream\",\"attempt\":1,\"time_ms\":1795000000200}\n"
                    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"failed\","
                    "\"error\":{\"code\":\"timeout\",\"message\":\"timed out after 100 ms\","
                    "\"node\":\"do.y\",\"attempts\":3},\"time_ms\":1795000000300}"),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    /* the job's error, not the last step that failed on the way (do.x was retried) */
    cr_expect(has(r.err, "loomctl: job " ID " failed: timeout at do.y after 3 attempts: "
                         "timed out after 100 ms\n"), "stderr: %s", r.err);
    cr_expect(strstr(r.err, "do.x") == NULL, "stderr: %s", r.err);
    cr_expect(eq(sz, fake_nrequests(), 3)); /* nothing asked after the end */
    run_free(&r);
}

/* a daemon whose job_finished has no error: the error is asked for */
Test(client, watch_failed_job_asks_for_its_error)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("events", EVENTS
                    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"failed\","
                    "\"time_ms\":1795000000300}"),
        REPLY("get", "{\"ok\":true,\"job\":" JOB_FAILED "}"),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    cr_expect(has(r.err, "loomctl: job " ID " failed: timeout at do.chain[1] after 3 attempts: "
                         "no answer in 30 s\n"), "stderr: %s", r.err);
    cr_expect(eq(sz, fake_nrequests(), 4));
    cr_expect(eq(str, req_str(3, "op"), "get"));
    run_free(&r);
}

Test(client, watch_cancelled_job_exits_1)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("events", EVENTS
                    "{\"event\":\"job_finished\",\"job\":\"" ID "\",\"state\":\"cancelled\","
                    "\"error\":{\"code\":\"cancelled\",\"message\":\"cancelled\"},"
                    "\"time_ms\":1795000000300}"),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    cr_expect(has(r.err, "loomctl: job " ID " was cancelled\n"), "stderr: %s", r.err);
    run_free(&r);
}

Test(client, watch_of_an_ended_job_returns_at_once)
{
    static const fake_case cases[] = { REPLY("get", "{\"ok\":true,\"job\":" JOB_FAILED "}"), END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 1), "stderr: %s", r.err);
    cr_expect(has(r.out, ID " failed after 90.0s"), "stdout: %s", r.out);
    cr_expect(has(r.err, "timeout at do.chain[1]"), "stderr: %s", r.err);
    cr_expect(eq(sz, fake_nrequests(), 1)); /* no subscription */
    run_free(&r);
}

Test(client, watch_connection_closed_exits_3)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        HANG_UP("events", EVENTS, 0),
        END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 3), "stderr: %s", r.err);
    cr_expect(has(r.err, "closed the connection"), "stderr: %s", r.err);
    run_free(&r);
}

Test(client, watch_timeout_exits_5)
{
    static const fake_case cases[] = {
        REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
        REPLY("events", EVENTS),
        END };
    fake_start(cases);
    run_result r = RUN("watch", "--timeout", "1", ID);
    cr_expect(eq(int, r.status, 5), "stderr: %s", r.err);
    cr_expect(r.seconds < 5, "took %.3f s", r.seconds);
    run_free(&r);
}

Test(client, watch_unknown_job_exits_4)
{
    static const fake_case cases[] = { REPLY("get", NOT_FOUND), END };
    fake_start(cases);
    run_result r = RUN("watch", ID);
    cr_expect(eq(int, r.status, 4), "stderr: %s", r.err);
    cr_expect(has(r.err, "loomctl: not_found: "), "stderr: %s", r.err);
    run_free(&r);
}

/* A map's items share one node path: calls in flight are counted per path.
 * 150 ms between lines, so that each state is drawn (at most every 100 ms). */
#define EV(rest) "{\"job\":\"" ID "\"," rest "}\n"
static const fake_case watch_tty_cases[] = {
    REPLY("get", "{\"ok\":true,\"job\":" JOB_RUNNING "}"),
    DELAYED("events",
            "{\"ok\":true,\"subscribed\":true}\n"
            EV("\"event\":\"step_started\",\"node\":\"do\",\"kind\":\"map\"")
            EV("\"event\":\"step_started\",\"node\":\"do.map.do\",\"kind\":\"call\"")
            EV("\"event\":\"step_started\",\"node\":\"do.map.do\",\"kind\":\"call\"")
            EV("\"event\":\"map_progress\",\"node\":\"do\",\"done\":0,\"total\":2")
            EV("\"event\":\"step_finished\",\"node\":\"do.map.do\",\"kind\":\"call\"")
            EV("\"event\":\"map_progress\",\"node\":\"do\",\"done\":1,\"total\":2")
            EV("\"event\":\"job_finished\",\"state\":\"succeeded\""),
            150),
    END };

/* On a terminal: one line redrawn with \r, ending with the final state. */
Test(client, watch_on_a_terminal_redraws_one_line)
{
    fake_start(watch_tty_cases);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
    const char *slave_name = ptsname(master);
    cr_assert(slave_name != NULL);
    const char *exe = loomctl_path();
    char errp[PATH_MAX + 16];
    snprintf(errp, sizeof errp, "%s/.stderr", tmpdir);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int s = open(slave_name, O_RDWR | O_NOCTTY);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (s < 0 || e < 0 || dup2(s, 1) < 0 || dup2(e, 2) < 0 || chdir(tmpdir) < 0)
            _exit(127);
        execl(exe, exe, "watch", ID, (char *)NULL);
        _exit(127);
    }
    /* drain the terminal while it runs, or a full pty would block it */
    char out[65536];
    size_t len = 0;
    int st = 0;
    double t0 = now_s();
    for (;;) {
        struct pollfd p = { .fd = master, .events = POLLIN };
        if (poll(&p, 1, 20) > 0) {
            ssize_t n = read(master, out + len, sizeof out - 1 - len);
            if (n > 0)
                len += (size_t)n;
        }
        if (waitpid(pid, &st, WNOHANG) == pid)
            break;
        cr_assert(now_s() - t0 < RUN_LIMIT_S, "watch still running");
    }
    for (;;) { /* what is left after it exited */
        struct pollfd p = { .fd = master, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            break;
        ssize_t n = read(master, out + len, sizeof out - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(master);
    out[len] = 0;
    char *err = slurp(errp, NULL);
    cr_expect(0 != (WIFEXITED(st) && WEXITSTATUS(st) == 0), "stderr: %s", err);
    cr_expect(has(out, "\r\033[K"), "terminal: %s", out);
    cr_expect(has(out, "map 0/2  2 calls in flight"), "terminal: %s", out);
    cr_expect(has(out, "\r\033[Ksucceeded "), "terminal: %s", out);
    cr_expect(has(out, "1 step done  map 1/2  1 call in flight\r\n"), "terminal: %s", out);
    cr_expect(false == has(out, "step_started"), "terminal: %s", out);
    free(err);
}

/* ---- usage ---- */

Test(client, help_lists_the_exit_statuses)
{
    static const char *const cmds[] = { "submit", "get", "wait", "cancel", "list", "workflows",
                                        "stats", "watch", NULL };
    for (size_t i = 0; cmds[i]; i++) {
        run_result r = RUN("help", cmds[i]);
        cr_expect(eq(int, r.status, 0));
        cr_expect(has(r.out, "Exit status:"), "%s: %s", cmds[i], r.out);
        cr_expect(has(r.out, "3 loomd unreachable"), "%s: %s", cmds[i], r.out);
        run_free(&r);
    }
    run_result u = RUN("get");
    cr_expect(eq(int, u.status, 2));
    cr_expect(has(u.err, "no job id given"), "stderr: %s", u.err);
    run_free(&u);
}
