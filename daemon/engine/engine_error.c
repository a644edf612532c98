/* engine_error.c -- the engine's errors: one allocation holding the strings,
 * so an error moves from a leaf to its parent, a fallback or the job by
 * pointer, and frees with one call. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

static eerr *eerr_make(dsl_error_class cls, const char *code, const char *node, int attempts,
                       const char *msg)
{
    if (!code)
        code = dsl_error_class_name(cls);
    if (!node)
        node = "";
    size_t lc = strlen(code) + 1, ln = strlen(node) + 1, lm = strlen(msg) + 1;
    eerr *e = calloc(1, sizeof *e + lc + ln + lm);
    if (!e)
        return NULL;
    char *p = (char *)(e + 1);
    memcpy(p, code, lc);
    e->pub.code = p;
    memcpy(p + lc, node, ln);
    e->pub.node = p + lc;
    memcpy(p + lc + ln, msg, lm);
    output_text_fix(p + lc + ln); /* a plugin's bytes, or a cut at 1024 */
    output_text_fix(p + lc);      /* a workflow path holds keys */
    e->pub.message = p + lc + ln;
    e->pub.cls = cls;
    e->pub.attempts = attempts;
    return e;
}

eerr *eerr_new(dsl_error_class cls, const char *code, const char *node, int attempts,
               const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return eerr_make(cls, code, node, attempts, msg);
}

void eerr_free(eerr *e) { free(e); }

eerr *eerr_oom(const act_t *a)
{
    return eerr_new(DSL_ERR_FAILED, "out_of_memory", a ? a->node->path : "", a ? a->attempt : 0,
                    "out of memory");
}

json_t *eerr_slot_json(const eerr *err)
{
    return json_pack("{s:{s:s, s:s}}", "error", "code", err->pub.code, "message",
                     err->pub.message);
}

json_t *engine_error_json(const engine_error *err)
{
    if (!err)
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:i}", "code", err->code, "message", err->message,
                     "node", err->node, "attempts", err->attempts);
}
