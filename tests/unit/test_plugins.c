/* test_plugins.c -- the plugin loader and registry: every refusal and its
 * message, loading going on after a bad file, lookups and name lists, init
 * once and fini in reverse order, and config maps.
 *
 * The shared objects are real ones, built from the sources in tests/plugins as libtool
 * modules, so dlopen, symbol lookup and RTLD_LOCAL are exercised for real.
 * Descriptors that need no file of their own (bad lambdas, providers,
 * fini order) are defined here and registered with plugins_add. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/plugins/plugins.h"

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

/* The path of test plugin NAME.so (static buffer). */
static const char *plugin_path(const char *name)
{
    static char buf[PATH_MAX];
    const char *b = getenv("LOOM_BUILDDIR");
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
    const char *path = plugin_path("abi_major_2");
    char want[PATH_MAX + 100];

    cr_assert(eq(int, plugins_load_file(reg, path, NULL), -1));
    snprintf(want, sizeof want, "%s: built for plugin ABI 2.0, this loomd has %d.%d", path,
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
    /* Its log line went through too, attributed to the file. */
    snprintf(want, sizeof want, "%s: checking the model file", path);
    cr_assert(logged(&logs, want), "%s", dump(&logs));
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
    static const char *const names[] = { "abi_major_2", "good", "init_fails", "no_entry",
                                         "zz_missing", NULL };
    const char *dir = make_dir(names);

    /* A dangling link: fails to open, and loading still goes on. */
    cr_assert(eq(int, plugins_load_dir(reg, dir), 1), "%s", dump(&logs));
    cr_assert(eq(int, logs.n, 5), "%s", dump(&logs)); /* 4 refusals + init's log line */
    cr_assert(strstr(logs.lines[0], "abi_major_2.so: built for plugin ABI 2.0") != NULL, "%s", dump(&logs));
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
    { .abi_major = LOOM_ABI_MAJOR, .abi_minor = LOOM_ABI_MINOR, .name = (n), \
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
    static const loom_plugin p1 = { .abi_major = LOOM_ABI_MAJOR, .name = "one",
                                    .init = named_init, .fini = named_fini };
    static const loom_plugin p2 = { .abi_major = LOOM_ABI_MAJOR, .name = "two",
                                    .init = named_init, .fini = named_fini };
    static const loom_plugin p3 = { .abi_major = LOOM_ABI_MAJOR, .name = "three",
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
