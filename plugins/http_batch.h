/* http_batch.h -- helpers shared by the HTTP providers' Batch API hooks
 * (ABI 2.4).
 *
 * Pure functions like the rest of http_common.h: the hooks encode a batch
 * step's request and decode its answer, the host does the I/O. Symbols
 * carry the loom_hc_ prefix (the plugins are linked into the host). */
#ifndef LOOM_PLUGINS_HTTP_BATCH_H
#define LOOM_PLUGINS_HTTP_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "loom/plugin.h"

/* Longest custom_id a line may carry (the host's rule and both APIs'). */
#define LOOM_HC_CUSTOM_ID_MAX 64

/* 1 when ID matches [A-Za-z0-9_-]{1,64}, the custom_id both APIs accept. */
int loom_hc_custom_id_ok(const char *id);

/* Whether call REQ may become a batch line under CUSTOM_ID: 0, or -1 after
 * loom_error (invalid_request, the message starting with PROV) for a bad
 * custom_id or a call with tools (each turn needs the answer to the one
 * before). */
int loom_hc_batch_line_ok(loom_ctx *ctx, const char *prov, const loom_request *req,
                          const char *custom_id);

/* 1 when ID (a provider's file or batch id, or a batch name) is safe to put
 * in a URL path as it is: [A-Za-z0-9_.-], 1 to 127 characters, not "." or
 * "..". A provider's ids always are; anything else is refused rather than
 * escaped, since it cannot be one of theirs. */
int loom_hc_batch_id_ok(const char *id);

/* Sets OUT's method to METHOD and its URL to the printf-style FMT, with no
 * body (a GET, or a POST that sends none). 0, or -1 when out of memory. */
int loom_hc_set_request(loom_http_request *out, const char *method, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies string V (borrowed) into DST of SIZE bytes: "" when V is absent
 * or null. 0, or -1 when V is another type or does not fit (an id longer
 * than loom_batch_info holds is not one the host could send back). */
int loom_hc_batch_str(char *dst, size_t size, json_t *v);

/* Member KEY of OBJ as a count: its value when a non-negative integer,
 * else -1 (absent or not one). */
int64_t loom_hc_count(json_t *obj, const char *key);

/* OBJ (borrowed) as one JSONL line: a new compact serialisation without a
 * newline into *LINE, its length into *LEN. 0, or -1 after loom_error. */
int loom_hc_line_dump(loom_ctx *ctx, const char *prov, json_t *obj, char **line, size_t *len);

/* One result line (LINE, LEN bytes) parsed: a new reference to a JSON
 * object, or NULL after loom_error (upstream: the provider's file is
 * broken, which a later batch may not repeat). */
json_t *loom_hc_line_parse(loom_ctx *ctx, const char *prov, const char *line, size_t len);

/* Empties OUT before a result line is read into it, as the host empties a
 * loom_result before decode: no output, no tool calls, every count -1, no
 * finish reason. */
void loom_hc_result_empty(loom_result *out);

#endif
