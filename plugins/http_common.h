/* http_common.h -- helpers shared by the HTTP provider plugins.
 *
 * Everything here is a pure function of its arguments (no I/O except the
 * key file read at init, no global state), so encode and decode stay safe
 * on any thread. The symbols carry a loom_hc_ prefix: the built-in plugins
 * are linked into the host, where this file must be compiled exactly once.
 * Only include/loom/plugin.h is used, as an out-of-tree plugin would. */
#ifndef LOOM_PLUGINS_HTTP_COMMON_H
#define LOOM_PLUGINS_HTTP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "loom/plugin.h"

/* Longest server error message quoted in our own error messages. */
#define LOOM_HC_MSG_MAX 200

/* ---- reading the config */

/* The settings every HTTP provider has: the options base_url, model,
 * api_key_env and api_key_file. */
typedef struct loom_hc_conf {
    char *base;                  /* owned: base_url without trailing slashes */
    char *model;                 /* owned, or NULL: every call must name one */
    char *key;                   /* owned secret, or NULL: none configured */
} loom_hc_conf;

/* The rows of a provider's option table (loom_option) that loom_hc_conf_init
 * reads, with the provider's defaults and descriptions where they differ. */
#define LOOM_HC_OPTIONS(base_url, base_url_desc, key_env, key_env_desc)                   \
    { "base_url", LOOM_OPT_STRING, base_url, 0, base_url_desc },                          \
    { "model", LOOM_OPT_STRING, NULL, 0, "model used when a call names none" },          \
    { "api_key_env", LOOM_OPT_STRING, key_env, 0, key_env_desc },                        \
    { "api_key_file", LOOM_OPT_STRING, NULL, 0, "file whose first line is the API key" }

/* Fills CONF (zeroed by the caller) from CONFIG (borrowed; NULL: every
 * default) as OPTS, the provider's option table (NULL-name terminated),
 * describes it. CONFIG must be a mapping and each string option of OPTS a
 * string or null; an absent option takes its default from OPTS, so the
 * table the host shows is the one init follows. The key comes from
 * api_key_file, else the variable api_key_env names (see loom_hc_read_key).
 * Without one: NO_KEY NULL means the key is required (a config error),
 * else NO_KEY is logged as what the provider does without it. 0, or -1
 * after loom_error; CONF must be given to loom_hc_conf_fini either way. */
int loom_hc_conf_init(loom_ctx *ctx, const char *prov, const loom_option *opts, json_t *config,
                      const char *no_key, loom_hc_conf *conf);

/* Frees what CONF owns (the key wiped) and zeroes it. */
void loom_hc_conf_fini(loom_hc_conf *conf);

/* String option NAME of OPTS in *OUT: a new copy of its value in CONFIG,
 * else of its default; NULL when it has neither. 0, or -1 after loom_error
 * (the type is checked by loom_hc_conf_init; here only memory can fail). */
int loom_hc_option_string(loom_ctx *ctx, const char *prov, const loom_option *opts,
                          json_t *config, const char *name, char **out);

/* Integer option NAME of OPTS, which must be above 0, in *OUT: its value in
 * CONFIG, else its default. 0, or -1 after a config error. */
int loom_hc_option_positive(loom_ctx *ctx, const char *prov, const loom_option *opts,
                            json_t *config, const char *name, json_int_t *out);

/* The API key: the first line of FILE when FILE is set (unreadable or empty:
 * a config error), else the value of environment variable ENV (unset or
 * empty: *OUT is NULL and 0 is returned; the caller decides whether that is
 * fatal). *OUT is a new allocation, released with loom_hc_secret_free. Keys
 * with control characters are refused (they would split a header). The key
 * never appears in a message. 0 or -1. */
int loom_hc_read_key(loom_ctx *ctx, const char *prov, const char *env, const char *file,
                     char **out);

/* Wipes and frees a secret (NULL is fine). */
void loom_hc_secret_free(char *s);

