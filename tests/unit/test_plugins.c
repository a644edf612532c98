/* test_plugins.c -- the plugin loader and registry: every refusal and its
 * message, loading going on after a bad file, lookups and name lists, init
 * once and fini in reverse order, and config maps; ABI 2.x: sizes, plugins
 * of an older minor, normalised copies, reload, and (in a real engine)
 * loom_log from every context, fail_after, deadlines and cancellation, and
 * the warning for a slow inline lambda.
 *
 * The shared objects are real ones, built from the sources in tests/plugins as libtool
 * modules, so dlopen, symbol lookup and RTLD_LOCAL are exercised for real.
 * Descriptors that need no file of their own (bad lambdas, providers,
 * fini order) are defined here and registered with plugins_add. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/core/http.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "daemon/engine/engine.h"
#include "daemon/plugins/plugins.h"
#include "daemon/upstream/upstream.h"
#include "dsl/dsl.h"

/* ---- helpers */

typedef struct log_lines {
    char lines[32][1400];
    int n;
} log_lines;

static void collect(void *ud, const char *line)
{
    log_lines *l = ud;
    if (l->n < 32)
        snprintf(l->lines[l->n++], sizeof l->lines[0], "%s", line);
}

/* 1 if some logged line equals WANT. */
static int logged(const log_lines *l, const char *want)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->lines[i], want) == 0)
            return 1;
    return 0;
}

static const char *dump(const log_lines *l)
{
    static char buf[8192];
    buf[0] = '\0';
    for (int i = 0; i < l->n; i++) {
        strncat(buf, l->lines[i], sizeof buf - strlen(buf) - 2);
        strcat(buf, "\n");
    }
    return buf;
}

/* The path of test plugin NAME.so (static buffer); NAME may start with a
 * folder under tests/plugins ("abi/lambda_2_0"). */
static const char *plugin_path(const char *name)
{
    static char buf[PATH_MAX];
    const char *b = getenv("LOOM_BUILDDIR"), *slash = strrchr(name, '/');
    if (slash)
        snprintf(buf, sizeof buf, "%s/tests/plugins/%.*s/.libs/%s.so", b ? b : ".",
                 (int)(slash - name), name, slash + 1);
    else
        snprintf(buf, sizeof buf, "%s/tests/plugins/.libs/%s.so", b ? b : ".", name);
    return buf;
}

static log_lines logs;
static plugins_t *reg;

static void setup(void)
{
    memset(&logs, 0, sizeof logs);
    reg = plugins_new(collect, &logs);
    cr_assert(reg != NULL);
}

static void teardown(void)
{
    plugins_free(reg);
}

/* A call context for invoking lambdas the way the engine will. */
typedef struct call_ctx {
    loom_ctx base;
    char error[256];
} call_ctx;

static void call_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    vsnprintf(((call_ctx *)ctx)->error, sizeof ((call_ctx *)ctx)->error, fmt, ap);
}

static void call_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
}

static const loom_host_api call_api = { .verror = call_verror, .vlog = call_vlog };

static json_t *call_lambda(const char *name, json_t *input)
{
    const plugins_lambda *l = plugins_lambda_find(reg, name);
    call_ctx ctx = { .base = { .api = &call_api } };
    cr_assert(l != NULL, "lambda %s not found", name);
    return l->def->fn(&ctx.base, l->state, input, NULL);
}

/* ---- loading shared objects */

TestSuite(plugins, .init = setup, .fini = teardown);

Test(plugins, good_plugin_loads_and_is_found)
{
    json_t *in = json_string("x"), *out;

    cr_assert(eq(int, plugins_load_file(reg, plugin_path("good"), NULL), 0), "%s", dump(&logs));
    cr_assert(eq(int, logs.n, 0), "%s", dump(&logs));
    const plugins_lambda *l = plugins_lambda_find(reg, "good.echo");
    cr_assert(l != NULL);
    cr_assert(eq(str, (char *)l->name, "good.echo"));
    cr_assert(eq(str, (char *)l->plugin->name, "good"));
    cr_assert(eq(u32, l->def->flags, LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST));
    out = call_lambda("good.echo", in);
    cr_assert(json_equal(out, in));
    json_decref(out);
    json_decref(in);

    const plugins_provider *v = plugins_provider_find(reg, "good_local");
    cr_assert(v != NULL);
    cr_assert(eq(str, (char *)v->name, "good_local"));
    cr_assert(v->def->invoke != NULL);
    cr_assert(eq(str, (char *)v->plugin->name, "good"));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "good.nope"), NULL));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "echo"), NULL));
    cr_assert(eq(ptr, (void *)plugins_provider_find(reg, "good"), NULL));
}

Test(plugins, init_runs_once_with_its_config)
{
    json_t *config = json_pack("{s:s}", "greeting", "hello"), *out;

    cr_assert(eq(int, plugins_load_file(reg, plugin_path("good"), config), 0), "%s", dump(&logs));
    json_decref(config);
    out = call_lambda("good.inits", NULL);
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "state")), 1));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "object")), 1));
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "greeting_len")), 5));
    json_decref(out);
    /* Lookups and calls do not run init again. */
    out = call_lambda("good.inits", NULL);
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "object")), 1));
    json_decref(out);
}

Test(plugins, abi_major_mismatch_is_refused)
{
    const char *path = plugin_path("abi_major_3");
    char want[PATH_MAX + 100];

    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    snprintf(want, sizeof want, "%s: built for plugin ABI 3.0, this loomd has %d.%d", path,
             LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
}

Test(plugins, newer_abi_minor_is_refused)
{
    const char *path = plugin_path("abi_minor_newer");
    char want[PATH_MAX + 200];

    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    snprintf(want, sizeof want,
             "%s: built for plugin ABI %d.%d, this loomd has %d.%d "
             "(a newer minor: rebuild it or upgrade loomd)",
             path, LOOM_ABI_MAJOR, LOOM_ABI_MINOR + 1, LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
    cr_assert(eq(ptr, (void *)plugins_lambda_names(reg)[0], NULL));
}

Test(plugins, missing_entry_is_not_a_plugin)
{
    const char *path = plugin_path("no_entry");
    char want[PATH_MAX + 100];

    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    snprintf(want, sizeof want, "%s: no loom_plugin_entry symbol: not a Loom plugin", path);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
}

Test(plugins, unopenable_file_reports_dlerror)
{
    char path[PATH_MAX];

    snprintf(path, sizeof path, "%s", plugin_path("does_not_exist"));
    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    cr_assert(eq(int, logs.n, 1));
    cr_assert(strncmp(logs.lines[0], path, strlen(path)) == 0, "%s", dump(&logs));
    cr_assert(strstr(logs.lines[0], "No such file") != NULL, "%s", dump(&logs));
}

Test(plugins, duplicate_plugin_name_names_the_other_file)
{
    char good[PATH_MAX], want[2 * PATH_MAX + 100];

    snprintf(good, sizeof good, "%s", plugin_path("good"));
    cr_assert(eq(int, plugins_load_file(reg, good, NULL), 0));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("dup_name"), NULL), -1));
    snprintf(want, sizeof want, "%s: plugin name 'good' is already taken by %s",
             plugin_path("dup_name"), good);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
    /* The first one is still there and still works. */
    json_t *out = call_lambda("good.inits", NULL);
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "state")), 1));
    json_decref(out);
}

Test(plugins, init_failure_refuses_with_its_message)
{
    const char *path = plugin_path("init_fails");
    char want[PATH_MAX + 200];

    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    snprintf(want, sizeof want,
             "%s: plugin 'init_fails' failed to initialise: model file model.bin not found", path);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
    /* Its log line went through too, attributed to the plugin. */
    cr_assert(logged(&logs, "init_fails: checking the model file"), "%s", dump(&logs));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "init_fails.echo"), NULL));
}

