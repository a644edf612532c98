/* store_faults_env.c -- see store_faults_env.h. Tests only.
 *
 * A file rather than a signal or a socket op: a test can change it at any
 * moment, also while loomd is down between a kill and the next start, and
 * the daemon's protocol grows nothing that production clients could call. */
#include "daemon/store_faults_env.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FAULTS_ENV_VAR "LOOM_TEST_STORE_FAULTS"
#define FAULTS_ENV_EVERY_US (50 * REACTOR_MSEC)
/* Far more than any schedule a test writes. */
#define FAULTS_ENV_MAX_BYTES 4096

struct faults_env {
    reactor_t *r;
    const log_sink *log;
    store_faults_t *faults;
    reactor_timer_t *timer;
    char *path;
    bool seen;               /* st below holds the last version applied */
    struct stat st;
};

int faults_env_new(reactor_t *r, const log_sink *log, store_options_t *options, faults_env **out)
{
    *out = NULL;
    const char *path = getenv(FAULTS_ENV_VAR);
    if (!path || !*path)
        return 0;
    faults_env *fe = calloc(1, sizeof *fe);
    if (!fe || !(fe->faults = store_faults_new()) || !(fe->path = strdup(path)))
        goto fail;
    fe->r = r;
    fe->log = log;
    options->faults = fe->faults;
    log_write(log, LOOM_LOG_WARN, json_pack("{s:s}", "file", path),
              "test hook: the store's faults follow " FAULTS_ENV_VAR);
    *out = fe;
    return 0;
fail:
    log_write(log, LOOM_LOG_ERROR, NULL, "test hook " FAULTS_ENV_VAR ": out of memory");
    faults_env_free(fe);
    return -1;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int parse_code(const char *word, store_fault_on_t on)
{
    if (strcmp(word, "full") == 0)
        return SQLITE_FULL;
    if (strcmp(word, "ioerr") == 0)
        return on == STORE_FAULT_SYNC ? SQLITE_IOERR_FSYNC : SQLITE_IOERR_WRITE;
    if (strcmp(word, "readonly") == 0)
        return SQLITE_READONLY;
    return -1;
}

static void apply_line(faults_env *fe, const char *line)
{
    char what[16], on_word[16] = "", code_word[16] = "", extra;
    unsigned nth = 0;
    if (sscanf(line, " %15s", what) != 1 || what[0] == '#')
        return;
    if (strcmp(what, "heal") == 0) {
        store_faults_heal(fe->faults);
        log_write(fe->log, LOOM_LOG_WARN,
                  json_pack("{s:I}", "injected", (json_int_t)store_faults_injected(fe->faults)),
                  "test hook: store faults healed");
        return;
    }
    int n = sscanf(line, " fail %15s %u %15s %c", on_word, &nth, code_word, &extra);
    store_fault_on_t on = strcmp(on_word, "sync") == 0 ? STORE_FAULT_SYNC : STORE_FAULT_WRITE;
    int code = n == 3 ? parse_code(code_word, on) : -1;
    if (code < 0 || nth == 0 || (strcmp(on_word, "write") && strcmp(on_word, "sync"))) {
        log_write(fe->log, LOOM_LOG_ERROR, json_pack("{s:s}", "line", line),
                  "test hook: not a store fault line (fail write|sync N full|ioerr|readonly, heal)");
        return;
    }
    store_faults_fail(fe->faults, on, nth, code);
    log_write(fe->log, LOOM_LOG_WARN,
              json_pack("{s:s, s:I, s:s}", "on", on_word, "nth", (json_int_t)nth, "code", code_word),
              "test hook: store faults armed");
}

/* Reads the file when it changed and applies its lines in order. A missing
 * file is no change: the test may not have written it yet. */
static void check_file(faults_env *fe)
{
    struct stat st;
    if (stat(fe->path, &st) < 0 || (fe->seen && same_file(&st, &fe->st)))
        return;
    FILE *f = fopen(fe->path, "r");
    if (!f)
        return;
    char buf[FAULTS_ENV_MAX_BYTES + 1];
    size_t n = fread(buf, 1, FAULTS_ENV_MAX_BYTES, f);
    fclose(f);
    buf[n] = '\0';
    fe->st = st;
    fe->seen = true;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        apply_line(fe, line);
    }
}

static void on_tick(reactor_t *r, reactor_timer_t *t, void *ud)
{
    faults_env *fe = ud;
    (void)t;
    fe->timer = NULL;
    check_file(fe);
    fe->timer = reactor_timer_add(r, FAULTS_ENV_EVERY_US, on_tick, fe);
    if (!fe->timer)
        log_write(fe->log, LOOM_LOG_ERROR, NULL,
                  "test hook " FAULTS_ENV_VAR ": cannot arm the timer: %s", strerror(errno));
}

int faults_env_start(faults_env *fe)
{
    if (!fe)
        return 0;
    check_file(fe);
    fe->timer = reactor_timer_add(fe->r, FAULTS_ENV_EVERY_US, on_tick, fe);
    if (!fe->timer) {
        log_write(fe->log, LOOM_LOG_ERROR, NULL,
                  "test hook " FAULTS_ENV_VAR ": cannot arm the timer: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void faults_env_free(faults_env *fe)
{
    if (!fe)
        return;
    if (fe->timer)
        reactor_timer_cancel(fe->r, fe->timer);
    store_faults_free(fe->faults);
    free(fe->path);
    free(fe);
}