/* A new copy of URL without trailing slashes, or NULL after a config error
 * (not http:// or https://, or out of memory). */
char *loom_hc_base_url(loom_ctx *ctx, const char *prov, const char *url);

/* ---- building a request (OUT is the host's; on failure it is emptied) */

/* How a chat parameter must look, and how it is passed on. */
typedef enum loom_hc_param_type {
    LOOM_HC_NUMBER,              /* any number */
    LOOM_HC_INTEGER,             /* any integer */
    LOOM_HC_POSITIVE,            /* an integer above 0 */
    LOOM_HC_STRINGS,             /* a string or a list of strings, as given */
    LOOM_HC_STRING_LIST          /* the same, a lone string sent as a list of one */
} loom_hc_param_type;

/* One chat parameter a provider passes on. */
typedef struct loom_hc_param {
    const char *name;            /* in the call's params */
    const char *field;           /* in the request body */
    loom_hc_param_type type;
} loom_hc_param;

/* A new request body {"model": M} for REQ (borrowed): M is the call's
 * model, else CONF's. NULL after loom_error (no model: invalid_request). */
json_t *loom_hc_body_new(loom_ctx *ctx, const char *prov, const loom_hc_conf *conf,
                         const loom_request *req);

/* Copies the parameters TABLE (NULL-name terminated) lists from PARAMS
 * (borrowed; NULL or null: none) into BODY, each checked against its type;
 * one PARAMS lacks is taken from FALLBACK (borrowed, may be NULL: the
 * provider's defaults). Parameters TABLE does not list are dropped: the
 * API would refuse them. 0, or -1 after loom_error (invalid_request naming
 * the parameter, or out of memory). */
int loom_hc_put_params(loom_ctx *ctx, const char *prov, const loom_hc_param *table,
                       json_t *params, json_t *fallback, json_t *body);

/* Appends header NAME: VALUE (both copied). 0, or -1 when out of memory. */
int loom_hc_add_header(loom_http_request *out, const char *name, const char *value);

/* Sets method POST, URL = BASE + PATH, the body from BODY (serialised
 * compactly; BODY is borrowed) and its content-type header. 0, or -1 when
 * out of memory. */
int loom_hc_set_post(loom_http_request *out, const char *base, const char *path, json_t *body);

/* Frees everything encode put into OUT and zeroes it: the failure path. */
void loom_hc_request_clear(loom_http_request *out);

/* ---- reading a response */

/* The start of every decode: empties OUT (no output, usage unknown) and
 * returns the body parsed, as loom_hc_parse_body does. */
json_t *loom_hc_decode_start(const loom_http_response *resp, loom_result *out);

/* The value of header NAME (compared without case), or NULL. */
const char *loom_hc_header(const loom_http_response *resp, const char *name);

/* The body parsed as JSON (new reference), or NULL when it is empty or is
 * not JSON (an HTML page from a proxy, a truncated transfer). */
json_t *loom_hc_parse_body(const loom_http_response *resp);

/* A Go-style duration ("1s", "6m0s", "2m59.56s", "12ms") in milliseconds,
 * rounded up; -1 when S is not one. */
int64_t loom_hc_parse_duration(const char *s);

/* The wait the server asked for, in ms, or -1: retry-after-ms, else
 * retry-after (delta seconds; an HTTP date is ignored, since decode has no
 * clock), else the x-ratelimit-reset-* headers (the largest reset of a
 * bucket that is exhausted, or the smallest one when none says so). */
int64_t loom_hc_retry_after_ms(const loom_http_response *resp);

/* Copies the server's message MSG (NULL: "") into BUF: at most
 * LOOM_HC_MSG_MAX bytes (with "..." when cut, never inside a UTF-8
 * sequence), control characters as spaces, and every occurrence of SECRET
 * (may be NULL) replaced by "[redacted]" before cutting. */
void loom_hc_server_message(char *buf, size_t size, const char *msg, const char *secret);

