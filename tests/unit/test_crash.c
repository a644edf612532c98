/* test_crash.c -- durability under kill -9: 1,000 jobs of a three-call chain
 * against the fake provider, loomd killed 20 times at random moments while
 * jobs are submitted and run, and restarted each time.
 *
 * What must hold at the end (docs/operations.md, "The state directory"):
 * - every acknowledged submit is a job that succeeds with the right output;
 * - a submit whose connection died unanswered is sent again after the
 *   restart with the same idempotency key, and the store ends up with
 *   exactly one job per key;
 * - finished calls are not paid twice, counted exactly, step by step. The
 *   fake server logs every answer with the request's Loom-Step-Key and the
 *   time (CLOCK_MONOTONIC, shared with this process); the job is the input
 *   the prompt echoes ("c b a k0042"). After each kill -9, before the
 *   restart, the job store's database is opened read-only and the steps it
 *   holds are recorded: that is exactly what was committed when the daemon
 *   died. A step answered twice is justified only by a kill K such that the
 *   first answer came before the daemon was seen dead after K, the step was
 *   not in the store at K, and the second request arrived after the restart
 *   that followed K (each further answer needs a later kill of its own). No
 *   daemon can do better: an answer's checkpoint needs a commit after the
 *   answer arrived, so one the kill overtook is paid again in any design.
 *   Answers the server wrote after the daemon had died (requests in flight
 *   at a kill) were read by nobody; they are counted apart.
 *
 * The seed of the kill delays is printed; LOOM_CRASH_SEED=N replays the same
 * delays (the timing of everything else still varies). The test is one event
 * loop over a few pipelined client connections: no threads, every wait is
 * bounded. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/crash_count.h"
#include "tests/unit/loomd_harness.h"

enum {
    NJOBS = 1000,
    NKILLS = 20,
    CALLS_PER_JOB = 3,
    NCONNS = 4,
    WINDOW = 32,           /* submits outstanding per connection */
    SUBMIT_SPAN_MS = 6000, /* first sends are paced over this long */
    KILL_MIN_MS = 100,
    KILL_MAX_MS = 800,
    LATENCY_MS = 150,      /* the fake server's answer delay */
    NSTEPS = NJOBS * CALLS_PER_JOB,
};

#define CRASH_WF                                                               \
    "loom: 1\nname: crash\ndefaults: { provider: llm, model: m }\n"            \
    "do:\n  chain:\n"                                                          \
    "    - call: 'a {{ input.text }}'\n"                                       \
    "    - call: 'b {{ prev }}'\n"                                             \
    "    - call: 'c {{ prev }}'\n"

_Static_assert(NKILLS <= CRASH_MAX_KILLS, "crash_paid holds CRASH_MAX_KILLS kills");

enum { K_NEW, K_SENT, K_ACKED };

typedef struct key_state {
    int state;
    int conn;              /* while K_SENT */
    int sends;
    bool existed;          /* the ok reply said the key was already taken */
    char job[32];
} key_state;

typedef lh_pipe client;

typedef struct crash_run {
    lh_daemon d;
    crash_kill kills[NKILLS];
    key_state keys[NJOBS];
    client conns[NCONNS];
    int first_sent;        /* keys sent at least once */
    int acked, sends, resent, existed, error_replies;
    char last_error[256];
    bool up;               /* loomd is running */
    int64_t t0_ms;
} crash_run;

static crash_run R;

static void teardown(void)
{
    for (int k = 0; k < NKILLS; k++)
        crash_kill_free(&R.kills[k]);
    for (int c = 0; c < NCONNS; c++) {
        if (R.conns[c].fd >= 0)
            close(R.conns[c].fd);
        free(R.conns[c].buf);
    }
    lh_teardown(&R.d);
}

static void client_connect(int c)
{
    client *cl = &R.conns[c];
    cl->fd = lh_connect(&R.d);
    cr_assert(cl->fd >= 0, "cannot connect to loomd at %s", R.d.sock);
    cl->len = 0;
    cl->pending = 0;
}

