/* server.h -- the transport of the daemon's Unix-socket protocol: the
 * listening socket, connections, line framing and output back-pressure.
 *
 * Owns: the listening socket (and its file, when it made it), the
 * connections and their buffers.
 * May call: daemon/core (the reactor), common/, libc and jansson; the plugin
 * ABI header for its log levels only.
 * Must never call: the engine, the store, wfdir, jobs or loomd: the ops
 * behind it come in as the handler callback.
 *
 * Every line a client sends is one JSON object; every line the server sends
 * back is one too. The server knows nothing of jobs: each request whose shape
 * is right (an object with a string "op") goes to one handler callback, which
 * answers at once or later through server_reply / server_reply_error, and may
 * push stream messages with server_send. Framing errors are answered here,
 * with the codes "line_too_long", "invalid_json" and "invalid_request", and
 * the connection lives on.
 *
 * Output is buffered per connection and written as the socket drains, so a
 * slow reader never stalls anyone else. While a connection's unsent output is
 * large, its requests are no longer read (the client's writes block instead);
 * output past max_output, which only server-initiated streams and huge
 * replies can cause, cuts the connection off.
 *
 * A line of 256 KiB or more (a big `submit` input, a `validate` of a big
 * workflow) is parsed on a thread of the server's own, so that ~5 ms of
 * parsing per MiB never holds the reactor; its connection waits for it, so
 * each connection's requests still reach the handler in the order sent.
 *
 * A client that shuts down its write side still gets answers to what it sent,
 * including deferred ones: the connection closes once its output is flushed
 * and nobody but the server holds a reference to it.
 *
 * Conventions:
 * - Reactor thread only (the parse thread is the server's business).
 *   Callbacks run on the reactor too and must not call server_free.
 * - int functions return 0 or a negative errno; server_new returns NULL and
 *   sets errno. Messages for people go to caller buffers.
 * - Ownership, in jansson's words: JSON passed to the server is stolen
 *   unless said otherwise; the request handed to the handler is borrowed.
 *   A connection pointer is borrowed for the duration of the callback that
 *   received it; keep it longer only through server_conn_ref. */
#ifndef LOOM_DAEMON_SERVER_H
#define LOOM_DAEMON_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/reactor.h"

typedef struct server server_t;
typedef struct server_conn server_conn_t;

/* Defaults for the zero values of server_options. */
#define SERVER_DEFAULT_MODE 0660u
#define SERVER_DEFAULT_MAX_LINE ((size_t)16 << 20)
#define SERVER_DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define SERVER_DEFAULT_MAX_CONNECTIONS ((size_t)4096)
/* How long accepting pauses when the process is out of descriptors. */
#define SERVER_DEFAULT_ACCEPT_PAUSE_US (100 * REACTOR_MSEC)

/* A request: REQUEST is an object with a string "op" (borrowed until the
 * handler returns; json_incref what must live longer, such as its "id"). */
typedef void (*server_request_fn)(server_conn_t *conn, json_t *request, void *ud);

/* CONN has just closed (client gone, cut off, server_conn_close or
 * server_free); called once for every connection that was accepted and
 * served (not for those turned away by max_connections). CONN stays valid
 * until the callback returns, and after that for as long as references to it
 * are held: this is the place to drop waiters and subscriptions, and their
 * references. */
typedef void (*server_close_fn)(server_conn_t *conn, void *ud);

/* A line for the operator log; LEVEL is a LOOM_LOG_* of
 * include/loom/plugin.h. LINE is borrowed for the call. */
typedef void (*server_log_fn)(void *ud, int level, const char *line);

typedef struct server_options {
    const char *path;        /* socket path (copied); required */
    unsigned mode;           /* permission bits (0777 at most); 0: default */
    size_t max_line;         /* longest request line; 0: default */
    size_t max_output;       /* unsent bytes before a cut-off; 0: default */
    size_t max_connections;  /* open at once; 0: default */
    uint64_t accept_pause_us; /* 0: SERVER_DEFAULT_ACCEPT_PAUSE_US */
    /* A connection with no request for this long, nothing owed to it
     * (server_conn_holds is 0) and no output left is closed; 0: never. */
    uint64_t idle_timeout_us;
    /* Connections of one peer uid open at once; one more is answered
     * too_many_connections and closed. 0: no limit. */
    size_t max_per_uid;
    server_close_fn on_close; /* optional; gets the handler's UD */
    server_log_fn log;       /* optional */
    void *log_ud;
} server_options;

/* The peer's credentials, read with SO_PEERCRED when it was accepted, and
 * its supplementary groups with SO_PEERGROUPS (none where the kernel does
 * not give them): what access rules match. */
typedef struct server_peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    const gid_t *groups;     /* NGROUPS of them (owned by the connection), or NULL */
    size_t ngroups;
} server_peer;

