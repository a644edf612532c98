/* test_inflight.c -- the record of plugin code in flight (daemon/core/
 * inflight.h): one slot per thread, the text cut to fit, a torn slot read
 * as nothing, what a previous process left (in flight, clean or not), and
 * the crash handler's note of the signal and the crashing thread's slot. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/core/inflight.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/loom-inflight-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    inflight_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

static void open_ok(unsigned nslots, inflight_prev *prev)
{
    char err[256];
    int rc = inflight_open(dir, nslots, prev, err, sizeof err);
    cr_assert_eq(rc, 0, "inflight_open: %s", err);
}

/* Slot I of the file as it is on disk now. */
static inflight_slot file_slot(int i)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_FILE);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    inflight_slot s;
    off_t at = (off_t)(sizeof(inflight_header) + (size_t)i * sizeof s);
    cr_assert_eq((size_t)pread(fd, &s, sizeof s, at), sizeof s);
    close(fd);
    return s;
}

static void *enter_job_b(void *ud)
{
    (void)ud;
    inflight_enter("JOB-B", "do.chain[1]", "mock", "invoke");
    return NULL; /* left in flight, as a thread that died would */
}

Test(inflight, each_thread_has_its_slot_and_the_previous_run_is_read_back, .init = setup,
     .fini = teardown)
{
    inflight_prev prev;
    open_ok(4, &prev);
    cr_assert(!(prev.found));
    inflight_slot *a = inflight_enter("JOB-A", "do", "misbehave.crash_on", NULL);
    inflight_slot s = file_slot(0);
    cr_assert_str_eq(s.job, "JOB-A");
    cr_assert_str_eq(s.step, "do");
    cr_assert_str_eq(s.fn, "misbehave.crash_on");
    cr_assert_eq(s.seq, 2, "even once written");
    cr_assert_eq(s.tid, (int32_t)gettid());
    inflight_leave(a);
    s = file_slot(0);
    cr_assert_str_eq(s.job, "");
    cr_assert_eq(s.seq, 4);
    /* another thread takes the next slot */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, enter_job_b, NULL), 0);
    pthread_join(t, NULL);
    s = file_slot(1);
    cr_assert_str_eq(s.job, "JOB-B");
    cr_assert_str_eq(s.fn, "mock.invoke");
    /* the process "dies" without its clean exit: the next one reads it */
    inflight_close();
    open_ok(4, &prev);
    cr_assert(prev.found);
    cr_assert(!(prev.clean));
    cr_assert_eq(prev.signal, 0);
    cr_assert_eq(prev.crash_slot, -1);
    cr_assert_eq(prev.pid, getpid());
    cr_assert_eq(prev.n, 1);
    cr_assert_str_eq(prev.entries[0].job, "JOB-B");
    cr_assert_str_eq(prev.entries[0].step, "do.chain[1]");
    cr_assert_eq(prev.entries[0].slot, 1);
    cr_assert_eq((void *)inflight_prev_slot(&prev, 1), (void *)&prev.entries[0]);
    cr_assert_eq((void *)inflight_prev_slot(&prev, 0), NULL);
    inflight_prev_free(&prev);
    /* and the file was reset for this run: nothing in flight now */
    cr_assert_str_eq(file_slot(1).job, "");
    /* a clean exit blames nobody */
    inflight_enter("JOB-C", "do", "x.y", NULL);
    inflight_mark_clean();
    inflight_close();
    open_ok(2, &prev); /* a new size is fine: the record is read first */
    cr_assert(prev.found && prev.clean);
    cr_assert_eq(prev.n, 1, "what was in flight is still told");
    inflight_prev_free(&prev);
}

Test(inflight, a_slot_left_mid_write_is_nothing_in_flight, .init = setup, .fini = teardown)
{
    inflight_prev prev;
    open_ok(2, &prev);
    inflight_enter("JOB-T", "do", "std.trim", NULL);
    inflight_close();
    /* the thread died between the two increments */
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_FILE);
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0);
    uint32_t odd = 3;
    cr_assert_eq((int)pwrite(fd, &odd, sizeof odd, (off_t)sizeof(inflight_header)), 4);
    close(fd);
    open_ok(2, &prev);
    cr_assert(prev.found);
    cr_assert_eq(prev.torn, 1);
    cr_assert_eq(prev.n, 0);
    inflight_prev_free(&prev);
}

