/* crash_count.c -- see crash_count.h. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/crash_count.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read-only: SQLite replays the WAL the dead daemon left into its own
 * view, and writes nothing. */
void crash_record_committed(crash_kill *k, const char *path, bool answered_only)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    cr_assert_eq(rc, SQLITE_OK, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
    rc = sqlite3_prepare_v2(db, "SELECT job_id, key, output FROM steps", -1, &st, NULL);
    cr_assert_eq(rc, SQLITE_OK, "cannot read the steps: %s", sqlite3_errmsg(db));
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (answered_only) {
            const char *out = (const char *)sqlite3_column_text(st, 2);
            json_t *rec = out ? json_loads(out, 0, NULL) : NULL;
            bool answered = rec && json_object_get(rec, "output") &&
                            !json_object_get(rec, "error");
            json_decref(rec);
            if (!answered)
                continue;
        }
        if (k->ncommitted == cap) {
            cap = cap ? cap * 2 : 1024;
            k->committed = realloc(k->committed, cap * sizeof *k->committed);
            cr_assert(k->committed);
        }
        char *e = NULL;
        cr_assert(asprintf(&e, "%s\t%s", (const char *)sqlite3_column_text(st, 0),
                           (const char *)sqlite3_column_text(st, 1)) > 0);
        k->committed[k->ncommitted++] = e;
    }
    cr_assert_eq(rc, SQLITE_DONE, "reading the steps: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* none committed yet (an early kill): COMMITTED is NULL, which qsort
     * may not be given even for no elements (UBSan stops the test) */
    if (k->ncommitted > 0)
        qsort(k->committed, k->ncommitted, sizeof *k->committed, cmp_str);
}

static bool committed_at(const crash_kill *k, const char *step)
{
    return k->ncommitted > 0 &&
           bsearch(&step, k->committed, k->ncommitted, sizeof *k->committed, cmp_str) != NULL;
}

static int cmp_answer(const void *a, const void *b)
{
    const crash_answer *x = a, *y = b;
    int c = strcmp(x->step, y->step);
    if (c)
        return c;
    return (x->answered_us > y->answered_us) - (x->answered_us < y->answered_us);
}

size_t crash_read_answers(const char *path, const char *const *jobs, int njobs,
                          crash_answer **out)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "no fake server log at %s", path);
    crash_answer *a = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "an unparsable fake log line: %s", line);
        const char *key = json_string_value(json_object_get(j, "key"));
        const char *echo = json_string_value(json_object_get(j, "echo"));
        int status = (int)json_integer_value(json_object_get(j, "status"));
        cr_assert(key && echo, "a request without a step key: %s", line);
        cr_assert_eq(status, 200, "an answer that was not a success: %s", line);
        size_t el = strlen(echo);
        int k = el >= 5 && echo[el - 5] == 'k' ? atoi(echo + el - 4) : -1;
        cr_assert(k >= 0 && k < njobs && jobs[k][0], "no job for the answer %s", line);
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            a = realloc(a, cap * sizeof *a);
            cr_assert(a);
        }
        a[n] = (crash_answer){ .received_us = json_integer_value(json_object_get(j, "received_us")),
                         .answered_us = json_integer_value(json_object_get(j, "answered_us")),
                         .delivered = json_is_true(json_object_get(j, "delivered")) };
        cr_assert(asprintf(&a[n].step, "%s\t%s", jobs[k], key) > 0);
        n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    qsort(a, n, sizeof *a, cmp_answer);
    *out = a;
    return n;
}

/* The kill a delivered answer at T may have been lost to: the first whose
 * death came after T, or -1. */
static int kill_after(const crash_kill *kills, int nkills, int64_t t)
{
    for (int k = 0; k < nkills; k++)
        if (kills[k].dead_us > t)
            return k;
    return -1;
}

void crash_count_paid(const crash_answer *a, size_t n, const crash_kill *kills, int nkills,
                      crash_paid *p)
{
    memset(p, 0, sizeof *p);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(a[j].step, a[i].step) == 0)
            j++;
        p->steps++;
        const crash_answer *prev = NULL;
        int delivered = 0;
        for (size_t m = i; m < j; m++) {
            const crash_answer *x = &a[m];
            if (!x->delivered) {
                /* nobody read it: the request was in flight at a kill */
                p->orphaned++;
                int k = kill_after(kills, nkills, x->received_us);
                cr_assert(k >= 0 && x->answered_us >= kills[k].sent_us,
                          "an answer nobody read, with no kill to explain it: %s", x->step);
                p->orphaned_at[k]++;
                continue;
            }
            delivered++;
            if (prev) {
                int k = kill_after(kills, nkills, prev->answered_us);
                bool ok = k >= 0 && !committed_at(&kills[k], x->step) &&
                          x->received_us > kills[k].restart_us;
                if (ok) {
                    p->resent_at[k]++;
                } else if (!p->unjustified++) {
                    snprintf(p->first_bad, sizeof p->first_bad,
                             "step '%s' answered at %" PRId64 " and again (asked at %" PRId64
                             ") with %s", x->step, prev->answered_us, x->received_us,
                             k < 0 ? "no kill between"
                             : committed_at(&kills[k], x->step) ? "the step committed at the kill"
                                                                  : "the request before the restart");
                }
            }
            prev = x;
        }
        p->once += delivered == 1;
        p->twice += delivered == 2;
        p->more += delivered > 2;
        p->unanswered += delivered == 0;
        i = j;
    }
    /* in flight at each kill: answered since the last restart, before the
     * death, and not in the store */
    for (size_t i = 0; i < n; i++) {
        if (!a[i].delivered)
            continue;
        int k = kill_after(kills, nkills, a[i].answered_us);
        if (k >= 0 && (k == 0 || a[i].answered_us > kills[k - 1].restart_us) &&
            !committed_at(&kills[k], a[i].step))
            p->inflight_at[k]++;
    }
}

/* Besides being a durability rule of its own, this proves the store's keys
 * and the header's are the same strings: were they not, no repeat could ever
 * be found committed and the count would prove nothing. */
long crash_check_committed(const crash_answer *a, size_t n, const crash_kill *kills, int nkills)
{
    long checked = 0;
    for (int k = 0; k < nkills; k++) {
        const crash_kill *kr = &kills[k];
        for (size_t i = 0; i < kr->ncommitted; i++) {
            const char *step = kr->committed[i];
            /* the first answer of STEP: answers are sorted by step, then time */
            size_t lo = 0, hi = n;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (strcmp(a[mid].step, step) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            bool ok = false;
            for (size_t j = lo; j < n && strcmp(a[j].step, step) == 0 && !ok; j++)
                ok = a[j].delivered && a[j].answered_us < kr->dead_us;
            cr_assert(ok, "step '%s' was in the store at kill %d with no answer read before it", step,
                      k + 1);
            checked++;
        }
    }
    return checked;
}

void crash_kill_free(crash_kill *k)
{
    for (size_t i = 0; i < k->ncommitted; i++)
        free(k->committed[i]);
    free(k->committed);
    k->committed = NULL;
    k->ncommitted = 0;
}

void crash_answers_free(crash_answer *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i].step);
    free(a);
}
