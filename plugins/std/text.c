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

#include "common/containers.h"
#include "loom/plugin.h"
#include "plugins/std/std.h"

/* ---- building a result: appends to an sbuf are checked once, here ---- */

/* B's bytes as a new JSON string, or NULL after reporting that memory ran
 * out (during an append or now). B is freed either way. */
static json_t *text_result(loom_ctx *ctx, const char *name, sbuf *b)
{
    json_t *out = b->failed ? NULL : json_stringn(b->p ? b->p : "", b->n);

    sbuf_free(b);
    return out ? out : std_nomem(ctx, name);
}

/* Appends the JSON text of V, dumped with FLAGS (and JSON_ENCODE_ANY). */
static void add_json(sbuf *b, json_t *v, size_t flags)
{
    char *text = json_dumps(v, JSON_ENCODE_ANY | flags);

    if (!text) {
        b->failed = true; /* reported by text_result */
        return;
    }
    sbuf_adds(b, text);
    free(text);
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

/* Appends the text of a scalar V; -1 for a value that has no text form. */
static int add_scalar(sbuf *b, json_t *v)
{
    if (json_is_string(v))
        sbuf_add(b, json_string_value(v), json_string_length(v));
    else if (json_is_number(v) || json_is_boolean(v))
        add_json(b, v, 0);
    else
        return -1;
    return 0;
}

json_t *std_join(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.join";
    const char *sep;
    size_t seplen, i;
    sbuf b = SBUF_INIT;
    json_t *v;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_string(ctx, name, args, "separator", "", &sep, &seplen) < 0)
        return NULL;
    if (!json_is_array(input))
        return std_bad_input(ctx, name, "a list", input);
    json_array_foreach(input, i, v) {
        if (i > 0)
            sbuf_add(&b, sep, seplen);
        if (add_scalar(&b, v) < 0) {
            loom_error(ctx, LOOM_E_LAMBDA_FAILED,
                       "%s: input[%zu] must be a string, a number or a boolean, got %s", name,
                       i, std_type_name(v));
            sbuf_free(&b);
            return NULL;
        }
    }
    return text_result(ctx, name, &b);
}

/* ---- text_template ---- */

/* Appends the value of placeholder NAME[0..N) looked up in INPUT. -1 after
 * reporting; running out of memory while appending is left to
 * text_result. */
static int fill(loom_ctx *ctx, const char *lname, sbuf *b, json_t *input, const char *name,
                size_t n)
{
    char *key;
    json_t *v = NULL;

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
    if (json_is_string(v))
        sbuf_add(b, json_string_value(v), json_string_length(v));
    else
        add_json(b, v, JSON_COMPACT);
    return 0;
}

json_t *std_text_template(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    static const char name[] = "std.text_template";
    const char *t;
    size_t n, i = 0;
    sbuf b = SBUF_INIT;

    if (std_args_check(ctx, name, args) < 0 ||
        std_arg_string(ctx, name, args, "template", NULL, &t, &n) < 0)
        return NULL;
    while (i < n) {
        const char *close;

        if ((t[i] == '{' || t[i] == '}') && i + 1 < n && t[i + 1] == t[i]) {
            sbuf_add(&b, t + i, 1);
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
            sbuf_add(&b, t + i, j - i);
            i = j;
        }
    }
    return text_result(ctx, name, &b);
fail:
    sbuf_free(&b);
    return NULL;
}