/* The connection is gone: its unanswered submits are sent again later,
 * with the same idempotency keys. */
static void client_lost(int c)
{
    client *cl = &R.conns[c];
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    cl->len = 0;
    cl->pending = 0;
    for (int k = 0; k < NJOBS; k++)
        if (R.keys[k].state == K_SENT && R.keys[k].conn == c)
            R.keys[k].state = K_NEW;
}

static void handle_reply(int c, json_t *r)
{
    json_t *idv = json_object_get(r, "id");
    cr_assert(json_is_integer(idv), "a reply without our id: %s", json_dumps(r, 0));
    json_int_t k = json_integer_value(idv);
    cr_assert(k >= 0 && k < NJOBS && R.keys[k].state == K_SENT && R.keys[k].conn == c,
              "a reply to no pending submit: %s", json_dumps(r, 0));
    key_state *ks = &R.keys[k];
    R.conns[c].pending--;
    if (json_is_true(json_object_get(r, "ok"))) {
        const char *job = json_string_value(json_object_get(r, "job"));
        cr_assert(job && strlen(job) == 26, "an ok submit without a job id: %s", json_dumps(r, 0));
        snprintf(ks->job, sizeof ks->job, "%s", job);
        ks->state = K_ACKED;
        ks->existed = json_is_true(json_object_get(r, "existed"));
        R.existed += ks->existed;
        R.acked++;
        return;
    }
    /* no error is expected; count it, say what it was, and try again */
    char *s = json_dumps(r, JSON_COMPACT);
    snprintf(R.last_error, sizeof R.last_error, "%s", s ? s : "?");
    free(s);
    R.error_replies++;
    ks->state = K_NEW;
}

static void on_reply_line(void *ud, json_t *r)
{
    handle_reply((int)(intptr_t)ud, r);
}

/* Reads what C has; returns false when the connection ended. */
static bool client_read(int c)
{
    return lh_pipe_read(&R.conns[c], on_reply_line, (void *)(intptr_t)c);
}

/* Fills each live connection's window: retries first, then new keys as
 * far as the pace allows. */
static void fill_windows(void)
{
    int allowed = (int)((lh_now_ms() - R.t0_ms) * NJOBS / SUBMIT_SPAN_MS) + 1;
    if (allowed > NJOBS)
        allowed = NJOBS;
    int k = 0;
    for (int c = 0; c < NCONNS; c++) {
        client *cl = &R.conns[c];
        if (cl->fd < 0)
            continue;
        char batch[WINDOW * 160];
        size_t blen = 0;
        int taken[WINDOW], nt = 0;
        for (; cl->pending + nt < WINDOW && k < NJOBS; k++) {
            key_state *ks = &R.keys[k];
            if (ks->state != K_NEW)
                continue;
            if (ks->sends == 0 && R.first_sent >= allowed)
                break;
            blen += (size_t)snprintf(batch + blen, sizeof batch - blen,
                                     "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"crash\","
                                     "\"input\":{\"text\":\"k%04d\"},\"idempotency_key\":\"crash-%04d\"}\n",
                                     k, k, k);
            taken[nt++] = k;
        }
        if (!nt)
            continue;
        for (int i = 0; i < nt; i++) {
            key_state *ks = &R.keys[taken[i]];
            ks->state = K_SENT;
            ks->conn = c;
            R.first_sent += ks->sends == 0;
            R.resent += ks->sends > 0;
            ks->sends++;
            R.sends++;
        }
        cl->pending += nt;
        if (!lh_send_all(cl->fd, batch, blen))
            client_lost(c); /* the daemon died under us: retried after the restart */
    }
}

/* Runs the submit loop until UNTIL_MS (monotonic), or earlier once every
 * key is acknowledged when STOP_WHEN_ACKED. */
