/* test_batch.c -- daemon/batch/ (the batch manager) with the real openai
 * and anthropic plugins against the fake provider's Batch APIs: lines
 * collected across jobs over a window and split by the provider's limits,
 * every step, results stored before a job is told, a restart that resumes
 * polling without sending anything twice (counted at the fake), what a
 * crash between upload and create or between create and its record leaves,
 * 429 and 5xx on every step, per-line failures, expiry, and cancelling a
 * batch none of whose jobs wants it any more. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/batch/batch.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/openai/openai.h"
#include "tests/unit/fake_server.h"

static fake_server srv;
static reactor_t *r;
static http_client_t *hc;
static upstream_t *up;
static const loom_provider *def;
static void *pstate;
static store_t *st;
static char dir[256];

/* What the hooks saw. */
#define MAX_SEEN 64
static struct seen {
    int ready;                     /* ready() calls */
    char ready_job[MAX_SEEN][STORE_ID_SIZE];
    int progress;
    char last_state[32];
    char last_remote[128];
    int submitted;                 /* progress "submitted" */
    int early;                     /* lines of a readied job not DONE when it was told */
} seen;

/* The steps submitted (the first MAX_SEEN), for hook_ready's check. */
static struct step {
    char job[STORE_ID_SIZE], key[16];
} steps[MAX_SEEN];
static int nsteps;

static bool truth(bool b)
{
    return b;
}

static upstream_t *hook_upstream(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "fake") == 0 ? up : NULL;
}

static batch_mgr_t *mgr;

/* A job is told only once its lines' outcomes can be read. */
static void hook_ready(void *ud, const char *job)
{
    (void)ud;
    int done = 0, mine = 0;
    for (int i = 0; i < nsteps; i++) {
        if (strcmp(steps[i].job, job) != 0)
            continue;
        batch_line_info info;
        char err[256];
        memset(&info, 0, sizeof info);
        mine++;
        if (batch_mgr_lookup(mgr, job, steps[i].key, &info, err, sizeof err) < 0 ||
            (info.state == BATCH_LINE_DONE && !info.result && info.code == LOOM_OK))
            seen.early++; /* said done, yet its outcome cannot be read */
        done += info.state == BATCH_LINE_DONE;
        json_decref(info.result);
    }
    if (mine && !done)
        seen.early++; /* told with nothing to read */
    if (seen.ready < MAX_SEEN)
        snprintf(seen.ready_job[seen.ready], STORE_ID_SIZE, "%s", job);
    seen.ready++;
}

static void hook_progress(void *ud, const char *job, const char *batch, const char *remote,
                          const char *state, int64_t done, int64_t total)
{
    (void)ud, (void)job, (void)batch, (void)done, (void)total;
    seen.progress++;
    snprintf(seen.last_state, sizeof seen.last_state, "%s", state);
    snprintf(seen.last_remote, sizeof seen.last_remote, "%s", remote);
    if (!strcmp(state, "submitted"))
        seen.submitted++;
}

static const batch_mgr_hooks hooks = { .upstream = hook_upstream, .ready = hook_ready,
                                       .progress = hook_progress };

typedef struct tctx {
    loom_ctx base;
    char msg[256];
} tctx;

static void t_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    (void)code;
    vsnprintf(((tctx *)ctx)->msg, sizeof ((tctx *)ctx)->msg, fmt, ap);
}
static void t_vlog(loom_ctx *ctx, int l, const char *fmt, va_list ap)
{
    (void)ctx, (void)l, (void)fmt, (void)ap;
}
static const loom_host_api t_api = { .verror = t_verror, .vlog = t_vlog };

static void new_manager(void)
{
    char err[256] = "";
    mgr = batch_mgr_new(r, st, NULL, &hooks);
    cr_assert(mgr != NULL);
    cr_assert(eq(int, batch_mgr_start(mgr, err, sizeof err), 0), "%s", err);
}

/* PLUGIN at the fake started with ARGS; the provider's batch_api BA (NULL:
 * quick polls, a short window). */