/* 1 when S (may be NULL) is one of SET (NULL-terminated), else 0. */
int loom_hc_is_one_of(const char *s, const char *const *set);

/* What a provider read from an answer that reports a failure. */
typedef struct loom_hc_error {
    int status;                  /* the status reported and classified by */
    loom_errcode code;           /* the class the body gave, or LOOM_OK: by status */
    const char *label;           /* the server's error type or code, or NULL */
    const char *message;         /* the server's message, or NULL */
    int parsed;                  /* the body was JSON (else: say it was not) */
} loom_hc_error;

/* Reports the failure E and returns -1. Without a class from the body, the
 * status gives it: 402 quota, 429 rate_limited, 408, 409, 5xx and anything
 * below 300 (an error body with a success status is the server's fault)
 * upstream, the other 3xx and 4xx invalid_request. The server's wait (from
 * RESP's headers) is passed on when the class is worth retrying, and its
 * message is quoted through loom_hc_server_message with SECRET redacted:
 * "PROV: what (HTTP status label): message". */
int loom_hc_fail(loom_ctx *ctx, const char *prov, const loom_http_response *resp,
                 const loom_hc_error *e, const char *secret);

/* *USAGE from the counts IN_KEY and OUT_KEY of BODY's "usage" object (BODY
 * borrowed); -1 for each that is absent or not a count. */
void loom_hc_usage(json_t *body, const char *in_key, const char *out_key, loom_usage *usage);

/* The prompt-cache counts of a usage object U (borrowed; NULL: none) into
 * *USAGE (ABI 2.2), each API's way:
 *   openai:    prompt_tokens_details.cached_tokens is the cache read, of
 *              prompt_tokens (already the whole input); it writes none.
 *   anthropic: input_tokens counts only uncached input, so the cache read
 *              (cache_read_input_tokens) and write
 *              (cache_creation_input_tokens) are added to it, making
 *              input_tokens the whole prompt as loom_usage defines it.
 * A count the answer does not give stays as it was (-1 unknown), except
 * that a known input count makes an absent cache count 0. */
void loom_hc_usage_cache_openai(json_t *u, loom_usage *usage);
void loom_hc_usage_cache_anthropic(json_t *u, loom_usage *usage);
/* Whether option NAME of CONFIG is true, else its declared default. */
int loom_hc_option_bool(const loom_option *opts, json_t *config, const char *name);

/* ---- streamed answers (a provider's stream hook) */

/* EV's data parsed as a JSON object (new reference), or NULL after
 * loom_error: upstream, since a server that sends a broken event
 * misbehaved on a request it accepted. */
json_t *loom_hc_stream_json(loom_ctx *ctx, const char *prov, const loom_sse_event *ev);

/* loom_hc_fail for an error reported inside a stream: E->status is the
 * status the error is classed by (the answer's own status was 2xx), and
 * there are no headers to take a wait from. Always -1. */
int loom_hc_stream_fail(loom_ctx *ctx, const char *prov, const loom_hc_error *e,
                        const char *secret);

/* ---- text */

/* A growing string. */
typedef struct loom_hc_text {
    char *s;                     /* owned (free), NUL-terminated; NULL while empty */
    size_t len;
} loom_hc_text;

/* Appends N bytes of S to T, after SEP (may be NULL) when T already holds
 * text. 0, or -1 when out of memory (T unchanged). */
int loom_hc_text_add(loom_hc_text *t, const char *sep, const char *s, size_t n);

/* The "text" members of the parts in array PARTS whose "type" is TYPE (NULL:
 * any part), joined, in a new allocation (*LEN its length, which may count
 * NUL bytes); NULL when out of memory. */
char *loom_hc_parts_text(json_t *parts, const char *type, size_t *len);

/* The text of a message's content: a string, or the "text" members of an
 * array of parts, joined. New allocation, or NULL when out of memory or
 * CONTENT is neither (*BAD set to 1 in that case). */
char *loom_hc_content_text(json_t *content, int *bad);

#endif
