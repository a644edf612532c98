/* test_cost.c -- prices, a call's cost, and budgets, unit by unit: the
 * `prices` section of the config (and its errors at their positions), the
 * cost arithmetic (cache tokens, "*" models, unpriced models), the ledger's
 * reservations and corrections (job, tenant day and month, a new day, spend
 * restored), the workflow keys `budget:` and `prompt_cache:`, the plugins'
 * cache counts and the anthropic plugin's cache_control. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "daemon/engine/engine_cost.h"
#include "dsl/dsl.h"
#include "loom/plugin.h"
#include "plugins/anthropic/anthropic.h"
#include "plugins/http_common.h"

static int truth(int x)
{
    return x != 0;
}

/* Whether A and B are equal within a billionth of a dollar. */
static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

/* ---- the config */

typedef struct parsed {
    config *c;
    dsl_diags d;
    char text[4096];           /* the diagnostics, one per line */
} parsed;

static void parse(parsed *p, const char *yaml)
{
    dsl_diags_init(&p->d, "c.yaml");
    p->c = config_parse(yaml, strlen(yaml), &p->d);
    size_t len = 0;
    p->text[0] = '\0';
    for (size_t i = 0; i < p->d.n; i++) {
        char *s = dsl_diag_format(&p->d, i);
        len += (size_t)snprintf(p->text + len, sizeof p->text - len, "%s\n", s ? s : "?");
        free(s);
        if (len >= sizeof p->text)
            break;
    }
}

static void done(parsed *p)
{
    config_free(p->c);
    dsl_diags_free(&p->d);
}

#define PROVIDERS "providers:\n  fast: { plugin: mock }\n  claude: { plugin: mock }\n"

Test(prices, parsed_per_provider_and_model)
{
    parsed p;
    parse(&p, PROVIDERS
              "prices:\n"
              "  fast:\n"
              "    small: { input: 0.15, output: 0.6, cache_read: 0.075 }\n"
              "    '*': { input: 1, output: 2 }\n"
              "  claude:\n"
              "    sonnet: { input: 3, output: 15, cache_read: 0.3, cache_write: 3.75,"
              " batch_discount: 0.5 }\n");
    cr_assert(p.c, "%s", p.text);
    const engine_prices *ps = &p.c->prices;
    cr_assert_eq(ps->n, 3);
    const engine_price *small = engine_price_find(ps, "fast", "small");
    cr_assert(small && near(small->input, 0.15) && near(small->output, 0.6));
    cr_assert(near(small->cache_read, 0.075));
    cr_assert(small->cache_write < 0, "not given: charged as input");
    cr_assert(near(small->batch_discount, 0), "not given");
    /* another model of fast: its "*"; claude's unknown model: unpriced */
    const engine_price *other = engine_price_find(ps, "fast", "large");
    cr_assert(other && !strcmp(other->model, "*") && near(other->input, 1));
    cr_assert(engine_price_find(ps, "fast", NULL) == other);
    cr_assert(engine_price_find(ps, "claude", "haiku") == NULL);
    cr_assert(engine_price_find(ps, "claude", NULL) == NULL);
    cr_assert(engine_price_find(ps, "default", "x") == NULL);
    const engine_price *sonnet = engine_price_find(ps, "claude", "sonnet");
    cr_assert(sonnet && near(sonnet->cache_write, 3.75) && near(sonnet->batch_discount, 0.5));
    done(&p);
}

