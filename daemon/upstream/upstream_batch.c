/* upstream_batch.c -- native batching: embedding calls coalesced into one
 * request per batch.
 *
 * One batch is open at a time. A call's inputs join it in order until it
 * holds batch_max_inputs inputs or batch_max_tokens estimated tokens; then
 * it is sent at once and the rest of the call's inputs open the next one. A
 * batch that does not fill is sent when its window (a few ms, from its
 * first input) ends. A call of another model closes the open batch first:
 * one request serves one model.
 *
 * Why one open batch and not one per model: jobs embedding with two models
 * at once are rare, and a single batch keeps the FIFO order of the limiter
 * queue equal to the order calls arrived in. */
#include <errno.h>
#include <string.h>

#include "daemon/upstream/upstream_internal.h"

bool upstream_coalesces(const upstream_t *u, loom_call_kind kind)
{
    return kind == LOOM_CALL_EMBED && u->opt.batch_max_inputs > 0;
}

int64_t batch_input_tokens(json_t *input)
{
    int64_t t = (int64_t)(json_string_length(input) / 4);
    return t > 0 ? t : 1;
}

void batch_flush(upstream_t *u)
{
    xfer *x = u->open_batch;
    if (!x)
        return;
    u->open_batch = NULL;
    x->open = false;
    if (x->window) {
        reactor_timer_cancel(u->r, x->window);
        x->window = NULL;
    }
    u->st.batches++;
    u->st.batched_inputs += x->ninputs;
    xfer_submit_later(x);
}

static void on_window(reactor_t *r, reactor_timer_t *t, void *ud)
{
    xfer *x = ud;
    (void)r;
    (void)t;
    x->window = NULL;
    if (x->u->open_batch == x)
        batch_flush(x->u);
}

static bool same_model(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The open batch for MODEL, opening one (and closing another model's). */
static xfer *open_batch(upstream_t *u, const char *model)
{
    if (u->open_batch && !same_model(u->open_batch->model, model))
        batch_flush(u);
    if (u->open_batch)
        return u->open_batch;
    xfer *x = xfer_new(u, LOOM_CALL_EMBED, model);
    if (!x)
        return NULL;
    x->batch = x->open = true;
    x->window = reactor_timer_add(u->r, u->opt.batch_window_ms * REACTOR_MSEC, on_window, x);
    if (!x->window) {
        xfer_free(x);
        return NULL;
    }
    u->open_batch = x;
    return x;
}

int batch_add(upstream_t *u, upstream_call_t *c, const char *model)
{
    size_t n = json_array_size(c->inputs);
    if (n == 0) {
        call_end_later(c, LOOM_OK, "");
        return 0;
    }
    /* the answer is assembled here, since the parts may arrive apart */
    if (!(c->vectors = json_array()))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(c->vectors, json_null()) < 0)
            return -ENOMEM;
    size_t i = 0;
    while (i < n) {
        xfer *x = open_batch(u, model);
        if (!x)
            return -ENOMEM;
        size_t start = i;
        int64_t tokens = 0;
        /* take inputs while they fit; an empty batch takes at least one */
        while (i < n && (int64_t)(x->ninputs + (i - start)) < u->opt.batch_max_inputs) {
            int64_t t = batch_input_tokens(json_array_get(c->inputs, i));
            if (x->ninputs + (i - start) > 0 && x->est_tokens + tokens + t > u->opt.batch_max_tokens)
                break;
            tokens += t;
            i++;
        }
        if (i > start) {
            if (xfer_add_part(x, c, start, i - start) < 0)
                return -ENOMEM;
            x->est_tokens += tokens;
        }
        if (i < n || (int64_t)x->ninputs >= u->opt.batch_max_inputs)
            batch_flush(u); /* full: the rest goes in the next batch */
    }
    return 0;
}