static void pump(int64_t until_ms, bool stop_when_acked)
{
    for (;;) {
        int64_t left = until_ms - lh_now_ms();
        if (left <= 0 || (stop_when_acked && R.acked == NJOBS))
            return;
        if (R.up)
            for (int c = 0; c < NCONNS; c++)
                if (R.conns[c].fd < 0)
                    client_connect(c);
        fill_windows();
        struct pollfd pf[NCONNS];
        for (int c = 0; c < NCONNS; c++)
            pf[c] = (struct pollfd){ .fd = R.conns[c].fd, .events = POLLIN };
        int n = poll(pf, NCONNS, left < 20 ? (int)left : 20);
        cr_assert(n >= 0 || errno == EINTR);
        for (int c = 0; c < NCONNS; c++)
            if (R.conns[c].fd >= 0 && pf[c].revents && !client_read(c))
                client_lost(c);
    }
}

/* After a kill: replies already in the sockets did arrive, so read them up
 * to EOF before giving up on the connections. */
static void drain_dead(void)
{
    int64_t until = lh_now_ms() + 2000;
    for (int c = 0; c < NCONNS; c++) {
        while (R.conns[c].fd >= 0 && lh_now_ms() < until) {
            struct pollfd pf = { .fd = R.conns[c].fd, .events = POLLIN };
            if (poll(&pf, 1, 100) <= 0 || !client_read(c))
                break;
        }
        client_lost(c);
    }
}

/* Sends every request of REQS (one line each, "id" = index) on a new
 * connection and collects the replies by id into OUT, within TIMEOUT_MS. */
static void call_many(char **reqs, json_t **out, int n, int timeout_ms)
{
    int fd = lh_connect(&R.d);
    cr_assert(fd >= 0);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += strlen(reqs[i]) + 1;
    char *all = malloc(total + 1), *p = all;
    cr_assert(all);
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s\n", reqs[i]);
    cr_assert(lh_send_all(fd, all, total), "cannot send to loomd");
    free(all);
    int got = 0;
    int64_t until = lh_now_ms() + timeout_ms;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    while (got < n) {
        int64_t left = until - lh_now_ms();
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        cr_assert(left > 0 && poll(&pf, 1, (int)left) > 0, "%d of %d replies within %d ms", got, n,
                  timeout_ms);
        if (cap - len < 65536) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        cr_assert(r > 0, "loomd closed the connection after %d of %d replies", got, n);
        len += (size_t)r;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(buf + len - start)))) {
            json_t *j = json_loadb(start, (size_t)(nl - start), 0, NULL);
            cr_assert(j);
            json_int_t id = json_integer_value(json_object_get(j, "id"));
            cr_assert(id >= 0 && id < n && !out[id], "an unexpected reply: %s", json_dumps(j, 0));
            out[id] = j;
            got++;
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
    }
    free(buf);
    close(fd);
}

/* Waits until the fake server holds no answer, so its log is complete. */
static void wait_server_idle(int timeout_ms)
{
    int64_t until = lh_now_ms() + timeout_ms;
    for (;;) {
        long inflight = fake_server_stat(&R.d.fake, "in_flight");
        if (inflight == 0)
            return;
        cr_assert(lh_now_ms() < until, "the fake server still holds %ld answers after %d ms",
                  inflight, timeout_ms);
        poll(NULL, 0, 10); /* the interval of a loop that tests the state itself */
    }
}