/* The batch price: given, else the discount, else half of input and output. */
Test(prices, batch_prices)
{
    parsed p;
    parse(&p, PROVIDERS
              "prices:\n"
              "  fast:\n"
              "    a: { input: 2, output: 8 }\n"
              "    b: { input: 2, output: 8, batch_discount: 0.25, cache_read: 1 }\n"
              "    c: { input: 2, output: 8, batch_input: 0.7, batch_output: 3 }\n");
    cr_assert(p.c, "%s", p.text);
    const engine_prices *ps = &p.c->prices;
    engine_price b;
    const engine_price *a = engine_price_find(ps, "fast", "a");
    cr_assert(a && a->batch_input < 0 && a->batch_output < 0, "not given");
    engine_price_batch(a, &b);
    cr_assert(near(b.input, 1) && near(b.output, 4));
    engine_price_batch(engine_price_find(ps, "fast", "b"), &b);
    cr_assert(near(b.input, 0.5) && near(b.output, 2) && near(b.cache_read, 0.25));
    engine_price_batch(engine_price_find(ps, "fast", "c"), &b);
    cr_assert(near(b.input, 0.7) && near(b.output, 3));
    loom_usage u = { .input_tokens = 1000000, .output_tokens = 1000000, .cache_read_tokens = -1,
                     .cache_write_tokens = -1 };
    cr_assert(near(engine_price_cost(&b, &u, true), 3.7));
    done(&p);
    parse(&p, PROVIDERS
              "prices:\n"
              "  fast:\n"
              "    a: { input: 2, output: 8, batch_input: -1, batch_output: x }\n");
    cr_assert_null(p.c);
    cr_assert(strstr(p.text, "c.yaml:6:44: error: 'batch_input' must be at least 0"), "%s",
              p.text);
    cr_assert(strstr(p.text, "c.yaml:6:62: error: 'batch_output' must be a number"), "%s",
              p.text);
    done(&p);
}

Test(prices, errors_at_their_positions)
{
    parsed p;
    parse(&p, PROVIDERS
              "prices:\n"                                        /* 4 */
              "  fsat:\n"                                        /* 5 */
              "    m: { input: 1, output: 2 }\n"                 /* 6 */
              "  fast:\n"                                        /* 7 */
              "    a: { input: -1, output: 2 }\n"                /* 8 */
              "    b: { input: 1 }\n"                            /* 9 */
              "    c: { input: 1, output: 2, cahce_read: 1 }\n"  /* 10 */
              "    d: { input: one, output: 2 }\n"               /* 11 */
              "    e: { input: 1, output: 2, batch_discount: 0 }\n" /* 12 */
              "    f: 5\n");                                     /* 13 */
    cr_assert_null(p.c);
    const char *want[] = {
        "c.yaml:5:3: error: prices for unknown provider 'fsat'; did you mean 'fast'?",
        "c.yaml:8:17: error: 'input' must be at least 0",
        "c.yaml:9:8: error: missing required key 'output' in the price of 'b'",
        "c.yaml:10:31: error: unknown key 'cahce_read'",
        "did you mean 'cache_read'",
        "c.yaml:11:17: error: 'input' must be a number",
        "c.yaml:12:47: error: 'batch_discount' must be over 0",
        "c.yaml:13:8: error: 'f' must be a mapping of prices",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(p.text, want[i]), "'%s' not in:\n%s", want[i], p.text);
    done(&p);
}

Test(prices, not_a_mapping)
{
    parsed p;
    parse(&p, PROVIDERS "prices: [1, 2]\n");
    cr_assert_null(p.c);
    cr_assert(strstr(p.text, "c.yaml:4:9: error:"), "%s", p.text);
    done(&p);
}

/* ---- arithmetic */

static const engine_price SONNET = { .provider = "claude", .model = "sonnet", .input = 3,
                                     .output = 15, .cache_read = 0.3, .cache_write = 3.75 };

Test(cost, input_output_and_cache_tokens)
{
    loom_usage u = { .input_tokens = 1000000, .output_tokens = 100000, .cache_read_tokens = -1,
                     .cache_write_tokens = -1 };
    /* 1M input at 3, 0.1M output at 15 */
    cr_assert(near(engine_price_cost(&SONNET, &u, true), 3 + 1.5));
    /* of the input, 600k read from the cache and 100k written to it */
    u.cache_read_tokens = 600000;
    u.cache_write_tokens = 100000;
    double want = 0.3 * 3 + 0.6 * 0.3 + 0.1 * 3.75 + 0.1 * 15;
    cr_assert(near(engine_price_cost(&SONNET, &u, true), want), "%f vs %f",
              engine_price_cost(&SONNET, &u, true), want);
    /* cache counts over the input are held to it: never a negative part */
    u.cache_read_tokens = 5000000;
    cr_assert(near(engine_price_cost(&SONNET, &u, true), 1 * 0.3 + 1.5));
}

