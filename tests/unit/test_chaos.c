/* test_chaos.c -- everything at once: a mixed load of a few thousand jobs
 * over eight workflows (chains, a map, parallel branches, a vote, per-step
 * timeouts, retries and a fallback) against ten fake provider servers, each
 * with its own fault (500s, slow first bytes, dropped connections, malformed
 * bodies, stalled bodies, 429s from a rate limit, a provider that always
 * fails, one that always stalls, one out of quota), while loomd is killed
 * with SIGKILL at random moments and restarted, its store fails and heals
 * through the fault VFS (LOOM_TEST_STORE_FAULTS, docs/operations.md "Test
 * hooks"), and one poison job crashes the daemon whenever it runs.
 *
 * What must hold at the end, read from the store and the fake servers' logs:
 * - every acknowledged submit is exactly one job, in a final state, with the
 *   output its workflow gives for its input (the fake echoes prompts, so the
 *   output is computed from the input) or the typed error its faults allow:
 *   a provider that always answers 500 fails its job with `upstream`, one
 *   that always stalls with `timeout`, one out of quota with `quota`, and a provider failing one request in K may
 *   fail a job only with the code of that fault;
 * - a submit whose reply was lost is sent again with the same idempotency
 *   key and makes no second job; no job is lost;
 * - every step answered successfully more than once was in flight at a
 *   daemon's death (the rule of crash_count.h: its first answer came before
 *   the death, it was not in the store then, and the second request came
 *   after the restart);
 * - the poison job ends failed with `crashed` (quarantine) and costs no
 *   more restarts than quarantine_after.
 *
 * LOOM_CHAOS_SEED=N (default 1) fixes the plan: the jobs, their inputs and
 * order, the moments of the kills, of the store's fault windows and of the
 * poison job. LOOM_CHAOS_SECONDS=S (default 95) is how long the faults go
 * on; the job count follows from it (RATE jobs a second). The daemon's own
 * timing still varies from run to run. The test is one event loop over a
 * few pipelined client connections; it sleeps only to pace the plan, and
 * every wait for a state has a deadline derived from the workflows. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/crash_count.h"
#include "tests/unit/loomd_harness.h"

enum {
    DEFAULT_SECONDS = 95,
    RATE = 25,             /* jobs submitted a second during the faults */
    NCONNS = 4,
    WINDOW = 32,           /* submits outstanding per connection */
    LATENCY_MS = 30,       /* every fake server's answer delay */
    STALL_TIMEOUT_MS = 5000, /* patient's per-attempt timeout: far above any answer's delay,
                              * so only a stalled body meets it */
    KILL_GAP_MIN_MS = 2000,
    KILL_GAP_MAX_MS = 5000,
    MAX_PLANNED_KILLS = CRASH_MAX_KILLS - 8, /* the rest for the poison job's crashes */
    FAULT_GAP_MIN_MS = 4000,
    FAULT_GAP_MAX_MS = 10000,
    FAULT_LEN_MIN_MS = 300,
    FAULT_LEN_MAX_MS = 2500,
    QUARANTINE_AFTER = 2,
    START_BOUND_MS = 30000, /* a start resumes thousands of jobs; under ASan too */
    /* The longest one job may go with no step ending, by the workflows'
     * policies: fanout's rate-limited call, 5 attempts of up to 10 requeues
     * behind a 1 s pause each, plus backoffs; patient's stalled call is 4 x
     * 5 s. No job finishing for this long (daemon up, faults over) means
     * something is stuck. */
    PROGRESS_BOUND_MS = 5 * 10 * 1000 + 5 * 200 + 10000,
};

/* ---- the workflows and the providers */

typedef struct wf_def {
    const char *name;
    int weight;
    const char *must_fail; /* the code it always fails with, or NULL */
    const char *may_fail;  /* the code its providers' faults may end it with, or NULL */
    const char *yaml;
} wf_def;

enum { WF_CHAIN, WF_MAP, WF_FANOUT, WF_PATIENT, WF_DOOMED, WF_RESCUED, WF_BROKE, WF_STUCK, NWF,
       WF_POISON = NWF };

#define RETRY6 "retry: { max_attempts: 6, initial_delay: 20ms, max_delay: 200ms }"

