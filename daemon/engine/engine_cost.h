/* engine_cost.h -- what provider calls cost, and the budgets that stop
 * spending before it happens.
 *
 * Prices: USD per million tokens of each kind, per provider instance and
 * model (a model "*" prices the instance's other models). A call's cost
 * comes from its usage; a call of a model no price names is unpriced: its
 * cost is unknown (-1, null in JSON), never a guess, and no budget counts
 * it.
 *
 * Budgets. Before each provider call the engine reserves the call's
 * estimated cost against every budget that applies to it -- the job's own
 * (the tightest of its submit's `budget` and its workflow's `budget:`), its
 * tenant's of the current UTC day and of the current UTC month -- and a call
 * that would take one past its limit fails with `budget_exceeded` before
 * anything is sent. When the answer comes the reservation is replaced by the
 * real cost. The estimate is the request's compact JSON bytes / 4 + 1 input
 * tokens (as the limiter's tpm estimate) plus max_tokens output tokens
 * (ENGINE_COST_DEFAULT_OUTPUT_TOKENS when a chat call sets none), at the
 * input and output prices (no cache discount). So a budget is passed only by
 * what calls admitted near its end cost beyond their estimates: never, when
 * max_tokens bounds the answer and the prompt is no longer in tokens than a
 * quarter of its bytes.
 *
 * The ledger (engine_ledger) holds tenants' limits and spend, and the cost
 * counters of `stats`. It outlives engine generations (a reload keeps the
 * day's spend), so the daemon owns it and lends it to each engine. Spend is
 * persisted by the daemon through the spend hook and given back at start
 * (engine_ledger_restore).
 *
 * Threads: the reactor thread only. */
#ifndef LOOM_DAEMON_ENGINE_COST_H
#define LOOM_DAEMON_ENGINE_COST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "loom/plugin.h"

/* Output tokens a chat call that sets no max_tokens is estimated at. */
#define ENGINE_COST_DEFAULT_OUTPUT_TOKENS 1024

typedef struct engine_price {
    char *provider;            /* the instance name (owned) */
    char *model;               /* the model, or "*" for the instance's others (owned) */
    double input, output;      /* USD per million tokens */
    double cache_read;         /* per million input tokens read from the prompt cache;
                                  < 0: not given, charged as input */
    double cache_write;        /* per million written to it; < 0: charged as input */
    double batch_discount;     /* the factor a provider's batch API applies to the
                                  prices (0.5: half price); 0: not given */
    double batch_input;        /* per million input and output tokens of a call
                                  answered through the provider's Batch API; */
    double batch_output;       /* < 0: not given (the discount, else half, of
                                  input and output) */
    int line, col;             /* of the entry, for messages */
} engine_price;

typedef struct engine_prices {
    engine_price *v;           /* owned */
    size_t n;
} engine_prices;

/* Frees what P holds (not P). */
void engine_prices_fini(engine_prices *p);
/* *DST (empty) becomes a deep copy of SRC. 0, or -1 when out of memory
 * (DST then empty). */
int engine_prices_copy(engine_prices *dst, const engine_prices *src);

/* The price of MODEL (may be NULL: the provider's default model, priced by
 * "*" only) at instance PROVIDER: its exact entry, else the instance's "*",
 * else NULL (unpriced). Borrowed from P. */
const engine_price *engine_price_find(const engine_prices *p, const char *provider,
                                      const char *model);

/* The cost in USD of USAGE at PRICE: input tokens that are neither read from
 * nor written to the cache at the input price, cache reads and writes at
 * theirs, output at the output price. -1 when PRICE is NULL or the usage does
 * not give the input count (nor, for a chat call, CHAT, the output count). */
double engine_price_cost(const engine_price *price, const loom_usage *usage, bool chat);