Test(cost, cache_prices_not_given_charge_input)
{
    engine_price p = { .input = 2, .output = 4, .cache_read = -1, .cache_write = -1 };
    loom_usage u = { 1000000, 0, 500000, 500000 };
    cr_assert(near(engine_price_cost(&p, &u, true), 2));
}

Test(cost, unknown_is_never_a_guess)
{
    loom_usage u = { 100, 10, -1, -1 };
    cr_assert_lt(engine_price_cost(NULL, &u, true), 0, "unpriced model");
    u.input_tokens = -1;
    cr_assert_lt(engine_price_cost(&SONNET, &u, true), 0, "no input count");
    u.input_tokens = 100;
    u.output_tokens = -1;
    cr_assert_lt(engine_price_cost(&SONNET, &u, true), 0, "a chat answer without its output");
    /* embeddings have no output tokens to count */
    cr_assert(near(engine_price_cost(&SONNET, &u, false), 100 * 3 / 1e6));
    cr_assert_lt(engine_price_estimate(NULL, 10, 10), 0);
    cr_assert(near(engine_price_estimate(&SONNET, 1000, 100), (1000 * 3 + 100 * 15) / 1e6));
}

Test(cost, prices_copy_is_deep)
{
    engine_price v[2] = { SONNET, { .provider = "fast", .model = "*", .input = 1, .output = 1 } };
    engine_prices src = { v, 2 }, dst;
    cr_assert_eq(engine_prices_copy(&dst, &src), 0);
    cr_assert_eq(dst.n, 2);
    cr_assert(dst.v[0].provider != v[0].provider && !strcmp(dst.v[0].provider, "claude"));
    cr_assert(engine_price_find(&dst, "fast", "anything") == &dst.v[1]);
    engine_prices_fini(&dst);
}

/* ---- the ledger */

static time_t clock_now;
static time_t test_clock(void *ud)
{
    (void)ud;
    return clock_now;
}

/* 2026-12-03 12:00 UTC */
#define DAY0 ((time_t)1796299200)

static engine_ledger *ledger(void)
{
    engine_ledger *l = engine_ledger_new();
    cr_assert(l);
    clock_now = DAY0;
    engine_ledger_set_clock(l, test_clock, NULL);
    return l;
}

static double day_usd(engine_ledger *l, const char *tenant, const char *key)
{
    json_t *j = engine_ledger_tenant_json(l, tenant);
    double v = json_number_value(json_object_get(j, key));
    json_decref(j);
    return v;
}

Test(budget, job_budget_reserves_then_corrects)
{
    double reserved = 0, spent = 0;
    engine_hold h1, h2, h3;
    char msg[256];
    /* 1.00 for the job: two calls estimated at 0.40 fit, a third does not */
    cr_assert_eq(engine_ledger_reserve(NULL, NULL, 1.0, spent, &reserved, 0.4, &h1, msg,
                                       sizeof msg), 0);
    cr_assert_eq(engine_ledger_reserve(NULL, NULL, 1.0, spent, &reserved, 0.4, &h2, msg,
                                       sizeof msg), 0);
    cr_assert(near(reserved, 0.8));
    cr_assert_eq(engine_ledger_reserve(NULL, NULL, 1.0, spent, &reserved, 0.4, &h3, msg,
                                       sizeof msg), -1);
    cr_assert(strstr(msg, "job's budget of 1 USD"), "%s", msg);
    cr_assert(truth(!h3.held));
    /* the first cost less than its estimate: the room it frees is usable */
    engine_ledger_settle(NULL, NULL, NULL, NULL, &h1, 0.1);
    spent += 0.1;
    cr_assert(near(reserved, 0.4));
    cr_assert_eq(engine_ledger_reserve(NULL, NULL, 1.0, spent, &reserved, 0.4, &h3, msg,
                                       sizeof msg), 0);
    /* withdrawn: nothing charged */
    engine_ledger_settle(NULL, NULL, NULL, NULL, &h2, -1);
    engine_ledger_settle(NULL, NULL, NULL, NULL, &h3, 0.4);
    spent += 0.4;
    cr_assert(near(reserved, 0));
    cr_assert(near(spent, 0.5));
}

