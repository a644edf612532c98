/* regex.c -- the std plugin's state (a cache of compiled regexes) and its
 * regex lambdas, regex_match and regex_extract, on POSIX EREs.
 *
 * Compiling is the expensive part of a regex and workflows use the same few
 * patterns on every job, so compiled patterns are kept in the plugin state,
 * keyed by pattern and flags. Lambdas run on several worker threads at once:
 * the table is guarded by a mutex, held only for lookups and inserts, never
 * while compiling or matching. Entries are reference counted so that an
 * entry evicted (least recently used) while another thread still matches
 * with it is freed by the last user, not under its feet. regexec itself is
 * safe to call on one regex_t from several threads (POSIX; glibc locks).
 *
 * Matching is done in a UTF-8 locale when one exists (C.UTF-8), set with
 * uselocale for the duration of the call only, so that `.` is one character,
 * not one byte, and matches never cut a character in two. */
#include <locale.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/std/std.h"

enum { STD_REGEX_CACHE = 256 };

typedef struct std_regex {
    char *pattern;               /* owned, NUL-terminated */
    int cflags;
    regex_t re;
    unsigned refs;               /* users outside the lock */
    int cached;                  /* still in the table */
    unsigned long last_use;      /* the table's tick at the last lookup */
} std_regex;

struct std_state {
    pthread_mutex_t lock;
    std_regex *slots[STD_REGEX_CACHE];
    size_t count;
    unsigned long tick;
    unsigned long compiles, hits;
    locale_t utf8;               /* (locale_t)0 when no UTF-8 locale exists */
};

static void regex_free(std_regex *r)
{
    if (!r)
        return;
    regfree(&r->re);
    free(r->pattern);
    free(r);
}

int std_init(loom_ctx *ctx, json_t *config, void **state)
{
    std_state *st = calloc(1, sizeof *st);

    if (!st) {
        loom_error(ctx, LOOM_E_NOMEM, "std: out of memory");
        return -1;
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        loom_error(ctx, LOOM_E_NOMEM, "std: cannot create the regex cache lock");
        return -1;
    }
    st->utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    if (!st->utf8)
        st->utf8 = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", (locale_t)0);
    if (!st->utf8)
        loom_log(ctx, LOOM_LOG_WARN, "no UTF-8 locale; regexes match bytes");
    *state = st;
    return 0;
}

void std_fini(void *state)
{
    std_state *st = state;

    if (!st)
        return;
    /* The host calls fini after the last lambda call: no users remain. */
    for (size_t i = 0; i < st->count; i++)
        regex_free(st->slots[i]);
    if (st->utf8)
        freelocale(st->utf8);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

void std_regex_stats(void *state, unsigned long *compiles, unsigned long *hits)
{
    std_state *st = state;

    *compiles = *hits = 0;
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    *compiles = st->compiles;
    *hits = st->hits;
    pthread_mutex_unlock(&st->lock);
}

/* The cached entry for PATTERN and CFLAGS with one more user, or NULL.
 * Called with the lock held. */
static std_regex *lookup(std_state *st, const char *pattern, int cflags)
{
    for (size_t i = 0; i < st->count; i++) {
        std_regex *r = st->slots[i];

        if (r->cflags == cflags && !strcmp(r->pattern, pattern)) {
            r->refs++;
            r->last_use = ++st->tick;
            return r;
        }
    }
    return NULL;
}

/* Inserts R (with its caller as one user), evicting the least recently used
 * entry when full. Returns the evicted entry when nobody uses it any more,
 * for the caller to free after unlocking. Called with the lock held. */
static std_regex *insert(std_state *st, std_regex *r)
{
    std_regex *dead = NULL;
    size_t slot = st->count;

    if (st->count == STD_REGEX_CACHE) {
        slot = 0;
        for (size_t i = 1; i < st->count; i++)
            if (st->slots[i]->last_use < st->slots[slot]->last_use)
                slot = i;
        st->slots[slot]->cached = 0;
        if (st->slots[slot]->refs == 0)
            dead = st->slots[slot];
    } else {
        st->count++;
    }
    r->cached = 1;
    r->refs = 1;
    r->last_use = ++st->tick;
    st->slots[slot] = r;
    st->compiles++;
    return dead;
}

/* Compiles a new, uncached entry. NULL after loom_error. */
static std_regex *compile(loom_ctx *ctx, const char *name, std_state *st, const char *pattern,
                          int cflags)
{
    std_regex *r = calloc(1, sizeof *r);
    locale_t old = (locale_t)0;
    char msg[256];
    int rc;

    if (!r || !(r->pattern = strdup(pattern))) {
        free(r);
        std_nomem(ctx, name);
        return NULL;
    }
    r->cflags = cflags;
    if (st && st->utf8)
        old = uselocale(st->utf8);
    rc = regcomp(&r->re, pattern, cflags);
    if (old)
        uselocale(old);
    if (rc != 0) {
        regerror(rc, &r->re, msg, sizeof msg);
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: invalid pattern \"%s\": %s", name, pattern,
                   msg);
        free(r->pattern);
        free(r);
        return NULL;
    }
    return r;
}

