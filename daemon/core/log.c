/* log.c -- see log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/containers.h"
#include "daemon/core/log.h"

const char *log_level_name(int level)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    return level >= 0 && level < 4 ? names[level] : "info";
}

bool log_enabled(const log_sink *l, int level)
{
    return l && level <= l->level;
}

/* A value for text lines: bare when it is a plain word, else JSON-quoted, so
 * a line can always be split back into its fields. */
static char *text_value(json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        bool bare = *s != '\0';
        for (const char *p = s; *p && bare; p++)
            bare = *p > ' ' && *p != '"' && *p != '=' && *p < 127;
        if (bare)
            return strdup(s);
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

void log_write(const log_sink *l, int level, json_t *fields, const char *fmt, ...)
{
    if (!log_enabled(l, level)) {
        json_decref(fields);
        return;
    }
    char msg[1024], stamp[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    sbuf line = SBUF_INIT;
    if (l->json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "time", stamp, "level", log_level_name(level),
                              "msg", msg);
        if (o && fields)
            json_object_update_missing(o, fields);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        sbuf_adds(&line, s ? s : "{\"level\":\"error\",\"msg\":\"out of memory while logging\"}");
        free(s);
        json_decref(o);
    } else {
        sbuf_addf(&line, "%s %-5s %s", stamp, log_level_name(level), msg);
        const char *k;
        json_t *v;
        json_object_foreach(fields, k, v) {
            char *t = text_value(v);
            sbuf_addf(&line, " %s=%s", k, t ? t : "?");
            free(t);
        }
    }
    sbuf_addc(&line, '\n');
    /* one write: lines from several threads never interleave; a line cut
     * short by a failed allocation is not written at all */
    for (size_t off = 0; !line.failed && off < line.n;) {
        ssize_t w = write(l->fd, line.p + off, line.n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    sbuf_free(&line);
    json_decref(fields);
}
