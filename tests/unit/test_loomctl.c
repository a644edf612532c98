/* test_loomctl.c -- loomctl validate/graph run as the real binary, plus the
 * pieces behind them: dsl_check_uses and the JSON and DOT emitters.
 *
 * Each CLI test writes its workflows into a fresh temporary directory and
 * runs loomctl there (so messages name bare files), capturing stdout and
 * stderr in files. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsl/dsl.h"
#include "tests/unit/testutil.h"

/* ---- running loomctl ---- */

typedef struct run_result {
    int status; /* exit status, or -1 if it did not exit normally */
    char *out, *err;
} run_result;

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/loomctl-test-XXXXXX", base && *base ? base : "/tmp");
    cr_assert(mkdtemp(tmpdir) != NULL, "mkdtemp: %s", strerror(errno));
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(loomctl, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(uses, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(emit, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(run, .init = make_tmpdir, .fini = remove_tmpdir);

/* tmpdir/NAME as a new string (caller frees). */
static char *tmp_path(const char *name)
{
    char *p = NULL;
    cr_assert(asprintf(&p, "%s/%s", tmpdir, name) >= 0);
    return p;
}

static void write_file(const char *name, const char *text)
{
    char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "cannot create %s", path);
    fputs(text, f);
    cr_assert(fclose(f) == 0);
    free(path);
}

static char *read_tmp(const char *name)
{
    char *path = tmp_path(name);
    char *s = tu_read_file(path, NULL);
    cr_assert(s != NULL, "cannot read %s", path);
    free(path);
    return s;
}

/* Runs loomctl with the NULL-terminated ARGS (not including argv[0]) in
 * tmpdir. Returns the exit status and the captured output (caller frees). */
static run_result run_args(const char *const *args)
{
    char exe[PATH_MAX];
    /* absolute, because the child changes directory */
    cr_assert(realpath(tu_buildpath("loomctl"), exe) != NULL, "no loomctl binary at %s",
              tu_buildpath("loomctl"));
    char *argv[64];
    size_t n = 0;
    argv[n++] = exe;
    for (size_t i = 0; args[i]; i++) {
        cr_assert(n < 63);
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    char *outp = tmp_path(".stdout"), *errp = tmp_path(".stderr");
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || chdir(tmpdir) < 0)
            _exit(127);
        execv(exe, argv);
        _exit(127);
    }
    int st;
    cr_assert(waitpid(pid, &st, 0) == pid);
    run_result r = { WIFEXITED(st) ? WEXITSTATUS(st) : -1, NULL, NULL };
    r.out = tu_read_file(outp, NULL);
    r.err = tu_read_file(errp, NULL);
    cr_assert(r.out && r.err);
    free(outp);
    free(errp);
    return r;
}

#define RUN(...) run_args((const char *const[]){ __VA_ARGS__, NULL })

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* ---- workflows used below ---- */

#define WF_A_USES_B \
    "loom: 1\n" \
    "name: a\n" \
    "do:\n" \
    "  chain:\n" \
    "    - call: \"hello {{ prev }}\"\n" \
    "    - use: b\n"

#define WF_B_LEAF \
    "loom: 1\n" \
    "name: b\n" \
    "do:\n" \
    "  call: \"world {{ prev }}\"\n"

#define WF_B_USES_A \
    "loom: 1\n" \
    "name: b\n" \
    "do:\n" \
    "  use: a\n"

/* An unknown key under `do`: the error is at line 4, column 3. */
#define WF_BAD \
    "loom: 1\n" \
    "name: bad\n" \
    "do:\n" \
    "  calll: \"x\"\n"

/* ---- validate ---- */

Test(loomctl, validate_ok)
{
    write_file("b.yaml", WF_B_LEAF);
    run_result r = RUN("validate", "b.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, "b.yaml: ok (name b, 1 node)\n"));
    cr_expect(eq(str, r.err, ""));
    run_free(&r);
}

Test(loomctl, validate_quiet)
{
    write_file("b.yaml", WF_B_LEAF);
    run_result r = RUN("validate", "--quiet", "b.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ""));
    run_free(&r);
}

Test(loomctl, validate_invalid)
{
    write_file("bad.yaml", WF_BAD);
    run_result r = RUN("validate", "bad.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.out, ""));
    cr_expect(strstr(r.err, "bad.yaml:4:3: error: ") == r.err, "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, validate_several_one_bad)
{
    write_file("b.yaml", WF_B_LEAF);
    write_file("bad.yaml", WF_BAD);
    run_result r = RUN("validate", "b.yaml", "bad.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.out, "b.yaml: ok (name b, 1 node)\n"));
    cr_expect(strstr(r.err, "bad.yaml:4:3: error: ") != NULL, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "b.yaml:") == NULL || strstr(r.err, "b.yaml:") > r.err,
              "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, validate_no_files_is_usage_error)
{
    run_result r = RUN("validate");
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "usage: loomctl validate") != NULL, "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, validate_unknown_option)
{
    write_file("b.yaml", WF_B_LEAF);
    run_result r = RUN("validate", "--frobnicate", "b.yaml");
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "loomctl validate: unknown option '--frobnicate'") == r.err,
              "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, option_without_value)
{
    run_result r = RUN("validate", "b.yaml", "--config");
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "needs a value") != NULL, "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, no_command_and_unknown_command)
{
    run_result r = run_args((const char *const[]){ NULL });
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "usage: loomctl") != NULL, "stderr: %s", r.err);
    run_free(&r);
    r = RUN("valdate", "x.yaml");
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "unknown command 'valdate' (did you mean 'validate'?)") != NULL,
              "stderr: %s", r.err);
    run_free(&r);
    r = RUN("--bogus");
    cr_expect(eq(int, r.status, 2));
    run_free(&r);
}

Test(loomctl, help_and_version)
{
    run_result r = RUN("--help");
    cr_expect(eq(int, r.status, 0));
    cr_expect(strstr(r.out, "validate") && strstr(r.out, "graph"), "stdout: %s", r.out);
    run_free(&r);
    r = RUN("help", "graph");
    cr_expect(eq(int, r.status, 0));
    cr_expect(strstr(r.out, "usage: loomctl graph") == r.out, "stdout: %s", r.out);
    run_free(&r);
    r = RUN("validate", "-h");
    cr_expect(eq(int, r.status, 0));
    cr_expect(strstr(r.out, "usage: loomctl validate") == r.out, "stdout: %s", r.out);
    run_free(&r);
    r = RUN("help", "nosuch");
    cr_expect(eq(int, r.status, 2));
    run_free(&r);
    r = RUN("--version");
    cr_expect(eq(int, r.status, 0));
    cr_expect(strstr(r.out, "loomctl (loom) ") == r.out, "stdout: %s", r.out);
    run_free(&r);
}

Test(loomctl, missing_file)
{
    run_result r = RUN("validate", "nope.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(strstr(r.err, "nope.yaml: error: ") == r.err, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "No such file or directory") != NULL, "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, use_resolves_against_siblings)
{
    write_file("a.yaml", WF_A_USES_B);
    write_file("b.yaml", WF_B_LEAF);
    write_file("notes.txt", "not a workflow\n");
    run_result r = RUN("validate", "a.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, "a.yaml: ok (name a, 3 nodes)\n"));
    run_free(&r);
}

Test(loomctl, sibling_errors_are_not_printed)
{
    write_file("b.yaml", WF_B_LEAF);
    write_file("zz-bad.yml", WF_BAD);
    run_result r = RUN("validate", "b.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.err, ""));
    run_free(&r);
}

Test(loomctl, use_of_broken_sibling_is_not_unknown)
{
    write_file("a.yaml", WF_A_USES_B);
    /* b has an error, but its name is still known */
    write_file("b.yaml", "loom: 1\nname: b\ndo:\n  call: { prompt: x, bogus: 1 }\n");
    run_result r = RUN("validate", "a.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, use_cycle_across_two_files)
{
    write_file("a.yaml", WF_A_USES_B);
    write_file("b.yaml", WF_B_USES_A);
    run_result r = RUN("validate", "a.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "a.yaml:6:7: error: workflow cycle: a -> b -> a\n"));
    run_free(&r);
    /* named the other way round, the error lands in b */
    r = RUN("validate", "b.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "b.yaml:4:3: error: workflow cycle: b -> a -> b\n"));
    run_free(&r);
}

Test(loomctl, use_of_itself)
{
    write_file("self.yaml", "loom: 1\nname: self\ndo:\n  use: self\n");
    run_result r = RUN("validate", "self.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "self.yaml:4:3: error: workflow cycle: self -> self\n"));
    run_free(&r);
}

Test(loomctl, unknown_use_with_suggestion)
{
    write_file("sum.yaml", "loom: 1\nname: summarize\ndo:\n  call: \"x {{ prev }}\"\n");
    write_file("main.yaml", "loom: 1\nname: main\ndo:\n  use: { workflow: summarise }\n");
    run_result r = RUN("validate", "main.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err,
                 "main.yaml:4:3: error: unknown workflow 'summarise'; did you mean 'summarize'?\n"));
    run_free(&r);
}

Test(loomctl, config_providers)
{
    write_file("loomd.conf", "socket: ./x.sock\nproviders:\n  fast: { plugin: openai }\n"
                             "  default: { plugin: mock }\n");
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  chain:\n"
                         "    - call: { provider: fast, prompt: hi }\n"
                         "    - call: { provider: smart, prompt: hi }\n");
    run_result r = RUN("validate", "--config", "loomd.conf", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(strstr(r.err, "w.yaml:6:") == r.err, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "smart") != NULL, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "fast") == NULL, "stderr: %s", r.err);
    run_free(&r);
    /* without a registry, no provider is checked */
    r = RUN("validate", "w.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    run_free(&r);
}

/* A built-in lambda's args are checked with or without a config (the
 * built-ins are always there); lambda names only with one, since without
 * it a workflow may call a plugin that is not loaded here. */
#define WF_BAD_ARG \
    "loom: 1\nname: w\ndo:\n  chain:\n" \
    "    - lambda: { fn: std.regex_match, args: { pattern: a, flag: i } }\n" \
    "    - lambda: { fn: std.json_merge, args: { anything: 1 } }\n" \
    "    - lambda: { fn: other.fn, args: { anything: 1 } }\n"

Test(loomctl, lambda_args_are_checked)
{
#define WANT "w.yaml:5:58: error: unknown argument 'flag' for lambda 'std.regex_match'; " \
             "did you mean 'flags'?\n"
    write_file("w.yaml", WF_BAD_ARG);
    run_result r = RUN("validate", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, WANT));
    cr_expect(eq(str, r.out, ""));
    run_free(&r);

    write_file("loomd.conf", "socket: ./x.sock\nproviders:\n  default: { plugin: mock }\n");
    r = RUN("validate", "--config", "loomd.conf", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, WANT "w.yaml:7:21: error: unknown lambda 'other.fn'\n"));
    run_free(&r);

    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  lambda: { fn: std.const, args: { value: 1 } }\n");
    r = RUN("validate", "--config", "loomd.conf", "w.yaml");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.err, ""));
    run_free(&r);
#undef WANT
}

/* A shared-object plugin of the config's plugin directory (built against
 * the frozen 2.0 header, so its declarations go through the loader's
 * copies) has its lambdas' args checked offline, without its init. */
Test(loomctl, lambda_args_of_a_plugin_directory)
{
    char *dir = tmp_path("plugins"), *link = tmp_path("plugins/lambda_2_0.so");
    char *so = realpath(tu_buildpath("tests/plugins/abi/.libs/lambda_2_0.so"), NULL);
    cr_assert(so != NULL, "no test plugin at %s", tu_buildpath("tests/plugins/abi/.libs/lambda_2_0.so"));
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert_eq(symlink(so, link), 0);
    free(so);
    free(link);
    free(dir);
    write_file("loomd.conf", "socket: ./x.sock\nplugins: [./plugins]\n"
                             "providers:\n  default: { plugin: mock }\n");
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  chain:\n"
                         "    - lambda: { fn: abi20.echo, args: { x: seven, zzz: 1 } }\n"
                         "    - lambda: { fn: abi20.levels, args: { anything: 1 } }\n");
    run_result r = RUN("validate", "--config", "loomd.conf", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err,
                 "w.yaml:5:44: error: argument 'x' of lambda 'abi20.echo' must be an integer, got a string\n"
                 "w.yaml:5:51: error: unknown argument 'zzz' for lambda 'abi20.echo'\n"));
    cr_expect(eq(str, r.out, ""));
    run_free(&r);
}

Test(loomctl, config_that_does_not_parse)
{
    write_file("loomd.conf", "providers:\n  fast: [unclosed\n");
    write_file("b.yaml", WF_B_LEAF);
    run_result r = RUN("validate", "--config=loomd.conf", "b.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(strstr(r.err, "loomd.conf:") == r.err, "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ""));
    run_free(&r);
    write_file("loomd.conf", "providers: [a, b]\n");
    r = RUN("validate", "--config", "loomd.conf", "b.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "loomd.conf:1:12: error: 'providers' must be a mapping of names to providers, got a sequence\n"));
    run_free(&r);
}

/* ---- graph ---- */

#define WF_ALL_KINDS \
    "loom: 1\n" \
    "name: kinds\n" \
    "input:\n" \
    "  items: { type: array }\n" \
    "  q: { type: string, required: false, default: \"x\" }\n" \
    "do:\n" \
    "  chain:\n" \
    "    - id: first\n" \
    "      call: { prompt: \"He said \\\"hi\\\" \\\\ {{ input.q }}\\nand more text beyond thirty characters\", model: m1 }\n" \
    "      retry: 3\n" \
    "      fallback: { fail: { message: \"gave up\", code: nope } }\n" \
    "    - parallel:\n" \
    "        left: { lambda: std.trim }\n" \
    "        right: { embed: { input: \"{{ prev }}\" } }\n" \
    "    - id: v\n" \
    "      vote: { n: 3, strategy: { at_least: 2 }, normalize: [trim], do: { call: \"pick {{ prev }}\" } }\n" \
    "    - map:\n" \
    "        over: \"{{ input.items }}\"\n" \
    "        max_concurrency: 4\n" \
    "        on_error: { tolerate: \"10%\" }\n" \
    "        do: { use: other }\n" \
    "    - gate: { check: \"{{ prev }}\", fail: \"empty\" }\n" \
    "    - route:\n" \
    "        on: \"{{ steps.v.output.winner }}\"\n" \
    "        cases:\n" \
    "          yes: { call: \"ok\" }\n" \
    "          \"a \\\"quoted\\\" label\": { fail: \"no\" }\n" \
    "        default: { lambda: { fn: std.const, args: { value: [1, \"{{ prev }}\"] } } }\n"

#define WF_OTHER "loom: 1\nname: other\ndo:\n  call: \"other {{ prev }}\"\n"

static bool have_dot(void)
{
    return system("command -v dot >/dev/null 2>&1") == 0;
}

/* 1 if `dot -Tsvg` accepts tmpdir/NAME. */
static int dot_accepts(const char *name)
{
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "dot -Tsvg -o /dev/null '%s/%s' 2>'%s/.dot-err'", tmpdir, name,
                       tmpdir) >= 0);
    int ok = system(cmd) == 0;
    free(cmd);
    return ok;
}

Test(loomctl, graph_json)
{
    write_file("kinds.yaml", WF_ALL_KINDS);
    write_file("other.yaml", WF_OTHER);
    run_result r = RUN("graph", "kinds.yaml");
    cr_assert(eq(int, r.status, 0), "stderr: %s", r.err);
    json_error_t jerr;
    json_t *doc = json_loads(r.out, 0, &jerr);
    cr_assert(doc != NULL, "not JSON: %s\n%s", jerr.text, r.out);
    cr_expect(eq(str, (char *)json_string_value(json_object_get(doc, "name")), "kinds"));
    json_t *root = json_object_get(doc, "root");
    cr_expect(eq(str, (char *)json_string_value(json_object_get(root, "kind")), "chain"));
    json_t *steps = json_object_get(root, "steps");
    cr_assert(eq(sz, json_array_size(steps), 6));
    json_t *first = json_array_get(steps, 0);
    cr_expect(eq(str, (char *)json_string_value(json_object_get(first, "id")), "first"));
    cr_expect(eq(int, (int)json_integer_value(
                     json_object_get(json_object_get(first, "retry"), "max_attempts")), 3));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(
                          json_object_get(first, "fallback"), "kind")), "fail"));
    json_t *map = json_array_get(steps, 3);
    cr_expect(eq(str, (char *)json_string_value(json_object_get(map, "over")),
                 "{{ input.items }}"));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(map, "on_error")), "tolerate"));
    json_t *uses = json_object_get(doc, "uses");
    cr_expect(eq(sz, json_array_size(uses), 1));
    cr_expect(r.out[strlen(r.out) - 1] == '\n');
    json_decref(doc);
    run_free(&r);
}