/* The compiled regex for the call, from the cache when possible; release it
 * with release(). NULL after loom_error. */
static std_regex *acquire(loom_ctx *ctx, const char *name, std_state *st, const char *pattern,
                          int cflags)
{
    std_regex *r, *mine, *dead = NULL;

    if (!st)
        return compile(ctx, name, NULL, pattern, cflags);
    pthread_mutex_lock(&st->lock);
    r = lookup(st, pattern, cflags);
    if (r)
        st->hits++;
    pthread_mutex_unlock(&st->lock);
    if (r)
        return r;
    /* Compile unlocked so other patterns are not held up; a thread racing
     * on the same pattern may win, and then its entry is used. */
    if (!(mine = compile(ctx, name, st, pattern, cflags)))
        return NULL;
    pthread_mutex_lock(&st->lock);
    r = lookup(st, pattern, cflags);
    if (!r)
        dead = insert(st, r = mine);
    pthread_mutex_unlock(&st->lock);
    if (r != mine)
        regex_free(mine);
    regex_free(dead);
    return r;
}

static void release(std_state *st, std_regex *r)
{
    int dead;

    if (!st) {
        regex_free(r);
        return;
    }
    pthread_mutex_lock(&st->lock);
    dead = --r->refs == 0 && !r->cached;
    pthread_mutex_unlock(&st->lock);
    if (dead)
        regex_free(r);
}

/* Reads args.pattern and args.flags, checks the input, and acquires the
 * regex. NULL after loom_error. */
static std_regex *prepare(loom_ctx *ctx, const char *name, std_state *st, json_t *input,
                          json_t *args)
{
    const char *pattern, *flags;
    size_t plen, flen;
    int cflags = REG_EXTENDED;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_string(ctx, name, args, "pattern", NULL, &pattern, &plen) < 0 ||
        std_arg_string(ctx, name, args, "flags", "", &flags, &flen) < 0)
        return NULL;
    if (strlen(pattern) != plen) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.pattern contains a NUL character",
                   name);
        return NULL;
    }
    for (size_t i = 0; i < flen; i++) {
        if (flags[i] == 'i') {
            cflags |= REG_ICASE;
        } else if (flags[i] == 'm') {
            cflags |= REG_NEWLINE;     /* ^ and $ at line breaks; . stops at them */
        } else {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                       "%s: unknown flag '%c' in args.flags (known: i, m)", name, flags[i]);
            return NULL;
        }
    }
    if (!json_is_string(input)) {
        std_bad_input(ctx, name, "a string", input);
        return NULL;
    }
    return acquire(ctx, name, st, pattern, cflags);
}

/* One regexec of R over S[0..N) starting at byte FROM; offsets in M are
 * relative to S. 0: match, REG_NOMATCH, or another regexec error. */
static int exec_at(std_state *st, std_regex *r, const char *s, size_t n, size_t from,
                   regmatch_t *m, size_t nm)
{
    locale_t old = (locale_t)0;
    int rc;

    if (st && st->utf8)
        old = uselocale(st->utf8);
#ifdef REG_STARTEND
    /* Bounds by offsets: the string may hold NULs, and the text before FROM
     * still gives ^ and \< their context. */
    m[0].rm_so = (regoff_t)from;
    m[0].rm_eo = (regoff_t)n;
    rc = regexec(&r->re, s, nm, m, REG_STARTEND);
#else
    rc = regexec(&r->re, s + from, nm, m, from ? REG_NOTBOL : 0);
    for (size_t i = 0; rc == 0 && i < nm; i++) {
        if (m[i].rm_so >= 0) {
            m[i].rm_so += (regoff_t)from;
            m[i].rm_eo += (regoff_t)from;
        }
    }
#endif
    if (old)
        uselocale(old);
    return rc;
}

