/* test_loomd_cost.c -- cost and budgets in a real loomd against the fake
 * provider: a submit's or a workflow's budget stops a job with
 * budget_exceeded before its call is sent; each job's cost (cache tokens
 * priced as such) in get and list, the totals in stats; a tenant's daily
 * budget holds while many jobs race for it, and its spend survives a
 * restart; the anthropic plugin marks the system prompt cacheable. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/loomd_harness.h"

static lh_daemon D;

static void teardown(void)
{
    lh_teardown(&D);
}

static int truth(int x)
{
    return x != 0;
}

/* USD per million tokens of model m at the fake provider */
#define P_IN 1000.0
#define P_OUT 2000.0
#define P_READ 100.0
#define P_WRITE 1250.0
#define MAX_TOKENS 8
#define CACHE_READ 2

#define PRICED_WF                                                                                 \
    "loom: 1\nname: priced\ndo: { call: { provider: fake, model: m, prompt: '{{ input.text }}', " \
    "max_tokens: 8 } }\n"
#define CAPPED_WF                                                                                 \
    "loom: 1\nname: capped\nbudget: { usd: 0.001 }\n"                                             \
    "do: { call: { provider: fake, model: m, prompt: '{{ input.text }}', max_tokens: 8 } }\n"
#define UNPRICED_WF                                                                               \
    "loom: 1\nname: unpriced\ndo: { call: { provider: fake, model: other, prompt: hi } }\n"

static void start(const char *tenants, const char *latency)
{
    char extra[1024];
    snprintf(extra, sizeof extra,
             "  fake: { plugin: openai, base_url: \"@FAKE@\" }\n"
             "prices:\n"
             "  fake:\n"
             "    m: { input: %g, output: %g, cache_read: %g }\n"
             "%s",
             P_IN, P_OUT, P_READ, tenants ? tenants : "");
    char cr[16];
    snprintf(cr, sizeof cr, "%d", CACHE_READ);
    const char *args[] = { "--cache-read", cr, "--latency", latency, NULL };
    lh_setup(&D, extra, args);
    lh_workflow(&D, "priced", PRICED_WF);
    lh_workflow(&D, "capped", CAPPED_WF);
    lh_workflow(&D, "unpriced", UNPRICED_WF);
    lh_start(&D);
}

static json_t *call(const char *req)
{
    json_t *r = lh_call(&D, req, 20000);
    cr_assert(r, "no reply to %s", req);
    return r;
}

/* Submits WORKFLOW over TEXT (BUDGET: the submit's budget JSON, or NULL)
 * and waits: the job object. */
static json_t *run(const char *workflow, const char *text, const char *budget)
{
    char req[512];
    snprintf(req, sizeof req,
             "{\"op\":\"submit\",\"workflow\":\"%s\",\"input\":{\"text\":\"%s\"},\"wait\":true%s%s}",
             workflow, text, budget ? ",\"budget\":" : "", budget ? budget : "");
    json_t *r = call(req);
    json_t *job = json_incref(json_object_get(r, "result"));
    char *s = json_dumps(r, 0);
    cr_assert(job, "%s", s);
    free(s);
    json_decref(r);
    return job;
}

static const char *error_code(const json_t *job)
{
    return json_string_value(json_object_get(json_object_get(job, "error"), "code"));
}

/* The cost of one call at the fake's prices from its usage U. */
static double cost_of(const json_t *u)
{
    double in = (double)json_integer_value(json_object_get(u, "input_tokens"));
    double out = (double)json_integer_value(json_object_get(u, "output_tokens"));
    double rd = (double)json_integer_value(json_object_get(u, "cache_read_tokens"));
    return ((in - rd) * P_IN + rd * P_READ + out * P_OUT) / 1e6;
}

/* What the engine reserves for a call of `priced` over TEXT: its messages'
 * compact JSON / 4 + 1 input tokens, and max_tokens (docs/operations.md). */
static double estimate_of(const char *text)
{
    char msgs[256];
    int n = snprintf(msgs, sizeof msgs, "[{\"role\":\"user\",\"content\":\"%s\"}]", text);
    return ((double)(n / 4 + 1) * P_IN + MAX_TOKENS * P_OUT) / 1e6;
}

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

Test(cost, budgets_stop_a_job_before_its_call_is_sent, .fini = teardown)
{
    start(NULL, "0");
    /* 0.001 USD cannot pay for the estimate (8 output tokens alone cost 0.016) */
    json_t *job = run("priced", "hello world", "{\"usd\":0.001}");
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    cr_assert_str_eq(error_code(job), "budget_exceeded");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(job, "error"), "message")),
                     "budget"));
    cr_assert(truth(json_is_null(json_object_get(job, "cost"))), "no call, no cost");
    cr_assert(near(json_number_value(json_object_get(json_object_get(job, "budget"), "usd")),
                   0.001), "the budget is kept with the job");
    json_decref(job);
    /* the workflow's budget: the same */
    job = run("capped", "hello world", NULL);
    cr_assert_str_eq(error_code(job), "budget_exceeded");
    json_decref(job);
    cr_assert_eq(fake_server_stat(&D.fake, "requests"), 0, "a call was sent");
    /* a budget that is not {usd: N} is refused */
    json_t *r = call("{\"op\":\"submit\",\"workflow\":\"priced\",\"budget\":{\"usd\":-1}}");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                     "invalid_request");
    json_decref(r);
    r = call("{\"op\":\"submit\",\"workflow\":\"priced\",\"budget\":{\"eur\":1}}");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                     "invalid_request");
    json_decref(r);
    /* a budget it fits in: it runs */
    job = run("priced", "hello world", "{\"usd\":1}");
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded");
    cr_assert_eq(fake_server_stat(&D.fake, "requests"), 1);
    json_decref(job);
}

