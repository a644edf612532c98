/* plugins_options.c -- config maps: a plugin declares its options as data
 * (name, type, default, required), and the host checks a configuration
 * against them before the plugin ever sees it.
 *
 * Checking in the host rather than in every plugin means every plugin
 * rejects a misspelt key the same way, with a suggestion, and a plugin's init
 * can read its options without testing types: a DURATION arrives as integer
 * milliseconds, a DOUBLE as a real, a missing option with a default as that
 * default. */
#include "daemon/plugins/plugins.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl.h"
#include "dsl/suggest.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *type_wanted(loom_opt_type t)
{
    switch (t) {
    case LOOM_OPT_STRING: return "a string";
    case LOOM_OPT_INT: return "an integer";
    case LOOM_OPT_DOUBLE: return "a number";
    case LOOM_OPT_BOOL: return "true or false";
    case LOOM_OPT_DURATION: return "a duration such as \"500ms\" or \"30s\"";
    case LOOM_OPT_JSON: return "any value";
    }
    return "a value";
}

static const char *type_given(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

/* The value V of option O in the form plugins are promised: *OUT is V
 * itself (borrowed) when it is already right, a new reference when it had to
 * be converted, NULL when V has the wrong type (*WHY then says more, or is
 * NULL). */
static int normalise(const loom_option *o, json_t *v, json_t **out, const char **why)
{
    *out = NULL;
    *why = NULL;
    switch (o->type) {
    case LOOM_OPT_STRING:
        *out = json_is_string(v) ? v : NULL;
        break;
    case LOOM_OPT_INT:
        *out = json_is_integer(v) ? v : NULL;
        break;
    case LOOM_OPT_BOOL:
        *out = json_is_boolean(v) ? v : NULL;
        break;
    case LOOM_OPT_JSON:
        *out = v;
        break;
    case LOOM_OPT_DOUBLE:
        if (json_is_real(v))
            *out = v;
        else if (json_is_integer(v) && !(*out = json_real((double)json_integer_value(v))))
            return -1;
        break;
    case LOOM_OPT_DURATION:
        /* Integer milliseconds are accepted too, so checking twice is
         * harmless and defaults of either form work. */
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            *out = v;
        } else if (json_is_string(v)) {
            uint64_t ms;
            if (dsl_parse_duration(json_string_value(v), json_string_length(v), &ms, why) == 0 &&
                ms <= (uint64_t)INT64_MAX && !(*out = json_integer((json_int_t)ms)))
                return -1;
        }
        break;
    }
    return 0;
}

/* The default text of O (as written in YAML) as a JSON value of O's type:
 * a new reference, or NULL when the text does not parse. */
static json_t *parse_default(const loom_option *o)
{
    const char *s = o->default_value;
    char *end;

    switch (o->type) {
    case LOOM_OPT_STRING:
    case LOOM_OPT_DURATION:        /* converted by normalise, like a user's */
        return json_string(s);
    case LOOM_OPT_INT: {
        long long n;
        errno = 0;
        n = strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return NULL;
        return json_integer((json_int_t)n);
    }
    case LOOM_OPT_DOUBLE: {
        double d;
        errno = 0;
        d = strtod(s, &end);
        if (errno || end == s || *end)
            return NULL;
        return json_real(d);
    }
    case LOOM_OPT_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
            return json_true();
        if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
            return json_false();
        return NULL;
    case LOOM_OPT_JSON: {
        /* JSON text; anything else is taken as a plain string, as YAML would. */
        json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);
        return v ? v : json_string(s);
    }
    }
    return NULL;
}

static const loom_option *find_option(const loom_option *opts, const char *name)
{
    for (size_t i = 0; opts && opts[i].name; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

static int unknown_key(const loom_option *opts, const char *key, char *err, size_t errlen)
{
    size_t n = 0;
    const char **names;
    const char *near = NULL;

    while (opts && opts[n].name)
        n++;
    names = malloc((n + 1) * sizeof *names);
    if (names) {
        for (size_t i = 0; i < n; i++)
            names[i] = opts[i].name;
        names[n] = NULL;
        near = dsl_suggest(key, strlen(key), names, n);
    }
    if (near)
        fail(err, errlen, "unknown option '%s'; did you mean '%s'?", key, near);
    else
        fail(err, errlen, "unknown option '%s'", key);
    free(names);
    return -1;
}

/* The option a problem is about into KEY (KEYLEN bytes; "" for the whole
 * configuration), so a caller can point at it. */
static void blame(char *key, size_t keylen, const char *name)
{
    if (key && keylen)
        snprintf(key, keylen, "%s", name ? name : "");
}

int plugins_check_options(const loom_option *opts, json_t *config, char *err, size_t errlen)
{
    return plugins_check_options_at(opts, config, err, errlen, NULL, 0);
}

int plugins_check_options_at(const loom_option *opts, json_t *config, char *err, size_t errlen,
                             char *bad_key, size_t keylen)
{
    const char *key;
    json_t *v;

    if (err && errlen)
        err[0] = '\0';
    blame(bad_key, keylen, NULL);
    if (config && !json_is_object(config))
        return fail(err, errlen, "the configuration must be a mapping, not %s",
                    type_given(config));
    json_object_foreach(config, key, v) {
        if (!find_option(opts, key)) {
            blame(bad_key, keylen, key);
            return unknown_key(opts, key, err, errlen);
        }
    }
    /* Walk the declarations, not the object, so replacing values cannot
     * disturb an iteration. */
    for (size_t i = 0; opts && opts[i].name; i++) {
        const loom_option *o = &opts[i];
        json_t *given = config ? json_object_get(config, o->name) : NULL;
        json_t *made = NULL, *out;
        const char *why;

        if (!given) {
            if (o->required)
                return fail(err, errlen, "missing required option '%s' (%s)", o->name,
                            type_wanted(o->type));
            if (!o->default_value || !config)
                continue;
            if (!(given = made = parse_default(o)))
                return fail(err, errlen, "option '%s': its default '%s' is not %s", o->name,
                            o->default_value, type_wanted(o->type));
        }
        if (normalise(o, given, &out, &why) < 0) {
            json_decref(made);
            return fail(err, errlen, "out of memory");
        }
        if (!out) {
            int rc;
            if (!made) /* a default of the plugin's own is no key of the user's */
                blame(bad_key, keylen, o->name);
            if (made)
                rc = fail(err, errlen, "option '%s': its default '%s' is not %s%s%s", o->name,
                          o->default_value, type_wanted(o->type), why ? ": " : "",
                          why ? why : "");
            else if (why)
                rc = fail(err, errlen, "option '%s': invalid duration \"%s\": %s", o->name,
                          json_string_value(given), why);
            else
                rc = fail(err, errlen, "option '%s' must be %s, not %s", o->name,
                          type_wanted(o->type), type_given(given));
            json_decref(made);
            return rc;
        }
        if (out != given || made) {
            /* json_object_set takes its own reference. */
            int rc = json_object_set(config, o->name, out);
            if (out != given)
                json_decref(out);
            json_decref(made);
            if (rc < 0)
                return fail(err, errlen, "out of memory");
        }
    }
    return 0;
}