/* A snapshot (server_stats_t, since server_stats names the function). */
typedef struct server_stats {
    size_t connections;      /* open now */
    uint64_t accepted;       /* connections served since server_new */
    uint64_t rejected;       /* turned away by max_connections */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t dropped_slow;   /* cut off for exceeding max_output */
    uint64_t rejected_uid;   /* turned away by max_per_uid */
    uint64_t closed_idle;    /* closed by idle_timeout_us */
} server_stats_t;

/* ---- the server */

/* Listens on OPT->path, created with OPT->mode and never more open than that
 * at any moment. A stale socket there (nothing answers) is replaced; a live
 * one, or anything that is not a socket, is refused. R is borrowed and must
 * outlive the server; UD is passed to HANDLER and on_close. NULL with errno
 * set and a message in ERR (ERRLEN bytes; ERR may be NULL): EINVAL (bad
 * options), EADDRINUSE (another server answers), EEXIST (not a socket),
 * ENAMETOOLONG, or the failing call's errno.
 *
 * Bind runs under a temporary umask, which is process-wide: files other
 * threads create meanwhile only come out more restrictive. */
server_t *server_new(reactor_t *r, const server_options *opt, server_request_fn handler, void *ud,
                     char *err, size_t errlen);

/* A reload's new limits on connections: MAX_CONNECTIONS, IDLE_TIMEOUT_US
 * and MAX_PER_UID mean what they mean in server_options (0 included).
 * Connections already open stay open: lower caps turn away only the next
 * ones. A changed idle timeout sweeps at once (connections idle longer than
 * it close now) and then every quarter of it. Not from one of the server's
 * callbacks. */
void server_set_limits(server_t *s, size_t max_connections, uint64_t idle_timeout_us,
                       size_t max_per_uid);

/* Closes every connection (on_close runs for each), stops listening and
 * removes the socket file if it is still the one this server created. Never
 * from one of the server's callbacks. References still held on connections
 * stay valid (they are closed) until dropped. NULL is a no-op. */
void server_free(server_t *s);

/* Counters and gauges into OUT. */
void server_stats(const server_t *s, server_stats_t *out);

/* The socket path (owned by S). */
const char *server_path(const server_t *s);

/* ---- connections */

/* Takes a reference (returns CONN, for chaining). A referenced connection
 * stays valid memory after it closes, and one whose client shut down only
 * its write side stays open (waiting for replies) while any reference
 * besides the server's is held. A client that hung up altogether is closed
 * at once all the same: nobody could read the reply. */
server_conn_t *server_conn_ref(server_conn_t *conn);

/* Drops a reference; the last one frees CONN. NULL is a no-op. */
void server_conn_unref(server_conn_t *conn);

/* Whether output to CONN can still reach its client. False once it is
 * closed, about to close (cut off, server_conn_close, end of its input), or
 * its client is known gone (a failed write, a hang-up), and forever after. */
bool server_conn_is_open(const server_conn_t *conn);

/* Closes CONN on a later reactor pass, dropping unsent output; on_close
 * runs then. Safe from any callback; a closed CONN is a no-op. */
void server_conn_close(server_conn_t *conn);

/* The peer's credentials (owned by CONN). */
const server_peer *server_conn_peer(const server_conn_t *conn);

/* The references held on CONN besides the server's own: the deferred
 * replies and streams owed to it (a count its users may bound). */
size_t server_conn_holds(const server_conn_t *conn);

/* Bytes queued for CONN and not yet written: how far its reader is behind
 * (0 once it is closed). */
size_t server_conn_unsent(const server_conn_t *conn);

/* A number unique to CONN within its server (1, 2, ...), for logs. */
uint64_t server_conn_id(const server_conn_t *conn);

/* One pointer of the caller's own per connection (borrowed; the server never
 * frees it), NULL until set. */
void server_conn_set_data(server_conn_t *conn, void *data);
void *server_conn_data(const server_conn_t *conn);

/* ---- output (all return 0 when the message was queued, and also when it
 * was dropped because CONN is closed or was just cut off: the caller need not
 * care, server_conn_is_open says which. -ENOMEM if it could not be queued.) */

/* Replies to the request whose "id" is ID (borrowed; NULL: it had none).
 * BODY (stolen; an object) gives the members: the line is
 * {"id":ID,"ok":true,...BODY}, with "ok" left out when BODY has its own and
 * BODY's "id" left out when ID is given. A NULL or non-object BODY sends an
 * "internal" error instead and returns -ENOMEM or -EINVAL, so the client is
 * never left waiting. */
int server_reply(server_conn_t *conn, json_t *id, json_t *body);

/* Replies {"id":ID,"ok":false,"error":{"code":CODE,"message":...}} with the
 * message formatted from FMT (cut at 1 KiB; bytes that are not UTF-8 become
 * '?'). ID is borrowed (NULL: none); CODE (NULL: "internal") and FMT (NULL:
 * the code is the message) are borrowed. -EINVAL if CODE is not UTF-8. */
int server_reply_error(server_conn_t *conn, json_t *id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sends MSG (stolen; any JSON value, normally an object) as one line, as is:
 * for stream messages such as the `events` op's. NULL MSG: -EINVAL. */
int server_send(server_conn_t *conn, json_t *msg);

#endif
