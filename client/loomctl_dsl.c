/* loomctl_dsl.c -- `loomctl validate` and `loomctl graph`: the workflow
 * compiler run on the user's machine, with the daemon's view of `use`.
 *
 * The daemon compiles every workflow of its directory together, so a `use`
 * resolves against the other files there. To give the same answer offline,
 * both commands compile the files named plus every other .yaml/.yml file in
 * their directories ("siblings"), then check `use` across the whole set. Only
 * the named files' errors are printed: a broken sibling is not what the user
 * asked about, but its `name:` still counts, so a `use` of it is not called
 * unknown. */
#include "config.h"

#include "client/loomctl.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/config_file.h"
#include "daemon/plugins/plugins_sigs.h"
#include "daemon/plugins/plugins.h"
#include "dsl/dsl.h"
#include "common/containers.h"
#include "common/file.h"

/* The compiler refuses larger workflows; configs get the same bound. */

typedef struct ctl_file {
    char *path;          /* owned */
    bool given;          /* named on the command line: its errors are printed */
    dsl_diags diags;
    dsl_graph *graph;    /* one reference, or NULL when the file has errors */
    char *name;          /* for a failed file: its `name:` if it can be read, else NULL */
} ctl_file;

/* A file's identity, so a sibling that is a file already named is not
 * compiled twice and a directory named twice is not scanned twice. */
typedef struct ctl_fileid {
    dev_t dev;
    ino_t ino;
} ctl_fileid;

typedef struct ctl_ids {
    ctl_fileid *v;
    size_t n, cap;
    size_t nsorted;      /* v[0..nsorted) is sorted and searchable */
} ctl_ids;

typedef struct ctl_set {
    ctl_file *v;
    size_t n, cap;
    ctl_ids files;       /* of every file in V that could be stat'ed */
    ctl_ids dirs;        /* directories scanned for siblings */
    const char **providers; /* NULL-terminated, borrowed from CONFIG; NULL: unchecked */
    dsl_registry *plugin_reg; /* owned: the lambdas' names (NULL: unchecked) and arguments */
    config *config;
} ctl_set;

static void set_free(ctl_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].path);
        dsl_diags_free(&s->v[i].diags);
        dsl_graph_unref(s->v[i].graph);
        free(s->v[i].name);
    }
    free(s->v);
    free(s->files.v);
    free(s->dirs.v);
    free(s->providers);
    free(s->plugin_reg);
    config_free(s->config);
}

/* ---- the daemon config: the provider names workflows may use ---- */

static void print_plugin_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "%s\n", line);
}

/* C's plugins.config entries, checked as loomd checks them: against the
 * options each plugin declares. The plugins are registered without running
 * their init (nothing of a plugin runs here but its entry point). 0, or -1
 * after printing the errors (FILE:LINE:COL for an entry). */
static int check_plugin_configs(const config *c)
{
    plugins_t *p = plugins_new(print_plugin_line, NULL);
    int rc = -1;

    if (!p || config_plugins_attach(c, p, 1) < 0) {
        fprintf(stderr, "loomctl: out of memory\n");
        goto out;
    }
    plugins_set_no_init(p, true);
    (void)plugins_add_builtins(p);
    for (size_t i = 0; c->plugin_dirs && c->plugin_dirs[i]; i++)
        (void)plugins_load_dir(p, c->plugin_dirs[i]);
    (void)plugins_check_unused_configs(p);
    rc = plugins_errors(p) ? -1 : 0;
out:
    plugins_free(p);
    return rc;
}

/* Loads the config at PATH into S, printing its errors (a plugin's entry in
 * plugins.config too). Returns 0, or -1 when the config is unusable. */
static int load_config(ctl_set *s, const char *path)
{
    dsl_diags d;
    int rc = -1;
    if (dsl_diags_init(&d, path) < 0)
        goto out;
    if (!(s->config = config_load(path, &d)))
        goto out;
    if (!(s->providers = config_provider_names(s->config))) {
        dsl_error(&d, 0, 0, "out of memory");
        goto out;
    }
    rc = 0;
out:
    loomctl_print_diags(&d);
    /* only a config with plugin entries loads plugins: checking the rest
     * needs none */
    if (rc == 0 && s->config->plugin_configs.n && check_plugin_configs(s->config) < 0)
        rc = -1;
    dsl_diags_free(&d);
    return rc;
}

/* ---- the plugins: the lambdas workflows may call, and their arguments ---- */