/* Builds a directory of symlinks to the named plugins plus files that are
 * not plugins; returns its path (static buffer). */
static const char *make_dir(const char *const *names)
{
    static char dir[PATH_MAX];
    char link[PATH_MAX + 64];
    FILE *f;

    const char *tmp = getenv("TMPDIR");

    snprintf(dir, sizeof dir, "%s/loom-plugins-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert(mkdtemp(dir) != NULL);
    for (size_t i = 0; names[i]; i++) {
        char target[PATH_MAX];
        snprintf(target, sizeof target, "%s", plugin_path(names[i]));
        snprintf(link, sizeof link, "%s/%s.so", dir, names[i]);
        cr_assert(eq(int, symlink(target, link), 0));
    }
    snprintf(link, sizeof link, "%s/README.txt", dir);
    f = fopen(link, "w");
    cr_assert(f != NULL);
    fputs("not a plugin\n", f);
    fclose(f);
    snprintf(link, sizeof link, "%s/notes.so.txt", dir);
    f = fopen(link, "w");
    cr_assert(f != NULL);
    fclose(f);
    return dir;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX + 300];

    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

Test(plugins, directory_loads_in_name_order_and_goes_on)
{
    static const char *const names[] = { "abi_major_3", "good", "init_fails", "no_entry",
                                         "zz_missing", NULL };
    const char *dir = make_dir(names);

    /* A dangling link: fails to open, and loading still goes on. */
    cr_assert(eq(int, plugins_load_dir(reg, dir), 1), "%s", dump(&logs));
    cr_assert(eq(int, logs.n, 5), "%s", dump(&logs)); /* 4 refusals + init's log line */
    cr_assert(strstr(logs.lines[0], "abi_major_3.so: built for plugin ABI 3.0") != NULL, "%s", dump(&logs));
    cr_assert(strstr(logs.lines[3], "no_entry.so: no loom_plugin_entry") != NULL, "%s", dump(&logs));
    cr_assert(strstr(logs.lines[4], "zz_missing.so: ") != NULL, "%s", dump(&logs));
    cr_assert(plugins_lambda_find(reg, "good.echo") != NULL);
    cr_assert(eq(int, plugins_load_dir(reg, "/nonexistent-loom-dir"), -1));
    remove_dir(dir);
}

Test(plugins, directory_order_decides_a_name_clash)
{
    static const char *const names[] = { "good", "dup_name", NULL };
    const char *dir = make_dir(names);
    char want[2 * PATH_MAX + 100];

    /* "dup_name.so" sorts first, so it wins the name "good". */
    cr_assert(eq(int, plugins_load_dir(reg, dir), 1));
    snprintf(want, sizeof want, "%s/good.so: plugin name 'good' is already taken by %s/dup_name.so",
             dir, dir);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "good.inits"), NULL));
    remove_dir(dir);
}

/* ---- descriptors registered directly */

static json_t *echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static int enc(loom_ctx *ctx, void *state, const loom_request *req, loom_http_request *out)
{
    return -1;
}

static int dec(loom_ctx *ctx, void *state, const loom_request *req,
               const loom_http_response *resp, loom_result *out)
{
    return -1;
}

#define PLUGIN(n, ls, nl, ps, np) \
    { LOOM_PLUGIN_HEADER, .name = (n), \
      .lambdas = (ls), .nlambdas = (nl), .providers = (ps), .nproviders = (np) }

Test(plugins, bad_descriptors_are_refused)
{
    static const loom_lambda no_fn[] = { { .name = "f" } };
    static const loom_lambda no_name[] = { { .fn = echo } };
    static const loom_lambda twice[] = { { .name = "f", .fn = echo }, { .name = "f", .fn = echo } };
    static const loom_provider half[] = { { .name = "half", .encode = enc } };
    static const loom_plugin bad_name = PLUGIN("Bad-Name", NULL, 0, NULL, 0);
    static const loom_plugin no_plugin_name = PLUGIN(NULL, NULL, 0, NULL, 0);
    static const loom_plugin p1 = PLUGIN("p1", no_fn, 1, NULL, 0);
    static const loom_plugin p2 = PLUGIN("p2", no_name, 1, NULL, 0);
    static const loom_plugin p3 = PLUGIN("p3", twice, 2, NULL, 0);
    static const loom_plugin p4 = PLUGIN("p4", NULL, 0, half, 1);

    cr_assert(eq(int, plugins_add(reg, NULL, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &bad_name, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &no_plugin_name, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &p1, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &p2, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &p3, "built-in", NULL), -1));
    cr_assert(eq(int, plugins_add(reg, &p4, "built-in", NULL), -1));
    cr_assert(logged(&logs, "built-in: the plugin entry returned no descriptor"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: invalid plugin name 'Bad-Name' "
                            "(lower-case letters, digits and '_' only)"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: the plugin has no name"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: lambda #1 of plugin 'p1' has no function"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: lambda #1 of plugin 'p2' has no name"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: lambda 'p3.f' is defined twice"), "%s", dump(&logs));
    cr_assert(logged(&logs, "built-in: provider 'half' has neither encode and decode nor invoke"),
              "%s", dump(&logs));
    cr_assert(eq(int, logs.n, 7));
    cr_assert(eq(ptr, (void *)plugins_lambda_names(reg)[0], NULL));
    cr_assert(eq(ptr, (void *)plugins_provider_names(reg)[0], NULL));
}

Test(plugins, duplicate_provider_names_both_origins)
{
    static const loom_provider http[] = { { .name = "openai", .encode = enc, .decode = dec } };
    static const loom_plugin a = PLUGIN("a", NULL, 0, http, 1);
    static const loom_plugin b = PLUGIN("b", NULL, 0, http, 1);

    cr_assert(eq(int, plugins_add(reg, &a, "first.so", NULL), 0));
    cr_assert(eq(int, plugins_add(reg, &b, "second.so", NULL), -1));
    cr_assert(logged(&logs, "second.so: provider 'openai' is already defined by first.so"),
              "%s", dump(&logs));
    cr_assert(eq(str, (char *)plugins_provider_find(reg, "openai")->plugin->name, "a"));
}

Test(plugins, names_are_sorted_and_null_terminated)
{
    static const loom_lambda zl[] = { { .name = "zeta", .fn = echo }, { .name = "alpha", .fn = echo } };
    static const loom_lambda al[] = { { .name = "mid", .fn = echo } };
    static const loom_provider zp[] = { { .name = "zp", .encode = enc, .decode = dec } };
    static const loom_provider ap[] = { { .name = "ap", .encode = enc, .decode = dec } };
    static const loom_plugin z = PLUGIN("z", zl, 2, zp, 1);
    static const loom_plugin a = PLUGIN("a", al, 1, ap, 1);

    cr_assert(eq(int, plugins_add(reg, &z, NULL, NULL), 0));
    cr_assert(eq(int, plugins_add(reg, &a, NULL, NULL), 0));
    const char *const *ln = plugins_lambda_names(reg);
    cr_assert(eq(str, (char *)ln[0], "a.mid"));
    cr_assert(eq(str, (char *)ln[1], "z.alpha"));
    cr_assert(eq(str, (char *)ln[2], "z.zeta"));
    cr_assert(eq(ptr, (void *)ln[3], NULL));
    const char *const *pn = plugins_provider_names(reg);
    cr_assert(eq(str, (char *)pn[0], "ap"));
    cr_assert(eq(str, (char *)pn[1], "zp"));
    cr_assert(eq(ptr, (void *)pn[2], NULL));
    /* Lookups stay valid across later additions. */
    const plugins_lambda *mid = plugins_lambda_find(reg, "a.mid");
    static const loom_lambda bl[] = { { .name = "b", .fn = echo } };
    static const loom_plugin b = PLUGIN("b", bl, 1, NULL, 0);
    cr_assert(eq(int, plugins_add(reg, &b, NULL, NULL), 0));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "a.mid"), (void *)mid));
    cr_assert(eq(str, (char *)plugins_lambda_names(reg)[1], "b.b"));
}