static void setup_with(const char *plugin, const char *const *args, const upstream_batch_api *ba)
{
    char err[256] = "";
    memset(&seen, 0, sizeof seen);
    nsteps = 0;
    cr_assert(eq(int, fake_server_start(&srv, args), 0));
    r = reactor_new();
    cr_assert(r != NULL);
    hc = http_client_new(r, NULL);
    cr_assert(hc != NULL);
    const loom_plugin *p = strcmp(plugin, "openai") == 0 ? loom_builtin_openai_entry()
                                                         : loom_builtin_anthropic_entry();
    def = &p->providers[0];
    char url[64];
    setenv("LOOM_TEST_KEY", "sk-test-secret", 1);
    json_t *cfg = json_pack("{s:s, s:s, s:s}", "base_url", fake_server_base_url(&srv, url, sizeof url),
                            "api_key_env", "LOOM_TEST_KEY", "model", "m1");
    if (strcmp(plugin, "anthropic") == 0)
        json_object_set_new(cfg, "max_tokens", json_integer(64));
    tctx ctx = { .base.api = &t_api };
    cr_assert(eq(int, def->init(&ctx.base, NULL, cfg, &pstate), 0), "%s", ctx.msg);
    json_decref(cfg);
    upstream_options o = { .timeouts = { .connect_ms = 5000, .total_ms = 20000 } };
    o.batch_api = ba ? *ba : (upstream_batch_api){ .window_ms = 50, .poll_min_ms = 20,
                                                   .poll_max_ms = 100 };
    up = upstream_new(r, hc, "fake", def, pstate, NULL, &o);
    cr_assert(up != NULL);
    cr_assert(eq(int, upstream_has_batch_api(up), !(ba && ba->off)));
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/loom-batch-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    cr_assert(truth(mkdtemp(dir) != NULL));
    st = store_open(dir, r, NULL, err, sizeof err);
    cr_assert(st != NULL, "%s", err);
    new_manager();
}

static void setup(const char *plugin, const char *const *args)
{
    setup_with(plugin, args, NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    batch_mgr_free(mgr);
    mgr = NULL;
    store_close(st);
    upstream_free(up);
    if (def && def->fini)
        def->fini(pstate);
    http_client_free(hc);
    reactor_free(r);
    fake_server_stop(&srv);
    if (dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    dir[0] = '\0';
}

TestSuite(batch, .fini = teardown);

static json_t *msgs_of(const char *text)
{
    return json_pack("[{s:s, s:s}]", "role", "user", "content", text);
}

/* Submits the chat call TEXT as step KEY of JOB. */
static void submit(const char *job, const char *key, const char *text)
{
    json_t *msgs = msgs_of(text), *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m1", .messages = msgs,
                         .params = params };
    batch_line_spec s = { .job = job, .key = key, .node = "n", .attempt = 1,
                          .provider = "fake", .up = up, .req = &req };
    loom_errcode code = LOOM_OK;
    char err[256] = "";
    cr_assert(eq(int, batch_mgr_submit(mgr, &s, &code, err, sizeof err), 0), "%s", err);
    json_decref(msgs);
    json_decref(params);
    if (nsteps < MAX_SEEN) {
        snprintf(steps[nsteps].job, sizeof steps[nsteps].job, "%s", job);
        snprintf(steps[nsteps].key, sizeof steps[nsteps].key, "%s", key);
        nsteps++;
    }
}

static void job_id(char id[STORE_ID_SIZE])
{
    cr_assert(eq(int, store_new_job_id(st, id), 0));
}

/* Runs the reactor until *COUNTER reaches N, for at most MS. */
static void run_until(const int *counter, int n, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    while (*counter < n && reactor_now_us(r) < end)
        reactor_run_once(r, 10);
    cr_assert(truth(*counter >= n), "%d of %d after %d ms", *counter, n, ms);
    cr_assert(eq(int, seen.early, 0), "a job was told before its lines' outcomes were stored");
}

static int64_t mstat(const char *group, const char *name)
{
    json_t *s = batch_mgr_stats(mgr);
    json_t *v = group ? json_object_get(json_object_get(s, group), name) : json_object_get(s, name);
    int64_t n = json_integer_value(v);
    json_decref(s);
    return n;
}

/* Runs until the manager's stat reaches N. */
static void run_until_stat(const char *group, const char *name, int64_t n, int ms)
{
    uint64_t end = reactor_now_us(r) + (uint64_t)ms * 1000;
    while (mstat(group, name) < n && reactor_now_us(r) < end)
        reactor_run_once(r, 5);
    cr_assert(mstat(group, name) >= n, "%s.%s is %lld, not %lld", group ? group : "", name,
              (long long)mstat(group, name), (long long)n);
}

static batch_line_info look(const char *job, const char *key)
{
    batch_line_info info;
    char err[256] = "";
    memset(&info, 0, sizeof info);
    cr_assert(eq(int, batch_mgr_lookup(mgr, job, key, &info, err, sizeof err), 0), "%s", err);
    return info;
}

/* The answer LINE's result gives as call TEXT's, into RES (output taken by
 * the caller). */
static int answer_of(const char *text, const batch_line_info *info, upstream_result *res)
{
    json_t *msgs = msgs_of(text), *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m1", .messages = msgs,
                         .params = params };
    char *line = json_dumps(info->result, JSON_COMPACT);
    int rc = upstream_batch_result(up, &req, line, strlen(line), res);
    free(line);
    json_decref(msgs);
    json_decref(params);
    return rc;
}

