/* ratelimit.h -- a per-provider rate limiter: requests/min, tokens/min (or
 * input and output tokens/min separately) and concurrency, corrected by what
 * the provider says (429 / Retry-After, x-ratelimit-* headers, overload).
 *
 * Why: providers enforce continuously refilled buckets and punish bursts, and
 * a job daemon would rather delay a call than waste it on a 429. So every call
 * asks the limiter first, and waits (without blocking anything) until it fits.
 *
 * Model: each rate dimension is a GCRA (one "theoretical arrival time" per
 * dimension, the exact equivalent of a token bucket). The burst tolerance is
 * one second of budget less 100 ms for network jitter (rpm 600 admits 9 at
 * once, then 10/s), because
 * providers quantise per-minute limits to sub-minute windows and penalise
 * ramps; a single request costing more than one second of budget is admitted
 * when its bucket is full and leaves it in debt, so it is never starved.
 * Token dimensions are charged up front from the estimate (input estimate +
 * max_tokens), then corrected from real usage on release.
 *
 * Concurrency is a counting semaphore whose cap moves by AIMD: overload halves
 * it (floor 1), a cap's worth of healthy answers adds one, up to the configured
 * concurrency, or RL_DEFAULT_CEILING when concurrency is unlimited (0): a
 * provider with no configured cap still gets at most that many calls in flight,
 * so that halving on overload has something to halve.
 *
 * Waiting tickets are served fairly between tenants: each tenant's tickets
 * wait first in, first out in a queue of their own, and the tenants take
 * turns by deficit round robin, a ticket costing its estimated tokens (input
 * + output, at least 1) and a turn adding weight x RL_DRR_QUANTUM tokens to
 * a tenant's credit. So under contention each tenant gets at least its weighted
 * share of every limit (rpm, tpm, concurrency), and a tenant alone gets all
 * of it: a quiet tenant's share is never held back. A pause (429) stops the
 * provider for every tenant. The ticket whose turn it is is served by one
 * reactor timer at the earliest time it fits; grants are announced through
 * reactor posts, so a grant callback never runs inside the call that caused it.
 *
 * Conventions: reactor thread only; no I/O. Functions returning int return 0
 * or a negative errno; constructors return NULL and set errno. Times given in
 * milliseconds are durations; clock values are microseconds. */
#ifndef LOOM_DAEMON_RATELIMIT_H
#define LOOM_DAEMON_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/core/reactor.h"
#include "loom/plugin.h"

typedef struct rl rl_t;

/* A provider's limits, as the config file states them. */
typedef struct rl_limits {
    int64_t rpm, tpm, input_tpm, output_tpm; /* per minute; 0 = unlimited */
    int64_t concurrency;                     /* 0 = unlimited */
} rl_limits;
typedef struct rl_ticket rl_ticket;

/* Most calls in flight per provider when its concurrency is unlimited. */
#define RL_DEFAULT_CEILING 64
/* Tokens of credit a tenant of weight 1 gets per turn of the round robin.
 * Small, so that tenants' calls interleave finely (a tenant waits for at
 * most one call of each other tenant, give or take a turn); the rounds a
 * large call needs are skipped at once, so it costs nothing. */
#define RL_DRR_QUANTUM 16

/* What one call is expected to cost. */
typedef struct rl_cost {
    int64_t requests;          /* normally 1 */
    int64_t est_input_tokens;  /* estimate of the prompt */
    int64_t est_output_tokens; /* max_tokens: providers reserve it up front */
} rl_cost;

/* What one call really cost (from the response's usage). */
typedef struct rl_usage {
    int64_t input_tokens;
    int64_t output_tokens;
} rl_usage;

typedef enum { RL_OK, RL_OVERLOADED } rl_outcome;

/* A snapshot (rl_stats_t, since rl_stats names the function). */
typedef struct rl_stats {
    int64_t in_flight;        /* granted, not yet released */
    int64_t queued;           /* waiting for a grant */
    uint64_t granted;         /* grants since rl_new */
    uint64_t paused_until_us; /* on the limiter's clock; 0 when not paused */
    int64_t effective_concurrency; /* the current AIMD cap */
} rl_stats_t;

/* Called once when T is granted (on a later reactor pass). T stays valid
 * until rl_release or rl_cancel, one of which the owner must call. */
typedef void (*rl_grant_fn)(rl_ticket *t, void *ud);

/* A monotonic clock in microseconds, for tests (see rl_set_clock). */
typedef uint64_t (*rl_clock_fn)(void *ud);

/* A limiter for LIMITS (copied) whose timers and posts use R (borrowed; it
 * must outlive the limiter). NULL with errno EINVAL (negative limits) or
 * ENOMEM. */
rl_t *rl_new(reactor_t *r, const rl_limits *limits);

/* Frees RL and every ticket it still holds, queued or granted, without
 * calling any callback; handles the caller still has dangle. Not from inside
 * a grant callback of RL. NULL is a no-op. */
void rl_free(rl_t *rl);

/* Replaces the clock (CLOCK_MONOTONIC by default) with FN(UD), so tests can
 * check the arithmetic without sleeping. Timers still come from the reactor:
 * after moving an injected clock, call rl_kick. */
void rl_set_clock(rl_t *rl, rl_clock_fn fn, void *ud);

/* Re-examines the queue now (after an injected clock moved). */
void rl_kick(rl_t *rl);

/* Asks for COST. Returns a ticket owned by RL (the caller holds a handle
 * until rl_release / rl_cancel); CB(ticket, UD) runs when it is granted, at
 * once on the next pass if it fits, else when the queue reaches it and it
 * fits. NULL with errno EINVAL (negative or absurd cost) or ENOMEM. */