Test(loomctl, graph_dot)
{
    write_file("kinds.yaml", WF_ALL_KINDS);
    write_file("other.yaml", WF_OTHER);
    run_result r = RUN("graph", "--format", "dot", "kinds.yaml", "-o", "kinds.dot");
    cr_assert(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, ""));
    char *dot = read_tmp("kinds.dot");
    cr_expect(strncmp(dot, "digraph", 7) == 0, "%s", dot);
    cr_expect(strstr(dot, "cluster_") != NULL);
    if (have_dot())
        cr_expect(dot_accepts("kinds.dot"), "dot rejected:\n%s", dot);
    free(dot);
    run_free(&r);
}

Test(loomctl, graph_of_invalid_file)
{
    write_file("bad.yaml", WF_BAD);
    run_result r = RUN("graph", "bad.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.out, ""));
    cr_expect(strstr(r.err, "bad.yaml:4:3: error: ") == r.err, "stderr: %s", r.err);
    run_free(&r);
}

Test(loomctl, graph_usage_errors)
{
    write_file("b.yaml", WF_B_LEAF);
    run_result r = RUN("graph", "--format", "svg", "b.yaml");
    cr_expect(eq(int, r.status, 2));
    cr_expect(strstr(r.err, "unknown format 'svg'") != NULL, "stderr: %s", r.err);
    run_free(&r);
    r = RUN("graph", "b.yaml", "b.yaml");
    cr_expect(eq(int, r.status, 2));
    run_free(&r);
    r = RUN("graph");
    cr_expect(eq(int, r.status, 2));
    run_free(&r);
}

/* Every example workflow draws, and dot accepts the drawing. */
Test(loomctl, examples_graph_as_dot)
{
    char dir[PATH_MAX];
    /* absolute, because loomctl runs in tmpdir */
    cr_assert(realpath(tu_srcpath("workflows"), dir) != NULL);
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "ls '%s'/*.yaml 2>/dev/null", dir) >= 0);
    FILE *ls = popen(cmd, "r");
    free(cmd);
    cr_assert(ls != NULL);
    char path[PATH_MAX];
    int count = 0;
    while (fgets(path, sizeof path, ls)) {
        path[strcspn(path, "\n")] = 0;
        run_result r = RUN("graph", "--format=dot", path, "--output", "g.dot");
        cr_expect(eq(int, r.status, 0), "%s: %s", path, r.err);
        if (r.status == 0 && have_dot())
            cr_expect(dot_accepts("g.dot"), "dot rejected the drawing of %s", path);
        run_free(&r);
        count++;
    }
    pclose(ls);
    cr_log_info("%d examples drawn", count);
}