static void direct_done(upstream_call_t *c, upstream_result *res, void *ud)
{
    (void)c;
    upstream_result *out = ud;
    *out = *res;
    out->message = NULL;
    out->finish_reason = NULL;
    out->tool_calls = NULL;
    if (!out->output)
        out->output = json_null();
}

Test(batch, lines_of_two_jobs_go_in_one_batch_and_answer_as_a_direct_call_would)
{
    setup("openai", NULL);
    char j1[STORE_ID_SIZE], j2[STORE_ID_SIZE];
    job_id(j1);
    job_id(j2);
    submit(j1, "k0", "hello zero");
    submit(j1, "k1", "hello one");
    submit(j2, "k0", "hello two");
    cr_assert(truth(batch_mgr_has_line(mgr, j1, "k1")));
    cr_assert(truth(!batch_mgr_has_line(mgr, j2, "k1")));
    batch_line_info info = look(j1, "k0");
    cr_assert(eq(int, info.state, BATCH_LINE_PENDING));
    cr_assert(eq(str, info.batch, ""), "collecting: no batch name yet");
    cr_assert(eq(int, mstat("lines", "collecting"), 3));
    cr_assert(eq(str, seen.last_state, "collecting"));
    run_until(&seen.ready, 2, 10000);
    /* told once per job, each after its lines' outcomes were on disk */
    cr_assert(eq(int, seen.ready, 2));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_uploads"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_lines"), 3));
    cr_assert(eq(long, fake_server_stat(&srv, "chat"), 0), "no call went direct");
    cr_assert(eq(str, seen.last_state, "ended"));
    cr_assert(eq(int, mstat("lines", "done"), 3));
    info = look(j1, "k1");
    cr_assert(eq(int, info.state, BATCH_LINE_DONE));
    cr_assert(eq(int, info.attempt, 1));
    cr_assert(truth(strncmp(info.batch, "loom-", 5) == 0 && strlen(info.batch) == 31),
              "%s", info.batch);
    cr_assert(truth(info.result != NULL));
    upstream_result br;
    cr_assert(eq(int, answer_of("hello one", &info, &br), 0), "%s", br.message);
    json_decref(info.result);
    /* the same call made directly */
    json_t *msgs = msgs_of("hello one"), *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m1", .messages = msgs,
                         .params = params };
    upstream_result dr = { 0 };
    cr_assert(truth(upstream_call(up, &req, NULL, direct_done, &dr) != NULL));
    uint64_t end = reactor_now_us(r) + 5000000;
    while (!dr.output && reactor_now_us(r) < end)
        reactor_run_once(r, 10);
    cr_assert(truth(json_equal(br.output, dr.output)), "%s vs %s",
              json_string_value(br.output), json_string_value(dr.output));
    cr_assert(eq(i64, br.usage.input_tokens, dr.usage.input_tokens));
    cr_assert(eq(i64, br.usage.output_tokens, dr.usage.output_tokens));
    json_decref(br.output);
    json_decref(dr.output);
    json_decref(msgs);
    json_decref(params);
}

