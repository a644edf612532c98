/* test_engine_http.c -- whole workflows over real HTTP: the engine with the
 * built-in openai provider against the fake provider server. Retries and
 * Retry-After, quota never retried, node timeouts cancelling HTTP calls,
 * a map's embeddings coalesced, token usage reaching the job. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/providers.h"
#include "tests/unit/engine_testlib.h"
#include "tests/unit/fake_server.h"

#define HDR "loom: 1\nname: t\ndefaults: { provider: llm, model: m1 }\n"

static fake_server srv;

static void teardown(void)
{
    et_teardown();
    fake_server_stop(&srv);
}

/* The world of engine_testlib plus provider `llm` at a fake server started
 * with ARGS and limited by LIMITS (may be NULL). */
static void setup(const char *const *args, const config_limits *limits)
{
    et_setup();
    cr_assert_eq(plugins_add_builtins(ET.plugins), 0);
    cr_assert_eq(fake_server_start(&srv, args), 0);
    char url[64], err[512];
    json_t *opts = json_pack("{s:s}", "base_url", fake_server_base_url(&srv, url, sizeof url));
    config_provider cp = { .name = "llm", .plugin = "openai", .options = opts,
                           .batch_window_ms = 10 };
    if (limits)
        cp.limits = *limits;
    cr_assert_eq(providers_add(ET.providers, ET.eng, &cp, err, sizeof err), 0, "%s", err);
    json_decref(opts);
}

static json_t *items(int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(i));
    return a;
}

static char *dump(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return s;
}

Test(engine_http, map_of_calls_with_usage, .fini = teardown)
{
    setup((const char *const[]){ "--latency", "20", NULL }, &(config_limits){ .concurrency = 8 });
    char *in = dump(items(40));
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 16, do: { call: 'item {{ item }}' } } }\n",
           in, NULL, &r);
    free(in);
    cr_assert(r.output, "%s", et_code(&r));
    cr_assert_eq(json_array_size(r.output), 40);
    cr_assert(strstr(json_string_value(json_array_get(r.output, 17)), "item 17"));
    cr_assert_leq(fake_server_stat(&srv, "max_in_flight"), 8);
    cr_assert_eq(fake_server_stat(&srv, "chat"), 40);
    json_t *u = json_object_get(r.usage, "llm");
    cr_assert_eq(json_integer_value(json_object_get(u, "calls")), 40);
    cr_assert_gt(json_integer_value(json_object_get(u, "input_tokens")), 40);
    cr_assert_gt(json_integer_value(json_object_get(u, "output_tokens")), 40);
    et_result_free(&r);
}

Test(engine_http, transient_errors_are_retried, .fini = teardown)
{
    setup((const char *const[]){ "--fault", "500", "--fault-every", "2", NULL }, NULL);
    char *in = dump(items(10));
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 1, do: { call: 'x{{ item }}',"
               " retry: { max_attempts: 4, initial_delay: 5ms } } } }\n", in, NULL, &r);
    free(in);
    cr_assert(r.output, "%s", et_code(&r));
    long reqs = fake_server_stat(&srv, "chat");
    cr_assert_geq(reqs, 15, "every other answer was a 500: %ld requests", reqs);
    et_result_free(&r);
}

Test(engine_http, retry_after_is_honoured, .fini = teardown)
{
    /* 529 answers carry retry-after: 1 */
    setup((const char *const[]){ "--fault", "529", "--fault-every", "2", NULL }, NULL);
    et_result r;
    et_run(HDR "do: { chain: [ { call: a }, { call: b, retry: { max_attempts: 2, initial_delay: 1ms, max_delay: 5ms } } ] }\n",
           "1", NULL, &r);
    cr_assert(r.output, "%s", et_code(&r));
    cr_assert_geq(r.elapsed_us, 950000, "waited %llu us", (unsigned long long)r.elapsed_us);
    et_result_free(&r);
}

