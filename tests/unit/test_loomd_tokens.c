/* test_loomd_tokens.c -- token streams through a real loomd and the fake
 * provider: an `events` subscriber with `tokens: true` sees the text of the
 * job's calls as it arrives (the fake server writes each answer in small
 * pieces, events cut anywhere), and the texts joined are the job's output;
 * the same job unwatched is not streamed at all (the fake server counts
 * the streams it sent) and ends with the same output and usage; a retried
 * attempt is announced (step_retry) before its tokens.
 *
 * A job's tokens stream only when someone reads them as its call starts,
 * so the watched job is held in the queue (max_running_jobs: 1, behind a
 * slow job) until the subscription is in place, then let go by cancelling
 * the slow one: no race with the call's start. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;


/* Long enough for a dozen pieces, with characters of 2 and 3 bytes. */
#define TEXT "Grüße aus Köln — streamed in pieces, joined again"

static void teardown(void)
{
    lh_teardown(&D);
}

/* A loomd whose provider `p` is PLUGIN (openai or anthropic) on the fake
 * server started with FAKE_ARGS, running one job at a time. */
static void start(const char *plugin, const char *const *fake_args)
{
    char prov[256];
    snprintf(prov, sizeof prov,
             "  p: { plugin: %s, base_url: \"@FAKE@\", api_key_env: LOOM_TEST_TOKENS_KEY }\n"
             "max_running_jobs: 1\n", plugin);
    setenv("LOOM_TEST_TOKENS_KEY", "sk-test-tokens", 1);
    lh_setup(&D, prov, fake_args);
    lh_workflow(&D, "ask", "loom: 1\nname: ask\ndefaults: { provider: p, model: m }\n"
                           "do: { call: '{{ input.text }}' }\n");
    lh_workflow(&D, "retry",
                "loom: 1\nname: retry\ndefaults: { provider: p, model: m }\n"
                "do: { call: '{{ input.text }}', retry: { max_attempts: 3, initial_delay: 10ms } }\n");
    lh_workflow(&D, "mock", "loom: 1\nname: mock\ndefaults: { provider: default }\n"
                            "do: { call: '{{ input.text }}' }\n");
    lh_workflow(&D, "slow", "loom: 1\nname: slow\ndefaults: { provider: slow }\n"
                            "do: { call: 'slowly' }\n");
    lh_start(&D);
}

/* Submits WF over TEXT without waiting: the job's id (free it). */
static char *submit(const char *wf)
{
    char req[512];
    snprintf(req, sizeof req, "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"text\":\"%s\"}}",
             wf, TEXT);
    json_t *r = lh_call(&D, req, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "submit %s", wf);
    char *id = strdup(json_string_value(json_object_get(r, "job")));
    json_decref(r);
    return id;
}

/* The job object of JOB once it ended. */
static json_t *wait_job(const char *job)
{
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"wait\",\"job\":\"%s\",\"timeout\":20}", job);
    json_t *r = lh_call(&D, req, 25000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "wait %s", job);
    json_t *j = json_incref(json_object_get(r, "job"));
    json_decref(r);
    cr_assert_str_eq((char *)json_string_value(json_object_get(j, "state")), "succeeded", "%s",
              json_dumps(j, 0));
    return j;
}

/* WF's job run while a subscriber reads its tokens: a connection with the
 * `events` of that job (tokens: true), subscribed while the job waits in
 * the queue behind a slow job that is then cancelled. Returns the
 * connection, the job's id in *JOB (free it). */
static int watched(const char *wf, char **job)
{
    char *slow = submit("slow");
    *job = submit(wf); /* queued: the slow job holds the only slot */
    int fd = lh_connect(&D);
    char req[256];
    snprintf(req, sizeof req, "{\"id\":1,\"op\":\"events\",\"job\":\"%s\",\"tokens\":true}", *job);
    lh_send(fd, req);
    json_t *r = lh_recv(fd, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "subscribed")), "subscribed");
    json_decref(r);
    snprintf(req, sizeof req, "{\"op\":\"cancel\",\"job\":\"%s\"}", slow);
    r = lh_call(&D, req, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")), "cancel");
    json_decref(r);
    free(slow);
    return fd;
}

/* Reads FD's events of JOB until job_finished: the texts of its token
 * events joined (of ATTEMPT; 0: any), and how many there were. */
