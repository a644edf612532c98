/* http.h -- the HTTP client: libcurl's multi interface driven by the reactor.
 *
 * One curl multi handle per client, fed by the reactor's epoll through
 * CURLMOPT_SOCKETFUNCTION and CURLMOPT_TIMERFUNCTION (curl's multi_socket
 * model): no thread per request, thousands of transfers on one thread.
 * Connections are kept alive and reused; HTTP/2 is negotiated over TLS and
 * multiplexed when the server offers it (a call waits for a stream on the
 * open connection rather than opening another, and no more streams are
 * opened on one connection than the server's max_concurrent_streams); TLS
 * verifies against the system CA store unless a call names its own
 * (ca_file, ca_path); proxies come from the environment (http_proxy,
 * https_proxy, no_proxy), as curl reads them.
 *
 * Three timeouts per call: connect (TCP and TLS handshake), first byte (from
 * the start of the call to the first byte of the response's status line) and
 * total. Each ends the call with its own outcome, so a user can tell a dead
 * server from a slow model.
 *
 * Threads: reactor thread only. Callbacks run on it, never from inside the
 * function that started or cancelled the call. */
#ifndef LOOM_DAEMON_HTTP_H
#define LOOM_DAEMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/core/reactor.h"
#include "loom/plugin.h"

typedef struct http_client http_client_t;
typedef struct http_call http_call_t;

typedef struct http_options {
    /* Most connections open at once (0: no cap). Calls beyond it wait inside
     * curl for a connection instead of failing with EMFILE. */
    long max_connections;
    /* Most response body bytes kept (0: 64 MiB); more ends the call with
     * HTTP_E_TOO_LARGE. */
    size_t max_body;
    /* Most response bytes (bodies and headers) buffered across all calls
     * at once (0: HTTP_DEFAULT_BYTES_IN_FLIGHT). The call whose next bytes
     * would pass it ends with HTTP_E_BUDGET, so a burst of large answers
     * costs a retry, never unbounded memory. Failing, not pausing: paused
     * transfers each holding part of the budget could wait on one another
     * forever. */
    size_t max_bytes_in_flight;
} http_options;

#define HTTP_DEFAULT_BYTES_IN_FLIGHT ((size_t)512 << 20)

/* Streamed bytes of a body: LEN bytes at DATA (borrowed for the call). 0 to
 * go on, nonzero to end the call with HTTP_E_ABORTED. */
typedef int (*http_data_fn)(void *ud, const char *data, size_t len);

/* The HTTP version a call speaks. AUTO: HTTP/2 over TLS when the server
 * offers it in ALPN, HTTP/1.1 otherwise (and on plain http://). V2 on
 * http:// is h2c with prior knowledge (no Upgrade round trip); on https://
 * it requires h2 in ALPN: a server that only offers HTTP/1.1 ends the call
 * with HTTP_E_TLS (at its answer's status line: curl 7.88 says which
 * protocol ALPN chose no sooner, so the request has been sent). */
typedef enum http_version {
    HTTP_VERSION_AUTO = 0,
    HTTP_VERSION_1_1,
    HTTP_VERSION_2
} http_version;

/* "auto", "1.1" or "2" to its version; -1 for anything else. */
int http_version_parse(const char *text);
/* The name http_version_parse reads. */
const char *http_version_name(http_version v);

typedef struct http_call_opts {
    uint64_t connect_ms;       /* 0: no limit */
    uint64_t first_byte_ms;    /* 0: no limit */
    uint64_t total_ms;         /* 0: no limit */
    /* curl's receive buffer for the call (0: 1 KiB, its minimum). At
     * 10,000 calls in flight its default of 16 KiB would be most of the
     * memory; chat answers fit in a few reads of 1 KiB, while a large
     * answer (a batch of embeddings) reads faster with more. */
    size_t recv_buffer;
    /* Optional: a streamed answer is handed over as it arrives. The body
     * of a 2xx response whose content-type is text/event-stream goes to
     * ON_DATA(DATA_UD, ...) chunk by chunk, as curl reads it, and is not
     * kept (the response then has `streamed` set and an empty body); any
     * other response (an error status, a server that answered whole) is
     * kept and handed to DONE as ever. The streamed bytes still count
     * against max_body, in total, but not against the bytes in flight:
     * nothing of them is held here. ON_DATA runs inside curl's callbacks,
     * so it must not start or cancel HTTP calls. */
    http_data_fn on_data;
    void *data_ud;
    /* TLS trust (borrowed for http_call only: curl copies them): a PEM file
     * of CA certificates and/or a directory of them hashed by `openssl
     * rehash`. Either replaces the system store; NULL for both: the
     * system's. */
    const char *ca_file;
    const char *ca_path;
    http_version version;
} http_call_opts;