/* fini order: each plugin's state is its own name; fini appends it here. */
static char fini_order[64];

static int named_init(loom_ctx *ctx, json_t *config, void **state)
{
    *state = (void *)json_string_value(config);
    return 0;
}

static void named_fini(void *state)
{
    strcat(fini_order, state);
}

Test(plugins, fini_runs_in_reverse_load_order)
{
    static const loom_plugin p1 = { LOOM_PLUGIN_HEADER, .name = "one",
                                    .init = named_init, .fini = named_fini };
    static const loom_plugin p2 = { LOOM_PLUGIN_HEADER, .name = "two",
                                    .init = named_init, .fini = named_fini };
    static const loom_plugin p3 = { LOOM_PLUGIN_HEADER, .name = "three",
                                    .init = named_init, .fini = named_fini };
    json_t *a = json_string("1"), *b = json_string("2"), *c = json_string("3");

    fini_order[0] = '\0';
    cr_assert(eq(int, plugins_add(reg, &p1, NULL, a), 0));
    cr_assert(eq(int, plugins_add(reg, &p2, NULL, b), 0));
    cr_assert(eq(int, plugins_add(reg, &p3, NULL, c), 0));
    plugins_free(reg);
    reg = NULL;
    cr_assert(eq(str, fini_order, "321"));
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

Test(plugins, builtins_register_std_and_mock)
{
    cr_assert(eq(int, plugins_add_builtins(reg), 0), "%s", dump(&logs));
    cr_assert(plugins_provider_find(reg, "mock") != NULL, "%s", dump(&logs));
    cr_assert(plugins_lambda_names(reg)[0] != NULL);
    int std = 0;
    for (const char *const *n = plugins_lambda_names(reg); *n; n++)
        std += strncmp(*n, "std.", 4) == 0;
    cr_assert(std > 0);
    /* Loading them twice is a clash, named as built-in. */
    cr_assert(eq(int, plugins_add_builtins(reg), -1));
    cr_assert(logged(&logs, "built-in: plugin name 'std' is already taken by built-in"),
              "%s", dump(&logs));
}

/* many.so declares 1,000 lambdas and 100 providers: each array of the
 * registry grows far past its capacity in one load. (The loader once grew
 * by doubling once and wrote past the name arrays from 19 lambdas on.) */
Test(plugins, a_plugin_with_a_thousand_lambdas_is_found_whole)
{
    char name[64];

    /* good.so first, so the arrays are not empty when they grow */
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("good"), NULL), 0), "%s", dump(&logs));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("many"), NULL), 0), "%s", dump(&logs));
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "many.l%d", i);
        const plugins_lambda *l = plugins_lambda_find(reg, name);
        cr_assert(l != NULL, "%s not found", name);
        cr_assert(eq(str, (char *)l->name, name));
        cr_assert(eq(str, (char *)l->def->name, name + 5));
    }
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "many_p%d", i);
        const plugins_provider *p = plugins_provider_find(reg, name);
        cr_assert(p != NULL, "%s not found", name);
        cr_assert(eq(str, (char *)p->def->name, name));
    }
    cr_assert(plugins_lambda_find(reg, "good.echo") != NULL);
    cr_assert(plugins_provider_find(reg, "good_local") != NULL);

    /* the name lists hold everything, sorted, then NULL */
    size_t n = 0;
    const char *const *ln = plugins_lambda_names(reg);
    for (; ln[n]; n++)
        if (n > 0)
            cr_assert(lt(int, strcmp(ln[n - 1], ln[n]), 0), "%s before %s", ln[n - 1], ln[n]);
    cr_assert(eq(sz, n, 1002));
    const char *const *pn = plugins_provider_names(reg);
    for (n = 0; pn[n]; n++)
        if (n > 0)
            cr_assert(lt(int, strcmp(pn[n - 1], pn[n]), 0), "%s before %s", pn[n - 1], pn[n]);
    cr_assert(eq(sz, n, 101));
}

/* ---- config maps */

static const loom_option opts[] = {
    { .name = "model", .type = LOOM_OPT_STRING, .required = 1 },
    { .name = "max_tokens", .type = LOOM_OPT_INT, .default_value = "256" },
    { .name = "temperature", .type = LOOM_OPT_DOUBLE, .default_value = "0.5" },
    { .name = "stream", .type = LOOM_OPT_BOOL, .default_value = "false" },
    { .name = "timeout", .type = LOOM_OPT_DURATION, .default_value = "30s" },
    { .name = "extra", .type = LOOM_OPT_JSON, .default_value = "{\"a\": 1}" },
    { .name = "base_url", .type = LOOM_OPT_STRING },
    { 0 },
};

static int check(const char *text, char *err)
{
    json_t *config = json_loads(text, 0, NULL);
    cr_assert(config != NULL, "bad test JSON %s", text);
    int rc = plugins_check_options(opts, config, err, 256);
    json_decref(config);
    return rc;
}

Test(options, unknown_key_with_suggestion)
{
    char err[256];
    cr_assert(eq(int, check("{\"model\": \"m\", \"max_tokns\": 3}", err), -1));
    cr_assert(eq(str, err, "unknown option 'max_tokns'; did you mean 'max_tokens'?"));
    cr_assert(eq(int, check("{\"model\": \"m\", \"colour\": 3}", err), -1));
    cr_assert(eq(str, err, "unknown option 'colour'"));
}

Test(options, missing_required)
{
    char err[256];
    cr_assert(eq(int, check("{\"max_tokens\": 3}", err), -1));
    cr_assert(eq(str, err, "missing required option 'model' (a string)"));
    cr_assert(eq(int, plugins_check_options(opts, NULL, err, sizeof err), -1));
}

Test(options, wrong_types)
{
    char err[256];
    cr_assert(eq(int, check("{\"model\": 3}", err), -1));
    cr_assert(eq(str, err, "option 'model' must be a string, not an integer"));
    cr_assert(eq(int, check("{\"model\": \"m\", \"max_tokens\": 2.5}", err), -1));
    cr_assert(eq(str, err, "option 'max_tokens' must be an integer, not a real number"));
    cr_assert(eq(int, check("{\"model\": \"m\", \"stream\": \"yes\"}", err), -1));
    cr_assert(eq(str, err, "option 'stream' must be true or false, not a string"));
    cr_assert(eq(int, check("{\"model\": \"m\", \"timeout\": true}", err), -1));
    cr_assert(eq(str, err, "option 'timeout' must be a duration such as \"500ms\" or \"30s\", "
                           "not a boolean"));
    cr_assert(eq(int, check("{\"model\": \"m\", \"timeout\": \"30 parsecs\"}", err), -1));
    cr_assert(strstr(err, "option 'timeout': invalid duration \"30 parsecs\": ") != NULL, "%s", err);
    cr_assert(eq(int, check("[1]", err), -1));
    cr_assert(eq(str, err, "the configuration must be a mapping, not an array"));
}

Test(options, durations_and_defaults)
{
    char err[256];
    json_t *config = json_pack("{s:s, s:s, s:i}", "model", "m", "timeout", "1m30s",
                               "temperature", 1);

    cr_assert(eq(int, plugins_check_options(opts, config, err, sizeof err), 0), "%s", err);
    cr_assert(eq(i64, json_integer_value(json_object_get(config, "timeout")), 90000));
    int is_real = json_is_real(json_object_get(config, "temperature"));
    cr_assert(is_real);
    cr_assert(eq(dbl, json_real_value(json_object_get(config, "temperature")), 1.0));
    cr_assert(eq(i64, json_integer_value(json_object_get(config, "max_tokens")), 256));
    int is_false = json_is_false(json_object_get(config, "stream"));
    cr_assert(is_false);
    cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(config, "extra"), "a")), 1));
    cr_assert(eq(ptr, json_object_get(config, "base_url"), NULL));
    /* Checking again changes nothing: durations are already milliseconds. */
    json_t *copy = json_deep_copy(config);
    cr_assert(eq(int, plugins_check_options(opts, config, err, sizeof err), 0), "%s", err);
    cr_assert(json_equal(copy, config));
    json_decref(copy);
    json_decref(config);
}

