/* skeleton_load.c -- loads one plugin file with the daemon's loader and calls
 * one of its lambdas: the last step of skeleton_test.sh, which proves an
 * out-of-tree plugin built against the installed header really works.
 *
 * Usage: skeleton_load PLUGIN.so LAMBDA INPUT-JSON [CONFIG-JSON]
 * Prints the lambda's result as JSON; exits 0 on success, 1 otherwise. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/plugins/plugins.h"

static void print_line(void *ud, const char *line)
{
    fprintf(stderr, "%s\n", line);
}

typedef struct call_ctx {
    loom_ctx base;
    char error[512];
} call_ctx;

static void call_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    vsnprintf(((call_ctx *)ctx)->error, sizeof ((call_ctx *)ctx)->error, fmt, ap);
}

static void call_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static const loom_host_api call_api = { .verror = call_verror, .vlog = call_vlog };

int main(int argc, char **argv)
{
    plugins_t *p = NULL;
    json_t *input = NULL, *config = NULL, *out = NULL;
    call_ctx ctx = { .base = { .api = &call_api } };
    const plugins_lambda *l;
    char *text;
    int rc = 1;

    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s PLUGIN.so LAMBDA INPUT-JSON [CONFIG-JSON]\n", argv[0]);
        return 1;
    }
    if (!(input = json_loads(argv[3], JSON_DECODE_ANY, NULL)) ||
        (argc == 5 && !(config = json_loads(argv[4], 0, NULL)))) {
        fprintf(stderr, "invalid JSON argument\n");
        goto out;
    }
    if (!(p = plugins_new(print_line, NULL)) || plugins_load_file(p, argv[1], config) < 0)
        goto out;
    if (!(l = plugins_lambda_find(p, argv[2]))) {
        fprintf(stderr, "%s: no lambda %s\n", argv[1], argv[2]);
        goto out;
    }
    if (!(out = l->def->fn(&ctx.base, l->state, input, NULL))) {
        fprintf(stderr, "%s failed: %s\n", argv[2], ctx.error);
        goto out;
    }
    if (!(text = json_dumps(out, JSON_ENCODE_ANY)))
        goto out;
    printf("%s\n", text);
    free(text);
    rc = 0;
out:
    json_decref(out);
    json_decref(input);
    json_decref(config);
    plugins_free(p);
    return rc;
}
