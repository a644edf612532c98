/* config_metrics.c -- `metrics` in the config file:
 *
 *   metrics:
 *     listen: "127.0.0.1:9464"     # GET /metrics; "[::1]:9464" for IPv6
 *     max_series: 1000             # label sets per metric family
 *
 * Errors are FILE:LINE:COL like the rest of the file. The host must be an
 * IP literal (or localhost): a name would be looked up at every start, and
 * the endpoint has no authentication, so where it listens should be
 * exactly what the file says. `loomctl metrics` works without it. */
#include "daemon/config_metrics.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/metrics/metrics_http.h"
#include "dsl/dsl.h"

static const char *const metrics_keys[] = { "listen", "max_series", NULL };

void config_metrics_parse(dsl_diags *d, const dsl_ynode *y, config_metrics *m)
{
    const dsl_ynode *x;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "metrics", "a mapping such as { listen: \"127.0.0.1:9464\" }");
        return;
    }
    dsl_check_keys(d, y, metrics_keys, "metrics");
    if ((x = dsl_ymap_get(y, "listen"))) {
        struct sockaddr_storage ss;
        socklen_t len;
        char why[160];
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_STRING ||
            x->u.scalar.len == 0) {
            dsl_type_error(d, x, "listen", "a string \"HOST:PORT\" such as \"127.0.0.1:9464\"");
        } else if (metrics_http_parse_listen(x->u.scalar.str, &ss, &len, why, sizeof why) < 0) {
            dsl_error(d, x->line, x->col, "bad 'listen' address '%s': %s", x->u.scalar.str, why);
        } else {
            char *s = strdup(x->u.scalar.str);
            if (!s) {
                dsl_error(d, x->line, x->col, "out of memory");
            } else {
                free(m->listen);
                m->listen = s;
            }
        }
    }
    if ((x = dsl_ymap_get(y, "max_series"))) {
        int64_t v;
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_INT ||
            dsl_yscalar_int(x, &v) < 0 || v < 1 || v > 1000000)
            dsl_error(d, x->line, x->col, "'max_series' must be an integer from 1 to 1000000");
        else
            m->max_series = (size_t)v;
    }
}

void config_metrics_free(config_metrics *m)
{
    free(m->listen);
    m->listen = NULL;
}