Test(crash, kill_9_twenty_times_under_a_thousand_jobs, .fini = teardown, .timeout = 300)
{
    for (int c = 0; c < NCONNS; c++)
        R.conns[c].fd = -1;
    const char *env = getenv("LOOM_CRASH_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0)
                        : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint64_t rng = seed;
    fprintf(stderr, "test_crash: seed %" PRIu64 " (LOOM_CRASH_SEED=%" PRIu64 " to reuse it)\n", seed,
            seed);
    cr_log_info("test_crash: seed %" PRIu64, seed);

    char lat[16];
    snprintf(lat, sizeof lat, "%d", LATENCY_MS);
    lh_setup(&R.d, "  llm: { plugin: openai, base_url: \"@FAKE@\", limits: { concurrency: 64 } }\n",
             (const char *const[]){ "--latency", lat, "--log", "@DIR@/fake.log", NULL });
    lh_workflow(&R.d, "crash", CRASH_WF);
    int64_t t_start = lh_now_ms();
    lh_start(&R.d);
    R.up = true;
    R.t0_ms = lh_now_ms();

    /* ---- submit and kill */
    int kills = 0, kills_while_submitting = 0;
    int64_t restart_ms_total = 0;
    for (; kills < NKILLS; kills++) {
        crash_kill *kr = &R.kills[kills];
        int64_t delay = KILL_MIN_MS + (int64_t)(lh_rng_next(&rng) % (KILL_MAX_MS - KILL_MIN_MS + 1));
        pump(lh_now_ms() + delay, false);
        kills_while_submitting += R.acked < NJOBS;
        kr->sent_us = lh_now_us();
        cr_assert_eq(lh_stop(&R.d, SIGKILL), 128 + SIGKILL, "loomd did not die of the SIGKILL");
        kr->dead_us = lh_now_us();
        R.up = false;
        char db[400];
        snprintf(db, sizeof db, "%s/loom.db", R.d.state);
        crash_record_committed(kr, db, false);
        drain_dead();
        kr->restart_us = lh_now_us();
        lh_start(&R.d);
        restart_ms_total += (lh_now_us() - kr->restart_us) / 1000;
        R.up = true;
    }

    /* ---- every key acknowledged, then every job waited for */
    pump(lh_now_ms() + 60000, true);
    cr_assert_eq(R.acked, NJOBS, "%d of %d submits acknowledged within 60 s after the last restart"
                                 " (%d error replies, last: %s)", R.acked, NJOBS, R.error_replies,
                 R.last_error);
    for (int c = 0; c < NCONNS; c++)
        client_lost(c);
    int64_t t_acked = lh_now_ms();

    static char *reqs[NJOBS];
    static json_t *replies[NJOBS];
    for (int k = 0; k < NJOBS; k++)
        cr_assert(asprintf(&reqs[k], "{\"id\":%d,\"op\":\"wait\",\"job\":\"%s\",\"timeout\":120}", k,
                           R.keys[k].job) > 0);
    call_many(reqs, replies, NJOBS, 130000);
    int succeeded = 0, wrong_output = 0;
    char first_bad[512] = "";
    for (int k = 0; k < NJOBS; k++) {
        json_t *job = json_object_get(replies[k], "job");
        const char *state = json_string_value(json_object_get(job, "state"));
        const char *out = json_string_value(json_object_get(job, "output"));
        char want[64];
        snprintf(want, sizeof want, "c b a k%04d", k);
        bool ok = json_is_true(json_object_get(replies[k], "ok")) && state &&
                  strcmp(state, "succeeded") == 0;
        succeeded += ok;
        if (ok && (!out || strcmp(out, want) != 0))
            wrong_output++;
        if ((!ok || !out || strcmp(out, want) != 0) && !first_bad[0]) {
            char *s = json_dumps(replies[k], JSON_COMPACT);
            snprintf(first_bad, sizeof first_bad, "key %d (want \"%s\"): %.400s", k, want, s ? s : "?");
            free(s);
        }
        free(reqs[k]);
        json_decref(replies[k]);
    }
    int64_t t_done = lh_now_ms();

    /* ---- distinct jobs in the store, paging through `list` */
    static const char *acked_ids[NJOBS];
    for (int k = 0; k < NJOBS; k++)
        acked_ids[k] = R.keys[k].job;
    lh_listed ls;
    lh_list_count(&R.d, "crash", 250, acked_ids, NJOBS, &ls);
    int nlisted = ls.listed, distinct = ls.distinct, acked_listed = ls.found;

    /* ---- what the provider was paid, step by step */
    wait_server_idle(10000); /* answers orphaned by the last kill are logged when they fall due */
    long chat = fake_server_stat(&R.d.fake, "chat");
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/fake.log", R.d.dir);
    crash_answer *ans = NULL;
    size_t nans = crash_read_answers(log_path, acked_ids, NJOBS, &ans);
    crash_paid p;
    crash_count_paid(ans, nans, R.kills, kills, &p);
    long committed_checked = crash_check_committed(ans, nans, R.kills, kills);
    cr_assert_gt(committed_checked, 0, "no kill found a step in the store: nothing was proven");
    crash_answers_free(ans, nans);
    long expected = (long)NSTEPS;
    double elapsed = (double)(lh_now_ms() - t_start) / 1000.0;
    long extra = chat - expected;
    char per_kill[NKILLS * 24] = "";
    size_t pk = 0;
    for (int k = 0; k < kills; k++)
        pk += (size_t)snprintf(per_kill + pk, sizeof per_kill - pk, "%s%d/%d/%d", k ? " " : "",
                               p.inflight_at[k], p.resent_at[k], p.orphaned_at[k]);

    char block[3072];
    snprintf(block, sizeof block,
             "test_crash figures:\n"
             "  jobs acknowledged    %d (%d submits sent, %d again after a kill with the same key;"
             " %d answered \"existed\")\n"
             "  succeeded            %d of %d (%d with a wrong output)\n"
             "  distinct jobs        %d in the store for %d idempotency keys\n"
             "  kills                %d (%d while submits were unacknowledged; restart %.0f ms on average)\n"
             "  calls expected       %ld (%d jobs x %d calls)\n"
             "  calls received       %ld (chat requests the fake server received; %zu answers logged)\n"
             "  extra calls          %ld = %d steps paid twice + %d thrice or more (extra answers"
             " read by the daemon) + %d answers nobody read (in flight at a kill)\n"
             "  steps                %d answered (%d once), %d never answered\n"
             "  unjustified          %d steps paid again without a kill to explain it%s%s\n"
             "  per kill             answered-not-committed/paid-again/unread: %s\n"
             "  store at kills       %ld steps committed in all, each answered before its kill\n"
             "  seed                 %" PRIu64 " (LOOM_CRASH_SEED)\n"
             "  elapsed              %.1f s (all acknowledged at %.1f s, all done at %.1f s)\n"
             "  loomd's log          %s/loomd.log (kept with LOOM_KEEP_TMP=1)\n",
             R.acked, R.sends, R.resent, R.existed, succeeded, NJOBS, wrong_output, distinct, NJOBS,
             kills, kills_while_submitting, (double)restart_ms_total / (kills ? kills : 1), expected,
             NJOBS, CALLS_PER_JOB, chat, nans, extra, p.twice, p.more, p.orphaned, p.steps, p.once,
             p.unanswered + (NSTEPS - p.steps), p.unjustified, p.unjustified ? ": " : "", p.first_bad,
             per_kill, committed_checked, seed, elapsed,
             (double)(t_acked - t_start) / 1000.0, (double)(t_done - t_start) / 1000.0, R.d.dir);
    fputs(block, stderr);
    cr_log_info("%s", block);

    cr_assert_eq(R.error_replies, 0, "%d submits were refused; the last: %s", R.error_replies,
                 R.last_error);
    cr_assert_eq(kills, NKILLS);
    cr_assert_eq(succeeded, NJOBS, "%d jobs did not succeed; first: %s (see %s/loomd.log)",
                 NJOBS - succeeded, first_bad, R.d.dir);
    cr_assert_eq(wrong_output, 0, "%d jobs have a wrong output; first: %s", wrong_output, first_bad);
    cr_assert_eq(distinct, nlisted, "the list shows a job twice");
    cr_assert_eq(acked_listed, NJOBS, "acknowledged jobs missing from the list");
    cr_assert_eq(distinct, NJOBS, "%d jobs in the store for %d idempotency keys", distinct, NJOBS);
    cr_assert_eq(p.steps, NSTEPS, "%d steps answered for %d", p.steps, NSTEPS);
    cr_assert_eq(p.unanswered, 0, "%d steps were never answered to the daemon", p.unanswered);
    cr_assert_eq((long)nans, chat, "the log holds %zu answers for %ld requests", nans, chat);
    cr_assert_eq(p.unjustified, 0, "%d steps were paid again with no kill to explain it; first: %s",
                 p.unjustified, p.first_bad);
}