Test(engine_http, quota_is_never_retried, .fini = teardown)
{
    setup((const char *const[]){ "--fault", "quota", NULL }, NULL);
    et_result r;
    et_run(HDR "do: { call: a, retry: { max_attempts: 5, initial_delay: 1ms } }\n", "1", NULL, &r);
    cr_assert_null(r.output);
    cr_assert_str_eq(et_code(&r), "quota");
    cr_assert_eq(json_integer_value(json_object_get(r.error, "attempts")), 1);
    cr_assert_eq(fake_server_stat(&srv, "requests"), 1);
    et_result_free(&r);
}

Test(engine_http, node_timeout_cancels_the_http_call, .fini = teardown)
{
    setup((const char *const[]){ "--latency", "3000", NULL }, NULL);
    et_result r;
    et_run(HDR "do: { call: a, timeout: 200ms }\n", "1", NULL, &r);
    cr_assert_str_eq(et_code(&r), "timeout");
    cr_assert_lt(r.elapsed_us, 2000000);
    et_result_free(&r);
}

Test(engine_http, map_of_embeddings_is_coalesced, .fini = teardown)
{
    setup(NULL, NULL);
    json_t *a = json_array();
    for (int i = 0; i < 300; i++) {
        char s[32];
        snprintf(s, sizeof s, "chunk %d", i);
        json_array_append_new(a, json_string(s));
    }
    char *in = dump(a);
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 300, do: { embed: { input: '{{ item }}' } } } }\n",
           in, NULL, &r);
    free(in);
    cr_assert(r.output, "%s", et_code(&r));
    cr_assert_eq(json_array_size(r.output), 300);
    cr_assert(json_is_array(json_array_get(r.output, 299)), "one vector per item");
    long reqs = fake_server_stat(&srv, "embeddings");
    cr_log_info("300 embed calls: %ld HTTP requests", reqs);
    cr_assert_leq(reqs, 3, "%ld requests", reqs);
    cr_assert_eq(fake_server_stat(&srv, "embedding_inputs"), 300);
    et_result_free(&r);
}

/* Inputs waiting in the coalescer do not count against the job's cap on
 * leaves in flight (1,024 by default): one job's 5,000 single embeddings
 * fill whole requests of the provider's max_batch. */
Test(engine_http, coalesced_embeddings_do_not_count_against_max_in_flight, .fini = teardown)
{
    setup(NULL, NULL);
    enum { N = 5000, MAX_BATCH = 2048 };
    json_t *a = json_array();
    for (int i = 0; i < N; i++) {
        char s[32];
        snprintf(s, sizeof s, "chunk %d", i);
        json_array_append_new(a, json_string(s));
    }
    char *in = dump(a);
    et_result r;
    et_run(HDR "do: { map: { over: '{{ input }}', max_concurrency: 5000, do: { embed: { input: '{{ item }}' } } } }\n",
           in, NULL, &r);
    free(in);
    cr_assert(r.output, "%s", et_code(&r));
    cr_assert_eq(json_array_size(r.output), N);
    cr_assert_eq(fake_server_stat(&srv, "embedding_inputs"), N);
    cr_assert_eq(fake_server_stat(&srv, "embeddings"), (N + MAX_BATCH - 1) / MAX_BATCH);
    et_result_free(&r);
}

Test(engine_http, cancelling_a_job_withdraws_its_calls, .fini = teardown)
{
    setup((const char *const[]){ "--latency", "2000", NULL }, &(config_limits){ .concurrency = 2 });
    dsl_graph *g = et_compile(HDR "do: { map: { over: '{{ input }}', do: { call: x } } }\n");
    json_t *in = items(10);
    et_result r = { 0 };
    engine_job_t *job = engine_submit(ET.eng, g, in, NULL, et_done, &r);
    cr_assert(job);
    for (int i = 0; i < 20; i++)
        reactor_run_once(ET.r, 10);
    engine_cancel(job);
    cr_assert(r.done);
    cr_assert_str_eq(et_code(&r), "cancelled");
    json_decref(in);
    dsl_graph_unref(g);
    et_result_free(&r);
}
