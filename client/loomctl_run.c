/* loomctl_run.c -- `loomctl run`: one job, in this process, with no daemon.
 *
 * It sets up what loomd will host — the reactor, the worker pool, the plugin
 * registry, the provider instances of the config — runs one job of the
 * workflow to its end and prints the output JSON on stdout. A failed job
 * prints its typed error on stderr and exits 1. With --trace every node's
 * start and finish (time since the job started, duration, attempt, provider)
 * goes to stderr, so a user can see where time went. */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/engine/engine.h"
#include "daemon/plugins/plugins.h"
#include "daemon/providers.h"
#include "daemon/core/pool.h"
#include "daemon/core/reactor.h"
#include "dsl/schema.h"


typedef struct run_state {
    reactor_t *r;
    json_t *output;        /* new reference when the job succeeded */
    json_t *error;         /* new reference when it failed */
    bool done;
    bool trace;
    uint64_t t0;           /* reactor time of the first trace event */
    json_t *starts;        /* node path -> start time (us), for durations */
    json_t *steps;         /* step key -> checkpoint record, for a run after a wait */
    json_t *waits;         /* what the job parked on (engine_job_waits), or NULL */
    const loomctl_compiled *workflows;
} run_state;

static void log_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "loomctl run: %s\n", line);
}

static void on_done(engine_job_t *job, void *ud)
{
    run_state *st = ud;
    json_t *out = engine_job_output(job);
    json_t *waits = engine_job_waits(job);
    if (out)
        st->output = json_incref(out);
    else if (waits)
        st->waits = json_deep_copy(waits);
    else
        st->error = engine_error_json(engine_job_error(job));
    st->done = true;
    reactor_stop(st->r);
}

static void on_checkpoint(void *ud, engine_job_t *job, const char *key, json_t *record)
{
    run_state *st = ud;
    (void)job;
    json_object_set(st->steps, key, record);
}

/* The records of ST's pending waits named as SIGNAL ("NAME=JSON") says,
 * added to its steps: how many, or -1 (reported). */
static int signal_waits(run_state *st, const char *signal)
{
    const char *eq = signal ? strchr(signal, '=') : NULL;
    if (!eq) {
        fprintf(stderr, "loomctl run: the job waits for a signal; give --signal NAME=JSON\n");
        return -1;
    }
    json_error_t e;
    json_t *data = json_loads(eq + 1, JSON_DECODE_ANY, &e);
    if (!data) {
        fprintf(stderr, "loomctl run: --signal %.*s: not JSON: %s\n", (int)(eq - signal), signal,
                e.text);
        return -1;
    }
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(st->waits, i, w) {
        const char *name = json_string_value(json_object_get(w, "signal"));
        if (!name || strlen(name) != (size_t)(eq - signal) || strncmp(name, signal, (size_t)(eq - signal)))
            continue;
        /* the daemon's check of the data, so a run shows what loomd would refuse */
        json_t *doc = json_object_get(w, "schema");
        char ptr[128], why[300];
        dsl_schema *sc = json_is_object(doc) ? dsl_schema_compile(doc, ptr, sizeof ptr, why,
                                                                  sizeof why) : NULL;
        if (sc && dsl_schema_validate(sc, data, why, sizeof why) < 0) {
            fprintf(stderr, "loomctl run: --signal %s: the data does not fit the schema of %s: "
                    "%s\n", name, json_string_value(json_object_get(w, "node")), why);
            dsl_schema_free(sc);
            json_decref(data);
            return -1;
        }
        dsl_schema_free(sc);
        json_t *rec = json_pack("{s:O, s:i, s:O}", "output", data, "attempts", 1, "seq",
                                json_object_get(w, "seq"));
        if (rec && json_object_set_new(st->steps, json_string_value(json_object_get(w, "key")),
                                       rec) == 0)
            n++;
    }
    json_decref(data);
    if (!n) {
        fprintf(stderr, "loomctl run: the job waits for signal '%s', not the one --signal names\n",
                json_string_value(json_object_get(json_array_get(st->waits, 0), "signal")));
        return -1;
    }
    return n;
}

