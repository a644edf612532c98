/* loomd_files.c -- the files loomd writes besides its state: the log file
 * (log.file) and the pid file (pid_file).
 *
 * The log file is opened before any thread starts and replaces stderr
 * (daemon/core/log_file.c), so a detached daemon leaves the terminal that
 * started it alone; SIGHUP opens the configured path again, which is all
 * logrotate needs (docs/operations.md). The pid file is written once the
 * socket is bound, so its existence never promises a daemon that could not
 * start, and removed at a clean stop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/loomd.h"
#include "daemon/pidfile.h"

/* "FILE:LINE:COL: " of KEY in the config, for errors about it. */
static void where(const loomd *d, const config_path_key *k, char *out, size_t outlen)
{
    if (d->config_path && k->line > 0)
        snprintf(out, outlen, "%s:%d:%d: ", d->config_path, k->line, k->col);
    else
        *out = '\0';
}

int loomd_log_start(loomd *d)
{
    const config_path_key *k = &d->cfg->log_file;
    if (!k->path)
        return 0;
    int fd = log_file_open(k->path);
    if (fd < 0 || log_file_use(fd, true) < 0) {
        char at[512];
        int e = errno;
        where(d, k, at, sizeof at);
        /* stderr is still the terminal (or whatever started loomd) */
        fprintf(stderr, "%serror: cannot open the log file '%s': %s\n", at, k->path, strerror(e));
        return -1;
    }
    return 0;
}

void loomd_log_reopen(loomd *d, const config_path_key *k)
{
    if (!k->path)
        return;
    int fd = log_file_open(k->path);
    if (fd < 0 || log_file_use(fd, true) < 0) {
        char at[512];
        int e = errno;
        where(d, k, at, sizeof at);
        log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "file", k->path),
                  "%scannot open the log file again: %s; the log stays where it was", at,
                  strerror(e));
    }
}

int loomd_pidfile_start(loomd *d)
{
    const config_path_key *k = &d->cfg->pid_file;
    if (!k->path)
        return 0;
    char err[256], at[512];
    pid_t stale = 0;
    if (!(d->pidfile = pidfile_create(k->path, &stale, err, sizeof err))) {
        where(d, k, at, sizeof at);
        log_write(&d->log, LOOM_LOG_ERROR, json_pack("{s:s}", "file", k->path),
                  "%serror: pid file '%s': %s", at, k->path, err);
        return -1;
    }
    if (stale)
        log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:s, s:I}", "file", k->path, "stale_pid",
                                                    (json_int_t)stale),
                  "replaced a stale pid file: pid %ld did not remove it", (long)stale);
    return 0;
}

void loomd_pidfile_stop(loomd *d)
{
    pidfile_remove(d->pidfile);
    d->pidfile = NULL;
}
