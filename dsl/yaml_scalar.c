/* yaml_scalar.c -- what the scalars of a loaded YAML tree mean and where
 * their characters were written (see yaml_tree.h).
 *
 * Typing follows the YAML 1.2 core schema for plain scalars (null, booleans,
 * integers, floats; anything else, and anything quoted or in block style, is
 * a string), with converters for each type. dsl_yscalar_pos maps an offset in
 * a scalar's decoded value back to the source line and column by walking the
 * source text and the value side by side. The loader's messages about the
 * raw text (positions of reader errors, the first invalid UTF-8 sequence)
 * use the helpers at the end (see yaml_internal.h). */
#include "dsl/yaml_tree.h"
#include "dsl/yaml_internal.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalar types --------------------------------------------------------- */

static int one_of(const char *s, size_t n, const char *const *words)
{
    for (; *words; words++)
        if (strlen(*words) == n && memcmp(s, *words, n) == 0)
            return 1;
    return 0;
}

static const char *const null_words[] = { "~", "null", "Null", "NULL", NULL };
static const char *const true_words[] = { "true", "True", "TRUE", NULL };
static const char *const false_words[] = { "false", "False", "FALSE", NULL };
static const char *const inf_words[] = { ".inf", ".Inf", ".INF", NULL };
static const char *const nan_words[] = { ".nan", ".NaN", ".NAN", NULL };

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int digit_value(char c, int base)
{
    int d = is_digit(c) ? c - '0'
          : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
    return d < base ? d : -1;
}

/* 1: an int64 in *OUT; 2: a decimal integer too big for int64; 0: not an
 * integer (including 0x/0o values past INT64_MAX). */
static int parse_int(const char *s, size_t n, int64_t *out)
{
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        int base = s[1] == 'x' ? 16 : 8;
        uint64_t v = 0;
        int ovf = 0;
        for (size_t i = 2; i < n; i++) {
            int d = digit_value(s[i], base);
            if (d < 0)
                return 0;
            if (v > ((uint64_t)INT64_MAX - (uint64_t)d) / (uint64_t)base)
                ovf = 1;
            else
                v = v * (uint64_t)base + (uint64_t)d;
        }
        if (ovf)
            return 0;
        *out = (int64_t)v;
        return 1;
    }
    size_t i = n > 0 && (s[0] == '-' || s[0] == '+');
    int neg = i && s[0] == '-';
    if (i == n)
        return 0;
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    int ovf = 0;
    for (; i < n; i++) {
        if (!is_digit(s[i]))
            return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (lim - d) / 10)
            ovf = 1;
        else if (!ovf)
            v = v * 10 + d;
    }
    if (ovf)
        return 2;
    *out = !neg ? (int64_t)v : v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    return 1;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, [-+]?\.inf, \.nan */
static int is_float(const char *s, size_t n)
{
    if (one_of(s, n, nan_words))
        return 1;
    size_t i = n > 0 && (s[0] == '-' || s[0] == '+');
    if (one_of(s + i, n - i, inf_words))
        return 1;
    size_t d1 = 0, d2 = 0;
    for (; i < n && is_digit(s[i]); i++)
        d1++;
    if (i < n && s[i] == '.') {
        for (i++; i < n && is_digit(s[i]); i++)
            d2++;
        if (d1 == 0 && d2 == 0)
            return 0;
    } else if (d1 == 0) {
        return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t d3 = 0;
        for (; i < n && is_digit(s[i]); i++)
            d3++;
        if (d3 == 0)
            return 0;
    }
    return i == n;
}

dsl_ytype dsl_yscalar_type(const dsl_ynode *n)
{
    if (!n || n->kind != DSL_Y_SCALAR || n->u.scalar.style != DSL_YS_PLAIN)
        return DSL_YT_STRING;
    const char *s = n->u.scalar.str;
    size_t len = n->u.scalar.len;
    if (len == 0 || one_of(s, len, null_words))
        return DSL_YT_NULL;
    if (one_of(s, len, true_words) || one_of(s, len, false_words))
        return DSL_YT_BOOL;
    int64_t v;
    switch (parse_int(s, len, &v)) {
    case 1: return DSL_YT_INT;
    case 2: return DSL_YT_FLOAT;
    default: break;
    }
    return is_float(s, len) ? DSL_YT_FLOAT : DSL_YT_STRING;
}

int dsl_yscalar_bool(const dsl_ynode *n, int *out)
{
    if (dsl_yscalar_type(n) != DSL_YT_BOOL)
        return -1;
    *out = n->u.scalar.str[0] == 't' || n->u.scalar.str[0] == 'T';
    return 0;
}

int dsl_yscalar_int(const dsl_ynode *n, int64_t *out)
{
    if (dsl_yscalar_type(n) != DSL_YT_INT)
        return -1;
    return parse_int(n->u.scalar.str, n->u.scalar.len, out) == 1 ? 0 : -1;
}

