/* log.h -- the daemon's log: one line per event on stderr, or in a file.
 *
 * Owns: nothing but the line it is formatting; the sink is the caller's.
 * May call: libc, jansson and common/; the plugin ABI header for its log
 * levels only.
 * Must never call: any other module of Loom: every module may log through
 * it, so it depends on none of them.
 *
 * Text by default ("2026-11-23T07:50:00.123Z info job finished job=01JD...
 * state=succeeded"), or one JSON object per line ({"time", "level", "msg",
 * ...fields}) for machines. stderr by default, because journald (or whoever
 * started the daemon) keeps it; a file (log.file) where nobody does, reopened
 * on SIGHUP so it can be rotated (log_file.c).
 *
 * What never goes in: API keys (nothing here ever sees one) and prompt or
 * output bodies, which callers include only when log.payloads is set.
 *
 * Threads: any thread; one line is one write(2), so lines never interleave. */
#ifndef LOOM_DAEMON_LOG_H
#define LOOM_DAEMON_LOG_H

#include <jansson.h>
#include <stdbool.h>

#include "loom/plugin.h" /* LOOM_LOG_ERROR .. LOOM_LOG_DEBUG */

typedef struct log_sink {
    int level;                 /* lines above it are dropped */
    bool json;
    int fd;                    /* 2: stderr, or the log file put there (log_file_use) */
} log_sink;

/* Writes MSG (printf-style) at LEVEL with FIELDS (stolen; may be NULL): an
 * object whose members become key=value pairs (text) or JSON members. */
void log_write(const log_sink *l, int level, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Whether LEVEL would be written (to skip building fields). */
bool log_enabled(const log_sink *l, int level);

/* "error", "warn", "info", "debug". */
const char *log_level_name(int level);

/* ---- log_file.c: the log in a file (log.file) */

/* Opens PATH to append the log to, creating it (0640). The new descriptor
 * is the caller's, or -1 with errno. */
int log_file_open(const char *path);

/* Points stderr, which the sink writes to, at FD (taken, even on failure):
 * the log and whatever else is written to stderr (plugins, libc, helpers
 * started from now on) goes to that file, and nothing to the terminal that
 * started the daemon. With STDOUT_TOO, stdout goes to /dev/null. The swap is
 * atomic, so threads logging meanwhile write whole lines to the old file or
 * the new: a reopen after rotation is safe at any time. 0 or -1 (errno;
 * stderr unchanged). */
int log_file_use(int fd, bool stdout_too);

#endif
