/* mock.c -- the offline provider: deterministic answers after a latency.
 *
 * Provider "mock" answers chat and embedding calls in-process through the
 * ABI's `invoke` hook, after a configurable latency measured by host timers
 * (never a sleeping thread), so thousands of calls can be in flight on the
 * reactor at no cost. Everything it does is a function of its config, the
 * request and the number of calls the instance has started: the same seed and
 * the same calls give the same answers, delays and failures, which is what
 * tests and offline example workflows need.
 *
 * Chat answers, first rule that applies:
 *   1. `answers`: the first { match, answer } whose match is found in the
 *      prompt (the last user message's text). A match written "/re/" (or
 *      "/re/i") is a POSIX extended regex, anything else a plain substring.
 *   2. `script`: the next entry of the list, in order per instance, cycling.
 *   3. `mode`: "echo" gives the prompt itself, exactly; "messages" gives the
 *      whole message array as compact JSON (to check what was rendered).
 * Tool calls (ABI 2.3): when the request offers tools and the instance has
 * a `tool_script`, the conversation's turn N (the number of assistant
 * messages in it that called tools) is answered by entry N of the script,
 * before the rules above: a list of {name, arguments} is an answer calling
 * those tools (ids call_N_K), a string a final answer in which `{results}`
 * stands for the contents of the conversation's tool results, one a line.
 * Past the script's end the rules above answer. The turn comes from the
 * request alone, so parallel conversations and resumed ones get the same
 * answers.
 * With json_mode the answer is returned as it is, never wrapped: parsing it
 * (and failing with invalid_output) is the engine's business, which is what a
 * test of that path wants.
 *
 * Embeddings: one unit vector of `embed_dims` numbers per input, in order,
 * from a hash of the input alone, so equal strings embed equally.
 *
 * Failures: call number N of an instance (0-based, counting every call
 * started) fails with `fail_code` when splitmix64(seed, N) < fail_rate, or
 * when `fail_every` is set and N is a multiple of it (so the first call
 * fails, and a host that retries gets the next one through). A failure
 * carries `retry_after` as its Retry-After when set (loom_fail_after), as a
 * 429 with a Retry-After header would. A failed call does not consume a
 * script entry. Failures, like answers, are delivered after the latency.
 *
 * Stats: every instance registers under its `name` option (the host sets it
 * to the instance name) and the lambda `mock.stats` reads its counters;
 * mock_stats_get also has when the first and the latest call started, which
 * a test of the host's limits measures it by. The
 * registry is the plugin's state (made by the plugin's init, handed to every
 * provider instance's init and to the lambda), behind a mutex because init,
 * fini and lambdas may run on threads other than the reactor. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loom/plugin.h"

#include "mock_internal.h"

/* One call in flight: what invoke computed, waiting for its timer. */
struct mock_pending {
    list_link link;              /* in the instance's PENDING */
    mock_instance *inst;
    loom_call *call;
    void *timer;
    json_t *output;              /* owned; stolen by complete */
    json_t *tool_calls;          /* owned, or NULL; stolen by complete_tools */
    loom_usage usage;
    loom_errcode fail_code;      /* LOOM_OK: complete, else fail */
    uint64_t retry_after_ms;     /* with a failure: its Retry-After, 0: none */
};

/* The live instances by name: the plugin's state. */
struct mock_registry {
    pthread_mutex_t lock;
    mock_instance *head;
};

/* ---- deterministic numbers */

static uint64_t splitmix64(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double unit_double(uint64_t x)
{
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

#define FNV_BASIS UINT64_C(0xcbf29ce484222325)

/* ---- requests */

/* The text of a message's content: a string, or the "text" parts of an
 * array (as multimodal APIs write it), appended to BUF (NULL: only counts;
 * running out of memory is left in BUF's failure flag). Returns the number
 * of bytes of text. */
static long content_text(json_t *content, sbuf *buf)
{
    json_t *one;
    size_t i;
    long total = 0;

    if (json_is_string(content)) {
        size_t n = json_string_length(content);
        if (buf)
            sbuf_add(buf, json_string_value(content), n);
        return (long)n;
    }
    json_array_foreach(content, i, one)
        total += content_text(json_object_get(one, "text"), buf);
    return total;
}

/* The prompt: a new malloc'd copy of the last user message's text ("" when
 * there is none), or NULL when out of memory. */
static char *prompt_text(json_t *messages)
{
    sbuf b = SBUF_INIT;

    for (size_t i = json_array_size(messages); i-- > 0;) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "user") == 0) {
            content_text(json_object_get(m, "content"), &b);
            break;
        }
    }
    return sbuf_steal(&b, NULL);
}