int dsl_yscalar_double(const dsl_ynode *n, double *out)
{
    dsl_ytype t = dsl_yscalar_type(n);
    int64_t iv;
    if (t == DSL_YT_INT && parse_int(n->u.scalar.str, n->u.scalar.len, &iv) == 1) {
        *out = (double)iv;
        return 0;
    }
    if (t != DSL_YT_FLOAT)
        return -1;
    const char *s = n->u.scalar.str;
    size_t len = n->u.scalar.len, sign = s[0] == '-' || s[0] == '+';
    if (one_of(s, len, nan_words)) {
        *out = NAN;
        return 0;
    }
    if (one_of(s + sign, len - sign, inf_words)) {
        *out = s[0] == '-' ? -INFINITY : INFINITY;
        return 0;
    }
    /* strtod follows LC_NUMERIC; YAML's decimal point is always '.'. */
    const char *dp = localeconv()->decimal_point;
    size_t dpl = dp ? strlen(dp) : 1;
    char *tmp = NULL, *end;
    const char *text = s;
    if (dp && strcmp(dp, ".") != 0) {
        const char *dot = memchr(s, '.', len);
        if (dot) {
            tmp = malloc(len + dpl + 1);
            if (!tmp)
                return -1;
            size_t k = (size_t)(dot - s);
            memcpy(tmp, s, k);
            memcpy(tmp + k, dp, dpl);
            memcpy(tmp + k + dpl, dot + 1, len - k - 1);
            tmp[len - 1 + dpl] = '\0';
            text = tmp;
        }
    }
    double v = strtod(text, &end);
    int ok = *end == '\0' && end != text;
    free(tmp);
    if (!ok)
        return -1;
    *out = v;
    return 0;
}

const char *dsl_ynode_describe(const dsl_ynode *n)
{
    if (!n)
        return "null";
    switch (n->kind) {
    case DSL_Y_MAP: return "mapping";
    case DSL_Y_SEQ: return "sequence";
    case DSL_Y_SCALAR: break;
    }
    switch (dsl_yscalar_type(n)) {
    case DSL_YT_NULL: return "null";
    case DSL_YT_BOOL: return "boolean";
    case DSL_YT_INT:
    case DSL_YT_FLOAT: return "number";
    case DSL_YT_STRING: break;
    }
    return "string";
}

/* ---- positions inside scalars --------------------------------------------- */

/* A walk over source bytes that knows the line and column (in characters,
 * as libyaml counts them) of the byte at J. */
typedef struct {
    const unsigned char *s;
    size_t j, end;
    int line, col;
} ycur;

static void cur_step(ycur *c)
{
    unsigned char ch = c->s[c->j++];
    if (ch == '\n' || (ch == '\r' && (c->j >= c->end || c->s[c->j] != '\n'))) {
        c->line += c->line < INT_MAX;
        c->col = 1;
    } else if (ch != '\r' && (c->j >= c->end || (c->s[c->j] & 0xC0) != 0x80)) {
        c->col += c->col < INT_MAX; /* left the last byte of a character */
    }
}

static int is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static void skip_to_eol(ycur *c)
{
    while (c->j < c->end && c->s[c->j] != '\n' && c->s[c->j] != '\r')
        cur_step(c);
}

/* Past `&anchor` and `!tag` properties and the blanks/comments after them. */
static void skip_props(ycur *c)
{
    while (c->j < c->end && (c->s[c->j] == '&' || c->s[c->j] == '!')) {
        while (c->j < c->end && !is_ws(c->s[c->j]))
            cur_step(c);
        while (c->j < c->end && (is_ws(c->s[c->j]) || c->s[c->j] == '#')) {
            if (c->s[c->j] == '#')
                skip_to_eol(c);
            else
                cur_step(c);
        }
    }
}

/* Decoded bytes of the double-quoted escape at S (which starts with '\');
 * *SRC gets its length in the source. 0 for an escaped line break. */