static char *tokens_until_end(int fd, const char *job, int attempt, int *count)
{
    size_t len = 0;
    char *all = calloc(1, 1);
    *count = 0;
    for (;;) {
        json_t *e = lh_recv(fd, 20000);
        cr_assert(e, "the job's events stopped before job_finished");
        const char *name = json_string_value(json_object_get(e, "event"));
        if (strcmp(name, "job_finished") == 0) {
            json_decref(e);
            return all;
        }
        if (strcmp(name, "token") == 0) {
            cr_assert_str_eq((char *)json_string_value(json_object_get(e, "job")), (char *)job);
            cr_assert(json_is_string(json_object_get(e, "node")));
            int at = (int)json_integer_value(json_object_get(e, "attempt"));
            const char *t = json_string_value(json_object_get(e, "text"));
            cr_assert(t && *t, "a token carries text");
            if (!attempt || at == attempt) {
                all = realloc(all, len + strlen(t) + 1);
                memcpy(all + len, t, strlen(t) + 1);
                len += strlen(t);
                (*count)++;
            }
        }
        json_decref(e);
    }
}

static json_int_t usage_of(json_t *job, const char *prov, const char *what)
{
    return json_integer_value(json_object_get(json_object_get(json_object_get(job, "usage"), prov),
                                              what));
}

/* WF watched and unwatched: the same output and usage; only the watched
 * one was streamed, and its tokens are its output. */
static void watched_and_not(const char *wf)
{
    const char *prov = "p";
    char *job;
    int fd = watched(wf, &job);
    int n;
    char *joined = tokens_until_end(fd, job, 0, &n);
    close(fd);
    json_t *j = wait_job(job);
    const char *out = json_string_value(json_object_get(j, "output"));
    cr_assert_str_eq((char *)out, TEXT, "the fake server echoes");
    cr_assert_str_eq(joined, (char *)out, "the tokens joined are the output");
    cr_assert_gt(n, 1, "the answer came in pieces (%d)", n);
    cr_assert_eq(fake_server_stat(&D.fake, "streams"), 1, "the watched call streamed");

    char *plain = submit(wf);
    json_t *p = wait_job(plain);
    cr_assert_str_eq((char *)json_string_value(json_object_get(p, "output")), (char *)out);
    cr_assert_eq(fake_server_stat(&D.fake, "streams"), 1, "the unwatched call did not");
    cr_assert_gt(usage_of(j, prov, "input_tokens"), 0);
    cr_assert_gt(usage_of(j, prov, "output_tokens"), 0);
    cr_assert_eq(usage_of(j, prov, "input_tokens"), usage_of(p, prov, "input_tokens"));
    cr_assert_eq(usage_of(j, prov, "output_tokens"), usage_of(p, prov, "output_tokens"));
    json_decref(p);
    json_decref(j);
    free(plain);
    free(joined);
    free(job);
}

Test(loomd_tokens, openai_watched_streams_the_output_unwatched_does_not, .fini = teardown)
{
    start("openai", (const char *const[]){ "--stream-chunk", "5", "--stream-gap", "1", NULL });
    watched_and_not("ask");
}

Test(loomd_tokens, anthropic_watched_streams_the_output_unwatched_does_not, .fini = teardown)
{
    start("anthropic", (const char *const[]){ "--stream-chunk", "5", "--stream-gap", "1", NULL });
    watched_and_not("ask");
}

Test(loomd_tokens, a_retried_attempt_is_announced_before_its_tokens, .fini = teardown)
{
    /* every 2nd request fails mid-stream: an unwatched job takes the
     * first, so the watched job's first attempt is the second */
    start("openai", (const char *const[]){ "--fault", "stream_error", "--fault-every", "2", "--stream-gap",
                                 "1", NULL });
    char *warm = submit("retry");
    json_decref(wait_job(warm));
    free(warm);
    char *job;
    int fd = watched("retry", &job);
    bool announced = false;
    int first = 0, second = 0;
    size_t len = 0;
    char joined[512] = "";
    for (;;) {
        json_t *e = lh_recv(fd, 20000);
        cr_assert(e, "the job's events stopped before job_finished");
        const char *name = json_string_value(json_object_get(e, "event"));
        int at = (int)json_integer_value(json_object_get(e, "attempt"));
        if (strcmp(name, "job_finished") == 0) {
            json_decref(e);
            break;
        }
        if (strcmp(name, "step_retry") == 0) {
            cr_assert_eq(at, 2, "the retry announces attempt 2");
            cr_assert_gt(first, 0, "after the first attempt's tokens");
            announced = true;
        }
        if (strcmp(name, "token") == 0) {
            if (at == 1) {
                cr_assert(!announced, "no token of attempt 1 after attempt 2 was announced");
                first++;
            } else {
                cr_assert_eq(at, 2);
                cr_assert(announced, "attempt 2's tokens come after its announcement");
                const char *t = json_string_value(json_object_get(e, "text"));
                cr_assert(len + strlen(t) < sizeof joined);
                memcpy(joined + len, t, strlen(t) + 1);
                len += strlen(t);
                second++;
            }
        }
        json_decref(e);
    }
    close(fd);
    json_t *j = wait_job(job);
    cr_assert(announced && first > 0 && second > 0);
    cr_assert_str_eq(joined, (char *)json_string_value(json_object_get(j, "output")),
              "the last attempt's tokens are the output");
    json_decref(j);
    free(job);
}