Test(options, duration_default_is_converted)
{
    char err[256];
    json_t *config = json_pack("{s:s}", "model", "m");

    cr_assert(eq(int, plugins_check_options(opts, config, err, sizeof err), 0), "%s", err);
    cr_assert(eq(i64, json_integer_value(json_object_get(config, "timeout")), 30000));
    json_decref(config);
}

Test(options, bad_default_is_reported)
{
    static const loom_option bad[] = {
        { .name = "n", .type = LOOM_OPT_INT, .default_value = "many" },
        { 0 },
    };
    char err[256];
    json_t *config = json_object();

    cr_assert(eq(int, plugins_check_options(bad, config, err, sizeof err), -1));
    cr_assert(eq(str, err, "option 'n': its default 'many' is not an integer"));
    json_decref(config);
}

Test(options, no_options_declared)
{
    char err[256];
    json_t *empty = json_object(), *one = json_pack("{s:i}", "x", 1);

    cr_assert(eq(int, plugins_check_options(NULL, empty, err, sizeof err), 0));
    cr_assert(eq(int, plugins_check_options(NULL, NULL, err, sizeof err), 0));
    cr_assert(eq(int, plugins_check_options(NULL, one, err, sizeof err), -1));
    cr_assert(eq(str, err, "unknown option 'x'"));
    json_decref(empty);
    json_decref(one);
}

/* ---- levels, errors counted, init tried in a child */

typedef struct level_lines {
    int n, levels[32];
    char lines[32][512];
} level_lines;

static void collect_level(void *ud, int level, const char *line)
{
    level_lines *l = ud;
    if (l->n < 32) {
        l->levels[l->n] = level;
        snprintf(l->lines[l->n++], sizeof l->lines[0], "%s", line);
    }
}

/* The level of the first line holding NEEDLE, or -1. */
static int level_of(const level_lines *l, const char *needle)
{
    for (int i = 0; i < l->n; i++)
        if (strstr(l->lines[i], needle))
            return l->levels[i];
    return -1;
}

/* A refused init is one error; the plugin's own info line from init is not,
 * and "loading plugin" is said before init runs. */
Test(plugins, levels_and_error_count)
{
    level_lines ll = { 0 };
    plugins_set_level_log(reg, collect_level, &ll);
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("init_fails"), NULL), -1));
    cr_assert(eq(int, level_of(&ll, "loading plugin 'init_fails'"), LOOM_LOG_INFO));
    cr_assert(eq(int, level_of(&ll, "checking the model file"), LOOM_LOG_INFO));
    cr_assert(eq(int, level_of(&ll, "failed to initialise"), LOOM_LOG_ERROR));
    cr_assert(eq(sz, plugins_errors(reg), 1));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("good"), NULL), 0));
    cr_assert(eq(sz, plugins_errors(reg), 1));
    cr_assert(eq(int, plugins_load_dir(reg, "/nonexistent-plugin-dir"), -1));
    cr_assert(eq(sz, plugins_errors(reg), 2));
}

/* With trial init, a plugin that dies in init is refused and named; the
 * caller lives on and a good plugin still loads after it. */
Test(plugins, trial_init_names_a_crash)
{
    level_lines ll = { 0 };
    plugins_set_level_log(reg, collect_level, &ll);
    plugins_set_trial_init(reg, true);
    const char *path = plugin_path("init_crashes");
    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    cr_assert(eq(int, level_of(&ll, "plugin 'init_crashes' crashed in init"), LOOM_LOG_ERROR));
    cr_assert(level_of(&ll, path) >= 0);
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "init_crashes.echo"), NULL));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("good"), NULL), 0));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("init_fails"), NULL), -1));
    cr_assert(eq(int, level_of(&ll, "failed to initialise"), LOOM_LOG_ERROR));
    cr_assert(eq(sz, plugins_errors(reg), 2));
}

/* ---- ABI 2.x: sizes, older minors, normalised copies, lifecycle, logs
 *
 * tests/plugins/abi/ holds plugins built against the frozen 2.0 header: a
 * lambda plugin (abi20) and an invoke provider (abi20p). The tests below
 * load them into this host and run them in a real engine. */

/* A level_lines any thread may fill: plugin lines come from workers too. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static void collect_shared(void *ud, int level, const char *line)
{
    pthread_mutex_lock(&shared_lock);
    collect_level(ud, level, line);
    pthread_mutex_unlock(&shared_lock);
}

/* The level of the line equal to WANT, or -1 (under the lock). */
static int level_of_line(level_lines *l, const char *want)
{
    int level = -1;
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < l->n && level < 0; i++)
        if (strcmp(l->lines[i], want) == 0)
            level = l->levels[i];
    pthread_mutex_unlock(&shared_lock);
    return level;
}

/* How many lines hold NEEDLE (under the lock). */
static int count_lines(level_lines *l, const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < l->n; i++)
        n += strstr(l->lines[i], needle) != NULL;
    pthread_mutex_unlock(&shared_lock);
    return n;
}

static const char *dump_levels(level_lines *l)
{
    static char buf[32 * 600];
    buf[0] = '\0';
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < l->n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "[%d] %s\n", l->levels[i],
                 l->lines[i]);
    pthread_mutex_unlock(&shared_lock);
    return buf;
}

TestSuite(abi, .init = setup, .fini = teardown);

