/* test_config.c -- the daemon's configuration file: defaults, every key,
 * and the errors a user gets for a bad file. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"
#include "daemon/plugins/plugins.h"
#include "loom/plugin.h"

Test(config, defaults_run_offline)
{
    config *c = config_default();
    cr_assert(c != NULL);
    cr_expect(eq(str, c->socket, "./loom.sock"));
    cr_expect(eq(str, c->workflows, "./workflows"));
    cr_expect(eq(str, c->state, "./loom-state"));
    cr_expect(eq(u32, c->socket_mode, 0660));
    cr_expect(eq(int, c->log_level, LOOM_LOG_INFO));
    const config_provider *p = config_find_provider(c, "default");
    cr_assert(p != NULL);
    cr_expect(eq(str, p->plugin, "mock"));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(p->options, "latency")), "20ms"));
    config_free(c);
}

Test(config, empty_file_is_the_defaults)
{
    ct_parsed p = ct_parse("");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(config_find_provider(p.c, "default") != NULL);
    ct_done(&p);
}

Test(config, every_key)
{
    ct_parsed p = ct_parse("socket: /run/loom/loom.sock\n"
                     "socket_mode: \"0600\"\n"
                     "workflows: /etc/loom/workflows\n"
                     "plugins: [/usr/lib/loom/plugins, /opt/loom]\n"
                     "state: /var/lib/loom\n"
                     "workers: 4\n"
                     "log: { level: debug, format: json }\n"
                     "providers:\n"
                     "  fast:\n"
                     "    plugin: openai\n"
                     "    base_url: http://127.0.0.1:8080/v1\n"
                     "    api_key_env: OPENAI_API_KEY\n"
                     "    model: gpt-4o-mini\n"
                     "    limits: { rpm: 500, tpm: 200000, concurrency: 64 }\n"
                     "  embedder:\n"
                     "    plugin: openai\n"
                     "    batch: { max_inputs: 2048, window: 5ms }\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    config *c = p.c;
    cr_expect(eq(str, c->socket, "/run/loom/loom.sock"));
    cr_expect(eq(u32, c->socket_mode, 0600));
    cr_expect(eq(str, c->plugin_dirs[1], "/opt/loom"));
    cr_expect(c->plugin_dirs[2] == NULL);
    cr_expect(eq(int, c->workers, 4));
    cr_expect(eq(int, c->log_level, LOOM_LOG_DEBUG));
    cr_expect(c->log_format == CONFIG_LOG_JSON);
    cr_expect(eq(sz, c->nproviders, 2));
    cr_expect(config_find_provider(c, "default") == NULL, "a providers list replaces the default");
    const config_provider *f = config_find_provider(c, "fast");
    cr_assert(f != NULL);
    cr_expect(eq(str, f->plugin, "openai"));
    cr_expect(eq(i64, f->limits.rpm, 500));
    cr_expect(eq(i64, f->limits.concurrency, 64));
    cr_expect(eq(str, (char *)json_string_value(json_object_get(f->options, "model")), "gpt-4o-mini"));
    cr_expect(json_object_get(f->options, "limits") == NULL);
    cr_expect(json_object_get(f->options, "plugin") == NULL);
    const config_provider *e = config_find_provider(c, "embedder");
    cr_expect(eq(i64, e->batch_max_inputs, 2048));
    cr_expect(eq(u64, e->batch_window_ms, 5));
    const char **names = config_provider_names(c);
    cr_expect(eq(str, (char *)names[0], "fast"));
    cr_expect(eq(str, (char *)names[1], "embedder"));
    cr_expect(names[2] == NULL);
    free(names);
    ct_done(&p);
}

Test(config, all_errors_in_one_pass)
{
    ct_parsed p = ct_parse("sokcet: x\n"
                     "socket_mode: 660\n"
                     "workers: -1\n"
                     "log: { level: loud, format: xml }\n"
                     "providers:\n"
                     "  a: { limits: { rpm: 0, burst: 3 } }\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "1:1: error: unknown key 'sokcet' in config; did you mean 'socket'?\n"
                 "2:14: error: 'socket_mode' must be octal permissions in quotes, e.g. \"0660\"\n"
                 "3:10: error: 'workers' must be from 0 to 1024, got -1\n"
                 "4:15: error: 'level' must be error, warn, info or debug\n"
                 "4:29: error: 'format' must be text or json\n"
                 "6:6: error: missing required key 'plugin' in provider 'a'\n"
                 "6:23: error: 'rpm' must be from 1 to 1000000000000, got 0\n"
                 "6:26: error: unknown key 'burst' in limits\n"));
    ct_done(&p);
}

Test(config, api_key_value_is_refused)
{
    ct_parsed p = ct_parse("providers:\n  x: { plugin: openai, api_key: sk-secret }\n");
    cr_assert(p.c == NULL);
    const char *out = ct_dump(&p, true);
    cr_expect(strstr(out, "2:24: error: an API key does not belong in the config") != NULL, "%s", out);
    cr_expect(strstr(out, "sk-secret") == NULL, "a secret never reaches a message");
    ct_done(&p);
}

Test(config, wrong_shapes)
{
    ct_parsed p = ct_parse("- a\n- b\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true), "1:1: error: a config must be a mapping, got a sequence\n"));
    ct_done(&p);
    p = ct_parse("providers: [a]\nplugins: x\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "1:12: error: 'providers' must be a mapping of names to providers, got a sequence\n"
                 "2:10: error: 'plugins' must be a list of directories, got a string\n"));
    ct_done(&p);
}

Test(config, yaml_syntax_error_has_a_position)
{
    ct_parsed p = ct_parse("socket: [unclosed\n");
    cr_assert(p.c == NULL);
    cr_expect(p.d.n >= 1);
    cr_expect(p.d.v[0].line >= 1);
    ct_done(&p);
}

Test(config, load_missing_file)
{
    dsl_diags d;
    dsl_diags_init(&d, "nope.yaml");
    config *c = config_load("/nonexistent/loom/nope.yaml", &d);
    cr_assert(c == NULL);
    char *s = dsl_diag_format(&d, 0);
    cr_expect(eq(str, s, "nope.yaml: error: cannot read: No such file or directory"));
    free(s);
    dsl_diags_free(&d);
}

Test(config, daemon_keys_and_their_errors)
{
    ct_parsed p = ct_parse("retention: 30d\nshutdown_grace: 5s\nmax_running_jobs: 8\n"
                     "providers:\n  x: { plugin: openai, batch: false,"
                     " timeouts: { connect: 2s, first_byte: 10s, total: 1m } }\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(eq(u64, p.c->retention_ms, 30ull * 86400000ull));
    cr_expect(eq(u64, p.c->shutdown_grace_ms, 5000));
    cr_expect(eq(i64, p.c->max_running_jobs, 8));
    cr_expect(eq(i64, p.c->providers[0].batch_max_inputs, -1));
    cr_expect(eq(u64, p.c->providers[0].timeout_first_byte_ms, 10000));
    ct_done(&p);
    p = ct_parse("retention: 7 days\nproviders:\n  x: { plugin: openai, timeouts: { connect: soon, idle: 1s } }\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "1:12: error: 'retention' must be a duration in days, hours or minutes such as 30d, 12h or 90m\n"
                 "3:45: error: 'connect' must be a duration such as 5ms or 30s\n"
                 "3:51: error: unknown key 'idle' in timeouts\n"), "%s", ct_dump(&p, true));
    ct_done(&p);
}

Test(config, client_limits_have_defaults_and_ranges)
{
    config *c = config_default();
    cr_assert(c != NULL);
    cr_expect(eq(i64, c->max_output_bytes, CONFIG_DEFAULT_MAX_OUTPUT_BYTES));
    cr_expect(eq(i64, c->max_queued_jobs, 100000));
    cr_expect(eq(i64, c->max_pending_per_connection, 4096));
    cr_expect(eq(u64, c->idle_timeout_ms, 300000));
    cr_expect(eq(i64, c->max_connections_per_uid, 1024));
    config_free(c);
    ct_parsed p = ct_parse("max_output_bytes: 1024\nmax_queued_jobs: 5\nmax_pending_per_connection: 2\n"
                     "idle_timeout: 0s\nmax_connections_per_uid: 3\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(eq(i64, p.c->max_output_bytes, 1024));
    cr_expect(eq(i64, p.c->max_queued_jobs, 5));
    cr_expect(eq(i64, p.c->max_pending_per_connection, 2));
    cr_expect(eq(u64, p.c->idle_timeout_ms, 0));
    cr_expect(eq(i64, p.c->max_connections_per_uid, 3));
    ct_done(&p);
    /* the output cap stays under what one reply can carry */
    p = ct_parse("max_output_bytes: 33554433\nmax_queued_jobs: 0\nmax_connections_per_uid: -1\n");
    cr_assert(p.c == NULL);
    cr_expect(strstr(ct_dump(&p, true), "max_output_bytes") != NULL, "%s", ct_dump(&p, true));
    cr_expect(strstr(ct_dump(&p, true), "max_queued_jobs") != NULL, "%s", ct_dump(&p, true));
    cr_expect(strstr(ct_dump(&p, true), "max_connections_per_uid") != NULL, "%s", ct_dump(&p, true));
    ct_done(&p);
}

