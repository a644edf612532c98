/* config.c -- the mock provider's config: read once per instance, at init.
 *
 * The host has already checked types against the option table and filled in
 * defaults, but init is also called directly (tests, other hosts), so every
 * value is checked again here and an absent one takes its default. */
#include <stdlib.h>
#include <string.h>

#include "mock_internal.h"

static const struct {
    const char *name;
    loom_errcode code;
} mock_fail_codes[] = {
    { "upstream", LOOM_E_UPSTREAM },
    { "rate_limited", LOOM_E_RATE_LIMITED },
    { "timeout", LOOM_E_TIMEOUT },
    { "quota", LOOM_E_QUOTA },
    { "invalid_request", LOOM_E_INVALID_REQUEST },
    { "invalid_output", LOOM_E_INVALID_OUTPUT },
};

/* Reads integer KEY into *OUT within [MIN, MAX]; absent or null keeps *OUT
 * (the host fills in declared defaults; direct callers may leave them out). */
static int config_int(loom_ctx *ctx, json_t *config, const char *key, int64_t min,
                      int64_t max, int64_t *out)
{
    json_t *v = json_object_get(config, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: %s must be an integer from %lld to %lld", key,
                   (long long)min, (long long)max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int config_string(loom_ctx *ctx, json_t *config, const char *key, const char **out)
{
    json_t *v = json_object_get(config, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: %s must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int config_answers(loom_ctx *ctx, mock_instance *in, json_t *list)
{
    json_t *one;
    size_t i;

    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: answers must be a list of {match, answer}");
        return -1;
    }
    in->answers = calloc(json_array_size(list) + 1, sizeof *in->answers);
    if (!in->answers)
        goto nomem;
    json_array_foreach(list, i, one) {
        const char *match = json_string_value(json_object_get(one, "match"));
        const char *answer = json_string_value(json_object_get(one, "answer"));
        mock_answer *a = &in->answers[i];
        size_t n = match ? strlen(match) : 0;
        int icase = n >= 3 && match[0] == '/' && strcmp(match + n - 2, "/i") == 0;
        int err;

        if (!json_is_object(one) || json_object_size(one) != 2 || !match || !*match || !answer) {
            loom_error(ctx, LOOM_E_CONFIG,
                       "mock: answers[%zu] must be {match: string, answer: string}", i);
            return -1;
        }
        a->answer = strdup(answer);
        if (!a->answer)
            goto nomem;
        in->nanswers = i + 1;    /* from here mock_instance_free cleans A up */
        if (n >= 2 && match[0] == '/' && (match[n - 1] == '/' || icase)) {
            char *pattern = strndup(match + 1, n - (icase ? 3 : 2));
            if (!pattern)
                goto nomem;
            err = regcomp(&a->re, pattern, REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0));
            free(pattern);
            if (err != 0) {
                char msg[128];
                regerror(err, &a->re, msg, sizeof msg);
                loom_error(ctx, LOOM_E_CONFIG, "mock: answers[%zu]: bad regex %s: %s", i,
                           match, msg);
                return -1;
            }
            a->compiled = 1;
        } else {
            a->needle = strdup(match);
            if (!a->needle)
                goto nomem;
        }
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
    return -1;
}

static int config_script(loom_ctx *ctx, mock_instance *in, json_t *list)
{
    json_t *one;
    size_t i;

    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: script must be a list of strings");
        return -1;
    }
    in->script = calloc(json_array_size(list) + 1, sizeof *in->script);
    if (!in->script)
        goto nomem;
    json_array_foreach(list, i, one) {
        if (!json_is_string(one)) {
            loom_error(ctx, LOOM_E_CONFIG, "mock: script[%zu] must be a string", i);
            return -1;
        }
        in->script[i] = strdup(json_string_value(one));
        if (!in->script[i])
            goto nomem;
        in->nscript = i + 1;
    }
    return 0;
nomem:
    loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
    return -1;
}

/* tool_script: a list whose entries are a list of tool calls ({name,
 * arguments}) or a string (a final answer). */
static int config_tool_script(loom_ctx *ctx, mock_instance *in, json_t *list)
{
    json_t *turn, *call;
    size_t i, k;

    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: tool_script must be a list");
        return -1;
    }
    json_array_foreach(list, i, turn) {
        if (json_is_string(turn))
            continue;
        if (!json_is_array(turn) || json_array_size(turn) == 0) {
            loom_error(ctx, LOOM_E_CONFIG,
                       "mock: tool_script[%zu] must be a string or a non-empty list of "
                       "{name, arguments}", i);
            return -1;
        }
        json_array_foreach(turn, k, call) {
            json_t *args = json_object_get(call, "arguments");
            if (!json_is_object(call) || !json_is_string(json_object_get(call, "name")) ||
                (args && !json_is_object(args))) {
                loom_error(ctx, LOOM_E_CONFIG,
                           "mock: tool_script[%zu][%zu] must be {name: string, arguments: "
                           "mapping}", i, k);
                return -1;
            }
        }
    }
    in->tool_script = json_incref(list);
    return 0;
}

void mock_instance_free(mock_instance *in)
{
    json_decref(in->tool_script);
    for (size_t i = 0; i < in->nanswers; i++) {
        free(in->answers[i].answer);
        free(in->answers[i].needle);
        if (in->answers[i].compiled)
            regfree(&in->answers[i].re);
    }
    free(in->answers);
    for (size_t i = 0; i < in->nscript; i++)
        free(in->script[i]);
    free(in->script);
    free(in->name);
    pthread_mutex_destroy(&in->lock);
    free(in);
}

int mock_config_read(loom_ctx *ctx, json_t *config, mock_instance *in)
{
    const char *name = "mock", *mode = "echo", *fail_code = "upstream";
    int64_t latency = 20, jitter = 0, seed = 0, dims = 8, every = 0, retry_after = 0;
    json_t *rate;
    size_t i;

    if (config && !json_is_object(config)) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: the config must be a mapping");
        return -1;
    }
    if (config_string(ctx, config, "name", &name) < 0 ||
        config_string(ctx, config, "mode", &mode) < 0 ||
        config_string(ctx, config, "fail_code", &fail_code) < 0 ||
        config_int(ctx, config, "latency", 0, INT64_C(86400000), &latency) < 0 ||
        config_int(ctx, config, "jitter", 0, INT64_C(86400000), &jitter) < 0 ||
        config_int(ctx, config, "seed", INT64_MIN, INT64_MAX, &seed) < 0 ||
        config_int(ctx, config, "embed_dims", 1, 65536, &dims) < 0 ||
        config_int(ctx, config, "fail_every", 0, INT64_MAX, &every) < 0 ||
        config_int(ctx, config, "retry_after", 0, INT64_C(86400000), &retry_after) < 0)
        return -1;
    in->fail_every = (uint64_t)every;
    in->retry_after_ms = (uint64_t)retry_after;
    in->latency_ms = (uint64_t)latency;
    in->jitter_ms = (uint64_t)jitter;
    in->seed = (uint64_t)seed;
    in->embed_dims = (size_t)dims;

    if (strcmp(mode, "echo") == 0) {
        in->mode = MOCK_MODE_ECHO;
    } else if (strcmp(mode, "messages") == 0) {
        in->mode = MOCK_MODE_MESSAGES;
    } else {
        loom_error(ctx, LOOM_E_CONFIG, "mock: unknown mode \"%s\" (echo or messages)", mode);
        return -1;
    }

    for (i = 0; i < sizeof mock_fail_codes / sizeof mock_fail_codes[0]; i++)
        if (strcmp(fail_code, mock_fail_codes[i].name) == 0)
            break;
    if (i == sizeof mock_fail_codes / sizeof mock_fail_codes[0]) {
        loom_error(ctx, LOOM_E_CONFIG, "mock: unknown fail_code \"%s\"", fail_code);
        return -1;
    }
    in->fail_code = mock_fail_codes[i].code;

    rate = json_object_get(config, "fail_rate");
    if (rate && !json_is_null(rate)) {
        double r = json_number_value(rate);
        /* The negated test also refuses NaN. */
        if (!json_is_number(rate) || !(r >= 0.0 && r <= 1.0)) {
            loom_error(ctx, LOOM_E_CONFIG, "mock: fail_rate must be a number from 0 to 1");
            return -1;
        }
        in->fail_rate = r;
    }

    if (config_answers(ctx, in, json_object_get(config, "answers")) < 0 ||
        config_script(ctx, in, json_object_get(config, "script")) < 0 ||
        config_tool_script(ctx, in, json_object_get(config, "tool_script")) < 0)
        return -1;

    in->name = strdup(name);
    if (!in->name) {
        loom_error(ctx, LOOM_E_NOMEM, "mock: out of memory");
        return -1;
    }
    return 0;
}
