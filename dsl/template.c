/* template.c -- parses "{{ path | filter(args) }}" strings into dsl_template ASTs.
 *
 * A hand-written scanner over the bytes, one pass, no backtracking: text runs
 * are copied once, straight from the source (through a scratch buffer only
 * when a "\{{" escape must be rewritten); expressions are read by a small
 * recursive-descent parser with context-dependent lexing (".3" is an index,
 * "3" inside filter arguments is a number). Every array grows geometrically
 * and nothing re-scans the input, so a 10 MB string costs one linear pass
 * whatever it holds. Errors stop the parse at the first problem and carry
 * the byte offset of the offending token. */
#include "dsl/template.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"
#include "dsl/suggest.h"

typedef struct parser {
    const char *s;
    size_t len, pos;
    size_t open;          /* offset of the "{{" of the expression being read */
    dsl_tpl_error *err;
    sbuf text, str;      /* escaped text pending a part; a decoded string */
} parser;

/* Records an error at OFF; always returns -1 so callers can `return fail(...)`. */
static int fail(parser *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *p, size_t off, const char *fmt, ...)
{
    va_list ap;
    p->err->offset = off;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Out of memory: an empty message, as template.h promises. */
static int oom(parser *p)
{
    p->err->offset = p->pos;
    p->err->msg[0] = '\0';
    p->err->hint[0] = '\0';
    return -1;
}

/* Offset of the first byte that is not valid UTF-8, or LEN. Checked once up
 * front so every string built from the template can go to jansson as is. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return i;
        i += n + 1;
    }
    return len;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Skips blanks; then -1 (with "unclosed") when the expression runs off the
 * end. A lone '}' as the last byte counts as running off the end too: the
 * user plainly meant to close the braces. */
static int skip_ws(parser *p)
{
    while (p->pos < p->len && is_space(p->s[p->pos]))
        p->pos++;
    if (p->pos >= p->len || (p->pos + 1 == p->len && p->s[p->pos] == '}'))
        return fail(p, p->open, "unclosed '{{'");
    return 0;
}

static size_t read_ident(parser *p)
{
    size_t start = p->pos;
    if (p->pos < p->len && is_ident_start(p->s[p->pos])) {
        p->pos++;
        while (p->pos < p->len && is_ident_char(p->s[p->pos]))
            p->pos++;
    }
    return p->pos - start;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(sbuf *b, unsigned c)
{
    char u[4];
    size_t n;
    if (c < 0x80) {
        u[0] = (char)c, n = 1;
    } else if (c < 0x800) {
        u[0] = (char)(0xC0 | (c >> 6)), u[1] = (char)(0x80 | (c & 0x3F)), n = 2;
    } else if (c < 0x10000) {
        u[0] = (char)(0xE0 | (c >> 12)), u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | (c >> 18)), u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((c >> 6) & 0x3F)), u[3] = (char)(0x80 | (c & 0x3F)), n = 4;
    }
    return sbuf_add(b, u, n);
}

/* Reads a quoted string at p->pos into p->str (decoded, not NUL-terminated).
 * The input is valid UTF-8 already, and escapes only produce valid code
 * points, so the result is valid UTF-8. */