/* What P's lambdas add to the compiler's registry, in one block that
 * outlives P (free with free()): their arguments always, their names only
 * when NAMES (else a lambda of a plugin not loaded here is not an error).
 * NULL when out of memory. */
static dsl_registry *plugin_registry(const plugins_t *p, bool names)
{
    dsl_lambda_sig *sigs = plugins_lambda_sigs(p);
    if (!sigs)
        return NULL;
    dsl_registry view = { .lambdas = names ? plugins_lambda_names(p) : NULL, .lambda_sigs = sigs };
    dsl_registry *reg = dsl_registry_dup(&view);
    free(sigs);
    return reg;
}

static void say_plugin_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "loomctl: %s\n", line);
}

static void drop_plugin_line(void *ud, const char *line)
{
    (void)ud;
    (void)line;
}

/* Registers the plugins loomd would load (the built-ins, and with a config
 * the shared objects of its plugin directories, each with its entry of
 * plugins.config) into S's registry, running none of their code but the
 * entry point: lambda names are checked only with a config, since without
 * one a workflow may call plugins not registered here; the arguments of
 * every lambda registered are checked either way. 0, or -1 when out of
 * memory. */
static int load_plugins(ctl_set *s)
{
    /* a config with plugin entries had its plugins loaded and every
     * loader line printed by check_plugin_configs already */
    bool said = s->config && s->config->plugin_configs.n;
    plugins_t *p = plugins_new(said ? drop_plugin_line : say_plugin_line, NULL);
    if (!p || (s->config && config_plugins_attach(s->config, p, 1) < 0)) {
        plugins_free(p);
        return -1;
    }
    plugins_set_no_init(p, true);
    (void)plugins_add_builtins(p); /* a refusal is printed */
    /* a directory that cannot be read is reported by the loader */
    for (size_t i = 0; s->config && s->config->plugin_dirs && s->config->plugin_dirs[i]; i++)
        (void)plugins_load_dir(p, s->config->plugin_dirs[i]);
    s->plugin_reg = plugin_registry(p, s->config != NULL);
    plugins_free(p);
    return s->plugin_reg ? 0 : -1;
}

/* ---- the set of files compiled together ---- */

static int id_cmp(const void *a, const void *b)
{
    const ctl_fileid *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Appends the identity of ST to IDS (searchable after ids_sort). Returns 0,
 * or -1 when out of memory. */
static int ids_push(ctl_ids *ids, const struct stat *st)
{
    if (vec_reserve(&ids->v, ids->n, &ids->cap, sizeof *ids->v, 64) < 0)
        return -1;
    ids->v[ids->n++] = (ctl_fileid){ st->st_dev, st->st_ino };
    return 0;
}

static void ids_sort(ctl_ids *ids)
{
    if (ids->n > 1)
        qsort(ids->v, ids->n, sizeof *ids->v, id_cmp);
    ids->nsorted = ids->n;
}

static bool ids_has(const ctl_ids *ids, const struct stat *st)
{
    ctl_fileid key = { st->st_dev, st->st_ino };
    return ids->nsorted && bsearch(&key, ids->v, ids->nsorted, sizeof key, id_cmp) != NULL;
}

/* Adds PATH (copied), whose identity is ST (NULL when it cannot be stat'ed:
 * compiling it will say why). Returns 0, or -1 when out of memory. */
static int set_add(ctl_set *s, const char *path, bool given, const struct stat *st)
{
    if (st && ids_push(&s->files, st) < 0)
        return -1;
    if (vec_reserve(&s->v, s->n, &s->cap, sizeof *s->v, 16) < 0)
        return -1;
    ctl_file *f = &s->v[s->n];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return -1;
    f->given = given;
    s->n++;
    return dsl_diags_init(&f->diags, path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the workflow files of the directory of PATH that are not in the set
 * yet, in name order (so the set, and with it every message, is the same
 * from run to run). A directory that cannot be read adds nothing: the named
 * file's own error says why. */
static int add_siblings(ctl_set *s, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    DIR *d = NULL;
    struct stat dst;
    if (!dir)
        goto out;
    if (stat(dir, &dst) != 0 || ids_has(&s->dirs, &dst) || !(d = opendir(dir))) {
        rc = 0;
        goto out;
    }
    if (ids_push(&s->dirs, &dst) < 0)
        goto out;
    ids_sort(&s->dirs);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!dsl_is_workflow_file(e->d_name))
            continue;
        if (vec_reserve(&names, n, &cap, sizeof *names, 64) < 0)
            goto out;
        /* a bare file name keeps bare sibling names: messages show what the user typed */
        char *p = NULL;
        if (asprintf(&p, "%s%s%s", slash ? dir : "", slash && slash != path ? "/" : "",
                     e->d_name) < 0)
            goto out;
        names[n++] = p;
    }
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) != 0 || !S_ISREG(st.st_mode) || ids_has(&s->files, &st))
            continue;
        if (set_add(s, names[i], false, &st) < 0)
            goto out;
    }
    ids_sort(&s->files);
    rc = 0;
