/* crash_count.h -- the exact count of calls paid twice in the crash test.
 *
 * The fake server logs every answer with the request's Loom-Step-Key and
 * its times (CLOCK_MONOTONIC, shared with the test); the job is the input
 * the prompt echoes, so a step is "JOB\tKEY". After each kill -9, before the
 * restart, the store's `steps` rows are recorded: exactly what was committed
 * when the daemon died. A step answered twice is justified only by a kill K
 * whose death came after the first answer, at which the step was not in the
 * store, and after whose restart the second request arrived; a third answer
 * needs a later kill of its own. Answers written after the daemon died were
 * read by nobody and are counted apart.
 *
 * Functions fail the test (cr_assert) on anything unreadable. */
#ifndef LOOM_TESTS_CRASH_COUNT_H
#define LOOM_TESTS_CRASH_COUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRASH_MAX_KILLS 64

/* One kill: the times around it (CLOCK_MONOTONIC, microseconds) and the
 * steps the store held when the daemon died ("JOB\tKEY", sorted, owned). */
typedef struct crash_kill {
    int64_t sent_us;       /* read right before kill(SIGKILL) */
    int64_t dead_us;       /* read right after waitpid saw the death */
    int64_t restart_us;    /* read right before the next loomd was forked */
    char **committed;
    size_t ncommitted;
} crash_kill;

/* One successful chat answer of the fake server's log. */
typedef struct crash_answer {
    char *step;            /* "JOB\tKEY", owned */
    int64_t received_us, answered_us;
    bool delivered;        /* false: the daemon had died, nobody read it */
} crash_answer;

/* The figures of the count. */
typedef struct crash_paid {
    int steps;                 /* distinct steps answered */
    int once, twice, more;     /* steps by answers the daemon read */
    int unanswered;            /* steps never answered to a daemon (must be 0) */
    int orphaned;              /* answers written after the daemon died */
    int unjustified;           /* repeats no kill explains (must be 0) */
    char first_bad[512];
    int resent_at[CRASH_MAX_KILLS];   /* second answers justified by each kill */
    int inflight_at[CRASH_MAX_KILLS]; /* answered before the kill, not committed at it */
    int orphaned_at[CRASH_MAX_KILLS]; /* received before the kill, answered after it */
} crash_paid;

/* Records in K the steps of the store's database at PATH, opened read-only:
 * called after the daemon died and before the next one starts, so nobody
 * writes meanwhile and this is what was committed at the kill. With
 * ANSWERED_ONLY, only steps that ended with an answer (a failed step has
 * none to pay twice). */
void crash_record_committed(crash_kill *k, const char *path, bool answered_only);
void crash_kill_free(crash_kill *k);

/* The fake server's log at PATH into *OUT (owned: crash_answers_free),
 * sorted by step then answer time; returns their number. JOBS[k] is the job
 * of input "kNNNN" (NJOBS of them). */
size_t crash_read_answers(const char *path, const char *const *jobs, int njobs,
                          crash_answer **out);
void crash_answers_free(crash_answer *a, size_t n);

/* Justifies every answer after a step's first by one of KILLS (NKILLS at
 * most CRASH_MAX_KILLS), filling P. */
void crash_count_paid(const crash_answer *a, size_t n, const crash_kill *kills, int nkills,
                      crash_paid *p);

/* Checks that every step the store held at a kill had an answer the daemon
 * read before it died; returns the steps checked. */
long crash_check_committed(const crash_answer *a, size_t n, const crash_kill *kills, int nkills);

#endif
