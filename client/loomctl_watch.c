/* loomctl_watch.c -- `loomctl watch JOB`: follow one job's events live.
 *
 * Events are not stored (docs/protocol.md), so the order matters: get the
 * job first (it may have ended already: then its final state is all there is
 * to show), subscribe, then get it once more, because it may have ended
 * between the first get and the subscription, and then no job_finished would
 * ever come. That second reply is read among the events, which are shown as
 * they come, until job_finished.
 *
 * On a terminal the display is one line redrawn in place with \r; anywhere
 * else (a pipe, a log file) each event is one plain line, and with --json
 * the raw event lines. With --tokens the subscription asks for the job's
 * token events too, and their text is printed as it comes, under a line
 * naming the call (node and attempt) whenever another call's text starts;
 * the other events are then plain lines between them, even on a terminal,
 * where a redrawn line would tear the text. A retried attempt's line says
 * that the text above it was discarded.
 *
 * Calls in batch mode (step_batched) wait in a provider's batch rather than
 * in flight; each batch_progress says how far the batch holding them is:
 * "batch NAME (REMOTE): submitted to batch REMOTE, N of M lines done", or
 * "collecting" before the provider has it. A job whose only waits are batch
 * lines parks, and a subscription to that one job ends there; but such a
 * job goes on by itself when its batches end, so the watch goes on too:
 * it subscribes to every job's events (the progress of a parked job goes
 * there), keeps this job's, and asks for the job once more in case it
 * ended in between. */
#include "config.h"

#include "client/loomctl.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How often the terminal line is redrawn to move its clock, and at most how
 * often it is redrawn for events. */
#define TICK_MS 250
#define REDRAW_MS 100

typedef struct watch_state {
    const char *job;     /* as given (argv), then as loomd spells it (id_copy); borrowed */
    char *id_copy;       /* owned */
    bool tty, json;
    bool tokens;         /* --tokens: the job's streamed text is shown */
    char *tok_call;      /* "NODE KEY ATTEMPT" whose text is being printed (owned) */
    bool mid_line;       /* the last thing printed was text without its newline */
    bool live;           /* the terminal line may be drawn (not during requests) */
    bool drawn;          /* the terminal line is on screen */
    int64_t base_ms;     /* the job's start (or creation) time, for elapsed times; -1: unknown */
    int64_t last_draw;   /* monotonic ms */
    const char *state;   /* the job's state as last known (static strings or borrowed) */
    char *final;         /* the state job_finished gave (owned), NULL while running */
    long steps_done;
    json_t *in_flight;   /* leaf node path -> attempts started and not ended (a map's
                          * items share one path, so it is a count) */
    long calls;          /* the sum of IN_FLIGHT */
    json_t *maps;        /* map node -> [done, total] of its last map_progress */
    char *last_failure;  /* "CODE at NODE" of the last step_failed (owned) */
    long batched;        /* step_batched: lines submitted to batches */
    json_t *batches;     /* batch name -> [done, total] of its last batch_progress
                          * (-1: not said) */
    json_t *error;       /* the job's error job_finished gave (owned), or NULL */
    bool all_events;     /* subscribed to every job's events (the job waits on batches) */
    bool resubscribe;    /* the job parked on batch lines: subscribe to every job's */
    bool catching;       /* SIGINT is caught; OLD_SIGINT is what to restore */
    struct sigaction old_sigint;
} watch_state;

/* Set by SIGINT: the one thing a signal handler may touch. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static bool is_terminal(const char *state)
{
    /* waiting too: nothing happens until a signal, so the watch ends there */
    return state && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                     strcmp(state, "cancelled") == 0 || strcmp(state, "waiting") == 0);
}

/* Whether WAITS (a job's or a job_waiting event's) are all batch lines:
 * the job goes on by itself once its batches end. */
static bool batch_waits_only(const json_t *waits)
{
    size_t i;
    const json_t *w;
    if (!json_array_size(waits))
        return false;
    json_array_foreach(waits, i, w)
        if (!json_object_get(w, "batch") || json_object_get(w, "signal"))
            return false;
    return true;
}

