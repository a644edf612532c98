/* loomctl_jobs.c -- the commands that ask loomd one question each: submit,
 * get, wait, cancel, list, workflows and stats.
 *
 * Each builds one request (docs/protocol.md), sends it with
 * loomctl_request and prints the reply: for people by default, as the raw
 * reply line with --json. Human output keeps stdout for the answer itself
 * (`job=$(loomctl submit x)` is the job id and nothing else) and sends notes
 * and hints to stderr. */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/containers.h"


/* How much longer than the daemon's own wait limit we wait for its reply. */
#define WAIT_GRACE_MS 5000

/* The options every command that talks to loomd takes. */
typedef struct common_opts {
    const char *socket;
    const char *timeout;
    bool json;
} common_opts;

#define COMMON_OPTIONS(o)                         \
    { "socket", 0, &(o).socket, NULL },           \
    { "timeout", 0, &(o).timeout, NULL },         \
    { "json", 0, NULL, &(o).json }

/* ---- small formatting helpers ---- */

static const char *str_or(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

/* OBJ's KEY as milliseconds, or -1 when it is missing or null. */
static int64_t ms_of(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? (int64_t)json_number_value(v) : -1;
}

static long long int_of(const json_t *obj, const char *key)
{
    return (long long)json_number_value(json_object_get(obj, key));
}

/* MS since the epoch as local "YYYY-MM-DD HH:MM:SS[.mmm]". */
static const char *fmt_time(char *buf, size_t size, int64_t ms, bool millis)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || !localtime_r(&t, &tm)) {
        snprintf(buf, size, "-");
        return buf;
    }
    size_t n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    if (millis && n)
        snprintf(buf + n, size - n, ".%03d", (int)(ms % 1000));
    return buf;
}

static const char *fmt_duration(char *buf, size_t size, int64_t ms)
{
    if (ms < 0)
        snprintf(buf, size, "-");
    else if (ms < 1000)
        snprintf(buf, size, "%lld ms", (long long)ms);
    else if (ms < 60000)
        snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, size, "%lldm %02llds", (long long)(ms / 60000), (long long)(ms / 1000 % 60));
    else
        snprintf(buf, size, "%lldh %02lldm", (long long)(ms / 3600000),
                 (long long)(ms / 60000 % 60));
    return buf;
}

void loomctl_describe_job_error(FILE *f, const json_t *e)
{
    const char *node = str_or(e, "node", NULL);
    long long attempts = int_of(e, "attempts");
    fprintf(f, "%s", str_or(e, "code", "failed"));
    if (node)
        fprintf(f, " at %s", node);
    if (attempts > 1)
        fprintf(f, " after %lld attempts", attempts);
    fprintf(f, ": %s", str_or(e, "message", "(no message)"));
}

void loomctl_print_job_error(const char *job, const json_t *error)
{
    fprintf(stderr, "loomctl: job %s failed: ", job);
    loomctl_describe_job_error(stderr, error);
    fputc('\n', stderr);
}

/* ---- requests ---- */

/* A request object for OP (new), or NULL (reported). */
static json_t *request(const char *op)
{
    json_t *req = json_pack("{ss}", "op", op);
    if (!req)
        fprintf(stderr, "loomctl: out of memory\n");
    return req;
}

/* The reply timeout of a command that loomd answers at once: --timeout, or
 * LOOMCTL_REPLY_TIMEOUT_MS. -1 after a usage error (reported). */
static int64_t quick_timeout(const loomctl_command *self, const common_opts *o)
{
    int64_t ms = LOOMCTL_REPLY_TIMEOUT_MS;
    if (o->timeout && loomctl_parse_seconds(o->timeout, &ms) < 0) {
        loomctl_usage_error(self, "--timeout takes a number of seconds");
        return -1;
    }
    return ms;
}

/* Connects, sends REQ (stolen; NULL: out of memory, reported) and gets the
 * reply into *REPLY. With --json the reply, ok or not, goes to stdout. */
