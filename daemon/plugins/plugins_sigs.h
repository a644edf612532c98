/* plugins_sigs.h -- the loaded lambdas' declared arguments in the
 * compiler's terms (dsl_lambda_sig), so a workflow's `args` are checked
 * when it is compiled, not when the step runs.
 *
 * dsl/ cannot see loom_option; this is where a plugin's declarations become
 * the compiler's: each option's name, its type, and whether a step must
 * give it (required and without a default). */
#ifndef LOOM_DAEMON_PLUGINS_SIGS_H
#define LOOM_DAEMON_PLUGINS_SIGS_H

#include "daemon/plugins/plugins.h"
#include "dsl/dsl.h"

/* The signature of every lambda of P, NULL-name terminated, in one
 * allocation that shares nothing with P (the caller frees it with free(),
 * and may keep it past plugins_free). A lambda that declares no `args`
 * (NULL) gets args NULL: it accepts anything. NULL when out of memory. */
dsl_lambda_sig *plugins_lambda_sigs(const plugins_t *p);

#endif
