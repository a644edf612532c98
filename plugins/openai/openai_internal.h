/* openai_internal.h -- what openai.c shares with openai_batch.c.
 *
 * The Batch API writes each call as the body encode would send and reads
 * each result line as decode reads a direct answer, so both files build
 * and read bodies through these functions. Private to the plugin. */
#ifndef LOOM_PLUGINS_OPENAI_INTERNAL_H
#define LOOM_PLUGINS_OPENAI_INTERNAL_H

#include "loom/plugin.h"
#include "plugins/http_common.h"

/* One provider instance. */
typedef struct openai_state {
    loom_hc_conf conf;           /* owned; the key may be NULL: local servers need none */
    char *org;                   /* owned, or NULL */
} openai_state;

/* The request body encode sends for REQ (borrowed): a new reference, with
 * *PATH set to the endpoint below the base URL ("/chat/completions" or
 * "/embeddings"; static). NULL after loom_error. REQ's stream flag is
 * honoured: a caller that must not stream passes a request without it. */
json_t *openai_body(loom_ctx *ctx, const openai_state *st, const loom_request *req,
                    const char **path);

/* Adds the instance's Authorization and OpenAI-Organization headers to
 * OUT. 0, or -1 when out of memory. */
int openai_auth_headers(const openai_state *st, loom_http_request *out);

/* A failure answered with STATUS (BODY borrowed, may be NULL; RESP NULL
 * for an error inside a stream), classified and quoted as decode does.
 * Always -1, after loom_error. */
int openai_fail_status(loom_ctx *ctx, const openai_state *st, const loom_http_response *resp,
                       int status, json_t *body);

/* decode of RESP once its body is parsed (BODY borrowed; NULL when it was
 * not JSON): the output, usage and finish reason of REQ's answer into OUT,
 * which the caller emptied. 0, or -1 after loom_error. */
int openai_decode_body(loom_ctx *ctx, const openai_state *st, const loom_request *req,
                       const loom_http_response *resp, json_t *body, loom_result *out);

/* The Batch API hooks (openai_batch.c), as loom_provider declares them. */
int openai_batch_line(loom_ctx *ctx, void *state, const loom_request *req, const char *custom_id,
                      char **line, size_t *len);
int openai_batch_encode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                        loom_http_request *out);
int openai_batch_decode(loom_ctx *ctx, void *state, const loom_batch_op *op,
                        const loom_http_response *resp, loom_batch_info *out);
int openai_batch_result(loom_ctx *ctx, void *state, const loom_request *req, const char *line,
                        size_t len, loom_result *out);

/* OpenAI's limits per batch: 50,000 requests and a 200 MB input file. */
#define OPENAI_BATCH_MAX_LINES 50000
#define OPENAI_BATCH_MAX_BYTES 200000000

#endif