Test(abi, old_minor_plugins_load_and_read_as_zero_beyond_their_size)
{
    level_lines ll = { 0 };
    plugins_set_level_log(reg, collect_shared, &ll);
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/lambda_2_0"), NULL), 0), "%s",
              dump_levels(&ll));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/provider_2_0"), NULL), 0), "%s",
              dump_levels(&ll));

    /* four lambdas read with the 2.0 stride, names and functions intact */
    static const char *const names[] = { "abi20.echo", "abi20.levels", "abi20.spin",
                                         "abi20.watch" };
    for (size_t i = 0; i < 4; i++) {
        const plugins_lambda *l = plugins_lambda_find(reg, names[i]);
        cr_assert(l != NULL, "%s not found", names[i]);
        cr_assert(eq(str, (char *)l->name, (char *)names[i]));
        cr_assert(l->def->fn != NULL);
        cr_assert(l->def->summary != NULL);
        /* 2.1 fields: the plugin has none, the copy says so */
        cr_assert(eq(ptr, (void *)l->def->doc, NULL));
        cr_assert(eq(ptr, (void *)l->def->example, NULL));
    }
    const plugins_lambda *echo_l = plugins_lambda_find(reg, "abi20.echo");
    cr_assert(eq(u32, echo_l->def->flags, LOOM_LAMBDA_PURE | LOOM_LAMBDA_FAST));
    cr_assert(eq(u32, plugins_lambda_find(reg, "abi20.watch")->def->flags, 0));
    /* the option array, copied with its own stride, ends where it did */
    const loom_option *args = echo_l->def->args;
    cr_assert(args != NULL);
    cr_assert(eq(str, (char *)args[0].name, "x"));
    cr_assert(eq(int, args[0].type, LOOM_OPT_INT));
    cr_assert(eq(str, (char *)args[1].name, "y"));
    cr_assert(eq(str, (char *)args[1].default_value, "why"));
    cr_assert(eq(ptr, (void *)args[2].name, NULL));
    /* the plugin descriptor: no reload (2.1), and the host's sizes now */
    cr_assert(eq(ptr, (void *)(uintptr_t)echo_l->plugin->reload, NULL));
    cr_assert(eq(u32, echo_l->plugin->abi_minor, 0));
    cr_assert(eq(u32, echo_l->plugin->lambda_size, (uint32_t)sizeof(loom_lambda)));

    const plugins_provider *v = plugins_provider_find(reg, "abi20_limited");
    cr_assert(v != NULL);
    cr_assert(v->def->invoke != NULL);
    cr_assert(v->def->cancel != NULL);
    cr_assert(v->def->init != NULL);
    cr_assert(eq(ptr, (void *)v->def->doc, NULL));
    cr_assert(eq(str, (char *)v->def->options[1].name, "retry_after"));
    cr_assert(eq(ptr, (void *)v->def->options[2].name, NULL));

    /* a call through the normalised copy reaches the plugin's code */
    json_t *in = json_integer(7), *a = json_pack("{s:i}", "x", 1);
    call_ctx ctx = { .base = { .api = &call_api } };
    json_t *out = echo_l->def->fn(&ctx.base, echo_l->state, in, a);
    cr_assert(eq(int, (int)json_integer_value(json_object_get(out, "input")), 7));
    json_decref(out);
    json_decref(in);
    json_decref(a);

    /* init's lines: the plugin's name, the level it gave, none counted */
    cr_assert(eq(int, level_of_line(&ll, "abi20: init at error"), LOOM_LOG_ERROR), "%s",
              dump_levels(&ll));
    cr_assert(eq(int, level_of_line(&ll, "abi20: init at warn"), LOOM_LOG_WARN));
    cr_assert(eq(int, level_of_line(&ll, "abi20: init at info"), LOOM_LOG_INFO));
    cr_assert(eq(int, level_of_line(&ll, "abi20: init at debug"), LOOM_LOG_DEBUG));
    cr_assert(eq(sz, plugins_errors(reg), 0));

    /* SIGHUP: a 2.0 plugin has no reload, and nothing is called */
    cr_assert(eq(int, plugins_reload(reg, NULL), 0));
}

Test(abi, a_2_1_provider_loads_without_a_stream_hook)
{
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/provider_2_1"), NULL), 0));
    const plugins_provider *v = plugins_provider_find(reg, "abi21_echo");
    cr_assert(v != NULL);
    cr_assert(v->def->encode != NULL);
    cr_assert(v->def->decode != NULL);
    cr_assert(eq(str, (char *)v->def->doc, "Answers with the body it got."), "2.1 fields are read");
    /* 2.2's stream hook: not in its descriptor, so never streamed */
    cr_assert(eq(ptr, (void *)(uintptr_t)v->def->stream, NULL));
    cr_assert(eq(sz, plugins_errors(reg), 0));
}

Test(abi, a_2_3_provider_loads_without_batch_hooks)
{
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/provider_2_3"), NULL), 0));
    const plugins_provider *v = plugins_provider_find(reg, "abi23_echo");
    cr_assert(v != NULL);
    cr_assert(v->def->stream != NULL, "2.2's stream hook is read");
    cr_assert(eq(str, (char *)v->def->doc, "Answers with the body it got."));
    /* 2.4's Batch API: not in its descriptor, so its calls never go to a batch */
    cr_assert(eq(ptr, (void *)(uintptr_t)v->def->batch_line, NULL));
    cr_assert(eq(ptr, (void *)(uintptr_t)v->def->batch_encode, NULL));
    cr_assert(eq(ptr, (void *)(uintptr_t)v->def->batch_decode, NULL));
    cr_assert(eq(ptr, (void *)(uintptr_t)v->def->batch_result, NULL));
    cr_assert(eq(sz, v->def->batch_max_lines, 0));
    cr_assert(eq(sz, v->def->batch_max_bytes, 0));
    /* the array is walked with the 2.3 stride: the second entry is whole */
    const plugins_provider *w = plugins_provider_find(reg, "abi23_second");
    cr_assert(w != NULL);
    cr_assert(eq(sz, w->def->max_batch, 7));
    cr_assert(eq(str, (char *)w->def->summary, "the second provider of the array"));
    cr_assert(eq(ptr, (void *)(uintptr_t)w->def->stream, NULL));
    cr_assert(eq(ptr, (void *)(uintptr_t)w->def->batch_line, NULL));
    cr_assert(eq(sz, plugins_errors(reg), 0));
}

Test(abi, descriptors_smaller_than_2_0_are_refused)
{
    static const loom_lambda one[] = { { .name = "f", .fn = echo } };
    static loom_plugin small = PLUGIN("small", one, 1, NULL, 0);
    small.lambda_size = (uint32_t)offsetof(loom_lambda, summary);
    cr_assert(eq(int, plugins_add(reg, &small, "small.so", NULL), -1));
    char want[300];
    snprintf(want, sizeof want,
             "small.so: descriptor sizes do not match plugin ABI %d.%d: loom_lambda is %zu "
             "bytes, at least %zu expected (start the descriptor with LOOM_PLUGIN_HEADER)",
             LOOM_ABI_MAJOR, LOOM_ABI_MINOR, offsetof(loom_lambda, summary), sizeof(loom_lambda));
    cr_assert(logged(&logs, want), "%s", dump(&logs));

    /* a 2.0 plugin may be smaller than ours, never smaller than 2.0 */
    static loom_plugin tiny = PLUGIN("tiny", NULL, 0, NULL, 0);
    tiny.abi_minor = 0;
    tiny.plugin_size = (uint32_t)offsetof(loom_plugin, fini);
    cr_assert(eq(int, plugins_add(reg, &tiny, "tiny.so", NULL), -1));
    cr_assert(strstr(dump(&logs), "tiny.so: descriptor sizes do not match plugin ABI 2.0: "
                                  "loom_plugin is") != NULL, "%s", dump(&logs));
    cr_assert(eq(ptr, (void *)plugins_lambda_names(reg)[0], NULL));
}

/* A 2.1 descriptor with a larger stride than ours (as a plugin of a later
 * minor would have, were it allowed): the host walks the plugin's stride. */
typedef struct wide_lambda {
    loom_lambda l;
    const char *later;         /* a field this host does not know */
} wide_lambda;

Test(abi, arrays_are_walked_with_the_plugins_stride)
{
    static const wide_lambda wl[] = {
        { { .name = "a", .fn = echo, .summary = "first" }, "x" },
        { { .name = "b", .fn = echo, .summary = "second", .doc = "more" }, "y" },
    };
    static loom_plugin wide = PLUGIN("wide", (const loom_lambda *)(const void *)wl, 2, NULL, 0);
    wide.lambda_size = (uint32_t)sizeof(wide_lambda);
    cr_assert(eq(int, plugins_add(reg, &wide, NULL, NULL), 0), "%s", dump(&logs));
    cr_assert(eq(str, (char *)plugins_lambda_find(reg, "wide.a")->def->summary, "first"));
    cr_assert(eq(str, (char *)plugins_lambda_find(reg, "wide.b")->def->summary, "second"));
    cr_assert(eq(str, (char *)plugins_lambda_find(reg, "wide.b")->def->doc, "more"));
}

/* reload (2.1): called with the plugin's new section; -1 is logged and the
 * plugin keeps what it had. */
static int reloads;

static int counting_reload(loom_ctx *ctx, void *state, json_t *config)
{
    reloads++;
    if (json_is_false(json_object_get(config, "ok"))) {
        loom_error(ctx, LOOM_E_CONFIG, "not ok");
        return -1;
    }
    loom_log(ctx, LOOM_LOG_INFO, "reloaded with ok=%d", json_is_true(json_object_get(config, "ok")));
    return 0;
}