static int64_t tokens_of(uint64_t bytes)
{
    return (int64_t)((bytes + 3) / 4);
}

static int answer_matches(const mock_answer *a, const char *prompt)
{
    if (a->needle)
        return strstr(prompt, a->needle) != NULL;
    return regexec(&a->re, prompt, 0, NULL, 0) == 0;
}

/* The turns of REQ's tool conversation so far: its assistant messages that
 * called tools. */
static size_t tool_turns(json_t *messages)
{
    json_t *m;
    size_t i, n = 0;

    json_array_foreach(messages, i, m)
        if (json_array_size(json_object_get(m, "tool_calls")) > 0)
            n++;
    return n;
}

/* The contents of REQ's tool results, one a line, for `{results}`. */
static char *tool_results(json_t *messages)
{
    sbuf b = SBUF_INIT;
    json_t *m;
    size_t i;
    int first = 1;

    sbuf_add(&b, "", 0);
    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || strcmp(role, "tool") != 0)
            continue;
        if (!first)
            sbuf_add(&b, "\n", 1);
        first = 0;
        content_text(json_object_get(m, "content"), &b);
    }
    return sbuf_steal(&b, NULL);
}

/* A tool_script answer for REQ, when it offers tools and the script has an
 * entry for its turn: *TOOL_CALLS (new) and the text (new), or the text of
 * a final entry with `{results}` replaced. 0: no entry (the other rules
 * answer), 1: answered, -1: out of memory. */
static int tool_answer(mock_instance *in, const loom_request *req, json_t **text,
                       json_t **tool_calls)
{
    size_t turn = tool_turns(req->messages);
    json_t *entry, *call;
    size_t k;

    if (!in->tool_script || !json_is_array(req->tools) ||
        turn >= json_array_size(in->tool_script))
        return 0;
    entry = json_array_get(in->tool_script, turn);
    if (json_is_string(entry)) {
        const char *s = json_string_value(entry), *at = strstr(s, "{results}");
        char *res;
        sbuf b = SBUF_INIT;
        if (!at) {
            *text = json_string(s);
            return *text ? 1 : -1;
        }
        if (!(res = tool_results(req->messages)))
            return -1;
        sbuf_add(&b, s, (size_t)(at - s));
        sbuf_add(&b, res, strlen(res));
        sbuf_add(&b, at + 9, strlen(at + 9));
        free(res);
        res = sbuf_steal(&b, NULL);
        *text = res ? json_string(res) : NULL;
        free(res);
        return *text ? 1 : -1;
    }
    if (!(*tool_calls = json_array()))
        return -1;
    json_array_foreach(entry, k, call) {
        char id[48];
        json_t *args = json_object_get(call, "arguments");
        snprintf(id, sizeof id, "call_%zu_%zu", turn + 1, k + 1);
        if (json_array_append_new(*tool_calls,
                                  json_pack("{s:s, s:O, s:o}", "id", id, "name",
                                            json_object_get(call, "name"), "arguments",
                                            args ? json_deep_copy(args) : json_object())) < 0)
            return -1;
    }
    *text = json_string("");
    return *text ? 1 : -1;
}

/* The chat answer for REQ (new reference), per the rules at the top, or
 * NULL after loom_error. Called with the instance locked (script cursor). */
static json_t *chat_answer(loom_ctx *ctx, mock_instance *in, const loom_request *req,
                           const char *prompt)
{
    json_t *out;
    char *text;

    for (size_t i = 0; i < in->nanswers; i++)
        if (answer_matches(&in->answers[i], prompt))
            return json_string(in->answers[i].answer);
    if (in->nscript > 0)
        return json_string(in->script[in->script_next++ % in->nscript]);
    if (in->mode == MOCK_MODE_ECHO)
        return json_string(prompt);
    text = json_dumps(req->messages, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
        return NULL;
    }
    out = json_string(text);
    free(text);
    return out;
}