static dsl_graph *lookup_workflow(void *ud, const char *name)
{
    const run_state *st = ud;
    for (size_t i = 0; i < st->workflows->n; i++)
        if (strcmp(st->workflows->all[i]->name, name) == 0)
            return st->workflows->all[i];
    return NULL;
}

static const char *trace_name(engine_trace_event ev)
{
    switch (ev) {
    case ENGINE_TRACE_START: return "start";
    case ENGINE_TRACE_FINISH: return "finish";
    case ENGINE_TRACE_RETRY: return "retry";
    case ENGINE_TRACE_ERROR: return "error";
    case ENGINE_TRACE_PROGRESS: return "progress";
    case ENGINE_TRACE_BATCHED: return "batched";
    }
    return "?";
}

/* One line per event; a finish or error also says how long the node ran. */
static void on_trace(void *ud, const engine_trace *t)
{
    run_state *st = ud;
    if (t->event == ENGINE_TRACE_PROGRESS)
        return; /* every start and finish is printed already */
    if (!st->t0)
        st->t0 = t->time_us;
    double at = (double)(t->time_us - st->t0) / 1000.0;
    char took[48] = "";
    json_t *start = json_object_get(st->starts, t->node);
    if (t->event == ENGINE_TRACE_START) {
        json_object_set_new(st->starts, t->node, json_integer((json_int_t)t->time_us));
    } else if (start && (t->event == ENGINE_TRACE_FINISH || t->event == ENGINE_TRACE_ERROR)) {
        snprintf(took, sizeof took, "  took %.3f ms",
                 (double)(t->time_us - (uint64_t)json_integer_value(start)) / 1000.0);
    }
    fprintf(stderr, "%10.3f ms  %-6s %-8s %s  attempt %d%s%s%s%s%s%s\n", at, trace_name(t->event),
            dsl_kind_name(t->kind), t->node, t->attempt, t->provider ? "  provider " : "",
            t->provider ? t->provider : "", t->code ? "  code " : "", t->code ? t->code : "", took,
            t->cached ? "  (cached)" : "");
}

/* Creates every provider instance of CFG. Errors name the config entry. */
static int add_providers(providers_t *prov, engine_t *e, const config *cfg)
{
    char err[512];
    int rc = 0;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const config_provider *p = &cfg->providers[i];
        if (providers_add(prov, e, p, err, sizeof err) == 0)
            continue;
        if (cfg->file)
            fprintf(stderr, "%s:%d:%d: error: provider '%s': %s\n", cfg->file, p->line, p->col,
                    p->name, err);
        else
            fprintf(stderr, "loomctl run: provider '%s': %s\n", p->name, err);
        rc = -1;
    }
    return rc;
}

static void print_error(const json_t *e)
{
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *node = json_string_value(json_object_get(e, "node"));
    json_int_t attempts = json_integer_value(json_object_get(e, "attempts"));
    fprintf(stderr, "loomctl run: job failed: %s", code ? code : "failed");
    if (node)
        fprintf(stderr, " at %s", node);
    if (attempts > 1)
        fprintf(stderr, " after %lld attempts", (long long)attempts);
    fprintf(stderr, ": %s\n", msg ? msg : "(no message)");
}