/* ---- plugins.config: each plugin's own configuration, kept as JSON with
 * the positions of its entry and keys; checked against the plugin's
 * options by the loader, with messages placed in this file */

static const char plugin_cfg[] =
    "plugins:\n"
    "  dirs: [/a]\n"
    "  config:\n"
    "    greeter:\n"
    "      greeting: Hi\n"
    "      shout: true\n"
    "    bare:\n";

Test(config, plugin_entries_are_kept_with_their_positions)
{
    ct_parsed p = ct_parse(plugin_cfg);
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(eq(str, p.c->plugin_dirs[0], "/a"));
    char *text = json_dumps(p.c->plugin_configs.configs, JSON_SORT_KEYS | JSON_COMPACT);
    cr_expect(eq(str, text, "{\"bare\":{},\"greeter\":{\"greeting\":\"Hi\",\"shout\":true}}"));
    free(text);
    p.c->file = strdup("c.yaml");
    cr_assert(p.c->file != NULL);
    char pos[64];
    config_plugins_where(p.c, "greeter", "shout", pos, sizeof pos);
    cr_expect(eq(str, pos, "c.yaml:6:7"));
    config_plugins_where(p.c, "greeter", NULL, pos, sizeof pos);
    cr_expect(eq(str, pos, "c.yaml:4:5"));
    config_plugins_where(p.c, "greeter", "nope", pos, sizeof pos);
    cr_expect(eq(str, pos, "c.yaml:4:5"));
    config_plugins_where(p.c, "bare", "x", pos, sizeof pos);
    cr_expect(eq(str, pos, "c.yaml:7:5"));
    config_plugins_where(p.c, "absent", NULL, pos, sizeof pos);
    cr_expect(eq(str, pos, "c.yaml"));
    ct_done(&p);
}

