/* trace_span.c -- one span being built: ids, times, status, and its
 * attributes kept in OTLP's own KeyValue shape, so the exporter only wraps
 * them (see trace.h). */
#include "daemon/trace/trace.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t trace_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

trace_span *trace_span_new(const char *name, trace_kind kind, const trace_ctx *ctx,
                           const uint8_t *parent_id, uint64_t start_ns)
{
    trace_span *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name)) || !(s->attrs = json_array())) {
        trace_span_free(s);
        return NULL;
    }
    s->kind = kind;
    memcpy(s->trace_id, ctx->trace_id, TRACE_ID_SIZE);
    memcpy(s->span_id, ctx->span_id, TRACE_SPAN_ID_SIZE);
    if (parent_id) {
        memcpy(s->parent_id, parent_id, TRACE_SPAN_ID_SIZE);
        s->has_parent = true;
    }
    s->start_ns = start_ns;
    return s;
}

void trace_span_free(trace_span *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->message);
    json_decref(s->attrs);
    free(s);
}

/* Appends {key: KEY, value: VALUE} (VALUE stolen). */
static void attr_add(trace_span *s, const char *key, json_t *value)
{
    if (!s || !value) {
        json_decref(value);
        return;
    }
    json_array_append_new(s->attrs, json_pack("{s:s, s:o}", "key", key, "value", value));
}

void trace_span_str(trace_span *s, const char *key, const char *value)
{
    if (value)
        attr_add(s, key, json_pack("{s:s}", "stringValue", value));
}

void trace_span_int(trace_span *s, const char *key, int64_t value)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, value); /* int64 is a string in OTLP JSON */
    attr_add(s, key, json_pack("{s:s}", "intValue", buf));
}

void trace_span_double(trace_span *s, const char *key, double value)
{
    attr_add(s, key, json_pack("{s:f}", "doubleValue", value));
}

void trace_span_bool(trace_span *s, const char *key, bool value)
{
    attr_add(s, key, json_pack("{s:b}", "boolValue", value));
}

void trace_span_strs1(trace_span *s, const char *key, const char *value)
{
    if (value)
        attr_add(s, key, json_pack("{s:{s:[{s:s}]}}", "arrayValue", "values", "stringValue",
                                   value));
}

void trace_span_fail(trace_span *s, const char *type, const char *message)
{
    if (!s)
        return;
    s->error = true;
    free(s->message);
    s->message = message ? strdup(message) : NULL;
    trace_span_str(s, "error.type", type);
}