out:
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(dir);
    return rc;
}

/* The `name:` of a file that failed to compile, so that a `use` of it is
 * not reported as unknown. New string or NULL. */
static char *salvage_name(const char *path)
{
    size_t len;
    char *buf = file_read_all(path, DSL_DEFAULT_MAX_FILE, &len);
    char *name = buf ? dsl_declared_name(path, buf, len, NULL) : NULL;
    free(buf);
    return name;
}

/* Reads PATH and compiles it with OPT; an unreadable file is one error in
 * DIAGS. A new graph (caller unrefs), or NULL. */
static dsl_graph *compile_path(const char *path, const dsl_options *opt, dsl_diags *diags)
{
    size_t len;
    char *buf = file_read_all(path, dsl_max_file_size(opt), &len);
    if (!buf) {
        dsl_error_unreadable(diags, errno, opt);
        return NULL;
    }
    dsl_graph *g = dsl_compile(path, buf, len, opt, diags);
    free(buf);
    return g;
}

/* Compiles every file of S and checks `use` across them. Returns 0, or -1
 * when out of memory (reported). */
static int set_compile(ctl_set *s)
{
    dsl_registry reg = { .providers = s->providers, .workflows = NULL };
    if (s->plugin_reg) {
        reg.lambdas = s->plugin_reg->lambdas;
        reg.lambda_sigs = s->plugin_reg->lambda_sigs;
    }
    dsl_options opt = { .registry = &reg, .read_file = file_read_all };
    dsl_graph **graphs = calloc(s->n + 1, sizeof *graphs);
    const char **names = calloc(s->n + 1, sizeof *names);
    dsl_diags **diags = calloc(s->n + 1, sizeof *diags);
    int rc = -1;
    if (!graphs || !names || !diags) {
        fprintf(stderr, "loomctl: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < s->n; i++) {
        ctl_file *f = &s->v[i];
        f->graph = compile_path(f->path, &opt, &f->diags);
        if (!f->graph)
            f->name = salvage_name(f->path);
        graphs[i] = f->graph;
        names[i] = f->graph ? f->graph->name : f->name;
        diags[i] = &f->diags;
    }
    dsl_check_uses(graphs, names, s->n, &reg, diags);
    rc = 0;
out:
    free(graphs);
    free(names);
    free(diags);
    return rc;
}

/* Builds and compiles the set: the NFILES files in FILES first (their order
 * decides where a cycle is reported), then their siblings. */
static int set_build(ctl_set *s, char **files, int nfiles, const char *config_path)
{
    if (config_path && load_config(s, config_path) < 0)
        return -1;
    if (!s->plugin_reg && load_plugins(s) < 0)
        goto oom;
    for (int i = 0; i < nfiles; i++) {
        struct stat st;
        if (set_add(s, files[i], true, stat(files[i], &st) == 0 ? &st : NULL) < 0)
            goto oom;
    }
    ids_sort(&s->files);
    for (int i = 0; i < nfiles; i++)
        if (add_siblings(s, files[i]) < 0)
            goto oom;
    return set_compile(s);
oom:
    fprintf(stderr, "loomctl: out of memory\n");
    return -1;
}

/* Prints F's diagnostics (warnings too) and says whether F is valid. */
static bool report_file(const ctl_file *f)
{
    loomctl_print_diags(&f->diags);
    return f->graph && f->diags.nerrors == 0 && !f->diags.oom;
}

int loomctl_cmd_validate(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("validate");
    const char *config_path = NULL;
    bool quiet = false;
    const loomctl_option opts[] = {
        { "config", 0, &config_path, NULL },
        { "quiet", 'q', NULL, &quiet },
        { NULL, 0, NULL, NULL },
    };
    int nfiles;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nfiles);
    if (rc >= 0)
        return rc;
    if (nfiles == 0)
        return loomctl_usage_error(self, "no workflow files given");

    ctl_set s = { 0 };
    rc = LOOMCTL_FAILED;
    if (set_build(&s, argv + 1, nfiles, config_path) < 0)
        goto out;
    rc = LOOMCTL_OK;
    for (size_t i = 0; i < s.n; i++) {
        const ctl_file *f = &s.v[i];
        if (!f->given)
            continue;
        if (!report_file(f))
            rc = LOOMCTL_FAILED;
        else if (!quiet)
            printf("%s: ok (name %s, %zu node%s)\n", f->path, f->graph->name, f->graph->nnodes,
                   f->graph->nnodes == 1 ? "" : "s");
    }
out:
    set_free(&s);
    return rc;
}

