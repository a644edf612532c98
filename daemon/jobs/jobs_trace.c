/* jobs_trace.c -- a job's own span, and the trace context it hands its run
 * (daemon/trace; the spans of its nodes and calls are the engine's).
 *
 * The job span covers the job from its acceptance to its end, so the time it
 * waited in the queue shows in the trace. It is made only at a real end (a
 * success, a failure, a cancel), never when the daemon abandons a running
 * job at shutdown: that job resumes later, under the same job span (its id
 * derives from the trace and the job's id, trace.h), whose end the process
 * that finishes it reports. A job submitted without a traceparent while
 * tracing is on gets one made at submit, stored with it, for the same
 * reason: the trace survives restarts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"
#include "daemon/jobs/jobs_internal.h"

char *jobs_trace_parent_for(const jobs_t *js, const char *given)
{
    if (given)
        return strdup(given);
    if (!js->tracer)
        return NULL;
    trace_ctx root;
    char tp[TRACE_PARENT_LEN + 1];
    trace_make_root(&root, trace_sample_ratio(js->tracer));
    trace_format(&root, tp);
    return strdup(tp);
}

int jobs_trace_set(ljob *j, const char *traceparent, int64_t accepted_ms)
{
    free(j->traceparent);
    j->traceparent = traceparent ? strdup(traceparent) : NULL;
    j->accepted_ns = accepted_ms > 0 ? (uint64_t)accepted_ms * 1000000u : trace_now_ns();
    return traceparent && !j->traceparent ? -1 : 0;
}

bool jobs_trace_context(const jobs_t *js, ljob *j, trace_ctx *out)
{
    trace_ctx stored;
    const char *why;
    if (!j->traceparent || trace_parse(j->traceparent, &stored, &why) < 0) {
        if (!js->tracer)
            return false;
        /* tracing was off when it was submitted: a trace kept in memory,
         * for this run's spans and its end's */
        char tp[TRACE_PARENT_LEN + 1];
        trace_make_root(&stored, trace_sample_ratio(js->tracer));
        trace_format(&stored, tp);
        free(j->traceparent);
        j->traceparent = strdup(tp);
    }
    if (!js->tracer) {
        *out = stored; /* nothing recorded: the submitter's context goes on as is */
        return true;
    }
    bool has_parent;
    uint8_t parent[TRACE_SPAN_ID_SIZE];
    trace_job_context(&stored, j->id, out, &has_parent, parent);
    return true;
}

/* Adds up member KEY of every provider's usage in USAGE ({P: {...}}). */
static int64_t usage_sum(const json_t *usage, const char *key)
{
    int64_t sum = 0;
    const char *p;
    json_t *u;
    json_object_foreach((json_t *)usage, p, u) sum += json_integer_value(json_object_get(u, key));
    return sum;
}

void jobs_trace_end(jobs_t *js, const ljob *j, const store_outcome_t *out)
{
    trace_ctx stored, job;
    const char *why;
    if (!js->tracer || !j->traceparent || trace_parse(j->traceparent, &stored, &why) < 0 ||
        !(stored.flags & TRACE_FLAG_SAMPLED))
        return;
    bool has_parent;
    uint8_t parent[TRACE_SPAN_ID_SIZE];
    trace_job_context(&stored, j->id, &job, &has_parent, parent);
    char name[300];
    snprintf(name, sizeof name, "invoke_workflow %s", j->workflow);
    trace_span *s = trace_span_new(name, TRACE_KIND_INTERNAL, &job, has_parent ? parent : NULL,
                                   j->accepted_ns);
    if (!s)
        return;
    trace_span_str(s, "gen_ai.operation.name", "invoke_workflow");
    trace_span_str(s, "gen_ai.workflow.name", j->workflow);
    trace_span_str(s, "loom.job.id", j->id);
    trace_span_str(s, "loom.workflow", j->workflow);
    trace_span_str(s, "loom.workflow.version", j->g ? j->g->version : NULL);
    trace_span_str(s, "loom.tenant", j->tenant && j->tenant->name ? j->tenant->name : "default");
    trace_span_str(s, "loom.job.state", store_state_name(out->state));
    if (json_object_size(out->usage)) {
        trace_span_int(s, "gen_ai.usage.input_tokens", usage_sum(out->usage, "input_tokens"));
        trace_span_int(s, "gen_ai.usage.output_tokens", usage_sum(out->usage, "output_tokens"));
    }
    if (out->has_cost)
        trace_span_double(s, "loom.cost_usd", out->cost);
    if (out->state != STORE_SUCCEEDED) {
        const char *code = json_string_value(json_object_get(out->error, "code"));
        trace_span_fail(s, code ? code : store_state_name(out->state),
                        json_string_value(json_object_get(out->error, "message")));
    }
    s->end_ns = trace_now_ns();
    trace_submit(js->tracer, s);
}