static int read_string(parser *p)
{
    size_t qoff = p->pos;
    char q = p->s[p->pos++];
    sbuf_reset(&p->str);
    for (;;) {
        size_t run = p->pos;
        while (p->pos < p->len && p->s[p->pos] != q && p->s[p->pos] != '\\')
            p->pos++;
        if (sbuf_add(&p->str, p->s + run, p->pos - run) < 0)
            return oom(p);
        if (p->pos >= p->len)
            return fail(p, qoff, "unterminated string");
        if (p->s[p->pos] == q) {
            p->pos++;
            return 0;
        }
        size_t eoff = p->pos++;
        if (p->pos >= p->len)
            return fail(p, qoff, "unterminated string");
        char e = p->s[p->pos++], c;
        switch (e) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'r': c = '\r'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case '\\': case '"': case '\'': case '/': c = e; break;
        case 'u': {
            unsigned cp, lo;
            if (p->len - p->pos < 4 || hex4(p->s + p->pos, &cp) < 0)
                return fail(p, eoff, "invalid '\\u' escape: expected 4 hex digits");
            p->pos += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(p, eoff, "invalid '\\u' escape: lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
                    hex4(p->s + p->pos + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(p, eoff, "invalid '\\u' escape: high surrogate without a low one");
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (put_utf8(&p->str, cp) < 0)
                return oom(p);
            continue;
        }
        default:
            if ((unsigned char)e >= 0x80 || (unsigned char)e < 0x20)
                return fail(p, eoff, "unknown escape in string");
            return fail(p, eoff, "unknown escape '\\%c' in string", e);
        }
        if (sbuf_add(&p->str, &c, 1) < 0)
            return oom(p);
    }
}

/* Reads "-?[0-9]+" as a path index. */
static int read_index(parser *p, long *out)
{
    size_t off = p->pos;
    int neg = p->s[p->pos] == '-';
    if (neg)
        p->pos++;
    if (p->pos >= p->len || !is_digit(p->s[p->pos]))
        return fail(p, off, "expected an integer index");
    unsigned long v = 0;
    int over = 0;
    while (p->pos < p->len && is_digit(p->s[p->pos])) {
        unsigned d = (unsigned)(p->s[p->pos++] - '0');
        if (v > ((unsigned long)LONG_MAX - d) / 10)
            over = 1;
        else
            v = v * 10 + d;
    }
    if (over)
        return fail(p, off, "integer index out of range");
    *out = neg ? -(long)v : (long)v;
    return 0;
}

/* Reads a JSON number literal. New reference in *OUT. */
static int read_number(parser *p, json_t **out)
{
    const char *s = p->s;
    size_t off = p->pos, i = p->pos, n = p->len;
    int is_int = 1;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && is_digit(s[i])) {
        while (i < n && is_digit(s[i]))
            i++;
    } else {
        goto bad;
    }
    if (i < n && s[i] == '.') {
        is_int = 0;
        if (++i >= n || !is_digit(s[i]))
            goto bad;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            goto bad;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (is_ident_char(s[i]) || s[i] == '.'))
        goto bad;
    /* strtod/strtoll need a terminated copy; the token may be long. */
    sbuf_reset(&p->str);
    if (sbuf_add(&p->str, s + off, i - off) < 0) /* sbuf keeps a NUL after the bytes */
        return oom(p);
    p->pos = i;
    errno = 0;
    if (is_int) {
        long long v = strtoll(p->str.p, NULL, 10);
        if (errno != ERANGE) {
            *out = json_integer(v);
            return *out ? 0 : oom(p);
        }
        errno = 0;
    }
    double d = strtod(p->str.p, NULL);
    if (!isfinite(d))
        return fail(p, off, "number out of range");
    *out = json_real(d);
    return *out ? 0 : oom(p);
bad:
    while (i < n && (is_ident_char(s[i]) || s[i] == '.' || s[i] == '+'))
        i++;
    return fail(p, off, "invalid number '%.*s'", (int)(i - off > 40 ? 40 : i - off), s + off);
}

/* One filter argument. New reference in *OUT. */
static int read_literal(parser *p, json_t **out)
{
    char c = p->s[p->pos];
    size_t off = p->pos;
    if (c == '"' || c == '\'') {
        if (read_string(p) < 0)
            return -1;
        *out = json_stringn(p->str.n ? p->str.p : "", p->str.n);
        return *out ? 0 : oom(p);
    }
    if (c == '-' || is_digit(c))
        return read_number(p, out);
    size_t n = read_ident(p);
    if (n == 4 && !memcmp(p->s + off, "true", 4))
        *out = json_true();
    else if (n == 5 && !memcmp(p->s + off, "false", 5))
        *out = json_false();
    else if (n == 4 && !memcmp(p->s + off, "null", 4))
        *out = json_null();
    else
        return fail(p, off, "expected a value (a string, number, true, false or null)");
    return 0;
}

static void expr_free(dsl_expr *e)
{
    if (!e)
        return;
    free(e->root);
    for (size_t i = 0; i < e->nsegs; i++)
        free(e->segs[i].name);
    free(e->segs);
    for (size_t i = 0; i < e->nfilters; i++)
        json_decref(e->filters[i].args);
    free(e->filters);
    free(e);
}

static int add_seg(parser *p, dsl_expr *e, size_t *cap, dsl_seg_kind kind, char *name,
                   long index, size_t off)
{
    if (vec_reserve(&e->segs, e->nsegs, cap, sizeof *e->segs, 4) < 0) {
        free(name);
        return oom(p);
    }
    e->segs[e->nsegs++] = (dsl_path_seg){ .kind = kind, .name = name, .index = index, .offset = off };
    return 0;
}

static int unknown_filter(parser *p, size_t off, size_t n)
{
    fail(p, off, "unknown filter '%.*s'", (int)(n > 64 ? 64 : n), p->s + off);
    const dsl_filter_def *all = dsl_filter_all();
    size_t count = 0;
    while (all[count].name)
        count++;
    const char **names = malloc(count * sizeof *names);
    if (names) {
        for (size_t i = 0; i < count; i++)
            names[i] = all[i].name;
        const char *best = dsl_suggest(p->s + off, n, names, count);
        if (best)
            snprintf(p->err->hint, sizeof p->err->hint, "did you mean '%s'?", best);
        free(names);
    }
    return -1;
}