static int call(const common_opts *o, json_t *req, int64_t timeout_ms, json_t **reply)
{
    *reply = NULL;
    if (!req)
        return LOOMCTL_UNREACHABLE;
    int rc = LOOMCTL_UNREACHABLE;
    loomctl_conn *c = loomctl_connect(loomctl_socket_path(o->socket), timeout_ms);
    if (c)
        rc = loomctl_request(c, req, timeout_ms, NULL, NULL, reply);
    if (rc == LOOMCTL_REFUSED && !o->json)
        loomctl_hint_workflow(c, req, *reply);
    loomctl_close(c);
    json_decref(req);
    if (o->json && *reply)
        loomctl_print_json(*reply, false);
    return rc;
}

/* The exit status for a job that ended in STATE, saying why on stderr when
 * it is not a success (ERROR: the job's typed error, may be NULL). */
static int job_status(const char *id, const char *state, const json_t *error, bool quiet)
{
    if (state && strcmp(state, "succeeded") == 0)
        return LOOMCTL_OK;
    if (quiet)
        return LOOMCTL_FAILED;
    if (state && strcmp(state, "failed") == 0 && json_is_object(error))
        loomctl_print_job_error(id, error);
    else
        fprintf(stderr, "loomctl: job %s %s\n", id,
                state && strcmp(state, "cancelled") == 0 ? "was cancelled" : "did not succeed");
    return LOOMCTL_FAILED;
}

/* The job object's summary for people, then its output. */
static void print_job(const json_t *job)
{
    char a[64], b[64];
    int64_t created = ms_of(job, "created_ms"), started = ms_of(job, "started_ms"),
            finished = ms_of(job, "finished_ms");
    const char *state = str_or(job, "state", "?");
    printf("job:       %s\n", str_or(job, "id", "?"));
    printf("state:     %s\n", state);
    printf("workflow:  %s\n", str_or(job, "workflow", "?"));
    printf("version:   %s\n", str_or(job, "version", "-"));
    if (int_of(job, "priority"))
        printf("priority:  %lld\n", int_of(job, "priority"));
    if (json_is_string(json_object_get(job, "idempotency_key")))
        printf("key:       %s\n", str_or(job, "idempotency_key", ""));
    if (int_of(job, "attempt") > 1)
        printf("attempt:   %lld\n", int_of(job, "attempt"));
    if (int_of(job, "crashes") > 0) /* in a row, while it ran plugin code */
        printf("crashes:   %lld (last: %s in %s, step %s)\n", int_of(job, "crashes"),
               str_or(json_object_get(job, "crash"), "signal", "killed"),
               str_or(json_object_get(job, "crash"), "function", "?"),
               str_or(json_object_get(job, "crash"), "step", "?"));
    printf("created:   %s\n", fmt_time(a, sizeof a, created, true));
    if (started >= 0)
        printf("started:   %s (queued %s)\n", fmt_time(a, sizeof a, started, true),
               fmt_duration(b, sizeof b, created >= 0 ? started - created : -1));
    if (finished >= 0)
        printf("finished:  %s (%s %s)\n", fmt_time(a, sizeof a, finished, true),
               started >= 0 ? "ran" : "after",
               fmt_duration(b, sizeof b, finished - (started >= 0 ? started : created)));
    else if (started >= 0)
        printf("running:   %s so far\n", fmt_duration(b, sizeof b, loomctl_wall_ms() - started));
    const char *name;
    const json_t *u;
    const char *label = "usage:     ";
    json_object_foreach((json_t *)json_object_get(job, "usage"), name, u) {
        printf("%s%s: %lld call%s, %lld input + %lld output tokens\n", label, name,
               int_of(u, "calls"), int_of(u, "calls") == 1 ? "" : "s", int_of(u, "input_tokens"),
               int_of(u, "output_tokens"));
        label = "           ";
    }
    const json_t *w;
    size_t wi;
    label = "waits for: ";
    if (strcmp(state, "waiting") == 0)
        json_array_foreach((json_t *)json_object_get(job, "waits"), wi, w) {
            int64_t deadline = ms_of(w, "deadline_ms");
            const char *batch = str_or(w, "batch", NULL); /* a call's line in a provider batch */
            if (batch) /* "" while its line was collecting when the job parked */
                printf("%sbatch %s at %s", label, *batch ? batch : "(collecting)",
                       str_or(w, "node", "?"));
            else
                printf("%ssignal %s at %s", label, str_or(w, "signal", "?"), str_or(w, "node", "?"));
            if (deadline >= 0)
                printf(" (until %s)", fmt_time(a, sizeof a, deadline, true));
            putchar('\n');
            label = "           ";
        }
    const json_t *error = json_object_get(job, "error");
    if (json_is_object(error)) {
        fputs("error:     ", stdout);
        loomctl_describe_job_error(stdout, error);
        fputc('\n', stdout);
    }
    const json_t *output = json_object_get(job, "output");
    if (output && !json_is_null(output)) {
        fputs("output:\n", stdout);
        loomctl_print_json(output, true);
    }
}