/* The embedding of one string: a unit vector seeded by its hash. */
static json_t *embed_one(size_t dims, const char *s, size_t n)
{
    json_t *vec = json_array();
    double *x = malloc(dims * sizeof *x);
    double norm = 0;
    uint64_t h = fnv1a(FNV_BASIS, s, n);

    if (!vec || !x)
        goto fail;
    for (size_t i = 0; i < dims; i++) {
        x[i] = unit_double(splitmix64(h + i)) * 2.0 - 1.0;
        norm += x[i] * x[i];
    }
    norm = sqrt(norm);
    for (size_t i = 0; i < dims; i++) {
        /* A zero vector is all but impossible; keep the result a unit one. */
        double v = norm > 0 ? x[i] / norm : (i == 0 ? 1.0 : 0.0);
        if (json_array_append_new(vec, json_real(v)) != 0)
            goto fail;
    }
    free(x);
    return vec;
fail:
    free(x);
    json_decref(vec);
    return NULL;
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the call in flight */

/* The timer: the latency is over. The pending record is freed before the
 * host hears of it, because complete may start new calls at once. */
static void mock_fire(void *ud)
{
    mock_pending *p = ud;
    mock_instance *in = p->inst;
    loom_call *call = p->call;
    json_t *output = p->output, *tool_calls = p->tool_calls;
    loom_usage usage = p->usage;
    loom_errcode code = p->fail_code;
    uint64_t retry_after = p->retry_after_ms;

    pthread_mutex_lock(&in->lock);
    list_del(&p->link);
    in->stats.in_flight--;
    if (code == LOOM_OK)
        in->stats.completed++;
    else
        in->stats.failed++;
    pthread_mutex_unlock(&in->lock);
    free(p);

    if (code == LOOM_OK && tool_calls) {
        loom_complete_tools(call, output, tool_calls, &usage);
    } else if (code == LOOM_OK) {
        loom_complete(call, output, &usage);
    } else {
        json_decref(output);
        json_decref(tool_calls);
        if (retry_after)
            loom_fail_after(call, code, retry_after, "mock: injected failure");
        else
            loom_fail(call, code, "mock: injected failure");
    }
}

static int mock_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    mock_instance *in = state;
    mock_pending *p = NULL;
    char *prompt = NULL;
    uint64_t delay, hash = in->seed, in_bytes = 0, index;
    int locked = 0;

    if (req->kind == LOOM_CALL_CHAT && !json_is_array(req->messages)) {
        loom_error(ctx, LOOM_E_INVALID_REQUEST, "mock: messages must be an array");
        return -1;
    }
    if (req->kind == LOOM_CALL_EMBED) {
        json_t *s;
        size_t i;
        if (!json_is_array(req->inputs)) {
            loom_error(ctx, LOOM_E_INVALID_REQUEST, "mock: embedding inputs must be an array");
            return -1;
        }
        json_array_foreach(req->inputs, i, s) {
            if (!json_is_string(s)) {
                loom_error(ctx, LOOM_E_INVALID_REQUEST,
                           "mock: embedding input %zu is not a string", i);
                return -1;
            }
        }
    }

    p = calloc(1, sizeof *p);
    if (!p)
        goto nomem;
    p->inst = in;
    p->call = call;

    if (req->kind == LOOM_CALL_CHAT) {
        json_t *m;
        size_t i;
        prompt = prompt_text(req->messages);
        if (!prompt)
            goto nomem;
        json_array_foreach(req->messages, i, m)
            in_bytes += (uint64_t)content_text(json_object_get(m, "content"), NULL);
        hash = fnv1a(FNV_BASIS ^ in->seed, prompt, strlen(prompt));
    } else {
        json_t *s;
        size_t i;
        hash ^= FNV_BASIS;
        json_array_foreach(req->inputs, i, s) {
            in_bytes += json_string_length(s);
            hash = fnv1a(hash, json_string_value(s), json_string_length(s) + 1);
        }
    }

    pthread_mutex_lock(&in->lock);
    locked = 1;
    index = in->sequence;
    if ((in->fail_rate > 0 &&
         unit_double(splitmix64(in->seed ^ splitmix64(index))) < in->fail_rate) ||
        (in->fail_every > 0 && index % in->fail_every == 0)) {
        p->fail_code = in->fail_code;
        p->retry_after_ms = in->retry_after_ms;
    }
    if (p->fail_code == LOOM_OK) {
        if (req->kind == LOOM_CALL_CHAT) {
            int t = tool_answer(in, req, &p->output, &p->tool_calls);
            if (t < 0) {
                json_decref(p->output);
                p->output = NULL;
            } else if (t == 0) {
                p->output = chat_answer(ctx, in, req, prompt);
            }
        } else {
            json_t *s;
            size_t i;
            p->output = json_array();
            json_array_foreach(req->inputs, i, s) {
                json_t *v = p->output
                    ? embed_one(in->embed_dims, json_string_value(s), json_string_length(s))
                    : NULL;
                if (!v || json_array_append_new(p->output, v) != 0) {
                    json_decref(p->output);
                    p->output = NULL;
                    break;
                }
            }
        }
        if (!p->output)
            goto nomem;
    }
    p->usage.input_tokens = tokens_of(in_bytes);
    p->usage.output_tokens = json_is_string(p->output)
        ? tokens_of(json_string_length(p->output)) : 0;
    if (p->tool_calls) {
        char *tc = json_dumps(p->tool_calls, JSON_COMPACT);
        p->usage.output_tokens += tc ? tokens_of(strlen(tc)) : 0;
        free(tc);
    }

    delay = in->latency_ms;
    if (in->jitter_ms > 0)
        delay += splitmix64(hash) % (in->jitter_ms + 1);
    /* The timer may fire only after invoke returns (it runs on the reactor,
     * from a later pass), so arming it under the lock is safe. */
    p->timer = call->api->timer_add(call, delay, mock_fire, p);
    if (!p->timer)
        goto nomem;

    in->sequence++;
    in->stats.calls++;
    in->stats.last_start_us = now_us();
    if (!in->stats.first_start_us)
        in->stats.first_start_us = in->stats.last_start_us;
    if (++in->stats.in_flight > in->stats.max_in_flight)
        in->stats.max_in_flight = in->stats.in_flight;
    list_add_head(&in->pending, &p->link);
    pthread_mutex_unlock(&in->lock);
    free(prompt);
    return 0;

nomem:
    if (locked)
        pthread_mutex_unlock(&in->lock);
    loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
    if (p) {
        json_decref(p->output);
        json_decref(p->tool_calls);
    }
    free(p);
    free(prompt);
    return -1;
}

