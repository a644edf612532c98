/* engine_tokens.c -- token streams: a job's chat calls hand the text they
 * stream to whoever reads the job's tokens (engine_job_set_tokens).
 *
 * The decision to stream is made as each call starts, so a call asks for a
 * stream only while someone reads: nobody pays for the framing, and no
 * provider sees a streamed request, when nobody watches. The leaf's
 * activation is the upstream call's token context: it outlives the call
 * (withdrawing the call is part of freeing it), so no token can reach a
 * freed activation. */
#include "daemon/engine/engine_internal.h"

void engine_job_set_tokens(engine_job_t *job, engine_token_fn fn, void *ud)
{
    job->token = fn;
    job->token_ud = ud;
}

static void on_token(void *ud, const char *text, size_t len)
{
    act_t *a = ud;
    engine_job_t *job = a->job;
    if (!job->token)
        return; /* its reader left while the answer streamed */
    engine_token t = { .node = a->node->path, .key = step_key(a), .attempt = a->attempt,
                       .text = text, .len = len };
    job->token(job->token_ud, &t);
}

void tokens_call_info(act_t *a, upstream_call_info *info)
{
    if (!a->job->token || a->node->kind != DSL_CALL)
        return;
    info->token = on_token;
    info->token_ud = a;
}