Test(cost, per_job_in_get_and_list_and_totals_in_stats, .fini = teardown)
{
    start(NULL, "0");
    json_t *job = run("priced", "hello cost", NULL);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded");
    const char *id = json_string_value(json_object_get(job, "id"));
    json_t *u = json_object_get(json_object_get(job, "usage"), "fake");
    cr_assert_eq(json_integer_value(json_object_get(u, "cache_read_tokens")), CACHE_READ);
    cr_assert_eq(json_integer_value(json_object_get(u, "cache_write_tokens")), 0);
    cr_assert(json_integer_value(json_object_get(u, "input_tokens")) >= CACHE_READ);
    double want = cost_of(u);
    cr_assert(want > 0);
    cr_assert(near(json_number_value(json_object_get(u, "cost_usd")), want), "usage cost %f, want %f",
              json_number_value(json_object_get(u, "cost_usd")), want);
    cr_assert(near(json_number_value(json_object_get(job, "cost")), want));
    char req[200];
    snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", id);
    json_t *g = call(req);
    cr_assert(near(json_number_value(json_object_get(json_object_get(g, "job"), "cost")), want));
    json_decref(g);
    json_t *l = call("{\"op\":\"list\"}");
    json_t *jobs = json_object_get(l, "jobs");
    size_t i;
    json_t *s;
    bool seen = false;
    json_array_foreach(jobs, i, s) {
        if (strcmp(json_string_value(json_object_get(s, "id")), id) == 0) {
            seen = true;
            cr_assert(near(json_number_value(json_object_get(s, "cost")), want));
        }
    }
    cr_assert(truth(seen), "the job is not in list");
    json_decref(l);
    /* a model no price names: its cost is unknown, never a guess */
    json_t *other = run("unpriced", "x", NULL);
    cr_assert_str_eq(json_string_value(json_object_get(other, "state")), "succeeded");
    cr_assert(truth(json_is_null(json_object_get(other, "cost"))));
    cr_assert_null(json_object_get(json_object_get(json_object_get(other, "usage"), "fake"),
                                   "cost_usd"));
    json_decref(other);
    json_t *st = call("{\"op\":\"stats\"}");
    json_t *cost = json_object_get(st, "cost");
    cr_assert(near(json_number_value(json_object_get(cost, "usd")), want));
    cr_assert(near(json_number_value(json_object_get(json_object_get(cost, "by_workflow"), "priced")),
                   want));
    cr_assert_null(json_object_get(json_object_get(cost, "by_workflow"), "unpriced"));
    cr_assert(near(json_number_value(json_object_get(json_object_get(cost, "by_provider"), "fake")),
                   want));
    cr_assert(near(json_number_value(json_object_get(json_object_get(cost, "by_tenant"), "default")),
                   want));
    json_decref(st);
    json_decref(job);
}

/* Many jobs submitted at once race for one tenant's budget of the day. The
 * fake's latency keeps them in flight together, so only reservations stand
 * between them and the budget. Spending may pass it only by what calls cost
 * over their estimates: summed over every call here, which the prompt sizes
 * make 0. */