Test(budget, tenant_day_and_month)
{
    engine_ledger *l = ledger();
    cr_assert_eq(engine_ledger_set_limits(l, "t", 1.0, 1.5), 0);
    double jr = 0;
    engine_hold h;
    char msg[256];
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.9, &h, msg, sizeof msg), 0);
    cr_assert(near(day_usd(l, "t", "reserved_usd"), 0.9));
    engine_ledger_settle(l, "t", "w", "p", &h, 0.8);
    cr_assert(near(day_usd(l, "t", "day_usd"), 0.8));
    cr_assert(near(day_usd(l, "t", "reserved_usd"), 0));
    /* 0.8 spent today: 0.3 more would pass the day's 1.00 */
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.3, &h, msg, sizeof msg), -1);
    cr_assert(strstr(msg, "tenant 't'") && strstr(msg, "2026-12-03"), "%s", msg);
    /* another tenant is not held back */
    cr_assert_eq(engine_ledger_reserve(l, "u", -1, 0, &jr, 5, &h, msg, sizeof msg), 0);
    engine_ledger_settle(l, "u", "w", "p", &h, 5);
    /* the next day starts at 0, but the month still holds 0.8 of its 1.5 */
    clock_now = DAY0 + 86400;
    cr_assert(near(day_usd(l, "t", "day_usd"), 0));
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.8, &h, msg, sizeof msg), -1);
    cr_assert(strstr(msg, "2026-12") && !strstr(msg, "2026-12-04"), "%s", msg);
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.6, &h, msg, sizeof msg), 0);
    engine_ledger_settle(l, "t", "w2", "p", &h, 0.6);
    /* counters of stats */
    json_t *s = engine_ledger_stats(l);
    cr_assert(near(json_number_value(json_object_get(s, "usd")), 6.4));
    cr_assert(near(json_number_value(json_object_get(json_object_get(s, "by_tenant"), "t")), 1.4));
    cr_assert(near(json_number_value(json_object_get(json_object_get(s, "by_workflow"), "w")),
                   5.8));
    cr_assert(near(json_number_value(json_object_get(json_object_get(s, "by_provider"), "p")),
                   6.4));
    json_decref(s);
    engine_ledger_free(l);
}

typedef struct spent_rec {
    int calls;
    double usd;
    char day[16], month[16];
} spent_rec;

static void on_spend(void *ud, const char *tenant, const char *day, const char *month, double usd)
{
    spent_rec *r = ud;
    cr_assert_str_eq(tenant, "t");
    r->calls++;
    r->usd += usd;
    snprintf(r->day, sizeof r->day, "%s", day);
    snprintf(r->month, sizeof r->month, "%s", month);
}

