/* json.c -- the std plugin's JSON lambdas: parse, stringify, pick, merge,
 * const and length.
 *
 * All of them take borrowed INPUT and ARGS and return a new reference; the
 * input is never modified (merge copies before updating), since the host may
 * share one value between several nodes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/std/std.h"

json_t *std_json_parse(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.json_parse";
    json_error_t err;
    json_t *v;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    if (!json_is_string(input))
        return std_bad_input(ctx, name, "a string", input);
    /* DECODE_ANY: a bare number or string is JSON too; ALLOW_NUL: "\u0000"
     * is representable in a jansson string, so refusing it gains nothing. */
    v = json_loadb(json_string_value(input), json_string_length(input),
                   JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                   "%s: invalid JSON at line %d, column %d (byte %d): %s", name, err.line,
                   err.column, err.position, err.text);
        return NULL;
    }
    return v;
}

json_t *std_json_stringify(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.json_stringify";
    int pretty;
    char *text;
    json_t *out;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_bool(ctx, name, args, "pretty", 0, &pretty) < 0)
        return NULL;
    if (!input)
        return std_bad_input(ctx, name, "a value", input);
    text = json_dumps(input, JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
    if (!text)
        return std_nomem(ctx, name);
    out = json_string(text);
    free(text);
    return out ? out : std_nomem(ctx, name);
}

/* Array indices in paths are plain decimal, no sign, no leading spaces: the
 * strict parse keeps "a.-1" or "a. 2" from quietly meaning something. */
static int path_index(const char *s, size_t n, size_t *out)
{
    size_t v = 0;

    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (size_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int std_json_path(json_t *root, const char *path, json_t **out)
{
    /* A private copy so each segment can be NUL-terminated in place for
     * json_object_get (jansson 2.13 has no length-taking getter). */
    char *copy = strdup(path), *p;
    json_t *cur = root;

    if (!copy)
        return -1;
    p = copy;
    while (cur) {
        char *dot = strchr(p, '.');
        size_t idx;

        if (dot)
            *dot = '\0';
        if (json_is_object(cur))
            cur = json_object_get(cur, p);
        else if (json_is_array(cur) && path_index(p, strlen(p), &idx) == 0)
            cur = json_array_get(cur, idx);
        else
            cur = NULL;
        if (!dot)
            break;
        p = dot + 1;
    }
    free(copy);
    *out = cur;
    return 0;
}

/* A key with an embedded NUL cannot name a jansson object member. */
static json_t *get_key(json_t *obj, json_t *key)
{
    if (strlen(json_string_value(key)) != json_string_length(key))
        return NULL;
    return json_object_get(obj, json_string_value(key));
}

/* keys: [k, ...] -> { k: input[k] } for the keys present. */
static json_t *pick_keys(loom_ctx *ctx, const char *name, json_t *input, json_t *keys)
{
    json_t *out, *k;
    size_t i;

    if (!json_is_array(keys)) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.keys must be a list of strings, got %s",
                   name, std_type_name(keys));
        return NULL;
    }
    if (!(out = json_object()))
        return std_nomem(ctx, name);
    json_array_foreach(keys, i, k) {
        json_t *v;

        if (!json_is_string(k)) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.keys[%zu] must be a string, got %s",
                       name, i, std_type_name(k));
            goto fail;
        }
        v = get_key(input, k);
        if (v && json_object_set(out, json_string_value(k), v) < 0) {
            std_nomem(ctx, name);
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

json_t *std_json_pick(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.json_pick";
    json_t *keys, *dflt, *v;
    const char *key = NULL, *path = NULL;
    int given;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    keys = std_arg(args, "keys");
    given = (keys != NULL) + (std_arg(args, "key") != NULL) + (std_arg(args, "path") != NULL);
    if (given != 1) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                   "%s: exactly one of args.keys, args.key and args.path is required", name);
        return NULL;
    }
    if (keys) {
        if (!json_is_object(input))
            return std_bad_input(ctx, name, "an object", input);
        return pick_keys(ctx, name, input, keys);
    }
    if (std_arg(args, "key")) {
        if (std_arg_string(ctx, name, args, "key", NULL, &key, NULL) < 0)
            return NULL;
        if (!json_is_object(input))
            return std_bad_input(ctx, name, "an object", input);
        v = get_key(input, std_arg(args, "key"));
    } else {
        if (std_arg_string(ctx, name, args, "path", NULL, &path, NULL) < 0)
            return NULL;
        if (!json_is_object(input) && !json_is_array(input))
            return std_bad_input(ctx, name, "an object or an array", input);
        if (std_json_path(input, path, &v) < 0)
            return std_nomem(ctx, name);
    }
    if (!v) {
        /* A missing field is an ordinary outcome for model output; the
         * workflow decides with `default` what it means. */
        dflt = std_arg(args, "default");
        v = dflt ? dflt : json_null();
    }
    return json_incref(v);
}

/* Copies OUT's members over with SRC's; OUT is owned by the caller. */
static int merge_into(loom_ctx *ctx, const char *name, json_t *out, json_t *src,
                      const char *what, size_t i)
{
    if (!json_is_object(src)) {
        if (what)
            loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                       "%s: args.%s[%zu] must be an object, got %s", name, what, i,
                       std_type_name(src));
        else
            loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args must be an object, got %s", name,
                       std_type_name(src));
        return -1;
    }
    if (json_object_update(out, src) < 0) {
        std_nomem(ctx, name);
        return -1;
    }
    return 0;
}

json_t *std_json_merge(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.json_merge";
    json_t *out, *objects, *o;
    size_t i;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    /* A null input merges like {}: a merge can start a record. */
    if (input && !json_is_null(input) && !json_is_object(input))
        return std_bad_input(ctx, name, "an object", input);
    /* Shallow copy: members are shared (borrowed values get new references
     * inside OUT), the input object itself is left untouched. */
    out = json_is_object(input) ? json_copy(input) : json_object();
    if (!out)
        return std_nomem(ctx, name);
    objects = std_arg(args, "objects");
    if (objects) {
        if (!json_is_array(objects)) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.objects must be a list, got %s",
                       name, std_type_name(objects));
            goto fail;
        }
        json_array_foreach(objects, i, o) {
            if (merge_into(ctx, name, out, o, "objects", i) < 0)
                goto fail;
        }
    } else if (json_is_object(args) && merge_into(ctx, name, out, args, NULL, 0) < 0) {
        goto fail;
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

json_t *std_const(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.const";
    json_t *v;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    if (!(v = std_arg(args, "value"))) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.value is required", name);
        return NULL;
    }
    return json_incref(v);
}

/* Code points of valid UTF-8 (jansson guarantees validity): every byte that
 * is not a continuation byte starts one. */
static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;

    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

json_t *std_length(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.length";
    size_t n;
    json_t *out;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    if (json_is_string(input))
        n = utf8_count(json_string_value(input), json_string_length(input));
    else if (json_is_array(input))
        n = json_array_size(input);
    else if (json_is_object(input))
        n = json_object_size(input);
    else
        return std_bad_input(ctx, name, "a string, an array or an object", input);
    out = json_integer((json_int_t)n);
    return out ? out : std_nomem(ctx, name);
}