/* ---- dsl_check_uses directly ---- */

static dsl_graph *compile_text(const char *file, const char *text, dsl_diags *d)
{
    cr_assert(dsl_diags_init(d, file) == 0);
    dsl_graph *g = dsl_compile(file, text, strlen(text), NULL, d);
    cr_assert(g != NULL, "%s does not compile", file);
    return g;
}

static char *diag_line(const dsl_diags *d, size_t i)
{
    cr_assert(i < d->n);
    char *s = dsl_diag_format(d, i);
    cr_assert(s != NULL);
    return s;
}

Test(uses, three_cycle_registry_and_failed_names)
{
    const char *texts[] = {
        "loom: 1\nname: x\ndo:\n  chain:\n    - use: y\n    - use: ext\n    - use: broken\n",
        "loom: 1\nname: y\ndo:\n  use: z\n",
        "loom: 1\nname: z\ndo:\n  use: x\n",
    };
    dsl_diags d[4];
    dsl_graph *g[4];
    dsl_diags *dp[4];
    char file[16];
    for (int i = 0; i < 3; i++) {
        snprintf(file, sizeof file, "%c.yaml", 'x' + i);
        g[i] = compile_text(file, texts[i], &d[i]);
        dp[i] = &d[i];
    }
    /* a file that failed: no graph, but its name is given */
    g[3] = NULL;
    cr_assert(dsl_diags_init(&d[3], "broken.yaml") == 0);
    dp[3] = &d[3];
    const char *names[] = { NULL, NULL, NULL, "broken" };
    const char *const reg_workflows[] = { "ext", NULL };
    dsl_registry reg = { .workflows = reg_workflows };

    size_t errors = dsl_check_uses(g, names, 4, &reg, dp);
    cr_expect(eq(sz, errors, 1));
    cr_assert(eq(sz, d[0].n, 1));
    char *s = diag_line(&d[0], 0);
    cr_expect(eq(str, s, "x.yaml:5:7: error: workflow cycle: x -> y -> z -> x"));
    free(s);
    cr_expect(eq(sz, d[1].n + d[2].n + d[3].n, 0));
    for (int i = 0; i < 4; i++) {
        dsl_graph_unref(g[i]);
        dsl_diags_free(&d[i]);
    }
}

