/* mock_internal.h -- what the mock provider's files share: the instance.
 *
 * Private to plugins/mock: config.c reads an instance's config, mock.c runs
 * its calls. */
#ifndef LOOM_PLUGINS_MOCK_INTERNAL_H
#define LOOM_PLUGINS_MOCK_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "common/containers.h"
#include "loom/plugin.h"

#include "mock.h"

typedef enum mock_mode { MOCK_MODE_ECHO, MOCK_MODE_MESSAGES } mock_mode;

typedef struct mock_answer {
    char *answer;
    char *needle;        /* a substring, or NULL when RE is used */
    regex_t re;
    int compiled;        /* RE holds a compiled regex (to regfree) */
} mock_answer;

typedef struct mock_pending mock_pending;

typedef struct mock_registry mock_registry;
typedef struct mock_instance {
    char *name;
    uint64_t latency_ms, jitter_ms;
    mock_mode mode;
    mock_answer *answers;
    size_t nanswers;
    char **script;
    size_t nscript;
    json_t *tool_script;         /* array, or NULL: the turns of a tool conversation */
    double fail_rate;
    uint64_t fail_every;         /* 0: off; N: calls 0, N, 2N... fail */
    loom_errcode fail_code;
    uint64_t retry_after_ms;     /* a failure's Retry-After; 0: none */
    uint64_t seed;
    size_t embed_dims;

    /* Guards everything below: invoke, timers and cancel run on the reactor,
     * but mock.stats reads the counters from a worker. */
    pthread_mutex_t lock;
    mock_stats stats;
    uint64_t sequence;           /* calls started: drives failure injection */
    uint64_t script_next;        /* next script entry (before the modulo) */
    list_link pending;           /* mock_pending.link: calls in flight, newest first */

    struct mock_instance *next_live;  /* the registry's list */
    struct mock_registry *registry;   /* the plugin's state, or NULL */
} mock_instance;

/* Fills IN (zeroed, lock initialised) from CONFIG (borrowed; an object, or
 * NULL for every default). 0, or -1 after loom_error(LOOM_E_CONFIG or
 * LOOM_E_NOMEM); IN then holds what was read so far, for mock_instance_free. */
int mock_config_read(loom_ctx *ctx, json_t *config, mock_instance *in);

/* Frees IN and everything it owns (not its calls in flight). */
void mock_instance_free(mock_instance *in);

#endif