Test(cost, racing_jobs_never_pass_a_tenant_budget_and_it_survives_a_restart, .fini = teardown)
{
    enum { JOBS = 40 };
    const double limit = 0.2;
    start("tenants:\n  default: { budget: { usd_per_day: 0.2 } }\n", "200");
    int ev = lh_subscribe(&D);
    int fd = lh_connect(&D);
    cr_assert(ev >= 0 && fd >= 0);
    char ids[JOBS][40], texts[JOBS][32];
    for (int i = 0; i < JOBS; i++) {
        char req[200];
        snprintf(texts[i], sizeof texts[i], "racing job %04d", i);
        snprintf(req, sizeof req,
                 "{\"id\":%d,\"op\":\"submit\",\"workflow\":\"priced\",\"input\":{\"text\":\"%s\"}}",
                 i, texts[i]);
        lh_send(fd, req);
    }
    for (int i = 0; i < JOBS; i++) {
        json_t *r = lh_recv(fd, 20000);
        cr_assert(r && json_object_get(r, "job"), "submit %d", i);
        int k = (int)json_integer_value(json_object_get(r, "id"));
        cr_assert(k >= 0 && k < JOBS);
        snprintf(ids[k], sizeof ids[k], "%s", json_string_value(json_object_get(r, "job")));
        json_decref(r);
    }
    for (int i = 0; i < JOBS; i++) {
        json_t *e = lh_wait_event(ev, "job_finished", NULL, 60000);
        cr_assert(e, "%d of %d jobs finished", i, JOBS);
        json_decref(e);
    }
    double spent = 0, over = 0;
    int ok = 0, stopped = 0;
    for (int i = 0; i < JOBS; i++) {
        char req[2048];
        snprintf(req, sizeof req, "{\"op\":\"get\",\"job\":\"%s\"}", ids[i]);
        json_t *g = call(req);
        json_t *job = json_object_get(g, "job");
        const char *state = json_string_value(json_object_get(job, "state"));
        if (strcmp(state, "succeeded") == 0) {
            double c = json_number_value(json_object_get(job, "cost"));
            double est = estimate_of(texts[i]);
            spent += c;
            over += c > est ? c - est : 0;
            ok++;
        } else {
            cr_assert_str_eq(error_code(job), "budget_exceeded");
            cr_assert(truth(json_is_null(json_object_get(job, "cost"))));
            stopped++;
        }
        json_decref(g);
    }
    cr_assert(ok > 0 && stopped > 0, "%d ran, %d stopped: the budget did not bind", ok, stopped);
    cr_assert(spent <= limit + over + 1e-9, "spent %.6f of %.2f (+ %.6f over estimates)", spent,
              limit, over);
    cr_assert_eq(fake_server_stat(&D.fake, "requests"), ok, "a stopped job's call was sent");
    json_t *st = call("{\"op\":\"stats\"}");
    json_t *b = json_object_get(json_object_get(json_object_get(st, "cost"), "budgets"), "default");
    cr_assert(near(json_number_value(json_object_get(b, "day_usd")), spent));
    cr_assert(near(json_number_value(json_object_get(b, "usd_per_day")), limit));
    char day[16];
    snprintf(day, sizeof day, "%s", json_string_value(json_object_get(b, "day")));
    json_decref(st);
    close(fd);
    close(ev);

    /* a restart keeps the day's spend: the counters since start are empty,
     * the budget is not */
    cr_assert_eq(lh_stop(&D, SIGTERM), 0);
    lh_start(&D);
    st = call("{\"op\":\"stats\"}");
    b = json_object_get(json_object_get(json_object_get(st, "cost"), "budgets"), "default");
    cr_assert(b, "no budget state after the restart");
    if (strcmp(json_string_value(json_object_get(b, "day")), day) == 0) /* not past midnight */
        cr_assert(near(json_number_value(json_object_get(b, "day_usd")), spent),
                  "after the restart %.6f, before %.6f",
                  json_number_value(json_object_get(b, "day_usd")), spent);
    cr_assert(near(json_number_value(json_object_get(json_object_get(st, "cost"), "usd")), 0));
    json_decref(st);
}

Test(cost, anthropic_prompt_cache_marks_and_prices_cache_tokens, .fini = teardown)
{
    cr_assert_eq(setenv("LOOM_TEST_COST_KEY", "sk-test-cost", 1), 0);
    const char *args[] = { "--cache-read", "3", "--cache-write", "2", NULL };
    lh_setup(&D,
             "  claude: { plugin: anthropic, base_url: \"@FAKE@\", model: claude-test,\n"
             "            api_key_env: LOOM_TEST_COST_KEY }\n"
             "prices:\n"
             "  claude:\n"
             "    '*': { input: 1000, output: 2000, cache_read: 100, cache_write: 1250 }\n",
             args);
    lh_workflow(&D, "cached",
                "loom: 1\nname: cached\nprompt_cache: true\n"
                "do: { call: { provider: claude, system: 'You answer briefly and politely.', "
                "prompt: '{{ input.text }}' } }\n");
    lh_workflow(&D, "plain",
                "loom: 1\nname: plain\n"
                "do: { call: { provider: claude, system: 'You answer briefly.', prompt: hi } }\n");
    lh_start(&D);
    json_t *job = run("cached", "a question of some length", NULL);
    char *dump = json_dumps(job, 0);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded", "%s", dump);
    free(dump);
    cr_assert_eq(fake_server_stat(&D.fake, "cache_marked"), 1);
    json_t *u = json_object_get(json_object_get(job, "usage"), "claude");
    int64_t in = json_integer_value(json_object_get(u, "input_tokens"));
    int64_t out = json_integer_value(json_object_get(u, "output_tokens"));
    cr_assert_eq(json_integer_value(json_object_get(u, "cache_read_tokens")), 3);
    cr_assert_eq(json_integer_value(json_object_get(u, "cache_write_tokens")), 2);
    cr_assert(in >= 5, "input_tokens counts the cached ones too: %lld", (long long)in);
    double want = ((double)(in - 5) * 1000 + 3 * 100.0 + 2 * 1250.0 + (double)out * 2000) / 1e6;
    cr_assert(near(json_number_value(json_object_get(job, "cost")), want), "cost %f, want %f",
              json_number_value(json_object_get(job, "cost")), want);
    json_decref(job);
    job = run("plain", "x", NULL);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded");
    cr_assert_eq(fake_server_stat(&D.fake, "cache_marked"), 1, "not asked: not marked");
    json_decref(job);
}