/* Whether JOB (a get's job object) is over for a watcher: ended, or
 * waiting for something other than its batch lines. */
static bool is_over(const json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "state"));
    if (state && strcmp(state, "waiting") == 0 && batch_waits_only(json_object_get(job, "waits")))
        return false;
    return is_terminal(state);
}

static bool is_leaf(const char *kind)
{
    return kind && (strcmp(kind, "call") == 0 || strcmp(kind, "embed") == 0 ||
                    strcmp(kind, "lambda") == 0);
}

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* The terminal line: state, counts, elapsed time. */
static void draw(watch_state *st)
{
    long done = 0, total = 0;
    const char *node;
    json_t *m;
    json_object_foreach(st->maps, node, m) {
        done += (long)json_integer_value(json_array_get(m, 0));
        total += (long)json_integer_value(json_array_get(m, 1));
    }
    printf("\r\033[K%s", st->final ? st->final : st->state);
    if (st->base_ms >= 0) {
        int64_t ms = loomctl_wall_ms() - st->base_ms;
        printf(" %lld.%lds", (long long)(ms / 1000), (long)(ms % 1000 / 100));
    }
    printf("  %ld step%s done", st->steps_done, st->steps_done == 1 ? "" : "s");
    if (json_object_size(st->maps))
        printf("  map %ld/%ld", done, total);
    printf("  %ld call%s in flight", st->calls, st->calls == 1 ? "" : "s");
    if (st->batched || json_object_size(st->batches)) {
        long bdone = 0, btotal = 0;
        json_object_foreach(st->batches, node, m) {
            json_int_t d = json_integer_value(json_array_get(m, 0));
            json_int_t t = json_integer_value(json_array_get(m, 1));
            bdone += d > 0 ? (long)d : 0;
            btotal += t > 0 ? (long)t : 0;
        }
        printf("  %ld line%s batched", st->batched, st->batched == 1 ? "" : "s");
        if (json_object_size(st->batches))
            printf(", %zu batch%s %ld/%ld done", json_object_size(st->batches),
                   json_object_size(st->batches) == 1 ? "" : "es", bdone, btotal);
    }
    fflush(stdout);
    st->drawn = true;
    st->last_draw = loomctl_now_ms();
}

/* Ends the terminal line so that what follows starts on a fresh one. */
static void end_line(watch_state *st)
{
    if (st->drawn)
        fputc('\n', stdout);
    st->drawn = false;
    fflush(stdout);
}

/* A batch_progress event as people read it. */
static void print_batch(const json_t *ev)
{
    const char *batch = str(ev, "batch"), *remote = str(ev, "remote"), *state = str(ev, "state");
    const json_t *d = json_object_get(ev, "done"), *t = json_object_get(ev, "total");
    printf(" batch %s", batch ? batch : "?");
    if (remote && *remote)
        printf(" (%s): submitted to batch %s", remote, remote);
    else
        printf(": collecting");
    if (json_is_integer(d) && json_is_integer(t))
        printf(", %lld of %lld lines done", (long long)json_integer_value(d),
               (long long)json_integer_value(t));
    else if (json_is_integer(t))
        printf(", %lld lines", (long long)json_integer_value(t));
    /* running and submitted are what "submitted" says; an end is news */
    if (state && remote && *remote && strcmp(state, "running") != 0 &&
        strcmp(state, "submitted") != 0)
        printf(" (%s)", state);
    if (str(ev, "provider"))
        printf(" at %s", str(ev, "provider"));
}