static int write_graph(const dsl_graph *g, bool dot, FILE *out)
{
    if (dot) {
        size_t len;
        char *text = dsl_emit_dot(g, &len);
        if (!text) {
            errno = ENOMEM;
            return -1;
        }
        int rc = fwrite(text, 1, len, out) == len ? 0 : -1;
        free(text);
        return rc;
    }
    json_t *doc = dsl_emit_json(g);
    if (!doc) {
        errno = ENOMEM;
        return -1;
    }
    int rc = json_dumpf(doc, out, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(doc);
    if (rc < 0 || fputc('\n', out) == EOF)
        return -1;
    return 0;
}

int loomctl_cmd_graph(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("graph");
    const char *format = "json", *output = NULL, *config_path = NULL;
    const loomctl_option opts[] = {
        { "format", 'f', &format, NULL },
        { "output", 'o', &output, NULL },
        { "config", 0, &config_path, NULL },
        { NULL, 0, NULL, NULL },
    };
    int nfiles;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nfiles);
    if (rc >= 0)
        return rc;
    if (nfiles == 0)
        return loomctl_usage_error(self, "no workflow file given");
    if (nfiles > 1)
        return loomctl_usage_error(self, "expected one workflow file, got %d", nfiles);
    bool dot = strcmp(format, "dot") == 0;
    if (!dot && strcmp(format, "json") != 0)
        return loomctl_usage_error(self, "unknown format '%s' (expected json or dot)", format);

    ctl_set s = { 0 };
    FILE *dest = NULL;
    rc = LOOMCTL_FAILED;
    if (set_build(&s, argv + 1, 1, config_path) < 0)
        goto out;
    if (!report_file(&s.v[0]))
        goto out;
    dest = output ? fopen(output, "w") : stdout;
    if (!dest) {
        fprintf(stderr, "loomctl graph: cannot write %s: %s\n", output, strerror(errno));
        goto out;
    }
    errno = 0;
    if (write_graph(s.v[0].graph, dot, dest) < 0 || fflush(dest) != 0 || ferror(dest)) {
        fprintf(stderr, "loomctl graph: cannot write %s: %s\n", output ? output : "standard output",
                strerror(errno ? errno : EIO));
        goto out;
    }
    rc = LOOMCTL_OK;
out:
    if (dest && dest != stdout && fclose(dest) != 0 && rc == LOOMCTL_OK) {
        fprintf(stderr, "loomctl graph: cannot write %s: %s\n", output, strerror(errno));
        rc = LOOMCTL_FAILED;
    }
    set_free(&s);
    return rc;
}

int loomctl_compile(const char *file, const config *cfg, const plugins_t *plugins,
                    loomctl_compiled *out)
{
    ctl_set s = { 0 };
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!(s.plugin_reg = plugin_registry(plugins, true))) {
        fprintf(stderr, "loomctl: out of memory\n");
        goto out;
    }
    if (!(s.providers = config_provider_names(cfg))) {
        fprintf(stderr, "loomctl: out of memory\n");
        goto out;
    }
    char *files[1] = { (char *)file };
    if (set_build(&s, files, 1, NULL) < 0 || !report_file(&s.v[0]))
        goto out;
    if (!(out->all = calloc(s.n + 1, sizeof *out->all))) {
        fprintf(stderr, "loomctl: out of memory\n");
        goto out;
    }
    /* the siblings that compiled cleanly serve `use`; the file itself first */
    for (size_t i = 0; i < s.n; i++)
        if (s.v[i].graph && s.v[i].diags.nerrors == 0)
            out->all[out->n++] = dsl_graph_ref(s.v[i].graph);
    out->main = out->all[0];
    rc = 0;
out:
    set_free(&s);
    if (rc < 0)
        loomctl_compiled_free(out);
    return rc;
}

void loomctl_compiled_free(loomctl_compiled *c)
{
    for (size_t i = 0; i < c->n; i++)
        dsl_graph_unref(c->all[i]);
    free(c->all);
    memset(c, 0, sizeof *c);
}
