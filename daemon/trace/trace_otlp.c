/* trace_otlp.c -- a batch of spans as the JSON mapping of OTLP's
 * ExportTraceServiceRequest (opentelemetry-proto, OTLP/HTTP with
 * `Content-Type: application/json`):
 *
 *   {"resourceSpans": [{"resource": {"attributes": [service.name]},
 *     "scopeSpans": [{"scope": {"name": "loom", "version": V},
 *                     "spans": [...]}]}]}
 *
 * The JSON mapping differs from proto3's usual one in two ways that matter
 * here: trace and span ids are hex strings (not base64), and enums are
 * integers. 64-bit integers (the times) are decimal strings. A root span
 * has no parentSpanId; a successful span leaves its status unset, as the
 * OTel guidance says instrumentation should. */
#include "daemon/trace/trace.h"

#include <inttypes.h>
#include <stdio.h>

#include "config.h"

static json_t *span_json(const trace_span *s)
{
    char tid[2 * TRACE_ID_SIZE + 1], sid[2 * TRACE_SPAN_ID_SIZE + 1];
    char start[24], end[24];
    trace_hex(s->trace_id, TRACE_ID_SIZE, tid);
    trace_hex(s->span_id, TRACE_SPAN_ID_SIZE, sid);
    snprintf(start, sizeof start, "%" PRIu64, s->start_ns);
    snprintf(end, sizeof end, "%" PRIu64, s->end_ns);
    json_t *status = s->error ? json_pack("{s:i, s:s}", "code", 2, "message",
                                          s->message ? s->message : "")
                              : json_object();
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:O, s:o}", "traceId", tid, "spanId",
                          sid, "name", s->name, "kind", (int)s->kind, "startTimeUnixNano", start,
                          "endTimeUnixNano", end, "attributes", s->attrs, "status", status);
    if (o && s->has_parent) {
        char pid[2 * TRACE_SPAN_ID_SIZE + 1];
        trace_hex(s->parent_id, TRACE_SPAN_ID_SIZE, pid);
        if (json_object_set_new(o, "parentSpanId", json_string(pid)) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *trace_otlp_request(const trace_span *first, size_t n, const char *service)
{
    json_t *spans = json_array();
    if (!spans)
        return NULL;
    const trace_span *s = first;
    for (size_t i = 0; i < n && s; i++, s = s->next)
        if (json_array_append_new(spans, span_json(s)) < 0) {
            json_decref(spans);
            return NULL;
        }
    return json_pack("{s:[{s:{s:[{s:s, s:{s:s}}]}, s:[{s:{s:s, s:s}, s:o}]}]}", "resourceSpans",
                     "resource", "attributes", "key", "service.name", "value", "stringValue",
                     service, "scopeSpans", "scope", "name", "loom", "version", PACKAGE_VERSION,
                     "spans", spans);
}