/* ---- submit ---- */

/* Takes "--wait", "--wait SECONDS" and "--wait=SECONDS" out of ARGV (the
 * shared parser has no options with optional values): SECONDS is the next
 * argument only when it is a number. Returns the new ARGC. */
static int take_wait(int argc, char **argv, bool *wait, const char **seconds)
{
    static const char *const with_value[] = { "--input", "-i", "--key", "--priority", "--socket",
                                              "--timeout", NULL };
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int64_t ms;
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(a, "--wait") == 0) {
            *wait = true;
            if (i + 1 < argc && loomctl_parse_seconds(argv[i + 1], &ms) == 0)
                *seconds = argv[++i];
            continue;
        }
        if (strncmp(a, "--wait=", 7) == 0) {
            *wait = true;
            *seconds = a + 7;
            continue;
        }
        argv[out++] = argv[i];
        for (size_t k = 0; with_value[k]; k++)
            if (strcmp(a, with_value[k]) == 0 && i + 1 < argc)
                argv[out++] = argv[++i];
    }
    return out;
}

int loomctl_cmd_submit(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("submit");
    common_opts o = { 0 };
    const char *input_path = NULL, *key = NULL, *priority_text = NULL, *wait_text = NULL;
    bool wait = false;
    argc = take_wait(argc, argv, &wait, &wait_text);
    const loomctl_option opts[] = {
        { "input", 'i', &input_path, NULL },
        { "key", 0, &key, NULL },
        { "priority", 0, &priority_text, NULL },
        COMMON_OPTIONS(o),
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop != 1)
        return loomctl_usage_error(self, nop ? "expected one workflow name" : "no workflow given");
    long long priority = 0;
    if (priority_text) {
        char *end;
        errno = 0;
        priority = strtoll(priority_text, &end, 10);
        if (errno || !*priority_text || *end)
            return loomctl_usage_error(self, "--priority takes an integer");
    }
    int64_t wait_ms = -1;
    if (wait_text && loomctl_parse_seconds(wait_text, &wait_ms) < 0)
        return loomctl_usage_error(self, "--wait takes a number of seconds");
    int64_t timeout = quick_timeout(self, &o);
    if (timeout < 0)
        return LOOMCTL_USAGE;
    if (wait)
        timeout = wait_ms < 0 ? -1 : wait_ms + WAIT_GRACE_MS;

    json_t *input = input_path ? loomctl_read_input("submit", input_path) : json_object();
    if (!input)
        return LOOMCTL_USAGE;
    json_t *req = request("submit");
    if (req) {
        json_object_set_new(req, "workflow", json_string(argv[1]));
        json_object_set(req, "input", input);
        if (key)
            json_object_set_new(req, "idempotency_key", json_string(key));
        if (priority_text)
            json_object_set_new(req, "priority", json_integer((json_int_t)priority));
        if (wait)
            json_object_set_new(req, "wait", wait_ms < 0 ? json_true()
                                             : wait_ms % 1000 ? json_real((double)wait_ms / 1000.0)
                                                              : json_integer(wait_ms / 1000));
    }
    json_decref(input);
    json_t *reply;
    rc = call(&o, req, timeout, &reply);
    if (rc != LOOMCTL_OK)
        goto out;
    const char *id = str_or(reply, "job", "?");
    if (!wait) {
        if (!o.json)
            printf("%s\n", id);
        if (!o.json && json_is_true(json_object_get(reply, "existed")))
            fprintf(stderr, "loomctl: the key matched job %s, submitted before (%s)\n", id,
                    str_or(reply, "state", "?"));
        goto out;
    }
    if (json_is_true(json_object_get(reply, "timed_out"))) {
        fprintf(stderr, "loomctl: timed out after %s s waiting for job %s (still %s; it goes on)\n",
                wait_text ? wait_text : "?", id, str_or(reply, "state", "?"));
        rc = LOOMCTL_TIMEOUT;
        goto out;
    }
    const json_t *job = json_object_get(reply, "result");
    rc = job_status(str_or(job, "id", id), str_or(job, "state", NULL),
                    json_object_get(job, "error"), o.json);
    if (rc == LOOMCTL_OK && !o.json)
        loomctl_print_json(json_object_get(job, "output"), true);
out:
    json_decref(reply);
    return rc;
}