Test(batch, lines_are_split_by_the_providers_lines_per_batch)
{
    upstream_batch_api ba = { .window_ms = 50, .poll_min_ms = 20, .poll_max_ms = 100,
                              .max_lines = 3 };
    setup_with("openai", NULL, &ba);
    char j[STORE_ID_SIZE];
    job_id(j);
    for (int i = 0; i < 7; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        submit(j, key, key);
    }
    /* 3 + 3 went at once; the seventh waits for its window */
    cr_assert(eq(int, mstat("lines", "collecting"), 1));
    run_until(&seen.ready, 3, 10000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 3));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_lines"), 7));
    for (int i = 0; i < 7; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        batch_line_info info = look(j, key);
        cr_assert(eq(int, info.state, BATCH_LINE_DONE));
        json_decref(info.result);
    }
}

Test(batch, lines_are_split_by_bytes_too)
{
    upstream_batch_api ba = { .window_ms = 50, .poll_min_ms = 20, .poll_max_ms = 100,
                              .max_bytes = 400 };
    setup_with("openai", NULL, &ba);
    char j[STORE_ID_SIZE];
    job_id(j);
    for (int i = 0; i < 4; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        submit(j, key, "a line of about two hundred bytes once it is written as JSONL");
    }
    run_until_stat("batches", "ended", 2, 10000);
    cr_assert(gt(long, fake_server_stat(&srv, "batch_creates"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_lines"), 4));
}

static void restart_resumes(const char *plugin)
{
    setup(plugin, (const char *const[]){ "--batch-delay", "1500", NULL });
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    submit(j, "b", "two");
    run_until(&seen.submitted, 1, 10000);
    batch_line_info before = look(j, "a");
    batch_mgr_free(mgr); /* as if killed: the store has everything */
    memset(&seen, 0, sizeof seen);
    new_manager();
    batch_line_info info = look(j, "a");
    cr_assert(eq(int, info.state, BATCH_LINE_PENDING), "the line is known again at once");
    cr_assert(eq(str, info.batch, before.batch));
    run_until(&seen.ready, 1, 10000);
    /* Anthropic takes the lines inline: no upload */
    cr_assert(eq(long, fake_server_stat(&srv, "batch_uploads"), strcmp(plugin, "openai") == 0));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    info = look(j, "b");
    cr_assert(eq(int, info.state, BATCH_LINE_DONE));
    cr_assert(truth(info.result != NULL));
    json_decref(info.result);
}

Test(batch, a_restart_resumes_polling_without_sending_anything_twice)
{
    restart_resumes("openai");
}

Test(batch, anthropic_a_restart_resumes_polling_without_sending_anything_twice)
{
    restart_resumes("anthropic");
}

Test(batch, a_crash_after_the_upload_finds_it_and_creates_once)
{
    setup("openai", NULL);
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    run_until_stat(NULL, "uploads", 1, 10000);
    batch_mgr_free(mgr); /* the upload's id may or may not be on disk */
    memset(&seen, 0, sizeof seen);
    new_manager();
    run_until(&seen.ready, 1, 10000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_uploads"), 1), "found, not sent again");
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    batch_line_info info = look(j, "a");
    cr_assert(eq(int, info.state, BATCH_LINE_DONE));
    json_decref(info.result);
}

Test(batch, a_crash_after_the_create_finds_the_batch_by_name)
{
    setup("openai", (const char *const[]){ "--batch-delay", "500", NULL });
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    /* the create was answered; its record is at most queued */
    uint64_t end = reactor_now_us(r) + 10000000;
    while (fake_server_stat(&srv, "batch_creates") < 1 && reactor_now_us(r) < end)
        reactor_run_once(r, 2);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    batch_mgr_free(mgr);
    memset(&seen, 0, sizeof seen);
    new_manager();
    run_until(&seen.ready, 1, 10000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1), "never made twice");
    cr_assert(eq(long, fake_server_stat(&srv, "batch_uploads"), 1));
}

static void all_steps_through(const char *plugin, const char *code)
{
    setup(plugin, (const char *const[]){ "--batch-fault", code, "--batch-fault-every", "2",
                                         NULL });
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    submit(j, "b", "two");
    run_until(&seen.ready, 1, 20000);
    cr_assert(gt(long, fake_server_stat(&srv, "batch_faults"), 1));
    cr_assert(gt(i64, mstat(NULL, "errors"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    for (int i = 0; i < 2; i++) {
        batch_line_info info = look(j, i ? "b" : "a");
        cr_assert(eq(int, info.state, BATCH_LINE_DONE));
        upstream_result res;
        cr_assert(eq(int, answer_of(i ? "two" : "one", &info, &res), 0), "%s", res.message);
        json_decref(res.output);
        json_decref(info.result);
    }
}

Test(batch, answers_429_on_every_step_are_waited_out)
{
    all_steps_through("openai", "429");
}

Test(batch, answers_500_on_every_step_are_retried)
{
    all_steps_through("openai", "500");
}

Test(batch, anthropic_answers_503_on_every_step_are_retried)
{
    all_steps_through("anthropic", "503");
}

Test(batch, anthropic_lines_answer_as_direct_calls)
{
    setup("anthropic", NULL);
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "bonjour");
    run_until(&seen.ready, 1, 10000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "messages"), 0));
    batch_line_info info = look(j, "a");
    cr_assert(eq(int, info.state, BATCH_LINE_DONE));
    upstream_result res;
    cr_assert(eq(int, answer_of("bonjour", &info, &res), 0), "%s", res.message);
    cr_assert(truth(strstr(json_string_value(res.output), "bonjour") != NULL));
    cr_assert(gt(i64, res.usage.output_tokens, 0));
    json_decref(res.output);
    json_decref(info.result);
}

Test(batch, failed_lines_come_back_as_the_direct_error)
{
    setup("openai", (const char *const[]){ "--batch-fail-every", "2", NULL });
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    submit(j, "b", "two");
    run_until(&seen.ready, 1, 10000);
    batch_line_info info = look(j, "b");
    cr_assert(eq(int, info.state, BATCH_LINE_DONE));
    upstream_result res;
    cr_assert(truth(info.result != NULL), "the error line is the result");
    cr_assert(eq(int, answer_of("two", &info, &res), -1));
    cr_assert(eq(int, res.code, LOOM_E_UPSTREAM), "%s", res.message);
    json_decref(info.result);
    info = look(j, "a");
    cr_assert(eq(int, answer_of("one", &info, &res), 0));
    json_decref(res.output);
    json_decref(info.result);
}

Test(batch, lines_of_an_expired_batch_without_a_result_fail_as_upstream)
{
    setup("openai", (const char *const[]){ "--batch-expire-every", "1", NULL });
    char j[STORE_ID_SIZE];
    job_id(j);
    submit(j, "a", "one");
    submit(j, "b", "two");
    run_until(&seen.ready, 1, 10000);
    cr_assert(eq(str, seen.last_state, "expired"));
    batch_line_info a = look(j, "a"), b = look(j, "b");
    cr_assert(eq(int, a.state, BATCH_LINE_DONE));
    upstream_result res;
    cr_assert(eq(int, answer_of("one", &a, &res), 0), "the first half ran");
    json_decref(res.output);
    json_decref(a.result);
    cr_assert(eq(int, b.state, BATCH_LINE_DONE));
    if (b.result) { /* OpenAI's error file names it */
        cr_assert(eq(int, answer_of("two", &b, &res), -1));
        cr_assert(eq(int, res.code, LOOM_E_UPSTREAM));
        json_decref(b.result);
    } else {
        cr_assert(eq(int, b.code, LOOM_E_UPSTREAM));
        cr_assert(truth(strstr(b.message, "expired") != NULL), "%s", b.message);
    }
}

static void cancelled_when_unwanted(const char *plugin)
{
    setup(plugin, (const char *const[]){ "--batch-delay", "5000", NULL });
    char j1[STORE_ID_SIZE], j2[STORE_ID_SIZE];
    job_id(j1);
    job_id(j2);
    submit(j1, "a", "one");
    submit(j2, "a", "two");
    run_until(&seen.submitted, 1, 10000);
    batch_mgr_drop_job(mgr, j1);
    cr_assert(truth(!batch_mgr_has_line(mgr, j1, "a")));
    run_until_stat(NULL, "polls", 1, 10000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_cancels"), 0), "one job still wants it");
    batch_mgr_drop_job(mgr, j2);
    uint64_t end = reactor_now_us(r) + 10000000;
    while (fake_server_stat(&srv, "batch_cancels") < 1 && reactor_now_us(r) < end)
        reactor_run_once(r, 10);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_cancels"), 1));
    /* and the record goes */
    json_t *all = NULL;
    char err[256];
    end = reactor_now_us(r) + 10000000;
    for (;;) {
        cr_assert(eq(int, store_batch_load(st, &all, err, sizeof err), 0));
        size_t n = json_array_size(all);
        json_decref(all);
        if (n == 0)
            break;
        cr_assert(reactor_now_us(r) < end, "the cancelled batch's record stays");
        reactor_run_once(r, 10);
    }
    cr_assert(eq(int, seen.ready, 0), "nobody is told of a batch nobody wants");
}

Test(batch, a_batch_no_job_wants_is_cancelled_at_the_provider)
{
    cancelled_when_unwanted("openai");
}

Test(batch, anthropic_a_batch_no_job_wants_is_cancelled_at_the_provider)
{
    cancelled_when_unwanted("anthropic");
}

Test(batch, a_collecting_line_dropped_with_its_job_is_never_sent)
{
    setup("openai", NULL);
    char j1[STORE_ID_SIZE], j2[STORE_ID_SIZE];
    job_id(j1);
    job_id(j2);
    submit(j1, "a", "one");
    submit(j2, "a", "two");
    batch_mgr_drop_job(mgr, j1);
    run_until(&seen.ready, 1, 10000);
    cr_assert(eq(str, seen.ready_job[0], j2));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_lines"), 1));
}

Test(batch, a_provider_without_a_batch_api_is_refused)
{
    upstream_batch_api ba = { .off = true };
    setup_with("openai", NULL, &ba);
    char j[STORE_ID_SIZE];
    job_id(j);
    json_t *msgs = msgs_of("x"), *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m1", .messages = msgs,
                         .params = params };
    batch_line_spec s = { .job = j, .key = "a", .attempt = 1, .provider = "fake", .up = up,
                          .req = &req };
    loom_errcode code = LOOM_OK;
    char err[256] = "";
    cr_assert(eq(int, batch_mgr_submit(mgr, &s, &code, err, sizeof err), -1));
    cr_assert(eq(int, code, LOOM_E_INVALID_REQUEST));
    cr_assert(truth(strstr(err, "no Batch API") != NULL), "%s", err);
    cr_assert(truth(!batch_mgr_has_line(mgr, j, "a")));
    json_decref(msgs);
    json_decref(params);
}

Test(batch, ten_thousand_lines_of_a_hundred_jobs)
{
    setup("openai", NULL);
    static char jobs[100][STORE_ID_SIZE];
    for (int j = 0; j < 100; j++) {
        job_id(jobs[j]);
        for (int i = 0; i < 100; i++) {
            char key[16], text[32];
            snprintf(key, sizeof key, "map[%d]", i);
            snprintf(text, sizeof text, "item %d of job %d", i, j);
            submit(jobs[j], key, text);
        }
    }
    cr_assert(eq(i64, mstat("lines", "collecting"), 10000));
    run_until(&seen.ready, 100, 60000);
    cr_assert(eq(long, fake_server_stat(&srv, "batch_creates"), 1));
    cr_assert(eq(long, fake_server_stat(&srv, "batch_lines"), 10000));
    cr_assert(eq(i64, mstat("lines", "done"), 10000));
    for (int j = 0; j < 100; j += 33) {
        for (int i = 0; i < 100; i += 49) {
            char key[16], text[32];
            snprintf(key, sizeof key, "map[%d]", i);
            snprintf(text, sizeof text, "item %d of job %d", i, j);
            batch_line_info info = look(jobs[j], key);
            upstream_result res;
            cr_assert(eq(int, answer_of(text, &info, &res), 0), "%s", res.message);
            cr_assert(truth(strstr(json_string_value(res.output), text) != NULL));
            json_decref(res.output);
            json_decref(info.result);
        }
    }
    for (int j = 0; j < 100; j++)
        batch_mgr_drop_job(mgr, jobs[j]);
    cr_assert(eq(i64, mstat("lines", "done"), 0));
}
