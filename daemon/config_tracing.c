/* config_tracing.c -- `tracing` in the config file:
 *
 *   tracing:
 *     otlp: "http://127.0.0.1:4318"   # the collector; spans go to /v1/traces
 *     service_name: loomd            # service.name of every span
 *     sample: 0.25                   # share of new traces kept (default 1)
 *
 * Errors are FILE:LINE:COL like the rest of the file. Only http and https
 * URLs are taken: curl would accept other schemes (file://, ftp://) that
 * have no business receiving spans. */
#include "daemon/config_tracing.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dsl/dsl.h"

static const char *const tracing_keys[] = { "otlp", "service_name", "sample", NULL };

/* A non-empty string scalar into *OUT (replacing it). */
static void get_text(dsl_diags *d, const dsl_ynode *y, const char *key, char **out)
{
    if (y->kind != DSL_Y_SCALAR || dsl_yscalar_type(y) != DSL_YT_STRING || y->u.scalar.len == 0) {
        dsl_type_error(d, y, key, "a non-empty string");
        return;
    }
    char *s = strdup(y->u.scalar.str);
    if (!s) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    free(*out);
    *out = s;
}

void config_tracing_parse(dsl_diags *d, const dsl_ynode *y, config_tracing *t)
{
    const dsl_ynode *x;
    t->sample = 1.0;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "tracing", "a mapping with at least 'otlp'");
        return;
    }
    dsl_check_keys(d, y, tracing_keys, "tracing");
    if (!(x = dsl_ymap_get(y, "otlp"))) {
        dsl_error(d, y->line, y->col, "missing required key 'otlp' in 'tracing' (the collector's "
                                      "URL, such as \"http://127.0.0.1:4318\")");
    } else {
        get_text(d, x, "otlp", &t->otlp);
        if (t->otlp && strncasecmp(t->otlp, "http://", 7) != 0 &&
            strncasecmp(t->otlp, "https://", 8) != 0) {
            dsl_error(d, x->line, x->col, "'otlp' must be an http:// or https:// URL, got '%s'",
                      t->otlp);
            free(t->otlp);
            t->otlp = NULL;
        }
    }
    if ((x = dsl_ymap_get(y, "service_name")))
        get_text(d, x, "service_name", &t->service_name);
    if ((x = dsl_ymap_get(y, "sample"))) {
        double v;
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) == DSL_YT_STRING ||
            dsl_yscalar_double(x, &v) < 0 || !(v >= 0.0 && v <= 1.0))
            dsl_error(d, x->line, x->col, "'sample' must be a number from 0 to 1 (the share of "
                                          "new traces kept)");
        else
            t->sample = v;
    }
}

void config_tracing_free(config_tracing *t)
{
    free(t->otlp);
    free(t->service_name);
    t->otlp = t->service_name = NULL;
}
