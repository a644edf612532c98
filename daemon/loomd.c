/* loomd.c -- the daemon: start, signals, reload, stop.
 *
 *   loomd [--config FILE] [--foreground] [--check] [--version] [--help]
 *
 * Start-up order matters: the config is checked before anything is touched;
 * the store is opened (and locked) before the socket listens, so a second
 * daemon on the same state directory fails before it could take a job; the
 * unfinished jobs are queued before the first new one. Without --foreground
 * the process forks first (threads do not survive a fork) and the parent
 * exits only when the child is ready, with the child's status.
 *
 * Signals are taken by a thread of their own and handed to the reactor
 * (loomd_signals.c), so handlers do nothing behind the loop's back:
 * SIGTERM/SIGINT stop taking jobs and wait for the running ones up to
 * shutdown_grace (a second one stops at once; the jobs resume at the next
 * start), SIGHUP reloads the config and the workflows. That thread also ends
 * a stop the reactor cannot finish because it is stuck. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/core/http.h"
#include "daemon/loomd.h"
#include "daemon/store_faults_env.h"
#include "dsl/dsl.h"

#define PURGE_EVERY_US (10 * 60 * REACTOR_SEC)
/* How long a stop waits for lambda calls the jobs' cancel left running
 * (their jobs are gone already): enough for a call that was about to return,
 * nothing like a stuck one. */
#define STOP_WORKERS_MS 200

static const char usage_text[] =
    "usage: loomd [--config FILE] [--foreground] [--check]\n"
    "       loomd --version | --help\n"
    "\n"
    "  -c, --config FILE  the configuration (default: built-in defaults: ./loom.sock,\n"
    "                     ./workflows, ./loom-state, the mock provider `default`)\n"
    "  -f, --foreground   stay attached to the terminal (what systemd runs)\n"
    "  --check            check the config and the workflows, then exit\n"
    "\n"
    "Signals: TERM/INT stop after running jobs (twice: at once), HUP reloads.\n"
    "See loomd(8) and docs/operations.md.\n";

/* ---- logging glue */

static void log_plugins(void *ud, int level, const char *line)
{
    log_write(&((loomd *)ud)->log, level, NULL, "%s", line);
}

static void log_server(void *ud, int level, const char *line)
{
    log_write(&((loomd *)ud)->log, level, NULL, "%s", line);
}

static void log_wfdir(void *ud, wfdir_log_level level, const char *msg)
{
    int l = level == WFDIR_LOG_ERROR ? LOOM_LOG_ERROR
            : level == WFDIR_LOG_WARNING ? LOOM_LOG_WARN : LOOM_LOG_INFO;
    log_write(&((loomd *)ud)->log, l, NULL, "%s", msg);
}

static void on_workflow_change(void *ud, wfdir *w, const wfdir_change *c)
{
    loomd *d = ud;
    (void)w;
    if (!c->new_version)
        log_write(&d->log, LOOM_LOG_INFO, json_pack("{s:s, s:s}", "workflow", c->name, "file", c->file),
                  "workflow removed");
    else
        log_write(&d->log, LOOM_LOG_INFO,
                  json_pack("{s:s, s:s, s:s}", "workflow", c->name, "file", c->file, "version",
                            c->new_version->hash),
                  "workflow v%llu loaded", (unsigned long long)c->new_version->load);
    if (c->new_version)
        loomd_cluster_workflow(d, c->name, c->new_version->hash);
}

/* ---- stop and reload */

/* Stops the reactor once a stop was asked for and no job is running or
 * being recorded. */
static void check_stop(loomd *d)
{
    if (d->stopping && jobs_idle(&d->jobs))
        reactor_stop(d->r);
}

/* ---- the jobs' hooks: engine generations and "a job is gone" */

static engine_t *gen_acquire(void *ud, void **token)
{
    loomd *d = ud;
    if (!d->gens)
        return NULL;
    d->gens->jobs++;
    *token = d->gens;
    return d->gens->eng;
}

static void gen_release(void *ud, void *token)
{
    (void)ud;
    ((lgen *)token)->jobs--;
}