/* ---- get, wait, cancel ---- */

/* The JOB operand and the common options of get/wait/cancel. */
static int job_command(const char *name, int argc, char **argv, common_opts *o,
                       const loomctl_command **self)
{
    *self = loomctl_command_find(name);
    const loomctl_option opts[] = { COMMON_OPTIONS(*o), { NULL, 0, NULL, NULL } };
    int nop;
    int rc = loomctl_parse_options(*self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop != 1 || !*argv[1])
        return loomctl_usage_error(*self, nop > 1 ? "expected one job id" : "no job id given");
    return -1;
}

/* The quick one-job commands (get, cancel): parses NAME's options and job
 * id, sends {"op": NAME, "job": ID} and waits a short while for *REPLY (new
 * reference, or NULL). Returns a LOOMCTL_* status. */
static int job_request(const char *name, int argc, char **argv, common_opts *o, json_t **reply)
{
    const loomctl_command *self;
    *reply = NULL;
    int rc = job_command(name, argc, argv, o, &self);
    if (rc >= 0)
        return rc;
    int64_t timeout = quick_timeout(self, o);
    if (timeout < 0)
        return LOOMCTL_USAGE;
    json_t *req = request(name);
    if (req)
        json_object_set_new(req, "job", json_string(argv[1]));
    return call(o, req, timeout, reply);
}

int loomctl_cmd_get(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = job_request("get", argc, argv, &o, &reply);
    if (rc == LOOMCTL_OK && reply && !o.json) /* no reply: --help was asked for */
        print_job(json_object_get(reply, "job"));
    json_decref(reply);
    return rc;
}

int loomctl_cmd_wait(int argc, char **argv)
{
    const loomctl_command *self;
    common_opts o = { 0 };
    int rc = job_command("wait", argc, argv, &o, &self);
    if (rc >= 0)
        return rc;
    int64_t limit = -1;
    if (o.timeout && loomctl_parse_seconds(o.timeout, &limit) < 0)
        return loomctl_usage_error(self, "--timeout takes a number of seconds");
    json_t *req = request("wait"), *reply;
    if (req) {
        json_object_set_new(req, "job", json_string(argv[1]));
        if (limit >= 0)
            json_object_set_new(req, "timeout", limit % 1000 ? json_real((double)limit / 1000.0)
                                                             : json_integer(limit / 1000));
    }
    rc = call(&o, req, limit < 0 ? -1 : limit + WAIT_GRACE_MS, &reply);
    if (rc != LOOMCTL_OK)
        goto out;
    const json_t *job = json_object_get(reply, "job");
    if (json_is_true(json_object_get(reply, "timed_out"))) {
        fprintf(stderr, "loomctl: timed out after %s s waiting for job %s (still %s; it goes on)\n",
                o.timeout, argv[1], str_or(job, "state", "?"));
        rc = LOOMCTL_TIMEOUT;
        goto out;
    }
    if (!o.json)
        print_job(job);
    /* the summary already shows the error: only its status here */
    rc = job_status(argv[1], str_or(job, "state", NULL), NULL, true);
out:
    json_decref(reply);
    return rc;
}

