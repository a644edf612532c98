/* log.h -- the daemon's log: one line per event on stderr.
 *
 * Owns: nothing but the line it is formatting; the sink is the caller's.
 * May call: libc, jansson and common/; the plugin ABI header for its log
 * levels only.
 * Must never call: any other module of Loom: every module may log through
 * it, so it depends on none of them.
 *
 * Text by default ("2026-11-23T07:50:00.123Z info job finished job=01JD...
 * state=succeeded"), or one JSON object per line ({"time", "level", "msg",
 * ...fields}) for machines. stderr because journald (or whoever started the
 * daemon) keeps it; no files to rotate.
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
    int fd;                    /* 2 */
} log_sink;

/* Writes MSG (printf-style) at LEVEL with FIELDS (stolen; may be NULL): an
 * object whose members become key=value pairs (text) or JSON members. */
void log_write(const log_sink *l, int level, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Whether LEVEL would be written (to skip building fields). */
bool log_enabled(const log_sink *l, int level);

/* "error", "warn", "info", "debug". */
const char *log_level_name(int level);

#endif