static void jobs_settled(void *ud)
{
    loomd *d = ud;
    gen_collect(d);
    check_stop(d);
}

static void on_grace_over(reactor_t *r, reactor_timer_t *t, void *ud)
{
    loomd *d = ud;
    (void)r;
    (void)t;
    d->grace_timer = NULL;
    log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:I}", "jobs", (json_int_t)d->jobs.nrunning),
              "grace period over: stopping now; unfinished jobs resume at the next start");
    jobs_abandon(&d->jobs);
    reactor_stop(d->r);
}

void loomd_begin_stop(loomd *d, const char *why)
{
    if (d->stopping) {
        log_write(&d->log, LOOM_LOG_WARN, NULL, "%s again: stopping now", why);
        jobs_abandon(&d->jobs);
        reactor_stop(d->r);
        return;
    }
    d->stopping = true;
    jobs_stop_starting(&d->jobs);
    log_write(&d->log, LOOM_LOG_INFO,
              json_pack("{s:I, s:I}", "running", (json_int_t)d->jobs.nrunning, "grace_ms",
                        (json_int_t)d->cfg->shutdown_grace_ms),
              "%s: taking no new jobs, waiting for the running ones", why);
    d->grace_timer = reactor_timer_add(d->r, d->cfg->shutdown_grace_ms * REACTOR_MSEC,
                                       on_grace_over, d);
    check_stop(d);
}

static bool same_dirs(char **a, char **b)
{
    size_t i = 0;
    for (; a && b && a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return !(a && a[i]) && !(b && b[i]);
}

static bool same_path(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The keys a running loomd keeps until its next start (docs/operations.md):
 * a reload that changes them says which. */
static void warn_restart_keys(loomd *d, const config *c)
{
    const config *o = d->cfg;
    char keys[160] = "";
    const struct { bool changed; const char *name; } k[] = {
        { strcmp(c->socket, o->socket) != 0, "socket" },
        { c->socket_mode != o->socket_mode, "socket_mode" },
        { strcmp(c->state, o->state) != 0, "state" },
        { strcmp(c->workflows, o->workflows) != 0, "workflows" },
        { !same_dirs(c->plugin_dirs, o->plugin_dirs), "plugins" },
        { c->workers != o->workers, "workers" },
        { !loomd_trace_same(&c->tracing, &o->tracing), "tracing" },
        { !same_path(c->pid_file.path, o->pid_file.path), "pid_file" },
        { !same_path(c->metrics.listen, o->metrics.listen), "metrics.listen" },
        { !loomd_mcp_same(&c->mcp, &o->mcp), "mcp" },
        { !loomd_cluster_same(&c->cluster, &o->cluster), "cluster" },
        /* stderr, once the log file took its place, cannot come back */
        { o->log_file.path && !c->log_file.path, "log.file" },
    };
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (k[i].changed)
            snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", *keys ? ", " : "",
                     k[i].name);
    if (*keys)
        log_write(&d->log, LOOM_LOG_WARN, NULL, "%s changed: only the next start applies %s",
                  keys, strchr(keys, ',') ? "them" : "it");
}

void loomd_reload(loomd *d)
{
    /* first, so that a rotated log's new file has this reload's lines */
    loomd_log_reopen(d, &d->cfg->log_file);
    log_write(&d->log, LOOM_LOG_INFO, NULL, "reloading");
    if (d->config_path) {
        dsl_diags diags;
        dsl_diags_init(&diags, d->config_path);
        config *c = config_load(d->config_path, &diags);
        for (size_t i = 0; i < diags.n; i++) {
            char *s = dsl_diag_format(&diags, i);
            log_write(&d->log, LOOM_LOG_ERROR, NULL, "%s", s ? s : "out of memory");
            free(s);
        }
        dsl_diags_free(&diags);
        if (!c) {
            log_write(&d->log, LOOM_LOG_ERROR, NULL, "the config has errors: the old one stays");
        } else if (gen_start(d, c) < 0) {
            config_free(c);
            log_write(&d->log, LOOM_LOG_ERROR, NULL, "the new providers failed: the old ones stay");
        } else {
            warn_restart_keys(d, c);
            if (c->log_file.path && !same_path(c->log_file.path, d->cfg->log_file.path))
                loomd_log_reopen(d, &c->log_file); /* a new log.file: from now on */
            config_free(d->cfg);
            d->cfg = c;
            loomd_signals_set_grace(d->signals, c->shutdown_grace_ms);
            /* what can change live does, here (docs/operations.md lists
             * the rest); max_pending_per_connection, retention and
             * shutdown_grace are read from d->cfg where they are used */
            d->log.level = c->log_level;
            d->log.json = c->log_format == CONFIG_LOG_JSON;
            jobs_set_limits(&d->jobs, c->max_running_jobs, c->log_payloads);
            loomd_tenants_apply(d);
            loomd_cost_limits(d);
            d->jobs.max_queued = c->max_queued_jobs;
            d->jobs.max_output_bytes = c->max_output_bytes;
            server_set_limits(d->srv, (size_t)c->max_connections,
                              c->idle_timeout_ms * REACTOR_MSEC,
                              (size_t)c->max_connections_per_uid);
            gen_registry(d);
            jobs_pump(&d->jobs); /* a higher max_running_jobs starts queued jobs now */
        }
    } else if (gen_start(d, d->cfg) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "the providers failed to start again");
    }
    /* each plugin's configuration (the new config's, or the old one's
     * again when the new one was refused), checked against its options */
    plugins_reload_at(d->plugins, d->cfg->plugin_configs.configs, config_plugins_where, d->cfg);
    loomd_isolate_reload(d); /* the same configurations, to isolated plugins' helpers */
    gen_collect(d);
    /* reads the directory's names only: what changed compiles on wfdir's
     * thread and is swapped in when done (a failure is logged by wfdir) */
    (void)wfdir_rescan(d->wf);
}

