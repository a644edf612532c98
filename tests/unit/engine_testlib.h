/* engine_testlib.h -- a small world for engine tests: reactor, pool, a test
 * plugin (lambdas and an invoke provider with counters) and a runner that
 * compiles a YAML text, submits it and turns the reactor until the job ends.
 *
 * The provider answers each chat call with the next string of a script (or
 * the prompt itself), after a latency, and counts calls in flight so tests
 * can check concurrency bounds. State is per test (reset by et_setup). */
#ifndef LOOM_TESTS_ENGINE_TESTLIB_H
#define LOOM_TESTS_ENGINE_TESTLIB_H

#include <jansson.h>
#include <stdint.h>

#include "daemon/engine/engine.h"

typedef struct et_provider_state {
    int inflight, max_inflight;
    int calls;          /* invoke calls */
    int served;         /* completed (not cancelled) */
    int cancelled;
    int latency_ms;     /* base latency */
    int latency_step;   /* added per call index (can be negative: later calls faster) */
    int fail_first;     /* the first N calls fail... */
    loom_errcode fail_code; /* ...with this code */
    uint64_t retry_after_ms; /* and this Retry-After when set */
    const char *const *script; /* answers in call order (NULL-terminated, cycled), or NULL: echo the prompt */
    const char *bad_kind;      /* answer et_bad_value(bad_kind) instead */
    json_t *last_request;      /* the last request: {model, messages, params, json_mode, inputs,
                                  schema, schema_name} */
} et_provider_state;

typedef struct et_world {
    reactor_t *r;
    pool_t *pool;
    plugins_t *plugins;
    engine_t *eng;
    struct providers *providers; /* for config entries: providers_add (daemon/providers.h) */
    et_provider_state prov;
    int lambda_calls;  /* atomically counted */
} et_world;

extern et_world ET;

typedef struct et_result {
    int done;
    json_t *output;    /* new reference or NULL */
    json_t *error;     /* {code, message, node, attempts} or NULL */
    json_t *usage;     /* engine_job_usage (a copy) or NULL */
    uint64_t elapsed_us;
    int ntrace;
    char trace[64][128];
} et_result;

void et_setup(void);
void et_teardown(void);
/* A value no job may take, by KIND: "utf8" (a string at $.a[1]), "key" (an
 * object key), "nan" (NULL: jansson refuses NaN), "deep" (1000 levels),
 * "huge" (65 MiB as JSON), or one it may: "bigint" (2^60). New reference. */
json_t *et_bad_value(const char *kind);
/* Compiles YAML (fails the test on errors). Caller unrefs. */
dsl_graph *et_compile(const char *yaml);
/* Runs YAML over INPUT (JSON text, may be NULL) to the end. O may be NULL. */
void et_run(const char *yaml, const char *input, const engine_job_options *o, et_result *res);
/* Turns the reactor until RES->done (with a hang guard). */
void et_wait(et_result *res);
void et_result_free(et_result *res);
/* The done callback that fills an et_result (UD). */
void et_done(engine_job_t *job, void *ud);
/* A code string of RES's error, or "" */
const char *et_code(const et_result *res);

#endif
