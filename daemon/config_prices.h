/* config_prices.h -- the `prices` section of the daemon's config: what each
 * provider instance's models cost (docs/operations.md, "Cost and budgets").
 *
 *   prices:
 *     INSTANCE:                 # a provider instance of `providers`
 *       MODEL:                  # a model name, or "*" for the others
 *         input: 3.00           # USD per million input tokens
 *         output: 15.00         # USD per million output tokens
 *         cache_read: 0.30      # optional: per million read from the prompt cache
 *         cache_write: 3.75     # optional: per million written to it
 *         batch_discount: 0.5   # optional: the provider's batch price factor
 *         batch_input: 1.50     # optional: per million input tokens of a batch line
 *         batch_output: 7.50    # optional: per million output tokens of one
 *                               # (both default to the discount, else half)
 *
 * Parsed by config_file.c into engine_prices (daemon/engine/engine_cost.h),
 * read by the engine. */
#ifndef LOOM_DAEMON_CONFIG_PRICES_H
#define LOOM_DAEMON_CONFIG_PRICES_H

#include "daemon/engine/engine_cost.h"
#include "dsl/diag.h"

struct dsl_ynode;

/* Parses Y, the value of `prices`, into *OUT (replacing what it held),
 * reporting every problem in D at its position. */
void config_prices_parse(dsl_diags *d, const struct dsl_ynode *y, engine_prices *out);

/* Reports in D each entry of P that names no provider of PROVIDERS (a
 * NULL-terminated list), with the closest name when one is near. */
void config_prices_check(dsl_diags *d, const engine_prices *p, const char *const *providers);

#endif