static int check_arity(parser *p, const dsl_filter_def *d, size_t got, size_t off)
{
    if (got >= (size_t)d->min_args && got <= (size_t)d->max_args)
        return 0;
    if (d->max_args == 0)
        return fail(p, off, "filter '%s' takes no arguments", d->name);
    if (d->min_args == d->max_args)
        return fail(p, off, "filter '%s' takes %d argument%s, got %zu", d->name, d->min_args,
                    d->min_args == 1 ? "" : "s", got);
    return fail(p, off, "filter '%s' takes %d to %d arguments, got %zu", d->name, d->min_args,
                d->max_args, got);
}

/* Reads "| name(args)" pipelines up to and including "}}". */
static int read_filters(parser *p, dsl_expr *e)
{
    size_t cap = 0;
    for (;;) {
        if (skip_ws(p) < 0)
            return -1;
        if (p->s[p->pos] == '}' && p->s[p->pos + 1] == '}') {
            p->pos += 2;
            return 0;
        }
        if (p->s[p->pos] != '|')
            return fail(p, p->pos, "expected '}}'");
        p->pos++;
        if (skip_ws(p) < 0)
            return -1;
        size_t off = p->pos, n = read_ident(p);
        if (!n)
            return fail(p, off, "expected a filter name after '|'");
        const dsl_filter_def *def = dsl_filter_find(p->s + off, n);
        if (!def)
            return unknown_filter(p, off, n);
        if (vec_reserve(&e->filters, e->nfilters, &cap, sizeof *e->filters, 4) < 0)
            return oom(p);
        json_t *args = json_array();
        if (!args)
            return oom(p);
        /* Owned by E from here on, so every error below frees it with E. */
        e->filters[e->nfilters++] = (dsl_filter_call){ .def = def, .args = args, .offset = off };
        if (skip_ws(p) < 0)
            return -1;
        if (p->s[p->pos] == '(') {
            p->pos++;
            if (skip_ws(p) < 0)
                return -1;
            if (p->s[p->pos] == ')') {
                p->pos++;
            } else {
                for (;;) {
                    json_t *lit = NULL;
                    if (read_literal(p, &lit) < 0)
                        return -1;
                    if (json_array_append_new(args, lit) < 0)
                        return oom(p);
                    if (skip_ws(p) < 0)
                        return -1;
                    char c = p->s[p->pos];
                    if (c == ')') {
                        p->pos++;
                        break;
                    }
                    if (c != ',')
                        return fail(p, p->pos, "expected ',' or ')'");
                    p->pos++;
                    if (skip_ws(p) < 0)
                        return -1;
                }
            }
        }
        if (check_arity(p, def, json_array_size(args), off) < 0)
            return -1;
    }
}

/* Reads an expression after "{{" (p->pos just past it). New expr in *OUT. */
static int read_expr(parser *p, dsl_expr **out)
{
    dsl_expr *e = calloc(1, sizeof *e);
    size_t cap = 0;
    if (!e)
        return oom(p);
    if (skip_ws(p) < 0)
        goto fail;
    if (p->s[p->pos] == '}' && p->s[p->pos + 1] == '}') {
        fail(p, p->open, "empty expression");
        goto fail;
    }
    e->root_offset = p->pos;
    size_t n = read_ident(p);
    if (!n) {
        fail(p, p->pos, "expected a name after '{{'");
        goto fail;
    }
    if (!(e->root = strndup(p->s + e->root_offset, n))) {
        oom(p);
        goto fail;
    }
    for (;;) {
        if (skip_ws(p) < 0)
            goto fail;
        /* A segment's offset is that of its name or index, not of the '.'
         * or '[': that is what a diagnostic about it should point at. */
        char c = p->s[p->pos];
        if (c == '.') {
            p->pos++;
            if (skip_ws(p) < 0)
                goto fail;
            size_t off = p->pos;
            if (is_digit(p->s[off])) {
                long idx;
                if (read_index(p, &idx) < 0 || add_seg(p, e, &cap, DSL_SEG_INDEX, NULL, idx, off) < 0)
                    goto fail;
            } else if ((n = read_ident(p)) > 0) {
                char *name = strndup(p->s + off, n);
                if (!name) {
                    oom(p);
                    goto fail;
                }
                if (add_seg(p, e, &cap, DSL_SEG_FIELD, name, 0, off) < 0)
                    goto fail;
            } else {
                fail(p, off, "expected a name after '.'");
                goto fail;
            }
        } else if (c == '[') {
            p->pos++;
            if (skip_ws(p) < 0)
                goto fail;
            size_t off = p->pos;
            char d = p->s[off];
            if (d == '"' || d == '\'') {
                if (read_string(p) < 0)
                    goto fail;
                if (memchr(p->str.p, '\0', p->str.n)) {
                    fail(p, off, "a field name cannot contain '\\u0000'");
                    goto fail;
                }
                char *name = strndup(p->str.n ? p->str.p : "", p->str.n);
                if (!name) {
                    oom(p);
                    goto fail;
                }
                if (add_seg(p, e, &cap, DSL_SEG_FIELD, name, 0, off) < 0)
                    goto fail;
            } else if (d == '-' || is_digit(d)) {
                long idx;
                if (read_index(p, &idx) < 0 || add_seg(p, e, &cap, DSL_SEG_INDEX, NULL, idx, off) < 0)
                    goto fail;
            } else {
                fail(p, p->pos, "expected an index or a quoted name after '['");
                goto fail;
            }
            if (skip_ws(p) < 0)
                goto fail;
            if (p->s[p->pos] != ']') {
                fail(p, p->pos, "expected ']'");
                goto fail;
            }
            p->pos++;
        } else {
            break;
        }
    }
    if (read_filters(p, e) < 0)
        goto fail;
    *out = e;
    return 0;
fail:
    expr_free(e);
    return -1;
}