/* A chain of thousands of uses ending in a cycle: the search is iterative,
 * so this neither overflows the stack nor reports the cycle twice. */
Test(uses, long_chain)
{
    enum { N = 3000 };
    dsl_graph **g = calloc(N, sizeof *g);
    dsl_diags *d = calloc(N, sizeof *d);
    dsl_diags **dp = calloc(N, sizeof *dp);
    cr_assert(g && d && dp);
    char text[256], file[32];
    for (int i = 0; i < N; i++) {
        /* w0 -> w1 -> ... -> w(N-1) -> w(N-2) */
        int next = i + 1 < N ? i + 1 : N - 2;
        snprintf(text, sizeof text, "loom: 1\nname: w%d\ndo:\n  use: w%d\n", i, next);
        snprintf(file, sizeof file, "w%d.yaml", i);
        g[i] = compile_text(file, text, &d[i]);
        dp[i] = &d[i];
    }
    cr_expect(eq(sz, dsl_check_uses(g, NULL, N, NULL, dp), 1));
    cr_assert(eq(sz, d[N - 2].n, 1));
    char *s = diag_line(&d[N - 2], 0);
    char want[128];
    snprintf(want, sizeof want, "w%d.yaml:4:3: error: workflow cycle: w%d -> w%d -> w%d",
             N - 2, N - 2, N - 1, N - 2);
    cr_expect(eq(str, s, want));
    free(s);
    for (int i = 0; i < N; i++) {
        dsl_graph_unref(g[i]);
        dsl_diags_free(&d[i]);
    }
    free(g);
    free(d);
    free(dp);
}

