/* test_config_tracing.c -- `tracing` in the daemon's config file: off by
 * default, the keys and their defaults, and every error at its
 * FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"

typedef struct {
    config *c;
    dsl_diags d;
} parsed;

static parsed parse(const char *text)
{
    parsed p;
    dsl_diags_init(&p.d, "c.yaml");
    p.c = config_parse(text, strlen(text), &p.d);
    return p;
}

/* Every diagnostic, one a line (a new string). */
static char *dump(const parsed *p)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    for (size_t i = 0; f && i < p->d.n; i++) {
        char *s = dsl_diag_format(&p->d, i);
        fprintf(f, "%s\n", s ? s : "?");
        free(s);
    }
    if (f)
        fclose(f);
    return out;
}

static void done(parsed *p)
{
    config_free(p->c);
    dsl_diags_free(&p->d);
}

/* TEXT is refused with exactly one error holding WANT. */
static void refused(const char *text, const char *want)
{
    parsed p = parse(text);
    char *all = dump(&p);
    cr_assert(p.c == NULL, "accepted: %s", text);
    cr_assert(eq(sz, p.d.n, 1), "%s", all);
    cr_assert(strstr(all, want) != NULL, "wanted '%s' in: %s", want, all);
    free(all);
    done(&p);
}

Test(config_tracing, off_unless_configured)
{
    parsed p = parse("workers: 2\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(ptr, p.c->tracing.otlp, NULL));
    done(&p);
}

Test(config_tracing, the_keys_and_their_defaults)
{
    parsed p = parse("tracing: { otlp: \"http://127.0.0.1:4318\" }\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(str, p.c->tracing.otlp, "http://127.0.0.1:4318"));
    cr_assert(eq(ptr, p.c->tracing.service_name, NULL)); /* loomd's name then */
    cr_assert(eq(dbl, p.c->tracing.sample, 1.0));
    done(&p);
    p = parse("tracing:\n  otlp: https://collector:4318/\n  service_name: batch-loomd\n"
              "  sample: 0.25\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(str, p.c->tracing.service_name, "batch-loomd"));
    cr_assert(eq(dbl, p.c->tracing.sample, 0.25));
    done(&p);
    p = parse("tracing: { otlp: \"http://c:4318\", sample: 0 }\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(dbl, p.c->tracing.sample, 0.0));
    done(&p);
}

Test(config_tracing, errors_at_their_position)
{
    refused("tracing: { service_name: x }\n", "c.yaml:1:10: error: missing required key 'otlp'");
    refused("tracing:\n  otlp: ftp://c/\n", "c.yaml:2:9: error: 'otlp' must be an http:// or "
                                            "https:// URL");
    refused("tracing:\n  otlp: http://c\n  sample: 1.5\n", "c.yaml:3:11: error: 'sample' must "
                                                           "be a number from 0 to 1");
    refused("tracing:\n  otlp: http://c\n  sample: all\n", "c.yaml:3:11:");
    refused("tracing:\n  otlp: http://c\n  servce_name: x\n", "did you mean 'service_name'");
    refused("tracing: http://c\n", "c.yaml:1:10:");
    refused("tracing:\n  otlp: \"\"\n", "c.yaml:2:9:");
}