static const wf_def WFS[NWF + 1] = {
    [WF_CHAIN] = { "chain3", 22, NULL, "upstream",
                   "loom: 1\nname: chain3\ninput: { tag: string }\n"
                   "defaults: { model: m, " RETRY6 " }\n"
                   "do:\n  chain:\n"
                   "    - call: { provider: ok, prompt: 'a {{ input.tag }}' }\n"
                   "    - call: { provider: e500, prompt: 'b {{ prev }}' }\n"
                   "    - call: { provider: slowfirst, prompt: 'c {{ prev }}' }\n" },
    [WF_MAP] = { "mapper", 18, NULL, "upstream",
                 "loom: 1\nname: mapper\ninput: { tag: string, items: array }\n"
                 "defaults: { model: m, " RETRY6 " }\n"
                 "do:\n  map:\n    over: '{{ input.items }}'\n    max_concurrency: 4\n"
                 "    do:\n      chain:\n"
                 "        - call: { provider: drop, prompt: 'm {{ item }} {{ input.tag }}' }\n"
                 "        - call: { provider: malformed, prompt: 'n {{ prev }}' }\n" },
    [WF_FANOUT] = { "fanout", 18, NULL, "rate_limited",
                    "loom: 1\nname: fanout\ninput: { tag: string }\n"
                    "defaults: { model: m, retry: { max_attempts: 5, initial_delay: 20ms, max_delay: 200ms } }\n"
                    "do:\n  parallel:\n"
                    "    left: { call: { provider: limited, prompt: 'L {{ input.tag }}' } }\n"
                    "    right:\n      vote:\n        n: 3\n"
                    "        do: { call: { provider: ok, prompt: 'V {{ input.tag }}' } }\n"
                    "      output: '{{ output.winner }}'\n" },
    [WF_PATIENT] = { "patient", 12, NULL, "timeout",
                     "loom: 1\nname: patient\ninput: { tag: string }\n"
                     "defaults: { model: m }\n"
                     "do:\n  chain:\n"
                     "    - call: { provider: stall, prompt: 's {{ input.tag }}' }\n"
                     "      timeout: 5s\n"
                     "      retry: { max_attempts: 4, initial_delay: 20ms, max_delay: 200ms }\n"
                     "    - call: { provider: ok, prompt: 't {{ prev }}' }\n" },
    [WF_DOOMED] = { "doomed", 8, "upstream", NULL,
                    "loom: 1\nname: doomed\ninput: { tag: string }\n"
                    "do:\n  call: { provider: dead, model: m, prompt: 'd {{ input.tag }}' }\n"
                    "  retry: { max_attempts: 3, initial_delay: 20ms, max_delay: 100ms }\n" },
    [WF_RESCUED] = { "rescued", 10, NULL, NULL,
                     "loom: 1\nname: rescued\ninput: { tag: string }\n"
                     "defaults: { model: m }\n"
                     "do:\n  call: { provider: dead, prompt: 'r {{ input.tag }}' }\n"
                     "  retry: { max_attempts: 2, initial_delay: 20ms }\n"
                     "  fallback: { call: { provider: ok, prompt: 'f {{ error.code }} {{ input.tag }}' } }\n" },
    [WF_BROKE] = { "broke", 7, "quota", NULL,
                   "loom: 1\nname: broke\ninput: { tag: string }\n"
                   "do: { call: { provider: quota, model: m, prompt: 'q {{ input.tag }}' } }\n" },
    [WF_STUCK] = { "stuck", 5, "timeout", NULL, /* no answer ever ends: the timeout is free to be short */
                   "loom: 1\nname: stuck\ninput: { tag: string }\n"
                   "do:\n  call: { provider: stallall, model: m, prompt: 'z {{ input.tag }}' }\n"
                   "  timeout: 1s\n"
                   "  retry: { max_attempts: 2, initial_delay: 20ms }\n" },
    [WF_POISON] = { "poison", 0, "crashed", NULL,
                    "loom: 1\nname: poison\ndo: { lambda: misbehave.crash_on }\n" },
};

_Static_assert(STALL_TIMEOUT_MS == 5000, "patient's YAML says timeout: 5s");

typedef struct fake_def {
    const char *name;
    const char *args[6];
} fake_def;

static const fake_def FAKES[] = {
    { "ok", { NULL } },
    { "e500", { "--fault", "500", "--fault-every", "4", NULL } },
    { "slowfirst", { "--fault", "slow_first_byte", "--fault-every", "3", NULL } },
    { "drop", { "--fault", "drop", "--fault-every", "5", NULL } },
    { "malformed", { "--fault", "malformed_json", "--fault-every", "5", NULL } },
    { "stall", { "--fault", "stall_body", "--fault-every", "10", NULL } },
    { "limited", { "--rpm", "420", NULL } },
    { "dead", { "--fault", "500", NULL } },
    { "quota", { "--fault", "quota", NULL } },
    { "stallall", { "--fault", "stall_body", NULL } },
};
enum { NFAKES = sizeof FAKES / sizeof FAKES[0] };

/* The store's fault windows, each one line of the hook's file. */
static const char *const FAULT_LINES[] = {
    "fail write 1 full", "fail write 1 ioerr", "fail sync 1 ioerr", "fail write 3 readonly",
    "fail sync 1 full",
};
enum { NFAULT_LINES = sizeof FAULT_LINES / sizeof FAULT_LINES[0] };

/* ---- the run's state */

enum { K_NEW, K_SENT, K_ACKED };

typedef struct key_state {
    int state;
    int conn;              /* while K_SENT */
    int sends;
    int wf, nitems;
    int64_t due_ms;        /* not sent before (monotonic) */
    bool queued;           /* in the redo list */
    bool existed;
    char job[32];
} key_state;

typedef lh_pipe client;

typedef struct plan_event {
    int64_t at_ms;         /* from the start of the faults */
    int kind;              /* EV_KILL, EV_FAULT, EV_HEAL */
    int line;              /* EV_FAULT: FAULT_LINES index */
} plan_event;

enum { EV_KILL, EV_FAULT, EV_HEAL };

typedef struct err_count {
    char code[48];
    int n;
} err_count;

typedef struct chaos_run {
    lh_daemon d;           /* its directory also holds the fake logs and the faults file */
    char faults_path[320];
    plan_event *plan;
    fake_server fakes[NFAKES];
    int njobs;             /* keys 0..njobs-1; key njobs is the poison job */
    key_state *keys;
    int *redo;             /* keys to send again */
    int nredo;
    int next_fresh;
    client conns[NCONNS];
    crash_kill kills[CRASH_MAX_KILLS];
    bool ours[CRASH_MAX_KILLS]; /* a SIGKILL of ours (else the daemon died by itself) */
    int nkills;
    bool up;
    bool quarantine;       /* the daemon has quarantine_after */
    bool poison_sent;
    int acked, sends, resent, existed;
    err_count errs[16];
    int nerrs, odd_errors;
    char last_odd[300];
    long held_tries;       /* summed over the daemon's lives, sampled before each kill */
    int stats_missed;
} chaos_run;

static chaos_run R;

static int64_t rng_range(uint64_t *s, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(lh_rng_next(s) % (uint64_t)(hi - lo + 1));
}

static void teardown(void)
{
    for (int k = 0; k < R.nkills; k++)
        crash_kill_free(&R.kills[k]);
    for (int c = 0; c < NCONNS; c++) {
        if (R.conns[c].fd >= 0)
            close(R.conns[c].fd);
        free(R.conns[c].buf);
    }
    for (int f = 0; f < NFAKES; f++)
        fake_server_stop(&R.fakes[f]);
    lh_teardown(&R.d);
    free(R.plan);
    free(R.keys);
    free(R.redo);
}

/* ---- the daemon: started and watched by this process, its supervisor */

/* Starts loomd; true once it listens, false when it died first (a poison
 * job resumed at once): the caller records that death. */
static bool daemon_start(void)
{
    lh_spawn(&R.d);
    return lh_wait_listening(&R.d, START_BOUND_MS) == 0;
}

/* ---- the clients */