typedef enum http_outcome {
    HTTP_OK = 0,               /* a response arrived (any status) */
    HTTP_E_CONNECT,            /* DNS, refused, unreachable */
    HTTP_E_TIMEOUT_CONNECT,
    HTTP_E_TIMEOUT_FIRST_BYTE,
    HTTP_E_TIMEOUT_TOTAL,
    HTTP_E_TRANSFER,           /* dropped mid-response, malformed HTTP */
    HTTP_E_TOO_LARGE,          /* the body passed http_options.max_body */
    HTTP_E_NOMEM,
    HTTP_E_BUDGET,             /* "response_budget": the client's bytes in
                                  flight passed max_bytes_in_flight */
    HTTP_E_ABORTED,            /* "aborted": the call's on_data refused the body */
    HTTP_E_TLS                 /* "tls": the server's certificate was refused
                                  (unknown CA, wrong host name, expired), the
                                  handshake failed, the CA file could not be
                                  read, or h2 was required and not offered;
                                  retrying cannot help */
} http_outcome;

/* What a finished call gives its callback; every pointer is borrowed for
 * the callback's duration. Header names are lower-case. */
typedef struct http_response {
    http_outcome outcome;
    const char *error;         /* for people, when outcome != HTTP_OK */
    int status;                /* 0 when no status line arrived */
    const loom_header *headers;
    size_t nheaders;
    const char *body;          /* NUL-terminated for convenience */
    size_t body_len;
    uint64_t first_byte_us;    /* from the start of the call; 0 if none */
    uint64_t total_us;
    bool streamed;             /* the body went to the call's on_data */
} http_response;

typedef void (*http_done_fn)(http_call_t *call, const http_response *resp, void *ud);

/* A client on R (borrowed; must outlive it). OPT may be NULL. NULL with
 * errno set (ENOMEM, or EIO when curl cannot start). */
http_client_t *http_client_new(reactor_t *r, const http_options *opt);

/* Cancels every call without calling back and frees C. NULL is a no-op. */
void http_client_free(http_client_t *c);

/* Starts REQ (its strings, headers and body are stolen, whatever the
 * outcome, and REQ is left empty) under T (NULL: no limits). DONE(call,
 * response, UD) runs once, on a later reactor pass, unless the call is
 * cancelled first. Returns the call handle (valid until DONE returns or
 * http_cancel), or NULL with errno ENOMEM / EINVAL (no method or URL). */
http_call_t *http_call(http_client_t *c, loom_http_request *req, const http_call_opts *t,
                       http_done_fn done, void *ud);

/* Frees what REQ holds (method, URL, body, headers: each header value is
 * wiped first, as it may hold an API key) and leaves REQ empty. The one
 * place an encoded request is thrown away, whether by the client or by a
 * caller that never sent it. */
void http_request_free(loom_http_request *req);

/* Abandons CALL: DONE never runs and the connection is closed or reused as
 * curl sees fit. Must not be called from CALL's own DONE. */
void http_cancel(http_call_t *call);

/* Calls started and not yet finished. */
size_t http_in_flight(const http_client_t *c);

/* Response bytes now buffered across C's calls. */
size_t http_bytes_in_flight(const http_client_t *c);

/* Raises the soft RLIMIT_NOFILE to the hard limit (the daemon calls it once
 * at start) and returns the soft limit now in force, or -errno. */
long http_raise_nofile(void);

/* A name for an outcome: "connect", "timeout_connect", ... */
const char *http_outcome_name(http_outcome o);

/* The error class a failed call's outcome is to its caller: LOOM_E_TIMEOUT
 * for the three timeouts, LOOM_E_TLS (never retried) for HTTP_E_TLS,
 * LOOM_E_UPSTREAM (transient) for the rest. */
loom_errcode http_outcome_code(http_outcome o);

#endif