json_t *std_regex_match(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.regex_match";
    std_regex *r = prepare(ctx, name, state, input, args);
    regmatch_t m[1];
    int rc;

    if (!r)
        return NULL;
    rc = exec_at(state, r, json_string_value(input), json_string_length(input), 0, m, 1);
    release(state, r);
    if (rc != 0 && rc != REG_NOMATCH) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: matching failed (error %d)", name, rc);
        return NULL;
    }
    return json_boolean(rc == 0);
}

/* A string of S[so..eo), or JSON null for a group that took no part. */
static json_t *capture(const char *s, const regmatch_t *m)
{
    if (m->rm_so < 0)
        return json_null();
    return json_stringn(s + m->rm_so, (size_t)(m->rm_eo - m->rm_so));
}

/* The result of one match: group GROUP, or (GROUP < 0) the whole match
 * when the pattern has no groups, else the list of its groups. */
static json_t *one_result(const char *s, const regmatch_t *m, size_t nsub, long group)
{
    json_t *list;

    if (group >= 0)
        return capture(s, &m[group]);
    if (nsub == 0)
        return capture(s, &m[0]);
    if (!(list = json_array()))
        return NULL;
    for (size_t g = 1; g <= nsub; g++) {
        if (json_array_append_new(list, capture(s, &m[g])) < 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* args.group: an integer, or digits (templates render numbers as text);
 * -1 when absent. */
static int read_group(loom_ctx *ctx, const char *name, json_t *args, size_t nsub, long *out)
{
    json_t *v = std_arg(args, "group");
    char *end;

    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v) < 0 || json_integer_value(v) > 1000000
                   ? 1000000 : (long)json_integer_value(v);
    } else if (json_is_string(v) && json_string_value(v)[0] >= '0' &&
               json_string_value(v)[0] <= '9') {
        *out = strtol(json_string_value(v), &end, 10);
        if (*end || *out > 1000000)
            *out = 1000000;
    } else {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: args.group must be an integer, got %s",
                   name, std_type_name(v));
        return -1;
    }
    if ((size_t)*out > nsub) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                   "%s: args.group must be between 0 and %zu (the pattern's groups)", name,
                   nsub);
        return -1;
    }
    return 0;
}

json_t *std_regex_extract(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.regex_extract";
    std_regex *r;
    regmatch_t *m = NULL;
    json_t *out = NULL, *item;
    const char *s;
    size_t n, nsub, from = 0;
    long group;
    int all, rc;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_bool(ctx, name, args, "all", 0, &all) < 0)
        return NULL;
    if (!(r = prepare(ctx, name, state, input, args)))
        return NULL;
    nsub = r->re.re_nsub;
    if (read_group(ctx, name, args, nsub, &group) < 0)
        goto fail;
    if (!(m = calloc(nsub + 1, sizeof *m)) || (all && !(out = json_array()))) {
        std_nomem(ctx, name);
        goto fail;
    }
    s = json_string_value(input);
    n = json_string_length(input);
    for (;;) {
        rc = exec_at(state, r, s, n, from, m, nsub + 1);
        if (rc == REG_NOMATCH)
            break;
        if (rc != 0) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: matching failed (error %d)", name, rc);
            goto fail;
        }
        /* json_stringn refuses a slice that is not UTF-8: possible only when
         * no UTF-8 locale exists and the pattern cut a character. */
        if (!(item = one_result(s, m, nsub, group))) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                       "%s: a match is not valid UTF-8, or out of memory", name);
            goto fail;
        }
        if (!all) {
            out = item;
            break;
        }
        if (json_array_append_new(out, item) < 0) {
            std_nomem(ctx, name);
            goto fail;
        }
        /* Go on after the match; after an empty one, one character further,
         * or the same empty match would be found forever. */
        from = (size_t)m[0].rm_eo;
        if (m[0].rm_so == m[0].rm_eo) {
            unsigned char c = from < n ? (unsigned char)s[from] : 0;

            if (from >= n)
                break;
            from += c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            if (from > n)
                break;
        }
    }
    free(m);
    release(state, r);
    return out ? out : json_null();
fail:
    json_decref(out);
    free(m);
    release(state, r);
    return NULL;
}