int loomctl_cmd_run(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("run");
    const char *input_path = NULL, *config_path = NULL, *seed_text = NULL, *signal = NULL;
    bool trace = false, json_errors = false;
    const loomctl_option opts[] = {
        { "input", 'i', &input_path, NULL },
        { "config", 'c', &config_path, NULL },
        { "seed", 0, &seed_text, NULL },
        { "signal", 0, &signal, NULL },
        { "trace", 't', NULL, &trace },
        { "json", 0, NULL, &json_errors },
        { NULL, 0, NULL, NULL },
    };
    int nfiles;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nfiles);
    if (rc >= 0)
        return rc;
    if (nfiles != 1)
        return loomctl_usage_error(self, nfiles ? "expected one workflow file" : "no workflow file given");
    uint64_t seed = 0;
    if (seed_text) {
        char *end;
        errno = 0;
        seed = strtoull(seed_text, &end, 10);
        if (errno || !*seed_text || *end)
            return loomctl_usage_error(self, "--seed takes a non-negative integer");
    }

    run_state st = { .trace = trace };
    config *cfg = NULL;
    plugins_t *plugins = NULL;
    loomctl_compiled wf = { 0 };
    json_t *input = NULL;
    pool_t *pool = NULL;
    engine_t *engine = NULL;
    providers_t *prov = NULL;
    rc = LOOMCTL_FAILED;

    if (config_path) {
        dsl_diags d;
        dsl_diags_init(&d, config_path);
        cfg = config_load(config_path, &d);
        loomctl_print_diags(&d);
        dsl_diags_free(&d);
    } else {
        cfg = config_default();
    }
    if (!cfg)
        goto out;
    /* isolated plugins run in this process too: there is no helper here */
    if (!(plugins = plugins_new(log_line, NULL)) || config_plugins_attach(cfg, plugins, 1) < 0)
        goto oom;
    if (plugins_add_builtins(plugins) < 0) /* the refusal is printed */
        goto out;
    for (size_t i = 0; cfg->plugin_dirs && cfg->plugin_dirs[i]; i++)
        if (plugins_load_dir(plugins, cfg->plugin_dirs[i]) < 0)
            fprintf(stderr, "loomctl run: cannot read plugin directory %s: %s\n",
                    cfg->plugin_dirs[i], strerror(errno));
    if (plugins_check_unused_configs(plugins) > 0)
        goto out;
    if (loomctl_compile(argv[1], cfg, plugins, &wf) < 0)
        goto out;
    if (!(input = input_path ? loomctl_read_input("run", input_path) : json_object()))
        goto out;

    if (!(st.r = reactor_new()) || !(pool = pool_new(st.r, cfg->workers)))
        goto oom;
    st.workflows = &wf;
    if ((trace && !(st.starts = json_object())) || !(st.steps = json_object()))
        goto oom;
    engine_options eo = { .trace = trace ? on_trace : NULL, .trace_ud = &st };
    if (!(engine = engine_new(st.r, pool, plugins, &eo)) || !(prov = providers_new(st.r)))
        goto oom;
    if (add_providers(prov, engine, cfg) < 0)
        goto out;
    engine_set_workflow_lookup(engine, lookup_workflow, &st);
    engine_job_options jo = { .seed = seed, .checkpoint = on_checkpoint, .checkpoint_ud = &st };
    /* a job that waits runs again with the signal's data and its steps, as
     * loomd would after `loomctl signal`; each --signal is used once */
    for (int runs = 0;; runs++) {
        if (runs > 1)
            fprintf(stderr, "loomctl run: the job waits again, for signal '%s'; --signal is "
                    "used once\n", json_string_value(json_object_get(json_array_get(st.waits, 0),
                                                                       "signal")));
        if (runs && (runs > 1 || signal_waits(&st, signal) < 0))
            goto out;
        json_decref(st.waits);
        st.waits = NULL;
        st.done = false;
        jo.replay = st.steps;
        if (!engine_submit(engine, wf.main, input, &jo, on_done, &st))
            goto oom;
        while (!st.done)
            if (reactor_run(st.r) < 0)
                break;
        if (!st.waits)
            break;
    }
    if (st.output) {
        if (json_dumpf(st.output, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) < 0 ||
            fputc('\n', stdout) == EOF)
            goto out;
        rc = LOOMCTL_OK;
    } else if (st.error) {
        if (json_errors) {
            json_dumpf(st.error, stderr, JSON_COMPACT);
            fputc('\n', stderr);
        } else {
            print_error(st.error);
        }
    } else {
        fprintf(stderr, "loomctl run: the job did not finish\n");
    }
    goto out;
oom:
    fprintf(stderr, "loomctl run: out of memory or a system limit: %s\n", strerror(errno));
out:
    engine_free(engine);
    providers_free(prov); /* after the engine: its upstreams use the client */
    pool_free(pool);
    reactor_free(st.r);
    plugins_free(plugins);
    loomctl_compiled_free(&wf);
    config_free(cfg);
    json_decref(input);
    json_decref(st.output);
    json_decref(st.error);
    json_decref(st.starts);
    json_decref(st.steps);
    json_decref(st.waits);
    return rc;
}