static void on_purge_done(void *ud, const store_result_t *res)
{
    loomd *d = ud;
    if (res->status < 0)
        log_write(&d->log, LOOM_LOG_WARN, NULL, "purging old jobs failed: %s", res->error);
    else if (res->count > 0)
        log_write(&d->log, LOOM_LOG_INFO, json_pack("{s:I}", "jobs", (json_int_t)res->count),
                  "purged jobs past their retention");
}

static void on_purge(reactor_t *r, reactor_timer_t *t, void *ud)
{
    loomd *d = ud;
    (void)t;
    int64_t before = store_now_ms() - (int64_t)d->cfg->retention_ms;
    (void)store_purge_finished(d->store, before, on_purge_done, d);
    d->purge_timer = reactor_timer_add(r, PURGE_EVERY_US, on_purge, d);
    gen_collect(d);
}

/* ---- start */

/* Forks; the parent waits for the child to say it is ready (a byte on a
 * pipe) and exits with its status (pointing at LOG_FILE, where the child's
 * reasons went, when it failed). Returns the pipe's write end in the
 * child, or -1 when it could not fork (and then runs in the foreground). */
static int detach(const char *log_file)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        char c = 1;
        ssize_t n = read(p[0], &c, 1);
        if (!(n == 1 && c == 0) && log_file) /* the child's reasons are there */
            fprintf(stderr, "loomd: did not start; see the log in %s\n", log_file);
        _exit(n == 1 && c == 0 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, 0);
        close(nul);
    }
    return p[1];
}

static config *load_config(const char *path)
{
    if (!path)
        return config_default();
    dsl_diags diags;
    dsl_diags_init(&diags, path);
    config *c = config_load(path, &diags);
    char *text = dsl_diags_text(&diags, NULL);
    fputs(text ? text : "loomd: out of memory while reporting errors\n", stderr);
    free(text);
    dsl_diags_free(&diags);
    return c;
}

