/* anthropic_internal.h -- what anthropic.c shares with anthropic_batch.c.
 *
 * The Message Batches API carries each call as the body encode would send
 * and reads each result as decode reads a direct answer, so both files
 * build and read bodies through these functions. Private to the plugin. */
#ifndef LOOM_PLUGINS_ANTHROPIC_INTERNAL_H
#define LOOM_PLUGINS_ANTHROPIC_INTERNAL_H

#include "loom/plugin.h"
#include "plugins/http_common.h"

/* One provider instance. */
typedef struct anthropic_state {
    loom_hc_conf conf;           /* owned; the key is never NULL */
    char *version;               /* owned: the anthropic-version header */
    json_t *defaults;            /* owned: {"max_tokens": the option}, for calls without */
    int prompt_cache;            /* the option: cache every call's system prompt */
} anthropic_state;

/* The /messages body encode sends for REQ (borrowed): a new reference, or
 * NULL after loom_error (an embedding call is invalid_request). REQ's
 * stream flag is honoured: a caller that must not stream clears it. */
json_t *anthropic_body(loom_ctx *ctx, const anthropic_state *st, const loom_request *req);

/* Adds the x-api-key and anthropic-version headers to OUT. 0, or -1 when
 * out of memory. */
int anthropic_auth_headers(const anthropic_state *st, loom_http_request *out);

/* The class of a failure by STATUS (0: none), error TYPE and DETAIL (both
 * may be NULL); LOOM_OK when only the status can tell. */
loom_errcode anthropic_classify(int status, const char *type, const char *detail);

/* A failed answer RESP (BODY its parsed body, borrowed, may be NULL),
 * classified and quoted as decode does. Always -1, after loom_error. */
int anthropic_fail_error(loom_ctx *ctx, const anthropic_state *st,
                         const loom_http_response *resp, json_t *body);

/* decode of RESP once its body is parsed (BODY borrowed; NULL when it was
 * not JSON) into OUT, which the caller emptied. 0, or -1 after loom_error. */
int anthropic_decode_body(loom_ctx *ctx, const anthropic_state *st, const loom_request *req,
                          const loom_http_response *resp, json_t *body, loom_result *out);

/* The Message Batches hooks (anthropic_batch.c), as loom_provider declares
 * them. */
int anthropic_batch_line(loom_ctx *ctx, void *state, const loom_request *req,
                         const char *custom_id, char **line, size_t *len);
int anthropic_batch_encode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                           loom_http_request *out);
int anthropic_batch_decode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                           const loom_http_response *resp, loom_batch_info *out);
int anthropic_batch_result(loom_ctx *ctx, void *state, const loom_request *req,
                           const char *line, size_t len, loom_result *out);

/* Anthropic's limits per batch: 100,000 requests or 256 MB. */
#define ANTHROPIC_BATCH_MAX_LINES 100000
#define ANTHROPIC_BATCH_MAX_BYTES 256000000

#endif