Test(loomd_tokens, a_provider_that_cannot_stream_gives_its_text_as_one_token, .fini = teardown)
{
    start("openai", NULL);
    char *job;
    int fd = watched("mock", &job); /* the mock is an invoke provider */
    int n;
    char *joined = tokens_until_end(fd, job, 0, &n);
    close(fd);
    json_t *j = wait_job(job);
    cr_assert_eq(n, 1, "%d token events", n);
    cr_assert_str_eq(joined, (char *)json_string_value(json_object_get(j, "output")));
    cr_assert_eq(fake_server_stat(&D.fake, "streams"), 0);
    json_decref(j);
    free(joined);
    free(job);
}

Test(loomd_tokens, a_reader_that_falls_behind_gets_tokens_coalesced_not_dropped, .fini = teardown)
{
    /* 40,000 bytes of answer are 5,000 pieces of 8 bytes: as token events
     * about 0.8 MB, more than the socket's buffer and the 64 KiB a reader
     * may be behind, so a reader that reads nothing until the job ended
     * must get fewer, longer events, which still join to the output */
    enum { LEN = 40000, PIECES = LEN / 8 };
    start("openai", (const char *const[]){ "--stream-chunk", "4096", NULL });
    char *slow = submit("slow");
    char *req = malloc(LEN + 128), *text = malloc(LEN + 1);
    cr_assert(req && text);
    for (int i = 0; i < LEN; i++)
        text[i] = (char)('a' + i % 26);
    text[LEN] = '\0';
    snprintf(req, LEN + 128, "{\"op\":\"submit\",\"workflow\":\"ask\",\"input\":{\"text\":\"%s\"}}",
             text);
    json_t *r = lh_call(&D, req, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "ok")));
    char *job = strdup(json_string_value(json_object_get(r, "job")));
    json_decref(r);
    int fd = lh_connect(&D);
    snprintf(req, LEN + 128, "{\"id\":1,\"op\":\"events\",\"job\":\"%s\",\"tokens\":true}", job);
    lh_send(fd, req);
    r = lh_recv(fd, 10000);
    cr_assert(r && json_is_true(json_object_get(r, "subscribed")));
    json_decref(r);
    snprintf(req, LEN + 128, "{\"op\":\"cancel\",\"job\":\"%s\"}", slow);
    json_decref(lh_call(&D, req, 10000));
    json_t *j = wait_job(job); /* FD is not read meanwhile */
    int n;
    char *joined = tokens_until_end(fd, job, 0, &n);
    close(fd);
    cr_assert_str_eq(json_string_value(json_object_get(j, "output")), text);
    cr_assert_str_eq(joined, text, "nothing was dropped");
    cr_assert_lt(n, PIECES, "the pieces a slow reader could not take were joined (%d events)", n);
    json_decref(j);
    free(joined);
    free(job);
    free(slow);
    free(text);
    free(req);
}

Test(loomd_tokens, tokens_need_a_job_and_a_boolean, .fini = teardown)
{
    start("openai", NULL);
    json_t *r = lh_call(&D, "{\"op\":\"events\",\"tokens\":true}", 10000);
    cr_assert(r && !json_is_true(json_object_get(r, "ok")));
    cr_assert_str_eq((char *)json_string_value(json_object_get(json_object_get(r, "error"),
                                                                "code")), "invalid_request");
    json_decref(r);
    r = lh_call(&D, "{\"op\":\"events\",\"job\":\"x\",\"tokens\":1}", 10000);
    cr_assert(r && !json_is_true(json_object_get(r, "ok")));
    json_decref(r);
}