/* *OUT becomes PRICE (not NULL) as the provider's Batch API charges it:
 * input and output at batch_input and batch_output, else at the batch
 * discount (0.5 when none is given) of input and output; the cache prices
 * by the same factor as the input. OUT's strings are PRICE's (borrowed). */
void engine_price_batch(const engine_price *price, engine_price *out);

/* The cost of IN input and OUT output tokens at PRICE (the reservation of a
 * call); -1 when PRICE is NULL. */
double engine_price_estimate(const engine_price *price, int64_t in, int64_t out);

/* ---- the ledger */

typedef struct engine_ledger engine_ledger;

/* A new, empty ledger (no tenant limits), or NULL when out of memory. */
engine_ledger *engine_ledger_new(void);
void engine_ledger_free(engine_ledger *l);

/* The clock the ledger dates spend with (UTC day and month): tests set
 * one; NULL: time(). */
void engine_ledger_set_clock(engine_ledger *l, time_t (*now)(void *ud), void *ud);

/* TENANT's limits in USD per UTC day and per UTC month (< 0: none). Called
 * for every configured tenant at start and at each reload, after
 * engine_ledger_clear_limits. 0 or -1 when out of memory. */
int engine_ledger_set_limits(engine_ledger *l, const char *tenant, double per_day,
                             double per_month);
void engine_ledger_clear_limits(engine_ledger *l);

/* Spend of TENANT recorded for PERIOD ("YYYY-MM-DD" or "YYYY-MM", UTC)
 * before this start: counted when PERIOD is the current day or month,
 * ignored otherwise. 0 or -1 when out of memory. */
int engine_ledger_restore(engine_ledger *l, const char *tenant, const char *period, double usd);

/* Called with every settled call's cost (USD > 0) of TENANT, with the UTC
 * DAY and MONTH it counts for: where the daemon persists spend. */
typedef void (*engine_spend_fn)(void *ud, const char *tenant, const char *day, const char *month,
                                double usd);
void engine_ledger_set_spend_hook(engine_ledger *l, engine_spend_fn fn, void *ud);

/* TENANT's spend and reservations now: {day, day_usd, month, month_usd,
 * reserved_usd, usd_per_day, usd_per_month} (limits null when none). A new
 * reference, or NULL. */
json_t *engine_ledger_tenant_json(engine_ledger *l, const char *tenant);

/* Every tenant the ledger knows (a limit, or spend this month) as
 * {TENANT: engine_ledger_tenant_json}. A new reference, or NULL. */
json_t *engine_ledger_budgets_json(engine_ledger *l);

/* The cost counters since start, `stats.cost`: {usd, by_workflow: {W: usd},
 * by_provider: {P: usd}, by_tenant: {T: usd}}. A new reference, or NULL. */
json_t *engine_ledger_stats(const engine_ledger *l);

/* ---- reservations (the engine's side; exposed for tests) */

/* One call's hold on the budgets that apply to it. */
typedef struct engine_hold {
    const engine_price *price; /* NULL: unpriced, nothing held */
    double est;                /* USD reserved */
    double *job_reserved;      /* the job's reservation total, or NULL */
    bool held;
} engine_hold;

/* Reserves EST against TENANT's day and month budgets in L (may be NULL)
 * and the job's (JOB_LIMIT < 0: none; JOB_SPENT and *JOB_RESERVED its
 * running totals). 0 with H filled, or -1 with why in MSG when a budget
 * would be passed (nothing is held then). */
int engine_ledger_reserve(engine_ledger *l, const char *tenant, double job_limit,
                          double job_spent, double *job_reserved, double est, engine_hold *h,
                          char *msg, size_t msglen);
/* Ends H: its reservation is dropped and COST (USD; 0 for none) is charged
 * to TENANT (and counted under WORKFLOW and PROVIDER, which may be NULL).
 * H is then empty. */
void engine_ledger_settle(engine_ledger *l, const char *tenant, const char *workflow,
                          const char *provider, engine_hold *h, double cost);

#endif