Test(budget, spend_hook_and_restore)
{
    engine_ledger *l = ledger();
    spent_rec rec = { 0 };
    engine_ledger_set_spend_hook(l, on_spend, &rec);
    cr_assert_eq(engine_ledger_set_limits(l, "t", 1.0, -1), 0);
    /* what an earlier process spent: today's counts, yesterday's does not */
    cr_assert_eq(engine_ledger_restore(l, "t", "2026-12-03", 0.7), 0);
    cr_assert_eq(engine_ledger_restore(l, "t", "2026-12-02", 9), 0);
    cr_assert_eq(engine_ledger_restore(l, "t", "2026-12", 0.7), 0);
    cr_assert(near(day_usd(l, "t", "day_usd"), 0.7));
    cr_assert(near(day_usd(l, "t", "month_usd"), 0.7));
    double jr = 0;
    engine_hold h;
    char msg[256];
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.4, &h, msg, sizeof msg), -1);
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0.2, &h, msg, sizeof msg), 0);
    engine_ledger_settle(l, "t", NULL, NULL, &h, 0.25);
    cr_assert_eq(rec.calls, 1);
    cr_assert(near(rec.usd, 0.25));
    cr_assert_str_eq(rec.day, "2026-12-03");
    cr_assert_str_eq(rec.month, "2026-12");
    /* an unpriced or withdrawn call writes nothing */
    cr_assert_eq(engine_ledger_reserve(l, "t", -1, 0, &jr, 0, &h, msg, sizeof msg), 0);
    engine_ledger_settle(l, "t", NULL, NULL, &h, -1);
    cr_assert_eq(rec.calls, 1);
    engine_ledger_free(l);
}

/* Many calls racing for one budget, settling in an order of their own: at
 * every moment spent + reserved stays within the limit, and the spend never
 * passes it by more than the calls' costs over their estimates. */
Test(budget, racing_reservations_never_pass_the_limit)
{
    enum { CALLS = 2000, WINDOW = 50 };
    engine_ledger *l = ledger();
    cr_assert_eq(engine_ledger_set_limits(l, "t", 10.0, -1), 0);
    engine_hold held[WINDOW];
    double cost[WINDOW], jr = 0, over = 0, spent = 0;
    int n = 0, admitted = 0, refused = 0;
    unsigned seed = 12345;
    char msg[256];
    for (int i = 0; i < CALLS; i++) {
        seed = seed * 1103515245u + 12345u;
        double est = 0.05 + (seed >> 16) % 100 / 1000.0;
        /* real costs from a fifth of the estimate to a tenth over it */
        double real = est * (0.2 + (seed >> 8) % 90 / 100.0);
        if (n == WINDOW) { /* settle a pseudo-random call in flight */
            int k = (int)((seed >> 4) % WINDOW);
            engine_ledger_settle(l, "t", NULL, NULL, &held[k], cost[k]);
            spent += cost[k];
            held[k] = held[--n];
            cost[k] = cost[n];
        }
        if (engine_ledger_reserve(l, "t", -1, 0, &jr, est, &held[n], msg, sizeof msg) == 0) {
            cost[n++] = real;
            admitted++;
            if (real > est)
                over += real - est;
        } else {
            refused++;
        }
        cr_assert(day_usd(l, "t", "day_usd") + day_usd(l, "t", "reserved_usd") <=
                      10.0 + over + 1e-9,
                  "spent and held pass the limit");
    }
    while (n > 0) {
        n--;
        engine_ledger_settle(l, "t", NULL, NULL, &held[n], cost[n]);
        spent += cost[n];
    }
    cr_assert(admitted > 0 && refused > 0, "admitted %d, refused %d", admitted, refused);
    cr_assert(spent <= 10.0 + over + 1e-9, "spent %f over 10 + %f", spent, over);
    cr_assert(near(day_usd(l, "t", "day_usd"), spent));
    cr_assert(near(day_usd(l, "t", "reserved_usd"), 0));
    engine_ledger_free(l);
}

/* ---- workflows */

static dsl_graph *compile(const char *text, dsl_diags *d)
{
    dsl_diags_init(d, "w.yaml");
    return dsl_compile("w.yaml", text, strlen(text), NULL, d);
}