/* Every part, in order. 0, or -1 with the reason logged. */
static int start(loomd *d, bool check)
{
    char err[512];
    if (!(d->r = reactor_new()) || !(d->pool = pool_new(d->r, d->cfg->workers)) ||
        !(d->plugins = plugins_new(NULL, NULL))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start: %s", strerror(errno));
        return -1;
    }
    plugins_set_level_log(d->plugins, log_plugins, d);
    plugins_set_trial_init(d->plugins, check);
    /* each plugin's configuration; isolated plugins' init runs in their
     * helpers (loomd_isolate.c), not here */
    if (config_plugins_attach(d->cfg, d->plugins, 0) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start: %s", strerror(ENOMEM));
        return -1;
    }
    if (plugins_add_builtins(d->plugins) < 0)
        return -1;
    /* a directory that cannot be read is reported by the loader */
    for (size_t i = 0; d->cfg->plugin_dirs && d->cfg->plugin_dirs[i]; i++)
        (void)plugins_load_dir(d->plugins, d->cfg->plugin_dirs[i]);
    (void)plugins_check_unused_configs(d->plugins); /* errors: --check fails on them */
    if (loomd_isolate_start(d, check) < 0)
        return -1;
    if (loomd_mcp_start(d, check) < 0) /* before the engines, which call them */
        return -1;
    if (gen_registry(d) < 0)
        return -1;
    wfdir_options wo = { .create = d->config_path == NULL };
    wfdir_callbacks wc = { .log = log_wfdir, .changed = check ? NULL : on_workflow_change, .ud = d };
    if (!(d->wf = wfdir_new(d->r, d->cfg->workflows, &d->reg, &wo, &wc, err, sizeof err))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "workflows: %s", err);
        return -1;
    }
    if (check) { /* the providers too: plugin names, options, keys readable */
        int rc = gen_start(d, d->cfg);
        return rc < 0 || plugins_errors(d->plugins) > 0 ? -1 : 0;
    }
    long nofile = http_raise_nofile();
    if (nofile > 0 && nofile < 4096)
        log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:I}", "limit", (json_int_t)nofile),
                  "the open-file limit is low: raise LimitNOFILE= for many calls in flight");
    if (gen_start(d, d->cfg) < 0)
        return -1;
    store_options_t store_opts = { 0 };
    if (faults_env_new(d->r, &d->log, &store_opts, &d->test_faults) < 0)
        return -1;
    loomd_store_options(d, &store_opts);
    if (!(d->store = store_open(d->cfg->state, d->r, &store_opts, err, sizeof err))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "state: %s", err);
        return -1;
    }
    if (loomd_local_state_prepare(d) < 0)
        return -1;
    if (loomd_limits_start(d) < 0) /* before any job runs: their calls share the limits */
        return -1;
    if (faults_env_start(d->test_faults) < 0)
        return -1;
    if (loomd_cost_start(d) < 0) /* before any job runs: their calls count */
        return -1;
    /* the endpoint before the socket: a port already taken stops the start
     * before any client is accepted (no scrape is answered before the
     * reactor runs) */
    if (loomd_metrics_start(d) < 0 || loomd_metrics_listen(d) < 0)
        return -1;
    jobs_hooks hooks = { .ud = d, .engine_acquire = gen_acquire, .engine_release = gen_release,
                         .settled = jobs_settled };
    loomd_metrics_hooks(d, &hooks);
    loomd_batch_hooks(d, &hooks);
    loomd_cluster_hooks(d, &hooks);
    if (jobs_init(&d->jobs, d->r, d->store, d->wf, &d->log, &hooks) < 0) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot start: %s", strerror(ENOMEM));
        return -1;
    }
    d->jobs_ready = true;
    /* provider batches are this daemon's own: with a shared store its
     * calls go direct (docs/scale-out.md) */
    if (loomd_trace_start(d) < 0 || (!loomd_shared(d) && loomd_batch_start(d) < 0))
        return -1;
    /* under the store's lock: one process at a time owns the file (with a
     * shared store: cluster.local_state, one daemon's own) */
    if (inflight_open(loomd_local_state(d), (unsigned)pool_nthreads(d->pool) + 1, &d->crashed, err,
                      sizeof err) < 0)
        log_write(&d->log, LOOM_LOG_WARN, NULL,
                  "poison-job quarantine is off until the next start: %s", err);
    d->jobs.crashed = &d->crashed;
    d->jobs.quarantine_after = d->cfg->quarantine_after;
    jobs_set_limits(&d->jobs, d->cfg->max_running_jobs, d->cfg->log_payloads);
    loomd_tenants_apply(d);
    d->jobs.max_queued = d->cfg->max_queued_jobs;
    d->jobs.max_output_bytes = d->cfg->max_output_bytes;
    server_options so = {
        .path = d->cfg->socket, .mode = d->cfg->socket_mode,
        .max_connections = (size_t)d->cfg->max_connections,
        .idle_timeout_us = d->cfg->idle_timeout_ms * REACTOR_MSEC,
        .max_per_uid = (size_t)d->cfg->max_connections_per_uid,
        .on_close = ops_conn_closed, .log = log_server, .log_ud = d,
    };
    if (!(d->srv = server_new(d->r, &so, ops_handle, d, err, sizeof err))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "socket: %s", err);
        return -1;
    }
    if (loomd_pidfile_start(d) < 0) /* only once the socket is ours */
        return -1;
    if (!(d->signals = loomd_signals_start(d))) {
        log_write(&d->log, LOOM_LOG_ERROR, NULL, "cannot watch signals: %s", strerror(errno));
        return -1;
    }
    d->purge_timer = reactor_timer_add(d->r, 0, on_purge, d);
    if (jobs_resume(&d->jobs) < 0)
        return -1;
    if (loomd_cluster_start(d) < 0) /* after its own jobs: then others' */
        return -1;
    return loomd_batch_resume(d);
}