/* ---- the emitters directly ---- */

Test(emit, json_is_deterministic)
{
    dsl_diags d;
    dsl_graph *g = compile_text("kinds.yaml", WF_ALL_KINDS, &d);
    json_t *a = dsl_emit_json(g), *b = dsl_emit_json(g);
    cr_assert(a && b);
    char *sa = json_dumps(a, JSON_INDENT(2)), *sb = json_dumps(b, JSON_INDENT(2));
    cr_assert(sa && sb);
    cr_expect(eq(str, sa, sb));
    /* keys come in a fixed order: the file's identity first */
    cr_expect(strncmp(sa, "{\n  \"name\": \"kinds\",\n  \"version\": ", 33) == 0, "%s", sa);
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
}

/* Labels full of quotes, backslashes and newlines still make valid DOT. */
Test(emit, dot_escapes_labels)
{
    dsl_diags d;
    dsl_graph *g = compile_text("esc.yaml",
                                "loom: 1\nname: \"esc\"\ndo:\n  chain:\n"
                                "    - call: \"\\\\\\\"{{ prev }}\\\"\\n\\\\\"\n"
                                "    - fail: \"a\\\\\\\"b\\tc\\nd\"\n",
                                &d);
    char *path = tmp_path("esc.dot");
    FILE *f = fopen(path, "w");
    free(path);
    cr_assert(f != NULL);
    char *dot = dsl_emit_dot(g, NULL);
    cr_assert(dot != NULL);
    cr_expect(eq(int, fputs(dot, f) >= 0, 1));
    free(dot);
    fclose(f);
    char *text = read_tmp("esc.dot");
    /* a snippet is one line: the newline became a space */
    cr_expect(strstr(text, "\\\\\\\"{{ prev }}\\\" \\\\") != NULL, "%s", text);
    if (have_dot())
        cr_expect(dot_accepts("esc.dot"), "dot rejected:\n%s", text);
    free(text);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
}

