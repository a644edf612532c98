/* jobs_budget.c -- a submit's `budget: {usd: N}`: checked when the job is
 * submitted, kept with it in the store, and handed to the engine, which
 * stops the job's calls at it (daemon/engine/engine_cost.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon/jobs/jobs.h"

/* The most a budget may say: far above any real one, and exact as a double. */
#define JOBS_BUDGET_MAX 1e12

int jobs_budget_parse(const json_t *b, double *usd, char *msg, size_t msglen)
{
    *usd = -1;
    if (!b || json_is_null(b))
        return 0;
    const char *key;
    json_t *v;
    if (!json_is_object(b)) {
        snprintf(msg, msglen, "'budget' must be an object such as {\"usd\": 5}");
        return -1;
    }
    json_object_foreach((json_t *)b, key, v) {
        if (strcmp(key, "usd") != 0) {
            snprintf(msg, msglen, "unknown key '%.64s' in 'budget' (it has only 'usd')", key);
            return -1;
        }
    }
    v = json_object_get(b, "usd");
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0 ||
        json_number_value(v) > JOBS_BUDGET_MAX) {
        snprintf(msg, msglen, "'budget.usd' must be a number of US dollars from 0 to %g",
                 JOBS_BUDGET_MAX);
        return -1;
    }
    *usd = json_number_value(v);
    return 0;
}

void jobs_budget_set(ljob *j, const json_t *b)
{
    char msg[160];
    double usd;
    /* a stored budget was checked at submit; one that no longer reads is none */
    j->has_budget = jobs_budget_parse(b, &usd, msg, sizeof msg) == 0 && usd >= 0;
    j->budget_usd = j->has_budget ? usd : 0;
}
