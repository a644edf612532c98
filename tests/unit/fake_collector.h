/* fake_collector.h -- a small HTTP server on 127.0.0.1 for trace tests: an
 * OTLP/HTTP collector (POST /v1/traces) and an OpenAI-shaped chat provider
 * (POST .../chat/completions) in one, recording every request it gets --
 * path, `traceparent` header, body -- so a test can check both what loomd
 * exported and what it sent to the provider.
 *
 * One thread accepts, and one thread per connection serves it with
 * keep-alive (curl keeps connections open between posts). Everything is
 * bounded: reads have a timeout, bodies a cap. */
#ifndef LOOM_TESTS_FAKE_COLLECTOR_H
#define LOOM_TESTS_FAKE_COLLECTOR_H

#include <jansson.h>
#include <stddef.h>

typedef struct fake_collector fake_collector;

/* Starts one on a free port; NULL (and why on stderr) on failure. */
fake_collector *fc_start(void);
int fc_port(const fake_collector *fc);
/* Stops it: no more connections, every thread joined, then frees it. */
void fc_stop(fake_collector *fc);
/* The next COUNT posts to /v1/traces are answered with STATUS (and their
 * spans not kept). */
void fc_fail_traces(fake_collector *fc, int status, int count);
/* Requests whose path ends with SUFFIX so far. */
size_t fc_count(fake_collector *fc, const char *suffix);
/* Those requests as [{path, traceparent (or null), body (parsed JSON, or
 * null)}]: a new reference. */
json_t *fc_requests(fake_collector *fc, const char *suffix);
/* Every span of every accepted /v1/traces post, flattened: a new array of
 * OTLP span objects. */
json_t *fc_spans(fake_collector *fc);

#endif
