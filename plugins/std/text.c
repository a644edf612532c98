/* text.c -- the std plugin's text lambdas: text_template, trim, split, join.
 *
 * Strings come from jansson, so they are valid UTF-8 with a known length
 * (and may contain NUL bytes): everything here works on (pointer, length)
 * pairs and cuts only at code point boundaries. "Whitespace" is Unicode's
 * White_Space set plus the BOM, because text pasted from mail and documents
 * carries no-break spaces and BOMs as often as ASCII blanks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loom/plugin.h"
#include "plugins/std/std.h"

/* ---- a growable byte buffer, owned by its user; freed with free(b.data) ---- */

typedef struct strbuf {
    char *data;
    size_t len, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        if (!(p = realloc(b->data, cap)))
            return -1;
        b->data = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* ---- UTF-8 ---- */

/* Length of the code point starting at S (at most N bytes left). Input is
 * valid UTF-8, but stay in bounds whatever the bytes say. */
static size_t cp_len(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;

    return l > n ? n : l;
}

static uint32_t cp_decode(const char *s, size_t l)
{
    const unsigned char *u = (const unsigned char *)s;

    switch (l) {
    case 1: return u[0];
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    default:
        return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
               ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    }
}

static int is_space_cp(uint32_t c)
{
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

/* Bytes of whitespace at the start of S[0..N). */
static size_t space_prefix(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t l = cp_len(s + i, n - i);

        if (!is_space_cp(cp_decode(s + i, l)))
            break;
        i += l;
    }
    return i;
}

/* Bytes of non-whitespace at the start of S[0..N). */
static size_t word_prefix(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t l = cp_len(s + i, n - i);

        if (is_space_cp(cp_decode(s + i, l)))
            break;
        i += l;
    }
    return i;
}

/* ---- trim ---- */

json_t *std_trim(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.trim";
    const char *s;
    size_t n, start, end;
    json_t *out;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    if (!json_is_string(input))
        return std_bad_input(ctx, name, "a string", input);
    s = json_string_value(input);
    n = json_string_length(input);
    start = space_prefix(s, n);
    /* Walk back over whole code points: find each one's lead byte. */
    end = n;
    while (end > start) {
        size_t b = end - 1;

        while (b > start && ((unsigned char)s[b] & 0xC0) == 0x80)
            b--;
        if (!is_space_cp(cp_decode(s + b, cp_len(s + b, end - b))))
            break;
        end = b;
    }
    out = json_stringn(s + start, end - start);
    return out ? out : std_nomem(ctx, name);
}

/* ---- split ---- */

static int push_str(json_t *arr, const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);

    return v ? json_array_append_new(arr, v) : -1;
}

json_t *std_split(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.split";
    const char *s, *sep = NULL;
    size_t n, seplen = 0, i = 0;
    json_t *out;

    if (std_args_check(ctx, name, args) < 0)
        return NULL;
    if (std_arg(args, "separator") && !json_is_null(std_arg(args, "separator")) &&
        std_arg_string(ctx, name, args, "separator", NULL, &sep, &seplen) < 0)
        return NULL;
    if (!json_is_string(input))
        return std_bad_input(ctx, name, "a string", input);
    s = json_string_value(input);
    n = json_string_length(input);
    if (!(out = json_array()))
        return std_nomem(ctx, name);

    if (!sep) {
        /* Runs of whitespace, no empty items: "  a  b " -> ["a", "b"]. */
        while ((i += space_prefix(s + i, n - i)) < n) {
            size_t w = word_prefix(s + i, n - i);

            if (push_str(out, s + i, w) < 0)
                goto nomem;
            i += w;
        }
    } else if (seplen == 0) {
        /* One item per code point, so "" never loops forever. */
        while (i < n) {
            size_t l = cp_len(s + i, n - i);

            if (push_str(out, s + i, l) < 0)
                goto nomem;
            i += l;
        }
    } else {
        /* An exact separator keeps empty items: "a,,b" -> ["a", "", "b"]. */
        for (;;) {
            const char *hit = n - i >= seplen ? memmem(s + i, n - i, sep, seplen) : NULL;
            size_t end = hit ? (size_t)(hit - s) : n;

            if (push_str(out, s + i, end - i) < 0)
                goto nomem;
            if (!hit)
                break;
            i = end + seplen;
        }
    }
    return out;
nomem:
    json_decref(out);
    return std_nomem(ctx, name);
}

/* ---- join ---- */