/* One event as a plain line: time since the job started, event, node, details. */
static void print_plain(const watch_state *st, const json_t *ev, const char *name)
{
    int64_t t = (int64_t)json_number_value(json_object_get(ev, "time_ms"));
    if (st->base_ms >= 0 && t > 0)
        printf("%9.3fs  ", (double)(t - st->base_ms) / 1000.0);
    else
        printf("%10s  ", "-");
    printf("%-14s", name);
    const char *node = str(ev, "node");
    if (node)
        printf(" %s", node);
    if (strcmp(name, "job_started") == 0 && str(ev, "workflow"))
        printf(" workflow %s", str(ev, "workflow"));
    if (strcmp(name, "map_progress") == 0)
        printf(" %lld/%lld", (long long)json_integer_value(json_object_get(ev, "done")),
               (long long)json_integer_value(json_object_get(ev, "total")));
    if (strcmp(name, "batch_progress") == 0)
        print_batch(ev);
    if (str(ev, "kind"))
        printf(" (%s)", str(ev, "kind"));
    if (strcmp(name, "step_batched") == 0 && str(ev, "provider"))
        printf(" to a batch of %s", str(ev, "provider"));
    /* a step of a job another daemon runs (a PostgreSQL store), as recorded */
    if (strcmp(name, "step_checkpointed") == 0)
        printf(" %s on %s", str(ev, "key") ? str(ev, "key") : "?",
               str(ev, "daemon") ? str(ev, "daemon") : "?");
    if (str(ev, "code"))
        printf(" code %s", str(ev, "code"));
    if (json_integer_value(json_object_get(ev, "attempt")) > 1)
        printf(" attempt %lld", (long long)json_integer_value(json_object_get(ev, "attempt")));
    if (json_is_true(json_object_get(ev, "cached")))
        printf(" cached");
    if (strcmp(name, "job_finished") == 0)
        printf(" %s", str(ev, "state") ? str(ev, "state") : "?");
    putchar('\n');
    fflush(stdout);
}

/* A token event's text, under a header whenever another call's text
 * starts, so that interleaved calls (the items of a map) stay readable. */
static void print_token(watch_state *st, const json_t *ev)
{
    const char *text = str(ev, "text"), *node = str(ev, "node"), *key = str(ev, "key");
    long long attempt = (long long)json_integer_value(json_object_get(ev, "attempt"));
    char *call = NULL;
    if (!text || asprintf(&call, "%s %s %lld", node ? node : "?", key ? key : "", attempt) < 0)
        return;
    if (!st->tok_call || strcmp(call, st->tok_call) != 0) {
        if (st->mid_line)
            putchar('\n');
        printf("--- %s", node ? node : "?");
        if (attempt > 1)
            printf(" (attempt %lld)", attempt);
        printf(" ---\n");
        free(st->tok_call);
        st->tok_call = call;
        call = NULL;
    }
    free(call);
    size_t n = strlen(text);
    fwrite(text, 1, n, stdout);
    st->mid_line = n > 0 && text[n - 1] != '\n';
    fflush(stdout);
}

/* One more (DELTA 1) or one fewer (-1) attempt of the leaf NODE in flight.
 * An end nobody saw start (it started before the subscription; a step with
 * a fallback ends twice) counts nothing. */
static void count_call(watch_state *st, const char *node, const json_t *ev, int delta)
{
    if (!node || !is_leaf(str(ev, "kind")))
        return;
    json_int_t n = json_integer_value(json_object_get(st->in_flight, node));
    if (n + delta < 0)
        return;
    if (n + delta == 0)
        json_object_del(st->in_flight, node);
    else
        json_object_set_new(st->in_flight, node, json_integer(n + delta));
    st->calls += delta;
}