Test(workflow, budget_and_prompt_cache_keys)
{
    dsl_diags d;
    dsl_graph *g = compile("loom: 1\nname: w\nbudget: { usd: 2.5 }\nprompt_cache: true\n"
                           "do:\n  chain:\n    - call: hi\n    - call: { prompt: x, prompt_cache: false }\n",
                           &d);
    cr_assert(g, "%zu errors", d.n);
    cr_assert(truth(g->has_budget) && near(g->budget_usd, 2.5));
    cr_assert(truth(g->prompt_cache));
    const dsl_node *c0 = g->root->u.chain.steps[0], *c1 = g->root->u.chain.steps[1];
    cr_assert(truth(c0->u.call.prompt_cache), "the workflow's");
    cr_assert(truth(!c1->u.call.prompt_cache), "the call's own");
    /* what `loomctl graph` shows */
    json_t *doc = dsl_emit_json(g);
    cr_assert(near(json_number_value(json_object_get(json_object_get(doc, "budget"), "usd")), 2.5));
    cr_assert(truth(json_is_true(json_object_get(doc, "prompt_cache"))));
    json_decref(doc);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
    g = compile("loom: 1\nname: w\ndo: { call: hi }\n", &d);
    cr_assert(g && !g->has_budget && !g->prompt_cache);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
}

Test(workflow, budget_errors)
{
    const char *cases[][2] = {
        { "loom: 1\nname: w\nbudget: { usd: -1 }\ndo: { call: hi }\n", "w.yaml:3:16: error:" },
        { "loom: 1\nname: w\nbudget: { dollars: 1 }\ndo: { call: hi }\n", "w.yaml:3:11: error:" },
        { "loom: 1\nname: w\nbudget: 5\ndo: { call: hi }\n", "w.yaml:3:9: error:" },
        { "loom: 1\nname: w\nprompt_cache: maybe\ndo: { call: hi }\n", "w.yaml:3:15: error:" },
        { "loom: 1\nname: w\nbudgte: { usd: 1 }\ndo: { call: hi }\n", "did you mean 'budget'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsl_diags d;
        dsl_graph *g = compile(cases[i][0], &d);
        char all[2048] = "";
        size_t len = 0;
        for (size_t k = 0; k < d.n && len < sizeof all; k++) {
            char *s = dsl_diag_format(&d, k);
            len += (size_t)snprintf(all + len, sizeof all - len, "%s\n", s ? s : "?");
            free(s);
        }
        cr_assert_null(g, "case %zu compiled", i);
        cr_assert(strstr(all, cases[i][1]), "case %zu: '%s' not in:\n%s", i, cases[i][1], all);
        dsl_diags_free(&d);
    }
}

Test(workflow, budget_exceeded_is_an_error_class_not_retried_by_default)
{
    cr_assert_str_eq(dsl_error_class_name(DSL_ERR_BUDGET_EXCEEDED), "budget_exceeded");
    cr_assert_eq(dsl_error_class_find("budget_exceeded"), DSL_ERR_BUDGET_EXCEEDED);
    dsl_diags d;
    dsl_graph *g = compile("loom: 1\nname: w\ndefaults: { retry: { max_attempts: 3 } }\n"
                           "do: { call: hi }\n", &d);
    cr_assert(g);
    cr_assert_eq(g->root->retry->on & (1u << DSL_ERR_BUDGET_EXCEEDED), 0);
    dsl_graph_unref(g);
    dsl_diags_free(&d);
}

/* ---- the plugins' side */

Test(plugins, openai_cached_tokens_are_part_of_the_prompt)
{
    json_t *body = json_loads("{\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":10,"
                              "\"prompt_tokens_details\":{\"cached_tokens\":1024}}}", 0, NULL);
    loom_usage u = LOOM_USAGE_UNKNOWN;
    loom_hc_usage(body, "prompt_tokens", "completion_tokens", &u);
    loom_hc_usage_cache_openai(json_object_get(body, "usage"), &u);
    cr_assert_eq(u.input_tokens, 1200);
    cr_assert_eq(u.cache_read_tokens, 1024);
    cr_assert_eq(u.cache_write_tokens, 0);
    json_decref(body);
    /* no details: nothing read from the cache; no usage: unknown */
    body = json_loads("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}", 0, NULL);
    u = LOOM_USAGE_UNKNOWN;
    loom_hc_usage(body, "prompt_tokens", "completion_tokens", &u);
    loom_hc_usage_cache_openai(json_object_get(body, "usage"), &u);
    cr_assert_eq(u.cache_read_tokens, 0);
    json_decref(body);
    u = LOOM_USAGE_UNKNOWN;
    loom_hc_usage_cache_openai(NULL, &u);
    cr_assert_eq(u.cache_read_tokens, -1);
    cr_assert_eq(u.cache_write_tokens, -1);
}

Test(plugins, anthropic_cache_counts_join_the_input)
{
    json_t *body = json_loads("{\"usage\":{\"input_tokens\":50,\"output_tokens\":7,"
                              "\"cache_read_input_tokens\":1000,"
                              "\"cache_creation_input_tokens\":200}}", 0, NULL);
    loom_usage u = LOOM_USAGE_UNKNOWN;
    loom_hc_usage(body, "input_tokens", "output_tokens", &u);
    loom_hc_usage_cache_anthropic(json_object_get(body, "usage"), &u);
    cr_assert_eq(u.input_tokens, 1250);
    cr_assert_eq(u.cache_read_tokens, 1000);
    cr_assert_eq(u.cache_write_tokens, 200);
    cr_assert_eq(u.output_tokens, 7);
    json_decref(body);
}

typedef struct tctx {
    loom_ctx base;
    char msg[256];
} tctx;

static void t_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    (void)code;
    vsnprintf(((tctx *)ctx)->msg, sizeof ((tctx *)ctx)->msg, fmt, ap);
}
static void t_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    (void)ctx, (void)level, (void)fmt, (void)ap;
}
static const loom_host_api t_api = { .verror = t_verror, .vlog = t_vlog };

