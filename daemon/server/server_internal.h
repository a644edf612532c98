/* server_internal.h -- the server's private structures, shared by server.c
 * (the listening socket, accepting, closing) and server_conn.c (a
 * connection's input, framing and output).
 *
 * Lifetime rule: a connection is only ever closed by the reaper (a reactor
 * post, so on a pass of its own) or by server_free. Everything else
 * "condemns" it: marks it, stops its events and queues it for the reaper. So
 * no callback, and no caller of server_reply, ever sees a connection vanish
 * under it, and the server's own reference keeps it allocated until then. */
#ifndef LOOM_DAEMON_SERVER_INTERNAL_H
#define LOOM_DAEMON_SERVER_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/containers.h"
#include "daemon/core/reactor.h"
#include "daemon/server/server.h"

struct server_conn {
    server_t *server;            /* NULL once closed */
    list_link link;              /* in the server's open connections */
    struct server_conn *reap_next;   /* queued for the reaper */
    int fd;
    int refs;                    /* one is the server's while open */
    int interest;                /* REACTOR_* registered now */
    uint64_t id;
    uint64_t active_us;          /* its last request (or last deferred reply) */
    server_peer peer;
    gid_t *groups;               /* peer.groups (owned) */
    void *data;

    char *in;                    /* received bytes not yet handled */
    size_t in_len, in_cap;
    size_t in_scan;              /* in[0..in_scan) holds no newline */
    bool need_parse;             /* new input since the last parse */
    bool backlog;                /* complete lines wait for output to drain */
    bool discarding;             /* dropping the rest of an over-long line */
    bool read_eof;               /* the client shut down its write side */
    bool peer_gone;              /* nobody reads: output is discarded */
    bool dispatching;            /* inside the handler loop */
    bool parsing;                /* a big line is on the parse thread: nothing else is
                                  * handled or read until it is back (server_parse.c) */

    char *out;                   /* out[out_head..out_len) is unsent */
    size_t out_head, out_len, out_cap;

    bool doomed;                 /* condemned: waits for the reaper */
    bool closed;
};

struct server {
    reactor_t *r;
    server_request_fn handler;
    void *ud;
    server_close_fn on_close;
    server_log_fn log;
    void *log_ud;

    char *path;
    unsigned mode;
    size_t max_line, max_output, max_connections;
    size_t read_pause;           /* unsent bytes that stop request handling */
    uint64_t accept_pause_us;
    uint64_t idle_timeout_us;
    size_t max_per_uid;
    reactor_timer_t *idle_timer; /* the next sweep for idle connections */

    int listen_fd;
    bool created;                /* the socket file is ours to unlink */
    dev_t dev;
    ino_t ino;
    reactor_timer_t *accept_timer; /* pending while accepting is paused */

    list_link conns;             /* open (and condemned) connections, newest first */
    server_conn_t *reap_head;
    reactor_post_t reap_post;
    bool reaping, freeing;

    uint64_t next_conn_id;
    server_stats_t stats;

    /* the parse thread (server_parse.c), started with the first big line */
    bool parse_started, parse_stop;
    pthread_t parse_thread;
    pthread_mutex_t parse_lock;  /* guards the queue, parse_stop and the handback */
    pthread_cond_t parse_wake;
    list_link parse_queue;
    reactor_handback_t parse_done;
};

/* Lines at least this long are parsed on the parse thread. */
#define SERVER_PARSE_OFFLOAD ((size_t)256 << 10)

/* A log line through the options' callback, if any. */
void server_log(server_t *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A connection for the accepted descriptor FD (which it takes over, closing
 * it on failure): 0 or a negative errno. */
int server_conn_open(server_t *s, int fd);

/* Queues C for the reaper (see the lifetime rule above). */
void server_conn_condemn(server_conn_t *c);

/* Closes the connections idle for idle_timeout_us, and schedules the next
 * sweep (server_conn.c). */
void server_sweep_idle(server_t *s);

/* server_parse.c: hands LINE (LEN bytes, copied) of C to the parse thread
 * and marks C parsing; 0, or a negative errno (then parse it inline). */
int server_parse_offload(server_conn_t *c, const char *line, size_t len);
/* Stops the parse thread and drops what it holds (server_free). */
void server_parse_stop(server_t *s);

/* server_conn.c: handles a parsed line: REQ (borrowed; NULL when the line
 * was not JSON, JE then says why). */
void server_conn_dispatch(server_conn_t *c, json_t *req, const json_error_t *je);
/* Goes on with C's buffered lines, writes, and watches it again. */
void server_conn_resume(server_conn_t *c);

/* Closes C now: descriptor, buffers, on_close, the server's reference.
 * Only the reaper and server_free call it. */
void server_conn_close_now(server_conn_t *c);

#endif