int loomctl_cmd_cancel(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = job_request("cancel", argc, argv, &o, &reply);
    if (rc == LOOMCTL_OK && reply && !o.json) { /* no reply: --help was asked for */
        const char *state = str_or(reply, "state", "?");
        printf("%s %s%s\n", str_or(reply, "job", argv[1]), state,
               strcmp(state, "cancelled") == 0 ? "" : " (it had already ended)");
    }
    json_decref(reply);
    return rc;
}

int loomctl_cmd_retry(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = job_request("retry", argc, argv, &o, &reply);
    if (rc == LOOMCTL_OK && reply && !o.json) /* no reply: --help was asked for */
        printf("%s %s (attempt %lld)\n", str_or(reply, "job", argv[1]), str_or(reply, "state", "?"),
               int_of(reply, "attempt"));
    json_decref(reply);
    return rc;
}

/* ---- list ---- */

int loomctl_cmd_list(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("list");
    static const char *const states[] = { "queued", "running", "waiting", "succeeded", "failed",
                                          "cancelled", NULL };
    common_opts o = { 0 };
    const char *state = NULL, *workflow = NULL, *limit_text = NULL, *after = NULL;
    bool oldest = false;
    const loomctl_option opts[] = {
        { "state", 0, &state, NULL },
        { "workflow", 0, &workflow, NULL },
        { "limit", 0, &limit_text, NULL },
        { "after", 0, &after, NULL },
        { "oldest", 0, NULL, &oldest },
        COMMON_OPTIONS(o),
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop)
        return loomctl_usage_error(self, "unexpected argument '%s'", argv[1]);
    size_t k = 0;
    while (state && states[k] && strcmp(states[k], state) != 0)
        k++;
    if (state && !states[k])
        return loomctl_usage_error(self, "--state takes queued, running, waiting, succeeded, "
                                         "failed or cancelled");
    long limit = 0;
    if (limit_text) {
        char *end;
        errno = 0;
        limit = strtol(limit_text, &end, 10);
        if (errno || !*limit_text || *end || limit < 1 || limit > 1000)
            return loomctl_usage_error(self, "--limit takes a number from 1 to 1000");
    }
    int64_t timeout = quick_timeout(self, &o);
    if (timeout < 0)
        return LOOMCTL_USAGE;

    json_t *req = request("list"), *reply;
    if (req) {
        if (state)
            json_object_set_new(req, "state", json_string(state));
        if (workflow)
            json_object_set_new(req, "workflow", json_string(workflow));
        if (limit_text)
            json_object_set_new(req, "limit", json_integer(limit));
        if (after)
            json_object_set_new(req, "after", json_string(after));
        if (oldest)
            json_object_set_new(req, "order", json_string("oldest"));
    }
    rc = call(&o, req, timeout, &reply);
    if (rc != LOOMCTL_OK || o.json)
        goto out;
    const json_t *jobs = json_object_get(reply, "jobs");
    loomctl_table t = { .ncols = 5, .align = "lllll" };
    if (json_array_size(jobs))
        loomctl_table_row(&t, "ID", "STATE", "WORKFLOW", "CREATED", "DURATION");
    else
        fprintf(stderr, "loomctl: no jobs\n");
    int64_t now = loomctl_wall_ms();
    size_t i;
    const json_t *j;
    json_array_foreach(jobs, i, j) {
        char created[64], took[64];
        int64_t started = ms_of(j, "started_ms"), finished = ms_of(j, "finished_ms");
        fmt_duration(took, sizeof took,
                     started < 0 ? -1 : (finished >= 0 ? finished : now) - started);
        loomctl_table_row(&t, str_or(j, "id", "?"), str_or(j, "state", "?"),
                          str_or(j, "workflow", "?"),
                          fmt_time(created, sizeof created, ms_of(j, "created_ms"), false), took);
    }
    loomctl_table_print_free(&t);
    const char *next = str_or(reply, "next", NULL);
    if (next)
        fprintf(stderr, "loomctl: more jobs: loomctl list --after %s%s%s%s%s%s%s%s\n", next,
                state ? " --state " : "", state ? state : "", workflow ? " --workflow " : "",
                workflow ? workflow : "", limit_text ? " --limit " : "",
                limit_text ? limit_text : "", oldest ? " --oldest" : "");
out:
    json_decref(reply);
    return rc;
}