static void redo_push(int k, int64_t due_ms)
{
    key_state *ks = &R.keys[k];
    ks->state = K_NEW;
    ks->due_ms = due_ms;
    if (!ks->queued) {
        ks->queued = true;
        R.redo[R.nredo++] = k;
    }
}

static void client_connect(int c)
{
    client *cl = &R.conns[c];
    cl->fd = lh_connect(&R.d);
    cl->len = 0;
    cl->pending = 0;
}

/* The connection is gone: its unanswered submits go again later, with the
 * same idempotency keys. */
static void client_lost(int c)
{
    client *cl = &R.conns[c];
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    cl->len = 0;
    cl->pending = 0;
    for (int k = 0; k <= R.njobs; k++)
        if (R.keys[k].state == K_SENT && R.keys[k].conn == c)
            redo_push(k, 0);
}

static void count_error(const char *code)
{
    for (int i = 0; i < R.nerrs; i++)
        if (strcmp(R.errs[i].code, code) == 0) {
            R.errs[i].n++;
            return;
        }
    if (R.nerrs < (int)(sizeof R.errs / sizeof R.errs[0])) {
        snprintf(R.errs[R.nerrs].code, sizeof R.errs[R.nerrs].code, "%s", code);
        R.errs[R.nerrs++].n = 1;
    }
}

