/* test_loomd_store.c -- a real loomd whose state directory fills up: the
 * promises of docs/operations.md ("When the disk fills") through its
 * socket. Its state directory is a 2 MiB tmpfs, so the test needs root
 * (to mount it); otherwise it says why and skips.
 *
 * The story: a two-step job runs (a quick step, then a 2 s one); while the
 * slow step runs, a file fills the tmpfs. The job's end cannot be written:
 * loomd holds it, refuses new submits with store_unavailable and a retry
 * hint, keeps the waiter waiting and counts nothing as succeeded. Once the
 * file is gone, the end commits by itself: the waiter gets the final
 * state, stats count it, and after a restart nothing is run again. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;
static bool mounted;

static void teardown(void)
{
    if (D.pid > 0)
        lh_stop(&D, SIGKILL);
    if (mounted)
        umount2(D.state, MNT_DETACH);
    lh_teardown(&D);
}

/* A quick step whose output carries the (large) input, then a slow one:
 * each write of this job needs fresh pages, so a full disk refuses it. */
#define BIG_WF                                                                                    \
    "loom: 1\nname: big\n"                                                                        \
    "do:\n  chain:\n    - call: 'fast {{ input.text }}'\n"                                        \
    "    - call: { prompt: 'slowly {{ prev }}', provider: slow }\n"

static const char *code_of(json_t *r)
{
    return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static json_int_t stat_of(json_t *stats, const char *group, const char *name, const char *key)
{
    json_t *g = json_object_get(stats, group);
    if (name)
        g = json_object_get(g, name);
    return json_integer_value(json_object_get(g, key));
}

/* Fills the file system of PATH; returns the descriptor of the filler. */
static int fill_up(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    static char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    cr_assert_eq(errno, ENOSPC, "%s", strerror(errno));
    return fd;
}

Test(loomd_store, a_full_disk_holds_a_job_end_until_space_returns, .fini = teardown,
     .timeout = 90)
{
    lh_setup(&D, NULL, NULL);
    if (geteuid() != 0) {
        printf("skipped: mounting a tmpfs for the state directory needs root\n");
        cr_skip_test("mounting a tmpfs needs root");
    }
    cr_assert_eq(mkdir(D.state, 0700), 0);
    if (mount("loomtest", D.state, "tmpfs", 0, "size=2m,mode=0700") != 0) {
        printf("skipped: cannot mount a tmpfs: %s\n", strerror(errno));
        cr_skip_test("cannot mount a tmpfs");
    }
    mounted = true;
    lh_workflow(&D, "big", BIG_WF);
    lh_start(&D);
    lh_wait_log(&D, "loaded", "workflow=big ", 1, 10000);

    /* 64 KiB of input: the quick step's output, the slow one's and the end
     * each need pages of their own */
    size_t n = 64 * 1024;
    char *text = malloc(n + 1);
    cr_assert(text);
    memset(text, 'y', n);
    text[n] = '\0';
    json_t *req = json_pack("{s:i, s:s, s:s, s:{s:s}, s:b}", "id", 1, "op", "submit", "workflow",
                            "big", "input", "text", text, "wait", 1);
    free(text);
    char *line = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int ev = lh_subscribe(&D);
    int waiter = lh_connect(&D);
    cr_assert(waiter >= 0);
    lh_send(waiter, line);
    free(line);
    json_t *e = lh_wait_event(ev, "step_finished", NULL, 10000); /* the quick step */
    cr_assert(e, "the first step did not finish");
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(e, "job")));
    json_decref(e);

    char fill[400];
    snprintf(fill, sizeof fill, "%s/fill", D.state);
    int fd = fill_up(fill);

    /* the slow step ends: the job is over in memory, not on disk */
    lh_wait_log(&D, "job finished", job, 1, 15000);
    lh_wait_log(&D, "the job store cannot write", "held=", 1, 15000);
    json_t *r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"big\",\"input\":{\"text\":\"x\"}}",
                        5000);
    cr_assert(r, "no reply to a submit while the disk is full");
    cr_assert_str_eq(code_of(r), "store_unavailable", "%s", json_dumps(r, 0));
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(r, "error"),
                                                    "retry_after_ms")), 0);
    json_decref(r);
    char get[256];
    snprintf(get, sizeof get, "{\"op\":\"get\",\"job\":\"%s\"}", job);
    r = lh_call(&D, get, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")),
                     "running", "the store has no end yet: %s", json_dumps(r, 0));
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert_eq(stat_of(r, "jobs", NULL, "succeeded"), 0, "counted before it was committed");
    json_decref(r);

    /* space returns: the held end commits and the waiter has its answer */
    close(fd);
    cr_assert_eq(unlink(fill), 0);
    r = lh_recv(waiter, 20000);
    cr_assert(r, "the waiter was not answered after space returned");
    cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "result"), "state")),
                     "succeeded", "%s", json_dumps(r, 0));
    json_decref(r);
    lh_wait_log(&D, "the job store writes again", NULL, 1, 5000);
    close(waiter);
    close(ev);
    cr_assert_eq(lh_store_steps(&D, job), 2, "both checkpoints are on disk");
    r = lh_call(&D, "{\"op\":\"stats\"}", 5000);
    cr_assert_eq(stat_of(r, "jobs", NULL, "succeeded"), 1, "%s", json_dumps(r, 0));
    cr_assert_eq(stat_of(r, "providers", "slow", "succeeded"), 1, "%s", json_dumps(r, 0));
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"submit\",\"workflow\":\"big\",\"input\":{\"text\":\"x\"}}", 5000);
    cr_assert(json_is_true(json_object_get(r, "ok")), "submits are welcome again: %s",
              json_dumps(r, 0));
    json_decref(r);

    /* nothing of the first job runs again after a restart */
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    lh_start(&D);
    r = lh_call(&D, get, 5000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "job"), "state")),
                     "succeeded");
    json_decref(r);
    cr_assert_eq(lh_log_count(&D, "resuming unfinished jobs", NULL), 0);
}