static size_t escape_len(const unsigned char *s, size_t avail, size_t *src)
{
    size_t hex = 0;
    *src = avail < 2 ? avail : 2;
    if (avail < 2)
        return 1;
    switch (s[1]) {
    case '\r':
        if (avail > 2 && s[2] == '\n')
            *src = 3;
        return 0;
    case '\n': return 0;
    case 'N': case '_': return 2;
    case 'L': case 'P': return 3;
    case 'x': hex = 2; break;
    case 'u': hex = 4; break;
    case 'U': hex = 8; break;
    default: return 1;
    }
    if (avail < 2 + hex)
        return 1;
    uint32_t cp = 0;
    for (size_t k = 0; k < hex; k++) {
        int d = digit_value((char)s[2 + k], 16);
        cp = cp * 16 + (uint32_t)(d < 0 ? 0 : d);
    }
    *src = 2 + hex;
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* Walks source and value side by side: equal bytes are the same character;
 * source blanks with no counterpart are indentation or folding, value bytes
 * with none are folded line breaks. QUOTE is the closing quote or 0. */
static void align_pos(ycur *c, const unsigned char *v, size_t len, size_t offset, int quote,
                      int *line, int *col)
{
    int ll = c->line, lc = c->col; /* the last character matched */
    size_t i = 0;
    while (c->j < c->end && i < len) {
        unsigned char ch = c->s[c->j];
        if (quote == '\'' && ch == '\'') {
            if (c->j + 1 >= c->end || c->s[c->j + 1] != '\'')
                break;
            if (i == offset)
                goto here;
            ll = c->line, lc = c->col;
            i++;
            cur_step(c);
            cur_step(c);
            continue;
        }
        if (quote == '"' && ch == '"')
            break;
        if (quote == '"' && ch == '\\') {
            size_t src, out = escape_len(c->s + c->j, c->end - c->j, &src);
            if (out > 0 && offset < i + out)
                goto here;
            if (out > 0)
                ll = c->line, lc = c->col;
            i += out;
            while (src-- > 0)
                cur_step(c);
            continue;
        }
        if (v[i] == ch) {
            if (i == offset)
                goto here;
            ll = c->line, lc = c->col;
            i++;
            cur_step(c);
        } else if (!is_ws(ch)) {
            if (i == offset)
                goto here;
            i++;
        } else {
            cur_step(c);
        }
    }
    *line = ll;
    *col = lc;
    return;
here:
    *line = c->line;
    *col = c->col;
}

/* Literal blocks keep lines: value line k is content line k, at the block's
 * indentation, found as the first content line's indentation minus the
 * spaces the value keeps on that line (an explicit indentation indicator). */
static void literal_pos(ycur *c, const unsigned char *v, size_t len, size_t offset,
                        int *line, int *col)
{
    size_t indent = 0, r = 0, j = c->j;
    while (j < c->end) {
        size_t sp = 0;
        while (j + sp < c->end && c->s[j + sp] == ' ')
            sp++;
        unsigned char ch = j + sp < c->end ? c->s[j + sp] : '\n';
        if (ch != '\n' && ch != '\r') {
            size_t vi = 0, k = 0, vs = 0;
            for (; k < r && vi < len; vi++)
                k += v[vi] == '\n';
            while (vi + vs < len && v[vi + vs] == ' ')
                vs++;
            indent = sp >= vs ? sp - vs : sp;
            break;
        }
        j += sp;
        if (j < c->end && c->s[j] == '\r')
            j++;
        if (j < c->end && c->s[j] == '\n')
            j++;
        r++;
    }
    if (offset >= len)
        offset = len - 1;
    size_t k = 0, ls = 0, chars = 0;
    for (size_t i = 0; i < offset; i++)
        if (v[i] == '\n') {
            k++;
            ls = i + 1;
        }
    for (size_t i = ls; i < offset; i++)
        chars += (v[i] & 0xC0) != 0x80;
    size_t l = (size_t)c->line + k, cl = indent + 1 + chars;
    *line = l > INT_MAX ? INT_MAX : (int)l;
    *col = cl > INT_MAX ? INT_MAX : (int)cl;
}

void dsl_yscalar_pos(const dsl_ydoc *doc, const dsl_ynode *n, size_t offset,
                     int *line, int *col)
{
    int l = n ? n->line : 0, cl = n ? n->col : 0;
    if (!doc || !doc->src || !n || n->kind != DSL_Y_SCALAR || n->offset >= doc->src_len)
        goto out;
    ycur c = { (const unsigned char *)doc->src, n->offset,
               n->end_offset < doc->src_len ? n->end_offset : doc->src_len, n->line, n->col };
    const unsigned char *v = (const unsigned char *)n->u.scalar.str;
    size_t len = n->u.scalar.len;
    skip_props(&c);
    if (c.j >= c.end)
        goto out;
    l = c.line;
    cl = c.col;
    if (len == 0)
        goto out;
    /* The source tells the style: `!!str` plain scalars are typed as quoted. */
    unsigned char ch = c.s[c.j];
    if (ch == '|' || ch == '>') {
        skip_to_eol(&c);
        if (c.j < c.end && c.s[c.j] == '\r')
            cur_step(&c);
        if (c.j < c.end && c.s[c.j] == '\n')
            cur_step(&c);
        if (ch == '|')
            literal_pos(&c, v, len, offset, &l, &cl);
        else
            align_pos(&c, v, len, offset, 0, &l, &cl);
    } else if (ch == '"' || ch == '\'') {
        cur_step(&c);
        align_pos(&c, v, len, offset, ch, &l, &cl);
    } else {
        align_pos(&c, v, len, offset, 0, &l, &cl);
    }
out:
    if (line)
        *line = l;
    if (col)
        *col = cl;
}

/* ---- source text ---------------------------------------------------------- */

void dsl_ysrc_linecol(const unsigned char *s, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    if (off > len)
        off = len;
    for (size_t i = 0; i < off; i++) {
        unsigned char ch = s[i];
        if (ch == '\n' || (ch == '\r' && (i + 1 >= len || s[i + 1] != '\n'))) {
            l += l < INT_MAX;
            c = 1;
        } else if (ch != '\r' && (ch & 0xC0) != 0x80) {
            c += c < INT_MAX;
        }
    }
    *line = l;
    *col = c;
}

size_t dsl_yutf8_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* past U+10FFFF */
        } else {
            return i;
        }
        if (len - i < n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += n;
    }
    return len;
}