/* Counts one event into ST and shows it. A loomctl_message_fn. */
static void on_event(json_t *ev, void *ud)
{
    watch_state *st = ud;
    const char *name = str(ev, "event"), *job = str(ev, "job"), *node = str(ev, "node");
    if (!name || (job && strcmp(job, st->job) != 0) || st->final)
        return;
    if (strcmp(name, "token") == 0) {
        if (st->json) {
            loomctl_print_json(ev, false);
            fflush(stdout);
        } else if (st->tokens) {
            print_token(st, ev);
        }
        return;
    }
    if (st->tokens && !st->json && st->mid_line) {
        putchar('\n'); /* an event line never starts inside the text */
        st->mid_line = false;
    }
    if (st->tokens && strcmp(name, "step_retry") == 0 && !st->json) {
        /* the next call's text comes under a header of its own */
        free(st->tok_call);
        st->tok_call = NULL;
    }
    if (strcmp(name, "job_started") == 0) {
        st->state = "running";
        if (st->base_ms < 0 && json_is_number(json_object_get(ev, "time_ms")))
            st->base_ms = (int64_t)json_number_value(json_object_get(ev, "time_ms"));
    } else if (strcmp(name, "step_started") == 0) {
        st->state = "running";
        count_call(st, node, ev, 1);
    } else if (strcmp(name, "step_retry") == 0) { /* the next attempt of a failed step */
        count_call(st, node, ev, 1);
    } else if (strcmp(name, "step_checkpointed") == 0) { /* run by another daemon */
        st->state = "running";
        st->steps_done++;
    } else if (strcmp(name, "step_finished") == 0) {
        st->steps_done++;
        count_call(st, node, ev, -1);
    } else if (strcmp(name, "step_failed") == 0) {
        count_call(st, node, ev, -1);
        free(st->last_failure);
        if (asprintf(&st->last_failure, "%s at %s", str(ev, "code") ? str(ev, "code") : "failed",
                     node ? node : "?") < 0)
            st->last_failure = NULL;
    } else if (strcmp(name, "step_batched") == 0) {
        /* the call waits in a batch now, not in flight */
        count_call(st, node, ev, -1);
        st->batched++;
    } else if (strcmp(name, "batch_progress") == 0 && str(ev, "batch")) {
        const json_t *d = json_object_get(ev, "done"), *t = json_object_get(ev, "total");
        json_object_set_new(st->batches, str(ev, "batch"),
                            json_pack("[II]", json_is_integer(d) ? json_integer_value(d) : -1,
                                      json_is_integer(t) ? json_integer_value(t) : -1));
    } else if (strcmp(name, "map_progress") == 0 && node) {
        json_object_set_new(st->maps, node,
                            json_pack("[II]", json_integer_value(json_object_get(ev, "done")),
                                      json_integer_value(json_object_get(ev, "total"))));
    } else if (strcmp(name, "job_waiting") == 0) {
        if (batch_waits_only(json_object_get(ev, "waits"))) {
            st->state = "waiting for its batches";
            st->resubscribe = !st->all_events;
        } else {
            st->final = strdup("waiting");
        }
    } else if (strcmp(name, "job_finished") == 0 && !st->all_events &&
               strcmp(str(ev, "state") ? str(ev, "state") : "", "waiting") == 0) {
        /* a subscription to a job that had parked already: a get says on what */
        st->resubscribe = true;
    } else if (strcmp(name, "job_finished") == 0) {
        st->final = strdup(str(ev, "state") ? str(ev, "state") : "failed");
        if (json_is_object(json_object_get(ev, "error")))
            st->error = json_incref(json_object_get(ev, "error"));
    }
    if (st->json) {
        loomctl_print_json(ev, false);
        fflush(stdout);
    } else if (!st->tty || st->tokens) {
        print_plain(st, ev, name);
        if (st->tokens && strcmp(name, "step_retry") == 0)
        {
            printf("(the text of %s's earlier attempt above is discarded)\n", node ? node : "?");
            fflush(stdout);
        }
    } else if (st->live && !st->final && loomctl_now_ms() - st->last_draw >= REDRAW_MS) {
        draw(st);
    }
}

/* The state, elapsed time and error of a job that had ended already. */
static int show_ended(watch_state *st, const json_t *reply)
{
    const json_t *job = json_object_get(reply, "job");
    const char *state = str(job, "state");
    if (st->json) {
        loomctl_print_json(reply, false);
    } else {
        int64_t started = (int64_t)json_number_value(json_object_get(job, "started_ms"));
        int64_t finished = (int64_t)json_number_value(json_object_get(job, "finished_ms"));
        printf("%s %s", st->job, state);
        if (started > 0 && finished >= started)
            printf(" after %.1fs", (double)(finished - started) / 1000.0);
        printf(" (it had ended before watching began)\n");
        if (strcmp(state, "failed") == 0 && json_is_object(json_object_get(job, "error")))
            loomctl_print_job_error(st->job, json_object_get(job, "error"));
    }
    return strcmp(state, "succeeded") == 0 ? LOOMCTL_OK : LOOMCTL_FAILED;
}