static void report_abandoned(void *ud, const char *label)
{
    loomd *d = ud;
    log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:s?}", "call", label),
              "abandoned a call still running: %s (its job resumes at the next start)",
              label ? label : "(unnamed)");
}

/* Everything but the worker threads and what they may touch (the engines,
 * the plugins) is stopped; the store is closed, so every row is durable. When
 * a worker is stuck in a plugin call it cannot be taken back: the process
 * ends here without freeing what that thread may still read. */
static void stop_workers(loomd *d)
{
    if (!d->pool)
        return;
    int stuck = pool_stop(d->pool, STOP_WORKERS_MS, report_abandoned, d);
    if (stuck == 0)
        return;
    log_write(&d->log, LOOM_LOG_WARN, json_pack("{s:i}", "calls", stuck),
              "stopped with %d call%s still running", stuck, stuck == 1 ? "" : "s");
    inflight_mark_clean(); /* a stop, not a crash: their jobs are not to blame */
    _exit(d->exit_code);
}

static void stop(loomd *d)
{
    if (d->grace_timer)
        reactor_timer_cancel(d->r, d->grace_timer);
    if (d->purge_timer)
        reactor_timer_cancel(d->r, d->purge_timer);
    loomd_metrics_stop_http(d);
    loomd_cluster_stop(d); /* no more takeovers */
    if (d->jobs_ready)
        jobs_abandon(&d->jobs);
    loomd_batch_stop(d); /* before the store closes: it writes there */
    loomd_cost_detach(d); /* calls still answering no longer write to the store */
    /* the store's last completions answer waiters: let the server send them */
    store_close(d->store);
    faults_env_free(d->test_faults); /* the schedule outlives the store */
    for (int i = 0; d->srv && i < 20 && reactor_run_once(d->r, 5) > 0; i++)
        ;
    server_free(d->srv);
    if (d->jobs_ready)
        jobs_fini(&d->jobs);
    loomd_pidfile_stop(d); /* the socket is gone and every job is recorded */
    stop_workers(d);
    loomd_limits_stop(d); /* before the generations: it holds their limiters */
    gen_free_all(d);
    loomd_metrics_free(d); /* after the store's thread and the engines, which record */
    loomd_cost_free(d); /* after the engines, which hold it */
    loomd_trace_stop(d); /* after the engines: the spans of abandoned work go too */
    loomd_isolate_stop(d); /* after the engines: their calls are gone */
    loomd_mcp_stop(d); /* after the engines too */
    wfdir_free(d->wf);
    pool_free(d->pool);
    inflight_mark_clean(); /* every thread that ran plugin code is gone */
    inflight_close();
    inflight_prev_free(&d->crashed);
    plugins_free(d->plugins);
    loomd_signals_detach(d->signals); /* nothing is posted to a freed reactor */
    reactor_free(d->r);
    free(d->provider_names);
    free(d->lambda_sigs);
    config_free(d->cfg);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "foreground", no_argument, NULL, 'f' },
        { "check", no_argument, NULL, 'k' },        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
    };
    bool foreground = false, check = false;
    loomd d = { .log = { .level = LOOM_LOG_INFO, .fd = 2 } };
    int c;
    while ((c = getopt_long(argc, argv, "c:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': d.config_path = optarg; break;
        case 'f': foreground = true; break;
        case 'k': check = true; break;
        case 'V': printf("loomd %s\n", PACKAGE_VERSION); return 0;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loomd: unexpected argument '%s'\n%s", argv[optind], usage_text);
        return 2;
    }
    if (!(d.cfg = load_config(d.config_path)))
        return 1;
    d.log.level = d.cfg->log_level;
    d.log.json = d.cfg->log_format == CONFIG_LOG_JSON;
    int ready_fd = !foreground && !check ? detach(d.cfg->log_file.path) : -1;
    /* before any thread: stderr becomes the log file (loomd_files.c) */
    if (!check && loomd_log_start(&d) < 0) {
        config_free(d.cfg); /* nothing else is held yet */
        return 1;
    }
    /* before any thread starts, so that every thread inherits the mask and
     * only the signal thread takes them (loomd_signals.c) */
    sigset_t stop_signals;
    if (loomd_signals_block(&stop_signals) < 0) {
        fprintf(stderr, "loomd: cannot block signals: %s\n", strerror(errno));
        return 1;
    }
    /* a crash in plugin code is noted for the next start (inflight.h);
     * the reactor's thread gets the alternate stack the pool's have */
    (void)inflight_thread_init();
    if (!check && inflight_install_crash_handlers() < 0)
        fprintf(stderr, "loomd: cannot install the crash handlers: %s\n", strerror(errno));
    d.started_ms = store_now_ms();
    if (start(&d, check) < 0) {
        if (check)
            printf("loomd: config %s has errors\n", d.config_path ? d.config_path : "(defaults)");
        d.exit_code = 1;
        stop(&d);
        return 1;
    }
    if (check) {
        size_t bad = 0;
        wfdir_entry *v = NULL;
        size_t n = 0;
        if (wfdir_list(d.wf, &v, &n) == 0)
            for (size_t i = 0; i < n; i++)
                bad += v[i].error != NULL;
        wfdir_list_free(v, n);
        printf("loomd: config %s, %zu workflows, %zu with errors\n",
               d.config_path ? d.config_path : "(defaults)", wfdir_count(d.wf), bad);
        stop(&d);
        return bad ? 1 : 0;
    }
    char where[512]; /* a URI's password never reaches the log */
    store_location_redact(d.cfg->state, where, sizeof where);
    log_write(&d.log, LOOM_LOG_INFO,
              json_pack("{s:s, s:s, s:I, s:I}", "socket", d.cfg->socket, "state", where,
                        "workflows", (json_int_t)wfdir_count(d.wf), "resumed",
                        (json_int_t)(d.jobs.nqueue + d.jobs.nrunning)),
              "loomd %s ready", PACKAGE_VERSION);
    if (ready_fd >= 0) {
        char ok = 0;
        (void)!write(ready_fd, &ok, 1);
        close(ready_fd);
    }
    int rc = reactor_run(d.r);
    if (rc < 0)
        log_write(&d.log, LOOM_LOG_ERROR, NULL, "the event loop failed: %s", strerror(-rc));
    log_write(&d.log, LOOM_LOG_INFO, NULL, "stopped");
    d.exit_code = rc < 0 ? 1 : 0;
    stop(&d);
    return d.exit_code;
}
