/* http_common.h -- helpers shared by the HTTP provider plugins.
 *
 * Everything here is a pure function of its arguments (no I/O except the
 * key file read at init, no global state), so encode and decode stay safe
 * on any thread. The symbols carry a loom_hc_ prefix: the built-in plugins
 * are linked into the host, where this file must be compiled exactly once. */
#ifndef LOOM_PLUGINS_HTTP_COMMON_H
#define LOOM_PLUGINS_HTTP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "loom/plugin.h"

/* Longest server error message quoted in our own error messages. */
#define LOOM_HC_MSG_MAX 200

/* The string KEY of CONFIG in *OUT (borrowed from CONFIG), or DEF when it is
 * absent or null. 0, or -1 after a LOOM_E_CONFIG error naming PROV. */
int loom_hc_config_string(loom_ctx *ctx, const char *prov, json_t *config, const char *key,
                          const char *def, const char **out);

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

/* Appends header NAME: VALUE (both copied). 0, or -1 when out of memory. */
int loom_hc_add_header(loom_http_request *out, const char *name, const char *value);

/* Sets method POST, URL = BASE + PATH and the body from BODY (serialised
 * compactly; BODY is borrowed). 0, or -1 when out of memory. */
int loom_hc_set_post(loom_http_request *out, const char *base, const char *path, json_t *body);

/* Frees everything encode put into OUT and zeroes it: the failure path. */
void loom_hc_request_clear(loom_http_request *out);

/* ---- reading a response */

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

/* Usage field KEY of USAGE as a count, or -1 when absent or not one. */
int64_t loom_hc_usage_field(json_t *usage, const char *key);

/* The text of a message's content: a string, or the "text" members of an
 * array of parts, joined. New allocation, or NULL when out of memory or
 * CONTENT is neither (*BAD set to 1 in that case). */
char *loom_hc_content_text(json_t *content, int *bad);

#endif