static void handle_reply(int c, json_t *r)
{
    json_int_t k = json_integer_value(json_object_get(r, "id"));
    cr_assert(k >= 0 && k <= R.njobs && R.keys[k].state == K_SENT && R.keys[k].conn == c,
              "a reply to no pending submit: %s", json_dumps(r, 0));
    key_state *ks = &R.keys[k];
    R.conns[c].pending--;
    if (json_is_true(json_object_get(r, "ok"))) {
        const char *job = json_string_value(json_object_get(r, "job"));
        cr_assert(job && strlen(job) == 26, "an ok submit without a job id: %s", json_dumps(r, 0));
        cr_assert(!ks->job[0] || strcmp(ks->job, job) == 0, "key %d was job %s, now %s",
                  (int)k, ks->job, job);
        snprintf(ks->job, sizeof ks->job, "%s", job);
        ks->state = K_ACKED;
        ks->existed = json_is_true(json_object_get(r, "existed"));
        R.existed += ks->existed;
        R.acked++;
        return;
    }
    /* refused: the store failing is expected (and says when to try again);
     * anything else is counted and fails the test at the end */
    json_t *err = json_object_get(r, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    count_error(code ? code : "?");
    if (!code || strcmp(code, "store_unavailable") != 0) {
        char *s = json_dumps(r, JSON_COMPACT);
        snprintf(R.last_odd, sizeof R.last_odd, "%.280s", s ? s : "?");
        free(s);
        R.odd_errors++;
    }
    json_int_t after = json_integer_value(json_object_get(err, "retry_after_ms"));
    redo_push((int)k, lh_now_ms() + (after <= 0 ? 100 : after < 1000 ? after : 1000));
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

/* The submit line of key K into BUF. */
static int submit_line(int k, char *buf, size_t len)
{
    const key_state *ks = &R.keys[k];
    if (ks->wf == WF_POISON)
        return snprintf(buf, len,
                        "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"poison\",\"input\":{\"crash\":true,"
                        "\"tag\":\"#P\"},\"idempotency_key\":\"chaos-poison\"}\n", k);
    char items[160] = "";
    if (ks->wf == WF_MAP) {
        size_t n = 0;
        n += (size_t)snprintf(items + n, sizeof items - n, ",\"items\":[");
        for (int i = 0; i < ks->nitems; i++)
            n += (size_t)snprintf(items + n, sizeof items - n, "%s\"i%d\"", i ? "," : "", i);
        snprintf(items + n, sizeof items - n, "]");
    }
    return snprintf(buf, len,
                    "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"tag\":\"#J%06d\"%s},"
                    "\"idempotency_key\":\"chaos-%06d\"}\n", k, WFS[ks->wf].name, k, items, k);
}

/* The next key to send now, or -1: first those sent before, then new ones
 * as far as their planned moment has come. */
static int next_key(int64_t now)
{
    for (int i = 0; i < R.nredo; i++) {
        int k = R.redo[i];
        if (R.keys[k].due_ms <= now) {
            R.redo[i] = R.redo[--R.nredo];
            R.keys[k].queued = false;
            return k;
        }
    }
    if (R.next_fresh < R.njobs && R.keys[R.next_fresh].due_ms <= now)
        return R.next_fresh++;
    return -1;
}

static void fill_windows(void)
{
    int64_t now = lh_now_ms();
    for (int c = 0; c < NCONNS; c++) {
        client *cl = &R.conns[c];
        if (cl->fd < 0)
            continue;
        char batch[WINDOW * 256];
        size_t blen = 0;
        int nt = 0, k;
        while (cl->pending + nt < WINDOW && (k = next_key(now)) >= 0) {
            key_state *ks = &R.keys[k];
            blen += (size_t)submit_line(k, batch + blen, sizeof batch - blen);
            ks->state = K_SENT;
            ks->conn = c;
            R.resent += ks->sends > 0;
            ks->sends++;
            R.sends++;
            nt++;
        }
        if (!nt)
            continue;
        cl->pending += nt;
        if (!lh_send_all(cl->fd, batch, blen))
            client_lost(c); /* the daemon died under us: sent again after the restart */
    }
}

/* After a death: replies already in the sockets did arrive, so they are
 * read up to EOF (which a dead peer's socket gives at once). */
static void drain_dead(void)
{
    for (int c = 0; c < NCONNS; c++) {
        while (R.conns[c].fd >= 0) {
            struct pollfd pf = { .fd = R.conns[c].fd, .events = POLLIN };
            if (poll(&pf, 1, 1000) <= 0 || !client_read(c))
                break;
        }
        client_lost(c);
    }
}

/* The daemon is dead (SENT_US: when we sent SIGKILL, or when we saw it
 * gone): the store's steps are recorded before anything can write again. */
static void record_death(int64_t sent_us, bool ours)
{
    cr_assert(R.nkills < CRASH_MAX_KILLS, "more than %d deaths", CRASH_MAX_KILLS);
    crash_kill *kr = &R.kills[R.nkills];
    R.ours[R.nkills++] = ours;
    kr->sent_us = sent_us;
    kr->dead_us = lh_now_us();
    R.up = false;
    char db[400];
    snprintf(db, sizeof db, "%s/loom.db", R.d.state);
    crash_record_committed(kr, db, true); /* steps that ended with an answer */
    drain_dead();
}

/* Starts the daemon again after the last recorded death, as often as it
 * dies at start (a poison job resumed at once), up to the quarantine. */
static void restart(void)
{
    for (int tries = 0;; tries++) {
        cr_assert(tries <= QUARANTINE_AFTER + 2, "loomd died at start %d times in a row", tries);
        R.kills[R.nkills - 1].restart_us = lh_now_us();
        if (daemon_start()) {
            R.up = true;
            return;
        }
        record_death(lh_now_us(), false);
    }
}

static void sample_stats(void)
{
    json_t *r = lh_call(&R.d, "{\"op\":\"stats\"}", 1000);
    json_t *tries = json_object_get(json_object_get(r, "store"), "held_tries");
    if (json_is_integer(tries))
        R.held_tries += (long)json_integer_value(tries);
    else
        R.stats_missed++;
    json_decref(r);
}

static void kill_daemon(void)
{
    sample_stats();
    int64_t sent = lh_now_us();
    int st = lh_stop(&R.d, SIGKILL);
    /* it may have died by itself just before (the poison job) */
    record_death(sent, st == 128 + SIGKILL);
    restart();
}

/* One turn of the loop: connections, sends, replies, and a death seen. */
static void pump_once(int wait_ms)
{
    if (R.up) {
        int st;
        if (waitpid(R.d.pid, &st, WNOHANG) == R.d.pid) {
            R.d.pid = 0;
            record_death(lh_now_us(), false);
            restart();
        }
        for (int c = 0; c < NCONNS; c++)
            if (R.conns[c].fd < 0)
                client_connect(c);
    }
    fill_windows();
    struct pollfd pf[NCONNS];
    for (int c = 0; c < NCONNS; c++)
        pf[c] = (struct pollfd){ .fd = R.conns[c].fd, .events = POLLIN };
    int n = poll(pf, NCONNS, wait_ms);
    cr_assert(n >= 0 || errno == EINTR);
    for (int c = 0; c < NCONNS; c++)
        if (R.conns[c].fd >= 0 && pf[c].revents && !client_read(c))
            client_lost(c);
}

static void pump_until(int64_t until_ms)
{
    for (int64_t left; (left = until_ms - lh_now_ms()) > 0;)
        pump_once(left < 20 ? (int)left : 20);
}

static void write_faults(const char *text)
{
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp", R.faults_path);
    FILE *f = fopen(tmp, "w");
    cr_assert(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, R.faults_path), 0);
}

/* ---- the end: reading the store and the logs */

/* Jobs not yet final in the store, read-only beside the running daemon. */
static long unfinished_jobs(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/loom.db", R.d.state);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM jobs WHERE state = 'queued' OR state = 'running'",
                               -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            n = (long)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* What key K's job must give: its output (new reference) when it must or may
 * succeed; NULL for the workflows that always fail. */
static json_t *expected_output(int k)
{
    const key_state *ks = &R.keys[k];
    char tag[16];
    snprintf(tag, sizeof tag, "#J%06d", k);
    switch (ks->wf) {
    case WF_CHAIN: return json_sprintf("c b a %s", tag);
    case WF_MAP: {
        json_t *a = json_array();
        for (int i = 0; i < ks->nitems; i++)
            json_array_append_new(a, json_sprintf("n m i%d %s", i, tag));
        return a;
    }
    case WF_FANOUT:
        return json_pack("{s:o, s:o}", "left", json_sprintf("L %s", tag), "right",
                         json_sprintf("V %s", tag));
    case WF_PATIENT: return json_sprintf("t s %s", tag);
    case WF_RESCUED: return json_sprintf("f upstream %s", tag);
    default: return NULL;
    }
}

typedef struct wf_tally {
    int jobs, succeeded, failed_allowed;
} wf_tally;

typedef struct verdict {
    int rows, final, succeeded, failed, wrong, missing, unkeyed, dup;
    wf_tally per_wf[NWF + 1];
    err_count codes[16];
    int ncodes;
    char first_bad[600];
    bool poison_quarantined;
    char poison_state[200];
} verdict;

static void bad(verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(verdict *v, const char *fmt, ...)
{
    v->wrong++;
    if (v->first_bad[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->first_bad, sizeof v->first_bad, fmt, ap);
    va_end(ap);
}

static void tally_code(verdict *v, const char *code)
{
    for (int i = 0; i < v->ncodes; i++)
        if (strcmp(v->codes[i].code, code) == 0) {
            v->codes[i].n++;
            return;
        }
    if (v->ncodes < (int)(sizeof v->codes / sizeof v->codes[0])) {
        snprintf(v->codes[v->ncodes].code, sizeof v->codes[v->ncodes].code, "%s", code);
        v->codes[v->ncodes++].n = 1;
    }
}

/* Every row of the store against what its key must give. */
static void check_store(verdict *v)
{
    memset(v, 0, sizeof *v);
    char path[400];
    snprintf(path, sizeof path, "%s/loom.db", R.d.state);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    cr_assert_eq(rc, SQLITE_OK, "cannot open %s", path);
    rc = sqlite3_prepare_v2(db, "SELECT id, workflow, idempotency_key, state, output, error FROM jobs",
                            -1, &st, NULL);
    cr_assert_eq(rc, SQLITE_OK, "cannot read the jobs: %s", sqlite3_errmsg(db));
    int *seen = calloc((size_t)R.njobs + 1, sizeof *seen);
    cr_assert(seen);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        v->rows++;
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *wf = (const char *)sqlite3_column_text(st, 1);
        const char *key = (const char *)sqlite3_column_text(st, 2);
        const char *state = (const char *)sqlite3_column_text(st, 3);
        const char *out = (const char *)sqlite3_column_text(st, 4);
        const char *errt = (const char *)sqlite3_column_text(st, 5);
        int k = -1;
        if (key && strcmp(key, "chaos-poison") == 0)
            k = R.njobs;
        else if (key && strncmp(key, "chaos-", 6) == 0)
            k = atoi(key + 6);
        if (k < 0 || k > R.njobs) {
            v->unkeyed++;
            bad(v, "job %s (%s) has no key of ours: %s", id, wf, key ? key : "(none)");
            continue;
        }
        if (seen[k]++) {
            v->dup++;
            bad(v, "key %d has a second job %s", k, id);
            continue;
        }
        key_state *ks = &R.keys[k];
        if (ks->state != K_ACKED || strcmp(ks->job, id) != 0) {
            bad(v, "key %d: the store has job %s, the submit acknowledged %s", k, id,
                ks->state == K_ACKED ? ks->job : "(nothing)");
            continue;
        }
        const wf_def *w = &WFS[ks->wf];
        if (strcmp(wf, w->name) != 0) {
            bad(v, "job %s of key %d runs %s, not %s", id, k, wf, w->name);
            continue;
        }
        v->per_wf[ks->wf].jobs++;
        bool final = strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                     strcmp(state, "cancelled") == 0;
        v->final += final;
        json_t *err = errt ? json_loads(errt, 0, NULL) : NULL;
        const char *code = json_string_value(json_object_get(err, "code"));
        if (ks->wf == WF_POISON) {
            snprintf(v->poison_state, sizeof v->poison_state, "%s%s%s", state, code ? ", " : "",
                     code ? code : "");
            v->poison_quarantined = strcmp(state, "failed") == 0 && code &&
                                    strcmp(code, w->must_fail) == 0;
            json_decref(err);
            continue;
        }
        if (strcmp(state, "succeeded") == 0) {
            v->succeeded++;
            v->per_wf[ks->wf].succeeded++;
            json_t *want = expected_output(k);
            json_t *got = out ? json_loads(out, JSON_DECODE_ANY, NULL) : NULL;
            if (!want || !json_equal(want, got)) {
                char *g = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                char *wt = want ? json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                bad(v, "job %s (%s, key %d) succeeded with %.200s, wanted %.200s", id, wf, k,
                    g ? g : "null", wt ? wt : "a failure");
                free(g);
                free(wt);
            }
            json_decref(want);
            json_decref(got);
        } else if (strcmp(state, "failed") == 0) {
            v->failed++;
            tally_code(v, code ? code : "?");
            const char *allowed = w->must_fail ? w->must_fail : w->may_fail;
            if (allowed && code && strcmp(code, allowed) == 0)
                v->per_wf[ks->wf].failed_allowed++;
            else
                bad(v, "job %s (%s, key %d) failed with %.300s; allowed: %s", id, wf, k,
                    errt ? errt : "no error", allowed ? allowed : "none");
        } else {
            bad(v, "job %s (%s, key %d) ended %s", id, wf, k, state);
        }
        json_decref(err);
    }
    cr_assert_eq(rc, SQLITE_DONE, "reading the jobs: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    for (int k = 0; k < R.njobs; k++)
        if (!seen[k]) {
            v->missing++;
            bad(v, "key %d (acknowledged as %s) has no job in the store", k, R.keys[k].job);
        }
    free(seen);
}

typedef struct log_figures {
    long lines, good, faulty, errors, unread_good;
    long r429, r5xx, dropped, other;
    long by_fake[NFAKES];
} log_figures;

static int cmp_answer(const void *a, const void *b)
{
    const crash_answer *x = a, *y = b;
    int c = strcmp(x->step, y->step);
    if (c)
        return c;
    return (x->answered_us > y->answered_us) - (x->answered_us < y->answered_us);
}

/* Every fake server's log: the successful chat answers as "JOB\tKEY" steps
 * (sorted as crash_count wants), and the counts of everything else. */
static size_t read_answers(crash_answer **out, log_figures *lf)
{
    memset(lf, 0, sizeof *lf);
    crash_answer *a = NULL;
    size_t n = 0, cap = 0;
    for (int f = 0; f < NFAKES; f++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s.log", R.d.dir, FAKES[f].name);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue; /* a server nobody called */
        char *line = NULL;
        size_t lcap = 0;
        while (getline(&line, &lcap, fp) > 0) {
            json_t *j = json_loads(line, 0, NULL);
            cr_assert(j, "an unparsable line in %s: %s", path, line);
            lf->lines++;
            lf->by_fake[f]++;
            int status = (int)json_integer_value(json_object_get(j, "status"));
            const char *fault = json_string_value(json_object_get(j, "fault"));
            const char *key = json_string_value(json_object_get(j, "key"));
            const char *echo = json_string_value(json_object_get(j, "echo"));
            /* a slow answer is a whole one; a cut or stalled body is not */
            bool good = status == 200 && (!fault || strcmp(fault, "slow_first_byte") == 0);
            if (!good) {
                lf->faulty += status == 200;
                lf->errors += status != 200;
                lf->r429 += status == 429;
                lf->r5xx += status >= 500;
                lf->dropped += status == 0;
                lf->other += status != 200 && status != 429 && status < 500 && status != 0;
                json_decref(j);
                continue;
            }
            lf->good++;
            const char *tag = echo ? strstr(echo, "#J") : NULL;
            int k = tag ? atoi(tag + 2) : -1;
            cr_assert(key && k >= 0 && k < R.njobs && R.keys[k].job[0],
                      "an answer of no job we know: %s", line);
            bool delivered = json_is_true(json_object_get(j, "delivered"));
            lf->unread_good += !delivered;
            if (!delivered) { /* read by nobody: paid, but never seen twice by a daemon */
                json_decref(j);
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 8192;
                a = realloc(a, cap * sizeof *a);
                cr_assert(a);
            }
            a[n] = (crash_answer){ .received_us = json_integer_value(json_object_get(j, "received_us")),
                                   .answered_us = json_integer_value(json_object_get(j, "answered_us")),
                                   .delivered = true };
            cr_assert(asprintf(&a[n].step, "%s\t%s", R.keys[k].job, key) > 0);
            n++;
            json_decref(j);
        }
        free(line);
        fclose(fp);
    }
    qsort(a, n, sizeof *a, cmp_answer);
    *out = a;
    return n;
}

/* Whether this loomd knows quarantine_after: --check refuses an unknown key. */
static bool probe_quarantine(void)
{
    char out[4096];
    cr_assert_eq(lh_check(&R.d, out, sizeof out), 0, "the test's config does not check: %s", out);
    lh_config_replace(&R.d, "shutdown_grace: 5s\n", "shutdown_grace: 5s\nquarantine_after: 2\n");
    if (lh_check(&R.d, out, sizeof out) == 0)
        return true;
    lh_config_replace(&R.d, "shutdown_grace: 5s\nquarantine_after: 2\n", "shutdown_grace: 5s\n");
    return false;
}

/* The daemon's directory and config, as lh_setup makes them but under a
 * name of this test's own, with the fake servers as providers, the
 * misbehave plugin and info logging (debug lines for thousands of jobs
 * would cost more than they tell). */
static void setup_daemon(const char *providers)
{
    lh_daemon *d = &R.d;
    snprintf(d->dir, sizeof d->dir, "/tmp/loom-chaos-XXXXXX");
    cr_assert(mkdtemp(d->dir));
    snprintf(d->sock, sizeof d->sock, "%s/loom.sock", d->dir);
    snprintf(d->cfg, sizeof d->cfg, "%s/loomd.yaml", d->dir);
    snprintf(d->wf, sizeof d->wf, "%s/workflows", d->dir);
    snprintf(d->state, sizeof d->state, "%s/state", d->dir);
    cr_assert_eq(mkdir(d->wf, 0755), 0);
    char plugins[400];
    lh_plugin_dir(d, (const char *const[]){ "misbehave", NULL }, plugins, sizeof plugins);
    FILE *f = fopen(d->cfg, "w");
    cr_assert(f);
    fprintf(f,
            "socket: %s\nworkflows: %s\nstate: %s\nshutdown_grace: 5s\nplugins: [%s]\n"
            "log: { level: info }\nproviders:\n%s",
            d->sock, d->wf, d->state, plugins, providers);
    cr_assert_eq(fclose(f), 0);
}

Test(chaos, mixed_load_kills_store_faults_and_a_poison_job, .fini = teardown)
{
    for (int c = 0; c < NCONNS; c++)
        R.conns[c].fd = -1;
    const char *env = getenv("LOOM_CHAOS_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 0) : 1;
    env = getenv("LOOM_CHAOS_SECONDS");
    int seconds = env && atoi(env) > 0 ? atoi(env) : DEFAULT_SECONDS;
    fprintf(stderr, "test_chaos: seed %" PRIu64 ", %d s of faults\n", seed, seconds);
    uint64_t rng = seed;
    int64_t t_start = lh_now_ms();

    /* ---- the plan, all of it from the seed */
    R.njobs = RATE * seconds;
    R.keys = calloc((size_t)R.njobs + 1, sizeof *R.keys);
    R.redo = calloc((size_t)R.njobs + 1, sizeof *R.redo);
    cr_assert(R.keys && R.redo);
    int total_weight = 0;
    for (int w = 0; w < NWF; w++)
        total_weight += WFS[w].weight;
    for (int k = 0; k < R.njobs; k++) {
        int pick = (int)rng_range(&rng, 0, total_weight - 1), w = 0;
        while (pick >= WFS[w].weight)
            pick -= WFS[w++].weight;
        R.keys[k].wf = w;
        R.keys[k].nitems = w == WF_MAP ? (int)rng_range(&rng, 1, 4) : 0;
        R.keys[k].due_ms = (int64_t)k * 1000 / RATE; /* made absolute below */
    }
    R.keys[R.njobs].wf = WF_POISON;
    int64_t span_ms = (int64_t)seconds * 1000;
    int64_t poison_at = rng_range(&rng, span_ms / 5, span_ms / 2);
    plan_event *plan = R.plan = calloc(4096, sizeof *plan);
    cr_assert(plan);
    int nplan = 0, planned_kills = 0;
    int64_t kill_scale = span_ms / MAX_PLANNED_KILLS > (KILL_GAP_MIN_MS + KILL_GAP_MAX_MS) / 2
                             ? span_ms / MAX_PLANNED_KILLS * 2 / (KILL_GAP_MIN_MS + KILL_GAP_MAX_MS)
                             : 1;
    for (int64_t t = rng_range(&rng, KILL_GAP_MIN_MS, KILL_GAP_MAX_MS) * kill_scale;
         t < span_ms && planned_kills < MAX_PLANNED_KILLS && nplan < 4096;
         t += rng_range(&rng, KILL_GAP_MIN_MS, KILL_GAP_MAX_MS) * kill_scale, planned_kills++)
        plan[nplan++] = (plan_event){ .at_ms = t, .kind = EV_KILL };
    for (int64_t t = rng_range(&rng, FAULT_GAP_MIN_MS, FAULT_GAP_MAX_MS); t < span_ms && nplan < 4094;
         t += rng_range(&rng, FAULT_GAP_MIN_MS, FAULT_GAP_MAX_MS)) {
        int64_t len = rng_range(&rng, FAULT_LEN_MIN_MS, FAULT_LEN_MAX_MS);
        plan[nplan++] = (plan_event){ .at_ms = t, .kind = EV_FAULT,
                                      .line = (int)rng_range(&rng, 0, NFAULT_LINES - 1) };
        plan[nplan++] = (plan_event){ .at_ms = t + len, .kind = EV_HEAL };
        t += len;
    }
    /* in time order (insertion sort: a few hundred events) */
    for (int i = 1; i < nplan; i++)
        for (int j = i; j > 0 && plan[j].at_ms < plan[j - 1].at_ms; j--) {
            plan_event e = plan[j];
            plan[j] = plan[j - 1];
            plan[j - 1] = e;
        }

    /* ---- the servers, the daemon's directory and config */
    setup_daemon("");
    snprintf(R.faults_path, sizeof R.faults_path, "%s/store-faults", R.d.dir);
    cr_assert_eq(setenv("LOOM_TEST_STORE_FAULTS", R.faults_path, 1), 0);
    char providers[4096] = "providers:\n";
    size_t pl = strlen(providers);
    char lat[16], maxs[16];
    snprintf(lat, sizeof lat, "%d", LATENCY_MS);
    snprintf(maxs, sizeof maxs, "%d", seconds * 4 + 900);
    for (int f = 0; f < NFAKES; f++) {
        char logp[400];
        snprintf(logp, sizeof logp, "%s/%s.log", R.d.dir, FAKES[f].name);
        const char *args[16] = { "--latency", lat, "--max-seconds", maxs, "--log", logp };
        int na = 6;
        for (int i = 0; FAKES[f].args[i]; i++)
            args[na++] = FAKES[f].args[i];
        args[na] = NULL;
        cr_assert_eq(fake_server_start(&R.fakes[f], args), 0, "cannot start the fake %s",
                     FAKES[f].name);
        char url[64];
        fake_server_base_url(&R.fakes[f], url, sizeof url);
        pl += (size_t)snprintf(providers + pl, sizeof providers - pl,
                               "  %s: { plugin: openai, base_url: \"%s\", limits: { concurrency: 64 } }\n",
                               FAKES[f].name, url);
    }
    lh_config_replace(&R.d, "providers:\n", providers);
    for (int w = 0; w <= NWF; w++)
        lh_workflow(&R.d, WFS[w].name, WFS[w].yaml);
    R.quarantine = probe_quarantine();
    if (!R.quarantine)
        fprintf(stderr, "test_chaos: poison job: quarantine not built yet (loomd --check refuses "
                        "quarantine_after); the poison job is not submitted\n");

    /* ---- the faults */
    R.up = daemon_start();
    cr_assert(R.up, "loomd died at its first start; see %s/loomd.log", R.d.dir);
    int64_t t0 = lh_now_ms();
    for (int k = 0; k < R.njobs; k++)
        R.keys[k].due_ms += t0;
    int kills_done = 0, windows_done = 0;
    bool faulty = false;
    for (int e = 0; e < nplan; e++) {
        int64_t at = t0 + plan[e].at_ms;
        if (R.quarantine && !R.poison_sent && t0 + poison_at <= at) {
            pump_until(t0 + poison_at);
            redo_push(R.njobs, 0);
            R.poison_sent = true;
        }
        pump_until(at);
        switch (plan[e].kind) {
        case EV_KILL:
            kill_daemon();
            kills_done++;
            break;
        case EV_FAULT: {
            char text[64];
            snprintf(text, sizeof text, "%s\n", FAULT_LINES[plan[e].line]);
            write_faults(text);
            faulty = true;
            windows_done++;
            break;
        }
        case EV_HEAL:
            write_faults("heal\n");
            faulty = false;
            break;
        }
    }
    if (faulty)
        write_faults("heal\n");
    if (R.quarantine && !R.poison_sent) {
        redo_push(R.njobs, 0);
        R.poison_sent = true;
    }
    pump_until(t0 + span_ms);
    int64_t t_faults_over = lh_now_ms();

    /* ---- every key acknowledged, every job final: waits on the state, each
     * bounded by how long the workflows let one job go without an end */
    int want_acked = R.njobs + (R.poison_sent ? 1 : 0);
    int last_acked = -1;
    long last_left = -1;
    int64_t progress_ms = lh_now_ms();
    for (;;) {
        pump_once(20);
        long left = R.up && R.acked == want_acked ? unfinished_jobs() : -1;
        if (left == 0)
            break;
        if (R.acked != last_acked || (left >= 0 && left != last_left)) {
            last_acked = R.acked;
            last_left = left;
            progress_ms = lh_now_ms();
        }
        cr_assert(lh_now_ms() - progress_ms < PROGRESS_BOUND_MS,
                  "no progress for %d ms: %d of %d submits acknowledged, %ld jobs unfinished "
                  "(see %s/loomd.log)", PROGRESS_BOUND_MS, R.acked, want_acked, left, R.d.dir);
        if (left > 0)
            poll(NULL, 0, 200); /* the interval of a loop that tests the store itself */
    }
    int64_t t_done = lh_now_ms();
    sample_stats();
    for (int c = 0; c < NCONNS; c++)
        client_lost(c);
    cr_assert_eq(lh_stop(&R.d, SIGTERM), 0, "loomd did not stop cleanly; see %s/loomd.log", R.d.dir);
    R.up = false;
    /* answers in flight when the daemon stopped are logged when they fall due */
    for (int f = 0; f < NFAKES; f++) {
        int64_t until = lh_now_ms() + 10000;
        long inflight;
        while ((inflight = fake_server_stat(&R.fakes[f], "in_flight")) != 0) {
            cr_assert(lh_now_ms() < until, "the fake %s still holds %ld answers", FAKES[f].name,
                      inflight);
            poll(NULL, 0, 10); /* the interval of a loop that tests the state itself */
        }
    }

    /* ---- the verdict */
    verdict v;
    check_store(&v);
    log_figures lf;
    crash_answer *ans = NULL;
    size_t nans = read_answers(&ans, &lf);
    crash_paid p;
    crash_count_paid(ans, nans, R.kills, R.nkills, &p);
    long committed_checked = crash_check_committed(ans, nans, R.kills, R.nkills);
    crash_answers_free(ans, nans);
    int ours = 0, deaths_own = 0, explained = 0;
    for (int k = 0; k < R.nkills; k++) {
        ours += R.ours[k];
        deaths_own += !R.ours[k];
        explained += p.resent_at[k];
    }
    int armed = lh_log_count(&R.d, "test hook: store faults armed", NULL);

    char codes[400] = "";
    size_t cl = 0;
    for (int i = 0; i < v.ncodes; i++)
        cl += (size_t)snprintf(codes + cl, sizeof codes - cl, "%s%s %d", i ? ", " : "",
                               v.codes[i].code, v.codes[i].n);
    char refused[400] = "";
    cl = 0;
    for (int i = 0; i < R.nerrs; i++)
        cl += (size_t)snprintf(refused + cl, sizeof refused - cl, "%s%s %d", i ? ", " : "",
                               R.errs[i].code, R.errs[i].n);
    char perwf[600] = "";
    cl = 0;
    for (int w = 0; w < NWF; w++)
        cl += (size_t)snprintf(perwf + cl, sizeof perwf - cl, "%s%s %d/%d/%d", w ? ", " : "",
                               WFS[w].name, v.per_wf[w].jobs, v.per_wf[w].succeeded,
                               v.per_wf[w].failed_allowed);
    char byfake[400] = "";
    cl = 0;
    for (int f = 0; f < NFAKES; f++)
        cl += (size_t)snprintf(byfake + cl, sizeof byfake - cl, "%s%s %ld", f ? ", " : "",
                               FAKES[f].name, lf.by_fake[f]);
    char *block = NULL;
    size_t blocklen = 0;
    FILE *fb = open_memstream(&block, &blocklen);
    cr_assert(fb);
    fprintf(fb,
            "test_chaos figures:\n"
            "  seed                 %" PRIu64 " (reproduce with LOOM_CHAOS_SEED=%" PRIu64
            " LOOM_CHAOS_SECONDS=%d)\n"
            "  seconds              %d of faults; all final %.1f s after them; %.1f s in all\n"
            "  jobs submitted       %d of %d keys + %s poison job (%d submits sent, %d again after a kill"
            " or a refusal; %d answered \"existed\")\n"
            "  refused submits      %s%s\n"
            "  jobs acknowledged    %d of %d\n"
            "  in the store         %d rows, %d final, %d missing, %d without our key, %d doubled\n"
            "  succeeded            %d (%d with a wrong outcome%s%s)\n"
            "  failed by code       %s\n"
            "  per workflow         jobs/succeeded/failed as allowed: %s\n"
            "  kills                %d SIGKILLs (%d planned); %d deaths by itself (poison)\n"
            "  store fault windows  %d (%d lines armed in loomd's log, restarts included);"
            " held-write retries %ld (stats of %d lives, %d missed)\n"
            "  calls made           %ld (%s): %ld whole answers, %ld cut or stalled, %ld errors"
            " (%ld 429, %ld 5xx, %ld dropped, %ld other)\n"
            "  steps answered       %d (%d once); answered twice or more %d; their repeat answers:"
            " %d explained by a death, %d unexplained%s%s\n"
            "  answers nobody read  %ld\n"
            "  store at deaths      %ld answered steps committed in all, each answered before"
            " its death\n"
            "  poison job           %s; restarts caused by it %d (quarantine_after %d)\n"
            "  loomd's log          %s/loomd.log (kept with LOOM_KEEP_TMP=1)\n",
            seed, seed, seconds, seconds, (double)(t_done - t_faults_over) / 1000.0,
            (double)(lh_now_ms() - t_start) / 1000.0, R.next_fresh, R.njobs, R.poison_sent ? "1" : "no", R.sends,
            R.resent, R.existed, R.nerrs ? refused : "none",
            R.odd_errors ? " (unexpected: " : "", R.acked, want_acked, v.rows, v.final,
            v.missing, v.unkeyed, v.dup, v.succeeded, v.wrong, v.wrong ? "; first: " : "",
            v.first_bad, v.ncodes ? codes : "none", perwf, ours, planned_kills, deaths_own,
            windows_done, armed, R.held_tries, ours + 1, R.stats_missed, lf.lines, byfake, lf.good,
            lf.faulty, lf.errors, lf.r429, lf.r5xx, lf.dropped, lf.other, p.steps, p.once, p.twice + p.more, explained, p.unjustified,
            p.unjustified ? "; first: " : "", p.first_bad, lf.unread_good, committed_checked,
            !R.poison_sent ? "not submitted: quarantine not built yet" : v.poison_state,
            deaths_own, QUARANTINE_AFTER, R.d.dir);
    if (R.odd_errors)
        fprintf(fb, "  unexpected refusal   %s\n", R.last_odd);
    cr_assert_eq(fclose(fb), 0);
    /* Criterion writing TAP to stdout (make check) swallows the tests'
     * stderr: the figures also go to a file in the working directory */
    fputs(block, stderr);
    FILE *ff = fopen("test_chaos.figures", "w");
    if (ff) {
        fputs(block, ff);
        fclose(ff);
    }
    free(block);

    cr_assert_eq(R.odd_errors, 0, "%d submits refused for another reason than the store; last: %s",
                 R.odd_errors, R.last_odd);
    cr_assert_eq(R.acked, want_acked);
    cr_assert_eq(v.missing, 0, "%d acknowledged jobs are not in the store; first: %s", v.missing,
                 v.first_bad);
    cr_assert_eq(v.dup + v.unkeyed, 0, "jobs doubled or unknown; first: %s", v.first_bad);
    cr_assert_eq(v.rows, want_acked, "%d jobs in the store for %d keys", v.rows, want_acked);
    cr_assert_eq(v.final, v.rows, "%d jobs are not final", v.rows - v.final);
    cr_assert_eq(v.wrong, 0, "%d jobs ended wrong; first: %s", v.wrong, v.first_bad);
    cr_assert_gt(v.per_wf[WF_RESCUED].jobs + v.per_wf[WF_CHAIN].jobs, 0);
    cr_assert_eq(p.unanswered, 0);
    cr_assert_eq(p.unjustified, 0, "%d steps were answered again with no death to explain it; "
                                   "first: %s", p.unjustified, p.first_bad);
    /* the rule is not vacuous (the store's keys and the header's are the
     * same strings) once a run is long enough for its kills to land among
     * committed steps */
    if (seconds >= 10)
        cr_assert_gt(committed_checked, 0, "no death found an answered step in the store: the "
                                           "repeat rule proved nothing");
    cr_assert_eq(ours, planned_kills);
    if (R.quarantine) {
        cr_assert(v.poison_quarantined, "the poison job is %s, not failed with crashed",
                  v.poison_state[0] ? v.poison_state : "not in the store");
        cr_assert(deaths_own >= 1 && deaths_own <= QUARANTINE_AFTER,
                  "the poison job caused %d restarts (quarantine_after %d)", deaths_own,
                  QUARANTINE_AFTER);
    } else {
        /* TODO: once quarantine (quarantine_after, error code "crashed")
         * lands, probe_quarantine finds it and the poison job is submitted
         * and asserted above; until then no death of its own is allowed. */
        cr_assert_eq(deaths_own, 0, "loomd died %d times by itself with no poison job; see %s/loomd.log",
                     deaths_own, R.d.dir);
    }
}
