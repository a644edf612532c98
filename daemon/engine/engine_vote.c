/* engine_vote.c -- vote: N samples of the body over the same input, their
 * answers (after `key` and `normalize`) tallied as text as they end. The
 * vote ends as soon as the outcome cannot change -- a majority reached or
 * out of reach, a second answer under `unanimous` -- and cancels the
 * samples still running; `judge` waits for every sample and asks a node to
 * pick among the distinct answers. Each sample runs in a frame of its own. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/engine/engine_internal.h"

/* Ends the vote with WINNER (borrowed) backed by COUNT votes. */
static void vote_result(act_t *a, json_t *winner, json_int_t count)
{
    struct act_vote *v = &a->k.vote;
    act_cancel_kids(a); /* outstanding samples: the outcome cannot change */
    double agreement = v->ndone ? (double)count / (double)v->ndone : 0.0;
    json_t *out = json_pack("{s:O, s:I, s:O, s:f}", "winner", winner, "votes",
                            (json_int_t)v->ndone, "tally", v->tally, "agreement", agreement);
    if (!out) {
        act_fail_oom(a);
        return;
    }
    act_attempt_done(a, out, NULL);
}

/* Starts the judge over the distinct answers, in the order they came. */
static void start_judge(act_t *a)
{
    struct act_vote *v = &a->k.vote;
    json_t *cands = json_array();
    const char *k;
    json_t *val;
    if (!cands) {
        act_fail_oom(a);
        return;
    }
    json_object_foreach(v->first, k, val)
        json_array_append(cands, val);
    act_t *jk = act_spawn(a, a->node->u.vote.judge, a->input, ROLE_JUDGE, 0);
    if (!jk) {
        json_decref(cands);
        return;
    }
    jk->bind_kind = BIND_CANDIDATES;
    jk->bind = cands;
    act_start(jk);
}

/* After each counted sample: win, fail, judge, or wait for more. */
static void vote_decide(act_t *a)
{
    struct act_vote *v = &a->k.vote;
    const dsl_vote *d = &a->node->u.vote;
    size_t n = (size_t)d->n, rem = n - v->ndone;
    const char *lead = NULL;
    json_int_t max = 0, second = 0;
    const char *k;
    json_t *c;
    json_object_foreach(v->tally, k, c) {
        json_int_t x = json_integer_value(c);
        if (x > max) { /* strictly greater: ties stay with the first seen */
            second = max;
            max = x;
            lead = k;
        } else if (x > second) {
            second = x;
        }
    }
    size_t distinct = json_object_size(v->tally);
    char msg[128];
    switch (d->strategy) {
    case DSL_VOTE_MAJORITY:
        if ((size_t)max * 2 > n)
            goto win;
        if (((size_t)max + rem) * 2 <= n) {
            act_fail(a, DSL_ERR_FAILED, NULL, "no majority");
            return;
        }
        break;
    case DSL_VOTE_UNANIMOUS:
        if (distinct > 1) {
            act_fail(a, DSL_ERR_FAILED, NULL, "no unanimous answer");
            return;
        }
        if (rem == 0)
            goto win;
        break;
    case DSL_VOTE_AT_LEAST:
        if (max >= d->at_least)
            goto win;
        /* Every remaining sample could join the leader: no answer can reach K. */
        if ((size_t)max + rem < (size_t)d->at_least) {
            snprintf(msg, sizeof msg, "no answer reached %d votes", d->at_least);
            act_fail(a, DSL_ERR_FAILED, NULL, msg);
            return;
        }
        break;
    case DSL_VOTE_PLURALITY:
        if (rem == 0 || (size_t)(max - second) > rem)
            goto win;
        break;
    case DSL_VOTE_JUDGE:
        if (rem == 0)
            start_judge(a);
        break;
    }
    return;
win:
    vote_result(a, json_object_get(v->first, lead), max);
}

static void vote_start(act_t *a)
{
    struct act_vote *v = &a->k.vote;
    const dsl_vote *d = &a->node->u.vote;
    if (!(v->tally = json_object()) || !(v->first = json_object())) {
        act_fail_oom(a);
        return;
    }
    for (size_t i = 0; i < (size_t)d->n; i++) {
        act_t *k = act_spawn(a, d->body, a->input, ROLE_MAIN, i);
        if (!k)
            return;
        if (!(k->own_frame = frame_new(a->frame))) {
            act_free(k);
            act_fail_oom(a);
            return;
        }
        k->frame = k->own_frame;
        act_start(k);
    }
}

/* A sample's answer, counted under its text. */
static void sample_done(act_t *a, json_t *res, eerr *err)
{
    struct act_vote *v = &a->k.vote;
    const dsl_vote *d = &a->node->u.vote;
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    char msg[256];
    json_t *ans = res;
    if (d->key) {
        ans = eval_template(a, d->key, res, msg, sizeof msg);
        json_decref(res);
    }
    if (ans)
        ans = eval_filters(ans, d->normalize, d->nnormalize, msg, sizeof msg);
    if (!ans) {
        act_fail(a, DSL_ERR_FAILED, NULL, msg);
        return;
    }
    char *text = dsl_value_to_text(ans);
    if (!text) {
        json_decref(ans);
        act_fail_oom(a);
        return;
    }
    json_t *c = json_object_get(v->tally, text);
    int rc = c ? json_integer_set(c, json_integer_value(c) + 1)
               : json_object_set_new(v->tally, text, json_integer(1)) |
                 json_object_set(v->first, text, ans);
    free(text);
    json_decref(ans);
    if (rc < 0) {
        act_fail_oom(a);
        return;
    }
    v->ndone++;
    vote_decide(a);
}

/* The judge's pick wins, with the votes its text had. */
static void judged(act_t *a, json_t *res, eerr *err)
{
    if (err) {
        act_attempt_done(a, NULL, err);
        return;
    }
    char *text = dsl_value_to_text(res);
    json_t *c = text ? json_object_get(a->k.vote.tally, text) : NULL;
    free(text);
    vote_result(a, res, c ? json_integer_value(c) : 0);
    json_decref(res);
}

static void vote_child_done(act_t *a, int role, size_t slot, json_t *res, eerr *err)
{
    if (role == ROLE_JUDGE)
        judged(a, res, err);
    else
        sample_done(a, res, err);
}

static void vote_reset(act_t *a)
{
    json_decref(a->k.vote.tally);
    json_decref(a->k.vote.first);
    a->k.vote = (struct act_vote){ 0 };
}

const act_ops engine_vote_ops = {
    .start = vote_start, .child_done = vote_child_done, .reset = vote_reset,
};