/* Sends a get for the job. LOOMCTL_OK with the reply in *REPLY, or the
 * failure's status (printed). */
static int get_job(loomctl_conn *c, watch_state *st, int64_t timeout, json_t **reply)
{
    json_t *req = json_pack("{ssss}", "op", "get", "job", st->job);
    if (!req) {
        fprintf(stderr, "loomctl: out of memory\n");
        return LOOMCTL_UNREACHABLE;
    }
    int rc = loomctl_request(c, req, timeout, on_event, st, reply);
    json_decref(req);
    if (rc == LOOMCTL_REFUSED && st->json)
        loomctl_print_json(*reply, false);
    return rc;
}

/* The reply to the get sent after subscribing (GET, borrowed): the job may
 * have ended before the subscription, and then no job_finished will come.
 * -1 to go on, or the exit status. */
static int second_look(watch_state *st, const json_t *get)
{
    if (!json_is_true(json_object_get(get, "ok"))) {
        end_line(st);
        loomctl_print_error_reply(get);
        if (st->json)
            loomctl_print_json(get, false);
        return LOOMCTL_REFUSED;
    }
    const json_t *job = json_object_get(get, "job");
    if (!st->final && !st->all_events && !is_over(job) &&
        strcmp(str(job, "state") ? str(job, "state") : "", "waiting") == 0)
        st->resubscribe = true; /* parked on its batches before the subscription */
    if (st->final || !is_over(job))
        return -1;
    if (st->all_events) {
        /* it ended (or waits for a signal) while the watch moved to every
         * job's events: the end as a job_finished would have told it */
        st->final = strdup(str(job, "state") ? str(job, "state") : "failed");
        if (json_is_object(json_object_get(job, "error")))
            st->error = json_incref(json_object_get(job, "error"));
        return -1;
    }
    if (st->drawn && !st->json)
        fputs("\r\033[K", stdout); /* the progress line gives way to the outcome */
    st->drawn = false;
    return show_ended(st, get);
}

/* Why the job did not succeed, on stderr: its error as get gives it (code,
 * node, attempts, message), which job_finished carries; a daemon whose
 * job_finished does not is asked with a get on the same connection. Only
 * when neither says anything, the last failed step seen. */
static void say_outcome(loomctl_conn *c, watch_state *st)
{
    if (!st->error && strcmp(st->final, "failed") == 0) {
        json_t *req = json_pack("{ssss}", "op", "get", "job", st->job), *reply = NULL;
        if (req && loomctl_request(c, req, LOOMCTL_REPLY_TIMEOUT_MS, NULL, NULL, &reply) ==
                       LOOMCTL_OK) {
            json_t *e = json_object_get(json_object_get(reply, "job"), "error");
            if (json_is_object(e))
                st->error = json_incref(e);
        }
        json_decref(req);
        json_decref(reply);
    }
    if (st->error && strcmp(st->final, "failed") == 0)
        loomctl_print_job_error(st->job, st->error);
    else if (strcmp(st->final, "cancelled") == 0)
        fprintf(stderr, "loomctl: job %s was cancelled\n", st->job);
    else
        fprintf(stderr, "loomctl: job %s %s%s%s\n", st->job, st->final,
                st->last_failure ? ": last failed step: " : "",
                st->last_failure ? st->last_failure : "");
}

/* The job parked on its batch lines: subscribes to every job's events on
 * C (those of this job are kept) and asks for the job again, since it may
 * have ended before the subscription (*GET_ID: that get's id). -1 to go
 * on, or the exit status. */