Test(abi, reload_gets_the_new_config)
{
    static const loom_plugin r = { LOOM_PLUGIN_HEADER, .name = "r", .reload = counting_reload };
    level_lines ll = { 0 };
    plugins_set_level_log(reg, collect_shared, &ll);
    cr_assert(eq(int, plugins_add(reg, &r, "r.so", NULL), 0));
    reloads = 0;
    json_t *good = json_pack("{s:{s:b}}", "r", "ok", 1), *bad = json_pack("{s:{s:b}}", "r", "ok", 0);
    cr_assert(eq(int, plugins_reload(reg, good), 0));
    cr_assert(eq(int, level_of_line(&ll, "r: reloaded with ok=1"), LOOM_LOG_INFO), "%s",
              dump_levels(&ll));
    cr_assert(eq(int, plugins_reload(reg, bad), 1));
    cr_assert(eq(int, level_of_line(&ll, "r.so: plugin 'r' kept its configuration: not ok"),
                 LOOM_LOG_ERROR), "%s", dump_levels(&ll));
    cr_assert(eq(int, plugins_reload(reg, NULL), 0));
    cr_assert(eq(int, reloads, 3));
    json_decref(good);
    json_decref(bad);
}

/* ---- the 2.0 fixtures in a real engine */

typedef struct world {
    reactor_t *r;
    pool_t *pool;
    engine_t *eng;
    level_lines ll;
} world;

static world W;

static void world_setup(void)
{
    memset(&W, 0, sizeof W);
    setup();
    plugins_set_level_log(reg, collect_shared, &W.ll);
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/lambda_2_0"), NULL), 0));
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/provider_2_0"), NULL), 0));
    W.r = reactor_new();
    cr_assert(W.r != NULL);
    W.pool = pool_new(W.r, 2);
    cr_assert(W.pool != NULL);
    W.eng = engine_new(W.r, W.pool, reg, NULL);
    cr_assert(W.eng != NULL);
}

static void world_teardown(void)
{
    engine_free(W.eng);
    pool_free(W.pool);
    teardown();
    reactor_free(W.r);
}

typedef struct run_result {
    bool done;
    json_t *output, *error;
    uint64_t elapsed_ms;
} run_result;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void run_done(engine_job_t *job, void *ud)
{
    run_result *res = ud;
    json_t *o = engine_job_output(job);
    res->done = true;
    res->output = o ? json_incref(o) : NULL;
    res->error = engine_error_json(engine_job_error(job));
}

/* Runs the workflow YAML over the input 1 to its end (a 20 s hang guard). */
static void run(const char *yaml, run_result *res)
{
    dsl_diags d;
    memset(res, 0, sizeof *res);
    dsl_diags_init(&d, "t.yaml");
    dsl_graph *g = dsl_compile("t.yaml", yaml, strlen(yaml), NULL, &d);
    dsl_diags_free(&d);
    cr_assert(g != NULL, "does not compile: %s", yaml);
    json_t *in = json_integer(1);
    uint64_t t0 = now_ms();
    cr_assert(engine_submit(W.eng, g, in, NULL, run_done, res) != NULL);
    json_decref(in);
    dsl_graph_unref(g);
    while (!res->done) {
        reactor_run_once(W.r, 5);
        cr_assert(now_ms() - t0 < 20000, "hang guard: the job did not end");
    }
    res->elapsed_ms = now_ms() - t0;
}

static void run_free(run_result *res)
{
    json_decref(res->output);
    json_decref(res->error);
}

/* Turns the reactor until a line holding NEEDLE was logged (10 s at most). */
static void wait_line(const char *needle)
{
    uint64_t t0 = now_ms();
    while (!count_lines(&W.ll, needle)) {
        reactor_run_once(W.r, 5);
        cr_assert(now_ms() - t0 < 10000, "no line '%s' in:\n%s", needle, dump_levels(&W.ll));
    }
}

#define HDR "loom: 1\nname: t\n"

TestSuite(engine_abi, .init = world_setup, .fini = world_teardown);

/* loom_log from a lambda on a worker thread: its level, the plugin's name. */
Test(engine_abi, a_lambda_logs_from_a_worker_with_its_levels)
{
    run_result res;
    run(HDR "do: { lambda: abi20.levels }\n", &res);
    cr_assert(res.output != NULL, "%s", dump_levels(&W.ll));
    cr_assert(eq(int, level_of_line(&W.ll, "abi20: call at error worker=1"), LOOM_LOG_ERROR),
              "%s", dump_levels(&W.ll));
    cr_assert(eq(int, level_of_line(&W.ll, "abi20: call at warn worker=1"), LOOM_LOG_WARN));
    cr_assert(eq(int, level_of_line(&W.ll, "abi20: call at info worker=1"), LOOM_LOG_INFO));
    cr_assert(eq(int, level_of_line(&W.ll, "abi20: call at debug worker=1"), LOOM_LOG_DEBUG));
    run_free(&res);
}

/* fail_after: the invoke provider's 1500 ms reaches the retry, which waits
 * that long rather than its 1 ms back-off; the instance's init and each
 * invoke log under the plugin's name. */
Test(engine_abi, fail_after_carries_retry_after_to_the_retry)
{
    char err[256];
    cr_assert(eq(int, engine_add_provider(W.eng, "default", "abi20_limited", NULL, NULL, NULL, err,
                                          sizeof err), 0), "%s", err);
    cr_assert(eq(int, level_of_line(&W.ll, "abi20p: instance up: fail_first=1 retry_after=1500"),
                 LOOM_LOG_WARN), "%s", dump_levels(&W.ll));
    run_result res;
    run(HDR "do: { call: x, retry: { max_attempts: 2, initial_delay: 1ms, max_delay: 1ms } }\n",
        &res);
    cr_assert(res.output != NULL, "%s", dump_levels(&W.ll));
    cr_assert(eq(str, (char *)json_string_value(res.output), "ok after 2"));
    cr_assert(ge(u64, res.elapsed_ms, 1500), "the retry came after %llu ms",
              (unsigned long long)res.elapsed_ms);
    cr_assert(eq(int, level_of_line(&W.ll, "abi20p: invoke #1"), LOOM_LOG_INFO));
    cr_assert(eq(int, level_of_line(&W.ll, "abi20p: invoke #2"), LOOM_LOG_INFO));
    run_free(&res);

    /* without a retry, the failure says rate_limited and carries nothing else */
    json_t *always = json_pack("{s:i}", "fail_first", 100);
    cr_assert(eq(int, engine_add_provider(W.eng, "always", "abi20_limited", always, NULL, NULL,
                                          err, sizeof err), 0), "%s", err);
    json_decref(always);
    run(HDR "do: { call: { prompt: x, provider: always } }\n", &res);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(res.error, "code")),
                 "rate_limited"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(res.error, "message")),
                 "slow down"));
    run_free(&res);
}

/* A lambda on the pool sees its step's deadline, and loom_cancelled turns
 * true when the step times out. */
Test(engine_abi, a_lambda_sees_its_deadline_and_the_cancellation)
{
    run_result res;
    run(HDR "do: { lambda: abi20.watch, timeout: 200ms }\n", &res);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(res.error, "code")), "timeout"));
    run_free(&res);
    wait_line("abi20: watch: deadline +");
    long long deadline = -1, cancelled = -1;
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < W.ll.n; i++)
        if (sscanf(W.ll.lines[i], "abi20: watch: deadline +%lld ms, cancelled at +%lld ms",
                   &deadline, &cancelled) == 2)
            break;
    pthread_mutex_unlock(&shared_lock);
    cr_assert(ge(i64, deadline, 150), "deadline +%lld ms", deadline);
    cr_assert(le(i64, deadline, 200), "deadline +%lld ms", deadline);
    cr_assert(ge(i64, cancelled, 150), "cancelled at +%lld ms", cancelled);
    cr_assert(eq(int, count_lines(&W.ll, "never cancelled"), 0));
}

