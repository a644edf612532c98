/* test_config_tracing.c -- `tracing` in the daemon's config file: off by
 * default, the keys and their defaults, and every error at its
 * FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"

Test(config_tracing, off_unless_configured)
{
    ct_parsed p = ct_parse("workers: 2\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(ptr, p.c->tracing.otlp, NULL));
    ct_done(&p);
}

Test(config_tracing, the_keys_and_their_defaults)
{
    ct_parsed p = ct_parse("tracing: { otlp: \"http://127.0.0.1:4318\" }\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(str, p.c->tracing.otlp, "http://127.0.0.1:4318"));
    cr_assert(eq(ptr, p.c->tracing.service_name, NULL)); /* loomd's name then */
    cr_assert(eq(dbl, p.c->tracing.sample, 1.0));
    ct_done(&p);
    p = ct_parse("tracing:\n  otlp: https://collector:4318/\n  service_name: batch-loomd\n"
              "  sample: 0.25\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(str, p.c->tracing.service_name, "batch-loomd"));
    cr_assert(eq(dbl, p.c->tracing.sample, 0.25));
    ct_done(&p);
    p = ct_parse("tracing: { otlp: \"http://c:4318\", sample: 0 }\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(dbl, p.c->tracing.sample, 0.0));
    ct_done(&p);
}

Test(config_tracing, errors_at_their_position)
{
    ct_refused("tracing: { service_name: x }\n", "c.yaml:1:10: error: missing required key 'otlp'");
    ct_refused("tracing:\n  otlp: ftp://c/\n", "c.yaml:2:9: error: 'otlp' must be an http:// or "
                                            "https:// URL");
    ct_refused("tracing:\n  otlp: http://c\n  sample: 1.5\n", "c.yaml:3:11: error: 'sample' must "
                                                           "be a number from 0 to 1");
    ct_refused("tracing:\n  otlp: http://c\n  sample: all\n", "c.yaml:3:11:");
    ct_refused("tracing:\n  otlp: http://c\n  servce_name: x\n", "did you mean 'service_name'");
    ct_refused("tracing: http://c\n", "c.yaml:1:10:");
    ct_refused("tracing:\n  otlp: \"\"\n", "c.yaml:2:9:");
}