Test(config, plugins_list_form_still_works)
{
    ct_parsed p = ct_parse("plugins: [/a, /b]\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(eq(str, p.c->plugin_dirs[1], "/b"));
    cr_expect(eq(sz, p.c->plugin_configs.n, 0));
    cr_expect(eq(ptr, p.c->plugin_configs.configs, NULL));
    ct_done(&p);
}

Test(config, plugin_config_shapes)
{
    ct_parsed p = ct_parse("plugins:\n  confg: {}\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true), "2:3: error: unknown key 'confg' in plugins; did you mean 'config'?\n"));
    ct_done(&p);
    p = ct_parse("plugins:\n  config: [a]\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "2:11: error: 'config' must be a mapping of plugin names to their options, got a sequence\n"));
    ct_done(&p);
    p = ct_parse("plugins:\n  config:\n    greeter: 5\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "3:14: error: 'greeter' must be a mapping of the plugin's options, got a number\n"));
    ct_done(&p);
}

/* The loader's side: a registry given the ct_parsed config reports each
 * problem at its place in the file. */
typedef struct cfg_lines {
    char v[8][600];
    int n;
} cfg_lines;

static void cfg_collect(void *ud, const char *line)
{
    cfg_lines *l = ud;
    if (l->n < 8)
        snprintf(l->v[l->n++], sizeof l->v[0], "%s", line);
}

static const loom_option greeter_opts[] = {
    { .name = "greeting", .type = LOOM_OPT_STRING, .default_value = "Hello" },
    { .name = "shout", .type = LOOM_OPT_BOOL },
    { .name = "model", .type = LOOM_OPT_STRING, .required = 1 },
    { .name = NULL },
};
static const loom_plugin greeter_desc = { LOOM_PLUGIN_HEADER, .name = "greeter",
                                          .options = greeter_opts };

/* Loads the greeter with the config TEXT: 0 or -1, its lines in *L. */
static int load_greeter(const char *text, cfg_lines *l, int *unused)
{
    ct_parsed p = ct_parse(text);
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    p.c->file = strdup("c.yaml");
    cr_assert(p.c->file != NULL);
    plugins_t *reg = plugins_new(cfg_collect, l);
    cr_assert(reg != NULL);
    cr_assert(eq(int, config_plugins_attach(p.c, reg, 1), 0));
    int rc = plugins_add(reg, &greeter_desc, "built-in", NULL);
    *unused = plugins_check_unused_configs(reg);
    plugins_free(reg);
    ct_done(&p);
    return rc;
}

Test(config, plugin_entries_are_checked_at_their_positions)
{
    cfg_lines l = { 0 };
    int unused;
    cr_expect(eq(int, load_greeter("plugins:\n  config:\n    greeter:\n      model: m\n", &l,
                                   &unused), 0));
    cr_expect(eq(int, l.n, 0), "%s", l.v[0]);

    memset(&l, 0, sizeof l);
    cr_expect(eq(int, load_greeter("plugins:\n  config:\n    greeter:\n      model: m\n"
                                   "      gretting: Hi\n", &l, &unused), -1));
    cr_expect(eq(str, l.v[0], "c.yaml:5:7: error: plugins.config.greeter: unknown option "
                              "'gretting'; did you mean 'greeting'?"));

    memset(&l, 0, sizeof l);
    cr_expect(eq(int, load_greeter("plugins:\n  config:\n    greeter:\n      model: m\n"
                                   "      shout: loud\n", &l, &unused), -1));
    cr_expect(eq(str, l.v[0], "c.yaml:5:7: error: plugins.config.greeter: option 'shout' must be "
                              "true or false, not a string"));

    memset(&l, 0, sizeof l);
    cr_expect(eq(int, load_greeter("plugins:\n  config:\n    greeter:\n      shout: true\n", &l,
                                   &unused), -1));
    cr_expect(eq(str, l.v[0], "c.yaml:3:5: error: plugins.config.greeter: missing required "
                              "option 'model' (a string)"));

    /* an entry for a plugin nobody loads, and none at all for greeter */
    memset(&l, 0, sizeof l);
    cr_expect(eq(int, load_greeter("plugins:\n  config:\n    gretter: {}\n", &l, &unused), -1));
    cr_expect(eq(int, unused, 1));
    cr_expect(eq(str, l.v[0], "c.yaml: error: plugins.config.greeter: missing required option "
                              "'model' (a string)"));
    cr_expect(eq(str, l.v[1], "c.yaml:3:5: error: plugins.config.gretter: no plugin 'gretter' is "
                              "loaded; did you mean 'greeter'?"));
}

Test(config, log_file_and_pid_file_keep_their_positions)
{
    ct_parsed p = ct_parse("log: { level: warn, file: /var/log/loom/loomd.log }\n"
                     "pid_file: /run/loom/loomd.pid\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(eq(str, p.c->log_file.path, "/var/log/loom/loomd.log"));
    cr_expect(eq(int, p.c->log_file.line, 1));
    cr_expect(eq(int, p.c->log_file.col, 27));
    cr_expect(eq(str, p.c->pid_file.path, "/run/loom/loomd.pid"));
    cr_expect(eq(int, p.c->pid_file.line, 2));
    cr_expect(eq(int, p.c->pid_file.col, 11));
    ct_done(&p);
    /* neither is set by default: stderr, and no pid file */
    p = ct_parse("socket: ./x.sock\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    cr_expect(p.c->log_file.path == NULL);
    cr_expect(p.c->pid_file.path == NULL);
    ct_done(&p);
    p = ct_parse("log: { file: [a, b], fiel: x }\npid_file: 42\npidfile: x\n");
    cr_assert(p.c == NULL);
    cr_expect(eq(str, (char *)ct_dump(&p, true),
                 "1:14: error: 'file' must be a non-empty string, got a sequence\n"
                 "1:22: error: unknown key 'fiel' in log; did you mean 'file'?\n"
                 "2:11: error: 'pid_file' must be a non-empty string, got a number\n"
                 "3:1: error: unknown key 'pidfile' in config; did you mean 'pid_file'?\n"),
              "%s", ct_dump(&p, true));
    ct_done(&p);
}

Test(config, provider_batch_api_settings_and_their_errors)
{
    ct_parsed p = ct_parse("providers:\n"
                           "  x: { plugin: openai, batch_api: { window: 30s, deadline: 24h,"
                           " maps_over: 100, fallback_direct: true, poll_min: 1s, poll_max: 2m,"
                           " max_lines: 500, max_bytes: 1000000 } }\n"
                           "  y: { plugin: openai, batch_api: false }\n"
                           "  z: { plugin: openai }\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, true));
    const upstream_batch_api *b = &p.c->providers[0].batch_api;
    cr_expect(eq(u64, b->window_ms, 30000));
    cr_expect(eq(u64, b->deadline_ms, 86400000));
    cr_expect(eq(i64, b->maps_over, 100));
    cr_expect(eq(int, b->fallback_direct, 1));
    cr_expect(eq(u64, b->poll_min_ms, 1000));
    cr_expect(eq(u64, b->poll_max_ms, 120000));
    cr_expect(eq(i64, b->max_lines, 500));
    cr_expect(eq(i64, b->max_bytes, 1000000));
    cr_expect(p.c->providers[1].batch_api.off);
    cr_expect(p.c->providers[2].batch_api.off == false);
    cr_expect(eq(u64, p.c->providers[2].batch_api.window_ms, 0), "0: the default, filled in later");
    cr_expect(json_object_get(p.c->providers[0].options, "batch_api") == NULL,
              "batch_api is the daemon's, not the plugin's");
    ct_done(&p);
    p = ct_parse("providers:\n"
                 "  x: { plugin: openai, batch_api: { window: 0s, poll_min: 5s, poll_max: 1s,"
                 " max_lines: 0, fallback_direct: maybe, windw: 1s } }\n"
                 "  y: { plugin: openai, batch_api: yes please }\n");
    cr_assert(p.c == NULL);
    const char *dump = ct_dump(&p, true);
    cr_expect(strstr(dump, "unknown key 'windw' in batch_api") != NULL, "%s", dump);
    cr_expect(strstr(dump, "did you mean 'window'") != NULL, "%s", dump);
    cr_expect(strstr(dump, "'window' must be longer than 0") != NULL, "%s", dump);
    cr_expect(strstr(dump, "'poll_max' must not be shorter than 'poll_min'") != NULL, "%s", dump);
    cr_expect(strstr(dump, "'max_lines' must be from 1") != NULL, "%s", dump);
    cr_expect(strstr(dump, "'fallback_direct' must be true or false") != NULL, "%s", dump);
    cr_expect(strstr(dump, "batch_api") != NULL && strstr(dump, "a mapping or false") != NULL,
              "%s", dump);
    ct_done(&p);
}