/* Appends the text of a scalar V; -2 for a value that has no text form. */
static int add_scalar(strbuf *b, json_t *v)
{
    char *text;
    int rc;

    if (json_is_string(v))
        return sb_add(b, json_string_value(v), json_string_length(v));
    if (!json_is_number(v) && !json_is_boolean(v))
        return -2;
    if (!(text = json_dumps(v, JSON_ENCODE_ANY)))
        return -1;
    rc = sb_add(b, text, strlen(text));
    free(text);
    return rc;
}

json_t *std_join(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.join";
    const char *sep;
    size_t seplen, i;
    strbuf b = { 0 };
    json_t *v, *out = NULL;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_string(ctx, name, args, "separator", "", &sep, &seplen) < 0)
        return NULL;
    if (!json_is_array(input))
        return std_bad_input(ctx, name, "a list", input);
    if (sb_add(&b, "", 0) < 0)
        goto nomem;
    json_array_foreach(input, i, v) {
        int rc;

        if (i > 0 && sb_add(&b, sep, seplen) < 0)
            goto nomem;
        if ((rc = add_scalar(&b, v)) == -2) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                       "%s: input[%zu] must be a string, a number or a boolean, got %s", name,
                       i, std_type_name(v));
            goto fail;
        }
        if (rc < 0)
            goto nomem;
    }
    if (!(out = json_stringn(b.data, b.len)))
        goto nomem;
    free(b.data);
    return out;
nomem:
    std_nomem(ctx, name);
fail:
    free(b.data);
    return NULL;
}

/* ---- text_template ---- */

/* Appends the value of placeholder NAME[0..N) looked up in INPUT. */
static int fill(loom_ctx *ctx, const char *lname, strbuf *b, json_t *input, const char *name,
                size_t n)
{
    char *key;
    json_t *v = NULL;
    int rc;

    if (n == 0) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: empty placeholder {} in args.template "
                   "(write {{}} for literal braces)", lname);
        return -1;
    }
    if (!json_is_object(input) && !json_is_array(input)) {
        std_bad_input(ctx, lname, "an object", input);
        return -1;
    }
    if (!(key = malloc(n + 1))) {
        std_nomem(ctx, lname);
        return -1;
    }
    memcpy(key, name, n);
    key[n] = '\0';
    if (memchr(name, '\0', n) == NULL && std_json_path(input, key, &v) < 0) {
        free(key);
        std_nomem(ctx, lname);
        return -1;
    }
    if (!v) {
        loom_error(ctx, LOOM_E_LAMBDA_FAILED, "%s: placeholder {%s} is not in the input",
                   lname, key);
        free(key);
        return -1;
    }
    free(key);
    /* Strings go in as they are; anything else as compact JSON. */
    if (json_is_string(v)) {
        rc = sb_add(b, json_string_value(v), json_string_length(v));
    } else {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        rc = text ? sb_add(b, text, strlen(text)) : -1;
        free(text);
    }
    if (rc < 0)
        std_nomem(ctx, lname);
    return rc;
}

json_t *std_text_template(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.text_template";
    const char *t;
    size_t n, i = 0;
    strbuf b = { 0 };
    json_t *out;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_string(ctx, name, args, "template", NULL, &t, &n) < 0)
        return NULL;
    if (sb_add(&b, "", 0) < 0)
        goto nomem;
    while (i < n) {
        const char *close;

        if ((t[i] == '{' || t[i] == '}') && i + 1 < n && t[i + 1] == t[i]) {
            if (sb_add(&b, t + i, 1) < 0)
                goto nomem;
            i += 2;
        } else if (t[i] == '{') {
            if (!(close = memchr(t + i + 1, '}', n - i - 1))) {
                loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                           "%s: unclosed { at byte %zu of args.template", name, i);
                goto fail;
            }
            if (fill(ctx, name, &b, input, t + i + 1, (size_t)(close - (t + i + 1))) < 0)
                goto fail;
            i = (size_t)(close - t) + 1;
        } else {
            /* Copy the run up to the next brace in one go. */
            size_t j = i + 1;

            while (j < n && t[j] != '{' && t[j] != '}')
                j++;
            if (sb_add(&b, t + i, j - i) < 0)
                goto nomem;
            i = j;
        }
    }
    if (!(out = json_stringn(b.data, b.len)))
        goto nomem;
    free(b.data);
    return out;
nomem:
    std_nomem(ctx, name);
fail:
    free(b.data);
    return NULL;
}