/* A PURE|FAST lambda that takes 5 ms on the reactor is named in a warning,
 * once however often it runs. */
Test(engine_abi, an_inline_lambda_over_budget_is_logged_once)
{
    run_result res;
    run(HDR "do: { chain: [ { lambda: abi20.spin }, { lambda: abi20.spin } ] }\n", &res);
    cr_assert(res.output != NULL);
    run_free(&res);
    const char *needle = "abi20.spin: a PURE|FAST lambda took ";
    cr_assert(eq(int, count_lines(&W.ll, needle), 1), "%s", dump_levels(&W.ll));
    pthread_mutex_lock(&shared_lock);
    int level = -1;
    for (int i = 0; i < W.ll.n; i++)
        if (strstr(W.ll.lines[i], needle))
            level = W.ll.levels[i];
    pthread_mutex_unlock(&shared_lock);
    cr_assert(eq(int, level, LOOM_LOG_WARN));
    /* a quick one is not */
    run(HDR "do: { lambda: abi20.echo }\n", &res);
    run_free(&res);
    cr_assert(eq(int, count_lines(&W.ll, "abi20.echo: a PURE|FAST"), 0));
}

/* The openai provider's "no API key" line, from its instance's init,
 * reaches the log at info with the plugin's name. */
static upstream_t *no_upstream(void *ud, const char *name, const loom_provider *def, void *state,
                               char *err, size_t errlen)
{
    http_client_t **http = ud;
    if (!*http && !(*http = http_client_new(W.r, &(http_options){ 0 }))) {
        snprintf(err, errlen, "no HTTP client");
        return NULL;
    }
    return upstream_new(W.r, *http, name, def, state, NULL, NULL);
}

Test(engine_abi, openai_without_a_key_says_so_at_info)
{
    cr_assert(eq(int, plugins_add_builtins(reg), 0));
    http_client_t *http = NULL;
    char err[256];
    json_t *cfg = json_pack("{s:s, s:s}", "api_key_env", "LOOM_TEST_UNSET_KEY_4Q", "base_url",
                            "http://127.0.0.1:9/v1");
    unsetenv("LOOM_TEST_UNSET_KEY_4Q");
    cr_assert(eq(int, engine_add_provider(W.eng, "local", "openai", cfg, no_upstream, &http, err,
                                          sizeof err), 0), "%s", err);
    json_decref(cfg);
    cr_assert(eq(int, level_of_line(&W.ll, "openai: no API key (LOOM_TEST_UNSET_KEY_4Q unset): "
                                           "no Authorization header"), LOOM_LOG_INFO),
              "%s", dump_levels(&W.ll));
    engine_free(W.eng); /* its upstreams before the client they use */
    W.eng = NULL;
    http_client_free(http);
}

/* loom_call_log (2.1): an invoke provider's timer callback has a call and
 * no ctx, and logs through the call. */
static void timed_fire(void *ud)
{
    loom_call *call = ud;
    loom_call_log(call, LOOM_LOG_WARN, "timer fired");
    loom_complete(call, json_string("timed"), NULL);
}

