/* jobs_tokens.c -- `token` events: the text of a job's chat calls as the
 * providers stream it, to the `events` subscribers of that job that asked
 * for `tokens: true`.
 *
 * Back-pressure: a reader whose connection is behind (more than
 * JOBS_TOKENS_BEHIND bytes unsent) gets its tokens coalesced instead of one
 * event per piece: the pieces of one call attempt are joined and sent as
 * one `token` event when the reader catches up (at its next token), when
 * another attempt's tokens come, or at the latest before the job's next
 * event of any other kind. Nothing is dropped, so the texts of an attempt's
 * token events, joined, are always its whole answer; what a slow reader
 * loses is only the pace. The text held back is bounded by the answers in
 * flight, which the HTTP client caps. A reader that stops reading
 * altogether is cut off by the server's max_output, as for every event. */
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs_internal.h"

/* Unsent bytes past which a reader's tokens are coalesced: a few events'
 * worth, so a reader that keeps up sees every piece as it comes. */
#define JOBS_TOKENS_BEHIND ((size_t)64 << 10)

typedef struct ltok {
    server_conn_t *conn;       /* reference */
    /* held back: the pieces of one attempt of one call */
    char *node, *key;          /* owned, or NULL while nothing is held */
    int attempt;
    sbuf text;
} ltok;

static void held_clear(ltok *t)
{
    free(t->node);
    free(t->key);
    t->node = t->key = NULL;
    sbuf_reset(&t->text);
}

static void send_token(ljob *j, server_conn_t *conn, const char *node, const char *key,
                       int attempt, const char *text, size_t len)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:i, s:s%, s:I}", "event", "token", "job", j->id,
                           "node", node, "attempt", attempt, "text", text, len, "time_ms",
                           (json_int_t)store_now_ms());
    if (!ev)
        return; /* out of memory, or not UTF-8: a provider's text is both */
    if (key)
        json_object_set_new(ev, "key", json_string(key));
    server_send(conn, ev);
}

static void held_send(ljob *j, ltok *t)
{
    if (!t->node)
        return;
    send_token(j, t->conn, t->node, t->key, t->attempt, t->text.p ? t->text.p : "", t->text.n);
    held_clear(t);
}

static bool same_call(const ltok *t, const engine_token *tk)
{
    return t->node && t->attempt == tk->attempt && strcmp(t->node, tk->node) == 0 &&
           (t->key && tk->key ? strcmp(t->key, tk->key) == 0 : t->key == tk->key);
}

/* Holds TK's text for T; false when out of memory (it is then sent). */
static bool hold(ltok *t, const engine_token *tk)
{
    if (!t->node) {
        t->node = strdup(tk->node);
        t->key = tk->key ? strdup(tk->key) : NULL;
        t->attempt = tk->attempt;
        if (!t->node || (tk->key && !t->key)) {
            held_clear(t);
            return false;
        }
    }
    return sbuf_add(&t->text, tk->text, tk->len) == 0;
}

static void on_token(void *ud, const engine_token *tk)
{
    ljob *j = ud;
    for (size_t i = 0; i < j->ntoks; i++) {
        ltok *t = &j->toks[i];
        if (t->node && !same_call(t, tk))
            held_send(j, t); /* another attempt's: its end is known */
        bool behind = server_conn_unsent(t->conn) > JOBS_TOKENS_BEHIND;
        if (!behind && t->node)
            held_send(j, t); /* caught up: what was held goes first */
        if (behind && hold(t, tk))
            continue;
        if (t->node) /* could not hold more: keep the order all the same */
            held_send(j, t);
        send_token(j, t->conn, tk->node, tk->key, tk->attempt, tk->text, tk->len);
    }
}

void jobs_tokens_started(ljob *j)
{
    if (j->ntoks && j->ej)
        engine_job_set_tokens(j->ej, on_token, j);
}

void jobs_tokens_add(jobs_t *js, server_conn_t *conn, const char *job)
{
    ljob *j = job ? jobs_find(js, job) : NULL;
    bool subscribed = false;
    if (!j)
        return; /* over already, or not found: the subscription said so */
    for (size_t i = 0; i < j->nsubs; i++)
        subscribed = subscribed || j->subs[i] == conn;
    for (size_t i = 0; i < j->ntoks; i++)
        if (j->toks[i].conn == conn)
            return;
    if (!subscribed ||
        vec_reserve(&j->toks, j->ntoks, &j->toks_cap, sizeof *j->toks, 1) < 0)
        return; /* out of memory: it gets the other events */
    ltok *t = &j->toks[j->ntoks++];
    memset(t, 0, sizeof *t);
    t->conn = server_conn_ref(conn);
    sbuf_init(&t->text, 0);
    if (j->state == LJ_RUNNING)
        jobs_tokens_started(j);
}

void jobs_tokens_flush(ljob *j)
{
    for (size_t i = 0; i < j->ntoks; i++)
        held_send(j, &j->toks[i]);
}

static void ltok_free(ltok *t)
{
    held_clear(t);
    sbuf_free(&t->text);
    server_conn_unref(t->conn);
}

void jobs_tokens_drop(ljob *j, server_conn_t *conn)
{
    for (size_t i = 0; i < j->ntoks;) {
        if (j->toks[i].conn == conn) {
            ltok_free(&j->toks[i]);
            j->toks[i] = j->toks[--j->ntoks];
        } else {
            i++;
        }
    }
    if (j->ntoks == 0 && j->ej && j->state == LJ_RUNNING)
        engine_job_set_tokens(j->ej, NULL, NULL); /* nobody reads: stop streaming */
}

void jobs_tokens_free(ljob *j)
{
    for (size_t i = 0; i < j->ntoks; i++)
        ltok_free(&j->toks[i]);
    free(j->toks);
    j->toks = NULL;
    j->ntoks = j->toks_cap = 0;
}