static int watch_every_job(loomctl_conn *c, watch_state *st, json_int_t *get_id)
{
    json_t *reply = NULL;
    json_t *req = json_pack("{ss}", "op", "events");
    int rc = req ? loomctl_request(c, req, LOOMCTL_REPLY_TIMEOUT_MS, on_event, st, &reply)
                 : LOOMCTL_UNREACHABLE;
    json_decref(req);
    if (rc != LOOMCTL_OK) {
        end_line(st);
        if (rc == LOOMCTL_REFUSED)
            loomctl_print_error_reply(reply);
        json_decref(reply);
        return rc;
    }
    json_decref(reply);
    reply = NULL;
    st->all_events = true;
    req = json_pack("{ssss}", "op", "get", "job", st->job);
    json_int_t id = req ? loomctl_send(c, req, LOOMCTL_REPLY_TIMEOUT_MS, &reply)
                        : -LOOMCTL_UNREACHABLE;
    json_decref(req);
    json_decref(reply);
    if (id < 0)
        return (int)-id;
    *get_id = id;
    return -1;
}

/* Shows events from C until the job ends, DEADLINE (monotonic ms, -1: none)
 * passes or the user interrupts; GET_ID is the pending get's. -1 after an
 * interrupt, else the exit status. */
static int follow_events(loomctl_conn *c, watch_state *st, json_int_t get_id, int64_t deadline)
{
    /* From here on Ctrl-C ends the line cleanly before the process dies of
     * it (unless SIGINT is ignored, as for a background job: then it stays
     * so). Before, nothing is drawn and the default is as good. */
    struct sigaction sa = { .sa_handler = on_sigint };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, NULL, &st->old_sigint) == 0 && st->old_sigint.sa_handler != SIG_IGN)
        st->catching = sigaction(SIGINT, &sa, NULL) == 0;
    st->live = true;
    if (st->tty && !st->json && !st->tokens)
        draw(st);
    while (!st->final && !interrupted) {
        json_t *msg;
        int64_t wait = deadline < 0 ? TICK_MS : deadline - loomctl_now_ms();
        int rc = loomctl_read(c, wait > TICK_MS ? TICK_MS : wait < 0 ? 0 : wait, &msg);
        if (rc == LOOMCTL_OK) {
            if (get_id && loomctl_is_reply(msg, get_id)) {
                get_id = 0;
                rc = second_look(st, msg);
            } else {
                on_event(msg, st);
                rc = -1;
            }
            json_decref(msg);
            if (rc >= 0)
                return rc;
            if (st->resubscribe && !st->final && !get_id) {
                st->resubscribe = false;
                if ((rc = watch_every_job(c, st, &get_id)) >= 0)
                    return rc;
            }
            continue;
        }
        if (rc != LOOMCTL_TIMEOUT) {
            end_line(st);
            fprintf(stderr, "loomctl: %s\n", loomctl_conn_error(c));
            return rc;
        }
        if (deadline >= 0 && loomctl_now_ms() >= deadline) {
            end_line(st);
            fprintf(stderr, "loomctl: timed out watching job %s (still %s; it goes on)\n", st->job,
                    st->state);
            return LOOMCTL_TIMEOUT;
        }
        if (st->tty && !st->json && !st->tokens)
            draw(st);
    }
    if (interrupted) {
        end_line(st);
        fprintf(stderr, "loomctl: stopped watching job %s (it goes on)\n", st->job);
        return -1;
    }
    if (st->tty && !st->json && !st->tokens) {
        draw(st);
        end_line(st);
    }
    if (strcmp(st->final, "succeeded") == 0)
        return LOOMCTL_OK;
    if (!st->json)
        say_outcome(c, st);
    return LOOMCTL_FAILED;
}

/* Gets the job, subscribes to its events and follows them (see the top of
 * the file for why in this order). -1 after an interrupt, else the exit
 * status. */