/* Linear in the calls in flight: cancels are rare (timeouts, cancelled
 * jobs), and a list keeps every call's memory small. */
static void mock_cancel(void *state, loom_call *call)
{
    mock_instance *in = state;
    mock_pending *p = NULL;

    pthread_mutex_lock(&in->lock);
    LIST_EACH_SAFE(l, nx, &in->pending) {
        if (LIST_OWNER(l, mock_pending, link)->call == call) {
            p = LIST_OWNER(l, mock_pending, link);
            break;
        }
    }
    if (p) {
        list_del(&p->link);
        in->stats.in_flight--;
        in->stats.cancelled++;
    }
    pthread_mutex_unlock(&in->lock);
    if (!p)
        return;                  /* already finished: nothing to drop */
    call->api->timer_cancel(call, p->timer);
    json_decref(p->output);
    json_decref(p->tool_calls);
    free(p);
}


static int mock_init(loom_ctx *ctx, void *plugin_state, json_t *config, void **state)
{
    mock_instance *in = calloc(1, sizeof *in);

    if (!in) {
        loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
        return -1;
    }
    pthread_mutex_init(&in->lock, NULL);
    list_init(&in->pending);
    if (mock_config_read(ctx, config, in) < 0) {
        mock_instance_free(in);
        return -1;
    }
    /* without the plugin's state (init called bare) there are no stats */
    if ((in->registry = plugin_state)) {
        pthread_mutex_lock(&in->registry->lock);
        in->next_live = in->registry->head;
        in->registry->head = in;
        pthread_mutex_unlock(&in->registry->lock);
    }
    *state = in;
    return 0;
}


/* The host cancels its calls before fini; any left are dropped here, timers
 * first (the host's api must still be alive), and never finished. */
static void mock_fini(void *state)
{
    mock_instance *in = state, **link;

    if (!in)
        return;
    if (in->registry) {
        pthread_mutex_lock(&in->registry->lock);
        for (link = &in->registry->head; *link && *link != in; link = &(*link)->next_live)
            ;
        if (*link)
            *link = in->next_live;
        pthread_mutex_unlock(&in->registry->lock);
    }

    LIST_EACH_SAFE(l, nx, &in->pending) {
        mock_pending *p = LIST_OWNER(l, mock_pending, link);
        list_del(l);
        p->call->api->timer_cancel(p->call, p->timer);
        json_decref(p->output);
        json_decref(p->tool_calls);
        free(p);
    }
    mock_instance_free(in);
}

/* ---- stats */

int mock_stats_get(void *plugin_state, const char *name, mock_stats *out)
{
    mock_registry *reg = plugin_state;
    mock_instance *in;

    if (!reg)
        return -1;
    pthread_mutex_lock(&reg->lock);
    for (in = reg->head; in && strcmp(in->name, name) != 0; in = in->next_live)
        ;
    if (in) {
        pthread_mutex_lock(&in->lock);
        *out = in->stats;
        pthread_mutex_unlock(&in->lock);
    }
    pthread_mutex_unlock(&reg->lock);
    return in ? 0 : -1;
}