/* ---- workflows, stats ---- */

/* The command's common options and no operand. -1 to go on. */
static int plain_command(const loomctl_command *self, int argc, char **argv, common_opts *o)
{
    const loomctl_option opts[] = { COMMON_OPTIONS(*o), { NULL, 0, NULL, NULL } };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop)
        return loomctl_usage_error(self, "unexpected argument '%s'", argv[1]);
    return quick_timeout(self, o) < 0 ? LOOMCTL_USAGE : -1;
}

/* The quick commands without arguments (workflows, stats): parses NAME's
 * options, sends {"op": NAME} and waits a short while for *REPLY (new
 * reference; NULL when --help was answered). Returns a LOOMCTL_* status. */
static int plain_request(const char *name, int argc, char **argv, common_opts *o, json_t **reply)
{
    const loomctl_command *self = loomctl_command_find(name);
    *reply = NULL;
    int rc = plain_command(self, argc, argv, o);
    if (rc >= 0)
        return rc;
    return call(o, request(name), quick_timeout(self, o), reply);
}

int loomctl_cmd_workflows(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = plain_request("workflows", argc, argv, &o, &reply);
    if (rc != LOOMCTL_OK || !reply || o.json)
        goto out;
    const json_t *list = json_object_get(reply, "workflows");
    loomctl_table t = { .ncols = 4, .align = "lrll" };
    if (json_array_size(list))
        loomctl_table_row(&t, "NAME", "LOAD", "VERSION", "FILE");
    else
        fprintf(stderr, "loomctl: no workflows loaded\n");
    size_t i;
    const json_t *w;
    json_array_foreach(list, i, w) {
        char load[32] = "-";
        const json_t *served = json_object_get(w, "served");
        if (json_is_number(json_object_get(w, "load")) && !json_is_false(served))
            snprintf(load, sizeof load, "%lld", int_of(w, "load"));
        loomctl_table_row(&t, str_or(w, "name", "-"), load, str_or(w, "version", "-"),
                          str_or(w, "file", "?"));
        /* the compiler's lines, as one string or an array of them */
        const json_t *err = json_object_get(w, "error");
        sbuf text = SBUF_INIT;
        if (!json_is_null(err) && err && !json_is_true(json_object_get(w, "served")))
            sbuf_adds(&text, "    (not served: no version of it compiled)\n");
        const char *line = json_string_value(err);
        size_t k;
        const json_t *item;
        json_array_foreach(err, k, item)
            sbuf_addf(&text, "    %s\n", json_string_value(item) ? json_string_value(item) : "?");
        for (const char *p = line; p && *p;) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            sbuf_addf(&text, "    %.*s\n", n, p);
            p = nl ? nl + 1 : p + n;
        }
        if (text.failed) {
            t.oom = true;
        } else if (text.n) {
            text.p[text.n - 1] = 0; /* loomctl_table_note adds the last newline */
            loomctl_table_note(&t, text.p);
        }
        sbuf_free(&text);
    }
    loomctl_table_print_free(&t);