Test(inflight, text_is_cut_to_fit_and_a_file_of_another_format_says_nothing, .init = setup,
     .fini = teardown)
{
    char step[1000];
    memset(step, 's', sizeof step - 1);
    step[sizeof step - 1] = '\0';
    inflight_prev prev;
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_FILE);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("not a record of anything", f);
    fclose(f);
    open_ok(1, &prev);
    cr_assert(!(prev.found));
    inflight_enter(NULL, step, step, "invoke");
    inflight_slot s = file_slot(0);
    cr_assert_eq(strlen(s.step), INFLIGHT_STEP_MAX - 1);
    cr_assert_eq(strlen(s.fn), INFLIGHT_FN_MAX - 1);
    cr_assert_str_eq(s.job, "");
    /* a second thread finds no slot left: it writes into a private one */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, enter_job_b, NULL), 0);
    pthread_join(t, NULL);
    inflight_close();
    open_ok(1, &prev);
    cr_assert_eq(prev.n, 0, "slot 0 held no job id, and the other thread had none");
    inflight_prev_free(&prev);
}

Test(inflight, nested_calls_clear_the_slot_when_the_outermost_returns, .init = setup,
     .fini = teardown)
{
    inflight_prev prev;
    open_ok(1, &prev);
    inflight_slot *outer = inflight_enter("JOB-N", "do.chain[0]", "mock", "timer");
    inflight_slot *inner = inflight_enter("JOB-N", "do.chain[1]", "std.trim", NULL);
    cr_assert_str_eq(file_slot(0).step, "do.chain[1]");
    inflight_leave(inner);
    cr_assert_str_eq(file_slot(0).job, "JOB-N", "still inside the timer");
    inflight_leave(outer);
    cr_assert_str_eq(file_slot(0).job, "");
}

Test(inflight, without_a_file_writes_go_to_a_private_slot)
{
    inflight_slot *s = inflight_enter("JOB-P", "do", "std.trim", NULL);
    cr_assert_str_eq(s->job, "JOB-P");
    inflight_leave(s);
    inflight_mark_clean(); /* no-ops */
    inflight_close();
}

Test(inflight, the_crash_handler_notes_the_signal_and_the_crashing_thread, .init = setup,
     .fini = teardown)
{
    inflight_prev prev;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core);
        char err[256];
        if (inflight_open(dir, 2, &prev, err, sizeof err) < 0 ||
            inflight_install_crash_handlers() < 0)
            _exit(3);
        (void)inflight_thread_init();
        inflight_enter("JOB-OTHER", "do", "std.trim", NULL); /* slot 0 */
        pthread_t t;
        pthread_create(&t, NULL, enter_job_b, NULL);        /* slot 1 */
        pthread_join(t, NULL);
        abort(); /* in slot 0's thread */
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st), "the child must die of the signal, status %d", st);
    cr_assert_eq(WTERMSIG(st), SIGABRT);
    open_ok(2, &prev);
    cr_assert(prev.found && !prev.clean);
    cr_assert_eq(prev.signal, SIGABRT);
    cr_assert_eq(prev.crash_slot, 0);
    cr_assert_eq(prev.n, 2);
    const inflight_entry *e = inflight_prev_slot(&prev, prev.crash_slot);
    cr_assert(e);
    cr_assert_str_eq((char *)e->job, "JOB-OTHER");
    char name[32];
    cr_assert_str_eq((char *)inflight_signal_name(prev.signal, name, sizeof name), "SIGABRT");
    inflight_prev_free(&prev);
}

Test(inflight, a_signal_sent_by_another_process_blames_no_thread, .init = setup, .fini = teardown)
{
    inflight_prev prev;
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core);
        char err[256];
        if (inflight_open(dir, 1, &prev, err, sizeof err) < 0 ||
            inflight_install_crash_handlers() < 0)
            _exit(3);
        inflight_enter("JOB-X", "do", "std.trim", NULL);
        (void)!write(ready[1], "r", 1);
        for (;;)
            pause();
    }
    char c;
    cr_assert_eq((int)read(ready[0], &c, 1), 1);
    kill(pid, SIGSEGV);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "status %d", st);
    open_ok(1, &prev);
    cr_assert_eq(prev.signal, SIGSEGV);
    cr_assert_eq(prev.crash_slot, -1);
    inflight_prev_free(&prev);
}