static int add_part(parser *p, dsl_template *t, size_t *cap, dsl_tpl_part part)
{
    if (vec_reserve(&t->parts, t->nparts, cap, sizeof *t->parts, 4) < 0)
        return oom(p);
    t->parts[t->nparts++] = part;
    return 0;
}

/* Makes a text part at OFF of the pending unescaped text (p->text) followed
 * by the N bytes at RUN. Text without escapes, the usual case, is copied
 * once, straight from the source. */
static int flush_text(parser *p, dsl_template *t, size_t *cap, size_t off, const char *run, size_t n)
{
    size_t total = p->text.n + n;
    if (!total)
        return 0;
    char *s = malloc(total + 1);
    if (!s)
        return oom(p);
    if (p->text.n)
        memcpy(s, p->text.p, p->text.n);
    if (n)
        memcpy(s + p->text.n, run, n);
    s[total] = '\0';
    sbuf_reset(&p->text);
    if (add_part(p, t, cap, (dsl_tpl_part){ .text = s, .len = total, .offset = off }) < 0) {
        free(s);
        return -1;
    }
    return 0;
}

dsl_template *dsl_template_parse(const char *s, size_t len, dsl_tpl_error *err)
{
    dsl_tpl_error dummy;
    parser p = { .s = s, .len = len, .err = err ? err : &dummy };
    size_t cap = 0, text_off = 0;
    memset(p.err, 0, sizeof *p.err);
    dsl_template *t = calloc(1, sizeof *t);
    if (!t || !(t->source = malloc(len + 1))) {
        oom(&p);
        goto fail;
    }
    if (len)
        memcpy(t->source, s, len);
    t->source[len] = '\0';
    size_t bad = utf8_invalid_at((const unsigned char *)s, len);
    if (bad < len) {
        fail(&p, bad, "invalid UTF-8");
        goto fail;
    }
    size_t run = 0; /* start of the text not yet copied anywhere */
    while (p.pos < len) {
        char c = s[p.pos];
        int esc = c == '\\' && len - p.pos >= 3 && s[p.pos + 1] == '{' && s[p.pos + 2] == '{';
        int open = c == '{' && len - p.pos >= 2 && s[p.pos + 1] == '{';
        if (!esc && !open) {
            p.pos++;
            continue;
        }
        if (esc) {
            if (sbuf_add(&p.text, s + run, p.pos - run) < 0 || sbuf_add(&p.text, "{{", 2) < 0) {
                oom(&p);
                goto fail;
            }
            p.pos += 3;
            run = p.pos;
            continue;
        }
        if (flush_text(&p, t, &cap, text_off, s + run, p.pos - run) < 0)
            goto fail;
        p.open = p.pos;
        p.pos += 2;
        dsl_expr *e;
        if (read_expr(&p, &e) < 0)
            goto fail;
        if (add_part(&p, t, &cap, (dsl_tpl_part){ .expr = e, .offset = p.open }) < 0) {
            expr_free(e);
            goto fail;
        }
        run = text_off = p.pos;
    }
    if (flush_text(&p, t, &cap, text_off, s + run, len - run) < 0)
        goto fail;
    t->whole = t->nparts == 1 && t->parts[0].expr != NULL;
    sbuf_free(&p.text);
    sbuf_free(&p.str);
    return t;
fail:
    sbuf_free(&p.text);
    sbuf_free(&p.str);
    dsl_template_free(t);
    return NULL;
}

void dsl_template_free(dsl_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nparts; i++) {
        free(t->parts[i].text);
        expr_free(t->parts[i].expr);
    }
    free(t->parts);
    free(t->source);
    free(t);
}

int dsl_template_is_literal(const char *s, size_t len)
{
    return s == NULL || len < 2 || memmem(s, len, "{{", 2) == NULL;
}