/* The anthropic body encoded for a request with PROMPT_CACHE, on an
 * instance made with CONF (JSON text). */
static json_t *anthropic_body(const char *conf, int prompt_cache)
{
    const loom_provider *p = &loom_builtin_anthropic_entry()->providers[0];
    tctx c = { .base.api = &t_api };
    json_t *cfg = json_loads(conf, 0, NULL);
    void *st = NULL;
    setenv("LOOM_TEST_COST_KEY", "sk-test", 1);
    json_object_set_new(cfg, "api_key_env", json_string("LOOM_TEST_COST_KEY"));
    cr_assert_eq(p->init(&c.base, NULL, cfg, &st), 0, "%s", c.msg);
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *params = json_object();
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m", .messages = msgs,
                         .params = params, .prompt_cache = prompt_cache };
    loom_http_request out = { 0 };
    cr_assert_eq(p->encode(&c.base, st, &req, &out), 0, "%s", c.msg);
    json_t *body = json_loadb(out.body, out.body_len, 0, NULL);
    loom_hc_request_clear(&out);
    json_decref(msgs);
    json_decref(params);
    json_decref(cfg);
    p->fini(st);
    cr_assert(body);
    return body;
}

Test(plugins, anthropic_marks_the_system_prompt_cacheable)
{
    json_t *b = anthropic_body("{}", 0);
    cr_assert_str_eq(json_string_value(json_object_get(b, "system")), "be brief");
    json_decref(b);
    for (int way = 0; way < 2; way++) { /* asked by the request, or by the provider */
        b = anthropic_body(way ? "{\"prompt_cache\": true}" : "{}", !way);
        json_t *sys = json_object_get(b, "system");
        cr_assert(truth(json_is_array(sys)) && json_array_size(sys) == 1);
        json_t *last = json_array_get(sys, 0);
        cr_assert_str_eq(json_string_value(json_object_get(last, "text")), "be brief");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(last, "cache_control"),
                                                           "type")),
                         "ephemeral");
        json_decref(b);
    }
}
