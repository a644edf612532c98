/* fake_multipart.c -- finding a field of a multipart/form-data body (RFC 7578).
 *
 * The parts are separated by CRLF "--" BOUNDARY; each has header lines, a
 * blank line, then its content up to the next separator. Only
 * Content-Disposition matters here: its `name` and `filename` parameters. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "tests/fake/fake_multipart.h"

enum { MAX_BOUNDARY = 70 }; /* RFC 2046 */

/* The value of parameter KEY in a header value [P, END) ("a; key=v;
 * key2=\"v; 2\""), quotes removed, into *V and *VL. Whole parameter names
 * only: "name" never matches inside "filename", nor a ';' inside quotes
 * ends a value. */
static bool param(const char *p, const char *end, const char *key, const char **v, size_t *vl)
{
    size_t kl = strlen(key);
    /* each pass consumes one parameter (or one stray separator) */
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
            p++;
        const char *k = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        const char *ke = p, *a = p, *b = p;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        if (p < end && *p == '=') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p < end && *p == '"') {
                a = ++p;
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (!q)
                    return false;
                b = q;
                p = q + 1;
            } else {
                a = p;
                while (p < end && *p != ';')
                    p++;
                b = p;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                    b--;
            }
        }
        if ((size_t)(ke - k) == kl && !strncasecmp(k, key, kl)) {
            *v = a;
            *vl = (size_t)(b - a);
            return true;
        }
        while (p < end && *p != ';')
            p++;
    }
    return false;
}

/* The value of header NAME among the header lines [P, END), or NULL. */
static const char *header(const char *p, const char *end, const char *name, const char **vend)
{
    size_t nl = strlen(name);
    while (p < end) {
        const char *le = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!le)
            le = end;
        if ((size_t)(le - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
            const char *v = p + nl + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            *vend = le;
            return v;
        }
        p = le + 2;
    }
    return NULL;
}

int fake_multipart_find(const char *ctype, size_t ctype_len, const char *body, size_t len, const char *name,
                        fake_part *out)
{
    const char *cend = ctype + ctype_len;
    static const char form[] = "multipart/form-data";
    if (ctype_len < sizeof form - 1 || strncasecmp(ctype, form, sizeof form - 1))
        return -1;
    const char *bv;
    size_t bvl;
    if (!param(ctype + sizeof form - 1, cend, "boundary", &bv, &bvl) || bvl == 0 || bvl > MAX_BOUNDARY)
        return -1;
    /* the delimiter with its leading CRLF, so content can hold "--" freely */
    char delim[MAX_BOUNDARY + 4] = "\r\n--";
    memcpy(delim + 4, bv, bvl);
    size_t dl = bvl + 4;
    const char *end = body + len;
    /* the first delimiter may open the body (no CRLF before it) */
    const char *p;
    if (len >= dl - 2 && !memcmp(body, delim + 2, dl - 2))
        p = body + dl - 2;
    else if ((p = memmem(body, len, delim, dl)) != NULL)
        p += dl;
    else
        return -1;
    /* each pass moves P past one part, so the loop ends with the body */
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return 0; /* the closing delimiter */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return -1;
        p += 2;
        const char *he = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *data;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            he = p; /* a part without headers */
            data = p + 2;
        } else if (he) {
            data = he + 4;
        } else {
            return -1;
        }
        const char *next = memmem(data, (size_t)(end - data), delim, dl);
        if (!next)
            return -1;
        const char *dend, *disp = header(p, he, "content-disposition", &dend);
        const char *nv, *fv;
        size_t nvl, fvl;
        if (disp && param(disp, dend, "name", &nv, &nvl) && nvl == strlen(name) && !memcmp(nv, name, nvl)) {
            out->data = data;
            out->len = (size_t)(next - data);
            out->filename = NULL;
            out->filename_len = 0;
            if (param(disp, dend, "filename", &fv, &fvl)) {
                out->filename = fv;
                out->filename_len = fvl;
            }
            return 1;
        }
        p = next + dl;
    }
}