Test(loomctl, two_files_with_one_name)
{
    write_file("a.yaml", "loom: 1\nname: same\ndo:\n  call: \"x\"\n");
    write_file("b.yaml", "loom: 1\nname: same\ndo:\n  call: \"y\"\n");
    run_result r = RUN("validate", "a.yaml", "b.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "b.yaml: error: workflow name 'same' is already used by a.yaml\n"));
    run_free(&r);
}

Test(run, prints_the_output)
{
    write_file("w.yaml", "loom: 1\nname: w\ninput: { x: string }\n"
                         "do:\n  lambda: { fn: std.trim, input: \"{{ input.x }}\" }\n");
    write_file("in.json", "{\"x\": \"  hi  \"}");
    run_result r = RUN("run", "w.yaml", "--input", "in.json");
    cr_expect(eq(int, r.status, 0), "stderr: %s", r.err);
    cr_expect(eq(str, r.out, "\"hi\"\n"));
    run_free(&r);
}

Test(run, failed_job_has_a_typed_error)
{
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  chain:\n    - id: a\n      fail: { message: \"no {{ prev }}\", code: out_of_scope }\n");
    run_result r = RUN("run", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "loomctl run: job failed: out_of_scope at do.chain[0]: no {}\n"));
    run_free(&r);
}