out:
    json_decref(reply);
    return rc;
}

/* The Prometheus text as GET /metrics serves it, whether or not loomd
 * listens for HTTP (--json: the reply itself). */
int loomctl_cmd_metrics(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = plain_request("metrics", argc, argv, &o, &reply);
    if (rc == LOOMCTL_OK && reply && !o.json) {
        const char *text = json_string_value(json_object_get(reply, "text"));
        fputs(text ? text : "", stdout);
    }
    json_decref(reply);
    return rc;
}

int loomctl_cmd_stats(int argc, char **argv)
{
    common_opts o = { 0 };
    json_t *reply;
    int rc = plain_request("stats", argc, argv, &o, &reply);
    if (rc != LOOMCTL_OK || !reply || o.json)
        goto out;
    char a[64];
    long long uptime = int_of(reply, "uptime_s");
    if (uptime < 60)
        printf("uptime:       %lld s\n", uptime);
    else
        printf("uptime:       %s\n", fmt_duration(a, sizeof a, uptime * 1000));
    printf("connections:  %lld\n", int_of(reply, "connections"));
    printf("workflows:    %lld\n", int_of(reply, "workflows"));
    const json_t *jobs = json_object_get(reply, "jobs");
    printf("jobs:         %lld queued, %lld running, %lld succeeded, %lld failed, %lld cancelled\n",
           int_of(jobs, "queued"), int_of(jobs, "running"), int_of(jobs, "succeeded"),
           int_of(jobs, "failed"), int_of(jobs, "cancelled"));
    const json_t *providers = json_object_get(reply, "providers");
    if (!json_object_size(providers))
        goto out;
    putchar('\n');
    loomctl_table t = { .ncols = 12, .align = "llrrrrrrrrrl" };
    loomctl_table_row(&t, "PROVIDER", "PLUGIN", "IN FLIGHT", "QUEUED", "REQUESTS", "ERRORS",
                      "429S", "TIMEOUTS", "INPUT TOKENS", "OUTPUT TOKENS", "LATENCY", "STATUS");
    const char *name;
    const json_t *p;
    json_object_foreach((json_t *)providers, name, p) {
        /* a member missing (an older loomd) shows as "-" */
        static const char *const keys[] = { "in_flight", "queued", "requests", "failed",
                                            "rate_limited", "timeouts", "input_tokens",
                                            "output_tokens" };
        char c[10][48];
        for (size_t k = 0; k < 8; k++) {
            if (json_is_number(json_object_get(p, keys[k])))
                snprintf(c[k], sizeof c[k], "%lld", int_of(p, keys[k]));
            else
                snprintf(c[k], sizeof c[k], "-");
        }
        if (json_is_number(json_object_get(p, "in_flight")) &&
            json_is_number(json_object_get(p, "concurrency")))
            snprintf(c[0], sizeof c[0], "%lld/%lld", int_of(p, "in_flight"),
                     int_of(p, "concurrency"));
        const json_t *latency = json_object_get(p, "latency_ms");
        if (json_is_number(latency))
            snprintf(c[8], sizeof c[8], "%.1f ms", json_number_value(latency));
        else
            snprintf(c[8], sizeof c[8], "-");
        if (json_is_true(json_object_get(p, "disabled")))
            snprintf(c[9], sizeof c[9], "disabled");
        else if (int_of(p, "paused_ms") > 0)
            snprintf(c[9], sizeof c[9], "paused %s",
                     fmt_duration(a, sizeof a, int_of(p, "paused_ms")));
        else
            snprintf(c[9], sizeof c[9], "ok");
        loomctl_table_row(&t, name, str_or(p, "plugin", "-"), c[0], c[1], c[2], c[3], c[4], c[5],
                          c[6], c[7], c[8], c[9]);
    }
    loomctl_table_print_free(&t);
out:
    json_decref(reply);
    return rc;
}