static int timed_invoke(loom_ctx *ctx, void *state, const loom_request *req, loom_call *call)
{
    if (!call->api->timer_add(call, 1, timed_fire, call)) {
        loom_error(ctx, LOOM_E_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

static void timed_cancel(void *state, loom_call *call)
{
}

Test(engine_abi, an_invoke_provider_logs_from_its_timer)
{
    static const loom_provider tp[] = { { .name = "timed", .invoke = timed_invoke,
                                          .cancel = timed_cancel } };
    static const loom_plugin timed = PLUGIN("timedp", NULL, 0, tp, 1);
    char err[256];
    cr_assert(eq(int, plugins_add(reg, &timed, NULL, NULL), 0));
    cr_assert(eq(int, engine_add_provider(W.eng, "default", "timed", NULL, NULL, NULL, err,
                                          sizeof err), 0), "%s", err);
    run_result res;
    run(HDR "do: { call: x }\n", &res);
    cr_assert(eq(str, (char *)json_string_value(res.output), "timed"));
    run_free(&res);
    cr_assert(eq(int, level_of_line(&W.ll, "timedp: timer fired"), LOOM_LOG_WARN), "%s",
              dump_levels(&W.ll));
}

/* The callback without levels (loomctl run's) gets a plugin's lines but
 * its debug ones. */
Test(plugins, a_log_without_levels_gets_no_debug_lines)
{
    cr_assert(eq(int, plugins_load_file(reg, plugin_path("abi/lambda_2_0"), NULL), 0), "%s",
              dump(&logs));
    cr_assert(logged(&logs, "abi20: init at error"), "%s", dump(&logs));
    cr_assert(logged(&logs, "abi20: init at info"), "%s", dump(&logs));
    cr_assert(eq(int, logged(&logs, "abi20: init at debug"), 0), "%s", dump(&logs));
}

/* ---- per-plugin configuration: checked against the plugin's options
 * before init and reload see it; isolated plugins' init runs elsewhere */

static const loom_option greeter_options[] = {
    { .name = "greeting", .type = LOOM_OPT_STRING, .default_value = "Hello" },
    { .name = "shout", .type = LOOM_OPT_BOOL },
    { .name = "pause", .type = LOOM_OPT_DURATION, .default_value = "2s" },
    { .name = NULL },
};

/* What the greeter's hooks saw: how often each ran and the last config. */
typedef struct greeter_seen {
    int inits, reloads, finis;
    char config[256];
} greeter_seen;
static greeter_seen seen;

static void remember(json_t *config)
{
    char *s = config ? json_dumps(config, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    snprintf(seen.config, sizeof seen.config, "%s", s ? s : "NULL");
    free(s);
}

static int greeter_init(loom_ctx *ctx, json_t *config, void **state)
{
    seen.inits++;
    remember(config);
    *state = &seen;
    return 0;
}

static int greeter_reload(loom_ctx *ctx, void *state, json_t *config)
{
    seen.reloads++;
    remember(config);
    return 0;
}

static void greeter_fini(void *state)
{
    seen.finis++;
}

static json_t *greeter_echo(loom_ctx *ctx, void *state, json_t *input, json_t *args)
{
    return json_incref(input);
}

static const loom_lambda greeter_lambdas[] = { { .name = "echo", .fn = greeter_echo } };

static const loom_plugin greeter = {
    LOOM_PLUGIN_HEADER, .name = "greeter", .lambdas = greeter_lambdas, .nlambdas = 1,
    .init = greeter_init, .reload = greeter_reload, .fini = greeter_fini,
    .options = greeter_options,
};

/* Its twin without a reload hook, and one that declares no options. */
static const loom_plugin fixed = {
    LOOM_PLUGIN_HEADER, .name = "fixed", .init = greeter_init, .options = greeter_options,
};
static const loom_plugin loose = { LOOM_PLUGIN_HEADER, .name = "loose", .init = greeter_init };

/* A where callback that says which entry and key it was asked for. */
static void where_names(void *ud, const char *plugin, const char *key, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%s:%s", (const char *)ud, plugin, key ? key : "-");
}

static json_t *configs_of(const char *text)
{
    json_t *v = json_loads(text, 0, NULL);
    cr_assert(v != NULL, "bad test JSON %s", text);
    return v;
}

Test(plugins, the_config_reaches_init_checked_with_defaults)
{
    memset(&seen, 0, sizeof seen);
    json_t *c = configs_of("{\"greeter\": {\"greeting\": \"Hi\", \"pause\": \"500ms\"},"
                           " \"loose\": {\"anything\": [1]}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, NULL, NULL), 0));
    json_decref(c); /* the registry keeps its own reference */
    cr_assert(eq(int, plugins_add(reg, &greeter, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(eq(str, seen.config, "{\"greeting\":\"Hi\",\"pause\":500}"));
    json_t *applied = plugins_config(reg, "greeter");
    cr_assert(eq(int, (int)json_integer_value(json_object_get(applied, "pause")), 500));
    /* no options declared: the entry as it is */
    cr_assert(eq(int, plugins_add(reg, &loose, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(eq(str, seen.config, "{\"anything\":[1]}"));
    /* options but no entry: the defaults */
    cr_assert(eq(int, plugins_add(reg, &fixed, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(eq(str, seen.config, "{\"greeting\":\"Hello\",\"pause\":2000}"));
    cr_assert(eq(int, seen.inits, 3));
    cr_assert(eq(int, plugins_check_unused_configs(reg), 0), "%s", dump(&logs));
    cr_assert(eq(sz, plugins_errors(reg), 0), "%s", dump(&logs));
    cr_assert(eq(ptr, plugins_config(reg, "nobody"), NULL));
}

Test(plugins, a_bad_config_refuses_the_plugin_at_its_position)
{
    memset(&seen, 0, sizeof seen);
    json_t *c = configs_of("{\"greeter\": {\"gretting\": \"Hi\"}, \"fixed\": {\"shout\": 1}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, where_names, "f.yaml"), 0));
    cr_assert(eq(int, plugins_add(reg, &greeter, "built-in", NULL), -1));
    cr_assert(logged(&logs, "f.yaml:greeter:gretting: error: plugins.config.greeter: unknown option "
                            "'gretting'; did you mean 'greeting'?"), "%s", dump(&logs));
    cr_assert(eq(int, plugins_add(reg, &fixed, "built-in", NULL), -1));
    cr_assert(logged(&logs, "f.yaml:fixed:shout: error: plugins.config.fixed: option 'shout' must "
                            "be true or false, not an integer"), "%s", dump(&logs));
    cr_assert(eq(int, seen.inits, 0));
    cr_assert(eq(ptr, (void *)plugins_lambda_find(reg, "greeter.echo"), NULL));
    cr_assert(eq(sz, plugins_errors(reg), 2));
    /* refused, but not "no such plugin" as well */
    cr_assert(eq(int, plugins_check_unused_configs(reg), 0), "%s", dump(&logs));
    json_decref(c);
}

Test(plugins, a_missing_required_option_is_placed_at_the_entry)
{
    static const loom_option need[] = { { .name = "model", .type = LOOM_OPT_STRING, .required = 1 },
                                        { .name = NULL } };
    static const loom_plugin needy = { LOOM_PLUGIN_HEADER, .name = "needy", .options = need };
    json_t *c = configs_of("{\"needy\": {}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, where_names, "f.yaml"), 0));
    cr_assert(eq(int, plugins_add(reg, &needy, "built-in", NULL), -1));
    cr_assert(logged(&logs, "f.yaml:needy:-: error: plugins.config.needy: missing required option "
                            "'model' (a string)"), "%s", dump(&logs));
    json_decref(c);
}

Test(plugins, an_entry_for_no_plugin_is_an_error_with_a_suggestion)
{
    json_t *c = configs_of("{\"gretter\": {}, \"zzz\": {}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, where_names, "f.yaml"), 0));
    cr_assert(eq(int, plugins_add(reg, &greeter, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(eq(int, plugins_check_unused_configs(reg), 2));
    cr_assert(logged(&logs, "f.yaml:gretter:-: error: plugins.config.gretter: no plugin 'gretter' "
                            "is loaded; did you mean 'greeter'?"), "%s", dump(&logs));
    cr_assert(logged(&logs, "f.yaml:zzz:-: error: plugins.config.zzz: no plugin 'zzz' is loaded"),
              "%s", dump(&logs));
    json_decref(c);
}

Test(plugins, reload_checks_the_new_config_and_applies_it)
{
    memset(&seen, 0, sizeof seen);
    level_lines ll = { 0 };
    plugins_set_level_log(reg, collect_shared, &ll);
    json_t *c = configs_of("{\"greeter\": {\"greeting\": \"Hi\"}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, NULL, NULL), 0));
    json_decref(c);
    cr_assert(eq(int, plugins_add(reg, &greeter, "built-in", NULL), 0), "%s", dump_levels(&ll));
    cr_assert(eq(int, plugins_add(reg, &fixed, "built-in", NULL), 0), "%s", dump_levels(&ll));

    /* a good new config: reload sees it checked, plugins_config answers it;
     * fixed, without a hook, is unchanged and says nothing */
    c = configs_of("{\"greeter\": {\"greeting\": \"Yo\", \"shout\": true}}");
    cr_assert(eq(int, plugins_reload_at(reg, c, where_names, "g.yaml"), 0), "%s", dump_levels(&ll));
    json_decref(c);
    cr_assert(eq(int, seen.reloads, 1));
    cr_assert(eq(str, seen.config, "{\"greeting\":\"Yo\",\"pause\":2000,\"shout\":true}"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(plugins_config(reg, "greeter"),
                                                                 "greeting")), "Yo"));
    cr_assert(eq(int, count_lines(&ll, "no reload hook"), 0), "%s", dump_levels(&ll));

    /* a bad one: logged at its position, the old config stays; fixed's
     * change cannot be applied without a restart, and is said so */
    c = configs_of("{\"greeter\": {\"greeting\": 5}, \"fixed\": {\"greeting\": \"New\"}}");
    cr_assert(eq(int, plugins_reload_at(reg, c, where_names, "g.yaml"), 1), "%s", dump_levels(&ll));
    json_decref(c);
    cr_assert(eq(int, seen.reloads, 1));
    cr_assert(eq(int, level_of_line(&ll, "g.yaml:greeter:greeting: error: plugins.config.greeter: "
                                         "option 'greeting' must be a string, not an integer "
                                         "(the plugin keeps its configuration)"),
                 LOOM_LOG_ERROR), "%s", dump_levels(&ll));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(plugins_config(reg, "greeter"),
                                                                 "greeting")), "Yo"));
    cr_assert(eq(int, level_of_line(&ll, "built-in: plugin 'fixed' has no reload hook: its "
                                         "configuration change needs a restart"),
                 LOOM_LOG_WARN), "%s", dump_levels(&ll));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(plugins_config(reg, "fixed"),
                                                                 "greeting")), "Hello"));
}

Test(plugins, plugins_run_elsewhere_are_registered_without_init)
{
    memset(&seen, 0, sizeof seen);
    json_t *c = configs_of("{\"greeter\": {\"greeting\": \"Hi\"}}");
    cr_assert(eq(int, plugins_set_configs(reg, c, NULL, NULL), 0));
    json_decref(c);
    cr_assert(eq(int, plugins_set_init_elsewhere(reg, (const char *const[]){ "greeter", NULL }), 0));
    cr_assert(eq(int, plugins_add(reg, &greeter, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(plugins_lambda_find(reg, "greeter.echo") != NULL);
    cr_assert(eq(int, seen.inits, 0));
    /* its checked config is there for its helper */
    cr_assert(eq(int, (int)json_integer_value(json_object_get(plugins_config(reg, "greeter"),
                                                               "pause")), 2000));
    /* a plugin not named still runs its init here */
    cr_assert(eq(int, plugins_add(reg, &fixed, "built-in", NULL), 0), "%s", dump(&logs));
    cr_assert(eq(int, seen.inits, 1));
    c = configs_of("{\"greeter\": {\"greeting\": \"Yo\"}}");
    cr_assert(eq(int, plugins_reload(reg, c), 0), "%s", dump(&logs));
    json_decref(c);
    cr_assert(eq(int, seen.reloads, 0));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(plugins_config(reg, "greeter"),
                                                                 "greeting")), "Yo"));
    plugins_free(reg);
    reg = NULL;
    cr_assert(eq(int, seen.finis, 0)); /* fixed has no fini; greeter's runs elsewhere */
}