Test(run, invalid_input_json)
{
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  call: \"x\"\n");
    write_file("in.json", "{\"x\": ");
    run_result r = RUN("run", "w.yaml", "--input", "in.json");
    cr_expect(eq(int, r.status, 1));
    cr_expect(strstr(r.err, "in.json:1:") == r.err, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "invalid JSON input") != NULL, "stderr: %s", r.err);
    run_free(&r);
}

Test(run, unknown_lambda_is_a_compile_error)
{
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  lambda: std.trimm\n");
    run_result r = RUN("run", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "w.yaml:4:11: error: unknown lambda 'std.trimm'; did you mean 'std.trim'?\n"));
    run_free(&r);
}

Test(run, a_missing_lambda_argument_is_a_compile_error)
{
    write_file("w.yaml", "loom: 1\nname: w\ndo:\n  lambda: std.const\n");
    run_result r = RUN("run", "w.yaml");
    cr_expect(eq(int, r.status, 1));
    cr_expect(eq(str, r.err, "w.yaml:4:11: error: missing required argument 'value' for lambda 'std.const'\n"));
    cr_expect(eq(str, r.out, ""));
    run_free(&r);
}

Test(run, input_not_matching_the_declared_input)
{
    write_file("w.yaml", "loom: 1\nname: w\ninput: { n: integer }\ndo:\n  call: \"{{ input.n }}\"\n");
    write_file("in.json", "{\"n\": \"seven\"}");
    run_result r = RUN("run", "w.yaml", "--input", "in.json");
    cr_expect(eq(int, r.status, 1));
    cr_expect(strstr(r.err, "invalid_input") != NULL, "stderr: %s", r.err);
    run_free(&r);
}