rl_ticket *rl_acquire(rl_t *rl, const rl_cost *cost, rl_grant_fn cb, void *ud);

/* rl_acquire for TENANT (copied; NULL: "default", the queue rl_acquire
 * uses) with WEIGHT (< 1: 1; the latest ticket's weight is the tenant's). */
rl_ticket *rl_acquire_for(rl_t *rl, const rl_cost *cost, const char *tenant, int64_t weight,
                          rl_grant_fn cb, void *ud);

/* Ends a granted call: frees its concurrency slot and corrects its token
 * reservation to ACTUAL (refunding or charging the difference; NULL keeps the
 * estimate as the charge). Frees T. A ticket not yet granted is cancelled. */
void rl_release(rl_ticket *t, const rl_usage *actual);

/* Withdraws T, whose call was not sent: a queued ticket is removed and never
 * granted; a granted one gives back its whole reservation (requests and
 * tokens) and its slot. Frees T. NULL is a no-op. */
void rl_cancel(rl_ticket *t);

/* A 429 / Retry-After: grants nothing for MS milliseconds from now (never
 * shortens a pause already in force); MS is capped at RL_MAX_WAIT_MS. */
void rl_pause(rl_t *rl, uint64_t ms);

/* The longest wait a provider can impose: one day. A server (or a plugin)
 * asking for more is asking for something no job would sit out, and a
 * figure of 10^15 ms would overflow the microsecond clock sums. */
#define RL_MAX_WAIT_MS UINT64_C(86400000)

/* MS capped at RL_MAX_WAIT_MS: every wait that comes from a provider passes
 * through it (the parsers below, rl_pause, a plugin's loom_retry_after). */
uint64_t rl_cap_wait_ms(uint64_t ms);

/* A provider's count of tokens clamped to [0, RL_MAX_TOKENS] (negative stays
 * -1: "unknown"), so that sums over many calls stay far from overflow. */
#define RL_MAX_TOKENS (INT64_C(1) << 40)
int64_t rl_clamp_tokens(int64_t v);

/* The server's view from response headers; a negative value is "unknown".
 * Local state is pulled so that what this limiter would grant at once never
 * exceeds what the server says remains: a remaining of 0 empties the bucket
 * (the next grant waits one interval) when the limit is configured, and
 * pauses the provider until the bucket's reset when it is not. Token figures apply to every configured token
 * dimension (conservative for Anthropic's "most restrictive" tokens header).
 * Never loosens the configured limits. */
void rl_sync(rl_t *rl, int64_t remaining_requests, int64_t reset_requests_ms,
             int64_t remaining_tokens, int64_t reset_tokens_ms);

/* Feedback from one finished call: RL_OVERLOADED (503, 529) or a latency
 * above twice the moving baseline halves the concurrency cap (at most once
 * per max(1 s, baseline latency), so one burst of failures halves it once);
 * healthy answers raise it by one per cap's worth. */
void rl_observe(rl_t *rl, rl_outcome outcome, uint64_t latency_ms);

void rl_stats(const rl_t *rl, rl_stats_t *out);

/* ---- a gate: a budget shared with other daemons (daemon/cluster/
 * cluster_limits.h). With a gate, a ticket that fits the local limits is
 * granted only when the gate admits it too; the gate calls rl_kick when it
 * has more to give. Every hook runs on the reactor thread, never with the
 * limiter's state half-changed. */
typedef struct rl_gate {
    void *ud;
    /* May the call costing COST start now? true: charged to what the gate
     * holds; false: not now (the head of the queue waits for rl_kick). */
    bool (*admit)(void *ud, const rl_cost *cost);
    /* A call the gate admitted ended: SENT false: it was never sent (refund
     * it all); else ACTUAL (NULL: the estimate stands) corrects its tokens. */
    void (*done)(void *ud, const rl_cost *cost, const rl_usage *actual, bool sent);
    /* This limiter was paused for MS from now (a 429 or a quota seen here):
     * the gate shares it. Not called for pauses the gate itself asked for
     * through rl_pause_shared. */
    void (*paused)(void *ud, uint64_t ms);
} rl_gate;

/* Puts RL behind GATE (copied; NULL: none). Tickets already granted are not
 * affected. */
void rl_set_gate(rl_t *rl, const rl_gate *gate);

/* rl_pause for a pause another daemon saw: never reported to the gate. */
void rl_pause_shared(rl_t *rl, uint64_t ms);

/* Parses a Go-style duration as in x-ratelimit-reset-*: "6m0s", "12ms",
 * "1.5s", "2m59.56s", "1h"; a bare number is seconds ("30"). Rounds up to
 * whole milliseconds, so a wait is never short, and caps at RL_MAX_WAIT_MS.
 * 0 or -EINVAL (garbage, empty, negative). */
int rl_parse_duration(const char *s, uint64_t *ms);

/* Parses a Retry-After value: delay-seconds ("120", leniently "1.5") or an
 * HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 and asctime forms too),
 * turned into a delay from NOW_UNIX (0 when the date is past), capped at
 * RL_MAX_WAIT_MS. 0 or -EINVAL. */
int rl_parse_retry_after(const char *value, int64_t now_unix, uint64_t *ms);

/* The wait a response asks for, from whichever header says it: retry-after-ms
 * (milliseconds, as OpenAI and Azure send it), else Retry-After (seconds or
 * an HTTP-date). H holds N headers, names lower-case. Capped at
 * RL_MAX_WAIT_MS. 0, or -ENOENT when no header gives a valid wait. */
int rl_parse_wait_headers(const loom_header *h, size_t n, int64_t now_unix, uint64_t *ms);

#endif
