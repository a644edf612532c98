/* engine_span.c -- the spans of a job's work: one per node run (an
 * activation, all its attempts) and one per provider call attempt, for the
 * tracer the job was given (engine_job_options.tracer; daemon/trace).
 *
 * The tree follows the activations: a node's span is a child of its
 * parent activation's, the root's a child of the job span (whose context
 * the job was given; the job span itself is the jobs module's, which knows
 * when a job really ends). A call span is a child of its leaf's node span,
 * and is what an HTTP provider receives as `traceparent`, so a provider
 * that traces hangs its work under the call that paid for it.
 *
 * Attributes of call spans follow the OpenTelemetry GenAI conventions
 * (gen_ai.*); both gen_ai.provider.name and the older gen_ai.system are
 * set, since collectors and UIs still key on either. Spans are built here,
 * on the reactor thread, and handed over whole (trace_submit never waits
 * for the network). */
#include <stdio.h>
#include <string.h>

#include "daemon/engine/engine_internal.h"

void span_act_begin(act_t *a)
{
    if (!a->job->recording || a->span_open)
        return;
    trace_new_span_id(a->span_id);
    a->span_start_ns = trace_now_ns();
    a->span_open = true;
}

static void act_span_submit(act_t *a, const eerr *err, bool cancelled)
{
    engine_job_t *job = a->job;
    const dsl_node *n = a->node;
    a->span_open = false;
    char name[256];
    snprintf(name, sizeof name, "%s %s", dsl_kind_name(n->kind), n->path);
    trace_ctx ctx = job->span_ctx;
    memcpy(ctx.span_id, a->span_id, TRACE_SPAN_ID_SIZE);
    const uint8_t *parent = a->parent ? a->parent->span_id : job->span_ctx.span_id;
    trace_span *s = trace_span_new(name, TRACE_KIND_INTERNAL, &ctx, parent, a->span_start_ns);
    if (!s)
        return;
    trace_span_str(s, "loom.node.path", n->path);
    trace_span_str(s, "loom.node.kind", dsl_kind_name(n->kind));
    trace_span_str(s, "loom.node.id", n->id);
    trace_span_int(s, "loom.attempts", a->attempt);
    if (a->cached)
        trace_span_bool(s, "loom.cached", true);
    if (a->replayed)
        trace_span_bool(s, "loom.replayed", true);
    if (err)
        trace_span_fail(s, err->pub.code, err->pub.message);
    else if (cancelled)
        trace_span_fail(s, "cancelled", "the node did not finish: its job was cancelled, timed "
                                        "out or stopped");
    s->end_ns = trace_now_ns();
    trace_submit(job->tracer, s);
}

void span_act_end(act_t *a, const eerr *err)
{
    if (a->span_open)
        act_span_submit(a, err, false);
}

void span_act_cancel(act_t *a)
{
    if (a->span_open)
        act_span_submit(a, NULL, true);
}

trace_span *span_call_begin(act_t *a, const pinst_t *inst, const char *model,
                            char tp[TRACE_PARENT_LEN + 1])
{
    engine_job_t *job = a->job;
    tp[0] = '\0';
    if (!job->has_trace)
        return NULL;
    if (!job->recording || !a->span_open) {
        /* nothing recorded here: the job's own context goes on, so the
         * submitter's trace still reaches the provider */
        trace_format(&job->span_ctx, tp);
        return NULL;
    }
    const char *op = a->node->kind == DSL_EMBED ? "embeddings" : "chat";
    char name[256];
    snprintf(name, sizeof name, "%s%s%s", op, model ? " " : "", model ? model : "");
    trace_ctx ctx = job->span_ctx;
    trace_new_span_id(ctx.span_id);
    trace_span *s = trace_span_new(name, TRACE_KIND_CLIENT, &ctx, a->span_id, trace_now_ns());
    if (!s)
        return NULL;
    trace_format(&ctx, tp);
    const char *plugin = inst->prov ? inst->prov->name : NULL;
    trace_span_str(s, "gen_ai.operation.name", op);
    trace_span_str(s, "gen_ai.provider.name", plugin);
    trace_span_str(s, "gen_ai.system", plugin);
    trace_span_str(s, "gen_ai.request.model", model);
    trace_span_str(s, "loom.provider", inst->name);
    trace_span_str(s, "loom.node.path", a->node->path);
    trace_span_int(s, "loom.attempt", a->attempt);
    return s;
}

void span_call_end(engine_job_t *job, trace_span **sp, const engine_call_report *r)
{
    trace_span *s = *sp;
    if (!s)
        return;
    *sp = NULL;
    if (!r) {
        trace_span_fail(s, "cancelled", "the call was withdrawn before it answered");
    } else {
        if (r->input_tokens >= 0)
            trace_span_int(s, "gen_ai.usage.input_tokens", r->input_tokens);
        if (r->output_tokens >= 0)
            trace_span_int(s, "gen_ai.usage.output_tokens", r->output_tokens);
        if (r->cache_read_tokens >= 0)
            trace_span_int(s, "gen_ai.usage.cache_read.input_tokens", r->cache_read_tokens);
        if (r->cache_write_tokens >= 0)
            trace_span_int(s, "gen_ai.usage.cache_creation.input_tokens", r->cache_write_tokens);
        trace_span_strs1(s, "gen_ai.response.finish_reasons", r->finish_reason);
        if (r->cost_usd >= 0)
            trace_span_double(s, "loom.cost_usd", r->cost_usd);
        if (!r->ok)
            trace_span_fail(s, r->error ? r->error : "upstream", r->message);
    }
    s->end_ns = trace_now_ns();
    trace_submit(job->tracer, s);
}
