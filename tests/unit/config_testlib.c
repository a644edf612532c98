/* config_testlib.c -- see config_testlib.h. */
#include "tests/unit/config_testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CT_FILE "c.yaml"

ct_parsed ct_parse(const char *text)
{
    ct_parsed p;
    dsl_diags_init(&p.d, CT_FILE);
    p.c = config_parse(text, strlen(text), &p.d);
    return p;
}

const char *ct_dump(const ct_parsed *p, bool strip_file)
{
    static char buf[8192];
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < p->d.n && off < sizeof buf; i++) {
        char *s = dsl_diag_format(&p->d, i);
        const char *line = s ? s : "?";
        if (s && strip_file && strncmp(s, CT_FILE ":", strlen(CT_FILE ":")) == 0)
            line = s + strlen(CT_FILE ":");
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s\n", line);
        free(s);
    }
    return buf;
}

void ct_done(ct_parsed *p)
{
    config_free(p->c);
    dsl_diags_free(&p->d);
}

void ct_refused(const char *text, const char *want)
{
    ct_parsed p = ct_parse(text);
    const char *all = ct_dump(&p, false);
    cr_assert(p.c == NULL, "accepted: %s", text);
    cr_assert(eq(sz, p.d.n, 1), "%s", all);
    cr_assert(strstr(all, want) != NULL, "wanted '%s' in: %s", want, all);
    ct_done(&p);
}