static int follow(loomctl_conn *c, watch_state *st, int64_t quick, int64_t deadline)
{
    json_t *reply = NULL;
    int rc = get_job(c, st, quick, &reply);
    if (rc != LOOMCTL_OK)
        goto out;
    const json_t *job = json_object_get(reply, "job");
    if (is_over(job)) {
        rc = show_ended(st, reply);
        goto out;
    }
    /* parked on its batch lines: no subscription to it alone would see it
     * go on (see the top of the file) */
    st->all_events = batch_waits_only(json_object_get(job, "waits")) &&
                     strcmp(str(job, "state") ? str(job, "state") : "", "waiting") == 0;
    /* events name the job by the id loomd uses, which is what get returned */
    if (str(job, "id") && (st->id_copy = strdup(str(job, "id"))))
        st->job = st->id_copy;
    const char *state = str(job, "state");
    st->state = st->all_events ? "waiting for its batches"
                : state && strcmp(state, "running") == 0 ? "running" : "queued";
    int64_t started = (int64_t)json_number_value(json_object_get(job, "started_ms"));
    int64_t created = (int64_t)json_number_value(json_object_get(job, "created_ms"));
    st->base_ms = started > 0 ? started : created > 0 ? created : loomctl_wall_ms();
    json_decref(reply);
    reply = NULL;

    json_t *req = st->all_events ? json_pack("{ss}", "op", "events")
                                 : json_pack("{ssss}", "op", "events", "job", st->job);
    if (req && st->tokens)
        json_object_set_new(req, "tokens", json_true());
    rc = req ? loomctl_request(c, req, quick, on_event, st, &reply) : LOOMCTL_UNREACHABLE;
    json_decref(req);
    if (rc == LOOMCTL_REFUSED && st->json)
        loomctl_print_json(reply, false);
    if (rc != LOOMCTL_OK)
        goto out;
    json_decref(reply);
    reply = NULL;
    /* its reply is read among the events, which are shown meanwhile */
    req = json_pack("{ssss}", "op", "get", "job", st->job);
    json_int_t get_id = req ? loomctl_send(c, req, quick, &reply) : -LOOMCTL_UNREACHABLE;
    json_decref(req);
    if (get_id < 0) {
        rc = (int)-get_id;
        if (reply && st->json)
            loomctl_print_json(reply, false);
        goto out;
    }
    rc = follow_events(c, st, get_id, deadline);
out:
    json_decref(reply);
    return rc;
}

int loomctl_cmd_watch(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("watch");
    const char *socket = NULL, *timeout_text = NULL;
    bool json = false, tokens = false;
    const loomctl_option opts[] = {
        { "socket", 0, &socket, NULL },
        { "timeout", 0, &timeout_text, NULL },
        { "json", 0, NULL, &json },
        { "tokens", 0, NULL, &tokens },
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop != 1 || !*argv[1])
        return loomctl_usage_error(self, nop > 1 ? "expected one job id" : "no job id given");
    int64_t limit = -1;
    if (timeout_text && loomctl_parse_seconds(timeout_text, &limit) < 0)
        return loomctl_usage_error(self, "--timeout takes a number of seconds");
    int64_t deadline = limit < 0 ? -1 : loomctl_now_ms() + limit;
    int64_t quick = LOOMCTL_REPLY_TIMEOUT_MS;
    if (limit >= 0 && limit < quick)
        quick = limit;

    watch_state st = { .job = argv[1], .tty = isatty(STDOUT_FILENO), .json = json,
                       .tokens = tokens, .base_ms = -1,
                       .state = "queued", .in_flight = json_object(), .maps = json_object(),
                       .batches = json_object() };
    if (!st.in_flight || !st.maps || !st.batches) {
        fprintf(stderr, "loomctl: out of memory\n");
        rc = LOOMCTL_UNREACHABLE;
        goto out;
    }
    loomctl_conn *c = loomctl_connect(loomctl_socket_path(socket), quick);
    rc = c ? follow(c, &st, quick, deadline) : LOOMCTL_UNREACHABLE;
    loomctl_close(c);
    if (st.catching)
        sigaction(SIGINT, &st.old_sigint, NULL);
    if (rc < 0) { /* interrupted: die of it, as the caller expects */
        fflush(stdout);
        raise(SIGINT);
        rc = 130;
    }
out:
    json_decref(st.in_flight);
    json_decref(st.maps);
    json_decref(st.batches);
    free(st.final);
    free(st.tok_call);
    free(st.last_failure);
    json_decref(st.error);
    free(st.id_copy);
    return rc;
}