/* mock.stats: { provider: NAME } -> the counters of that instance. */
static json_t *mock_stats_lambda(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    json_t *v = json_object_get(args, "provider");
    const char *name = v ? json_string_value(v) : "mock";
    mock_stats s;
    json_t *out;

    if (!name) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "mock.stats: provider must be a string");
        return NULL;
    }
    if (mock_stats_get(state, name, &s) < 0) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "mock.stats: no mock provider named \"%s\"", name);
        return NULL;
    }
    out = json_pack("{sIsIsIsIsIsI}", "calls", (json_int_t)s.calls,
                    "completed", (json_int_t)s.completed, "failed", (json_int_t)s.failed,
                    "cancelled", (json_int_t)s.cancelled, "in_flight", (json_int_t)s.in_flight,
                    "max_in_flight", (json_int_t)s.max_in_flight);
    if (!out)
        loom_error(ctx, LOOM_E_NOMEM, "mock.stats: out of memory");
    return out;
}

/* ---- descriptors */

static const loom_option mock_options[] = {
    { "name", LOOM_OPT_STRING, "mock", 0,
      "the instance name (set by the host), under which mock.stats finds it" },
    { "model", LOOM_OPT_STRING, "mock", 0, "accepted and ignored" },
    { "latency", LOOM_OPT_DURATION, "20ms", 0, "time before each answer" },
    { "jitter", LOOM_OPT_DURATION, "0ms", 0,
      "up to this much more, deterministic from seed and request" },
    { "mode", LOOM_OPT_STRING, "echo", 0,
      "echo: the prompt itself; messages: the message array as JSON" },
    { "answers", LOOM_OPT_JSON, NULL, 0,
      "[{match: substring or /regex/, answer: text}], first match wins" },
    { "script", LOOM_OPT_JSON, NULL, 0, "[text, ...] answered in turn, cycling" },
    { "tool_script", LOOM_OPT_JSON, NULL, 0,
      "[[{name, arguments}, ...] or text, ...]: with tools offered, entry N answers a "
      "conversation's turn N (tool calls, or a final text where {results} is the tool "
      "results, one a line)" },
    { "fail_rate", LOOM_OPT_DOUBLE, "0", 0, "share of calls that fail, 0 to 1" },
    { "fail_code", LOOM_OPT_STRING, "upstream", 0,
      "upstream, rate_limited, timeout, quota, invalid_request or invalid_output" },
    { "fail_every", LOOM_OPT_INT, "0", 0,
      "calls 0, N, 2N... fail with fail_code (0: off), counting every call started" },
    { "retry_after", LOOM_OPT_DURATION, "0ms", 0,
      "the Retry-After a failure carries (0: none), as a 429's header would" },
    { "seed", LOOM_OPT_INT, "0", 0, "seeds failures and jitter" },
    { "embed_dims", LOOM_OPT_INT, "8", 0, "length of embedding vectors" },
    { NULL, 0, NULL, 0, NULL }
};

static const loom_option mock_stats_args[] = {
    { "provider", LOOM_OPT_STRING, "mock", 0, "the mock provider instance" },
    { NULL, 0, NULL, 0, NULL }
};

static const loom_provider mock_providers[] = { {
    .name = "mock",
    .options = mock_options,
    .init = mock_init,
    .fini = mock_fini,
    .summary = "offline provider: deterministic answers, latency and failure injection",
    .invoke = mock_invoke,
    .cancel = mock_cancel,
} };

static const loom_lambda mock_lambdas[] = { {
    .name = "stats",
    .fn = mock_stats_lambda,
    .flags = 0,
    .args = mock_stats_args,
    .summary = "call counters of a mock provider instance",
} };

static int mock_plugin_init(loom_ctx *ctx, json_t *config, void **state)
{
    mock_registry *reg = calloc(1, sizeof *reg);
    (void)config;
    if (!reg) {
        loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
        return -1;
    }
    pthread_mutex_init(&reg->lock, NULL);
    *state = reg;
    return 0;
}

/* After every instance's fini (the host ends instances before plugins). */
static void mock_plugin_fini(void *state)
{
    mock_registry *reg = state;
    if (!reg)
        return;
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static const loom_plugin mock_plugin = {
    LOOM_PLUGIN_HEADER,
    .name = "mock",
    .version = "1.0",
    .description = "the offline mock provider",
    .lambdas = mock_lambdas,
    .nlambdas = sizeof mock_lambdas / sizeof mock_lambdas[0],
    .providers = mock_providers,
    .nproviders = sizeof mock_providers / sizeof mock_providers[0],
    .init = mock_plugin_init,
    .fini = mock_plugin_fini,
};

LOOM_PLUGIN_DEFINE(mock)
{
    return &mock_plugin;
}
